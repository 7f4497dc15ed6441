/*
 * pop3_server — see pop3_server.h.
 *
 * The session is a state machine driven by the input buffer. Bytes go
 * through the line framer (pop3_proto), which bounds every line; each line
 * is parsed and dispatched through pop3_cmds[]: a check of the state, then
 * the action. Replies go straight to the output buffer, so pipelined
 * commands (RFC 2449 PIPELINING) are answered in order.
 *
 * Everything that may block runs on the worker pool, one job at a time per
 * session, with reading stopped meanwhile (pipelined input waits in the
 * buffer): the password check; opening the store and loading the INBOX
 * snapshot; opening and reading message files; and the expunge at QUIT.
 * The store handle is used by one thread at a time: the job that holds
 * it, never the loop and a job together. It goes back to the shared pool
 * when the session ends, on the loop, as IMAP's do (store_pool_give():
 * closing a handle is left to the workers).
 *
 * RETR and TOP stream: a job opens the file and reads the first 64 KiB,
 * the loop dot-stuffs it into the output, and the next chunk is read (again
 * on the pool) only once the output has drained below 64 KiB. So a large
 * message costs neither a large buffer nor a blocking read on the loop,
 * and a client that reads slowly holds at most ~320 KiB of output. A
 * message that does not end with CRLF gets one before the "." line, and
 * every size the session gives counts it (store_pop3_size, RFC 1939 11).
 *
 * The [IN-USE] lock is a process-wide table of account names (under a
 * mutex, ready for several loops), taken after the password check and
 * released when the session ends, after its expunge has finished.
 *
 * SECURITY: see the header. Passwords live only in the framer's line (wiped
 * by the next line), in fixed arrays of the login job (wiped after the
 * check) and never in a log line.
 */
#include "pop3/pop3_server.h"
#include "pop3/pop3_proto.h"
#include "auth/accounts.h"
#include "auth/lockout.h"
#include "auth/password.h"
#include "core/buf.h"
#include "core/log.h"
#include "core/tls.h"
#include "core/util.h"
#include "core/worker.h"
#include "smtp/smtp_proto.h"
#include "store/store.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#define POP3_BAD_MAX_PREAUTH 5	   /* bad commands before login, then close */
#define POP3_BAD_MAX 20		   /* after login */
#define POP3_AUTH_FAIL_MAX 3	   /* failed logins, then close */
#define POP3_CHUNK (64 * 1024)	   /* message file read size */
#define POP3_OUT_LOW (64 * 1024)   /* resume sending/reading below this much output */
#define POP3_OUT_HIGH (256 * 1024) /* stop reading commands above this */
#define POP3_USER_MAX 255

enum pop3_state {
	ST_AUTH,  /* AUTHORIZATION */
	ST_SASL,  /* AUTH PLAIN sent "+ ", waiting for the response line */
	ST_TRANS, /* TRANSACTION */
	ST_SEND,  /* TRANSACTION, sending a RETR/TOP answer */
	ST_WAIT,  /* a job runs for us (login, mailbox open, UPDATE) */
	ST_QUIT,  /* closing */
};

static const char *const state_names[] = {"authorization", "sasl", "transaction",
					  "send",	   "wait", "quit"};

#define F_USER 0x01	  /* USER given; user_arg holds the name */
#define F_JOB 0x02	  /* a worker job points at us */
#define F_DEAD 0x04	  /* the connection is gone; the job's completion frees us */
#define F_CLOSE_NOW 0x08  /* the peer is gone: close once no caller holds us */
#define F_DRAIN 0x10	  /* too much output queued: reading paused until it drains */
#define F_LOGGED_OUT 0x20 /* the logout line is written */
#define F_FINISHING 0x40  /* closing: waiting for the output to be sent */
#define F_LOGIN_LATE 0x80 /* login_timeout passed during a login job */

struct pop3_sess {
	struct conn *c;
	struct server *srv;
	char sid[sizeof(((struct conn *)0)->id)];
	enum pop3_state state;
	unsigned flags;
	unsigned hold; /* callers on the stack that still use the session */
	unsigned bad;
	unsigned auth_fails;
	struct pop3_line line;
	char user_arg[POP3_USER_MAX + 1];
	/* after login */
	char *account; /* holds the [IN-USE] lock while set */
	const char *method;
	struct store *st;
	struct store_mbox_view *view;
	unsigned char *deleted; /* per message: marked by DELE */
	size_t ndeleted;
	/* the RETR/TOP being sent */
	int fd;
	uint32_t msgno_sending;
	uint64_t off;
	struct pop3_dot dot;
	/* a failed login waiting out auth.fail_delay */
	struct event *timer;
	struct login_job *delayed;
	struct event *login_timer; /* login_timeout, from the accept */
	/* for the logout line */
	unsigned retrieved;
	uint64_t sent;
};

struct pop3_cmd_entry {
	enum pop3_cmd cmd;
	void (*fn)(struct pop3_sess *s, const struct pop3_cmdline *cl);
	unsigned states; /* bit per enum pop3_state where allowed */
};

#define SB(x) (1u << (x))

static void pop3_process(struct pop3_sess *s);
static void pop3_read_cb(struct bufferevent *bev, void *arg);
static void pop3_write_cb(struct bufferevent *bev, void *arg);
static void pop3_event_cb(struct bufferevent *bev, short what, void *arg);
static void pop3_login_timeout(struct pop3_sess *s);
struct login_job;
static void login_job_free(struct login_job *j);

/* ---- the [IN-USE] lock table ---- */

struct pop3_lock {
	struct pop3_lock *next;
	char account[];
};

static pthread_mutex_t pop3_locks_mu = PTHREAD_MUTEX_INITIALIZER;
static struct pop3_lock *pop3_locks;

/* 1 if we now hold account's lock, 0 if another session does. */
static int
pop3_lock_take(const char *account)
{
	size_t n = strlen(account);
	int ok = 1;

	pthread_mutex_lock(&pop3_locks_mu);
	for (struct pop3_lock *l = pop3_locks; l; l = l->next) {
		if (strcmp(l->account, account) == 0) {
			ok = 0;
			break;
		}
	}
	if (ok) {
		struct pop3_lock *l = xmalloc(sizeof(*l) + n + 1);
		memcpy(l->account, account, n + 1);
		l->next = pop3_locks;
		pop3_locks = l;
	}
	pthread_mutex_unlock(&pop3_locks_mu);
	return ok;
}

