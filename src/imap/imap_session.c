/*
 * imap_session — see imap_session.h. This file holds the session frame:
 * input (the parser, literals, raw lines), the command table and dispatch,
 * replies, worker jobs, the selected mailbox's view and how it follows the
 * store, the change-notification registry and the connection callbacks.
 * The commands themselves are in imap_cmd_*.c.
 *
 * Input: the parser consumes at most one item per call, so after a command
 * that changes the connection (STARTTLS) or switches to raw lines (IDLE,
 * AUTHENTICATE) the rest of the input is still in the evbuffer. While a
 * worker job runs, or while too much output waits for the client, reading
 * stops and pipelined input waits in the buffer.
 *
 * The view: sessions see a mailbox as it was when they last told the
 * client. Changes found by polling the store (a cheap HIGHESTMODSEQ probe,
 * then store_changes_since) are merged at once; expunged messages stay in
 * the view as ghosts until an EXPUNGE (or VANISHED) may be sent, so
 * sequence numbers never move under a FETCH, STORE or SEARCH.
 *
 * SECURITY: see the header. The parser enforces the size limits before
 * anything is promised; this file decides about each literal (state,
 * command, quota) before sending "+".
 */
#include "imap/imap_session.h"
#include "imap/imap_cmd.h"

#include "core/config.h"
#include "core/log.h"
#include "core/tls.h"
#include "core/worker.h"

#include <ctype.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#define BAD_MAX 10		    /* bad commands before BYE */
#define OUT_HIGH (4u * 1024 * 1024) /* stop reading above this much pending output */
#define OUT_LOW (256u * 1024)	    /* resume below this */
/* conn_read_more(): input read ahead at most, as in SMTP (SMTP_IN_MAX). */
#define IMAP_READ_MORE_MAX ((size_t)256 * 1024)
#define PREAUTH_TIMEOUT 60	    /* seconds, before login */
#define IDLE_TICK 30	       /* seconds between polls in IDLE, for changes by other processes */
#define IDLE_KEEPALIVE_TICKS 4 /* "* OK Still here" every 2 minutes */
#define NOTICES_MAX 1024       /* queued change notices before "wake all" */
#define REG_BUCKETS 4096       /* account buckets of the session registry */

static const char *const state_names[] = {"notauth", "auth", "selected", "logout"};

static void imap_process(struct imap_sess *s);
static void imap_sess_free(struct imap_sess *s);

/* ---- change notification registry ---- */

struct imap_notice {
	char *account;
	char *mailbox;
	struct imap_notice *next;
};

static struct {
	pthread_mutex_t lock;
	struct event *ev; /* activated from any thread */
	struct imap_notice *head;
	size_t n;
	bool overflow;
	/*
	 * Logged-in sessions by account (loop thread only): a change wakes
	 * the sessions of its account without a walk over all of them.
	 */
	struct imap_sess *buckets[REG_BUCKETS];
} imap_reg = {.lock = PTHREAD_MUTEX_INITIALIZER};

static size_t
imap_reg_bucket(const char *account)
{
	/* Folded: sessions are matched to an account with strcasecmp(). */
	return util_hash32_lower(0, account, strlen(account)) % REG_BUCKETS;
}

void
imap_reg_add(struct imap_sess *s)
{
	struct imap_sess **head = &imap_reg.buckets[imap_reg_bucket(s->user)];

	s->reg_prev = NULL;
	s->reg_next = *head;
	if (*head)
		(*head)->reg_prev = s;
	*head = s;
	s->registered = true;
}

static void
imap_reg_del(struct imap_sess *s)
{
	if (!s->registered)
		return;
	if (s->reg_prev)
		s->reg_prev->reg_next = s->reg_next;
	else
		imap_reg.buckets[imap_reg_bucket(s->user)] = s->reg_next;
	if (s->reg_next)
		s->reg_next->reg_prev = s->reg_prev;
	s->reg_prev = s->reg_next = NULL;
	s->registered = false;
}

/* The store hook: runs on whatever thread committed the change. */
static void
imap_notify_hook(const char *account, const char *mailbox, void *arg)
{
	pthread_mutex_lock(&imap_reg.lock);
	if (imap_reg.ev != NULL) {
		bool dup = false;
		for (struct imap_notice *n = imap_reg.head; n && !dup; n = n->next)
			dup = strcmp(n->account, account) == 0 &&
			      strcmp(n->mailbox, mailbox ? mailbox : "") == 0;
		if (!dup && imap_reg.n < NOTICES_MAX) {
			struct imap_notice *n = xcalloc(1, sizeof(*n));
			n->account = xstrdup(account);
			n->mailbox = xstrdup(mailbox ? mailbox : "");
			n->next = imap_reg.head;
			imap_reg.head = n;
			imap_reg.n++;
		} else if (!dup) {
			imap_reg.overflow = true;
		}
		/* Thread-safe: the base was made after evthread_use_pthreads(). */
		event_active(imap_reg.ev, 0, 0);
	}
	pthread_mutex_unlock(&imap_reg.lock);
}

static void
imap_notices_free(struct imap_notice *n)
{
	while (n) {
		struct imap_notice *next = n->next;
		free(n->account);
		free(n->mailbox);
		free(n);
		n = next;
	}
}

static bool imap_hold_release_poll(struct imap_sess *s);
static void imap_open_then(struct imap_sess *s,
			   void (*then)(struct imap_sess *, const struct imap_cmd *,
					const struct imap_arg *),
			   const struct imap_cmd *e, const struct imap_arg *args);

/* In IDLE on a selected mailbox, free to poll now. */
static bool
imap_reg_idling(const struct imap_sess *s)
{
	return (s->flags & SF_IDLE) && s->sel && !(s->flags & SF_WAIT) && s->state != IS_LOGOUT;
}

/* On the loop: wake every IDLE session whose mailbox changed. */
static void
imap_notify_cb(evutil_socket_t fd, short what, void *arg)
{
	pthread_mutex_lock(&imap_reg.lock);
	struct imap_notice *list = imap_reg.head;
	bool all = imap_reg.overflow;
	imap_reg.head = NULL;
	imap_reg.n = 0;
	imap_reg.overflow = false;
	pthread_mutex_unlock(&imap_reg.lock);

	/* Too many to list: every idling session looks. */
	for (size_t b = 0; all && b < REG_BUCKETS; b++)
		for (struct imap_sess *s = imap_reg.buckets[b], *next; s; s = next) {
			next = s->reg_next;
			if (imap_reg_idling(s))
				imap_hold_release_poll(s);
		}
	for (struct imap_notice *n = list; !all && n; n = n->next)
		for (struct imap_sess *s = imap_reg.buckets[imap_reg_bucket(n->account)], *next; s;
		     s = next) {
			next = s->reg_next;
			if (imap_reg_idling(s) && strcasecmp(n->account, s->user) == 0 &&
			    strcmp(n->mailbox, s->sel->name) == 0)
				imap_hold_release_poll(s);
		}
	imap_notices_free(list);
}

void
imap_server_init(struct server *srv)
{
	pthread_mutex_lock(&imap_reg.lock);
	if (imap_reg.ev == NULL)
		imap_reg.ev = event_new(srv->base, -1, 0, imap_notify_cb, NULL);
	pthread_mutex_unlock(&imap_reg.lock);
	store_set_notify(imap_notify_hook, NULL);
}

void
imap_server_fini(void)
{
	store_set_notify(NULL, NULL);
	pthread_mutex_lock(&imap_reg.lock);
	if (imap_reg.ev)
		event_free(imap_reg.ev);
	imap_reg.ev = NULL;
	imap_notices_free(imap_reg.head);
	imap_reg.head = NULL;
	imap_reg.n = 0;
	pthread_mutex_unlock(&imap_reg.lock);
}

/* ---- state, hold/release ---- */

void
imap_set_state(struct imap_sess *s, enum imap_state st)
{
	if (s->state != st && log_enabled(LL_DEBUG))
		log_msg(LL_DEBUG, s->c ? s->c->id : NULL, "state %s -> %s", state_names[s->state],
			state_names[st]);
	s->state = st;
}

/*
 * Every entry from the loop into a session (input, events, job
 * completions, timers, wake-ups) holds it: a close asked for meanwhile is
 * done by the last imap_release(), which returns 1 if the session is gone.
 */
static void
imap_hold(struct imap_sess *s)
{
	s->hold++;
}

/* Send what is queued, then close (conn_finish() closes later, from the loop). */
void
imap_finish_conn(struct imap_sess *s)
{
	if (s->flags & SF_FINISHING)
		return;
	s->flags |= SF_FINISHING;
	conn_finish(s->c);
}

static int
imap_release(struct imap_sess *s)
{
	if (--s->hold > 0)
		return 0;
	if (s->flags & SF_CLOSE_NOW) {
		conn_close(s->c);
		return 1;
	}
	if (s->state == IS_LOGOUT) {
		imap_finish_conn(s);
		return 1;
	}
	return 0;
}

