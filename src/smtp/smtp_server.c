/*
 * smtp_server — see smtp_server.h.
 *
 * The session is a state machine driven by the input buffer. Commands are
 * read one line at a time (evbuffer_search_eol, after checking the length
 * against the limit) and dispatched through smtp_cmds[]: a check of the
 * state, then the action. Replies go straight to the output buffer, so
 * pipelined commands are answered in order. When a command needs a worker
 * (AUTH's password check, the durable queue write after DATA) the session
 * stops reading until the answer is back: pipelined input waits in the
 * buffer and is processed afterwards, in order.
 *
 * DATA and BDAT content goes through smtp_data_reader (smtp_proto), which
 * ends DATA only on <CRLF>.<CRLF> and flags bare CR/LF, so SMTP smuggling
 * cannot work. At the end the message gets our Received: header on top
 * (and, on submission, Message-ID:/Date: when missing, at the end of its
 * header) and is handed to queue_submit(); the 250 is sent only from its
 * completion, after fsync.
 *
 * SECURITY: see the header. Secrets (AUTH data) are wiped after use and
 * never logged.
 */
#include "smtp/smtp_server.h"
#include "smtp/smtp_proto.h"
#include "smtp/ratelimit.h"
#include "auth/accounts.h"
#include "auth/lockout.h"
#include "auth/password.h"
#include "core/buf.h"
#include "core/log.h"
#include "core/tls.h"
#include "core/util.h"
#include "core/worker.h"
#include "dns/dns.h"
#include "mime/mime_addr.h"
#include "mime/mime_header.h"
#include "queue/queue.h"
#include "queue/queue_local.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#define CMD_LINE_MAX 512	/* RFC 5321 4.5.3.1.4, CRLF included */
/*
 * MAIL and RCPT lines may be longer by what the parameters of the
 * extensions we advertise add (RFC 1869 4.1.2: SIZE 26, DSN's RET and
 * ENVID 113 and NOTIFY and ORCPT 507, AUTH= 500, BODY, SMTPUTF8).
 */
#define CMD_PARAM_LINE_MAX (CMD_LINE_MAX + 1024)
#define AUTH_LINE_MAX 12288	/* RFC 4954 4: an AUTH line, with or without the command */
/*
 * A client that pipelines without reading the replies: past this much
 * unsent reply text no more commands are read, until it is sent; the input
 * stops at SMTP_IN_MAX, so TCP makes the client wait. Memory per session
 * stays bounded.
 */
#define SMTP_OUT_MAX (256 * 1024)
#define SMTP_IN_MAX (256 * 1024)
/* Longest wait for the client's name before the greeting (smtp_named). */
#define SMTP_NAME_WAIT_MS 5000

enum smtp_state {
	ST_CONNECTED,	/* greeting sent, no EHLO yet */
	ST_HELO,	/* EHLO/HELO done, no transaction */
	ST_MAIL,	/* MAIL accepted */
	ST_RCPT,	/* at least one RCPT accepted */
	ST_DATA,	/* reading DATA content */
	ST_BDAT,	/* reading a BDAT chunk */
	ST_AUTH,	/* reading an AUTH continuation line */
	ST_WAIT,	/* a worker job is running for us */
	ST_QUIT,
};

static const char *const state_names[] = {"connected", "helo", "mail", "rcpt", "data",
					  "bdat", "auth", "wait", "quit"};

#define F_EHLO 0x01	/* EHLO (not HELO): extensions on */
#define F_AUTHED 0x02
#define F_DEAD 0x04	/* connection gone while a job was running */
#define F_SUBMISSION 0x08
#define F_DISCARD 0x10	/* skipping the rest of an overlong line */
#define F_BDAT_FAIL 0x20 /* this BDAT transaction is already refused */
#define F_BDAT_USED 0x40
#define F_CLOSE_NOW 0x80 /* the peer is gone: read no more, close once no caller holds us */
#define F_FINISHED 0x100 /* conn_finish() called: the conn is on its way out */
#define F_OUT_WAIT 0x200 /* input left until the replies are sent (SMTP_OUT_MAX) */
#define F_DISCARD_AUTH 0x400 /* the overlong line skipped is an AUTH line or response */
#define F_BDAT_SEQ 0x800 /* this BDAT came with no MAIL: refused 503 (RFC 3030 2) */
#define F_BDAT_HELO 0x1000 /* this BDAT came after HELO: CHUNKING was never offered */
#define F_NAMING 0x2000 /* looking up the client's name: no greeting yet */
#define F_EOF 0x4000 /* the client's half is closed: its input is what is left (smtp_event_cb) */
#define F_DATA_NOMEM 0x8000 /* this message went past smtp.max_data_memory (smtp_data_count) */

enum auth_step { AUTH_PLAIN, AUTH_LOGIN_USER, AUTH_LOGIN_PASS };

struct rcpt {
	char *orig;
	char **final;
	int *local;
	size_t nfinal;
	char *orcpt;
	unsigned notify;
};

struct smtp_sess {
	struct conn *c;
	struct server *srv;
	enum smtp_state state;
	unsigned flags;
	unsigned errors;
	unsigned junk;		/* NOOP, RSET, VRFY, EXPN, HELP, EHLO again: since the last mail */
	unsigned auth_fails;	/* failed authentications (RFC 4954 9) */
	char helo[256];
	/* The client's name (forward-confirmed reverse DNS), NULL: "unknown". */
	char *client_name;
	struct dns_query *name_q;	/* its lookup under way */
	struct event *name_timer;	/* SMTP_NAME_WAIT_MS for it */
	char *user;		/* authenticated account */
	char *user_hash;	/* its password hash then: the same account still has it */
	/* transaction */
	struct smtp_mail mail;
	struct rcpt *rcpts;
	size_t nrcpts;
	size_t rate_held; /* of them, held in srv->ratelimit for user (smtp_rate_release) */
	size_t nfinal;
	int last_refusal;	/* last 5xx/4xx code in this transaction */
	unsigned overshoot;	/* RCPTs past smtp.max_recipients in this transaction */
	unsigned rcpt_refusals; /* RCPTs refused in the session (logged up to a cap) */
	char *rcpt_to;		/* the address of the RCPT being answered, for that line */
	enum smtp_cmd cmd;	/* the command being answered (for last_refusal) */
	char *msgid;		/* the Message-ID we added on submission, for the access log */
	struct buf data;
	size_t held;	/* of data, counted in srv->smtp_data (smtp_data_count) */
	struct smtp_data_reader reader;
	uint64_t bdat_left;
	uint64_t bdat_size;	/* this chunk's */
	uint64_t bdat_octets;	/* the transaction's chunk sizes so far */
	int bdat_last;
	enum smtp_state bdat_return;	/* where a non-LAST chunk leaves us */
	int64_t txn_ms;
	/*
	 * The request being waited for (a command line, or DATA or a BDAT
	 * chunk) began at phase_ms, phase_bytes of content since: the idle
	 * timeouts restart at every byte, these deadlines do not.
	 */
	int64_t phase_ms;
	uint64_t phase_bytes;
	/* AUTH */
	enum auth_step auth_step;
	char auth_user[256];
	struct event *timer;
	struct event *deadline_ev; /* TLS: smtp_deadline_arm() */
	/* Callers on the stack that still use the session (smtp_hold). */
	unsigned hold;
	/* Plaintext replies not yet handed to the kernel (smtp_flush). */
	struct buf out;
	/* What the access log needs of the connection, kept when it closes
	 * while a job still runs for us (c is NULL then). */
	struct smtp_gone *gone;
};

struct smtp_gone {
	char sid[17];
	char peer_ip[INET6_ADDRSTRLEN];
	char tls[128];
};

struct smtp_cmd_entry {
	enum smtp_cmd cmd;
	void (*fn)(struct smtp_sess *s, const struct smtp_cmdline *cl);
	unsigned states;	/* bit per enum smtp_state where allowed */
	int junk;		/* moves no mail: counted by smtp_junk() */
};

#define SB(x) (1u << (x))

static void smtp_process(struct smtp_sess *s);
static void smtp_deadline_arm(struct smtp_sess *s, int again);
static void smtp_timed_out(struct smtp_sess *s, const char *deadline);
static void auth_job_free(void *arg);
static void smtp_read_cb(struct bufferevent *bev, void *arg);
static void smtp_write_cb(struct bufferevent *bev, void *arg);
static void smtp_event_cb(struct bufferevent *bev, short what, void *arg);
static void smtp_trace_date(char *date, size_t size);
static void smtp_name_ptr_cb(const struct dns_result *res, void *arg);
static void smtp_name_stop(struct smtp_sess *s);
static void smtp_named(struct smtp_sess *s, const char *name);
static void smtp_trace_header(struct smtp_sess *s, struct buf *out, const char *date,
			      const char *qid, const char *for_rcpt);

static void
smtp_set_state(struct smtp_sess *s, enum smtp_state st)
{
	if (s->state != st && log_enabled(LL_DEBUG))
		log_msg(LL_DEBUG, s->c->id, "state %s -> %s", state_names[s->state],
			state_names[st]);
	s->state = st;
}

/*
 * "rcpt refused" lines a session may write: not every refusal counts toward
 * smtp.max_errors (452 past smtp.max_recipients does not), and a client
 * must not turn a stream of RCPTs into a larger stream of log.
 */
#define RCPT_REFUSALS_LOGGED 100

/* RCPTs past smtp.max_recipients in a transaction before each counts as an error. */
#define SMTP_RCPT_OVERSHOOT 1000

/* Escaped in from=<...> and rcpts=<...>,<...>: a quoted local part may hold them. */
#define LOG_LIST_CHARS " <>,"

static void
smtp_reply(struct smtp_sess *s, int code, const char *enh, const char *fmt, ...)
	PRINTF_LIKE(4, 5);

/* Queue reply bytes: for smtp_flush() in plaintext, the TLS filter otherwise. */
static void
smtp_out(struct smtp_sess *s, const char *p, size_t n)
{
	if (s->c->tls)
		bufferevent_write(s->c->bev, p, n);
	else
		buf_append(&s->out, p, n);
}

static void
smtp_reply(struct smtp_sess *s, int code, const char *enh, const char *fmt, ...)
{
	struct buf text = BUF_INIT(0), out = BUF_INIT(0);
	va_list ap;

	va_start(ap, fmt);
	buf_vprintf(&text, fmt, ap);
	va_end(ap);
	/*
	 * A text made long by what the client sent (a From: address of 900
	 * octets) is cut to fit a reply line (RFC 5321 4.5.3.1.5), not lost
	 * for a bare "Error": the client still reads why.
	 */
	size_t room = SMTP_REPLY_LINE_MAX - strlen("250 \r\n...") - (enh ? strlen(enh) + 1 : 0);
	if (text.len > room) {
		buf_truncate(&text, room);
		buf_puts(&text, "...");
	}
	if (smtp_reply_format(&out, code, enh, buf_str(&text)) < 0) {
		buf_reset(&out);
		buf_printf(&out, "%d %s Error\r\n", code, enh ? enh : "");
	}
	smtp_out(s, out.data, out.len);
	if (log_enabled(LL_DEBUG)) {
		char esc[300];
		log_msg(LL_DEBUG, s->c->id, "> %d %s", code, log_esc(esc, sizeof(esc), buf_str(&text)));
	}
	/*
	 * The code an unfinished transaction's access line gives: a refused
	 * RCPT or BDAT chunk. A DATA refused for want of recipients keeps the
	 * RCPT refusal that left it none (a pipelining client's 450 rate limit
	 * must not read 554), and a command that failed without touching the
	 * transaction (EXPN, a nested MAIL, a typo) is not its result.
	 */
	if (code >= 400 && s->state >= ST_MAIL && s->state <= ST_BDAT &&
	    (s->cmd == SMTP_CMD_RCPT || s->cmd == SMTP_CMD_BDAT ||
	     (s->cmd == SMTP_CMD_DATA && s->last_refusal == 0)))
		s->last_refusal = code;
	/*
	 * The access line lists who was given the message; who was refused
	 * and why (a relay attempt, an unknown user a sender asks about) is
	 * only here, as Postfix's "reject: RCPT" line.
	 */
	if (code >= 400 && s->cmd == SMTP_CMD_RCPT && s->state >= ST_MAIL && s->state <= ST_BDAT &&
	    s->rcpt_refusals++ < RCPT_REFUSALS_LOGGED) {
		struct buf l = BUF_INIT(0);
		buf_printf(&l, "rcpt refused client=[%s] from=<", s->c->peer_ip);
		log_escape_also(&l, s->mail.from.addr, s->mail.from.len, 256, LOG_LIST_CHARS);
		buf_puts(&l, ">");
		if (s->rcpt_to) {
			buf_puts(&l, " to=<");
			log_escape_also(&l, s->rcpt_to, strlen(s->rcpt_to), 256, LOG_LIST_CHARS);
			buf_puts(&l, ">");
		}
		buf_printf(&l, " reply=\"%d %s ", code, enh ? enh : "");
		log_escape(&l, text.data, text.len, 300);
		buf_putc(&l, '"');
		if (s->rcpt_refusals == RCPT_REFUSALS_LOGGED)
			buf_puts(&l, " (the session's next ones are not logged)");
		log_msg(LL_INFO, s->c->id, "%s", buf_str(&l));
		buf_free(&l);
	}
	buf_free(&text);
	buf_free(&out);
}

static void
smtp_reply_err(struct smtp_sess *s, const struct smtp_error *e)
{
	smtp_reply(s, e->reply, e->enhanced, "%s", e->text);
}

static void
smtp_reply_code(struct smtp_sess *s, enum smtp_err code)
{
	struct smtp_error e;

	smtp_error_set(&e, code);
	smtp_reply_err(s, &e);
}

static void
rcpt_free(struct rcpt *r)
{
	free(r->orig);
	for (size_t i = 0; i < r->nfinal; i++)
		free(r->final[i]);
	free(r->final);
	free(r->local);
	free(r->orcpt);
}

/* The client's confirmed name (smtp_named), for logs and our Received:. */
static const char *
smtp_client_name(const struct smtp_sess *s)
{
	return s->client_name != NULL ? s->client_name : "unknown";
}

/*
 * The most of rcpts= an access line lists: log_msg() cuts a line past
 * 1 MiB (LOG_LINE_HARD_MAX), and smtp.max_recipients (up to 100000) of
 * addresses the client made long would take result= and the rest with it.
 */
#define ACCESS_RCPTS_MAX (512 * 1024)

/*
 * The most fields of one name an access line lists. A header may hold a
 * name twice though RFC 5322 3.6 allows one, and readers differ on which
 * they show (surat's IMAP and Dovecot the last, others the first).
 */
#define ACCESS_FIELDS_MAX 4

/*
 * Append to l the value of every field called name of msg[0..len), in
 * order, each escaped and cut at max octets, with an escaped LF ("\x0a",
 * which no value holds) between them. values_only: a Message-ID, written
 * without spaces, and whose lone "-" is escaped ("-" is how none is
 * written). The number of octets appended.
 */
static size_t
access_fields(struct buf *l, const char *msg, size_t len, const char *name, size_t max,
	      int values_only)
{
	struct buf v = BUF_INIT(0);
	size_t pos = 0, n = 0, start = l->len;

	while (mime_addr_header_next(msg, len, &pos, name, &v) == 1) {
		if (n++ == ACCESS_FIELDS_MAX) {
			buf_puts(l, "\\x0a...");
			break;
		}
		if (n > 1)
			buf_puts(l, "\\x0a");
		const char *also = !values_only ? NULL : v.len == 1 ? " -" : " ";
		log_escape_also(l, v.data, v.len, max, also);
		buf_reset(&v);
	}
	buf_free(&v);
	return l->len - start;
}

