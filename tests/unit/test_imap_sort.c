/*
 * test_imap_sort — unit tests for SORT (every key, REVERSE, several keys,
 * ties in mailbox order, UIDs, partial matches, criteria errors),
 * THREAD=REFERENCES (every step of RFC 5256 §3: References and
 * In-Reply-To links, dummies kept and pruned, duplicate Message-IDs, loop
 * refusal, subject merging with reply preference and new dummies, date
 * ordering) and THREAD=ORDEREDSUBJECT, the reply format of RFC 5256's
 * example, and base-subject extraction (§2.1). Messages go through a real
 * store in a temporary directory with metadata from mime_meta_compute().
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
#include "imap/imap_sort.h"
#include "mime/mime_meta.h"
#include "store/store.h"

#define ACCOUNT "alice@example.org"

struct fixture {
	char dir[64];
	struct store *st;
	struct store_mbox_view *sortv;	  /* INBOX: the SORT messages */
	struct store_mbox_view *threadv;  /* Threads: the THREAD messages */
	struct store_mbox_view *loopv;	  /* Loops */
	struct store_mbox_view *dummyv;	  /* Dummies */
	struct store_mbox_view *chainv;	  /* Chain: each message answers the one before */
	struct store_mbox_view *examplev; /* Example: RFC 5256's THREAD reply, for real */
	struct store_mbox_view *groupv;	  /* Groups: address keys of groups and broken lists */
};

/* 2020-01-01 00:00:00 UTC */
#define DAY0 1577836800

static const struct {
	const char *text;
	int64_t idate;
} sort_msgs[] = {
    {"From: \"Zed\" <zed@b.example>\r\nTo: amy@x.example\r\nSubject: Re: banana\r\n"
     "Date: Fri, 3 Jan 2020 10:00:00 +0000\r\n\r\nbody\r\n",
     DAY0 + 4 * 86400},
    {"From: Amy <amy@a.example>\r\nTo: zed@x.example\r\nCc: carl@x.example\r\nSubject: apple\r\n"
     "Date: Thu, 2 Jan 2020 10:00:00 -0500\r\n\r\nbody\r\n",
     DAY0 + 3 * 86400},
    {"From: bob@c.example\r\nTo: \"Bob Bee\" <bob@x.example>\r\nSubject: [list] Apple\r\n"
     "\r\nbody\r\n",
     DAY0},
    {"From: =?UTF-8?Q?=C3=89mile?= <emile@d.example>\r\nSubject: Fwd: cherry (fwd)\r\n"
     "Date: Thu, 2 Jan 2020 12:00:00 +0000\r\n\r\n"
     "a much longer body, a much longer body, a much longer body, a much longer body\r\n",
     DAY0 + 5 * 86400},
    {"From: undisclosed-recipients:;\r\nSubject: \r\n"
     "Date: Thu, 2 Jan 2020 15:00:00 +0000\r\n\r\nb\r\n",
     DAY0 + 6 * 86400},
};

static const char *const thread_msgs[] = {
    "Message-ID: <1@x>\r\nSubject: Project\r\nDate: Wed, 1 Jan 2020 10:00:00 +0000\r\n\r\n.\r\n",
    "Message-ID: <2@x>\r\nIn-Reply-To: <1@x>\r\nSubject: Re: Project\r\n"
    "Date: Wed, 1 Jan 2020 11:00:00 +0000\r\n\r\n.\r\n",
    "Message-ID: <3@x>\r\nReferences: <1@x>\r\n <2@x>\r\nSubject: Re: Project\r\n"
    "Date: Wed, 1 Jan 2020 12:00:00 +0000\r\n\r\n.\r\n",
    "Message-ID: <4@x>\r\nReferences: <1@x>\r\nIn-Reply-To: <3@x>\r\nSubject: RE: Project\r\n"
    "Date: Wed, 1 Jan 2020 11:30:00 +0000\r\n\r\n.\r\n",
    "Message-ID: <5@x>\r\nReferences: <missing@x>\r\nSubject: Other\r\n"
    "Date: Thu, 2 Jan 2020 10:00:00 +0000\r\n\r\n.\r\n",
    "Message-ID: <6@x>\r\nReferences: <missing@x>\r\nSubject: Re: Other\r\n"
    "Date: Wed, 1 Jan 2020 09:00:00 +0000\r\n\r\n.\r\n",
    "Message-ID: <7@x>\r\nSubject: Lonely\r\nDate: Tue, 31 Dec 2019 10:00:00 +0000\r\n\r\n.\r\n",
    "Message-ID: <8@x>\r\nSubject: Re: Lonely\r\nDate: Fri, 3 Jan 2020 10:00:00 +0000\r\n\r\n.\r\n",
    "Message-ID: <1@x>\r\nSubject: dup\r\nDate: Sat, 4 Jan 2020 10:00:00 +0000\r\n\r\n.\r\n",
    "Subject: Project\r\nDate: Sun, 5 Jan 2020 10:00:00 +0000\r\n\r\n.\r\n",
};

