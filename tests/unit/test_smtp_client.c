/*
 * test_smtp_client — unit tests for the pure parts of the SMTP client: the
 * reply parser (whole, one byte at a time, pipelined replies, every error),
 * the reply summary, the EHLO capability reader and the dot-stuffer; and
 * transcript tests of the session against a scripted server on loopback:
 * what the client must send, what the server answers, what each recipient
 * ends with.
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

#include <arpa/inet.h>
#include <netinet/in.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "core/buf.h"
#include "smtp/smtp_client.h"
#include "smtp/smtp_proto.h"

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

/* ------------------------------------------------------------------ */
/* Transcripts */

/*
 * One step of the scripted server: the line it expects (a prefix), and
 * what it answers then (NULL: nothing yet, the client must go on without
 * waiting: that is how pipelining is checked). "<DATA>" stands for the
 * whole content up to and including the final dot.
 */
struct step {
	const char *expect;
	const char *reply;
};

struct tsrv {
	struct event_base *base;
	struct evconnlistener *l;
	struct bufferevent *bev;
	const struct step *steps;
	size_t nsteps, at;
	int in_data;
	int mismatch;
	struct buf got;
	struct buf data;
	int port;
	/* client side */
	struct smtp_client *cl;
	struct smtp_client_txn *txns;
	size_t ntxns, txn_at;
	int ready, failed, done;
	int txn_events;
	struct buf err_reply; /* smtp_client_error_reply() at FAILED */
};

static void
tsrv_reply(struct tsrv *t, const char *r)
{
	if (r && strcmp(r, "<CLOSE>") == 0) {
		bufferevent_free(t->bev);
		t->bev = NULL;
	} else if (r) {
		bufferevent_write(t->bev, r, strlen(r));
	}
}

static void
tsrv_read(struct bufferevent *bev, void *arg)
{
	struct tsrv *t = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	for (;;) {
		if (t->in_data) {
			struct evbuffer_ptr p = evbuffer_search(in, "\r\n.\r\n", 5, NULL);
			if (p.pos < 0)
				return;
			size_t n = (size_t)p.pos + 5;
			char *d = malloc(n);
			evbuffer_remove(in, d, n);
			buf_append(&t->data, d, n);
			free(d);
			t->in_data = 0;
			tsrv_reply(t, t->steps[t->at++].reply);
			continue;
		}
		size_t n;
		char *line = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF_STRICT);
		if (line == NULL)
			return;
		buf_printf(&t->got, "%s\n", line);
		if (t->at >= t->nsteps ||
		    strncmp(line, t->steps[t->at].expect, strlen(t->steps[t->at].expect)) != 0) {
			fprintf(stderr, "transcript: step %zu: got \"%s\", want \"%s\"\n", t->at,
				line, t->at < t->nsteps ? t->steps[t->at].expect : "(end)");
			t->mismatch = 1;
			free(line);
			event_base_loopbreak(t->base);
			return;
		}
		free(line);
		tsrv_reply(t, t->steps[t->at++].reply);
		if (t->bev == NULL)
			return;
		if (t->at < t->nsteps && strcmp(t->steps[t->at].expect, "<DATA>") == 0)
			t->in_data = 1;
	}
}

static void
tsrv_event(struct bufferevent *bev, short what, void *arg)
{
	struct tsrv *t = arg;
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
		bufferevent_free(t->bev);
		t->bev = NULL;
	}
}

static void
tsrv_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
	struct tsrv *t = arg;
	t->bev = bufferevent_socket_new(t->base, fd, BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(t->bev, tsrv_read, NULL, tsrv_event, t);
	bufferevent_enable(t->bev, EV_READ | EV_WRITE);
	tsrv_reply(t, t->steps[t->at++].reply); /* the greeting */
}

