/*
 * config — the surat.conf reader.
 *
 * Format: `key = value` lines, `#` comments, blank lines ignored, lists
 * comma-separated, durations `30s 15m 4h 5d` (a bare number is seconds),
 * sizes `512 64K 25M 1G` (a bare number is bytes), booleans yes/no. Every
 * key is in one table (config.c); an unknown key, a bad value or a missing
 * file is an error naming file:line and the key, and nothing starts.
 *
 * SECURITY: the file is trusted to the extent its owner is root, but it is
 * still parsed with bounds: a line over 4 KiB is an error.
 */
#ifndef SURAT_CONFIG_H
#define SURAT_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "core/log.h"

struct buf;

enum listen_kind {
	LISTEN_SMTP,
	LISTEN_SUBMISSION,
	LISTEN_SUBMISSIONS,
	LISTEN_IMAP,
	LISTEN_IMAPS,
	LISTEN_POP3,
	LISTEN_POP3S,
	LISTEN_HTTP,
	LISTEN_NKINDS
};

struct strlist {
	char **v;
	size_t n;
};

struct route {
	char *domain;	/* lowercase A-label, no trailing dot; or "[literal]" */
	char *host;	/* host[:port] */
};

struct config {
	char *path;
	char *hostname;
	char *data_dir;
	char *run_as;
	struct strlist listen[LISTEN_NKINDS];
	char *tls_cert;
	int64_t tls_handshake_timeout;
	char *tls_key;
	int allow_plaintext_auth;
	enum log_level log_level;
	int log_syslog;
	int64_t shutdown_grace;		/* seconds */
	int64_t state_save_interval;	/* seconds: rate limit and lockout to accounts.db */
	int64_t max_connections;	/* per listener */
	int64_t max_connections_per_ip;
	int64_t max_connections_ipv6_prefix;	/* IPv6 clients counted per prefix */
	int64_t workers;

	/* SMTP server */
	int64_t smtp_max_message_size;
	int64_t smtp_max_data_memory;	/* see config_data_memory() */
	int64_t smtp_max_recipients;
	int64_t smtp_max_errors;
	int64_t smtp_max_junk;
	int64_t smtp_cmd_timeout;
	int64_t smtp_data_timeout;
	int64_t smtp_min_data_rate;	/* octets/s DATA and BDAT must keep up; 0: none */
	int64_t smtp_max_hops;
	int smtp_reverse_lookup;	/* the client's name from the DNS */
	int64_t auth_fail_delay;	/* seconds (a CT_DURATION, as every duration here) */
	int64_t auth_lockout_failures;	/* per client key and window; 0: no lockout */
	int64_t auth_lockout_window;
	struct strlist auth_lockout_exempt; /* networks never counted nor refused */
	int64_t submission_rate_limit;	    /* recipients per user and window; 0: no limit */
	int64_t submission_rate_window;
	int submission_received_user; /* the account name in our Received: */

	/* Accounts */
	int64_t user_quota;		/* bytes; 0: unlimited */

	/* Queue */
	int64_t queue_retry_interval;
	int64_t queue_retry_max;
	int64_t queue_max_age;
	int64_t queue_delay_warning;
	int64_t queue_min_free;	/* -1: unset, see config_min_free() */

	/* Outbound */
	char *relayhost;
	char *relayhost_user;
	char *relayhost_password_file;
	int64_t outbound_port;
	char *outbound_tls;		/* "may" or "require" */
	int64_t outbound_connect_timeout;	/* seconds: TCP connect and TLS handshake */
	int64_t outbound_command_timeout;	/* seconds: greeting, EHLO, MAIL, RCPT, ... */
	int64_t outbound_data_timeout;		/* seconds: reply to the final dot */
	int64_t outbound_destination_limit;	/* connections per destination */
	int64_t outbound_address_limit;		/* addresses tried per walk; 0: all */
	struct strlist dns_servers;
	struct route *routes;
	size_t nroutes;

	/* IMAP / POP3 */
	int64_t imap_max_line;
	int64_t imap_max_literal;
	int64_t imap_max_literal_memory;	/* see config_literal_memory() */
	int64_t imap_idle_timeout;
	int64_t pop3_idle_timeout;
	int64_t login_timeout; /* seconds from accept to login, IMAP and POP3 */

	/* mailbox store */
	int64_t store_cached_handles; /* idle store handles kept open (store_pool) */
	int64_t store_cache_memory;   /* SQLite page caches of all handles, 0: no bound */
};

/* Names of the listen.* keys by kind ("smtp", "submission", ...). */
extern const char *const config_listen_names[LISTEN_NKINDS];

/* Fill cfg with the defaults. Call before config_load. */
void config_defaults(struct config *cfg);
/*
 * Read path into cfg (over the defaults). 0 on success; -1 with a message
 * "path:line: ..." in err.
 */
int config_load(struct config *cfg, const char *path, struct buf *err);
/* Free everything cfg owns. */
void config_free(struct config *cfg);
/*
 * Free space the spool's filesystem must keep for MAIL to be taken
 * (queue.min_free): as set, else 1.5 x smtp.max_message_size, as Postfix.
 */
int64_t config_min_free(const struct config *cfg);
/*
 * Message content all SMTP sessions may hold in memory as they receive it
 * (smtp.max_data_memory, never less than one message of
 * smtp.max_message_size); a client address, a quarter of it (never less
 * than one message either).
 */
int64_t config_data_memory(const struct config *cfg);
/* Literal octets all IMAP sessions may be promised at once (imap.max_literal_memory,
 * never less than one literal of imap.max_literal). */
int64_t config_literal_memory(const struct config *cfg);
/* What one client (its key: an IPv4 address, an IPv6 prefix) may hold of a
 * memory cap of all: a quarter, never less than one item of one octets. */
int64_t config_client_share(int64_t all, int64_t one);

/* Parse a duration ("15m") into seconds; 0 or -1. */
int config_parse_duration(const char *s, int64_t *r);
/* Parse a size ("25M") into bytes; 0 or -1. */
int config_parse_size(const char *s, int64_t *r);
/* Parse "host:port", "[v6]:port" into host (malloc'd) and port; 0 or -1. */
int config_parse_hostport(const char *s, char **host_r, int *port_r, int default_port);

/* Parse one `key = value` line's text (no file); for tests and the CLI. */
int config_set(struct config *cfg, const char *key, const char *value, struct buf *err);

#endif
