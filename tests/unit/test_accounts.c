/* Unit tests for auth/accounts: addresses in Unicode NFC (accounts_normalise()). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "auth/accounts.h"
#include "core/buf.h"

/* accounts_normalise(in) into a static string, or NULL if it refuses. */
static const char *
norm(const char *in)
{
	static char out[512];
	struct buf b = BUF_INIT(0), e = BUF_INIT(0);
	int r = accounts_normalise(in, 0, &b, &e);

	if (r == 0)
		snprintf(out, sizeof(out), "%s", b.data);
	buf_free(&b);
	buf_free(&e);
	return r == 0 ? out : NULL;
}

/* o + U+0308 and U+00F6 are one address; ASCII is as it was. */
static void
test_nfc(void **state)
{
	(void)state;
	assert_string_equal(norm("jo\xcc\x88rg@example.test"), "j\xc3\xb6rg@example.test");
	assert_string_equal(norm("j\xc3\xb6rg@example.test"), "j\xc3\xb6rg@example.test");
	assert_string_equal(norm("Jo\xcc\x88RG@EXAMPLE.test"), "j\xc3\xb6rg@example.test");
	/* Hangul jamo compose to a syllable. */
	assert_string_equal(norm("\xe1\x84\x92\xe1\x85\xa1\xe1\x86\xab@example.test"),
			    "\xed\x95\x9c@example.test");
	assert_string_equal(norm("Alice+Tag@Example.TEST"), "alice+tag@example.test");
}

/* The checks are of the NFC form, which may hold ASCII the input did not. */
static void
test_nfc_then_checked(void **state)
{
	char in[300];

	(void)state;
	/* U+212A KELVIN SIGN is 'K' in NFC, lowercased like any ASCII. */
	assert_string_equal(norm("\xe2\x84\xaa"
				 "ate@example.test"),
			    "kate@example.test");
	/* U+037E GREEK QUESTION MARK is ';', which no local part holds. */
	assert_null(norm("a\xcd\xbe"
			 "b@example.test"));
	/* U+0958 (3 octets) is two code points (6) in NFC: 21 of them fit 64
	 * octets as given, not in NFC. */
	in[0] = '\0';
	for (int i = 0; i < 21; i++)
		strcat(in, "\xe0\xa5\x98");
	strcat(in, "@example.test");
	assert_null(norm(in));
	/* 26 decomposed o-umlauts (78 octets) are 52 in NFC. */
	in[0] = '\0';
	for (int i = 0; i < 26; i++)
		strcat(in, "o\xcc\x88");
	strcat(in, "@example.test");
	assert_non_null(norm(in));
	/* Ill-formed UTF-8 is refused before any normalisation. */
	assert_null(norm("a\xe0\x80\xaf@example.test"));
	assert_null(norm("a\xc3@example.test"));
	/* A combining mark with no base is as it was: allowed. */
	assert_non_null(norm("\xcc\x88@example.test"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_nfc),
	    cmocka_unit_test(test_nfc_then_checked),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
