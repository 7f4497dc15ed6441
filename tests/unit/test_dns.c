/*
 * test_dns — the rdata parsers and name helpers (dns_rr), and the resolver
 * (dns) end to end against tests/unit/dns_server.py, a dnslib server on
 * 127.0.0.1 and a free port, serving a fixed zone under "example.".
 *
 * The server reads its stdin from a pipe this process holds, so it exits
 * when the test ends for any reason, even a crash; teardown kills it too,
 * and alarm() bounds the whole run.
 *
 * SECURITY: only loopback is ever contacted: every resolver here forwards
 * to the test server; none is created without forwarders except one that
 * is freed without a query.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#include "core/buf.h"
#include "core/util.h"
#include "dns/dns.h"
#include "dns/dns_rr.h"

#define PYTHON "/usr/bin/python3"
#define TEST_ALARM_S 60

/* The test server */

struct server {
	pid_t pid;
	int port;
	int stdin_fd; /* our end of the server's stdin: closing it stops it */
	char fwd[64]; /* "127.0.0.1@port" */
};

static struct server main_server = {.pid = -1, .stdin_fd = -1};

static int
test_free_udp_port(void)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);
	int fd = socket(AF_INET, SOCK_DGRAM, 0), port = -1;

	if (fd < 0)
		return -1;
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&sin, &len) == 0)
		port = ntohs(sin.sin_port);
	close(fd);
	return port;
}

static const char *
test_server_path(void)
{
	static char path[512];
	const char *file = __FILE__;
	const char *slash = strrchr(file, '/');
	int dirlen = slash ? (int)(slash - file) : 1;

	if (xsnprintf(path, sizeof(path), "%.*s/dns_server.py", dirlen, slash ? file : ".") < 0)
		return NULL;
	return path;
}

static void
test_server_stop(struct server *s)
{
	if (s->pid > 0) {
		kill(s->pid, SIGKILL);
		while (waitpid(s->pid, NULL, 0) < 0 && errno == EINTR)
			;
	}
	if (s->stdin_fd >= 0)
		close(s->stdin_fd);
	s->pid = -1;
	s->stdin_fd = -1;
}

/* Wait up to 5 s for "READY <port>" from the server. 0 or -1. */
static int
test_server_ready(int fd, int port)
{
	char line[64];
	size_t n = 0;

	while (n < sizeof(line) - 1) {
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		ssize_t r;

		if (poll(&pfd, 1, 5000) <= 0)
			return -1;
		r = read(fd, line + n, 1);
		if (r <= 0)
			return -1;
		if (line[n] == '\n')
			break;
		n++;
	}
	line[n] = '\0';
	char want[32];
	if (xsnprintf(want, sizeof(want), "READY %d", port) < 0)
		return -1;
	return strcmp(line, want) == 0 ? 0 : -1;
}

static int
test_server_start(struct server *s)
{
	const char *path = test_server_path();

	for (int attempt = 0; attempt < 10; attempt++) {
		int in[2], out[2], port = test_free_udp_port();
		char portstr[16];
		pid_t pid;

		if (port <= 0 || path == NULL || pipe2(in, O_CLOEXEC) < 0)
			return -1;
		if (pipe2(out, O_CLOEXEC) < 0) {
			close(in[0]);
			close(in[1]);
			return -1;
		}
		if (xsnprintf(portstr, sizeof(portstr), "%d", port) < 0)
			return -1;
		pid = fork();
		if (pid < 0)
			return -1;
		if (pid == 0) {
			dup2(in[0], 0);
			dup2(out[1], 1);
			execl(PYTHON, PYTHON, path, portstr, (char *)NULL);
			_exit(127);
		}
		close(in[0]);
		close(out[1]);
		s->pid = pid;
		s->stdin_fd = in[1];
		s->port = port;
		if (test_server_ready(out[0], port) == 0) {
			close(out[0]);
			if (xsnprintf(s->fwd, sizeof(s->fwd), "127.0.0.1@%d", port) < 0)
				return -1;
			return 0;
		}
		close(out[0]);
		test_server_stop(s); /* port taken meanwhile? try another */
	}
	return -1;
}

/* The loop and the callbacks */

static struct event_base *base;
static struct dns *dns;
static int outstanding; /* callbacks still expected before the loop stops */

struct slot {
	int called;
	const struct dns_result *res; /* a reference, released by slot_clear() */
	struct dns_query *q;
};

static void
slot_clear(struct slot *s)
{
	dns_result_unref(&s->res);
	s->called = 0;
}

static void
test_cb(const struct dns_result *res, void *arg)
{
	struct slot *s = arg;

	s->called++;
	s->q = NULL;
	dns_result_unref(&s->res);
	s->res = dns_result_ref(res);
	if (--outstanding <= 0)
		event_base_loopbreak(base);
}

static void
test_break_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	*(int *)arg = 1;
	event_base_loopbreak(base);
}

/* Run the loop until n callbacks came or ms passed; returns 0, or -1 on timeout. */
static int
run_until(int n, int ms)
{
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
	int expired = 0;
	struct event *t = evtimer_new(base, test_break_cb, &expired);

	outstanding = n;
	evtimer_add(t, &tv);
	if (n > 0)
		event_base_loop(base, 0);
	else
		while (!expired)
			event_base_loop(base, EVLOOP_ONCE);
	event_free(t);
	return outstanding > 0 && n > 0 ? -1 : 0;
}

