/*
 * store — handles, schema, the statement cache, transactions, errors, name
 * checks and the mailbox-row helpers the other store_*.c files share.
 *
 * Schema (index.db, user_version STORE_SCHEMA_VERSION):
 *   mailboxes   one row per mailbox: UIDVALIDITY/UIDNEXT/HIGHESTMODSEQ,
 *               special-use bits, \Noselect, the \Recent watermark
 *               (recent_uid: the first UID no read-write session has taken
 *               as \Recent), and STATUS counters (messages, unseen,
 *               deleted, size, recent) kept by triggers on messages.
 *   messages    (mailbox_id, uid) clustered: modseq, flags bitmask,
 *               keywords (space-separated), internal date, size, file_id.
 *   files       one immutable message content: id (= file name), reference
 *               count (COPY shares files), size, cached ENVELOPE/BODYSTRUCTURE/
 *               BODY and SORT keys. fts (FTS5) rows share the files rowid.
 *   expunged    (mailbox_id, uid, modseq) for QRESYNC VANISHED (EARLIER).
 *   deliveries  dedup keys, committed with the message they delivered.
 *   subscriptions, meta (last UIDVALIDITY handed out).
 * The counters live in triggers so that no code path can forget one; the
 * account's usage (quota) is their sum over the handful of mailbox rows.
 * A delivery writes few b-tree pages: no secondary index on files, FTS5
 * without per-column sizes, no index on delivery times (pruning scans).
 *
 * SECURITY: store_account_split() and store_name_norm() are the gates for
 * names: nothing reaches a path or a row before they accepted it. SQL text
 * is constant; every value is bound.
 */
#include "store/store_private.h"
#include "core/fsbarrier.h"

#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/*
 * 1: first; 2: files.search_hdrs; 3: the SEARCH header cache in a narrow
 * table of its own (reading it from files dragged the whole wide rows in;
 * a schema-2 files.search_hdrs is left unused); 4: fts_pending, messages
 * waiting for the full-text index (store.h, store_fts_catch_up); 5: the
 * IMAP4rev1 \Recent watermark mailboxes.recent_uid and its counter
 * mailboxes.recent (store_mailbox_claim_recent); 6: messages.noeol, a
 * file that does not end in LF (store_pop3_size).
 */
#define STORE_SCHEMA_VERSION 6
#define STORE_LOCAL_MAX 64
#define STORE_DOMAIN_MAX 255

/* SEARCH's header cache (mime_search) per file; what schemas 1 and 2 gain. */
#define STORE_SCHEMA_SEARCH                                                                        \
	"CREATE TABLE search_hdrs ("                                                               \
	" id INTEGER PRIMARY KEY,"                                                                 \
	" hdrs TEXT NOT NULL"                                                                      \
	");"
/* Files not yet in fts; what schemas 1 to 3 gain (their files are all indexed). */
#define STORE_SCHEMA_PENDING "CREATE TABLE fts_pending (id INTEGER PRIMARY KEY);"
/*
 * The counters of a mailbox row follow its messages. A message is \Recent
 * (counted in recent) from its UID up: a new one always is, as its UID is
 * at least the watermark.
 */
#define STORE_SCHEMA_MSG_TRIGGERS                                                                  \
	"CREATE TRIGGER messages_ai AFTER INSERT ON messages BEGIN"                                \
	" UPDATE mailboxes SET messages = messages + 1, size = size + new.size,"                   \
	"  unseen = unseen + (new.flags & 1 = 0), deleted = deleted + (new.flags & 8 != 0),"       \
	"  recent = recent + (new.uid >= recent_uid)"                                              \
	"  WHERE id = new.mailbox_id;"                                                             \
	" UPDATE files SET refs = refs + 1 WHERE id = new.file_id;"                                \
	"END;"                                                                                     \
	"CREATE TRIGGER messages_ad AFTER DELETE ON messages BEGIN"                                \
	" UPDATE mailboxes SET messages = messages - 1, size = size - old.size,"                   \
	"  unseen = unseen - (old.flags & 1 = 0), deleted = deleted - (old.flags & 8 != 0),"       \
	"  recent = recent - (old.uid >= recent_uid)"                                              \
	"  WHERE id = old.mailbox_id;"                                                             \
	" UPDATE files SET refs = refs - 1 WHERE id = old.file_id;"                                \
	"END;"
/*
 * What schema 4 gains. The watermark starts at UIDNEXT: mail that was there
 * before the upgrade is not suddenly new to a client.
 */
#define STORE_SCHEMA_UP_5                                                                          \
	"ALTER TABLE mailboxes ADD COLUMN recent_uid INTEGER NOT NULL DEFAULT 1;"                  \
	"ALTER TABLE mailboxes ADD COLUMN recent INTEGER NOT NULL DEFAULT 0;"                      \
	"UPDATE mailboxes SET recent_uid = uidnext;"                                               \
	"DROP TRIGGER messages_ai;"                                                                \
	"DROP TRIGGER messages_ad;" STORE_SCHEMA_MSG_TRIGGERS
/*
 * What schema 5 gains (a new index is made as schema 5, then gains it too):
 * noeol is read from the end of each message's file (store_db_noeol), once,
 * at the upgrade; new messages get it as they are stored.
 */
#define STORE_SCHEMA_UP_6                                                                          \
	"ALTER TABLE messages ADD COLUMN noeol INTEGER NOT NULL DEFAULT 0;"                        \
	"UPDATE messages SET noeol = store_noeol(file_id) WHERE size > 0;"
#define STORE_SCHEMA_FILES_AD                                                                      \
	"CREATE TRIGGER files_ad AFTER DELETE ON files BEGIN"                                      \
	" DELETE FROM fts WHERE rowid = old.id;"                                                   \
	" DELETE FROM search_hdrs WHERE id = old.id;"                                              \
	" DELETE FROM fts_pending WHERE id = old.id;"                                              \
	"END;"

