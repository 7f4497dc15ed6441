/*
 * mime_header — see mime_header.h. Field splitting follows RFC 5322 §2.2
 * and §2.2.3 (unfolding) with Dovecot's tolerance: the colon is searched on
 * the first line only, a blank line needs no CR, and a bare CR inside a
 * line is data.
 *
 * SECURITY: every scan is bounded by the given length.
 */
#include "mime/mime_header.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/buf.h"
#include "core/util.h"

/* End of the line at s (excluding CR LF) and the start of the next one. */
static void
line_bounds(const char *h, size_t len, size_t s, size_t *content_end, size_t *next)
{
	const char *lf = memchr(h + s, '\n', len - s);

	if (lf == NULL) {
		*content_end = len;
		*next = len;
		return;
	}
	size_t e = (size_t)(lf - h);
	*next = e + 1;
	if (e > s && h[e - 1] == '\r')
		e--;
	*content_end = e;
}

static int
is_blank_line(const char *h, size_t len, size_t s)
{
	if (s >= len)
		return 0;
	if (h[s] == '\n')
		return 1;
	return h[s] == '\r' && s + 1 < len && h[s + 1] == '\n';
}

int
mime_header_next(const char *hdr, size_t len, size_t *pos, struct mime_field *f)
{
	size_t s = *pos, ce, next, first_ce;
	const char *colon;

	if (s >= len || is_blank_line(hdr, len, s))
		return 0;
	line_bounds(hdr, len, s, &first_ce, &next);
	ce = first_ce;
	while (next < len && (hdr[next] == ' ' || hdr[next] == '\t'))
		line_bounds(hdr, len, next, &ce, &next);

	f->off = s;
	f->len = next - s;
	colon = memchr(hdr + s, ':', first_ce - s);
	if (colon == NULL) {
		f->has_colon = 0;
		f->name = hdr + s;
		f->name_len = first_ce - s;
		f->value = hdr + first_ce;
		f->value_len = 0;
	} else {
		size_t n = (size_t)(colon - (hdr + s));
		while (n > 0 && (hdr[s + n - 1] == ' ' || hdr[s + n - 1] == '\t'))
			n--;
		f->has_colon = 1;
		f->name = hdr + s;
		f->name_len = n;
		f->value = colon + 1;
		f->value_len = (size_t)(hdr + ce - (colon + 1));
	}
	*pos = next;
	return 1;
}

size_t
mime_header_block_len(const char *msg, size_t len)
{
	size_t s = 0, ce, next;

	while (s < len) {
		if (msg[s] == '\n')
			return s + 1;
		if (msg[s] == '\r' && s + 1 < len && msg[s + 1] == '\n')
			return s + 2;
		line_bounds(msg, len, s, &ce, &next);
		s = next;
	}
	return len;
}

static int
append_nul_repl(struct buf *out, const char *s, size_t n, int nul_repl)
{
	if (!nul_repl)
		return buf_append(out, s, n);
	while (n > 0) {
		const char *z = memchr(s, '\0', n);
		size_t k = z ? (size_t)(z - s) : n;
		if (buf_append(out, s, k) < 0)
			return -1;
		if (z == NULL)
			break;
		if (buf_append(out, "\xEF\xBF\xBD", 3) < 0)
			return -1;
		s += k + 1;
		n -= k + 1;
	}
	return 0;
}

int
mime_header_unfold(struct buf *out, const struct mime_field *f, unsigned int flags)
{
	const char *v = f->value;
	size_t len = f->value_len, s = 0, ce, next, i;
	int nul_repl = (flags & MIME_UNFOLD_NUL) != 0;

	if (len == 0)
		return 0;
	/* first line: skip whitespace after the colon */
	line_bounds(v, len, 0, &ce, &next);
	for (i = 0; i < ce && (v[i] == ' ' || v[i] == '\t'); i++)
		;
	if (i == ce && ce > 0)
		i = 1; /* all whitespace: skip only one, like Dovecot */
	if (append_nul_repl(out, v + i, ce - i, nul_repl) < 0)
		return -1;
	s = next;
	while (s < len) {
		if (flags & MIME_UNFOLD_KEEP_BREAKS) {
			/* the break that ended the previous line, as it was */
			const char *brk = (s >= 2 && v[s - 2] == '\r') ? "\r\n" : "\n";
			if (buf_puts(out, brk) < 0)
				return -1;
		}
		line_bounds(v, len, s, &ce, &next);
		if (append_nul_repl(out, v + s, ce - s, nul_repl) < 0)
			return -1;
		s = next;
	}
	return 0;
}

int
mime_header_find(const char *hdr, size_t len, const char *name, struct mime_field *f)
{
	size_t pos = 0, n = strlen(name);

	while (mime_header_next(hdr, len, &pos, f)) {
		if (f->has_colon && f->name_len == n && strncasecmp(f->name, name, n) == 0)
			return 1;
	}
	return 0;
}

char *
mime_header_get(const char *hdr, size_t len, const char *name)
{
	struct mime_field f;
	struct buf b = BUF_INIT(0);

	if (!mime_header_find(hdr, len, name, &f))
		return NULL;
	(void)mime_header_unfold(&b, &f, MIME_UNFOLD_NUL);
	return buf_steal(&b);
}

char *
mime_header_get_raw(const char *hdr, size_t len, const char *name)
{
	struct mime_field f;

	if (!mime_header_find(hdr, len, name, &f))
		return NULL;
	char *p = xmalloc(f.value_len + 1);
	if (f.value_len > 0)
		memcpy(p, f.value, f.value_len);
	p[f.value_len] = '\0';
	return p;
}
