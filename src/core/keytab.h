/*
 * keytab — a table of entries keyed by a string, with a list of the same
 * entries by age, oldest first: the mechanics shared by auth/lockout and
 * smtp/ratelimit, which keep their own entries and their own policy of
 * what is old enough to drop.
 *
 * An entry is allocated by its user with malloc(), embeds a struct
 * keytab_node as its first member, and holds its own key, which must not
 * change while it is in a table. Once inserted the table owns it:
 * keytab_remove() and keytab_fini() free it.
 *
 * SECURITY: the hash is seeded at random per table, so a peer choosing
 * its keys cannot aim them at one chain. Not thread-safe.
 */
#ifndef SURAT_KEYTAB_H
#define SURAT_KEYTAB_H

#include <stddef.h>
#include <stdint.h>

struct keytab_node {
	const char *key;	   /* the entry's own copy */
	struct keytab_node *chain; /* same bucket */
	struct keytab_node *older, *younger;
};

struct keytab {
	size_t nbuckets; /* a power of two */
	size_t count;
	uint32_t seed;
	struct keytab_node **buckets;
	struct keytab_node *oldest, *youngest;
};

/* An empty table sized for max_entries keys; free with keytab_fini(). */
void keytab_init(struct keytab *t, size_t max_entries);
/* Free the buckets and every entry still in t. */
void keytab_fini(struct keytab *t);
/* key's node, or NULL. */
struct keytab_node *keytab_find(struct keytab *t, const char *key);
/* Add n, which is not in t, at the young end, under key: its entry's copy. */
void keytab_insert(struct keytab *t, struct keytab_node *n, const char *key);
/* Move n to the young end. */
void keytab_touch(struct keytab *t, struct keytab_node *n);
/* Take n out of t and free its entry. */
void keytab_remove(struct keytab *t, struct keytab_node *n);
/* The oldest node, or NULL when t is empty. */
struct keytab_node *keytab_oldest(const struct keytab *t);
/* Nodes held. */
size_t keytab_count(const struct keytab *t);

#endif
