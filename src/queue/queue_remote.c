/*
 * queue_remote — see queue_remote.h.
 *
 * Objects, all on the loop thread:
 *   rmsg   a message the queue handed over: its envelope (copied, the
 *          queue's copy may change under us); it lives until every one of
 *          its jobs is done, then queue_remote_done() is called. Its
 *          content is read (on a worker) only when a connection takes one
 *          of its jobs, and dropped when no connection has one: a backlog
 *          waiting for a slow or unreachable destination costs its
 *          envelopes in memory, not its messages.
 *   rjob   the recipients of one message for one destination: one SMTP
 *          transaction. It waits in its destination's queue for a
 *          connection.
 *   dest   a destination ("mx:example.com", "route:example.com",
 *          "relay"): its waiting jobs, its idle connections and the count
 *          of all its connections (the per-destination limit).
 *   rconn  one connection of a destination. It first walks the route
 *          (MX lookup, the A/AAAA of each group of hosts of equal
 *          preference, each address in turn) until a session is READY,
 *          then takes jobs one after the other from its destination, and
 *          waits idle for a while when there is none.
 *
 * A walk that fails as a whole (no host reachable, NXDOMAIN, null MX, a
 * loop) fails every job waiting at the destination with that reason: they
 * would all meet the same. A session lost before a transaction decided
 * anything puts its job back in the queue (a reused connection the peer
 * had closed), at most JOB_TRIES times.
 *
 * SECURITY: see the header.
 */
#include "queue/queue_remote.h"
#include "queue/queue.h"
#include "queue/queue_self.h"
#include "queue/queue_spool.h"
#include "smtp/smtp_client.h"
#include "smtp/smtp_proto.h"
#include "auth/accounts.h"
#include "core/buf.h"
#include "core/config.h"
#include "core/log.h"
#include "core/server.h"
#include "core/util.h"
#include "core/worker.h"
#include "dns/dns.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/event.h>

#define JOB_TRIES 3	   /* sessions a job may lose before anything is decided */
#define REUSE_IDLE_SECS 5  /* an idle connection waits this long for the next job */
#define REUSE_MAX_TXNS 100 /* transactions on one connection */

enum dest_kind { DEST_MX, DEST_ROUTE, DEST_RELAY, DEST_LITERAL };

struct queue_remote {
	struct server *srv;
	struct dest *dests;
	struct rconn *conns; /* every connection */
	struct rmsg *msgs;
	struct queue_self *self; /* our listen.smtp, for the loop check */
	char *relay_pass;
	unsigned loads; /* worker jobs in flight */
	int dead;	/* freed while loads were in flight */
	struct rmsg *start_head, *start_tail; /* handed over, jobs not yet on their dests */
	struct event *start_ev;
};

struct rmsg {
	struct queue_remote *qr;
	char id[QUEUE_ID_LEN + 1];
	char file[QUEUE_ID_LEN + 2];	/* the spool file holding it */
	char *mail_from, *envid, *session;
	int ret, body_8bit, smtputf8;
	int hdr_utf8;	  /* its header is not ASCII: SMTPUTF8 whatever the addresses */
	char *from_ascii; /* mail_from with its domain as A-labels, when only that is
			     UTF-8; else NULL */
	int64_t created;
	struct buf content;
	int have_content;
	unsigned users;	   /* connections holding one of its jobs: they need the content */
	struct rjob *jobs; /* not yet on their destinations (start_cb) */
	unsigned njobs;	   /* jobs not finished */
	int loading;	   /* a worker reads the content */
	int orphan;	   /* ended while loading: the load job frees it */
	struct rmsg *prev, *next;
	struct rmsg *start_next;
};

/*
 * Recipients in one outbound transaction at most. A server must take 100
 * (RFC 5321 4.5.3.1.8) and may answer 452 past its own limit, which would
 * leave the rest waiting a retry interval; Postfix sends 50
 * (default_destination_recipient_limit). More make another transaction.
 */
#define REMOTE_TXN_RCPTS 50

struct rjob {
	struct rmsg *m;
	struct dest *d;
	size_t *idx; /* the queue's recipient indexes */
	struct smtp_client_rcpt *rcpts;
	char **addrs, **orcpts;
	char **ascii; /* the addrs with A-label domains (NULL: ASCII, or none such);
			 made by the first rconn_send() */
	size_t n;
	struct smtp_client_txn txn;
	int tries;
	int pinned; /* counted in d->nstarting */
	struct rjob *next;
};

struct route_host {
	char *name;
	int port;
	int literal;   /* name is an IP address */
	unsigned pref; /* MX preference; hosts of one preference form a group */
};

struct dest {
	struct queue_remote *qr;
	char *key;
	enum dest_kind kind;
	char *domain; /* DEST_MX: the domain; others: the host */
	int port;     /* DEST_ROUTE, DEST_RELAY, DEST_LITERAL */
	enum smtp_client_tls tls;
	int auth;
	unsigned nconns, nwalking;
	unsigned hold; /* dest_run() on the stack: do not free */
	unsigned nstarting; /* jobs naming this dest, not yet on it (start_cb) */
	struct rconn *idle;
	struct rjob *wait_head, *wait_tail;
	size_t nwait;
	struct dest *prev, *next;
};

struct rconn {
	struct queue_remote *qr;
	struct dest *d; /* NULL once closing */
	int closing;	/* QUIT sent, waiting for the end; not counted in d */
	struct smtp_client *cl;
	struct rjob *job;
	int ready;
	int waiting; /* job taken, its message's content still loading */
	/* the walk, one group of hosts of equal preference at a time */
	struct route_host *hosts;
	size_t nhosts, hi, gstart, gend;
	int implicit_mx;
	int self_cut;		/* our hostname ended the MX list (hosts holds the better ones) */
	int gtempfail;		/* an address lookup in this group failed for now */
	size_t nnx;		/* hosts that do not exist or have no address (DNS) */
	struct dns_addr *addrs; /* the group's addresses */
	size_t *addr_host;	/* the host (index into hosts) of each */
	size_t naddrs, ai;
	struct dns_query *q_mx, *q_a, *q_aaaa;
	const struct dns_result *r_a, *r_aaaa;
	int a_done, aaaa_done;
	int tried;
	unsigned naddr_tried; /* addresses connected to (outbound.address_limit) */
	enum smtp_client_tls tls_now;
	struct buf last_error;
	char last_perm[16]; /* last_error is a 5xx that ended a session: its code; else "" */
	struct buf last_reply;		       /* last_error is a peer's reply: its summary */
	char last_remote[DNS_NAME_BUFSZ + 80]; /* and that peer, "host[ip]" */
	/* the peer */
	char host[DNS_NAME_BUFSZ];
	char ip[INET6_ADDRSTRLEN];
	int port;
	char remote[DNS_NAME_BUFSZ + 80];
	int64_t txn_start_ms;
	int lockfd; /* the job's spool file, locked shared while it is sent; or -1 */
	struct event *idle_timer;
	struct rconn *prev, *next;	   /* idle list */
	struct rconn *all_prev, *all_next; /* qr->conns */
};

static void dest_run(struct dest *d);
static void rconn_next_addr(struct rconn *c);
static void rconn_next_host(struct rconn *c);
static void rconn_lookup_host(struct rconn *c);

/* ---- helpers ---- */

static int64_t
now_s(void)
{
	return util_now_ms() / 1000;
}

static const char *
result_name(enum deliver_result r)
{
	return r == DELIVER_OK ? "sent" : r == DELIVER_TEMPFAIL ? "deferred" : "bounced";
}

