/* Unit tests for core/keytab: find, insert, the age order under touch and
 * remove, many keys sharing few buckets, and keytab_fini() freeing the
 * entries left. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/keytab.h"

struct ent {
	struct keytab_node node;
	char key[16];
};

static struct ent *
ent_add(struct keytab *t, const char *key)
{
	struct ent *e = calloc(1, sizeof(*e));

	assert_non_null(e);
	snprintf(e->key, sizeof(e->key), "%s", key);
	keytab_insert(t, &e->node, e->key);
	return e;
}

static void
drain(struct keytab *t)
{
	struct keytab_node *n;

	while ((n = keytab_oldest(t)) != NULL)
		keytab_remove(t, n);
	assert_int_equal(keytab_count(t), 0);
	keytab_fini(t);
}

/* The age list, oldest first, as "a,b,c"; checks the links both ways. */
static const char *
order(const struct keytab *t)
{
	static char s[256];
	const struct keytab_node *prev = NULL;
	size_t len = 0;

	s[0] = '\0';
	for (const struct keytab_node *n = keytab_oldest(t); n; n = n->younger) {
		assert_ptr_equal(n->older, prev);
		int w = snprintf(s + len, sizeof(s) - len, "%s%s", prev ? "," : "", n->key);
		assert_true(w >= 0 && (size_t)w < sizeof(s) - len);
		len += (size_t)w;
		prev = n;
	}
	assert_ptr_equal(t->youngest, prev);
	return s;
}

static void
test_find_insert(void **state)
{
	struct keytab t;

	(void)state;
	keytab_init(&t, 10);
	assert_null(keytab_find(&t, "a"));
	assert_null(keytab_oldest(&t));
	struct ent *a = ent_add(&t, "a");
	struct ent *b = ent_add(&t, "b");
	assert_ptr_equal(keytab_find(&t, "a"), &a->node);
	assert_ptr_equal(keytab_find(&t, "b"), &b->node);
	assert_null(keytab_find(&t, "c"));
	assert_null(keytab_find(&t, ""));
	assert_int_equal(keytab_count(&t), 2);
	assert_string_equal(order(&t), "a,b");
	drain(&t);
}

static void
test_touch_remove_order(void **state)
{
	struct keytab t;

	(void)state;
	keytab_init(&t, 10);
	struct ent *a = ent_add(&t, "a");
	struct ent *b = ent_add(&t, "b");
	struct ent *c = ent_add(&t, "c");
	keytab_touch(&t, &a->node);
	assert_string_equal(order(&t), "b,c,a");
	keytab_touch(&t, &a->node); /* already youngest */
	assert_string_equal(order(&t), "b,c,a");
	keytab_touch(&t, &c->node);
	assert_string_equal(order(&t), "b,a,c");
	keytab_remove(&t, &a->node); /* from the middle */
	assert_string_equal(order(&t), "b,c");
	assert_null(keytab_find(&t, "a"));
	keytab_remove(&t, &c->node); /* the young end */
	assert_string_equal(order(&t), "b");
	keytab_remove(&t, &b->node); /* the last */
	assert_string_equal(order(&t), "");
	assert_null(keytab_oldest(&t));
	assert_int_equal(keytab_count(&t), 0);
	/* Empty again, it fills as new. */
	ent_add(&t, "d");
	assert_string_equal(order(&t), "d");
	drain(&t);
}

/* Far more keys than buckets: chains are long, and removing from their
 * middle keeps the rest found. */
static void
test_chains(void **state)
{
	struct keytab t;
	struct ent *e[500];
	char k[16];

	(void)state;
	keytab_init(&t, 1); /* 16 buckets */
	assert_int_equal(t.nbuckets, 16);
	for (int i = 0; i < 500; i++) {
		snprintf(k, sizeof(k), "k%d", i);
		e[i] = ent_add(&t, k);
	}
	for (int i = 0; i < 500; i += 3)
		keytab_remove(&t, &e[i]->node);
	for (int i = 0; i < 500; i++) {
		snprintf(k, sizeof(k), "k%d", i);
		if (i % 3 == 0)
			assert_null(keytab_find(&t, k));
		else
			assert_ptr_equal(keytab_find(&t, k), &e[i]->node);
	}
	assert_int_equal(keytab_count(&t), 500 - 167);
	assert_ptr_equal(keytab_oldest(&t), &e[1]->node);
	keytab_fini(&t); /* frees the entries held: LeakSanitizer checks */
}

/* About four keys a chain when full, a power of two. */
static void
test_sizing(void **state)
{
	struct keytab t;

	(void)state;
	keytab_init(&t, 64);
	assert_int_equal(t.nbuckets, 16);
	keytab_fini(&t);
	keytab_init(&t, 65);
	assert_int_equal(t.nbuckets, 32);
	keytab_fini(&t);
	keytab_init(&t, 65536);
	assert_int_equal(t.nbuckets, 16384);
	keytab_fini(&t);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_find_insert),
	    cmocka_unit_test(test_touch_remove_order),
	    cmocka_unit_test(test_chains),
	    cmocka_unit_test(test_sizing),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
