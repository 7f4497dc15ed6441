/*
 * test_imap_search — unit tests for SEARCH evaluation and replies: every
 * search key, decoded and case-insensitive header and body matching, date
 * keys in their zones, sequence/UID sets and "$", NOT/OR/groups, MODSEQ,
 * CHARSET, the exact and the full-text paths of BODY/TEXT, and the SEARCH
 * and ESEARCH reply formats with SAVE. Messages go through a real store in
 * a temporary directory with metadata from mime_meta_compute(); programs
 * through the real imap_parser and imap_search_parse.
 *
 * SECURITY: test code; files are created under a mkdtemp(3) directory only.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "unit_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/util.h"
#include "imap/imap_parser.h"
#include "imap/imap_search.h"
#include "mime/mime_search.h"
#include "imap/imap_search_parse.h"
#include "mime/mime_meta.h"
#include "store/store.h"

#define ACCOUNT "alice@example.org"

struct fixture {
	char dir[64];
	struct store *st;
	struct store_mbox_view *view;
	struct imap_seqset recent;
	struct imap_seqset saved;
	uint64_t exact_max;
};

static const char m1[] = "From: Alice Example <alice@example.org>\r\n"
			 "To: Bob <bob@example.net>\r\n"
			 "Cc: carol@example.com\r\n"
			 "Subject: Meeting tomorrow\r\n"
			 "Date: Mon, 7 Feb 1994 21:52:25 -0800\r\n"
			 "X-Tag: alpha\r\n"
			 "\r\n"
			 "Let us meet at noon.\r\n";

static const char m2[] = "From: =?UTF-8?Q?J=C3=BCrgen?= <juergen@example.de>\r\n"
			 "To: alice@example.org\r\n"
			 "Bcc: secret@example.org\r\n"
			 "Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?= aus   Berlin\r\n"
			 "Date: Tue, 1 Mar 2022 10:00:00 +0100\r\n"
			 "MIME-Version: 1.0\r\n"
			 "Content-Type: text/plain; charset=utf-8\r\n"
			 "Content-Transfer-Encoding: 8bit\r\n"
			 "\r\n"
			 "Hallo Alice, sch\xc3\xb6ne Gr\xc3\xbc\xc3\x9f"
			 "e. \xc3\x84RGER\r\n";

static const char m3[] = "From: robot@example.net\r\n"
			 "Subject: [list] report\r\n"
			 "MIME-Version: 1.0\r\n"
			 "Content-Type: multipart/alternative; boundary=b\r\n"
			 "\r\n"
			 "--b\r\n"
			 "Content-Type: text/plain\r\n"
			 "Content-Transfer-Encoding: base64\r\n"
			 "\r\n"
			 "c2VjcmV0IGNvZGUgMTIzNDU=\r\n"
			 "--b\r\n"
			 "Content-Type: text/html\r\n"
			 "\r\n"
			 "<p>Hello <b>world</b></p>\r\n"
			 "--b--\r\n";

static char *m4;

static void
add_msg(struct fixture *fx, const char *text, int64_t idate, uint32_t flags, const char *kw)
{
	struct mime_meta mm;
	const char *kws[1] = {kw};

	mime_meta_compute(text, strlen(text), &mm);
	mm.meta.internal_date = idate;
	mm.meta.flags = flags;
	if (kw != NULL) {
		mm.meta.keywords = kws;
		mm.meta.nkeywords = 1;
	}
	assert_int_equal(store_append(fx->st, "INBOX", text, strlen(text), &mm.meta, NULL, NULL),
			 0);
	mime_meta_free(&mm);
}

static void
reload(struct fixture *fx)
{
	store_mbox_view_free(&fx->view);
	assert_int_equal(store_mailbox_load(fx->st, "INBOX", &fx->view), 0);
}

static int
setup(void **state)
{
	struct fixture *fx = xcalloc(1, sizeof(*fx));
	struct buf b = BUF_INIT(0);

	xsnprintf(fx->dir, sizeof(fx->dir), "/tmp/surat-search-XXXXXX");
	if (mkdtemp(fx->dir) == NULL)
		return -1;
	fx->st = store_open(fx->dir, ACCOUNT, NULL);
	if (fx->st == NULL)
		return -1;
	*state = fx;
	buf_puts(&b, "From: Alice <alice@example.org>\r\n"
		     "Subject: Re: Meeting tomorrow\r\n"
		     "Date: Mon, 1 Jan 2024 12:00:00 +0000\r\n"
		     "Message-ID: <m4@example.org>\r\n"
		     "\r\n");
	for (int i = 0; i < 50; i++)
		buf_puts(&b, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
			     "xxxxxx\r\n");
	m4 = buf_steal(&b);
	add_msg(fx, m1, 760686745, STORE_F_SEEN, NULL); /* 1994-02-08 05:52 UTC */
	add_msg(fx, m2, 1646125200, STORE_F_FLAGGED | STORE_F_ANSWERED,
		"Work");						    /* 2022-03-01 09:00 */
	add_msg(fx, m3, 1700000000, STORE_F_DELETED | STORE_F_DRAFT, NULL); /* 2023-11-14 */
	add_msg(fx, m4, 1704067200, 0, NULL);				    /* 2024-01-01 */
	reload(fx);
	imap_seqset_init(&fx->recent);
	imap_seqset_add(&fx->recent, fx->view->msgs[2].uid, fx->view->msgs[3].uid);
	imap_seqset_normalize(&fx->recent);
	imap_seqset_init(&fx->saved);
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *fx = *state;

	imap_seqset_free(&fx->recent);
	imap_seqset_free(&fx->saved);
	store_mbox_view_free(&fx->view);
	store_close(&fx->st);
	unit_rm_tree(fx->dir);
	free(m4);
	m4 = NULL;
	free(fx);
	return 0;
}

