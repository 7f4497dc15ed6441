/*
 * test_imap_fetch — unit tests for FETCH: attribute parsing and errors,
 * every data item, reply order and duplicates, every section kind on
 * single-part, multipart and message/rfc822 messages, partials, BINARY
 * decoding and sizes, \Seen and \Recent handling, CONDSTORE modifiers,
 * uncached structures and vanished messages. Messages go through a real
 * store in a temporary directory, with their metadata from
 * mime_meta_compute(), and commands through the real imap_parser.
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
#include <unistd.h>

#include "core/buf.h"
#include "core/util.h"
#include "imap/imap_fetch.h"
#include "imap/imap_parser.h"
#include "mime/mime.h"
#include "mime/mime_imap.h"
#include "mime/mime_meta.h"
#include "store/store.h"

#define ACCOUNT "alice@example.org"

struct fixture {
	char dir[64];
	struct store *st;
	struct store_mbox_view *view;
	uint32_t uidvalidity;
};

/* 1: a plain message. */
static const char msg_plain[] = "From: Alice <alice@example.org>\r\n"
				"To: Bob <bob@example.net>\r\n"
				"Subject: Hello world\r\n"
				"Date: Mon, 7 Feb 1994 21:52:25 -0800\r\n"
				"Message-ID: <a1@example.org>\r\n"
				"X-Folded: one\r\n"
				" two\r\n"
				"\r\n"
				"Hello Bob.\r\n"
				"Second line.\r\n";

/* 2: multipart with base64, quoted-printable and message/rfc822 parts. */
#define P1_MIME                                                                                    \
	"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
#define P2_MIME                                                                                    \
	"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: "                   \
	"quoted-printable\r\n\r\n"
#define P3_MIME "Content-Type: message/rfc822\r\n\r\n"
#define P3_HDR "From: inner@example.org\r\nSubject: inner\r\n\r\n"
#define MP_HDR                                                                                     \
	"From: Carol <carol@example.com>\r\n"                                                      \
	"Subject: parts\r\n"                                                                       \
	"MIME-Version: 1.0\r\n"                                                                    \
	"Content-Type: multipart/mixed; boundary=\"XX\"\r\n"                                       \
	"\r\n"
#define MP_BODY                                                                                    \
	"preamble\r\n"                                                                             \
	"--XX\r\n" P1_MIME "aGVsbG8gd29ybGQ=\r\n"                                                  \
	"--XX\r\n" P2_MIME "caf=C3=A9 =3D ok\r\n"                                                  \
	"--XX\r\n" P3_MIME P3_HDR "inner body\r\n"                                                 \
	"--XX--\r\n"                                                                               \
	"epilogue\r\n"
static const char msg_multi[] = MP_HDR MP_BODY;

/* 3: an encoding BINARY cannot undo. */
static const char msg_uu[] = "Subject: uu\r\n"
			     "MIME-Version: 1.0\r\n"
			     "Content-Type: application/octet-stream\r\n"
			     "Content-Transfer-Encoding: x-uuencode\r\n"
			     "\r\n"
			     "begin 644 x\r\n";

/* 4: a body holding a NUL. */
static const char msg_nul[] = "Subject: nul\r\n\r\na\0b\r\n";
#define MSG_NUL_LEN (sizeof(msg_nul) - 1)

/* 5: a base64 single-part message (BINARY[] rewrites the root header). */
static const char msg_b64[] = "Subject: b64\r\n"
			      "MIME-Version: 1.0\r\n"
			      "Content-Type: application/octet-stream\r\n"
			      "Content-Transfer-Encoding: base64\r\n"
			      "\r\n"
			      "AAEC\r\n";

static uint32_t
add_msg(struct fixture *fx, const char *text, size_t len, int64_t idate, int32_t tz, uint32_t flags,
	bool cache)
{
	struct mime_meta mm;
	struct store_meta meta;
	uint32_t uid = 0;

	mime_meta_compute(text, len, &mm);
	meta = mm.meta;
	if (!cache) {
		meta.envelope = NULL;
		meta.bodystructure = NULL;
		meta.body = NULL;
	}
	meta.internal_date = idate;
	meta.internal_tz = tz;
	meta.flags = flags;
	assert_int_equal(store_append(fx->st, "INBOX", text, len, &meta, &uid, NULL), 0);
	mime_meta_free(&mm);
	return uid;
}

static void
reload(struct fixture *fx)
{
	store_mbox_view_free(&fx->view);
	assert_int_equal(store_mailbox_load(fx->st, "INBOX", &fx->view), 0);
	fx->uidvalidity = fx->view->uidvalidity;
}

static int
setup(void **state)
{
	struct fixture *fx = xcalloc(1, sizeof(*fx));

	xsnprintf(fx->dir, sizeof(fx->dir), "/tmp/surat-fetch-XXXXXX");
	if (mkdtemp(fx->dir) == NULL)
		return -1;
	fx->st = store_open(fx->dir, ACCOUNT, NULL);
	if (fx->st == NULL)
		return -1;
	*state = fx;
	add_msg(fx, msg_plain, strlen(msg_plain), 760686745, -480, STORE_F_SEEN, true);
	add_msg(fx, msg_multi, strlen(msg_multi), 1700000000, 120, 0, true);
	add_msg(fx, msg_uu, strlen(msg_uu), 1700000000, 0, 0, true);
	add_msg(fx, msg_nul, MSG_NUL_LEN, 1700000000, 0, 0, true);
	add_msg(fx, msg_b64, strlen(msg_b64), 1700000000, 0, 0, false);
	reload(fx);
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *fx = *state;

	store_mbox_view_free(&fx->view);
	store_close(&fx->st);
	unit_rm_tree(fx->dir);
	free(fx);
	return 0;
}