static const char *const loop_msgs[] = {
    "Message-ID: <a@x>\r\nReferences: <b@x>\r\nSubject: one\r\n"
    "Date: Wed, 1 Jan 2020 10:00:00 +0000\r\n\r\n.\r\n",
    "Message-ID: <b@x>\r\nReferences: <a@x>\r\nSubject: two\r\n"
    "Date: Wed, 1 Jan 2020 11:00:00 +0000\r\n\r\n.\r\n",
    "Message-ID: <c@x>\r\nReferences: <c@x> <a@x> <c@x>\r\nSubject: three\r\n"
    "Date: Wed, 1 Jan 2020 12:00:00 +0000\r\n\r\n.\r\n",
};

static const char *const dummy_msgs[] = {
    "Message-ID: <d1@x>\r\nReferences: <g1@x>\r\nSubject: S\r\n"
    "Date: Wed, 1 Jan 2020 10:00:00 +0000\r\n\r\n.\r\n",
    "Message-ID: <d2@x>\r\nReferences: <g1@x>\r\nSubject: Re: S\r\n"
    "Date: Thu, 2 Jan 2020 10:00:00 +0000\r\n\r\n.\r\n",
    "Message-ID: <d3@x>\r\nReferences: <g2@x>\r\nSubject: S\r\n"
    "Date: Fri, 3 Jan 2020 10:00:00 +0000\r\n\r\n.\r\n",
    "Message-ID: <d4@x>\r\nReferences: <g2@x>\r\nSubject: Re: S\r\n"
    "Date: Sat, 4 Jan 2020 10:00:00 +0000\r\n\r\n.\r\n",
    "Message-ID: <d5@x>\r\nReferences: <gone@x>\r\nSubject: Solo\r\n"
    "Date: Sun, 5 Jan 2020 10:00:00 +0000\r\n\r\n.\r\n",
    "Message-ID: <d6@x>\r\nSubject: Re: S\r\nDate: Mon, 6 Jan 2020 10:00:00 +0000\r\n\r\n.\r\n",
};

/*
 * SORT TO: the addr-mailbox of the first address as ENVELOPE has it: a
 * group's name (not its first member), ENVELOPE's placeholder for an empty
 * list element; the same whether the key comes from the store or the header.
 */
static const char *const group_msgs[] = {
    "To: Team: aaa@x.example;\r\nSubject: g\r\n\r\n.\r\n",		  /* TEAM */
    "To: mmm@x.example\r\nSubject: g\r\n\r\n.\r\n",			  /* MMM */
    "To: zzz@x.example, Team: aaa@x.example;\r\nSubject: g\r\n\r\n.\r\n", /* ZZZ */
    "To: , , aab@x.example\r\nSubject: g\r\n\r\n.\r\n",			  /* MISSING_MAILBOX */
};

#define CHAIN_LEN 150

/* The messages behind RFC 5256's "* THREAD (2)(3 6 (4 23)(44 7 96))". */
static const struct {
	int seq;
	const char *refs;
	const char *subject;
} example_msgs[] = {
    {2, NULL, "A"},
    {3, NULL, "B"},
    {4, "<3@e> <6@e>", "Re: B"},
    {6, "<3@e>", "Re: B"},
    {7, "<3@e> <6@e> <44@e>", "Re: B"},
    {23, "<3@e> <6@e> <4@e>", "Re: B"},
    {44, "<3@e> <6@e>", "Re: B"},
    {96, "<3@e> <6@e> <44@e> <7@e>", "RE: B"},
};

static void
add_msg(struct fixture *fx, const char *mbox, const char *text, int64_t idate)
{
	struct mime_meta mm;

	mime_meta_compute(text, strlen(text), &mm);
	mm.meta.internal_date = idate;
	assert_int_equal(store_append(fx->st, mbox, text, strlen(text), &mm.meta, NULL, NULL), 0);
	mime_meta_free(&mm);
}

