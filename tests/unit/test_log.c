/* Unit tests for core/log: one line per call, whole up to 1 MiB, cut there
 * past it (not at the 4 KiB of the stack buffer), and escaping that keeps
 * a value one field. */
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
#include "core/log.h"

/* Run log_msg() with stderr on a temporary file; return what it wrote. */
static char *
logged(size_t *len_r, const char *text)
{
	FILE *tmp = tmpfile();
	int saved = dup(2);

	assert_non_null(tmp);
	assert_true(saved >= 0);
	assert_int_equal(dup2(fileno(tmp), 2), 2);
	log_msg(LL_INFO, "0123456789abcdef", "x=%s", text);
	assert_int_equal(dup2(saved, 2), 2);
	close(saved);
	long n = ftell(tmp);
	assert_true(n > 0);
	char *out = malloc((size_t)n + 1);
	assert_non_null(out);
	rewind(tmp);
	assert_int_equal(fread(out, 1, (size_t)n, tmp), (size_t)n);
	out[n] = '\0';
	fclose(tmp);
	*len_r = (size_t)n;
	return out;
}

static char *
filled(size_t n)
{
	char *s = malloc(n + 1);

	assert_non_null(s);
	memset(s, 'a', n);
	s[n] = '\0';
	return s;
}

static void
test_long_lines(void **state)
{
	(void)state;
	log_init(LL_INFO, 0);
	/* Short and 100 KB: whole, one line. */
	for (size_t n = 10; n <= 100000; n *= 100) {
		char *text = filled(n), *out;
		size_t len;
		out = logged(&len, text);
		assert_int_equal(out[len - 1], '\n');
		assert_ptr_equal(strchr(out, '\n'), out + len - 1);
		assert_non_null(strstr(out, " info sid=0123456789abcdef x="));
		assert_int_equal(strlen(strstr(out, "x=")), n + 3);
		free(out);
		free(text);
	}
	/* 3 MiB: cut at 1 MiB of text, still one line. */
	char *text = filled(3 << 20), *out;
	size_t len;
	out = logged(&len, text);
	assert_int_equal(out[len - 1], '\n');
	assert_ptr_equal(strchr(out, '\n'), out + len - 1);
	size_t body = strlen(strstr(out, "x=")) - 1;
	assert_true(body >= (1u << 20) - 64 && body <= (1u << 20));
	free(out);
	free(text);
}

static void
test_escape_keeps_one_field(void **state)
{
	struct buf b = BUF_INIT(0);
	const char *in = "x client=[1.2.3.4]\r\n\"\\\xc3\xa9";

	(void)state;
	log_escape_also(&b, in, strlen(in), 200, " ");
	assert_string_equal(buf_str(&b), "x\\x20client=[1.2.3.4]\\x0d\\x0a\\x22\\x5c\\xc3\\xa9");
	buf_free(&b);
	char esc[32];
	assert_string_equal(log_esc_also(esc, sizeof(esc), "a b<c>", " <>"), "a\\x20b\\x3cc\\x3e");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_long_lines),
	    cmocka_unit_test(test_escape_keeps_one_field),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
