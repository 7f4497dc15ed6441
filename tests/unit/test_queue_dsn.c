/*
 * test_queue_dsn — unit tests of the delivery status notifications built by
 * queue/queue_dsn: the notice is parsed (header, MIME parts, the fields of
 * the message/delivery-status part) and checked field by field against RFC
 * 3461, 3464, 6522 and 5322, rather than compared with one fixed text, so
 * that the boundary, the dates and the order of harmless lines may change.
 *
 * SECURITY: tests only; no files, no network.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/buf.h"
#include "core/util.h"
#include "queue/queue_dsn.h"
#include "queue/queue_spool.h"

#define HOST "mx.example.test"
#define NID "0123456789abcdef-b"
#define SENDER "sender@example.org"
#define CREATED 1700000000		/* Tue, 14 Nov 2023 22:13:20 +0000 */
#define MAX_AGE (5 * 86400)
#define LINE_MAX_OCTETS 998		/* RFC 5322 2.1.1, without the CRLF */

static const char original[] = "From: Sender <sender@example.org>\r\n"
			       "To: bob@remote.test\r\n"
			       "Subject: quarterly numbers\r\n"
			       "\r\n"
			       "The body line only a full return carries.\r\n";

/* A piece of the notice: not NUL-terminated. */
struct span {
	const char *p;
	size_t n;
};

/* A built notice and its parsed shape. */
struct notice {
	struct spool_msg env;	/* the notice's own envelope */
	struct buf c;		/* its content */
	struct span head;	/* top-level header, up to its blank line */
	char boundary[128];
	struct span part[8];	/* each part: its header, blank line, body */
	int nparts;
};

/* ------------------------------------------------------------------ */
/* Parsing helpers */

static const char *
span_find(struct span s, const char *needle)
{
	return memmem(s.p, s.n, needle, strlen(needle));
}

/* The octets from p up to the end of s. */
static struct span
span_from(struct span s, const char *p)
{
	return (struct span){p, s.n - (size_t)(p - s.p)};
}

/*
 * Every line of s ends in CRLF (no bare CR, no bare LF, none left open) and
 * holds at most 998 octets before it: RFC 5322 2.1.1 and 2.3. A folded
 * line is not white space only (3.2.2).
 */
static void
assert_lines_ok(struct span s)
{
	size_t start = 0;

	assert_true(s.n >= 2);
	for (size_t i = 0; i < s.n; i++) {
		if (s.p[i] == '\r') {
			if (i + 1 >= s.n || s.p[i + 1] != '\n')
				fail_msg("bare CR at octet %zu", i);
			if (i - start > LINE_MAX_OCTETS)
				fail_msg("line at octet %zu has %zu octets", start, i - start);
			if (i > start && strspn(s.p + start, " \t") >= i - start)
				fail_msg("line at octet %zu is white space only", start);
			i++;
			start = i + 1;
		} else if (s.p[i] == '\n') {
			fail_msg("bare LF at octet %zu", i);
		}
	}
	assert_int_equal(start, s.n);	/* the last line ends in CRLF too */
}

/* The header block of an entity: everything before its first blank line. */
static struct span
head_of(struct span e)
{
	const char *blank = span_find(e, "\r\n\r\n");
	assert_non_null(blank);
	return (struct span){e.p, (size_t)(blank - e.p) + 2};
}

/* The body of an entity: everything after its first blank line. */
static struct span
body_of(struct span e)
{
	const char *blank = span_find(e, "\r\n\r\n");
	assert_non_null(blank);
	return span_from(e, blank + 4);
}

/*
 * The value of field name in a block of header-like lines (a header, or a
 * group of the delivery-status part), unfolded (RFC 5322 2.2.3) into out.
 * The nth such field (0: the first). 1 if found, 0 if not.
 */
static int
field_nth(struct span h, const char *name, int nth, char *out, size_t outn)
{
	size_t nl = strlen(name), i = 0;

	while (i < h.n) {
		const char *line = h.p + i;
		const char *eol = memmem(line, h.n - i, "\r\n", 2);
		size_t len = eol ? (size_t)(eol - line) : h.n - i;
		if (len == 0)
			break;	/* the end of the block */
		if (len > nl && line[nl] == ':' && strncasecmp(line, name, nl) == 0 &&
		    nth-- == 0) {
			struct buf v = BUF_INIT(0);
			const char *p = line + nl + 1;
			while (p < line + len && (*p == ' ' || *p == '\t'))
				p++;
			buf_append(&v, p, (size_t)(line + len - p));
			/* Continuation lines start with white space. */
			for (i += len + 2; i < h.n && (h.p[i] == ' ' || h.p[i] == '\t');) {
				const char *c = h.p + i;
				const char *ce = memmem(c, h.n - i, "\r\n", 2);
				size_t cl = ce ? (size_t)(ce - c) : h.n - i;
				buf_append(&v, c, cl);
				i += cl + 2;
			}
			assert_true(v.len < outn);
			memcpy(out, buf_str(&v), v.len + 1);
			buf_free(&v);
			return 1;
		}
		i += len + 2;
	}
	return 0;
}

static int
field(struct span h, const char *name, char *out, size_t outn)
{
	return field_nth(h, name, 0, out, outn);
}

/* How many times field name occurs in h. */
static int
field_count(struct span h, const char *name)
{
	char v[4096];
	int n = 0;

	while (field_nth(h, name, n, v, sizeof(v)))
		n++;
	return n;
}

/* Field name of h must be there and equal want. */
static void
assert_field(struct span h, const char *name, const char *want)
{
	char v[4096];

	if (!field(h, name, v, sizeof(v)))
		fail_msg("no %s field", name);
	assert_string_equal(v, want);
}

/*
 * The groups of a message/delivery-status body (RFC 3464 2.1): the
 * per-message fields, then one group per recipient, separated by blank
 * lines. Returns how many.
 */
static int
ds_groups(struct span body, struct span *g, int max)
{
	int n = 0;
	size_t i = 0, start = 0;

	while (i < body.n) {
		const char *eol = memmem(body.p + i, body.n - i, "\r\n", 2);
		assert_non_null(eol);
		size_t len = (size_t)(eol - (body.p + i));
		if (len == 0 || i + len + 2 == body.n) {
			size_t end = len == 0 ? i : i + len + 2;
			if (end > start) {
				assert_true(n < max);
				g[n++] = (struct span){body.p + start, end - start};
			}
			start = i + len + 2;
		}
		i += len + 2;
	}
	return n;
}