/* Run the loop for ms whatever happens. */
static void
run_for(int ms)
{
	(void)run_until(0, ms);
}

static struct dns *
test_dns_new(unsigned timeout_ms, size_t cache_max, const struct server *srv)
{
	const char *servers[] = {srv->fwd};
	struct dns_config cfg = {
	    .servers = servers, .nservers = 1, .timeout_ms = timeout_ms, .cache_max = cache_max};
	struct buf err = BUF_INIT(0);
	struct dns *d = dns_new_config(base, &cfg, &err);

	if (d == NULL)
		fprintf(stderr, "dns_new_config: %s\n", buf_str(&err));
	buf_free(&err);
	return d;
}

static int
group_setup(void **state)
{
	(void)state;
	return test_server_start(&main_server);
}

static int
group_teardown(void **state)
{
	(void)state;
	test_server_stop(&main_server);
	return 0;
}

static int
setup(void **state)
{
	(void)state;
	base = event_base_new();
	if (base == NULL)
		return -1;
	dns = test_dns_new(2000, 0, &main_server);
	return dns ? 0 : -1;
}

static int
teardown(void **state)
{
	(void)state;
	dns_free(&dns);
	event_base_free(base);
	base = NULL;
	return 0;
}

/* Ask one question and wait for its answer (at most 3 s). */
static void
ask(struct slot *s, enum dns_type type, const char *name)
{
	slot_clear(s);
	s->q = dns_query(dns, name, type, test_cb, s);
	assert_non_null(s->q);
	assert_int_equal(run_until(1, 3000), 0);
	assert_int_equal(s->called, 1);
	assert_non_null(s->res);
}

/* rdata parsers */

#define NAME(s) dns_rr_name((const uint8_t *)(s), sizeof(s) - 1, &used, out)

static void
test_rr_name(void **state)
{
	char out[DNS_NAME_BUFSZ];
	uint8_t w[300];
	size_t used;

	(void)state;
	assert_int_equal(NAME("\003MX1\007Example\003com\000"), 0);
	assert_string_equal(out, "mx1.example.com");
	assert_int_equal(used, 17);
	/* trailing bytes are the caller's business: used tells where it ended */
	assert_int_equal(NAME("\001a\000zz"), 0);
	assert_int_equal(used, 3);
	assert_int_equal(NAME("\000"), 0);
	assert_string_equal(out, "");
	assert_int_equal(used, 1);

	/* malformed */
	assert_int_equal(NAME(""), -1);
	assert_int_equal(NAME("\003ab"), -1);
	assert_int_equal(NAME("\002ab"), -1);
	assert_string_equal(out, "");
	assert_int_equal(NAME("\300\014"), -1);	     /* compression pointer */
	assert_int_equal(NAME("\001a\300\014"), -1); /* after a label */
	assert_int_equal(NAME("\101a\000"), -1);     /* label type 01 */
	assert_int_equal(NAME("\201a\000"), -1);     /* label type 10 */
	assert_int_equal(NAME("\003a b\000"), -1);
	assert_int_equal(NAME("\003a.b\000"), -1);
	assert_int_equal(NAME("\003a\\b\000"), -1);
	assert_int_equal(NAME("\002a\000\000"), -1);
	assert_int_equal(NAME("\002\303\251\000"), -1);

	/* a label of 63 is fine, 64 is not */
	w[0] = 63;
	memset(w + 1, 'x', 63);
	w[64] = 0;
	assert_int_equal(dns_rr_name(w, 65, &used, out), 0);
	assert_int_equal(strlen(out), 63);
	w[0] = 64;
	memset(w + 1, 'x', 64);
	w[65] = 0;
	assert_int_equal(dns_rr_name(w, 66, &used, out), -1);

	/* 255 octets in wire form (253 in text) is the most a name may have */
	size_t o = 0;
	for (int i = 0; i < 3; i++) {
		w[o++] = 63;
		memset(w + o, 'a', 63);
		o += 63;
	}
	w[o++] = 61;
	memset(w + o, 'b', 61);
	o += 61;
	w[o++] = 0;
	assert_int_equal(o, 255);
	assert_int_equal(dns_rr_name(w, o, &used, out), 0);
	assert_int_equal(strlen(out), DNS_NAME_MAX);
	assert_int_equal(used, 255);
	w[192] = 62; /* one more octet in the last label: 256 */
	memset(w + 193, 'b', 62);
	w[255] = 0;
	assert_int_equal(dns_rr_name(w, 256, &used, out), -1);
	assert_string_equal(out, "");
	/* every truncation of a valid name is rejected */
	for (size_t n = 0; n < 255; n++)
		assert_int_equal(dns_rr_name(w, n, &used, out), -1);
}

static void
test_rr_mx(void **state)
{
	static const uint8_t mx[] = "\000\012\002mx\007example\003org";
	size_t len = sizeof(mx); /* includes the final zero octet */
	struct dns_mx r;

	(void)state;
	assert_int_equal(dns_rr_mx(mx, len, &r), 0);
	assert_int_equal(r.pref, 10);
	assert_string_equal(r.host, "mx.example.org");
	for (size_t n = 0; n < len; n++)
		assert_int_equal(dns_rr_mx(mx, n, &r), -1);
	/* trailing garbage after the name */
	uint8_t big[64];
	memcpy(big, mx, len);
	big[len] = 'x';
	assert_int_equal(dns_rr_mx(big, len + 1, &r), -1);
	/* RFC 7505 null MX */
	assert_int_equal(dns_rr_mx((const uint8_t *)"\x00\x00\x00", 3, &r), 0);
	assert_int_equal(r.pref, 0);
	assert_string_equal(r.host, "");
	assert_int_equal(dns_rr_mx((const uint8_t *)"\xff\xff\x00", 3, &r), 0);
	assert_int_equal(r.pref, 65535);
}

