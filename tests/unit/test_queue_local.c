/*
 * test_queue_local — local delivery against a real accounts database and
 * mailbox store in a temporary data directory.
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth/accounts.h"
#include "core/buf.h"
#include "core/util.h"
#include "mime/mime_meta.h"
#include "queue/queue_local.h"
#include "store/store.h"

#define USER "carol@example.org"
/* A valid yescrypt hash (of nothing in particular): accounts only store it. */
#define HASH "$y$j9T$0123456789abcdefghijk.$HZFaqNlR2sYnFAJ.QaWPQgKyJb5IoHXk9x4tw4eROn4"

static const char msg[] = "From: x@example.net\r\nSubject: hi\r\n\r\nbody\r\n";

static int
setup(void **state)
{
	char *dir = xstrdup("/tmp/surat-qlocal-XXXXXX");
	struct buf err = BUF_INIT(0);

	if (mkdtemp(dir) == NULL)
		return -1;
	struct accounts *a = accounts_open(dir, &err);
	if (a == NULL || accounts_domain_add(a, "example.org", &err) < 0 ||
	    accounts_user_add(a, USER, HASH, -1, &err) < 0) {
		fprintf(stderr, "setup: %s\n", buf_str(&err));
		return -1;
	}
	accounts_close(&a);
	buf_free(&err);
	*state = dir;
	return 0;
}

static int
teardown(void **state)
{
	store_pool_drain();
	unit_rm_tree(*state);
	free(*state);
	return 0;
}

static enum deliver_result
deliver(const char *dir, const char *key, struct buf *why)
{
	buf_reset(why);
	return local_deliver(dir, USER, "x@example.net", msg, sizeof(msg) - 1, key, 0, 100, why);
}

static void
user_del(const char *dir)
{
	struct buf err = BUF_INIT(0), moved = BUF_INIT(0);
	struct accounts *a = accounts_open(dir, &err);

	assert_non_null(a);
	assert_int_equal(accounts_user_del(a, USER, &err), 0);
	accounts_close(&a);
	assert_true(store_account_retire(dir, USER, &moved, &err) >= 0);
	buf_free(&err);
	buf_free(&moved);
}

static int
store_exists(const char *dir)
{
	char path[256];
	struct stat sb;

	xsnprintf(path, sizeof(path), "%s/mail/example.org/carol", dir);
	return stat(path, &sb) == 0;
}

/* A user's first delivery makes the store. */
static void
test_first_delivery_makes_the_store(void **state)
{
	struct buf why = BUF_INIT(0);

	assert_false(store_exists(*state));
	assert_int_equal(deliver(*state, "k1", &why), DELIVER_OK);
	assert_true(store_exists(*state));
	buf_free(&why);
}

/*
 * `surat user del` between the queue's look at the user (on the loop) and
 * the delivery (on a worker): the delivery made a new store at the moved
 * one's path and put the mail there, in a mailbox nobody owned that a
 * user added later under the address would find. It fails 5.1.1 now.
 */
static void
test_user_deleted_after_the_queue_looked(void **state)
{
	struct buf why = BUF_INIT(0);

	assert_int_equal(deliver(*state, "k1", &why), DELIVER_OK);	/* a pooled handle */
	user_del(*state);
	assert_false(store_exists(*state));
	assert_int_equal(deliver(*state, "k2", &why), DELIVER_PERMFAIL);
	assert_non_null(strstr(buf_str(&why), "5.1.1"));
	assert_false(store_exists(*state));

	/* Never had a store at all: the same. */
	store_pool_drain();
	assert_int_equal(deliver(*state, "k3", &why), DELIVER_PERMFAIL);
	assert_false(store_exists(*state));
	buf_free(&why);
}

/*
 * A Delivered-To: written before local parts were kept in NFC (o + U+0308)
 * names the account as much as one in NFC: a message that comes round
 * again is a loop in either spelling.
 */
static void
test_loop_in_another_spelling(void **state)
{
	static const char nfc[] = "j\xc3\xb6rg@example.org";
	static const char *const seen[] = {"Delivered-To: jo\xcc\x88rg@example.org\r\n",
					   "Delivered-To: J\xc3\xb6rg@EXAMPLE.org\r\n"};
	struct buf err = BUF_INIT(0), why = BUF_INIT(0), m = BUF_INIT(0);
	struct accounts *a = accounts_open(*state, &err);

	assert_non_null(a);
	assert_int_equal(accounts_user_add(a, nfc, HASH, -1, &err), 0);
	accounts_close(&a);
	for (size_t i = 0; i < 2; i++) {
		buf_reset(&m);
		buf_printf(&m, "%s%s", seen[i], msg);
		buf_reset(&why);
		assert_int_equal(
		    local_deliver(*state, nfc, "x@example.net", m.data, m.len, "k", 0, 100, &why),
		    DELIVER_PERMFAIL);
		assert_non_null(strstr(buf_str(&why), "5.4.6"));
	}
	buf_free(&err);
	buf_free(&why);
	buf_free(&m);
}

/*
 * A Delivered-To: field as a peer may write it (RFC 5322): folded, its
 * address alone on a continuation line, or with white space before the
 * colon, or as a path in angle brackets (Dovecot's LMTP), is the
 * account's as much as the plain form: a loop. A folded
 * field naming another account, one whose value runs on past the account,
 * and a continuation line on its own are not.
 */