/* Parse "t SEARCH <keys>" into prog; 0 or -1. */
static int
parse_prog(const char *keys, struct imap_search_program *prog)
{
	struct imap_parser *p = imap_parser_new(NULL);
	struct buf line = BUF_INIT(0);
	size_t used, off = 0;
	const char *err;
	int r;

	buf_printf(&line, "t SEARCH %s\r\n", keys);
	while ((r = imap_parser_feed(p, line.data + off, line.len - off, &used)) ==
	       IMAP_PARSE_LITERAL) {
		off += used;
		imap_parser_literal_accept(p);
	}
	assert_int_equal(r, IMAP_PARSE_DONE);
	r = imap_search_parse(imap_parser_command(p)->args, prog, &err);
	imap_parser_free(&p);
	buf_free(&line);
	return r;
}

static struct imap_search_ctx
mkctx(struct fixture *fx)
{
	struct imap_search_ctx ctx = {fx->st,	  "INBOX",     fx->view->uidvalidity, fx->view,
				      &fx->saved, &fx->recent, fx->exact_max};
	return ctx;
}

/* The matching sequence numbers as "1 3 4", or "ERR <text>". Caller frees. */
static char *
search(struct fixture *fx, const char *keys)
{
	struct imap_search_program prog;
	struct imap_search_ctx ctx = mkctx(fx);
	unsigned char match[16];
	struct buf out = BUF_INIT(0);
	const char *err;

	assert_int_equal(parse_prog(keys, &prog), 0);
	memset(match, 0xee, sizeof(match));
	if (imap_search_eval(&ctx, &prog, match, &err) < 0) {
		imap_search_program_free(&prog);
		return xasprintf("ERR %s", err);
	}
	for (size_t i = 0; i < fx->view->count; i++) {
		assert_true(match[i] == 0 || match[i] == 1);
		if (match[i])
			buf_printf(&out, "%s%zu", out.len ? " " : "", i + 1);
	}
	assert_int_equal(match[fx->view->count], 0xee);
	imap_search_program_free(&prog);
	return out.data != NULL ? buf_steal(&out) : xstrdup("");
}

#define S_EQ(fx, keys, want)                                                                       \
	do {                                                                                       \
		char *got_ = search((fx), (keys));                                                 \
		if (strcmp(got_, (want)) != 0)                                                     \
			fail_msg("SEARCH %s: got \"%s\", want \"%s\"", (keys), got_, (want));      \
		free(got_);                                                                        \
	} while (0)