static void
pop3_lock_release(const char *account)
{
	pthread_mutex_lock(&pop3_locks_mu);
	for (struct pop3_lock **pp = &pop3_locks; *pp; pp = &(*pp)->next) {
		if (strcmp((*pp)->account, account) == 0) {
			struct pop3_lock *dead = *pp;
			*pp = dead->next;
			free(dead);
			break;
		}
	}
	pthread_mutex_unlock(&pop3_locks_mu);
}

/* ---- session basics ---- */

static void
pop3_set_state(struct pop3_sess *s, enum pop3_state st)
{
	if (s->state != st && log_enabled(LL_DEBUG))
		log_msg(LL_DEBUG, s->sid, "state %s -> %s", state_names[s->state], state_names[st]);
	s->state = st;
}

static void
pop3_write(struct pop3_sess *s, const void *p, size_t n)
{
	bufferevent_write(s->c->bev, p, n);
}

static void
pop3_puts(struct pop3_sess *s, const char *text)
{
	pop3_write(s, text, strlen(text));
}

static void pop3_reply(struct pop3_sess *s, int ok, const char *fmt, ...) PRINTF_LIKE(3, 4);

/* One status line: "+OK text" or "-ERR text". The texts are ours, never the peer's. */
static void
pop3_reply(struct pop3_sess *s, int ok, const char *fmt, ...)
{
	struct buf l = BUF_INIT(0);

	buf_puts(&l, ok ? "+OK" : "-ERR");
	if (fmt[0] != '\0') {
		va_list ap;
		buf_putc(&l, ' ');
		va_start(ap, fmt);
		buf_vprintf(&l, fmt, ap);
		va_end(ap);
	}
	if (log_enabled(LL_DEBUG))
		log_msg(LL_DEBUG, s->sid, "> %s", buf_str(&l));
	buf_puts(&l, "\r\n");
	pop3_write(s, l.data, l.len);
	buf_free(&l);
}

static int
auth_allowed(const struct pop3_sess *s)
{
	return s->c->tls || s->srv->cfg->allow_plaintext_auth;
}

static void
pop3_set_callbacks(struct pop3_sess *s)
{
	struct timeval tv = {s->srv->cfg->pop3_idle_timeout, 0};

	bufferevent_setcb(s->c->bev, pop3_read_cb, pop3_write_cb, pop3_event_cb, s->c);
	bufferevent_set_timeouts(s->c->bev, &tv, &tv);
	bufferevent_setwatermark(s->c->bev, EV_WRITE, POP3_OUT_LOW, 0);
	bufferevent_enable(s->c->bev, EV_READ | EV_WRITE);
}

static void
pop3_sess_free(struct pop3_sess *s)
{
	if (s->fd >= 0)
		close(s->fd);
	if (s->timer)
		event_free(s->timer);
	if (s->login_timer)
		event_free(s->login_timer);
	if (s->delayed)
		login_job_free(s->delayed);
	store_pool_give(&s->st);
	store_mbox_view_free(&s->view);
	free(s->deleted);
	if (s->account) {
		pop3_lock_release(s->account);
		free(s->account);
	}
	pop3_line_reset(&s->line);
	util_wipe(s->user_arg, sizeof(s->user_arg));
	free(s);
}

static size_t
pop3_kept(const struct pop3_sess *s)
{
	return s->view ? s->view->count - s->ndeleted : 0;
}

/* The logout line: once per logged-in session, however it ends. */
static void
pop3_log_logout(struct pop3_sess *s, int quit, size_t deleted)
{
	if (s->account == NULL || s->view == NULL || (s->flags & F_LOGGED_OUT))
		return;
	s->flags |= F_LOGGED_OUT;
	if (quit)
		log_msg(LL_INFO, s->sid,
			"pop3 logout user=%s deleted=%zu kept=%zu retrieved=%u sent=%llu",
			s->account, deleted, s->view->count - deleted, s->retrieved,
			(unsigned long long)s->sent);
	else
		log_msg(LL_INFO, s->sid,
			"pop3 disconnect user=%s deleted=0 discarded_deletions=%zu retrieved=%u "
			"sent=%llu (no QUIT: maildrop unchanged)",
			s->account, s->ndeleted, s->retrieved, (unsigned long long)s->sent);
}

static void
pop3_on_close(struct conn *c)
{
	struct pop3_sess *s = c->proto;

	if (s->state != ST_WAIT || !(s->flags & F_JOB))
		pop3_log_logout(s, 0, 0);
	if (s->flags & F_JOB) {
		/* A worker job still points at us; its completion frees the session. */
		s->flags |= F_DEAD;
		s->c = NULL;
		event_del(s->login_timer);
		return;
	}
	pop3_sess_free(s);
}

/*
 * Every entry from the loop into a session (input, events, job completions)
 * holds it: conn_finish() and conn_close() may free it at once, which must
 * not happen under a caller that still reads it. A close asked for
 * meanwhile is done by the last pop3_release(), which returns 1 if the
 * session may be gone.
 */
static void
pop3_hold(struct pop3_sess *s)
{
	s->hold++;
}

/* Send what is queued, then close. */
static void
pop3_finish(struct pop3_sess *s)
{
	if (s->flags & F_FINISHING)
		return;
	s->flags |= F_FINISHING;
	conn_finish(s->c);
}

static int
pop3_release(struct pop3_sess *s)
{
	if (--s->hold > 0)
		return 0;
	if (s->flags & F_CLOSE_NOW) {
		conn_close(s->c);
		return 1;
	}
	if (s->state == ST_QUIT) {
		pop3_finish(s);
		return 1;
	}
	return 0;
}

static void
pop3_close(struct pop3_sess *s)
{
	pop3_set_state(s, ST_QUIT);
	if (s->hold == 0)
		pop3_finish(s);
}

/* Count a bad command; 1 (and the session is closing) past the limit. */
static int
pop3_bad(struct pop3_sess *s)
{
	unsigned max = s->account ? POP3_BAD_MAX : POP3_BAD_MAX_PREAUTH;

	if (++s->bad >= max) {
		pop3_reply(s, 0, "Too many bad commands, closing connection");
		log_msg(LL_WARN, s->sid, "pop3 too many bad commands client=[%s]", s->c->peer_ip);
		pop3_close(s);
		return 1;
	}
	return 0;
}

/* Start a worker job: nothing else is read until its completion. */
static void
pop3_job_begin(struct pop3_sess *s, enum pop3_state st)
{
	s->flags |= F_JOB;
	pop3_set_state(s, st);
	bufferevent_disable(s->c->bev, EV_READ);
}

/*
 * A job's completion: 0 to go on (the session is held: end with
 * pop3_release), or 1 if the session is dead (it is freed then) or closing.
 */
