/*
 * test_imap_seqset — unit tests for IMAP sequence sets: parsing every edge,
 * resolution of "*" and "$", lookups, iteration and compact formatting.
 *
 * SECURITY: test code.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/buf.h"
#include "imap/imap_seqset.h"

/* Parse s, resolve against max (saved may be NULL), format; returns a static string. */
static const char *
roundtrip(const char *s, uint32_t max, const struct imap_seqset *saved)
{
	static char out[512];
	struct imap_seqset in, res;
	struct buf b = BUF_INIT(0);
	const char *err = NULL;

	imap_seqset_init(&in);
	imap_seqset_init(&res);
	if (imap_seqset_parse(&in, s, strlen(s), IMAP_SEQSET_ALLOW_SAVED, &err) < 0) {
		assert_non_null(err);
		snprintf(out, sizeof(out), "ERR %s", err);
		assert_int_equal(in.count, 0);
		imap_seqset_free(&in);
		return out;
	}
	imap_seqset_resolve(&in, max, saved, &res);
	assert_true(res.normalized);
	assert_int_equal(imap_seqset_format(&res, &b), 0);
	snprintf(out, sizeof(out), "%s", buf_str(&b));
	buf_free(&b);
	imap_seqset_free(&in);
	imap_seqset_free(&res);
	return out;
}

static void
test_parse_resolve(void **state)
{
	(void)state;
	assert_string_equal(roundtrip("1", 10, NULL), "1");
	assert_string_equal(roundtrip("1,3:5,7:*", 10, NULL), "1,3:5,7:10");
	assert_string_equal(roundtrip("1:*", 10, NULL), "1:10");
	assert_string_equal(roundtrip("*", 10, NULL), "10");
	assert_string_equal(roundtrip("*:*", 10, NULL), "10");
	assert_string_equal(roundtrip("*:4", 10, NULL), "4:10");
	assert_string_equal(roundtrip("5:3", 10, NULL), "3:5");
	/* merging: overlapping, adjacent, duplicate, unordered */
	assert_string_equal(roundtrip("5,4,3,1,2", 10, NULL), "1:5");
	assert_string_equal(roundtrip("1:3,2:6,8,8,9", 100, NULL), "1:6,8:9");
	assert_string_equal(roundtrip("10:20,1:30", 100, NULL), "1:30");
	/* "559:*" includes max even above it (RFC 9051 6.4.9) */
	assert_string_equal(roundtrip("559:*", 100, NULL), "100:559");
	/* empty mailbox: "*" is nothing */
	assert_string_equal(roundtrip("*", 0, NULL), "");
	assert_string_equal(roundtrip("1:*", 0, NULL), "");
	assert_string_equal(roundtrip("*:5", 0, NULL), "");
	assert_string_equal(roundtrip("3,*", 0, NULL), "3");
	/* the extremes */
	assert_string_equal(roundtrip("4294967295", 1, NULL), "4294967295");
	assert_string_equal(roundtrip("1:4294967295", 1, NULL), "1:4294967295");
	assert_string_equal(roundtrip("4294967295,1:4294967294", 1, NULL), "1:4294967295");
	assert_string_equal(roundtrip("*", UINT32_MAX, NULL), "4294967295");
	/* errors */
	assert_string_equal(roundtrip("", 10, NULL), "ERR empty sequence set");
	assert_string_equal(roundtrip("0", 10, NULL), "ERR zero or leading zero in sequence set");
	assert_string_equal(roundtrip("01", 10, NULL), "ERR zero or leading zero in sequence set");
	assert_string_equal(roundtrip("1:0", 10, NULL), "ERR zero or leading zero in sequence set");
	assert_string_equal(roundtrip("4294967296", 10, NULL),
			    "ERR number out of range in sequence set");
	assert_string_equal(roundtrip("99999999999999999999999", 10, NULL),
			    "ERR number out of range in sequence set");
	assert_string_equal(roundtrip("1,", 10, NULL), "ERR number expected in sequence set");
	assert_string_equal(roundtrip(",1", 10, NULL), "ERR number expected in sequence set");
	assert_string_equal(roundtrip("1,,2", 10, NULL), "ERR number expected in sequence set");
	assert_string_equal(roundtrip("1:", 10, NULL), "ERR number expected in sequence set");
	assert_string_equal(roundtrip(":1", 10, NULL), "ERR number expected in sequence set");
	assert_string_equal(roundtrip("1:2:3", 10, NULL), "ERR invalid character in sequence set");
	assert_string_equal(roundtrip("1 2", 10, NULL), "ERR invalid character in sequence set");
	assert_string_equal(roundtrip("-1", 10, NULL), "ERR number expected in sequence set");
	assert_string_equal(roundtrip("1a", 10, NULL), "ERR invalid character in sequence set");
	assert_string_equal(roundtrip("**", 10, NULL), "ERR invalid character in sequence set");
	assert_string_equal(roundtrip("$:1", 10, NULL), "ERR invalid character in sequence set");
	assert_string_equal(roundtrip("1:$", 10, NULL), "ERR number expected in sequence set");

	/* without the flag "$" is refused */
	struct imap_seqset s;
	const char *err;
	imap_seqset_init(&s);
	assert_int_equal(imap_seqset_parse(&s, "$", 1, 0, &err), -1);
	assert_string_equal(err, "'$' not allowed here");
	/* a parsed set formats as sent */
	struct buf b = BUF_INIT(0);
	assert_int_equal(imap_seqset_parse(&s, "5:*,*,$,2", 9, IMAP_SEQSET_ALLOW_SAVED, &err), 0);
	assert_false(s.normalized);
	assert_true(s.saved);
	assert_int_equal(imap_seqset_format(&s, &b), 0);
	assert_string_equal(buf_str(&b), "5:*,*,2,$");
	buf_free(&b);
	imap_seqset_free(&s);
}

