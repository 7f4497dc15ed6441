/* Unit tests for core/config: values, defaults and every error path. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/buf.h"
#include "core/config.h"

static char path[256];

/* Load the len octets of text (which may hold a NUL) as a config file. */
static int
load_bytes(const char *text, size_t len, struct config *cfg, struct buf *err)
{
	snprintf(path, sizeof(path), "/tmp/surat-test-config.%d", (int)getpid());
	FILE *fp = fopen(path, "w");
	assert_non_null(fp);
	fwrite(text, 1, len, fp);
	fclose(fp);
	config_defaults(cfg);
	buf_reset(err);
	int r = config_load(cfg, path, err);
	unlink(path);
	return r;
}

static int
load_text(const char *text, struct config *cfg, struct buf *err)
{
	return load_bytes(text, strlen(text), cfg, err);
}

/* Load text and expect an error containing want (and ":line:"). */
static void
expect_error(const char *text, const char *want)
{
	struct config cfg;
	struct buf err = BUF_INIT(0);
	assert_int_equal(load_text(text, &cfg, &err), -1);
	if (strstr(buf_str(&err), want) == NULL)
		fail_msg("error '%s' does not contain '%s'", buf_str(&err), want);
	config_free(&cfg);
	buf_free(&err);
}

static void
test_good(void **state)
{
	struct config cfg;
	struct buf err = BUF_INIT(0);
	int r = load_text("# comment\n"
			  "\n"
			  "hostname = mx.example.org\n"
			  "data_dir=/var/lib/x\n"
			  "  listen.smtp = 127.0.0.1:25, [::1]:25  \n"
			  "listen.submission = 0.0.0.0:587, [::]:587, 127.0.0.1:588\n"
			  "listen.imap =\n"
			  "allow_plaintext_auth = yes\n"
			  "smtp.max_message_size = 10M\n"
			  "queue.retry_interval = 15m\n"
			  "queue.max_age = 5d\n"
			  "smtp.command_timeout = 30\n"
			  "log.level = debug\n"
			  "route.Example.COM = old.example.net:2525\n"
			  "route.example.com = relay.example.net:2525\n"
			  "dns.server = 127.0.0.1@5353, 127.0.0.2, ::1@53\n"
			  "relayhost = [192.0.2.1]:587\n",
			  &cfg, &err);
	assert_int_equal(r, 0);
	assert_string_equal(cfg.hostname, "mx.example.org");
	assert_string_equal(cfg.data_dir, "/var/lib/x");
	assert_int_equal(cfg.listen[LISTEN_SMTP].n, 2);
	assert_string_equal(cfg.listen[LISTEN_SMTP].v[1], "[::1]:25");
	assert_int_equal(cfg.listen[LISTEN_IMAP].n, 0);
	assert_int_equal(cfg.allow_plaintext_auth, 1);
	assert_int_equal(cfg.smtp_max_message_size, 10 * 1024 * 1024);
	assert_int_equal(cfg.queue_retry_interval, 900);
	assert_int_equal(cfg.queue_max_age, 5 * 86400);
	assert_int_equal(cfg.smtp_cmd_timeout, 30);
	assert_int_equal(cfg.log_level, LL_DEBUG);
	assert_int_equal(cfg.nroutes, 1);
	assert_string_equal(cfg.routes[0].domain, "example.com");
	/* Given again, the later one wins, as for every key. */
	assert_string_equal(cfg.routes[0].host, "relay.example.net:2525");
	assert_int_equal(cfg.dns_servers.n, 3);
	assert_string_equal(cfg.relayhost, "[192.0.2.1]:587");
	/* A route's domain as the queue compares recipients' domains with it:
	 * lowercase A-label without a trailing dot (so "example.com." was the
	 * route given again), or an address literal. */
	assert_int_equal(config_set(&cfg, "route.M\xc3\xbcnchen.Example.", "relay.example.", &err),
			 0);
	assert_int_equal(config_set(&cfg, "route.example.com.", "[2001:db8::1]:25", &err), 0);
	assert_int_equal(config_set(&cfg, "route.[IPv6:2001:DB8::2]", "192.0.2.9", &err), 0);
	assert_int_equal(config_set(&cfg, "relayhost", "smart_1.example.net:587", &err), 0);
	assert_int_equal(cfg.nroutes, 3);
	assert_string_equal(cfg.routes[0].host, "[2001:db8::1]:25");
	assert_string_equal(cfg.routes[1].domain, "xn--mnchen-3ya.example");
	assert_string_equal(cfg.routes[2].domain, "[ipv6:2001:db8::2]");
	/* Defaults stay where not set. */
	assert_int_equal(cfg.smtp_max_recipients, 100);
	assert_int_equal(cfg.queue_delay_warning, 4 * 3600);
	assert_int_equal(cfg.auth_lockout_failures, 10);
	assert_int_equal(cfg.auth_lockout_window, 15 * 60);
	assert_int_equal(cfg.submission_rate_limit, 1000);
	assert_int_equal(cfg.submission_rate_window, 3600);
	/* 0 turns the rate limit off; its window is a duration of a minute or more. */
	assert_int_equal(config_set(&cfg, "submission.rate_limit", "0", &err), 0);
	assert_int_equal(config_set(&cfg, "submission.rate_window", "1d", &err), 0);
	assert_int_equal(cfg.submission_rate_window, 86400);
	/* Down to 1s, so that the integration tests need not wait minutes. */
	assert_int_equal(cfg.login_timeout, 180);
	assert_int_equal(config_set(&cfg, "login_timeout", "1s", &err), 0);
	assert_int_equal(cfg.login_timeout, 1);
	/* 0 failures turns the lockout off; its window is a duration. */
	assert_int_equal(config_set(&cfg, "auth.lockout_failures", "0", &err), 0);
	assert_int_equal(config_set(&cfg, "auth.lockout_window", "1h", &err), 0);
	assert_int_equal(cfg.auth_lockout_window, 3600);
	/* Exempt networks: a list, empty by default, each one checked. */
	assert_int_equal(cfg.auth_lockout_exempt.n, 0);
	assert_int_equal(config_set(&cfg, "auth.lockout_exempt",
				    "127.0.0.1, 10.0.0.0/8 ,2001:db8::/32,::1", &err),
			 0);
	assert_int_equal(cfg.auth_lockout_exempt.n, 4);
	assert_string_equal(cfg.auth_lockout_exempt.v[1], "10.0.0.0/8");
	/* The spool's reserve follows the message size limit until it is set. */
	assert_int_equal(config_min_free(&cfg), 15 * 1024 * 1024);
	assert_int_equal(config_set(&cfg, "queue.min_free", "0", &err), 0);
	assert_int_equal(config_min_free(&cfg), 0);
	assert_int_equal(config_set(&cfg, "queue.min_free", "2G", &err), 0);
	assert_int_equal(config_min_free(&cfg), (int64_t)2 << 30);
	config_free(&cfg);
	buf_free(&err);
}