/* The part whose Content-Type starts with type, or fails. */
static struct span
part_of_type(const struct notice *nt, const char *type)
{
	char ct[256];

	for (int i = 0; i < nt->nparts; i++) {
		if (field(head_of(nt->part[i]), "Content-Type", ct, sizeof(ct)) &&
		    strncasecmp(ct, type, strlen(type)) == 0 &&
		    (ct[strlen(type)] == '\0' || ct[strlen(type)] == ';'))
			return nt->part[i];
	}
	fail_msg("no %s part", type);
	return (struct span){NULL, 0};
}

/* The delivery-status groups of a notice (RFC 6533 names the part otherwise). */
static int
notice_groups(const struct notice *nt, struct span *g, int max)
{
	const char *type = nt->env.smtputf8 || strstr(nt->c.data, "global-delivery-status")
				   ? "message/global-delivery-status"
				   : "message/delivery-status";
	return ds_groups(body_of(part_of_type(nt, type)), g, max);
}

/*
 * Split the multipart body at its boundary (RFC 2046 5.1.1: the CRLF before
 * a delimiter belongs to it). Checks the close delimiter is the last line
 * and the boundary occurs inside no part.
 */
static void
split_parts(struct notice *nt)
{
	char delim[160];
	struct span body = body_of((struct span){nt->c.data, nt->c.len});

	xsnprintf(delim, sizeof(delim), "\r\n--%s", nt->boundary);
	const char *p = span_find(body, delim);
	assert_non_null(p);
	nt->nparts = 0;
	for (;;) {
		p += strlen(delim);
		if (strncmp(p, "--\r\n", 4) == 0) {
			assert_ptr_equal(p + 4, nt->c.data + nt->c.len);
			break;
		}
		assert_memory_equal(p, "\r\n", 2);
		p += 2;
		const char *next = span_find(span_from(body, p), delim);
		assert_non_null(next);
		assert_true(nt->nparts < 8);
		struct span part = {p, (size_t)(next - p)};
		assert_null(span_find(part, nt->boundary));
		nt->part[nt->nparts++] = part;
		p = next;
	}
}

/*
 * Build a notice of kind about m and check what every notice must be: lines
 * in CRLF of at most 998 octets, a multipart/report header with a boundary,
 * three parts in RFC 6522's order (for people, for machines, the original).
 */
static void
notice_build(struct notice *nt, const struct spool_msg *m, const char *orig, size_t len,
	     enum dsn_kind kind)
{
	char ct[512];

	memset(nt, 0, sizeof(*nt));
	buf_init(&nt->c, 0);
	dsn_build(m, orig, len, kind, HOST, NID, MAX_AGE, 0, &nt->env, &nt->c);
	assert_lines_ok((struct span){nt->c.data, nt->c.len});
	nt->head = head_of((struct span){nt->c.data, nt->c.len});

	assert_true(field(nt->head, "Content-Type", ct, sizeof(ct)));
	assert_true(strncmp(ct, "multipart/report;", 17) == 0);
	assert_non_null(strstr(ct, "report-type=delivery-status"));
	const char *b = strstr(ct, "boundary=\"");
	assert_non_null(b);
	b += 10;
	const char *e = strchr(b, '"');
	assert_non_null(e);
	assert_true(e > b && (size_t)(e - b) < sizeof(nt->boundary));
	memcpy(nt->boundary, b, (size_t)(e - b));
	nt->boundary[e - b] = '\0';

	split_parts(nt);
	assert_int_equal(nt->nparts, 3);
	assert_true(field(head_of(nt->part[0]), "Content-Type", ct, sizeof(ct)));
	assert_true(strncmp(ct, "text/plain", 10) == 0);
}

static void
notice_free(struct notice *nt)
{
	spool_msg_free(&nt->env);
	buf_free(&nt->c);
}

/* The group of recipient addr (by Final-Recipient), or fails. */
static struct span
rcpt_group(const struct notice *nt, const char *final)
{
	struct span g[16];
	char v[1024];
	int n = notice_groups(nt, g, 16);

	for (int i = 1; i < n; i++)
		if (field(g[i], "Final-Recipient", v, sizeof(v)) && strcmp(v, final) == 0)
			return g[i];
	fail_msg("no group for %s", final);
	return g[0];
}

/* The addresses reported, in order, joined by spaces, into out. */
static void
reported(const struct notice *nt, char *out, size_t n)
{
	struct span g[16];
	char v[1024];
	int ng = notice_groups(nt, g, 16);
	struct buf b = BUF_INIT(0);

	for (int i = 1; i < ng; i++) {
		assert_true(field(g[i], "Final-Recipient", v, sizeof(v)));
		const char *semi = strchr(v, ';');
		assert_non_null(semi);
		buf_printf(&b, "%s%s", b.len ? " " : "", semi + 2);
	}
	assert_true(b.len < n);
	memcpy(out, buf_str(&b), b.len + 1);
	buf_free(&b);
}

/* ------------------------------------------------------------------ */
/* The message the notices are about */

/*
 * Recipients in every state and with every NOTIFY: which of them a notice
 * of each kind must report is written beside them.
 */
static struct spool_rcpt rcpts[] = {
	/* failed: local, default NOTIFY, no ORCPT */
	{.addr = "alice@example.test", .orig = "alice@example.test", .local = 1,
	 .status = RCPT_FAILED, .last_error = "5.2.2 Mailbox full"},
	/* failed: remote, ORCPT in xtext ("+2B" is '+') */
	{.addr = "bob+x@remote.test", .orig = "bob+x@remote.test",
	 .orcpt = "rfc822;bob+2Bx@remote.test", .notify = NOTIFY_FAILURE,
	 .status = RCPT_FAILED, .remote = "mx.remote.test[192.0.2.1] tls=TLSv1.3",
	 .last_error = "550 5.1.1 <bob+x@remote.test>: user unknown"},
	/* delivered: relayed (remote), asked SUCCESS */
	{.addr = "carol@remote.test", .orig = "carol@remote.test",
	 .notify = NOTIFY_SUCCESS | NOTIFY_FAILURE, .status = RCPT_DELIVERED,
	 .remote = "mx.remote.test[192.0.2.1]", .last_error = "250 2.0.0 Ok: queued"},
	/* delayed: default NOTIFY */
	{.addr = "dave@remote.test", .orig = "dave@remote.test", .status = RCPT_DEFERRED,
	 .remote = "mx2.remote.test[192.0.2.2]", .last_error = "451 4.7.1 greylisted"},
	/* failed but NOTIFY=NEVER: in no notice */
	{.addr = "erin@example.test", .orig = "erin@example.test", .local = 1,
	 .notify = NOTIFY_NEVER, .status = RCPT_FAILED, .last_error = "5.1.1 no such user"},
	/* failed, NOTIFY without FAILURE: not in the bounce */
	{.addr = "frank@example.test", .orig = "frank@example.test", .local = 1,
	 .notify = NOTIFY_SUCCESS | NOTIFY_DELAY, .status = RCPT_FAILED,
	 .last_error = "5.2.1 disabled"},
	/* delivered without SUCCESS: in no notice */
	{.addr = "gina@example.test", .orig = "gina@example.test", .local = 1,
	 .status = RCPT_DELIVERED},
	/* an alias asked SUCCESS: "expanded" */
	{.addr = "list@example.test", .orig = "list@example.test", .local = SPOOL_EXPANDED,
	 .notify = NOTIFY_SUCCESS, .status = RCPT_DELIVERED},
	/* delayed, asked DELAY, no remote host answered */
	{.addr = "ivan@remote.test", .orig = "ivan@remote.test", .notify = NOTIFY_DELAY,
	 .status = RCPT_DEFERRED, .last_error = "4.4.1 connection timed out"},
	/* delayed, NOTIFY=FAILURE only: not in the delay notice */
	{.addr = "judy@remote.test", .orig = "judy@remote.test", .notify = NOTIFY_FAILURE,
	 .status = RCPT_DEFERRED, .last_error = "421 4.3.2 shutting down"},
	/* delivered locally, asked SUCCESS: "delivered" */
	{.addr = "kate@example.test", .orig = "kate@example.test", .local = 1,
	 .notify = NOTIFY_SUCCESS, .status = RCPT_DELIVERED},
	/* still pending: in no notice */
	{.addr = "leo@remote.test", .orig = "leo@remote.test", .status = RCPT_PENDING},
};

