/*
 * lockout — see lockout.h.
 *
 * A keytab of keys, its age list ordered by the start of each entry's
 * window, oldest first. A window only ever starts now, so an entry whose
 * window (re)starts moves to the young end and the list stays in order:
 * expired entries are always at the old end, and dropping them costs
 * nothing per call beyond the ones dropped.
 *
 * SECURITY: the hash is seeded at random, so a client choosing its
 * addresses (a whole IPv6 /48 of /64 keys) cannot aim them at one chain.
 * Credentials are kept only as SipHash-2-4 fingerprints under a random
 * key made at start: never written anywhere, and useless to guess against
 * offline without the key, which dies with the process.
 */
#include "auth/lockout.h"
#include "core/keytab.h"
#include "core/log.h"
#include "core/util.h"

#include <stdlib.h>
#include <string.h>

struct lockout_entry {
	struct keytab_node node; /* first: a node is its entry */
	char key[UTIL_CLIENT_KEY_MAX];
	unsigned failures;
	int64_t since_ms;	     /* the window's start */
	/* the last failed credentials, not counted again (a ring) */
	uint64_t recent[LOCKOUT_RECENT];
	unsigned nrecent, next_recent;
};

struct lockout {
	unsigned max_failures;
	int64_t window_ms;
	size_t max_entries;
	struct keytab tab;
	uint64_t fp_key[2]; /* SipHash key of the credential fingerprints */
	struct util_net *exempt;
	size_t nexempt;
};

struct lockout *
lockout_new(unsigned max_failures, int64_t window_ms, size_t max_entries)
{
	struct lockout *l = xcalloc(1, sizeof(*l));

	l->max_failures = max_failures;
	l->window_ms = window_ms;
	l->max_entries = max_entries ? max_entries : 1;
	keytab_init(&l->tab, l->max_entries);
	util_random(l->fp_key, sizeof(l->fp_key));
	return l;
}

void
lockout_free(struct lockout **lp)
{
	struct lockout *l = *lp;

	if (l == NULL)
		return;
	keytab_fini(&l->tab);
	free(l->exempt);
	free(l);
	*lp = NULL;
}

int
lockout_exempt_add(struct lockout *l, const char *net)
{
	struct util_net n;

	if (util_net_parse(net, &n) < 0)
		return -1;
	l->exempt = xrealloc(l->exempt, (l->nexempt + 1) * sizeof(*l->exempt));
	l->exempt[l->nexempt++] = n;
	return 0;
}

/* A short list, read once per login: a loop is enough. */
static int
lockout_exempt(const struct lockout *l, const char *peer_ip)
{
	for (size_t i = 0; i < l->nexempt; i++)
		if (util_net_match(&l->exempt[i], peer_ip))
			return 1;
	return 0;
}

size_t
lockout_size(const struct lockout *l)
{
	return keytab_count(&l->tab);
}

/* SipHash-2-4 (Aumasson and Bernstein), fed a byte at a time: the inputs
 * are a few hundred bytes, once per login. */
struct lockout_sip {
	uint64_t v[4];
	uint64_t m;  /* bytes waiting for a full word */
	size_t len;  /* bytes fed in all */
};

#define LOCKOUT_ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))

static void
lockout_sip_round(uint64_t v[4])
{
	v[0] += v[1];
	v[1] = LOCKOUT_ROTL(v[1], 13);
	v[1] ^= v[0];
	v[0] = LOCKOUT_ROTL(v[0], 32);
	v[2] += v[3];
	v[3] = LOCKOUT_ROTL(v[3], 16);
	v[3] ^= v[2];
	v[0] += v[3];
	v[3] = LOCKOUT_ROTL(v[3], 21);
	v[3] ^= v[0];
	v[2] += v[1];
	v[1] = LOCKOUT_ROTL(v[1], 17);
	v[1] ^= v[2];
	v[2] = LOCKOUT_ROTL(v[2], 32);
}

static void
lockout_sip_word(struct lockout_sip *h, uint64_t m)
{
	h->v[3] ^= m;
	lockout_sip_round(h->v);
	lockout_sip_round(h->v);
	h->v[0] ^= m;
}

