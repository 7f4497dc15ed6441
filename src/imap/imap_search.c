/*
 * imap_search — SEARCH evaluation and replies. See imap_search.h for the
 * contract; the notes here are about how.
 *
 * The program is first compiled into a tree of nodes that carry what the
 * keys need at run time: resolved sequence and UID sets, case-mapped
 * needles, the full-text candidates of BODY/TEXT keys. Children of AND and
 * OR are ordered by cost (snapshot < index lookup < header < text) so the
 * evaluation, which short-circuits, reads a message file only when the
 * cheap keys have not decided already. What a message needs (its header
 * block, its decoded text) is loaded at most once per message, lazily.
 *
 * Dates: BEFORE/ON/SINCE use the day of the internal date in UTC (the
 * server's zone); SENT* use the day of the Date: header in the zone it was
 * written in, a message without a valid Date: counting as 1970-01-01 (as
 * Dovecot does).
 *
 * SECURITY: needles and message text are bounded by the command and the
 * message; the search is substring matching only. A message that vanished
 * or cannot be read simply does not match.
 */
#include "imap/imap_search.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "core/nameidx.h"
#include "core/util.h"
#include "imap/imap_fetch.h"
#include "mime/mime.h"
#include "mime/mime_address.h"
#include "mime/mime_decode.h"
#include "mime/mime_header.h"
#include "mime/mime_meta.h"
#include "mime/mime_search.h"
#include "mime/mime_text.h"

#define SEARCH_HEADER_MAX MIME_SEARCH_HEADER_MAX

enum search_cost {
	COST_SNAPSHOT = 0,
	COST_INDEX = 1,
	COST_HEADER = 2,
	COST_TEXT = 3,
};

/* How a BODY/TEXT key is decided. */
enum text_mode {
	TM_ALL,	       /* empty needle: every message */
	TM_SCAN,       /* substring on every message's text */
	TM_FTS_VERIFY, /* index candidates, then substring on their text */
	TM_FTS_ONLY,   /* index candidates are the answer (one ASCII word) */
};

struct cnode {
	const struct imap_search_key *k;
	enum imap_search_op op;
	struct cnode *kids;
	size_t nkids;
	enum search_cost cost;
	size_t order;		/* position among its siblings in the program */
	struct imap_seqset set; /* SEQSET, UID: resolved without "$" */
	bool saved;		/* the set held "$" */
	char *needle;		/* case-mapped search string */
	size_t nlen;
	enum text_mode tmode;
	uint32_t *fts; /* ascending candidate UIDs */
	size_t nfts;
	size_t kwi; /* KEYWORD, UNKEYWORD: its name's index in search_run.kws */
};

struct search_run {
	const struct imap_search_ctx *ctx;
	bool exact; /* mailbox small enough to scan BODY/TEXT exactly */
	const char *err;
	int hc_state; /* header caches: 0 not loaded, 1 loaded, -1 unavailable */
	struct store_search_rec *hc;
	size_t nhc;
	/*
	 * The names of the KEYWORD and UNKEYWORD keys, each once, and which of
	 * them the message kwmsg has: its keyword list is read once, not once
	 * per key (a program of thousands of them over a large mailbox held a
	 * worker for minutes).
	 */
	struct nameidx kwidx;
	const char **kws;
	size_t nkws;
	uint64_t *kwhas; /* bit i: kwmsg has kws[i] */
	const struct store_msg *kwmsg;
	/*
	 * The messages whose text the full-text index keeps only in part
	 * (MIME_META_TEXT_CUT_WORD): BODY and TEXT read them instead of taking
	 * the index's word. Looked up with the first such key.
	 */
	bool cut_loaded;
	uint32_t *cut;
	size_t ncut;
};

/* What has been loaded of the message being evaluated. */
struct smsg {
	const struct imap_search_ctx *ctx;
	struct search_run *run;
	const struct store_msg *m;
	uint32_t seq;
	int hdr_state; /* 0 not loaded, 1 loaded, -1 unavailable */
	struct buf hdr;
	int parse_state;
	struct imap_msg_map map;
	struct mime_part *root;
	int body_state;
	struct buf body; /* case-mapped decoded body text */
	int text_state;
	struct buf text; /* case-mapped headers and body text */
};

/* --- reading messages --- */