/* Parse "a FETCH 1 <atts>" through the real parser into a request. */
static struct imap_fetch_req *
parse_req(const char *atts, int rev2, const char **err_r)
{
	struct imap_parser *p = imap_parser_new(NULL);
	struct buf line = BUF_INIT(0);
	struct imap_fetch_req *req = NULL;
	size_t used;
	int r;

	buf_printf(&line, "a FETCH 1 %s\r\n", atts);
	r = imap_parser_feed(p, line.data, line.len, &used);
	if (r == IMAP_PARSE_ERROR) {
		/* the command parser already refuses it: a BAD as well */
		*err_r = "syntax";
		imap_parser_free(&p);
		buf_free(&line);
		return NULL;
	}
	assert_int_equal(r, IMAP_PARSE_DONE);
	const struct imap_command *c = imap_parser_command(p);
	const struct imap_arg *mods = imap_arg_is_eol(&c->args[2]) ? NULL : &c->args[2];
	*err_r = NULL;
	if (imap_fetch_parse(&c->args[1], mods, rev2, &req, err_r) < 0) {
		assert_null(req);
		assert_non_null(*err_r);
	}
	imap_parser_free(&p);
	buf_free(&line);
	return req;
}

struct fopts {
	int uid;
	int rev2;
	int seen_changed;
	const struct imap_seqset *recent;
};

/* FETCH atts for message seq; the reply, or "ERR <text>". Caller frees. */
static char *
fetch_opts(struct fixture *fx, uint32_t seq, const char *atts, const struct fopts *o)
{
	struct imap_fetch_ctx ctx = {
	    fx->st, "INBOX", fx->uidvalidity, o->rev2, o->recent, o->seen_changed, 0, NULL, 0};
	struct buf out = BUF_INIT(0);
	const char *err;
	struct imap_fetch_req *req = parse_req(atts, o->rev2, &err);

	if (req == NULL)
		return xasprintf("ERR %s", err);
	if (o->uid)
		imap_fetch_req_set_uid(req);
	if (imap_fetch_message(&out, &ctx, req, seq, &fx->view->msgs[seq - 1], &err) < 0) {
		assert_int_equal(out.len, 0);
		imap_fetch_req_free(&req);
		buf_free(&out);
		return xasprintf("ERR %s", err);
	}
	imap_fetch_req_free(&req);
	return buf_steal(&out);
}

static char *
fetch(struct fixture *fx, uint32_t seq, const char *atts)
{
	struct fopts o = {0};

	return fetch_opts(fx, seq, atts, &o);
}

#define FETCH_EQ(fx, seq, atts, want)                                                              \
	do {                                                                                       \
		char *got_ = fetch((fx), (seq), (atts));                                           \
		assert_string_equal(got_, (want));                                                 \
		free(got_);                                                                        \
	} while (0)

/* "* <seq> FETCH (<name> {n}\r\n<data>)\r\n" */
static char *
lit_reply(uint32_t seq, const char *name, const char *data, size_t n, bool lit8)
{
	struct buf b = BUF_INIT(0);

	buf_printf(&b, "* %u FETCH (%s %s{%zu}\r\n", seq, name, lit8 ? "~" : "", n);
	buf_append(&b, data, n);
	buf_puts(&b, ")\r\n");
	return buf_steal(&b);
}

#define LIT_EQ(fx, seq, atts, name, data)                                                          \
	do {                                                                                       \
		char *want_ = lit_reply((seq), (name), (data), strlen(data), false);               \
		FETCH_EQ((fx), (seq), (atts), want_);                                              \
		free(want_);                                                                       \
	} while (0)

static void
test_simple_items(void **state)
{
	struct fixture *fx = *state;
	struct store_msg *m = &fx->view->msgs[0];
	char want[256];

	xsnprintf(want, sizeof(want), "* 1 FETCH (UID %u)\r\n", m->uid);
	FETCH_EQ(fx, 1, "UID", want);
	FETCH_EQ(fx, 1, "FLAGS", "* 1 FETCH (FLAGS (\\Seen))\r\n");
	FETCH_EQ(fx, 1, "INTERNALDATE",
		 "* 1 FETCH (INTERNALDATE \"07-Feb-1994 21:52:25 -0800\")\r\n");
	FETCH_EQ(fx, 2, "INTERNALDATE",
		 "* 2 FETCH (INTERNALDATE \"15-Nov-2023 00:13:20 +0200\")\r\n");
	xsnprintf(want, sizeof(want), "* 1 FETCH (RFC822.SIZE %zu)\r\n", strlen(msg_plain));
	FETCH_EQ(fx, 1, "RFC822.SIZE", want);
	xsnprintf(want, sizeof(want), "* 1 FETCH (MODSEQ (%llu))\r\n",
		  (unsigned long long)m->modseq);
	FETCH_EQ(fx, 1, "MODSEQ", want);
	FETCH_EQ(fx, 1, "SAVEDATE", "* 1 FETCH (SAVEDATE NIL)\r\n");
	/* any case */
	FETCH_EQ(fx, 1, "flags", "* 1 FETCH (FLAGS (\\Seen))\r\n");
}

