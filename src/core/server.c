/*
 * server — see server.h.
 *
 * Accept path: evconnlistener hands us a socket; we count it against the
 * listener's cap and the per-IP cap, wrap it in a bufferevent (with TLS for
 * implicit-TLS listeners) and either give it to the protocol or, over a cap,
 * send the protocol's busy reply and close once it is flushed.
 *
 * Graceful stop: listeners are closed, every session's on_shutdown is called
 * so idle ones end now, and a timer polls until no connection and no worker
 * job remains, or until shutdown_grace has passed; then the loop exits.
 *
 * SECURITY: the caps are enforced before the protocol sees a byte; the busy
 * path reads nothing from the peer.
 */
#include "core/server.h"
#include "core/buf.h"
#include "core/log.h"
#include "core/tls.h"
#include "core/util.h"
#include "core/worker.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <netinet/tcp.h>
#include <pwd.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/thread.h>
#include <openssl/err.h>

struct listener {
	struct server *srv;
	enum listen_kind kind;
	char *addr;
	struct evconnlistener *el;
	unsigned nconns;
	struct listener *next;
};

struct ip_count {
	char ip[UTIL_CLIENT_KEY_MAX];	/* util_client_key() */
	unsigned n;
	uint64_t held[IP_HELD_N];	/* server_ip_held() */
	struct ip_count *next;
};

static int
is_implicit_tls(enum listen_kind k)
{
	return k == LISTEN_SUBMISSIONS || k == LISTEN_IMAPS || k == LISTEN_POP3S;
}

static size_t
ip_hash(const char *ip, size_t buckets)
{
	return util_hash32(0, ip, strlen(ip)) % buckets;
}

static struct ip_count **
ip_slot(struct server *srv, const char *ip)
{
	struct ip_count **pp = &srv->ipcounts[ip_hash(ip, srv->ipcount_buckets)];
	while (*pp && strcmp((*pp)->ip, ip) != 0)
		pp = &(*pp)->next;
	return pp;
}

static unsigned
ip_incr(struct server *srv, const char *ip)
{
	struct ip_count **pp = ip_slot(srv, ip);
	if (*pp == NULL) {
		*pp = xcalloc(1, sizeof(**pp));
		xsnprintf((*pp)->ip, sizeof((*pp)->ip), "%s", ip);
	}
	return ++(*pp)->n;
}

static void
ip_decr(struct server *srv, const char *ip)
{
	struct ip_count **pp = ip_slot(srv, ip);
	if (*pp == NULL)
		return;
	if (--(*pp)->n == 0) {
		struct ip_count *dead = *pp;
		*pp = dead->next;
		free(dead);
	}
}

uint64_t
server_ip_held(struct server *srv, const char *ip, enum ip_held kind, int64_t delta)
{
	struct ip_count *e = *ip_slot(srv, ip);
	if (e == NULL)
		return 0;	/* its last connection is gone */
	uint64_t *h = &e->held[kind];
	if (delta < 0 && (uint64_t)-delta > *h)
		*h = 0;
	else
		*h += (uint64_t)delta;
	return *h;
}

static void on_signal(evutil_socket_t, short, void *);

struct server *
server_new(struct config *cfg)
{
	struct server *srv = xcalloc(1, sizeof(*srv));

	evthread_use_pthreads();
	/*
	 * Every session holds a socket and, for IMAP and POP3, store files: the
	 * usual soft limit of 1024 descriptors would cap a server at a few
	 * hundred users. Take what the hard limit allows.
	 */
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			log_warn("setrlimit(RLIMIT_NOFILE) failed: %s", strerror(errno));
	}
	srv->cfg = cfg;
	srv->base = event_base_new();
	if (srv->base == NULL)
		PANIC("event_base_new failed");
	/*
	 * Caught from here on, before any port answers or "surat started" is
	 * logged: a SIGTERM during the start is a graceful stop once the loop
	 * runs, never the default action's death mid-start.
	 */
	signal(SIGPIPE, SIG_IGN);
	srv->sig_term = evsignal_new(srv->base, SIGTERM, on_signal, srv);
	srv->sig_int = evsignal_new(srv->base, SIGINT, on_signal, srv);
	srv->sig_hup = evsignal_new(srv->base, SIGHUP, on_signal, srv);
	evsignal_add(srv->sig_term, NULL);
	evsignal_add(srv->sig_int, NULL);
	evsignal_add(srv->sig_hup, NULL);
	srv->pool = worker_pool_new(srv->base, (int)cfg->workers);
	/*
	 * yescrypt is pure CPU: more threads than CPUs add no logins per second,
	 * and on the general pool a burst of logins would queue every mailbox
	 * command behind it.
	 */
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	srv->auth_pool = worker_pool_new(srv->base, ncpu < 2 ? 2 : ncpu > 64 ? 64 : (int)ncpu);
	srv->ipcount_buckets = 1024;
	srv->ipcounts = xcalloc(srv->ipcount_buckets, sizeof(*srv->ipcounts));
	srv->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	return srv;
}

