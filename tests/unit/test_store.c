/*
 * test_store — unit tests of the mailbox store against a real SQLite index
 * and message files in a temporary data directory.
 *
 * SECURITY: tests only; they create and remove files under a mkdtemp(3)
 * directory and nowhere else.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "unit_util.h"

#include <dirent.h>
#include <linux/fs.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "core/buf.h"
#include "core/util.h"
#include "mime/mime_meta.h"
#include "store/store.h"

#define ACCOUNT "alice@example.org"

struct fixture {
	char dir[64];
	struct store *st;
};

static const char msg1[] = "From: Bob <bob@example.net>\r\n"
			   "Subject: hello\r\n"
			   "\r\n"
			   "The quick brown fox.\r\n";

/*
 * syncfs(2) as the store reaches it (through core/fsbarrier), passed on.
 * It notes whether the file named by syncfs_watch was still there when a
 * flush ran, and what a reader of the index (syncfs_probe_db) saw then.
 */
static const char *syncfs_watch;
static int syncfs_saw_watch;
static sqlite3 *syncfs_probe_db; /* a reader of the index: its state at each flush */
static char syncfs_probe_seen[256];

/* What a reader sees of the index now: every counter a write moves. */
static void
probe_state(sqlite3 *db, char *out, size_t outlen)
{
	sqlite3_stmt *q;

	out[0] = '\0';
	assert_int_equal(sqlite3_prepare_v2(db,
					    "SELECT (SELECT group_concat(name || ':' || uidvalidity"
					    " || ':' || uidnext || ':' || highestmodseq || ':'"
					    " || messages || ':' || unseen, ',') FROM mailboxes),"
					    " (SELECT count(*) FROM subscriptions)",
					    -1, &q, NULL),
			 SQLITE_OK);
	if (sqlite3_step(q) == SQLITE_ROW)
		xsnprintf(out, outlen, "%s|%d", (const char *)sqlite3_column_text(q, 0),
			  sqlite3_column_int(q, 1));
	sqlite3_finalize(q);
}

int
syncfs(int fd)
{
	if (syncfs_watch != NULL && access(syncfs_watch, F_OK) == 0)
		syncfs_saw_watch = 1;
	if (syncfs_probe_db != NULL)
		probe_state(syncfs_probe_db, syncfs_probe_seen, sizeof(syncfs_probe_seen));
	return (int)syscall(SYS_syncfs, fd);
}

static int
setup(void **state)
{
	struct fixture *fx = xcalloc(1, sizeof(*fx));
	struct buf err = BUF_INIT(0);

	xsnprintf(fx->dir, sizeof(fx->dir), "/tmp/surat-store-XXXXXX");
	if (mkdtemp(fx->dir) == NULL)
		return -1;
	fx->st = store_open(fx->dir, ACCOUNT, &err);
	if (fx->st == NULL) {
		fprintf(stderr, "store_open: %s\n", buf_str(&err));
		buf_free(&err);
		return -1;
	}
	buf_free(&err);
	*state = fx;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *fx = *state;

	store_set_notify(NULL, NULL);
	syncfs_watch = NULL;
	sqlite3_close(syncfs_probe_db);
	syncfs_probe_db = NULL;
	store_close(&fx->st);
	unit_rm_tree(fx->dir);
	free(fx);
	return 0;
}

/* Deliver text, or with fts given, a message from Bob whose body is fts. */
static uint32_t
deliver(struct store *st, const char *mbox, const char *text, const char *fts)
{
	struct store_meta m = {0};
	uint32_t uid = 0;
	char composed[512];

	if (fts != NULL) {
		xsnprintf(composed, sizeof(composed),
			  "From: Bob <bob@example.net>\r\nSubject: hello\r\n\r\n%s\r\n", fts);
		text = composed;
	}

	m.envelope = "(NIL \"hello\" NIL NIL NIL NIL NIL NIL NIL NIL)";
	m.bodystructure = "(\"text\" \"plain\" NIL NIL NIL \"7bit\" 22 1 NIL NIL NIL NIL)";
	m.body = "(\"text\" \"plain\" NIL NIL NIL \"7bit\" 22 1)";
	m.hdr_subject = "hello";
	m.hdr_from = "bob@example.net";
	int r = store_deliver(st, mbox, text, strlen(text), &m, NULL, &uid);
	if (r != 1)
		fprintf(stderr, "deliver: %s\n", store_errstr(st));
	assert_int_equal(r, 1);
	return uid;
}

/* Read a whole fd into a malloc'd string. */
static char *
read_fd(int fd, size_t *len_r)
{
	struct buf b = BUF_INIT(0);
	char tmp[4096];
	ssize_t n;

	while ((n = read(fd, tmp, sizeof(tmp))) > 0)
		buf_append(&b, tmp, (size_t)n);
	close(fd);
	*len_r = b.len;
	return b.data ? buf_steal(&b) : xstrdup("");
}

static const struct store_mbox_info *
find_mbox(const struct store_mbox_info *l, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(l[i].name, name) == 0)
			return &l[i];
	return NULL;
}

/* Number of regular files below dir (recursively). */
static int count_files_n;
static int
count_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)path;
	(void)sb;
	(void)ftw;
	if (flag == FTW_F)
		count_files_n++;
	return 0;
}

static int
count_files(const char *dir, const char *sub)
{
	char path[512];

	xsnprintf(path, sizeof(path), "%s/mail/example.org/alice/%s", dir, sub);
	count_files_n = 0;
	nftw(path, count_cb, 16, FTW_PHYS);
	return count_files_n;
}

static void
test_default_mailboxes(void **state)
{
	struct fixture *fx = *state;
	struct store_mbox_info *l;
	size_t n;
	struct store_status a, b;

	assert_int_equal(store_mailbox_list(fx->st, &l, &n), 0);
	assert_int_equal(n, 6);
	const struct {
		const char *name;
		unsigned use;
	} want[] = {{"INBOX", 0},
		    {"Sent", STORE_USE_SENT},
		    {"Drafts", STORE_USE_DRAFTS},
		    {"Trash", STORE_USE_TRASH},
		    {"Junk", STORE_USE_JUNK},
		    {"Archive", STORE_USE_ARCHIVE}};
	for (size_t i = 0; i < ARRAY_LEN(want); i++) {
		const struct store_mbox_info *e = find_mbox(l, n, want[i].name);
		assert_non_null(e);
		assert_int_equal(e->special_use, want[i].use);
		assert_int_equal(e->attrs, STORE_MBOX_SUBSCRIBED);
	}
	store_mailbox_list_free(&l, n);
	assert_null(l);

	/* UIDVALIDITY is unique per mailbox. */
	assert_int_equal(store_mailbox_status(fx->st, "INBOX", &a), 0);
	assert_int_equal(store_mailbox_status(fx->st, "Sent", &b), 0);
	assert_int_not_equal(a.uidvalidity, b.uidvalidity);
	assert_int_equal(a.uidnext, 1);
	assert_int_equal(a.messages, 0);

	/* Reopening is idempotent; "inbox" is INBOX; the account is lowercased. */
	struct store *st2 = store_open(fx->dir, "Alice@Example.ORG", NULL);
	assert_non_null(st2);
	assert_string_equal(store_account(st2), ACCOUNT);
	assert_int_equal(store_mailbox_status(st2, "inbox", &b), 0);
	assert_int_equal(a.uidvalidity, b.uidvalidity);
	assert_int_equal(store_mailbox_list(st2, &l, &n), 0);
	assert_int_equal(n, 6);
	store_mailbox_list_free(&l, n);
	store_close(&st2);
	assert_null(st2);
}

static void
test_bad_names(void **state)
{
	struct fixture *fx = *state;
	struct buf err = BUF_INIT(0);
	const char *bad_accounts[] = {"../x@example.org",
				      "a/b@example.org",
				      "a@..",
				      "a@example/org",
				      "noat",
				      "@example.org",
				      "a@",
				      ".@example.org",
				      "a@.",
				      "a\x01@example.org",
				      "a@ex\x7f.org",
				      "a@\xff.org"};

	for (size_t i = 0; i < ARRAY_LEN(bad_accounts); i++) {
		buf_reset(&err);
		assert_null(store_open(fx->dir, bad_accounts[i], &err));
		assert_true(err.len > 0);
	}
	buf_free(&err);

	const char *bad_mbox[] = {"",	"/a",  "a/",	   "a//b",	  "a\tb",
				  "a*", "a%b", "\xc0\xaf", "\xed\xa0\x80"};
	for (size_t i = 0; i < ARRAY_LEN(bad_mbox); i++) {
		assert_int_equal(store_mailbox_create(fx->st, bad_mbox[i], 0), -1);
		assert_int_equal(store_errcode(fx->st), STORE_ERR_INVALID);
	}
	/* UTF-8 names are fine. */
	assert_int_equal(store_mailbox_create(fx->st, "Entwürfe/日本", 0), 0);
	assert_int_equal(store_mailbox_create(fx->st, "Entwürfe", 0), -1);
	assert_int_equal(store_errcode(fx->st), STORE_ERR_EXISTS);
	assert_int_equal(store_mailbox_create(fx->st, "inbox", 0), -1);
	assert_int_equal(store_errcode(fx->st), STORE_ERR_EXISTS);
	assert_int_equal(store_mailbox_create(fx->st, "x", 0x1000), -1);
}

static void
test_deliver_read(void **state)
{
	struct fixture *fx = *state;
	struct store_msg_meta meta;
	uint64_t size;
	size_t len;
	int fd;

	uint32_t uid = deliver(fx->st, NULL, msg1, "The quick brown fox.");
	assert_int_equal(uid, 1);
	assert_int_equal(store_msg_open(fx->st, "INBOX", 0, uid, &fd, &size), 1);
	assert_int_equal(size, strlen(msg1));
	char *got = read_fd(fd, &len);
	assert_int_equal(len, strlen(msg1));
	assert_memory_equal(got, msg1, len);
	free(got);

	assert_int_equal(store_msg_meta(fx->st, "INBOX", 0, uid, &meta), 1);
	assert_int_equal(meta.size, strlen(msg1));
	assert_string_equal(meta.envelope, "(NIL \"hello\" NIL NIL NIL NIL NIL NIL NIL NIL)");
	assert_non_null(meta.bodystructure);
	assert_non_null(meta.body);
	store_msg_meta_free(&meta);
	assert_int_equal(store_msg_meta(fx->st, "INBOX", 0, 99, &meta), 0);
	assert_int_equal(store_msg_open(fx->st, "INBOX", 0, 99, &fd, NULL), 0);
	assert_int_equal(store_errcode(fx->st), STORE_ERR_NOMSG);

	/* Bare LF becomes CRLF; the size is that of the stored file. */
	uint32_t uid2 = deliver(fx->st, "INBOX", "Subject: x\n\nline\r\nend\n", NULL);
	assert_int_equal(uid2, 2);
	assert_int_equal(store_msg_open(fx->st, "INBOX", 0, uid2, &fd, &size), 1);
	got = read_fd(fd, &len);
	assert_string_equal(got, "Subject: x\r\n\r\nline\r\nend\r\n");
	assert_int_equal(size, len);
	/* What the queue's quota look counts before it stores (no parse). */
	assert_int_equal(store_stored_size("Subject: x\n\nline\r\nend\n", 22), len);
	assert_int_equal(store_stored_size("\nx\r\n", 4), 5);
	free(got);

	/* Snapshot. */
	struct store_mbox_view *v;
	assert_int_equal(store_mailbox_load(fx->st, "INBOX", &v), 0);
	assert_int_equal(v->count, 2);
	assert_int_equal(v->uidnext, 3);
	assert_int_equal(v->msgs[0].uid, 1);
	assert_int_equal(v->msgs[1].uid, 2);
	assert_true(v->msgs[1].modseq > v->msgs[0].modseq);
	assert_int_equal(v->highestmodseq, v->msgs[1].modseq);
	assert_int_equal(v->msgs[0].size, strlen(msg1));
	assert_true(v->msgs[0].internal_date > 1600000000);
	store_mbox_view_free(&v);
	assert_null(v);

	/* Append with flags, keywords, date; APPENDUID data. */
	const char *kw[] = {"$Forwarded", "Work"};
	struct store_meta m = {.internal_date = 1000000000,
			       .internal_tz = 120,
			       .flags = STORE_F_SEEN | STORE_F_DRAFT,
			       .keywords = kw,
			       .nkeywords = 2};
	uint32_t auid, avalid;
	struct store_status stt;
	assert_int_equal(store_append(fx->st, "Drafts", msg1, strlen(msg1), &m, &auid, &avalid), 0);
	assert_int_equal(store_mailbox_status(fx->st, "Drafts", &stt), 0);
	assert_int_equal(auid, 1);
	assert_int_equal(avalid, stt.uidvalidity);
	assert_int_equal(stt.unseen, 0);
	assert_int_equal(stt.messages, 1);
	assert_int_equal(store_mailbox_load(fx->st, "Drafts", &v), 0);
	assert_int_equal(v->msgs[0].flags, STORE_F_SEEN | STORE_F_DRAFT);
	assert_string_equal(v->msgs[0].keywords, "$Forwarded Work");
	assert_int_equal(v->msgs[0].internal_date, 1000000000);
	assert_int_equal(v->msgs[0].internal_tz, 120);
	store_mbox_view_free(&v);

	/* Errors: missing mailbox, bad keyword. */
	assert_int_equal(store_append(fx->st, "Nope", msg1, strlen(msg1), NULL, NULL, NULL), -1);
	assert_int_equal(store_errcode(fx->st), STORE_ERR_NOMAILBOX);
	const char *badkw[] = {"a b"};
	m.keywords = badkw;
	m.nkeywords = 1;
	assert_int_equal(store_append(fx->st, "Drafts", msg1, strlen(msg1), &m, NULL, NULL), -1);
	assert_int_equal(store_errcode(fx->st), STORE_ERR_INVALID);
	/* No leftovers from the failures. */
	assert_int_equal(count_files(fx->dir, "tmp"), 0);
	assert_int_equal(count_files(fx->dir, "msg"), 3);
}

static void
test_dedup(void **state)
{
	struct fixture *fx = *state;
	uint32_t uid = 0;
	struct store_status s;

	assert_int_equal(store_deliver(fx->st, NULL, msg1, strlen(msg1), NULL, "q1:rcpt0", &uid),
			 1);
	assert_int_equal(uid, 1);
	uid = 0;
	assert_int_equal(store_deliver(fx->st, NULL, msg1, strlen(msg1), NULL, "q1:rcpt0", &uid),
			 0);
	assert_int_equal(uid, 0);
	assert_int_equal(store_deliver(fx->st, NULL, msg1, strlen(msg1), NULL, "q1:rcpt1", &uid),
			 1);
	assert_int_equal(uid, 2);

	/* The key survives a reopen, and counts for any mailbox. */
	store_close(&fx->st);
	fx->st = store_open(fx->dir, ACCOUNT, NULL);
	assert_non_null(fx->st);
	assert_int_equal(store_deliver(fx->st, "Junk", msg1, strlen(msg1), NULL, "q1:rcpt0", NULL),
			 0);
	assert_int_equal(store_mailbox_status(fx->st, "INBOX", &s), 0);
	assert_int_equal(s.messages, 2);
	assert_int_equal(store_mailbox_status(fx->st, "Junk", &s), 0);
	assert_int_equal(s.messages, 0);
	assert_int_equal(count_files(fx->dir, "msg"), 2);
	assert_int_equal(count_files(fx->dir, "tmp"), 0);
	assert_int_equal(store_deliver(fx->st, NULL, msg1, strlen(msg1), NULL, "", NULL), -1);
}

/* Count the dedup keys in the account's index, through a connection of its own. */
static int
dedup_rows(struct fixture *fx)
{
	char path[256];
	sqlite3 *db;
	sqlite3_stmt *q;
	int n = -1;

	xsnprintf(path, sizeof(path), "%s/mail/example.org/alice/index.db", fx->dir);
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	if (sqlite3_prepare_v2(db, "SELECT count(*) FROM deliveries", -1, &q, NULL) == SQLITE_OK &&
	    sqlite3_step(q) == SQLITE_ROW)
		n = sqlite3_column_int(q, 0);
	sqlite3_finalize(q);
	sqlite3_close(db);
	return n;
}

