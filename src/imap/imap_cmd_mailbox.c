/*
 * imap_cmd_mailbox — mailbox commands: SELECT/EXAMINE (with CONDSTORE and
 * QRESYNC parameters), CREATE (with USE, RFC 6154), DELETE, RENAME,
 * SUBSCRIBE, UNSUBSCRIBE, LIST (LIST-EXTENDED, LIST-STATUS, SPECIAL-USE),
 * LSUB, STATUS and the QUOTA commands (RFC 9208); and the mailbox name
 * conversions between the wire (modified UTF-7 for IMAP4rev1, UTF-8 for
 * IMAP4rev2 and UTF8=ACCEPT) and the store (UTF-8, '/' delimiter).
 *
 * Reads (snapshots, listings, STATUS counters) run on the loop; changes
 * (CREATE, DELETE, RENAME, subscriptions) run on the worker pool.
 *
 * SECURITY: names and patterns are peer input: decoded strictly (one
 * spelling per name), length-capped before matching (the matcher is
 * O(pattern x name), never exponential), and validated again by the store.
 */
#include "imap/imap_cmd.h"
#include "imap/imap_utf7.h"

#include "core/config.h"
#include "core/log.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/*
 * Bytes of one LIST pattern after the reference: with a wildcard (matching
 * costs pattern x name), else up to the longest name, which needs no more.
 */
#define PATTERN_MAX 255
#define PATTERNS_MAX 20 /* patterns in one LIST */
/*
 * Cells of (pattern x name) matching one LIST may cost: it runs on the
 * loop every session shares. ~0.1 s; what clients send costs far less.
 */
#define LIST_MATCH_BUDGET 100000000ull

/* ---- names ---- */

void
imap_mbox_canon(char *name)
{
	if (strncasecmp(name, "INBOX", 5) == 0 && (name[5] == '\0' || name[5] == '/'))
		memcpy(name, "INBOX", 5);
}

/* Decode a wire name (or pattern) into UTF-8; 0 or -1 with *err_r. */
static int
imap_name_decode(struct imap_sess *s, const char *str, size_t len, struct buf *out,
		 const char **err_r)
{
	buf_reset(out);
	if (memchr(str, '\0', len) != NULL) {
		*err_r = "Mailbox name contains NUL";
		return -1;
	}
	if (imap_utf8(s)) {
		if (!imap_utf7_utf8_valid(str, len)) {
			*err_r = "Mailbox name is not valid UTF-8";
			return -1;
		}
		buf_append(out, str, len);
	} else if (imap_utf7_decode(str, len, out) < 0) {
		*err_r = "Mailbox name is not valid modified UTF-7 (RFC 3501 5.1.3)";
		return -1;
	}
	if (out->data == NULL)
		buf_puts(out, "");
	return 0;
}

int
imap_mbox_arg(struct imap_sess *s, const struct imap_arg *a, struct buf *name, const char **err_r)
{
	const char *str;
	size_t len;

	if (!imap_arg_astring(a, &str, &len)) {
		*err_r = "Mailbox name expected (atom or string)";
		return -1;
	}
	/*
	 * The limit is on the name, not its spelling: in modified UTF-7 a
	 * name of STORE_NAME_MAX bytes takes up to 5/2 as many (a lone
	 * 2-byte character is "&AOk-"; "é&" is 7 for 3), and LIST shows it so.
	 */
	if (len > STORE_NAME_MAX / 2 * 5) {
		*err_r = "Mailbox name too long";
		return -1;
	}
	if (imap_name_decode(s, str, len, name, err_r) < 0)
		return -1;
	if (name->len > STORE_NAME_MAX) {
		*err_r = "Mailbox name too long";
		return -1;
	}
	imap_mbox_canon(name->data);
	return 0;
}

void
imap_mbox_out(struct imap_sess *s, struct buf *out, const char *name)
{
	if (imap_utf8(s)) {
		imap_quote(out, name, strlen(name), true);
		return;
	}
	struct buf e = BUF_INIT(0);
	if (imap_utf7_encode(name, strlen(name), &e) < 0)
		imap_quote(out, name, strlen(name), false);
	else
		imap_quote(out, buf_str(&e), e.len, false);
	buf_free(&e);
}

static const struct {
	unsigned bit;
	const char *name;
} special_uses[] = {
    {STORE_USE_ALL, "\\All"},	    {STORE_USE_ARCHIVE, "\\Archive"},
    {STORE_USE_DRAFTS, "\\Drafts"}, {STORE_USE_FLAGGED, "\\Flagged"},
    {STORE_USE_JUNK, "\\Junk"},	    {STORE_USE_SENT, "\\Sent"},
    {STORE_USE_TRASH, "\\Trash"},
};

static void
imap_special_use_out(struct buf *out, unsigned use, bool *first)
{
	for (size_t i = 0; i < ARRAY_LEN(special_uses); i++) {
		if (!(use & special_uses[i].bit))
			continue;
		if (!*first)
			buf_putc(out, ' ');
		buf_puts(out, special_uses[i].name);
		*first = false;
	}
}

/* ---- SELECT / EXAMINE ---- */

struct qresync_param {
	bool given;
	uint64_t uidvalidity;
	uint64_t modseq;
	bool have_known;
	struct imap_seqset known; /* as parsed */
};

static int
imap_select_params(struct imap_sess *s, const struct imap_arg *a, bool *condstore,
		   struct qresync_param *q, const char **err_r)
{
	const struct imap_arg *list, *ql;
	size_t n, qn;
	const char *name;

