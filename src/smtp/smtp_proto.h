/*
 * smtp_proto — the pure SMTP parsing and formatting shared by the server
 * session and the client: command lines (RFC 5321 §4.1), reverse- and
 * forward-paths (RFC 5321 §4.1.2, RFC 6531), ESMTP parameters (SIZE,
 * BODY, SMTPUTF8, DSN's RET/ENVID/NOTIFY/ORCPT, AUTH=), xtext, the DATA
 * and BDAT readers, reply formatting, base64 and SASL PLAIN.
 *
 * Nothing here touches a socket or the disk. Line parsers take one whole
 * command line without its CRLF (the caller frames lines and enforces the
 * 512-octet limit) and return 0 or -1 with a struct smtp_error; they never
 * need more input. The DATA reader is incremental: it takes chunks as they
 * arrive and returns 1 at the end of the data, 0 when it needs more.
 *
 * SECURITY: every byte handled here comes from the peer. Nothing a peer
 * sends is an assertion: each bad input is a clean error carrying the reply
 * code to send. Lengths are checked before anything is copied; outputs go
 * into fixed arrays or bounded bufs. The DATA reader ends the data only on
 * <CRLF>.<CRLF>; bare CR and bare LF are recorded as errors and never end a
 * line, so no pipelining trick can smuggle a second message through it.
 */
#ifndef SURAT_SMTP_PROTO_H
#define SURAT_SMTP_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

/* Limits from RFC 5321 §4.5.3.1 and RFC 3461. */
#define SMTP_LOCAL_MAX 64	/* octets of a local part */
#define SMTP_DOMAIN_MAX 255	/* octets of a domain */
#define SMTP_PATH_MAX 256	/* octets of a path, '<' and '>' included */
#define SMTP_LINE_MAX 1000	/* octets of a text line, CRLF included */
#define SMTP_REPLY_LINE_MAX 512 /* octets of a reply line, CRLF included */
#define SMTP_PARAMS_MAX 16	/* ESMTP parameters on one MAIL or RCPT */
#define SMTP_ENVID_MAX 100	/* octets of the ENVID value (xtext) */
#define SMTP_ORCPT_MAX 500	/* octets of the ORCPT address (xtext) */
#define SMTP_ADDRTYPE_MAX 32	/* octets of the ORCPT address type */
#define SMTP_SASL_FIELD_MAX 255 /* octets of each SASL PLAIN field */

enum smtp_cmd {
	SMTP_CMD_UNKNOWN = 0,
	SMTP_CMD_EHLO,
	SMTP_CMD_HELO,
	SMTP_CMD_MAIL,
	SMTP_CMD_RCPT,
	SMTP_CMD_DATA,
	SMTP_CMD_BDAT,
	SMTP_CMD_RSET,
	SMTP_CMD_NOOP,
	SMTP_CMD_QUIT,
	SMTP_CMD_HELP,
	SMTP_CMD_VRFY,
	SMTP_CMD_EXPN,
	SMTP_CMD_STARTTLS,
	SMTP_CMD_AUTH,
};