static void
test_rr_addr(void **state)
{
	struct dns_addr r;

	(void)state;
	assert_int_equal(dns_rr_a((const uint8_t *)"\xc0\x00\x02\x01", 4, &r), 0);
	assert_string_equal(r.text, "192.0.2.1");
	assert_int_equal(r.family, AF_INET);
	assert_int_equal(r.salen, sizeof(struct sockaddr_in));
	assert_int_equal(((struct sockaddr_in *)&r.sa)->sin_addr.s_addr, htonl(0xc0000201));
	assert_int_equal(dns_rr_a((const uint8_t *)"\xc0\x00\x02", 3, &r), -1);
	assert_int_equal(dns_rr_a((const uint8_t *)"\xc0\x00\x02\x01\x00", 5, &r), -1);

	static const uint8_t v6[16] = {0x20, 0x01, 0x0d, 0xb8, [15] = 1};
	assert_int_equal(dns_rr_aaaa(v6, 16, &r), 0);
	assert_string_equal(r.text, "2001:db8::1");
	assert_int_equal(r.family, AF_INET6);
	assert_int_equal(r.salen, sizeof(struct sockaddr_in6));
	assert_memory_equal(&((struct sockaddr_in6 *)&r.sa)->sin6_addr, v6, 16);
	assert_int_equal(dns_rr_aaaa(v6, 15, &r), -1);
	assert_int_equal(dns_rr_aaaa(v6, 4, &r), -1);
	assert_int_equal(dns_rr_aaaa(v6, 0, &r), -1);
}

static void
test_rr_ptr(void **state)
{
	struct dns_ptr r;

	(void)state;
	assert_int_equal(dns_rr_ptr((const uint8_t *)"\x04Host\x04test\x00", 11, &r), 0);
	assert_string_equal(r.name, "host.test");
	assert_int_equal(dns_rr_ptr((const uint8_t *)"\x04Host\x04test\x00\x00", 12, &r), -1);
	assert_string_equal(r.name, "");
	for (size_t n = 0; n < 11; n++)
		assert_int_equal(dns_rr_ptr((const uint8_t *)"\x04Host\x04test\x00", n, &r), -1);
}

static void
test_rr_txt(void **state)
{
	struct dns_txt r;

	(void)state;
	assert_int_equal(dns_rr_txt((const uint8_t *)"\x07v=spf1 \x04-all", 13, &r), 0);
	assert_int_equal(r.len, 11);
	assert_memory_equal(r.data, "v=spf1 -all", 12); /* with its NUL */
	free(r.data);
	/* 8-bit, NUL and empty strings are kept exactly */
	assert_int_equal(dns_rr_txt((const uint8_t *)"\x02\xc3\xa9\x00\x03\xff\x00\x80", 8, &r), 0);
	assert_int_equal(r.len, 5);
	assert_memory_equal(r.data, "\xc3\xa9\xff\x00\x80", 5);
	free(r.data);
	assert_int_equal(dns_rr_txt((const uint8_t *)"", 0, &r), 0);
	assert_int_equal(r.len, 0);
	assert_string_equal(r.data, "");
	free(r.data);
	/* a 255-octet string */
	uint8_t big[256];
	big[0] = 255;
	memset(big + 1, 'z', 255);
	assert_int_equal(dns_rr_txt(big, 256, &r), 0);
	assert_int_equal(r.len, 255);
	free(r.data);
	/* a length byte running past the rdata */
	assert_int_equal(dns_rr_txt(big, 255, &r), -1);
	assert_null(r.data);
	assert_int_equal(dns_rr_txt((const uint8_t *)"\005ab", 3, &r), -1);
	assert_null(r.data);
	assert_int_equal(dns_rr_txt((const uint8_t *)"\002ab\001", 4, &r), -1);
	assert_int_equal(dns_rr_txt((const uint8_t *)"\x01", 1, &r), -1);
}

static void
test_rr_tlsa(void **state)
{
	struct dns_tlsa r;

	(void)state;
	assert_int_equal(dns_rr_tlsa((const uint8_t *)"\x03\x01\x01\xaa\xbb", 5, &r), 0);
	assert_int_equal(r.usage, 3);
	assert_int_equal(r.selector, 1);
	assert_int_equal(r.mtype, 1);
	assert_int_equal(r.len, 2);
	assert_memory_equal(r.data, "\xaa\xbb", 2);
	free(r.data);
	assert_int_equal(dns_rr_tlsa((const uint8_t *)"\x02\x00\x00", 3, &r), 0);
	assert_int_equal(r.len, 0);
	free(r.data);
	assert_int_equal(dns_rr_tlsa((const uint8_t *)"\x03\x01", 2, &r), -1);
	assert_null(r.data);
	assert_int_equal(dns_rr_tlsa((const uint8_t *)"", 0, &r), -1);
}

