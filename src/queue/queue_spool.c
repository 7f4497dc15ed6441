/*
 * queue_spool — see queue_spool.h.
 *
 * Record payloads:
 *   'V' "2" (or "1")                format version; from 2 on, the crc of each
 *                                   record after 'H' starts at spool_seed(id)
 *   'H' key=value NUL key=value...  envelope and client information
 *   'R' addr NUL orig NUL orcpt NUL notify NUL local
 *   'B' the message content
 *   'E' (empty)                     end of the acknowledged part
 *   'D' idx                         recipient delivered
 *   'F' idx NUL attempts NUL reason NUL remote     recipient failed for good
 *   'T' idx NUL attempts NUL next NUL reason NUL remote   recipient deferred
 *   'W' (empty)                     delay warning sent
 *   'N' idx NUL attempts NUL next NUL reason NUL remote   recipient taken by
 *                                   a peer without DSN, its success notice
 *                                   owed: written again at next; a later 'D'
 *                                   says it was written or given up
 *   'X' idx                         recipient's failure reported in a bounce
 *                                   (one written while others were queued)
 *
 * SECURITY: every length is checked against the bytes actually present;
 * numbers go through util_parse_u64; indexes are range-checked.
 */
#include "queue/queue_spool.h"
#include "core/buf.h"
#include "core/fsbarrier.h"
#include "core/log.h"
#include "core/util.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define SPOOL_MAX_FILE ((size_t)1 << 31)
#define SPOOL_MAX_RCPTS 100000
/* Larger files are removed after delivery, not kept for reuse. */
#define SPOOL_RECYCLE_SIZE ((size_t)256 * 1024)
#define SPOOL_POOL_NAME 20	/* ".r" + 16 hex digits + NUL, rounded */

struct spool_pool {
	pthread_mutex_t mu;
	char *dir;
	char (*names)[SPOOL_POOL_NAME];
	uint64_t *sizes;	/* each file's length: written over within it, no metadata */
	size_t n, max;
	uint64_t seq;
};

const char *
spool_file(const struct spool_msg *m)
{
	return m->file[0] ? m->file : m->id;
}

/* The crc seed of a format 2 message's records after its envelope. */
static uint32_t
spool_seed(const char *id)
{
	return util_crc32(0xffffffffu, id, strlen(id)) | 1;
}

struct spool_pool *
spool_pool_new(const char *dir, size_t max)
{
	struct spool_pool *p = xcalloc(1, sizeof(*p));

	pthread_mutex_init(&p->mu, NULL);
	p->dir = xstrdup(dir);
	p->max = max;
	p->names = xcalloc(max ? max : 1, sizeof(*p->names));
	p->sizes = xcalloc(max ? max : 1, sizeof(*p->sizes));
	/* Names of this run cannot meet those of an earlier one still in the directory. */
	p->seq = (uint64_t)util_now_ms() << 16;
	return p;
}

void
spool_pool_free(struct spool_pool **pp)
{
	struct spool_pool *p = *pp;

	if (p == NULL)
		return;
	pthread_mutex_destroy(&p->mu);
	free(p->names);
	free(p->sizes);
	free(p->dir);
	free(p);
	*pp = NULL;
}

/* n lower-case hex digits. */
static int
is_hex(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f')))
			return 0;
	return 1;
}

int
spool_reused_name(const char *name)
{
	return name[0] == '.' && name[1] == 'r' && strlen(name) == 18 && is_hex(name + 2, 16);
}

int
spool_pool_adopt(struct spool_pool *p, const char *name, uint64_t size)
{
	int kept = 0;

	if (!spool_reused_name(name))
		return 0;
	pthread_mutex_lock(&p->mu);
	if (p->n < p->max) {
		p->sizes[p->n] = size;
		snprintf(p->names[p->n++], SPOOL_POOL_NAME, "%s", name);
		kept = 1;
	}
	pthread_mutex_unlock(&p->mu);
	return kept;
}

size_t
spool_pool_count(struct spool_pool *p)
{
	pthread_mutex_lock(&p->mu);
	size_t n = p->n;
	pthread_mutex_unlock(&p->mu);
	return n;
}

/* Take a file from the pool: its name into out, its length into size. 1, or 0 when empty. */
static int
pool_take(struct spool_pool *p, char out[SPOOL_POOL_NAME], uint64_t *size)
{
	int got = 0;

	if (p == NULL)
		return 0;
	pthread_mutex_lock(&p->mu);
	if (p->n > 0) {
		p->n--;
		memcpy(out, p->names[p->n], SPOOL_POOL_NAME);
		*size = p->sizes[p->n];
		got = 1;
	}
	pthread_mutex_unlock(&p->mu);
	return got;
}

