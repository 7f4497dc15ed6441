/*
 * accounts — local domains, users and aliases in <data_dir>/accounts.db
 * (SQLite, WAL). The daemon and the CLI open it at the same time; SQLite's
 * locking and a busy timeout make that safe.
 *
 * Addresses are stored lowercased (ASCII case folding; domains in A-label
 * form) and their local parts in Unicode NFC (RFC 6530 10.1: o + U+0308 and
 * U+00F6 are one address), but for the local part of an alias target in a
 * domain not local when it was added, kept in the case given (RFC 5321
 * 2.4), though in NFC. A handle belongs to one thread at a time.
 *
 * SECURITY: every address from the CLI or a peer is validated here before it
 * reaches SQL (always through bound parameters) or a file name: a stored
 * address never holds '/', control characters, spaces or quotes.
 */
#ifndef SURAT_ACCOUNTS_H
#define SURAT_ACCOUNTS_H

#include <stddef.h>
#include <stdint.h>

struct buf;
struct accounts;

struct account_user {
	char *address;
	char *hash;
	int64_t quota;		/* bytes; -1: the configured default */
};

/* Open (creating if needed) data_dir/accounts.db; NULL + err on failure. */
struct accounts *accounts_open(const char *data_dir, struct buf *err);
void accounts_close(struct accounts **a);

/*
 * Normalise an address for storage/lookup into out (local part in NFC, then
 * checked and ASCII-lowercased; IDNA domain). 0, or -1 with a reason in err
 * (ill-formed UTF-8 among them). Allows "@domain" when catchall is set.
 */
int accounts_normalise(const char *in, int catchall, struct buf *out, struct buf *err);
/*
 * 1 if norm (as accounts_normalise() makes it) fits an SMTP path in its
 * A-label or its UTF-8 form, else 0 with err set: a user or alias whose
 * address is longer could never be named in RCPT. Checked when one is made.
 */
int accounts_address_fits(const char *norm, struct buf *err);
/* Normalise a domain name (lowercase, A-label). 0 or -1 + err. */
int accounts_normalise_domain(const char *in, struct buf *out, struct buf *err);
/*
 * The ASCII form of addr ("local@domain") for a place that must be ASCII (a
 * transaction without SMTPUTF8, a header field of an ASCII message): its
 * domain as A-labels (IDNA2008, lower case). 1 with it appended to out; 0
 * when addr is ASCII already (out untouched); -1 when it has none: its
 * local part is not ASCII (no form of it is, RFC 6530 5), or the domain is
 * no valid internationalised name.
 */
int accounts_addr_ascii(const char *addr, struct buf *out);

/* Domains. 0 or -1 + err. */
int accounts_domain_add(struct accounts *a, const char *domain, struct buf *err);
int accounts_domain_del(struct accounts *a, const char *domain, struct buf *err);
/* 1 if domain (normalised) is local, 0 if not, -1 on error. */
int accounts_domain_exists(struct accounts *a, const char *domain);
/* Calls fn for each domain; 0 or -1. */
int accounts_domain_list(struct accounts *a, void (*fn)(const char *d, void *arg), void *arg);
/* The local domain added first, into out: 1, 0 if there is none, -1 on a database error. */
int accounts_domain_first(struct accounts *a, char *out, size_t n);

/* Users. hash must be a supported crypt(3) hash. quota -1: default. */
int accounts_user_add(struct accounts *a, const char *address, const char *hash, int64_t quota,
		      struct buf *err);
/*
 * What accounts_user_add() checks but the hash: 0 if it would add address
 * now (a local domain's, no user nor alias yet), or -1 with err set as it
 * would set it. So the CLI refuses before it asks for a password.
 */
int accounts_user_check(struct accounts *a, const char *address, struct buf *err);
int accounts_user_del(struct accounts *a, const char *address, struct buf *err);
int accounts_user_passwd(struct accounts *a, const char *address, const char *hash,
			 struct buf *err);
int accounts_user_quota(struct accounts *a, const char *address, int64_t quota, struct buf *err);
/*
 * 1 found (u filled; free with accounts_user_free), 0 not found, -1 on a
 * database error (logged here: the caller answers "try again later").
 */
int accounts_user_get(struct accounts *a, const char *address, struct account_user *u);
/*
 * Whether address is still a user with this password hash: a password
 * checked on a worker against a hash read earlier is only good if nobody
 * deleted (and maybe made again) the user meanwhile. 1 yes, 0 no, -1 error.
 */
int accounts_user_same(struct accounts *a, const char *address, const char *hash);
void accounts_user_free(struct account_user *u);
int accounts_user_list(struct accounts *a, const char *domain,
		       void (*fn)(const struct account_user *u, void *arg), void *arg);

/*
 * Aliases: source is an address or "@domain" (catch-all); target any address.
 * add: -1 with err set when the mapping exists already (target in any case).
 */
int accounts_alias_add(struct accounts *a, const char *source, const char *target,
		       struct buf *err);
/*
 * What accounts_alias_add() checks before it adds: 0 if it would add the
 * mapping now, or -1 with err set as it would set it.
 */
int accounts_alias_check(struct accounts *a, const char *source, const char *target,
			 struct buf *err);
/*
 * The sources of aliases that name address (normalised) as a target,
 * appended to out ("a@x, b@y", at most 4 and then "..."): how many, or -1
 * on a database error.
 */
int accounts_aliases_naming(struct accounts *a, const char *address, struct buf *out);
/* Remove one mapping, or all of source's when target is NULL. */
int accounts_alias_del(struct accounts *a, const char *source, const char *target,
		       struct buf *err);
int accounts_alias_list(struct accounts *a, void (*fn)(const char *src, const char *dst, void *arg),
			void *arg);

/*
 * Run the lookups between these two calls in one read transaction: one
 * snapshot and one lock round for all of them instead of one per statement
 * (an RCPT makes four). Lookups only; calls may nest.
 */
void accounts_read_begin(struct accounts *a);
void accounts_read_end(struct accounts *a);

/*
 * Resolve a recipient to final addresses: local users and remote addresses,
 * following aliases (depth-limited), user+tag subaddressing and catch-alls.
 * Calls fn(address, is_local_user) for each distinct result. Returns the
 * number of results (0: no such local recipient) or -1 on error, or when
 * the expansion goes past its limits (1000 addresses met, the aliases on
 * the way included; 10 levels; logged): some members would be left out.
 */
int accounts_resolve(struct accounts *a, const char *address,
		     void (*fn)(const char *addr, int local, void *arg), void *arg);

/* 1 if address belongs to user (the user itself, its +tag forms, or an
 * alias whose expansion includes the user: every member of a list may send
 * as the list), 0 if not, -1 on error. Catch-alls give no right to send. */
int accounts_owns(struct accounts *a, const char *user, const char *address);

/*
 * State the daemon keeps over a restart, rows of (key, value, at: a
 * wall-clock time in ms) under a kind: "ratelimit" (smtp/ratelimit.h),
 * "lockout" (auth/lockout.h). At its stop, and every state_save_interval,
 * it replaces every row with the n it has (kinds[i], keys[i], ...), in one
 * transaction; at its start it reads kind's back in the order saved. 0, or
 * -1 (+ err).
 */
int accounts_kept_save(struct accounts *a, size_t n, const char *const *kinds,
		       const char *const *keys, const int64_t *values, const int64_t *ats,
		       struct buf *err);
int accounts_kept_load(struct accounts *a, const char *kind,
		       void (*fn)(const char *key, int64_t value, int64_t at, void *arg),
		       void *arg);

#endif
