/*
 * test_pop3_proto — unit tests for the POP3 parsing and output shaping:
 * the line framer (whole, byte at a time, overlong lines, limits), every
 * command and every parse error, and the RETR/TOP filter (dot-stuffing,
 * TOP line counts, the final ".\r\n"), each fed whole, byte at a time and
 * in random chunks.
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
#include "pop3/pop3_proto.h"

#define S(lit) (lit), (sizeof(lit) - 1)

/* A heap copy of exactly n bytes, so reading past n trips ASan. */
static char *
dup_exact(const char *s, size_t n)
{
	char *p = malloc(n ? n : 1);
	assert_non_null(p);
	memcpy(p, s, n);
	return p;
}

/* ------------------------------------------------------------------ */
/* Line framer */

/* Feed all of in[0..n) in chunks of step; collect lines ("E" for errors) joined by '|'. */
static void
frame(const char *in, size_t n, size_t step, size_t max, struct buf *out)
{
	struct pop3_line l;
	struct pop3_error e;
	size_t off = 0;

	pop3_line_init(&l);
	while (off < n) {
		size_t k = n - off < step ? n - off : step;
		char *chunk = dup_exact(in + off, k);
		size_t pos = 0;
		while (pos < k) {
			size_t used = 0;
			int rc = pop3_line_feed(&l, chunk + pos, k - pos, max, &used, &e);
			assert_true(used > 0 && used <= k - pos);
			pos += used;
			if (rc == 1) {
				assert_int_equal(strlen(l.data), l.len);
				buf_append(out, l.data, l.len);
				buf_putc(out, '|');
			} else if (rc < 0) {
				assert_int_equal(e.code, POP3_ERR_TOO_LONG);
				assert_non_null(e.text);
				buf_puts(out, "E|");
			} else {
				assert_int_equal(pos, k);
			}
		}
		free(chunk);
		off += k;
	}
}

static void
assert_frames(const char *in, size_t n, size_t max, const char *want)
{
	static const size_t steps[] = {1, 2, 3, 7, 64, 100000};
	for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		struct buf out = BUF_INIT(0);
		frame(in, n, steps[i], max, &out);
		if (strcmp(buf_str(&out), want) != 0)
			fail_msg("step %zu: got '%s', want '%s'", steps[i], buf_str(&out), want);
		buf_free(&out);
	}
}

static void
test_line_basic(void **state)
{
	assert_frames(S("STAT\r\n"), POP3_CMD_LINE_MAX, "STAT|");
	assert_frames(S("STAT\r\nLIST 1\r\nQUIT\r\n"), POP3_CMD_LINE_MAX, "STAT|LIST 1|QUIT|");
	/* bare LF ends a line too; a CR elsewhere stays in it */
	assert_frames(S("NOOP\nRSET\r\n"), POP3_CMD_LINE_MAX, "NOOP|RSET|");
	assert_frames(S("NO\rOP\r\n"), POP3_CMD_LINE_MAX, "NO\rOP|");
	/* only one CR is dropped */
	assert_frames(S("X\r\r\n"), POP3_CMD_LINE_MAX, "X\r|");
	/* empty lines are lines */
	assert_frames(S("\r\n\n"), POP3_CMD_LINE_MAX, "||");
	/* an unfinished line is not handed out */
	assert_frames(S("STAT\r\nLIS"), POP3_CMD_LINE_MAX, "STAT|");
}

