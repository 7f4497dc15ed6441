/*
 * nameidx — see nameidx.h.
 */
#include "core/nameidx.h"
#include "core/util.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

void
nameidx_init(struct nameidx *x, size_t max)
{
	size_t size = 16;

	/* At most half full: a miss ends soon at a free slot. */
	while (size < 2 * max)
		size *= 2;
	x->slot = xcalloc(size, sizeof(*x->slot));
	x->mask = (uint32_t)(size - 1);
	util_random(&x->seed, sizeof(x->seed));
}

void
nameidx_free(struct nameidx *x)
{
	free(x->slot);
	x->slot = NULL;
}

long
nameidx_find(const struct nameidx *x, const char *const *names, const char *name, size_t len,
	     uint32_t *slot_r)
{
	uint32_t h = util_hash32_lower(x->seed, name, len) & x->mask;

	for (; x->slot[h] != 0; h = (h + 1) & x->mask) {
		const char *k = names[x->slot[h] - 1];
		if (strlen(k) == len && strncasecmp(k, name, len) == 0)
			return (long)x->slot[h] - 1;
	}
	*slot_r = h;
	return -1;
}

void
nameidx_put(struct nameidx *x, uint32_t slot, size_t pos)
{
	x->slot[slot] = (uint32_t)pos + 1;
}
