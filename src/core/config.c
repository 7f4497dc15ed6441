/*
 * config — see config.h. All keys live in config_keys[]: adding a key is one
 * line there, one field in struct config and one entry in docs/config.md.
 *
 * SECURITY: values are checked for type and range here so that the rest of
 * the daemon can trust struct config.
 */
#include "core/config.h"
#include "core/buf.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <idn2.h>

#define CONFIG_LINE_MAX 4096

enum config_type { CT_STRING, CT_BOOL, CT_DURATION, CT_SIZE, CT_UINT, CT_RESOLVERS, CT_NETWORKS,
		   CT_LOGLEVEL, CT_LISTEN, CT_TLSMODE, CT_HOSTNAME, CT_HOSTPORT, CT_DIR };

struct config_key {
	const char *name;
	enum config_type type;
	size_t off;
	int64_t min, max;	/* for numbers */
};

#define OFF(f) offsetof(struct config, f)

const char *const config_listen_names[LISTEN_NKINDS] = {
	"smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s", "http",
};

/* A table kept one key a line and tab-indented like the rest, not re-flowed. */
/* clang-format off */
static const struct config_key config_keys[] = {
	{"hostname", CT_HOSTNAME, OFF(hostname), 0, 0},
	{"data_dir", CT_DIR, OFF(data_dir), 0, 0},
	{"run_as", CT_STRING, OFF(run_as), 0, 0},
	{"listen.smtp", CT_LISTEN, OFF(listen[LISTEN_SMTP]), 0, 0},
	{"listen.submission", CT_LISTEN, OFF(listen[LISTEN_SUBMISSION]), 0, 0},
	{"listen.submissions", CT_LISTEN, OFF(listen[LISTEN_SUBMISSIONS]), 0, 0},
	{"listen.imap", CT_LISTEN, OFF(listen[LISTEN_IMAP]), 0, 0},
	{"listen.imaps", CT_LISTEN, OFF(listen[LISTEN_IMAPS]), 0, 0},
	{"listen.pop3", CT_LISTEN, OFF(listen[LISTEN_POP3]), 0, 0},
	{"listen.pop3s", CT_LISTEN, OFF(listen[LISTEN_POP3S]), 0, 0},
	{"listen.http", CT_LISTEN, OFF(listen[LISTEN_HTTP]), 0, 0},
	{"tls.cert", CT_STRING, OFF(tls_cert), 0, 0},
	{"tls.handshake_timeout", CT_DURATION, OFF(tls_handshake_timeout), 1, 3600},
	{"tls.key", CT_STRING, OFF(tls_key), 0, 0},
	{"allow_plaintext_auth", CT_BOOL, OFF(allow_plaintext_auth), 0, 1},
	{"log.level", CT_LOGLEVEL, OFF(log_level), 0, 0},
	{"log.syslog", CT_BOOL, OFF(log_syslog), 0, 1},
	{"shutdown_grace", CT_DURATION, OFF(shutdown_grace), 0, 3600},
	{"state_save_interval", CT_DURATION, OFF(state_save_interval), 1, 86400},
	{"max_connections", CT_UINT, OFF(max_connections), 1, 1000000},
	{"max_connections_per_ip", CT_UINT, OFF(max_connections_per_ip), 1, 1000000},
	{"max_connections_ipv6_prefix", CT_UINT, OFF(max_connections_ipv6_prefix), 1, 128},
	{"workers", CT_UINT, OFF(workers), 1, 256},
	{"smtp.max_message_size", CT_SIZE, OFF(smtp_max_message_size), 1024, (int64_t)1 << 31},
	{"smtp.max_data_memory", CT_SIZE, OFF(smtp_max_data_memory), (int64_t)1 << 20,
	 (int64_t)1 << 40},
	{"smtp.max_recipients", CT_UINT, OFF(smtp_max_recipients), 1, 100000},
	{"smtp.max_errors", CT_UINT, OFF(smtp_max_errors), 1, 1000},
	{"smtp.max_junk_commands", CT_UINT, OFF(smtp_max_junk), 0, 1000000},
	{"smtp.command_timeout", CT_DURATION, OFF(smtp_cmd_timeout), 1, 86400},
	{"smtp.data_timeout", CT_DURATION, OFF(smtp_data_timeout), 1, 86400},
	{"smtp.min_data_rate", CT_SIZE, OFF(smtp_min_data_rate), 0, (int64_t)1 << 30},
	{"smtp.max_hops", CT_UINT, OFF(smtp_max_hops), 1, 1000},
	{"smtp.reverse_lookup", CT_BOOL, OFF(smtp_reverse_lookup), 0, 1},
	{"auth.fail_delay", CT_DURATION, OFF(auth_fail_delay), 0, 60},
	{"auth.lockout_failures", CT_UINT, OFF(auth_lockout_failures), 0, 1000000},
	{"auth.lockout_window", CT_DURATION, OFF(auth_lockout_window), 1, 86400 * 7},
	{"auth.lockout_exempt", CT_NETWORKS, OFF(auth_lockout_exempt), 0, 0},
	{"submission.rate_limit", CT_UINT, OFF(submission_rate_limit), 0, 1000000},
	{"submission.rate_window", CT_DURATION, OFF(submission_rate_window), 60, 86400 * 7},
	{"submission.received_user", CT_BOOL, OFF(submission_received_user), 0, 1},
	{"user.quota", CT_SIZE, OFF(user_quota), 0, INT64_MAX},
	{"queue.retry_interval", CT_DURATION, OFF(queue_retry_interval), 1, 86400 * 7},
	{"queue.retry_max", CT_DURATION, OFF(queue_retry_max), 1, 86400 * 7},
	{"queue.max_age", CT_DURATION, OFF(queue_max_age), 1, 86400 * 365},
	{"queue.delay_warning", CT_DURATION, OFF(queue_delay_warning), 0, 86400 * 365},
	{"queue.min_free", CT_SIZE, OFF(queue_min_free), 0, INT64_MAX},
	{"relayhost", CT_HOSTPORT, OFF(relayhost), 0, 0},
	{"relayhost.user", CT_STRING, OFF(relayhost_user), 0, 0},
	{"relayhost.password_file", CT_STRING, OFF(relayhost_password_file), 0, 0},
	{"outbound.port", CT_UINT, OFF(outbound_port), 1, 65535},
	{"outbound.tls", CT_TLSMODE, OFF(outbound_tls), 0, 0},
	{"outbound.connect_timeout", CT_DURATION, OFF(outbound_connect_timeout), 1, 3600},
	{"outbound.command_timeout", CT_DURATION, OFF(outbound_command_timeout), 1, 3600},
	{"outbound.data_timeout", CT_DURATION, OFF(outbound_data_timeout), 1, 3600},
	{"outbound.destination_limit", CT_UINT, OFF(outbound_destination_limit), 1, 1000},
	{"outbound.address_limit", CT_UINT, OFF(outbound_address_limit), 0, 1000},
	{"dns.server", CT_RESOLVERS, OFF(dns_servers), 0, 0},
	{"imap.max_line", CT_SIZE, OFF(imap_max_line), 1024, 1 << 20},
	{"imap.max_literal", CT_SIZE, OFF(imap_max_literal), 1024, (int64_t)1 << 31},
	{"imap.max_literal_memory", CT_SIZE, OFF(imap_max_literal_memory), (int64_t)1 << 20,
	 (int64_t)1 << 40},
	{"imap.idle_timeout", CT_DURATION, OFF(imap_idle_timeout), 60, 86400},
	{"pop3.idle_timeout", CT_DURATION, OFF(pop3_idle_timeout), 600, 86400},
	{"login_timeout", CT_DURATION, OFF(login_timeout), 1, 3600},
	{"store.cached_handles", CT_UINT, OFF(store_cached_handles), 0, 100000},
	{"store.cache_memory", CT_SIZE, OFF(store_cache_memory), 0, INT64_MAX},
};
/* clang-format on */