static void
test_name_normalise(void **state)
{
	char out[DNS_NAME_BUFSZ], in[300];

	(void)state;
	assert_int_equal(dns_name_normalise("Example.COM.", out), 0);
	assert_string_equal(out, "example.com");
	assert_int_equal(dns_name_normalise("_25._tcp.MX.example.com", out), 0);
	assert_string_equal(out, "_25._tcp.mx.example.com");
	assert_int_equal(dns_name_normalise("localhost", out), 0);
	assert_true(dns_name_valid("a.b-c.d"));
	assert_true(dns_name_valid("x+tag.example.com"));

	static const char *const bad[] = {
	    "",	       ".",	  "..",	   "a..b",	     ".a",
	    "a.b..",   "a b.com", "a\\.b", "caf\xc3\xa9.fr", "tab\t.com",
	    "a\n.com",
	};
	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		assert_int_equal(dns_name_normalise(bad[i], out), -1);
		assert_string_equal(out, "");
		assert_false(dns_name_valid(bad[i]));
	}
	/* label lengths */
	memset(in, 'a', 63);
	memcpy(in + 63, ".com", 5);
	assert_true(dns_name_valid(in));
	memset(in, 'a', 64);
	memcpy(in + 64, ".com", 5);
	assert_false(dns_name_valid(in));
	/* 253 characters, with and without the final dot; 254 is too long */
	for (int i = 0; i < 253; i++)
		in[i] = (i % 50 == 49) ? '.' : 'q';
	in[253] = '\0';
	assert_int_equal(dns_name_normalise(in, out), 0);
	assert_int_equal(strlen(out), 253);
	in[253] = '.';
	in[254] = '\0';
	assert_int_equal(dns_name_normalise(in, out), 0);
	in[253] = 'q';
	assert_int_equal(dns_name_normalise(in, out), -1);
}

static void
test_reverse_name(void **state)
{
	char out[DNS_REVERSE_BUFSZ], small[20];

	(void)state;
	assert_int_equal(dns_reverse_name("192.0.2.1", out, sizeof(out)), 0);
	assert_string_equal(out, "1.2.0.192.in-addr.arpa");
	assert_int_equal(dns_reverse_name("2001:db8::1", out, sizeof(out)), 0);
	assert_string_equal(
	    out, "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa");
	assert_int_equal(strlen(out), DNS_REVERSE_BUFSZ - 1);
	assert_int_equal(dns_reverse_name("::ffff:198.51.100.7", out, sizeof(out)), 0);
	assert_string_equal(out, "7.100.51.198.in-addr.arpa");
	assert_int_equal(dns_reverse_name("1.2.3", out, sizeof(out)), -1);
	assert_int_equal(dns_reverse_name("example.com", out, sizeof(out)), -1);
	assert_int_equal(dns_reverse_name("fe80::1%eth0", out, sizeof(out)), -1);
	assert_int_equal(dns_reverse_name("", out, sizeof(out)), -1);
	assert_int_equal(dns_reverse_name("255.255.255.255", small, sizeof(small)), -1);
	assert_int_equal(dns_reverse_name("2001:db8::1", small, sizeof(small)), -1);
	assert_int_equal(dns_reverse_name("2001:db8::1", out, sizeof(out) - 1), -1);
}

/* The resolver against the test server */

static void
test_mx(void **state)
{
	struct slot s = {0};

	(void)state;
	ask(&s, DNS_T_MX, "mx.example");
	assert_int_equal(s.res->status, DNS_OK);
	assert_int_equal(s.res->type, DNS_T_MX);
	assert_string_equal(s.res->name, "mx.example");
	assert_int_equal(s.res->n, 4);
	assert_in_range(s.res->ttl, 299, 300);
	assert_int_equal(s.res->secure, 0);
	assert_int_equal(s.res->null_mx, 0);
	assert_string_equal(s.res->why, "");
	assert_int_equal(s.res->mx[0].pref, 10);
	assert_string_equal(s.res->mx[0].host, "mx0.mx.example");
	assert_int_equal(s.res->mx[1].pref, 10);
	assert_string_equal(s.res->mx[1].host, "mx1.mx.example"); /* lowercased */
	assert_int_equal(s.res->mx[2].pref, 20);
	assert_string_equal(s.res->mx[2].host, "mx2.mx.example");
	assert_int_equal(s.res->mx[3].pref, 30);
	assert_string_equal(s.res->mx[3].host, "mx3.mx.example");
	assert_null(s.res->addr);
	assert_null(s.res->txt);
	slot_clear(&s);
}

static void
test_null_mx(void **state)
{
	struct slot s = {0};

	(void)state;
	ask(&s, DNS_T_MX, "nullmx.example.");
	assert_int_equal(s.res->status, DNS_OK);
	assert_int_equal(s.res->n, 1);
	assert_int_equal(s.res->null_mx, 1);
	assert_int_equal(s.res->mx[0].pref, 0);
	assert_string_equal(s.res->mx[0].host, "");
	slot_clear(&s);
}

static int
has_addr(const struct dns_result *res, const char *text)
{
	for (size_t i = 0; i < res->n; i++)
		if (strcmp(res->addr[i].text, text) == 0)
			return 1;
	return 0;
}