static void
test_errors(void **state)
{
	expect_error("hostname = a\nbogus = 1\n", ":2: unknown key 'bogus'");
	expect_error("just words\n", ":1: expected 'key = value'");
	/* What is invisible in a key is shown. */
	expect_error("\xef\xbb\xbfhostname = a\n",
		     ":1: unknown key '\\xef\\xbb\\xbfhostname' (the file starts with a UTF-8 "
		     "byte order mark");
	expect_error("data_dir = /x\nwork\x0b" "ers = 4\n", ":2: unknown key 'work\\x0bers'");
	expect_error(" = value\n", ":1: missing key");
	expect_error("allow_plaintext_auth = maybe\n", "allow_plaintext_auth: bad value 'maybe'");
	expect_error("queue.max_age = 5 days\n", "queue.max_age: bad duration");
	expect_error("queue.max_age = 5x\n", "bad duration");
	expect_error("queue.max_age = d\n", "bad duration");
	expect_error("smtp.max_message_size = 10Q\n", "bad size");
	expect_error("smtp.max_message_size = 99999999999999999999999\n", "bad size");
	expect_error("smtp.max_message_size = 10\n", "out of range");
	expect_error("smtp.max_recipients = -1\n", "bad number");
	expect_error("queue.min_free = -1\n", "bad size");
	expect_error("smtp.max_recipients = 0\n", "out of range");
	expect_error("auth.lockout_window = 0\n", "out of range");
	expect_error("auth.lockout_window = 8d\n", "out of range");
	expect_error("auth.lockout_failures = -1\n", "bad number");
	expect_error("submission.rate_window = 59s\n", "out of range");
	expect_error("submission.rate_window = 8d\n", "out of range");
	expect_error("submission.rate_limit = 1000001\n", "out of range");
	/* The range in the key's unit: 31536000 seconds had to be worked back to a year. */
	expect_error("login_timeout = 0\n", "login_timeout: value '0' out of range (1s to 1h)");
	expect_error("queue.max_age = 400d\n",
		     "queue.max_age: value '400d' out of range (1s to 365d)");
	expect_error("pop3.idle_timeout = 1m\n", "out of range (10m to 1d)");
	expect_error("shutdown_grace = 2h\n", "shutdown_grace: value '2h' out of range (0 to 1h)");
	expect_error("smtp.max_message_size = 3G\n", "out of range (1K to 2G)");
	expect_error("smtp.max_data_memory = 2048G\n", "out of range (1M to 1024G)");
	expect_error("imap.max_line = 512\n", "imap.max_line: value '512' out of range (1K to 1M)");
	expect_error("smtp.max_recipients = 100001\n", "out of range (1 to 100000)");
	expect_error("login_timeout = 2h\n", "out of range");
	expect_error("login_timeout = soon\n", "login_timeout: bad duration");
	expect_error("listen.smtp = 127.0.0.1\n", "listen.smtp: bad address '127.0.0.1'");
	expect_error("listen.smtp = ::1:25\n", "bad address");
	expect_error("listen.smtp = 1.2.3.4:99999\n", "bad address");
	expect_error("listen.smtp = [::1\n", "bad address");
	/* Never resolved by the daemon: a name is refused here, not at bind. */
	expect_error("listen.smtp = 127.0.0.1:25, localhost:25\n",
		     ":1: listen.smtp: bad address 'localhost:25' (want IP:port");
	expect_error("listen.imap = [mail.example.org]:143\n", "listen.imap: bad address");
	/* One address under two keys: not "in use" by some other program at bind. */
	expect_error("listen.smtp = 127.0.0.1:25\n"
		     "listen.submission = 127.0.0.2:25, [127.0.0.1]:25\n",
		     "listen.smtp and listen.submission both name [127.0.0.1]:25");
	expect_error("listen.imap = [::1]:143, [0:0::1]:143\n",
		     "listen.imap and listen.imap both name [0:0::1]:143");
	/* The wildcard of the same family on the same port: the same failure. */
	expect_error("listen.smtp = 0.0.0.0:25\nlisten.submission = 127.0.0.1:25\n",
		     "listen.smtp 0.0.0.0:25 and listen.submission 127.0.0.1:25 overlap");
	expect_error("listen.imap = [::1]:143, [::]:143\n",
		     "listen.imap [::1]:143 and listen.imap [::]:143 overlap");
	expect_error("log.level = loud\n", "log.level: bad value");
	expect_error("outbound.tls = always\n", "outbound.tls: bad value");
	expect_error("route.x.org = host:0\n", "route.x.org: bad value");
	/* A host no resolver could look up: the mail waited in the queue to bounce. */
	expect_error("route.x.org = relay host.example\n", "route.x.org: bad value");
	expect_error("relayhost = smart..example.net\n", ":1: relayhost: bad value");
	expect_error("relayhost = smart/example.net:25\n", "relayhost: bad value");
	/* A domain no recipient's could be: the route was silently never taken. */
	expect_error("route.exa mple.org = relay.example\n",
		     ":1: route.exa mple.org: 'exa mple.org' is not a domain name");
	expect_error("route.x..org = relay.example\n", "is not a domain name");
	expect_error("route.\xff.org = relay.example\n", "'\\xff.org' is not a domain name");
	expect_error("tls.cert = /x.pem\n", "tls.cert and tls.key must be set together");
	expect_error("listen.imaps = 127.0.0.1:993\n", "listen.imaps needs tls.cert");
	expect_error("data_dir = /x\ndata_dir =\n", ":2: data_dir: '' is not an absolute path");
	expect_error("data_dir = var/data\n", ":1: data_dir: 'var/data' is not an absolute path");
	/* Known bad before start, so that check-config says so too. */
	expect_error("relayhost = a:b:c\n", ":1: relayhost: bad value 'a:b:c'");
	expect_error("relayhost = smart.example.net:0\n", "relayhost: bad value");
	expect_error("relayhost.user = u\n", "relayhost.user needs relayhost.password_file");
	expect_error("dns.server = 127.0.0.1, resolver.example\n",
		     ":1: dns.server: bad resolver 'resolver.example'");
	expect_error("dns.server = 127.0.0.1@99999\n", "bad resolver");
	expect_error("dns.server = [::1]:53\n", "bad resolver");
	expect_error("auth.lockout_exempt = 127.0.0.1, 10.0.0.0/33\n",
		     ":1: auth.lockout_exempt: bad network '10.0.0.0/33'");
	expect_error("auth.lockout_exempt = office.example\n", "bad network 'office.example'");
	expect_error("auth.lockout_exempt = 2001:db8::/129\n", "bad network");
	expect_error("auth.lockout_exempt = 10.0.0.0/\n", "bad network");
	expect_error("auth.lockout_exempt = 10.0.0.0/-8\n", "bad network");
	expect_error("auth.lockout_exempt = [::1]\n", "bad network");
	/* The host name goes into every greeting: empty crashed the first session. */
	static const char *const bad_hosts[] = {
		"", "bad host!", "-mx.example.org", "mx-.example.org", "mx..example.org",
		".example.org", "mx.example.org.", "h\xff.example.org", "mx_1.example.org"};
	for (size_t i = 0; i < sizeof(bad_hosts) / sizeof(bad_hosts[0]); i++) {
		char text[128];
		snprintf(text, sizeof(text), "data_dir = /x\nhostname = %s\n", bad_hosts[i]);
		expect_error(text, ":2: hostname: bad host name");
	}
	char longline[5000];
	memset(longline, 'a', sizeof(longline) - 2);
	longline[sizeof(longline) - 2] = '\n';
	longline[sizeof(longline) - 1] = '\0';
	expect_error(longline, ":1: line too long");
	/* A NUL ended the line for strlen(): what followed it was dropped. */
	static const char nul[] = "data_dir = /x\nsmtp.max_message_size = 10M\0"
				  "0\n";
	struct config cfg;
	struct buf err = BUF_INIT(0);
	assert_int_equal(load_bytes(nul, sizeof(nul) - 1, &cfg, &err), -1);
	assert_non_null(strstr(buf_str(&err), ":2: NUL byte in line"));
	config_free(&cfg);
	buf_free(&err);
}

