/*
 * imap_fetch — the FETCH command's data items (RFC 9051 §6.4.5, §7.5.2;
 * RFC 3501 for IMAP4rev1's RFC822* and \Recent; RFC 3516 BINARY; RFC 7162
 * MODSEQ and CHANGEDSINCE; RFC 8514 SAVEDATE).
 *
 * imap_fetch_parse() turns the attribute argument of FETCH / UID FETCH
 * (one attribute, a parenthesised list, or the ALL/FAST/FULL macros) and
 * the optional modifier list into a request; imap_fetch_message() writes
 * the untagged "* n FETCH (...)" line of one message for it. The session
 * owns everything around that: the message set, the \Seen update (the
 * request says whether one is due), EXPUNGEISSUED, VANISHED.
 *
 * The reply is Dovecot's, item for item, because clients and the later
 * interoperability tests compare against it: items that fit on the line
 * (UID, FLAGS, INTERNALDATE, RFC822.SIZE, MODSEQ, SAVEDATE) come first in
 * the order requested, then the others (ENVELOPE, BODY, BODYSTRUCTURE,
 * body sections, RFC822*) in the order requested; UID FETCH puts UID
 * first; duplicate simple items are sent once; a fetch that sets \Seen on
 * an unseen message reports FLAGS even when not asked; section names are
 * echoed upper-cased (header field lists rebuilt with single spaces);
 * message data always goes as a literal, NULs turned into 0x80 except in
 * BINARY, which uses literal8 when it decoded anything or holds NULs.
 *
 * SECURITY: the attribute list is peer input: every section and partial is
 * validated here and a bad one is a clean error for a BAD reply. Message
 * bytes are untrusted: they are only ever sent as counted literals, and
 * structures are built by the MIME module, which quotes what it writes.
 * Message files are mapped read-only; nothing here writes to the store.
 */
#ifndef SURAT_IMAP_FETCH_H
#define SURAT_IMAP_FETCH_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "imap/imap_parser.h"
#include "imap/imap_seqset.h"
#include "store/store.h"

/* Static error texts imap_fetch_message() returns (compare with strcmp). */
#define IMAP_FETCH_ERR_EXPUNGED "EXPUNGEISSUED"	 /* the message is gone: omit it */
#define IMAP_FETCH_ERR_UNKNOWN_CTE "UNKNOWN-CTE" /* BINARY: answer NO [UNKNOWN-CTE] */
#define IMAP_FETCH_ERR_TOOBIG "TOOBIG"		 /* out reached its maximum */
#define IMAP_FETCH_ERR_STORE "SERVERBUG"	 /* the store failed; see store_errstr() */

struct imap_fetch_req;

/*
 * Parse the FETCH attribute argument atts (an atom: one attribute or
 * ALL/FAST/FULL; or a list of atoms) and the optional modifier list
 * (NULL, EOL or a list: CHANGEDSINCE n, VANISHED) into a new request.
 * rev2: IMAP4rev2 session. Returns 0 with *req_r (free with
 * imap_fetch_req_free()), or -1 with *err_r a static text for a BAD reply.
 */
int imap_fetch_parse(const struct imap_arg *atts, const struct imap_arg *modifiers, int rev2,
		     struct imap_fetch_req **req_r, const char **err_r);
/* Free a request and set *req to NULL; NULL-safe. */
void imap_fetch_req_free(struct imap_fetch_req **req);

/* UID FETCH: UID goes first in every reply (once, even if also requested). */
void imap_fetch_req_set_uid(struct imap_fetch_req *req);
/* Nonzero if the request sets \Seen: a non-PEEK BODY[...] or BINARY[...], RFC822, RFC822.TEXT. */
int imap_fetch_req_sets_seen(const struct imap_fetch_req *req);
/* Nonzero if replies carry MODSEQ (asked for, or CHANGEDSINCE): CONDSTORE is in use. */
int imap_fetch_req_wants_modseq(const struct imap_fetch_req *req);
/* The CHANGEDSINCE modifier's value; 0 if none was given. */
uint64_t imap_fetch_req_changedsince(const struct imap_fetch_req *req);
/* Nonzero if the VANISHED modifier was given (with CHANGEDSINCE; the session checks QRESYNC). */
int imap_fetch_req_vanished(const struct imap_fetch_req *req);
/*
 * Nonzero if the request uses ENVELOPE, BODY or BODYSTRUCTURE: the session
 * may then prefetch them for the whole set with store_fetch_meta() and
 * pass each message's entry in imap_fetch_ctx.meta.
 */