enum smtp_err {
	SMTP_ERR_NONE = 0,
	/* command line */
	SMTP_ERR_CMD_EMPTY,   /* empty line */
	SMTP_ERR_CMD_NUL,     /* a NUL byte in the line */
	SMTP_ERR_CMD_CTRL,    /* a control byte (CR, LF, ...) in the line */
	SMTP_ERR_CMD_8BIT,    /* an 8-bit byte in the verb */
	SMTP_ERR_CMD_UNKNOWN, /* verb not recognised */
	SMTP_ERR_CMD_SYNTAX,  /* bad or missing argument; text says the usage */
	/* paths */
	SMTP_ERR_PATH_SYNTAX,	       /* not a valid <path> */
	SMTP_ERR_PATH_NULL,	       /* <> where it is not allowed */
	SMTP_ERR_PATH_TOO_LONG,	       /* path over SMTP_PATH_MAX */
	SMTP_ERR_PATH_LOCAL_TOO_LONG,  /* local part over SMTP_LOCAL_MAX */
	SMTP_ERR_PATH_DOMAIN_TOO_LONG, /* domain over SMTP_DOMAIN_MAX */
	SMTP_ERR_PATH_DOMAIN,	       /* bad domain name or address literal */
	SMTP_ERR_PATH_NO_DOMAIN,       /* mailbox without @domain */
	SMTP_ERR_PATH_BAD_UTF8,	       /* invalid UTF-8 */
	SMTP_ERR_PATH_UTF8,	       /* non-ASCII address without SMTPUTF8 */
	/* ESMTP parameters */
	SMTP_ERR_PARAM_SYNTAX,	  /* not KEY[=VALUE] */
	SMTP_ERR_PARAM_TOO_MANY,  /* more than SMTP_PARAMS_MAX */
	SMTP_ERR_PARAM_DUPLICATE, /* the same keyword twice */
	SMTP_ERR_PARAM_UNKNOWN,	  /* keyword not supported here */
	SMTP_ERR_PARAM_VALUE,	  /* bad value for a known keyword */
	/* AUTH */
	SMTP_ERR_BASE64,       /* not canonical base64 */
	SMTP_ERR_SASL_SYNTAX,  /* malformed SASL PLAIN message */
	SMTP_ERR_SASL_TOOLONG, /* longer than the mechanism's buffer (RFC 4954 4: 500 5.5.6) */
	SMTP_ERR_SASL_AUTHZID, /* authzid differs from authcid */
	/* transaction order */
	SMTP_ERR_SEQ_NO_MAIL,  /* BDAT with no MAIL (RFC 3030 2: 503) */
	SMTP_ERR_SEQ_NO_EHLO,  /* BDAT after HELO: CHUNKING not offered (RFC 3030 2) */
	SMTP_ERR_SEQ_NO_RCPTS, /* DATA or BDAT with no valid recipient (RFC 5321 3.3: 554) */
	/* DATA/BDAT, see smtp_data_error() */
	SMTP_ERR_DATA_TOO_BIG,
	SMTP_ERR_DATA_BARE_LF,
	SMTP_ERR_DATA_BARE_CR,
	SMTP_ERR_DATA_LINE_TOO_LONG,
	SMTP_ERR_DATA_NO_MEMORY, /* smtp.max_data_memory reached (smtp_server.c) */
};

/*
 * An error ready to become a reply: "<reply> <enhanced> <text>". All three
 * strings are static; nothing to free.
 */
struct smtp_error {
	enum smtp_err code;
	int reply;	      /* e.g. 501 */
	const char *enhanced; /* e.g. "5.5.4" */
	const char *text;     /* e.g. "Syntax: MAIL FROM:<address>" */
};

/* Fill err with the standard reply for code (path errors use the 5.1.3 form). */
void smtp_error_set(struct smtp_error *err, enum smtp_err code);

/* ------------------------------------------------------------------ */
/* Command lines */

/*
 * One parsed command line. The pointers point into the caller's line and
 * are valid as long as it is; they are not NUL-terminated.
 */
struct smtp_cmdline {
	enum smtp_cmd cmd;
	const char *verb; /* the verb as sent (for logging UNKNOWN) */
	size_t verb_len;
	/*
	 * The argument: for MAIL and RCPT the text after "FROM:" / "TO:"
	 * (and any spaces), starting at '<'; for the others the text after
	 * the verb's space. Trailing spaces are trimmed. Empty if none.
	 */
	const char *arg;
	size_t arg_len;
	uint64_t bdat_size;    /* BDAT: chunk size */
	int bdat_last;	       /* BDAT: LAST given */
	const char *auth_mech; /* AUTH: mechanism */
	size_t auth_mech_len;
	const char *auth_ir; /* AUTH: initial response, or NULL; "=" means empty */
	size_t auth_ir_len;
};