void
config_defaults(struct config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->hostname = xstrdup("localhost");
	cfg->data_dir = xstrdup("/var/lib/surat");
	cfg->log_level = LL_INFO;
	cfg->shutdown_grace = 10;
	cfg->state_save_interval = 60;
	cfg->max_connections = 2000;
	cfg->max_connections_per_ip = 50;
	cfg->max_connections_ipv6_prefix = 64;
	cfg->workers = 16;
	cfg->tls_handshake_timeout = 60;
	cfg->smtp_max_message_size = 25 * 1024 * 1024;
	cfg->smtp_max_data_memory = (int64_t)512 << 20;
	cfg->smtp_max_recipients = 100;
	cfg->smtp_max_errors = 10;
	cfg->smtp_max_junk = 100;
	cfg->smtp_cmd_timeout = 300;
	cfg->smtp_data_timeout = 600;
	cfg->smtp_min_data_rate = 500;
	cfg->smtp_max_hops = 100;
	cfg->smtp_reverse_lookup = 1;
	cfg->auth_fail_delay = 2;
	cfg->auth_lockout_failures = 10;
	cfg->auth_lockout_window = 15 * 60;
	cfg->submission_rate_limit = 1000;
	cfg->submission_rate_window = 3600;
	cfg->user_quota = 0;
	cfg->queue_retry_interval = 15 * 60;
	cfg->queue_retry_max = 15 * 60;
	cfg->queue_max_age = 5 * 86400;
	cfg->queue_delay_warning = 4 * 3600;
	cfg->queue_min_free = -1;	/* config_min_free(): 1.5 x smtp.max_message_size */
	cfg->outbound_port = 25;
	cfg->outbound_tls = xstrdup("may");
	cfg->outbound_connect_timeout = 30;
	cfg->outbound_command_timeout = 300;
	cfg->outbound_data_timeout = 600;
	cfg->outbound_destination_limit = 10;
	cfg->outbound_address_limit = 5;
	cfg->imap_max_line = 64 * 1024;
	cfg->imap_max_literal = 50 * 1024 * 1024;
	cfg->imap_max_literal_memory = (int64_t)512 << 20;
	cfg->imap_idle_timeout = 30 * 60;
	cfg->pop3_idle_timeout = 10 * 60;
	cfg->login_timeout = 3 * 60;
	cfg->store_cached_handles = 128;
	cfg->store_cache_memory = 64 * 1024 * 1024;
}

