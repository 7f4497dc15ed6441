/*
 * smtp_client — see smtp_client.h.
 *
 * The session is a state machine driven by the replies the peer sends:
 * every command we write is queued in cl->cmds with what its reply means,
 * and replies are matched to it in order, so pipelined groups (RSET, MAIL,
 * RCPT...) and single commands take the same path. smtp_reply_parse() frames
 * the replies; it stops after each complete one so pipelined answers are
 * handled one at a time. Content is dot-stuffed in 64 KiB slices whenever
 * the output buffer has drained (write callback), so a large message never
 * sits in memory twice and each write gets the data-block timeout.
 *
 * SECURITY: see the header. Reply text is cleaned by the parser (control
 * and 8-bit bytes become '?') and escaped again when logged.
 */
#include "smtp/smtp_client.h"
#include "smtp/smtp_proto.h"
#include "core/buf.h"
#include "core/log.h"
#include "core/tls.h"
#include "core/util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/err.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>

/* ------------------------------------------------------------------ */
/* Reply parser */

void
smtp_reply_parser_init(struct smtp_reply_parser *p)
{
	memset(p, 0, sizeof(*p));
	buf_init(&p->reply.text, SMTP_CLIENT_REPLY_MAX);
	buf_init(&p->line, SMTP_CLIENT_LINE_MAX);
}

void
smtp_reply_parser_free(struct smtp_reply_parser *p)
{
	buf_free(&p->reply.text);
	buf_free(&p->line);
}

static int
reply_fail(struct smtp_reply_parser *p, enum smtp_reply_err e, const char *text)
{
	p->err = e;
	p->errtext = text;
	p->discard = 1;
	return -1;
}

/* "C.SSS.DDD" at s[0..n) with class c, followed by a space or the end. */
static size_t
enhanced_len(const char *s, size_t n, char c)
{
	size_t i = 0;
	if (n < 5 || s[0] != c || s[1] != '.')
		return 0;
	i = 2;
	for (int part = 0; part < 2; part++) {
		size_t d = 0;
		while (i < n && s[i] >= '0' && s[i] <= '9' && d < 3) {
			i++;
			d++;
		}
		if (d == 0)
			return 0;
		if (part == 0) {
			if (i >= n || s[i] != '.')
				return 0;
			i++;
		}
	}
	if (i < n && s[i] != ' ')
		return 0;
	return i;
}