static void
test_a_aaaa(void **state)
{
	struct slot s = {0};

	(void)state;
	s.q = dns_query_a(dns, "aonly.example", test_cb, &s);
	assert_non_null(s.q);
	assert_int_equal(run_until(1, 3000), 0);
	assert_int_equal(s.res->status, DNS_OK);
	assert_int_equal(s.res->n, 2);
	assert_true(has_addr(s.res, "198.18.0.10"));
	assert_true(has_addr(s.res, "198.18.0.11"));
	assert_int_equal(s.res->addr[0].family, AF_INET);
	assert_int_equal(s.res->addr[0].sa.ss_family, AF_INET);

	slot_clear(&s);
	s.q = dns_query_aaaa(dns, "v6.example", test_cb, &s);
	assert_non_null(s.q);
	assert_int_equal(run_until(1, 3000), 0);
	assert_int_equal(s.res->status, DNS_OK);
	assert_int_equal(s.res->type, DNS_T_AAAA);
	assert_int_equal(s.res->n, 2);
	assert_true(has_addr(s.res, "2001:db8::1"));
	assert_true(has_addr(s.res, "2001:db8::2"));
	assert_int_equal(s.res->addr[1].sa.ss_family, AF_INET6);
	slot_clear(&s);
}

static void
test_nodata_nxdomain(void **state)
{
	struct slot s = {0};

	(void)state;
	ask(&s, DNS_T_MX, "aonly.example");
	assert_int_equal(s.res->status, DNS_NODATA);
	assert_int_equal(s.res->n, 0);
	assert_null(s.res->mx);
	/* min(SOA TTL 45, MINIMUM 30); libunbound may have counted a second off */
	assert_in_range(s.res->ttl, 29, 30);
	ask(&s, DNS_T_TXT, "mx.example");
	assert_int_equal(s.res->status, DNS_NODATA);
	ask(&s, DNS_T_A, "nope.example");
	assert_int_equal(s.res->status, DNS_NXDOMAIN);
	assert_in_range(s.res->ttl, 29, 30);
	assert_int_equal(s.res->n, 0);
	slot_clear(&s);
}

static const struct dns_txt *
find_txt(const struct dns_result *res, const char *prefix)
{
	for (size_t i = 0; i < res->n; i++)
		if (res->txt[i].len >= strlen(prefix) &&
		    memcmp(res->txt[i].data, prefix, strlen(prefix)) == 0)
			return &res->txt[i];
	return NULL;
}

static void
test_txt(void **state)
{
	struct slot s = {0};
	const struct dns_txt *t;

	(void)state;
	s.q = dns_query_txt(dns, "txt.example", test_cb, &s);
	assert_non_null(s.q);
	assert_int_equal(run_until(1, 3000), 0);
	assert_int_equal(s.res->status, DNS_OK);
	assert_int_equal(s.res->n, 2);
	t = find_txt(s.res, "v=spf1");
	assert_non_null(t);
	assert_int_equal(t->len, strlen("v=spf1 include:spf.example -all"));
	assert_string_equal(t->data, "v=spf1 include:spf.example -all");
	t = find_txt(s.res, "caf");
	assert_non_null(t);
	assert_int_equal(t->len, 13);
	assert_memory_equal(t->data, "caf\xc3\xa9 \xff\x00\x80 end", 14);
	slot_clear(&s);
}

static void
test_tlsa(void **state)
{
	struct slot s = {0};
	uint8_t want[32];

	(void)state;
	for (int i = 0; i < 32; i++)
		want[i] = (uint8_t)i;
	s.q = dns_query_tlsa(dns, "_25._tcp.MX1.mx.example", test_cb, &s);
	assert_non_null(s.q);
	assert_int_equal(run_until(1, 3000), 0);
	assert_int_equal(s.res->status, DNS_OK);
	assert_int_equal(s.res->n, 1);
	assert_int_equal(s.res->tlsa[0].usage, 3);
	assert_int_equal(s.res->tlsa[0].selector, 1);
	assert_int_equal(s.res->tlsa[0].mtype, 1);
	assert_int_equal(s.res->tlsa[0].len, 32);
	assert_memory_equal(s.res->tlsa[0].data, want, 32);
	assert_string_equal(s.res->name, "_25._tcp.mx1.mx.example");
	slot_clear(&s);
}

static void
test_ptr(void **state)
{
	struct slot s = {0};

	(void)state;
	s.q = dns_query_ptr(dns, "198.18.0.10", test_cb, &s);
	assert_non_null(s.q);
	assert_int_equal(run_until(1, 3000), 0);
	assert_int_equal(s.res->status, DNS_OK);
	assert_int_equal(s.res->n, 1);
	assert_string_equal(s.res->ptr[0].name, "aonly.example");
	assert_string_equal(s.res->name, "10.0.18.198.in-addr.arpa");

	slot_clear(&s);
	s.q = dns_query_ptr(dns, "2001:2::1", test_cb, &s);
	assert_non_null(s.q);
	assert_int_equal(run_until(1, 3000), 0);
	assert_int_equal(s.res->status, DNS_OK);
	assert_string_equal(s.res->ptr[0].name, "v6.example");

	slot_clear(&s);
	s.q = dns_query_ptr(dns, "198.18.0.77", test_cb, &s);
	assert_int_equal(run_until(1, 3000), 0);
	assert_int_equal(s.res->status, DNS_NXDOMAIN);
	slot_clear(&s);

	assert_null(dns_query_ptr(dns, "not-an-ip", test_cb, &s));
	assert_null(dns_query_ptr(dns, "300.1.1.1", test_cb, &s));
}