/* Give a free file back (it is still there under name). */
static void
pool_put(struct spool_pool *p, const char *name, uint64_t size)
{
	char path[4096];

	pthread_mutex_lock(&p->mu);
	if (p->n < p->max) {
		p->sizes[p->n] = size;
		snprintf(p->names[p->n++], SPOOL_POOL_NAME, "%s", name);
		name = NULL;
	}
	pthread_mutex_unlock(&p->mu);
	if (name != NULL && xsnprintf(path, sizeof(path), "%s/%s", p->dir, name) >= 0)
		unlink(path);
}

/*
 * Mark path free: its first byte 0 (no queued message starts so), no flush.
 * 1 with *size its length, or 0 if it cannot be.
 */
static int
mark_free(const char *path, int lockfd, uint64_t *size)
{
	struct stat st;
	int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);

	if (fd < 0)
		return 0;
	/*
	 * Under the file's lock: `surat queue delete` checks and unlinks under
	 * it. A delivery's shared lock is made exclusive in place: a lock of
	 * fd would wait for it for ever, and one taken after letting it go
	 * would let a delete say "deleted" of the message just delivered.
	 * XXX flock(2) converts by letting go and locking again: a delete
	 * polling at that very instant can still get in.
	 */
	int ok = flock(lockfd >= 0 ? lockfd : fd, LOCK_EX) == 0 && pwrite(fd, "", 1, 0) == 1 &&
		 fstat(fd, &st) == 0;
	close(fd);
	*size = ok ? (uint64_t)st.st_size : 0;
	return ok;
}

/*
 * Let go of a delivery's lock once its file is free or gone: before the pool
 * offers the file, whose next writer would wait for it.
 */
static void
retire_unlock(int *lockfd)
{
	if (*lockfd >= 0)
		close(*lockfd);
	*lockfd = -1;
}

void
spool_retire(struct spool_pool *p, const char *dir, const char *file, size_t size, int named,
	     int lockfd)
{
	char path[4096], to[4096], name[SPOOL_POOL_NAME];
	uint64_t fsize;

	if (xsnprintf(path, sizeof(path), "%s/%s", dir, file) < 0) {
		retire_unlock(&lockfd);
		return;
	}
	if (p != NULL && named && size <= SPOOL_RECYCLE_SIZE && strcmp(dir, p->dir) == 0) {
		if (spool_reused_name(file)) {
			/* Already a kept file: freed in place (unless state records
			 * made it large: it is never cut). */
			if (mark_free(path, lockfd, &fsize) && fsize <= SPOOL_RECYCLE_SIZE) {
				retire_unlock(&lockfd);
				pool_put(p, file, fsize);
				return;
			}
		} else {
			pthread_mutex_lock(&p->mu);
			int room = p->n < p->max;
			uint64_t seq = room ? ++p->seq : 0;
			pthread_mutex_unlock(&p->mu);
			if (room) {
				snprintf(name, sizeof(name), ".r%016llx", (unsigned long long)seq);
				if (xsnprintf(to, sizeof(to), "%s/%s", dir, name) >= 0 &&
				    mark_free(path, lockfd, &fsize) &&
				    fsize <= SPOOL_RECYCLE_SIZE && util_rename_new(path, to) == 0) {
					retire_unlock(&lockfd);
					pool_put(p, name, fsize);
					return;
				}
			}
		}
	}
	if (unlink(path) < 0 && errno != ENOENT)
		log_error("unlink(%s) failed: %s", path, strerror(errno));
	retire_unlock(&lockfd);
}

/* The last id handed out: milliseconds << 16 | sequence. */
static uint64_t spool_last_id;

void
spool_new_id(char out[QUEUE_ID_LEN + 1])
{
	/*
	 * Ids must never repeat: a spool file is named by its id. Random low
	 * bits collide (1 in 65536 for two messages in the same millisecond);
	 * a strictly increasing counter seeded by the clock cannot, within
	 * this process. write_file() refuses an existing name besides.
	 */
	uint64_t want = ((uint64_t)util_now_ms() & 0xffffffffffffULL) << 16;
	uint64_t last = __atomic_load_n(&spool_last_id, __ATOMIC_RELAXED), id;

	do
		id = want > last ? want : last + 1;
	while (!__atomic_compare_exchange_n(&spool_last_id, &last, id, 0, __ATOMIC_RELAXED,
					    __ATOMIC_RELAXED));
	snprintf(out, QUEUE_ID_LEN + 1, "%016llx", (unsigned long long)id);
}

void
spool_seen_id(const char *id)
{
	char *end;
	uint64_t v = strtoull(id, &end, 16);
	uint64_t last = __atomic_load_n(&spool_last_id, __ATOMIC_RELAXED);

	if (end - id != 16 || *end != '\0')
		return;	/* a notice's "-b" id: its message's was seen */
	while (v > last && !__atomic_compare_exchange_n(&spool_last_id, &last, v, 0,
							__ATOMIC_RELAXED, __ATOMIC_RELAXED))
		;
}

