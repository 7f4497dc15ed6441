/*
 * imap_search — evaluates a parsed SEARCH program (imap_search_parse.h)
 * against a mailbox snapshot and formats the reply: "* SEARCH ..." with
 * CONDSTORE's "(MODSEQ n)" (RFC 9051 §6.4.4, RFC 7162 §3.1.5), or
 * "* ESEARCH ..." for RETURN options (RFC 4731, RFC 9051), keeping the
 * result for SEARCHRES "$" (RFC 5182).
 *
 * Cost model: flag, size, date, UID, sequence and MODSEQ keys read only
 * the snapshot. Header keys (FROM TO CC BCC SUBJECT HEADER SENT*) read
 * each candidate's header block. BODY and TEXT are exact substring scans
 * of the decoded text in mailboxes up to exact_max bytes; in larger ones
 * the store's full-text index picks the candidates, which are then
 * checked on their decoded text unless the term is one ASCII word; a
 * message whose text the index keeps only in part (past 1 MiB) is always
 * read and checked. AND
 * and OR evaluate their cheap operands first and stop early, so a costly
 * key is only evaluated for messages the cheap ones left in.
 *
 * Matching is case-insensitive substring on UTF-8 (ASCII plus the Latin,
 * Greek and Cyrillic case pairs, a subset of i;unicode-casemap), on
 * RFC 2047-decoded header values: address headers are matched in their
 * normalised form "Name <local@domain>", Subject with white space runs
 * collapsed, as Dovecot does. An empty string matches any message that
 * has the header (header keys) or every message (BODY, TEXT).
 *
 * SECURITY: the program is peer input but already validated by the
 * parser; message contents are untrusted and only ever searched, never
 * interpreted. The text searched per message is bounded by the message
 * size; full-text terms are quoted by the store.
 */
#ifndef SURAT_IMAP_SEARCH_H
#define SURAT_IMAP_SEARCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "imap/imap_search_parse.h"
#include "imap/imap_seqset.h"
#include "store/store.h"

/* Static error texts of imap_search_eval(). */
#define IMAP_SEARCH_ERR_BADCHARSET "BADCHARSET" /* answer NO [BADCHARSET (UTF-8 US-ASCII)] */
#define IMAP_SEARCH_ERR_STORE "SERVERBUG"	/* the store failed; see store_errstr() */

/* Mailboxes up to this many bytes get exact BODY/TEXT scans by default. */
#define IMAP_SEARCH_EXACT_MAX_DEFAULT (16u * 1024 * 1024)

struct imap_search_ctx {
	struct store *st;
	const char *mailbox;
	uint32_t uidvalidity;
	const struct store_mbox_view *view; /* snapshot, seq = index+1 */
	const struct imap_seqset *saved;    /* $ (SEARCHRES) as UIDs, normalized; or NULL */
	const struct imap_seqset
	    *recent;	    /* rev1: \Recent UIDs of this session (normalized), or NULL */
	uint64_t exact_max; /* BODY/TEXT scan exactly up to this mailbox size; 0: the default */
};

/*
 * Evaluate prog over every message of the view; set match[i] = 1 (else 0)
 * for the i-th message (seq i+1); match has view->count entries. Returns
 * 0, or -1 with *err_r IMAP_SEARCH_ERR_BADCHARSET (charset other than
 * UTF-8 / US-ASCII) or IMAP_SEARCH_ERR_STORE.
 */
int imap_search_eval(const struct imap_search_ctx *ctx, const struct imap_search_program *prog,
		     unsigned char *match, const char **err_r);

/*
 * Whether prog reads only the snapshot (flag, keyword, size, internal
 * date, UID, sequence, MODSEQ keys), so that it needs no store or file
 * access, and is cheap enough over nmsgs messages to run on the event loop.
 */
bool imap_search_view_only(const struct imap_search_program *prog, size_t nmsgs);

/*
 * Append the untagged reply for a search to out (may reallocate):
 * "* SEARCH 2 5 7\r\n" (sequence numbers, or UIDs when uid), plus
 * " (MODSEQ n)" before the CRLF when the program used MODSEQ and something
 * matched; or with RETURN options "* ESEARCH (TAG "a1") UID MIN 2 MAX 7
 * ALL 2,5,7 COUNT 3\r\n" (MIN/MAX/ALL only when something matched; nothing
 * at all for RETURN (SAVE)). If saved_r is not NULL it is emptied and gets
 * the UIDs SAVE keeps: all matches, or only the minimum and/or maximum when
 * SAVE comes with MIN/MAX and neither ALL nor COUNT. 0, or -1 when out
 * would pass its maximum (out left as it was).
 */
int imap_search_format(struct buf *out, const struct imap_search_ctx *ctx,
		       const struct imap_search_program *prog, const unsigned char *match,
		       const char *tag, int uid, struct imap_seqset *saved_r);

/*
 * Append the header block (with its empty line) of message uid to out,
 * reading only as much of the file as that takes (at most 1 MiB). May
 * reallocate. Returns 1, 0 if there is no such message, -1 on failure.
 * Shared with imap_sort.
 */
int imap_search_header(const struct imap_search_ctx *ctx, uint32_t uid, struct buf *out);

#endif
