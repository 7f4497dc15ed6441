/*
 * password — see password.h. crypt_ra allocates its own scratch area, so
 * concurrent calls from worker threads are safe; so is libidn's
 * stringprep(), which keeps no state between calls.
 *
 * SECURITY: an unknown scheme, a locked hash ('!', '*') or an empty hash
 * never verifies. A password SASLprep refuses is never an error of its own:
 * it is checked as raw octets and fails like any wrong password.
 */
#include "auth/password.h"
#include "core/util.h"

#include <crypt.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <stringprep.h>

/* The largest buffer SASLprep of a password may take (an AUTH line is 12 KB). */
#define PASSWORD_PREP_MAX (256 * 1024)

static const char *const supported[] = {"$y$", "$6$", "$5$", "$2b$", "$2y$", "$2a$"};

int
password_hash_supported(const char *hash)
{
	for (size_t i = 0; i < ARRAY_LEN(supported); i++)
		if (strncmp(hash, supported[i], strlen(supported[i])) == 0)
			return strlen(hash) > strlen(supported[i]) + 8;
	return 0;
}

/* The length of each scheme's hash, after the last '$' (bcrypt's holds its salt). */
static const struct {
	const char *prefix;
	size_t len;
} hash_len[] = {{"$y$", 43}, {"$6$", 86}, {"$5$", 43}, {"$2b$", 53}, {"$2y$", 53}, {"$2a$", 53}};

int
password_hash_complete(const char *hash)
{
	/*
	 * Read, not computed: crypt(3) of a test password would tell as well,
	 * at the cost of a hash (90 ms for yescrypt) per account imported.
	 */
	if (!password_hash_supported(hash))
		return 0;
	const char *tail = strrchr(hash, '$') + 1;
	int r = crypt_checksalt(hash);
	if (r != CRYPT_SALT_OK && r != CRYPT_SALT_METHOD_LEGACY && r != CRYPT_SALT_TOO_CHEAP)
		return 0;
	for (size_t i = 0; i < ARRAY_LEN(hash_len); i++)
		if (strncmp(hash, hash_len[i].prefix, strlen(hash_len[i].prefix)) == 0)
			/* A salt (bcrypt: a cost) between the scheme and the hash. */
			return tail - hash > (ptrdiff_t)strlen(hash_len[i].prefix) + 1 &&
			       strlen(tail) == hash_len[i].len &&
			       strspn(tail, "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
					    "abcdefghijklmnopqrstuvwxyz") == hash_len[i].len;
	return 0;
}

/* Printable ASCII: nothing in it is mapped, normalised or prohibited. */
static int
printable_ascii(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
			return 0;
	return 1;
}

static const char *
prep_error(int rc)
{
	switch (rc) {
	case STRINGPREP_CONTAINS_UNASSIGNED:
		return "it contains a code point unassigned in Unicode 3.2 (a newer emoji, for "
		       "one), which SASLprep (RFC 4013) does not allow in a stored password";
	case STRINGPREP_CONTAINS_PROHIBITED:
		return "it contains a character SASLprep (RFC 4013) prohibits: a control "
		       "character, or a private-use, non-character, surrogate, tag or "
		       "display-changing code point";
	case STRINGPREP_BIDI_BOTH_L_AND_RAL:
	case STRINGPREP_BIDI_LEADTRAIL_NOT_RAL:
	case STRINGPREP_BIDI_CONTAINS_PROHIBITED:
		return "it mixes right-to-left and left-to-right letters, or its right-to-left "
		       "text does not start and end with a right-to-left letter (RFC 3454 "
		       "section 6)";
	case STRINGPREP_ICONV_ERROR:
		return "it is not valid UTF-8";
	case STRINGPREP_MALLOC_ERROR:
		PANIC("SASLprep: out of memory");
	case STRINGPREP_PROFILE_ERROR:
	case STRINGPREP_FLAG_ERROR:
	case STRINGPREP_UNKNOWN_PROFILE:
		PANIC("SASLprep: %s", stringprep_strerror(rc));
	default:
		return stringprep_strerror(rc);
	}
}

