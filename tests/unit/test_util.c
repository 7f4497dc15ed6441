/* Unit tests for core/util: the CRC-32 the spool checksums with. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_crc32_check_value),
	    cmocka_unit_test(test_crc32_matches_definition),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
