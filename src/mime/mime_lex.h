/*
 * mime_lex — the RFC 5322 / RFC 2045 lexical layer shared by the header,
 * address and Content-* parsers: CFWS skipping, atoms, dot-atoms, MIME
 * tokens, quoted strings, phrases, domains, the Content-Type value and
 * parameter lists with RFC 2231 continuations merged (RFC 2231 §3, §4).
 *
 * Every scanner works on [p, end) and returns 1 when more input follows
 * the item (after skipping CFWS), 0 when the input ended, -1 on a syntax
 * error. Their tolerance follows Dovecot's rfc822-parser closely, so that
 * ENVELOPE and BODYSTRUCTURE built on top agree with Dovecot byte for byte.
 *
 * SECURITY: all input is untrusted header text. Every read is bounded by
 * `end`; nothing is assumed NUL-terminated; nested comments are scanned
 * iteratively. A NUL inside a quoted string, comment or domain literal is
 * replaced with U+FFFD so the result is always a usable C string.
 */
#ifndef SURAT_MIME_LEX_H
#define SURAT_MIME_LEX_H

#include <stddef.h>

struct buf;

struct mime_lex {
	const unsigned char *p;
	const unsigned char *end;
	struct buf *comment; /* when non-NULL: receives the text of the last comment */
};

/* A Content-Type or Content-Disposition parameter; both strings malloc'd. */
struct mime_param {
	char *name;
	char *value;
};

/* Parameters kept per header; the rest are ignored (absurd input only). */
#define MIME_LEX_MAX_PARAMS 1024

/* Start scanning s[0..len). comment may be NULL. */
void mime_lex_init(struct mime_lex *lx, const void *s, size_t len, struct buf *comment);

/* Nonzero for RFC 5322 atext (8-bit bytes count as atext, RFC 6532). */
int mime_lex_is_atext(unsigned char c);

/* Skip WSP, CR, LF and comments: 1 if data remains, 0 at end, -1 on an
 * unterminated comment. */
int mime_lex_skip(struct mime_lex *lx);

/* The scanners below append what they read to out (which may reallocate)
 * and return 1 (more input), 0 (end of input) or -1 (error). */
int mime_lex_atom(struct mime_lex *lx, struct buf *out);
int mime_lex_dot_atom(struct mime_lex *lx, struct buf *out);
/* A MIME token (RFC 2045 §5.1); may be empty. */
int mime_lex_token(struct mime_lex *lx, struct buf *out);
/* lx->p must point at '"'. Folding CRLFs are removed, quoted-pairs undone. */
int mime_lex_quoted(struct mime_lex *lx, struct buf *out);
/* Words and dots joined with single spaces (RFC 5322 obs-phrase). */
int mime_lex_phrase(struct mime_lex *lx, struct buf *out);
/* lx->p must point at '@'; dot-atom or domain literal. */
int mime_lex_domain(struct mime_lex *lx, struct buf *out);
/* "type/subtype" into out. On -1 out holds what could be salvaged: the bare
 * type when the value ends after it, otherwise nothing. */
int mime_lex_content_type(struct mime_lex *lx, struct buf *out);

/*
 * Parse the ";name=value" list that follows a Content-Type or
 * Content-Disposition value. RFC 2231 sections are merged (name*0, name*1,
 * ... become name; when any section is extended the merged name is name*
 * and the value stays in charset'lang'%XX form). Returns the number of
 * parameters; *params_r is a malloc'd array (NULL when 0) that the caller
 * frees with mime_params_free().
 */
size_t mime_lex_params(struct mime_lex *lx, struct mime_param **params_r);
void mime_params_free(struct mime_param *params, size_t n);

#endif