int
password_prep(const char *pw, enum password_prep_use use, char **prep_r, const char **why_r)
{
	size_t len = strlen(pw), size = 4 * len + 16;
	char *buf;
	int rc;

	*prep_r = NULL;
	*why_r = NULL;
	if (printable_ascii(pw))
		return 0;
	/*
	 * In a buffer of ours, wiped whole whatever the result: stringprep()
	 * writes a shorter result over the input, leaving its tail behind.
	 * XXX libidn's own UCS-4 and UTF-8 copies are freed unwiped.
	 */
	for (;;) {
		buf = xmalloc(size);
		memcpy(buf, pw, len + 1);
		rc = stringprep(buf, size, use == PASSWORD_PREP_STORED ? STRINGPREP_NO_UNASSIGNED : 0,
				stringprep_saslprep);
		if (rc != STRINGPREP_TOO_SMALL_BUFFER || size > PASSWORD_PREP_MAX)
			break;
		util_wipe(buf, size);
		free(buf);
		size *= 2;	/* NFKC may make one character eighteen */
	}
	if (rc == STRINGPREP_OK && buf[0] != '\0')
		*prep_r = xstrdup(buf);
	util_wipe(buf, size);
	free(buf);
	if (rc != STRINGPREP_OK) {
		*why_r = rc == STRINGPREP_TOO_SMALL_BUFFER ? "it is too long once prepared"
							   : prep_error(rc);
		return -1;
	}
	if (*prep_r == NULL) {
		/* RFC 4616 2: passwd is 1*SAFE; "\u00ad" alone would be no password. */
		*why_r = "nothing is left of it after SASLprep (RFC 4013): it holds only "
			 "characters that map to nothing, such as U+00AD SOFT HYPHEN";
		return -1;
	}
	return 1;
}

void
password_prep_free(char **p)
{
	if (*p != NULL) {
		util_wipe(*p, strlen(*p));
		free(*p);
		*p = NULL;
	}
}

static char *
hash_raw(const char *pw)
{
	char *salt = crypt_gensalt_ra("$y$", 0, NULL, 0);
	void *data = NULL;
	int size = 0;

	if (salt == NULL)
		return NULL;
	char *h = crypt_ra(pw, salt, &data, &size);
	char *out = (h && h[0] != '*') ? xstrdup(h) : NULL;
	free(salt);
	if (data) {
		util_wipe(data, (size_t)size);
		free(data);
	}
	return out;
}

char *
password_hash(const char *pw, const char **why_r)
{
	char *prep;

	if (password_prep(pw, PASSWORD_PREP_STORED, &prep, why_r) < 0)
		return NULL;
	char *h = hash_raw(prep ? prep : pw);
	password_prep_free(&prep);
	return h;
}

static int
verify_raw(const char *pw, const char *hash)
{
	void *data = NULL;
	int size = 0, ok = 0;

	char *h = crypt_ra(pw, hash, &data, &size);
	if (h && h[0] != '*' && strlen(h) == strlen(hash))
		ok = CRYPTO_memcmp(h, hash, strlen(hash)) == 0;
	if (data) {
		util_wipe(data, (size_t)size);
		free(data);
	}
	return ok;
}

int
password_verify(const char *pw, const char *hash)
{
	const char *why;
	char *prep;
	int ok;

	if (hash == NULL || !password_hash_supported(hash))
		return 0;
	if (password_prep(pw, PASSWORD_PREP_QUERY, &prep, &why) <= 0)
		return verify_raw(pw, hash);	/* ASCII, or refused: the octets as sent */
	ok = verify_raw(prep, hash);
	/* A hash set before surat prepared passwords is of the raw octets. A
	 * wrong non-ASCII password costs two hashes; its sender knows that much. */
	if (!ok && strcmp(prep, pw) != 0)
		ok = verify_raw(pw, hash);
	password_prep_free(&prep);
	return ok;
}