	if (!imap_arg_list(a, &list, &n)) {
		*err_r = "SELECT parameters must be a list";
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		if (!imap_arg_atom(&list[i], &name)) {
			*err_r = "SELECT parameter name expected";
			return -1;
		}
		if (strcasecmp(name, "CONDSTORE") == 0) {
			*condstore = true;
			continue;
		}
		if (strcasecmp(name, "QRESYNC") != 0) {
			*err_r = "Unknown SELECT parameter (CONDSTORE and QRESYNC are known)";
			return -1;
		}
		if (!(s->enabled & EN_QRESYNC)) {
			*err_r = "QRESYNC parameter without ENABLE QRESYNC";
			return -1;
		}
		if (i + 1 >= n || !imap_arg_list(&list[i + 1], &ql, &qn) || qn < 2 || qn > 4 ||
		    !imap_arg_number(&ql[0], &q->uidvalidity) || q->uidvalidity == 0 ||
		    q->uidvalidity > UINT32_MAX || !imap_arg_number(&ql[1], &q->modseq) ||
		    q->modseq == 0) {
			*err_r = "Syntax: QRESYNC (uidvalidity modseq [known-uids [(seqs uids)]])";
			return -1;
		}
		size_t k = 2;
		const char *set;
		if (k < qn && imap_arg_atom(&ql[k], &set)) {
			if (imap_seqset_parse(&q->known, set, ql[k].len, 0, err_r) < 0)
				return -1;
			q->have_known = true;
			k++;
		}
		if (k < qn) {
			/* seq-match-data: checked for shape; our store remembers every
			 * expunge, so it is not needed to narrow VANISHED. */
			const struct imap_arg *ml;
			size_t mn;
			const char *a1, *a2;
			struct imap_seqset t1, t2;
			imap_seqset_init(&t1);
			imap_seqset_init(&t2);
			bool ok = imap_arg_list(&ql[k], &ml, &mn) && mn == 2 &&
				  imap_arg_atom(&ml[0], &a1) && imap_arg_atom(&ml[1], &a2) &&
				  imap_seqset_parse(&t1, a1, ml[0].len, 0, err_r) == 0 &&
				  imap_seqset_parse(&t2, a2, ml[1].len, 0, err_r) == 0;
			imap_seqset_free(&t1);
			imap_seqset_free(&t2);
			if (!ok || k + 1 != qn) {
				*err_r = "QRESYNC: bad sequence match data";
				return -1;
			}
		}
		q->given = true;
		i++;
	}
	return 0;
}

/* Deselect the current mailbox, if any; 1 if one was selected. */
static int
imap_deselect(struct imap_sess *s)
{
	if (s->sel == NULL)
		return 0;
	imap_sel_free(&s->sel);
	imap_seqset_clear(&s->saved);
	s->saved_valid = false;
	imap_set_state(s, IS_AUTH);
	return 1;
}

/* QRESYNC: VANISHED (EARLIER) and FETCH for what changed since the client's state. */
static void
imap_select_qresync(struct imap_sess *s, const struct qresync_param *q)
{
	struct imap_mbox *m = s->sel;
	struct store_changes ch;
	struct imap_seqset known, vanished;
	struct buf b = BUF_INIT(0);

	if (q->uidvalidity != m->view.uidvalidity)
		return; /* the client must resynchronise fully */
	if (store_changes_since(s->st, m->name, m->view.uidvalidity, q->modseq, &ch) < 0) {
		log_msg(LL_WARN, s->c->id, "QRESYNC changes failed: %s", store_errstr(s->st));
		return;
	}
	imap_seqset_init(&known);
	imap_seqset_init(&vanished);
	if (q->have_known)
		imap_seqset_resolve(&q->known, m->view.uidnext > 1 ? m->view.uidnext - 1 : 0, NULL,
				    &known);
	for (size_t i = 0; i < ch.nexpunged; i++)
		if (!q->have_known || imap_seqset_contains(&known, ch.expunged[i]))
			imap_seqset_add(&vanished, ch.expunged[i], ch.expunged[i]);
	imap_seqset_normalize(&vanished);
	if (vanished.count > 0) {
		buf_puts(&b, "* VANISHED (EARLIER) ");
		imap_seqset_format(&vanished, &b);
		buf_puts(&b, "\r\n");
	}
	for (size_t i = 0; i < ch.nmsgs; i++) {
		ssize_t idx = imap_sel_find(m, ch.msgs[i].uid);
		if (idx < 0 || (q->have_known && !imap_seqset_contains(&known, ch.msgs[i].uid)))
			continue;
		/* The view's state, which the next poll brings up to date. */
		const struct store_msg *msg = &m->view.msgs[idx];
		buf_printf(&b, "* %zd FETCH (UID %u FLAGS ", idx + 1, msg->uid);
		imap_flags_list(&b, msg->flags, imap_sel_recent(s, msg->uid), msg->keywords);
		buf_printf(&b, " MODSEQ (%llu))\r\n", (unsigned long long)msg->modseq);
		if (b.len > 65536)
			imap_write_buf(s, &b);
	}
	imap_write_buf(s, &b);
	buf_free(&b);
	imap_seqset_free(&known);
	imap_seqset_free(&vanished);
	store_changes_free(&ch);
}

/* SELECT/EXAMINE: the snapshot is loaded on a worker (a large mailbox takes milliseconds). */
struct select_job {
	struct imap_job j;
	char *name;
	bool readonly;
	bool condstore;
	struct qresync_param q;
	struct store_mbox_view *v;
	uint32_t recent_lo, recent_hi; /* the \Recent UIDs [lo, hi) */
	bool recent_failed;	       /* errmsg says why none were taken */
	enum store_err err;
	char errmsg[256];
};

static void
select_work(struct imap_job *jj)
{
	struct select_job *j = (struct select_job *)jj;
	struct store_mbox_view *v;

	if (store_mailbox_load(j->j.st, j->name, &j->v) < 0) {
		j->err = store_errcode(j->j.st);
		xsnprintf(j->errmsg, sizeof(j->errmsg), "%.200s", store_errstr(j->j.st));
		return;
	}
	v = j->v;
	j->recent_lo = v->recent_uid;
	j->recent_hi = v->uidnext;
	/*
	 * RFC 3501 §6.3.2: EXAMINE must not make messages lose \Recent. SELECT
	 * takes them: from the snapshot's watermark up to what UIDNEXT is now,
	 * unless another session took them first. A failure leaves them
	 * \Recent for the next session, which is the RFC's way when unsure.
	 */
	if (j->readonly || v->recent_uid >= v->uidnext)
		return;
	if (store_mailbox_claim_recent(j->j.st, j->name, v->uidvalidity, 0, &j->recent_lo,
				       &j->recent_hi) < 0) {
		j->recent_failed = true;
		xsnprintf(j->errmsg, sizeof(j->errmsg), "%.200s", store_errstr(j->j.st));
	}
}