void
spool_dedup_key(const struct spool_msg *m, size_t idx, char *out, size_t n)
{
	if (m->nonce[0])
		snprintf(out, n, "%s.%s:%zu", m->id, m->nonce, idx);
	else
		snprintf(out, n, "%s:%zu", m->id, idx);
}

static void
rec_put_seeded(struct buf *b, uint32_t seed, char type, const void *p, size_t n)
{
	unsigned char hdr[5];
	unsigned char tail[4];

	hdr[0] = (unsigned char)type;
	hdr[1] = (unsigned char)(n >> 24);
	hdr[2] = (unsigned char)(n >> 16);
	hdr[3] = (unsigned char)(n >> 8);
	hdr[4] = (unsigned char)n;
	uint32_t crc = util_crc32(seed, hdr, 5);
	crc = util_crc32(crc, p, n);
	tail[0] = (unsigned char)(crc >> 24);
	tail[1] = (unsigned char)(crc >> 16);
	tail[2] = (unsigned char)(crc >> 8);
	tail[3] = (unsigned char)crc;
	buf_append(b, hdr, 5);
	buf_append(b, p, n);
	buf_append(b, tail, 4);
}

static void
rec_put(struct buf *b, char type, const void *p, size_t n)
{
	rec_put_seeded(b, 0, type, p, n);
}

static void
kv(struct buf *b, const char *k, const char *v)
{
	if (v == NULL)
		return;
	buf_printf(b, "%s=%s", k, v);
	buf_putc(b, '\0');
}

static void
kvi(struct buf *b, const char *k, long long v)
{
	buf_printf(b, "%s=%lld", k, v);
	buf_putc(b, '\0');
}

/*
 * A new file is written in place under its final name, never replacing a
 * queued message (O_EXCL; with excl, an existing name means the notice was
 * written before). A reused file keeps its hidden name and is written over
 * from offset 0, never cut: its length and name stay, so when the message
 * fits, only data changes. Until its 'E' record is on disk the file is
 * incomplete, which spool_parse() tells apart from a damaged one: the
 * manager drops it at start (it was never acknowledged), the CLI skips it.
 * One flush then makes the content (and any new length or name) durable.
 * A temp name and a link(2) into place would cost two more directory
 * operations per message for nothing the end record does not already say.
 *
 * Records beyond the new end that the file holds from its last message fail
 * the new message's seeded crcs, so they are never read as its state.
 *
 * When the write changed no metadata (a reused file written within its
 * length), *fd_r, if given, keeps the file open for the caller's fdatasync.
 */