static void
test_flags(void **state)
{
	struct fixture *fx = *state;

	S_EQ(fx, "ALL", "1 2 3 4");
	S_EQ(fx, "ANSWERED", "2");
	S_EQ(fx, "UNANSWERED", "1 3 4");
	S_EQ(fx, "DELETED", "3");
	S_EQ(fx, "UNDELETED", "1 2 4");
	S_EQ(fx, "DRAFT", "3");
	S_EQ(fx, "UNDRAFT", "1 2 4");
	S_EQ(fx, "FLAGGED", "2");
	S_EQ(fx, "UNFLAGGED", "1 3 4");
	S_EQ(fx, "SEEN", "1");
	S_EQ(fx, "UNSEEN", "2 3 4");
	S_EQ(fx, "RECENT", "3 4");
	S_EQ(fx, "NEW", "3 4");
	S_EQ(fx, "OLD", "1 2");
	S_EQ(fx, "KEYWORD Work", "2");
	S_EQ(fx, "KEYWORD work", "2");
	S_EQ(fx, "KEYWORD Home", "");
	S_EQ(fx, "UNKEYWORD Work", "1 3 4");
}

static void
test_sizes_dates(void **state)
{
	struct fixture *fx = *state;

	S_EQ(fx, "LARGER 1000", "4");
	S_EQ(fx, "SMALLER 1000", "1 2 3");
	S_EQ(fx, "LARGER 4000000000", "");
	/* internal date, day in UTC */
	S_EQ(fx, "ON 8-Feb-1994", "1");
	S_EQ(fx, "ON 7-Feb-1994", "");
	S_EQ(fx, "BEFORE 8-Feb-1994", "");
	S_EQ(fx, "BEFORE 9-Feb-1994", "1");
	S_EQ(fx, "SINCE 1-Mar-2022", "2 3 4");
	S_EQ(fx, "SINCE 2-Mar-2022", "3 4");
	S_EQ(fx, "ON 1-Mar-2022", "2");
	S_EQ(fx, "BEFORE 1-Jan-2024 SINCE 1-Jan-2000", "2 3");
	/* Date: header, day in its own zone; none counts as 1970 */
	S_EQ(fx, "SENTON 7-Feb-1994", "1");
	S_EQ(fx, "SENTON 8-Feb-1994", "");
	S_EQ(fx, "SENTBEFORE 1-Jan-1971", "3");
	S_EQ(fx, "SENTSINCE 1-Mar-2022", "2 4");
	S_EQ(fx, "SENTON 1-Jan-2024", "4");
	S_EQ(fx, "SENTBEFORE 1-Mar-2022", "1 3");
}

static void
test_headers(void **state)
{
	struct fixture *fx = *state;

	S_EQ(fx, "FROM alice", "1 4");
	S_EQ(fx, "FROM \"Alice Example\"", "1");
	S_EQ(fx, "FROM \"Alice Example <alice@\"", "1");
	S_EQ(fx, "FROM \"J\xc3\xbcrgen\"", "2");
	S_EQ(fx, "FROM \"J\xc3\x9cRGEN\"", "2");
	S_EQ(fx, "FROM example.de", "2");
	S_EQ(fx, "FROM \"\"", "1 2 3 4");
	S_EQ(fx, "TO alice", "2");
	S_EQ(fx, "TO BOB", "1");
	S_EQ(fx, "TO \"\"", "1 2");
	S_EQ(fx, "CC carol", "1");
	S_EQ(fx, "BCC secret", "2");
	S_EQ(fx, "SUBJECT meeting", "1 4");
	S_EQ(fx,
	     "SUBJECT \"gr\xc3\xbc\xc3\x9f"
	     "e aus berlin\"",
	     "2");
	S_EQ(fx, "SUBJECT \"[list]\"", "3");
	S_EQ(fx, "SUBJECT \"=?UTF-8\"", "");
	S_EQ(fx, "HEADER X-Tag alpha", "1");
	S_EQ(fx, "HEADER x-tag ALP", "1");
	S_EQ(fx, "HEADER X-Tag \"\"", "1");
	S_EQ(fx, "HEADER X-None \"\"", "");
	S_EQ(fx, "HEADER Message-ID m4@", "4");
	S_EQ(fx, "HEADER Content-Type alternative", "3");
	/* Names no field of these messages has (RFC 5322 2.2) match nothing, as in Dovecot. */
	S_EQ(fx, "HEADER \"\" alpha", "");
	S_EQ(fx, "HEADER \"\" \"\"", "");
	S_EQ(fx, "NOT HEADER \"\" \"\"", "1 2 3 4");
	S_EQ(fx, "HEADER \"X-Tag:\" alpha", "");
	S_EQ(fx, "HEADER \"X-Tag \" \"\"", "");
	S_EQ(fx, "HEADER \"X-T\xc3\xa4g\" \"\"", "");
	/* a literal works like a quoted string */
	S_EQ(fx, "SUBJECT {7}\r\nmeeting", "1 4");
}

