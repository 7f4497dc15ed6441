/*
 * mime_addr — see mime_addr.h. A small RFC 5322 section 3.4 parser: a
 * tokenizer (atoms, quoted strings, domain literals, specials; comments and
 * folding white space skipped) and a recursive-descent walk over
 * address-list = (mailbox / group) *("," (mailbox / group)).
 *
 * SECURITY: bounded by the header's length; at most MIME_ADDR_MAX addresses
 * and MIME_ADDR_TOKENS tokens per header; comment nesting capped.
 */
#include "mime/mime_addr.h"
#include "core/buf.h"
#include "core/util.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MIME_ADDR_MAX 100
#define MIME_ADDR_TOKENS 4096
#define MIME_COMMENT_DEPTH 32

enum tok_type { T_ATOM, T_QSTR, T_DLIT, T_SPECIAL };

struct tok {
	enum tok_type type;
	const char *p;	/* for QSTR: inside the quotes, escapes still in */
	size_t n;
	char c;		/* for T_SPECIAL */
};

/* Header block end: offset just past the empty line, or len. */
static size_t
header_end(const char *msg, size_t len)
{
	/* An empty first line: no header at all, everything is body. */
	if ((len > 0 && msg[0] == '\n') || (len > 1 && msg[0] == '\r' && msg[1] == '\n'))
		return 0;
	for (size_t i = 0; i < len; i++) {
		if (msg[i] != '\n')
			continue;
		if (i + 1 < len && msg[i + 1] == '\n')
			return i + 1;
		if (i + 2 < len && msg[i + 1] == '\r' && msg[i + 2] == '\n')
			return i + 1;
	}
	return len;
}

/* Past the line break at msg[i] if a continuation line (WSP first) follows; else i. */
static size_t
skip_fold(const char *msg, size_t end, size_t i)
{
	size_t k = i;

	if (k < end && msg[k] == '\r')
		k++;
	if (k < end && msg[k] == '\n' && k + 1 < end && (msg[k + 1] == ' ' || msg[k + 1] == '\t'))
		return k + 1;
	return i;
}

/*
 * Find the next header named name at or after *pos within msg[0..end);
 * append its unfolded value to out. 1 found (*pos moves past it), 0 not.
 *
 * SECURITY: this finds the fields the submission check reads, so it must
 * find every field a reader might show under that name, even malformed:
 * white space before the colon (the obsolete syntax of RFC 5322 4.5, "From
 * :"), also folded onto the next line ("From" CRLF " : x", which readers
 * that unfold first take for From), and a first line that starts with
 * white space (a continuation of nothing, which some readers trim).
 */
static int
header_next(const char *msg, size_t end, size_t *pos, const char *name, struct buf *out)
{
	size_t nl = strlen(name);
	size_t i = *pos;

	while (i < end) {
		const char *eol = memchr(msg + i, '\n', end - i);
		size_t le = eol ? (size_t)(eol - msg) + 1 : end;
		size_t n0 = i;
		if (i == 0)
			while (n0 < le && (msg[n0] == ' ' || msg[n0] == '\t'))
				n0++;
		/*
		 * The name first: the scan for the colon runs over continuation
		 * lines of white space, and done from every line a header of
		 * such lines would cost quadratic time, on the event loop.
		 */
		if (end - n0 <= nl || strncasecmp(msg + n0, name, nl) != 0) {
			i = le;
			continue;
		}
		size_t colon = n0 + nl;
		for (;;) {
			while (colon < end && (msg[colon] == ' ' || msg[colon] == '\t'))
				colon++;
			size_t f = skip_fold(msg, end, colon);
			if (f == colon)
				break;
			colon = f;
		}
		if (colon < end && msg[colon] == ':') {
			/* The line the colon is on. */
			eol = memchr(msg + colon, '\n', end - colon);
			le = eol ? (size_t)(eol - msg) + 1 : end;
			size_t v = colon + 1;
			/* The value runs over continuation lines (starting with WSP). */
			for (;;) {
				size_t stop = le;
				while (stop > v && (msg[stop - 1] == '\n' || msg[stop - 1] == '\r'))
					stop--;
				buf_append(out, msg + v, stop - v);
				if (le < end && (msg[le] == ' ' || msg[le] == '\t')) {
					v = le;
					eol = memchr(msg + le, '\n', end - le);
					le = eol ? (size_t)(eol - msg) + 1 : end;
					continue;
				}
				break;
			}
			*pos = le;
			return 1;
		}
		i = le;
	}
	*pos = end;
	return 0;
}

