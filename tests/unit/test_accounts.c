/* Unit tests for auth/accounts: addresses in Unicode NFC (accounts_normalise()),
 * and the upgrade of an accounts.db whose rows are not (schema 2). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "auth/accounts.h"
#include "core/buf.h"
#include "core/util.h"
#include "unit_util.h"

/* accounts_normalise(in) into a static string, or NULL if it refuses. */
static const char *
norm(const char *in)
{
	static char out[512];
	struct buf b = BUF_INIT(0), e = BUF_INIT(0);
	int r = accounts_normalise(in, 0, &b, &e);

	if (r == 0)
		snprintf(out, sizeof(out), "%s", b.data);
	buf_free(&b);
	buf_free(&e);
	return r == 0 ? out : NULL;
}

/* o + U+0308 and U+00F6 are one address; ASCII is as it was. */
static void
test_nfc(void **state)
{
	(void)state;
	assert_string_equal(norm("jo\xcc\x88rg@example.test"), "j\xc3\xb6rg@example.test");
	assert_string_equal(norm("j\xc3\xb6rg@example.test"), "j\xc3\xb6rg@example.test");
	assert_string_equal(norm("Jo\xcc\x88RG@EXAMPLE.test"), "j\xc3\xb6rg@example.test");
	/* Hangul jamo compose to a syllable. */
	assert_string_equal(norm("\xe1\x84\x92\xe1\x85\xa1\xe1\x86\xab@example.test"),
			    "\xed\x95\x9c@example.test");
	assert_string_equal(norm("Alice+Tag@Example.TEST"), "alice+tag@example.test");
}

/*
 * ASCII case folds as it did before NFC: 'W' + U+030A is 'w' + U+030A, which
 * is U+1E98 in NFC (no composed capital exists); 'A' + U+030A is U+00E5.
 */
static void
test_nfc_case(void **state)
{
	(void)state;
	assert_string_equal(norm("W\xcc\x8a@example.test"), "\xe1\xba\x98@example.test");
	assert_string_equal(norm("w\xcc\x8a@example.test"), "\xe1\xba\x98@example.test");
	assert_string_equal(norm("A\xcc\x8a@example.test"), "\xc3\xa5@example.test");
	/* U+212A KELVIN SIGN + U+0301 is U+1E30, not lowered: non-ASCII case stays. */
	assert_string_equal(norm("\xe2\x84\xaa\xcc\x81@example.test"), "\xe1\xb8\xb0@example.test");
}

/* The checks are of the NFC form, which may hold ASCII the input did not. */
static void
test_nfc_then_checked(void **state)
{
	char in[300];

	(void)state;
	/* U+212A KELVIN SIGN is 'K' in NFC, lowercased like any ASCII. */
	assert_string_equal(norm("\xe2\x84\xaa"
				 "ate@example.test"),
			    "kate@example.test");
	/* U+037E GREEK QUESTION MARK is ';', which no local part holds. */
	assert_null(norm("a\xcd\xbe"
			 "b@example.test"));
	/* U+0958 (3 octets) is two code points (6) in NFC: 21 of them fit 64
	 * octets as given, not in NFC. */
	in[0] = '\0';
	for (int i = 0; i < 21; i++)
		strcat(in, "\xe0\xa5\x98");
	strcat(in, "@example.test");
	assert_null(norm(in));
	/* 26 decomposed o-umlauts (78 octets) are 52 in NFC. */
	in[0] = '\0';
	for (int i = 0; i < 26; i++)
		strcat(in, "o\xcc\x88");
	strcat(in, "@example.test");
	assert_non_null(norm(in));
	/* Ill-formed UTF-8 is refused before any normalisation. */
	assert_null(norm("a\xe0\x80\xaf@example.test"));
	assert_null(norm("a\xc3@example.test"));
	/* A combining mark with no base is as it was: allowed. */
	assert_non_null(norm("\xcc\x88@example.test"));
}

static void
sql(sqlite3 *db, const char *q)
{
	char *msg = NULL;
	if (sqlite3_exec(db, q, NULL, NULL, &msg) != SQLITE_OK)
		fail_msg("%s: %s", q, msg);
}

static int
dir_exists(const char *dir, const char *sub)
{
	char path[600];
	struct stat sb;

	snprintf(path, sizeof(path), "%s/mail/example.test/%s", dir, sub);
	return stat(path, &sb) == 0;
}

