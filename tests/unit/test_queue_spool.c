/* Unit tests for queue/queue_spool: write, parse, state records, torn files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/buf.h"
#include "core/fsbarrier.h"
#include "core/util.h"
#include "queue/queue_spool.h"

static char dir[64];

static int
setup(void **state)
{
	snprintf(dir, sizeof(dir), "/tmp/surat-spool-%d", (int)getpid());
	util_mkdir_p(dir, 0700);
	return 0;
}

static int
teardown(void **state)
{
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static void
make_msg(struct spool_msg *m)
{
	static struct spool_rcpt r[2];
	memset(m, 0, sizeof(*m));
	memset(r, 0, sizeof(r));
	spool_new_id(m->id);
	m->mail_from = "sender@example.org";
	m->envid = "ENV+2B1";
	m->ret_hdrs = 1;
	m->created = 1700000000;
	m->client_ip = "127.0.0.1";
	m->helo = "client.example";
	m->auth_user = "alice@example.test";
	m->session = "abcdef";
	r[0].addr = "alice@example.test";
	r[0].orig = "team@example.test";
	r[0].notify = NOTIFY_FAILURE | NOTIFY_DELAY;
	r[0].local = 1;
	r[1].addr = "bob@remote.test";
	r[1].orig = "bob@remote.test";
	r[1].orcpt = "rfc822;bob@remote.test";
	m->rcpts = r;
	m->nrcpts = 2;
}

static void
test_roundtrip(void **state)
{
	struct spool_msg m, got;
	struct buf err = BUF_INIT(0), content = BUF_INIT(0);
	const char body[] = "Subject: x\r\n\r\nhello\r\n";

	make_msg(&m);
	assert_int_equal(spool_write(dir, &m, body, sizeof(body) - 1, 0, &err), 0);
	assert_int_equal(spool_load(dir, m.id, &got, &content, &err), 0);
	assert_string_equal(got.mail_from, "sender@example.org");
	assert_string_equal(got.envid, "ENV+2B1");
	assert_int_equal(got.ret_hdrs, 1);
	assert_int_equal(got.created, 1700000000);
	assert_string_equal(got.auth_user, "alice@example.test");
	assert_int_equal(got.nrcpts, 2);
	assert_string_equal(got.rcpts[0].orig, "team@example.test");
	assert_int_equal(got.rcpts[0].local, 1);
	assert_int_equal(got.rcpts[0].notify, NOTIFY_FAILURE | NOTIFY_DELAY);
	assert_string_equal(got.rcpts[1].orcpt, "rfc822;bob@remote.test");
	assert_int_equal(got.rcpts[1].status, RCPT_PENDING);
	assert_int_equal(content.len, sizeof(body) - 1);
	assert_memory_equal(content.data, body, sizeof(body) - 1);
	spool_msg_free(&got);

	/* State records replay in order. */
	assert_int_equal(spool_append_state(dir, m.id, SPOOL_REC_DEFERRED, 1, 1, 1700000900,
					    "451 4.3.0 try later", "mx.remote.test", &err), 0);
	assert_int_equal(spool_append_state(dir, m.id, SPOOL_REC_DELIVERED, 0, 1, 0, NULL, NULL,
					    &err), 0);
	assert_int_equal(spool_append_state(dir, m.id, SPOOL_REC_WARNED, 0, 0, 0, NULL, NULL,
					    &err), 0);
	assert_int_equal(spool_load(dir, m.id, &got, NULL, &err), 0);
	assert_int_equal(got.rcpts[0].status, RCPT_DELIVERED);
	assert_int_equal(got.rcpts[1].status, RCPT_DEFERRED);
	assert_int_equal(got.rcpts[1].next_try, 1700000900);
	assert_string_equal(got.rcpts[1].last_error, "451 4.3.0 try later");
	assert_string_equal(got.rcpts[1].remote, "mx.remote.test");
	assert_int_equal(got.delay_warned, 1);
	spool_msg_free(&got);
	buf_free(&err);
	buf_free(&content);
}

/* Every truncation of a file is either incomplete (never acknowledged: the
 * manager drops it) or, past the end record, yields the state before the
 * torn record; damage is refused as such. */