/* Run sql on the account's index through a connection of its own. */
static void
index_exec(struct fixture *fx, const char *sql)
{
	char path[256];
	sqlite3 *db;

	xsnprintf(path, sizeof(path), "%s/mail/example.org/alice/index.db", fx->dir);
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
}

/*
 * Nothing in the daemon called store_sweep(), so every delivery's dedup key
 * stayed for good: a row per message ever delivered. A delivery now prunes
 * those past STORE_DEDUP_DAYS, once a day per account (not per handle: a
 * handle opened afresh does not scan the table again the same day).
 */
static void
test_dedup_keys_are_pruned(void **state)
{
	struct fixture *fx = *state;

	assert_int_equal(store_deliver(fx->st, NULL, msg1, strlen(msg1), NULL, "old", NULL), 1);
	assert_int_equal(store_deliver(fx->st, NULL, msg1, strlen(msg1), NULL, "new", NULL), 1);
	index_exec(fx, "UPDATE deliveries SET time = time - 31 * 86400 WHERE key = 'old'");
	/* Pruned today already, by this handle or another. */
	assert_int_equal(store_deliver(fx->st, NULL, msg1, strlen(msg1), NULL, "x1", NULL), 1);
	store_close(&fx->st);
	fx->st = store_open(fx->dir, ACCOUNT, NULL);
	assert_non_null(fx->st);
	assert_int_equal(store_deliver(fx->st, NULL, msg1, strlen(msg1), NULL, "x2", NULL), 1);
	assert_int_equal(dedup_rows(fx), 4);
	/* A day later, the next delivery of a new handle prunes. */
	index_exec(fx, "UPDATE meta SET value = value - 86400 WHERE key = 'dedup_pruned'");
	store_close(&fx->st);
	fx->st = store_open(fx->dir, ACCOUNT, NULL);
	assert_non_null(fx->st);
	assert_int_equal(store_deliver(fx->st, NULL, msg1, strlen(msg1), NULL, "x3", NULL), 1);
	assert_int_equal(dedup_rows(fx), 4);
	/* A key still kept still stops a second delivery. */
	assert_int_equal(store_deliver(fx->st, NULL, msg1, strlen(msg1), NULL, "new", NULL), 0);
}

static void
test_uid_monotonic(void **state)
{
	struct fixture *fx = *state;
	struct store_range all = {1, UINT32_MAX};
	struct store_flag_change del = {.op = STORE_FLAGS_ADD, .flags = STORE_F_DELETED};
	struct store_flag_result fr;
	uint32_t *uids;
	size_t n;

	for (int i = 0; i < 3; i++)
		deliver(fx->st, NULL, msg1, NULL);
	assert_int_equal(store_flags(fx->st, "INBOX", 0, &all, 1, &del, &fr), 0);
	assert_int_equal(fr.nchanged, 3);
	store_flag_result_free(&fr);
	assert_int_equal(store_expunge(fx->st, "INBOX", 0, NULL, 0, 0, &uids, &n, NULL), 0);
	assert_int_equal(n, 3);
	free(uids);
	assert_int_equal(deliver(fx->st, NULL, msg1, NULL), 4);

	/* Also across a reopen. */
	store_close(&fx->st);
	fx->st = store_open(fx->dir, ACCOUNT, NULL);
	assert_int_equal(deliver(fx->st, NULL, msg1, NULL), 5);
}

static void
test_flags_modseq(void **state)
{
	struct fixture *fx = *state;
	struct store_range r12 = {1, 2}, r1 = {1, 1}, r3 = {3, 3};
	struct store_flag_result fr;
	struct store_status s;
	uint64_t m0, m1;

	for (int i = 0; i < 3; i++)
		deliver(fx->st, NULL, msg1, NULL);
	assert_int_equal(store_mailbox_modseq(fx->st, "INBOX", NULL, &m0), 0);
	assert_int_equal(store_mailbox_status(fx->st, "INBOX", &s), 0);
	assert_int_equal(s.unseen, 3);

	struct store_flag_change seen = {.op = STORE_FLAGS_ADD, .flags = STORE_F_SEEN};
	assert_int_equal(store_flags(fx->st, "INBOX", 0, &r12, 1, &seen, &fr), 0);
	assert_int_equal(fr.nchanged, 2);
	assert_int_equal(fr.modseq, m0 + 1);
	assert_int_equal(fr.changed[0].uid, 1);
	assert_int_equal(fr.changed[0].modseq, m0 + 1);
	assert_int_equal(fr.changed[1].flags, STORE_F_SEEN);
	store_flag_result_free(&fr);
	assert_int_equal(store_mailbox_modseq(fx->st, "INBOX", NULL, &m1), 0);
	assert_int_equal(m1, m0 + 1);
	assert_int_equal(store_mailbox_status(fx->st, "INBOX", &s), 0);
	assert_int_equal(s.unseen, 1);

	/* A no-op changes nothing, modseq included. */
	assert_int_equal(store_flags(fx->st, "INBOX", 0, &r12, 1, &seen, &fr), 0);
	assert_int_equal(fr.nchanged, 0);
	assert_int_equal(fr.modseq, 0);
	store_flag_result_free(&fr);
	assert_int_equal(store_mailbox_modseq(fx->st, "INBOX", NULL, &m1), 0);
	assert_int_equal(m1, m0 + 1);

	/* UNCHANGEDSINCE: UID 1 (modseq m0+1) fails at m0, UID 3 passes. */
	const char *kw[] = {"$Label1"};
	struct store_flag_change c = {.op = STORE_FLAGS_ADD,
				      .flags = STORE_F_FLAGGED,
				      .keywords = kw,
				      .nkeywords = 1,
				      .unchangedsince_set = 1,
				      .unchangedsince = m0};
	struct store_range set[] = {{3, 3}, {1, 1}};
	assert_int_equal(store_flags(fx->st, "INBOX", 0, set, 2, &c, &fr), 0);
	assert_int_equal(fr.nfailed, 1);
	assert_int_equal(fr.failed[0], 1);
	assert_int_equal(fr.nchanged, 1);
	assert_int_equal(fr.changed[0].uid, 3);
	assert_int_equal(fr.changed[0].flags, STORE_F_FLAGGED);
	assert_string_equal(fr.changed[0].keywords, "$Label1");
	assert_int_equal(fr.changed[0].modseq, m0 + 2);
	store_flag_result_free(&fr);

	/* UNCHANGEDSINCE 0 always fails. */
	c.unchangedsince = 0;
	assert_int_equal(store_flags(fx->st, "INBOX", 0, &r3, 1, &c, &fr), 0);
	assert_int_equal(fr.nfailed, 1);
	assert_int_equal(fr.nchanged, 0);
	store_flag_result_free(&fr);

	/* Keywords are case-insensitive; remove and set. */
	const char *kw2[] = {"$LABEL1", "Other"};
	struct store_flag_change add = {.op = STORE_FLAGS_ADD, .keywords = kw2, .nkeywords = 2};
	assert_int_equal(store_flags(fx->st, "INBOX", 0, &r3, 1, &add, &fr), 0);
	assert_string_equal(fr.changed[0].keywords, "$Label1 Other");
	store_flag_result_free(&fr);
	struct store_flag_change rm = {.op = STORE_FLAGS_REMOVE, .keywords = kw, .nkeywords = 1};
	assert_int_equal(store_flags(fx->st, "INBOX", 0, &r3, 1, &rm, &fr), 0);
	assert_string_equal(fr.changed[0].keywords, "Other");
	store_flag_result_free(&fr);
	struct store_flag_change set_ = {.op = STORE_FLAGS_SET, .flags = STORE_F_DELETED};
	assert_int_equal(store_flags(fx->st, "INBOX", 0, &r3, 1, &set_, &fr), 0);
	assert_int_equal(fr.changed[0].flags, STORE_F_DELETED);
	assert_null(fr.changed[0].keywords);
	store_flag_result_free(&fr);
	assert_int_equal(store_mailbox_status(fx->st, "INBOX", &s), 0);
	assert_int_equal(s.deleted, 1);
	assert_int_equal(s.unseen, 1);

	/* A stale UIDVALIDITY is refused. */
	assert_int_equal(store_flags(fx->st, "INBOX", s.uidvalidity + 1, &r1, 1, &seen, &fr), -1);
	assert_int_equal(store_errcode(fx->st), STORE_ERR_CHANGED);
	/* A bad keyword too. */
	const char *bad[] = {"\\Seen"};
	struct store_flag_change b = {.op = STORE_FLAGS_ADD, .keywords = bad, .nkeywords = 1};
	assert_int_equal(store_flags(fx->st, "INBOX", 0, &r1, 1, &b, &fr), -1);
	assert_int_equal(store_errcode(fx->st), STORE_ERR_INVALID);
}

static void
test_expunge_changes(void **state)
{
	struct fixture *fx = *state;
	struct store_range r = {2, 4};
	struct store_flag_change del = {.op = STORE_FLAGS_ADD, .flags = STORE_F_DELETED};
	struct store_flag_result fr;
	struct store_changes ch;
	uint32_t *uids;
	size_t n;
	uint64_t m0, mx;

	for (int i = 0; i < 5; i++)
		deliver(fx->st, NULL, msg1, NULL);
	assert_int_equal(store_mailbox_modseq(fx->st, "INBOX", NULL, &m0), 0);
	assert_int_equal(store_flags(fx->st, "INBOX", 0, &r, 1, &del, &fr), 0);
	store_flag_result_free(&fr);

	/* UID EXPUNGE 3:4 takes only those; \Deleted UID 2 stays. */
	struct store_range r34 = {3, 4};
	assert_int_equal(store_expunge(fx->st, "INBOX", 0, &r34, 1, 0, &uids, &n, &mx), 0);
	assert_int_equal(n, 2);
	assert_int_equal(uids[0], 3);
	assert_int_equal(uids[1], 4);
	assert_int_equal(mx, m0 + 2);
	free(uids);

	/* Nothing to expunge: no new modseq. */
	struct store_range r5 = {5, 5};
	assert_int_equal(store_expunge(fx->st, "INBOX", 0, &r5, 1, 0, &uids, &n, &mx), 0);
	assert_int_equal(n, 0);
	assert_null(uids);
	assert_int_equal(mx, m0 + 2);

	assert_int_equal(store_changes_since(fx->st, "INBOX", 0, m0, &ch), 0);
	assert_int_equal(ch.nmsgs, 1); /* UID 2, flagged \Deleted */
	assert_int_equal(ch.msgs[0].uid, 2);
	assert_int_equal(ch.msgs[0].flags, STORE_F_DELETED);
	assert_int_equal(ch.nexpunged, 2);
	assert_int_equal(ch.expunged[0], 3);
	assert_int_equal(ch.expunged[1], 4);
	assert_int_equal(ch.highestmodseq, m0 + 2);
	assert_int_equal(ch.uidnext, 6);
	store_changes_free(&ch);

	/* Since the latest modseq: nothing. */
	assert_int_equal(store_changes_since(fx->st, "INBOX", 0, m0 + 2, &ch), 0);
	assert_int_equal(ch.nmsgs, 0);
	assert_int_equal(ch.nexpunged, 0);
	store_changes_free(&ch);

	/* Expunge all remaining \Deleted; a new message shows as changed. */
	assert_int_equal(store_expunge(fx->st, "INBOX", 0, NULL, 0, 0, &uids, &n, NULL), 0);
	assert_int_equal(n, 1);
	assert_int_equal(uids[0], 2);
	free(uids);
	deliver(fx->st, NULL, msg1, NULL);
	assert_int_equal(store_changes_since(fx->st, "INBOX", 0, m0 + 2, &ch), 0);
	assert_int_equal(ch.nexpunged, 1);
	assert_int_equal(ch.expunged[0], 2);
	assert_int_equal(ch.nmsgs, 1);
	assert_int_equal(ch.msgs[0].uid, 6);
	store_changes_free(&ch);

	/* The files of expunged messages are gone. */
	assert_int_equal(count_files(fx->dir, "msg"), 3);

	/* POP3 QUIT: expunge the given UIDs whatever their flags. */
	struct store_range pop[] = {{1, 1}, {6, 6}};
	assert_int_equal(
	    store_expunge(fx->st, "INBOX", 0, pop, 2, STORE_EXPUNGE_FORCE, &uids, &n, NULL), 0);
	assert_int_equal(n, 2);
	free(uids);
	struct store_status s;
	assert_int_equal(store_mailbox_status(fx->st, "INBOX", &s), 0);
	assert_int_equal(s.messages, 1);
	assert_int_equal(count_files(fx->dir, "msg"), 1);

	char uidl[STORE_UIDL_MAX];
	store_uidl(uidl, sizeof(uidl), 0x12345678, 0xffffffff);
	assert_string_equal(uidl, "12345678.ffffffff");
}

static void
test_copy_move(void **state)
{
	struct fixture *fx = *state;
	struct store_copy_result cr;
	struct store_range all = {1, UINT32_MAX};
	struct store_status s, a;
	uint32_t *uids;
	size_t n;
	int fd;

	for (int i = 0; i < 3; i++)
		deliver(fx->st, NULL, msg1, NULL);
	deliver(fx->st, "Archive", msg1, NULL);

	/* COPY 1:2 to Archive: new UIDs 2, 3; files shared. */
	struct store_range r12 = {1, 2};
	assert_int_equal(store_copy(fx->st, "INBOX", 0, &r12, 1, "Archive", 0, &cr), 2);
	assert_int_equal(store_mailbox_status(fx->st, "Archive", &a), 0);
	assert_int_equal(cr.uidvalidity, a.uidvalidity);
	assert_int_equal(cr.src_uids[0], 1);
	assert_int_equal(cr.src_uids[1], 2);
	assert_int_equal(cr.dst_uids[0], 2);
	assert_int_equal(cr.dst_uids[1], 3);
	store_copy_result_free(&cr);
	assert_int_equal(count_files(fx->dir, "msg"), 4);

	/* MOVE 2:3 to Trash: source expunged in the same step. */
	uint64_t m0;
	assert_int_equal(store_mailbox_modseq(fx->st, "INBOX", NULL, &m0), 0);
	struct store_range r23 = {2, 3};
	assert_int_equal(store_copy(fx->st, "INBOX", 0, &r23, 1, "Trash", 1, &cr), 2);
	assert_int_equal(cr.dst_uids[0], 1);
	assert_int_equal(cr.dst_uids[1], 2);
	store_copy_result_free(&cr);
	assert_int_equal(store_mailbox_status(fx->st, "INBOX", &s), 0);
	assert_int_equal(s.messages, 1);
	struct store_changes ch;
	assert_int_equal(store_changes_since(fx->st, "INBOX", 0, m0, &ch), 0);
	assert_int_equal(ch.nexpunged, 2);
	store_changes_free(&ch);

	/* Expunging the INBOX original keeps the Archive copy readable. */
	struct store_flag_change del = {.op = STORE_FLAGS_ADD, .flags = STORE_F_DELETED};
	struct store_flag_result fr;
	assert_int_equal(store_flags(fx->st, "INBOX", 0, &all, 1, &del, &fr), 0);
	store_flag_result_free(&fr);
	assert_int_equal(store_expunge(fx->st, "INBOX", 0, NULL, 0, 0, &uids, &n, NULL), 0);
	free(uids);
	assert_int_equal(store_msg_open(fx->st, "Archive", 0, 2, &fd, NULL), 1);
	close(fd);
	assert_int_equal(count_files(fx->dir, "msg"), 4);

	/* Drop everything: the files go with the last reference. */
	assert_int_equal(
	    store_expunge(fx->st, "Archive", 0, NULL, 0, STORE_EXPUNGE_FORCE, &uids, &n, NULL), 0);
	assert_int_equal(n, 3);
	free(uids);
	assert_int_equal(count_files(fx->dir, "msg"), 2); /* the two in Trash */
	assert_int_equal(
	    store_expunge(fx->st, "Trash", 0, NULL, 0, STORE_EXPUNGE_FORCE, &uids, &n, NULL), 0);
	free(uids);
	assert_int_equal(count_files(fx->dir, "msg"), 0);

	/* COPY to a missing mailbox: TRYCREATE. Nothing matching: 0. */
	deliver(fx->st, NULL, msg1, NULL);
	assert_int_equal(store_copy(fx->st, "INBOX", 0, &all, 1, "Missing", 0, &cr), -1);
	assert_int_equal(store_errcode(fx->st), STORE_ERR_NOMAILBOX);
	struct store_range none = {100, 200};
	assert_int_equal(store_copy(fx->st, "INBOX", 0, &none, 1, "Trash", 0, &cr), 0);
	store_copy_result_free(&cr);
	/* MOVE within the same mailbox renumbers. */
	assert_int_equal(store_copy(fx->st, "INBOX", 0, &all, 1, "INBOX", 1, &cr), 1);
	assert_int_equal(cr.src_uids[0], 4);
	assert_int_equal(cr.dst_uids[0], 5);
	store_copy_result_free(&cr);
	struct store_mbox_view *v;
	assert_int_equal(store_mailbox_load(fx->st, "INBOX", &v), 0);
	assert_int_equal(v->count, 1);
	assert_int_equal(v->msgs[0].uid, 5);
	store_mbox_view_free(&v);
}

