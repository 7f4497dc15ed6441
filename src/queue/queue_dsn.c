/*
 * queue_dsn — see queue_dsn.h. The original message is attached whole
 * (message/rfc822) when RET=FULL or unspecified and it is under 256 KiB,
 * in a failure notice, unless the caller asks for the header only;
 * otherwise, and in delay and success notices, only its header
 * (text/rfc822-headers: to the first line that is no field, at most 256
 * KiB). A notice about an SMTPUTF8 message uses RFC
 * 6533's types instead: message/global-delivery-status with utf-8
 * addresses, message/global or message/global-headers; so does the report
 * (not the original's part) of one that names a UTF-8 address.
 *
 * SECURITY: peer text is sanitised by dsn_clean() before it is written.
 */
#include "queue/queue_dsn.h"
#include "core/buf.h"
#include "core/util.h"
#include "smtp/smtp_proto.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DSN_FULL_MAX (256 * 1024)
#define DSN_LINE_MAX 998	/* octets before the CRLF (RFC 5322 2.1.1) */

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
dsn_reports(const struct spool_rcpt *rc, enum dsn_kind kind)
{
	return rc->status == dsn_status(kind) && dsn_wanted(rc, kind) &&
	       !(kind == DSN_FAILED && rc->bounced);
}

int
dsn_needed(const struct spool_msg *msg, enum dsn_kind kind)
{
	if (msg->mail_from == NULL || msg->mail_from[0] == '\0' || msg->is_notice)
		return 0;
	for (size_t i = 0; i < msg->nrcpts; i++)
		if (dsn_reports(&msg->rcpts[i], kind))
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

/*
 * RFC 5322 2.1.1: a line holds at most 998 octets, and a remote server's
 * reply, an address or both on one line can be longer. Fold the line that
 * starts at offset start of c (its CRLF not yet written) before white
 * space, so that unfolding (2.2.3) gives the text back; a run of 998
 * octets without any is broken with CRLF and a space, between UTF-8
 * sequences. Such a line first has its runs of white space made one space
 * and none at its end, so that no folded line is white space only (3.2.2).
 * May reallocate c.
 */
static void
dsn_fold(struct buf *c, size_t start)
{
	if (c->len - start <= DSN_LINE_MAX)
		return;

	char *tail = xmalloc(c->len - start + 1);
	size_t n = 0;
	for (const char *p = c->data + start; p < c->data + c->len; p++) {
		int ws = *p == ' ' || *p == '\t';
		if (!ws || (n > 0 && tail[n - 1] != ' '))
			tail[n++] = ws ? ' ' : *p;
	}
	while (n > 0 && tail[n - 1] == ' ')
		n--;
	tail[n] = '\0';

	const char *s = tail;
	size_t room = DSN_LINE_MAX;
	buf_truncate(c, start);
	while (n > room) {
		/* The last space that can begin the next line. */
		size_t cut = room;
		while (cut > 0 && s[cut] != ' ')
			cut--;
		if (cut > 0) {
			buf_append(c, s, cut);
			buf_puts(c, "\r\n");
			room = DSN_LINE_MAX;
		} else {
			cut = room - 1;
			while (cut > 1 && ((unsigned char)s[cut] & 0xc0) == 0x80)
				cut--;
			buf_append(c, s, cut);
			buf_puts(c, "\r\n ");
			room = DSN_LINE_MAX - 1;
		}
		s += cut;
		n -= cut;
	}
	buf_append(c, s, n);
	free(tail);
}

static void
rfc2822_date(char *out, size_t n, int64_t t)
{
	time_t tt = (time_t)t;
	struct tm tm;
	gmtime_r(&tt, &tm);
	strftime(out, n, "%a, %d %b %Y %H:%M:%S +0000", &tm);
}

void
dsn_duration(char *out, size_t n, int64_t secs)
{
	static const struct {
		int64_t unit;
		const char *name;
	} units[] = {{86400, "day"}, {3600, "hour"}, {60, "minute"}, {1, "second"}};

	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (secs % units[i].unit == 0 || secs >= 86400 * 2 || i == 3) {
			long long v = (long long)(secs / units[i].unit);
			xsnprintf(out, n, "%lld %s%s", v, units[i].name, v == 1 ? "" : "s");
			return;
		}
	}
}