/* Append the access-log line for the transaction; id NULL when refused. */
static void
smtp_access_log(struct smtp_sess *s, const char *id, int code, const char *reason)
{
	struct buf l = BUF_INIT(0);
	char tlsd[128];
	/* The connection, or what was kept of it when it closed under a job. */
	const char *sid = s->c ? s->c->id : s->gone->sid;
	const char *ip = s->c ? s->c->peer_ip : s->gone->peer_ip;
	const char *tls = s->c ? tls_describe(s->c->ssl, tlsd, sizeof(tlsd)) : s->gone->tls;

	/*
	 * One line a parser splits one way: values a peer chose are escaped,
	 * and those not in quotes have their spaces, and inside <> lists their
	 * '<', '>' and ',', written \xNN too (a quoted local part may hold them).
	 */
	buf_printf(&l, "access id=%s client=%s[%s] helo=", id ? id : "-", smtp_client_name(s), ip);
	log_escape_also(&l, s->helo, strlen(s->helo), 100, " ");
	/* An account name may be UTF-8 (RFC 6531): escaped like the rest. */
	buf_puts(&l, " user=");
	if (s->user != NULL)
		log_escape_also(&l, s->user, strlen(s->user), 256, " ");
	else
		buf_putc(&l, '-');
	buf_puts(&l, " from=<");
	log_escape_also(&l, s->mail.from.addr, s->mail.from.len, 256, LOG_LIST_CHARS);
	buf_puts(&l, "> rcpts=");
	size_t list = l.len;
	for (size_t i = 0; i < s->nrcpts; i++) {
		/* The rest counted, not listed ("<...+N>" is no address: no
		 * '@'); each recipient has its delivery line. */
		if (l.len - list > ACCESS_RCPTS_MAX) {
			buf_printf(&l, ",<...+%zu>", s->nrcpts - i);
			break;
		}
		if (i)
			buf_putc(&l, ',');
		buf_putc(&l, '<');
		log_escape_also(&l, s->rcpts[i].orig, strlen(s->rcpts[i].orig), 256,
				 LOG_LIST_CHARS);
		buf_putc(&l, '>');
	}
	if (s->nrcpts == 0)
		buf_putc(&l, '-');
	/* What came, kept or not: past the size limit data holds only the
	 * part that fit, which would read as a message within it. */
	buf_printf(&l, " size=%llu", (unsigned long long)s->reader.size);
	/* Message-ID and Subject, if we have the header, or added the
	 * Message-ID (an empty message submitted gets one too). */
	if (s->data.len > 0 || s->msgid != NULL) {
		/*
		 * Content whose first line starts with white space has no
		 * header: smtp_message_done() stores it all as body, and a
		 * Message-ID: or Subject: line in it is nobody's field. On
		 * submission neither is one below a line that is no field,
		 * where it puts the empty line in.
		 */
		size_t hlen = s->data.len, own;
		if (hlen > 0 && (s->data.data[0] == ' ' || s->data.data[0] == '\t'))
			hlen = 0;
		else if (s->flags & F_AUTHED) {
			smtp_data_header_end(s->data.data, s->data.len, &own);
			hlen = own;
		}
		buf_puts(&l, " msgid=");
		/* Ours first: added, the message had none of its own. */
		if (s->msgid != NULL)
			buf_puts(&l, s->msgid);
		else if (access_fields(&l, s->data.data, hlen, "Message-ID", 200, 1) == 0)
			buf_putc(&l, '-');
		buf_puts(&l, " subject=\"");
		access_fields(&l, s->data.data, hlen, "Subject", 100, 0);
		buf_putc(&l, '"');
	}
	buf_printf(&l, " result=%d", code);
	if (reason) {
		buf_puts(&l, " reason=\"");
		log_escape(&l, reason, strlen(reason), 200);
		buf_putc(&l, '"');
	}
	buf_printf(&l, " duration=%.3fs tls=%s", (double)(util_mono_ms() - s->txn_ms) / 1000.0,
		   tls);
	log_msg(LL_INFO, sid, "%s", buf_str(&l));
	buf_free(&l);
}

/*
 * Count what s->data holds now against smtp.max_data_memory, in all and for
 * the client's address (config_data_memory()). A message goes to the queue
 * only whole, so a client that sends big messages on many connections and
 * never ends them would otherwise make the daemon hold them all. Past either
 * limit the rest of the message is dropped as it comes (as past
 * smtp.max_message_size: what was taken stays, for the access log) and its
 * end gets 452 4.3.1; the sender tries again later.
 */
static void
smtp_data_count(struct smtp_sess *s)
{
	struct server *srv = s->srv;
	const struct config *cfg = srv->cfg;
	int64_t delta = (int64_t)s->data.len - (int64_t)s->held;

	if (delta == 0)
		return;
	srv->smtp_data += (uint64_t)delta;	/* (modulo 2^64: a decrease too) */
	/* A session whose connection is gone (F_DEAD) gave its address's share
	 * back then (smtp_on_close): only the total is still counted. */
	uint64_t ip = s->c != NULL ? server_ip_held(srv, s->c->ip_key, IP_HELD_SMTP, delta) : 0;
	s->held = s->data.len;
	if (delta < 0 || (s->flags & F_DATA_NOMEM))
		return;
	uint64_t all = (uint64_t)config_data_memory(cfg);
	uint64_t per_ip = (uint64_t)config_client_share((int64_t)all, cfg->smtp_max_message_size);
	if (srv->smtp_data <= all && ip <= per_ip)
		return;
	s->flags |= F_DATA_NOMEM;
	s->reader.errors |= SMTP_DATA_ERR_TOO_BIG;	/* keep no more of it */
	log_msg(LL_WARN, s->c->id,
		"message refused: sessions hold %llu octets of mail in memory, %llu of them from "
		"this client (smtp.max_data_memory %llu, %llu per client)",
		(unsigned long long)srv->smtp_data, (unsigned long long)ip, (unsigned long long)all,
		(unsigned long long)per_ip);
}

/* The transaction's recipients are paid for or dropped: give back what they held. */
static void
smtp_rate_release(struct smtp_sess *s)
{
	if (s->rate_held > 0 && s->user != NULL)
		ratelimit_release(s->srv->ratelimit, s->user, s->rate_held, util_mono_ms());
	s->rate_held = 0;
}

static void
smtp_txn_reset(struct smtp_sess *s, int log_abort)
{
	if (log_abort && s->state >= ST_MAIL && s->state <= ST_BDAT)
		smtp_access_log(s, NULL, s->last_refusal ? s->last_refusal : 0,
				"transaction not completed");
	smtp_rate_release(s);
	for (size_t i = 0; i < s->nrcpts; i++)
		rcpt_free(&s->rcpts[i]);
	free(s->rcpts);
	s->rcpts = NULL;
	s->nrcpts = 0;
	s->nfinal = 0;
	s->overshoot = 0;
	memset(&s->mail, 0, sizeof(s->mail));
	buf_free(&s->data);
	smtp_data_count(s);
	s->flags &= ~F_DATA_NOMEM;
	/* The next transaction's size= starts from nothing, DATA or not. */
	memset(&s->reader, 0, sizeof(s->reader));
	s->last_refusal = 0;
	free(s->msgid);
	s->msgid = NULL;
	s->bdat_left = 0;
	s->bdat_octets = 0;
	s->bdat_last = 0;
	s->flags &= ~(F_BDAT_FAIL | F_BDAT_USED | F_BDAT_SEQ | F_BDAT_HELO);
}

/*
 * SMTP sessions alive (all on the loop thread). A message arriving while
 * its session is the only one has nobody to share a spool flush with: it
 * may be written on the loop (queue_submit_lone).
 */
static unsigned smtp_nsessions;

/* Forget the authenticated account. */
static void
smtp_user_clear(struct smtp_sess *s)
{
	smtp_rate_release(s);
	free(s->user);
	s->user = NULL;
	if (s->user_hash) {
		util_wipe(s->user_hash, strlen(s->user_hash));
		free(s->user_hash);
		s->user_hash = NULL;
	}
}

static void
smtp_sess_free(struct smtp_sess *s)
{
	smtp_nsessions--;
	smtp_txn_reset(s, 0);
	smtp_user_clear(s);
	if (s->timer)
		event_free(s->timer);
	if (s->deadline_ev)
		event_free(s->deadline_ev);
	smtp_name_stop(s);
	free(s->client_name);
	free(s->rcpt_to);
	util_wipe(s->auth_user, sizeof(s->auth_user));
	buf_free(&s->out);
	free(s->gone);
	free(s);
}

static void
smtp_on_close(struct conn *c)
{
	struct smtp_sess *s = c->proto;

	/* It reads the connection: not after this, not under a job. */
	if (s->deadline_ev) {
		event_free(s->deadline_ev);
		s->deadline_ev = NULL;
	}
	if (s->state >= ST_MAIL && s->state <= ST_BDAT)
		smtp_txn_reset(s, 1);
	if (s->state == ST_WAIT && s->timer) {
		/* The password check is over and only auth.fail_delay's timer
		 * points at us (the grace period of a stop ended the wait). */
		auth_job_free(event_get_callback_arg(s->timer));
		smtp_sess_free(s);
		return;
	}
	if (s->state == ST_WAIT) {
		/* A worker job still points at us; it frees the session, and
		 * logs the transaction it was working for. */
		s->gone = xcalloc(1, sizeof(*s->gone));
		memcpy(s->gone->sid, c->id, sizeof(s->gone->sid));
		memcpy(s->gone->peer_ip, c->peer_ip, sizeof(s->gone->peer_ip));
		tls_describe(c->ssl, s->gone->tls, sizeof(s->gone->tls));
		/*
		 * What it holds (a BDAT chunk under a check, a message being
		 * queued) is freed when the job ends, with no connection to name
		 * its address by: the address's count lets go of it now, while
		 * other connections from there may still be counted in it.
		 */
		server_ip_held(s->srv, c->ip_key, IP_HELD_SMTP, -(int64_t)s->held);
		s->flags |= F_DEAD;
		s->c = NULL;
		return;
	}
	smtp_sess_free(s);
}

/*
 * Every entry from the loop into a session (input, events, job completions)
 * holds it: conn_finish() and conn_close() may free it at once, which must
 * not happen under a caller that still reads it. A close asked for meanwhile
 * is done by the last smtp_release(), which returns 1 if the session is gone.
 */
static void
smtp_hold(struct smtp_sess *s)
{
	s->hold++;
}

/*
 * Hand the plaintext replies queued so far to the kernel now, with one
 * send(2). Through the bufferevent they would leave on the loop's next turn,
 * after one more epoll_wait, and each would add and drop a write event: a
 * loop turn of latency and two epoll_ctl calls per reply, seven replies a
 * message. Pipelined replies still leave together, from the last release of
 * the session. Whatever the socket does not take now (or an error) goes to
 * the bufferevent, behind anything it still holds, which sends or reports it.
 */
static void
smtp_flush(struct smtp_sess *s)
{
	size_t sent = 0;

	if (s->out.len == 0)
		return;
	if (evbuffer_get_length(bufferevent_get_output(s->c->bev)) == 0) {
		ssize_t n = send(bufferevent_getfd(s->c->bev), s->out.data, s->out.len,
				 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n > 0)
			sent = (size_t)n;
	}
	if (sent < s->out.len)
		bufferevent_write(s->c->bev, s->out.data + sent, s->out.len - sent);
	buf_reset(&s->out);
}

static int
smtp_release(struct smtp_sess *s)
{
	if (--s->hold > 0)
		return 0;
	if (s->flags & F_CLOSE_NOW) {
		conn_close(s->c);
		return 1;
	}
	smtp_flush(s);
	if (s->state == ST_QUIT && !(s->flags & F_FINISHED)) {
		s->flags |= F_FINISHED;
		conn_finish(s->c);
		return 1;
	}
	return 0;
}

static void
smtp_close(struct smtp_sess *s)
{
	/* A transaction cut here (a timeout, the error limit) still has its line. */
	if (s->state >= ST_MAIL && s->state <= ST_BDAT)
		smtp_txn_reset(s, 1);
	smtp_set_state(s, ST_QUIT);
	if (s->hold == 0 && !(s->flags & F_FINISHED)) {
		/* The last reply first: conn_finish() sends what the bufferevent holds. */
		smtp_flush(s);
		s->flags |= F_FINISHED;
		conn_finish(s->c);
	}
}

static int
smtp_error_count(struct smtp_sess *s)
{
	if (++s->errors >= (unsigned)s->srv->cfg->smtp_max_errors) {
		smtp_reply(s, 421, "4.7.0", "%s Too many errors, closing connection",
			   s->srv->cfg->hostname);
		log_msg(LL_WARN, s->c->id, "too many errors from %s", s->c->peer_ip);
		s->last_refusal = 421;
		smtp_close(s);
		return 1;
	}
	return 0;
}

/*
 * A command that moves no mail (NOOP, RSET, VRFY, EXPN, HELP, a repeated
 * HELO/EHLO): past smtp.max_junk_commands since the session's last accepted
 * message, each also counts as an error, so a client cannot hold its
 * connection for ever with them (Postfix's smtpd_junk_command_limit). 1 if
 * the session was closed (the command is then not answered).
 */
static int
smtp_junk(struct smtp_sess *s)
{
	if (++s->junk <= (unsigned)s->srv->cfg->smtp_max_junk)
		return 0;
	return smtp_error_count(s);
}

/*
 * A failed authentication: an error like any other, except that RFC 4954 9
 * says a server SHOULD NOT drop the connection before 3 of them. 1 if the
 * session was closed.
 */
static int
smtp_auth_failed(struct smtp_sess *s)
{
	if (++s->auth_fails < 3) {
		s->errors++;
		return 0;
	}
	return smtp_error_count(s);
}

/*
 * Whether the account this session authenticated as was deleted since
 * (`surat user del`), maybe made anew under the address for someone else,
 * or given another password: it may send nothing more. (A database error
 * is not taken for a deletion: the sender checks that follow fail on it too.)
 */
static int
smtp_account_gone(struct smtp_sess *s)
{
	if (!(s->flags & F_AUTHED))
		return 0;
	if (accounts_user_same(s->srv->accounts, s->user, s->user_hash) != 0)
		return 0;
	char esc[300];
	log_msg(LL_WARN, s->c->id,
		"user=%s: the account was deleted or its password changed; session closed",
		log_esc_also(esc, sizeof(esc), s->user, " "));
	return 1;
}

static int
auth_allowed(const struct smtp_sess *s)
{
	return s->c->tls || s->srv->cfg->allow_plaintext_auth;
}

static unsigned
smtp_ext(const struct smtp_sess *s)
{
	if (!(s->flags & F_EHLO))
		return 0;
	return SMTP_EXT_SIZE | SMTP_EXT_8BITMIME | SMTP_EXT_SMTPUTF8 | SMTP_EXT_DSN |
	       (auth_allowed(s) ? SMTP_EXT_AUTH : 0);
}

/* The idle timeouts of the state we are in (armed as libevent sees fit). */
static void
smtp_idle_timeouts(struct smtp_sess *s)
{
	const struct config *cfg = s->srv->cfg;
	int64_t t = (s->state == ST_DATA || s->state == ST_BDAT) ? cfg->smtp_data_timeout
								  : cfg->smtp_cmd_timeout;
	struct timeval tv = {t, 0};
	bufferevent_set_timeouts(s->c->bev, &tv, &tv);
}

/*
 * A worker (or the AUTH delay) has the session: no input until smtp_resume(),
 * and no idle timeouts either, since the wait is ours, not the client's.
 * (Over TLS libevent's filter fires them even with reading off, and a
 * timeout that closed the session would free it under the job.)
 */
static void
smtp_wait(struct smtp_sess *s)
{
	smtp_set_state(s, ST_WAIT);
	bufferevent_disable(s->c->bev, EV_READ);
	bufferevent_set_timeouts(s->c->bev, NULL, NULL);
}

static void
smtp_timeouts(struct smtp_sess *s)
{
	smtp_idle_timeouts(s);
	s->phase_ms = util_mono_ms();
	s->phase_bytes = 0;
	smtp_deadline_arm(s, 1);
}

