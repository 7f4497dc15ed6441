/*
 * store — the mailbox store of one account: the only way local delivery,
 * IMAP, POP3 and webmail reach mailboxes. Protocol code never sees SQL, so
 * the SQLite backend can later be joined by another (PostgreSQL + objects)
 * behind the same calls.
 *
 * Layout: <data_dir>/mail/<domain>/<localpart>/ holds index.db (SQLite, WAL,
 * synchronous=NORMAL plus a group-committed flush after every write commit
 * (core/fsbarrier): a call that changed something has made it durable when
 * it returns) and the message files msg/<2 hex>/<name>, immutable once
 * written. A message file is on stable storage before the index row that
 * names it commits; a crash in between leaves an orphan file that
 * store_open() removes (its temp marker names it), never a row without its
 * file. A file freed by an expunge is marked the same way until it is
 * unlinked, so a crash after the commit leaves no orphan either. Only a
 * file whose marker was lost as well (a crash that kept its msg/ name but
 * not its tmp/ one, a failed marker link at an expunge) needs the full
 * walk of store_sweep() (`surat mailbox sweep`).
 *
 * Model (RFC 9051, RFC 7162): mailboxes have UIDVALIDITY, UIDNEXT and
 * HIGHESTMODSEQ; every change (append, flag change, expunge) takes the next
 * mod-sequence of its mailbox, one per operation, and stamps the messages it
 * changed. Expunged UIDs are remembered with their mod-sequence for QRESYNC.
 * UIDs are never reused within a UIDVALIDITY. IMAP4rev1's \Recent is a
 * watermark UID per mailbox (store_mailbox_claim_recent).
 *
 * Threads: a handle is used by one thread at a time; any number of handles
 * on the same account may work at once from threads and processes (SQLite
 * locks with a busy timeout). Every call is one transaction.
 *
 * Errors: calls return -1 and leave a code (store_errcode) and a message
 * (store_errstr) in the handle; the code maps onto IMAP response codes.
 *
 * Mailbox names are UTF-8 with '/' as hierarchy delimiter; "INBOX" in any
 * case (also as first level of a hierarchy) means INBOX. Mailbox arguments
 * named "uidvalidity" take the UIDVALIDITY the caller selected: when it is
 * nonzero and the mailbox has another one (deleted and re-created, or
 * INBOX renamed), the call fails with STORE_ERR_CHANGED instead of touching
 * other messages under the same UIDs.
 *
 * SECURITY: account and mailbox names are re-validated here (no '/', "..",
 * control characters or invalid UTF-8 reach a path or the database) even
 * though callers validated them. Message bytes and cached texts are stored
 * as given and never interpreted. Full-text terms are quoted before they
 * reach FTS5, so no query syntax can be injected.
 */
#ifndef SURAT_STORE_H
#define SURAT_STORE_H

#include <stddef.h>
#include <stdint.h>

struct buf;
struct store;

/* System flags, a bitmask in messages (RFC 9051 §2.3.2; \Recent is gone in rev2). */
enum {
	STORE_F_SEEN = 1u << 0,
	STORE_F_ANSWERED = 1u << 1,
	STORE_F_FLAGGED = 1u << 2,
	STORE_F_DELETED = 1u << 3,
	STORE_F_DRAFT = 1u << 4,
	STORE_F_ALL = 0x1fu,
};

/* Special-use attributes (RFC 6154), a bitmask. */
enum {
	STORE_USE_ALL = 1u << 0,
	STORE_USE_ARCHIVE = 1u << 1,
	STORE_USE_DRAFTS = 1u << 2,
	STORE_USE_FLAGGED = 1u << 3,
	STORE_USE_JUNK = 1u << 4,
	STORE_USE_SENT = 1u << 5,
	STORE_USE_TRASH = 1u << 6,
	STORE_USE_MASK = 0x7fu,
};

/* Mailbox attributes in a listing. No HASCHILDREN means \HasNoChildren. */
enum {
	STORE_MBOX_NOSELECT = 1u << 0,	  /* \Noselect: a name kept for its inferiors */
	STORE_MBOX_NONEXISTENT = 1u << 1, /* only subscribed; implies NOSELECT */
	STORE_MBOX_SUBSCRIBED = 1u << 2,
	STORE_MBOX_HASCHILDREN = 1u << 3,
};