/* The length of a run of 1 to 3 digits at p, or 0. */
static size_t
digits3(const char *p)
{
	size_t i = 0;
	while (i < 4 && p[i] >= '0' && p[i] <= '9')
		i++;
	return i <= 3 ? i : 0;
}

/* Whether text is an SMTP reply: a code 2xx to 5xx, then a space, '-' or nothing. */
static int
is_smtp_reply(const char *text)
{
	return text && text[0] >= '2' && text[0] <= '5' && text[1] >= '0' && text[1] <= '9' &&
	       text[2] >= '0' && text[2] <= '9' &&
	       (text[3] == ' ' || text[3] == '-' || text[3] == '\0');
}

/*
 * The RFC 3463 status code for a recipient: the enhanced code at the start
 * of its reply text (after an SMTP reply code) if it is well formed
 * (class "." 1*3digit "." 1*3digit), with the class this kind of report
 * says (RFC 3464 2.3.4: 5 for failed, 4 for delayed: a peer's "550 4.2.1"
 * is still a failure); else X.0.0.
 */
static void
status_code(const char *text, enum dsn_kind kind, char *out, size_t n)
{
	const char *p = text ? text : "";
	char cls = kind == DSN_FAILED ? '5' : '4';
	size_t a, b;

	if (is_smtp_reply(p))
		p += p[3] ? 4 : 3;
	if ((p[0] == '2' || p[0] == '4' || p[0] == '5') && p[1] == '.' && (a = digits3(p + 2)) &&
	    p[2 + a] == '.' && (b = digits3(p + 3 + a)) &&
	    (p[3 + a + b] == ' ' || p[3 + a + b] == '\0') && 3 + a + b < n) {
		memcpy(out, p, 3 + a + b);
		out[3 + a + b] = '\0';
		out[0] = cls;
		return;
	}
	xsnprintf(out, n, "%c.0.0", cls);
}

/*
 * An xtext value (RFC 3461 4: "+" and two upper-case hex digits for an
 * octet) as the report shows it, decoded (RFC 3464 2.2.1 and 2.3.2 carry
 * the identifier and the address themselves), then cleaned like any text.
 */
static void
xtext_clean(struct buf *c, const char *s, int u8)
{
	struct buf d = BUF_INIT(0);

	if (smtp_xtext_decode(s, strlen(s), &d) == 0)
		dsn_clean_n(c, d.data ? d.data : "", d.len, u8);
	else
		dsn_clean(c, s, u8);	/* checked at RCPT; never expected */
	buf_free(&d);
}

/*
 * An ORCPT address of type utf-8 (RFC 6533 3: utf-8-addr-xtext or -unitext)
 * decoded to the utf-8-address a message/global-delivery-status carries: each
 * EmbeddedUnicodeChar "\x{HEXPOINT}" as its character (1 to 6 hex digits, no
 * surrogate, at most 10FFFF), and, leniently, an xtext "+XX" as its octet.
 * 0, or -1 on a malformed escape or a NUL (out is then partly written).
 */
static int
orcpt_utf8_decode(const char *s, struct buf *out)
{
	while (*s) {
		if (s[0] == '\\' && s[1] == 'x' && s[2] == '{') {
			uint32_t cp = 0;
			size_t k = 3;
			for (; k < 9 && isxdigit((unsigned char)s[k]); k++)
				cp = cp * 16 + (uint32_t)(isdigit((unsigned char)s[k])
							      ? s[k] - '0'
							      : (s[k] | 0x20) - 'a' + 10);
			if (k == 3 || s[k] != '}' || cp == 0 || cp > 0x10ffff ||
			    (cp >= 0xd800 && cp <= 0xdfff))
				return -1;
			buf_put_utf8(out, cp);
			s += k + 1;
		} else if (s[0] == '+') {
			if (!isxdigit((unsigned char)s[1]) || !isxdigit((unsigned char)s[2]))
				return -1;
			char hex[3] = {s[1], s[2], '\0'};
			long octet = strtol(hex, NULL, 16);
			if (octet == 0)
				return -1;
			buf_putc(out, (char)octet);
			s += 3;
		} else {
			buf_putc(out, *s++);
		}
	}
	return 0;
}

