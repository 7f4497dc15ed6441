/*
 * tls — see tls.h. Contexts are reference counted by OpenSSL, so a reload
 * can swap the server context while old sessions keep the previous one.
 *
 * SECURITY: minimum protocol TLS 1.2; compression and renegotiation off.
 */
#include "core/tls.h"
#include "core/buf.h"
#include "core/util.h"

#include <string.h>

#include <openssl/err.h>
#include <openssl/x509.h>

static SSL_CTX *tls_server_ctx;
static SSL_CTX *tls_client_ctx;
static char *tls_cert_path, *tls_key_path;

static void
tls_errors(struct buf *err)
{
	unsigned long e;
	char msg[256];
	const char *sep = ": ";

	while ((e = ERR_get_error()) != 0) {
		ERR_error_string_n(e, msg, sizeof(msg));
		buf_printf(err, "%s%s", sep, msg);
		sep = "; ";
	}
}

static SSL_CTX *
tls_ctx_common(const SSL_METHOD *method)
{
	SSL_CTX *ctx = SSL_CTX_new(method);
	if (ctx == NULL)
		PANIC("SSL_CTX_new failed");
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
				     SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	return ctx;
}

static SSL_CTX *
tls_load(const char *cert, const char *key, struct buf *err)
{
	SSL_CTX *ctx = tls_ctx_common(TLS_server_method());

	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
		buf_printf(err, "cannot load tls.cert %s", cert);
		tls_errors(err);
		SSL_CTX_free(ctx);
		return NULL;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
		/* A key of the certificate's type but of another pair (the old
		 * key after a renewal) fails here, not at the check below. */
		unsigned long e = ERR_peek_last_error();
		if (ERR_GET_LIB(e) == ERR_LIB_X509 &&
		    ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH) {
			ERR_clear_error();
			buf_printf(err, "tls.key %s does not match tls.cert %s", key, cert);
			SSL_CTX_free(ctx);
			return NULL;
		}
		buf_printf(err, "cannot load tls.key %s", key);
		tls_errors(err);
		SSL_CTX_free(ctx);
		return NULL;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		buf_printf(err, "tls.key %s does not match tls.cert %s", key, cert);
		SSL_CTX_free(ctx);
		return NULL;
	}
	/* Session tickets keep resumption cheap for IMAP clients that reconnect. */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
	SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"surat", 5);
	return ctx;
}

int
tls_init(const char *cert, const char *key, struct buf *err)
{
	if (tls_client_ctx == NULL) {
		/*
		 * Outbound TLS is opportunistic (RFC 7435), as Postfix's "may" and
		 * "encrypt" levels: the peer's certificate is not verified, so no CA
		 * store is loaded (reading the system bundle took most of the start).
		 */
		tls_client_ctx = tls_ctx_common(TLS_client_method());
		SSL_CTX_set_verify(tls_client_ctx, SSL_VERIFY_NONE, NULL);
	}
	if (cert == NULL || key == NULL)
		return 0;
	SSL_CTX *ctx = tls_load(cert, key, err);
	if (ctx == NULL)
		return -1;
	SSL_CTX_free(tls_server_ctx);
	tls_server_ctx = ctx;
	free(tls_cert_path);
	free(tls_key_path);
	tls_cert_path = xstrdup(cert);
	tls_key_path = xstrdup(key);
	return 0;
}

int
tls_reload(struct buf *err)
{
	if (tls_cert_path == NULL)
		return 0;
	SSL_CTX *ctx = tls_load(tls_cert_path, tls_key_path, err);
	if (ctx == NULL)
		return -1;
	SSL_CTX_free(tls_server_ctx);
	tls_server_ctx = ctx;
	return 0;
}

int
tls_server_available(void)
{
	return tls_server_ctx != NULL;
}

SSL *
tls_server_ssl(void)
{
	if (tls_server_ctx == NULL)
		return NULL;
	SSL *ssl = SSL_new(tls_server_ctx);
	if (ssl == NULL)
		PANIC("SSL_new failed");
	return ssl;
}

SSL *
tls_client_ssl(const char *sni)
{
	if (tls_client_ctx == NULL) {
		struct buf e = BUF_INIT(0);
		tls_init(NULL, NULL, &e);
		buf_free(&e);
	}
	SSL *ssl = SSL_new(tls_client_ctx);
	if (ssl == NULL)
		PANIC("SSL_new failed");
	if (sni && *sni)
		SSL_set_tlsext_host_name(ssl, sni);
	return ssl;
}

const char *
tls_describe(SSL *ssl, char *out, size_t outlen)
{
	/* Not yet (or never) through the handshake: nothing is protected. */
	if (ssl == NULL || !SSL_is_init_finished(ssl)) {
		xsnprintf(out, outlen, "none");
		return out;
	}
	if (xsnprintf(out, outlen, "%s:%s", SSL_get_version(ssl), SSL_get_cipher_name(ssl)) < 0)
		xsnprintf(out, outlen, "%s", SSL_get_version(ssl));
	return out;
}

void
tls_shutdown(void)
{
	SSL_CTX_free(tls_server_ctx);
	SSL_CTX_free(tls_client_ctx);
	tls_server_ctx = tls_client_ctx = NULL;
	free(tls_cert_path);
	free(tls_key_path);
	tls_cert_path = tls_key_path = NULL;
}
