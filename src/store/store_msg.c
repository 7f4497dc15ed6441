/*
 * store_msg — messages: delivery and APPEND, snapshots and change lists,
 * reading, flags (RFC 7162 CONDSTORE), EXPUNGE, COPY/MOVE, full-text search
 * and SORT keys.
 *
 * Every writing call is one BEGIN IMMEDIATE transaction that reads the
 * mailbox row, takes highestmodseq + 1 as the mod-sequence of the whole
 * operation, and writes it back with UIDNEXT. A new message's file is
 * written and fsynced before that transaction starts, so the lock is never
 * held across file I/O; the transaction only adds rows. An add under a
 * quota reads the usage inside that transaction (the write lock is held),
 * so adders on other handles can never together pass it.
 *
 * SECURITY: message bytes and cached texts are stored, never parsed.
 * Keywords are checked to be IMAP atoms; search terms are quoted as FTS5
 * strings ("" doubles a quote) so they can never become query syntax.
 */
#include "store/store_private.h"
#include "core/log.h"

#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define STORE_DEDUP_KEY_MAX 512
#define STORE_PATH_MAX 4096

/* A growing array of messages. */
struct store_msgvec {
	struct store_msg *v;
	int64_t *file_id; /* parallel to v when the query returns it */
	size_t n, cap;
};

/* Keywords of one message while a change is computed; pointers into other strings. */
struct store_kw {
	const char *p[STORE_KEYWORDS_MAX];
	size_t len[STORE_KEYWORDS_MAX];
	size_t n;
};

/* --- small helpers --- */

static void
store_msgs_free(struct store_msg *v, size_t n)
{
	if (v == NULL)
		return;
	for (size_t i = 0; i < n; i++)
		free(v[i].keywords);
	free(v);
}

static struct store_msg *
store_msgvec_push(struct store_msgvec *mv)
{
	if (mv->n == mv->cap) {
		mv->cap = mv->cap ? mv->cap * 2 : 64;
		mv->v = xrealloc(mv->v, mv->cap * sizeof(*mv->v));
		mv->file_id = xrealloc(mv->file_id, mv->cap * sizeof(*mv->file_id));
	}
	return &mv->v[mv->n++];
}

static void
store_msgvec_free(struct store_msgvec *mv)
{
	store_msgs_free(mv->v, mv->n);
	free(mv->file_id);
	memset(mv, 0, sizeof(*mv));
}

/*
 * Read columns uid, modseq, flags, keywords, size, internal_date, internal_tz,
 * noeol[, file_id].
 */
static void
store_msgvec_add_row(struct store_msgvec *mv, sqlite3_stmt *s, int with_file)
{
	struct store_msg *m = store_msgvec_push(mv);
	const char *kw = (const char *)sqlite3_column_text(s, 3);

	m->uid = (uint32_t)sqlite3_column_int64(s, 0);
	m->modseq = (uint64_t)sqlite3_column_int64(s, 1);
	m->flags = (uint32_t)sqlite3_column_int(s, 2);
	m->keywords = kw != NULL && kw[0] != '\0' ? xstrdup(kw) : NULL;
	m->size = (uint64_t)sqlite3_column_int64(s, 4);
	m->internal_date = sqlite3_column_int64(s, 5);
	m->internal_tz = sqlite3_column_int(s, 6);
	m->noeol = sqlite3_column_int(s, 7) != 0;
	mv->file_id[mv->n - 1] = with_file ? sqlite3_column_int64(s, 8) : 0;
}

static void
store_uids_push(uint32_t **v, size_t *n, size_t *cap, uint32_t uid)
{
	if (*n == *cap) {
		*cap = *cap ? *cap * 2 : 64;
		*v = xrealloc(*v, *cap * sizeof(**v));
	}
	(*v)[(*n)++] = uid;
}

static int
store_range_cmp(const void *a, const void *b)
{
	const struct store_range *x = a, *y = b;

	return x->lo < y->lo ? -1 : x->lo > y->lo;
}

/*
 * Sorted, merged copy of a UID set so no message is visited twice; a
 * reversed range is turned round (IMAP "5:1" is "1:5"). Caller frees.
 */
static struct store_range *
store_set_norm(const struct store_range *set, size_t nset, size_t *n_r)
{
	struct store_range *v = xmalloc((nset ? nset : 1) * sizeof(*v));
	size_t n = 0;

	for (size_t i = 0; i < nset; i++) {
		v[i] = set[i];
		if (v[i].lo > v[i].hi) {
			uint32_t t = v[i].lo;
			v[i].lo = v[i].hi;
			v[i].hi = t;
		}
	}
	qsort(v, nset, sizeof(*v), store_range_cmp);
	for (size_t i = 0; i < nset; i++) {
		if (n > 0 && (uint64_t)v[i].lo <= (uint64_t)v[n - 1].hi + 1) {
			if (v[i].hi > v[n - 1].hi)
				v[n - 1].hi = v[i].hi;
		} else {
			v[n++] = v[i];
		}
	}
	*n_r = n;
	return v;
}

/* Collect the messages of mbox in set (UID order, with file ids). 0 or -1. */
static int
store_collect(struct store *st, int64_t mbox, const struct store_range *set, size_t nset,
	      struct store_msgvec *mv)
{
	size_t n;
	struct store_range *r = store_set_norm(set, nset, &n);
	int rc = 0;

	for (size_t i = 0; rc == 0 && i < n; i++) {
		sqlite3_stmt *s = store_stmt(st, SQL_MSG_RANGE);
		if (s == NULL) {
			rc = -1;
			break;
		}
		sqlite3_bind_int64(s, 1, mbox);
		sqlite3_bind_int64(s, 2, r[i].lo);
		sqlite3_bind_int64(s, 3, r[i].hi);
		while ((rc = store_step(st, s)) == 1)
			store_msgvec_add_row(mv, s, 1);
	}
	free(r);
	return rc;
}

/* Write a mailbox's UIDNEXT and HIGHESTMODSEQ. 0 or -1. */
static int
store_mbox_setseq(struct store *st, int64_t mbox, uint32_t uidnext, uint64_t modseq)
{
	sqlite3_stmt *s = store_stmt(st, SQL_MBOX_SETSEQ);

	if (s == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, mbox);
	sqlite3_bind_int64(s, 2, uidnext);
	sqlite3_bind_int64(s, 3, (int64_t)modseq);
	return store_exec(st, s);
}

/* Bind a string or NULL. */
static void
store_bind_text(sqlite3_stmt *s, int i, const char *v)
{
	if (v == NULL)
		sqlite3_bind_null(s, i);
	else
		sqlite3_bind_text(s, i, v, -1, SQLITE_STATIC);
}

/* --- keywords --- */

/* Nonzero if k[0..n) is a flag-keyword: an IMAP atom, not a \system flag. */
static int
store_kw_valid(const char *k, size_t n)
{
	if (n == 0 || n > STORE_KEYWORD_MAX)
		return 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)k[i];
		if (c <= 0x20 || c >= 0x7f || strchr("(){%*\"\\]", c) != NULL)
			return 0;
	}
	return 1;
}

static int
store_kw_find(const struct store_kw *l, const char *k, size_t n)
{
	for (size_t i = 0; i < l->n; i++)
		if (l->len[i] == n && strncasecmp(l->p[i], k, n) == 0)
			return (int)i;
	return -1;
}