static const char store_schema[] =
    "CREATE TABLE meta ("
    " key TEXT PRIMARY KEY,"
    " value INTEGER NOT NULL"
    ") WITHOUT ROWID;"
    "CREATE TABLE mailboxes ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " name TEXT NOT NULL UNIQUE,"
    " uidvalidity INTEGER NOT NULL,"
    " uidnext INTEGER NOT NULL DEFAULT 1,"
    " highestmodseq INTEGER NOT NULL DEFAULT 1,"
    " special_use INTEGER NOT NULL DEFAULT 0,"
    " noselect INTEGER NOT NULL DEFAULT 0,"
    " messages INTEGER NOT NULL DEFAULT 0,"
    " unseen INTEGER NOT NULL DEFAULT 0,"
    " deleted INTEGER NOT NULL DEFAULT 0,"
    " size INTEGER NOT NULL DEFAULT 0,"
    " recent_uid INTEGER NOT NULL DEFAULT 1,"
    " recent INTEGER NOT NULL DEFAULT 0"
    ");"
    "CREATE TABLE subscriptions ("
    " name TEXT PRIMARY KEY"
    ") WITHOUT ROWID;"
    /* The id, 63 random bits, is also the file name (16 hex digits). */
    "CREATE TABLE files ("
    " id INTEGER PRIMARY KEY,"
    " refs INTEGER NOT NULL DEFAULT 0,"
    " size INTEGER NOT NULL,"
    " envelope TEXT,"
    " bodystructure TEXT,"
    " body TEXT,"
    " hdr_date INTEGER,"
    " hdr_from TEXT,"
    " hdr_subject TEXT,"
    " hdr_to TEXT,"
    " hdr_cc TEXT"
    ");"
    "CREATE TABLE messages ("
    " mailbox_id INTEGER NOT NULL,"
    " uid INTEGER NOT NULL,"
    " modseq INTEGER NOT NULL,"
    " flags INTEGER NOT NULL,"
    " keywords TEXT,"
    " internal_date INTEGER NOT NULL,"
    " internal_tz INTEGER NOT NULL,"
    " size INTEGER NOT NULL,"
    " file_id INTEGER NOT NULL,"
    " PRIMARY KEY (mailbox_id, uid)"
    ") WITHOUT ROWID;"
    "CREATE INDEX messages_modseq ON messages (mailbox_id, modseq);"
    /* Only \Deleted messages are in it: EXPUNGE finds them without a scan. */
    "CREATE INDEX messages_deleted ON messages (mailbox_id, uid) WHERE flags & 8 != 0;"
    "CREATE TABLE expunged ("
    " mailbox_id INTEGER NOT NULL,"
    " uid INTEGER NOT NULL,"
    " modseq INTEGER NOT NULL,"
    " PRIMARY KEY (mailbox_id, uid)"
    ") WITHOUT ROWID;"
    "CREATE INDEX expunged_modseq ON expunged (mailbox_id, modseq);"
    "CREATE TABLE deliveries ("
    " key TEXT PRIMARY KEY,"
    " mailbox_id INTEGER NOT NULL,"
    " uid INTEGER NOT NULL,"
    " time INTEGER NOT NULL"
    ") WITHOUT ROWID;"
    "CREATE VIRTUAL TABLE fts USING fts5 (hdr, body,"
    " tokenize = 'unicode61 remove_diacritics 2', columnsize = 0);"
    STORE_SCHEMA_MSG_TRIGGERS
    "CREATE TRIGGER messages_au AFTER UPDATE OF flags ON messages"
    " WHEN (old.flags & 9) != (new.flags & 9) BEGIN"
    " UPDATE mailboxes SET"
    "  unseen = unseen + (new.flags & 1 = 0) - (old.flags & 1 = 0),"
    "  deleted = deleted + (new.flags & 8 != 0) - (old.flags & 8 != 0)"
    "  WHERE id = new.mailbox_id;"
    "END;"
    STORE_SCHEMA_SEARCH STORE_SCHEMA_PENDING STORE_SCHEMA_FILES_AD;