static void
test_rename(void **state)
{
	struct fixture *fx = *state;
	struct store_mbox_info *l;
	struct store_status s, before;
	size_t n;

	assert_int_equal(store_mailbox_create(fx->st, "a/b/c", 0), 0);
	assert_int_equal(store_mailbox_subscribe(fx->st, "a/b", 1), 0);
	deliver(fx->st, "a/b", msg1, NULL);
	assert_int_equal(store_mailbox_status(fx->st, "a/b", &before), 0);

	assert_int_equal(store_mailbox_rename(fx->st, "a", "x/y"), 0);
	assert_int_equal(store_mailbox_list(fx->st, &l, &n), 0);
	assert_null(find_mbox(l, n, "a"));
	assert_null(find_mbox(l, n, "a/b"));
	assert_non_null(find_mbox(l, n, "x"));
	assert_non_null(find_mbox(l, n, "x/y"));
	assert_non_null(find_mbox(l, n, "x/y/b/c"));
	assert_int_equal(find_mbox(l, n, "x/y/b")->attrs,
			 STORE_MBOX_SUBSCRIBED | STORE_MBOX_HASCHILDREN);
	assert_int_equal(find_mbox(l, n, "x/y/b/c")->attrs, 0);
	store_mailbox_list_free(&l, n);
	assert_int_equal(store_mailbox_status(fx->st, "x/y/b", &s), 0);
	assert_int_equal(s.messages, 1);
	assert_true(s.uidvalidity > before.uidvalidity);
	assert_int_equal(s.uidnext, before.uidnext);

	/* Errors. */
	assert_int_equal(store_mailbox_rename(fx->st, "nope", "z"), -1);
	assert_int_equal(store_errcode(fx->st), STORE_ERR_NOMAILBOX);
	assert_int_equal(store_mailbox_rename(fx->st, "x", "Sent"), -1);
	assert_int_equal(store_errcode(fx->st), STORE_ERR_EXISTS);
	assert_int_equal(store_mailbox_rename(fx->st, "x", "x/z"), -1);
	assert_int_equal(store_errcode(fx->st), STORE_ERR_CANNOT);

	/* INBOX: the messages move, INBOX is left empty with a new UIDVALIDITY. */
	assert_int_equal(store_mailbox_create(fx->st, "INBOX/sub", 0), 0);
	deliver(fx->st, NULL, msg1, NULL);
	deliver(fx->st, NULL, msg1, NULL);
	assert_int_equal(store_mailbox_status(fx->st, "INBOX", &before), 0);
	assert_int_equal(store_mailbox_rename(fx->st, "inbox", "Old/Inbox"), 0);
	assert_int_equal(store_mailbox_status(fx->st, "Old/Inbox", &s), 0);
	assert_int_equal(s.messages, 2);
	assert_true(s.uidvalidity > before.uidvalidity);
	assert_int_equal(s.uidnext, 3);
	uint32_t moved = s.uidvalidity;
	assert_int_equal(store_mailbox_status(fx->st, "INBOX", &s), 0);
	assert_int_equal(s.messages, 0);
	assert_int_equal(s.uidnext, 1);
	assert_true(s.uidvalidity > before.uidvalidity);
	assert_int_not_equal(s.uidvalidity, moved);
	assert_int_equal(store_mailbox_status(fx->st, "INBOX/sub", &s), 0);
	/* A session holding the old UIDVALIDITY learns INBOX was replaced. */
	struct store_changes ch;
	assert_int_equal(store_changes_since(fx->st, "INBOX", before.uidvalidity, 1, &ch), -1);
	assert_int_equal(store_errcode(fx->st), STORE_ERR_CHANGED);
	/* Delivery goes to the new INBOX. */
	assert_int_equal(deliver(fx->st, NULL, msg1, NULL), 1);
	int fd;
	assert_int_equal(store_msg_open(fx->st, "Old/Inbox", 0, 2, &fd, NULL), 1);
	close(fd);
}

static void
test_delete(void **state)
{
	struct fixture *fx = *state;
	struct store_mbox_info *l;
	struct store_status s;
	size_t n;

	assert_int_equal(store_mailbox_create(fx->st, "foo/bar", 0), 0);
	deliver(fx->st, "foo", msg1, NULL);
	assert_int_equal(count_files(fx->dir, "msg"), 1);

	/* With an inferior: messages go, the name stays as \Noselect. */
	assert_int_equal(store_mailbox_delete(fx->st, "foo"), 0);
	assert_int_equal(count_files(fx->dir, "msg"), 0);
	assert_int_equal(store_mailbox_list(fx->st, &l, &n), 0);
	assert_int_equal(find_mbox(l, n, "foo")->attrs,
			 STORE_MBOX_NOSELECT | STORE_MBOX_HASCHILDREN);
	store_mailbox_list_free(&l, n);
	assert_int_equal(store_mailbox_status(fx->st, "foo", &s), -1);
	assert_int_equal(store_errcode(fx->st), STORE_ERR_NOSELECT);
	assert_int_equal(store_append(fx->st, "foo", msg1, strlen(msg1), NULL, NULL, NULL), -1);
	assert_int_equal(store_errcode(fx->st), STORE_ERR_NOSELECT);
	struct usage {
		uint64_t bytes, msgs;
	} u;
	assert_int_equal(store_usage(fx->st, &u.bytes, &u.msgs), 0);
	assert_int_equal(u.msgs, 0);

	/* Deleting it again: it has inferiors. */
	assert_int_equal(store_mailbox_delete(fx->st, "foo"), -1);
	assert_int_equal(store_errcode(fx->st), STORE_ERR_HASCHILDREN);
	/* Leaf first, then the \Noselect parent goes. */
	assert_int_equal(store_mailbox_delete(fx->st, "foo/bar"), 0);
	assert_int_equal(store_mailbox_delete(fx->st, "foo"), 0);
	assert_int_equal(store_mailbox_delete(fx->st, "foo"), -1);
	assert_int_equal(store_errcode(fx->st), STORE_ERR_NOMAILBOX);
	assert_int_equal(store_mailbox_delete(fx->st, "INBOX"), -1);
	assert_int_equal(store_errcode(fx->st), STORE_ERR_CANNOT);

	/* Re-creating a \Noselect name revives it under a new UIDVALIDITY. */
	assert_int_equal(store_mailbox_create(fx->st, "p/q", 0), 0);
	assert_int_equal(store_mailbox_status(fx->st, "p", &s), 0);
	uint32_t old = s.uidvalidity;
	assert_int_equal(store_mailbox_delete(fx->st, "p"), 0);
	assert_int_equal(store_mailbox_create(fx->st, "p", STORE_USE_FLAGGED), 0);
	assert_int_equal(store_mailbox_status(fx->st, "p", &s), 0);
	assert_true(s.uidvalidity > old);
	assert_int_equal(s.special_use, STORE_USE_FLAGGED);

	/* A deleted mailbox stays subscribed and lists as \NonExistent. */
	assert_int_equal(store_mailbox_delete(fx->st, "Junk"), 0);
	assert_int_equal(store_mailbox_list(fx->st, &l, &n), 0);
	assert_int_equal(find_mbox(l, n, "Junk")->attrs,
			 STORE_MBOX_NONEXISTENT | STORE_MBOX_NOSELECT | STORE_MBOX_SUBSCRIBED);
	store_mailbox_list_free(&l, n);
	assert_int_equal(store_mailbox_subscribe(fx->st, "Junk", 0), 0);
	assert_int_equal(store_mailbox_list(fx->st, &l, &n), 0);
	assert_null(find_mbox(l, n, "Junk"));
	store_mailbox_list_free(&l, n);
}

