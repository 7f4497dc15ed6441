/*
 * dns — the asynchronous resolver of the daemon, on libunbound.
 *
 * One struct dns per event loop. Queries (MX, A, AAAA, TXT, TLSA, PTR) never
 * block: libunbound resolves in its own thread and signals a pipe that the
 * loop watches. Every callback runs on the loop thread and never inside the
 * dns_query_*() call that asked (a cached answer is delivered on a later
 * turn of the loop). Each query gets exactly one callback unless it is
 * cancelled with dns_cancel() or the resolver is freed: then it gets none.
 *
 * Answers are cached in the resolver, keyed by (name, type): positive ones
 * for their TTL (capped, 1 h by default), NXDOMAIN and NODATA for the
 * negative TTL from the SOA (capped at 15 min; 60 s when the answer had
 * none), TEMPFAIL and BOGUS never. The cache holds a bounded number of
 * answers and drops the least recently used. Concurrent queries for the
 * same (name, type) share one lookup. Each query has its own timeout after
 * which it gets DNS_TEMPFAIL, whatever libunbound is still doing.
 *
 * Forwarders are given as "addr[@port]" ("127.0.0.1@5353", "::1"); with
 * none, /etc/resolv.conf and /etc/hosts are used. DNSSEC validation is on
 * when a trust anchor file is configured; then `secure` tells a validated
 * answer (for DANE) and DNS_BOGUS a failed one.
 *
 * Not thread-safe: use a resolver only from the thread running its loop.
 *
 * SECURITY: answers come from the network. Record data is parsed by
 * dns_rr.c with every length checked, and an answer holding a record that
 * does not parse is a DNS_TEMPFAIL, never a partial list. Names and text in
 * results are untrusted (TXT bytes are exact, 8-bit and NUL included):
 * escape them before logging. Query names are checked and normalised
 * before they reach libunbound.
 */
#ifndef SURAT_DNS_H
#define SURAT_DNS_H

#include <stddef.h>
#include <stdint.h>

#include "dns/dns_rr.h"

struct buf;
struct event_base;
struct dns;
struct dns_query;

enum dns_status {
	DNS_OK,	      /* records in the result (n >= 1) */
	DNS_NXDOMAIN, /* the name does not exist: permanent */
	DNS_NODATA,   /* the name exists but has no record of this type */
	DNS_TEMPFAIL, /* SERVFAIL, timeout, network or malformed answer: try later */
	DNS_BOGUS,    /* DNSSEC validation failed: treat as a failure, never as data */
};

/*
 * A result, read-only for the callback. Exactly one of the arrays is set,
 * the one of the type asked for, with n entries; all are NULL unless
 * status is DNS_OK.
 */
struct dns_result {
	enum dns_status status;
	enum dns_type type;
	const char *name; /* the name asked (for PTR: the reverse name), canonical */
	uint32_t ttl;	  /* seconds, as cached (capped); 0 for failures */
	int secure;	  /* 1 if DNSSEC-validated (answer or proven denial);
			     always 0 without a trust anchor */
	int null_mx;	  /* 1 if the MX set is RFC 7505's single "0 ." */
	const char *why;  /* for TEMPFAIL/BOGUS a short reason for logs (untrusted
			     text for BOGUS); "" otherwise; never NULL */
	size_t n;
	struct dns_mx *mx;     /* sorted by preference, then host; ties are the SMTP
				  client's to shuffle (RFC 5321 §5.1) */
	struct dns_addr *addr; /* A or AAAA */
	struct dns_txt *txt;   /* one per TXT record, its strings concatenated */
	struct dns_tlsa *tlsa;
	struct dns_ptr *ptr;
};

/*
 * The callback. res belongs to the resolver and is valid until the
 * callback returns, unless the callback takes a reference with
 * dns_result_ref(). The callback may start new queries and cancel others;
 * it must not call dns_free().
 */
typedef void dns_cb(const struct dns_result *res, void *arg);

