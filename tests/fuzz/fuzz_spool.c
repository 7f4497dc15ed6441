/* libFuzzer target: the queue spool file parser (files can be torn or
 * damaged on disk, so the parser must take any bytes). */
#include <stdint.h>
#include <string.h>

#include "core/buf.h"
#include "queue/queue_spool.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct spool_msg m;
	struct buf err = BUF_INIT(0);
	memset(&m, 0, sizeof(m));
	spool_parse((const char *)data, size, &m, &err);
	spool_msg_free(&m);
	buf_free(&err);
	return 0;
}
