/*
 * store_private — what the store_*.c files share and nobody else sees: the
 * handle, the prepared-statement cache, transactions, errors, name checks
 * and the message-file writer. Only src/store/ includes this header.
 *
 * SECURITY: names reaching store_name_norm() or a path are untrusted until
 * it or store_account_split() accepted them.
 */
#ifndef SURAT_STORE_PRIVATE_H
#define SURAT_STORE_PRIVATE_H

#include <sqlite3.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/util.h"
#include "store/store.h"

#define STORE_BUSY_TIMEOUT_MS 15000
#define STORE_WAL_AUTOCHECKPOINT 1000 /* pages: SQLite's default */

/* Every SQL statement the store runs, prepared once per handle. */
enum store_sql {
	SQL_BEGIN_READ,
	SQL_BEGIN_WRITE,
	SQL_COMMIT,
	SQL_ROLLBACK,
	SQL_META_GET,
	SQL_META_SET,
	SQL_META_ADD,
	SQL_USAGE,
	SQL_MBOX_GET,
	SQL_MBOX_STATUS,
	SQL_MBOX_INSERT,
	SQL_MBOX_SETSEQ,
	SQL_MBOX_CLAIM_RECENT,
	SQL_MBOX_LIST,
	SQL_MBOX_LIST_SUBONLY,
	SQL_MBOX_HAS_CHILD,
	SQL_MBOX_CHILDREN,
	SQL_MBOX_RENAME,
	SQL_MBOX_DELETE,
	SQL_MBOX_NOSELECT,
	SQL_MBOX_REVIVE,
	SQL_MBOX_COUNT,
	SQL_SUB_ADD,
	SQL_SUB_COUNT,
	SQL_SUB_DEL,
	SQL_SUB_RENAME,
	SQL_FILE_INSERT,
	SQL_SEARCH_INSERT,
	SQL_FILE_RELEASE,
	SQL_FILE_EXISTS,
	SQL_FTS_INSERT,
	SQL_FTS_QUEUE,
	SQL_FTS_PENDING,
	SQL_FTS_COUNT,
	SQL_FTS_DEQUEUE,
	SQL_DELIV_GET,
	SQL_DELIV_INSERT,
	SQL_DELIV_PRUNE,
	SQL_MSG_INSERT,
	SQL_MSG_LOAD,
	SQL_MSG_CHANGED,
	SQL_MSG_RANGE,
	SQL_MSG_DELETED,
	SQL_MSG_ALL_FILES,
	SQL_MSG_SETFLAGS,
	SQL_MSG_DELETE,
	SQL_MSG_CLEAR,
	SQL_MSG_FILE,
	SQL_MSG_META_RANGE,
	SQL_MSG_SORT,
	SQL_MSG_SEARCH_HDRS,
	SQL_MSG_FTS,
	SQL_EXP_INSERT,
	SQL_EXP_SINCE,
	SQL_EXP_CLEAR,
	SQL__COUNT
};

struct store {
	sqlite3 *db;
	char *account; /* "local@domain" */
	char *root;    /* <data_dir>/mail/<domain>/<local> */
	sqlite3_stmt *stmt[SQL__COUNT];
	enum store_err err;
	struct buf errmsg;
	int in_txn;
	int in_write;	/* the open transaction writes: commit goes through the barrier */
	int root_fd;	/* root directory, open while the handle is (the barrier, its identity) */
	dev_t root_dev;	/* root's identity at open: `surat user del` moves it aside */
	ino_t root_ino;
	int64_t gen;	/* the store's random id (meta "store_id"): its identity over time */
	int moved;	/* found moved aside: in the pool only until closed */
	char *data_dir; /* as given to store_open(): the pool's key with account */
	struct store *pool_prev, *pool_next; /* in the pool of idle handles */
	uint64_t file_next; /* the next message file id to try; 0: draw a new run */
	int fts_backlog;    /* messages may wait for the full-text index */
	int64_t put_us;     /* when store_pool_put() last took it back (monotonic) */
	int64_t pruned_s;   /* when the account's dedup keys were last pruned, as known here */
};

/* A mailbox row as the message operations need it. */
struct store_mbox_row {
	char name[STORE_NAME_MAX + 1]; /* normalised */
	int64_t id;
	uint32_t uidvalidity;
	uint32_t uidnext;
	uint64_t highestmodseq;
	int noselect;
	unsigned special_use;
	uint32_t recent_uid; /* the \Recent watermark */
};

/* A message file being written: its id, name and the descriptor locking its temp marker. */
struct store_file {
	int64_t id;    /* files.id: 63 bits, see store_file.c */
	char name[17]; /* the id in 16 lowercase hex digits */
	int fd;	       /* -1 when not open */
	size_t size;   /* bytes written */
	int noeol;     /* not empty and not ending in LF (messages.noeol) */
};

/* A growable array of file ids to unlink after a commit. */
struct store_names {
	int64_t *v;
	size_t n, cap;
};

/* --- store.c --- */

/* store_open() of a store that exists: never makes one (NULL, *missing set, if there is none). */
struct store *store_open_existing(const char *data_dir, const char *account, int *missing,
				  struct buf *err);
/* Record a failure; returns -1 so callers can `return store_fail(...)`. */
int store_fail(struct store *st, enum store_err code, const char *fmt, ...) PRINTF_LIKE(3, 4);
/* Record a database failure from the last SQLite call (what: the step). Returns -1. */
int store_db_fail(struct store *st, const char *what);
/* The code for a failed system call's errno: STORE_ERR_NOSPACE for want of room, else INTERNAL. */
enum store_err store_io_err(int e);
/* Clear the error state at the start of a public call. */
void store_clear_error(struct store *st);

