/*
 * fuzz_mime — libFuzzer target for the RFC 5322 / MIME parser.
 *
 * The input is a message. It is parsed, and then everything built on the
 * tree is exercised: ENVELOPE, BODY and BODYSTRUCTURE (both message/global
 * modes), text extraction within a bound, BINARY decoding, section lookup
 * of every part, address and date parsing of the header fields, RFC 2047
 * decoding. Properties checked on the way:
 *   - the tree is consistent: ranges inside the message and nested in
 *     their parents in order, sizes and line counts agree, depth and part
 *     count within the limits;
 *   - every IMAP string produced is one well-formed IMAP list (quoted
 *     strings, literals with the right length, NIL, numbers) and nothing
 *     after it;
 *   - extracted text is valid UTF-8 and within the bound;
 *   - every part is reachable by its section number;
 *   - SEARCH's header cache answers as matching the header block does.
 *
 * SECURITY: test code; aborts on a broken property so the fuzzer reports it.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/buf.h"
#include "mime/mime.h"
#include "mime/mime_addr.h"
#include "mime/mime_address.h"
#include "mime/mime_date.h"
#include "mime/mime_decode.h"
#include "mime/mime_header.h"
#include "mime/mime_imap.h"
#include "mime/mime_search.h"
#include "mime/mime_text.h"

#define CHECK(x)                                                                                   \
	do {                                                                                       \
		if (!(x)) {                                                                        \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #x);      \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

#define TEXT_MAX 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* SEARCH's header cache must agree with matching the header block itself. */
static void
search_cache(const char *msg, size_t len)
{
	static const char *const names[MIME_SEARCH_NFIELDS] = {"From", "To", "Cc", "Bcc",
							       "Subject"};
	size_t hlen = mime_header_block_len(msg, len);
	struct buf cache = BUF_INIT(0), needle = BUF_INIT(0);

	if (!mime_search_cache(&cache, msg, hlen)) {
		CHECK(cache.len == 0);
		buf_free(&cache);
		return;
	}
	/* A needle from the message: a few bytes of its first line, case-mapped. */
	(void)mime_casemap(&needle, msg + (len > 8 ? 6 : 0), len > 8 ? 3 : 0, 0);
	for (int k = 0; k < MIME_SEARCH_NFIELDS; k++) {
		size_t pos = 0, namelen = strlen(names[k]);
		struct mime_field f;
		int want = 0;
		while (!want && mime_header_next(msg, hlen, &pos, &f)) {
			if (!f.has_colon || f.name_len != namelen ||
			    strncasecmp(f.name, names[k], namelen) != 0)
				continue;
			struct buf v = BUF_INIT(0);
			mime_search_value(&v, &f,
					  k == MIME_SEARCH_SUBJECT_FIELD ? MIME_SEARCH_SUBJECT
									 : MIME_SEARCH_ADDRESS);
			want = needle.len == 0 ||
			       (v.len >= needle.len && memmem(v.data, v.len, needle.data, needle.len));
			buf_free(&v);
		}
		int got = mime_search_cached(cache.data, cache.len, (enum mime_search_field)k,
					     needle.data != NULL ? needle.data : "", needle.len);
		CHECK(got == -1 || got == want);
	}
	/* The SENT* day: the Date: field's local time, floored to whole days. */
	int64_t want_day = 0, cached = 0;
	char *date = mime_header_get(msg, hlen, "Date");
	time_t when;
	int zone;
	if (date != NULL && mime_date_parse(date, strlen(date), &when, &zone) == 0) {
		want_day = ((int64_t)when + zone * 60) / 86400;
		if (((int64_t)when + zone * 60) % 86400 < 0)
			want_day--; /* C division truncates toward zero */
	}
	free(date);
	CHECK(mime_search_cached_day(cache.data, cache.len, &cached) == 0 && cached == want_day);
	buf_free(&needle);
	buf_free(&cache);
}

