/*
 * mime_search — the text IMAP SEARCH matches header keys against, made the
 * same way at delivery (cached in the index) and at search time (messages
 * without a cache): RFC 2047-decoded, unfolded, case-mapped values;
 * address fields also in their normalised form "Name <local@domain>" and
 * Subject with white space runs collapsed, as Dovecot does.
 *
 * SECURITY: header values are untrusted; they are only copied and
 * compared. The cache separators never occur in a cached value (a message
 * whose values hold them gets no cache), and a needle holding one is
 * answered from the message instead.
 */
#include "mime/mime_search.h"

#include <string.h>
#include <strings.h>

#include <stdlib.h>
#include <time.h>

#include "mime/mime_address.h"
#include "mime/mime_date.h"
#include "mime/mime_decode.h"

static uint32_t
cm_lower(uint32_t c)
{
	if (c < 0x80)
		return c >= 'A' && c <= 'Z' ? c + 32 : c;
	if (c >= 0xc0 && c <= 0xde && c != 0xd7)
		return c + 32;
	if ((c >= 0x100 && c <= 0x12f) || (c >= 0x132 && c <= 0x137) ||
	    (c >= 0x14a && c <= 0x177) || (c >= 0x1e00 && c <= 0x1e95) ||
	    (c >= 0x1ea0 && c <= 0x1eff))
		return (c & 1) == 0 ? c + 1 : c;
	if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17e))
		return (c & 1) == 1 ? c + 1 : c;
	if (c == 0x178)
		return 0xff;
	if (c >= 0x391 && c <= 0x3a9 && c != 0x3a2)
		return c + 32;
	if (c == 0x3c2)
		return 0x3c3;
	if (c == 0x386)
		return 0x3ac;
	if (c >= 0x388 && c <= 0x38a)
		return c + 37;
	if (c == 0x38c)
		return 0x3cc;
	if (c == 0x38e || c == 0x38f)
		return c + 63;
	if (c >= 0x400 && c <= 0x40f)
		return c + 80;
	if (c >= 0x410 && c <= 0x42f)
		return c + 32;
	if (c >= 0xff21 && c <= 0xff3a)
		return c + 32;
	return c;
}

static uint32_t
cm_upper(uint32_t c)
{
	if (c < 0x80)
		return c >= 'a' && c <= 'z' ? c - 32 : c;
	if (c >= 0xe0 && c <= 0xfe && c != 0xf7)
		return c - 32;
	if (c == 0xff)
		return 0x178;
	if ((c >= 0x101 && c <= 0x12f) || (c >= 0x133 && c <= 0x137) ||
	    (c >= 0x14b && c <= 0x177) || (c >= 0x1e01 && c <= 0x1e95) ||
	    (c >= 0x1ea1 && c <= 0x1eff))
		return (c & 1) == 1 ? c - 1 : c;
	if ((c >= 0x13a && c <= 0x148) || (c >= 0x17a && c <= 0x17e))
		return (c & 1) == 0 ? c - 1 : c;
	if (c >= 0x3b1 && c <= 0x3c9 && c != 0x3c2)
		return c - 32;
	if (c == 0x3c2)
		return 0x3a3;
	if (c == 0x3ac)
		return 0x386;
	if (c >= 0x3ad && c <= 0x3af)
		return c - 37;
	if (c == 0x3cc)
		return 0x38c;
	if (c == 0x3cd || c == 0x3ce)
		return c - 63;
	if (c >= 0x430 && c <= 0x44f)
		return c - 32;
	if (c >= 0x450 && c <= 0x45f)
		return c - 80;
	if (c >= 0xff41 && c <= 0xff5a)
		return c - 32;
	return c;
}

/* Decode one UTF-8 sequence at s[0..n); its length, or 0 when invalid. */
static size_t
cm_utf8_decode(const unsigned char *s, size_t n, uint32_t *cp)
{
	uint32_t c;
	size_t len;

	if (s[0] < 0xc2 || s[0] > 0xf4)
		return 0;
	if (s[0] < 0xe0) {
		len = 2;
		c = s[0] & 0x1f;
	} else if (s[0] < 0xf0) {
		len = 3;
		c = s[0] & 0x0f;
	} else {
		len = 4;
		c = s[0] & 0x07;
	}
	if (len > n)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		c = (c << 6) | (s[i] & 0x3f);
	}
	if ((len == 3 && (c < 0x800 || (c >= 0xd800 && c <= 0xdfff))) ||
	    (len == 4 && (c < 0x10000 || c > 0x10ffff)))
		return 0;
	*cp = c;
	return len;
}

