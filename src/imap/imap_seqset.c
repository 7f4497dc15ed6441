/*
 * imap_seqset — see imap_seqset.h. Ranges live in one growable array;
 * normalizing sorts them by start and merges overlapping or adjacent ones,
 * so lookups are a binary search and formatting is a single pass.
 *
 * SECURITY: the parser reads only s[0..len), rejects every number outside
 * 1..4294967295 before it is stored, and allocates at most one range per
 * two bytes of input.
 */
#include "imap/imap_seqset.h"

#include <stdlib.h>
#include <string.h>

#include "core/util.h"

void
imap_seqset_init(struct imap_seqset *set)
{
	memset(set, 0, sizeof(*set));
	set->normalized = true;
}

void
imap_seqset_free(struct imap_seqset *set)
{
	free(set->r);
	imap_seqset_init(set);
}

void
imap_seqset_clear(struct imap_seqset *set)
{
	set->count = 0;
	set->saved = false;
	set->normalized = true;
}

static void
seqset_push(struct imap_seqset *set, uint32_t lo, uint32_t hi)
{
	if (set->count == set->cap) {
		size_t cap = set->cap ? set->cap * 2 : 8;
		if (cap > SIZE_MAX / sizeof(*set->r))
			PANIC("sequence set too large");
		set->r = xrealloc(set->r, cap * sizeof(*set->r));
		set->cap = cap;
	}
	set->r[set->count].lo = lo;
	set->r[set->count].hi = hi;
	set->count++;
}

/* One seq-number at s[*i]: nz-number or "*". 0 or -1 (message in *err_r). */
static int
seqset_number(const char *s, size_t len, size_t *i, uint32_t *r, const char **err_r)
{
	if (*i < len && s[*i] == '*') {
		(*i)++;
		*r = IMAP_SEQ_STAR;
		return 0;
	}
	if (*i >= len || s[*i] < '0' || s[*i] > '9') {
		*err_r = "number expected in sequence set";
		return -1;
	}
	if (s[*i] == '0') {
		*err_r = "zero or leading zero in sequence set";
		return -1;
	}
	uint64_t v = 0;
	while (*i < len && s[*i] >= '0' && s[*i] <= '9') {
		v = v * 10 + (uint64_t)(s[*i] - '0');
		if (v > UINT32_MAX) {
			*err_r = "number out of range in sequence set";
			return -1;
		}
		(*i)++;
	}
	*r = (uint32_t)v;
	return 0;
}

int
imap_seqset_parse(struct imap_seqset *set, const char *s, size_t len, unsigned flags,
		  const char **err_r)
{
	size_t i = 0;

	imap_seqset_clear(set);
	set->normalized = false;
	if (len == 0) {
		*err_r = "empty sequence set";
		goto fail;
	}
	for (;;) {
		if (i < len && s[i] == '$') {
			if (!(flags & IMAP_SEQSET_ALLOW_SAVED)) {
				*err_r = "'$' not allowed here";
				goto fail;
			}
			set->saved = true;
			i++;
		} else {
			uint32_t lo, hi;
			if (seqset_number(s, len, &i, &lo, err_r) < 0)
				goto fail;
			hi = lo;
			if (i < len && s[i] == ':') {
				i++;
				if (seqset_number(s, len, &i, &hi, err_r) < 0)
					goto fail;
			}
			seqset_push(set, lo, hi);
		}
		if (i == len)
			break;
		if (s[i] != ',') {
			*err_r = "invalid character in sequence set";
			goto fail;
		}
		i++;
	}
	return 0;
fail:
	imap_seqset_clear(set);
	return -1;
}

static int
seqset_cmp(const void *a, const void *b)
{
	const struct imap_seq_range *x = a, *y = b;

	if (x->lo != y->lo)
		return x->lo < y->lo ? -1 : 1;
	if (x->hi != y->hi)
		return x->hi < y->hi ? -1 : 1;
	return 0;
}

void
imap_seqset_normalize(struct imap_seqset *set)
{
	size_t out = 0;

	if (set->count > 1)
		qsort(set->r, set->count, sizeof(*set->r), seqset_cmp);
	for (size_t i = 0; i < set->count; i++) {
		struct imap_seq_range r = set->r[i];
		if (r.lo == IMAP_SEQ_STAR || r.hi == IMAP_SEQ_STAR || r.lo > r.hi)
			PANIC("imap_seqset_normalize on an unresolved set");
		if (out > 0 && (uint64_t)set->r[out - 1].hi + 1 >= r.lo) {
			if (r.hi > set->r[out - 1].hi)
				set->r[out - 1].hi = r.hi;
			continue;
		}
		set->r[out++] = r;
	}
	set->count = out;
	set->saved = false;
	set->normalized = true;
}

