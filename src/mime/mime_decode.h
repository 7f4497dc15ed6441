/*
 * mime_decode — content and header decoders: base64 and quoted-printable
 * (RFC 2045 §6.7, §6.8), charset conversion to UTF-8 with iconv(3), RFC 2047
 * encoded words, RFC 2231 extended parameter values, UTF-8 clean-up.
 *
 * All decoders are lenient, as mail in the wild requires: junk in base64 is
 * skipped, a bad '=' in quoted-printable is kept as it is, an unknown
 * charset is read as UTF-8, and every invalid or unconvertible sequence
 * becomes U+FFFD. The output is always valid UTF-8 where UTF-8 is promised.
 *
 * Every function appends to a struct buf (which may reallocate) and returns
 * 0, or -1 when the buffer reached its maximum (the output is then cut).
 *
 * SECURITY: inputs are untrusted bytes with explicit lengths; charset names
 * are length-checked before iconv_open(); output size is bounded by the
 * caller's buffer.
 */
#ifndef SURAT_MIME_DECODE_H
#define SURAT_MIME_DECODE_H

#include <stddef.h>
#include <stdint.h>

struct buf;
struct mime_param;

/* base64: bytes outside the alphabet are ignored, '=' ends a quantum. */
int mime_decode_base64(struct buf *out, const char *in, size_t len);

/* quoted-printable. header != 0 selects the RFC 2047 "Q" form ('_' is a
 * space, no line structure). Line breaks are kept as they were. */
int mime_decode_qp(struct buf *out, const char *in, size_t len, int header);

/* Append in[0..len) with invalid UTF-8 replaced by U+FFFD. */
int mime_utf8_sanitize(struct buf *out, const char *in, size_t len);

/*
 * Convert in[0..len) from charset (a MIME charset name; NULL or "" means
 * us-ascii) to UTF-8. us-ascii and UTF-8 are both read as UTF-8. An unknown
 * charset is also read as UTF-8 and reported by the return value 1.
 * Returns 0, 1, or -1 when out is full. A charset beyond the scope's first
 * 16 (see mime_charset_scope_begin()) is also read as UTF-8, and 1 returned.
 */
int mime_charset_to_utf8(struct buf *out, const char *charset, const char *in, size_t len);

/*
 * The decoding of one message: between these calls (on one thread; they
 * nest, the outermost pair counts) at most 16 distinct charsets are
 * converted, each converter opened at most once; text in any other charset
 * is read as UTF-8. The bound is per message so that a message is decoded
 * the same way every time. Each decoding function here is a scope of its
 * own when called outside one.
 */
void mime_charset_scope_begin(void);
void mime_charset_scope_end(void);

/* iconv_open() calls this thread has made (tests). */
uint64_t mime_iconv_opens(void);

/*
 * Decode the RFC 2047 encoded words in an (unfolded) header value to UTF-8.
 * Whitespace between adjacent encoded words is dropped, adjacent words in
 * the same charset are joined before conversion, malformed words stay as
 * they are, CR and LF are dropped, raw 8-bit text (RFC 6532) is kept when it
 * is valid UTF-8.
 */
int mime_decode_words(struct buf *out, const char *in, size_t len);

/* Decode an RFC 2231 extended value "charset'language'%XX..." to UTF-8. A
 * value without the two quotes is percent-decoded as UTF-8. */
int mime_decode_2231(struct buf *out, const char *value, size_t len);

/*
 * The display value of parameter name (case-insensitive) in params[0..n):
 * the RFC 2231 form name* wins when present, otherwise name's value with
 * any RFC 2047 words decoded. Returns a malloc'd UTF-8 string, or NULL when
 * there is no such parameter; the caller frees.
 */
char *mime_param_decoded(const struct mime_param *params, size_t n, const char *name);

#endif