void
server_register(struct server *srv, enum listen_kind kind, const struct proto_ops *ops)
{
	srv->protos[kind] = ops;
}

static void
addr_to_text(const struct sockaddr *sa, char *ip, size_t iplen, int *port)
{
	util_addr_text(sa, ip, iplen);
	if (sa->sa_family == AF_INET6)
		*port = ntohs(((const struct sockaddr_in6 *)(const void *)sa)->sin6_port);
	else if (sa->sa_family == AF_INET)
		*port = ntohs(((const struct sockaddr_in *)(const void *)sa)->sin_port);
	else
		*port = 0;
}

static void
conn_unlink(struct conn *c)
{
	struct server *srv = c->srv;

	if (c->prev)
		c->prev->next = c->next;
	else
		srv->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	srv->nconns--;
	c->l->nconns--;
	ip_decr(srv, c->ip_key);
}

/* The protocol's session ends here (once). */
static void
conn_end_session(struct conn *c)
{
	if (c->on_close) {
		void (*fn)(struct conn *) = c->on_close;
		c->on_close = NULL;
		fn(c);
	}
}

void
conn_close(struct conn *c)
{
	conn_end_session(c);
	if (c->finish_ev)
		event_free(c->finish_ev);
	if (c->handshake_ev)
		event_free(c->handshake_ev);
	if (c->bev)
		bufferevent_free(c->bev);
	log_msg(LL_DEBUG, c->id, "connection closed");
	conn_unlink(c);
	free(c);
}

/* Bytes not yet handed to the kernel: for TLS, the filter's and the socket's. */
static size_t
conn_unsent(struct conn *c)
{
	size_t n = evbuffer_get_length(bufferevent_get_output(c->bev));
	struct bufferevent *under = bufferevent_get_underlying(c->bev);
	if (under)
		n += evbuffer_get_length(bufferevent_get_output(under));
	return n;
}

static void conn_linger_or_close(struct conn *c);

static void
conn_finish_poll(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	if (util_mono_ms() >= c->finish_deadline)
		conn_close(c);
	else if (conn_unsent(c) == 0)
		conn_linger_or_close(c);
	else
		event_add(c->finish_ev, &(struct timeval){0, 10000});
}

static void
conn_finish_event(struct bufferevent *bev, short what, void *arg)
{
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT))
		conn_close(arg);
}

static void
conn_linger_read(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	size_t n = evbuffer_get_length(in);

	evbuffer_drain(in, n);
	c->linger_left = n >= c->linger_left ? 0 : c->linger_left - n;
	if (c->linger_left == 0)
		conn_close(c);
}

static void
conn_linger_expire(evutil_socket_t fd, short what, void *arg)
{
	conn_close(arg);
}

/*
 * Everything is sent: close. But the client may still be sending (it
 * pipelined past the command that ended the session, or had not yet read the
 * error that did). Input arriving at a closed socket makes the kernel answer
 * with RST; the client's next write then fails with EPIPE before it reads our
 * last reply, and some stacks drop that reply from the receive queue
 * outright. So half-close instead: the protocol's session ends now, the
 * client sees EOF, and what it still sends is discarded until its own EOF,
 * LINGER_MAX bytes or LINGER_SECS. A client that read our reply and closed
 * costs one more readiness event. The lingering socket still counts against
 * the caps (it holds a descriptor: a client that ends sessions and keeps the
 * sockets open must not get more than the caps allow). Over TLS the FIN
 * follows our close_notify (conn_finish_write()), and what the client still
 * sends is read through the TLS layer and discarded the same way. Not for a
 * client over a cap, which has had no session, nor while the daemon stops.
 * Nor after the client's own QUIT or LOGOUT (no_linger too): nothing may
 * follow those (RFC 2920 3.1; RFC 5321 4.1.1.10, RFC 1939 4 and 6, RFC 9051
 * 6.1.3), and closing at once spares every session that ends normally a
 * shutdown(2), a readiness event and a read. (A client that sends more all
 * the same may be reset; it has had its reply to everything before the QUIT.)
 */
