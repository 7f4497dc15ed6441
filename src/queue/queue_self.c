/*
 * queue_self — see queue_self.h.
 *
 * A table of address prefixes with a port: a listener on one address is
 * that address whole (/32, /128); a wildcard one adds each interface's
 * address and 127.0.0.0/8. Addresses are kept as the kernel connects to
 * them: IPv4-mapped ones as IPv4, on both sides of the comparison.
 *
 * SECURITY: see the header.
 */
#include "queue/queue_self.h"
#include "core/config.h"
#include "core/util.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

struct self_addr {
	int family;
	unsigned char addr[16];
	int bits; /* of addr that must match: a wildcard listener takes 127/8 */
	int port;
};

struct queue_self {
	struct self_addr *v;
	size_t n;
};

static const unsigned char mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* An IPv4-mapped IPv6 address in addr (of *family) made the IPv4 one. */
static void
self_unmap(int *family, unsigned char addr[16])
{
	if (*family == AF_INET6 && memcmp(addr, mapped_prefix, sizeof(mapped_prefix)) == 0) {
		*family = AF_INET;
		memmove(addr, addr + 12, 4);
	}
}

/* addr/bits (addr in network order) on port is ours. */
static void
self_add(struct queue_self *qs, int family, const void *addr, int bits, int port)
{
	unsigned char a[16] = {0};

	memcpy(a, addr, family == AF_INET6 ? 16 : 4);
	if (family == AF_INET6 && bits == 128) {
		/* A listener on ::ffff:a.b.c.d takes IPv4 a.b.c.d (dual stack). */
		self_unmap(&family, a);
		if (family == AF_INET)
			bits = 32;
	}
	qs->v = xrealloc(qs->v, (qs->n + 1) * sizeof(*qs->v));
	struct self_addr *s = &qs->v[qs->n++];
	memset(s, 0, sizeof(*s));
	s->family = family;
	memcpy(s->addr, a, family == AF_INET6 ? 16 : 4);
	s->bits = bits;
	s->port = port;
}

struct queue_self *
queue_self_new(const struct strlist *l)
{
	static const unsigned char loopback_net[4] = {127, 0, 0, 0};
	struct queue_self *qs = xcalloc(1, sizeof(*qs));

	for (size_t i = 0; i < l->n; i++) {
		char *host;
		int port;
		unsigned char a[16];
		if (config_parse_hostport(l->v[i], &host, &port, 25) < 0)
			continue;
		int wild = strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0 ||
			   strcmp(host, "*") == 0;
		if (wild) {
			struct ifaddrs *ifa, *p;
			self_add(qs, AF_INET, loopback_net, 8, port);
			if (getifaddrs(&ifa) == 0) {
				for (p = ifa; p; p = p->ifa_next) {
					if (p->ifa_addr == NULL)
						continue;
					if (p->ifa_addr->sa_family == AF_INET)
						self_add(
						    qs, AF_INET,
						    &((struct sockaddr_in *)p->ifa_addr)->sin_addr,
						    32, port);
					else if (p->ifa_addr->sa_family == AF_INET6)
						self_add(qs, AF_INET6,
							 &((struct sockaddr_in6 *)p->ifa_addr)
							      ->sin6_addr,
							 128, port);
				}
				freeifaddrs(ifa);
			}
		} else if (inet_pton(AF_INET, host, a) == 1) {
			self_add(qs, AF_INET, a, 32, port);
		} else if (inet_pton(AF_INET6, host, a) == 1) {
			self_add(qs, AF_INET6, a, 128, port);
		}
		free(host);
	}
	return qs;
}

int
queue_self_has(const struct queue_self *qs, const struct sockaddr *sa, int port)
{
	static const unsigned char any[16] = {0};
	unsigned char addr[16];
	int family = sa->sa_family;

	if (family == AF_INET6)
		memcpy(addr, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, 16);
	else if (family == AF_INET)
		memcpy(addr, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
	else
		return 0;
	self_unmap(&family, addr);
	size_t len = family == AF_INET6 ? 16 : 4;
	if (memcmp(addr, any, len) == 0) {
		if (family == AF_INET)
			addr[0] = 127;
		addr[len - 1] = 1;
	}
	for (size_t i = 0; i < qs->n; i++) {
		const struct self_addr *m = &qs->v[i];
		size_t whole = (size_t)m->bits / 8;
		unsigned rest = (unsigned)m->bits % 8;
		if (m->family != family || m->port != port || memcmp(m->addr, addr, whole) != 0)
			continue;
		if (rest == 0 || ((m->addr[whole] ^ addr[whole]) & (0xff00u >> rest) & 0xff) == 0)
			return 1;
	}
	return 0;
}

void
queue_self_free(struct queue_self **qsp)
{
	if (*qsp == NULL)
		return;
	free((*qsp)->v);
	free(*qsp);
	*qsp = NULL;
}
