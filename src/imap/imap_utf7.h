/*
 * imap_utf7 — modified UTF-7 mailbox names (RFC 3501 §5.1.3) for IMAP4rev1
 * clients, and a strict UTF-8 check for the rev2/UTF8=ACCEPT side, which
 * uses UTF-8 names directly.
 *
 * Encoding is total for valid UTF-8. Decoding accepts only the canonical
 * form an encoder produces, so decode(encode(x)) == x and
 * encode(decode(y)) == y: no printable ASCII inside a shift, "&" only as
 * "&-", no empty or adjacent shifts, no leftover or non-zero padding bits,
 * no unpaired surrogates, no U+0000, and only printable ASCII outside
 * shifts.
 *
 * SECURITY: input is peer-supplied; both directions read only s[0..len)
 * and write only through the bounded struct buf. A name that passes
 * decoding has exactly one spelling, so two different wire names can never
 * reach the same mailbox.
 */
#ifndef SURAT_IMAP_UTF7_H
#define SURAT_IMAP_UTF7_H

#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"

/*
 * Append the modified UTF-7 form of UTF-8 s[0..len) to out. May reallocate
 * out. 0, or -1 (out left as it was) if s is not valid UTF-8, holds U+0000,
 * or out would pass its maximum.
 */
int imap_utf7_encode(const char *s, size_t len, struct buf *out);
/*
 * Append the UTF-8 form of modified UTF-7 s[0..len) to out. May reallocate
 * out. 0, or -1 (out left as it was) if s is not canonical modified UTF-7
 * or out would pass its maximum.
 */
int imap_utf7_decode(const char *s, size_t len, struct buf *out);
/* Whether s[0..len) is well-formed UTF-8 (no overlongs, surrogates, > U+10FFFF). */
bool imap_utf7_utf8_valid(const char *s, size_t len);

#endif
