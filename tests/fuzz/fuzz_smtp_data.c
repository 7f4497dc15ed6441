/*
 * fuzz_smtp_data — libFuzzer target for the DATA/BDAT reader.
 *
 * Input: byte 0 picks the mode (bit 0: BDAT) and the size limit (bits
 * 1..3), bytes 1..4 seed the chunk sizes, the rest is what the client
 * sends. The reader is run on the whole input at once and on a random
 * split (and byte by byte for short inputs); every result must be the same.
 * Then an independent oracle, written from RFC 5321 rather than from the
 * state machine, checks the result: the data ends at the first
 * CRLF "." CRLF (the first line counting as preceded by CRLF), the output
 * is the text before it with a dot after each CRLF removed, and bare CR,
 * bare LF, over-long lines and the size limit are flagged exactly when
 * they occur.
 *
 * SECURITY: test code; aborts on a broken property so the fuzzer reports it.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "smtp/smtp_proto.h"

#define CHECK(x)                                                                                   \
	do {                                                                                       \
		if (!(x)) {                                                                        \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #x);      \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct result {
	int ret;
	size_t consumed;
	struct buf out;
	struct smtp_data_reader r;
};

static uint32_t
next_rand(uint32_t *s)
{
	*s = *s * 1103515245u + 12345u;
	return *s >> 8;
}

/* mode 0: all at once; 1: byte by byte; 2: random chunks from seed. */
static void
run(const char *in, size_t n, enum smtp_data_mode mode, size_t max, int how, uint32_t seed,
    struct result *res)
{
	size_t off = 0;

	buf_init(&res->out, max);
	smtp_data_reader_init(&res->r, &res->out, mode);
	res->ret = 0;
	while (off < n) {
		size_t k = n - off;
		if (how == 1)
			k = 1;
		else if (how == 2 && k > 1)
			k = 1 + next_rand(&seed) % (k < 64 ? k : (seed & 1) ? 64 : k);
		/* An exact copy of the chunk so a read past it trips ASan. */
		char *c = malloc(k);
		size_t used = 0;
		CHECK(c != NULL);
		memcpy(c, in + off, k);
		res->ret = smtp_data_feed(&res->r, c, k, &used);
		free(c);
		CHECK(used <= k);
		off += used;
		if (res->ret == 1) {
			CHECK(mode == SMTP_DATA_MODE_DATA);
			break;
		}
		CHECK(res->ret == 0 && used == k);
	}
	if (mode == SMTP_DATA_MODE_BDAT)
		smtp_data_finish(&res->r);
	res->consumed = off;
}

static void
same(const struct result *a, const struct result *b)
{
	CHECK(a->ret == b->ret);
	CHECK(a->consumed == b->consumed);
	CHECK(a->r.errors == b->r.errors);
	CHECK(a->r.size == b->r.size);
	CHECK(a->r.line_len == b->r.line_len);
	CHECK(a->r.header_done == b->r.header_done);
	CHECK(a->r.header_len == b->r.header_len);
	CHECK(a->r.header_lines == b->r.header_lines);
	CHECK(a->r.has_8bit == b->r.has_8bit);
	CHECK(a->r.has_nul == b->r.has_nul);
	CHECK(a->out.len == b->out.len);
	CHECK(a->out.len == 0 || memcmp(a->out.data, b->out.data, a->out.len) == 0);
}

/* Byte k of "\r\n" followed by the input. */
static unsigned char
pre(const char *d, size_t k)
{
	return k < 2 ? (unsigned char)"\r\n"[k] : (unsigned char)d[k - 2];
}

/* Any line of m[0..n) (split at CRLF) longer than 998 octets. */
static int
any_long_line(const char *m, size_t n)
{
	size_t start = 0;

	for (size_t i = 0; i + 1 < n; i++) {
		if (m[i] == '\r' && m[i + 1] == '\n') {
			if (i - start > SMTP_LINE_MAX - 2)
				return 1;
			start = i + 2;
			i++;
		}
	}
	return n - start > SMTP_LINE_MAX - 2;
}