static void
select_done(struct imap_sess *s, struct imap_job *jj)
{
	struct select_job *j = (struct select_job *)jj;
	struct store_mbox_view *v = j->v;
	const char *cmd = j->readonly ? "EXAMINE" : "SELECT";
	struct buf b = BUF_INIT(0);

	if (v == NULL) {
		imap_done_store(s, cmd, j->err, j->errmsg);
		return;
	}
	j->v = NULL;
	if (j->condstore)
		s->enabled |= EN_CONDSTORE;

	struct imap_mbox *m = xcalloc(1, sizeof(*m));
	m->name = j->name;
	j->name = NULL;
	m->readonly = j->readonly;
	m->view = *v;
	m->cap = v->count;
	m->mark = xcalloc(v->count ? v->count : 1, 1);
	m->modseq = v->highestmodseq;
	m->exists_sent = (uint32_t)v->count;
	imap_seqset_init(&m->recent);
	if (j->recent_failed)
		log_msg(LL_WARN, s->c->id, "SELECT: no \\Recent taken user=%s: %s", s->user,
			j->errmsg);
	if (j->recent_lo < j->recent_hi) {
		imap_seqset_add(&m->recent, j->recent_lo, j->recent_hi - 1);
		imap_seqset_normalize(&m->recent);
	}
	m->recent_next = j->recent_hi > v->uidnext ? j->recent_hi : v->uidnext;
	m->recent_sent = imap_sel_recent_count(m);
	free(v);
	s->sel = m;
	imap_set_state(s, IS_SELECTED);
	imap_sel_init_keywords(m);
	imap_sel_send_flags(s);
	buf_printf(&b, "* %zu EXISTS\r\n", m->view.count);
	if (!(s->enabled & EN_REV2)) {
		buf_printf(&b, "* %u RECENT\r\n", m->recent_sent);
		for (size_t i = 0; i < m->view.count; i++) {
			if (!(m->view.msgs[i].flags & STORE_F_SEEN)) {
				buf_printf(&b, "* OK [UNSEEN %zu] First unseen.\r\n", i + 1);
				break;
			}
		}
	}
	buf_printf(&b, "* OK [UIDVALIDITY %u] UIDs valid\r\n", m->view.uidvalidity);
	buf_printf(&b, "* OK [UIDNEXT %u] Predicted next UID\r\n", m->view.uidnext);
	buf_printf(&b, "* OK [HIGHESTMODSEQ %llu] Highest\r\n", (unsigned long long)m->modseq);
	if (s->enabled & EN_REV2) {
		buf_puts(&b, "* LIST () \"/\" ");
		imap_mbox_out(s, &b, m->name);
		buf_puts(&b, "\r\n");
	}
	imap_write_buf(s, &b);
	buf_free(&b);
	if (j->q.given)
		imap_select_qresync(s, &j->q);
	imap_done(s, "OK", "[%s] %s completed", j->readonly ? "READ-ONLY" : "READ-WRITE", cmd);
}

static void
select_free(struct imap_job *jj)
{
	struct select_job *j = (struct select_job *)jj;

	store_mbox_view_free(&j->v);
	free(j->name);
	imap_seqset_free(&j->q.known);
	free(j);
}

static void
imap_select(struct imap_sess *s, const struct imap_arg *args, bool readonly)
{
	struct select_job *j = xcalloc(1, sizeof(*j));
	struct buf name = BUF_INIT(0);
	const char *err = NULL;

	j->readonly = readonly;
	imap_seqset_init(&j->q.known);
	if (imap_mbox_arg(s, &args[0], &name, &err) < 0 ||
	    (!imap_arg_is_eol(&args[1]) &&
	     (imap_select_params(s, &args[1], &j->condstore, &j->q, &err) < 0 ||
	      !imap_arg_is_eol(&args[2])))) {
		imap_done(s, "BAD", "%s: %s", readonly ? "EXAMINE" : "SELECT",
			  err ? err : "Syntax: mailbox [(parameters)]");
		buf_free(&name);
		select_free(&j->j);
		return;
	}
	/* RFC 9051 §6.3.2: a failed SELECT leaves no mailbox selected. */
	if (imap_deselect(s))
		imap_puts(s, "* OK [CLOSED] Previous mailbox closed.\r\n");
	j->name = buf_steal(&name);
	buf_free(&name);
	j->j.work = select_work;
	j->j.done = select_done;
	j->j.free = select_free;
	imap_job_run(s, &j->j);
}

void
imap_cmd_select(struct imap_sess *s, const struct imap_arg *args)
{
	imap_select(s, args, false);
}

void
imap_cmd_examine(struct imap_sess *s, const struct imap_arg *args)
{
	imap_select(s, args, true);
}

/* ---- CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE ---- */

enum mbox_op { MB_CREATE, MB_DELETE, MB_RENAME, MB_SUBSCRIBE, MB_UNSUBSCRIBE };

static const char *const mbox_op_names[] = {"CREATE", "DELETE", "RENAME", "SUBSCRIBE",
					    "UNSUBSCRIBE"};

struct mbox_job {
	struct imap_job j;
	enum mbox_op op;
	char *name, *name2;
	unsigned use;
	int rc;
	enum store_err err;
	char errmsg[256];
};

static void
mbox_work(struct imap_job *jj)
{
	struct mbox_job *j = (struct mbox_job *)jj;

	switch (j->op) {
	case MB_CREATE:
		j->rc = store_mailbox_create(j->j.st, j->name, j->use);
		break;
	case MB_DELETE:
		j->rc = store_mailbox_delete(j->j.st, j->name);
		break;
	case MB_RENAME:
		j->rc = store_mailbox_rename(j->j.st, j->name, j->name2);
		break;
	case MB_SUBSCRIBE:
	case MB_UNSUBSCRIBE:
		j->rc = store_mailbox_subscribe(j->j.st, j->name, j->op == MB_SUBSCRIBE);
		break;
	}
	if (j->rc < 0) {
		j->err = store_errcode(j->j.st);
		xsnprintf(j->errmsg, sizeof(j->errmsg), "%.200s", store_errstr(j->j.st));
	}
}

/*
 * Whether op on name takes the selected mailbox away: RENAME of it or of
 * one of its superiors (inferiors move along), DELETE of it only (a
 * superior's DELETE leaves its inferiors, RFC 9051 6.3.4).
 */
static bool
imap_affects_selected(const struct imap_sess *s, enum mbox_op op, const char *name)
{
	if (s->sel == NULL)
		return false;
	size_t n = strlen(name);
	return strcmp(s->sel->name, name) == 0 ||
	       (op == MB_RENAME && strncmp(s->sel->name, name, n) == 0 && s->sel->name[n] == '/');
}

