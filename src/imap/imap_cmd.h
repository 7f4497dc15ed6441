/*
 * imap_cmd — what the IMAP session (imap_session.c) and its command files
 * (imap_cmd_*.c) share and nobody else sees: the session structure, the
 * reply helpers, worker jobs, the selected mailbox's view and the mailbox
 * name conversions. Only src/imap/imap_session.c and imap_cmd_*.c include
 * this header.
 *
 * A command handler gets the session and the arguments after the command
 * name (for UID commands, after the subcommand). It either answers at once
 * with imap_done(), or starts a worker job (imap_job_run) whose completion
 * calls imap_done(). While a job runs the session reads no input and the
 * loop does not touch the store handle or the selected view: the job may
 * use both.
 *
 * SECURITY: every argument is peer input; handlers validate shapes with the
 * imap_arg accessors and answer BAD with a reason. Text from the store or
 * the peer that goes into a reply is sanitised (imap_text) or quoted
 * (imap_quote).
 */
#ifndef SURAT_IMAP_CMD_H
#define SURAT_IMAP_CMD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>

#include "core/buf.h"
#include "core/nameidx.h"
#include "core/server.h"
#include "core/util.h"
#include "imap/imap_parser.h"
#include "imap/imap_seqset.h"
#include "store/store.h"

enum imap_state {
	IS_NOTAUTH,  /* greeting sent, no login yet */
	IS_AUTH,     /* logged in, no mailbox selected */
	IS_SELECTED, /* a mailbox is selected */
	IS_LOGOUT,   /* BYE sent: finish and close */
};

/* imap_sess.flags */
#define SF_WAIT 0x0001u	     /* a worker job runs for us: no input, no store use */
#define SF_DEAD 0x0002u	     /* connection gone while a job ran */
#define SF_CLOSE_NOW 0x0004u /* peer gone: close once no caller holds us */
#define SF_IDLE 0x0008u	     /* in IDLE: the next raw line must be DONE */
#define SF_SASL 0x0010u	     /* reading an AUTHENTICATE response line */
#define SF_DRAIN 0x0020u     /* output too large: wait for it to drain */
#define SF_CONT 0x0040u	     /* a command continues once output drained */
#define SF_FINISHING 0x0080u /* conn_finish() called: closing once the output is sent */
#define SF_IDLE_LATE 0x0100u /* in IDLE, a report waits for the output to drain */
#define SF_LOGIN_LATE 0x0200u /* login_timeout passed during a password check */

/* imap_sess.enabled (RFC 5161 ENABLE and the CONDSTORE-enabling commands) */
#define EN_REV2 0x01u
#define EN_CONDSTORE 0x02u
#define EN_QRESYNC 0x04u
#define EN_UTF8 0x08u

/* imap_cmd.flags */
#define CF_SEQS 0x01u	/* FETCH/STORE/SEARCH-like: never send EXPUNGE with it (RFC 9051 §7.5.1) */
#define CF_UID 0x02u	/* may follow UID */
#define CF_NOPOLL 0x08u /* do not look for mailbox changes after it */

/* Per-message marks in the selected view. */
#define MK_GHOST 0x01u /* expunged in the store; EXPUNGE not yet sent */
#define MK_FLAGS 0x02u /* flags changed; FETCH FLAGS not yet sent */

struct imap_sess;
struct imap_job;

typedef void (*imap_cmd_fn)(struct imap_sess *s, const struct imap_arg *args);

struct imap_cmd {
	const char *name;
	imap_cmd_fn fn;
	unsigned states; /* bit per enum imap_state */
	unsigned flags;	 /* CF_* */
};

#define ST_BIT(x) (1u << (x))
#define ST_ANY (ST_BIT(IS_NOTAUTH) | ST_BIT(IS_AUTH) | ST_BIT(IS_SELECTED))
#define ST_AUTHED (ST_BIT(IS_AUTH) | ST_BIT(IS_SELECTED))
#define ST_SEL ST_BIT(IS_SELECTED)