int imap_fetch_req_wants_meta(const struct imap_fetch_req *req);
/*
 * Nonzero if every item comes from the mailbox snapshot (UID, FLAGS,
 * INTERNALDATE, RFC822.SIZE, MODSEQ): no store or file access, so the
 * reply can be made on the loop without a worker.
 */
int imap_fetch_req_view_only(const struct imap_fetch_req *req);

struct imap_fetch_ctx {
	struct store *st;
	const char *mailbox;
	uint32_t uidvalidity;
	int rev2;
	/* IMAP4rev1: the UIDs that are \Recent in this session (normalized), or NULL. */
	const struct imap_seqset *recent;
	/*
	 * Per message, set by the session before each call: this FETCH has just
	 * set \Seen on the message. FLAGS is then reported even if not asked.
	 */
	int seen_changed;
	/*
	 * The session has enabled CONDSTORE: a reply that reports a \Seen
	 * this FETCH set carries UID and MODSEQ too, asked for or not
	 * (RFC 7162 3.1).
	 */
	int condstore;
	/*
	 * Per message, optional: the message's cached texts from
	 * store_fetch_meta() (the same UID). NULL: looked up one by one.
	 */
	const struct store_msg_meta *meta;
	/*
	 * Per message, optional: the bytes its body sections (BODY[...],
	 * BINARY[...], BINARY.SIZE[...]) may send, decode or scan together;
	 * past it the reply fails with TOOBIG. 0: unbounded. A request can
	 * name a section thousands of times, each a copy of (or a pass over)
	 * the message; the other items are sent once and bounded by the
	 * message itself.
	 */
	uint64_t section_budget;
};

/*
 * Append "* <seq> FETCH (...)\r\n" for one message (msg from the session's
 * snapshot, with its flags already updated if \Seen was set) to out; may
 * reallocate out. Reads the message file and the cached meta through the
 * store as needed. Returns 0, or -1 with *err_r one of IMAP_FETCH_ERR_*
 * (out is then left as it was): EXPUNGED when the message vanished,
 * UNKNOWN_CTE when BINARY meets an encoding it cannot undo, TOOBIG when out
 * would pass its maximum or the sections their ctx->section_budget, STORE
 * on a store failure.
 */
int imap_fetch_message(struct buf *out, const struct imap_fetch_ctx *ctx,
		       const struct imap_fetch_req *req, uint32_t seq, const struct store_msg *msg,
		       const char **err_r);

/* A message file mapped read-only (files are immutable once stored). */
struct imap_msg_map {
	const char *data; /* NULL when len is 0 */
	size_t len;
	bool mapped; /* mmap(2)ed (a large message), else malloc'd */
};

/*
 * Map the message file of uid. Returns 1 with *m filled (release with
 * imap_msg_unmap()), 0 when there is no such message, -1 on a store or
 * system failure. Shared with imap_search and imap_sort.
 */
int imap_msg_map(struct store *st, const char *mailbox, uint32_t uidvalidity, uint32_t uid,
		 struct imap_msg_map *m);
/* Release a mapping from imap_msg_map(); the map is empty afterwards. */
void imap_msg_unmap(struct imap_msg_map *m);

/* Append an IMAP date-time "dd-Mon-yyyy hh:mm:ss +zzzz" (quotes not included). May reallocate. 0 or
 * -1. */
int imap_fetch_datetime(struct buf *out, int64_t t, int32_t tz_minutes);

#endif
