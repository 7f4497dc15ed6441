/* Unit tests for core/buf: growth, limits, formatting, consume. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/buf.h"

static void
test_append_and_nul(void **state)
{
	struct buf b = BUF_INIT(0);
	assert_string_equal(buf_str(&b), "");
	assert_int_equal(buf_append(&b, "abc", 3), 0);
	assert_int_equal(b.len, 3);
	assert_int_equal(b.data[3], '\0');
	for (int i = 0; i < 1000; i++)
		assert_int_equal(buf_putc(&b, 'x'), 0);
	assert_int_equal(b.len, 1003);
	assert_int_equal(b.data[1003], '\0');
	buf_free(&b);
	assert_null(b.data);
}

static void
test_limit(void **state)
{
	struct buf b = BUF_INIT(5);
	assert_int_equal(buf_append(&b, "12345", 5), 0);
	assert_int_equal(buf_append(&b, "6", 1), -1);
	assert_int_equal(b.len, 5);
	assert_string_equal(b.data, "12345");
	assert_int_equal(buf_printf(&b, "%d", 7), -1);
	assert_string_equal(b.data, "12345");
	assert_true(b.cap <= 6);
	buf_reset(&b);
	assert_int_equal(buf_printf(&b, "%s", "abcdef"), -1);
	assert_int_equal(b.len, 0);
	buf_free(&b);
}

static void
test_overflow_size(void **state)
{
	struct buf b = BUF_INIT(0);
	buf_puts(&b, "a");
	assert_int_equal(buf_grow(&b, SIZE_MAX), -1);
	assert_int_equal(buf_grow(&b, SIZE_MAX - 1), -1);
	buf_free(&b);
}

static void
test_printf_large(void **state)
{
	struct buf b = BUF_INIT(0);
	char big[1000];
	memset(big, 'q', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	assert_int_equal(buf_printf(&b, "<%s>", big), 0);
	assert_int_equal(b.len, 1001);
	assert_int_equal(b.data[0], '<');
	assert_int_equal(b.data[1000], '>');
	buf_free(&b);
}

static void
test_grow_keeps_nul(void **state)
{
	struct buf b = BUF_INIT(0);
	assert_int_equal(buf_grow(&b, 100), 0);
	assert_non_null(b.data);
	assert_int_equal(b.data[0], '\0');
	assert_string_equal(buf_str(&b), "");
	char *s = buf_steal(&b);
	assert_string_equal(s, "");
	free(s);
}

static void
test_consume_truncate_steal(void **state)
{
	struct buf b = BUF_INIT(0);
	buf_puts(&b, "hello world");
	buf_consume(&b, 6);
	assert_string_equal(b.data, "world");
	buf_truncate(&b, 3);
	assert_string_equal(b.data, "wor");
	buf_consume(&b, 100);
	assert_int_equal(b.len, 0);
	buf_puts(&b, "x");
	char *s = buf_steal(&b);
	assert_string_equal(s, "x");
	assert_null(b.data);
	free(s);
	s = buf_steal(&b);
	assert_string_equal(s, "");
	free(s);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_append_and_nul),
		cmocka_unit_test(test_limit),
		cmocka_unit_test(test_overflow_size),
		cmocka_unit_test(test_printf_large),
		cmocka_unit_test(test_grow_keeps_nul),
		cmocka_unit_test(test_consume_truncate_steal),
	};
	return cmocka_run_group_tests_name("buf", tests, NULL, NULL);
}
