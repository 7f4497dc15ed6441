/*
 * test_smtp_proto — unit tests for the SMTP parsers: command lines, paths,
 * ESMTP parameters, xtext, the DATA/BDAT reader (whole, byte at a time and
 * in random chunks, every smuggling variant), replies, base64, SASL PLAIN.
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
#include <sys/socket.h>

#include <cmocka.h>

#include "core/buf.h"
#include "smtp/smtp_proto.h"

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
/* Command lines */

static int
cmd(const char *line, struct smtp_cmdline *r, struct smtp_error *err)
{
	return smtp_cmd_parse(line, strlen(line), r, err);
}

static void
assert_arg(const struct smtp_cmdline *r, const char *want)
{
	assert_int_equal(r->arg_len, strlen(want));
	assert_memory_equal(r->arg, want, r->arg_len);
}

static void
test_cmd_verbs(void **state)
{
	static const struct {
		const char *line;
		enum smtp_cmd cmd;
		const char *arg;
	} ok[] = {
	    {"EHLO mx.example.org", SMTP_CMD_EHLO, "mx.example.org"},
	    {"ehlo [192.0.2.1]", SMTP_CMD_EHLO, "[192.0.2.1]"},
	    {"HELO x", SMTP_CMD_HELO, "x"},
	    {"MAIL FROM:<a@b.c>", SMTP_CMD_MAIL, "<a@b.c>"},
	    {"mail from:<a@b.c> SIZE=10", SMTP_CMD_MAIL, "<a@b.c> SIZE=10"},
	    {"MAIL FROM: <a@b.c>", SMTP_CMD_MAIL, "<a@b.c>"},
	    {"MAIL FROM:<>", SMTP_CMD_MAIL, "<>"},
	    {"RCPT TO:<a@b.c>", SMTP_CMD_RCPT, "<a@b.c>"},
	    {"Rcpt To: <postmaster>", SMTP_CMD_RCPT, "<postmaster>"},
	    {"DATA", SMTP_CMD_DATA, ""},
	    {"data", SMTP_CMD_DATA, ""},
	    {"RSET", SMTP_CMD_RSET, ""},
	    {"RSET  ", SMTP_CMD_RSET, ""},
	    {"NOOP", SMTP_CMD_NOOP, ""},
	    {"NOOP hello there", SMTP_CMD_NOOP, "hello there"},
	    {"QUIT", SMTP_CMD_QUIT, ""},
	    {"HELP", SMTP_CMD_HELP, ""},
	    {"HELP MAIL", SMTP_CMD_HELP, "MAIL"},
	    {"VRFY joe", SMTP_CMD_VRFY, "joe"},
	    {"EXPN staff", SMTP_CMD_EXPN, "staff"},
	    {"StartTLS", SMTP_CMD_STARTTLS, ""},
	    {"STARTTLS\t", SMTP_CMD_STARTTLS, ""},
	    {"BDAT 100", SMTP_CMD_BDAT, "100"},
	    {"AUTH PLAIN", SMTP_CMD_AUTH, "PLAIN"},
	    {"EHLO   spaced.example", SMTP_CMD_EHLO, "spaced.example"},
	};
	struct smtp_cmdline r;
	struct smtp_error err;

	(void)state;
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		size_t n = strlen(ok[i].line);
		char *p = dup_exact(ok[i].line, n);
		assert_int_equal(smtp_cmd_parse(p, n, &r, &err), 0);
		assert_int_equal(r.cmd, ok[i].cmd);
		assert_arg(&r, ok[i].arg);
		free(p);
	}
	assert_string_equal(smtp_cmd_name(SMTP_CMD_STARTTLS), "STARTTLS");
	assert_string_equal(smtp_cmd_name(SMTP_CMD_MAIL), "MAIL");
	assert_string_equal(smtp_cmd_name(SMTP_CMD_UNKNOWN), "UNKNOWN");
}

static void
test_cmd_bdat_auth(void **state)
{
	struct smtp_cmdline r;
	struct smtp_error err;

	(void)state;
	assert_int_equal(cmd("BDAT 0 LAST", &r, &err), 0);
	assert_int_equal(r.bdat_size, 0);
	assert_int_equal(r.bdat_last, 1);
	assert_int_equal(cmd("bdat 12345 last", &r, &err), 0);
	assert_int_equal(r.bdat_size, 12345);
	assert_int_equal(r.bdat_last, 1);
	assert_int_equal(cmd("BDAT 18446744073709551615", &r, &err), 0);
	assert_true(r.bdat_size == UINT64_MAX);
	assert_int_equal(r.bdat_last, 0);

	static const char *bad_bdat[] = {
	    "BDAT",	"BDAT LAST",	 "BDAT x",
	    "BDAT 10x", "BDAT -1",	 "BDAT 1 LASTX",
	    "BDAT 1 2", "BDAT 1 LAST x", "BDAT 18446744073709551616",
	};
	for (size_t i = 0; i < sizeof(bad_bdat) / sizeof(bad_bdat[0]); i++) {
		assert_int_equal(cmd(bad_bdat[i], &r, &err), -1);
		assert_int_equal(r.cmd, SMTP_CMD_BDAT);
		assert_int_equal(err.code, SMTP_ERR_CMD_SYNTAX);
		assert_int_equal(err.reply, 501);
		assert_string_equal(err.text, "Syntax: BDAT size [LAST]");
	}
	/* Refused before the syntax is looked at, it is still BDAT: its chunk
	 * cannot be framed (the caller closes). Not so "BDATX" or "BDAT5". */
	static const char *still_bdat[] = {"BDAT 5 LAST\x7f", "bdat\t5", "BDAT 5\x01", "BDAT\xff"};
	for (size_t i = 0; i < sizeof(still_bdat) / sizeof(still_bdat[0]); i++) {
		assert_int_equal(cmd(still_bdat[i], &r, &err), -1);
		assert_int_equal(r.cmd, SMTP_CMD_BDAT);
		assert_true(smtp_line_is_bdat(still_bdat[i], strlen(still_bdat[i])));
	}
	assert_int_equal(cmd("BDATX 5", &r, &err), -1);
	assert_int_equal(r.cmd, SMTP_CMD_UNKNOWN);
	assert_false(smtp_line_is_bdat("BDAT5", 5));
	assert_false(smtp_line_is_bdat("BDA", 3));
	assert_false(smtp_line_is_bdat(" BDAT", 5));
	assert_true(smtp_line_is_bdat("BDAT", 4));

	assert_int_equal(cmd("AUTH PLAIN", &r, &err), 0);
	assert_int_equal(r.auth_mech_len, 5);
	assert_memory_equal(r.auth_mech, "PLAIN", 5);
	assert_null(r.auth_ir);
	assert_int_equal(cmd("auth plain AGpvZQBzZWNyZXQ=", &r, &err), 0);
	assert_memory_equal(r.auth_mech, "plain", 5);
	assert_int_equal(r.auth_ir_len, 16);
	assert_memory_equal(r.auth_ir, "AGpvZQBzZWNyZXQ=", 16);
	assert_int_equal(cmd("AUTH PLAIN =", &r, &err), 0);
	assert_int_equal(r.auth_ir_len, 1);
	assert_int_equal(cmd("AUTH SCRAM-SHA-256", &r, &err), 0);
	assert_int_equal(cmd("AUTH X_Y-Z", &r, &err), 0);
	/* Not base64, but one token: the mechanism answers 501 5.5.2 (RFC 4954 4). */
	assert_int_equal(cmd("AUTH PLAIN a*b", &r, &err), 0);
	assert_int_equal(r.auth_ir_len, 3);
	/* 8-bit octets: a response that does not decode (501 5.5.2), not bad syntax. */
	assert_int_equal(cmd("AUTH PLAIN a\xc3\xa9\xff", &r, &err), 0);
	assert_int_equal(r.auth_ir_len, 4);

	static const char *bad_auth[] = {
	    "AUTH", "AUTH ABCDEFGHIJKLMNOPQRSTU", "AUTH PL@IN", "AUTH PLAIN a b", "AUTH PLAIN a\tb",
	};
	for (size_t i = 0; i < sizeof(bad_auth) / sizeof(bad_auth[0]); i++) {
		assert_int_equal(cmd(bad_auth[i], &r, &err), -1);
		assert_int_equal(err.code, SMTP_ERR_CMD_SYNTAX);
		assert_int_equal(r.cmd, SMTP_CMD_AUTH);
	}
	/* 20 characters is the limit. */
	assert_int_equal(cmd("AUTH ABCDEFGHIJKLMNOPQRST", &r, &err), 0);
}

static void
test_cmd_errors(void **state)
{
	struct smtp_cmdline r;
	struct smtp_error err;

	(void)state;
	assert_int_equal(smtp_cmd_parse("", 0, &r, &err), -1);
	assert_int_equal(err.code, SMTP_ERR_CMD_EMPTY);
	assert_int_equal(err.reply, 500);
	assert_int_equal(cmd("   ", &r, &err), -1);
	assert_int_equal(err.code, SMTP_ERR_CMD_EMPTY);

	assert_int_equal(smtp_cmd_parse(S("NO\0OP"), &r, &err), -1);
	assert_int_equal(err.code, SMTP_ERR_CMD_NUL);
	assert_int_equal(smtp_cmd_parse(S("MAIL FROM:<a@b>\0"), &r, &err), -1);
	assert_int_equal(err.code, SMTP_ERR_CMD_NUL);

	static const char *ctrl[] = {"NOOP\r",	   "NOOP a\rb",	 "NO\nOP",
				     "HELO a\x01", "HELO a\x7f", "\x1b[0m"};
	for (size_t i = 0; i < sizeof(ctrl) / sizeof(ctrl[0]); i++) {
		assert_int_equal(cmd(ctrl[i], &r, &err), -1);
		assert_int_equal(err.code, SMTP_ERR_CMD_CTRL);
	}

	assert_int_equal(cmd("H\xc3\xa9LO x", &r, &err), -1);
	assert_int_equal(err.code, SMTP_ERR_CMD_8BIT);
	assert_int_equal(err.reply, 500);
	/* 8-bit in the argument is not the command parser's business. */
	assert_int_equal(cmd("VRFY j\xc3\xb6rg", &r, &err), 0);

	assert_int_equal(cmd("XYZZY", &r, &err), -1);
	assert_int_equal(err.code, SMTP_ERR_CMD_UNKNOWN);
	assert_string_equal(err.enhanced, "5.5.2");
	assert_int_equal(r.cmd, SMTP_CMD_UNKNOWN);
	assert_int_equal(r.verb_len, 5);
	assert_memory_equal(r.verb, "XYZZY", 5);
	assert_int_equal(cmd("GET / HTTP/1.0", &r, &err), -1);
	assert_int_equal(err.code, SMTP_ERR_CMD_UNKNOWN);
	assert_int_equal(cmd("MAILFROM:<a@b>", &r, &err), -1);
	assert_int_equal(err.code, SMTP_ERR_CMD_UNKNOWN);
	assert_int_equal(cmd(" HELO x", &r, &err), -1);
	assert_int_equal(err.code, SMTP_ERR_CMD_UNKNOWN);
	assert_int_equal(cmd("HELO\tx", &r, &err), -1);
	assert_int_equal(err.code, SMTP_ERR_CMD_UNKNOWN);

	static const struct {
		const char *line;
		enum smtp_cmd cmd;
		const char *text;
	} syntax[] = {
	    {"EHLO", SMTP_CMD_EHLO, "Syntax: EHLO hostname"},
	    {"HELO ", SMTP_CMD_HELO, "Syntax: HELO hostname"},
	    {"VRFY", SMTP_CMD_VRFY, "Syntax: VRFY address"},
	    {"EXPN", SMTP_CMD_EXPN, "Syntax: EXPN list"},
	    {"DATA x", SMTP_CMD_DATA, "Syntax: DATA"},
	    {"RSET x", SMTP_CMD_RSET, "Syntax: RSET"},
	    {"QUIT now", SMTP_CMD_QUIT, "Syntax: QUIT"},
	    {"STARTTLS x", SMTP_CMD_STARTTLS, "Syntax: STARTTLS"},
	    {"MAIL", SMTP_CMD_MAIL, "Syntax: MAIL FROM:<address>"},
	    {"MAIL <a@b>", SMTP_CMD_MAIL, "Syntax: MAIL FROM:<address>"},
	    {"MAIL FROM:", SMTP_CMD_MAIL, "Syntax: MAIL FROM:<address>"},
	    {"MAIL FROM:   ", SMTP_CMD_MAIL, "Syntax: MAIL FROM:<address>"},
	    {"MAIL FROM <a@b>", SMTP_CMD_MAIL, "Syntax: MAIL FROM:<address>"},
	    {"MAIL TO:<a@b>", SMTP_CMD_MAIL, "Syntax: MAIL FROM:<address>"},
	    {"RCPT", SMTP_CMD_RCPT, "Syntax: RCPT TO:<address>"},
	    {"RCPT FROM:<a@b>", SMTP_CMD_RCPT, "Syntax: RCPT TO:<address>"},
	    {"RCPT TO", SMTP_CMD_RCPT, "Syntax: RCPT TO:<address>"},
	};
	for (size_t i = 0; i < sizeof(syntax) / sizeof(syntax[0]); i++) {
		assert_int_equal(cmd(syntax[i].line, &r, &err), -1);
		assert_int_equal(err.code, SMTP_ERR_CMD_SYNTAX);
		assert_int_equal(err.reply, 501);
		assert_string_equal(err.enhanced, "5.5.4");
		assert_int_equal(r.cmd, syntax[i].cmd);
		assert_string_equal(err.text, syntax[i].text);
	}
}