static int
setup(void **state)
{
	struct fixture *fx = xcalloc(1, sizeof(*fx));

	xsnprintf(fx->dir, sizeof(fx->dir), "/tmp/surat-sort-XXXXXX");
	if (mkdtemp(fx->dir) == NULL)
		return -1;
	fx->st = store_open(fx->dir, ACCOUNT, NULL);
	if (fx->st == NULL)
		return -1;
	*state = fx;
	for (size_t i = 0; i < ARRAY_LEN(sort_msgs); i++)
		add_msg(fx, "INBOX", sort_msgs[i].text, sort_msgs[i].idate);
	assert_int_equal(store_mailbox_create(fx->st, "Threads", 0), 0);
	for (size_t i = 0; i < ARRAY_LEN(thread_msgs); i++)
		add_msg(fx, "Threads", thread_msgs[i], DAY0 + (int64_t)i);
	assert_int_equal(store_mailbox_create(fx->st, "Loops", 0), 0);
	for (size_t i = 0; i < ARRAY_LEN(loop_msgs); i++)
		add_msg(fx, "Loops", loop_msgs[i], DAY0 + (int64_t)i);
	assert_int_equal(store_mailbox_create(fx->st, "Dummies", 0), 0);
	for (size_t i = 0; i < ARRAY_LEN(dummy_msgs); i++)
		add_msg(fx, "Dummies", dummy_msgs[i], DAY0 + (int64_t)i);
	assert_int_equal(store_mailbox_create(fx->st, "Chain", 0), 0);
	for (int i = 1; i <= CHAIN_LEN; i++) {
		char *m = xasprintf("Message-ID: <c%d@x>\r\nIn-Reply-To: <c%d@x>\r\n"
				    "Subject: Re: chain\r\n\r\n.\r\n",
				    i, i - 1);
		add_msg(fx, "Chain", m, DAY0 + i);
		free(m);
	}
	assert_int_equal(store_mailbox_create(fx->st, "Example", 0), 0);
	for (int i = 1; i <= 96; i++) {
		char *m = NULL;
		for (size_t k = 0; k < ARRAY_LEN(example_msgs); k++)
			if (example_msgs[k].seq == i)
				m = xasprintf(
				    "Message-ID: <%d@e>\r\n%s%s%sSubject: %s\r\n\r\n.\r\n", i,
				    example_msgs[k].refs ? "References: " : "",
				    example_msgs[k].refs ? example_msgs[k].refs : "",
				    example_msgs[k].refs ? "\r\n" : "", example_msgs[k].subject);
		if (m == NULL)
			m = xasprintf("Message-ID: <%d@e>\r\nSubject: filler %d\r\n\r\n.\r\n", i,
				      i);
		add_msg(fx, "Example", m, DAY0 + i);
		free(m);
	}
	assert_int_equal(store_mailbox_create(fx->st, "Groups", 0), 0);
	for (size_t i = 0; i < ARRAY_LEN(group_msgs); i++)
		add_msg(fx, "Groups", group_msgs[i], DAY0 + (int64_t)i);
	assert_int_equal(store_mailbox_load(fx->st, "Groups", &fx->groupv), 0);
	assert_int_equal(store_mailbox_load(fx->st, "Example", &fx->examplev), 0);
	assert_int_equal(store_mailbox_load(fx->st, "Dummies", &fx->dummyv), 0);
	assert_int_equal(store_mailbox_load(fx->st, "Chain", &fx->chainv), 0);
	assert_int_equal(store_mailbox_load(fx->st, "INBOX", &fx->sortv), 0);
	assert_int_equal(store_mailbox_load(fx->st, "Threads", &fx->threadv), 0);
	assert_int_equal(store_mailbox_load(fx->st, "Loops", &fx->loopv), 0);
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *fx = *state;

	store_mbox_view_free(&fx->sortv);
	store_mbox_view_free(&fx->threadv);
	store_mbox_view_free(&fx->loopv);
	store_mbox_view_free(&fx->dummyv);
	store_mbox_view_free(&fx->chainv);
	store_mbox_view_free(&fx->examplev);
	store_mbox_view_free(&fx->groupv);
	store_close(&fx->st);
	unit_rm_tree(fx->dir);
	free(fx);
	return 0;
}

static struct imap_search_ctx
mkctx(struct fixture *fx, const char *mbox, const struct store_mbox_view *v)
{
	struct imap_search_ctx ctx = {fx->st, mbox, v->uidvalidity, v, NULL, NULL, 0};
	return ctx;
}

/*
 * SORT with criteria "(...)" over the matched messages of mailbox mbox (view
 * v); the reply or "ERR <text>".
 */
static char *
sort_in(struct fixture *fx, const char *mbox, const struct store_mbox_view *v, const char *criteria,
	const unsigned char *match, int uid)
{
	struct imap_parser *p = imap_parser_new(NULL);
	struct buf line = BUF_INIT(0), out = BUF_INIT(0);
	struct imap_search_ctx ctx = mkctx(fx, mbox, v);
	unsigned char all[8] = {1, 1, 1, 1, 1, 1, 1, 1};
	const char *err;
	size_t used;
	char *r;

	buf_printf(&line, "t SORT %s UTF-8 ALL\r\n", criteria);
	assert_int_equal(imap_parser_feed(p, line.data, line.len, &used), IMAP_PARSE_DONE);
	if (imap_sort(&out, &ctx, &imap_parser_command(p)->args[0], match ? match : all, uid,
		      &err) < 0) {
		assert_int_equal(out.len, 0);
		r = xasprintf("ERR %s", err);
	} else {
		r = buf_steal(&out);
	}
	imap_parser_free(&p);
	buf_free(&line);
	buf_free(&out);
	return r;
}

