/*
 * fuzz_smtp_reply — libFuzzer target for the SMTP client's reply parser,
 * reply summary and EHLO capability reader.
 *
 * The input is one stream of server output. It is parsed twice: all at
 * once and in chunks whose sizes come from the first input byte, and both
 * runs must see the same replies (codes, line counts, text) and end the
 * same way: the parser is incremental. Every complete reply also goes
 * through smtp_reply_summary() (bounded length) and smtp_caps_parse().
 * Finally the input is dot-stuffed and the result checked: no line of it
 * is a lone "." before the end marker.
 *
 * SECURITY: test code; aborts on a broken property so the fuzzer reports it.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "smtp/smtp_client.h"

#define CHECK(x)                                                                                   \
	do {                                                                                       \
		if (!(x)) {                                                                        \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #x);      \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

/* Parse data in chunks of chunk bytes (0: all); record each reply in log. */
static int
run(const char *data, size_t len, size_t chunk, struct buf *log)
{
	struct smtp_reply_parser p;
	size_t off = 0;
	int r = 0;
	smtp_reply_parser_init(&p);
	while (off < len) {
		size_t k = chunk ? chunk : len - off;
		if (k > len - off)
			k = len - off;
		size_t used = 0;
		r = smtp_reply_parse(&p, data + off, k, &used);
		CHECK(used <= k);
		off += used;
		if (r < 0)
			break;
		if (r == 1) {
			CHECK(p.reply.code >= 200 && p.reply.code <= 559);
			CHECK(p.reply.nlines >= 1 && p.reply.nlines <= SMTP_CLIENT_REPLY_LINES);
			CHECK(p.reply.text.len <= SMTP_CLIENT_REPLY_MAX);
			buf_printf(log, "%d %zu %s|", p.reply.code, p.reply.nlines,
				   p.reply.enhanced);
			buf_append(log, p.reply.text.data ? p.reply.text.data : "",
				   p.reply.text.len);
			struct buf s = BUF_INIT(0);
			smtp_reply_summary(&p.reply, &s, 300);
			CHECK(s.len <= 300);
			CHECK(memchr(s.data, '\n', s.len) == NULL &&
			      memchr(s.data, '\r', s.len) == NULL);
			buf_free(&s);
			struct smtp_caps caps;
			smtp_caps_parse(&p.reply, &caps);
		} else {
			CHECK(used == k);
		}
	}
	buf_printf(log, "end %d", r);
	smtp_reply_parser_free(&p);
	return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0 || size > 200000)
		return 0;
	size_t chunk = (data[0] % 7) + 1;
	char *copy = malloc(size);
	memcpy(copy, data, size);

	struct buf a = BUF_INIT(0), b = BUF_INIT(0);
	run(copy, size, 0, &a);
	run(copy, size, chunk, &b);
	CHECK(a.len == b.len && memcmp(a.data, b.data, a.len) == 0);
	buf_free(&a);
	buf_free(&b);

	struct smtp_stuffer st;
	struct buf out = BUF_INIT(0);
	smtp_stuffer_init(&st);
	smtp_stuff(&st, copy, size / 2, &out);
	smtp_stuff(&st, copy + size / 2, size - size / 2, &out);
	smtp_stuff_end(&st, &out);
	CHECK(out.len >= 5 || (out.len == 3 && size == 0));
	CHECK(memcmp(out.data + out.len - 3, ".\r\n", 3) == 0);
	/* No line before the end marker is a lone "." (would end the data early). */
	const char *body = out.data;
	size_t blen = out.len - 3;
	if (blen >= 1)
		CHECK(!(blen == 1 && body[0] == '.'));
	for (size_t i = 0; i + 1 < blen; i++)
		if (body[i] == '\n')
			CHECK(body[i + 1] != '.' || (i + 2 < out.len && body[i + 2] == '.'));
	CHECK(body[0] != '.' || body[1] == '.');
	buf_free(&out);
	free(copy);
	return 0;
}