/*
 * The length of the header section of original (len octets) that a notice
 * returns: up to its empty line, or to the first line that is neither a
 * field ("name:", RFC 5322 2.2; white space before the colon as lenient
 * readers take it) nor a continuation, which readers, as Postfix's
 * cleanup, take for the body's first; and at most DSN_FULL_MAX octets, cut
 * after a CRLF. Else a message without an empty line, or with a huge
 * header, came back whole as "its header", whatever its size or RET=HDRS.
 */
static size_t
dsn_header_len(const char *s, size_t len)
{
	size_t pos = 0;

	while (pos < len) {
		const char *eol = memmem(s + pos, len - pos, "\r\n", 2);
		size_t end = eol ? (size_t)(eol - s) + 2 : len;
		if (end > DSN_FULL_MAX)
			break;
		if (pos == 0 || (s[pos] != ' ' && s[pos] != '\t')) {
			size_t i = pos;
			while (i < end && s[i] > ' ' && s[i] < 0x7f && s[i] != ':')
				i++;
			size_t name = i - pos;
			while (i < end && (s[i] == ' ' || s[i] == '\t'))
				i++;
			if (name == 0 || i >= end || s[i] != ':')
				break; /* the empty line, or no field: the body */
		}
		pos = end;
	}
	return pos;
}

void
dsn_build(const struct spool_msg *msg, const char *original, size_t len, enum dsn_kind kind,
	  const char *hostname, const char *nid, int64_t max_age, int hdrs_only,
	  struct spool_msg *out, struct buf *c)
{
	char date[64], boundary[33], code[16], age[32];
	int64_t now = util_now_ms() / 1000;
	/*
	 * An SMTPUTF8 message may carry UTF-8 addresses and header fields: its
	 * notice uses RFC 6533's types (utf-8 addresses, message/global*). It
	 * needs SMTPUTF8 itself only to reach a UTF-8 sender (its envelope and
	 * To:); 8-bit parts need 8BITMIME (body_8bit, set at the end). So does
	 * a report naming a UTF-8 address, which a message without SMTPUTF8
	 * reaches through an ASCII alias: RFC 6533 3 gives it the utf-8
	 * address type, which only message/global-delivery-status carries (a
	 * 7-bit report would show the address garbled). The original keeps
	 * its own type (part 3).
	 */
	int u8 = msg->smtputf8;
	for (size_t i = 0; i < msg->nrcpts && !u8; i++)
		u8 = dsn_reports(&msg->rcpts[i], kind) &&
		     util_has_8bit(msg->rcpts[i].addr, strlen(msg->rcpts[i].addr));

	memset(out, 0, sizeof(*out));
	out->mail_from = xstrdup("");
	out->created = now;
	out->is_notice = 1;
	out->smtputf8 = util_has_8bit(msg->mail_from, strlen(msg->mail_from));
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
	buf_printf(c, "Message-ID: <%s.%s@%s>\r\n", nid, dsn_kind_name(kind), hostname);
	buf_puts(c, "Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n");
	buf_printf(c,
		   "Content-Type: multipart/report; report-type=delivery-status;\r\n"
		   "\tboundary=\"%s\"\r\n",
		   boundary);
	/* The header's end: a Content-Transfer-Encoding goes here if the body is 8-bit. */
	size_t head_end = c->len;
	buf_puts(c, "\r\n");
	buf_puts(c, "This is a MIME-encapsulated message.\r\n\r\n");

