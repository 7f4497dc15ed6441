/* Unit tests for smtp/ratelimit: the bucket's arithmetic (burst, continuous
 * refill, debt), the check against a transaction's pending recipients, the
 * warning once a window, and the bound on the table. Time is passed in. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "smtp/ratelimit.h"

#define H 3600000 /* an hour, ms */

/* A burst of limit, then nothing until the bucket refills. */
static void
test_burst_then_refused(void **state)
{
	struct ratelimit *r = ratelimit_new(3, H, 100);

	(void)state;
	assert_int_equal(ratelimit_available(r, "alice", 0), 3);
	assert_true(ratelimit_allow(r, "alice", 0, 0));
	assert_true(ratelimit_allow(r, "alice", 2, 0));
	/* Three accepted in this transaction, not yet paid: no fourth. */
	assert_false(ratelimit_allow(r, "alice", 3, 0));
	/* Nothing held until a message pays. */
	assert_int_equal(ratelimit_size(r), 0);
	ratelimit_take(r, "alice", 2, 0);
	assert_int_equal(ratelimit_size(r), 1);
	assert_int_equal(ratelimit_available(r, "alice", 0), 1);
	assert_true(ratelimit_allow(r, "alice", 0, 0));
	assert_false(ratelimit_allow(r, "alice", 1, 0));
	ratelimit_take(r, "alice", 1, 0);
	assert_false(ratelimit_allow(r, "alice", 0, 0));
	/* Another account is not affected. */
	assert_true(ratelimit_allow(r, "bob", 2, 0));
	ratelimit_free(&r);
	assert_null(r);
}

/* Refill is continuous and exact: 3 an hour is one token each 20 minutes. */
static void
test_refill(void **state)
{
	struct ratelimit *r = ratelimit_new(3, H, 100);

	(void)state;
	ratelimit_take(r, "u", 3, 1000);
	assert_int_equal(ratelimit_available(r, "u", 1000), 0);
	assert_int_equal(ratelimit_available(r, "u", 1000 + H / 3 - 1), 0);
	assert_int_equal(ratelimit_available(r, "u", 1000 + H / 3), 1);
	assert_int_equal(ratelimit_available(r, "u", 1000 + 2 * H / 3), 2);
	/* Reading does not change it: no drift from many small steps. */
	for (int64_t t = 1000; t < 1000 + H; t += 7)
		(void)ratelimit_available(r, "u", t);
	assert_int_equal(ratelimit_available(r, "u", 1000 + H - 1), 2);
	assert_int_equal(ratelimit_available(r, "u", 1000 + H), 3);
	/* Never more than the limit; a full bucket is dropped. */
	assert_int_equal(ratelimit_available(r, "u", 1000 + 5 * H), 3);
	assert_int_equal(ratelimit_size(r), 0);
	ratelimit_free(&r);
}

/* Parallel sessions allowed the same tokens leave a debt, worked off first. */
static void
test_debt(void **state)
{
	struct ratelimit *r = ratelimit_new(3, H, 100);

	(void)state;
	ratelimit_take(r, "u", 3, 0);
	ratelimit_take(r, "u", 3, 0); /* the other session's message */
	assert_false(ratelimit_allow(r, "u", 0, H / 3));
	assert_false(ratelimit_allow(r, "u", 0, H - 1));
	assert_true(ratelimit_allow(r, "u", 0, H + H / 3));
	/* The debt is bounded: a huge message owes at most a bucket. */
	ratelimit_take(r, "v", 100000, 0);
	assert_false(ratelimit_allow(r, "v", 0, H - 1));
	assert_int_equal(ratelimit_available(r, "v", 2 * H), 3);
	ratelimit_free(&r);
}

/* Off: everything allowed, nothing held. */
static void
test_off(void **state)
{
	struct ratelimit *r = ratelimit_new(0, H, 100);

	(void)state;
	ratelimit_take(r, "u", 1000, 0);
	assert_true(ratelimit_allow(r, "u", 100000, 0));
	assert_int_equal(ratelimit_size(r), 0);
	ratelimit_free(&r);
}