/* One IMAP value at s[*i]: 0 ok, -1 malformed. */
static int
imap_value(const char *s, size_t n, size_t *i, int depth)
{
	if (*i >= n || depth > 2 * MIME_MAX_DEPTH + 10)
		return -1;
	if (s[*i] == '(') {
		(*i)++;
		for (int first = 1;; first = 0) {
			if (*i >= n)
				return -1;
			if (s[*i] == ')') {
				(*i)++;
				return 0;
			}
			if (!first) {
				/* "(a)(b)" lists need no space (RFC 3501 body, address lists) */
				if (s[*i] == ' ')
					(*i)++;
				else if (s[*i] != '(' || s[*i - 1] != ')')
					return -1;
			}
			if (imap_value(s, n, i, depth + 1) < 0)
				return -1;
		}
	}
	if (s[*i] == '"') {
		for ((*i)++; *i < n; (*i)++) {
			unsigned char c = (unsigned char)s[*i];
			if (c == '"') {
				(*i)++;
				return 0;
			}
			if (c == '\r' || c == '\n' || c >= 0x80 || c == 0)
				return -1;
			if (c == '\\') {
				(*i)++;
				if (*i >= n || (s[*i] != '"' && s[*i] != '\\'))
					return -1;
			}
		}
		return -1;
	}
	if (s[*i] == '{') {
		size_t len = 0;
		for ((*i)++; *i < n && s[*i] >= '0' && s[*i] <= '9'; (*i)++)
			len = len * 10 + (size_t)(s[*i] - '0');
		if (*i + 3 > n || s[*i] != '}' || s[*i + 1] != '\r' || s[*i + 2] != '\n')
			return -1;
		*i += 3;
		if (len > n - *i)
			return -1;
		*i += len;
		return 0;
	}
	if (n - *i >= 3 && memcmp(s + *i, "NIL", 3) == 0) {
		*i += 3;
		return 0;
	}
	size_t start = *i;
	while (*i < n && s[*i] >= '0' && s[*i] <= '9')
		(*i)++;
	return *i > start ? 0 : -1;
}

static void
check_imap(const struct buf *b)
{
	size_t i = 0;

	CHECK(b->len > 0 && b->data[0] == '(');
	CHECK(imap_value(b->data, b->len, &i, 0) == 0);
	CHECK(i == b->len);
}

static void
check_utf8(const struct buf *b)
{
	struct buf v = BUF_INIT(0);

	mime_utf8_sanitize(&v, b->data ? b->data : "", b->len);
	CHECK(v.len == b->len);
	CHECK(b->len == 0 || memcmp(v.data, b->data, b->len) == 0);
	buf_free(&v);
}

/*
 * path: the section prefix of p's contents. A multipart's parts are
 * "path.k". The message inside a message/rfc822 body part at "A" is
 * entered by "A.x"; inside a message node (the root, or an encapsulated
 * message) that is itself message/rfc822, part 1 is the body, so the next
 * message is entered by "path.1" (RFC 3501 §6.4.5).
 */
static void
check_part(const struct mime_part *root, const struct mime_part *p, size_t len, const char *path,
	   int message_node, size_t *count)
{
	size_t pos = p->body_off, k = 1;
	struct buf b = BUF_INIT(0);

	(*count)++;
	CHECK(p->depth < MIME_MAX_DEPTH);
	CHECK(p->hdr_off + p->hdr_len <= p->body_off);
	CHECK(p->body_off + p->body_len <= len);
	CHECK(p->hdr_vsize >= p->hdr_len && p->hdr_vsize - p->hdr_len <= p->hdr_lines);
	CHECK(p->body_vsize >= p->body_len && p->body_vsize - p->body_len <= p->body_lines);
	CHECK(!(p->flags & MIME_PART_MESSAGE) || p->nchildren == 1);

	/* BINARY of every part */
	int r = mime_part_decode(&b, p);
	CHECK(r == 0 || r == -2);
	int64_t dsize = mime_part_decoded_size(p);
	CHECK(r == -2 ? dsize == -1 : dsize == (int64_t)b.len);
	buf_free(&b);

	/* message/global content, parsed on demand */
	if (p->flags & MIME_PART_GLOBAL) {
		struct mime_part *g = mime_parse_global(p);
		if (g != NULL) {
			CHECK(g->depth == p->depth + MIME_GLOBAL_DEPTH_COST);
			mime_free(&g);
		}
	}

	for (const struct mime_part *c = p->children; c != NULL; c = c->next, k++) {
		CHECK(c->parent == p);
		CHECK(c->hdr_off >= pos);
		CHECK(c->body_off + c->body_len <= p->body_off + p->body_len);
		pos = c->body_off + c->body_len;

		/* the section number reaches the child (a multipart's parts) */
		char sub[2048]; /* depth <= 100, numbers <= 10000 */
		if (!(p->flags & MIME_PART_MULTIPART))
			continue;
		snprintf(sub, sizeof(sub), "%s%s%zu", path, *path ? "." : "", k);
		struct mime_section s;
		CHECK(mime_section_find(root, sub, &s) == 1);
		CHECK(s.part == c);
		struct buf f = BUF_INIT(0);
		CHECK(mime_section_fetch(&f, &s, 1) == 0);
		mime_section_free(&s);
		buf_free(&f);
		check_part(root, c, len, sub, 0, count);
	}
	if (p->flags & MIME_PART_MESSAGE) {
		char inner[2048];
		if (message_node)
			snprintf(inner, sizeof(inner), "%s%s1", path, *path ? "." : "");
		else
			snprintf(inner, sizeof(inner), "%s", path);
		check_part(root, p->children, len, inner, 1, count);
	}
}

