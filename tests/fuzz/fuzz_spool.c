/* libFuzzer target: the queue spool file parser (files can be torn or
 * damaged on disk, so the parser must take any bytes), and the delivery
 * status notices: their reasons and status codes come from remote servers,
 * ENVID and ORCPT from clients (queue_dsn reads codes and xtext in them).
 * The spool's checksums would stop most mutations before a notice, so the
 * notice's texts are taken from the input directly. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "queue/queue_dsn.h"
#include "queue/queue_spool.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Notices of each kind for one recipient whose texts are the input's
 * NUL-separated fields: ENVID, ORCPT, reason, remote host. */
static void
notices(const uint8_t *data, size_t size)
{
	char *f[4] = {NULL, NULL, NULL, NULL};
	size_t at = 0;

	for (int i = 0; i < 4 && at < size; i++) {
		const uint8_t *z = memchr(data + at, 0, size - at);
		size_t n = z ? (size_t)(z - (data + at)) : size - at;
		f[i] = malloc(n + 1);
		memcpy(f[i], data + at, n);
		f[i][n] = '\0';
		at += n + 1;
	}
	struct spool_rcpt rc = {.addr = (char *)"x@y.z", .orig = (char *)"x@y.z", .orcpt = f[1],
				.notify = NOTIFY_SUCCESS | NOTIFY_FAILURE | NOTIFY_DELAY,
				.local = size % 3 == 0 ? SPOOL_EXPANDED : (int)(size % 3 == 1),
				.last_error = f[2], .remote = f[3]};
	struct spool_msg m = {.mail_from = (char *)"a@b.c", .envid = f[0], .rcpts = &rc,
			      .nrcpts = 1, .created = 1700000000, .smtputf8 = (int)(size & 1)};
	memcpy(m.id, "0123456789abcdef", 17);
	static const enum dsn_kind kinds[] = {DSN_FAILED, DSN_DELAYED, DSN_DELIVERED};
	static const enum rcpt_status states[] = {RCPT_FAILED, RCPT_DEFERRED, RCPT_DELIVERED};
	for (size_t k = 0; k < 3; k++) {
		struct spool_msg n;
		struct buf c = BUF_INIT(0);
		rc.status = states[k];
		dsn_build(&m, (const char *)data, size, kinds[k], "mx.example.test",
			  "0123456789abcdef-b", (int64_t)(size % 7) * 40000, (int)(size & 1), &n, &c);
		spool_msg_free(&n);
		buf_free(&c);
	}
	for (int i = 0; i < 4; i++)
		free(f[i]);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct spool_msg m;
	struct buf err = BUF_INIT(0);
	memset(&m, 0, sizeof(m));
	spool_parse((const char *)data, size, &m, &err);
	spool_msg_free(&m);
	buf_free(&err);
	notices(data, size);
	return 0;
}