#define LINGER_SECS 2
#define LINGER_MAX (256 * 1024)

static void
conn_linger_or_close(struct conn *c)
{
	evutil_socket_t fd = bufferevent_getfd(c->bev);

	if (c->no_linger || c->srv->stopping || fd < 0 || shutdown(fd, SHUT_WR) == -1) {
		conn_close(c);
		return;
	}
	conn_end_session(c);
	c->linger_left = LINGER_MAX;
	/*
	 * Its end, whatever comes: over TLS a client can keep the socket readable
	 * without ever completing a record, which no read callback would see.
	 */
	if (c->finish_ev != NULL)
		event_free(c->finish_ev);
	c->finish_ev = evtimer_new(c->srv->base, conn_linger_expire, c);
	event_add(c->finish_ev, &(struct timeval){LINGER_SECS, 0});
	bufferevent_setcb(c->bev, conn_linger_read, NULL, conn_finish_event, c);
	bufferevent_disable(c->bev, EV_WRITE);
	/* What is already in: discarded from the loop, not from here... */
	bufferevent_trigger(c->bev, EV_READ, BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
	/* ...and this last: a TLS filter reads at once, and its callbacks may
	 * close (free) c before it returns. */
	bufferevent_enable(c->bev, EV_READ);
}

static void
conn_finish_write(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;

	if (evbuffer_get_length(bufferevent_get_output(bev)) != 0)
		return;
	/*
	 * The last reply is handed to TLS: close the TLS stream with close_notify
	 * before the TCP one (RFC 8446 6.1), so that the client reads a clean end,
	 * not a truncation. The alert goes out after the reply, like it.
	 */
	if (c->ssl != NULL && !(SSL_get_shutdown(c->ssl) & SSL_SENT_SHUTDOWN)) {
		/* Not written (a socket full of replies the client does not read;
		 * OpenSSL would keep the rest): no FIN behind a torn record. */
		if (SSL_is_init_finished(c->ssl) && SSL_shutdown(c->ssl) < 0)
			c->no_linger = 1;
		ERR_clear_error();
	}
	if (conn_unsent(c) == 0) {
		conn_linger_or_close(c);
		return;
	}
	/*
	 * A TLS filter has passed its last record to the socket bufferevent
	 * below, which sends it on its own without telling us: poll briefly
	 * rather than cut the last reply off.
	 */
	if (c->finish_ev == NULL) {
		c->finish_ev = evtimer_new(c->srv->base, conn_finish_poll, c);
		c->finish_deadline = util_mono_ms() + 30000;
		event_add(c->finish_ev, &(struct timeval){0, 10000});
	}
}

void
conn_finish(struct conn *c)
{
	c->closing = 1;
	/*
	 * Only close_notify follows what is queued now: the socket under a
	 * STARTTLS filter may take it all (conn_starttls() bounds it), so that
	 * the alert is never left half-written at the bound.
	 */
	struct bufferevent *under = bufferevent_get_underlying(c->bev);
	if (under != NULL)
		bufferevent_setwatermark(under, EV_WRITE, 0, 0);
	bufferevent_setcb(c->bev, NULL, conn_finish_write, conn_finish_event, c);
	if (c->ssl != NULL || conn_unsent(c) != 0) {
		/* Something to send yet: wait for the socket to take it. */
		bufferevent_disable(c->bev, EV_READ);
		bufferevent_set_timeouts(c->bev, NULL, &(struct timeval){30, 0});
		bufferevent_enable(c->bev, EV_WRITE);
	}
	/* (All sent already, the usual plaintext case: the deferred callback
	 * below lingers or closes at once; the socket's events are left as they
	 * are.) */
	/*
	 * Never close from here: the caller is usually a protocol still inside
	 * its read loop, holding its session. A deferred write callback closes
	 * (or lingers) once the output is empty (and is cancelled if the
	 * bufferevent goes first).
	 */
	bufferevent_trigger(c->bev, EV_WRITE, BEV_TRIG_IGNORE_WATERMARKS | BEV_OPT_DEFER_CALLBACKS);
}

static void
conn_handshake_check(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;

	event_free(c->handshake_ev);
	c->handshake_ev = NULL;
	if (!SSL_is_init_finished(c->ssl)) {
		log_msg(LL_INFO, c->id, "TLS handshake not done in %llds: closing",
			(long long)c->srv->cfg->tls_handshake_timeout);
		conn_close(c);
	}
}

/*
 * The TLS handshake must be over within tls.handshake_timeout: until it is,
 * no protocol timeout runs (on an implicit-TLS socket OpenSSL waits for the
 * client's hello as long as the client likes), and a client that connects
 * and says nothing would hold its slot for good.
 */
static void
conn_handshake_deadline(struct conn *c)
{
	c->handshake_ev = evtimer_new(c->srv->base, conn_handshake_check, c);
	event_add(c->handshake_ev, &(struct timeval){c->srv->cfg->tls_handshake_timeout, 0});
}

/* What the socket bufferevent under a STARTTLS filter may hold (conn_starttls). */
#define CONN_TLS_UNDER_MAX (64 * 1024)

int
conn_starttls(struct conn *c, SSL *ssl)
{
	/* Anything the client pipelined after STARTTLS is discarded, never
	 * interpreted after the handshake (CVE-2011-0411). */
	struct evbuffer *in = bufferevent_get_input(c->bev);
	evbuffer_drain(in, evbuffer_get_length(in));
	struct bufferevent *tb = bufferevent_openssl_filter_new(
		c->srv->base, c->bev, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
	if (tb == NULL) {
		SSL_free(ssl);
		return -1;
	}
	bufferevent_openssl_set_allow_dirty_shutdown(tb, 1);
	/*
	 * The filter hands the socket bufferevent below it all it may take:
	 * unbounded, every reply would leave the filter's output at once, where
	 * the protocols look for a backlog of replies to stop reading from a
	 * client that pipelines without reading, which would then grow without
	 * end below. Bounded, the rest waits in the filter, whose write callback
	 * comes as the socket takes it. (The low mark set on the plaintext
	 * bufferevent for the protocol goes: below, the filter is its only user.)
	 */
	bufferevent_setwatermark(c->bev, EV_WRITE, 0, CONN_TLS_UNDER_MAX);
	c->bev = tb;
	c->ssl = ssl;
	c->tls = 1;
	conn_handshake_deadline(c);
	return 0;
}

#define CONN_EV_READ 4096

void
conn_read_more(struct conn *c, size_t max)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);
	evutil_socket_t fd = bufferevent_getfd(c->bev);
	size_t have = evbuffer_get_length(in);
	char chunk[16384];	/* on the stack: a reserved 64 KB chunk would be an mmap */

	/* Less than libevent 2.1's one read (EVBUFFER_MAX_READ): the socket was drained. */
	if (have < CONN_EV_READ || c->tls || fd < 0 ||
	    !(bufferevent_get_enabled(c->bev) & EV_READ))
		return;
	/* The bufferevent keeps its input's end frozen but while it reads; so do we. */
	evbuffer_unfreeze(in, 0);
	while (have < max) {
		size_t want = max - have < sizeof(chunk) ? max - have : sizeof(chunk);
		ssize_t n = recv(fd, chunk, want, MSG_DONTWAIT);
		if (n <= 0)
			break;	/* EOF and errors: the bufferevent sees them next */
		/* Out of memory only, as for xmalloc(); the bytes left the socket. */
		if (evbuffer_add(in, chunk, (size_t)n) < 0)
			PANIC("evbuffer_add: out of memory");
		have += (size_t)n;
		if ((size_t)n < want)
			break;	/* drained */
	}
	evbuffer_freeze(in, 0);
}