static void
test_loop_in_a_folded_field(void **state)
{
	static const char *const loops[] = {
	    "Delivered-To:\r\n carol@example.org\r\n",
	    "Delivered-To:\r\n\t Carol@Example.ORG \r\n",
	    "DELIVERED-TO :  carol@example.org\r\n",
	    "X-A: b\r\nDelivered-to:\r\n \r\n carol@example.org\r\nX-B: c\r\n",
	    "Delivered-To: <carol@example.org>\r\n",
	};
	static const char *const not_loops[] = {
	    "Delivered-To:\r\n dave@example.org\r\n",
	    "Delivered-To: carol@example.org\r\n .net\r\n",
	    "X-Note: x\r\n carol@example.org\r\n",
	    "Delivered-Tox: carol@example.org\r\n",
	    "Delivered-To: <dave@example.org>\r\n",
	    "Delivered-To: <carol@example.org\r\n",
	};
	struct buf why = BUF_INIT(0), m = BUF_INIT(0);
	char key[16];

	for (size_t i = 0; i < sizeof(loops) / sizeof(loops[0]); i++) {
		buf_reset(&m);
		buf_printf(&m, "%s%s", loops[i], msg);
		buf_reset(&why);
		xsnprintf(key, sizeof(key), "l%zu", i);
		assert_int_equal(
		    local_deliver(*state, USER, "x@example.net", m.data, m.len, key, 0, 100, &why),
		    DELIVER_PERMFAIL);
		assert_non_null(strstr(buf_str(&why), "5.4.6"));
	}
	for (size_t i = 0; i < sizeof(not_loops) / sizeof(not_loops[0]); i++) {
		buf_reset(&m);
		buf_printf(&m, "%s%s", not_loops[i], msg);
		buf_reset(&why);
		xsnprintf(key, sizeof(key), "n%zu", i);
		assert_int_equal(
		    local_deliver(*state, USER, "x@example.net", m.data, m.len, key, 0, 100, &why),
		    DELIVER_OK);
	}
	buf_free(&why);
	buf_free(&m);
}

/*
 * The quota counts a message as stored, bare LFs made CRLF. One whose
 * queued length fits the whole quota but whose stored size does not can
 * never fit: bounced 5.2.3, not deferred 4.2.2 (again and again until
 * queue.max_age) as when the raw length was compared.
 */
static void
test_never_fits_once_stored_as_crlf(void **state)
{
	static const char lf[] = "From: x@example.net\nSubject: hi\n\nbody\n";
	struct buf why = BUF_INIT(0);
	int64_t quota = (int64_t)(local_added_len("x@example.net", USER) + sizeof(lf) - 1);

	assert_int_equal(
	    local_deliver(*state, USER, "x@example.net", lf, sizeof(lf) - 1, "k", quota, 100, &why),
	    DELIVER_PERMFAIL);
	assert_non_null(strstr(buf_str(&why), "5.2.3"));
	/* Its stored size is what the reason gives. */
	char want[32];
	xsnprintf(want, sizeof(want), " %lld octets", (long long)quota + 4);
	assert_non_null(strstr(buf_str(&why), want));
	buf_free(&why);
}

/*
 * The loop check on hostile headers: each is read within the header, in
 * one pass over it, and none crashes. A Delivered-To: folded onto 20000
 * lines, one whose value is 2 KB of another address, one with a NUL, one
 * ended by a bare CR and a body line after the blank line are no loops; a
 * header with no blank line after it is read to the end of the content.
 */
static void
test_loop_check_on_hostile_headers(void **state)
{
	struct buf why = BUF_INIT(0), m = BUF_INIT(0);

	struct {
		const char *name;
		enum deliver_result want;
	} cases[] = {
	    {"folded", DELIVER_OK},	      {"long", DELIVER_OK}, {"nul", DELIVER_OK},
	    {"bare-cr", DELIVER_OK},	      {"body", DELIVER_OK}, {"no-blank", DELIVER_PERMFAIL},
	    {"long-other", DELIVER_PERMFAIL},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *c = cases[i].name;
		buf_reset(&m);
		if (strcmp(c, "folded") == 0) {
			buf_puts(&m, "Delivered-To: dave@example.org\r\n");
			for (int k = 0; k < 20000; k++)
				buf_puts(&m, " carol@example.org\r\n");
			buf_puts(&m, "\r\nbody\r\n");
		} else if (strcmp(c, "long") == 0 || strcmp(c, "long-other") == 0) {
			/* 2 KB and a bit of another address; then, for long-other, ours. */
			buf_puts(&m, "Delivered-To: <");
			for (int k = 0; k < 2048; k++)
				buf_puts(&m, "d");
			buf_puts(&m, "@example.org>\r\n");
			if (strcmp(c, "long-other") == 0)
				buf_puts(&m, "Delivered-To: carol@example.org\r\n");
			buf_puts(&m, "\r\nbody\r\n");
		} else if (strcmp(c, "nul") == 0) {
			static const char nul[] = "Delivered-To: carol@example.org\0x\r\n\r\nb\r\n";
			buf_append(&m, nul, sizeof(nul) - 1);
		} else if (strcmp(c, "bare-cr") == 0) {
			buf_puts(&m,
				 "Delivered-To: dave@example.org\rcarol@example.org\r\n\r\nb\r\n");
		} else if (strcmp(c, "body") == 0) {
			buf_puts(&m, "Subject: x\r\n\r\nDelivered-To: carol@example.org\r\n");
		} else {
			buf_puts(&m, "Subject: x\r\nDelivered-To: carol@example.org");
		}
		buf_reset(&why);
		assert_int_equal(
		    local_deliver(*state, USER, "x@example.net", m.data, m.len, c, 0, 100, &why),
		    cases[i].want);
	}
	buf_free(&why);
	buf_free(&m);
}

int
main(void)
{
	store_set_text_fn(mime_meta_text);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_first_delivery_makes_the_store, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_user_deleted_after_the_queue_looked, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_loop_in_another_spelling, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_loop_in_a_folded_field, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_never_fits_once_stored_as_crlf, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_loop_check_on_hostile_headers, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