/* Report what changed to a session in IDLE, then give its handle back. */
static void
imap_idle_report(struct imap_sess *s, const struct imap_cmd *e, const struct imap_arg *args)
{
	(void)e;
	(void)args;
	if (s->c != NULL && evbuffer_get_length(bufferevent_get_output(s->c->bev)) > OUT_HIGH) {
		/*
		 * The client does not read: report once it has (imap_write_cb).
		 * The store keeps the changes, so that report gives each
		 * message's state once, however often it changed meanwhile;
		 * a report per change would pile up here without bound.
		 */
		s->flags |= SF_IDLE_LATE;
	} else if (imap_sel_poll(s) == 0) {
		imap_sel_flush(s, true);
	}
	imap_store_return(s);
}

/*
 * A change reached an idling session: poll on an idle handle of the
 * account at once, or after opening one on a worker (never on the loop).
 */
static bool
imap_hold_release_poll(struct imap_sess *s)
{
	imap_hold(s);
	if (imap_store_take(s))
		imap_idle_report(s, NULL, NULL);
	else if (s->user != NULL)
		imap_open_then(s, imap_idle_report, NULL, NULL);
	return imap_release(s) == 0;
}

static void
imap_close(struct imap_sess *s)
{
	if (s->idle_timer)
		event_del(s->idle_timer);
	imap_set_state(s, IS_LOGOUT);
	if (s->hold == 0 && s->c)
		imap_finish_conn(s);
}

bool
imap_utf8(const struct imap_sess *s)
{
	return (s->enabled & (EN_REV2 | EN_UTF8)) != 0;
}

/* ---- output ---- */

void
imap_write(struct imap_sess *s, const void *p, size_t n)
{
	if (s->c == NULL || n == 0)
		return;
	bufferevent_write(s->c->bev, p, n);
}

void
imap_write_buf(struct imap_sess *s, struct buf *b)
{
	imap_write(s, b->data, b->len);
	buf_reset(b);
}

void
imap_printf(struct imap_sess *s, const char *fmt, ...)
{
	struct buf b = BUF_INIT(0);
	va_list ap;

	va_start(ap, fmt);
	buf_vprintf(&b, fmt, ap);
	va_end(ap);
	imap_write(s, b.data, b.len);
	buf_free(&b);
}

void
imap_quote(struct buf *out, const char *str, size_t len, bool utf8)
{
	bool lit = len > 1024;

	for (size_t i = 0; i < len && !lit; i++) {
		unsigned char ch = (unsigned char)str[i];
		if (ch == '\r' || ch == '\n' || ch == '\0' || (ch >= 0x80 && !utf8))
			lit = true;
	}
	if (lit) {
		buf_printf(out, "{%zu}\r\n", len);
		buf_append(out, str, len);
		return;
	}
	buf_putc(out, '"');
	for (size_t i = 0; i < len; i++) {
		if (str[i] == '"' || str[i] == '\\')
			buf_putc(out, '\\');
		buf_putc(out, str[i]);
	}
	buf_putc(out, '"');
}

void
imap_text(struct buf *out, const char *str, size_t max)
{
	size_t n = strlen(str);

	for (size_t i = 0; i < n && i < max; i++) {
		unsigned char ch = (unsigned char)str[i];
		buf_putc(out, ch >= 0x20 && ch < 0x7f ? (char)ch : '?');
	}
	if (n > max)
		buf_puts(out, "...");
}

void
imap_flags_list(struct buf *out, uint32_t flags, bool recent, const char *keywords)
{
	static const struct {
		uint32_t bit;
		const char *name;
	} names[] = {
	    {STORE_F_ANSWERED, "\\Answered"}, {STORE_F_FLAGGED, "\\Flagged"},
	    {STORE_F_DELETED, "\\Deleted"},   {STORE_F_SEEN, "\\Seen"},
	    {STORE_F_DRAFT, "\\Draft"},
	};
	bool first = true;

	buf_putc(out, '(');
	for (size_t i = 0; i < ARRAY_LEN(names); i++) {
		if (!(flags & names[i].bit))
			continue;
		if (!first)
			buf_putc(out, ' ');
		buf_puts(out, names[i].name);
		first = false;
	}
	if (recent) {
		if (!first)
			buf_putc(out, ' ');
		buf_puts(out, "\\Recent");
		first = false;
	}
	if (keywords && keywords[0]) {
		if (!first)
			buf_putc(out, ' ');
		buf_puts(out, keywords);
	}
	buf_putc(out, ')');
}

static void
imap_log_reply(struct imap_sess *s, const char *tag, const char *status, const char *text)
{
	if (!log_enabled(LL_DEBUG) || s->c == NULL)
		return;
	char esc[300];
	log_msg(LL_DEBUG, s->c->id, "> %s %s %s", tag, status, log_esc(esc, sizeof(esc), text));
}

int
imap_count_bad(struct imap_sess *s)
{
	if (++s->bad >= BAD_MAX && s->state != IS_LOGOUT) {
		log_msg(LL_WARN, s->c->id, "too many bad commands client=[%s] user=%s",
			s->c->peer_ip, s->user ? s->user : "-");
		imap_bye(s, "Too many invalid IMAP commands.");
		return 1;
	}
	return 0;
}

void
imap_bye(struct imap_sess *s, const char *fmt, ...)
{
	struct buf b = BUF_INIT(0);
	va_list ap;

	if (s->state == IS_LOGOUT)
		return;
	buf_puts(&b, "* BYE ");
	va_start(ap, fmt);
	buf_vprintf(&b, fmt, ap);
	va_end(ap);
	if (s->user)
		imap_log_logout(s, buf_str(&b) + 6);
	buf_puts(&b, "\r\n");
	imap_write_buf(s, &b);
	buf_free(&b);
	imap_close(s);
}

/*
 * The literals of the command are gone (or taken by its job): uncounted, in
 * all and for the client (unless its connection is gone: imap_on_close()
 * gave its share back then).
 */
static void
imap_literals_release(struct imap_sess *s)
{
	s->srv->imap_literals -= s->lit_held;
	if (s->c != NULL)
		server_ip_held(s->srv, s->c->ip_key, IP_HELD_IMAP, -(int64_t)s->lit_held);
	s->lit_held = 0;
}

void
imap_done(struct imap_sess *s, const char *status, const char *fmt, ...)
{
	struct buf t = BUF_INIT(0), b = BUF_INIT(0);
	va_list ap;
	unsigned cflags = s->cmd ? s->cmd->flags : 0;

	if (s->state == IS_LOGOUT && strcmp(status, "OK") != 0)
		goto out;
	if (s->state == IS_SELECTED && s->sel && !(cflags & CF_NOPOLL) && !(s->flags & SF_WAIT)) {
		if (imap_sel_poll(s) < 0)
			goto out;
		imap_sel_flush(s, !(cflags & CF_SEQS));
	}
	va_start(ap, fmt);
	buf_vprintf(&t, fmt, ap);
	va_end(ap);
	buf_printf(&b, "%s %s %s\r\n", s->tag ? s->tag : "*", status, buf_str(&t));
	imap_write_buf(s, &b);
	imap_log_reply(s, s->tag ? s->tag : "*", status, buf_str(&t));
out:
	imap_literals_release(s);
	s->cmd = NULL;
	free(s->tag);
	s->tag = NULL;
	buf_free(&t);
	buf_free(&b);
	imap_store_return(s);
	if (strcmp(status, "BAD") == 0)
		imap_count_bad(s);
	else if (strcmp(status, "OK") == 0 && (s->state == IS_AUTH || s->state == IS_SELECTED))
		/*
		 * Logged in, the limit is on BADs in a row, as Dovecot's: a
		 * session that lives for days and now and then asks for
		 * something the server refuses (a FETCH past EXISTS) is no
		 * client stuck in a loop.
		 */
		s->bad = 0;
}

void
imap_store_failure(struct imap_sess *s, const char *what, enum store_err e, const char *msg,
		   struct buf *out)
{
	if (e == STORE_OK || e == STORE_ERR_INTERNAL || e == STORE_ERR_NOSPACE)
		log_msg(LL_ERROR, s->c ? s->c->id : NULL, "%s failed: user=%s: %s", what,
			s->user ? s->user : "-", msg);
	switch (e) {
	case STORE_OK:
	case STORE_ERR_INTERNAL:
		buf_printf(out, "[SERVERBUG] %s failed: internal error (session %s)", what,
			   s->c ? s->c->id : "-");
		return;
	case STORE_ERR_BUSY:
		buf_puts(out, "[INUSE] Mailbox is busy, try again later");
		return;
	case STORE_ERR_NOSPACE:
		/* As Dovecot: the client shows it as a quota problem, which it is. */
		buf_printf(out, "[OVERQUOTA] %s failed: not enough disk space", what);
		return;
	default:
		break;
	}
	const char *code = "CANNOT";
	switch (e) {
	case STORE_ERR_NOMAILBOX:
		code = "NONEXISTENT";
		break;
	case STORE_ERR_EXISTS:
		code = "ALREADYEXISTS";
		break;
	case STORE_ERR_HASCHILDREN:
		code = "HASCHILDREN";
		break;
	case STORE_ERR_NOMSG:
		code = "EXPUNGEISSUED";
		break;
	case STORE_ERR_LIMIT:
		code = "LIMIT";
		break;
	case STORE_ERR_OVERQUOTA:
		code = "OVERQUOTA";
		break;
	case STORE_ERR_CHANGED:
		code = "NONEXISTENT";
		break;
	default:
		break;
	}
	buf_printf(out, "[%s] ", code);
	imap_text(out, msg, 200);
}

