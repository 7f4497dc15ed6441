/*
 * test_smtp_client — unit tests for the pure parts of the SMTP client: the
 * reply parser (whole, one byte at a time, pipelined replies, every error),
 * the reply summary, the EHLO capability reader and the dot-stuffer.
 *
 * SECURITY: tests only; inputs are copied into exactly-sized heap blocks
 * where an overread must be caught by ASan.
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
#include "smtp/smtp_client.h"

#define S(lit) (lit), (sizeof(lit) - 1)

static char *
dup_exact(const char *s, size_t n)
{
	char *p = malloc(n ? n : 1);
	assert_non_null(p);
	memcpy(p, s, n);
	return p;
}

/* Feed all of s (chunk bytes at a time; 0: all at once) until one reply is
 * complete; returns the parser's result and sets *used_r. */
static int
feed(struct smtp_reply_parser *p, const char *s, size_t n, size_t chunk, size_t *used_r)
{
	size_t off = 0;
	char *copy = dup_exact(s, n);
	int r = 0;
	while (off < n) {
		size_t k = chunk ? chunk : n;
		if (k > n - off)
			k = n - off;
		size_t used = 0;
		r = smtp_reply_parse(p, copy + off, k, &used);
		assert_true(used <= k);
		off += used;
		if (r != 0)
			break;
		assert_int_equal(used, k);
	}
	free(copy);
	*used_r = off;
	return r;
}

static void
test_reply_single(void **state)
{
	for (size_t chunk = 0; chunk <= 3; chunk++) {
		struct smtp_reply_parser p;
		size_t used;
		smtp_reply_parser_init(&p);
		assert_int_equal(feed(&p, S("250 2.1.0 Sender ok\r\n"), chunk, &used), 1);
		assert_int_equal(used, 21);
		assert_int_equal(p.reply.code, 250);
		assert_string_equal(p.reply.enhanced, "2.1.0");
		assert_string_equal(buf_str(&p.reply.text), "2.1.0 Sender ok");
		assert_int_equal(p.reply.nlines, 1);
		smtp_reply_parser_free(&p);
	}
}

static void
test_reply_multiline_ehlo(void **state)
{
	const char in[] = "250-mx.example.org Hello\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n"
			  "250-8BITMIME\r\n250-STARTTLS\r\n250-AUTH PLAIN LOGIN\r\n"
			  "250-ENHANCEDSTATUSCODES\r\n250-DSN\r\n250-SMTPUTF8\r\n"
			  "250 CHUNKING\r\n";
	for (size_t chunk = 0; chunk <= 2; chunk++) {
		struct smtp_reply_parser p;
		struct smtp_caps caps;
		size_t used;
		smtp_reply_parser_init(&p);
		assert_int_equal(feed(&p, in, sizeof(in) - 1, chunk, &used), 1);
		assert_int_equal(used, sizeof(in) - 1);
		assert_int_equal(p.reply.nlines, 10);
		assert_string_equal(p.reply.enhanced, "");
		smtp_caps_parse(&p.reply, &caps);
		assert_int_equal(caps.flags, SMTP_CAP_PIPELINING | SMTP_CAP_SIZE |
						 SMTP_CAP_8BITMIME | SMTP_CAP_STARTTLS |
						 SMTP_CAP_AUTH | SMTP_CAP_ENHANCEDSTATUSCODES |
						 SMTP_CAP_DSN | SMTP_CAP_SMTPUTF8 |
						 SMTP_CAP_CHUNKING);
		assert_int_equal(caps.size_max, 10240000);
		assert_int_equal(caps.auth, SMTP_AUTH_PLAIN | SMTP_AUTH_LOGIN);
		smtp_reply_parser_free(&p);
	}
}