/* Add unless present (keywords are case-insensitive). 0, or -1 when full. */
static int
store_kw_add(struct store_kw *l, const char *k, size_t n)
{
	if (store_kw_find(l, k, n) >= 0)
		return 0;
	if (l->n == STORE_KEYWORDS_MAX)
		return -1;
	l->p[l->n] = k;
	l->len[l->n++] = n;
	return 0;
}

static void
store_kw_remove(struct store_kw *l, const char *k, size_t n)
{
	int i = store_kw_find(l, k, n);

	if (i < 0)
		return;
	for (size_t j = (size_t)i + 1; j < l->n; j++) {
		l->p[j - 1] = l->p[j];
		l->len[j - 1] = l->len[j];
	}
	l->n--;
}

/* Split a stored space-separated list. 0, or -1 if it holds too many. */
static int
store_kw_parse(struct store_kw *l, const char *s)
{
	l->n = 0;
	while (s != NULL && *s != '\0') {
		while (*s == ' ')
			s++;
		size_t n = strcspn(s, " ");
		if (n > 0 && store_kw_add(l, s, n) < 0)
			return -1;
		s += n;
	}
	return 0;
}

/* Nonzero if both lists hold the same keywords (case-insensitively). */
static int
store_kw_same(const struct store_kw *a, const struct store_kw *b)
{
	if (a->n != b->n)
		return 0;
	for (size_t i = 0; i < a->n; i++)
		if (store_kw_find(b, a->p[i], a->len[i]) < 0)
			return 0;
	return 1;
}

/* The list as a malloc'd space-separated string, or NULL when empty. */
static char *
store_kw_join(const struct store_kw *l)
{
	struct buf b = BUF_INIT(0);

	for (size_t i = 0; i < l->n; i++) {
		if (i > 0)
			buf_putc(&b, ' ');
		buf_append(&b, l->p[i], l->len[i]);
	}
	return l->n ? buf_steal(&b) : NULL;
}

/* Check and collect caller-given keywords. 0 or -1 (error set). */
static int
store_kw_from_args(struct store *st, const char *const *kw, size_t n, struct store_kw *l)
{
	l->n = 0;
	for (size_t i = 0; i < n; i++) {
		if (kw[i] == NULL || !store_kw_valid(kw[i], strlen(kw[i])))
			return store_fail(st, STORE_ERR_INVALID, "invalid keyword");
		if (store_kw_add(l, kw[i], strlen(kw[i])) < 0)
			return store_fail(st, STORE_ERR_LIMIT, "too many keywords");
	}
	return 0;
}

/* --- adding messages --- */

/*
 * msg with every bare LF turned into CRLF: msg itself when it has none
 * (the common case, no copy), else the converted text in tmp.
 */
static const char *
store_crlf(const char *msg, size_t len, struct buf *tmp, size_t *len_r)
{
	const char *p = msg, *end = msg + len, *nl;
	int bare = 0;

	for (p = msg; (nl = memchr(p, '\n', (size_t)(end - p))) != NULL; p = nl + 1)
		if (nl == msg || nl[-1] != '\r') {
			bare = 1;
			break;
		}
	*len_r = len;
	if (!bare)
		return msg;
	buf_grow(tmp, len + len / 32 + 16);
	for (p = msg; (nl = memchr(p, '\n', (size_t)(end - p))) != NULL; p = nl + 1) {
		buf_append(tmp, p, (size_t)(nl - p));
		buf_append(tmp, nl > msg && nl[-1] == '\r' ? "\n" : "\r\n",
			   nl > msg && nl[-1] == '\r' ? 1 : 2);
	}
	buf_append(tmp, p, (size_t)(end - p));
	*len_r = tmp->len;
	return tmp->data;
}

size_t
store_stored_size(const char *msg, size_t len)
{
	const char *p, *end = msg + len, *nl;
	size_t size = len;

	/* As store_crlf() converts: each LF not after a CR gains one. */
	for (p = msg; (nl = memchr(p, '\n', (size_t)(end - p))) != NULL; p = nl + 1)
		if (nl == msg || nl[-1] != '\r')
			size++;
	return size;
}

int
store_delivered(struct store *st, const char *key, uint32_t *uid_r)
{
	sqlite3_stmt *s = store_stmt(st, SQL_DELIV_GET);
	int rc;

	if (s == NULL)
		return -1;
	sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
	rc = store_step(st, s);
	if (rc == 1) {
		if (uid_r != NULL)
			*uid_r = (uint32_t)sqlite3_column_int64(s, 0);
		sqlite3_reset(s);
	}
	return rc;
}

/* Insert the files, fts, messages (and deliveries) rows of a new message. In a write txn. */
static int
store_add_rows(struct store *st, const struct store_mbox_row *mb, const struct store_file *f,
	       size_t size, const struct store_meta *m, const char *kw, const char *dedup_key,
	       uint32_t uid, uint64_t modseq)
{
	sqlite3_stmt *s;
	int64_t file_id = f->id;
	int64_t idate = m->internal_date ? m->internal_date : util_now_ms() / 1000;

	if ((s = store_stmt(st, SQL_FILE_INSERT)) == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, file_id);
	sqlite3_bind_int64(s, 2, (int64_t)size);
	store_bind_text(s, 3, m->envelope);
	store_bind_text(s, 4, m->bodystructure);
	store_bind_text(s, 5, m->body);
	if (m->hdr_date != 0)
		sqlite3_bind_int64(s, 6, m->hdr_date);
	store_bind_text(s, 7, m->hdr_from);
	store_bind_text(s, 8, m->hdr_subject);
	store_bind_text(s, 9, m->hdr_to);
	store_bind_text(s, 10, m->hdr_cc);
	if (store_exec(st, s) < 0)
		return -1;
	if (m->search_hdrs != NULL) {
		if ((s = store_stmt(st, SQL_SEARCH_INSERT)) == NULL)
			return -1;
		sqlite3_bind_int64(s, 1, file_id);
		store_bind_text(s, 2, m->search_hdrs);
		if (store_exec(st, s) < 0)
			return -1;
	}
	/* The full-text index takes it in a later batch (store_fts_catch_up). */
	if ((s = store_stmt(st, SQL_FTS_QUEUE)) == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, file_id);
	if (store_exec(st, s) < 0)
		return -1;
	if ((s = store_stmt(st, SQL_MSG_INSERT)) == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, mb->id);
	sqlite3_bind_int64(s, 2, uid);
	sqlite3_bind_int64(s, 3, (int64_t)modseq);
	sqlite3_bind_int(s, 4, (int)(m->flags & STORE_F_ALL));
	store_bind_text(s, 5, kw);
	sqlite3_bind_int64(s, 6, idate);
	sqlite3_bind_int(s, 7, m->internal_tz);
	sqlite3_bind_int64(s, 8, (int64_t)size);
	sqlite3_bind_int64(s, 9, file_id);
	sqlite3_bind_int(s, 10, f->noeol);
	if (store_exec(st, s) < 0)
		return -1;
	if (dedup_key != NULL) {
		if ((s = store_stmt(st, SQL_DELIV_INSERT)) == NULL)
			return -1;
		sqlite3_bind_text(s, 1, dedup_key, -1, SQLITE_STATIC);
		sqlite3_bind_int64(s, 2, mb->id);
		sqlite3_bind_int64(s, 3, uid);
		sqlite3_bind_int64(s, 4, util_now_ms() / 1000);
		if (store_exec(st, s) < 0)
			return -1;
	}
	return 0;
}

/* Per item of store_add_many(): its file and keywords between the steps. */
struct add_state {
	struct store_file f;
	char *kwstr;
	bool dup; /* dedup key already delivered: nothing written */
	bool over;	  /* no room under the quota: not added */
	uint32_t dup_uid; /* the UID it got then */
};

