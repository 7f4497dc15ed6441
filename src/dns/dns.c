/*
 * dns — see dns.h. The resolver glues libunbound's asynchronous mode to the
 * daemon's libevent loop and keeps a cache of parsed answers.
 *
 * Objects:
 *   struct dns_answer  a parsed, immutable, reference-counted result; shared
 *                      by the cache entry and every query it answers.
 *   struct dns_entry   one (name, type) in a tsearch(3) tree: either a lookup
 *                      in flight (PENDING, with its waiting queries) or a
 *                      cached answer (CACHED, on the LRU list). glibc's tree
 *                      is balanced, so names a peer chooses cannot degrade
 *                      it the way they could flood a fixed hash.
 *   struct dns_query   one caller's question: WAITING on an entry (with its
 *                      own timeout), READY (answer attached, queued for
 *                      delivery) or RUNNING (inside its callback).
 *
 * Every answer, cached or fresh or a timeout, reaches the caller through
 * one path: the ready queue, drained by a libevent event on the next turn
 * of the loop. So callbacks never run inside dns_query() nor inside
 * ub_process(), and a callback is free to ask or cancel again. A queue
 * and an event we own are used rather than event_base_once() because a
 * once-event cannot be withdrawn when the query is cancelled or the
 * resolver freed.
 *
 * SECURITY: the rdata in libunbound's results is untrusted; it is handed to
 * dns_rr.c whole, and one bad record turns the answer into DNS_TEMPFAIL.
 * Query names pass dns_name_normalise() before they are used as keys or
 * given to libunbound. Text from the network (why_bogus) is escaped before
 * it is logged.
 */
#include "dns/dns.h"

#include <search.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/time.h>

#include <event2/event.h>
#include <unbound.h>

#include "core/buf.h"
#include "core/log.h"
#include "core/util.h"

#define DNS_TIMEOUT_MS_DEFAULT 10000
#define DNS_CACHE_MAX_DEFAULT 10000
#define DNS_TTL_MAX_DEFAULT 3600
/* RFC 2308 §5 suggests 1-3 h; mail wants a new domain to work sooner. */
#define DNS_NEG_TTL_MAX 900
#define DNS_NEG_TTL_DEFAULT 60

#define DNS_CLASS_IN 1
#define DNS_RCODE_NXDOMAIN 3

struct dns_answer {
	int refs;
	struct dns_result res;
	char name[DNS_NAME_BUFSZ];
	char *why; /* owned text behind res.why, or NULL when res.why is static */
};

#define DNS_ANSWER(r) ((struct dns_answer *)((const char *)(r)-offsetof(struct dns_answer, res)))

/* The first member of struct dns_entry: the tree compares entries as keys. */
struct dns_key {
	uint16_t type;
	char name[DNS_NAME_BUFSZ];
};

enum dns_entry_state { DNS_ENTRY_PENDING, DNS_ENTRY_CACHED };

TAILQ_HEAD(dns_query_list, dns_query);

struct dns_entry {
	struct dns_key key;
	enum dns_entry_state state;
	struct dns *dns;
	int async_id;		       /* PENDING: libunbound's id */
	struct dns_query_list waiters; /* PENDING */
	struct dns_answer *ans;	       /* CACHED (one reference) */
	int64_t expires_ms;	       /* CACHED, monotonic */
	TAILQ_ENTRY(dns_entry) link;   /* on dns->pending or dns->lru */
};

TAILQ_HEAD(dns_entry_list, dns_entry);

enum dns_query_state { DNS_Q_WAITING, DNS_Q_READY, DNS_Q_RUNNING };

struct dns_query {
	struct dns *dns;
	enum dns_query_state state;
	dns_cb *cb;
	void *arg;
	struct dns_entry *entry;     /* WAITING */
	struct dns_answer *ans;	     /* READY, RUNNING (one reference) */
	struct event *timer;	     /* created when it first waits */
	uint64_t gen;		     /* delivery round it was queued in */
	TAILQ_ENTRY(dns_query) link; /* on entry->waiters or dns->ready */
};