static const char *const store_sql_text[SQL__COUNT] = {
    [SQL_BEGIN_READ] = "BEGIN",
    [SQL_BEGIN_WRITE] = "BEGIN IMMEDIATE",
    [SQL_COMMIT] = "COMMIT",
    [SQL_ROLLBACK] = "ROLLBACK",
    [SQL_META_GET] = "SELECT value FROM meta WHERE key = ?1",
    [SQL_META_SET] = "INSERT INTO meta (key, value) VALUES (?1, ?2)"
		     " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    [SQL_META_ADD] = "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
    [SQL_USAGE] = "SELECT coalesce(sum(size), 0), coalesce(sum(messages), 0) FROM mailboxes",
    [SQL_MBOX_GET] = "SELECT id, uidvalidity, uidnext, highestmodseq, noselect, special_use,"
		     " recent_uid FROM mailboxes WHERE name = ?1",
    [SQL_MBOX_STATUS] = "SELECT messages, unseen, deleted, uidnext, uidvalidity, size,"
			" highestmodseq, special_use, noselect, recent"
			" FROM mailboxes WHERE name = ?1",
    [SQL_MBOX_INSERT] = "INSERT INTO mailboxes (name, uidvalidity, special_use)"
			" VALUES (?1, ?2, ?3)",
    [SQL_MBOX_SETSEQ] = "UPDATE mailboxes SET uidnext = ?2, highestmodseq = ?3 WHERE id = ?1",
    /* Every message is below UIDNEXT: none stays \Recent. */
    [SQL_MBOX_CLAIM_RECENT] = "UPDATE mailboxes SET recent_uid = uidnext, recent = 0"
			      " WHERE id = ?1",
    [SQL_MBOX_LIST] = "SELECT m.name, m.noselect, m.special_use,"
		      " EXISTS (SELECT 1 FROM subscriptions s WHERE s.name = m.name),"
		      " EXISTS (SELECT 1 FROM mailboxes c"
		      "  WHERE c.name >= m.name || '/' AND c.name < m.name || '0')"
		      " FROM mailboxes m",
    [SQL_MBOX_LIST_SUBONLY] = "SELECT s.name,"
			      " EXISTS (SELECT 1 FROM mailboxes c"
			      "  WHERE c.name >= s.name || '/' AND c.name < s.name || '0')"
			      " FROM subscriptions s"
			      " WHERE NOT EXISTS (SELECT 1 FROM mailboxes m WHERE m.name = s.name)",
    [SQL_MBOX_HAS_CHILD] = "SELECT 1 FROM mailboxes"
			   " WHERE name >= ?1 || '/' AND name < ?1 || '0' LIMIT 1",
    [SQL_MBOX_CHILDREN] = "SELECT id, name FROM mailboxes"
			  " WHERE name >= ?1 || '/' AND name < ?1 || '0' ORDER BY name",
    [SQL_MBOX_RENAME] = "UPDATE mailboxes SET name = ?2, uidvalidity = ?3 WHERE id = ?1",
    [SQL_MBOX_DELETE] = "DELETE FROM mailboxes WHERE id = ?1",
    [SQL_MBOX_NOSELECT] = "UPDATE mailboxes SET noselect = 1 WHERE id = ?1",
    [SQL_MBOX_REVIVE] = "UPDATE mailboxes SET noselect = 0, uidvalidity = ?2,"
			" special_use = ?3 WHERE id = ?1",
    [SQL_MBOX_COUNT] = "SELECT count(*) FROM mailboxes",
    [SQL_SUB_ADD] = "INSERT OR IGNORE INTO subscriptions (name) VALUES (?1)",
    /* Others than ?1: subscribing again a name already there adds none. */
    [SQL_SUB_COUNT] = "SELECT count(*) FROM subscriptions WHERE name <> ?1",
    [SQL_SUB_DEL] = "DELETE FROM subscriptions WHERE name = ?1",
    [SQL_SUB_RENAME] = "UPDATE OR REPLACE subscriptions"
		       " SET name = ?2 || substr(name, length(?1) + 1)"
		       " WHERE name = ?1 OR (name >= ?1 || '/' AND name < ?1 || '0')",
    [SQL_FILE_INSERT] = "INSERT INTO files (id, size, envelope, bodystructure, body,"
			" hdr_date, hdr_from, hdr_subject, hdr_to, hdr_cc)"
			" VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    [SQL_SEARCH_INSERT] = "INSERT INTO search_hdrs (id, hdrs) VALUES (?1, ?2)",
    [SQL_FILE_RELEASE] = "DELETE FROM files WHERE id = ?1 AND refs <= 0 RETURNING id",
    [SQL_FILE_EXISTS] = "SELECT 1 FROM files WHERE id = ?1",
    [SQL_FTS_INSERT] = "INSERT INTO fts (rowid, hdr, body) VALUES (?1, ?2, ?3)",
    [SQL_FTS_QUEUE] = "INSERT OR IGNORE INTO fts_pending (id) VALUES (?1)",
    [SQL_FTS_PENDING] = "SELECT id FROM fts_pending LIMIT ?1",
    [SQL_FTS_COUNT] = "SELECT count(*) FROM fts_pending",
    [SQL_FTS_DEQUEUE] = "DELETE FROM fts_pending WHERE id = ?1 RETURNING id",
    [SQL_DELIV_GET] = "SELECT uid FROM deliveries WHERE key = ?1",
    [SQL_DELIV_INSERT] = "INSERT INTO deliveries (key, mailbox_id, uid, time)"
			 " VALUES (?1, ?2, ?3, ?4)",
    [SQL_DELIV_PRUNE] = "DELETE FROM deliveries WHERE time < ?1",
    [SQL_MSG_INSERT] = "INSERT INTO messages (mailbox_id, uid, modseq, flags, keywords,"
		       " internal_date, internal_tz, size, file_id, noeol)"
		       " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    [SQL_MSG_LOAD] = "SELECT uid, modseq, flags, keywords, size, internal_date, internal_tz,"
		     " noeol FROM messages WHERE mailbox_id = ?1 ORDER BY uid",
    [SQL_MSG_CHANGED] = "SELECT uid, modseq, flags, keywords, size, internal_date, internal_tz,"
			" noeol FROM messages INDEXED BY messages_modseq"
			" WHERE mailbox_id = ?1 AND modseq > ?2 ORDER BY uid",
    [SQL_MSG_RANGE] = "SELECT uid, modseq, flags, keywords, size, internal_date, internal_tz,"
		      " noeol, file_id FROM messages"
		      " WHERE mailbox_id = ?1 AND uid BETWEEN ?2 AND ?3 ORDER BY uid",
    [SQL_MSG_DELETED] = "SELECT uid, modseq, flags, keywords, size, internal_date,"
			" internal_tz, noeol, file_id FROM messages INDEXED BY messages_deleted"
			" WHERE mailbox_id = ?1 AND flags & 8 != 0 ORDER BY uid",
    [SQL_MSG_ALL_FILES] = "SELECT file_id FROM messages WHERE mailbox_id = ?1",
    [SQL_MSG_SETFLAGS] = "UPDATE messages SET flags = ?3, keywords = ?4, modseq = ?5"
			 " WHERE mailbox_id = ?1 AND uid = ?2",
    [SQL_MSG_DELETE] = "DELETE FROM messages WHERE mailbox_id = ?1 AND uid = ?2",
    [SQL_MSG_CLEAR] = "DELETE FROM messages WHERE mailbox_id = ?1",
    [SQL_MSG_FILE] = "SELECT file_id, size FROM messages WHERE mailbox_id = ?1 AND uid = ?2",
    [SQL_MSG_META_RANGE] = "SELECT m.uid, m.size, f.envelope, f.bodystructure, f.body"
			   " FROM messages m JOIN files f ON f.id = m.file_id"
			   " WHERE m.mailbox_id = ?1 AND m.uid BETWEEN ?2 AND ?3"
			   " ORDER BY m.uid",
    [SQL_MSG_SORT] = "SELECT m.uid, f.hdr_date, f.hdr_from, f.hdr_subject, f.hdr_to, f.hdr_cc"
		     " FROM messages m JOIN files f ON f.id = m.file_id"
		     " WHERE m.mailbox_id = ?1 ORDER BY m.uid",
    [SQL_MSG_SEARCH_HDRS] = "SELECT m.uid, s.hdrs"
			    " FROM messages m LEFT JOIN search_hdrs s ON s.id = m.file_id"
			    " WHERE m.mailbox_id = ?1 ORDER BY m.uid",
    [SQL_MSG_FTS] = "SELECT uid FROM messages WHERE mailbox_id = ?1 AND file_id IN"
		    " (SELECT rowid FROM fts WHERE fts MATCH ?2) ORDER BY uid",
    [SQL_EXP_INSERT] = "INSERT OR REPLACE INTO expunged (mailbox_id, uid, modseq)"
		       " VALUES (?1, ?2, ?3)",
    [SQL_EXP_SINCE] = "SELECT uid FROM expunged INDEXED BY expunged_modseq"
		      " WHERE mailbox_id = ?1 AND modseq > ?2 ORDER BY uid",
    [SQL_EXP_CLEAR] = "DELETE FROM expunged WHERE mailbox_id = ?1",
};

/* The default mailboxes of a new account (RFC 6154 attributes). */
static const struct {
	const char *name;
	unsigned use;
} store_defaults[] = {
    {"INBOX", 0},
    {"Sent", STORE_USE_SENT},
    {"Drafts", STORE_USE_DRAFTS},
    {"Trash", STORE_USE_TRASH},
    {"Junk", STORE_USE_JUNK},
    {"Archive", STORE_USE_ARCHIVE},
};

static pthread_mutex_t store_notify_lock = PTHREAD_MUTEX_INITIALIZER;
static store_notify_fn store_notify_cb;
static void *store_notify_arg;

/* --- errors --- */

static int store_vfail(struct store *st, enum store_err code, const char *fmt, va_list ap)
    PRINTF_LIKE(3, 0);

static int
store_vfail(struct store *st, enum store_err code, const char *fmt, va_list ap)
{
	st->err = code;
	buf_reset(&st->errmsg);
	if (buf_vprintf(&st->errmsg, fmt, ap) < 0)
		buf_puts(&st->errmsg, "store error");
	return -1;
}

int
store_fail(struct store *st, enum store_err code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	store_vfail(st, code, fmt, ap);
	va_end(ap);
	return -1;
}

enum store_err
store_io_err(int e)
{
	return e == ENOSPC || e == EDQUOT ? STORE_ERR_NOSPACE : STORE_ERR_INTERNAL;
}

