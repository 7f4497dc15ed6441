/* Unit tests for core/util: the CRC-32 the spool checksums with, the FNV-1a
 * hash tables use, and the key clients are counted under for the per-IP
 * connection limit. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "core/util.h"

/* The definition, one bit at a time: what every faster form must equal. */
static uint32_t
crc_bitwise(uint32_t crc, const unsigned char *p, size_t n)
{
	crc = ~crc;
	for (size_t i = 0; i < n; i++) {
		crc ^= p[i];
		for (int k = 0; k < 8; k++)
			crc = (crc & 1) ? 0xEDB88320u ^ (crc >> 1) : crc >> 1;
	}
	return ~crc;
}

/* The standard check value, and the empty input. */
static void
test_crc32_check_value(void **state)
{
	(void)state;
	assert_int_equal(util_crc32(0, "123456789", 9), 0xCBF43926u);
	assert_int_equal(util_crc32(0, "", 0), 0);
	assert_int_equal(util_crc32(0x12345678u, "", 0), 0x12345678u);
}

/*
 * Every length from 0 to 64 at every alignment from 0 to 7, from several
 * starting values, and in pieces: the word-at-a-time loop and the byte loop
 * that finishes it must agree with the definition and with each other.
 */
static void
test_crc32_matches_definition(void **state)
{
	unsigned char data[80];
	const uint32_t seeds[] = {0, 1, 0xffffffffu, 0xdeadbeefu};

	(void)state;
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (unsigned char)(i * 151 + 7);
	for (size_t s = 0; s < sizeof(seeds) / sizeof(seeds[0]); s++)
		for (size_t off = 0; off < 8; off++)
			for (size_t len = 0; len <= 64; len++) {
				uint32_t want = crc_bitwise(seeds[s], data + off, len);
				assert_int_equal(util_crc32(seeds[s], data + off, len), want);
				size_t cut = len / 3;
				uint32_t part = util_crc32(seeds[s], data + off, cut);
				assert_int_equal(util_crc32(part, data + off + cut, len - cut), want);
			}
}

static const char *
key_of(const char *ip, unsigned prefix)
{
	static char out[UTIL_CLIENT_KEY_MAX];
	struct sockaddr_in s4 = {.sin_family = AF_INET};
	struct sockaddr_in6 s6 = {.sin6_family = AF_INET6};

	if (inet_pton(AF_INET, ip, &s4.sin_addr) == 1)
		util_client_key((struct sockaddr *)&s4, prefix, out, sizeof(out));
	else if (inet_pton(AF_INET6, ip, &s6.sin6_addr) == 1)
		util_client_key((struct sockaddr *)&s6, prefix, out, sizeof(out));
	else
		fail_msg("bad test address %s", ip);
	return out;
}

/* IPv4 as itself; IPv6 by its prefix, so that one site's many addresses count as one. */
static void
test_client_key(void **state)
{
	(void)state;
	assert_string_equal(key_of("192.0.2.7", 64), "192.0.2.7");
	assert_string_equal(key_of("::ffff:192.0.2.7", 64), "192.0.2.7");
	assert_string_equal(key_of("2001:db8:1:2:aaaa:bbbb:cccc:dddd", 64), "2001:db8:1:2::/64");
	/* (key_of() returns one static buffer: compare with literals.) */
	assert_string_equal(key_of("2001:db8:1:2:ffff::9", 64), "2001:db8:1:2::/64");
	assert_string_equal(key_of("2001:db8:1:2::1", 64), "2001:db8:1:2::/64");
	assert_string_not_equal(key_of("2001:db8:1:2::1", 64), "2001:db8:1:3::/64");
	assert_string_equal(key_of("2001:db8:1:3::1", 64), "2001:db8:1:3::/64");
	assert_string_equal(key_of("::1", 128), "::1/128");
	assert_string_equal(key_of("::1", 64), "::/64");
	/* Cut inside a byte. */
	assert_string_equal(key_of("2001:db8:ffff::1", 36), "2001:db8:f000::/36");
	assert_string_equal(key_of("2001:db8:1:2::1", 1), "::/1");
	assert_string_equal(key_of("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 84),
			    "ffff:ffff:ffff:ffff:ffff:f000::/84");
	/* Out of range: the whole address. */
	assert_string_equal(key_of("2001:db8::5", 0), "2001:db8::5/128");
	struct sockaddr un = {.sa_family = AF_UNIX};
	char out[UTIL_CLIENT_KEY_MAX];
	util_client_key(&un, 64, out, sizeof(out));
	assert_string_equal(out, "unknown");
}

/* The published FNV-1a vectors: seed 0 must be plain FNV-1a. */
static void
test_hash_vectors(void **state)
{
	(void)state;
	assert_int_equal(util_hash32(0, "", 0), 0x811c9dc5u);
	assert_int_equal(util_hash32(0, "a", 1), 0xe40c292cu);
	assert_int_equal(util_hash32(0, "foobar", 6), 0xbf9cf968u);
	assert_true(util_hash64(0, "", 0) == 0xcbf29ce484222325ULL);
	assert_true(util_hash64(0, "a", 1) == 0xaf63dc4c8601ec8cULL);
	assert_true(util_hash64(0, "foobar", 6) == 0x85944171f73967e8ULL);
}

/* The seed goes into the offset basis, so it changes every hash. */
static void
test_hash_seed(void **state)
{
	(void)state;
	assert_int_equal(util_hash32(0x12345678u, "", 0), 0x811c9dc5u ^ 0x12345678u);
	assert_int_not_equal(util_hash32(1, "foobar", 6), util_hash32(0, "foobar", 6));
	assert_true(util_hash64(0x1234, "", 0) == (0xcbf29ce484222325ULL ^ 0x1234));
	assert_true(util_hash64(1, "foobar", 6) != util_hash64(0, "foobar", 6));
}

/* Only ASCII letters fold; octets >= 0x80 hash as themselves. */
static void
test_hash_lower(void **state)
{
	(void)state;
	assert_int_equal(util_hash32_lower(0, "FooBAR", 6), 0xbf9cf968u);
	assert_int_equal(util_hash32_lower(7, "FooBAR", 6), util_hash32(7, "foobar", 6));
	assert_int_equal(util_hash32_lower(0, "@[`{\xc4\xe4", 6),
			 util_hash32(0, "@[`{\xc4\xe4", 6));
	assert_int_not_equal(util_hash32_lower(0, "\xc4", 1), util_hash32(0, "\xe4", 1));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_crc32_check_value),
	    cmocka_unit_test(test_crc32_matches_definition),
	    cmocka_unit_test(test_client_key),
	    cmocka_unit_test(test_hash_vectors),
	    cmocka_unit_test(test_hash_seed),
	    cmocka_unit_test(test_hash_lower),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
