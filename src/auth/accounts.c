/*
 * accounts — see accounts.h.
 *
 * Schema (PRAGMA user_version ACCOUNTS_SCHEMA_VERSION):
 *   domains(name PRIMARY KEY)
 *   users(address PRIMARY KEY, domain, hash, quota)
 *   aliases(source, target, PRIMARY KEY(source, target))
 *   kept(kind, key, value, at)
 * Version 2 has every address's local part in Unicode NFC; 0 (the tables
 * were never versioned before) is upgraded at open (accounts_upgrade_nfc()).
 *
 * SECURITY: all SQL uses bound parameters; addresses are validated by
 * accounts_normalise() before any statement sees them.
 */
#include "auth/accounts.h"
#include "auth/password.h"
#include "core/buf.h"
#include "core/log.h"
#include "core/util.h"
#include "store/store.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <idn2.h>
#include <sqlite3.h>
#include <uninorm.h>
#include <unistr.h>

#define ALIAS_MAX_DEPTH 10
#define RESOLVE_MAX 1000
#define ADDRESS_MAX 254	/* octets: an SMTP path of 256 without its brackets */
#define ACC_STMTS 16
#define ACCOUNTS_SCHEMA_VERSION 2

/*
 * The lookups every RCPT and every delivery makes keep their prepared
 * statements: compiling the SQL each time cost more than running it. Keyed
 * by the address of the (constant) SQL text.
 */
struct accounts {
	sqlite3 *db;
	const char *stmt_sql[ACC_STMTS];
	sqlite3_stmt *stmt[ACC_STMTS];
	int read_depth;	/* accounts_read_begin() nesting */
};

/* A cached statement for the constant sql, reset and unbound; NULL on error.
 * Reset it when done, never finalize it. */
static sqlite3_stmt *
acc_stmt(struct accounts *a, const char *sql)
{
	int i;

	for (i = 0; i < ACC_STMTS && a->stmt_sql[i]; i++) {
		if (a->stmt_sql[i] == sql) {
			sqlite3_reset(a->stmt[i]);
			sqlite3_clear_bindings(a->stmt[i]);
			return a->stmt[i];
		}
	}
	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v3(a->db, sql, -1, i < ACC_STMTS ? SQLITE_PREPARE_PERSISTENT : 0, &st,
			       NULL) != SQLITE_OK)
		return NULL;
	if (i == ACC_STMTS)
		PANIC("accounts: more cached statements than ACC_STMTS");
	a->stmt_sql[i] = sql;
	a->stmt[i] = st;
	return st;
}

static const char schema[] =
	"CREATE TABLE IF NOT EXISTS domains(name TEXT PRIMARY KEY, created INTEGER NOT NULL);"
	"CREATE TABLE IF NOT EXISTS users(address TEXT PRIMARY KEY,"
	" domain TEXT NOT NULL REFERENCES domains(name),"
	" hash TEXT NOT NULL, quota INTEGER NOT NULL DEFAULT -1, created INTEGER NOT NULL);"
	"CREATE INDEX IF NOT EXISTS users_domain ON users(domain);"
	"CREATE TABLE IF NOT EXISTS aliases(source TEXT NOT NULL, target TEXT NOT NULL,"
	" PRIMARY KEY(source, target));"
	/* What the daemon keeps over a restart (accounts_kept_save()). */
	"CREATE TABLE IF NOT EXISTS kept(kind TEXT NOT NULL, key TEXT NOT NULL,"
	" value INTEGER NOT NULL, at INTEGER NOT NULL, PRIMARY KEY(kind, key));";

static void
db_err(struct buf *err, sqlite3 *db, const char *what)
{
	if (err)
		buf_printf(err, "%s: %s", what, sqlite3_errmsg(db));
}

/* PRAGMA user_version, or -1. */
static int
db_version(sqlite3 *db)
{
	sqlite3_stmt *st = NULL;
	int v = -1;

	if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK &&
	    sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	return v;
}

static int accounts_upgrade_nfc(struct accounts *a, const char *data_dir, const char *path,
				struct buf *err);

/*
 * accounts.db holds the password hashes: nobody but its owner reads it,
 * whatever data_dir's mode (an admin's `install -d` makes it 0755), where
 * SQLite made it 0644. SQLite gives the -wal and -shm the file's mode;
 * those made before are fixed too. Best effort: a file not ours stays.
 */
static void
accounts_private(const char *path)
{
	static const char *const suffix[] = {"", "-wal", "-shm"};
	char p[4096];
	struct stat st;

	for (size_t i = 0; i < ARRAY_LEN(suffix); i++)
		if (xsnprintf(p, sizeof(p), "%s%s", path, suffix[i]) >= 0 && stat(p, &st) == 0 &&
		    (st.st_mode & 077) != 0 && chmod(p, st.st_mode & 0700) < 0)
			log_warn("chmod(%s) failed: %s", p, strerror(errno));
}

struct accounts *
accounts_open(const char *data_dir, struct buf *err)
{
	char path[4096];
	sqlite3 *db = NULL;
	char *msg = NULL;

	if (util_mkdir_p(data_dir, 0750) < 0) {
		buf_printf(err, "mkdir(%s) failed: %s", data_dir, strerror(errno));
		return NULL;
	}
	if (xsnprintf(path, sizeof(path), "%s/accounts.db", data_dir) < 0) {
		buf_printf(err, "data_dir path too long");
		return NULL;
	}
	/*
	 * Made 0600 here, not by SQLite (0644) and then chmod'ed: a local user
	 * who opened it in between would keep reading it through that
	 * descriptor. An empty file is an empty database to SQLite.
	 */
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd >= 0)
		close(fd);
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
					       SQLITE_OPEN_NOMUTEX,
			    NULL) != SQLITE_OK) {
		buf_printf(err, "open(%s) failed: %s", path, db ? sqlite3_errmsg(db) : "no memory");
		sqlite3_close(db);
		return NULL;
	}
	accounts_private(path);
	sqlite3_busy_timeout(db, 10000);
	if (sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
			     "PRAGMA foreign_keys=ON;",
			 NULL, NULL, &msg) != SQLITE_OK ||
	    sqlite3_exec(db, schema, NULL, NULL, &msg) != SQLITE_OK) {
		buf_printf(err, "%s: %s", path, msg ? msg : sqlite3_errmsg(db));
		sqlite3_free(msg);
		sqlite3_close(db);
		return NULL;
	}
	struct accounts *a = xcalloc(1, sizeof(*a));
	a->db = db;
	int v = db_version(db);
	if (v < 0 || v > ACCOUNTS_SCHEMA_VERSION) {
		if (v < 0)
			buf_printf(err, "%s: PRAGMA user_version: %s", path, sqlite3_errmsg(db));
		else
			buf_printf(err, "%s: schema version %d is newer than this surat's (%d)",
				   path, v, ACCOUNTS_SCHEMA_VERSION);
		accounts_close(&a);
		return NULL;
	}
	if (v < ACCOUNTS_SCHEMA_VERSION && accounts_upgrade_nfc(a, data_dir, path, err) < 0) {
		accounts_close(&a);
		return NULL;
	}
	return a;
}

void
accounts_close(struct accounts **pa)
{
	if (*pa == NULL)
		return;
	for (int i = 0; i < ACC_STMTS; i++)
		sqlite3_finalize((*pa)->stmt[i]);
	sqlite3_close((*pa)->db);
	free(*pa);
	*pa = NULL;
}

static int
valid_utf8(const unsigned char *s, size_t n)
{
	size_t i = 0;
	while (i < n) {
		unsigned char c = s[i];
		size_t len;
		if (c < 0x80) {
			i++;
			continue;
		} else if ((c & 0xe0) == 0xc0 && c >= 0xc2)
			len = 2;
		else if ((c & 0xf0) == 0xe0)
			len = 3;
		else if ((c & 0xf8) == 0xf0 && c <= 0xf4)
			len = 4;
		else
			return 0;
		if (i + len > n)
			return 0;
		for (size_t k = 1; k < len; k++)
			if ((s[i + k] & 0xc0) != 0x80)
				return 0;
		/* As SMTP paths are checked (RFC 3629 3): no overlong form, no
		 * surrogate, nothing past U+10FFFF; else an account could be made
		 * that no RCPT can ever name. */
		if ((c == 0xe0 && s[i + 1] < 0xa0) || (c == 0xed && s[i + 1] >= 0xa0) ||
		    (c == 0xf0 && s[i + 1] < 0x90) || (c == 0xf4 && s[i + 1] >= 0x90))
			return 0;
		i += len;
	}
	return 1;
}