/* SORT over the INBOX's messages. */
static char *
sort(struct fixture *fx, const char *criteria, const unsigned char *match, int uid)
{
	return sort_in(fx, "INBOX", fx->sortv, criteria, match, uid);
}

#define SORT_EQ(fx, crit, want)                                                                    \
	do {                                                                                       \
		char *got_ = sort((fx), (crit), NULL, 0);                                          \
		if (strcmp(got_, (want)) != 0)                                                     \
			fail_msg("SORT %s: got \"%s\", want \"%s\"", (crit), got_, (want));        \
		free(got_);                                                                        \
	} while (0)

static void
test_sort_keys(void **state)
{
	struct fixture *fx = *state;

	SORT_EQ(fx, "(DATE)", "* SORT 3 4 2 5 1\r\n");
	SORT_EQ(fx, "(REVERSE DATE)", "* SORT 1 2 5 4 3\r\n");
	SORT_EQ(fx, "(ARRIVAL)", "* SORT 3 2 1 4 5\r\n");
	SORT_EQ(fx, "(REVERSE ARRIVAL)", "* SORT 5 4 1 2 3\r\n");
	SORT_EQ(fx, "(SUBJECT)", "* SORT 5 2 3 1 4\r\n");
	SORT_EQ(fx, "(FROM)", "* SORT 2 3 4 5 1\r\n");
	SORT_EQ(fx, "(TO)", "* SORT 4 5 1 3 2\r\n");
	SORT_EQ(fx, "(CC)", "* SORT 1 3 4 5 2\r\n");
	SORT_EQ(fx, "(DISPLAYFROM)", "* SORT 2 3 5 1 4\r\n");
	SORT_EQ(fx, "(DISPLAYTO)", "* SORT 4 5 1 3 2\r\n");
	SORT_EQ(fx, "(SUBJECT DATE)", "* SORT 5 3 2 1 4\r\n");
	SORT_EQ(fx, "(SUBJECT REVERSE DATE)", "* SORT 5 2 3 1 4\r\n");
	SORT_EQ(fx, "(REVERSE SUBJECT ARRIVAL)", "* SORT 4 1 3 2 5\r\n");
	SORT_EQ(fx, "(cc reverse arrival)", "* SORT 5 4 1 3 2\r\n");
}

/*
 * The store's cached key of an address list must be the key the header
 * gives: its first address's addr-mailbox, a group's name included. It
 * held the first member of a group instead, so "To: Team: aaa@x;" sorted
 * as AAA, and differently once the key came from the header.
 */
static void
test_sort_address_groups(void **state)
{
	struct fixture *fx = *state;
	char *got = sort_in(fx, "Groups", fx->groupv, "(TO)", NULL, 0);

	assert_string_equal(got, "* SORT 4 2 1 3\r\n");
	free(got);
	got = sort_in(fx, "Groups", fx->groupv, "(REVERSE TO)", NULL, 0);
	assert_string_equal(got, "* SORT 3 1 2 4\r\n");
	free(got);
}

static void
test_sort_size_uid_match(void **state)
{
	struct fixture *fx = *state;
	const struct store_msg *v = fx->sortv->msgs;
	unsigned char match[5] = {1, 0, 1, 1, 0};
	uint32_t order[5] = {1, 2, 3, 4, 5};
	struct buf want = BUF_INIT(0);
	char *got;

	/* SIZE: by RFC822.SIZE, ties in mailbox order */
	for (int i = 0; i < 5; i++)
		for (int j = i + 1; j < 5; j++)
			if (v[order[j] - 1].size < v[order[i] - 1].size ||
			    (v[order[j] - 1].size == v[order[i] - 1].size && order[j] < order[i])) {
				uint32_t t = order[i];
				order[i] = order[j];
				order[j] = t;
			}
	buf_puts(&want, "* SORT");
	for (int i = 0; i < 5; i++)
		buf_printf(&want, " %u", order[i]);
	buf_puts(&want, "\r\n");
	SORT_EQ(fx, "(SIZE)", buf_str(&want));
	assert_int_equal(order[4], 4);

	got = sort(fx, "(DATE)", match, 1);
	buf_reset(&want);
	buf_printf(&want, "* SORT %u %u %u\r\n", v[2].uid, v[3].uid, v[0].uid);
	assert_string_equal(got, buf_str(&want));
	free(got);
	memset(match, 0, sizeof(match));
	got = sort(fx, "(DATE)", match, 0);
	assert_string_equal(got, "* SORT\r\n");
	free(got);
	buf_free(&want);
}