static void
mbox_done(struct imap_sess *s, struct imap_job *jj)
{
	struct mbox_job *j = (struct mbox_job *)jj;
	const char *what = mbox_op_names[j->op];

	if (j->rc < 0) {
		imap_done_store(s, what, j->err, j->errmsg);
		return;
	}
	if ((j->op == MB_DELETE || j->op == MB_RENAME) &&
	    imap_affects_selected(s, j->op, j->name)) {
		/* Our own mailbox went away under us: deselect instead of BYE. */
		imap_deselect(s);
		imap_puts(s, "* OK [CLOSED] Selected mailbox was deleted or renamed.\r\n");
	}
	imap_done(s, "OK", "%s completed", what);
}

static void
mbox_free(struct imap_job *jj)
{
	struct mbox_job *j = (struct mbox_job *)jj;
	free(j->name);
	free(j->name2);
	free(j);
}

static void
imap_mbox_job(struct imap_sess *s, enum mbox_op op, struct buf *name, struct buf *name2,
	      unsigned use)
{
	struct mbox_job *j = xcalloc(1, sizeof(*j));

	j->op = op;
	j->name = buf_steal(name);
	j->name2 = name2 ? buf_steal(name2) : NULL;
	j->use = use;
	j->j.work = mbox_work;
	j->j.done = mbox_done;
	j->j.free = mbox_free;
	imap_job_run(s, &j->j);
}

void
imap_cmd_create(struct imap_sess *s, const struct imap_arg *args)
{
	struct buf name = BUF_INIT(0);
	const char *err = "Syntax: CREATE mailbox [(USE (attributes))]";
	unsigned use = 0;

	if (imap_mbox_arg(s, &args[0], &name, &err) < 0)
		goto bad;
	if (!imap_arg_is_eol(&args[1])) {
		const struct imap_arg *pl, *ul;
		size_t pn, un;
		const char *w;
		if (!imap_arg_list(&args[1], &pl, &pn) || !imap_arg_is_eol(&args[2]) || pn != 2 ||
		    !imap_arg_atom(&pl[0], &w) || strcasecmp(w, "USE") != 0 ||
		    !imap_arg_list(&pl[1], &ul, &un))
			goto bad;
		for (size_t i = 0; i < un; i++) {
			unsigned bit = 0;
			if (imap_arg_atom(&ul[i], &w))
				for (size_t k = 0; k < ARRAY_LEN(special_uses); k++)
					if (strcasecmp(w, special_uses[k].name) == 0)
						bit = special_uses[k].bit;
			if (bit == 0) {
				buf_free(&name);
				imap_done(s, "NO", "[USEATTR] Unknown special-use attribute");
				return;
			}
			use |= bit;
		}
	}
	/* A trailing delimiter only declares the intent to create inferiors. */
	while (name.len > 1 && name.data[name.len - 1] == '/')
		buf_truncate(&name, name.len - 1);
	if (name.len == 0) {
		buf_free(&name);
		imap_done(s, "NO", "[CANNOT] Empty mailbox name");
		return;
	}
	imap_mbox_job(s, MB_CREATE, &name, NULL, use);
	return;
bad:
	buf_free(&name);
	imap_done(s, "BAD", "CREATE: %s", err);
}

void
imap_cmd_delete(struct imap_sess *s, const struct imap_arg *args)
{
	struct buf name = BUF_INIT(0);
	const char *err = "Syntax: DELETE mailbox";

	if (imap_mbox_arg(s, &args[0], &name, &err) < 0 || !imap_arg_is_eol(&args[1])) {
		buf_free(&name);
		imap_done(s, "BAD", "DELETE: %s", err);
		return;
	}
	imap_mbox_job(s, MB_DELETE, &name, NULL, 0);
}

void
imap_cmd_rename(struct imap_sess *s, const struct imap_arg *args)
{
	struct buf from = BUF_INIT(0), to = BUF_INIT(0);
	const char *err = "Syntax: RENAME from to";

	if (imap_mbox_arg(s, &args[0], &from, &err) < 0 ||
	    imap_mbox_arg(s, &args[1], &to, &err) < 0 || !imap_arg_is_eol(&args[2])) {
		buf_free(&from);
		buf_free(&to);
		imap_done(s, "BAD", "RENAME: %s", err);
		return;
	}
	while (to.len > 1 && to.data[to.len - 1] == '/')
		buf_truncate(&to, to.len - 1);
	imap_mbox_job(s, MB_RENAME, &from, &to, 0);
}

static void
imap_subscribe(struct imap_sess *s, const struct imap_arg *args, bool on)
{
	struct buf name = BUF_INIT(0);
	const char *err = on ? "Syntax: SUBSCRIBE mailbox" : "Syntax: UNSUBSCRIBE mailbox";

	if (imap_mbox_arg(s, &args[0], &name, &err) < 0 || !imap_arg_is_eol(&args[1])) {
		buf_free(&name);
		imap_done(s, "BAD", "%s", err);
		return;
	}
	imap_mbox_job(s, on ? MB_SUBSCRIBE : MB_UNSUBSCRIBE, &name, NULL, 0);
}

void
imap_cmd_subscribe(struct imap_sess *s, const struct imap_arg *args)
{
	imap_subscribe(s, args, true);
}

void
imap_cmd_unsubscribe(struct imap_sess *s, const struct imap_arg *args)
{
	imap_subscribe(s, args, false);
}

/* ---- STATUS ---- */

#define SI_MESSAGES 0x001u
#define SI_UIDNEXT 0x002u
#define SI_UIDVALIDITY 0x004u
#define SI_UNSEEN 0x008u
#define SI_DELETED 0x010u
#define SI_SIZE 0x020u
#define SI_HIGHESTMODSEQ 0x040u
#define SI_RECENT 0x080u
#define SI_APPENDLIMIT 0x100u

static const struct {
	unsigned bit;
	const char *name;
} status_items[] = {
    {SI_MESSAGES, "MESSAGES"},	     {SI_UIDNEXT, "UIDNEXT"},
    {SI_UIDVALIDITY, "UIDVALIDITY"}, {SI_UNSEEN, "UNSEEN"},
    {SI_DELETED, "DELETED"},	     {SI_SIZE, "SIZE"},
    {SI_RECENT, "RECENT"},	     {SI_HIGHESTMODSEQ, "HIGHESTMODSEQ"},
    {SI_APPENDLIMIT, "APPENDLIMIT"},
};

