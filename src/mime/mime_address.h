/*
 * mime_address — RFC 5322 §3.4 address lists as IMAP's ENVELOPE needs them
 * (RFC 3501 §7.4.2): display names (phrase or quoted string, or the last
 * comment of a bare addr-spec), the obsolete source route (RFC 5322 §4.4),
 * local part and domain, and groups. A group is a start entry (mailbox =
 * group name, host NULL) followed by its members and an end entry (all
 * fields NULL), exactly the RFC 3501 group encoding.
 *
 * Broken input is repaired, never rejected: the result is what Dovecot
 * produces for the same bytes (missing parts become MISSING_MAILBOX,
 * MISSING_DOMAIN, SYNTAX_ERROR or INVALID_ROUTE when fill_missing is set).
 * Display names are returned raw; decode RFC 2047 words with
 * mime_decode_words() for display.
 *
 * SECURITY: input is untrusted; at most MIME_ADDRESS_MAX entries are built.
 */
#ifndef SURAT_MIME_ADDRESS_H
#define SURAT_MIME_ADDRESS_H

#include <stddef.h>

#define MIME_ADDRESS_MAX 10000

struct mime_address {
	struct mime_address *next;
	char *name;    /* display name or NULL */
	char *route;   /* "@a,@b" or NULL */
	char *mailbox; /* local part; group name for a group start; NULL for a group end */
	char *host;    /* domain; NULL for a group start or end */
	int invalid;   /* the syntax was broken and repaired */
};

/*
 * Parse the address-list in s[0..len) (an unfolded or raw header value).
 * fill_missing: use the ENVELOPE placeholders above for missing parts, else
 * "". Returns the list, or NULL when there is no address; the caller frees
 * it with mime_address_free().
 */
struct mime_address *mime_address_parse(const char *s, size_t len, int fill_missing);

/* Free a list from mime_address_parse(); sets *list to NULL. */
void mime_address_free(struct mime_address **list);

#endif