static void
test_line_limit(void **state)
{
	char in[2000];
	char want[2000];

	/* 253 octets + CRLF = 255: accepted. */
	memset(in, 'a', 253);
	memcpy(in + 253, "\r\n", 2);
	memcpy(want, in, 253);
	memcpy(want + 253, "|", 2);
	assert_frames(in, 255, POP3_CMD_LINE_MAX, want);
	/* 253 octets + bare LF: accepted as well. */
	in[253] = '\n';
	assert_frames(in, 254, POP3_CMD_LINE_MAX, want);

	/* 254 octets + CRLF: too long, then the next line is fine. */
	memset(in, 'a', 254);
	memcpy(in + 254, "\r\nQUIT\r\n", 8);
	assert_frames(in, 262, POP3_CMD_LINE_MAX, "E|QUIT|");
	/* 254 octets + bare LF: too long too. */
	memcpy(in + 254, "\nQUIT\r\n", 7);
	assert_frames(in, 261, POP3_CMD_LINE_MAX, "E|QUIT|");

	/* A very long line is reported once, at its end. */
	memset(in, 'b', 1990);
	memcpy(in + 1990, "\r\nNOOP\r\n", 8);
	assert_frames(in, 1998, POP3_CMD_LINE_MAX, "E|NOOP|");
	/* The same line fits the SASL limit only when short enough. */
	assert_frames(in, 1998, POP3_AUTH_LINE_MAX, "E|NOOP|");
	memset(in, 'c', 1024);
	memcpy(in + 1024, "\r\n", 2);
	memcpy(want, in, 1024);
	memcpy(want + 1024, "|", 2);
	assert_frames(in, 1026, POP3_AUTH_LINE_MAX, want);
	assert_frames(in, 1026, POP3_CMD_LINE_MAX, "E|");
	/* A limit over the array is clamped. */
	assert_frames(in, 1026, 100000, want);
}

static void
test_line_reset(void **state)
{
	struct pop3_line l;
	struct pop3_error e;
	size_t used;

	pop3_line_init(&l);
	assert_int_equal(pop3_line_feed(&l, S("PASS sec"), POP3_CMD_LINE_MAX, &used, &e), 0);
	assert_int_equal(used, 8);
	pop3_line_reset(&l);
	assert_int_equal(l.len, 0);
	for (size_t i = 0; i < sizeof(l.data); i++)
		assert_int_equal(l.data[i], 0);
	assert_int_equal(pop3_line_feed(&l, S("CAPA\r\nX"), POP3_CMD_LINE_MAX, &used, &e), 1);
	assert_int_equal(used, 6);
	assert_string_equal(l.data, "CAPA");
	/* The next call starts a new line. */
	assert_int_equal(pop3_line_feed(&l, S("X"), POP3_CMD_LINE_MAX, &used, &e), 0);
	assert_int_equal(l.len, 1);
	/* Feeding nothing is harmless. */
	assert_int_equal(pop3_line_feed(&l, "", 0, POP3_CMD_LINE_MAX, &used, &e), 0);
	assert_int_equal(used, 0);
}

/* ------------------------------------------------------------------ */
/* Command lines */

static int
parse(const char *line, struct pop3_cmdline *r, struct pop3_error *e)
{
	size_t n = strlen(line);
	char *p = dup_exact(line, n);
	int rc = pop3_cmd_parse(p, n, r, e);
	/* The pointers in r point into p: check them before freeing. */
	for (unsigned i = 0; i < r->nargs; i++)
		assert_true(r->arg[i] >= p && r->arg[i] + r->arg_len[i] <= p + n);
	free(p);
	return rc;
}

