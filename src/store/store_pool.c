/*
 * store_pool — open store handles shared by the sessions of an account.
 *
 * An IMAP session in IDLE needs its store only when something changed; a
 * handle of its own would cost it three descriptors (index.db, -wal, -shm)
 * and an SQLite page cache for hours. Sessions therefore borrow a handle for
 * the length of one command and give it back; handles not on loan wait here,
 * most recently used first, and the least recently used beyond the limit is
 * closed. One list and one mutex: the limit is small (hundreds), so a linear
 * search costs less than the hashing it would save.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/util.h"
#include "store/store_private.h"

struct pool_ent {
	struct store *st;
	char *data_dir;
	struct pool_ent *prev, *next;
};

static struct {
	pthread_mutex_t lock;
	struct pool_ent *head, *tail; /* most recently returned first */
	size_t n, max;
} pool = {PTHREAD_MUTEX_INITIALIZER, NULL, NULL, 0, 128};

static void
pool_unlink(struct pool_ent *e)
{
	if (e->prev)
		e->prev->next = e->next;
	else
		pool.head = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		pool.tail = e->prev;
	pool.n--;
}

/* Take the entry out of the list and free it; returns its handle. */
static struct store *
pool_take(struct pool_ent *e)
{
	struct store *st = e->st;

	pool_unlink(e);
	free(e->data_dir);
	free(e);
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

struct store *
store_pool_take(const char *data_dir, const char *account)
{
	struct store *st = NULL;

	pthread_mutex_lock(&pool.lock);
	for (struct pool_ent *e = pool.head; e; e = e->next)
		if (strcasecmp(e->st->account, account) == 0 &&
		    strcmp(e->data_dir, data_dir) == 0) {
			st = pool_take(e);
			break;
		}
	pthread_mutex_unlock(&pool.lock);
	return st;
}

struct store *
store_pool_get(const char *data_dir, const char *account, struct buf *err)
{
	struct store *st = store_pool_take(data_dir, account);

	return st != NULL ? st : store_open(data_dir, account, err);
}

void
store_pool_put(const char *data_dir, struct store **stp)
{
	struct store *st = *stp;
	struct pool_ent *e;

	if (st == NULL)
		return;
	*stp = NULL;
	store_rollback(st);
	/* A handle that failed inside SQLite or the file system starts afresh. */
	if (st->err == STORE_ERR_INTERNAL) {
		store_close(&st);
		return;
	}
	store_clear_error(st);
	e = xcalloc(1, sizeof(*e));
	e->st = st;
	e->data_dir = xstrdup(data_dir);
	pthread_mutex_lock(&pool.lock);
	e->next = pool.head;
	if (pool.head)
		pool.head->prev = e;
	else
		pool.tail = e;
	pool.head = e;
	pool.n++;
	pthread_mutex_unlock(&pool.lock);
	pool_shrink(false);
}
