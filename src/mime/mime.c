/*
 * mime — see mime.h.
 *
 * The parser walks the message once, top down. A part is: header lines up
 * to the empty line (or up to a boundary line of an enclosing multipart, or
 * the end), then a body that runs to the next boundary line of any
 * enclosing multipart (the innermost boundary is tried first and the
 * longest prefix match wins, RFC 2046 §5.1.2), or to the end. The CRLF
 * before a boundary line belongs to the boundary (RFC 2046 §5.1.1). A
 * multipart pushes its boundary, reads its preamble, its parts, and its
 * epilogue; a message/rfc822 part has one child that starts where its body
 * starts. Every decision that changes the visible structure copies
 * Dovecot's, so that mime_imap.c produces the same BODYSTRUCTURE.
 *
 * Sizes and line counts are computed afterwards, bottom up, so each byte is
 * counted once however deep the nesting is.
 *
 * SECURITY: recursion depth is bounded by MIME_MAX_DEPTH (containers only
 * below it); the part count by MIME_MAX_PARTS; boundaries are cut to
 * MIME_BOUNDARY_MAX bytes; every scan is bounded by the message length.
 */
#include "mime/mime.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/buf.h"
#include "core/util.h"
#include "mime/mime_decode.h"
#include "mime/mime_header.h"
#include "mime/mime_lex.h"

struct bnd {
	const char *s;
	size_t len;
};

struct parser {
	const char *msg;
	size_t len;
	unsigned int base_depth; /* depth of the root (mime_parse_global) */
	struct bnd bnd[MIME_MAX_DEPTH + 1];
	unsigned int nbnd;
	unsigned int nparts;
	unsigned int max_parts; /* MIME_MAX_PARTS, or less for message/global */
};

/* What ended a part: a boundary line (idx >= 0) or the end (idx -1). */
struct hit {
	int idx;
	int close;   /* close-delimiter ("--boundary--") */
	size_t line; /* offset of the boundary line */
	size_t end;  /* where the content before it ends */
};

enum hdr_end { HDR_BLANK, HDR_EOF, HDR_CUT };

/* Which enclosing boundary starts at msg[pos], or -1. */
static int
boundary_at(const struct parser *p, size_t pos, int *close)
{
	const char *d;
	size_t rest;
	int best = -1;

	/* past the part limit the rest of the message is opaque */
	if (p->nbnd == 0 || p->nparts >= p->max_parts)
		return -1;
	if (pos + 2 > p->len || p->msg[pos] != '-' || p->msg[pos + 1] != '-')
		return -1;
	d = p->msg + pos + 2;
	rest = p->len - pos - 2;
	/* the boundary must fit in the line */
	const char *lf = memchr(d, '\n', rest);
	size_t fit;
	int dashes = 0;
	if (lf != NULL) {
		fit = (size_t)(lf - d);
		if (fit > 0 && d[fit - 1] == '\r')
			fit--;
		dashes = fit > 2 && d[fit - 1] == '-' && d[fit - 2] == '-';
	} else {
		fit = rest < MIME_BOUNDARY_MAX + 4 ? rest : MIME_BOUNDARY_MAX + 4;
	}
	for (int i = (int)p->nbnd - 1; i >= 0; i--) {
		const struct bnd *b = &p->bnd[i];
		if (b->len <= fit && memcmp(b->s, d, b->len) == 0 &&
		    (best < 0 || p->bnd[best].len < b->len)) {
			best = i;
			/* "--foo--" is boundary foo closing or boundary "foo--":
			 * a whole-line match ends the search (Dovecot's rule) */
			if (b->len == fit || (dashes && b->len == fit - 2))
				break;
		}
	}
	if (best >= 0) {
		size_t bl = p->bnd[best].len;
		*close = rest >= bl + 2 && d[bl] == '-' && d[bl + 1] == '-';
	}
	return best;
}

/* The content in front of a boundary line ends before its (CR)LF. */
static size_t
content_end(const char *msg, size_t line, size_t region)
{
	size_t e = line;

	if (e > region && msg[e - 1] == '\n') {
		e--;
		if (e > region && msg[e - 1] == '\r')
			e--;
	}
	return e;
}

