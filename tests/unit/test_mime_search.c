/*
 * test_mime_search — the header cache SEARCH answers FROM/TO/CC/BCC/SUBJECT
 * from must give the same answer as matching the message's header block,
 * for every field and needle tried; separators never confuse it.
 *
 * SECURITY: test code.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cmocka.h>

#include "core/buf.h"
#include "mime/mime_header.h"
#include "mime/mime_search.h"

static const char *const names[MIME_SEARCH_NFIELDS] = {"From", "To", "Cc", "Bcc", "Subject"};
static const enum mime_search_form forms[MIME_SEARCH_NFIELDS] = {
    MIME_SEARCH_ADDRESS, MIME_SEARCH_ADDRESS, MIME_SEARCH_ADDRESS, MIME_SEARCH_ADDRESS,
    MIME_SEARCH_SUBJECT};

/* The answer from the header block itself, as SEARCH gives it without a cache. */
static int
direct(const char *hdr, size_t len, int field, const char *needle, size_t nlen)
{
	struct mime_field f;
	size_t pos = 0, namelen = strlen(names[field]);

	while (mime_header_next(hdr, len, &pos, &f)) {
		if (!f.has_colon || f.name_len != namelen ||
		    strncasecmp(f.name, names[field], namelen) != 0)
			continue;
		if (nlen == 0)
			return 1;
		struct buf v = BUF_INIT(0);
		mime_search_value(&v, &f, forms[field]);
		int hit = v.len >= nlen && memmem(v.data, v.len, needle, nlen) != NULL;
		buf_free(&v);
		if (hit)
			return 1;
	}
	return 0;
}

static const char *const headers[] = {
    "From: \"Sender Three\" <sender3@Example.ORG>\r\n"
    "To: a@x.test, \"B, Person\" <b@y.test>\r\n"
    "To: second@z.test\r\n"
    "Subject:   Hello\t  \r\n   World  \r\n"
    "\r\n",
    "From: =?utf-8?q?J=C3=BCrgen_M=C3=BCller?= <jm@example.de>\r\n"
    "Cc: undisclosed-recipients:;\r\n"
    "Bcc:\r\n"
    "Subject: =?iso-8859-1?q?=C4pfel?= und Birnen\r\n"
    "\r\n",
    "Subject: no addresses\r\n"
    "X-Other: From: fake@x.test\r\n"
    "\r\n",
    "From: group: a@b.c, d@e.f;\r\n"
    "From: second-from@x.test\r\n"
    "\r\n",
};

static const char *const needles[] = {
    "",
    "sender3",
    "example.org",
    "sender three",
    "<sender3@example.org>",
    "b, person",
    "second@z",
    "hello world",
    "hello\tworld",
    "jürgen",
    "müller",
    "äpfel",
    "birnen",
    "undisclosed",
    "fake",
    "group",
    "d@e.f",
    "nothing-here",
    "@",
    " ",
};

static void
test_cache_matches_direct(void **state)
{
	(void)state;
	for (size_t h = 0; h < sizeof(headers) / sizeof(headers[0]); h++) {
		const char *hdr = headers[h];
		size_t len = strlen(hdr);
		struct buf cache = BUF_INIT(0);

		assert_true(mime_search_cache(&cache, hdr, len));
		for (int field = 0; field < MIME_SEARCH_NFIELDS; field++) {
			for (size_t k = 0; k < sizeof(needles) / sizeof(needles[0]); k++) {
				/* Needles are case-mapped before matching: do the same. */
				struct buf n = BUF_INIT(0);
				mime_casemap(&n, needles[k], strlen(needles[k]), 0);
				const char *nd = n.data != NULL ? n.data : "";
				int want = direct(hdr, len, field, nd, n.len);
				int got =
				    mime_search_cached(cache.data, cache.len,
						       (enum mime_search_field)field, nd, n.len);
				if (got != want)
					fail_msg("header %zu, %s, \"%s\": cache %d, direct %d", h,
						 names[field], needles[k], got, want);
				buf_free(&n);
			}
		}
		buf_free(&cache);
	}
}