/*
 * When the request under way must be whole, on util_mono_ms()'s clock, or
 * INT64_MAX if no deadline runs: a command line must be complete within
 * smtp.command_timeout of the end of the one before (or of our answer
 * to it, when a job made that late: smtp_resume), and DATA (or a
 * BDAT chunk) within smtp.data_timeout plus one second per
 * smtp.min_data_rate octets received (Postfix's per-request deadlines). A
 * client that sends a byte just inside each idle timeout would otherwise
 * hold its connection for days. Octets beyond smtp.max_message_size earn
 * no more time: they are discarded anyway, and a client streaming an
 * endless oversized message would otherwise never meet its deadline.
 */
static int64_t
smtp_deadline_at(const struct smtp_sess *s, const char **what)
{
	const struct config *cfg = s->srv->cfg;

	if (s->state == ST_DATA || s->state == ST_BDAT) {
		*what = "data";
		if (cfg->smtp_min_data_rate <= 0)
			return INT64_MAX;
		uint64_t credited = s->phase_bytes;
		if (credited > (uint64_t)cfg->smtp_max_message_size)
			credited = (uint64_t)cfg->smtp_max_message_size;
		return s->phase_ms + cfg->smtp_data_timeout * 1000 +
		       (int64_t)(credited * 1000 / (uint64_t)cfg->smtp_min_data_rate);
	}
	*what = "command";
	if (s->state == ST_WAIT || s->state == ST_QUIT)
		return INT64_MAX;
	return s->phase_ms + cfg->smtp_cmd_timeout * 1000;
}

/*
 * Whether the client is past its deadline (smtp_deadline_at). A command's
 * only while part of it has come: a client that sends nothing meets the
 * idle timeout. Over TLS that part may be a record not yet whole.
 */
static int
smtp_past_deadline(struct smtp_sess *s, const char **what)
{
	int64_t at = smtp_deadline_at(s, what);

	if (at == INT64_MAX)
		return 0;
	/* An overlong line being drained is a line still coming, too. */
	if (s->state != ST_DATA && s->state != ST_BDAT &&
	    evbuffer_get_length(bufferevent_get_input(s->c->bev)) == 0 && !(s->flags & F_DISCARD) &&
	    !(s->c->ssl != NULL && SSL_has_pending(s->c->ssl)))
		return 0;
	return util_mono_ms() > at;
}

static void
smtp_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_sess *s = arg;
	const char *req;

	(void)fd;
	(void)what;
	/* A job has us (smtp_resume() arms again), or the end is under way. */
	if (s->state == ST_WAIT || s->state == ST_QUIT || (s->flags & (F_CLOSE_NOW | F_FINISHED)))
		return;
	/* (As smtp_read_cb(): not before our greeting, not while our replies
	 * wait for the client; the handshake has a deadline of its own.) */
	if (!(s->flags & (F_NAMING | F_OUT_WAIT)) && SSL_is_init_finished(s->c->ssl) &&
	    smtp_past_deadline(s, &req)) {
		smtp_hold(s);
		smtp_timed_out(s, req);
		smtp_release(s);
		return;
	}
	smtp_deadline_arm(s, 0);
}

/*
 * Over TLS the deadline needs a timer of its own: the octets of a record
 * not yet whole reach no read callback, where it is checked, and over
 * implicit TLS each restarts libevent's idle timeout, so a client trickling
 * its records would hold its connection for as long as it likes. Armed for
 * when the deadline falls (again: a new request began, it may fall
 * earlier); one that finds it not passed arms itself again. In plaintext
 * every octet comes through smtp_read_cb(): no timer.
 */
static void
smtp_deadline_arm(struct smtp_sess *s, int again)
{
	const struct config *cfg = s->srv->cfg;
	const char *req;

	if (!s->c->tls)
		return;
	if (s->deadline_ev == NULL)
		s->deadline_ev = evtimer_new(s->srv->base, smtp_deadline_cb, s);
	else if (again)
		evtimer_del(s->deadline_ev);
	else if (evtimer_pending(s->deadline_ev, NULL))
		return;
	int64_t at = smtp_deadline_at(s, &req);
	if (at == INT64_MAX)
		return;
	int64_t wait = at + 1 - util_mono_ms();
	/* Passed with nothing come: the idle timeout ends it before this. */
	if (wait <= 0) {
		int data = s->state == ST_DATA || s->state == ST_BDAT;
		wait = (data ? cfg->smtp_data_timeout : cfg->smtp_cmd_timeout) * 1000;
	}
	struct timeval tv = {wait / 1000, wait % 1000 * 1000};
	evtimer_add(s->deadline_ev, &tv);
}

static void
smtp_set_callbacks(struct smtp_sess *s)
{
	bufferevent_setcb(s->c->bev, smtp_read_cb, smtp_write_cb, smtp_event_cb, s->c);
	bufferevent_setwatermark(s->c->bev, EV_READ, 0, SMTP_IN_MAX);
	smtp_timeouts(s);
	/*
	 * Plaintext replies go straight to the socket (smtp_flush): enabling
	 * EV_WRITE here would register for writability with nothing to write,
	 * two epoll changes per connection. A bufferevent has EV_WRITE enabled
	 * from its creation, so what the kernel refuses is still sent when it
	 * is queued. TLS replies always go through the filter.
	 */
	bufferevent_enable(s->c->bev, s->c->tls ? EV_READ | EV_WRITE : EV_READ);
}

/* ---- commands ---- */

static void
cmd_ehlo(struct smtp_sess *s, const struct smtp_cmdline *cl)
{
	const struct config *cfg = s->srv->cfg;
	int utf8;

	if (smtp_domain_check(cl->arg, cl->arg_len, &utf8) < 0) {
		smtp_reply(s, 501, "5.5.4", "Syntax: %s hostname (a domain or an address literal)",
			   cl->cmd == SMTP_CMD_EHLO ? "EHLO" : "HELO");
		smtp_error_count(s);
		return;
	}
	smtp_txn_reset(s, 1);
	xsnprintf(s->helo, sizeof(s->helo), "%.*s", (int)(cl->arg_len < 255 ? cl->arg_len : 255),
		  cl->arg);
	if (cl->cmd == SMTP_CMD_HELO) {
		s->flags &= ~F_EHLO;
		smtp_reply(s, 250, NULL, "%s", cfg->hostname);
		smtp_set_state(s, ST_HELO);
		return;
	}
	s->flags |= F_EHLO;
	struct buf r = BUF_INIT(0);
	buf_printf(&r, "%s Hello %s [%s]\n", cfg->hostname, s->helo, s->c->peer_ip);
	buf_puts(&r, "PIPELINING\n");
	buf_printf(&r, "SIZE %lld\n", (long long)cfg->smtp_max_message_size);
	buf_puts(&r, "8BITMIME\nSMTPUTF8\nENHANCEDSTATUSCODES\nCHUNKING\nDSN\n");
	if (!s->c->tls && tls_server_available())
		buf_puts(&r, "STARTTLS\n");
	if (auth_allowed(s) && !(s->flags & F_AUTHED))
		buf_puts(&r, "AUTH PLAIN LOGIN\n");
	struct buf out = BUF_INIT(0);
	/* The greeting line holds the client's name: sanitise via the formatter. */
	if (smtp_reply_format(&out, 250, NULL, r.data) < 0) {
		buf_reset(&out);
		buf_printf(&out, "250 %s\r\n", cfg->hostname);
	}
	smtp_out(s, out.data, out.len);
	buf_free(&out);
	buf_free(&r);
	smtp_set_state(s, ST_HELO);
}

static void
cmd_starttls(struct smtp_sess *s, const struct smtp_cmdline *cl)
{
	if (s->c->tls) {
		smtp_reply(s, 503, "5.5.1", "TLS already active");
		smtp_error_count(s);
		return;
	}
	if (!tls_server_available() || s->c->kind == LISTEN_SUBMISSIONS) {
		smtp_reply(s, 502, "5.5.1", "STARTTLS not available");
		smtp_error_count(s);
		return;
	}
	/* Made before the 220: RFC 3207 4 answers a failure with 454 instead. */
	SSL *ssl = tls_server_ssl();
	if (ssl == NULL) {
		smtp_reply(s, 454, "4.7.0", "TLS not available due to temporary reason");
		return;
	}
	smtp_reply(s, 220, "2.0.0", "Ready to start TLS");
	smtp_flush(s);	/* in plaintext, before the filter takes over */
	if (conn_starttls(s->c, ssl) < 0) {
		/* Out of memory only: the client is about to start a handshake. */
		log_msg(LL_ERROR, s->c->id, "STARTTLS setup failed");
		smtp_close(s);
		return;
	}
	/* RFC 3207 4.2: forget everything learned before TLS (a transaction too: logged). */
	smtp_txn_reset(s, 1);
	s->helo[0] = '\0';
	s->flags &= ~(F_EHLO | F_AUTHED);
	smtp_user_clear(s);
	smtp_set_state(s, ST_CONNECTED);
	smtp_set_callbacks(s);
}

static void
smtp_resume(struct smtp_sess *s)
{
	/*
	 * Continue with pipelined input once a job's reply has been written.
	 * EV_WRITE as smtp_set_callbacks() has it: for TLS only (enabled on a
	 * plain socket with nothing to write it costs two epoll changes and a
	 * wake-up per message).
	 */
	bufferevent_enable(s->c->bev, s->c->tls ? EV_READ | EV_WRITE : EV_READ);
	smtp_idle_timeouts(s);
	/* The time we took to answer is not the client's: the next line's
	 * deadline runs from here (a line pipelined meanwhile resets it too). */
	s->phase_ms = util_mono_ms();
	smtp_deadline_arm(s, 0);
	smtp_process(s);
}

struct auth_job {
	struct smtp_sess *s;
	char user[256];
	char pass[256];
	char *hash;
	int ok;
	int tempfail; /* the accounts database failed */
	int locked;   /* refused: the client's address is locked out */
	/* the client, for the lockout when the session is gone by the answer */
	char sid[sizeof(((struct conn *)0)->id)];
	char peer_ip[INET6_ADDRSTRLEN];
	char key[UTIL_CLIENT_KEY_MAX];
	uint64_t fp; /* the credentials, for the lockout (the password is wiped) */
};

static void
auth_job_free(void *arg)
{
	struct auth_job *j = arg;
	util_wipe(j, sizeof(*j));
	free(j);
}

static void
auth_work(void *arg)
{
	struct auth_job *j = arg;
	j->ok = j->hash && password_verify(j->pass, j->hash);
	util_wipe(j->pass, sizeof(j->pass));
}

/*
 * The accounts database failed: 454 4.7.0 (RFC 4954 6), as Postfix says when
 * its SASL backend is down; not 535, which makes clients drop a good
 * password, and not counted as a failure.
 */
static void
auth_tempfail(struct smtp_sess *s, const char *user)
{
	char esc[300];

	log_msg(LL_ERROR, s->c->id, "auth user=%s client=[%s]: accounts database error",
		log_esc_also(esc, sizeof(esc), user, " "), s->c->peer_ip);
	smtp_reply(s, 454, "4.7.0", "Temporary authentication failure, try again later");
	smtp_set_state(s, s->helo[0] ? ST_HELO : ST_CONNECTED);
}

/*
 * Too many failed logins from the client's address (auth/lockout): refused
 * without a check, so a right password is refused too. 454 4.7.0 (RFC 4954
 * 6), temporary and the same for every user, not 535, which says the
 * password is wrong. It counts toward this session's own limit of failures,
 * not toward the lockout. 1 if the session was closed.
 */
static int
auth_locked(struct smtp_sess *s, const char *user)
{
	char esc[300];

	log_msg(LL_WARN, s->c->id, "auth failed user=%s client=[%s] reason=locked",
		log_esc_also(esc, sizeof(esc), user, " "), s->c->peer_ip);
	smtp_reply(s, 454, "4.7.0",
		   "Too many authentication failures from this address, try again later");
	smtp_set_state(s, s->helo[0] ? ST_HELO : ST_CONNECTED);
	return smtp_auth_failed(s);
}

static void
auth_finish(struct smtp_sess *s, int ok, const char *user)
{
	char esc[300];

	if (ok) {
		free(s->user);
		s->user = xstrdup(user);
		s->flags |= F_AUTHED;
		/* An account name may be UTF-8: escaped, as in the access line. */
		log_msg(LL_INFO, s->c->id, "auth ok user=%s client=[%s]",
			log_esc_also(esc, sizeof(esc), user, " "), s->c->peer_ip);
		smtp_reply(s, 235, "2.7.0", "Authentication successful");
	} else {
		log_msg(LL_WARN, s->c->id, "auth failed user=%s client=[%s]",
			log_esc_also(esc, sizeof(esc), user, " "), s->c->peer_ip);
		smtp_reply(s, 535, "5.7.8", "Authentication credentials invalid");
	}
	smtp_set_state(s, s->helo[0] ? ST_HELO : ST_CONNECTED);
	if (!ok && smtp_auth_failed(s))
		return;
	smtp_resume(s);
}

static void
auth_delay_done(evutil_socket_t fd, short what, void *arg)
{
	struct auth_job *j = arg;
	struct smtp_sess *s = j->s;

	if (s->flags & F_DEAD) {
		smtp_sess_free(s);
	} else {
		event_free(s->timer);
		s->timer = NULL;
		smtp_hold(s);
		auth_finish(s, 0, j->user);
		smtp_release(s);
	}
	auth_job_free(j);
}

static void
auth_done(void *arg)
{
	struct auth_job *j = arg;
	struct smtp_sess *s = j->s;

	j->locked = lockout_login_settle(s->srv->lockout, j->sid, j->peer_ip, j->key, j->fp, j->ok);
	if (j->locked)
		j->ok = 0;
	/* Checked against a hash read before: the user may be gone (or made anew) since. */
	if (j->ok && !(s->flags & F_DEAD)) {
		int same = accounts_user_same(s->srv->accounts, j->user, j->hash);
		j->tempfail = same < 0;
		j->ok = same == 1;
	}
	if (j->ok && !(s->flags & F_DEAD)) {
		/* Kept: what tells this account from one made anew under the address. */
		smtp_user_clear(s);
		s->user_hash = j->hash;
		j->hash = NULL;
	}
	if (j->hash) {
		util_wipe(j->hash, strlen(j->hash));
		free(j->hash);
		j->hash = NULL;
	}
	if (!j->ok && !j->tempfail && !j->locked && !(s->flags & F_DEAD) &&
	    s->srv->cfg->auth_fail_delay > 0) {
		/* Slow down guessing: the failure answer comes after a delay. */
		s->timer = event_new(s->srv->base, -1, 0, auth_delay_done, j);
		event_add(s->timer, &(struct timeval){s->srv->cfg->auth_fail_delay, 0});
		return;
	}
	if (s->flags & F_DEAD) {
		smtp_sess_free(s);
	} else if (j->locked) {
		smtp_hold(s);
		if (!auth_locked(s, j->user))
			smtp_resume(s);
		smtp_release(s);
	} else if (j->tempfail) {
		smtp_hold(s);
		auth_tempfail(s, j->user);
		smtp_resume(s);
		smtp_release(s);
	} else {
		smtp_hold(s);
		auth_finish(s, j->ok, j->user);
		smtp_release(s);
	}
	auth_job_free(j);
}

