/*
 * mime_header — the RFC 5322 §2.2 header block: split into fields, unfold,
 * find a field by name, and find where the body starts.
 *
 * A header block is a run of lines ended by the first empty line (or the end
 * of the data: a message without an empty line has an empty body). A field
 * is a line plus the following lines that start with SP or HTAB. Lines end
 * in CRLF or bare LF. A line without a colon is still returned (has_colon
 * 0) so that callers can skip it; 8-bit bytes (RFC 6532) pass through.
 *
 * SECURITY: input is untrusted and not NUL-terminated; nothing here
 * allocates except the unfold/get helpers, whose output is bounded by the
 * input size.
 */
#ifndef SURAT_MIME_HEADER_H
#define SURAT_MIME_HEADER_H

#include <stddef.h>

struct buf;

struct mime_field {
	const char *name;  /* field name, trailing WSP before ':' removed */
	size_t name_len;   /* (a line without ':' is all name) */
	const char *value; /* raw value after ':', folding included, final line break excluded */
	size_t value_len;
	size_t off; /* offset of the field in the block */
	size_t len; /* bytes of the field, line breaks included */
	int has_colon;
};

/*
 * Step through the fields of hdr[0..len): set *pos to 0 first. Returns 1
 * with *f filled (pointers into hdr), or 0 at the empty line ending the
 * block or at the end of the data.
 */
int mime_header_next(const char *hdr, size_t len, size_t *pos, struct mime_field *f);

/* Length of the header block at msg[0..len), including the empty line that
 * ends it: the offset where the body starts (len when there is none). */
size_t mime_header_block_len(const char *msg, size_t len);

enum mime_unfold_flag {
	MIME_UNFOLD_NUL = 1 << 0,	  /* a NUL byte becomes U+FFFD */
	MIME_UNFOLD_KEEP_BREAKS = 1 << 1, /* keep the line breaks of folds */
};

/*
 * Append the value of f to out (may reallocate): whitespace after the
 * colon skipped (only one byte if the first line is all whitespace), the
 * line breaks of folds removed (RFC 5322 §2.2.3) unless
 * MIME_UNFOLD_KEEP_BREAKS, the whitespace that starts each continuation
 * line kept. KEEP_BREAKS gives the value form Dovecot bases ENVELOPE and
 * BODYSTRUCTURE on. flags: enum mime_unfold_flag. 0, or -1 when out is full.
 */
int mime_header_unfold(struct buf *out, const struct mime_field *f, unsigned int flags);

/* Find the first field called name (ASCII case-insensitive). 1 or 0. */
int mime_header_find(const char *hdr, size_t len, const char *name, struct mime_field *f);

/* The unfolded value of the first field called name, malloc'd and
 * NUL-terminated (NULs replaced by U+FFFD), or NULL; the caller frees. */
char *mime_header_get(const char *hdr, size_t len, const char *name);

/* The raw value (folding kept) of the first field called name, malloc'd,
 * or NULL; the caller frees. */
char *mime_header_get_raw(const char *hdr, size_t len, const char *name);

#endif
