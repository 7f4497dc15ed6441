/*
 * fuzz_pop3 — libFuzzer target for pop3_proto: the line framer, the
 * command parser and the RETR/TOP output filter.
 *
 * The first input byte picks a chunk size and the line limit; the rest is
 * fed to the framer in those chunks and, for comparison, in one piece: both
 * must give the same lines and errors. Every line goes through the command
 * parser (exactly-sized heap copy). The whole input is also a message for
 * the filter, whole and chunked, as RETR and as TOP. Properties checked:
 * lines never exceed the limit; parsed pointers stay inside the line;
 * numbers are in range; chunked and whole filtering agree; the RETR output
 * unstuffs back to the message and ends in exactly one ".\r\n" terminator;
 * TOP output is a prefix of the RETR output.
 *
 * SECURITY: test code; aborts on a broken property so the fuzzer reports it.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "pop3/pop3_proto.h"

#define CHECK(x)                                                                                   \
	do {                                                                                       \
		if (!(x)) {                                                                        \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #x);      \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check_cmd(const char *line, size_t len)
{
	struct pop3_cmdline r;
	struct pop3_error e;
	char *p = malloc(len ? len : 1);

	CHECK(p != NULL);
	memcpy(p, line, len);
	int rc = pop3_cmd_parse(p, len, &r, &e);
	if (rc == 0) {
		CHECK(r.cmd != POP3_CMD_UNKNOWN);
		CHECK(e.code == POP3_ERR_NONE);
		CHECK(r.nargs <= 2);
		CHECK(r.verb == p && r.verb_len >= 3 && r.verb_len <= 4);
		for (unsigned i = 0; i < r.nargs; i++) {
			CHECK(r.arg[i] > p && r.arg[i] + r.arg_len[i] <= p + len);
			CHECK(r.arg_len[i] > 0);
			for (size_t k = 0; k < r.arg_len[i]; k++) {
				unsigned char c = (unsigned char)r.arg[i][k];
				CHECK(c >= 0x20 && c != 0x7f);
				if (r.cmd != POP3_CMD_PASS)
					CHECK(c != ' ');
			}
		}
		switch (r.cmd) {
		case POP3_CMD_RETR:
		case POP3_CMD_DELE:
			CHECK(r.nargs == 1 && r.num[0] >= 1);
			break;
		case POP3_CMD_LIST:
		case POP3_CMD_UIDL:
			CHECK(r.nargs <= 1 && (r.nargs == 0 || r.num[0] >= 1));
			break;
		case POP3_CMD_TOP:
			CHECK(r.nargs == 2 && r.num[0] >= 1);
			break;
		case POP3_CMD_STAT:
		case POP3_CMD_NOOP:
		case POP3_CMD_RSET:
		case POP3_CMD_QUIT:
		case POP3_CMD_CAPA:
		case POP3_CMD_STLS:
			CHECK(r.nargs == 0);
			break;
		case POP3_CMD_AUTH:
			CHECK(r.nargs == 0 || r.arg_len[0] <= POP3_MECH_MAX);
			break;
		default:
			break;
		}
		CHECK(strcmp(pop3_cmd_name(r.cmd), "?") != 0);
	} else {
		CHECK(rc == -1);
		CHECK(e.code != POP3_ERR_NONE && e.text != NULL && e.text[0] != '\0');
		CHECK(strchr(e.text, '\r') == NULL && strchr(e.text, '\n') == NULL);
	}
	free(p);
}

/* Frame data in chunks of step; record lines/errors into log. */
static void
frame(const uint8_t *data, size_t size, size_t step, size_t max, struct buf *log, int parse)
{
	struct pop3_line l;
	struct pop3_error e;
	size_t off = 0;

	pop3_line_init(&l);
	while (off < size) {
		size_t k = size - off < step ? size - off : step;
		char *chunk = malloc(k);
		CHECK(chunk != NULL);
		memcpy(chunk, data + off, k);
		size_t pos = 0;
		while (pos < k) {
			size_t used = 0;
			int rc = pop3_line_feed(&l, chunk + pos, k - pos, max, &used, &e);
			CHECK(used > 0 && used <= k - pos);
			pos += used;
			if (rc == 1) {
				CHECK(l.len + 2 <=
				      (max > POP3_AUTH_LINE_MAX ? POP3_AUTH_LINE_MAX : max));
				CHECK(l.data[l.len] == '\0');
				CHECK(memchr(l.data, '\n', l.len) == NULL);
				buf_append(log, "L", 1);
				buf_append(log, l.data, l.len);
				if (parse)
					check_cmd(l.data, l.len);
			} else if (rc < 0) {
				CHECK(e.code == POP3_ERR_TOO_LONG);
				buf_append(log, "E", 1);
			} else {
				CHECK(pos == k);
			}
		}
		free(chunk);
		off += k;
	}
}