static void
test_servfail_not_cached(void **state)
{
	struct slot s = {0};
	struct dns_stats st;

	(void)state;
	ask(&s, DNS_T_A, "servfail.example");
	assert_int_equal(s.res->status, DNS_TEMPFAIL);
	assert_int_equal(s.res->ttl, 0);
	assert_string_not_equal(s.res->why, "");
	ask(&s, DNS_T_A, "servfail.example");
	assert_int_equal(s.res->status, DNS_TEMPFAIL);
	dns_stats(dns, &st);
	assert_int_equal(st.lookups, 2);
	assert_int_equal(st.cache_hits, 0);
	assert_int_equal(st.cached, 0);
	slot_clear(&s);
}

static void
test_malformed_answer(void **state)
{
	struct slot s = {0};

	(void)state;
	ask(&s, DNS_T_TXT, "badtxt.example");
	assert_int_equal(s.res->status, DNS_TEMPFAIL);
	assert_int_equal(s.res->n, 0);
	assert_null(s.res->txt);
	slot_clear(&s);
}

static void
test_timeout(void **state)
{
	struct slot s = {0};
	struct dns_stats st;
	int64_t t0;

	(void)state;
	dns_free(&dns);
	dns = test_dns_new(300, 0, &main_server);
	assert_non_null(dns);
	t0 = util_mono_ms();
	ask(&s, DNS_T_A, "timeout.example");
	assert_int_equal(s.res->status, DNS_TEMPFAIL);
	assert_string_equal(s.res->why, "timeout");
	assert_true(util_mono_ms() - t0 >= 290);
	assert_true(util_mono_ms() - t0 < 1500);
	dns_stats(dns, &st);
	assert_int_equal(st.timeouts, 1);
	assert_int_equal(st.pending, 0);
	assert_int_equal(st.cached, 0);
	slot_clear(&s);
}

/*
 * DNSSEC: with a trust anchor for "example." the unsigned test zone cannot
 * validate, so every answer under it is bogus (and never cached).
 */
static void
test_bogus(void **state)
{
	char path[] = "/tmp/surat-test-dns-ta-XXXXXX";
	static const char anchor[] =
	    "example. 3600 IN DS 12345 8 2 "
	    "49FD46E6C4B45C55D4AC69CBD3CD34AC1AFE51DE5D0D6F5A8F5C2E0C1B7A3E4D\n";
	const char *servers[] = {main_server.fwd};
	struct dns_config cfg = {.servers = servers, .nservers = 1, .timeout_ms = 2000};
	struct buf err = BUF_INIT(0);
	struct slot s = {0};
	struct dns_stats st;
	int fd;

	(void)state;
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(util_write_all(fd, anchor, sizeof(anchor) - 1), 0);
	close(fd);
	cfg.trust_anchor_file = path;
	dns_free(&dns);
	dns = dns_new_config(base, &cfg, &err);
	unlink(path);
	assert_non_null(dns);
	ask(&s, DNS_T_MX, "mx.example");
	assert_int_equal(s.res->status, DNS_BOGUS);
	assert_int_equal(s.res->secure, 0);
	assert_int_equal(s.res->n, 0);
	assert_null(s.res->mx);
	assert_string_not_equal(s.res->why, "");
	ask(&s, DNS_T_MX, "mx.example");
	assert_int_equal(s.res->status, DNS_BOGUS);
	dns_stats(dns, &st);
	assert_int_equal(st.cache_hits, 0);
	assert_int_equal(st.cached, 0);
	slot_clear(&s);

	/* a trust anchor file that is not there */
	cfg.trust_anchor_file = "/nonexistent/root.key";
	assert_null(dns_new_config(base, &cfg, &err));
	assert_non_null(strstr(buf_str(&err), "trust anchor"));
	buf_free(&err);
}

static void
test_cache_hit(void **state)
{
	struct slot s = {0};
	struct dns_stats st;

	(void)state;
	ask(&s, DNS_T_MX, "mx.example");
	assert_int_equal(s.res->status, DNS_OK);
	/* same (name, type) in another spelling: answered from our cache,
	 * and never from inside the call that asks */
	slot_clear(&s);
	s.q = dns_query_mx(dns, "MX.Example.", test_cb, &s);
	assert_non_null(s.q);
	assert_int_equal(s.called, 0);
	assert_int_equal(run_until(1, 1000), 0);
	assert_int_equal(s.res->status, DNS_OK);
	assert_int_equal(s.res->n, 4);
	assert_string_equal(s.res->mx[0].host, "mx0.mx.example");
	dns_stats(dns, &st);
	assert_int_equal(st.queries, 2);
	assert_int_equal(st.lookups, 1);
	assert_int_equal(st.cache_hits, 1);
	assert_int_equal(st.cached, 1);
	/* a different type is a different entry */
	ask(&s, DNS_T_A, "mx.example");
	assert_int_equal(s.res->status, DNS_NODATA);
	dns_stats(dns, &st);
	assert_int_equal(st.lookups, 2);
	assert_int_equal(st.cached, 2);
	/* negative answers are cached too */
	ask(&s, DNS_T_A, "nothere.example");
	assert_int_equal(s.res->status, DNS_NXDOMAIN);
	ask(&s, DNS_T_A, "nothere.example");
	assert_int_equal(s.res->status, DNS_NXDOMAIN);
	dns_stats(dns, &st);
	assert_int_equal(st.lookups, 3);
	assert_int_equal(st.cache_hits, 2);
	/* and dropped on request */
	dns_cache_clear(dns);
	dns_stats(dns, &st);
	assert_int_equal(st.cached, 0);
	ask(&s, DNS_T_A, "nothere.example");
	dns_stats(dns, &st);
	assert_int_equal(st.lookups, 4);
	slot_clear(&s);
}

