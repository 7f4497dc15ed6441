/*
 * smtp_client — the outbound SMTP client: one session on one connection to
 * one address (RFC 5321), and the pure parsers it needs.
 *
 * The pure part (no socket): the reply parser (multi-line replies, reply
 * codes, enhanced status codes), the EHLO capability reader and the
 * DATA dot-stuffer. The reply parser is incremental: it takes bytes as they
 * arrive and returns 1 when a whole reply is ready, 0 when it needs more,
 * -1 on a malformed reply. It stops right after a complete reply, so
 * pipelined replies that arrive in one read are taken one at a time.
 *
 * The session: smtp_client_new() connects (optionally with implicit TLS),
 * reads the greeting, says EHLO (HELO when EHLO is refused with 5xx),
 * upgrades with STARTTLS whenever it is offered (with tls REQUIRE it never
 * sends a command in clear past EHLO, it gives up instead), authenticates
 * with AUTH PLAIN when credentials are given, and then reports READY. The
 * owner then runs transactions one after the other with
 * smtp_client_send(): MAIL with SIZE/BODY/SMTPUTF8/RET/ENVID, RCPT with
 * NOTIFY/ORCPT (pipelined when PIPELINING is offered), DATA with the
 * dot-stuffed content, each recipient getting its own result. A session
 * that has done a transaction starts the next one with RSET. Every wait
 * has its own timeout (RFC 5321 §4.5.3.2).
 *
 * Callbacks run on the loop thread, never inside the call that caused
 * them, except that the owner may call smtp_client_free() from inside any
 * callback.
 *
 * SECURITY: everything the peer sends is untrusted. Reply lines are bounded
 * (SMTP_CLIENT_LINE_MAX), replies hold a bounded number of lines and
 * bytes, and reply text is stripped of control bytes before anyone sees it.
 * The AUTH secret is wiped once sent and never logged.
 */
#ifndef SURAT_SMTP_CLIENT_H
#define SURAT_SMTP_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/buf.h"

struct event_base;

/* ------------------------------------------------------------------ */
/* Replies */

#define SMTP_CLIENT_LINE_MAX 2048   /* octets of one reply line, CRLF included (RFC: 512) */
#define SMTP_CLIENT_REPLY_LINES 128 /* lines in one reply */
#define SMTP_CLIENT_REPLY_MAX 32768 /* octets of text in one reply */

enum smtp_reply_err {
	SMTP_REPLY_OK = 0,
	SMTP_REPLY_ERR_LINE_TOO_LONG, /* a line over SMTP_CLIENT_LINE_MAX */
	SMTP_REPLY_ERR_CODE,	      /* not three digits 2xx..5xx then ' ', '-' or end */
	SMTP_REPLY_ERR_MISMATCH,      /* a continuation line with another code */
	SMTP_REPLY_ERR_TOO_MANY,      /* too many lines or too much text */
};

/* One reply. text holds each line's text (after "250-"/"250 ") separated by
 * '\n', control bytes and 8-bit bytes replaced by '?'. */
struct smtp_reply {
	int code;	   /* 200..599 */
	char enhanced[16]; /* "5.1.1" from the first line if its class matches; else "" */
	size_t nlines;
	struct buf text; /* bounded by SMTP_CLIENT_REPLY_MAX */
};

struct smtp_reply_parser {
	struct smtp_reply reply;
	/* internal */
	struct buf line; /* partial line, bounded */
	int discard;	 /* after an error: nothing more is accepted */
	int ready;	 /* reply complete: the next feed starts a new one */
	enum smtp_reply_err err;
	const char *errtext;
};

/* Set up an empty parser. */
void smtp_reply_parser_init(struct smtp_reply_parser *p);
/* Free its memory; it can be initialised again. */
void smtp_reply_parser_free(struct smtp_reply_parser *p);

/*
 * Feed data[0..len). Sets *consumed_r to the bytes used: everything, except
 * that it stops just after the line that completes a reply. Returns 1 when
 * p->reply holds a complete reply (valid until the next feed, which starts
 * a new reply), 0 when it needs more bytes, -1 on a malformed reply
 * (p->err, p->errtext say why; every later call returns -1 too). Lines end
 * in LF, with or without CR before it. May reallocate p's buffers.
 */