static int
write_file(struct spool_pool *pool, const char *dir, struct spool_msg *msg,
	   const struct buf *head, const char *content, size_t len, const struct buf *tail,
	   int excl, int sync, int *fd_r, int kept_only, struct buf *err)
{
	char final[4096], reused[SPOOL_POOL_NAME];
	uint64_t rsize = 0, total = head->len + len + tail->len;
	int fd = -1, data_only = 0;

	if (fd_r)
		*fd_r = -1;
	msg->file[0] = '\0';
	while (fd < 0 && !excl && pool != NULL && strcmp(pool->dir, dir) == 0 &&
	       pool_take(pool, reused, &rsize)) {
		if (kept_only && total > rsize) {
			pool_put(pool, reused, rsize);
			return 1;
		}
		if (xsnprintf(final, sizeof(final), "%s/%s", dir, reused) < 0)
			break;
		fd = open(final, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
		if (fd >= 0 && flock(fd, LOCK_EX) < 0) {
			close(fd);
			fd = -1;
		}
		if (fd >= 0) {
			snprintf(msg->file, sizeof(msg->file), "%s", reused);
			data_only = total <= rsize;
		}
		/* else gone (`surat queue delete`?): the next, then a new file */
	}
	if (fd < 0 && kept_only)
		return 1;
	if (fd < 0) {
		if (xsnprintf(final, sizeof(final), "%s/%s", dir, msg->id) < 0) {
			buf_printf(err, "queue path too long");
			return -1;
		}
		fd = open(final, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	}
	if (fd < 0) {
		if (errno == EEXIST && excl)
			return 1;
		buf_printf(err, "open(%s) failed: %s", final, strerror(errno));
		return -1;
	}
	/*
	 * The first byte goes last, over a 0 written first: a writer killed
	 * midway leaves a file starting with 0, which spool_parse() calls
	 * incomplete, not old bytes behind a new header that fail a checksum.
	 */
	struct iovec iov[3] = {{head->data + 1, head->len - 1},
			       {(void *)content, len},
			       {tail->data, tail->len}};
	if (pwrite(fd, "", 1, 0) != 1 || util_pwritev_all(fd, iov, 3, 1) < 0 ||
	    pwrite(fd, head->data, 1, 0) != 1) {
		buf_printf(err, "write(%s) failed: %s", final, strerror(errno));
		close(fd);
		unlink(final);
		msg->file[0] = '\0';
		return -1;
	}
	msg->end = total;
	/*
	 * A crash before the flush returns may leave the file behind, torn or
	 * whole; it was never acknowledged. A new file torn by a power loss is
	 * short (incomplete at load); a reused one may mix new and old pages,
	 * which fails a checksum and is moved aside at start, the conservative
	 * reading of a file that cannot tell a torn write from a damaged disk.
	 */
	if (sync && fsbarrier_sync(fd) < 0) {
		buf_printf(err, "sync(%s) failed: %s", final, strerror(errno));
		close(fd);
		unlink(final);
		msg->file[0] = '\0';
		return -1;
	}
	if (fd_r && data_only)
		*fd_r = fd;
	else
		close(fd);
	return 0;
}

static int
spool_write_file(struct spool_pool *pool, const char *dir, struct spool_msg *msg,
		 const char *content, size_t len, int excl, int sync, int *fd_r, int kept_only,
		 struct buf *err)
{
	struct buf head = BUF_INIT(0), h = BUF_INIT(0), r = BUF_INIT(0), tail = BUF_INIT(0);
	uint32_t seed = spool_seed(msg->id);

	if (msg->nonce[0] == '\0') {
		uint64_t rnd;
		util_random(&rnd, sizeof(rnd));
		snprintf(msg->nonce, sizeof(msg->nonce), "%016llx", (unsigned long long)rnd);
	}
	rec_put(&head, 'V', "2", 1);
	kv(&h, "id", msg->id);
	kv(&h, "nonce", msg->nonce);
	kv(&h, "from", msg->mail_from);
	kv(&h, "envid", msg->envid);
	kvi(&h, "ret_hdrs", msg->ret_hdrs);
	kvi(&h, "ret_full", msg->ret_full);
	kvi(&h, "body8", msg->body_8bit);
	kvi(&h, "utf8", msg->smtputf8);
	kvi(&h, "created", msg->created);
	kv(&h, "ip", msg->client_ip);
	kv(&h, "helo", msg->helo);
	kv(&h, "auth", msg->auth_user);
	kv(&h, "session", msg->session);
	kvi(&h, "notice", msg->is_notice);
	kv(&h, "reports", msg->reports);
	rec_put(&head, 'H', h.data, h.len);
	for (size_t i = 0; i < msg->nrcpts; i++) {
		const struct spool_rcpt *rc = &msg->rcpts[i];
		buf_reset(&r);
		buf_puts(&r, rc->addr);
		buf_putc(&r, '\0');
		buf_puts(&r, rc->orig ? rc->orig : rc->addr);
		buf_putc(&r, '\0');
		buf_puts(&r, rc->orcpt ? rc->orcpt : "");
		buf_putc(&r, '\0');
		buf_printf(&r, "%u", rc->notify);
		buf_putc(&r, '\0');
		buf_printf(&r, "%d", rc->local);
		rec_put_seeded(&head, seed, 'R', r.data, r.len);
	}
	/* The 'B' record header goes in head; the content is written as is,
	 * then its crc and the 'E' record from tail. */
	unsigned char bh[5] = {'B', (unsigned char)(len >> 24), (unsigned char)(len >> 16),
			       (unsigned char)(len >> 8), (unsigned char)len};
	buf_append(&head, bh, 5);
	uint32_t crc = util_crc32(util_crc32(seed, bh, 5), content, len);
	unsigned char ct[4] = {(unsigned char)(crc >> 24), (unsigned char)(crc >> 16),
			       (unsigned char)(crc >> 8), (unsigned char)crc};
	buf_append(&tail, ct, 4);
	rec_put_seeded(&tail, seed, 'E', "", 0);
	int rc = write_file(pool, dir, msg, &head, content, len, &tail, excl, sync, fd_r,
			    kept_only, err);
	if (rc == 0) {
		msg->seed = seed;
		msg->named = 1;
		snprintf(msg->file_id, sizeof(msg->file_id), "%s", msg->id);
	}
	buf_free(&head);
	buf_free(&h);
	buf_free(&r);
	buf_free(&tail);
	return rc;
}

int
spool_write(struct spool_pool *pool, const char *dir, struct spool_msg *msg,
	    const char *content, size_t len, int excl, struct buf *err)
{
	return spool_write_file(pool, dir, msg, content, len, excl, 1, NULL, 0, err);
}

int
spool_write_unsynced(struct spool_pool *pool, const char *dir, struct spool_msg *msg,
		     const char *content, size_t len, int *fd_r, struct buf *err)
{
	return spool_write_file(pool, dir, msg, content, len, 0, 0, fd_r, 0, err);
}

int
spool_write_kept(struct spool_pool *pool, const char *dir, struct spool_msg *msg,
		 const char *content, size_t len, int *fd_r, struct buf *err)
{
	return spool_write_file(pool, dir, msg, content, len, 0, 0, fd_r, 1, err);
}

int
spool_sync(const char *dir, struct buf *err)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0 || fsbarrier_sync(fd) < 0) {
		buf_printf(err, "sync(%s) failed: %s", dir, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	close(fd);
	return 0;
}


static uint32_t
be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Split payload into NUL-separated fields; returns count (<= max). */
static size_t
fields(const char *p, size_t n, const char **f, size_t *flen, size_t max)
{
	size_t k = 0, start = 0;
	for (size_t i = 0; i <= n && k < max; i++) {
		if (i == n || p[i] == '\0') {
			f[k] = p + start;
			flen[k] = i - start;
			k++;
			start = i + 1;
		}
	}
	return k;
}

static int
field_num(const char *p, size_t n, uint64_t *r)
{
	return util_parse_u64(p, n, r);
}

static char *
field_str(const char *p, size_t n)
{
	return xstrndup(p, n);
}

static int
parse_header(const char *p, size_t n, struct spool_msg *m)
{
	const char *f[32];
	size_t fl[32];
	size_t k = fields(p, n, f, fl, 32);

	for (size_t i = 0; i < k; i++) {
		const char *eq = memchr(f[i], '=', fl[i]);
		if (eq == NULL)
			continue;
		size_t klen = (size_t)(eq - f[i]);
		const char *v = eq + 1;
		size_t vlen = fl[i] - klen - 1;
		uint64_t num = 0;
#define KEY(s) (klen == sizeof(s) - 1 && memcmp(f[i], s, klen) == 0)
		if (KEY("id")) {
			if (vlen == 0 || vlen > QUEUE_ID_LEN || memchr(v, '/', vlen) != NULL)
				return -1;
			memcpy(m->file_id, v, vlen);
			m->file_id[vlen] = '\0';
			m->named = 1;
		} else if (KEY("nonce")) {
			if (vlen != sizeof(m->nonce) - 1 || !is_hex(v, vlen))
				return -1;
			memcpy(m->nonce, v, vlen);
			m->nonce[vlen] = '\0';
		} else if (KEY("from"))
			m->mail_from = field_str(v, vlen);
		else if (KEY("envid"))
			m->envid = field_str(v, vlen);
		else if (KEY("ip"))
			m->client_ip = field_str(v, vlen);
		else if (KEY("helo"))
			m->helo = field_str(v, vlen);
		else if (KEY("auth"))
			m->auth_user = field_str(v, vlen);
		else if (KEY("session"))
			m->session = field_str(v, vlen);
		else if (KEY("reports"))
			m->reports = field_str(v, vlen);
		else if (field_num(v, vlen, &num) == 0) {
			if (KEY("ret_hdrs"))
				m->ret_hdrs = num != 0;
			else if (KEY("ret_full"))
				m->ret_full = num != 0;
			else if (KEY("body8"))
				m->body_8bit = num != 0;
			else if (KEY("utf8"))
				m->smtputf8 = num != 0;
			else if (KEY("created"))
				m->created = (int64_t)num;
			else if (KEY("notice"))
				m->is_notice = num != 0;
		}
#undef KEY
	}
	if (m->mail_from == NULL)
		return -1;
	return 0;
}

static int
parse_rcpt(const char *p, size_t n, struct spool_msg *m)
{
	const char *f[5];
	size_t fl[5];
	uint64_t notify, local;

	if (fields(p, n, f, fl, 5) != 5 || fl[0] == 0 || m->nrcpts >= SPOOL_MAX_RCPTS ||
	    field_num(f[3], fl[3], &notify) < 0 || field_num(f[4], fl[4], &local) < 0)
		return -1;
	m->rcpts = xrealloc(m->rcpts, (m->nrcpts + 1) * sizeof(*m->rcpts));
	struct spool_rcpt *rc = &m->rcpts[m->nrcpts++];
	memset(rc, 0, sizeof(*rc));
	rc->addr = field_str(f[0], fl[0]);
	rc->orig = field_str(f[1], fl[1]);
	rc->orcpt = fl[2] ? field_str(f[2], fl[2]) : NULL;
	rc->notify = (unsigned)notify;
	rc->local = local == SPOOL_EXPANDED ? SPOOL_EXPANDED : local != 0;
	return 0;
}

static int
parse_state(char type, const char *p, size_t n, struct spool_msg *m)
{
	const char *f[5];
	size_t fl[5];
	uint64_t idx, attempts = 0, next = 0;
	size_t k = fields(p, n, f, fl, 5);

	if (type == SPOOL_REC_WARNED) {
		m->delay_warned = 1;
		return 0;
	}
	if (k < 1 || field_num(f[0], fl[0], &idx) < 0 || idx >= m->nrcpts)
		return -1;
	struct spool_rcpt *rc = &m->rcpts[idx];
	const char *reason = NULL, *remote = NULL;
	size_t rlen = 0, mlen = 0;
	if (type == SPOOL_REC_DELIVERED) {
		rc->status = RCPT_DELIVERED;
		rc->notice_owed = 0;
		return 0;
	}
	if (type == SPOOL_REC_BOUNCED) {
		if (rc->status != RCPT_FAILED)
			return -1;
		rc->bounced = 1;
		return 0;
	}
	if (type == SPOOL_REC_FAILED) {
		if (k != 4 || field_num(f[1], fl[1], &attempts) < 0)
			return -1;
		reason = f[2], rlen = fl[2], remote = f[3], mlen = fl[3];
		rc->status = RCPT_FAILED;
	} else if (type == SPOOL_REC_DEFERRED || type == SPOOL_REC_NOTICE_OWED) {
		if (k != 5 || field_num(f[1], fl[1], &attempts) < 0 ||
		    field_num(f[2], fl[2], &next) < 0)
			return -1;
		reason = f[3], rlen = fl[3], remote = f[4], mlen = fl[4];
		rc->status = type == SPOOL_REC_NOTICE_OWED ? RCPT_DELIVERED : RCPT_DEFERRED;
		rc->notice_owed = type == SPOOL_REC_NOTICE_OWED;
		rc->next_try = (int64_t)next;
	} else {
		return -1;
	}
	rc->attempts = (unsigned)attempts;
	rc->bounced = 0;
	free(rc->last_error);
	free(rc->remote);
	rc->last_error = field_str(reason, rlen);
	rc->remote = mlen ? field_str(remote, mlen) : NULL;
	return 0;
}

int
spool_parse(const char *data, size_t len, struct spool_msg *m, struct buf *err)
{
	size_t off = 0;
	int version = 0, have_h = 0, have_b = 0, ended = 0;
	uint32_t seed = 0;	/* records after 'H' in format 2 */

	if (len > 0 && data[0] == '\0') {
		buf_printf(err, "a rewrite that did not finish, or a free file (never acknowledged)");
		return SPOOL_INCOMPLETE;
	}
	/*
	 * Every file we write starts with its 'V' record, put in place last
	 * (write_file()): any prefix of ours is a prefix of it. A file that
	 * starts otherwise was not cut short by a crash of ours but left by
	 * someone else; read as incomplete, the daemon would delete it.
	 */
	static const char vhead[5] = {'V', 0, 0, 0, 1};
	if (len > 0 && memcmp(data, vhead, len < sizeof(vhead) ? len : sizeof(vhead)) != 0) {
		buf_printf(err, "not a spool file (no version record)");
		return -1;
	}
	while (off < len) {
		if (len - off < 9) {
			if (ended)
				break;	/* torn state record at the tail */
			buf_printf(err, "truncated record at offset %zu", off);
			return SPOOL_INCOMPLETE;
		}
		const unsigned char *h = (const unsigned char *)data + off;
		char type = (char)h[0];
		size_t n = be32(h + 1);
		if (n > len - off - 9) {
			if (ended)
				break;
			buf_printf(err, "record at offset %zu runs past the end", off);
			return SPOOL_INCOMPLETE;
		}
		const char *p = data + off + 5;
		uint32_t crc = util_crc32(util_crc32(have_h ? seed : 0, h, 5), p, n);
		if (crc != be32((const unsigned char *)p + n)) {
			/* After the end: a torn state record, or what a reused
			 * file holds from its last message. */
			if (ended)
				break;
			buf_printf(err, "bad checksum in record '%c' at offset %zu", type, off);
			return -1;
		}
		off += n + 9;
		if (!ended) {
			switch (type) {
			case 'V':
				if (version || n != 1 || (p[0] != '1' && p[0] != '2')) {
					buf_printf(err, "unknown spool version");
					return -1;
				}
				version = p[0] - '0';
				continue;
			case 'H':
				if (!version || have_h || parse_header(p, n, m) < 0 ||
				    (version >= 2 && !m->named)) {
					buf_printf(err, "bad envelope record");
					return -1;
				}
				have_h = 1;
				if (version >= 2)
					seed = spool_seed(m->file_id);
				continue;
			case 'R':
				if (!have_h || have_b || parse_rcpt(p, n, m) < 0) {
					buf_printf(err, "bad recipient record");
					return -1;
				}
				continue;
			case 'B':
				if (!have_h || have_b) {
					buf_printf(err, "misplaced content record");
					return -1;
				}
				have_b = 1;
				m->content_off = (uint64_t)(p - data);
				m->size = n;
				continue;
			case 'E':
				if (!have_b || m->nrcpts == 0) {
					buf_printf(err, "end record before content");
					return -1;
				}
				ended = 1;
				continue;
			default:
				buf_printf(err, "unexpected record '%c' before the end", type);
				return -1;
			}
		}
		if (parse_state(type, p, n, m) < 0) {
			buf_printf(err, "bad state record '%c'", type);
			return -1;
		}
	}
	if (!ended) {
		buf_printf(err, "incomplete spool file (never acknowledged)");
		return SPOOL_INCOMPLETE;
	}
	m->end = off;
	m->seed = seed;
	return 0;
}

int
spool_load(const char *dir, const char *name, const char *id, struct spool_msg *m,
	   struct buf *content_r, struct buf *err)
{
	char path[4096];
	size_t len;

	if (xsnprintf(path, sizeof(path), "%s/%s", dir, name) < 0) {
		buf_printf(err, "queue path too long");
		return -1;
	}
	/* A FIFO would hold its reader (the daemon's start) for good, a link or
	 * a device lead out of the spool: ours are regular files. */
	struct stat st;
	if (lstat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
		buf_printf(err, "not a spool file (not a regular file)");
		return -1;
	}
	char *data = util_read_file(path, SPOOL_MAX_FILE, &len);
	if (data == NULL) {
		buf_printf(err, "read(%s) failed: %s", path, strerror(errno));
		return -1;
	}
	memset(m, 0, sizeof(*m));
	int rc = spool_parse(data, len, m, err);
	if (rc == 0 && m->seed == 0 && spool_reused_name(name)) {
		/* Format 1 kept delivered files whole under these names. */
		buf_printf(err, "a delivered message kept for reuse");
		rc = SPOOL_INCOMPLETE;
	} else if (rc == 0 && m->seed == 0 && m->named && strcmp(m->file_id, name) != 0) {
		buf_printf(err, "holds message %s, not %s: a reused file never rewritten",
			   m->file_id, name);
		rc = SPOOL_INCOMPLETE;
	}
	/* Format 2: the file says which message it holds, whatever its name. */
	snprintf(m->id, sizeof(m->id), "%s", m->seed != 0 ? m->file_id : name);
	if (strcmp(m->id, name) != 0)
		snprintf(m->file, sizeof(m->file), "%s", name);
	if (rc == 0 && id != NULL && strcmp(m->id, id) != 0) {
		buf_printf(err, "%s holds message %s now, not %s", name, m->id, id);
		rc = SPOOL_OTHER;
	}
	if (rc == 0 && content_r) {
		buf_reset(content_r);
		if (buf_append(content_r, data + m->content_off, m->size) < 0) {
			buf_printf(err, "message too large for buffer");
			rc = -1;
		}
	}
	free(data);
	if (rc < 0)
		spool_msg_free(m);
	return rc;
}

/* Whether a file that starts with the n bytes at p (n >= 0) is free:
 * empty, or marked so by its first byte 0 (also a rewrite not finished). */
static int
starts_free(const char *p, ssize_t n)
{
	return n == 0 || (n > 0 && p[0] == '\0');
}

int
spool_is_free(const char *dir, const char *name, uint64_t *size_r)
{
	char path[4096], c = 1;
	struct stat st;

	if (xsnprintf(path, sizeof(path), "%s/%s", dir, name) < 0)
		return 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0)
		return 0;
	ssize_t n = pread(fd, &c, 1, 0);
	int is_free = n >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && starts_free(&c, n);
	close(fd);
	if (is_free)
		*size_r = (uint64_t)st.st_size;
	return is_free;
}

/* Enough of a file for its 'V' and 'H' records (the envelope is small). */
#define SPOOL_HEAD_READ 16384

/* spool_holds() of the file open at fd (named name), read from its start. */
static int
holds_fd(int fd, const char *name, const char *id)
{
	char head[SPOOL_HEAD_READ];
	struct spool_msg m;
	struct buf err = BUF_INIT(0);

	ssize_t n = util_read_all(fd, head, sizeof(head));
	if (n < 0)
		return 1;
	if (starts_free(head, n))
		return -1;
	/* The envelope says which message it is; the rest need not be read. */
	int version = n > 5 && head[0] == 'V' ? head[5] - '0' : 0;
	memset(&m, 0, sizeof(m));
	spool_parse(head, (size_t)n, &m, &err);	/* a prefix: incomplete is expected */
	int holds;
	if (version == 1 && spool_reused_name(name))
		holds = -1;	/* format 1 kept delivered messages under these names */
	else if (m.named)
		holds = strcmp(m.file_id, id) == 0 ? 1 : -1;
	else if (m.mail_from != NULL)
		holds = strcmp(name, id) == 0 ? 1 : -1;	/* format 1 without id=: named by it */
	else
		holds = 1;	/* no envelope read: the caller's own read reports why */
	spool_msg_free(&m);
	buf_free(&err);
	return holds;
}

int
spool_holds(const char *dir, const char *name, const char *id)
{
	char path[4096];

	if (xsnprintf(path, sizeof(path), "%s/%s", dir, name) < 0)
		return 1;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0)
		return errno == ENOENT ? 0 : 1;
	int holds = holds_fd(fd, name, id);
	close(fd);
	return holds;
}