static void
client_cb(struct smtp_client *cl, enum smtp_client_event ev, void *arg)
{
	struct tsrv *t = arg;
	switch (ev) {
	case SMTP_CLIENT_READY:
		t->ready++;
		break;
	case SMTP_CLIENT_TXN_DONE:
		t->txn_events++;
		break;
	case SMTP_CLIENT_FAILED:
		t->failed++;
		buf_reset(&t->err_reply);
		buf_puts(&t->err_reply, smtp_client_error_reply(cl));
		smtp_client_free(&t->cl);
		event_base_loopbreak(t->base);
		return;
	}
	if (t->txn_at < t->ntxns && smtp_client_usable(cl)) {
		smtp_client_send(cl, &t->txns[t->txn_at++]);
		return;
	}
	t->done = 1;
	smtp_client_quit(cl);
}

static void
run_transcript(struct tsrv *t, const struct step *steps, size_t nsteps,
	       struct smtp_client_txn *txns, size_t ntxns)
{
	struct sockaddr_in sin;
	socklen_t sl = sizeof(sin);

	memset(t, 0, sizeof(*t));
	t->base = event_base_new();
	t->steps = steps;
	t->nsteps = nsteps;
	t->txns = txns;
	t->ntxns = ntxns;
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	t->l = evconnlistener_new_bind(t->base, tsrv_accept, t,
				       LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 4,
				       (struct sockaddr *)&sin, sizeof(sin));
	assert_non_null(t->l);
	getsockname(evconnlistener_get_fd(t->l), (struct sockaddr *)&sin, &sl);

	struct smtp_client_params p;
	memset(&p, 0, sizeof(p));
	p.helo = "client.example";
	p.host = "mx.example";
	p.sa = (struct sockaddr *)&sin;
	p.salen = sizeof(sin);
	p.tls = SMTP_CLIENT_TLS_MAY;
	smtp_client_timeouts_default(&p.t);
	p.t.connect = p.t.greeting = p.t.command = p.t.mail = p.t.rcpt = 5;
	p.t.data_init = p.t.data_block = p.t.data_done = 5;
	p.log_id = "test";
	t->cl = smtp_client_new(t->base, &p, client_cb, t);
	struct timeval limit = {10, 0};
	event_base_loopexit(t->base, &limit);
	event_base_dispatch(t->base);
	smtp_client_free(&t->cl);
	if (t->bev)
		bufferevent_free(t->bev);
	evconnlistener_free(t->l);
	event_base_free(t->base);
}

static void
tsrv_free(struct tsrv *t)
{
	buf_free(&t->got);
	buf_free(&t->data);
	buf_free(&t->err_reply);
}

