/*
 * keytab — see keytab.h. Chains end in NULL and a new node goes at the end
 * of its chain; the age list is doubly linked, so touching and removing a
 * node cost nothing beyond its chain.
 *
 * SECURITY: keys may come from peers; only the seeded hash keeps chains
 * short, so it is never left out.
 */
#include "core/keytab.h"
#include "core/util.h"

#include <stdlib.h>
#include <string.h>

void
keytab_init(struct keytab *t, size_t max_entries)
{
	memset(t, 0, sizeof(*t));
	/* About four keys a chain when full. */
	t->nbuckets = 16;
	while (t->nbuckets * 4 < max_entries)
		t->nbuckets *= 2;
	t->buckets = xcalloc(t->nbuckets, sizeof(*t->buckets));
	util_random(&t->seed, sizeof(t->seed));
}

void
keytab_fini(struct keytab *t)
{
	while (t->oldest) {
		struct keytab_node *n = t->oldest;
		t->oldest = n->younger;
		free(n); /* the start of its entry */
	}
	t->youngest = NULL;
	t->count = 0;
	free(t->buckets);
	t->buckets = NULL;
}

/* Where key's node is linked, or the NULL at the end of its chain. */
static struct keytab_node **
keytab_slot(struct keytab *t, const char *key)
{
	uint32_t h = util_hash32(t->seed, key, strlen(key));

	h ^= h >> 15;
	struct keytab_node **pp = &t->buckets[h & (t->nbuckets - 1)];
	while (*pp && strcmp((*pp)->key, key) != 0)
		pp = &(*pp)->chain;
	return pp;
}

struct keytab_node *
keytab_find(struct keytab *t, const char *key)
{
	return *keytab_slot(t, key);
}

static void
keytab_unlist(struct keytab *t, struct keytab_node *n)
{
	if (n->older)
		n->older->younger = n->younger;
	else
		t->oldest = n->younger;
	if (n->younger)
		n->younger->older = n->older;
	else
		t->youngest = n->older;
	n->older = n->younger = NULL;
}

static void
keytab_list_young(struct keytab *t, struct keytab_node *n)
{
	n->older = t->youngest;
	if (t->youngest)
		t->youngest->younger = n;
	else
		t->oldest = n;
	t->youngest = n;
}

void
keytab_insert(struct keytab *t, struct keytab_node *n, const char *key)
{
	struct keytab_node **pp = keytab_slot(t, key);

	ASSERT(*pp == NULL);
	n->key = key;
	n->chain = NULL;
	n->older = n->younger = NULL;
	*pp = n;
	keytab_list_young(t, n);
	t->count++;
}

void
keytab_touch(struct keytab *t, struct keytab_node *n)
{
	keytab_unlist(t, n);
	keytab_list_young(t, n);
}

void
keytab_remove(struct keytab *t, struct keytab_node *n)
{
	struct keytab_node **pp = keytab_slot(t, n->key);

	*pp = n->chain;
	keytab_unlist(t, n);
	t->count--;
	free(n); /* the start of its entry */
}

struct keytab_node *
keytab_oldest(const struct keytab *t)
{
	return t->oldest;
}

size_t
keytab_count(const struct keytab *t)
{
	return t->count;
}