/* One complete line in p->line (LF and an optional CR still there). */
static int
reply_line(struct smtp_reply_parser *p)
{
	const char *l = p->line.data;
	size_t n = p->line.len;
	struct smtp_reply *r = &p->reply;

	if (n > 0 && l[n - 1] == '\n')
		n--;
	if (n > 0 && l[n - 1] == '\r')
		n--;
	if (n < 3 || l[0] < '2' || l[0] > '5' || l[1] < '0' || l[1] > '5' || l[2] < '0' ||
	    l[2] > '9' || (n > 3 && l[3] != ' ' && l[3] != '-'))
		return reply_fail(p, SMTP_REPLY_ERR_CODE, "malformed reply line");
	int code = (l[0] - '0') * 100 + (l[1] - '0') * 10 + (l[2] - '0');
	int last = n == 3 || l[3] == ' ';
	if (r->nlines > 0 && code != r->code)
		return reply_fail(p, SMTP_REPLY_ERR_MISMATCH, "reply code changed within a reply");
	if (r->nlines >= SMTP_CLIENT_REPLY_LINES)
		return reply_fail(p, SMTP_REPLY_ERR_TOO_MANY, "too many reply lines");
	const char *t = n > 4 ? l + 4 : "";
	size_t tn = n > 4 ? n - 4 : 0;
	if (r->nlines == 0) {
		r->code = code;
		size_t el = enhanced_len(t, tn, l[0]);
		if (el > 0 && el < sizeof(r->enhanced)) {
			memcpy(r->enhanced, t, el);
			r->enhanced[el] = '\0';
		}
	} else if (buf_putc(&r->text, '\n') < 0) {
		return reply_fail(p, SMTP_REPLY_ERR_TOO_MANY, "reply too long");
	}
	if (buf_grow(&r->text, tn) < 0)
		return reply_fail(p, SMTP_REPLY_ERR_TOO_MANY, "reply too long");
	for (size_t i = 0; i < tn; i++) {
		unsigned char c = (unsigned char)t[i];
		r->text.data[r->text.len++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
	}
	r->text.data[r->text.len] = '\0';
	r->nlines++;
	buf_reset(&p->line);
	return last ? 1 : 0;
}

int
smtp_reply_parse(struct smtp_reply_parser *p, const char *data, size_t len, size_t *consumed_r)
{
	size_t i = 0;

	*consumed_r = 0;
	if (p->discard)
		return -1;
	if (p->ready) {
		p->reply.code = 0;
		p->reply.enhanced[0] = '\0';
		p->reply.nlines = 0;
		buf_reset(&p->reply.text);
		p->ready = 0;
	}
	while (i < len) {
		const char *nl = memchr(data + i, '\n', len - i);
		size_t take = nl ? (size_t)(nl - (data + i)) + 1 : len - i;
		if (buf_append(&p->line, data + i, take) < 0) {
			*consumed_r = i;
			return reply_fail(p, SMTP_REPLY_ERR_LINE_TOO_LONG, "reply line too long");
		}
		i += take;
		if (nl == NULL)
			break;
		int r = reply_line(p);
		if (r != 0) {
			*consumed_r = i;
			if (r == 1)
				p->ready = 1;
			return r;
		}
	}
	*consumed_r = i;
	return 0;
}

void
smtp_reply_summary(const struct smtp_reply *r, struct buf *out, size_t max)
{
	struct buf t = BUF_INIT(0);

	/* The text starts with the enhanced status code when there is one. */
	buf_printf(&t, "%03d", r->code);
	if (r->text.len > 0)
		buf_putc(&t, ' ');
	for (const char *s = buf_str(&r->text); *s; s++)
		buf_putc(&t, *s == '\n' ? ' ' : *s);
	if (t.len > max && max > 3) {
		buf_truncate(&t, max - 3);
		buf_puts(&t, "...");
	}
	buf_append(out, t.data, t.len);
	buf_free(&t);
}

/* ------------------------------------------------------------------ */
/* EHLO capabilities */

void
smtp_caps_parse(const struct smtp_reply *r, struct smtp_caps *caps)
{
	const char *s = buf_str(&r->text);

	memset(caps, 0, sizeof(*caps));
	/* Skip the first line: the greeting part. */
	const char *line = strchr(s, '\n');
	while (line) {
		line++;
		const char *end = strchr(line, '\n');
		size_t n = end ? (size_t)(end - line) : strlen(line);
		size_t kw = 0;
		while (kw < n && line[kw] != ' ' && line[kw] != '=')
			kw++;
		const char *arg = kw < n ? line + kw + 1 : line + n;
		size_t argn = kw < n ? n - kw - 1 : 0;
#define KW(name) (kw == sizeof(name) - 1 && strncasecmp(line, name, kw) == 0)
		if (KW("PIPELINING")) {
			caps->flags |= SMTP_CAP_PIPELINING;
		} else if (KW("SIZE")) {
			uint64_t v = 0;
			caps->flags |= SMTP_CAP_SIZE;
			size_t d = 0;
			while (d < argn && arg[d] >= '0' && arg[d] <= '9')
				d++;
			if (d > 0 && util_parse_u64(arg, d, &v) == 0)
				caps->size_max = v;
		} else if (KW("8BITMIME")) {
			caps->flags |= SMTP_CAP_8BITMIME;
		} else if (KW("SMTPUTF8")) {
			caps->flags |= SMTP_CAP_SMTPUTF8;
		} else if (KW("DSN")) {
			caps->flags |= SMTP_CAP_DSN;
		} else if (KW("STARTTLS")) {
			caps->flags |= SMTP_CAP_STARTTLS;
		} else if (KW("ENHANCEDSTATUSCODES")) {
			caps->flags |= SMTP_CAP_ENHANCEDSTATUSCODES;
		} else if (KW("CHUNKING")) {
			caps->flags |= SMTP_CAP_CHUNKING;
		} else if (KW("AUTH")) {
			caps->flags |= SMTP_CAP_AUTH;
			size_t i = 0;
			while (i < argn) {
				while (i < argn && arg[i] == ' ')
					i++;
				size_t st = i;
				while (i < argn && arg[i] != ' ')
					i++;
				if (i - st == 5 && strncasecmp(arg + st, "PLAIN", 5) == 0)
					caps->auth |= SMTP_AUTH_PLAIN;
				else if (i - st == 5 && strncasecmp(arg + st, "LOGIN", 5) == 0)
					caps->auth |= SMTP_AUTH_LOGIN;
			}
		}
#undef KW
		line = end;
	}
}

/* ------------------------------------------------------------------ */
/* Dot-stuffing */

void
smtp_stuffer_init(struct smtp_stuffer *st)
{
	memset(st, 0, sizeof(*st));
}

void
smtp_stuff(struct smtp_stuffer *st, const char *p, size_t n, struct buf *out)
{
	size_t i = 0;
	while (i < n) {
		int bol = !st->fed || st->last == '\n';
		if (bol && p[i] == '.')
			buf_putc(out, '.');
		const char *nl = memchr(p + i, '\n', n - i);
		size_t take = nl ? (size_t)(nl - (p + i)) + 1 : n - i;
		buf_append(out, p + i, take);
		st->prev = take >= 2 ? (unsigned char)p[i + take - 2] : st->last;
		st->last = (unsigned char)p[i + take - 1];
		st->fed = 1;
		i += take;
	}
}

void
smtp_stuff_end(struct smtp_stuffer *st, struct buf *out)
{
	if (st->fed && !(st->prev == '\r' && st->last == '\n'))
		buf_puts(out, "\r\n");
	buf_puts(out, ".\r\n");
}

/* ------------------------------------------------------------------ */
/* The session */

enum cl_state {
	CL_CONNECT,  /* TCP connect (and implicit TLS handshake) */
	CL_GREETING, /* waiting for 220 */
	CL_EHLO,     /* EHLO sent */
	CL_HELO,     /* HELO sent after EHLO was refused */
	CL_STARTTLS, /* STARTTLS sent */
	CL_TLS,	     /* STARTTLS handshake */
	CL_AUTH,     /* AUTH PLAIN sent */
	CL_READY,    /* no transaction */
	CL_TXN,	     /* RSET/MAIL/RCPT replies pending */
	CL_DATA,     /* DATA sent, waiting for 354 */
	CL_CONTENT,  /* writing the content */
	CL_DOT,	     /* waiting for the reply to the final dot */
	CL_QUIT,     /* QUIT sent: FAILED when the session is over */
	CL_DEAD,
};

static const char *const cl_state_names[] = {"connect", "greeting", "ehlo",  "helo", "starttls",
					     "tls",	"auth",	    "ready", "txn",  "data",
					     "content", "dot",	    "quit",  "dead"};

#define F_TLS 0x01	/* TLS is on */
#define F_FREE 0x02	/* free asked for inside a callback */
#define F_UNUSABLE 0x04 /* no further transaction on this session */
#define F_DIRTY 0x08	/* a transaction was started: RSET before the next */

enum cmd_kind { CMD_RSET, CMD_MAIL, CMD_RCPT };

struct pending_cmd {
	enum cmd_kind kind;
	size_t rcpt; /* for CMD_RCPT */
};

enum later_what { LATER_NONE, LATER_FAILED, LATER_TXN_DONE };

struct smtp_client {
	struct event_base *base;
	struct bufferevent *bev;
	SSL *ssl;
	enum cl_state state;
	unsigned flags;
	char *helo, *host, *log_id;
	struct sockaddr_storage sa;
	socklen_t salen;
	char ip[INET6_ADDRSTRLEN];
	enum smtp_client_tls tls;
	char *auth_user;
	char *auth_pass;
	struct smtp_client_timeouts t;
	struct smtp_reply_parser rp;
	struct smtp_caps caps;
	smtp_client_cb *cb;
	void *arg;
	unsigned hold;
	struct buf err;
	struct buf err_reply; /* the peer's reply that ended it, summarised; or empty */
	char err_status[16];  /* a 5xx that ended it: its enhanced code; else "" */
	int err_tls;
	char tlsdesc[128];
	/* transaction */
	struct smtp_client_txn *txn;
	struct pending_cmd *cmds; /* replies still expected, in order */
	size_t ncmds, cmd_head;
	size_t next_rcpt; /* without PIPELINING: next RCPT to send */
	int mail_failed;
	int *accepted;
	size_t naccepted;
	size_t data_off;
	struct smtp_stuffer st;
	unsigned ntxns;
	struct event *later;
	enum later_what later_what;
	int idle;
};

static void cl_read_cb(struct bufferevent *bev, void *arg);
static void cl_write_cb(struct bufferevent *bev, void *arg);
static void cl_event_cb(struct bufferevent *bev, short what, void *arg);
static void cl_really_free(struct smtp_client *cl);

void
smtp_client_timeouts_default(struct smtp_client_timeouts *t)
{
	t->connect = 30;
	t->greeting = 300;
	t->command = 300;
	t->mail = 300;
	t->rcpt = 300;
	t->data_init = 120;
	t->data_block = 180;
	t->data_done = 600;
}

void
smtp_client_txn_clear(struct smtp_client_txn *txn)
{
	for (size_t i = 0; i < txn->nrcpts; i++) {
		free(txn->rcpts[i].text);
		txn->rcpts[i].text = NULL;
		txn->rcpts[i].status = SMTP_RCPT_NONE;
		txn->rcpts[i].over_limit = 0;
	}
	txn->retry = 0;
}

static void
cl_set_state(struct smtp_client *cl, enum cl_state st)
{
	if (cl->state != st && log_enabled(LL_DEBUG))
		log_msg(LL_DEBUG, cl->log_id, "client %s[%s]: state %s -> %s", cl->host, cl->ip,
			cl_state_names[cl->state], cl_state_names[st]);
	cl->state = st;
}

static void
cl_timeout(struct smtp_client *cl, int rd, int wr)
{
	struct timeval r = {rd, 0}, w = {wr, 0};
	bufferevent_set_timeouts(cl->bev, rd > 0 ? &r : NULL, wr > 0 ? &w : NULL);
}

/* Run the owner's callback; 1 if the session was freed meanwhile. */
static int
cl_notify(struct smtp_client *cl, enum smtp_client_event ev)
{
	if (cl->cb == NULL)
		return 0;
	cl->hold++;
	cl->cb(cl, ev, cl->arg);
	cl->hold--;
	if (cl->hold == 0 && (cl->flags & F_FREE)) {
		cl_really_free(cl);
		return 1;
	}
	return 0;
}

static void
cl_later_cb(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_client *cl = arg;
	enum later_what w = cl->later_what;
	cl->later_what = LATER_NONE;
	if (w == LATER_FAILED)
		cl_notify(cl, SMTP_CLIENT_FAILED);
	else if (w == LATER_TXN_DONE)
		cl_notify(cl, SMTP_CLIENT_TXN_DONE);
}

static void
cl_later(struct smtp_client *cl, enum later_what w)
{
	cl->later_what = w;
	event_active(cl->later, EV_TIMEOUT, 1);
}

static void cl_write(struct smtp_client *cl, const char *fmt, ...) PRINTF_LIKE(2, 3);

static void
cl_write(struct smtp_client *cl, const char *fmt, ...)
{
	struct buf b = BUF_INIT(0);
	va_list ap;

	va_start(ap, fmt);
	buf_vprintf(&b, fmt, ap);
	va_end(ap);
	if (log_enabled(LL_DEBUG)) {
		char esc[600];
		/* AUTH carries the secret: never log its argument. */
		const char *shown =
		    strncasecmp(b.data, "AUTH ", 5) == 0 ? "AUTH PLAIN ****" : b.data;
		log_msg(LL_DEBUG, cl->log_id, "client %s[%s] > %s", cl->host, cl->ip,
			log_esc(esc, sizeof(esc), shown));
	}
	buf_puts(&b, "\r\n");
	bufferevent_write(cl->bev, b.data, b.len);
	util_wipe(b.data, b.len);
	buf_free(&b);
}

/* Record the failure reason. */
static void cl_error(struct smtp_client *cl, const char *fmt, ...) PRINTF_LIKE(2, 3);

static void
cl_error(struct smtp_client *cl, const char *fmt, ...)
{
	va_list ap;
	buf_reset(&cl->err);
	va_start(ap, fmt);
	buf_vprintf(&cl->err, fmt, ap);
	va_end(ap);
	buf_reset(&cl->err_reply);
	cl->err_status[0] = '\0';
}

static void
cl_reply_error(struct smtp_client *cl, const char *when)
{
	const struct smtp_reply *r = &cl->rp.reply;
	struct buf s = BUF_INIT(0);
	smtp_reply_summary(r, &s, 400);
	cl_error(cl, "host %s[%s] said: %s (in reply to %s)", cl->host, cl->ip, buf_str(&s), when);
	buf_puts(&cl->err_reply, buf_str(&s));
	if (r->code >= 500)
		xsnprintf(cl->err_status, sizeof(cl->err_status), "%s",
			  r->enhanced[0] ? r->enhanced : "5.0.0");
	buf_free(&s);
}

/* The session is finished: close the connection. */
static void
cl_close(struct smtp_client *cl)
{
	if (cl->bev) {
		bufferevent_free(cl->bev);
		cl->bev = NULL;
		cl->ssl = NULL;
	}
	cl->flags |= F_UNUSABLE;
	cl_set_state(cl, CL_DEAD);
}

/* Session setup failed: close and report FAILED. */
static int
cl_fail(struct smtp_client *cl)
{
	cl_close(cl);
	return cl_notify(cl, SMTP_CLIENT_FAILED);
}

static void
cl_txn_result(struct smtp_client *cl, size_t i, enum smtp_rcpt_status st, const char *text)
{
	struct smtp_client_rcpt *r = &cl->txn->rcpts[i];
	if (r->status != SMTP_RCPT_NONE)
		return;
	r->status = st;
	free(r->text);
	r->text = xstrdup(text);
}

static void
cl_txn_end(struct smtp_client *cl)
{
	free(cl->cmds);
	cl->cmds = NULL;
	cl->ncmds = cl->cmd_head = 0;
	free(cl->accepted);
	cl->accepted = NULL;
	cl->txn = NULL;
}

/*
 * The connection failed during a transaction: recipients still open get
 * TEMP with reason, or, when nothing was decided and the content was not
 * complete, the owner is told to retry elsewhere. reply: the summary of
 * the peer's 421 that ended it, or NULL; then that is what the open
 * recipients get, the peer's own answer for them (RFC 5321 3.8: 421 may
 * answer any command), so that a report shows it as such.
 */
static int
cl_txn_lost(struct smtp_client *cl, const char *reason, const char *reply)
{
	struct smtp_client_txn *txn = cl->txn;
	int decided = 0;
	for (size_t i = 0; i < txn->nrcpts; i++)
		if (txn->rcpts[i].status != SMTP_RCPT_NONE)
			decided = 1;
	if (!decided && cl->state != CL_DOT) {
		txn->retry = 1;
	} else {
		struct buf t = BUF_INIT(0);
		if (reply)
			buf_puts(&t, reply);
		else
			buf_printf(&t, "4.4.2 %s", reason);
		for (size_t i = 0; i < txn->nrcpts; i++)
			cl_txn_result(cl, i, SMTP_RCPT_TEMP, buf_str(&t));
		buf_free(&t);
	}
	cl_error(cl, "%s", reason);
	cl_txn_end(cl);
	cl_close(cl);
	return cl_notify(cl, SMTP_CLIENT_TXN_DONE);
}

/* The transaction is over (results set); the session stays usable. */
static int
cl_txn_done(struct smtp_client *cl)
{
	cl_txn_end(cl);
	cl->ntxns++;
	if (cl->bev) {
		cl_set_state(cl, CL_READY);
		cl_timeout(cl, 0, 0);
	}
	return cl_notify(cl, SMTP_CLIENT_TXN_DONE);
}

static void
cl_send_ehlo(struct smtp_client *cl)
{
	cl_set_state(cl, CL_EHLO);
	cl_timeout(cl, cl->t.command, cl->t.command);
	cl_write(cl, "EHLO %s", cl->helo);
}

/* EHLO/HELO done (caps read): TLS, AUTH or ready. */
static int
cl_after_ehlo(struct smtp_client *cl)
{
	int want_tls = cl->tls == SMTP_CLIENT_TLS_MAY || cl->tls == SMTP_CLIENT_TLS_REQUIRE;
	if (!(cl->flags & F_TLS) && want_tls && (cl->caps.flags & SMTP_CAP_STARTTLS)) {
		cl_set_state(cl, CL_STARTTLS);
		cl_timeout(cl, cl->t.command, cl->t.command);
		cl_write(cl, "STARTTLS");
		return 0;
	}
	if (!(cl->flags & F_TLS) && (cl->tls == SMTP_CLIENT_TLS_REQUIRE || cl->auth_user)) {
		cl_error(cl, "4.7.5 TLS is required but host %s[%s] does not offer STARTTLS",
			 cl->host, cl->ip);
		return cl_fail(cl);
	}
	if (cl->auth_user) {
		if (!(cl->caps.auth & SMTP_AUTH_PLAIN)) {
			cl_error(cl, "4.7.0 host %s[%s] does not offer AUTH PLAIN", cl->host,
				 cl->ip);
			return cl_fail(cl);
		}
		size_t ul = strlen(cl->auth_user), pl = strlen(cl->auth_pass);
		size_t raw_len = ul + pl + 2;
		char *raw = xmalloc(raw_len);
		raw[0] = '\0';
		memcpy(raw + 1, cl->auth_user, ul);
		raw[ul + 1] = '\0';
		memcpy(raw + ul + 2, cl->auth_pass, pl);
		size_t b64max = SMTP_BASE64_LEN(raw_len) + 1;
		char *b64 = xmalloc(b64max);
		smtp_base64_encode(raw, raw_len, b64, b64max);
		cl_set_state(cl, CL_AUTH);
		cl_timeout(cl, cl->t.command, cl->t.command);
		cl_write(cl, "AUTH PLAIN %s", b64);
		util_wipe(raw, raw_len);
		util_wipe(b64, b64max);
		free(raw);
		free(b64);
		util_wipe(cl->auth_pass, pl);
		return 0;
	}
	cl_set_state(cl, CL_READY);
	cl_timeout(cl, 0, 0);
	return cl_notify(cl, SMTP_CLIENT_READY);
}

/*
 * The name for SNI: RFC 6066 3 allows a DNS host name only, never a literal
 * address, so a peer named by its address (a route, a relayhost or a
 * domain literal) gets none.
 */
static const char *
cl_sni(const struct smtp_client *cl)
{
	unsigned char a[16];

	if (inet_pton(AF_INET, cl->host, a) == 1 || inet_pton(AF_INET6, cl->host, a) == 1)
		return NULL;
	return cl->host;
}

static int
cl_start_tls(struct smtp_client *cl)
{
	SSL *ssl = tls_client_ssl(cl_sni(cl));
	/* Nothing the server sent before the handshake may count after it. */
	struct evbuffer *in = bufferevent_get_input(cl->bev);
	evbuffer_drain(in, evbuffer_get_length(in));
	struct bufferevent *tb = bufferevent_openssl_filter_new(
	    cl->base, cl->bev, ssl, BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);
	if (tb == NULL) {
		SSL_free(ssl);
		cl_error(cl, "4.7.0 cannot start TLS with %s[%s]", cl->host, cl->ip);
		return cl_fail(cl);
	}
	bufferevent_openssl_set_allow_dirty_shutdown(tb, 1);
	cl->bev = tb;
	cl->ssl = ssl;
	cl_set_state(cl, CL_TLS);
	bufferevent_setcb(cl->bev, cl_read_cb, cl_write_cb, cl_event_cb, cl);
	cl_timeout(cl, cl->t.connect, cl->t.connect);
	bufferevent_enable(cl->bev, EV_READ | EV_WRITE);
	smtp_reply_parser_free(&cl->rp);
	smtp_reply_parser_init(&cl->rp);
	return 0;
}

/* Write the next slices of content; at the end the final dot. */
static void
cl_content(struct smtp_client *cl)
{
	struct smtp_client_txn *txn = cl->txn;
	struct evbuffer *out = bufferevent_get_output(cl->bev);
	const size_t slice = 64 * 1024;

	while (evbuffer_get_length(out) < 4 * slice && cl->data_off < txn->len) {
		size_t n = txn->len - cl->data_off;
		if (n > slice)
			n = slice;
		struct buf b = BUF_INIT(0);
		smtp_stuff(&cl->st, txn->data + cl->data_off, n, &b);
		cl->data_off += n;
		if (cl->data_off == txn->len)
			smtp_stuff_end(&cl->st, &b);
		bufferevent_write(cl->bev, b.data, b.len);
		buf_free(&b);
	}
	if (txn->len == 0 && cl->state == CL_CONTENT) {
		struct buf b = BUF_INIT(0);
		smtp_stuff_end(&cl->st, &b);
		bufferevent_write(cl->bev, b.data, b.len);
		buf_free(&b);
	}
	if (cl->data_off == txn->len) {
		cl_set_state(cl, CL_DOT);
		cl_timeout(cl, cl->t.data_done, cl->t.data_block);
		log_msg(LL_DEBUG, cl->log_id, "client %s[%s] > (%zu octets of content and .)",
			cl->host, cl->ip, txn->len);
	}
}

/* MAIL FROM with the parameters the peer's extensions allow. */
static void
cl_send_mail(struct smtp_client *cl, const struct smtp_client_txn *txn)
{
	struct buf b = BUF_INIT(0);

	buf_printf(&b, "MAIL FROM:<%s>", txn->mail_from);
	if (cl->caps.flags & SMTP_CAP_SIZE)
		buf_printf(&b, " SIZE=%zu", txn->len);
	if (txn->body_8bit)
		buf_puts(&b, " BODY=8BITMIME");
	if (txn->smtputf8)
		buf_puts(&b, " SMTPUTF8");
	if (cl->caps.flags & SMTP_CAP_DSN) {
		if (txn->ret == SMTP_RET_HDRS)
			buf_puts(&b, " RET=HDRS");
		else if (txn->ret == SMTP_RET_FULL)
			buf_puts(&b, " RET=FULL");
		if (txn->envid && *txn->envid)
			buf_printf(&b, " ENVID=%s", txn->envid);
	}
	cl_write(cl, "%s", buf_str(&b));
	buf_free(&b);
	cl->cmds[cl->ncmds++] = (struct pending_cmd){CMD_MAIL, 0};
}

/*
 * Append ORCPT's value for a transaction without SMTPUTF8. RFC 6533 3: a
 * utf-8 address goes there as utf-8-addr-xtext, each non-ASCII character
 * as "\x{HEXPOINT}"; the unitext form (raw UTF-8, checked when it was
 * received) is for a peer that has the extension.
 */
static void
cl_orcpt_ascii(const char *orcpt, struct buf *b)
{
	const unsigned char *s = (const unsigned char *)orcpt;

	while (*s) {
		if (*s < 0x80) {
			buf_putc(b, (char)*s++);
			continue;
		}
		/* The lead byte's bits, then 6 from each continuation byte. */
		unsigned more = (*s & 0xe0) == 0xc0 ? 1 : (*s & 0xf0) == 0xe0 ? 2 : 3;
		unsigned cp = *s++ & (0x7f >> (more + 1));
		for (; more > 0 && (*s & 0xc0) == 0x80; more--)
			cp = cp << 6 | (*s++ & 0x3f);
		buf_printf(b, "\\x{%02X}", cp);
	}
}

static void
cl_send_rcpt(struct smtp_client *cl, size_t i)
{
	struct smtp_client_txn *txn = cl->txn;
	struct smtp_client_rcpt *r = &txn->rcpts[i];
	struct buf b = BUF_INIT(0);

	buf_printf(&b, "RCPT TO:<%s>", r->addr);
	if (cl->caps.flags & SMTP_CAP_DSN) {
		if (r->notify) {
			static const struct {
				unsigned bit;
				const char *name;
			} words[] = {{SMTP_NOTIFY_NEVER, "NEVER"},
				     {SMTP_NOTIFY_SUCCESS, "SUCCESS"},
				     {SMTP_NOTIFY_FAILURE, "FAILURE"},
				     {SMTP_NOTIFY_DELAY, "DELAY"}};
			const char *sep = " NOTIFY=";
			for (size_t k = 0; k < ARRAY_LEN(words); k++) {
				if (r->notify & words[k].bit) {
					buf_printf(&b, "%s%s", sep, words[k].name);
					sep = ",";
				}
			}
		}
		if (r->orcpt) {
			buf_puts(&b, " ORCPT=");
			if (txn->smtputf8)
				buf_puts(&b, r->orcpt);
			else
				cl_orcpt_ascii(r->orcpt, &b);
		}
	}
	cl_write(cl, "%s", buf_str(&b));
	buf_free(&b);
	cl->cmds[cl->ncmds++] = (struct pending_cmd){CMD_RCPT, i};
}

void
smtp_client_send(struct smtp_client *cl, struct smtp_client_txn *txn)
{
	ASSERT(cl->state == CL_READY && cl->txn == NULL);
	cl->txn = txn;
	cl->mail_failed = 0;
	cl->naccepted = 0;
	cl->accepted = xcalloc(txn->nrcpts ? txn->nrcpts : 1, sizeof(int));
	cl->cmds = xcalloc(txn->nrcpts + 2, sizeof(*cl->cmds));
	cl->ncmds = cl->cmd_head = 0;
	cl->data_off = 0;
	txn->retry = 0;

	/* What we can tell before sending anything. Our own words, with no reply
	 * code: a notice must not show them as the peer's (RFC 3464 2.3.6). */
	const char *why = NULL;
	struct buf t = BUF_INIT(0);
	if ((cl->caps.flags & SMTP_CAP_SIZE) && cl->caps.size_max > 0 &&
	    txn->len > cl->caps.size_max) {
		buf_printf(&t,
			   "5.3.4 Message size %zu exceeds the limit of %llu octets of host %s[%s]",
			   txn->len, (unsigned long long)cl->caps.size_max, cl->host, cl->ip);
		why = t.data;
	} else if (txn->smtputf8 && !(cl->caps.flags & SMTP_CAP_SMTPUTF8)) {
		buf_printf(&t,
			   "5.6.7 Host %s[%s] does not support SMTPUTF8, which this message needs",
			   cl->host, cl->ip);
		why = t.data;
	} else if (txn->body_8bit && !(cl->caps.flags & SMTP_CAP_8BITMIME)) {
		buf_printf(&t,
			   "5.6.3 Conversion required but not supported: host %s[%s] does not "
			   "offer 8BITMIME for this 8-bit message",
			   cl->host, cl->ip);
		why = t.data;
	}
	if (why) {
		for (size_t i = 0; i < txn->nrcpts; i++)
			cl_txn_result(cl, i, SMTP_RCPT_PERM, why);
		buf_free(&t);
		cl_txn_end(cl);
		cl_later(cl, LATER_TXN_DONE);
		return;
	}
	buf_free(&t);

	cl_set_state(cl, CL_TXN);
	cl_timeout(cl, cl->t.mail, cl->t.command);
	cl->next_rcpt = 0;
	if (cl->flags & F_DIRTY) {
		cl_write(cl, "RSET");
		cl->cmds[cl->ncmds++] = (struct pending_cmd){CMD_RSET, 0};
		if (!(cl->caps.flags & SMTP_CAP_PIPELINING))
			return; /* MAIL follows the RSET reply */
	}
	cl->flags |= F_DIRTY;
	cl_send_mail(cl, txn);
	if (cl->caps.flags & SMTP_CAP_PIPELINING) {
		for (size_t i = 0; i < txn->nrcpts; i++)
			cl_send_rcpt(cl, i);
		cl->next_rcpt = txn->nrcpts;
	}
}

/* Without PIPELINING, the command after the one just answered. */
static void
cl_send_next(struct smtp_client *cl, enum cmd_kind answered)
{
	struct smtp_client_txn *txn = cl->txn;
	if (cl->caps.flags & SMTP_CAP_PIPELINING)
		return;
	if (answered == CMD_RSET) {
		/* Reissue the rest of smtp_client_send() now. */
		cl_send_mail(cl, txn);
		return;
	}
	if (cl->mail_failed)
		return;
	if (cl->next_rcpt < txn->nrcpts) {
		cl_timeout(cl, cl->t.rcpt, cl->t.command);
		cl_send_rcpt(cl, cl->next_rcpt++);
	}
}

/* One reply in CL_TXN. Returns 1 if the session is gone. */
static int
cl_txn_reply(struct smtp_client *cl)
{
	struct smtp_client_txn *txn = cl->txn;
	const struct smtp_reply *r = &cl->rp.reply;
	struct pending_cmd pc = cl->cmds[cl->cmd_head++];
	struct buf s = BUF_INIT(0);
	smtp_reply_summary(r, &s, 400);

	if (r->code == 421) {
		/* The server is closing the session: nothing more will be done. */
		struct buf why = BUF_INIT(0);
		buf_printf(&why, "host %s[%s] said: %s", cl->host, cl->ip, buf_str(&s));
		int gone = cl_txn_lost(cl, buf_str(&why), buf_str(&s));
		buf_free(&s);
		buf_free(&why);
		return gone;
	}
	switch (pc.kind) {
	case CMD_RSET:
		if (r->code / 100 != 2) {
			struct buf why = BUF_INIT(0);
			buf_printf(&why, "host %s[%s] refused RSET: %s", cl->host, cl->ip,
				   buf_str(&s));
			buf_free(&s);
			int gone = cl_txn_lost(cl, buf_str(&why), NULL);
			buf_free(&why);
			return gone;
		}
		break;
	case CMD_MAIL:
		if (r->code / 100 != 2) {
			cl->mail_failed = 1;
			for (size_t i = 0; i < txn->nrcpts; i++)
				cl_txn_result(cl, i,
					      r->code >= 500 ? SMTP_RCPT_PERM : SMTP_RCPT_TEMP,
					      buf_str(&s));
		}
		break;
	case CMD_RCPT:
		if (cl->mail_failed)
			break;
		if (r->code / 100 == 2) {
			cl->accepted[pc.rcpt] = 1;
			cl->naccepted++;
		} else {
			/*
			 * RFC 5321 4.5.3.1.10: 452 to RCPT is "too many
			 * recipients", and so is 552 there (its historical use),
			 * which a client must take as temporary: the recipient
			 * goes in another transaction. 552 to MAIL or DATA stays
			 * what it says, permanent (message too big). Postfix keeps
			 * RFC 821's permanent 552 here (its smtp_proto.c has the
			 * mapping under #ifdef notdef); we follow RFC 5321.
			 */
			int limit = r->code == 452 || r->code == 552;
			int perm = r->code >= 500 && r->code != 552;
			cl_txn_result(cl, pc.rcpt, perm ? SMTP_RCPT_PERM : SMTP_RCPT_TEMP,
				      buf_str(&s));
			txn->rcpts[pc.rcpt].over_limit = limit;
		}
		break;
	}
	buf_free(&s);
	cl_send_next(cl, pc.kind);
	if (cl->cmd_head < cl->ncmds)
		return 0;
	if (cl->mail_failed || cl->naccepted == 0)
		return cl_txn_done(cl);
	cl_set_state(cl, CL_DATA);
	cl_timeout(cl, cl->t.data_init, cl->t.command);
	cl_write(cl, "DATA");
	return 0;
}

/* One complete reply. Returns 1 if the session is gone. */
static int
cl_reply(struct smtp_client *cl)
{
	const struct smtp_reply *r = &cl->rp.reply;

	if (log_enabled(LL_DEBUG)) {
		char esc[600];
		log_msg(LL_DEBUG, cl->log_id, "client %s[%s] < %d %s", cl->host, cl->ip, r->code,
			log_esc(esc, sizeof(esc), buf_str(&r->text)));
	}
	switch (cl->state) {
	case CL_GREETING:
		if (r->code != 220) {
			cl_reply_error(cl, "the greeting");
			return cl_fail(cl);
		}
		cl_send_ehlo(cl);
		return 0;
	case CL_EHLO:
		if (r->code / 100 == 2) {
			smtp_caps_parse(r, &cl->caps);
			return cl_after_ehlo(cl);
		}
		if (r->code >= 500 && !(cl->flags & F_TLS)) {
			cl_set_state(cl, CL_HELO);
			cl_write(cl, "HELO %s", cl->helo);
			return 0;
		}
		cl_reply_error(cl, "EHLO");
		return cl_fail(cl);
	case CL_HELO:
		if (r->code / 100 != 2) {
			cl_reply_error(cl, "HELO");
			return cl_fail(cl);
		}
		memset(&cl->caps, 0, sizeof(cl->caps));
		return cl_after_ehlo(cl);
	case CL_STARTTLS:
		if (r->code != 220) {
			if (cl->tls == SMTP_CLIENT_TLS_REQUIRE || cl->auth_user) {
				cl_reply_error(cl, "STARTTLS");
				cl->err_status[0] = '\0';
				return cl_fail(cl);
			}
			/* Opportunistic: go on in clear. */
			cl->tls = SMTP_CLIENT_TLS_NONE;
			return cl_after_ehlo(cl);
		}
		return cl_start_tls(cl);
	case CL_AUTH:
		if (r->code != 235) {
			cl_reply_error(cl, "AUTH");
			cl->err_status[0] = '\0'; /* our credentials: defer, never bounce */
			return cl_fail(cl);
		}
		cl_set_state(cl, CL_READY);
		cl_timeout(cl, 0, 0);
		return cl_notify(cl, SMTP_CLIENT_READY);
	case CL_TXN:
		return cl_txn_reply(cl);
	case CL_DATA: {
		if (r->code == 354) {
			cl_set_state(cl, CL_CONTENT);
			cl_timeout(cl, 0, cl->t.data_block);
			smtp_stuffer_init(&cl->st);
			cl_content(cl);
			return 0;
		}
		if (r->code == 421) {
			struct buf s = BUF_INIT(0), why = BUF_INIT(0);
			smtp_reply_summary(r, &s, 400);
			buf_printf(&why, "host %s[%s] said: %s", cl->host, cl->ip, buf_str(&s));
			int gone = cl_txn_lost(cl, buf_str(&why), buf_str(&s));
			buf_free(&s);
			buf_free(&why);
			return gone;
		}
		struct buf s = BUF_INIT(0);
		smtp_reply_summary(r, &s, 400);
		for (size_t i = 0; i < cl->txn->nrcpts; i++)
			if (cl->accepted[i])
				cl_txn_result(cl, i,
					      r->code >= 500 ? SMTP_RCPT_PERM : SMTP_RCPT_TEMP,
					      buf_str(&s));
		buf_free(&s);
		return cl_txn_done(cl);
	}
	case CL_DOT: {
		struct buf s = BUF_INIT(0);
		smtp_reply_summary(r, &s, 400);
		enum smtp_rcpt_status st = r->code / 100 == 2 ? SMTP_RCPT_OK
					   : r->code >= 500   ? SMTP_RCPT_PERM
							      : SMTP_RCPT_TEMP;
		for (size_t i = 0; i < cl->txn->nrcpts; i++)
			if (cl->accepted[i])
				cl_txn_result(cl, i, st, buf_str(&s));
		buf_free(&s);
		if (r->code == 421)
			cl->flags |= F_UNUSABLE;
		return cl_txn_done(cl);
	}
	case CL_QUIT:
		/* The 221 (or anything): the session is over. */
		cl_error(cl, "session closed");
		return cl_fail(cl);
	case CL_READY:
		/* Unsolicited: a 421 before the server closes an idle session. */
		cl_reply_error(cl, "nothing (idle)");
		cl->err_status[0] = '\0';
		return cl_fail(cl);
	case CL_CONTENT:
		/* An early answer while we still write: the server gave up. */
		if (r->code >= 400) {
			struct buf s = BUF_INIT(0), why = BUF_INIT(0);
			smtp_reply_summary(r, &s, 400);
			for (size_t i = 0; i < cl->txn->nrcpts; i++)
				if (cl->accepted[i])
					cl_txn_result(
					    cl, i, r->code >= 500 ? SMTP_RCPT_PERM : SMTP_RCPT_TEMP,
					    buf_str(&s));
			buf_printf(&why, "host %s[%s] said: %s", cl->host, cl->ip, buf_str(&s));
			int gone = cl_txn_lost(cl, buf_str(&why), NULL);
			buf_free(&s);
			buf_free(&why);
			return gone;
		}
		return 0;
	default:
		return 0;
	}
}

static void
cl_read_cb(struct bufferevent *bev, void *arg)
{
	struct smtp_client *cl = arg;

	cl->hold++;
	/* cl->bev may change (STARTTLS) or go (failure) under a reply: look again each time. */
	while (cl->bev && !(cl->flags & F_FREE) && cl->state != CL_TLS &&
	       evbuffer_get_length(bufferevent_get_input(cl->bev)) > 0) {
		struct evbuffer *in = bufferevent_get_input(cl->bev);
		struct evbuffer_iovec v;
		if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
			break;
		size_t used = 0;
		int r = smtp_reply_parse(&cl->rp, v.iov_base, v.iov_len, &used);
		evbuffer_drain(in, used);
		if (r == 0)
			continue;
		if (r < 0) {
			char why[300];
			xsnprintf(why, sizeof(why), "host %s[%s] sent a malformed reply: %s",
				  cl->host, cl->ip, cl->rp.errtext);
			if (cl->txn) {
				cl_txn_lost(cl, why, NULL);
			} else {
				cl_error(cl, "4.4.2 %s", why);
				cl_fail(cl);
			}
			break;
		}
		if (cl_reply(cl))
			break;
	}
	cl->hold--;
	if (cl->hold == 0 && (cl->flags & F_FREE))
		cl_really_free(cl);
}

static void
cl_write_cb(struct bufferevent *bev, void *arg)
{
	struct smtp_client *cl = arg;
	if (cl->state == CL_CONTENT)
		cl_content(cl);
}

static void
cl_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct smtp_client *cl = arg;

	if (cl->state == CL_QUIT) {
		if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)) {
			cl_error(cl, "session closed");
			cl_fail(cl);
		}
		return;
	}
	if (what & BEV_EVENT_CONNECTED) {
		if (cl->state == CL_CONNECT) {
			if (cl->tls == SMTP_CLIENT_TLS_IMPLICIT)
				cl->flags |= F_TLS;
			cl_set_state(cl, CL_GREETING);
			cl_timeout(cl, cl->t.greeting, cl->t.command);
		} else if (cl->state == CL_TLS) {
			cl->flags |= F_TLS;
			tls_describe(cl->ssl, cl->tlsdesc, sizeof(cl->tlsdesc));
			log_msg(LL_DEBUG, cl->log_id, "client %s[%s]: TLS %s", cl->host, cl->ip,
				cl->tlsdesc);
			cl_send_ehlo(cl);
		}
		if (cl->tls == SMTP_CLIENT_TLS_IMPLICIT && cl->ssl)
			tls_describe(cl->ssl, cl->tlsdesc, sizeof(cl->tlsdesc));
		return;
	}
	/* EOF, error or timeout. */
	char why[300];
	const char *when = cl_state_names[cl->state];
	if (what & BEV_EVENT_TIMEOUT) {
		xsnprintf(why, sizeof(why), "timeout talking to host %s[%s] (state %s)", cl->host,
			  cl->ip, when);
	} else if (what & BEV_EVENT_EOF) {
		xsnprintf(why, sizeof(why), "connection closed by host %s[%s] (state %s)", cl->host,
			  cl->ip, when);
	} else {
		unsigned long e = bev ? bufferevent_get_openssl_error(bev) : 0;
		int serr = EVUTIL_SOCKET_ERROR();
		if (e != 0) {
			char es[200];
			ERR_error_string_n(e, es, sizeof(es));
			xsnprintf(why, sizeof(why), "TLS error with host %s[%s]: %s", cl->host,
				  cl->ip, es);
			if (cl->state == CL_TLS || cl->state == CL_CONNECT)
				cl->err_tls = 1;
		} else if (cl->state == CL_CONNECT) {
			xsnprintf(why, sizeof(why), "connect to host %s[%s] failed: %s", cl->host,
				  cl->ip, evutil_socket_error_to_string(serr));
		} else {
			xsnprintf(why, sizeof(why),
				  "connection to host %s[%s] failed (state %s): %s", cl->host,
				  cl->ip, when, evutil_socket_error_to_string(serr));
		}
	}
	/* A peer that closes or stalls in the handshake failed TLS as much as
	 * one that sends an alert: the owner may try again in clear. */
	if (cl->state == CL_TLS)
		cl->err_tls = 1;
	if (cl->txn) {
		cl_txn_lost(cl, why, NULL);
		return;
	}
	cl_error(cl, "4.4.1 %s", why);
	if (cl->state == CL_CONNECT && (what & BEV_EVENT_TIMEOUT))
		cl_error(cl, "4.4.1 connect to host %s[%s] timed out", cl->host, cl->ip);
	cl_fail(cl);
}