/*
 * A value is echoed as the key is, escaped: raw, a control or a stray byte
 * garbled the terminal check-config prints on. Printable UTF-8 stays.
 */
static void
test_values_escaped(void **state)
{
	expect_error("hostname = a\x1b[2Jb\n", ":1: hostname: bad host name 'a\\x1b[2Jb'");
	expect_error("log.level = \xff\xfe\n", "log.level: bad value '\\xff\\xfe'");
	expect_error("outbound.tls = m\xc2\x85y\n", "outbound.tls: bad value 'm<U+0085>y'");
	expect_error("relayhost = a\xe2\x80\xae"
		     "b:c\n",
		     "relayhost: bad value 'a<U+202E>b:c'");
	expect_error("listen.smtp = h\x07:25\n", "listen.smtp: bad address 'h\\x07:25'");
	expect_error("route.x.org = a b\x7f\n", "route.x.org: bad value 'a b\\x7f'");
	expect_error("queue.max_age = 5\x1b\n", "queue.max_age: bad duration '5\\x1b'");
	expect_error("data_dir = v\x1b\n", "data_dir: 'v\\x1b' is not an absolute path");
	expect_error("just\x1b words\n", ":1: expected 'key = value', got 'just\\x1b words'");
	expect_error("da\x01ta = /x #c\n", ":1: da\\x01ta: '#' after the value");
	expect_error("log.level = l\xc3\xa4ut\n", "log.level: bad value 'l\xc3\xa4ut'");

	/* The same from config_set() alone. */
	struct config cfg;
	struct buf err = BUF_INIT(0);
	config_defaults(&cfg);
	assert_int_equal(config_set(&cfg, "workers", "4\x1b", &err), -1);
	assert_string_equal(buf_str(&err), "workers: bad number '4\\x1b'");
	config_free(&cfg);
	buf_free(&err);
}