int
accounts_normalise_domain(const char *in, struct buf *out, struct buf *err)
{
	size_t n = strlen(in);

	if (n > 0 && in[n - 1] == '.')
		n--;
	if (n == 0 || n > 253) {
		buf_printf(err, "bad domain '%s': empty or longer than 253 characters", in);
		return -1;
	}
	char *d = xstrndup(in, n);
	if (util_has_8bit(d, n)) {
		char *alabel = NULL;
		if (!valid_utf8((const unsigned char *)d, n) ||
		    idn2_to_ascii_8z(d, &alabel, IDN2_NONTRANSITIONAL) != IDN2_OK) {
			buf_printf(err, "bad domain '%s': not a valid internationalised name", in);
			free(d);
			return -1;
		}
		free(d);
		d = xstrdup(alabel);
		idn2_free(alabel);
		n = strlen(d);
	}
	util_lower(d);
	size_t label = 0;
	for (size_t i = 0; i <= n; i++) {
		char c = d[i];
		if (c == '.' || c == '\0') {
			if (label == 0 || label > 63 || d[i - 1] == '-' || d[i - label] == '-') {
				buf_printf(err, "bad domain '%s': empty, long or hyphen-edged label",
					   in);
				free(d);
				return -1;
			}
			label = 0;
			continue;
		}
		if (!(isalnum((unsigned char)c) || c == '-' || c == '_')) {
			buf_printf(err, "bad domain '%s': character '%c' not allowed", in, c);
			free(d);
			return -1;
		}
		label++;
	}
	buf_puts(out, d);
	free(d);
	return 0;
}

/*
 * Append the NFC form of the local part in[0..n) (valid UTF-8) to out: the
 * one spelling of a string that Unicode holds equal to others (o + U+0308
 * and U+00F6), as RFC 6530 10.1, RFC 5198 and PRECIS (RFC 8265) ask. ASCII
 * is its own NFC form and is copied without a call: RCPT lookups are hot.
 * 0, or -1 with err set.
 */
static int
local_nfc(const char *in, size_t n, struct buf *out, struct buf *err)
{
	if (!util_has_8bit(in, n)) {
		buf_append(out, in, n);
		return 0;
	}
	size_t len = 0;
	uint8_t *nfc = u8_normalize(UNINORM_NFC, (const uint8_t *)in, n, NULL, &len);
	if (nfc == NULL) {
		buf_printf(err, "bad address: local part cannot be normalised: %s",
			   strerror(errno));
		return -1;
	}
	buf_append(out, nfc, len);
	free(nfc);
	return 0;
}

/*
 * local_nfc() of in[0..n) with its ASCII lowercased, in NFC still: the
 * ASCII that NFC made (U+212A KELVIN SIGN is 'K') is lowered too, and
 * normalised again if that changed it. 0, or -1 with err set.
 */
static int
nfc_lower(const char *in, size_t n, struct buf *out, struct buf *err)
{
	struct buf low = BUF_INIT(0);
	int r = -1;

	if (!util_has_8bit(in, n)) {
		buf_append(out, in, n); /* lowered with the rest; RCPT lookups are hot */
		return 0;
	}
	buf_append(&low, in, n);
	for (size_t i = 0; i < low.len; i++)
		low.data[i] = (char)tolower((unsigned char)low.data[i]);
	for (int pass = 0; pass < 3; pass++) {
		int upper = 0;
		buf_reset(out);
		if (local_nfc(low.len ? low.data : "", low.len, out, err) < 0)
			goto out;
		for (size_t i = 0; i < out->len; i++)
			if (isupper((unsigned char)out->data[i])) {
				out->data[i] = (char)tolower((unsigned char)out->data[i]);
				upper = 1;
			}
		if (!upper)
			break;
		buf_reset(&low);
		buf_append(&low, out->data, out->len);
	}
	r = 0;
out:
	buf_free(&low);
	return r;
}

int
accounts_addr_ascii(const char *addr, struct buf *out)
{
	const char *at = strrchr(addr, '@');

	if (!util_has_8bit(addr, strlen(addr)))
		return 0;
	if (at == NULL || util_has_8bit(addr, (size_t)(at - addr)))
		return -1;
	struct buf dom = BUF_INIT(0), err = BUF_INIT(0);
	int r = accounts_normalise_domain(at + 1, &dom, &err);
	if (r == 0) {
		buf_append(out, addr, (size_t)(at + 1 - addr));
		buf_append(out, dom.data, dom.len);
	}
	buf_free(&dom);
	buf_free(&err);
	return r == 0 ? 1 : -1;
}

int
accounts_normalise(const char *in, int catchall, struct buf *out, struct buf *err)
{
	const char *at = strrchr(in, '@');
	struct buf local = BUF_INIT(0);
	int r = -1;

	if (at == NULL) {
		buf_printf(err, "bad address '%s': no '@domain'", in);
		return -1;
	}
	size_t llen = (size_t)(at - in);
	if (llen == 0 && !catchall) {
		buf_printf(err, "bad address '%s': empty local part", in);
		return -1;
	}
	/* No SMTP path is longer; and NFC shrinks UTF-8 by 3 at most (Hangul
	 * jamo): past 192 octets no spelling is 64 in NFC. */
	if (llen > 256) {
		buf_printf(err, "bad address '%s': local part longer than 64 octets", in);
		return -1;
	}
	if (!valid_utf8((const unsigned char *)in, llen)) {
		buf_printf(err, "bad address: local part is not valid UTF-8");
		return -1;
	}
	/*
	 * The checks are of the NFC form: it may be longer than what was
	 * given (U+0958 is two code points in NFC), or shorter, and may hold
	 * ASCII where the input had none (U+212A KELVIN SIGN is 'K', U+037E
	 * GREEK QUESTION MARK is ';'). ASCII case is folded before NFC as
	 * well as after: 'W' + U+030A has no composed form, 'w' + U+030A is
	 * U+1E98, and lowering it after NFC alone kept a form not in NFC,
	 * apart from the one 'w' + U+030A and U+1E98 are.
	 */
	if (nfc_lower(in, llen, &local, err) < 0)
		goto out;
	const char *lp = local.len ? local.data : "";
	llen = local.len;
	if (llen > 64) {
		buf_printf(err, "bad address '%s': local part longer than 64 octets", in);
		goto out;
	}
	for (size_t i = 0; i < llen; i++) {
		unsigned char c = (unsigned char)lp[i];
		if (c < 0x80 && !(isalnum(c) || strchr("!#$%&'*+-=?^_`{|}~.", c))) {
			buf_printf(err, "bad address '%s': character '%c' not allowed in local part",
				   in, c >= 0x20 && c < 0x7f ? c : '?');
			goto out;
		}
	}
	if (llen > 0 && (lp[0] == '.' || lp[llen - 1] == '.' || memmem(lp, llen, "..", 2))) {
		buf_printf(err, "bad address '%s': misplaced '.' in local part", in);
		goto out;
	}
	struct buf dom = BUF_INIT(0);
	if (accounts_normalise_domain(at + 1, &dom, err) < 0) {
		buf_free(&dom);
		goto out;
	}
	size_t start = out->len;
	buf_append(out, lp, llen);
	if (llen > 0)
		util_lower(out->data + start);
	buf_putc(out, '@');
	buf_append(out, dom.data, dom.len);
	buf_free(&dom);
	r = 0;
out:
	buf_free(&local);
	return r;
}

/* Prepare, bind text params, step once. Returns the sqlite3_step code. */
static int
exec_bind(struct accounts *a, const char *sql, int nparams, const char *const *params,
	  const int64_t *num, struct buf *err)
{
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(a->db, sql, -1, &st, NULL);
	if (rc != SQLITE_OK) {
		db_err(err, a->db, "prepare");
		return rc;
	}
	for (int i = 0; i < nparams; i++)
		sqlite3_bind_text(st, i + 1, params[i], -1, SQLITE_STATIC);
	if (num)
		sqlite3_bind_int64(st, nparams + 1, *num);
	rc = sqlite3_step(st);
	if (rc != SQLITE_DONE && rc != SQLITE_ROW)
		db_err(err, a->db, "database");
	sqlite3_finalize(st);
	return rc;
}

void
accounts_read_begin(struct accounts *a)
{
	/* Should BEGIN fail, each lookup simply runs on its own. */
	if (a->read_depth++ == 0)
		(void)sqlite3_exec(a->db, "BEGIN", NULL, NULL, NULL);
}