/* The cached statement, reset and with bindings cleared; NULL (error set) on failure. */
sqlite3_stmt *store_stmt(struct store *st, enum store_sql id);
/* Step: 1 a row, 0 done (statement reset), -1 error (statement reset, error set). */
int store_step(struct store *st, sqlite3_stmt *s);
/* Run a statement without result rows to completion. 0 or -1. */
int store_exec(struct store *st, sqlite3_stmt *s);

/* Begin a read (deferred) or write (immediate) transaction. 0 or -1. */
int store_begin(struct store *st, int write);
/* Commit; 0 or -1 (then rolled back). */
int store_commit(struct store *st);
/* Commit a write with no flush of its own: for what a crash may lose whole. */
int store_commit_lazy(struct store *st);
/* Roll back if a transaction is open; resets every statement. Keeps the error. */
void store_rollback(struct store *st);

/* Fire the change hook for a mailbox of this handle's account. */
void store_notify(struct store *st, const char *mailbox);

/*
 * Validate and normalise a mailbox name into out (STORE_NAME_MAX + 1 bytes):
 * INBOX case-folded. 0, or -1 with STORE_ERR_INVALID set.
 */
int store_name_norm(struct store *st, const char *name, char *out);

/* Next UIDVALIDITY: the clock, or one more than the last handed out. Inside a write txn. */
int store_next_uidvalidity(struct store *st, uint32_t *r);

/* Look a mailbox up by normalised name: 1 found, 0 not, -1 error. */
int store_mbox_get(struct store *st, const char *name, struct store_mbox_row *r);
/*
 * Look up a mailbox a message operation works on: normalises raw, checks it
 * exists, is selectable and (uidvalidity != 0) has that UIDVALIDITY. 0 or -1.
 */
int store_mbox_open(struct store *st, const char *raw, uint32_t uidvalidity,
		    struct store_mbox_row *r);
/* Into *n_r the count which (SQL_MBOX_COUNT, SQL_SUB_COUNT) gives, name as ?1. 0 or -1. */
int store_count(struct store *st, enum store_sql which, const char *name, int64_t *n_r);
/*
 * Insert a mailbox row (and subscribe it if asked); *id_r may be NULL. In a
 * write txn. Past STORE_MAILBOXES_MAX, -1 with STORE_ERR_LIMIT.
 */
int store_mbox_insert(struct store *st, const char *name, unsigned special_use, int subscribe,
		      int64_t *id_r);
/* Create the missing superiors of name as ordinary mailboxes. In a write txn. */
int store_mbox_make_parents(struct store *st, const char *name);

/*
 * After messages rows were deleted (their trigger dropped the references),
 * delete the files rows among ids that no message names any more (and with
 * them their fts rows), adding their ids to names for store_file_unlink()
 * after the commit. ids may repeat. In a write txn. 0 or -1.
 */
int store_files_release(struct store *st, const int64_t *ids, size_t n, struct store_names *names);

/* Add a file id to a list. */
void store_names_add(struct store_names *l, int64_t id);
/* Free a list. */
void store_names_free(struct store_names *l);

/* --- store_file.c --- */

/*
 * Write data as a new message file: temp marker tmp/<name> (O_EXCL, locked),
 * then link to msg/<2 hex>/<name>. Not yet durable: the caller makes every
 * file it wrote durable with one store_file_sync() before the rows naming
 * them commit. 0 or -1. On success f must later go to store_file_done() or
 * store_file_abort().
 */
int store_file_write(struct store *st, const char *data, size_t len, struct store_file *f);
/* Make f and every file written before it durable (content, marker, name). 0 or -1. */
int store_file_sync(struct store *st, const struct store_file *f);
/* The row naming the file committed: drop the temp marker and its lock. */
void store_file_done(struct store *st, struct store_file *f);
/* The row did not commit: remove the file and its marker. */
void store_file_abort(struct store *st, struct store_file *f);
/*
 * COMMIT failed, so whether the row is durable is unknown (an fsync error
 * may leave a WAL frame that recovery replays): keep file and marker and
 * drop only the lock; the next sweep looks the row up and decides.
 */
void store_file_leave(struct store *st, struct store_file *f);
/*
 * Before the commit of a transaction that frees files (an expunge, a
 * mailbox deleted): link each back into tmp/ as a marker, as a write has
 * one. A crash between that commit and store_file_unlink() then leaves them
 * to the next open's sweep, which removes a file whose row is gone and
 * only the marker of one still named (a rollback). Best effort.
 */
void store_file_mark_dead(struct store *st, const struct store_names *names);
/* Unlink committed-away message files (after the transaction that dropped
 * their rows), then their markers. */
void store_file_unlink(struct store *st, const struct store_names *names);
/* Path of message file id into out; 0 or -1 when it does not fit. */
int store_file_path(const struct store *st, int64_t id, char *out, size_t outlen);
/* Remove temp markers of dead writers and their unreferenced files. */
void store_file_sweep_tmp(struct store *st);
/* Move message files no row names into STORE_ORPHANS_DIR; returns how many, or -1. */
int store_file_sweep_all(struct store *st);

/* Days a dedup key is kept; store_prune_deliveries() with now, or once a day per account. */
#define STORE_DEDUP_DAYS 30
int store_prune_deliveries(struct store *st, int now);

#endif