static void
test_body_text_exact(void **state)
{
	struct fixture *fx = *state;

	S_EQ(fx, "BODY noon", "1");
	S_EQ(fx, "BODY oon", "1");
	S_EQ(fx, "BODY \"meet at\"", "1");
	S_EQ(fx, "BODY \"secret code 123\"", "3");
	S_EQ(fx, "BODY c2VjcmV0", "");
	S_EQ(fx, "BODY world", "3");
	S_EQ(fx, "BODY \"\xc3\xa4rger\"", "2");
	S_EQ(fx, "BODY \"\xc3\xb6ne\"", "2");
	S_EQ(fx, "BODY meeting", "");
	S_EQ(fx, "BODY \"\"", "1 2 3 4");
	S_EQ(fx, "BODY \".\"", "1 2");
	S_EQ(fx, "TEXT meeting", "1 4");
	S_EQ(fx, "TEXT noon", "1");
	S_EQ(fx, "TEXT x-tag", "1");
	S_EQ(fx,
	     "TEXT \"gr\xc3\xbc\xc3\x9f"
	     "e\"",
	     "2");
	S_EQ(fx, "TEXT hello", "3");
	S_EQ(fx, "TEXT zzzz", "");
}

/* TEXT is "the header or body of the message" (RFC 3501 6.4.4): the body
 * holds the MIME headers of its parts and the header of an encapsulated
 * message, which match too (as in Dovecot); BODY and raw base64 do not. */
static void
test_text_part_headers(void **state)
{
	struct fixture *fx = *state;

	add_msg(fx,
		"From: fwd@example.org\r\n"
		"Subject: forwarded\r\n"
		"MIME-Version: 1.0\r\n"
		"Content-Type: multipart/mixed; boundary=f\r\n"
		"\r\n"
		"--f\r\n"
		"Content-Type: application/pdf; name=\"q3-report.pdf\"\r\n"
		"\r\n"
		"%PDF\r\n"
		"--f\r\n"
		"Content-Type: message/rfc822\r\n"
		"\r\n"
		"From: inner@example.org\r\n"
		"Message-ID: <inner-id@example.org>\r\n"
		"X-Inner: =?utf-8?q?tr=C3=A8s?=\r\n"
		"\r\n"
		"inner body\r\n"
		"--f--\r\n",
		1704067200, 0, NULL);
	reload(fx);
	S_EQ(fx, "TEXT text/html", "3");
	S_EQ(fx, "TEXT \"transfer-encoding: base64\"", "3");
	S_EQ(fx, "TEXT c2VjcmV0", "");
	S_EQ(fx, "TEXT q3-report", "5");
	S_EQ(fx, "TEXT application/pdf", "5");
	S_EQ(fx, "TEXT inner-id@example.org", "5");
	S_EQ(fx, "TEXT \"x-inner: tr\xc3\xa8s\"", "5");
	S_EQ(fx, "TEXT \"inner body\"", "5");
	S_EQ(fx, "BODY inner-id", "");
	S_EQ(fx, "BODY text/html", "");
}

static void
test_body_text_fts(void **state)
{
	struct fixture *fx = *state;

	fx->exact_max = 1; /* every mailbox is "large": the full-text index decides */
	S_EQ(fx, "BODY noon", "1");
	S_EQ(fx, "BODY NOO", "1");
	S_EQ(fx, "BODY \"meet at\"", "1");
	S_EQ(fx, "BODY \"secret code 123\"", "3");
	S_EQ(fx, "BODY \"code secret\"", "");
	S_EQ(fx, "BODY \"\xc3\xa4rger\"", "2");
	S_EQ(fx, "BODY meeting", "");
	S_EQ(fx, "BODY \"\"", "1 2 3 4");
	S_EQ(fx, "TEXT meeting", "1 4");
	S_EQ(fx, "TEXT hello", "3");
	S_EQ(fx, "TEXT carol@example", "1");
	/* no letters or digits: an exact scan */
	S_EQ(fx, "BODY \".\"", "1 2");
	/* XXX: the index matches words and word prefixes only */
	S_EQ(fx, "BODY oon", "");
	S_EQ(fx, "NOT BODY noon", "2 3 4");
	S_EQ(fx, "SEEN BODY noon", "1");
	S_EQ(fx, "UNSEEN BODY noon", "");
}