static void
auth_check(struct smtp_sess *s, const char *user, const char *pass)
{
	struct auth_job *j = xcalloc(1, sizeof(*j));
	struct buf norm = BUF_INIT(0), err = BUF_INIT(0);
	struct account_user u = {0};

	int found = 0;

	if (lockout_login_check(s->srv->lockout, s->c->peer_ip, s->c->ip_key) != LOCKOUT_OPEN) {
		auth_locked(s, user);
		auth_job_free(j);
		return;
	}
	j->s = s;
	memcpy(j->sid, s->c->id, sizeof(j->sid));
	memcpy(j->peer_ip, s->c->peer_ip, sizeof(j->peer_ip));
	memcpy(j->key, s->c->ip_key, sizeof(j->key));
	if (accounts_normalise(user, 0, &norm, &err) == 0) {
		xsnprintf(j->user, sizeof(j->user), "%s", norm.data);
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
		auth_tempfail(s, j->user);
		auth_job_free(j);
		return;
	}
	/* Unknown users still pay for a hash, so timing does not reveal them. */
	if (j->hash == NULL)
		j->hash = xstrdup("$y$j9T$0123456789abcdefghijk.$HZFaqNlR2sYnFAJ.QaWPQgKyJb5IoHXk9x4tw4eROn4");
	xsnprintf(j->pass, sizeof(j->pass), "%s", pass);
	j->fp = lockout_fingerprint(s->srv->lockout, user, strlen(user), pass, strlen(pass));
	smtp_wait(s);
	worker_submit(s->srv->auth_pool, auth_work, auth_done, j);
}

static void
auth_plain_response(struct smtp_sess *s, const char *b64, size_t len)
{
	struct smtp_sasl_plain p;
	struct smtp_error e;

	if (smtp_sasl_plain_decode(b64, len, &p, &e) < 0) {
		/* 501 5.5.2 for bad base64 or syntax, 500 5.5.6 for too long;
		 * 535 5.7.8 for an authzid naming someone else (a credentials
		 * problem, not syntax). */
		if (e.code == SMTP_ERR_SASL_AUTHZID)
			smtp_reply(s, e.reply, e.enhanced, "%s", e.text);
		else
			smtp_reply(s, e.reply, e.enhanced, "Bad AUTH PLAIN data: %s", e.text);
		smtp_set_state(s, s->helo[0] ? ST_HELO : ST_CONNECTED);
		smtp_auth_failed(s);
		return;
	}
	auth_check(s, p.authcid, p.passwd);
	smtp_sasl_plain_wipe(&p);
}

static void
auth_login_step(struct smtp_sess *s, const char *b64, size_t len)
{
	char dec[256];
	size_t n;

	if (len > SMTP_BASE64_LEN(sizeof(dec) - 1)) {
		/* RFC 4954 4: longer than the mechanism's buffer. */
		smtp_reply_code(s, SMTP_ERR_SASL_TOOLONG);
		smtp_set_state(s, s->helo[0] ? ST_HELO : ST_CONNECTED);
		smtp_auth_failed(s);
		return;
	}
	if (smtp_base64_decode(b64, len, dec, sizeof(dec) - 1, &n) < 0 || n == 0 ||
	    memchr(dec, '\0', n)) {
		int empty = len == 0 || (len == 1 && b64[0] == '=');
		util_wipe(dec, sizeof(dec));
		if (empty)	/* "=" or an empty line: valid base64, of nothing (RFC 4954 4) */
			smtp_reply(s, 501, "5.5.2", "AUTH LOGIN: empty %s",
				   s->auth_step == AUTH_LOGIN_USER ? "user name" : "password");
		else
			smtp_reply(s, 501, "5.5.2", "Bad base64 in AUTH LOGIN");
		smtp_set_state(s, s->helo[0] ? ST_HELO : ST_CONNECTED);
		smtp_auth_failed(s);
		return;
	}
	dec[n] = '\0';
	if (s->auth_step == AUTH_LOGIN_USER) {
		xsnprintf(s->auth_user, sizeof(s->auth_user), "%s", dec);
		s->auth_step = AUTH_LOGIN_PASS;
		smtp_reply(s, 334, NULL, "UGFzc3dvcmQ6");
	} else {
		auth_check(s, s->auth_user, dec);
		util_wipe(s->auth_user, sizeof(s->auth_user));
	}
	util_wipe(dec, sizeof(dec));
}

static void
cmd_auth(struct smtp_sess *s, const struct smtp_cmdline *cl)
{
	if (!(s->flags & F_EHLO)) {
		smtp_reply(s, 503, "5.5.1", "Send EHLO first");
		smtp_error_count(s);
		return;
	}
	if (s->flags & F_AUTHED) {
		smtp_reply(s, 503, "5.5.1", "Already authenticated");
		smtp_error_count(s);
		return;
	}
	if (!auth_allowed(s)) {
		smtp_reply(s, 538, "5.7.11", "Encryption required: use STARTTLS first");
		smtp_error_count(s);
		return;
	}
	if (cl->auth_mech_len == 5 && strncasecmp(cl->auth_mech, "PLAIN", 5) == 0) {
		s->auth_step = AUTH_PLAIN;
		if (cl->auth_ir) {
			if (cl->auth_ir_len == 1 && cl->auth_ir[0] == '=')
				auth_plain_response(s, "", 0);
			else
				auth_plain_response(s, cl->auth_ir, cl->auth_ir_len);
			return;
		}
		smtp_set_state(s, ST_AUTH);
		smtp_reply(s, 334, NULL, "%s", "");
		return;
	}
	if (cl->auth_mech_len == 5 && strncasecmp(cl->auth_mech, "LOGIN", 5) == 0) {
		s->auth_step = AUTH_LOGIN_USER;
		smtp_set_state(s, ST_AUTH);
		if (cl->auth_ir) {
			auth_login_step(s, cl->auth_ir, cl->auth_ir_len);
			return;
		}
		smtp_reply(s, 334, NULL, "VXNlcm5hbWU6");
		return;
	}
	smtp_reply(s, 504, "5.5.4", "Unrecognized authentication type");
	smtp_error_count(s);
}

static void
smtp_auth_line(struct smtp_sess *s, const char *line, size_t len)
{
	if (len == 1 && line[0] == '*') {
		util_wipe(s->auth_user, sizeof(s->auth_user));
		smtp_set_state(s, s->helo[0] ? ST_HELO : ST_CONNECTED);
		smtp_reply(s, 501, "5.0.0", "Authentication cancelled");
		/* The AUTH is refused (RFC 4954 4): counted, or AUTH and "*" in
		 * turn would hold the session for ever; as a failed login, so
		 * never closed before the third. */
		smtp_auth_failed(s);
		return;
	}
	if (s->auth_step == AUTH_PLAIN)
		auth_plain_response(s, line, len);
	else
		auth_login_step(s, line, len);
}

/*
 * The free space a MAIL needs: the queue's reserve, plus the SIZE declared
 * (already checked against smtp.max_message_size). A reserve of 0 turns
 * the check off, SIZE or not.
 */
static int64_t
smtp_space_for(const struct config *cfg, const struct smtp_mail *m)
{
	int64_t need = config_min_free(cfg);

	if (need <= 0 || !m->has_size)
		return need;
	if (m->size > (uint64_t)(INT64_MAX - need))
		return INT64_MAX;
	return need + (int64_t)m->size;
}

/*
 * After the reply to a MAIL refused for what it asks (its size, the sender
 * on submission, the queue's space) or that could not be checked: no
 * transaction opens, but the attempt is a message refused and has its
 * access line. Who tried to send as whom is what an admin greps for. (The
 * client's own refusals, size and sender, count in smtp.max_errors too.)
 */
static void
smtp_mail_refused(struct smtp_sess *s, int code, const char *reason)
{
	smtp_access_log(s, NULL, code, reason);
	memset(&s->mail, 0, sizeof(s->mail));
}

static void
cmd_mail(struct smtp_sess *s, const struct smtp_cmdline *cl)
{
	const struct config *cfg = s->srv->cfg;
	struct smtp_error e;

	if (s->state == ST_MAIL || s->state == ST_RCPT) {
		smtp_reply(s, 503, "5.5.1", "Nested MAIL command");
		smtp_error_count(s);
		return;
	}
	/*
	 * Before any refusal too: a stray BDAT chunk (no MAIL, 503) leaves its
	 * content, size and flags here, which a refused MAIL's access line
	 * would report as its own.
	 */
	smtp_txn_reset(s, 0);
	if ((s->flags & F_SUBMISSION) && !(s->flags & F_AUTHED)) {
		smtp_reply(s, 530, "5.7.0", "Authentication required");
		/*
		 * A message refused like a sender not owned: the sender a
		 * client without AUTH tried on submission (a bot, a lost
		 * password) is what an admin greps for. Unparsed: no line,
		 * as for a MAIL refused for its syntax.
		 */
		s->txn_ms = util_mono_ms();
		if (smtp_mail_parse(cl->arg, cl->arg_len, smtp_ext(s), &s->mail, &e) == 0)
			smtp_mail_refused(s, 530, "authentication required");
		else
			memset(&s->mail, 0, sizeof(s->mail));
		smtp_error_count(s);
		return;
	}
	s->txn_ms = util_mono_ms();	/* for duration=: a clock step is no duration */
	if (smtp_account_gone(s)) {
		smtp_reply(s, 421, "4.7.0",
			   "%s Account deleted or its password changed, closing connection",
			   cfg->hostname);
		smtp_close(s);
		return;
	}
	if (smtp_mail_parse(cl->arg, cl->arg_len, smtp_ext(s), &s->mail, &e) < 0) {
		memset(&s->mail, 0, sizeof(s->mail));
		smtp_reply_err(s, &e);
		smtp_error_count(s);
		return;
	}
	if (s->mail.has_size && s->mail.size > (uint64_t)cfg->smtp_max_message_size) {
		smtp_reply(s, 552, "5.3.4", "Message size exceeds fixed limit of %lld bytes",
			   (long long)cfg->smtp_max_message_size);
		smtp_mail_refused(s, 552, "declared SIZE over the limit");
		smtp_error_count(s);
		return;
	}
	/*
	 * Before the client sends its data, not after: below the free space
	 * kept for the queue no new mail is taken (RFC 3463 X.3.1; as
	 * Postfix's queue_minfree), and the client tries again later. A
	 * declared SIZE must fit on top of the reserve (RFC 1870 6.1: 452 for
	 * a temporary lack of storage), or the whole message would come in
	 * only to fail at the spool write.
	 */
	int64_t need = smtp_space_for(cfg, &s->mail);
	if (queue_space_low(s->srv->queue, need)) {
		log_msg(LL_WARN, s->c->id, "MAIL refused: less than %lld bytes free for the queue",
			(long long)need);
		/* No error of the client's, but no mail moved: MAILs sent on and
		 * on would each write two log lines, with the disk short. */
		if (smtp_junk(s))
			return;
		smtp_reply(s, 452, "4.3.1", "Insufficient system storage");
		smtp_mail_refused(s, 452, "insufficient system storage");
		return;
	}
	if (s->flags & F_AUTHED && !s->mail.from.is_null) {
		int own = accounts_owns(s->srv->accounts, s->user, s->mail.from.addr);
		if (own < 0) {
			/* The server's fault, not the sender's: as at RCPT. */
			log_msg(LL_ERROR, s->c->id, "sender check failed: accounts lookup error");
			if (smtp_junk(s))
				return;
			smtp_reply(s, 451, "4.3.0", "Temporary lookup failure");
			smtp_mail_refused(s, 451, "accounts lookup failed");
			return;
		}
		if (own != 1) {
			smtp_reply(s, 553, "5.7.1", "Sender address <%s> not owned by user %s",
				   s->mail.from.addr, s->user);
			smtp_mail_refused(s, 553, "sender not owned by the user");
			smtp_error_count(s);
			return;
		}
	}
	smtp_set_state(s, ST_MAIL);
	smtp_reply(s, 250, "2.1.0", "Sender OK");
}

struct resolve_acc {
	struct rcpt *r;
};

static void
rcpt_resolve_cb(const char *addr, int local, void *arg)
{
	struct rcpt *r = arg;
	r->final = xrealloc(r->final, (r->nfinal + 1) * sizeof(char *));
	r->local = xrealloc(r->local, (r->nfinal + 1) * sizeof(int));
	r->final[r->nfinal] = xstrdup(addr);
	r->local[r->nfinal] = local;
	r->nfinal++;
}

static int64_t
user_quota(struct smtp_sess *s, const char *addr)
{
	struct account_user u = {0};
	int64_t q = s->srv->cfg->user_quota;
	if (accounts_user_get(s->srv->accounts, addr, &u) == 1) {
		if (u.quota >= 0)
			q = u.quota;
		accounts_user_free(&u);
	}
	return q;
}

static int
smtp_domain_local(struct smtp_sess *s, const char *dom)
{
	struct buf nd = BUF_INIT(0), ne = BUF_INIT(0);
	int local = accounts_normalise_domain(dom, &nd, &ne) == 0 &&
		    accounts_domain_exists(s->srv->accounts, nd.data) == 1;
	buf_free(&nd);
	buf_free(&ne);
	return local;
}

/*
 * The address <postmaster> (no domain) stands for: postmaster@ our host
 * name if that is a local domain, else @ its parent (mx.example.org ->
 * example.org), else @ the local domain added first (RFC 5321 4.5.1: it
 * MUST reach someone), else @ the host name, which resolves to nobody.
 */
static void
smtp_postmaster(struct smtp_sess *s, char *addr, size_t n)
{
	const char *host = s->srv->cfg->hostname;
	const char *parent = strchr(host, '.');
	char first[256];

	if (!smtp_domain_local(s, host)) {
		if (parent && strchr(parent + 1, '.') && smtp_domain_local(s, parent + 1))
			host = parent + 1;
		else if (accounts_domain_first(s->srv->accounts, first, sizeof(first)) == 1)
			host = first;
	}
	xsnprintf(addr, n, "postmaster@%s", host);
}

/*
 * Whether dom, the address literal of a parsed path ("[192.0.2.1]" or
 * "[IPv6:...]", the tag as smtp_proto writes it), is one of this host's
 * addresses: the one the client reached us on, or an interface's. RFC 1123
 * 5.2.17: an SMTP server MUST recognise a domain literal for any of its own
 * IP addresses, in any spelling smtp_proto takes (leading zeros too).
 * 0.0.0.0 and :: are nobody's. Compared as util_addr_text()
 * writes them (an IPv4-mapped address as IPv4).
 */
static int
smtp_literal_is_ours(struct smtp_sess *s, const char *dom)
{
	struct sockaddr_storage ss;
	struct sockaddr_in *s4 = (struct sockaddr_in *)(void *)&ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)(void *)&ss;
	char want[INET6_ADDRSTRLEN], have[INET6_ADDRSTRLEN];
	unsigned char a[16];
	int family;
	socklen_t sl = sizeof(ss);
	struct ifaddrs *ifs, *i;
	int ours = 0;

	if (smtp_addr_literal(dom, strlen(dom), &family, a) < 0)
		return 0;
	memset(&ss, 0, sizeof(ss));
	ss.ss_family = (sa_family_t)family;
	if (family == AF_INET6)
		memcpy(&s6->sin6_addr, a, 16);
	else
		memcpy(&s4->sin_addr, a, 4);
	util_addr_text((struct sockaddr *)&ss, want, sizeof(want));
	if (strcmp(want, "0.0.0.0") == 0 || strcmp(want, "::") == 0)
		return 0;
	if (getsockname(bufferevent_getfd(s->c->bev), (struct sockaddr *)&ss, &sl) == 0) {
		util_addr_text((struct sockaddr *)&ss, have, sizeof(have));
		if (strcmp(have, want) == 0)
			return 1;
	}
	if (getifaddrs(&ifs) < 0)
		return 0;
	for (i = ifs; i != NULL && !ours; i = i->ifa_next) {
		if (i->ifa_addr == NULL)
			continue;
		util_addr_text(i->ifa_addr, have, sizeof(have));
		ours = strcmp(have, want) == 0;
	}
	freeifaddrs(ifs);
	return ours;
}

static void cmd_rcpt_lookup(struct smtp_sess *s, const struct smtp_cmdline *cl);

/*
 * A stolen password sends spam: an authenticated user may have so many
 * recipients a window (smtp/ratelimit), counting the ones this transaction
 * has accepted but not yet paid for. Past that, RCPT is refused 450, a
 * temporary refusal as Postfix's rate limits give: a real user's mail goes
 * out later. 1 if refused. MX mail to local users, unauthenticated, is not
 * counted: its volume is the senders' business.
 */