/*
 * Parse one command line line[0..len) (without CRLF). Returns 0 and fills
 * *r, or -1 and fills *err. On -1, r->cmd is still set when the verb was
 * recognised (argument errors) and SMTP_CMD_UNKNOWN otherwise, and
 * r->verb is set whenever there was one (for logging). A line that
 * smtp_line_is_bdat() is BDAT whatever else is wrong with it.
 * The verb is case-insensitive. Argument rules: EHLO/HELO/VRFY/EXPN need
 * one; DATA/RSET/QUIT/STARTTLS take none; NOOP/HELP take anything;
 * MAIL needs "FROM:" and RCPT "TO:" (case-insensitive, spaces allowed after
 * the colon); BDAT needs "size [LAST]"; AUTH needs "mech [response]".
 */
int smtp_cmd_parse(const char *line, size_t len, struct smtp_cmdline *r, struct smtp_error *err);

/*
 * 1 if a command line starting with line[0..len) (len >= 5 tells for sure) is
 * meant as BDAT: "BDAT" in any case, then the line's end or anything but a
 * letter or digit ("BDAT\t28", "BDAT 28 LAST\x7f"). Such a line announces a
 * chunk, so a server that cannot parse it cannot frame what follows.
 */
int smtp_line_is_bdat(const char *line, size_t len);

/* The verb's name in capitals ("MAIL"), "UNKNOWN" for SMTP_CMD_UNKNOWN. Static. */
const char *smtp_cmd_name(enum smtp_cmd cmd);

/* ------------------------------------------------------------------ */
/* Paths */

#define SMTP_PATH_REVERSE 0x1 /* a reverse-path: <> allowed, errors say 5.1.7 */
#define SMTP_PATH_FORWARD 0x2 /* a forward-path: <postmaster> allowed */

/*
 * A parsed path, copied out: no pointer into the input. addr is the
 * normalised address "local@domain" with the domain's ASCII lowercased,
 * the local part as sent except that quoting is made canonical (a quoted
 * local part that is a valid dot-atom is unquoted, quoted-pairs are kept
 * only for '"' and '\'), source routes dropped. "" for the null path,
 * "postmaster" (as sent) for <postmaster>.
 */
struct smtp_path {
	char addr[SMTP_PATH_MAX];
	size_t len;	  /* strlen(addr) */
	size_t local_len; /* the domain is addr + local_len + 1 if local_len < len */
	int is_null;	  /* <> */
	int has_utf8;	  /* non-ASCII in the path as sent (a dropped source route too) */
};

/*
 * Parse a path starting at s[0] ('<') of s[0..len), with SMTP_PATH_*
 * flags. Valid UTF-8 is accepted and flagged in r->has_utf8: the caller
 * rejects it (SMTP_ERR_PATH_UTF8) without SMTPUTF8; invalid UTF-8 is
 * always an error. Returns 0 with *r filled and *rest_r and *rest_len_r set to
 * the parameters after the path (leading spaces skipped; may be empty), or
 * -1 and *err.
 */
int smtp_path_parse(const char *s, size_t len, unsigned flags, struct smtp_path *r,
		    const char **rest_r, size_t *rest_len_r, struct smtp_error *err);

/*
 * Check s[0..len) as a domain name (LDH labels, UTF-8 U-labels allowed) or
 * an address literal ([1.2.3.4], [IPv6:...]), e.g. an EHLO argument.
 * Returns 0 if valid (*has_utf8_r, if not NULL, says whether it held
 * non-ASCII), -1 if not.
 */
int smtp_domain_check(const char *s, size_t len, int *has_utf8_r);

/*
 * The address an address literal s[0..len) names ("[192.0.2.1]",
 * "[IPv6:2001:db8::1]", any spelling smtp_domain_check() takes, leading
 * zeros included): 0 with *family_r AF_INET (addr_r[0..4)) or AF_INET6
 * (addr_r[0..16)), network order; -1 if it is no address literal.
 */
int smtp_addr_literal(const char *s, size_t len, int *family_r, unsigned char addr_r[16]);

/* ------------------------------------------------------------------ */
/* ESMTP parameters */

/* One KEY[=VALUE]; pointers into the caller's text; value NULL if no '='. */
struct smtp_param {
	const char *key;
	size_t key_len;
	const char *value;
	size_t value_len;
};