static void
test_cmd_ok(void **state)
{
	static const struct {
		const char *line;
		enum pop3_cmd cmd;
		unsigned nargs;
		uint32_t num0, num1;
	} ok[] = {
	    {"STAT", POP3_CMD_STAT, 0, 0, 0},
	    {"stat", POP3_CMD_STAT, 0, 0, 0},
	    {"StAt  ", POP3_CMD_STAT, 0, 0, 0},
	    {"LIST", POP3_CMD_LIST, 0, 0, 0},
	    {"LIST 1", POP3_CMD_LIST, 1, 1, 0},
	    {"list  42 ", POP3_CMD_LIST, 1, 42, 0},
	    {"LIST 4294967295", POP3_CMD_LIST, 1, 4294967295u, 0},
	    {"LIST 0000000007", POP3_CMD_LIST, 1, 7, 0},
	    {"RETR 3", POP3_CMD_RETR, 1, 3, 0},
	    {"DELE 9", POP3_CMD_DELE, 1, 9, 0},
	    {"NOOP", POP3_CMD_NOOP, 0, 0, 0},
	    {"RSET", POP3_CMD_RSET, 0, 0, 0},
	    {"QUIT", POP3_CMD_QUIT, 0, 0, 0},
	    {"TOP 1 0", POP3_CMD_TOP, 2, 1, 0},
	    {"top 2 10", POP3_CMD_TOP, 2, 2, 10},
	    {"TOP 1 4294967295", POP3_CMD_TOP, 2, 1, 4294967295u},
	    {"UIDL", POP3_CMD_UIDL, 0, 0, 0},
	    {"UIDL 5", POP3_CMD_UIDL, 1, 5, 0},
	    {"CAPA", POP3_CMD_CAPA, 0, 0, 0},
	    {"STLS", POP3_CMD_STLS, 0, 0, 0},
	    {"AUTH", POP3_CMD_AUTH, 0, 0, 0},
	    {"AUTH PLAIN", POP3_CMD_AUTH, 1, 0, 0},
	    {"AUTH plain AGFsaWNlAHB3", POP3_CMD_AUTH, 2, 0, 0},
	    {"AUTH PLAIN =", POP3_CMD_AUTH, 2, 0, 0},
	    {"AUTH SCRAM-SHA-256", POP3_CMD_AUTH, 1, 0, 0},
	    {"USER alice@example.test", POP3_CMD_USER, 1, 0, 0},
	    {"APOP mrose c4c9334bac560ecc979e58001b3e22fb", POP3_CMD_APOP, 2, 0, 0},
	};
	struct pop3_cmdline r;
	struct pop3_error e;

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		if (parse(ok[i].line, &r, &e) != 0)
			fail_msg("'%s': %s", ok[i].line, e.text);
		assert_int_equal(r.cmd, ok[i].cmd);
		assert_int_equal(r.nargs, ok[i].nargs);
		if (ok[i].nargs >= 1 && ok[i].num0)
			assert_int_equal(r.num[0], ok[i].num0);
		if (ok[i].cmd == POP3_CMD_TOP)
			assert_int_equal(r.num[1], ok[i].num1);
		assert_int_equal(e.code, POP3_ERR_NONE);
	}
}

static void
test_cmd_args(void **state)
{
	struct pop3_cmdline r;
	struct pop3_error e;
	const char *line;

	line = "USER alice@example.test  ";
	assert_int_equal(pop3_cmd_parse(line, strlen(line), &r, &e), 0);
	assert_int_equal(r.arg_len[0], 18);
	assert_memory_equal(r.arg[0], "alice@example.test", 18);
	assert_int_equal(r.verb_len, 4);
	assert_ptr_equal(r.verb, line);

	/* PASS takes the rest of the line verbatim, spaces included. */
	line = "PASS  my secret  ";
	assert_int_equal(pop3_cmd_parse(line, strlen(line), &r, &e), 0);
	assert_int_equal(r.cmd, POP3_CMD_PASS);
	assert_int_equal(r.nargs, 1);
	assert_int_equal(r.arg_len[0], 12);
	assert_memory_equal(r.arg[0], " my secret  ", 12);
	line = "pass x";
	assert_int_equal(pop3_cmd_parse(line, strlen(line), &r, &e), 0);
	assert_int_equal(r.arg_len[0], 1);
	/* UTF-8 in a password is fine. */
	line = "PASS p\xc3\xa4ss";
	assert_int_equal(pop3_cmd_parse(line, strlen(line), &r, &e), 0);
	assert_int_equal(r.arg_len[0], 5);

	line = "AUTH PLAIN AGFsaWNlAHB3";
	assert_int_equal(pop3_cmd_parse(line, strlen(line), &r, &e), 0);
	assert_int_equal(r.arg_len[0], 5);
	assert_memory_equal(r.arg[0], "PLAIN", 5);
	assert_int_equal(r.arg_len[1], 12);
	assert_memory_equal(r.arg[1], "AGFsaWNlAHB3", 12);

	assert_string_equal(pop3_cmd_name(POP3_CMD_RETR), "RETR");
	assert_string_equal(pop3_cmd_name(POP3_CMD_TOP), "TOP");
	assert_string_equal(pop3_cmd_name(POP3_CMD_UNKNOWN), "?");
}

