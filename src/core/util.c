/*
 * util — see util.h. Allocation failure aborts: a mail server that cannot
 * allocate a few bytes cannot make progress safely, and checking every
 * call site would only multiply the error paths nobody tests.
 *
 * SECURITY: parse helpers never read past the given length.
 */
#include "core/util.h"
#include "core/log.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

static _Noreturn void
oom(size_t n)
{
	char msg[96];
	int len = snprintf(msg, sizeof(msg), "fatal: out of memory allocating %zu bytes\n", n);
	if (len > 0)
		(void)!write(2, msg, (size_t)len);
	abort();
}

void *
xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (p == NULL)
		oom(n);
	return p;
}

void *
xcalloc(size_t nmemb, size_t size)
{
	void *p = calloc(nmemb ? nmemb : 1, size ? size : 1);
	if (p == NULL)
		oom(nmemb * size);
	return p;
}

void *
xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);
	if (q == NULL)
		oom(n);
	return q;
}

char *
xstrdup(const char *s)
{
	return xstrndup(s, strlen(s));
}

char *
xstrndup(const char *s, size_t n)
{
	size_t len = strnlen(s, n);
	char *p = xmalloc(len + 1);
	memcpy(p, s, len);
	p[len] = '\0';
	return p;
}

char *
xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *p;

	va_start(ap, fmt);
	int n = vasprintf(&p, fmt, ap);
	va_end(ap);
	if (n < 0)
		oom(0);
	return p;
}

_Noreturn void
panic_at(const char *file, int line, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_msg(LL_FATAL, NULL, "panic at %s:%d: %s", file, line, msg);
	abort();
}

int
xsnprintf(char *buf, size_t n, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	int r = vsnprintf(buf, n, fmt, ap);
	va_end(ap);
	if (r < 0 || (size_t)r >= n)
		return -1;
	return r;
}

int
util_parse_u64(const char *s, size_t n, uint64_t *r)
{
	uint64_t v = 0;

	if (n == 0)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		unsigned d = (unsigned)(s[i] - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	*r = v;
	return 0;
}

int64_t
util_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t
util_mono_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t
util_mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
random_fill(void *out, size_t n)
{
	unsigned char *p = out;
	while (n > 0) {
		ssize_t r = getrandom(p, n, 0);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			PANIC("getrandom failed: %s", strerror(errno));
		}
		p += r;
		n -= (size_t)r;
	}
}

/*
 * Small requests (session ids, nonces) come from a per-thread block of
 * getrandom(2) output: one system call per 256 octets, not one per
 * connection. Octets are handed out once and wiped as they go.
 * surat never forks, so no two processes share a block.
 */
#define RANDOM_BLOCK 256

void
util_random(void *out, size_t n)
{
	static __thread unsigned char block[RANDOM_BLOCK];
	static __thread size_t left;

	if (n > RANDOM_BLOCK / 4) {
		random_fill(out, n);
		return;
	}
	if (left < n) {
		random_fill(block, sizeof(block));
		left = sizeof(block);
	}
	unsigned char *src = block + sizeof(block) - left;
	memcpy(out, src, n);
	memset(src, 0, n);
	left -= n;
}

int
util_cp_c1_or_bidi(uint32_t cp)
{
	return (cp >= 0x80 && cp <= 0x9f) || cp == 0x61c || cp == 0x200e || cp == 0x200f ||
	       (cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069);
}

int
util_has_8bit(const void *p, size_t n)
{
	const unsigned char *s = p;
	for (size_t i = 0; i < n; i++)
		if (s[i] >= 0x80)
			return 1;
	return 0;
}

void
util_random_hex(char *out, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char b[64];

	ASSERT(n <= sizeof(b));
	util_random(b, n);
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = hex[b[i] >> 4];
		out[2 * i + 1] = hex[b[i] & 15];
	}
	out[2 * n] = '\0';
}

int
util_fsync_dir(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	int r = fsync(fd);
	int e = errno;
	close(fd);
	errno = e;
	return r;
}

/* mkdir(2) of one level; exact: the mode whatever the umask, if made here. */
static int
mkdir_level(const char *path, mode_t mode, int exact)
{
	if (mkdir(path, mode) == 0)
		return exact ? chmod(path, mode) : 0;
	return errno == EEXIST ? 0 : -1;
}

static int
mkdir_p(const char *path, mode_t mode, int exact)
{
	char tmp[4096];

	/* Usually only the last level is missing: one call, not one per component. */
	if (mkdir_level(path, mode, exact) == 0)
		return 0;
	if (errno != ENOENT)
		return -1;
	if (xsnprintf(tmp, sizeof(tmp), "%s", path) < 0) {
		errno = ENAMETOOLONG;
		return -1;
	}
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir_level(tmp, mode, exact) < 0)
			return -1;
		*p = '/';
	}
	return mkdir_level(tmp, mode, exact);
}

