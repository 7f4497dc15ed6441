/*
 * test_queue_self — the outbound loop check's idea of our own listeners:
 * a wildcard is all of 127.0.0.0/8 and every interface, an IPv4-mapped
 * address is its IPv4 one on either side, 0.0.0.0 and :: are where the
 * kernel connects them. Nothing is bound or sent: the table is built
 * from listen.smtp's text and only compared.
 *
 * SECURITY: tests only; no sockets, no files.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#include "core/config.h"
#include "queue/queue_self.h"

/* Whether ip (IPv4 or IPv6 text) on port is one of qs's listeners. */
static int
has(const struct queue_self *qs, const char *ip, int port)
{
	struct sockaddr_storage ss;
	struct sockaddr_in *s4 = (struct sockaddr_in *)(void *)&ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)(void *)&ss;

	memset(&ss, 0, sizeof(ss));
	if (inet_pton(AF_INET, ip, &s4->sin_addr) == 1)
		s4->sin_family = AF_INET;
	else if (inet_pton(AF_INET6, ip, &s6->sin6_addr) == 1)
		s6->sin6_family = AF_INET6;
	else
		fail_msg("bad test address %s", ip);
	return queue_self_has(qs, (const struct sockaddr *)&ss, port);
}

static void
test_wildcard_is_all_of_loopback(void **state)
{
	char *v[] = {"0.0.0.0:2525"};
	struct strlist l = {v, 1};
	struct queue_self *qs = queue_self_new(&l);

	(void)state;
	/* getifaddrs() shows 127.0.0.1 only; Linux routes all of 127/8 to lo. */
	assert_true(has(qs, "127.0.0.1", 2525));
	assert_true(has(qs, "127.0.0.5", 2525));
	assert_true(has(qs, "127.255.255.254", 2525));
	/* Where the kernel connects them. */
	assert_true(has(qs, "0.0.0.0", 2525));
	assert_true(has(qs, "::ffff:127.0.0.6", 2525));
	assert_true(has(qs, "::ffff:0.0.0.0", 2525));
	/* Another port, or just outside the /8. */
	assert_false(has(qs, "127.0.0.5", 25));
	assert_false(has(qs, "126.255.255.255", 2525));
	assert_false(has(qs, "128.0.0.1", 2525));
	assert_false(has(qs, "192.0.2.1", 2525));
	queue_self_free(&qs);
	assert_null(qs);
}

static void
test_one_address_each(void **state)
{
	char *v[] = {"127.0.0.2:2525", "[::ffff:127.0.0.3]:2525", "[::1]:2526"};
	struct strlist l = {v, 3};
	struct queue_self *qs = queue_self_new(&l);

	(void)state;
	assert_true(has(qs, "127.0.0.2", 2525));
	assert_true(has(qs, "::ffff:127.0.0.2", 2525));
	assert_false(has(qs, "127.0.0.4", 2525));
	assert_false(has(qs, "127.0.0.2", 2526));
	/* A listener on a mapped address takes IPv4 (dual stack): an A record
	 * or an AAAA holding the mapped form is the same host. */
	assert_true(has(qs, "127.0.0.3", 2525));
	assert_true(has(qs, "::ffff:127.0.0.3", 2525));
	/* :: is ::1, 0.0.0.0 is 127.0.0.1 (no listener there). */
	assert_true(has(qs, "::", 2526));
	assert_true(has(qs, "::1", 2526));
	assert_false(has(qs, "0.0.0.0", 2525));
	assert_false(has(qs, "::2", 2526));
	queue_self_free(&qs);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_wildcard_is_all_of_loopback),
	    cmocka_unit_test(test_one_address_each),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