static size_t
skip_line(const struct parser *p, size_t pos)
{
	const char *lf = memchr(p->msg + pos, '\n', p->len - pos);

	return lf ? (size_t)(lf - p->msg) + 1 : p->len;
}

/* Find the next boundary line at or after the line start pos. */
static struct hit
scan_body(const struct parser *p, size_t pos)
{
	struct hit h = {-1, 0, p->len, p->len};
	size_t s = pos;

	if (p->nbnd == 0 || p->nparts >= p->max_parts)
		return h;
	while (s < p->len) {
		int close = 0, b = boundary_at(p, s, &close);
		if (b >= 0) {
			h.idx = b;
			h.close = close;
			h.line = s;
			h.end = content_end(p->msg, s, pos);
			return h;
		}
		s = skip_line(p, s);
	}
	return h;
}

/* Read the header block of part at start; sets hdr_len and body_off. */
static enum hdr_end
scan_header(const struct parser *p, struct mime_part *part, size_t start, struct hit *h)
{
	const char *m = p->msg;
	size_t s = start, prev_nl = 0;

	while (s < p->len) {
		int close = 0, b = boundary_at(p, s, &close);
		if (b >= 0) {
			/* the line break before the boundary is not header */
			h->idx = b;
			h->close = close;
			h->line = s;
			h->end = s;
			part->hdr_len = s - prev_nl - start;
			part->body_off = s - prev_nl;
			return HDR_CUT;
		}
		if (m[s] == '\n' || (m[s] == '\r' && s + 1 < p->len && m[s + 1] == '\n')) {
			part->body_off = s + (m[s] == '\n' ? 1 : 2);
			part->hdr_len = part->body_off - start;
			return HDR_BLANK;
		}
		const char *lf = memchr(m + s, '\n', p->len - s);
		if (lf == NULL)
			break;
		prev_nl = (lf > m + s && lf[-1] == '\r') ? 2 : 1;
		s = (size_t)(lf - m) + 1;
	}
	part->hdr_len = p->len - start;
	part->body_off = p->len;
	part->flags |= MIME_PART_HDR_EOF;
	return HDR_EOF;
}

/* Names compare as C strings, as in Dovecot: "Date\0x" is Date. */
static int
name_is(const struct mime_field *f, const char *name)
{
	size_t n = strlen(name);

	return strnlen(f->name, f->name_len) == n && strncasecmp(f->name, name, n) == 0;
}

static char *
unfold_dup(const struct mime_field *f)
{
	struct buf b = BUF_INIT(0);

	(void)mime_header_unfold(&b, f, MIME_UNFOLD_NUL | MIME_UNFOLD_KEEP_BREAKS);
	return buf_steal(&b);
}

static void
parse_content_type(struct mime_part *part, const struct mime_field *f, struct buf *ts, int *ret_r)
{
	struct buf v = BUF_INIT(0);
	struct mime_lex lx;
	const char *slash;

	(void)mime_header_unfold(&v, f, MIME_UNFOLD_KEEP_BREAKS);
	mime_lex_init(&lx, buf_str(&v), v.len, NULL);
	(void)mime_lex_skip(&lx);
	buf_reset(ts);
	*ret_r = mime_lex_content_type(&lx, ts);
	slash = memchr(buf_str(ts), '/', ts->len);
	if (slash != NULL) {
		part->type = xstrndup(buf_str(ts), (size_t)(slash - buf_str(ts)));
		part->subtype = xstrdup(slash + 1);
	} else {
		part->type = xstrndup(buf_str(ts), ts->len);
		part->subtype = xstrdup("");
	}
	/* a broken value keeps its salvaged type but loses its parameters */
	if (*ret_r >= 0)
		part->nparams = mime_lex_params(&lx, &part->params);
	buf_free(&v);
}