static void
test_caps_variants(void **state)
{
	struct smtp_reply_parser p;
	struct smtp_caps caps;
	size_t used;
	smtp_reply_parser_init(&p);
	/* Lowercase keywords, old AUTH= form, SIZE without a number, unknown ones. */
	assert_int_equal(feed(&p,
			      S("250-hi\r\n250-size\r\n250-auth=login\r\n250-XFOO bar\r\n"
				"250 pipelining\r\n"),
			      0, &used),
			 1);
	smtp_caps_parse(&p.reply, &caps);
	assert_int_equal(caps.flags, SMTP_CAP_SIZE | SMTP_CAP_AUTH | SMTP_CAP_PIPELINING);
	assert_int_equal(caps.size_max, 0);
	assert_int_equal(caps.auth, SMTP_AUTH_LOGIN);
	/* The greeting line itself is never a capability. */
	assert_int_equal(feed(&p, S("250 STARTTLS\r\n"), 0, &used), 1);
	smtp_caps_parse(&p.reply, &caps);
	assert_int_equal(caps.flags, 0);
	smtp_reply_parser_free(&p);
}

static void
test_reply_pipelined(void **state)
{
	/* Three replies in one read: taken one at a time. */
	const char in[] = "250 2.1.0 ok\r\n550-5.1.1 no\r\n550 5.1.1 such user\r\n354 go\r\n";
	struct smtp_reply_parser p;
	size_t used, off = 0;
	smtp_reply_parser_init(&p);
	assert_int_equal(smtp_reply_parse(&p, in, sizeof(in) - 1, &used), 1);
	assert_int_equal(p.reply.code, 250);
	off += used;
	assert_int_equal(smtp_reply_parse(&p, in + off, sizeof(in) - 1 - off, &used), 1);
	assert_int_equal(p.reply.code, 550);
	assert_int_equal(p.reply.nlines, 2);
	assert_string_equal(p.reply.enhanced, "5.1.1");
	struct buf s = BUF_INIT(0);
	smtp_reply_summary(&p.reply, &s, 400);
	assert_string_equal(buf_str(&s), "550 5.1.1 no 5.1.1 such user");
	buf_free(&s);
	off += used;
	assert_int_equal(smtp_reply_parse(&p, in + off, sizeof(in) - 1 - off, &used), 1);
	assert_int_equal(p.reply.code, 354);
	assert_string_equal(p.reply.enhanced, "");
	off += used;
	assert_int_equal(off, sizeof(in) - 1);
	/* Nothing left: need more. */
	assert_int_equal(smtp_reply_parse(&p, in + off, 0, &used), 0);
	smtp_reply_parser_free(&p);
}

static void
test_reply_forms(void **state)
{
	struct smtp_reply_parser p;
	size_t used;
	smtp_reply_parser_init(&p);
	/* Bare "250", LF-only ends, an enhanced code of another class is text. */
	assert_int_equal(feed(&p, S("250\n"), 0, &used), 1);
	assert_int_equal(p.reply.code, 250);
	assert_string_equal(buf_str(&p.reply.text), "");
	assert_int_equal(feed(&p, S("451 5.1.1 odd\r\n"), 0, &used), 1);
	assert_string_equal(p.reply.enhanced, "");
	assert_int_equal(feed(&p, S("554 5.1.10 null MX\r\n"), 0, &used), 1);
	assert_string_equal(p.reply.enhanced, "5.1.10");
	assert_int_equal(feed(&p, S("550 5.1.1x no\r\n"), 0, &used), 1);
	assert_string_equal(p.reply.enhanced, "");
	/* Control and 8-bit bytes in text are replaced. */
	assert_int_equal(feed(&p, S("250 a\tb\x1b[31m\xc3\xa9\r\n"), 0, &used), 1);
	assert_string_equal(buf_str(&p.reply.text), "a?b?[31m??");
	struct buf s = BUF_INIT(0);
	smtp_reply_summary(&p.reply, &s, 6);
	assert_string_equal(buf_str(&s), "250...");
	buf_free(&s);
	smtp_reply_parser_free(&p);
}

