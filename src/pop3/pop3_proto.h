/*
 * pop3_proto — the pure POP3 parsing and output shaping used by the POP3
 * session (RFC 1939, RFC 2449 CAPA, RFC 2595 STLS, RFC 5034 AUTH):
 *
 *   - a line framer that takes bytes as they arrive and hands out one
 *     command line at a time, bounded by a caller-given limit;
 *   - the command-line parser: verb and arguments, numbers checked;
 *   - the RETR/TOP output filter: dot-stuffing, the TOP line count and the
 *     final ".\r\n".
 *
 * Nothing here touches a socket or the disk, so the same code serves the
 * event loop, the unit tests and the fuzzer. The framer and the filter are
 * incremental: any split of the input gives the same result.
 *
 * SECURITY: every input byte is peer data (or message data a peer wrote).
 * Lines are copied only into the framer's fixed array after a length
 * check; an overlong line is consumed up to its end and reported once,
 * never buffered. Every malformed input is an error with a reply text,
 * never an assertion.
 */
#ifndef SURAT_POP3_PROTO_H
#define SURAT_POP3_PROTO_H

#include <stddef.h>
#include <stdint.h>

struct buf;

/* RFC 2449 §4: a command line is at most 255 octets, CRLF included. */
#define POP3_CMD_LINE_MAX 255
/*
 * A SASL response line after "+ " (RFC 5034 §4 lifts the 255 limit for
 * it): enough for base64 of the largest PLAIN message we accept
 * (3 fields of 255 octets and 2 NULs = 767 octets -> 1024 base64).
 */
#define POP3_AUTH_LINE_MAX 1026
/* Longest SASL mechanism name (RFC 4422 §3.1: 20 characters). */
#define POP3_MECH_MAX 20
/* Largest message number or TOP line count we parse. */
#define POP3_NUM_MAX UINT32_MAX

enum pop3_cmd {
	POP3_CMD_UNKNOWN = 0,
	POP3_CMD_USER,
	POP3_CMD_PASS,
	POP3_CMD_STAT,
	POP3_CMD_LIST,
	POP3_CMD_RETR,
	POP3_CMD_DELE,
	POP3_CMD_NOOP,
	POP3_CMD_RSET,
	POP3_CMD_QUIT,
	POP3_CMD_TOP,
	POP3_CMD_UIDL,
	POP3_CMD_CAPA,
	POP3_CMD_STLS,
	POP3_CMD_AUTH,
	POP3_CMD_APOP,
};

enum pop3_err {
	POP3_ERR_NONE = 0,
	POP3_ERR_TOO_LONG, /* line over the limit */
	POP3_ERR_EMPTY,	   /* empty line */
	POP3_ERR_NUL,	   /* a NUL byte in the line */
	POP3_ERR_CTRL,	   /* another control byte in the line */
	POP3_ERR_UNKNOWN,  /* verb not recognised */
	POP3_ERR_SYNTAX,   /* missing, extra or malformed arguments; text has the usage */
	POP3_ERR_NUMBER,   /* a message number or line count that is not a number in range */
};

/* An error ready to become "-ERR <text>\r\n". text is static. */
struct pop3_error {
	enum pop3_err code;
	const char *text;
};

/* ------------------------------------------------------------------ */
/* Line framer */

/*
 * Collects one line. A line ends at LF; a CR right before the LF is
 * dropped (a bare CR elsewhere stays in the line, and the command parser
 * refuses it as a control byte).
 */
struct pop3_line {
	char data[POP3_AUTH_LINE_MAX + 1]; /* the line, NUL-terminated once ready */
	size_t len;			   /* octets in data (no CR/LF once ready) */
	int overflow;			   /* skipping the rest of an overlong line */
	int ready;			   /* the last call returned a line or an error */
};

/* Start empty. */
void pop3_line_init(struct pop3_line *l);