static void
lockout_sip_init(struct lockout_sip *h, const uint64_t key[2])
{
	h->v[0] = key[0] ^ 0x736f6d6570736575ull;
	h->v[1] = key[1] ^ 0x646f72616e646f6dull;
	h->v[2] = key[0] ^ 0x6c7967656e657261ull;
	h->v[3] = key[1] ^ 0x7465646279746573ull;
	h->m = 0;
	h->len = 0;
}

static void
lockout_sip_feed(struct lockout_sip *h, const void *p, size_t n)
{
	const unsigned char *b = p;

	for (size_t i = 0; i < n; i++) {
		h->m |= (uint64_t)b[i] << (8 * (h->len % 8));
		if (++h->len % 8 == 0) {
			lockout_sip_word(h, h->m);
			h->m = 0;
		}
	}
}

static uint64_t
lockout_sip_end(struct lockout_sip *h)
{
	uint64_t r;

	lockout_sip_word(h, h->m | (uint64_t)(h->len & 0xff) << 56);
	h->v[2] ^= 0xff;
	for (int i = 0; i < 4; i++)
		lockout_sip_round(h->v);
	r = h->v[0] ^ h->v[1] ^ h->v[2] ^ h->v[3];
	util_wipe(h, sizeof(*h));
	return r;
}

uint64_t
lockout_fingerprint(const struct lockout *l, const char *user, size_t ulen, const char *pass,
		    size_t plen)
{
	struct lockout_sip h;
	uint64_t r;

	lockout_sip_init(&h, l->fp_key);
	lockout_sip_feed(&h, user, ulen);
	lockout_sip_feed(&h, "", 1);
	lockout_sip_feed(&h, pass, plen);
	r = lockout_sip_end(&h);
	/* 0 means "no fingerprint" to lockout_fail(). */
	return r ? r : 1;
}

static struct lockout_entry *
lockout_find(struct lockout *l, const char *key)
{
	return (struct lockout_entry *)keytab_find(&l->tab, key);
}

/* Drop the entries whose window has passed: all at the old end. */
static void
lockout_expire(struct lockout *l, int64_t now_ms)
{
	struct lockout_entry *e;

	while ((e = (struct lockout_entry *)keytab_oldest(&l->tab)) != NULL &&
	       now_ms - e->since_ms >= l->window_ms)
		keytab_remove(&l->tab, &e->node);
}

/* Start e's window now, and move it to the young end to keep the order. */
static void
lockout_restart(struct lockout *l, struct lockout_entry *e, int64_t now_ms)
{
	e->since_ms = now_ms;
	keytab_touch(&l->tab, &e->node);
}

enum lockout_state
lockout_check(struct lockout *l, const char *key, int64_t now_ms)
{
	if (l->max_failures == 0)
		return LOCKOUT_OPEN;
	lockout_expire(l, now_ms);
	struct lockout_entry *e = lockout_find(l, key);
	return e && e->failures >= l->max_failures ? LOCKOUT_LOCKED : LOCKOUT_OPEN;
}

/*
 * Whether e has failed with credentials fp lately; if not, remember them
 * (the oldest of LOCKOUT_RECENT goes).
 */
static int
lockout_repeated(struct lockout_entry *e, uint64_t fp)
{
	if (fp == 0)
		return 0;
	for (unsigned i = 0; i < e->nrecent; i++)
		if (e->recent[i] == fp)
			return 1;
	e->recent[e->next_recent] = fp;
	e->next_recent = (e->next_recent + 1) % LOCKOUT_RECENT;
	if (e->nrecent < LOCKOUT_RECENT)
		e->nrecent++;
	return 0;
}