struct dns {
	struct event_base *base;
	struct ub_ctx *ub;
	struct event *ev_ub;
	struct event *ev_deliver;
	struct timeval timeout;
	const struct timeval *timeout_tv; /* libevent's common timeout, or &timeout */
	void *tree;			  /* tsearch root of struct dns_entry */
	struct dns_entry_list pending;
	struct dns_entry_list lru; /* least recently used first */
	struct dns_query_list ready;
	uint64_t gen;
	int dispatching; /* inside a caller's callback */
	int broken;	 /* libunbound's pipe failed: answer TEMPFAIL at once */
	size_t cache_max;
	uint32_t ttl_max;
	struct dns_stats stats;
};

const char *
dns_status_str(enum dns_status status)
{
	switch (status) {
	case DNS_OK:
		return "ok";
	case DNS_NXDOMAIN:
		return "nxdomain";
	case DNS_NODATA:
		return "nodata";
	case DNS_TEMPFAIL:
		return "tempfail";
	case DNS_BOGUS:
		return "bogus";
	}
	return "unknown";
}

const char *
dns_type_str(enum dns_type type)
{
	switch (type) {
	case DNS_T_A:
		return "A";
	case DNS_T_PTR:
		return "PTR";
	case DNS_T_MX:
		return "MX";
	case DNS_T_TXT:
		return "TXT";
	case DNS_T_AAAA:
		return "AAAA";
	case DNS_T_TLSA:
		return "TLSA";
	}
	return "TYPE?";
}

/* Answers */

static struct dns_answer *
dns_answer_new(const struct dns_key *key, enum dns_status status)
{
	struct dns_answer *a = xcalloc(1, sizeof(*a));
	size_t n = strnlen(key->name, DNS_NAME_MAX);

	a->refs = 1;
	memcpy(a->name, key->name, n);
	a->name[n] = '\0';
	a->res.status = status;
	a->res.type = (enum dns_type)key->type;
	a->res.name = a->name;
	a->res.why = "";
	return a;
}

/* A failure answer; why must be a static string. */
static struct dns_answer *
dns_answer_fail(const struct dns_key *key, enum dns_status status, const char *why)
{
	struct dns_answer *a = dns_answer_new(key, status);

	a->res.why = why;
	return a;
}

static void
dns_answer_unref(struct dns_answer *a)
{
	if (a == NULL)
		return;
	ASSERT(a->refs > 0);
	if (--a->refs > 0)
		return;
	if (a->res.txt != NULL)
		for (size_t i = 0; i < a->res.n; i++)
			free(a->res.txt[i].data);
	if (a->res.tlsa != NULL)
		for (size_t i = 0; i < a->res.n; i++)
			free(a->res.tlsa[i].data);
	free(a->res.mx);
	free(a->res.addr);
	free(a->res.txt);
	free(a->res.tlsa);
	free(a->res.ptr);
	free(a->why);
	free(a);
}

static int
dns_mx_cmp(const void *x, const void *y)
{
	const struct dns_mx *a = x, *b = y;

	if (a->pref != b->pref)
		return a->pref < b->pref ? -1 : 1;
	return strcmp(a->host, b->host);
}

/*
 * Parse the n records of r into a; res.n counts the records parsed so far,
 * so a failure part way leaves a safe to free. Returns 0 or -1.
 */