/*
 * Feed p[0..n). max is the longest line accepted with its CRLF (at most
 * POP3_AUTH_LINE_MAX); it may change between lines. Consumes bytes up to
 * and including the first line end, and sets *used_r to the number used.
 * Returns 1 with the line in l->data/l->len (valid until the next call),
 * 0 when all of p was used and no line is complete yet, or -1 with *err
 * (POP3_ERR_TOO_LONG) when the line that just ended was over max; that
 * line is gone. A line over max is never stored: its bytes are dropped as
 * they come, so the peer cannot make the framer grow.
 */
int pop3_line_feed(struct pop3_line *l, const char *p, size_t n, size_t max, size_t *used_r,
		   struct pop3_error *err);

/* Forget a partial line (after STLS). Wipes it: it may hold a password. */
void pop3_line_reset(struct pop3_line *l);

/* ------------------------------------------------------------------ */
/* Command lines */

/*
 * One parsed command. Pointers point into the caller's line and are valid
 * as long as it is; they are not NUL-terminated.
 *
 * Arguments by command:
 *   USER name          arg[0] = name (1 argument, no spaces)
 *   PASS string        arg[0] = everything after "PASS " verbatim (spaces
 *                      included, RFC 1939 §7), 1..253 octets
 *   LIST [msg], UIDL [msg]   nargs 0 or 1, num[0] = msg (>= 1)
 *   RETR msg, DELE msg       num[0] = msg (>= 1)
 *   TOP msg n                num[0] = msg (>= 1), num[1] = n (>= 0)
 *   AUTH [mech [initial-response]]  arg[0] = mech, arg[1] = response
 *                      ("=" is an empty response, RFC 5034 §4)
 *   APOP name digest   recognised only so it can be refused clearly
 *   STAT NOOP RSET QUIT CAPA STLS   no arguments
 * Arguments are separated by one or more spaces; trailing spaces are
 * ignored (except in PASS).
 */
struct pop3_cmdline {
	enum pop3_cmd cmd;
	const char *verb; /* the verb as sent (for logging) */
	size_t verb_len;
	unsigned nargs;
	const char *arg[2];
	size_t arg_len[2];
	uint32_t num[2]; /* numeric arguments, when the command has them */
};

/*
 * Parse one command line line[0..len) (no CRLF). Returns 0 and fills *r,
 * or -1 and fills *err. On -1, r->cmd is set when the verb was recognised
 * (so the caller can check the state first) and POP3_CMD_UNKNOWN
 * otherwise. The verb is case-insensitive.
 */
int pop3_cmd_parse(const char *line, size_t len, struct pop3_cmdline *r, struct pop3_error *err);

/* The canonical name of a command ("RETR"), "?" for UNKNOWN. Static. */
const char *pop3_cmd_name(enum pop3_cmd cmd);

/* ------------------------------------------------------------------ */
/* RETR / TOP output */

/*
 * The multi-line output filter (RFC 1939 §3): copies message bytes,
 * doubling a '.' at the start of every line; for TOP it stops after the
 * header, the blank line and the given number of body lines.
 */
struct pop3_dot {
	int bol;	     /* at the start of a line */
	int in_body;	     /* past the blank line ending the header */
	int top;	     /* TOP: count body lines */
	int done;	     /* TOP: the lines asked for are out; ignore the rest */
	size_t line_len;     /* octets of the current line so far */
	char last;	     /* the last byte copied ('\0' if none) */
	uint64_t lines_left; /* TOP: body lines still to send */
	uint64_t in;	     /* message octets consumed */
	uint64_t out;	     /* octets appended to out */
};

/* Start a RETR (top 0) or a TOP with lines body lines (top 1). */
void pop3_dot_init(struct pop3_dot *d, int top, uint64_t lines);

/*
 * Feed message bytes p[0..n); the shaped output is appended to out (may
 * reallocate). Returns 1 once a TOP has all it needs (the caller may stop
 * reading; further input is ignored), 0 to go on, or -1 if out hit its
 * maximum (out is then cut back to where it was).
 */
int pop3_dot_feed(struct pop3_dot *d, const char *p, size_t n, struct buf *out);

/*
 * End the output: a CRLF if the last line was not ended, then ".\r\n".
 * May reallocate out. 0, or -1 if out hit its maximum.
 */
int pop3_dot_finish(struct pop3_dot *d, struct buf *out);

#endif