/* The first refusal in a window is worth a warning, the rest are not. */
static void
test_warn_once(void **state)
{
	struct ratelimit *r = ratelimit_new(1, H, 100);

	(void)state;
	ratelimit_take(r, "u", 1, 0);
	assert_int_equal(ratelimit_refused(r, "u", 10), 1);
	assert_int_equal(ratelimit_refused(r, "u", 20), 0);
	assert_int_equal(ratelimit_refused(r, "u", H), 0);
	assert_int_equal(ratelimit_refused(r, "u", H + 10), 1);
	/* A refusal of a full bucket (more recipients than the limit in one
	 * message) is remembered too, though the bucket is full. */
	assert_int_equal(ratelimit_refused(r, "w", 2 * H), 1);
	assert_int_equal(ratelimit_refused(r, "w", 2 * H + 5), 0);
	ratelimit_free(&r);
}

/* A full table drops its idle entries first, else leaves the new account
 * untracked and keeps the ones it has. */
static void
test_bound(void **state)
{
	struct ratelimit *r = ratelimit_new(10, H, 2);

	(void)state;
	ratelimit_take(r, "a", 10, 0);
	ratelimit_take(r, "b", 10, 0);
	ratelimit_take(r, "c", 10, 0);
	assert_int_equal(ratelimit_size(r), 2);
	assert_false(ratelimit_allow(r, "a", 0, 1));
	assert_false(ratelimit_allow(r, "b", 0, 1));
	assert_true(ratelimit_allow(r, "c", 0, 1));
	/* a and b are full again an hour on: dropped, and c is held. */
	ratelimit_take(r, "c", 10, H);
	assert_int_equal(ratelimit_size(r), 1);
	assert_false(ratelimit_allow(r, "c", 0, H + 1));
	ratelimit_free(&r);
}

/* Recipients held by open transactions are counted by every session's check. */
static void
test_hold_release(void **state)
{
	struct ratelimit *r = ratelimit_new(3, H, 100);

	(void)state;
	assert_true(ratelimit_hold(r, "u", 0));
	assert_true(ratelimit_hold(r, "u", 0));
	assert_int_equal(ratelimit_size(r), 1);
	/* Another session, nothing of its own yet: one left. */
	assert_true(ratelimit_allow(r, "u", 0, 0));
	assert_true(ratelimit_hold(r, "u", 0));
	assert_false(ratelimit_allow(r, "u", 0, 0));
	/* An hour on, still held: not dropped, not refilled past the limit. */
	assert_false(ratelimit_allow(r, "u", 0, 2 * H));
	/* One transaction (two) paid, the other (one) aborted. */
	ratelimit_take(r, "u", 2, 5);
	ratelimit_release(r, "u", 2, 5);
	assert_false(ratelimit_allow(r, "u", 0, 5));
	ratelimit_release(r, "u", 1, 5);
	assert_true(ratelimit_allow(r, "u", 0, 5));
	assert_false(ratelimit_allow(r, "u", 1, 5));
	/* Full again and nothing held: dropped. */
	assert_int_equal(ratelimit_size(r), 1);
	(void)ratelimit_available(r, "u", 5 + H);
	assert_int_equal(ratelimit_size(r), 0);
	/* Released unpaid: all back. */
	ratelimit_hold(r, "v", 5);
	ratelimit_release(r, "v", 1, 5);
	assert_true(ratelimit_allow(r, "v", 2, 5));
	/* Off, or a full table: nothing held, the caller counts it itself. */
	struct ratelimit *off = ratelimit_new(0, H, 100), *full = ratelimit_new(3, H, 1);
	assert_false(ratelimit_hold(off, "u", 0));
	assert_true(ratelimit_hold(full, "a", 0));
	assert_false(ratelimit_hold(full, "b", 0));
	assert_true(ratelimit_allow(full, "b", 2, 0));
	assert_false(ratelimit_allow(full, "b", 3, 0));
	ratelimit_free(&off);
	ratelimit_free(&full);
	ratelimit_free(&r);
}

/* Extreme settings do not overflow: the largest limit over a week. */
static void
test_extremes(void **state)
{
	int64_t week = (int64_t)7 * 86400 * 1000;
	struct ratelimit *r = ratelimit_new(1000000, week, 100);

	(void)state;
	ratelimit_take(r, "u", 1000000, 0);
	assert_int_equal(ratelimit_available(r, "u", 0), 0);
	assert_int_equal(ratelimit_available(r, "u", week / 2), 500000);
	assert_int_equal(ratelimit_available(r, "u", INT64_MAX / 2), 1000000);
	ratelimit_free(&r);
}

