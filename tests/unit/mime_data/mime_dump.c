/*
 * mime_dump — print ENVELOPE, BODY and BODYSTRUCTURE of each message file
 * in the format of dovecot-oracle.py, so the two can be diffed:
 *   cc -std=gnu17 -D_GNU_SOURCE -Isrc src/core/{util,buf,log}.c src/mime/mime*.c \
 *      tests/unit/mime_data/mime_dump.c -o /tmp/mime_dump
 *   /tmp/mime_dump msg... > ours.txt
 *   tests/unit/mime_data/dovecot-oracle.py msg... > dovecot.txt
 *   diff ours.txt dovecot.txt
 * A development tool, not built by the Makefile.
 *
 * SECURITY: reads local files given on the command line only.
 */
#include <stdio.h>
#include <stdlib.h>

#include "core/buf.h"
#include "core/util.h"
#include "mime/mime.h"
#include "mime/mime_imap.h"

static void
cstr(const struct buf *b)
{
	for (size_t i = 0; i < b->len; i++) {
		unsigned char c = (unsigned char)b->data[i];
		if (c == '\r')
			fputs("\\r", stdout);
		else if (c == '\n')
			fputs("\\n", stdout);
		else if (c == '"')
			fputs("\\\"", stdout);
		else if (c == '\\')
			fputs("\\\\", stdout);
		else if (c >= 0x20 && c < 0x7f)
			putchar(c);
		else
			printf("\\x%02x\"\"", c);
	}
	putchar('\n');
}

int
main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		size_t len;
		char *msg = util_read_file(argv[i], 1u << 30, &len);
		struct buf b = BUF_INIT(0);
		struct mime_part *root;

		if (msg == NULL) {
			perror(argv[i]);
			return 1;
		}
		root = mime_parse(msg, len);
		printf("== %s\n", argv[i]);
		mime_envelope(&b, root);
		fputs("ENVELOPE ", stdout);
		cstr(&b);
		buf_reset(&b);
		mime_bodystructure(&b, root, 0);
		fputs("BODY ", stdout);
		cstr(&b);
		buf_reset(&b);
		mime_bodystructure(&b, root, MIME_BS_EXTENDED);
		fputs("BODYSTRUCTURE ", stdout);
		cstr(&b);
		buf_free(&b);
		mime_free(&root);
		free(msg);
	}
	return 0;
}
