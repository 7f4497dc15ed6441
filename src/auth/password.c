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
#include "core/buf.h"
#include "core/util.h"

#include <crypt.h>
#include <stddef.h>
#include <stdio.h>
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

/*
 * The supported schemes' layout: the '$' fields between the scheme and the
 * hash (a salt, a cost or parameters), and the hash's length after the
 * last '$' (bcrypt's holds its salt). Names and forms are for messages.
 * The tables are kept tab-indented like the rest, not re-flowed.
 */
/* clang-format off */
static const struct {
	const char *prefix;
	const char *name;
	const char *form;
	const char *first, *last;	/* names of the first and last '$' fields */
	int fields;
	size_t len;
} scheme[] = {
	{"$y$", "yescrypt", "$y$PARAMS$SALT$HASH", "PARAMS", "SALT", 2, 43},
	{"$6$", "sha512-crypt", "$6$[rounds=N$]SALT$HASH", "rounds=N", "SALT", 1, 86},
	{"$5$", "sha256-crypt", "$5$[rounds=N$]SALT$HASH", "rounds=N", "SALT", 1, 43},
	{"$2b$", "bcrypt", "$2b$COST$HASH", "COST", "COST", 1, 53},
	{"$2y$", "bcrypt", "$2y$COST$HASH", "COST", "COST", 1, 53},
	{"$2a$", "bcrypt", "$2a$COST$HASH", "COST", "COST", 1, 53},
};

/* Schemes crypt(3) knows that surat does not verify: named when refused. */
static const struct {
	const char *prefix;
	const char *name;
} unsupported[] = {
	{"$1$", "md5-crypt"}, {"$7$", "scrypt"}, {"$gy$", "gost-yescrypt"},
	{"$sha1$", "sha1-crypt"}, {"$md5", "Sun md5-crypt"}, {"_", "BSDi DES"},
};
/* clang-format on */

/* Why hash is of no scheme password_verify() knows, appended to why. */
static void
hash_scheme_why(const char *hash, struct buf *why)
{
	buf_puts(why, "not a supported crypt(3) hash: ");
	size_t id = hash[0] == '$' ? strspn(hash + 1, "abcdefghijklmnopqrstuvwxyz0123456789") : 0;
	for (size_t i = 0; i < ARRAY_LEN(unsupported); i++)
		if (strncmp(hash, unsupported[i].prefix, strlen(unsupported[i].prefix)) == 0) {
			buf_printf(why, "%s is %s, which surat does not verify",
				   unsupported[i].prefix, unsupported[i].name);
			goto want;
		}
	if (hash[0] == '\0')
		buf_puts(why, "it is empty");
	else if (hash[0] == '!' || hash[0] == '*')
		buf_puts(why, "a leading '!' or '*' marks a locked account or one without a "
			      "password (as in /etc/shadow), not a hash");
	else if (id > 0 && id <= 8 && hash[id + 1] == '$')
		buf_printf(why, "its scheme $%.*s$ is unknown", (int)id, hash + 1);
	else if (strchr(hash, '$') == NULL && strlen(hash) == 13)
		buf_puts(why, "it looks like traditional DES crypt, which surat does not verify");
	else
		buf_puts(why, "it does not start with a scheme such as $6$");
want:
	buf_puts(why, "; surat verifies $y$ (yescrypt), $6$ (sha512-crypt), $5$ (sha256-crypt) "
		      "and $2b$ (bcrypt)");
}

/* crypt_checksalt() results a whole hash may have. */
static int
salt_ok(int r)
{
	return r == CRYPT_SALT_OK || r == CRYPT_SALT_METHOD_LEGACY || r == CRYPT_SALT_TOO_CHEAP;
}

/*
 * Why the '$' fields of scheme k from p to the HASH at tail are not
 * whole, appended to why; 0 if they look whole. crypt_checksalt() reads
 * only the scheme and some of them: it passes "$y$$SALT$HASH", a field too
 * many, "rounds=999" and a bcrypt cost of 99, and crypt(3) then fails
 * every password. An empty SALT is whole: crypt(3) makes "$6$$HASH" and
 * "$y$j9T$$HASH" and verifies them.
 */
