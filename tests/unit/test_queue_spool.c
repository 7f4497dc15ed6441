/* Unit tests for queue/queue_spool: write, parse, state records, torn files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
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
	assert_int_equal(spool_write(NULL, dir, &m, body, sizeof(body) - 1, 0, &err), 0);
	assert_int_equal(spool_load(dir, m.id, NULL, &got, &content, &err), 0);
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
	assert_int_equal(spool_append_state(dir, &m, SPOOL_REC_DEFERRED, 1, 1, 1700000900,
					    "451 4.3.0 try later", "mx.remote.test", &err), 0);
	assert_int_equal(spool_append_state(dir, &m, SPOOL_REC_DELIVERED, 0, 1, 0, NULL, NULL,
					    &err), 0);
	assert_int_equal(spool_append_state(dir, &m, SPOOL_REC_WARNED, 0, 0, 0, NULL, NULL,
					    &err), 0);
	assert_int_equal(spool_load(dir, m.id, NULL, &got, NULL, &err), 0);
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

/*
 * Each message gets a random nonce when first written, kept in its file;
 * its dedup keys hold it, so an id that comes again (the clock set back)
 * does not name an earlier delivery. A file without one (an older
 * version's) keeps the old key; ids go above the ones seen at start.
 */
static void
test_nonce_and_ids(void **state)
{
	struct spool_msg a, b, got;
	struct buf err = BUF_INIT(0);
	char ka[64], kb[64], id[QUEUE_ID_LEN + 1];

	make_msg(&a);
	make_msg(&b);
	memcpy(b.id, a.id, sizeof(b.id));	/* the same id again */
	assert_int_equal(spool_write(NULL, dir, &a, "x", 1, 0, &err), 0);
	assert_int_equal(strlen(a.nonce), 16);
	assert_int_equal(spool_load(dir, a.id, NULL, &got, NULL, &err), 0);
	assert_string_equal(got.nonce, a.nonce);
	spool_dedup_key(&got, 1, ka, sizeof(ka));
	spool_msg_free(&got);
	char path[128];
	snprintf(path, sizeof(path), "%s/%s", dir, a.id);
	assert_int_equal(unlink(path), 0);
	assert_int_equal(spool_write(NULL, dir, &b, "y", 1, 0, &err), 0);
	assert_string_not_equal(b.nonce, a.nonce);
	spool_dedup_key(&b, 1, kb, sizeof(kb));
	assert_string_not_equal(ka, kb);
	assert_int_equal(strncmp(ka, a.id, 16), 0);
	assert_int_equal(ka[16], '.');
	assert_string_equal(ka + 16 + 1 + 16, ":1");

	/* Written without one: the key of older versions. */
	b.nonce[0] = '\0';
	spool_dedup_key(&b, 0, kb, sizeof(kb));
	assert_int_equal(strlen(kb), 16 + 2);

	/* An id found in the spool at start: the next ones are above it. */
	spool_seen_id("7fffffffffff0000");
	spool_new_id(id);
	assert_true(strcmp(id, "7fffffffffff0000") > 0);
	spool_seen_id("0000000000000001-b");	/* a notice's id: ignored */
	buf_free(&err);
}

/* 'X': a failed recipient reported by a bounce already; for any other one
 * it is damage. */
static void
test_bounced(void **state)
{
	struct spool_msg m, got;
	struct buf err = BUF_INIT(0);

	(void)state;
	make_msg(&m);
	assert_int_equal(spool_write(NULL, dir, &m, "body\r\n", 6, 0, &err), 0);
	assert_int_equal(spool_append_state(dir, &m, SPOOL_REC_FAILED, 0, 1, 0, "5.4.6 loop", NULL,
					    &err), 0);
	assert_int_equal(spool_append_state(dir, &m, SPOOL_REC_BOUNCED, 0, 0, 0, NULL, NULL, &err),
			 0);
	assert_int_equal(spool_load(dir, m.id, NULL, &got, NULL, &err), 0);
	assert_int_equal(got.rcpts[0].status, RCPT_FAILED);
	assert_int_equal(got.rcpts[0].bounced, 1);
	assert_string_equal(got.rcpts[0].last_error, "5.4.6 loop");
	assert_int_equal(got.rcpts[1].bounced, 0);
	spool_msg_free(&got);

	assert_int_equal(spool_append_state(dir, &m, SPOOL_REC_BOUNCED, 1, 0, 0, NULL, NULL, &err),
			 0);
	buf_reset(&err);
	assert_int_equal(spool_load(dir, m.id, NULL, &got, NULL, &err), -1);
	assert_non_null(strstr(buf_str(&err), "'X'"));
	buf_free(&err);
}