int
util_mkdir_p(const char *path, mode_t mode)
{
	return mkdir_p(path, mode, 0);
}

int
util_mkdir_p_exact(const char *path, mode_t mode)
{
	return mkdir_p(path, mode, 1);
}

int
util_write_all(int fd, const void *buf, size_t n)
{
	const char *p = buf;
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

int
util_pwritev_all(int fd, struct iovec *iov, int n, off_t off)
{
	while (n > 0) {
		ssize_t w = pwritev(fd, iov, n, off);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		off += w;
		/* Step past what was written; iov is consumed in place. */
		while (n > 0 && (size_t)w >= iov->iov_len) {
			w -= (ssize_t)iov->iov_len;
			iov++;
			n--;
		}
		if (n > 0) {
			iov->iov_base = (char *)iov->iov_base + w;
			iov->iov_len -= (size_t)w;
		}
	}
	return 0;
}

ssize_t
util_read_all(int fd, void *buf, size_t n)
{
	char *p = buf;
	size_t got = 0;
	while (got < n) {
		ssize_t r = read(fd, p + got, n - got);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (r == 0)
			break;
		got += (size_t)r;
	}
	return (ssize_t)got;
}

char *
util_read_file(const char *path, size_t max, size_t *len_r)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	struct stat st;
	if (fstat(fd, &st) < 0) {
		int e = errno;
		close(fd);
		errno = e;
		return NULL;
	}
	if ((uint64_t)st.st_size > max) {
		close(fd);
		errno = EFBIG;
		return NULL;
	}
	size_t cap = (size_t)st.st_size + 1, len = 0;
	char *p = xmalloc(cap);
	for (;;) {
		if (len + 1 >= cap) {
			if (cap > max) {
				free(p);
				close(fd);
				errno = EFBIG;
				return NULL;
			}
			cap *= 2;
			p = xrealloc(p, cap);
		}
		ssize_t r = read(fd, p + len, cap - len - 1);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			int e = errno;
			free(p);
			close(fd);
			errno = e;
			return NULL;
		}
		if (r == 0)
			break;
		len += (size_t)r;
	}
	close(fd);
	p[len] = '\0';
	if (len_r)
		*len_r = len;
	return p;
}

/*
 * CRC-32 (IEEE 802.3, as zlib's crc32()), eight bytes per step ("slicing by
 * 8"): table k gives the CRC of a byte followed by k zero bytes, so eight
 * lookups fold in a whole word. About four times the speed of one table
 * lookup per byte; the spool checksums every message it writes and reads.
 */
static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void
crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
		crc_table[0][i] = c;
	}
	for (int t = 1; t < 8; t++)
		for (int i = 0; i < 256; i++)
			crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^
					  crc_table[0][crc_table[t - 1][i] & 0xff];
}

uint32_t
util_crc32(uint32_t crc, const void *p, size_t n)
{
	const unsigned char *b = p;

	pthread_once(&crc_once, crc_init);
	crc = ~crc;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	for (; n >= 8; n -= 8, b += 8) {
		uint32_t lo, hi;
		memcpy(&lo, b, 4);
		memcpy(&hi, b + 4, 4);
		lo ^= crc;
		crc = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^
		      crc_table[5][(lo >> 16) & 0xff] ^ crc_table[4][lo >> 24] ^
		      crc_table[3][hi & 0xff] ^ crc_table[2][(hi >> 8) & 0xff] ^
		      crc_table[1][(hi >> 16) & 0xff] ^ crc_table[0][hi >> 24];
	}
#endif
	for (; n > 0; n--, b++)
		crc = crc_table[0][(crc ^ *b) & 0xff] ^ (crc >> 8);
	return ~crc;
}

/* FNV's constants in hex: a dropped digit in a decimal one goes unseen. */
#define FNV32_BASIS 0x811c9dc5u
#define FNV32_PRIME 0x01000193u
#define FNV64_BASIS 0xcbf29ce484222325ULL
#define FNV64_PRIME 0x00000100000001b3ULL

uint32_t
util_hash32(uint32_t seed, const void *p, size_t n)
{
	const unsigned char *b = p;
	uint32_t h = FNV32_BASIS ^ seed;

	for (; n > 0; n--, b++)
		h = (h ^ *b) * FNV32_PRIME;
	return h;
}

uint32_t
util_hash32_lower(uint32_t seed, const void *p, size_t n)
{
	const unsigned char *b = p;
	uint32_t h = FNV32_BASIS ^ seed;

	/* Not tolower(): the locale must not decide which bucket a key is in. */
	for (; n > 0; n--, b++)
		h = (h ^ (uint32_t)(*b >= 'A' && *b <= 'Z' ? *b + 32 : *b)) * FNV32_PRIME;
	return h;
}