/* Every prefix of some lines, each in an exact heap copy: no overread, no crash. */
static void
test_cmd_prefixes(void **state)
{
	static const char *lines[] = {
	    "MAIL FROM:<\"a b\"@[IPv6:2001:db8::1]> SIZE=100 BODY=8BITMIME SMTPUTF8",
	    "RCPT TO:<@a.example,@b.example:joe@c.example> NOTIFY=SUCCESS,FAILURE "
	    "ORCPT=rfc822;joe+40c.example",
	    "BDAT 1000 LAST",
	    "AUTH PLAIN AGpvZQBzZWNyZXQ=",
	};
	struct smtp_cmdline r;
	struct smtp_error err;

	(void)state;
	for (size_t k = 0; k < sizeof(lines) / sizeof(lines[0]); k++) {
		size_t n = strlen(lines[k]);
		for (size_t m = 0; m <= n; m++) {
			char *p = dup_exact(lines[k], m);
			if (smtp_cmd_parse(p, m, &r, &err) == 0 &&
			    (r.cmd == SMTP_CMD_MAIL || r.cmd == SMTP_CMD_RCPT)) {
				char *a = dup_exact(r.arg, r.arg_len);
				struct smtp_mail mail;
				struct smtp_rcpt rcpt;
				if (r.cmd == SMTP_CMD_MAIL)
					(void)smtp_mail_parse(a, r.arg_len, SMTP_EXT_ALL, &mail,
							      &err);
				else
					(void)smtp_rcpt_parse(a, r.arg_len, SMTP_EXT_ALL, 1, &rcpt,
							      &err);
				free(a);
			}
			free(p);
		}
	}
}

/* ------------------------------------------------------------------ */
/* Paths */

static int
path(const char *s, unsigned flags, struct smtp_path *r, struct smtp_error *err)
{
	const char *rest;
	size_t rest_len;
	size_t n = strlen(s);
	char *p = dup_exact(s, n);
	int ret = smtp_path_parse(p, n, flags, r, &rest, &rest_len, err);
	free(p);
	return ret;
}

static void
assert_path(const char *in, unsigned flags, const char *want)
{
	struct smtp_path r;
	struct smtp_error err;

	if (path(in, flags, &r, &err) != 0)
		fail_msg("%s: %s", in, err.text);
	assert_string_equal(r.addr, want);
	assert_int_equal(r.len, strlen(want));
}

static void
assert_path_err(const char *in, unsigned flags, enum smtp_err code)
{
	struct smtp_path r;
	struct smtp_error err;

	if (path(in, flags, &r, &err) != -1)
		fail_msg("%s: accepted as %s", in, r.addr);
	if (err.code != code)
		fail_msg("%s: error %d (%s), want %d", in, err.code, err.text, code);
}

static void
test_path_basic(void **state)
{
	struct smtp_path r;
	struct smtp_error err;
	const char *rest;
	size_t rest_len;

	(void)state;
	assert_path("<joe@example.com>", 0, "joe@example.com");
	assert_int_equal(path("<Joe.Q@Example.COM>", 0, &r, &err), 0);
	assert_string_equal(r.addr, "Joe.Q@example.com");
	assert_int_equal(r.local_len, 5);
	assert_int_equal(r.is_null, 0);
	assert_int_equal(r.has_utf8, 0);
	assert_path("<a!#$%&'*+-/=?^_`{|}~@x.y>", 0, "a!#$%&'*+-/=?^_`{|}~@x.y");
	assert_path("<a@localhost>", 0, "a@localhost");
	assert_path("<a@1-2.x-y.example>", 0, "a@1-2.x-y.example");

	/* The null path. */
	assert_int_equal(path("<>", SMTP_PATH_REVERSE, &r, &err), 0);
	assert_int_equal(r.is_null, 1);
	assert_string_equal(r.addr, "");
	assert_int_equal(r.len, 0);
	assert_path_err("<>", 0, SMTP_ERR_PATH_NULL);
	assert_path_err("<>", SMTP_PATH_FORWARD, SMTP_ERR_PATH_NULL);
	assert_int_equal(path("<>", SMTP_PATH_FORWARD, &r, &err), -1);
	assert_int_equal(err.reply, 553);

	/* <postmaster> only as a forward-path. */
	assert_path("<postmaster>", SMTP_PATH_FORWARD, "postmaster");
	assert_int_equal(path("<PostMaster>", SMTP_PATH_FORWARD, &r, &err), 0);
	assert_string_equal(r.addr, "PostMaster");
	assert_int_equal(r.local_len, r.len);
	assert_path_err("<postmaster>", SMTP_PATH_REVERSE, SMTP_ERR_PATH_NO_DOMAIN);
	assert_path_err("<postmaster>", 0, SMTP_ERR_PATH_NO_DOMAIN);
	assert_path_err("<joe>", SMTP_PATH_FORWARD, SMTP_ERR_PATH_NO_DOMAIN);
	assert_path_err("<postmasterx>", SMTP_PATH_FORWARD, SMTP_ERR_PATH_NO_DOMAIN);

	/* The rest of the line. */
	assert_int_equal(
	    smtp_path_parse(S("<a@b.c> SIZE=1 BODY=7BIT"), 0, &r, &rest, &rest_len, &err), 0);
	assert_int_equal(rest_len, 16);
	assert_memory_equal(rest, "SIZE=1 BODY=7BIT", 16);
	assert_int_equal(smtp_path_parse(S("<a@b.c>   X"), 0, &r, &rest, &rest_len, &err), 0);
	assert_int_equal(rest_len, 1);
	assert_int_equal(rest[0], 'X');
	assert_int_equal(smtp_path_parse(S("<a@b.c>"), 0, &r, &rest, &rest_len, &err), 0);
	assert_int_equal(rest_len, 0);
	assert_int_equal(smtp_path_parse(S("<> X"), SMTP_PATH_REVERSE, &r, &rest, &rest_len, &err),
			 0);
	assert_int_equal(rest_len, 1);

	static const char *syntax[] = {
	    "",
	    "a@b.c",
	    "<a@b.c",
	    "<a@b.c>x",
	    "<a@b.c>>",
	    "<<a@b.c>",
	    "<a b@c.d>",
	    "<.a@b.c>",
	    "<a.@b.c>",
	    "<a..b@c.d>",
	    "<@b.c>",
	    "<a@>",
	    "<a@b.c",
	    "<a\\b@c.d>",
	    "<\"a@b.c>",
	    "<\"a\x01\"@b.c>",
	    "<\"a\\\x01\"@b.c>",
	    "<a(b)@c.d>",
	    "<a@b@c.d>",
	    "<a@b.c >",
	    "<@a.example:>",
	    "<@a.example,b.example:x@y.z>",
	    "<@a.example x@y.z>",
	    "<@a.example:b@c.example",
	    "<\"a\"b@c.d>",
	    "<>x",
	    "< a@b.c>",
	};
	for (size_t i = 0; i < sizeof(syntax) / sizeof(syntax[0]); i++) {
		struct smtp_path pr;
		if (path(syntax[i], SMTP_PATH_REVERSE, &pr, &err) != -1)
			fail_msg("accepted: %s", syntax[i]);
	}
	assert_path_err("<a@b.c>x", 0, SMTP_ERR_PATH_SYNTAX);
	assert_path_err("<a..b@c.d>", 0, SMTP_ERR_PATH_SYNTAX);
	assert_path_err("<@b.c>", 0, SMTP_ERR_PATH_SYNTAX);
	assert_path_err("<a@b_c.d>", 0, SMTP_ERR_PATH_DOMAIN);
	assert_path_err("<a@b.c@d>", 0, SMTP_ERR_PATH_DOMAIN);

	/* Enhanced codes: 5.1.7 for a sender, 5.1.3 for a recipient. */
	assert_int_equal(path("<a..b@c.d>", SMTP_PATH_REVERSE, &r, &err), -1);
	assert_string_equal(err.enhanced, "5.1.7");
	assert_int_equal(err.reply, 501);
	assert_int_equal(path("<a..b@c.d>", SMTP_PATH_FORWARD, &r, &err), -1);
	assert_string_equal(err.enhanced, "5.1.3");
}

static void
test_path_quoted_route(void **state)
{
	(void)state;
	assert_path("<\"john smith\"@example.com>", 0, "\"john smith\"@example.com");
	assert_path("<\"john\"@example.com>", 0, "john@example.com");
	assert_path("<\"john.q\"@example.com>", 0, "john.q@example.com");
	assert_path("<\"john\\ smith\"@example.com>", 0, "\"john smith\"@example.com");
	assert_path("<\"\\j\\o\\e\"@example.com>", 0, "joe@example.com");
	assert_path("<\"a\\\"b\"@x.y>", 0, "\"a\\\"b\"@x.y");
	assert_path("<\"a\\\\b\"@x.y>", 0, "\"a\\\\b\"@x.y");
	assert_path("<\"\"@x.y>", 0, "\"\"@x.y");
	assert_path("<\"a..b\"@x.y>", 0, "\"a..b\"@x.y");
	assert_path("<\".a\"@x.y>", 0, "\".a\"@x.y");
	assert_path("<\"a>b@c\"@x.y>", 0, "\"a>b@c\"@x.y");
	assert_path("<\"a,b:c\"@x.y>", 0, "\"a,b:c\"@x.y");

	/* Source routes are checked and dropped. */
	assert_path("<@a.example:joe@c.example>", 0, "joe@c.example");
	assert_path("<@a.example,@B.EXAMPLE:joe@c.example>", 0, "joe@c.example");
	assert_path("<@[192.0.2.1],@b.example:\"x y\"@c.example>", 0, "\"x y\"@c.example");
	assert_path_err("<@-bad.example:joe@c.example>", 0, SMTP_ERR_PATH_DOMAIN);
	assert_path_err("<@a.example,:joe@c.example>", 0, SMTP_ERR_PATH_SYNTAX);
	assert_path_err("<@a.example;joe@c.example>", 0, SMTP_ERR_PATH_DOMAIN);
	assert_path_err("<@a.example:postmaster>", SMTP_PATH_FORWARD, SMTP_ERR_PATH_NO_DOMAIN);
	assert_path("<@a.example:postmaster@b.example>", SMTP_PATH_FORWARD, "postmaster@b.example");
}