static void
on_accept(struct evconnlistener *el, evutil_socket_t fd, struct sockaddr *sa, int salen,
	  void *arg)
{
	struct listener *l = arg;
	struct server *srv = l->srv;
	const struct proto_ops *ops = srv->protos[l->kind];
	struct conn *c = xcalloc(1, sizeof(*c));
	util_random_hex(c->id, 8);
	c->kind = l->kind;
	c->srv = srv;
	c->l = l;
	c->started_ms = util_now_ms();
	addr_to_text(sa, c->peer_ip, sizeof(c->peer_ip), &c->peer_port);
	util_client_key(sa, (unsigned)srv->cfg->max_connections_ipv6_prefix, c->ip_key,
			sizeof(c->ip_key));
	/* TCP_NODELAY comes from the listening socket. */

	c->next = srv->conns;
	if (srv->conns)
		srv->conns->prev = c;
	srv->conns = c;
	srv->nconns++;
	l->nconns++;
	unsigned per_ip = ip_incr(srv, c->ip_key);

	if (is_implicit_tls(l->kind)) {
		c->ssl = tls_server_ssl();
		c->bev = bufferevent_openssl_socket_new(srv->base, fd, c->ssl,
							BUFFEREVENT_SSL_ACCEPTING,
							BEV_OPT_CLOSE_ON_FREE);
		c->tls = 1;
		if (c->bev) {
			bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
			conn_handshake_deadline(c);
		}
	} else {
		c->bev = bufferevent_socket_new(srv->base, fd, BEV_OPT_CLOSE_ON_FREE);
	}
	if (c->bev == NULL) {
		log_error("cannot set up connection from %s on %s", c->peer_ip, l->addr);
		evutil_closesocket(fd);
		conn_close(c);
		return;
	}
	if (l->nconns > (unsigned)srv->cfg->max_connections ||
	    per_ip > (unsigned)srv->cfg->max_connections_per_ip) {
		log_msg(LL_WARN, c->id,
			"too many connections: listener=%s client=%s listener_conns=%u ip_conns=%u%s%s",
			l->addr, c->peer_ip, l->nconns, per_ip,
			strcmp(c->ip_key, c->peer_ip) != 0 ? " counted_as=" : "",
			strcmp(c->ip_key, c->peer_ip) != 0 ? c->ip_key : "");
		bufferevent_write(c->bev, ops->busy_reply, strlen(ops->busy_reply));
		c->no_linger = 1; /* shed the load at once */
		conn_finish(c);
		return;
	}
	log_msg(LL_DEBUG, c->id, "connect proto=%s client=%s:%d listener=%s", ops->name, c->peer_ip,
		c->peer_port, l->addr);
	ops->start(c);
}

