/*
 * imap_parser — incremental parser for IMAP client commands (RFC 9051 §9,
 * RFC 3501 §9) and the raw lines IDLE and AUTHENTICATE read.
 *
 * The session hands over bytes as they arrive; the parser consumes at most
 * one item per call and says how many bytes it used, so pipelined input
 * after a command (or after STARTTLS) stays with the session. An item is a
 * command (tag, name, argument tree) or, in raw-line mode, one line.
 *
 * Arguments: atoms (including sequence sets like 1:*,5, flags like \Seen
 * and \*, list wildcards, and fetch attributes like
 * BODY.PEEK[HEADER.FIELDS (A B)]<0.100> kept whole as one atom; a literal
 * header name in it is read like any literal and kept in the atom as a
 * quoted string), NIL,
 * quoted strings, literals {n}, non-synchronising literals {n+}
 * (LITERAL+/LITERAL-, RFC 7888), literal8 ~{n} (RFC 3516) and nested
 * parenthesised lists.
 *
 * Literals: when a literal header has been read, feed returns
 * IMAP_PARSE_LITERAL and waits until the session calls
 * imap_parser_literal_accept() (then, if synchronising, it sends "+") or
 * imap_parser_literal_reject() (it answers NO/BAD; the parser skips the
 * literal and the rest of the command). Literal data goes straight into a
 * struct buf of its own that the session may take over without a copy.
 *
 * SECURITY: every byte is peer input. Limits (line length outside literals,
 * literal size, non-synchronising literal size, whole-command size, argument
 * count, nesting depth) are checked before anything is allocated or
 * promised; a breach is an error naming the limit, after which the parser
 * discards the rest of the command (swallowing any non-synchronising
 * literal) and resynchronises at the next line. Nothing a peer sends can
 * make it assert.
 */
#ifndef SURAT_IMAP_PARSER_H
#define SURAT_IMAP_PARSER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

enum imap_arg_type {
	IMAP_ARG_EOL = 0,  /* ends every argument array */
	IMAP_ARG_ATOM,	   /* any bare token: atom, flag, seq-set, fetch-att */
	IMAP_ARG_NIL,	   /* the atom NIL (any case); str holds it as sent */
	IMAP_ARG_QUOTED,   /* quoted string, escapes removed */
	IMAP_ARG_LITERAL,  /* {n} or {n+} */
	IMAP_ARG_LITERAL8, /* ~{n} or ~{n+}: may hold any octet */
	IMAP_ARG_LIST,	   /* ( ... ) */
};

/* imap_arg.flags */
#define IMAP_ARGF_WILDCARD 0x01u     /* atom holds '*' or '%' */
#define IMAP_ARGF_RESP_SPECIAL 0x02u /* atom holds ']' outside a section */
#define IMAP_ARGF_BACKSLASH 0x04u    /* atom starts with '\' (a system flag) */
#define IMAP_ARGF_SECTION 0x08u	     /* atom holds a BODY[...]/BINARY[...] section */
#define IMAP_ARGF_SPECIALS 0x10u     /* the section holds SP, '(' ')' or '"' */
#define IMAP_ARGF_8BIT 0x20u	     /* quoted/literal holds octets >= 0x80 */
#define IMAP_ARGF_NUL 0x40u	     /* literal holds NUL (invalid except literal8) */
#define IMAP_ARGF_NONSYNC 0x80u	     /* literal was {n+} */
#define IMAP_ARGF_STOLEN 0x100u	     /* literal data taken by the session */

struct imap_arg {
	enum imap_arg_type type;
	unsigned flags;		     /* IMAP_ARGF_* */
	const char *str;	     /* NUL-terminated text; NULL for LIST and EOL */
	size_t len;		     /* bytes of str, or children of a LIST */
	const struct imap_arg *list; /* LIST: children, ended by an EOL arg */
};

struct imap_command {
	const char *tag;
	const char *name;	     /* first word as sent; UID FETCH gives UID, args[0] FETCH */
	const struct imap_arg *args; /* ended by an EOL arg */
	size_t count;		     /* top-level arguments */
	uint64_t size;		     /* bytes the command took on the wire */
};