/*
 * The index keeps 1 MiB of a message's text: a word past that was not
 * found by BODY or TEXT in a mailbox large enough for the index to decide,
 * though it was in a small one. Such a message is read instead.
 */
static void
test_body_text_fts_cut(void **state)
{
	struct fixture *fx = *state;
	struct buf b = BUF_INIT(0);

	buf_puts(&b, "From: Big <big@example.org>\r\nSubject: big\r\n\r\nbeginning\r\n");
	for (int i = 0; i < 20000; i++)
		buf_puts(&b, "filler text to push the last word past the index's share\r\n");
	buf_puts(&b, "farawayword at the end\r\n");
	add_msg(fx, buf_str(&b), 1704067300, 0, NULL);
	buf_free(&b);
	reload(fx);
	fx->exact_max = 1;
	S_EQ(fx, "BODY farawayword", "5");
	S_EQ(fx, "NOT TEXT \"farawayword at\"", "1 2 3 4");
	S_EQ(fx, "OR BODY noon TEXT " MIME_META_TEXT_CUT_WORD, "1");
}

static void
test_sets_and_logic(void **state)
{
	struct fixture *fx = *state;
	uint32_t u1 = fx->view->msgs[0].uid, u3 = fx->view->msgs[2].uid;
	char keys[64];

	S_EQ(fx, "1", "1");
	S_EQ(fx, "2:3", "2 3");
	S_EQ(fx, "3:*", "3 4");
	S_EQ(fx, "*", "4");
	S_EQ(fx, "1,4", "1 4");
	S_EQ(fx, "5:7", "");
	xsnprintf(keys, sizeof(keys), "UID %u", u3);
	S_EQ(fx, keys, "3");
	xsnprintf(keys, sizeof(keys), "UID %u:*", u3);
	S_EQ(fx, keys, "3 4");
	S_EQ(fx, "UID 4000000000", "");
	S_EQ(fx, "UID *", "4");
	S_EQ(fx, "NOT SEEN", "2 3 4");
	S_EQ(fx, "NOT NOT SEEN", "1");
	S_EQ(fx, "OR SEEN FLAGGED", "1 2");
	S_EQ(fx, "OR SEEN OR FLAGGED DELETED", "1 2 3");
	S_EQ(fx, "(SEEN) (UNSEEN)", "");
	S_EQ(fx, "(OR SEEN DELETED) SMALLER 1000", "1 3");
	S_EQ(fx, "OR (FROM alice SINCE 1-Jan-2020) KEYWORD Work", "2 4");
	S_EQ(fx, "NOT (FROM alice)", "2 3");
	S_EQ(fx, "1:3 NOT 2", "1 3");

	/* $: the saved UIDs, for sequence and UID sets alike */
	S_EQ(fx, "$", "");
	imap_seqset_add(&fx->saved, u1, u1);
	imap_seqset_add(&fx->saved, u3, u3);
	imap_seqset_normalize(&fx->saved);
	S_EQ(fx, "$", "1 3");
	S_EQ(fx, "UID $", "1 3");
	S_EQ(fx, "NOT $", "2 4");
	S_EQ(fx, "$ SEEN", "1");
}

static void
test_modseq_charset(void **state)
{
	struct fixture *fx = *state;
	struct store_range r = {fx->view->msgs[1].uid, fx->view->msgs[1].uid};
	struct store_flag_change chg = {STORE_FLAGS_ADD, STORE_F_SEEN, NULL, 0, 0, 0};
	struct store_flag_result res;
	char keys[64];

	assert_int_equal(store_flags(fx->st, "INBOX", fx->view->uidvalidity, &r, 1, &chg, &res), 0);
	store_flag_result_free(&res);
	reload(fx);
	xsnprintf(keys, sizeof(keys), "MODSEQ %llu", (unsigned long long)fx->view->msgs[1].modseq);
	S_EQ(fx, keys, "2");
	S_EQ(fx, "MODSEQ 1", "1 2 3 4");
	xsnprintf(keys, sizeof(keys), "MODSEQ \"/flags/\\\\Seen\" all %llu",
		  (unsigned long long)fx->view->msgs[1].modseq);
	S_EQ(fx, keys, "2");
	S_EQ(fx, "CHARSET UTF-8 SUBJECT meeting", "1 4");
	S_EQ(fx, "CHARSET us-ascii SUBJECT meeting", "1 4");
	S_EQ(fx, "CHARSET ISO-8859-1 SUBJECT meeting", "ERR " IMAP_SEARCH_ERR_BADCHARSET);
}