	/* Part 1: for people. */
	buf_printf(c, "--%s\r\nContent-Type: text/plain; charset=%s\r\n", boundary,
		   u8 ? "utf-8" : "us-ascii");
	buf_printf(c, "Content-Transfer-Encoding: %s\r\n\r\n", u8 ? "8bit" : "7bit");
	buf_printf(c, "This is the mail system at %s.\r\n\r\n", hostname);
	/*
	 * RET=FULL is for failures (RFC 3461 4.3): a success or a delay notice
	 * returns the header (as Postfix's delay warning does; the message is
	 * still on its way, a copy says nothing more).
	 */
	int full = !msg->ret_hdrs && !hdrs_only && len <= DSN_FULL_MAX && kind == DSN_FAILED;
	if (kind == DSN_FAILED) {
		buf_printf(c,
			   "Your message could not be delivered to one or more recipients.\r\n"
			   "%s attached below.\r\n\r\n",
			   full ? "It is" : "Its header is");
	} else if (kind == DSN_DELIVERED) {
		buf_puts(c, "Your message reached the recipients below, as you asked to be told:\r\n"
			    "delivered into their mailboxes here, relayed to a mail server that\r\n"
			    "does not report delivery, or handed to the members of an alias (no\r\n"
			    "further report will come for those).\r\n\r\n");
	} else {
		dsn_duration(age, sizeof(age), max_age);
		buf_printf(c,
			   "Your message has not been delivered yet to the recipients below.\r\n"
			   "The mail system will keep trying for up to %s in all;\r\n"
			   "you do not need to send it again.\r\n\r\n",
			   age);
	}
	for (size_t i = 0; i < msg->nrcpts; i++) {
		const struct spool_rcpt *rc = &msg->rcpts[i];
		if (!dsn_reports(rc, kind))
			continue;
		size_t line = c->len;
		buf_printf(c, "<%s>: ", rc->orig ? rc->orig : rc->addr);
		if (rc->remote) {
			/* remote is "host[ip] tls=...": the part before the space. */
			buf_puts(c, "host ");
			dsn_clean_n(c, rc->remote, strcspn(rc->remote, " "), u8);
			buf_puts(c, " said: ");
		}
		dsn_clean(c, rc->last_error ? rc->last_error : "unknown error", u8);
		dsn_fold(c, line);
		buf_puts(c, "\r\n");
	}