struct smtp_client *
smtp_client_new(struct event_base *base, const struct smtp_client_params *p, smtp_client_cb *cb,
		void *arg)
{
	struct smtp_client *cl = xcalloc(1, sizeof(*cl));

	cl->base = base;
	cl->helo = xstrdup(p->helo);
	cl->host = xstrdup(p->host);
	cl->log_id = xstrdup(p->log_id ? p->log_id : "-");
	ASSERT(p->salen <= sizeof(cl->sa));
	memcpy(&cl->sa, p->sa, p->salen);
	cl->salen = p->salen;
	cl->tls = p->tls;
	if (p->auth_user) {
		cl->auth_user = xstrdup(p->auth_user);
		cl->auth_pass = xstrdup(p->auth_pass ? p->auth_pass : "");
	}
	cl->t = p->t;
	cl->cb = cb;
	cl->arg = arg;
	buf_init(&cl->err, 0);
	buf_init(&cl->err_reply, 0);
	smtp_reply_parser_init(&cl->rp);
	xsnprintf(cl->tlsdesc, sizeof(cl->tlsdesc), "none");
	cl->later = event_new(base, -1, 0, cl_later_cb, cl);
	if (cl->sa.ss_family == AF_INET6)
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&cl->sa)->sin6_addr, cl->ip,
			  sizeof(cl->ip));
	else
		inet_ntop(AF_INET, &((struct sockaddr_in *)&cl->sa)->sin_addr, cl->ip,
			  sizeof(cl->ip));
	cl->state = CL_CONNECT;

	if (cl->tls == SMTP_CLIENT_TLS_IMPLICIT) {
		cl->ssl = tls_client_ssl(cl_sni(cl));
		cl->bev = bufferevent_openssl_socket_new(
		    base, -1, cl->ssl, BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);
		if (cl->bev)
			bufferevent_openssl_set_allow_dirty_shutdown(cl->bev, 1);
		else
			SSL_free(cl->ssl);
	} else {
		cl->bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
	}
	if (cl->bev == NULL) {
		cl->ssl = NULL;
		cl_error(cl, "4.4.1 cannot create a socket for %s[%s]", cl->host, cl->ip);
		cl->state = CL_DEAD;
		cl->flags |= F_UNUSABLE;
		cl_later(cl, LATER_FAILED);
		return cl;
	}
	bufferevent_setcb(cl->bev, cl_read_cb, cl_write_cb, cl_event_cb, cl);
	cl_timeout(cl, cl->t.connect, cl->t.connect);
	bufferevent_enable(cl->bev, EV_READ | EV_WRITE);
	log_msg(LL_DEBUG, cl->log_id, "client: connecting to %s[%s]", cl->host, cl->ip);
	if (bufferevent_socket_connect(cl->bev, (struct sockaddr *)&cl->sa, (int)cl->salen) < 0) {
		int serr = EVUTIL_SOCKET_ERROR();
		cl_error(cl, "4.4.1 connect to host %s[%s] failed: %s", cl->host, cl->ip,
			 evutil_socket_error_to_string(serr));
		cl_close(cl);
		cl_later(cl, LATER_FAILED);
	}
	return cl;
}