static int
smtp_rate_limited(struct smtp_sess *s, const char *addr)
{
	struct ratelimit *rl = s->srv->ratelimit;
	int64_t now = util_mono_ms();
	char esc[300];

	if (!(s->flags & F_AUTHED) || s->user == NULL ||
	    ratelimit_allow(rl, s->user, s->nrcpts - s->rate_held, now))
		return 0;
	if (ratelimit_refused(rl, s->user, now))
		log_msg(LL_WARN, s->c->id, "rate limit reached user=%s client=[%s] limit=%u/%llds",
			log_esc_also(esc, sizeof(esc), s->user, " "), s->c->peer_ip,
			ratelimit_limit(rl), (long long)(ratelimit_window_ms(rl) / 1000));
	else
		log_msg(LL_DEBUG, s->c->id, "rate limit refusal user=%s",
			log_esc_also(esc, sizeof(esc), s->user, " "));
	/* No error of the client's, but no mail moved: RCPTs sent on and on
	 * after it are junk (smtp_junk); 1 all the same if that closed us. */
	if (smtp_junk(s))
		return 1;
	smtp_reply(s, 450, "4.7.1",
		   "<%s>: Sending rate limit reached for this account, try again later", addr);
	return 1;
}

/* The message is queued: it pays for its recipients (smtp_rate_limited). */
static void
smtp_rate_take(struct smtp_sess *s)
{
	if ((s->flags & F_AUTHED) && s->user != NULL)
		ratelimit_take(s->srv->ratelimit, s->user, s->nrcpts, util_mono_ms());
}

/*
 * Whether the account name may go into the message as it is: it is ASCII,
 * or the message is SMTPUTF8 mail (RFC 6532), where UTF-8 may stand.
 */
static int
user_fits_message(const struct smtp_sess *s)
{
	return s->mail.smtputf8 || !util_has_8bit(s->user, strlen(s->user));
}

/*
 * The length of our trace header were the message to come now, for rcpt as
 * its only recipient (with more, it names none: shorter); on submission
 * with the Message-ID: and Date: smtp_message_done() adds to a message
 * that has none, and the Sender: to one whose From: names several
 * mailboxes (submission_sender()); and the empty line it puts in where a
 * line that is no field ends the header, or, on MX too, before content
 * that starts with white space. RCPT cannot know yet which the message needs.
 */
static size_t
smtp_trace_len(struct smtp_sess *s, const char *rcpt)
{
	struct buf b = BUF_INIT(0);
	char date[64], rnd[33];

	smtp_trace_date(date, sizeof(date));
	/* An id as long as spool_new_id()'s, which is not taken for this. */
	smtp_trace_header(s, &b, date, "0000000000000000", rcpt);
	if (s->flags & F_AUTHED) {
		memset(rnd, 'x', sizeof(rnd) - 1);	/* as util_random_hex(rnd, 16) */
		rnd[sizeof(rnd) - 1] = '\0';
		buf_printf(&b, "Message-ID: <%s@%s>\r\nDate: %s\r\n", rnd, s->srv->cfg->hostname,
			   date);
		if (user_fits_message(s))
			buf_printf(&b, "Sender: %s\r\n", s->user);
	}
	buf_puts(&b, "\r\n");
	size_t len = b.len;
	buf_free(&b);
	return len;
}

/*
 * The quota check of an RCPT reads the recipient's store: on a worker, with
 * the session waiting (ST_WAIT), like a password check.
 */
struct quota_job {
	struct smtp_sess *s;
	struct rcpt r;
	enum smtp_state back;	/* the state to return to */
	char *data_dir;
	char **accounts;
	int64_t *quotas;
	uint64_t *added;	/* per account: the octets of headers we add */
	size_t n;
	uint64_t size;		/* SIZE=, 0 if unknown */
	size_t nover;		/* accounts over quota */
	size_t ntoobig;		/* of them, those whose whole quota is less than size */
};

static void
rcpt_accept(struct smtp_sess *s, struct rcpt *r)
{
	s->rcpts = xrealloc(s->rcpts, (s->nrcpts + 1) * sizeof(*s->rcpts));
	s->rcpts[s->nrcpts++] = *r;
	/* Held until the transaction ends, so that the account's other
	 * sessions cannot be allowed the same tokens meanwhile. */
	if ((s->flags & F_AUTHED) && s->user != NULL &&
	    ratelimit_hold(s->srv->ratelimit, s->user, util_mono_ms()))
		s->rate_held++;
	s->nfinal += r->nfinal;
	memset(r, 0, sizeof(*r));
	smtp_set_state(s, ST_RCPT);
	smtp_reply(s, 250, "2.1.5", "Recipient OK");
}

static void
quota_work(void *arg)
{
	struct quota_job *j = arg;

	/* Counted until one has room: that is enough for quota_done(). */
	j->nover = j->ntoobig = 0;
	for (size_t i = 0; i < j->n && j->nover == i; i++) {
		int r = local_over_quota(j->data_dir, j->accounts[i], j->quotas[i], j->size,
					 j->added[i]);
		j->nover += r >= 1;
		j->ntoobig += r == 2;
	}
}

static void
quota_done(void *arg)
{
	struct quota_job *j = arg;
	struct smtp_sess *s = j->s;

	if (s->flags & F_DEAD) {
		/* Gone during the check: the transaction ends unfinished.
		 * (Not smtp_set_state(): its debug line needs the connection.) */
		s->state = j->back;
		smtp_txn_reset(s, 1);
		smtp_sess_free(s);
	} else {
		smtp_hold(s);
		smtp_set_state(s, j->back);
		/*
		 * Refused only when no mailbox behind the address can take it: an
		 * alias with one member over quota is accepted, and that member's
		 * copy is deferred at delivery like any other. A refusal is no
		 * error of the client's, but the RCPT moved no mail: a junk
		 * command, or RCPTs for a full mailbox sent for ever would hold
		 * the connection (and a worker) with no end.
		 */
		int refused = j->n == j->r.nfinal && j->nover == j->n;
		if (refused && smtp_junk(s)) {
			/* Closed: 421 instead of the answer. */
		} else if (refused && j->ntoobig == j->n) {
			/* SIZE= says it can never fit: permanent (RFC 1870 6.2). */
			smtp_reply(s, 552, "5.2.3", "<%s>: Message too big for this mailbox",
				   j->r.orig);
		} else if (refused) {
			smtp_reply(s, 452, "4.2.2", "<%s>: Mailbox full", j->r.orig);
		} else {
			rcpt_accept(s, &j->r);
		}
		if (s->state != ST_QUIT)
			smtp_resume(s);
		smtp_release(s);
	}
	rcpt_free(&j->r);
	for (size_t i = 0; i < j->n; i++)
		free(j->accounts[i]);
	free(j->accounts);
	free(j->quotas);
	free(j->added);
	free(j->data_dir);
	free(j);
}

/* The domain, alias, user and quota lookups of one RCPT share one read transaction. */
static void
cmd_rcpt(struct smtp_sess *s, const struct smtp_cmdline *cl)
{
	accounts_read_begin(s->srv->accounts);
	cmd_rcpt_lookup(s, cl);
	accounts_read_end(s->srv->accounts);
}

static void
cmd_rcpt_lookup(struct smtp_sess *s, const struct smtp_cmdline *cl)
{
	const struct config *cfg = s->srv->cfg;
	struct smtp_rcpt rp;
	struct smtp_error e;

	if (s->state != ST_MAIL && s->state != ST_RCPT) {
		smtp_reply(s, 503, "5.5.1", "Need MAIL before RCPT");
		smtp_error_count(s);
		return;
	}
	/*
	 * RFC 3030 2: the recipients are all in before the first chunk. One
	 * added after it would get a message whose first part was taken in
	 * (and its size checked) for a recipient list without it.
	 */
	if (s->flags & F_BDAT_USED) {
		smtp_reply(s, 503, "5.5.1", "RCPT not allowed after BDAT");
		smtp_error_count(s);
		return;
	}
	if (smtp_rcpt_parse(cl->arg, cl->arg_len, smtp_ext(s), s->mail.smtputf8, &rp, &e) < 0) {
		smtp_reply_err(s, &e);
		smtp_error_count(s);
		return;
	}
	s->rcpt_to = xstrdup(rp.to.addr);
	if (s->nrcpts >= (size_t)cfg->smtp_max_recipients) {
		/*
		 * A sender with a long list goes on in the next transaction.
		 * One that goes on past SMTP_RCPT_OVERSHOOT here is no such
		 * sender: each further RCPT counts as an error, or it could
		 * send them for ever (Postfix's smtpd_recipient_overshoot_limit).
		 */
		if (++s->overshoot > SMTP_RCPT_OVERSHOOT && smtp_error_count(s))
			return;
		smtp_reply(s, 452, "4.5.3", "Too many recipients");
		return;
	}
	char addr[SMTP_PATH_MAX + 300];
	/*
	 * <postmaster>, or postmaster@ our host name (the name in our banner
	 * and our notices' From:, where a peer's admin writes when our mail
	 * troubles them) or @ a literal of ours: the same mailbox.
	 */
	int postmaster = rp.to.local_len == rp.to.len ||
			 (rp.to.local_len == 10 && strncasecmp(rp.to.addr, "postmaster", 10) == 0 &&
			  (strcasecmp(rp.to.addr + 11, cfg->hostname) == 0 ||
			   smtp_literal_is_ours(s, rp.to.addr + 11)));
	if (postmaster)
		smtp_postmaster(s, addr, sizeof(addr));
	else
		xsnprintf(addr, sizeof(addr), "%s", rp.to.addr);
	if (smtp_rate_limited(s, addr))
		return;
	/* <postmaster> is never relayed: it is ours or unknown (RFC 5321 4.5.1). */
	int local_dom = postmaster || smtp_domain_local(s, strrchr(addr, '@') + 1);

	struct rcpt r = {0};
	r.orig = xstrdup(addr);
	r.notify = rp.notify;
	if (rp.has_orcpt)
		r.orcpt = xasprintf("%s;%s", rp.orcpt_type, rp.orcpt);
	if (local_dom) {
		int n = accounts_resolve(s->srv->accounts, addr, rcpt_resolve_cb, &r);
		if (n < 0) {
			/* No error of the client's (the database, or an alias past
			 * the expansion limits), but no mail moved, and each costs an
			 * expansion: RCPTs sent on and on after it are junk. */
			rcpt_free(&r);
			if (smtp_junk(s))
				return;
			smtp_reply(s, 451, "4.3.0", "Temporary lookup failure");
			return;
		}
		if (n == 0) {
			rcpt_free(&r);
			smtp_reply(s, 550, "5.1.1", "<%s>: Recipient address rejected: no such user here", addr);
			smtp_error_count(s);
			return;
		}
		struct quota_job *j = NULL;
		size_t trace_len = 0;
		for (size_t i = 0; i < r.nfinal; i++) {
			int64_t quota = r.local[i] ? user_quota(s, r.final[i]) : 0;
			if (quota <= 0)
				continue;
			if (j == NULL) {
				j = xcalloc(1, sizeof(*j));
				j->accounts = xcalloc(r.nfinal, sizeof(*j->accounts));
				j->quotas = xcalloc(r.nfinal, sizeof(*j->quotas));
				j->added = xcalloc(r.nfinal, sizeof(*j->added));
				trace_len = smtp_trace_len(s, addr);
			}
			/*
			 * The mailbox gets the message with our Received: and the
			 * delivery's lines on top: SIZE= counts neither.
			 */
			j->added[j->n] = trace_len + local_added_len(s->mail.from.addr, r.final[i]);
			j->accounts[j->n] = xstrdup(r.final[i]);
			j->quotas[j->n++] = quota;
		}
		if (j != NULL) {
			j->s = s;
			j->r = r;
			j->back = s->state;
			j->data_dir = xstrdup(cfg->data_dir);
			j->size = s->mail.has_size ? s->mail.size : 0;
			smtp_wait(s);
			worker_submit(s->srv->pool, quota_work, quota_done, j);
			return;
		}
	} else if (s->flags & F_AUTHED) {
		rcpt_resolve_cb(addr, 0, &r);
	} else {
		rcpt_free(&r);
		smtp_reply(s, 554, "5.7.1", "<%s>: Relay access denied", addr);
		smtp_error_count(s);
		return;
	}
	rcpt_accept(s, &r);
}

static void
smtp_data_begin(struct smtp_sess *s, enum smtp_data_mode mode)
{
	buf_free(&s->data);
	smtp_data_count(s);
	s->flags &= ~F_DATA_NOMEM;
	buf_init(&s->data, (size_t)s->srv->cfg->smtp_max_message_size);
	smtp_data_reader_init(&s->reader, &s->data, mode);
}

static void
cmd_data(struct smtp_sess *s, const struct smtp_cmdline *cl)
{
	if (s->flags & F_BDAT_USED) {
		smtp_reply(s, 503, "5.5.1", "DATA not allowed after BDAT");
		smtp_error_count(s);
		return;
	}
	if (s->state != ST_RCPT) {
		if (s->state == ST_MAIL)
			smtp_reply_code(s, SMTP_ERR_SEQ_NO_RCPTS);
		else
			smtp_reply(s, 503, "5.5.1", "Need RCPT before DATA");
		smtp_error_count(s);
		return;
	}
	smtp_data_begin(s, SMTP_DATA_MODE_DATA);
	smtp_set_state(s, ST_DATA);
	smtp_timeouts(s);
	smtp_reply(s, 354, NULL, "End data with <CR><LF>.<CR><LF>");
}

static void
cmd_bdat(struct smtp_sess *s, const struct smtp_cmdline *cl)
{
	/* The chunk is always read, even when refused, to stay in sync. */
	if (!(s->flags & F_BDAT_USED)) {
		smtp_data_begin(s, SMTP_DATA_MODE_BDAT);
		if (s->state != ST_RCPT)
			s->flags |= F_BDAT_FAIL;
		/* No transaction at all (one after BDAT LAST too): a bad sequence. */
		if (s->state == ST_CONNECTED || s->state == ST_HELO)
			s->flags |= F_BDAT_SEQ;
		/* After HELO no extension is in effect (RFC 5321 4.1.1.1), CHUNKING
		 * included (RFC 3030 2), as SIZE= or AUTH are refused then. */
		if (!(s->flags & F_EHLO))
			s->flags |= F_BDAT_FAIL | F_BDAT_HELO;
		s->flags |= F_BDAT_USED;
	}
	s->bdat_left = cl->bdat_size;
	s->bdat_size = cl->bdat_size;
	s->bdat_octets += cl->bdat_size;
	s->bdat_last = cl->bdat_last;
	s->bdat_return = s->state;
	smtp_set_state(s, ST_BDAT);
	smtp_timeouts(s);
}

static void
cmd_rset(struct smtp_sess *s, const struct smtp_cmdline *cl)
{
	smtp_txn_reset(s, 1);
	smtp_set_state(s, s->helo[0] ? ST_HELO : ST_CONNECTED);
	smtp_reply(s, 250, "2.0.0", "OK");
}

static void
cmd_noop(struct smtp_sess *s, const struct smtp_cmdline *cl)
{
	smtp_reply(s, 250, "2.0.0", "OK");
}

static void
cmd_help(struct smtp_sess *s, const struct smtp_cmdline *cl)
{
	smtp_reply(s, 214, "2.0.0", "See RFC 5321 (https://www.rfc-editor.org/rfc/rfc5321)");
}

static void
cmd_vrfy(struct smtp_sess *s, const struct smtp_cmdline *cl)
{
	/* Never reveal whether an account exists. */
	/* (RFC 3463: X.5.2 is a syntax error; this is no error.) */
	smtp_reply(s, 252, "2.0.0", "Cannot VRFY user, but will accept message and attempt delivery");
}

static void
cmd_expn(struct smtp_sess *s, const struct smtp_cmdline *cl)
{
	smtp_reply(s, 502, "5.5.1", "EXPN not available");
}