enum store_err {
	STORE_OK = 0,
	STORE_ERR_INTERNAL,    /* I/O or database failure (SERVERBUG) */
	STORE_ERR_BUSY,	       /* locked by others past the timeout (INUSE) */
	STORE_ERR_INVALID,     /* bad name, keyword or argument (CANNOT) */
	STORE_ERR_NOMAILBOX,   /* no such mailbox (NONEXISTENT, TRYCREATE) */
	STORE_ERR_EXISTS,      /* mailbox already exists (ALREADYEXISTS) */
	STORE_ERR_NOSELECT,    /* the mailbox is \Noselect */
	STORE_ERR_HASCHILDREN, /* \Noselect with inferiors cannot be deleted */
	STORE_ERR_CANNOT,      /* not allowed (delete INBOX, rename under itself) */
	STORE_ERR_CHANGED,     /* UIDVALIDITY differs from the one given */
	STORE_ERR_NOMSG,       /* no such message (expunged) */
	STORE_ERR_LIMIT,       /* a store limit: UIDs, keywords, mailboxes (LIMIT) */
	STORE_ERR_NOSPACE,     /* the disk is full (ENOSPC, EDQUOT, SQLITE_FULL) */
	STORE_ERR_OVERQUOTA,   /* the account's quota has no room (OVERQUOTA) */
};

/* Limits. */
#define STORE_NAME_MAX 1000   /* bytes of a mailbox name */
#define STORE_KEYWORD_MAX 100 /* bytes of one keyword */
#define STORE_KEYWORDS_MAX 64 /* keywords on one message */
#define STORE_UIDL_MAX 24     /* store_uidl() output, NUL included */
/*
 * Mailboxes (\Noselect ones too) and subscriptions of one account. LIST
 * loads them all and works on the loop every IMAP session shares, so their
 * number bounds what one LIST costs there; a subscription needs no mailbox,
 * so it needs a cap of its own. Dovecot has no default cap; Stalwart and
 * hosted services have one. Past it: STORE_ERR_LIMIT.
 */
#define STORE_MAILBOXES_MAX 10000
#define STORE_SUBSCRIPTIONS_MAX 10000

/* An inclusive UID range, lo <= hi; {n, n} is one UID, {1, UINT32_MAX} all. */
struct store_range {
	uint32_t lo, hi;
};

/*
 * What the caller computed from the message with the MIME module. Every
 * pointer may be NULL (stored as absent). Used by deliver and append.
 */
struct store_meta {
	const char *envelope;	   /* IMAP ENVELOPE, parenthesised */
	const char *bodystructure; /* BODYSTRUCTURE (extensible form) */
	const char *body;	   /* BODY (non-extensible form) */
	int64_t hdr_date;	   /* Date: as Unix time; 0 when absent/invalid */
	const char *hdr_from;	   /* SORT keys as RFC 5256 wants them compared */
	const char *hdr_subject;   /* (base subject, first mailbox, ...) */
	const char *hdr_to;
	const char *hdr_cc;
	const char *search_hdrs; /* header text of SEARCH FROM/TO/CC/BCC/SUBJECT (mime_search) */
	int64_t internal_date;	 /* Unix time; 0: now */
	int32_t internal_tz;	 /* minutes east of UTC of internal_date */
	uint32_t flags;		 /* STORE_F_* */
	const char *const *keywords;
	size_t nkeywords;
};

/* One message as a mailbox snapshot shows it. */
struct store_msg {
	uint32_t uid;
	uint32_t flags; /* STORE_F_* */
	uint64_t modseq;
	uint64_t size; /* octets of the stored file (CRLF) = RFC822.SIZE */
	int64_t internal_date;
	int32_t internal_tz;
	int noeol;	/* the file is not empty and does not end in LF (store_pop3_size) */
	char *keywords; /* NULL or space-separated keywords; owned by the array */
};

/* A consistent snapshot of a mailbox, messages in UID order. */
struct store_mbox_view {
	uint32_t uidvalidity;
	uint32_t uidnext;
	uint32_t recent_uid; /* the \Recent watermark: UIDs from it up are \Recent */
	uint64_t highestmodseq;
	unsigned special_use; /* STORE_USE_* */
	size_t count;
	struct store_msg *msgs;
};

/* What changed in a mailbox after a given mod-sequence. */
struct store_changes {
	uint32_t uidvalidity;
	uint32_t uidnext;
	uint32_t recent_uid; /* the \Recent watermark */
	uint64_t highestmodseq;
	size_t nmsgs;
	struct store_msg *msgs; /* new or changed messages, UID order */
	size_t nexpunged;
	uint32_t *expunged; /* UIDs expunged since, ascending */
};

