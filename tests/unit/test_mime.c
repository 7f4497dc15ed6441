/*
 * Unit tests for src/mime: header splitting and unfolding, the lexer and
 * RFC 2231 parameters, address lists, dates, the decoders (base64, QP,
 * RFC 2047, RFC 2231, charsets), the MIME tree (nesting, broken
 * boundaries, message/rfc822, digests, limits, 8-bit and binary bodies,
 * bare LF), ENVELOPE / BODY / BODYSTRUCTURE against Dovecot 2.3.19, section
 * addressing, BINARY decoding and text extraction.
 *
 * Expected IMAP strings come from Dovecot (tests/unit/mime_data/
 * dovecot-oracle.py): a few inline below, the rest in mime_data/dovecot.txt
 * for the messages in mime_data/msgs/, and mime_data/python-dovecot.txt for
 * the 47 messages of Debian's libpython3.11-testsuite (skipped when it is
 * not installed).
 *
 * The oracle reports Dovecot's steady state (after a first FETCH): e.g. a
 * message that is one plain 7-bit us-ascii text part is answered in the
 * canonical lower-case form, as Dovecot does once it has cached that fact.
 *
 * Differences from Dovecot that are kept on purpose:
 *  - RFC 2231 "name*" after a continued parameter: Dovecot reuses the
 *    previous section number; we use 0 (RFC 2231 §4).
 *  - MIME_BS_GLOBAL (IMAP4rev2 only) writes message/global with envelope,
 *    body and lines (RFC 9051 §7.5.2); Dovecot 2.3 has no IMAP4rev2.
 *  - Header lines longer than Dovecot's input buffer and parameter lists
 *    over MIME_LEX_MAX_PARAMS entries: Dovecot splits / keeps them, we
 *    keep / cut them.
 *
 * SECURITY: test code; reads only its own data files.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "core/buf.h"
#include "core/util.h"
#include "mime/mime.h"
#include "mime/mime_addr.h"
#include "mime/mime_address.h"
#include "mime/mime_date.h"
#include "mime/mime_decode.h"
#include "mime/mime_header.h"
#include "mime/mime_imap.h"
#include "mime/mime_lex.h"
#include "mime/mime_text.h"

#define DATA_DIR "tests/unit/mime_data"
#define PY_DIR "/usr/lib/python3.11/test/test_email/data"

/* A standard header block for test messages. */
#define H "From: a@b.c\nTo: d@e.f\nSubject: s\nDate: Mon, 1 Jan 2001 00:00:00 +0000\n"

/* ---- helpers ---- */

/* LF -> CRLF; the caller frees. */
static char *
crlf(const char *s)
{
	struct buf b = BUF_INIT(0);

	for (; *s; s++) {
		if (*s == '\n')
			buf_putc(&b, '\r');
		buf_putc(&b, *s);
	}
	return buf_steal(&b);
}

static char *
bodystructure(const char *msg, size_t len, unsigned int flags)
{
	struct mime_part *p = mime_parse(msg, len);
	struct buf b = BUF_INIT(0);

	assert_int_equal(mime_bodystructure(&b, p, flags), 0);
	mime_free(&p);
	assert_null(p);
	return buf_steal(&b);
}

static char *
envelope(const char *msg, size_t len)
{
	struct mime_part *p = mime_parse(msg, len);
	struct buf b = BUF_INIT(0);

	assert_int_equal(mime_envelope(&b, p), 0);
	mime_free(&p);
	return buf_steal(&b);
}

/* Check the structural invariants of a tree built from a len-byte message. */
static void
check_tree(const struct mime_part *p, size_t len, size_t *count)
{
	size_t pos = p->body_off;

	(*count)++;
	assert_true(p->depth < MIME_MAX_DEPTH);
	assert_true(p->hdr_off + p->hdr_len <= len);
	assert_true(p->hdr_off + p->hdr_len <= p->body_off);
	assert_true(p->body_off + p->body_len <= len);
	assert_true(p->hdr_vsize >= p->hdr_len && p->body_vsize >= p->body_len);
	assert_true(p->body_vsize - p->body_len <= p->body_lines);
	if (p->flags & MIME_PART_MESSAGE)
		assert_int_equal(p->nchildren, 1);
	for (const struct mime_part *c = p->children; c != NULL; c = c->next) {
		assert_ptr_equal(c->parent, p);
		assert_int_equal(c->depth, p->depth + 1);
		assert_true(c->hdr_off >= pos);
		assert_true(c->body_off + c->body_len <= p->body_off + p->body_len);
		pos = c->body_off + c->body_len;
		check_tree(c, len, count);
	}
}

static void
parse_and_check(const char *msg, size_t len)
{
	struct mime_part *p = mime_parse(msg, len);
	struct buf b = BUF_INIT(0);
	size_t n = 0;

	check_tree(p, len, &n);
	assert_int_equal(n, mime_part_count(p));
	assert_true(n <= MIME_MAX_PARTS);
	assert_int_equal(mime_envelope(&b, p), 0);
	assert_int_equal(mime_bodystructure(&b, p, MIME_BS_EXTENDED | MIME_BS_GLOBAL), 0);
	assert_int_equal(mime_text_extract(&b, p, 0), 0);
	buf_free(&b);
	mime_free(&p);
}

/* ---- mime_header ---- */

static void
test_header_fields(void **state)
{
	static const char hdr[] = "From: a@b\r\nSubject: one\r\n two\r\nNo colon here\r\n"
				  "X-8bit: caf\xc3\xa9\r\nName \t:  v\r\n\r\nbody";
	struct mime_field f;
	size_t pos = 0;

	assert_int_equal(mime_header_next(hdr, sizeof(hdr) - 1, &pos, &f), 1);
	assert_int_equal(f.name_len, 4);
	assert_memory_equal(f.name, "From", 4);
	assert_int_equal(f.value_len, 4);
	assert_memory_equal(f.value, " a@b", 4);
	assert_int_equal(f.off, 0);
	assert_int_equal(f.len, 11);

	assert_int_equal(mime_header_next(hdr, sizeof(hdr) - 1, &pos, &f), 1);
	assert_memory_equal(f.name, "Subject", 7);
	assert_int_equal(f.value_len, strlen(" one\r\n two"));
	assert_memory_equal(f.value, " one\r\n two", f.value_len);

	assert_int_equal(mime_header_next(hdr, sizeof(hdr) - 1, &pos, &f), 1);
	assert_false(f.has_colon);
	assert_int_equal(f.name_len, 13);

	assert_int_equal(mime_header_next(hdr, sizeof(hdr) - 1, &pos, &f), 1);
	assert_memory_equal(f.value, " caf\xc3\xa9", 6);

	assert_int_equal(mime_header_next(hdr, sizeof(hdr) - 1, &pos, &f), 1);
	assert_int_equal(f.name_len, 4); /* white space before ':' dropped */
	assert_memory_equal(f.name, "Name", 4);

	assert_int_equal(mime_header_next(hdr, sizeof(hdr) - 1, &pos, &f), 0);
	assert_int_equal(mime_header_block_len(hdr, sizeof(hdr) - 1), sizeof(hdr) - 1 - 4);
}

static void
test_header_block_len(void **state)
{
	assert_int_equal(mime_header_block_len("", 0), 0);
	assert_int_equal(mime_header_block_len("\r\nbody", 6), 2);
	assert_int_equal(mime_header_block_len("\nbody", 5), 1);
	assert_int_equal(mime_header_block_len("A: b\n\nc", 7), 6);
	/* no empty line: everything is header, the body is empty */
	assert_int_equal(mime_header_block_len("A: b\nC: d", 9), 9);
	/* a line with only white space is a continuation, not the end */
	assert_int_equal(mime_header_block_len("A: b\n \nC: d\n\n", 13), 13);
}

static void
test_header_unfold(void **state)
{
	static const char hdr[] = "Subject:   a\r\n b\r\n\tc\r\nX: \r\nN: x\0y\r\n\r\n";
	struct mime_field f;
	struct buf b = BUF_INIT(0);
	size_t pos = 0;

	assert_int_equal(mime_header_next(hdr, sizeof(hdr) - 1, &pos, &f), 1);
	mime_header_unfold(&b, &f, 0);
	assert_string_equal(buf_str(&b), "a b\tc");
	buf_reset(&b);
	mime_header_unfold(&b, &f, MIME_UNFOLD_KEEP_BREAKS);
	assert_string_equal(buf_str(&b), "a\r\n b\r\n\tc");
	buf_reset(&b);
	assert_int_equal(mime_header_next(hdr, sizeof(hdr) - 1, &pos, &f), 1);
	mime_header_unfold(&b, &f, 0);
	assert_string_equal(buf_str(&b), ""); /* one space only: skipped */
	buf_reset(&b);
	assert_int_equal(mime_header_next(hdr, sizeof(hdr) - 1, &pos, &f), 1);
	mime_header_unfold(&b, &f, MIME_UNFOLD_NUL);
	assert_string_equal(buf_str(&b), "x\xef\xbf\xbdy");
	buf_free(&b);
}

static void
test_header_get(void **state)
{
	static const char hdr[] = "subject: first\nSUBJECT: second\nTo: a,\n b\n\nSubject: body";
	char *v;

	v = mime_header_get(hdr, sizeof(hdr) - 1, "Subject");
	assert_string_equal(v, "first");
	free(v);
	v = mime_header_get(hdr, sizeof(hdr) - 1, "to");
	assert_string_equal(v, "a, b");
	free(v);
	v = mime_header_get_raw(hdr, sizeof(hdr) - 1, "To");
	assert_string_equal(v, " a,\n b");
	free(v);
	assert_null(mime_header_get(hdr, sizeof(hdr) - 1, "Cc"));
	assert_null(mime_header_get(hdr, sizeof(hdr) - 1, "Subj"));
}

/* ---- mime_lex ---- */

static char *
params_str(const char *value)
{
	struct mime_lex lx;
	struct mime_param *p;
	struct buf ct = BUF_INIT(0), out = BUF_INIT(0);
	size_t n;
	int r;

	mime_lex_init(&lx, value, strlen(value), NULL);
	mime_lex_skip(&lx);
	r = mime_lex_content_type(&lx, &ct);
	buf_printf(&out, "%s|%d", buf_str(&ct), r);
	if (r >= 0) {
		n = mime_lex_params(&lx, &p);
		for (size_t i = 0; i < n; i++)
			buf_printf(&out, "|%s=%s", p[i].name, p[i].value);
		mime_params_free(p, n);
	}
	buf_free(&ct);
	return buf_steal(&out);
}