static void
test_flags_keywords_recent(void **state)
{
	struct fixture *fx = *state;
	const char *kw[] = {"$Forwarded", "Work"};
	struct store_range r = {fx->view->msgs[1].uid, fx->view->msgs[1].uid};
	struct store_flag_change chg = {
	    STORE_FLAGS_ADD,
	    STORE_F_ANSWERED | STORE_F_FLAGGED | STORE_F_DELETED | STORE_F_DRAFT,
	    kw,
	    2,
	    0,
	    0};
	struct store_flag_result res;
	struct imap_seqset recent;
	struct fopts o = {0};
	char *got;

	assert_int_equal(store_flags(fx->st, "INBOX", fx->uidvalidity, &r, 1, &chg, &res), 0);
	store_flag_result_free(&res);
	reload(fx);
	FETCH_EQ(fx, 2, "FLAGS",
		 "* 2 FETCH (FLAGS (\\Answered \\Flagged \\Deleted \\Draft $Forwarded Work))\r\n");

	imap_seqset_init(&recent);
	imap_seqset_add(&recent, fx->view->msgs[0].uid, fx->view->msgs[1].uid);
	imap_seqset_normalize(&recent);
	o.recent = &recent;
	got = fetch_opts(fx, 1, "FLAGS", &o);
	assert_string_equal(got, "* 1 FETCH (FLAGS (\\Seen \\Recent))\r\n");
	free(got);
	got = fetch_opts(fx, 3, "FLAGS", &o);
	assert_string_equal(got, "* 3 FETCH (FLAGS ())\r\n");
	free(got);
	/* never in IMAP4rev2 */
	o.rev2 = 1;
	got = fetch_opts(fx, 1, "FLAGS", &o);
	assert_string_equal(got, "* 1 FETCH (FLAGS (\\Seen))\r\n");
	free(got);
	imap_seqset_free(&recent);
}

static void
test_structures(void **state)
{
	struct fixture *fx = *state;
	struct mime_meta mm;
	struct buf want = BUF_INIT(0);
	char *got;

	mime_meta_compute(msg_multi, strlen(msg_multi), &mm);
	buf_printf(&want, "* 2 FETCH (ENVELOPE %s)\r\n", mm.envelope);
	FETCH_EQ(fx, 2, "ENVELOPE", buf_str(&want));
	buf_reset(&want);
	buf_printf(&want, "* 2 FETCH (BODYSTRUCTURE %s)\r\n", mm.bodystructure);
	FETCH_EQ(fx, 2, "BODYSTRUCTURE", buf_str(&want));
	buf_reset(&want);
	buf_printf(&want, "* 2 FETCH (BODY %s)\r\n", mm.body);
	FETCH_EQ(fx, 2, "BODY", buf_str(&want));
	assert_non_null(strstr(mm.envelope, "\"parts\""));
	assert_non_null(strstr(mm.bodystructure, "\"mixed\""));
	mime_meta_free(&mm);

	/* message 5 was stored without cached structures: computed on the fly */
	mime_meta_compute(msg_b64, strlen(msg_b64), &mm);
	buf_reset(&want);
	buf_printf(&want, "* 5 FETCH (ENVELOPE %s BODY %s BODYSTRUCTURE %s)\r\n", mm.envelope,
		   mm.body, mm.bodystructure);
	got = fetch(fx, 5, "(ENVELOPE BODY BODYSTRUCTURE)");
	assert_string_equal(got, buf_str(&want));
	free(got);
	mime_meta_free(&mm);
	buf_free(&want);
}

static void
test_message_global(void **state)
{
	struct fixture *fx = *state;
	static const char g[] = "Subject: outer\r\n"
				"MIME-Version: 1.0\r\n"
				"Content-Type: message/global\r\n"
				"\r\n"
				"Subject: inner\r\n\r\nhi\r\n";
	struct buf want1 = BUF_INIT(0), want2 = BUF_INIT(0);
	struct mime_part *root = mime_parse(g, strlen(g));
	struct fopts o = {0};
	char *got;

	add_msg(fx, g, strlen(g), 1700000000, 0, 0, true);
	reload(fx);
	/* IMAP4rev1 sees a basic part (the cached form), rev2 the message inside */
	buf_puts(&want1, "* 6 FETCH (BODYSTRUCTURE ");
	mime_bodystructure(&want1, root, MIME_BS_EXTENDED);
	buf_puts(&want1, ")\r\n");
	buf_puts(&want2, "* 6 FETCH (BODYSTRUCTURE ");
	mime_bodystructure(&want2, root, MIME_BS_EXTENDED | MIME_BS_GLOBAL);
	buf_puts(&want2, ")\r\n");
	assert_string_not_equal(buf_str(&want1), buf_str(&want2));
	got = fetch_opts(fx, 6, "BODYSTRUCTURE", &o);
	assert_string_equal(got, buf_str(&want1));
	free(got);
	o.rev2 = 1;
	got = fetch_opts(fx, 6, "BODYSTRUCTURE", &o);
	assert_string_equal(got, buf_str(&want2));
	free(got);
	/* sections follow the structure shown: for rev1 a leaf, for rev2 a
	 * message whose header and parts can be named (RFC 9051 6.4.5) */
	got = fetch_opts(fx, 6, "(BODY.PEEK[1.HEADER] BODY.PEEK[1.1])", &o);
	assert_string_equal(got, "* 6 FETCH (BODY[1.HEADER] {18}\r\nSubject: inner\r\n\r\n "
				 "BODY[1.1] {4}\r\nhi\r\n)\r\n");
	free(got);
	got = fetch_opts(fx, 6, "(BODY.PEEK[1.TEXT] BODY.PEEK[1.HEADER.FIELDS (Subject)] BODY.PEEK[1.1.MIME])", &o);
	assert_string_equal(got, "* 6 FETCH (BODY[1.TEXT] {4}\r\nhi\r\n "
				 "BODY[1.HEADER.FIELDS (SUBJECT)] {18}\r\nSubject: inner\r\n\r\n "
				 "BODY[1.1.MIME] {18}\r\nSubject: inner\r\n\r\n)\r\n");
	free(got);
	o.rev2 = 0;
	got = fetch_opts(fx, 6, "(BODY.PEEK[1.HEADER] BODY.PEEK[1.1])", &o);
	assert_string_equal(got, "* 6 FETCH (BODY[1.HEADER] {0}\r\n BODY[1.1] {0}\r\n)\r\n");
	free(got);
	/* base64 (RFC 6532 3.5): the sections are those of the decoded message */
	static const char g64[] = "Subject: outer\r\n"
				  "MIME-Version: 1.0\r\n"
				  "Content-Type: message/global\r\n"
				  "Content-Transfer-Encoding: base64\r\n"
				  "\r\n"
				  "U3ViamVjdDogaW5uZXINCg0KaGkNCg==\r\n";
	add_msg(fx, g64, strlen(g64), 1700000000, 0, 0, true);
	reload(fx);
	o.rev2 = 1;
	got = fetch_opts(fx, 7, "(BODY.PEEK[1.HEADER] BODY.PEEK[1.1] BINARY.PEEK[1])", &o);
	assert_string_equal(got, "* 7 FETCH (BODY[1.HEADER] {18}\r\nSubject: inner\r\n\r\n "
				 "BODY[1.1] {4}\r\nhi\r\n "
				 "BINARY[1] ~{22}\r\nSubject: inner\r\n\r\nhi\r\n)\r\n");
	free(got);
	mime_free(&root);
	buf_free(&want1);
	buf_free(&want2);
}

