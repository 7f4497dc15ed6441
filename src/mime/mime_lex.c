/*
 * mime_lex — see mime_lex.h. The rules are RFC 5322 §3.2 (atoms, quoted
 * strings, comments, CFWS), RFC 2045 §5.1 (tokens, parameters) and RFC 2231
 * (parameter continuations), with the same leniency as Dovecot's parser:
 * LWSP around '.', '=' values taken up to the next separator, broken
 * parameters skipped one byte at a time.
 *
 * SECURITY: input is untrusted; every dereference is guarded by p < end.
 * Work is linear in the input (params are capped at MIME_LEX_MAX_PARAMS).
 */
#include "mime/mime_lex.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/buf.h"
#include "core/util.h"

#define REPL "\xEF\xBF\xBD" /* U+FFFD for a NUL byte */

/* 1: atext, 2: ALPHA / DIGIT / 8-bit, 4: atext that is a MIME tspecial. */
static const unsigned char atext[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 1, 0, 1, 1, 1, 1, 1, 0, 0, 1, 1, 0, 1, 0, 4, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 0, 0, 0, 4, 0, 4,
    0, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 0, 0, 0, 1, 1,
    1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 0,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
};

#define IS_ATEXT(c) (atext[(unsigned char)(c)] != 0)
#define IS_TOKEN(c) ((atext[(unsigned char)(c)] & 3) != 0 || (c) == '.')

void
mime_lex_init(struct mime_lex *lx, const void *s, size_t len, struct buf *comment)
{
	lx->p = s;
	lx->end = lx->p + len;
	lx->comment = comment;
}

int
mime_lex_is_atext(unsigned char c)
{
	return IS_ATEXT(c);
}

static void
put(struct buf *out, const unsigned char *s, size_t n)
{
	if (out != NULL)
		(void)buf_append(out, s, n);
}

/* lx->p is at '('. Nested comments, quoted-pairs; folding removed. */
static int
skip_comment(struct mime_lex *lx)
{
	struct buf *c = lx->comment;
	const unsigned char *start;
	unsigned long level = 1;

	if (c != NULL)
		buf_reset(c);
	start = ++lx->p;
	for (; lx->p < lx->end; lx->p++) {
		switch (*lx->p) {
		case '\0':
			put(c, start, (size_t)(lx->p - start));
			put(c, (const unsigned char *)REPL, 3);
			start = lx->p + 1;
			break;
		case '(':
			level++;
			break;
		case ')':
			if (--level == 0) {
				put(c, start, (size_t)(lx->p - start));
				lx->p++;
				return lx->p < lx->end ? 1 : 0;
			}
			break;
		case '\n': {
			size_t n = (size_t)(lx->p - start);
			if (n > 0 && start[n - 1] == '\r')
				n--;
			put(c, start, n);
			start = lx->p + 1;
			break;
		}
		case '\\':
			lx->p++;
			if (lx->p >= lx->end)
				return -1;
			if (*lx->p == '\r' || *lx->p == '\n' || *lx->p == '\0') {
				/* not a quoted-pair: keep the backslash */
				lx->p--;
				break;
			}
			put(c, start, (size_t)(lx->p - start - 1));
			start = lx->p;
			break;
		}
	}
	return -1;
}

int
mime_lex_skip(struct mime_lex *lx)
{
	while (lx->p < lx->end) {
		unsigned char ch = *lx->p;
		if (ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n') {
			lx->p++;
			continue;
		}
		if (ch != '(')
			break;
		if (skip_comment(lx) < 0)
			return -1;
	}
	return lx->p < lx->end ? 1 : 0;
}

int
mime_lex_atom(struct mime_lex *lx, struct buf *out)
{
	const unsigned char *start;

	if (lx->p >= lx->end || !IS_ATEXT(*lx->p))
		return -1;
	for (start = lx->p++; lx->p < lx->end; lx->p++) {
		if (IS_ATEXT(*lx->p))
			continue;
		put(out, start, (size_t)(lx->p - start));
		return mime_lex_skip(lx);
	}
	put(out, start, (size_t)(lx->p - start));
	return 0;
}

