/*
 * queue_remote — the outbound transport of the queue: routing and
 * connection management for remote recipients.
 *
 * The queue hands it a message and the recipients due (queue_remote_ops);
 * it groups the recipients by next hop and delivers each group in one SMTP
 * transaction (smtp_client), reading the content from the spool on a
 * worker when a connection is ready for it (and keeping it only while a
 * connection needs it), then reports every recipient with
 * queue_remote_result() and the end with queue_remote_done().
 *
 * Routing, in this order: route.DOMAIN = host[:port] for that domain;
 * relayhost = host[:port] for everything else (TLS required, AUTH PLAIN
 * with relayhost.user and the password in relayhost.password_file); else
 * the domain's MX records (RFC 5321 §5.1): by preference, random among
 * equal ones, each address of each host in turn, outbound.port. No MX
 * (NODATA) means the domain's own A/AAAA; NXDOMAIN and a null MX
 * (RFC 7505) bounce at once, and so do MX hosts that all do not exist or
 * have no address (5.4.4; any lookup failing for now defers); an MX that
 * is this host (our hostname, or an address and port of listen.smtp) ends
 * the list, and bounces as a loop (5.4.6) if it was the best one; behind
 * better hosts, unreachable or without an address, we are their backup
 * and defer (4.4.4).
 *
 * Connections are kept per destination (the domain, the relayhost or the
 * route): at most outbound.destination_limit at once, and a connection
 * that finished a transaction takes the next message for the same
 * destination (after RSET) or waits a few seconds for one before QUIT.
 *
 * SECURITY: DNS answers and peer replies are untrusted; the names used
 * come from dns_rr's canonical form and reply text is cleaned by the
 * client. The relayhost password is read once at start (before the
 * privilege drop), kept in memory only, wiped at exit, never logged.
 */
#ifndef SURAT_QUEUE_REMOTE_H
#define SURAT_QUEUE_REMOTE_H

struct server;
struct buf;
struct queue_remote;

/*
 * Create the transport for srv (which has its queue and accounts; srv->dns
 * may be set later, before the queue starts) and install it with
 * queue_set_remote(). Reads relayhost.password_file, so call it before the
 * privilege drop.
 * Returns it, or NULL with the reason in err.
 */
struct queue_remote *queue_remote_new(struct server *srv, struct buf *err);

/*
 * The smarthost password in relayhost.password_file at path (one line;
 * its line end taken off), as queue_remote_new() reads it: malloc'd (the
 * caller wipes and frees it), or NULL with the reason in err. check-config
 * reads it too, so that it refuses what serve would.
 */
char *queue_remote_password(const char *path, struct buf *err);

/*
 * Close every connection, cancel DNS queries and free; *qrp = NULL. Call
 * after the loop has stopped and before the queue and the resolver are
 * freed. Deliveries in flight are simply forgotten: their messages are
 * still in the spool and are tried again at the next start.
 */
void queue_remote_free(struct queue_remote **qrp);

#endif