/*
 * Check an item and write its file (not yet durable). With room (not
 * NULL: what the quota leaves, read just before), an item bigger than
 * what is left is marked over and no file is written: mail deferred for
 * the quota costs no writes each time it is tried. 0 or -1.
 */
static int
store_add_prepare(struct store *st, const struct store_add_item *it, struct add_state *as,
		  uint64_t *room)
{
	static const struct store_meta nometa;
	const struct store_meta *meta = it->meta != NULL ? it->meta : &nometa;
	struct buf conv = BUF_INIT(0);
	struct store_kw kw;
	const char *data;
	size_t size;
	int rc;

	if (meta->flags & ~STORE_F_ALL)
		return store_fail(st, STORE_ERR_INVALID, "unknown flag bits");
	if (store_kw_from_args(st, meta->keywords, meta->nkeywords, &kw) < 0)
		return -1;
	if (it->dedup_key != NULL) {
		size_t klen = strnlen(it->dedup_key, STORE_DEDUP_KEY_MAX + 1);
		if (klen == 0 || klen > STORE_DEDUP_KEY_MAX)
			return store_fail(st, STORE_ERR_INVALID, "bad dedup key");
		/* Cheap early answer for a retry; the transaction decides. */
		if ((rc = store_delivered(st, it->dedup_key, &as->dup_uid)) != 0) {
			as->dup = rc == 1;
			return rc < 0 ? -1 : 0;
		}
	}
	data = store_crlf(it->msg, it->len, &conv, &size);
	as->f.size = size;
	if (room != NULL && size > *room) {
		as->over = true;
		buf_free(&conv);
		return 0;
	}
	if (room != NULL)
		*room -= size;
	rc = store_file_write(st, data, size, &as->f);
	as->f.noeol = size > 0 && data[size - 1] != '\n';
	buf_free(&conv);
	if (rc < 0)
		return -1;
	as->kwstr = store_kw_join(&kw);
	return 0;
}

int
store_add_many(struct store *st, const char *mailbox, struct store_add_item *items, size_t n,
	       uint32_t *uidvalidity_r)
{
	return store_add_many_quota(st, mailbox, items, n, 0, 0, uidvalidity_r);
}

int
store_add_many_quota(struct store *st, const char *mailbox, struct store_add_item *items, size_t n,
		     int64_t quota, int partial, uint32_t *uidvalidity_r)
{
	struct add_state *as = xcalloc(n ? n : 1, sizeof(*as));
	const struct store_file *last = NULL;
	struct store_mbox_row mb;
	uint32_t uid;
	uint64_t modseq;
	size_t added = 0;
	uint64_t used = 0;
	int64_t pending = 0;
	int rc;

	store_clear_error(st);
	for (size_t i = 0; i < n; i++)
		as[i].f.fd = -1;
	/* A first look at the room, to write no file for what cannot fit. */
	uint64_t room = 0;
	if (quota > 0) {
		if (store_usage(st, &used, NULL) < 0)
			goto fail;
		room = used < (uint64_t)quota ? (uint64_t)quota - used : 0;
	}
	for (size_t i = 0; i < n; i++) {
		if (store_add_prepare(st, &items[i], &as[i], quota > 0 ? &room : NULL) < 0)
			goto fail;
		if (as[i].over && !partial) {
			store_fail(st, STORE_ERR_OVERQUOTA, "quota exceeded");
			goto fail;
		}
		if (as[i].f.fd >= 0)
			last = &as[i].f;
	}
	/* Every file durable (one flush for all) before the rows naming them commit. */
	if (last != NULL && store_file_sync(st, last) < 0)
		goto fail;
	if (store_begin(st, 1) < 0 || store_mbox_open(st, mailbox ? mailbox : "INBOX", 0, &mb) < 0)
		goto fail;
	/* Read under the write lock: no other adder can change it before the commit. */
	if (quota > 0 && store_usage(st, &used, NULL) < 0)
		goto fail;
	uid = mb.uidnext;
	modseq = mb.highestmodseq + 1; /* one operation, one mod-sequence */
	for (size_t i = 0; i < n; i++) {
		const struct store_add_item *it = &items[i];
		if (as[i].dup)
			continue;
		/* Asked again if over at the first look too: delivered is never deferred. */
		if (it->dedup_key != NULL) {
			if ((rc = store_delivered(st, it->dedup_key, &as[i].dup_uid)) < 0)
				goto fail;
			if (rc == 1) {
				as[i].dup = true;
				continue;
			}
		}
		if (as[i].f.fd < 0)
			continue; /* over at the first look: no file */
		if (quota > 0 && used + as[i].f.size > (uint64_t)quota) {
			if (!partial) {
				store_fail(st, STORE_ERR_OVERQUOTA, "quota exceeded");
				goto fail;
			}
			as[i].over = true;
			continue;
		}
		used += as[i].f.size;
		if (uid >= UINT32_MAX) {
			store_fail(st, STORE_ERR_LIMIT, "mailbox UIDs exhausted");
			goto fail;
		}
		if (store_add_rows(st, &mb, &as[i].f, as[i].f.size,
				   it->meta != NULL ? it->meta : &(struct store_meta){0}, as[i].kwstr,
				   it->dedup_key, uid, modseq) < 0)
			goto fail;
		items[i].uid = uid++;
		added++;
	}
	if (added > 0 && store_mbox_setseq(st, mb.id, uid, modseq) < 0)
		goto fail;
	/* Counted under the write lock already held: no read of its own afterwards. */
	if (added > 0 && (pending = store_fts_pending(st)) < 0)
		goto fail;
	/* Old dedup keys go in a commit made anyway, once a day per account. */
	if (added > 0 && store_prune_deliveries(st, 0) < 0)
		goto fail;
	if (store_commit(st) < 0) {
		/* Whether the rows are durable is unknown: keep the files for the sweeper. */
		for (size_t i = 0; i < n; i++)
			store_file_leave(st, &as[i].f);
		goto out_err;
	}
	for (size_t i = 0; i < n; i++) {
		items[i].rc = as[i].dup ? 0 : as[i].over ? 2 : 1;
		items[i].size = as[i].f.size;
		if (as[i].dup) {
			items[i].uid = as[i].dup_uid;
			store_file_abort(st, &as[i].f);
		} else if (as[i].over)
			store_file_abort(st, &as[i].f);
		else
			store_file_done(st, &as[i].f);
		free(as[i].kwstr);
	}
	free(as);
	if (uidvalidity_r != NULL)
		*uidvalidity_r = mb.uidvalidity;
	if (added > 0)
		store_notify(st, mb.name);
	/* The messages are in: a failure to index them now leaves them queued. */
	if (added > 0)
		st->fts_backlog = 1;
	if (pending >= STORE_FTS_BATCH && store_fts_catch_up(st, 0) < 0)
		log_error("store %s: full-text index: %s", st->account, store_errstr(st));
	store_clear_error(st);
	return 0;
fail:
	store_rollback(st);
	for (size_t i = 0; i < n; i++)
		store_file_abort(st, &as[i].f);
out_err:
	for (size_t i = 0; i < n; i++)
		free(as[i].kwstr);
	free(as);
	return -1;
}

int
store_deliver(struct store *st, const char *mailbox, const char *msg, size_t len,
	      const struct store_meta *meta, const char *dedup_key, uint32_t *uid_r)
{
	struct store_add_item it = {.msg = msg, .len = len, .meta = meta, .dedup_key = dedup_key};

	if (store_add_many(st, mailbox, &it, 1, NULL) < 0)
		return -1;
	if (it.rc == 1 && uid_r != NULL)
		*uid_r = it.uid;
	return it.rc;
}

