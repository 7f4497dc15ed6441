/*
 * test_imap_parser — unit tests for the incremental IMAP command parser.
 *
 * Every input is fed whole and in chunks of 1, 2, 3 and 7 bytes; the event
 * log (commands dumped as text, literal requests, errors, raw lines) must be
 * the same for all of them, which proves the parser incremental.
 *
 * SECURITY: test code; feeds hostile shapes on purpose.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cmocka.h>

#include "core/buf.h"
#include "imap/imap_parser.h"

/* Literals larger than this are rejected by the test "session". */
static uint64_t reject_over = UINT64_MAX;
/* Switch to raw-line mode after a command with this name. */
static const char *raw_after = NULL;

static void
dump_bytes(struct buf *out, const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c >= 0x20 && c < 0x7f && c != '\\')
			buf_putc(out, (char)c);
		else
			buf_printf(out, "\\x%02x", c);
	}
}

static void
dump_args(struct buf *out, const struct imap_arg *a)
{
	for (; a->type != IMAP_ARG_EOL; a++) {
		buf_putc(out, ' ');
		switch (a->type) {
		case IMAP_ARG_ATOM:
			buf_puts(out, "A:");
			break;
		case IMAP_ARG_NIL:
			buf_puts(out, "NIL:");
			break;
		case IMAP_ARG_QUOTED:
			buf_puts(out, "Q:");
			break;
		case IMAP_ARG_LITERAL:
			buf_puts(out, "L:");
			break;
		case IMAP_ARG_LITERAL8:
			buf_puts(out, "L8:");
			break;
		case IMAP_ARG_LIST:
			buf_putc(out, '(');
			dump_args(out, a->list);
			buf_puts(out, " )");
			assert_int_equal(a->list[a->len].type, IMAP_ARG_EOL);
			continue;
		case IMAP_ARG_EOL:
			break;
		}
		assert_int_equal(strlen(a->str) <= a->len, 1);
		dump_bytes(out, a->str, a->len);
		if (a->flags != 0)
			buf_printf(out, "/%x", a->flags);
	}
}

/* Feed all of in[0..len) in chunks of chunk bytes; log the events. */
static void
run(struct imap_parser *p, const char *in, size_t len, size_t chunk, struct buf *log)
{
	size_t off = 0;

	while (off < len) {
		size_t n = len - off < chunk ? len - off : chunk;
		size_t used = 0;
		int r = imap_parser_feed(p, in + off, n, &used);
		assert_true(used <= n);
		off += used;
		if (r == IMAP_PARSE_MORE) {
			assert_int_equal(used, n);
			continue;
		}
		if (r == IMAP_PARSE_DONE) {
			const struct imap_command *c = imap_parser_command(p);
			if (c == NULL) {
				size_t ll;
				const char *l = imap_parser_line(p, &ll);
				buf_puts(log, "LINE ");
				dump_bytes(log, l, ll);
				buf_putc(log, '\n');
				continue;
			}
			buf_printf(log, "CMD %s %s", c->tag, c->name);
			dump_args(log, c->args);
			buf_printf(log, " [%zu]\n", c->count);
			if (raw_after != NULL && strcasecmp(c->name, raw_after) == 0)
				imap_parser_read_line(p);
			continue;
		}
		if (r == IMAP_PARSE_LITERAL) {
			uint64_t size;
			bool sync, bin;
			imap_parser_literal_info(p, &size, &sync, &bin);
			buf_printf(log, "LIT %llu %s%s %s\n", (unsigned long long)size,
				   sync ? "sync" : "nonsync", bin ? " binary" : "",
				   imap_parser_command_name(p));
			if (size > reject_over)
				imap_parser_literal_reject(p);
			else
				imap_parser_literal_accept(p);
			continue;
		}
		assert_int_equal(r, IMAP_PARSE_ERROR);
		const char *msg;
		enum imap_parse_error e = imap_parser_error(p, &msg);
		const char *tag = imap_parser_tag(p);
		buf_printf(log, "ERR %d %s%s %s\n", (int)e, tag ? tag : "*",
			   imap_parser_error_fatal(p) ? " fatal" : "", msg);
	}
}

/* Run in with every chunk size; all logs must agree; returns the log. */
static char *
run_all(const struct imap_parser_limits *lim, bool utf8, const char *in, size_t len)
{
	static const size_t chunks[] = {1, 2, 3, 7, 64, SIZE_MAX};
	char *first = NULL;

	for (size_t i = 0; i < sizeof(chunks) / sizeof(chunks[0]); i++) {
		struct imap_parser *p = imap_parser_new(lim);
		struct buf log = BUF_INIT(0);
		imap_parser_set_utf8(p, utf8);
		run(p, in, len, chunks[i], &log);
		imap_parser_free(&p);
		assert_null(p);
		char *s = buf_steal(&log);
		if (first == NULL) {
			first = s;
		} else {
			if (strcmp(first, s) != 0)
				fail_msg("chunk %zu differs:\n%s\nvs whole:\n%s", chunks[i], s,
					 first);
			free(s);
		}
	}
	return first;
}

static void
expect(const struct imap_parser_limits *lim, bool utf8, const char *in, size_t len,
       const char *want)
{
	char *got = run_all(lim, utf8, in, len);
	if (strcmp(got, want) != 0)
		fail_msg("input: %s\ngot:\n%s\nwant:\n%s", in, got, want);
	free(got);
}

#define EXPECT(in, want) expect(NULL, false, in, sizeof(in) - 1, want)
#define EXPECT_LIM(lim, in, want) expect(lim, false, in, sizeof(in) - 1, want)
#define EXPECT_UTF8(in, want) expect(NULL, true, in, sizeof(in) - 1, want)

static int
setup(void **state)
{
	(void)state;
	reject_over = UINT64_MAX;
	raw_after = NULL;
	return 0;
}

static void
test_simple(void **state)
{
	(void)state;
	EXPECT("a1 NOOP\r\n", "CMD a1 NOOP [0]\n");
	EXPECT("a1 noop\n", "CMD a1 noop [0]\n");
	EXPECT("A001 LOGIN joe \"sec ret\"\r\n", "CMD A001 LOGIN A:joe Q:sec ret [2]\n");
	/* Blank lines between commands are ignored. */
	EXPECT("\r\n\r\na NOOP\r\n\nb NOOP\r\n", "CMD a NOOP [0]\nCMD b NOOP [0]\n");
	/* Odd but valid tags. */
	EXPECT("x]y.1 CAPABILITY\r\n", "CMD x]y.1 CAPABILITY [0]\n");
	/* Extra and trailing spaces are tolerated. */
	EXPECT("a SELECT  INBOX \r\n", "CMD a SELECT A:INBOX [1]\n");
}