/* Format the reply of keys (with RETURN options if any); caller frees. */
static char *
format(struct fixture *fx, const char *keys, int uid, struct imap_seqset *saved)
{
	struct imap_search_program prog;
	struct imap_search_ctx ctx = mkctx(fx);
	unsigned char match[16];
	struct buf out = BUF_INIT(0);
	const char *err;

	assert_int_equal(parse_prog(keys, &prog), 0);
	assert_int_equal(imap_search_eval(&ctx, &prog, match, &err), 0);
	assert_int_equal(imap_search_format(&out, &ctx, &prog, match, "a1", uid, saved), 0);
	imap_search_program_free(&prog);
	return out.data != NULL ? buf_steal(&out) : xstrdup("");
}

#define F_EQ(fx, keys, uid, want)                                                                  \
	do {                                                                                       \
		char *got_ = format((fx), (keys), (uid), NULL);                                    \
		assert_string_equal(got_, (want));                                                 \
		free(got_);                                                                        \
	} while (0)

static void
test_format(void **state)
{
	struct fixture *fx = *state;
	const struct store_msg *v = fx->view->msgs;
	char want[256];
	uint64_t top = 0;
	struct imap_seqset saved;
	struct buf b = BUF_INIT(0);
	char *got;

	for (size_t i = 0; i < fx->view->count; i++)
		if (v[i].modseq > top)
			top = v[i].modseq;
	F_EQ(fx, "UNSEEN", 0, "* SEARCH 2 3 4\r\n");
	F_EQ(fx, "DRAFT SEEN", 0, "* SEARCH\r\n");
	xsnprintf(want, sizeof(want), "* SEARCH %u %u\r\n", v[0].uid, v[3].uid);
	F_EQ(fx, "FROM alice", 1, want);
	xsnprintf(want, sizeof(want), "* SEARCH 1 2 3 4 (MODSEQ %llu)\r\n",
		  (unsigned long long)top);
	F_EQ(fx, "MODSEQ 1", 0, want);
	F_EQ(fx, "MODSEQ 999999", 0, "* SEARCH\r\n");

	F_EQ(fx, "RETURN () UNSEEN", 0, "* ESEARCH (TAG \"a1\") ALL 2:4\r\n");
	F_EQ(fx, "RETURN (ALL) OR SEEN DELETED", 0, "* ESEARCH (TAG \"a1\") ALL 1,3\r\n");
	F_EQ(fx, "RETURN (MIN MAX COUNT) UNSEEN", 0,
	     "* ESEARCH (TAG \"a1\") MIN 2 MAX 4 COUNT 3\r\n");
	F_EQ(fx, "RETURN (COUNT MIN MAX ALL) UNSEEN", 0,
	     "* ESEARCH (TAG \"a1\") MIN 2 MAX 4 ALL 2:4 COUNT 3\r\n");
	F_EQ(fx, "RETURN (MIN MAX ALL COUNT) DRAFT SEEN", 0, "* ESEARCH (TAG \"a1\") COUNT 0\r\n");
	F_EQ(fx, "RETURN (MIN) DRAFT SEEN", 0, "* ESEARCH (TAG \"a1\")\r\n");
	xsnprintf(want, sizeof(want), "* ESEARCH (TAG \"a1\") UID MIN %u ALL %u,%u:%u\r\n",
		  v[0].uid, v[0].uid, v[2].uid, v[3].uid);
	F_EQ(fx, "RETURN (MIN ALL) OR SEEN UNANSWERED", 1, want);
	xsnprintf(want, sizeof(want), "* ESEARCH (TAG \"a1\") COUNT 4 MODSEQ %llu\r\n",
		  (unsigned long long)top);
	F_EQ(fx, "RETURN (COUNT) MODSEQ 1", 0, want);
	xsnprintf(want, sizeof(want), "* ESEARCH (TAG \"a1\") MIN 1 MODSEQ %llu\r\n",
		  (unsigned long long)v[0].modseq);
	F_EQ(fx, "RETURN (MIN) MODSEQ 1", 0, want);
	/* RETURN (SAVE) alone says nothing */
	F_EQ(fx, "RETURN (SAVE) UNSEEN", 0, "");

	/* SAVE keeps UIDs: all matches, or only MIN/MAX */
	imap_seqset_init(&saved);
	got = format(fx, "RETURN (SAVE) UNSEEN", 0, &saved);
	free(got);
	imap_seqset_format(&saved, &b);
	xsnprintf(want, sizeof(want), "%u:%u", v[1].uid, v[3].uid);
	assert_string_equal(buf_str(&b), want);
	buf_reset(&b);
	got = format(fx, "RETURN (SAVE MIN MAX) UNSEEN", 0, &saved);
	assert_string_equal(got, "* ESEARCH (TAG \"a1\") MIN 2 MAX 4\r\n");
	free(got);
	imap_seqset_format(&saved, &b);
	xsnprintf(want, sizeof(want), "%u,%u", v[1].uid, v[3].uid);
	assert_string_equal(buf_str(&b), want);
	buf_reset(&b);
	got = format(fx, "RETURN (SAVE MIN COUNT) UNSEEN", 0, &saved);
	free(got);
	imap_seqset_format(&saved, &b);
	xsnprintf(want, sizeof(want), "%u:%u", v[1].uid, v[3].uid);
	assert_string_equal(buf_str(&b), want);
	imap_seqset_free(&saved);
	buf_free(&b);
}