int
spool_delivery_lock(const char *dir, const char *name, const char *id, int wait, int *fd_r)
{
	char path[4096];

	*fd_r = -1;
	if (xsnprintf(path, sizeof(path), "%s/%s", dir, name) < 0)
		return spool_holds(dir, name, id);
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0)
		return errno == ENOENT ? 0 : spool_holds(dir, name, id);
	if (flock(fd, LOCK_SH | (wait ? 0 : LOCK_NB)) < 0) {
		int e = errno;
		close(fd);
		/* Held exclusively: `surat queue delete` removing it this moment. */
		return e == EWOULDBLOCK ? -2 : spool_holds(dir, name, id);
	}
	/*
	 * Checked under the lock, through fd (not opened again): a delete
	 * before it took the name away, which leaves fd's file without links.
	 */
	struct stat st;
	int holds = fstat(fd, &st) < 0 ? spool_holds(dir, name, id)
		    : st.st_nlink == 0 ? 0
				       : holds_fd(fd, name, id);
	if (holds == 1)
		*fd_r = fd;
	else
		close(fd);
	return holds;
}

void
spool_state_record(struct buf *recs, uint32_t seed, enum spool_rec type, size_t idx,
		   unsigned attempts, int64_t next_try, const char *text, const char *remote)
{
	struct buf p = BUF_INIT(0);

	if (type != SPOOL_REC_WARNED) {
		buf_printf(&p, "%zu", idx);
		if (type == SPOOL_REC_FAILED || type == SPOOL_REC_DEFERRED ||
		    type == SPOOL_REC_NOTICE_OWED) {
			buf_putc(&p, '\0');
			buf_printf(&p, "%u", attempts);
			if (type != SPOOL_REC_FAILED) {
				buf_putc(&p, '\0');
				buf_printf(&p, "%lld", (long long)next_try);
			}
			buf_putc(&p, '\0');
			/* NUL cannot appear inside a field. */
			for (const char *s = text ? text : ""; *s; s++)
				buf_putc(&p, *s);
			buf_putc(&p, '\0');
			buf_puts(&p, remote ? remote : "");
		}
	}
	rec_put_seeded(recs, seed, (char)type, p.data ? p.data : "", p.len);
	buf_free(&p);
}