static void
test_tokens(void **state)
{
	(void)state;
	EXPECT("a STORE 1:*,5 +FLAGS.SILENT (\\Seen \\* $Junk)\r\n",
	       "CMD a STORE A:1:*,5/1 A:+FLAGS.SILENT ( A:\\x5cSeen/4 A:\\x5c*/5 A:$Junk ) [3]\n");
	EXPECT("a LIST \"\" %/*\r\n", "CMD a LIST Q: A:%/*/1 [2]\n");
	EXPECT("a X \"q\\\"x\\\\y\"\r\n", "CMD a X Q:q\"x\\x5cy [1]\n");
	EXPECT("a X nil NIL Nil NILS\r\n", "CMD a X NIL:nil NIL:NIL NIL:Nil A:NILS [4]\n");
	EXPECT("a X foo[bar] ~x ~\r\n", "CMD a X A:foo[bar]/2 A:~x A:~ [3]\n");
	EXPECT("a X (a (b (c)) ()) x\r\n", "CMD a X ( A:a ( A:b ( A:c ) ) ( ) ) A:x [2]\n");
	EXPECT("a X ((()))\r\n", "CMD a X ( ( ( ) ) ) [1]\n");
	EXPECT("a X (\"a\" {1}\r\nb)\r\n", "LIT 1 sync X\nCMD a X ( Q:a L:b ) [1]\n");
}

static void
test_fetch_atts(void **state)
{
	(void)state;
	EXPECT("a FETCH 1 (BODY[HEADER.FIELDS (A B)]<0.100> BINARY.PEEK[1]<0.10>)\r\n",
	       "CMD a FETCH A:1 ( A:BODY[HEADER.FIELDS (A B)]<0.100>/18 "
	       "A:BINARY.PEEK[1]<0.10>/8 ) [2]\n");
	EXPECT("a FETCH 1 body.peek[]\r\n", "CMD a FETCH A:1 A:body.peek[]/8 [2]\n");
	EXPECT("a FETCH 1 BODY[HEADER.FIELDS.NOT (\"X-A\" \"a\\\"]\")]\r\n",
	       "CMD a FETCH A:1 A:BODY[HEADER.FIELDS.NOT (\"X-A\" \"a\\x5c\"]\")]/18 [2]\n");
	EXPECT("a FETCH 1 BINARY.SIZE[1.2]\r\n", "CMD a FETCH A:1 A:BINARY.SIZE[1.2]/8 [2]\n");
	/*
	 * header-fld-name is an astring: a literal in the header list is read as
	 * a literal and kept in the section's text as a quoted string.
	 */
	EXPECT("a FETCH 1 (BODY[HEADER.FIELDS ({7}\r\nSubject)])\r\n",
	       "LIT 7 sync FETCH\n"
	       "CMD a FETCH A:1 ( A:BODY[HEADER.FIELDS (\"Subject\")]/18 ) [2]\n");
	EXPECT("a FETCH 1 BODY.PEEK[HEADER.FIELDS.NOT (A {3+}\r\nb\"\\ {0}\r\n)]<1.2>\r\n",
	       "LIT 3 nonsync FETCH\nLIT 0 sync FETCH\n"
	       "CMD a FETCH A:1 A:BODY.PEEK[HEADER.FIELDS.NOT "
	       "(A \"b\\x5c\"\\x5c\\x5c\" \"\")]<1.2>/18 [2]\n");
	/* A byte no header name holds is an error after the literal, which is skipped. */
	EXPECT("a FETCH 1 BINARY[HEADER.FIELDS ({3}\r\na\r\n)]\r\nb NOOP\r\n",
	       "LIT 3 sync FETCH\n"
	       "ERR 1 a invalid header name in section literal\nCMD b NOOP [0]\n");
	EXPECT("a FETCH 1 BODY[HEADER.FIELDS ({2+}\r\n\xc3\xa9)]\r\nb NOOP\r\n",
	       "LIT 2 nonsync FETCH\n"
	       "ERR 1 a invalid header name in section literal\nCMD b NOOP [0]\n");
	EXPECT("a FETCH 1 BODY[HEADER.FIELDS ({1}\r\n\0)]\r\nb NOOP\r\n",
	       "LIT 1 sync FETCH\n"
	       "ERR 1 a invalid header name in section literal\nCMD b NOOP [0]\n");
	/* It is part of a line: capped at the line length, even below max_literal. */
	struct imap_parser_limits lim = {.max_line = 40};
	EXPECT_LIM(&lim,
		   "a FETCH 1 BODY[HEADER.FIELDS ({41+}\r\n"
		   "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx)]\r\nb NOOP\r\n",
		   "ERR 3 a literal in a section too large (limit 40 bytes)\nCMD b NOOP [0]\n");
	EXPECT("a FETCH 1 BODY[HEADER.FIELDS (~{1}\r\n",
	       "ERR 1 a literal in a section is not a header name\n");
	/* Only fetch names open a section; elsewhere '[' is a plain atom char. */
	EXPECT("a SELECT X[a b]\r\n", "CMD a SELECT A:X[a A:b]/2 [2]\n");

	struct imap_parser *p = imap_parser_new(NULL);
	static const char in[] = "a FETCH 1 (BODY.PEEK[1.HEADER]<5.100> FLAGS BODY[] "
				 "BODY[]<1> X<1.2> BODY[x]y BODY[1]<0.0> BODY[\"]\"]<1.2>)\r\n";
	size_t used;
	assert_int_equal(imap_parser_feed(p, in, sizeof(in) - 1, &used), IMAP_PARSE_DONE);
	const struct imap_arg *l;
	size_t n;
	assert_true(imap_arg_list(&imap_parser_command(p)->args[1], &l, &n));
	assert_int_equal(n, 8);
	struct imap_fetch_att fa;
	assert_int_equal(imap_fetch_att_split(&l[0], &fa), 0);
	assert_int_equal(fa.name_len, 9);
	assert_memory_equal(fa.name, "BODY.PEEK", 9);
	assert_true(fa.has_section);
	assert_int_equal(fa.section_len, 8);
	assert_memory_equal(fa.section, "1.HEADER", 8);
	assert_true(fa.has_partial);
	assert_int_equal(fa.partial_offset, 5);
	assert_int_equal(fa.partial_len, 100);
	assert_int_equal(imap_fetch_att_split(&l[1], &fa), 0);
	assert_false(fa.has_section);
	assert_int_equal(fa.name_len, 5);
	assert_int_equal(imap_fetch_att_split(&l[2], &fa), 0);
	assert_true(fa.has_section);
	assert_int_equal(fa.section_len, 0);
	assert_false(fa.has_partial);
	assert_int_equal(imap_fetch_att_split(&l[3], &fa), -1);
	assert_int_equal(imap_fetch_att_split(&l[4], &fa), -1);
	assert_int_equal(imap_fetch_att_split(&l[5], &fa), -1);
	assert_int_equal(imap_fetch_att_split(&l[6], &fa), -1);
	assert_int_equal(imap_fetch_att_split(&l[7], &fa), 0);
	assert_int_equal(fa.section_len, 3);
	assert_int_equal(imap_fetch_att_split(NULL, &fa), -1);
	assert_int_equal(imap_fetch_att_split(&imap_parser_command(p)->args[1], &fa), -1);
	imap_parser_free(&p);
}

