/* Unit tests for auth/password: yescrypt, sha512-crypt, bcrypt, SASLprep. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <crypt.h>
#include <cmocka.h>

#include "auth/password.h"
#include "core/buf.h"

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
	assert_int_equal(password_hash_check(hash, NULL), 1);
	assert_int_equal(password_verify("correct horse", hash), 1);
	assert_int_equal(password_verify("correct horsf", hash), 0);
	assert_int_equal(password_verify("", hash), 0);
	free(hash);
}

static void
test_yescrypt(void **state)
{
	check_scheme("$y$");
	const char *why = "unset";
	char *h = password_hash("pw", &why);
	assert_non_null(h);
	assert_null(why);
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

/* password_hash_check(hash) is 0 with a reason that holds want. */
static void
check_why(const char *hash, const char *want)
{
	struct buf why = BUF_INIT(0);

	assert_int_equal(password_hash_check(hash, &why), 0);
	assert_int_equal(password_hash_complete(hash), 0);
	if (strstr(buf_str(&why), want) == NULL)
		fail_msg("%s: '%s' lacks '%s'", hash, buf_str(&why), want);
	buf_free(&why);
}

/* A hash refused says its scheme and what is missing or wrong. */
static void
test_hash_check_why(void **state)
{
	char whole[128], cut[128];
	strcpy(whole, crypt("secret", "$6$saltsalt$"));
	assert_int_equal(password_hash_check(whole, NULL), 1);
	memcpy(cut, whole, strlen(whole) - 4);
	cut[strlen(whole) - 4] = '\0';
	check_why(cut, "$6$ (sha512-crypt) with a HASH of 82 characters, not 86 (cut short?)");
	check_why("$6$short", "$6$ (sha512-crypt) cut short before its HASH");
	check_why("$6$saltsalt$", "cut short before its HASH");
	check_why("$y$j9T$salt", "$y$ (yescrypt) cut short before its HASH; the form is "
				 "$y$PARAMS$SALT$HASH, HASH 43 characters");
	check_why("$2b$10", "$2b$ (bcrypt) cut short");
	whole[40] = '!';
	check_why(whole, "with a HASH holding a character other than ./0-9A-Za-z");
	/* crypt_checksalt() passes these; crypt(3) then fails every password. */
	check_why("$y$$saltsalt$abcdefghijklmnopqrstuvwxyzabcdefghijklmnopq",
		  "$y$ (yescrypt) with an empty PARAMS");
	check_why("$y$j9T$abc$def$abcdefghijklmnopqrstuvwxyzabcdefghijklmnopq",
		  "with 3 '$' fields before its HASH");
	check_why("$y$j9T$salt$$abcdefghijklmnopqrstuvwxyzabcdefghijklmnopq", "with 3 '$' fields");
	check_why("$2b$99$abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyza",
		  "$2b$ (bcrypt) with a COST that is not two digits from 04 to 31");
	check_why("$2b$3$abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyza",
		  "COST that is not");
	check_why("$6$$$abc", "$6$ (sha512-crypt) with 2 '$' fields");
	/* crypt(3) refuses these rounds, and cuts a SALT to 16: no password matches. */
	static const char *const sha_bad[][2] = {
	    {"$6$rounds=999$salt$", "rounds=N that is not 1000 to 999999999"},
	    {"$6$rounds=05000$salt$", "rounds=N that is not"},
	    {"$5$rounds=1000000000$salt$", "rounds=N that is not"},
	    {"$6$rounds=5000$", "rounds=N but no SALT after it"},
	    {"$6$saltsaltsaltsalt1$", "SALT longer than 16 characters"},
	};
	for (size_t i = 0; i < sizeof(sha_bad) / sizeof(sha_bad[0]); i++) {
		char h[256];
		/* A HASH of the right length, so only the settings are at fault. */
		snprintf(h, sizeof(h), "%s%.*s", sha_bad[i][0], sha_bad[i][0][1] == '6' ? 86 : 43,
			 "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijklmnopqr"
			 "stuvwxyzabcdefghijklmnop");
		check_why(h, sha_bad[i][1]);
	}
	check_why("$1$salt$hash", "not a supported crypt(3) hash: $1$ is md5-crypt");
	check_why("$zz$a$b", "its scheme $zz$ is unknown");
	check_why("!", "locked account");
	check_why("", "it is empty");
	check_why("secret", "does not start with a scheme");
}

/*
 * What crypt(3) makes of settings with an empty SALT, or with rounds=, it
 * verifies: such a hash is whole, not refused as one no password matches.
 */
static void
test_hash_check_whole(void **state)
{
	static const char *const settings[] = {
	    "$6$",
	    "$5$",
	    "$6$rounds=5000$",
	    "$5$rounds=1000$",
	    "$y$j9T$$",
	    "$6$rounds=1000$saltsaltsaltsalt$",
	    "$6$rounds=5000$rounds=5000$",
	};
	for (size_t i = 0; i < sizeof(settings) / sizeof(settings[0]); i++) {
		char h[256];
		snprintf(h, sizeof(h), "%s", crypt("secret", settings[i]));
		assert_true(password_verify("secret", h));
		struct buf why = BUF_INIT(0);
		if (!password_hash_check(h, &why))
			fail_msg("%s: refused: %s", h, buf_str(&why));
		assert_int_equal(password_hash_complete(h), 1);
		buf_free(&why);
	}
}