static int
pop3_job_end(struct pop3_sess *s)
{
	s->flags &= ~F_JOB;
	if (s->flags & F_DEAD) {
		pop3_sess_free(s);
		return 1;
	}
	if (s->state == ST_QUIT)
		return 1;
	pop3_hold(s);
	return 0;
}

/* Back to reading commands in state st, then handle what is pipelined. */
static void
pop3_resume(struct pop3_sess *s, enum pop3_state st)
{
	pop3_set_state(s, st);
	bufferevent_enable(s->c->bev, EV_READ);
	pop3_process(s);
}

/* ---- AUTHORIZATION ---- */

static void
cmd_capa(struct pop3_sess *s, const struct pop3_cmdline *cl)
{
	struct buf r = BUF_INIT(0);

	buf_puts(&r, "+OK Capability list follows\r\n"
		     "TOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n"
		     "EXPIRE NEVER\r\n");
	if (s->state == ST_AUTH) {
		if (auth_allowed(s))
			buf_puts(&r, "USER\r\nSASL PLAIN\r\n");
		if (!s->c->tls && tls_server_available())
			buf_puts(&r, "STLS\r\n");
	}
	buf_puts(&r, "IMPLEMENTATION surat\r\n.\r\n");
	pop3_write(s, r.data, r.len);
	buf_free(&r);
}

static void
cmd_stls(struct pop3_sess *s, const struct pop3_cmdline *cl)
{
	if (s->c->tls) {
		pop3_reply(s, 0, "Already using TLS");
		pop3_bad(s);
		return;
	}
	if (!tls_server_available()) {
		pop3_reply(s, 0, "STLS not available");
		pop3_bad(s);
		return;
	}
	SSL *ssl = tls_server_ssl();
	if (ssl == NULL) {
		pop3_reply(s, 0, "[SYS/TEMP] TLS is not available now");
		return;
	}
	pop3_reply(s, 1, "Begin TLS negotiation");
	if (conn_starttls(s->c, ssl) < 0) {
		/* The client is about to start a handshake: nothing sane to say. */
		log_msg(LL_ERROR, s->sid, "pop3 STLS: cannot start TLS");
		pop3_close(s);
		return;
	}
	/* RFC 2595 §4: forget everything the client said before TLS. */
	s->flags &= ~F_USER;
	util_wipe(s->user_arg, sizeof(s->user_arg));
	pop3_line_reset(&s->line);
	pop3_set_callbacks(s);
}

static void
pop3_plaintext_refused(struct pop3_sess *s)
{
	pop3_reply(s, 0,
		   "[AUTH] Plaintext authentication disallowed on non-secure "
		   "connections: use STLS first");
	pop3_bad(s);
}

static void
cmd_user(struct pop3_sess *s, const struct pop3_cmdline *cl)
{
	if (!auth_allowed(s)) {
		pop3_plaintext_refused(s);
		return;
	}
	if (cl->arg_len[0] >= sizeof(s->user_arg)) {
		pop3_reply(s, 0, "User name too long");
		pop3_bad(s);
		return;
	}
	memcpy(s->user_arg, cl->arg[0], cl->arg_len[0]);
	s->user_arg[cl->arg_len[0]] = '\0';
	s->flags |= F_USER;
	pop3_reply(s, 1, "Send PASS");
}

struct login_job {
	struct pop3_sess *s;
	char user[POP3_USER_MAX + 1]; /* normalised when it could be */
	char pass[POP3_AUTH_LINE_MAX];
	char *hash;
	int ok;
	int locked; /* refused: the client's address is locked out */
	/* the client, for the lockout when the session is gone by the answer */
	char sid[sizeof(((struct conn *)0)->id)];
	char peer_ip[INET6_ADDRSTRLEN];
	char key[UTIL_CLIENT_KEY_MAX];
	uint64_t fp; /* the credentials, for the lockout (the password is wiped) */
	/* opening the maildrop */
	char *data_dir;
	struct store *st;
	struct store_mbox_view *view;
	char err[256];
};

static void
login_job_free(struct login_job *j)
{
	if (j->hash) {
		util_wipe(j->hash, strlen(j->hash));
		free(j->hash);
	}
	free(j->data_dir);
	util_wipe(j, sizeof(*j));
	free(j);
}

static void
login_verify_work(void *arg)
{
	struct login_job *j = arg;
	j->ok = j->hash && password_verify(j->pass, j->hash);
	util_wipe(j->pass, sizeof(j->pass));
}

static void
login_open_work(void *arg)
{
	struct login_job *j = arg;
	struct buf err = BUF_INIT(0);

	j->st = store_pool_get(j->data_dir, j->user, &err);
	if (j->st == NULL) {
		xsnprintf(j->err, sizeof(j->err), "%.200s", buf_str(&err));
	} else if (store_mailbox_load(j->st, "INBOX", &j->view) < 0) {
		xsnprintf(j->err, sizeof(j->err), "%.200s", store_errstr(j->st));
		store_pool_put(&j->st);
	}
	buf_free(&err);
}

static void
login_open_done(void *arg)
{
	struct login_job *j = arg;
	struct pop3_sess *s = j->s;

	/* The session owns what the job opened, whatever happens next. */
	s->st = j->st;
	s->view = j->view;
	if (pop3_job_end(s)) {
		login_job_free(j);
		return;
	}
	if (s->st == NULL) {
		log_msg(LL_ERROR, s->sid, "pop3 login user=%s: cannot open the maildrop: %s",
			s->account, j->err);
		pop3_lock_release(s->account);
		free(s->account);
		s->account = NULL;
		pop3_reply(s, 0, "[SYS/TEMP] Cannot open the maildrop, try again later");
		pop3_resume(s, ST_AUTH);
	} else {
		char tlsd[128];
		uint64_t size = 0;
		for (size_t i = 0; i < s->view->count; i++)
			size += store_pop3_size(&s->view->msgs[i]);
		s->deleted = xcalloc(s->view->count ? s->view->count : 1, 1);
		s->bad = 0;
		log_msg(LL_INFO, s->sid,
			"pop3 login user=%s method=%s client=[%s] tls=%s messages=%zu size=%llu",
			s->account, s->method, s->c->peer_ip,
			s->c->tls ? tls_describe(s->c->ssl, tlsd, sizeof(tlsd)) : "no",
			s->view->count, (unsigned long long)size);
		pop3_reply(s, 1, "Logged in: %zu messages (%llu octets)", s->view->count,
			   (unsigned long long)size);
		event_del(s->login_timer);
		pop3_resume(s, ST_TRANS);
	}
	login_job_free(j);
	pop3_release(s);
}