static void
test_format_limits(void **state)
{
	struct fixture *fx = *state;
	struct imap_search_program prog;
	struct imap_search_ctx ctx = mkctx(fx);
	unsigned char match[4] = {1, 1, 1, 1};
	struct buf out = BUF_INIT(8);

	assert_int_equal(parse_prog("ALL", &prog), 0);
	buf_puts(&out, "x");
	assert_int_equal(imap_search_format(&out, &ctx, &prog, match, "a1", 0, NULL), -1);
	assert_string_equal(buf_str(&out), "x");
	imap_search_program_free(&prog);
	buf_free(&out);
}

static void
test_long_header(void **state)
{
	struct fixture *fx = *state;
	struct buf b = BUF_INIT(0);

	/* a header block over several read chunks: fields after it are still found */
	buf_puts(&b, "Subject: padded\r\n");
	for (int i = 0; i < 400; i++)
		buf_printf(&b, "X-Pad-%03d: %s\r\n", i,
			   "................................................");
	buf_puts(&b, "X-Late: found me\r\n\r\nthe tail\r\n");
	add_msg(fx, buf_str(&b), 1704067200, 0, NULL);
	buf_free(&b);
	reload(fx);
	S_EQ(fx, "HEADER X-Late \"found me\"", "5");
	S_EQ(fx, "HEADER X-Pad-399 \"\"", "5");
	S_EQ(fx, "SUBJECT padded BODY tail", "5");
	S_EQ(fx, "HEADER X-Late tail", "");
}

static void
test_casemap(void **state)
{
	struct buf b = BUF_INIT(0);

	(void)state;
	const char *in1 = "AbC \xc3\x84\xc3\x96\xc3\x9c \xce\xa3\xcf\x82 \xd0\x96 \xff";
	const char *in2 = "abc \xc3\xa4\xc3\xbf \xc4\x9b";
	mime_casemap(&b, in1, strlen(in1), 0);
	assert_string_equal(buf_str(&b),
			    "abc \xc3\xa4\xc3\xb6\xc3\xbc \xcf\x83\xcf\x83 \xd0\xb6 \xff");
	buf_reset(&b);
	mime_casemap(&b, in2, strlen(in2), 1);
	assert_string_equal(buf_str(&b), "ABC \xc3\x84\xc5\xb8 \xc4\x9a");
	buf_free(&b);
}

/*
 * KEYWORD keys are looked up in a table of the program's keyword names, one
 * scan of a message's list for all of them: past 64 names (the second word
 * of the bit set), in any case, a name given twice, and against messages
 * with no keywords.
 */
