/*
 * server — the daemon's frame: the event loop, one listener per configured
 * address, accepted connections (struct conn) handed to the protocol of the
 * listener, per-listener and per-IP connection caps, TLS (implicit and
 * STARTTLS), signals (SIGTERM/SIGINT graceful stop, SIGHUP TLS reload) and
 * the privilege drop after binding.
 *
 * A protocol registers a struct proto_ops for its listener kinds. Its start
 * function owns the conn from then on: it sets the bufferevent callbacks,
 * and eventually calls conn_close() or conn_finish().
 *
 * SECURITY: listeners are bound before privileges are dropped and nothing
 * after the drop runs as root. Every connection counts against the caps
 * before any protocol byte is read.
 */
#ifndef SURAT_SERVER_H
#define SURAT_SERVER_H

#include <netinet/in.h>
#include <stdint.h>
#include <sys/socket.h>

#include <openssl/ssl.h>

#include "core/config.h"
#include "core/util.h"

struct event_base;
struct event;
struct bufferevent;
struct worker_pool;
struct accounts;
struct lockout;
struct ratelimit;
struct queue;
struct dns;
struct conn;
struct server;

struct proto_ops {
	const char *name;
	/* Take over a new connection. */
	void (*start)(struct conn *c);
	/* The line sent (after TLS, for implicit-TLS listeners) when over a cap. */
	const char *busy_reply;
};

struct conn {
	char id[17];			/* session id: 16 hex digits */
	enum listen_kind kind;
	struct server *srv;
	struct bufferevent *bev;
	SSL *ssl;			/* set once TLS is started */
	int tls;			/* 1 once TLS is on */
	char peer_ip[INET6_ADDRSTRLEN];
	char ip_key[UTIL_CLIENT_KEY_MAX];	/* counted under (util_client_key) */
	int peer_port;
	int64_t started_ms;
	void *proto;			/* the protocol's session */
	/* Called once from conn_close() so the protocol frees its session. */
	void (*on_close)(struct conn *c);
	/* Called when the daemon stops; the protocol should end the session soon. */
	void (*on_shutdown)(struct conn *c);
	/* internal */
	struct listener *l;
	struct conn *prev, *next;
	int closing;
	struct event *finish_ev;	/* conn_finish() waiting for TLS output; the linger's end */
	int64_t finish_deadline;	/* end of that wait */
	size_t linger_left;		/* input still to discard after the last reply */
	int no_linger;			/* conn_finish() closes outright */
	struct event *handshake_ev;	/* the TLS handshake's deadline */
};

struct server {
	struct event_base *base;
	struct config *cfg;
	struct worker_pool *pool;
	struct worker_pool *auth_pool; /* password hashing only: CPU-bound, a thread per CPU */
	struct accounts *accounts;
	struct lockout *lockout;	/* failed logins per client key, all protocols */
	struct ratelimit *ratelimit;	/* recipients sent per authenticated user */
	struct queue *queue;
	struct dns *dns;
	int stopping;
	/* Outbound transactions under way and their results not yet recorded: a
	 * graceful stop waits for them too (within shutdown_grace), or a peer that
	 * took a message would get it again after the restart. */
	unsigned holds;
	/* Message content SMTP sessions hold as they receive it (smtp.max_data_memory). */
	uint64_t smtp_data;
	/* Literal octets IMAP commands were promised (imap.max_literal_memory). */
	uint64_t imap_literals;
	/* internal */
	struct listener *listeners;
	struct conn *conns;
	unsigned nconns;
	struct ip_count **ipcounts;
	size_t ipcount_buckets;
	struct event *sig_term, *sig_int, *sig_hup, *stop_timer;
	int64_t stop_deadline;
	int reserve_fd;		/* spare descriptor, given up to refuse a client when out of them */
	int64_t emfile_logged_ms; /* last "out of descriptors" log line */
	unsigned emfile_refused;  /* clients refused since then */
	const struct proto_ops *protos[LISTEN_NKINDS];
};