int64_t
config_min_free(const struct config *cfg)
{
	if (cfg->queue_min_free >= 0)
		return cfg->queue_min_free;
	return cfg->smtp_max_message_size / 2 * 3;
}

int64_t
config_data_memory(const struct config *cfg)
{
	int64_t one = cfg->smtp_max_message_size;
	return cfg->smtp_max_data_memory > one ? cfg->smtp_max_data_memory : one;
}

int64_t
config_literal_memory(const struct config *cfg)
{
	int64_t one = cfg->imap_max_literal;
	return cfg->imap_max_literal_memory > one ? cfg->imap_max_literal_memory : one;
}

int64_t
config_client_share(int64_t all, int64_t one)
{
	return all / 4 > one ? all / 4 : one;
}

static void
strlist_free(struct strlist *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	l->v = NULL;
	l->n = 0;
}

void
config_free(struct config *cfg)
{
	for (size_t i = 0; i < ARRAY_LEN(config_keys); i++) {
		const struct config_key *k = &config_keys[i];
		void *p = (char *)cfg + k->off;
		if (k->type == CT_STRING || k->type == CT_TLSMODE || k->type == CT_HOSTNAME ||
		    k->type == CT_HOSTPORT || k->type == CT_DIR) {
			free(*(char **)p);
			*(char **)p = NULL;
		} else if (k->type == CT_RESOLVERS || k->type == CT_LISTEN ||
			   k->type == CT_NETWORKS) {
			strlist_free(p);
		}
	}
	for (size_t i = 0; i < cfg->nroutes; i++) {
		free(cfg->routes[i].domain);
		free(cfg->routes[i].host);
	}
	free(cfg->routes);
	cfg->routes = NULL;
	cfg->nroutes = 0;
	free(cfg->path);
	cfg->path = NULL;
}

/* Split "num[unit]"; unit table gives multipliers. */
static int
parse_scaled(const char *s, const char *units, const int64_t *mult, int64_t *r)
{
	size_t n = strlen(s), digits = 0;
	uint64_t v;
	int64_t m = 1;

	while (digits < n && isdigit((unsigned char)s[digits]))
		digits++;
	if (digits == 0 || util_parse_u64(s, digits, &v) < 0 || v > INT64_MAX)
		return -1;
	if (digits < n) {
		if (digits + 1 != n)
			return -1;
		const char *u = strchr(units, tolower((unsigned char)s[digits]));
		if (u == NULL || s[digits] == '\0')
			return -1;
		m = mult[u - units];
	}
	if ((int64_t)v > INT64_MAX / m)
		return -1;
	*r = (int64_t)v * m;
	return 0;
}

int
config_parse_duration(const char *s, int64_t *r)
{
	static const int64_t mult[] = {1, 60, 3600, 86400, 604800};
	return parse_scaled(s, "smhdw", mult, r);
}

