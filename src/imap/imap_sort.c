/*
 * imap_sort — SORT and THREAD (RFC 5256). See imap_sort.h for the
 * contract; the notes here are about how.
 *
 * SORT builds one record per matched message with the keys the criteria
 * need and sorts them with qsort_r, the sequence number breaking ties
 * (never reversed, as RFC 5256 and Dovecot have it). Address and subject
 * keys start from the store's sort fields (first mailbox "local@host",
 * decoded subject, Date: as Unix time); when the store has nothing for a
 * message the header is read instead, so a message without a cached Date
 * still sorts by its real Date: and only then by its internal date.
 *
 * THREAD=REFERENCES follows the six steps of RFC 5256 §3 on a tree of
 * nodes (messages and dummies) with a hash table from Message-ID to node
 * and another from base subject to thread. ORDEREDSUBJECT groups by base
 * subject. Both read every matched message's header block once.
 *
 * SECURITY: header contents are untrusted: Message-IDs and subjects are
 * copied and compared, never interpreted; the loop check before every
 * link keeps the tree a tree whatever References claim, and with the caps
 * below it costs a message at most THREAD_WALK_MAX steps; every walk
 * of the tree (pruning, sorting, writing) is iterative, because a crafted
 * References chain makes it as deep as the mailbox has references.
 */
#include "imap/imap_sort.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/util.h"
#include "mime/mime_address.h"
#include "mime/mime_date.h"
#include "mime/mime_decode.h"
#include "mime/mime_search.h"
#include "mime/mime_header.h"

#define SORT_MAX_KEYS 16
/*
 * XXX Caps on what a crafted References can cost: the loop check before a
 * link walks from the new parent to its root, so a message with n
 * references chained could cost n*n steps (a 1 MB header, minutes of a
 * worker). Only the last THREAD_REFS_MAX references of a message are used
 * (the nearest ancestors; the older links come from the ancestors' own
 * headers), and a link that would hang a node with children deeper than
 * THREAD_DEPTH_MAX is refused as a loop would be. Real threads stay far
 * below both.
 */
#define THREAD_REFS_MAX 500
#define THREAD_DEPTH_MAX 2000
/*
 * XXX And the loop checks of one message together walk at most this many
 * steps; past it a link of that message that needs a walk is refused.
 * Only crafted References get near it: a node without children needs no
 * walk (see tnode_is_ancestor()), and one with children is walked from
 * its new parent, which real threads keep shallow. Without it, messages
 * going back and forth 250 times each between the end of a
 * THREAD_DEPTH_MAX deep chain and a thread's root walked 500,000 steps a
 * message: 2,000 of them held a worker for 8.5 s. Per message, not per
 * THREAD: a budget the whole mailbox shared was spent by a few dozen such
 * messages, and every later message filed before a reply to it (a link
 * that needs a walk) was refused its parent, splitting real threads.
 */
#define THREAD_WALK_MAX (4 * THREAD_DEPTH_MAX)

/* --- base subject (RFC 5256 §2.1) --- */

/* subj-blob = "[" *BLOBCHAR "]" *WSP at s[p]; *end after it. */
static bool
bs_blob(const char *s, size_t p, size_t len, size_t *end)
{
	size_t q;

	if (p >= len || s[p] != '[')
		return false;
	for (q = p + 1; q < len && s[q] != '[' && s[q] != ']'; q++)
		;
	if (q >= len || s[q] != ']')
		return false;
	for (q++; q < len && s[q] == ' '; q++)
		;
	*end = q;
	return true;
}

/* subj-refwd = ("re" / ("fw" ["d"])) *WSP [subj-blob] ":" at s[p]. */
static bool
bs_refwd(const char *s, size_t p, size_t len, size_t *end)
{
	static const char *const leaders[] = {"re", "fwd", "fw"};

	for (size_t i = 0; i < ARRAY_LEN(leaders); i++) {
		size_t l = strlen(leaders[i]), q, e;
		if (len - p < l || strncasecmp(s + p, leaders[i], l) != 0)
			continue;
		for (q = p + l; q < len && s[q] == ' '; q++)
			;
		if (bs_blob(s, q, len, &e))
			q = e;
		if (q < len && s[q] == ':') {
			*end = q + 1;
			return true;
		}
	}
	return false;
}

static bool
bs_has_text(const char *s, size_t p, size_t len)
{
	for (; p < len; p++)
		if (s[p] != ' ')
			return true;
	return false;
}

