/*
 * nameidx — where a name is in an array of names, by a seeded hash.
 *
 * The names stay in the caller's array (NUL-terminated, compared without
 * regard to ASCII case); the index holds their positions in an
 * open-addressing table sized at init for the most it will hold, so it
 * never fills. Seeded per index: the names are peer text (IMAP keywords,
 * header field names), and a fixed hash would let a peer pick names that
 * all collide.
 */
#ifndef SURAT_CORE_NAMEIDX_H
#define SURAT_CORE_NAMEIDX_H

#include <stddef.h>
#include <stdint.h>

struct nameidx {
	uint32_t *slot; /* position + 1; 0 a free slot */
	uint32_t mask;
	uint32_t seed;
};

/* An index for at most max names. */
void nameidx_init(struct nameidx *x, size_t max);
void nameidx_free(struct nameidx *x);
/*
 * The position of name[0..len) in names, or -1 when it is not there; then
 * *slot_r is where nameidx_put() puts it.
 */
long nameidx_find(const struct nameidx *x, const char *const *names, const char *name, size_t len,
		  uint32_t *slot_r);
/* Record that the name nameidx_find() missed is at pos. */
void nameidx_put(struct nameidx *x, uint32_t slot, size_t pos);

#endif