static void
test_saved(void **state)
{
	(void)state;
	struct imap_seqset saved;
	imap_seqset_init(&saved);
	imap_seqset_add(&saved, 7, 9);
	imap_seqset_add(&saved, 2, 2);
	imap_seqset_normalize(&saved);
	assert_string_equal(roundtrip("$", 100, &saved), "2,7:9");
	assert_string_equal(roundtrip("1,$", 100, &saved), "1:2,7:9");
	assert_string_equal(roundtrip("$,10", 100, &saved), "2,7:10");
	assert_string_equal(roundtrip("$", 100, NULL), "");
	imap_seqset_free(&saved);
}

static void
test_lookup_iterate(void **state)
{
	(void)state;
	struct imap_seqset in, s;
	const char *err;
	imap_seqset_init(&in);
	imap_seqset_init(&s);
	assert_int_equal(imap_seqset_parse(&in, "3:5,9,4294967294:*", 18, 0, &err), 0);
	imap_seqset_resolve(&in, UINT32_MAX, NULL, &s);
	assert_int_equal(s.count, 3);
	assert_false(imap_seqset_contains(&s, 0));
	assert_false(imap_seqset_contains(&s, 2));
	assert_true(imap_seqset_contains(&s, 3));
	assert_true(imap_seqset_contains(&s, 4));
	assert_true(imap_seqset_contains(&s, 5));
	assert_false(imap_seqset_contains(&s, 6));
	assert_true(imap_seqset_contains(&s, 9));
	assert_false(imap_seqset_contains(&s, 10));
	assert_true(imap_seqset_contains(&s, UINT32_MAX));
	assert_true(imap_seqset_contains(&s, UINT32_MAX - 1));
	assert_false(imap_seqset_contains(&s, UINT32_MAX - 2));
	assert_int_equal(imap_seqset_count(&s), 6);
	assert_int_equal(imap_seqset_last(&s), UINT32_MAX);

	static const uint32_t want[] = {3, 4, 5, 9, UINT32_MAX - 1, UINT32_MAX};
	struct imap_seqset_iter it;
	uint32_t n;
	size_t k = 0;
	imap_seqset_iter_init(&it);
	while (imap_seqset_iter_next(&s, &it, &n)) {
		assert_true(k < 6);
		assert_int_equal(n, want[k]);
		k++;
	}
	assert_int_equal(k, 6);
	assert_false(imap_seqset_iter_next(&s, &it, &n));

	/* the whole range counts without overflow */
	imap_seqset_clear(&s);
	imap_seqset_add(&s, 1, UINT32_MAX);
	imap_seqset_normalize(&s);
	assert_int_equal(imap_seqset_count(&s), (uint64_t)UINT32_MAX);

	/* empty set */
	imap_seqset_clear(&s);
	assert_int_equal(imap_seqset_count(&s), 0);
	assert_int_equal(imap_seqset_last(&s), 0);
	assert_false(imap_seqset_contains(&s, 1));
	imap_seqset_iter_init(&it);
	assert_false(imap_seqset_iter_next(&s, &it, &n));
	imap_seqset_free(&in);
	imap_seqset_free(&s);
}