int
config_parse_size(const char *s, int64_t *r)
{
	static const int64_t mult[] = {1, 1024, 1024 * 1024, 1024 * 1024 * 1024};
	return parse_scaled(s, "bkmg", mult, r);
}

int
config_parse_hostport(const char *s, char **host_r, int *port_r, int default_port)
{
	const char *colon;
	char *host;
	uint64_t port = (uint64_t)default_port;

	if (*s == '[') {
		const char *end = strchr(s, ']');
		if (end == NULL || end == s + 1)
			return -1;
		host = xstrndup(s + 1, (size_t)(end - s - 1));
		colon = end[1] == ':' ? end + 1 : NULL;
		if (end[1] != '\0' && colon == NULL) {
			free(host);
			return -1;
		}
	} else {
		colon = strrchr(s, ':');
		if (colon && strchr(s, ':') != colon)
			return -1;	/* bare IPv6 needs brackets */
		host = colon ? xstrndup(s, (size_t)(colon - s)) : xstrdup(s);
		if (*host == '\0') {
			free(host);
			return -1;
		}
	}
	if (colon) {
		if (util_parse_u64(colon + 1, strlen(colon + 1), &port) < 0 || port == 0 ||
		    port > 65535) {
			free(host);
			return -1;
		}
	} else if (default_port <= 0) {
		free(host);
		return -1;
	}
	*host_r = host;
	*port_r = (int)port;
	return 0;
}

/*
 * Dot-separated labels of 1 to 63 letters and digits, s[0..n) at most 253
 * octets; strict: inner hyphens too (RFC 1123 2.1), else also '_' and any
 * hyphen, as DNS names may hold (valid_relay_host()).
 */
static int
valid_labels(const char *s, size_t n, int strict)
{
	size_t label = 0;

	if (n == 0 || n > 253)
		return 0;
	for (size_t i = 0; i <= n; i++) {
		unsigned char c = i < n ? (unsigned char)s[i] : '.';
		if (c == '.') {
			if (label == 0 || label > 63 || (strict && s[i - 1] == '-'))
				return 0;
			label = 0;
		} else if (isalnum(c) || (c == '-' && (!strict || label > 0)) || (c == '_' && !strict)) {
			label++;
		} else {
			return 0;
		}
	}
	return 1;
}

/*
 * A host name as the greeting, EHLO and Message-IDs carry it: dot-separated
 * labels of letters, digits and inner hyphens (RFC 1123 2.1), at most 253
 * octets. Anything else would be sent to every peer, or (empty) crash the
 * first session that names it.
 */
static int
valid_hostname(const char *s)
{
	return valid_labels(s, strlen(s), 1);
}

/*
 * The host of relayhost or a route: an IP address, or a name the resolver
 * can look up (labels of letters, digits, '-' and '_'; a trailing dot).
 * Else the mail for it waits in the queue until it bounces, and only the
 * delivery log says why.
 */
static int
valid_relay_host(const char *host)
{
	unsigned char bin[sizeof(struct in6_addr)];
	size_t n = strlen(host);

	if (inet_pton(AF_INET, host, bin) == 1 || inet_pton(AF_INET6, host, bin) == 1)
		return 1;
	if (n > 1 && host[n - 1] == '.')
		n--;
	return valid_labels(host, n, 0);
}

/* A relayhost or route value, "host[:port]": 0, or -1 when it is none. */
static int
valid_relay(const char *value)
{
	char *host;
	int port;

	if (config_parse_hostport(value, &host, &port, 25) < 0)
		return -1;
	int ok = valid_relay_host(host);
	free(host);
	return ok ? 0 : -1;
}

/*
 * The domain of a route.DOMAIN key in the form the queue compares a
 * recipient's domain with (lowercase, A-label, no trailing dot), or an
 * address literal as RCPT names it; malloc'd, or NULL when it is neither.
 * Kept as written, münchen.example or example.org. matched no recipient.
 */
static char *
route_domain(const char *s)
{
	size_t n = strlen(s);

	if (s[0] == '[')
		return n > 2 && s[n - 1] == ']' ? util_lower(xstrdup(s)) : NULL;
	if (n > 0 && s[n - 1] == '.')
		n--;
	char *d = xstrndup(s, n);
	if (util_has_8bit(d, n)) {
		char *alabel = NULL;
		int rc = idn2_to_ascii_8z(d, &alabel, IDN2_NONTRANSITIONAL);
		free(d);
		d = rc == IDN2_OK ? xstrdup(alabel) : NULL;
		idn2_free(alabel);
	}
	if (d != NULL && !valid_hostname(util_lower(d))) {
		free(d);
		d = NULL;
	}
	return d;
}

