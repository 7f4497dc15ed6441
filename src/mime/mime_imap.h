/*
 * mime_imap — IMAP's views of a parsed message: ENVELOPE, BODY and
 * BODYSTRUCTURE (RFC 3501 §7.4.2, RFC 9051 §7.5.2), written exactly as
 * Dovecot 2.3 writes them: the same quoting (a string is a literal when it
 * holds CR, LF, 8-bit bytes or more than four '"'/'\\'), the same clean-up
 * of subjects and display names, the same defaults and the same type case
 * (type, subtype and parameter names as the message wrote them; "message"
 * "rfc822" in lower case). Kept differences are listed in the unit test.
 *
 * Each writer appends one parenthesised list, ready to follow "ENVELOPE ",
 * "BODY " or "BODYSTRUCTURE " in a FETCH response. They may reallocate out
 * and return 0, or -1 when out reached its maximum (the output is then cut
 * and must not be sent).
 *
 * SECURITY: everything written comes from the untrusted message; it is
 * quoted or sent as a literal, never raw, so a message cannot inject IMAP
 * syntax. Output size is bounded by the caller's buffer.
 */
#ifndef SURAT_MIME_IMAP_H
#define SURAT_MIME_IMAP_H

#include <stddef.h>

struct buf;
struct mime_part;

enum mime_bs_flag {
	MIME_BS_EXTENDED = 1 << 0, /* BODYSTRUCTURE (with extension data), else BODY */
	/* RFC 9051: message/global carries an envelope, body and line count
	 * like message/rfc822. Only for IMAP4rev2 sessions: IMAP4rev1 clients
	 * (and Dovecot 2.3) see it as a basic part. */
	MIME_BS_GLOBAL = 1 << 1,
};

/* Append the ENVELOPE of a message part (the root, or the child of a
 * message/rfc822 part). */
int mime_envelope(struct buf *out, const struct mime_part *msg);

/* Append BODY or BODYSTRUCTURE (flags: enum mime_bs_flag) of part p,
 * normally the root. */
int mime_bodystructure(struct buf *out, const struct mime_part *p, unsigned int flags);

/* Append s as an IMAP nstring the way Dovecot does: NIL for NULL, else a
 * quoted string or a literal "{n}\r\n...". */
int mime_imap_nstring(struct buf *out, const char *s);

/* Append s[0..n) cleaned up for display as Dovecot does for subjects and
 * names: TAB, CR and LF become spaces, runs of spaces collapse, leading
 * and trailing spaces go; quoted when nothing changed, else a literal. */
int mime_imap_human(struct buf *out, const char *s, size_t n);

#endif