/* Prepared form of in, or NULL when SASLprep refuses it. */
static char *
prep(const char *in, enum password_prep_use use)
{
	const char *why = NULL;
	char *out = (char *)"unset";
	int r = password_prep(in, use, &out, &why);

	if (r < 0) {
		assert_null(out);
		assert_non_null(why);
		return NULL;
	}
	assert_null(why);
	if (r == 0) {
		assert_null(out);
		return strdup(in);
	}
	assert_int_equal(r, 1);
	return out;
}

static void
check_prep(const char *in, const char *want)
{
	for (int use = PASSWORD_PREP_QUERY; use <= PASSWORD_PREP_STORED; use++) {
		char *got = prep(in, (enum password_prep_use)use);
		if (want == NULL) {
			assert_null(got);
		} else {
			assert_non_null(got);
			assert_string_equal(got, want);
			password_prep_free(&got);
			assert_null(got);
		}
	}
}

/* A password that grows under NFKC past the first buffer: U+FDFA is 18
 * characters (15 Arabic letters, 3 spaces) once prepared. */
static void
test_prep_grows(void **state)
{
	char in[20 * 3 + 1], want[20 * 33 + 1];
	const char one[] = "\xd8\xb5\xd9\x84\xd9\x89 \xd8\xa7\xd9\x84\xd9\x84\xd9\x87 "
			   "\xd8\xb9\xd9\x84\xd9\x8a\xd9\x87 \xd9\x88\xd8\xb3\xd9\x84\xd9\x85";

	(void)state;
	assert_int_equal(strlen(one), 33);
	in[0] = want[0] = '\0';
	for (int i = 0; i < 20; i++) {
		strcat(in, "\xef\xb7\xba");
		strcat(want, one);
	}
	check_prep(in, want);
}

static void
test_prep_ascii(void **state)
{
	const char *why = "unset";
	char *out = (char *)"unset";

	/* Printable ASCII never reaches the library: it is its own prepared form. */
	assert_int_equal(password_prep("correct horse ~!", PASSWORD_PREP_STORED, &out, &why), 0);
	assert_null(out);
	assert_null(why);
	assert_int_equal(password_prep("", PASSWORD_PREP_QUERY, &out, &why), 0);
	/* ASCII controls are prohibited (RFC 4013 2.3, RFC 3454 C.2.1). */
	check_prep("a\ab", NULL);
	check_prep("a\tb", NULL);
	check_prep("a\x7f", NULL);
	password_prep_free(&out);	/* NULL: nothing to do */
}

static void
test_prep_maps(void **state)
{
	check_prep("pass\xc2\xa0word", "pass word");		/* U+00A0 no-break space */
	check_prep("pass\xe2\x80\x83word", "pass word");	/* U+2003 em space */
	check_prep("pass\xe3\x80\x80word", "pass word");	/* U+3000 ideographic space */
	check_prep("I\xc2\xadX", "IX");			/* U+00AD soft hyphen */
	check_prep("ab\xef\xbb\xbf", "ab");			/* U+FEFF zero width no-break space */
	check_prep("e\xcc\x81", "\xc3\xa9");			/* NFD -> NFC */
	check_prep("\xc3\xa9", "\xc3\xa9");
	check_prep("\xef\xbc\xa1\xef\xbd\x82", "Ab");		/* fullwidth, NFKC */
	check_prep("\xe2\x85\xa8", "IX");			/* U+2168 ROMAN NUMERAL NINE */
	check_prep("\xc2\xaa", "a");				/* RFC 4013 3: <U+00AA> -> "a" */
	check_prep("\xd7\x90\xd7\x91", "\xd7\x90\xd7\x91");	/* Hebrew, right-to-left only */
}

