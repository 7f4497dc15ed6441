/*
 * lockout — failed logins counted per client address, shared by SMTP AUTH,
 * IMAP and POP3: past a threshold every login from the address is refused
 * without a password check (Dovecot's auth_penalty, Postfix's anvil). The
 * per-session failure limits only end a session; this is what stops a
 * client that hangs up and reconnects to guess again.
 *
 * A key (util_client_key: an IPv4 address, an IPv6 prefix) counts its
 * failures from the first one; window_ms after that first one they are all
 * forgotten. The failure that reaches max_failures locks the key, and
 * starts its window again, so a lock lasts a full window_ms whenever it
 * came. Attempts refused while locked are not counted and do not extend it.
 *
 * The table holds at most max_entries keys: expired ones are dropped as
 * calls pass by, and when it is full of live ones the oldest goes, so
 * addresses without end (an IPv6 spray) cost bounded memory.
 *
 * A failure with the same credentials as one of the key's last
 * LOCKOUT_RECENT failures is not counted again (Dovecot's auth_penalty
 * does the same): a phone retrying a stale password every few minutes is
 * one mistake, not a guess each time, and must not lock out everyone
 * behind its NAT. A guesser has to try something new each time, and is
 * counted. Credentials are held only as keyed fingerprints.
 *
 * Exempt networks (auth.lockout_exempt: a webmail on 127.0.0.1, an office
 * NAT) are never counted nor refused: lockout_login_*() match the peer's
 * own address against them, not its key.
 *
 * SECURITY: keys come from the kernel's peer address, never from the
 * client's words. Not thread-safe: the event loop owns the table, so every
 * call is made there (worker completions run on the loop).
 */
#ifndef SURAT_LOCKOUT_H
#define SURAT_LOCKOUT_H

#include <stddef.h>
#include <stdint.h>

struct lockout;

/* The table's size in the daemon: some 3 MB when full. */
#define LOCKOUT_MAX_KEYS 16384
/* Failed credentials remembered per key, not counted again. */
#define LOCKOUT_RECENT 4

enum lockout_state {
	LOCKOUT_OPEN,	    /* logins are checked as usual */
	LOCKOUT_NOW_LOCKED, /* lockout_fail(): this failure locked the key */
	LOCKOUT_LOCKED,	    /* locked before this call */
};

/* A table; max_failures 0 turns it off (every call answers LOCKOUT_OPEN).
 * Free with lockout_free(). */
struct lockout *lockout_new(unsigned max_failures, int64_t window_ms, size_t max_entries);
/* Never count nor refuse logins from net ("addr[/len]", util_net_parse()):
 * 0, or -1 if net is not one. */
int lockout_exempt_add(struct lockout *l, const char *net);
/* Free the table and set *lp to NULL. */
void lockout_free(struct lockout **lp);
/* Whether logins from key are refused at now_ms (monotonic). */
enum lockout_state lockout_check(struct lockout *l, const char *key, int64_t now_ms);
/*
 * A fingerprint of user NUL pass (a keyed 64-bit hash, the key random per
 * table), never 0: what lockout_fail() keeps instead of the password. Take
 * it on the loop before the check starts, as the worker wipes the password.
 */
uint64_t lockout_fingerprint(const struct lockout *l, const char *user, size_t ulen,
			     const char *pass, size_t plen);
/* Count a failed login (bad credentials fp, from lockout_fingerprint(); 0
 * for none) from key at now_ms; not if fp is among the key's last failed
 * ones. *count_r (may be NULL) gets the failures counted in the key's
 * window so far. */
enum lockout_state lockout_fail(struct lockout *l, const char *key, int64_t now_ms, uint64_t fp,
				unsigned *count_r);
/*
 * Call fn for each key counted at now_ms, oldest first: its failures and
 * how long ago its window started. The daemon keeps them over a restart
 * (accounts_kept_*()); not the credentials fingerprints, whose key is this
 * table's own: after a restart a repeated failure is counted once more.
 */
void lockout_each(struct lockout *l, int64_t now_ms,
		  void (*fn)(const char *key, int64_t failures, int64_t age_ms, void *arg),
		  void *arg);
/*
 * Count key as having had failures in a window that started age_ms ago
 * (lockout_each()): locked still if that reached the limit and the window
 * has not passed. Nothing when off, when key is counted already, when the
 * window has passed, or when the table is full.
 */
void lockout_restore(struct lockout *l, const char *key, int64_t failures, int64_t age_ms,
		     int64_t now_ms);
/*
 * For the protocols, at the monotonic now, for the client at peer_ip
 * (counted under key), LOCKOUT_OPEN for an exempt one: lockout_login_check()
 * whether a login may be checked at all; lockout_login_failed() counts one
 * with bad credentials fp, and logs, as session sid, the failure that locks
 * the key.
 */
enum lockout_state lockout_login_check(struct lockout *l, const char *peer_ip, const char *key);
enum lockout_state lockout_login_failed(struct lockout *l, const char *sid, const char *peer_ip,
					const char *key, uint64_t fp);
/*
 * The end of a password check that ok says passed or failed: a failure is
 * counted (even when the client has hung up meanwhile, or hanging up early
 * would spare it the count), and a check that began before the client's
 * key was locked (a parallel session) is refused now whatever its result,
 * so that it tells nothing either. Nonzero: refuse the login as locked.
 */
int lockout_login_settle(struct lockout *l, const char *sid, const char *peer_ip, const char *key,
			 uint64_t fp, int ok);
/* Keys held now (expired ones included until they are dropped). */
size_t lockout_size(const struct lockout *l);

#endif