static void
test_many_keywords(void **state)
{
	struct fixture *fx = *state;
	struct store_mbox_view big = *fx->view;
	static char k1[] = "k150", k2[] = "Other K70", k3[] = "other";
	char *kws[4] = {k1, k2, k3, NULL};
	struct buf keys = BUF_INIT(0);

	big.msgs = xcalloc(4, sizeof(*big.msgs));
	for (size_t i = 0; i < 4; i++) {
		big.msgs[i] = fx->view->msgs[i];
		big.msgs[i].keywords = kws[i];
	}
	struct store_mbox_view *saved = fx->view;
	fx->view = &big;
	for (int i = 0; i < 200; i++)
		buf_printf(&keys, "%sUNKEYWORD %c%d", i ? " " : "", i % 3 ? 'k' : 'K', i);
	buf_puts(&keys, " UNKEYWORD k5");
	S_EQ(fx, keys.data, "3 4");
	S_EQ(fx, "KEYWORD k70 KEYWORD OTHER", "2");
	S_EQ(fx, "OR KEYWORD k150 KEYWORD K70", "1 2");
	S_EQ(fx, "NOT KEYWORD other", "1 4");
	fx->view = saved;
	buf_free(&keys);
	free(big.msgs);
}

/*
 * Which programs the event loop answers from the snapshot, and which go
 * to the pool: keys times messages within SEARCH_HERE_MAX (2^20), the
 * KEYWORD keys with one scan of a message's list on top.
 */
static void
test_view_only_budget(void **state)
{
	struct imap_search_program prog;
	struct buf keys = BUF_INIT(0);

	(void)state;
	for (int i = 0; i < 2040; i++)
		buf_puts(&keys, "UNKEYWORD a ");
	buf_puts(&keys, "SEEN");
	assert_int_equal(parse_prog(keys.data, &prog), 0);
	assert_true(imap_search_view_only(&prog, 10));
	assert_true(imap_search_view_only(&prog, 400));
	assert_false(imap_search_view_only(&prog, 1000));
	imap_search_program_free(&prog);
	assert_int_equal(parse_prog("KEYWORD a", &prog), 0);
	assert_true(imap_search_view_only(&prog, 10000));
	assert_false(imap_search_view_only(&prog, 20000));
	imap_search_program_free(&prog);
	assert_int_equal(parse_prog("SEEN", &prog), 0);
	assert_true(imap_search_view_only(&prog, 500000));
	imap_search_program_free(&prog);
	assert_int_equal(parse_prog("SEEN FROM x", &prog), 0);
	assert_false(imap_search_view_only(&prog, 1));
	imap_search_program_free(&prog);
	buf_free(&keys);
}

static void
test_speed(void **state)
{
	struct fixture *fx = *state;
	struct store_mbox_view big = *fx->view;
	struct imap_search_program prog;
	struct imap_search_ctx ctx = mkctx(fx);
	unsigned char *match;
	const char *err;
	struct timespec t0, t1;
	size_t n = 10000;

	/* a snapshot of 10,000 messages (the same four, repeated) and snapshot-only keys */
	big.count = n;
	big.msgs = xcalloc(n, sizeof(*big.msgs));
	for (size_t i = 0; i < n; i++) {
		big.msgs[i] = fx->view->msgs[i % 4];
		big.msgs[i].keywords = NULL;
	}
	ctx.view = &big;
	match = xcalloc(n, 1);
	assert_int_equal(
	    parse_prog("OR (UNSEEN LARGER 1000) (SINCE 1-Jan-2020 NOT FLAGGED) 1:5000", &prog), 0);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(imap_search_eval(&ctx, &prog, match, &err), 0);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
	assert_true(ms < 200.0); /* milliseconds in practice; generous under sanitizers */
	assert_int_equal(match[3], 1);
	assert_int_equal(match[1], 0);
	imap_search_program_free(&prog);
	free(match);
	free(big.msgs);
}

int
main(void)
{
	store_set_text_fn(mime_meta_text);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_flags, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_many_keywords, setup, teardown),
	    cmocka_unit_test(test_view_only_budget),
	    cmocka_unit_test_setup_teardown(test_sizes_dates, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_headers, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_body_text_exact, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_text_part_headers, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_body_text_fts, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_body_text_fts_cut, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_sets_and_logic, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_modseq_charset, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_format, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_format_limits, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_long_header, setup, teardown),
	    cmocka_unit_test(test_casemap),
	    cmocka_unit_test_setup_teardown(test_speed, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