int
store_append(struct store *st, const char *mailbox, const char *msg, size_t len,
	     const struct store_meta *meta, uint32_t *uid_r, uint32_t *uidvalidity_r)
{
	struct store_add_item it = {.msg = msg, .len = len, .meta = meta};

	if (mailbox == NULL) {
		store_clear_error(st);
		return store_fail(st, STORE_ERR_INVALID, "missing mailbox name");
	}
	if (store_add_many(st, mailbox, &it, 1, uidvalidity_r) < 0)
		return -1;
	if (uid_r != NULL)
		*uid_r = it.uid;
	return 0;
}

/* --- snapshots --- */

int
store_mailbox_load(struct store *st, const char *name, struct store_mbox_view **view_r)
{
	struct store_msgvec mv = {0};
	struct store_mbox_row mb;
	struct store_mbox_view *view;
	sqlite3_stmt *s;
	int rc;

	store_clear_error(st);
	*view_r = NULL;
	if (store_begin(st, 0) < 0)
		return -1;
	if (store_mbox_open(st, name, 0, &mb) < 0 || (s = store_stmt(st, SQL_MSG_LOAD)) == NULL)
		goto fail;
	sqlite3_bind_int64(s, 1, mb.id);
	while ((rc = store_step(st, s)) == 1)
		store_msgvec_add_row(&mv, s, 0);
	if (rc < 0 || store_commit(st) < 0)
		goto fail;
	view = xcalloc(1, sizeof(*view));
	view->uidvalidity = mb.uidvalidity;
	view->uidnext = mb.uidnext;
	view->recent_uid = mb.recent_uid;
	view->highestmodseq = mb.highestmodseq;
	view->special_use = mb.special_use;
	view->count = mv.n;
	view->msgs = mv.v;
	free(mv.file_id);
	*view_r = view;
	return 0;
fail:
	store_rollback(st);
	store_msgvec_free(&mv);
	return -1;
}

void
store_mbox_view_free(struct store_mbox_view **view)
{
	if (*view == NULL)
		return;
	store_msgs_free((*view)->msgs, (*view)->count);
	free(*view);
	*view = NULL;
}

int
store_changes_since(struct store *st, const char *mailbox, uint32_t uidvalidity, uint64_t modseq,
		    struct store_changes *r)
{
	struct store_msgvec mv = {0};
	struct store_mbox_row mb;
	uint32_t *exp = NULL;
	size_t nexp = 0, cap = 0;
	sqlite3_stmt *s;
	int rc;

	store_clear_error(st);
	memset(r, 0, sizeof(*r));
	if (modseq > INT64_MAX)
		modseq = INT64_MAX;
	if (store_begin(st, 0) < 0)
		return -1;
	if (store_mbox_open(st, mailbox, uidvalidity, &mb) < 0 ||
	    (s = store_stmt(st, SQL_MSG_CHANGED)) == NULL)
		goto fail;
	sqlite3_bind_int64(s, 1, mb.id);
	sqlite3_bind_int64(s, 2, (int64_t)modseq);
	while ((rc = store_step(st, s)) == 1)
		store_msgvec_add_row(&mv, s, 0);
	if (rc < 0 || (s = store_stmt(st, SQL_EXP_SINCE)) == NULL)
		goto fail;
	sqlite3_bind_int64(s, 1, mb.id);
	sqlite3_bind_int64(s, 2, (int64_t)modseq);
	while ((rc = store_step(st, s)) == 1)
		store_uids_push(&exp, &nexp, &cap, (uint32_t)sqlite3_column_int64(s, 0));
	if (rc < 0 || store_commit(st) < 0)
		goto fail;
	r->uidvalidity = mb.uidvalidity;
	r->uidnext = mb.uidnext;
	r->recent_uid = mb.recent_uid;
	r->highestmodseq = mb.highestmodseq;
	r->nmsgs = mv.n;
	r->msgs = mv.v;
	r->nexpunged = nexp;
	r->expunged = exp;
	free(mv.file_id);
	return 0;
fail:
	store_rollback(st);
	store_msgvec_free(&mv);
	free(exp);
	return -1;
}

/* Move the watermark up to UIDNEXT: 1 (the range passed in *first_r, *next_r), 0 busy, -1. */
static int
store_claim_recent(struct store *st, const char *mailbox, uint32_t uidvalidity, uint32_t *first_r,
		   uint32_t *next_r)
{
	struct store_mbox_row mb;
	sqlite3_stmt *s;

	if (store_begin(st, 1) < 0)
		return st->err == STORE_ERR_BUSY ? 0 : -1;
	if (store_mbox_open(st, mailbox, uidvalidity, &mb) < 0)
		goto fail;
	if (mb.recent_uid < mb.uidnext) {
		if ((s = store_stmt(st, SQL_MBOX_CLAIM_RECENT)) == NULL)
			goto fail;
		sqlite3_bind_int64(s, 1, mb.id);
		if (store_exec(st, s) < 0)
			goto fail;
	}
	if (store_commit_lazy(st) < 0)
		return -1;
	/*
	 * Nothing to take still says where the watermark is: a session that
	 * lost the race knows it need not try again until UIDNEXT passes it
	 * (else it took the write lock at every poll, on the loop).
	 */
	*first_r = mb.recent_uid < mb.uidnext ? mb.recent_uid : mb.uidnext;
	*next_r = mb.uidnext;
	return 1;
fail:
	store_rollback(st);
	return -1;
}

int
store_mailbox_claim_recent(struct store *st, const char *mailbox, uint32_t uidvalidity, int nowait,
			   uint32_t *first_r, uint32_t *next_r)
{
	int rc;

	store_clear_error(st);
	*first_r = *next_r = 0;
	if (nowait) {
		/* Both are the connection's: back to normal before anyone else uses it. */
		sqlite3_busy_timeout(st->db, 0);
		sqlite3_wal_autocheckpoint(st->db, 0);
	}
	rc = store_claim_recent(st, mailbox, uidvalidity, first_r, next_r);
	if (nowait) {
		sqlite3_busy_timeout(st->db, STORE_BUSY_TIMEOUT_MS);
		sqlite3_wal_autocheckpoint(st->db, STORE_WAL_AUTOCHECKPOINT);
	}
	if (rc == 0)
		store_clear_error(st);
	return rc;
}

void
store_changes_free(struct store_changes *r)
{
	store_msgs_free(r->msgs, r->nmsgs);
	free(r->expunged);
	memset(r, 0, sizeof(*r));
}

/* --- reading --- */