static void
cmd_quit(struct smtp_sess *s, const struct smtp_cmdline *cl)
{
	smtp_txn_reset(s, 1);
	smtp_set_state(s, s->helo[0] ? ST_HELO : ST_CONNECTED);	/* (logged: once) */
	smtp_reply(s, 221, "2.0.0", "Bye");
	s->c->no_linger = 1;	/* the client ended it: nothing follows to linger for */
	smtp_close(s);
}

#define ANY (SB(ST_CONNECTED) | SB(ST_HELO) | SB(ST_MAIL) | SB(ST_RCPT))
#define GREETED (SB(ST_HELO) | SB(ST_MAIL) | SB(ST_RCPT))

static const struct smtp_cmd_entry smtp_cmds[] = {
	{SMTP_CMD_EHLO, cmd_ehlo, ANY, 0},
	{SMTP_CMD_HELO, cmd_ehlo, ANY, 0},
	{SMTP_CMD_STARTTLS, cmd_starttls, ANY, 0},
	{SMTP_CMD_AUTH, cmd_auth, SB(ST_HELO), 0},
	{SMTP_CMD_MAIL, cmd_mail, GREETED, 0},
	{SMTP_CMD_RCPT, cmd_rcpt, GREETED, 0},
	{SMTP_CMD_DATA, cmd_data, GREETED, 0},
	{SMTP_CMD_BDAT, cmd_bdat, GREETED, 0},
	{SMTP_CMD_RSET, cmd_rset, ANY, 1},
	{SMTP_CMD_NOOP, cmd_noop, ANY, 1},
	{SMTP_CMD_HELP, cmd_help, ANY, 1},
	{SMTP_CMD_VRFY, cmd_vrfy, ANY, 1},
	{SMTP_CMD_EXPN, cmd_expn, ANY, 1},
	{SMTP_CMD_QUIT, cmd_quit, ANY, 0},
};

/*
 * A BDAT line we cannot parse: a chunk follows whose size it does not say for
 * sure, so its octets cannot be told from commands, and running them as such
 * would let a message's content act as SMTP. Nothing after it can be trusted:
 * close (RFC 5321 3.8 allows it with 421).
 */
static void
bdat_unframed(struct smtp_sess *s, const char *why)
{
	smtp_reply(s, 421, "4.5.4", "%s %s; closing: the chunk that follows cannot be framed",
		   s->srv->cfg->hostname, why);
	smtp_close(s);
}

static void
smtp_command(struct smtp_sess *s, const char *line, size_t len)
{
	struct smtp_cmdline cl;
	struct smtp_error e;

	if (log_enabled(LL_DEBUG)) {
		struct buf l = BUF_INIT(0);
		/* AUTH arguments are secrets. */
		size_t shown = (len > 4 && strncasecmp(line, "AUTH", 4) == 0) ? 10 : len;
		log_escape(&l, line, shown < len ? shown : len, 200);
		log_msg(LL_DEBUG, s->c->id, "< %s", buf_str(&l));
		buf_free(&l);
	}
	int parsed = smtp_cmd_parse(line, len, &cl, &e);
	s->cmd = cl.cmd;
	/* Set by cmd_rcpt_lookup() once the address parses: a RCPT refused
	 * before (a syntax error) must not name the previous one. */
	free(s->rcpt_to);
	s->rcpt_to = NULL;
	if (parsed < 0) {
		if (cl.cmd == SMTP_CMD_BDAT) {
			bdat_unframed(s, e.text);
			return;
		}
		smtp_reply_err(s, &e);
		smtp_error_count(s);
		return;
	}
	for (size_t i = 0; i < ARRAY_LEN(smtp_cmds); i++) {
		const struct smtp_cmd_entry *ce = &smtp_cmds[i];
		if (ce->cmd != cl.cmd)
			continue;
		if (!(ce->states & SB(s->state))) {
			if (cl.cmd == SMTP_CMD_BDAT) {
				/* Still swallow the chunk, then refuse it. */
				cmd_bdat(s, &cl);
				s->flags |= F_BDAT_FAIL;
				return;
			}
			/* Before EHLO; or AUTH in a transaction (RFC 4954 4). */
			if (s->state == ST_CONNECTED)
				smtp_reply(s, 503, "5.5.1", "Bad sequence of commands: send EHLO first");
			else
				smtp_reply(s, 503, "5.5.1", "Bad sequence of commands: %s not permitted "
					   "during a mail transaction", smtp_cmd_name(cl.cmd));
			smtp_error_count(s);
			return;
		}
		/*
		 * HELO/EHLO is needed once, and again after STARTTLS (RFC 3207
		 * 4.2); repeated, it moves no mail either, and a client cycling
		 * EHLO (or MAIL and EHLO, which resets) would otherwise hold its
		 * connection for ever. Postfix counts both as junk commands.
		 */
		int junk = ce->junk || ((cl.cmd == SMTP_CMD_EHLO || cl.cmd == SMTP_CMD_HELO) &&
					s->helo[0] != '\0');
		if (junk && smtp_junk(s))
			return;
		ce->fn(s, &cl);
		return;
	}
	smtp_reply(s, 502, "5.5.1", "Command not implemented");
}

/* ---- message completion ---- */

/*
 * Whether the field at f[0..len) is named name (any case). The obsolete
 * syntax (RFC 5322 4.5.1) allows white space before the colon, and readers
 * honour it, so it counts too.
 */
static int
field_named(const char *f, size_t len, const char *name)
{
	size_t nl = strlen(name), k = nl;

	if (len <= nl || strncasecmp(f, name, nl) != 0)
		return 0;
	while (k < len && (f[k] == ' ' || f[k] == '\t'))
		k++;
	return k < len && f[k] == ':';
}

/* How many header fields named name msg[0..hdr_len) has. */
static int
count_header(const char *msg, size_t hdr_len, const char *name)
{
	int n = 0;

	for (size_t i = 0; i < hdr_len; i++)
		if ((i == 0 || msg[i - 1] == '\n') && field_named(msg + i, hdr_len - i, name))
			n++;
	return n;
}

/*
 * Append the fields of the header h[0..len) (whole fields) to out, but
 * Bcc: and Resent-Bcc:. Their addresses are for the envelope: a copy that
 * carried them would show every recipient who was meant to stay hidden
 * (RFC 5322 3.6.3). Submission takes them out, as Postfix's cleanup does
 * by default (message_drop_headers); the MUA keeps them in its own copy.
 */
static void
append_header_without_bcc(struct buf *out, const char *h, size_t len)
{
	struct mime_field f;
	size_t pos = 0;

	while (mime_header_next(h, len, &pos, &f) == 1) {
		int bcc = f.has_colon &&
			  ((f.name_len == 3 && strncasecmp(f.name, "Bcc", 3) == 0) ||
			   (f.name_len == 10 && strncasecmp(f.name, "Resent-Bcc", 10) == 0));
		if (!bcc)
			buf_append(out, h + f.off, f.len);
	}
	buf_append(out, h + pos, len - pos);
}

/*
 * After a failed spool write, less free space than this means the disk is
 * full: the reserve, or room for the largest message if that is more (a
 * message that did not fit leaves what was free, which may pass a small
 * reserve).
 */
static int64_t
smtp_space_needed(const struct config *cfg)
{
	int64_t need = config_min_free(cfg);
	return need > cfg->smtp_max_message_size ? need : cfg->smtp_max_message_size;
}

/* The message is on disk (id) or could not be written: answer it. */
static void
smtp_queued(struct smtp_sess *s, const char *id, const char *error)
{
	smtp_set_state(s, ST_HELO);
	smtp_timeouts(s);	/* waiting for a command again, not for data */
	if (id) {
		smtp_rate_take(s);
		s->junk = 0;	/* a client that sends mail may idle between messages */
		smtp_reply(s, 250, "2.0.0", "Ok: queued as %s", id);
		smtp_flush(s);	/* the client waits for it; the log line can wait */
		smtp_access_log(s, id, 250, NULL);
	} else if (queue_space_low(s->srv->queue, smtp_space_needed(s->srv->cfg))) {
		/* The disk filled up (ENOSPC) under the message: say so, as at MAIL. */
		smtp_reply(s, 452, "4.3.1", "Insufficient system storage");
		smtp_access_log(s, NULL, 452, error);
	} else {
		smtp_reply(s, 451, "4.3.0", "Error: queue file write error");
		smtp_access_log(s, NULL, 451, error);
	}
	smtp_txn_reset(s, 0);
}

static void
queue_done(void *arg, const char *id, const char *error)
{
	struct smtp_sess *s = arg;

	if (s->flags & F_DEAD) {
		/* The client left before the answer: the message is queued all the
		 * same (RFC 5321 6.1 allows the duplicate this may cause). */
		if (id) {
			smtp_rate_take(s);
			smtp_access_log(s, id, 250, "client gone before the reply");
		} else {
			smtp_access_log(s, NULL, 451, error);
		}
		smtp_sess_free(s);
		return;
	}
	smtp_hold(s);
	smtp_queued(s, id, error);
	smtp_resume(s);
	smtp_release(s);
}

static void
smtp_refuse_message(struct smtp_sess *s, int code, const char *enh, const char *text)
{
	smtp_reply(s, code, enh, "%s", text);
	/* A BDAT with no MAIL opened no transaction: no line, as for a DATA
	 * then (its sender would read <>, a bounce, and its duration run
	 * from an older MAIL). */
	if (!(s->flags & F_BDAT_SEQ))
		smtp_access_log(s, NULL, code, text);
	smtp_txn_reset(s, 0);
	smtp_set_state(s, s->helo[0] ? ST_HELO : ST_CONNECTED);
	smtp_timeouts(s);
}

/*
 * 1 if the name of every field of the header h[0..len) is as RFC 5322 2.2
 * has it: printable ASCII (ftext; RFC 6532 leaves names so) and white
 * space, on the field's first line. Readers disagree on any other name,
 * so that the fields the submission checks find and those a reader shows
 * may differ: "From\xc2\xa0:" or "\x0bFrom:" is no From: to from_owned(),
 * but readers that trim Unicode white space from a name (JavaScript's
 * trim(), Go's strings.TrimSpace) show it as one; a name folded before
 * its colon ("Message-ID" CRLF " :") is a field to readers that unfold
 * first (RFC 5322 2.2.3), the start of the body to those that read lines,
 * and a Message-ID: or Date: added after it would be a second one to the
 * first. A line with no colon names no field for anyone and does not
 * count; nor does content with no header at all (whose first line is no
 * field, white space first included), which smtp_message_done() stores
 * whole as the body, after an empty line.
 */
static int
header_names_plain(const char *h, size_t len)
{
	int in_name = 1, odd = 0;
	size_t own;

	if (smtp_data_header_end(h, len, &own) == 0 && own == 0)
		return 1;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)h[i];
		if (c == '\n') {
			if (i + 1 == len)
				break;
			if (h[i + 1] == ' ' || h[i + 1] == '\t') {
				/* The name goes on over a fold. */
				odd |= in_name;
			} else {
				in_name = 1;
				odd = 0;
			}
		} else if (c == ':' && in_name) {
			if (odd)
				return 0;
			in_name = 0;
		} else if (c >= 0x7f || (c < 0x20 && c != '\t' && c != '\r')) {
			odd |= in_name;
		}
	}
	return 1;
}

/*
 * On submission every address of the author and sender fields must be one
 * the user owns: From:, and Sender: (RFC 5322 3.6.2: who sent it, which
 * readers show as "on behalf of"), and their Resent- forms (3.6.6: who
 * resent it). 1 owned; 0 not, or -1 a field does not parse, with the
 * refusal's text in bad; -2 an accounts lookup failed (temporary). *nfrom
 * gets the number of From: mailboxes (submission_sender()).
 */
static int
from_owned(struct smtp_sess *s, struct buf *bad, size_t *nfrom)
{
	static const char *const fields[] = {"From", "Sender", "Resent-From", "Resent-Sender"};
	struct mime_addr_list al;
	int rc = 1;

	/*
	 * A NUL has no place in a header (RFC 5322 2.2), and readers that drop
	 * it would see a field found under no name here ("Fr\0om:").
	 */
	size_t hdr_len = s->reader.header_done ? s->reader.header_len : s->data.len;
	if (hdr_len > 0 && memchr(s->data.data, '\0', hdr_len) != NULL) {
		buf_printf(bad, "NUL in the header; the sender cannot be checked");
		return -1;
	}
	if (!header_names_plain(s->data.data, hdr_len)) {
		buf_printf(bad, "a header field name with octets other than printable ASCII, "
				"or folded before its colon; the sender cannot be checked");
		return -1;
	}
	for (size_t f = 0; f < sizeof(fields) / sizeof(fields[0]) && rc == 1; f++) {
		/* None at all is accepted: a missing From: is the MUA's problem
		 * (RFC 6409 8.1 lets an MSA add one; we leave the message as is). */
		int r = mime_addr_field(s->data.data, s->data.len, fields[f], &al);
		if (r == -2) {
			buf_printf(bad, "%s: a comment or quoted string that mail readers may "
				   "take apart differently (escapes, nesting, < > @); the "
				   "sender cannot be checked", fields[f]);
			return -1;
		}
		if (r < 0) {
			buf_printf(bad, "%s: header does not parse; the sender cannot be checked",
				   fields[f]);
			return -1;
		}
		if (f == 0)
			*nfrom = al.n;
		for (size_t i = 0; i < al.n && rc == 1; i++) {
			int own = accounts_owns(s->srv->accounts, s->user, al.v[i]);
			if (own < 0) {
				buf_puts(bad, "Temporary lookup failure");
				rc = -2;
			} else if (own == 0) {
				buf_printf(bad, "%s: address %s not owned by user %s", fields[f],
					   al.v[i], s->user);
				rc = 0;
			}
		}
		mime_addr_list_free(&al);
	}
	return rc;
}

/*
 * RFC 5322 3.6.2: a From: with more than one mailbox (nfrom, as
 * from_owned() counted them) MUST come with a Sender:, the one mailbox that
 * sent it. On submission that is the user (who owns every From: address):
 * added when the MUA left it out (RFC 6409 8.1 lets an MSA), unless the
 * address has octets the message may not carry (a UTF-8 account in a
 * message without SMTPUTF8).
 */
static void
submission_sender(const struct smtp_sess *s, size_t nfrom, struct buf *added)
{
	struct buf v = BUF_INIT(0);

	if (nfrom < 2 || !user_fits_message(s))
		return;
	/* The header as from_owned() reads it, so what it checked is what counts. */
	if (mime_addr_header(s->data.data, s->data.len, "Sender", &v) == 0)
		buf_printf(added, "Sender: %s\r\n", s->user);
	buf_free(&v);
}

/* The NOTIFY of a recipient asked for twice: what either asked (RFC 3461 4.1). */
static unsigned
notify_merge(unsigned a, unsigned b)
{
	if (a == b || a == NOTIFY_NEVER)
		return b;
	if (b == NOTIFY_NEVER)
		return a;
	/* 0 is "not given": FAILURE and DELAY. */
	return (a ? a : NOTIFY_FAILURE | NOTIFY_DELAY) | (b ? b : NOTIFY_FAILURE | NOTIFY_DELAY);
}

/*
 * Why a BDAT message is refused whatever its chunks hold, in this order: no
 * MAIL (F_BDAT_SEQ), no EHLO (F_BDAT_HELO), no memory for it
 * (F_DATA_NOMEM) unless it is too big as well, too big (its size, not "no
 * recipients"), or a chunk refused before (F_BDAT_FAIL: no valid
 * recipient). 1 with e set, or 0. (A DATA message meets the memory and size
 * tests here too.) Too big wins over the memory: the size's 552 is for good,
 * and after the memory's 452 its sender would try it again for days.
 */