static void
test_content_type_params(void **state)
{
	static const struct {
		const char *in, *out;
	} t[] = {
	    {"text/plain", "text/plain|0"},
	    {"TEXT/HTML; CHARSET=\"UTF-8\"; Format=Flowed",
	     "TEXT/HTML|1|CHARSET=UTF-8|Format=Flowed"},
	    {"text / plain  ;  charset = \"utf-8\"  ", "text/plain|1|charset=utf-8"},
	    {"text/plain (comment); charset=us-ascii (c2) ; x=\"a\\\"b\"",
	     "text/plain|1|charset=us-ascii|x=a\"b"},
	    {"text", "text|-1"},
	    {"text/", "|-1"},
	    {"\"text/plain\"", "|-1"},
	    {"multipart; boundary=x", "|-1"},
	    {"text/plain junk; a=b", "|-1"},
	    {";;;", "|-1"},
	    {"text/plain; foo; bar=; =baz; charset=x", "text/plain|1|=baz|charset=x"},
	    {"text/plain; name==?utf-8?q?a?= b; c=d", "text/plain|1|name==?utf-8?q?a?=|c=d"},
	    {"text/plain; name=\"abc", "text/plain|1"},
	    {"text/plain; charset=\"\"", "text/plain|1|charset="},
	    /* RFC 2231: continuations merged, sorted, extended form kept */
	    {"a/b; name*0*=utf-8''%E2%82%AC; name*1=\".txt\"", "a/b|1|name*=utf-8''%E2%82%AC.txt"},
	    {"a/b; title*1=\"b\"; title*0=\"a\"; x*=\"plain\"", "a/b|1|title=ab|x*=plain"},
	    {"a/b; title*0=\"a\"; title*1=\"b\"; title*2=c", "a/b|1|title=abc"},
	    {"a/b; t*0*=utf-8''%41; t*1=\"b%\"; t*2*=%43", "a/b|1|t*=utf-8''%41b%25%43"},
	    {"a/b; t*0=a; t*2=c", "a/b|1|t*0=a|t*2=c"},
	    {"a/b; NAME*0=\"a\"; name*1=\"b\"; size=3", "a/b|1|size=3|NAME=ab"},
	    {"a/b; boundary*0=a; boundary*1=b", "a/b|1|boundary=ab"},
	};

	for (size_t i = 0; i < ARRAY_LEN(t); i++) {
		char *s = params_str(t[i].in);
		if (strcmp(s, t[i].out) != 0)
			fail_msg("%s: got %s, want %s", t[i].in, s, t[i].out);
		free(s);
	}
}

static void
test_lex_scanners(void **state)
{
	struct mime_lex lx;
	struct buf b = BUF_INIT(0), c = BUF_INIT(0);

	mime_lex_init(&lx, "  (a (nested) \\) c)  word", 25, &c);
	assert_int_equal(mime_lex_skip(&lx), 1);
	assert_string_equal(buf_str(&c), "a (nested) ) c");
	assert_int_equal(mime_lex_atom(&lx, &b), 0);
	assert_string_equal(buf_str(&b), "word");

	buf_reset(&b);
	mime_lex_init(&lx, "\"a\\\"b\r\n c\" x", 13, NULL);
	assert_int_equal(mime_lex_quoted(&lx, &b), 1);
	assert_string_equal(buf_str(&b), "a\"b c");

	buf_reset(&b);
	mime_lex_init(&lx, "a . b .c", 8, NULL);
	assert_int_equal(mime_lex_dot_atom(&lx, &b), 0);
	assert_string_equal(buf_str(&b), "a.b.c");

	buf_reset(&b);
	mime_lex_init(&lx, "Joe  \"Q.\"  Public <", 19, NULL);
	assert_int_equal(mime_lex_phrase(&lx, &b), 1);
	assert_string_equal(buf_str(&b), "Joe Q. Public");

	buf_reset(&b);
	mime_lex_init(&lx, "@[1.2\r\n .3]", 11, NULL);
	assert_int_equal(mime_lex_domain(&lx, &b), 0);
	assert_string_equal(buf_str(&b), "[1.2 .3]");

	mime_lex_init(&lx, "(unterminated", 13, NULL);
	assert_int_equal(mime_lex_skip(&lx), -1);
	buf_free(&b);
	buf_free(&c);
}

/* ---- mime_address ---- */

static char *
addr_str(const char *in)
{
	struct mime_address *a = mime_address_parse(in, strlen(in), 1), *l;
	struct buf b = BUF_INIT(0);

	for (l = a; l != NULL; l = l->next) {
		buf_printf(&b, "[%s|%s|%s|%s]", l->name ? l->name : "NIL",
			   l->route ? l->route : "NIL", l->mailbox ? l->mailbox : "NIL",
			   l->host ? l->host : "NIL");
	}
	mime_address_free(&a);
	assert_null(a);
	return buf_steal(&b);
}

static void
test_address_forms(void **state)
{
	/* every expectation is what Dovecot puts in ENVELOPE for the input */
	static const struct {
		const char *in, *out;
	} t[] = {
	    {"\"Joe Q. Public\" <john.q.public@example.com>",
	     "[Joe Q. Public|NIL|john.q.public|example.com]"},
	    {"Mary Smith <mary@x.test>, jdoe@example.org, Who? <one@y.test>",
	     "[Mary Smith|NIL|mary|x.test][NIL|NIL|jdoe|example.org][Who?|NIL|one|y.test]"},
	    {"<boss@nil.test>, \"Giant; \\\"Big\\\" Box\" <sysservices@example.net>",
	     "[NIL|NIL|boss|nil.test][Giant; \"Big\" Box|NIL|sysservices|example.net]"},
	    {"A Group:Ed Jones <c@a.test>,joe@where.test,John <jdoe@one.test>;",
	     "[NIL|NIL|A Group|NIL][Ed Jones|NIL|c|a.test][NIL|NIL|joe|where.test]"
	     "[John|NIL|jdoe|one.test][NIL|NIL|NIL|NIL]"},
	    {"undisclosed-recipients:;", "[NIL|NIL|undisclosed-recipients|NIL][NIL|NIL|NIL|NIL]"},
	    {"Pete(A nice \\) chap) <pete(his account)@silly.test(his host)>",
	     "[Pete|NIL|pete|silly.test]"},
	    {"user@host (Comment Name)", "[Comment Name|NIL|user|host]"},
	    {"a@b (first) (second)", "[second|NIL|a|b]"},
	    {"<@route1,@route2:user@host>", "[NIL|@route1,@route2|user|host]"},
	    {"bare", "[NIL|NIL|bare|MISSING_DOMAIN]"},
	    {"@nohost", "[NIL|NIL|MISSING_MAILBOX|nohost]"},
	    {"user@", "[NIL|NIL|user|MISSING_DOMAIN]"},
	    {"=?utf-8?q?J=C3=B6rg?= <j@x>", "[=?utf-8?q?J=C3=B6rg?=|NIL|j|x]"},
	    {"", ""},
	    {",,a@b,,", "[NIL|NIL|MISSING_MAILBOX|MISSING_DOMAIN][NIL|NIL|MISSING_MAILBOX|"
			"MISSING_DOMAIN][NIL|NIL|a|b][NIL|NIL|MISSING_MAILBOX|MISSING_DOMAIN]"},
	    {"\"\" <x@y>", "[NIL|NIL|x|y]"},
	    {"\"quoted\"@host", "[NIL|NIL|quoted|host]"},
	    {"group: ;", "[NIL|NIL|group|NIL][NIL|NIL|NIL|NIL]"},
	    {":;", "[NIL|NIL||NIL][NIL|NIL|NIL|NIL]"},
	    {"<>", "[NIL|NIL|MISSING_MAILBOX|MISSING_DOMAIN]"},
	    {"<a@b", "[NIL|NIL|a|SYNTAX_ERROR]"},
	    {"a@b>", "[NIL|NIL|a|b]"},
	    {"g1: a@b, (c) ; , c@d", "[NIL|NIL|g1|NIL][NIL|NIL|a|b][NIL|NIL|MISSING_MAILBOX|"
				     "MISSING_DOMAIN][NIL|NIL|NIL|NIL][NIL|NIL|c|d]"},
	    {"a@[1.2.3.4]", "[NIL|NIL|a|[1.2.3.4]]"},
	    {"\"a\" b <c@d>", "[a b|NIL|c|d]"},
	    {"x y z", "[x y z|NIL|MISSING_MAILBOX|MISSING_DOMAIN]"},
	    {"Foo <a@b>, Bar", "[Foo|NIL|a|b][NIL|NIL|Bar|MISSING_DOMAIN]"},
	    {"a@b c@d", "[NIL|NIL|a|b]"},
	    {"\"only quoted\"", "[only quoted|NIL|MISSING_MAILBOX|MISSING_DOMAIN]"},
	    {"<a@b> <c@d>", "[NIL|NIL|a|b]"},
	    {"a:b:c@d;", "[NIL|NIL|a|NIL][NIL|NIL|b|MISSING_DOMAIN][NIL|NIL|NIL|NIL]"},
	    {"@a:b@c", "[NIL|NIL|MISSING_MAILBOX|a]"},
	    {".user@x", "[NIL|NIL|.user|x]"},
	    {"us..er@x", "[NIL|NIL|us..er|x]"},
	    {"user.@x", "[NIL|NIL|user.|x]"},
	    {"<@a:>", "[NIL|@a|MISSING_MAILBOX|MISSING_DOMAIN]"},
	    {"<@a,b:c@d>", "[NIL|INVALID_ROUTE|b|SYNTAX_ERROR]"},
	    {"<@a c@d>", "[NIL|INVALID_ROUTE|c|d]"},
	    {"a@ b . c", "[NIL|NIL|a|b.c]"},
	    {"a@[x[y]", "[NIL|NIL|a|MISSING_DOMAIN]"},
	    {"\"unterminated <a@b>", "[NIL|NIL|MISSING_MAILBOX|MISSING_DOMAIN]"},
	    {"g: a@b, c@d", "[NIL|NIL|g|NIL][NIL|NIL|a|b][NIL|NIL|c|d][NIL|NIL|NIL|NIL]"},
	};

	for (size_t i = 0; i < ARRAY_LEN(t); i++) {
		char *s = addr_str(t[i].in);
		if (strcmp(s, t[i].out) != 0)
			fail_msg("%s: got %s, want %s", t[i].in, s, t[i].out);
		free(s);
	}

	/* without fill_missing the placeholders are empty */
	struct mime_address *a = mime_address_parse("bare", 4, 0);
	assert_non_null(a);
	assert_string_equal(a->mailbox, "bare");
	assert_string_equal(a->host, "");
	assert_true(a->invalid);
	mime_address_free(&a);

	/* a long list is capped */
	struct buf big = BUF_INIT(0);
	for (int i = 0; i < MIME_ADDRESS_MAX + 50; i++)
		buf_puts(&big, "a@b,");
	a = mime_address_parse(big.data, big.len, 1);
	size_t n = 0;
	for (struct mime_address *l = a; l != NULL; l = l->next)
		n++;
	assert_int_equal(n, MIME_ADDRESS_MAX);
	mime_address_free(&a);
	buf_free(&big);
}

/* ---- mime_date ---- */

static void
test_date(void **state)
{
	static const struct {
		const char *in;
		long long t;
		int tz;
	} ok[] = {
	    {"Mon, 1 Jan 2001 00:00:00 +0000", 978307200, 0},
	    {"Fri, 4 May 2001 14:05:44 -0400", 988999544, -240},
	    {"Fri,  4 May 2001 14:05:44 -0400 (EDT)", 988999544, -240},
	    {"31 Dec 1999 23:59:59 +0530", 946664999, 330},
	    {"1 Jan 01 00:00 EST", 978325200, -300}, /* obsolete year and zone */
	    {"2 Mar 49 00:00:00 GMT", 2498256000LL, 0},
	    {"2 Mar 50 00:00:00 UT", -625968000LL, 0},
	    {"Mon, 1 Jan 2001 00:00:59 Z", 978307259, 0},
	    {"Mon, 1 Jan 2001 00:00:60", 978307259, 0}, /* leap second, no zone */
	    {"Thu, 29 Feb 2024 12:00:00 -0000", 1709208000, 0},
	    {"Tue Jul  1 10:52:37 2003 +0200", 1057049557, 120}, /* asctime */
	    {"(c) 1 (x) jan (y) 2001", 978307200, 0},
	    {"Mon,\r\n 1 Jan\r\n\t2001 00:00:00 +0000", 978307200, 0},
	    {"1 Jan 2001 00:00:00 A", 978307200, 0}, /* military: -0000 */
	};
	static const char *const bad[] = {
	    "",
	    "garbage",
	    "Mon, 32 Jan 2001 00:00:00 +0000",
	    "30 Feb 2001",
	    "1 Foo 2001 10:00",
	    "1 Jan 2001 25:00:00",
	    "1 Jan 2001 10:61:00",
	    "1 Jan",
	    "Jan 2001",
	    "1 Jan 12345",
	};
	time_t t;
	int tz;

	for (size_t i = 0; i < ARRAY_LEN(ok); i++) {
		if (mime_date_parse(ok[i].in, strlen(ok[i].in), &t, &tz) != 0)
			fail_msg("%s: not parsed", ok[i].in);
		if ((long long)t != ok[i].t || tz != ok[i].tz)
			fail_msg("%s: got %lld %d", ok[i].in, (long long)t, tz);
	}
	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		if (mime_date_parse(bad[i], strlen(bad[i]), &t, &tz) == 0)
			fail_msg("%s: parsed", bad[i]);
	}
}