/* The selected mailbox: what the client has been told, ghosts included. */
struct imap_mbox {
	char *name;		     /* store name, UTF-8, "INBOX" canonical */
	bool readonly;		     /* EXAMINE */
	struct store_mbox_view view; /* messages in UID order; view.count = client's EXISTS */
	unsigned char *mark;	     /* MK_* per message */
	size_t cap;
	size_t nghosts;
	uint64_t ghost_floor; /* modseq below every held-back expunge */
	uint32_t exists_sent; /* EXISTS the client believes */
	uint64_t modseq;      /* changes merged up to this mod-sequence */
	bool flags_dirty;     /* a keyword appeared: resend FLAGS */
	bool hms_due;	      /* new mail: HIGHESTMODSEQ to announce (CONDSTORE) */
	char **keywords;      /* keywords announced in FLAGS */
	size_t nkeywords;
	struct nameidx kwidx; /* the keywords by name; slot NULL until the first */
	/*
	 * IMAP4rev1 \Recent (RFC 3501 §2.3.2), normalized UIDs: those this
	 * session took from the store's watermark (store_mailbox_claim_recent)
	 * at SELECT and as new mail came, or, read-only (EXAMINE), saw above it
	 * without taking them. IMAP4rev2 sessions take them too, as Dovecot's
	 * do, and show none.
	 */
	struct imap_seqset recent;
	uint32_t recent_next; /* UIDs below it were taken or looked at */
	uint32_t recent_sent; /* RECENT the client believes */
};

struct imap_sess {
	struct conn *c;
	struct server *srv;
	enum imap_state state;
	unsigned flags;	  /* SF_* */
	unsigned enabled; /* EN_* */
	unsigned hold;
	unsigned bad;	     /* bad commands in a row (before login: in all) */
	unsigned auth_fails; /* failed logins so far */
	struct imap_parser *parser;

	/* the command being executed */
	const struct imap_cmd *cmd;
	bool uid;  /* UID prefix */
	char *tag; /* copy of the tag */
	char cmdname[32];
	uint64_t lit_bytes;	   /* APPEND literal bytes promised in this command */
	uint64_t lit_held;	   /* literal bytes of this command in srv->imap_literals */
	struct imap_job *cont_job; /* runs again once output drained (SF_CONT) */

	/* login */
	char *user;	  /* account */
	int64_t quota;	  /* bytes; 0: unlimited (imap_quota_current() reads it anew) */
	struct store *st; /* the account's store, borrowed for one command (imap_store_borrow) */
	struct store_id store_id; /* the store logged in to: the session reaches only that one */
	int64_t login_ms;
	unsigned ncmds;

	/* selected mailbox */
	struct imap_mbox *sel;
	struct imap_seqset saved; /* SEARCHRES "$", as UIDs */
	bool saved_valid;

	/* timers */
	struct event *timer;	  /* auth failure delay */
	struct event *idle_timer; /* IDLE keepalive and poll */
	struct event *login_timer; /* login_timeout, from the accept */
	struct imap_job *delayed; /* job waiting on the auth delay timer */
	unsigned idle_ticks;
	bool logout_logged;

	/* registry of logged-in sessions by account, for change notifications */
	struct imap_sess *reg_prev, *reg_next;
	bool registered;
};

/* ---- replies (imap_session.c) ---- */

/* Write raw bytes to the client. */
void imap_write(struct imap_sess *s, const void *p, size_t n);
/* Write a C string. */
#define imap_puts(s, str) imap_write((s), (str), strlen(str))
/* Write a buffer and empty it. */
void imap_write_buf(struct imap_sess *s, struct buf *b);
/* Write formatted text (CRLF included by the caller). */
void imap_printf(struct imap_sess *s, const char *fmt, ...) PRINTF_LIKE(2, 3);
/*
 * Finish the current command: report mailbox changes (as the command's
 * flags allow), then "tag STATUS text". status is "OK", "NO" or "BAD";
 * text may start with a "[CODE] ". A BAD counts against the bad-command
 * limit (and may end the session).
 */
void imap_done(struct imap_sess *s, const char *status, const char *fmt, ...) PRINTF_LIKE(3, 4);
/*
 * "[CODE] text" for a store error of the command what into out (an
 * internal error's own text only into the log, with the session id in the
 * reply to find it).
 */