void
accounts_read_end(struct accounts *a)
{
	if (a->read_depth == 0 || --a->read_depth > 0)
		return;
	if (sqlite3_get_autocommit(a->db) == 0 &&
	    sqlite3_exec(a->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
		(void)sqlite3_exec(a->db, "ROLLBACK", NULL, NULL, NULL);
}

/* sql: a string constant (the statement cache key). */
static int
exists(struct accounts *a, const char *sql, const char *key)
{
	sqlite3_stmt *st = acc_stmt(a, sql);
	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
}

/*
 * Whether the A-labels ("xn--") of domain (normalised) are what its U-labels
 * make: one that is no valid punycode, or decodes to what IDNA2008 refuses,
 * would make a local domain no one can name in its UTF-8 form. 1, or 0
 * with err set.
 */
static int
alabels_valid(const char *domain, struct buf *err)
{
	char *ulabel = NULL, *back = NULL;
	int ok;

	if (strncmp(domain, "xn--", 4) != 0 && strstr(domain, ".xn--") == NULL)
		return 1;
	ok = idn2_to_unicode_8z8z(domain, &ulabel, 0) == IDN2_OK &&
	     idn2_to_ascii_8z(ulabel, &back, IDN2_NONTRANSITIONAL) == IDN2_OK &&
	     strcmp(back, domain) == 0;
	idn2_free(ulabel);
	idn2_free(back);
	if (!ok)
		buf_printf(err,
			   "bad domain '%s': an A-label (xn--) that is not the form of a "
			   "valid internationalised name",
			   domain);
	return ok;
}

int
accounts_domain_add(struct accounts *a, const char *domain, struct buf *err)
{
	struct buf d = BUF_INIT(0);
	int r = -1;

	if (accounts_normalise_domain(domain, &d, err) < 0 || !alabels_valid(d.data, err))
		goto out;
	/* A host name's '_' (lookups allow it): SMTP refuses it in a path
	 * (RFC 5321 4.1.2), so no RCPT could ever reach the domain. */
	if (strchr(d.data, '_') != NULL) {
		buf_printf(err, "bad domain '%s': character '_' not allowed in a mail domain",
			   domain);
		goto out;
	}
	if (accounts_domain_exists(a, d.data) == 1) {
		buf_printf(err, "domain %s already exists", d.data);
		goto out;
	}
	int64_t now = util_now_ms() / 1000;
	const char *p[] = {d.data};
	if (exec_bind(a, "INSERT INTO domains(name, created) VALUES(?, ?)", 1, p, &now, err) ==
	    SQLITE_DONE)
		r = 0;
out:
	buf_free(&d);
	return r;
}

/*
 * Aliases outside a domain whose targets are in it (at is "@domain"): 0 if
 * none, else 1 (or -1 on a database error) with the first few named in err.
 */
static int
aliases_into(struct accounts *a, const char *at, struct buf *err)
{
	static const char sql[] =
		"SELECT source, target FROM aliases WHERE substr(target, -length(?1)) = ?1 "
		"AND substr(source, -length(?1)) <> ?1 ORDER BY source, target LIMIT 4";
	sqlite3_stmt *st = acc_stmt(a, sql);
	int n = 0, rc;

	if (st == NULL) {
		db_err(err, a->db, "prepare");
		return -1;
	}
	sqlite3_bind_text(st, 1, at, -1, SQLITE_STATIC);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (n == 0)
			buf_printf(err, "aliases still point into domain %s:", at + 1);
		if (n++ == 3) {
			buf_printf(err, " ...");
			break;
		}
		buf_printf(err, "%s %s -> %s", n > 1 ? "," : "", sqlite3_column_text(st, 0),
			   sqlite3_column_text(st, 1));
	}
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		db_err(err, a->db, "database");
	sqlite3_reset(st);
	if (n > 0)
		buf_printf(err, "; delete them first");
	return rc != SQLITE_ROW && rc != SQLITE_DONE ? -1 : n > 0;
}

int
accounts_domain_del(struct accounts *a, const char *domain, struct buf *err)
{
	struct buf d = BUF_INIT(0);
	int r = -1;

	struct buf at = BUF_INIT(0);
	if (accounts_normalise_domain(domain, &d, err) < 0)
		goto out;
	/*
	 * The checks and both deletions in one transaction: the domain goes
	 * with its aliases or not at all (aliases left behind would come back
	 * with the domain, if it is made again), and nothing is added to it
	 * between the checks and the deletion.
	 */
	if (sqlite3_exec(a->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
		db_err(err, a->db, "database");
		goto out;
	}
	if (accounts_domain_exists(a, d.data) != 1) {
		buf_printf(err, "no such domain %s", d.data);
		goto out;
	}
	if (exists(a, "SELECT 1 FROM users WHERE domain = ?", d.data) != 0) {
		buf_printf(err, "domain %s still has users; delete them first", d.data);
		goto out;
	}
	/* Aliases of other domains naming it would turn into forwarding to
	 * it as a remote domain: the admin decides, first. */
	buf_printf(&at, "@%s", d.data);
	if (aliases_into(a, at.data, err) != 0)
		goto out;
	const char *p[] = {d.data};
	if (exec_bind(a, "DELETE FROM domains WHERE name = ?", 1, p, NULL, err) != SQLITE_DONE)
		goto out;
	/* Its aliases and catch-all: sources ending in "@domain" exactly (no LIKE:
	 * "_" in a domain name would match any character). */
	const char *q[] = {at.data};
	if (exec_bind(a, "DELETE FROM aliases WHERE substr(source, -length(?1)) = ?1", 1, q, NULL,
		      err) != SQLITE_DONE)
		goto out;
	if (sqlite3_exec(a->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
		db_err(err, a->db, "commit");
	else
		r = 0;
out:
	if (sqlite3_get_autocommit(a->db) == 0)
		(void)sqlite3_exec(a->db, "ROLLBACK", NULL, NULL, NULL);
	buf_free(&at);
	buf_free(&d);
	return r;
}

int
accounts_domain_exists(struct accounts *a, const char *domain)
{
	return exists(a, "SELECT 1 FROM domains WHERE name = ?", domain);
}

int
accounts_domain_first(struct accounts *a, char *out, size_t n)
{
	static const char sql[] = "SELECT name FROM domains ORDER BY created, rowid LIMIT 1";
	sqlite3_stmt *st = acc_stmt(a, sql);

	if (st == NULL)
		return -1;
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		xsnprintf(out, n, "%s", (const char *)sqlite3_column_text(st, 0));
	sqlite3_reset(st);
	return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
}

int
accounts_domain_list(struct accounts *a, void (*fn)(const char *d, void *arg), void *arg)
{
	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v2(a->db, "SELECT name FROM domains ORDER BY name", -1, &st, NULL) !=
	    SQLITE_OK)
		return -1;
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		fn((const char *)sqlite3_column_text(st, 0), arg);
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : -1;
}

static const char *
domain_of(const char *address)
{
	const char *at = strrchr(address, '@');
	return at ? at + 1 : "";
}

/* A path is at most 256 octets with its brackets (RFC 5321 4.5.3.1.3). */
int
accounts_address_fits(const char *norm, struct buf *err)
{
	const char *dom = domain_of(norm);
	size_t n = strlen(norm);
	char *ulabel = NULL;

	if (n > ADDRESS_MAX && idn2_to_unicode_8z8z(dom, &ulabel, 0) == IDN2_OK &&
	    (size_t)(dom - norm) + strlen(ulabel) < n)
		n = (size_t)(dom - norm) + strlen(ulabel);
	idn2_free(ulabel);
	if (n <= ADDRESS_MAX)
		return 1;
	buf_printf(err, "bad address '%s': longer than %d octets, more than an SMTP path holds",
		   norm, ADDRESS_MAX);
	return 0;
}

static void nfc_spelled(struct buf *out, const char *s);

/*
 * 1 if the local part of norm (accounts_normalise()'s form) has no C1
 * control (U+0080..U+009F) and no bidi control (Unicode's Bidi_Control:
 * U+061C, U+200E, U+200F, U+202A..U+202E, U+2066..U+2069), else 0 with err
 * set. SMTP paths may carry them (RFC 6531 takes any UTF-8), but an account
 * named with one is invisible or reorders what follows on a terminal and
 * in a reader: "admin<U+202E>moc.knab" shows as another name. Checked
 * when a user or alias is made, never at lookup, so accounts made before
 * stay reachable. The message writes the address with its code points
 * spelt out, as the raw bytes would garble the line it is on.
 */
static int
address_controls_ok(const char *norm, const char *what, struct buf *err)
{
	const uint8_t *p = (const uint8_t *)norm;
	const char *at = strrchr(norm, '@');
	size_t n = at ? (size_t)(at - norm) : strlen(norm);

	while (n > 0) {
		ucs4_t cp;
		int len = u8_mbtoucr(&cp, p, n);
		if (len <= 0)
			break; /* accounts_normalise() took only valid UTF-8 */
		if (util_cp_c1_or_bidi(cp)) {
			const char *kind =
			    cp <= 0x9f ? "a C1 control character" : "a bidirectional text control";
			buf_printf(err, "bad %s '", what);
			nfc_spelled(err, norm);
			buf_printf(err,
				   "': local part has U+%04X, %s, not allowed in an account name",
				   (unsigned)cp, kind);
			return 0;
		}
		p += len;
		n -= (size_t)len;
	}
	return 1;
}

/* accounts_user_check(), leaving address normalised in addr. */
static int
user_check(struct accounts *a, const char *address, const char *hash, struct buf *addr,
	   struct buf *err)
{
	if (accounts_normalise(address, 0, addr, err) < 0 ||
	    !accounts_address_fits(addr->data, err) ||
	    !address_controls_ok(addr->data, "address", err))
		return -1;
	if (hash != NULL && !password_hash_supported(hash)) {
		buf_printf(err, "unsupported password hash (want $y$, $6$, $5$ or $2b$)");
		return -1;
	}
	const char *dom = domain_of(addr->data);
	if (accounts_domain_exists(a, dom) != 1) {
		buf_printf(err, "domain %s is not a local domain; add it first with 'surat domain add %s'",
			   dom, dom);
		return -1;
	}
	int user = exists(a, "SELECT 1 FROM users WHERE address = ?", addr->data);
	/* The mirror of alias add's rule: a user would silently shadow the alias. */
	int alias = user == 0 ? exists(a, "SELECT 1 FROM aliases WHERE source = ?", addr->data) : 0;
	if (user < 0 || alias < 0)
		buf_printf(err, "accounts database error looking up %s", addr->data);
	else if (user == 1)
		buf_printf(err, "user %s already exists", addr->data);
	else if (alias == 1)
		buf_printf(err, "%s is an alias; delete it first with 'surat alias del %s'",
			   addr->data, addr->data);
	return user != 0 || alias != 0 ? -1 : 0;
}

int
accounts_user_check(struct accounts *a, const char *address, struct buf *err)
{
	struct buf addr = BUF_INIT(0);
	int r = user_check(a, address, NULL, &addr, err);

	buf_free(&addr);
	return r;
}

int
accounts_user_add(struct accounts *a, const char *address, const char *hash, int64_t quota,
		  struct buf *err)
{
	struct buf addr = BUF_INIT(0);
	int r = -1;

	if (user_check(a, address, hash, &addr, err) < 0)
		goto out;
	const char *dom = domain_of(addr.data);
	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v2(a->db,
			       "INSERT INTO users(address, domain, hash, quota, created)"
			       " VALUES(?, ?, ?, ?, ?)",
			       -1, &st, NULL) != SQLITE_OK) {
		db_err(err, a->db, "prepare");
		goto out;
	}
	sqlite3_bind_text(st, 1, addr.data, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, dom, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, hash, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, quota);
	sqlite3_bind_int64(st, 5, util_now_ms() / 1000);
	if (sqlite3_step(st) == SQLITE_DONE)
		r = 0;
	else
		db_err(err, a->db, "insert user");
	sqlite3_finalize(st);
out:
	buf_free(&addr);
	return r;
}

static int
user_update(struct accounts *a, const char *address, const char *sql, const char *text,
	    const int64_t *num, struct buf *err)
{
	struct buf addr = BUF_INIT(0);
	int r = -1;

	if (accounts_normalise(address, 0, &addr, err) < 0)
		goto out;
	if (exists(a, "SELECT 1 FROM users WHERE address = ?", addr.data) != 1) {
		buf_printf(err, "no such user %s", addr.data);
		goto out;
	}
	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v2(a->db, sql, -1, &st, NULL) != SQLITE_OK) {
		db_err(err, a->db, "prepare");
		goto out;
	}
	int i = 1;
	if (text)
		sqlite3_bind_text(st, i++, text, -1, SQLITE_STATIC);
	if (num)
		sqlite3_bind_int64(st, i++, *num);
	sqlite3_bind_text(st, i, addr.data, -1, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_DONE)
		r = 0;
	else
		db_err(err, a->db, "update user");
	sqlite3_finalize(st);
out:
	buf_free(&addr);
	return r;
}

int
accounts_user_del(struct accounts *a, const char *address, struct buf *err)
{
	return user_update(a, address, "DELETE FROM users WHERE address = ?", NULL, NULL, err);
}

int
accounts_user_passwd(struct accounts *a, const char *address, const char *hash, struct buf *err)
{
	if (!password_hash_supported(hash)) {
		buf_printf(err, "unsupported password hash (want $y$, $6$, $5$ or $2b$)");
		return -1;
	}
	return user_update(a, address, "UPDATE users SET hash = ? WHERE address = ?", hash, NULL,
			   err);
}

int
accounts_user_quota(struct accounts *a, const char *address, int64_t quota, struct buf *err)
{
	return user_update(a, address, "UPDATE users SET quota = ? WHERE address = ?", NULL, &quota,
			   err);
}

int
accounts_user_get(struct accounts *a, const char *address, struct account_user *u)
{
	static const char sql[] = "SELECT address, hash, quota FROM users WHERE address = ?";
	sqlite3_stmt *st = acc_stmt(a, sql);
	int rc = SQLITE_ERROR;

	if (st != NULL) {
		sqlite3_bind_text(st, 1, address, -1, SQLITE_STATIC);
		rc = sqlite3_step(st);
		if (rc == SQLITE_ROW) {
			u->address = xstrdup((const char *)sqlite3_column_text(st, 0));
			u->hash = xstrdup((const char *)sqlite3_column_text(st, 1));
			u->quota = sqlite3_column_int64(st, 2);
		}
		sqlite3_reset(st);
	}
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		/* The callers only see -1: say here what went wrong. */
		log_error("accounts database error: user lookup: %s", sqlite3_errmsg(a->db));
		return -1;
	}
	return rc == SQLITE_ROW ? 1 : 0;
}