/* One entry of a mailbox listing. */
struct store_mbox_info {
	char *name;
	unsigned attrs;	      /* STORE_MBOX_* */
	unsigned special_use; /* STORE_USE_* */
};

/* STATUS items (RFC 9051 §6.3.11, RFC 7162 HIGHESTMODSEQ). */
struct store_status {
	uint32_t messages;
	uint32_t unseen;
	uint32_t deleted;
	uint32_t uidnext;
	uint32_t uidvalidity;
	uint64_t size;
	uint64_t highestmodseq;
	unsigned special_use;
	uint32_t recent; /* messages at or above the \Recent watermark */
};

enum store_flag_op { STORE_FLAGS_SET, STORE_FLAGS_ADD, STORE_FLAGS_REMOVE };

/* A STORE request: the operation, its flags and keywords, UNCHANGEDSINCE. */
struct store_flag_change {
	enum store_flag_op op;
	uint32_t flags; /* STORE_F_* */
	const char *const *keywords;
	size_t nkeywords;
	int unchangedsince_set; /* nonzero: apply unchangedsince (0 is valid) */
	uint64_t unchangedsince;
};

/* The outcome of store_flags(). */
struct store_flag_result {
	uint64_t modseq; /* the mod-sequence of this change; 0 if none */
	size_t nchanged;
	struct store_msg *changed; /* messages whose flags changed, new state */
	size_t nfailed;
	uint32_t *failed; /* UIDs that failed UNCHANGEDSINCE (MODIFIED) */
};

/* The outcome of store_copy(): src_uids[i] became dst_uids[i] (COPYUID). */
struct store_copy_result {
	uint32_t uidvalidity; /* of the destination */
	size_t n;
	uint32_t *src_uids;
	uint32_t *dst_uids;
};

/* Cached texts of one message. */
struct store_msg_meta {
	uint32_t uid;
	uint64_t size;
	char *envelope;	     /* NULL when not cached */
	char *bodystructure; /* NULL when not cached */
	char *body;	     /* NULL when not cached */
};

/* SORT keys of one message; strings are "" when absent. */
struct store_sort_rec {
	uint32_t uid;
	int64_t date; /* Date: header; 0 when absent */
	char *from;
	char *subject;
	char *to;
	char *cc;
};

/* The cached SEARCH header text of one message (store_meta.search_hdrs). */
struct store_search_rec {
	uint32_t uid;
	char *hdrs; /* NULL when the message has none (stored before the cache existed) */
	size_t len;
};

/* Where store_fts_search() looks. */
enum store_fts_scope {
	STORE_FTS_BODY, /* SEARCH BODY: the body text only */
	STORE_FTS_TEXT, /* SEARCH TEXT: headers and body */
};

/* store_expunge() flag: remove the given UIDs even without \Deleted (POP3 QUIT). */
#define STORE_EXPUNGE_FORCE 1u

/*
 * Called after every committed change, from the thread that made it, with
 * the account and the mailbox that changed (both valid only during the call).
 */
typedef void (*store_notify_fn)(const char *account, const char *mailbox, void *arg);

/* --- handles --- */

/*
 * Open the store of account ("local@domain", ASCII letters are lowercased),
 * creating its directory, index and default mailboxes (INBOX, Sent, Drafts,
 * Trash, Junk, Archive, all subscribed) if missing; idempotent and safe
 * against concurrent openers. Removes temp files left by crashed writers.
 * Returns a handle the caller frees with store_close(), or NULL with a
 * message appended to err (may be NULL).
 */
struct store *store_open(const char *data_dir, const char *account, struct buf *err);
/* Close and free the handle; sets *st to NULL. NULL-safe. */
void store_close(struct store **st);
/* The handle's account name; owned by the handle. */
const char *store_account(const struct store *st);
/* The account's directory (data_dir/mail/DOMAIN/LOCAL); owned by the handle. */
const char *store_root(const struct store *st);
/* The last failure's code; STORE_OK after a success. */
enum store_err store_errcode(const struct store *st);
/* The last failure's message; owned by the handle, valid until the next call. */
const char *store_errstr(const struct store *st);

/*
 * Install the process-wide change hook (NULL removes it). Only changes made
 * through this process's handles are reported; another process (the CLI)
 * is seen by polling store_mailbox_modseq().
 */
void store_set_notify(store_notify_fn fn, void *arg);