/* The base subject; *fw set when a reply/forward marker was removed. */
static char *
sort_base_subject(const char *subject, bool *fw_r)
{
	struct buf b = BUF_INIT(0);
	const char *s;
	size_t start = 0, len, e;
	bool fw = false;

	/* (1) tabs and continuations to spaces, runs of spaces to one */
	for (const char *p = subject != NULL ? subject : ""; *p != '\0'; p++) {
		char c = *p;
		if (c == '\t' || c == '\r' || c == '\n')
			c = ' ';
		if (c == ' ' && b.len > 0 && b.data[b.len - 1] == ' ')
			continue;
		buf_putc(&b, c);
	}
	s = b.data != NULL ? b.data : "";
	len = b.len;
	for (;;) {
		/* (2) trailers: "(fwd)" and white space */
		for (;;) {
			if (len > start && s[len - 1] == ' ') {
				len--;
			} else if (len >= start + 5 && strncasecmp(s + len - 5, "(fwd)", 5) == 0) {
				len -= 5;
				fw = true;
			} else {
				break;
			}
		}
		/* (3), (4), repeated (5) */
		for (bool again = true; again;) {
			again = false;
			for (;;) {
				size_t p = start;
				if (p < len && s[p] == ' ') {
					start++;
					again = true;
					continue;
				}
				while (bs_blob(s, p, len, &e))
					p = e;
				if (bs_refwd(s, p, len, &e)) {
					start = e;
					fw = true;
					again = true;
					continue;
				}
				break;
			}
			if (bs_blob(s, start, len, &e) && bs_has_text(s, e, len)) {
				start = e;
				again = true;
			}
		}
		/* (6) "[fwd:" ... "]" */
		if (len - start >= 6 && strncasecmp(s + start, "[fwd:", 5) == 0 &&
		    s[len - 1] == ']') {
			start += 5;
			len--;
			fw = true;
			continue;
		}
		break;
	}
	char *r = xstrndup(s + start, len - start);
	buf_free(&b);
	if (fw_r != NULL)
		*fw_r = fw;
	return r;
}

char *
imap_base_subject(const char *subject)
{
	return sort_base_subject(subject, NULL);
}

/* --- shared helpers --- */

static char *
sort_upper(const char *s)
{
	struct buf b = BUF_INIT(0);
	char *r;

	(void)mime_casemap(&b, s, strlen(s), 1);
	r = b.len > 0 ? buf_steal(&b) : xstrdup("");
	buf_free(&b);
	return r;
}

/* The decoded, base subject of a header block, upper-cased for comparing. */
static char *
sort_header_subject(const char *hdr, size_t hlen, bool *fw_r)
{
	char *v = mime_header_get(hdr, hlen, "Subject"), *base, *r;
	struct buf d = BUF_INIT(0);

	if (v != NULL)
		(void)mime_decode_words(&d, v, strlen(v));
	free(v);
	base = sort_base_subject(d.len > 0 ? d.data : "", fw_r);
	buf_free(&d);
	r = sort_upper(base);
	free(base);
	return r;
}

/* Date: of a header block as Unix time; 0 when absent or invalid. */
static int64_t
sort_header_date(const char *hdr, size_t hlen)
{
	char *v = mime_header_get(hdr, hlen, "Date");
	time_t t;
	int tz;
	int64_t r = 0;

	if (v != NULL && mime_date_parse(v, strlen(v), &t, &tz) == 0)
		r = (int64_t)t;
	free(v);
	return r;
}

/*
 * The key of the first address of header name, as Dovecot's sort takes it:
 * its local part (display 0), or its decoded display name, else
 * "local@domain", else the local part (display 1). A group's name counts
 * as a local part. "" when there is none.
 */
static char *
sort_header_address(const char *hdr, size_t hlen, const char *name, bool display)
{
	char *v = mime_header_get(hdr, hlen, name), *r = NULL;
	struct mime_address *a;

	if (v == NULL)
		return xstrdup("");
	a = mime_address_parse(v, strlen(v), 1);
	free(v);
	if (a != NULL && display && a->name != NULL && a->name[0] != '\0') {
		struct buf d = BUF_INIT(0);
		(void)mime_decode_words(&d, a->name, strlen(a->name));
		if (d.len > 0)
			r = buf_steal(&d);
		buf_free(&d);
	}
	if (r == NULL && a != NULL && a->mailbox != NULL) {
		if (display && a->host != NULL)
			r = xasprintf("%s@%s", a->mailbox, a->host);
		else
			r = xstrdup(a->mailbox);
	}
	mime_address_free(&a);
	return r != NULL ? r : xstrdup("");
}

/* --- SORT --- */

enum sort_key {
	SK_ARRIVAL,
	SK_CC,
	SK_DATE,
	SK_FROM,
	SK_SIZE,
	SK_SUBJECT,
	SK_TO,
	SK_DISPLAYFROM,
	SK_DISPLAYTO,
	SK__COUNT,
};

static const char *const sort_key_names[SK__COUNT] = {
    [SK_ARRIVAL] = "ARRIVAL",
    [SK_CC] = "CC",
    [SK_DATE] = "DATE",
    [SK_FROM] = "FROM",
    [SK_SIZE] = "SIZE",
    [SK_SUBJECT] = "SUBJECT",
    [SK_TO] = "TO",
    [SK_DISPLAYFROM] = "DISPLAYFROM",
    [SK_DISPLAYTO] = "DISPLAYTO",
};

struct sort_crit {
	enum sort_key key;
	bool reverse;
};

struct sort_rec {
	uint32_t seq, id;
	const struct store_msg *m;
	int64_t date;
	char *str[SK__COUNT]; /* upper-cased string keys */
};

struct sort_cmp_ctx {
	const struct sort_crit *crit;
	size_t ncrit;
};