int
store_msg_open(struct store *st, const char *mailbox, uint32_t uidvalidity, uint32_t uid, int *fd_r,
	       uint64_t *size_r)
{
	char path[STORE_PATH_MAX];
	struct store_mbox_row mb;
	sqlite3_stmt *s;
	int64_t file_id;
	uint64_t size;
	int rc, fd;

	store_clear_error(st);
	if (store_mbox_open(st, mailbox, uidvalidity, &mb) < 0 ||
	    (s = store_stmt(st, SQL_MSG_FILE)) == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, mb.id);
	sqlite3_bind_int64(s, 2, uid);
	if ((rc = store_step(st, s)) < 0)
		return -1;
	if (rc == 0) {
		store_fail(st, STORE_ERR_NOMSG, "no message with UID %u", uid);
		return 0;
	}
	file_id = sqlite3_column_int64(s, 0);
	size = (uint64_t)sqlite3_column_int64(s, 1);
	sqlite3_reset(s);
	if (store_file_path(st, file_id, path, sizeof(path)) < 0)
		return store_fail(st, STORE_ERR_INTERNAL, "path too long");
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) < 0) {
		if (errno == ENOENT) {
			/*
			 * Expunged between the lookup and the open, or the file
			 * is lost (a damaged or partly restored store): the
			 * callers answer both as expunged, so say the second here
			 * or the admin never learns why mail cannot be read.
			 */
			if ((s = store_stmt(st, SQL_MSG_FILE)) != NULL) {
				sqlite3_bind_int64(s, 1, mb.id);
				sqlite3_bind_int64(s, 2, uid);
				if (store_step(st, s) == 1) {
					if (sqlite3_column_int64(s, 0) == file_id)
						log_error("store %s: %s UID %u: message file %s "
							  "is missing",
							  st->account, mb.name, uid, path);
					sqlite3_reset(s);
				}
			}
			store_fail(st, STORE_ERR_NOMSG, "message with UID %u is gone", uid);
			return 0;
		}
		return store_fail(st, STORE_ERR_INTERNAL, "open(%s) failed: %s", path,
				  strerror(errno));
	}
	*fd_r = fd;
	if (size_r != NULL)
		*size_r = size;
	return 1;
}

static char *
store_col_dup(sqlite3_stmt *s, int i)
{
	const char *v = (const char *)sqlite3_column_text(s, i);

	return v ? xstrdup(v) : NULL;
}

/* Append the meta rows of mbox within set to *v. 0 or -1. */
static int
store_meta_collect(struct store *st, int64_t mbox, const struct store_range *set, size_t nset,
		   struct store_msg_meta **v, size_t *n, size_t *cap)
{
	size_t nr;
	struct store_range *r = store_set_norm(set, nset, &nr);
	int rc = 0;

	for (size_t i = 0; rc == 0 && i < nr; i++) {
		sqlite3_stmt *s = store_stmt(st, SQL_MSG_META_RANGE);
		if (s == NULL) {
			rc = -1;
			break;
		}
		sqlite3_bind_int64(s, 1, mbox);
		sqlite3_bind_int64(s, 2, r[i].lo);
		sqlite3_bind_int64(s, 3, r[i].hi);
		while ((rc = store_step(st, s)) == 1) {
			if (*n == *cap) {
				*cap = *cap ? *cap * 2 : 16;
				*v = xrealloc(*v, *cap * sizeof(**v));
			}
			struct store_msg_meta *m = &(*v)[(*n)++];
			m->uid = (uint32_t)sqlite3_column_int64(s, 0);
			m->size = (uint64_t)sqlite3_column_int64(s, 1);
			m->envelope = store_col_dup(s, 2);
			m->bodystructure = store_col_dup(s, 3);
			m->body = store_col_dup(s, 4);
		}
	}
	free(r);
	return rc;
}

int
store_msg_meta(struct store *st, const char *mailbox, uint32_t uidvalidity, uint32_t uid,
	       struct store_msg_meta *r)
{
	struct store_range one = {uid, uid};
	struct store_msg_meta *v = NULL;
	struct store_mbox_row mb;
	size_t n = 0, cap = 0;

	store_clear_error(st);
	memset(r, 0, sizeof(*r));
	if (store_mbox_open(st, mailbox, uidvalidity, &mb) < 0 ||
	    store_meta_collect(st, mb.id, &one, 1, &v, &n, &cap) < 0) {
		store_msg_meta_array_free(&v, n);
		return -1;
	}
	if (n == 0) {
		free(v);
		store_fail(st, STORE_ERR_NOMSG, "no message with UID %u", uid);
		return 0;
	}
	*r = v[0];
	free(v);
	return 1;
}

void
store_msg_meta_free(struct store_msg_meta *r)
{
	free(r->envelope);
	free(r->bodystructure);
	free(r->body);
	memset(r, 0, sizeof(*r));
}

int
store_fetch_meta(struct store *st, const char *mailbox, uint32_t uidvalidity,
		 const struct store_range *set, size_t nset, struct store_msg_meta **r, size_t *n_r)
{
	struct store_mbox_row mb;
	size_t cap = 0;

	store_clear_error(st);
	*r = NULL;
	*n_r = 0;
	if (store_begin(st, 0) < 0)
		return -1;
	if (store_mbox_open(st, mailbox, uidvalidity, &mb) < 0 ||
	    store_meta_collect(st, mb.id, set, nset, r, n_r, &cap) < 0 || store_commit(st) < 0) {
		store_rollback(st);
		store_msg_meta_array_free(r, *n_r);
		*n_r = 0;
		return -1;
	}
	return 0;
}

void
store_msg_meta_array_free(struct store_msg_meta **r, size_t n)
{
	if (*r == NULL)
		return;
	for (size_t i = 0; i < n; i++)
		store_msg_meta_free(&(*r)[i]);
	free(*r);
	*r = NULL;
}

/* --- flags --- */

/*
 * Apply chg to m. Returns 1 if its flags or keywords change (m then holds
 * the new state), 0 if not, -1 when the keywords would overflow.
 */
static int
store_flags_apply(struct store_msg *m, const struct store_flag_change *chg,
		  const struct store_kw *args)
{
	struct store_kw old, nw;
	uint32_t flags = m->flags;

	if (store_kw_parse(&old, m->keywords) < 0)
		return -1;
	if (chg->op == STORE_FLAGS_SET)
		nw.n = 0;
	else
		nw = old;
	switch (chg->op) {
	case STORE_FLAGS_SET:
		flags = chg->flags;
		for (size_t i = 0; i < args->n; i++)
			store_kw_add(&nw, args->p[i], args->len[i]);
		break;
	case STORE_FLAGS_ADD:
		flags |= chg->flags;
		for (size_t i = 0; i < args->n; i++)
			if (store_kw_add(&nw, args->p[i], args->len[i]) < 0)
				return -1;
		break;
	case STORE_FLAGS_REMOVE:
		flags &= ~chg->flags;
		for (size_t i = 0; i < args->n; i++)
			store_kw_remove(&nw, args->p[i], args->len[i]);
		break;
	}
	if (flags == m->flags && store_kw_same(&old, &nw))
		return 0;
	char *kw = store_kw_join(&nw);
	free(m->keywords);
	m->keywords = kw;
	m->flags = flags;
	return 1;
}

int
store_flags(struct store *st, const char *mailbox, uint32_t uidvalidity,
	    const struct store_range *set, size_t nset, const struct store_flag_change *chg,
	    struct store_flag_result *r)
{
	struct store_msgvec mv = {0}, out = {0};
	struct store_mbox_row mb;
	struct store_kw args;
	uint32_t *failed = NULL;
	size_t nfailed = 0, capfailed = 0;
	uint64_t modseq;