static void
test_transcript_pipelined_dsn_reuse(void **state)
{
	static const struct step steps[] = {
	    {"", "220 mx.example ESMTP\r\n"},
	    {"EHLO client.example",
	     "250-mx.example\r\n250-PIPELINING\r\n250-SIZE 100000\r\n250-8BITMIME\r\n"
	     "250-DSN\r\n250 ENHANCEDSTATUSCODES\r\n"},
	    /* MAIL and both RCPTs arrive before any answer: pipelined. */
	    {"MAIL FROM:<a@client.example> SIZE=11 BODY=8BITMIME RET=HDRS ENVID=e+2B1", NULL},
	    {"RCPT TO:<x@mx.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;x@mx.example", NULL},
	    {"RCPT TO:<y@mx.example>",
	     "250 2.1.0 ok\r\n250 2.1.5 ok\r\n550-5.1.1 no such\r\n550 5.1.1 user\r\n"},
	    {"DATA", "354 go\r\n"},
	    {"<DATA>", "250 2.0.0 queued as A\r\n"},
	    /* The next transaction on the same session starts with RSET. */
	    {"RSET", NULL},
	    {"MAIL FROM:<> SIZE=3", NULL},
	    {"RCPT TO:<z@mx.example>", "250 ok\r\n250 ok\r\n451 4.3.0 later\r\n"},
	    {"QUIT", "221 bye\r\n"},
	};
	struct smtp_client_rcpt r1[] = {
	    {"x@mx.example", "rfc822;x@mx.example", SMTP_NOTIFY_SUCCESS | SMTP_NOTIFY_FAILURE, 0,
	     NULL, 0},
	    {"y@mx.example", NULL, 0, 0, NULL, 0},
	};
	struct smtp_client_rcpt r2[] = {{"z@mx.example", NULL, 0, 0, NULL, 0}};
	struct smtp_client_txn txns[2];
	memset(txns, 0, sizeof(txns));
	txns[0] = (struct smtp_client_txn){"a@client.example", "e+2B1", SMTP_RET_HDRS, 1, 0,
					   ".x\r\n\xc3\xa9\r\n.\r\n", 11, r1, 2, 0};
	txns[1] = (struct smtp_client_txn){"", NULL, 0, 0, 0, "hi\n", 3, r2, 1, 0};
	struct tsrv t;
	run_transcript(&t, steps, sizeof(steps) / sizeof(steps[0]), txns, 2);
	assert_false(t.mismatch);
	assert_int_equal(t.ready, 1);
	assert_int_equal(t.txn_events, 2);
	assert_true(t.done);
	assert_int_equal(t.at, sizeof(steps) / sizeof(steps[0]));
	assert_string_equal(buf_str(&t.data), "..x\r\n\xc3\xa9\r\n..\r\n.\r\n");
	assert_int_equal(r1[0].status, SMTP_RCPT_OK);
	assert_string_equal(r1[0].text, "250 2.0.0 queued as A");
	assert_int_equal(r1[1].status, SMTP_RCPT_PERM);
	assert_string_equal(r1[1].text, "550 5.1.1 no such 5.1.1 user");
	assert_int_equal(r2[0].status, SMTP_RCPT_TEMP);
	assert_string_equal(r2[0].text, "451 4.3.0 later");
	smtp_client_txn_clear(&txns[0]);
	smtp_client_txn_clear(&txns[1]);
	tsrv_free(&t);
}

static void
test_transcript_helo_fallback_no_pipelining(void **state)
{
	static const struct step steps[] = {
	    {"", "220-mx.example\r\n220 old server\r\n"},
	    {"EHLO client.example", "502 5.5.1 what\r\n"},
	    {"HELO client.example", "250 mx.example\r\n"},
	    /* No PIPELINING: one command, one answer. */
	    {"MAIL FROM:<a@client.example>", "250 ok\r\n"},
	    {"RCPT TO:<x@mx.example>", "250 ok\r\n"},
	    {"DATA", "354 go\r\n"},
	    {"<DATA>", "250 ok\r\n"},
	    {"QUIT", "221 bye\r\n"},
	};
	struct smtp_client_rcpt r1[] = {{"x@mx.example", "rfc822;x@mx.example", 2, 0, NULL, 0}};
	struct smtp_client_txn txn = {
	    "a@client.example", "env", SMTP_RET_HDRS, 0, 0, "a\r\n", 3, r1, 1, 0};
	struct tsrv t;
	run_transcript(&t, steps, sizeof(steps) / sizeof(steps[0]), &txn, 1);
	assert_false(t.mismatch);
	assert_int_equal(r1[0].status, SMTP_RCPT_OK);
	assert_int_equal(t.at, sizeof(steps) / sizeof(steps[0]));
	smtp_client_txn_clear(&txn);
	tsrv_free(&t);
}

