/* Unit tests for auth/password: yescrypt, sha512-crypt, bcrypt. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <crypt.h>
#include <cmocka.h>

#include "auth/password.h"

static void
check_scheme(const char *prefix)
{
	char *salt = crypt_gensalt_ra(prefix, 0, NULL, 0);
	assert_non_null(salt);
	void *data = NULL;
	int size = 0;
	char *h = crypt_ra("correct horse", salt, &data, &size);
	assert_non_null(h);
	char *hash = strdup(h);
	free(data);
	free(salt);
	assert_true(password_hash_supported(hash));
	assert_int_equal(password_verify("correct horse", hash), 1);
	assert_int_equal(password_verify("correct horsf", hash), 0);
	assert_int_equal(password_verify("", hash), 0);
	free(hash);
}

static void
test_yescrypt(void **state)
{
	check_scheme("$y$");
	char *h = password_hash("pw");
	assert_non_null(h);
	assert_memory_equal(h, "$y$", 3);
	assert_int_equal(password_verify("pw", h), 1);
	assert_int_equal(password_verify("pW", h), 0);
	free(h);
}

static void
test_sha512(void **state)
{
	check_scheme("$6$");
	/* A fixed vector, as /etc/shadow or Dovecot would hold it. */
	char *h = crypt("secret", "$6$saltsalt$");
	char *copy = strdup(h);
	assert_int_equal(password_verify("secret", copy), 1);
	assert_int_equal(password_verify("Secret", copy), 0);
	free(copy);
}

static void
test_bcrypt(void **state)
{
	check_scheme("$2b$");
}

static void
test_unsupported(void **state)
{
	assert_int_equal(password_verify("x", ""), 0);
	assert_int_equal(password_verify("x", NULL), 0);
	assert_int_equal(password_verify("x", "!locked"), 0);
	assert_int_equal(password_verify("x", "*"), 0);
	assert_int_equal(password_verify("x", "$1$abc$def"), 0);	/* md5-crypt: refused */
	assert_int_equal(password_verify("x", "plain"), 0);
	assert_false(password_hash_supported("$y$"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_yescrypt),
		cmocka_unit_test(test_sha512),
		cmocka_unit_test(test_bcrypt),
		cmocka_unit_test(test_unsupported),
	};
	return cmocka_run_group_tests_name("password", tests, NULL, NULL);
}