static void
test_missing_file(void **state)
{
	struct config cfg;
	struct buf err = BUF_INIT(0);
	config_defaults(&cfg);
	assert_int_equal(config_load(&cfg, "/nonexistent/surat.conf", &err), -1);
	assert_non_null(strstr(buf_str(&err), "/nonexistent/surat.conf: cannot open"));
	config_free(&cfg);
	buf_free(&err);
}

static void
test_parsers(void **state)
{
	int64_t v;
	assert_int_equal(config_parse_duration("30s", &v), 0);
	assert_int_equal(v, 30);
	assert_int_equal(config_parse_duration("2w", &v), 0);
	assert_int_equal(v, 14 * 86400);
	assert_int_equal(config_parse_duration("", &v), -1);
	assert_int_equal(config_parse_duration("1h2", &v), -1);
	assert_int_equal(config_parse_size("512", &v), 0);
	assert_int_equal(v, 512);
	assert_int_equal(config_parse_size("64k", &v), 0);
	assert_int_equal(v, 65536);
	assert_int_equal(config_parse_size("1G", &v), 0);
	assert_int_equal(v, 1 << 30);
	assert_int_equal(config_parse_size("9223372036854775807G", &v), -1);
	char *host;
	int port;
	assert_int_equal(config_parse_hostport("[::1]:143", &host, &port, 0), 0);
	assert_string_equal(host, "::1");
	assert_int_equal(port, 143);
	free(host);
	assert_int_equal(config_parse_hostport("relay.example", &host, &port, 25), 0);
	assert_int_equal(port, 25);
	free(host);
	assert_int_equal(config_parse_hostport("relay.example", &host, &port, 0), -1);
	assert_int_equal(config_parse_hostport(":25", &host, &port, 0), -1);
	assert_int_equal(config_parse_hostport("[]:25", &host, &port, 0), -1);
	assert_int_equal(config_parse_hostport("[::1]x", &host, &port, 0), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_good),	   cmocka_unit_test(test_errors),
	    cmocka_unit_test(test_values_escaped), cmocka_unit_test(test_missing_file),
	    cmocka_unit_test(test_parsers),
	};
	return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
