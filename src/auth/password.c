/*
 * password — see password.h. crypt_ra allocates its own scratch area, so
 * concurrent calls from worker threads are safe.
 *
 * SECURITY: an unknown scheme, a locked hash ('!', '*') or an empty hash
 * never verifies.
 */
#include "auth/password.h"
#include "core/util.h"

#include <crypt.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

static const char *const supported[] = {"$y$", "$6$", "$5$", "$2b$", "$2y$", "$2a$"};

int
password_hash_supported(const char *hash)
{
	for (size_t i = 0; i < ARRAY_LEN(supported); i++)
		if (strncmp(hash, supported[i], strlen(supported[i])) == 0)
			return strlen(hash) > strlen(supported[i]) + 8;
	return 0;
}

char *
password_hash(const char *pw)
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

int
password_verify(const char *pw, const char *hash)
{
	void *data = NULL;
	int size = 0, ok = 0;

	if (hash == NULL || !password_hash_supported(hash))
		return 0;
	char *h = crypt_ra(pw, hash, &data, &size);
	if (h && h[0] != '*' && strlen(h) == strlen(hash))
		ok = CRYPTO_memcmp(h, hash, strlen(hash)) == 0;
	if (data) {
		util_wipe(data, (size_t)size);
		free(data);
	}
	return ok;
}