int
imap_search_header(const struct imap_search_ctx *ctx, uint32_t uid, struct buf *out)
{
	char chunk[8192];
	size_t start = out->len;
	int fd, r;

	r = store_msg_open(ctx->st, ctx->mailbox, ctx->uidvalidity, uid, &fd, NULL);
	if (r <= 0)
		return r;
	for (;;) {
		ssize_t k = read(fd, chunk, sizeof(chunk));
		if (k < 0) {
			close(fd);
			buf_truncate(out, start);
			return -1;
		}
		if (k == 0)
			break;
		if (buf_append(out, chunk, (size_t)k) < 0) {
			close(fd);
			buf_truncate(out, start);
			return -1;
		}
		/* Look for the empty line only in what is new (and the 2 bytes
		 * before it), so a big header is not rescanned per chunk. */
		size_t have = out->len - start, from = have - (size_t)k;
		const char *h = out->data + start;
		from = from > 2 ? from - 2 : 0;
		if (h[0] == '\n' || (have > 1 && h[0] == '\r' && h[1] == '\n') ||
		    memmem(h + from, have - from, "\n\n", 2) != NULL ||
		    memmem(h + from, have - from, "\n\r\n", 3) != NULL) {
			buf_truncate(out, start + mime_header_block_len(h, have));
			break;
		}
		if (have >= SEARCH_HEADER_MAX)
			break;
	}
	close(fd);
	return 1;
}

static void
smsg_init(struct smsg *sm, struct search_run *run, size_t i)
{
	const struct imap_search_ctx *ctx = run->ctx;

	memset(sm, 0, sizeof(*sm));
	sm->ctx = ctx;
	sm->run = run;
	sm->m = &ctx->view->msgs[i];
	sm->seq = (uint32_t)(i + 1);
}

static void
smsg_done(struct smsg *sm)
{
	buf_free(&sm->hdr);
	buf_free(&sm->body);
	buf_free(&sm->text);
	mime_free(&sm->root);
	imap_msg_unmap(&sm->map);
}

static bool
smsg_header(struct smsg *sm)
{
	if (sm->hdr_state == 0)
		sm->hdr_state = imap_search_header(sm->ctx, sm->m->uid, &sm->hdr) > 0 ? 1 : -1;
	return sm->hdr_state > 0;
}

static bool
smsg_parse(struct smsg *sm)
{
	if (sm->parse_state == 0) {
		const struct imap_search_ctx *ctx = sm->ctx;
		if (imap_msg_map(ctx->st, ctx->mailbox, ctx->uidvalidity, sm->m->uid, &sm->map) >
		    0) {
			sm->root =
			    mime_parse(sm->map.data != NULL ? sm->map.data : "", sm->map.len);
			sm->parse_state = 1;
		} else {
			sm->parse_state = -1;
		}
	}
	return sm->parse_state > 0;
}

/* The case-mapped body text of the message (BODY). */
static const struct buf *
smsg_body(struct smsg *sm)
{
	if (sm->body_state == 0) {
		struct buf t = BUF_INIT(0);
		sm->body_state = -1;
		if (smsg_parse(sm)) {
			(void)mime_text_body(&t, sm->root, 0);
			(void)mime_casemap(&sm->body, t.data != NULL ? t.data : "", t.len,
						  0);
			sm->body_state = 1;
		}
		buf_free(&t);
	}
	return sm->body_state > 0 ? &sm->body : NULL;
}

/* Every header field of p, decoded, one a line. */
static void
text_fields(struct buf *t, const struct mime_part *p)
{
	const char *h = p->msg + p->hdr_off;
	struct mime_field f;
	size_t pos = 0;

	while (mime_header_next(h, p->hdr_len, &pos, &f)) {
		buf_append(t, f.name, f.name_len);
		if (f.has_colon) {
			buf_puts(t, ": ");
			mime_search_decoded(t, &f);
		}
		buf_putc(t, '\n');
	}
}

/* The header fields of every part under p: the MIME headers of body parts
 * and the headers of encapsulated messages, which are in the message's body
 * (RFC 3501 6.4.4 TEXT: "in the header or body of the message"). Recursion
 * is bounded by MIME_MAX_DEPTH. */
static void
text_part_fields(struct buf *t, const struct mime_part *p)
{
	for (const struct mime_part *c = p->children; c != NULL; c = c->next) {
		text_fields(t, c);
		text_part_fields(t, c);
	}
}