static int
imap_status_items(const struct imap_arg *a, unsigned *items_r, const char **err_r)
{
	const struct imap_arg *l;
	size_t n;
	const char *w;

	*items_r = 0;
	if (!imap_arg_list(a, &l, &n) || n == 0) {
		*err_r = "STATUS items must be a non-empty list";
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		unsigned bit = 0;
		if (imap_arg_atom(&l[i], &w))
			for (size_t k = 0; k < ARRAY_LEN(status_items); k++)
				if (strcasecmp(w, status_items[k].name) == 0)
					bit = status_items[k].bit;
		if (bit == 0) {
			*err_r = "Unknown STATUS item";
			return -1;
		}
		*items_r |= bit;
	}
	return 0;
}

static void
imap_status_out(struct imap_sess *s, struct buf *b, const char *name, unsigned items,
		const struct store_status *st)
{
	const char *sep = "";

	buf_puts(b, "* STATUS ");
	imap_mbox_out(s, b, name);
	buf_puts(b, " (");
	for (size_t k = 0; k < ARRAY_LEN(status_items); k++) {
		unsigned bit = status_items[k].bit;
		if (!(items & bit))
			continue;
		unsigned long long v = 0;
		switch (bit) {
		case SI_MESSAGES:
			v = st->messages;
			break;
		case SI_UIDNEXT:
			v = st->uidnext;
			break;
		case SI_UIDVALIDITY:
			v = st->uidvalidity;
			break;
		case SI_UNSEEN:
			v = st->unseen;
			break;
		case SI_DELETED:
			v = st->deleted;
			break;
		case SI_SIZE:
			v = st->size;
			break;
		case SI_HIGHESTMODSEQ:
			v = st->highestmodseq;
			break;
		case SI_RECENT:
			v = st->recent;
			break;
		case SI_APPENDLIMIT:
			v = (unsigned long long)s->srv->cfg->imap_max_literal;
			break;
		}
		buf_printf(b, "%s%s %llu", sep, status_items[k].name, v);
		sep = " ";
	}
	buf_puts(b, ")\r\n");
}

void
imap_cmd_status(struct imap_sess *s, const struct imap_arg *args)
{
	struct buf name = BUF_INIT(0), b = BUF_INIT(0);
	const char *err = "Syntax: STATUS mailbox (items)";
	unsigned items;
	struct store_status st;

	if (imap_mbox_arg(s, &args[0], &name, &err) < 0 ||
	    imap_status_items(&args[1], &items, &err) < 0 || !imap_arg_is_eol(&args[2])) {
		buf_free(&name);
		imap_done(s, "BAD", "STATUS: %s", err);
		return;
	}
	if (items & SI_HIGHESTMODSEQ)
		imap_enable_condstore(s);
	if (store_mailbox_status(s->st, name.data, &st) < 0) {
		buf_free(&name);
		imap_done_store_err(s, "STATUS");
		return;
	}
	imap_status_out(s, &b, name.data, items, &st);
	imap_write_buf(s, &b);
	buf_free(&b);
	buf_free(&name);
	imap_done(s, "OK", "STATUS completed");
}

/* ---- LIST / LSUB ---- */

/*
 * Whether name matches pattern ('*' anything, '%' anything but '/').
 * Dynamic programming, O(pattern x name); without a wildcard, a compare.
 * The "INBOX" of an INBOX name matches case-insensitively.
 */
static bool
imap_list_match(const char *pat, const char *name)
{
	size_t pl = strlen(pat), nl = strlen(name);
	size_t ci = (strncmp(name, "INBOX", 5) == 0 && (name[5] == '\0' || name[5] == '/')) ? 5 : 0;
	if (strpbrk(pat, "*%") == NULL)
		return pl == nl && strncasecmp(pat, name, ci) == 0 && strcmp(pat + ci, name + ci) == 0;
	bool *prev = xcalloc(nl + 1, sizeof(bool)), *cur = xcalloc(nl + 1, sizeof(bool));
	bool r;

	prev[0] = true;
	for (size_t i = 0; i < pl; i++) {
		char pc = pat[i];
		cur[0] = (pc == '*' || pc == '%') && prev[0];
		for (size_t j = 1; j <= nl; j++) {
			char nc = name[j - 1];
			if (pc == '*')
				cur[j] = prev[j] || cur[j - 1];
			else if (pc == '%')
				cur[j] = prev[j] || (cur[j - 1] && nc != '/');
			else if (j - 1 < ci)
				cur[j] = prev[j - 1] &&
					 toupper((unsigned char)pc) == toupper((unsigned char)nc);
			else
				cur[j] = prev[j - 1] && pc == nc;
		}
		bool *t = prev;
		prev = cur;
		cur = t;
	}
	r = prev[nl];
	free(prev);
	free(cur);
	return r;
}

#define LSEL_SUBSCRIBED 0x01u
#define LSEL_RECURSIVE 0x02u
#define LSEL_SPECIAL 0x04u
#define LRET_SUBSCRIBED 0x01u
#define LRET_CHILDREN 0x02u
#define LRET_SPECIAL 0x04u
#define LRET_STATUS 0x08u

struct list_req {
	unsigned sel, ret, status_items;
	bool extended; /* selection or return options were given */
	bool lsub;
	char **pats;
	size_t npats;
};

static bool
imap_list_matches_any(const struct list_req *r, const char *name)
{
	for (size_t i = 0; i < r->npats; i++)
		if (imap_list_match(r->pats[i], name))
			return true;
	return false;
}

/*
 * Where name sorts against the inferiors of sup ("sup/..."): <0 before them,
 * 0 one of them, >0 after. In strcmp order, the names under a prefix are one
 * contiguous run, so a binary search finds them.
 */
static int
imap_list_cmp_under(const char *name, const char *sup, size_t sl)
{
	int c = strncmp(name, sup, sl);
	return c != 0 ? c : (int)(unsigned char)name[sl] - '/';
}

/* next[k]: the first subscribed entry at or after k, n if none. Caller frees. */
static size_t *
imap_list_next_sub(const struct store_mbox_info *list, size_t n)
{
	size_t *next = xcalloc(n + 1, sizeof(*next));

	next[n] = n;
	for (size_t k = n; k-- > 0;)
		next[k] = (list[k].attrs & STORE_MBOX_SUBSCRIBED) ? k : next[k + 1];
	return next;
}

/*
 * Any subscribed inferior of entry i in the sorted listing? Its inferiors
 * are the run after it that starts with "name/": a binary search finds where
 * the run starts, next[] the first subscribed entry from there. O(log n), so
 * RECURSIVEMATCH over n names is O(n log n), not a scan per name.
 */