struct smtp_params {
	struct smtp_param v[SMTP_PARAMS_MAX];
	size_t n;
	int has_utf8; /* some value holds non-ASCII (valid UTF-8) */
};

/*
 * Split s[0..len) into KEY[=VALUE] items separated by spaces. Keywords are
 * esmtp-keyword (alnum and '-', starting alnum), values esmtp-value
 * (printable ASCII except '=' and SP, plus valid UTF-8), never empty after
 * '='. Returns 0, or -1 and *err (syntax, too many, duplicate keyword).
 */
int smtp_params_parse(const char *s, size_t len, struct smtp_params *r, struct smtp_error *err);

/* The parameter whose keyword is key (case-insensitive), or NULL. */
const struct smtp_param *smtp_params_find(const struct smtp_params *p, const char *key);

enum smtp_body { SMTP_BODY_NONE = 0, SMTP_BODY_7BIT, SMTP_BODY_8BITMIME, SMTP_BODY_BINARYMIME };
enum smtp_ret { SMTP_RET_NONE = 0, SMTP_RET_FULL, SMTP_RET_HDRS };

#define SMTP_NOTIFY_NEVER 0x1
#define SMTP_NOTIFY_SUCCESS 0x2
#define SMTP_NOTIFY_FAILURE 0x4
#define SMTP_NOTIFY_DELAY 0x8

/* Value helpers: 0 and *r, or -1 if the value is not valid. */
/* SIZE: decimal digits, overflow-safe. */
int smtp_param_size(const char *v, size_t n, uint64_t *r);
/* BODY: 7BIT | 8BITMIME | BINARYMIME, case-insensitive. */
int smtp_param_body(const char *v, size_t n, enum smtp_body *r);
/* RET: FULL | HDRS. */
int smtp_param_ret(const char *v, size_t n, enum smtp_ret *r);
/* NOTIFY: NEVER alone, or a list of SUCCESS, FAILURE, DELAY without repeats. */
int smtp_param_notify(const char *v, size_t n, unsigned *r);

/*
 * Decode xtext (RFC 3461 §4: "+XX" hex escapes, other bytes '!'..'~'
 * except '+' and '=') s[0..n) and append it to out. May reallocate out.
 * Hex digits may be either case. Returns 0, or -1 on bad syntax or when
 * out is full (out then holds a partial result).
 */
int smtp_xtext_decode(const char *s, size_t n, struct buf *out);
/* Append the xtext encoding of s[0..n) to out. May reallocate. 0 or -1 (out full). */
int smtp_xtext_encode(const char *s, size_t n, struct buf *out);

/* Which extensions the session advertised: parameters of others are unknown. */
#define SMTP_EXT_SIZE 0x01
#define SMTP_EXT_8BITMIME 0x02
#define SMTP_EXT_SMTPUTF8 0x04
#define SMTP_EXT_DSN 0x08
#define SMTP_EXT_AUTH 0x10
#define SMTP_EXT_ALL 0x1f

/* A whole MAIL FROM argument, copied out: no pointer into the input. */
struct smtp_mail {
	struct smtp_path from;
	int has_size;
	uint64_t size; /* SIZE=, the caller compares it with its limit */
	enum smtp_body body;
	int smtputf8;
	enum smtp_ret ret;
	int has_envid;
	char envid[SMTP_ENVID_MAX + 1]; /* ENVID= as sent (valid xtext), NUL-terminated */
	int has_auth;			/* AUTH= given (validated, ignored) */
};

/* A whole RCPT TO argument, copied out. */
struct smtp_rcpt {
	struct smtp_path to;
	unsigned notify; /* SMTP_NOTIFY_* bits, 0 if not given */
	int has_orcpt;
	char orcpt_type[SMTP_ADDRTYPE_MAX + 1]; /* e.g. "rfc822", as sent */
	char orcpt[SMTP_ORCPT_MAX + 1];		/* the address as sent (xtext) */
};

/*
 * Parse the argument of MAIL (cmdline.arg: "<path> params") with the
 * extensions ext advertised. Checks the path (null path allowed), every
 * parameter and that a non-ASCII path comes with SMTPUTF8. Rejects
 * BODY=BINARYMIME (not advertised). Returns 0, or -1 and *err.
 */