static int
hash_fields_why(size_t k, const char *p, const char *tail, struct buf *why)
{
	int i = 0, nfields = 0;
	int sha = scheme[k].prefix[1] == '5' || scheme[k].prefix[1] == '6';
	int bcrypt = strcmp(scheme[k].name, "bcrypt") == 0;

	for (const char *q = p; q < tail - 1; q++)
		nfields += *q == '$';
	/* sha-crypt: SALT, or rounds=N$SALT; yescrypt: PARAMS$SALT; bcrypt: COST. */
	if (nfields + 1 != scheme[k].fields &&
	    !(sha && nfields == 1 && strncmp(p, "rounds=", 7) == 0)) {
		buf_printf(why, "with %d '$' fields before its HASH", nfields + 1);
		return 1;
	}
	for (const char *f = p; f < tail; i++) {
		size_t n = strcspn(f, "$");
		const char *name = i == nfields ? scheme[k].last : scheme[k].first;
		if (n == 0 && !(i == nfields && strcmp(name, "SALT") == 0)) {
			buf_printf(why, "with an empty %s", name);
			return 1;
		}
		/* bcrypt's cost is two digits, 04 to 31 (a log2 of rounds). */
		if (bcrypt && (n != 2 || strspn(f, "0123456789") < 2 || strncmp(f, "04", 2) < 0 ||
			       strncmp(f, "31", 2) > 0)) {
			buf_puts(why, "with a COST that is not two digits from 04 to 31");
			return 1;
		}
		/* crypt(3) refuses other rounds, and writes no more than 16 of a SALT. */
		size_t digits = n > 7 ? strspn(f + 7, "0123456789") : 0;
		if (sha && i < nfields &&
		    (digits != n - 7 || digits < 4 || digits > 9 || f[7] == '0')) {
			buf_puts(why, "with a rounds=N that is not 1000 to 999999999");
			return 1;
		}
		if (sha && i == nfields &&
		    (n > 16 || (nfields == 0 && strncmp(f, "rounds=", 7) == 0))) {
			buf_puts(why, n > 16 ? "with a SALT longer than 16 characters"
					     : "with rounds=N but no SALT after it");
			return 1;
		}
		f += n + 1;
	}
	return 0;
}

int
password_hash_check(const char *hash, struct buf *why)
{
	static const char alphabet[] =
	    "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
	size_t k = 0;

	while (k < ARRAY_LEN(scheme) &&
	       strncmp(hash, scheme[k].prefix, strlen(scheme[k].prefix)) != 0)
		k++;
	if (k == ARRAY_LEN(scheme)) {
		if (why)
			hash_scheme_why(hash, why);
		return 0;
	}
	/*
	 * Read, not computed: crypt(3) of a test password would tell as well,
	 * at the cost of a hash (90 ms for yescrypt) per account imported.
	 */
	const char *p = hash + strlen(scheme[k].prefix), *tail = strrchr(hash, '$') + 1;
	size_t n = strlen(tail);
	int fields = 0;
	for (const char *q = p; (q = strchr(q, '$')) != NULL; q++)
		fields++;
	struct buf what = BUF_INIT(0);
	if (fields < scheme[k].fields || n == 0) {
		buf_puts(&what, "cut short before its HASH");
	} else if (!hash_fields_why(k, p, tail, &what)) {
		/* After the fields' and the HASH's own checks: crypt_checksalt()
		 * refuses a bad character anywhere, and would blame the salt. */
		int r = strspn(tail, alphabet) != n ? CRYPT_SALT_OK : crypt_checksalt(hash);
		if (strspn(tail, alphabet) != n)
			buf_puts(&what, "with a HASH holding a character other than ./0-9A-Za-z "
					"(damaged?)");
		else if (r == CRYPT_SALT_METHOD_DISABLED)
			buf_puts(&what, "turned off in this system's crypt(3)");
		else if (!salt_ok(r))
			buf_puts(&what, "whose settings before the HASH crypt(3) refuses");
		else if (n != scheme[k].len)
			buf_printf(&what, "with a HASH of %zu characters, not %zu (%s)", n,
				   scheme[k].len, n < scheme[k].len ? "cut short?" : "damaged?");
	}
	int whole = what.len == 0;
	if (!whole && why != NULL) {
		buf_printf(why, "not a whole crypt(3) hash, no password would match it: %s (%s) %s",
			   scheme[k].prefix, scheme[k].name, buf_str(&what));
		buf_printf(why, "; the form is %s, HASH %zu characters of ./0-9A-Za-z",
			   scheme[k].form, scheme[k].len);
	}
	buf_free(&what);
	return whole;
}

int
password_hash_complete(const char *hash)
{
	return password_hash_supported(hash) && password_hash_check(hash, NULL);
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
