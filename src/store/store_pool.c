/*
 * store_pool — open store handles shared by the sessions of an account.
 *
 * An IMAP session in IDLE needs its store only when something changed; a
 * handle of its own would cost it three descriptors (index.db, -wal, -shm)
 * and an SQLite page cache for hours. Sessions therefore borrow a handle for
 * the length of one command and give it back; handles not on loan wait here,
 * most recently used first, and the least recently used beyond the limit is
 * closed. The handles themselves are the list (no allocation per loan);
 * one list and one mutex: the limit is small (hundreds), so a linear
 * search costs less than the hashing it would save.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/log.h"
#include "core/util.h"
#include "store/store_private.h"

static struct {
	pthread_mutex_t lock;
	struct store *head, *tail; /* most recently returned first */
	size_t n, max;
} pool = {PTHREAD_MUTEX_INITIALIZER, NULL, NULL, 0, 128};

/* Take st out of the list (under the lock); returns it. */
static struct store *
pool_take(struct store *st)
{
	if (st->pool_prev)
		st->pool_prev->pool_next = st->pool_next;
	else
		pool.head = st->pool_next;
	if (st->pool_next)
		st->pool_next->pool_prev = st->pool_prev;
	else
		pool.tail = st->pool_prev;
	st->pool_prev = st->pool_next = NULL;
	pool.n--;
	return st;
}

/* Close idle handles beyond the limit (all of them when all), oldest first, outside the lock. */
static void
pool_shrink(bool all)
{
	for (;;) {
		struct store *st = NULL;

		pthread_mutex_lock(&pool.lock);
		if (pool.tail != NULL && (all || pool.n > pool.max))
			st = pool_take(pool.tail);
		pthread_mutex_unlock(&pool.lock);
		if (st == NULL)
			return;
		store_close(&st);
	}
}

void
store_pool_set_max(size_t max_idle)
{
	pthread_mutex_lock(&pool.lock);
	pool.max = max_idle;
	pthread_mutex_unlock(&pool.lock);
	pool_shrink(false);
}

void
store_pool_drain(void)
{
	pool_shrink(true);
}

size_t
store_pool_idle(void)
{
	pthread_mutex_lock(&pool.lock);
	size_t n = pool.n;
	pthread_mutex_unlock(&pool.lock);
	return n;
}

static void pool_return(struct store *st, bool used, bool may_close);

void
store_pool_set_cache_memory(int64_t bytes)
{
	sqlite3_soft_heap_limit64(bytes);
}

/*
 * Over the soft heap limit, SQLite (built without memory management, as
 * Debian's) only stops caches from growing: each keeps what it took, and
 * idle handles would hold theirs for good. Theirs go, least recently used
 * first, until the limit is kept (under the lock: no one uses them).
 */
static void
pool_trim_caches(void)
{
	sqlite3_int64 limit = sqlite3_soft_heap_limit64(-1);

	if (limit <= 0)
		return;
	for (struct store *e = pool.tail; e && sqlite3_memory_used() > limit; e = e->pool_prev)
		sqlite3_db_release_memory(e->db);
}

/* Whether e is a handle of data_dir's account. */
static bool
pool_of(const struct store *e, const char *data_dir, const char *account)
{
	return strcasecmp(e->account, account) == 0 && strcmp(e->data_dir, data_dir) == 0;
}

/*
 * An idle handle of the account whose directory is still the account's.
 * One moved aside since (the account deleted, maybe made anew: `surat user
 * del`) is closed when may_close, else (on the loop, which must not wait on
 * SQLite's close) marked and left at the tail for pool_shrink() or a
 * worker's store_pool_get().
 */
static struct store *
pool_find(const char *data_dir, const char *account, bool may_close)
{
	for (;;) {
		struct store *st = NULL;

		pthread_mutex_lock(&pool.lock);
		for (struct store *e = pool.head; e; e = e->pool_next)
			if (pool_of(e, data_dir, account) && (may_close || !e->moved)) {
				st = pool_take(e);
				break;
			}
		pthread_mutex_unlock(&pool.lock);
		if (st == NULL || (!st->moved && store_root_current(st)))
			return st;
		if (may_close) {
			store_close(&st);
			continue;
		}
		st->moved = 1;
		pool_return(st, false, false);
		return NULL;
	}
}

struct store *
store_pool_take(const char *data_dir, const char *account)
{
	return pool_find(data_dir, account, false);
}

/*
 * The gets run on workers: they close what the loop left over the limit
 * (store_pool_give()) before they look.
 */
struct store *
store_pool_get(const char *data_dir, const char *account, struct buf *err)
{
	pool_shrink(false);
	struct store *st = pool_find(data_dir, account, true);

	return st != NULL ? st : store_open(data_dir, account, err);
}