/* The case-mapped text of the whole message (TEXT): every header field of
 * every part, decoded, then the body. */
static const struct buf *
smsg_text(struct smsg *sm)
{
	if (sm->text_state == 0) {
		struct buf t = BUF_INIT(0);
		sm->text_state = -1;
		if (smsg_parse(sm)) {
			const struct mime_part *r = sm->root;
			text_fields(&t, r);
			text_part_fields(&t, r);
			(void)mime_text_headers(&t, r, 0);
			buf_putc(&t, '\n');
			(void)mime_text_body(&t, r, 0);
			(void)mime_casemap(&sm->text, t.data != NULL ? t.data : "", t.len,
						  0);
			sm->text_state = 1;
		}
		buf_free(&t);
	}
	return sm->text_state > 0 ? &sm->text : NULL;
}

static bool
search_contains(const struct buf *hay, const char *needle, size_t nlen)
{
	if (nlen == 0)
		return true;
	if (hay == NULL || hay->len < nlen)
		return false;
	return memmem(hay->data, hay->len, needle, nlen) != NULL;
}

/* --- header keys --- */

/* The message's cached header text from the index, loaded for the whole mailbox once; or NULL. */
static const struct store_search_rec *
smsg_cached_headers(struct smsg *sm)
{
	struct search_run *run = sm->run;
	size_t lo = 0, hi;

	if (run->hc_state == 0) {
		const struct imap_search_ctx *ctx = run->ctx;
		run->hc_state = store_search_headers(ctx->st, ctx->mailbox, ctx->uidvalidity,
						     &run->hc, &run->nhc) == 0
				    ? 1
				    : -1;
	}
	if (run->hc_state < 0)
		return NULL;
	for (hi = run->nhc; lo < hi;) {
		size_t mid = lo + (hi - lo) / 2;
		if (run->hc[mid].uid < sm->m->uid)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < run->nhc && run->hc[lo].uid == sm->m->uid && run->hc[lo].hdrs != NULL)
		return &run->hc[lo];
	return NULL;
}

/*
 * Does a header field called name contain the (case-mapped) needle? The
 * cached fields (cache >= 0, a mime_search_field) are answered from the
 * index when the message has a cache; others from its header block.
 */
static bool
search_header_match(struct smsg *sm, const char *name, int cache, enum mime_search_form form,
		    const char *needle, size_t nlen)
{
	struct mime_field f;
	size_t pos = 0, namelen = strlen(name);
	bool found = false;

	if (cache >= 0) {
		const struct store_search_rec *e = smsg_cached_headers(sm);
		int r = e != NULL ? mime_search_cached(e->hdrs, e->len,
						       (enum mime_search_field)cache, needle, nlen)
				  : -1;
		if (r >= 0)
			return r == 1;
	}
	if (!smsg_header(sm))
		return false;
	while (!found && mime_header_next(sm->hdr.data, sm->hdr.len, &pos, &f)) {
		struct buf folded = BUF_INIT(0);
		if (!f.has_colon || f.name_len != namelen ||
		    strncasecmp(f.name, name, namelen) != 0)
			continue;
		if (nlen == 0)
			return true;
		mime_search_value(&folded, &f, form);
		found = search_contains(&folded, needle, nlen);
		buf_free(&folded);
	}
	return found;
}

/* The day of the Date: header in its own zone; day 0 when there is none. */
static int64_t
search_sent_day(struct smsg *sm)
{
	const struct store_search_rec *e = smsg_cached_headers(sm);
	int64_t day;

	if (e != NULL && mime_search_cached_day(e->hdrs, e->len, &day) == 0)
		return day;
	return smsg_header(sm) ? mime_search_sent_day(sm->hdr.data, sm->hdr.len) : 0;
}

/* Whether the message has the keyword of a KEYWORD key (search_run.kws). */
static bool
search_keyword(struct smsg *sm, size_t kwi)
{
	struct search_run *run = sm->run;

	if (run->kwmsg != sm->m) {
		const char *p = sm->m->keywords ? sm->m->keywords : "";
		run->kwmsg = sm->m;
		memset(run->kwhas, 0, (run->nkws + 63) / 64 * sizeof(*run->kwhas));
		while (*p != '\0') {
			uint32_t slot;
			while (*p == ' ')
				p++;
			size_t n = strcspn(p, " ");
			long i = n ? nameidx_find(&run->kwidx, run->kws, p, n, &slot) : -1;
			if (i >= 0)
				run->kwhas[i / 64] |= (uint64_t)1 << (i % 64);
			p += n;
		}
	}
	return (run->kwhas[kwi / 64] >> (kwi % 64) & 1) != 0;
}

