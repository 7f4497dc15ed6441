/*
 * queue_dsn — see queue_dsn.h. The original message is attached whole
 * (message/rfc822) when RET=FULL or unspecified and it is under 256 KiB,
 * in a failure or delay notice; otherwise only its header
 * (text/rfc822-headers). A notice about an SMTPUTF8 message uses RFC
 * 6533's types instead: message/global-delivery-status with utf-8
 * addresses, message/global or message/global-headers.
 *
 * SECURITY: peer text is sanitised by dsn_clean() before it is written.
 */
#include "queue/queue_dsn.h"
#include "core/buf.h"
#include "core/util.h"

#include <string.h>
#include <time.h>

#define DSN_FULL_MAX (256 * 1024)

const char *
dsn_kind_name(enum dsn_kind kind)
{
	return kind == DSN_FAILED ? "bounce" : kind == DSN_DELAYED ? "delay" : "delivered";
}

int
dsn_wanted(const struct spool_rcpt *rc, enum dsn_kind kind)
{
	if (rc->notify & NOTIFY_NEVER)
		return 0;
	if (kind == DSN_DELIVERED)
		return (rc->notify & NOTIFY_SUCCESS) != 0;	/* never by default */
	if (rc->notify == 0)
		return 1;	/* default: FAILURE and DELAY */
	return kind == DSN_FAILED ? (rc->notify & NOTIFY_FAILURE) != 0
				  : (rc->notify & NOTIFY_DELAY) != 0;
}

/* The recipient state a notice of this kind reports. */
static enum rcpt_status
dsn_status(enum dsn_kind kind)
{
	return kind == DSN_FAILED ? RCPT_FAILED : kind == DSN_DELAYED ? RCPT_DEFERRED : RCPT_DELIVERED;
}

int
dsn_needed(const struct spool_msg *msg, enum dsn_kind kind)
{
	if (msg->mail_from == NULL || msg->mail_from[0] == '\0' || msg->is_notice)
		return 0;
	for (size_t i = 0; i < msg->nrcpts; i++) {
		const struct spool_rcpt *rc = &msg->rcpts[i];
		if (rc->status == dsn_status(kind) && dsn_wanted(rc, kind))
			return 1;
	}
	return 0;
}

static int
has_8bit(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] >= 0x80)
			return 1;
	return 0;
}

/* The length of the well-formed UTF-8 sequence (2 to 4 octets) at s, else 0. */
static size_t
utf8_seq(const unsigned char *s, size_t n)
{
	size_t k = s[0] >= 0xf0 ? 4 : s[0] >= 0xe0 ? 3 : s[0] >= 0xc2 ? 2 : 0;
	if (k == 0 || s[0] > 0xf4 || k > n)
		return 0;
	for (size_t i = 1; i < k; i++)
		if ((s[i] & 0xc0) != 0x80)
			return 0;
	/* No overlong forms, no surrogates, nothing past U+10FFFF (RFC 3629 4). */
	if ((s[0] == 0xe0 && s[1] < 0xa0) || (s[0] == 0xed && s[1] > 0x9f) ||
	    (s[0] == 0xf0 && s[1] < 0x90) || (s[0] == 0xf4 && s[1] > 0x8f))
		return 0;
	return k;
}

/*
 * The first n octets of s (at most), cleaned: controls and, unless u8
 * (an internationalised notice, RFC 6533), every non-ASCII octet become a
 * space; with u8, well-formed UTF-8 stays.
 */
static void
dsn_clean_n(struct buf *out, const char *s, size_t n, int u8)
{
	size_t len = s ? strnlen(s, n) : 0;

	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		size_t k = u8 && c >= 0x80 ? utf8_seq((const unsigned char *)s + i, len - i) : 0;
		if (k > 0) {
			buf_append(out, s + i, k);
			i += k - 1;
		} else {
			buf_putc(out, (c >= 0x20 && c < 0x7f) ? (char)c : ' ');
		}
	}
}

static void
dsn_clean(struct buf *out, const char *s, int u8)
{
	dsn_clean_n(out, s, (size_t)-1, u8);
}

static void
rfc2822_date(char *out, size_t n, int64_t t)
{
	time_t tt = (time_t)t;
	struct tm tm;
	gmtime_r(&tt, &tm);
	strftime(out, n, "%a, %d %b %Y %H:%M:%S +0000", &tm);
}

