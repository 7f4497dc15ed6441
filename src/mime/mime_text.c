/*
 * mime_text — see mime_text.h. Parts are visited in order without
 * recursion limits of their own (the tree depth is capped by mime_parse).
 * Each piece is decoded into a scratch buffer and then appended to the
 * output within the remaining budget, cut on a UTF-8 boundary.
 *
 * SECURITY: scratch buffers are bounded by the part size; the HTML scanner
 * is a single forward pass.
 */
#include "mime/mime_text.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/buf.h"
#include "core/util.h"
#include "mime/mime.h"
#include "mime/mime_decode.h"
#include "mime/mime_header.h"

static int
is_space(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v';
}

/* Append one code point as UTF-8 (invalid ones as U+FFFD). */
static int
put_utf8(struct buf *out, uint32_t cp)
{
	unsigned char b[4];
	size_t n;

	if (cp == 0 || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
		cp = 0xFFFD;
	if (cp < 0x80) {
		b[0] = (unsigned char)cp;
		n = 1;
	} else if (cp < 0x800) {
		b[0] = (unsigned char)(0xC0 | cp >> 6);
		b[1] = (unsigned char)(0x80 | (cp & 0x3F));
		n = 2;
	} else if (cp < 0x10000) {
		b[0] = (unsigned char)(0xE0 | cp >> 12);
		b[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
		b[2] = (unsigned char)(0x80 | (cp & 0x3F));
		n = 3;
	} else {
		b[0] = (unsigned char)(0xF0 | cp >> 18);
		b[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
		b[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
		b[3] = (unsigned char)(0x80 | (cp & 0x3F));
		n = 4;
	}
	return buf_append(out, b, n);
}

static const struct {
	const char *name;
	uint32_t cp;
} entities[] = {
    {"amp", '&'},      {"lt", '<'},	   {"gt", '>'},	      {"quot", '"'},	 {"apos", '\''},
    {"nbsp", 0xA0},    {"copy", 0xA9},	   {"reg", 0xAE},     {"euro", 0x20AC},	 {"mdash", 0x2014},
    {"ndash", 0x2013}, {"hellip", 0x2026}, {"laquo", 0xAB},   {"raquo", 0xBB},	 {"trade", 0x2122},
    {"lsquo", 0x2018}, {"rsquo", 0x2019},  {"ldquo", 0x201C}, {"rdquo", 0x201D}, {"middot", 0xB7},
    {"bull", 0x2022},
};

/* Decode the entity at s[0..n) (s[0] == '&'); returns bytes used, 0 if none. */
static size_t
entity(struct buf *out, const char *s, size_t n)
{
	size_t i = 1;
	uint32_t cp = 0;

	if (n > 2 && s[1] == '#') {
		int hex = n > 3 && (s[2] == 'x' || s[2] == 'X');
		size_t digits = 0;
		for (i = hex ? 3 : 2; i < n && digits < 8; i++, digits++) {
			char c = s[i];
			int v;
			if (c >= '0' && c <= '9')
				v = c - '0';
			else if (hex && c >= 'a' && c <= 'f')
				v = c - 'a' + 10;
			else if (hex && c >= 'A' && c <= 'F')
				v = c - 'A' + 10;
			else
				break;
			cp = cp * (hex ? 16 : 10) + (uint32_t)v;
		}
		if (digits == 0)
			return 0;
		if (i < n && s[i] == ';')
			i++;
		(void)put_utf8(out, cp);
		return i;
	}
	for (size_t k = 0; k < ARRAY_LEN(entities); k++) {
		size_t l = strlen(entities[k].name);
		if (l + 1 < n && strncmp(s + 1, entities[k].name, l) == 0 && s[l + 1] == ';') {
			(void)put_utf8(out, entities[k].cp == 0xA0 ? ' ' : entities[k].cp);
			return l + 2;
		}
	}
	return 0;
}

static int
tag_is(const char *s, size_t n, const char *name)
{
	size_t l = strlen(name);

	return n >= l && strncasecmp(s, name, l) == 0 &&
	       (n == l || is_space((unsigned char)s[l]) || s[l] == '>' || s[l] == '/');
}

/* Block-level tags end a line of text. */
static int
tag_breaks(const char *s, size_t n)
{
	static const char *const block[] = {"br",	  "p",	 "div", "tr", "li", "h1",
					    "h2",	  "h3",	 "h4",	"h5", "h6", "table",
					    "blockquote", "pre", "hr",	"ul", "ol", "title"};

	if (n > 0 && s[0] == '/') {
		s++;
		n--;
	}
	for (size_t i = 0; i < ARRAY_LEN(block); i++) {
		if (tag_is(s, n, block[i]))
			return 1;
	}
	return 0;
}

/* Inline tags join text: "H<b>e</b>llo" is one word. */
static int
tag_inline(const char *s, size_t n)
{
	static const char *const inl[] = {"b",	  "i",	  "u",	   "em",     "strong", "span",
					  "a",	  "font", "small", "big",    "sub",    "sup",
					  "code", "tt",	  "s",	   "strike", "abbr",   "mark"};

	if (n > 0 && s[0] == '/') {
		s++;
		n--;
	}
	for (size_t i = 0; i < ARRAY_LEN(inl); i++) {
		if (tag_is(s, n, inl[i]))
			return 1;
	}
	return 0;
}

/* Find the end of a raw-text element such as </script>. */
static size_t
skip_raw(const char *s, size_t n, size_t i, const char *name)
{
	size_t l = strlen(name);

	for (; i + 2 + l <= n; i++) {
		if (s[i] == '<' && s[i + 1] == '/' && strncasecmp(s + i + 2, name, l) == 0) {
			const char *gt = memchr(s + i, '>', n - i);
			return gt ? (size_t)(gt - s) + 1 : n;
		}
	}
	return n;
}

int
mime_html_to_text(struct buf *out, const char *html, size_t len)
{
	struct buf tmp = BUF_INIT(0);
	size_t i = 0;
	int space = 1, r = 0;

	while (i < len) {
		unsigned char c = (unsigned char)html[i];
		if (c == '<') {
			if (i + 3 < len && strncmp(html + i, "<!--", 4) == 0) {
				const char *e = memmem(html + i + 4, len - i - 4, "-->", 3);
				i = e ? (size_t)(e - html) + 3 : len;
				continue;
			}
			const char *gt = memchr(html + i, '>', len - i);
			size_t end = gt ? (size_t)(gt - html) + 1 : len;
			const char *name = html + i + 1;
			size_t nlen = end - i - 1;
			if (tag_is(name, nlen, "script") || tag_is(name, nlen, "style"))
				end = skip_raw(html, len, end,
					       tag_is(name, nlen, "script") ? "script" : "style");
			if (tag_breaks(name, nlen)) {
				if (tmp.len > 0 && tmp.data[tmp.len - 1] == ' ')
					buf_truncate(&tmp, tmp.len - 1);
				if (tmp.len > 0 && tmp.data[tmp.len - 1] != '\n')
					(void)buf_putc(&tmp, '\n');
				space = 1;
			} else if (!space && !tag_inline(name, nlen)) {
				(void)buf_putc(&tmp, ' ');
				space = 1;
			}
			i = end;
			continue;
		}
		if (c == '&') {
			size_t used = entity(&tmp, html + i, len - i);
			if (used > 0) {
				if (tmp.len > 0 && tmp.data[tmp.len - 1] == ' ')
					space = 1;
				else
					space = 0;
				i += used;
				continue;
			}
		}
		if (is_space(c)) {
			if (!space)
				(void)buf_putc(&tmp, ' ');
			space = 1;
			i++;
			continue;
		}
		(void)buf_putc(&tmp, (char)c);
		space = 0;
		i++;
	}
	r = mime_utf8_sanitize(out, buf_str(&tmp), tmp.len);
	buf_free(&tmp);
	return r;
}

int
mime_part_text(struct buf *out, const struct mime_part *p)
{
	struct buf raw = BUF_INIT(0), utf8 = BUF_INIT(0);
	int r;

	if (mime_part_decode(&raw, p) == -2) {
		/* unknown encoding: index what is readable */
		buf_reset(&raw);
		(void)buf_append(&raw, p->msg + p->body_off, p->body_len);
	}
	(void)mime_charset_to_utf8(&utf8, mime_part_param(p, "charset"), buf_str(&raw), raw.len);
	if (mime_part_is(p, "text", "html"))
		r = mime_html_to_text(out, buf_str(&utf8), utf8.len);
	else
		r = buf_append(out, buf_str(&utf8), utf8.len);
	buf_free(&raw);
	buf_free(&utf8);
	return r;
}

struct budget {
	struct buf *out;
	size_t left; /* SIZE_MAX: unlimited */
	int cut;
};

/* Append UTF-8 s within the budget, cutting on a character boundary. */
static void
spend(struct budget *b, const char *s, size_t n)
{
	if (b->cut)
		return;
	if (n > b->left) {
		n = b->left;
		while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
			n--;
		b->cut = 1;
	}
	if (buf_append(b->out, s, n) < 0) {
		b->cut = 1;
		return;
	}
	if (b->left != SIZE_MAX)
		b->left -= n;
}

static void
spend_line(struct budget *b, const struct buf *line)
{
	if (line->len == 0)
		return;
	spend(b, buf_str(line), line->len);
	spend(b, "\n", 1);
}

static void
headers_of(struct budget *b, const struct mime_part *p)
{
	static const char *const names[] = {"From", "Sender", "Reply-To", "To",
					    "Cc",   "Bcc",    "Subject"};
	const char *hdr = p->msg + p->hdr_off;
	struct buf line = BUF_INIT(0), v = BUF_INIT(0);
	struct mime_field f;
	size_t pos = 0;

	if (p->parent == NULL || (p->parent->flags & MIME_PART_MESSAGE)) {
		while (mime_header_next(hdr, p->hdr_len, &pos, &f) && !b->cut) {
			for (size_t i = 0; f.has_colon && i < ARRAY_LEN(names); i++) {
				size_t n = strlen(names[i]);
				if (f.name_len != n || strncasecmp(f.name, names[i], n) != 0)
					continue;
				buf_reset(&line);
				buf_reset(&v);
				(void)mime_header_unfold(&v, &f, MIME_UNFOLD_NUL);
				(void)mime_decode_words(&line, buf_str(&v), v.len);
				spend_line(b, &line);
				break;
			}
		}
	}
	char *fn = mime_part_filename(p);
	if (fn != NULL) {
		buf_reset(&line);
		(void)buf_puts(&line, fn);
		spend_line(b, &line);
		free(fn);
	}
	if (p->description != NULL) {
		buf_reset(&line);
		(void)mime_decode_words(&line, p->description, strlen(p->description));
		spend_line(b, &line);
	}
	buf_free(&line);
	buf_free(&v);
	for (const struct mime_part *c = p->children; c != NULL && !b->cut; c = c->next)
		headers_of(b, c);
	if (p->flags & MIME_PART_GLOBAL) {
		struct mime_part *inner = mime_parse_global(p);
		if (inner != NULL)
			headers_of(b, inner);
		mime_free(&inner);
	}
}

static void
body_of(struct budget *b, const struct mime_part *p)
{
	if (p->flags & MIME_PART_GLOBAL) {
		struct mime_part *inner = mime_parse_global(p);
		if (inner != NULL)
			body_of(b, inner);
		mime_free(&inner);
		return;
	}
	if (p->children != NULL) {
		for (const struct mime_part *c = p->children; c != NULL && !b->cut; c = c->next)
			body_of(b, c);
		return;
	}
	if ((p->flags & MIME_PART_MULTIPART) || !mime_part_is(p, "text", NULL))
		return;
	struct buf t = BUF_INIT(0);
	(void)mime_part_text(&t, p);
	spend_line(b, &t);
	buf_free(&t);
}

static void
budget_init(struct budget *b, struct buf *out, size_t max)
{
	b->out = out;
	b->left = max == 0 ? SIZE_MAX : max;
	b->cut = 0;
}

int
mime_text_headers(struct buf *out, const struct mime_part *root, size_t max)
{
	struct budget b;

	budget_init(&b, out, max);
	mime_charset_scope_begin();
	headers_of(&b, root);
	mime_charset_scope_end();
	return b.cut;
}

int
mime_text_body(struct buf *out, const struct mime_part *root, size_t max)
{
	struct budget b;

	budget_init(&b, out, max);
	mime_charset_scope_begin();
	body_of(&b, root);
	mime_charset_scope_end();
	return b.cut;
}

int
mime_text_extract(struct buf *out, const struct mime_part *root, size_t max)
{
	struct budget b;

	budget_init(&b, out, max);
	mime_charset_scope_begin();
	headers_of(&b, root);
	body_of(&b, root);
	mime_charset_scope_end();
	return b.cut;
}