static void
make_msg(struct spool_msg *m)
{
	memset(m, 0, sizeof(*m));
	memcpy(m->id, "0123456789abcdef", 17);
	m->mail_from = SENDER;
	m->envid = "ENV+2B1";	/* xtext of "ENV+1" */
	m->created = CREATED;
	m->rcpts = rcpts;
	m->nrcpts = sizeof(rcpts) / sizeof(rcpts[0]);
}

/* A message with one recipient rc, otherwise as make_msg(). */
static void
make_msg1(struct spool_msg *m, struct spool_rcpt *rc)
{
	make_msg(m);
	m->rcpts = rc;
	m->nrcpts = 1;
}

static const enum dsn_kind kinds[] = {DSN_FAILED, DSN_DELAYED, DSN_DELIVERED};

/* ------------------------------------------------------------------ */
/* Tests */

/* RFC 3461 6.2 / RFC 5321 4.5.5: a notice goes from the null reverse-path
 * to the original sender alone, and is itself never notified about. */
static void
test_envelope(void **state)
{
	struct spool_msg m;
	struct notice nt;

	(void)state;
	make_msg(&m);
	for (size_t k = 0; k < 3; k++) {
		notice_build(&nt, &m, original, sizeof(original) - 1, kinds[k]);
		assert_string_equal(nt.env.mail_from, "");
		assert_int_equal(nt.env.nrcpts, 1);
		assert_string_equal(nt.env.rcpts[0].addr, SENDER);
		assert_int_equal(nt.env.rcpts[0].notify, NOTIFY_NEVER);
		assert_int_equal(nt.env.is_notice, 1);
		assert_int_equal(nt.env.smtputf8, 0);
		assert_int_equal(nt.env.body_8bit, 0);
		assert_string_equal(nt.env.session, m.id);
		notice_free(&nt);
	}

	/* A UTF-8 sender can only be reached over SMTPUTF8. */
	m.mail_from = "j\xc3\xb6rg@example.org";
	m.smtputf8 = 1;
	notice_build(&nt, &m, original, sizeof(original) - 1, DSN_FAILED);
	assert_int_equal(nt.env.smtputf8, 1);
	assert_string_equal(nt.env.rcpts[0].addr, "j\xc3\xb6rg@example.org");
	notice_free(&nt);
}

/* The top-level header of each kind. */
static void
test_header(void **state)
{
	static const char *subjects[] = {"Undelivered Mail Returned to Sender",
					 "Delayed Mail (still being retried)",
					 "Successful Mail Delivery Report"};
	static const char *mids[] = {"<" NID ".bounce@" HOST ">", "<" NID ".delay@" HOST ">",
				     "<" NID ".delivered@" HOST ">"};
	struct spool_msg m;
	struct notice nt;
	char v[256];

	(void)state;
	make_msg(&m);
	for (size_t k = 0; k < 3; k++) {
		notice_build(&nt, &m, original, sizeof(original) - 1, kinds[k]);
		assert_field(nt.head, "From", "Mail Delivery System <MAILER-DAEMON@" HOST ">");
		assert_field(nt.head, "To", "<" SENDER ">");
		assert_field(nt.head, "Subject", subjects[k]);
		assert_field(nt.head, "Message-ID", mids[k]);
		assert_field(nt.head, "MIME-Version", "1.0");
		/* RFC 3834 5: so that vacation responders stay quiet. */
		assert_field(nt.head, "Auto-Submitted", "auto-replied");
		/* No 8-bit octets anywhere: no Content-Transfer-Encoding needed. */
		assert_int_equal(field_count(nt.head, "Content-Transfer-Encoding"), 0);

		/* Date: RFC 5322 3.3, and now. */
		struct tm tm;
		memset(&tm, 0, sizeof(tm));
		assert_true(field(nt.head, "Date", v, sizeof(v)));
		const char *end = strptime(v, "%a, %d %b %Y %H:%M:%S +0000", &tm);
		assert_non_null(end);
		assert_int_equal(*end, '\0');
		int64_t d = (int64_t)timegm(&tm) - (int64_t)time(NULL);
		assert_true(d >= -60 && d <= 60);

		/* Each header field once (RFC 5322 3.6). */
		static const char *once[] = {"From", "To", "Subject", "Date", "Message-ID",
					     "MIME-Version", "Content-Type"};
		for (size_t i = 0; i < sizeof(once) / sizeof(once[0]); i++)
			assert_int_equal(field_count(nt.head, once[i]), 1);
		notice_free(&nt);
	}

	/* Two notices never share a boundary (a fixed one could appear in the original). */
	struct notice nt2;
	notice_build(&nt, &m, original, sizeof(original) - 1, DSN_FAILED);
	notice_build(&nt2, &m, original, sizeof(original) - 1, DSN_FAILED);
	assert_true(strlen(nt.boundary) >= 16);
	assert_string_not_equal(nt.boundary, nt2.boundary);
	notice_free(&nt);
	notice_free(&nt2);
}