int
mime_lex_dot_atom(struct mime_lex *lx, struct buf *out)
{
	const unsigned char *start;
	int r;

	if (lx->p >= lx->end || !IS_ATEXT(*lx->p))
		return -1;
	for (start = lx->p++; lx->p < lx->end;) {
		if (IS_ATEXT(*lx->p)) {
			lx->p++;
			continue;
		}
		if (start == lx->p)
			return -1;
		put(out, start, (size_t)(lx->p - start));
		/* RFC 822 compatibility: CFWS allowed around the dots */
		if ((r = mime_lex_skip(lx)) <= 0)
			return r;
		if (*lx->p != '.')
			return 1;
		lx->p++;
		put(out, (const unsigned char *)".", 1);
		if (mime_lex_skip(lx) <= 0)
			return -1;
		start = lx->p;
	}
	put(out, start, (size_t)(lx->p - start));
	return 0;
}

int
mime_lex_token(struct mime_lex *lx, struct buf *out)
{
	const unsigned char *start;

	for (start = lx->p; lx->p < lx->end; lx->p++) {
		if (IS_TOKEN(*lx->p))
			continue;
		put(out, start, (size_t)(lx->p - start));
		return mime_lex_skip(lx);
	}
	put(out, start, (size_t)(lx->p - start));
	return 0;
}

int
mime_lex_quoted(struct mime_lex *lx, struct buf *out)
{
	const unsigned char *start;

	lx->p++; /* the opening quote */
	for (start = lx->p; lx->p < lx->end; lx->p++) {
		switch (*lx->p) {
		case '\0':
			put(out, start, (size_t)(lx->p - start));
			put(out, (const unsigned char *)REPL, 3);
			start = lx->p + 1;
			break;
		case '"':
			put(out, start, (size_t)(lx->p - start));
			lx->p++;
			return mime_lex_skip(lx);
		case '\n': {
			/* folding inside the string: drop the (CR)LF */
			size_t n = (size_t)(lx->p - start);
			if (n > 0 && start[n - 1] == '\r')
				n--;
			put(out, start, n);
			start = lx->p + 1;
			break;
		}
		case '\\':
			lx->p++;
			if (lx->p >= lx->end)
				return -1;
			if (*lx->p == '\r' || *lx->p == '\n' || *lx->p == '\0') {
				lx->p--;
				break;
			}
			put(out, start, (size_t)(lx->p - start - 1));
			start = lx->p;
			break;
		}
	}
	return -1;
}

/* Like an atom but keeps dots and does not swallow CFWS silently. */
static int
atom_or_dot(struct mime_lex *lx, struct buf *out)
{
	const unsigned char *start;

	for (start = lx->p; lx->p < lx->end; lx->p++) {
		if (IS_ATEXT(*lx->p) || *lx->p == '.')
			continue;
		put(out, start, (size_t)(lx->p - start));
		return mime_lex_skip(lx);
	}
	put(out, start, (size_t)(lx->p - start));
	return 0;
}

int
mime_lex_phrase(struct mime_lex *lx, struct buf *out)
{
	int r;

	if (lx->p >= lx->end)
		return 0;
	if (*lx->p == '.')
		return -1;
	for (;;) {
		if (*lx->p == '"')
			r = mime_lex_quoted(lx, out);
		else
			r = atom_or_dot(lx, out);
		if (r <= 0)
			return r;
		if (!IS_ATEXT(*lx->p) && *lx->p != '"' && *lx->p != '.')
			break;
		put(out, (const unsigned char *)" ", 1);
	}
	return mime_lex_skip(lx);
}