/* ---- mime_decode ---- */

static char *
decoded(int (*fn)(struct buf *, const char *, size_t), const char *in)
{
	struct buf b = BUF_INIT(0);

	assert_int_equal(fn(&b, in, strlen(in)), 0);
	return buf_steal(&b);
}

static int
qp_body(struct buf *b, const char *in, size_t n)
{
	return mime_decode_qp(b, in, n, 0);
}

static int
qp_header(struct buf *b, const char *in, size_t n)
{
	return mime_decode_qp(b, in, n, 1);
}

#define CHECK_DECODE(fn, in, want)                                                                 \
	do {                                                                                       \
		char *got_ = decoded(fn, in);                                                      \
		assert_string_equal(got_, want);                                                   \
		free(got_);                                                                        \
	} while (0)

static void
test_base64(void **state)
{
	CHECK_DECODE(mime_decode_base64, "aGVsbG8=", "hello");
	CHECK_DECODE(mime_decode_base64, "aGVs\r\nbG8gd29y\r\nbGQ=\r\n", "hello world");
	CHECK_DECODE(mime_decode_base64, "a G!V*s b\x01G8", "hello"); /* junk ignored */
	CHECK_DECODE(mime_decode_base64, "QQ==QQ==", "AA");	      /* concatenated */
	CHECK_DECODE(mime_decode_base64, "QUJD", "ABC");
	CHECK_DECODE(mime_decode_base64, "QUI", "AB"); /* missing padding */
	CHECK_DECODE(mime_decode_base64, "Q", "");     /* a lone sextet */
	CHECK_DECODE(mime_decode_base64, "", "");

	struct buf b = BUF_INIT(2);
	assert_int_equal(mime_decode_base64(&b, "QUJD", 4), -1); /* bounded output */
	buf_free(&b);
}

static void
test_qp(void **state)
{
	CHECK_DECODE(qp_body, "a=3Db", "a=b");
	CHECK_DECODE(qp_body, "soft=\r\nbreak\r\n", "softbreak\r\n");
	CHECK_DECODE(qp_body, "soft=  \nbreak", "softbreak"); /* padded soft break */
	CHECK_DECODE(qp_body, "trail   \r\nx", "trail\r\nx"); /* transport padding */
	CHECK_DECODE(qp_body, "bad=ZZ =4 =", "bad=ZZ =4 ");   /* kept as written */
	CHECK_DECODE(qp_body, "low=c3=a9", "low\xc3\xa9");
	CHECK_DECODE(qp_body, "a_b", "a_b");
	CHECK_DECODE(qp_header, "a_b=20c", "a b c");
	CHECK_DECODE(qp_body, "=\n", "");
}

static void
test_words(void **state)
{
	CHECK_DECODE(mime_decode_words, "=?utf-8?q?h=C3=A9llo?=", "h\xc3\xa9llo");
	CHECK_DECODE(mime_decode_words,
		     "=?UTF-8?B?w6TDtsO8LnR4dA==?=", "\xc3\xa4\xc3\xb6\xc3\xbc.txt");
	CHECK_DECODE(mime_decode_words, "=?iso-8859-1?q?caf=E9?= au lait", "caf\xc3\xa9 au lait");
	/* white space between encoded words goes, between words and text stays */
	CHECK_DECODE(mime_decode_words, "=?utf-8?q?a?= =?utf-8?q?b?=  c", "ab  c");
	CHECK_DECODE(mime_decode_words, "x =?utf-8?q?a?=\r\n\t=?iso-8859-1?q?b?= y", "x ab y");
	/* a character split across two words of one charset */
	CHECK_DECODE(mime_decode_words, "=?utf-8?B?ww==?= =?utf-8?B?pA==?=", "\xc3\xa4");
	CHECK_DECODE(mime_decode_words, "=?utf-8?q?=C3?= =?utf-8?q?=A4?=", "\xc3\xa4");
	/* malformed words stay as they are */
	CHECK_DECODE(mime_decode_words, "=?utf-8?x?abc?=", "=?utf-8?x?abc?=");
	CHECK_DECODE(mime_decode_words, "=?utf-8?q?abc", "=?utf-8?q?abc");
	CHECK_DECODE(mime_decode_words, "=??q?abc?=", "=??q?abc?=");
	/* invalid bytes become U+FFFD; unknown charsets are read as UTF-8 */
	CHECK_DECODE(mime_decode_words, "=?utf-8?q?a=FFb?=",
		     "a\xef\xbf\xbd"
		     "b");
	CHECK_DECODE(mime_decode_words, "=?x-unknown-cs?q?ok?=", "ok");
	CHECK_DECODE(mime_decode_words, "=?../../etc?q?x?=", "x");
	CHECK_DECODE(mime_decode_words, "=?utf-8*en?q?lang?=", "lang"); /* RFC 2231 §5 */
	CHECK_DECODE(mime_decode_words, "raw caf\xc3\xa9 \xff", "raw caf\xc3\xa9 \xef\xbf\xbd");
	CHECK_DECODE(mime_decode_words,
		     "=?iso-2022-jp?B?GyRCJEYkOSRIGyhC?=", "\xe3\x81\xa6\xe3\x81\x99\xe3\x81\xa8");
	CHECK_DECODE(mime_decode_words, "=?gb2312?B?1tDOxA==?=", "\xe4\xb8\xad\xe6\x96\x87");
}

static int
dec2231(struct buf *b, const char *in, size_t n)
{
	return mime_decode_2231(b, in, n);
}

static void
test_2231_and_charsets(void **state)
{
	struct buf b = BUF_INIT(0);

	CHECK_DECODE(dec2231, "utf-8''%E2%82%AC.txt", "\xe2\x82\xac.txt");
	CHECK_DECODE(dec2231, "us-ascii'en'This%20is%20%2A%2A%2Afun%2A%2A%2A", "This is ***fun***");
	CHECK_DECODE(dec2231, "iso-8859-1''%E9t%E9", "\xc3\xa9t\xc3\xa9");
	CHECK_DECODE(dec2231, "no quotes %41", "no quotes A");
	CHECK_DECODE(dec2231, "utf-8''bad%zz%4", "bad%zz%4");

	assert_int_equal(mime_charset_to_utf8(&b, "windows-1252", "\x80 \x93q\x94", 5), 0);
	assert_string_equal(buf_str(&b), "\xe2\x82\xac \xe2\x80\x9cq\xe2\x80\x9d");
	buf_reset(&b);
	assert_int_equal(mime_charset_to_utf8(&b, "no-such-charset", "a\xffz", 3), 1);
	assert_string_equal(buf_str(&b), "a\xef\xbf\xbdz");
	buf_reset(&b);
	assert_int_equal(mime_charset_to_utf8(&b, "UTF-8", "\xc3\xa9\xc3", 3), 0);
	assert_string_equal(buf_str(&b), "\xc3\xa9\xef\xbf\xbd");
	buf_reset(&b);
	/* invalid in the source charset: replaced, conversion goes on */
	assert_int_equal(mime_charset_to_utf8(&b, "shift_jis",
					      "a\x81\x20"
					      "b",
					      4),
			 0);
	assert_non_null(strstr(buf_str(&b), "\xef\xbf\xbd"));
	assert_int_equal(b.data[b.len - 1], 'b');
	buf_reset(&b);
	/* overlong forms, surrogates and out-of-range code points are refused */
	mime_utf8_sanitize(&b, "\xc0\xaf\xed\xa0\x80\xf4\x90\x80\x80", 9);
	assert_null(strstr(buf_str(&b), "\xc0"));
	assert_null(strstr(buf_str(&b), "\xed\xa0"));
	buf_free(&b);

	struct mime_param p[] = {
	    {"name", "=?utf-8?q?fall=C3=A9back?="},
	    {"filename*", "utf-8''%E2%82%AC"},
	};
	char *s = mime_param_decoded(p, 2, "filename");
	assert_string_equal(s, "\xe2\x82\xac");
	free(s);
	s = mime_param_decoded(p, 2, "NAME");
	assert_string_equal(s, "fall\xc3\xa9"
			       "back");
	free(s);
	assert_null(mime_param_decoded(p, 2, "size"));
}

/* Occurrences of needle in hay. */
static size_t
count_of(const char *hay, const char *needle)
{
	size_t n = 0;

	for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle))
		n++;
	return n;
}

/*
 * Encoded words cycling through many charsets: each used to cost an
 * iconv_open() that loaded a gconv module (~150 us), so a large header kept
 * a thread busy for minutes. Converters now stay open per thread, and one
 * message (a scope) converts at most 16 distinct charsets, each opened at
 * most once; text in any other is read as UTF-8, the same way every time.
 */