static void
test_macros_and_order(void **state)
{
	struct fixture *fx = *state;
	struct store_msg *m = &fx->view->msgs[0];
	struct mime_meta mm;
	struct buf want = BUF_INIT(0);
	struct fopts o = {0};
	char *got;

	mime_meta_compute(msg_plain, strlen(msg_plain), &mm);
	buf_printf(&want,
		   "* 1 FETCH (FLAGS (\\Seen) INTERNALDATE \"07-Feb-1994 21:52:25 -0800\" "
		   "RFC822.SIZE %zu)\r\n",
		   strlen(msg_plain));
	FETCH_EQ(fx, 1, "FAST", buf_str(&want));
	buf_reset(&want);
	buf_printf(&want,
		   "* 1 FETCH (FLAGS (\\Seen) INTERNALDATE \"07-Feb-1994 21:52:25 -0800\" "
		   "RFC822.SIZE %zu ENVELOPE %s)\r\n",
		   strlen(msg_plain), mm.envelope);
	FETCH_EQ(fx, 1, "ALL", buf_str(&want));
	buf_reset(&want);
	buf_printf(&want,
		   "* 1 FETCH (FLAGS (\\Seen) INTERNALDATE \"07-Feb-1994 21:52:25 -0800\" "
		   "RFC822.SIZE %zu ENVELOPE %s BODY %s)\r\n",
		   strlen(msg_plain), mm.envelope, mm.body);
	FETCH_EQ(fx, 1, "full", buf_str(&want));

	/* line items first (request order), then the others (request order) */
	buf_reset(&want);
	buf_printf(&want, "* 1 FETCH (UID %u FLAGS (\\Seen) ENVELOPE %s)\r\n", m->uid, mm.envelope);
	FETCH_EQ(fx, 1, "(ENVELOPE UID FLAGS)", buf_str(&want));
	/* duplicates of simple items once; UID FETCH puts UID first */
	buf_reset(&want);
	buf_printf(&want, "* 1 FETCH (UID %u FLAGS (\\Seen) RFC822.SIZE %zu)\r\n", m->uid,
		   strlen(msg_plain));
	o.uid = 1;
	got = fetch_opts(fx, 1, "(FLAGS RFC822.SIZE UID FLAGS)", &o);
	assert_string_equal(got, buf_str(&want));
	free(got);
	buf_reset(&want);
	buf_printf(&want, "* 1 FETCH (UID %u FLAGS (\\Seen))\r\n", m->uid);
	got = fetch_opts(fx, 1, "FLAGS", &o);
	assert_string_equal(got, buf_str(&want));
	free(got);
	/* sections are not merged */
	buf_reset(&want);
	buf_printf(&want, "* 1 FETCH (BODY[TEXT] {26}\r\nHello Bob.\r\nSecond line.\r\n"
			  " BODY[TEXT] {26}\r\nHello Bob.\r\nSecond line.\r\n)\r\n");
	FETCH_EQ(fx, 1, "(BODY.PEEK[TEXT] BODY.PEEK[TEXT])", buf_str(&want));
	mime_meta_free(&mm);
	buf_free(&want);
}

static void
test_sections_plain(void **state)
{
	struct fixture *fx = *state;
	size_t hlen = strstr(msg_plain, "\r\n\r\n") + 4 - msg_plain;
	char *hdr = xstrndup(msg_plain, hlen);

	LIT_EQ(fx, 1, "BODY.PEEK[]", "BODY[]", msg_plain);
	LIT_EQ(fx, 1, "BODY.PEEK[HEADER]", "BODY[HEADER]", hdr);
	LIT_EQ(fx, 1, "BODY.PEEK[TEXT]", "BODY[TEXT]", msg_plain + hlen);
	LIT_EQ(fx, 1, "BODY.PEEK[1]", "BODY[1]", msg_plain + hlen);
	LIT_EQ(fx, 1, "BODY.PEEK[1.MIME]", "BODY[1.MIME]", hdr);
	LIT_EQ(fx, 1, "BODY.PEEK[2]", "BODY[2]", "");
	LIT_EQ(fx, 1, "BODY.PEEK[1.1]", "BODY[1.1]", "");
	LIT_EQ(fx, 1, "BODY.PEEK[1.HEADER]", "BODY[1.HEADER]", "");
	LIT_EQ(fx, 1, "body.peek[header.fields (from SUBJECT)]",
	       "BODY[HEADER.FIELDS (FROM SUBJECT)]",
	       "From: Alice <alice@example.org>\r\nSubject: Hello world\r\n\r\n");
	LIT_EQ(fx, 1, "BODY.PEEK[HEADER.FIELDS (x-folded \"Date\")]",
	       "BODY[HEADER.FIELDS (X-FOLDED \"DATE\")]",
	       "Date: Mon, 7 Feb 1994 21:52:25 -0800\r\nX-Folded: one\r\n two\r\n\r\n");
	LIT_EQ(fx, 1, "BODY.PEEK[HEADER.FIELDS (X-Nothing)]", "BODY[HEADER.FIELDS (X-NOTHING)]",
	       "\r\n");
	/* "" is an astring too: no field of this message has an empty name. */
	LIT_EQ(fx, 1, "BODY.PEEK[HEADER.FIELDS (\"\")]", "BODY[HEADER.FIELDS (\"\")]", "\r\n");
	LIT_EQ(fx, 1, "BODY.PEEK[HEADER.FIELDS.NOT (To Date Message-ID X-Folded)]",
	       "BODY[HEADER.FIELDS.NOT (TO DATE MESSAGE-ID X-FOLDED)]",
	       "From: Alice <alice@example.org>\r\nSubject: Hello world\r\n\r\n");
	LIT_EQ(fx, 1, "RFC822", "RFC822", msg_plain);
	LIT_EQ(fx, 1, "RFC822.HEADER", "RFC822.HEADER", hdr);
	LIT_EQ(fx, 1, "RFC822.TEXT", "RFC822.TEXT", msg_plain + hlen);
	free(hdr);
}