void imap_store_failure(struct imap_sess *s, const char *what, enum store_err e, const char *msg,
			struct buf *out);
/* Finish with NO and the response code for the store's last error. */
void imap_done_store(struct imap_sess *s, const char *what, enum store_err e, const char *msg);
/* Same as imap_done_store() with the session's store handle. */
void imap_done_store_err(struct imap_sess *s, const char *what);
/* "* BYE text" and close once written. */
void imap_bye(struct imap_sess *s, const char *fmt, ...) PRINTF_LIKE(2, 3);
/* Flush the output, then close (once; the close comes later, from the loop). */
void imap_finish_conn(struct imap_sess *s);
/* Count a bad command; 1 if the session is now ending. */
int imap_count_bad(struct imap_sess *s);

/* Whether passwords may be sent now (TLS, or allow_plaintext_auth). */
bool imap_auth_allowed(const struct imap_sess *s);
/* The capability list for the current state (no "* CAPABILITY" prefix). */
void imap_capabilities(struct imap_sess *s, struct buf *out);

/* Append a string as a quoted string, or a literal when it must be. */
void imap_quote(struct buf *out, const char *str, size_t len, bool utf8);
/* Append peer/store text for a human-readable reply: printable ASCII only, cut. */
void imap_text(struct buf *out, const char *str, size_t max);
/* Append "(\Seen \Answered kw ...)" for a message, with \Recent if recent. */
void imap_flags_list(struct buf *out, uint32_t flags, bool recent, const char *keywords);

/* ---- state ---- */

void imap_set_state(struct imap_sess *s, enum imap_state st);
/* Continue with input after an asynchronous step (read enabled again). */
void imap_resume(struct imap_sess *s);
/* Whether names and strings are UTF-8 (IMAP4rev2 or UTF8=ACCEPT). */
bool imap_utf8(const struct imap_sess *s);
/* Enable CONDSTORE (from a CONDSTORE-enabling command); sends HIGHESTMODSEQ if selected. */
void imap_enable_condstore(struct imap_sess *s);
/* Set parser limits for the session state. */
void imap_apply_limits(struct imap_sess *s);
/* Set the read timeout for the session state. */
void imap_timeouts(struct imap_sess *s);
/* After STARTTLS wrapped the connection: new parser, callbacks, nothing enabled. */
void imap_session_tls_started(struct imap_sess *s);
/* Start or stop the IDLE timer (keepalive, polling for other processes' changes). */
void imap_session_idle_timer(struct imap_sess *s, bool on);

/* Register a session that just logged in (s->user set) for change notifications. */
void imap_reg_add(struct imap_sess *s);

/* ---- the store handle ---- */

/*
 * s->st is the account's store handle for the current command: borrowed
 * from the shared pool at dispatch (opened on a worker when none is idle),
 * given back by imap_done(), so an idle session holds none.
 * imap_store_take() borrows an idle one outside a command, never opening
 * one on the loop: true when s->st is set.
 */
bool imap_store_take(struct imap_sess *s);
/* Give the handle back to the pool (not while a job uses it). */
void imap_store_return(struct imap_sess *s);

/* ---- worker jobs ---- */

struct imap_job {
	struct imap_sess *s;
	struct store *st;		  /* the session's store handle (NULL before login) */
	void (*work)(struct imap_job *j); /* on a worker thread */
	void (*done)(struct imap_sess *s, struct imap_job *j); /* on the loop */
	void (*free)(struct imap_job *j);		       /* frees the job */
	/* On the loop before done, and before the failure delay; also when
	 * the session is gone (s->c NULL then). May be NULL. */
	void (*settle)(struct imap_sess *s, struct imap_job *j);
	bool delay; /* done after the auth failure delay */
	bool auth;  /* a password check: runs on the server's auth_pool */
	bool keep;  /* done() passed the job on (imap_job_continue): do not free it */
};

/* Run j->work on the pool, then j->done on the loop; input waits meanwhile. */
void imap_job_run(struct imap_sess *s, struct imap_job *j);
/*
 * Run a job at once on the loop: for work that needs no disk or store
 * (a reply made from the snapshot), where the trip through the pool would
 * cost more than the work. done may still continue it on the pool.
 */
