/* Unit tests for auth/lockout: the count per key, the lock and its end,
 * expiry, and the bound on the table. Time is passed in, so nothing sleeps. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "auth/lockout.h"

#define W 15000 /* window, ms */

/* The third failure locks; the key stays locked, others do not. */
static void
test_locks_at_threshold(void **state)
{
	struct lockout *l = lockout_new(3, W, 100);
	unsigned n;

	(void)state;
	assert_int_equal(lockout_fail(l, "192.0.2.1", 0, 0, &n), LOCKOUT_OPEN);
	assert_int_equal(n, 1);
	assert_int_equal(lockout_fail(l, "192.0.2.1", 10, 0, &n), LOCKOUT_OPEN);
	assert_int_equal(lockout_check(l, "192.0.2.1", 20), LOCKOUT_OPEN);
	assert_int_equal(lockout_fail(l, "192.0.2.1", 30, 0, &n), LOCKOUT_NOW_LOCKED);
	assert_int_equal(n, 3);
	assert_int_equal(lockout_check(l, "192.0.2.1", 40), LOCKOUT_LOCKED);
	assert_int_equal(lockout_check(l, "192.0.2.2", 40), LOCKOUT_OPEN);
	/* A check begun before the lock ends after it: counted, still locked. */
	assert_int_equal(lockout_fail(l, "192.0.2.1", 50, 0, &n), LOCKOUT_LOCKED);
	assert_int_equal(n, 4);
	lockout_free(&l);
	assert_null(l);
}

/* Failures spread over more than a window never lock. */
static void
test_window_forgets(void **state)
{
	struct lockout *l = lockout_new(3, W, 100);

	(void)state;
	assert_int_equal(lockout_fail(l, "k", 0, 0, NULL), LOCKOUT_OPEN);
	assert_int_equal(lockout_fail(l, "k", 1000, 0, NULL), LOCKOUT_OPEN);
	/* The window since the first failure has passed: counting starts over. */
	assert_int_equal(lockout_fail(l, "k", W, 0, NULL), LOCKOUT_OPEN);
	assert_int_equal(lockout_size(l), 1);
	assert_int_equal(lockout_fail(l, "k", W + 1, 0, NULL), LOCKOUT_OPEN);
	assert_int_equal(lockout_fail(l, "k", W + 2, 0, NULL), LOCKOUT_NOW_LOCKED);
	lockout_free(&l);
}

/* A lock lasts a full window from the failure that made it, however late
 * in the counting window that came; later failures do not stretch it. */
static void
test_lock_lasts_a_window(void **state)
{
	struct lockout *l = lockout_new(2, W, 100);

	(void)state;
	lockout_fail(l, "k", 0, 0, NULL);
	assert_int_equal(lockout_fail(l, "k", W - 1, 0, NULL), LOCKOUT_NOW_LOCKED);
	assert_int_equal(lockout_check(l, "k", W + 100), LOCKOUT_LOCKED);
	assert_int_equal(lockout_fail(l, "k", W + 200, 0, NULL), LOCKOUT_LOCKED);
	assert_int_equal(lockout_check(l, "k", 2 * W - 2), LOCKOUT_LOCKED);
	assert_int_equal(lockout_check(l, "k", 2 * W - 1), LOCKOUT_OPEN);
	/* And the expired entry is gone, not just ignored. */
	assert_int_equal(lockout_size(l), 0);
	assert_int_equal(lockout_fail(l, "k", 2 * W, 0, NULL), LOCKOUT_OPEN);
	lockout_free(&l);
}

/* 0 failures: off, nothing is kept. */
static void
test_off(void **state)
{
	struct lockout *l = lockout_new(0, W, 100);

	(void)state;
	for (int i = 0; i < 50; i++)
		assert_int_equal(lockout_fail(l, "k", i, 0, NULL), LOCKOUT_OPEN);
	assert_int_equal(lockout_check(l, "k", 60), LOCKOUT_OPEN);
	assert_int_equal(lockout_size(l), 0);
	lockout_free(&l);
}

/* Many more keys than room: the table stays at its bound, the oldest go
 * first, and the young ones keep their counts. */
static void
test_bound_evicts_oldest(void **state)
{
	struct lockout *l = lockout_new(2, W, 64);
	char key[64];

	(void)state;
	lockout_fail(l, "old", 0, 0, NULL);
	assert_int_equal(lockout_fail(l, "old", 1, 0, NULL), LOCKOUT_NOW_LOCKED);
	for (int i = 0; i < 100000; i++) {
		snprintf(key, sizeof(key), "2001:db8:%x:%x::/64", i >> 16, i & 0xffff);
		lockout_fail(l, key, 2 + i / 1000, 0, NULL);
		assert_true(lockout_size(l) <= 64);
	}
	assert_int_equal(lockout_size(l), 64);
	assert_int_equal(lockout_check(l, "old", 200), LOCKOUT_OPEN);
	/* The last key is still there with its one failure. */
	assert_int_equal(lockout_fail(l, key, 200, 0, NULL), LOCKOUT_NOW_LOCKED);
	lockout_free(&l);
}