int
accounts_user_same(struct accounts *a, const char *address, const char *hash)
{
	struct account_user u = {0};
	int r = accounts_user_get(a, address, &u);

	if (r == 1)
		r = strcmp(u.hash, hash) == 0;
	accounts_user_free(&u);
	return r;
}

void
accounts_user_free(struct account_user *u)
{
	free(u->address);
	if (u->hash) {
		util_wipe(u->hash, strlen(u->hash));
		free(u->hash);
	}
	u->address = u->hash = NULL;
}

int
accounts_user_list(struct accounts *a, const char *domain,
		   void (*fn)(const struct account_user *u, void *arg), void *arg)
{
	sqlite3_stmt *st = NULL;
	const char *sql = domain ? "SELECT address, hash, quota FROM users WHERE domain = ? ORDER BY address"
				 : "SELECT address, hash, quota FROM users ORDER BY domain, address";
	if (sqlite3_prepare_v2(a->db, sql, -1, &st, NULL) != SQLITE_OK)
		return -1;
	if (domain)
		sqlite3_bind_text(st, 1, domain, -1, SQLITE_STATIC);
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct account_user u = {(char *)sqlite3_column_text(st, 0),
					 (char *)sqlite3_column_text(st, 1),
					 sqlite3_column_int64(st, 2)};
		fn(&u, arg);
	}
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : -1;
}

/*
 * The form an alias target is stored in: norm (accounts_normalise() of
 * target) for a local domain; for another, target's local part in the case
 * it was written in, with norm's domain. RFC 5321 2.4: a local part is
 * case-sensitive to all but its own domain, and a relay MUST preserve its
 * case. It is in NFC all the same (as we send it: RFC 5198 asks for NFC in
 * interchange), so that both spellings are one mapping, found by del.
 */
static void
alias_target_form(struct accounts *a, const char *target, const char *norm, struct buf *out)
{
	const char *dom = domain_of(norm);

	if (accounts_domain_exists(a, dom) == 1) {
		buf_puts(out, norm);
		return;
	}
	/* target is valid UTF-8 (norm was made of it): NFC cannot fail but for
	 * memory, and then the form is norm's. */
	struct buf e = BUF_INIT(0);
	size_t start = out->len;
	if (local_nfc(target, (size_t)(strrchr(target, '@') - target), out, &e) < 0) {
		buf_truncate(out, start);
		buf_puts(out, norm);
		buf_free(&e);
		return;
	}
	buf_free(&e);
	buf_printf(out, "@%s", dom);
}

/* Whether source (normalised) maps to target (normalised, in any case): 1, 0, or -1 error. */
static int
alias_exists(struct accounts *a, const char *source, const char *target)
{
	sqlite3_stmt *st = NULL;

	/* A remote target keeps the case it was given in (alias_target_form()). */
	if (sqlite3_prepare_v2(
		a->db, "SELECT 1 FROM aliases WHERE source = ? AND target = ? COLLATE NOCASE", -1,
		&st, NULL) != SQLITE_OK)
		return -1;
	sqlite3_bind_text(st, 1, source, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, target, -1, SQLITE_STATIC);
	int rc = sqlite3_step(st);
	sqlite3_finalize(st);
	return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
}