/*
 * The full-text index is filled in batches, not by each delivery. Tokenising
 * one message inside its delivery's transaction writes a new FTS5 segment
 * per message: 7 to 30 pages of WAL for a 4 KB message, more than the rest
 * of the delivery. A new message is only queued for the index (fts_pending);
 * the queue is drained, STORE_FTS_CHUNK messages per transaction:
 *  - by every store_fts_search() before it looks, so no search misses a
 *    message;
 *  - when the account's deliveries pause: store_pool_index_idle(), which the
 *    mail queue runs each second some pooled handle has messages waiting
 *    (store_pool_index_waiting()) and no new mail was queued lately
 *    (queue.c, QUEUE_INDEX_QUIET_MS), indexes the handles in the pool whose
 *    account no handle in the pool has been used for STORE_FTS_IDLE_MS.
 *    Indexing is background work, as in Dovecot's indexer: a burst of mail
 *    is delivered first and indexed after, instead of each delivery batch
 *    waiting for tokenising. A new handle is assumed to have messages
 *    waiting (a closed handle, or a restart, may have left some);
 *  - by the add that makes it STORE_FTS_BATCH long, which bounds what a
 *    search may have to index when mail never pauses.
 * Index transactions need no flush of their own: a crash loses index rows
 * and their pending rows together.
 *
 * The text of a message comes from the extractor installed here once at
 * start (the MIME module's: decoded headers and body text). Without one,
 * messages stay queued and full-text search does not see them.
 */
typedef int (*store_text_fn)(const char *msg, size_t len, struct buf *hdr, struct buf *body);
void store_set_text_fn(store_text_fn fn);
#define STORE_FTS_BATCH 1024
#define STORE_FTS_IDLE_MS 1000
#define STORE_FTS_CHUNK 256

/* Index up to max queued messages (0: all of them). The number indexed, or -1. */
int64_t store_fts_catch_up(struct store *st, size_t max);
/* Messages queued for the full-text index, or -1. */
int64_t store_fts_pending(struct store *st);

/*
 * Full maintenance scan: move message files no row refers to (left by a
 * crash between writing a file and its commit, or between commit and
 * unlink after an expunge, when their temp marker was lost too) into the
 * account's STORE_ORPHANS_DIR, and remove dedup keys older than 30 days
 * (which deliveries also prune, once a day per account). The files are
 * moved, not removed: an index.db put back from a backup names none of
 * the mail delivered since, and an admin decides. Costs a walk of every
 * message file name of the account; run by `surat mailbox sweep`. Safe
 * beside writers on other handles: a file is taken only once its marker
 * is gone and then no row names it, and a writer drops its marker only
 * after its row committed. It walks the directory the handle opened,
 * not its path: a store `surat user del` moved aside meanwhile, and one
 * made anew there, are each swept only against their own index. Returns
 * the number of files moved, or -1.
 */
#define STORE_ORPHANS_DIR "orphans"
int store_sweep(struct store *st);

/*
 * When an account is deleted (`surat user del`): move its store, if it has
 * one, to data_dir/deleted/<account>.<UTC time>, the path into moved_to, so
 * that an account made later under the same address starts empty. Handles
 * still open keep the moved store; the pool closes them when next asked for
 * the account (store_root_current()). 1 moved, 0 no store, -1 with err.
 */
int store_account_retire(const char *data_dir, const char *account, struct buf *moved_to,
			 struct buf *err);
/*
 * When an account's address changes its spelling (the NFC upgrade of
 * accounts.db, accounts.c): move its store, if it has one, from the path
 * `from` names to the path `to` names, so that its mail stays its own.
 * 1 moved, 0 nothing to move (no store under `from`, or the store already
 * under `to`: a rename done before a crash), -1 with err when both have a
 * store (never merged) or the rename fails. No handle may be open.
 */
int store_account_rename(const char *data_dir, const char *from, const char *to, struct buf *err);
/* Whether st's directory is still the one its account's path names. */
int store_root_current(const struct store *st);
/*
 * A store's identity: a random id made with it. An account deleted and made
 * again under the same address has another store (even should its directory
 * get the old inode); a session logged in to the old one must not reach the
 * new one.
 */
struct store_id {
	int64_t gen;
};
void store_id_of(const struct store *st, struct store_id *id);

/* --- shared handles (store_pool.c) --- */