	store_clear_error(st);
	memset(r, 0, sizeof(*r));
	if ((chg->op != STORE_FLAGS_SET && chg->op != STORE_FLAGS_ADD &&
	     chg->op != STORE_FLAGS_REMOVE) ||
	    (chg->flags & ~STORE_F_ALL))
		return store_fail(st, STORE_ERR_INVALID, "bad flag change");
	if (store_kw_from_args(st, chg->keywords, chg->nkeywords, &args) < 0)
		return -1;
	if (store_begin(st, 1) < 0)
		return -1;
	if (store_mbox_open(st, mailbox, uidvalidity, &mb) < 0 ||
	    store_collect(st, mb.id, set, nset, &mv) < 0)
		goto fail;
	modseq = mb.highestmodseq + 1;
	for (size_t i = 0; i < mv.n; i++) {
		struct store_msg *m = &mv.v[i];
		/* RFC 7162 §3.1.3: changed since the client looked: leave it, report it. */
		if (chg->unchangedsince_set && m->modseq > chg->unchangedsince) {
			store_uids_push(&failed, &nfailed, &capfailed, m->uid);
			continue;
		}
		int c = store_flags_apply(m, chg, &args);
		if (c < 0) {
			store_fail(st, STORE_ERR_LIMIT, "too many keywords on UID %u", m->uid);
			goto fail;
		}
		if (c == 0)
			continue;
		m->modseq = modseq;
		/* Move the message to out; its keywords now belong there. */
		*store_msgvec_push(&out) = *m;
		m->keywords = NULL;
	}
	if (out.n > 0) {
		if (store_mbox_setseq(st, mb.id, mb.uidnext, modseq) < 0)
			goto fail;
		for (size_t i = 0; i < out.n; i++) {
			sqlite3_stmt *s = store_stmt(st, SQL_MSG_SETFLAGS);
			if (s == NULL)
				goto fail;
			sqlite3_bind_int64(s, 1, mb.id);
			sqlite3_bind_int64(s, 2, out.v[i].uid);
			sqlite3_bind_int(s, 3, (int)out.v[i].flags);
			store_bind_text(s, 4, out.v[i].keywords);
			sqlite3_bind_int64(s, 5, (int64_t)modseq);
			if (store_exec(st, s) < 0)
				goto fail;
		}
	}
	/* Nothing written, nothing to make durable (FETCH asks this of seen mail). */
	if ((out.n > 0 ? store_commit(st) : store_commit_lazy(st)) < 0)
		goto fail;
	store_msgvec_free(&mv);
	r->modseq = out.n > 0 ? modseq : 0;
	r->nchanged = out.n;
	r->changed = out.v;
	free(out.file_id);
	r->nfailed = nfailed;
	r->failed = failed;
	if (out.n > 0)
		store_notify(st, mb.name);
	return 0;
fail:
	store_rollback(st);
	store_msgvec_free(&mv);
	store_msgvec_free(&out);
	free(failed);
	return -1;
}

void
store_flag_result_free(struct store_flag_result *r)
{
	store_msgs_free(r->changed, r->nchanged);
	free(r->failed);
	memset(r, 0, sizeof(*r));
}

/* --- expunge --- */

/* Delete the messages' rows, record them expunged at modseq, release files. */
static int
store_remove_msgs(struct store *st, int64_t mbox, const struct store_msgvec *mv, uint64_t modseq,
		  struct store_names *names)
{
	for (size_t i = 0; i < mv->n; i++) {
		sqlite3_stmt *s = store_stmt(st, SQL_MSG_DELETE);
		if (s == NULL)
			return -1;
		sqlite3_bind_int64(s, 1, mbox);
		sqlite3_bind_int64(s, 2, mv->v[i].uid);
		if (store_exec(st, s) < 0 || (s = store_stmt(st, SQL_EXP_INSERT)) == NULL)
			return -1;
		sqlite3_bind_int64(s, 1, mbox);
		sqlite3_bind_int64(s, 2, mv->v[i].uid);
		sqlite3_bind_int64(s, 3, (int64_t)modseq);
		if (store_exec(st, s) < 0)
			return -1;
	}
	return names != NULL ? store_files_release(st, mv->file_id, mv->n, names) : 0;
}

int
store_expunge(struct store *st, const char *mailbox, uint32_t uidvalidity,
	      const struct store_range *set, size_t nset, unsigned flags, uint32_t **uids_r,
	      size_t *n_r, uint64_t *modseq_r)
{
	static const struct store_range all = {1, UINT32_MAX};
	struct store_msgvec mv = {0}, del = {0};
	struct store_names names = {0};
	struct store_mbox_row mb;
	uint64_t modseq;
	int rc;

	store_clear_error(st);
	*uids_r = NULL;
	*n_r = 0;
	if (flags & ~STORE_EXPUNGE_FORCE)
		return store_fail(st, STORE_ERR_INVALID, "unknown expunge flags");
	if (set == NULL && (flags & STORE_EXPUNGE_FORCE)) {
		set = &all;
		nset = 1;
	}
	if (store_begin(st, 1) < 0)
		return -1;
	if (store_mbox_open(st, mailbox, uidvalidity, &mb) < 0)
		goto fail;
	if (set == NULL) {
		sqlite3_stmt *s = store_stmt(st, SQL_MSG_DELETED);
		if (s == NULL)
			goto fail;
		sqlite3_bind_int64(s, 1, mb.id);
		while ((rc = store_step(st, s)) == 1)
			store_msgvec_add_row(&del, s, 1);
		if (rc < 0)
			goto fail;
	} else {
		if (store_collect(st, mb.id, set, nset, &mv) < 0)
			goto fail;
		for (size_t i = 0; i < mv.n; i++) {
			if (!(mv.v[i].flags & STORE_F_DELETED) && !(flags & STORE_EXPUNGE_FORCE))
				continue;
			*store_msgvec_push(&del) = mv.v[i];
			del.file_id[del.n - 1] = mv.file_id[i];
			mv.v[i].keywords = NULL;
		}
	}
	modseq = mb.highestmodseq;
	if (del.n > 0) {
		modseq++;
		if (store_mbox_setseq(st, mb.id, mb.uidnext, modseq) < 0 ||
		    store_remove_msgs(st, mb.id, &del, modseq, &names) < 0)
			goto fail;
	}
	store_file_mark_dead(st, &names);
	if (store_commit(st) < 0)
		goto fail;
	store_file_unlink(st, &names);
	store_names_free(&names);
	if (del.n > 0) {
		uint32_t *uids = xmalloc(del.n * sizeof(*uids));
		for (size_t i = 0; i < del.n; i++)
			uids[i] = del.v[i].uid;
		*uids_r = uids;
		*n_r = del.n;
		store_notify(st, mb.name);
	}
	if (modseq_r != NULL)
		*modseq_r = modseq;
	store_msgvec_free(&mv);
	store_msgvec_free(&del);
	return 0;
fail:
	store_rollback(st);
	store_names_free(&names);
	store_msgvec_free(&mv);
	store_msgvec_free(&del);
	return -1;
}

/* --- copy and move --- */

int
store_copy(struct store *st, const char *src, uint32_t uidvalidity, const struct store_range *set,
	   size_t nset, const char *dst, int move, struct store_copy_result *r)
{
	return store_copy_quota(st, src, uidvalidity, set, nset, dst, move, 0, r);
}