/* "addr[@port]" as libunbound's ub_ctx_set_fwd() takes it: an IP address. */
static int
valid_resolver(const char *s)
{
	const char *at = strchr(s, '@');
	char addr[INET6_ADDRSTRLEN];
	unsigned char bin[sizeof(struct in6_addr)];
	uint64_t port;
	size_t n = at ? (size_t)(at - s) : strlen(s);

	if (n == 0 || n >= sizeof(addr))
		return 0;
	memcpy(addr, s, n);
	addr[n] = '\0';
	if (inet_pton(AF_INET, addr, bin) != 1 && inet_pton(AF_INET6, addr, bin) != 1)
		return 0;
	return at == NULL || (util_parse_u64(at + 1, strlen(at + 1), &port) == 0 && port > 0 &&
			      port <= 65535);
}

/* "IP:port" or "[IP]:port": the daemon binds it as it is, never resolving a name. */
static int
valid_listen(const char *s)
{
	unsigned char bin[sizeof(struct in6_addr)];
	char *host;
	int port, ok;

	if (config_parse_hostport(s, &host, &port, 0) < 0)
		return 0;
	ok = inet_pton(AF_INET, host, bin) == 1 || inet_pton(AF_INET6, host, bin) == 1;
	free(host);
	return ok;
}

/* The address of a valid listen entry, as bytes and port, to compare two. */
static void
listen_key(const char *s, unsigned char key[sizeof(struct in6_addr) + 3])
{
	char *host;
	int port;

	memset(key, 0, sizeof(struct in6_addr) + 3);
	if (config_parse_hostport(s, &host, &port, 0) < 0)
		return;
	key[0] = inet_pton(AF_INET, host, key + 3) == 1 ? 4 : 6;
	if (key[0] == 6)
		inet_pton(AF_INET6, host, key + 3);
	key[1] = (unsigned char)(port >> 8);
	key[2] = (unsigned char)port;
	free(host);
}

/* Whether a listen_key()'s address is the wildcard (0.0.0.0 or ::). */
static int
listen_key_any(const unsigned char key[sizeof(struct in6_addr) + 3])
{
	for (size_t i = 3; i < sizeof(struct in6_addr) + 3; i++)
		if (key[i] != 0)
			return 0;
	return 1;
}

/*
 * The same address under two listen keys (or twice under one), or an
 * address and the wildcard of its family on the same port: serve would
 * fail to bind the second with "Address already in use", which reads as
 * another program holding the port. 0, or -1 with err set.
 */
static int
listen_dupes(const struct config *cfg, const char *path, struct buf *err)
{
	struct seen {
		unsigned char key[sizeof(struct in6_addr) + 3];
		int kind;
		const char *addr;
	} *seen = NULL;
	size_t n = 0;
	int rc = 0;

	for (int i = 0; rc == 0 && i < LISTEN_NKINDS; i++)
		for (size_t m = 0; rc == 0 && m < cfg->listen[i].n; m++) {
			seen = xrealloc(seen, (n + 1) * sizeof(*seen));
			listen_key(cfg->listen[i].v[m], seen[n].key);
			seen[n].kind = i;
			seen[n].addr = cfg->listen[i].v[m];
			for (size_t k = 0; rc == 0 && k < n; k++) {
				if (memcmp(seen[k].key, seen[n].key, sizeof(seen[n].key)) == 0) {
					buf_printf(err, "%s: listen.%s and listen.%s both name %s",
						   path, config_listen_names[seen[k].kind],
						   config_listen_names[i], cfg->listen[i].v[m]);
					rc = -1;
				} else if (memcmp(seen[k].key, seen[n].key, 3) == 0 &&
					   (listen_key_any(seen[k].key) ||
					    listen_key_any(seen[n].key))) {
					buf_printf(
					    err,
					    "%s: listen.%s %s and listen.%s %s overlap: a "
					    "wildcard address takes its port on every address",
					    path, config_listen_names[seen[k].kind], seen[k].addr,
					    config_listen_names[i], seen[n].addr);
					rc = -1;
				}
			}
			n++;
		}
	free(seen);
	return rc;
}