/*
 * A process-wide cache of open handles, so that the sessions of an account
 * share a few handles (descriptors, SQLite caches) instead of holding one
 * each for their whole life. store_pool_get() hands out an idle handle of
 * the account or opens a new one (NULL with a message in err on failure);
 * the caller has it alone, on any thread, until store_pool_put() gives it
 * back (NULL-safe; sets *st to NULL). A handle whose last call failed with
 * STORE_ERR_INTERNAL is closed instead of kept. At most max_idle handles
 * wait (default 128); the least recently returned are closed first.
 */
struct store *store_pool_get(const char *data_dir, const char *account, struct buf *err);
/* An idle handle of the account, or NULL: never opens one (never blocks on disk). */
struct store *store_pool_take(const char *data_dir, const char *account);
/*
 * store_pool_get() for the store id only, and never creating one: NULL
 * with *gone set when the account's path names no store or another one
 * (deleted since, maybe made anew), or NULL with a message in err.
 */
struct store *store_pool_get_same(const char *data_dir, const char *account,
				  const struct store_id *id, int *gone, struct buf *err);
/* store_pool_get() never creating a store: NULL with *gone set when there is none. */
struct store *store_pool_get_existing(const char *data_dir, const char *account, int *gone,
				      struct buf *err);
void store_pool_put(struct store **st);
/*
 * store_pool_put() for the event loop: it never closes a handle there
 * (SQLite's close may checkpoint the WAL and flush the database file). A
 * failed handle waits marked for a worker to close, and the handles beyond
 * max_idle are closed by the next store_pool_get*() or store_pool_put().
 */
void store_pool_give(struct store **st);
/* Set the number of idle handles kept (0: none), closing those beyond it. */
void store_pool_set_max(size_t max_idle);
/*
 * Bound the page caches of every store handle to about bytes together (0:
 * no bound; SQLite's soft heap limit, process-wide). Past it, a handle in
 * use reuses its own pages rather than take more, and the idle handles'
 * caches are given up, least recently used first.
 */
void store_pool_set_cache_memory(int64_t bytes);
/* Close every idle handle (at shutdown). */
void store_pool_drain(void);
/* How many handles wait idle now. */
size_t store_pool_idle(void);
/*
 * Fill the full-text index of the idle handles that may have messages
 * waiting and whose account's pooled handles have not been used for
 * idle_ms, oldest first (see STORE_FTS_BATCH), STORE_FTS_CHUNK messages per
 * transaction, until budget_ms has passed (a transaction under way is
 * finished; SQLite's busy timeout can make one long): what is left waits for
 * the next call. Each handle is out of the pool while it is indexed and goes
 * back to its place in the LRU order. If yield is given, it is asked before
 * each handle and each further chunk of STORE_FTS_CHUNK messages, and a
 * nonzero answer ends the call there (the caller has more urgent work for
 * the disk). Blocking: run it on a worker thread.
 * Returns the messages indexed.
 */
int64_t store_pool_index_idle(int64_t idle_ms, int64_t budget_ms, int (*yield)(void *arg),
			      void *arg);
/*
 * Whether an idle handle may have messages waiting for the index: the
 * caller starts store_pool_index_idle() only then (never blocks).
 */
int store_pool_index_waiting(void);

/* --- delivery --- */

/*
 * Deliver a message (CRLF line endings; bare LF is converted) into mailbox
 * (NULL: INBOX), exactly once per dedup_key (NULL: no dedup): the key commits
 * in the same transaction as the message. Returns 1 delivered (*uid_r set
 * when uid_r is not NULL), 0 already delivered under that key, -1 error.
 */
int store_deliver(struct store *st, const char *mailbox, const char *msg, size_t len,
		  const struct store_meta *meta, const char *dedup_key, uint32_t *uid_r);

/* The octets msg is stored as (and counted against a quota as): bare LFs made CRLF. */
size_t store_stored_size(const char *msg, size_t len);

/* One message of store_add_many(). */
struct store_add_item {
	const char *msg; /* CRLF line endings; bare LF is converted */
	size_t len;
	const struct store_meta *meta; /* NULL: none */
	const char *dedup_key;	       /* NULL: no dedup */
	int rc; /* out: 1 added, 0 already delivered under dedup_key, 2 over quota */
	uint32_t uid;		       /* out: the new UID (rc 0: the one it got then) */
	size_t size;		       /* out (rc 1, 2): octets as stored, bare LFs made CRLF */
};