static void
login_failed(struct pop3_sess *s, struct login_job *j)
{
	char esc[300];

	log_msg(LL_WARN, s->sid, "pop3 auth failed user=%s method=%s client=[%s]",
		log_esc_also(esc, sizeof(esc), j->user, " "), s->method, s->c->peer_ip);
	pop3_reply(s, 0, "[AUTH] Authentication failed");
	if (++s->auth_fails >= POP3_AUTH_FAIL_MAX) {
		pop3_reply(s, 0, "Too many authentication failures, closing connection");
		pop3_close(s);
		return;
	}
	pop3_resume(s, ST_AUTH);
}

/*
 * The accounts database failed: the server's fault, not the client's, so
 * [SYS/TEMP] (RFC 3206), as Dovecot says, and no failure counted. "[AUTH]"
 * would make clients drop a good password or ask the user again.
 */
static void
login_tempfail(struct pop3_sess *s, const char *user)
{
	char esc[300];

	log_msg(LL_ERROR, s->sid,
		"pop3 login user=%s method=%s client=[%s]: accounts database error",
		log_esc_also(esc, sizeof(esc), user, " "), s->method, s->c->peer_ip);
	pop3_reply(s, 0, "[SYS/TEMP] Temporary authentication failure, try again later");
}

/*
 * Too many failed logins from the client's address (auth/lockout): refused
 * without a check, so a right password is refused too. [SYS/TEMP] (RFC
 * 3206): temporary and not about the credentials, so clients keep the
 * password and try later, and the same for every user. [AUTH] would say
 * the password is wrong, [IN-USE] that the maildrop is locked (an account
 * that exists), [LOGIN-DELAY] (RFC 2449) that this user logged in too
 * recently. It counts toward this session's own limit, not the lockout's.
 * 1 if the session was closed.
 */
static int
login_locked(struct pop3_sess *s, const char *user, const char *method)
{
	char esc[300];

	log_msg(LL_WARN, s->sid, "pop3 auth failed user=%s method=%s client=[%s] reason=locked",
		log_esc_also(esc, sizeof(esc), user, " "), method, s->c->peer_ip);
	pop3_reply(s, 0,
		   "[SYS/TEMP] Too many authentication failures from this address, "
		   "try again later");
	if (++s->auth_fails >= POP3_AUTH_FAIL_MAX) {
		pop3_reply(s, 0, "Too many authentication failures, closing connection");
		pop3_close(s);
		return 1;
	}
	return 0;
}

static void
login_delay_done(evutil_socket_t fd, short what, void *arg)
{
	struct pop3_sess *s = arg;
	struct login_job *j = s->delayed;

	event_free(s->timer);
	s->timer = NULL;
	s->delayed = NULL;
	pop3_hold(s);
	login_failed(s, j);
	login_job_free(j);
	pop3_release(s);
}

static void
login_verify_done(void *arg)
{
	struct login_job *j = arg;
	struct pop3_sess *s = j->s;

	j->locked = lockout_login_settle(s->srv->lockout, j->sid, j->peer_ip, j->key, j->fp, j->ok);
	if (pop3_job_end(s)) {
		login_job_free(j);
		return;
	}
	if (j->locked) {
		if (!login_locked(s, j->user, s->method))
			pop3_resume(s, ST_AUTH);
		login_job_free(j);
		pop3_release(s);
		return;
	}
	if (!j->ok) {
		if (s->srv->cfg->auth_fail_delay > 0) {
			/* Slow down guessing: the answer comes after the delay. The
			 * session stays in WAIT, reading nothing. */
			struct timeval tv = {s->srv->cfg->auth_fail_delay, 0};
			s->delayed = j;
			s->timer = evtimer_new(s->srv->base, login_delay_done, s);
			evtimer_add(s->timer, &tv);
			pop3_release(s);
			return;
		}
		login_failed(s, j);
		login_job_free(j);
		pop3_release(s);
		return;
	}
	/* Checked against a hash read before: the user may be gone (or made anew) since. */
	int same = accounts_user_same(s->srv->accounts, j->user, j->hash);
	if (same != 1) {
		if (same < 0) {
			login_tempfail(s, j->user);
			pop3_resume(s, ST_AUTH);
		} else {
			login_failed(s, j);
		}
		login_job_free(j);
		pop3_release(s);
		return;
	}
	if (!pop3_lock_take(j->user)) {
		log_msg(LL_INFO, s->sid, "pop3 login refused user=%s client=[%s]: maildrop in use",
			j->user, s->c->peer_ip);
		pop3_reply(s, 0, "[IN-USE] Maildrop is locked by another POP3 session");
		pop3_resume(s, ST_AUTH);
		login_job_free(j);
		pop3_release(s);
		return;
	}
	s->account = xstrdup(j->user);
	j->data_dir = xstrdup(s->srv->cfg->data_dir);
	pop3_job_begin(s, ST_WAIT);
	worker_submit(s->srv->pool, login_open_work, login_open_done, j);
	pop3_release(s);
}

/* Check user/pass on the pool; the answer comes from the completion (at once
 * when the accounts database fails). */
static void
pop3_login(struct pop3_sess *s, const char *user, const char *pass, size_t pass_len,
	   const char *method)
{
	struct login_job *j = xcalloc(1, sizeof(*j));
	struct buf norm = BUF_INIT(0), err = BUF_INIT(0);
	struct account_user u = {0};
	int found = 0;

	if (lockout_login_check(s->srv->lockout, s->c->peer_ip, s->c->ip_key) != LOCKOUT_OPEN) {
		login_locked(s, user, method);
		login_job_free(j);
		return;
	}
	j->s = s;
	memcpy(j->sid, s->sid, sizeof(j->sid));
	memcpy(j->peer_ip, s->c->peer_ip, sizeof(j->peer_ip));
	memcpy(j->key, s->c->ip_key, sizeof(j->key));
	s->method = method;
	if (accounts_normalise(user, 0, &norm, &err) == 0 &&
	    xsnprintf(j->user, sizeof(j->user), "%s", norm.data) >= 0) {
		found = accounts_user_get(s->srv->accounts, norm.data, &u);
		if (found == 1) {
			j->hash = u.hash;
			u.hash = NULL;
			accounts_user_free(&u);
		}
	} else {
		xsnprintf(j->user, sizeof(j->user), "%.200s", user);
	}
	buf_free(&norm);
	buf_free(&err);
	if (found < 0) {
		/* Nothing to check the password against. */
		login_tempfail(s, j->user);
		login_job_free(j);
		return;
	}
	/* Unknown users still pay for a hash, so timing does not reveal them. */
	if (j->hash == NULL)
		j->hash = xstrdup(
		    "$y$j9T$0123456789abcdefghijk.$HZFaqNlR2sYnFAJ.QaWPQgKyJb5IoHXk9x4tw4eROn4");
	j->fp = lockout_fingerprint(s->srv->lockout, user, strlen(user), pass, pass_len);
	if (pass_len >= sizeof(j->pass))
		pass_len = sizeof(j->pass) - 1;
	memcpy(j->pass, pass, pass_len);
	j->pass[pass_len] = '\0';
	pop3_job_begin(s, ST_WAIT);
	worker_submit(s->srv->auth_pool, login_verify_work, login_verify_done, j);
}

