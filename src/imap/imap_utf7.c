/*
 * imap_utf7 — see imap_utf7.h. Modified UTF-7 is UTF-16BE in base64 with
 * ',' for '/', no padding, between '&' and '-'; printable ASCII stands for
 * itself and '&' is "&-".
 *
 * SECURITY: every code point is checked on the way in and out; a failed
 * call truncates out back to where it started so no half-decoded name is
 * ever seen.
 */
#include "imap/imap_utf7.h"

#include <stdint.h>
#include <string.h>

#include "core/util.h"

static const char utf7_b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

/*
 * Decode one UTF-8 sequence at s[*i]; the code point into *cp. 0, or -1 on
 * malformed input.
 */
static int
utf7_utf8_next(const unsigned char *s, size_t len, size_t *i, uint32_t *cp)
{
	unsigned char c = s[*i];
	unsigned need;
	uint32_t v;
	unsigned char lo = 0x80, hi = 0xbf;

	if (c < 0x80) {
		*cp = c;
		(*i)++;
		return 0;
	}
	if (c >= 0xc2 && c <= 0xdf) {
		need = 1;
		v = c & 0x1f;
	} else if (c >= 0xe0 && c <= 0xef) {
		need = 2;
		v = c & 0x0f;
		if (c == 0xe0)
			lo = 0xa0; /* overlong */
		else if (c == 0xed)
			hi = 0x9f; /* surrogates */
	} else if (c >= 0xf0 && c <= 0xf4) {
		need = 3;
		v = c & 0x07;
		if (c == 0xf0)
			lo = 0x90; /* overlong */
		else if (c == 0xf4)
			hi = 0x8f; /* above U+10FFFF */
	} else {
		return -1;
	}
	if (len - *i - 1 < need)
		return -1;
	for (unsigned k = 1; k <= need; k++) {
		unsigned char t = s[*i + k];
		if (t < lo || t > hi)
			return -1;
		lo = 0x80;
		hi = 0xbf;
		v = (v << 6) | (t & 0x3f);
	}
	*i += need + 1;
	*cp = v;
	return 0;
}

bool
imap_utf7_utf8_valid(const char *s, size_t len)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i = 0;
	uint32_t cp;

	while (i < len)
		if (utf7_utf8_next(u, len, &i, &cp) < 0)
			return false;
	return true;
}

/* Base64 state while inside a shift. */
struct utf7_bits {
	uint32_t bits;
	unsigned nbits;
};

static int
utf7_put_unit(struct buf *out, struct utf7_bits *st, uint32_t unit)
{
	st->bits = (st->bits << 16) | unit;
	st->nbits += 16;
	while (st->nbits >= 6) {
		st->nbits -= 6;
		if (buf_putc(out, utf7_b64[(st->bits >> st->nbits) & 0x3f]) < 0)
			return -1;
	}
	st->bits &= (1u << st->nbits) - 1;
	return 0;
}

/* Pad the last bits with zeros and close the shift. */
static int
utf7_end_shift(struct buf *out, struct utf7_bits *st)
{
	if (st->nbits > 0 && buf_putc(out, utf7_b64[(st->bits << (6 - st->nbits)) & 0x3f]) < 0)
		return -1;
	st->bits = 0;
	st->nbits = 0;
	return buf_putc(out, '-');
}

int
imap_utf7_encode(const char *s, size_t len, struct buf *out)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t start = out->len, i = 0;
	struct utf7_bits st = {0, 0};
	bool shifted = false;

	while (i < len) {
		uint32_t cp;
		if (utf7_utf8_next(u, len, &i, &cp) < 0 || cp == 0)
			goto fail;
		if (cp >= 0x20 && cp <= 0x7e) {
			if (shifted) {
				if (utf7_end_shift(out, &st) < 0)
					goto fail;
				shifted = false;
			}
			if (buf_putc(out, (char)cp) < 0)
				goto fail;
			if (cp == '&' && buf_putc(out, '-') < 0)
				goto fail;
			continue;
		}
		if (!shifted) {
			if (buf_putc(out, '&') < 0)
				goto fail;
			shifted = true;
		}
		if (cp >= 0x10000) {
			cp -= 0x10000;
			if (utf7_put_unit(out, &st, 0xd800 | (cp >> 10)) < 0 ||
			    utf7_put_unit(out, &st, 0xdc00 | (cp & 0x3ff)) < 0)
				goto fail;
		} else if (utf7_put_unit(out, &st, cp) < 0) {
			goto fail;
		}
	}
	if (shifted && utf7_end_shift(out, &st) < 0)
		goto fail;
	return 0;
fail:
	buf_truncate(out, start);
	return -1;
}

static int
utf7_b64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == ',')
		return 63;
	return -1;
}

/*
 * Decode the base64 run at s[*i] (just after '&') up to and including its
 * '-'. 0 or -1.
 */
static int
utf7_decode_shift(const unsigned char *s, size_t len, size_t *i, struct buf *out)
{
	uint32_t bits = 0, high = 0;
	unsigned nbits = 0;
	size_t units = 0;

	for (;;) {
		if (*i >= len)
			return -1; /* unterminated shift */
		unsigned char c = s[(*i)++];
		if (c == '-')
			break;
		int v = utf7_b64_value(c);
		if (v < 0)
			return -1;
		bits = ((bits << 6) | (uint32_t)v) & 0x3fffff;
		nbits += 6;
		if (nbits < 16)
			continue;
		nbits -= 16;
		uint32_t unit = (bits >> nbits) & 0xffff;
		units++;
		uint32_t cp;
		if (unit >= 0xd800 && unit <= 0xdbff) {
			if (high != 0)
				return -1;
			high = unit;
			continue;
		}
		if (unit >= 0xdc00 && unit <= 0xdfff) {
			if (high == 0)
				return -1;
			cp = 0x10000 + ((high - 0xd800) << 10) + (unit - 0xdc00);
			high = 0;
		} else {
			if (high != 0)
				return -1;
			cp = unit;
		}
		/* Printable ASCII must stand for itself; NUL is never a name. */
		if (cp == 0 || (cp >= 0x20 && cp <= 0x7e))
			return -1;
		if (buf_put_utf8(out, cp) < 0)
			return -1;
	}
	/* Only zero padding, and less than one base64 digit of it. */
	if (units == 0 || high != 0 || nbits >= 6 || (bits & ((1u << nbits) - 1)) != 0)
		return -1;
	return 0;
}

int
imap_utf7_decode(const char *s, size_t len, struct buf *out)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t start = out->len, i = 0;
	bool after_shift = false;

	while (i < len) {
		unsigned char c = u[i];
		if (c < 0x20 || c > 0x7e)
			goto fail;
		if (c != '&') {
			if (buf_putc(out, (char)c) < 0)
				goto fail;
			i++;
			after_shift = false;
			continue;
		}
		if (i + 1 < len && u[i + 1] == '-') {
			if (buf_putc(out, '&') < 0)
				goto fail;
			i += 2;
			after_shift = false;
			continue;
		}
		/* Two shifts in a row would have been written as one. */
		if (after_shift)
			goto fail;
		i++;
		if (utf7_decode_shift(u, len, &i, out) < 0)
			goto fail;
		after_shift = true;
	}
	return 0;
fail:
	buf_truncate(out, start);
	return -1;
}