static void
test_cmd_errors(void **state)
{
	static const struct {
		const char *line;
		enum pop3_err err;
		enum pop3_cmd cmd; /* what r.cmd still says */
	} bad[] = {
	    {"", POP3_ERR_EMPTY, POP3_CMD_UNKNOWN},
	    {" ", POP3_ERR_UNKNOWN, POP3_CMD_UNKNOWN},
	    {" STAT", POP3_ERR_UNKNOWN, POP3_CMD_UNKNOWN},
	    {"XYZZY", POP3_ERR_UNKNOWN, POP3_CMD_UNKNOWN},
	    {"STATS", POP3_ERR_UNKNOWN, POP3_CMD_UNKNOWN},
	    {"STA", POP3_ERR_UNKNOWN, POP3_CMD_UNKNOWN},
	    {"HELO x", POP3_ERR_UNKNOWN, POP3_CMD_UNKNOWN},
	    {"ST\xc3\x84T", POP3_ERR_UNKNOWN, POP3_CMD_UNKNOWN},
	    {"STAT\t", POP3_ERR_CTRL, POP3_CMD_UNKNOWN},
	    {"STAT\r", POP3_ERR_CTRL, POP3_CMD_UNKNOWN},
	    {"LIST\t1", POP3_ERR_CTRL, POP3_CMD_UNKNOWN},
	    {"RETR 1\x7f", POP3_ERR_CTRL, POP3_CMD_RETR},
	    {"PASS a\x01b", POP3_ERR_CTRL, POP3_CMD_PASS},
	    {"USER a\x1b[2J", POP3_ERR_CTRL, POP3_CMD_USER},
	    /* wrong number of arguments */
	    {"STAT 1", POP3_ERR_SYNTAX, POP3_CMD_STAT},
	    {"NOOP x", POP3_ERR_SYNTAX, POP3_CMD_NOOP},
	    {"RSET x", POP3_ERR_SYNTAX, POP3_CMD_RSET},
	    {"QUIT now", POP3_ERR_SYNTAX, POP3_CMD_QUIT},
	    {"CAPA x", POP3_ERR_SYNTAX, POP3_CMD_CAPA},
	    {"STLS x", POP3_ERR_SYNTAX, POP3_CMD_STLS},
	    {"LIST 1 2", POP3_ERR_SYNTAX, POP3_CMD_LIST},
	    {"UIDL 1 2", POP3_ERR_SYNTAX, POP3_CMD_UIDL},
	    {"RETR", POP3_ERR_SYNTAX, POP3_CMD_RETR},
	    {"RETR  ", POP3_ERR_SYNTAX, POP3_CMD_RETR},
	    {"RETR 1 2", POP3_ERR_SYNTAX, POP3_CMD_RETR},
	    {"DELE", POP3_ERR_SYNTAX, POP3_CMD_DELE},
	    {"DELE 1 1", POP3_ERR_SYNTAX, POP3_CMD_DELE},
	    {"TOP", POP3_ERR_SYNTAX, POP3_CMD_TOP},
	    {"TOP 1", POP3_ERR_SYNTAX, POP3_CMD_TOP},
	    {"TOP 1 2 3", POP3_ERR_SYNTAX, POP3_CMD_TOP},
	    {"USER", POP3_ERR_SYNTAX, POP3_CMD_USER},
	    {"USER a b", POP3_ERR_SYNTAX, POP3_CMD_USER},
	    {"PASS", POP3_ERR_SYNTAX, POP3_CMD_PASS},
	    {"PASS ", POP3_ERR_SYNTAX, POP3_CMD_PASS},
	    {"AUTH PLAIN x y", POP3_ERR_SYNTAX, POP3_CMD_AUTH},
	    {"AUTH PL@IN", POP3_ERR_SYNTAX, POP3_CMD_AUTH},
	    {"AUTH ABCDEFGHIJKLMNOPQRSTU", POP3_ERR_SYNTAX, POP3_CMD_AUTH},
	    {"APOP x", POP3_ERR_SYNTAX, POP3_CMD_APOP},
	    /* numbers */
	    {"RETR 0", POP3_ERR_NUMBER, POP3_CMD_RETR},
	    {"RETR -1", POP3_ERR_NUMBER, POP3_CMD_RETR},
	    {"RETR +1", POP3_ERR_NUMBER, POP3_CMD_RETR},
	    {"RETR 1a", POP3_ERR_NUMBER, POP3_CMD_RETR},
	    {"RETR x", POP3_ERR_NUMBER, POP3_CMD_RETR},
	    {"RETR 4294967296", POP3_ERR_NUMBER, POP3_CMD_RETR},
	    {"RETR 99999999999", POP3_ERR_NUMBER, POP3_CMD_RETR},
	    {"RETR 00000000001", POP3_ERR_NUMBER, POP3_CMD_RETR},
	    {"RETR 18446744073709551617", POP3_ERR_NUMBER, POP3_CMD_RETR},
	    {"DELE 0", POP3_ERR_NUMBER, POP3_CMD_DELE},
	    {"LIST 0", POP3_ERR_NUMBER, POP3_CMD_LIST},
	    {"UIDL x", POP3_ERR_NUMBER, POP3_CMD_UIDL},
	    {"TOP 0 1", POP3_ERR_NUMBER, POP3_CMD_TOP},
	    {"TOP 1 -1", POP3_ERR_NUMBER, POP3_CMD_TOP},
	    {"TOP 1 x", POP3_ERR_NUMBER, POP3_CMD_TOP},
	    {"TOP 1 4294967296", POP3_ERR_NUMBER, POP3_CMD_TOP},
	};
	struct pop3_cmdline r;
	struct pop3_error e;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (parse(bad[i].line, &r, &e) != -1)
			fail_msg("'%s' parsed", bad[i].line);
		if (e.code != bad[i].err)
			fail_msg("'%s': error %d, want %d", bad[i].line, e.code, bad[i].err);
		if (r.cmd != bad[i].cmd)
			fail_msg("'%s': cmd %d, want %d", bad[i].line, r.cmd, bad[i].cmd);
		assert_non_null(e.text);
		assert_true(strlen(e.text) > 0);
		assert_null(strchr(e.text, '\r'));
		assert_null(strchr(e.text, '\n'));
	}

	/* A NUL anywhere (not visible to strlen-based helpers). */
	static const char nul[] = "RETR\0 1";
	assert_int_equal(pop3_cmd_parse(nul, sizeof(nul) - 1, &r, &e), -1);
	assert_int_equal(e.code, POP3_ERR_NUL);
	static const char nul2[] = "PASS se\0cret";
	assert_int_equal(pop3_cmd_parse(nul2, sizeof(nul2) - 1, &r, &e), -1);
	assert_int_equal(e.code, POP3_ERR_NUL);
	assert_int_equal(r.cmd, POP3_CMD_PASS);

	/* Usage texts name the command. */
	assert_int_equal(parse("TOP 1", &r, &e), -1);
	assert_string_equal(e.text, "Syntax: TOP msg lines");
	assert_int_equal(parse("RETR 0", &r, &e), -1);
	assert_string_equal(e.text, "Invalid message number");
	assert_int_equal(parse("TOP 1 x", &r, &e), -1);
	assert_string_equal(e.text, "Invalid number of lines");
}