static void
test_literals(void **state)
{
	(void)state;
	EXPECT("a LOGIN {3}\r\njoe {4}\r\npass\r\n",
	       "LIT 3 sync LOGIN\nLIT 4 sync LOGIN\nCMD a LOGIN L:joe L:pass [2]\n");
	EXPECT("a LOGIN {3+}\r\njoe {4+}\r\npass\r\n",
	       "LIT 3 nonsync LOGIN\nLIT 4 nonsync LOGIN\nCMD a LOGIN L:joe/80 L:pass/80 [2]\n");
	EXPECT("a APPEND box ~{5}\r\na\0b\r\n\r\n",
	       "LIT 5 sync binary APPEND\nCMD a APPEND A:box L8:a\\x00b\\x0d\\x0a/40 [2]\n");
	EXPECT("a APPEND box ~{2+}\nxy\n", "LIT 2 nonsync binary APPEND\nCMD a APPEND A:box "
					   "L8:xy/80 [2]\n");
	EXPECT("a X {0}\r\n\r\n", "LIT 0 sync X\nCMD a X L: [1]\n");
	EXPECT("a X {0}\r\n {0+}\r\n)\r\n",
	       "LIT 0 sync X\nLIT 0 nonsync X\nERR 1 a unexpected ')'\n");
	/* Literal data is taken as is, CRLF, quotes and 8-bit included. */
	EXPECT("a X {6}\r\n\"(\r\n\xc3\xa9\r\n",
	       "LIT 6 sync X\nCMD a X L:\"(\\x0d\\x0a\\xc3\\xa9/20 [1]\n");
	/* NUL inside a plain literal is flagged, not accepted as a string. */
	EXPECT("a X {1}\r\n\0\r\n", "LIT 1 sync X\nCMD a X L:\\x00/40 [1]\n");
	/* Leading zeros are fine. */
	EXPECT("a X {003}\r\nabc\r\n", "LIT 3 sync X\nCMD a X L:abc [1]\n");
}

static void
test_literal_reject(void **state)
{
	(void)state;
	reject_over = 4;
	/* Synchronising: the client sends nothing more; the next line is a new command. */
	EXPECT("a APPEND box {100}\r\nb NOOP\r\n", "LIT 100 sync APPEND\nCMD b NOOP [0]\n");
	/* Non-synchronising: exactly n bytes and the rest of the line are swallowed. */
	EXPECT("a APPEND box {10+}\r\n0123456789 x y\r\nb NOOP\r\n",
	       "LIT 10 nonsync APPEND\nCMD b NOOP [0]\n");
	/* ... including further non-synchronising literals on the rest of the command. */
	EXPECT("a X {10+}\r\nb NOOP\r\nxx {3+}\r\nc\r\n x\r\nd NOOP\r\n",
	       "LIT 10 nonsync X\nCMD d NOOP [0]\n");
	/* ... but a synchronising one ends it (the client waits for "+"). */
	EXPECT("a X {10+}\r\n0123456789 {3}\r\nd NOOP\r\n", "LIT 10 nonsync X\nCMD d NOOP [0]\n");
}

static void
test_literal_limits(void **state)
{
	(void)state;
	struct imap_parser_limits lim = {.max_literal = 100, .max_command = 200};
	EXPECT_LIM(&lim, "a X {101}\r\nb NOOP\r\n",
		   "ERR 3 a literal too large (limit 100 bytes)\nCMD b NOOP [0]\n");
	EXPECT_LIM(&lim,
		   "a X {101+}\r\n" /* 101 bytes follow */
		   "0123456789012345678901234567890123456789012345678901234567890123456789"
		   "0123456789012345678901234567890\r\nb NOOP\r\n",
		   "ERR 3 a literal too large (limit 100 bytes)\nCMD b NOOP [0]\n");
	/* LITERAL-: non-synchronising literals are capped at 4096 by default. */
	struct imap_parser_limits lim2 = {.max_literal = 10000};
	char in[8192];
	int n = snprintf(in, sizeof(in), "a X {4097+}\r\n");
	memset(in + n, 'x', 4097);
	memcpy(in + n + 4097, " {1+}\r\nz\r\nb NOOP\r\n", 18);
	char *got = run_all(&lim2, false, in, (size_t)n + 4097 + 18);
	assert_string_equal(got, "ERR 4 a non-synchronising literal too large (limit 4096 bytes)\n"
				 "CMD b NOOP [0]\n");
	free(got);
	EXPECT_LIM(&lim2, "a X {4096+}\r\n", "LIT 4096 nonsync X\n");
	EXPECT_LIM(&lim2, "a X {5000}\r\n", "LIT 5000 sync X\n");
	/* The literal would push the command over max_command. */
	struct imap_parser_limits lim3 = {.max_literal = 100, .max_command = 150};
	EXPECT_LIM(&lim3,
		   "a X {60}\r\n012345678901234567890123456789012345678901234567890123456789"
		   " {100}\r\nb NOOP\r\n",
		   "LIT 60 sync X\nERR 5 a command too large (limit 150 bytes)\nCMD b NOOP [0]\n");
	/* Over 2^63-1: synchronising is a clean error, non-synchronising is fatal. */
	EXPECT("a X {99999999999999999999}\r\nb NOOP\r\n",
	       "ERR 8 a literal size out of range\nCMD b NOOP [0]\n");
	EXPECT("a X {9223372036854775808}\r\n", "ERR 8 a literal size out of range\n");
	EXPECT("a X {9223372036854775807}\r\n",
	       "ERR 3 a literal too large (limit 1048576 bytes)\n");
	EXPECT("a X {99999999999999999999+}\r\n", "ERR 8 a fatal literal size out of range\n");
}