/* A comma-separated list; each listener, resolver or network is checked here, not at start. */
static int
parse_list(const char *value, struct strlist *l, enum config_type type, struct buf *err)
{
	char *copy = xstrdup(value), *save = NULL;

	strlist_free(l);
	for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *t = util_trim(tok);
		if (*t == '\0')
			continue;
		if (type == CT_RESOLVERS && !valid_resolver(t)) {
			buf_printf(err, "bad resolver '%s' (want an IP address, or addr@port)", t);
			free(copy);
			return -1;
		}
		if (type == CT_NETWORKS && util_net_parse(t, &(struct util_net){0}) < 0) {
			buf_printf(err,
				   "bad network '%s' (want an IP address or address/prefix, "
				   "e.g. 192.0.2.0/24 or 2001:db8::/32)",
				   t);
			free(copy);
			return -1;
		}
		if (type == CT_LISTEN && !valid_listen(t)) {
			buf_printf(err, "bad address '%s' (want IP:port or [IPv6]:port)", t);
			free(copy);
			return -1;
		}
		l->v = xrealloc(l->v, (l->n + 1) * sizeof(char *));
		l->v[l->n++] = xstrdup(t);
	}
	free(copy);
	return 0;
}

/*
 * route.DOMAIN given again replaces the first, as every other key does: the
 * lookup takes the first match, so an override added lower in the file was
 * silently ignored.
 */
static int
route_set(struct config *cfg, char *domain, const char *hostport)
{
	size_t i;

	for (i = 0; i < cfg->nroutes; i++)
		if (strcmp(cfg->routes[i].domain, domain) == 0)
			break;
	if (i == cfg->nroutes) {
		cfg->routes = xrealloc(cfg->routes, (cfg->nroutes + 1) * sizeof(*cfg->routes));
		cfg->routes[i].domain = domain;
		cfg->nroutes++;
	} else {
		free(domain);
		free(cfg->routes[i].host);
	}
	cfg->routes[i].host = xstrdup(hostport);
	return 0;
}

/*
 * A limit in the unit the key takes, the largest that writes it whole:
 * "365d", not 31536000 seconds an admin must work back from; "1024G". 0
 * is 0 whatever the unit. Returns out.
 */
static const char *
scaled(char *out, size_t n, int64_t v, enum config_type type)
{
	static const int64_t dur[] = {86400, 3600, 60, 1}, size[] = {1 << 30, 1 << 20, 1024, 1};
	static const char dur_units[] = "dhms", size_units[] = "GMK";
	const int64_t *mult = type == CT_DURATION ? dur : size;
	const char *units = type == CT_DURATION ? dur_units : size_units;
	size_t i = 0;

	if (v == 0 || (type != CT_DURATION && type != CT_SIZE)) {
		snprintf(out, n, "%lld", (long long)v);
		return out;
	}
	while (v % mult[i] != 0)
		i++;
	snprintf(out, n, "%lld%.1s", (long long)(v / mult[i]), units + i);
	return out;
}