struct saved {
	char key[16][32];
	int64_t used[16];
	int n;
};

static void
save_one(const char *key, int64_t used, void *arg)
{
	struct saved *sv = arg;

	assert_true(sv->n < 16);
	snprintf(sv->key[sv->n], sizeof(sv->key[0]), "%s", key);
	sv->used[sv->n++] = used;
}

/* What a stop saves and the next start restores (the daemon keeps it in accounts.db). */
static void
test_save_restore(void **state)
{
	struct ratelimit *r = ratelimit_new(3, H, 100);
	struct saved sv = {0};

	(void)state;
	ratelimit_take(r, "alice", 3, 0);		/* none left */
	ratelimit_take(r, "bob", 1, 0);			/* two left */
	ratelimit_take(r, "carol", 6, 0);		/* owes three */
	ratelimit_take(r, "dave", 1, 0);
	/* Half a token back is not a token: used, in whole tokens, rounded up. */
	ratelimit_each(r, H / 6, save_one, &sv);
	assert_int_equal(sv.n, 4);
	assert_string_equal(sv.key[0], "alice");
	assert_int_equal(sv.used[0], 3);
	assert_string_equal(sv.key[1], "bob");
	assert_int_equal(sv.used[1], 1);
	assert_string_equal(sv.key[2], "carol");
	assert_int_equal(sv.used[2], 6);
	assert_int_equal(sv.used[3], 1);
	sv.n = 0;
	/* Half an hour on: a token and a half back each. */
	ratelimit_each(r, H / 2, save_one, &sv);
	assert_int_equal(sv.n, 2);	/* bob and dave are full: not saved */
	assert_string_equal(sv.key[0], "alice");
	assert_int_equal(sv.used[0], 2);	/* 1.5 */
	assert_string_equal(sv.key[1], "carol");
	assert_int_equal(sv.used[1], 5);	/* 4.5 */
	ratelimit_free(&r);

	/* A new table (the next run, its clock started anew), restored. */
	r = ratelimit_new(3, H, 100);
	ratelimit_restore(r, "alice", 3, 0, 5);
	ratelimit_restore(r, "carol", 6, H / 3, 5);	/* down for 20 minutes: one token back */
	ratelimit_restore(r, "dave", 2, 3 * H, 5);	/* down long enough: full, not held */
	ratelimit_restore(r, "erin", 0, 0, 5);		/* nothing used: not held */
	assert_int_equal(ratelimit_size(r), 2);
	assert_false(ratelimit_allow(r, "alice", 0, 5));
	assert_int_equal(ratelimit_available(r, "carol", 5), -2);
	assert_int_equal(ratelimit_available(r, "dave", 5), 3);
	/* It refills from there as if held all along. */
	assert_int_equal(ratelimit_available(r, "alice", 5 + H / 3), 1);
	/* Held already: the table's own state wins. */
	ratelimit_restore(r, "alice", 6, 0, 5);
	assert_int_equal(ratelimit_available(r, "alice", 5 + H / 3), 1);
	/* More than this limit allows: clamped to its debt floor. */
	ratelimit_restore(r, "frank", 1000, 0, 5);
	assert_int_equal(ratelimit_available(r, "frank", 5), -3);
	/* A clock set back since: no refill. */
	ratelimit_restore(r, "gina", 2, -H, 5);
	assert_int_equal(ratelimit_available(r, "gina", 5), 1);
	ratelimit_free(&r);

	/* A limit raised meanwhile applies to what was used: 1 of 10 used, 9 left. */
	r = ratelimit_new(10, H, 100);
	ratelimit_restore(r, "bob", 1, 0, 5);
	assert_int_equal(ratelimit_available(r, "bob", 5), 9);
	ratelimit_free(&r);

	/* Off: nothing restored. */
	r = ratelimit_new(0, H, 100);
	ratelimit_restore(r, "alice", 3, 0, 5);
	assert_int_equal(ratelimit_size(r), 0);
	ratelimit_free(&r);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_burst_then_refused),
	    cmocka_unit_test(test_refill),
	    cmocka_unit_test(test_debt),
	    cmocka_unit_test(test_off),
	    cmocka_unit_test(test_warn_once),
	    cmocka_unit_test(test_bound),
	    cmocka_unit_test(test_hold_release),
	    cmocka_unit_test(test_extremes),
	    cmocka_unit_test(test_save_restore),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