static void
test_sort_errors(void **state)
{
	struct fixture *fx = *state;

	SORT_EQ(fx, "()", "ERR Empty sort criteria");
	SORT_EQ(fx, "(FOO)", "ERR Unknown sort criterion");
	SORT_EQ(fx, "(DATE REVERSE)", "ERR REVERSE without sort key");
	SORT_EQ(fx, "(REVERSE REVERSE DATE)", "ERR REVERSE twice in sort criteria");
	SORT_EQ(fx, "(\"DATE\")", "ERR Invalid sort criteria");
	SORT_EQ(fx, "((DATE))", "ERR Invalid sort criteria");
}

/* THREAD over mailbox mbox/view with every message matching unless match is given. */
static char *
thread(struct fixture *fx, const char *mbox, const struct store_mbox_view *v, const char *alg,
       const unsigned char *match, int uid)
{
	struct imap_search_ctx ctx = mkctx(fx, mbox, v);
	unsigned char all[256];
	struct buf out = BUF_INIT(0);
	const char *err;

	memset(all, 1, sizeof(all));
	if (imap_thread(&out, &ctx, alg, match ? match : all, uid, &err) < 0) {
		assert_int_equal(out.len, 0);
		return xasprintf("ERR %s", err);
	}
	return buf_steal(&out);
}

static void
test_thread_references(void **state)
{
	struct fixture *fx = *state;
	char *got;
	unsigned char match[10] = {1, 1, 1, 0, 0, 0, 0, 0, 0, 0};
	unsigned char none[10] = {0};
	const struct store_msg *v = fx->threadv->msgs;
	struct buf want = BUF_INIT(0);

	got = thread(fx, "Threads", fx->threadv, "REFERENCES", NULL, 0);
	assert_string_equal(got, "* THREAD (7 8)((6)(5))((1 (2 3)(4))(10))(9)\r\n");
	free(got);
	/* only some messages: 3 still hangs under 2 under 1 */
	got = thread(fx, "Threads", fx->threadv, "references", match, 0);
	assert_string_equal(got, "* THREAD (1 2 3)\r\n");
	free(got);
	got = thread(fx, "Threads", fx->threadv, "REFERENCES", match, 1);
	buf_printf(&want, "* THREAD (%u %u %u)\r\n", v[0].uid, v[1].uid, v[2].uid);
	assert_string_equal(got, buf_str(&want));
	free(got);
	got = thread(fx, "Threads", fx->threadv, "REFERENCES", none, 0);
	assert_string_equal(got, "* THREAD \r\n");
	free(got);
	got = thread(fx, "Threads", fx->threadv, "REFS", NULL, 0);
	assert_string_equal(got, "ERR Unknown thread algorithm.");
	free(got);
	buf_free(&want);
}

static void
test_thread_rfc5256_example(void **state)
{
	struct fixture *fx = *state;
	unsigned char match[96] = {0};
	char *got;

	for (size_t k = 0; k < ARRAY_LEN(example_msgs); k++)
		match[example_msgs[k].seq - 1] = 1;
	got = thread(fx, "Example", fx->examplev, "REFERENCES", match, 0);
	assert_string_equal(got, "* THREAD (2)(3 6 (4 23)(44 7 96))\r\n");
	free(got);
}

static void
test_thread_loops(void **state)
{
	struct fixture *fx = *state;
	char *got;

	/* a refers to b and b to a: no loop is made; c refers to itself */
	got = thread(fx, "Loops", fx->loopv, "REFERENCES", NULL, 0);
	assert_string_equal(got, "* THREAD (2 1)(3)\r\n");
	free(got);
}

static void
test_thread_dummies_chain(void **state)
{
	struct fixture *fx = *state;
	struct buf want = BUF_INIT(0);
	unsigned char all[CHAIN_LEN];
	char *got;

	/*
	 * Two dummies of one subject merge; a top-level dummy with one child
	 * gives way to it; a reply without references joins the dummy.
	 */
	got = thread(fx, "Dummies", fx->dummyv, "REFERENCES", NULL, 0);
	assert_string_equal(got, "* THREAD ((1)(2)(3)(4)(6))(5)\r\n");
	free(got);
	/* a long chain stays on one level (the missing <c0@x> is pruned) */
	memset(all, 1, sizeof(all));
	got = thread(fx, "Chain", fx->chainv, "REFERENCES", all, 0);
	buf_puts(&want, "* THREAD (");
	for (int i = 1; i <= CHAIN_LEN; i++)
		buf_printf(&want, i > 1 ? " %d" : "%d", i);
	buf_puts(&want, ")\r\n");
	assert_string_equal(got, buf_str(&want));
	free(got);
	buf_free(&want);
}