static void
test_format_list(void **state)
{
	(void)state;
	struct buf b = BUF_INIT(0);
	static const uint32_t a[] = {3, 4, 5, 9, 1, 2, 7, 6, UINT32_MAX - 1, UINT32_MAX, 1};

	assert_int_equal(imap_seqset_format_list(a, 11, &b), 0);
	assert_string_equal(buf_str(&b), "3:5,9,1:2,7,6,4294967294:4294967295,1");
	buf_reset(&b);
	assert_int_equal(imap_seqset_format_list(a, 0, &b), 0);
	assert_string_equal(buf_str(&b), "");
	assert_int_equal(imap_seqset_format_list(a + 3, 1, &b), 0);
	assert_string_equal(buf_str(&b), "9");
	static const uint32_t z[] = {1, 0};
	buf_reset(&b);
	assert_int_equal(imap_seqset_format_list(z, 2, &b), -1);
	assert_int_equal(b.len, 0);
	buf_free(&b);

	/* a bounded buffer: fails cleanly and is left as it was */
	struct buf small = BUF_INIT(8);
	assert_int_equal(buf_puts(&small, "x"), 0);
	assert_int_equal(imap_seqset_format_list(a, 11, &small), -1);
	assert_string_equal(buf_str(&small), "x");
	struct imap_seqset s;
	imap_seqset_init(&s);
	imap_seqset_add(&s, 100000, 200000);
	imap_seqset_normalize(&s);
	assert_int_equal(imap_seqset_format(&s, &small), -1);
	assert_string_equal(buf_str(&small), "x");
	buf_free(&small);
	imap_seqset_free(&s);
}

/* Every maximum below the needed size fails cleanly; the exact size works. */
static void
test_bounded_all_sizes(void **state)
{
	(void)state;
	static const char *const sets[] = {"1", "3:5,*,$", "7:*,$", "4294967295:1,2", "$"};
	for (size_t i = 0; i < sizeof(sets) / sizeof(sets[0]); i++) {
		struct imap_seqset s;
		const char *err;
		struct buf full = BUF_INIT(0);
		imap_seqset_init(&s);
		assert_int_equal(
		    imap_seqset_parse(&s, sets[i], strlen(sets[i]), IMAP_SEQSET_ALLOW_SAVED, &err),
		    0);
		assert_int_equal(imap_seqset_format(&s, &full), 0);
		for (size_t max = 1; max <= full.len; max++) {
			struct buf b = BUF_INIT(max);
			assert_int_equal(imap_seqset_format(&s, &b), max == full.len ? 0 : -1);
			assert_int_equal(b.len, max == full.len ? full.len : 0);
			buf_free(&b);
		}
		buf_free(&full);
		imap_seqset_free(&s);
	}
	static const uint32_t nums[] = {1, 2, 3, 10, 4294967295u};
	struct buf full = BUF_INIT(0);
	assert_int_equal(imap_seqset_format_list(nums, 5, &full), 0);
	assert_string_equal(buf_str(&full), "1:3,10,4294967295");
	for (size_t max = 1; max <= full.len; max++) {
		struct buf b = BUF_INIT(max);
		assert_int_equal(imap_seqset_format_list(nums, 5, &b), max == full.len ? 0 : -1);
		buf_free(&b);
	}
	buf_free(&full);
	/* equal starts sort by end */
	assert_string_equal(roundtrip("1:3,1:2,1", 10, NULL), "1:3");
}

static void
test_large(void **state)
{
	(void)state;
	/* 10000 single numbers, in reverse: merge into one range. */
	struct buf in = BUF_INIT(0);
	for (unsigned i = 10000; i >= 1; i--)
		buf_printf(&in, "%s%u", i == 10000 ? "" : ",", i);
	struct imap_seqset p, r;
	const char *err;
	imap_seqset_init(&p);
	imap_seqset_init(&r);
	assert_int_equal(imap_seqset_parse(&p, in.data, in.len, 0, &err), 0);
	assert_int_equal(p.count, 10000);
	imap_seqset_resolve(&p, 5, NULL, &r);
	assert_int_equal(r.count, 1);
	assert_int_equal(r.r[0].lo, 1);
	assert_int_equal(r.r[0].hi, 10000);
	buf_free(&in);
	imap_seqset_free(&p);
	imap_seqset_free(&r);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse_resolve),  cmocka_unit_test(test_saved),
	    cmocka_unit_test(test_lookup_iterate), cmocka_unit_test(test_format_list),
	    cmocka_unit_test(test_large),	   cmocka_unit_test(test_bounded_all_sizes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