static void
test_sections_multipart(void **state)
{
	struct fixture *fx = *state;

	LIT_EQ(fx, 2, "BODY.PEEK[HEADER]", "BODY[HEADER]", MP_HDR);
	LIT_EQ(fx, 2, "BODY.PEEK[TEXT]", "BODY[TEXT]", MP_BODY);
	LIT_EQ(fx, 2, "BODY.PEEK[1]", "BODY[1]", "aGVsbG8gd29ybGQ=");
	LIT_EQ(fx, 2, "BODY.PEEK[1.MIME]", "BODY[1.MIME]", P1_MIME);
	LIT_EQ(fx, 2, "BODY.PEEK[2]", "BODY[2]", "caf=C3=A9 =3D ok");
	LIT_EQ(fx, 2, "BODY.PEEK[3]", "BODY[3]", P3_HDR "inner body");
	LIT_EQ(fx, 2, "BODY.PEEK[3.MIME]", "BODY[3.MIME]", P3_MIME);
	LIT_EQ(fx, 2, "BODY.PEEK[3.HEADER]", "BODY[3.HEADER]", P3_HDR);
	LIT_EQ(fx, 2, "BODY.PEEK[3.TEXT]", "BODY[3.TEXT]", "inner body");
	LIT_EQ(fx, 2, "BODY.PEEK[3.1]", "BODY[3.1]", "inner body");
	LIT_EQ(fx, 2, "BODY.PEEK[3.HEADER.FIELDS (SUBJECT)]", "BODY[3.HEADER.FIELDS (SUBJECT)]",
	       "Subject: inner\r\n\r\n");
	LIT_EQ(fx, 2, "BODY.PEEK[3.HEADER.FIELDS.NOT (SUBJECT)]",
	       "BODY[3.HEADER.FIELDS.NOT (SUBJECT)]", "From: inner@example.org\r\n\r\n");
	/* HEADER/TEXT of a part that is not message/rfc822, parts that do not exist */
	LIT_EQ(fx, 2, "BODY.PEEK[1.HEADER]", "BODY[1.HEADER]", "");
	LIT_EQ(fx, 2, "BODY.PEEK[1.TEXT]", "BODY[1.TEXT]", "");
	LIT_EQ(fx, 2, "BODY.PEEK[4]", "BODY[4]", "");
	LIT_EQ(fx, 2, "BODY.PEEK[1.1]", "BODY[1.1]", "aGVsbG8gd29ybGQ=");
	LIT_EQ(fx, 2, "BODY.PEEK[1.2]", "BODY[1.2]", "");
	LIT_EQ(fx, 2, "BODY.PEEK[1.1.1]", "BODY[1.1.1]", "");
	LIT_EQ(fx, 2, "BODY.PEEK[3.2]", "BODY[3.2]", "");
}

/*
 * RFC 3501 6.4.5: the header sections end with the blank line "except in
 * the case of a message which has no body and no blank line". A
 * message/rfc822 part that is empty holds such a message: HEADER was
 * empty, but HEADER.FIELDS answered a lone CRLF (Dovecot: empty too).
 */
static void
test_sections_empty_message(void **state)
{
	struct fixture *fx = *state;
	static const char m[] = "Subject: outer\r\n"
				"MIME-Version: 1.0\r\n"
				"Content-Type: multipart/mixed; boundary=b\r\n"
				"\r\n"
				"--b\r\n"
				"Content-Type: message/rfc822\r\n"
				"\r\n"
				"--b--\r\n";

	add_msg(fx, m, strlen(m), 1700000000, 0, 0, true);
	reload(fx);
	LIT_EQ(fx, 6, "BODY.PEEK[1]", "BODY[1]", "");
	LIT_EQ(fx, 6, "BODY.PEEK[1.HEADER]", "BODY[1.HEADER]", "");
	LIT_EQ(fx, 6, "BODY.PEEK[1.HEADER.FIELDS (Subject)]", "BODY[1.HEADER.FIELDS (SUBJECT)]",
	       "");
	LIT_EQ(fx, 6, "BODY.PEEK[1.HEADER.FIELDS.NOT (Subject)]",
	       "BODY[1.HEADER.FIELDS.NOT (SUBJECT)]", "");
}