static void
test_fts(void **state)
{
	struct fixture *fx = *state;
	uint32_t *uids;
	size_t n;

	deliver(fx->st, NULL, msg1, "The quick brown fox jumps over the lazy dog");
	deliver(fx->st, NULL, msg1, "Il a dit \"bonjour\" à l'hôtel; price: 5* AND more");
	deliver(fx->st, NULL, msg1, "");

	const char *t1[] = {"QUICK"};
	assert_int_equal(store_fts_search(fx->st, "INBOX", 0, STORE_FTS_BODY, t1, 1, &uids, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(uids[0], 1);
	free(uids);

	/* Prefix, phrase, diacritics, AND of terms. */
	const char *t2[] = {"jum", "lazy dog"};
	assert_int_equal(store_fts_search(fx->st, "INBOX", 0, STORE_FTS_BODY, t2, 2, &uids, &n), 0);
	assert_int_equal(n, 1);
	free(uids);
	const char *t3[] = {"hotel"};
	assert_int_equal(store_fts_search(fx->st, "INBOX", 0, STORE_FTS_BODY, t3, 1, &uids, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(uids[0], 2);
	free(uids);

	/* FTS5 syntax in terms is only text: no errors, no injection. */
	const char *evil[] = {"\"bonjour\"",	"AND", "NOT",  "NEAR(a b)",   "body:fox", "*", "\"",
			      "fox\" OR \"dog", "(",   "^fox", "{hdr}:hello", "-fox",	  "+"};
	for (size_t i = 0; i < ARRAY_LEN(evil); i++) {
		const char *t[] = {evil[i]};
		int r = store_fts_search(fx->st, "INBOX", 0, STORE_FTS_TEXT, t, 1, &uids, &n);
		if (r != 0)
			fprintf(stderr, "term %s: %s\n", evil[i], store_errstr(fx->st));
		assert_int_equal(r, 0);
		if (strcmp(evil[i], "\"bonjour\"") == 0) {
			assert_int_equal(n, 1);
			assert_int_equal(uids[0], 2);
		}
		if (strcmp(evil[i], "fox\" OR \"dog") == 0)
			assert_int_equal(n, 0); /* a phrase "fox OR dog", not an OR */
		free(uids);
	}

	/* BODY does not see headers; TEXT does. */
	const char *th[] = {"hello"};
	assert_int_equal(store_fts_search(fx->st, "INBOX", 0, STORE_FTS_BODY, th, 1, &uids, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(store_fts_search(fx->st, "INBOX", 0, STORE_FTS_TEXT, th, 1, &uids, &n), 0);
	assert_int_equal(n, 3);
	free(uids);

	/* No term: everything. Other mailboxes are not searched. */
	const char *te[] = {""};
	assert_int_equal(store_fts_search(fx->st, "INBOX", 0, STORE_FTS_TEXT, te, 1, &uids, &n), 0);
	assert_int_equal(n, 3);
	free(uids);
	assert_int_equal(store_fts_search(fx->st, "Sent", 0, STORE_FTS_TEXT, t1, 1, &uids, &n), 0);
	assert_int_equal(n, 0);

	/* Copies are found in their mailbox; expunged text is gone. */
	struct store_range r1 = {1, 1};
	struct store_copy_result cr;
	assert_int_equal(store_copy(fx->st, "INBOX", 0, &r1, 1, "Sent", 1, &cr), 1);
	store_copy_result_free(&cr);
	assert_int_equal(store_fts_search(fx->st, "Sent", 0, STORE_FTS_TEXT, t1, 1, &uids, &n), 0);
	assert_int_equal(n, 1);
	free(uids);
	assert_int_equal(store_fts_search(fx->st, "INBOX", 0, STORE_FTS_TEXT, t1, 1, &uids, &n), 0);
	assert_int_equal(n, 0);

	/* SORT keys and FETCH meta in one pass. */
	struct store_sort_rec *sr;
	assert_int_equal(store_sort_fields(fx->st, "INBOX", 0, &sr, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(sr[0].uid, 2);
	assert_string_equal(sr[0].subject, "hello");
	assert_string_equal(sr[0].to, "");
	assert_int_equal(sr[0].date, 0);
	store_sort_free(&sr, n);
	struct store_msg_meta *mm;
	struct store_range set[] = {{3, 3}, {1, 2}, {2, 3}};
	assert_int_equal(store_fetch_meta(fx->st, "INBOX", 0, set, 3, &mm, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(mm[0].uid, 2);
	assert_int_equal(mm[1].uid, 3);
	assert_non_null(mm[1].bodystructure);
	store_msg_meta_array_free(&mm, n);
}

static void
test_usage(void **state)
{
	struct fixture *fx = *state;
	uint64_t bytes, msgs;
	struct store_range all = {1, UINT32_MAX};
	struct store_copy_result cr;
	uint32_t *uids;
	size_t n;

	assert_int_equal(store_usage(fx->st, &bytes, &msgs), 0);
	assert_int_equal(bytes, 0);
	assert_int_equal(msgs, 0);
	deliver(fx->st, NULL, msg1, NULL);
	deliver(fx->st, "Sent", msg1, NULL);
	assert_int_equal(store_usage(fx->st, &bytes, &msgs), 0);
	assert_int_equal(bytes, 2 * strlen(msg1));
	assert_int_equal(msgs, 2);
	assert_int_equal(store_copy(fx->st, "INBOX", 0, &all, 1, "Archive", 0, &cr), 1);
	store_copy_result_free(&cr);
	assert_int_equal(store_usage(fx->st, &bytes, &msgs), 0);
	assert_int_equal(msgs, 3);
	assert_int_equal(bytes, 3 * strlen(msg1));
	assert_int_equal(
	    store_expunge(fx->st, "INBOX", 0, NULL, 0, STORE_EXPUNGE_FORCE, &uids, &n, NULL), 0);
	free(uids);
	assert_int_equal(store_mailbox_delete(fx->st, "Sent"), 0);
	assert_int_equal(store_usage(fx->st, &bytes, &msgs), 0);
	assert_int_equal(msgs, 1);
	assert_int_equal(bytes, strlen(msg1));
	struct store_status s;
	assert_int_equal(store_mailbox_status(fx->st, "Archive", &s), 0);
	assert_int_equal(s.size, strlen(msg1));
}

struct notify_log {
	int calls;
	char last[64];
};

static void
notify_cb(const char *account, const char *mailbox, void *arg)
{
	struct notify_log *nl = arg;

	assert_string_equal(account, ACCOUNT);
	nl->calls++;
	xsnprintf(nl->last, sizeof(nl->last), "%s", mailbox);
}

static void
test_notify(void **state)
{
	struct fixture *fx = *state;
	struct notify_log nl = {0};
	struct store_range all = {1, UINT32_MAX};
	struct store_flag_change seen = {.op = STORE_FLAGS_ADD, .flags = STORE_F_SEEN};
	struct store_flag_result fr;

	store_set_notify(notify_cb, &nl);
	deliver(fx->st, "inbox", msg1, NULL);
	assert_int_equal(nl.calls, 1);
	assert_string_equal(nl.last, "INBOX");
	assert_int_equal(store_flags(fx->st, "INBOX", 0, &all, 1, &seen, &fr), 0);
	store_flag_result_free(&fr);
	assert_int_equal(nl.calls, 2);
	/* No change, no wake-up. */
	assert_int_equal(store_flags(fx->st, "INBOX", 0, &all, 1, &seen, &fr), 0);
	store_flag_result_free(&fr);
	assert_int_equal(nl.calls, 2);
	assert_int_equal(store_mailbox_create(fx->st, "New", 0), 0);
	assert_int_equal(nl.calls, 3);
	assert_string_equal(nl.last, "New");
}

struct worker {
	const char *dir;
	int id;
	int ok;
};

#define WORKER_MSGS 40

static void *
worker_main(void *arg)
{
	struct worker *w = arg;
	struct store *st = store_open(w->dir, ACCOUNT, NULL);
	char key[32];

	if (st == NULL)
		return NULL;
	for (int i = 0; i < WORKER_MSGS; i++) {
		uint32_t uid;
		xsnprintf(key, sizeof(key), "w%d-%d", w->id, i);
		if (store_deliver(st, NULL, msg1, strlen(msg1), NULL, key, &uid) != 1)
			goto out;
		struct store_range r = {uid, uid};
		struct store_flag_change c = {.op = STORE_FLAGS_ADD, .flags = STORE_F_SEEN};
		struct store_flag_result fr;
		if (store_flags(st, "INBOX", 0, &r, 1, &c, &fr) < 0)
			goto out;
		store_flag_result_free(&fr);
		/* Both threads also re-deliver a shared key: only one may win. */
		xsnprintf(key, sizeof(key), "shared-%d", i);
		if (store_deliver(st, "Archive", msg1, strlen(msg1), NULL, key, NULL) < 0)
			goto out;
	}
	w->ok = 1;
out:
	if (!w->ok)
		fprintf(stderr, "worker %d: %s\n", w->id, store_errstr(st));
	store_close(&st);
	return NULL;
}

static void
test_concurrent(void **state)
{
	struct fixture *fx = *state;
	struct worker w[2] = {{fx->dir, 0, 0}, {fx->dir, 1, 0}};
	pthread_t t[2];
	struct store_mbox_view *v;
	struct store_status s;

	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	assert_true(w[0].ok && w[1].ok);
	assert_int_equal(store_mailbox_load(fx->st, "INBOX", &v), 0);
	assert_int_equal(v->count, 2 * WORKER_MSGS);
	for (size_t i = 0; i < v->count; i++) {
		assert_int_equal(v->msgs[i].uid, i + 1);
		assert_int_equal(v->msgs[i].flags, STORE_F_SEEN);
	}
	assert_int_equal(v->uidnext, 2 * WORKER_MSGS + 1);
	store_mbox_view_free(&v);
	assert_int_equal(store_mailbox_status(fx->st, "Archive", &s), 0);
	assert_int_equal(s.messages, WORKER_MSGS);
	assert_int_equal(count_files(fx->dir, "msg"), 3 * WORKER_MSGS);
	assert_int_equal(count_files(fx->dir, "tmp"), 0);
}

struct sweeper {
	const char *dir;
	volatile int stop;
	int opens;
};

/* Open the store over and over: every open sweeps tmp/ while the workers write. */
static void *
sweeper_main(void *arg)
{
	struct sweeper *sw = arg;

	while (!__atomic_load_n(&sw->stop, __ATOMIC_ACQUIRE)) {
		struct store *st = store_open(sw->dir, ACCOUNT, NULL);
		if (st == NULL)
			break;
		store_close(&st);
		sw->opens++;
	}
	return NULL;
}

/*
 * Fresh unlocked temp markers are swept (test_crash): a writer that has
 * created its marker but not yet locked it must lose nothing to a sweep
 * running then, and must not fail either (it starts over with a new id).
 */
static void
test_sweep_during_writes(void **state)
{
	struct fixture *fx = *state;
	struct worker w[2] = {{fx->dir, 0, 0}, {fx->dir, 1, 0}};
	struct sweeper sw = {fx->dir, 0, 0};
	pthread_t t[3];
	struct store_status s;

	assert_int_equal(pthread_create(&t[2], NULL, sweeper_main, &sw), 0);
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	__atomic_store_n(&sw.stop, 1, __ATOMIC_RELEASE);
	pthread_join(t[2], NULL);
	assert_true(w[0].ok && w[1].ok);
	assert_true(sw.opens > 0);
	assert_int_equal(store_mailbox_status(fx->st, "INBOX", &s), 0);
	assert_int_equal(s.messages, 2 * WORKER_MSGS);
	assert_int_equal(store_mailbox_status(fx->st, "Archive", &s), 0);
	assert_int_equal(s.messages, WORKER_MSGS);
	assert_int_equal(count_files(fx->dir, "msg"), 3 * WORKER_MSGS);
	assert_int_equal(count_files(fx->dir, "tmp"), 0);
}

/* Make a file look as if a crash left it long ago. */
static void
age_file(const char *path)
{
	struct timeval tv[2] = {{time(NULL) - 3600, 0}, {time(NULL) - 3600, 0}};
	assert_int_equal(utimes(path, tv), 0);
}

static void
test_crash(void **state)
{
	struct fixture *fx = *state;
	char root[256], path[512];
	int fd;

	deliver(fx->st, NULL, msg1, NULL);
	store_close(&fx->st);
	xsnprintf(root, sizeof(root), "%s/mail/example.org/alice", fx->dir);

	/* Died after linking the file, before the commit: marker + file, no row. */
	xsnprintf(path, sizeof(path), "%s/tmp/00112233aabbccdd", root);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	assert_int_equal(util_write_all(fd, msg1, strlen(msg1)), 0);
	close(fd);
	char final[512], dir[512];
	xsnprintf(dir, sizeof(dir), "%s/msg/00", root);
	util_mkdir_p(dir, 0700);
	xsnprintf(final, sizeof(final), "%s/00112233aabbccdd", dir);
	assert_int_equal(link(path, final), 0);
	/* (Not aged: a crash just before this open is swept by it, not by a later one.) */
	/* Died while writing: marker only. */
	xsnprintf(path, sizeof(path), "%s/tmp/7feeddccbbaa9988", root);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	close(fd);
	age_file(path);
	/* Unlocked and fresh: whoever made it is gone (a writer between open
	 * and flock would find its marker gone and start over). */
	char fresh[512];
	xsnprintf(fresh, sizeof(fresh), "%s/tmp/0aaaaaaaaaaaaaaa", root);
	fd = open(fresh, O_WRONLY | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	close(fd);
	/* A writer still alive (holds the lock) is left alone. */
	char live[512];
	xsnprintf(live, sizeof(live), "%s/tmp/0123456789abcdef", root);
	int lfd = open(live, O_WRONLY | O_CREAT | O_EXCL, 0600);
	assert_true(lfd >= 0);
	assert_int_equal(flock(lfd, LOCK_EX), 0);

	assert_int_equal(count_files(fx->dir, "msg"), 2);
	fx->st = store_open(fx->dir, ACCOUNT, NULL);
	assert_non_null(fx->st);
	assert_int_equal(count_files(fx->dir, "tmp"), 1);
	assert_int_equal(access(live, F_OK), 0);
	assert_int_equal(access(fresh, F_OK), -1);
	assert_int_equal(access(final, F_OK), -1);
	assert_int_equal(count_files(fx->dir, "msg"), 1);
	close(lfd);
	unlink(live);

	struct store_mbox_view *v;
	assert_int_equal(store_mailbox_load(fx->st, "INBOX", &v), 0);
	assert_int_equal(v->count, 1);
	store_mbox_view_free(&v);

	/* Died after the commit, before dropping the marker: the file stays. */
	char name[32] = "";
	for (unsigned i = 0; i < 256 && name[0] == '\0'; i++) {
		xsnprintf(dir, sizeof(dir), "%s/msg/%02x", root, i);
		DIR *d = opendir(dir);
		struct dirent *e;
		while (d != NULL && (e = readdir(d)) != NULL)
			if (e->d_name[0] != '.')
				xsnprintf(name, sizeof(name), "%s", e->d_name);
		if (d != NULL)
			closedir(d);
	}
	assert_int_equal(strlen(name), 16);
	xsnprintf(final, sizeof(final), "%s/msg/%.2s/%s", root, name, name);
	xsnprintf(path, sizeof(path), "%s/tmp/%s", root, name);
	assert_int_equal(link(final, path), 0);
	store_close(&fx->st);
	fx->st = store_open(fx->dir, ACCOUNT, NULL);
	assert_non_null(fx->st);
	assert_int_equal(access(path, F_OK), -1);
	assert_int_equal(access(final, F_OK), 0);
	assert_int_equal(count_files(fx->dir, "msg"), 1);

	/* Died between an expunge's commit and its unlink: store_sweep() finds it. */
	xsnprintf(path, sizeof(path), "%s/msg/00/0000000000000001", root);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(store_sweep(fx->st), 1);
	assert_int_equal(access(path, F_OK), -1);
	assert_int_equal(count_files(fx->dir, "msg"), 1);
	/* Moved aside, not lost: an index.db put back from a backup names none. */
	xsnprintf(path, sizeof(path), "%s/" STORE_ORPHANS_DIR "/0000000000000001", root);
	assert_int_equal(access(path, F_OK), 0);
	assert_int_equal(store_sweep(fx->st), 0);
	/* The real message is intact. */
	assert_int_equal(store_msg_open(fx->st, "INBOX", 0, 1, &fd, NULL), 1);
	close(fd);
}

/*
 * `surat user del` beside `surat mailbox sweep`: the store is moved aside
 * and a store made anew at its path (the user added again, mail for it)
 * while the sweep's handle walks. The sweep walks the store its handle
 * has open, never the new one's files, which its index does not name.
 */
static void
test_sweep_moved_store(void **state)
{
	struct fixture *fx = *state;
	struct buf err = BUF_INIT(0), moved = BUF_INIT(0);
	int fd;

	deliver(fx->st, NULL, NULL, "old mail");
	assert_int_equal(store_account_retire(fx->dir, ACCOUNT, &moved, &err), 1);
	struct store *b = store_open(fx->dir, ACCOUNT, &err);
	assert_non_null(b);
	deliver(b, NULL, NULL, "new mail");
	assert_int_equal(store_sweep(fx->st), 0);
	assert_int_equal(store_msg_open(b, "INBOX", 0, 1, &fd, NULL), 1);
	close(fd);
	store_close(&b);
	buf_free(&err);
	buf_free(&moved);
}

/* Delivers SWEEP_MSGS messages through a handle of its own. */
#define SWEEP_MSGS 40
struct sweep_writer {
	const char *dir;
	int fails;
	volatile int done;
};

static void *
sweep_writer_main(void *arg)
{
	struct sweep_writer *w = arg;
	struct store *st = store_open(w->dir, ACCOUNT, NULL);

	for (int i = 0; i < SWEEP_MSGS; i++)
		if (st == NULL ||
		    store_deliver(st, NULL, msg1, strlen(msg1), NULL, NULL, NULL) != 1)
			w->fails++;
	store_close(&st);
	__atomic_store_n(&w->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

/*
 * `surat mailbox sweep` runs store_sweep() beside the daemon. A message
 * file is written and flushed before its row commits: a sweep between
 * the two must leave it, as its writer still has its temp marker (and
 * the row is committed before the marker goes). Sweeps in a loop while
 * another handle delivers: nothing is removed, every message is whole.
 */
static void
test_sweep_beside_deliveries(void **state)
{
	struct fixture *fx = *state;
	struct sweep_writer w = {fx->dir, 0, 0};
	char root[256], path[512], tmp[512];
	pthread_t t;
	int sweeps = 0;

	/* A file written, its row not committed: its writer holds the marker. */
	xsnprintf(root, sizeof(root), "%s/mail/example.org/alice", fx->dir);
	xsnprintf(tmp, sizeof(tmp), "%s/tmp/0000000000000002", root);
	xsnprintf(path, sizeof(path), "%s/msg/00", root);
	util_mkdir_p(path, 0700);
	xsnprintf(path, sizeof(path), "%s/msg/00/0000000000000002", root);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	assert_int_equal(flock(fd, LOCK_EX), 0);
	assert_int_equal(link(tmp, path), 0);
	assert_int_equal(store_sweep(fx->st), 0);
	assert_int_equal(access(path, F_OK), 0);
	assert_int_equal(access(tmp, F_OK), 0);
	/* Its writer gave up without removing it, then the marker was lost. */
	close(fd);
	unlink(tmp);
	assert_int_equal(store_sweep(fx->st), 1);
	assert_int_equal(access(path, F_OK), -1);
	xsnprintf(path, sizeof(path), "%s/" STORE_ORPHANS_DIR "/0000000000000002", root);
	assert_int_equal(access(path, F_OK), 0);

	assert_int_equal(pthread_create(&t, NULL, sweep_writer_main, &w), 0);
	while (!__atomic_load_n(&w.done, __ATOMIC_ACQUIRE)) {
		assert_int_equal(store_sweep(fx->st), 0);
		sweeps++;
	}
	pthread_join(t, NULL);
	assert_int_equal(w.fails, 0);
	assert_true(sweeps > 0);
	assert_int_equal(count_files(fx->dir, "msg"), SWEEP_MSGS);
	for (uint32_t uid = 1; uid <= SWEEP_MSGS; uid++) {
		uint64_t size = 0;
		assert_int_equal(store_msg_open(fx->st, "INBOX", 0, uid, &fd, &size), 1);
		assert_int_equal(size, strlen(msg1));
		struct stat sb;
		assert_int_equal(fstat(fd, &sb), 0);
		assert_int_equal(sb.st_nlink, 1);
		close(fd);
	}
}

/*
 * A sweep killed between the link into orphans/ and the unlink from msg/
 * left the file in both: the next sweep finishes that move rather than
 * file the same message again as NAME.1, while a different file of the
 * same name still goes beside it.
 */
static void
test_sweep_finishes_cut_move(void **state)
{
	struct fixture *fx = *state;
	char root[256], path[512], lost[512], dup[512];

	xsnprintf(root, sizeof(root), "%s/mail/example.org/alice", fx->dir);
	xsnprintf(path, sizeof(path), "%s/msg/00", root);
	util_mkdir_p(path, 0700);
	xsnprintf(path, sizeof(path), "%s/" STORE_ORPHANS_DIR, root);
	util_mkdir_p(path, 0700);
	xsnprintf(path, sizeof(path), "%s/msg/00/0000000000000003", root);
	xsnprintf(lost, sizeof(lost), "%s/" STORE_ORPHANS_DIR "/0000000000000003", root);
	xsnprintf(dup, sizeof(dup), "%s.1", lost);
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(link(path, lost), 0);
	assert_int_equal(store_sweep(fx->st), 1);
	assert_int_equal(access(path, F_OK), -1);
	assert_int_equal(access(lost, F_OK), 0);
	assert_int_equal(access(dup, F_OK), -1);
	/* Another file of that id: kept beside the first. */
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(store_sweep(fx->st), 1);
	assert_int_equal(access(lost, F_OK), 0);
	assert_int_equal(access(dup, F_OK), 0);
}

/* The message file names under msg/ (16 hex digits each), sorted; returns how many. */
static size_t
list_files(const char *root, char names[][17], size_t max)
{
	char dir[512];
	size_t n = 0;

	for (unsigned i = 0; i < 256; i++) {
		xsnprintf(dir, sizeof(dir), "%s/msg/%02x", root, i);
		DIR *d = opendir(dir);
		struct dirent *e;
		while (d != NULL && (e = readdir(d)) != NULL)
			if (e->d_name[0] != '.' && n < max)
				xsnprintf(names[n++], 17, "%s", e->d_name);
		if (d != NULL)
			closedir(d);
	}
	qsort(names, n, 17, (int (*)(const void *, const void *))strcmp);
	return n;
}

/* Set or clear FS_IMMUTABLE_FL on path: 0, or -1 where the file system or
 * the user cannot (the caller skips). */
static int
set_immutable(const char *path, int on)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY);
	int fl, rc = -1;

	if (fd < 0)
		return -1;
	if (ioctl(fd, FS_IOC_GETFLAGS, &fl) == 0) {
		fl = on ? fl | FS_IMMUTABLE_FL : fl & ~FS_IMMUTABLE_FL;
		rc = ioctl(fd, FS_IOC_SETFLAGS, &fl);
	}
	close(fd);
	return rc;
}

/*
 * An expunge whose commit is done but whose files are not unlinked (here:
 * their directory refuses it; a crash in that window does the same) leaves
 * them marked in tmp/: the next open removes them, not a full scan only.
 */
static void
test_expunged_files_left_behind_are_swept(void **state)
{
	struct fixture *fx = *state;
	char root[256], dir[512];
	uint32_t *uids = NULL;
	size_t n = 0;

	deliver(fx->st, NULL, msg1, NULL);
	xsnprintf(root, sizeof(root), "%s/mail/example.org/alice", fx->dir);
	char names[4][17];
	assert_int_equal(list_files(root, names, 4), 1);
	xsnprintf(dir, sizeof(dir), "%s/msg/%.2s", root, names[0]);
	if (set_immutable(dir, 1) < 0)
		skip();
	struct store_range all = {1, UINT32_MAX};
	int rc = store_expunge(fx->st, "INBOX", 0, &all, 1, STORE_EXPUNGE_FORCE, &uids, &n, NULL);
	set_immutable(dir, 0);
	assert_int_equal(rc, 0);
	assert_int_equal(n, 1);
	free(uids);
	assert_int_equal(count_files(fx->dir, "msg"), 1);	/* left behind */
	assert_int_equal(count_files(fx->dir, "tmp"), 1);	/* and marked */
	store_close(&fx->st);
	fx->st = store_open(fx->dir, ACCOUNT, NULL);
	assert_non_null(fx->st);
	assert_int_equal(count_files(fx->dir, "msg"), 0);
	assert_int_equal(count_files(fx->dir, "tmp"), 0);

	/* An expunge that goes through leaves neither file nor marker. */
	deliver(fx->st, NULL, msg1, NULL);
	assert_int_equal(store_expunge(fx->st, "INBOX", 0, &all, 1, STORE_EXPUNGE_FORCE, &uids,
				       &n, NULL),
			 0);
	free(uids);
	assert_int_equal(count_files(fx->dir, "msg"), 0);
	assert_int_equal(count_files(fx->dir, "tmp"), 0);
}

/* Run one write: it changed what readers see, and its last flush came after its commit. */
#define FLUSHED_AFTER_COMMIT(call)                                                                 \
	do {                                                                                       \
		char before_[256], after_[256];                                                    \
		probe_state(syncfs_probe_db, before_, sizeof(before_));                            \
		syncfs_probe_seen[0] = '\0';                                                       \
		assert_true((call) >= 0);                                                          \
		probe_state(syncfs_probe_db, after_, sizeof(after_));                              \
		assert_string_not_equal(before_, after_);                                          \
		assert_string_equal(syncfs_probe_seen, after_);                                    \
	} while (0)

/*
 * Every write an IMAP or POP3 reply acknowledges (APPEND, MULTIAPPEND,
 * COPY, MOVE, STORE, EXPUNGE and POP3's UPDATE, CREATE, RENAME, DELETE,
 * SUBSCRIBE) returns only once a flush has run after its commit: the
 * reply, sent after the call returns, never speaks of a change a crash
 * (SIGKILL or power) can take back.
 */
static void
test_writes_flushed_before_return(void **state)
{
	struct fixture *fx = *state;
	struct store_meta m = {0};
	struct store_copy_result cr;
	struct store_flag_result fr;
	struct store_range r1 = {1, 1}, r2 = {2, 2}, all = {1, UINT32_MAX};
	struct store_flag_change seen = {.op = STORE_FLAGS_ADD, .flags = STORE_F_SEEN};
	struct store_flag_change del = {.op = STORE_FLAGS_ADD, .flags = STORE_F_DELETED};
	char dbpath[512];
	uint32_t *uids, uid, uv;
	size_t n;

	xsnprintf(dbpath, sizeof(dbpath), "%s/mail/example.org/alice/index.db", fx->dir);
	assert_int_equal(sqlite3_open_v2(dbpath, &syncfs_probe_db, SQLITE_OPEN_READONLY, NULL),
			 SQLITE_OK);
	FLUSHED_AFTER_COMMIT(store_append(fx->st, "INBOX", msg1, strlen(msg1), &m, &uid, &uv));
	struct store_add_item two[2] = {{.msg = msg1, .len = strlen(msg1)},
					{.msg = msg1, .len = strlen(msg1)}};
	FLUSHED_AFTER_COMMIT(store_add_many(fx->st, "INBOX", two, 2, NULL));
	FLUSHED_AFTER_COMMIT(store_copy(fx->st, "INBOX", 0, &r1, 1, "Archive", 0, &cr));
	store_copy_result_free(&cr);
	FLUSHED_AFTER_COMMIT(store_copy(fx->st, "INBOX", 0, &r2, 1, "Trash", 1, &cr));
	store_copy_result_free(&cr);
	FLUSHED_AFTER_COMMIT(store_flags(fx->st, "INBOX", 0, &all, 1, &seen, &fr));
	store_flag_result_free(&fr);
	FLUSHED_AFTER_COMMIT(store_flags(fx->st, "INBOX", 0, &r1, 1, &del, &fr));
	store_flag_result_free(&fr);
	FLUSHED_AFTER_COMMIT(store_expunge(fx->st, "INBOX", 0, NULL, 0, 0, &uids, &n, NULL));
	free(uids);
	FLUSHED_AFTER_COMMIT(
	    store_expunge(fx->st, "INBOX", 0, &all, 1, STORE_EXPUNGE_FORCE, &uids, &n, NULL));
	free(uids);
	FLUSHED_AFTER_COMMIT(store_mailbox_create(fx->st, "Box/Sub", 0));
	FLUSHED_AFTER_COMMIT(store_mailbox_subscribe(fx->st, "Box/Sub", 1));
	FLUSHED_AFTER_COMMIT(store_mailbox_rename(fx->st, "Box", "Crate"));
	FLUSHED_AFTER_COMMIT(store_mailbox_rename(fx->st, "INBOX", "Old"));
	FLUSHED_AFTER_COMMIT(store_mailbox_delete(fx->st, "Archive"));
}

/*
 * Another handle's expunge between its commit and its flush: its rows are
 * gone for every reader, but only in the page cache, and its file is
 * marked in tmp/. A sweep (any store_open) that removes the file on that
 * sight must first make the commit durable, or a power cut brings the
 * rows back and their file is lost.
 */
static void
test_sweep_flushes_before_removing(void **state)
{
	struct fixture *fx = *state;
	char root[256], path[512], tmp[512], dbpath[512];
	sqlite3 *db;

	deliver(fx->st, NULL, msg1, NULL);
	xsnprintf(root, sizeof(root), "%s/mail/example.org/alice", fx->dir);
	char names[4][17];
	assert_int_equal(list_files(root, names, 4), 1);
	xsnprintf(path, sizeof(path), "%s/msg/%.2s/%s", root, names[0], names[0]);
	xsnprintf(tmp, sizeof(tmp), "%s/tmp/%s", root, names[0]);
	/* The expunge's transaction, as store_expunge() makes it (the triggers drop refs). */
	xsnprintf(dbpath, sizeof(dbpath), "%s/index.db", root);
	assert_int_equal(sqlite3_open(dbpath, &db), SQLITE_OK);
	sqlite3_busy_timeout(db, 5000);
	assert_int_equal(sqlite3_exec(db,
				      "BEGIN IMMEDIATE; DELETE FROM messages; DELETE FROM files;"
				      " COMMIT;",
				      NULL, NULL, NULL),
			 SQLITE_OK);
	sqlite3_close(db);
	assert_int_equal(link(path, tmp), 0); /* store_file_mark_dead() */

	syncfs_watch = path;
	syncfs_saw_watch = 0;
	struct store *st2 = store_open(fx->dir, ACCOUNT, NULL);
	syncfs_watch = NULL;
	assert_non_null(st2);
	store_close(&st2);
	assert_int_equal(access(path, F_OK), -1); /* the sweep removed it */
	assert_int_equal(access(tmp, F_OK), -1);
	assert_true(syncfs_saw_watch); /* after a flush, not before */
}

/*
 * A crash amid the expunge of a large mailbox leaves a marker per message.
 * The sweep holds each taken marker open until its file goes: all of them
 * at once would take as many of the daemon's descriptors (EMFILE for every
 * other session meanwhile, and markers past the limit left over). They go
 * a batch at a time, within a limit far below their number.
 */
static void
test_sweep_many_dead_markers(void **state)
{
	struct fixture *fx = *state;
	char root[256], path[512], tmp[512];
	struct rlimit old, low;
	enum { NDEAD = 160 };

	xsnprintf(root, sizeof(root), "%s/mail/example.org/alice", fx->dir);
	xsnprintf(path, sizeof(path), "%s/msg/00", root);
	util_mkdir_p(path, 0700);
	for (int i = 1; i <= NDEAD; i++) {
		xsnprintf(path, sizeof(path), "%s/msg/00/00000000000%05x", root, i);
		xsnprintf(tmp, sizeof(tmp), "%s/tmp/00000000000%05x", root, i);
		int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
		assert_true(fd >= 0);
		close(fd);
		assert_int_equal(link(path, tmp), 0); /* store_file_mark_dead() */
	}
	assert_int_equal(count_files(fx->dir, "msg"), NDEAD);
	/* Room for the handle's own files and a batch, not for every marker. */
	int probe = open("/dev/null", O_RDONLY);
	assert_true(probe >= 0);
	close(probe);
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
	low = old;
	low.rlim_cur = (rlim_t)probe + 100;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
	struct store *st2 = store_open(fx->dir, ACCOUNT, NULL);
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
	assert_non_null(st2);
	store_close(&st2);
	assert_int_equal(count_files(fx->dir, "msg"), 0);
	assert_int_equal(count_files(fx->dir, "tmp"), 0);
}

/*
 * Message file ids come in runs: one handle's deliveries get consecutive ids
 * (neighbouring rows, one directory). An id whose file exists already (a
 * run of another writer) is skipped for a new run, and nothing is lost.
 */
static void
test_file_ids_in_runs(void **state)
{
	struct fixture *fx = *state;
	char root[256], names[16][17], planted[512];

	xsnprintf(root, sizeof(root), "%s/mail/example.org/alice", fx->dir);
	for (int i = 0; i < 5; i++)
		deliver(fx->st, NULL, msg1, NULL);
	assert_int_equal(list_files(root, names, 16), 5);
	for (int i = 1; i < 5; i++) {
		assert_memory_equal(names[i], names[0], 2);	/* one directory */
		assert_int_equal(strtoull(names[i], NULL, 16), strtoull(names[i - 1], NULL, 16) + 1);
	}
	/* Another writer's file where this run goes next. */
	unsigned long long next = strtoull(names[4], NULL, 16) + 1;
	xsnprintf(planted, sizeof(planted), "%s/msg/%.2s/%016llx", root, names[4], next);
	int fd = open(planted, O_WRONLY | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	assert_int_equal(util_write_all(fd, "planted", 7), 0);
	close(fd);
	uint32_t uid = deliver(fx->st, NULL, msg1, NULL);
	assert_int_equal(list_files(root, names, 16), 7);
	int fd2;
	uint64_t size;
	assert_int_equal(store_msg_open(fx->st, "INBOX", 0, uid, &fd2, &size), 1);
	assert_int_equal(size, strlen(msg1));
	close(fd2);
	struct stat st;
	assert_int_equal(stat(planted, &st), 0);
	assert_int_equal(st.st_size, 7);	/* untouched */
	assert_int_equal(count_files(fx->dir, "tmp"), 0);
}

/* Rows of a table, counted through a connection of our own. */
static int
count_rows(const char *dir, const char *table)
{
	char path[256], sql[128];
	sqlite3 *db;
	sqlite3_stmt *s;
	int n = -1;

	xsnprintf(path, sizeof(path), "%s/mail/example.org/alice/index.db", dir);
	xsnprintf(sql, sizeof(sql), "SELECT count(*) FROM %s", table);
	if (sqlite3_open(path, &db) == SQLITE_OK &&
	    sqlite3_prepare_v2(db, sql, -1, &s, NULL) == SQLITE_OK) {
		if (sqlite3_step(s) == SQLITE_ROW)
			n = sqlite3_column_int(s, 0);
		sqlite3_finalize(s);
	}
	sqlite3_close(db);
	return n;
}

/*
 * Fill table (mailboxes or subscriptions) up to want rows through a
 * connection of our own, in one transaction: 10^4 creates through the store
 * would each commit and fsync.
 */
static void
fill_rows(const char *dir, const char *table, int want)
{
	char path[256], sql[128];
	sqlite3 *db;
	sqlite3_stmt *s;
	int have = count_rows(dir, table);

	xsnprintf(path, sizeof(path), "%s/mail/example.org/alice/index.db", dir);
	xsnprintf(sql, sizeof(sql), "INSERT INTO %s (name%s) VALUES (?1%s)", table,
		  strcmp(table, "mailboxes") == 0 ? ", uidvalidity" : "",
		  strcmp(table, "mailboxes") == 0 ? ", 1" : "");
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "BEGIN", NULL, NULL, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
	for (int i = have; i < want; i++) {
		char name[32];
		xsnprintf(name, sizeof(name), "fill%05d", i);
		sqlite3_bind_text(s, 1, name, -1, SQLITE_TRANSIENT);
		assert_int_equal(sqlite3_step(s), SQLITE_DONE);
		sqlite3_reset(s);
	}
	sqlite3_finalize(s);
	assert_int_equal(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	assert_int_equal(count_rows(dir, table), want);
}

/* An account has at most STORE_MAILBOXES_MAX mailboxes and STORE_SUBSCRIPTIONS_MAX subscriptions. */
static void
test_mailbox_caps(void **state)
{
	struct fixture *fx = *state;

	assert_int_equal(store_mailbox_create(fx->st, "a", 0), 0);
	fill_rows(fx->dir, "mailboxes", STORE_MAILBOXES_MAX);
	/* Every way to a new row is refused: CREATE, a superior, RENAME of INBOX. */
	assert_int_equal(store_mailbox_create(fx->st, "b", 0), -1);
	assert_int_equal(store_errcode(fx->st), STORE_ERR_LIMIT);
	assert_int_equal(store_mailbox_rename(fx->st, "a", "x/a"), -1);
	assert_int_equal(store_errcode(fx->st), STORE_ERR_LIMIT);
	assert_int_equal(store_mailbox_rename(fx->st, "INBOX", "Old"), -1);
	assert_int_equal(store_errcode(fx->st), STORE_ERR_LIMIT);
	assert_int_equal(count_rows(fx->dir, "mailboxes"), STORE_MAILBOXES_MAX);
	/* A rename that adds no row, and a create after a delete, still work. */
	assert_int_equal(store_mailbox_rename(fx->st, "a", "c"), 0);
	assert_int_equal(store_mailbox_delete(fx->st, "c"), 0);
	assert_int_equal(store_mailbox_create(fx->st, "b", 0), 0);

	fill_rows(fx->dir, "subscriptions", STORE_SUBSCRIPTIONS_MAX);
	assert_int_equal(store_mailbox_subscribe(fx->st, "nowhere", 1), -1);
	assert_int_equal(store_errcode(fx->st), STORE_ERR_LIMIT);
	/* Subscribing again one already there adds none. */
	assert_int_equal(store_mailbox_subscribe(fx->st, "fill09999", 1), 0);
	assert_int_equal(store_mailbox_subscribe(fx->st, "fill09999", 0), 0);
	assert_int_equal(store_mailbox_subscribe(fx->st, "nowhere", 1), 0);
	assert_int_equal(count_rows(fx->dir, "subscriptions"), STORE_SUBSCRIPTIONS_MAX);
}

/* Schema 6 back to 5: no noeol. */
#define UNDO_SCHEMA_6 "ALTER TABLE messages DROP COLUMN noeol;"
/* Schema 6 back to 4: no \Recent watermark, and counter triggers that know none. */
#define UNDO_SCHEMA_5                                                                              \
	"DROP TRIGGER messages_ai; DROP TRIGGER messages_ad;"                                      \
	"ALTER TABLE mailboxes DROP COLUMN recent_uid;"                                            \
	"ALTER TABLE mailboxes DROP COLUMN recent;"                                                \
	"CREATE TRIGGER messages_ai AFTER INSERT ON messages BEGIN"                                \
	" UPDATE mailboxes SET messages = messages + 1, size = size + new.size,"                   \
	"  unseen = unseen + (new.flags & 1 = 0), deleted = deleted + (new.flags & 8 != 0)"        \
	"  WHERE id = new.mailbox_id;"                                                             \
	" UPDATE files SET refs = refs + 1 WHERE id = new.file_id;"                                \
	"END;"                                                                                     \
	"CREATE TRIGGER messages_ad AFTER DELETE ON messages BEGIN"                                \
	" UPDATE mailboxes SET messages = messages - 1, size = size - old.size,"                   \
	"  unseen = unseen - (old.flags & 1 = 0), deleted = deleted - (old.flags & 8 != 0)"        \
	"  WHERE id = old.mailbox_id;"                                                             \
	" UPDATE files SET refs = refs - 1 WHERE id = old.file_id;"                                \
	"END;" UNDO_SCHEMA_6

/* Close the fixture's store, turn its index back into an older one with sql, reopen it. */
static void
downgrade(struct fixture *fx, const char *sql)
{
	char path[256];
	sqlite3 *db;

	store_close(&fx->st);
	xsnprintf(path, sizeof(path), "%s/mail/example.org/alice/index.db", fx->dir);
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	fx->st = store_open(fx->dir, ACCOUNT, NULL);
	assert_non_null(fx->st);
}

/* The SEARCH header cache: stored with the message, none for messages of an older index. */
static void
test_search_headers(void **state)
{
	struct fixture *fx = *state;
	struct store_meta m = {.search_hdrs = "\x02\x01bob <bob@example.net>\x02\x02\x02\x02"};
	struct store_search_rec *r = NULL;
	size_t n = 0;

	assert_int_equal(store_deliver(fx->st, NULL, msg1, strlen(msg1), &m, NULL, NULL), 1);
	assert_int_equal(count_rows(fx->dir, "search_hdrs"), 1);
	/* Back to schema 2, as an index made before the cache had its own table. */
	downgrade(fx, UNDO_SCHEMA_5 "DROP TABLE search_hdrs; DROP TABLE fts_pending;"
				    "DROP TRIGGER files_ad;"
				    "CREATE TRIGGER files_ad AFTER DELETE ON files BEGIN"
				    " DELETE FROM fts WHERE rowid = old.id; END;"
				    "ALTER TABLE files ADD COLUMN search_hdrs TEXT;"
				    "PRAGMA user_version = 2;");
	assert_int_equal(store_deliver(fx->st, NULL, msg1, strlen(msg1), &m, NULL, NULL), 1);
	assert_int_equal(store_deliver(fx->st, NULL, msg1, strlen(msg1), NULL, NULL, NULL), 1);
	assert_int_equal(store_search_headers(fx->st, "INBOX", 0, &r, &n), 0);
	assert_int_equal(n, 3);
	assert_int_equal(r[0].uid, 1);
	assert_null(r[0].hdrs); /* delivered before the upgrade */
	assert_int_equal(r[1].uid, 2);
	assert_non_null(r[1].hdrs);
	assert_int_equal(r[1].len, strlen(m.search_hdrs));
	assert_memory_equal(r[1].hdrs, m.search_hdrs, r[1].len);
	assert_null(r[2].hdrs); /* no meta given */
	store_search_free(&r, n);
	assert_null(r);
	/* An expunged message takes its cache along. */
	uint32_t *gone = NULL;
	size_t ngone = 0;
	struct store_range two = {2, 2};
	assert_int_equal(
	    store_expunge(fx->st, "INBOX", 0, &two, 1, STORE_EXPUNGE_FORCE, &gone, &ngone, NULL),
	    0);
	free(gone);
	assert_int_equal(ngone, 1);
	assert_int_equal(count_rows(fx->dir, "search_hdrs"), 0);
	assert_int_equal(store_search_headers(fx->st, "Nope", 0, &r, &n), -1);
	assert_int_equal(store_errcode(fx->st), STORE_ERR_NOMAILBOX);
}

static int64_t
fts_hits(struct store *st, const char *word)
{
	const char *t[] = {word};
	uint32_t *uids = NULL;
	size_t n = 0;

	if (store_fts_search(st, "INBOX", 0, STORE_FTS_TEXT, t, 1, &uids, &n) < 0)
		return -1;
	free(uids);
	return (int64_t)n;
}

/* The extractor of test_fts_expunged_while_indexed: expunges race_uid once,
 * through another handle, while the catch-up has read the queue. */
static struct store *race_st;
static uint32_t race_uid;

static int
race_text(const char *msg, size_t len, struct buf *hdr, struct buf *body)
{
	if (race_uid != 0) {
		struct store_range r = {race_uid, race_uid};
		uint32_t *gone = NULL;
		size_t ngone = 0;
		assert_int_equal(store_expunge(race_st, "INBOX", 0, &r, 1, STORE_EXPUNGE_FORCE,
					       &gone, &ngone, NULL),
				 0);
		assert_int_equal(ngone, 1);
		free(gone);
		race_uid = 0;
	}
	return mime_meta_text(msg, len, hdr, body);
}

/* The log lines (fd 2) written while fn runs. */
static char *
stderr_of(void (*fn)(void *), void *arg)
{
	char path[] = "/tmp/surat-stderr-XXXXXX";
	int fd = mkstemp(path), saved = dup(2);
	size_t len;

	assert_true(fd >= 0 && saved >= 0);
	unlink(path);
	assert_int_equal(dup2(fd, 2), 2);
	fn(arg);
	assert_int_equal(dup2(saved, 2), 2);
	close(saved);
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	return read_fd(fd, &len);
}

static void
catch_up_all(void *arg)
{
	assert_int_equal(store_fts_catch_up(arg, 0), 2);
}

/*
 * A queued message expunged (POP3 QUIT, IMAP EXPUNGE) after the indexer
 * read the queue and before it read the file is no error: it is not logged
 * as one. A file lost while its message is still there is.
 */
static void
test_fts_expunged_while_indexed(void **state)
{
	struct fixture *fx = *state;
	struct buf err = BUF_INIT(0);

	deliver(fx->st, NULL, NULL, "first racer");
	uint32_t second = deliver(fx->st, NULL, NULL, "second racer");
	assert_int_equal(store_fts_pending(fx->st), 2);
	race_st = store_open(fx->dir, ACCOUNT, &err);
	assert_non_null(race_st);
	race_uid = second;
	store_set_text_fn(race_text);
	char *log = stderr_of(catch_up_all, fx->st);
	store_set_text_fn(mime_meta_text);
	assert_null(strstr(log, "cannot read"));
	free(log);
	assert_int_equal(store_fts_pending(fx->st), 0);
	assert_int_equal(fts_hits(fx->st, "first"), 1);

	/* A lost file whose message is still there. */
	deliver(fx->st, NULL, NULL, "lost racer");
	deliver(fx->st, NULL, NULL, "kept racer");
	char msgdir[128];
	xsnprintf(msgdir, sizeof(msgdir), "%s/mail/example.org/alice/msg", fx->dir);
	DIR *top = opendir(msgdir);
	assert_non_null(top);
	int removed = 0;
	for (struct dirent *d; (d = readdir(top)) != NULL;) {
		if (d->d_name[0] == '.')
			continue;
		char sub[256];
		xsnprintf(sub, sizeof(sub), "%s/%s", msgdir, d->d_name);
		DIR *in = opendir(sub);
		assert_non_null(in);
		for (struct dirent *e; (e = readdir(in)) != NULL;) {
			char path[512];
			size_t len;
			if (e->d_name[0] == '.')
				continue;
			xsnprintf(path, sizeof(path), "%s/%s", sub, e->d_name);
			char *data = read_fd(open(path, O_RDONLY), &len);
			if (strstr(data, "lost racer") != NULL && unlink(path) == 0)
				removed++;
			free(data);
		}
		closedir(in);
	}
	closedir(top);
	assert_int_equal(removed, 1);
	log = stderr_of(catch_up_all, fx->st);
	assert_non_null(strstr(log, "full-text index: cannot read"));
	free(log);
	store_close(&race_st);
	buf_free(&err);
}

/*
 * The full-text index is filled in batches: a delivery only queues its
 * message; the add that makes the queue STORE_FTS_BATCH long drains it, and
 * so does every search first (and the idle indexer: test_fts_idle).
 * Expunged queued messages leave the queue.
 */
static void
test_fts_deferred(void **state)
{
	struct fixture *fx = *state;
	char body[64];

	deliver(fx->st, NULL, NULL, "zebra one");
	deliver(fx->st, NULL, NULL, "zebra two");
	assert_int_equal(store_fts_pending(fx->st), 2);
	assert_int_equal(count_rows(fx->dir, "fts"), 0);
	assert_int_equal(store_fts_catch_up(fx->st, 1), 1);	/* a bounded catch-up */
	assert_int_equal(store_fts_pending(fx->st), 1);
	assert_int_equal(count_rows(fx->dir, "fts"), 1);
	assert_int_equal(fts_hits(fx->st, "zebra"), 2);		/* the search drains the rest */
	assert_int_equal(store_fts_pending(fx->st), 0);
	assert_int_equal(store_fts_catch_up(fx->st, 0), 0);

	/* Up to the batch size the queue grows; the add that fills it indexes all. */
	for (int i = 0; i < STORE_FTS_BATCH; i++) {
		xsnprintf(body, sizeof(body), "okapi number%d", i);
		deliver(fx->st, NULL, NULL, body);
		assert_int_equal(store_fts_pending(fx->st), i + 1 < STORE_FTS_BATCH ? i + 1 : 0);
	}
	assert_int_equal(count_rows(fx->dir, "fts"), 2 + STORE_FTS_BATCH);

	/* A queued message that is expunged leaves the queue with it. */
	uint32_t uid = deliver(fx->st, NULL, NULL, "quokka");
	assert_int_equal(store_fts_pending(fx->st), 1);
	struct store_range r = {uid, uid};
	uint32_t *gone = NULL;
	size_t ngone = 0;
	assert_int_equal(
	    store_expunge(fx->st, "INBOX", 0, &r, 1, STORE_EXPUNGE_FORCE, &gone, &ngone, NULL), 0);
	free(gone);
	assert_int_equal(store_fts_pending(fx->st), 0);
	assert_int_equal(fts_hits(fx->st, "quokka"), 0);

	/* With no extractor installed nothing is indexed and nothing is lost. */
	store_set_text_fn(NULL);
	deliver(fx->st, NULL, NULL, "wombat");
	assert_int_equal(fts_hits(fx->st, "wombat"), 0);
	assert_int_equal(store_fts_pending(fx->st), 1);
	store_set_text_fn(mime_meta_text);
	assert_int_equal(fts_hits(fx->st, "wombat"), 1);
}

/*
 * The loop gives handles back with store_pool_give(), which closes none:
 * SQLite's close may checkpoint the WAL and flush, a stall of every
 * session. The handles beyond the limit wait for a worker's get or put.
 */
static void
test_pool_give_closes_nothing(void **state)
{
	struct fixture *fx = *state;
	struct buf err = BUF_INIT(0);

	store_pool_drain();
	store_pool_set_max(1);
	struct store *a = store_pool_get(fx->dir, ACCOUNT, &err);
	struct store *b = store_pool_get(fx->dir, "bob@example.org", &err);
	struct store *c = store_pool_get(fx->dir, "carol@example.org", &err);
	assert_true(a != NULL && b != NULL && c != NULL);
	store_pool_give(&a);
	store_pool_give(&b);
	assert_null(a);
	assert_int_equal(store_pool_idle(), 2);
	/* A worker's put brings the pool back within its limit, oldest out. */
	store_pool_put(&c);
	assert_int_equal(store_pool_idle(), 1);
	store_pool_give(&a);	/* NULL-safe */
	a = store_pool_take(fx->dir, "carol@example.org");
	assert_non_null(a);
	store_pool_give(&a);
	b = store_pool_get(fx->dir, "bob@example.org", &err);
	assert_non_null(b);
	assert_int_equal(store_pool_idle(), 1);
	store_pool_give(&b);
	assert_int_equal(store_pool_idle(), 2);
	/* And so does a worker's get. */
	a = store_pool_get(fx->dir, ACCOUNT, &err);
	assert_non_null(a);
	assert_int_equal(store_pool_idle(), 1);
	store_pool_put(&a);
	store_pool_drain();
	store_pool_set_max(128);
	buf_free(&err);
}

/*
 * Debian's SQLite has no memory management: past the soft heap limit a
 * cache only stops growing and keeps what it took, so 128 idle handles
 * held their 2 MB each for good. A handle's return gives up the idle
 * ones' caches, least recently used first, down to the limit.
 */
static void
test_pool_cache_memory(void **state)
{
	struct fixture *fx = *state;
	struct buf err = BUF_INIT(0);
	char account[64], body[2048];
	struct store *st;

	memset(body, 'x', sizeof(body) - 1);
	body[sizeof(body) - 1] = '\0';
	for (int i = 0; i < 40; i++)
		body[i * 50] = ' ';
	store_pool_drain();
	for (int i = 0; i < 6; i++) {
		xsnprintf(account, sizeof(account), "cache%d@example.org", i);
		assert_non_null(st = store_pool_get(fx->dir, account, &err));
		for (int j = 0; j < 30; j++)
			deliver(st, NULL, body, NULL);
		store_pool_put(&st);
	}
	sqlite3_int64 full = sqlite3_memory_used();
	/* Unbounded: a handle's return leaves the others' caches alone. */
	assert_non_null(st = store_pool_get(fx->dir, "cache0@example.org", &err));
	store_pool_put(&st);
	assert_true(sqlite3_memory_used() >= full - full / 20);
	/* Bounded below what they hold: down to the bound, no further. */
	sqlite3_int64 limit = full - full / 4;
	store_pool_set_cache_memory(limit);
	assert_non_null(st = store_pool_get(fx->dir, "cache5@example.org", &err));
	store_pool_put(&st);
	sqlite3_int64 trimmed = sqlite3_memory_used();
	assert_true(trimmed <= limit);
	store_pool_set_cache_memory(1);
	assert_non_null(st = store_pool_get(fx->dir, "cache5@example.org", &err));
	store_pool_put(&st);
	assert_true(sqlite3_memory_used() < trimmed - full / 10);
	store_pool_set_cache_memory(0);
	store_pool_drain();
	buf_free(&err);
}

/*
 * store_pool_index_idle() indexes the queues of pooled handles left unused
 * for the given time, and only those: not a handle on loan, not one used
 * more recently, not one whose account another handle used more recently,
 * not one with nothing queued.
 */
static void
test_fts_idle(void **state)
{
	struct fixture *fx = *state;
	struct buf err = BUF_INIT(0);

	store_pool_drain();
	store_pool_set_max(128);
	struct store *a = store_pool_get(fx->dir, ACCOUNT, &err);
	assert_non_null(a);
	deliver(a, NULL, NULL, "gecko one");
	deliver(a, NULL, NULL, "gecko two");
	assert_int_equal(store_fts_pending(a), 2);

	/* On loan: left alone. */
	assert_int_equal(store_pool_index_waiting(), 0);
	assert_int_equal(store_pool_index_idle(0, 1000, NULL, NULL), 0);
	assert_int_equal(store_fts_pending(a), 2);

	/* Back in the pool but used just now: left alone for a long idle time. */
	store_pool_put(&a);
	assert_int_equal(store_pool_index_waiting(), 1);
	assert_int_equal(store_pool_index_idle(3600 * 1000, 1000, NULL, NULL), 0);
	assert_int_equal(count_rows(fx->dir, "fts"), 0);

	/* No time left: nothing taken up. */
	assert_int_equal(store_pool_index_idle(0, -1, NULL, NULL), 0);
	assert_int_equal(count_rows(fx->dir, "fts"), 0);

	/* Idle long enough: indexed, and given back to the pool. */
	assert_int_equal(store_pool_index_idle(0, 1000, NULL, NULL), 2);
	assert_int_equal(count_rows(fx->dir, "fts"), 2);
	assert_int_equal(store_pool_idle(), 1);
	assert_int_equal(store_pool_index_waiting(), 0);
	a = store_pool_get(fx->dir, ACCOUNT, &err);
	assert_int_equal(store_fts_pending(a), 0);
	assert_int_equal(fts_hits(a, "gecko"), 2);

	/* Nothing queued: nothing to do, even after a read-only use. */
	store_pool_put(&a);
	assert_int_equal(store_pool_index_idle(0, 1000, NULL, NULL), 0);

	/* A queue left by a handle since closed (a restart): a new handle finds it. */
	a = store_pool_get(fx->dir, ACCOUNT, &err);
	deliver(a, NULL, NULL, "newt");
	store_close(&a);
	store_pool_drain();
	a = store_pool_get(fx->dir, ACCOUNT, &err);
	store_pool_put(&a);
	assert_int_equal(store_pool_index_waiting(), 1);
	assert_int_equal(store_pool_index_idle(0, 1000, NULL, NULL), 1);
	assert_int_equal(count_rows(fx->dir, "fts"), 3);
	assert_int_equal(store_pool_index_waiting(), 0);

	/*
	 * The account counts, not the handle: an idle handle with a queue is
	 * left alone while another handle of the same account was used within
	 * the idle time (a delivery going on).
	 */
	a = store_pool_get(fx->dir, ACCOUNT, &err);
	struct store *b = store_pool_get(fx->dir, ACCOUNT, &err);
	assert_ptr_not_equal(a, b);
	deliver(a, NULL, NULL, "skink");
	store_pool_put(&a);
	usleep(1100 * 1000);
	store_pool_put(&b);
	assert_int_equal(store_pool_index_idle(1000, 1000, NULL, NULL), 0);
	usleep(1100 * 1000);
	assert_int_equal(store_pool_index_idle(1000, 1000, NULL, NULL), 1);
	assert_int_equal(count_rows(fx->dir, "fts"), 4);
	store_pool_drain();
	buf_free(&err);
}

/* For test_fts_idle_yield: calls[0] counts the questions; yes from question calls[1] + 1 on. */
static int
yield_after(void *arg)
{
	int *calls = arg;
	return ++calls[0] > calls[1];
}

/*
 * store_pool_index_idle() asks its yield callback before each handle and
 * each further chunk (STORE_FTS_CHUNK messages) and stops at the first yes:
 * mail coming in goes first, and what is left stays queued for the next call.
 */
static void
test_fts_idle_yield(void **state)
{
	struct fixture *fx = *state;
	struct buf err = BUF_INIT(0);
	enum { N = STORE_FTS_CHUNK + 3 };
	static struct store_add_item it[N];
	static char text[N][96];

	store_pool_drain();
	store_pool_set_max(128);
	struct store *a = store_pool_get(fx->dir, ACCOUNT, &err);
	assert_non_null(a);
	for (int i = 0; i < N; i++) {
		xsnprintf(text[i], sizeof(text[i]), "Subject: s%d\r\n\r\nquokka%d\r\n", i, i);
		it[i] = (struct store_add_item){.msg = text[i], .len = strlen(text[i])};
	}
	assert_int_equal(store_add_many(a, NULL, it, N, NULL), 0);
	assert_int_equal(store_fts_pending(a), N);
	store_pool_put(&a);

	/* Asked first: nothing done. */
	int calls[2] = {0, 0};
	assert_int_equal(store_pool_index_idle(0, 1000, yield_after, calls), 0);
	assert_int_equal(count_rows(fx->dir, "fts"), 0);
	assert_int_equal(store_pool_index_waiting(), 1);

	/* Asked again after one transaction: one chunk done, the rest left queued. */
	calls[0] = 0;
	calls[1] = 1;
	assert_int_equal(store_pool_index_idle(0, 1000, yield_after, calls), STORE_FTS_CHUNK);
	assert_int_equal(calls[0], 3);
	assert_int_equal(count_rows(fx->dir, "fts"), STORE_FTS_CHUNK);
	assert_int_equal(store_pool_index_waiting(), 1);

	/* Never yielding: the rest. */
	calls[0] = 0;
	calls[1] = 100;
	assert_int_equal(store_pool_index_idle(0, 1000, yield_after, calls), 3);
	assert_int_equal(count_rows(fx->dir, "fts"), N);
	assert_int_equal(store_pool_index_waiting(), 0);
	store_pool_drain();
	buf_free(&err);
}

/* An index of schema 3 (every message indexed at delivery) gains the queue. */
static void
test_fts_upgrade_from_3(void **state)
{
	struct fixture *fx = *state;

	deliver(fx->st, NULL, NULL, "ibis");
	assert_int_equal(fts_hits(fx->st, "ibis"), 1);
	downgrade(fx, UNDO_SCHEMA_5 "DROP TABLE fts_pending; DROP TRIGGER files_ad;"
				    "CREATE TRIGGER files_ad AFTER DELETE ON files BEGIN"
				    " DELETE FROM fts WHERE rowid = old.id;"
				    " DELETE FROM search_hdrs WHERE id = old.id; END;"
				    "PRAGMA user_version = 3;");
	assert_int_equal(store_fts_pending(fx->st), 0);
	deliver(fx->st, NULL, NULL, "ibis again");
	assert_int_equal(store_fts_pending(fx->st), 1);
	assert_int_equal(fts_hits(fx->st, "ibis"), 2);
	assert_int_equal(fts_hits(fx->st, "again"), 1);
}

static uint32_t
recent_count(struct store *st, const char *mbox)
{
	struct store_status s;

	assert_int_equal(store_mailbox_status(st, mbox, &s), 0);
	return s.recent;
}

static uint32_t
recent_uid(struct store *st, const char *mbox)
{
	struct store_mbox_view *v = NULL;

	assert_int_equal(store_mailbox_load(st, mbox, &v), 0);
	uint32_t r = v->recent_uid;
	store_mbox_view_free(&v);
	return r;
}

/*
 * IMAP4rev1 \Recent: a watermark per mailbox that a claim moves to UIDNEXT,
 * handing the UIDs it passed to one caller; STATUS counts the messages
 * above it, through expunges, COPY and MOVE.
 */
static void
test_recent(void **state)
{
	struct fixture *fx = *state;
	uint32_t lo = 9, hi = 9;

	assert_int_equal(recent_count(fx->st, "INBOX"), 0);
	deliver(fx->st, NULL, msg1, NULL);
	deliver(fx->st, NULL, msg1, NULL);
	assert_int_equal(recent_count(fx->st, "INBOX"), 2);
	assert_int_equal(recent_uid(fx->st, "INBOX"), 1);
	assert_int_equal(store_mailbox_claim_recent(fx->st, "INBOX", 0, 0, &lo, &hi), 1);
	assert_int_equal(lo, 1);
	assert_int_equal(hi, 3);
	assert_int_equal(recent_count(fx->st, "INBOX"), 0);
	assert_int_equal(recent_uid(fx->st, "INBOX"), 3);
	/* Nothing left for the next one, who learns that all below 3 is taken. */
	assert_int_equal(store_mailbox_claim_recent(fx->st, "INBOX", 0, 0, &lo, &hi), 1);
	assert_int_equal(lo, 3);
	assert_int_equal(hi, 3);

	/* Expunged, copied and moved messages leave and enter the count. */
	deliver(fx->st, NULL, msg1, NULL);
	deliver(fx->st, NULL, msg1, NULL);
	assert_int_equal(recent_count(fx->st, "INBOX"), 2);
	struct store_range three = {3, 3}, old = {1, 2}, four = {4, 4};
	uint32_t *gone = NULL;
	size_t ngone = 0;
	assert_int_equal(
	    store_expunge(fx->st, "INBOX", 0, &three, 1, STORE_EXPUNGE_FORCE, &gone, &ngone, NULL),
	    0);
	free(gone);
	assert_int_equal(recent_count(fx->st, "INBOX"), 1);
	struct store_copy_result cr;
	assert_int_equal(store_copy(fx->st, "INBOX", 0, &old, 1, "Archive", 0, &cr), 2);
	store_copy_result_free(&cr);
	assert_int_equal(recent_count(fx->st, "Archive"), 2);
	assert_int_equal(store_copy(fx->st, "INBOX", 0, &four, 1, "Archive", 1, &cr), 1);
	store_copy_result_free(&cr);
	assert_int_equal(recent_count(fx->st, "INBOX"), 0);
	assert_int_equal(recent_count(fx->st, "Archive"), 3);
	assert_int_equal(store_mailbox_claim_recent(fx->st, "INBOX", 0, 0, &lo, &hi), 1);
	assert_int_equal(lo, 3);
	assert_int_equal(hi, 5);

	/* A mailbox replaced under the caller's UIDVALIDITY is not touched. */
	struct store_status a;
	assert_int_equal(store_mailbox_status(fx->st, "Archive", &a), 0);
	assert_int_equal(
	    store_mailbox_claim_recent(fx->st, "Archive", a.uidvalidity + 1, 0, &lo, &hi), -1);
	assert_int_equal(store_errcode(fx->st), STORE_ERR_CHANGED);
	assert_int_equal(recent_count(fx->st, "Archive"), 3);

	/* With nowait, a writer elsewhere means "later" at once, not a wait. */
	char path[256];
	sqlite3 *db;
	xsnprintf(path, sizeof(path), "%s/mail/example.org/alice/index.db", fx->dir);
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
	int64_t t0 = util_mono_ms();
	assert_int_equal(store_mailbox_claim_recent(fx->st, "Archive", 0, 1, &lo, &hi), 0);
	assert_true(util_mono_ms() - t0 < 1000);
	assert_int_equal(store_errcode(fx->st), STORE_OK);
	assert_int_equal(sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	assert_int_equal(store_mailbox_claim_recent(fx->st, "Archive", 0, 1, &lo, &hi), 1);
	assert_int_equal(lo, 1);
	assert_int_equal(hi, 4);
	assert_int_equal(recent_count(fx->st, "Archive"), 0);
}

/* An index of schema 4 gains the watermark at UIDNEXT: its mail is not new all at once. */
static void
test_recent_upgrade_from_4(void **state)
{
	struct fixture *fx = *state;
	uint32_t lo = 0, hi = 0;

	deliver(fx->st, NULL, msg1, NULL);
	deliver(fx->st, NULL, msg1, NULL);
	downgrade(fx, UNDO_SCHEMA_5 "PRAGMA user_version = 4;");
	assert_int_equal(recent_count(fx->st, "INBOX"), 0);
	assert_int_equal(recent_uid(fx->st, "INBOX"), 3);
	assert_int_equal(recent_uid(fx->st, "Sent"), 1);
	deliver(fx->st, NULL, msg1, NULL);
	assert_int_equal(recent_count(fx->st, "INBOX"), 1);
	assert_int_equal(store_mailbox_claim_recent(fx->st, "INBOX", 0, 0, &lo, &hi), 1);
	assert_int_equal(lo, 3);
	assert_int_equal(hi, 4);
	assert_int_equal(count_rows(fx->dir, "pragma_user_version WHERE user_version = 6"), 1);
}

/* Whether each message of INBOX ends without LF, as a string of 0 and 1 in UID order. */
static void
noeol_of(struct store *st, char *out, size_t outlen)
{
	struct store_mbox_view *v;
	size_t i;

	assert_int_equal(store_mailbox_load(st, "INBOX", &v), 0);
	for (i = 0; i < v->count && i + 1 < outlen; i++) {
		out[i] = v->msgs[i].noeol ? '1' : '0';
		assert_int_equal(store_pop3_size(&v->msgs[i]),
				 v->msgs[i].size + (v->msgs[i].noeol ? 2 : 0));
	}
	out[i] = '\0';
	store_mbox_view_free(&v);
}

/*
 * POP3 adds a CRLF to a message that does not end with one, and its sizes
 * must count it (RFC 1939 11): the store knows which messages, from their
 * delivery or APPEND on, and an index of schema 5 learns it from the end
 * of each file as it is upgraded. A bare CR last is no line end; an empty
 * message needs none.
 */
static void
test_noeol(void **state)
{
	struct fixture *fx = *state;
	static const char *const texts[] = {
	    "Subject: a\r\n\r\nends in CRLF\r\n",
	    "Subject: b\r\n\r\nno line end",
	    "Subject: c\r\n\r\nbare CR last\r",
	    "Subject: d\n\nbare LF last\n",
	    "",
	};
	char got[16];
	uint32_t uid;

	for (size_t i = 0; i < ARRAY_LEN(texts); i++)
		assert_int_equal(
		    store_append(fx->st, "INBOX", texts[i], strlen(texts[i]), NULL, NULL, NULL), 0);
	noeol_of(fx->st, got, sizeof(got));
	assert_string_equal(got, "01100");
	assert_int_equal(store_deliver(fx->st, NULL, texts[1], strlen(texts[1]), NULL, "k", &uid),
			 1);
	assert_int_equal(uid, 6);
	/* COPY and MOVE keep it. */
	struct store_range r = {2, 3};
	struct store_copy_result cr;
	assert_int_equal(store_copy(fx->st, "INBOX", 0, &r, 1, "Trash", 0, &cr), 2);
	store_copy_result_free(&cr);
	r = (struct store_range){1, 3};
	assert_int_equal(store_copy(fx->st, "Trash", 0, &r, 1, "INBOX", 1, &cr), 2);
	store_copy_result_free(&cr);
	noeol_of(fx->st, got, sizeof(got));
	assert_string_equal(got, "01100111");
	/* Schema 5 had no column: the upgrade reads each file's last octet. */
	downgrade(fx, UNDO_SCHEMA_6 "PRAGMA user_version = 5;");
	noeol_of(fx->st, got, sizeof(got));
	assert_string_equal(got, "01100111");
	assert_int_equal(count_rows(fx->dir, "pragma_user_version WHERE user_version = 6"), 1);
}

/* Several messages in one transaction: UIDs in order, one mod-sequence, dedup per item,
 * all or nothing. */
static void
test_add_many(void **state)
{
	struct fixture *fx = *state;
	struct store_status s;
	struct store_meta seen = {.flags = STORE_F_SEEN};
	const char *bad_kw[] = {"bad keyword"};
	struct store_meta bad = {.keywords = bad_kw, .nkeywords = 1};
	uint32_t uv = 0;

	assert_int_equal(store_deliver(fx->st, NULL, msg1, strlen(msg1), NULL, "k0", NULL), 1);
	assert_int_equal(store_mailbox_status(fx->st, "INBOX", &s), 0);
	uint64_t ms0 = s.highestmodseq;

	struct store_add_item it[4] = {
	    {.msg = msg1, .len = strlen(msg1), .dedup_key = "k1"},
	    {.msg = msg1, .len = strlen(msg1), .dedup_key = "k0"}, /* delivered before */
	    {.msg = msg1, .len = strlen(msg1), .meta = &seen, .dedup_key = "k2"},
	    {.msg = msg1, .len = strlen(msg1), .dedup_key = "k1"}, /* earlier in this batch */
	};
	assert_int_equal(store_add_many(fx->st, NULL, it, 4, &uv), 0);
	assert_int_not_equal(uv, 0);
	assert_int_equal(it[0].rc, 1);
	assert_int_equal(it[0].uid, 2);
	assert_int_equal(it[1].rc, 0);
	assert_int_equal(it[1].uid, 1); /* the UID it got then */
	assert_int_equal(it[2].rc, 1);
	assert_int_equal(it[2].uid, 3);
	assert_int_equal(it[3].rc, 0);
	assert_int_equal(it[3].uid, 2);
	assert_int_equal(store_mailbox_status(fx->st, "INBOX", &s), 0);
	assert_int_equal(s.messages, 3);
	assert_int_equal(s.unseen, 2);
	assert_int_equal(s.uidnext, 4);
	assert_int_equal(s.highestmodseq, ms0 + 1); /* one operation */
	assert_int_equal(count_files(fx->dir, "msg"), 3);
	assert_int_equal(count_files(fx->dir, "tmp"), 0);

	/* One bad item: nothing of the batch is stored, no file left behind. */
	struct store_add_item it2[3] = {
	    {.msg = msg1, .len = strlen(msg1)},
	    {.msg = msg1, .len = strlen(msg1)},
	    {.msg = msg1, .len = strlen(msg1), .meta = &bad},
	};
	assert_int_equal(store_add_many(fx->st, "INBOX", it2, 3, NULL), -1);
	assert_int_equal(store_errcode(fx->st), STORE_ERR_INVALID);
	/* A missing mailbox: the same. */
	assert_int_equal(store_add_many(fx->st, "Nope", it2, 2, NULL), -1);
	assert_int_equal(store_errcode(fx->st), STORE_ERR_NOMAILBOX);
	assert_int_equal(store_mailbox_status(fx->st, "INBOX", &s), 0);
	assert_int_equal(s.messages, 3);
	assert_int_equal(s.uidnext, 4);
	assert_int_equal(count_files(fx->dir, "msg"), 3);
	assert_int_equal(count_files(fx->dir, "tmp"), 0);
	/* Empty batch: nothing changes. */
	assert_int_equal(store_add_many(fx->st, NULL, it, 0, NULL), 0);
	assert_int_equal(store_mailbox_status(fx->st, "INBOX", &s), 0);
	assert_int_equal(s.highestmodseq, ms0 + 1);
}

/*
 * The quota held inside the adding transaction: deliveries (partial) take
 * what fits in order, a message exactly filling the quota included; an
 * APPEND (all or nothing) fails whole; a dedup key delivered before adds
 * nothing and is never refused; the refused leave no file behind.
 */
static void
test_add_many_quota(void **state)
{
	struct fixture *fx = *state;
	uint64_t l, used;

	assert_int_equal(store_deliver(fx->st, NULL, msg1, strlen(msg1), NULL, "k0", NULL), 1);
	assert_int_equal(store_usage(fx->st, &l, NULL), 0);
	assert_true(l > 0);

	struct store_add_item it[3] = {
	    {.msg = msg1, .len = strlen(msg1), .dedup_key = "k1"},
	    {.msg = msg1, .len = strlen(msg1), .dedup_key = "k2"}, /* no room left */
	    {.msg = msg1, .len = strlen(msg1), .dedup_key = "k0"}, /* delivered before */
	};
	assert_int_equal(
	    store_add_many_quota(fx->st, NULL, it, 3, (int64_t)(2 * l + l / 2), 1, NULL), 0);
	assert_int_equal(it[0].rc, 1);
	assert_int_equal(it[1].rc, 2);
	assert_int_equal(it[2].rc, 0);
	assert_int_equal(store_usage(fx->st, &used, NULL), 0);
	assert_int_equal(used, 2 * l);
	assert_int_equal(count_files(fx->dir, "msg"), 2);
	assert_int_equal(count_files(fx->dir, "tmp"), 0);
	assert_int_equal(store_delivered(fx->st, "k2", NULL), 0);

	/* All or nothing: two do not fit under 3l, so neither is stored. */
	struct store_add_item two[2] = {
	    {.msg = msg1, .len = strlen(msg1)},
	    {.msg = msg1, .len = strlen(msg1)},
	};
	assert_int_equal(store_add_many_quota(fx->st, "INBOX", two, 2, (int64_t)(3 * l), 0, NULL),
			 -1);
	assert_int_equal(store_errcode(fx->st), STORE_ERR_OVERQUOTA);
	assert_int_equal(store_usage(fx->st, &used, NULL), 0);
	assert_int_equal(used, 2 * l);
	assert_int_equal(count_files(fx->dir, "msg"), 2);
	assert_int_equal(count_files(fx->dir, "tmp"), 0);

	/* One that makes the usage exactly the quota fits. */
	assert_int_equal(store_add_many_quota(fx->st, "INBOX", two, 1, (int64_t)(3 * l), 0, NULL),
			 0);
	assert_int_equal(two[0].rc, 1);
	assert_int_equal(store_usage(fx->st, &used, NULL), 0);
	assert_int_equal(used, 3 * l);
	/* Full: the one delivered before is still only reported. */
	assert_int_equal(store_add_many_quota(fx->st, NULL, &it[2], 1, (int64_t)(3 * l), 1, NULL),
			 0);
	assert_int_equal(it[2].rc, 0);
	assert_int_equal(store_add_many_quota(fx->st, NULL, &it[1], 1, (int64_t)(3 * l), 1, NULL),
			 0);
	assert_int_equal(it[1].rc, 2);
	assert_int_equal(store_usage(fx->st, &used, NULL), 0);
	assert_int_equal(used, 3 * l);
}

/*
 * An item the first look at the room finds over the quota, whose dedup key
 * the transaction then finds delivered (here by an earlier item of the
 * same batch; as well by another adder in between), is delivered, not
 * deferred: it used to be skipped in the transaction unasked, rc 2, as
 * it never is without a quota.
 */
static void
test_add_many_quota_dedup_after_first_look(void **state)
{
	struct fixture *fx = *state;
	uint64_t l, used;

	assert_int_equal(store_deliver(fx->st, NULL, msg1, strlen(msg1), NULL, NULL, NULL), 1);
	assert_int_equal(store_usage(fx->st, &l, NULL), 0);

	struct store_add_item it[2] = {
	    {.msg = msg1, .len = strlen(msg1), .dedup_key = "k1"},
	    {.msg = msg1, .len = strlen(msg1), .dedup_key = "k1"}, /* no room at the first look */
	};
	assert_int_equal(store_add_many_quota(fx->st, NULL, it, 2, (int64_t)(2 * l), 1, NULL), 0);
	assert_int_equal(it[0].rc, 1);
	assert_int_equal(it[1].rc, 0);
	assert_int_equal(it[1].uid, it[0].uid);
	assert_int_equal(store_usage(fx->st, &used, NULL), 0);
	assert_int_equal(used, 2 * l);
	assert_int_equal(count_files(fx->dir, "msg"), 2);
	assert_int_equal(count_files(fx->dir, "tmp"), 0);
}

/*
 * Partial (deliveries): an item that does not fit is skipped, not the end
 * of the batch; a smaller one after it that fits what is left is stored,
 * and the usage still never passes the quota (docs/config.md user.quota).
 */
static void
test_add_many_quota_later_smaller_fits(void **state)
{
	struct fixture *fx = *state;
	static const char small[] = "Subject: s\r\n\r\nx\r\n";
	uint64_t used;

	struct store_add_item it[2] = {
	    {.msg = msg1, .len = strlen(msg1), .dedup_key = "big"},
	    {.msg = small, .len = sizeof(small) - 1, .dedup_key = "small"},
	};
	assert_true(strlen(msg1) > sizeof(small));
	assert_int_equal(store_add_many_quota(fx->st, NULL, it, 2, (int64_t)sizeof(small), 1, NULL),
			 0);
	assert_int_equal(it[0].rc, 2);
	assert_int_equal(it[0].size, strlen(msg1));
	assert_int_equal(it[1].rc, 1);
	assert_int_equal(store_usage(fx->st, &used, NULL), 0);
	assert_int_equal(used, sizeof(small) - 1);
	assert_int_equal(count_files(fx->dir, "msg"), 1);
	assert_int_equal(count_files(fx->dir, "tmp"), 0);
}

/* COPY under the quota, held in its transaction: all or nothing; MOVE adds nothing. */
static void
test_copy_quota(void **state)
{
	struct fixture *fx = *state;
	struct store_copy_result cr;
	struct store_range all = {1, UINT32_MAX};
	uint64_t l, used;

	assert_int_equal(store_deliver(fx->st, NULL, msg1, strlen(msg1), NULL, NULL, NULL), 1);
	assert_int_equal(store_deliver(fx->st, NULL, msg1, strlen(msg1), NULL, NULL, NULL), 1);
	assert_int_equal(store_usage(fx->st, &l, NULL), 0);
	l /= 2;
	/* Two copies need 4l: under 3l nothing is copied. */
	assert_int_equal(
	    store_copy_quota(fx->st, "INBOX", 0, &all, 1, "Archive", 0, (int64_t)(3 * l), &cr), -1);
	assert_int_equal(store_errcode(fx->st), STORE_ERR_OVERQUOTA);
	assert_int_equal(cr.n, 0);
	assert_int_equal(store_usage(fx->st, &used, NULL), 0);
	assert_int_equal(used, 2 * l);
	/* Exactly at the quota is fine. */
	assert_int_equal(
	    store_copy_quota(fx->st, "INBOX", 0, &all, 1, "Archive", 0, (int64_t)(4 * l), &cr), 2);
	store_copy_result_free(&cr);
	assert_int_equal(store_usage(fx->st, &used, NULL), 0);
	assert_int_equal(used, 4 * l);
	/* Full, a MOVE still goes: it adds nothing. */
	assert_int_equal(
	    store_copy_quota(fx->st, "Archive", 0, &all, 1, "Trash", 1, (int64_t)(4 * l), &cr), 2);
	store_copy_result_free(&cr);
	assert_int_equal(store_usage(fx->st, &used, NULL), 0);
	assert_int_equal(used, 4 * l);
}

/* Shared handles: reuse, case-insensitive account match, LRU limit, errors reset. */
static void
test_pool(void **state)
{
	struct fixture *fx = *state;
	struct buf err = BUF_INIT(0);
	struct store_status stt;

	store_pool_drain();
	store_pool_set_max(128);
	struct store *a = store_pool_get(fx->dir, ACCOUNT, &err);
	struct store *b = store_pool_get(fx->dir, ACCOUNT, &err);
	assert_non_null(a);
	assert_non_null(b);
	assert_ptr_not_equal(a, b); /* both on loan: two handles */
	struct store *b0 = b;
	deliver(a, NULL, msg1, "fox");
	/* A failure that is not internal leaves a reusable handle, error cleared. */
	assert_int_equal(store_mailbox_status(b, "Nope", &stt), -1);
	assert_int_equal(store_errcode(b), STORE_ERR_NOMAILBOX);
	store_pool_put(&a);
	assert_null(a);
	store_pool_put(&b);
	assert_int_equal(store_pool_idle(), 2);

	/* The last returned comes back first, whatever the case of the name. */
	struct store *c = store_pool_get(fx->dir, "Alice@Example.ORG", &err);
	assert_ptr_equal(c, b0);
	assert_int_equal(store_errcode(c), STORE_OK);
	assert_int_equal(store_mailbox_status(c, "INBOX", &stt), 0);
	assert_int_equal(stt.messages, 1); /* sees what the other handle delivered */
	assert_int_equal(store_pool_idle(), 1);

	/* Another account gets its own handle, never one of alice's. */
	struct store *d = store_pool_get(fx->dir, "bob@example.org", &err);
	assert_non_null(d);
	assert_string_equal(store_account(d), "bob@example.org");
	assert_int_equal(store_pool_idle(), 1);
	store_pool_put(&c);
	store_pool_put(&d);
	assert_int_equal(store_pool_idle(), 3);

	/* The limit closes the least recently returned (the first alice handle). */
	store_pool_set_max(2);
	assert_int_equal(store_pool_idle(), 2);
	struct store *e = store_pool_get(fx->dir, ACCOUNT, &err);
	assert_ptr_equal(e, b0);
	struct store *f = store_pool_get(fx->dir, ACCOUNT, &err);
	assert_non_null(f); /* the other alice handle was closed: a new one */
	assert_ptr_not_equal(f, b0);
	store_pool_put(&e);
	store_pool_put(&f);
	store_pool_put(&f); /* NULL-safe */
	assert_int_equal(store_pool_idle(), 2);

	/* An account that cannot be opened fails with a message. */
	assert_null(store_pool_get(fx->dir, "no-at-sign", &err));
	assert_true(err.len > 0);

	store_pool_drain();
	assert_int_equal(store_pool_idle(), 0);
	store_pool_set_max(128);
	buf_free(&err);
}

struct pool_worker {
	const char *dir;
	int fails;
};

static void *
pool_worker_main(void *arg)
{
	struct pool_worker *w = arg;
	struct store_status stt;

	for (int i = 0; i < 200; i++) {
		struct store *st = store_pool_get(w->dir, ACCOUNT, NULL);
		if (st == NULL || store_mailbox_status(st, "INBOX", &stt) < 0)
			w->fails++;
		store_pool_put(&st);
	}
	return NULL;
}

/* Threads borrowing and returning handles of one account at once. */
/*
 * `surat user del` moves the store aside (store_account_retire()). A pooled
 * handle of the old store is then never lent: the loop's take leaves it
 * (NULL), a worker's get closes it and opens the account's new store. Closing
 * the old handles deletes no -wal or -shm of the new store (SQLite sees the
 * old database moved), whose commits stay readable.
 */
static void
test_pool_moved_store(void **state)
{
	struct fixture *fx = *state;
	struct buf err = BUF_INIT(0), moved = BUF_INIT(0);
	char wal[256];

	store_pool_drain();
	store_pool_set_max(128);
	struct store *a = store_pool_get(fx->dir, ACCOUNT, &err);
	assert_non_null(a);
	deliver(a, NULL, NULL, "old mail");
	store_pool_put(&a);
	assert_int_equal(store_account_retire(fx->dir, ACCOUNT, &moved, &err), 1);
	assert_non_null(strstr(buf_str(&moved), "/deleted/alice@example.org."));
	assert_int_equal(store_account_retire(fx->dir, ACCOUNT, &moved, &err), 0);

	assert_null(store_pool_take(fx->dir, ACCOUNT));
	assert_int_equal(store_pool_idle(), 1);	/* marked, left for a worker */
	struct store *b = store_pool_get(fx->dir, ACCOUNT, &err);
	assert_non_null(b);
	assert_true(store_root_current(b));
	assert_int_equal(store_pool_idle(), 0);	/* the moved one closed */
	deliver(b, NULL, NULL, "new mail");
	xsnprintf(wal, sizeof(wal), "%s/mail/example.org/alice/index.db-wal", fx->dir);
	store_close(&fx->st);	/* the fixture's, of the old store */
	assert_int_equal(access(wal, F_OK), 0);
	store_pool_put(&b);
	store_pool_drain();
	assert_int_equal(count_rows(fx->dir, "messages"), 1);
	buf_free(&err);
	buf_free(&moved);
}

static void
test_pool_threads(void **state)
{
	struct fixture *fx = *state;
	pthread_t t[4];
	struct pool_worker w[4];

	store_pool_drain();
	for (int i = 0; i < 4; i++) {
		w[i] = (struct pool_worker){fx->dir, 0};
		assert_int_equal(pthread_create(&t[i], NULL, pool_worker_main, &w[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(w[i].fails, 0);
	}
	/* Never more handles than threads borrowing at once. */
	assert_true(store_pool_idle() >= 1 && store_pool_idle() <= 4);
	store_pool_drain();
}

int
main(void)
{
	store_set_text_fn(mime_meta_text);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_default_mailboxes, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_names, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_deliver_read, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_dedup, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_dedup_keys_are_pruned, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_uid_monotonic, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_flags_modseq, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_expunge_changes, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_copy_move, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rename, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_mailbox_caps, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_delete, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_fts, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_usage, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_notify, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_concurrent, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_crash, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_sweep_beside_deliveries, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_sweep_finishes_cut_move, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_sweep_moved_store, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_expunged_files_left_behind_are_swept, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_sweep_during_writes, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_sweep_flushes_before_removing, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_sweep_many_dead_markers, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_writes_flushed_before_return, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_file_ids_in_runs, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_add_many, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_add_many_quota, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_add_many_quota_dedup_after_first_look, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_add_many_quota_later_smaller_fits, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_copy_quota, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_search_headers, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_fts_deferred, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_fts_expunged_while_indexed, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_pool_give_closes_nothing, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_pool_cache_memory, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_fts_idle, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_fts_idle_yield, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_fts_upgrade_from_3, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_recent, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_recent_upgrade_from_4, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_noeol, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_pool, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_pool_moved_store, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_pool_threads, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