static void
oracle(const char *d, size_t n, enum smtp_data_mode mode, size_t max, const struct result *res)
{
	char *want = malloc(n + 1);
	size_t wl = 0;
	size_t content; /* input octets of the message proper */
	int ended = 0;
	unsigned errors = 0;

	CHECK(want != NULL);
	if (mode == SMTP_DATA_MODE_DATA) {
		size_t k;
		for (k = 0; k + 5 <= n + 2; k++)
			if (pre(d, k) == '\r' && pre(d, k + 1) == '\n' && pre(d, k + 2) == '.' &&
			    pre(d, k + 3) == '\r' && pre(d, k + 4) == '\n')
				break;
		ended = k + 5 <= n + 2;
		content = ended ? k : n;
		CHECK(res->ret == ended);
		CHECK(res->consumed == (ended ? k + 3 : n));
		for (size_t i = 0; i < content; i++) {
			/* D[i] is byte i + 2 of the prefixed text. */
			if (d[i] == '.' && pre(d, i) == '\r' && pre(d, i + 1) == '\n')
				continue;
			want[wl++] = d[i];
		}
		for (size_t i = 0; i < content; i++) {
			if (d[i] == '\n' && pre(d, i + 1) != '\r')
				errors |= SMTP_DATA_ERR_BARE_LF;
			/* A CR at the very end is still waiting for its LF. */
			if (d[i] == '\r' && i + 1 < n && d[i + 1] != '\n')
				errors |= SMTP_DATA_ERR_BARE_CR;
		}
	} else {
		ended = 1;
		content = n;
		memcpy(want, d, n);
		wl = n;
		for (size_t i = 0; i < n; i++) {
			if (d[i] == '\n' && (i == 0 || d[i - 1] != '\r'))
				errors |= SMTP_DATA_ERR_BARE_LF;
			if (d[i] == '\r' && (i + 1 == n || d[i + 1] != '\n'))
				errors |= SMTP_DATA_ERR_BARE_CR;
		}
		CHECK(res->ret == 0);
		CHECK(res->consumed == n);
		CHECK(res->r.done == 1);
	}

	unsigned mask = SMTP_DATA_ERR_BARE_LF | SMTP_DATA_ERR_BARE_CR;
	if (ended) {
		if (any_long_line(want, wl))
			errors |= SMTP_DATA_ERR_LINE_TOO_LONG;
		if (max != 0 && wl > max)
			errors |= SMTP_DATA_ERR_TOO_BIG;
		mask = ~0u;
		CHECK(res->r.size == wl);
		size_t keep = (max != 0 && wl > max) ? max : wl;
		CHECK(res->out.len == keep);
		CHECK(keep == 0 || memcmp(res->out.data, want, keep) == 0);
		CHECK(res->r.header_len <= res->r.size);
		if (mode == SMTP_DATA_MODE_DATA)
			CHECK(wl == 0 || (wl >= 2 && want[wl - 2] == '\r' && want[wl - 1] == '\n'));
	} else {
		/* Still waiting: at most a CR is held back (a dot at a line start is dropped
		 * anyway). */
		CHECK(res->r.size <= wl && res->r.size + 1 >= wl);
	}
	CHECK((res->r.errors & mask) == (errors & mask));

	struct smtp_error err;
	CHECK(smtp_data_error(&res->r, &err) == (res->r.errors ? -1 : 0));
	free(want);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const size_t limits[8] = {0, 0, 1, 7, 64, 1000, 4096, 65536};
	struct result whole, split, bytes;

	if (size < 5)
		return 0;
	enum smtp_data_mode mode = (data[0] & 1) ? SMTP_DATA_MODE_BDAT : SMTP_DATA_MODE_DATA;
	size_t max = limits[(data[0] >> 1) & 7];
	uint32_t seed = (uint32_t)data[1] | (uint32_t)data[2] << 8 | (uint32_t)data[3] << 16 |
			(uint32_t)data[4] << 24;
	const char *in = (const char *)data + 5;
	size_t n = size - 5;

	run(in, n, mode, max, 0, seed, &whole);
	run(in, n, mode, max, 2, seed, &split);
	same(&whole, &split);
	if (n <= 4096) {
		run(in, n, mode, max, 1, seed, &bytes);
		same(&whole, &bytes);
		buf_free(&bytes.out);
	}
	oracle(in, n, mode, max, &whole);
	/* Where submission's added fields go: a line start within the message,
	 * after a CRLF, never inside the empty line that ends the header. */
	const char *o = whole.out.data ? whole.out.data : "";
	size_t own;
	size_t at = smtp_data_header_end(o, whole.out.len, &own);
	CHECK(at <= own && own <= whole.out.len);
	CHECK(at == 0 || (o[at - 2] == '\r' && o[at - 1] == '\n'));
	CHECK(at < 2 || !(o[at - 2] == '\r' && o[at - 1] == '\n' && at >= 4 && o[at - 4] == '\r' &&
			  o[at - 3] == '\n'));
	buf_free(&whole.out);
	buf_free(&split.out);
	return 0;
}