static void
test_torn(void **state)
{
	struct spool_msg m, got;
	struct buf err = BUF_INIT(0);
	const char body[] = "body\r\n";
	char path[128];
	size_t len, full_len;

	make_msg(&m);
	assert_int_equal(spool_write(dir, &m, body, 6, 0, &err), 0);
	snprintf(path, sizeof(path), "%s/%s", dir, m.id);
	char *data = util_read_file(path, 1 << 20, &full_len);
	assert_non_null(data);
	assert_int_equal(spool_append_state(dir, m.id, SPOOL_REC_DELIVERED, 0, 1, 0, NULL, NULL,
					    &err), 0);
	char *data2 = util_read_file(path, 1 << 20, &len);
	assert_true(len > full_len);
	for (size_t cut = 0; cut < full_len; cut++) {
		memset(&got, 0, sizeof(got));
		buf_reset(&err);
		assert_int_equal(spool_parse(data, cut, &got, &err), SPOOL_INCOMPLETE);
		spool_msg_free(&got);
	}
	for (size_t cut = full_len; cut < len; cut++) {
		memset(&got, 0, sizeof(got));
		assert_int_equal(spool_parse(data2, cut, &got, &err), 0);
		assert_int_equal(got.rcpts[0].status, RCPT_PENDING);
		spool_msg_free(&got);
	}
	memset(&got, 0, sizeof(got));
	assert_int_equal(spool_parse(data2, len, &got, &err), 0);
	assert_int_equal(got.rcpts[0].status, RCPT_DELIVERED);
	spool_msg_free(&got);
	/* A flipped byte in the content fails the checksum. */
	data[full_len - 12] ^= 1;
	memset(&got, 0, sizeof(got));
	assert_int_equal(spool_parse(data, full_len, &got, &err), -1);
	spool_msg_free(&got);
	free(data);
	free(data2);
	buf_free(&err);
}

static void
test_excl(void **state)
{
	struct spool_msg m;
	struct buf err = BUF_INIT(0);
	make_msg(&m);
	memcpy(m.id, "0123456789abcdef-b", 19);
	assert_int_equal(spool_write(dir, &m, "x", 1, 1, &err), 0);
	assert_int_equal(spool_write(dir, &m, "y", 1, 1, &err), 1);
	buf_free(&err);
}

/* Another thread's eager write, 20 ms in: its flush serves the patient one. */
static void *
eager_writer(void *arg)
{
	struct spool_msg m;
	struct buf err = BUF_INIT(0);

	usleep(20000);
	make_msg(&m);
	spool_new_id(m.id);
	*(int *)arg = spool_write(dir, &m, "z", 1, 0, &err);
	buf_free(&err);
	return NULL;
}

/*
 * A patient writer (local delivery) waits for a flush someone else starts
 * and is served by it; alone, it starts its own when its patience ends.
 */
static void
test_patient_flush(void **state)
{
	struct spool_msg m;
	struct buf err = BUF_INIT(0);
	pthread_t t;
	int eager_rc = -1;

	make_msg(&m);
	spool_new_id(m.id);
	assert_int_equal(spool_write(dir, &m, "x", 1, 0, &err), 0);
	assert_int_equal(fsbarrier_set_patience(2000000), 0);

	int64_t t0 = util_now_ms();
	assert_int_equal(pthread_create(&t, NULL, eager_writer, &eager_rc), 0);
	assert_int_equal(spool_append_state(dir, m.id, SPOOL_REC_DELIVERED, 0, 1, 0, NULL, NULL,
					    &err), 0);
	int64_t waited = util_now_ms() - t0;
	pthread_join(t, NULL);
	assert_int_equal(eager_rc, 0);
	assert_true(waited >= 15 && waited < 1500);	/* the eager flush, not 2 s */

	assert_int_equal(fsbarrier_set_patience(50000), 2000000);
	t0 = util_now_ms();
	assert_int_equal(spool_append_state(dir, m.id, SPOOL_REC_WARNED, 0, 0, 0, NULL, NULL, &err),
			 0);
	assert_true(util_now_ms() - t0 >= 45);		/* alone: its own flush after 50 ms */
	assert_int_equal(fsbarrier_set_patience(0), 50000);
	buf_free(&err);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_torn),
		cmocka_unit_test(test_excl),
		cmocka_unit_test(test_patient_flush),
	};
	return cmocka_run_group_tests_name("queue_spool", tests, setup, teardown);
}
