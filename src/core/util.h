/*
 * util — allocation that aborts on failure, panics for impossible states,
 * overflow-safe number parsing, time, files and small string helpers.
 *
 * SECURITY: the parse helpers take untrusted bytes and never read past the
 * length given; panics are for internal bugs only, never for peer input.
 */
#ifndef SURAT_UTIL_H
#define SURAT_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define PRINTF_LIKE(f, a) __attribute__((format(printf, f, a)))

/* Allocation: never returns NULL; aborts the process on exhaustion. */
void *xmalloc(size_t n);
void *xcalloc(size_t nmemb, size_t size);
/* May move the block; the old pointer is invalid afterwards. */
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
/* Returns a malloc'd formatted string; the caller frees it. */
char *xasprintf(const char *fmt, ...) PRINTF_LIKE(1, 2);

/* An impossible internal state: logs file and line, then aborts. */
_Noreturn void panic_at(const char *file, int line, const char *fmt, ...) PRINTF_LIKE(3, 4);
#define PANIC(...) panic_at(__FILE__, __LINE__, __VA_ARGS__)
#define ASSERT(x)                                                                                  \
	do {                                                                                       \
		if (!(x))                                                                          \
			PANIC("assertion failed: %s", #x);                                         \
	} while (0)

/*
 * snprintf that treats truncation as an error: returns the length written,
 * or -1 when the result did not fit (buf then holds a truncated string).
 */
int xsnprintf(char *buf, size_t n, const char *fmt, ...) PRINTF_LIKE(3, 4);

/* Parse decimal digits s[0..n) into *r; -1 on empty, non-digit or overflow. */
int util_parse_u64(const char *s, size_t n, uint64_t *r);

/* Wall clock in milliseconds and seconds; monotonic milli- and microseconds. */
int64_t util_now_ms(void);
int64_t util_mono_ms(void);
int64_t util_mono_us(void);

/* Fill out with n random bytes from the kernel; aborts if that is impossible. */
void util_random(void *out, size_t n);
/*
 * Whether code point cp is a C1 control (U+0080..U+009F) or one of Unicode's
 * Bidi_Control characters (U+061C, U+200E, U+200F, U+202A..U+202E,
 * U+2066..U+2069): invisible, or reordering what follows on a terminal and
 * in a reader, so that a name shows as another.
 */
int util_cp_c1_or_bidi(uint32_t cp);
/* Whether p[0..n) holds an octet >= 0x80 (anything not US-ASCII). */
int util_has_8bit(const void *p, size_t n);
/* Write 2*n lowercase hex digits of n random bytes and a NUL into out. */
void util_random_hex(char *out, size_t n);

/* fsync the directory that is path. Returns 0, or -1 with errno set. */
int util_fsync_dir(const char *path);
/* mkdir -p with mode; 0 or -1 with errno. */
int util_mkdir_p(const char *path, mode_t mode);
/* util_mkdir_p(), each directory it makes given mode whatever the umask. */
int util_mkdir_p_exact(const char *path, mode_t mode);
/*
 * 1 if path's filesystem has less than need bytes free for us (statvfs
 * f_bavail: the root reserve does not count), else 0 (also when need <= 0
 * or statvfs fails). No disk I/O.
 */
int util_space_low(const char *path, int64_t need);
/* Write all of buf to fd, retrying on EINTR/short writes; 0 or -1. */
int util_write_all(int fd, const void *buf, size_t n);
/* pwritev(2) all of iov[0..n) at off, retrying on EINTR/short writes (iov is
 * consumed); 0 or -1. */
int util_pwritev_all(int fd, struct iovec *iov, int n, off_t off);
/* Read up to n bytes from fd, retrying on EINTR/short reads; the count (less at EOF) or -1. */
ssize_t util_read_all(int fd, void *buf, size_t n);
/* Read a whole file into a malloc'd buffer (NUL-terminated); NULL + errno. */
char *util_read_file(const char *path, size_t max, size_t *len_r);

/* CRC-32 (IEEE) of n bytes, continuing from crc (start with 0). */
uint32_t util_crc32(uint32_t crc, const void *p, size_t n);

/*
 * FNV-1a of n bytes, for in-memory hash tables only (never persist it): the
 * seed is XORed into the offset basis so a table keyed by peer input can
 * draw one at random; seed 0 is plain FNV-1a. The _lower form hashes ASCII
 * letters as lowercase, for keys compared with strcasecmp(). The 64-bit
 * form is for tables whose random seed and mixing want the wider state.
 */
uint32_t util_hash32(uint32_t seed, const void *p, size_t n);
uint32_t util_hash32_lower(uint32_t seed, const void *p, size_t n);
uint64_t util_hash64(uint64_t seed, const void *p, size_t n);

/* ASCII lowercase in place; returns s. */
char *util_lower(char *s);
/* Trim ASCII whitespace at both ends in place; returns the start. */
char *util_trim(char *s);

/* Wipe a secret so the compiler cannot elide it. */
void util_wipe(void *p, size_t n);

/*
 * rename(2) that never replaces an existing name (EEXIST then). Where the
 * file system lacks RENAME_NOREPLACE, a check first: callers pick names no
 * one else makes at the same moment.
 */
int util_rename_new(const char *from, const char *to);

struct sockaddr;
/*
 * An address as text: IPv4, and IPv4-mapped IPv6, dotted; other IPv6 as
 * inet_ntop writes it (one spelling per address, so texts compare as the
 * addresses do); "unknown" for other families. n: INET6_ADDRSTRLEN at least.
 */
void util_addr_text(const struct sockaddr *sa, char *out, size_t n);
/*
 * The name a client's connections are counted under (per-IP limits): an
 * IPv4 address, or an IPv4-mapped IPv6 one, as itself; any other IPv6
 * address cut to its first v6_prefix bits (1..128) and written "net/len",
 * since one site holds a whole prefix (a /64 at least) and could otherwise
 * take a new address for each connection. n: UTIL_CLIENT_KEY_MAX.
 */
#define UTIL_CLIENT_KEY_MAX 64
void util_client_key(const struct sockaddr *sa, unsigned v6_prefix, char *out, size_t n);

/* A network: an address and how many of its leading bits count. */
struct util_net {
	int family; /* AF_INET or AF_INET6 */
	unsigned char addr[16];
	unsigned prefix;
};
/*
 * Parse "addr/len" or a bare "addr" (all its bits) into *n: IPv4 or IPv6,
 * an IPv4-mapped IPv6 network taken as the IPv4 one (util_addr_text writes
 * those addresses dotted). Bits past the prefix are ignored. 0, or -1 if s
 * is not one.
 */
int util_net_parse(const char *s, struct util_net *n);
/* Whether the address ip (as util_addr_text writes it) is in n. */
int util_net_match(const struct util_net *n, const char *ip);

#endif