static bool
imap_list_sub_child(const struct store_mbox_info *list, size_t n, const size_t *next, size_t i)
{
	const char *sup = list[i].name;
	size_t sl = strlen(sup), lo = i + 1, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (imap_list_cmp_under(list[mid].name, sup, sl) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	size_t k = next[lo];
	return k < n && imap_list_cmp_under(list[k].name, sup, sl) == 0;
}

/* A set of names built by adding, then sorted and made unique once. */
struct list_names {
	char **v;
	size_t n, cap;
};

static void
imap_list_names_add(struct list_names *set, const char *name)
{
	if (set->n == set->cap) {
		set->cap = set->cap ? set->cap * 2 : 16;
		set->v = xrealloc(set->v, set->cap * sizeof(*set->v));
	}
	set->v[set->n++] = xstrdup(name);
}

static int
imap_list_names_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sort and drop duplicates: O(n log n), where a check against each kept one was O(n^2). */
static void
imap_list_names_sort(struct list_names *set)
{
	size_t k = 0;

	if (set->n == 0)
		return; /* qsort's array may not be NULL */
	qsort(set->v, set->n, sizeof(*set->v), imap_list_names_cmp);
	for (size_t i = 0; i < set->n; i++) {
		if (k > 0 && strcmp(set->v[k - 1], set->v[i]) == 0)
			free(set->v[i]);
		else
			set->v[k++] = set->v[i];
	}
	set->n = k;
}

static void
imap_list_names_free(struct list_names *set)
{
	for (size_t i = 0; i < set->n; i++)
		free(set->v[i]);
	free(set->v);
	*set = (struct list_names){0};
}

static void
imap_list_line(struct imap_sess *s, struct buf *b, const struct list_req *r,
	       const struct store_mbox_info *e, bool childinfo, bool noselect_only)
{
	bool first = true;
	unsigned a = e->attrs;

	buf_puts(b, r->lsub ? "* LSUB (" : "* LIST (");
#define ATTR(str)                                                                                  \
	do {                                                                                       \
		if (!first)                                                                        \
			buf_putc(b, ' ');                                                          \
		buf_puts(b, str);                                                                  \
		first = false;                                                                     \
	} while (0)
	if (noselect_only || (r->lsub && (a & STORE_MBOX_NONEXISTENT))) {
		/* LSUB is RFC 3501's, which has no \NonExistent (as Dovecot). */
		ATTR("\\Noselect");
	} else if (a & STORE_MBOX_NONEXISTENT) {
		ATTR("\\NonExistent");
	} else {
		if (a & STORE_MBOX_NOSELECT)
			ATTR("\\Noselect");
		if (!r->lsub)
			ATTR((a & STORE_MBOX_HASCHILDREN) ? "\\HasChildren" : "\\HasNoChildren");
	}
	if (!r->lsub && !noselect_only &&
	    ((a & STORE_MBOX_SUBSCRIBED) &&
	     ((r->ret & LRET_SUBSCRIBED) || (r->sel & LSEL_SUBSCRIBED))))
		ATTR("\\Subscribed");
	if (!r->lsub && !noselect_only && !(a & STORE_MBOX_NONEXISTENT))
		imap_special_use_out(b, e->special_use, &first);
#undef ATTR
	buf_puts(b, ") \"/\" ");
	imap_mbox_out(s, b, e->name);
	if (childinfo)
		buf_puts(b, " (\"CHILDINFO\" (\"SUBSCRIBED\"))");
	buf_puts(b, "\r\n");
}

static int
imap_list_info_cmp(const void *a, const void *b)
{
	return strcmp(((const struct store_mbox_info *)a)->name,
		      ((const struct store_mbox_info *)b)->name);
}

/*
 * RECURSIVEMATCH: a superior of a subscribed name may be no row at all
 * (neither a mailbox nor a subscription), yet it has a subscribed inferior,
 * so it is listed as \NonExistent with CHILDINFO (RFC 5258 section 3, the
 * table in RFC 9051 section 6.3.9). The rows themselves the caller lists.
 */
static void
imap_list_missing_superiors(struct imap_sess *s, struct buf *b, const struct list_req *r,
			    const struct store_mbox_info *list, size_t n)
{
	struct list_names set = {0};

	for (size_t i = 0; i < n; i++) {
		if (!(list[i].attrs & STORE_MBOX_SUBSCRIBED))
			continue;
		char *p = xstrdup(list[i].name);
		char *slash;
		while ((slash = strrchr(p, '/')) != NULL) {
			*slash = '\0';
			struct store_mbox_info pe = {p, STORE_MBOX_NONEXISTENT, 0};
			if (imap_list_matches_any(r, p) &&
			    bsearch(&pe, list, n, sizeof(*list), imap_list_info_cmp) == NULL)
				imap_list_names_add(&set, p);
		}
		free(p);
	}
	imap_list_names_sort(&set);
	for (size_t k = 0; k < set.n; k++) {
		struct store_mbox_info pe = {set.v[k], STORE_MBOX_NONEXISTENT, 0};
		imap_list_line(s, b, r, &pe, true, false);
		if (b->len > 65536)
			imap_write_buf(s, b);
	}
	imap_list_names_free(&set);
}

/*
 * An upper bound on the steps of r over list: a name is matched itself and,
 * by LSUB and RECURSIVEMATCH, as each of its superiors, each costing the
 * wildcard patterns' bytes (a literal pattern is a compare, as cheap as a
 * scan) plus, where superiors are walked, a binary search of the listing.
 */
static bool
imap_list_too_costly(const struct list_req *r, const struct store_mbox_info *list, size_t n)
{
	unsigned long long per = 0, nlen = 0;

	for (size_t i = 0; i < r->npats; i++)
		if (strpbrk(r->pats[i], "*%") != NULL)
			per += strlen(r->pats[i]);
	if (r->lsub || (r->sel & LSEL_RECURSIVE))
		for (size_t m = n; m > 0; m /= 2)
			per++;
	for (size_t i = 0; i < n; i++) {
		size_t levels = 1;
		for (const char *p = list[i].name; (p = strchr(p, '/')) != NULL; p++)
			levels++;
		nlen += (unsigned long long)strlen(list[i].name) * levels;
	}
	return per > 0 && nlen > LIST_MATCH_BUDGET / per;
}

/*
 * LSUB of a subscribed name the patterns miss: its nearest superior they
 * match, unless that is itself listed, goes into set, to be listed as
 * \Noselect ('%' stops at a superior, RFC 3501 6.3.9).
 */
static void
imap_lsub_superior(const struct list_req *r, const struct store_mbox_info *list, size_t n,
		   const char *name, struct list_names *set)
{
	char *p = xstrdup(name);
	char *slash;

	while ((slash = strrchr(p, '/')) != NULL) {
		*slash = '\0';
		if (!imap_list_matches_any(r, p))
			continue;
		struct store_mbox_info pe = {p, 0, 0};
		const struct store_mbox_info *e =
		    bsearch(&pe, list, n, sizeof(*list), imap_list_info_cmp);
		if (e == NULL || !(e->attrs & STORE_MBOX_SUBSCRIBED))
			imap_list_names_add(set, p);
		break;
	}
	free(p);
}

static void
imap_list_run(struct imap_sess *s, struct list_req *r)
{
	struct store_mbox_info *list = NULL;
	size_t n = 0, *next = NULL;
	struct buf b = BUF_INIT(0);
	struct list_names sup = {0}; /* LSUB: \Noselect superiors */

	if (store_mailbox_list(s->st, &list, &n) < 0) {
		imap_done_store_err(s, r->lsub ? "LSUB" : "LIST");
		return;
	}
	if (imap_list_too_costly(r, list, n)) {
		store_mailbox_list_free(&list, n);
		imap_done(s, "NO", "[LIMIT] Listing %zu mailboxes with these patterns costs too much",
			  n);
		return;
	}
	if (!r->lsub && (r->sel & LSEL_SUBSCRIBED) && (r->sel & LSEL_RECURSIVE))
		next = imap_list_next_sub(list, n);
	for (size_t i = 0; i < n; i++) {
		const struct store_mbox_info *e = &list[i];
		bool sub = (e->attrs & STORE_MBOX_SUBSCRIBED) != 0;
		bool childinfo = false;

		if (r->lsub) {
			if (sub && imap_list_matches_any(r, e->name))
				imap_list_line(s, &b, r, e, false, false);
			else if (sub)
				imap_lsub_superior(r, list, n, e->name, &sup);
		} else {
			if (!imap_list_matches_any(r, e->name))
				continue;
			if ((r->sel & LSEL_SPECIAL) && e->special_use == 0)
				continue;
			if (r->sel & LSEL_SUBSCRIBED) {
				if (!sub) {
					if (!(r->sel & LSEL_RECURSIVE) ||
					    !imap_list_sub_child(list, n, next, i))
						continue;
					childinfo = true;
				} else if ((r->sel & LSEL_RECURSIVE) &&
					   imap_list_sub_child(list, n, next, i)) {
					childinfo = true;
				}
			} else if (e->attrs & STORE_MBOX_NONEXISTENT) {
				continue;
			}
			imap_list_line(s, &b, r, e, childinfo, false);
			if ((r->ret & LRET_STATUS) &&
			    !(e->attrs & (STORE_MBOX_NOSELECT | STORE_MBOX_NONEXISTENT))) {
				struct store_status st;
				if (store_mailbox_status(s->st, e->name, &st) == 0)
					imap_status_out(s, &b, e->name, r->status_items, &st);
			}
		}
		if (b.len > 65536)
			imap_write_buf(s, &b);
	}
	imap_list_names_sort(&sup);
	for (size_t k = 0; k < sup.n; k++) {
		struct store_mbox_info pe = {sup.v[k], 0, 0};
		imap_list_line(s, &b, r, &pe, false, true);
		if (b.len > 65536)
			imap_write_buf(s, &b);
	}
	/* With SPECIAL-USE too the inferior would need a use, which only a mailbox has. */
	if (!r->lsub && (r->sel & (LSEL_SUBSCRIBED | LSEL_RECURSIVE | LSEL_SPECIAL)) ==
			    (LSEL_SUBSCRIBED | LSEL_RECURSIVE))
		imap_list_missing_superiors(s, &b, r, list, n);
	imap_write_buf(s, &b);
	buf_free(&b);
	imap_list_names_free(&sup);
	free(next);
	store_mailbox_list_free(&list, n);
	imap_done(s, "OK", "%s completed", r->lsub ? "LSUB" : "LIST");
}

/* reference + pattern into r->pats; 0 or -1 with *err_r. */
static int
imap_list_add_pattern(struct imap_sess *s, struct list_req *r, const char *ref,
		      const struct imap_arg *a, const char **err_r)
{
	const char *str;
	size_t len;
	struct buf dec = BUF_INIT(0), full = BUF_INIT(0);

	if (!imap_arg_list_mailbox(a, &str, &len)) {
		*err_r = "Mailbox pattern expected";
		return -1;
	}
	if (r->npats >= PATTERNS_MAX) {
		*err_r = "Too many patterns";
		return -1;
	}
	if (imap_name_decode(s, str, len, &dec, err_r) < 0) {
		buf_free(&dec);
		return -1;
	}
	buf_puts(&full, ref);
	if (full.len > 0 && full.data[full.len - 1] == '/' && dec.len > 0 && dec.data[0] == '/')
		buf_truncate(&full, full.len - 1);
	buf_append(&full, buf_str(&dec), dec.len);
	buf_free(&dec);
	if (full.len > (memchr(full.data, '*', full.len) || memchr(full.data, '%', full.len)
			     ? PATTERN_MAX
			     : STORE_NAME_MAX)) {
		buf_free(&full);
		*err_r = "Pattern too long";
		return -1;
	}
	char *p = buf_steal(&full);
	if (p == NULL)
		p = xstrdup("");
	if (strncasecmp(p, "INBOX", 5) == 0 && (p[5] == '\0' || p[5] == '/'))
		memcpy(p, "INBOX", 5);
	r->pats = xrealloc(r->pats, (r->npats + 1) * sizeof(*r->pats));
	r->pats[r->npats++] = p;
	return 0;
}

static void
imap_list_req_free(struct list_req *r)
{
	for (size_t i = 0; i < r->npats; i++)
		free(r->pats[i]);
	free(r->pats);
}

static void
imap_list_cmd(struct imap_sess *s, const struct imap_arg *args, bool lsub)
{
	struct list_req r = {.lsub = lsub};
	struct buf ref = BUF_INIT(0);
	const char *err = "Syntax: LIST [(options)] reference pattern [RETURN (options)]";
	const struct imap_arg *l;
	size_t n;
	const char *w;
	bool empty = false; /* the one pattern is "" */

	if (!lsub && imap_arg_list(args, &l, &n)) {
		r.extended = true;
		for (size_t i = 0; i < n; i++) {
			if (!imap_arg_atom(&l[i], &w))
				goto bad;
			if (strcasecmp(w, "SUBSCRIBED") == 0)
				r.sel |= LSEL_SUBSCRIBED;
			else if (strcasecmp(w, "RECURSIVEMATCH") == 0)
				r.sel |= LSEL_RECURSIVE;
			else if (strcasecmp(w, "SPECIAL-USE") == 0)
				r.sel |= LSEL_SPECIAL;
			else if (strcasecmp(w, "REMOTE") != 0) {
				err = "Unknown LIST selection option";
				goto bad;
			}
		}
		if ((r.sel & LSEL_RECURSIVE) && !(r.sel & ~LSEL_RECURSIVE)) {
			err = "RECURSIVEMATCH needs another selection option";
			goto bad;
		}
		args++;
	}
	if (imap_mbox_arg(s, &args[0], &ref, &err) < 0)
		goto bad;
	if (!lsub && imap_arg_list(&args[1], &l, &n)) {
		r.extended = true;
		if (n == 0)
			goto bad;
		for (size_t i = 0; i < n; i++)
			if (imap_list_add_pattern(s, &r, buf_str(&ref), &l[i], &err) < 0)
				goto bad;
	} else if (imap_list_add_pattern(s, &r, buf_str(&ref), &args[1], &err) < 0) {
		goto bad;
	} else {
		empty = imap_arg_list_mailbox(&args[1], &w, &n) && n == 0;
	}
	args += 2;
	if (!lsub && imap_arg_atom(args, &w) && strcasecmp(w, "RETURN") == 0) {
		if (!imap_arg_list(&args[1], &l, &n))
			goto bad;
		for (size_t i = 0; i < n; i++) {
			if (!imap_arg_atom(&l[i], &w))
				goto bad;
			if (strcasecmp(w, "SUBSCRIBED") == 0) {
				r.ret |= LRET_SUBSCRIBED;
			} else if (strcasecmp(w, "CHILDREN") == 0) {
				r.ret |= LRET_CHILDREN;
			} else if (strcasecmp(w, "SPECIAL-USE") == 0) {
				r.ret |= LRET_SPECIAL;
			} else if (strcasecmp(w, "STATUS") == 0 && i + 1 < n) {
				r.ret |= LRET_STATUS;
				if (imap_status_items(&l[++i], &r.status_items, &err) < 0)
					goto bad;
			} else {
				err = "Unknown LIST return option";
				goto bad;
			}
		}
		args += 2;
	}
	if (!imap_arg_is_eol(args))
		goto bad;
	if (empty && !r.extended) {
		/*
		 * LIST ref "": the hierarchy delimiter and the root of ref,
		 * which is "" here: no name is rooted (RFC 9051 6.3.9).
		 */
		imap_puts(s, lsub ? "* LSUB (\\Noselect) \"/\" \"\"\r\n"
				  : "* LIST (\\Noselect) \"/\" \"\"\r\n");
		imap_done(s, "OK", "%s completed", lsub ? "LSUB" : "LIST");
		goto out;
	}
	if (r.status_items & SI_HIGHESTMODSEQ)
		imap_enable_condstore(s);
	imap_list_run(s, &r);
	goto out;
bad:
	imap_done(s, "BAD", "%s: %s", lsub ? "LSUB" : "LIST", err);
out:
	buf_free(&ref);
	imap_list_req_free(&r);
}

void
imap_cmd_list(struct imap_sess *s, const struct imap_arg *args)
{
	imap_list_cmd(s, args, false);
}

void
imap_cmd_lsub(struct imap_sess *s, const struct imap_arg *args)
{
	imap_list_cmd(s, args, true);
}

/* ---- QUOTA (RFC 9208): one root "" per account, STORAGE only ---- */

static int
imap_quota_line(struct imap_sess *s, struct buf *b)
{
	uint64_t bytes = 0, msgs = 0;

	if (store_usage(s->st, &bytes, &msgs) < 0)
		return -1;
	buf_printf(b, "* QUOTA \"\" (STORAGE %llu %llu)\r\n",
		   (unsigned long long)((bytes + 1023) / 1024),
		   (unsigned long long)((uint64_t)s->quota / 1024));
	return 0;
}

void
imap_cmd_getquotaroot(struct imap_sess *s, const struct imap_arg *args)
{
	struct buf name = BUF_INIT(0), b = BUF_INIT(0);
	const char *err = "Syntax: GETQUOTAROOT mailbox";
	struct store_status st;

	if (imap_mbox_arg(s, &args[0], &name, &err) < 0 || !imap_arg_is_eol(&args[1])) {
		buf_free(&name);
		imap_done(s, "BAD", "GETQUOTAROOT: %s", err);
		return;
	}
	if (store_mailbox_status(s->st, name.data, &st) < 0) {
		buf_free(&name);
		imap_done_store_err(s, "GETQUOTAROOT");
		return;
	}
	buf_puts(&b, "* QUOTAROOT ");
	imap_mbox_out(s, &b, name.data);
	if (imap_quota_current(s) > 0) {
		buf_puts(&b, " \"\"\r\n");
		if (imap_quota_line(s, &b) < 0) {
			buf_free(&b);
			buf_free(&name);
			imap_done_store_err(s, "GETQUOTAROOT");
			return;
		}
	} else {
		buf_puts(&b, "\r\n");
	}
	imap_write_buf(s, &b);
	buf_free(&b);
	buf_free(&name);
	imap_done(s, "OK", "GETQUOTAROOT completed");
}

void
imap_cmd_getquota(struct imap_sess *s, const struct imap_arg *args)
{
	const char *root;
	size_t len;
	struct buf b = BUF_INIT(0);

	if (!imap_arg_astring(&args[0], &root, &len) || !imap_arg_is_eol(&args[1])) {
		imap_done(s, "BAD", "Syntax: GETQUOTA root");
		return;
	}
	if (len != 0 || imap_quota_current(s) <= 0) {
		imap_done(s, "NO", "[NONEXISTENT] No such quota root");
		return;
	}
	if (imap_quota_line(s, &b) < 0) {
		buf_free(&b);
		imap_done_store_err(s, "GETQUOTA");
		return;
	}
	imap_write_buf(s, &b);
	buf_free(&b);
	imap_done(s, "OK", "GETQUOTA completed");
}

void
imap_cmd_setquota(struct imap_sess *s, const struct imap_arg *args)
{
	imap_done(s, "NO", "[NOPERM] Quotas are set by the administrator");
}