static void
cmd_pass(struct pop3_sess *s, const struct pop3_cmdline *cl)
{
	if (!auth_allowed(s)) {
		pop3_plaintext_refused(s);
		return;
	}
	if (!(s->flags & F_USER)) {
		pop3_reply(s, 0, "Send USER first");
		pop3_bad(s);
		return;
	}
	s->flags &= ~F_USER;
	pop3_login(s, s->user_arg, cl->arg[0], cl->arg_len[0], "USER");
	util_wipe(s->user_arg, sizeof(s->user_arg));
}

static void
cmd_apop(struct pop3_sess *s, const struct pop3_cmdline *cl)
{
	pop3_reply(s, 0, "APOP is not supported: use USER/PASS or AUTH PLAIN");
	pop3_bad(s);
}

static void
pop3_plain_response(struct pop3_sess *s, const char *b64, size_t len)
{
	struct smtp_sasl_plain p;
	struct smtp_error e;

	if (smtp_sasl_plain_decode(b64, len, &p, &e) < 0) {
		pop3_reply(s, 0, "%s",
			   e.code == SMTP_ERR_BASE64 ? "Invalid base64 in the SASL response"
			   : e.code == SMTP_ERR_SASL_AUTHZID
			       ? "Authorization identity must be empty or the user name"
			       : "Malformed SASL PLAIN response");
		pop3_bad(s);
		return;
	}
	pop3_login(s, p.authcid, p.passwd, strlen(p.passwd), "PLAIN");
	smtp_sasl_plain_wipe(&p);
}

static void
cmd_auth(struct pop3_sess *s, const struct pop3_cmdline *cl)
{
	if (cl->nargs == 0) {
		/* Not in RFC 5034, but old clients ask this way for the list. */
		if (auth_allowed(s))
			pop3_puts(s, "+OK Mechanisms follow\r\nPLAIN\r\n.\r\n");
		else
			pop3_puts(s, "+OK Mechanisms follow\r\n.\r\n");
		return;
	}
	if (!auth_allowed(s)) {
		pop3_plaintext_refused(s);
		return;
	}
	if (cl->arg_len[0] != 5 || strncasecmp(cl->arg[0], "PLAIN", 5) != 0) {
		pop3_reply(s, 0, "Unsupported SASL mechanism (PLAIN is)");
		pop3_bad(s);
		return;
	}
	if (cl->nargs == 2) {
		/* RFC 5034 §4: "=" is an empty initial response. */
		if (cl->arg_len[1] == 1 && cl->arg[1][0] == '=')
			pop3_plain_response(s, "", 0);
		else
			pop3_plain_response(s, cl->arg[1], cl->arg_len[1]);
		return;
	}
	pop3_set_state(s, ST_SASL);
	pop3_puts(s, "+ \r\n");
}

static void
pop3_sasl_line(struct pop3_sess *s, const char *line, size_t len)
{
	pop3_set_state(s, ST_AUTH);
	if (len == 1 && line[0] == '*') {
		pop3_reply(s, 0, "Authentication cancelled");
		return;
	}
	pop3_plain_response(s, line, len);
}

/* ---- TRANSACTION ---- */

/* The message numbered n (1-based), or NULL after an error reply. */
static const struct store_msg *
pop3_msg(struct pop3_sess *s, uint32_t n)
{
	if (n == 0 || n > s->view->count) {
		pop3_reply(s, 0, "No such message");
		return NULL;
	}
	if (s->deleted[n - 1]) {
		pop3_reply(s, 0, "Message %u is deleted", n);
		return NULL;
	}
	return &s->view->msgs[n - 1];
}

static uint64_t
pop3_size(const struct pop3_sess *s)
{
	uint64_t size = 0;
	for (size_t i = 0; i < s->view->count; i++)
		if (!s->deleted[i])
			size += store_pop3_size(&s->view->msgs[i]);
	return size;
}

static void
cmd_stat(struct pop3_sess *s, const struct pop3_cmdline *cl)
{
	pop3_reply(s, 1, "%zu %llu", pop3_kept(s), (unsigned long long)pop3_size(s));
}

static void
cmd_list(struct pop3_sess *s, const struct pop3_cmdline *cl)
{
	if (cl->nargs == 1) {
		const struct store_msg *m = pop3_msg(s, cl->num[0]);
		if (m)
			pop3_reply(s, 1, "%u %llu", cl->num[0],
				   (unsigned long long)store_pop3_size(m));
		return;
	}
	struct buf r = BUF_INIT(0);
	buf_printf(&r, "+OK %zu messages (%llu octets)\r\n", pop3_kept(s),
		   (unsigned long long)pop3_size(s));
	for (size_t i = 0; i < s->view->count; i++)
		if (!s->deleted[i])
			buf_printf(&r, "%zu %llu\r\n", i + 1,
				   (unsigned long long)store_pop3_size(&s->view->msgs[i]));
	buf_puts(&r, ".\r\n");
	pop3_write(s, r.data, r.len);
	buf_free(&r);
}

static void
cmd_uidl(struct pop3_sess *s, const struct pop3_cmdline *cl)
{
	char u[STORE_UIDL_MAX];

	if (cl->nargs == 1) {
		const struct store_msg *m = pop3_msg(s, cl->num[0]);
		if (m)
			pop3_reply(s, 1, "%u %s", cl->num[0],
				   store_uidl(u, sizeof(u), s->view->uidvalidity, m->uid));
		return;
	}
	struct buf r = BUF_INIT(0);
	buf_puts(&r, "+OK Unique-ID listing follows\r\n");
	for (size_t i = 0; i < s->view->count; i++)
		if (!s->deleted[i])
			buf_printf(
			    &r, "%zu %s\r\n", i + 1,
			    store_uidl(u, sizeof(u), s->view->uidvalidity, s->view->msgs[i].uid));
	buf_puts(&r, ".\r\n");
	pop3_write(s, r.data, r.len);
	buf_free(&r);
}

