/*
 * queue_self — which addresses and ports are our own SMTP listeners, for
 * outbound delivery's loop check (RFC 5321 5.1: an MX that is this host
 * ends the list, and is a loop if it was the best one).
 *
 * SECURITY: the addresses looked up come from DNS answers and address
 * literals (untrusted); they are only compared, never connected to here.
 */
#ifndef SURAT_QUEUE_SELF_H
#define SURAT_QUEUE_SELF_H

struct sockaddr;
struct strlist;

struct queue_self;

/*
 * The listeners of listen (listen.smtp's "IP:port" entries). A wildcard
 * (0.0.0.0, ::, *) stands for every interface's address and all of
 * 127.0.0.0/8, which Linux routes to lo whatever lo is given; an
 * IPv4-mapped listener address is its IPv4 one. Never NULL; the caller
 * frees it with queue_self_free().
 */
struct queue_self *queue_self_new(const struct strlist *listen);

/*
 * Nonzero if sa (sockaddr_in or sockaddr_in6; its port is not looked at)
 * on port is one of the listeners. The address is taken where the kernel
 * connects to it: an IPv4-mapped IPv6 address (::ffff:a.b.c.d, which an
 * AAAA record may hold) is the IPv4 one, and 0.0.0.0 and :: (RFC 1122
 * "this host") are 127.0.0.1 and ::1, so that neither hides a loop.
 */
int queue_self_has(const struct queue_self *qs, const struct sockaddr *sa, int port);

/* Free *qsp (NULL is fine) and set it to NULL. */
void queue_self_free(struct queue_self **qsp);

#endif