int
store_copy_quota(struct store *st, const char *src, uint32_t uidvalidity,
		 const struct store_range *set, size_t nset, const char *dst, int move,
		 int64_t quota, struct store_copy_result *r)
{
	struct store_msgvec mv = {0};
	struct store_mbox_row sm, dm;
	uint64_t dmodseq, smodseq;
	uint32_t first;
	int same;

	store_clear_error(st);
	memset(r, 0, sizeof(*r));
	if (store_begin(st, 1) < 0)
		return -1;
	if (store_mbox_open(st, src, uidvalidity, &sm) < 0 || store_mbox_open(st, dst, 0, &dm) < 0)
		goto fail;
	if (store_collect(st, sm.id, set, nset, &mv) < 0)
		goto fail;
	r->uidvalidity = dm.uidvalidity;
	if (mv.n == 0) {
		store_msgvec_free(&mv);
		return store_commit(st) < 0 ? -1 : 0;
	}
	if ((uint64_t)dm.uidnext + mv.n > UINT32_MAX) {
		store_fail(st, STORE_ERR_LIMIT, "destination mailbox UIDs exhausted");
		goto fail;
	}
	if (!move && quota > 0) {
		/* Under the write lock, as store_add_many_quota(). */
		uint64_t used = 0;
		if (store_usage(st, &used, NULL) < 0)
			goto fail;
		for (size_t i = 0; i < mv.n; i++)
			used += mv.v[i].size;
		if (used > (uint64_t)quota) {
			store_fail(st, STORE_ERR_OVERQUOTA, "quota exceeded");
			goto fail;
		}
	}
	same = sm.id == dm.id;
	first = dm.uidnext;
	dmodseq = dm.highestmodseq + 1;
	if (store_mbox_setseq(st, dm.id, first + (uint32_t)mv.n, dmodseq) < 0)
		goto fail;
	for (size_t i = 0; i < mv.n; i++) {
		const struct store_msg *m = &mv.v[i];
		sqlite3_stmt *s = store_stmt(st, SQL_MSG_INSERT);
		if (s == NULL)
			goto fail;
		sqlite3_bind_int64(s, 1, dm.id);
		sqlite3_bind_int64(s, 2, first + (uint32_t)i);
		sqlite3_bind_int64(s, 3, (int64_t)dmodseq);
		sqlite3_bind_int(s, 4, (int)m->flags);
		store_bind_text(s, 5, m->keywords);
		sqlite3_bind_int64(s, 6, m->internal_date);
		sqlite3_bind_int(s, 7, m->internal_tz);
		sqlite3_bind_int64(s, 8, (int64_t)m->size);
		sqlite3_bind_int64(s, 9, mv.file_id[i]);
		sqlite3_bind_int(s, 10, m->noeol);
		if (store_exec(st, s) < 0)
			goto fail;
	}
	if (move) {
		/* The files stay referenced by the copies: nothing to release. */
		smodseq = same ? dmodseq : sm.highestmodseq + 1;
		if ((!same && store_mbox_setseq(st, sm.id, sm.uidnext, smodseq) < 0) ||
		    store_remove_msgs(st, sm.id, &mv, smodseq, NULL) < 0)
			goto fail;
	}
	if (store_commit(st) < 0)
		goto fail;
	r->n = mv.n;
	r->src_uids = xmalloc(mv.n * sizeof(uint32_t));
	r->dst_uids = xmalloc(mv.n * sizeof(uint32_t));
	for (size_t i = 0; i < mv.n; i++) {
		r->src_uids[i] = mv.v[i].uid;
		r->dst_uids[i] = first + (uint32_t)i;
	}
	store_msgvec_free(&mv);
	store_notify(st, dm.name);
	if (move && !same)
		store_notify(st, sm.name);
	return (int)(r->n > INT32_MAX ? INT32_MAX : r->n);
fail:
	store_rollback(st);
	store_msgvec_free(&mv);
	memset(r, 0, sizeof(*r));
	return -1;
}

void
store_copy_result_free(struct store_copy_result *r)
{
	free(r->src_uids);
	free(r->dst_uids);
	memset(r, 0, sizeof(*r));
}

/* --- the full-text index --- */

static store_text_fn store_text_cb;

void
store_set_text_fn(store_text_fn fn)
{
	__atomic_store_n(&store_text_cb, fn, __ATOMIC_RELEASE);
}

int64_t
store_fts_pending(struct store *st)
{
	sqlite3_stmt *s = store_stmt(st, SQL_FTS_COUNT);
	int64_t n;

	if (s == NULL || store_step(st, s) != 1)
		return -1;
	n = sqlite3_column_int64(s, 0);
	sqlite3_reset(s);
	return n;
}

/* Larger message files are indexed empty. */
#define STORE_FTS_FILE_MAX ((size_t)256 << 20)
/* Text held in memory for one index transaction at most (besides the last message). */
#define STORE_FTS_TXN_BYTES (8u << 20)

/*
 * Index ids[0..n) with their texts in one transaction, each only if it is
 * still queued (another handle may have indexed it, an expunge removed it).
 * errs[i] is the errno of a file that could not be read (0: read), logged
 * only for a message still queued: an expunge between the queue's read
 * and the file's is no error.
 */
static int
store_fts_write(struct store *st, const int64_t *ids, struct buf *hdr, struct buf *body,
		const int *errs, size_t n)
{
	sqlite3_stmt *s;
	int rc;

	if (store_begin(st, 1) < 0)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if ((s = store_stmt(st, SQL_FTS_DEQUEUE)) == NULL)
			goto fail;
		sqlite3_bind_int64(s, 1, ids[i]);
		if ((rc = store_step(st, s)) < 0)
			goto fail;
		if (rc == 0)
			continue;
		sqlite3_reset(s);
		if (errs[i] != 0) {
			char path[4096];
			if (store_file_path(st, ids[i], path, sizeof(path)) < 0)
				path[0] = '\0';
			log_error("store %s: full-text index: cannot read %s: %s", st->account,
				  path, strerror(errs[i]));
		}
		if ((s = store_stmt(st, SQL_FTS_INSERT)) == NULL)
			goto fail;
		sqlite3_bind_int64(s, 1, ids[i]);
		sqlite3_bind_text(s, 2, buf_str(&hdr[i]), (int)hdr[i].len, SQLITE_STATIC);
		sqlite3_bind_text(s, 3, buf_str(&body[i]), (int)body[i].len, SQLITE_STATIC);
		if (store_exec(st, s) < 0)
			goto fail;
	}
	/* Index rows and their queue rows go (or stay) together: no flush needed. */
	return store_commit_lazy(st);
fail:
	store_rollback(st);
	return -1;
}

int64_t
store_fts_catch_up(struct store *st, size_t max)
{
	store_text_fn fn = __atomic_load_n(&store_text_cb, __ATOMIC_ACQUIRE);
	int64_t *ids = NULL;
	int *errs = NULL;
	struct buf *hdr = NULL, *body = NULL;
	int64_t done = 0;
	size_t cap = STORE_FTS_CHUNK;

	if (fn == NULL || st->in_txn)
		return 0;
	ids = xcalloc(cap, sizeof(*ids));
	errs = xcalloc(cap, sizeof(*errs));
	hdr = xcalloc(cap, sizeof(*hdr));
	body = xcalloc(cap, sizeof(*body));
	for (;;) {
		size_t want = cap, n = 0, k = 0, bytes = 0;
		int rc;
		if (max != 0 && max - (size_t)done < want)
			want = max - (size_t)done;
		if (want == 0)
			break;
		sqlite3_stmt *s = store_stmt(st, SQL_FTS_PENDING);
		if (s == NULL)
			goto fail;
		sqlite3_bind_int64(s, 1, (int64_t)want);
		while ((rc = store_step(st, s)) == 1)
			if (n < want)
				ids[n++] = sqlite3_column_int64(s, 0);
		if (rc < 0)
			goto fail;
		if (n == 0)
			break;
		/* The files are read with no transaction open: writers go on meanwhile. */
		for (size_t i = 0; i < n; i++) {
			char path[4096];
			size_t len = 0;
			char *data = NULL;
			buf_reset(&hdr[i]);
			buf_reset(&body[i]);
			errno = ENAMETOOLONG;
			if (store_file_path(st, ids[i], path, sizeof(path)) == 0)
				data = util_read_file(path, STORE_FTS_FILE_MAX, &len);
			/* An unreadable file is indexed empty, or it would stay queued forever. */
			errs[i] = data != NULL ? 0 : errno != 0 ? errno : EIO;
			if (data != NULL) {
				(void)fn(data, len, &hdr[i], &body[i]);
				free(data);
			}
			bytes += hdr[i].len + body[i].len;
			if (bytes >= STORE_FTS_TXN_BYTES || i + 1 == n) {
				if (store_fts_write(st, ids + k, hdr + k, body + k, errs + k,
						    i + 1 - k) < 0)
					goto fail;
				for (; k <= i; k++) {
					buf_free(&hdr[k]);
					buf_free(&body[k]);
				}
				bytes = 0;
			}
		}
		done += (int64_t)n;
		if (n < want)
			break;
	}
	free(ids);
	free(errs);
	free(hdr);
	free(body);
	return done;
fail:
	for (size_t i = 0; i < cap; i++) {
		buf_free(&hdr[i]);
		buf_free(&body[i]);
	}
	free(ids);
	free(errs);
	free(hdr);
	free(body);
	return -1;
}