/* The enhanced status code at the start of reply text, if any. */
static void
status_code(const char *text, enum dsn_kind kind, char *out, size_t n)
{
	const char *p = text ? text : "";
	/* Skip a 3-digit reply code. */
	if (strlen(p) > 4 && p[0] >= '2' && p[0] <= '5' && p[3] == ' ')
		p += 4;
	if ((p[0] == '4' || p[0] == '5') && p[1] == '.') {
		size_t i = 2;
		int dots = 1;
		while (p[i] && (p[i] == '.' || (p[i] >= '0' && p[i] <= '9')) && i < 12) {
			if (p[i] == '.')
				dots++;
			i++;
		}
		/* "X.Y.Z": the dot after X and one more. */
		if (dots == 2 && (p[i] == ' ' || p[i] == '\0') && i < n) {
			memcpy(out, p, i);
			out[i] = '\0';
			if (kind == DSN_DELAYED)
				out[0] = '4';
			return;
		}
	}
	xsnprintf(out, n, "%s", kind == DSN_FAILED ? "5.0.0" : "4.0.0");
}

void
dsn_build(const struct spool_msg *msg, const char *original, size_t len, enum dsn_kind kind,
	  const char *hostname, int64_t max_age, struct spool_msg *out, struct buf *c)
{
	char date[64], boundary[33], code[16];
	int64_t now = util_now_ms() / 1000;
	/*
	 * An SMTPUTF8 message may carry UTF-8 addresses and header fields: its
	 * notice uses RFC 6533's types (utf-8 addresses, message/global*). It
	 * needs SMTPUTF8 itself only to reach a UTF-8 sender (its envelope and
	 * To:); 8-bit parts need 8BITMIME (body_8bit, set at the end).
	 */
	int u8 = msg->smtputf8;

	memset(out, 0, sizeof(*out));
	out->mail_from = xstrdup("");
	out->created = now;
	out->is_notice = 1;
	out->smtputf8 = has_8bit(msg->mail_from, strlen(msg->mail_from));
	out->session = xstrdup(msg->id);
	out->rcpts = xcalloc(1, sizeof(*out->rcpts));
	out->nrcpts = 1;
	out->rcpts[0].addr = xstrdup(msg->mail_from);
	out->rcpts[0].orig = xstrdup(msg->mail_from);
	out->rcpts[0].notify = NOTIFY_NEVER;
	/* local is decided by the queue when it submits the notice. */

	util_random_hex(boundary, 16);
	rfc2822_date(date, sizeof(date), now);
	buf_reset(c);
	buf_printf(c, "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n", hostname);
	buf_printf(c, "To: <%s>\r\n", msg->mail_from);
	buf_printf(c, "Subject: %s\r\n",
		   kind == DSN_FAILED	 ? "Undelivered Mail Returned to Sender"
		   : kind == DSN_DELAYED ? "Delayed Mail (still being retried)"
					 : "Successful Mail Delivery Report");
	buf_printf(c, "Date: %s\r\n", date);
	buf_printf(c, "Message-ID: <%s.%s@%s>\r\n", msg->id, dsn_kind_name(kind), hostname);
	buf_puts(c, "Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n");
	buf_printf(c,
		   "Content-Type: multipart/report; report-type=delivery-status;\r\n"
		   "\tboundary=\"%s\"\r\n\r\n",
		   boundary);
	buf_puts(c, "This is a MIME-encapsulated message.\r\n\r\n");

	/* Part 1: for people. */
	buf_printf(c, "--%s\r\nContent-Type: text/plain; charset=%s\r\n", boundary,
		   u8 ? "utf-8" : "us-ascii");
	buf_printf(c, "Content-Transfer-Encoding: %s\r\n\r\n", u8 ? "8bit" : "7bit");
	buf_printf(c, "This is the mail system at %s.\r\n\r\n", hostname);
	if (kind == DSN_FAILED)
		buf_puts(c, "Your message could not be delivered to one or more recipients.\r\n"
			    "It is attached below.\r\n\r\n");
	else if (kind == DSN_DELIVERED)
		buf_puts(c, "Your message reached the recipients below, as you asked to be told:\r\n"
			    "delivered into their mailboxes here, or relayed to a mail server that\r\n"
			    "does not report delivery (no further report will come for those).\r\n\r\n");
	else
		buf_printf(c,
			   "Your message has not been delivered yet to the recipients below.\r\n"
			   "The mail system will keep trying for up to %lld days in all;\r\n"
			   "you do not need to send it again.\r\n\r\n",
			   (long long)(max_age / 86400));
	enum rcpt_status want = dsn_status(kind);
	for (size_t i = 0; i < msg->nrcpts; i++) {
		const struct spool_rcpt *rc = &msg->rcpts[i];
		if (rc->status != want || !dsn_wanted(rc, kind))
			continue;
		buf_printf(c, "<%s>: ", rc->orig ? rc->orig : rc->addr);
		if (rc->remote) {
			/* remote is "host[ip] tls=...": the part before the space. */
			buf_puts(c, "host ");
			dsn_clean_n(c, rc->remote, strcspn(rc->remote, " "), u8);
			buf_puts(c, " said: ");
		}
		dsn_clean(c, rc->last_error ? rc->last_error : "unknown error", u8);
		buf_puts(c, "\r\n");
	}

	/* Part 2: for machines (RFC 3464). */
	buf_printf(c, "\r\n--%s\r\nContent-Type: message/%sdelivery-status\r\n%s\r\n", boundary,
		   u8 ? "global-" : "", u8 ? "Content-Transfer-Encoding: 8bit\r\n" : "");
	buf_printf(c, "Reporting-MTA: dns; %s\r\n", hostname);
	if (msg->envid) {
		buf_puts(c, "Original-Envelope-Id: ");
		dsn_clean(c, msg->envid, u8);
		buf_puts(c, "\r\n");
	}
	rfc2822_date(date, sizeof(date), msg->created);
	buf_printf(c, "Arrival-Date: %s\r\n", date);
	for (size_t i = 0; i < msg->nrcpts; i++) {
		const struct spool_rcpt *rc = &msg->rcpts[i];
		if (rc->status != want || !dsn_wanted(rc, kind))
			continue;
		/* RFC 6533 3: the utf-8 type for an address that is not all ASCII. */
		buf_printf(c, "\r\nFinal-Recipient: %s; ",
			   u8 && has_8bit(rc->addr, strlen(rc->addr)) ? "utf-8" : "rfc822");
		dsn_clean(c, rc->addr, u8);
		buf_puts(c, "\r\n");
		if (rc->orcpt) {
			buf_puts(c, "Original-Recipient: ");
			dsn_clean(c, rc->orcpt, u8);
			buf_puts(c, "\r\n");
		}
		if (kind == DSN_DELIVERED)
			xsnprintf(code, sizeof(code), "2.0.0");
		else
			status_code(rc->last_error, kind, code, sizeof(code));
		/* A success we report for a remote recipient is a relay (RFC 3461 5.2.2). */
		buf_printf(c, "Action: %s\r\nStatus: %s\r\n",
			   kind == DSN_FAILED	 ? "failed"
			   : kind == DSN_DELAYED ? "delayed"
			   : rc->remote		 ? "relayed"
						 : "delivered",
			   code);
		if (rc->remote) {
			/* RFC 3464 2.3.5: the name only. */
			buf_puts(c, "Remote-MTA: dns; ");
			dsn_clean_n(c, rc->remote, strcspn(rc->remote, "[ "), u8);
			buf_puts(c, "\r\n");
		}
		if (rc->last_error) {
			buf_puts(c, rc->remote ? "Diagnostic-Code: smtp; " : "Diagnostic-Code: X-surat; ");
			dsn_clean(c, rc->last_error, u8);
			buf_puts(c, "\r\n");
		}
		if (kind == DSN_DELAYED) {
			rfc2822_date(date, sizeof(date), msg->created + max_age);
			buf_printf(c, "Will-Retry-Until: %s\r\n", date);
		}
	}

	/* Part 3: the original, or its header. */
	size_t hdr_end = len;
	const char *sep = memmem(original, len, "\r\n\r\n", 4);
	if (sep)
		hdr_end = (size_t)(sep - original) + 2;
	/* RET=FULL is for failures (RFC 3461 4.3): a success returns the header. */
	int full = !msg->ret_hdrs && len <= DSN_FULL_MAX && kind != DSN_DELIVERED;
	size_t back = full ? len : hdr_end;
	buf_printf(c, "\r\n--%s\r\nContent-Type: %s\r\n%s\r\n", boundary,
		   full ? (u8 ? "message/global" : "message/rfc822")
			: (u8 ? "message/global-headers" : "text/rfc822-headers"),
		   has_8bit(original, back) ? "Content-Transfer-Encoding: 8bit\r\n" : "");
	buf_append(c, original, back);
	if (c->len >= 2 && memcmp(c->data + c->len - 2, "\r\n", 2) != 0)
		buf_puts(c, "\r\n");
	buf_printf(c, "\r\n--%s--\r\n", boundary);
	out->body_8bit = has_8bit(c->data, c->len);
}
