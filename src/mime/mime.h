/*
 * mime — the MIME tree of a message held in memory (RFC 5322 + RFC 2045-2049).
 *
 * mime_parse() splits a complete message into parts: each part records the
 * byte ranges of its header block and body, IMAP's sizes (every bare LF
 * counted as CRLF) and line counts, and its Content-* fields. multipart
 * bodies are split at their boundaries (prefix match, innermost boundary
 * first, longest match wins; missing boundary or close-delimiter, preamble
 * and epilogue all tolerated); message/rfc822 bodies are parsed as messages
 * of their own. message/global (RFC 6532) stays a leaf, as in Dovecot 2.3
 * and for IMAP4rev1 clients; mime_parse_global() parses what it holds. Defaults follow RFC 2045
 * §5.2 (text/plain; charset=us-ascii) and RFC 2046 §5.1.5 (message/rfc822 under multipart/digest).
 * Content-* fields count only in a MIME entity (a Content-Type or MIME-Version field, or any part
 * of a multipart).
 *
 * The structure decisions are Dovecot's, so that BODYSTRUCTURE (mime_imap.h)
 * matches Dovecot byte for byte: boundaries are cut to 80 bytes, a part at
 * depth MIME_MAX_DEPTH-1 cannot contain others, and once MIME_MAX_PARTS
 * parts exist no more boundaries are recognised (the rest is opaque data of
 * the last part). A container kept as a leaf that way is flagged
 * MIME_PART_DEMOTED.
 *
 * The tree points into the message: keep the message buffer alive and
 * unchanged for as long as the tree is used.
 *
 * SECURITY: the message is untrusted. Parsing never fails and never asserts
 * on input; nesting, part count and boundary length are capped; all work is
 * linear in the message size (times the boundary stack, at most 100 x 80
 * bytes per line that starts with "--").
 */
#ifndef SURAT_MIME_H
#define SURAT_MIME_H

#include <stddef.h>
#include <stdint.h>

#include "mime/mime_lex.h"

struct buf;

#define MIME_MAX_DEPTH 100
#define MIME_MAX_PARTS 10000
#define MIME_BOUNDARY_MAX 80
#define MIME_GLOBAL_DEPTH_COST 10 /* depth of one message/global level */

enum mime_part_flag {
	MIME_PART_MULTIPART = 1 << 0, /* children are the body parts (possibly none) */
	MIME_PART_MESSAGE = 1 << 1,   /* one child: the encapsulated message */
	MIME_PART_GLOBAL = 1 << 2,  /* message/global (RFC 6532): a leaf, see mime_parse_global() */
	MIME_PART_IS_MIME = 1 << 3, /* its Content-* fields apply */
	MIME_PART_DIGEST = 1 << 4,  /* multipart/digest */
	MIME_PART_DEFAULT_RFC822 = 1 << 5, /* no Content-Type under multipart/digest */
	MIME_PART_DEMOTED = 1 << 6,	   /* a container type kept as a leaf (limits) */
	MIME_PART_HDR_EOF = 1 << 7,	   /* the header block had no empty line */
};

enum mime_cte {
	MIME_CTE_7BIT,
	MIME_CTE_8BIT,
	MIME_CTE_BINARY,
	MIME_CTE_BASE64,
	MIME_CTE_QP,
	MIME_CTE_UNKNOWN, /* x-uuencode and the like: cannot be decoded */
};

struct mime_part {
	struct mime_part *parent;
	struct mime_part *children; /* first child */
	struct mime_part *next;	    /* next sibling */
	unsigned int nchildren;
	unsigned int depth; /* the root is 0 */
	unsigned int flags; /* enum mime_part_flag */
	const char *msg;    /* the whole message; not owned */

	size_t hdr_off, hdr_len;	/* header block, its empty line included */
	size_t body_off, body_len;	/* body */
	uint64_t hdr_vsize, body_vsize; /* sizes as IMAP counts them (LF as CRLF) */
	uint64_t hdr_lines, body_lines; /* LF count */

	/* Content-* fields as written (the first of each kind, Dovecot's
	 * rules); NULL or 0 when absent or when the part is not MIME. Values
	 * are raw: RFC 2231 parameters stay merged but encoded, RFC 2047 words
	 * stay encoded (see mime_part_filename()). */
	char *type;    /* "" when the Content-Type value is unusable */
	char *subtype; /* "" when missing */
	struct mime_param *params;
	size_t nparams;
	char *encoding;
	char *id;
	char *description;
	char *md5;
	char *location;
	char *disposition;
	struct mime_param *disp_params;
	size_t ndisp_params;
	char **language;
	size_t nlanguage;

	/* On a root: the most parts its tree could have, and how many
	 * message/global parts it has (mime_parse_global() divides the
	 * first among them). */
	unsigned int part_budget;
	unsigned int nglobals;
	/* On a root from mime_parse_global(): the decoded content of a
	 * base64 or quoted-printable message/global that msg points into,
	 * owned by the tree (NULL when msg is the caller's message). */
	char *own;
};