static void
test_partial(void **state)
{
	struct fixture *fx = *state;
	char want[128];

	FETCH_EQ(fx, 1, "BODY.PEEK[]<0.4>", "* 1 FETCH (BODY[]<0> {4}\r\nFrom)\r\n");
	FETCH_EQ(fx, 1, "BODY.PEEK[TEXT]<6.3>", "* 1 FETCH (BODY[TEXT]<6> {3}\r\nBob)\r\n");
	FETCH_EQ(fx, 1, "BODY.PEEK[TEXT]<20.100>",
		 "* 1 FETCH (BODY[TEXT]<20> {6}\r\nine.\r\n)\r\n");
	FETCH_EQ(fx, 1, "BODY.PEEK[TEXT]<26.10>", "* 1 FETCH (BODY[TEXT]<26> {0}\r\n)\r\n");
	FETCH_EQ(fx, 1, "BODY.PEEK[TEXT]<9999.1>", "* 1 FETCH (BODY[TEXT]<9999> {0}\r\n)\r\n");
	xsnprintf(want, sizeof(want), "* 2 FETCH (BINARY[1]<6> ~{5}\r\nworld)\r\n");
	FETCH_EQ(fx, 2, "BINARY.PEEK[1]<6.100>", want);
	FETCH_EQ(fx, 2, "BODY.PEEK[3.TEXT]<0.5>", "* 2 FETCH (BODY[3.TEXT]<0> {5}\r\ninner)\r\n");
}

static void
test_binary(void **state)
{
	struct fixture *fx = *state;
	char *want, *got;

	FETCH_EQ(fx, 2, "BINARY.PEEK[1]", "* 2 FETCH (BINARY[1] ~{11}\r\nhello world)\r\n");
	FETCH_EQ(fx, 2, "BINARY.PEEK[2]", "* 2 FETCH (BINARY[2] ~{10}\r\ncaf\xc3\xa9 = ok)\r\n");
	FETCH_EQ(fx, 2, "BINARY.SIZE[1]", "* 2 FETCH (BINARY.SIZE[1] 11)\r\n");
	FETCH_EQ(fx, 2, "BINARY.SIZE[2]", "* 2 FETCH (BINARY.SIZE[2] 10)\r\n");
	FETCH_EQ(fx, 2, "BINARY.SIZE[9]", "* 2 FETCH (BINARY.SIZE[9] 0)\r\n");
	/* 7bit content: plain literal */
	FETCH_EQ(fx, 2, "BINARY.PEEK[3.TEXT]", "* 2 FETCH (BINARY[3.TEXT] {10}\r\ninner body)\r\n");
	FETCH_EQ(fx, 1, "BINARY.PEEK[1]",
		 "* 1 FETCH (BINARY[1] {26}\r\nHello Bob.\r\nSecond line.\r\n)\r\n");
	/* the whole message, rebuilt with the decoded parts */
	const char *rebuilt =
	    MP_HDR "preamble\r\n"
		   "--XX\r\nContent-Type: text/plain; charset=utf-8\r\n"
		   "Content-Transfer-Encoding: binary\r\n\r\nhello world\r\n"
		   "--XX\r\nContent-Type: text/plain; charset=utf-8\r\n"
		   "Content-Transfer-Encoding: binary\r\n\r\ncaf\xc3\xa9 = ok\r\n"
		   "--XX\r\n" P3_MIME P3_HDR "inner body\r\n--XX--\r\nepilogue\r\n";
	want = lit_reply(2, "BINARY[]", rebuilt, strlen(rebuilt), true);
	FETCH_EQ(fx, 2, "BINARY.PEEK[]", want);
	free(want);
	got = fetch(fx, 2, "BINARY.SIZE[]");
	want = xasprintf("* 2 FETCH (BINARY.SIZE[] %zu)\r\n", strlen(rebuilt));
	assert_string_equal(got, want);
	free(got);
	free(want);
	/* a single base64 part: the root header says binary now; octets kept */
	const char dec[] = "Subject: b64\r\nMIME-Version: 1.0\r\n"
			   "Content-Type: application/octet-stream\r\n"
			   "Content-Transfer-Encoding: binary\r\n\r\n\x00\x01\x02";
	want = lit_reply(5, "BINARY[]", dec, sizeof(dec) - 1, true);
	FETCH_EQ(fx, 5, "BINARY.PEEK[]", want);
	free(want);
	want = lit_reply(5, "BINARY[TEXT]", "\x00\x01\x02", 3, true);
	FETCH_EQ(fx, 5, "BINARY.PEEK[TEXT]", want);
	free(want);
	/* BINARY of a header is not decoded */
	LIT_EQ(fx, 2, "BINARY.PEEK[1.MIME]", "BINARY[1.MIME]", P1_MIME);
	/* unknown encodings */
	FETCH_EQ(fx, 3, "BINARY.PEEK[1]", "ERR " IMAP_FETCH_ERR_UNKNOWN_CTE);
	FETCH_EQ(fx, 3, "BINARY.SIZE[]", "ERR " IMAP_FETCH_ERR_UNKNOWN_CTE);
	FETCH_EQ(fx, 3, "BODY.PEEK[1]", "* 3 FETCH (BODY[1] {13}\r\nbegin 644 x\r\n)\r\n");
}

/*
 * A message/rfc822 (or multipart) part that claims a base64 encoding,
 * which RFC 2045 6.4 / RFC 2046 5.2.1 forbid: BINARY[] said
 * "Content-Transfer-Encoding: binary" in its header but sent its content
 * as it was, still base64, so a client took the encoded text for the
 * message. A container is never decoded: its header stays as written.
 */