static void
test_line_limits(void **state)
{
	(void)state;
	struct imap_parser_limits lim = {.max_line = 20};
	/* 20 bytes exactly are fine, 21 are not; the next command still parses. */
	EXPECT_LIM(&lim, "a X 0123456789012345\r\n", "CMD a X A:0123456789012345 [1]\n");
	EXPECT_LIM(&lim, "a X 01234567890123456\r\nb NOOP\r\n",
		   "ERR 2 a line too long (limit 20 bytes)\nCMD b NOOP [0]\n");
	EXPECT_LIM(&lim, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\nb NOOP\r\n",
		   "ERR 2 * line too long (limit 20 bytes)\nCMD b NOOP [0]\n");
	/* The limit counts per line: literals reset it. */
	EXPECT_LIM(&lim, "a X {3}\r\nabc 0123456789012345\r\n",
		   "LIT 3 sync X\nCMD a X L:abc A:0123456789012345 [2]\n");
	/* A long line that is skipped still honours its trailing non-sync literal. */
	EXPECT_LIM(&lim, "a X 0123456789012345678901234 {3+}\r\nb N\r\nc NOOP\r\n",
		   "ERR 2 a line too long (limit 20 bytes)\nCMD c NOOP [0]\n");
	struct imap_parser_limits lim2 = {.max_command = 12};
	EXPECT_LIM(&lim2, "a X 12345678\r\nb NOOP\r\n",
		   "ERR 5 a command too large (limit 12 bytes)\nCMD b NOOP [0]\n");
}

static void
test_arg_limits(void **state)
{
	(void)state;
	struct imap_parser_limits lim = {.max_args = 4, .max_depth = 2};
	EXPECT_LIM(&lim, "a X 1 2 3 4\r\n", "CMD a X A:1 A:2 A:3 A:4 [4]\n");
	EXPECT_LIM(&lim, "a X 1 2 3 4 5\r\nb NOOP\r\n",
		   "ERR 6 a too many arguments (limit 4)\nCMD b NOOP [0]\n");
	EXPECT_LIM(&lim, "a X (1 (2))\r\n", "CMD a X ( A:1 ( A:2 ) ) [1]\n");
	EXPECT_LIM(&lim, "a X (((1)))\r\nb NOOP\r\n",
		   "ERR 7 a lists nested too deeply (limit 2)\nCMD b NOOP [0]\n");
	/* The failing argument is a literal header: its data is swallowed. */
	EXPECT_LIM(&lim, "a X 1 2 3 4 {5+}\r\nb NO\r\nc NOOP\r\n",
		   "ERR 6 a too many arguments (limit 4)\nCMD c NOOP [0]\n");
	/* Default depth is 32. */
	char in[200];
	memset(in, 0, sizeof(in));
	memcpy(in, "a X ", 4);
	memset(in + 4, '(', 33);
	memcpy(in + 37, "\r\nb NOOP\r\n", 10);
	char *got = run_all(NULL, false, in, strlen(in));
	assert_string_equal(got, "ERR 7 a lists nested too deeply (limit 32)\nCMD b NOOP [0]\n");
	free(got);
}

static void
test_quoted_errors(void **state)
{
	(void)state;
	EXPECT("a X \"ab\rc\"\r\nb NOOP\r\n",
	       "ERR 1 a unterminated quoted string\nCMD b NOOP [0]\n");
	EXPECT("a X \"ab\r\nb NOOP\r\n", "ERR 1 a unterminated quoted string\nCMD b NOOP [0]\n");
	EXPECT("a X \"ab\nb NOOP\r\n", "ERR 1 a unterminated quoted string\nCMD b NOOP [0]\n");
	static const char nul[] = "a X \"a\0b\"\r\nb NOOP\r\n";
	expect(NULL, false, nul, sizeof(nul) - 1, "ERR 1 a NUL in quoted string\nCMD b NOOP [0]\n");
	EXPECT("a X \"a\\b\"\r\nb NOOP\r\n",
	       "ERR 1 a invalid escape in quoted string\nCMD b NOOP [0]\n");
	EXPECT("a X \"a\"\"b\"\r\nb NOOP\r\n",
	       "ERR 1 a missing space between arguments\nCMD b NOOP [0]\n");
	EXPECT("a X \"a\"b\r\n", "ERR 1 a missing space between arguments\n");
	EXPECT("a X (a)(b)\r\n", "ERR 1 a missing space between arguments\n");
	/* rev1: 8-bit octets are kept and flagged. */
	EXPECT("a LOGIN u \"p\xe4ss\xff\"\r\n", "CMD a LOGIN A:u Q:p\\xe4ss\\xff/20 [2]\n");
	/* rev2/UTF8=ACCEPT: well-formed UTF-8 only. */
	EXPECT_UTF8("a X \"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"\r\n",
		    "CMD a X Q:\\xc3\\xa9\\xe2\\x82\\xac\\xf0\\x9f\\x98\\x80/20 [1]\n");
	EXPECT_UTF8("a X \"\xe4\"\r\n", "ERR 1 a invalid UTF-8 in quoted string\n");
	EXPECT_UTF8("a X \"\xc3\"\r\n", "ERR 1 a invalid UTF-8 in quoted string\n");
	EXPECT_UTF8("a X \"\xc0\xaf\"\r\n", "ERR 1 a invalid UTF-8 in quoted string\n");
	EXPECT_UTF8("a X \"\xe0\x80\xaf\"\r\n", "ERR 1 a invalid UTF-8 in quoted string\n");
	EXPECT_UTF8("a X \"\xed\xa0\x80\"\r\n", "ERR 1 a invalid UTF-8 in quoted string\n");
	EXPECT_UTF8("a X \"\xf4\x90\x80\x80\"\r\n", "ERR 1 a invalid UTF-8 in quoted string\n");
	EXPECT_UTF8("a X \"\xc3\\\"\"\r\n", "ERR 1 a invalid UTF-8 in quoted string\n");
}