int
mime_addr_header(const char *msg, size_t len, const char *name, struct buf *out)
{
	size_t pos = 0;

	return mime_addr_header_next(msg, len, &pos, name, out);
}

size_t
mime_addr_header_len(const char *msg, size_t len)
{
	return header_end(msg, len);
}

int
mime_addr_header_next(const char *msg, size_t len, size_t *pos, const char *name, struct buf *out)
{
	return mime_addr_field_next(msg, header_end(msg, len), pos, name, out);
}

int
mime_addr_field_next(const char *msg, size_t hdr_len, size_t *pos, const char *name,
		     struct buf *out)
{
	size_t start = out->len;
	int r = header_next(msg, hdr_len, pos, name, out);
	if (r) {
		/* Trim the white space around the value. */
		size_t s = start;
		while (s < out->len && (out->data[s] == ' ' || out->data[s] == '\t'))
			s++;
		memmove(out->data + start, out->data + s, out->len - s);
		out->len -= s - start;
		while (out->len > start &&
		       (out->data[out->len - 1] == ' ' || out->data[out->len - 1] == '\t'))
			out->len--;
		out->data[out->len] = '\0';
	}
	return r;
}

/* c is one of the characters of set (never the NUL that ends it). */
static int
in_set(char c, const char *set)
{
	return c != '\0' && strchr(set, c) != NULL;
}

#define SPECIALS "()<>[]:;@\\,.\""

/*
 * Tokenize s[0..n); -1 on unbalanced quotes/comments/literals, too many, or a
 * NUL anywhere: RFC 5322 has no place for one, and a reader that takes it for
 * the end of the field would see another address than the one parsed here
 * (From: "<ceo@x.test>\0" <a@x.test>).
 * *misread is set (never cleared) when the text holds what simpler parsers
 * split differently from RFC 5322: a comment with a quoted-pair, a nested
 * comment or any of < > "; or quoted strings that hold a quoted-pair or a
 * parenthesis and (in the same string or another) one of < > @. (An "@"
 * alone in a comment, "a@x (b@y)", reads the same everywhere: as a name.)
 * "(\) <a@x> \() <b@y>" is one comment and then b@y here, but a reader that
 * ends the comment at the first ")" shows a@x; "\"" "<a@x>" <b@y> is one
 * display name, but a reader that ends a quoted string at the first '"'
 * shows a@x outside quotes.
 */