/* Expired entries are dropped as calls pass, so a spray that stops leaves
 * nothing behind once its window is over. */
static void
test_expired_dropped(void **state)
{
	struct lockout *l = lockout_new(5, W, 1000);
	char key[32];

	(void)state;
	for (int i = 0; i < 500; i++) {
		snprintf(key, sizeof(key), "198.51.100.%d", i);
		lockout_fail(l, key, i, 0, NULL);
	}
	assert_int_equal(lockout_size(l), 500);
	assert_int_equal(lockout_check(l, "x", W + 250), LOCKOUT_OPEN);
	assert_int_equal(lockout_size(l), 249);
	assert_int_equal(lockout_check(l, "x", W + 1000), LOCKOUT_OPEN);
	assert_int_equal(lockout_size(l), 0);
	lockout_free(&l);
}

/*
 * The same failed credentials again are not counted, as long as they are
 * among the key's last LOCKOUT_RECENT failures; a new password or a new
 * user is. Still answered LOCKED while the key is locked.
 */
static void
test_repeat_not_counted(void **state)
{
	struct lockout *l = lockout_new(3, W, 100);
	uint64_t fp[LOCKOUT_RECENT + 1];
	char pw[16];
	unsigned n;

	(void)state;
	for (int i = 0; i <= LOCKOUT_RECENT; i++) {
		snprintf(pw, sizeof(pw), "pw%d", i);
		fp[i] = lockout_fingerprint(l, "alice", 5, pw, strlen(pw));
		assert_true(fp[i] != 0);
	}
	/* Fingerprints depend on the user, the password and where one ends. */
	assert_true(lockout_fingerprint(l, "bob", 3, "pw0", 3) != fp[0]);
	assert_true(lockout_fingerprint(l, "alicep", 6, "w0", 2) != fp[0]);
	assert_true(lockout_fingerprint(l, "alice", 5, "pw0", 3) == fp[0]);

	for (int i = 0; i < 20; i++) {
		assert_int_equal(lockout_fail(l, "k", i, fp[0], &n), LOCKOUT_OPEN);
		assert_int_equal(n, 1);
	}
	assert_int_equal(lockout_fail(l, "k", 30, fp[1], &n), LOCKOUT_OPEN);
	assert_int_equal(n, 2);
	assert_int_equal(lockout_fail(l, "k", 31, fp[0], &n), LOCKOUT_OPEN);
	assert_int_equal(lockout_fail(l, "k", 32, fp[1], &n), LOCKOUT_OPEN);
	assert_int_equal(n, 2);
	/* Another key remembers its own. */
	assert_int_equal(lockout_fail(l, "k2", 33, fp[0], &n), LOCKOUT_OPEN);
	assert_int_equal(n, 1);
	/* 0 is no fingerprint: always counted. */
	assert_int_equal(lockout_fail(l, "k", 34, 0, &n), LOCKOUT_NOW_LOCKED);
	assert_int_equal(lockout_fail(l, "k", 35, fp[0], &n), LOCKOUT_LOCKED);
	assert_int_equal(n, 3);
	lockout_free(&l);

	/* Only the last LOCKOUT_RECENT are remembered: the first comes back. */
	l = lockout_new(100, W, 100);
	for (int i = 0; i <= LOCKOUT_RECENT; i++)
		lockout_fail(l, "k", i, fp[i], NULL);
	assert_int_equal(lockout_fail(l, "k", 10, fp[LOCKOUT_RECENT], &n), LOCKOUT_OPEN);
	assert_int_equal(n, LOCKOUT_RECENT + 1);
	assert_int_equal(lockout_fail(l, "k", 11, fp[0], &n), LOCKOUT_OPEN);
	assert_int_equal(n, LOCKOUT_RECENT + 2);
	/* Forgotten with the window, too. */
	assert_int_equal(lockout_fail(l, "k", W, fp[0], &n), LOCKOUT_OPEN);
	assert_int_equal(n, 1);
	lockout_free(&l);
}

/*
 * Exempt networks are never counted nor refused; the match is on the
 * peer's own address, IPv4 and IPv6, prefixes and bare addresses.
 */
