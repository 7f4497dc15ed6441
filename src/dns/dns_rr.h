/*
 * dns_rr — DNS record data (rdata) in wire format, and domain names in text.
 *
 * The resolver (dns.c) hands each record of an answer to one of the
 * dns_rr_*() parsers below, which turn the raw rdata into a small struct:
 * MX, A, AAAA, PTR, TXT and TLSA. libunbound gives rdata uncompressed, so a
 * compression pointer inside a name is an error here, not something to
 * follow. Every parser takes the whole rdata and returns 0 or -1: there is
 * no partial state, so the same functions serve the resolver, the unit
 * tests and the fuzzer.
 *
 * Names come out in one canonical text form everywhere in surat: ASCII
 * lowercase, no final dot, labels of 1..63 octets, at most DNS_NAME_MAX
 * characters; the root name is "". Label octets are limited to printable
 * ASCII other than '.' and '\\' so that text and wire forms map one to one
 * and a name can never smuggle a separator, a space or a control byte into
 * a log line or an SMTP command. A record whose name falls outside that is
 * rejected like a truncated one.
 *
 * SECURITY: rdata comes from the network and is untrusted. Every length
 * byte is checked against the bytes that remain before anything is read or
 * copied; names are bounded to 255 octets in wire form; output buffers
 * have fixed, documented sizes. Nothing here allocates more than the rdata
 * length plus one byte.
 */
#ifndef SURAT_DNS_RR_H
#define SURAT_DNS_RR_H

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Longest name in text form (no final dot), and the buffer it needs. */
#define DNS_NAME_MAX 253
#define DNS_NAME_BUFSZ (DNS_NAME_MAX + 1)
/* Longest reverse name: 32 nibbles "x." plus "ip6.arpa", and its NUL. */
#define DNS_REVERSE_BUFSZ 73

/* The record types surat asks for (host order, as on the wire). */
enum dns_type {
	DNS_T_A = 1,
	DNS_T_PTR = 12,
	DNS_T_MX = 15,
	DNS_T_TXT = 16,
	DNS_T_AAAA = 28,
	DNS_T_TLSA = 52,
};

struct dns_mx {
	uint16_t pref;
	char host[DNS_NAME_BUFSZ]; /* canonical; "" is the root (RFC 7505 null MX) */
};

struct dns_addr {
	struct sockaddr_storage sa; /* sockaddr_in or sockaddr_in6, port 0 */
	socklen_t salen;
	int family;		     /* AF_INET or AF_INET6 */
	char text[INET6_ADDRSTRLEN]; /* "192.0.2.1", "2001:db8::1" */
};

struct dns_txt {
	char *data; /* the character-strings concatenated, bytes exact; NUL after len */
	size_t len;
};

struct dns_tlsa {
	uint8_t usage;
	uint8_t selector;
	uint8_t mtype; /* matching type */
	uint8_t *data; /* certificate association data; may be empty */
	size_t len;
};

struct dns_ptr {
	char name[DNS_NAME_BUFSZ]; /* canonical */
};

/*
 * Parse one uncompressed wire-format name at the start of p[0..len) into
 * out (DNS_NAME_BUFSZ bytes) in canonical text form. Returns 0 with
 * *used_r set to the octets the name took, or -1 when a label runs past
 * len, a compression pointer or an unknown label type appears, the name
 * passes 255 octets, or a label holds a byte outside the allowed set.
 */
int dns_rr_name(const uint8_t *p, size_t len, size_t *used_r, char *out);

/* MX rdata: preference, then a name filling the rest exactly. 0 or -1. */
int dns_rr_mx(const uint8_t *rd, size_t len, struct dns_mx *r);
/* A rdata (exactly 4 octets) into *r. 0 or -1. */
int dns_rr_a(const uint8_t *rd, size_t len, struct dns_addr *r);
/* AAAA rdata (exactly 16 octets) into *r. 0 or -1. */
int dns_rr_aaaa(const uint8_t *rd, size_t len, struct dns_addr *r);
/* PTR rdata: one name filling the rdata exactly. 0 or -1. */
int dns_rr_ptr(const uint8_t *rd, size_t len, struct dns_ptr *r);

/*
 * TXT rdata: the character-strings concatenated into r->data (RFC 7208
 * §3.3, RFC 6376 §3.6.2.2), bytes kept exact, 8-bit and NUL included;
 * empty rdata gives an empty string. Returns 0 with r->data malloc'd (the
 * caller frees it with free()), or -1 and r->data NULL when a length byte
 * runs past the rdata.
 */
int dns_rr_txt(const uint8_t *rd, size_t len, struct dns_txt *r);

/*
 * TLSA rdata (RFC 6698): usage, selector, matching type and the rest as
 * data. Only the structure is checked (at least 3 octets); whether a
 * record is usable is for the DANE code to say. Returns 0 with r->data
 * malloc'd (the caller frees it), or -1 and r->data NULL.
 */
int dns_rr_tlsa(const uint8_t *rd, size_t len, struct dns_tlsa *r);

/*
 * Bring a domain name in text to canonical form in out (DNS_NAME_BUFSZ
 * bytes): lowercase, one final dot removed. Returns 0, or -1 (out then
 * holds "") when the name is empty or the root, has an empty label or one
 * over 63 octets, is longer than DNS_NAME_MAX, or holds a byte other than
 * printable ASCII without '.' separators and '\\'. 8-bit names must be
 * converted to A-labels (IDNA) first.
 */
int dns_name_normalise(const char *name, char *out);

/* 1 if dns_name_normalise() would accept name, else 0. */
int dns_name_valid(const char *name);

/*
 * Write the reverse name of a textual IPv4 or IPv6 address into out (at
 * least outlen bytes; DNS_REVERSE_BUFSZ always suffices):
 * "192.0.2.1" -> "1.2.0.192.in-addr.arpa", IPv6 as 32 nibbles under
 * ip6.arpa. An IPv4-mapped IPv6 address (::ffff:192.0.2.1) gets the IPv4
 * name, as a dual-stack listener reports IPv4 peers that way. Returns 0,
 * or -1 when ip is not an address or out is too small.
 */
int dns_reverse_name(const char *ip, char *out, size_t outlen);

#endif