int
spool_append_records(const char *dir, struct spool_msg *m, const struct buf *recs,
		     struct buf *err)
{
	char path[4096];
	struct iovec iov = {recs->data, recs->len};

	if (xsnprintf(path, sizeof(path), "%s/%s", dir, spool_file(m)) < 0) {
		buf_printf(err, "queue path too long");
		return -1;
	}
	int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		buf_printf(err, "open(%s) failed: %s", path, strerror(errno));
		return -1;
	}
	/* After the last valid record: over a torn one, or over what a reused
	 * file holds from its last message. */
	if (util_pwritev_all(fd, &iov, 1, (off_t)m->end) < 0 || fsbarrier_sync(fd) < 0) {
		buf_printf(err, "append(%s) failed: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	close(fd);
	m->end += recs->len;
	return 0;
}

int
spool_append_state(const char *dir, struct spool_msg *m, enum spool_rec type, size_t idx,
		   unsigned attempts, int64_t next_try, const char *text, const char *remote,
		   struct buf *err)
{
	struct buf rec = BUF_INIT(0);

	spool_state_record(&rec, m->seed, type, idx, attempts, next_try, text, remote);
	int rc = spool_append_records(dir, m, &rec, err);
	buf_free(&rec);
	return rc;
}

void
spool_msg_free(struct spool_msg *m)
{
	free(m->mail_from);
	free(m->envid);
	free(m->client_ip);
	free(m->helo);
	free(m->auth_user);
	free(m->session);
	free(m->reports);
	for (size_t i = 0; i < m->nrcpts; i++) {
		free(m->rcpts[i].addr);
		free(m->rcpts[i].orig);
		free(m->rcpts[i].orcpt);
		free(m->rcpts[i].last_error);
		free(m->rcpts[i].remote);
	}
	free(m->rcpts);
	memset(m, 0, sizeof(*m));
}

const char *
spool_status_name(enum rcpt_status s)
{
	switch (s) {
	case RCPT_PENDING:
		return "pending";
	case RCPT_DELIVERED:
		return "delivered";
	case RCPT_FAILED:
		return "failed";
	case RCPT_DEFERRED:
		return "deferred";
	}
	return "?";
}