void imap_job_run_here(struct imap_sess *s, struct imap_job *j);
/*
 * From j->done: run the job again for the next part of a long reply, at
 * once or, if the client is behind with reading, once the output drained.
 */
void imap_job_continue(struct imap_sess *s, struct imap_job *j);

/* ---- selected mailbox (imap_session.c) ---- */

/* Free the selection; back to authenticated state is the caller's. */
void imap_sel_free(struct imap_mbox **m);
/* Index of uid in the view, or -1. */
ssize_t imap_sel_find(const struct imap_mbox *m, uint32_t uid);
/* Whether two keyword lists as the store keeps them are the same (NULL is empty). */
bool imap_kw_equal(const char *a, const char *b);
/* Look for changes in the store (not while a job runs); 0, or -1 if the session ends. */
int imap_sel_poll(struct imap_sess *s);
/* Send what changed: EXISTS, FETCH FLAGS, and EXPUNGE/VANISHED if allowed. */
void imap_sel_flush(struct imap_sess *s, bool expunges);
/* Merge messages (new state of existing ones or new ones) into the view. */
void imap_sel_merge(struct imap_sess *s, const struct store_msg *msgs, size_t n, bool announce);
/* Mark UIDs expunged (ghosts until flushed). */
void imap_sel_expunged(struct imap_sess *s, const uint32_t *uids, size_t n);
/* How many messages of the view (ghosts left out) are \Recent for this session. */
uint32_t imap_sel_recent_count(const struct imap_mbox *m);
/* Whether the message is \Recent for this session (IMAP4rev1 only). */
bool imap_sel_recent(const struct imap_sess *s, uint32_t uid);
/* Note the keywords of every message of a freshly loaded view. */
void imap_sel_init_keywords(struct imap_mbox *m);
/* Send "* FLAGS" and PERMANENTFLAGS for the selected mailbox. */
void imap_sel_send_flags(struct imap_sess *s);
/* Copy a store_msg (keywords duplicated). */
void imap_msg_copy(struct store_msg *dst, const struct store_msg *src);

/*
 * Resolve a sequence set (or UID set when uid) argument against the view
 * into a normalized set of sequence numbers (1-based view indices).
 * Returns 0, or -1 with *err_r (a BAD reply text).
 */
int imap_msgset(struct imap_sess *s, const struct imap_arg *a, bool uid, struct imap_seqset *seqs,
		const char **err_r);
/* The UIDs of the sequence numbers in seqs as store ranges (malloc'd). */
void imap_seqs_to_ranges(const struct imap_sess *s, const struct imap_seqset *seqs,
			 struct store_range **r, size_t *n);

/* ---- mailbox names (imap_cmd_mailbox.c) ---- */

/*
 * A mailbox argument into the store's UTF-8 name (modified UTF-7 decoded
 * for rev1 clients; INBOX in any case made "INBOX"). 0, or -1 with *err_r.
 */
int imap_mbox_arg(struct imap_sess *s, const struct imap_arg *a, struct buf *name,
		  const char **err_r);
/* Append a store name as the client wants it (quoted mUTF-7 or UTF-8). */
void imap_mbox_out(struct imap_sess *s, struct buf *out, const char *name);
/* Canonical store name: "inbox/x" becomes "INBOX/x". In place. */
void imap_mbox_canon(char *name);

/* ---- command handlers ---- */

/* imap_cmd_auth.c */
void imap_cmd_capability(struct imap_sess *s, const struct imap_arg *args);
void imap_cmd_noop(struct imap_sess *s, const struct imap_arg *args);
void imap_cmd_logout(struct imap_sess *s, const struct imap_arg *args);
void imap_cmd_starttls(struct imap_sess *s, const struct imap_arg *args);
void imap_cmd_login(struct imap_sess *s, const struct imap_arg *args);
void imap_cmd_authenticate(struct imap_sess *s, const struct imap_arg *args);
void imap_cmd_sasl_line(struct imap_sess *s, const char *line, size_t len);
void imap_cmd_id(struct imap_sess *s, const struct imap_arg *args);
void imap_cmd_enable(struct imap_sess *s, const struct imap_arg *args);
void imap_cmd_namespace(struct imap_sess *s, const struct imap_arg *args);
void imap_cmd_idle(struct imap_sess *s, const struct imap_arg *args);
void imap_cmd_idle_line(struct imap_sess *s, const char *line, size_t len);
/* Log the logout line of a logged-in session. */
void imap_log_logout(struct imap_sess *s, const char *why);