/* accounts_alias_check(), leaving source and target normalised in s and t. */
static int
alias_check(struct accounts *a, const char *source, const char *target, struct buf *s,
	    struct buf *t, struct buf *err)
{
	if (accounts_normalise(source, 1, s, err) < 0 ||
	    accounts_normalise(target, 0, t, err) < 0 || !accounts_address_fits(s->data, err) ||
	    !accounts_address_fits(t->data, err) || !address_controls_ok(s->data, "alias", err) ||
	    !address_controls_ok(t->data, "alias target", err))
		return -1;
	const char *dom = domain_of(s->data);
	if (accounts_domain_exists(a, dom) != 1) {
		buf_printf(err, "alias %s: %s is not a local domain", s->data, dom);
		return -1;
	}
	if (strcmp(s->data, t->data) == 0) {
		buf_printf(err, "alias %s points at itself", s->data);
		return -1;
	}
	if (exists(a, "SELECT 1 FROM users WHERE address = ?", s->data) == 1) {
		buf_printf(err, "%s is a user; an alias cannot shadow it", s->data);
		return -1;
	}
	/* Else the admin is told it was added, and may think it new. */
	int have = alias_exists(a, s->data, t->data);
	if (have != 0) {
		buf_printf(err,
			   have < 0 ? "database error looking up alias %s -> %s"
				    : "alias %s -> %s already exists",
			   s->data, t->data);
		return -1;
	}
	return 0;
}

int
accounts_alias_check(struct accounts *a, const char *source, const char *target, struct buf *err)
{
	struct buf s = BUF_INIT(0), t = BUF_INIT(0);
	int r = alias_check(a, source, target, &s, &t, err);

	buf_free(&s);
	buf_free(&t);
	return r;
}

int
accounts_alias_add(struct accounts *a, const char *source, const char *target, struct buf *err)
{
	struct buf s = BUF_INIT(0), t = BUF_INIT(0), keep = BUF_INIT(0);
	int r = -1;

	if (alias_check(a, source, target, &s, &t, err) < 0)
		goto out;
	alias_target_form(a, target, t.data, &keep);
	const char *p[] = {s.data, keep.data};
	int rc = exec_bind(a, "INSERT INTO aliases(source, target) VALUES(?, ?)", 2, p, NULL, err);
	if (rc == SQLITE_DONE)
		r = 0;
out:
	buf_free(&s);
	buf_free(&t);
	buf_free(&keep);
	return r;
}

int
accounts_alias_del(struct accounts *a, const char *source, const char *target, struct buf *err)
{
	struct buf s = BUF_INIT(0), t = BUF_INIT(0);
	int r = -1;

	if (accounts_normalise(source, 1, &s, err) < 0 ||
	    (target && accounts_normalise(target, 0, &t, err) < 0))
		goto out;
	const char *p[] = {s.data, t.data};
	/* A remote target keeps the case it was given in: any case finds it. */
	const char *sql = target
			      ? "DELETE FROM aliases WHERE source = ? AND target = ? COLLATE NOCASE"
			      : "DELETE FROM aliases WHERE source = ?";
	int rc = exec_bind(a, sql, target ? 2 : 1, p, NULL, err);
	if (rc != SQLITE_DONE)
		goto out;
	if (sqlite3_changes(a->db) == 0) {
		buf_printf(err, "no such alias %s%s%s", s.data, target ? " -> " : "",
			   target ? t.data : "");
		goto out;
	}
	r = 0;
out:
	buf_free(&s);
	buf_free(&t);
	return r;
}

int
accounts_aliases_naming(struct accounts *a, const char *address, struct buf *out)
{
	sqlite3_stmt *st = NULL;
	int n = 0, rc;

	/* NOCASE: a target kept as written while its domain was remote. */
	if (sqlite3_prepare_v2(a->db,
			       "SELECT source FROM aliases WHERE target = ? COLLATE NOCASE"
			       " ORDER BY source LIMIT 5",
			       -1, &st, NULL) != SQLITE_OK)
		return -1;
	sqlite3_bind_text(st, 1, address, -1, SQLITE_STATIC);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (n++ == 4) {
			buf_puts(out, ", ...");
			break;
		}
		buf_printf(out, "%s%s", n > 1 ? ", " : "", sqlite3_column_text(st, 0));
	}
	sqlite3_finalize(st);
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? n : -1;
}

int
accounts_alias_list(struct accounts *a, void (*fn)(const char *src, const char *dst, void *arg),
		    void *arg)
{
	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v2(a->db, "SELECT source, target FROM aliases ORDER BY source, target",
			       -1, &st, NULL) != SQLITE_OK)
		return -1;
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		fn((const char *)sqlite3_column_text(st, 0),
		   (const char *)sqlite3_column_text(st, 1), arg);
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : -1;
}

/* --- the upgrade to schema 2: every address in NFC --- */

/*
 * s for a message, its code points past ASCII written <U+XXXX>: two
 * spellings of one address look alike on a terminal, and must read apart.
 */
static void
nfc_spelled(struct buf *out, const char *s)
{
	const uint8_t *p = (const uint8_t *)s;
	size_t n = strlen(s);

	while (n > 0) {
		ucs4_t cp;
		int len = u8_mbtoucr(&cp, p, n);
		if (len == 1 && cp < 0x80)
			buf_putc(out, (char)cp);
		else if (len > 0)
			buf_printf(out, "<U+%04X>", (unsigned)cp);
		else
			buf_printf(out, "<\\x%02X>", *p);
		len = len > 0 ? len : 1;
		p += len;
		n -= (size_t)len;
	}
}

/* A stored address (a user's, or an alias source) and its NFC form. */
struct nfc_name {
	const char *kind;	/* "user" or "alias" */
	char *old;
	char *new;
};

/* An alias row and what it becomes (nsource NULL: nothing, it is dropped). */
struct nfc_alias {
	char *source, *target;
	char *nsource, *ntarget;
};

struct nfc_upgrade {
	struct nfc_name *names;
	size_t nnames;
	struct nfc_alias *aliases;
	size_t naliases;
	size_t *renamed;	/* names[] whose store was moved: undone on failure */
	size_t nrenamed;
	int collisions;
};

static void
nfc_upgrade_free(struct nfc_upgrade *u)
{
	for (size_t i = 0; i < u->nnames; i++) {
		free(u->names[i].old);
		free(u->names[i].new);
	}
	for (size_t i = 0; i < u->naliases; i++) {
		free(u->aliases[i].source);
		free(u->aliases[i].target);
		free(u->aliases[i].nsource);
		free(u->aliases[i].ntarget);
	}
	free(u->names);
	free(u->aliases);
	free(u->renamed);
}

/*
 * The names (user addresses: sql's column 0) that NFC spells otherwise,
 * into u. 0, or -1 with err set (one that has no valid NFC form: it holds
 * ';' or grows past 64 octets, which the admin must settle).
 */
static int
nfc_collect(struct accounts *a, struct nfc_upgrade *u, const char *kind, const char *sql,
	    int catchall, struct buf *err)
{
	sqlite3_stmt *st = NULL;
	int rc;

	if (sqlite3_prepare_v2(a->db, sql, -1, &st, NULL) != SQLITE_OK) {
		db_err(err, a->db, "prepare");
		return -1;
	}
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *old = (const char *)sqlite3_column_text(st, 0);
		if (old == NULL || !util_has_8bit(old, strlen(old)))
			continue;
		struct buf n = BUF_INIT(0), e = BUF_INIT(0);
		/* NFC may lengthen it (U+0958 is two code points) past a path. */
		if (accounts_normalise(old, catchall, &n, &e) < 0 ||
		    !accounts_address_fits(n.data, &e)) {
			buf_printf(err, "%s '%s' (", kind, old);
			nfc_spelled(err, old);
			buf_printf(err,
				   ") has no valid form in Unicode NFC, as surat now keeps "
				   "addresses: %s; delete or rename it with the surat that made it",
				   buf_str(&e));
			buf_free(&n);
			buf_free(&e);
			sqlite3_finalize(st);
			return -1;
		}
		buf_free(&e);
		if (strcmp(n.data, old) == 0) {
			buf_free(&n);
			continue;
		}
		u->names = xrealloc(u->names, (u->nnames + 1) * sizeof(*u->names));
		u->names[u->nnames++] = (struct nfc_name){kind, xstrdup(old), buf_steal(&n)};
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE) {
		db_err(err, a->db, "database");
		return -1;
	}
	return 0;
}