static bool
search_recent(const struct smsg *sm)
{
	const struct imap_seqset *r = sm->ctx->recent;

	return r != NULL && r->count > 0 && imap_seqset_contains(r, sm->m->uid);
}

static bool
search_uid_in(const uint32_t *v, size_t n, uint32_t uid)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (v[mid] == uid)
			return true;
		if (v[mid] < uid)
			lo = mid + 1;
		else
			hi = mid;
	}
	return false;
}

static bool
search_text_key(struct smsg *sm, const struct cnode *n, bool body)
{
	const struct search_run *run = sm->run;

	if ((n->tmode == TM_FTS_ONLY || n->tmode == TM_FTS_VERIFY) &&
	    search_uid_in(run->cut, run->ncut, sm->m->uid))
		return search_contains(body ? smsg_body(sm) : smsg_text(sm), n->needle, n->nlen);
	switch (n->tmode) {
	case TM_ALL:
		return true;
	case TM_FTS_ONLY:
		return search_uid_in(n->fts, n->nfts, sm->m->uid);
	case TM_FTS_VERIFY:
		if (!search_uid_in(n->fts, n->nfts, sm->m->uid))
			return false;
		break;
	case TM_SCAN:
		break;
	}
	return search_contains(body ? smsg_body(sm) : smsg_text(sm), n->needle, n->nlen);
}

static bool
search_eval_node(struct smsg *sm, const struct cnode *n)
{
	const struct store_msg *m = sm->m;
	const struct imap_search_key *k = n->k;

	switch (n->op) {
	case IMAP_SK_ALL:
		return true;
	case IMAP_SK_AND:
		for (size_t i = 0; i < n->nkids; i++)
			if (!search_eval_node(sm, &n->kids[i]))
				return false;
		return true;
	case IMAP_SK_OR:
		for (size_t i = 0; i < n->nkids; i++)
			if (search_eval_node(sm, &n->kids[i]))
				return true;
		return false;
	case IMAP_SK_NOT:
		return n->nkids == 0 || !search_eval_node(sm, &n->kids[0]);
	case IMAP_SK_SEQSET:
		if (n->saved && sm->ctx->saved != NULL && sm->ctx->saved->count > 0 &&
		    imap_seqset_contains(sm->ctx->saved, m->uid))
			return true;
		return n->set.count > 0 && imap_seqset_contains(&n->set, sm->seq);
	case IMAP_SK_UID:
		if (n->saved && sm->ctx->saved != NULL && sm->ctx->saved->count > 0 &&
		    imap_seqset_contains(sm->ctx->saved, m->uid))
			return true;
		return n->set.count > 0 && imap_seqset_contains(&n->set, m->uid);
	case IMAP_SK_ANSWERED:
		return (m->flags & STORE_F_ANSWERED) != 0;
	case IMAP_SK_DELETED:
		return (m->flags & STORE_F_DELETED) != 0;
	case IMAP_SK_DRAFT:
		return (m->flags & STORE_F_DRAFT) != 0;
	case IMAP_SK_FLAGGED:
		return (m->flags & STORE_F_FLAGGED) != 0;
	case IMAP_SK_SEEN:
		return (m->flags & STORE_F_SEEN) != 0;
	case IMAP_SK_UNANSWERED:
		return (m->flags & STORE_F_ANSWERED) == 0;
	case IMAP_SK_UNDELETED:
		return (m->flags & STORE_F_DELETED) == 0;
	case IMAP_SK_UNDRAFT:
		return (m->flags & STORE_F_DRAFT) == 0;
	case IMAP_SK_UNFLAGGED:
		return (m->flags & STORE_F_FLAGGED) == 0;
	case IMAP_SK_UNSEEN:
		return (m->flags & STORE_F_SEEN) == 0;
	case IMAP_SK_RECENT:
		return search_recent(sm);
	case IMAP_SK_NEW:
		return search_recent(sm) && (m->flags & STORE_F_SEEN) == 0;
	case IMAP_SK_OLD:
		return !search_recent(sm);
	case IMAP_SK_KEYWORD:
		return search_keyword(sm, n->kwi);
	case IMAP_SK_UNKEYWORD:
		return !search_keyword(sm, n->kwi);
	case IMAP_SK_LARGER:
		return m->size > k->number;
	case IMAP_SK_SMALLER:
		return m->size < k->number;
	case IMAP_SK_MODSEQ:
		return m->modseq >= k->number;
	case IMAP_SK_BEFORE:
		return mime_search_day(m->internal_date) < k->date.days;
	case IMAP_SK_ON:
		return mime_search_day(m->internal_date) == k->date.days;
	case IMAP_SK_SINCE:
		return mime_search_day(m->internal_date) >= k->date.days;
	case IMAP_SK_SENTBEFORE:
		return search_sent_day(sm) < k->date.days;
	case IMAP_SK_SENTON:
		return search_sent_day(sm) == k->date.days;
	case IMAP_SK_SENTSINCE:
		return search_sent_day(sm) >= k->date.days;
	case IMAP_SK_FROM:
		return search_header_match(sm, "From", MIME_SEARCH_FROM, MIME_SEARCH_ADDRESS, n->needle, n->nlen);
	case IMAP_SK_TO:
		return search_header_match(sm, "To", MIME_SEARCH_TO, MIME_SEARCH_ADDRESS, n->needle, n->nlen);
	case IMAP_SK_CC:
		return search_header_match(sm, "Cc", MIME_SEARCH_CC, MIME_SEARCH_ADDRESS, n->needle, n->nlen);
	case IMAP_SK_BCC:
		return search_header_match(sm, "Bcc", MIME_SEARCH_BCC, MIME_SEARCH_ADDRESS, n->needle, n->nlen);
	case IMAP_SK_SUBJECT:
		return search_header_match(sm, "Subject", MIME_SEARCH_SUBJECT_FIELD, MIME_SEARCH_SUBJECT, n->needle, n->nlen);
	case IMAP_SK_HEADER:
		return search_header_match(sm, k->field, -1, MIME_SEARCH_PLAIN, n->needle, n->nlen);
	case IMAP_SK_BODY:
		return search_text_key(sm, n, true);
	case IMAP_SK_TEXT:
		return search_text_key(sm, n, false);
	}
	return false;
}