static void
test_cache_server_gone(void **state)
{
	struct server own = {.pid = -1, .stdin_fd = -1};
	struct slot s = {0};
	struct dns_stats st;

	(void)state;
	assert_int_equal(test_server_start(&own), 0);
	dns_free(&dns);
	dns = test_dns_new(500, 0, &own);
	assert_non_null(dns);
	ask(&s, DNS_T_TXT, "txt.example");
	assert_int_equal(s.res->status, DNS_OK);
	test_server_stop(&own);
	ask(&s, DNS_T_TXT, "txt.example");
	assert_int_equal(s.res->status, DNS_OK);
	assert_int_equal(s.res->n, 2);
	dns_stats(dns, &st);
	assert_int_equal(st.lookups, 1);
	assert_int_equal(st.cache_hits, 1);
	/* something not cached now fails, for a while */
	ask(&s, DNS_T_A, "aonly.example");
	assert_int_equal(s.res->status, DNS_TEMPFAIL);
	slot_clear(&s);
}

static void
test_cache_ttl(void **state)
{
	struct slot s = {0};
	struct dns_stats st;
	uint32_t ttl;

	(void)state;
	/* TTL 2 at the server; libunbound counts whole seconds, so 1 or 2 */
	ask(&s, DNS_T_A, "ttl2.example");
	assert_int_equal(s.res->status, DNS_OK);
	ttl = s.res->ttl;
	assert_in_range(ttl, 1, 2);
	ask(&s, DNS_T_A, "ttl2.example");
	dns_stats(dns, &st);
	assert_int_equal(st.cache_hits, 1);
	run_for((int)ttl * 1000 + 100);
	ask(&s, DNS_T_A, "ttl2.example");
	assert_int_equal(s.res->status, DNS_OK);
	dns_stats(dns, &st);
	assert_int_equal(st.lookups, 2);
	assert_int_equal(st.cache_hits, 1);
	/* TTL 0: never cached */
	ask(&s, DNS_T_A, "ttl0.example");
	assert_int_equal(s.res->status, DNS_OK);
	assert_int_equal(s.res->ttl, 0);
	ask(&s, DNS_T_A, "ttl0.example");
	dns_stats(dns, &st);
	assert_int_equal(st.lookups, 4);
	assert_int_equal(st.cache_hits, 1);
	slot_clear(&s);
}

static void
test_cache_bounded(void **state)
{
	struct slot s = {0};
	struct dns_stats st;

	(void)state;
	dns_free(&dns);
	dns = test_dns_new(2000, 2, &main_server);
	assert_non_null(dns);
	ask(&s, DNS_T_A, "one.example");
	ask(&s, DNS_T_A, "two.example");
	ask(&s, DNS_T_A, "one.example");   /* hit: one is now the most recent */
	ask(&s, DNS_T_A, "three.example"); /* evicts two, the least recent */
	dns_stats(dns, &st);
	assert_int_equal(st.cached, 2);
	assert_int_equal(st.lookups, 3);
	assert_int_equal(st.cache_hits, 1);
	ask(&s, DNS_T_A, "one.example");
	ask(&s, DNS_T_A, "three.example");
	dns_stats(dns, &st);
	assert_int_equal(st.cache_hits, 3);
	ask(&s, DNS_T_A, "two.example");
	assert_string_equal(s.res->addr[0].text, "192.0.2.102");
	dns_stats(dns, &st);
	assert_int_equal(st.lookups, 4);
	assert_int_equal(st.cached, 2);
	slot_clear(&s);
}

static void
test_coalesce(void **state)
{
	struct slot a = {0}, b = {0};
	struct dns_stats st;

	(void)state;
	a.q = dns_query_a(dns, "slow.example", test_cb, &a);
	b.q = dns_query_a(dns, "SLOW.example", test_cb, &b);
	assert_non_null(a.q);
	assert_non_null(b.q);
	assert_int_equal(run_until(2, 3000), 0);
	assert_int_equal(a.called, 1);
	assert_int_equal(b.called, 1);
	assert_int_equal(a.res->status, DNS_OK);
	assert_ptr_equal(a.res, b.res); /* one shared answer */
	dns_stats(dns, &st);
	assert_int_equal(st.lookups, 1);
	assert_int_equal(st.coalesced, 1);
	slot_clear(&a);
	slot_clear(&b);
}

static void
test_cancel(void **state)
{
	struct slot a = {0}, b = {0}, c = {0};
	struct dns_stats st;

	(void)state;
	/* the only waiter: the lookup itself is withdrawn */
	a.q = dns_query_a(dns, "slow.example", test_cb, &a);
	assert_non_null(a.q);
	dns_cancel(&a.q);
	assert_null(a.q);
	dns_cancel(&a.q); /* NULL is fine */
	dns_stats(dns, &st);
	assert_int_equal(st.pending, 0);
	run_for(500);
	assert_int_equal(a.called, 0);

	/* one of two waiters: the other still gets its answer */
	a.q = dns_query_a(dns, "slow.example", test_cb, &a);
	b.q = dns_query_a(dns, "slow.example", test_cb, &b);
	dns_cancel(&a.q);
	assert_int_equal(run_until(1, 3000), 0);
	assert_int_equal(a.called, 0);
	assert_int_equal(b.called, 1);
	assert_int_equal(b.res->status, DNS_OK);

	/* an answer already queued (a cache hit) is withdrawn too */
	c.q = dns_query_a(dns, "slow.example", test_cb, &c);
	assert_non_null(c.q);
	dns_cancel(&c.q);
	run_for(100);
	assert_int_equal(c.called, 0);
	dns_stats(dns, &st);
	assert_int_equal(st.cache_hits, 1);
	slot_clear(&b);
}