static void
parse_cte(struct mime_part *part, const struct mime_field *f)
{
	struct buf v = BUF_INIT(0), tok = BUF_INIT(0);
	struct mime_lex lx;

	(void)mime_header_unfold(&v, f, MIME_UNFOLD_KEEP_BREAKS);
	mime_lex_init(&lx, buf_str(&v), v.len, NULL);
	(void)mime_lex_skip(&lx);
	if (mime_lex_token(&lx, &tok) >= 0 && mime_lex_skip(&lx) == 0 && tok.len > 0)
		part->encoding = xstrndup(buf_str(&tok), tok.len);
	buf_free(&v);
	buf_free(&tok);
}

static void
parse_disposition(struct mime_part *part, const struct mime_field *f)
{
	struct buf v = BUF_INIT(0), tok = BUF_INIT(0);
	struct mime_lex lx;

	(void)mime_header_unfold(&v, f, MIME_UNFOLD_KEEP_BREAKS);
	mime_lex_init(&lx, buf_str(&v), v.len, NULL);
	(void)mime_lex_skip(&lx);
	if (mime_lex_token(&lx, &tok) >= 0) {
		/* a later field replaces one that had no parameters (Dovecot) */
		free(part->disposition);
		part->disposition = xstrndup(buf_str(&tok), tok.len);
		part->ndisp_params = mime_lex_params(&lx, &part->disp_params);
	}
	buf_free(&v);
	buf_free(&tok);
}

/* Content-Language: 1#Language-tag (RFC 3282) */
static void
parse_language(struct mime_part *part, const struct mime_field *f)
{
	struct buf v = BUF_INIT(0), tok = BUF_INIT(0);
	struct mime_lex lx;
	size_t n = 0, cap = 0;
	char **list = NULL;

	(void)mime_header_unfold(&v, f, MIME_UNFOLD_KEEP_BREAKS);
	mime_lex_init(&lx, buf_str(&v), v.len, NULL);
	(void)mime_lex_skip(&lx);
	while (mime_lex_atom(&lx, &tok) >= 0 && n < MIME_LEX_MAX_PARAMS) {
		if (n == cap) {
			cap = cap ? cap * 2 : 4;
			list = xrealloc(list, cap * sizeof(*list));
		}
		list[n++] = xstrndup(buf_str(&tok), tok.len);
		buf_reset(&tok);
		if (lx.p >= lx.end || *lx.p != ',')
			break;
		lx.p++;
		(void)mime_lex_skip(&lx);
	}
	if (n > 0) {
		part->language = list;
		part->nlanguage = n;
	}
	buf_free(&v);
	buf_free(&tok);
}

static void
free_content(struct mime_part *p)
{
	free(p->type);
	free(p->subtype);
	mime_params_free(p->params, p->nparams);
	free(p->encoding);
	free(p->id);
	free(p->description);
	free(p->md5);
	free(p->location);
	free(p->disposition);
	mime_params_free(p->disp_params, p->ndisp_params);
	for (size_t i = 0; i < p->nlanguage; i++)
		free(p->language[i]);
	free(p->language);
	p->type = p->subtype = p->encoding = p->id = p->description = NULL;
	p->md5 = p->location = p->disposition = NULL;
	p->params = p->disp_params = NULL;
	p->nparams = p->ndisp_params = 0;
	p->language = NULL;
	p->nlanguage = 0;
}

/*
 * Read the Content-* fields of part and decide what it is. Returns the
 * boundary (pointing into part->params) when it is a multipart with one.
 */