static int
dns_answer_parse(struct dns_answer *a, const struct ub_result *r, size_t n)
{
	struct dns_result *res = &a->res;

	switch (res->type) {
	case DNS_T_MX:
		res->mx = xcalloc(n, sizeof(*res->mx));
		break;
	case DNS_T_A:
	case DNS_T_AAAA:
		res->addr = xcalloc(n, sizeof(*res->addr));
		break;
	case DNS_T_TXT:
		res->txt = xcalloc(n, sizeof(*res->txt));
		break;
	case DNS_T_TLSA:
		res->tlsa = xcalloc(n, sizeof(*res->tlsa));
		break;
	case DNS_T_PTR:
		res->ptr = xcalloc(n, sizeof(*res->ptr));
		break;
	}
	for (size_t i = 0; i < n; i++) {
		const uint8_t *rd = (const uint8_t *)r->data[i];
		size_t len;
		int rc = -1;

		if (r->len == NULL || r->len[i] < 0)
			return -1;
		len = (size_t)r->len[i];
		switch (res->type) {
		case DNS_T_MX:
			rc = dns_rr_mx(rd, len, &res->mx[i]);
			break;
		case DNS_T_A:
			rc = dns_rr_a(rd, len, &res->addr[i]);
			break;
		case DNS_T_AAAA:
			rc = dns_rr_aaaa(rd, len, &res->addr[i]);
			break;
		case DNS_T_TXT:
			rc = dns_rr_txt(rd, len, &res->txt[i]);
			break;
		case DNS_T_TLSA:
			rc = dns_rr_tlsa(rd, len, &res->tlsa[i]);
			break;
		case DNS_T_PTR:
			rc = dns_rr_ptr(rd, len, &res->ptr[i]);
			break;
		}
		if (rc < 0)
			return -1;
		res->n = i + 1;
	}
	if (res->type == DNS_T_MX) {
		qsort(res->mx, n, sizeof(*res->mx), dns_mx_cmp);
		res->null_mx = n == 1 && res->mx[0].host[0] == '\0';
	}
	return 0;
}

static uint32_t
dns_neg_ttl(const struct ub_result *r)
{
	/* libunbound gives min(SOA TTL, SOA MINIMUM) when an SOA came along. */
	if (r->ttl <= 0)
		return DNS_NEG_TTL_DEFAULT;
	return r->ttl > DNS_NEG_TTL_MAX ? DNS_NEG_TTL_MAX : (uint32_t)r->ttl;
}

static const char *
dns_rcode_str(int rcode)
{
	static const char *const names[] = {"NOERROR",	"FORMERR", "SERVFAIL",
					    "NXDOMAIN", "NOTIMP",  "REFUSED"};

	if (rcode >= 0 && (size_t)rcode < ARRAY_LEN(names))
		return names[rcode];
	return "error rcode";
}

/* Turn what libunbound returned into an answer for key. r may be NULL. */
static struct dns_answer *
dns_answer_from_ub(const struct dns *dns, const struct dns_key *key, int err,
		   const struct ub_result *r)
{
	struct dns_answer *a;
	size_t n = 0;

	if (err != 0)
		return dns_answer_fail(key, DNS_TEMPFAIL, ub_strerror(err));
	if (r == NULL)
		return dns_answer_fail(key, DNS_TEMPFAIL, "no result");
	if (r->bogus) {
		a = dns_answer_new(key, DNS_BOGUS);
		a->why = xstrdup(r->why_bogus ? r->why_bogus : "DNSSEC validation failed");
		a->res.why = a->why;
		return a;
	}
	if (r->rcode == DNS_RCODE_NXDOMAIN || (r->rcode == 0 && r->nxdomain)) {
		a = dns_answer_new(key, DNS_NXDOMAIN);
		a->res.ttl = dns_neg_ttl(r);
		a->res.secure = r->secure != 0;
		return a;
	}
	if (r->rcode != 0)
		return dns_answer_fail(key, DNS_TEMPFAIL, dns_rcode_str(r->rcode));
	if (r->havedata && r->data != NULL)
		while (r->data[n] != NULL)
			n++;
	if (n == 0) {
		a = dns_answer_new(key, DNS_NODATA);
		a->res.ttl = dns_neg_ttl(r);
		a->res.secure = r->secure != 0;
		return a;
	}
	a = dns_answer_new(key, DNS_OK);
	if (dns_answer_parse(a, r, n) < 0) {
		log_warn("dns: malformed %s record for %s", dns_type_str(a->res.type), a->name);
		dns_answer_unref(a);
		return dns_answer_fail(key, DNS_TEMPFAIL, "malformed record");
	}
	a->res.ttl = r->ttl <= 0 ? 0 : (uint32_t)r->ttl;
	if (a->res.ttl > dns->ttl_max)
		a->res.ttl = dns->ttl_max;
	a->res.secure = r->secure != 0;
	return a;
}