/* The per-message fields (RFC 3464 2.2), the same in each kind. */
static void
test_per_message(void **state)
{
	struct spool_msg m;
	struct notice nt;
	struct span g[16];

	(void)state;
	make_msg(&m);
	for (size_t k = 0; k < 3; k++) {
		notice_build(&nt, &m, original, sizeof(original) - 1, kinds[k]);
		assert_true(notice_groups(&nt, g, 16) >= 2);
		assert_field(g[0], "Reporting-MTA", "dns; " HOST);
		/* 2.2.1: the ENVID as the sender gave it, xtext decoded. */
		assert_field(g[0], "Original-Envelope-Id", "ENV+1");
		assert_field(g[0], "Arrival-Date", "Tue, 14 Nov 2023 22:13:20 +0000");
		/* Per-recipient fields do not belong in the first group. */
		assert_int_equal(field_count(g[0], "Final-Recipient"), 0);
		notice_free(&nt);
	}

	/* Without ENVID there is no Original-Envelope-Id. */
	m.envid = NULL;
	notice_build(&nt, &m, original, sizeof(original) - 1, DSN_FAILED);
	assert_true(notice_groups(&nt, g, 16) >= 2);
	assert_int_equal(field_count(g[0], "Original-Envelope-Id"), 0);
	assert_int_equal(field_count(g[0], "Reporting-MTA"), 1);
	notice_free(&nt);
}

/* Which recipients each kind reports (RFC 3461 4.1 NOTIFY). */
static void
test_which_recipients(void **state)
{
	struct spool_msg m;
	struct notice nt;
	char got[1024];

	(void)state;
	make_msg(&m);
	notice_build(&nt, &m, original, sizeof(original) - 1, DSN_FAILED);
	reported(&nt, got, sizeof(got));
	assert_string_equal(got, "alice@example.test bob+x@remote.test");
	notice_free(&nt);

	notice_build(&nt, &m, original, sizeof(original) - 1, DSN_DELAYED);
	reported(&nt, got, sizeof(got));
	assert_string_equal(got, "dave@remote.test ivan@remote.test");
	notice_free(&nt);

	notice_build(&nt, &m, original, sizeof(original) - 1, DSN_DELIVERED);
	reported(&nt, got, sizeof(got));
	assert_string_equal(got, "carol@remote.test list@example.test kate@example.test");
	/* The text for people names the same ones and no other. */
	struct span text = body_of(nt.part[0]);
	assert_non_null(span_find(text, "<kate@example.test>: "));
	assert_null(span_find(text, "gina@"));
	assert_null(span_find(text, "alice@"));
	notice_free(&nt);

	notice_build(&nt, &m, original, sizeof(original) - 1, DSN_FAILED);
	text = body_of(nt.part[0]);
	assert_non_null(span_find(text, "<alice@example.test>: 5.2.2 Mailbox full\r\n"));
	assert_non_null(span_find(text, "<bob+x@remote.test>: host mx.remote.test[192.0.2.1] "
					"said: 550 5.1.1 <bob+x@remote.test>: user unknown\r\n"));
	assert_null(span_find(text, "erin@"));
	assert_null(span_find(text, "frank@"));
	assert_null(span_find(text, "carol@"));
	assert_null(span_find(text, "dave@"));
	notice_free(&nt);
}

/* dsn_wanted(): RFC 3461 4.1, for each NOTIFY and each kind. */
static void
test_wanted(void **state)
{
	static const struct {
		unsigned notify;
		int failed, delayed, delivered;
	} t[] = {
		{0, 1, 1, 0},	/* not given: FAILURE,DELAY (4.1) */
		{NOTIFY_NEVER, 0, 0, 0},
		{NOTIFY_SUCCESS, 0, 0, 1},
		{NOTIFY_FAILURE, 1, 0, 0},
		{NOTIFY_DELAY, 0, 1, 0},
		{NOTIFY_SUCCESS | NOTIFY_FAILURE, 1, 0, 1},
		{NOTIFY_FAILURE | NOTIFY_DELAY, 1, 1, 0},
		{NOTIFY_SUCCESS | NOTIFY_FAILURE | NOTIFY_DELAY, 1, 1, 1},
	};
	struct spool_rcpt rc;

	(void)state;
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		memset(&rc, 0, sizeof(rc));
		rc.notify = t[i].notify;
		assert_int_equal(dsn_wanted(&rc, DSN_FAILED), t[i].failed);
		assert_int_equal(dsn_wanted(&rc, DSN_DELAYED), t[i].delayed);
		assert_int_equal(dsn_wanted(&rc, DSN_DELIVERED), t[i].delivered);
	}
}

/* dsn_needed(): a notice of a kind only when someone is reported in it. */
static void
test_needed(void **state)
{
	static const enum rcpt_status states[] = {RCPT_FAILED, RCPT_DEFERRED, RCPT_DELIVERED};
	struct spool_rcpt rc = {.addr = "x@remote.test", .orig = "x@remote.test",
				.notify = NOTIFY_SUCCESS | NOTIFY_FAILURE | NOTIFY_DELAY};
	struct spool_msg m;

	(void)state;
	make_msg1(&m, &rc);
	for (size_t s = 0; s < 3; s++) {
		rc.status = states[s];
		for (size_t k = 0; k < 3; k++)
			assert_int_equal(dsn_needed(&m, kinds[k]), s == k);
	}
	rc.status = RCPT_PENDING;
	for (size_t k = 0; k < 3; k++)
		assert_int_equal(dsn_needed(&m, kinds[k]), 0);

	/* Failed, but not wanted. */
	rc.status = RCPT_FAILED;
	rc.notify = NOTIFY_NEVER;
	assert_int_equal(dsn_needed(&m, DSN_FAILED), 0);
	rc.notify = NOTIFY_DELAY;
	assert_int_equal(dsn_needed(&m, DSN_FAILED), 0);

	/* RFC 5321 6.1: nothing goes back to the null sender, nor about a notice. */
	rc.notify = 0;
	assert_int_equal(dsn_needed(&m, DSN_FAILED), 1);
	m.mail_from = "";
	assert_int_equal(dsn_needed(&m, DSN_FAILED), 0);
	m.mail_from = NULL;
	assert_int_equal(dsn_needed(&m, DSN_FAILED), 0);
	m.mail_from = SENDER;
	m.is_notice = 1;
	assert_int_equal(dsn_needed(&m, DSN_FAILED), 0);

	/* The whole fixture: one of each. */
	make_msg(&m);
	for (size_t k = 0; k < 3; k++)
		assert_int_equal(dsn_needed(&m, kinds[k]), 1);
}