int smtp_reply_parse(struct smtp_reply_parser *p, const char *data, size_t len, size_t *consumed_r);

/*
 * Append a one-line summary of r to out: "550 5.1.1 text of line 1 line 2"
 * (lines joined with a space), cut to about max bytes. May reallocate.
 */
void smtp_reply_summary(const struct smtp_reply *r, struct buf *out, size_t max);

/* ------------------------------------------------------------------ */
/* EHLO capabilities */

#define SMTP_CAP_PIPELINING 0x001
#define SMTP_CAP_SIZE 0x002
#define SMTP_CAP_8BITMIME 0x004
#define SMTP_CAP_SMTPUTF8 0x008
#define SMTP_CAP_DSN 0x010
#define SMTP_CAP_STARTTLS 0x020
#define SMTP_CAP_AUTH 0x040
#define SMTP_CAP_ENHANCEDSTATUSCODES 0x080
#define SMTP_CAP_CHUNKING 0x100

#define SMTP_AUTH_PLAIN 0x1
#define SMTP_AUTH_LOGIN 0x2

struct smtp_caps {
	unsigned flags;	   /* SMTP_CAP_* */
	uint64_t size_max; /* SIZE's value; 0 when absent or unlimited */
	unsigned auth;	   /* SMTP_AUTH_* offered */
};

/* Read the capabilities from a 250 EHLO reply (its lines after the first).
 * Unknown keywords are ignored; keywords are case-insensitive. */
void smtp_caps_parse(const struct smtp_reply *r, struct smtp_caps *caps);

/* ------------------------------------------------------------------ */
/* DATA */

/* Dot-stuffing state: the last two bytes fed. */
struct smtp_stuffer {
	int fed;
	unsigned char last, prev;
};

void smtp_stuffer_init(struct smtp_stuffer *st);
/* Append p[0..n) to out with every line-leading '.' doubled. May reallocate. */
void smtp_stuff(struct smtp_stuffer *st, const char *p, size_t n, struct buf *out);
/* Append the end of data: CRLF if the content did not end in one, then ".\r\n". */
void smtp_stuff_end(struct smtp_stuffer *st, struct buf *out);

/* ------------------------------------------------------------------ */
/* The session */

enum smtp_client_tls {
	SMTP_CLIENT_TLS_MAY,	  /* STARTTLS when offered */
	SMTP_CLIENT_TLS_REQUIRE,  /* STARTTLS or give up */
	SMTP_CLIENT_TLS_IMPLICIT, /* TLS from the first byte (port 465) */
	SMTP_CLIENT_TLS_NONE,	  /* never (a retry after a failed handshake) */
};

/* Seconds. Defaults (smtp_client_timeouts_default) from RFC 5321 §4.5.3.2. */
struct smtp_client_timeouts {
	int connect;	/* TCP connect and TLS handshake: 30 */
	int greeting;	/* 220: 300 */
	int command;	/* EHLO, STARTTLS, AUTH, RSET, QUIT: 300 */
	int mail;	/* 300 */
	int rcpt;	/* 300 */
	int data_init;	/* 354: 120 */
	int data_block; /* each write of content: 180 */
	int data_done;	/* reply to the final dot: 600 */
};

void smtp_client_timeouts_default(struct smtp_client_timeouts *t);

struct smtp_client_params {
	const char *helo;	   /* our name for EHLO */
	const char *host;	   /* the peer's name (SNI, logs); copied */
	const struct sockaddr *sa; /* address with port; copied */
	socklen_t salen;
	enum smtp_client_tls tls;
	const char *auth_user; /* AUTH PLAIN when set (then TLS is required) */
	const char *auth_pass; /* copied; the copy is wiped after use */
	struct smtp_client_timeouts t;
	const char *log_id; /* prefix of log lines; copied */
};

/* Result of one recipient. */
enum smtp_rcpt_status { SMTP_RCPT_NONE, SMTP_RCPT_OK, SMTP_RCPT_TEMP, SMTP_RCPT_PERM };