static int
sort_parse(const struct imap_arg *criteria, struct sort_crit *crit, size_t *n_r, const char **err_r)
{
	const struct imap_arg *list = criteria;
	bool reverse = false;
	size_t n = 0;
	const char *s;

	if (criteria != NULL && criteria->type == IMAP_ARG_LIST &&
	    !imap_arg_list(criteria, &list, NULL)) {
		*err_r = "Invalid sort criteria";
		return -1;
	}
	for (; !imap_arg_is_eol(list); list++) {
		size_t k;
		if (list->type != IMAP_ARG_ATOM || !imap_arg_atom(list, &s)) {
			*err_r = "Invalid sort criteria";
			return -1;
		}
		if (strcasecmp(s, "REVERSE") == 0) {
			if (reverse) {
				*err_r = "REVERSE twice in sort criteria";
				return -1;
			}
			reverse = true;
			continue;
		}
		for (k = 0; k < SK__COUNT; k++)
			if (strcasecmp(s, sort_key_names[k]) == 0)
				break;
		if (k == SK__COUNT) {
			*err_r = "Unknown sort criterion";
			return -1;
		}
		if (n == SORT_MAX_KEYS) {
			*err_r = "Too many sort criteria";
			return -1;
		}
		crit[n].key = (enum sort_key)k;
		crit[n].reverse = reverse;
		n++;
		reverse = false;
	}
	if (reverse) {
		*err_r = "REVERSE without sort key";
		return -1;
	}
	if (n == 0) {
		*err_r = "Empty sort criteria";
		return -1;
	}
	*n_r = n;
	return 0;
}