/*
 * Parse msg[0..len). Never returns NULL: any input gives a tree (at worst a
 * single text/plain part). The caller frees it with mime_free(); the tree
 * points into msg, which must outlive it.
 */
struct mime_part *mime_parse(const char *msg, size_t len);

/*
 * Parse the message inside a message/global part p (a leaf in its tree).
 * Returns a tree whose root stands for that message (its depth continues
 * p's plus MIME_GLOBAL_DEPTH_COST, so the limits hold across it and a
 * chain of message/global parts is short), or NULL when p is not
 * message/global or is too deep. RFC 6532 3.5 lets message/global have
 * any content-transfer-encoding: a base64 or quoted-printable body is
 * decoded first, and the tree then points into its own copy (root->own);
 * otherwise it points into p->msg. Free it with mime_free() before the
 * message goes.
 */
struct mime_part *mime_parse_global(const struct mime_part *p);

/* Free a tree from mime_parse() and set *root to NULL. NULL is fine. */
void mime_free(struct mime_part **root);

/* Number of parts in the tree under (and including) p. */
size_t mime_part_count(const struct mime_part *p);

/* Nonzero if p's effective Content-Type is type/subtype (ASCII case-
 * insensitive; subtype NULL matches any). Defaults apply: no Content-Type is
 * text/plain, or message/rfc822 under multipart/digest. */
int mime_part_is(const struct mime_part *p, const char *type, const char *subtype);

/* Raw value of Content-Type parameter name, or NULL. Points into p. */
const char *mime_part_param(const struct mime_part *p, const char *name);

/* The Content-Transfer-Encoding as an enum (7bit when absent). */
enum mime_cte mime_part_cte(const struct mime_part *p);

/* The decoded UTF-8 file name (Content-Disposition filename, else
 * Content-Type name; RFC 2231 and 2047 decoded), malloc'd, or NULL. */
char *mime_part_filename(const struct mime_part *p);

/*
 * The first header field called name in p's header block, unfolded and
 * NUL-terminated (malloc'd, caller frees), or NULL. For a message/rfc822
 * part this is its MIME header; the encapsulated message is p->children.
 */
char *mime_part_header(const struct mime_part *p, const char *name);

/*
 * Append p's body decoded from its Content-Transfer-Encoding (base64 and
 * quoted-printable decoded, others as they are): the content of IMAP's
 * FETCH BINARY[...] (RFC 3516). Returns 0, -1 when out is full, or -2 when
 * the encoding is unknown (IMAP answers [UNKNOWN-CTE]).
 */
int mime_part_decode(struct buf *out, const struct mime_part *p);

/* The size mime_part_decode() would produce (BINARY.SIZE), or -1 for an
 * unknown encoding. Decodes to count, in bounded steps. */
int64_t mime_part_decoded_size(const struct mime_part *p);

/*
 * Append bytes converting every bare LF to CRLF (IMAP sends CRLF; sizes in
 * this module already count that way). May reallocate. 0 or -1.
 */
int mime_crlf_append(struct buf *out, const char *s, size_t n);

enum mime_section_kind {
	MIME_SECTION_PART,	 /* BODY[] or BODY[1.2]: the message or the part's body */
	MIME_SECTION_HEADER,	 /* [HEADER], [1.HEADER] */
	MIME_SECTION_TEXT,	 /* [TEXT], [1.TEXT] */
	MIME_SECTION_MIME,	 /* [1.MIME] */
	MIME_SECTION_FIELDS,	 /* [HEADER.FIELDS (a b)] */
	MIME_SECTION_FIELDS_NOT, /* [HEADER.FIELDS.NOT (a b)] */
};

struct mime_section {
	const struct mime_part *part; /* the part the section is taken from */
	enum mime_section_kind kind;
	size_t off, len; /* byte range in the message; for FIELDS*: the header block */
	char **fields;	 /* FIELDS*: the header names, malloc'd */
	size_t nfields;
};

/*
 * Resolve an IMAP section-spec (RFC 3501 §6.4.5, the text between the
 * brackets): "", "HEADER", "TEXT", "HEADER.FIELDS (From To)",
 * "HEADER.FIELDS.NOT (...)", "1.2", "1.2.HEADER", "1.2.TEXT", "3.MIME"...
 * Part numbers follow RFC 3501: part 1 of a non-multipart message is its
 * body, and numbers after a message/rfc822 part go into the encapsulated
 * message. Returns 1 with *r filled, 0 when the spec is valid but names no
 * part (IMAP answers with an empty string), -1 on a malformed spec. Free
 * *r with mime_section_free() after 1.
 */
int mime_section_find(const struct mime_part *root, const char *spec, struct mime_section *r);
void mime_section_free(struct mime_section *s);

/*
 * Append the bytes of a resolved section. For FIELDS / FIELDS_NOT these are
 * the matching (non-matching) header fields in message order followed by an
 * empty line. With crlf, bare LFs are sent as CRLF. 0, or -1 when out is full.
 */
int mime_section_fetch(struct buf *out, const struct mime_section *s, int crlf);

#endif
