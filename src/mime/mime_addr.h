/*
 * mime_addr — the header lookups the SMTP server needs on a message it is
 * receiving: one header's unfolded value, and the addr-specs of From:.
 *
 * SECURITY: the message is untrusted; From: is parsed with the full RFC 5322
 * address grammar (quoted display names, comments, groups), so a display
 * name such as "boss@bank.example" <me@evil.example> yields only the real
 * address, and a header that does not parse is reported as such.
 */
#ifndef SURAT_MIME_ADDR_H
#define SURAT_MIME_ADDR_H

#include <stddef.h>

struct buf;

struct mime_addr_list {
	char **v;	/* "local@domain", domain lowercased */
	size_t n;
};

/*
 * Append the unfolded value of the first header called name (case-
 * insensitive) in msg[0..len) to out. 1 found, 0 not found.
 */
int mime_addr_header(const char *msg, size_t len, const char *name, struct buf *out);
/*
 * The same for the next header called name at or after *pos (0 to start):
 * 1 found, its value appended and *pos moved past it; 0 no more.
 */
int mime_addr_header_next(const char *msg, size_t len, size_t *pos, const char *name,
			  struct buf *out);
/* The header section of msg[0..len): its length up to the empty line (0: none). */
size_t mime_addr_header_len(const char *msg, size_t len);
/*
 * mime_addr_header_next() in a header section msg[0..hdr_len) already
 * delimited by mime_addr_header_len(): a walk over every field of a name
 * stays linear in the header, whatever their number.
 */
int mime_addr_field_next(const char *msg, size_t hdr_len, size_t *pos, const char *name,
			 struct buf *out);

/*
 * The addresses of every From: header in msg. 0 (list filled, possibly
 * empty); -1 when a From: header does not parse; -2 when one parses but
 * holds a comment or quoted string that other readers may take apart
 * differently (mime_addr.c, tokenize), so that what they show as the
 * sender need not be what was parsed here. Free with mime_addr_list_free.
 */
int mime_addr_from(const char *msg, size_t len, struct mime_addr_list *r);
/* The same for every header called name (Sender, Resent-From, ...). */
int mime_addr_field(const char *msg, size_t len, const char *name, struct mime_addr_list *r);
void mime_addr_list_free(struct mime_addr_list *l);

#endif