	/* Part 2: for machines (RFC 3464). */
	buf_printf(c, "\r\n--%s\r\nContent-Type: message/%sdelivery-status\r\n%s\r\n", boundary,
		   u8 ? "global-" : "", u8 ? "Content-Transfer-Encoding: 8bit\r\n" : "");
	/* In RFC 3464 2.2's order (2.3 for a recipient's). */
	if (msg->envid) {
		buf_puts(c, "Original-Envelope-Id: ");
		xtext_clean(c, msg->envid, u8);
		buf_puts(c, "\r\n");
	}
	buf_printf(c, "Reporting-MTA: dns; %s\r\n", hostname);
	rfc2822_date(date, sizeof(date), msg->created);
	buf_printf(c, "Arrival-Date: %s\r\n", date);
	for (size_t i = 0; i < msg->nrcpts; i++) {
		const struct spool_rcpt *rc = &msg->rcpts[i];
		if (!dsn_reports(rc, kind))
			continue;
		buf_puts(c, "\r\n");
		if (rc->orcpt) {
			/*
			 * "rfc822;" and an xtext address, decoded. A utf-8 one (RFC
			 * 6533 3) decoded in a global report; in a 7-bit one as it
			 * came (utf-8-addr-xtext, the form that report wants).
			 */
			buf_puts(c, "Original-Recipient: ");
			const char *semi = strchr(rc->orcpt, ';');
			size_t tl = semi ? (size_t)(semi - rc->orcpt) : 0;
			struct buf d = BUF_INIT(0);
			if (tl == 6 && strncasecmp(rc->orcpt, "rfc822", 6) == 0) {
				dsn_clean_n(c, rc->orcpt, tl + 1, u8);
				xtext_clean(c, semi + 1, u8);
			} else if (u8 && tl == 5 && strncasecmp(rc->orcpt, "utf-8", 5) == 0 &&
				   orcpt_utf8_decode(semi + 1, &d) == 0) {
				dsn_clean_n(c, rc->orcpt, tl + 1, u8);
				dsn_clean_n(c, d.data ? d.data : "", d.len, u8);
			} else {
				dsn_clean(c, rc->orcpt, u8);
			}
			buf_free(&d);
			buf_puts(c, "\r\n");
		}
		/* RFC 6533 3: the utf-8 type for an address that is not all ASCII. */
		buf_printf(c, "Final-Recipient: %s; ",
			   u8 && util_has_8bit(rc->addr, strlen(rc->addr)) ? "utf-8" : "rfc822");
		dsn_clean(c, rc->addr, u8);
		buf_puts(c, "\r\n");
		if (kind == DSN_DELIVERED)
			xsnprintf(code, sizeof(code), "2.0.0");
		else
			status_code(rc->last_error, kind, code, sizeof(code));
		/* A success we report for a remote recipient is a relay (RFC 3461
		 * 5.2.2); for an alias of several members, its expansion (6.2.7.3). */
		buf_printf(c, "Action: %s\r\nStatus: %s\r\n",
			   kind == DSN_FAILED		      ? "failed"
			   : kind == DSN_DELAYED	      ? "delayed"
			   : rc->local == SPOOL_EXPANDED ? "expanded"
			   : rc->remote		      ? "relayed"
							      : "delivered",
			   code);
		if (rc->remote) {
			/* RFC 3464 2.3.5: the name only. */
			buf_puts(c, "Remote-MTA: dns; ");
			dsn_clean_n(c, rc->remote, strcspn(rc->remote, "[ "), u8);
			buf_puts(c, "\r\n");
		}
		if (rc->last_error) {
			size_t line = c->len;
			/* RFC 3464 2.3.6: "smtp" only for a reply the remote server gave. */
			buf_puts(c, rc->remote && is_smtp_reply(rc->last_error)
					    ? "Diagnostic-Code: smtp; "
					    : "Diagnostic-Code: X-surat; ");
			dsn_clean(c, rc->last_error, u8);
			dsn_fold(c, line);
			buf_puts(c, "\r\n");
		}
		if (kind == DSN_DELAYED) {
			rfc2822_date(date, sizeof(date), msg->created + max_age);
			buf_printf(c, "Will-Retry-Until: %s\r\n", date);
		}
	}

	/* Part 3: the original, or its header. */
	size_t back = full ? len : dsn_header_len(original, len);
	buf_printf(c, "\r\n--%s\r\nContent-Type: %s\r\n%s\r\n", boundary,
		   full ? (msg->smtputf8 ? "message/global" : "message/rfc822")
			: (msg->smtputf8 ? "message/global-headers" : "text/rfc822-headers"),
		   util_has_8bit(original, back) ? "Content-Transfer-Encoding: 8bit\r\n" : "");
	buf_append(c, original, back);
	if (c->len >= 2 && memcmp(c->data + c->len - 2, "\r\n", 2) != 0)
		buf_puts(c, "\r\n");
	buf_printf(c, "\r\n--%s--\r\n", boundary);
	out->body_8bit = util_has_8bit(c->data + head_end, c->len - head_end);
	static const char cte[] = "Content-Transfer-Encoding: 8bit\r\n";
	if (out->body_8bit && buf_grow(c, sizeof(cte) - 1) == 0) {
		/* RFC 2045 6.1: without it the whole would be 7bit. */
		memmove(c->data + head_end + sizeof(cte) - 1, c->data + head_end,
			c->len - head_end);
		memcpy(c->data + head_end, cte, sizeof(cte) - 1);
		c->len += sizeof(cte) - 1;
		c->data[c->len] = '\0';
	}
}
