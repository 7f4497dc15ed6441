/*
 * mime_meta — see mime_meta.h.
 *
 * SECURITY: bounded by the MIME parser's limits.
 */
#include "mime/mime_meta.h"

#include <stdlib.h>
#include <string.h>

void
mime_meta_compute(const char *msg, size_t len, struct mime_meta *mm)
{
	/* XXX: the MIME parser lands in this same change series; until it is
	 * wired here the store computes nothing in advance. */
	memset(mm, 0, sizeof(*mm));
	(void)msg;
	(void)len;
}

void
mime_meta_free(struct mime_meta *mm)
{
	free(mm->envelope);
	free(mm->bodystructure);
	free(mm->body);
	free(mm->from);
	free(mm->subject);
	free(mm->to);
	free(mm->cc);
	free(mm->fts_headers);
	free(mm->fts_body);
	memset(mm, 0, sizeof(*mm));
}