/* ------------------------------------------------------------------ */
/* RETR / TOP output */

/* Run the filter over msg in chunks of step (0: random chunks). */
static void
shape(const char *msg, size_t n, int top, uint64_t lines, size_t step, struct buf *out, int *done_r)
{
	struct pop3_dot d;
	size_t off = 0;
	int done = 0;

	pop3_dot_init(&d, top, lines);
	while (off < n && !done) {
		size_t k = step ? step : (size_t)(rand() % 17) + 1;
		if (k > n - off)
			k = n - off;
		char *chunk = dup_exact(msg + off, k);
		int rc = pop3_dot_feed(&d, chunk, k, out);
		assert_true(rc == 0 || rc == 1);
		done = rc == 1;
		free(chunk);
		off += k;
	}
	if (n == 0 && top) {
		/* Nothing to feed: an empty message. */
		assert_int_equal(pop3_dot_feed(&d, "", 0, out), 0);
	}
	assert_int_equal(pop3_dot_finish(&d, out), 0);
	assert_int_equal(d.out, out->len);
	*done_r = done;
}

static void
assert_shape(const char *msg, size_t n, int top, uint64_t lines, const char *want)
{
	static const size_t steps[] = {1, 2, 3, 5, 64, 100000, 0, 0, 0};
	for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		struct buf out = BUF_INIT(0);
		int done;
		shape(msg, n, top, lines, steps[i], &out, &done);
		if (out.len != strlen(want) || memcmp(out.data, want, out.len) != 0)
			fail_msg("step %zu top %d lines %llu: got '%s', want '%s'", steps[i], top,
				 (unsigned long long)lines, buf_str(&out), want);
		buf_free(&out);
	}
}