static void
test_path_domains(void **state)
{
	struct smtp_path r;
	struct smtp_error err;

	(void)state;
	assert_path("<a@[192.0.2.1]>", 0, "a@[192.0.2.1]");
	assert_path("<a@[0.0.0.0]>", 0, "a@[0.0.0.0]");
	assert_path("<a@[255.255.255.255]>", 0, "a@[255.255.255.255]");
	assert_path("<a@[IPv6:::1]>", 0, "a@[IPv6:::1]");
	assert_path("<a@[ipv6:2001:DB8::1]>", 0, "a@[IPv6:2001:db8::1]");
	assert_path("<a@[IPv6:2001:db8:0:0:0:0:0:1]>", 0, "a@[IPv6:2001:db8:0:0:0:0:0:1]");
	assert_path("<a@[IPv6:::ffff:192.0.2.1]>", 0, "a@[IPv6:::ffff:192.0.2.1]");
	/* RFC 5321 4.1.3: Snum = 1*3DIGIT, in an IPv6 literal's IPv4 tail too. */
	assert_path("<a@[01.002.3.4]>", 0, "a@[01.002.3.4]");
	assert_path("<a@[IPv6:::ffff:192.000.2.001]>", 0, "a@[IPv6:::ffff:192.000.2.001]");
	assert_path("<a@[IPv6:1:2:3:4:5:6:010.0.0.1]>", 0, "a@[IPv6:1:2:3:4:5:6:010.0.0.1]");
	{
		unsigned char a[16];
		int fam = 0;
		assert_int_equal(smtp_addr_literal(S("[IPv6:::FFFF:127.000.000.001]"), &fam, a), 0);
		assert_int_equal(fam, AF_INET6);
		assert_memory_equal(a, "\0\0\0\0\0\0\0\0\0\0\xff\xff\x7f\0\0\x01", 16);
		assert_int_equal(smtp_addr_literal(S("[010.0.0.255]"), &fam, a), 0);
		assert_int_equal(fam, AF_INET);
		assert_memory_equal(a, "\x0a\0\0\xff", 4);
		assert_int_equal(smtp_addr_literal(S("[IPv6:::1.2.3.0004]"), &fam, a), -1);
		assert_int_equal(smtp_addr_literal(S("[IPv6:::1.2.3.256]"), &fam, a), -1);
		assert_int_equal(smtp_addr_literal(S("[IPv6:1.2.3.4]"), &fam, a), -1);
		assert_int_equal(smtp_addr_literal(S("example.org"), &fam, a), -1);
	}

	static const char *bad[] = {
	    "<a@[256.1.1.1]>",
	    "<a@[1.2.3]>",
	    "<a@[1.2.3.4.5]>",
	    "<a@[1..3.4]>",
	    "<a@[1.2.3.4 ]>",
	    "<a@[IPv6:]>",
	    "<a@[IPv6:1::2::3]>",
	    "<a@[IPv6:fe80::1%1]>",
	    "<a@[IPv6:12345::]>",
	    "<a@[tag:stuff]>",
	    "<a@[]>",
	    "<a@[1.2.3.4>",
	    "<a@[1.2.3.1000]>",
	    "<a@-a.example>",
	    "<a@a-.example>",
	    "<a@a..example>",
	    "<a@a.example.>",
	    "<a@.a.example>",
	    "<a@a_b.example>",
	    "<a@[x]>",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_path_err(bad[i], 0, SMTP_ERR_PATH_DOMAIN);

	/* Labels: 63 octets fine, 64 not. */
	char in[300];
	char label[70];
	memset(label, 'a', 64);
	label[63] = '\0';
	snprintf(in, sizeof(in), "<x@%s.example>", label);
	assert_int_equal(path(in, 0, &r, &err), 0);
	label[63] = 'a';
	label[64] = '\0';
	snprintf(in, sizeof(in), "<x@%s.example>", label);
	assert_path_err(in, 0, SMTP_ERR_PATH_DOMAIN);

	/* smtp_domain_check, e.g. for EHLO arguments. */
	int u = -1;
	assert_int_equal(smtp_domain_check(S("mx.example.org"), &u), 0);
	assert_int_equal(u, 0);
	assert_int_equal(smtp_domain_check(S("b\xc3\xbc"
					     "cher.example"),
					   &u),
			 0);
	assert_int_equal(u, 1);
	assert_int_equal(smtp_domain_check(S("[192.0.2.1]"), NULL), 0);
	assert_int_equal(smtp_domain_check(S("[IPv6:::1]"), NULL), 0);
	assert_int_equal(smtp_domain_check(S(""), NULL), -1);
	assert_int_equal(smtp_domain_check(S("a b"), NULL), -1);
	assert_int_equal(smtp_domain_check(S("a\xc0\x80.example"), NULL), -1);
	/* 255 octets is the longest domain: 4 labels of 63 and 3 dots. */
	char dom[300];
	memset(dom, 'a', sizeof(dom));
	dom[63] = dom[127] = dom[191] = '.';
	assert_int_equal(smtp_domain_check(dom, 255, NULL), 0);
	/* 256: 63, 63, 63, 62, 1 */
	dom[254] = '.';
	assert_int_equal(smtp_domain_check(dom, 256, NULL), -1);
	assert_int_equal(smtp_domain_check(dom, 255, NULL), -1); /* trailing dot */
}

static void
test_path_utf8(void **state)
{
	struct smtp_path r;
	struct smtp_error err;

	(void)state;
	assert_int_equal(path("<j\xc3\xb6rg@b\xc3\xbc"
			      "cher.example>",
			      0, &r, &err),
			 0);
	assert_int_equal(r.has_utf8, 1);
	assert_string_equal(r.addr, "j\xc3\xb6rg@b\xc3\xbc"
				    "cher.example");
	assert_int_equal(path("<\xe7\x94\xa8\xe6\x88\xb7@\xe4\xbe\x8b\xe5\xad\x90.\xe5\xb9\xbf"
			      "\xe5\x91\x8a>",
			      0, &r, &err),
			 0);
	assert_int_equal(r.has_utf8, 1);
	assert_int_equal(path("<\"j\xc3\xb6rg smith\"@example.com>", 0, &r, &err), 0);
	assert_int_equal(r.has_utf8, 1);
	assert_int_equal(path("<\xf0\x9f\x98\x80@example.com>", 0, &r, &err), 0);
	assert_int_equal(r.has_utf8, 1);
	assert_int_equal(path("<joe@b\xc3\xbc"
			      "cher.example>",
			      0, &r, &err),
			 0);
	assert_int_equal(r.has_utf8, 1);
	/* The domain is lowercased as ASCII only. */
	assert_path("<x@\xc3\x84"
		    "BC.example>",
		    0,
		    "x@\xc3\x84"
		    "bc.example");

	static const char *bad[] = {
	    "<\xc0\x80@x.y>",	      /* overlong NUL */
	    "<\xc1\xbf@x.y>",	      /* overlong */
	    "<\xe0\x80\xaf@x.y>",     /* overlong 3-byte */
	    "<\xed\xa0\x80@x.y>",     /* surrogate */
	    "<\xf4\x90\x80\x80@x.y>", /* past U+10FFFF */
	    "<\xf5\x80\x80\x80@x.y>", "<\x80@x.y>",	  "<\xc3@x.y>",	    "<\xe4\xbe@x.y>",
	    "<a@b\xc3.example>",      "<a@\xff.example>", "<\"\xc3\"@x.y>", "<@b\xc3:a@x.y>",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_path_err(bad[i], 0, SMTP_ERR_PATH_BAD_UTF8);
}

static void
test_path_limits(void **state)
{
	char in[600];
	char local[100];
	struct smtp_path r;
	struct smtp_error err;

	(void)state;
	memset(local, 'l', 64);
	local[64] = '\0';
	snprintf(in, sizeof(in), "<%s@x.y>", local);
	assert_int_equal(path(in, 0, &r, &err), 0);
	assert_int_equal(r.local_len, 64);
	local[64] = 'l';
	local[65] = '\0';
	snprintf(in, sizeof(in), "<%s@x.y>", local);
	assert_path_err(in, 0, SMTP_ERR_PATH_LOCAL_TOO_LONG);
	/* Quoted: the canonical form is measured. */
	memset(local, 'l', 64);
	local[64] = '\0';
	snprintf(in, sizeof(in), "<\"%s\"@x.y>", local);
	assert_int_equal(path(in, 0, &r, &err), 0);
	local[30] = ' ';
	snprintf(in, sizeof(in), "<\"%s\"@x.y>", local);
	assert_path_err(in, 0, SMTP_ERR_PATH_LOCAL_TOO_LONG);
	local[62] = '\0';
	snprintf(in, sizeof(in), "<\"%s\"@x.y>", local);
	assert_int_equal(path(in, 0, &r, &err), 0);
	assert_int_equal(r.local_len, 64);
	/* A huge quoted string stops at the buffer, not past it. */
	char big[520];
	big[0] = '<';
	big[1] = '"';
	memset(big + 2, 'q', 500);
	memcpy(big + 502, "\"@x.y>", 7);
	assert_path_err(big, 0, SMTP_ERR_PATH_TOO_LONG);
	memset(big + 1, 'q', 500);
	memcpy(big + 501, "@x.y>", 6);
	assert_path_err(big, 0, SMTP_ERR_PATH_TOO_LONG);

	/* The whole path: 256 octets with brackets, no more. */
	char dom[300];
	size_t o = 0;
	for (int k = 0; k < 3; k++) {
		memset(dom + o, 'd', 63);
		o += 63;
		dom[o++] = '.';
	}
	/* "<" + 60 + "@" + 192 + 1 + ">" = 256 */
	dom[o++] = 'e';
	dom[o] = '\0';
	memset(local, 'l', 60);
	local[60] = '\0';
	snprintf(in, sizeof(in), "<%s@%s>", local, dom);
	assert_int_equal(strlen(in), 256);
	assert_int_equal(path(in, 0, &r, &err), 0);
	assert_int_equal(r.len, 254);
	local[60] = 'l';
	local[61] = '\0';
	snprintf(in, sizeof(in), "<%s@%s>", local, dom);
	assert_int_equal(strlen(in), 257);
	assert_path_err(in, 0, SMTP_ERR_PATH_TOO_LONG);
	/* A source route counts too. */
	local[60] = '\0';
	snprintf(in, sizeof(in), "<@r.example:%s@%s>", local, dom);
	assert_path_err(in, 0, SMTP_ERR_PATH_TOO_LONG);

	/* Domain over 255. */
	o = 0;
	for (int k = 0; k < 4; k++) {
		memset(dom + o, 'd', 63);
		o += 63;
		dom[o++] = '.';
	}
	memset(dom + o, 'e', 3);
	dom[o + 3] = '\0';
	snprintf(in, sizeof(in), "<a@%s>", dom);
	assert_path_err(in, 0, SMTP_ERR_PATH_DOMAIN_TOO_LONG);
	snprintf(in, sizeof(in), "<@%s:a@b.c>", dom);
	assert_path_err(in, 0, SMTP_ERR_PATH_DOMAIN_TOO_LONG);
}

/* ------------------------------------------------------------------ */
/* ESMTP parameters */

static void
test_params(void **state)
{
	struct smtp_params p;
	struct smtp_error err;

	(void)state;
	assert_int_equal(smtp_params_parse(S(""), &p, &err), 0);
	assert_int_equal(p.n, 0);
	assert_int_equal(smtp_params_parse(S("SIZE=100 BODY=8BITMIME  SMTPUTF8 X-Y=a+b"), &p, &err),
			 0);
	assert_int_equal(p.n, 4);
	assert_int_equal(p.has_utf8, 0);
	const struct smtp_param *q = smtp_params_find(&p, "size");
	assert_non_null(q);
	assert_int_equal(q->value_len, 3);
	assert_memory_equal(q->value, "100", 3);
	q = smtp_params_find(&p, "SMTPUTF8");
	assert_non_null(q);
	assert_null(q->value);
	q = smtp_params_find(&p, "x-y");
	assert_non_null(q);
	assert_memory_equal(q->value, "a+b", 3);
	assert_null(smtp_params_find(&p, "RET"));

	assert_int_equal(smtp_params_parse(S("X=\xc3\xa9t\xc3\xa9"), &p, &err), 0);
	assert_int_equal(p.has_utf8, 1);

	static const char *bad_syntax[] = {
	    "-X=1",   "X=",	"X==1",	 "X=a=b", "X=a\tb",	"X\x01",
	    "X=\x7f", "X=\xc3", "X.Y=1", "=1",	  "X=\xc0\x80",
	};
	for (size_t i = 0; i < sizeof(bad_syntax) / sizeof(bad_syntax[0]); i++) {
		size_t n = strlen(bad_syntax[i]);
		char *c = dup_exact(bad_syntax[i], n);
		if (smtp_params_parse(c, n, &p, &err) != -1)
			fail_msg("accepted: %s", bad_syntax[i]);
		assert_int_equal(err.code, SMTP_ERR_PARAM_SYNTAX);
		assert_int_equal(err.reply, 501);
		free(c);
	}

	assert_int_equal(smtp_params_parse(S("SIZE=1 size=2"), &p, &err), -1);
	assert_int_equal(err.code, SMTP_ERR_PARAM_DUPLICATE);
	assert_int_equal(smtp_params_parse(S("SMTPUTF8 SMTPUTF8"), &p, &err), -1);
	assert_int_equal(err.code, SMTP_ERR_PARAM_DUPLICATE);

	char many[200] = "";
	size_t o = 0;
	for (int k = 0; k < 16; k++)
		o += (size_t)snprintf(many + o, sizeof(many) - o, "K%d ", k);
	assert_int_equal(smtp_params_parse(many, o, &p, &err), 0);
	assert_int_equal(p.n, 16);
	o += (size_t)snprintf(many + o, sizeof(many) - o, "K16");
	assert_int_equal(smtp_params_parse(many, o, &p, &err), -1);
	assert_int_equal(err.code, SMTP_ERR_PARAM_TOO_MANY);
}

static void
test_param_values(void **state)
{
	uint64_t sz;
	enum smtp_body body;
	enum smtp_ret ret;
	unsigned notify;

	(void)state;
	assert_int_equal(smtp_param_size(S("0"), &sz), 0);
	assert_true(sz == 0);
	assert_int_equal(smtp_param_size(S("0026214400"), &sz), 0);
	assert_true(sz == 26214400);
	assert_int_equal(smtp_param_size(S("18446744073709551615"), &sz), 0);
	assert_true(sz == UINT64_MAX);
	/* RFC 1870: 1*20DIGIT; past 2^64 - 1 is a size over any limit, not bad syntax. */
	assert_int_equal(smtp_param_size(S("18446744073709551616"), &sz), 0);
	assert_true(sz == UINT64_MAX);
	assert_int_equal(smtp_param_size(S("99999999999999999999"), &sz), 0);
	assert_true(sz == UINT64_MAX);
	assert_int_equal(smtp_param_size(S("99999999999999999999999"), &sz), -1);
	assert_int_equal(smtp_param_size(S(""), &sz), -1);
	assert_int_equal(smtp_param_size(S("1k"), &sz), -1);
	assert_int_equal(smtp_param_size(S("-1"), &sz), -1);
	assert_int_equal(smtp_param_size(NULL, 0, &sz), -1);

	assert_int_equal(smtp_param_body(S("7bit"), &body), 0);
	assert_int_equal(body, SMTP_BODY_7BIT);
	assert_int_equal(smtp_param_body(S("8BITMIME"), &body), 0);
	assert_int_equal(body, SMTP_BODY_8BITMIME);
	assert_int_equal(smtp_param_body(S("BinaryMIME"), &body), 0);
	assert_int_equal(body, SMTP_BODY_BINARYMIME);
	assert_int_equal(smtp_param_body(S("8BIT"), &body), -1);
	assert_int_equal(smtp_param_body(NULL, 0, &body), -1);

	assert_int_equal(smtp_param_ret(S("full"), &ret), 0);
	assert_int_equal(ret, SMTP_RET_FULL);
	assert_int_equal(smtp_param_ret(S("HDRS"), &ret), 0);
	assert_int_equal(ret, SMTP_RET_HDRS);
	assert_int_equal(smtp_param_ret(S("HEADERS"), &ret), -1);

	assert_int_equal(smtp_param_notify(S("NEVER"), &notify), 0);
	assert_int_equal(notify, SMTP_NOTIFY_NEVER);
	assert_int_equal(smtp_param_notify(S("success,FAILURE,Delay"), &notify), 0);
	assert_int_equal(notify, SMTP_NOTIFY_SUCCESS | SMTP_NOTIFY_FAILURE | SMTP_NOTIFY_DELAY);
	assert_int_equal(smtp_param_notify(S("DELAY"), &notify), 0);
	assert_int_equal(notify, SMTP_NOTIFY_DELAY);
	static const char *bad[] = {
	    "",		"NEVER,SUCCESS",  "SUCCESS,NEVER", "SUCCESS,SUCCESS", "SUCCESS,",
	    ",SUCCESS", "SUCCESS,,DELAY", "ALWAYS",	   "NEVER "};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (smtp_param_notify(bad[i], strlen(bad[i]), &notify) != -1)
			fail_msg("accepted NOTIFY=%s", bad[i]);
}

static void
test_xtext(void **state)
{
	struct buf b = BUF_INIT(0);

	(void)state;
	assert_int_equal(smtp_xtext_decode(S("joe+2Bfoo+3Dbar@x"), &b), 0);
	assert_string_equal(buf_str(&b), "joe+foo=bar@x");
	buf_reset(&b);
	assert_int_equal(smtp_xtext_decode(S("a+0a+0D"), &b), 0);
	assert_memory_equal(b.data, "a\n\r", 3);
	buf_reset(&b);
	assert_int_equal(smtp_xtext_decode(S("+00"), &b), 0);
	assert_int_equal(b.len, 1);
	assert_int_equal(b.data[0], 0);
	buf_reset(&b);
	assert_int_equal(smtp_xtext_decode(S(""), &b), 0);
	assert_int_equal(b.len, 0);
	static const char *bad[] = {"+",   "+4",  "a+4",  "+GG",     "+4G",
				    "a=b", "a b", "\x7f", "\xc3\xa9"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		size_t n = strlen(bad[i]);
		char *c = dup_exact(bad[i], n);
		buf_reset(&b);
		if (smtp_xtext_decode(c, n, &b) != -1)
			fail_msg("accepted xtext %s", bad[i]);
		free(c);
	}

	/* Round trip of every byte. */
	char all[256];
	for (int k = 0; k < 256; k++)
		all[k] = (char)k;
	struct buf enc = BUF_INIT(0);
	buf_reset(&b);
	assert_int_equal(smtp_xtext_encode(all, 256, &enc), 0);
	for (size_t k = 0; k < enc.len; k++)
		assert_true(enc.data[k] >= 33 && enc.data[k] <= 126 && enc.data[k] != '=');
	assert_int_equal(smtp_xtext_decode(enc.data, enc.len, &b), 0);
	assert_int_equal(b.len, 256);
	assert_memory_equal(b.data, all, 256);
	buf_reset(&enc);
	assert_int_equal(smtp_xtext_encode(S("a+b=c d"), &enc), 0);
	assert_string_equal(buf_str(&enc), "a+2Bb+3Dc+20d");

	/* A bounded buf refuses to grow past its limit. */
	struct buf small = BUF_INIT(2);
	assert_int_equal(smtp_xtext_decode(S("abc"), &small), -1);
	assert_int_equal(smtp_xtext_encode(S(" "), &small), -1);
	buf_free(&small);
	buf_free(&b);
	buf_free(&enc);
}

static void
test_mail_parse(void **state)
{
	struct smtp_mail m;
	struct smtp_error err;

	(void)state;
	assert_int_equal(smtp_mail_parse(S("<joe@Example.com>"), SMTP_EXT_ALL, &m, &err), 0);
	assert_string_equal(m.from.addr, "joe@example.com");
	assert_int_equal(m.has_size, 0);
	assert_int_equal(m.body, SMTP_BODY_NONE);
	assert_int_equal(m.ret, SMTP_RET_NONE);

	assert_int_equal(smtp_mail_parse(S("<> SIZE=1000 BODY=8BITMIME RET=HDRS ENVID=QQ+2B1 "
					   "AUTH=<> SMTPUTF8"),
					 SMTP_EXT_ALL, &m, &err),
			 0);
	assert_int_equal(m.from.is_null, 1);
	assert_int_equal(m.has_size, 1);
	assert_true(m.size == 1000);
	assert_int_equal(m.body, SMTP_BODY_8BITMIME);
	assert_int_equal(m.ret, SMTP_RET_HDRS);
	assert_int_equal(m.has_envid, 1);
	assert_string_equal(m.envid, "QQ+2B1");
	assert_int_equal(m.has_auth, 1);
	assert_int_equal(m.smtputf8, 1);
	assert_int_equal(
	    smtp_mail_parse(S("<a@b.c> AUTH=joe+40example.com body=7bit"), SMTP_EXT_ALL, &m, &err),
	    0);
	assert_int_equal(m.body, SMTP_BODY_7BIT);

	/* SMTPUTF8. */
	assert_int_equal(smtp_mail_parse(S("<j\xc3\xb6rg@x.y> SMTPUTF8"), SMTP_EXT_ALL, &m, &err),
			 0);
	assert_int_equal(m.from.has_utf8, 1);
	assert_int_equal(smtp_mail_parse(S("<j\xc3\xb6rg@x.y>"), SMTP_EXT_ALL, &m, &err), -1);
	assert_int_equal(err.code, SMTP_ERR_PATH_UTF8);
	assert_int_equal(err.reply, 553);
	assert_string_equal(err.enhanced, "5.6.7");
	assert_int_equal(smtp_mail_parse(S("<j\xc3\xb6rg@x.y> SMTPUTF8"),
					 SMTP_EXT_ALL & ~SMTP_EXT_SMTPUTF8, &m, &err),
			 -1);
	assert_int_equal(err.code, SMTP_ERR_PARAM_UNKNOWN);

	static const struct {
		const char *arg;
		unsigned ext;
		enum smtp_err code;
		int reply;
	} bad[] = {
	    {"<a@b.c> SIZE", SMTP_EXT_ALL, SMTP_ERR_PARAM_VALUE, 501},
	    {"<a@b.c> SIZE=x", SMTP_EXT_ALL, SMTP_ERR_PARAM_VALUE, 501},
	    {"<a@b.c> SIZE=999999999999999999999", SMTP_EXT_ALL, SMTP_ERR_PARAM_VALUE, 501},
	    {"<a@b.c> BODY=8BIT", SMTP_EXT_ALL, SMTP_ERR_PARAM_VALUE, 501},
	    {"<a@b.c> BODY", SMTP_EXT_ALL, SMTP_ERR_PARAM_VALUE, 501},
	    {"<a@b.c> BODY=BINARYMIME", SMTP_EXT_ALL, SMTP_ERR_PARAM_UNKNOWN, 555},
	    {"<a@b.c> SMTPUTF8=yes", SMTP_EXT_ALL, SMTP_ERR_PARAM_VALUE, 501},
	    {"<a@b.c> RET=ALL", SMTP_EXT_ALL, SMTP_ERR_PARAM_VALUE, 501},
	    {"<a@b.c> ENVID", SMTP_EXT_ALL, SMTP_ERR_PARAM_VALUE, 501},
	    {"<a@b.c> ENVID=a+0Ab", SMTP_EXT_ALL, SMTP_ERR_PARAM_VALUE, 501},
	    {"<a@b.c> ENVID=a+", SMTP_EXT_ALL, SMTP_ERR_PARAM_VALUE, 501},
	    {"<a@b.c> ENVID=\xc3\xa9", SMTP_EXT_ALL, SMTP_ERR_PARAM_VALUE, 501},
	    {"<a@b.c> AUTH", SMTP_EXT_ALL, SMTP_ERR_PARAM_VALUE, 501},
	    {"<a@b.c> AUTH=a+zz", SMTP_EXT_ALL, SMTP_ERR_PARAM_VALUE, 501},
	    {"<a@b.c> XFOO=1", SMTP_EXT_ALL, SMTP_ERR_PARAM_UNKNOWN, 555},
	    {"<a@b.c> NOTIFY=NEVER", SMTP_EXT_ALL, SMTP_ERR_PARAM_UNKNOWN, 555},
	    {"<a@b.c> RET=FULL", SMTP_EXT_ALL & ~SMTP_EXT_DSN, SMTP_ERR_PARAM_UNKNOWN, 555},
	    {"<a@b.c> SIZE=1", 0, SMTP_ERR_PARAM_UNKNOWN, 555},
	    {"<a@b.c> BODY=7BIT", SMTP_EXT_SIZE, SMTP_ERR_PARAM_UNKNOWN, 555},
	    {"<a@b.c> AUTH=<>", SMTP_EXT_SIZE, SMTP_ERR_PARAM_UNKNOWN, 555},
	    {"<a@b.c> SIZE=1 SIZE=1", SMTP_EXT_ALL, SMTP_ERR_PARAM_DUPLICATE, 501},
	    {"<a@b.c> SIZE=1=", SMTP_EXT_ALL, SMTP_ERR_PARAM_SYNTAX, 501},
	    {"<a@b.c>SIZE=1", SMTP_EXT_ALL, SMTP_ERR_PATH_SYNTAX, 501},
	    {"a@b.c", SMTP_EXT_ALL, SMTP_ERR_PATH_SYNTAX, 501},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		size_t n = strlen(bad[i].arg);
		char *c = dup_exact(bad[i].arg, n);
		if (smtp_mail_parse(c, n, bad[i].ext, &m, &err) != -1)
			fail_msg("accepted MAIL %s", bad[i].arg);
		if (err.code != bad[i].code || err.reply != bad[i].reply)
			fail_msg("MAIL %s: %d %d %s", bad[i].arg, err.code, err.reply, err.text);
		free(c);
	}
	/* Sender errors use 5.1.7. */
	assert_int_equal(smtp_mail_parse(S("a@b.c"), SMTP_EXT_ALL, &m, &err), -1);
	assert_string_equal(err.enhanced, "5.1.7");

	/* ENVID: 100 octets, not 101. */
	char arg[300];
	int n = snprintf(arg, sizeof(arg), "<a@b.c> ENVID=%0100d", 0);
	assert_int_equal(smtp_mail_parse(arg, (size_t)n, SMTP_EXT_ALL, &m, &err), 0);
	assert_int_equal(strlen(m.envid), 100);
	n = snprintf(arg, sizeof(arg), "<a@b.c> ENVID=%0101d", 0);
	assert_int_equal(smtp_mail_parse(arg, (size_t)n, SMTP_EXT_ALL, &m, &err), -1);
	assert_int_equal(err.code, SMTP_ERR_PARAM_VALUE);
}

static void
test_rcpt_parse(void **state)
{
	struct smtp_rcpt r;
	struct smtp_error err;

	(void)state;
	assert_int_equal(smtp_rcpt_parse(S("<Joe@EXAMPLE.com>"), SMTP_EXT_ALL, 0, &r, &err), 0);
	assert_string_equal(r.to.addr, "Joe@example.com");
	assert_int_equal(r.notify, 0);
	assert_int_equal(r.has_orcpt, 0);
	assert_int_equal(smtp_rcpt_parse(S("<postmaster>"), SMTP_EXT_ALL, 0, &r, &err), 0);
	assert_string_equal(r.to.addr, "postmaster");
	assert_int_equal(smtp_rcpt_parse(S("<a@b.c> NOTIFY=FAILURE,DELAY ORCPT=rfc822;a+2Bx@b.c"),
					 SMTP_EXT_ALL, 0, &r, &err),
			 0);
	assert_int_equal(r.notify, SMTP_NOTIFY_FAILURE | SMTP_NOTIFY_DELAY);
	assert_int_equal(r.has_orcpt, 1);
	assert_string_equal(r.orcpt_type, "rfc822");
	assert_string_equal(r.orcpt, "a+2Bx@b.c");

	/* UTF-8 needs SMTPUTF8 on MAIL. */
	assert_int_equal(smtp_rcpt_parse(S("<\xc3\xa9@x.y>"), SMTP_EXT_ALL, 1, &r, &err), 0);
	assert_int_equal(r.to.has_utf8, 1);
	assert_int_equal(smtp_rcpt_parse(S("<\xc3\xa9@x.y>"), SMTP_EXT_ALL, 0, &r, &err), -1);
	assert_int_equal(err.code, SMTP_ERR_PATH_UTF8);
	assert_string_equal(err.enhanced, "5.6.7");
	assert_int_equal(
	    smtp_rcpt_parse(S("<a@b.c> ORCPT=utf-8;\xc3\xa9@x.y"), SMTP_EXT_ALL, 1, &r, &err), 0);
	assert_string_equal(r.orcpt_type, "utf-8");

	/*
	 * RFC 6533 3: in a utf-8 ORCPT a '\\' only starts "\\x{HEXPOINT}", a
	 * scalar value (what the DSN decodes and a strict next hop takes).
	 */
	static const char *const u8_good[] = {
	    "<a@b.c> ORCPT=utf-8;al\\x{E9}x@\\x{fc}ber.test",
	    "<a@b.c> ORCPT=utf-8;\\x{1F600}@x.y",
	    "<a@b.c> ORCPT=utf-8;\\x{10FFFF}@x.y",
	    "<a@b.c> ORCPT=utf-8;a+2Bb@x.y",
	};
	static const char *const u8_bad[] = {
	    "<a@b.c> ORCPT=utf-8;a\\x{zz}@x.y",
	    "<a@b.c> ORCPT=utf-8;a\\x{}@x.y",
	    "<a@b.c> ORCPT=utf-8;a\\x{E9@x.y",
	    "<a@b.c> ORCPT=utf-8;a\\x{D800}@x.y",
	    "<a@b.c> ORCPT=utf-8;a\\x{110000}@x.y",
	    "<a@b.c> ORCPT=utf-8;a\\x{0}@x.y",
	    "<a@b.c> ORCPT=utf-8;a\\x{0000041}@x.y",
	    "<a@b.c> ORCPT=utf-8;a\\y@x.y",
	    "<a@b.c> ORCPT=utf-8;a\\",
	    "<a@b.c> ORCPT=utf-8;a+zz@x.y",
	};
	for (int u8 = 0; u8 <= 1; u8++) {
		for (size_t i = 0; i < sizeof(u8_good) / sizeof(u8_good[0]); i++)
			if (smtp_rcpt_parse(u8_good[i], strlen(u8_good[i]), SMTP_EXT_ALL, u8, &r,
					    &err) != 0)
				fail_msg("refused RCPT %s (smtputf8 %d)", u8_good[i], u8);
		for (size_t i = 0; i < sizeof(u8_bad) / sizeof(u8_bad[0]); i++) {
			if (smtp_rcpt_parse(u8_bad[i], strlen(u8_bad[i]), SMTP_EXT_ALL, u8, &r,
					    &err) != -1)
				fail_msg("accepted RCPT %s (smtputf8 %d)", u8_bad[i], u8);
			assert_int_equal(err.code, SMTP_ERR_PARAM_VALUE);
		}
	}

	static const struct {
		const char *arg;
		unsigned ext;
		enum smtp_err code;
	} bad[] = {
	    {"<>", SMTP_EXT_ALL, SMTP_ERR_PATH_NULL},
	    {"<a@b.c> NOTIFY=NEVER,DELAY", SMTP_EXT_ALL, SMTP_ERR_PARAM_VALUE},
	    {"<a@b.c> NOTIFY", SMTP_EXT_ALL, SMTP_ERR_PARAM_VALUE},
	    {"<a@b.c> ORCPT", SMTP_EXT_ALL, SMTP_ERR_PARAM_VALUE},
	    {"<a@b.c> ORCPT=rfc822", SMTP_EXT_ALL, SMTP_ERR_PARAM_VALUE},
	    {"<a@b.c> ORCPT=rfc822;", SMTP_EXT_ALL, SMTP_ERR_PARAM_VALUE},
	    {"<a@b.c> ORCPT=;a@b.c", SMTP_EXT_ALL, SMTP_ERR_PARAM_VALUE},
	    {"<a@b.c> ORCPT=rfc822;a+0Ab", SMTP_EXT_ALL, SMTP_ERR_PARAM_VALUE},
	    {"<a@b.c> ORCPT=rf(c;a@b.c", SMTP_EXT_ALL, SMTP_ERR_PARAM_VALUE},
	    {"<a@b.c> ORCPT=rfc822;\xc3\xa9@x.y", SMTP_EXT_ALL, SMTP_ERR_PARAM_VALUE},
	    {"<a@b.c> ORCPT=utf-8;\xc3\xa9@x.y", SMTP_EXT_ALL, SMTP_ERR_PARAM_VALUE},
	    {"<a@b.c> ORCPT=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa;x", SMTP_EXT_ALL,
	     SMTP_ERR_PARAM_VALUE},
	    {"<a@b.c> NOTIFY=NEVER", SMTP_EXT_ALL & ~SMTP_EXT_DSN, SMTP_ERR_PARAM_UNKNOWN},
	    {"<a@b.c> SIZE=1", SMTP_EXT_ALL, SMTP_ERR_PARAM_UNKNOWN},
	    {"<a@b.c> NOTIFY=NEVER NOTIFY=NEVER", SMTP_EXT_ALL, SMTP_ERR_PARAM_DUPLICATE},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		size_t n = strlen(bad[i].arg);
		char *c = dup_exact(bad[i].arg, n);
		if (smtp_rcpt_parse(c, n, bad[i].ext, 0, &r, &err) != -1)
			fail_msg("accepted RCPT %s", bad[i].arg);
		if (err.code != bad[i].code)
			fail_msg("RCPT %s: %d %s", bad[i].arg, err.code, err.text);
		free(c);
	}

	/* ORCPT: 500 octets of value, not 501. */
	char arg[700];
	int n = snprintf(arg, sizeof(arg), "<a@b.c> ORCPT=rfc822;%0493d", 0);
	assert_int_equal(smtp_rcpt_parse(arg, (size_t)n, SMTP_EXT_ALL, 0, &r, &err), 0);
	assert_int_equal(strlen(r.orcpt), 493);
	n = snprintf(arg, sizeof(arg), "<a@b.c> ORCPT=rfc822;%0494d", 0);
	assert_int_equal(smtp_rcpt_parse(arg, (size_t)n, SMTP_EXT_ALL, 0, &r, &err), -1);
}

/* ------------------------------------------------------------------ */
/* DATA reader */

struct data_result {
	int ret;
	size_t consumed;
	struct buf out;
	unsigned errors;
	uint64_t size;
	uint64_t header_len;
	uint64_t header_lines;
	int header_done;
	int has_8bit;
	int has_nul;
};

static uint32_t rng_state = 12345;

static uint32_t
rng(void)
{
	rng_state = rng_state * 1103515245u + 12345u;
	return rng_state >> 8;
}

/*
 * Feed in[0..n) in chunks: chunk 0 = all at once, 1 = one byte at a time,
 * otherwise random sizes from 1 to chunk. Stops at the end of data, like a
 * session would.
 */
static void
data_run(const char *in, size_t n, size_t max, enum smtp_data_mode mode, size_t chunk,
	 struct data_result *res)
{
	struct smtp_data_reader r;

	memset(res, 0, sizeof(*res));
	buf_init(&res->out, max);
	smtp_data_reader_init(&r, &res->out, mode);
	size_t off = 0;
	int ret = 0;
	while (off < n) {
		size_t k = n - off;
		if (chunk == 1)
			k = 1;
		else if (chunk > 1 && k > 1)
			k = 1 + rng() % (chunk < k ? chunk : k);
		char *c = dup_exact(in + off, k);
		size_t used = 0;
		ret = smtp_data_feed(&r, c, k, &used);
		free(c);
		assert_true(used <= k);
		off += used;
		if (ret == 1)
			break;
		assert_int_equal(used, k);
	}
	if (mode == SMTP_DATA_MODE_BDAT)
		smtp_data_finish(&r);
	res->ret = ret;
	res->consumed = off;
	res->errors = r.errors;
	res->size = r.size;
	res->header_len = r.header_len;
	res->header_lines = r.header_lines;
	res->header_done = r.header_done;
	res->has_8bit = r.has_8bit;
	res->has_nul = r.has_nul;
}

static void
data_result_equal(const struct data_result *a, const struct data_result *b)
{
	assert_int_equal(a->ret, b->ret);
	assert_int_equal(a->consumed, b->consumed);
	assert_int_equal(a->errors, b->errors);
	assert_true(a->size == b->size);
	assert_true(a->header_len == b->header_len);
	assert_true(a->header_lines == b->header_lines);
	assert_int_equal(a->header_done, b->header_done);
	assert_int_equal(a->has_8bit, b->has_8bit);
	assert_int_equal(a->has_nul, b->has_nul);
	assert_int_equal(a->out.len, b->out.len);
	if (a->out.len > 0)
		assert_memory_equal(a->out.data, b->out.data, a->out.len);
}

/* Run whole, byte by byte and in random chunks; all must agree. Returns the whole run. */
static void
data_all(const char *in, size_t n, size_t max, enum smtp_data_mode mode, struct data_result *res)
{
	struct data_result other;

	data_run(in, n, max, mode, 0, res);
	data_run(in, n, max, mode, 1, &other);
	data_result_equal(res, &other);
	buf_free(&other.out);
	for (size_t chunk = 2; chunk < 40; chunk += 3) {
		for (int rep = 0; rep < 4; rep++) {
			data_run(in, n, max, mode, chunk, &other);
			data_result_equal(res, &other);
			buf_free(&other.out);
		}
	}
}

static void
assert_data(const char *in, size_t n, const char *want, size_t want_len, unsigned errors)
{
	struct data_result res;

	data_all(in, n, 0, SMTP_DATA_MODE_DATA, &res);
	assert_int_equal(res.ret, 1);
	assert_int_equal(res.errors, errors);
	assert_int_equal(res.out.len, want_len);
	if (want_len > 0)
		assert_memory_equal(res.out.data, want, want_len);
	assert_true(res.size == want_len);
	buf_free(&res.out);
}

static void
test_data_basic(void **state)
{
	static const char msg[] = "From: a@b.c\r\n"
				  "Subject: hi\r\n"
				  " folded\r\n"
				  "\r\n"
				  "Body line 1\r\n"
				  "..leading dot\r\n"
				  ".single dot\r\n"
				  "..\r\n"
				  "end\r\n"
				  ".\r\n";
	static const char want[] = "From: a@b.c\r\n"
				   "Subject: hi\r\n"
				   " folded\r\n"
				   "\r\n"
				   "Body line 1\r\n"
				   ".leading dot\r\n"
				   "single dot\r\n"
				   ".\r\n"
				   "end\r\n";
	struct data_result res;

	(void)state;
	data_all(S(msg), 0, SMTP_DATA_MODE_DATA, &res);
	assert_int_equal(res.ret, 1);
	assert_int_equal(res.consumed, sizeof(msg) - 1);
	assert_int_equal(res.errors, 0);
	assert_int_equal(res.out.len, sizeof(want) - 1);
	assert_memory_equal(res.out.data, want, sizeof(want) - 1);
	assert_true(res.size == sizeof(want) - 1);
	assert_int_equal(res.header_done, 1);
	assert_true(res.header_lines == 3);
	assert_true(res.header_len == strlen("From: a@b.c\r\nSubject: hi\r\n folded\r\n"));
	assert_int_equal(res.has_8bit, 0);
	assert_int_equal(res.has_nul, 0);
	buf_free(&res.out);

	/* The empty message. */
	assert_data(S(".\r\n"), "", 0, 0);
	data_all(S(".\r\n"), 0, SMTP_DATA_MODE_DATA, &res);
	assert_true(res.header_len == 0);
	assert_int_equal(res.header_done, 0);
	buf_free(&res.out);
	/* Only an empty line: the header is empty and done. */
	data_all(S("\r\n.\r\n"), 0, SMTP_DATA_MODE_DATA, &res);
	assert_int_equal(res.header_done, 1);
	assert_true(res.header_len == 0);
	assert_true(res.header_lines == 0);
	assert_int_equal(res.out.len, 2);
	buf_free(&res.out);
	/* No empty line: all of it is header. */
	data_all(S("A: 1\r\nB: 2\r\n.\r\n"), 0, SMTP_DATA_MODE_DATA, &res);
	assert_int_equal(res.header_done, 0);
	assert_true(res.header_len == 12);
	assert_true(res.header_lines == 2);
	buf_free(&res.out);

	assert_data(S("..\r\n.\r\n"), S(".\r\n"), 0);
	assert_data(S("...\r\n.\r\n"), S("..\r\n"), 0);
	assert_data(S("a.\r\n.\r\n"), S("a.\r\n"), 0);
	assert_data(S("a\r\n. \r\n.\r\n"), S("a\r\n \r\n"), 0);
	assert_data(S("a\r\n.x.\r\n.\r\n"), S("a\r\nx.\r\n"), 0);

	/* 8-bit and NUL are recorded, not errors. */
	data_all(S("caf\xc3\xa9\r\n.\r\n"), 0, SMTP_DATA_MODE_DATA, &res);
	assert_int_equal(res.has_8bit, 1);
	assert_int_equal(res.errors, 0);
	buf_free(&res.out);
	data_all(S("a\0b\r\n.\r\n"), 0, SMTP_DATA_MODE_DATA, &res);
	assert_int_equal(res.has_nul, 1);
	assert_int_equal(res.out.len, 5);
	buf_free(&res.out);
}

static void
test_data_pipelined(void **state)
{
	static const char in[] = "Subject: x\r\n\r\nhello\r\n.\r\nQUIT\r\n";
	struct data_result res;
	struct smtp_data_reader r;
	struct buf out = BUF_INIT(0);
	size_t used;

	(void)state;
	data_all(S(in), 0, SMTP_DATA_MODE_DATA, &res);
	assert_int_equal(res.ret, 1);
	assert_int_equal(res.consumed, sizeof(in) - 1 - 6);
	assert_memory_equal(in + res.consumed, "QUIT\r\n", 6);
	buf_free(&res.out);

	/* Later feeds consume nothing and still say done. */
	smtp_data_reader_init(&r, &out, SMTP_DATA_MODE_DATA);
	assert_int_equal(smtp_data_feed(&r, S(".\r\nMAIL FROM:<>\r\n"), &used), 1);
	assert_int_equal(used, 3);
	assert_int_equal(r.done, 1);
	assert_int_equal(smtp_data_feed(&r, S("MAIL FROM:<>\r\n"), &used), 1);
	assert_int_equal(used, 0);
	assert_int_equal(out.len, 0);
	/* An empty feed is fine. */
	smtp_data_reader_init(&r, &out, SMTP_DATA_MODE_DATA);
	assert_int_equal(smtp_data_feed(&r, "", 0, &used), 0);
	assert_int_equal(used, 0);
	buf_free(&out);
}

/*
 * SMTP smuggling: none of these may end the data. Each is followed by a
 * smuggled command and then a real end, which must be the one found.
 */
static void
test_data_smuggling(void **state)
{
	static const struct {
		const char *in;
		unsigned errors;
		size_t len; /* 0: strlen */
	} v[] = {
	    {"a\n.\nMAIL FROM:<x@y>\r\n", SMTP_DATA_ERR_BARE_LF, 0},
	    {"a\r.\rMAIL FROM:<x@y>\r\n", SMTP_DATA_ERR_BARE_CR, 0},
	    {"a\n.\r\nMAIL FROM:<x@y>\r\n", SMTP_DATA_ERR_BARE_LF, 0},
	    {"a\r\n.\nMAIL FROM:<x@y>\r\n", SMTP_DATA_ERR_BARE_LF, 0},
	    {"a\r.\r\nMAIL FROM:<x@y>\r\n", SMTP_DATA_ERR_BARE_CR, 0},
	    {"a\r\n.\rMAIL FROM:<x@y>\r\n", SMTP_DATA_ERR_BARE_CR, 0},
	    {"a\r\n.\r\rMAIL FROM:<x@y>\r\n", SMTP_DATA_ERR_BARE_CR, 0},
	    {".\nMAIL FROM:<x@y>\r\n", SMTP_DATA_ERR_BARE_LF, 0},
	    {"\n.\r\nMAIL FROM:<x@y>\r\n", SMTP_DATA_ERR_BARE_LF, 0},
	    {"\r.\r\nMAIL FROM:<x@y>\r\n", SMTP_DATA_ERR_BARE_CR, 0},
	    {"a\r\n\n.\r\nMAIL FROM:<x@y>\r\n", SMTP_DATA_ERR_BARE_LF, 0},
	    {"a\r\r\n\n.\r\n\rMAIL FROM:<x@y>\r\n", SMTP_DATA_ERR_BARE_LF | SMTP_DATA_ERR_BARE_CR,
	     0},
	    {"a\n\r.\r\nMAIL FROM:<x@y>\r\n", SMTP_DATA_ERR_BARE_LF | SMTP_DATA_ERR_BARE_CR, 0},
	    {"a\r\n\0.\r\nMAIL FROM:<x@y>\r\n", 0, 24},
	    {"a\r\n .\r\nMAIL FROM:<x@y>\r\n", 0, 0},
	    {"a\r\n..\r\nMAIL FROM:<x@y>\r\n", 0, 0},
	};
	static const char tail[] = "\r\n.\r\nRSET\r\n";

	(void)state;
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		char in[200];
		size_t n = v[i].len ? v[i].len : strlen(v[i].in);
		memcpy(in, v[i].in, n);
		memcpy(in + n, tail, sizeof(tail) - 1);
		size_t total = n + sizeof(tail) - 1;
		struct data_result res;
		data_all(in, total, 0, SMTP_DATA_MODE_DATA, &res);
		if (res.ret != 1 || res.consumed != total - 6)
			fail_msg("variant %zu: ret %d consumed %zu of %zu", i, res.ret,
				 res.consumed, total);
		if (res.errors != v[i].errors)
			fail_msg("variant %zu: errors %#x want %#x", i, res.errors, v[i].errors);
		/* The smuggled command is inside the message. */
		assert_non_null(memmem(res.out.data, res.out.len, "MAIL FROM:<x@y>", 15));
		struct smtp_data_reader r = {.errors = res.errors};
		struct smtp_error err;
		assert_int_equal(smtp_data_error(&r, &err), v[i].errors ? -1 : 0);
		buf_free(&res.out);
	}

	/* Without the real end, a smuggling variant leaves the reader waiting. */
	struct data_result res;
	data_all(S("a\n.\n"), 0, SMTP_DATA_MODE_DATA, &res);
	assert_int_equal(res.ret, 0);
	assert_int_equal(res.errors, SMTP_DATA_ERR_BARE_LF);
	buf_free(&res.out);
	data_all(S("a\r\n.\n"), 0, SMTP_DATA_MODE_DATA, &res);
	assert_int_equal(res.ret, 0);
	buf_free(&res.out);
	data_all(S("a\r.\r"), 0, SMTP_DATA_MODE_DATA, &res);
	assert_int_equal(res.ret, 0);
	buf_free(&res.out);
	data_all(S("a\n.\r\n"), 0, SMTP_DATA_MODE_DATA, &res);
	assert_int_equal(res.ret, 0);
	buf_free(&res.out);

	/* The bytes of a bare-LF line are kept as content (the message is refused anyway). */
	assert_data(S("a\nb\r\n.\r\n"), S("a\nb\r\n"), SMTP_DATA_ERR_BARE_LF);
	assert_data(S("a\rb\r\n.\r\n"), S("a\rb\r\n"), SMTP_DATA_ERR_BARE_CR);
	assert_data(S("a\r\n.\rb\r\n.\r\n"), S("a\r\n\rb\r\n"), SMTP_DATA_ERR_BARE_CR);
	assert_data(S("a\r\r\n.\r\n"), S("a\r\r\n"), SMTP_DATA_ERR_BARE_CR);
}

static void
test_data_line_length(void **state)
{
	char in[2100];
	struct data_result res;

	(void)state;
	/* 998 + CRLF = 1000: fine. */
	memset(in, 'x', 998);
	memcpy(in + 998, "\r\n.\r\n", 5);
	data_all(in, 1003, 0, SMTP_DATA_MODE_DATA, &res);
	assert_int_equal(res.errors, 0);
	assert_int_equal(res.out.len, 1000);
	buf_free(&res.out);
	/* A stuffed dot does not count. */
	in[0] = '.';
	memset(in + 1, 'x', 998);
	memcpy(in + 999, "\r\n.\r\n", 5);
	data_all(in, 1004, 0, SMTP_DATA_MODE_DATA, &res);
	assert_int_equal(res.errors, 0);
	assert_int_equal(res.out.len, 1000);
	buf_free(&res.out);
	/* 999 + CRLF: too long. */
	memset(in, 'x', 999);
	memcpy(in + 999, "\r\n.\r\n", 5);
	data_all(in, 1004, 0, SMTP_DATA_MODE_DATA, &res);
	assert_int_equal(res.ret, 1);
	assert_int_equal(res.errors, SMTP_DATA_ERR_LINE_TOO_LONG);
	assert_int_equal(res.out.len, 1001);
	struct smtp_error err;
	struct smtp_data_reader r = {.errors = res.errors};
	assert_int_equal(smtp_data_error(&r, &err), -1);
	assert_int_equal(err.code, SMTP_ERR_DATA_LINE_TOO_LONG);
	buf_free(&res.out);
	/* Two lines of 998 each are fine: the count restarts at CRLF. */
	memset(in, 'y', 998);
	memcpy(in + 998, "\r\n", 2);
	memset(in + 1000, 'z', 998);
	memcpy(in + 1998, "\r\n.\r\n", 5);
	data_all(in, 2003, 0, SMTP_DATA_MODE_DATA, &res);
	assert_int_equal(res.errors, 0);
	buf_free(&res.out);
	/* A bare LF does not restart it. */
	in[500] = '\n';
	memcpy(in + 998, "\nz", 2);
	data_all(in, 2003, 0, SMTP_DATA_MODE_DATA, &res);
	assert_int_equal(res.errors, SMTP_DATA_ERR_BARE_LF | SMTP_DATA_ERR_LINE_TOO_LONG);
	buf_free(&res.out);
}

static void
test_data_size_limit(void **state)
{
	static const char in[] = "0123456789\r\n.\r\nNOOP\r\n";
	struct data_result res;

	(void)state;
	/* Exactly the limit: the message is 12 octets. */
	data_all(S(in), 12, SMTP_DATA_MODE_DATA, &res);
	assert_int_equal(res.ret, 1);
	assert_int_equal(res.errors, 0);
	assert_int_equal(res.out.len, 12);
	assert_int_equal(res.consumed, 15);
	buf_free(&res.out);
	/* One over: flagged, the output keeps what fits, reading goes on to the end. */
	data_all(S(in), 11, SMTP_DATA_MODE_DATA, &res);
	assert_int_equal(res.ret, 1);
	assert_int_equal(res.consumed, 15);
	assert_int_equal(res.errors, SMTP_DATA_ERR_TOO_BIG);
	assert_int_equal(res.out.len, 11);
	assert_memory_equal(res.out.data, "0123456789\r", 11);
	assert_true(res.size == 12);
	struct smtp_error err;
	struct smtp_data_reader r = {.errors = res.errors | SMTP_DATA_ERR_BARE_LF};
	assert_int_equal(smtp_data_error(&r, &err), -1);
	assert_int_equal(err.code, SMTP_ERR_DATA_TOO_BIG);
	assert_int_equal(err.reply, 552);
	assert_string_equal(err.enhanced, "5.3.4");
	buf_free(&res.out);

	/* Far over: the size still counts every octet. */
	char big[5000];
	for (size_t i = 0; i < 4000; i += 100) {
		memset(big + i, 'm', 98);
		memcpy(big + i + 98, "\r\n", 2);
	}
	memcpy(big + 4000, ".\r\n", 3);
	data_all(big, 4003, 100, SMTP_DATA_MODE_DATA, &res);
	assert_int_equal(res.ret, 1);
	assert_int_equal(res.consumed, 4003);
	assert_int_equal(res.errors, SMTP_DATA_ERR_TOO_BIG);
	assert_true(res.size == 4000);
	assert_int_equal(res.out.len, 100);
	buf_free(&res.out);

	/* The limit counts what was in the buffer before. */
	struct buf out = BUF_INIT(14);
	size_t used;
	buf_puts(&out, "X: y\r\n");
	smtp_data_reader_init(&r, &out, SMTP_DATA_MODE_DATA);
	assert_int_equal(smtp_data_feed(&r, S("12345678\r\n.\r\n"), &used), 1);
	assert_int_equal(r.errors, SMTP_DATA_ERR_TOO_BIG);
	assert_int_equal(out.len, 14);
	buf_free(&out);
}

static void
test_data_errors_reply(void **state)
{
	struct smtp_data_reader r;
	struct smtp_error err;

	(void)state;
	memset(&r, 0, sizeof(r));
	assert_int_equal(smtp_data_error(&r, &err), 0);
	r.errors = SMTP_DATA_ERR_BARE_CR | SMTP_DATA_ERR_LINE_TOO_LONG;
	assert_int_equal(smtp_data_error(&r, &err), -1);
	assert_int_equal(err.code, SMTP_ERR_DATA_BARE_CR);
	assert_int_equal(err.reply, 550);
	r.errors |= SMTP_DATA_ERR_BARE_LF;
	assert_int_equal(smtp_data_error(&r, &err), -1);
	assert_int_equal(err.code, SMTP_ERR_DATA_BARE_LF);
	assert_non_null(strstr(err.text, "bare LF"));
}

/* Random messages: every chunking gives the same result. */
static void
test_data_random(void **state)
{
	static const char alphabet[] = "ab.\r\n\r\n..\r\n";
	char in[300];
	struct data_result res;

	(void)state;
	for (int iter = 0; iter < 300; iter++) {
		size_t n = 1 + rng() % sizeof(in);
		for (size_t i = 0; i < n; i++)
			in[i] = alphabet[rng() % (sizeof(alphabet) - 1)];
		data_all(in, n, iter % 3 == 0 ? 20 : 0, SMTP_DATA_MODE_DATA, &res);
		buf_free(&res.out);
		data_all(in, n, iter % 3 == 0 ? 20 : 0, SMTP_DATA_MODE_BDAT, &res);
		buf_free(&res.out);
	}
}

static void
test_bdat(void **state)
{
	struct smtp_data_reader r;
	struct buf out = BUF_INIT(0);
	size_t used;

	(void)state;
	/* Dots are not special, nothing ends the data, CR|LF across chunks is fine. */
	smtp_data_reader_init(&r, &out, SMTP_DATA_MODE_BDAT);
	assert_int_equal(smtp_data_feed(&r, S("A: 1\r"), &used), 0);
	assert_int_equal(used, 5);
	assert_int_equal(smtp_data_feed(&r, S("\n\r\n.\r\n..x\r"), &used), 0);
	assert_int_equal(smtp_data_feed(&r, S("\n"), &used), 0);
	smtp_data_finish(&r);
	assert_int_equal(r.done, 1);
	assert_int_equal(r.errors, 0);
	assert_string_equal(buf_str(&out), "A: 1\r\n\r\n.\r\n..x\r\n");
	assert_int_equal(r.header_done, 1);
	assert_true(r.header_len == 6);
	assert_int_equal(smtp_data_feed(&r, S("more"), &used), 1);
	assert_int_equal(used, 0);

	/* A CR at a chunk's end followed by something else is bare. */
	buf_reset(&out);
	smtp_data_reader_init(&r, &out, SMTP_DATA_MODE_BDAT);
	smtp_data_feed(&r, S("a\r"), &used);
	assert_int_equal(r.errors, 0);
	smtp_data_feed(&r, S("b\r\n"), &used);
	smtp_data_finish(&r);
	assert_int_equal(r.errors, SMTP_DATA_ERR_BARE_CR);
	assert_string_equal(buf_str(&out), "a\rb\r\n");

	/* A trailing CR at the LAST chunk is bare. */
	buf_reset(&out);
	smtp_data_reader_init(&r, &out, SMTP_DATA_MODE_BDAT);
	smtp_data_feed(&r, S("a\r\nb\r"), &used);
	assert_int_equal(r.errors, 0);
	smtp_data_finish(&r);
	assert_int_equal(r.errors, SMTP_DATA_ERR_BARE_CR);
	assert_string_equal(buf_str(&out), "a\r\nb\r");
	smtp_data_finish(&r); /* idempotent */
	assert_string_equal(buf_str(&out), "a\r\nb\r");

	/* A bare LF at the start of a chunk after a complete line. */
	buf_reset(&out);
	smtp_data_reader_init(&r, &out, SMTP_DATA_MODE_BDAT);
	smtp_data_feed(&r, S("a\r\n"), &used);
	smtp_data_feed(&r, S("\nb"), &used);
	smtp_data_finish(&r);
	assert_int_equal(r.errors, SMTP_DATA_ERR_BARE_LF);
	assert_true(r.line_len == 2);

	/* Line length across chunks. */
	char chunk[600];
	memset(chunk, 'q', sizeof(chunk));
	buf_reset(&out);
	smtp_data_reader_init(&r, &out, SMTP_DATA_MODE_BDAT);
	smtp_data_feed(&r, chunk, 500, &used);
	smtp_data_feed(&r, chunk, 498, &used);
	smtp_data_feed(&r, S("\r\n"), &used);
	assert_int_equal(r.errors, 0);
	smtp_data_feed(&r, chunk, 500, &used);
	smtp_data_feed(&r, chunk, 499, &used);
	smtp_data_feed(&r, S("\r"), &used);
	smtp_data_feed(&r, S("\n"), &used);
	smtp_data_finish(&r);
	assert_int_equal(r.errors, SMTP_DATA_ERR_LINE_TOO_LONG);
	buf_free(&out);

	/* Too big across chunks. */
	struct buf small = BUF_INIT(10);
	smtp_data_reader_init(&r, &small, SMTP_DATA_MODE_BDAT);
	smtp_data_feed(&r, S("12345\r\n"), &used);
	smtp_data_feed(&r, S("67890\r\n"), &used);
	smtp_data_finish(&r);
	assert_int_equal(r.errors, SMTP_DATA_ERR_TOO_BIG);
	assert_true(r.size == 14);
	assert_int_equal(small.len, 10);
	buf_free(&small);

	/* Whole versus split agree in BDAT mode too. */
	struct data_result res;
	static const char raw[] = "x\r\n.\r\n\n.\r\r.\r\nend";
	data_all(S(raw), 0, SMTP_DATA_MODE_BDAT, &res);
	assert_int_equal(res.ret, 0);
	assert_int_equal(res.errors, SMTP_DATA_ERR_BARE_LF | SMTP_DATA_ERR_BARE_CR);
	assert_int_equal(res.out.len, sizeof(raw) - 1);
	assert_memory_equal(res.out.data, raw, sizeof(raw) - 1);
	buf_free(&res.out);
}

/*
 * Read msg as one BDAT message, whole and one byte at a time, and check
 * where smtp_data_header_end() puts fields added after the message's own.
 */
static void
assert_header_end_own(const char *msg, size_t len, size_t want, size_t want_own)
{
	for (int bytewise = 0; bytewise < 2; bytewise++) {
		struct smtp_data_reader r;
		struct buf out = BUF_INIT(0);
		size_t used, own;

		smtp_data_reader_init(&r, &out, SMTP_DATA_MODE_BDAT);
		if (bytewise)
			for (size_t i = 0; i < len; i++)
				smtp_data_feed(&r, msg + i, 1, &used);
		else
			smtp_data_feed(&r, msg, len, &used);
		smtp_data_finish(&r);
		assert_int_equal(r.errors, 0);
		assert_int_equal(out.len, len);
		assert_int_equal(smtp_data_header_end(out.data ? out.data : "", out.len, &own), want);
		assert_int_equal(own, want_own);
		buf_free(&out);
	}
}

/* The message's own fields end where ours go, unless a last line has no CRLF. */
static void
assert_header_end(const char *msg, size_t len, size_t want)
{
	assert_header_end_own(msg, len, want, want);
}

static void
test_data_header_end(void **state)
{
	(void)state;
	/* Before the empty line, after every field, trace fields included. */
	assert_header_end(S("Received: a\r\nReceived: b\r\nSubject: s\r\n\r\nbody\r\n"), 38);
	/* A folded last field: after its last line. */
	assert_header_end(S("Subject: s\r\nX-Long: a\r\n\tb\r\n c\r\n\r\nbody\r\n"), 31);
	/* Header only: at the end. */
	assert_header_end(S("From: a@b.c\r\nSubject: s\r\n"), 25);
	assert_header_end(S("Subject: s\r\n folded\r\n"), 21);
	/* The last line has no CRLF: before it, or before the field it continues. */
	assert_header_end_own(S("From: a@b.c\r\nSubject: s"), 13, 23);
	assert_header_end_own(S("From: a@b.c\r\nSubject: s\r\n x\r\n\ty"), 13, 31);
	assert_header_end_own(S("Subject: s\r\n x"), 0, 14);
	assert_header_end_own(S("Subject: no CRLF"), 0, 16);
	assert_header_end(S("From: a@b.c\r\nno field"), 13);
	/* Obsolete white space before the colon is still a field. */
	assert_header_end(S("Subject \t: s\r\n\r\nx\r\n"), 14);
	/* No header: empty, an empty first line, a first line that is not a field. */
	assert_header_end(S(""), 0);
	assert_header_end(S("\r\n"), 0);
	assert_header_end(S("\r\nSubject: in the body\r\n"), 0);
	assert_header_end(S(" indented\r\nSubject: s\r\n\r\nx\r\n"), 0);
	assert_header_end(S("\tSubject: s\r\n\r\nx\r\n"), 0);
	assert_header_end(S("plain text\r\nSubject: s\r\n\r\nx\r\n"), 0);
	assert_header_end(S(": no name\r\n\r\nx\r\n"), 0);
	assert_header_end(S("caf\xc3\xa9: s\r\n\r\nx\r\n"), 0);
	/* A line that is no field ends the header: every parser starts the body there. */
	assert_header_end(S("Subject: s\r\nnot a field\r\n\r\nx\r\n"), 12);
	assert_header_end(S("Subject: s\r\n folded\r\nnot a field\r\n\r\nx\r\n"), 21);
	assert_header_end(S("Subject: s\r\n: no name\r\n\r\nx\r\n"), 12);

	/* A bare LF ends no line (the message is refused anyway). */
	struct smtp_data_reader r;
	struct buf out = BUF_INIT(0);
	size_t used;
	smtp_data_reader_init(&r, &out, SMTP_DATA_MODE_BDAT);
	smtp_data_feed(&r, S("A: 1\r\nB: 2\n\nbody\r\n"), &used);
	smtp_data_finish(&r);
	assert_int_equal(r.errors, SMTP_DATA_ERR_BARE_LF);
	size_t own;
	assert_int_equal(smtp_data_header_end(out.data, out.len, &own), out.len);
	assert_int_equal(own, out.len);
	buf_free(&out);
}

/* ------------------------------------------------------------------ */
/* Replies */

static void
test_reply(void **state)
{
	struct buf b = BUF_INIT(0);

	(void)state;
	assert_int_equal(smtp_reply_format(&b, 250, "2.0.0", "OK"), 0);
	assert_string_equal(buf_str(&b), "250 2.0.0 OK\r\n");
	buf_reset(&b);
	assert_int_equal(smtp_reply_format(&b, 354, NULL, "End data with <CR><LF>.<CR><LF>"), 0);
	assert_string_equal(buf_str(&b), "354 End data with <CR><LF>.<CR><LF>\r\n");
	buf_reset(&b);
	assert_int_equal(smtp_reply_format(&b, 550, "5.7.1", "line one\nline two\nline three\n"),
			 0);
	assert_string_equal(buf_str(&b), "550-5.7.1 line one\r\n550-5.7.1 line two\r\n"
					 "550 5.7.1 line three\r\n");
	buf_reset(&b);
	assert_int_equal(smtp_reply_format(&b, 250, NULL, NULL), 0);
	assert_string_equal(buf_str(&b), "250\r\n");
	buf_reset(&b);
	/* An empty AUTH challenge keeps its space (RFC 4954 4). */
	assert_int_equal(smtp_reply_format(&b, 334, NULL, ""), 0);
	assert_string_equal(buf_str(&b), "334 \r\n");
	buf_reset(&b);
	assert_int_equal(smtp_reply_format(&b, 250, "2.0.0", ""), 0);
	assert_string_equal(buf_str(&b), "250 2.0.0\r\n");
	buf_reset(&b);
	assert_int_equal(smtp_reply_format(&b, 221, NULL, "a\n\nb"), 0);
	assert_string_equal(buf_str(&b), "221-a\r\n221-\r\n221 b\r\n");
	buf_reset(&b);
	/* Control and 8-bit bytes never reach the wire. */
	assert_int_equal(smtp_reply_format(&b, 501, "5.1.3", "bad <a\rb\x01\x7f\xc3\xa9>\tok"), 0);
	assert_string_equal(buf_str(&b), "501 5.1.3 bad <a?b??"
					 "??"
					 ">\tok\r\n");
	buf_reset(&b);

	/* Errors leave the buffer as it was. */
	buf_puts(&b, "keep");
	assert_int_equal(smtp_reply_format(&b, 199, NULL, "x"), -1);
	assert_int_equal(smtp_reply_format(&b, 600, NULL, "x"), -1);
	assert_int_equal(smtp_reply_format(&b, 250, "5.0.0", "x"), -1);
	assert_int_equal(smtp_reply_format(&b, 450, "5.0.0", "x"), -1);
	assert_int_equal(smtp_reply_format(&b, 354, "3.0.0", "x"), -1);
	assert_int_equal(smtp_reply_format(&b, 250, "2.0", "x"), -1);
	assert_int_equal(smtp_reply_format(&b, 250, "2.0.0.0", "x"), -1);
	assert_int_equal(smtp_reply_format(&b, 250, "2.1000.0", "x"), -1);
	assert_int_equal(smtp_reply_format(&b, 250, "2..0", "x"), -1);
	assert_int_equal(smtp_reply_format(&b, 250, "2.0.", "x"), -1);
	assert_int_equal(smtp_reply_format(&b, 250, "x.0.0", "x"), -1);
	assert_string_equal(buf_str(&b), "keep");
	assert_int_equal(smtp_reply_format(&b, 250, "2.123.456", "x"), 0);
	assert_string_equal(buf_str(&b), "keep250 2.123.456 x\r\n");
	buf_reset(&b);

	/* 512 octets per line with CRLF: "250 " + 506 + CRLF fits, 507 not. */
	char text[1100];
	memset(text, 't', 506);
	text[506] = '\0';
	assert_int_equal(smtp_reply_format(&b, 250, NULL, text), 0);
	assert_int_equal(b.len, 512);
	buf_reset(&b);
	text[506] = 't';
	text[507] = '\0';
	assert_int_equal(smtp_reply_format(&b, 250, NULL, text), -1);
	assert_int_equal(b.len, 0);
	/* A long second line fails the whole reply. */
	memcpy(text, "ok\n", 3);
	memset(text + 3, 'u', 1000);
	text[1003] = '\0';
	assert_int_equal(smtp_reply_format(&b, 250, "2.0.0", text), -1);
	assert_int_equal(b.len, 0);
	/* A full buffer fails cleanly. */
	struct buf small = BUF_INIT(10);
	assert_int_equal(smtp_reply_format(&small, 250, "2.0.0", "OK"), -1);
	assert_int_equal(small.len, 0);
	buf_free(&small);

	/* EHLO. */
	static const char *const ehlo[] = {"mx.example.org greets you", "PIPELINING",
					   "SIZE 26214400", "8BITMIME", "SMTPUTF8"};
	assert_int_equal(smtp_reply_lines(&b, 250, NULL, ehlo, 5), 0);
	assert_string_equal(buf_str(&b), "250-mx.example.org greets you\r\n250-PIPELINING\r\n"
					 "250-SIZE 26214400\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n");
	buf_reset(&b);
	static const char *const one[] = {"a\nb"};
	assert_int_equal(smtp_reply_lines(&b, 250, "2.0.0", one, 1), 0);
	assert_string_equal(buf_str(&b), "250 2.0.0 a?b\r\n");
	assert_int_equal(smtp_reply_lines(&b, 250, NULL, one, 0), -1);
	assert_int_equal(smtp_reply_lines(&b, 100, NULL, one, 1), -1);
	buf_free(&b);
}

/* ------------------------------------------------------------------ */
/* AUTH */

static void
test_base64(void **state)
{
	static const struct {
		const char *plain;
		const char *b64;
	} v[] = {
	    {"", ""},
	    {"f", "Zg=="},
	    {"fo", "Zm8="},
	    {"foo", "Zm9v"},
	    {"foob", "Zm9vYg=="},
	    {"fooba", "Zm9vYmE="},
	    {"foobar", "Zm9vYmFy"},
	};
	char enc[64];
	unsigned char dec[64];
	size_t n;

	(void)state;
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		size_t pl = strlen(v[i].plain);
		assert_int_equal(smtp_base64_encode(v[i].plain, pl, enc, sizeof(enc)),
				 (int)strlen(v[i].b64));
		assert_string_equal(enc, v[i].b64);
		assert_int_equal(SMTP_BASE64_LEN(pl), strlen(v[i].b64));
		char *c = dup_exact(v[i].b64, strlen(v[i].b64));
		assert_int_equal(smtp_base64_decode(c, strlen(v[i].b64), dec, sizeof(dec), &n), 0);
		free(c);
		assert_int_equal(n, pl);
		assert_memory_equal(dec, v[i].plain, pl);
	}
	/* All byte values round trip. */
	unsigned char all[256];
	char big[400];
	unsigned char back[256];
	for (int k = 0; k < 256; k++)
		all[k] = (unsigned char)k;
	for (size_t len = 0; len <= 256; len += 17) {
		int e = smtp_base64_encode(all, len, big, sizeof(big));
		assert_true(e >= 0);
		assert_int_equal(smtp_base64_decode(big, (size_t)e, back, sizeof(back), &n), 0);
		assert_int_equal(n, len);
		if (len > 0)
			assert_memory_equal(back, all, len);
	}

	static const char *bad[] = {
	    "Zg",
	    "Zg=",
	    "Zg===",
	    "Z===",
	    "====",
	    "Zm9v\r\n",
	    "Zm 9v",
	    "Zm9",
	    "Zg==Zg==",
	    "Z=g=",
	    "Zm=v",
	    "Zh==",
	    "Zm9=",
	    "Zm-v",
	    "Zm_v",
	    "Zm9v=",
	    "\x80\x80\x80\x80",
	    "Zm9vYg==\n",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		size_t bl = strlen(bad[i]);
		char *c = dup_exact(bad[i], bl);
		if (smtp_base64_decode(c, bl, dec, sizeof(dec), &n) != -1)
			fail_msg("accepted base64 %s", bad[i]);
		free(c);
	}
	/* Output too small. */
	assert_int_equal(smtp_base64_decode(S("Zm9vYmFy"), dec, 5, &n), -1);
	assert_int_equal(smtp_base64_decode(S("Zm9vYmFy"), dec, 6, &n), 0);
	assert_int_equal(smtp_base64_encode("foo", 3, enc, 4), -1);
	assert_int_equal(smtp_base64_encode("foo", 3, enc, 5), 4);
}