static void
test_separators(void **state)
{
	struct buf cache = BUF_INIT(0);
	/* An encoded word that decodes to a separator byte: no cache for that message. */
	const char *bad = "Subject: =?utf-8?q?a=01b?=\r\n\r\n";

	(void)state;
	assert_false(mime_search_cache(&cache, bad, strlen(bad)));
	assert_int_equal(cache.len, 0);
	const char *ok = "From: a@b.test\r\n\r\n";
	assert_true(mime_search_cache(&cache, ok, strlen(ok)));
	/* A needle holding a separator: the cache cannot tell. */
	assert_int_equal(mime_search_cached(cache.data, cache.len, MIME_SEARCH_FROM, "a\x01", 2),
			 -1);
	assert_int_equal(mime_search_cached(cache.data, cache.len, MIME_SEARCH_FROM, "\x02", 1),
			 -1);
	/* A malformed cache: it cannot tell either. */
	assert_int_equal(mime_search_cached("", 0, MIME_SEARCH_SUBJECT_FIELD, "x", 1), -1);
	assert_int_equal(mime_search_cached(cache.data, cache.len, MIME_SEARCH_FROM, "a@b", 3), 1);
	assert_int_equal(mime_search_cached(cache.data, cache.len, MIME_SEARCH_TO, "", 0), 0);
	buf_free(&cache);
}

/* The SENT* day: the Date: header's day in its own zone; 0 without a valid Date:. */
static void
test_sent_day(void **state)
{
	static const struct {
		const char *hdr;
		int64_t day;
	} v[] = {
	    {"Date: Thu, 01 Jan 1970 23:59:59 +0000\r\n\r\n", 0},
	    {"Date: Fri, 02 Jan 1970 00:00:00 +0000\r\n\r\n", 1},
	    /* 2024-03-10 01:00 +0500 is 2024-03-09 20:00 UTC: its own zone's day counts */
	    {"Subject: x\r\nDate: Sun, 10 Mar 2024 01:00:00 +0500\r\n\r\n", 19792},
	    {"Date: Wed, 31 Dec 1969 23:00:00 +0000\r\n\r\n", -1},
	    {"Date: not a date\r\n\r\n", 0},
	    {"From: a@b.test\r\n\r\n", 0},
	};
	struct buf cache = BUF_INIT(0);
	int64_t day;

	(void)state;
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		assert_true(mime_search_cache(&cache, v[i].hdr, strlen(v[i].hdr)));
		day = 12345;
		assert_int_equal(mime_search_cached_day(cache.data, cache.len, &day), 0);
		if (day != v[i].day)
			fail_msg("%s: day %lld, want %lld", v[i].hdr, (long long)day,
				 (long long)v[i].day);
	}
	/* A cache made before the day was kept: the caller reads the message. */
	const char old[] = "\x02\x01a@b.test\x02\x02\x02\x02";
	assert_int_equal(mime_search_cached_day(old, sizeof(old) - 1, &day), -1);
	/* The fields still answer with the day section after them. */
	assert_true(mime_search_cache(&cache, v[2].hdr, strlen(v[2].hdr)));
	assert_int_equal(
	    mime_search_cached(cache.data, cache.len, MIME_SEARCH_SUBJECT_FIELD, "x", 1), 1);
	assert_int_equal(
	    mime_search_cached(cache.data, cache.len, MIME_SEARCH_SUBJECT_FIELD, "1979", 4), 0);
	buf_free(&cache);
}

static void
test_casemap(void **state)
{
	struct buf b = BUF_INIT(0);

	(void)state;
	mime_casemap(&b, "ABC \xc3\x84 \xce\xa3 \xd0\x96 x\xffY", 16, 0);
	assert_string_equal(b.data, "abc \xc3\xa4 \xcf\x83 \xd0\xb6 x\xffy");
	buf_free(&b);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_cache_matches_direct),
	    cmocka_unit_test(test_separators),
	    cmocka_unit_test(test_sent_day),
	    cmocka_unit_test(test_casemap),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