static int
tokenize(const char *s, size_t n, struct tok **toks_r, size_t *ntoks_r, int *misread)
{
	struct tok *t = NULL;
	size_t nt = 0, i = 0;
	int q_split = 0, q_addr = 0;	/* in any quoted string of s */

	if (memchr(s, '\0', n) != NULL)
		return -1;
	while (i < n) {
		char c = s[i];
		if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
			i++;
			continue;
		}
		if (nt >= MIME_ADDR_TOKENS)
			goto bad;
		if (c == '(') {
			int depth = 0;
			while (i < n) {
				if (s[i] == '\\' && i + 1 < n) {
					*misread = 1;
					i += 2;
					continue;
				}
				if (in_set(s[i], "<>\"") || (s[i] == '(' && depth > 0))
					*misread = 1;
				if (s[i] == '(' && ++depth > MIME_COMMENT_DEPTH)
					goto bad;
				if (s[i] == ')' && --depth == 0)
					break;
				i++;
			}
			if (i >= n)
				goto bad;
			i++;
			continue;
		}
		t = xrealloc(t, (nt + 1) * sizeof(*t));
		if (c == '"') {
			size_t start = ++i;
			while (i < n && s[i] != '"') {
				if (s[i] == '\\' && i + 1 < n) {
					q_split = 1;
					i++;
				}
				if (in_set(s[i], "()"))
					q_split = 1;
				if (in_set(s[i], "<>@"))
					q_addr = 1;
				i++;
			}
			if (i >= n)
				goto bad;
			t[nt++] = (struct tok){T_QSTR, s + start, i - start, 0};
			i++;
		} else if (c == '[') {
			size_t start = i++;
			while (i < n && s[i] != ']') {
				if (s[i] == '[' || (s[i] == '\\' && ++i >= n))
					goto bad;
				i++;
			}
			if (i >= n)
				goto bad;
			i++;
			t[nt++] = (struct tok){T_DLIT, s + start, i - start, 0};
		} else if (in_set(c, SPECIALS)) {
			if (c == ')' || c == ']' || c == '\\')
				goto bad;
			t[nt++] = (struct tok){T_SPECIAL, s + i, 1, c};
			i++;
		} else {
			size_t start = i;
			while (i < n && !in_set(s[i], SPECIALS) && s[i] != ' ' && s[i] != '\t' &&
			       s[i] != '\r' && s[i] != '\n' && (unsigned char)s[i] >= 0x20)
				i++;
			if (i == start)
				goto bad;	/* a control byte */
			t[nt++] = (struct tok){T_ATOM, s + start, i - start, 0};
		}
	}
	if (q_split && q_addr)
		*misread = 1;
	*toks_r = t;
	*ntoks_r = nt;
	return 0;
bad:
	free(t);
	return -1;
}

static int
is_sp(const struct tok *t, size_t nt, size_t i, char c)
{
	return i < nt && t[i].type == T_SPECIAL && t[i].c == c;
}

/*
 * "@" domain at t[*i] (the "@" included): a domain literal, or atoms joined
 * by dots. Appends the domain to out unless out is NULL. 0 or -1.
 */
static int
parse_domain(const struct tok *t, size_t nt, size_t *i, struct buf *out)
{
	size_t k = *i + 1;	/* past the "@" */

	if (k < nt && t[k].type == T_DLIT) {
		if (out)
			buf_append(out, t[k].p, t[k].n);
		*i = k + 1;
		return 0;
	}
	for (;;) {
		if (k >= nt || t[k].type != T_ATOM)
			return -1;
		if (out)
			buf_append(out, t[k].p, t[k].n);
		k++;
		if (!is_sp(t, nt, k, '.'))
			break;
		if (out)
			buf_putc(out, '.');
		k++;
	}
	*i = k;
	return 0;
}

/* addr-spec at t[*i]: local-part "@" domain. Appends to out. 0 or -1. */
static int
parse_addr_spec(const struct tok *t, size_t nt, size_t *i, struct buf *out)
{
	size_t k = *i;
	int first = 1;

	for (;;) {
		if (k >= nt || (t[k].type != T_ATOM && t[k].type != T_QSTR))
			return -1;
		if (!first)
			buf_putc(out, '.');
		first = 0;
		if (t[k].type == T_QSTR) {
			for (size_t j = 0; j < t[k].n; j++) {
				if (t[k].p[j] == '\\' && j + 1 < t[k].n)
					j++;
				buf_putc(out, t[k].p[j]);
			}
		} else {
			buf_append(out, t[k].p, t[k].n);
		}
		k++;
		if (!is_sp(t, nt, k, '.'))
			break;
		k++;
	}
	if (!is_sp(t, nt, k, '@'))
		return -1;
	buf_putc(out, '@');
	size_t dstart = out->len;
	if (parse_domain(t, nt, &k, out) < 0)
		return -1;
	util_lower(out->data + dstart);
	*i = k;
	return 0;
}

static void
list_add(struct mime_addr_list *r, struct buf *a)
{
	r->v = xrealloc(r->v, (r->n + 1) * sizeof(char *));
	r->v[r->n++] = buf_steal(a);
}

