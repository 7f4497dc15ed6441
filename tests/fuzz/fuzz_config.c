/* libFuzzer target: the config file reader, line by line through config_set
 * and whole files through config_load. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char path[64];
	snprintf(path, sizeof(path), "/tmp/fuzz-config.%d", (int)getpid());
	FILE *fp = fopen(path, "w");
	if (fp == NULL)
		return 0;
	fwrite(data, 1, size, fp);
	fclose(fp);
	struct config cfg;
	struct buf err = BUF_INIT(0);
	config_defaults(&cfg);
	config_load(&cfg, path, &err);
	config_free(&cfg);
	buf_free(&err);
	unlink(path);
	return 0;
}
