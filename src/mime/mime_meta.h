/*
 * mime_meta — what the store caches about a message at delivery or APPEND
 * time: ENVELOPE, BODYSTRUCTURE, BODY, the SORT keys and the header text of
 * SEARCH's header keys, all computed once from one MIME parse; and the
 * decoded text for the full-text index, which the store asks for later.
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
	char *search_hdrs;
};

/* Compute the metadata of msg[0..len) into mm. Free with mime_meta_free. */
void mime_meta_compute(const char *msg, size_t len, struct mime_meta *mm);

/*
 * A word the full-text index holds for a message whose text it keeps only
 * in part (mime_meta_text() cut it): SEARCH must not take the index's word
 * for such a message, and looks for it with this word to read it instead.
 */
#define MIME_META_TEXT_CUT_WORD "xsuratftscutx"

/*
 * The text the full-text index keeps of msg: decoded headers into hdr,
 * decoded body text into body (each capped at 1 MiB; when either is cut,
 * hdr ends with a line holding MIME_META_TEXT_CUT_WORD). A store_text_fn:
 * installed with store_set_text_fn() at start. 0, or 1 if a part was cut.
 */
int mime_meta_text(const char *msg, size_t len, struct buf *hdr, struct buf *body);
void mime_meta_free(struct mime_meta *mm);

#endif