void
imap_done_store(struct imap_sess *s, const char *what, enum store_err e, const char *msg)
{
	struct buf t = BUF_INIT(0);

	imap_store_failure(s, what, e, msg, &t);
	imap_done(s, "NO", "%s", buf_str(&t));
	buf_free(&t);
}

void
imap_done_store_err(struct imap_sess *s, const char *what)
{
	imap_done_store(s, what, store_errcode(s->st), store_errstr(s->st));
}

/* ---- capabilities ---- */

bool
imap_auth_allowed(const struct imap_sess *s)
{
	return s->c->tls || s->srv->cfg->allow_plaintext_auth;
}

void
imap_capabilities(struct imap_sess *s, struct buf *out)
{
	/*
	 * RFC 7888: before login non-synchronising literals are capped at 4096
	 * octets (LITERAL-); after it any size up to imap.max_literal is taken
	 * without a round trip (LITERAL+), and a larger one is swallowed and
	 * answered NO [TOOBIG].
	 */
	buf_puts(out, s->state == IS_NOTAUTH ? "IMAP4rev1 IMAP4rev2 LITERAL- SASL-IR ID ENABLE IDLE"
					     : "IMAP4rev1 IMAP4rev2 LITERAL+ SASL-IR ID ENABLE IDLE");
	if (s->state == IS_NOTAUTH) {
		if (!s->c->tls && s->c->kind == LISTEN_IMAP && tls_server_available())
			buf_puts(out, " STARTTLS");
		if (imap_auth_allowed(s))
			buf_puts(out, " AUTH=PLAIN");
		else
			buf_puts(out, " LOGINDISABLED");
		return;
	}
	buf_puts(
	    out,
	    " NAMESPACE UNSELECT UIDPLUS CHILDREN LIST-EXTENDED LIST-STATUS"
	    " SPECIAL-USE CREATE-SPECIAL-USE MOVE CONDSTORE QRESYNC ESEARCH SEARCHRES"
	    " SORT SORT=DISPLAY THREAD=ORDEREDSUBJECT THREAD=REFERENCES MULTIAPPEND UTF8=ACCEPT"
	    " STATUS=SIZE QUOTA QUOTA=RES-STORAGE BINARY");
	buf_printf(out, " APPENDLIMIT=%lld", (long long)s->srv->cfg->imap_max_literal);
}

/* ---- limits and timeouts ---- */

void
imap_apply_limits(struct imap_sess *s)
{
	const struct config *cfg = s->srv->cfg;
	struct imap_parser_limits lim = {0};

	if (s->state == IS_NOTAUTH) {
		/* Before login: short lines, small literals, few arguments. */
		lim.max_line = cfg->imap_max_line < 8192 ? (size_t)cfg->imap_max_line : 8192;
		lim.max_literal = 8192;
		lim.max_nonsync = 4096;
		lim.max_command = 16384;
		lim.max_args = 64;
		lim.max_depth = 4;
	} else {
		lim.max_line = (size_t)cfg->imap_max_line;
		lim.max_literal = (uint64_t)cfg->imap_max_literal;
		lim.max_nonsync = (uint64_t)cfg->imap_max_literal; /* LITERAL+ (RFC 7888) */
		lim.max_args = 8192;
		lim.max_depth = 32;
	}
	imap_parser_set_limits(s->parser, &lim);
	imap_parser_set_utf8(s->parser, imap_utf8(s));
}

void
imap_timeouts(struct imap_sess *s)
{
	if (s->c == NULL)
		return;
	int64_t t = s->srv->cfg->imap_idle_timeout;
	if (s->state == IS_NOTAUTH && t > PREAUTH_TIMEOUT)
		t = PREAUTH_TIMEOUT;
	if (s->flags & SF_IDLE)
		t *= 2; /* clients re-IDLE every 29 minutes (RFC 2177) */
	struct timeval rt = {t, 0}, wt = {s->srv->cfg->imap_idle_timeout, 0};
	bufferevent_set_timeouts(s->c->bev, &rt, &wt);
}

/*
 * login_timeout runs from the accept (TLS handshakes included) and nothing
 * the client sends restarts it, unlike the idle timeout: neither trickled
 * bytes nor NOOP, CAPABILITY or STARTTLS keep a session that never logs in
 * (and its connection slot). A password check under way may answer first,
 * as at shutdown: the session cannot end under its job, and imap_process()
 * ends it after a failed one.
 */
static void
imap_login_bye(struct imap_sess *s)
{
	log_msg(LL_INFO, s->c->id, "login timeout client=[%s] after=%llds", s->c->peer_ip,
		(long long)s->srv->cfg->login_timeout);
	imap_bye(s, "Login timeout");
}

static void
imap_login_expired(evutil_socket_t fd, short what, void *arg)
{
	struct imap_sess *s = arg;

	if (s->state != IS_NOTAUTH)
		return;
	s->flags |= SF_LOGIN_LATE;
	if (s->flags & SF_WAIT)
		return;
	imap_hold(s);
	imap_login_bye(s);
	imap_release(s);
}

void
imap_enable_condstore(struct imap_sess *s)
{
	if (s->enabled & EN_CONDSTORE)
		return;
	s->enabled |= EN_CONDSTORE;
	if (s->sel)
		imap_printf(s, "* OK [HIGHESTMODSEQ %llu] Highest\r\n",
			    (unsigned long long)s->sel->modseq);
}

/* ---- the store handle ---- */

bool
imap_store_take(struct imap_sess *s)
{
	if (s->st == NULL && s->user != NULL) {
		s->st = store_pool_take(s->srv->cfg->data_dir, s->user);
		struct store_id id;
		if (s->st != NULL)
			store_id_of(s->st, &id);
		/* Another account's, made under the address since: the worker says so. */
		if (s->st != NULL && id.gen != s->store_id.gen)
			store_pool_give(&s->st);
	}
	return s->st != NULL;
}

void
imap_store_return(struct imap_sess *s)
{
	if (!(s->flags & SF_WAIT))
		store_pool_give(&s->st);
}

/* ---- jobs ---- */

/* Open the account's store on a worker, then go on with then(). */
struct open_job {
	struct imap_job j;
	void (*then)(struct imap_sess *s, const struct imap_cmd *e, const struct imap_arg *args);
	const struct imap_cmd *e;    /* for a command: it and its arguments */
	const struct imap_arg *args; /* the parser's: it reads nothing while we wait */
	const char *data_dir;
	char *user;
	struct store_id id;
	struct store *st;
	int gone;
	char err[256];
};

static void
open_work(struct imap_job *jj)
{
	struct open_job *j = (struct open_job *)jj;
	struct buf err = BUF_INIT(0);

	/* Never a new store: the account may have been deleted since login. */
	j->st = store_pool_get_same(j->data_dir, j->user, &j->id, &j->gone, &err);
	if (j->st == NULL)
		xsnprintf(j->err, sizeof(j->err), "%.200s", buf_str(&err));
	buf_free(&err);
}

static void
open_done(struct imap_sess *s, struct imap_job *jj)
{
	struct open_job *j = (struct open_job *)jj;

	if (j->gone) {
		log_msg(LL_INFO, s->c->id, "user=%s: the account was deleted; session closed",
			s->user);
		imap_bye(s, "[UNAVAILABLE] This account no longer exists.");
		return;
	}
	if (j->st == NULL) {
		log_msg(LL_ERROR, s->c->id, "user=%s: cannot open the store: %s", s->user, j->err);
		if (j->e != NULL) /* a command waits for it; a poll just waits for the next change */
			imap_done(s, "NO", "[UNAVAILABLE] Mailbox store unavailable, try again later");
		return;
	}
	s->st = j->st;
	j->st = NULL;
	j->then(s, j->e, j->args);
}

static void
open_free(struct imap_job *jj)
{
	struct open_job *j = (struct open_job *)jj;

	store_pool_give(&j->st);
	free(j->user);
	free(j);
}