/*
 * What a snapshot-only SEARCH may cost the event loop, in key evaluations
 * (each message times each key): about a tenth of a second at worst. The
 * KEYWORD keys add one scan of a message's keyword list, as many
 * evaluations as keywords a message may carry (search_keyword()). Past
 * this the search goes to the pool like any other: a program of thousands
 * of keys over a large mailbox held every session for seconds.
 */
#define SEARCH_HERE_MAX ((uint64_t)1 << 20)

/* The KEYWORD and UNKEYWORD keys among k, its siblings and their children. */
static size_t
search_count_keywords(const struct imap_search_key *k)
{
	size_t n = 0;

	for (; k != NULL; k = k->next)
		n += (k->op == IMAP_SK_KEYWORD || k->op == IMAP_SK_UNKEYWORD) +
		     search_count_keywords(k->child);
	return n;
}

/*
 * Evaluations of keys k (and their siblings) on one message; UINT64_MAX if
 * one needs more than the snapshot.
 */
static uint64_t
search_key_view_cost(const struct imap_search_key *k)
{
	uint64_t cost = 0;

	for (; k != NULL; k = k->next) {
		switch (k->op) {
		case IMAP_SK_BCC:
		case IMAP_SK_BODY:
		case IMAP_SK_CC:
		case IMAP_SK_FROM:
		case IMAP_SK_SUBJECT:
		case IMAP_SK_TEXT:
		case IMAP_SK_TO:
		case IMAP_SK_HEADER:
		case IMAP_SK_SENTBEFORE:
		case IMAP_SK_SENTON:
		case IMAP_SK_SENTSINCE:
			return UINT64_MAX;
		default:
			cost++;
			if (k->child != NULL) {
				uint64_t c = search_key_view_cost(k->child);
				if (c == UINT64_MAX)
					return c;
				cost += c;
			}
		}
	}
	return cost;
}

