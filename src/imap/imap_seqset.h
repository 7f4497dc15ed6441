/*
 * imap_seqset — IMAP sequence sets (RFC 9051 §9 sequence-set, RFC 5182 "$").
 *
 * A set is parsed as sent ("1,3:5,7:*"), with "*" kept symbolic, and then
 * resolved against the mailbox's largest number at use time, which gives a
 * sorted list of disjoint, non-adjacent ranges that can be searched,
 * counted, iterated and formatted back ("1:3,5"). A list of numbers in a
 * given order can also be written compactly (COPYUID, APPENDUID, ESEARCH,
 * VANISHED).
 *
 * SECURITY: the text is peer input. Numbers are nz-numbers
 * (1..4294967295), parsed overflow-safe; 0, leading zeros and anything else
 * are clean errors. Memory is bounded by the length of the text.
 */
#ifndef SURAT_IMAP_SEQSET_H
#define SURAT_IMAP_SEQSET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

/* In a parsed, unresolved set, this value stands for "*". */
#define IMAP_SEQ_STAR 0u

struct imap_seq_range {
	uint32_t lo, hi; /* lo <= hi once resolved */
};

struct imap_seqset {
	struct imap_seq_range *r;
	size_t count, cap;
	bool saved;	 /* the set held "$" (parsed sets only) */
	bool normalized; /* sorted, merged, no "*": ready for contains/iterate */
};

/* imap_seqset_parse() flags */
#define IMAP_SEQSET_ALLOW_SAVED 0x1u /* accept "$" (SEARCHRES) */

/* Start an empty, normalized set. */
void imap_seqset_init(struct imap_seqset *set);
/* Free the ranges; the set is empty and reusable afterwards. */
void imap_seqset_free(struct imap_seqset *set);
/* Empty the set, keeping its memory. */
void imap_seqset_clear(struct imap_seqset *set);

/*
 * Parse s[0..len) into set (emptied first), ranges as sent with
 * IMAP_SEQ_STAR for "*". 0, or -1 with *err_r set to a static message
 * (set is then empty).
 */
int imap_seqset_parse(struct imap_seqset *set, const char *s, size_t len, unsigned flags,
		      const char **err_r);

/*
 * Resolve a parsed set into out (emptied first; not in): "*" becomes max,
 * reversed ranges are turned round, "$" becomes the ranges of saved (NULL:
 * empty), and the result is normalized. With max 0 (empty mailbox) "*"
 * names nothing, so every range with a "*" end drops out. Per RFC 9051,
 * "559:*" includes max even when 559 > max. Numbers above max are kept:
 * checking them is the caller's business.
 */
void imap_seqset_resolve(const struct imap_seqset *in, uint32_t max,
			 const struct imap_seqset *saved, struct imap_seqset *out);

/* Add lo..hi (1 <= lo <= hi; a 0 is a bug and panics); marks the set unnormalized. */
void imap_seqset_add(struct imap_seqset *set, uint32_t lo, uint32_t hi);
/* Sort and merge the ranges. Panics if the set still holds "*". */
void imap_seqset_normalize(struct imap_seqset *set);

/* Whether n is in a normalized set (panics if not normalized). */
bool imap_seqset_contains(const struct imap_seqset *set, uint32_t n);
/* How many numbers a normalized set holds. */
uint64_t imap_seqset_count(const struct imap_seqset *set);
/* The largest number of a normalized set, 0 if empty. */
uint32_t imap_seqset_last(const struct imap_seqset *set);

struct imap_seqset_iter {
	size_t i;
	uint64_t next;
};
/* Start iterating a normalized set. */
void imap_seqset_iter_init(struct imap_seqset_iter *it);
/* The next number in ascending order into *n_r; false at the end. */
bool imap_seqset_iter_next(const struct imap_seqset *set, struct imap_seqset_iter *it,
			   uint32_t *n_r);

/*
 * Append the set in IMAP syntax ("1:3,5", "*" and "$" for parsed sets) to
 * out; an empty set appends nothing. May reallocate out. 0, or -1 when out
 * would pass its maximum (out is then left as it was).
 */
int imap_seqset_format(const struct imap_seqset *set, struct buf *out);
/*
 * Append nums[0..n) in their order, each ascending run of consecutive
 * numbers as "a:b" ("3,4,5,9,1" gives "3:5,9,1"), so that two lists written
 * this way correspond element by element (COPYUID). May reallocate out.
 * 0, or -1 when out would pass its maximum (left as it was) or a number is 0.
 */
int imap_seqset_format_list(const uint32_t *nums, size_t n, struct buf *out);

#endif
