/*
 * test_imap_utf7 — unit tests for modified UTF-7: known vectors, round
 * trips of random text, and every kind of non-canonical or broken input.
 *
 * SECURITY: test code.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/buf.h"
#include "imap/imap_utf7.h"

struct vec {
	const char *utf8;
	const char *mutf7;
};

static const struct vec vectors[] = {
    {"", ""},
    {"INBOX", "INBOX"},
    {"Entw\xc3\xbcrfe", "Entw&APw-rfe"},
    {"~peter/mail/\xe5\x8f\xb0\xe5\x8c\x97/\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e",
     "~peter/mail/&U,BTFw-/&ZeVnLIqe-"},
    {"\xf0\x9f\x98\x80", "&2D3eAA-"},
    {"a&b", "a&-b"},
    {"&", "&-"},
    {"&&", "&-&-"},
    {"\xc3\xa9&", "&AOk-&-"},
    {"&\xc3\xa9", "&-&AOk-"},
    {"\x1f", "&AB8-"},
    {"\x7f", "&AH8-"},
    {"\xce\xa9\xe2\x82\xac\xf0\x9f\x98\x80x", "&A6kgrNg93gA-x"},
    {"\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82", "&BB8EQAQ4BDIENQRC-"},
    {"\xef\xbf\xbf", "&,,8-"},
    {"\xf4\x8f\xbf\xbf", "&2,,f,w-"},
    {" -~", " -~"},
};

static void
test_vectors(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
		const struct vec *v = &vectors[i];
		struct buf b = BUF_INIT(0);
		assert_int_equal(imap_utf7_encode(v->utf8, strlen(v->utf8), &b), 0);
		assert_string_equal(buf_str(&b), v->mutf7);
		buf_reset(&b);
		assert_int_equal(imap_utf7_decode(v->mutf7, strlen(v->mutf7), &b), 0);
		assert_string_equal(buf_str(&b), v->utf8);
		assert_true(imap_utf7_utf8_valid(v->utf8, strlen(v->utf8)));
		buf_free(&b);
	}
}

static void
reject_decode(const char *s, size_t len)
{
	struct buf b = BUF_INIT(0);

	buf_puts(&b, "keep");
	if (imap_utf7_decode(s, len, &b) != -1)
		fail_msg("decoded non-canonical \"%s\" as \"%s\"", s, buf_str(&b));
	assert_string_equal(buf_str(&b), "keep");
	buf_free(&b);
}

#define REJECT(s) reject_decode(s, sizeof(s) - 1)

static void
test_decode_rejects(void **state)
{
	(void)state;
	REJECT("&");		      /* unterminated */
	REJECT("&AOk");		      /* unterminated */
	REJECT("a&AOk");	      /* unterminated */
	REJECT("&AOk-&AOk-");	      /* adjacent shifts */
	REJECT("&AGE-");	      /* 'a' inside a shift */
	REJECT("&ACY-");	      /* '&' inside a shift */
	REJECT("&ACA-");	      /* ' ' inside a shift */
	REJECT("&AOl-");	      /* non-zero padding bits */
	REJECT("&AOkA-");	      /* a whole extra base64 digit */
	REJECT("&A-");		      /* no complete UTF-16 unit */
	REJECT("&AA-");		      /* no complete UTF-16 unit */
	REJECT("&2D0-");	      /* lone high surrogate */
	REJECT("&2D3YPQ-");	      /* two high surrogates */
	REJECT("&3gA-");	      /* lone low surrogate */
	REJECT("&2D0AQQ-");	      /* high surrogate then a BMP unit */
	REJECT("&AAA-");	      /* U+0000 */
	REJECT("&AO!-");	      /* not base64 */
	REJECT("&AO/-");	      /* '/' is ',' in modified base64 */
	REJECT("&AOk=-");	      /* no padding in modified base64 */
	REJECT("&U,BTFw-&ZeVnLIqe-"); /* adjacent shifts */
	REJECT("\xc3\xa9");	      /* raw 8-bit */
	REJECT("a\x01");	      /* raw control */
	REJECT("a\x7f");	      /* raw DEL */
	REJECT("a\tb");
	static const char nul[] = "a\0b";
	reject_decode(nul, 3);
}