bool
imap_search_view_only(const struct imap_search_program *prog, size_t nmsgs)
{
	uint64_t cost = search_key_view_cost(prog->root);

	if (cost != UINT64_MAX && search_count_keywords(prog->root) > 0)
		cost += STORE_KEYWORDS_MAX;
	/* The key count is bounded by the command's arguments: no overflow. */
	return cost != UINT64_MAX && cost * (uint64_t)nmsgs <= SEARCH_HERE_MAX;
}

/* --- compiling --- */

static void
cnode_free(struct cnode *n)
{
	for (size_t i = 0; i < n->nkids; i++)
		cnode_free(&n->kids[i]);
	free(n->kids);
	imap_seqset_free(&n->set);
	free(n->needle);
	free(n->fts);
}

static int
cnode_cost_cmp(const void *a, const void *b)
{
	const struct cnode *x = a, *y = b;

	if (x->cost != y->cost)
		return x->cost < y->cost ? -1 : 1;
	/* keep the program's order otherwise (qsort is not stable) */
	return x->order < y->order ? -1 : x->order > y->order;
}

/* One ASCII word: the index's prefix match is then a substring match too. */
static bool
search_ascii_word(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')))
			return false;
	}
	return n > 0;
}

static bool
search_has_alnum(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    c >= 0x80)
			return true;
	}
	return false;
}

static int
search_compile(struct search_run *run, const struct imap_search_key *k, struct cnode *n)
{
	const struct imap_search_ctx *ctx = run->ctx;
	const struct store_mbox_view *view = ctx->view;

	memset(n, 0, sizeof(*n));
	n->k = k;
	n->op = k->op;
	imap_seqset_init(&n->set);
	n->cost = COST_SNAPSHOT;
	switch (k->op) {
	case IMAP_SK_AND:
	case IMAP_SK_OR:
	case IMAP_SK_NOT: {
		size_t cnt = 0;
		for (const struct imap_search_key *c = k->child; c != NULL; c = c->next)
			cnt++;
		n->kids = cnt ? xcalloc(cnt, sizeof(*n->kids)) : NULL;
		for (const struct imap_search_key *c = k->child; c != NULL; c = c->next) {
			struct cnode *kid = &n->kids[n->nkids];
			if (search_compile(run, c, kid) < 0) {
				n->nkids++;
				return -1;
			}
			kid->order = n->nkids++;
			if (kid->cost > n->cost)
				n->cost = kid->cost;
		}
		if (k->op != IMAP_SK_NOT && n->nkids > 1)
			qsort(n->kids, n->nkids, sizeof(*n->kids), cnode_cost_cmp);
		return 0;
	}
	case IMAP_SK_SEQSET:
		n->saved = k->set.saved;
		imap_seqset_resolve(&k->set, (uint32_t)view->count, NULL, &n->set);
		return 0;
	case IMAP_SK_UID:
		n->saved = k->set.saved;
		imap_seqset_resolve(&k->set, view->count ? view->msgs[view->count - 1].uid : 0,
				    NULL, &n->set);
		return 0;
	case IMAP_SK_FROM:
	case IMAP_SK_TO:
	case IMAP_SK_CC:
	case IMAP_SK_BCC:
	case IMAP_SK_SUBJECT:
	case IMAP_SK_HEADER:
	case IMAP_SK_SENTBEFORE:
	case IMAP_SK_SENTON:
	case IMAP_SK_SENTSINCE:
		n->cost = COST_HEADER;
		break;
	case IMAP_SK_BODY:
	case IMAP_SK_TEXT:
		n->cost = COST_TEXT;
		break;
	case IMAP_SK_KEYWORD:
	case IMAP_SK_UNKEYWORD: {
		uint32_t slot;
		long i = nameidx_find(&run->kwidx, run->kws, k->str, strlen(k->str), &slot);
		if (i < 0) {
			i = (long)run->nkws;
			run->kws[run->nkws++] = k->str;
			nameidx_put(&run->kwidx, slot, (size_t)i);
		}
		n->kwi = (size_t)i;
		return 0;
	}
	default:
		return 0;
	}
	if (k->str != NULL) {
		struct buf b = BUF_INIT(0);
		(void)mime_casemap(&b, k->str, k->len, 0);
		n->nlen = b.len;
		n->needle = b.len > 0 ? buf_steal(&b) : xstrdup("");
		buf_free(&b);
	} else {
		n->needle = xstrdup("");
	}
	if (k->op != IMAP_SK_BODY && k->op != IMAP_SK_TEXT)
		return 0;
	if (n->nlen == 0) {
		n->tmode = TM_ALL;
		n->cost = COST_SNAPSHOT;
	} else if (run->exact || !search_has_alnum(k->str, k->len)) {
		n->tmode = TM_SCAN;
	} else {
		const char *terms[1] = {k->str};
		const char *cut_terms[1] = {MIME_META_TEXT_CUT_WORD};
		if (!run->cut_loaded &&
		    store_fts_search(ctx->st, ctx->mailbox, ctx->uidvalidity, STORE_FTS_TEXT,
				     cut_terms, 1, &run->cut, &run->ncut) < 0) {
			run->err = IMAP_SEARCH_ERR_STORE;
			return -1;
		}
		run->cut_loaded = true;
		if (store_fts_search(ctx->st, ctx->mailbox, ctx->uidvalidity,
				     k->op == IMAP_SK_BODY ? STORE_FTS_BODY : STORE_FTS_TEXT, terms,
				     1, &n->fts, &n->nfts) < 0) {
			run->err = IMAP_SEARCH_ERR_STORE;
			return -1;
		}
		if (search_ascii_word(k->str, k->len)) {
			n->tmode = TM_FTS_ONLY;
			n->cost = COST_INDEX;
		} else {
			n->tmode = TM_FTS_VERIFY;
		}
	}
	return 0;
}