static void
test_prep_refuses(void **state)
{
	const char *why;
	char *out;

	check_prep("\xc2\x87x", NULL);		/* U+0087, a C1 control */
	check_prep("\xee\x80\x80", NULL);		/* U+E000 private use */
	check_prep("\xef\xbf\xbe", NULL);		/* U+FFFE non-character */
	check_prep("ab\xe2\x80\x8e", NULL);		/* U+200E LEFT-TO-RIGHT MARK */
	check_prep("\xd8\xa7" "1", NULL);		/* RFC 4013 3: RAL then not RAL */
	check_prep("\xd8\xa7" "a" "\xd8\xa7", NULL);	/* RAL and L */
	check_prep("\xff", NULL);			/* not UTF-8 */
	check_prep("caf\xe9", NULL);			/* Latin-1, not UTF-8 */
	check_prep("\xc0\x80", NULL);			/* overlong NUL */
	check_prep("\xed\xa0\x80", NULL);		/* a surrogate in UTF-8 */
	check_prep("\xe0\xa4", NULL);			/* cut short */
	check_prep("\xc2\xad", NULL);			/* maps to nothing: empty */
	check_prep("\xc2\xad\xe2\x81\xa0", NULL);		/* and U+2060 word joiner */

	/* Unassigned in Unicode 3.2: a query may hold them, a stored string not. */
	static const char *const unassigned[] = {"\xc8\xa1x", "\xf0\x9f\x98\x80", "\xf3\xa0\x80\x80"};
	for (size_t i = 0; i < sizeof(unassigned) / sizeof(unassigned[0]); i++) {
		char *q = prep(unassigned[i], PASSWORD_PREP_QUERY);
		assert_non_null(q);
		assert_string_equal(q, unassigned[i]);
		password_prep_free(&q);
		assert_int_equal(password_prep(unassigned[i], PASSWORD_PREP_STORED, &out, &why), -1);
		assert_non_null(strstr(why, "unassigned"));
	}
	/* The reasons the CLI prints name the problem. */
	assert_int_equal(password_prep("a\ab", PASSWORD_PREP_STORED, &out, &why), -1);
	assert_non_null(strstr(why, "prohibits"));
	assert_int_equal(password_prep("\xff", PASSWORD_PREP_STORED, &out, &why), -1);
	assert_non_null(strstr(why, "UTF-8"));
	assert_int_equal(password_prep("\xd8\xa7" "1", PASSWORD_PREP_STORED, &out, &why), -1);
	assert_non_null(strstr(why, "right-to-left"));
	assert_int_equal(password_prep("\xc2\xad", PASSWORD_PREP_STORED, &out, &why), -1);
	assert_non_null(strstr(why, "nothing is left"));
}

static void
test_hash_prepared(void **state)
{
	const char *why;
	char *h = password_hash("pass\xc2\xa0word I\xc2\xadX e\xcc\x81", &why);

	assert_non_null(h);
	/* Any client's form of the same password logs in. */
	assert_int_equal(password_verify("pass word IX \xc3\xa9", h), 1);
	assert_int_equal(password_verify("pass\xc2\xa0word I\xc2\xadX e\xcc\x81", h), 1);
	assert_int_equal(password_verify("pass\xe2\x80\x83word \xe2\x85\xa8 e\xcc\x81", h), 1);
	assert_int_equal(password_verify("pass word IX e", h), 0);
	assert_int_equal(password_verify("pass word IX \xc3\xa9\x07", h), 0);
	assert_int_equal(password_verify("pass word IX \xc3\xa9\xff", h), 0);
	free(h);

	/* Refused when set, with the reason and no hash. */
	why = NULL;
	assert_null(password_hash("bell\a", &why));
	assert_non_null(why);
	why = NULL;
	assert_null(password_hash("new \xf0\x9f\x98\x80", &why));
	assert_non_null(strstr(why, "unassigned"));
}

/* A sha512-crypt hash of pw's raw octets, as surat made before SASLprep. */
static char *
raw_hash(const char *pw)
{
	struct crypt_data cd;

	memset(&cd, 0, sizeof(cd));
	char *h = crypt_r(pw, "$6$rounds=1000$saltsalt$", &cd);
	assert_non_null(h);
	return strdup(h);
}

static void
test_verify_raw_hashes(void **state)
{
	/* Stored before SASLprep: the same octets still log in. */
	char *h = raw_hash("pass\xc2\xa0word");
	assert_int_equal(password_verify("pass\xc2\xa0word", h), 1);
	assert_int_equal(password_verify("pass word", h), 0);
	assert_int_equal(password_verify("pass\xc2\xa0wordx", h), 0);
	free(h);
	/* Octets SASLprep refuses: compared as they are, never an error. */
	static const char *const refused[] = {"a\ab", "caf\xe9", "\xd8\xa7" "1", "\xc2\xad",
					      "\xee\x80\x80"};
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		h = raw_hash(refused[i]);
		assert_int_equal(password_verify(refused[i], h), 1);
		assert_int_equal(password_verify("x", h), 0);
		free(h);
	}
	/* A query may hold unassigned code points: prepared, and the same. */
	h = raw_hash("\xc8\xa1x");
	assert_int_equal(password_verify("\xc8\xa1x", h), 1);
	free(h);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_yescrypt),
	    cmocka_unit_test(test_sha512),
	    cmocka_unit_test(test_bcrypt),
	    cmocka_unit_test(test_unsupported),
	    cmocka_unit_test(test_hash_check_why),
	    cmocka_unit_test(test_hash_check_whole),
	    cmocka_unit_test(test_prep_ascii),
	    cmocka_unit_test(test_prep_maps),
	    cmocka_unit_test(test_prep_grows),
	    cmocka_unit_test(test_prep_refuses),
	    cmocka_unit_test(test_hash_prepared),
	    cmocka_unit_test(test_verify_raw_hashes),
	};
	return cmocka_run_group_tests_name("password", tests, NULL, NULL);
}