/* Limits; a zero field takes the default given in brackets. */
struct imap_parser_limits {
	size_t max_line;      /* bytes of one line outside literals, CRLF excluded [65536] */
	uint64_t max_literal; /* bytes of one literal [1 MiB] */
	uint64_t max_nonsync; /* bytes of one {n+} literal; 4096 is LITERAL- [4096] */
	uint64_t max_command; /* bytes of a command, literals included [literal + line] */
	unsigned max_args;    /* arguments in the tree, nested ones counted [4096] */
	unsigned max_depth;   /* nesting of lists [32] */
};

enum imap_parse_result {
	IMAP_PARSE_ERROR = -1,	/* see imap_parser_error(); keep feeding */
	IMAP_PARSE_MORE = 0,	/* all bytes consumed, item incomplete */
	IMAP_PARSE_DONE = 1,	/* a command (or raw line) is ready */
	IMAP_PARSE_LITERAL = 2, /* literal header read: accept or reject it */
};

enum imap_parse_error {
	IMAP_PERR_NONE = 0,
	IMAP_PERR_SYNTAX,	    /* BAD */
	IMAP_PERR_LINE_TOO_LONG,    /* BAD */
	IMAP_PERR_LITERAL_TOO_BIG,  /* over max_literal: NO/BAD [TOOBIG] */
	IMAP_PERR_NONSYNC_TOO_BIG,  /* {n+} over max_nonsync: BAD [TOOBIG] (RFC 7888) */
	IMAP_PERR_COMMAND_TOO_BIG,  /* BAD [TOOBIG] */
	IMAP_PERR_TOO_MANY_ARGS,    /* BAD */
	IMAP_PERR_TOO_DEEP,	    /* BAD */
	IMAP_PERR_LITERAL_OVERFLOW, /* size beyond 2^63-1; fatal if non-synchronising */
};

struct imap_parser;

/*
 * A new parser with the given limits (NULL: all defaults), in command mode.
 * Never NULL; free with imap_parser_free().
 */
struct imap_parser *imap_parser_new(const struct imap_parser_limits *lim);
/* Free the parser, its current command and literals; sets *pp to NULL. */
void imap_parser_free(struct imap_parser **pp);
/* Change the limits (e.g. after login); they apply from the next command. */
void imap_parser_set_limits(struct imap_parser *p, const struct imap_parser_limits *lim);
/*
 * Accept UTF-8 in quoted strings and require it to be well-formed
 * (IMAP4rev2, UTF8=ACCEPT). Off: 8-bit octets are kept and flagged
 * IMAP_ARGF_8BIT, because rev1 clients send them in passwords.
 */
void imap_parser_set_utf8(struct imap_parser *p, bool on);

/*
 * Consume bytes from data[0..len); *used_r says how many. Returns an
 * enum imap_parse_result. After DONE, LITERAL or ERROR call again with the
 * unused rest. Whatever the previous call returned (command, raw line, tag,
 * error text) stays valid until the next call to feed or free. Calling feed
 * while a literal waits for accept/reject is a bug (panics).
 */
int imap_parser_feed(struct imap_parser *p, const void *data, size_t len, size_t *used_r);

/* After DONE in command mode: the command, owned by the parser; else NULL. */
const struct imap_command *imap_parser_command(const struct imap_parser *p);

/*
 * Read the next item as one raw line instead of a command (IDLE's DONE,
 * AUTHENTICATE responses); back to command mode after it. Only between
 * commands, else panics. The line obeys max_line.
 */
void imap_parser_read_line(struct imap_parser *p);
/* After DONE in raw-line mode: the line without CRLF (NUL-terminated), owned by the parser. */
const char *imap_parser_line(const struct imap_parser *p, size_t *len_r);

/*
 * The tag of the command being read, or NULL if not yet complete (answer
 * with "* BAD"). Owned by the parser.
 */