/*
 * Add n messages to one mailbox (NULL: INBOX) in one transaction, made
 * durable by one flush for all their files and one for the index: either
 * every item is done (rc 1, or 0 for a dedup key already delivered, not
 * stored again) and 0 is returned with the mailbox's UIDVALIDITY in
 * *uidvalidity_r (may be NULL), or nothing is stored and -1. The added
 * messages share one new mod-sequence. MULTIAPPEND (all or nothing) and
 * batched deliveries use it; store_deliver and store_append are n = 1.
 */
int store_add_many(struct store *st, const char *mailbox, struct store_add_item *items, size_t n,
		   uint32_t *uidvalidity_r);

/*
 * store_add_many() under a quota (bytes; <= 0: none), held against the
 * account's usage as read inside the write transaction that adds the
 * messages, so that adders on other handles (an IMAP APPEND, a delivery)
 * can never together pass it: the usage after the call is at most quota,
 * or what it was if that was more. Items already delivered under their
 * dedup key add nothing. With partial 0 (MULTIAPPEND) nothing is stored
 * unless every item fits (else -1, STORE_ERR_OVERQUOTA); with partial 1
 * (deliveries) each item in order is taken if it fits what the ones
 * before it left: one that does not gets rc 2 and is not stored, and a
 * smaller one after it may still be.
 */
int store_add_many_quota(struct store *st, const char *mailbox, struct store_add_item *items,
			 size_t n, int64_t quota, int partial, uint32_t *uidvalidity_r);

/*
 * IMAP APPEND: store the message with meta's flags, keywords and internal
 * date. Returns 0 with the new UID and the mailbox's UIDVALIDITY (for
 * APPENDUID; either pointer may be NULL), or -1.
 */
int store_append(struct store *st, const char *mailbox, const char *msg, size_t len,
		 const struct store_meta *meta, uint32_t *uid_r, uint32_t *uidvalidity_r);

/* Whether a message was delivered under dedup_key: 1 (with the UID it got
 * then in *uid_r, which may be NULL), 0, or -1 on error. */
int store_delivered(struct store *st, const char *dedup_key, uint32_t *uid_r);

/* Quota usage over all mailboxes, from a running total. 0 or -1. */
int store_usage(struct store *st, uint64_t *bytes_r, uint64_t *messages_r);

/* --- mailboxes --- */

/*
 * All mailboxes, sorted by name, plus subscribed names that do not exist
 * (NONEXISTENT|NOSELECT|SUBSCRIBED). Returns 0 with a malloc'd array the
 * caller frees with store_mailbox_list_free(), or -1.
 */
int store_mailbox_list(struct store *st, struct store_mbox_info **list_r, size_t *n_r);
/* Free a listing; sets *list to NULL. */
void store_mailbox_list_free(struct store_mbox_info **list, size_t n);

/*
 * Create a mailbox and any missing superiors (RFC 9051 §6.3.4), with the
 * given STORE_USE_* bits (0: none; RFC 6154 CREATE-SPECIAL-USE). Creating a
 * \Noselect name makes it selectable again with a new UIDVALIDITY.
 * 0, or -1 (STORE_ERR_EXISTS, STORE_ERR_INVALID, STORE_ERR_LIMIT past
 * STORE_MAILBOXES_MAX, ...).
 */
int store_mailbox_create(struct store *st, const char *name, unsigned special_use);

/*
 * Delete a mailbox and its messages (RFC 9051 §6.3.5). With inferiors it
 * becomes \Noselect instead; a \Noselect with inferiors fails with
 * STORE_ERR_HASCHILDREN; INBOX fails with STORE_ERR_CANNOT. Subscriptions
 * are kept. Sessions that had it selected get STORE_ERR_NOMAILBOX or
 * STORE_ERR_NOSELECT from their next call. 0 or -1.
 */
int store_mailbox_delete(struct store *st, const char *name);

/*
 * Rename a mailbox and its inferiors (RFC 9051 §6.3.6), creating missing
 * superiors of the new name; subscriptions follow. Messages and UIDs stay;
 * each renamed mailbox gets a new, greater UIDVALIDITY (a client may have
 * cached an earlier mailbox of the new name). Renaming INBOX moves its
 * messages to the new mailbox and leaves an empty INBOX with a new
 * UIDVALIDITY; INBOX's inferiors stay. 0 or -1 (STORE_ERR_LIMIT when a new
 * superior or the new INBOX would pass STORE_MAILBOXES_MAX).
 */
int store_mailbox_rename(struct store *st, const char *from, const char *to);

/*
 * Add or remove name from the subscriptions (need not exist). 0 or -1
 * (STORE_ERR_LIMIT: adding one past STORE_SUBSCRIPTIONS_MAX).
 */