/* The per-recipient fields of a bounce (RFC 3464 2.3). */
static void
test_failed_fields(void **state)
{
	struct spool_msg m;
	struct notice nt;
	struct span g;

	(void)state;
	make_msg(&m);
	notice_build(&nt, &m, original, sizeof(original) - 1, DSN_FAILED);

	/* A remote server's refusal: its name, its reply, its status code. */
	g = rcpt_group(&nt, "rfc822; bob+x@remote.test");
	assert_field(g, "Original-Recipient", "rfc822;bob+x@remote.test");
	assert_field(g, "Action", "failed");
	assert_field(g, "Status", "5.1.1");
	assert_field(g, "Remote-MTA", "dns; mx.remote.test");
	assert_field(g, "Diagnostic-Code", "smtp; 550 5.1.1 <bob+x@remote.test>: user unknown");
	assert_int_equal(field_count(g, "Will-Retry-Until"), 0);

	/* A local failure: no remote, no ORCPT, not an SMTP reply. */
	g = rcpt_group(&nt, "rfc822; alice@example.test");
	assert_int_equal(field_count(g, "Original-Recipient"), 0);
	assert_int_equal(field_count(g, "Remote-MTA"), 0);
	assert_field(g, "Action", "failed");
	assert_field(g, "Status", "5.2.2");
	assert_field(g, "Diagnostic-Code", "X-surat; 5.2.2 Mailbox full");
	notice_free(&nt);
}

/*
 * Status (RFC 3464 2.3.4) follows the recipient's last error, with the
 * class the kind says; a reply without an enhanced code gives X.0.0.
 */
static void
test_status_codes(void **state)
{
	static const struct {
		enum dsn_kind kind;
		const char *error;
		const char *status;
	} t[] = {
		{DSN_FAILED, "550 5.7.1 relaying denied", "5.7.1"},
		{DSN_FAILED, "550 4.2.1 mailbox busy", "5.2.1"},	/* a failure is class 5 */
		{DSN_FAILED, "550-5.7.26 unauthenticated", "5.7.26"},
		{DSN_FAILED, "554 go away", "5.0.0"},
		{DSN_FAILED, "550 5.1.1234 too many digits", "5.0.0"},
		{DSN_FAILED, "5.4.7 Delivery time expired after 5 days", "5.4.7"},
		{DSN_FAILED, NULL, "5.0.0"},
		{DSN_DELAYED, "451 4.7.1 greylisted", "4.7.1"},
		{DSN_DELAYED, "452 5.2.2 over quota", "4.2.2"},	/* a delay is class 4 */
		{DSN_DELAYED, "connection refused", "4.0.0"},
		{DSN_DELIVERED, "250 2.6.0 queued as 1234", "2.0.0"},
	};
	static const enum rcpt_status states[] = {RCPT_FAILED, RCPT_DEFERRED, RCPT_DELIVERED};
	struct spool_rcpt rc;
	struct spool_msg m;
	struct notice nt;

	(void)state;
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		memset(&rc, 0, sizeof(rc));
		rc.addr = rc.orig = "x@remote.test";
		rc.notify = NOTIFY_SUCCESS | NOTIFY_FAILURE | NOTIFY_DELAY;
		rc.status = states[t[i].kind];
		rc.remote = "mx.remote.test[192.0.2.1]";
		rc.last_error = (char *)t[i].error;
		make_msg1(&m, &rc);
		notice_build(&nt, &m, original, sizeof(original) - 1, t[i].kind);
		struct span g = rcpt_group(&nt, "rfc822; x@remote.test");
		assert_field(g, "Status", t[i].status);
		/* 2.3.6: no Diagnostic-Code without a diagnostic. */
		assert_int_equal(field_count(g, "Diagnostic-Code"), t[i].error != NULL);
		notice_free(&nt);
	}
}

/* A delay notice: Action delayed, and until when it is retried (2.3.7). */
static void
test_delayed_fields(void **state)
{
	struct spool_msg m;
	struct notice nt;
	struct span g;

	(void)state;
	make_msg(&m);
	notice_build(&nt, &m, original, sizeof(original) - 1, DSN_DELAYED);
	g = rcpt_group(&nt, "rfc822; dave@remote.test");
	assert_field(g, "Action", "delayed");
	assert_field(g, "Status", "4.7.1");
	assert_field(g, "Remote-MTA", "dns; mx2.remote.test");
	assert_field(g, "Diagnostic-Code", "smtp; 451 4.7.1 greylisted");
	/* Arrival plus queue.max_age (5 days). */
	assert_field(g, "Will-Retry-Until", "Sun, 19 Nov 2023 22:13:20 +0000");

	g = rcpt_group(&nt, "rfc822; ivan@remote.test");
	assert_field(g, "Action", "delayed");
	assert_field(g, "Status", "4.4.1");
	assert_int_equal(field_count(g, "Remote-MTA"), 0);
	assert_field(g, "Diagnostic-Code", "X-surat; 4.4.1 connection timed out");
	assert_field(g, "Will-Retry-Until", "Sun, 19 Nov 2023 22:13:20 +0000");

	/* The people's part says how long it will be tried. */
	assert_non_null(span_find(body_of(nt.part[0]), "for up to 5 days in all"));
	notice_free(&nt);
}

/*
 * A success notice: "delivered" into a mailbox here, "relayed" to a server
 * that reports no further (RFC 3461 5.2.2), "expanded" for an alias
 * (6.2.7.3); status 2.0.0.
 */
static void
test_delivered_fields(void **state)
{
	struct spool_msg m;
	struct notice nt;
	struct span g;

	(void)state;
	make_msg(&m);
	notice_build(&nt, &m, original, sizeof(original) - 1, DSN_DELIVERED);
	g = rcpt_group(&nt, "rfc822; kate@example.test");
	assert_field(g, "Action", "delivered");
	assert_field(g, "Status", "2.0.0");
	assert_int_equal(field_count(g, "Remote-MTA"), 0);
	assert_int_equal(field_count(g, "Will-Retry-Until"), 0);

	g = rcpt_group(&nt, "rfc822; carol@remote.test");
	assert_field(g, "Action", "relayed");
	assert_field(g, "Status", "2.0.0");
	assert_field(g, "Remote-MTA", "dns; mx.remote.test");
	assert_field(g, "Diagnostic-Code", "smtp; 250 2.0.0 Ok: queued");

	g = rcpt_group(&nt, "rfc822; list@example.test");
	assert_field(g, "Action", "expanded");
	assert_field(g, "Status", "2.0.0");
	notice_free(&nt);
}

/*
 * What of the original comes back (RFC 3461 4.3, RFC 3462 / 6522): the
 * whole message (message/rfc822) for RET=FULL or no RET in a failure or
 * delay notice under 256 KiB; else its header alone (text/rfc822-headers);
 * a success notice always returns the header only.
 */