static const char *
classify(struct mime_part *part)
{
	const char *hdr = part->msg + part->hdr_off;
	struct buf ts = BUF_INIT(0);
	struct mime_field f;
	size_t pos = 0;
	int ct_seen = 0, mime_version = 0, ct_ret = -1;
	const char *boundary = NULL;

	while (mime_header_next(hdr, part->hdr_len, &pos, &f)) {
		if (!f.has_colon)
			continue;
		if (name_is(&f, "MIME-Version")) {
			mime_version = 1;
			continue;
		}
		if (strnlen(f.name, f.name_len) < 8 || strncasecmp(f.name, "Content-", 8) != 0)
			continue;
		if (name_is(&f, "Content-Type")) {
			if (!ct_seen)
				parse_content_type(part, &f, &ts, &ct_ret);
			ct_seen = 1;
		} else if (name_is(&f, "Content-Transfer-Encoding")) {
			if (part->encoding == NULL)
				parse_cte(part, &f);
		} else if (name_is(&f, "Content-Disposition")) {
			if (part->ndisp_params == 0)
				parse_disposition(part, &f);
		} else if (name_is(&f, "Content-Language")) {
			if (part->language == NULL)
				parse_language(part, &f);
		} else if (name_is(&f, "Content-ID")) {
			if (part->id == NULL)
				part->id = unfold_dup(&f);
		} else if (name_is(&f, "Content-MD5")) {
			if (part->md5 == NULL)
				part->md5 = unfold_dup(&f);
		} else if (name_is(&f, "Content-Location")) {
			if (part->location == NULL)
				part->location = unfold_dup(&f);
		} else if (name_is(&f, "Content-Description")) {
			if (part->description == NULL)
				part->description = unfold_dup(&f);
		}
	}

	if (ct_seen || mime_version ||
	    (part->parent != NULL && (part->parent->flags & MIME_PART_MULTIPART)))
		part->flags |= MIME_PART_IS_MIME;
	if (!(part->flags & MIME_PART_IS_MIME))
		free_content(part); /* RFC 2045 §4: not a MIME entity */

	if (ct_seen) {
		const char *t = buf_str(&ts);
		if (strcasecmp(t, "message/rfc822") == 0) {
			part->flags |= MIME_PART_MESSAGE;
		} else if (strcasecmp(t, "message/global") == 0) {
			part->flags |= MIME_PART_GLOBAL; /* a leaf: see mime_parse_global() */
		} else if (strncasecmp(t, "multipart/", 10) == 0) {
			part->flags |= MIME_PART_MULTIPART;
			if (strcasecmp(t + 10, "digest") == 0)
				part->flags |= MIME_PART_DIGEST;
			if (ct_ret >= 0) {
				for (size_t i = 0; i < part->nparams; i++) {
					if (strcasecmp(part->params[i].name, "boundary") == 0) {
						boundary = part->params[i].value;
						break;
					}
				}
			}
		}
	} else if (part->parent != NULL && (part->parent->flags & MIME_PART_DIGEST)) {
		part->flags |= MIME_PART_MESSAGE | MIME_PART_DEFAULT_RFC822;
	}
	buf_free(&ts);
	return boundary;
}

static struct mime_part *
new_part(struct parser *p, struct mime_part *parent)
{
	struct mime_part *c = xcalloc(1, sizeof(*c));

	c->parent = parent;
	c->msg = p->msg;
	c->depth = parent ? parent->depth + 1 : p->base_depth;
	p->nparts++;
	return c;
}

static struct hit parse_part(struct parser *p, struct mime_part *part, size_t start);

static struct hit
parse_multipart(struct parser *p, struct mime_part *part, const char *boundary)
{
	struct mime_part **tail = &part->children;
	unsigned int k = p->nbnd;
	struct hit h;

	p->bnd[k].s = boundary;
	p->bnd[k].len = strlen(boundary);
	if (p->bnd[k].len > MIME_BOUNDARY_MAX)
		p->bnd[k].len = MIME_BOUNDARY_MAX;
	p->nbnd = k + 1;

	h = scan_body(p, part->body_off); /* the preamble */
	for (;;) {
		if (h.idx == (int)k) {
			size_t next = skip_line(p, h.line);
			if (next == p->len && p->msg[p->len - 1] != '\n') {
				/* a boundary line cut by the end starts nothing */
				h.idx = -1;
				h.end = p->len;
				continue;
			}
			if (h.close) {
				p->nbnd = k; /* the epilogue runs to an outer boundary */
				h = scan_body(p, next);
				continue;
			}
			struct mime_part *c = new_part(p, part);
			*tail = c;
			tail = &c->next;
			part->nchildren++;
			h = parse_part(p, c, next);
			continue;
		}
		/* an outer boundary or the end closes this multipart too */
		p->nbnd = k;
		part->body_len = h.end - part->body_off;
		return h;
	}
}