static int
sort_cmp(const void *a, const void *b, void *arg)
{
	const struct sort_rec *x = a, *y = b;
	const struct sort_cmp_ctx *c = arg;

	for (size_t i = 0; i < c->ncrit; i++) {
		int r = 0;
		switch (c->crit[i].key) {
		case SK_ARRIVAL:
			r = x->m->internal_date < y->m->internal_date
				? -1
				: x->m->internal_date > y->m->internal_date;
			break;
		case SK_DATE:
			r = x->date < y->date ? -1 : x->date > y->date;
			break;
		case SK_SIZE:
			r = x->m->size < y->m->size ? -1 : x->m->size > y->m->size;
			break;
		default:
			r = strcmp(x->str[c->crit[i].key], y->str[c->crit[i].key]);
			break;
		}
		if (r != 0)
			return c->crit[i].reverse ? (r < 0 ? 1 : -1) : (r < 0 ? -1 : 1);
	}
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* The local part of the store's "local@host" (lower-cased by the store). */
static char *
sort_store_local(const char *s)
{
	const char *at = strrchr(s, '@');

	return at != NULL ? xstrndup(s, (size_t)(at - s)) : xstrdup(s);
}

int
imap_sort(struct buf *out, const struct imap_search_ctx *ctx, const struct imap_arg *criteria,
	  const unsigned char *match, int uid, const char **err_r)
{
	const struct store_mbox_view *view = ctx->view;
	struct sort_crit crit[SORT_MAX_KEYS];
	struct sort_cmp_ctx cc;
	struct store_sort_rec *sf = NULL;
	struct sort_rec *recs;
	size_t ncrit, nsf = 0, n = 0, j = 0, start = out->len;
	bool need[SK__COUNT] = {false};
	bool need_store = false;
	int rc = 0;

	if (sort_parse(criteria, crit, &ncrit, err_r) < 0)
		return -1;
	for (size_t i = 0; i < ncrit; i++) {
		need[crit[i].key] = true;
		if (crit[i].key == SK_CC || crit[i].key == SK_FROM || crit[i].key == SK_TO ||
		    crit[i].key == SK_SUBJECT || crit[i].key == SK_DATE)
			need_store = true;
	}
	if (need_store &&
	    store_sort_fields(ctx->st, ctx->mailbox, ctx->uidvalidity, &sf, &nsf) < 0) {
		*err_r = IMAP_SEARCH_ERR_STORE;
		return -1;
	}
	recs = xcalloc(view->count ? view->count : 1, sizeof(*recs));
	for (size_t i = 0; i < view->count; i++) {
		const struct store_msg *m = &view->msgs[i];
		const struct store_sort_rec *f = NULL;
		struct buf hdr = BUF_INIT(0);
		int hstate = 0;
		struct sort_rec *r;

		while (j < nsf && sf[j].uid < m->uid)
			j++;
		if (j < nsf && sf[j].uid == m->uid)
			f = &sf[j];
		if (!match[i])
			continue;
		r = &recs[n++];
		r->seq = (uint32_t)(i + 1);
		r->id = uid ? m->uid : r->seq;
		r->m = m;
		for (size_t k = 0; k < SK__COUNT; k++) {
			char *v = NULL;
			if (!need[k] || k == SK_ARRIVAL || k == SK_SIZE)
				continue;
			if (k == SK_DATE) {
				r->date = f != NULL ? f->date : 0;
				if (r->date == 0) {
					if (hstate == 0)
						hstate = imap_search_header(ctx, m->uid, &hdr) > 0
							     ? 1
							     : -1;
					if (hstate > 0)
						r->date = sort_header_date(hdr.data, hdr.len);
				}
				if (r->date == 0)
					r->date = m->internal_date;
				continue;
			}
			if (k == SK_SUBJECT && f != NULL) {
				v = imap_base_subject(f->subject);
			} else if ((k == SK_FROM || k == SK_TO || k == SK_CC) && f != NULL) {
				const char *sv = k == SK_FROM ? f->from
						 : k == SK_TO ? f->to
							      : f->cc;
				if (sv[0] != '\0')
					v = sort_store_local(sv);
			}
			if (v == NULL) {
				if (hstate == 0)
					hstate = imap_search_header(ctx, m->uid, &hdr) > 0 ? 1 : -1;
				if (hstate < 0) {
					v = xstrdup("");
				} else if (k == SK_SUBJECT) {
					r->str[k] = sort_header_subject(hdr.data, hdr.len, NULL);
					continue;
				} else {
					const char *name =
					    (k == SK_FROM || k == SK_DISPLAYFROM) ? "From"
					    : (k == SK_TO || k == SK_DISPLAYTO)	  ? "To"
										  : "Cc";
					v = sort_header_address(hdr.data, hdr.len, name,
								k == SK_DISPLAYFROM ||
								    k == SK_DISPLAYTO);
				}
			}
			r->str[k] = sort_upper(v);
			free(v);
		}
		buf_free(&hdr);
	}
	store_sort_free(&sf, nsf);

	cc.crit = crit;
	cc.ncrit = ncrit;
	if (n > 1)
		qsort_r(recs, n, sizeof(*recs), sort_cmp, &cc);
	rc |= buf_puts(out, "* SORT");
	for (size_t i = 0; i < n && rc == 0; i++)
		rc |= buf_printf(out, " %u", recs[i].id);
	rc |= buf_puts(out, "\r\n");
	for (size_t i = 0; i < n; i++)
		for (size_t k = 0; k < SK__COUNT; k++)
			free(recs[i].str[k]);
	free(recs);
	if (rc != 0) {
		buf_truncate(out, start);
		*err_r = "TOOBIG";
		return -1;
	}
	return 0;
}

/* --- THREAD --- */

struct trec {
	uint32_t seq, id;
	int64_t date;
	char *subject; /* upper-cased base subject */
	bool fw;       /* the subject was a reply or forward */
};

struct tnode {
	struct tnode *parent, *child, *next;
	struct tnode *last; /* last child, so appends are O(1) */
	struct trec *msg;   /* NULL: dummy */
	size_t slot;	    /* thread_merge_subjects(): index among the root's children */
};

/* Open-addressing table from a string to a node. */
struct tmap {
	const char **keys;
	struct tnode **vals;
	size_t cap, n;
	uint64_t seed; /* random, drawn when the table is first allocated */
};

struct tctx {
	struct tnode **nodes; /* every node, in creation order */
	size_t nnodes, capnodes;
	struct tmap ids;
	char **strs; /* id strings the table points to */
	size_t nstrs, capstrs;
	uint64_t walked; /* steps of this message's loop checks (THREAD_WALK_MAX) */
};

/*
 * The keys are Message-IDs and base subjects from anyone's mail, and the
 * table probes linearly: with a fixed hash, ids crafted to share the low
 * bits of their hash (a few minutes of precomputation, e.g. 131 messages
 * of 500 References each) pile into one run of slots and every insert
 * walks it, 65536 ids costing 2*10^9 string compares (6 s of a worker for
 * one THREAD). So the hash is keyed with a random seed per table and its
 * 64 bits mixed (MurmurHash3's finaliser) before the low ones pick a slot:
 * colliding ids can no longer be computed in advance.
 */
static uint64_t
tmap_hash(const struct tmap *m, const char *s)
{
	uint64_t h = util_hash64(m->seed, s, strlen(s));

	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 33;
	return h;
}

static struct tnode **
tmap_slot(struct tmap *m, const char *key)
{
	size_t i = (size_t)tmap_hash(m, key) & (m->cap - 1);

	while (m->keys[i] != NULL && strcmp(m->keys[i], key) != 0)
		i = (i + 1) & (m->cap - 1);
	return &m->vals[i];
}

static struct tnode *
tmap_get(struct tmap *m, const char *key)
{
	return m->cap == 0 ? NULL : *tmap_slot(m, key);
}

/* Map key (which must outlive the table) to v. */
static void
tmap_put(struct tmap *m, const char *key, struct tnode *v)
{
	if ((m->n + 1) * 2 > m->cap) {
		struct tmap g = {NULL, NULL, m->cap ? m->cap * 2 : 64, 0, m->seed};
		if (m->cap == 0)
			util_random(&g.seed, sizeof(g.seed));
		g.keys = xcalloc(g.cap, sizeof(*g.keys));
		g.vals = xcalloc(g.cap, sizeof(*g.vals));
		for (size_t i = 0; i < m->cap; i++)
			if (m->keys[i] != NULL)
				tmap_put(&g, m->keys[i], m->vals[i]);
		free(m->keys);
		free(m->vals);
		*m = g;
	}
	struct tnode **slot = tmap_slot(m, key);
	size_t i = (size_t)(slot - m->vals);
	if (m->keys[i] == NULL) {
		m->keys[i] = key;
		m->n++;
	}
	*slot = v;
}

static void
tmap_free(struct tmap *m)
{
	free(m->keys);
	free(m->vals);
	memset(m, 0, sizeof(*m));
}

static struct tnode *
tnode_new(struct tctx *t, struct trec *msg)
{
	struct tnode *n = xcalloc(1, sizeof(*n));

	n->msg = msg;
	if (t->nnodes == t->capnodes) {
		t->capnodes = t->capnodes ? t->capnodes * 2 : 64;
		t->nodes = xrealloc(t->nodes, t->capnodes * sizeof(*t->nodes));
	}
	t->nodes[t->nnodes++] = n;
	return n;
}

static const char *
tctx_keep(struct tctx *t, char *s)
{
	if (t->nstrs == t->capstrs) {
		t->capstrs = t->capstrs ? t->capstrs * 2 : 64;
		t->strs = xrealloc(t->strs, t->capstrs * sizeof(*t->strs));
	}
	t->strs[t->nstrs++] = s;
	return s;
}

/* The node of a referenced Message-ID (id is taken over), a new dummy if none has it yet. */
static struct tnode *
tctx_ref(struct tctx *t, char *id)
{
	struct tnode *n = tmap_get(&t->ids, id);

	if (n != NULL) {
		free(id);
		return n;
	}
	n = tnode_new(t, NULL);
	tmap_put(&t->ids, tctx_keep(t, id), n);
	return n;
}

static void
tnode_unlink(struct tnode *n)
{
	struct tnode *p = n->parent, *prev = NULL;

	if (p == NULL)
		return;
	for (struct tnode *c = p->child; c != NULL; prev = c, c = c->next) {
		if (c != n)
			continue;
		if (prev != NULL)
			prev->next = n->next;
		else
			p->child = n->next;
		if (p->last == n)
			p->last = prev;
		break;
	}
	n->parent = NULL;
	n->next = NULL;
}

static void
tnode_append(struct tnode *parent, struct tnode *c)
{
	if (parent->last != NULL)
		parent->last->next = c;
	else
		parent->child = c;
	parent->last = c;
	c->parent = parent;
	c->next = NULL;
}

/*
 * Is a the node n or one of its ancestors, or is n too deep to link under
 * (or the budget of the message's walks spent)? A node without children
 * is nobody's ancestor but its own, so it needs no walk and no depth cap:
 * the fresh ids a message references are all such, and a chain of them is
 * linked whole however deep (the cap cut a reply chain at THREAD_DEPTH_MAX
 * into two threads).
 */
static bool
tnode_is_ancestor(struct tctx *t, const struct tnode *a, const struct tnode *n)
{
	if (a->child == NULL)
		return a == n;
	for (size_t depth = 0; n != NULL; n = n->parent, depth++) {
		if (n == a || depth >= THREAD_DEPTH_MAX || t->walked >= THREAD_WALK_MAX)
			return true;
		t->walked++;
	}
	return false;
}

/*
 * The next msg-id "<...@...>" in *pp (white space inside dropped), as a
 * malloc'd string without the brackets, or NULL when none is left.
 */
static char *
thread_next_msgid(const char **pp)
{
	const char *p = *pp;

	for (;;) {
		const char *lt = strchr(p, '<'), *gt;
		if (lt == NULL) {
			*pp = p + strlen(p);
			return NULL;
		}
		gt = strchr(lt + 1, '>');
		if (gt == NULL) {
			*pp = lt + strlen(lt);
			return NULL;
		}
		const char *inner_lt = memchr(lt + 1, '<', (size_t)(gt - lt - 1));
		if (inner_lt != NULL) {
			p = inner_lt;
			continue;
		}
		struct buf b = BUF_INIT(0);
		bool at = false;
		for (const char *q = lt + 1; q < gt; q++) {
			if (*q == ' ' || *q == '\t' || *q == '\r' || *q == '\n')
				continue;
			if (*q == '@')
				at = true;
			buf_putc(&b, *q);
		}
		p = gt + 1;
		if (at && b.len > 2) {
			*pp = p;
			return buf_steal(&b);
		}
		buf_free(&b);
	}
}

/* The date and sequence a node sorts by: its own, or a dummy's first child's. */
static void
tnode_key(const struct tnode *n, int64_t *date, uint32_t *seq)
{
	while (n->msg == NULL && n->child != NULL)
		n = n->child;
	*date = n->msg != NULL ? n->msg->date : 0;
	*seq = n->msg != NULL ? n->msg->seq : 0;
}

static int
tnode_cmp(const void *a, const void *b)
{
	const struct tnode *x = *(const struct tnode *const *)a;
	const struct tnode *y = *(const struct tnode *const *)b;
	int64_t dx, dy;
	uint32_t sx, sy;

	tnode_key(x, &dx, &sx);
	tnode_key(y, &dy, &sy);
	if (dx != dy)
		return dx < dy ? -1 : 1;
	return sx < sy ? -1 : sx > sy;
}

/* Sort the children of n by sent date (RFC 5256 §2.2). */
static void
tnode_sort_children(struct tnode *n)
{
	size_t cnt = 0, i = 0;
	struct tnode **v;

	for (struct tnode *c = n->child; c != NULL; c = c->next)
		cnt++;
	if (cnt < 2)
		return;
	v = xcalloc(cnt, sizeof(*v));
	for (struct tnode *c = n->child; c != NULL; c = c->next)
		v[i++] = c;
	qsort(v, cnt, sizeof(*v), tnode_cmp);
	n->child = v[0];
	for (i = 0; i + 1 < cnt; i++)
		v[i]->next = v[i + 1];
	v[cnt - 1]->next = NULL;
	n->last = v[cnt - 1];
	free(v);
}

/*
 * Every node under root in pre-order (parents before their children),
 * root excluded, into a malloc'd array. Iterative: a References chain can
 * be as deep as the mailbox is large.
 */
static struct tnode **
tnode_preorder(struct tctx *t, struct tnode *root, size_t *n_r)
{
	struct tnode **out = xcalloc(t->nnodes ? t->nnodes : 1, sizeof(*out));
	size_t n = 0;
	struct tnode *c = root->child;

	while (c != NULL) {
		out[n++] = c;
		if (c->child != NULL) {
			c = c->child;
			continue;
		}
		while (c != NULL && c->next == NULL)
			c = c->parent == root ? NULL : c->parent;
		if (c != NULL)
			c = c->next;
	}
	*n_r = n;
	return out;
}

/* Step 6: sort every set of siblings, the deepest first. */
static void
tnode_sort_all(struct tctx *t, struct tnode *root)
{
	size_t n;
	struct tnode **v = tnode_preorder(t, root, &n);

	for (size_t i = n; i-- > 0;)
		tnode_sort_children(v[i]);
	tnode_sort_children(root);
	free(v);
}

/*
 * Step 3: delete childless dummies; replace the others by their children,
 * except at the top level when they have several. Children before parents,
 * as the recursive description has it.
 */
static void
tnode_prune(struct tctx *t, struct tnode *root)
{
	size_t n;
	struct tnode **v = tnode_preorder(t, root, &n);

	for (size_t i = n; i-- > 0;) {
		struct tnode *c = v[i], *p = c->parent, *prev = NULL, *x;
		if (c->msg != NULL)
			continue;
		if (c->child != NULL && p == root && c->child->next != NULL)
			continue;
		for (x = p->child; x != c; x = x->next)
			prev = x;
		if (c->child == NULL) {
			if (prev != NULL)
				prev->next = c->next;
			else
				p->child = c->next;
			if (p->last == c)
				p->last = prev;
		} else {
			for (x = c->child; x != NULL; x = x->next)
				x->parent = p;
			c->last->next = c->next;
			if (prev != NULL)
				prev->next = c->child;
			else
				p->child = c->child;
			if (p->last == c)
				p->last = c->last;
		}
		c->parent = NULL;
		c->next = NULL;
		c->child = NULL;
		c->last = NULL;
	}
	free(v);
}

static const char *
tnode_subject(const struct tnode *n)
{
	while (n->msg == NULL && n->child != NULL)
		n = n->child;
	return n->msg != NULL ? n->msg->subject : "";
}

/* Step 5: gather threads of the same base subject. */
static void
thread_merge_subjects(struct tctx *t, struct tnode *root)
{
	struct tmap subj = {NULL, NULL, 0, 0, 0};
	struct tnode **v;
	size_t cnt = 0, i = 0;

	for (struct tnode *c = root->child; c != NULL; c = c->next)
		cnt++;
	if (cnt == 0)
		return;
	/* Take the top level apart; it is rebuilt from v at the end. */
	v = xcalloc(cnt, sizeof(*v));
	for (struct tnode *c = root->child, *next; c != NULL; c = next) {
		next = c->next;
		c->next = NULL;
		c->slot = i;
		v[i++] = c;
	}
	root->child = root->last = NULL;
	/* B: one thread per subject, preferring dummies and non-replies */
	for (i = 0; i < cnt; i++) {
		const char *s = tnode_subject(v[i]);
		struct tnode *old;
		if (s[0] == '\0')
			continue;
		old = tmap_get(&subj, s);
		if (old == NULL)
			tmap_put(&subj, s, v[i]);
		else if (old->msg != NULL &&
			 (v[i]->msg == NULL || (old->msg->fw && !v[i]->msg->fw)))
			tmap_put(&subj, s, v[i]);
	}
	/* C: merge; a node that leaves the top level loses its parent root */
	for (i = 0; i < cnt; i++) {
		struct tnode *c = v[i], *old;
		const char *s;
		if (c == NULL || c->parent != root)
			continue;
		s = tnode_subject(c);
		if (s[0] == '\0')
			continue;
		old = tmap_get(&subj, s);
		if (old == NULL || old == c)
			continue;
		v[i] = NULL;
		if (old->msg == NULL && c->msg == NULL) {
			/* both dummies: c's children join old's */
			for (struct tnode *k = c->child; k != NULL; k = k->next)
				k->parent = old;
			if (c->child != NULL) {
				if (old->last != NULL)
					old->last->next = c->child;
				else
					old->child = c->child;
				old->last = c->last;
			}
			c->child = c->last = NULL;
			c->parent = NULL;
		} else if (old->msg == NULL || (c->msg != NULL && c->msg->fw && !old->msg->fw)) {
			tnode_append(old, c);
		} else {
			/* a new dummy takes old's place and holds both */
			struct tnode *d = tnode_new(t, NULL);
			d->parent = root;
			d->slot = old->slot;
			v[old->slot] = d;
			tnode_append(d, old);
			tnode_append(d, c);
			/* the key stays valid: it is old's subject, which lives on */
			tmap_put(&subj, s, d);
		}
	}
	for (i = 0; i < cnt; i++)
		if (v[i] != NULL)
			tnode_append(root, v[i]);
	free(v);
	tmap_free(&subj);
}

/*
 * Write the threads under root as Dovecot's imap_thread_write() does: a
 * node with one child continues on the same level ("3 6"), several
 * children are each parenthesised, a dummy shows only its children.
 * Iterative, with an explicit stack of the sibling lists left open.
 */
static int
thread_write(struct tctx *t, struct buf *out, const struct tnode *root)
{
	const struct tnode **stack = xcalloc(t->nnodes ? t->nnodes : 1, sizeof(*stack));
	const struct tnode *c = root->child;
	size_t sp = 0;
	bool fresh = false; /* c starts a list that is not the top level */
	int rc = 0;

	while (rc == 0) {
		if (c != NULL && fresh && c->next == NULL) {
			/* only child: no parentheses */
			rc |= buf_printf(out, "%u", c->msg != NULL ? c->msg->id : 0);
			if (c->child != NULL) {
				rc |= buf_putc(out, ' ');
				c = c->child;
				continue;
			}
			c = NULL;
		}
		while (c != NULL && c->child == NULL) {
			rc |= buf_printf(out, "(%u)", c->msg != NULL ? c->msg->id : 0);
			c = c->next;
		}
		if (c != NULL) {
			rc |= buf_putc(out, '(');
			if (c->msg != NULL)
				rc |= buf_printf(out, "%u ", c->msg->id);
			stack[sp++] = c->next;
			c = c->child;
			fresh = true;
			continue;
		}
		if (sp == 0)
			break;
		rc |= buf_putc(out, ')');
		c = stack[--sp];
		fresh = false;
	}
	free(stack);
	return rc;
}

static void
tctx_free(struct tctx *t)
{
	for (size_t i = 0; i < t->nnodes; i++)
		free(t->nodes[i]);
	free(t->nodes);
	for (size_t i = 0; i < t->nstrs; i++)
		free(t->strs[i]);
	free(t->strs);
	tmap_free(&t->ids);
}

static int
trec_subject_cmp(const void *a, const void *b)
{
	const struct trec *x = a, *y = b;
	int r = strcmp(x->subject, y->subject);

	if (r != 0)
		return r;
	if (x->date != y->date)
		return x->date < y->date ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* THREAD=ORDEREDSUBJECT: groups of one base subject, parent first, threads by date. */
static void
thread_ordered_subject(struct tctx *t, struct tnode *root, struct trec *recs, size_t n)
{
	struct tnode *parent = NULL;

	qsort(recs, n, sizeof(*recs), trec_subject_cmp);
	for (size_t i = 0; i < n; i++) {
		struct tnode *node = tnode_new(t, &recs[i]);
		if (parent != NULL && strcmp(parent->msg->subject, recs[i].subject) == 0) {
			tnode_append(parent, node);
		} else {
			tnode_append(root, node);
			parent = node;
		}
	}
	tnode_sort_children(root);
}

/* THREAD=REFERENCES, RFC 5256 §3 steps 1 to 6; recs in mailbox order. */
static void
thread_references(struct tctx *t, struct tnode *root, struct trec *recs, char **msgids,
		  char ***refs, const size_t *nrefs, size_t n)
{
	/* (1) links */
	for (size_t i = 0; i < n; i++) {
		struct tnode *cur = NULL, *prev = NULL;
		if (msgids[i] != NULL) {
			struct tnode *have = tmap_get(&t->ids, msgids[i]);
			if (have != NULL && have->msg == NULL) {
				have->msg = &recs[i];
				cur = have;
			} else if (have == NULL) {
				cur = tnode_new(t, &recs[i]);
				tmap_put(&t->ids, tctx_keep(t, msgids[i]), cur);
				msgids[i] = NULL;
			}
		}
		if (cur == NULL)
			cur = tnode_new(t, &recs[i]); /* no ID, or a duplicate: unique */
		t->walked = 0;
		/* (1A) chain the references, keeping existing parents, making no loops */
		for (size_t k = 0; k < nrefs[i]; k++) {
			struct tnode *node = tctx_ref(t, refs[i][k]);
			refs[i][k] = NULL;
			if (prev != NULL && node->parent == NULL &&
			    !tnode_is_ancestor(t, node, prev))
				tnode_append(prev, node);
			prev = node;
		}
		/* (1B) the last reference is the parent */
		tnode_unlink(cur);
		if (prev != NULL && !tnode_is_ancestor(t, cur, prev))
			tnode_append(prev, cur);
	}
	/* (2) the roots */
	for (size_t i = 0; i < t->nnodes; i++)
		if (t->nodes[i]->parent == NULL && t->nodes[i] != root)
			tnode_append(root, t->nodes[i]);
	/* (3) dummies */
	tnode_prune(t, root);
	/* (4) roots by date, a dummy by its first child */
	for (struct tnode *c = root->child; c != NULL; c = c->next)
		if (c->msg == NULL)
			tnode_sort_children(c);
	tnode_sort_children(root);
	/* (5) subjects */
	thread_merge_subjects(t, root);
	/* (6) every set of siblings by date */
	tnode_sort_all(t, root);
}

/* Keep the last THREAD_REFS_MAX references of a message (see there). */
static void
thread_refs_trim(char **refs, size_t *n)
{
	if (*n <= THREAD_REFS_MAX)
		return;
	size_t drop = *n - THREAD_REFS_MAX;
	for (size_t k = 0; k < drop; k++)
		free(refs[k]);
	memmove(refs, refs + drop, THREAD_REFS_MAX * sizeof(*refs));
	*n = THREAD_REFS_MAX;
}

int
imap_thread(struct buf *out, const struct imap_search_ctx *ctx, const char *algorithm,
	    const unsigned char *match, int uid, const char **err_r)
{
	const struct store_mbox_view *view = ctx->view;
	bool references;
	struct trec *recs;
	char **msgids, ***refs;
	size_t *nrefs, n = 0, start = out->len;
	struct tctx t;
	struct tnode *root;
	int rc = 0;

	if (algorithm != NULL && strcasecmp(algorithm, "REFERENCES") == 0) {
		references = true;
	} else if (algorithm != NULL && strcasecmp(algorithm, "ORDEREDSUBJECT") == 0) {
		references = false;
	} else {
		*err_r = "Unknown thread algorithm.";
		return -1;
	}
	size_t cap = view->count ? view->count : 1;
	recs = xcalloc(cap, sizeof(*recs));
	msgids = xcalloc(cap, sizeof(*msgids));
	refs = xcalloc(cap, sizeof(*refs));
	nrefs = xcalloc(cap, sizeof(*nrefs));
	for (size_t i = 0; i < view->count; i++) {
		const struct store_msg *m = &view->msgs[i];
		struct buf hdr = BUF_INIT(0);
		struct trec *r;
		if (!match[i])
			continue;
		r = &recs[n];
		r->seq = (uint32_t)(i + 1);
		r->id = uid ? m->uid : r->seq;
		if (imap_search_header(ctx, m->uid, &hdr) <= 0) {
			r->subject = xstrdup("");
			r->date = m->internal_date;
			n++;
			buf_free(&hdr);
			continue;
		}
		r->subject = sort_header_subject(hdr.data, hdr.len, &r->fw);
		r->date = sort_header_date(hdr.data, hdr.len);
		if (r->date == 0)
			r->date = m->internal_date;
		if (references) {
			char *v = mime_header_get(hdr.data, hdr.len, "Message-ID");
			const char *p = v;
			if (v != NULL)
				msgids[n] = thread_next_msgid(&p);
			free(v);
			v = mime_header_get(hdr.data, hdr.len, "References");
			p = v;
			size_t capr = 0;
			char *id;
			while (p != NULL && (id = thread_next_msgid(&p)) != NULL) {
				if (nrefs[n] == capr) {
					capr = capr ? capr * 2 : 4;
					refs[n] = xrealloc(refs[n], capr * sizeof(*refs[n]));
				}
				refs[n][nrefs[n]++] = id;
			}
			free(v);
			thread_refs_trim(refs[n], &nrefs[n]);
			if (nrefs[n] == 0) {
				v = mime_header_get(hdr.data, hdr.len, "In-Reply-To");
				p = v;
				if (v != NULL && (id = thread_next_msgid(&p)) != NULL) {
					refs[n] = xcalloc(1, sizeof(*refs[n]));
					refs[n][nrefs[n]++] = id;
				}
				free(v);
			}
		}
		n++;
		buf_free(&hdr);
	}

	memset(&t, 0, sizeof(t));
	root = tnode_new(&t, NULL);
	if (references)
		thread_references(&t, root, recs, msgids, refs, nrefs, n);
	else if (n > 0)
		thread_ordered_subject(&t, root, recs, n);

	rc |= buf_puts(out, "* THREAD ");
	if (rc == 0)
		rc |= thread_write(&t, out, root);
	rc |= buf_puts(out, "\r\n");

	tctx_free(&t);
	for (size_t i = 0; i < n; i++) {
		free(recs[i].subject);
		free(msgids[i]);
		for (size_t k = 0; k < nrefs[i]; k++)
			free(refs[i][k]);
		free(refs[i]);
	}
	free(recs);
	free(msgids);
	free(refs);
	free(nrefs);
	if (rc != 0) {
		buf_truncate(out, start);
		*err_r = "TOOBIG";
		return -1;
	}
	return 0;
}