static void
reject_encode(const char *s, size_t len)
{
	struct buf b = BUF_INIT(0);

	buf_puts(&b, "keep");
	assert_int_equal(imap_utf7_encode(s, len, &b), -1);
	assert_string_equal(buf_str(&b), "keep");
	assert_false(imap_utf7_utf8_valid(s, len) && memchr(s, 0, len) == NULL);
	buf_free(&b);
}

#define REJECT_ENC(s) reject_encode(s, sizeof(s) - 1)

static void
test_encode_rejects(void **state)
{
	(void)state;
	REJECT_ENC("\xff");
	REJECT_ENC("\x80");
	REJECT_ENC("a\xc3");		/* truncated */
	REJECT_ENC("\xe2\x82");		/* truncated */
	REJECT_ENC("\xf0\x9f\x98");	/* truncated */
	REJECT_ENC("\xc0\x80");		/* overlong NUL */
	REJECT_ENC("\xc1\xbf");		/* overlong */
	REJECT_ENC("\xe0\x80\xaf");	/* overlong */
	REJECT_ENC("\xf0\x80\x80\xaf"); /* overlong */
	REJECT_ENC("\xed\xa0\x80");	/* surrogate */
	REJECT_ENC("\xed\xbf\xbf");	/* surrogate */
	REJECT_ENC("\xf4\x90\x80\x80"); /* above U+10FFFF */
	REJECT_ENC("\xf5\x80\x80\x80");
	REJECT_ENC("\xc3\x28"); /* bad continuation */
	static const char nul[] = "a\0b";
	reject_encode(nul, 3);
	assert_true(imap_utf7_utf8_valid(nul, 3)); /* valid UTF-8, but not a name */
}

static void
test_bounded(void **state)
{
	(void)state;
	struct buf b = BUF_INIT(6);
	assert_int_equal(imap_utf7_encode("Entw\xc3\xbcrfe", 9, &b), -1);
	assert_int_equal(b.len, 0);
	assert_int_equal(imap_utf7_decode("~peter/mail/&U,BTFw-", 20, &b), -1);
	assert_int_equal(b.len, 0);
	assert_int_equal(imap_utf7_decode("&U,BTFw-", 8, &b), 0);
	assert_int_equal(b.len, 6);
	buf_free(&b);
}

/* Every maximum below the needed size fails cleanly; the exact size works. */
static void
test_bounded_all_sizes(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
		const struct vec *v = &vectors[i];
		size_t need = strlen(v->mutf7);
		for (size_t max = 1; max <= need; max++) {
			struct buf b = BUF_INIT(max);
			int r = imap_utf7_encode(v->utf8, strlen(v->utf8), &b);
			assert_int_equal(r, max == need ? 0 : -1);
			assert_int_equal(b.len, max == need ? need : 0);
			buf_free(&b);
		}
		need = strlen(v->utf8);
		for (size_t max = 1; max <= need; max++) {
			struct buf b = BUF_INIT(max);
			int r = imap_utf7_decode(v->mutf7, strlen(v->mutf7), &b);
			assert_int_equal(r, max == need ? 0 : -1);
			assert_int_equal(b.len, max == need ? need : 0);
			buf_free(&b);
		}
	}
}

/* A pseudo-random code point, biased towards the interesting ranges. */
static uint32_t
random_cp(unsigned *seed)
{
	uint32_t r = (uint32_t)rand_r(seed);
	switch (r % 6) {
	case 0:
	case 1:
		return 0x20 + r / 8 % 0x5f; /* printable ASCII, '&' included */
	case 2:
		return 1 + r / 8 % 0x7f; /* controls too */
	case 3:
		return 0x80 + r / 8 % 0x780;
	case 4: {
		uint32_t c = 0x800 + r / 8 % 0xf800;
		return (c >= 0xd800 && c <= 0xdfff) ? 0x4e2d : c;
	}
	default:
		return 0x10000 + r / 8 % 0x100000;
	}
}

