/*
 * imap_session — the IMAP server (RFC 9051 IMAP4rev2, RFC 3501 IMAP4rev1)
 * for the imap (STARTTLS) and imaps (implicit TLS) listeners.
 *
 * Each connection is a session: a state machine (not authenticated,
 * authenticated, selected, logout) fed by the incremental command parser
 * (imap_parser), with a command table saying in which states each command
 * is allowed. Password checks and every store write run on the worker
 * pool; the session reads no input meanwhile, so pipelined commands are
 * answered in order.
 *
 * A selected mailbox is a snapshot (sequence number <-> UID) that the
 * session brings up to date after each command and during IDLE, from the
 * store's mod-sequences. Store changes made by this process wake IDLE
 * sessions of the same account and mailbox at once through the store's
 * notify hook, which imap_server_init() installs.
 *
 * SECURITY: every byte from the peer is untrusted. Before login the limits
 * are small (line, literal, arguments); literals are checked against the
 * limits and the quota before "+" is sent; too many bad commands end the
 * session, and so does not logging in within login_timeout of the accept,
 * whatever the client sends; passwords are only accepted over TLS unless
 * allow_plaintext_auth is set, are never logged and are wiped after use.
 * Sessions reach mail only through the store interface of the logged-in
 * account.
 */
#ifndef SURAT_IMAP_SESSION_H
#define SURAT_IMAP_SESSION_H

#include "core/server.h"

/* The protocol for LISTEN_IMAP and LISTEN_IMAPS. */
extern const struct proto_ops imap_server_ops;

/*
 * Install the store change hook that wakes IDLE sessions; call once after
 * server_new() and before server_run(). It replaces any other store notify
 * hook of the process.
 */
void imap_server_init(struct server *srv);
/* Remove the hook and free what imap_server_init() made; before server_free(). */
void imap_server_fini(void);

#endif