/*
 * References crafted to make the loop check before each link walk a long
 * chain: one message whose References are a chain of N ids (each link
 * walks all before it), one whose References go back and forth between
 * that chain's two ends (each pair walks all of it). THREAD must not cost
 * N*N steps of a worker: references and depth are capped.
 */
static void
test_thread_crafted_references_cost(void **state)
{
	struct fixture *fx = *state;
	struct store_mbox_view *v = NULL;
	struct buf m = BUF_INIT(0);
	struct timespec t0, t1;
	enum { N = 50000, PAIRS = 20000 };
	char *got;

	assert_int_equal(store_mailbox_create(fx->st, "Crafted", 0), 0);
	buf_puts(&m, "Message-ID: <a@x>\r\nSubject: a\r\nReferences:");
	for (int i = 0; i < N; i++)
		buf_printf(&m, " <r%d@x>", i);
	buf_puts(&m, "\r\n\r\n.\r\n");
	add_msg(fx, "Crafted", buf_str(&m), DAY0);
	buf_reset(&m);
	buf_puts(&m, "Message-ID: <b@x>\r\nSubject: b\r\nReferences:");
	for (int i = 0; i < PAIRS; i++)
		buf_printf(&m, " <r%d@x> <r0@x>", N - 1);
	buf_puts(&m, "\r\n\r\n.\r\n");
	add_msg(fx, "Crafted", buf_str(&m), DAY0 + 1);
	buf_free(&m);
	assert_int_equal(store_mailbox_load(fx->st, "Crafted", &v), 0);

	clock_gettime(CLOCK_MONOTONIC, &t0);
	got = thread(fx, "Crafted", v, "REFERENCES", NULL, 0);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	assert_string_equal(got, "* THREAD ((1)(2))\r\n");
	free(got);
	/* Uncapped this is ~10^9 steps (many seconds); capped, milliseconds. */
	double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	assert_true(secs < 2.0);
	store_mbox_view_free(&v);
}

/*
 * Crafted References, THREAD_REFS_MAX per message. Five messages make one
 * chain of 2,496 fresh ids, each linked under the one before: the loop
 * check walked the chain for each and refused to link past depth
 * THREAD_DEPTH_MAX, so the fifth message, hung at the chain's end, made a
 * thread of its own. A fresh id has no children and needs no walk: one
 * thread. Then messages go back and forth between <c2000@x>, which hangs
 * THREAD_DEPTH_MAX deep, and the thread <r@x>: each link to <r@x> walks
 * 2,000 steps and is refused, 500,000 steps a message (2,000 such messages
 * held a worker for 8.5 s), until the budget of the message's walks is spent.
 */
static void
test_thread_crafted_walks(void **state)
{
	struct fixture *fx = *state;
	struct store_mbox_view *v = NULL;
	struct timespec t0, t1;
	enum { CHAIN = 5, BACK_FORTH = 40 };
	char *got;

	assert_int_equal(store_mailbox_create(fx->st, "Walks", 0), 0);
	for (int i = 0; i < CHAIN; i++) {
		struct buf m = BUF_INIT(0);
		buf_printf(&m, "Message-ID: <m%d@x>\r\nSubject: c%d\r\nReferences:", i, i);
		for (int k = i * 499; k < i * 499 + 500; k++)
			buf_printf(&m, " <c%d@x>", k);
		buf_puts(&m, "\r\n\r\n.\r\n");
		add_msg(fx, "Walks", buf_str(&m), DAY0 + i);
		buf_free(&m);
	}
	assert_int_equal(store_mailbox_load(fx->st, "Walks", &v), 0);
	got = thread(fx, "Walks", v, "REFERENCES", NULL, 0);
	assert_string_equal(got, "* THREAD ((1)(2)(3)(4)(5))\r\n");
	free(got);
	store_mbox_view_free(&v);

	add_msg(fx, "Walks", "Message-ID: <r@x>\r\nSubject: r\r\n\r\n.\r\n", DAY0 + CHAIN);
	add_msg(fx, "Walks", "Message-ID: <r1@x>\r\nReferences: <r@x>\r\nSubject: r\r\n\r\n.\r\n",
		DAY0 + CHAIN + 1);
	for (int i = 0; i < BACK_FORTH; i++) {
		struct buf m = BUF_INIT(0);
		buf_printf(&m, "Message-ID: <b%d@x>\r\nSubject: b\r\nReferences:", i);
		for (int k = 0; k < 250; k++)
			buf_puts(&m, " <c2000@x> <r@x>");
		buf_puts(&m, "\r\n\r\n.\r\n");
		add_msg(fx, "Walks", buf_str(&m), DAY0 + CHAIN + 2 + i);
		buf_free(&m);
	}
	assert_int_equal(store_mailbox_load(fx->st, "Walks", &v), 0);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	got = thread(fx, "Walks", v, "REFERENCES", NULL, 0);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	/* the chain stays whole; <r@x> keeps its replies */
	assert_true(strncmp(got, "* THREAD ((1)(2)(3)(4)(5))(6 ", 29) == 0);
	free(got);
	double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	assert_true(secs < 1.0);
	store_mbox_view_free(&v);

	/*
	 * The crafted messages spend their own walks, not the mailbox's: a
	 * reply filed before its parent (48 <g>, 49 <q> answering <p>, 50
	 * <p> answering <g>) needs a walk to link <p>, which has a child.
	 * With one budget for the whole THREAD, spent above, <p> was refused
	 * and the thread split in two: (48)(50 49).
	 */
	add_msg(fx, "Walks", "Message-ID: <g@x>\r\nSubject: grand\r\n\r\n.\r\n", DAY0 + 100);
	add_msg(fx, "Walks",
		"Message-ID: <q@x>\r\nReferences: <g@x> <p@x>\r\nSubject: reply\r\n\r\n.\r\n",
		DAY0 + 102);
	add_msg(fx, "Walks",
		"Message-ID: <p@x>\r\nReferences: <g@x>\r\nSubject: parent\r\n\r\n.\r\n",
		DAY0 + 101);
	assert_int_equal(store_mailbox_load(fx->st, "Walks", &v), 0);
	got = thread(fx, "Walks", v, "REFERENCES", NULL, 0);
	assert_non_null(strstr(got, "(48 50 49)"));
	free(got);
	store_mbox_view_free(&v);
}

