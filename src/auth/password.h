/*
 * password — crypt(3) password hashes (libxcrypt).
 *
 * New hashes are yescrypt ($y$). Verification accepts yescrypt, sha512-crypt
 * ($6$), sha256-crypt ($5$) and bcrypt ($2b$/$2y$), so accounts can be moved
 * from Dovecot or /etc/shadow with their hashes. Both calls are slow on
 * purpose: run them on the worker pool, never on the event loop.
 *
 * SECURITY: comparisons are constant time; callers wipe plaintext passwords
 * with util_wipe() as soon as they are done.
 */
#ifndef SURAT_PASSWORD_H
#define SURAT_PASSWORD_H

/* A new yescrypt hash of pw (malloc'd, caller frees), or NULL on failure. */
char *password_hash(const char *pw);
/* 1 if pw matches hash, 0 if not or if the scheme is not supported. */
int password_verify(const char *pw, const char *hash);
/* Nonzero when hash looks like a crypt(3) hash we can verify. */
int password_hash_supported(const char *hash);

#endif
