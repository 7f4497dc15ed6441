/*
 * pop3_server — the POP3 server session (RFC 1939) with CAPA (RFC 2449),
 * STLS (RFC 2595), AUTH PLAIN (RFC 5034) and response codes (RFC 2449,
 * RFC 3206), for listen.pop3 (plaintext, STLS) and listen.pop3s (implicit
 * TLS).
 *
 * The maildrop is the user's INBOX as it was at login. DELE only marks;
 * the marked messages are expunged at QUIT (UPDATE state) in one store
 * call naming exactly their UIDs. A session that ends any other way
 * deletes nothing. One POP3 session per account at a time ([IN-USE]);
 * IMAP sessions on the same account are not affected.
 *
 * SECURITY: the peer is untrusted. Credentials are accepted only over TLS
 * unless allow_plaintext_auth is set; password checks run on the worker
 * pool, failures answer after auth.fail_delay with [AUTH], and an address
 * locked out (auth/lockout) gets [SYS/TEMP] without a check. Lines are
 * bounded (255 octets), bad commands are counted and end the session, idle
 * sessions are closed after pop3.idle_timeout, and sessions not logged in
 * within login_timeout of the accept are closed whatever they send.
 * Passwords are never logged and are wiped after use.
 */
#ifndef SURAT_POP3_SERVER_H
#define SURAT_POP3_SERVER_H

#include "core/server.h"

/* The protocol operations for LISTEN_POP3 and LISTEN_POP3S. */
extern const struct proto_ops pop3_server_ops;

#endif