static void
headers(const struct mime_part *root)
{
	const char *h = root->msg + root->hdr_off;
	struct mime_field f;
	size_t pos = 0;
	struct buf b = BUF_INIT(0), d = BUF_INIT(0);

	while (mime_header_next(h, root->hdr_len, &pos, &f)) {
		buf_reset(&b);
		buf_reset(&d);
		mime_header_unfold(&b, &f, MIME_UNFOLD_NUL);
		struct mime_address *a = mime_address_parse(f.value, f.value_len, 1);
		mime_address_free(&a);
		time_t t;
		int tz;
		(void)mime_date_parse(f.value, f.value_len, &t, &tz);
		CHECK(mime_decode_words(&d, buf_str(&b), b.len) == 0);
		check_utf8(&d);
	}
	buf_free(&b);
	buf_free(&d);
}

/* The SMTP server's sender fields: each parses into addr-specs, or is refused. */
static void
sender_fields(const char *msg, size_t len)
{
	static const char *const names[] = {"From", "Sender", "Resent-From", "Resent-Sender"};

	for (size_t k = 0; k < sizeof(names) / sizeof(names[0]); k++) {
		struct mime_addr_list al;
		if (mime_addr_field(msg, len, names[k], &al) < 0) {
			CHECK(al.n == 0 && al.v == NULL);
			continue;
		}
		for (size_t i = 0; i < al.n; i++)
			CHECK(strchr(al.v[i], '@') != NULL);
		mime_addr_list_free(&al);
	}
	struct buf v = BUF_INIT(0), first = BUF_INIT(0);
	int found = mime_addr_header(msg, len, "Subject", &first);
	if (found)
		CHECK(first.len == 0 || (first.data[0] != ' ' && first.data[first.len - 1] != ' '));
	/* The walk over every Subject: the first is the one found above, each
	 * trimmed, and the position only moves forward. */
	size_t pos = 0, last = 0, n = 0;
	while (mime_addr_header_next(msg, len, &pos, "Subject", &v) == 1) {
		CHECK(pos > last && pos <= len);
		CHECK(v.len == 0 || (v.data[0] != ' ' && v.data[v.len - 1] != ' '));
		const char *a = v.data ? v.data : "", *f = first.data ? first.data : "";
		if (n++ == 0)
			CHECK(v.len == first.len && memcmp(a, f, v.len) == 0);
		last = pos;
		buf_reset(&v);
	}
	CHECK((n > 0) == (found == 1));
	buf_free(&v);
	buf_free(&first);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *msg = (const char *)data;
	struct mime_part *root = mime_parse(msg, size);
	struct buf b = BUF_INIT(0);
	size_t count = 0;

	CHECK(root != NULL && root->hdr_off == 0);
	CHECK(root->hdr_len + root->body_len == size);
	check_part(root, root, size, "", 1, &count);
	CHECK(count == mime_part_count(root));
	CHECK(count <= MIME_MAX_PARTS);

	CHECK(mime_envelope(&b, root) == 0);
	check_imap(&b);
	buf_reset(&b);
	CHECK(mime_bodystructure(&b, root, 0) == 0);
	check_imap(&b);
	buf_reset(&b);
	CHECK(mime_bodystructure(&b, root, MIME_BS_EXTENDED) == 0);
	check_imap(&b);
	buf_reset(&b);
	CHECK(mime_bodystructure(&b, root, MIME_BS_EXTENDED | MIME_BS_GLOBAL) == 0);
	check_imap(&b);
	buf_reset(&b);

	(void)mime_text_extract(&b, root, TEXT_MAX);
	CHECK(b.len <= TEXT_MAX);
	check_utf8(&b);
	buf_reset(&b);

	static const char *const specs[] = {"",
					    "HEADER",
					    "TEXT",
					    "1",
					    "1.MIME",
					    "2.HEADER",
					    "HEADER.FIELDS (From To)",
					    "1.HEADER.FIELDS.NOT (a)"};
	for (size_t i = 0; i < sizeof(specs) / sizeof(specs[0]); i++) {
		struct mime_section s;
		if (mime_section_find(root, specs[i], &s) == 1) {
			CHECK(mime_section_fetch(&b, &s, i & 1) == 0);
			mime_section_free(&s);
		}
		buf_reset(&b);
	}
	headers(root);
	search_cache((const char *)data, size);
	sender_fields((const char *)data, size);

	char *fn = mime_part_filename(root);
	free(fn);
	buf_free(&b);
	mime_free(&root);
	return 0;
}