uint64_t
util_hash64(uint64_t seed, const void *p, size_t n)
{
	const unsigned char *b = p;
	uint64_t h = FNV64_BASIS ^ seed;

	for (; n > 0; n--, b++)
		h = (h ^ *b) * FNV64_PRIME;
	return h;
}

char *
util_lower(char *s)
{
	for (char *p = s; *p; p++)
		*p = (char)tolower((unsigned char)*p);
	return s;
}

char *
util_trim(char *s)
{
	while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n')
		s++;
	size_t n = strlen(s);
	while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
		s[--n] = '\0';
	return s;
}

void
util_wipe(void *p, size_t n)
{
	explicit_bzero(p, n);
}

int
util_rename_new(const char *from, const char *to)
{
	if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0)
		return 0;
	if (errno != EINVAL && errno != ENOSYS)
		return -1;
	/* No RENAME_NOREPLACE on this file system: check, then rename (racy). */
	struct stat st;
	if (lstat(to, &st) == 0) {
		errno = EEXIST;
		return -1;
	}
	return rename(from, to);
}

void
util_addr_text(const struct sockaddr *sa, char *out, size_t n)
{
	if (sa->sa_family == AF_INET) {
		inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, out,
			  (socklen_t)n);
	} else if (sa->sa_family == AF_INET6) {
		const struct in6_addr *a6 = &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
		if (IN6_IS_ADDR_V4MAPPED(a6))
			inet_ntop(AF_INET, &a6->s6_addr[12], out, (socklen_t)n);
		else
			inet_ntop(AF_INET6, a6, out, (socklen_t)n);
	} else {
		xsnprintf(out, n, "unknown");
	}
}

void
util_client_key(const struct sockaddr *sa, unsigned v6_prefix, char *out, size_t n)
{
	const struct sockaddr_in6 *s6 = (const void *)sa;

	if (sa->sa_family != AF_INET6 || IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
		util_addr_text(sa, out, n);
		return;
	}
	if (v6_prefix < 1 || v6_prefix > 128)
		v6_prefix = 128;
	struct sockaddr_in6 net = *s6;
	for (unsigned bit = v6_prefix; bit < 128; bit++)
		net.sin6_addr.s6_addr[bit / 8] &= (unsigned char)~(0x80u >> (bit % 8));
	char text[INET6_ADDRSTRLEN];
	util_addr_text((const struct sockaddr *)&net, text, sizeof(text));
	xsnprintf(out, n, "%s/%u", text, v6_prefix);
}

/* Clear the bits of a (alen bytes) past the first prefix. */
static void
util_net_mask(unsigned char *a, size_t alen, unsigned prefix)
{
	for (unsigned bit = prefix; bit < alen * 8; bit++)
		a[bit / 8] &= (unsigned char)~(0x80u >> (bit % 8));
}

int
util_net_parse(const char *s, struct util_net *n)
{
	const char *slash = strchr(s, '/');
	size_t alen = slash ? (size_t)(slash - s) : strlen(s);
	char addr[INET6_ADDRSTRLEN];
	uint64_t prefix;

	memset(n, 0, sizeof(*n));
	if (alen == 0 || alen >= sizeof(addr))
		return -1;
	memcpy(addr, s, alen);
	addr[alen] = '\0';
	if (inet_pton(AF_INET, addr, n->addr) == 1)
		n->family = AF_INET;
	else if (inet_pton(AF_INET6, addr, n->addr) == 1)
		n->family = AF_INET6;
	else
		return -1;
	unsigned bits = n->family == AF_INET ? 32 : 128;
	if (slash == NULL)
		prefix = bits;
	else if (util_parse_u64(slash + 1, strlen(slash + 1), &prefix) < 0 || prefix > bits)
		return -1;
	n->prefix = (unsigned)prefix;
	if (n->family == AF_INET6 && IN6_IS_ADDR_V4MAPPED((struct in6_addr *)n->addr) &&
	    n->prefix >= 96) {
		memmove(n->addr, n->addr + 12, 4);
		memset(n->addr + 4, 0, 12);
		n->family = AF_INET;
		n->prefix -= 96;
	}
	util_net_mask(n->addr, sizeof(n->addr), n->prefix);
	return 0;
}

int
util_net_match(const struct util_net *n, const char *ip)
{
	unsigned char a[16] = {0};
	int family = strchr(ip, ':') ? AF_INET6 : AF_INET;

	if (family != n->family || inet_pton(family, ip, a) != 1)
		return 0;
	util_net_mask(a, sizeof(a), n->prefix);
	return memcmp(a, n->addr, sizeof(a)) == 0;
}

int
util_space_low(const char *path, int64_t need)
{
	struct statvfs sv;

	/* Unknown is not low: the write itself still fails cleanly. */
	if (need <= 0 || statvfs(path, &sv) < 0)
		return 0;
	return (uint64_t)sv.f_bavail * sv.f_frsize < (uint64_t)need;
}