/* An accounts.db of schema 0 with a decomposed user, alias and store. */
static void
old_db(const char *dir, sqlite3 **db_r)
{
	char path[600];
	struct buf err = BUF_INIT(0);
	struct accounts *a = accounts_open(dir, &err);

	assert_non_null(a);
	assert_int_equal(accounts_domain_add(a, "example.test", &err), 0);
	accounts_close(&a);
	snprintf(path, sizeof(path), "%s/accounts.db", dir);
	assert_int_equal(sqlite3_open(path, db_r), SQLITE_OK);
	sql(*db_r, "PRAGMA user_version=0;"
		   "INSERT INTO users VALUES('jo\xcc\x88rg@example.test', 'example.test',"
		   " '$6$x$y', -1, 1);"
		   "INSERT INTO aliases VALUES('li\xcc\x88st@example.test',"
		   " 'jo\xcc\x88rg@example.test');"
		   "INSERT INTO aliases VALUES('li\xcc\x88st@example.test',"
		   " 'Jo\xcc\x88rg@remote.test');");
	snprintf(path, sizeof(path), "%s/mail/example.test/jo\xcc\x88rg/msg", dir);
	assert_int_equal(util_mkdir_p(path, 0700), 0);
	buf_free(&err);
}

#define LONG_LABEL "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijk"