static void
test_syntax_errors(void **state)
{
	(void)state;
	EXPECT(" NOOP\r\nb NOOP\r\n", "ERR 1 * missing tag\nCMD b NOOP [0]\n");
	EXPECT("a\r\nb NOOP\r\n", "ERR 1 a missing command name\nCMD b NOOP [0]\n");
	EXPECT("a \r\n", "ERR 1 a missing command name\n");
	EXPECT("+ NOOP\r\n", "ERR 1 * invalid character in tag\n");
	EXPECT("a* NOOP\r\n", "ERR 1 * invalid character in tag\n");
	EXPECT("a NO(OP\r\n", "ERR 1 a invalid character in command name\n");
	EXPECT("a X )\r\n", "ERR 1 a unexpected ')'\n");
	EXPECT("a X (a\r\nb NOOP\r\n", "ERR 1 a unterminated list\nCMD b NOOP [0]\n");
	EXPECT("a X ab\"c\r\n", "ERR 1 a invalid character in atom\n");
	EXPECT("a X ab{3}\r\n", "ERR 1 a invalid character in atom\n");
	EXPECT("a X ab(\r\n", "ERR 1 a invalid character in atom\n");
	EXPECT("a X a\x01\r\n", "ERR 1 a invalid character in atom\n");
	EXPECT("a X \x7f\r\n", "ERR 1 a invalid character\n");
	EXPECT("a X \tb\r\n", "ERR 1 a invalid character\n");
	EXPECT("a X caf\xc3\xa9\r\nb NOOP\r\n",
	       "ERR 1 a 8-bit character in atom\nCMD b NOOP [0]\n");
	EXPECT("a X \xc3\xa9\r\n", "ERR 1 a 8-bit character in atom\n");
	EXPECT("a X \\ y\r\n", "ERR 1 a empty flag name\n");
	EXPECT("a X a\\b\r\n", "ERR 1 a invalid character in atom\n");
	EXPECT("a X {}\r\n", "ERR 1 a invalid literal size\n");
	EXPECT("a X {+}\r\n", "ERR 1 a invalid literal size\n");
	EXPECT("a X {1a}\r\n", "ERR 1 a invalid literal size\n");
	EXPECT("a X {1++}\r\n", "ERR 1 a invalid literal size\n");
	EXPECT("a X {1} \r\nb NOOP\r\n",
	       "ERR 1 a literal header not at end of line\nCMD b NOOP [0]\n");
	EXPECT("a X {1}\rx\r\n", "ERR 1 a CR without LF\n");
	EXPECT("a NOOP\rb NOOP\r\nc NOOP\r\n", "ERR 1 a CR without LF\nCMD c NOOP [0]\n");
	EXPECT("\rb NOOP\r\nc NOOP\r\n", "ERR 1 * CR without LF\nCMD c NOOP [0]\n");
	EXPECT("a X BODY[1\r\n", "ERR 1 a unterminated section\n");
	EXPECT("a X BODY[(a (b))]\r\n", "ERR 1 a nested list in section\n");
	EXPECT("a X BODY[(a]\r\n", "ERR 1 a unbalanced parentheses in section\n");
	EXPECT("a X BODY[a)]\r\n", "ERR 1 a unexpected ')' in section\n");
	EXPECT("a X BODY[{1}\r\n", "ERR 1 a literal in a section is not a header name\n");
	EXPECT("a X BODY[(a{1}\r\n", "ERR 1 a literal in a section is not a header name\n");
	EXPECT("a X BODY[(a) {1}\r\n", "ERR 1 a literal in a section is not a header name\n");
	EXPECT("a X BODY[*]\r\n", "ERR 1 a invalid character in section\n");
	EXPECT("a X BODY[\"\r\n", "ERR 1 a invalid quoted string in section\n");
	EXPECT("a X BODY[\"\\x\"]\r\n", "ERR 1 a invalid escape in quoted string\n");
	/* Nothing left over: a stream of garbage still leads to the next command. */
	EXPECT("\x01\x02\xff ((( \"\r\nb NOOP\r\n", "ERR 1 * invalid character in tag\n"
						    "CMD b NOOP [0]\n");
}

/* Feed one command whole and return the parser holding it. */
static struct imap_parser *
parse_one(const char *in, size_t len)
{
	struct imap_parser *p = imap_parser_new(NULL);
	size_t off = 0, used;
	int r;

	while ((r = imap_parser_feed(p, in + off, len - off, &used)) == IMAP_PARSE_LITERAL) {
		off += used;
		imap_parser_literal_accept(p);
	}
	assert_int_equal(r, IMAP_PARSE_DONE);
	assert_int_equal(off + used, len);
	return p;
}