/* imap_cmd_mailbox.c */
void imap_cmd_select(struct imap_sess *s, const struct imap_arg *args);
void imap_cmd_examine(struct imap_sess *s, const struct imap_arg *args);
void imap_cmd_create(struct imap_sess *s, const struct imap_arg *args);
void imap_cmd_delete(struct imap_sess *s, const struct imap_arg *args);
void imap_cmd_rename(struct imap_sess *s, const struct imap_arg *args);
void imap_cmd_subscribe(struct imap_sess *s, const struct imap_arg *args);
void imap_cmd_unsubscribe(struct imap_sess *s, const struct imap_arg *args);
void imap_cmd_list(struct imap_sess *s, const struct imap_arg *args);
void imap_cmd_lsub(struct imap_sess *s, const struct imap_arg *args);
void imap_cmd_status(struct imap_sess *s, const struct imap_arg *args);
void imap_cmd_getquota(struct imap_sess *s, const struct imap_arg *args);
void imap_cmd_getquotaroot(struct imap_sess *s, const struct imap_arg *args);
void imap_cmd_setquota(struct imap_sess *s, const struct imap_arg *args);

/* imap_cmd_append.c */
void imap_cmd_append(struct imap_sess *s, const struct imap_arg *args);
/*
 * Decide on an APPEND literal of the command's size bytes so far, before
 * "+": 0 accept, -1 over the user's quota, -2 it would leave the disk less
 * than queue.min_free.
 */
int imap_append_literal_check(struct imap_sess *s, uint64_t size);
/*
 * Loop: the user's quota as the accounts database has it now (bytes; 0:
 * unlimited), also kept in s->quota; on a database error the one read last.
 */
int64_t imap_quota_current(struct imap_sess *s);
/* Worker: whether add more bytes would pass quota (> 0) on st (APPEND, COPY). */
bool imap_quota_exceeded(struct store *st, int64_t quota, uint64_t add);
/* The reply text for it: "[OVERQUOTA] Quota exceeded (limit N bytes)", into out. */
void imap_quota_text(const struct imap_sess *s, struct buf *out);
/* Loop: end the command with that reply (NO). */
void imap_done_overquota(struct imap_sess *s);

/* imap_cmd_message.c */
void imap_cmd_check(struct imap_sess *s, const struct imap_arg *args);
void imap_cmd_close(struct imap_sess *s, const struct imap_arg *args);
void imap_cmd_unselect(struct imap_sess *s, const struct imap_arg *args);
void imap_cmd_expunge(struct imap_sess *s, const struct imap_arg *args);
void imap_cmd_store(struct imap_sess *s, const struct imap_arg *args);
void imap_cmd_copy(struct imap_sess *s, const struct imap_arg *args);
void imap_cmd_move(struct imap_sess *s, const struct imap_arg *args);

/*
 * Flags of STORE/APPEND: system flags into *flags, keywords appended to
 * *kw (malloc'd copies; the caller frees). 0, or -1 with *err_r.
 */
int imap_flags_parse(const struct imap_arg *list, size_t n, uint32_t *flags, char ***kw,
		     size_t *nkw, const char **err_r);

/* imap_cmd_fetch.c */
void imap_cmd_fetch(struct imap_sess *s, const struct imap_arg *args);

/* imap_cmd_search.c */
void imap_cmd_search(struct imap_sess *s, const struct imap_arg *args);
void imap_cmd_sort(struct imap_sess *s, const struct imap_arg *args);
void imap_cmd_thread(struct imap_sess *s, const struct imap_arg *args);

#endif