const char *imap_parser_tag(const struct imap_parser *p);
/* The command name once read, else NULL; owned by the parser. */
const char *imap_parser_command_name(const struct imap_parser *p);

/*
 * After ERROR: the error and a message naming the limit or the fault
 * (owned by the parser). The parser already skips to the next command.
 */
enum imap_parse_error imap_parser_error(const struct imap_parser *p, const char **msg_r);
/* True if the last error leaves the stream unparseable: close the connection. */
bool imap_parser_error_fatal(const struct imap_parser *p);

/* While a literal waits (feed returned LITERAL): its size and kind. */
void imap_parser_literal_info(const struct imap_parser *p, uint64_t *size_r, bool *sync_r,
			      bool *binary_r);
/* Take the waiting literal; for a synchronising one the session now sends "+ ...". */
void imap_parser_literal_accept(struct imap_parser *p);
/*
 * Refuse the waiting literal (the session answers NO/BAD with the tag).
 * Synchronising: the client sends nothing more of this command. Non-
 * synchronising: the parser swallows its n bytes and the rest of the command.
 */
void imap_parser_literal_reject(struct imap_parser *p);

/*
 * Move the data of a literal argument of the current command into *out
 * (which must be unused or freed) without copying; the caller frees it with
 * buf_free(). The argument then reads as empty and is flagged STOLEN.
 * Returns false if arg is not a literal of the current command.
 */
bool imap_parser_literal_steal(struct imap_parser *p, const struct imap_arg *arg, struct buf *out);

/*
 * Accessors. Each returns false when the argument (which may be NULL) has
 * the wrong shape; the strings returned are owned by the parser.
 */

/* True for the EOL that ends an argument array, or for NULL. */
bool imap_arg_is_eol(const struct imap_arg *a);
/* True for NIL. */
bool imap_arg_is_nil(const struct imap_arg *a);
/* Any bare token (ATOM or NIL). */
bool imap_arg_atom(const struct imap_arg *a, const char **s_r);
/* A quoted string or literal without NUL (not literal8). */
bool imap_arg_string(const struct imap_arg *a, const char **s_r, size_t *len_r);
/* astring: an atom of ASTRING-CHARs (NIL too) or a string. */
bool imap_arg_astring(const struct imap_arg *a, const char **s_r, size_t *len_r);
/* nstring: NIL (then *s_r = NULL, *len_r = 0) or a string. */
bool imap_arg_nstring(const struct imap_arg *a, const char **s_r, size_t *len_r);
/* list-mailbox: an astring, or an atom with wildcards and ']'. */
bool imap_arg_list_mailbox(const struct imap_arg *a, const char **s_r, size_t *len_r);
/* Any literal, literal8 included, as data and length. */
bool imap_arg_literal(const struct imap_arg *a, const char **s_r, size_t *len_r);
/* A parenthesised list: its children (ended by EOL) and their count. */
bool imap_arg_list(const struct imap_arg *a, const struct imap_arg **list_r, size_t *count_r);
/* An atom of decimal digits that fits in 63 bits. */
bool imap_arg_number(const struct imap_arg *a, uint64_t *r);

/*
 * A fetch attribute split into its parts. For BODY.PEEK[1.HEADER]<0.100>:
 * name "BODY.PEEK", section "1.HEADER", partial 0 and 100. Pointers go into
 * the argument's string (not NUL-terminated).
 */
struct imap_fetch_att {
	const char *name;
	size_t name_len;
	bool has_section;
	const char *section; /* between '[' and ']' */
	size_t section_len;
	bool has_partial;
	uint64_t partial_offset; /* number64 */
	uint64_t partial_len;	 /* nz-number64 */
};
/*
 * Split an atom into name, [section] and <partial> (RFC 9051 fetch-att).
 * Checks the shape only; the section's contents are the caller's to
 * parse. 0 or -1 (not an atom, bad brackets, bad partial).
 */
int imap_fetch_att_split(const struct imap_arg *a, struct imap_fetch_att *r);

#endif