static void
test_charset_cycling(void **state)
{
	static const char *const cs[] = {
	    "iso-8859-2",   "iso-8859-3",   "iso-8859-4",   "iso-8859-5",   "iso-8859-6",
	    "iso-8859-7",   "iso-8859-9",   "iso-8859-10",  "iso-8859-13",  "iso-8859-14",
	    "iso-8859-15",  "iso-8859-16",  "koi8-r",	    "koi8-u",	    "windows-1250",
	    "windows-1251", "windows-1253", "windows-1254", "windows-1257", "cp850",
	};
	struct buf in = BUF_INIT(0), out = BUF_INIT(0), again = BUF_INIT(0);
	uint64_t before = mime_iconv_opens();

	/* Two charsets taking turns: both stay open, every word decoded. */
	for (int i = 0; i < 200; i++)
		buf_printf(&in, "=?%s?Q?=E9?= ", i % 2 ? "iso-8859-1" : "koi8-r");
	assert_int_equal(mime_decode_words(&out, in.data, in.len), 0);
	assert_true(mime_iconv_opens() - before <= 2);
	assert_int_equal(count_of(buf_str(&out), "\xef\xbf\xbd"), 0);
	assert_int_equal(count_of(buf_str(&out), "\xc3\xa9"), 100); /* é in latin-1 */
	assert_int_equal(count_of(buf_str(&out), "\xd0\x98"), 100); /* И in koi8-r */

	/* A stateful conversion cut short leaves no shift state behind. */
	buf_reset(&out);
	(void)mime_charset_to_utf8(&out, "iso-2022-jp", "\x1b$B0", 4);
	buf_reset(&out);
	assert_int_equal(mime_charset_to_utf8(&out, "iso-2022-jp", "abc", 3), 0);
	assert_string_equal(buf_str(&out), "abc");

	/* 20 charsets in turn, 4000 words: the first 16 are converted, each
	 * opened at most once; the 800 words in the other 4 are read as UTF-8
	 * (a lone 0xE9 is U+FFFD). */
	buf_reset(&in);
	buf_reset(&out);
	for (int i = 0; i < 4000; i++)
		buf_printf(&in, "%s=?%s?Q?=E9?=", i > 0 ? " " : "", cs[i % ARRAY_LEN(cs)]);
	before = mime_iconv_opens();
	assert_int_equal(mime_decode_words(&out, in.data, in.len), 0);
	assert_true(mime_iconv_opens() - before <= 16);
	assert_int_equal(count_of(buf_str(&out), "\xef\xbf\xbd"), 800);
	assert_int_equal(count_of(buf_str(&out), "\xd0\x98"), 400); /* both koi8s: converted */
	/* The same header again: the same text, and nothing opened. */
	before = mime_iconv_opens();
	assert_int_equal(mime_decode_words(&again, in.data, in.len), 0);
	assert_int_equal(mime_iconv_opens() - before, 0);
	assert_string_equal(buf_str(&again), buf_str(&out));

	/* One message's many calls share the bound: 20 headers of one charset
	 * each convert 16 of them, the same ones whatever came before. */
	buf_reset(&out);
	mime_charset_scope_begin();
	mime_charset_scope_begin(); /* nested: the outer scope counts */
	for (size_t k = 0; k < ARRAY_LEN(cs); k++) {
		buf_reset(&in);
		buf_printf(&in, "=?%s?Q?=E9?=", cs[ARRAY_LEN(cs) - 1 - k]);
		assert_int_equal(mime_decode_words(&out, in.data, in.len), 0);
	}
	mime_charset_scope_end();
	buf_reset(&in);
	buf_printf(&in, "=?%s?Q?=E9?=", cs[0]); /* the 21st: over the bound */
	assert_int_equal(mime_decode_words(&out, in.data, in.len), 0);
	mime_charset_scope_end();
	assert_int_equal(count_of(buf_str(&out), "\xef\xbf\xbd"), 5);
	assert_string_equal(buf_str(&out) + out.len - 3, "\xef\xbf\xbd");

	/* Labels iconv does not know use up nothing: a real charset after 200
	 * of them is still converted. */
	buf_reset(&in);
	buf_reset(&out);
	for (int i = 0; i < 200; i++)
		buf_printf(&in, "=?unknown-8bit-%d?Q?x?= ", i);
	buf_puts(&in, "=?koi8-r?Q?=E9?=");
	assert_int_equal(mime_decode_words(&out, in.data, in.len), 0);
	assert_non_null(strstr(buf_str(&out), "\xd0\x98"));
	buf_free(&in);
	buf_free(&out);
	buf_free(&again);
}

/* ---- the tree ---- */

static void
test_tree_simple(void **state)
{
	static const char msg[] = "Subject: x\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
				  "line1\r\nline2\r\n";
	struct mime_part *p = mime_parse(msg, sizeof(msg) - 1);

	assert_int_equal(p->hdr_off, 0);
	assert_int_equal(p->hdr_len, 55);
	assert_int_equal(p->body_off, 55);
	assert_int_equal(p->body_len, 14);
	assert_int_equal(p->body_lines, 2);
	assert_int_equal(p->body_vsize, 14);
	assert_string_equal(p->type, "text");
	assert_string_equal(mime_part_param(p, "CHARSET"), "utf-8");
	assert_true(mime_part_is(p, "TEXT", "plain"));
	assert_true(mime_part_is(p, "text", NULL));
	assert_int_equal(mime_part_cte(p), MIME_CTE_7BIT);
	assert_null(p->children);
	char *v = mime_part_header(p, "subject");
	assert_string_equal(v, "x");
	free(v);
	mime_free(&p);
	mime_free(&p); /* NULL is fine */
}

static void
test_tree_bare_lf(void **state)
{
	/* sizes count every bare LF as CRLF, as IMAP does */
	static const char msg[] = "Subject: x\n\nline1\nline2\r\nline3";
	struct mime_part *p = mime_parse(msg, sizeof(msg) - 1);

	assert_int_equal(p->hdr_len, 12);
	assert_int_equal(p->hdr_vsize, 14);
	assert_int_equal(p->body_len, 18);
	assert_int_equal(p->body_vsize, 19);
	assert_int_equal(p->body_lines, 2);
	mime_free(&p);
}

static void
test_tree_header_only(void **state)
{
	struct mime_part *p = mime_parse("From: a@b\r\nSubject: no body", 27);

	assert_int_equal(p->hdr_len, 27);
	assert_int_equal(p->body_off, 27);
	assert_int_equal(p->body_len, 0);
	assert_true(p->flags & MIME_PART_HDR_EOF);
	mime_free(&p);

	p = mime_parse("", 0);
	assert_int_equal(p->hdr_len + p->body_len, 0);
	assert_true(mime_part_is(p, "text", "plain"));
	mime_free(&p);

	p = mime_parse(NULL, 0);
	assert_non_null(p);
	mime_free(&p);

	p = mime_parse("\r\nbody only\r\n", 13);
	assert_int_equal(p->hdr_len, 2);
	assert_int_equal(p->body_len, 11);
	mime_free(&p);
}

static void
test_tree_nested(void **state)
{
	char *msg = crlf(H "Content-Type: multipart/mixed; boundary=a\n\npreamble\n--a\n"
			   "Content-Type: multipart/related; boundary=ab\n\n--ab\n\ninner1\n--ab\n"
			   "Content-Type: image/png\nContent-Transfer-Encoding: base64\n\niVBO\n"
			   "--ab--\n--a\n\nouter2\n--a--\nepilogue\n");
	struct mime_part *p = mime_parse(msg, strlen(msg)), *c;

	assert_true(p->flags & MIME_PART_MULTIPART);
	assert_int_equal(p->nchildren, 2);
	c = p->children;
	assert_true(c->flags & MIME_PART_MULTIPART);
	assert_int_equal(c->nchildren, 2);
	assert_int_equal(c->children->body_len, 6);
	assert_memory_equal(msg + c->children->body_off, "inner1", 6);
	assert_string_equal(c->children->next->type, "image");
	assert_memory_equal(msg + c->children->next->body_off, "iVBO", 4);
	assert_int_equal(mime_part_cte(c->children->next), MIME_CTE_BASE64);
	assert_memory_equal(msg + c->next->body_off, "outer2", c->next->body_len);
	/* the multipart's body runs to the end: its epilogue included */
	assert_int_equal(p->body_off + p->body_len, strlen(msg));
	size_t n = 0;
	check_tree(p, strlen(msg), &n);
	assert_int_equal(n, 5);
	mime_free(&p);
	free(msg);
}

static void
test_tree_broken_boundaries(void **state)
{
	struct mime_part *p;
	char *msg;

	/* no boundary parameter: a multipart without parts */
	msg = crlf(H "Content-Type: multipart/mixed\n\nhello\n--x\n\nfoo\n");
	p = mime_parse(msg, strlen(msg));
	assert_true(p->flags & MIME_PART_MULTIPART);
	assert_int_equal(p->nchildren, 0);
	mime_free(&p);
	free(msg);

	/* no close-delimiter: the last part runs to the end */
	msg = crlf(H "Content-Type: multipart/mixed; boundary=x\n\npre\n--x\n\none\n--x\n\ntwo\n");
	p = mime_parse(msg, strlen(msg));
	assert_int_equal(p->nchildren, 2);
	assert_int_equal(p->children->next->body_len, 5);
	assert_int_equal(p->children->next->body_lines, 1);
	mime_free(&p);
	free(msg);

	/* the boundary never appears */
	msg = crlf(H "Content-Type: multipart/mixed; boundary=x\n\nno parts here\n");
	p = mime_parse(msg, strlen(msg));
	assert_int_equal(p->nchildren, 0);
	mime_free(&p);
	free(msg);

	/* prefix match, trailing junk, trailing white space */
	msg = crlf(
	    H "Content-Type: multipart/mixed; boundary=a\n\n--a \t\n\none\n--aX\nstill\n--a--  \n");
	p = mime_parse(msg, strlen(msg));
	assert_int_equal(p->nchildren, 2);
	mime_free(&p);
	free(msg);

	/* a boundary line cut by the end starts no part */
	msg = crlf(H "Content-Type: multipart/mixed; boundary=x\n\n--x\n\nX\n");
	char *cut = xasprintf("%s--x", msg);
	p = mime_parse(cut, strlen(cut));
	assert_int_equal(p->nchildren, 1);
	mime_free(&p);
	free(cut);
	free(msg);

	/* a part's header cut by the next boundary */
	msg = crlf(
	    H "Content-Type: multipart/mixed; boundary=x\n\n--x\nContent-Type: text/html\n--x--\n");
	p = mime_parse(msg, strlen(msg));
	assert_int_equal(p->nchildren, 1);
	assert_int_equal(p->children->body_len, 0);
	assert_string_equal(p->children->subtype, "html");
	mime_free(&p);
	free(msg);

	/* nested multiparts with the same boundary: the innermost wins */
	msg = crlf(H "Content-Type: multipart/mixed; boundary=x\n\n--x\nContent-Type: "
		     "multipart/alternative; "
		     "boundary=x\n\n--x\n\nA\n--x--\n--x\n\nB\n--x--\n");
	p = mime_parse(msg, strlen(msg));
	assert_int_equal(p->nchildren, 2);
	assert_int_equal(p->children->nchildren, 1);
	mime_free(&p);
	free(msg);
}

static void
test_tree_message(void **state)
{
	char *msg =
	    crlf(H "Content-Type: multipart/mixed; boundary=x\n\n--x\n"
		   "Content-Type: message/rfc822\n\nFrom: q@w\nSubject: inner\n\ninner body\n"
		   "--x\nContent-Type: multipart/digest; boundary=d\n\n--d\n\nSubject: d1\n\nb1\n"
		   "--d\nContent-Type: text/plain\n\nplain\n--d--\n--x--\n");
	struct mime_part *p = mime_parse(msg, strlen(msg)), *m, *d;

	m = p->children;
	assert_true(m->flags & MIME_PART_MESSAGE);
	assert_int_equal(m->nchildren, 1);
	assert_int_equal(m->children->hdr_off, m->body_off);
	char *s = mime_part_header(m->children, "Subject");
	assert_string_equal(s, "inner");
	free(s);
	assert_memory_equal(msg + m->children->body_off, "inner body", 10);
	d = m->next;
	assert_true(d->flags & MIME_PART_DIGEST);
	/* no Content-Type in a digest: message/rfc822 */
	assert_true(d->children->flags & MIME_PART_MESSAGE);
	assert_true(d->children->flags & MIME_PART_DEFAULT_RFC822);
	assert_true(mime_part_is(d->children, "message", "rfc822"));
	assert_false(d->children->next->flags & MIME_PART_MESSAGE);
	mime_free(&p);
	free(msg);
}

static void
test_tree_not_mime(void **state)
{
	/* Content-* fields only count in a MIME entity (RFC 2045 §4) */
	char *msg =
	    crlf("Subject: s\nContent-Transfer-Encoding: base64\nContent-Description: d\n\nx\n");
	struct mime_part *p = mime_parse(msg, strlen(msg));
	assert_null(p->encoding);
	assert_null(p->description);
	mime_free(&p);
	free(msg);

	msg = crlf("MIME-Version: 1.0\nContent-Transfer-Encoding: base64\n\nx\n");
	p = mime_parse(msg, strlen(msg));
	assert_string_equal(p->encoding, "base64");
	mime_free(&p);
	free(msg);
}