int smtp_mail_parse(const char *arg, size_t len, unsigned ext, struct smtp_mail *r,
		    struct smtp_error *err);

/*
 * Parse the argument of RCPT; smtputf8 says whether this transaction's
 * MAIL carried SMTPUTF8 (a non-ASCII path is rejected otherwise).
 * <postmaster> is allowed. Returns 0, or -1 and *err.
 */
int smtp_rcpt_parse(const char *arg, size_t len, unsigned ext, int smtputf8, struct smtp_rcpt *r,
		    struct smtp_error *err);

/* ------------------------------------------------------------------ */
/* DATA and BDAT */

enum smtp_data_mode {
	SMTP_DATA_MODE_DATA, /* dot-stuffed, ends at <CRLF>.<CRLF> */
	SMTP_DATA_MODE_BDAT, /* raw chunks, the caller knows where they end */
};

#define SMTP_DATA_ERR_BARE_LF 0x01	 /* LF not preceded by CR */
#define SMTP_DATA_ERR_BARE_CR 0x02	 /* CR not followed by LF */
#define SMTP_DATA_ERR_LINE_TOO_LONG 0x04 /* line over SMTP_LINE_MAX with CRLF */
#define SMTP_DATA_ERR_TOO_BIG 0x08	 /* the message did not fit in out->max */

/*
 * The reader. Fields after "results" may be read by the caller; the rest
 * is internal. All offsets and sizes count the message (unstuffed), which
 * starts in out at the out->len it had at init.
 */
struct smtp_data_reader {
	struct buf *out;
	enum smtp_data_mode mode;
	int state;
	/* results */
	int done;	       /* the end of data was seen (DATA) or finish called */
	unsigned errors;       /* SMTP_DATA_ERR_* bits */
	uint64_t size;	       /* message octets seen, appended or not */
	uint64_t line_len;     /* octets of the current line so far, without CRLF */
	int header_done;       /* the empty line ending the header was seen */
	uint64_t header_len;   /* octets of the header: up to the empty line, or all
				  complete lines while header_done is 0 */
	uint64_t header_lines; /* physical lines in the header */
	int has_8bit;	       /* a byte >= 0x80 was seen */
	int has_nul;	       /* a NUL byte was seen */
};

/*
 * Start reading a message into out (which the caller owns, with out->max
 * as the message size limit; 0 means unlimited). The first line counts as
 * preceded by CRLF.
 */
void smtp_data_reader_init(struct smtp_data_reader *r, struct buf *out, enum smtp_data_mode mode);

/*
 * Feed p[0..n). May reallocate r->out. Sets *consumed_r to the input bytes
 * used: all of them, except that in DATA mode it stops just after the
 * terminating ".\r\n" so bytes pipelined after it stay with the caller.
 * Returns 1 when the end of data has been seen (also on later calls, which
 * consume nothing), 0 when more is needed. In BDAT mode it returns 0 until
 * smtp_data_finish() and 1 (consuming nothing) after. Errors
 * never stop the reader: it keeps consuming to the real end and records
 * them in r->errors; check smtp_data_error() at the end.
 */
int smtp_data_feed(struct smtp_data_reader *r, const char *p, size_t n, size_t *consumed_r);

/*
 * BDAT mode: the LAST chunk has been fed; flags a trailing CR as bare.
 * The message need not end with CRLF (see r->line_len).
 */
void smtp_data_finish(struct smtp_data_reader *r);

/*
 * Returns 0 if the message had no error, or -1 and *err with the reply for
 * the most serious one (too big, then bare LF, bare CR, line too long).
 */
int smtp_data_error(const struct smtp_data_reader *r, struct smtp_error *err);