static void
imap_open_then(struct imap_sess *s,
	       void (*then)(struct imap_sess *, const struct imap_cmd *, const struct imap_arg *),
	       const struct imap_cmd *e, const struct imap_arg *args)
{
	struct open_job *j = xcalloc(1, sizeof(*j));

	j->then = then;
	j->e = e;
	j->args = args;
	j->data_dir = s->srv->cfg->data_dir;
	j->user = xstrdup(s->user);
	j->id = s->store_id;
	j->j.work = open_work;
	j->j.done = open_done;
	j->j.free = open_free;
	imap_job_run(s, &j->j);
}

static void
imap_job_work(void *arg)
{
	struct imap_job *j = arg;
	j->work(j);
}

static void
imap_job_finish(struct imap_job *j)
{
	struct imap_sess *s = j->s;

	if (s->flags & SF_DEAD) {
		j->free(j);
		imap_sess_free(s);
		return;
	}
	imap_hold(s);
	s->flags &= ~SF_WAIT;
	j->keep = false;
	j->done(s, j);
	if (!j->keep)
		j->free(j);
	if (!(s->flags & SF_WAIT))
		imap_resume(s);
	imap_release(s);
}

static void
imap_job_delay_done(evutil_socket_t fd, short what, void *arg)
{
	struct imap_sess *s = arg;
	struct imap_job *j = s->delayed;

	s->delayed = NULL;
	imap_job_finish(j);
}

static void
imap_job_done(void *arg)
{
	struct imap_job *j = arg;
	struct imap_sess *s = j->s;

	if (j->settle)
		j->settle(s, j);
	if (j->delay && !(s->flags & SF_DEAD) && s->srv->cfg->auth_fail_delay > 0) {
		/* Slow down guessing: a failure is answered after a delay. */
		if (s->timer == NULL)
			s->timer = event_new(s->srv->base, -1, 0, imap_job_delay_done, s);
		s->delayed = j;
		event_add(s->timer, &(struct timeval){s->srv->cfg->auth_fail_delay, 0});
		return;
	}
	imap_job_finish(j);
}

void
imap_job_run(struct imap_sess *s, struct imap_job *j)
{
	j->s = s;
	j->st = s->st;
	s->flags |= SF_WAIT;
	bufferevent_disable(s->c->bev, EV_READ);
	worker_submit(j->auth ? s->srv->auth_pool : s->srv->pool, imap_job_work, imap_job_done, j);
}

void
imap_job_run_here(struct imap_sess *s, struct imap_job *j)
{
	j->s = s;
	j->st = s->st;
	j->keep = false;
	j->work(j);
	j->done(s, j);
	if (!j->keep)
		j->free(j);
}

void
imap_job_continue(struct imap_sess *s, struct imap_job *j)
{
	j->keep = true;
	if (s->c != NULL && evbuffer_get_length(bufferevent_get_output(s->c->bev)) > OUT_HIGH) {
		s->flags |= SF_DRAIN | SF_CONT;
		s->cont_job = j;
		bufferevent_disable(s->c->bev, EV_READ);
		return;
	}
	imap_job_run(s, j);
}

void
imap_resume(struct imap_sess *s)
{
	if (s->c == NULL || s->state == IS_LOGOUT || (s->flags & (SF_WAIT | SF_DRAIN)))
		return;
	bufferevent_enable(s->c->bev, EV_READ);
	imap_process(s);
}

/* ---- the selected mailbox ---- */

void
imap_msg_copy(struct store_msg *dst, const struct store_msg *src)
{
	*dst = *src;
	dst->keywords = src->keywords && src->keywords[0] ? xstrdup(src->keywords) : NULL;
}

void
imap_sel_free(struct imap_mbox **mp)
{
	struct imap_mbox *m = *mp;

	if (m == NULL)
		return;
	for (size_t i = 0; i < m->view.count; i++)
		free(m->view.msgs[i].keywords);
	free(m->view.msgs);
	free(m->mark);
	for (size_t i = 0; i < m->nkeywords; i++)
		free(m->keywords[i]);
	free(m->keywords);
	nameidx_free(&m->kwidx);
	imap_seqset_free(&m->recent);
	free(m->name);
	free(m);
	*mp = NULL;
}