static void
test_tree_deep_nesting(void **state)
{
	struct buf b = BUF_INIT(0);
	struct mime_part *p;
	const struct mime_part *c;
	int levels = 150;

	buf_puts(&b, "Content-Type: multipart/mixed; boundary=b0\r\n\r\n");
	for (int i = 1; i < levels; i++)
		buf_printf(&b, "--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n",
			   i - 1, i);
	buf_printf(&b, "--b%d\r\n\r\nleaf\r\n", levels - 1);
	p = mime_parse(b.data, b.len);
	for (c = p; c->children != NULL; c = c->children)
		;
	/* containers stop at depth MIME_MAX_DEPTH - 1: the rest is data */
	assert_int_equal(c->depth, MIME_MAX_DEPTH - 1);
	assert_true(c->flags & MIME_PART_DEMOTED);
	size_t n = 0;
	check_tree(p, b.len, &n);
	mime_free(&p);

	buf_reset(&b);
	buf_puts(&b, "Content-Type: message/rfc822\r\n\r\n");
	for (int i = 1; i < levels; i++)
		buf_puts(&b, "Content-Type: message/rfc822\r\n\r\n");
	buf_puts(&b, "Subject: leaf\r\n\r\nbody\r\n");
	p = mime_parse(b.data, b.len);
	for (c = p; c->children != NULL; c = c->children)
		;
	assert_int_equal(c->depth, MIME_MAX_DEPTH - 1);
	assert_true(c->flags & MIME_PART_DEMOTED);
	char *s = bodystructure(b.data, b.len, MIME_BS_EXTENDED);
	/* Dovecot writes the demoted part as application/octet-stream */
	assert_non_null(strstr(s, "(\"application\" \"octet-stream\" NIL NIL NIL \"7bit\" "));
	free(s);
	mime_free(&p);
	buf_free(&b);
}

static void
test_tree_many_parts(void **state)
{
	struct buf b = BUF_INIT(0);
	struct mime_part *p;

	buf_puts(&b, "Content-Type: multipart/mixed; boundary=x\r\n\r\n");
	for (int i = 0; i < MIME_MAX_PARTS + 5; i++)
		buf_printf(&b, "--x\r\n\r\np%d\r\n", i);
	buf_puts(&b, "--x--\r\n");
	p = mime_parse(b.data, b.len);
	assert_int_equal(mime_part_count(p), MIME_MAX_PARTS);
	/* past the limit the rest is the last part's data */
	const struct mime_part *last = p->children;
	while (last->next != NULL)
		last = last->next;
	assert_int_equal(last->body_off + last->body_len, b.len);
	mime_free(&p);
	buf_free(&b);
}

static void
test_tree_binary(void **state)
{
	static const char msg[] =
	    "Content-Type: application/octet-stream\r\n"
	    "Content-Transfer-Encoding: binary\r\n\r\n\x00\x01\xff\xfe\n\r\x00";
	struct mime_part *p = mime_parse(msg, sizeof(msg) - 1);
	struct buf b = BUF_INIT(0);

	assert_int_equal(p->body_len, 7);
	assert_int_equal(p->body_vsize, 8);
	assert_int_equal(p->body_lines, 1);
	assert_int_equal(mime_part_cte(p), MIME_CTE_BINARY);
	assert_int_equal(mime_part_decode(&b, p), 0);
	assert_int_equal(b.len, 7);
	assert_memory_equal(b.data, "\x00\x01\xff\xfe\n\r\x00", 7);
	buf_free(&b);
	mime_free(&p);
}

static void
test_tree_prefixes(void **state)
{
	/* every prefix of a message parses into a consistent tree (the parser
	 * gets complete buffers; a cut message is just a shorter one) */
	char *msg =
	    crlf(H "Content-Type: multipart/mixed; boundary=\"b\"\n\npre\n--b\n"
		   "Content-Type: message/rfc822\n\nFrom: x@y\nContent-Type: multipart/alternative;"
		   " boundary=c\n\n--c\n\nA\n--c\nContent-Type: text/html; charset=\"utf-8\"\n\n"
		   "<b>B</b>\n--c--\n--b\nContent-Type: text/plain; name*0*=utf-8''%41; name*1=b\n"
		   "Content-Transfer-Encoding: quoted-printable\n\nq=3Dp\n--b--\nepi\n");
	size_t len = strlen(msg);

	for (size_t i = 0; i <= len; i++)
		parse_and_check(msg, i);
	free(msg);
}

/* ---- ENVELOPE / BODY / BODYSTRUCTURE against Dovecot ---- */

static void
expect_imap(const char *msg_lf, const char *env, const char *body, const char *bs)
{
	char *msg = crlf(msg_lf), *s;
	size_t len = strlen(msg);

	s = envelope(msg, len);
	assert_string_equal(s, env);
	free(s);
	s = bodystructure(msg, len, 0);
	assert_string_equal(s, body);
	free(s);
	s = bodystructure(msg, len, MIME_BS_EXTENDED);
	assert_string_equal(s, bs);
	free(s);
	free(msg);
}

#define ENV_H                                                                                      \
	"(\"Mon, 1 Jan 2001 00:00:00 +0000\" \"s\" ((NIL NIL \"a\" \"b.c\")) ((NIL NIL \"a\" "     \
	"\"b.c\")) ((NIL NIL \"a\" \"b.c\")) ((NIL NIL \"d\" \"e.f\")) NIL NIL NIL NIL)"

static void
test_dovecot_inline(void **state)
{
	expect_imap(
	    "From: \"Joe Q. Public\" <john.q.public@example.com>\nTo: Mary Smith <mary@x.test>, "
	    "jdoe@example.org, Who? <one@y.test>\nCc: <boss@nil.test>, \"Giant; \\\"Big\\\" Box\" "
	    "<sysservices@example.net>\nBcc: A Group:Ed Jones <c@a.test>,joe@where.test,John "
	    "<jdoe@one.test>;\nReply-To: undisclosed-recipients:;\nSender: Pete(A nice \\) chap) "
	    "<pete(his account)@silly.test(his host)>\n\nx\n",
	    "(NIL NIL ((\"Joe Q. Public\" NIL \"john.q.public\" \"example.com\")) ((\"Pete\" NIL "
	    "\"pete\" \"silly.test\")) ((NIL NIL \"undisclosed-recipients\" NIL)(NIL NIL NIL NIL)) "
	    "((\"Mary Smith\" NIL \"mary\" \"x.test\")(NIL NIL \"jdoe\" \"example.org\")(\"Who?\" "
	    "NIL \"one\" \"y.test\")) ((NIL NIL \"boss\" \"nil.test\")({16}\r\nGiant; \"Big\" Box "
	    "NIL "
	    "\"sysservices\" \"example.net\")) ((NIL NIL \"A Group\" NIL)(\"Ed Jones\" NIL \"c\" "
	    "\"a.test\")(NIL NIL \"joe\" \"where.test\")(\"John\" NIL \"jdoe\" \"one.test\")(NIL "
	    "NIL "
	    "NIL NIL)) NIL NIL)",
	    "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 3 1)",
	    "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 3 1 NIL NIL NIL NIL)");

	expect_imap(
	    H "Content-Type: multipart/mixed; boundary=x\n\n--x\nContent-Type: message/rfc822\n\n"
	      "From: x@y\nContent-Type: multipart/alternative; boundary=y\n\n--y\n\nA\n--y\n"
	      "Content-Type: text/html\n\n<b>B</b>\n--y--\n--x--\n",
	    ENV_H,
	    "((\"message\" \"rfc822\" NIL NIL NIL \"7bit\" 121 (NIL NIL ((NIL NIL \"x\" \"y\")) "
	    "((NIL NIL \"x\" \"y\")) ((NIL NIL \"x\" \"y\")) NIL NIL NIL NIL NIL) ((\"text\" "
	    "\"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 1 0)(\"text\" \"html\" "
	    "(\"charset\" \"us-ascii\") NIL NIL \"7bit\" 8 0) \"alternative\") 11) \"mixed\")",
	    "((\"message\" \"rfc822\" NIL NIL NIL \"7bit\" 121 (NIL NIL ((NIL NIL \"x\" \"y\")) "
	    "((NIL NIL \"x\" \"y\")) ((NIL NIL \"x\" \"y\")) NIL NIL NIL NIL NIL) ((\"text\" "
	    "\"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 1 0 NIL NIL NIL NIL)(\"text\" "
	    "\"html\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 8 0 NIL NIL NIL NIL) "
	    "\"alternative\" (\"boundary\" \"y\") NIL NIL NIL) 11 NIL NIL NIL NIL) \"mixed\" "
	    "(\"boundary\" \"x\") NIL NIL NIL)");

	expect_imap(
	    H "Content-Type: application/octet-stream; name*0*=utf-8''%E2%82%AC; name*1=\".txt\"\n"
	      "Content-Disposition: attachment; filename*=us-ascii'en'This%20is%20%2A%2A%2Afun"
	      "%2A%2A%2A; size=3\n\nabc\n",
	    ENV_H,
	    "(\"application\" \"octet-stream\" (\"name*\" \"utf-8''%E2%82%AC.txt\") NIL NIL "
	    "\"7bit\" 5)",
	    "(\"application\" \"octet-stream\" (\"name*\" \"utf-8''%E2%82%AC.txt\") NIL NIL "
	    "\"7bit\" 5 NIL (\"attachment\" (\"size\" \"3\" \"filename*\" \"us-ascii'en'This%20is"
	    "%20%2A%2A%2Afun%2A%2A%2A\")) NIL NIL)");

	expect_imap(
	    H "Content-Type: text/plain\nContent-ID: <id1@x>\nContent-Description: a\n  folded"
	      "\tdesc\nContent-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\nContent-Language: en, de\n"
	      "Content-Location: http://x/y z\nContent-Disposition: INLINE; "
	      "FileName=\"a.txt\"\n\nabc\n",
	    ENV_H,
	    "(\"text\" \"plain\" (\"charset\" \"us-ascii\") \"<id1@x>\" \"a  folded\x09"
	    "desc\" \"7bit\" 5 1)",
	    "(\"text\" \"plain\" (\"charset\" \"us-ascii\") \"<id1@x>\" \"a  folded\x09"
	    "desc\" \"7bit\" 5 1 \"Q2hlY2sgSW50ZWdyaXR5IQ==\" (\"INLINE\" (\"FileName\" "
	    "\"a.txt\")) (\"en\" \"de\") \"http://x/y z\")");

	expect_imap(
	    H "Content-Type: text/plain; name=\"caf\xc3\xa9\"\nContent-Description: "
	      "d\xc3\xa9sc\n\nx\n",
	    ENV_H,
	    "(\"text\" \"plain\" (\"name\" {5}\r\ncaf\xc3\xa9 \"charset\" \"us-ascii\") NIL "
	    "{5}\r\nd\xc3\xa9sc \"7bit\" 3 1)",
	    "(\"text\" \"plain\" (\"name\" {5}\r\ncaf\xc3\xa9 \"charset\" \"us-ascii\") NIL "
	    "{5}\r\nd\xc3\xa9sc \"7bit\" 3 1 NIL NIL NIL NIL)");

	expect_imap(
	    "From: a@b.c\nSubject: one\n two\n\tthree \n\nx\n",
	    "(NIL {13}\r\none two three ((NIL NIL \"a\" \"b.c\")) ((NIL NIL \"a\" \"b.c\")) "
	    "((NIL NIL \"a\" \"b.c\")) NIL NIL NIL NIL NIL)",
	    "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 3 1)",
	    "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 3 1 NIL NIL NIL NIL)");

	expect_imap(
	    H
	    "Content-Type: multipart/digest; boundary=x\n\n--x\n\nFrom: x@y\nSubject: d1\n\nbody1\n"
	    "--x\nContent-Type: text/plain\n\nplain\n--x--\n",
	    ENV_H,
	    "((\"message\" \"rfc822\" NIL NIL NIL \"7bit\" 31 (NIL \"d1\" ((NIL NIL \"x\" \"y\")) "
	    "((NIL NIL \"x\" \"y\")) ((NIL NIL \"x\" \"y\")) NIL NIL NIL NIL NIL) (\"text\" "
	    "\"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 5 0) 3)(\"text\" \"plain\" "
	    "(\"charset\" \"us-ascii\") NIL NIL \"7bit\" 5 0) \"digest\")",
	    "((\"message\" \"rfc822\" NIL NIL NIL \"7bit\" 31 (NIL \"d1\" ((NIL NIL \"x\" \"y\")) "
	    "((NIL NIL \"x\" \"y\")) ((NIL NIL \"x\" \"y\")) NIL NIL NIL NIL NIL) (\"text\" "
	    "\"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 5 0 NIL NIL NIL NIL) 3 NIL NIL "
	    "NIL NIL)(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 5 0 NIL NIL "
	    "NIL "
	    "NIL) \"digest\" (\"boundary\" \"x\") NIL NIL NIL)");

	/* a multipart without parts, and one without a boundary */
	expect_imap(
	    H "Content-Type: multipart/mixed\n\nhello\n", ENV_H,
	    "((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0) \"mixed\")",
	    "((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0 NIL NIL NIL NIL) "
	    "\"mixed\" NIL NIL NIL NIL)");

	/* one plain 7-bit text part: the canonical form */
	expect_imap(
	    "From: a@b.c\nContent-Type: TEXT/PLAIN; CHARSET=\"US-ASCII\"\n\nx\n",
	    "(NIL NIL ((NIL NIL \"a\" \"b.c\")) ((NIL NIL \"a\" \"b.c\")) ((NIL NIL \"a\" "
	    "\"b.c\")) NIL NIL NIL NIL NIL)",
	    "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 3 1)",
	    "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 3 1 NIL NIL NIL "
	    "NIL)");
	expect_imap(H "Content-Type: Text/Plain; format=flowed\n\nx\n", ENV_H,
		    "(\"Text\" \"Plain\" (\"format\" \"flowed\" \"charset\" \"us-ascii\") NIL NIL "
		    "\"7bit\" 3 1)",
		    "(\"Text\" \"Plain\" (\"format\" \"flowed\" \"charset\" \"us-ascii\") NIL NIL "
		    "\"7bit\" 3 1 NIL NIL NIL NIL)");

	/* a broken Content-Type: Dovecot keeps it, as "" "" */
	expect_imap(H "Content-Type: ;;;\n\nhello\n", ENV_H, "(\"\" \"\" NIL NIL NIL \"7bit\" 7)",
		    "(\"\" \"\" NIL NIL NIL \"7bit\" 7 NIL NIL NIL NIL)");
}

