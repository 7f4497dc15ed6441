/*
 * log — one call family with levels. One event, one line:
 *   2026-11-22T09:30:00.123Z info sid=3f2a... key=value text
 * to stderr, or to syslog(3) when log_init() is asked to.
 *
 * SECURITY: text a peer supplied must go through log_escape() first so a
 * log line can never be split or carry terminal control bytes. Never log
 * secrets.
 */
#ifndef SURAT_LOG_H
#define SURAT_LOG_H

#include <stddef.h>

#include "core/util.h"

struct buf;

enum log_level { LL_DEBUG, LL_INFO, LL_WARN, LL_ERROR, LL_FATAL };

/* Set the threshold and the destination (0: stderr, 1: syslog). */
void log_init(enum log_level level, int use_syslog);
/* Parse "debug", "info", "warn", "error"; 0 or -1. */
int log_level_parse(const char *s, enum log_level *r);
/* Nonzero if a message at level would be written. */
int log_enabled(enum log_level level);

/* Write one line. sid is the session id or NULL. */
void log_msg(enum log_level level, const char *sid, const char *fmt, ...) PRINTF_LIKE(3, 4);

#define log_debug(...) log_msg(LL_DEBUG, NULL, __VA_ARGS__)
#define log_info(...) log_msg(LL_INFO, NULL, __VA_ARGS__)
#define log_warn(...) log_msg(LL_WARN, NULL, __VA_ARGS__)
#define log_error(...) log_msg(LL_ERROR, NULL, __VA_ARGS__)

/*
 * Append s[0..n) to out, printable ASCII as is, '"' '\\' and every other byte
 * escaped as \xNN, cut to about max bytes with "..." appended. UTF-8 is
 * escaped too: logs stay greppable ASCII. May reallocate out.
 */
void log_escape(struct buf *out, const char *s, size_t n, size_t max);
/*
 * The same, escaping the bytes in also too: a space for a value written
 * without quotes, and '<', '>', ',' inside a <a>,<b> list, so that the line
 * splits one way.
 */
void log_escape_also(struct buf *out, const char *s, size_t n, size_t max, const char *also);

/*
 * Append s to out for a message on an admin's terminal: valid, printable
 * UTF-8 as is (münchen.example stays readable), while a byte that is not
 * UTF-8 or a C0 control or DEL is written \xNN, and a C1 control, a bidi
 * control (U+061C, U+200E, U+200F, U+202A..U+202E, U+2066..U+2069) or a
 * line or paragraph separator (U+2028, U+2029) <U+XXXX>: raw, they garble
 * or reorder the line they are on. What it writes it leaves as it is, so
 * text escaped once may pass again. May reallocate out.
 */
void log_escape_text(struct buf *out, const char *s);

/*
 * Escape into a caller's fixed array (the common case of one field in a log
 * line); returns dst.
 */
const char *log_esc(char *dst, size_t dstlen, const char *s);
/* The same, escaping the bytes in also too (log_escape_also()). */
const char *log_esc_also(char *dst, size_t dstlen, const char *s, const char *also);

#endif