/* A callback that cancels its own handle and another query, and asks again. */
struct chain {
	struct slot self;
	struct slot other;
	struct slot next;
	int in_call;
};

static void
chain_cb(const struct dns_result *res, void *arg)
{
	struct chain *c = arg;

	assert_int_equal(c->in_call, 0);
	c->self.called++;
	c->self.res = dns_result_ref(res);
	dns_cancel(&c->self.q); /* own handle: only cleared */
	assert_null(c->self.q);
	dns_cancel(&c->other.q);
	c->in_call = 1;
	c->next.q = dns_query_a(dns, "aonly.example", test_cb, &c->next);
	c->in_call = 0;
	assert_non_null(c->next.q);
	assert_int_equal(c->next.called, 0);
}

static void
test_callback_reentry(void **state)
{
	struct chain c = {0};

	(void)state;
	/* both cached, so chain_cb runs long before slow.example could answer */
	ask(&c.next, DNS_T_MX, "mx.example");
	ask(&c.next, DNS_T_A, "aonly.example");
	slot_clear(&c.next);
	c.self.q = dns_query_mx(dns, "mx.example", chain_cb, &c);
	c.other.q = dns_query_a(dns, "slow.example", test_cb, &c.other);
	assert_int_equal(run_until(1, 3000), 0); /* next's answer */
	assert_int_equal(c.self.called, 1);
	assert_int_equal(c.next.called, 1);
	assert_int_equal(c.next.res->status, DNS_OK);
	run_for(500);
	assert_int_equal(c.other.called, 0);
	slot_clear(&c.self);
	slot_clear(&c.next);
}

static void
test_free_in_flight(void **state)
{
	struct slot a = {0}, b = {0}, c = {0};
	const struct dns_result *kept;

	(void)state;
	ask(&c, DNS_T_MX, "mx.example");
	kept = c.res;
	c.res = NULL;
	slot_clear(&c);
	a.q = dns_query_a(dns, "slow.example", test_cb, &a);	/* at the server */
	b.q = dns_query_mx(dns, "mx.example", test_cb, &b);	/* queued cache hit */
	c.q = dns_query_a(dns, "timeout.example", test_cb, &c); /* never answered */
	assert_non_null(a.q);
	assert_non_null(b.q);
	assert_non_null(c.q);
	dns_free(&dns);
	assert_null(dns);
	run_for(600);
	assert_int_equal(a.called + b.called + c.called, 0);
	/* a kept result outlives the resolver */
	assert_string_equal(kept->mx[3].host, "mx3.mx.example");
	dns_result_unref(&kept);
	assert_null(kept);
}

static void
test_bad_input(void **state)
{
	struct slot s = {0};
	struct buf err = BUF_INIT(0);
	const char *bad_servers[] = {"not an address"};
	char longname[300];

	(void)state;
	assert_null(dns_query_mx(dns, "", test_cb, &s));
	assert_null(dns_query_mx(dns, "a..b", test_cb, &s));
	assert_null(dns_query_txt(dns, "bad name.example", test_cb, &s));
	memset(longname, 'a', 260);
	longname[260] = '\0';
	assert_null(dns_query_a(dns, longname, test_cb, &s));
	run_for(50);
	assert_int_equal(s.called, 0);

	assert_null(dns_new(base, bad_servers, 1, &err));
	assert_non_null(strstr(buf_str(&err), "not an address"));
	buf_free(&err);

	/* no forwarders: resolv.conf and hosts; freed without asking anything */
	struct dns *sys = dns_new(base, NULL, 0, &err);
	if (sys == NULL) /* a machine without /etc/resolv.conf */
		assert_true(err.len > 0);
	dns_free(&sys);
	assert_null(sys);
	buf_free(&err);

	assert_string_equal(dns_status_str(DNS_NODATA), "nodata");
	assert_string_equal(dns_type_str(DNS_T_TLSA), "TLSA");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_rr_name),
	    cmocka_unit_test(test_rr_mx),
	    cmocka_unit_test(test_rr_addr),
	    cmocka_unit_test(test_rr_ptr),
	    cmocka_unit_test(test_rr_txt),
	    cmocka_unit_test(test_rr_tlsa),
	    cmocka_unit_test(test_name_normalise),
	    cmocka_unit_test(test_reverse_name),
	    cmocka_unit_test_setup_teardown(test_mx, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_null_mx, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_a_aaaa, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_nodata_nxdomain, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_txt, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tlsa, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_ptr, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_servfail_not_cached, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_malformed_answer, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bogus, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_cache_hit, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_cache_server_gone, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_cache_ttl, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_cache_bounded, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_coalesce, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_callback_reentry, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_free_in_flight, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_input, setup, teardown),
	};

	/* The whole run is bounded; the server dies with us (its stdin closes). */
	alarm(TEST_ALARM_S);
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