struct dns_config {
	const char *const *servers; /* forwarders "addr[@port]"; none: resolv.conf */
	size_t nservers;
	unsigned timeout_ms;	       /* per query; 0: 10 s */
	size_t cache_max;	       /* answers kept; 0: 10000 */
	uint32_t ttl_max;	       /* cap of positive TTLs, s; 0: 3600 */
	const char *trust_anchor_file; /* DNSSEC root anchor (e.g. /usr/share/dns/
					  root.key); NULL: no validation */
};

struct dns_stats {
	uint64_t queries;    /* queries accepted */
	uint64_t cache_hits; /* answered from the cache */
	uint64_t coalesced;  /* joined a lookup already in flight */
	uint64_t lookups;    /* lookups handed to libunbound */
	uint64_t timeouts;   /* queries answered TEMPFAIL by their timeout */
	size_t cached;	     /* answers in the cache now */
	size_t pending;	     /* lookups in flight now */
};

/*
 * A resolver on base with default settings and the given forwarders (none:
 * resolv.conf and hosts). Returns it (free with dns_free()), or NULL with
 * the reason appended to err (which may be NULL).
 */
struct dns *dns_new(struct event_base *base, const char *const *servers, size_t nservers,
		    struct buf *err);

/* As dns_new() with every setting of cfg. NULL with the reason in err. */
struct dns *dns_new_config(struct event_base *base, const struct dns_config *cfg, struct buf *err);

/*
 * Free the resolver and set *dnsp to NULL. Queries still outstanding are
 * dropped without their callbacks ever being called; their handles become
 * invalid, so forget them. Results kept with dns_result_ref() stay valid.
 * Must not be called from inside a dns callback.
 */
void dns_free(struct dns **dnsp);

/*
 * Ask for records of type for name (text; a final dot is fine). Returns a
 * handle, valid until its callback returns or the query is cancelled,
 * or NULL when name is not a valid domain name (nothing is asked and the
 * callback is never called). Failures after that, such as libunbound
 * refusing the query, arrive as DNS_TEMPFAIL through the callback.
 */
struct dns_query *dns_query(struct dns *dns, const char *name, enum dns_type type, dns_cb *cb,
			    void *arg);
/* dns_query() for one type each. */
struct dns_query *dns_query_mx(struct dns *dns, const char *name, dns_cb *cb, void *arg);
struct dns_query *dns_query_a(struct dns *dns, const char *name, dns_cb *cb, void *arg);
struct dns_query *dns_query_aaaa(struct dns *dns, const char *name, dns_cb *cb, void *arg);
struct dns_query *dns_query_txt(struct dns *dns, const char *name, dns_cb *cb, void *arg);
/* name is the full TLSA owner, e.g. "_25._tcp.mx.example.com". */
struct dns_query *dns_query_tlsa(struct dns *dns, const char *name, dns_cb *cb, void *arg);
/* ip is an IPv4 or IPv6 address in text; NULL if it is not one. */
struct dns_query *dns_query_ptr(struct dns *dns, const char *ip, dns_cb *cb, void *arg);

/*
 * Cancel *qp (NULL is fine) and set it to NULL: its callback will not be
 * called. Called from inside the query's own callback it does nothing but
 * clear *qp. Never pass a handle whose callback has already returned.
 */
void dns_cancel(struct dns_query **qp);

/*
 * Keep a result past its callback (e.g. an MX list the SMTP client walks
 * across connection attempts). Returns res with one more reference;
 * release each with dns_result_unref(), which sets *resp to NULL. Results
 * are independent of the resolver and may outlive it. Loop thread only.
 */
const struct dns_result *dns_result_ref(const struct dns_result *res);
void dns_result_unref(const struct dns_result **resp);

/* Drop every cached answer (lookups in flight are kept). */
void dns_cache_clear(struct dns *dns);

/* Copy the counters into *r. */
void dns_stats(const struct dns *dns, struct dns_stats *r);

/* "ok", "nxdomain", "nodata", "tempfail", "bogus": static strings. */
const char *dns_status_str(enum dns_status status);

/* "A", "MX", ...: a static string, "TYPE?" for others. */
const char *dns_type_str(enum dns_type type);

#endif