int store_mailbox_subscribe(struct store *st, const char *name, int subscribe);

/* STATUS of a mailbox from counters kept per mailbox. 0 or -1. */
int store_mailbox_status(struct store *st, const char *name, struct store_status *r);

/*
 * The cheap "did anything change" probe: UIDVALIDITY and HIGHESTMODSEQ of a
 * mailbox (either pointer may be NULL). 0 or -1.
 */
int store_mailbox_modseq(struct store *st, const char *name, uint32_t *uidvalidity_r,
			 uint64_t *highestmodseq_r);

/*
 * Snapshot of a selectable mailbox (SELECT/EXAMINE, POP3 login). Returns 0
 * with *view_r malloc'd (free with store_mbox_view_free()), or -1.
 */
int store_mailbox_load(struct store *st, const char *name, struct store_mbox_view **view_r);
/* Free a snapshot; sets *view to NULL. NULL-safe. */
void store_mbox_view_free(struct store_mbox_view **view);

/*
 * IMAP4rev1 \Recent (RFC 3501 §2.3.2) is one watermark per mailbox: the
 * messages from it up are \Recent, and a read-write session takes them
 * for itself alone. In one write transaction, move the watermark of the
 * mailbox (with that UIDVALIDITY, if nonzero) up to its UIDNEXT; the UIDs
 * [*first_r, *next_r) it passed are the caller's; none when equal, both
 * then the watermark, all below it taken already.
 * Returns 1; 0 when another writer held the database (nothing taken, try
 * again later): at once with nowait, for the event loop, which must not
 * wait, else after the busy timeout; -1 on error.
 * Losing the move in a crash only makes messages \Recent once more, so
 * it is not flushed, and with nowait it never runs a WAL checkpoint.
 */
int store_mailbox_claim_recent(struct store *st, const char *mailbox, uint32_t uidvalidity,
			       int nowait, uint32_t *first_r, uint32_t *next_r);

/*
 * Messages new or changed and UIDs expunged with a mod-sequence above
 * modseq, and the mailbox's current UIDVALIDITY/UIDNEXT/HIGHESTMODSEQ, read
 * in one snapshot. Fills *r (free its arrays with store_changes_free()).
 * 0 or -1.
 */
int store_changes_since(struct store *st, const char *mailbox, uint32_t uidvalidity,
			uint64_t modseq, struct store_changes *r);
/* Free the arrays of r and zero it. */
void store_changes_free(struct store_changes *r);

/* --- messages --- */

/*
 * Open a message file read-only. Returns 1 with *fd_r (the caller closes
 * it) and *size_r (may be NULL), 0 if there is no such UID, -1 error. The
 * descriptor stays readable after a concurrent expunge.
 */
int store_msg_open(struct store *st, const char *mailbox, uint32_t uidvalidity, uint32_t uid,
		   int *fd_r, uint64_t *size_r);

/*
 * Cached ENVELOPE/BODYSTRUCTURE/BODY and size of one message. Returns 1
 * with r filled (free with store_msg_meta_free()), 0 no such UID, -1 error.
 */
int store_msg_meta(struct store *st, const char *mailbox, uint32_t uidvalidity, uint32_t uid,
		   struct store_msg_meta *r);
/* Free the strings of r and zero it. */
void store_msg_meta_free(struct store_msg_meta *r);

/*
 * The same for every existing UID in the set, in one pass (FETCH of many
 * messages). Returns 0 with a malloc'd array in UID order (free with
 * store_msg_meta_array_free()), or -1.
 */
int store_fetch_meta(struct store *st, const char *mailbox, uint32_t uidvalidity,
		     const struct store_range *set, size_t nset, struct store_msg_meta **r,
		     size_t *n_r);
/* Free an array from store_fetch_meta(); sets *r to NULL. */
void store_msg_meta_array_free(struct store_msg_meta **r, size_t n);

/*
 * Change flags and keywords of the UIDs in set (RFC 9051 STORE, RFC 7162
 * UNCHANGEDSINCE); UIDs that do not exist are skipped. Messages whose
 * flags do not change keep their mod-sequence; the changed ones share one
 * new mod-sequence. Keywords compare case-insensitively and must be IMAP
 * atoms. Fills *r (free with store_flag_result_free()). 0 or -1.
 */
int store_flags(struct store *st, const char *mailbox, uint32_t uidvalidity,
		const struct store_range *set, size_t nset, const struct store_flag_change *chg,
		struct store_flag_result *r);