/* The tree of entries */

static int
dns_key_cmp(const void *x, const void *y)
{
	const struct dns_key *a = x, *b = y;

	if (a->type != b->type)
		return a->type < b->type ? -1 : 1;
	return strcmp(a->name, b->name);
}

static struct dns_entry *
dns_entry_find(struct dns *dns, const struct dns_key *key)
{
	void *node = tfind(key, &dns->tree, dns_key_cmp);

	return node ? *(struct dns_entry **)node : NULL;
}

/* A new PENDING entry for key, in the tree and on the pending list. */
static struct dns_entry *
dns_entry_new(struct dns *dns, const struct dns_key *key)
{
	struct dns_entry *e = xcalloc(1, sizeof(*e));

	e->key = *key;
	e->state = DNS_ENTRY_PENDING;
	e->dns = dns;
	TAILQ_INIT(&e->waiters);
	if (tsearch(e, &dns->tree, dns_key_cmp) == NULL)
		PANIC("tsearch: out of memory");
	TAILQ_INSERT_TAIL(&dns->pending, e, link);
	dns->stats.pending++;
	return e;
}

/* Remove e from the tree and its list and free it. No waiter may remain. */
static void
dns_entry_free(struct dns *dns, struct dns_entry *e)
{
	if (tdelete(e, &dns->tree, dns_key_cmp) == NULL)
		PANIC("dns entry %s missing from the tree", e->key.name);
	if (e->state == DNS_ENTRY_PENDING) {
		ASSERT(TAILQ_EMPTY(&e->waiters));
		TAILQ_REMOVE(&dns->pending, e, link);
		dns->stats.pending--;
	} else {
		TAILQ_REMOVE(&dns->lru, e, link);
		dns->stats.cached--;
		dns_answer_unref(e->ans);
	}
	free(e);
}

static void
dns_cache_trim(struct dns *dns)
{
	while (dns->stats.cached > dns->cache_max)
		dns_entry_free(dns, TAILQ_FIRST(&dns->lru));
}

/* Queries */

static void
dns_query_free(struct dns_query *q)
{
	if (q->timer != NULL)
		event_free(q->timer);
	free(q);
}

/* Queue q for delivery with ans, whose reference it takes over. */
static void
dns_query_enqueue(struct dns_query *q, struct dns_answer *ans)
{
	struct dns *dns = q->dns;

	q->state = DNS_Q_READY;
	q->ans = ans;
	q->gen = dns->gen;
	TAILQ_INSERT_TAIL(&dns->ready, q, link);
	/*
	 * A zero timeout rather than event_active(): timers run after the
	 * loop has polled for I/O, so a chain of callbacks each answered from
	 * the cache still lets the sockets of the daemon have their turn.
	 */
	if (!evtimer_pending(dns->ev_deliver, NULL)) {
		static const struct timeval now = {0, 0};
		evtimer_add(dns->ev_deliver, &now);
	}
}

static void dns_timeout_cb(evutil_socket_t fd, short what, void *arg);

/* Make q wait on the lookup of e, with its timeout running. */
static void
dns_query_wait(struct dns_query *q, struct dns_entry *e)
{
	struct dns *dns = q->dns;

	q->state = DNS_Q_WAITING;
	q->entry = e;
	TAILQ_INSERT_TAIL(&e->waiters, q, link);
	if (q->timer == NULL)
		q->timer = evtimer_new(dns->base, dns_timeout_cb, q);
	if (q->timer == NULL || evtimer_add(q->timer, dns->timeout_tv) < 0)
		PANIC("cannot arm a dns timer");
}