static void
test_exempt(void **state)
{
	struct lockout *l = lockout_new(2, W, 100);

	(void)state;
	assert_int_equal(lockout_exempt_add(l, "127.0.0.1"), 0);
	assert_int_equal(lockout_exempt_add(l, "10.1.0.0/16"), 0);
	assert_int_equal(lockout_exempt_add(l, "2001:db8:1::/48"), 0);
	assert_int_equal(lockout_exempt_add(l, "::ffff:192.0.2.0/120"), 0);
	assert_int_equal(lockout_exempt_add(l, "10.0.0.0/40"), -1);
	assert_int_equal(lockout_exempt_add(l, "nat.example"), -1);

	static const char *const exempt[] = {"127.0.0.1", "10.1.255.3", "2001:db8:1:ffff::9",
					     "192.0.2.77"};
	for (size_t i = 0; i < sizeof(exempt) / sizeof(*exempt); i++) {
		for (int k = 0; k < 5; k++)
			assert_int_equal(lockout_login_failed(l, "s", exempt[i], exempt[i],
							      (uint64_t)k + 1),
					 LOCKOUT_OPEN);
		/* Even if its key were locked by another address in it. */
		assert_int_equal(lockout_login_check(l, exempt[i], exempt[i]), LOCKOUT_OPEN);
	}
	assert_int_equal(lockout_size(l), 0);

	static const char *const counted[] = {"127.0.0.2", "10.2.0.1", "2001:db8:2::1",
					      "192.0.3.1"};
	for (size_t i = 0; i < sizeof(counted) / sizeof(*counted); i++) {
		lockout_login_failed(l, "s", counted[i], counted[i], 1);
		assert_int_equal(lockout_login_failed(l, "s", counted[i], counted[i], 2),
				 LOCKOUT_NOW_LOCKED);
		assert_int_equal(lockout_login_check(l, counted[i], counted[i]), LOCKOUT_LOCKED);
	}
	lockout_free(&l);
}

struct saved {
	char key[8][32];
	int64_t failures[8], age[8];
	int n;
};

static void
save_one(const char *key, int64_t failures, int64_t age_ms, void *arg)
{
	struct saved *sv = arg;

	assert_true(sv->n < 8);
	snprintf(sv->key[sv->n], sizeof(sv->key[0]), "%s", key);
	sv->failures[sv->n] = failures;
	sv->age[sv->n++] = age_ms;
}

/* What a stop saves and the next start restores (the daemon keeps it in accounts.db). */
static void
test_save_restore(void **state)
{
	struct lockout *l = lockout_new(3, W, 100);
	struct saved sv = {0};

	(void)state;
	lockout_fail(l, "a", 0, 0, NULL);
	lockout_fail(l, "b", 1000, 0, NULL);
	lockout_fail(l, "b", 2000, 0, NULL);
	lockout_fail(l, "b", 3000, 0, NULL);	/* locked: its window starts again */
	lockout_fail(l, "c", 4000, 0, NULL);
	lockout_each(l, W + 100, save_one, &sv);
	/* a's window has passed; oldest first */
	assert_int_equal(sv.n, 2);
	assert_string_equal(sv.key[0], "b");
	assert_int_equal(sv.failures[0], 3);
	assert_int_equal(sv.age[0], W - 2900);
	assert_string_equal(sv.key[1], "c");
	assert_int_equal(sv.failures[1], 1);
	assert_int_equal(sv.age[1], W - 3900);
	lockout_free(&l);

	/* A new table (the next run, its clock started anew), restored. */
	l = lockout_new(3, W, 100);
	lockout_restore(l, "b", 3, W - 2900, 7);
	lockout_restore(l, "c", 1, W - 3900, 7);
	lockout_restore(l, "d", 3, W, 7);	/* its window passed while down */
	lockout_restore(l, "e", 0, 0, 7);	/* nothing counted */
	assert_int_equal(lockout_size(l), 2);
	assert_int_equal(lockout_check(l, "b", 7), LOCKOUT_LOCKED);
	assert_int_equal(lockout_check(l, "d", 7), LOCKOUT_OPEN);
	/* The lock ends when it would have without the restart. */
	assert_int_equal(lockout_check(l, "b", 7 + 2899), LOCKOUT_LOCKED);
	assert_int_equal(lockout_check(l, "b", 7 + 2900), LOCKOUT_OPEN);
	/* c counts on from one. */
	lockout_free(&l);
	l = lockout_new(3, W, 100);
	lockout_restore(l, "c", 1, 0, 7);
	assert_int_equal(lockout_fail(l, "c", 8, 0, NULL), LOCKOUT_OPEN);
	assert_int_equal(lockout_fail(l, "c", 9, 0, NULL), LOCKOUT_NOW_LOCKED);
	/* Counted already: the table's own count wins. */
	lockout_restore(l, "c", 1, 0, 9);
	assert_int_equal(lockout_check(l, "c", 10), LOCKOUT_LOCKED);
	/* A clock set back since: the window starts now. */
	lockout_restore(l, "f", 3, -W, 10);
	assert_int_equal(lockout_check(l, "f", 10 + W - 1), LOCKOUT_LOCKED);
	lockout_free(&l);

	/* Off: nothing restored. */
	l = lockout_new(0, W, 100);
	lockout_restore(l, "b", 3, 0, 7);
	assert_int_equal(lockout_size(l), 0);
	lockout_free(&l);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_locks_at_threshold),	cmocka_unit_test(test_window_forgets),
	    cmocka_unit_test(test_lock_lasts_a_window), cmocka_unit_test(test_off),
	    cmocka_unit_test(test_bound_evicts_oldest), cmocka_unit_test(test_expired_dropped),
	    cmocka_unit_test(test_repeat_not_counted), cmocka_unit_test(test_exempt),
	    cmocka_unit_test(test_save_restore),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
