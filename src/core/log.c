/*
 * log — see log.h. Each line is formatted in a local buffer and written
 * with one write(2), so lines from the worker threads never interleave.
 *
 * SECURITY: lines are cut at LOG_LINE_HARD_MAX; callers escape peer text.
 */
#include "core/log.h"
#include "core/buf.h"
#include "core/util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <unistr.h>

#define LOG_LINE_MAX 4096		/* on the stack; longer lines go to the heap */
#define LOG_LINE_HARD_MAX (1 << 20)	/* and are cut there */

static enum log_level log_threshold = LL_INFO;
static int log_syslog;

static const char *const level_names[] = {"debug", "info", "warn", "error", "fatal"};

void
log_init(enum log_level level, int use_syslog)
{
	log_threshold = level;
	if (use_syslog && !log_syslog)
		openlog("surat", LOG_PID | LOG_NDELAY, LOG_MAIL);
	log_syslog = use_syslog;
}

int
log_level_parse(const char *s, enum log_level *r)
{
	for (size_t i = 0; i < ARRAY_LEN(level_names) - 1; i++) {
		if (strcasecmp(s, level_names[i]) == 0) {
			*r = (enum log_level)i;
			return 0;
		}
	}
	if (strcasecmp(s, "warning") == 0) {
		*r = LL_WARN;
		return 0;
	}
	return -1;
}

int
log_enabled(enum log_level level)
{
	return level >= log_threshold;
}

void
log_msg(enum log_level level, const char *sid, const char *fmt, ...)
{
	char line[LOG_LINE_MAX];
	size_t off = 0;
	va_list ap;
	int n;

	if (level < log_threshold)
		return;
	if (!log_syslog) {
		struct timespec ts;
		struct tm tm;
		clock_gettime(CLOCK_REALTIME, &ts);
		gmtime_r(&ts.tv_sec, &tm);
		off = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
		n = snprintf(line + off, sizeof(line) - off, ".%03ldZ %s ", ts.tv_nsec / 1000000,
			     level_names[level]);
		off += (size_t)n;
	}
	if (sid) {
		n = snprintf(line + off, sizeof(line) - off, "sid=%s ", sid);
		if (n > 0)
			off += (size_t)n < sizeof(line) - off ? (size_t)n : sizeof(line) - off - 1;
	}
	va_start(ap, fmt);
	n = vsnprintf(line + off, sizeof(line) - off, fmt, ap);
	va_end(ap);
	/*
	 * A longer line (an access line with many recipients) is written whole
	 * from the heap, cut at LOG_LINE_HARD_MAX; without memory, at
	 * LOG_LINE_MAX.
	 */
	char *p = line, *big = NULL;
	size_t cap = sizeof(line);
	if (n > 0 && (size_t)n >= sizeof(line) - off) {
		size_t want = (size_t)n < LOG_LINE_HARD_MAX ? (size_t)n : LOG_LINE_HARD_MAX;
		if ((big = malloc(off + want + 2)) != NULL) {
			memcpy(big, line, off);
			va_start(ap, fmt);
			(void)vsnprintf(big + off, want + 1, fmt, ap);
			va_end(ap);
			p = big;
			cap = off + want + 2;
		}
	}
	if (n > 0)
		off += (size_t)n < cap - off ? (size_t)n : cap - off - 1;
	if (log_syslog) {
		static const int prio[] = {LOG_DEBUG, LOG_INFO, LOG_WARNING, LOG_ERR, LOG_CRIT};
		syslog(prio[level], "%s", p);
		free(big);
		return;
	}
	if (off > cap - 2)
		off = cap - 2;
	p[off++] = '\n';
	(void)!write(2, p, off);
	free(big);
}

static int
log_plain(unsigned char c)
{
	return c >= 0x20 && c < 0x7f && c != '"' && c != '\\';
}

void
log_escape_also(struct buf *out, const char *s, size_t n, size_t max, const char *also)
{
	size_t start = out->len;

	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (out->len - start >= max) {
			buf_puts(out, "...");
			return;
		}
		if (log_plain(c) && (also == NULL || strchr(also, c) == NULL))
			buf_putc(out, (char)c);
		else
			buf_printf(out, "\\x%02x", c);
	}
}

void
log_escape(struct buf *out, const char *s, size_t n, size_t max)
{
	log_escape_also(out, s, n, max, NULL);
}

const char *
log_esc_also(char *dst, size_t dstlen, const char *s, const char *also)
{
	size_t o = 0;

	if (dstlen == 0)
		return dst;
	for (; s && *s; s++) {
		unsigned char c = (unsigned char)*s;
		size_t need = log_plain(c) && (also == NULL || strchr(also, c) == NULL) ? 1 : 4;
		if (o + need + 4 > dstlen) {
			if (o + 4 <= dstlen) {
				memcpy(dst + o, "...", 3);
				o += 3;
			}
			break;
		}
		if (need == 1)
			dst[o++] = (char)c;
		else
			o += (size_t)snprintf(dst + o, dstlen - o, "\\x%02x", c);
	}
	dst[o] = '\0';
	return dst;
}

const char *
log_esc(char *dst, size_t dstlen, const char *s)
{
	return log_esc_also(dst, dstlen, s, NULL);
}

void
log_escape_text(struct buf *out, const char *s)
{
	const uint8_t *p = (const uint8_t *)s;
	size_t n = strlen(s);

	while (n > 0) {
		ucs4_t cp;
		int len = u8_mbtoucr(&cp, p, n);
		if (len <= 0 || cp < 0x20 || cp == 0x7f) {
			buf_printf(out, "\\x%02x", *p);
			len = 1;
		} else if (util_cp_c1_or_bidi(cp) || cp == 0x2028 || cp == 0x2029) {
			buf_printf(out, "<U+%04X>", (unsigned)cp);
		} else {
			buf_append(out, p, (size_t)len);
		}
		p += len;
		n -= (size_t)len;
	}
}
