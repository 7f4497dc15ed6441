/*
 * ratelimit — see ratelimit.h.
 *
 * A keytab of accounts, its age list ordered by when each entry was last
 * touched (a payment or a refusal), oldest first. The oldest is the
 * likeliest to be full again, which is the same as no entry: entries are
 * dropped from the old end while they are, as calls pass by.
 *
 * A bucket is kept as its credit at last_ms and refilled only when read, so
 * an idle account costs nothing. Bounds (RATELIMIT_LIMIT_MAX, a window under
 * 2^31 ms) keep every product below 2^53: no overflow, no rounding.
 *
 * SECURITY: the hash is seeded at random, though keys are account names
 * that passed AUTH: an attacker would need many accounts to aim at a chain.
 */
#include "smtp/ratelimit.h"
#include "core/keytab.h"
#include "core/util.h"

#include <stdlib.h>
#include <string.h>

/* Far above any sane setting (config allows 1000000); it bounds products. */
#define RATELIMIT_LIMIT_MAX (1u << 20)
#define RATELIMIT_WINDOW_MAX (((int64_t)1 << 31) - 1)

struct ratelimit_entry {
	struct keytab_node node; /* first: a node is its entry */
	int64_t credit;		 /* token-milliseconds, as of last_ms; -cap..cap */
	int64_t last_ms;
	int64_t warned_ms; /* the last refusal logged as a warning */
	int warned;
	int64_t held; /* recipients of open transactions, not paid yet (ratelimit_hold) */
	char key[];
};

struct ratelimit {
	int64_t limit;
	int64_t window_ms;
	int64_t cap; /* limit x window_ms: a full bucket */
	size_t max_entries;
	struct keytab tab;
};

struct ratelimit *
ratelimit_new(unsigned limit, int64_t window_ms, size_t max_entries)
{
	struct ratelimit *r = xcalloc(1, sizeof(*r));

	r->limit = limit < RATELIMIT_LIMIT_MAX ? limit : RATELIMIT_LIMIT_MAX;
	r->window_ms = window_ms < RATELIMIT_WINDOW_MAX ? window_ms : RATELIMIT_WINDOW_MAX;
	if (r->window_ms < 1)
		r->window_ms = 1;
	r->cap = r->limit * r->window_ms;
	r->max_entries = max_entries ? max_entries : 1;
	keytab_init(&r->tab, r->max_entries);
	return r;
}

void
ratelimit_free(struct ratelimit **rp)
{
	struct ratelimit *r = *rp;

	if (r == NULL)
		return;
	keytab_fini(&r->tab);
	free(r);
	*rp = NULL;
}

size_t
ratelimit_size(const struct ratelimit *r)
{
	return keytab_count(&r->tab);
}

unsigned
ratelimit_limit(const struct ratelimit *r)
{
	return (unsigned)r->limit;
}

int64_t
ratelimit_window_ms(const struct ratelimit *r)
{
	return r->window_ms;
}

static struct ratelimit_entry *
ratelimit_find(struct ratelimit *r, const char *key)
{
	return (struct ratelimit_entry *)keytab_find(&r->tab, key);
}

/* e's credit at now_ms, refilled since last_ms. */
static int64_t
ratelimit_credit(const struct ratelimit *r, const struct ratelimit_entry *e, int64_t now_ms)
{
	int64_t elapsed = now_ms - e->last_ms;

	if (elapsed <= 0)
		return e->credit;
	/* Two windows refill even the deepest debt: and the product stays small. */
	if (elapsed >= 2 * r->window_ms)
		return r->cap;
	int64_t c = e->credit + elapsed * r->limit;
	return c < r->cap ? c : r->cap;
}

/* Whether e is the same as no entry: full, nothing held, and no warning to remember. */
static int
ratelimit_idle(const struct ratelimit *r, const struct ratelimit_entry *e, int64_t now_ms)
{
	return e->held == 0 && ratelimit_credit(r, e, now_ms) >= r->cap &&
	       (!e->warned || now_ms - e->warned_ms >= r->window_ms);
}

/* Drop the idle entries at the old end. */
static void
ratelimit_expire(struct ratelimit *r, int64_t now_ms)
{
	struct ratelimit_entry *e;

	while ((e = (struct ratelimit_entry *)keytab_oldest(&r->tab)) != NULL &&
	       ratelimit_idle(r, e, now_ms))
		keytab_remove(&r->tab, &e->node);
}

/*
 * key's entry, made with a full bucket if there is none; NULL if the table
 * is full of accounts that are not idle. Then the new account goes untracked
 * (allowed as if its bucket were full) rather than one that has been paying
 * loses its debt: to fill the table a spammer needs RATELIMIT_MAX_KEYS
 * accounts of his own sending at once, and even then the ones held stay held.
 */