static void
cmd_dele(struct pop3_sess *s, const struct pop3_cmdline *cl)
{
	if (pop3_msg(s, cl->num[0]) == NULL)
		return;
	s->deleted[cl->num[0] - 1] = 1;
	s->ndeleted++;
	pop3_reply(s, 1, "Message %u deleted", cl->num[0]);
}

static void
cmd_rset(struct pop3_sess *s, const struct pop3_cmdline *cl)
{
	memset(s->deleted, 0, s->view->count);
	s->ndeleted = 0;
	pop3_reply(s, 1, "Maildrop has %zu messages (%llu octets)", s->view->count,
		   (unsigned long long)pop3_size(s));
}

static void
cmd_noop(struct pop3_sess *s, const struct pop3_cmdline *cl)
{
	pop3_puts(s, "+OK\r\n");
}

/* RETR/TOP: a chunk read on the pool. The session owns fd once it is open. */
struct read_job {
	struct pop3_sess *s;
	struct store *st;
	uint32_t uidvalidity, uid, msgno;
	int fd;	     /* -1: open the message first */
	int opened;  /* this job opened fd */
	int open_rc; /* store_msg_open's answer */
	enum store_err open_err;
	char err[256];
	uint64_t off;
	ssize_t n; /* bytes read, -1 on error */
	char data[POP3_CHUNK];
};

static void
read_work(void *arg)
{
	struct read_job *j = arg;

	if (j->fd < 0) {
		j->open_rc = store_msg_open(j->st, "INBOX", j->uidvalidity, j->uid, &j->fd, NULL);
		if (j->open_rc != 1) {
			j->open_err = store_errcode(j->st);
			xsnprintf(j->err, sizeof(j->err), "%.200s", store_errstr(j->st));
			j->fd = -1;
			return;
		}
		j->opened = 1;
	}
	do
		j->n = pread(j->fd, j->data, sizeof(j->data), (off_t)j->off);
	while (j->n < 0 && errno == EINTR);
	if (j->n < 0)
		xsnprintf(j->err, sizeof(j->err), "read failed: %s", strerror(errno));
}

static void read_done(void *arg);

static void
pop3_read_next(struct pop3_sess *s, uint32_t msgno)
{
	struct read_job *j = xmalloc(sizeof(*j));

	j->s = s;
	j->st = s->st;
	j->uidvalidity = s->view->uidvalidity;
	j->uid = s->view->msgs[msgno - 1].uid;
	j->msgno = msgno;
	j->fd = s->fd;
	j->opened = 0;
	j->open_rc = 1;
	j->err[0] = '\0';
	j->off = s->off;
	j->n = 0;
	s->flags |= F_JOB;
	worker_submit(s->srv->pool, read_work, read_done, j);
}

static void
pop3_send_end(struct pop3_sess *s)
{
	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
	s->retrieved++;
	s->sent += s->dot.out;
	pop3_resume(s, ST_TRANS);
}

static void
read_done(void *arg)
{
	struct read_job *j = arg;
	struct pop3_sess *s = j->s;

	if (j->opened)
		s->fd = j->fd;
	if (pop3_job_end(s)) {
		free(j);
		return;
	}
	if (j->open_rc != 1) {
		if (j->open_rc == 0) {
			pop3_reply(s, 0, "Message %u was removed by another session", j->msgno);
		} else {
			log_msg(LL_ERROR, s->sid, "pop3 user=%s message uid=%u: %s", s->account,
				j->uid, j->err);
			pop3_reply(s, 0, "%s",
				   j->open_err == STORE_ERR_CHANGED
				       ? "[SYS/PERM] The mailbox was replaced: log in again"
				       : "[SYS/TEMP] Cannot read the message, try again later");
		}
		pop3_resume(s, ST_TRANS);
		goto out;
	}
	if (j->n < 0) {
		log_msg(LL_ERROR, s->sid, "pop3 user=%s message uid=%u: %s", s->account, j->uid,
			j->err);
		if (j->opened) {
			pop3_reply(s, 0, "[SYS/TEMP] Cannot read the message, try again later");
			close(s->fd);
			s->fd = -1;
			pop3_resume(s, ST_TRANS);
		} else {
			/* In the middle of a multi-line answer there is no way to
			 * say it failed: end the session (nothing is deleted). */
			pop3_close(s);
		}
		goto out;
	}
	if (j->opened && s->dot.top)
		pop3_reply(s, 1, "Top of message %u follows", j->msgno);
	else if (j->opened)
		pop3_reply(s, 1, "%llu octets",
			   (unsigned long long)store_pop3_size(&s->view->msgs[j->msgno - 1]));
	struct buf o = BUF_INIT(0);
	int done = pop3_dot_feed(&s->dot, j->data, (size_t)j->n, &o);
	s->off += (uint64_t)j->n;
	/* A short read of a regular file is its end. */
	if (done || (size_t)j->n < sizeof(j->data)) {
		pop3_dot_finish(&s->dot, &o);
		pop3_write(s, o.data, o.len);
		buf_free(&o);
		pop3_send_end(s);
		goto out;
	}
	pop3_write(s, o.data, o.len);
	buf_free(&o);
	/* Read on at once while the output is short; else when it drains. */
	if (evbuffer_get_length(bufferevent_get_output(s->c->bev)) <= POP3_OUT_LOW)
		pop3_read_next(s, j->msgno);
out:
	free(j);
	pop3_release(s);
}

static void
pop3_send_start(struct pop3_sess *s, uint32_t msgno, int top, uint32_t lines)
{
	s->off = 0;
	s->fd = -1;
	s->msgno_sending = msgno;
	pop3_dot_init(&s->dot, top, lines);
	pop3_job_begin(s, ST_SEND);
	pop3_read_next(s, msgno);
}

static void
cmd_retr(struct pop3_sess *s, const struct pop3_cmdline *cl)
{
	if (pop3_msg(s, cl->num[0]) != NULL)
		pop3_send_start(s, cl->num[0], 0, 0);
}

static void
cmd_top(struct pop3_sess *s, const struct pop3_cmdline *cl)
{
	if (pop3_msg(s, cl->num[0]) != NULL)
		pop3_send_start(s, cl->num[0], 1, cl->num[1]);
}

/* ---- QUIT and UPDATE ---- */

struct update_job {
	struct pop3_sess *s;
	struct store *st;
	uint32_t uidvalidity;
	struct store_range *set;
	size_t nset;
	size_t nexpunged;
	int rc;
	char err[256];
};

