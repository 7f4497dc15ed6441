/*
 * mime_meta — what the store caches about a message at delivery or APPEND
 * time: ENVELOPE, BODYSTRUCTURE, BODY, the SORT keys, the header text of
 * SEARCH's header keys and the decoded text for full-text search, all
 * computed once from one MIME parse.
 *
 * SECURITY: the message is untrusted; the MIME parser bounds everything.
 */
#ifndef SURAT_MIME_META_H
#define SURAT_MIME_META_H

#include <stddef.h>

#include "store/store.h"

struct mime_meta {
	struct store_meta meta;	/* points into the strings below */
	char *envelope;
	char *bodystructure;
	char *body;
	char *from, *subject, *to, *cc;
	char *fts_headers, *fts_body;
	char *search_hdrs;
};

/* Compute the metadata of msg[0..len) into mm. Free with mime_meta_free. */
void mime_meta_compute(const char *msg, size_t len, struct mime_meta *mm);
void mime_meta_free(struct mime_meta *mm);

#endif