static void
test_accessors(void **state)
{
	(void)state;
	static const char in[] =
	    "t X atom \"q s\" {3}\r\nlit NIL (l1 l2) 42 %x* \\Seen ~{2}\r\n"
	    "\0z {1}\r\n\0 BODY[1 2] a]b 99999999999999999999 9223372036854775807"
	    " 9223372036854775808\r\n";
	struct imap_parser *p = parse_one(in, sizeof(in) - 1);
	const struct imap_command *c = imap_parser_command(p);
	const struct imap_arg *a = c->args;
	const char *s;
	size_t n;
	uint64_t v;

	assert_string_equal(c->tag, "t");
	assert_string_equal(c->name, "X");
	const struct imap_arg *l;
	assert_int_equal(c->count, 15);
	assert_int_equal(c->size, sizeof(in) - 1);
	assert_true(imap_arg_is_eol(&a[15]));
	assert_true(imap_arg_is_eol(NULL));
	assert_false(imap_arg_is_eol(&a[0]));

	/* atom */
	assert_true(imap_arg_atom(&a[0], &s));
	assert_string_equal(s, "atom");
	assert_true(imap_arg_astring(&a[0], &s, &n));
	assert_false(imap_arg_string(&a[0], &s, &n));
	assert_false(imap_arg_nstring(&a[0], &s, &n));
	assert_true(imap_arg_list_mailbox(&a[0], &s, &n));
	assert_false(imap_arg_literal(&a[0], &s, &n));
	assert_false(imap_arg_list(&a[0], &l, &n));
	assert_false(imap_arg_number(&a[0], &v));
	/* quoted */
	assert_false(imap_arg_atom(&a[1], &s));
	assert_true(imap_arg_string(&a[1], &s, &n));
	assert_int_equal(n, 3);
	assert_true(imap_arg_astring(&a[1], &s, &n));
	assert_true(imap_arg_nstring(&a[1], &s, &n));
	assert_string_equal(s, "q s");
	/* literal */
	assert_true(imap_arg_string(&a[2], &s, &n));
	assert_string_equal(s, "lit");
	assert_true(imap_arg_literal(&a[2], &s, &n));
	assert_false(imap_arg_atom(&a[2], &s));
	/* NIL */
	assert_true(imap_arg_is_nil(&a[3]));
	assert_false(imap_arg_is_nil(&a[0]));
	assert_true(imap_arg_nstring(&a[3], &s, &n));
	assert_null(s);
	assert_int_equal(n, 0);
	assert_true(imap_arg_astring(&a[3], &s, &n));
	assert_string_equal(s, "NIL");
	assert_true(imap_arg_atom(&a[3], &s));
	assert_false(imap_arg_string(&a[3], &s, &n));
	/* list */
	assert_true(imap_arg_list(&a[4], &l, &n));
	assert_int_equal(n, 2);
	assert_true(imap_arg_atom(&l[1], &s));
	assert_string_equal(s, "l2");
	assert_true(imap_arg_is_eol(&l[2]));
	assert_true(imap_arg_list(&a[4], &l, NULL));
	assert_false(imap_arg_astring(&a[4], &s, &n));
	/* number */
	assert_true(imap_arg_number(&a[5], &v));
	assert_int_equal(v, 42);
	/* wildcards: list-mailbox only */
	assert_false(imap_arg_astring(&a[6], &s, &n));
	assert_true(imap_arg_list_mailbox(&a[6], &s, &n));
	assert_string_equal(s, "%x*");
	/* flag */
	assert_true(imap_arg_atom(&a[7], &s));
	assert_string_equal(s, "\\Seen");
	assert_false(imap_arg_astring(&a[7], &s, &n));
	assert_false(imap_arg_list_mailbox(&a[7], &s, &n));
	/* literal8 with NUL: only as a literal */
	assert_int_equal(a[8].type, IMAP_ARG_LITERAL8);
	assert_false(imap_arg_string(&a[8], &s, &n));
	assert_true(imap_arg_literal(&a[8], &s, &n));
	assert_int_equal(n, 2);
	assert_memory_equal(s, "\0z", 2);
	/* literal with NUL: flagged, not a string */
	assert_true(a[9].flags & IMAP_ARGF_NUL);
	assert_false(imap_arg_string(&a[9], &s, &n));
	assert_false(imap_arg_astring(&a[9], &s, &n));
	assert_false(imap_arg_nstring(&a[9], &s, &n));
	/* section with a space: not an astring */
	assert_true(imap_arg_atom(&a[10], &s));
	assert_false(imap_arg_astring(&a[10], &s, &n));
	assert_false(imap_arg_list_mailbox(&a[10], &s, &n));
	/* ']' is an ASTRING-CHAR */
	assert_true(imap_arg_astring(&a[11], &s, &n));
	/* numbers out of range */
	assert_false(imap_arg_number(&a[12], &v));
	assert_true(imap_arg_number(&a[13], &v));
	assert_int_equal(v, INT64_MAX);
	assert_false(imap_arg_number(&a[14], &v));
	assert_false(imap_arg_number(&a[15], &v)); /* EOL */
	/* NULL is never anything */
	assert_false(imap_arg_atom(NULL, &s));
	assert_false(imap_arg_astring(NULL, &s, &n));
	assert_false(imap_arg_nstring(NULL, &s, &n));
	assert_false(imap_arg_string(NULL, &s, &n));
	assert_false(imap_arg_list_mailbox(NULL, &s, &n));
	assert_false(imap_arg_literal(NULL, &s, &n));
	assert_false(imap_arg_list(NULL, &l, &n));
	assert_false(imap_arg_number(NULL, &v));
	assert_false(imap_arg_is_nil(NULL));

	/* steal the literal data */
	struct buf b;
	assert_false(imap_parser_literal_steal(p, &a[0], &b));
	assert_false(imap_parser_literal_steal(p, NULL, &b));
	assert_true(imap_parser_literal_steal(p, &a[2], &b));
	assert_int_equal(b.len, 3);
	assert_string_equal(b.data, "lit");
	assert_int_equal(a[2].len, 0);
	assert_true(a[2].flags & IMAP_ARGF_STOLEN);
	assert_false(imap_parser_literal_steal(p, &a[2], &b));
	buf_free(&b);
	assert_true(imap_parser_literal_steal(p, &a[8], &b));
	assert_int_equal(b.len, 2);
	buf_free(&b);
	imap_parser_free(&p);
	imap_parser_free(&p); /* NULL is fine */
}

static void
test_steal_large(void **state)
{
	(void)state;
	size_t big = 3 * 1024 * 1024;
	struct imap_parser_limits lim = {.max_literal = 4 * 1024 * 1024};
	struct imap_parser *p = imap_parser_new(&lim);
	char hdr[64];
	int hn = snprintf(hdr, sizeof(hdr), "a APPEND INBOX (\\Seen) {%zu}\r\n", big);
	size_t used;

	assert_int_equal(imap_parser_feed(p, hdr, (size_t)hn, &used), IMAP_PARSE_LITERAL);
	assert_int_equal(used, (size_t)hn);
	assert_string_equal(imap_parser_tag(p), "a");
	assert_string_equal(imap_parser_command_name(p), "APPEND");
	imap_parser_literal_accept(p);
	char *chunk = malloc(65536);
	memset(chunk, 'm', 65536);
	for (size_t done = 0; done < big; done += 65536) {
		assert_int_equal(imap_parser_feed(p, chunk, 65536, &used), IMAP_PARSE_MORE);
		assert_int_equal(used, 65536);
	}
	free(chunk);
	assert_int_equal(imap_parser_feed(p, "\r\nb NOOP\r\n", 10, &used), IMAP_PARSE_DONE);
	assert_int_equal(used, 2);
	const struct imap_command *c = imap_parser_command(p);
	assert_int_equal(c->count, 3);
	struct buf b;
	assert_true(imap_parser_literal_steal(p, &c->args[2], &b));
	assert_int_equal(b.len, big);
	assert_int_equal(b.data[big - 1], 'm');
	assert_int_equal(b.data[big], '\0');
	buf_free(&b);
	assert_int_equal(imap_parser_feed(p, "b NOOP\r\n", 8, &used), IMAP_PARSE_DONE);
	assert_string_equal(imap_parser_command(p)->tag, "b");
	imap_parser_free(&p);
}

static void
test_pipelining(void **state)
{
	(void)state;
	struct imap_parser *p = imap_parser_new(NULL);
	static const char in[] = "a STARTTLS\r\nb LOGIN x y\r\n";
	size_t used;

	/* The parser stops right after the first command. */
	assert_int_equal(imap_parser_feed(p, in, sizeof(in) - 1, &used), IMAP_PARSE_DONE);
	assert_int_equal(used, 12);
	assert_string_equal(imap_parser_command(p)->name, "STARTTLS");
	assert_int_equal(imap_parser_feed(p, in + 12, sizeof(in) - 13, &used), IMAP_PARSE_DONE);
	assert_string_equal(imap_parser_command(p)->name, "LOGIN");
	/* Nothing pending: feeding nothing gives nothing. */
	assert_int_equal(imap_parser_feed(p, "", 0, &used), IMAP_PARSE_MORE);
	assert_int_equal(used, 0);
	assert_null(imap_parser_command(p));
	assert_null(imap_parser_tag(p));
	imap_parser_free(&p);
}