/* Filter msg as RETR (top 0) or TOP, in chunks of step. */
static int
shape(const uint8_t *msg, size_t n, int top, uint64_t lines, size_t step, struct buf *out)
{
	struct pop3_dot d;
	size_t off = 0;
	int done = 0;

	pop3_dot_init(&d, top, lines);
	while (off < n && !done) {
		size_t k = n - off < step ? n - off : step;
		char *chunk = malloc(k);
		CHECK(chunk != NULL);
		memcpy(chunk, msg + off, k);
		int rc = pop3_dot_feed(&d, chunk, k, out);
		CHECK(rc == 0 || rc == 1);
		CHECK(!top ? rc == 0 : 1);
		done = rc == 1;
		free(chunk);
		off += k;
	}
	CHECK(pop3_dot_finish(&d, out) == 0);
	CHECK(d.out == out->len);
	return done;
}

static void
check_retr(const uint8_t *msg, size_t n, size_t step, uint64_t lines)
{
	struct buf whole = BUF_INIT(0), parts = BUF_INIT(0), top = BUF_INIT(0);

	shape(msg, n, 0, 0, n ? n : 1, &whole);
	shape(msg, n, 0, 0, step, &parts);
	CHECK(whole.len == parts.len && memcmp(whole.data, parts.data, whole.len) == 0);

	/* Ends in ".\r\n" preceded by a line end (or nothing at all). */
	CHECK(whole.len >= 3 && memcmp(whole.data + whole.len - 3, ".\r\n", 3) == 0);
	CHECK(whole.len == 3 || whole.data[whole.len - 4] == '\n');

	/* Unstuffing gives the message back (plus a CRLF if it lacked a line end). */
	struct buf back = BUF_INIT(0);
	int bol = 1;
	for (size_t i = 0; i < whole.len - 3; i++) {
		char c = whole.data[i];
		if (bol && c == '.') {
			/* A stuffed dot is always followed by another byte of its line. */
			CHECK(i + 1 < whole.len - 3);
			bol = 0;
			continue;
		}
		buf_putc(&back, c);
		bol = c == '\n';
	}
	size_t want = n + ((n > 0 && msg[n - 1] != '\n') ? 2 : 0);
	CHECK(back.len == want);
	CHECK(n == 0 || memcmp(back.data, msg, n) == 0);
	buf_free(&back);

	/* TOP: chunked equals whole, and it is a prefix of RETR (before the dot). */
	struct buf top2 = BUF_INIT(0);
	shape(msg, n, 1, lines, n ? n : 1, &top);
	shape(msg, n, 1, lines, step, &top2);
	CHECK(top.len == top2.len && memcmp(top.data, top2.data, top.len) == 0);
	CHECK(top.len <= whole.len + 2);
	size_t body = top.len - 3;
	size_t cmp = body <= whole.len - 3 ? body : whole.len - 3;
	CHECK(memcmp(top.data, whole.data, cmp) == 0);
	buf_free(&top2);

	buf_free(&whole);
	buf_free(&parts);
	buf_free(&top);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	uint8_t ctl = data[0];
	data++;
	size--;
	size_t step = (size_t)(ctl & 0x0f) + 1;
	size_t max = (ctl & 0x10) ? POP3_AUTH_LINE_MAX : POP3_CMD_LINE_MAX;
	if (ctl & 0x20)
		max = 3 + (size_t)(ctl & 0x0f) * 3;

	struct buf a = BUF_INIT(0), b = BUF_INIT(0);
	frame(data, size, step, max, &a, 1);
	frame(data, size, size, max, &b, 0);
	CHECK(a.len == b.len && (a.len == 0 || memcmp(a.data, b.data, a.len) == 0));
	buf_free(&a);
	buf_free(&b);

	check_retr(data, size, step, (uint64_t)(ctl >> 6) * 2);
	return 0;
}