ssize_t
imap_sel_find(const struct imap_mbox *m, uint32_t uid)
{
	size_t lo = 0, hi = m->view.count;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		uint32_t u = m->view.msgs[mid].uid;
		if (u == uid)
			return (ssize_t)mid;
		if (u < uid)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

/*
 * The keywords a session announces in FLAGS, at most this many. They are
 * found through a nameidx: every message of a view is checked against them
 * when it is loaded or changes, on the loop, and a scan of the list cost
 * 0.45 s per command for 1024 messages of 64 keywords each in a mailbox of
 * 1000 keywords.
 */
#define SEL_KEYWORDS_MAX 1000

/* Note the keywords of a message; a new one makes FLAGS due again. */
static void
imap_sel_note_keywords(struct imap_mbox *m, const char *kws)
{
	if (kws == NULL)
		return;
	if (m->kwidx.slot == NULL)
		nameidx_init(&m->kwidx, SEL_KEYWORDS_MAX);
	const char *p = kws;
	while (*p) {
		while (*p == ' ')
			p++;
		const char *e = p;
		while (*e && *e != ' ')
			e++;
		size_t n = (size_t)(e - p);
		uint32_t slot;
		if (n > 0 && m->nkeywords < SEL_KEYWORDS_MAX &&
		    nameidx_find(&m->kwidx, (const char *const *)m->keywords, p, n, &slot) < 0) {
			m->keywords =
			    xrealloc(m->keywords, (m->nkeywords + 1) * sizeof(*m->keywords));
			m->keywords[m->nkeywords] = xstrndup(p, n);
			nameidx_put(&m->kwidx, slot, m->nkeywords++);
			m->flags_dirty = true;
		}
		p = e;
	}
}

void
imap_sel_init_keywords(struct imap_mbox *m)
{
	for (size_t i = 0; i < m->view.count; i++)
		imap_sel_note_keywords(m, m->view.msgs[i].keywords);
}

bool
imap_kw_equal(const char *a, const char *b)
{
	if (a == NULL || a[0] == '\0')
		return b == NULL || b[0] == '\0';
	return b != NULL && strcmp(a, b) == 0;
}

void
imap_sel_merge(struct imap_sess *s, const struct store_msg *msgs, size_t n, bool announce)
{
	struct imap_mbox *m = s->sel;

	for (size_t i = 0; i < n; i++) {
		const struct store_msg *nm = &msgs[i];
		ssize_t idx = imap_sel_find(m, nm->uid);
		if (idx >= 0) {
			struct store_msg *om = &m->view.msgs[idx];
			if (m->mark[idx] & MK_GHOST)
				continue;
			if (om->modseq == nm->modseq && om->flags == nm->flags &&
			    imap_kw_equal(om->keywords, nm->keywords))
				continue;
			bool same =
			    om->flags == nm->flags && imap_kw_equal(om->keywords, nm->keywords);
			free(om->keywords);
			imap_msg_copy(om, nm);
			imap_sel_note_keywords(m, om->keywords);
			/* A modseq-only change matters to CONDSTORE clients only. */
			if (announce && (!same || (s->enabled & EN_CONDSTORE)))
				m->mark[idx] |= MK_FLAGS;
			continue;
		}
		if (m->view.count > 0 && nm->uid < m->view.msgs[m->view.count - 1].uid)
			continue; /* older than what we know and not in the view: gone */
		if (m->view.count == m->cap) {
			m->cap = m->cap ? m->cap * 2 : 64;
			m->view.msgs = xrealloc(m->view.msgs, m->cap * sizeof(*m->view.msgs));
			m->mark = xrealloc(m->mark, m->cap);
		}
		imap_msg_copy(&m->view.msgs[m->view.count], nm);
		m->mark[m->view.count] = 0;
		m->view.count++;
		imap_sel_note_keywords(m, nm->keywords);
		if (nm->uid >= m->view.uidnext)
			m->view.uidnext = nm->uid + 1;
	}
}

/* Index of the first message of the view with a UID of at least uid. */
static size_t
imap_sel_lower_bound(const struct imap_mbox *m, uint32_t uid)
{
	size_t lo = 0, hi = m->view.count;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (m->view.msgs[mid].uid < uid)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/*
 * The \Recent messages of the view; with ghosts, the expunged ones not yet
 * announced too. A binary search per range of the set (a handful: one per
 * SELECT and per batch of new mail), not a walk over the recent messages:
 * SELECT of a large mailbox that was never selected stays O(log n) here.
 */
static uint32_t
imap_sel_recent_in_view(const struct imap_mbox *m, bool ghosts)
{
	size_t n = 0;

	for (size_t k = 0; k < m->recent.count; k++) {
		const struct imap_seq_range *r = &m->recent.r[k];
		size_t a = imap_sel_lower_bound(m, r->lo);
		size_t b = r->hi == UINT32_MAX ? m->view.count : imap_sel_lower_bound(m, r->hi + 1);
		n += b - a;
		/* Ghosts are few and short-lived: gone at the next flush. */
		for (size_t i = a; !ghosts && m->nghosts > 0 && i < b; i++)
			if (m->mark[i] & MK_GHOST)
				n--;
	}
	return (uint32_t)n;
}

uint32_t
imap_sel_recent_count(const struct imap_mbox *m)
{
	return imap_sel_recent_in_view(m, false);
}

/*
 * New mail in the view: a read-write session takes its \Recent from the
 * store, without waiting on the loop (busy: at the next poll); a read-only
 * one notes what is still above the watermark.
 */
static void
imap_sel_take_recent(struct imap_sess *s, uint32_t watermark)
{
	struct imap_mbox *m = s->sel;
	uint32_t lo, hi;
	int rc;

	if (m->view.uidnext <= m->recent_next)
		return;
	if (m->readonly) {
		lo = watermark > m->recent_next ? watermark : m->recent_next;
		hi = m->view.uidnext;
	} else if ((rc = store_mailbox_claim_recent(s->st, m->name, m->view.uidvalidity, 1, &lo,
						    &hi)) == 0) {
		return;
	} else if (rc < 0) {
		log_msg(LL_WARN, s->c->id, "no \\Recent taken user=%s: %s", s->user,
			store_errstr(s->st));
		lo = hi = m->view.uidnext; /* left \Recent for another session */
	}
	if (lo < hi) {
		imap_seqset_add(&m->recent, lo, hi - 1);
		imap_seqset_normalize(&m->recent);
	}
	if (hi > m->recent_next)
		m->recent_next = hi;
}

bool
imap_sel_recent(const struct imap_sess *s, uint32_t uid)
{
	const struct imap_mbox *m = s->sel;

	return !(s->enabled & EN_REV2) && m != NULL && m->recent.count > 0 &&
	       imap_seqset_contains(&m->recent, uid);
}

void
imap_sel_expunged(struct imap_sess *s, const uint32_t *uids, size_t n)
{
	struct imap_mbox *m = s->sel;

	/* Called before m->modseq takes in the expunges. */
	if (m->nghosts == 0)
		m->ghost_floor = m->modseq;
	for (size_t i = 0; i < n; i++) {
		ssize_t idx = imap_sel_find(m, uids[i]);
		if (idx >= 0 && !(m->mark[idx] & MK_GHOST)) {
			m->mark[idx] = MK_GHOST;
			m->nghosts++;
		}
	}
}

/* The selected mailbox is gone or was replaced: the session cannot go on. */
static int
imap_sel_lost(struct imap_sess *s, const char *why)
{
	log_msg(LL_INFO, s->c->id, "selected mailbox lost user=%s: %s", s->user, why);
	imap_bye(s, "[UNAVAILABLE] Selected mailbox was deleted or renamed, reconnect.");
	return -1;
}

/* imap_sel_poll() with the store handle borrowed. */
static int
imap_sel_poll_store(struct imap_sess *s)
{
	struct imap_mbox *m = s->sel;
	uint32_t uv = 0;
	uint64_t hms = 0;
	struct store_changes ch;

	if (store_mailbox_modseq(s->st, m->name, &uv, &hms) < 0) {
		enum store_err e = store_errcode(s->st);
		if (e == STORE_ERR_NOMAILBOX || e == STORE_ERR_NOSELECT)
			return imap_sel_lost(s, store_errstr(s->st));
		log_msg(LL_WARN, s->c->id, "poll failed user=%s: %s", s->user, store_errstr(s->st));
		return 0;
	}
	if (uv != m->view.uidvalidity)
		return imap_sel_lost(s, "UIDVALIDITY changed");
	if (hms <= m->modseq) {
		imap_sel_take_recent(s, 0); /* what a busy store left untaken */
		return 0;
	}
	if (store_changes_since(s->st, m->name, uv, m->modseq, &ch) < 0) {
		enum store_err e = store_errcode(s->st);
		if (e == STORE_ERR_NOMAILBOX || e == STORE_ERR_NOSELECT || e == STORE_ERR_CHANGED)
			return imap_sel_lost(s, store_errstr(s->st));
		log_msg(LL_WARN, s->c->id, "poll failed user=%s: %s", s->user, store_errstr(s->st));
		return 0;
	}
	imap_sel_merge(s, ch.msgs, ch.nmsgs, true);
	imap_sel_expunged(s, ch.expunged, ch.nexpunged);
	if (ch.highestmodseq > m->modseq)
		m->modseq = ch.highestmodseq;
	m->view.highestmodseq = m->modseq;
	if (ch.uidnext > m->view.uidnext)
		m->view.uidnext = ch.uidnext;
	imap_sel_take_recent(s, ch.recent_uid);
	store_changes_free(&ch);
	return 0;
}

int
imap_sel_poll(struct imap_sess *s)
{
	if (s->sel == NULL || s->st == NULL || (s->flags & SF_WAIT) || s->state == IS_LOGOUT)
		return 0;
	return imap_sel_poll_store(s);
}

void
imap_sel_send_flags(struct imap_sess *s)
{
	struct imap_mbox *m = s->sel;
	struct buf b = BUF_INIT(0), kw = BUF_INIT(0);

	for (size_t i = 0; i < m->nkeywords; i++) {
		buf_putc(&kw, ' ');
		buf_puts(&kw, m->keywords[i]);
	}
	buf_printf(&b, "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft%s)\r\n",
		   buf_str(&kw));
	if (m->readonly)
		buf_puts(&b, "* OK [PERMANENTFLAGS ()] Read-only mailbox.\r\n");
	else
		buf_printf(&b,
			   "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft%s "
			   "\\*)] Flags permitted.\r\n",
			   buf_str(&kw));
	imap_write_buf(s, &b);
	m->flags_dirty = false;
	buf_free(&b);
	buf_free(&kw);
}

/* Drop the ghosts from the view, announcing each; returns how many. */
static size_t
imap_sel_drop_ghosts(struct imap_sess *s, struct buf *out)
{
	struct imap_mbox *m = s->sel;
	size_t removed = 0;

	if (m->nghosts == 0)
		return 0;
	if (s->enabled & EN_QRESYNC) {
		uint32_t *uids = xmalloc(m->nghosts * sizeof(*uids));
		size_t k = 0;
		for (size_t i = 0; i < m->view.count; i++)
			if (m->mark[i] & MK_GHOST)
				uids[k++] = m->view.msgs[i].uid;
		struct imap_seqset set;
		imap_seqset_init(&set);
		for (size_t i = 0; i < k; i++)
			imap_seqset_add(&set, uids[i], uids[i]);
		imap_seqset_normalize(&set);
		buf_puts(out, "* VANISHED ");
		imap_seqset_format(&set, out);
		buf_puts(out, "\r\n");
		imap_seqset_free(&set);
		free(uids);
	} else {
		for (size_t i = m->view.count; i-- > 0;)
			if (m->mark[i] & MK_GHOST)
				buf_printf(out, "* %zu EXPUNGE\r\n", i + 1);
	}
	size_t w = 0;
	for (size_t i = 0; i < m->view.count; i++) {
		if (m->mark[i] & MK_GHOST) {
			free(m->view.msgs[i].keywords);
			removed++;
			continue;
		}
		m->view.msgs[w] = m->view.msgs[i];
		m->mark[w] = m->mark[i];
		w++;
	}
	m->view.count = w;
	m->nghosts = 0;
	return removed;
}

void
imap_sel_flush(struct imap_sess *s, bool expunges)
{
	struct imap_mbox *m = s->sel;
	struct buf b = BUF_INIT(0);

	if (m == NULL || s->state == IS_LOGOUT)
		return;
	if (m->flags_dirty)
		imap_sel_send_flags(s);
	bool rev1 = !(s->enabled & EN_REV2);
	bool drop = expunges && m->nghosts > 0;
	/*
	 * \Recent messages once the expunges are sent; until then, as EXISTS,
	 * RECENT counts the expunged ones not yet announced too.
	 */
	uint32_t recent = rev1 ? imap_sel_recent_count(m) : 0;
	uint32_t shown = rev1 && !drop ? imap_sel_recent_in_view(m, true) : recent;
	if (m->view.count != m->exists_sent) {
		int grew = m->view.count > m->exists_sent;
		buf_printf(&b, "* %zu EXISTS\r\n", m->view.count);
		m->exists_sent = (uint32_t)m->view.count;
		if (rev1 && shown > m->recent_sent) {
			buf_printf(&b, "* %u RECENT\r\n", shown);
			m->recent_sent = shown;
		}
		/*
		 * New messages raise the mailbox's mod-sequence; a CONDSTORE client
		 * that only learns it at its next SELECT would resync them again
		 * (interimap does). Dovecot says it here too.
		 */
		if (grew && (s->enabled & EN_CONDSTORE))
			m->hms_due = true;
	} else if (rev1 && shown > m->recent_sent) {
		/* Taken after their EXISTS went out, the store having been busy. */
		buf_printf(&b, "* %u RECENT\r\n", shown);
		m->recent_sent = shown;
	}
	if (drop) {
		size_t n = imap_sel_drop_ghosts(s, &b);
		m->exists_sent -= (uint32_t)n;
		/*
		 * RFC 3501 §7.3.2: RECENT is sent when the number of \Recent
		 * messages changes, expunges included (Dovecot sends it after the
		 * EXPUNGEs). IMAP4rev2 has no RECENT.
		 */
		if (rev1 && recent != m->recent_sent) {
			buf_printf(&b, "* %u RECENT\r\n", recent);
			m->recent_sent = recent;
		}
	}
	for (size_t i = 0; i < m->view.count; i++) {
		if (!(m->mark[i] & MK_FLAGS) || (m->mark[i] & MK_GHOST))
			continue;
		const struct store_msg *msg = &m->view.msgs[i];
		buf_printf(&b, "* %zu FETCH (UID %u FLAGS ", i + 1, msg->uid);
		imap_flags_list(&b, msg->flags, imap_sel_recent(s, msg->uid), msg->keywords);
		if (s->enabled & EN_CONDSTORE)
			buf_printf(&b, " MODSEQ (%llu)", (unsigned long long)msg->modseq);
		buf_puts(&b, ")\r\n");
		m->mark[i] &= (unsigned char)~MK_FLAGS;
		if (b.len > 65536)
			imap_write_buf(s, &b);
	}
	/*
	 * Last, and not while an expunge is held back: a client that resyncs
	 * from it after a lost connection must not miss that expunge
	 * (RFC 7162 §3.2).
	 */
	if (m->hms_due && m->nghosts == 0) {
		buf_printf(&b, "* OK [HIGHESTMODSEQ %llu] Highest\r\n",
			   (unsigned long long)m->modseq);
		m->hms_due = false;
	} else if (m->nghosts > 0 && (s->enabled & EN_QRESYNC)) {
		/* The MODSEQs sent meanwhile are above a held-back expunge. */
		buf_printf(&b, "* OK [HIGHESTMODSEQ %llu] Expunges held back\r\n",
			   (unsigned long long)m->ghost_floor);
	}
	imap_write_buf(s, &b);
	buf_free(&b);
}

int
imap_msgset(struct imap_sess *s, const struct imap_arg *a, bool uid, struct imap_seqset *seqs,
	    const char **err_r)
{
	struct imap_mbox *m = s->sel;
	struct imap_seqset parsed, saved, res;
	const char *str;
	int rc = 0;

	imap_seqset_init(seqs);
	if (!imap_arg_atom(a, &str) || imap_arg_is_nil(a)) {
		*err_r = "Invalid sequence set: an atom like 1:4,7 was expected";
		return -1;
	}
	imap_seqset_init(&parsed);
	imap_seqset_init(&saved);
	imap_seqset_init(&res);
	if (imap_seqset_parse(&parsed, str, a->len, IMAP_SEQSET_ALLOW_SAVED, err_r) < 0) {
		imap_seqset_free(&parsed);
		return -1;
	}
	size_t count = m->view.count;
	if (!uid) {
		if (parsed.saved && s->saved_valid) {
			/* "$" holds UIDs; here it means their sequence numbers. */
			struct imap_seqset_iter it;
			uint32_t u;
			imap_seqset_iter_init(&it);
			while (imap_seqset_iter_next(&s->saved, &it, &u)) {
				ssize_t idx = imap_sel_find(m, u);
				if (idx >= 0)
					imap_seqset_add(&saved, (uint32_t)idx + 1,
							(uint32_t)idx + 1);
			}
			imap_seqset_normalize(&saved);
		}
		imap_seqset_resolve(&parsed, (uint32_t)count, &saved, seqs);
		if (imap_seqset_last(seqs) > count) {
			*err_r = count == 0
				     ? "Invalid message sequence number: the mailbox is empty"
				     : "Invalid message sequence number: beyond EXISTS";
			imap_seqset_clear(seqs);
			rc = -1;
		}
	} else {
		uint32_t max = count ? m->view.msgs[count - 1].uid : 0;
		imap_seqset_resolve(&parsed, max, s->saved_valid ? &s->saved : NULL, &res);
		if (res.count > 0) {
			for (size_t i = 0; i < count; i++)
				if (imap_seqset_contains(&res, m->view.msgs[i].uid))
					imap_seqset_add(seqs, (uint32_t)i + 1, (uint32_t)i + 1);
		}
		imap_seqset_normalize(seqs);
	}
	imap_seqset_free(&parsed);
	imap_seqset_free(&saved);
	imap_seqset_free(&res);
	return rc;
}

void
imap_seqs_to_ranges(const struct imap_sess *s, const struct imap_seqset *seqs,
		    struct store_range **r, size_t *n)
{
	const struct imap_mbox *m = s->sel;

	*r = xcalloc(seqs->count ? seqs->count : 1, sizeof(**r));
	*n = 0;
	for (size_t i = 0; i < seqs->count; i++) {
		/* No UID lies between two neighbours of the view: one range is exact. */
		(*r)[*n].lo = m->view.msgs[seqs->r[i].lo - 1].uid;
		(*r)[*n].hi = m->view.msgs[seqs->r[i].hi - 1].uid;
		(*n)++;
	}
}

/* ---- commands ---- */

static void
imap_cmd_uid_invalid(struct imap_sess *s, const struct imap_arg *args)
{
	imap_done(s, "BAD",
		  "UID must be followed by FETCH, STORE, COPY, MOVE, SEARCH, SORT, "
		  "THREAD or EXPUNGE");
}

static const struct imap_cmd imap_cmds[] = {
    {"CAPABILITY", imap_cmd_capability, ST_ANY, CF_NOPOLL},
    {"NOOP", imap_cmd_noop, ST_ANY, 0},
    {"LOGOUT", imap_cmd_logout, ST_ANY, CF_NOPOLL},
    {"STARTTLS", imap_cmd_starttls, ST_BIT(IS_NOTAUTH), CF_NOPOLL},
    {"LOGIN", imap_cmd_login, ST_BIT(IS_NOTAUTH), CF_NOPOLL},
    {"AUTHENTICATE", imap_cmd_authenticate, ST_BIT(IS_NOTAUTH), CF_NOPOLL},
    {"ID", imap_cmd_id, ST_ANY, CF_NOPOLL},
    {"ENABLE", imap_cmd_enable, ST_BIT(IS_AUTH), CF_NOPOLL},
    {"NAMESPACE", imap_cmd_namespace, ST_AUTHED, 0},
    {"SELECT", imap_cmd_select, ST_AUTHED, CF_NOPOLL},
    {"EXAMINE", imap_cmd_examine, ST_AUTHED, CF_NOPOLL},
    {"CREATE", imap_cmd_create, ST_AUTHED, 0},
    {"DELETE", imap_cmd_delete, ST_AUTHED, 0},
    {"RENAME", imap_cmd_rename, ST_AUTHED, 0},
    {"SUBSCRIBE", imap_cmd_subscribe, ST_AUTHED, 0},
    {"UNSUBSCRIBE", imap_cmd_unsubscribe, ST_AUTHED, 0},
    {"LIST", imap_cmd_list, ST_AUTHED, 0},
    {"LSUB", imap_cmd_lsub, ST_AUTHED, 0},
    {"STATUS", imap_cmd_status, ST_AUTHED, 0},
    {"APPEND", imap_cmd_append, ST_AUTHED, 0},
    {"IDLE", imap_cmd_idle, ST_AUTHED, CF_NOPOLL},
    {"GETQUOTA", imap_cmd_getquota, ST_AUTHED, 0},
    {"GETQUOTAROOT", imap_cmd_getquotaroot, ST_AUTHED, 0},
    {"SETQUOTA", imap_cmd_setquota, ST_AUTHED, 0},
    {"CHECK", imap_cmd_check, ST_SEL, 0},
    {"CLOSE", imap_cmd_close, ST_SEL, CF_NOPOLL},
    {"UNSELECT", imap_cmd_unselect, ST_SEL, CF_NOPOLL},
    {"EXPUNGE", imap_cmd_expunge, ST_SEL, CF_UID},
    {"SEARCH", imap_cmd_search, ST_SEL, CF_SEQS | CF_UID},
    {"FETCH", imap_cmd_fetch, ST_SEL, CF_SEQS | CF_UID},
    {"STORE", imap_cmd_store, ST_SEL, CF_SEQS | CF_UID},
    {"COPY", imap_cmd_copy, ST_SEL, CF_SEQS | CF_UID},
    {"MOVE", imap_cmd_move, ST_SEL, CF_UID},
    {"SORT", imap_cmd_sort, ST_SEL, CF_SEQS | CF_UID},
    {"THREAD", imap_cmd_thread, ST_SEL, CF_SEQS | CF_UID},
    {"UID", imap_cmd_uid_invalid, ST_SEL, 0},
};

static const struct imap_cmd *
imap_cmd_find(const char *name)
{
	for (size_t i = 0; i < ARRAY_LEN(imap_cmds); i++)
		if (strcasecmp(imap_cmds[i].name, name) == 0)
			return &imap_cmds[i];
	return NULL;
}

/* Why e is refused now: what the command needs, not what the state lacks. */
static const char *
imap_state_hint(const struct imap_sess *s, const struct imap_cmd *e)
{
	if (s->state == IS_NOTAUTH)
		return "log in first";
	if (e->states == ST_BIT(IS_NOTAUTH))
		return "already logged in";
	if (s->state == IS_AUTH)
		return "select a mailbox first";
	return "not valid in the selected state";
}

static void
imap_run_cmd(struct imap_sess *s, const struct imap_cmd *e, const struct imap_arg *args)
{
	e->fn(s, args);
}

static void
imap_dispatch(struct imap_sess *s, const struct imap_command *cmd)
{
	const struct imap_arg *args = cmd->args;
	const struct imap_cmd *e = imap_cmd_find(cmd->name);

	free(s->tag);
	s->tag = xstrdup(cmd->tag);
	s->uid = false;
	s->lit_bytes = 0;
	xsnprintf(s->cmdname, sizeof(s->cmdname), "%.20s", cmd->name);
	for (char *p = s->cmdname; *p; p++)
		*p = (char)toupper((unsigned char)*p);
	if (e == NULL) {
		s->cmd = NULL;
		imap_done(s, "BAD", "Unknown command %s", s->cmdname);
		return;
	}
	if (strcmp(e->name, "UID") == 0 && (e->states & ST_BIT(s->state))) {
		const char *sub;
		const struct imap_cmd *se = NULL;
		if (imap_arg_atom(args, &sub) && !imap_arg_is_nil(args))
			se = imap_cmd_find(sub);
		if (se == NULL || !(se->flags & CF_UID)) {
			s->cmd = e;
			e->fn(s, args);
			return;
		}
		e = se;
		s->uid = true;
		args++;
		xsnprintf(s->cmdname, sizeof(s->cmdname), "UID %.20s", e->name);
	}
	if (log_enabled(LL_DEBUG)) {
		char esc[100];
		log_msg(LL_DEBUG, s->c->id, "< %s %s", log_esc(esc, sizeof(esc), cmd->tag),
			s->cmdname);
	}
	if (!(e->states & ST_BIT(s->state))) {
		s->cmd = NULL;
		imap_done(s, "BAD", "%s: %s", s->cmdname, imap_state_hint(s, e));
		return;
	}
	s->cmd = e;
	s->ncmds++;
	if (s->user != NULL && !imap_store_take(s)) {
		/* No idle handle: open one on the pool, not on the loop; then run the command. */
		imap_open_then(s, imap_run_cmd, e, args);
		return;
	}
	e->fn(s, args);
}

/* ---- input ---- */

/* Refuse a literal the parser waits on, answering with the command's tag. */
static void
imap_literal_refuse(struct imap_sess *s, const char *status, const char *text)
{
	const char *tag = imap_parser_tag(s->parser);

	imap_parser_literal_reject(s->parser);
	imap_printf(s, "%s %s %s\r\n", tag ? tag : "*", status, text);
	imap_log_reply(s, tag ? tag : "*", status, text);
}

static void
imap_literal(struct imap_sess *s)
{
	uint64_t size;
	bool sync, binary;
	const char *name = imap_parser_command_name(s->parser);
	const struct imap_cmd *e = name ? imap_cmd_find(name) : NULL;

	imap_parser_literal_info(s->parser, &size, &sync, &binary);
	if (e == NULL) {
		imap_literal_refuse(s, "BAD", "Unknown command");
		imap_count_bad(s);
		return;
	}
	if (!(e->states & ST_BIT(s->state))) {
		imap_literal_refuse(s, "BAD", "Command not valid in this state");
		imap_count_bad(s);
		return;
	}
	/*
	 * A literal is held in memory until its command is done, and a client
	 * may send one of imap.max_literal on every connection: what all
	 * sessions hold is capped too, and what one client address holds at a
	 * quarter of that, so that one user's client cannot take it all. A
	 * literal past either is refused for now (the command with it), before
	 * it is sent when it is synchronising.
	 */
	uint64_t cap = (uint64_t)config_literal_memory(s->srv->cfg);
	uint64_t share = (uint64_t)config_client_share((int64_t)cap, s->srv->cfg->imap_max_literal);
	uint64_t mine = server_ip_held(s->srv, s->c->ip_key, IP_HELD_IMAP, 0);
	if (s->srv->imap_literals + size > cap || mine + size > share) {
		log_msg(LL_WARN, s->c->id,
			"literal of %llu octets refused: sessions hold %llu of %llu, %llu of them "
			"from this client (%llu per client)",
			(unsigned long long)size, (unsigned long long)s->srv->imap_literals,
			(unsigned long long)cap, (unsigned long long)mine,
			(unsigned long long)share);
		imap_literals_release(s);
		s->lit_bytes = 0;
		imap_literal_refuse(s, "NO",
				    "[UNAVAILABLE] Too much mail in memory now, try again later");
		return;
	}
	s->srv->imap_literals += size;
	server_ip_held(s->srv, s->c->ip_key, IP_HELD_IMAP, (int64_t)size);
	s->lit_held += size;
	if (e->fn == imap_cmd_append) {
		struct buf t = BUF_INIT(0);
		s->lit_bytes += size;
		int rc = imap_append_literal_check(s, s->lit_bytes);
		if (rc < 0) {
			if (rc == -2)
				buf_puts(&t, "[OVERQUOTA] APPEND failed: not enough disk space");
			else
				imap_quota_text(s, &t);
			imap_literal_refuse(s, "NO", buf_str(&t));
			buf_free(&t);
			s->lit_bytes = 0;
			imap_literals_release(s);
			return;
		}
	}
	imap_parser_literal_accept(s->parser);
	if (sync)
		imap_puts(s, "+ OK\r\n");
}

static void
imap_parse_error(struct imap_sess *s)
{
	const char *msg;
	enum imap_parse_error e = imap_parser_error(s->parser, &msg);
	const char *tag = imap_parser_tag(s->parser);
	const char *status = "BAD";
	struct buf t = BUF_INIT(0);

	s->lit_bytes = 0;
	imap_literals_release(s);
	if (s->flags & (SF_IDLE | SF_SASL)) {
		/* The raw line of IDLE or AUTHENTICATE was bad: that command ends. */
		s->flags &= ~(SF_IDLE | SF_SASL);
		imap_session_idle_timer(s, false);
		imap_timeouts(s);
		imap_done(s, "BAD", "%s", msg);
		return;
	}
	switch (e) {
	case IMAP_PERR_LITERAL_TOO_BIG:
		status = "NO";
		buf_puts(&t, "[TOOBIG] ");
		break;
	case IMAP_PERR_NONSYNC_TOO_BIG:
	case IMAP_PERR_COMMAND_TOO_BIG:
	case IMAP_PERR_LINE_TOO_LONG:
		buf_puts(&t, "[TOOBIG] ");
		break;
	default:
		break;
	}
	buf_puts(&t, msg);
	imap_printf(s, "%s %s %s\r\n", tag ? tag : "*", status, buf_str(&t));
	imap_log_reply(s, tag ? tag : "*", status, buf_str(&t));
	buf_free(&t);
	if (imap_parser_error_fatal(s->parser)) {
		imap_bye(s, "Cannot resynchronise with the command stream.");
		return;
	}
	if (strcmp(status, "BAD") == 0)
		imap_count_bad(s);
}

static void
imap_item(struct imap_sess *s)
{
	const struct imap_command *cmd = imap_parser_command(s->parser);

	if (cmd != NULL) {
		imap_dispatch(s, cmd);
		return;
	}
	size_t len;
	const char *line = imap_parser_line(s->parser, &len);
	if (line == NULL)
		return;
	if (s->flags & SF_IDLE)
		imap_cmd_idle_line(s, line, len);
	else if (s->flags & SF_SASL)
		imap_cmd_sasl_line(s, line, len);
}

static void
imap_process(struct imap_sess *s)
{
	while (s->state != IS_LOGOUT && !(s->flags & (SF_WAIT | SF_DRAIN | SF_CLOSE_NOW))) {
		if (s->srv->stopping && s->cmd == NULL && !(s->flags & (SF_IDLE | SF_SASL))) {
			imap_bye(s, "[UNAVAILABLE] Server shutting down.");
			return;
		}
		if ((s->flags & SF_LOGIN_LATE) && s->state == IS_NOTAUTH) {
			imap_login_bye(s);
			return;
		}
		if (evbuffer_get_length(bufferevent_get_output(s->c->bev)) > OUT_HIGH) {
			/* The client does not read: stop reading until it does. */
			s->flags |= SF_DRAIN;
			bufferevent_disable(s->c->bev, EV_READ);
			return;
		}
		/* Fetched anew each time: STARTTLS replaces the bufferevent. */
		struct evbuffer *in = bufferevent_get_input(s->c->bev);
		if (evbuffer_get_length(in) == 0)
			return;
		struct evbuffer_iovec v;
		if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
			return;
		size_t used = 0;
		int r = imap_parser_feed(s->parser, v.iov_base, v.iov_len, &used);
		evbuffer_drain(in, used);
		switch (r) {
		case IMAP_PARSE_MORE:
			break;
		case IMAP_PARSE_DONE:
			imap_item(s);
			break;
		case IMAP_PARSE_LITERAL:
			imap_literal(s);
			break;
		case IMAP_PARSE_ERROR:
			imap_parse_error(s);
			break;
		default:
			PANIC("imap_parser_feed returned %d", r);
		}
	}
}

/* ---- connection callbacks ---- */

static void
imap_read_cb(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;
	struct imap_sess *s = c->proto;

	/*
	 * Called from inside a reply: over STARTTLS, OpenSSL may read while we
	 * write (conn_starttls) and runs this at once. A command run from here
	 * would run inside another, on a session half-changed. A caller in
	 * imap_process() goes on with the input itself; for any other (an IDLE
	 * report, a timer) it is looked at again from the loop.
	 */
	if (s->hold > 0) {
		bufferevent_trigger(bev, EV_READ, BEV_TRIG_DEFER_CALLBACKS);
		return;
	}
	/* An APPEND's literal, say: take all the socket has. */
	conn_read_more(c, IMAP_READ_MORE_MAX);
	imap_hold(s);
	imap_process(s);
	imap_release(s);
}

static void
imap_write_cb(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;
	struct imap_sess *s = c->proto;

	if (!(s->flags & (SF_DRAIN | SF_IDLE_LATE)) ||
	    evbuffer_get_length(bufferevent_get_output(bev)) > OUT_LOW)
		return;
	if (s->hold > 0) {
		/* Inside a reply (see imap_read_cb): again from the loop. */
		bufferevent_trigger(bev, EV_WRITE, BEV_TRIG_DEFER_CALLBACKS);
		return;
	}
	imap_hold(s);
	if ((s->flags & SF_IDLE_LATE) && imap_reg_idling(s)) {
		s->flags &= ~SF_IDLE_LATE;
		imap_hold_release_poll(s);
	}
	if (s->flags & SF_DRAIN) {
		s->flags &= ~SF_DRAIN;
		if (s->flags & SF_CONT) {
			struct imap_job *j = s->cont_job;
			s->flags &= ~SF_CONT;
			s->cont_job = NULL;
			imap_job_run(s, j);
		} else {
			imap_resume(s);
		}
	}
	imap_release(s);
}

static void
imap_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct conn *c = arg;
	struct imap_sess *s = c->proto;

	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
		if (s->user && s->state != IS_LOGOUT)
			imap_log_logout(s, (what & BEV_EVENT_EOF) ? "disconnected"
								  : "connection error");
		if (s->hold > 0) {
			s->flags |= SF_CLOSE_NOW;
			if (s->state != IS_LOGOUT)
				s->state = IS_LOGOUT;
			return;
		}
		conn_close(c);
		return;
	}
	if (what & BEV_EVENT_TIMEOUT) {
		imap_hold(s);
		log_msg(LL_INFO, c->id, "timeout state=%s user=%s", state_names[s->state],
			s->user ? s->user : "-");
		imap_bye(s, "Autologout; idle for too long");
		imap_release(s);
	}
}