static int
alias_count(sqlite3 *db, const char *q)
{
	sqlite3_stmt *st = NULL;
	int n = -1;

	if (sqlite3_prepare_v2(db, q, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
		n = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	return n;
}

/* The rows and the store are respelt once; lookups in either form find them. */
static void
test_upgrade(void **state)
{
	char dir[] = "/tmp/surat-test-accounts-XXXXXX";
	struct buf err = BUF_INIT(0);
	struct account_user u = {0};
	sqlite3 *db = NULL;

	(void)state;
	assert_non_null(mkdtemp(dir));
	old_db(dir, &db);
	struct accounts *a = accounts_open(dir, &err);
	assert_non_null(a);
	assert_int_equal(accounts_user_get(a, "j\xc3\xb6rg@example.test", &u), 1);
	accounts_user_free(&u);
	assert_false(dir_exists(dir, "jo\xcc\x88rg"));
	assert_true(dir_exists(dir, "j\xc3\xb6rg/msg"));
	assert_int_equal(alias_count(db,
				     "SELECT count(*) FROM aliases WHERE source ="
				     " 'l\xc3\xafst@example.test' AND target IN"
				     " ('j\xc3\xb6rg@example.test', 'J\xc3\xb6rg@remote.test')"),
			 2);
	assert_int_equal(alias_count(db, "PRAGMA user_version"), 2);
	accounts_close(&a);
	sqlite3_close(db);
	unit_rm_tree(dir);
	buf_free(&err);
}

/* Two users NFC makes one: refused, both named, nothing changed. */
static void
test_upgrade_collision(void **state)
{
	char dir[] = "/tmp/surat-test-accounts-XXXXXX";
	struct buf err = BUF_INIT(0);
	sqlite3 *db = NULL;

	(void)state;
	assert_non_null(mkdtemp(dir));
	old_db(dir, &db);
	sql(db, "INSERT INTO users VALUES('j\xc3\xb6rg@example.test', 'example.test', '$6$x$y',"
		" -1, 2)");
	assert_null(accounts_open(dir, &err));
	assert_non_null(strstr(err.data, "jo<U+0308>rg@example.test"));
	assert_non_null(strstr(err.data, "j<U+00F6>rg@example.test"));
	assert_true(dir_exists(dir, "jo\xcc\x88rg/msg"));
	assert_int_equal(alias_count(db, "SELECT count(*) FROM users"), 2);
	assert_int_equal(alias_count(db, "PRAGMA user_version"), 0);
	sqlite3_close(db);
	unit_rm_tree(dir);
	buf_free(&err);
}

/*
 * An alias made so that one spelling reached the user of the other, either
 * way: NFC makes it point at itself, and it is dropped, not a collision.
 * One that forwards elsewhere too still is.
 */
static void
test_upgrade_redundant_alias(void **state)
{
	static const char *const extra[] = {
	    /* The user is decomposed (old_db()): the NFC spelling aliased to it. */
	    "INSERT INTO aliases VALUES('j\xc3\xb6rg@example.test', 'jo\xcc\x88rg@example.test')",
	    /* The user in NFC, its decomposed spelling aliased to it. */
	    "UPDATE users SET address = 'j\xc3\xb6rg@example.test';"
	    "INSERT INTO aliases VALUES('jo\xcc\x88rg@example.test', 'j\xc3\xb6rg@example.test')",
	};
	char path[600];

	(void)state;
	for (size_t k = 0; k < 2; k++) {
		char dir[] = "/tmp/surat-test-accounts-XXXXXX";
		struct buf err = BUF_INIT(0);
		struct account_user u = {0};
		sqlite3 *db = NULL;

		assert_non_null(mkdtemp(dir));
		old_db(dir, &db);
		sql(db, extra[k]);
		if (k == 1) {
			snprintf(path, sizeof(path), "%s/mail/example.test/jo\xcc\x88rg", dir);
			char to[600];
			snprintf(to, sizeof(to), "%s/mail/example.test/j\xc3\xb6rg", dir);
			assert_int_equal(rename(path, to), 0);
		}
		struct accounts *a = accounts_open(dir, &err);
		assert_non_null(a);
		assert_int_equal(accounts_user_get(a, "j\xc3\xb6rg@example.test", &u), 1);
		accounts_user_free(&u);
		assert_true(dir_exists(dir, "j\xc3\xb6rg/msg"));
		assert_int_equal(
		    alias_count(db, "SELECT count(*) FROM aliases WHERE source LIKE 'j%'"), 0);
		assert_int_equal(alias_count(db, "PRAGMA user_version"), 2);
		accounts_close(&a);
		sqlite3_close(db);
		unit_rm_tree(dir);
		buf_free(&err);
	}

	/* Forwarding elsewhere too: the alias would shadow the user. */
	char dir[] = "/tmp/surat-test-accounts-XXXXXX";
	struct buf err = BUF_INIT(0);
	sqlite3 *db = NULL;
	assert_non_null(mkdtemp(dir));
	old_db(dir, &db);
	sql(db, extra[1]);
	sql(db, "INSERT INTO aliases VALUES('jo\xcc\x88rg@example.test', 'boss@example.test')");
	assert_null(accounts_open(dir, &err));
	assert_non_null(strstr(err.data, "never merges"));
	assert_int_equal(alias_count(db, "PRAGMA user_version"), 0);
	sqlite3_close(db);
	unit_rm_tree(dir);
	buf_free(&err);
}

/*
 * NFC lengthens U+0958 (3 octets) to two code points (6): an address that
 * fit an SMTP path as stored may not in NFC. Refused, named, unchanged.
 */
static void
test_upgrade_too_long(void **state)
{
	char dir[] = "/tmp/surat-test-accounts-XXXXXX";
	char dom[300], q[2048], local[64];
	struct buf err = BUF_INIT(0);
	sqlite3 *db = NULL;

	(void)state;
	assert_non_null(mkdtemp(dir));
	old_db(dir, &db);
	/* 63.63.63.31 + 3 dots: 223 octets; with 30 + 1, 254 as stored. */
	snprintf(dom, sizeof(dom), "%.63s.%.63s.%.63s.%.31s", LONG_LABEL, LONG_LABEL, LONG_LABEL,
		 LONG_LABEL);
	assert_int_equal(strlen(dom), 223);
	local[0] = '\0';
	for (int i = 0; i < 10; i++)
		strcat(local, "\xe0\xa5\x98");
	snprintf(q, sizeof(q),
		 "INSERT INTO domains VALUES('%s', 1);"
		 "INSERT INTO users VALUES('%s@%s', '%s', '$6$x$y', -1, 1)",
		 dom, local, dom, dom);
	sql(db, q);
	assert_null(accounts_open(dir, &err));
	assert_non_null(strstr(err.data, "<U+0958>"));
	assert_non_null(strstr(err.data, "longer than 254"));
	assert_int_equal(alias_count(db, "PRAGMA user_version"), 0);
	assert_true(dir_exists(dir, "jo\xcc\x88rg/msg"));
	sqlite3_close(db);
	unit_rm_tree(dir);
	buf_free(&err);
}

/* accounts_user_check() refuses what accounts_user_add() would, with its message. */
static void
test_user_check(void **state)
{
	char dir[] = "/tmp/surat-test-accounts-XXXXXX";
	struct buf err = BUF_INIT(0);

	(void)state;
	assert_non_null(mkdtemp(dir));
	struct accounts *a = accounts_open(dir, &err);
	assert_non_null(a);
	assert_int_equal(accounts_domain_add(a, "example.test", &err), 0);
	assert_int_equal(accounts_user_add(a, "alice@example.test", "$6$saltsalt$h", -1, &err), 0);
	assert_int_equal(accounts_alias_add(a, "list@example.test", "alice@example.test", &err), 0);
	assert_int_equal(accounts_user_check(a, "bob@Example.test", &err), 0);
	static const struct {
		const char *addr, *why;
	} refused[] = {
	    {"List@example.test", "list@example.test is an alias; delete it first"},
	    {"ALICE@example.test", "user alice@example.test already exists"},
	    {"x@other.test", "domain other.test is not a local domain"},
	    {"bad", "bad address"},
	};
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		buf_reset(&err);
		assert_int_equal(accounts_user_check(a, refused[i].addr, &err), -1);
		if (strstr(buf_str(&err), refused[i].why) == NULL)
			fail_msg("%s: '%s' lacks '%s'", refused[i].addr, buf_str(&err),
				 refused[i].why);
		buf_reset(&err);
		assert_int_equal(accounts_user_add(a, refused[i].addr, "$6$saltsalt$h", -1, &err),
				 -1);
		assert_non_null(strstr(buf_str(&err), refused[i].why));
	}
	accounts_close(&a);
	unit_rm_tree(dir);
	buf_free(&err);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_nfc),
	    cmocka_unit_test(test_nfc_case),
	    cmocka_unit_test(test_nfc_then_checked),
	    cmocka_unit_test(test_upgrade),
	    cmocka_unit_test(test_upgrade_collision),
	    cmocka_unit_test(test_upgrade_redundant_alias),
	    cmocka_unit_test(test_upgrade_too_long),
	    cmocka_unit_test(test_user_check),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