static void
test_raw_lines(void **state)
{
	(void)state;
	raw_after = "IDLE";
	EXPECT("a IDLE\r\nDONE\r\nb NOOP\r\n", "CMD a IDLE [0]\nLINE DONE\nCMD b NOOP [0]\n");
	/* Raw lines may be empty and hold anything but LF. */
	EXPECT("a IDLE\r\n\r\nb NOOP\r\n", "CMD a IDLE [0]\nLINE \nCMD b NOOP [0]\n");
	EXPECT("a IDLE\nx\ry \"({1}\nb NOOP\r\n",
	       "CMD a IDLE [0]\nLINE x\\x0dy \"({1}\nCMD b NOOP [0]\n");
	raw_after = "AUTHENTICATE";
	struct imap_parser_limits lim = {.max_line = 16};
	EXPECT_LIM(&lim, "a AUTHENTICATE\r\n1234567890123456\r\nb NOOP\r\n",
		   "CMD a AUTHENTICATE [0]\nLINE 1234567890123456\nCMD b NOOP [0]\n");
	EXPECT_LIM(&lim, "a AUTHENTICATE\r\n12345678901234567\r\nb NOOP\r\n",
		   "CMD a AUTHENTICATE [0]\nERR 2 * line too long (limit 16 bytes)\n"
		   "CMD b NOOP [0]\n");
	EXPECT_LIM(&lim, "a AUTHENTICATE\r\n12345678901234567\nb NOOP\r\n",
		   "CMD a AUTHENTICATE [0]\nERR 2 * line too long (limit 16 bytes)\n"
		   "CMD b NOOP [0]\n");
	/* Skipping a bad raw line ignores literal headers in it. */
	EXPECT_LIM(&lim, "a AUTHENTICATE\r\n12345678901234567 {3+}\r\nb NOOP\r\n",
		   "CMD a AUTHENTICATE [0]\nERR 2 * line too long (limit 16 bytes)\n"
		   "CMD b NOOP [0]\n");
}

static void
test_set_limits(void **state)
{
	(void)state;
	struct imap_parser_limits small = {.max_line = 10};
	struct imap_parser_limits large = {.max_line = 100};
	struct imap_parser *p = imap_parser_new(&small);
	size_t used;
	static const char in[] = "a X 0123456789\r\n";

	assert_int_equal(imap_parser_feed(p, in, sizeof(in) - 1, &used), IMAP_PARSE_ERROR);
	assert_int_equal(imap_parser_error(p, NULL), IMAP_PERR_LINE_TOO_LONG);
	assert_int_equal(imap_parser_feed(p, in + used, sizeof(in) - 1 - used, &used),
			 IMAP_PARSE_MORE);
	imap_parser_set_limits(p, &large);
	assert_int_equal(imap_parser_feed(p, in, sizeof(in) - 1, &used), IMAP_PARSE_DONE);
	/* Mid-command changes wait for the next command. */
	assert_int_equal(imap_parser_feed(p, "a X", 3, &used), IMAP_PARSE_MORE);
	imap_parser_set_limits(p, &small);
	assert_int_equal(imap_parser_feed(p, in + 3, sizeof(in) - 4, &used), IMAP_PARSE_DONE);
	assert_int_equal(imap_parser_feed(p, in, sizeof(in) - 1, &used), IMAP_PARSE_ERROR);
	imap_parser_set_limits(p, NULL);
	imap_parser_free(&p);
}

static void
test_error_info(void **state)
{
	(void)state;
	struct imap_parser *p = imap_parser_new(NULL);
	size_t used;
	const char *msg;

	assert_int_equal(imap_parser_error(p, &msg), IMAP_PERR_NONE);
	assert_string_equal(msg, "");
	assert_int_equal(imap_parser_feed(p, "a1 X (\r\n", 8, &used), IMAP_PARSE_ERROR);
	assert_int_equal(used, 8);
	assert_int_equal(imap_parser_error(p, &msg), IMAP_PERR_SYNTAX);
	assert_string_equal(msg, "unterminated list");
	assert_string_equal(imap_parser_tag(p), "a1");
	assert_string_equal(imap_parser_command_name(p), "X");
	assert_false(imap_parser_error_fatal(p));
	assert_null(imap_parser_command(p));
	/* The next feed forgets the error. */
	assert_int_equal(imap_parser_feed(p, "b", 1, &used), IMAP_PARSE_MORE);
	assert_int_equal(imap_parser_error(p, NULL), IMAP_PERR_NONE);
	assert_null(imap_parser_tag(p));
	imap_parser_free(&p);
}

static void
test_skip_paths(void **state)
{
	(void)state;
	/* After an error, a line ending in an unmeasurable {n+} is fatal. */
	EXPECT("a X ) {99999999999999999999+}\r\nb NOOP\r\n",
	       "ERR 1 a unexpected ')'\nERR 8 * fatal non-synchronising literal size out of "
	       "range\nCMD b NOOP [0]\n");
	/* Things that only look like literal headers are not swallowed. */
	EXPECT("a X ) {12x}\r\nb NOOP\r\n", "ERR 1 a unexpected ')'\nCMD b NOOP [0]\n");
	EXPECT("a X ) {1+x}\r\nb NOOP\r\n", "ERR 1 a unexpected ')'\nCMD b NOOP [0]\n");
	EXPECT("a X ) {1+}x\r\nb NOOP\r\n", "ERR 1 a unexpected ')'\nCMD b NOOP [0]\n");
	EXPECT("a X ) {1+}\rx\nb NOOP\r\n", "ERR 1 a unexpected ')'\nCMD b NOOP [0]\n");
	EXPECT("a X ) {+}\r\nb NOOP\r\n", "ERR 1 a unexpected ')'\nCMD b NOOP [0]\n");
	EXPECT("a X ) {}\r\nb NOOP\r\n", "ERR 1 a unexpected ')'\nCMD b NOOP [0]\n");
	/* ... but the last brace counts, and LF alone ends the header too. */
	EXPECT("a X ) {{3+}\nb N\r\nc NOOP\r\n", "ERR 1 a unexpected ')'\nCMD c NOOP [0]\n");
	EXPECT("a X ) ~{3+}\r\nb N\r\nc NOOP\r\n", "ERR 1 a unexpected ')'\nCMD c NOOP [0]\n");
	/* After an empty literal the command line goes on. */
	EXPECT("a X ) {0+}\r\n x\r\nc NOOP\r\n", "ERR 1 a unexpected ')'\nCMD c NOOP [0]\n");
}