/*
 * Take a WAITING q off its entry. When nobody is left waiting, the lookup
 * is cancelled (libunbound then never calls back for it) and the entry
 * freed.
 */
static void
dns_query_detach(struct dns_query *q)
{
	struct dns *dns = q->dns;
	struct dns_entry *e = q->entry;

	TAILQ_REMOVE(&e->waiters, q, link);
	q->entry = NULL;
	evtimer_del(q->timer);
	if (TAILQ_EMPTY(&e->waiters)) {
		(void)ub_cancel(dns->ub, e->async_id);
		dns_entry_free(dns, e);
	}
}

static void
dns_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct dns_query *q = arg;
	struct dns_answer *a;

	(void)fd;
	(void)what;
	a = dns_answer_fail(&q->entry->key, DNS_TEMPFAIL, "timeout");
	q->dns->stats.timeouts++;
	log_debug("dns: %s %s timed out", dns_type_str(a->res.type), a->name);
	dns_query_detach(q);
	dns_query_enqueue(q, a);
}

/*
 * Deliver the queued answers. Queries queued while this runs (a callback
 * asking for a cached name) wait for the next round, so a callback that
 * keeps asking cannot hold the loop here.
 */
static void
dns_deliver_cb(evutil_socket_t fd, short what, void *arg)
{
	struct dns *dns = arg;
	uint64_t gen = dns->gen++;
	struct dns_query *q;

	(void)fd;
	(void)what;
	while ((q = TAILQ_FIRST(&dns->ready)) != NULL && q->gen <= gen) {
		TAILQ_REMOVE(&dns->ready, q, link);
		q->state = DNS_Q_RUNNING;
		dns->dispatching++;
		q->cb(&q->ans->res, q->arg);
		dns->dispatching--;
		dns_answer_unref(q->ans);
		dns_query_free(q);
	}
}

/* libunbound's callback, called from ub_process() on the loop thread. */
static void
dns_ub_cb(void *arg, int err, struct ub_result *r)
{
	struct dns_entry *e = arg;
	struct dns *dns = e->dns;
	struct dns_answer *a = dns_answer_from_ub(dns, &e->key, err, r);
	struct dns_query *q;

	ub_resolve_free(r);
	if (log_enabled(LL_DEBUG)) {
		char why[128];
		log_debug("dns: %s %s: %s n=%zu ttl=%u secure=%d why=\"%s\"",
			  dns_type_str(a->res.type), a->name, dns_status_str(a->res.status),
			  a->res.n, a->res.ttl, a->res.secure,
			  log_esc(why, sizeof(why), a->res.why));
	}
	while ((q = TAILQ_FIRST(&e->waiters)) != NULL) {
		TAILQ_REMOVE(&e->waiters, q, link);
		q->entry = NULL;
		evtimer_del(q->timer);
		a->refs++;
		dns_query_enqueue(q, a);
	}
	if (a->res.status != DNS_TEMPFAIL && a->res.status != DNS_BOGUS && a->res.ttl > 0 &&
	    dns->cache_max > 0) {
		TAILQ_REMOVE(&dns->pending, e, link);
		dns->stats.pending--;
		e->state = DNS_ENTRY_CACHED;
		e->ans = a;
		e->expires_ms = util_mono_ms() + (int64_t)a->res.ttl * 1000;
		TAILQ_INSERT_TAIL(&dns->lru, e, link);
		dns->stats.cached++;
		dns_cache_trim(dns);
	} else {
		dns_entry_free(dns, e);
		dns_answer_unref(a);
	}
}