static void
put_utf8(struct buf *b, uint32_t cp)
{
	if (cp < 0x80) {
		buf_putc(b, (char)cp);
	} else if (cp < 0x800) {
		buf_putc(b, (char)(0xc0 | (cp >> 6)));
		buf_putc(b, (char)(0x80 | (cp & 0x3f)));
	} else if (cp < 0x10000) {
		buf_putc(b, (char)(0xe0 | (cp >> 12)));
		buf_putc(b, (char)(0x80 | ((cp >> 6) & 0x3f)));
		buf_putc(b, (char)(0x80 | (cp & 0x3f)));
	} else {
		buf_putc(b, (char)(0xf0 | (cp >> 18)));
		buf_putc(b, (char)(0x80 | ((cp >> 12) & 0x3f)));
		buf_putc(b, (char)(0x80 | ((cp >> 6) & 0x3f)));
		buf_putc(b, (char)(0x80 | (cp & 0x3f)));
	}
}

static void
test_roundtrip_random(void **state)
{
	(void)state;
	unsigned seed = 12345;
	for (int iter = 0; iter < 20000; iter++) {
		struct buf u = BUF_INIT(0), m = BUF_INIT(0), d = BUF_INIT(0), m2 = BUF_INIT(0);
		int n = rand_r(&seed) % 12;
		for (int k = 0; k < n; k++)
			put_utf8(&u, random_cp(&seed));
		assert_true(imap_utf7_utf8_valid(buf_str(&u), u.len));
		assert_int_equal(imap_utf7_encode(buf_str(&u), u.len, &m), 0);
		/* Only printable ASCII on the wire. */
		for (size_t k = 0; k < m.len; k++)
			assert_true(m.data[k] >= 0x20 && m.data[k] <= 0x7e);
		assert_int_equal(imap_utf7_decode(buf_str(&m), m.len, &d), 0);
		assert_int_equal(d.len, u.len);
		assert_memory_equal(buf_str(&d), buf_str(&u), u.len);
		assert_int_equal(imap_utf7_encode(buf_str(&d), d.len, &m2), 0);
		assert_string_equal(buf_str(&m2), buf_str(&m));
		buf_free(&u);
		buf_free(&m);
		buf_free(&d);
		buf_free(&m2);
	}
}

/* Random short strings over the mUTF-7 alphabet: whatever decodes must re-encode identically. */
static void
test_canonical_random(void **state)
{
	(void)state;
	static const char alpha[] = "&-AB,+z90a/!";
	unsigned seed = 99;
	int ok = 0;
	for (int iter = 0; iter < 200000; iter++) {
		char s[12];
		size_t n = (size_t)(rand_r(&seed) % (int)sizeof(s));
		for (size_t k = 0; k < n; k++)
			s[k] = alpha[rand_r(&seed) % (int)(sizeof(alpha) - 1)];
		struct buf d = BUF_INIT(0), m = BUF_INIT(0);
		if (imap_utf7_decode(s, n, &d) == 0) {
			ok++;
			assert_true(imap_utf7_utf8_valid(buf_str(&d), d.len));
			assert_int_equal(imap_utf7_encode(buf_str(&d), d.len, &m), 0);
			assert_int_equal(m.len, n);
			assert_memory_equal(buf_str(&m), s, n);
		}
		buf_free(&d);
		buf_free(&m);
	}
	assert_true(ok > 1000);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_vectors),	      cmocka_unit_test(test_decode_rejects),
	    cmocka_unit_test(test_encode_rejects),    cmocka_unit_test(test_bounded),
	    cmocka_unit_test(test_bounded_all_sizes), cmocka_unit_test(test_roundtrip_random),
	    cmocka_unit_test(test_canonical_random),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