static void
imap_set_callbacks(struct imap_sess *s)
{
	bufferevent_setcb(s->c->bev, imap_read_cb, imap_write_cb, imap_event_cb, s->c);
	bufferevent_setwatermark(s->c->bev, EV_WRITE, OUT_LOW, 0);
	imap_timeouts(s);
	bufferevent_enable(s->c->bev, EV_READ | EV_WRITE);
}

void
imap_session_tls_started(struct imap_sess *s)
{
	imap_parser_free(&s->parser);
	s->parser = imap_parser_new(NULL);
	s->enabled = 0;
	imap_apply_limits(s);
	imap_set_callbacks(s);
}

static void imap_idle_tick(evutil_socket_t fd, short what, void *arg);

void
imap_session_idle_timer(struct imap_sess *s, bool on)
{
	if (!on) {
		if (s->idle_timer)
			event_del(s->idle_timer);
		return;
	}
	if (s->idle_timer == NULL)
		s->idle_timer = event_new(s->srv->base, -1, EV_PERSIST, imap_idle_tick, s);
	event_add(s->idle_timer, &(struct timeval){IDLE_TICK, 0});
}

static void
imap_idle_tick(evutil_socket_t fd, short what, void *arg)
{
	struct imap_sess *s = arg;

	if (!(s->flags & SF_IDLE) || (s->flags & SF_WAIT))
		return;
	imap_hold(s);
	if (++s->idle_ticks % IDLE_KEEPALIVE_TICKS == 0)
		imap_puts(s, "* OK Still here\r\n");
	/*
	 * The tick catches changes by other processes, which notify nobody;
	 * with no idle handle it waits for the next tick rather than open one.
	 */
	if (imap_store_take(s))
		imap_idle_report(s, NULL, NULL);
	imap_release(s);
}