static void
test_line_ends(void **state)
{
	(void)state;
	EXPECT("a X \n", "CMD a X [0]\n");
	EXPECT("a X abc\n", "CMD a X A:abc [1]\n");
	EXPECT("a X \"q\"\n", "CMD a X Q:q [1]\n");
	EXPECT("a X (b)\n", "CMD a X ( A:b ) [1]\n");
	EXPECT("a X \\\r\n", "ERR 1 a empty flag name\n");
	EXPECT("a X \\\n", "ERR 1 a empty flag name\n");
	EXPECT("a X (\\)\r\n", "ERR 1 a empty flag name\n");
	EXPECT("a X (\\Seen)\r\n", "CMD a X ( A:\\x5cSeen/4 ) [1]\n");
}

static void
test_args_at_every_start(void **state)
{
	(void)state;
	struct imap_parser_limits lim = {.max_args = 1};
	EXPECT_LIM(&lim, "a X 1 \"q\"\r\n", "ERR 6 a too many arguments (limit 1)\n");
	EXPECT_LIM(&lim, "a X 1 \\S\r\n", "ERR 6 a too many arguments (limit 1)\n");
	EXPECT_LIM(&lim, "a X 1 (\r\n", "ERR 6 a too many arguments (limit 1)\n");
	EXPECT_LIM(&lim, "a X ()\r\n", "CMD a X ( ) [1]\n");
	EXPECT_LIM(&lim, "a X (1)\r\n", "ERR 6 a too many arguments (limit 1)\n");
	EXPECT_LIM(&lim, "a X 1 {1}\r\n", "ERR 6 a too many arguments (limit 1)\n");
	EXPECT_LIM(&lim, "a X 1 ~{1}\r\n", "ERR 6 a too many arguments (limit 1)\n");
	EXPECT_LIM(&lim, "a X 1 ~x\r\n", "ERR 6 a too many arguments (limit 1)\n");
	EXPECT_LIM(&lim, "a X 1 x\r\n", "ERR 6 a too many arguments (limit 1)\n");
}

static void
test_misc_api(void **state)
{
	(void)state;
	/* No raw line yet. */
	struct imap_parser *p = imap_parser_new(NULL);
	size_t n = 99;
	assert_null(imap_parser_line(p, &n));
	assert_int_equal(n, 0);
	assert_null(imap_parser_command(p));
	assert_null(imap_parser_command_name(p));

	/* Stealing needs a literal of the current command. */
	struct imap_arg fake = {IMAP_ARG_LITERAL, 0, "x", 1, NULL};
	struct buf b;
	assert_false(imap_parser_literal_steal(p, &fake, &b));
	size_t used;
	assert_int_equal(imap_parser_feed(p, "a X {0}\r\n", 9, &used), IMAP_PARSE_LITERAL);
	imap_parser_literal_accept(p);
	assert_int_equal(imap_parser_feed(p, "\r\n", 2, &used), IMAP_PARSE_DONE);
	const struct imap_command *c = imap_parser_command(p);
	assert_false(imap_parser_literal_steal(p, &fake, &b));
	assert_true(imap_parser_literal_steal(p, &c->args[0], &b));
	assert_int_equal(b.len, 0);
	buf_free(&b);
	imap_parser_free(&p);

	/* Absurd limits are clamped without overflow. */
	struct imap_parser_limits huge = {.max_line = SIZE_MAX, .max_literal = UINT64_MAX};
	p = imap_parser_new(&huge);
	assert_int_equal(imap_parser_feed(p, "a X {9223372036854775807+}\r\n", 28, &used),
			 IMAP_PARSE_ERROR);
	assert_int_equal(imap_parser_error(p, NULL), IMAP_PERR_NONSYNC_TOO_BIG);
	imap_parser_free(&p);

	/* A big command, then a small one: the big text buffer is let go. */
	struct imap_parser_limits big = {.max_line = 200000};
	p = imap_parser_new(&big);
	struct buf in = BUF_INIT(0);
	buf_puts(&in, "a X ");
	for (int i = 0; i < 100000; i++)
		buf_putc(&in, 'x');
	buf_puts(&in, "\r\nb NOOP\r\n");
	assert_int_equal(imap_parser_feed(p, in.data, in.len, &used), IMAP_PARSE_DONE);
	assert_int_equal(imap_parser_command(p)->args[0].len, 100000);
	assert_int_equal(imap_parser_feed(p, in.data + used, in.len - used, &used),
			 IMAP_PARSE_DONE);
	assert_string_equal(imap_parser_command(p)->tag, "b");
	buf_free(&in);
	imap_parser_free(&p);

	/* More fetch-att shapes. */
	static const char fin[] = "a F [1] X[a BODY[HEADER.FIELDS (\"a\\\"b\")] "
				  "BODY[]<99999999999999999999.1> BODY[]<1.0x> BODY[]x\r\n";
	p = parse_one(fin, sizeof(fin) - 1);
	const struct imap_arg *a = imap_parser_command(p)->args;
	struct imap_fetch_att fa;
	assert_int_equal(imap_fetch_att_split(&a[0], &fa), -1);
	assert_int_equal(imap_fetch_att_split(&a[1], &fa), -1);
	assert_int_equal(imap_fetch_att_split(&a[2], &fa), 0);
	assert_int_equal(fa.section_len, 22);
	assert_int_equal(imap_fetch_att_split(&a[3], &fa), -1);
	assert_int_equal(imap_fetch_att_split(&a[4], &fa), -1);
	assert_int_equal(imap_fetch_att_split(&a[5], &fa), -1);
	imap_parser_free(&p);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup(test_simple, setup),
	    cmocka_unit_test_setup(test_tokens, setup),
	    cmocka_unit_test_setup(test_fetch_atts, setup),
	    cmocka_unit_test_setup(test_literals, setup),
	    cmocka_unit_test_setup(test_literal_reject, setup),
	    cmocka_unit_test_setup(test_literal_limits, setup),
	    cmocka_unit_test_setup(test_line_limits, setup),
	    cmocka_unit_test_setup(test_arg_limits, setup),
	    cmocka_unit_test_setup(test_quoted_errors, setup),
	    cmocka_unit_test_setup(test_syntax_errors, setup),
	    cmocka_unit_test_setup(test_accessors, setup),
	    cmocka_unit_test_setup(test_steal_large, setup),
	    cmocka_unit_test_setup(test_pipelining, setup),
	    cmocka_unit_test_setup(test_raw_lines, setup),
	    cmocka_unit_test_setup(test_set_limits, setup),
	    cmocka_unit_test_setup(test_error_info, setup),
	    cmocka_unit_test_setup(test_skip_paths, setup),
	    cmocka_unit_test_setup(test_line_ends, setup),
	    cmocka_unit_test_setup(test_args_at_every_start, setup),
	    cmocka_unit_test_setup(test_misc_api, setup),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
