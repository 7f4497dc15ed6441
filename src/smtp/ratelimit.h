/*
 * ratelimit — recipients an authenticated user may send, per account: the
 * abuse control for a stolen password (Postfix's anvil rates, Exim's
 * ratelimit). On submission every RCPT of an authenticated session asks
 * ratelimit_allow() first; an accepted message pays one token per envelope
 * recipient with ratelimit_take(), so an aborted transaction costs nothing.
 *
 * A token bucket per account: it holds at most limit tokens and refills
 * continuously, limit tokens per window_ms, so a user may send a burst of
 * limit recipients and then limit per window. Kept exactly in integers:
 * a bucket counts token-milliseconds (tokens x window_ms), refilled by limit
 * for every millisecond.
 *
 * The check comes at RCPT and the payment after DATA: in between, each
 * recipient accepted is held with ratelimit_hold() (released when its
 * transaction ends, paid or not), and the check counts what every open
 * transaction of the account holds, so sessions in parallel share one
 * bucket rather than each spending it. A payment may still take a bucket
 * into debt (down to -limit: recipients accepted while the account was not
 * held, the table being full), which the account then works off before it
 * may send again.
 *
 * A full bucket is the same as none: only accounts that sent lately are
 * held, at most max_entries of them; see ratelimit_take() for a full table.
 * The daemon keeps the table across a restart: ratelimit_each() at its
 * stop and every state_save_interval, ratelimit_restore() at its start
 * (accounts_kept_*()).
 *
 * SECURITY: keys are the account names surat resolved at AUTH, never the
 * client's words. Not thread-safe: the event loop owns the table.
 */
#ifndef SURAT_RATELIMIT_H
#define SURAT_RATELIMIT_H

#include <stddef.h>
#include <stdint.h>

struct ratelimit;

/* The table's size in the daemon: some 6 MB when full. */
#define RATELIMIT_MAX_KEYS 65536

/* A table; limit 0 turns it off (every recipient is allowed, nothing is
 * held). Free with ratelimit_free(). */
struct ratelimit *ratelimit_new(unsigned limit, int64_t window_ms, size_t max_entries);
/* Free the table and set *rp to NULL. */
void ratelimit_free(struct ratelimit **rp);
/* Whole tokens key has at now_ms (monotonic): limit when it is not held,
 * 0 or less when it owes. */
int64_t ratelimit_available(struct ratelimit *r, const char *key, int64_t now_ms);
/* 1 if key may have one more recipient, counting those its open
 * transactions hold (ratelimit_hold) and pending more accepted but not
 * held; else 0. Always 1 when off. */
int ratelimit_allow(struct ratelimit *r, const char *key, size_t pending, int64_t now_ms);
/* Hold one token of key for a recipient accepted and not yet paid for: 1 if
 * held (give it back with ratelimit_release), 0 if not (off, or the table
 * is full: count it in ratelimit_allow's pending instead). */
int ratelimit_hold(struct ratelimit *r, const char *key, int64_t now_ms);
/* Give back n tokens held for key: its transaction ended (paid or not). */
void ratelimit_release(struct ratelimit *r, const char *key, size_t n, int64_t now_ms);
/* Pay n tokens for key's accepted message. */
void ratelimit_take(struct ratelimit *r, const char *key, size_t n, int64_t now_ms);
/* Note a refusal for key: 1 if it is the first in window_ms, to be logged
 * as a warning; 0 for the ones after it, which are not worth a line. */
int ratelimit_refused(struct ratelimit *r, const char *key, int64_t now_ms);
/*
 * Call fn for each account held that has less than a full bucket at now_ms,
 * oldest first, with the whole tokens it has used (rounded up; more than
 * the limit: it owes). Saved as used, not as left, so that a limit changed
 * meanwhile applies to what was sent.
 */
void ratelimit_each(struct ratelimit *r, int64_t now_ms,
		    void (*fn)(const char *key, int64_t used, void *arg), void *arg);
/*
 * Hold key as having used tokens (ratelimit_each()) age_ms ago: it has
 * refilled since, as if it had been held all along. Clamped to what this
 * table's limit allows; nothing when off, when key is held already, or when
 * the table is full.
 */
void ratelimit_restore(struct ratelimit *r, const char *key, int64_t used, int64_t age_ms,
		       int64_t now_ms);
/* Accounts held now. */
size_t ratelimit_size(const struct ratelimit *r);
/* The limit and window, for log lines. */
unsigned ratelimit_limit(const struct ratelimit *r);
int64_t ratelimit_window_ms(const struct ratelimit *r);

#endif