/* err: "users 'x' (x) and ..." for two rows that NFC makes one. */
static void
nfc_collision(struct nfc_upgrade *u, const char *kind1, const char *name1, const char *kind2,
	      const char *name2, struct buf *err)
{
	if (u->collisions++ > 0)
		buf_puts(err, "; ");
	buf_printf(err, "%s '%s' (", kind1, name1);
	nfc_spelled(err, name1);
	buf_printf(err, ") and %s '%s' (", kind2, name2);
	nfc_spelled(err, name2);
	buf_puts(err, ")");
}

/* Whether sql (a string constant) finds key: 1, 0, -1 with err set. */
static int
nfc_exists(struct accounts *a, const char *sql, const char *key, struct buf *err)
{
	int r = exists(a, sql, key);

	if (r < 0)
		db_err(err, a->db, "database");
	return r;
}

/*
 * Whether the alias source (as stored) only names addr in another spelling
 * (added by hand so that the other spelling reached the user): NFC makes
 * each of its rows point at itself, and they are dropped, nothing merged.
 * 1, 0, or -1 with err set.
 */
static int
nfc_alias_redundant(struct accounts *a, const char *source, const char *addr, struct buf *err)
{
	sqlite3_stmt *st = NULL;
	int rc, n = 0, same = 1;

	if (sqlite3_prepare_v2(a->db, "SELECT target FROM aliases WHERE source = ?", -1, &st,
			       NULL) != SQLITE_OK) {
		db_err(err, a->db, "prepare");
		return -1;
	}
	sqlite3_bind_text(st, 1, source, -1, SQLITE_STATIC);
	while (same && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *t = (const char *)sqlite3_column_text(st, 0);
		struct buf nt = BUF_INIT(0), e = BUF_INIT(0);
		same = t != NULL && accounts_normalise(t, 0, &nt, &e) == 0 &&
		       strcmp(nt.data, addr) == 0;
		n++;
		buf_free(&nt);
		buf_free(&e);
	}
	sqlite3_finalize(st);
	if (same && rc != SQLITE_DONE) {
		db_err(err, a->db, "database");
		return -1;
	}
	return same && n > 0;
}

/* Any two rows that NFC makes one address: 0 if none, else -1 with all in err. */
static int
nfc_check_collisions(struct accounts *a, struct nfc_upgrade *u, struct buf *err)
{
	static const char user_sql[] = "SELECT 1 FROM users WHERE address = ?";
	static const char alias_sql[] = "SELECT 1 FROM aliases WHERE source = ?";

	for (size_t i = 0; i < u->nnames; i++) {
		const struct nfc_name *n = &u->names[i];
		/* A row already spelt so (the changed rows' spellings are not). */
		int ru = nfc_exists(a, user_sql, n->new, err);
		int ra = ru < 0 ? -1 : nfc_exists(a, alias_sql, n->new, err);
		if (ra < 0)
			return -1;
		int user = strcmp(n->kind, "user") == 0, r = 0;
		/* An alias of the user's other spelling to the user: dropped. */
		if (ru == 1 && !user && (r = nfc_alias_redundant(a, n->old, n->new, err)) >= 0)
			ru = !r;
		if (ra == 1 && user && r >= 0 &&
		    (r = nfc_alias_redundant(a, n->new, n->new, err)) >= 0)
			ra = !r;
		if (r < 0)
			return -1;
		if (ru == 1)
			nfc_collision(u, n->kind, n->old, "user", n->new, err);
		if (ra == 1)
			nfc_collision(u, n->kind, n->old, "alias", n->new, err);
		for (size_t j = 0; j < i; j++) {
			const struct nfc_name *o = &u->names[j];
			if (strcmp(o->new, n->new) != 0)
				continue;
			int uo = strcmp(o->kind, "user") == 0;
			if (uo != user && (r = nfc_alias_redundant(a, user ? o->old : n->old,
								   n->new, err)) != 0) {
				if (r < 0)
					return -1;
				continue;
			}
			nfc_collision(u, o->kind, o->old, n->kind, n->old, err);
		}
	}
	if (u->collisions == 0)
		return 0;
	buf_printf(err,
		   ": %s one address in Unicode NFC, as surat now compares local parts, "
		   "and it never merges them. Keep one: delete or rename the other with the "
		   "surat that made it (its mail is under data_dir/mail/DOMAIN/), then start "
		   "again. Nothing was changed",
		   u->collisions > 1 ? "each pair is" : "both are");
	return -1;
}

/* The alias rows NFC changes, into u. 0, or -1 with err set. */
static int
nfc_collect_aliases(struct accounts *a, struct nfc_upgrade *u, struct buf *err)
{
	sqlite3_stmt *st = NULL;
	int rc, r = 0;

	if (sqlite3_prepare_v2(a->db, "SELECT source, target FROM aliases", -1, &st, NULL) !=
	    SQLITE_OK) {
		db_err(err, a->db, "prepare");
		return -1;
	}
	while (r == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *src = (const char *)sqlite3_column_text(st, 0);
		const char *dst = (const char *)sqlite3_column_text(st, 1);
		if (src == NULL || dst == NULL ||
		    (!util_has_8bit(src, strlen(src)) && !util_has_8bit(dst, strlen(dst))))
			continue;
		struct buf ns = BUF_INIT(0), nt = BUF_INIT(0), form = BUF_INIT(0), e = BUF_INIT(0);
		if (accounts_normalise(src, 1, &ns, &e) < 0 ||
		    accounts_normalise(dst, 0, &nt, &e) < 0 ||
		    !accounts_address_fits(ns.data, &e) || !accounts_address_fits(nt.data, &e)) {
			buf_printf(err, "alias '%s' -> '%s' (", src, dst);
			nfc_spelled(err, dst);
			buf_printf(err,
				   ") has no valid form in Unicode NFC: %s; delete it with the "
				   "surat that made it",
				   buf_str(&e));
			r = -1;
		} else {
			alias_target_form(a, dst, nt.data, &form);
			if (strcmp(ns.data, nt.data) == 0) {
				/* Made so that one spelling reached the other: NFC
				 * makes it one address, and the row nothing. A
				 * source that is a user besides has other targets,
				 * and nfc_check_collisions() refused it. */
				u->aliases =
				    xrealloc(u->aliases, (u->naliases + 1) * sizeof(*u->aliases));
				u->aliases[u->naliases++] =
				    (struct nfc_alias){xstrdup(src), xstrdup(dst), NULL, NULL};
			} else if (strcmp(ns.data, src) != 0 || strcmp(form.data, dst) != 0) {
				u->aliases =
				    xrealloc(u->aliases, (u->naliases + 1) * sizeof(*u->aliases));
				u->aliases[u->naliases++] = (struct nfc_alias){
				    xstrdup(src), xstrdup(dst), buf_steal(&ns), buf_steal(&form)};
			}
		}
		buf_free(&ns);
		buf_free(&nt);
		buf_free(&form);
		buf_free(&e);
	}
	sqlite3_finalize(st);
	if (r == 0 && rc != SQLITE_DONE) {
		db_err(err, a->db, "database");
		r = -1;
	}
	return r;
}

/* Rewrite the rows u holds. 0, or -1 with err set. */
static int
nfc_rewrite(struct accounts *a, struct nfc_upgrade *u, struct buf *err)
{
	for (size_t i = 0; i < u->nnames; i++) {
		if (strcmp(u->names[i].kind, "user") != 0)
			continue;	/* alias sources: with their rows */
		const char *p[] = {u->names[i].new, u->names[i].old};
		if (exec_bind(a, "UPDATE users SET address = ? WHERE address = ?", 2, p, NULL,
			      err) != SQLITE_DONE)
			return -1;
	}
	for (size_t i = 0; i < u->naliases; i++) {
		const struct nfc_alias *al = &u->aliases[i];
		const char *p[] = {al->source, al->target};
		if (exec_bind(a, "DELETE FROM aliases WHERE source = ? AND target = ?", 2, p, NULL,
			      err) != SQLITE_DONE)
			return -1;
	}
	for (size_t i = 0; i < u->naliases; i++) {
		const struct nfc_alias *al = &u->aliases[i];
		const char *p[] = {al->nsource, al->ntarget};
		if (al->nsource == NULL) {
			struct buf sp = BUF_INIT(0);
			nfc_spelled(&sp, al->source);
			buf_puts(&sp, " -> ");
			nfc_spelled(&sp, al->target);
			log_warn("accounts.db: alias %s is one address in Unicode NFC: dropped",
				 buf_str(&sp));
			buf_free(&sp);
			continue;
		}
		if (exec_bind(a, "INSERT OR IGNORE INTO aliases(source, target) VALUES(?, ?)", 2, p,
			      NULL, err) != SQLITE_DONE)
			return -1;
		/* Two spellings of one mapping: the same mail went the same way. */
		if (sqlite3_changes(a->db) == 0)
			log_warn("accounts.db: alias %s -> %s was there twice, in two spellings: "
				 "kept once",
				 al->nsource, al->ntarget);
	}
	return 0;
}