static void
listener_resume(evutil_socket_t fd, short what, void *arg)
{
	struct listener *l = arg;
	if (l->srv->reserve_fd < 0)
		l->srv->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (l->el)
		evconnlistener_enable(l->el);
}

/*
 * Out of descriptors: rather than leave the client waiting un-greeted, give
 * up the spare descriptor for a moment, accept, send the busy reply, close.
 * Returns 1 if a client was refused so. Logged at most once a second.
 */
static int
refuse_out_of_fds(struct listener *l)
{
	struct server *srv = l->srv;
	const char *reply = srv->protos[l->kind]->busy_reply;
	int fd;

	if (srv->reserve_fd < 0)
		return 0;
	close(srv->reserve_fd);
	fd = accept4(evconnlistener_get_fd(l->el), NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd >= 0) {
		/* An implicit-TLS client cannot read plain text: it sees the close only. */
		if (!is_implicit_tls(l->kind))
			(void)send(fd, reply, strlen(reply), MSG_NOSIGNAL | MSG_DONTWAIT);
		close(fd);
		srv->emfile_refused++;
	}
	srv->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	int64_t now = util_now_ms();
	if (srv->emfile_refused > 0 && now - srv->emfile_logged_ms >= 1000) {
		log_warn("out of file descriptors: %u connection(s) on %s refused with the busy "
			 "reply (raise the open-files limit)",
			 srv->emfile_refused, l->addr);
		srv->emfile_logged_ms = now;
		srv->emfile_refused = 0;
	}
	return fd >= 0;
}

static void
on_accept_error(struct evconnlistener *el, void *arg)
{
	struct listener *l = arg;
	int e = EVUTIL_SOCKET_ERROR();

	if ((e == EMFILE || e == ENFILE) && refuse_out_of_fds(l))
		return;
	log_error("accept on %s failed: %s", l->addr, evutil_socket_error_to_string(e));
	/* Back off briefly rather than spin. */
	evconnlistener_disable(el);
	struct timeval tv = {0, 100000};
	event_base_once(l->srv->base, -1, EV_TIMEOUT, listener_resume, l, &tv);
}