static bool
search_charset_ok(const char *cs)
{
	return cs == NULL || strcasecmp(cs, "UTF-8") == 0 || strcasecmp(cs, "US-ASCII") == 0 ||
	       strcasecmp(cs, "UTF8") == 0;
}

int
imap_search_eval(const struct imap_search_ctx *ctx, const struct imap_search_program *prog,
		 unsigned char *match, const char **err_r)
{
	const struct store_mbox_view *view = ctx->view;
	struct search_run run;
	struct cnode root;
	uint64_t total = 0, max = ctx->exact_max ? ctx->exact_max : IMAP_SEARCH_EXACT_MAX_DEFAULT;

	if (!search_charset_ok(prog->charset)) {
		*err_r = IMAP_SEARCH_ERR_BADCHARSET;
		return -1;
	}
	if (view->count > 0)
		memset(match, 0, view->count);
	if (prog->root == NULL || view->count == 0)
		return 0;
	for (size_t i = 0; i < view->count; i++)
		total += view->msgs[i].size;
	memset(&run, 0, sizeof(run));
	run.ctx = ctx;
	run.exact = total <= max;
	size_t nkw = search_count_keywords(prog->root);
	nameidx_init(&run.kwidx, nkw);
	run.kws = xcalloc(nkw + 1, sizeof(*run.kws));
	run.kwhas = xcalloc(nkw / 64 + 1, sizeof(*run.kwhas));
	int rc = search_compile(&run, prog->root, &root);
	for (size_t i = 0; rc == 0 && i < view->count; i++) {
		struct smsg sm;
		smsg_init(&sm, &run, i);
		match[i] = search_eval_node(&sm, &root) ? 1 : 0;
		smsg_done(&sm);
	}
	cnode_free(&root);
	store_search_free(&run.hc, run.nhc);
	free(run.cut);
	nameidx_free(&run.kwidx);
	free(run.kws);
	free(run.kwhas);
	if (rc < 0) {
		*err_r = run.err != NULL ? run.err : IMAP_SEARCH_ERR_STORE;
		return -1;
	}
	return 0;
}

/* --- replies --- */