static const char MSG[] = "Subject: x\r\n"
			  "From: a@b.c\r\n"
			  "\r\n"
			  "line 1\r\n"
			  ".line 2\r\n"
			  "..\r\n"
			  ".\r\n"
			  "line 5\r\n";

static void
test_dot_retr(void **state)
{
	assert_shape(S(MSG), 0, 0,
		     "Subject: x\r\nFrom: a@b.c\r\n\r\nline 1\r\n..line 2\r\n...\r\n..\r\n"
		     "line 5\r\n.\r\n");
	/* No final CRLF: one is added before the dot. */
	assert_shape(S("a\r\n\r\nb"), 0, 0, "a\r\n\r\nb\r\n.\r\n");
	assert_shape(S("a\r\n\r\n."), 0, 0, "a\r\n\r\n..\r\n.\r\n");
	/* Empty message. */
	assert_shape("", 0, 0, 0, ".\r\n");
	/* A dot on the first line, and one after a bare LF. */
	assert_shape(S(".x\n.y\r\n"), 0, 0, "..x\n..y\r\n.\r\n");
	/* Dots not at the start of a line are left alone. */
	assert_shape(S("a.b\r\n x.\r\n"), 0, 0, "a.b\r\n x.\r\n.\r\n");
}

static void
test_dot_top(void **state)
{
	assert_shape(S(MSG), 1, 0, "Subject: x\r\nFrom: a@b.c\r\n\r\n.\r\n");
	assert_shape(S(MSG), 1, 1, "Subject: x\r\nFrom: a@b.c\r\n\r\nline 1\r\n.\r\n");
	assert_shape(S(MSG), 1, 2, "Subject: x\r\nFrom: a@b.c\r\n\r\nline 1\r\n..line 2\r\n.\r\n");
	assert_shape(S(MSG), 1, 4,
		     "Subject: x\r\nFrom: a@b.c\r\n\r\nline 1\r\n..line 2\r\n...\r\n..\r\n.\r\n");
	/* More lines than the body has: the whole message. */
	assert_shape(S(MSG), 1, 5,
		     "Subject: x\r\nFrom: a@b.c\r\n\r\nline 1\r\n..line 2\r\n...\r\n..\r\n"
		     "line 5\r\n.\r\n");
	assert_shape(S(MSG), 1, 1000000,
		     "Subject: x\r\nFrom: a@b.c\r\n\r\nline 1\r\n..line 2\r\n...\r\n..\r\n"
		     "line 5\r\n.\r\n");
	/* No blank line: all of it is header. */
	assert_shape(S("A: 1\r\nB: 2\r\n"), 1, 0, "A: 1\r\nB: 2\r\n.\r\n");
	assert_shape(S("A: 1\r\nB: 2"), 1, 0, "A: 1\r\nB: 2\r\n.\r\n");
	/* Empty header (message starts with the blank line). */
	assert_shape(S("\r\nbody\r\nmore\r\n"), 1, 0, "\r\n.\r\n");
	assert_shape(S("\r\nbody\r\nmore\r\n"), 1, 1, "\r\nbody\r\n.\r\n");
	/* Bare LF blank line. */
	assert_shape(S("A: 1\n\nbody\n"), 1, 0, "A: 1\n\n.\r\n");
	/* A line of one space is not blank. */
	assert_shape(S("A: 1\r\n \r\nB: 2\r\n\r\nbody\r\n"), 1, 0,
		     "A: 1\r\n \r\nB: 2\r\n\r\n.\r\n");
	/* Unterminated last body line within the count. */
	assert_shape(S("A: 1\r\n\r\nbody"), 1, 3, "A: 1\r\n\r\nbody\r\n.\r\n");
	/* Empty message. */
	assert_shape("", 0, 1, 0, ".\r\n");
}