struct smtp_client_rcpt {
	const char *addr;  /* forward-path without <> */
	const char *orcpt; /* "rfc822;xtext" as received, or NULL; a utf-8 one goes as
			      utf-8-addr-xtext without SMTPUTF8 (RFC 6533 3) */
	unsigned notify;   /* SMTP_NOTIFY_* bits, 0: not given */
	/* result */
	enum smtp_rcpt_status status;
	char *text; /* the reply summary (or our reason); malloc'd, freed by the owner
		       with smtp_client_txn_clear() */
	int over_limit; /* TEMP from a 452 or 552 to RCPT: past the peer's recipient
			   limit (RFC 5321 4.5.3.1.10), for another transaction */
};

/* One transaction. The owner keeps every pointer valid until TXN_DONE. */
struct smtp_client_txn {
	const char *mail_from; /* "" for the null sender */
	const char *envid;     /* ENVID as received (xtext), or NULL */
	int ret;	       /* SMTP_RET_* (smtp_proto.h) as received: NONE sends none */
	int body_8bit;
	int smtputf8;
	const char *data; /* the content, unstuffed, CRLF line ends */
	size_t len;
	struct smtp_client_rcpt *rcpts;
	size_t nrcpts;
	/* result */
	int retry; /* the session failed before any final result: nothing was
		      decided, the owner may try again on another session */
};

/* Free the result texts and reset the statuses. */
void smtp_client_txn_clear(struct smtp_client_txn *txn);

enum smtp_client_event {
	SMTP_CLIENT_READY,    /* the session is up: call smtp_client_send() */
	SMTP_CLIENT_FAILED,   /* the session could not be set up or was lost when
				 idle; smtp_client_error() says why; free it */
	SMTP_CLIENT_TXN_DONE, /* the transaction has its results; the session is READY
				 again unless smtp_client_usable() says 0 */
};

struct smtp_client;

typedef void smtp_client_cb(struct smtp_client *cl, enum smtp_client_event ev, void *arg);

/*
 * Start a session on base: connect to p->sa. Never NULL; every outcome
 * (even an immediate connect error) arrives through cb, later.
 */
struct smtp_client *smtp_client_new(struct event_base *base, const struct smtp_client_params *p,
				    smtp_client_cb *cb, void *arg);

/*
 * Start a transaction on a READY session (after READY or TXN_DONE). Its
 * results are in txn when TXN_DONE arrives.
 */
void smtp_client_send(struct smtp_client *cl, struct smtp_client_txn *txn);

/* Nonzero if the session can take another transaction. */
int smtp_client_usable(const struct smtp_client *cl);

/*
 * The reason of the last failure, e.g. "connect to mx[192.0.2.1]: Connection
 * refused" or the peer's reply summary; "" if none. Static until the next
 * event.
 */
const char *smtp_client_error(const struct smtp_client *cl);
/*
 * When that failure was a 5xx reply from the peer, its enhanced status code
 * ("5.7.1"; "5.0.0" when the reply had none of its class); else "".
 */
const char *smtp_client_error_status(const struct smtp_client *cl);
/*
 * When that failure was a reply from the peer (to the greeting, EHLO,
 * HELO, STARTTLS or AUTH), its summary as smtp_reply_summary() makes it,
 * "554 5.7.1 go away", without our words around it; else "". Static
 * until the next event.
 */
const char *smtp_client_error_reply(const struct smtp_client *cl);
/* 1 if the failure was a TLS handshake error (a retry without TLS may work). */
int smtp_client_error_tls(const struct smtp_client *cl);

/* "TLSv1.3:TLS_AES_256_GCM_SHA384" or "none". */
const char *smtp_client_tls_desc(const struct smtp_client *cl);
/* The peer's capabilities as last read from EHLO. */
const struct smtp_caps *smtp_client_caps(const struct smtp_client *cl);
/* The number of transactions this session has done. */
unsigned smtp_client_txns(const struct smtp_client *cl);

/*
 * Leave the session idle until smtp_client_send() or smtp_client_free():
 * if the peer closes or idle seconds pass, FAILED is reported (idle 0: wait
 * forever).
 */
void smtp_client_idle(struct smtp_client *cl, int idle);

/*
 * End the session politely: QUIT if it is usable. FAILED is reported once
 * the peer has answered or closed (at most 5 s); then free it.
 */
void smtp_client_quit(struct smtp_client *cl);
/* Close at once and free; *clp = NULL. No more callbacks. */
void smtp_client_free(struct smtp_client **clp);

#endif
