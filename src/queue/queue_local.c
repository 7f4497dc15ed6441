/*
 * queue_local — see queue_local.h.
 *
 * The stored message is "Delivered-To: <account>" CRLF followed by the
 * queued content. A Delivered-To: for the same account already in the
 * header means the message has come round in a loop: it is bounced.
 *
 * SECURITY: header scanning is bounded by the header's end and by len.
 */
#include "queue/queue_local.h"
#include "core/buf.h"
#include "core/log.h"
#include "core/util.h"
#include "mime/mime_meta.h"
#include "store/store.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Nonzero if the header of content has "Delivered-To: account". */
static int
seen_delivered_to(const char *content, size_t len, const char *account)
{
	static const char key[] = "delivered-to:";
	size_t alen = strlen(account);
	size_t i = 0;

	while (i < len) {
		const char *eol = memchr(content + i, '\n', len - i);
		size_t end = eol ? (size_t)(eol - content) : len;
		size_t ll = end - i;
		if (ll == 0 || (ll == 1 && content[i] == '\r'))
			break;	/* end of header */
		if (ll > sizeof(key) - 1 && strncasecmp(content + i, key, sizeof(key) - 1) == 0) {
			const char *v = content + i + sizeof(key) - 1;
			size_t vl = ll - (sizeof(key) - 1);
			while (vl && (*v == ' ' || *v == '\t'))
				v++, vl--;
			while (vl && (v[vl - 1] == '\r' || v[vl - 1] == ' '))
				vl--;
			if (vl == alen && strncasecmp(v, account, alen) == 0)
				return 1;
		}
		i = end + 1;
	}
	return 0;
}

/*
 * Each worker thread keeps the store handles of the last few accounts it
 * delivered to: opening one costs an SQLite open, pragmas and statement
 * preparation, far more than a delivery itself. The thread's destructor
 * closes them when the pool stops.
 */
#define LOCAL_CACHE 8

struct local_cache {
	char *key[LOCAL_CACHE];		/* data_dir NUL account */
	size_t klen[LOCAL_CACHE];	/* its length: memcmp must not read past it */
	struct store *st[LOCAL_CACHE];
	unsigned next;
};

static pthread_key_t local_key;
static pthread_once_t local_once = PTHREAD_ONCE_INIT;

static void
local_cache_free(void *p)
{
	struct local_cache *c = p;
	for (unsigned i = 0; i < LOCAL_CACHE; i++) {
		free(c->key[i]);
		store_close(&c->st[i]);
	}
	free(c);
}

static void
local_key_init(void)
{
	if (pthread_key_create(&local_key, local_cache_free) != 0)
		PANIC("pthread_key_create failed");
}

/* A store handle for account, cached per thread; NULL + err. Do not close it. */
static struct store *
local_store(const char *data_dir, const char *account, struct buf *err)
{
	pthread_once(&local_once, local_key_init);
	struct local_cache *c = pthread_getspecific(local_key);
	if (c == NULL) {
		c = xcalloc(1, sizeof(*c));
		pthread_setspecific(local_key, c);
	}
	char *key = xasprintf("%s%c%s", data_dir, 0, account);
	size_t klen = strlen(data_dir) + 1 + strlen(account);
	for (unsigned i = 0; i < LOCAL_CACHE; i++) {
		if (c->key[i] && c->klen[i] == klen && memcmp(c->key[i], key, klen) == 0) {
			free(key);
			return c->st[i];
		}
	}
	struct store *st = store_open(data_dir, account, err);
	if (st == NULL) {
		free(key);
		return NULL;
	}
	unsigned slot = c->next++ % LOCAL_CACHE;
	free(c->key[slot]);
	store_close(&c->st[slot]);
	c->key[slot] = key;
	c->klen[slot] = klen;
	c->st[slot] = st;
	return st;
}

/* Forget a handle after an internal error, so the next delivery reopens. */
static void
local_store_drop(struct store *st)
{
	struct local_cache *c = pthread_getspecific(local_key);
	for (unsigned i = 0; c && i < LOCAL_CACHE; i++) {
		if (c->st[i] == st) {
			free(c->key[i]);
			c->key[i] = NULL;
			store_close(&c->st[i]);
		}
	}
}

int
local_over_quota(const char *data_dir, const char *account, int64_t quota, uint64_t size)
{
	struct buf err = BUF_INIT(0);
	uint64_t bytes = 0, msgs = 0;

	if (quota <= 0)
		return 0;
	/* Called on the loop thread: a private handle, not the workers' cache. */
	struct store *st = store_open(data_dir, account, &err);
	buf_free(&err);
	if (st == NULL)
		return -1;
	int r = store_usage(st, &bytes, &msgs) < 0 ? -1 : bytes + size > (uint64_t)quota;
	store_close(&st);
	return r;
}

enum deliver_result
local_deliver(const char *data_dir, const char *account, const char *content, size_t len,
	      const char *dedup_key, int64_t quota, int max_hops, struct buf *why)
{
	struct buf err = BUF_INIT(0), msg = BUF_INIT(0);
	enum deliver_result res = DELIVER_TEMPFAIL;
	struct store *st = NULL;

	if (seen_delivered_to(content, len, account)) {
		buf_printf(why, "5.4.6 Mail loop: already delivered to %s", account);
		return DELIVER_PERMFAIL;
	}
	st = local_store(data_dir, account, &err);
	if (st == NULL) {
		buf_printf(why, "4.3.0 Mailbox unavailable: %s", buf_str(&err));
		goto out;
	}
	buf_printf(&msg, "Delivered-To: %s\r\n", account);
	buf_append(&msg, content, len);
	if (quota > 0) {
		uint64_t bytes = 0, msgs = 0;
		if (store_usage(st, &bytes, &msgs) < 0) {
			buf_printf(why, "4.3.0 Mailbox unavailable: %s", store_errstr(st));
			goto out;
		}
		if (bytes + msg.len > (uint64_t)quota) {
			/* Over quota is temporary: the user may make room. */
			buf_printf(why, "4.2.2 Mailbox full: %s is over its quota", account);
			goto out;
		}
	}
	struct mime_meta mm;
	mime_meta_compute(msg.data, msg.len, &mm);
	uint32_t uid = 0;
	int r = store_deliver(st, "INBOX", msg.data, msg.len, &mm.meta, dedup_key, &uid);
	mime_meta_free(&mm);
	if (r < 0) {
		buf_printf(why, "4.3.0 Mailbox unavailable: %s", store_errstr(st));
		local_store_drop(st);
		goto out;
	}
	buf_printf(why, "2.0.0 Delivered to INBOX uid %u%s", uid, r == 0 ? " (earlier)" : "");
	res = DELIVER_OK;
out:
	(void)max_hops;
	buf_free(&err);
	buf_free(&msg);
	return res;
}