int
mime_casemap(struct buf *out, const char *s, size_t n, int upper)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0;

	/* buf_grow() alone leaves a fresh buffer without its NUL: only grow for real data */
	if (n > 0 && buf_grow(out, n) < 0)
		return -1;
	while (i < n) {
		if (p[i] < 0x80) {
			/* A run of ASCII: copied at once, then folded in place. */
			size_t j = i, at = out->len;
			while (j < n && p[j] < 0x80)
				j++;
			if (buf_append(out, s + i, j - i) < 0)
				return -1;
			for (char *c = out->data + at; c < out->data + out->len; c++)
				if (upper ? (*c >= 'a' && *c <= 'z') : (*c >= 'A' && *c <= 'Z'))
					*c = (char)(upper ? *c - 32 : *c + 32);
			i = j;
			continue;
		}
		uint32_t cp;
		size_t len = cm_utf8_decode(p + i, n - i, &cp);
		if (len == 0) {
			if (buf_putc(out, (char)p[i]) < 0)
				return -1;
			i++;
			continue;
		}
		if (buf_put_utf8(out, upper ? cm_upper(cp) : cm_lower(cp)) < 0)
			return -1;
		i += len;
	}
	return 0;
}

/* Append the RFC 2047-decoded, unfolded value of f. */
void
mime_search_decoded(struct buf *out, const struct mime_field *f)
{
	struct buf raw = BUF_INIT(0);

	(void)mime_header_unfold(&raw, f, MIME_UNFOLD_NUL);
	(void)mime_decode_words(out, raw.data != NULL ? raw.data : "", raw.len);
	buf_free(&raw);
}

/* The normalised form of an address list, as Dovecot's message_address_write() gives it. */
static void
search_address_form(struct buf *out, const char *v, size_t len)
{
	struct mime_address *list = mime_address_parse(v, len, 1);
	bool first = true, in_group = false;

	for (struct mime_address *a = list; a != NULL; a = a->next) {
		if (a->host == NULL) {
			if (!in_group) {
				if (!first)
					buf_puts(out, ", ");
				if (a->mailbox != NULL && a->mailbox[0] != '\0')
					mime_decode_words(out, a->mailbox, strlen(a->mailbox));
				else
					buf_puts(out, "\"\"");
				buf_puts(out, ": ");
				first = true;
			} else {
				buf_putc(out, ';');
				first = false;
			}
			in_group = !in_group;
			continue;
		}
		if (!first)
			buf_puts(out, ", ");
		first = false;
		bool named = a->name != NULL && a->name[0] != '\0';
		if (named) {
			mime_decode_words(out, a->name, strlen(a->name));
			buf_putc(out, ' ');
		}
		if (named || a->route != NULL)
			buf_putc(out, '<');
		if (a->route != NULL) {
			buf_puts(out, a->route);
			buf_putc(out, ':');
		}
		buf_puts(out, a->mailbox != NULL ? a->mailbox : "");
		buf_putc(out, '@');
		buf_puts(out, a->host);
		if (named || a->route != NULL)
			buf_putc(out, '>');
	}
	mime_address_free(&list);
}

static void
search_collapse_ws(struct buf *b)
{
	size_t w = 0;
	bool sp = false;

	for (size_t r = 0; r < b->len; r++) {
		char c = b->data[r];
		if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
			if (!sp)
				b->data[w++] = ' ';
			sp = true;
		} else {
			b->data[w++] = c;
			sp = false;
		}
	}
	buf_truncate(b, w);
}

void
mime_search_value(struct buf *out, const struct mime_field *f, enum mime_search_form form)
{
	struct buf v = BUF_INIT(0);

	mime_search_decoded(&v, f);
	if (form == MIME_SEARCH_ADDRESS) {
		struct buf raw = BUF_INIT(0);
		(void)mime_header_unfold(&raw, f, MIME_UNFOLD_NUL);
		size_t before = v.len;
		buf_putc(&v, '\n');
		search_address_form(&v, raw.data != NULL ? raw.data : "", raw.len);
		if (v.len == before + 1)
			buf_truncate(&v, before);
		buf_free(&raw);
	} else if (form == MIME_SEARCH_SUBJECT) {
		search_collapse_ws(&v);
	}
	(void)mime_casemap(out, v.data != NULL ? v.data : "", v.len, 0);
	buf_free(&v);
}