static void
dns_ub_fd_cb(evutil_socket_t fd, short what, void *arg)
{
	struct dns *dns = arg;
	int rc;

	(void)fd;
	(void)what;
	rc = ub_process(dns->ub);
	if (rc != 0) {
		/*
		 * The pipe to libunbound's thread is gone: stop watching it (it
		 * would stay readable forever); what is in flight times out.
		 */
		log_error("dns: ub_process failed: %s", ub_strerror(rc));
		event_del(dns->ev_ub);
		dns->broken = 1;
	}
}

struct dns_query *
dns_query(struct dns *dns, const char *name, enum dns_type type, dns_cb *cb, void *arg)
{
	struct dns_key key;
	struct dns_entry *e;
	struct dns_query *q;
	int rc;

	if (dns_name_normalise(name, key.name) < 0)
		return NULL;
	key.type = (uint16_t)type;
	q = xcalloc(1, sizeof(*q));
	q->dns = dns;
	q->cb = cb;
	q->arg = arg;
	dns->stats.queries++;

	e = dns_entry_find(dns, &key);
	if (e != NULL && e->state == DNS_ENTRY_CACHED && util_mono_ms() >= e->expires_ms) {
		dns_entry_free(dns, e);
		e = NULL;
	}
	if (e != NULL && e->state == DNS_ENTRY_CACHED) {
		dns->stats.cache_hits++;
		TAILQ_REMOVE(&dns->lru, e, link);
		TAILQ_INSERT_TAIL(&dns->lru, e, link);
		e->ans->refs++;
		dns_query_enqueue(q, e->ans);
		return q;
	}
	if (e != NULL) {
		dns->stats.coalesced++;
		dns_query_wait(q, e);
		return q;
	}
	if (dns->broken) {
		dns_query_enqueue(q, dns_answer_fail(&key, DNS_TEMPFAIL, "resolver unavailable"));
		return q;
	}
	e = dns_entry_new(dns, &key);
	rc = ub_resolve_async(dns->ub, e->key.name, (int)type, DNS_CLASS_IN, e, dns_ub_cb,
			      &e->async_id);
	if (rc != 0) {
		log_error("dns: ub_resolve_async(%s %s) failed: %s", dns_type_str(type),
			  e->key.name, ub_strerror(rc));
		dns_entry_free(dns, e);
		dns_query_enqueue(q, dns_answer_fail(&key, DNS_TEMPFAIL, ub_strerror(rc)));
		return q;
	}
	dns->stats.lookups++;
	dns_query_wait(q, e);
	return q;
}

struct dns_query *
dns_query_mx(struct dns *dns, const char *name, dns_cb *cb, void *arg)
{
	return dns_query(dns, name, DNS_T_MX, cb, arg);
}

struct dns_query *
dns_query_a(struct dns *dns, const char *name, dns_cb *cb, void *arg)
{
	return dns_query(dns, name, DNS_T_A, cb, arg);
}

struct dns_query *
dns_query_aaaa(struct dns *dns, const char *name, dns_cb *cb, void *arg)
{
	return dns_query(dns, name, DNS_T_AAAA, cb, arg);
}

struct dns_query *
dns_query_txt(struct dns *dns, const char *name, dns_cb *cb, void *arg)
{
	return dns_query(dns, name, DNS_T_TXT, cb, arg);
}

struct dns_query *
dns_query_tlsa(struct dns *dns, const char *name, dns_cb *cb, void *arg)
{
	return dns_query(dns, name, DNS_T_TLSA, cb, arg);
}

struct dns_query *
dns_query_ptr(struct dns *dns, const char *ip, dns_cb *cb, void *arg)
{
	char rev[DNS_REVERSE_BUFSZ];

	if (dns_reverse_name(ip, rev, sizeof(rev)) < 0)
		return NULL;
	return dns_query(dns, rev, DNS_T_PTR, cb, arg);
}