static int
bdat_refused(const struct smtp_sess *s, struct smtp_error *e)
{
	if (s->flags & F_BDAT_SEQ)
		smtp_error_set(e, SMTP_ERR_SEQ_NO_MAIL);
	else if (s->flags & F_BDAT_HELO)
		smtp_error_set(e, SMTP_ERR_SEQ_NO_EHLO);
	else if ((s->flags & F_DATA_NOMEM) &&
		 s->reader.size <= (uint64_t)s->srv->cfg->smtp_max_message_size)
		smtp_error_set(e, SMTP_ERR_DATA_NO_MEMORY);
	else if (s->reader.errors & SMTP_DATA_ERR_TOO_BIG)
		smtp_data_error(&s->reader, e);
	else if (s->flags & F_BDAT_FAIL)
		smtp_error_set(e, SMTP_ERR_SEQ_NO_RCPTS);
	else
		return 0;
	return 1;
}

/* The date of our trace header and of a Date: we add. */
static void
smtp_trace_date(char *date, size_t size)
{
	time_t now = time(NULL);
	struct tm tm;

	gmtime_r(&now, &tm);
	strftime(date, size, "%a, %d %b %Y %H:%M:%S +0000", &tm);
}

/*
 * Our Received: trace header for the message of the transaction under way,
 * appended to out: qid is the queue id it is to be stored under, for_rcpt
 * names its recipient when it has only one.
 */
static void
smtp_trace_header(struct smtp_sess *s, struct buf *out, const char *date, const char *qid,
		  const char *for_rcpt)
{
	const struct config *cfg = s->srv->cfg;
	int submission = (s->flags & F_AUTHED) != 0;
	char tlsd[128];
	const char *proto_word;
	int utf8 = s->mail.smtputf8;

	if (!(s->flags & F_EHLO))
		proto_word = "SMTP";
	else if (s->c->tls && submission)
		proto_word = utf8 ? "UTF8SMTPSA" : "ESMTPSA";
	else if (s->c->tls)
		proto_word = utf8 ? "UTF8SMTPS" : "ESMTPS";
	else if (submission)
		proto_word = utf8 ? "UTF8SMTPA" : "ESMTPA";
	else
		proto_word = utf8 ? "UTF8SMTP" : "ESMTP";
	/*
	 * RFC 5321 4.4: the name from EHLO as it came (checked then: a domain
	 * or an address literal), a U-label as its A-label; an IPv6 peer as an
	 * IPv6 address literal. Our own field must not be what makes a message
	 * whose header is otherwise ASCII need SMTPUTF8 on its way on (RFC
	 * 6531 3.4; 3.7.3 allows U-labels, it does not ask for them): names and
	 * addresses go in their ASCII form, or not at all.
	 */
	struct buf helo = BUF_INIT(0), herr = BUF_INIT(0), ip = BUF_INIT(0);
	buf_printf(&ip, "[%s%s]", strchr(s->c->peer_ip, ':') ? "IPv6:" : "", s->c->peer_ip);
	if (!util_has_8bit(s->helo, strlen(s->helo)))
		buf_puts(&helo, s->helo);
	else if (accounts_normalise_domain(s->helo, &helo, &herr) < 0)
		buf_puts(&helo, buf_str(&ip));
	buf_printf(out, "Received: from %s (%s %s)\r\n\tby %s (surat) with %s", buf_str(&helo),
		   smtp_client_name(s), buf_str(&ip), cfg->hostname, proto_word);
	buf_free(&ip);
	buf_free(&helo);
	buf_free(&herr);
	if (s->c->tls)
		buf_printf(out, "\r\n\t(%s)", tls_describe(s->c->ssl, tlsd, sizeof(tlsd)));
	if (submission && cfg->submission_received_user) {
		/*
		 * Off by default, as Postfix's smtpd_sasl_authenticated_header:
		 * every recipient would read the account behind the sender (the
		 * person behind a role alias), and the login name a password
		 * guesser wants; ESMTPSA says it was authenticated, and the id
		 * finds the access line that names the account.
		 *
		 * A UTF-8 account name goes only into SMTPUTF8 mail (RFC 6532).
		 * XXX There it still makes an otherwise ASCII message need
		 * SMTPUTF8 on its way on; its sender is most often the same
		 * UTF-8 address, which needs it anyway.
		 */
		if (!user_fits_message(s))
			buf_puts(out, "\r\n\t(authenticated)");
		else
			buf_printf(out, "\r\n\t(authenticated as %s)", s->user);
	}
	/*
	 * The queue id, as Postfix writes it: what the reply, the access and
	 * delivery lines and `surat queue` name the message by, so that one
	 * Received: a recipient's admin sends back finds it (two messages of a
	 * session would share a session id).
	 */
	buf_printf(out, " id %s", qid);
	/* The FOR clause is optional (RFC 5321 4.4): none for a UTF-8 local part. */
	struct buf a = BUF_INIT(0);
	int r = for_rcpt ? accounts_addr_ascii(for_rcpt, &a) : -1;
	if (r >= 0)
		buf_printf(out, "\r\n\tfor <%s>", r ? a.data : for_rcpt);
	buf_free(&a);
	buf_printf(out, ";\r\n\t%s\r\n", date);
}

static void
smtp_message_done(struct smtp_sess *s)
{
	const struct config *cfg = s->srv->cfg;
	struct smtp_error e;

	if (bdat_refused(s, &e) || smtp_data_error(&s->reader, &e) < 0) {
		smtp_refuse_message(s, e.reply, e.enhanced, e.text);
		/* Short of memory (other sessions hold it) is no error of this
		 * client's, as the disk's 452 is not: the session goes on. */
		if (e.code != SMTP_ERR_DATA_NO_MEMORY)
			smtp_error_count(s);
		return;
	}
	size_t hdr_len = s->reader.header_done ? s->reader.header_len : s->data.len;
	const char *hdr = s->data.data ? s->data.data : "";
	if (count_header(hdr, hdr_len, "Received") >= cfg->smtp_max_hops) {
		smtp_refuse_message(s, 554, "5.4.6", "Too many hops: mail loop suspected");
		/* An error, as Postfix counts it: a peer caught in a loop would
		 * otherwise send the looping mail on one connection for ever. */
		smtp_error_count(s);
		return;
	}
	int submission = (s->flags & F_AUTHED) != 0;
	size_t nfrom = 0;
	if (smtp_account_gone(s)) {
		smtp_refuse_message(s, 421, "4.7.0",
				    "Account deleted or its password changed, closing connection");
		smtp_close(s);
		return;
	}
	if (submission) {
		struct buf bad = BUF_INIT(0);
		int owned = from_owned(s, &bad, &nfrom);
		if (owned == -2) {
			log_msg(LL_ERROR, s->c->id,
				"from header check failed: accounts lookup error");
			smtp_refuse_message(s, 451, "4.3.0", buf_str(&bad));
			buf_free(&bad);
			return;
		}
		if (owned != 1) {
			char esc[300];
			log_msg(LL_WARN, s->c->id, "from header refused user=%s",
				log_esc_also(esc, sizeof(esc), s->user, " "));
			smtp_refuse_message(s, 553, "5.7.1", buf_str(&bad));
			buf_free(&bad);
			return;
		}
		buf_free(&bad);
	}

	/* Our trace header on top of the message, with the id it is queued under. */
	struct spool_msg m;
	memset(&m, 0, sizeof(m));
	spool_new_id(m.id);
	struct buf content = BUF_INIT(0);
	char date[64];
	smtp_trace_date(date, sizeof(date));
	smtp_trace_header(s, &content, date, m.id, s->nrcpts == 1 ? s->rcpts[0].orig : NULL);
	/*
	 * Submission: the fields the MUA left out go at the end of its header,
	 * after any trace fields it has (RFC 5322 3.6 keeps a trace block
	 * together at the top), as Postfix's cleanup does; at the top, under
	 * our Received:, when the message has no header.
	 */
	struct buf added = BUF_INIT(0);
	size_t at = 0, own = 0;
	if (submission) {
		at = smtp_data_header_end(hdr, s->data.len, &own);
		/* Fields of the message's own header count, not its text's. */
		if (count_header(hdr, own, "Message-ID") == 0) {
			char rnd[33];
			util_random_hex(rnd, 16);
			free(s->msgid);
			s->msgid = xasprintf("<%s@%s>", rnd, cfg->hostname);
			buf_printf(&added, "Message-ID: %s\r\n", s->msgid);
		}
		if (count_header(hdr, own, "Date") == 0)
			buf_printf(&added, "Date: %s\r\n", date);
		submission_sender(s, nfrom, &added);
	}
	if (submission)
		append_header_without_bcc(&content, hdr, at);
	else
		buf_append(&content, hdr, at);
	buf_append(&content, added.data, added.len);
	buf_free(&added);
	if (submission) {
		/* A last field with no CRLF (BDAT) is after at. */
		append_header_without_bcc(&content, hdr + at, own - at);
		/*
		 * A line that is no field ends the message's header: the empty
		 * line RFC 5322 3.5 wants before the body goes in there, as
		 * Postfix's cleanup puts it, so that every reader finds the
		 * header where the fields above were counted (one that reads on
		 * to the first empty line would see a Message-ID: further down
		 * as a second one).
		 */
		if (own < s->data.len &&
		    !(hdr[own] == '\r' && own + 1 < s->data.len && hdr[own + 1] == '\n'))
			buf_puts(&content, "\r\n");
	} else {
		/* Content whose first line starts with white space would continue
		 * the field above it: it has no header, so it becomes the body. */
		if (s->data.len > 0 && (hdr[0] == ' ' || hdr[0] == '\t'))
			buf_puts(&content, "\r\n");
		own = at;
	}
	buf_append(&content, hdr + own, s->data.len - own);

	m.mail_from = s->mail.from.addr;
	m.envid = s->mail.has_envid ? s->mail.envid : NULL;
	m.ret_hdrs = s->mail.ret == SMTP_RET_HDRS;
	m.ret_full = s->mail.ret == SMTP_RET_FULL;
	m.body_8bit = s->mail.body == SMTP_BODY_8BITMIME || s->reader.has_8bit;
	m.smtputf8 = s->mail.smtputf8;
	m.created = util_now_ms() / 1000;
	m.client_ip = s->c->peer_ip;
	m.helo = s->helo;
	m.auth_user = s->user;
	m.session = s->c->id;
	m.rcpts = xcalloc(s->nfinal + s->nrcpts, sizeof(*m.rcpts));
	for (size_t i = 0; i < s->nrcpts; i++) {
		struct rcpt *r = &s->rcpts[i];
		/*
		 * RFC 3461 6.2.7.3: an alias of several members asked for SUCCESS
		 * is reported "expanded" itself; its members go on without
		 * SUCCESS (NEVER if nothing else was asked).
		 */
		unsigned notify = r->notify;
		if (r->nfinal > 1 && (r->notify & NOTIFY_SUCCESS)) {
			notify &= ~NOTIFY_SUCCESS;
			if (notify == 0)
				notify = NOTIFY_NEVER;
			int dup = 0;
			for (size_t x = 0; x < m.nrcpts; x++)
				if (strcmp(m.rcpts[x].addr, r->orig) == 0)
					dup = 1;
			if (!dup) {
				struct spool_rcpt *sr = &m.rcpts[m.nrcpts++];
				sr->addr = r->orig;
				sr->orig = r->orig;
				sr->orcpt = r->orcpt;
				sr->notify = NOTIFY_SUCCESS;
				sr->local = SPOOL_EXPANDED;
			}
		}
		for (size_t k = 0; k < r->nfinal; k++) {
			/* An alias may list the same user twice via two RCPTs: once,
			 * with what either asked to be told about. */
			struct spool_rcpt *sr = NULL;
			for (size_t x = 0; x < m.nrcpts && sr == NULL; x++)
				if (strcmp(m.rcpts[x].addr, r->final[k]) == 0)
					sr = &m.rcpts[x];
			if (sr != NULL) {
				sr->notify = notify_merge(sr->notify, notify);
				continue;
			}
			sr = &m.rcpts[m.nrcpts++];
			sr->addr = r->final[k];
			sr->orig = r->orig;
			sr->orcpt = r->orcpt;
			sr->notify = notify;
			sr->local = r->local[k];
		}
	}
	/* The access log reads Subject/Message-ID from s->data: keep it. */
	char id[QUEUE_ID_LEN + 1];
	struct buf err = BUF_INIT(0);
	int written = 0;
	if (smtp_nsessions == 1)
		written = queue_submit_lone(s->srv->queue, &m, &content, queue_done, s, id, &err);
	else
		queue_submit(s->srv->queue, &m, &content, queue_done, s);
	if (written) {
		/* Written already: the caller goes on with pipelined input. */
		smtp_queued(s, err.len == 0 ? id : NULL, buf_str(&err));
	} else {
		/* queue_done() comes from the loop, after we return. */
		smtp_wait(s);
	}
	buf_free(&err);
	free(m.rcpts);
	buf_free(&content);
}

/* ---- input ---- */

static void
smtp_feed(struct smtp_sess *s, struct evbuffer *in)
{
	while (evbuffer_get_length(in) > 0) {
		struct evbuffer_iovec v;
		if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
			return;
		size_t n = v.iov_len;
		if (s->state == ST_BDAT && n > s->bdat_left)
			n = (size_t)s->bdat_left;
		size_t used = n;
		int done = smtp_data_feed(&s->reader, v.iov_base, n, &used);
		evbuffer_drain(in, used);
		smtp_data_count(s);
		if (s->state == ST_DATA) {
			if (done) {
				smtp_message_done(s);
				return;
			}
			continue;
		}
		s->bdat_left -= used;
		if (s->bdat_left == 0)
			return;
	}
}

static void
smtp_bdat_chunk_end(struct smtp_sess *s)
{
	struct smtp_error e;

	if (s->bdat_last) {
		smtp_data_finish(&s->reader);
		smtp_message_done(s);
		return;
	}
	/* Back where it came from: a refused chunk must not skip EHLO or MAIL. */
	smtp_set_state(s, s->bdat_return);
	smtp_timeouts(s);
	/*
	 * Every later chunk of a failed message gets the reason it failed for.
	 * Such a chunk moves no mail: past smtp.max_junk_commands of them it is
	 * an error too, or a client could stream an endless refused message,
	 * each chunk with a deadline of its own.
	 */
	if (bdat_refused(s, &e)) {
		if (smtp_junk(s))
			return;
		smtp_reply_err(s, &e);
		s->flags |= F_BDAT_FAIL;
		return;
	}
	/*
	 * An empty chunk that is not the last (RFC 3030 2 allows it) moves no
	 * mail either: endless "BDAT 0" would hold the connection for ever.
	 * (Postfix refuses it outright: "551 5.7.1 Null BDAT request".)
	 */
	if (s->bdat_size == 0 && smtp_junk(s))
		return;
	/* (Not the reader's size: a CR at a chunk's end waits there for the next.) */
	smtp_reply(s, 250, "2.0.0", "%llu octets received", (unsigned long long)s->bdat_octets);
}

/* The longest line the command now arriving may be, CRLF included. */
static size_t
cmd_line_limit(const struct smtp_sess *s, struct evbuffer *in)
{
	char verb[4];

	if (s->state == ST_AUTH)
		return AUTH_LINE_MAX;
	if (evbuffer_copyout(in, verb, sizeof(verb)) != (ev_ssize_t)sizeof(verb))
		return CMD_LINE_MAX;
	if (strncasecmp(verb, "AUTH", 4) == 0)
		return AUTH_LINE_MAX;	/* with an initial response */
	if (strncasecmp(verb, "MAIL", 4) == 0 || strncasecmp(verb, "RCPT", 4) == 0)
		return CMD_PARAM_LINE_MAX;
	return CMD_LINE_MAX;
}

/*
 * 1 if a command line starts at the head of in (not an AUTH response, nor the
 * rest of a line being discarded) and it is a BDAT (smtp_line_is_bdat()).
 */
static int
in_is_bdat(const struct smtp_sess *s, struct evbuffer *in)
{
	char verb[5];
	ev_ssize_t n;

	if (s->state == ST_AUTH || (s->flags & F_DISCARD))
		return 0;
	n = evbuffer_copyout(in, verb, sizeof(verb));
	return n > 0 && smtp_line_is_bdat(verb, (size_t)n);
}