static void
expect_error(const char *in, size_t n, enum smtp_reply_err err)
{
	struct smtp_reply_parser p;
	size_t used;
	smtp_reply_parser_init(&p);
	assert_int_equal(feed(&p, in, n, 0, &used), -1);
	assert_int_equal(p.err, err);
	assert_non_null(p.errtext);
	/* Sticky. */
	assert_int_equal(smtp_reply_parse(&p, "250 ok\r\n", 8, &used), -1);
	smtp_reply_parser_free(&p);
}

static void
test_reply_errors(void **state)
{
	expect_error(S("25 ok\r\n"), SMTP_REPLY_ERR_CODE);
	expect_error(S("150 ok\r\n"), SMTP_REPLY_ERR_CODE);
	expect_error(S("650 ok\r\n"), SMTP_REPLY_ERR_CODE);
	expect_error(S("2a0 ok\r\n"), SMTP_REPLY_ERR_CODE);
	expect_error(S("260 ok\r\n"), SMTP_REPLY_ERR_CODE);
	expect_error(S("250_ok\r\n"), SMTP_REPLY_ERR_CODE);
	expect_error(S("\r\n"), SMTP_REPLY_ERR_CODE);
	expect_error(S("250-a\r\n251 b\r\n"), SMTP_REPLY_ERR_MISMATCH);
	char *longl = malloc(SMTP_CLIENT_LINE_MAX + 10);
	memset(longl, 'x', SMTP_CLIENT_LINE_MAX + 10);
	memcpy(longl, "250 ", 4);
	expect_error(longl, SMTP_CLIENT_LINE_MAX + 10, SMTP_REPLY_ERR_LINE_TOO_LONG);
	free(longl);
	struct buf many = BUF_INIT(0);
	for (int i = 0; i < SMTP_CLIENT_REPLY_LINES + 1; i++)
		buf_puts(&many, "250-x\r\n");
	buf_puts(&many, "250 end\r\n");
	expect_error(many.data, many.len, SMTP_REPLY_ERR_TOO_MANY);
	buf_reset(&many);
	for (int i = 0; i < 40; i++) {
		buf_puts(&many, "250-");
		for (int k = 0; k < 1000; k++)
			buf_putc(&many, 'y');
		buf_puts(&many, "\r\n");
	}
	expect_error(many.data, many.len, SMTP_REPLY_ERR_TOO_MANY);
	buf_free(&many);
}

static void
stuff(const char *in, size_t n, size_t chunk, struct buf *out)
{
	struct smtp_stuffer st;
	smtp_stuffer_init(&st);
	for (size_t off = 0; off < n;) {
		size_t k = chunk && chunk < n - off ? chunk : n - off;
		smtp_stuff(&st, in + off, k, out);
		off += k;
	}
	smtp_stuff_end(&st, out);
}

static void
test_stuffer(void **state)
{
	static const struct {
		const char *in, *out;
	} cases[] = {
	    {"", ".\r\n"},
	    {"a\r\n", "a\r\n.\r\n"},
	    {"a", "a\r\n.\r\n"},
	    {".a\r\n", "..a\r\n.\r\n"},
	    {"a\r\n.\r\nb\r\n", "a\r\n..\r\nb\r\n.\r\n"},
	    {"a\r\n..b\r\n.", "a\r\n...b\r\n..\r\n.\r\n"},
	    {"x.y\r\n", "x.y\r\n.\r\n"},
	    {"a\n.b\n", "a\n..b\n\r\n.\r\n"},
	    {"a\r", "a\r\r\n.\r\n"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		for (size_t chunk = 0; chunk <= 2; chunk++) {
			struct buf out = BUF_INIT(0);
			char *in = dup_exact(cases[i].in, strlen(cases[i].in));
			stuff(in, strlen(cases[i].in), chunk, &out);
			assert_string_equal(buf_str(&out), cases[i].out);
			free(in);
			buf_free(&out);
		}
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_reply_single),  cmocka_unit_test(test_reply_multiline_ehlo),
	    cmocka_unit_test(test_caps_variants), cmocka_unit_test(test_reply_pipelined),
	    cmocka_unit_test(test_reply_forms),	  cmocka_unit_test(test_reply_errors),
	    cmocka_unit_test(test_stuffer),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