void
dns_cancel(struct dns_query **qp)
{
	struct dns_query *q = *qp;

	if (q == NULL)
		return;
	*qp = NULL;
	switch (q->state) {
	case DNS_Q_WAITING:
		dns_query_detach(q);
		dns_query_free(q);
		break;
	case DNS_Q_READY:
		TAILQ_REMOVE(&q->dns->ready, q, link);
		dns_answer_unref(q->ans);
		dns_query_free(q);
		break;
	case DNS_Q_RUNNING:
		/* Its own callback: it is freed when the callback returns. */
		break;
	}
}

const struct dns_result *
dns_result_ref(const struct dns_result *res)
{
	DNS_ANSWER(res)->refs++;
	return res;
}

void
dns_result_unref(const struct dns_result **resp)
{
	if (*resp == NULL)
		return;
	dns_answer_unref(DNS_ANSWER(*resp));
	*resp = NULL;
}

void
dns_cache_clear(struct dns *dns)
{
	struct dns_entry *e;

	while ((e = TAILQ_FIRST(&dns->lru)) != NULL)
		dns_entry_free(dns, e);
}

void
dns_stats(const struct dns *dns, struct dns_stats *r)
{
	*r = dns->stats;
}

/* Setup and teardown */

static void PRINTF_LIKE(2, 3) dns_err(struct buf *err, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL)
		return;
	va_start(ap, fmt);
	(void)buf_vprintf(err, fmt, ap);
	va_end(ap);
}

static int
dns_setup_ub(struct dns *dns, const struct dns_config *cfg, struct buf *err)
{
	int rc;

	if ((rc = ub_ctx_async(dns->ub, 1)) != 0) {
		dns_err(err, "dns: cannot use a resolver thread: %s", ub_strerror(rc));
		return -1;
	}
	/* Forwarders on loopback (and a resolv.conf naming 127.0.0.1) are normal. */
	if ((rc = ub_ctx_set_option(dns->ub, "do-not-query-localhost:", "no")) != 0) {
		dns_err(err, "dns: do-not-query-localhost: %s", ub_strerror(rc));
		return -1;
	}
	/*
	 * We always forward, so let the forwarder answer for the private
	 * reverse zones (10.in-addr.arpa, ...) libunbound would otherwise
	 * deny itself: a site's resolver knows the PTRs of its LAN clients.
	 */
	if ((rc = ub_ctx_set_option(dns->ub, "unblock-lan-zones:", "yes")) != 0 ||
	    (rc = ub_ctx_set_option(dns->ub, "insecure-lan-zones:", "yes")) != 0) {
		dns_err(err, "dns: lan zones: %s", ub_strerror(rc));
		return -1;
	}
	for (size_t i = 0; i < cfg->nservers; i++) {
		const char *s = cfg->servers[i];
		if (s == NULL || *s == '\0' || (rc = ub_ctx_set_fwd(dns->ub, s)) != 0) {
			char esc[128];
			dns_err(err, "dns: bad server \"%s\": %s",
				log_esc(esc, sizeof(esc), s ? s : ""),
				s && *s ? ub_strerror(rc) : "empty");
			return -1;
		}
	}
	if (cfg->nservers == 0) {
		if ((rc = ub_ctx_resolvconf(dns->ub, NULL)) != 0) {
			dns_err(err, "dns: /etc/resolv.conf: %s", ub_strerror(rc));
			return -1;
		}
		if ((rc = ub_ctx_hosts(dns->ub, NULL)) != 0)
			log_warn("dns: /etc/hosts not used: %s", ub_strerror(rc));
	}
	if (cfg->trust_anchor_file != NULL &&
	    (rc = ub_ctx_add_ta_file(dns->ub, cfg->trust_anchor_file)) != 0) {
		dns_err(err, "dns: trust anchor %s: %s", cfg->trust_anchor_file, ub_strerror(rc));
		return -1;
	}
	/*
	 * libunbound applies its settings (and reads the trust anchor) only
	 * when the first query finalises the context, so a bad one would fail
	 * every query instead of startup. Removing local data finalises it
	 * now, without starting the resolver thread; the name has no data.
	 */
	if ((rc = ub_ctx_data_remove(dns->ub, "surat-finalise.invalid.")) != 0) {
		dns_err(err, "dns: resolver setup failed: %s%s%s", ub_strerror(rc),
			cfg->trust_anchor_file ? "; trust anchor " : "",
			cfg->trust_anchor_file ? cfg->trust_anchor_file : "");
		return -1;
	}
	return 0;
}