/* 1 if the avail octets in end with a CR (a line's CRLF half there), else 0. */
static size_t
ends_in_cr(struct evbuffer *in, size_t avail)
{
	struct evbuffer_ptr last;
	char c = 0;

	if (avail == 0 || evbuffer_ptr_set(in, &last, avail - 1, EVBUFFER_PTR_SET) < 0 ||
	    evbuffer_copyout_from(in, &last, &c, 1) != 1)
		return 0;
	return c == '\r';
}

static void
smtp_process(struct smtp_sess *s)
{
	struct evbuffer *in = bufferevent_get_input(s->c->bev);

	while (s->state != ST_WAIT && s->state != ST_QUIT && !(s->flags & F_CLOSE_NOW)) {
		/* Replies kept for one send(2) count too: what the kernel does
		 * not take of them goes to the bufferevent, looked at next. */
		if (s->out.len > SMTP_OUT_MAX)
			smtp_flush(s);
		if (evbuffer_get_length(bufferevent_get_output(s->c->bev)) > SMTP_OUT_MAX) {
			s->flags |= F_OUT_WAIT;	/* smtp_write_cb() goes on */
			return;
		}
		if (s->srv->stopping && (s->state == ST_CONNECTED || s->state == ST_HELO ||
					 s->state == ST_AUTH)) {
			/* Stopping: a session back between transactions (or in
			 * an AUTH exchange) ends, also right after the reply to
			 * a queued message. */
			smtp_reply(s, 421, "4.3.2", "%s Service shutting down", s->srv->cfg->hostname);
			smtp_close(s);
			return;
		}
		if (s->state == ST_DATA) {
			size_t had = evbuffer_get_length(in);
			smtp_feed(s, in);
			s->phase_bytes += had - evbuffer_get_length(in);
			if (s->state == ST_DATA)
				return;
			continue;
		}
		if (s->state == ST_BDAT) {
			if (s->bdat_left > 0) {
				size_t had = evbuffer_get_length(in);
				smtp_feed(s, in);
				s->phase_bytes += had - evbuffer_get_length(in);
			}
			if (s->bdat_left > 0)
				return;
			smtp_bdat_chunk_end(s);
			continue;
		}
		size_t limit = cmd_line_limit(s, in);
		size_t eol_len = 0;
		/* Only CRLF ends a line (RFC 5321 2.3.8): a bare LF is a character in it. */
		struct evbuffer_ptr p = evbuffer_search_eol(in, NULL, &eol_len,
							    EVBUFFER_EOL_CRLF_STRICT);
		size_t avail = evbuffer_get_length(in);
		if (p.pos < 0) {
			/* Still to come: the CRLF, or only its LF after a CR. */
			size_t cr = ends_in_cr(in, avail);
			if (avail + 2 - cr > limit) {
				if (in_is_bdat(s, in)) {
					bdat_unframed(s, "Line too long");
					return;
				}
				/*
				 * Overlong line: drop what we have and the rest up to its
				 * end; a CR last stays, should its LF come next.
				 */
				evbuffer_drain(in, avail - cr);
				/* (The rest will not say what the line was.) */
				if (!(s->flags & F_DISCARD) && limit == AUTH_LINE_MAX)
					s->flags |= F_DISCARD_AUTH;
				s->flags |= F_DISCARD;
			}
			return;
		}
		size_t len = (size_t)p.pos;
		if (s->flags & F_DISCARD || len + eol_len > limit) {
			if (in_is_bdat(s, in)) {
				bdat_unframed(s, "Line too long");
				return;
			}
			int auth = s->flags & F_DISCARD ? (s->flags & F_DISCARD_AUTH) != 0
							: limit == AUTH_LINE_MAX;
			evbuffer_drain(in, len + eol_len);
			s->flags &= ~(F_DISCARD | F_DISCARD_AUTH);
			s->cmd = SMTP_CMD_UNKNOWN; /* whatever it was, not run */
			s->phase_ms = util_mono_ms();
			if (auth) {
				/* RFC 4954 4: an AUTH line or a response, 500 5.5.6. */
				if (s->state == ST_AUTH)
					smtp_set_state(s, s->helo[0] ? ST_HELO : ST_CONNECTED);
				smtp_reply_code(s, SMTP_ERR_SASL_TOOLONG);
				if (smtp_auth_failed(s))
					return;
				continue;
			}
			smtp_reply(s, 500, "5.5.2", "Line too long");
			if (smtp_error_count(s))
				return;
			continue;
		}
		char line[AUTH_LINE_MAX + 1];
		evbuffer_remove(in, line, len);
		evbuffer_drain(in, eol_len);
		line[len] = '\0';
		s->phase_ms = util_mono_ms();	/* the next line's deadline runs from here */
		if (s->state == ST_AUTH)
			smtp_auth_line(s, line, len);
		else
			smtp_command(s, line, len);
		util_wipe(line, len);
	}
}

/* An idle timeout (deadline NULL) or a request's deadline passed: 421, close. */
static void
smtp_timed_out(struct smtp_sess *s, const char *deadline)
{
	smtp_reply(s, 421, "4.4.2", "%s Timeout, closing connection", s->srv->cfg->hostname);
	if (deadline)
		log_msg(LL_INFO, s->c->id, "%s deadline passed in state %s: %llu octets in %.1f s",
			deadline, state_names[s->state], (unsigned long long)s->phase_bytes,
			(double)(util_mono_ms() - s->phase_ms) / 1000);
	else
		log_msg(LL_INFO, s->c->id, "timeout in state %s", state_names[s->state]);
	s->last_refusal = 421;
	smtp_close(s);
}

static void
smtp_read_cb(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;
	struct smtp_sess *s = c->proto;

	/* Said before our greeting: kept until it is out (smtp_named). */
	if (s->flags & F_NAMING)
		return;
	/*
	 * Called from inside a reply: a TLS bufferevent whose read waited for a
	 * write reads when we write, and runs this at once. The caller up the
	 * stack is in the middle of a command (or closing), and a command run
	 * from here would see the session half-changed: again from the loop,
	 * once the stack is unwound.
	 */
	if (s->hold > 0) {
		bufferevent_trigger(bev, EV_READ, BEV_TRIG_DEFER_CALLBACKS);
		return;
	}
	/* Message content: take all the socket has. */
	if (s->state == ST_DATA || s->state == ST_BDAT)
		conn_read_more(c, SMTP_IN_MAX);
	smtp_hold(s);
	smtp_process(s);
	const char *what;
	if (!(s->flags & (F_OUT_WAIT | F_CLOSE_NOW)) && smtp_past_deadline(s, &what))
		smtp_timed_out(s, what);
	else if ((s->flags & F_EOF) && !(s->flags & (F_OUT_WAIT | F_CLOSE_NOW)) &&
		 s->state != ST_WAIT && s->state != ST_QUIT) {
		/* All the client sent before its end is answered: what is left is
		 * no whole line. The replies go out before we close. */
		s->c->no_linger = 1;
		smtp_close(s);
	}
	smtp_release(s);
}

/* The output is sent: go on with input left for it (F_OUT_WAIT). */
static void
smtp_write_cb(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;
	struct smtp_sess *s = c->proto;

	if (!(s->flags & F_OUT_WAIT))
		return;
	if (s->hold > 0) {
		/* Inside a reply (see smtp_read_cb): again from the loop. */
		bufferevent_trigger(bev, EV_WRITE, BEV_TRIG_DEFER_CALLBACKS);
		return;
	}
	s->flags &= ~F_OUT_WAIT;
	smtp_read_cb(bev, arg);
}

static void
smtp_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct conn *c = arg;
	struct smtp_sess *s = c->proto;

	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
		if (what & BEV_EVENT_ERROR)
			log_msg(LL_DEBUG, c->id, "connection error");
		if (what == (BEV_EVENT_EOF | BEV_EVENT_READING) && (s->flags & F_NAMING))
			/*
			 * All said before our greeting, then its half of the
			 * connection closed (a script's `nc -N`): what it sent is
			 * answered once the name is known, and smtp_named() reads
			 * again, which finds the end again.
			 */
			return;
		if (s->hold > 0) {
			/*
			 * A write under a caller failed: that caller closes, and
			 * smtp_process() reads no more. The state stays: an open
			 * transaction is logged by smtp_on_close() then.
			 */
			s->flags |= F_CLOSE_NOW;
			return;
		}
		/*
		 * The client shut down its sending side after pipelining (as
		 * `nc -N` does, or a client that sent QUIT last): the commands
		 * still held back by our unsent replies are answered, and the
		 * replies sent, before we close; a close now would throw both
		 * away, a 250 for a message queued among them too.
		 */
		struct bufferevent *under = bufferevent_get_underlying(bev);
		if (what == (BEV_EVENT_EOF | BEV_EVENT_READING) && s->state != ST_WAIT) {
			if (s->flags & F_OUT_WAIT) {
				s->flags |= F_EOF; /* smtp_read_cb() closes once they are */
				return;
			}
			if (s->out.len > 0 ||
			    evbuffer_get_length(bufferevent_get_output(bev)) > 0 ||
			    (under != NULL &&
			     evbuffer_get_length(bufferevent_get_output(under)) > 0)) {
				smtp_hold(s);
				c->no_linger = 1;
				smtp_close(s);
				smtp_release(s);
				return;
			}
		}
		conn_close(c);
		return;
	}
	if (what & BEV_EVENT_TIMEOUT) {
		/*
		 * Not a client gone quiet: a write timeout with nothing to write
		 * (libevent's TLS filter restarts its write timer after every
		 * write, output or not, so it ran out in any DATA longer than
		 * smtp.data_timeout, where we write nothing). Undo what the
		 * timeout disabled; the timers as they should be.
		 */
		if ((what & BEV_EVENT_WRITING) &&
		    evbuffer_get_length(bufferevent_get_output(bev)) == 0) {
			bufferevent_enable(bev, EV_WRITE);
			smtp_idle_timeouts(s);
			return;
		}
		/* Never while a job has the session (smtp_wait() stops the
		 * timers): closing would free it under the job. */
		if (s->state == ST_WAIT)
			return;	/* smtp_resume() enables again */
		smtp_hold(s);
		smtp_timed_out(s, NULL);
		smtp_release(s);
	}
}

static void
smtp_on_shutdown(struct conn *c)
{
	struct smtp_sess *s = c->proto;
	/* Idle sessions (an AUTH exchange too) end now; busy ones finish
	 * their transaction first. */
	if (s->state == ST_CONNECTED || s->state == ST_HELO || s->state == ST_AUTH) {
		/* No greeting after this, whatever the DNS answers meanwhile. */
		smtp_name_stop(s);
		smtp_hold(s);
		smtp_reply(s, 421, "4.3.2", "%s Service shutting down", s->srv->cfg->hostname);
		smtp_close(s);
		smtp_release(s);
	}
}

/*
 * The client's name, as Postfix's smtpd has it: the name its address has in
 * the reverse DNS, if that name has the address back (forward-confirmed), so
 * that it means something in our Received: and the access log; "unknown"
 * otherwise. Looked up before our greeting, as Postfix and OpenSMTPD do, for
 * at most SMTP_NAME_WAIT_MS: a client whose DNS is broken is greeted then.
 */
static void
smtp_name_stop(struct smtp_sess *s)
{
	dns_cancel(&s->name_q);
	if (s->name_timer != NULL)
		event_free(s->name_timer);
	s->name_timer = NULL;
	s->flags &= ~F_NAMING;
}

static void
smtp_named(struct smtp_sess *s, const char *name)
{
	smtp_name_stop(s);
	if (name != NULL)
		s->client_name = xstrdup(name);
	smtp_hold(s);
	smtp_reply(s, 220, NULL, "%s ESMTP surat", s->srv->cfg->hostname);
	/* Anything sent before the greeting is read now. */
	s->phase_ms = util_mono_ms();
	smtp_process(s);
	/* Reading again, should an end of input have stopped it meanwhile
	 * (smtp_event_cb); a job (ST_WAIT) does so when it is done. */
	if (s->state != ST_WAIT && s->state != ST_QUIT && !(s->flags & F_CLOSE_NOW))
		bufferevent_enable(s->c->bev, s->c->tls ? EV_READ | EV_WRITE : EV_READ);
	smtp_release(s);
}

static void
smtp_name_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_sess *s = arg;

	(void)fd;
	(void)what;
	log_msg(LL_DEBUG, s->c->id, "client name lookup timed out");
	smtp_named(s, NULL);
}

/* A host name we put in a header: letters, digits, '-' and '_' in labels. */
static int
smtp_name_ok(const char *name)
{
	size_t len = strlen(name), label = 0;

	if (len == 0 || len > 253)
		return 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)name[i];
		if (ch == '.') {
			if (label == 0)
				return 0;
			label = 0;
		} else if (isalnum(ch) || ch == '-' || ch == '_') {
			if (++label > 63)
				return 0;
		} else {
			return 0;
		}
	}
	return label > 0;
}

static void
smtp_name_fwd_cb(const struct dns_result *res, void *arg)
{
	struct smtp_sess *s = arg;

	s->name_q = NULL;
	for (size_t i = 0; i < res->n; i++)
		if (strcmp(res->addr[i].text, s->c->peer_ip) == 0) {
			smtp_named(s, res->name);
			return;
		}
	log_msg(LL_DEBUG, s->c->id, "client name %s does not resolve to %s (%s)", res->name,
		s->c->peer_ip, dns_status_str(res->status));
	smtp_named(s, NULL);
}

static void
smtp_name_ptr_cb(const struct dns_result *res, void *arg)
{
	struct smtp_sess *s = arg;
	char name[DNS_NAME_BUFSZ];

	s->name_q = NULL;
	/* The first name that can be one: several PTRs are rare, and Postfix
	 * too confirms one. */
	for (size_t i = 0; i < res->n && s->name_q == NULL; i++) {
		xsnprintf(name, sizeof(name), "%s", res->ptr[i].name);
		size_t len = strlen(name);
		if (len > 0 && name[len - 1] == '.')
			name[len - 1] = '\0';
		if (!smtp_name_ok(name))
			continue;
		s->name_q = strchr(s->c->peer_ip, ':')
				? dns_query_aaaa(s->srv->dns, name, smtp_name_fwd_cb, s)
				: dns_query_a(s->srv->dns, name, smtp_name_fwd_cb, s);
	}
	if (s->name_q == NULL)
		smtp_named(s, NULL);
}

static void
smtp_start(struct conn *c)
{
	struct smtp_sess *s = xcalloc(1, sizeof(*s));

	smtp_nsessions++;
	s->c = c;
	s->srv = c->srv;
	s->state = ST_CONNECTED;
	if (c->kind == LISTEN_SUBMISSION || c->kind == LISTEN_SUBMISSIONS)
		s->flags |= F_SUBMISSION;
	c->proto = s;
	c->on_close = smtp_on_close;
	c->on_shutdown = smtp_on_shutdown;
	smtp_set_callbacks(s);
	if (s->srv->cfg->smtp_reverse_lookup && s->srv->dns != NULL)
		s->name_q = dns_query_ptr(s->srv->dns, c->peer_ip, smtp_name_ptr_cb, s);
	if (s->name_q != NULL) {
		s->flags |= F_NAMING;
		s->name_timer = evtimer_new(c->srv->base, smtp_name_timeout, s);
		struct timeval tv = {SMTP_NAME_WAIT_MS / 1000, SMTP_NAME_WAIT_MS % 1000 * 1000};
		evtimer_add(s->name_timer, &tv);
		return;
	}
	smtp_hold(s);
	smtp_reply(s, 220, NULL, "%s ESMTP surat", s->srv->cfg->hostname);
	smtp_release(s);
}

const struct proto_ops smtp_server_ops = {
	.name = "smtp",
	.start = smtp_start,
	.busy_reply = "421 4.7.0 Too many connections, try again later\r\n",
};
