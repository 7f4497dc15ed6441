/*
 * fuzz_smtp_cmd — libFuzzer target for the SMTP line parsers: command
 * lines, MAIL/RCPT arguments (path + ESMTP parameters), bare paths, the
 * domain check, xtext, base64, SASL PLAIN, SASLprep of the password it
 * carries (and of the raw line) and reply formatting.
 *
 * The input is split at LF into lines (a CR before the LF is dropped);
 * each line, copied into an exactly-sized heap block, goes through every
 * parser. Besides "no crash, no overread" it checks properties:
 * a normalised path parses again to itself, base64 that decodes
 * re-encodes to the same text (canonical only), xtext round-trips, and a
 * formatted reply is well-formed CRLF lines of at most 512 octets, and
 * what SASLprep accepts as a stored password it prepares the same way as a
 * query.
 *
 * SECURITY: test code; aborts on a broken property so the fuzzer reports it.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/password.h"
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

static void
check_path(const struct smtp_path *p, unsigned flags)
{
	struct smtp_path again;
	struct smtp_error err;
	const char *rest;
	size_t rest_len;
	char wrapped[SMTP_PATH_MAX + 2];

	CHECK(p->len == strlen(p->addr));
	CHECK(p->len <= SMTP_PATH_MAX - 2);
	CHECK(p->local_len <= p->len);
	CHECK(p->is_null ? p->len == 0 : p->local_len > 0);
	if (!p->is_null && p->local_len < p->len) {
		CHECK(p->addr[p->local_len] == '@');
		CHECK(p->local_len <= SMTP_LOCAL_MAX);
	}
	/* The normalised form is a fixed point. */
	wrapped[0] = '<';
	memcpy(wrapped + 1, p->addr, p->len);
	wrapped[p->len + 1] = '>';
	CHECK(smtp_path_parse(wrapped, p->len + 2, flags, &again, &rest, &rest_len, &err) == 0);
	CHECK(rest_len == 0);
	CHECK(again.len == p->len && memcmp(again.addr, p->addr, p->len) == 0);
	/* The normalised form flags exactly its own non-ASCII; the path as sent
	 * may have had more, in a source route it dropped. */
	int high = 0;
	for (size_t i = 0; i < p->len; i++)
		high |= (unsigned char)p->addr[i] >= 0x80;
	CHECK(again.has_utf8 == high);
	CHECK(p->has_utf8 >= high);
	CHECK(again.is_null == p->is_null);
}

static void
check_reply(const char *text)
{
	struct buf b = BUF_INIT(0);

	if (smtp_reply_format(&b, 550, "5.7.1", text) == 0) {
		size_t start = 0;
		CHECK(b.len >= 2);
		for (size_t i = 0; i < b.len; i++) {
			unsigned char c = (unsigned char)b.data[i];
			if (c == '\n') {
				CHECK(i > 0 && b.data[i - 1] == '\r');
				CHECK(i + 1 - start <= SMTP_REPLY_LINE_MAX);
				CHECK(memcmp(b.data + start, "550", 3) == 0);
				CHECK(b.data[start + 3] == (i + 1 == b.len ? ' ' : '-'));
				start = i + 1;
			} else if (c == '\r') {
				CHECK(i + 1 < b.len && b.data[i + 1] == '\n');
			} else {
				CHECK((c >= 0x20 && c < 0x7f) || c == '\t');
			}
		}
		CHECK(start == b.len);
	} else {
		CHECK(b.len == 0);
	}
	buf_free(&b);
}

static void
check_prep(const char *pw)
{
	const char *why;
	char *q, *st;
	int ascii = 1;

	for (const char *p = pw; *p; p++)
		ascii &= (unsigned char)*p >= 0x20 && (unsigned char)*p < 0x7f;
	int rq = password_prep(pw, PASSWORD_PREP_QUERY, &q, &why);
	CHECK(rq == 0 ? ascii && q == NULL : !ascii);
	CHECK(rq < 0 ? q == NULL && why != NULL : why == NULL);
	if (rq == 1)
		CHECK(q != NULL && q[0] != '\0');
	int rs = password_prep(pw, PASSWORD_PREP_STORED, &st, &why);
	CHECK(rs <= rq);
	if (rs == 1)
		CHECK(strcmp(st, q) == 0);
	password_prep_free(&q);
	password_prep_free(&st);
	CHECK(q == NULL && st == NULL);
}