/*
 * Whether a listener takes an IPv4 address on port. [::]:port then binds
 * IPv6 only (IPV6_V6ONLY): in the system's default dual stack it takes
 * IPv4 too, and "0.0.0.0:25, [::]:25" failed with "Address already in
 * use". Alone it keeps the default, and IPv4 clients still reach it.
 */
static int
ipv4_on_port(const struct config *cfg, int port)
{
	struct in_addr a;

	for (int k = 0; k < LISTEN_NKINDS; k++)
		for (size_t i = 0; i < cfg->listen[k].n; i++) {
			char *host = NULL;
			int p, v4 = 0;
			if (config_parse_hostport(cfg->listen[k].v[i], &host, &p, 0) == 0)
				v4 = p == port && inet_pton(AF_INET, host, &a) == 1;
			free(host);
			if (v4)
				return 1;
		}
	return 0;
}

static int
bind_one(struct server *srv, enum listen_kind kind, const char *addr, struct buf *err)
{
	char *host = NULL;
	int port;
	struct sockaddr_storage ss;
	socklen_t sslen;

	if (config_parse_hostport(addr, &host, &port, 0) < 0) {
		buf_printf(err, "listen.%s: bad address '%s'", config_listen_names[kind], addr);
		return -1;
	}
	memset(&ss, 0, sizeof(ss));
	struct sockaddr_in *s4 = (void *)&ss;
	struct sockaddr_in6 *s6 = (void *)&ss;
	if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)port);
		sslen = sizeof(*s4);
	} else if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)port);
		sslen = sizeof(*s6);
	} else {
		buf_printf(err, "listen.%s: '%s' is not an IP address", config_listen_names[kind],
			   host);
		free(host);
		return -1;
	}
	free(host);
	unsigned flags =
	    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC | LEV_OPT_DISABLED;
	if (ss.ss_family == AF_INET6 && ipv4_on_port(srv->cfg, port))
		flags |= LEV_OPT_BIND_IPV6ONLY;
	struct listener *l = xcalloc(1, sizeof(*l));
	l->srv = srv;
	l->kind = kind;
	l->addr = xstrdup(addr);
	l->el = evconnlistener_new_bind(srv->base, on_accept, l, flags, 1024,
					(struct sockaddr *)&ss, (int)sslen);
	if (l->el == NULL) {
		buf_printf(err, "listen.%s: bind(%s) failed: %s", config_listen_names[kind], addr,
			   strerror(errno));
		free(l->addr);
		free(l);
		return -1;
	}
	/* Accepted sockets inherit it: no setsockopt(2) per connection. */
	int one = 1;
	if (setsockopt(evconnlistener_get_fd(l->el), IPPROTO_TCP, TCP_NODELAY, &one,
		       sizeof(one)) < 0)
		log_error("listen.%s: TCP_NODELAY: %s", config_listen_names[kind], strerror(errno));
	evconnlistener_set_error_cb(l->el, on_accept_error);
	l->next = srv->listeners;
	srv->listeners = l;
	return 0;
}

int
server_bind(struct server *srv, struct buf *err)
{
	for (int k = 0; k < LISTEN_NKINDS; k++) {
		const struct strlist *addrs = &srv->cfg->listen[k];
		if (addrs->n > 0 && srv->protos[k] == NULL) {
			buf_printf(err, "listen.%s: this protocol is not available in this build",
				   config_listen_names[k]);
			return -1;
		}
		for (size_t i = 0; i < addrs->n; i++) {
			if (bind_one(srv, (enum listen_kind)k, addrs->v[i], err) < 0)
				return -1;
		}
	}
	return 0;
}

static uid_t chown_uid;
static gid_t chown_gid;

static int
chown_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)ftw;
	/* Only what is not the user's yet: a chown(2) to the owner a file
	 * has still sets its ctime, and this runs at every start and every
	 * admin command run as root, over every message file: each backup
	 * that goes by ctime (borg, dump) then read all the mail again. */
	if (flag != FTW_NS && st->st_uid == chown_uid && st->st_gid == chown_gid)
		return 0;
	/* (Gone meanwhile, as SQLite's -wal and -shm may be: no error.) */
	return lchown(path, chown_uid, chown_gid) < 0 && errno != ENOENT ? -1 : 0;
}