int
store_db_fail(struct store *st, const char *what)
{
	int rc = sqlite3_extended_errcode(st->db);
	enum store_err code = STORE_ERR_INTERNAL;

	if ((rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED)
		code = STORE_ERR_BUSY;
	else if ((rc & 0xff) == SQLITE_FULL)
		code = STORE_ERR_NOSPACE;
	store_fail(st, code, "%s: %s: %s", st->account, what, sqlite3_errmsg(st->db));
	if (code == STORE_ERR_INTERNAL)
		log_error("store: %s", buf_str(&st->errmsg));
	return -1;
}

void
store_clear_error(struct store *st)
{
	st->err = STORE_OK;
	buf_reset(&st->errmsg);
}

enum store_err
store_errcode(const struct store *st)
{
	return st->err;
}

const char *
store_errstr(const struct store *st)
{
	return st->err == STORE_OK ? "" : buf_str(&st->errmsg);
}

const char *
store_account(const struct store *st)
{
	return st->account;
}

const char *
store_root(const struct store *st)
{
	return st->root;
}

/* --- statements and transactions --- */

sqlite3_stmt *
store_stmt(struct store *st, enum store_sql id)
{
	sqlite3_stmt *s = st->stmt[id];

	if (s != NULL) {
		sqlite3_reset(s);
		sqlite3_clear_bindings(s);
		return s;
	}
	if (sqlite3_prepare_v3(st->db, store_sql_text[id], -1, SQLITE_PREPARE_PERSISTENT, &s,
			       NULL) != SQLITE_OK) {
		store_db_fail(st, "prepare");
		return NULL;
	}
	st->stmt[id] = s;
	return s;
}

int
store_step(struct store *st, sqlite3_stmt *s)
{
	int rc = sqlite3_step(s);

	if (rc == SQLITE_ROW)
		return 1;
	if (rc == SQLITE_DONE) {
		sqlite3_reset(s);
		return 0;
	}
	store_db_fail(st, "step");
	sqlite3_reset(s);
	return -1;
}

int
store_exec(struct store *st, sqlite3_stmt *s)
{
	int r;

	while ((r = store_step(st, s)) == 1)
		;
	return r;
}

int
store_begin(struct store *st, int write)
{
	ASSERT(!st->in_txn);
	sqlite3_stmt *s = store_stmt(st, write ? SQL_BEGIN_WRITE : SQL_BEGIN_READ);
	if (s == NULL || store_exec(st, s) < 0)
		return -1;
	st->in_txn = 1;
	st->in_write = write;
	return 0;
}

int
store_commit_lazy(struct store *st)
{
	ASSERT(st->in_txn);
	sqlite3_stmt *s = store_stmt(st, SQL_COMMIT);
	if (s == NULL || store_exec(st, s) < 0) {
		store_rollback(st);
		return -1;
	}
	st->in_txn = 0;
	return 0;
}

int
store_commit(struct store *st)
{
	if (store_commit_lazy(st) < 0)
		return -1;
	if (!st->in_write)
		return 0;
	/*
	 * synchronous=NORMAL leaves the WAL unsynced at COMMIT; the group-commit
	 * barrier makes it durable, sharing one flush with every other writer.
	 */
	if (fsbarrier_sync(st->root_fd) < 0)
		return store_fail(st, STORE_ERR_INTERNAL, "sync(%s) failed: %s", st->root,
				  strerror(errno));
	return 0;
}

void
store_rollback(struct store *st)
{
	if (!st->in_txn)
		return;
	for (size_t i = 0; i < SQL__COUNT; i++)
		if (st->stmt[i] != NULL)
			sqlite3_reset(st->stmt[i]);
	/* Keep the caller's error: ROLLBACK failing changes nothing we can report better. */
	if (sqlite3_get_autocommit(st->db) == 0)
		sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
	st->in_txn = 0;
}

/* --- notification --- */

void
store_set_notify(store_notify_fn fn, void *arg)
{
	pthread_mutex_lock(&store_notify_lock);
	store_notify_cb = fn;
	store_notify_arg = arg;
	pthread_mutex_unlock(&store_notify_lock);
}

void
store_notify(struct store *st, const char *mailbox)
{
	pthread_mutex_lock(&store_notify_lock);
	store_notify_fn fn = store_notify_cb;
	void *arg = store_notify_arg;
	pthread_mutex_unlock(&store_notify_lock);
	if (fn != NULL)
		fn(st->account, mailbox, arg);
}

/* --- names --- */

/* Length of the valid UTF-8 sequence at s (n bytes left), or 0 if invalid. */
static size_t
store_utf8_len(const unsigned char *s, size_t n)
{
	uint32_t cp;
	size_t len;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf) {
		len = 2;
		cp = s[0] & 0x1f;
	} else if (s[0] >= 0xe0 && s[0] <= 0xef) {
		len = 3;
		cp = s[0] & 0x0f;
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		len = 4;
		cp = s[0] & 0x07;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10ffff ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	/* C1 controls are as unwelcome in a name as C0 ones. */
	if (cp >= 0x80 && cp <= 0x9f)
		return 0;
	return len;
}

/* 0 if s[0..n) is valid UTF-8 free of control characters, else -1. */
static int
store_text_ok(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;

	for (size_t i = 0; i < n;) {
		if (p[i] < 0x20 || p[i] == 0x7f)
			return -1;
		size_t l = store_utf8_len(p + i, n - i);
		if (l == 0)
			return -1;
		i += l;
	}
	return 0;
}

int
store_name_norm(struct store *st, const char *name, char *out)
{
	size_t len;

	if (name == NULL)
		return store_fail(st, STORE_ERR_INVALID, "missing mailbox name");
	len = strnlen(name, STORE_NAME_MAX + 1);
	if (len == 0 || len > STORE_NAME_MAX)
		return store_fail(st, STORE_ERR_INVALID, "mailbox name empty or too long");
	if (store_text_ok(name, len) < 0)
		return store_fail(st, STORE_ERR_INVALID, "mailbox name is not clean UTF-8");
	if (name[0] == '/' || name[len - 1] == '/' || strstr(name, "//") != NULL)
		return store_fail(st, STORE_ERR_INVALID, "mailbox name has an empty level");
	/* LIST wildcards in a name would make it unmatchable. */
	if (strpbrk(name, "*%") != NULL)
		return store_fail(st, STORE_ERR_INVALID, "mailbox name contains a wildcard");
	memcpy(out, name, len + 1);
	if (strncasecmp(out, "INBOX", 5) == 0 && (out[5] == '\0' || out[5] == '/'))
		memcpy(out, "INBOX", 5);
	return 0;
}

/*
 * Split and check "local@domain" into the two path components, lowercased.
 * 0, or -1 with a reason in err.
 */
static int
store_account_split(const char *account, char **local_r, char **domain_r, struct buf *err)
{
	size_t len = account ? strnlen(account, STORE_LOCAL_MAX + STORE_DOMAIN_MAX + 2) : 0;
	const char *why = NULL;

	if (account == NULL) {
		if (err != NULL)
			buf_puts(err, "missing account name");
		return -1;
	}
	if (len > STORE_LOCAL_MAX + STORE_DOMAIN_MAX + 1)
		why = "too long";
	else if (store_text_ok(account, len) < 0)
		why = "not clean UTF-8";
	else if (strchr(account, '/') != NULL || strchr(account, '\\') != NULL)
		why = "contains a slash";
	else if (strstr(account, "..") != NULL)
		why = "contains \"..\"";
	if (why == NULL) {
		const char *at = strrchr(account, '@');
		size_t llen = at ? (size_t)(at - account) : 0;
		size_t dlen = at ? len - llen - 1 : 0;
		if (at == NULL || llen == 0 || dlen == 0)
			why = "is not local@domain";
		else if (llen > STORE_LOCAL_MAX || dlen > STORE_DOMAIN_MAX)
			why = "too long";
		else if (account[0] == '.' || at[1] == '.')
			why = "a part starts with a dot";
		if (why == NULL) {
			*local_r = util_lower(xstrndup(account, llen));
			*domain_r = util_lower(xstrdup(at + 1));
			return 0;
		}
	}
	if (err != NULL) {
		char esc[128];
		buf_printf(err, "bad account name \"%s\": %s", log_esc(esc, sizeof(esc), account),
			   why);
	}
	return -1;
}

/* --- mailbox rows --- */

int
store_next_uidvalidity(struct store *st, uint32_t *r)
{
	sqlite3_stmt *s = store_stmt(st, SQL_META_GET);
	int64_t last = 0, now = util_now_ms() / 1000, v;
	int rc;

	if (s == NULL)
		return -1;
	sqlite3_bind_text(s, 1, "uidvalidity", -1, SQLITE_STATIC);
	if ((rc = store_step(st, s)) < 0)
		return -1;
	if (rc == 1) {
		last = sqlite3_column_int64(s, 0);
		sqlite3_reset(s);
	}
	v = now > last ? now : last + 1;
	if (v <= 0 || v > UINT32_MAX)
		return store_fail(st, STORE_ERR_LIMIT, "UIDVALIDITY space exhausted");
	if ((s = store_stmt(st, SQL_META_SET)) == NULL)
		return -1;
	sqlite3_bind_text(s, 1, "uidvalidity", -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, v);
	if (store_exec(st, s) < 0)
		return -1;
	*r = (uint32_t)v;
	return 0;
}

int
store_mbox_get(struct store *st, const char *name, struct store_mbox_row *r)
{
	sqlite3_stmt *s = store_stmt(st, SQL_MBOX_GET);
	int rc;

	if (s == NULL)
		return -1;
	sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
	if ((rc = store_step(st, s)) <= 0)
		return rc;
	xsnprintf(r->name, sizeof(r->name), "%s", name);
	r->id = sqlite3_column_int64(s, 0);
	r->uidvalidity = (uint32_t)sqlite3_column_int64(s, 1);
	r->uidnext = (uint32_t)sqlite3_column_int64(s, 2);
	r->highestmodseq = (uint64_t)sqlite3_column_int64(s, 3);
	r->noselect = sqlite3_column_int(s, 4);
	r->special_use = (unsigned)sqlite3_column_int(s, 5);
	r->recent_uid = (uint32_t)sqlite3_column_int64(s, 6);
	sqlite3_reset(s);
	return 1;
}

int
store_mbox_open(struct store *st, const char *raw, uint32_t uidvalidity, struct store_mbox_row *r)
{
	char name[STORE_NAME_MAX + 1];
	int rc;

	if (store_name_norm(st, raw, name) < 0)
		return -1;
	if ((rc = store_mbox_get(st, name, r)) < 0)
		return -1;
	if (rc == 0)
		return store_fail(st, STORE_ERR_NOMAILBOX, "no mailbox %s", name);
	if (r->noselect)
		return store_fail(st, STORE_ERR_NOSELECT, "mailbox %s is not selectable", name);
	if (uidvalidity != 0 && uidvalidity != r->uidvalidity)
		return store_fail(st, STORE_ERR_CHANGED, "mailbox %s was replaced", name);
	return 0;
}

int
store_count(struct store *st, enum store_sql which, const char *name, int64_t *n_r)
{
	sqlite3_stmt *s = store_stmt(st, which);
	int rc;

	if (s == NULL)
		return -1;
	if (name != NULL)
		sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
	if ((rc = store_step(st, s)) < 0)
		return -1;
	*n_r = rc == 1 ? sqlite3_column_int64(s, 0) : 0;
	sqlite3_reset(s);
	return 0;
}

int
store_mbox_insert(struct store *st, const char *name, unsigned special_use, int subscribe,
		  int64_t *id_r)
{
	uint32_t uidvalidity = 0;
	sqlite3_stmt *s;
	int64_t have;

	/* Every new mailbox row comes here: CREATE, its parents, RENAME, INBOX. */
	if (store_count(st, SQL_MBOX_COUNT, NULL, &have) < 0)
		return -1;
	if (have >= STORE_MAILBOXES_MAX)
		return store_fail(st, STORE_ERR_LIMIT, "too many mailboxes (%d)",
				  STORE_MAILBOXES_MAX);
	if (store_next_uidvalidity(st, &uidvalidity) < 0)
		return -1;
	if ((s = store_stmt(st, SQL_MBOX_INSERT)) == NULL)
		return -1;
	sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, uidvalidity);
	sqlite3_bind_int(s, 3, (int)(special_use & STORE_USE_MASK));
	if (store_exec(st, s) < 0)
		return -1;
	if (id_r != NULL)
		*id_r = sqlite3_last_insert_rowid(st->db);
	if (subscribe) {
		if ((s = store_stmt(st, SQL_SUB_ADD)) == NULL)
			return -1;
		sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
		if (store_exec(st, s) < 0)
			return -1;
	}
	return 0;
}