/* Free the arrays of r and zero it. */
void store_flag_result_free(struct store_flag_result *r);

/*
 * Expunge the \Deleted messages of a mailbox (set NULL: all of them; else
 * only those in set, UID EXPUNGE), or with STORE_EXPUNGE_FORCE the set's
 * messages whatever their flags, in one transaction. The UIDs are recorded
 * for QRESYNC. Returns 0 with a malloc'd ascending UID array in *uids_r
 * (caller frees; NULL when *n_r is 0) and the mailbox's HIGHESTMODSEQ after
 * the call in *modseq_r (may be NULL), or -1.
 */
int store_expunge(struct store *st, const char *mailbox, uint32_t uidvalidity,
		  const struct store_range *set, size_t nset, unsigned flags, uint32_t **uids_r,
		  size_t *n_r, uint64_t *modseq_r);

/*
 * COPY (move 0) or MOVE (move 1; RFC 6851) the existing UIDs of set from src
 * to dst in one transaction, keeping flags, keywords and internal dates; the
 * files are shared, not duplicated. Fills *r (free with
 * store_copy_result_free()). Returns the number of messages, or -1
 * (STORE_ERR_NOMAILBOX for a missing dst means TRYCREATE).
 */
int store_copy(struct store *st, const char *src, uint32_t uidvalidity,
	       const struct store_range *set, size_t nset, const char *dst, int move,
	       struct store_copy_result *r);
/*
 * store_copy() under a quota (bytes; <= 0: none): a COPY whose copies
 * would take the usage, read inside the transaction, past quota copies
 * nothing and fails with STORE_ERR_OVERQUOTA (as store_add_many_quota();
 * the copies count though their files are shared). A MOVE adds nothing.
 */
int store_copy_quota(struct store *st, const char *src, uint32_t uidvalidity,
		     const struct store_range *set, size_t nset, const char *dst, int move,
		     int64_t quota, struct store_copy_result *r);
/* Free the arrays of r and zero it. */
void store_copy_result_free(struct store_copy_result *r);

/*
 * UIDs of the mailbox whose decoded text contains every term (AND), as
 * words or word prefixes, case and accent insensitive; a term of several
 * words is a phrase; empty terms match everything. This approximates IMAP's
 * substring match: a term without letters or digits matches nothing.
 * Terms are quoted, never parsed as FTS syntax. Returns 0 with a malloc'd
 * ascending array (caller frees; NULL when *n_r is 0), or -1.
 */
int store_fts_search(struct store *st, const char *mailbox, uint32_t uidvalidity,
		     enum store_fts_scope scope, const char *const *terms, size_t nterms,
		     uint32_t **uids_r, size_t *n_r);

/*
 * SORT keys of every message of the mailbox, in UID order. Returns 0 with a
 * malloc'd array (free with store_sort_free()), or -1.
 */
int store_sort_fields(struct store *st, const char *mailbox, uint32_t uidvalidity,
		      struct store_sort_rec **r, size_t *n_r);
/*
 * The cached SEARCH header text of every message of the mailbox, in UID
 * order. Returns 0 with a malloc'd array (free with store_search_free()),
 * or -1.
 */
int store_search_headers(struct store *st, const char *mailbox, uint32_t uidvalidity,
			 struct store_search_rec **r, size_t *n_r);
/* Free an array from store_search_headers(); sets *r to NULL. */
void store_search_free(struct store_search_rec **r, size_t n);
/* Free an array from store_sort_fields(); sets *r to NULL. */
void store_sort_free(struct store_sort_rec **r, size_t n);

/*
 * The size POP3 gives a message (RFC 1939 11: STAT, LIST, RETR's "+OK n
 * octets"): the octets RETR sends before its "." line, dot-stuffing left
 * out. That is the stored size, plus the CRLF RETR adds to a message that
 * does not end with one (BDAT LAST or IMAP APPEND without a final CRLF),
 * as the "." must start a line.
 */
static inline uint64_t
store_pop3_size(const struct store_msg *m)
{
	return m->size + (m->noeol ? 2 : 0);
}

/*
 * The POP3 UIDL of a message: "<uidvalidity>.<uid>" in hex, stable as long
 * as the UID is. Writes at most STORE_UIDL_MAX bytes into out; returns out.
 */
char *store_uidl(char *out, size_t outlen, uint32_t uidvalidity, uint32_t uid);

#endif