/* mailbox = name-addr / addr-spec; name-addr = [display-name] angle-addr */
static int
parse_mailbox(const struct tok *t, size_t nt, size_t *i, struct mime_addr_list *r)
{
	struct buf a = BUF_INIT(0);
	size_t k = *i;

	/*
	 * Look ahead for '<' past a display-name: words (atoms, quoted strings)
	 * and obs-phrase dots (RFC 5322 3.2.5, 4.1). A domain literal or any
	 * other special there is no phrase: refused, not skipped, or
	 * "[<x@y>] <a@b>" would hide an address that some readers show.
	 */
	size_t j = k;
	while (j < nt && (t[j].type == T_ATOM || t[j].type == T_QSTR || is_sp(t, nt, j, '.')))
		j++;
	if (j > k && !is_sp(t, nt, j, '<') && !is_sp(t, nt, j, '@'))
		return -1;
	if (is_sp(t, nt, j, '<')) {
		k = j + 1;
		/*
		 * obs-route (RFC 5322 4.4): "@" domain *("," ["@" domain]) ":",
		 * ignored; nothing else may stand there (a skip to the first ':'
		 * would hide whole mailboxes in the route).
		 */
		if (is_sp(t, nt, k, '@')) {
			for (;;) {
				if (!is_sp(t, nt, k, '@') || parse_domain(t, nt, &k, NULL) < 0)
					return -1;
				while (is_sp(t, nt, k, ','))
					k++;
				if (is_sp(t, nt, k, ':'))
					break;
			}
			k++;
		}
		if (parse_addr_spec(t, nt, &k, &a) < 0 || !is_sp(t, nt, k, '>')) {
			buf_free(&a);
			return -1;
		}
		k++;
	} else if (parse_addr_spec(t, nt, &k, &a) < 0) {
		buf_free(&a);
		return -1;
	}
	if (r->n >= MIME_ADDR_MAX) {
		buf_free(&a);
		return -1;
	}
	list_add(r, &a);
	*i = k;
	return 0;
}

static int
parse_address_list(const struct tok *t, size_t nt, struct mime_addr_list *r)
{
	size_t i = 0;

	while (i < nt) {
		if (is_sp(t, nt, i, ',')) {	/* obs: empty list elements */
			i++;
			continue;
		}
		/* A group: display-name ":" [mailbox-list] ";" */
		size_t j = i;
		while (j < nt && (t[j].type == T_ATOM || t[j].type == T_QSTR ||
				  is_sp(t, nt, j, '.')))
			j++;
		if (j > i && is_sp(t, nt, j, ':')) {
			i = j + 1;
			while (i < nt && !is_sp(t, nt, i, ';')) {
				if (is_sp(t, nt, i, ',')) {
					i++;
					continue;
				}
				if (parse_mailbox(t, nt, &i, r) < 0)
					return -1;
			}
			if (i >= nt)
				return -1;
			i++;
			continue;
		}
		if (parse_mailbox(t, nt, &i, r) < 0)
			return -1;
		if (i < nt && !is_sp(t, nt, i, ','))
			return -1;
	}
	return 0;
}

int
mime_addr_from(const char *msg, size_t len, struct mime_addr_list *r)
{
	return mime_addr_field(msg, len, "From", r);
}

int
mime_addr_field(const char *msg, size_t len, const char *name, struct mime_addr_list *r)
{
	size_t end = header_end(msg, len), pos = 0;
	struct buf v = BUF_INIT(0);
	int rc = 0;

	memset(r, 0, sizeof(*r));
	while (header_next(msg, end, &pos, name, &v)) {
		struct tok *t = NULL;
		size_t nt = 0, before = r->n;
		int misread = 0;
		if (tokenize(v.data ? v.data : "", v.len, &t, &nt, &misread) < 0 ||
		    parse_address_list(t, nt, r) < 0 || r->n == before) {
			free(t);
			rc = -1;
			break;
		}
		free(t);
		if (misread) {
			rc = -2;
			break;
		}
		buf_reset(&v);
	}
	buf_free(&v);
	if (rc < 0)
		mime_addr_list_free(r);
	return rc;
}

void
mime_addr_list_free(struct mime_addr_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	l->v = NULL;
	l->n = 0;
}
