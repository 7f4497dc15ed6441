/*
 * smtp_server — the SMTP server session (RFC 5321) for the three roles:
 * MX (listen.smtp), submission with STARTTLS (listen.submission) and
 * submission over implicit TLS (listen.submissions).
 *
 * SECURITY: the peer is untrusted. Never an open relay: without AUTH only
 * local recipients are accepted. On submission, AUTH is required and the
 * envelope sender and every From: address must belong to the user. Every
 * limit (line length, size, recipients, errors, timeouts) answers with its
 * reply code; nothing a peer sends is an assertion.
 */
#ifndef SURAT_SMTP_SERVER_H
#define SURAT_SMTP_SERVER_H

#include "core/server.h"

/* The protocol operations for the SMTP listener kinds. */
extern const struct proto_ops smtp_server_ops;

#endif