static void
imap_sess_free(struct imap_sess *s)
{
	imap_literals_release(s);
	imap_reg_del(s);
	store_pool_give(&s->st);
	if (s->cont_job) {
		s->cont_job->free(s->cont_job);
		s->cont_job = NULL;
	}
	imap_parser_free(&s->parser);
	imap_sel_free(&s->sel);
	imap_seqset_free(&s->saved);
	if (s->timer)
		event_free(s->timer);
	if (s->idle_timer)
		event_free(s->idle_timer);
	if (s->login_timer)
		event_free(s->login_timer);
	free(s->tag);
	free(s->user);
	free(s);
}

static void
imap_on_close(struct conn *c)
{
	struct imap_sess *s = c->proto;

	imap_reg_del(s);
	if ((s->flags & SF_WAIT) && s->delayed != NULL) {
		/* Only the auth failure delay holds us, no worker: free now. */
		struct imap_job *j = s->delayed;
		s->delayed = NULL;
		j->free(j);
		imap_sess_free(s);
		return;
	}
	if (s->flags & SF_WAIT) {
		/* A worker job still points at us; its completion frees us.
		 * What it holds is counted against no client from now on. */
		server_ip_held(s->srv, c->ip_key, IP_HELD_IMAP, -(int64_t)s->lit_held);
		s->flags |= SF_DEAD;
		s->c = NULL;
		if (s->idle_timer)
			event_del(s->idle_timer);
		event_del(s->login_timer);
		return;
	}
	imap_sess_free(s);
}