/* Undo the C escapes of the oracle's output format. */
static char *
unescape(const char *s, size_t *len_r)
{
	struct buf b = BUF_INIT(0);

	while (*s) {
		if (*s != '\\') {
			buf_putc(&b, *s++);
			continue;
		}
		s++;
		switch (*s) {
		case 'r':
			buf_putc(&b, '\r');
			s++;
			break;
		case 'n':
			buf_putc(&b, '\n');
			s++;
			break;
		case 'x': {
			char hex[3] = {s[1], s[2], 0};
			buf_putc(&b, (char)strtol(hex, NULL, 16));
			s += 3;
			if (s[0] == '"' && s[1] == '"')
				s += 2;
			break;
		}
		default:
			buf_putc(&b, *s++);
			break;
		}
	}
	*len_r = b.len;
	return buf_steal(&b);
}

/* Compare with an oracle file: "== NAME", then ENVELOPE/BODY/BODYSTRUCTURE. */
static int
check_oracle_file(const char *expected, const char *dir)
{
	size_t flen, checked = 0;
	char *text = util_read_file(expected, 64u << 20, &flen), *line, *save = NULL;
	char *msg = NULL;
	size_t mlen = 0;
	struct mime_part *p = NULL;

	if (text == NULL)
		return -1;
	for (line = strtok_r(text, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
		if (strncmp(line, "== ", 3) == 0) {
			char *path = xasprintf("%s/%s", dir, line + 3);
			mime_free(&p);
			free(msg);
			msg = util_read_file(path, 64u << 20, &mlen);
			if (msg == NULL)
				fail_msg("cannot read %s", path);
			p = mime_parse(msg, mlen);
			free(path);
			continue;
		}
		char *sp = strchr(line, ' ');
		assert_non_null(sp);
		assert_non_null(p);
		*sp = '\0';
		size_t want_len;
		char *want = unescape(sp + 1, &want_len);
		struct buf got = BUF_INIT(0);
		if (strcmp(line, "ENVELOPE") == 0)
			mime_envelope(&got, p);
		else if (strcmp(line, "BODY") == 0)
			mime_bodystructure(&got, p, 0);
		else
			mime_bodystructure(&got, p, MIME_BS_EXTENDED);
		if (got.len != want_len || memcmp(got.data, want, want_len) != 0)
			fail_msg("%s %s differs from Dovecot:\n got %s\nwant %s", line, expected,
				 buf_str(&got), want);
		checked++;
		buf_free(&got);
		free(want);
	}
	mime_free(&p);
	free(msg);
	free(text);
	return (int)checked;
}

static void
test_dovecot_corpus(void **state)
{
	int n = check_oracle_file(DATA_DIR "/dovecot.txt", DATA_DIR "/msgs");
	if (n < 0)
		skip(); /* not run from the source tree */
	assert_true(n >= 3 * 140);
}

static void
test_dovecot_python_corpus(void **state)
{
	FILE *f = fopen(PY_DIR "/msg_01.txt", "r");
	if (f == NULL)
		skip(); /* libpython3.11-testsuite not installed */
	fclose(f);
	int n = check_oracle_file(DATA_DIR "/python-dovecot.txt", PY_DIR);
	if (n < 0)
		skip();
	assert_int_equal(n, 3 * 47);
}

static void
test_imap_strings(void **state)
{
	struct buf b = BUF_INIT(0);

	mime_imap_nstring(&b, NULL);
	mime_imap_nstring(&b, "a\"b\\c");
	mime_imap_nstring(&b, "\"\"\"\"\"");
	mime_imap_nstring(&b, "line\r\nbreak");
	mime_imap_nstring(&b, "caf\xc3\xa9");
	assert_string_equal(buf_str(&b), "NIL\"a\\\"b\\\\c\"{5}\r\n\"\"\"\"\"{11}\r\nline\r\nbreak"
					 "{5}\r\ncaf\xc3\xa9");
	buf_reset(&b);
	mime_imap_human(&b, "  a \t b  ", 9);
	mime_imap_human(&b, "plain", 5);
	mime_imap_human(&b, "   ", 3);
	mime_imap_human(&b, "a\rb", 3);
	assert_string_equal(buf_str(&b), "{3}\r\na b\"plain\"\"\"{3}\r\na b");
	buf_free(&b);
}

static void
test_bodystructure_bounded(void **state)
{
	char *msg =
	    crlf(H "Content-Type: multipart/mixed; boundary=x\n\n--x\n\na\n--x\n\nb\n--x--\n");
	struct mime_part *p = mime_parse(msg, strlen(msg));
	struct buf b = BUF_INIT(20);

	assert_int_equal(mime_bodystructure(&b, p, MIME_BS_EXTENDED), -1);
	buf_reset(&b);
	assert_int_equal(mime_envelope(&b, p), -1);
	assert_true(b.len <= 20);
	buf_free(&b);
	mime_free(&p);
	free(msg);
}

/* An address field repeated past MIME_ADDRESS_MAX costs no more than the
 * first ones: appending one must not walk the list gathered so far. */
static void
test_envelope_many_fields(void **state)
{
	struct buf m = BUF_INIT(0);
	struct timespec t0, t1;
	size_t n = 300000;
	char *s;

	for (size_t i = 0; i < n; i++)
		assert_int_equal(buf_printf(&m, "To: u%zu@x.test\r\n", i), 0);
	assert_int_equal(buf_puts(&m, "Subject: s\r\n\r\nb\r\n"), 0);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	s = envelope(m.data, m.len);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
	assert_true(ms < 2000.0); /* tens of ms in practice, seconds when quadratic */
	/* still capped: the first MIME_ADDRESS_MAX addresses, the last one not */
	assert_non_null(strstr(s, "(NIL NIL \"u9999\" \"x.test\")"));
	assert_null(strstr(s, "\"u299999\""));
	free(s);
	buf_free(&m);
}

static void
test_global(void **state)
{
	char *msg = crlf(H "Content-Type: message/global\n\nFrom: x@y\nSubject: gl\n\nbody\n");
	char *s;
	struct mime_part *p = mime_parse(msg, strlen(msg)), *inner;

	/* Dovecot 2.3 and IMAP4rev1: a basic part */
	assert_true(p->flags & MIME_PART_GLOBAL);
	assert_null(p->children);
	s = bodystructure(msg, strlen(msg), MIME_BS_EXTENDED);
	assert_string_equal(s, "(\"message\" \"global\" NIL NIL NIL \"7bit\" 32 NIL NIL NIL NIL)");
	free(s);
	/* IMAP4rev2 (RFC 9051 §7.5.2): envelope, body and lines */
	s = bodystructure(msg, strlen(msg), 0 | MIME_BS_GLOBAL);
	assert_string_equal(
	    s, "(\"message\" \"global\" NIL NIL NIL \"7bit\" 32 (NIL \"gl\" ((NIL NIL "
	       "\"x\" \"y\")) ((NIL NIL \"x\" \"y\")) ((NIL NIL \"x\" \"y\")) NIL NIL NIL "
	       "NIL NIL) (\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 6 1) "
	       "4)");
	free(s);
	inner = mime_parse_global(p);
	assert_non_null(inner);
	assert_int_equal(inner->depth, MIME_GLOBAL_DEPTH_COST);
	char *subj = mime_part_header(inner, "Subject");
	assert_string_equal(subj, "gl");
	free(subj);
	mime_free(&inner);
	mime_free(&p);
	free(msg);

	/* only for message/global */
	p = mime_parse("Subject: x\r\n\r\nbody", 19);
	assert_null(mime_parse_global(p));
	mime_free(&p);
}

/*
 * IMAP4rev2: a message/global part too deep to be parsed (a chain of them
 * reaches MIME_MAX_DEPTH after MIME_MAX_DEPTH / MIME_GLOBAL_DEPTH_COST
 * levels) was written as a basic part, ("message" "global" ... "7bit" 23),
 * which RFC 9051's body-type-msg forbids: a client parsing by the grammar
 * expects an envelope after the size and fails on the whole BODYSTRUCTURE.
 * It is a leaf like any other container past the limits.
 */
static void
test_global_too_deep(void **state)
{
	struct buf m = BUF_INIT(0);
	int levels = MIME_MAX_DEPTH / MIME_GLOBAL_DEPTH_COST + 2;

	(void)state;
	for (int i = 0; i < levels; i++)
		buf_puts(&m, "MIME-Version: 1.0\r\nContent-Type: message/global\r\n\r\n");
	buf_puts(&m, "Subject: leaf\r\n\r\nleaf\r\n");
	for (unsigned int flags = 0; flags <= MIME_BS_EXTENDED; flags += MIME_BS_EXTENDED) {
		char *s = bodystructure(m.data, m.len, flags | MIME_BS_GLOBAL);
		/* every message/global carries an envelope: "(date subject ..." */
		for (const char *g = s; (g = strstr(g, "\"message\" \"global\"")) != NULL; g++) {
			const char *f = " NIL NIL NIL \"7bit\" ";
			const char *e = g + strlen("\"message\" \"global\"");
			assert_memory_equal(e, f, strlen(f));
			e += strlen(f) + strspn(e + strlen(f), "0123456789");
			assert_memory_equal(e, " (", 2);
		}
		assert_non_null(
		    strstr(s, "(\"application\" \"octet-stream\" NIL NIL NIL \"7bit\" "));
		free(s);
	}
	buf_free(&m);
}

/*
 * RFC 6532 3.5 lets message/global have any content-transfer-encoding.
 * A base64 one was parsed as it was written: for IMAP4rev2 its envelope
 * was all NIL and its body an empty text/plain, the encoded text being
 * taken for a header. Its content is decoded before it is parsed.
 */
static void
test_global_encoded(void **state)
{
	/* "Subject: caf\xc3\xa9\r\n\r\nna\xc3\xafve\r\n" in base64 and QP */
	static const char *const bodies[] = {
	    "Content-Transfer-Encoding: base64\n\nU3ViamVjdDogY2Fmw6kNCg0KbmHDr3ZlDQo=\n",
	    "Content-Transfer-Encoding: quoted-printable\n\nSubject: caf=C3=A9\n\nna=C3=AFve\n",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
		struct buf m = BUF_INIT(0);
		buf_puts(&m, H "MIME-Version: 1.0\nContent-Type: message/global\n");
		buf_puts(&m, bodies[i]);
		char *msg = crlf(buf_str(&m));
		struct mime_part *p = mime_parse(msg, strlen(msg)), *inner = mime_parse_global(p);
		assert_non_null(inner);
		char *subj = mime_part_header(inner, "Subject");
		assert_non_null(subj);
		assert_string_equal(subj, "caf\xc3\xa9");
		free(subj);
		assert_non_null(inner->own);
		assert_int_equal(inner->body_len, 8);
		assert_memory_equal(inner->msg + inner->body_off, "na\xc3\xafve\r\n", 8);
		mime_free(&inner);
		char *bs = bodystructure(msg, strlen(msg), MIME_BS_GLOBAL);
		assert_non_null(strstr(bs,
				       "(NIL {5}\r\ncaf\xc3\xa9 NIL NIL NIL NIL NIL NIL NIL NIL) "
				       "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL "
				       "\"7bit\" 8 1)"));
		free(bs);
		mime_free(&p);
		free(msg);
		buf_free(&m);
	}
}

/*
 * Many message/global parts, each a multipart of many empty parts: every
 * tree had its own MIME_MAX_PARTS, so 1000 of them in 10 MB made 1.5
 * million parts (1.5 s of text extraction, an 86 MB BODYSTRUCTURE). The
 * messages inside a tree's message/global parts share its part budget.
 */
static void
test_global_part_budget(void **state)
{
	enum { G = 200, K = 1000 };
	struct buf m = BUF_INIT(0);
	size_t total = 0;

	(void)state;
	buf_puts(&m, "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n");
	for (int g = 0; g < G; g++) {
		buf_puts(&m, "--b\r\nContent-Type: message/global\r\n\r\n"
			     "Content-Type: multipart/mixed; boundary=c\r\n\r\n");
		for (int k = 0; k < K; k++)
			buf_puts(&m, "--c\r\n\r\n");
		buf_puts(&m, "--c--\r\n\r\n");
	}
	buf_puts(&m, "--b--\r\n");
	struct mime_part *root = mime_parse(m.data, m.len);
	total = mime_part_count(root);
	for (const struct mime_part *c = root->children; c != NULL; c = c->next) {
		struct mime_part *inner = mime_parse_global(c);
		assert_non_null(inner);
		total += mime_part_count(inner);
		mime_free(&inner);
	}
	/* was G * (K + 2) + G + 1 = 200601 */
	assert_true(total <= 2 * MIME_MAX_PARTS);
	mime_free(&root);
	buf_free(&m);
}

/* ---- sections ---- */

static char *
section(const struct mime_part *root, const char *spec, int *r)
{
	struct mime_section s;
	struct buf b = BUF_INIT(0);

	*r = mime_section_find(root, spec, &s);
	if (*r == 1) {
		assert_int_equal(mime_section_fetch(&b, &s, 1), 0);
		mime_section_free(&s);
	}
	return buf_steal(&b);
}

#define CHECK_SECTION(root, spec, want_r, want)                                                    \
	do {                                                                                       \
		int r_;                                                                            \
		char *got_ = section(root, spec, &r_);                                             \
		if (r_ != (want_r))                                                                \
			fail_msg("section %s: returned %d", spec, r_);                             \
		assert_string_equal(got_, want);                                                   \
		free(got_);                                                                        \
	} while (0)

static void
test_sections(void **state)
{
	static const char msg[] =
	    "From: a@b\r\nSubject: top\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n"
	    "--x\r\nContent-Type: text/plain\r\n\r\npart one\r\n"
	    "--x\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\nTo: t@u\r\n\r\ninner "
	    "body\r\n"
	    "--x\r\nContent-Type: multipart/alternative; "
	    "boundary=y\r\n\r\n--y\r\n\r\nalt1\r\n--y\r\n"
	    "\r\nalt2\r\n--y--\r\n--x--\r\n";
	struct mime_part *p = mime_parse(msg, sizeof(msg) - 1);

	CHECK_SECTION(p, "", 1, msg);
	CHECK_SECTION(
	    p, "HEADER", 1,
	    "From: a@b\r\nSubject: top\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n");
	CHECK_SECTION(p, "1", 1, "part one");
	CHECK_SECTION(p, "1.MIME", 1, "Content-Type: text/plain\r\n\r\n");
	CHECK_SECTION(p, "2", 1, "Subject: inner\r\nTo: t@u\r\n\r\ninner body");
	CHECK_SECTION(p, "2.HEADER", 1, "Subject: inner\r\nTo: t@u\r\n\r\n");
	CHECK_SECTION(p, "2.TEXT", 1, "inner body");
	CHECK_SECTION(p, "2.1", 1, "inner body");
	CHECK_SECTION(p, "2.HEADER.FIELDS (to)", 1, "To: t@u\r\n\r\n");
	CHECK_SECTION(p, "3.2", 1, "alt2");
	CHECK_SECTION(p, "3.2.MIME", 1, "\r\n");
	CHECK_SECTION(p, "HEADER.FIELDS (From \"Subject\")", 1,
		      "From: a@b\r\nSubject: top\r\n\r\n");
	CHECK_SECTION(p, "header.fields.not (SUBJECT content-type)", 1, "From: a@b\r\n\r\n");
	CHECK_SECTION(p, "HEADER.FIELDS (X-None)", 1, "\r\n");
	CHECK_SECTION(p, "4", 0, "");
	CHECK_SECTION(p, "1.1", 1, "part one"); /* a single part is part 1 */
	CHECK_SECTION(p, "1.2", 0, "");
	CHECK_SECTION(p, "3.9.MIME", 0, "");
	CHECK_SECTION(p, "0", -1, "");
	CHECK_SECTION(p, "1.", -1, "");
	CHECK_SECTION(p, "1..2", -1, "");
	CHECK_SECTION(p, "MIME", -1, "");
	CHECK_SECTION(p, "FOO", -1, "");
	CHECK_SECTION(p, "1.MIME.X", -1, "");
	CHECK_SECTION(p, "HEADER.FIELDS ()", -1, "");
	CHECK_SECTION(p, "HEADER.FIELDS (a", -1, "");
	CHECK_SECTION(p, "HEADER.FIELDS (a) x", -1, "");
	CHECK_SECTION(p, "99999999999999999999", 0, "");
	mime_free(&p);

	/* a non-multipart message: part 1 is its body; CRLF conversion */
	p = mime_parse("Subject: s\n\nline\nbody", 22);
	CHECK_SECTION(p, "1", 1, "line\r\nbody");
	CHECK_SECTION(p, "TEXT", 1, "line\r\nbody");
	mime_free(&p);
}

static void
test_crlf_append(void **state)
{
	struct buf b = BUF_INIT(0);

	mime_crlf_append(&b, "a\nb\r\nc\n\n", 8);
	assert_string_equal(buf_str(&b), "a\r\nb\r\nc\r\n\r\n");
	buf_reset(&b);
	mime_crlf_append(&b, "\n", 1);
	assert_string_equal(buf_str(&b), "\r\n");
	buf_free(&b);
}

/* ---- BINARY ---- */

static void
test_binary_decode(void **state)
{
	char *msg = crlf(H "Content-Type: multipart/mixed; boundary=x\n\n"
			   "--x\nContent-Transfer-Encoding: BASE64\n\naGVs\nbG8=\n"
			   "--x\nContent-Transfer-Encoding: quoted-printable\n\na=3Db=\nc\n"
			   "--x\nContent-Transfer-Encoding: x-uuencode\n\nbegin\n"
			   "--x\n\nplain\n--x--\n");
	struct mime_part *p = mime_parse(msg, strlen(msg));
	const struct mime_part *c = p->children;
	struct buf b = BUF_INIT(0);

	assert_int_equal(mime_part_decode(&b, c), 0);
	assert_string_equal(buf_str(&b), "hello");
	assert_int_equal(mime_part_decoded_size(c), 5);
	buf_reset(&b);
	c = c->next;
	assert_int_equal(mime_part_decode(&b, c), 0);
	assert_string_equal(buf_str(&b), "a=bc");
	assert_int_equal(mime_part_decoded_size(c), 4);
	buf_reset(&b);
	c = c->next;
	assert_int_equal(mime_part_cte(c), MIME_CTE_UNKNOWN);
	assert_int_equal(mime_part_decode(&b, c), -2);
	assert_int_equal(mime_part_decoded_size(c), -1);
	c = c->next;
	assert_int_equal(mime_part_decode(&b, c), 0);
	assert_string_equal(buf_str(&b), "plain");
	assert_int_equal(mime_part_decoded_size(c), 5);
	buf_free(&b);
	mime_free(&p);
	free(msg);
}

/* ---- text extraction ---- */

static void
test_html_to_text(void **state)
{
	struct buf b = BUF_INIT(0);
	static const char html[] =
	    "<html><head><title>T</title><style>p{x:y}</style><script>var a=\"<b>\";</script>"
	    "</head><body><p>Hello&nbsp;&amp; <b>bold</b>&#233;&#x20AC;&bogus;</p><!-- c -->"
	    "<div>two\n   lines</div>&lt;end&gt;";

	mime_html_to_text(&b, html, sizeof(html) - 1);
	assert_string_equal(buf_str(&b),
			    "T\nHello & bold\xc3\xa9\xe2\x82\xac&bogus;\ntwo lines\n<end>");
	buf_free(&b);
}

static void
test_text_extract(void **state)
{
	char *msg = crlf(
	    "From: =?utf-8?q?J=C3=B6rg?= <j@x>\nTo: b@c\nSubject: =?iso-8859-1?q?r=E9union?=\n"
	    "X-Other: not indexed\nContent-Type: multipart/mixed; boundary=x\n\n"
	    "--x\nContent-Type: text/plain; charset=iso-8859-1\n"
	    "Content-Transfer-Encoding: quoted-printable\n\ncaf=E9 cr=E8me\n"
	    "--x\nContent-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: base64\n\n"
	    "PHA+SMOpbGxvPC9wPg==\n"
	    "--x\nContent-Type: image/png\nContent-Disposition: attachment; "
	    "filename*=utf-8''%E2%82%AC.png\n\n"
	    "binary\n--x\nContent-Type: message/rfc822\n\nSubject: inner\n\ninner text\n--x--\n");
	struct mime_part *p = mime_parse(msg, strlen(msg));
	struct buf b = BUF_INIT(0);

	assert_int_equal(mime_text_extract(&b, p, 0), 0);
	assert_non_null(strstr(b.data, "J\xc3\xb6rg <j@x>\n"));
	assert_non_null(strstr(b.data, "r\xc3\xa9union\n"));
	assert_null(strstr(b.data, "not indexed"));
	assert_non_null(strstr(b.data, "\xe2\x82\xac.png\n"));
	assert_non_null(strstr(b.data, "inner\n"));
	assert_non_null(strstr(b.data, "caf\xc3\xa9 cr\xc3\xa8me"));
	assert_non_null(strstr(b.data, "H\xc3\xa9llo"));
	assert_non_null(strstr(b.data, "inner text"));
	assert_null(strstr(b.data, "binary"));
	size_t full = b.len;

	/* bounded, cut on a character boundary */
	for (size_t max = 1; max < full; max++) {
		buf_reset(&b);
		assert_int_equal(mime_text_extract(&b, p, max), 1);
		assert_true(b.len <= max);
		struct buf v = BUF_INIT(0);
		mime_utf8_sanitize(&v, b.data ? b.data : "", b.len);
		assert_int_equal(v.len, b.len); /* still valid UTF-8 */
		buf_free(&v);
	}
	buf_reset(&b);
	assert_int_equal(mime_text_body(&b, p, 0), 0);
	assert_null(strstr(buf_str(&b), "r\xc3\xa9union"));
	buf_reset(&b);
	assert_int_equal(mime_text_headers(&b, p, 0), 0);
	assert_null(strstr(buf_str(&b), "caf"));
	buf_free(&b);
	mime_free(&p);
	free(msg);
}

/* ---- mime_addr: the fields the submission check reads ---- */

/* The addresses of every field name in msg, joined by spaces; NULL if one does not parse. */
static char *
addr_field(const char *msg, const char *name)
{
	struct mime_addr_list al;
	struct buf b = BUF_INIT(0);

	if (mime_addr_field(msg, strlen(msg), name, &al) < 0)
		return NULL;
	for (size_t i = 0; i < al.n; i++)
		buf_printf(&b, "%s%s", i ? " " : "", al.v[i]);
	mime_addr_list_free(&al);
	return b.data ? buf_steal(&b) : xstrdup("");
}

static void
assert_addrs(const char *msg, const char *name, const char *want)
{
	char *got = addr_field(msg, name);

	if (want == NULL) {
		if (got != NULL)
			fail_msg("%s: want no parse, got \"%s\"", msg, got);
		return;
	}
	if (got == NULL)
		fail_msg("%s: does not parse, want \"%s\"", msg, want);
	assert_string_equal(got, want);
	free(got);
}

/* mime_addr_header_next(): every field of the name in order, each value
 * unfolded and trimmed, none from the body. */
static void
test_addr_header_next(void **state)
{
	static const char msg[] = "Subject: one\r\nX: y\r\nsubject :\r\n  two\r\n three \r\n"
				  "Subject:\r\n\r\nSubject: body\r\n";
	static const char *const want[] = {"one", "two three", ""};
	struct buf v = BUF_INIT(0);
	size_t pos = 0, n = 0;

	(void)state;
	while (mime_addr_header_next(msg, sizeof(msg) - 1, &pos, "Subject", &v) == 1) {
		assert_true(n < 3);
		assert_int_equal(v.len, strlen(want[n]));
		assert_memory_equal(v.len ? v.data : "", want[n], v.len);
		buf_reset(&v);
		n++;
	}
	assert_int_equal(n, 3);
	assert_int_equal(mime_addr_header_next(msg, sizeof(msg) - 1, &pos, "Subject", &v), 0);
	buf_free(&v);
}

static void
test_addr_fields(void **state)
{
	(void)state;
	/* Found as lenient readers find them: white space before the colon,
	 * also folded onto the next line, a first line that continues nothing. */
	assert_addrs("From : a@x.test\r\n\r\nb", "From", "a@x.test");
	assert_addrs("From\r\n : CEO <ceo@x.test>\r\n\r\nb", "From", "ceo@x.test");
	assert_addrs("From\r\n\t:c@x.test\r\nTo: d@x.test\r\n\r\n", "From", "c@x.test");
	assert_addrs(" From: e@x.test\r\n\r\n", "From", "e@x.test");
	assert_addrs("Fromage: f@x.test\r\nFrom\r\nX: y\r\n\r\n", "From", "");
	assert_addrs("To: a@x.test\r\n\r\nFrom: g@x.test\r\n", "From", "");
	assert_addrs("From: a@x.test\r\nSender\r\n : s@x.test\r\n\r\n", "Sender", "s@x.test");
	/* Every field of the name, each value unfolded. */
	assert_addrs("From: a@x.test\r\nfrom: B <b@X.TEST>,\r\n c@x.test\r\n\r\n", "From",
		     "a@x.test b@x.test c@x.test");
	/* obs-route: domains only, ignored. */
	assert_addrs("From: <@r.test,,@[10.0.0.1]:a@x.test>\r\n\r\n", "From", "a@x.test");
	assert_addrs("From: <@,CEO <ceo@x.test>,@y:a@x.test>\r\n\r\n", "From", NULL);
	assert_addrs("From: <@r.test,ceo@x.test:a@x.test>\r\n\r\n", "From", NULL);
	assert_addrs("From: <@r.test a@x.test>\r\n\r\n", "From", NULL);
	/* A display-name is words and dots; a domain literal only after "@". */
	assert_addrs("From: J. \"Al\" Ice <a@x.test>\r\n\r\n", "From", "a@x.test");
	assert_addrs("From: a@[127.0.0.1]\r\n\r\n", "From", "a@[127.0.0.1]");
	assert_addrs("From: [<ceo@x.test>] <a@x.test>\r\n\r\n", "From", NULL);
	assert_addrs("From: [ \\] <ceo@x.test> (] <a@x.test>\r\n\r\n", "From", NULL);
	assert_addrs("From: A > B <a@x.test>\r\n\r\n", "From", NULL);
	/* Comments and quoted strings that simpler readers split differently
	 * parse, but are reported apart (-2): what they show may be another
	 * address than the one parsed here. */
	static const char *const misread[] = {
	    "From: (\\) <ceo@x.test> \\() <a@x.test>\r\n\r\n",
	    "From: ((x) <ceo@x.test>) <a@x.test>\r\n\r\n",
	    "From: \"\\\" <ceo@x.test> \\\"\" <a@x.test>\r\n\r\n",
	    "From: a@x.test (Alice <3)\r\n\r\n",
	    "From: a@x.test (\"ceo@x.test\")\r\n\r\n",
	    "From: \"\\\"\" \"<ceo@x.test>\" <a@x.test>\r\n\r\n",
	    "From: \"\\\"\" <a@x.test>, \"<ceo@x.test>\" <a@x.test>\r\n\r\n",
	    "From: \"<ceo@x.test> (\" <a@x.test> (x)\r\n\r\n",
	};
	for (size_t i = 0; i < sizeof(misread) / sizeof(misread[0]); i++) {
		struct mime_addr_list al;
		if (mime_addr_field(misread[i], strlen(misread[i]), "From", &al) != -2)
			fail_msg("%s: want -2", misread[i]);
		assert_null(al.v);
	}
	/* A NUL byte anywhere in the field refuses it (RFC 5322 has no place for
	 * one), in an atom, between tokens, in a quoted string or a comment. */
	static const char nul[][40] = {
	    "From: a\0b@x.test\r\n\r\n",	 "From: a@x.test\0\r\n\r\n",
	    "From: \0 <a@x.test>\r\n\r\n",	 "From: <a@x\0.test>\r\n\r\n",
	    "From: \"A\0l\" <a@x.test>\r\n\r\n", "From: a@x.test (A\0l)\r\n\r\n",
	};
	for (size_t i = 0; i < sizeof(nul) / sizeof(nul[0]); i++) {
		struct mime_addr_list al;
		size_t len = strlen(nul[i]);
		len += 1 + strlen(nul[i] + len + 1); /* past the one NUL */
		if (mime_addr_field(nul[i], len, "From", &al) != -1)
			fail_msg("NUL case %zu: want -1", i);
		assert_null(al.v);
	}
	/* Their everyday forms stay: a plain comment, an address as a display
	 * name (shown as a name), escaped quotes and parentheses in one. */
	assert_addrs("From: a@x.test (Alice Smith)\r\n\r\n", "From", "a@x.test");
	assert_addrs("From: \"ceo@x.test\" <a@x.test>\r\n\r\n", "From", "a@x.test");
	assert_addrs("From: \"Al \\\"Pal\\\" Ice (work)\" <a@x.test>\r\n\r\n", "From", "a@x.test");
}

static void
test_filename(void **state)
{
	char *msg = crlf(
	    H "Content-Type: multipart/mixed; boundary=x\n\n"
	      "--x\nContent-Type: application/pdf; name=\"=?utf-8?B?w6TDtsO8LnBkZg==?=\"\n\nx\n"
	      "--x\nContent-Disposition: attachment;\n filename*0*=utf-8''%E2%82%AC;\n "
	      "filename*1=\".txt\"\n\nx\n"
	      "--x\n\nx\n--x--\n");
	struct mime_part *p = mime_parse(msg, strlen(msg));
	char *s;

	s = mime_part_filename(p->children);
	assert_string_equal(s, "\xc3\xa4\xc3\xb6\xc3\xbc.pdf");
	free(s);
	s = mime_part_filename(p->children->next);
	assert_string_equal(s, "\xe2\x82\xac.txt");
	free(s);
	assert_null(mime_part_filename(p->children->next->next));
	mime_free(&p);
	free(msg);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_header_fields),
	    cmocka_unit_test(test_header_block_len),
	    cmocka_unit_test(test_header_unfold),
	    cmocka_unit_test(test_header_get),
	    cmocka_unit_test(test_content_type_params),
	    cmocka_unit_test(test_lex_scanners),
	    cmocka_unit_test(test_address_forms),
	    cmocka_unit_test(test_date),
	    cmocka_unit_test(test_base64),
	    cmocka_unit_test(test_qp),
	    cmocka_unit_test(test_words),
	    cmocka_unit_test(test_2231_and_charsets),
	    cmocka_unit_test(test_charset_cycling),
	    cmocka_unit_test(test_tree_simple),
	    cmocka_unit_test(test_tree_bare_lf),
	    cmocka_unit_test(test_tree_header_only),
	    cmocka_unit_test(test_tree_nested),
	    cmocka_unit_test(test_tree_broken_boundaries),
	    cmocka_unit_test(test_tree_message),
	    cmocka_unit_test(test_tree_not_mime),
	    cmocka_unit_test(test_tree_deep_nesting),
	    cmocka_unit_test(test_tree_many_parts),
	    cmocka_unit_test(test_tree_binary),
	    cmocka_unit_test(test_tree_prefixes),
	    cmocka_unit_test(test_dovecot_inline),
	    cmocka_unit_test(test_dovecot_corpus),
	    cmocka_unit_test(test_dovecot_python_corpus),
	    cmocka_unit_test(test_imap_strings),
	    cmocka_unit_test(test_bodystructure_bounded),
	    cmocka_unit_test(test_envelope_many_fields),
	    cmocka_unit_test(test_global),
	    cmocka_unit_test(test_global_part_budget),
	    cmocka_unit_test(test_global_too_deep),
	    cmocka_unit_test(test_global_encoded),
	    cmocka_unit_test(test_sections),
	    cmocka_unit_test(test_crlf_append),
	    cmocka_unit_test(test_binary_decode),
	    cmocka_unit_test(test_html_to_text),
	    cmocka_unit_test(test_text_extract),
	    cmocka_unit_test(test_filename),
	    cmocka_unit_test(test_addr_fields),
	    cmocka_unit_test(test_addr_header_next),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
