/*
 * imap_sort — SORT and THREAD (RFC 5256), with DISPLAYFROM/DISPLAYTO
 * (RFC 5957): orders or threads the messages a SEARCH program matched
 * (imap_search_eval()) and writes the untagged reply.
 *
 * SORT keys: ARRIVAL (internal date), DATE (Date: header in UTC, the
 * internal date when it has none), SIZE, FROM/TO/CC (the local part of the
 * first address), SUBJECT (the base subject of §2.1), DISPLAYFROM and
 * DISPLAYTO (the decoded display name of the first address, else its
 * address), each optionally REVERSE. Strings compare after upper-case
 * mapping (Dovecot's titlecase); messages equal on every key keep mailbox
 * order. Keys come from the store's sort fields where it has them and
 * from the message header otherwise.
 *
 * THREAD: REFERENCES (§3, with every step of the algorithm: links from
 * References or In-Reply-To, dummy pruning, subject merging, sent-date
 * ordering) and ORDEREDSUBJECT. The reply is written as Dovecot writes it.
 *
 * SECURITY: criteria are peer input and validated; message headers are
 * untrusted and only parsed for IDs, addresses, subjects and dates. Link
 * creation never makes a loop; work is bounded by the number of messages
 * and the size of their headers.
 */
#ifndef SURAT_IMAP_SORT_H
#define SURAT_IMAP_SORT_H

#include <stdint.h>

#include "core/buf.h"
#include "imap/imap_parser.h"
#include "imap/imap_search.h"

/*
 * SORT: criteria is the parenthesised criteria list (or its first element,
 * the list ending with EOL); match comes from imap_search_eval(). Appends
 * "* SORT 3 1 2\r\n" (sequence numbers, or UIDs when uid) to out; may
 * reallocate. Returns 0, or -1 with *err_r a static text: a BAD reason for
 * bad criteria, or IMAP_SEARCH_ERR_STORE, or "TOOBIG" when out is full
 * (out is then left as it was).
 */
int imap_sort(struct buf *out, const struct imap_search_ctx *ctx, const struct imap_arg *criteria,
	      const unsigned char *match, int uid, const char **err_r);

/*
 * THREAD with algorithm "REFERENCES" or "ORDEREDSUBJECT" (any case) over the
 * matched messages: appends "* THREAD (2)(3 6 (4 23)(44 7 96))\r\n" (just
 * "* THREAD \r\n" when nothing matched, as Dovecot). Returns 0, or -1 with
 * *err_r a static text (unknown algorithm: a BAD reason).
 */
int imap_thread(struct buf *out, const struct imap_search_ctx *ctx, const char *algorithm,
		const unsigned char *match, int uid, const char **err_r);

/*
 * The RFC 5256 §2.1 base subject of a subject already decoded to UTF-8:
 * white space runs made single spaces, "(fwd)" trailers, "Re:"/"Fw:"/"Fwd:"
 * leaders with their "[blob]"s, lone leading "[blob]"s and "[fwd: ...]"
 * wrappers removed until none is left. Case is kept. Returns a malloc'd
 * string the caller frees ("" for NULL).
 */
char *imap_base_subject(const char *subject);

#endif