static void
imap_on_shutdown(struct conn *c)
{
	struct imap_sess *s = c->proto;

	/* Sessions between commands (or waiting in IDLE or AUTHENTICATE for a
	 * line) end now; busy ones after the command. */
	if ((s->flags & SF_WAIT) || (s->cmd != NULL && !(s->flags & (SF_IDLE | SF_SASL))))
		return;
	imap_hold(s);
	imap_bye(s, "[UNAVAILABLE] Server shutting down.");
	imap_release(s);
}

static void
imap_start(struct conn *c)
{
	struct imap_sess *s = xcalloc(1, sizeof(*s));
	struct buf b = BUF_INIT(0);

	s->c = c;
	s->srv = c->srv;
	s->state = IS_NOTAUTH;
	s->parser = imap_parser_new(NULL);
	imap_seqset_init(&s->saved);
	imap_apply_limits(s);
	c->proto = s;
	c->on_close = imap_on_close;
	c->on_shutdown = imap_on_shutdown;
	imap_set_callbacks(s);
	s->login_timer = evtimer_new(s->srv->base, imap_login_expired, s);
	event_add(s->login_timer, &(struct timeval){s->srv->cfg->login_timeout, 0});
	imap_hold(s);
	buf_puts(&b, "* OK [CAPABILITY ");
	imap_capabilities(s, &b);
	buf_printf(&b, "] %s IMAP4rev2 surat ready.\r\n", s->srv->cfg->hostname);
	imap_write_buf(s, &b);
	buf_free(&b);
	imap_release(s);
}

const struct proto_ops imap_server_ops = {
    .name = "imap",
    .start = imap_start,
    .busy_reply = "* BYE [UNAVAILABLE] Too many connections\r\n",
};