static struct hit
parse_part(struct parser *p, struct mime_part *part, size_t start)
{
	struct hit h = {-1, 0, p->len, p->len};
	enum hdr_end he;
	const char *boundary;

	part->hdr_off = start;
	he = scan_header(p, part, start, &h);
	boundary = classify(part);

	if ((part->flags & MIME_PART_MULTIPART) && boundary != NULL && he == HDR_BLANK) {
		if (part->depth + 1 < MIME_MAX_DEPTH)
			return parse_multipart(p, part, boundary);
		part->flags &= ~(unsigned)MIME_PART_MULTIPART;
		part->flags |= MIME_PART_DEMOTED;
	}
	if (part->flags & MIME_PART_MESSAGE) {
		if (part->depth + 1 >= MIME_MAX_DEPTH || p->nparts >= p->max_parts) {
			part->flags &= ~(unsigned)MIME_PART_MESSAGE;
			part->flags |= MIME_PART_DEMOTED;
		}
	}
	if (part->flags & MIME_PART_MESSAGE) {
		struct mime_part *c = new_part(p, part);
		part->children = c;
		part->nchildren = 1;
		if (he == HDR_CUT) {
			/* the encapsulated message is empty */
			c->hdr_off = c->body_off = part->body_off;
			(void)classify(c);
			return h;
		}
		h = parse_part(p, c, part->body_off);
		part->body_len = h.end - part->body_off;
		return h;
	}
	if (he == HDR_CUT)
		return h;
	h = scan_body(p, part->body_off);
	part->body_len = h.end - part->body_off;
	return h;
}

/* LF count and IMAP size of msg[off..off+len). */
static void
count_range(const char *msg, size_t off, size_t len, uint64_t *lines, uint64_t *vsize)
{
	const char *s = msg + off, *end = s + len;
	uint64_t n = 0, bare = 0;

	while (s < end) {
		const char *lf = memchr(s, '\n', (size_t)(end - s));
		if (lf == NULL)
			break;
		n++;
		if (lf == msg || lf[-1] != '\r')
			bare++;
		s = lf + 1;
	}
	*lines += n;
	*vsize += len + bare;
}

static void
compute_sizes(struct mime_part *part)
{
	size_t pos = part->body_off, end = part->body_off + part->body_len;
	struct mime_part *c;

	part->hdr_lines = part->hdr_vsize = 0;
	part->body_lines = part->body_vsize = 0;
	count_range(part->msg, part->hdr_off, part->hdr_len, &part->hdr_lines, &part->hdr_vsize);
	if (part->children == NULL) {
		count_range(part->msg, pos, part->body_len, &part->body_lines, &part->body_vsize);
		return;
	}
	/* a body is its children plus the bytes between them */
	for (c = part->children; c != NULL; c = c->next) {
		compute_sizes(c);
		if (c->hdr_off < pos || c->body_off + c->body_len > end) {
			/* cannot happen; stay correct if it does */
			part->body_lines = part->body_vsize = 0;
			count_range(part->msg, part->body_off, part->body_len, &part->body_lines,
				    &part->body_vsize);
			for (c = c->next; c != NULL; c = c->next)
				compute_sizes(c);
			return;
		}
		count_range(part->msg, pos, c->hdr_off - pos, &part->body_lines, &part->body_vsize);
		part->body_lines += c->hdr_lines + c->body_lines;
		part->body_vsize += c->hdr_vsize + c->body_vsize;
		pos = c->body_off + c->body_len;
	}
	count_range(part->msg, pos, end - pos, &part->body_lines, &part->body_vsize);
}

/* The message/global parts of the tree under p (recursion: MIME_MAX_DEPTH). */
static unsigned int
count_globals(const struct mime_part *p)
{
	unsigned int n = (p->flags & MIME_PART_GLOBAL) ? 1 : 0;

	for (const struct mime_part *c = p->children; c != NULL; c = c->next)
		n += count_globals(c);
	return n;
}

static struct mime_part *
parse_at_depth(const char *msg, size_t len, unsigned int depth, unsigned int max_parts)
{
	struct parser p;
	struct mime_part *root;

	if (msg == NULL)
		msg = "";
	memset(&p, 0, sizeof(p));
	p.msg = msg;
	p.len = len;
	p.base_depth = depth;
	p.max_parts = max_parts;
	root = new_part(&p, NULL);
	(void)parse_part(&p, root, 0);
	root->part_budget = max_parts;
	root->nglobals = count_globals(root);
	compute_sizes(root);
	return root;
}

