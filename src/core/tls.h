/*
 * tls — the server and client TLS contexts (OpenSSL 3, TLS 1.2 and 1.3 only).
 *
 * The server context is loaded from tls.cert/tls.key at start and reloaded
 * on SIGHUP (tls_reload); a failed reload keeps the old context. Sessions
 * take a fresh SSL object with tls_server_ssl() when they start TLS.
 *
 * SECURITY: the private key is read here and nowhere else; no session code
 * sees it. Protocol versions below TLS 1.2 are refused.
 */
#ifndef SURAT_TLS_H
#define SURAT_TLS_H

#include <openssl/ssl.h>

struct buf;

/* Load cert and key (either may be NULL: then no server TLS). 0 or -1 + err. */
int tls_init(const char *cert, const char *key, struct buf *err);
/* Reload the same files; on failure keep the old context. 0 or -1 + err. */
int tls_reload(struct buf *err);
/* Nonzero when a server context is loaded. */
int tls_server_available(void);
/* A new SSL object for an accepted connection, or NULL if no TLS. Caller frees. */
SSL *tls_server_ssl(void);
/* A new SSL object for an outbound connection (verification not enforced). */
SSL *tls_client_ssl(const char *sni);
/* "TLSv1.3:TLS_AES_256_GCM_SHA384" into out; returns out. */
const char *tls_describe(SSL *ssl, char *out, size_t outlen);
/* Free the contexts. */
void tls_shutdown(void);

#endif