static void
test_returned_content(void **state)
{
	static const char body_line[] = "The body line only a full return carries.";
	struct spool_msg m;
	struct notice nt;
	struct span p;

	(void)state;
	make_msg(&m);
	for (size_t k = 0; k < 3; k++) {
		notice_build(&nt, &m, original, sizeof(original) - 1, kinds[k]);
		if (kinds[k] != DSN_FAILED) {
			/* Only a failure returns the message (RFC 3461 4.3). */
			p = part_of_type(&nt, "text/rfc822-headers");
			assert_null(span_find(p, body_line));
		} else {
			p = part_of_type(&nt, "message/rfc822");
			/* The message itself, whole, after the part's header. */
			assert_int_equal(body_of(p).n, sizeof(original) - 1);
			assert_memory_equal(body_of(p).p, original, sizeof(original) - 1);
		}
		assert_non_null(span_find(p, "Subject: quarterly numbers\r\n"));
		notice_free(&nt);
	}

	/* RET=HDRS: the header, without the blank line and the body. */
	m.ret_hdrs = 1;
	for (size_t k = 0; k < 3; k++) {
		notice_build(&nt, &m, original, sizeof(original) - 1, kinds[k]);
		p = part_of_type(&nt, "text/rfc822-headers");
		struct span b = body_of(p);
		assert_null(span_find(p, body_line));
		assert_non_null(span_find(b, "From: Sender <sender@example.org>\r\n"));
		assert_non_null(span_find(b, "Subject: quarterly numbers\r\n"));
		assert_null(span_find(b, "\r\n\r\n"));
		notice_free(&nt);
	}
	m.ret_hdrs = 0;

	/* Over 256 KiB: the header only, even with RET=FULL. */
	struct buf big = BUF_INIT(0);
	buf_puts(&big, "Subject: big\r\n\r\n");
	while (big.len <= 256 * 1024)
		buf_puts(&big, "0123456789012345678901234567890123456789012345678901234567890123\r\n");
	notice_build(&nt, &m, big.data, big.len, DSN_FAILED);
	p = part_of_type(&nt, "text/rfc822-headers");
	assert_field(body_of(p), "Subject", "big");
	assert_null(span_find(p, "0123456789"));
	assert_true(nt.c.len < 4096);
	notice_free(&nt);

	/* At 256 KiB exactly, still whole. */
	buf_truncate(&big, 256 * 1024 - 2);
	buf_puts(&big, "\r\n");
	assert_int_equal(big.len, 256 * 1024);
	notice_build(&nt, &m, big.data, big.len, DSN_FAILED);
	p = part_of_type(&nt, "message/rfc822");
	assert_int_equal(body_of(p).n, big.len);
	notice_free(&nt);

	/*
	 * No empty line: the header ends at the first line that is no field
	 * (the body to readers), not with the message (the whole content came
	 * back as "its header", to a sender a client without AUTH names).
	 */
	buf_reset(&big);
	buf_puts(&big, "Subject: no blank line\r\nX-Folded: a\r\n b\r\n");
	while (big.len <= 300 * 1024)
		buf_puts(&big, "spam text 0123456789012345678901234567890123456789012345678\r\n");
	m.ret_hdrs = 1;
	notice_build(&nt, &m, big.data, big.len, DSN_FAILED);
	p = part_of_type(&nt, "text/rfc822-headers");
	assert_field(body_of(p), "Subject", "no blank line");
	assert_non_null(span_find(body_of(p), "X-Folded: a\r\n b\r\n"));
	assert_null(span_find(p, "spam text"));
	assert_true(nt.c.len < 4096);
	notice_free(&nt);

	/* A header of more than 256 KiB: cut after a line within 256 KiB. */
	buf_reset(&big);
	buf_puts(&big, "Subject: huge header\r\n");
	while (big.len <= 300 * 1024)
		buf_puts(&big,
			 "X-Pad: 0123456789012345678901234567890123456789012345678901234567\r\n");
	buf_puts(&big, "\r\nbody\r\n");
	notice_build(&nt, &m, big.data, big.len, DSN_FAILED);
	p = part_of_type(&nt, "text/rfc822-headers");
	struct span hb = body_of(p);
	assert_field(hb, "Subject", "huge header");
	assert_true(hb.n <= 256 * 1024 && hb.n > 250 * 1024);
	assert_memory_equal(hb.p + hb.n - 2, "\r\n", 2);
	assert_null(span_find(p, "body"));
	notice_free(&nt);
	m.ret_hdrs = 0;
	buf_free(&big);

	/* An original without a body, or without a final CRLF, still makes
	 * well-formed lines (assert_lines_ok in notice_build). */
	static const char nobody[] = "Subject: only a header\r\n";
	notice_build(&nt, &m, nobody, sizeof(nobody) - 1, DSN_FAILED);
	assert_field(body_of(part_of_type(&nt, "message/rfc822")), "Subject", "only a header");
	notice_free(&nt);
	static const char open_end[] = "Subject: x\r\n\r\nno final line end";
	notice_build(&nt, &m, open_end, sizeof(open_end) - 1, DSN_FAILED);
	assert_non_null(span_find(part_of_type(&nt, "message/rfc822"), "no final line end\r\n"));
	notice_free(&nt);
}

/* Whether s has an octet outside printable ASCII, tab, CR and LF. */
static int
has_odd_octet(struct span s)
{
	for (size_t i = 0; i < s.n; i++) {
		unsigned char c = (unsigned char)s.p[i];
		if (c >= 0x7f || (c < 0x20 && c != '\t' && c != '\r' && c != '\n'))
			return 1;
	}
	return 0;
}

/*
 * SECURITY: a remote server's text (its name, its reply), an ENVID and an
 * ORCPT with CR, LF, NUL-free controls or 8-bit octets cannot add header
 * fields or lines of their own, in either the header or the report.
 */