static void
test_transcript_checks_before_sending(void **state)
{
	/* 8-bit content to a peer without 8BITMIME, then an oversized one: both
	 * refused by the client itself; the session stays usable. */
	static const struct step steps[] = {
	    {"", "220 mx.example ESMTP\r\n"},
	    {"EHLO client.example", "250-mx.example\r\n250 SIZE 10\r\n"},
	    {"QUIT", "221 bye\r\n"},
	};
	struct smtp_client_rcpt r1[] = {{"x@mx.example", NULL, 0, 0, NULL, 0}};
	struct smtp_client_rcpt r2[] = {{"x@mx.example", NULL, 0, 0, NULL, 0}};
	struct smtp_client_txn txns[2] = {
	    {"a@client.example", NULL, 0, 1, 0, "\xff\r\n", 3, r1, 1, 0},
	    {"a@client.example", NULL, 0, 0, 0, "0123456789abcdef\r\n", 18, r2, 1, 0},
	};
	struct tsrv t;
	run_transcript(&t, steps, sizeof(steps) / sizeof(steps[0]), txns, 2);
	assert_false(t.mismatch);
	assert_int_equal(r1[0].status, SMTP_RCPT_PERM);
	assert_non_null(strstr(r1[0].text, "5.6.3"));
	assert_int_equal(r2[0].status, SMTP_RCPT_PERM);
	assert_true(strncmp(r2[0].text, "5.3.4 ", 6) == 0);
	smtp_client_txn_clear(&txns[0]);
	smtp_client_txn_clear(&txns[1]);
	tsrv_free(&t);
}

static void
test_transcript_552_to_rcpt_is_452(void **state)
{
	/* RFC 5321 4.5.3.1.10: 552 to RCPT is "too many recipients", taken
	 * as 452 (temporary, for another transaction); 552 to MAIL is not. */
	static const struct step steps[] = {
	    {"", "220 mx.example ESMTP\r\n"},
	    {"EHLO client.example", "250-mx.example\r\n250 PIPELINING\r\n"},
	    {"MAIL FROM:<a@client.example>", NULL},
	    {"RCPT TO:<x@mx.example>", NULL},
	    {"RCPT TO:<y@mx.example>", NULL},
	    {"RCPT TO:<z@mx.example>",
	     "250 ok\r\n250 ok\r\n552 5.5.3 too many\r\n452 4.5.3 too many\r\n"},
	    {"DATA", "354 go\r\n"},
	    {"<DATA>", "250 ok\r\n"},
	    {"RSET", NULL},
	    {"MAIL FROM:<a@client.example>", NULL},
	    {"RCPT TO:<y@mx.example>", "250 ok\r\n552 5.3.4 too big\r\n250 ok\r\n"},
	    {"QUIT", "221 bye\r\n"},
	};
	struct smtp_client_rcpt r1[] = {{"x@mx.example", NULL, 0, 0, NULL, 0},
					{"y@mx.example", NULL, 0, 0, NULL, 0},
					{"z@mx.example", NULL, 0, 0, NULL, 0}};
	struct smtp_client_rcpt r2[] = {{"y@mx.example", NULL, 0, 0, NULL, 0}};
	struct smtp_client_txn txns[2] = {
	    {"a@client.example", NULL, 0, 0, 0, "a\r\n", 3, r1, 3, 0},
	    {"a@client.example", NULL, 0, 0, 0, "a\r\n", 3, r2, 1, 0},
	};
	struct tsrv t;
	run_transcript(&t, steps, sizeof(steps) / sizeof(steps[0]), txns, 2);
	assert_false(t.mismatch);
	assert_int_equal(r1[0].status, SMTP_RCPT_OK);
	assert_int_equal(r1[0].over_limit, 0);
	assert_int_equal(r1[1].status, SMTP_RCPT_TEMP);
	assert_int_equal(r1[1].over_limit, 1);
	assert_string_equal(r1[1].text, "552 5.5.3 too many");
	assert_int_equal(r1[2].status, SMTP_RCPT_TEMP);
	assert_int_equal(r1[2].over_limit, 1);
	assert_int_equal(r2[0].status, SMTP_RCPT_PERM);
	assert_int_equal(r2[0].over_limit, 0);
	smtp_client_txn_clear(&txns[0]);
	assert_int_equal(r1[1].over_limit, 0);
	smtp_client_txn_clear(&txns[1]);
	tsrv_free(&t);
}