static void
test_sasl_plain(void **state)
{
	struct smtp_sasl_plain p;
	struct smtp_error err;

	(void)state;
	assert_int_equal(smtp_sasl_plain_parse(S("\0joe\0secret"), &p, &err), 0);
	assert_string_equal(p.authzid, "");
	assert_string_equal(p.authcid, "joe");
	assert_string_equal(p.passwd, "secret");
	smtp_sasl_plain_wipe(&p);
	assert_int_equal(p.passwd[0], 0);
	assert_int_equal(smtp_sasl_plain_parse(S("joe\0joe\0s e c r e t"), &p, &err), 0);
	assert_string_equal(p.authzid, "joe");
	assert_string_equal(p.passwd, "s e c r e t");
	assert_int_equal(smtp_sasl_plain_parse(S("\0j\xc3\xb6rg\0p\xc3\xa4ss"), &p, &err), 0);
	assert_string_equal(p.authcid, "j\xc3\xb6rg");

	/* The same account in another case is the same identity. */
	assert_int_equal(smtp_sasl_plain_parse(S("Joe@X.test\0joe@x.TEST\0pw"), &p, &err), 0);
	assert_int_equal(smtp_sasl_plain_parse(S("admin\0joe\0secret"), &p, &err), -1);
	assert_int_equal(err.code, SMTP_ERR_SASL_AUTHZID);
	assert_int_equal(err.reply, 535);
	assert_int_equal(p.passwd[0], 0);
	assert_int_equal(p.authcid[0], 0);

	static const struct {
		const char *m;
		size_t n;
	} bad[] = {
	    {"", 0},
	    {"joe", 3},
	    {"\0joe", 4},
	    {"\0joe\0", 5},
	    {"\0\0secret", 8},
	    {"\0joe\0sec\0ret", 12},
	    {"\0joe\0secret\0", 12},
	    {"\0j\xc3\0secret", 10},
	    {"\0joe\0s\xff", 7},
	    {"\xc3\0joe\0secret", 12},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char *c = dup_exact(bad[i].m, bad[i].n);
		if (smtp_sasl_plain_parse(c, bad[i].n, &p, &err) != -1)
			fail_msg("accepted PLAIN %zu", i);
		assert_int_equal(err.code, SMTP_ERR_SASL_SYNTAX);
		assert_int_equal(p.passwd[0], 0);
		free(c);
	}

	/* Field limits: 255 fine, 256 not. */
	char msg[800];
	msg[0] = '\0';
	memset(msg + 1, 'u', 255);
	msg[256] = '\0';
	memset(msg + 257, 'p', 255);
	assert_int_equal(smtp_sasl_plain_parse(msg, 512, &p, &err), 0);
	assert_int_equal(strlen(p.authcid), 255);
	assert_int_equal(strlen(p.passwd), 255);
	msg[512] = 'p';
	assert_int_equal(smtp_sasl_plain_parse(msg, 513, &p, &err), -1);
	memset(msg + 1, 'u', 256);
	msg[257] = '\0';
	memset(msg + 258, 'p', 5);
	assert_int_equal(smtp_sasl_plain_parse(msg, 263, &p, &err), -1);

	/* Base64 wrapper. */
	assert_int_equal(smtp_sasl_plain_decode(S("AGpvZQBzZWNyZXQ="), &p, &err), 0);
	assert_string_equal(p.authcid, "joe");
	assert_string_equal(p.passwd, "secret");
	smtp_sasl_plain_wipe(&p);
	assert_int_equal(smtp_sasl_plain_decode(S("AGpvZQBzZWNyZXQ"), &p, &err), -1);
	assert_int_equal(err.code, SMTP_ERR_BASE64);
	assert_int_equal(err.reply, 501);
	assert_int_equal(smtp_sasl_plain_decode(S("="), &p, &err), -1);
	assert_int_equal(smtp_sasl_plain_decode(S(""), &p, &err), -1);
	assert_int_equal(err.code, SMTP_ERR_SASL_SYNTAX);
	/* The largest possible message (3 * 255 + 2 octets) fits; more is refused early. */
	char raw[800];
	memset(raw, 'a', sizeof(raw));
	raw[255] = '\0';
	raw[511] = '\0';
	char b64[1100];
	int e = smtp_base64_encode(raw, 3 * 255 + 2, b64, sizeof(b64));
	assert_true(e > 0);
	assert_int_equal(smtp_sasl_plain_decode(b64, (size_t)e, &p, &err), 0);
	e = smtp_base64_encode(raw, 780, b64, sizeof(b64));
	assert_int_equal(smtp_sasl_plain_decode(b64, (size_t)e, &p, &err), -1);
	assert_int_equal(err.code, SMTP_ERR_SASL_TOOLONG);
	assert_int_equal(err.reply, 500);
	assert_string_equal(err.enhanced, "5.5.6");
}