int
store_mbox_make_parents(struct store *st, const char *name)
{
	char parent[STORE_NAME_MAX + 1];
	struct store_mbox_row row;

	for (const char *p = strchr(name, '/'); p != NULL; p = strchr(p + 1, '/')) {
		size_t n = (size_t)(p - name);
		memcpy(parent, name, n);
		parent[n] = '\0';
		int rc = store_mbox_get(st, parent, &row);
		if (rc < 0)
			return -1;
		if (rc == 0 && store_mbox_insert(st, parent, 0, 0, NULL) < 0)
			return -1;
	}
	return 0;
}

int
store_files_release(struct store *st, const int64_t *ids, size_t n, struct store_names *names)
{
	for (size_t i = 0; i < n; i++) {
		sqlite3_stmt *s = store_stmt(st, SQL_FILE_RELEASE);
		int rc;

		if (s == NULL)
			return -1;
		sqlite3_bind_int64(s, 1, ids[i]);
		while ((rc = store_step(st, s)) == 1)
			store_names_add(names, sqlite3_column_int64(s, 0));
		if (rc < 0)
			return -1;
	}
	return 0;
}

void
store_names_add(struct store_names *l, int64_t id)
{
	if (l->n == l->cap) {
		l->cap = l->cap ? l->cap * 2 : 16;
		l->v = xrealloc(l->v, l->cap * sizeof(*l->v));
	}
	l->v[l->n++] = id;
}