static void
test_binary_container_cte(void **state)
{
	struct fixture *fx = *state;
	static const char m[] = "Subject: outer\r\n"
				"MIME-Version: 1.0\r\n"
				"Content-Type: multipart/mixed; boundary=b\r\n"
				"\r\n"
				"--b\r\n"
				"Content-Type: message/rfc822\r\n"
				"Content-Transfer-Encoding: base64\r\n"
				"\r\n"
				"U3ViamVjdDogaW5uZXIKCmJvZHkK\r\n"
				"--b--\r\n";

	add_msg(fx, m, strlen(m), 1700000000, 0, 0, true);
	reload(fx);
	LIT_EQ(fx, 6, "BINARY.PEEK[]", "BINARY[]", m);
	LIT_EQ(fx, 6, "BINARY.PEEK[1]", "BINARY[1]", "U3ViamVjdDogaW5uZXIKCmJvZHkK\r\n");
}

static void
test_nul(void **state)
{
	struct fixture *fx = *state;
	char *want;

	/* BODY sends NUL as 0x80; BINARY keeps it in a literal8 */
	FETCH_EQ(fx, 4, "BODY.PEEK[TEXT]",
		 "* 4 FETCH (BODY[TEXT] {5}\r\na\x80"
		 "b\r\n)\r\n");
	want = lit_reply(4, "BINARY[TEXT]", "a\0b\r\n", 5, true);
	FETCH_EQ(fx, 4, "BINARY.PEEK[TEXT]", want);
	free(want);
}

static void
test_seen(void **state)
{
	struct fixture *fx = *state;
	const char *err;
	struct imap_fetch_req *req;
	struct fopts o = {0};
	char *got, *want;
	static const struct {
		const char *atts;
		int seen;
	} cases[] = {
	    {"BODY[]", 1},	   {"BODY.PEEK[]", 0},	  {"BINARY[1]", 1},
	    {"BINARY.PEEK[1]", 0}, {"BINARY.SIZE[1]", 0}, {"RFC822", 1},
	    {"RFC822.TEXT", 1},	   {"RFC822.HEADER", 0},  {"(FLAGS BODY[TEXT])", 1},
	    {"ENVELOPE", 0},	   {"BODY", 0},
	};

	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		req = parse_req(cases[i].atts, 0, &err);
		assert_non_null(req);
		assert_int_equal(imap_fetch_req_sets_seen(req), cases[i].seen);
		imap_fetch_req_free(&req);
		assert_null(req);
	}
	/* \Seen just set and FLAGS not asked: FLAGS reported after the line items */
	o.seen_changed = 1;
	got = fetch_opts(fx, 1, "(BODY[TEXT]<0.5> RFC822.SIZE)", &o);
	want =
	    xasprintf("* 1 FETCH (RFC822.SIZE %zu FLAGS (\\Seen) BODY[TEXT]<0> {5}\r\nHello)\r\n",
		      strlen(msg_plain));
	assert_string_equal(got, want);
	free(want);
	free(got);
	/* already seen: nothing extra */
	o.seen_changed = 0;
	got = fetch_opts(fx, 1, "BODY[TEXT]<0.5>", &o);
	assert_string_equal(got, "* 1 FETCH (BODY[TEXT]<0> {5}\r\nHello)\r\n");
	free(got);
}

static void
test_modifiers(void **state)
{
	struct fixture *fx = *state;
	struct store_msg *m = &fx->view->msgs[0];
	struct imap_fetch_req *req;
	const char *err;
	char *got, *want;
	struct fopts o = {1, 0, 0, NULL};

	req = parse_req("(FLAGS) (CHANGEDSINCE 12345)", 0, &err);
	assert_non_null(req);
	assert_int_equal(imap_fetch_req_changedsince(req), 12345);
	assert_true(imap_fetch_req_wants_modseq(req));
	assert_false(imap_fetch_req_vanished(req));
	assert_false(imap_fetch_req_wants_meta(req));
	imap_fetch_req_free(&req);
	req = parse_req("(FLAGS) (CHANGEDSINCE 1 VANISHED)", 0, &err);
	assert_non_null(req);
	assert_true(imap_fetch_req_vanished(req));
	imap_fetch_req_free(&req);
	req = parse_req("(FLAGS ENVELOPE)", 0, &err);
	assert_false(imap_fetch_req_wants_modseq(req));
	assert_int_equal(imap_fetch_req_changedsince(req), 0);
	assert_true(imap_fetch_req_wants_meta(req));
	imap_fetch_req_free(&req);

	want = xasprintf("* 1 FETCH (UID %u FLAGS (\\Seen) MODSEQ (%llu))\r\n", m->uid,
			 (unsigned long long)m->modseq);
	got = fetch_opts(fx, 1, "(FLAGS) (CHANGEDSINCE 1)", &o);
	assert_string_equal(got, want);
	free(got);
	got = fetch_opts(fx, 1, "(FLAGS MODSEQ) (CHANGEDSINCE 1)", &o);
	assert_string_equal(got, want);
	free(got);
	free(want);
}

static void
test_parse_errors(void **state)
{
	static const char *const bad[] = {
	    "()",
	    "FOO",
	    "(FLAGS FOO)",
	    "(FLAGS \"UID\")",
	    "BODY[",
	    "BODY[0]",
	    "BODY[1.]",
	    "BODY[.1]",
	    "BODY[1..2]",
	    "BODY[MIME]",
	    "BODY[FOO]",
	    "BODY[1.FOO]",
	    "BODY[HEADER.FIELDS]",
	    "BODY[HEADER.FIELDS ()]",
	    "BODY[HEADER.FIELDS (A]",
	    "BODY[HEADER.FIELDS (A) X]",
	    "BODY[4294967296]",
	    "BODY.PEEK",
	    "BODYX[]",
	    "FLAGS<0.1>",
	    "BODY[]<1>",
	    "(FLAGS) (FOO)",
	    "(FLAGS) (CHANGEDSINCE)",
	    "(FLAGS) (CHANGEDSINCE x)",
	    "(FLAGS) (VANISHED)",
	    "(ALL)",
	};
	const char *err;

	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		struct imap_fetch_req *req = parse_req(bad[i], 0, &err);
		if (req != NULL)
			fail_msg("accepted: %s", bad[i]);
		assert_non_null(err);
	}
}