/*
 * Message-IDs crafted for the unkeyed FNV-1a hash the id table once used:
 * 2^steps ids whose hashes share their low 20 bits, built from pairs of
 * 3-letter blocks that take the hash state to the same value (found by
 * the birthday bound among 36^3 blocks). Each id is "<blocks>@x".
 */
static char **
colliding_ids(int steps, size_t *n_r)
{
	static const char al[] = "abcdefghijklmnopqrstuvwxyz0123456789";
	const uint32_t mask = (1u << 20) - 1;
	char pairs[16][2][4];
	uint64_t x = 1469598103934665603ULL;
	uint32_t *seen = xcalloc(mask + 1, sizeof(*seen)); /* state -> block index + 1 */

	assert_true(steps <= 16);
	for (int st = 0; st < steps; st++) {
		bool found = false;
		memset(seen, 0, (mask + 1) * sizeof(*seen));
		for (uint32_t b = 0; b < 36 * 36 * 36 && !found; b++) {
			char blk[4] = {al[b / 1296], al[b / 36 % 36], al[b % 36], '\0'};
			uint64_t y = x;
			for (int k = 0; k < 3; k++)
				y = (y ^ (unsigned char)blk[k]) * 1099511628211ULL;
			uint32_t low = (uint32_t)y & mask;
			if (seen[low] != 0) {
				uint32_t o = seen[low] - 1;
				char other[4] = {al[o / 1296], al[o / 36 % 36], al[o % 36], '\0'};
				memcpy(pairs[st][0], other, 4);
				memcpy(pairs[st][1], blk, 4);
				x = y; /* the low bits agree; the rest do not matter */
				found = true;
			} else {
				seen[low] = b + 1;
			}
		}
		assert_true(found);
	}
	free(seen);
	size_t n = (size_t)1 << steps;
	char **ids = xcalloc(n, sizeof(*ids));
	for (size_t i = 0; i < n; i++) {
		struct buf b = BUF_INIT(0);
		for (int st = 0; st < steps; st++)
			buf_puts(&b, pairs[st][(i >> st) & 1]);
		buf_puts(&b, "@x");
		ids[i] = buf_steal(&b);
	}
	*n_r = n;
	return ids;
}

/*
 * Many messages whose References (500 each, the most THREAD uses) are ids
 * colliding in an unkeyed hash: with linear probing every insert walks the
 * whole run, 32768 ids costing ~5*10^8 string compares. The table's hash
 * is keyed with a random seed, so this costs milliseconds.
 */
