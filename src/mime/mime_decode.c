/*
 * mime_decode — see mime_decode.h.
 *
 * Charset conversion keeps its iconv descriptors open, a few per thread
 * (descriptors are not thread-safe; a thread-specific cache needs no lock).
 * Opening one is cheap only while glibc still holds the charset's gconv
 * module: a header whose encoded words cycle through a dozen charsets made
 * every word load and unload a module, ~150 us each here, so a 10 MB
 * Subject kept a thread busy for many minutes. Now a message (a "scope",
 * mime_charset_scope_begin()) converts at most ICONV_CACHE distinct
 * charsets, all of which fit in the cache together: each is opened at most
 * once in it, and text in any further charset is read as UTF-8 (its
 * invalid bytes shown as U+FFFD), as an unknown charset is. The limit is
 * counted per message, not per time, so a message is always decoded the
 * same way, whatever the thread did before. Real mail uses a handful of
 * charsets. Common mislabelings are mapped to the charset that is really
 * meant (gb2312 is read as GB18030, ks_c_5601-1987 as CP949, windows-874 as
 * CP874, ...).
 *
 * SECURITY: charset names longer than 64 bytes or with odd bytes are not
 * passed to iconv; every loop is bounded by its input length; output goes
 * through struct buf and stops at its limit; iconv_open() calls are
 * bounded per scope.
 */
#include "mime/mime_decode.h"

#include <errno.h>
#include <iconv.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/buf.h"
#include "core/util.h"
#include "mime/mime_lex.h"

#define REPL "\xEF\xBF\xBD"
#define CHARSET_MAX 64
/*
 * Descriptors a thread keeps open, least recently used replaced first; also
 * the distinct charsets one scope converts, so that none of a scope's own is
 * replaced while it lasts.
 */
#define ICONV_CACHE 16

static const signed char b64val[256] = {
    ['A'] = 1,	['B'] = 2,  ['C'] = 3,	['D'] = 4,  ['E'] = 5,	['F'] = 6,  ['G'] = 7,	['H'] = 8,
    ['I'] = 9,	['J'] = 10, ['K'] = 11, ['L'] = 12, ['M'] = 13, ['N'] = 14, ['O'] = 15, ['P'] = 16,
    ['Q'] = 17, ['R'] = 18, ['S'] = 19, ['T'] = 20, ['U'] = 21, ['V'] = 22, ['W'] = 23, ['X'] = 24,
    ['Y'] = 25, ['Z'] = 26, ['a'] = 27, ['b'] = 28, ['c'] = 29, ['d'] = 30, ['e'] = 31, ['f'] = 32,
    ['g'] = 33, ['h'] = 34, ['i'] = 35, ['j'] = 36, ['k'] = 37, ['l'] = 38, ['m'] = 39, ['n'] = 40,
    ['o'] = 41, ['p'] = 42, ['q'] = 43, ['r'] = 44, ['s'] = 45, ['t'] = 46, ['u'] = 47, ['v'] = 48,
    ['w'] = 49, ['x'] = 50, ['y'] = 51, ['z'] = 52, ['0'] = 53, ['1'] = 54, ['2'] = 55, ['3'] = 56,
    ['4'] = 57, ['5'] = 58, ['6'] = 59, ['7'] = 60, ['8'] = 61, ['9'] = 62, ['+'] = 63, ['/'] = 64,
};

/* Emit the bytes held by a partial quantum of n sextets. */
static int
b64_flush(struct buf *out, uint32_t acc, int n)
{
	unsigned char o[3];

	if (n == 2) {
		o[0] = (unsigned char)(acc >> 4);
		return buf_append(out, o, 1);
	}
	if (n == 3) {
		o[0] = (unsigned char)(acc >> 10);
		o[1] = (unsigned char)(acc >> 2);
		return buf_append(out, o, 2);
	}
	return 0;
}

int
mime_decode_base64(struct buf *out, const char *in, size_t len)
{
	uint32_t acc = 0;
	int n = 0;

	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)in[i];
		if (c == '=') {
			/* padding ends the quantum; more may follow (concatenated parts) */
			if (b64_flush(out, acc, n) < 0)
				return -1;
			acc = 0;
			n = 0;
			continue;
		}
		if (b64val[c] == 0)
			continue; /* line breaks and junk */
		acc = (acc << 6) | (uint32_t)(b64val[c] - 1);
		if (++n == 4) {
			unsigned char o[3] = {(unsigned char)(acc >> 16), (unsigned char)(acc >> 8),
					      (unsigned char)acc};
			if (buf_append(out, o, 3) < 0)
				return -1;
			acc = 0;
			n = 0;
		}
	}
	return b64_flush(out, acc, n);
}