struct mime_part *
mime_parse(const char *msg, size_t len)
{
	return parse_at_depth(msg, len, 0, MIME_MAX_PARTS);
}

struct mime_part *
mime_parse_global(const struct mime_part *p)
{
	/* each level of message/global costs more depth, so that a chain of
	 * them cannot make callers reparse the same bytes many times */
	unsigned int depth = p->depth + MIME_GLOBAL_DEPTH_COST;
	const struct mime_part *root = p;

	if (!(p->flags & MIME_PART_GLOBAL) || depth >= MIME_MAX_DEPTH)
		return NULL;
	/*
	 * Each tree has its own part count, so without this 1000
	 * message/global parts of 1500 empty parts each (10 MB) would be
	 * 1.5 million parts: 1.5 s of text extraction at delivery and for
	 * SEARCH TEXT, a 86 MB BODYSTRUCTURE. The messages inside the
	 * message/global parts of a tree share its part budget equally, so
	 * the whole nest of trees stays within MIME_MAX_PARTS per level of
	 * message/global (at most MIME_MAX_DEPTH / MIME_GLOBAL_DEPTH_COST),
	 * whatever order callers parse them in.
	 */
	while (root->parent != NULL)
		root = root->parent;
	unsigned int budget = root->part_budget / (root->nglobals > 0 ? root->nglobals : 1);
	enum mime_cte cte = mime_part_cte(p);
	if (cte != MIME_CTE_BASE64 && cte != MIME_CTE_QP)
		return parse_at_depth(p->msg + p->body_off, p->body_len, depth,
				      budget > 0 ? budget : 1);
	/* decoded, the content is never longer than the encoded body */
	struct buf dec = BUF_INIT(0);
	struct mime_part *tree;
	(void)mime_part_decode(&dec, p);
	size_t n = dec.len;
	char *own = buf_steal(&dec);
	tree = parse_at_depth(own, n, depth, budget > 0 ? budget : 1);
	tree->own = own;
	return tree;
}

static void
free_part(struct mime_part *p)
{
	struct mime_part *c, *next;

	for (c = p->children; c != NULL; c = next) {
		next = c->next;
		free_part(c);
	}
	free_content(p);
	free(p);
}

void
mime_free(struct mime_part **root)
{
	if (*root != NULL) {
		char *own = (*root)->own;
		free_part(*root);
		free(own);
	}
	*root = NULL;
}

size_t
mime_part_count(const struct mime_part *p)
{
	size_t n = 1;

	for (const struct mime_part *c = p->children; c != NULL; c = c->next)
		n += mime_part_count(c);
	return n;
}

int
mime_part_is(const struct mime_part *p, const char *type, const char *subtype)
{
	const char *t = p->type, *st = p->subtype;

	if (t == NULL) {
		int msg = (p->flags & MIME_PART_DEFAULT_RFC822) != 0;
		t = msg ? "message" : "text";
		st = msg ? "rfc822" : "plain";
	}
	if (strcasecmp(t, type) != 0)
		return 0;
	return subtype == NULL || strcasecmp(st, subtype) == 0;
}

const char *
mime_part_param(const struct mime_part *p, const char *name)
{
	for (size_t i = 0; i < p->nparams; i++) {
		if (strcasecmp(p->params[i].name, name) == 0)
			return p->params[i].value;
	}
	return NULL;
}

enum mime_cte
mime_part_cte(const struct mime_part *p)
{
	const char *e = p->encoding;

	if (e == NULL || strcasecmp(e, "7bit") == 0)
		return MIME_CTE_7BIT;
	if (strcasecmp(e, "8bit") == 0)
		return MIME_CTE_8BIT;
	if (strcasecmp(e, "binary") == 0)
		return MIME_CTE_BINARY;
	if (strcasecmp(e, "base64") == 0)
		return MIME_CTE_BASE64;
	if (strcasecmp(e, "quoted-printable") == 0)
		return MIME_CTE_QP;
	return MIME_CTE_UNKNOWN;
}