static void
test_thread_colliding_ids_cost(void **state)
{
	struct fixture *fx = *state;
	struct store_mbox_view *v = NULL;
	struct timespec t0, t1;
	size_t n, nmsg = 0;
	char **ids = colliding_ids(15, &n);
	char *got;

	assert_int_equal(store_mailbox_create(fx->st, "Colliding", 0), 0);
	for (size_t i = 0; i < n; i += 500, nmsg++) {
		struct buf m = BUF_INIT(0);
		buf_printf(&m, "Message-ID: <m%zu@y>\r\nSubject: m%zu\r\nReferences:", i, i);
		for (size_t k = i; k < n && k < i + 500; k++)
			buf_printf(&m, " <%s>", ids[k]);
		buf_puts(&m, "\r\n\r\n.\r\n");
		add_msg(fx, "Colliding", buf_str(&m), DAY0 + (int64_t)nmsg);
		buf_free(&m);
	}
	assert_int_equal(store_mailbox_load(fx->st, "Colliding", &v), 0);

	clock_gettime(CLOCK_MONOTONIC, &t0);
	got = thread(fx, "Colliding", v, "REFERENCES", NULL, 0);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	assert_non_null(strstr(got, "* THREAD (1)"));
	free(got);
	/* Unkeyed this takes seconds (release build); keyed, milliseconds. */
	double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	assert_true(secs < 1.0);
	store_mbox_view_free(&v);
	for (size_t i = 0; i < n; i++)
		free(ids[i]);
	free(ids);
}

static void
test_thread_orderedsubject(void **state)
{
	struct fixture *fx = *state;
	char *got;

	got = thread(fx, "Threads", fx->threadv, "ORDEREDSUBJECT", NULL, 0);
	assert_string_equal(got, "* THREAD (7 8)(6 5)(1 (2)(4)(3)(10))(9)\r\n");
	free(got);
	got = thread(fx, "INBOX", fx->sortv, "orderedsubject", NULL, 0);
	/* "" (5), APPLE (3 by its internal date, then 2), BANANA (1), CHERRY (4) */
	assert_string_equal(got, "* THREAD (3 2)(4)(5)(1)\r\n");
	free(got);
}

static void
test_base_subject(void **state)
{
	static const struct {
		const char *in, *out;
	} cases[] = {
	    {"", ""},
	    {"hello", "hello"},
	    {"  Hello \t  World  ", "Hello World"},
	    {"Re: foo", "foo"},
	    {"RE: Re: re: foo", "foo"},
	    {"Fw: foo", "foo"},
	    {"Fwd: foo", "foo"},
	    {"FWD:Fwd:foo", "foo"},
	    {"re : foo", "foo"},
	    {"Re[2]: foo", "foo"},
	    {"Re [2] : foo", "foo"},
	    {"[list] Re: foo", "foo"},
	    {"RE: [list] Re: foo", "foo"},
	    {"[a][b] Re: foo", "foo"},
	    {"[PATCH] fix it", "fix it"},
	    {"[PATCH 1/2] [v2] fix it", "fix it"},
	    {"[PATCH]", "[PATCH]"},
	    {"[a] [b]", "[b]"},
	    {"Re: [x]", "[x]"},
	    {"foo (fwd)", "foo"},
	    {"foo (FWD) (fwd)  ", "foo"},
	    {"[fwd: foo]", "foo"},
	    {"[Fwd: Re: foo (fwd)]", "foo"},
	    {"Re: [fwd: [fwd: foo]]", "foo"},
	    {"Ref: foo", "Ref: foo"},
	    {"Reply: foo", "Reply: foo"},
	    {"Re foo", "Re foo"},
	    {"[unclosed Re: foo", "[unclosed Re: foo"},
	    {"Re:", ""},
	    {"(fwd)", ""},
	    {"re: Gr\xc3\xbc\xc3\x9f"
	     "e",
	     "Gr\xc3\xbc\xc3\x9f"
	     "e"},
	};

	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		char *got = imap_base_subject(cases[i].in);
		if (strcmp(got, cases[i].out) != 0)
			fail_msg("base subject of \"%s\": got \"%s\", want \"%s\"", cases[i].in,
				 got, cases[i].out);
		free(got);
	}
	char *n = imap_base_subject(NULL);
	assert_string_equal(n, "");
	free(n);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_sort_keys),
	    cmocka_unit_test(test_sort_size_uid_match),
	    cmocka_unit_test(test_sort_errors),
	    cmocka_unit_test(test_thread_references),
	    cmocka_unit_test(test_thread_rfc5256_example),
	    cmocka_unit_test(test_thread_loops),
	    cmocka_unit_test(test_thread_dummies_chain),
	    cmocka_unit_test(test_thread_crafted_references_cost),
	    cmocka_unit_test(test_thread_colliding_ids_cost),
	    cmocka_unit_test(test_thread_orderedsubject),
	    cmocka_unit_test(test_base_subject),
	    cmocka_unit_test(test_sort_address_groups),
	    cmocka_unit_test(test_thread_crafted_walks),
	};

	/* the tests only read: one store for all of them */
	return cmocka_run_group_tests(tests, setup, teardown);
}