static void
test_injection(void **state)
{
	struct spool_rcpt rc = {
		.addr = "x@remote.test",
		.orig = "x@remote.test",
		/* "+0D+0A" is CRLF in xtext */
		.orcpt = "rfc822;x+0D+0AX-Evil-Orcpt:+201@remote.test",
		.status = RCPT_FAILED,
		.remote = "evil.test\r\nX-Evil-Remote: 1[192.0.2.9]",
		.last_error = "550 5.7.1 no\r\nX-Evil-Error: 1\r\n\r\n--fake\r\n"
			      "Content-Type: text/html\x1b\x7f\xff\xfe\xc3\xa9",
	};
	struct spool_msg m;
	struct notice nt;
	struct span g[16];
	char v[1024];

	(void)state;
	make_msg1(&m, &rc);
	m.envid = "E+0D+0AX-Evil-Envid:+201";
	notice_build(&nt, &m, original, sizeof(original) - 1, DSN_FAILED);

	/* No line of the notice starts with an injected name. */
	static const char *evil[] = {"\r\nX-Evil", "\r\n--fake", "\r\nContent-Type: text/html"};
	struct span all = {nt.c.data, nt.c.len};
	for (size_t i = 0; i < sizeof(evil) / sizeof(evil[0]); i++)
		assert_null(span_find(all, evil[i]));
	/* Nothing but printable ASCII: the octets were replaced, not passed on. */
	assert_false(has_odd_octet(all));
	assert_int_equal(nt.env.body_8bit, 0);

	/* The report still has its one recipient group, with every field once. */
	assert_int_equal(notice_groups(&nt, g, 16), 2);
	assert_int_equal(field_count(g[0], "Original-Envelope-Id"), 1);
	assert_int_equal(field_count(g[1], "Diagnostic-Code"), 1);
	assert_int_equal(field_count(g[1], "Remote-MTA"), 1);
	assert_field(g[1], "Action", "failed");
	assert_field(g[1], "Status", "5.7.1");
	assert_true(field(g[1], "Diagnostic-Code", v, sizeof(v)));
	assert_true(strncmp(v, "smtp; 550 5.7.1 no  X-Evil-Error: 1", 35) == 0);
	assert_true(field(g[1], "Original-Recipient", v, sizeof(v)));
	assert_string_equal(v, "rfc822;x  X-Evil-Orcpt: 1@remote.test");
	assert_true(field(g[0], "Original-Envelope-Id", v, sizeof(v)));
	assert_string_equal(v, "E  X-Evil-Envid: 1");

	/* And the original's boundary-less part is still the third. */
	assert_int_equal(nt.nparts, 3);
	notice_free(&nt);
}

/*
 * RFC 5322 2.1.1: no line over 998 octets, however long a server's reply
 * or a recipient address is. The text is folded, not lost: unfolded, the
 * Diagnostic-Code is the whole reply.
 */
static void
test_long_lines(void **state)
{
	struct spool_rcpt rc = {.addr = "x@remote.test", .orig = "x@remote.test",
				.status = RCPT_FAILED, .remote = "mx.remote.test[192.0.2.1]"};
	struct spool_msg m;
	struct notice nt;
	struct buf err = BUF_INIT(0), want = BUF_INIT(0);
	char *v = xmalloc(16384);

	(void)state;
	/* Words: the folding has white space to use. */
	buf_puts(&err, "550 5.7.1");
	while (err.len < 5000)
		buf_puts(&err, " blocked-for-a-reason");
	rc.last_error = err.data;
	make_msg1(&m, &rc);
	for (size_t k = 0; k < 2; k++) {
		rc.status = k == 0 ? RCPT_FAILED : RCPT_DEFERRED;
		notice_build(&nt, &m, original, sizeof(original) - 1, kinds[k]);
		struct span g = rcpt_group(&nt, "rfc822; x@remote.test");
		assert_true(field(g, "Diagnostic-Code", v, 16384));
		buf_reset(&want);
		buf_printf(&want, "smtp; %s", err.data);
		assert_string_equal(v, want.data);
		/* The people's part has it all too. */
		assert_non_null(span_find(body_of(nt.part[0]), "blocked-for-a-reason"));
		notice_free(&nt);
	}

	/* One long word: no white space to fold at, and lines still short. */
	buf_reset(&err);
	buf_puts(&err, "550 5.7.1 ");
	while (err.len < 3000)
		buf_putc(&err, 'z');
	rc.last_error = err.data;
	rc.status = RCPT_FAILED;
	notice_build(&nt, &m, original, sizeof(original) - 1, DSN_FAILED);
	assert_field(rcpt_group(&nt, "rfc822; x@remote.test"), "Status", "5.7.1");
	notice_free(&nt);

	/* CRs and LFs by the thousand become spaces: none makes an empty line. */
	buf_reset(&err);
	buf_puts(&err, "550 5.7.1 a");
	for (int i = 0; i < 1500; i++)
		buf_puts(&err, "\r\n");
	buf_puts(&err, "b");
	for (int i = 0; i < 1500; i++)
		buf_puts(&err, " \t");
	rc.last_error = err.data;
	notice_build(&nt, &m, original, sizeof(original) - 1, DSN_FAILED);
	assert_field(rcpt_group(&nt, "rfc822; x@remote.test"), "Diagnostic-Code",
		     "smtp; 550 5.7.1 a b");
	notice_free(&nt);

	/* UTF-8 (RFC 6533) without white space: broken between characters. */
	buf_reset(&err);
	buf_puts(&err, "550 5.7.1 x");	/* the x puts every break mid-character */
	while (err.len < 3000)
		buf_puts(&err, "\xc3\xa9");	/* e acute */
	rc.last_error = err.data;
	m.smtputf8 = 1;
	notice_build(&nt, &m, original, sizeof(original) - 1, DSN_FAILED);
	for (const char *p = strstr(nt.c.data, "\r\n"); p; p = strstr(p + 2, "\r\n")) {
		const char *next = p[2] == ' ' ? p + 3 : p + 2;
		assert_int_not_equal((unsigned char)p[-1], 0xc3);	/* no line ends in a lead */
		assert_int_not_equal((unsigned char)*next, 0xa9);	/* nor starts mid-character */
	}
	notice_free(&nt);

	free(v);
	buf_free(&err);
	buf_free(&want);
}

/*
 * RFC 6533: about an SMTPUTF8 message, the report is
 * message/global-delivery-status with utf-8 addresses, the original
 * message/global, and 8-bit content is labelled so (RFC 2045 6.1).
 */