static void
test_expunged(void **state)
{
	struct fixture *fx = *state;
	struct store_range r = {fx->view->msgs[0].uid, fx->view->msgs[0].uid};
	uint32_t *uids;
	size_t n;
	char *got;

	assert_int_equal(store_expunge(fx->st, "INBOX", fx->uidvalidity, &r, 1, STORE_EXPUNGE_FORCE,
				       &uids, &n, NULL),
			 0);
	assert_int_equal(n, 1);
	free(uids);
	/* the session's snapshot still has it */
	got = fetch(fx, 1, "BODY.PEEK[]");
	assert_string_equal(got, "ERR " IMAP_FETCH_ERR_EXPUNGED);
	free(got);
	got = fetch(fx, 1, "ENVELOPE");
	assert_string_equal(got, "ERR " IMAP_FETCH_ERR_EXPUNGED);
	free(got);
	/* snapshot-only items still answer */
	FETCH_EQ(fx, 1, "FLAGS", "* 1 FETCH (FLAGS (\\Seen))\r\n");
}

static void
test_prefetched_meta_and_limit(void **state)
{
	struct fixture *fx = *state;
	struct store_msg_meta *metas;
	size_t n;
	struct store_range all = {1, UINT32_MAX};
	struct imap_fetch_ctx ctx = {fx->st, "INBOX", fx->uidvalidity, 0, NULL, 0, 0, NULL, 0};
	struct imap_fetch_req *req;
	struct buf out = BUF_INIT(0), small = BUF_INIT(64);
	const char *err;

	assert_int_equal(store_fetch_meta(fx->st, "INBOX", fx->uidvalidity, &all, 1, &metas, &n),
			 0);
	assert_int_equal(n, 5);
	req = parse_req("ENVELOPE", 0, &err);
	ctx.meta = &metas[1];
	assert_int_equal(imap_fetch_message(&out, &ctx, req, 2, &fx->view->msgs[1], &err), 0);
	assert_non_null(strstr(buf_str(&out), "\"parts\""));
	/* an output buffer that is too small is left untouched */
	buf_puts(&small, "x");
	assert_int_equal(imap_fetch_message(&small, &ctx, req, 2, &fx->view->msgs[1], &err), -1);
	assert_string_equal(err, IMAP_FETCH_ERR_TOOBIG);
	assert_string_equal(buf_str(&small), "x");
	imap_fetch_req_free(&req);
	/*
	 * Body sections share a budget of bytes sent, decoded or scanned:
	 * 5000 BINARY.SIZE[] of a 25 MB message on one command line held a
	 * worker for minutes, 5000 BODY.PEEK[] made the reply 125 GB. Here
	 * 4096 bytes; message 2 is about 460.
	 */
	struct buf room = BUF_INIT(0);
	struct buf atts = BUF_INIT(0);
	ctx.meta = NULL;
	ctx.section_budget = 4096;
	buf_puts(&atts, "(BINARY.SIZE[] BINARY.SIZE[1] BODY.PEEK[HEADER.FIELDS (A)])");
	req = parse_req(buf_str(&atts), 0, &err);
	assert_int_equal(imap_fetch_message(&room, &ctx, req, 2, &fx->view->msgs[1], &err), 0);
	imap_fetch_req_free(&req);
	buf_reset(&room);
	buf_reset(&atts);
	buf_puts(&atts, "(");
	for (int i = 0; i < 20; i++)
		buf_puts(&atts, i ? " BINARY.SIZE[]" : "BINARY.SIZE[]");
	buf_puts(&atts, ")");
	req = parse_req(buf_str(&atts), 0, &err);
	assert_int_equal(imap_fetch_message(&room, &ctx, req, 2, &fx->view->msgs[1], &err), -1);
	assert_string_equal(err, IMAP_FETCH_ERR_TOOBIG);
	assert_int_equal(room.len, 0);
	imap_fetch_req_free(&req);
	buf_reset(&atts);
	buf_puts(&atts, "(ENVELOPE BODYSTRUCTURE");
	for (int i = 0; i < 20; i++)
		buf_puts(&atts, " BODY.PEEK[]");
	buf_puts(&atts, ")");
	req = parse_req(buf_str(&atts), 0, &err);
	assert_int_equal(imap_fetch_message(&room, &ctx, req, 2, &fx->view->msgs[1], &err), -1);
	assert_string_equal(err, IMAP_FETCH_ERR_TOOBIG);
	assert_int_equal(room.len, 0);
	imap_fetch_req_free(&req);
	buf_free(&room);
	buf_free(&atts);
	store_msg_meta_array_free(&metas, n);
	buf_free(&out);
	buf_free(&small);
}

static void
test_datetime(void **state)
{
	struct buf b = BUF_INIT(0);

	(void)state;
	imap_fetch_datetime(&b, 0, 0);
	assert_string_equal(buf_str(&b), "01-Jan-1970 00:00:00 +0000");
	buf_reset(&b);
	imap_fetch_datetime(&b, 1700000000, -330);
	assert_string_equal(buf_str(&b), "14-Nov-2023 16:43:20 -0530");
	buf_free(&b);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_simple_items, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_flags_keywords_recent, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_structures, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_message_global, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_macros_and_order, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_sections_plain, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_sections_multipart, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_sections_empty_message, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_partial, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_binary, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_binary_container_cte, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_nul, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_seen, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_modifiers, setup, teardown),
	    cmocka_unit_test(test_parse_errors),
	    cmocka_unit_test_setup_teardown(test_expunged, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_prefetched_meta_and_limit, setup, teardown),
	    cmocka_unit_test(test_datetime),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