static struct ratelimit_entry *
ratelimit_get(struct ratelimit *r, const char *key, int64_t now_ms)
{
	ratelimit_expire(r, now_ms);
	struct ratelimit_entry *e = ratelimit_find(r, key);
	if (e)
		return e;
	if (keytab_count(&r->tab) >= r->max_entries)
		return NULL;
	size_t len = strlen(key);
	e = xcalloc(1, sizeof(*e) + len + 1);
	memcpy(e->key, key, len + 1);
	e->credit = r->cap;
	e->last_ms = now_ms;
	keytab_insert(&r->tab, &e->node, e->key);
	return e;
}

int64_t
ratelimit_available(struct ratelimit *r, const char *key, int64_t now_ms)
{
	ratelimit_expire(r, now_ms);
	struct ratelimit_entry *e = ratelimit_find(r, key);
	return (e ? ratelimit_credit(r, e, now_ms) : r->cap) / r->window_ms;
}

int
ratelimit_allow(struct ratelimit *r, const char *key, size_t pending, int64_t now_ms)
{
	if (r->limit == 0)
		return 1;
	int64_t have = ratelimit_available(r, key, now_ms);
	struct ratelimit_entry *e = ratelimit_find(r, key);
	if (e != NULL)
		have -= e->held;
	return have > 0 && pending < (uint64_t)have;
}

int
ratelimit_hold(struct ratelimit *r, const char *key, int64_t now_ms)
{
	if (r->limit == 0)
		return 0;
	struct ratelimit_entry *e = ratelimit_get(r, key, now_ms);
	if (e == NULL)
		return 0;
	e->held++;
	keytab_touch(&r->tab, &e->node);
	return 1;
}

void
ratelimit_release(struct ratelimit *r, const char *key, size_t n, int64_t now_ms)
{
	struct ratelimit_entry *e = ratelimit_find(r, key);

	if (e == NULL || n == 0)
		return;
	e->held = (uint64_t)e->held > n ? e->held - (int64_t)n : 0;
	keytab_touch(&r->tab, &e->node);
	ratelimit_expire(r, now_ms);
}

void
ratelimit_take(struct ratelimit *r, const char *key, size_t n, int64_t now_ms)
{
	if (r->limit == 0 || n == 0)
		return;
	struct ratelimit_entry *e = ratelimit_get(r, key, now_ms);
	if (e == NULL)
		return;
	/* More than two buckets' worth would only hit the floor below. */
	int64_t t = n < (uint64_t)(2 * r->limit) ? (int64_t)n : 2 * r->limit;
	int64_t c = ratelimit_credit(r, e, now_ms) - t * r->window_ms;
	e->credit = c > -r->cap ? c : -r->cap;
	if (now_ms > e->last_ms)
		e->last_ms = now_ms;
	keytab_touch(&r->tab, &e->node);
}

int
ratelimit_refused(struct ratelimit *r, const char *key, int64_t now_ms)
{
	struct ratelimit_entry *e = ratelimit_get(r, key, now_ms);

	/* Untracked (a full table): said each time, as that is rare itself. */
	if (e == NULL)
		return 1;
	keytab_touch(&r->tab, &e->node);
	if (e->warned && now_ms - e->warned_ms < r->window_ms)
		return 0;
	e->warned = 1;
	e->warned_ms = now_ms;
	return 1;
}

void
ratelimit_each(struct ratelimit *r, int64_t now_ms,
	       void (*fn)(const char *key, int64_t used, void *arg), void *arg)
{
	ratelimit_expire(r, now_ms);
	for (struct keytab_node *n = keytab_oldest(&r->tab); n; n = n->younger) {
		const struct ratelimit_entry *e = (const struct ratelimit_entry *)n;
		int64_t spent = r->cap - ratelimit_credit(r, e, now_ms);	/* 0..2 cap */
		if (spent > 0)	/* whole tokens, rounded up */
			fn(e->key, (spent + r->window_ms - 1) / r->window_ms, arg);
	}
}

void
ratelimit_restore(struct ratelimit *r, const char *key, int64_t used, int64_t age_ms,
		  int64_t now_ms)
{
	if (r->limit == 0 || used <= 0 || ratelimit_find(r, key) != NULL)
		return;
	if (used > 2 * r->limit)
		used = 2 * r->limit;	/* the deepest debt this limit allows */
	/* Two windows refill any bucket: a longer age says no more. */
	if (age_ms < 0)
		age_ms = 0;
	else if (age_ms > 2 * r->window_ms)
		age_ms = 2 * r->window_ms;
	struct ratelimit_entry *e = ratelimit_get(r, key, now_ms);
	if (e == NULL)
		return;
	e->credit = (r->limit - used) * r->window_ms;
	e->last_ms = now_ms - age_ms;
	if (ratelimit_credit(r, e, now_ms) >= r->cap)
		keytab_remove(&r->tab, &e->node);	/* refilled while we were down */
}
