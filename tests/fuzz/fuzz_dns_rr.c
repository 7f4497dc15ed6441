/*
 * fuzz_dns_rr — libFuzzer target for the rdata parsers and name helpers of
 * src/dns/dns_rr.c.
 *
 * Input: the first byte picks the function, the rest is its rdata (or, for
 * the text helpers, its string). The rdata is copied into an allocation of
 * exactly its size so that ASan sees any read past it. Besides "no crash",
 * the target checks what the parsers promise: names come out canonical and
 * survive a round trip through wire form, lengths add up, and nothing is
 * accepted that the format forbids.
 *
 * SECURITY: test code; reads only the fuzzer's input.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "dns/dns_rr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x)                                                                                   \
	do {                                                                                       \
		if (!(x))                                                                          \
			PANIC("fuzz_dns_rr invariant failed: %s", #x);                             \
	} while (0)

/* Wire form of a canonical text name; returns its length. */
static size_t
fuzz_encode(const char *name, uint8_t *w)
{
	size_t o = 0;

	while (*name != '\0') {
		const char *dot = strchr(name, '.');
		size_t n = dot ? (size_t)(dot - name) : strlen(name);
		w[o++] = (uint8_t)n;
		memcpy(w + o, name, n);
		o += n;
		name += n;
		if (*name == '.')
			name++;
	}
	w[o++] = 0;
	return o;
}

/* A name a parser gave us must be canonical and round-trip. */
static void
fuzz_check_name(const char *name)
{
	char again[DNS_NAME_BUFSZ];
	uint8_t w[DNS_NAME_BUFSZ + 2];
	size_t wlen, used;

	CHECK(strlen(name) <= DNS_NAME_MAX);
	if (name[0] != '\0') {
		CHECK(dns_name_normalise(name, again) == 0);
		CHECK(strcmp(again, name) == 0);
	}
	wlen = fuzz_encode(name, w);
	CHECK(wlen <= 255);
	CHECK(dns_rr_name(w, wlen, &used, again) == 0);
	CHECK(used == wlen);
	CHECK(strcmp(again, name) == 0);
}

static void
fuzz_text(const uint8_t *p, size_t n, int which)
{
	char *s = xmalloc(n + 1);
	char out[DNS_NAME_BUFSZ], rev[DNS_REVERSE_BUFSZ];

	memcpy(s, p, n);
	s[n] = '\0';
	if (which == 0) {
		if (dns_name_normalise(s, out) == 0) {
			fuzz_check_name(out);
			CHECK(dns_name_valid(s));
		} else {
			CHECK(out[0] == '\0');
			CHECK(!dns_name_valid(s));
		}
	} else if (dns_reverse_name(s, rev, sizeof(rev)) == 0) {
		CHECK(strlen(rev) < sizeof(rev));
		CHECK(dns_name_normalise(rev, out) == 0);
		CHECK(strcmp(out, rev) == 0);
	}
	free(s);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *rd;
	size_t len, used;
	char name[DNS_NAME_BUFSZ];
	struct dns_mx mx;
	struct dns_addr addr;
	struct dns_ptr ptr;
	struct dns_txt txt;
	struct dns_tlsa tlsa;

	if (size < 1)
		return 0;
	len = size - 1;
	rd = xmalloc(len ? len : 1);
	memcpy(rd, data + 1, len);
	switch (data[0] % 9) {
	case 0:
		if (dns_rr_name(rd, len, &used, name) == 0) {
			CHECK(used >= 1 && used <= len && used <= 255);
			fuzz_check_name(name);
		} else {
			CHECK(name[0] == '\0');
		}
		break;
	case 1:
		if (dns_rr_mx(rd, len, &mx) == 0) {
			CHECK(len >= 3);
			CHECK(mx.pref == (uint16_t)((rd[0] << 8) | rd[1]));
			fuzz_check_name(mx.host);
		}
		break;
	case 2:
		CHECK((dns_rr_a(rd, len, &addr) == 0) == (len == 4));
		break;
	case 3:
		CHECK((dns_rr_aaaa(rd, len, &addr) == 0) == (len == 16));
		break;
	case 4:
		if (dns_rr_ptr(rd, len, &ptr) == 0)
			fuzz_check_name(ptr.name);
		break;
	case 5:
		if (dns_rr_txt(rd, len, &txt) == 0) {
			CHECK(txt.data != NULL && txt.data[txt.len] == '\0');
			CHECK(txt.len <= len);
			free(txt.data);
		} else {
			CHECK(txt.data == NULL);
		}
		break;
	case 6:
		if (dns_rr_tlsa(rd, len, &tlsa) == 0) {
			CHECK(tlsa.len == len - 3);
			CHECK(memcmp(tlsa.data, rd + 3, tlsa.len) == 0);
			free(tlsa.data);
		} else {
			CHECK(len < 3 && tlsa.data == NULL);
		}
		break;
	case 7:
		fuzz_text(rd, len, 0);
		break;
	case 8:
		fuzz_text(rd, len, 1);
		break;
	}
	free(rd);
	return 0;
}
