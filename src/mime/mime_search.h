/*
 * mime_search — the header text IMAP SEARCH matches (FROM, TO, CC, BCC,
 * SUBJECT, HEADER), made once at delivery for the index and again from the
 * message when there is no cache; and the case mapping SEARCH uses.
 *
 * SECURITY: see mime_search.c.
 */
#ifndef SURAT_MIME_SEARCH_H
#define SURAT_MIME_SEARCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "mime/mime_header.h"

/* SEARCH looks at most at this much of a header block. */
#define MIME_SEARCH_HEADER_MAX (1024 * 1024)

/* How a field's value is matched. */
enum mime_search_form {
	MIME_SEARCH_PLAIN,   /* decoded value */
	MIME_SEARCH_ADDRESS, /* decoded value, then the normalised address list */
	MIME_SEARCH_SUBJECT, /* decoded, white space runs collapsed */
};

/* The fields the cache holds, in its order. */
enum mime_search_field {
	MIME_SEARCH_FROM,
	MIME_SEARCH_TO,
	MIME_SEARCH_CC,
	MIME_SEARCH_BCC,
	MIME_SEARCH_SUBJECT_FIELD,
	MIME_SEARCH_NFIELDS,
};

/*
 * Append s case-mapped for comparison (upper: to upper case, else lower):
 * ASCII plus the Latin, Greek and Cyrillic case pairs, a subset of
 * i;unicode-casemap; invalid UTF-8 bytes are copied. 0, or -1 when out is full.
 */
int mime_casemap(struct buf *out, const char *s, size_t n, int upper);
/* Append the RFC 2047-decoded, unfolded value of f. */
void mime_search_decoded(struct buf *out, const struct mime_field *f);
/* Append the case-mapped text SEARCH matches f's value against, in the given form. */
void mime_search_value(struct buf *out, const struct mime_field *f, enum mime_search_form form);

/* The day (since 1970-01-01, floored) of a Unix time. */
int64_t mime_search_day(int64_t t);
/* The day SENT* compare: of hdr's Date: field in its own zone; 0 without a valid one. */
int64_t mime_search_sent_day(const char *hdr, size_t len);

/*
 * Make the cache of a header block (hdr, len): every occurrence of each
 * cached field in its search form, then the day of the Date: header. Returns true with out filled, or false
 * with out empty when a value holds a separator byte (no cache: the
 * message is searched directly).
 */
bool mime_search_cache(struct buf *out, const char *hdr, size_t len);
/*
 * Match needle (case-mapped) against a field of a cache: 1 when an
 * occurrence of the field holds it (an empty needle: when the field is
 * there), 0 when not, -1 when the cache cannot tell (the needle holds a
 * separator, or the cache is malformed): search the message instead.
 */
int mime_search_cached(const char *cache, size_t len, enum mime_search_field field,
		       const char *needle, size_t nlen);
/*
 * The day SENTBEFORE/SENTON/SENTSINCE compare: of the Date: header in its
 * own zone, days since 1970-01-01; 0 when there is no valid Date:. 0 with
 * *day_r, or -1 when the cache does not hold it (made before it did).
 */
int mime_search_cached_day(const char *cache, size_t len, int64_t *day_r);

#endif