static int
config_set_one(struct config *cfg, const char *key, const char *value, struct buf *err)
{
	const struct config_key *k = NULL;

	if (strncmp(key, "route.", 6) == 0 && key[6] != '\0') {
		char *domain = route_domain(key + 6);
		if (domain == NULL) {
			char esc[256];
			buf_printf(err, "%s: '%s' is not a domain name", key,
				   log_esc(esc, sizeof(esc), key + 6));
			return -1;
		}
		if (valid_relay(value) < 0) {
			free(domain);
			buf_printf(err, "%s: bad value '%s' (want host[:port])", key, value);
			return -1;
		}
		return route_set(cfg, domain, value);
	}
	for (size_t i = 0; i < ARRAY_LEN(config_keys); i++) {
		if (strcmp(config_keys[i].name, key) == 0) {
			k = &config_keys[i];
			break;
		}
	}
	if (k == NULL) {
		/* Escaped: an invisible byte in a key (a BOM, a control) is what is wrong. */
		char esc[256];
		buf_printf(err, "unknown key '%s'", log_esc(esc, sizeof(esc), key));
		if (strncmp(key, "\xef\xbb\xbf", 3) == 0)
			buf_puts(err, " (the file starts with a UTF-8 byte order mark: save it without)");
		return -1;
	}
	void *p = (char *)cfg + k->off;
	int64_t v = 0;
	switch (k->type) {
	case CT_DIR:
		/* Relative, it would name another directory for a CLI run from
		 * elsewhere than the daemon: users added where it never looks. */
		if (*value != '/') {
			/* Empty, it was "data_dir must be set", naming no line. */
			buf_printf(err,
				   "%s: '%s' is not an absolute path (want e.g. /var/lib/surat)",
				   key, value);
			return -1;
		}
		__attribute__((fallthrough));
	case CT_STRING:
		free(*(char **)p);
		*(char **)p = *value ? xstrdup(value) : NULL;
		return 0;
	case CT_HOSTNAME:
		if (!valid_hostname(value)) {
			buf_printf(err, "%s: bad host name '%s' (want e.g. mx.example.org)", key,
				   value);
			return -1;
		}
		free(*(char **)p);
		*(char **)p = xstrdup(value);
		return 0;
	case CT_HOSTPORT: {
		/* Checked here, not when the daemon first sends: check-config sees it. */
		if (*value != '\0' && valid_relay(value) < 0) {
			buf_printf(err, "%s: bad value '%s' (want host[:port])", key, value);
			return -1;
		}
		free(*(char **)p);
		*(char **)p = *value ? xstrdup(value) : NULL;
		return 0;
	}
	case CT_TLSMODE:
		if (strcmp(value, "may") != 0 && strcmp(value, "require") != 0) {
			buf_printf(err, "%s: bad value '%s' (want may or require)", key, value);
			return -1;
		}
		free(*(char **)p);
		*(char **)p = xstrdup(value);
		return 0;
	case CT_BOOL:
		if (!strcasecmp(value, "yes") || !strcasecmp(value, "true") || !strcmp(value, "1") ||
		    !strcasecmp(value, "on"))
			*(int *)p = 1;
		else if (!strcasecmp(value, "no") || !strcasecmp(value, "false") ||
			 !strcmp(value, "0") || !strcasecmp(value, "off"))
			*(int *)p = 0;
		else {
			buf_printf(err, "%s: bad value '%s' (want yes or no)", key, value);
			return -1;
		}
		return 0;
	case CT_LOGLEVEL:
		if (log_level_parse(value, p) < 0) {
			buf_printf(err, "%s: bad value '%s' (want debug, info, warn or error)", key,
				   value);
			return -1;
		}
		return 0;
	case CT_RESOLVERS:
	case CT_NETWORKS:
	case CT_LISTEN: {
		struct buf e = BUF_INIT(0);
		if (parse_list(value, p, k->type, &e) < 0) {
			buf_printf(err, "%s: %s", key, buf_str(&e));
			buf_free(&e);
			return -1;
		}
		return 0;
	}
	case CT_DURATION:
		if (config_parse_duration(value, &v) < 0) {
			buf_printf(err, "%s: bad duration '%s' (want e.g. 30s, 15m, 4h, 5d)", key,
				   value);
			return -1;
		}
		break;
	case CT_SIZE:
		if (config_parse_size(value, &v) < 0) {
			buf_printf(err, "%s: bad size '%s' (want e.g. 512K, 25M, 1G)", key, value);
			return -1;
		}
		break;
	case CT_UINT: {
		uint64_t u;
		if (util_parse_u64(value, strlen(value), &u) < 0 || u > INT64_MAX) {
			buf_printf(err, "%s: bad number '%s'", key, value);
			return -1;
		}
		v = (int64_t)u;
		break;
	}
	}
	if (v < k->min || (k->max && v > k->max)) {
		char lo[32], hi[32];
		buf_printf(err, "%s: value '%s' out of range (%s to %s)", key, value,
			   scaled(lo, sizeof(lo), k->min, k->type),
			   scaled(hi, sizeof(hi), k->max, k->type));
		return -1;
	}
	*(int64_t *)p = v;
	return 0;
}

/*
 * err from start on, escaped for a terminal (log_escape_text()): the
 * messages echo values, and a line, as the file has them.
 */
static void
escape_tail(struct buf *err, size_t start)
{
	struct buf tmp = BUF_INIT(0);

	log_escape_text(&tmp, buf_str(err) + start);
	buf_truncate(err, start);
	buf_append(err, tmp.data, tmp.len);
	buf_free(&tmp);
}

int
config_set(struct config *cfg, const char *key, const char *value, struct buf *err)
{
	size_t start = err->len;
	int rc = config_set_one(cfg, key, value, err);

	if (rc < 0)
		escape_tail(err, start);
	return rc;
}