enum lockout_state
lockout_fail(struct lockout *l, const char *key, int64_t now_ms, uint64_t fp, unsigned *count_r)
{
	if (count_r)
		*count_r = 0;
	if (l->max_failures == 0)
		return LOCKOUT_OPEN;
	lockout_expire(l, now_ms);
	struct lockout_entry *e = lockout_find(l, key);
	if (e == NULL) {
		if (keytab_count(&l->tab) >= l->max_entries) {
			/* Full of live keys: the oldest window goes (its lock too). */
			keytab_remove(&l->tab, keytab_oldest(&l->tab));
		}
		e = xcalloc(1, sizeof(*e));
		xsnprintf(e->key, sizeof(e->key), "%s", key);
		e->since_ms = now_ms;
		keytab_insert(&l->tab, &e->node, e->key);
	}
	if (lockout_repeated(e, fp)) {
		/* The same wrong password again: a device that was not told
		 * it changed, not a guess; it must not lock out its site. */
		if (count_r)
			*count_r = e->failures;
		return e->failures >= l->max_failures ? LOCKOUT_LOCKED : LOCKOUT_OPEN;
	}
	if (count_r)
		*count_r = e->failures + 1;
	if (e->failures >= l->max_failures) {
		/* A check that began before the lock: counted, but the lock
		 * keeps its end, or parallel sessions would stretch it. */
		if (e->failures < UINT32_MAX)
			e->failures++;
		return LOCKOUT_LOCKED;
	}
	if (++e->failures < l->max_failures)
		return LOCKOUT_OPEN;
	lockout_restart(l, e, now_ms);
	return LOCKOUT_NOW_LOCKED;
}

void
lockout_each(struct lockout *l, int64_t now_ms,
	     void (*fn)(const char *key, int64_t failures, int64_t age_ms, void *arg), void *arg)
{
	lockout_expire(l, now_ms);
	for (struct keytab_node *n = keytab_oldest(&l->tab); n; n = n->younger) {
		const struct lockout_entry *e = (const struct lockout_entry *)n;
		fn(e->key, e->failures, now_ms - e->since_ms, arg);
	}
}

void
lockout_restore(struct lockout *l, const char *key, int64_t failures, int64_t age_ms,
		int64_t now_ms)
{
	if (l->max_failures == 0 || failures <= 0 || lockout_find(l, key) != NULL ||
	    keytab_count(&l->tab) >= l->max_entries || strlen(key) >= UTIL_CLIENT_KEY_MAX)
		return;
	if (age_ms < 0)
		age_ms = 0;	/* a clock set back since */
	if (age_ms >= l->window_ms)
		return;
	struct lockout_entry *e = xcalloc(1, sizeof(*e));
	xsnprintf(e->key, sizeof(e->key), "%s", key);
	e->failures = failures < UINT32_MAX ? (unsigned)failures : UINT32_MAX;
	e->since_ms = now_ms - age_ms;
	keytab_insert(&l->tab, &e->node, e->key);
}

enum lockout_state
lockout_login_check(struct lockout *l, const char *peer_ip, const char *key)
{
	if (lockout_exempt(l, peer_ip))
		return LOCKOUT_OPEN;
	return lockout_check(l, key, util_mono_ms());
}

enum lockout_state
lockout_login_failed(struct lockout *l, const char *sid, const char *peer_ip, const char *key,
		     uint64_t fp)
{
	unsigned n;

	if (lockout_exempt(l, peer_ip))
		return LOCKOUT_OPEN;
	enum lockout_state st = lockout_fail(l, key, util_mono_ms(), fp, &n);

	if (st == LOCKOUT_NOW_LOCKED) {
		int other = strcmp(key, peer_ip) != 0;
		log_msg(LL_WARN, sid,
			"auth lockout client=[%s]%s%s failures=%u window=%llds: "
			"logins from it refused for %llds",
			peer_ip, other ? " counted_as=" : "", other ? key : "", n,
			(long long)(l->window_ms / 1000), (long long)(l->window_ms / 1000));
	}
	return st;
}

int
lockout_login_settle(struct lockout *l, const char *sid, const char *peer_ip, const char *key,
		     uint64_t fp, int ok)
{
	if (!ok)
		return lockout_login_failed(l, sid, peer_ip, key, fp) == LOCKOUT_LOCKED;
	return lockout_login_check(l, peer_ip, key) != LOCKOUT_OPEN;
}