/*
 * The users' stores follow their addresses (data_dir/mail/DOMAIN/LOCAL is
 * named from the address). 0, or -1 with err set, the moves made undone.
 */
static int
nfc_move_stores(struct nfc_upgrade *u, const char *data_dir, struct buf *err)
{
	u->renamed = xcalloc(u->nnames ? u->nnames : 1, sizeof(*u->renamed));
	for (size_t i = 0; i < u->nnames; i++) {
		const struct nfc_name *n = &u->names[i];
		if (strcmp(n->kind, "user") != 0)
			continue;
		int r = store_account_rename(data_dir, n->old, n->new, err);
		if (r < 0)
			return -1;
		if (r == 1)
			u->renamed[u->nrenamed++] = i;
	}
	return 0;
}

static void
nfc_unmove_stores(struct nfc_upgrade *u, const char *data_dir)
{
	struct buf e = BUF_INIT(0);

	while (u->nrenamed > 0) {
		const struct nfc_name *n = &u->names[u->renamed[--u->nrenamed]];
		buf_reset(&e);
		if (store_account_rename(data_dir, n->new, n->old, &e) < 0)
			log_error("accounts.db upgrade: moving the store of %s back: %s", n->old,
				  buf_str(&e));
	}
	buf_free(&e);
}

/*
 * Schema 2: every stored address in NFC, as accounts_normalise() makes it
 * now; before, o + U+0308 and U+00F6 were two accounts, and the usual
 * spelling never reached one of them. Once, in one write transaction (a
 * CLI and the daemon may open the database together): the users, the
 * alias rows, and the users' stores, moved before the commit so that a
 * crash between leaves the old rows, which the next open upgrades again
 * (a store already moved is left where it is). Two rows that NFC makes one
 * are never merged: the upgrade refuses, naming both, and changes nothing.
 */