/* Create the server: event base and worker pool. Never NULL. */
struct server *server_new(struct config *cfg);
/* Register the protocol that serves a listener kind. */
void server_register(struct server *srv, enum listen_kind kind, const struct proto_ops *ops);

/* What a client's connections hold in memory, counted per client key. */
enum ip_held {
	IP_HELD_SMTP,	/* message content (smtp.max_data_memory) */
	IP_HELD_IMAP,	/* literals (imap.max_literal_memory) */
	IP_HELD_N
};

/*
 * Add delta to what the connections of client key ip hold of kind; the new
 * total. 0, and nothing kept, once the key has no connection.
 */
uint64_t server_ip_held(struct server *srv, const char *ip, enum ip_held kind, int64_t delta);
/* Bind every configured listener. 0, or -1 with a message naming the address. */
int server_bind(struct server *srv, struct buf *err);
/*
 * If root: with run_as, chown data_dir to that user and drop privileges;
 * without, warn loudly. 0 or -1 + err.
 */
int server_drop_privileges(struct server *srv, struct buf *err);
/*
 * Make data_dir (if it exists) owned by user, then switch to that user for
 * good (setgroups, setgid, setuid). whole: every file below it; else only
 * its top level while data_dir itself is the user's already. 0 or -1 + err.
 */
int server_priv_drop(const char *user, const char *data_dir, int whole, struct buf *err);
/*
 * Whether data_dir, not yet run_as's, may be given to it whole: it holds
 * nothing but what surat makes there (and a file system's lost+found).
 * 0; 1 with err naming an entry that is not surat's; -1 with err set when
 * it cannot be read. A data_dir that does not exist yet is 0.
 */
int server_data_dir_foreign(const char *data_dir, struct buf *err);
/* Run the loop until a graceful stop completes. Returns 0. */
int server_run(struct server *srv);
/* Begin a graceful stop (what SIGTERM does). */
void server_stop(struct server *srv);
/* Free everything. */
void server_free(struct server **srv);

/* Wrap an open plaintext connection in TLS (STARTTLS) with ssl, taken from
 * tls_server_ssl() before the "ready" reply (so that a failure there can
 * still be answered instead); ssl is c's (or freed) from here on. Pending
 * input is discarded; output already queued (the reply) is sent first in
 * clear. The caller must set its callbacks on c->bev again. The socket
 * bufferevent below holds at most 64 KiB of TLS records (until
 * conn_finish()): the rest of the output waits in c->bev, where the caller
 * sees its backlog. Bounded so, OpenSSL may read while it writes: the read
 * callback may then run from inside a bufferevent_write(), under a caller
 * that is using the session, and must not act on the input there but come
 * again from the loop (bufferevent_trigger(), BEV_TRIG_DEFER_CALLBACKS).
 * 0, or -1. */
int conn_starttls(struct conn *c, SSL *ssl);
/*
 * Read what else the socket holds now into c's input buffer, until that
 * holds max bytes; for a protocol in the middle of bulk input (a message's
 * content). libevent 2.1 reads at most 4096 bytes per readiness
 * event (EVBUFFER_MAX_READ), each costing a trip through epoll_wait, ioctl
 * and readv: a 4 KB message plus its headers took two, a 1 MB one 256. Only
 * when the input holds at least such a full read (else the socket was
 * drained), on a plaintext connection (TLS records are read by the TLS
 * bufferevent), while reading is enabled. Called from a read callback, whose
 * caller must then go on processing the input as usual.
 */
void conn_read_more(struct conn *c, size_t max);
/* Close now: the protocol's on_close runs, then the conn is freed. */
void conn_close(struct conn *c);
/* Stop reading, send what is queued, then close (always later, from the loop:
 * the caller may go on using its session until it returns). Over TLS the
 * queued output is followed by close_notify. The close is a half-close:
 * on_close is called then, and what the client still sends is discarded for
 * a short while, so that no RST races the last reply; but not while
 * stopping, nor where no_linger is set: a client refused over a cap, and
 * after the client's own QUIT or LOGOUT. */
void conn_finish(struct conn *c);
/* Log prefix helper: the conn's session id. */
#define CONN_SID(c) ((c)->id)

#endif