static int
hexval(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Decode one quoted-printable line (no line break) into out. */
static int
qp_line(struct buf *out, const char *s, size_t n, int header)
{
	size_t i = 0, run = 0;

	while (i < n) {
		unsigned char c = (unsigned char)s[i];
		if (c == '=' && i + 2 < n) {
			int h = hexval((unsigned char)s[i + 1]),
			    l = hexval((unsigned char)s[i + 2]);
			if (h >= 0 && l >= 0) {
				if (buf_append(out, s + i - run, run) < 0)
					return -1;
				run = 0;
				if (buf_putc(out, (char)(h << 4 | l)) < 0)
					return -1;
				i += 3;
				continue;
			}
		}
		if (header && c == '_') {
			if (buf_append(out, s + i - run, run) < 0 || buf_putc(out, ' ') < 0)
				return -1;
			run = 0;
			i++;
			continue;
		}
		run++;
		i++;
	}
	return buf_append(out, s + n - run, run);
}

int
mime_decode_qp(struct buf *out, const char *in, size_t len, int header)
{
	size_t s = 0;

	if (header)
		return qp_line(out, in, len, 1);
	while (s < len) {
		const char *lf = memchr(in + s, '\n', len - s);
		size_t e = lf ? (size_t)(lf - in) : len, ce = e, next = lf ? e + 1 : len;
		int soft = 0;

		if (ce > s && in[ce - 1] == '\r')
			ce--;
		/* transport may add trailing white space: it is not data */
		while (ce > s && (in[ce - 1] == ' ' || in[ce - 1] == '\t'))
			ce--;
		if (ce > s && in[ce - 1] == '=') {
			soft = 1;
			ce--;
		}
		if (qp_line(out, in + s, ce - s, 0) < 0)
			return -1;
		if (!soft && lf != NULL) {
			const char *brk = (e > s && in[e - 1] == '\r') ? "\r\n" : "\n";
			if (buf_puts(out, brk) < 0)
				return -1;
		}
		s = next;
	}
	return 0;
}

/* Length of the valid UTF-8 sequence at s[0..n), or 0 if invalid. */
static size_t
utf8_len(const unsigned char *s, size_t n)
{
	unsigned char c = s[0];
	size_t need;
	uint32_t cp;

	if (c < 0x80)
		return 1;
	if (c >= 0xC2 && c <= 0xDF) {
		need = 2;
		cp = c & 0x1F;
	} else if (c >= 0xE0 && c <= 0xEF) {
		need = 3;
		cp = c & 0x0F;
	} else if (c >= 0xF0 && c <= 0xF4) {
		need = 4;
		cp = c & 0x07;
	} else {
		return 0;
	}
	if (n < need)
		return 0;
	for (size_t i = 1; i < need; i++) {
		if ((s[i] & 0xC0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3F);
	}
	if ((need == 3 && cp < 0x800) || (need == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
	    (cp >= 0xD800 && cp <= 0xDFFF))
		return 0;
	return need;
}

int
mime_utf8_sanitize(struct buf *out, const char *in, size_t len)
{
	const unsigned char *s = (const unsigned char *)in;
	size_t i = 0, start = 0;

	while (i < len) {
		if (s[i] < 0x80) {
			i++;
			continue;
		}
		size_t k = utf8_len(s + i, len - i);
		if (k > 0) {
			i += k;
			continue;
		}
		if (buf_append(out, in + start, i - start) < 0 || buf_append(out, REPL, 3) < 0)
			return -1;
		i++;
		start = i;
	}
	return buf_append(out, in + start, i - start);
}

static const struct {
	const char *label;
	const char *iconv_name;
} charset_alias[] = {
    {"gb2312", "GB18030"},
    {"gbk", "GB18030"},
    {"x-gbk", "GB18030"},
    {"ks_c_5601-1987", "CP949"},
    {"ks_c_5601", "CP949"},
    {"euc-kr", "CP949"},
    {"x-sjis", "SHIFT_JIS"},
    {"shift-jis", "SHIFT_JIS"},
    {"windows-874", "CP874"},
    {"iso-8859-8-i", "ISO-8859-8"},
    {"x-mac-roman", "MACINTOSH"},
    {"macintosh", "MACINTOSH"},
    {"unicode-1-1-utf-7", "UTF-7"},
    {"x-unknown", "UTF-8"},
    {"iso-8859-1", "CP1252"},
    {"latin1", "CP1252"},
    {"us-ascii", "UTF-8"},
    {"ascii", "UTF-8"},
    {"utf8", "UTF-8"},
    {"utf-8", "UTF-8"},
    {"default", "UTF-8"},
};

/* Map a MIME charset label to an iconv name; NULL if unusable. */
static const char *
charset_name(const char *cs, char *tmp, size_t tmplen)
{
	size_t n, i;
	const char *star;

	if (cs == NULL)
		return "UTF-8";
	while (*cs == ' ' || *cs == '\t' || *cs == '"')
		cs++;
	/* RFC 2231 §5 allows charset*language in encoded words */
	star = strchr(cs, '*');
	n = star ? (size_t)(star - cs) : strlen(cs);
	while (n > 0 && (cs[n - 1] == ' ' || cs[n - 1] == '\t' || cs[n - 1] == '"'))
		n--;
	if (n == 0)
		return "UTF-8";
	if (n >= tmplen || n > CHARSET_MAX)
		return NULL;
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)cs[i];
		/* iconv treats '/' specially ("//TRANSLIT"): refuse odd names */
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_' || c == '.' || c == ':' || c == '+'))
			return NULL;
		tmp[i] = cs[i];
	}
	tmp[n] = '\0';
	for (i = 0; i < ARRAY_LEN(charset_alias); i++) {
		if (strcasecmp(tmp, charset_alias[i].label) == 0)
			return charset_alias[i].iconv_name;
	}
	return tmp;
}

static int
convert_iconv(struct buf *out, iconv_t cd, const char *in, size_t len)
{
	char tmp[4096];
	char *ip = (char *)in;
	size_t il = len;

	for (;;) {
		char *op = tmp;
		size_t ol = sizeof(tmp);
		size_t r = iconv(cd, il > 0 ? &ip : NULL, &il, &op, &ol);
		int e = errno;

		if (buf_append(out, tmp, (size_t)(op - tmp)) < 0)
			return -1;
		if (r != (size_t)-1) {
			if (il == 0) {
				/* flush the shift state of stateful charsets */
				op = tmp;
				ol = sizeof(tmp);
				(void)iconv(cd, NULL, NULL, &op, &ol);
				return buf_append(out, tmp, (size_t)(op - tmp));
			}
			continue;
		}
		if (e == E2BIG)
			continue;
		if (buf_append(out, REPL, 3) < 0)
			return -1;
		if (e == EILSEQ && il > 0) {
			ip++;
			il--;
			(void)iconv(cd, NULL, NULL, NULL, NULL);
			continue;
		}
		return 0; /* EINVAL: truncated sequence at the end */
	}
}

struct cd_slot {
	char name[CHARSET_MAX + 1];
	iconv_t cd;
	uint64_t used; /* cache tick of the last use */
};

struct cd_cache {
	struct cd_slot slot[ICONV_CACHE];
	size_t n;
	uint64_t tick;
	unsigned depth;				 /* mime_charset_scope_begin() nesting */
	char seen[ICONV_CACHE][CHARSET_MAX + 1]; /* converted in this scope */
	size_t nseen;
	uint64_t opens; /* iconv_open() calls made, for mime_iconv_opens() */
};

static pthread_key_t cd_key;
static pthread_once_t cd_once = PTHREAD_ONCE_INIT;

/* Thread exit: close the thread's descriptors. */
static void
cd_cache_free(void *arg)
{
	struct cd_cache *c = arg;

	for (size_t i = 0; i < c->n; i++)
		iconv_close(c->slot[i].cd);
	free(c);
}

static void
cd_key_init(void)
{
	if (pthread_key_create(&cd_key, cd_cache_free) != 0)
		PANIC("pthread_key_create failed");
}

static struct cd_cache *
cd_cache_get(void)
{
	pthread_once(&cd_once, cd_key_init);
	struct cd_cache *c = pthread_getspecific(cd_key);
	if (c == NULL) {
		c = xcalloc(1, sizeof(*c));
		if (pthread_setspecific(cd_key, c) != 0)
			PANIC("pthread_setspecific failed");
	}
	return c;
}

void
mime_charset_scope_begin(void)
{
	struct cd_cache *c = cd_cache_get();

	if (c->depth++ == 0)
		c->nseen = 0;
}

void
mime_charset_scope_end(void)
{
	struct cd_cache *c = cd_cache_get();

	ASSERT(c->depth > 0);
	c->depth--;
}

/*
 * A descriptor converting name to UTF-8, in its initial state, owned by the
 * cache; (iconv_t)-1 when iconv does not know name or the scope has
 * converted ICONV_CACHE other charsets. A name iconv does not know does not
 * count: trying it costs little (no module is loaded), and a message full of
 * "unknown-8bit" labels must not use up the budget of its real charsets.
 */
static iconv_t
cd_get(const char *name)
{
	struct cd_cache *c = cd_cache_get();
	struct cd_slot *s = NULL;
	size_t k;

	ASSERT(c->depth > 0);
	for (k = 0; k < c->nseen; k++)
		if (strcasecmp(c->seen[k], name) == 0)
			break;
	if (k == c->nseen && c->nseen == ICONV_CACHE)
		return (iconv_t)-1;
	for (size_t i = 0; i < c->n; i++) {
		if (strcasecmp(c->slot[i].name, name) == 0) {
			s = &c->slot[i];
			break;
		}
	}
	if (s == NULL) {
		c->opens++;
		iconv_t cd = iconv_open("UTF-8", name);
		if (cd == (iconv_t)-1)
			return cd;
		if (c->n < ICONV_CACHE) {
			s = &c->slot[c->n++];
		} else {
			/* Least recently used: one of an earlier scope, as this
			 * one holds fewer than ICONV_CACHE. */
			s = &c->slot[0];
			for (size_t i = 1; i < c->n; i++)
				if (c->slot[i].used < s->used)
					s = &c->slot[i];
			iconv_close(s->cd);
		}
		snprintf(s->name, sizeof(s->name), "%s", name);
		s->cd = cd;
	} else {
		/* A conversion cut short (a full buffer) may have left a shift state. */
		(void)iconv(s->cd, NULL, NULL, NULL, NULL);
	}
	if (k == c->nseen)
		snprintf(c->seen[c->nseen++], sizeof(c->seen[0]), "%s", name);
	s->used = ++c->tick;
	return s->cd;
}

uint64_t
mime_iconv_opens(void)
{
	return cd_cache_get()->opens;
}

int
mime_charset_to_utf8(struct buf *out, const char *charset, const char *in, size_t len)
{
	char tmp[CHARSET_MAX + 1];
	const char *name = charset_name(charset, tmp, sizeof(tmp));
	iconv_t cd;

	if (name != NULL && strcasecmp(name, "UTF-8") == 0)
		return mime_utf8_sanitize(out, in, len);
	mime_charset_scope_begin();
	if (name == NULL || (cd = cd_get(name)) == (iconv_t)-1) {
		mime_charset_scope_end();
		if (mime_utf8_sanitize(out, in, len) < 0)
			return -1;
		return 1;
	}
	int r = convert_iconv(out, cd, in, len);
	mime_charset_scope_end();
	return r;
}

/* An encoded word at in[i..len): "=?charset?E?text?=". */
struct eword {
	const char *cs;
	size_t cs_len;
	char enc;
	const char *text;
	size_t text_len;
	size_t end; /* offset after "?=" */
};

static int
parse_eword(const char *in, size_t len, size_t i, struct eword *w)
{
	size_t p, q;

	if (i + 2 > len || in[i] != '=' || in[i + 1] != '?')
		return 0;
	p = i + 2;
	for (q = p; q < len && in[q] != '?'; q++) {
		unsigned char c = (unsigned char)in[q];
		if (c <= ' ' || c >= 0x7f || q - p > CHARSET_MAX + 20)
			return 0;
	}
	if (q == p || q + 3 >= len || in[q + 2] != '?')
		return 0;
	w->cs = in + p;
	w->cs_len = q - p;
	w->enc = (char)(in[q + 1] & ~0x20);
	if (w->enc != 'B' && w->enc != 'Q')
		return 0;
	p = q + 3;
	for (q = p; q + 1 < len; q++) {
		if (in[q] == '?' && in[q + 1] == '=')
			break;
		if (in[q] == '\r' || in[q] == '\n')
			return 0;
	}
	if (q + 1 >= len)
		return 0;
	w->text = in + p;
	w->text_len = q - p;
	w->end = q + 2;
	return 1;
}

static int
flush_pending(struct buf *out, struct buf *pend, const char *cs, size_t cs_len)
{
	char name[CHARSET_MAX + 21];
	int r = 0;

	if (pend->len == 0)
		return 0;
	if (cs_len >= sizeof(name))
		cs_len = sizeof(name) - 1;
	memcpy(name, cs, cs_len);
	name[cs_len] = '\0';
	if (mime_charset_to_utf8(out, name, pend->data, pend->len) < 0)
		r = -1;
	buf_reset(pend);
	return r;
}

int
mime_decode_words(struct buf *out, const char *in, size_t len)
{
	struct buf pend = BUF_INIT(0);
	const char *pcs = NULL;
	size_t pcs_len = 0, i = 0, run = 0;
	int r = 0;
	struct eword w;

	mime_charset_scope_begin();
	while (i < len && r == 0) {
		if (in[i] == '=' && parse_eword(in, len, i, &w)) {
			if (run > 0) {
				r |= mime_utf8_sanitize(out, in + i - run, run);
				run = 0;
			}
			if (pend.len > 0 &&
			    (w.cs_len != pcs_len || strncasecmp(w.cs, pcs, pcs_len) != 0))
				r |= flush_pending(out, &pend, pcs, pcs_len);
			pcs = w.cs;
			pcs_len = w.cs_len;
			if (w.enc == 'B')
				r |= mime_decode_base64(&pend, w.text, w.text_len);
			else
				r |= mime_decode_qp(&pend, w.text, w.text_len, 1);
			i = w.end;
			/* white space between two encoded words is not displayed */
			size_t j = i;
			while (j < len &&
			       (in[j] == ' ' || in[j] == '\t' || in[j] == '\r' || in[j] == '\n'))
				j++;
			if (j > i && parse_eword(in, len, j, &w))
				i = j;
			continue;
		}
		if (pend.len > 0)
			r |= flush_pending(out, &pend, pcs, pcs_len);
		if (in[i] == '\r' || in[i] == '\n') {
			if (run > 0)
				r |= mime_utf8_sanitize(out, in + i - run, run);
			run = 0;
			i++;
			continue;
		}
		run++;
		i++;
	}
	if (run > 0)
		r |= mime_utf8_sanitize(out, in + i - run, run);
	if (pend.len > 0)
		r |= flush_pending(out, &pend, pcs, pcs_len);
	mime_charset_scope_end();
	buf_free(&pend);
	return r < 0 ? -1 : 0;
}

int
mime_decode_2231(struct buf *out, const char *value, size_t len)
{
	const char *q1 = memchr(value, '\'', len), *q2 = NULL, *text = value;
	struct buf raw = BUF_INIT(0);
	char cs[CHARSET_MAX + 1] = "";
	int r;

	if (q1 != NULL)
		q2 = memchr(q1 + 1, '\'', len - (size_t)(q1 + 1 - value));
	if (q2 != NULL) {
		size_t n = (size_t)(q1 - value);
		if (n <= CHARSET_MAX) {
			memcpy(cs, value, n);
			cs[n] = '\0';
		}
		text = q2 + 1;
	}
	for (size_t i = (size_t)(text - value); i < len; i++) {
		if (value[i] == '%' && i + 2 < len) {
			int h = hexval((unsigned char)value[i + 1]);
			int l = hexval((unsigned char)value[i + 2]);
			if (h >= 0 && l >= 0) {
				(void)buf_putc(&raw, (char)(h << 4 | l));
				i += 2;
				continue;
			}
		}
		(void)buf_putc(&raw, value[i]);
	}
	r = mime_charset_to_utf8(out, cs, buf_str(&raw), raw.len);
	buf_free(&raw);
	return r < 0 ? -1 : 0;
}

char *
mime_param_decoded(const struct mime_param *params, size_t n, const char *name)
{
	size_t nl = strlen(name), i;
	struct buf b = BUF_INIT(0);

	for (i = 0; i < n; i++) {
		const char *pn = params[i].name;
		if (strncasecmp(pn, name, nl) == 0 && pn[nl] == '*' && pn[nl + 1] == '\0') {
			(void)mime_decode_2231(&b, params[i].value, strlen(params[i].value));
			return buf_steal(&b);
		}
	}
	for (i = 0; i < n; i++) {
		if (strcasecmp(params[i].name, name) == 0) {
			(void)mime_decode_words(&b, params[i].value, strlen(params[i].value));
			return buf_steal(&b);
		}
	}
	return NULL;
}