/*
 * Where the header section of msg[0..len), a message as read (lines end in
 * CRLF; a bare CR or LF ends no line), ends: the offset at which fields
 * added after the message's own go. RFC 5322 3.6 keeps trace fields
 * together at the top, so a submission server's Message-ID:/Date: go
 * here, not above them. It is the empty line that ends the header, or the
 * first line that is neither a field nor the continuation of one (every
 * parser takes the body to start there), or the end of the message; with a
 * last line that has no CRLF (BDAT), before it, or before the field it
 * continues. Always the start of a line. 0 when the message has no header:
 * it is empty, starts with an empty line, or its first line is not a field
 * (a name of printable characters, then a colon; RFC 5322 4.5.1 allows
 * white space before it), as when it starts with white space. *own_r is
 * where the message's own fields end: the same, or with a last line that
 * has no CRLF, the end of the message (the fields it holds or continues
 * are the message's, though ours go before them).
 */
size_t smtp_data_header_end(const char *msg, size_t len, size_t *own_r);

/* ------------------------------------------------------------------ */
/* Replies */

/*
 * Append a reply with code (200..599), optional enhanced status (NULL for
 * none; must have the code's class) and text. Each '\n' in text starts a
 * new line ("250-..." continuation lines, "250 ..." last); a trailing
 * '\n' is ignored. Control and non-ASCII bytes in text become '?'. Every
 * line ends in CRLF. May reallocate out. Returns 0, or -1 (out unchanged)
 * on a bad code or enhanced status, a line over SMTP_REPLY_LINE_MAX, or
 * when out is full.
 */
int smtp_reply_format(struct buf *out, int code, const char *enhanced, const char *text);

/*
 * The same with n separate lines (n >= 1), e.g. an EHLO reply:
 * {"mx.example.org", "PIPELINING", "SIZE 26214400"} with 250 and no
 * enhanced status. May reallocate out. 0 or -1 (out unchanged).
 */
int smtp_reply_lines(struct buf *out, int code, const char *enhanced, const char *const *lines,
		     size_t n);

/* ------------------------------------------------------------------ */
/* AUTH */

/* Octets of the base64 encoding of n bytes, without the NUL. */
#define SMTP_BASE64_LEN(n) ((((n) + 2) / 3) * 4)

/*
 * Decode canonical base64 s[0..len) (RFC 4648: no whitespace, length a
 * multiple of 4, '=' padding only at the end, unused bits zero) into
 * out[0..outmax). Returns 0 and *len_r, or -1 on bad input or when it does
 * not fit. Nothing is allocated, so secrets stay where the caller put them.
 */
int smtp_base64_decode(const char *s, size_t len, void *out, size_t outmax, size_t *len_r);

/*
 * Encode p[0..n) as base64 with '=' padding into out, NUL-terminated.
 * Returns the length (without NUL), or -1 if outmax is too small.
 */
int smtp_base64_encode(const void *p, size_t n, char *out, size_t outmax);

/* SASL PLAIN (RFC 4616) credentials, NUL-terminated copies. */
struct smtp_sasl_plain {
	char authzid[SMTP_SASL_FIELD_MAX + 1]; /* "" or equal to authcid */
	char authcid[SMTP_SASL_FIELD_MAX + 1];
	char passwd[SMTP_SASL_FIELD_MAX + 1]; /* wipe with smtp_sasl_plain_wipe() */
};

/*
 * Split a decoded PLAIN message "authzid\0authcid\0passwd" msg[0..len).
 * authcid and passwd must be 1..255 octets, authzid 0..255 and empty or
 * equal to authcid; all valid UTF-8 without NUL. Returns 0, or -1 and *err
 * (r is wiped then). The caller wipes r after use.
 */
int smtp_sasl_plain_parse(const void *msg, size_t len, struct smtp_sasl_plain *r,
			  struct smtp_error *err);

/*
 * Base64-decode b64[0..len) and parse it as PLAIN; the decoded copy is
 * wiped before returning. 0, or -1 and *err (SMTP_ERR_BASE64 or as above).
 */
int smtp_sasl_plain_decode(const char *b64, size_t len, struct smtp_sasl_plain *r,
			   struct smtp_error *err);

/* Wipe the credentials. */
void smtp_sasl_plain_wipe(struct smtp_sasl_plain *r);

#endif