static void
one_line(const char *line, size_t len)
{
	struct smtp_cmdline cl;
	struct smtp_error err;
	struct smtp_path p;
	struct smtp_params ps;
	const char *rest;
	size_t rest_len;

	if (smtp_cmd_parse(line, len, &cl, &err) == 0) {
		CHECK(cl.cmd != SMTP_CMD_UNKNOWN);
		CHECK(cl.arg >= line && cl.arg + cl.arg_len <= line + len);
		if (cl.cmd == SMTP_CMD_MAIL) {
			struct smtp_mail m;
			if (smtp_mail_parse(cl.arg, cl.arg_len, SMTP_EXT_ALL, &m, &err) == 0) {
				check_path(&m.from, SMTP_PATH_REVERSE);
				CHECK(!m.from.has_utf8 || m.smtputf8);
				CHECK(strlen(m.envid) <= SMTP_ENVID_MAX);
				CHECK(m.body != SMTP_BODY_BINARYMIME);
			}
			(void)smtp_mail_parse(cl.arg, cl.arg_len, SMTP_EXT_SIZE, &m, &err);
		} else if (cl.cmd == SMTP_CMD_RCPT) {
			struct smtp_rcpt r;
			for (int u = 0; u < 2; u++) {
				if (smtp_rcpt_parse(cl.arg, cl.arg_len, SMTP_EXT_ALL, u, &r,
						    &err) == 0) {
					check_path(&r.to, SMTP_PATH_FORWARD);
					CHECK(u || !r.to.has_utf8);
					CHECK(!(r.notify & SMTP_NOTIFY_NEVER) ||
					      r.notify == SMTP_NOTIFY_NEVER);
				}
			}
		} else if (cl.cmd == SMTP_CMD_AUTH && cl.auth_ir != NULL) {
			struct smtp_sasl_plain sp;
			if (smtp_sasl_plain_decode(cl.auth_ir, cl.auth_ir_len, &sp, &err) == 0) {
				CHECK(strlen(sp.authcid) > 0 && strlen(sp.passwd) > 0);
				CHECK(sp.authzid[0] == '\0' || strcmp(sp.authzid, sp.authcid) == 0);
				check_prep(sp.passwd);
			}
			smtp_sasl_plain_wipe(&sp);
		} else if (cl.cmd == SMTP_CMD_EHLO || cl.cmd == SMTP_CMD_HELO) {
			(void)smtp_domain_check(cl.arg, cl.arg_len, NULL);
		}
	} else {
		CHECK(err.reply >= 500 && err.reply <= 599 && err.text != NULL);
	}

	/* The raw line as a path, with each set of flags. */
	static const unsigned flags[] = {0, SMTP_PATH_REVERSE, SMTP_PATH_FORWARD};
	for (size_t k = 0; k < sizeof(flags) / sizeof(flags[0]); k++) {
		if (smtp_path_parse(line, len, flags[k], &p, &rest, &rest_len, &err) == 0) {
			check_path(&p, flags[k]);
			CHECK(rest >= line && rest + rest_len == line + len);
			if (smtp_params_parse(rest, rest_len, &ps, &err) == 0) {
				CHECK(ps.n <= SMTP_PARAMS_MAX);
				for (size_t j = 0; j < ps.n; j++) {
					uint64_t sz;
					enum smtp_body body;
					unsigned notify;
					const struct smtp_param *q = &ps.v[j];
					CHECK(q->key_len > 0);
					CHECK(smtp_params_find(&ps, "") == NULL);
					(void)smtp_param_size(q->value, q->value_len, &sz);
					(void)smtp_param_body(q->value, q->value_len, &body);
					(void)smtp_param_notify(q->value, q->value_len, &notify);
				}
			}
		}
	}
	(void)smtp_domain_check(line, len, NULL);

	/* xtext: decode, encode, decode again gives the same bytes. */
	struct buf x1 = BUF_INIT(0), x2 = BUF_INIT(0), x3 = BUF_INIT(0);
	if (smtp_xtext_decode(line, len, &x1) == 0) {
		CHECK(smtp_xtext_encode(x1.data ? x1.data : "", x1.len, &x2) == 0);
		CHECK(smtp_xtext_decode(x2.data ? x2.data : "", x2.len, &x3) == 0);
		CHECK(x1.len == x3.len && (x1.len == 0 || memcmp(x1.data, x3.data, x1.len) == 0));
	}
	buf_free(&x1);
	buf_free(&x2);
	buf_free(&x3);

	/* base64: only canonical text decodes, so re-encoding gives it back. */
	unsigned char *dec = malloc(len + 1);
	size_t dlen = 0;
	CHECK(dec != NULL);
	if (smtp_base64_decode(line, len, dec, len, &dlen) == 0) {
		char *enc = malloc(len + 1);
		CHECK(enc != NULL);
		CHECK(smtp_base64_encode(dec, dlen, enc, len + 1) == (int)len);
		CHECK(memcmp(enc, line, len) == 0);
		free(enc);
		struct smtp_sasl_plain sp;
		(void)smtp_sasl_plain_parse(dec, dlen, &sp, &err);
		smtp_sasl_plain_wipe(&sp);
	}
	free(dec);

	/* Reply formatting from arbitrary text (NUL ends it). */
	char *text = malloc(len + 1);
	CHECK(text != NULL);
	memcpy(text, line, len);
	text[len] = '\0';
	check_reply(text);
	check_prep(text);
	free(text);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t start = 0;

	while (start <= size) {
		const uint8_t *nl = memchr(data + start, '\n', size - start);
		size_t end = nl ? (size_t)(nl - data) : size;
		size_t n = end - start;
		if (n > 0 && data[start + n - 1] == '\r')
			n--;
		if (n <= 4096) {
			char *line = malloc(n ? n : 1);
			if (line == NULL)
				abort();
			memcpy(line, data + start, n);
			one_line(line, n);
			free(line);
		}
		if (nl == NULL)
			break;
		start = end + 1;
	}
	return 0;
}
