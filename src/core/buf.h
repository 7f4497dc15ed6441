/*
 * buf — the one growable, bounded byte buffer used for all protocol data.
 *
 * A buf knows its length and an optional maximum. It always keeps a NUL
 * after the data so it can be read as a C string when it holds text. Growth
 * happens in one place (buf_grow) which checks for overflow and refuses to
 * pass the maximum: a peer can never make a buf larger than its limit.
 *
 * Every function that may reallocate says so: never keep a pointer into
 * b->data across such a call.
 *
 * SECURITY: appends are length-checked; a failed append leaves the buffer
 * unchanged.
 */
#ifndef SURAT_BUF_H
#define SURAT_BUF_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "core/util.h"

struct buf {
	char *data;	/* NUL-terminated; NULL until the first append */
	size_t len;	/* bytes of data, not counting the NUL */
	size_t cap;	/* allocated bytes */
	size_t max;	/* largest len allowed; 0 means no limit */
};

#define BUF_INIT(m) ((struct buf){NULL, 0, 0, (m)})

/* Set up an empty buffer that may hold at most max bytes (0: unbounded). */
void buf_init(struct buf *b, size_t max);
/* Release the memory; the buffer is empty and reusable afterwards. */
void buf_free(struct buf *b);
/* Empty the buffer, keeping its memory. */
void buf_reset(struct buf *b);

/* Make room for n more bytes. May reallocate. 0, or -1 past the maximum. */
int buf_grow(struct buf *b, size_t n);
/* Append n bytes. May reallocate. 0, or -1 (unchanged) past the maximum. */
int buf_append(struct buf *b, const void *p, size_t n);
/* Append a C string. May reallocate. 0 or -1. */
int buf_puts(struct buf *b, const char *s);
/* Append one byte. May reallocate. 0 or -1. */
int buf_putc(struct buf *b, char c);
/* Append code point cp (at most 0x10FFFF, no surrogate) in UTF-8. */
int buf_put_utf8(struct buf *b, uint32_t cp);
/* Append formatted text. May reallocate. 0, or -1 (unchanged) past the maximum. */
int buf_printf(struct buf *b, const char *fmt, ...) PRINTF_LIKE(2, 3);
int buf_vprintf(struct buf *b, const char *fmt, va_list ap) PRINTF_LIKE(2, 0);

/* Drop the first n bytes (all if n >= len). */
void buf_consume(struct buf *b, size_t n);
/* Cut the data to n bytes (no-op if n >= len). */
void buf_truncate(struct buf *b, size_t n);
/* The data as a C string; "" for a buffer never written. */
const char *buf_str(const struct buf *b);
/* Hand over the malloc'd data (NUL-terminated) and leave b empty; caller frees. */
char *buf_steal(struct buf *b);

#endif