/* The cached fields, in cache order, and the form each is matched in. */
static const struct {
	const char *name;
	enum mime_search_form form;
} cached_fields[MIME_SEARCH_NFIELDS] = {
    [MIME_SEARCH_FROM] = {"From", MIME_SEARCH_ADDRESS},
    [MIME_SEARCH_TO] = {"To", MIME_SEARCH_ADDRESS},
    [MIME_SEARCH_CC] = {"Cc", MIME_SEARCH_ADDRESS},
    [MIME_SEARCH_BCC] = {"Bcc", MIME_SEARCH_ADDRESS},
    [MIME_SEARCH_SUBJECT_FIELD] = {"Subject", MIME_SEARCH_SUBJECT},
};

#define SEP_FIELD '\x02'
#define SEP_VALUE '\x01'

static bool
search_cache(struct buf *out, const char *hdr, size_t len)
{
	buf_reset(out);
	for (size_t k = 0; k < MIME_SEARCH_NFIELDS; k++) {
		const char *name = cached_fields[k].name;
		size_t namelen = strlen(name), pos = 0;
		struct mime_field f;

		buf_putc(out, SEP_FIELD);
		while (mime_header_next(hdr, len, &pos, &f)) {
			if (!f.has_colon || f.name_len != namelen ||
			    strncasecmp(f.name, name, namelen) != 0)
				continue;
			size_t at = out->len;
			buf_putc(out, SEP_VALUE);
			mime_search_value(out, &f, cached_fields[k].form);
			if (memchr(out->data + at + 1, SEP_VALUE, out->len - at - 1) != NULL ||
			    memchr(out->data + at + 1, SEP_FIELD, out->len - at - 1) != NULL) {
				buf_reset(out);
				return false;
			}
		}
	}
	/* Last, the day SENT* compare. */
	buf_printf(out, "%c%lld", SEP_FIELD, (long long)mime_search_sent_day(hdr, len));
	return true;
}

bool
mime_search_cache(struct buf *out, const char *hdr, size_t len)
{
	mime_charset_scope_begin(); /* one message's headers: charsets bounded together */
	bool r = search_cache(out, hdr, len);
	mime_charset_scope_end();
	return r;
}

int64_t
mime_search_day(int64_t t)
{
	return t >= 0 ? t / 86400 : -((-t + 86399) / 86400);
}

int64_t
mime_search_sent_day(const char *hdr, size_t len)
{
	char *date = mime_header_get(hdr, len, "Date");
	int64_t day = 0;
	time_t t;
	int tz;

	if (date != NULL && mime_date_parse(date, strlen(date), &t, &tz) == 0)
		day = mime_search_day((int64_t)t + (int64_t)tz * 60);
	free(date);
	return day;
}

/* The start of section k of a cache and its end; NULL when there is none. */
static const char *
cache_section(const char *cache, size_t len, size_t k, const char **end_r)
{
	const char *p = cache, *end = cache + len;

	for (size_t i = 0; i <= k; i++) {
		p = memchr(p, SEP_FIELD, (size_t)(end - p));
		if (p == NULL)
			return NULL;
		p++;
	}
	const char *q = memchr(p, SEP_FIELD, (size_t)(end - p));
	*end_r = q != NULL ? q : end;
	return p;
}

int
mime_search_cached_day(const char *cache, size_t len, int64_t *day_r)
{
	const char *end, *p = cache_section(cache, len, MIME_SEARCH_NFIELDS, &end);
	char num[24];

	if (p == NULL || p == end || (size_t)(end - p) >= sizeof(num))
		return -1;
	memcpy(num, p, (size_t)(end - p));
	num[end - p] = '\0';
	char *stop;
	long long v = strtoll(num, &stop, 10);
	if (*stop != '\0')
		return -1;
	*day_r = v;
	return 0;
}

int
mime_search_cached(const char *cache, size_t len, enum mime_search_field field, const char *needle,
		   size_t nlen)
{
	const char *q, *p;

	if (memchr(needle, SEP_VALUE, nlen) != NULL || memchr(needle, SEP_FIELD, nlen) != NULL)
		return -1;
	if ((p = cache_section(cache, len, (size_t)field, &q)) == NULL)
		return -1;
	if (p == q)
		return 0; /* no such field */
	if (nlen == 0)
		return 1;
	return memmem(p, (size_t)(q - p), needle, nlen) != NULL;
}