/* The entries right in dir (accounts.db and its journal, queue, mail). */
static int
chown_top(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	struct stat st;
	int rc = 0;

	if (d == NULL)
		return -1;
	while (rc == 0 && (de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if ((fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
		     st.st_uid != chown_uid || st.st_gid != chown_gid) &&
		    fchownat(dirfd(d), de->d_name, chown_uid, chown_gid, AT_SYMLINK_NOFOLLOW) < 0 &&
		    errno != ENOENT)	/* gone meanwhile: SQLite's -wal, -shm */
			rc = -1;
	}
	closedir(d);
	return rc;
}

/*
 * What surat makes at data_dir's top level: anything else means data_dir
 * names a directory of someone else's (data_dir = /var/lib, or /), whose
 * whole tree the chown walk would give to run_as.
 */
static int
data_dir_entry_ours(const char *name)
{
	static const char *const ours[] = {
	    "accounts.db", "queue", "mail", "deleted", "serve.lock", "lost+found",
	};

	for (size_t i = 0; i < ARRAY_LEN(ours); i++)
		if (strcmp(name, ours[i]) == 0)
			return 1;
	/* SQLite's -wal, -shm and -journal beside it. */
	return strncmp(name, "accounts.db-", 12) == 0;
}

int
server_data_dir_foreign(const char *data_dir, struct buf *err)
{
	DIR *d = opendir(data_dir);
	struct dirent *de;
	int rc = 0;

	if (d == NULL) {
		if (errno == ENOENT)
			return 0;
		buf_printf(err, "opendir(%s) failed: %s", data_dir, strerror(errno));
		return -1;
	}
	while (rc == 0 && (de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0 ||
		    data_dir_entry_ours(de->d_name))
			continue;
		char esc[256];
		buf_printf(err,
			   "data_dir %s holds '%s', which surat did not make: is data_dir "
			   "right? It must be a directory of surat's own (say /var/lib/surat), "
			   "as it is given to run_as with all it holds",
			   data_dir, log_esc(esc, sizeof(esc), de->d_name));
		rc = 1;
	}
	closedir(d);
	return rc;
}

int
server_priv_drop(const char *user, const char *data_dir, int whole, struct buf *err)
{
	struct passwd *pw = getpwnam(user);
	struct stat st;
	int rc = 0;

	if (pw == NULL) {
		buf_printf(err, "run_as: no such user '%s'", user);
		return -1;
	}
	if (pw->pw_uid == 0) {
		buf_printf(err, "run_as: '%s' is root", user);
		return -1;
	}
	chown_uid = pw->pw_uid;
	chown_gid = pw->pw_gid;
	/*
	 * The walk chowns data_dir last (FTW_DEPTH): while data_dir is
	 * run_as's, the tree below it was all made run_as's once, and what
	 * the daemon and these commands write since is run_as's too. Then
	 * unless whole (the daemon's start) only the top level is looked at,
	 * where an admin's own sqlite3 may have left a root-owned journal:
	 * an admin command need not stat a million message files.
	 */
	if (data_dir != NULL && lstat(data_dir, &st) == 0 &&
	    (st.st_uid != chown_uid || st.st_gid != chown_gid) &&
	    server_data_dir_foreign(data_dir, err) != 0)
		return -1; /* before the walk: it would chown all of it */
	if (data_dir != NULL && lstat(data_dir, &st) == 0)
		rc = !whole && st.st_uid == chown_uid && st.st_gid == chown_gid
			 ? chown_top(data_dir)
			 : nftw(data_dir, chown_one, 32, FTW_PHYS | FTW_DEPTH);
	if (rc != 0) {
		buf_printf(err, "chown(%s) failed: %s", data_dir, strerror(errno));
		return -1;
	}
	if (setgroups(1, &pw->pw_gid) < 0 || setgid(pw->pw_gid) < 0 || setuid(pw->pw_uid) < 0) {
		buf_printf(err, "dropping privileges to %s failed: %s", user, strerror(errno));
		return -1;
	}
	if (setuid(0) == 0) {
		buf_printf(err, "privileges could be regained after dropping them");
		return -1;
	}
	/* What was opened as root works; the next file made in it would not. */
	if (data_dir != NULL && access(data_dir, R_OK | W_OK | X_OK) < 0) {
		buf_printf(err,
			   "run_as %s cannot use data_dir %s: %s (every directory above it must "
			   "let %s search it)",
			   user, data_dir, strerror(errno), user);
		return -1;
	}
	return 0;
}

int
server_drop_privileges(struct server *srv, struct buf *err)
{
	const char *user = srv->cfg->run_as;

	if (geteuid() != 0)
		return 0;
	if (user == NULL) {
		log_warn("**************************************************************");
		log_warn("running as root without run_as: development and tests ONLY.");
		log_warn("set run_as in %s for production.", srv->cfg->path ? srv->cfg->path : "the config");
		log_warn("**************************************************************");
		return 0;
	}
	if (server_priv_drop(user, srv->cfg->data_dir, 1, err) < 0)
		return -1;
	log_info("running as %s (uid %u)", user, (unsigned)getuid());
	return 0;
}

static void
stop_check(evutil_socket_t fd, short what, void *arg)
{
	struct server *srv = arg;

	/*
	 * Password checks still running are waited for too: a failed one
	 * counts in the lockout, which the stop then keeps for the next run.
	 */
	int idle = worker_pending(srv->pool) == 0 && worker_pending(srv->auth_pool) == 0;
	if (srv->nconns == 0 && srv->holds == 0 && idle) {
		event_base_loopexit(srv->base, NULL);
		return;
	}
	if (util_mono_ms() >= srv->stop_deadline) {
		if (srv->nconns > 0)
			log_warn("grace period over: closing %u sessions", srv->nconns);
		while (srv->conns)
			conn_close(srv->conns);
		if (idle)
			event_base_loopexit(srv->base, NULL);
	}
}

void
server_stop(struct server *srv)
{
	if (srv->stopping)
		return;
	srv->stopping = 1;
	log_info("stopping: no new connections, %u open sessions get %llds to finish", srv->nconns,
		 (long long)srv->cfg->shutdown_grace);
	for (struct listener *l = srv->listeners; l; l = l->next) {
		evconnlistener_free(l->el);
		l->el = NULL;
	}
	struct conn *c = srv->conns;
	while (c) {
		struct conn *next = c->next;
		if (c->on_shutdown && !c->closing)
			c->on_shutdown(c);
		c = next;
	}
	srv->stop_deadline = util_mono_ms() + srv->cfg->shutdown_grace * 1000;
	srv->stop_timer = event_new(srv->base, -1, EV_PERSIST, stop_check, srv);
	event_add(srv->stop_timer, &(struct timeval){0, 50000});
	stop_check(-1, 0, srv);	/* nothing open: no need to wait for the first tick */
}

static void
on_signal(evutil_socket_t sig, short what, void *arg)
{
	struct server *srv = arg;

	if (sig == SIGHUP) {
		struct buf err = BUF_INIT(0);
		if (tls_reload(&err) < 0)
			log_error("SIGHUP: TLS reload failed, keeping the old certificate: %s",
				  buf_str(&err));
		else
			log_info("SIGHUP: TLS certificate and key reloaded");
		buf_free(&err);
		return;
	}
	server_stop(srv);
}

int
server_run(struct server *srv)
{
	for (struct listener *l = srv->listeners; l; l = l->next) {
		evconnlistener_enable(l->el);
		log_info("listening: %s on %s", config_listen_names[l->kind], l->addr);
	}
	event_base_dispatch(srv->base);
	log_info("stopped");
	return 0;
}

void
server_free(struct server **pp)
{
	struct server *srv = *pp;

	if (srv == NULL)
		return;
	while (srv->conns)
		conn_close(srv->conns);
	worker_pool_free(&srv->auth_pool);
	worker_pool_free(&srv->pool);
	while (srv->listeners) {
		struct listener *l = srv->listeners;
		srv->listeners = l->next;
		if (l->el)
			evconnlistener_free(l->el);
		free(l->addr);
		free(l);
	}
	for (size_t i = 0; i < srv->ipcount_buckets; i++) {
		while (srv->ipcounts[i]) {
			struct ip_count *n = srv->ipcounts[i]->next;
			free(srv->ipcounts[i]);
			srv->ipcounts[i] = n;
		}
	}
	free(srv->ipcounts);
	if (srv->reserve_fd >= 0)
		close(srv->reserve_fd);
	if (srv->sig_term) {
		event_free(srv->sig_term);
		event_free(srv->sig_int);
		event_free(srv->sig_hup);
	}
	if (srv->stop_timer)
		event_free(srv->stop_timer);
	event_base_free(srv->base);
	free(srv);
	*pp = NULL;
}