static int
domain_literal(struct mime_lex *lx, struct buf *out)
{
	const unsigned char *start;

	for (start = lx->p++; lx->p < lx->end; lx->p++) {
		switch (*lx->p) {
		case '\0':
			put(out, start, (size_t)(lx->p - start));
			put(out, (const unsigned char *)REPL, 3);
			start = lx->p + 1;
			break;
		case '[':
			return -1;
		case ']':
			put(out, start, (size_t)(lx->p - start + 1));
			lx->p++;
			return mime_lex_skip(lx);
		case '\n': {
			size_t n = (size_t)(lx->p - start);
			if (n > 0 && start[n - 1] == '\r')
				n--;
			put(out, start, n);
			start = lx->p + 1;
			break;
		}
		case '\\':
			lx->p++;
			if (lx->p >= lx->end)
				return -1;
			if (*lx->p == '\r' || *lx->p == '\n' || *lx->p == '\0') {
				put(out, start, (size_t)(lx->p - start));
				start = lx->p;
				lx->p--;
			}
			break;
		}
	}
	return -1;
}

int
mime_lex_domain(struct mime_lex *lx, struct buf *out)
{
	lx->p++; /* the '@' */
	if (mime_lex_skip(lx) <= 0)
		return -1;
	if (*lx->p == '[')
		return domain_literal(lx, out);
	return mime_lex_dot_atom(lx, out);
}

int
mime_lex_content_type(struct mime_lex *lx, struct buf *out)
{
	size_t pos0 = out->len, pos;
	int r;

	if (mime_lex_skip(lx) <= 0)
		return -1;
	/* a type that ends the value is kept (Dovecot salvages "text") */
	if (mime_lex_token(lx, out) <= 0 || out->len == pos0)
		return -1;
	if (*lx->p != '/') {
		buf_truncate(out, pos0);
		return -1;
	}
	lx->p++;
	if (mime_lex_skip(lx) <= 0) {
		buf_truncate(out, pos0);
		return -1;
	}
	(void)buf_putc(out, '/');
	pos = out->len;
	r = mime_lex_token(lx, out);
	if (r < 0 || out->len == pos || (lx->p < lx->end && *lx->p != ';')) {
		buf_truncate(out, pos0);
		return -1;
	}
	return r;
}

/* One ";name=value". 1 ok, 0 end of input, -1 broken (lx->p left there). */
static int
content_param(struct mime_lex *lx, struct buf *key, struct buf *value)
{
	int r;

	buf_reset(key);
	buf_reset(value);
	if (lx->p >= lx->end)
		return 0;
	if (*lx->p != ';')
		return -1;
	lx->p++;
	if (mime_lex_skip(lx) <= 0)
		return -1;
	if (mime_lex_token(lx, key) <= 0)
		return -1;
	if (*lx->p != '=')
		return -1;
	lx->p++;
	if ((r = mime_lex_skip(lx)) <= 0) {
		/* no value */
	} else if (*lx->p == '"') {
		r = mime_lex_quoted(lx, value);
	} else if (*lx->p == '=') {
		/* broken but common: name==?utf-8?b?...?= */
		while (lx->p < lx->end && *lx->p != ';' && *lx->p != ' ' && *lx->p != '\t' &&
		       *lx->p != '\r' && *lx->p != '\n') {
			(void)buf_putc(value, (char)*lx->p);
			lx->p++;
		}
	} else {
		r = mime_lex_token(lx, value);
	}
	return r < 0 ? -1 : 1;
}

struct section {
	char *key; /* name without the "*n[*]" suffix */
	char *value;
	uint32_t idx;
	int extended;
	size_t order; /* keeps the sort stable */
};

static int
section_cmp(const void *a, const void *b)
{
	const struct section *x = a, *y = b;
	int r = strcmp(x->key, y->key);
	if (r != 0)
		return r;
	if (x->idx != y->idx)
		return x->idx < y->idx ? -1 : 1;
	return x->order < y->order ? -1 : (x->order > y->order);
}

/* Recognise name*, name*N, name*N*: 1 and fills s, or 0 for a plain name. */
static int
parse_section_name(const char *key, struct section *s)
{
	const char *star = strchr(key, '*'), *q;
	uint32_t idx = 0;

	if (star == NULL)
		return 0;
	q = star;
	if (q[1] != '\0') {
		q++;
		for (; *q >= '0' && *q <= '9'; q++)
			idx = idx * 10 + (uint32_t)(*q - '0'); /* wraps like Dovecot's */
	}
	/* XXX Dovecot reuses the previous parameter's index for "name*";
	 * we use 0, which is what RFC 2231 §4 means. */
	s->extended = *q == '*';
	if (s->extended)
		q++;
	if (*q != '\0')
		return 0;
	s->key = xstrndup(key, (size_t)(star - key));
	s->idx = idx;
	return 1;
}