static void
test_utf8(void **state)
{
	struct spool_rcpt rc = {.addr = "j\xc3\xbcrgen@b\xc3\xbc" "cher.test",
				.orig = "j\xc3\xbcrgen@b\xc3\xbc" "cher.test",
				.status = RCPT_FAILED, .remote = "mx.b\xc3\xbc" "cher.test[192.0.2.3]",
				/* well-formed UTF-8 stays; a lone 0xff does not */
				.last_error = "550 5.1.1 Empf\xc3\xa4nger unbekannt \xff"};
	static const char u8orig[] = "Subject: Gr\xc3\xbc\xc3\x9f" "e\r\n\r\nHallo\r\n";
	struct spool_msg m;
	struct notice nt;
	char v[1024];

	(void)state;
	make_msg1(&m, &rc);
	m.smtputf8 = 1;
	notice_build(&nt, &m, u8orig, sizeof(u8orig) - 1, DSN_FAILED);
	struct span g = rcpt_group(&nt, "utf-8; j\xc3\xbcrgen@b\xc3\xbc" "cher.test");
	assert_field(g, "Diagnostic-Code", "smtp; 550 5.1.1 Empf\xc3\xa4nger unbekannt  ");
	assert_field(g, "Status", "5.1.1");
	assert_true(field(head_of(part_of_type(&nt, "message/global-delivery-status")),
			  "Content-Transfer-Encoding", v, sizeof(v)));
	assert_string_equal(v, "8bit");
	struct span p = part_of_type(&nt, "message/global");
	assert_field(head_of(p), "Content-Transfer-Encoding", "8bit");
	assert_memory_equal(body_of(p).p, u8orig, sizeof(u8orig) - 1);
	assert_field(nt.head, "Content-Transfer-Encoding", "8bit");
	assert_int_equal(nt.env.body_8bit, 1);
	/* The people's part is declared utf-8. */
	assert_true(field(head_of(nt.part[0]), "Content-Type", v, sizeof(v)));
	assert_string_equal(v, "text/plain; charset=utf-8");
	notice_free(&nt);

	/* RFC 6533 3: a utf-8 ORCPT in its xtext form (EmbeddedUnicodeChar), in a
	 * global report decoded to the address; raw UTF-8 (unitext) as it is; a
	 * malformed escape (a surrogate, no "}", a NUL) as it came. */
	static const struct {
		char *orcpt;
		const char *want;
	} oc[] = {
	    {"utf-8;j\\x{FC}rgen@b\\x{fc}cher.test", "utf-8;j\xc3\xbcrgen@b\xc3\xbc" "cher.test"},
	    {"utf-8;\\x{1F600}+2Bx@b\\x{FC}cher.test", "utf-8;\xf0\x9f\x98\x80+x@b\xc3\xbc" "cher.test"},
	    {"utf-8;j\xc3\xbcrgen@b\xc3\xbc" "cher.test", "utf-8;j\xc3\xbcrgen@b\xc3\xbc" "cher.test"},
	    {"utf-8;a\\x{D800}@x.test", "utf-8;a\\x{D800}@x.test"},
	    {"utf-8;a\\x{FC@x.test", "utf-8;a\\x{FC@x.test"},
	    {"utf-8;a\\x{0}@x.test", "utf-8;a\\x{0}@x.test"},
	};
	for (size_t i = 0; i < sizeof(oc) / sizeof(oc[0]); i++) {
		rc.orcpt = oc[i].orcpt;
		notice_build(&nt, &m, u8orig, sizeof(u8orig) - 1, DSN_FAILED);
		g = rcpt_group(&nt, "utf-8; j\xc3\xbcrgen@b\xc3\xbc" "cher.test");
		assert_field(g, "Original-Recipient", oc[i].want);
		notice_free(&nt);
	}
	/* Not SMTPUTF8 (a 7-bit report): the xtext form as it came. */
	m.smtputf8 = 0;
	rc.addr = rc.orig = "x@remote.test";
	rc.orcpt = oc[0].orcpt;
	notice_build(&nt, &m, u8orig, sizeof(u8orig) - 1, DSN_FAILED);
	g = rcpt_group(&nt, "rfc822; x@remote.test");
	assert_field(g, "Original-Recipient", oc[0].orcpt);
	notice_free(&nt);
	m.smtputf8 = 1;
	rc.addr = rc.orig = "j\xc3\xbcrgen@b\xc3\xbc" "cher.test";
	rc.orcpt = NULL;

	/* RET=HDRS: message/global-headers. */
	m.ret_hdrs = 1;
	notice_build(&nt, &m, u8orig, sizeof(u8orig) - 1, DSN_FAILED);
	part_of_type(&nt, "message/global-headers");
	notice_free(&nt);

	/* Not SMTPUTF8, but an 8-bit body (8BITMIME): the classic types, with CTE 8bit. */
	rc.addr = rc.orig = "x@remote.test";
	rc.remote = "mx.remote.test[192.0.2.1]";
	m.smtputf8 = 0;
	m.ret_hdrs = 0;
	notice_build(&nt, &m, u8orig, sizeof(u8orig) - 1, DSN_FAILED);
	g = rcpt_group(&nt, "rfc822; x@remote.test");
	/* Without SMTPUTF8 no 8-bit octet of the reply comes through. */
	assert_field(g, "Diagnostic-Code", "smtp; 550 5.1.1 Empf  nger unbekannt  ");
	assert_field(head_of(part_of_type(&nt, "message/rfc822")), "Content-Transfer-Encoding",
		     "8bit");
	assert_field(nt.head, "Content-Transfer-Encoding", "8bit");
	assert_int_equal(nt.env.body_8bit, 1);
	notice_free(&nt);
}

static void
test_duration(void **state)
{
	static const struct {
		int64_t secs;
		const char *want;
	} t[] = {
		{5 * 86400, "5 days"},
		{86400, "1 day"},
		{4 * 3600, "4 hours"},
		{90, "90 seconds"},
		{0, "0 days"},
		{1, "1 second"},
		{59, "59 seconds"},
		{60, "1 minute"},
		{90 * 60, "90 minutes"},
		{3600, "1 hour"},
		{36 * 3600, "36 hours"},	/* under two days, in whole hours */
		{86400 + 1, "86401 seconds"},
		{2 * 86400 + 3600, "2 days"},	/* from two days on, whole days */
	};
	char out[64];

	(void)state;
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		dsn_duration(out, sizeof(out), t[i].secs);
		assert_string_equal(out, t[i].want);
	}
}

static void
test_kind_name(void **state)
{
	(void)state;
	assert_string_equal(dsn_kind_name(DSN_FAILED), "bounce");
	assert_string_equal(dsn_kind_name(DSN_DELAYED), "delay");
	assert_string_equal(dsn_kind_name(DSN_DELIVERED), "delivered");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_envelope),
		cmocka_unit_test(test_header),
		cmocka_unit_test(test_per_message),
		cmocka_unit_test(test_which_recipients),
		cmocka_unit_test(test_wanted),
		cmocka_unit_test(test_needed),
		cmocka_unit_test(test_failed_fields),
		cmocka_unit_test(test_status_codes),
		cmocka_unit_test(test_delayed_fields),
		cmocka_unit_test(test_delivered_fields),
		cmocka_unit_test(test_returned_content),
		cmocka_unit_test(test_injection),
		cmocka_unit_test(test_long_lines),
		cmocka_unit_test(test_utf8),
		cmocka_unit_test(test_duration),
		cmocka_unit_test(test_kind_name),
	};
	return cmocka_run_group_tests_name("queue_dsn", tests, NULL, NULL);
}