int
smtp_client_usable(const struct smtp_client *cl)
{
	return cl->bev != NULL && cl->state == CL_READY && !(cl->flags & F_UNUSABLE);
}

const char *
smtp_client_error(const struct smtp_client *cl)
{
	return buf_str(&cl->err);
}

const char *
smtp_client_error_status(const struct smtp_client *cl)
{
	return cl->err_status;
}

const char *
smtp_client_error_reply(const struct smtp_client *cl)
{
	return buf_str(&cl->err_reply);
}

int
smtp_client_error_tls(const struct smtp_client *cl)
{
	return cl->err_tls;
}

const char *
smtp_client_tls_desc(const struct smtp_client *cl)
{
	return cl->tlsdesc;
}

const struct smtp_caps *
smtp_client_caps(const struct smtp_client *cl)
{
	return &cl->caps;
}

unsigned
smtp_client_txns(const struct smtp_client *cl)
{
	return cl->ntxns;
}

void
smtp_client_idle(struct smtp_client *cl, int idle)
{
	if (cl->bev == NULL)
		return;
	cl->idle = idle;
	cl_timeout(cl, idle, 0);
}

static void
cl_really_free(struct smtp_client *cl)
{
	if (cl->bev)
		bufferevent_free(cl->bev);
	if (cl->later)
		event_free(cl->later);
	smtp_reply_parser_free(&cl->rp);
	buf_free(&cl->err);
	buf_free(&cl->err_reply);
	free(cl->cmds);
	free(cl->accepted);
	free(cl->helo);
	free(cl->host);
	free(cl->log_id);
	free(cl->auth_user);
	if (cl->auth_pass) {
		util_wipe(cl->auth_pass, strlen(cl->auth_pass));
		free(cl->auth_pass);
	}
	free(cl);
}

void
smtp_client_free(struct smtp_client **clp)
{
	struct smtp_client *cl = *clp;
	if (cl == NULL)
		return;
	*clp = NULL;
	cl->cb = NULL;
	if (cl->hold > 0) {
		/* Inside one of our own callbacks: the caller frees on the way out. */
		if (cl->bev) {
			bufferevent_free(cl->bev);
			cl->bev = NULL;
		}
		cl->flags |= F_FREE;
		return;
	}
	cl_really_free(cl);
}

void
smtp_client_quit(struct smtp_client *cl)
{
	if (!smtp_client_usable(cl)) {
		cl_close(cl);
		cl_error(cl, "session closed");
		cl_later(cl, LATER_FAILED);
		return;
	}
	cl_write(cl, "QUIT");
	cl_set_state(cl, CL_QUIT);
	cl_timeout(cl, 5, 5);
}