static int
accounts_upgrade_nfc(struct accounts *a, const char *data_dir, const char *path, struct buf *err)
{
	struct nfc_upgrade u = {0};
	size_t errstart = err->len;
	int r = -1, v;
	char pragma[64];

	if (sqlite3_exec(a->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
		db_err(err, a->db, "database");
		goto out;
	}
	/* Another process may have upgraded it while this one waited. */
	if ((v = db_version(a->db)) < 0) {
		db_err(err, a->db, "user_version");
		goto out;
	}
	if (v >= ACCOUNTS_SCHEMA_VERSION) {
		r = 0;
		goto out;
	}
	if (nfc_collect(a, &u, "user", "SELECT address FROM users", 0, err) < 0 ||
	    nfc_collect(a, &u, "alias", "SELECT DISTINCT source FROM aliases", 1, err) < 0 ||
	    nfc_check_collisions(a, &u, err) < 0 || nfc_collect_aliases(a, &u, err) < 0 ||
	    nfc_rewrite(a, &u, err) < 0 || nfc_move_stores(&u, data_dir, err) < 0)
		goto out;
	xsnprintf(pragma, sizeof(pragma), "PRAGMA user_version=%d", ACCOUNTS_SCHEMA_VERSION);
	if (sqlite3_exec(a->db, pragma, NULL, NULL, NULL) != SQLITE_OK ||
	    sqlite3_exec(a->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
		db_err(err, a->db, "commit");
		goto out;
	}
	if (u.nnames > 0 || u.naliases > 0)
		log_info("accounts.db: upgraded to schema %d: %zu addresses and %zu alias rows "
			 "now in Unicode NFC, %zu mail stores moved with their users",
			 ACCOUNTS_SCHEMA_VERSION, u.nnames, u.naliases, u.nrenamed);
	r = 0;
out:
	if (r < 0) {
		nfc_unmove_stores(&u, data_dir);
		/* Say which file: the CLI and the daemon print err alone. */
		struct buf msg = BUF_INIT(0);
		buf_printf(&msg, "%s: cannot upgrade to schema %d: %s", path,
			   ACCOUNTS_SCHEMA_VERSION, err->data ? err->data + errstart : "");
		buf_truncate(err, errstart);
		buf_append(err, msg.data, msg.len);
		buf_free(&msg);
	}
	if (sqlite3_get_autocommit(a->db) == 0)
		(void)sqlite3_exec(a->db, "ROLLBACK", NULL, NULL, NULL);
	nfc_upgrade_free(&u);
	return r;
}

int
accounts_kept_save(struct accounts *a, size_t n, const char *const *kinds, const char *const *keys,
		   const int64_t *values, const int64_t *ats, struct buf *err)
{
	sqlite3_stmt *st = NULL;

	if (sqlite3_exec(a->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
		db_err(err, a->db, "kept state");
		return -1;
	}
	int ok = exec_bind(a, "DELETE FROM kept", 0, NULL, NULL, err) == SQLITE_DONE;
	if (ok && sqlite3_prepare_v2(a->db,
				     "INSERT OR REPLACE INTO kept(kind, key, value, at)"
				     " VALUES(?, ?, ?, ?)",
				     -1, &st, NULL) != SQLITE_OK) {
		db_err(err, a->db, "kept state");
		ok = 0;
	}
	for (size_t i = 0; ok && i < n; i++) {
		sqlite3_bind_text(st, 1, kinds[i], -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, keys[i], -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 3, values[i]);
		sqlite3_bind_int64(st, 4, ats[i]);
		if (sqlite3_step(st) != SQLITE_DONE) {
			db_err(err, a->db, "kept state");
			ok = 0;
		}
		sqlite3_reset(st);
	}
	sqlite3_finalize(st);
	if (ok && sqlite3_exec(a->db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK)
		return 0;
	if (ok)
		db_err(err, a->db, "kept state");
	(void)sqlite3_exec(a->db, "ROLLBACK", NULL, NULL, NULL);
	return -1;
}

int
accounts_kept_load(struct accounts *a, const char *kind,
		   void (*fn)(const char *key, int64_t value, int64_t at, void *arg), void *arg)
{
	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v2(a->db,
			       "SELECT key, value, at FROM kept WHERE kind = ? ORDER BY rowid", -1,
			       &st, NULL) != SQLITE_OK)
		return -1;
	sqlite3_bind_text(st, 1, kind, -1, SQLITE_STATIC);
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		if (sqlite3_column_type(st, 0) == SQLITE_TEXT)
			fn((const char *)sqlite3_column_text(st, 0), sqlite3_column_int64(st, 1),
			   sqlite3_column_int64(st, 2), arg);
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : -1;
}

struct resolve_ctx {
	struct accounts *a;
	char **seen;
	int *seen_depth;	/* an expanded alias: the least depth it was expanded at */
	size_t nseen;
	void (*fn)(const char *addr, int local, void *arg);
	void *arg;
	int results;
	int error;
	int catchall;
	char **cut;		/* reached too deep to follow (ALIAS_MAX_DEPTH) */
	size_t ncut;
	int truncated;		/* an address lost to RESOLVE_MAX or ALIAS_MAX_DEPTH */
};

/*
 * 1 if addr is new to the set (added), or an alias seen only deeper than
 * depth (its members may have been cut off there by ALIAS_MAX_DEPTH: expand
 * it again from here); 0 if seen, or the set is full.
 */
static int
seen_add_at(struct resolve_ctx *rc, const char *addr, int depth)
{
	for (size_t i = 0; i < rc->nseen; i++)
		if (strcmp(rc->seen[i], addr) == 0) {
			if (rc->seen_depth[i] <= depth)
				return 0;
			rc->seen_depth[i] = depth;
			return 1;
		}
	if (rc->nseen >= RESOLVE_MAX) {
		rc->truncated = 1;
		return 0;
	}
	rc->seen = xrealloc(rc->seen, (rc->nseen + 1) * sizeof(char *));
	rc->seen_depth = xrealloc(rc->seen_depth, (rc->nseen + 1) * sizeof(int));
	rc->seen_depth[rc->nseen] = depth;
	rc->seen[rc->nseen++] = xstrdup(addr);
	return 1;
}

/* A result: 1 if new. */
static int
seen_add(struct resolve_ctx *rc, const char *addr)
{
	return seen_add_at(rc, addr, -1);
}

/* Targets of an alias source; returns a malloc'd NULL-terminated array or NULL. */
static char **
alias_targets(struct accounts *a, const char *source, int *err)
{
	static const char sql[] = "SELECT target FROM aliases WHERE source = ?";
	sqlite3_stmt *st = acc_stmt(a, sql);
	char **v = NULL;
	size_t n = 0;

	if (st == NULL) {
		*err = 1;
		return NULL;
	}
	sqlite3_bind_text(st, 1, source, -1, SQLITE_STATIC);
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		v = xrealloc(v, (n + 2) * sizeof(char *));
		v[n++] = xstrdup((const char *)sqlite3_column_text(st, 0));
		v[n] = NULL;
	}
	if (rc != SQLITE_DONE)
		*err = 1;
	sqlite3_reset(st);
	return v;
}

static void resolve_local(struct resolve_ctx *rc, const char *addr, int depth);
static void resolve_postmaster(struct resolve_ctx *rc, const char *addr, int depth);

static void
resolve_one(struct resolve_ctx *rc, const char *addr, int depth)
{
	if (rc->error)
		return;
	const char *dom = domain_of(addr);
	int local_dom = accounts_domain_exists(rc->a, dom);
	if (local_dom < 0) {
		rc->error = 1;
		return;
	}
	/* A remote target kept as written (alias_target_form()) whose domain
	 * was made local since: every local address is looked up lowercased. */
	char *key = xstrdup(addr);
	if (local_dom)
		util_lower(key);
	if (depth > ALIAS_MAX_DEPTH) {
		/* Not followed: lost, unless a shorter path reaches it (resolve()). */
		if (rc->ncut >= RESOLVE_MAX) {
			rc->truncated = 1;
			free(key);
			return;
		}
		rc->cut = xrealloc(rc->cut, (rc->ncut + 1) * sizeof(char *));
		rc->cut[rc->ncut++] = key;
		return;
	}
	if (!local_dom) {
		if (depth > 0 && seen_add(rc, key)) {
			rc->fn(key, 0, rc->arg);
			rc->results++;
		}
	} else {
		resolve_local(rc, key, depth);
	}
	free(key);
}

/* addr was reached within the limits: a result, or an address followed. */
static int
seen_has(const struct resolve_ctx *rc, const char *addr)
{
	for (size_t i = 0; i < rc->nseen; i++)
		if (strcmp(rc->seen[i], addr) == 0)
			return 1;
	return 0;
}

/* resolve_one() for addr, lowercased, of a local domain. */
static void
resolve_local(struct resolve_ctx *rc, const char *addr, int depth)
{
	const char *dom = domain_of(addr);
	int u = exists(rc->a, "SELECT 1 FROM users WHERE address = ?", addr);
	if (u < 0) {
		rc->error = 1;
		return;
	}
	if (u == 1) {
		if (seen_add(rc, addr)) {
			rc->fn(addr, 1, rc->arg);
			rc->results++;
		}
		return;
	}
	/*
	 * Expanded once, or again only when reached nearer (at most
	 * ALIAS_MAX_DEPTH times): aliases listing one another would otherwise
	 * be walked along every path, exponentially in the depth. (A local
	 * address that is no user is never a result, so it shares the seen set.)
	 */
	if (!seen_add_at(rc, addr, depth))
		return;
	int err = 0;
	char **targets = alias_targets(rc->a, addr, &err);
	if (err) {
		rc->error = 1;
		free(targets);
		return;
	}
	if (targets == NULL) {
		/* user+tag@domain: deliver to user@domain if that resolves. */
		const char *plus = strchr(addr, '+');
		const char *at = strrchr(addr, '@');
		if (plus && plus < at && plus > addr) {
			char *base = xasprintf("%.*s%s", (int)(plus - addr), addr, at);
			int before = rc->results;
			resolve_one(rc, base, depth + 1);
			free(base);
			if (rc->results > before)
				return;
		}
		if (rc->catchall) {
			char *ca = xasprintf("@%s", dom);
			targets = alias_targets(rc->a, ca, &err);
			free(ca);
		}
	}
	/*
	 * postmaster@ with nothing of its own reached through an alias (or a
	 * +tag) reaches someone too, as asked for itself (resolve()); else an
	 * alias naming it would lose its copy (RFC 5321 4.5.1).
	 */
	if (targets == NULL && rc->catchall && depth > 0)
		resolve_postmaster(rc, addr, depth);
	for (size_t i = 0; targets && targets[i]; i++) {
		resolve_one(rc, targets[i], depth + 1);
		free(targets[i]);
	}
	free(targets);
}

/* The oldest user of domain (the one an admin adds first), malloc'd, or NULL. */
static char *
oldest_user(struct resolve_ctx *rc, const char *domain)
{
	static const char sql[] =
		"SELECT address FROM users WHERE domain = ? ORDER BY created, rowid LIMIT 1";
	sqlite3_stmt *st = acc_stmt(rc->a, sql);
	char *user = NULL;

	if (st == NULL) {
		rc->error = 1;
		return NULL;
	}
	sqlite3_bind_text(st, 1, domain, -1, SQLITE_STATIC);
	int r = sqlite3_step(st);
	if (r == SQLITE_ROW)
		user = xstrdup((const char *)sqlite3_column_text(st, 0));
	else if (r != SQLITE_DONE)
		rc->error = 1;
	sqlite3_reset(st);
	return user;
}

/*
 * RFC 5321 4.5.1: postmaster@ every local domain MUST be accepted. With no
 * user, alias or catch-all of its own, it reaches the domain's oldest user;
 * a domain with no user at all hands it to the server's postmaster,
 * postmaster@ the local domain added first (its alias, catch-all or oldest
 * user). Only for delivery: it gives nobody the right to send as postmaster.
 */
static void
resolve_postmaster(struct resolve_ctx *rc, const char *addr, int depth)
{
	const char *dom = domain_of(addr);
	int before = rc->results;

	if ((size_t)(dom - addr) != sizeof("postmaster@") - 1 ||
	    strncmp(addr, "postmaster@", sizeof("postmaster@") - 1) != 0)
		return;
	int local = accounts_domain_exists(rc->a, dom);
	if (local != 1) {
		rc->error |= local < 0;
		return;
	}
	char *user = oldest_user(rc, dom), first[256];
	if (user == NULL && !rc->error) {
		int f = accounts_domain_first(rc->a, first, sizeof(first));
		if (f < 0)
			rc->error = 1;
		else if (f == 1 && strcmp(first, dom) != 0) {
			char *pm = xasprintf("postmaster@%s", first);
			resolve_one(rc, pm, depth + 1);
			free(pm);
			if (rc->results == before && !rc->error)
				user = oldest_user(rc, first);
		}
	}
	if (user != NULL)
		resolve_one(rc, user, depth + 1);
	free(user);
}

static int
resolve(struct accounts *a, const char *address, int catchall,
	void (*fn)(const char *addr, int local, void *arg), void *arg)
{
	struct resolve_ctx rc = {a, NULL, NULL, 0, fn, arg, 0, 0, catchall, NULL, 0, 0};
	struct buf norm = BUF_INIT(0), err = BUF_INIT(0);

	if (accounts_normalise(address, 0, &norm, &err) < 0) {
		buf_free(&norm);
		buf_free(&err);
		return 0;
	}
	resolve_one(&rc, norm.data, 0);
	if (catchall && rc.results == 0 && !rc.error)
		resolve_postmaster(&rc, norm.data, 0);
	/*
	 * An expansion cut short would take the mail for some members and
	 * silently never give it to the rest: an error instead (the RCPT gets
	 * a temporary refusal, as Postfix's virtual_alias_expansion_limit),
	 * logged so the admin mends the alias.
	 */
	for (size_t i = 0; i < rc.ncut && !rc.truncated; i++)
		if (!seen_has(&rc, rc.cut[i]))
			rc.truncated = 1;
	if (rc.truncated && !rc.error) {
		char esc[300];
		log_warn("alias expansion of %s meets more than %d addresses or %d levels: refused",
			 log_esc(esc, sizeof(esc), norm.data), RESOLVE_MAX, ALIAS_MAX_DEPTH);
		rc.error = 1;
	}
	for (size_t i = 0; i < rc.ncut; i++)
		free(rc.cut[i]);
	free(rc.cut);
	for (size_t i = 0; i < rc.nseen; i++)
		free(rc.seen[i]);
	free(rc.seen);
	free(rc.seen_depth);
	buf_free(&norm);
	buf_free(&err);
	return rc.error ? -1 : rc.results;
}

int
accounts_resolve(struct accounts *a, const char *address,
		 void (*fn)(const char *addr, int local, void *arg), void *arg)
{
	return resolve(a, address, 1, fn, arg);
}

struct owns_ctx {
	const char *user;
	int found;
};

static void
owns_cb(const char *addr, int local, void *arg)
{
	struct owns_ctx *oc = arg;
	if (local && strcmp(addr, oc->user) == 0)
		oc->found = 1;
}

int
accounts_owns(struct accounts *a, const char *user, const char *address)
{
	struct owns_ctx oc = {user, 0};
	/* Catch-alls give no right to send: only the user's own address, its
	 * +tag forms, and aliases that name the user. */
	if (resolve(a, address, 0, owns_cb, &oc) < 0)
		return -1;
	return oc.found;
}