static void
push_param(struct mime_param **arr, size_t *n, size_t *cap, char *name, char *value)
{
	if (*n == *cap) {
		*cap = *cap ? *cap * 2 : 4;
		*arr = xrealloc(*arr, *cap * sizeof(**arr));
	}
	(*arr)[*n].name = name;
	(*arr)[*n].value = value;
	(*n)++;
}

static void
escape_percent(struct buf *out, const char *s)
{
	for (; *s != '\0'; s++) {
		if (*s == '%')
			(void)buf_puts(out, "%25");
		else
			(void)buf_putc(out, *s);
	}
}

/* Merge the collected RFC 2231 sections into out (sorted by name, index). */
static void
merge_sections(struct section *secs, size_t nsec, struct mime_param **arr, size_t *n, size_t *cap)
{
	struct buf v = BUF_INIT(0);
	size_t i, j, next;

	qsort(secs, nsec, sizeof(*secs), section_cmp);
	for (i = 0; i < nsec; i = next) {
		int ok = 1, have_ext = 0;
		uint32_t want = 0;

		for (j = i; j < nsec; j++) {
			if (strcasecmp(secs[i].key, secs[j].key) != 0)
				break;
			if (secs[j].idx != want)
				ok = 0; /* a section is missing */
			if (secs[j].extended)
				have_ext = 1;
			want++;
		}
		next = j;
		if (!ok) {
			/* give them back under their original names */
			for (j = i; j < next; j++) {
				char *name = xasprintf(secs[j].extended ? "%s*%u*" : "%s*%u",
						       secs[j].key, (unsigned)secs[j].idx);
				push_param(arr, n, cap, name, secs[j].value);
				secs[j].value = NULL;
			}
			continue;
		}
		buf_reset(&v);
		if (!secs[i].extended && have_ext)
			(void)buf_puts(&v, "''");
		for (j = i; j < next; j++) {
			if (!secs[j].extended && have_ext)
				escape_percent(&v, secs[j].value);
			else
				(void)buf_puts(&v, secs[j].value);
		}
		push_param(arr, n, cap,
			   have_ext ? xasprintf("%s*", secs[i].key) : xstrdup(secs[i].key),
			   xstrndup(buf_str(&v), v.len));
	}
	buf_free(&v);
}

size_t
mime_lex_params(struct mime_lex *lx, struct mime_param **params_r)
{
	struct buf key = BUF_INIT(0), value = BUF_INIT(0);
	struct mime_param *arr = NULL;
	struct section *secs = NULL;
	size_t n = 0, cap = 0, nsec = 0, seccap = 0, total = 0, i;
	int r;

	while ((r = content_param(lx, &key, &value)) != 0) {
		struct section s;

		if (r < 0) {
			/* skip one byte and try to resynchronise */
			if (lx->p >= lx->end)
				break;
			lx->p++;
			continue;
		}
		if (total++ >= MIME_LEX_MAX_PARAMS)
			continue;
		if (parse_section_name(buf_str(&key), &s)) {
			if (nsec == seccap) {
				seccap = seccap ? seccap * 2 : 4;
				secs = xrealloc(secs, seccap * sizeof(*secs));
			}
			s.value = xstrndup(buf_str(&value), value.len);
			s.order = nsec;
			secs[nsec++] = s;
		} else {
			push_param(&arr, &n, &cap, xstrndup(buf_str(&key), key.len),
				   xstrndup(buf_str(&value), value.len));
		}
	}
	if (nsec > 0)
		merge_sections(secs, nsec, &arr, &n, &cap);
	for (i = 0; i < nsec; i++) {
		free(secs[i].key);
		free(secs[i].value);
	}
	free(secs);
	buf_free(&key);
	buf_free(&value);
	*params_r = arr;
	return n;
}

void
mime_params_free(struct mime_param *params, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(params[i].name);
		free(params[i].value);
	}
	free(params);
}