void
store_names_free(struct store_names *l)
{
	free(l->v);
	l->v = NULL;
	l->n = l->cap = 0;
}

/* --- open and close --- */

/* Run the fixed per-connection settings. 0 or -1. */
static int
store_db_setup(struct store *st)
{
	sqlite3_stmt *s = NULL;
	int ok = 0, rc = SQLITE_ERROR;

	sqlite3_busy_timeout(st->db, STORE_BUSY_TIMEOUT_MS);
	sqlite3_extended_result_codes(st->db, 1);
	/*
	 * Two first openers of a new index race to switch it to WAL; the loser
	 * gets SQLITE_BUSY at once (SQLite does not wait where waiting could
	 * deadlock), so it tries again, as long as the busy timeout.
	 */
	for (int waited = 0; waited <= STORE_BUSY_TIMEOUT_MS; waited += 10) {
		if (sqlite3_prepare_v2(st->db, "PRAGMA journal_mode=WAL", -1, &s, NULL) ==
		    SQLITE_OK &&
		    (rc = sqlite3_step(s)) == SQLITE_ROW) {
			const char *mode = (const char *)sqlite3_column_text(s, 0);
			ok = mode != NULL && strcmp(mode, "wal") == 0;
		}
		sqlite3_finalize(s);
		s = NULL;
		if (ok || (rc & 0xff) != SQLITE_BUSY)
			break;
		usleep(10000);
	}
	if (!ok)
		return store_db_fail(st, "journal_mode=WAL");
	/*
	 * NORMAL: a commit does not fsync the WAL itself (checkpoints still
	 * sync, so the database stays consistent); store_commit() makes every
	 * write transaction durable through the group-commit barrier before it
	 * returns, and only then does anyone hear 250 or OK.
	 */
	if (sqlite3_exec(st->db,
			 "PRAGMA synchronous=NORMAL;"
			 "PRAGMA secure_delete=FAST;"
			 "PRAGMA temp_store=MEMORY;"
			 "PRAGMA journal_size_limit=8388608;",
			 NULL, NULL, NULL) != SQLITE_OK)
		return store_db_fail(st, "pragma");
	return 0;
}

/* Read PRAGMA user_version. -1 on error. */
static int
store_db_version(struct store *st)
{
	sqlite3_stmt *s = NULL;
	int v = -1;

	if (sqlite3_prepare_v2(st->db, "PRAGMA user_version", -1, &s, NULL) == SQLITE_OK &&
	    sqlite3_step(s) == SQLITE_ROW)
		v = sqlite3_column_int(s, 0);
	else
		store_db_fail(st, "user_version");
	sqlite3_finalize(s);
	return v;
}

/*
 * SQL store_noeol(file_id), for the upgrade to schema 6: 1 when the
 * message file does not end in LF, from its last octet. A file that
 * cannot be read counts as ending in one (as before the upgrade).
 */
static void
store_db_noeol(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
	struct store *st = sqlite3_user_data(ctx);
	char path[4096];
	struct stat sb;
	char last = '\n';
	int fd;

	(void)argc;
	if (store_file_path(st, sqlite3_value_int64(argv[0]), path, sizeof(path)) == 0 &&
	    (fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) >= 0) {
		if (fstat(fd, &sb) == 0 && sb.st_size > 0 &&
		    pread(fd, &last, 1, sb.st_size - 1) != 1)
			last = '\n';
		close(fd);
	}
	sqlite3_result_int(ctx, last != '\n');
}

/* Create the schema and the default mailboxes unless another opener did. 0 or -1. */
static int
store_db_create(struct store *st)
{
	int v;

	if (store_begin(st, 1) < 0)
		return -1;
	if ((v = store_db_version(st)) < 0)
		goto fail;
	if (v >= STORE_SCHEMA_VERSION)
		return store_commit(st);
	if (v >= 1) {
		/* Older messages have no header cache: SEARCH reads their headers. */
		const char *up = v < 3 ? "DROP TRIGGER files_ad;" STORE_SCHEMA_SEARCH
					 STORE_SCHEMA_PENDING STORE_SCHEMA_FILES_AD
				       : "DROP TRIGGER files_ad;" STORE_SCHEMA_PENDING
					 STORE_SCHEMA_FILES_AD;
		if (v < 4 && sqlite3_exec(st->db, up, NULL, NULL, NULL) != SQLITE_OK) {
			store_db_fail(st, "upgrade schema to 4");
			goto fail;
		}
		if (v < 5 &&
		    sqlite3_exec(st->db, STORE_SCHEMA_UP_5, NULL, NULL, NULL) != SQLITE_OK) {
			store_db_fail(st, "upgrade schema to 5");
			goto fail;
		}
	} else {
		if (sqlite3_exec(st->db, store_schema, NULL, NULL, NULL) != SQLITE_OK) {
			store_db_fail(st, "create schema");
			goto fail;
		}
		for (size_t i = 0; i < ARRAY_LEN(store_defaults); i++)
			if (store_mbox_insert(st, store_defaults[i].name, store_defaults[i].use, 1,
					      NULL) < 0)
				goto fail;
	}
	if (sqlite3_create_function(st->db, "store_noeol", 1, SQLITE_UTF8, st, store_db_noeol, NULL,
				    NULL) != SQLITE_OK ||
	    sqlite3_exec(st->db, STORE_SCHEMA_UP_6, NULL, NULL, NULL) != SQLITE_OK) {
		store_db_fail(st, "upgrade schema to 6");
		goto fail;
	}
	char pragma[64];
	xsnprintf(pragma, sizeof(pragma), "PRAGMA user_version=%d", STORE_SCHEMA_VERSION);
	if (sqlite3_exec(st->db, pragma, NULL, NULL, NULL) != SQLITE_OK) {
		store_db_fail(st, "set user_version");
		goto fail;
	}
	return store_commit(st);
fail:
	store_rollback(st);
	return -1;
}

/* Make the account's directories, fsyncing each new level into its parent. 0 or -1. */
static int
store_make_dirs(struct store *st, const char *data_dir, const char *domain)
{
	char path[4096];
	const char *sub[] = {"tmp", "msg"};

	for (size_t i = 0; i < ARRAY_LEN(sub); i++) {
		if (xsnprintf(path, sizeof(path), "%s/%s", st->root, sub[i]) < 0)
			return store_fail(st, STORE_ERR_INTERNAL, "path too long");
		if (util_mkdir_p(path, 0700) < 0)
			return store_fail(st, STORE_ERR_INTERNAL, "mkdir(%s) failed: %s", path,
					  strerror(errno));
	}
	/* The account dir, its domain dir and mail/ may all be new: make them durable. */
	const char *levels[] = {st->root, NULL, NULL};
	char dom[4096], mail[4096];
	if (xsnprintf(dom, sizeof(dom), "%s/mail/%s", data_dir, domain) < 0 ||
	    xsnprintf(mail, sizeof(mail), "%s/mail", data_dir) < 0)
		return store_fail(st, STORE_ERR_INTERNAL, "path too long");
	levels[1] = dom;
	levels[2] = mail;
	for (size_t i = 0; i < ARRAY_LEN(levels); i++)
		if (util_fsync_dir(levels[i]) < 0)
			return store_fail(st, STORE_ERR_INTERNAL, "fsync(%s) failed: %s", levels[i],
					  strerror(errno));
	return 0;
}