static void
sa_from_text(const char *ip, int port, struct dns_addr *a)
{
	memset(a, 0, sizeof(*a));
	struct sockaddr_in *s4 = (struct sockaddr_in *)&a->sa;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&a->sa;
	if (inet_pton(AF_INET, ip, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		a->family = AF_INET;
		a->salen = sizeof(*s4);
	} else if (inet_pton(AF_INET6, ip, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		a->family = AF_INET6;
		a->salen = sizeof(*s6);
	}
	xsnprintf(a->text, sizeof(a->text), "%s", ip);
	(void)port;
}

static int
is_ip(const char *s)
{
	unsigned char tmp[16];
	return inet_pton(AF_INET, s, tmp) == 1 || inet_pton(AF_INET6, s, tmp) == 1;
}

static void
sa_set_port(struct dns_addr *a, int port)
{
	if (a->family == AF_INET6)
		((struct sockaddr_in6 *)&a->sa)->sin6_port = htons((uint16_t)port);
	else
		((struct sockaddr_in *)&a->sa)->sin_port = htons((uint16_t)port);
}

/* Text after a leading enhanced status code "4.4.1 ", or s. */
static const char *
skip_enhanced(const char *s, char code_r[16])
{
	size_t i = 0, dots = 0;
	code_r[0] = '\0';
	if ((s[0] != '4' && s[0] != '5') || s[1] != '.')
		return s;
	while (s[i] && (s[i] == '.' || (s[i] >= '0' && s[i] <= '9')) && i < 12) {
		if (s[i] == '.')
			dots++;
		i++;
	}
	if (dots != 2 || s[i] != ' ')
		return s;
	memcpy(code_r, s, i);
	code_r[i] = '\0';
	return s + i + 1;
}

/* ---- messages and jobs ---- */

static void dest_maybe_free(struct dest *d);

/* A job no longer waits for its message to load: release its hold on d. */
static void
rjob_unpin(struct rjob *j, int dests_alive)
{
	if (!j->pinned)
		return;
	j->pinned = 0;
	if (!dests_alive || j->d == NULL)
		return;
	j->d->nstarting--;
	dest_maybe_free(j->d);
}

static void
rjob_free(struct rjob *j)
{
	rjob_unpin(j, 1);
	smtp_client_txn_clear(&j->txn);
	for (size_t i = 0; i < j->n; i++) {
		free(j->addrs[i]);
		free(j->orcpts[i]);
		if (j->ascii)
			free(j->ascii[i]);
	}
	free(j->addrs);
	free(j->orcpts);
	free(j->ascii);
	free(j->idx);
	free(j->rcpts);
	free(j);
}

static void
rmsg_free(struct rmsg *m)
{
	free(m->mail_from);
	free(m->from_ascii);
	free(m->envid);
	free(m->session);
	buf_free(&m->content);
	while (m->jobs) {
		struct rjob *j = m->jobs;
		m->jobs = j->next;
		rjob_free(j);
	}
	free(m);
}

static void
rmsg_unlink(struct queue_remote *qr, struct rmsg *m)
{
	if (m->prev)
		m->prev->next = m->next;
	else
		qr->msgs = m->next;
	if (m->next)
		m->next->prev = m->prev;
}

/* One job is over: when it was the message's last, tell the queue. */
static void
rmsg_job_done(struct rmsg *m)
{
	struct queue_remote *qr = m->qr;
	ASSERT(m->njobs > 0);
	if (--m->njobs > 0)
		return;
	rmsg_unlink(qr, m);
	queue_remote_done(qr->srv->queue, m->id);
	if (m->loading)
		m->orphan = 1; /* load_done() frees it */
	else
		rmsg_free(m);
}

/* A connection lets go of a job of m: the last one drops the content. */
static void
rmsg_release(struct rmsg *m)
{
	ASSERT(m->users > 0);
	if (--m->users == 0) {
		buf_free(&m->content);
		m->have_content = 0;
	}
}

/*
 * Report one recipient to the queue and log the attempt. remote names the
 * peer ("host[ip]") whose reply text is when c has none (a walk that
 * ended on that reply); else NULL.
 */
static void
job_report(struct rjob *j, size_t i, enum deliver_result r, const char *text, struct rconn *c,
	   const char *remote)
{
	struct rmsg *m = j->m;
	struct queue_remote *qr = m->qr;
	char a[300], t[600], h[300];
	log_msg(LL_INFO, m->session,
		"outbound id=%s rcpt=%s host=%s ip=%s tls=%s reply=\"%s\" delay=%llds status=%s",
		m->id, log_esc_also(a, sizeof(a), j->addrs[i], " "),
		c && c->host[0] ? log_esc(h, sizeof(h), c->host) : "-", c && c->ip[0] ? c->ip : "-",
		c && c->cl ? smtp_client_tls_desc(c->cl) : "none",
		log_esc(t, sizeof(t), text ? text : ""), (long long)(now_s() - m->created),
		result_name(r));
	/* "mx.example.com[192.0.2.1] tls=TLSv1.3": the queue logs it as relay=. */
	char rem[sizeof(c->remote) + 40];
	if (c && c->remote[0]) {
		const char *tls = c->cl ? smtp_client_tls_desc(c->cl) : "none";
		xsnprintf(rem, sizeof(rem), "%s tls=%.*s", c->remote, (int)strcspn(tls, ":"), tls);
	} else if (remote && remote[0]) {
		xsnprintf(rem, sizeof(rem), "%s", remote);
	}
	int relayed = r == DELIVER_OK && c != NULL && c->cl != NULL &&
		      !(smtp_client_caps(c->cl)->flags & SMTP_CAP_DSN);
	queue_remote_result(qr->srv->queue, m->id, j->idx[i], r, text,
			    (c && c->remote[0]) || (remote && remote[0]) ? rem : NULL, relayed,
			    c ? c->lockfd : -1);
}

/* Every recipient of j gets the same result; then j ends. remote: job_report(). */
static void
job_fail_all(struct rjob *j, enum deliver_result r, const char *text, struct rconn *c,
	     const char *remote)
{
	for (size_t i = 0; i < j->n; i++)
		job_report(j, i, r, text, c, remote);
	struct rmsg *m = j->m;
	rjob_free(j);
	rmsg_job_done(m);
}

/* ---- destinations ---- */

static void
dest_maybe_free(struct dest *d)
{
	if (d->nconns > 0 || d->wait_head || d->idle || d->hold > 0 || d->nstarting > 0)
		return;
	struct queue_remote *qr = d->qr;
	if (d->prev)
		d->prev->next = d->next;
	else
		qr->dests = d->next;
	if (d->next)
		d->next->prev = d->prev;
	free(d->key);
	free(d->domain);
	free(d);
}

static void
dest_push(struct dest *d, struct rjob *j, int front)
{
	j->d = d;
	if (front) {
		j->next = d->wait_head;
		d->wait_head = j;
		if (d->wait_tail == NULL)
			d->wait_tail = j;
	} else {
		j->next = NULL;
		if (d->wait_tail)
			d->wait_tail->next = j;
		else
			d->wait_head = j;
		d->wait_tail = j;
	}
	d->nwait++;
}

static struct rjob *
dest_pop(struct dest *d)
{
	struct rjob *j = d->wait_head;
	if (j == NULL)
		return NULL;
	d->wait_head = j->next;
	if (d->wait_head == NULL)
		d->wait_tail = NULL;
	j->next = NULL;
	d->nwait--;
	return j;
}

/* The destination for a recipient domain; NULL with a permanent reason. */
static struct dest *
dest_get(struct queue_remote *qr, const char *domain, struct buf *why)
{
	const struct config *cfg = qr->srv->cfg;
	struct buf key = BUF_INIT(0);
	enum dest_kind kind = DEST_MX;
	const char *hostport = NULL;
	char *host = NULL;
	int port = (int)cfg->outbound_port;

	for (size_t i = 0; i < cfg->nroutes; i++) {
		if (strcasecmp(cfg->routes[i].domain, domain) == 0) {
			kind = DEST_ROUTE;
			hostport = cfg->routes[i].host;
			break;
		}
	}
	if (kind == DEST_MX && domain[0] == '[') {
		/* An address literal: [192.0.2.1] or [IPv6:2001:db8::1]. */
		size_t n = strlen(domain);
		const char *s = domain + 1;
		if (strncasecmp(s, "IPv6:", 5) == 0)
			s += 5;
		host = xstrndup(s, (size_t)(domain + n - 1 - s));
		if (n < 3 || domain[n - 1] != ']' || !is_ip(host)) {
			buf_printf(why, "5.1.2 Bad address literal %s", domain);
			free(host);
			buf_free(&key);
			return NULL;
		}
		kind = DEST_LITERAL;
	}
	/* The smarthost takes all remote mail, address literals too (a host
	 * that may not reach port 25 itself cannot reach [192.0.2.1] either). */
	if ((kind == DEST_MX || kind == DEST_LITERAL) && cfg->relayhost) {
		free(host);
		host = NULL;
		kind = DEST_RELAY;
		hostport = cfg->relayhost;
	}
	if (hostport &&
	    config_parse_hostport(hostport, &host, &port, (int)cfg->outbound_port) < 0) {
		buf_printf(why, "4.3.5 Bad route '%s' in the configuration", hostport);
		buf_free(&key);
		return NULL;
	}
	switch (kind) {
	case DEST_MX:
		buf_printf(&key, "mx:%s", domain);
		break;
	case DEST_ROUTE:
		buf_printf(&key, "route:%s:%s:%d", domain, host, port);
		break;
	case DEST_RELAY:
		buf_printf(&key, "relay:%s:%d", host, port);
		break;
	case DEST_LITERAL:
		buf_printf(&key, "literal:%s:%d", host, port);
		break;
	}
	for (struct dest *d = qr->dests; d; d = d->next) {
		if (strcmp(d->key, key.data) == 0) {
			free(host);
			buf_free(&key);
			return d;
		}
	}
	struct dest *d = xcalloc(1, sizeof(*d));
	d->qr = qr;
	d->key = buf_steal(&key);
	d->kind = kind;
	d->domain = kind == DEST_MX ? xstrdup(domain) : host;
	if (kind == DEST_MX)
		free(host);
	d->port = port;
	d->tls = strcmp(cfg->outbound_tls, "require") == 0 ? SMTP_CLIENT_TLS_REQUIRE
							   : SMTP_CLIENT_TLS_MAY;
	if (kind == DEST_RELAY) {
		/* A password goes over TLS only; a smarthost without AUTH is like any peer. */
		d->auth = cfg->relayhost_user != NULL;
		if (port == 465)
			d->tls = SMTP_CLIENT_TLS_IMPLICIT;
		else if (d->auth)
			d->tls = SMTP_CLIENT_TLS_REQUIRE;
	}
	d->next = qr->dests;
	if (qr->dests)
		qr->dests->prev = d;
	qr->dests = d;
	return d;
}

/* ---- connections ---- */

static void
rconn_walk_reset(struct rconn *c)
{
	dns_cancel(&c->q_mx);
	dns_cancel(&c->q_a);
	dns_cancel(&c->q_aaaa);
	dns_result_unref(&c->r_a);
	dns_result_unref(&c->r_aaaa);
	for (size_t i = 0; i < c->nhosts; i++)
		free(c->hosts[i].name);
	free(c->hosts);
	c->hosts = NULL;
	c->nhosts = c->hi = c->nnx = 0;
	free(c->addrs);
	c->addrs = NULL;
	free(c->addr_host);
	c->addr_host = NULL;
	c->naddrs = c->ai = 0;
}

static void
rconn_idle_unlink(struct rconn *c)
{
	struct dest *d = c->d;
	if (c->prev)
		c->prev->next = c->next;
	else if (d->idle == c)
		d->idle = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->prev = c->next = NULL;
}

static void
rconn_all_unlink(struct queue_remote *qr, struct rconn *c)
{
	if (c->all_prev)
		c->all_prev->all_next = c->all_next;
	else
		qr->conns = c->all_next;
	if (c->all_next)
		c->all_next->all_prev = c->all_prev;
}

/* c's job is over or given back: `surat queue delete` may remove its message. */
static void
rconn_unlock(struct rconn *c)
{
	if (c->lockfd >= 0)
		close(c->lockfd);
	c->lockfd = -1;
}

static void
rconn_free(struct rconn *c)
{
	rconn_unlock(c);
	rconn_walk_reset(c);
	smtp_client_free(&c->cl);
	if (c->idle_timer)
		event_free(c->idle_timer);
	buf_free(&c->last_error);
	buf_free(&c->last_reply);
	rconn_all_unlink(c->qr, c);
	free(c);
}

/*
 * Take the connection off its destination: QUIT if it is usable (it is
 * freed when the session is over), else free it now.
 */
static void
rconn_end(struct rconn *c, int quit)
{
	struct dest *d = c->d;
	rconn_walk_reset(c);
	rconn_idle_unlink(c);
	if (!c->ready)
		d->nwalking--;
	d->nconns--;
	if (quit && c->cl && smtp_client_usable(c->cl) && !d->qr->srv->stopping) {
		c->closing = 1;
		c->d = NULL;
		if (c->idle_timer) {
			event_free(c->idle_timer);
			c->idle_timer = NULL;
		}
		smtp_client_quit(c->cl);
	} else {
		rconn_free(c);
	}
	dest_run(d); /* may free d */
}

/*
 * The walk found no usable host: fail the waiting jobs and end. remote:
 * the peer ("host[ip]") whose reply text is, or NULL.
 */
static void
rconn_walk_failed_at(struct rconn *c, enum deliver_result r, const char *text, const char *remote)
{
	struct dest *d = c->d;
	char esc[600];
	log_msg(LL_INFO, NULL, "outbound dest=%s: %s", d->key, log_esc(esc, sizeof(esc), text));
	/* rconn_end() runs dest_run(): empty the queue first so nothing restarts. */
	struct rjob *waiting = d->wait_head;
	d->wait_head = d->wait_tail = NULL;
	d->nwait = 0;
	c->host[0] = '\0';
	c->ip[0] = '\0';
	c->remote[0] = '\0';
	smtp_client_free(&c->cl);
	struct buf t = BUF_INIT(0), rem = BUF_INIT(0);
	buf_puts(&t, text);
	if (remote)
		buf_puts(&rem, remote);
	rconn_end(c, 0);
	while (waiting) {
		struct rjob *j = waiting;
		waiting = j->next;
		job_fail_all(j, r, t.data, NULL, remote ? rem.data : NULL);
	}
	buf_free(&t);
	buf_free(&rem);
}

static void
rconn_walk_failed(struct rconn *c, enum deliver_result r, const char *text)
{
	rconn_walk_failed_at(c, r, text, NULL);
}

/* Every host was tried: fail with the last reason. */
static void
rconn_exhausted(struct rconn *c)
{
	struct dest *d = c->d;
	char code[16];
	const char *last = c->last_error.len ? c->last_error.data : "no address to try";
	const char *rest = skip_enhanced(last, code);
	/*
	 * RFC 5321 4.2.1: the last host refused us for good (a 5xx greeting
	 * or HELO): a bounce, with the reply's enhanced code when it has one.
	 * A better host's refusal with this one unreachable is still a deferral.
	 */
	const char *status = c->last_perm[0] ? c->last_perm : code[0] == '4' ? code : "4.4.1";
	/*
	 * Every MX host is known not to exist (or to have no address): no
	 * retry will find one, so a bounce now, 5.4.4 as Postfix says it,
	 * not queue.max_age of deferrals. One lookup that failed for now, or
	 * one host with an address, keeps it a deferral; so does our own
	 * name in the list: we are a backup MX, and the primary's missing
	 * address is for its owner to mend while we hold the mail (Postfix:
	 * 4.4.4 "unable to find primary relay").
	 */
	int nohost = d->kind == DEST_MX && !c->implicit_mx && !c->self_cut && c->nhosts > 0 &&
		     c->nnx == c->nhosts;
	enum deliver_result r = c->last_perm[0] || nohost ? DELIVER_PERMFAIL : DELIVER_TEMPFAIL;
	if (c->last_reply.len > 0 && !nohost && (c->last_perm[0] || c->last_reply.data[0] == '4')) {
		/*
		 * The last host ended it with a reply: that reply, from that
		 * host, as for a refused RCPT, so that a notice shows the
		 * Remote-MTA and "Diagnostic-Code: smtp;" with what it said
		 * (RFC 3464 2.3.5, 2.3.6), its status from the reply. (Not a
		 * 5xx we defer, to STARTTLS or AUTH: that is our own finding.)
		 */
		rconn_walk_failed_at(c, r, c->last_reply.data, c->last_remote);
		return;
	}
	struct buf t = BUF_INIT(0);
	if (nohost)
		buf_printf(&t,
			   "5.4.4 Host or domain name not found: no MX host of %s has an "
			   "address; last error: %s",
			   d->domain, rest);
	else if (d->kind == DEST_MX)
		buf_printf(&t, "%s Delivery to all MX hosts of %s failed; last error: %s", status,
			   d->domain, rest);
	else
		buf_printf(&t, "%s Delivery to %s:%d failed: %s", status, d->domain, d->port, rest);
	rconn_walk_failed(c, r, t.data);
	buf_free(&t);
}

static void rconn_client_cb(struct smtp_client *cl, enum smtp_client_event ev, void *arg);

static void
rconn_connect(struct rconn *c, const struct dns_addr *a)
{
	struct dest *d = c->d;
	struct queue_remote *qr = d->qr;
	const struct config *cfg = qr->srv->cfg;
	struct smtp_client_params p;

	memset(&p, 0, sizeof(p));
	xsnprintf(c->ip, sizeof(c->ip), "%s", a->text);
	if (c->port == 25)
		xsnprintf(c->remote, sizeof(c->remote), "%s[%s]", c->host, c->ip);
	else
		xsnprintf(c->remote, sizeof(c->remote), "%s[%s]:%d", c->host, c->ip, c->port);
	p.helo = cfg->hostname;
	p.host = c->host;
	p.sa = (const struct sockaddr *)&a->sa;
	p.salen = a->salen;
	p.tls = c->tls_now;
	if (d->auth) {
		p.auth_user = cfg->relayhost_user;
		p.auth_pass = qr->relay_pass ? qr->relay_pass : "";
	}
	smtp_client_timeouts_default(&p.t);
	p.t.connect = (int)cfg->outbound_connect_timeout;
	p.t.greeting = p.t.command = p.t.mail = p.t.rcpt = (int)cfg->outbound_command_timeout;
	if (p.t.data_init > p.t.command)
		p.t.data_init = p.t.command;
	p.t.data_done = (int)cfg->outbound_data_timeout;
	if (p.t.data_block > p.t.data_done)
		p.t.data_block = p.t.data_done;
	p.log_id = d->key;
	c->tried = 1;
	c->cl = smtp_client_new(qr->srv->base, &p, rconn_client_cb, c);
}

/*
 * RFC 5321 5.1 allows a configurable limit on the addresses tried (at
 * least two SHOULD be): each may cost a connect timeout, or a greeting
 * one, and a domain with many dead hosts would hold this connection slot
 * for as long as they all take. Whether the walk has reached it (logged):
 * then the attempt ends with the last failure, before it looks up another
 * host, whose lookup would only replace that failure with its own.
 */
static int
rconn_at_limit(struct rconn *c)
{
	int64_t limit = c->d->qr->srv->cfg->outbound_address_limit;

	if (limit <= 0 || c->naddr_tried < (uint64_t)limit)
		return 0;
	log_msg(LL_INFO, NULL, "outbound dest=%s: %u addresses tried, the limit", c->d->key,
		c->naddr_tried);
	return 1;
}

static void
rconn_next_addr(struct rconn *c)
{
	struct dest *d = c->d;
	if (c->ai >= c->naddrs) {
		rconn_next_host(c);
		return;
	}
	if (rconn_at_limit(c)) {
		rconn_exhausted(c);
		return;
	}
	c->naddr_tried++;
	const struct route_host *h = &c->hosts[c->addr_host[c->ai]];
	struct dns_addr a = c->addrs[c->ai++];
	xsnprintf(c->host, sizeof(c->host), "%s", h->name);
	c->port = h->port;
	sa_set_port(&a, c->port);
	c->tls_now = d->tls;
	rconn_connect(c, &a);
}

/*
 * Every address of the group is known. RFC 5321 5.1: if one of them is
 * ours, this group and the worse ones are dropped, whatever order the
 * shuffle gave, so that equal hosts are never tried before we notice.
 * We are the best host: a loop. Else the better ones failed, or have no
 * address (yet): a deferral, as we are their backup.
 */
static void
rconn_group_ready(struct rconn *c)
{
	struct dest *d = c->d;
	for (size_t i = 0; i < c->naddrs; i++) {
		const struct route_host *h = &c->hosts[c->addr_host[i]];
		struct dns_addr a = c->addrs[i];
		sa_set_port(&a, h->port);
		if (!queue_self_has(d->qr->self, (const struct sockaddr *)&a.sa, h->port))
			continue;
		if (c->tried || c->gstart > 0) {
			rconn_exhausted(c);
			return;
		}
		struct buf t = BUF_INIT(0);
		buf_printf(&t, "5.4.6 Mail for %s loops back to myself (host %s[%s]:%d)", d->domain,
			   h->name, a.text, h->port);
		rconn_walk_failed(c, DELIVER_PERMFAIL, t.data);
		buf_free(&t);
		return;
	}
	/* A better host may be reachable later: finding ourselves after it is no
	 * loop but a deferral. */
	if (c->gtempfail)
		c->tried = 1;
	rconn_next_addr(c);
}

/* Add n addresses of host hi to the group. */
static void
rconn_add_addrs(struct rconn *c, size_t hi, const struct dns_addr *a, size_t n)
{
	c->addrs = xrealloc(c->addrs, (c->naddrs + n + 1) * sizeof(*c->addrs));
	c->addr_host = xrealloc(c->addr_host, (c->naddrs + n + 1) * sizeof(*c->addr_host));
	for (size_t i = 0; i < n; i++) {
		c->addrs[c->naddrs] = a[i];
		c->addr_host[c->naddrs++] = hi;
	}
}

static void
rconn_addrs_ready(struct rconn *c)
{
	const struct dns_result *ra = c->r_a, *r6 = c->r_aaaa;
	size_t before = c->naddrs;

	if (ra && ra->status == DNS_OK)
		rconn_add_addrs(c, c->hi - 1, ra->addr, ra->n);
	if (r6 && r6->status == DNS_OK)
		rconn_add_addrs(c, c->hi - 1, r6->addr, r6->n);
	int tempfail = (ra && (ra->status == DNS_TEMPFAIL || ra->status == DNS_BOGUS)) ||
		       (r6 && (r6->status == DNS_TEMPFAIL || r6->status == DNS_BOGUS));
	int nx = ra && ra->status == DNS_NXDOMAIN && r6 && r6->status == DNS_NXDOMAIN;
	dns_result_unref(&c->r_a);
	dns_result_unref(&c->r_aaaa);
	if (c->naddrs == before) {
		buf_reset(&c->last_error);
		buf_reset(&c->last_reply);
		c->last_perm[0] = '\0';
		if (tempfail) {
			buf_printf(&c->last_error, "4.4.3 DNS lookup of the address of %s failed",
				   c->host);
			c->gtempfail = 1;
		} else if (c->implicit_mx) {
			struct buf t = BUF_INIT(0);
			buf_printf(&t, "5.1.2 Domain %s has no MX and no address record",
				   c->d->domain);
			rconn_walk_failed(c, DELIVER_PERMFAIL, t.data);
			buf_free(&t);
			return;
		} else {
			/* NXDOMAIN or NODATA for both: the host is not there. */
			c->nnx++;
			if (nx)
				buf_printf(&c->last_error,
					   "4.4.4 Host %s does not exist (DNS: NXDOMAIN)", c->host);
			else
				buf_printf(&c->last_error, "4.4.4 Host %s has no address record",
					   c->host);
		}
	}
	rconn_lookup_host(c);
}

static void
rconn_a_cb(const struct dns_result *res, void *arg)
{
	struct rconn *c = arg;
	c->q_a = NULL;
	c->r_a = dns_result_ref(res);
	c->a_done = 1;
	if (c->aaaa_done)
		rconn_addrs_ready(c);
}

static void
rconn_aaaa_cb(const struct dns_result *res, void *arg)
{
	struct rconn *c = arg;
	c->q_aaaa = NULL;
	c->r_aaaa = dns_result_ref(res);
	c->aaaa_done = 1;
	if (c->a_done)
		rconn_addrs_ready(c);
}

/* Look up the addresses of the group's next host; its last done, try them. */
static void
rconn_lookup_host(struct rconn *c)
{
	struct dns *dns = c->d->qr->srv->dns;

	while (c->hi < c->gend) {
		size_t hi = c->hi++;
		struct route_host *h = &c->hosts[hi];
		xsnprintf(c->host, sizeof(c->host), "%s", h->name);
		if (h->literal) {
			struct dns_addr a;
			sa_from_text(h->name, h->port, &a);
			rconn_add_addrs(c, hi, &a, 1);
			continue;
		}
		c->a_done = c->aaaa_done = 0;
		c->q_a = dns_query_a(dns, h->name, rconn_a_cb, c);
		c->q_aaaa = dns_query_aaaa(dns, h->name, rconn_aaaa_cb, c);
		if (c->q_a != NULL && c->q_aaaa != NULL)
			return;
		dns_cancel(&c->q_a);
		dns_cancel(&c->q_aaaa);
		buf_reset(&c->last_error);
		buf_reset(&c->last_reply);
		c->last_perm[0] = '\0';
		buf_printf(&c->last_error, "4.4.4 Host name %s is not valid", h->name);
		c->nnx++;
	}
	rconn_group_ready(c);
}

/* Start on the next group of hosts of equal preference. */
static void
rconn_next_host(struct rconn *c)
{
	if (c->hi >= c->nhosts || rconn_at_limit(c)) {
		rconn_exhausted(c);
		return;
	}
	c->gstart = c->hi;
	c->gend = c->hi + 1;
	while (c->gend < c->nhosts && c->hosts[c->gend].pref == c->hosts[c->hi].pref)
		c->gend++;
	free(c->addrs);
	c->addrs = NULL;
	free(c->addr_host);
	c->addr_host = NULL;
	c->naddrs = c->ai = 0;
	c->gtempfail = 0;
	rconn_lookup_host(c);
}

static int
mx_cmp(const void *a, const void *b)
{
	const struct dns_mx *x = a, *y = b;
	return (int)x->pref - (int)y->pref;
}

static void
rconn_mx_cb(const struct dns_result *res, void *arg)
{
	struct rconn *c = arg;
	struct dest *d = c->d;
	const struct config *cfg = d->qr->srv->cfg;
	struct buf t = BUF_INIT(0);
	c->q_mx = NULL;

	switch (res->status) {
	case DNS_NXDOMAIN:
		buf_printf(&t, "5.1.2 Domain %s does not exist (DNS: NXDOMAIN)", d->domain);
		rconn_walk_failed(c, DELIVER_PERMFAIL, t.data);
		break;
	case DNS_TEMPFAIL:
	case DNS_BOGUS:
		buf_printf(&t, "4.4.3 DNS lookup of MX for %s failed (%s%s%s)", d->domain,
			   dns_status_str(res->status), res->why[0] ? ": " : "", res->why);
		rconn_walk_failed(c, DELIVER_TEMPFAIL, t.data);
		break;
	case DNS_NODATA:
		/* RFC 5321 5.1: no MX, the domain itself is the host. */
		c->hosts = xcalloc(1, sizeof(*c->hosts));
		c->hosts[0] =
		    (struct route_host){xstrdup(d->domain), (int)cfg->outbound_port, 0, 0};
		c->nhosts = 1;
		c->implicit_mx = 1;
		rconn_next_host(c);
		break;
	case DNS_OK: {
		if (res->null_mx) {
			buf_printf(&t, "5.1.10 Domain %s accepts no mail (null MX, RFC 7505)",
				   d->domain);
			rconn_walk_failed(c, DELIVER_PERMFAIL, t.data);
			break;
		}
		struct dns_mx *mx = xcalloc(res->n, sizeof(*mx));
		memcpy(mx, res->mx, res->n * sizeof(*mx));
		qsort(mx, res->n, sizeof(*mx), mx_cmp);
		/* Shuffle each run of equal preference (Fisher-Yates). */
		for (size_t s = 0; s < res->n;) {
			size_t e = s;
			while (e < res->n && mx[e].pref == mx[s].pref)
				e++;
			for (size_t i = e - 1; i > s; i--) {
				uint32_t r;
				util_random(&r, sizeof(r));
				size_t k = s + r % (i - s + 1);
				struct dns_mx tmp = mx[i];
				mx[i] = mx[k];
				mx[k] = tmp;
			}
			s = e;
		}
		/* Our own name ends the list: only better hosts may be tried. */
		size_t n = res->n;
		for (size_t i = 0; i < res->n; i++) {
			if (strcasecmp(mx[i].host, cfg->hostname) == 0) {
				n = i;
				while (n > 0 && mx[n - 1].pref == mx[i].pref)
					n--;
				break;
			}
		}
		c->self_cut = n < res->n;
		if (n == 0) {
			buf_printf(&t, "5.4.6 MX for %s points back to myself (%s): mail loop",
				   d->domain, cfg->hostname);
			free(mx);
			rconn_walk_failed(c, DELIVER_PERMFAIL, t.data);
			break;
		}
		c->hosts = xcalloc(n, sizeof(*c->hosts));
		for (size_t i = 0; i < n; i++)
			c->hosts[i] = (struct route_host){xstrdup(mx[i].host),
							  (int)cfg->outbound_port, 0, mx[i].pref};
		c->nhosts = n;
		free(mx);
		rconn_next_host(c);
		break;
	}
	}
	buf_free(&t);
}

/*
 * Whether a message's header field is not ASCII: then an SMTPUTF8 message
 * needs the extension whatever its addresses. A body needs 8BITMIME only.
 */
static int
rmsg_hdr_utf8(const struct rmsg *m)
{
	const char *c = m->content.data ? m->content.data : "";
	const char *sep = memmem(c, m->content.len, "\r\n\r\n", 4);
	size_t hdr = sep ? (size_t)(sep - c) : m->content.len;
	return util_has_8bit(c, hdr);
}

/* addr's ASCII form (accounts_addr_ascii()), malloc'd, or NULL when none. */
static char *
addr_ascii(const char *addr)
{
	struct buf b = BUF_INIT(0);
	if (accounts_addr_ascii(addr, &b) == 1)
		return buf_steal(&b);
	buf_free(&b);
	return NULL;
}

/*
 * Whether j's envelope is not ASCII (*utf8_r) and whether it needs
 * SMTPUTF8 for that (the return): a sender or a recipient whose local part
 * is UTF-8, or whose domain has no A-label form. One whose only UTF-8 is
 * its domain can go as A-labels instead. Not an ORCPT: a peer without DSN
 * never sees it, and one without SMTPUTF8 gets it as utf-8-addr-xtext
 * (RFC 6533 3, smtp_client). Makes j->ascii.
 */
static int
rjob_envelope_utf8(struct rjob *j, int *utf8_r)
{
	const struct rmsg *m = j->m;
	int need = 0;

	*utf8_r = 0;
	if (util_has_8bit(m->mail_from, strlen(m->mail_from))) {
		*utf8_r = 1;
		need = m->from_ascii == NULL;
	}
	if (j->ascii == NULL) {
		j->ascii = xcalloc(j->n, sizeof(*j->ascii));
		for (size_t i = 0; i < j->n; i++)
			j->ascii[i] = addr_ascii(j->addrs[i]);
	}
	for (size_t i = 0; i < j->n; i++) {
		if (util_has_8bit(j->addrs[i], strlen(j->addrs[i]))) {
			*utf8_r = 1;
			if (j->ascii[i] == NULL)
				need = 1;
		}
	}
	return need;
}

/* A new connection for d: start the walk. */
static void
rconn_start(struct dest *d)
{
	struct rconn *c = xcalloc(1, sizeof(*c));
	c->qr = d->qr;
	c->d = d;
	c->lockfd = -1;
	buf_init(&c->last_error, 0);
	buf_init(&c->last_reply, 0);
	c->all_next = d->qr->conns;
	if (d->qr->conns)
		d->qr->conns->all_prev = c;
	d->qr->conns = c;
	d->nconns++;
	d->nwalking++;
	if (d->qr->srv->dns == NULL && !(d->kind != DEST_MX && is_ip(d->domain))) {
		rconn_walk_failed(c, DELIVER_TEMPFAIL, "4.4.3 No DNS resolver");
		return;
	}
	if (d->kind == DEST_MX) {
		c->q_mx = dns_query_mx(d->qr->srv->dns, d->domain, rconn_mx_cb, c);
		if (c->q_mx == NULL) {
			struct buf t = BUF_INIT(0);
			buf_printf(&t, "5.1.2 Bad destination domain %s", d->domain);
			rconn_walk_failed(c, DELIVER_PERMFAIL, t.data);
			buf_free(&t);
		}
		return;
	}
	c->hosts = xcalloc(1, sizeof(*c->hosts));
	c->hosts[0] = (struct route_host){xstrdup(d->domain), d->port, is_ip(d->domain), 0};
	c->nhosts = 1;
	rconn_next_host(c);
}

static void rmsg_load(struct rmsg *m);
static void rconn_idle(struct rconn *c);

/* Send c's job, its message's content at hand. */
static void
rconn_send(struct rconn *c)
{
	struct rjob *j = c->job;
	struct rmsg *m = j->m;
	c->waiting = 0;
	smtp_client_txn_clear(&j->txn);
	/*
	 * Under the spool file's shared lock until the outcome is with the
	 * queue, which keeps a duplicate of it until the outcome is on disk:
	 * `surat queue delete` cannot remove the message while it is sent or
	 * before its sending is recorded, and a message it removed is not
	 * sent (without waiting: the event loop; an exclusive lock is a
	 * delete at this moment).
	 */
	struct buf dir = BUF_INIT(0);
	queue_dir(c->qr->srv->cfg->data_dir, &dir);
	rconn_unlock(c); /* (each job's end lets go; never expected held here) */
	int holds = spool_delivery_lock(dir.data, m->file, m->id, 0, &c->lockfd);
	buf_free(&dir);
	if (holds != 1) {
		/* The queue drops the message if its file is gone, else retries. */
		c->job = NULL;
		c->qr->srv->holds--;
		rmsg_release(m);
		job_fail_all(j, DELIVER_TEMPFAIL, "4.3.0 Removed from the queue while it waited",
			     NULL, NULL);
		rconn_idle(c);
		return;
	}
	j->txn.envid = m->envid;
	j->txn.ret = m->ret;
	j->txn.body_8bit = m->body_8bit;
	/*
	 * RFC 6531 3.4: no SMTPUTF8 for a transaction that does not need it,
	 * so that ASCII mail still reaches a peer without the extension. An
	 * address whose only UTF-8 is its domain has an ASCII form, the
	 * domain's A-labels (RFC 5890 2.3.2.1, the form DNS was asked in):
	 * to a peer without SMTPUTF8, or in a message sent without it, the
	 * envelope goes so instead of bouncing 5.6.7.
	 */
	int env_utf8;
	int need = rjob_envelope_utf8(j, &env_utf8) || (m->smtputf8 && m->hdr_utf8);
	int peer_utf8 = (smtp_client_caps(c->cl)->flags & SMTP_CAP_SMTPUTF8) != 0;
	int alabels = env_utf8 && !need && (!peer_utf8 || !m->smtputf8);
	j->txn.smtputf8 = m->smtputf8 && !alabels && (m->hdr_utf8 || env_utf8);
	j->txn.mail_from = alabels && m->from_ascii ? m->from_ascii : m->mail_from;
	for (size_t i = 0; i < j->n; i++)
		j->rcpts[i].addr = alabels && j->ascii[i] ? j->ascii[i] : j->addrs[i];
	j->txn.data = m->content.data ? m->content.data : "";
	j->txn.len = m->content.len;
	j->txn.rcpts = j->rcpts;
	j->txn.nrcpts = j->n;
	c->txn_start_ms = util_mono_ms();
	smtp_client_send(c->cl, &j->txn);
}

/* Run a job on a ready connection: at once, or once its content is read. */
static void
rconn_take(struct rconn *c, struct rjob *j)
{
	struct rmsg *m = j->m;
	c->job = j;
	rconn_idle_unlink(c);
	if (c->idle_timer)
		event_del(c->idle_timer);
	c->qr->srv->holds++; /* released once its results are with the queue */
	m->users++;
	if (m->have_content) {
		rconn_send(c);
		return;
	}
	c->waiting = 1;
	if (!m->loading)
		rmsg_load(m);
}

/* c gives its job back to the destination, not having sent it. */
static void
rconn_untake(struct rconn *c)
{
	struct rjob *j = c->job;
	c->job = NULL;
	c->waiting = 0;
	c->qr->srv->holds--;
	rconn_unlock(c);
	smtp_client_txn_clear(&j->txn);
	dest_push(c->d, j, 1);
	rmsg_release(j->m);
}

/*
 * c's session was lost before its job's transaction decided anything: one
 * of the job's JOB_TRIES. It goes back to the destination, or after the
 * last is deferred with why (a reused connection the peer had closed is
 * tried again; a peer that ends every session is not, for ever).
 */
static void
rconn_job_lost(struct rconn *c, const char *why)
{
	struct rjob *j = c->job;
	if (++j->tries < JOB_TRIES) {
		rconn_untake(c);
		return;
	}
	struct buf t = BUF_INIT(0);
	buf_printf(&t, "4.4.2 %s", why);
	c->job = NULL;
	c->waiting = 0;
	c->qr->srv->holds--;
	rconn_unlock(c);
	rmsg_release(j->m);
	job_fail_all(j, DELIVER_TEMPFAIL, t.data, c, NULL);
	buf_free(&t);
}

static void
rconn_idle_cb(evutil_socket_t fd, short what, void *arg)
{
	struct rconn *c = arg;
	rconn_end(c, 1);
}

/* The connection has nothing to do: wait for a job, or end. */
static void
rconn_idle(struct rconn *c)
{
	struct dest *d = c->d;
	if (!smtp_client_usable(c->cl) || smtp_client_txns(c->cl) >= REUSE_MAX_TXNS ||
	    d->qr->srv->stopping) {
		rconn_end(c, 1);
		return;
	}
	struct rjob *j = dest_pop(d);
	if (j) {
		rconn_take(c, j);
		return;
	}
	c->next = d->idle;
	c->prev = NULL;
	if (d->idle)
		d->idle->prev = c;
	d->idle = c;
	smtp_client_idle(c->cl, 0);
	if (c->idle_timer == NULL)
		c->idle_timer = evtimer_new(d->qr->srv->base, rconn_idle_cb, c);
	struct timeval tv = {REUSE_IDLE_SECS, 0};
	evtimer_add(c->idle_timer, &tv);
}

/*
 * Whether RCPT refused r with 452 (or 552, which RFC 5321 4.5.3.1.10 says
 * to take as 452), as a peer past its recipient limit does.
 */
static int
rcpt_over_limit(const struct smtp_client_rcpt *r)
{
	return r->status == SMTP_RCPT_TEMP && r->over_limit;
}

/*
 * RFC 5321 4.5.3.1.10: a peer past its own recipient limit answers 452 (or
 * the historical 552) to the rest, and (4.5.3.1.8) the client sends them
 * in another transaction.
 * When j's transaction delivered to some recipients, the ones refused so
 * make a new job for the next transaction, not a retry interval later;
 * NULL when there are none. (Only after a success: a peer that takes none
 * is not asked again and again.)
 */
static struct rjob *
rjob_split_over_limit(const struct rjob *j)
{
	size_t n = 0;
	int ok = 0;

	for (size_t i = 0; i < j->n; i++) {
		if (j->rcpts[i].status == SMTP_RCPT_OK)
			ok = 1;
		else if (rcpt_over_limit(&j->rcpts[i]))
			n++;
	}
	if (!ok || n == 0)
		return NULL;
	struct rjob *nj = xcalloc(1, sizeof(*nj));
	nj->m = j->m;
	nj->idx = xcalloc(n, sizeof(*nj->idx));
	nj->addrs = xcalloc(n, sizeof(*nj->addrs));
	nj->orcpts = xcalloc(n, sizeof(*nj->orcpts));
	nj->rcpts = xcalloc(n, sizeof(*nj->rcpts));
	for (size_t i = 0; i < j->n; i++) {
		if (!rcpt_over_limit(&j->rcpts[i]))
			continue;
		size_t k = nj->n++;
		nj->idx[k] = j->idx[i];
		nj->addrs[k] = xstrdup(j->addrs[i]);
		nj->orcpts[k] = j->orcpts[i] ? xstrdup(j->orcpts[i]) : NULL;
		nj->rcpts[k].addr = nj->addrs[k];
		nj->rcpts[k].orcpt = nj->orcpts[k];
		nj->rcpts[k].notify = j->rcpts[i].notify;
	}
	return nj;
}

/* The transaction of c->job is over. */
static void
rconn_txn_done(struct rconn *c)
{
	struct rjob *j = c->job;
	if (j->txn.retry) {
		if (j->tries + 1 < JOB_TRIES) {
			char esc[400];
			log_msg(LL_INFO, j->m->session,
				"outbound id=%s host=%s ip=%s: session lost (%s), trying again",
				j->m->id, c->host, c->ip,
				log_esc(esc, sizeof(esc), smtp_client_error(c->cl)));
		}
		rconn_job_lost(c, smtp_client_error(c->cl));
		rconn_idle(c);
		return;
	}
	c->job = NULL;
	struct rjob *more = rjob_split_over_limit(j);
	for (size_t i = 0; i < j->n; i++) {
		const struct smtp_client_rcpt *r = &j->rcpts[i];
		if (more && rcpt_over_limit(r))
			continue;
		enum deliver_result res = r->status == SMTP_RCPT_OK	? DELIVER_OK
					  : r->status == SMTP_RCPT_PERM ? DELIVER_PERMFAIL
									: DELIVER_TEMPFAIL;
		job_report(j, i, res, r->text ? r->text : "4.4.2 no result", c, NULL);
	}
	struct rmsg *m = j->m;
	rjob_free(j);
	if (more) {
		log_msg(LL_INFO, m->session,
			"outbound id=%s host=%s ip=%s: %zu recipients over the peer's limit go in "
			"the next transaction",
			m->id, c->host, c->ip, more->n);
		m->njobs++;
		dest_push(c->d, more, 1);
	}
	/* Let go before the queue hears the transport is done: the results
	 * hold their own duplicate, and a job that retires the file converts
	 * that to exclusive, which this description would make wait. */
	rconn_unlock(c);
	rmsg_release(m);
	rmsg_job_done(m);
	c->qr->srv->holds--;
	rconn_idle(c);
}

static void
rconn_client_cb(struct smtp_client *cl, enum smtp_client_event ev, void *arg)
{
	struct rconn *c = arg;
	struct dest *d = c->d;

	if (c->closing) {
		if (ev == SMTP_CLIENT_FAILED)
			rconn_free(c);
		return;
	}
	switch (ev) {
	case SMTP_CLIENT_READY:
		if (!c->ready) {
			c->ready = 1;
			d->nwalking--;
			rconn_walk_reset(c);
			log_msg(LL_DEBUG, NULL, "outbound dest=%s: connected to %s tls=%s", d->key,
				c->remote, smtp_client_tls_desc(cl));
		}
		rconn_idle(c);
		return;
	case SMTP_CLIENT_TXN_DONE:
		rconn_txn_done(c);
		return;
	case SMTP_CLIENT_FAILED:
		if (c->job) {
			/* Lost before its transaction began on the wire (waiting
			 * for the content, say). */
			char code[16];
			rconn_job_lost(c, skip_enhanced(smtp_client_error(cl), code));
		}
		if (c->ready) {
			/* An idle session ended. */
			rconn_end(c, 0);
			return;
		}
		/* Still walking: note why and try the next address. */
		buf_reset(&c->last_error);
		buf_puts(&c->last_error, smtp_client_error(cl));
		buf_reset(&c->last_reply);
		buf_puts(&c->last_reply, smtp_client_error_reply(cl));
		xsnprintf(c->last_remote, sizeof(c->last_remote), "%s", c->remote);
		xsnprintf(c->last_perm, sizeof(c->last_perm), "%s", smtp_client_error_status(cl));
		{
			char esc[400];
			log_msg(LL_INFO, NULL, "outbound dest=%s: %s", d->key,
				log_esc(esc, sizeof(esc), smtp_client_error(cl)));
		}
		if (smtp_client_error_tls(cl) && c->tls_now == SMTP_CLIENT_TLS_MAY) {
			/* Opportunistic TLS failed: the same address once more in clear. */
			smtp_client_free(&c->cl);
			c->tls_now = SMTP_CLIENT_TLS_NONE;
			struct dns_addr a = c->addrs[c->ai - 1];
			sa_set_port(&a, c->port);
			rconn_connect(c, &a);
			return;
		}
		smtp_client_free(&c->cl);
		rconn_next_addr(c);
		return;
	}
}

/*
 * Start connections for waiting jobs, within the limit; reuse idle ones.
 * Frees d when nothing is left there.
 */
static void
dest_run(struct dest *d)
{
	const struct config *cfg = d->qr->srv->cfg;
	d->hold++;
	while (d->wait_head && !d->qr->srv->stopping) {
		if (d->idle) {
			struct rconn *c = d->idle;
			rconn_take(c, dest_pop(d));
			continue;
		}
		if (d->nwalking >= d->nwait ||
		    d->nconns >= (unsigned)cfg->outbound_destination_limit)
			break;
		rconn_start(d);
	}
	d->hold--;
	dest_maybe_free(d);
}

/* ---- content: read when a connection takes a job ---- */

struct load_job {
	struct queue_remote *qr;
	struct rmsg *m;
	char *dir;
	struct buf content;
	struct buf err;
	int rc;
};

static void
load_work(void *arg)
{
	struct load_job *lj = arg;
	struct spool_msg tmp;
	/* The queue retires a file only after queue_remote_done(): another
	 * message in it is never expected (`surat queue delete` may have
	 * removed it). */
	lj->rc = spool_load(lj->dir, lj->m->file, lj->m->id, &tmp, &lj->content, &lj->err);
	if (lj->rc == 0)
		spool_msg_free(&tmp);
}

static void load_done(void *arg);

static void
rmsg_load(struct rmsg *m)
{
	struct queue_remote *qr = m->qr;
	struct load_job *lj = xcalloc(1, sizeof(*lj));
	struct buf dir = BUF_INIT(0);

	lj->qr = qr;
	lj->m = m;
	queue_dir(qr->srv->cfg->data_dir, &dir);
	lj->dir = buf_steal(&dir);
	buf_init(&lj->content, 0);
	buf_init(&lj->err, 0);
	qr->loads++;
	m->loading = 1;
	worker_submit(qr->srv->pool, load_work, load_done, lj);
}

/*
 * The connections waiting for m's content, taken off it (c->waiting
 * cleared, their jobs still theirs), in *out; how many. Collected first:
 * what is done with one may start or end other connections.
 */
static size_t
rmsg_waiters(struct queue_remote *qr, const struct rmsg *m, struct rconn ***out)
{
	size_t n = 0;
	*out = xcalloc(m->users ? m->users : 1, sizeof(**out));
	for (struct rconn *c = qr->conns; c && n < m->users; c = c->all_next) {
		if (c->waiting && c->job->m == m) {
			c->waiting = 0;
			(*out)[n++] = c;
		}
	}
	return n;
}

static void
load_done(void *arg)
{
	struct load_job *lj = arg;
	struct queue_remote *qr = lj->qr;
	struct rmsg *m = lj->m;
	struct rconn **w = NULL;
	size_t n;

	qr->loads--;
	m->loading = 0;
	if (qr->dead || m->orphan) {
		rmsg_free(m);
		if (qr->dead && qr->loads == 0)
			free(qr);
		goto out;
	}
	/* Past here m may be freed (its last job ending): only w is used. */
	n = rmsg_waiters(qr, m, &w);
	if (lj->rc < 0) {
		struct buf t = BUF_INIT(0);
		log_error("outbound id=%s: cannot read the queued message: %s", m->id,
			  buf_str(&lj->err));
		buf_printf(&t, "4.3.0 Cannot read the queued message: %s", buf_str(&lj->err));
		/* The jobs waiting fail; the message's others, when their turn comes. */
		for (size_t i = 0; i < n; i++) {
			struct rconn *c = w[i];
			struct rjob *j = c->job;
			c->job = NULL;
			qr->srv->holds--;
			rmsg_release(j->m);
			job_fail_all(j, DELIVER_TEMPFAIL, t.data, NULL, NULL);
			rconn_idle(c);
		}
		buf_free(&t);
		goto out;
	}
	if (n == 0) {
		/* Nobody waits any more (their sessions were lost). */
		goto out;
	}
	m->content = lj->content;
	buf_init(&lj->content, 0);
	m->have_content = 1;
	/* RFC 6152 forbids 8-bit octets to a peer without 8BITMIME, not a
	 * BODY=8BITMIME the sender gave to 7-bit text: what is sent decides. */
	m->body_8bit = util_has_8bit(m->content.data ? m->content.data : "", m->content.len);
	m->hdr_utf8 = rmsg_hdr_utf8(m);
	for (size_t i = 0; i < n; i++) {
		struct rconn *c = w[i];
		if (qr->srv->stopping) {
			rconn_untake(c);
			rconn_end(c, 1);
		} else {
			rconn_send(c);
		}
	}
out:
	free(w);
	buf_free(&lj->content);
	buf_free(&lj->err);
	free(lj->dir);
	free(lj);
}

/* ---- the queue's entry point ---- */

/* The jobs of the messages handed over since go to their destinations. */
static void
start_cb(evutil_socket_t fd, short what, void *arg)
{
	struct queue_remote *qr = arg;
	struct rmsg *m;

	(void)fd;
	(void)what;
	while ((m = qr->start_head) != NULL) {
		qr->start_head = m->start_next;
		if (qr->start_head == NULL)
			qr->start_tail = NULL;
		m->start_next = NULL;
		struct rjob *jobs = m->jobs;
		m->jobs = NULL;
		if (jobs == NULL) {
			/* Every recipient was reported at once (bad domains). */
			rmsg_job_done(m);
			continue;
		}
		/* (m lives while a job of it is not done: the last push at least.) */
		while (jobs) {
			struct rjob *j = jobs;
			jobs = j->next;
			struct dest *d = j->d;
			/* Queued on d now: its wait list keeps d alive from here. */
			j->pinned = 0;
			d->nstarting--;
			dest_push(d, j, 0);
			dest_run(d);
		}
	}
}

static void
remote_deliver(void *ctx, struct queue *q, const struct spool_msg *msg, const size_t *idx, size_t n)
{
	struct queue_remote *qr = ctx;
	struct rmsg *m = xcalloc(1, sizeof(*m));

	m->qr = qr;
	memcpy(m->id, msg->id, sizeof(m->id));
	snprintf(m->file, sizeof(m->file), "%s", spool_file(msg));
	m->mail_from = xstrdup(msg->mail_from ? msg->mail_from : "");
	m->from_ascii = addr_ascii(m->mail_from);
	m->envid = msg->envid ? xstrdup(msg->envid) : NULL;
	m->session = xstrdup(msg->session ? msg->session : msg->id);
	m->ret = msg->ret_hdrs ? SMTP_RET_HDRS : msg->ret_full ? SMTP_RET_FULL : SMTP_RET_NONE;
	m->body_8bit = msg->body_8bit;
	m->smtputf8 = msg->smtputf8;
	m->created = msg->created;
	buf_init(&m->content, 0);
	m->next = qr->msgs;
	if (qr->msgs)
		qr->msgs->prev = m;
	qr->msgs = m;

	/* Group the recipients by destination: a job each (REMOTE_TXN_RCPTS at most). */
	struct rjob *tail = NULL;
	for (size_t k = 0; k < n; k++) {
		const struct spool_rcpt *rc = &msg->rcpts[idx[k]];
		const char *at = strrchr(rc->addr, '@');
		struct buf dom = BUF_INIT(0), err = BUF_INIT(0), why = BUF_INIT(0);
		struct dest *d = NULL;
		if (at && at[1] == '[')
			buf_puts(&dom, at + 1);
		else if (at == NULL || accounts_normalise_domain(at + 1, &dom, &err) < 0)
			buf_printf(&why, "5.1.2 Bad destination domain in <%s>", rc->addr);
		if (why.len == 0)
			d = dest_get(qr, dom.data, &why);
		struct rjob *j = NULL;
		if (d) {
			for (j = m->jobs; j; j = j->next)
				if (j->d == d && j->n < REMOTE_TXN_RCPTS)
					break;
		}
		if (j == NULL) {
			j = xcalloc(1, sizeof(*j));
			j->m = m;
			j->d = d;
			if (d) {
				/* d must live until the job is on it (start_cb). */
				d->nstarting++;
				j->pinned = 1;
			}
			m->njobs++;
			if (tail)
				tail->next = j;
			else
				m->jobs = j;
			tail = j;
		}
		j->idx = xrealloc(j->idx, (j->n + 1) * sizeof(*j->idx));
		j->addrs = xrealloc(j->addrs, (j->n + 1) * sizeof(*j->addrs));
		j->orcpts = xrealloc(j->orcpts, (j->n + 1) * sizeof(*j->orcpts));
		j->idx[j->n] = idx[k];
		j->addrs[j->n] = xstrdup(rc->addr);
		j->orcpts[j->n] = rc->orcpt ? xstrdup(rc->orcpt) : NULL;
		j->n++;
		if (d == NULL) {
			/* No destination: report now, the queue records it on its next pass. */
			job_report(j, j->n - 1,
				   why.data[0] == '5' ? DELIVER_PERMFAIL : DELIVER_TEMPFAIL,
				   why.data, NULL, NULL);
			j->n--;
			free(j->addrs[j->n]);
			free(j->orcpts[j->n]);
		}
		buf_free(&dom);
		buf_free(&err);
		buf_free(&why);
	}
	/* Drop the jobs that ended up empty (all their recipients reported). */
	for (struct rjob **pj = &m->jobs; *pj;) {
		struct rjob *j = *pj;
		if (j->n == 0) {
			*pj = j->next;
			rjob_free(j);
			m->njobs--;
			continue;
		}
		j->rcpts = xcalloc(j->n, sizeof(*j->rcpts));
		for (size_t i = 0; i < j->n; i++) {
			const struct spool_rcpt *rc = &msg->rcpts[j->idx[i]];
			j->rcpts[i].addr = j->addrs[i];
			j->rcpts[i].orcpt = j->orcpts[i];
			j->rcpts[i].notify = rc->notify;
		}
		pj = &j->next;
	}
	if (m->njobs == 0) {
		/* queue_remote_done() must not run inside deliver(): one job to end it. */
		m->njobs = 1;
	}
	/* Not from here: a job may end at once, and queue_remote_done() must
	 * come after deliver() returns. */
	if (qr->start_tail)
		qr->start_tail->start_next = m;
	else
		qr->start_head = m;
	qr->start_tail = m;
	event_active(qr->start_ev, 0, 0);
	(void)q;
}

/* ---- setup ---- */

char *
queue_remote_password(const char *path, struct buf *err)
{
	size_t len;
	char *p = util_read_file(path, 4096, &len);

	if (p == NULL) {
		buf_printf(err, "relayhost.password_file: open(%s) failed: %s", path,
			   strerror(errno));
		return NULL;
	}
	while (len > 0 && (p[len - 1] == '\n' || p[len - 1] == '\r'))
		p[--len] = '\0';
	if (len == 0 || memchr(p, '\0', len) != NULL || memchr(p, '\n', len) != NULL) {
		buf_printf(err, "relayhost.password_file %s: want one line with the password",
			   path);
		util_wipe(p, len);
		free(p);
		return NULL;
	}
	return p;
}

struct queue_remote *
queue_remote_new(struct server *srv, struct buf *err)
{
	const struct config *cfg = srv->cfg;
	struct queue_remote *qr = xcalloc(1, sizeof(*qr));

	qr->srv = srv;
	if (cfg->relayhost) {
		char *h;
		int port;
		if (config_parse_hostport(cfg->relayhost, &h, &port, (int)cfg->outbound_port) < 0) {
			buf_printf(err, "relayhost: bad value '%s' (want host[:port])",
				   cfg->relayhost);
			free(qr);
			return NULL;
		}
		free(h);
	}
	if (cfg->relayhost_user) {
		if (cfg->relayhost_password_file == NULL) {
			buf_puts(err, "relayhost.user needs relayhost.password_file");
			free(qr);
			return NULL;
		}
		qr->relay_pass = queue_remote_password(cfg->relayhost_password_file, err);
		if (qr->relay_pass == NULL) {
			free(qr);
			return NULL;
		}
	}
	qr->self = queue_self_new(&cfg->listen[LISTEN_SMTP]);
	qr->start_ev = event_new(srv->base, -1, 0, start_cb, qr);
	if (qr->start_ev == NULL)
		PANIC("event_new failed");
	struct queue_remote_ops ops = {remote_deliver, qr};
	queue_set_remote(srv->queue, &ops);
	return qr;
}

void
queue_remote_free(struct queue_remote **qrp)
{
	struct queue_remote *qr = *qrp;
	if (qr == NULL)
		return;
	*qrp = NULL;
	qr->srv->stopping = 1; /* nothing restarts while we take it apart */
	event_free(qr->start_ev);
	/* Jobs not yet on their destinations let go of them before they go. */
	for (struct rmsg *m = qr->start_head; m; m = m->start_next)
		for (struct rjob *j = m->jobs; j; j = j->next)
			rjob_unpin(j, 0);
	while (qr->conns) {
		struct rconn *c = qr->conns;
		if (c->job) {
			qr->srv->holds--;
			rjob_free(c->job);
		}
		rconn_free(c); /* unlinks it */
	}
	while (qr->dests) {
		struct dest *d = qr->dests;
		struct rjob *j;
		while ((j = dest_pop(d)) != NULL)
			rjob_free(j);
		qr->dests = d->next;
		free(d->key);
		free(d->domain);
		free(d);
	}
	while (qr->msgs) {
		struct rmsg *m = qr->msgs;
		qr->msgs = m->next;
		if (m->loading)
			m->orphan = 1;
		else
			rmsg_free(m);
	}
	if (qr->relay_pass) {
		util_wipe(qr->relay_pass, strlen(qr->relay_pass));
		free(qr->relay_pass);
		qr->relay_pass = NULL;
	}
	queue_self_free(&qr->self);
	if (qr->loads > 0) {
		qr->dead = 1;
		return;
	}
	free(qr);
}