/* A notice owed ('N') keeps the recipient delivered with its remote and
 * reason; a later 'D' settles it; an unknown record type is damage. */
static void
test_notice_owed(void **state)
{
	struct spool_msg m, got;
	struct buf err = BUF_INIT(0);
	const char body[] = "body\r\n";
	char path[128];

	make_msg(&m);
	assert_int_equal(spool_write(NULL, dir, &m, body, 6, 0, &err), 0);
	assert_int_equal(spool_append_state(dir, &m, SPOOL_REC_NOTICE_OWED, 1, 1, 1700003600,
					    "250 2.0.0 ok", "mx.remote.test[192.0.2.1]", &err), 0);
	assert_int_equal(spool_load(dir, m.id, NULL, &got, NULL, &err), 0);
	assert_int_equal(got.rcpts[1].status, RCPT_DELIVERED);
	assert_int_equal(got.rcpts[1].notice_owed, 1);
	assert_int_equal(got.rcpts[1].next_try, 1700003600);
	assert_int_equal(got.rcpts[1].attempts, 1);
	assert_string_equal(got.rcpts[1].remote, "mx.remote.test[192.0.2.1]");
	assert_string_equal(got.rcpts[1].last_error, "250 2.0.0 ok");
	assert_int_equal(got.rcpts[0].notice_owed, 0);
	spool_msg_free(&got);

	assert_int_equal(spool_append_state(dir, &m, SPOOL_REC_DELIVERED, 1, 1, 0, NULL, NULL,
					    &err), 0);
	assert_int_equal(spool_load(dir, m.id, NULL, &got, NULL, &err), 0);
	assert_int_equal(got.rcpts[1].status, RCPT_DELIVERED);
	assert_int_equal(got.rcpts[1].notice_owed, 0);
	spool_msg_free(&got);

	/* A record of a type nobody writes, with a good crc: refused. */
	size_t len;
	snprintf(path, sizeof(path), "%s/%s", dir, m.id);
	assert_int_equal(spool_append_state(dir, &m, (enum spool_rec)'Z', 1, 1, 5, "x", "y", &err),
			 0);
	char *data = util_read_file(path, 1 << 20, &len);
	assert_non_null(data);
	memset(&got, 0, sizeof(got));
	buf_reset(&err);
	assert_int_equal(spool_parse(data, len, &got, &err), -1);
	assert_non_null(strstr(buf_str(&err), "'Z'"));
	spool_msg_free(&got);
	free(data);
	buf_free(&err);
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
	assert_int_equal(spool_write(NULL, dir, &m, body, 6, 0, &err), 0);
	snprintf(path, sizeof(path), "%s/%s", dir, m.id);
	char *data = util_read_file(path, 1 << 20, &full_len);
	assert_non_null(data);
	assert_int_equal(spool_append_state(dir, &m, SPOOL_REC_DELIVERED, 0, 1, 0, NULL, NULL,
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
	assert_int_equal(spool_write(NULL, dir, &m, "x", 1, 1, &err), 0);
	assert_int_equal(spool_write(NULL, dir, &m, "y", 1, 1, &err), 1);
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
	*(int *)arg = spool_write(NULL, dir, &m, "z", 1, 0, &err);
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
	assert_int_equal(spool_write(NULL, dir, &m, "x", 1, 0, &err), 0);
	assert_int_equal(fsbarrier_set_patience(2000000), 0);

	int64_t t0 = util_now_ms();
	assert_int_equal(pthread_create(&t, NULL, eager_writer, &eager_rc), 0);
	assert_int_equal(spool_append_state(dir, &m, SPOOL_REC_DELIVERED, 0, 1, 0, NULL, NULL,
					    &err), 0);
	int64_t waited = util_now_ms() - t0;
	pthread_join(t, NULL);
	assert_int_equal(eager_rc, 0);
	assert_true(waited >= 15 && waited < 1500);	/* the eager flush, not 2 s */

	assert_int_equal(fsbarrier_set_patience(50000), 2000000);
	t0 = util_now_ms();
	assert_int_equal(spool_append_state(dir, &m, SPOOL_REC_WARNED, 0, 0, 0, NULL, NULL, &err),
			 0);
	assert_true(util_now_ms() - t0 >= 45);		/* alone: its own flush after 50 ms */
	assert_int_equal(fsbarrier_set_patience(0), 50000);
	buf_free(&err);
}

/* Names of the ".r" files in dir; the first one in first (if any). */
static int
count_recycled(char first[64])
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int n = 0;

	assert_non_null(d);
	while ((de = readdir(d)) != NULL) {
		if (strncmp(de->d_name, ".r", 2) == 0) {
			if (n++ == 0 && first != NULL)
				snprintf(first, 64, "%.60s", de->d_name);
		}
	}
	closedir(d);
	return n;
}

/* stat(2) of dir/name: 0 or -1. */
static int
stat_name(const char *name, struct stat *st)
{
	char path[256];

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	return stat(path, st);
}

static ino_t
inode_of(const char *name)
{
	struct stat st;

	return stat_name(name, &st) < 0 ? 0 : st.st_ino;
}

/* The first byte of dir/name, or -1. */
static int
first_byte(const char *name)
{
	char path[256];
	unsigned char c;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return -1;
	int r = fread(&c, 1, 1, f) == 1 ? c : -1;
	fclose(f);
	return r;
}

static off_t
size_of(const char *name)
{
	struct stat st;

	return stat_name(name, &st) < 0 ? -1 : st.st_size;
}

/*
 * A delivered file is kept (hidden, first byte 0) and the next message is
 * written over it in place: same name, same inode, not cut, and none of the
 * old message's state records read as the new one's.
 */
static void
test_recycle_reuses_file(void **state)
{
	struct spool_pool *pool = spool_pool_new(dir, 4);
	struct spool_msg a, b, c, got;
	struct buf err = BUF_INIT(0), content = BUF_INIT(0);
	char big[3000], rname[64];
	int fd;

	memset(big, 'x', sizeof(big));
	make_msg(&a);
	assert_int_equal(spool_write(pool, dir, &a, big, sizeof(big), 0, &err), 0);
	assert_string_equal(spool_file(&a), a.id);	/* the pool was empty: a new file */
	assert_int_equal(spool_append_state(dir, &a, SPOOL_REC_DELIVERED, 0, 1, 0, NULL, NULL,
					    &err), 0);
	assert_int_equal(spool_append_state(dir, &a, SPOOL_REC_DELIVERED, 1, 1, 0, NULL, NULL,
					    &err), 0);
	ino_t ino = inode_of(a.id);
	off_t len = size_of(a.id);
	assert_true(ino != 0);
	spool_retire(pool, dir, spool_file(&a), sizeof(big), 1, -1);
	assert_int_equal(inode_of(a.id), 0);
	assert_int_equal(spool_pool_count(pool), 1);
	assert_int_equal(count_recycled(rname), 1);
	assert_int_equal(inode_of(rname), ino);
	assert_int_equal(first_byte(rname), 0);		/* free */
	assert_int_equal(spool_load(dir, rname, NULL, &got, NULL, &err), SPOOL_INCOMPLETE);

	make_msg(&b);
	assert_int_equal(spool_write_unsynced(pool, dir, &b, "short\r\n", 7, &fd, &err), 0);
	assert_true(fd >= 0);	/* within the old length: its data alone to flush */
	assert_int_equal(fdatasync(fd), 0);
	close(fd);
	assert_string_equal(spool_file(&b), rname);
	assert_int_equal(spool_pool_count(pool), 0);
	assert_int_equal(inode_of(b.id), 0);		/* no file under the id */
	assert_int_equal(inode_of(rname), ino);
	assert_int_equal(size_of(rname), len);		/* not cut */
	assert_true(b.end < (uint64_t)len);
	assert_int_equal(spool_load(dir, rname, NULL, &got, &content, &err), 0);
	assert_string_equal(got.id, b.id);		/* the id the file records */
	assert_string_equal(spool_file(&got), rname);
	assert_int_equal(got.end, b.end);
	assert_int_equal(content.len, 7);
	assert_memory_equal(content.data, "short\r\n", 7);
	assert_int_equal(got.nrcpts, 2);
	assert_int_equal(got.rcpts[0].status, RCPT_PENDING);	/* a's 'D' records are not b's */
	assert_int_equal(got.rcpts[1].status, RCPT_PENDING);
	assert_int_equal(got.named, 1);
	assert_string_equal(got.file_id, b.id);
	spool_msg_free(&got);

	/* b's own state goes after its end, over a's leftovers. */
	assert_int_equal(spool_append_state(dir, &b, SPOOL_REC_DELIVERED, 1, 1, 0, NULL, NULL,
					    &err), 0);
	assert_int_equal(spool_load(dir, rname, NULL, &got, NULL, &err), 0);
	assert_int_equal(got.rcpts[0].status, RCPT_PENDING);
	assert_int_equal(got.rcpts[1].status, RCPT_DELIVERED);
	spool_msg_free(&got);

	/* Freed again; a message longer than the file makes it grow: not data alone. */
	spool_retire(pool, dir, spool_file(&b), 7, 1, -1);
	assert_int_equal(spool_pool_count(pool), 1);
	assert_int_equal(first_byte(rname), 0);
	char huge[8000];
	memset(huge, 'y', sizeof(huge));
	make_msg(&c);
	assert_int_equal(spool_write_unsynced(pool, dir, &c, huge, sizeof(huge), &fd, &err), 0);
	assert_int_equal(fd, -1);
	assert_int_equal(spool_sync(dir, &err), 0);
	assert_string_equal(spool_file(&c), rname);
	assert_int_equal(spool_load(dir, rname, NULL, &got, &content, &err), 0);
	assert_string_equal(got.id, c.id);
	assert_int_equal(content.len, sizeof(huge));
	spool_msg_free(&got);
	buf_free(&content);
	buf_free(&err);
	spool_pool_free(&pool);
	assert_null(pool);
}

/*
 * A delivery's shared lock (spool_delivery_lock()) is made the exclusive
 * one that frees the file, in place: spool_retire() neither waits for it
 * (a lock of its own would, for ever) nor lets it go before the file is
 * free, so that a `surat queue delete` (another descriptor) never gets in
 * between; it closes it.
 */
static void
test_retire_under_delivery_lock(void **state)
{
	struct spool_pool *pool = spool_pool_new(dir, 4);
	struct spool_msg a;
	struct buf err = BUF_INIT(0);
	char path[256], rname[64];
	int lockfd;

	(void)state;
	make_msg(&a);
	assert_int_equal(spool_write(pool, dir, &a, "x\r\n", 3, 0, &err), 0);
	snprintf(path, sizeof(path), "%s/%s", dir, spool_file(&a));
	int other = open(path, O_RDONLY); /* the CLI's */
	assert_true(other >= 0);
	assert_int_equal(spool_delivery_lock(dir, spool_file(&a), a.id, 0, &lockfd), 1);
	assert_true(lockfd >= 0);
	assert_int_equal(flock(other, LOCK_EX | LOCK_NB), -1);
	spool_retire(pool, dir, spool_file(&a), 3, 1, lockfd);
	/* Let go once the file is free: its next writer need not wait. */
	assert_int_equal(fcntl(lockfd, F_GETFD), -1);
	assert_int_equal(count_recycled(rname), 1);
	assert_int_equal(first_byte(rname), 0);
	assert_int_equal(flock(other, LOCK_EX | LOCK_NB), 0);
	close(other);
	buf_free(&err);
	spool_pool_free(&pool);
}

/*
 * spool_write_kept(), the loop's write: only over a kept file the message
 * fits in; otherwise nothing is written and the pool is as it was.
 */
static void
test_write_kept(void **state)
{
	struct spool_pool *pool = spool_pool_new(dir, 4);
	struct spool_msg a, b, c, got;
	struct buf err = BUF_INIT(0), content = BUF_INIT(0);
	char big[3000], huge[8000], rname[64];
	int fd = 7;

	memset(big, 'x', sizeof(big));
	memset(huge, 'y', sizeof(huge));
	make_msg(&a);
	/* An empty pool: nothing written, no file under the id. */
	assert_int_equal(spool_write_kept(pool, dir, &a, big, sizeof(big), &fd, &err), 1);
	assert_int_equal(fd, -1);
	assert_string_equal(a.file, "");
	assert_int_equal(inode_of(a.id), 0);
	assert_int_equal(spool_write(pool, dir, &a, big, sizeof(big), 0, &err), 0);
	spool_retire(pool, dir, spool_file(&a), sizeof(big), 1, -1);
	assert_int_equal(spool_pool_count(pool), 1);
	assert_int_equal(count_recycled(rname), 1);
	off_t len = size_of(rname);

	/* Too large for the kept file: not taken, left in the pool untouched. */
	make_msg(&b);
	assert_int_equal(spool_write_kept(pool, dir, &b, huge, sizeof(huge), &fd, &err), 1);
	assert_int_equal(fd, -1);
	assert_int_equal(spool_pool_count(pool), 1);
	assert_int_equal(size_of(rname), len);
	assert_int_equal(first_byte(rname), 0);
	assert_int_equal(inode_of(b.id), 0);

	/* One that fits: written over it, its data alone to flush. */
	make_msg(&c);
	assert_int_equal(spool_write_kept(pool, dir, &c, "fits\r\n", 6, &fd, &err), 0);
	assert_true(fd >= 0);
	assert_int_equal(fdatasync(fd), 0);
	close(fd);
	assert_string_equal(spool_file(&c), rname);
	assert_int_equal(spool_pool_count(pool), 0);
	assert_int_equal(size_of(rname), len);
	assert_int_equal(spool_load(dir, rname, NULL, &got, &content, &err), 0);
	assert_string_equal(got.id, c.id);
	assert_int_equal(content.len, 6);
	spool_msg_free(&got);
	buf_free(&content);
	buf_free(&err);
	spool_pool_free(&pool);
}

/*
 * What a file holds, as the queue asks before touching it: a kept file may
 * hold another message by now. And a kept file that grew large (it is never
 * cut) is removed when freed, not kept.
 */
static void
test_holds_and_large_kept(void **state)
{
	struct spool_pool *pool = spool_pool_new(dir, 4);
	struct spool_msg a, b;
	struct buf err = BUF_INIT(0);
	char rname[64];

	make_msg(&a);
	assert_int_equal(spool_write(pool, dir, &a, "x", 1, 0, &err), 0);
	assert_int_equal(spool_holds(dir, a.id, a.id), 1);
	spool_retire(pool, dir, spool_file(&a), 1, 1, -1);
	assert_int_equal(count_recycled(rname), 1);
	assert_int_equal(spool_holds(dir, a.id, a.id), 0);	/* renamed away */
	assert_int_equal(spool_holds(dir, rname, a.id), -1);	/* free */
	uint64_t fsize = 0;
	assert_int_equal(spool_is_free(dir, rname, &fsize), 1);	/* by its first byte */
	assert_int_equal(fsize, (uint64_t)size_of(rname));
	assert_int_equal(spool_is_free(dir, a.id, &fsize), 0);	/* gone */
	make_msg(&b);
	assert_int_equal(spool_write(pool, dir, &b, "y", 1, 0, &err), 0);
	assert_string_equal(spool_file(&b), rname);
	assert_int_equal(spool_holds(dir, rname, a.id), -1);	/* another message */
	assert_int_equal(spool_holds(dir, rname, b.id), 1);
	assert_int_equal(spool_is_free(dir, rname, &fsize), 0);	/* holds b */
	/* Loading it as a's says so, and returns no content. */
	struct spool_msg got;
	struct buf content = BUF_INIT(0);
	assert_int_equal(spool_load(dir, rname, a.id, &got, &content, &err), SPOOL_OTHER);
	assert_non_null(strstr(buf_str(&err), "holds message"));
	assert_int_equal(content.len, 0);
	buf_reset(&err);
	assert_int_equal(spool_load(dir, rname, b.id, &got, &content, &err), 0);
	assert_int_equal(content.len, 1);
	spool_msg_free(&got);
	buf_free(&content);

	/* State records past 256 KiB: freed, the file goes. */
	char big[4000];
	memset(big, 'r', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	for (int i = 0; i < 70; i++)
		assert_int_equal(spool_append_state(dir, &b, SPOOL_REC_DEFERRED, 1, 1, 1, big,
						    "mx", &err), 0);
	assert_true(size_of(rname) > 256 * 1024);
	assert_int_equal(spool_holds(dir, rname, b.id), 1);	/* read from its envelope */
	spool_retire(pool, dir, spool_file(&b), 1, 1, -1);
	assert_int_equal(count_recycled(NULL), 0);
	assert_int_equal(spool_pool_count(pool), 0);
	buf_free(&err);
	spool_pool_free(&pool);
}

/* A record as format 1 wrote it: crc from 0. */
static void
v1_rec(struct buf *b, char type, const char *p, size_t n)
{
	unsigned char h[5] = {(unsigned char)type, (unsigned char)(n >> 24),
			      (unsigned char)(n >> 16), (unsigned char)(n >> 8), (unsigned char)n};
	uint32_t crc = util_crc32(util_crc32(0, h, 5), p, n);
	unsigned char t[4] = {(unsigned char)(crc >> 24), (unsigned char)(crc >> 16),
			      (unsigned char)(crc >> 8), (unsigned char)crc};
	buf_append(b, h, 5);
	buf_append(b, p, n);
	buf_append(b, t, 4);
}

/* A whole format 1 message recording id, written to dir/name. */
static void
write_v1(const char *name, const char *id)
{
	struct buf f = BUF_INIT(0), h = BUF_INIT(0);
	char path[256];

	v1_rec(&f, 'V', "1", 1);
	buf_printf(&h, "id=%s", id);
	buf_putc(&h, '\0');
	buf_puts(&h, "from=old@example.org");
	buf_putc(&h, '\0');
	v1_rec(&f, 'H', h.data, h.len);
	static const char r[] = "x@example.test\0x@example.test\0\0" "0\0" "1";
	v1_rec(&f, 'R', r, sizeof(r) - 1);
	v1_rec(&f, 'B', "old", 3);
	v1_rec(&f, 'E', "", 0);
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *fp = fopen(path, "w");
	assert_non_null(fp);
	assert_int_equal(fwrite(f.data, 1, f.len, fp), f.len);
	fclose(fp);
	buf_free(&f);
	buf_free(&h);
}

/*
 * Which message a file holds after a crash. Format 2: the id it records,
 * whatever its name (a crash may undo the rename that freed a file but keep
 * the message written over it since). Format 1 (files of older versions):
 * a hidden file is a delivered message kept for reuse, and a file that
 * records another id than its name is a rewrite that never happened.
 */
static void
test_recycle_names_after_crash(void **state)
{
	struct spool_pool *pool = spool_pool_new(dir, 4);
	struct spool_msg a, b, got;
	struct buf err = BUF_INIT(0);
	char rname[64], from[256], to[256];

	make_msg(&a);
	assert_int_equal(spool_write(pool, dir, &a, "x", 1, 0, &err), 0);
	spool_retire(pool, dir, a.id, 1, 1, -1);
	assert_int_equal(count_recycled(rname), 1);
	make_msg(&b);
	assert_int_equal(spool_write(pool, dir, &b, "y", 1, 0, &err), 0);
	assert_string_equal(spool_file(&b), rname);
	snprintf(from, sizeof(from), "%s/%s", dir, rname);
	snprintf(to, sizeof(to), "%s/%s", dir, a.id);
	assert_int_equal(rename(from, to), 0);		/* the retire's rename undone */
	assert_int_equal(spool_load(dir, a.id, NULL, &got, NULL, &err), 0);
	assert_string_equal(got.id, b.id);
	assert_string_equal(spool_file(&got), a.id);
	spool_msg_free(&got);
	unlink(to);

	write_v1(".r00000000000000aa", "0000000000000001");
	assert_int_equal(spool_load(dir, ".r00000000000000aa", NULL, &got, NULL, &err),
			 SPOOL_INCOMPLETE);
	assert_non_null(strstr(buf_str(&err), "kept for reuse"));
	write_v1("0000000000000002", "0000000000000001");
	buf_reset(&err);
	assert_int_equal(spool_load(dir, "0000000000000002", NULL, &got, NULL, &err), SPOOL_INCOMPLETE);
	assert_non_null(strstr(buf_str(&err), "never rewritten"));
	write_v1("0000000000000001", "0000000000000001");
	assert_int_equal(spool_load(dir, "0000000000000001", NULL, &got, NULL, &err), 0);
	assert_string_equal(got.id, "0000000000000001");	/* format 1 still read */
	assert_int_equal(got.seed, 0);
	spool_msg_free(&got);
	buf_free(&err);
	spool_pool_free(&pool);
}

/*
 * A writer killed while writing over a reused file: the new header and part
 * of the new content over the old message's bytes, the first byte still 0.
 * Incomplete (never acknowledged), not damaged.
 */
static void
test_recycle_killed_rewrite(void **state)
{
	struct spool_msg a, b, got;
	struct buf err = BUF_INIT(0);
	char old[2000], path[256];
	size_t len;

	memset(old, 'o', sizeof(old));
	make_msg(&a);
	assert_int_equal(spool_write(NULL, dir, &a, old, sizeof(old), 0, &err), 0);
	make_msg(&b);
	assert_int_equal(spool_write(NULL, dir, &b, "new", 3, 0, &err), 0);
	snprintf(path, sizeof(path), "%s/%s", dir, b.id);
	char *newer = util_read_file(path, 1 << 20, &len);
	assert_non_null(newer);
	unlink(path);
	snprintf(path, sizeof(path), "%s/%s", dir, a.id);
	FILE *f = fopen(path, "r+");
	assert_non_null(f);
	assert_int_equal(fwrite("", 1, 1, f), 1);
	assert_int_equal(fwrite(newer + 1, 1, len - 10, f), len - 10);	/* not the end */
	fclose(f);
	free(newer);
	char to[256];
	snprintf(to, sizeof(to), "%s/%s", dir, b.id);
	assert_int_equal(rename(path, to), 0);
	assert_int_equal(spool_load(dir, b.id, NULL, &got, NULL, &err), SPOOL_INCOMPLETE);
	assert_non_null(strstr(buf_str(&err), "did not finish"));
	/* The same file with its first byte in place is no message either. */
	f = fopen(to, "r+");
	assert_int_equal(fwrite("V", 1, 1, f), 1);
	fclose(f);
	buf_reset(&err);
	assert_true(spool_load(dir, b.id, NULL, &got, NULL, &err) < 0);
	unlink(to);
	buf_free(&err);
}

/* With excl, an existing notice is not replaced by a reused file either. */
static void
test_recycle_excl(void **state)
{
	struct spool_pool *pool = spool_pool_new(dir, 4);
	struct spool_msg a, n, got;
	struct buf err = BUF_INIT(0), content = BUF_INIT(0);

	make_msg(&a);
	assert_int_equal(spool_write(pool, dir, &a, "x", 1, 0, &err), 0);
	spool_retire(pool, dir, a.id, 1, 1, -1);
	make_msg(&n);
	memcpy(n.id, "fedcba9876543210-b", 19);
	assert_int_equal(spool_write(NULL, dir, &n, "first", 5, 1, &err), 0);
	assert_int_equal(spool_write(pool, dir, &n, "second", 6, 1, &err), 1);
	assert_int_equal(spool_pool_count(pool), 1);
	assert_int_equal(spool_load(dir, n.id, NULL, &got, &content, &err), 0);
	assert_memory_equal(content.data, "first", 5);
	spool_msg_free(&got);
	buf_free(&content);
	buf_free(&err);
	spool_pool_free(&pool);
}

/* Not kept: files without their id, large files, a full pool, no pool. */
static void
test_recycle_limits(void **state)
{
	struct spool_pool *pool = spool_pool_new(dir, 1);
	struct spool_msg m[4];
	struct buf err = BUF_INIT(0);

	for (int i = 0; i < 4; i++) {
		make_msg(&m[i]);
		assert_int_equal(spool_write(NULL, dir, &m[i], "x", 1, 0, &err), 0);
	}
	spool_retire(pool, dir, m[0].id, 1, 0, -1);		  /* an older file */
	spool_retire(pool, dir, m[1].id, (size_t)1 << 20, 1, -1); /* large */
	assert_int_equal(spool_pool_count(pool), 0);
	spool_retire(pool, dir, m[2].id, 1, 1, -1);
	spool_retire(pool, dir, m[3].id, 1, 1, -1); /* the pool is full */
	assert_int_equal(spool_pool_count(pool), 1);
	assert_int_equal(count_recycled(NULL), 1);
	for (int i = 0; i < 4; i++)
		assert_int_equal(inode_of(m[i].id), 0);
	spool_retire(NULL, dir, "0000000000000001", 1, 1, -1); /* absent: no harm */

	assert_int_equal(spool_pool_adopt(pool, ".r0123456789abcdef", 0), 0);	/* full */
	struct spool_pool *p2 = spool_pool_new(dir, 8);
	assert_int_equal(spool_pool_adopt(p2, ".r0123456789abcdef", 0), 1);
	assert_int_equal(spool_pool_adopt(p2, ".r0123", 0), 0);
	assert_int_equal(spool_pool_adopt(p2, ".corrupt.0123456789abcdef", 0), 0);
	assert_int_equal(spool_pool_adopt(p2, ".r0123456789abcdeg", 0), 0);
	assert_int_equal(spool_pool_count(p2), 1);
	spool_pool_free(&p2);
	spool_pool_free(&pool);
	buf_free(&err);
}

/* Several messages written, then one flush for all; a failed round takes its files back. */
static void
test_round(void **state)
{
	struct spool_pool *pool = spool_pool_new(dir, 4);
	struct spool_msg a, b, got;
	struct buf err = BUF_INIT(0), content = BUF_INIT(0);

	make_msg(&a);
	make_msg(&b);
	assert_int_equal(spool_write_unsynced(pool, dir, &a, "first", 5, NULL, &err), 0);
	assert_int_equal(spool_write_unsynced(pool, dir, &b, "second", 6, NULL, &err), 0);
	assert_int_equal(spool_sync(dir, &err), 0);
	assert_int_equal(spool_load(dir, a.id, NULL, &got, &content, &err), 0);
	assert_memory_equal(content.data, "first", 5);
	spool_msg_free(&got);
	assert_int_equal(spool_load(dir, b.id, NULL, &got, &content, &err), 0);
	assert_memory_equal(content.data, "second", 6);
	spool_msg_free(&got);
	spool_retire(NULL, dir, a.id, 5, 1, -1);
	assert_int_equal(inode_of(a.id), 0);
	assert_int_equal(spool_sync("/nonexistent-spool-dir", &err), -1);
	assert_non_null(strstr(buf_str(&err), "nonexistent-spool-dir"));
	spool_retire(pool, dir, b.id, 6, 1, -1);
	buf_free(&content);
	buf_free(&err);
	spool_pool_free(&pool);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_roundtrip, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_notice_owed, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bounced, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_torn, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_excl, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_patient_flush, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_recycle_reuses_file, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_write_kept, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_retire_under_delivery_lock, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_recycle_names_after_crash, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_holds_and_large_kept, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_recycle_killed_rewrite, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_recycle_excl, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_recycle_limits, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_round, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_nonce_and_ids, setup, teardown),
	};
	return cmocka_run_group_tests_name("queue_spool", tests, NULL, NULL);
}
