/*
 * mime_meta — see mime_meta.h. One mime_parse() gives everything the store
 * caches, so FETCH ENVELOPE/BODYSTRUCTURE and SEARCH's header keys never
 * reparse the message file; the full-text index's text is made later, in
 * the store's batches (mime_meta_text).
 *
 * SECURITY: bounded by the MIME parser's limits; the text given to the
 * full-text index is capped at MIME_META_TEXT_MAX.
 */
#include "mime/mime_meta.h"
#include "core/buf.h"
#include "mime/mime.h"
#include "mime/mime_address.h"
#include "mime/mime_date.h"
#include "mime/mime_decode.h"
#include "mime/mime_header.h"
#include "mime/mime_imap.h"
#include "mime/mime_search.h"
#include "mime/mime_text.h"

#include <stdlib.h>
#include <string.h>

#define MIME_META_TEXT_MAX (1024 * 1024)

/*
 * The SORT key of an address header (RFC 5256: the addr-mailbox of its
 * first address, as ENVELOPE gives it): "local@host" lowercased, where a
 * group's start counts as an address whose addr-mailbox is the group name
 * ("name@"), and missing parts are ENVELOPE's placeholders, exactly what
 * imap_sort reads from the header when there is no cache. NULL when the
 * header has no address.
 */
static char *
first_mailbox(const char *hdr, size_t hlen, const char *name)
{
	char *v = mime_header_get(hdr, hlen, name);
	if (v == NULL)
		return NULL;
	struct mime_address *list = mime_address_parse(v, strlen(v), 1);
	free(v);
	char *r = NULL;
	if (list != NULL && list->mailbox != NULL) {
		r = xasprintf("%s@%s", list->mailbox, list->host != NULL ? list->host : "");
		util_lower(r);
	}
	mime_address_free(&list);
	return r;
}

void
mime_meta_compute(const char *msg, size_t len, struct mime_meta *mm)
{
	struct buf b = BUF_INIT(0);

	memset(mm, 0, sizeof(*mm));
	mime_charset_scope_begin(); /* one message: its charsets bounded together */
	struct mime_part *root = mime_parse(msg, len);
	if (mime_envelope(&b, root) == 0)
		mm->envelope = buf_steal(&b);
	buf_free(&b);
	if (mime_bodystructure(&b, root, MIME_BS_EXTENDED) == 0)
		mm->bodystructure = buf_steal(&b);
	buf_free(&b);
	if (mime_bodystructure(&b, root, 0) == 0)
		mm->body = buf_steal(&b);
	buf_free(&b);

	size_t hlen = mime_header_block_len(msg, len);
	/* SEARCH reads at most this much of a header block; the cache agrees. */
	if (mime_search_cache(&b, msg, hlen < MIME_SEARCH_HEADER_MAX ? hlen : MIME_SEARCH_HEADER_MAX))
		mm->search_hdrs = buf_steal(&b);
	buf_free(&b);
	mm->from = first_mailbox(msg, hlen, "From");
	mm->to = first_mailbox(msg, hlen, "To");
	mm->cc = first_mailbox(msg, hlen, "Cc");
	char *date = mime_header_get(msg, hlen, "Date");
	if (date) {
		time_t t;
		int tz;
		if (mime_date_parse(date, strlen(date), &t, &tz) == 0)
			mm->meta.hdr_date = (int64_t)t;
		free(date);
	}
	char *subj = mime_header_get(msg, hlen, "Subject");
	if (subj) {
		/* XXX: RFC 5256 base-subject extraction belongs to IMAP SORT; for
		 * now the decoded subject is stored. */
		if (mime_decode_words(&b, subj, strlen(subj)) == 0)
			mm->subject = buf_steal(&b);
		buf_free(&b);
		free(subj);
	}
	mime_free(&root);
	mime_charset_scope_end();

	mm->meta.envelope = mm->envelope;
	mm->meta.bodystructure = mm->bodystructure;
	mm->meta.body = mm->body;
	mm->meta.hdr_from = mm->from;
	mm->meta.hdr_to = mm->to;
	mm->meta.hdr_cc = mm->cc;
	mm->meta.hdr_subject = mm->subject;
	mm->meta.search_hdrs = mm->search_hdrs;
}

int
mime_meta_text(const char *msg, size_t len, struct buf *hdr, struct buf *body)
{
	mime_charset_scope_begin();
	struct mime_part *root = mime_parse(msg, len);
	int cut = mime_text_headers(hdr, root, MIME_META_TEXT_MAX) != 0;

	cut |= mime_text_body(body, root, MIME_META_TEXT_MAX) != 0;
	mime_free(&root);
	mime_charset_scope_end();
	if (cut)
		(void)buf_puts(hdr, "\n" MIME_META_TEXT_CUT_WORD "\n");
	return cut;
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
	free(mm->search_hdrs);
	memset(mm, 0, sizeof(*mm));
}