/* --- search and sort --- */

/*
 * The FTS5 query for terms: each a quoted string with '"' doubled and a
 * prefix '*', joined by AND, under a column filter for BODY. Terms that
 * are empty constrain nothing. Returns the number of terms used.
 */
static size_t
store_fts_query(struct buf *q, enum store_fts_scope scope, const char *const *terms, size_t nterms)
{
	size_t used = 0;

	if (scope == STORE_FTS_BODY)
		buf_puts(q, "body : (");
	for (size_t i = 0; i < nterms; i++) {
		if (terms[i] == NULL || terms[i][0] == '\0')
			continue;
		if (used++ > 0)
			buf_puts(q, " AND ");
		buf_putc(q, '"');
		for (const char *p = terms[i]; *p; p++) {
			if (*p == '"')
				buf_putc(q, '"');
			buf_putc(q, *p);
		}
		buf_puts(q, "\" *");
	}
	if (scope == STORE_FTS_BODY)
		buf_putc(q, ')');
	return used;
}

int
store_fts_search(struct store *st, const char *mailbox, uint32_t uidvalidity,
		 enum store_fts_scope scope, const char *const *terms, size_t nterms,
		 uint32_t **uids_r, size_t *n_r)
{
	struct buf q = BUF_INIT(0);
	struct store_mbox_row mb;
	uint32_t *v = NULL;
	size_t n = 0, cap = 0;
	sqlite3_stmt *s;
	int rc;

	store_clear_error(st);
	*uids_r = NULL;
	*n_r = 0;
	if (scope != STORE_FTS_BODY && scope != STORE_FTS_TEXT)
		return store_fail(st, STORE_ERR_INVALID, "bad search scope");
	/* Should indexing fail now (busy, disk full), search what is indexed. */
	if (store_fts_catch_up(st, 0) < 0) {
		log_error("store %s: full-text index: %s", st->account, store_errstr(st));
		store_clear_error(st);
	}
	if (store_mbox_open(st, mailbox, uidvalidity, &mb) < 0)
		return -1;
	if (store_fts_query(&q, scope, terms, nterms) == 0) {
		/* Nothing to look for: every message matches (SEARCH BODY ""). */
		s = store_stmt(st, SQL_MSG_LOAD);
	} else {
		s = store_stmt(st, SQL_MSG_FTS);
		if (s != NULL)
			sqlite3_bind_text(s, 2, buf_str(&q), (int)q.len, SQLITE_STATIC);
	}
	if (s == NULL) {
		buf_free(&q);
		return -1;
	}
	sqlite3_bind_int64(s, 1, mb.id);
	while ((rc = store_step(st, s)) == 1)
		store_uids_push(&v, &n, &cap, (uint32_t)sqlite3_column_int64(s, 0));
	buf_free(&q);
	if (rc < 0) {
		free(v);
		return -1;
	}
	*uids_r = v;
	*n_r = n;
	return 0;
}

static char *
store_col_dup_empty(sqlite3_stmt *s, int i)
{
	const char *v = (const char *)sqlite3_column_text(s, i);

	return xstrdup(v ? v : "");
}

/* Fills one array element from the current row. */
typedef void (*store_row_fn)(sqlite3_stmt *s, void *elem);

/*
 * Run query q (?1 = the mailbox id) over the messages of a mailbox and make
 * one element of size bytes per row with fill. 0, or -1 with *r and *n_r
 * holding what was made so far, for the caller to free.
 */
static int
store_rows(struct store *st, const char *mailbox, uint32_t uidvalidity, enum store_sql q,
	   size_t size, store_row_fn fill, void **r, size_t *n_r)
{
	struct store_mbox_row mb;
	char *v = NULL;
	size_t n = 0, cap = 0;
	sqlite3_stmt *s;
	int rc;

	store_clear_error(st);
	*r = NULL;
	*n_r = 0;
	if (store_mbox_open(st, mailbox, uidvalidity, &mb) < 0 || (s = store_stmt(st, q)) == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, mb.id);
	while ((rc = store_step(st, s)) == 1) {
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			v = xrealloc(v, cap * size);
		}
		fill(s, v + n++ * size);
	}
	*r = v;
	*n_r = n;
	return rc < 0 ? -1 : 0;
}

static void
store_sort_row(sqlite3_stmt *s, void *elem)
{
	struct store_sort_rec *e = elem;

	e->uid = (uint32_t)sqlite3_column_int64(s, 0);
	e->date = sqlite3_column_int64(s, 1);
	e->from = store_col_dup_empty(s, 2);
	e->subject = store_col_dup_empty(s, 3);
	e->to = store_col_dup_empty(s, 4);
	e->cc = store_col_dup_empty(s, 5);
}

int
store_sort_fields(struct store *st, const char *mailbox, uint32_t uidvalidity,
		  struct store_sort_rec **r, size_t *n_r)
{
	if (store_rows(st, mailbox, uidvalidity, SQL_MSG_SORT, sizeof(**r), store_sort_row,
		       (void **)r, n_r) < 0) {
		store_sort_free(r, *n_r);
		return -1;
	}
	return 0;
}

static void
store_search_row(sqlite3_stmt *s, void *elem)
{
	struct store_search_rec *e = elem;

	const char *t = (const char *)sqlite3_column_text(s, 1); /* NULL for NULL */

	e->uid = (uint32_t)sqlite3_column_int64(s, 0);
	e->len = (size_t)sqlite3_column_bytes(s, 1);
	e->hdrs = t != NULL ? xstrndup(t, e->len) : NULL;
}

int
store_search_headers(struct store *st, const char *mailbox, uint32_t uidvalidity,
		     struct store_search_rec **r, size_t *n_r)
{
	if (store_rows(st, mailbox, uidvalidity, SQL_MSG_SEARCH_HDRS, sizeof(**r),
		       store_search_row, (void **)r, n_r) < 0) {
		store_search_free(r, *n_r);
		return -1;
	}
	return 0;
}

void
store_search_free(struct store_search_rec **r, size_t n)
{
	if (*r == NULL)
		return;
	for (size_t i = 0; i < n; i++)
		free((*r)[i].hdrs);
	free(*r);
	*r = NULL;
}

void
store_sort_free(struct store_sort_rec **r, size_t n)
{
	if (*r == NULL)
		return;
	for (size_t i = 0; i < n; i++) {
		free((*r)[i].from);
		free((*r)[i].subject);
		free((*r)[i].to);
		free((*r)[i].cc);
	}
	free(*r);
	*r = NULL;
}