void
imap_seqset_add(struct imap_seqset *set, uint32_t lo, uint32_t hi)
{
	if (lo == 0 || hi < lo)
		PANIC("imap_seqset_add(%u, %u)", lo, hi);
	seqset_push(set, lo, hi);
	set->normalized = false;
}

void
imap_seqset_resolve(const struct imap_seqset *in, uint32_t max, const struct imap_seqset *saved,
		    struct imap_seqset *out)
{
	imap_seqset_clear(out);
	for (size_t i = 0; i < in->count; i++) {
		uint32_t lo = in->r[i].lo == IMAP_SEQ_STAR ? max : in->r[i].lo;
		uint32_t hi = in->r[i].hi == IMAP_SEQ_STAR ? max : in->r[i].hi;
		/* In an empty mailbox no number is in use, so "*" names nothing. */
		if (lo == 0 || hi == 0)
			continue;
		if (lo > hi) {
			uint32_t t = lo;
			lo = hi;
			hi = t;
		}
		seqset_push(out, lo, hi);
	}
	if (in->saved && saved != NULL) {
		for (size_t i = 0; i < saved->count; i++)
			if (saved->r[i].lo != IMAP_SEQ_STAR && saved->r[i].hi != IMAP_SEQ_STAR &&
			    saved->r[i].lo <= saved->r[i].hi)
				seqset_push(out, saved->r[i].lo, saved->r[i].hi);
	}
	imap_seqset_normalize(out);
}

static void
seqset_check_normalized(const struct imap_seqset *set)
{
	if (!set->normalized)
		PANIC("sequence set used before imap_seqset_resolve/normalize");
}

bool
imap_seqset_contains(const struct imap_seqset *set, uint32_t n)
{
	size_t lo = 0, hi = set->count;

	seqset_check_normalized(set);
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (n < set->r[mid].lo)
			hi = mid;
		else if (n > set->r[mid].hi)
			lo = mid + 1;
		else
			return true;
	}
	return false;
}

uint64_t
imap_seqset_count(const struct imap_seqset *set)
{
	uint64_t n = 0;

	seqset_check_normalized(set);
	for (size_t i = 0; i < set->count; i++)
		n += (uint64_t)set->r[i].hi - set->r[i].lo + 1;
	return n;
}

uint32_t
imap_seqset_last(const struct imap_seqset *set)
{
	seqset_check_normalized(set);
	return set->count ? set->r[set->count - 1].hi : 0;
}

void
imap_seqset_iter_init(struct imap_seqset_iter *it)
{
	it->i = 0;
	it->next = 0;
}

bool
imap_seqset_iter_next(const struct imap_seqset *set, struct imap_seqset_iter *it, uint32_t *n_r)
{
	seqset_check_normalized(set);
	if (it->i >= set->count)
		return false;
	if (it->next < set->r[it->i].lo)
		it->next = set->r[it->i].lo;
	*n_r = (uint32_t)it->next;
	if (it->next >= set->r[it->i].hi)
		it->i++;
	it->next++;
	return true;
}

/* Append "n" or "*" for IMAP_SEQ_STAR. */
static int
seqset_put_number(struct buf *out, uint32_t n)
{
	if (n == IMAP_SEQ_STAR)
		return buf_putc(out, '*');
	return buf_printf(out, "%u", n);
}

static int
seqset_put_range(struct buf *out, bool comma, uint32_t lo, uint32_t hi)
{
	if (comma && buf_putc(out, ',') < 0)
		return -1;
	if (seqset_put_number(out, lo) < 0)
		return -1;
	if (lo == hi)
		return 0;
	if (buf_putc(out, ':') < 0)
		return -1;
	return seqset_put_number(out, hi);
}

int
imap_seqset_format(const struct imap_seqset *set, struct buf *out)
{
	size_t start = out->len;
	bool comma = false;

	for (size_t i = 0; i < set->count; i++) {
		if (seqset_put_range(out, comma, set->r[i].lo, set->r[i].hi) < 0)
			goto fail;
		comma = true;
	}
	if (set->saved) {
		if (comma && buf_putc(out, ',') < 0)
			goto fail;
		if (buf_putc(out, '$') < 0)
			goto fail;
	}
	return 0;
fail:
	buf_truncate(out, start);
	return -1;
}

int
imap_seqset_format_list(const uint32_t *nums, size_t n, struct buf *out)
{
	size_t start = out->len;
	size_t i = 0;

	while (i < n) {
		size_t j = i;
		if (nums[i] == 0)
			goto fail;
		while (j + 1 < n && nums[j] != UINT32_MAX && nums[j + 1] == nums[j] + 1)
			j++;
		if (seqset_put_range(out, i > 0, nums[i], nums[j]) < 0)
			goto fail;
		i = j + 1;
	}
	return 0;
fail:
	buf_truncate(out, start);
	return -1;
}