static void
test_dot_done_and_limit(void **state)
{
	struct pop3_dot d;
	struct buf out = BUF_INIT(0);

	/* TOP says done as soon as it has all it needs; the rest is ignored. */
	pop3_dot_init(&d, 1, 1);
	assert_int_equal(pop3_dot_feed(&d, S("A: 1\r\n\r\n"), &out), 0);
	assert_int_equal(pop3_dot_feed(&d, S("one\r\n"), &out), 1);
	assert_int_equal(pop3_dot_feed(&d, S("two\r\n"), &out), 1);
	assert_int_equal(pop3_dot_finish(&d, &out), 0);
	assert_string_equal(buf_str(&out), "A: 1\r\n\r\none\r\n.\r\n");
	buf_free(&out);

	/* TOP n 0 is done right at the blank line. */
	pop3_dot_init(&d, 1, 0);
	assert_int_equal(pop3_dot_feed(&d, S("A: 1\r\n\r"), &out), 0);
	assert_int_equal(pop3_dot_feed(&d, S("\n"), &out), 1);
	buf_free(&out);

	/* A full output buffer: -1 and nothing half-written. */
	struct buf small = BUF_INIT(8);
	pop3_dot_init(&d, 0, 0);
	assert_int_equal(pop3_dot_feed(&d, S(".abc\r\n"), &small), 0);
	assert_int_equal(small.len, 7);
	assert_int_equal(pop3_dot_feed(&d, S("xyz\r\n"), &small), -1);
	assert_int_equal(small.len, 7);
	assert_int_equal(d.out, 7);
	assert_int_equal(pop3_dot_finish(&d, &small), -1);
	assert_int_equal(small.len, 7);
	buf_free(&small);
}

/* Random messages: the filter over any split equals the filter in one go,
 * and undoing the dot-stuffing gives the message back. */
static void
test_dot_random(void **state)
{
	static const char alphabet[] = ".\r\nab ";
	srand(1);
	for (int iter = 0; iter < 2000; iter++) {
		char msg[200];
		size_t n = (size_t)(rand() % (int)sizeof(msg));
		for (size_t i = 0; i < n; i++)
			msg[i] = alphabet[rand() % (int)(sizeof(alphabet) - 1)];
		int top = rand() % 2;
		uint64_t lines = (uint64_t)(rand() % 4);
		struct buf whole = BUF_INIT(0), parts = BUF_INIT(0);
		int d1, d2;
		shape(msg, n, top, lines, 100000, &whole, &d1);
		shape(msg, n, top, lines, 0, &parts, &d2);
		assert_int_equal(whole.len, parts.len);
		assert_memory_equal(whole.data, parts.data, whole.len);
		if (!top) {
			/* Unstuff: drop a '.' at each line start; strip the terminator. */
			struct buf back = BUF_INIT(0);
			int bol = 1;
			assert_true(whole.len >= 3);
			for (size_t i = 0; i < whole.len - 3; i++) {
				char c = whole.data[i];
				if (bol && c == '.') {
					bol = 0;
					continue;
				}
				buf_putc(&back, c);
				bol = c == '\n';
			}
			assert_memory_equal(whole.data + whole.len - 3, ".\r\n", 3);
			/* back is msg, plus the CRLF added when msg did not end in LF. */
			if (n > 0 && msg[n - 1] != '\n') {
				assert_int_equal(back.len, n + 2);
				assert_memory_equal(back.data + n, "\r\n", 2);
			} else {
				assert_int_equal(back.len, n);
			}
			if (n > 0)
				assert_memory_equal(back.data, msg, n);
			buf_free(&back);
		}
		buf_free(&whole);
		buf_free(&parts);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_line_basic),	       cmocka_unit_test(test_line_limit),
	    cmocka_unit_test(test_line_reset),	       cmocka_unit_test(test_cmd_ok),
	    cmocka_unit_test(test_cmd_args),	       cmocka_unit_test(test_cmd_errors),
	    cmocka_unit_test(test_dot_retr),	       cmocka_unit_test(test_dot_top),
	    cmocka_unit_test(test_dot_done_and_limit), cmocka_unit_test(test_dot_random),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