int
imap_search_format(struct buf *out, const struct imap_search_ctx *ctx,
		   const struct imap_search_program *prog, const unsigned char *match,
		   const char *tag, int uid, struct imap_seqset *saved_r)
{
	const struct store_mbox_view *view = ctx->view;
	size_t start = out->len, nmatch = 0, first = SIZE_MAX, last = 0;
	uint64_t highest = 0;
	unsigned ret = prog->ret != 0 ? prog->ret : IMAP_SEARCH_RET_ALL;
	bool minmax = (ret & (IMAP_SEARCH_RET_MIN | IMAP_SEARCH_RET_MAX)) != 0 &&
		      (ret & (IMAP_SEARCH_RET_ALL | IMAP_SEARCH_RET_COUNT)) == 0;
	int rc = 0;

	for (size_t i = 0; i < view->count; i++) {
		if (!match[i])
			continue;
		nmatch++;
		if (first == SIZE_MAX)
			first = i;
		last = i;
		if (view->msgs[i].modseq > highest)
			highest = view->msgs[i].modseq;
	}
	if (prog->esearch && minmax && nmatch > 0) {
		/* MIN/MAX alone: MODSEQ and SAVE are about those messages only (RFC 7162 §3.1.5,
		 * RFC 5182) */
		highest = 0;
		if (ret & IMAP_SEARCH_RET_MIN)
			highest = view->msgs[first].modseq;
		if ((ret & IMAP_SEARCH_RET_MAX) && view->msgs[last].modseq > highest)
			highest = view->msgs[last].modseq;
	}
	if (saved_r != NULL) {
		imap_seqset_clear(saved_r);
		if (prog->esearch && minmax && (ret & IMAP_SEARCH_RET_SAVE)) {
			if (nmatch > 0 && (ret & IMAP_SEARCH_RET_MIN))
				imap_seqset_add(saved_r, view->msgs[first].uid,
						view->msgs[first].uid);
			if (nmatch > 0 && (ret & IMAP_SEARCH_RET_MAX))
				imap_seqset_add(saved_r, view->msgs[last].uid,
						view->msgs[last].uid);
		} else {
			for (size_t i = 0; i < view->count; i++)
				if (match[i])
					imap_seqset_add(saved_r, view->msgs[i].uid,
							view->msgs[i].uid);
		}
		imap_seqset_normalize(saved_r);
	}

	if (!prog->esearch) {
		rc |= buf_puts(out, "* SEARCH");
		for (size_t i = 0; i < view->count && rc == 0; i++)
			if (match[i])
				rc |= buf_printf(out, " %u",
						 uid ? view->msgs[i].uid : (uint32_t)(i + 1));
		if (prog->uses_modseq && nmatch > 0 && highest != 0)
			rc |= buf_printf(out, " (MODSEQ %llu)", (unsigned long long)highest);
		rc |= buf_puts(out, "\r\n");
	} else if (ret != IMAP_SEARCH_RET_SAVE) {
		rc |= buf_puts(out, "* ESEARCH (TAG \"");
		for (const char *t = tag != NULL ? tag : ""; *t != '\0' && rc == 0; t++) {
			if (*t == '"' || *t == '\\')
				rc |= buf_putc(out, '\\');
			rc |= buf_putc(out, *t);
		}
		rc |= buf_putc(out, '"');
		rc |= buf_putc(out, ')');
		if (uid)
			rc |= buf_puts(out, " UID");
		if (nmatch > 0) {
			uint32_t lo = uid ? view->msgs[first].uid : (uint32_t)(first + 1);
			uint32_t hi = uid ? view->msgs[last].uid : (uint32_t)(last + 1);
			if (ret & IMAP_SEARCH_RET_MIN)
				rc |= buf_printf(out, " MIN %u", lo);
			if (ret & IMAP_SEARCH_RET_MAX)
				rc |= buf_printf(out, " MAX %u", hi);
			if (ret & IMAP_SEARCH_RET_ALL) {
				struct imap_seqset all;
				imap_seqset_init(&all);
				for (size_t i = 0; i < view->count; i++) {
					uint32_t id = uid ? view->msgs[i].uid : (uint32_t)(i + 1);
					if (match[i])
						imap_seqset_add(&all, id, id);
				}
				imap_seqset_normalize(&all);
				rc |= buf_puts(out, " ALL ");
				if (rc == 0)
					rc |= imap_seqset_format(&all, out);
				imap_seqset_free(&all);
			}
		}
		if (ret & IMAP_SEARCH_RET_COUNT)
			rc |= buf_printf(out, " COUNT %zu", nmatch);
		if (prog->uses_modseq && highest != 0)
			rc |= buf_printf(out, " MODSEQ %llu", (unsigned long long)highest);
		rc |= buf_puts(out, "\r\n");
	}
	if (rc != 0) {
		buf_truncate(out, start);
		return -1;
	}
	return 0;
}