struct dns *
dns_new_config(struct event_base *base, const struct dns_config *cfg, struct buf *err)
{
	struct dns *dns = xcalloc(1, sizeof(*dns));
	unsigned timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : DNS_TIMEOUT_MS_DEFAULT;
	int fd;

	dns->base = base;
	TAILQ_INIT(&dns->pending);
	TAILQ_INIT(&dns->lru);
	TAILQ_INIT(&dns->ready);
	dns->cache_max = cfg->cache_max ? cfg->cache_max : DNS_CACHE_MAX_DEFAULT;
	dns->ttl_max = cfg->ttl_max ? cfg->ttl_max : DNS_TTL_MAX_DEFAULT;
	dns->timeout.tv_sec = timeout_ms / 1000;
	dns->timeout.tv_usec = (suseconds_t)(timeout_ms % 1000) * 1000;
	/* Every query waits the same time: one libevent queue instead of a heap. */
	dns->timeout_tv = event_base_init_common_timeout(base, &dns->timeout);
	if (dns->timeout_tv == NULL)
		dns->timeout_tv = &dns->timeout;

	dns->ub = ub_ctx_create();
	if (dns->ub == NULL) {
		dns_err(err, "dns: cannot create a libunbound context");
		goto fail;
	}
	if (dns_setup_ub(dns, cfg, err) < 0)
		goto fail;
	fd = ub_fd(dns->ub);
	if (fd < 0) {
		dns_err(err, "dns: libunbound has no file descriptor");
		goto fail;
	}
	dns->ev_ub = event_new(base, fd, EV_READ | EV_PERSIST, dns_ub_fd_cb, dns);
	dns->ev_deliver = evtimer_new(base, dns_deliver_cb, dns);
	if (dns->ev_ub == NULL || dns->ev_deliver == NULL || event_add(dns->ev_ub, NULL) < 0) {
		dns_err(err, "dns: cannot register libevent events");
		goto fail;
	}
	return dns;
fail:
	if (dns->ev_ub != NULL)
		event_free(dns->ev_ub);
	if (dns->ev_deliver != NULL)
		event_free(dns->ev_deliver);
	if (dns->ub != NULL)
		ub_ctx_delete(dns->ub);
	free(dns);
	return NULL;
}

struct dns *
dns_new(struct event_base *base, const char *const *servers, size_t nservers, struct buf *err)
{
	struct dns_config cfg = {.servers = servers, .nservers = nservers};

	return dns_new_config(base, &cfg, err);
}

void
dns_free(struct dns **dnsp)
{
	struct dns *dns = *dnsp;
	struct dns_entry *e;
	struct dns_query *q;

	if (dns == NULL)
		return;
	if (dns->dispatching)
		PANIC("dns_free() called from a dns callback");
	*dnsp = NULL;
	/* First: libunbound stops its thread and never calls back after this. */
	ub_ctx_delete(dns->ub);
	while ((q = TAILQ_FIRST(&dns->ready)) != NULL) {
		TAILQ_REMOVE(&dns->ready, q, link);
		dns_answer_unref(q->ans);
		dns_query_free(q);
	}
	while ((e = TAILQ_FIRST(&dns->pending)) != NULL) {
		while ((q = TAILQ_FIRST(&e->waiters)) != NULL) {
			TAILQ_REMOVE(&e->waiters, q, link);
			dns_query_free(q);
		}
		dns_entry_free(dns, e);
	}
	dns_cache_clear(dns);
	ASSERT(dns->tree == NULL);
	event_free(dns->ev_ub);
	event_free(dns->ev_deliver);
	free(dns);
}
