/*
 * mime_text — the text of a message for the full-text index and for
 * previews: decoded headers and the UTF-8 text of every text part (its
 * Content-Transfer-Encoding and charset undone, HTML reduced to its words),
 * bounded in size.
 *
 * SECURITY: the message is untrusted; output is always valid UTF-8, cut at
 * the caller's limit on a character boundary; HTML is scanned, never
 * interpreted (no entity expansion beyond single characters).
 */
#ifndef SURAT_MIME_TEXT_H
#define SURAT_MIME_TEXT_H

#include <stddef.h>

struct buf;
struct mime_part;

/* Append the decoded UTF-8 text of one part's body (text/html reduced to
 * text). May reallocate. 0, or -1 when out is full. */
int mime_part_text(struct buf *out, const struct mime_part *p);

/* Append html[0..len) (UTF-8) as plain text: tags dropped (block tags give
 * line breaks), script/style/comments skipped, entities decoded, runs of
 * white space collapsed. 0 or -1. */
int mime_html_to_text(struct buf *out, const char *html, size_t len);

/*
 * Append the searchable header text of the message and of every message
 * it encapsulates: From, Sender, Reply-To, To, Cc, Bcc and Subject with
 * RFC 2047 words decoded, plus part file names and descriptions, one per
 * line. At most max bytes are appended (0: no limit but out's own).
 * Returns 0, or 1 when the text was cut.
 */
int mime_text_headers(struct buf *out, const struct mime_part *root, size_t max);

/* Append the text of every text part, parts separated by a line break;
 * at most max bytes (0: no limit but out's own). 0, or 1 when cut. */
int mime_text_body(struct buf *out, const struct mime_part *root, size_t max);

/* mime_text_headers() then mime_text_body() within one budget of max
 * bytes: what the full-text index stores. 0, or 1 when cut. */
int mime_text_extract(struct buf *out, const struct mime_part *root, size_t max);

#endif