struct store *
store_pool_get_existing(const char *data_dir, const char *account, int *gone, struct buf *err)
{
	pool_shrink(false);
	struct store *st = pool_find(data_dir, account, true);

	*gone = 0;
	return st != NULL ? st : store_open_existing(data_dir, account, gone, err);
}

static int
store_is(const struct store *st, const struct store_id *id)
{
	return st->gen == id->gen;
}

struct store *
store_pool_get_same(const char *data_dir, const char *account, const struct store_id *id,
		    int *gone, struct buf *err)
{
	pool_shrink(false);
	struct store *st = pool_find(data_dir, account, true);

	*gone = 0;
	if (st == NULL)
		st = store_open_existing(data_dir, account, gone, err);
	if (st != NULL && !store_is(st, id)) {
		/* Another account's store, made under the same address since: back, unused. */
		pool_return(st, false, true);
		st = NULL;
		*gone = 1;
	}
	return st;
}

/*
 * Back into the list: at the head, just used; or at the tail, its place in
 * the LRU order kept. A handle that failed inside SQLite or the file system
 * is closed instead (the next use starts afresh); unless !may_close (the
 * loop's store_pool_give()), then it goes to the tail marked as moved,
 * which no loop takes and the next worker to meet it closes. So are
 * handles beyond the limit only closed when may_close.
 */
static void
pool_return(struct store *st, bool used, bool may_close)
{
	store_rollback(st);
	if (st->err == STORE_ERR_INTERNAL || st->err == STORE_ERR_NOSPACE) {
		if (may_close) {
			store_close(&st);
			return;
		}
		st->moved = 1;
		used = false;
	}
	store_clear_error(st);
	pthread_mutex_lock(&pool.lock);
	if (used)
		st->put_us = util_mono_us();
	/* Linked between prev and next, either NULL at its end of the list. */
	struct store *prev = used ? NULL : pool.tail, *next = used ? pool.head : NULL;
	st->pool_prev = prev;
	st->pool_next = next;
	*(prev ? &prev->pool_next : &pool.head) = st;
	*(next ? &next->pool_prev : &pool.tail) = st;
	pool.n++;
	pool_trim_caches();
	pthread_mutex_unlock(&pool.lock);
	if (may_close)
		pool_shrink(false);
}

static void
pool_put(struct store **stp, bool may_close)
{
	struct store *st = *stp;

	if (st == NULL)
		return;
	*stp = NULL;
	pool_return(st, true, may_close);
}

void
store_pool_put(struct store **stp)
{
	pool_put(stp, true);
}

void
store_pool_give(struct store **stp)
{
	pool_put(stp, false);
}

/* Whether e's account has a pooled handle used within the last idle_us (under the lock). */
static bool
pool_account_busy(const struct store *e, int64_t now, int64_t idle_us)
{
	for (const struct store *f = pool.head; f; f = f->pool_next)
		if (f != e && now - f->put_us < idle_us && pool_of(f, e->data_dir, e->account))
			return true;
	return false;
}

int
store_pool_index_waiting(void)
{
	int any = 0;

	pthread_mutex_lock(&pool.lock);
	for (const struct store *e = pool.head; e && !any; e = e->pool_next)
		any = e->fts_backlog && !e->moved;
	pthread_mutex_unlock(&pool.lock);
	return any;
}

int64_t
store_pool_index_idle(int64_t idle_ms, int64_t budget_ms, int (*yield)(void *arg), void *arg)
{
	int64_t done = 0, start = util_mono_us(), idle_us = idle_ms * 1000;

	for (;;) {
		struct store *st = NULL;
		int64_t now = util_mono_us();

		if (now - start > budget_ms * 1000 || (yield != NULL && yield(arg)))
			return done;
		pthread_mutex_lock(&pool.lock);
		for (struct store *e = pool.tail; e; e = e->pool_prev)
			if (e->fts_backlog && !e->moved && now - e->put_us >= idle_us &&
			    !pool_account_busy(e, now, idle_us)) {
				st = pool_take(e);
				break;
			}
		pthread_mutex_unlock(&pool.lock);
		if (st == NULL)
			return done;
		/* A chunk at a time, so that the budget bounds the work of one call. */
		int64_t n;
		do {
			n = store_fts_catch_up(st, STORE_FTS_CHUNK);
			if (n > 0)
				done += n;
		} while (n == STORE_FTS_CHUNK && util_mono_us() - start <= budget_ms * 1000 &&
			 !(yield != NULL && yield(arg)));
		if (n < 0)
			log_error("store %s: full-text index: %s", st->account, store_errstr(st));
		/* Done, or failed (the next delivery or search tries again); else more next time. */
		st->fts_backlog = n == STORE_FTS_CHUNK;
		pool_return(st, false, true);
	}
}
