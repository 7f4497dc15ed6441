/*
 * password — crypt(3) password hashes (libxcrypt) of SASLprep'd passwords.
 *
 * New hashes are yescrypt ($y$). Verification accepts yescrypt, sha512-crypt
 * ($6$), sha256-crypt ($5$) and bcrypt ($2b$/$2y$), so accounts can be moved
 * from Dovecot or /etc/shadow with their hashes. Both calls are slow on
 * purpose: run them on the worker pool, never on the event loop.
 *
 * Passwords are prepared with SASLprep (RFC 4013, which RFC 4616 and RFC 4954
 * name for PLAIN) before they are hashed or checked, so a password logs in
 * however the client normalised its Unicode (NFC or NFD, U+00A0 or U+0020).
 * Printable ASCII is its own prepared form and skips the library.
 *
 * SECURITY: comparisons are constant time; callers wipe plaintext passwords
 * with util_wipe() as soon as they are done; prepared copies are wiped here.
 */
#ifndef SURAT_PASSWORD_H
#define SURAT_PASSWORD_H

struct buf;

/* RFC 3454 7: a stored string may not hold code points unassigned in Unicode
 * 3.2 (a later Unicode may map them); a query may. */
enum password_prep_use { PASSWORD_PREP_QUERY, PASSWORD_PREP_STORED };

/*
 * SASLprep pw (NUL-terminated UTF-8) for use.
 * 1: *prep_r is the prepared password (malloc'd; free with password_prep_free()).
 * 0: pw is printable ASCII and its own prepared form; *prep_r is NULL.
 * -1: SASLprep refuses pw (not UTF-8, a prohibited character, bad bidi, an
 *     unassigned code point when stored, nothing left, too long once
 *     prepared); *why_r is a static sentence for the CLI that names no
 *     character of pw.
 */
int password_prep(const char *pw, enum password_prep_use use, char **prep_r, const char **why_r);
/* Wipe and free a prepared password; sets *p to NULL. */
void password_prep_free(char **p);

/*
 * A new yescrypt hash of pw's SASLprep'd form (stored-string rules; malloc'd,
 * caller frees). NULL when SASLprep refuses pw, with the reason in *why_r, or
 * when hashing failed, with *why_r NULL.
 */
char *password_hash(const char *pw, const char **why_r);
/*
 * 1 if pw matches hash, 0 if not or if the scheme is not supported. The
 * prepared form is tried first; hashes made before surat applied SASLprep
 * are of the raw octets, so those are tried too when they differ or when
 * SASLprep refuses pw.
 */
int password_verify(const char *pw, const char *hash);
/* Nonzero when hash looks like a crypt(3) hash we can verify. */
int password_hash_supported(const char *hash);
/*
 * 1 when hash is whole: crypt(3) reads its settings (salt, cost) and the
 * hash has its scheme's length and alphabet, so some password verifies
 * against it; 0 for one cut short, damaged or of another scheme.
 */
int password_hash_complete(const char *hash);
/*
 * password_hash_complete(), saying why not: 1 when hash is whole, else 0
 * with a sentence appended to why (when not NULL) that names the scheme
 * and what is missing or wrong (for the CLI: never a word of the hash
 * beyond its scheme).
 */
int password_hash_check(const char *hash, struct buf *why);

#endif