/* The store's random id into st->gen: 1 read, 0 none yet, -1 on error. */
static int
store_read_gen(struct store *st)
{
	sqlite3_stmt *s = store_stmt(st, SQL_META_GET);
	int rc;

	if (s == NULL)
		return -1;
	sqlite3_bind_text(s, 1, "store_id", -1, SQLITE_STATIC);
	if ((rc = store_step(st, s)) == 1) {
		st->gen = sqlite3_column_int64(s, 0);
		sqlite3_reset(s);
	}
	return rc;
}

/*
 * The store's random id, made at its first open (and at the first open of
 * a store older than ids): a store made anew under an address that had
 * one has another id, whatever inode its directory got. Two first openers
 * race harmlessly: the first id written stays.
 */
static int
store_load_gen(struct store *st)
{
	int rc = store_read_gen(st);

	if (rc != 0)
		return rc < 0 ? -1 : 0;
	int64_t gen = 0;
	while (gen <= 0) {
		util_random(&gen, sizeof(gen));
		gen &= INT64_MAX;
	}
	sqlite3_stmt *s;
	if (store_begin(st, 1) < 0)
		return -1;
	if ((s = store_stmt(st, SQL_META_ADD)) == NULL)
		goto fail;
	sqlite3_bind_text(s, 1, "store_id", -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, gen);
	if (store_exec(st, s) < 0 || store_commit(st) < 0)
		goto fail;
	return store_read_gen(st) == 1 ? 0 : store_fail(st, STORE_ERR_INTERNAL, "no store id");
fail:
	store_rollback(st);
	return -1;
}

/*
 * Whether the store has msg/ but no tmp/: what a delivery racing `surat
 * user del` left at the moved store's path before store_file_link() made
 * msg/XX alone. No message could be added to a store made over it.
 */
static int
store_tmp_missing(const struct store *st)
{
	char path[4096];
	struct stat sb;

	return xsnprintf(path, sizeof(path), "%s/tmp", st->root) >= 0 && stat(path, &sb) < 0 &&
	       errno == ENOENT;
}

