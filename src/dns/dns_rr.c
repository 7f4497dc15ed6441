/*
 * dns_rr — see dns_rr.h. Parsers of rdata in wire format and helpers for
 * names in text. No state, no I/O, no logging: the caller decides what a
 * malformed record means for its answer.
 *
 * SECURITY: all input here is untrusted. Each read is preceded by a check
 * of the bytes that remain; name output is bounded by DNS_NAME_BUFSZ and
 * checked before every write, so no input can write past it.
 */
#include "dns/dns_rr.h"

#include <arpa/inet.h>
#include <string.h>

#include "core/util.h"

/* Wire-form limits (RFC 1035 §2.3.4). */
#define DNS_LABEL_MAX 63
#define DNS_WIRE_NAME_MAX 255

/*
 * The octets a label may hold in surat: printable ASCII except the
 * separator '.' and the escape '\\' (see the header for why).
 */
static int
dns_rr_label_byte_ok(unsigned char c)
{
	return c >= 0x21 && c <= 0x7e && c != '.' && c != '\\';
}

static char
dns_rr_lower(unsigned char c)
{
	return (char)(c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c);
}

int
dns_rr_name(const uint8_t *p, size_t len, size_t *used_r, char *out)
{
	size_t off = 0, o = 0;

	for (;;) {
		size_t lab;

		if (off >= len)
			goto bad;
		lab = p[off];
		if (lab == 0) {
			off++;
			break;
		}
		/* 0xC0 is a compression pointer, 0x40/0x80 are obsolete types. */
		if (lab > DNS_LABEL_MAX)
			goto bad;
		/* label length + label + at least the final zero octet */
		if (off + 1 + lab + 1 > DNS_WIRE_NAME_MAX || lab > len - off - 1)
			goto bad;
		off++;
		/* Text is wire length - 2 at most (253), so this cannot trip. */
		if (o + (o > 0) + lab > DNS_NAME_MAX)
			goto bad;
		if (o > 0)
			out[o++] = '.';
		for (size_t i = 0; i < lab; i++) {
			unsigned char c = p[off + i];
			if (!dns_rr_label_byte_ok(c))
				goto bad;
			out[o++] = dns_rr_lower(c);
		}
		off += lab;
	}
	out[o] = '\0';
	*used_r = off;
	return 0;
bad:
	out[0] = '\0';
	return -1;
}

int
dns_rr_mx(const uint8_t *rd, size_t len, struct dns_mx *r)
{
	size_t used;

	r->host[0] = '\0';
	if (len < 3)
		return -1;
	if (dns_rr_name(rd + 2, len - 2, &used, r->host) < 0 || used != len - 2) {
		r->host[0] = '\0';
		return -1;
	}
	r->pref = (uint16_t)((rd[0] << 8) | rd[1]);
	return 0;
}

static int
dns_rr_addr(int family, const void *src, struct dns_addr *r)
{
	memset(r, 0, sizeof(*r));
	r->family = family;
	if (family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&r->sa;
		sin->sin_family = AF_INET;
		memcpy(&sin->sin_addr, src, 4);
		r->salen = sizeof(*sin);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&r->sa;
		sin6->sin6_family = AF_INET6;
		memcpy(&sin6->sin6_addr, src, 16);
		r->salen = sizeof(*sin6);
	}
	if (inet_ntop(family, src, r->text, sizeof(r->text)) == NULL)
		PANIC("inet_ntop failed on a fixed-size address");
	return 0;
}

int
dns_rr_a(const uint8_t *rd, size_t len, struct dns_addr *r)
{
	if (len != 4)
		return -1;
	return dns_rr_addr(AF_INET, rd, r);
}

int
dns_rr_aaaa(const uint8_t *rd, size_t len, struct dns_addr *r)
{
	if (len != 16)
		return -1;
	return dns_rr_addr(AF_INET6, rd, r);
}

int
dns_rr_ptr(const uint8_t *rd, size_t len, struct dns_ptr *r)
{
	size_t used;

	if (dns_rr_name(rd, len, &used, r->name) < 0 || used != len) {
		r->name[0] = '\0';
		return -1;
	}
	return 0;
}

int
dns_rr_txt(const uint8_t *rd, size_t len, struct dns_txt *r)
{
	size_t off = 0, total = 0, o = 0;

	r->data = NULL;
	r->len = 0;
	/* First pass: check every length byte, so nothing is allocated for junk. */
	while (off < len) {
		size_t n = rd[off];
		if (n > len - off - 1)
			return -1;
		total += n;
		off += 1 + n;
	}
	r->data = xmalloc(total + 1);
	for (off = 0; off < len;) {
		size_t n = rd[off];
		memcpy(r->data + o, rd + off + 1, n);
		o += n;
		off += 1 + n;
	}
	r->data[o] = '\0';
	r->len = o;
	return 0;
}

int
dns_rr_tlsa(const uint8_t *rd, size_t len, struct dns_tlsa *r)
{
	memset(r, 0, sizeof(*r));
	if (len < 3)
		return -1;
	r->usage = rd[0];
	r->selector = rd[1];
	r->mtype = rd[2];
	r->len = len - 3;
	r->data = xmalloc(r->len + 1);
	memcpy(r->data, rd + 3, r->len);
	r->data[r->len] = 0;
	return 0;
}

int
dns_name_normalise(const char *name, char *out)
{
	size_t n = strlen(name), lab = 0;

	out[0] = '\0';
	if (n > 0 && name[n - 1] == '.')
		n--;
	if (n == 0 || n > DNS_NAME_MAX)
		return -1;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)name[i];
		if (c == '.') {
			if (lab == 0)
				goto bad;
			lab = 0;
		} else if (dns_rr_label_byte_ok(c)) {
			if (++lab > DNS_LABEL_MAX)
				goto bad;
		} else {
			goto bad;
		}
		out[i] = dns_rr_lower(c);
	}
	if (lab == 0)
		goto bad;
	out[n] = '\0';
	return 0;
bad:
	out[0] = '\0';
	return -1;
}

int
dns_name_valid(const char *name)
{
	char tmp[DNS_NAME_BUFSZ];

	return dns_name_normalise(name, tmp) == 0;
}

int
dns_reverse_name(const char *ip, char *out, size_t outlen)
{
	static const char hex[] = "0123456789abcdef";
	static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	uint8_t a[16];
	size_t o = 0;

	if (outlen > 0)
		out[0] = '\0';
	if (inet_pton(AF_INET, ip, a) == 1)
		goto v4;
	if (inet_pton(AF_INET6, ip, a) != 1)
		return -1;
	if (memcmp(a, mapped, sizeof(mapped)) == 0) {
		memmove(a, a + 12, 4);
		goto v4;
	}
	/* 32 nibbles, each "x.", then "ip6.arpa": 72 characters. */
	if (outlen < 64 + sizeof("ip6.arpa"))
		return -1;
	for (int i = 15; i >= 0; i--) {
		out[o++] = hex[a[i] & 0x0f];
		out[o++] = '.';
		out[o++] = hex[a[i] >> 4];
		out[o++] = '.';
	}
	memcpy(out + o, "ip6.arpa", sizeof("ip6.arpa"));
	return 0;
v4:
	if (xsnprintf(out, outlen, "%u.%u.%u.%u.in-addr.arpa", a[3], a[2], a[1], a[0]) < 0) {
		if (outlen > 0)
			out[0] = '\0';
		return -1;
	}
	return 0;
}