static void
test_transcript_greeting_421_and_lost_session(void **state)
{
	static const struct step steps[] = {
	    {"", "421 4.3.2 busy\r\n"},
	};
	struct tsrv t;
	run_transcript(&t, steps, 1, NULL, 0);
	assert_int_equal(t.failed, 1);
	assert_int_equal(t.ready, 0);
	/* The peer's own reply, for a report's Diagnostic-Code: smtp; */
	assert_string_equal(buf_str(&t.err_reply), "421 4.3.2 busy");
	tsrv_free(&t);

	/* The server goes away after RCPT: nothing decided, the owner may retry. */
	static const struct step steps2[] = {
	    {"", "220 mx.example ESMTP\r\n"},
	    {"EHLO client.example", "250-mx.example\r\n250 PIPELINING\r\n"},
	    {"MAIL FROM:<a@client.example>", NULL},
	    {"RCPT TO:<x@mx.example>", "<CLOSE>"},
	};
	struct smtp_client_rcpt r1[] = {{"x@mx.example", NULL, 0, 0, NULL, 0}};
	struct smtp_client_txn txn = {"a@client.example", NULL, 0, 0, 0, "a\r\n", 3, r1, 1, 0};
	run_transcript(&t, steps2, 4, &txn, 1);
	assert_int_equal(t.txn_events, 1);
	assert_int_equal(txn.retry, 1);
	assert_int_equal(r1[0].status, SMTP_RCPT_NONE);
	smtp_client_txn_clear(&txn);
	tsrv_free(&t);

	/*
	 * A 421 after one recipient was refused for good: the ones still open
	 * (accepted, or the one the 421 answered) are deferred with the peer's
	 * own reply, not our words around it, so that a report shows it as an
	 * SMTP reply (Diagnostic-Code: smtp; Status from its enhanced code).
	 */
	static const struct step steps3[] = {
	    {"", "220 mx.example ESMTP\r\n"},
	    {"EHLO client.example", "250-mx.example\r\n250 PIPELINING\r\n"},
	    {"MAIL FROM:<a@client.example>", NULL},
	    {"RCPT TO:<x@mx.example>", NULL},
	    {"RCPT TO:<y@mx.example>", NULL},
	    {"RCPT TO:<z@mx.example>", "250 ok\r\n250 ok\r\n550 5.1.1 no\r\n421 4.3.2 closing\r\n"},
	};
	struct smtp_client_rcpt r3[] = {{"x@mx.example", NULL, 0, 0, NULL, 0},
					{"y@mx.example", NULL, 0, 0, NULL, 0},
					{"z@mx.example", NULL, 0, 0, NULL, 0}};
	struct smtp_client_txn txn3 = {"a@client.example", NULL, 0, 0, 0, "a\r\n", 3, r3, 3, 0};
	run_transcript(&t, steps3, 6, &txn3, 1);
	assert_int_equal(t.txn_events, 1);
	assert_int_equal(txn3.retry, 0);
	assert_int_equal(r3[0].status, SMTP_RCPT_TEMP);
	assert_string_equal(r3[0].text, "421 4.3.2 closing");
	assert_int_equal(r3[1].status, SMTP_RCPT_PERM);
	assert_string_equal(r3[1].text, "550 5.1.1 no");
	assert_int_equal(r3[2].status, SMTP_RCPT_TEMP);
	assert_string_equal(r3[2].text, "421 4.3.2 closing");
	smtp_client_txn_clear(&txn3);
	tsrv_free(&t);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_reply_single),
	    cmocka_unit_test(test_reply_multiline_ehlo),
	    cmocka_unit_test(test_caps_variants),
	    cmocka_unit_test(test_reply_pipelined),
	    cmocka_unit_test(test_reply_forms),
	    cmocka_unit_test(test_reply_errors),
	    cmocka_unit_test(test_stuffer),
	    cmocka_unit_test(test_transcript_pipelined_dsn_reuse),
	    cmocka_unit_test(test_transcript_helo_fallback_no_pipelining),
	    cmocka_unit_test(test_transcript_checks_before_sending),
	    cmocka_unit_test(test_transcript_552_to_rcpt_is_452),
	    cmocka_unit_test(test_transcript_greeting_421_and_lost_session),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