static void
update_work(void *arg)
{
	struct update_job *j = arg;
	uint32_t *uids = NULL;

	/* Exactly the UIDs this session marked, whatever their flags: an IMAP
	 * user's own \Deleted messages stay until that user expunges them. */
	j->rc = store_expunge(j->st, "INBOX", j->uidvalidity, j->set, j->nset, STORE_EXPUNGE_FORCE,
			      &uids, &j->nexpunged, NULL);
	if (j->rc < 0)
		xsnprintf(j->err, sizeof(j->err), "%.200s", store_errstr(j->st));
	free(uids);
}

static void
update_done(void *arg)
{
	struct update_job *j = arg;
	struct pop3_sess *s = j->s;

	s->flags &= ~F_JOB;
	if (j->rc < 0)
		log_msg(LL_ERROR, s->sid, "pop3 user=%s: expunge at QUIT failed: %s", s->account,
			j->err);
	/* The logout line is due even if the client did not wait for it. */
	pop3_log_logout(s, 1, j->rc < 0 ? 0 : j->nexpunged);
	if (s->flags & F_DEAD) {
		pop3_sess_free(s);
	} else if (s->state != ST_QUIT) {
		pop3_hold(s);
		if (j->rc < 0)
			pop3_reply(s, 0, "[SYS/TEMP] Some deleted messages were not removed");
		else
			pop3_reply(s, 1, "Bye: %zu messages deleted, %zu left", j->nexpunged,
				   s->view->count - s->ndeleted);
		pop3_close(s);
		pop3_release(s);
	}
	free(j->set);
	free(j);
}

static void
cmd_quit(struct pop3_sess *s, const struct pop3_cmdline *cl)
{
	s->c->no_linger = 1;	/* the client ended it: nothing follows to linger for */
	if (s->state == ST_AUTH) {
		pop3_reply(s, 1, "Bye");
		pop3_close(s);
		return;
	}
	if (s->ndeleted == 0) {
		pop3_log_logout(s, 1, 0);
		pop3_reply(s, 1, "Bye: no messages deleted, %zu left", s->view->count);
		pop3_close(s);
		return;
	}
	/* UPDATE: the marked UIDs (ascending) as ranges, one expunge. */
	struct update_job *j = xcalloc(1, sizeof(*j));
	j->s = s;
	j->st = s->st;
	j->uidvalidity = s->view->uidvalidity;
	j->set = xcalloc(s->ndeleted, sizeof(*j->set));
	for (size_t i = 0; i < s->view->count; i++) {
		if (!s->deleted[i])
			continue;
		uint32_t uid = s->view->msgs[i].uid;
		if (j->nset > 0 && j->set[j->nset - 1].hi + 1 == uid)
			j->set[j->nset - 1].hi = uid;
		else
			j->set[j->nset++] = (struct store_range){uid, uid};
	}
	pop3_job_begin(s, ST_WAIT);
	worker_submit(s->srv->pool, update_work, update_done, j);
}

#define AUTHZ SB(ST_AUTH)
#define TRANS SB(ST_TRANS)

static const struct pop3_cmd_entry pop3_cmds[] = {
    {POP3_CMD_CAPA, cmd_capa, AUTHZ | TRANS}, {POP3_CMD_QUIT, cmd_quit, AUTHZ | TRANS},
    {POP3_CMD_STLS, cmd_stls, AUTHZ},	      {POP3_CMD_USER, cmd_user, AUTHZ},
    {POP3_CMD_PASS, cmd_pass, AUTHZ},	      {POP3_CMD_AUTH, cmd_auth, AUTHZ},
    {POP3_CMD_APOP, cmd_apop, AUTHZ},	      {POP3_CMD_STAT, cmd_stat, TRANS},
    {POP3_CMD_LIST, cmd_list, TRANS},	      {POP3_CMD_UIDL, cmd_uidl, TRANS},
    {POP3_CMD_RETR, cmd_retr, TRANS},	      {POP3_CMD_TOP, cmd_top, TRANS},
    {POP3_CMD_DELE, cmd_dele, TRANS},	      {POP3_CMD_RSET, cmd_rset, TRANS},
    {POP3_CMD_NOOP, cmd_noop, TRANS},
};

static void
pop3_command(struct pop3_sess *s, const char *line, size_t len)
{
	struct pop3_cmdline cl;
	struct pop3_error e;
	int rc = pop3_cmd_parse(line, len, &cl, &e);

	if (log_enabled(LL_DEBUG)) {
		struct buf l = BUF_INIT(0);
		/* PASS and AUTH arguments are secrets (and a mistyped PASS may
		 * be UNKNOWN): log the verb only. */
		int secret = cl.cmd == POP3_CMD_PASS || cl.cmd == POP3_CMD_AUTH ||
			     cl.cmd == POP3_CMD_APOP || cl.cmd == POP3_CMD_UNKNOWN;
		log_escape(&l, line, secret ? cl.verb_len : len, 200);
		log_msg(LL_DEBUG, s->sid, "< %s%s", buf_str(&l), secret ? " ***" : "");
		buf_free(&l);
	}
	if (cl.cmd == POP3_CMD_UNKNOWN) {
		pop3_reply(s, 0, "%s", e.text);
		pop3_bad(s);
		return;
	}
	const struct pop3_cmd_entry *ce = NULL;
	for (size_t i = 0; i < ARRAY_LEN(pop3_cmds); i++)
		if (pop3_cmds[i].cmd == cl.cmd)
			ce = &pop3_cmds[i];
	if (ce == NULL)
		PANIC("pop3: command %d has no table entry", (int)cl.cmd);
	if (!(ce->states & SB(s->state))) {
		if (s->state == ST_AUTH)
			pop3_reply(s, 0, "%s is not valid before login (AUTHORIZATION state)",
				   pop3_cmd_name(cl.cmd));
		else
			pop3_reply(s, 0, "%s is not valid after login (TRANSACTION state)",
				   pop3_cmd_name(cl.cmd));
		pop3_bad(s);
		return;
	}
	if (rc < 0) {
		pop3_reply(s, 0, "%s", e.text);
		pop3_bad(s);
		return;
	}
	/*
	 * `surat user del` moved the maildrop aside for the admin: the session
	 * reads and expunges (at QUIT) nothing more of it, as IMAP's ends.
	 */
	if (s->state == ST_TRANS && !store_root_current(s->st)) {
		log_msg(LL_INFO, s->sid, "pop3 user=%s: the account was deleted; session closed",
			s->account);
		pop3_reply(s, 0, "[SYS/PERM] This account no longer exists");
		s->c->no_linger = 1;
		pop3_close(s);
		return;
	}
	ce->fn(s, &cl);
}

/* ---- input ---- */