static void
test_error_set(void **state)
{
	struct smtp_error err;

	(void)state;
	smtp_error_set(&err, SMTP_ERR_PARAM_UNKNOWN);
	assert_int_equal(err.code, SMTP_ERR_PARAM_UNKNOWN);
	assert_int_equal(err.reply, 555);
	assert_string_equal(err.enhanced, "5.5.4");
	smtp_error_set(&err, SMTP_ERR_PATH_UTF8);
	assert_int_equal(err.reply, 553);
	/* Every code has a reply that formats. */
	struct buf b = BUF_INIT(0);
	for (int c = SMTP_ERR_CMD_EMPTY; c <= SMTP_ERR_DATA_LINE_TOO_LONG; c++) {
		smtp_error_set(&err, (enum smtp_err)c);
		assert_non_null(err.text);
		assert_int_equal(smtp_reply_format(&b, err.reply, err.enhanced, err.text), 0);
	}
	buf_free(&b);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_cmd_verbs),	    cmocka_unit_test(test_cmd_bdat_auth),
	    cmocka_unit_test(test_cmd_errors),	    cmocka_unit_test(test_cmd_prefixes),
	    cmocka_unit_test(test_path_basic),	    cmocka_unit_test(test_path_quoted_route),
	    cmocka_unit_test(test_path_domains),    cmocka_unit_test(test_path_utf8),
	    cmocka_unit_test(test_path_limits),	    cmocka_unit_test(test_params),
	    cmocka_unit_test(test_param_values),    cmocka_unit_test(test_xtext),
	    cmocka_unit_test(test_mail_parse),	    cmocka_unit_test(test_rcpt_parse),
	    cmocka_unit_test(test_data_basic),	    cmocka_unit_test(test_data_pipelined),
	    cmocka_unit_test(test_data_smuggling),  cmocka_unit_test(test_data_line_length),
	    cmocka_unit_test(test_data_size_limit), cmocka_unit_test(test_data_errors_reply),
	    cmocka_unit_test(test_data_random),	    cmocka_unit_test(test_bdat),
	    cmocka_unit_test(test_data_header_end), cmocka_unit_test(test_reply),
	    cmocka_unit_test(test_base64),	    cmocka_unit_test(test_sasl_plain),
	    cmocka_unit_test(test_error_set),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