char *
mime_part_filename(const struct mime_part *p)
{
	char *r = mime_param_decoded(p->disp_params, p->ndisp_params, "filename");

	if (r == NULL)
		r = mime_param_decoded(p->params, p->nparams, "name");
	return r;
}

char *
mime_part_header(const struct mime_part *p, const char *name)
{
	return mime_header_get(p->msg + p->hdr_off, p->hdr_len, name);
}

int
mime_part_decode(struct buf *out, const struct mime_part *p)
{
	const char *b = p->msg + p->body_off;

	switch (mime_part_cte(p)) {
	case MIME_CTE_BASE64:
		return mime_decode_base64(out, b, p->body_len);
	case MIME_CTE_QP:
		return mime_decode_qp(out, b, p->body_len, 0);
	case MIME_CTE_UNKNOWN:
		return -2;
	default:
		return buf_append(out, b, p->body_len);
	}
}

int64_t
mime_part_decoded_size(const struct mime_part *p)
{
	struct buf b = BUF_INIT(0);
	int64_t n;

	switch (mime_part_cte(p)) {
	case MIME_CTE_UNKNOWN:
		return -1;
	case MIME_CTE_BASE64:
	case MIME_CTE_QP:
		(void)mime_part_decode(&b, p);
		n = (int64_t)b.len;
		buf_free(&b);
		return n;
	default:
		return (int64_t)p->body_len;
	}
}

int
mime_crlf_append(struct buf *out, const char *s, size_t n)
{
	size_t i = 0, start = 0;

	while (i < n) {
		const char *lf = memchr(s + i, '\n', n - i);
		if (lf == NULL)
			break;
		i = (size_t)(lf - s);
		if (i == 0 || s[i - 1] != '\r') {
			if (buf_append(out, s + start, i - start) < 0 ||
			    buf_append(out, "\r\n", 2) < 0)
				return -1;
			start = i + 1;
		}
		i++;
	}
	return buf_append(out, s + start, n - start);
}

/* ---- sections (RFC 3501 §6.4.5) ---- */

static int
is_astring_char(unsigned char c)
{
	/* ATOM-CHAR plus "]" minus what ends a list item */
	return c > ' ' && c < 0x7f && c != '(' && c != ')' && c != '{' && c != '"' && c != '\\' &&
	       c != '%' && c != '*';
}

static int
parse_field_list(const char *s, struct mime_section *r)
{
	size_t cap = 0;

	if (*s++ != ' ' || *s++ != '(')
		return -1;
	for (;;) {
		struct buf name = BUF_INIT(0);
		if (*s == '"') {
			for (s++; *s != '"'; s++) {
				if (*s == '\0' || *s == '\r' || *s == '\n') {
					buf_free(&name);
					return -1;
				}
				if (*s == '\\' && s[1] != '\0')
					s++;
				(void)buf_putc(&name, *s);
			}
			s++;
		} else {
			while (is_astring_char((unsigned char)*s))
				(void)buf_putc(&name, *s++);
		}
		if (name.len == 0) {
			buf_free(&name);
			return -1;
		}
		if (r->nfields == cap) {
			cap = cap ? cap * 2 : 4;
			r->fields = xrealloc(r->fields, cap * sizeof(*r->fields));
		}
		r->fields[r->nfields++] = buf_steal(&name);
		if (*s == ')')
			break;
		if (*s++ != ' ')
			return -1;
	}
	return s[1] == '\0' ? 0 : -1;
}

static int
parse_section_text(const char *s, int numbered, struct mime_section *r)
{
	if (*s == '\0') {
		r->kind = MIME_SECTION_PART;
		return 0;
	}
	if (strcasecmp(s, "HEADER") == 0) {
		r->kind = MIME_SECTION_HEADER;
		return 0;
	}
	if (strcasecmp(s, "TEXT") == 0) {
		r->kind = MIME_SECTION_TEXT;
		return 0;
	}
	if (strcasecmp(s, "MIME") == 0) {
		r->kind = MIME_SECTION_MIME;
		return numbered ? 0 : -1;
	}
	if (strncasecmp(s, "HEADER.FIELDS.NOT", 17) == 0) {
		r->kind = MIME_SECTION_FIELDS_NOT;
		return parse_field_list(s + 17, r);
	}
	if (strncasecmp(s, "HEADER.FIELDS", 13) == 0) {
		r->kind = MIME_SECTION_FIELDS;
		return parse_field_list(s + 13, r);
	}
	return -1;
}