/* missing: NULL to make the store if there is none, else set when there is none. */
static struct store *
store_open_at(const char *data_dir, const char *account, int *missing, struct buf *err)
{
	char *local = NULL, *domain = NULL;
	char path[4096];
	struct stat sb;
	struct store *st;
	int v;

	if (store_account_split(account, &local, &domain, err) < 0)
		return NULL;
	st = xcalloc(1, sizeof(*st));
	buf_init(&st->errmsg, 0);
	st->account = xasprintf("%s@%s", local, domain);
	st->data_dir = xstrdup(data_dir);
	st->root = xasprintf("%s/mail/%s/%s", data_dir, domain, local);
	st->root_fd = -1;
	st->fts_backlog = 1;	/* unknown until looked: a closed handle's queue may wait */
	if (xsnprintf(path, sizeof(path), "%s/msg", st->root) < 0) {
		store_fail(st, STORE_ERR_INTERNAL, "path too long");
		goto fail;
	}
	if (stat(path, &sb) < 0) {
		if (missing != NULL) {
			*missing = errno == ENOENT;
			store_fail(st, STORE_ERR_INVALID, "stat(%s) failed: %s", path, strerror(errno));
			goto fail;
		}
		if (store_make_dirs(st, data_dir, domain) < 0)
			goto fail;
	} else if (store_tmp_missing(st) && store_make_dirs(st, data_dir, domain) < 0) {
		goto fail;
	}
	/*
	 * The directory stays open as long as the handle: its inode cannot be
	 * freed and reused by a store made later under the same path (after a
	 * `surat user del` and the removal of what it moved aside), so dev/ino
	 * name this store alone for the handle's life.
	 */
	st->root_fd = open(st->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (st->root_fd < 0 || fstat(st->root_fd, &sb) < 0) {
		store_fail(st, STORE_ERR_INTERNAL, "open(%s) failed: %s", st->root, strerror(errno));
		goto fail;
	}
	st->root_dev = sb.st_dev;
	st->root_ino = sb.st_ino;
	xsnprintf(path, sizeof(path), "%s/index.db", st->root);
	if (sqlite3_open_v2(path, &st->db,
			    SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
			    NULL) != SQLITE_OK) {
		if (st->db == NULL)
			store_fail(st, STORE_ERR_INTERNAL, "sqlite3_open(%s) failed", path);
		else
			store_db_fail(st, "open");
		goto fail;
	}
	if (store_db_setup(st) < 0 || (v = store_db_version(st)) < 0)
		goto fail;
	if (v > STORE_SCHEMA_VERSION) {
		store_fail(st, STORE_ERR_INTERNAL, "%s: schema version %d is newer than ours", path,
			   v);
		goto fail;
	}
	if (v < STORE_SCHEMA_VERSION && store_db_create(st) < 0)
		goto fail;
	if (store_load_gen(st) < 0)
		goto fail;
	store_file_sweep_tmp(st);
	store_clear_error(st);
	free(local);
	free(domain);
	return st;
fail:
	if (err != NULL)
		buf_puts(err, store_errstr(st));
	free(local);
	free(domain);
	store_close(&st);
	return NULL;
}

struct store *
store_open(const char *data_dir, const char *account, struct buf *err)
{
	return store_open_at(data_dir, account, NULL, err);
}

struct store *
store_open_existing(const char *data_dir, const char *account, int *missing, struct buf *err)
{
	*missing = 0;
	return store_open_at(data_dir, account, missing, err);
}

void
store_id_of(const struct store *st, struct store_id *id)
{
	id->gen = st->gen;
}

int
store_root_current(const struct store *st)
{
	struct stat sb;

	return stat(st->root, &sb) == 0 && sb.st_dev == st->root_dev && sb.st_ino == st->root_ino;
}

int
store_account_retire(const char *data_dir, const char *account, struct buf *moved_to,
		     struct buf *err)
{
	char *local = NULL, *domain = NULL, *base = NULL;
	int rc = -1;

	if (store_account_split(account, &local, &domain, err) < 0)
		return -1;
	char *parent = xasprintf("%s/mail/%s", data_dir, domain);
	char *root = xasprintf("%s/%s", parent, local);
	char *dir = xasprintf("%s/deleted", data_dir);
	char stamp[32];
	time_t now = time(NULL);
	struct tm tm;
	gmtime_r(&now, &tm);
	strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
	struct stat sb;
	int made = lstat(dir, &sb) < 0;
	if (lstat(root, &sb) < 0 && errno == ENOENT) {
		rc = 0;	/* never had mail */
		goto out;
	}
	if (util_mkdir_p(dir, 0700) < 0 || (made && util_fsync_dir(data_dir) < 0)) {
		buf_printf(err, "mkdir(%s) failed: %s", dir, strerror(errno));
		goto out;
	}
	/*
	 * One file name (NAME_MAX, 255 octets) holds the address, the time and
	 * a ".99": a long address is cut (at a character's start), or the
	 * rename fails and the mail stays for an account made again.
	 */
	base = xasprintf("%s@%s", local, domain);
	size_t room = 255 - 1 - strlen(stamp) - 3, blen = strlen(base);
	if (blen > room) {
		blen = room;
		while (blen > 0 && ((unsigned char)base[blen] & 0xc0) == 0x80)
			blen--;
	}
	/* Never over an earlier deletion of the address (within the same second). */
	for (int n = 0;; n++) {
		buf_reset(moved_to);
		buf_printf(moved_to, "%s/%.*s.%s", dir, (int)blen, base, stamp);
		if (n > 0)
			buf_printf(moved_to, ".%d", n);
		if (util_rename_new(root, moved_to->data) == 0)
			break;
		if (errno != EEXIST || n == 99) {
			buf_printf(err, "rename(%s, %s) failed: %s", root, moved_to->data,
				   strerror(errno));
			goto out;
		}
	}
	if (util_fsync_dir(dir) < 0 || util_fsync_dir(parent) < 0)
		buf_printf(err, "fsync after moving %s failed: %s", moved_to->data, strerror(errno));
	else
		rc = 1;
out:
	free(parent);
	free(root);
	free(dir);
	free(base);
	free(local);
	free(domain);
	return rc;
}

int
store_account_rename(const char *data_dir, const char *from, const char *to, struct buf *err)
{
	char *flocal = NULL, *fdomain = NULL, *tlocal = NULL, *tdomain = NULL;
	char *src = NULL, *dst = NULL, *parent = NULL;
	struct stat sb;
	int rc = -1;

	if (store_account_split(from, &flocal, &fdomain, err) < 0)
		return -1;
	if (store_account_split(to, &tlocal, &tdomain, err) < 0)
		goto out;
	if (strcmp(fdomain, tdomain) != 0) {
		buf_printf(err, "store rename %s -> %s: not the same domain", from, to);
		goto out;
	}
	parent = xasprintf("%s/mail/%s", data_dir, fdomain);
	src = xasprintf("%s/%s", parent, flocal);
	dst = xasprintf("%s/%s", parent, tlocal);
	if (strcmp(src, dst) == 0 || (lstat(src, &sb) < 0 && errno == ENOENT)) {
		rc = 0;
		goto out;
	}
	if (util_rename_new(src, dst) < 0) {
		if (errno == EEXIST)
			buf_printf(err, "both %s and %s hold mail of %s: merge or remove one first",
				   src, dst, to);
		else
			buf_printf(err, "rename(%s, %s) failed: %s", src, dst, strerror(errno));
		goto out;
	}
	if (util_fsync_dir(parent) < 0) {
		buf_printf(err, "fsync(%s) failed: %s", parent, strerror(errno));
		goto out;
	}
	rc = 1;
out:
	free(src);
	free(dst);
	free(parent);
	free(flocal);
	free(fdomain);
	free(tlocal);
	free(tdomain);
	return rc;
}

void
store_close(struct store **stp)
{
	struct store *st = *stp;

	if (st == NULL)
		return;
	store_rollback(st);
	for (size_t i = 0; i < SQL__COUNT; i++)
		sqlite3_finalize(st->stmt[i]);
	/*
	 * (A store moved aside since it was opened, store_account_retire():
	 * SQLite sees the database moved and neither checkpoints nor deletes
	 * the -wal and -shm, whose paths may name a new store of the account.)
	 */
	sqlite3_close(st->db);
	buf_free(&st->errmsg);
	free(st->account);
	free(st->data_dir);
	if (st->root_fd >= 0)
		close(st->root_fd);
	free(st->root);
	free(st);
	*stp = NULL;
}

/* --- account-wide --- */

int
store_usage(struct store *st, uint64_t *bytes_r, uint64_t *messages_r)
{
	sqlite3_stmt *s;
	int rc;

	store_clear_error(st);
	if ((s = store_stmt(st, SQL_USAGE)) == NULL || (rc = store_step(st, s)) < 0)
		return -1;
	if (rc == 0)
		return store_fail(st, STORE_ERR_INTERNAL, "usage row missing");
	if (bytes_r != NULL)
		*bytes_r = (uint64_t)sqlite3_column_int64(s, 0);
	if (messages_r != NULL)
		*messages_r = (uint64_t)sqlite3_column_int64(s, 1);
	sqlite3_reset(s);
	return 0;
}

/*
 * Dedup keys are kept STORE_DEDUP_DAYS, far past any retry of their message
 * (queue.max_age's default): once a day per account (the time in meta
 * "dedup_pruned", so a handle opened afresh does not scan the table again),
 * within the caller's write transaction, the older ones go. 0 or -1.
 */
int
store_prune_deliveries(struct store *st, int now)
{
	int64_t t = util_now_ms() / 1000;
	sqlite3_stmt *s;
	int rc;

	if (!now && st->pruned_s == 0) {
		if ((s = store_stmt(st, SQL_META_GET)) == NULL)
			return -1;
		sqlite3_bind_text(s, 1, "dedup_pruned", -1, SQLITE_STATIC);
		if ((rc = store_step(st, s)) < 0)
			return -1;
		if (rc == 1) {
			st->pruned_s = sqlite3_column_int64(s, 0);
			sqlite3_reset(s);
		}
	}
	/* (A clock set back prunes at once: a day ahead is no answer.) */
	if (!now && st->pruned_s != 0 && t >= st->pruned_s && t - st->pruned_s < 86400)
		return 0;
	if ((s = store_stmt(st, SQL_DELIV_PRUNE)) == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, t - STORE_DEDUP_DAYS * 86400);
	if (store_exec(st, s) < 0 || (s = store_stmt(st, SQL_META_SET)) == NULL)
		return -1;
	sqlite3_bind_text(s, 1, "dedup_pruned", -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, t);
	if (store_exec(st, s) < 0)
		return -1;
	st->pruned_s = t;
	return 0;
}

int
store_sweep(struct store *st)
{
	store_clear_error(st);
	store_file_sweep_tmp(st);
	if (store_prune_deliveries(st, 1) < 0)
		return -1;
	return store_file_sweep_all(st);
}

char *
store_uidl(char *out, size_t outlen, uint32_t uidvalidity, uint32_t uid)
{
	if (xsnprintf(out, outlen, "%x.%x", uidvalidity, uid) < 0 && outlen > 0)
		out[0] = '\0';
	return out;
}