int
config_load(struct config *cfg, const char *path, struct buf *err)
{
	size_t start = err->len;
	FILE *fp = fopen(path, "re");
	char *line = NULL;
	size_t cap = 0;
	ssize_t got;
	unsigned lineno = 0;
	int rc = 0;

	if (fp == NULL) {
		buf_printf(err, "%s: cannot open: %s", path, strerror(errno));
		escape_tail(err, start);
		return -1;
	}
	free(cfg->path);
	cfg->path = xstrdup(path);
	/* getline(), not fgets(): its length shows a NUL, which strlen() took
	 * for the line's end, silently dropping the rest of the line. */
	while ((got = getline(&line, &cap, fp)) >= 0) {
		lineno++;
		size_t n = (size_t)got;
		if (n > CONFIG_LINE_MAX) {
			buf_printf(err, "%s:%u: line too long", path, lineno);
			rc = -1;
			break;
		}
		if (memchr(line, '\0', n) != NULL) {
			buf_printf(err, "%s:%u: NUL byte in line", path, lineno);
			rc = -1;
			break;
		}
		char *s = util_trim(line);
		if (*s == '\0' || *s == '#')
			continue;
		char *eq = strchr(s, '=');
		if (eq == NULL) {
			buf_printf(err, "%s:%u: expected 'key = value', got '%.60s'", path, lineno, s);
			rc = -1;
			break;
		}
		*eq = '\0';
		char *key = util_trim(s), *value = util_trim(eq + 1);
		if (*key == '\0') {
			buf_printf(err, "%s:%u: missing key before '='", path, lineno);
			rc = -1;
			break;
		}
		/*
		 * '#' starts only a comment line: "data_dir = /x # note" would
		 * be a data_dir with the note in it (check-config said ok).
		 */
		const char *hash = value;
		while ((hash = strchr(hash, '#')) != NULL && hash > value && hash[-1] != ' ' &&
		       hash[-1] != '\t')
			hash++;
		if (hash != NULL && hash > value) {
			buf_printf(err,
				   "%s:%u: %s: '#' after the value: a comment must be on a line of "
				   "its own",
				   path, lineno, key);
			rc = -1;
			break;
		}
		struct buf e = BUF_INIT(0);
		if (config_set(cfg, key, value, &e) < 0) {
			buf_printf(err, "%s:%u: %s", path, lineno, buf_str(&e));
			buf_free(&e);
			rc = -1;
			break;
		}
		buf_free(&e);
	}
	if (rc == 0 && ferror(fp)) {
		buf_printf(err, "%s: read error: %s", path, strerror(errno));
		rc = -1;
	}
	free(line);
	fclose(fp);
	if (rc == 0 && cfg->data_dir == NULL) {
		buf_printf(err, "%s: data_dir must be set", path);
		rc = -1;
	}
	if (rc == 0 && listen_dupes(cfg, path, err) < 0)
		rc = -1;
	if (rc == 0 && cfg->relayhost_user != NULL && cfg->relayhost_password_file == NULL) {
		buf_printf(err, "%s: relayhost.user needs relayhost.password_file", path);
		rc = -1;
	}
	if (rc == 0 && (cfg->tls_cert == NULL) != (cfg->tls_key == NULL)) {
		buf_printf(err, "%s: tls.cert and tls.key must be set together", path);
		rc = -1;
	}
	if (rc == 0 && cfg->tls_cert == NULL) {
		static const enum listen_kind tls_kinds[] = {LISTEN_SUBMISSIONS, LISTEN_IMAPS,
							      LISTEN_POP3S};
		for (size_t i = 0; i < ARRAY_LEN(tls_kinds); i++) {
			if (cfg->listen[tls_kinds[i]].n > 0) {
				buf_printf(err, "%s: listen.%s needs tls.cert and tls.key", path,
					   config_listen_names[tls_kinds[i]]);
				rc = -1;
				break;
			}
		}
	}
	if (rc == 0 && cfg->tls_cert == NULL && !cfg->allow_plaintext_auth) {
		/* These log nobody in without TLS, and without a certificate
		 * they cannot offer STARTTLS: every login would be refused. */
		static const enum listen_kind auth_kinds[] = {LISTEN_SUBMISSION, LISTEN_IMAP,
							      LISTEN_POP3};
		for (size_t i = 0; i < ARRAY_LEN(auth_kinds); i++) {
			if (cfg->listen[auth_kinds[i]].n > 0) {
				buf_printf(err,
					   "%s: listen.%s needs tls.cert and tls.key for STARTTLS "
					   "(or allow_plaintext_auth = yes)",
					   path, config_listen_names[auth_kinds[i]]);
				rc = -1;
				break;
			}
		}
	}
	if (rc < 0)
		escape_tail(err, start);
	return rc;
}