static void
pop3_process(struct pop3_sess *s)
{
	while (s->state == ST_AUTH || s->state == ST_SASL || s->state == ST_TRANS) {
		struct evbuffer *in = bufferevent_get_input(s->c->bev);
		struct evbuffer *out = bufferevent_get_output(s->c->bev);

		if (s->srv->stopping) {
			pop3_reply(s, 0, "[SYS/TEMP] Server shutting down");
			pop3_close(s);
			return;
		}
		if ((s->flags & F_LOGIN_LATE) && s->state != ST_TRANS) {
			pop3_login_timeout(s);
			return;
		}
		if (evbuffer_get_length(out) > POP3_OUT_HIGH) {
			/* The client pipelines faster than it reads: wait. */
			s->flags |= F_DRAIN;
			bufferevent_disable(s->c->bev, EV_READ);
			return;
		}
		if (evbuffer_get_length(in) == 0)
			return;
		struct evbuffer_iovec v;
		if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
			return;
		size_t max = s->state == ST_SASL ? POP3_AUTH_LINE_MAX : POP3_CMD_LINE_MAX;
		size_t used = 0;
		struct pop3_error e;
		int rc = pop3_line_feed(&s->line, v.iov_base, v.iov_len, max, &used, &e);
		evbuffer_drain(in, used);
		if (rc == 0)
			continue;
		if (rc < 0) {
			if (s->state == ST_SASL)
				pop3_set_state(s, ST_AUTH);
			pop3_reply(s, 0, "%s", e.text);
			if (pop3_bad(s))
				return;
			continue;
		}
		if (s->state == ST_SASL)
			pop3_sasl_line(s, s->line.data, s->line.len);
		else
			pop3_command(s, s->line.data, s->line.len);
	}
}

static void
pop3_read_cb(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;
	struct pop3_sess *s = c->proto;

	/*
	 * Called from inside a reply: over STLS, OpenSSL may read while we
	 * write (conn_starttls) and runs this at once. A command run from here
	 * would run inside another, on a session half-changed. A caller in
	 * pop3_process() goes on with the input itself; for any other it is
	 * looked at again from the loop.
	 */
	if (s->hold > 0) {
		bufferevent_trigger(bev, EV_READ, BEV_TRIG_DEFER_CALLBACKS);
		return;
	}
	pop3_hold(s);
	pop3_process(s);
	pop3_release(s);
}

static void
pop3_write_cb(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;
	struct pop3_sess *s = c->proto;

	if (evbuffer_get_length(bufferevent_get_output(bev)) > POP3_OUT_LOW)
		return;
	if (s->hold > 0 && ((s->state == ST_SEND && !(s->flags & F_JOB)) || (s->flags & F_DRAIN))) {
		/* Inside a reply (see pop3_read_cb): again from the loop. */
		bufferevent_trigger(bev, EV_WRITE, BEV_TRIG_DEFER_CALLBACKS);
		return;
	}
	if (s->state == ST_SEND && !(s->flags & F_JOB)) {
		pop3_read_next(s, s->msgno_sending);
	} else if (s->flags & F_DRAIN) {
		s->flags &= ~F_DRAIN;
		pop3_hold(s);
		bufferevent_enable(bev, EV_READ);
		pop3_process(s);
		pop3_release(s);
	}
}

static void
pop3_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct conn *c = arg;
	struct pop3_sess *s = c->proto;

	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
		if (what & BEV_EVENT_ERROR)
			log_msg(LL_DEBUG, s->sid, "connection error");
		if (s->hold > 0) {
			/* A write under a caller failed: that caller closes. */
			s->flags |= F_CLOSE_NOW;
			return;
		}
		conn_close(c);
		return;
	}
	if (what & BEV_EVENT_TIMEOUT) {
		/* RFC 1939 §3: an autologout timer ends the session without UPDATE. */
		pop3_hold(s);
		log_msg(LL_INFO, s->sid, "pop3 idle timeout in state %s client=[%s]",
			state_names[s->state], c->peer_ip);
		if (s->state != ST_SEND)
			pop3_reply(s, 0, "Autologout: idle for too long");
		pop3_close(s);
		pop3_release(s);
	}
}

/*
 * login_timeout runs from the accept (TLS handshakes included) and nothing
 * the client sends restarts it, unlike the idle timeout: neither trickled
 * bytes nor CAPA, NOOP or STLS keep a session that never logs in (and its
 * connection slot). A login job under way (or its failure delay) may answer
 * first, as at shutdown: the session cannot end under it, and
 * pop3_process() ends it after a failed one.
 */
static void
pop3_login_timeout(struct pop3_sess *s)
{
	log_msg(LL_INFO, s->sid, "pop3 login timeout client=[%s] after=%llds", s->c->peer_ip,
		(long long)s->srv->cfg->login_timeout);
	pop3_reply(s, 0, "Login timeout");
	pop3_close(s);
}

static void
pop3_login_expired(evutil_socket_t fd, short what, void *arg)
{
	struct pop3_sess *s = arg;

	if (s->state == ST_WAIT) {
		s->flags |= F_LOGIN_LATE;
	} else if (s->state == ST_AUTH || s->state == ST_SASL) {
		pop3_hold(s);
		pop3_login_timeout(s);
		pop3_release(s);
	}
}

static void
pop3_on_shutdown(struct conn *c)
{
	struct pop3_sess *s = c->proto;

	/* Sessions waiting for a command end now; busy ones at their next one. */
	if (s->state == ST_AUTH || s->state == ST_SASL || s->state == ST_TRANS) {
		pop3_hold(s);
		pop3_reply(s, 0, "[SYS/TEMP] Server shutting down");
		pop3_close(s);
		pop3_release(s);
	}
}

static void
pop3_start(struct conn *c)
{
	struct pop3_sess *s = xcalloc(1, sizeof(*s));

	s->c = c;
	s->srv = c->srv;
	s->fd = -1;
	memcpy(s->sid, c->id, sizeof(s->sid));
	s->state = ST_AUTH;
	pop3_line_init(&s->line);
	c->proto = s;
	c->on_close = pop3_on_close;
	c->on_shutdown = pop3_on_shutdown;
	pop3_set_callbacks(s);
	s->login_timer = evtimer_new(s->srv->base, pop3_login_expired, s);
	event_add(s->login_timer, &(struct timeval){s->srv->cfg->login_timeout, 0});
	pop3_hold(s);
	pop3_reply(s, 1, "%s POP3 surat ready", s->srv->cfg->hostname);
	pop3_release(s);
}

const struct proto_ops pop3_server_ops = {
    .name = "pop3",
    .start = pop3_start,
    .busy_reply = "-ERR [SYS/TEMP] Too many connections\r\n",
};