int
mime_section_find(const struct mime_part *root, const char *spec, struct mime_section *r)
{
	const struct mime_part *part = root, *target;
	const char *s = spec;
	int numbered = 0;

	memset(r, 0, sizeof(*r));
	while (*s >= '0' && *s <= '9') {
		uint64_t n = 0;
		if (*s == '0')
			return -1; /* nz-number */
		for (; *s >= '0' && *s <= '9'; s++) {
			if (n < UINT32_MAX)
				n = n * 10 + (uint64_t)(*s - '0');
		}
		numbered = 1;
		if (part != NULL) {
			if (!(part->flags & MIME_PART_MULTIPART)) {
				if (n != 1)
					part = NULL; /* a single part is part 1 */
			} else {
				const struct mime_part *c = part->children;
				for (uint64_t i = 1; i < n && c != NULL; i++)
					c = c->next;
				part = c;
			}
		}
		if (*s == '.') {
			s++;
			if (*s == '\0')
				return -1;
		} else if (*s != '\0') {
			return -1;
		}
		/* more numbers address the inside of an encapsulated message */
		if (part != NULL && (part->flags & MIME_PART_MESSAGE) && *s >= '0' && *s <= '9')
			part = part->children;
	}
	if (parse_section_text(s, numbered, r) < 0) {
		mime_section_free(r);
		return -1;
	}
	if (part == NULL) {
		mime_section_free(r);
		return 0;
	}
	r->part = part;
	target = part;
	if (numbered && (part->flags & MIME_PART_MESSAGE) && part->children != NULL)
		target = part->children;
	switch (r->kind) {
	case MIME_SECTION_PART:
		if (!numbered) {
			r->off = 0;
			r->len = part->hdr_len + part->body_len;
		} else {
			r->off = part->body_off;
			r->len = part->body_len;
		}
		break;
	case MIME_SECTION_MIME:
		r->off = part->hdr_off;
		r->len = part->hdr_len;
		break;
	case MIME_SECTION_TEXT:
		r->part = target;
		r->off = target->body_off;
		r->len = target->body_len;
		break;
	default:
		r->part = target;
		r->off = target->hdr_off;
		r->len = target->hdr_len;
		break;
	}
	return 1;
}

void
mime_section_free(struct mime_section *s)
{
	for (size_t i = 0; i < s->nfields; i++)
		free(s->fields[i]);
	free(s->fields);
	s->fields = NULL;
	s->nfields = 0;
}

static int
emit(struct buf *out, const char *s, size_t n, int crlf)
{
	return crlf ? mime_crlf_append(out, s, n) : buf_append(out, s, n);
}

int
mime_section_fetch(struct buf *out, const struct mime_section *s, int crlf)
{
	const char *base;
	struct mime_field f;
	size_t pos = 0;

	if (s->part == NULL)
		return 0;
	base = s->part->msg + s->off;
	if (s->kind != MIME_SECTION_FIELDS && s->kind != MIME_SECTION_FIELDS_NOT)
		return emit(out, base, s->len, crlf);
	while (mime_header_next(base, s->len, &pos, &f)) {
		int match = 0;
		for (size_t i = 0; i < s->nfields && !match; i++) {
			size_t n = strlen(s->fields[i]);
			match = f.name_len == n && strncasecmp(f.name, s->fields[i], n) == 0;
		}
		if (match != (s->kind == MIME_SECTION_FIELDS))
			continue;
		if (emit(out, base + f.off, f.len, crlf) < 0)
			return -1;
		if (f.len == 0 || base[f.off + f.len - 1] != '\n') {
			if (buf_append(out, "\r\n", 2) < 0)
				return -1;
		}
	}
	return buf_append(out, "\r\n", 2);
}
