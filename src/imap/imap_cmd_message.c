/*
 * imap_cmd_message — commands on the messages of the selected mailbox,
 * apart from FETCH and SEARCH: CHECK, CLOSE, UNSELECT, EXPUNGE and
 * UID EXPUNGE, STORE and UID STORE (with UNCHANGEDSINCE, RFC 7162), COPY
 * and MOVE (RFC 6851) with COPYUID (RFC 4315).
 *
 * Every change runs on the worker pool as one store call (one transaction,
 * one mod-sequence). The completion brings the session's view up to date
 * with what the store reported, so the FETCH replies of STORE show the
 * state the store committed, and the next poll finds nothing new.
 *
 * SECURITY: sets and flags are peer input, validated here; a read-only
 * (EXAMINE) session changes nothing.
 */
#include "imap/imap_cmd.h"

#include "core/log.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

int
imap_flags_parse(const struct imap_arg *list, size_t n, uint32_t *flags, char ***kw, size_t *nkw,
		 const char **err_r)
{
	static const struct {
		const char *name;
		uint32_t bit;
	} sys[] = {{"\\Seen", STORE_F_SEEN},
		   {"\\Answered", STORE_F_ANSWERED},
		   {"\\Flagged", STORE_F_FLAGGED},
		   {"\\Deleted", STORE_F_DELETED},
		   {"\\Draft", STORE_F_DRAFT}};
	const char *w;

	for (size_t i = 0; i < n; i++) {
		if (!imap_arg_atom(&list[i], &w) || imap_arg_is_nil(&list[i]) ||
		    (list[i].flags & (IMAP_ARGF_WILDCARD | IMAP_ARGF_RESP_SPECIAL))) {
			*err_r = "Flags must be atoms (\\Seen, $Keyword, ...)";
			return -1;
		}
		if (w[0] == '\\') {
			uint32_t bit = 0;
			for (size_t k = 0; k < ARRAY_LEN(sys); k++)
				if (strcasecmp(w, sys[k].name) == 0)
					bit = sys[k].bit;
			if (bit == 0 && strcasecmp(w, "\\Recent") != 0) {
				*err_r = "Unknown system flag";
				return -1;
			}
			*flags |= bit;
			continue;
		}
		if (strlen(w) > STORE_KEYWORD_MAX) {
			*err_r = "Keyword too long";
			return -1;
		}
		if (*nkw >= STORE_KEYWORDS_MAX) {
			*err_r = "Too many keywords";
			return -1;
		}
		*kw = xrealloc(*kw, (*nkw + 1) * sizeof(char *));
		(*kw)[(*nkw)++] = xstrdup(w);
	}
	return 0;
}

void
imap_cmd_check(struct imap_sess *s, const struct imap_arg *args)
{
	if (!imap_arg_is_eol(args)) {
		imap_done(s, "BAD", "CHECK takes no arguments");
		return;
	}
	imap_done(s, "OK", "CHECK completed");
}

static void
imap_unselect_now(struct imap_sess *s)
{
	imap_sel_free(&s->sel);
	imap_seqset_clear(&s->saved);
	s->saved_valid = false;
	imap_set_state(s, IS_AUTH);
}

void
imap_cmd_unselect(struct imap_sess *s, const struct imap_arg *args)
{
	if (!imap_arg_is_eol(args)) {
		imap_done(s, "BAD", "UNSELECT takes no arguments");
		return;
	}
	imap_unselect_now(s);
	imap_done(s, "OK", "UNSELECT completed");
}

/* ---- EXPUNGE and CLOSE ---- */

struct expunge_job {
	struct imap_job j;
	char *mailbox;
	uint32_t uidvalidity;
	struct store_range *set; /* NULL: all \Deleted */
	size_t nset;
	bool close;
	int rc;
	enum store_err err;
	char errmsg[256];
	uint32_t *uids;
	size_t nuids;
	uint64_t modseq;
};

static void
expunge_work(struct imap_job *jj)
{
	struct expunge_job *j = (struct expunge_job *)jj;

	j->rc = store_expunge(j->j.st, j->mailbox, j->uidvalidity, j->set, j->nset, 0, &j->uids,
			      &j->nuids, &j->modseq);
	if (j->rc < 0) {
		j->err = store_errcode(j->j.st);
		xsnprintf(j->errmsg, sizeof(j->errmsg), "%.200s", store_errstr(j->j.st));
	}
}

/* The untagged NO of a CLOSE whose expunge failed: nothing was removed. */
static void
imap_close_warn(struct imap_sess *s, enum store_err e, const char *msg)
{
	struct buf t = BUF_INIT(0);

	imap_store_failure(s, "CLOSE", e, msg, &t);
	imap_printf(s, "* NO %s (no message was expunged)\r\n", buf_str(&t));
	buf_free(&t);
}

/*
 * The HIGHESTMODSEQ for the tagged OK of a CLOSE that expunged messages
 * under QRESYNC (RFC 7162 §3.2.8: MUST). CLOSE sends no untagged
 * responses, so the client can take it only if it knew every change up to
 * it: when the expunge is the one change since what the session last
 * reported (and no other expunge is held back from it), the client knows
 * that its \Deleted messages are the ones removed, and the expunge's
 * mod-sequence is the answer. Otherwise it is the highest the client is
 * known to be up to date with, below the expunge; its next SELECT
 * (QRESYNC) then learns the rest, this expunge included, as VANISHED
 * (EARLIER).
 */
static uint64_t
imap_close_modseq(const struct imap_mbox *m, uint64_t expunge_modseq)
{
	if (m->nghosts > 0)
		return m->ghost_floor;
	if (expunge_modseq == m->modseq + 1)
		return expunge_modseq;
	return m->modseq;
}

static void
expunge_done(struct imap_sess *s, struct imap_job *jj)
{
	struct expunge_job *j = (struct expunge_job *)jj;

	if (j->close) {
		/*
		 * CLOSE's only result is OK (RFC 9051 §6.4.1), but a client
		 * takes that for its \Deleted messages being gone: a failed
		 * expunge is said in an untagged NO first, as Dovecot does.
		 */
		if (j->rc < 0)
			imap_close_warn(s, j->err, j->errmsg);
		if (j->rc == 0 && j->nuids > 0 && (s->enabled & EN_QRESYNC)) {
			uint64_t hms = imap_close_modseq(s->sel, j->modseq);
			imap_unselect_now(s);
			imap_done(s, "OK", "[HIGHESTMODSEQ %llu] CLOSE completed",
				  (unsigned long long)hms);
			return;
		}
		imap_unselect_now(s);
		imap_done(s, "OK", "CLOSE completed");
		return;
	}
	if (j->rc < 0) {
		imap_done_store(s, s->uid ? "UID EXPUNGE" : "EXPUNGE", j->err, j->errmsg);
		return;
	}
	imap_sel_expunged(s, j->uids, j->nuids);
	if (j->nuids > 0 && j->modseq == s->sel->modseq + 1)
		s->sel->modseq = j->modseq; /* nobody else changed anything meanwhile */
	if (s->enabled & EN_QRESYNC) {
		/* RFC 7162 §3.2.7, §3.2.9: the new HIGHESTMODSEQ with the tagged
		 * OK, once every change up to it has been reported. */
		if (imap_sel_poll(s) < 0)
			return;
		imap_sel_flush(s, true);
		imap_done(s, "OK", "[HIGHESTMODSEQ %llu] %s completed",
			  (unsigned long long)s->sel->modseq, s->uid ? "UID EXPUNGE" : "EXPUNGE");
		return;
	}
	imap_done(s, "OK", "%s completed", s->uid ? "UID EXPUNGE" : "EXPUNGE");
}

static void
expunge_free(struct imap_job *jj)
{
	struct expunge_job *j = (struct expunge_job *)jj;
	free(j->mailbox);
	free(j->set);
	free(j->uids);
	free(j);
}

static void
imap_expunge_run(struct imap_sess *s, struct store_range *set, size_t nset, bool close)
{
	struct expunge_job *j = xcalloc(1, sizeof(*j));

	j->mailbox = xstrdup(s->sel->name);
	j->uidvalidity = s->sel->view.uidvalidity;
	j->set = set;
	j->nset = nset;
	j->close = close;
	j->j.work = expunge_work;
	j->j.done = expunge_done;
	j->j.free = expunge_free;
	imap_job_run(s, &j->j);
}

void
imap_cmd_close(struct imap_sess *s, const struct imap_arg *args)
{
	if (!imap_arg_is_eol(args)) {
		imap_done(s, "BAD", "CLOSE takes no arguments");
		return;
	}
	if (s->sel->readonly) {
		imap_unselect_now(s);
		imap_done(s, "OK", "CLOSE completed");
		return;
	}
	imap_expunge_run(s, NULL, 0, true);
}

void
imap_cmd_expunge(struct imap_sess *s, const struct imap_arg *args)
{
	struct store_range *r = NULL;
	size_t nr = 0;

	if (s->uid) {
		struct imap_seqset seqs;
		const char *err;
		if (imap_arg_is_eol(args) || !imap_arg_is_eol(&args[1])) {
			imap_done(s, "BAD", "Syntax: UID EXPUNGE uid-set");
			return;
		}
		if (imap_msgset(s, &args[0], true, &seqs, &err) < 0) {
			imap_done(s, "BAD", "UID EXPUNGE: %s", err);
			return;
		}
		if (seqs.count == 0) {
			imap_seqset_free(&seqs);
			imap_done(s, "OK", "UID EXPUNGE completed");
			return;
		}
		imap_seqs_to_ranges(s, &seqs, &r, &nr);
		imap_seqset_free(&seqs);
	} else if (!imap_arg_is_eol(args)) {
		imap_done(s, "BAD", "EXPUNGE takes no arguments");
		return;
	}
	if (s->sel->readonly) {
		free(r);
		imap_done(s, "NO", "[CANNOT] Mailbox is read-only (EXAMINE)");
		return;
	}
	imap_expunge_run(s, r, nr, false);
}

/* ---- STORE ---- */

struct store_job {
	struct imap_job j;
	char *mailbox;
	uint32_t uidvalidity;
	struct store_range *set;
	size_t nset;
	struct imap_seqset seqs;
	struct store_flag_change chg;
	char **keywords;
	size_t nkeywords;
	bool silent;
	int rc;
	enum store_err err;
	char errmsg[256];
	struct store_flag_result res;
};

static void
store_work(struct imap_job *jj)
{
	struct store_job *j = (struct store_job *)jj;

	j->rc = store_flags(j->j.st, j->mailbox, j->uidvalidity, j->set, j->nset, &j->chg, &j->res);
	if (j->rc < 0) {
		j->err = store_errcode(j->j.st);
		xsnprintf(j->errmsg, sizeof(j->errmsg), "%.200s", store_errstr(j->j.st));
	}
}

/*
 * Whether nw, the state the store gave back, is what the client expects:
 * the change applied to the state it knows (old). Keywords are compared
 * only when the change leaves them alone or clears them; otherwise a
 * difference is assumed, which at worst reports the flags once more.
 */
static bool
store_result_expected(const struct store_msg *old, const struct store_flag_change *chg,
		      const struct store_msg *nw)
{
	uint32_t flags = chg->op == STORE_FLAGS_SET   ? chg->flags
			 : chg->op == STORE_FLAGS_ADD ? old->flags | chg->flags
						      : old->flags & ~chg->flags;

	if (flags != nw->flags)
		return false;
	if (chg->op == STORE_FLAGS_SET && chg->nkeywords == 0)
		return nw->keywords == NULL || nw->keywords[0] == '\0';
	return chg->nkeywords == 0 && imap_kw_equal(old->keywords, nw->keywords);
}

static void
store_done(struct imap_sess *s, struct imap_job *jj)
{
	struct store_job *j = (struct store_job *)jj;
	struct imap_mbox *m = s->sel;
	struct buf b = BUF_INIT(0);
	bool condstore = (s->enabled & EN_CONDSTORE) != 0;

	if (j->rc < 0) {
		imap_done_store(s, s->cmdname, j->err, j->errmsg);
		return;
	}
	/*
	 * Another session changed the mailbox since we last looked: what the
	 * store returns may hold its flag changes too, which the client has
	 * not seen and, after .SILENT, would never see. Those are announced.
	 */
	bool others = j->res.nchanged > 0 && j->res.modseq != m->modseq + 1;
	unsigned char *fresh = others ? xcalloc(j->res.nchanged, 1) : NULL;
	for (size_t i = 0; others && i < j->res.nchanged; i++) {
		ssize_t idx = imap_sel_find(m, j->res.changed[i].uid);
		fresh[i] = idx >= 0 &&
			   !store_result_expected(&m->view.msgs[idx], &j->chg, &j->res.changed[i]);
	}
	imap_sel_merge(s, j->res.changed, j->res.nchanged, false);
	for (size_t i = 0; others && i < j->res.nchanged; i++) {
		ssize_t idx = imap_sel_find(m, j->res.changed[i].uid);
		if (fresh[i] && idx >= 0 && !(m->mark[idx] & MK_GHOST))
			m->mark[idx] |= MK_FLAGS;
	}
	free(fresh);
	if (j->res.nchanged > 0 && !others)
		m->modseq = j->res.modseq;
	/* UIDs that failed UNCHANGEDSINCE are not reported as changed. */
	struct imap_seqset failed;
	imap_seqset_init(&failed);
	for (size_t i = 0; i < j->res.nfailed; i++)
		imap_seqset_add(&failed, j->res.failed[i], j->res.failed[i]);
	imap_seqset_normalize(&failed);
	struct imap_seqset chset;
	imap_seqset_init(&chset);
	for (size_t i = 0; i < j->res.nchanged; i++)
		imap_seqset_add(&chset, j->res.changed[i].uid, j->res.changed[i].uid);
	imap_seqset_normalize(&chset);
	/*
	 * A message the store left alone (it had the flag already, set by
	 * another session since the last poll) is not in the result: the
	 * view may be older than the store, and its reply would show the flags
	 * before the change (+FLAGS (\Seen) answered FLAGS ()), corrected by
	 * an unsolicited FETCH after. Bring the view up to date first.
	 */
	if (imap_sel_poll(s) < 0) {
		imap_seqset_free(&failed);
		imap_seqset_free(&chset);
		return;
	}
	if (m->flags_dirty)
		imap_sel_send_flags(s);

	struct imap_seqset_iter it;
	uint32_t seq;
	imap_seqset_iter_init(&it);
	while (imap_seqset_iter_next(&j->seqs, &it, &seq)) {
		size_t i = seq - 1;
		if (i >= m->view.count || (m->mark[i] & MK_GHOST))
			continue;
		const struct store_msg *msg = &m->view.msgs[i];
		if (j->res.nfailed > 0 && imap_seqset_contains(&failed, msg->uid))
			continue;
		bool changed = imap_seqset_contains(&chset, msg->uid);
		bool news = (m->mark[i] & MK_FLAGS) != 0; /* flags the client has not seen */
		if (j->silent && !news && !(condstore && changed))
			continue;
		buf_printf(&b, "* %u FETCH (UID %u", seq, msg->uid);
		if (!j->silent || news) {
			buf_puts(&b, " FLAGS ");
			imap_flags_list(&b, msg->flags, imap_sel_recent(s, msg->uid),
					msg->keywords);
		}
		if (condstore)
			buf_printf(&b, " MODSEQ (%llu)", (unsigned long long)msg->modseq);
		buf_puts(&b, ")\r\n");
		m->mark[i] &= (unsigned char)~MK_FLAGS;
		if (b.len > 65536)
			imap_write_buf(s, &b);
	}
	imap_write_buf(s, &b);
	if (j->res.nfailed > 0) {
		/* MODIFIED lists UIDs for UID STORE, sequence numbers for STORE. */
		struct imap_seqset mod;
		imap_seqset_init(&mod);
		for (size_t k = 0; k < j->res.nfailed; k++) {
			uint32_t u = j->res.failed[k];
			if (s->uid) {
				imap_seqset_add(&mod, u, u);
			} else {
				ssize_t idx = imap_sel_find(m, u);
				if (idx >= 0)
					imap_seqset_add(&mod, (uint32_t)idx + 1, (uint32_t)idx + 1);
			}
		}
		imap_seqset_normalize(&mod);
		imap_seqset_format(&mod, &b);
		imap_seqset_free(&mod);
		imap_done(s, "OK", "[MODIFIED %s] Conditional STORE failed", buf_str(&b));
	} else {
		imap_done(s, "OK", "%s completed", s->cmdname);
	}
	imap_seqset_free(&failed);
	imap_seqset_free(&chset);
	buf_free(&b);
}

static void
store_free(struct imap_job *jj)
{
	struct store_job *j = (struct store_job *)jj;

	free(j->mailbox);
	free(j->set);
	imap_seqset_free(&j->seqs);
	for (size_t i = 0; i < j->nkeywords; i++)
		free(j->keywords[i]);
	free(j->keywords);
	store_flag_result_free(&j->res);
	free(j);
}

void
imap_cmd_store(struct imap_sess *s, const struct imap_arg *args)
{
	struct store_job *j = xcalloc(1, sizeof(*j));
	const char *err = "Syntax: STORE set [(UNCHANGEDSINCE n)] [+|-]FLAGS[.SILENT] flags";
	const char *item;
	const struct imap_arg *a = &args[1];
	const struct imap_arg *l;
	size_t n;

	imap_seqset_init(&j->seqs);
	if (imap_arg_is_eol(args) || imap_msgset(s, &args[0], s->uid, &j->seqs, &err) < 0)
		goto bad;
	if (imap_arg_list(a, &l, &n)) {
		/* store-modifiers: only UNCHANGEDSINCE is known */
		const char *w;
		for (size_t i = 0; i < n; i += 2) {
			uint64_t v;
			if (!imap_arg_atom(&l[i], &w) || strcasecmp(w, "UNCHANGEDSINCE") != 0 ||
			    i + 1 >= n || !imap_arg_number(&l[i + 1], &v)) {
				err = "Unknown STORE modifier (UNCHANGEDSINCE n is known)";
				goto bad;
			}
			j->chg.unchangedsince_set = 1;
			j->chg.unchangedsince = v;
		}
		a++;
	}
	if (!imap_arg_atom(a, &item))
		goto bad;
	const char *p = item;
	if (*p == '+') {
		j->chg.op = STORE_FLAGS_ADD;
		p++;
	} else if (*p == '-') {
		j->chg.op = STORE_FLAGS_REMOVE;
		p++;
	} else {
		j->chg.op = STORE_FLAGS_SET;
	}
	if (strcasecmp(p, "FLAGS.SILENT") == 0)
		j->silent = true;
	else if (strcasecmp(p, "FLAGS") != 0) {
		err = "STORE item must be FLAGS, +FLAGS or -FLAGS (optionally .SILENT)";
		goto bad;
	}
	a++;
	if (imap_arg_list(a, &l, &n)) {
		if (!imap_arg_is_eol(&a[1]))
			goto bad;
	} else {
		/* Flags without parentheses: the rest of the arguments. */
		l = a;
		for (n = 0; !imap_arg_is_eol(&a[n]); n++)
			;
		if (n == 0)
			goto bad;
	}
	if (imap_flags_parse(l, n, &j->chg.flags, &j->keywords, &j->nkeywords, &err) < 0)
		goto bad;
	j->chg.keywords = (const char *const *)j->keywords;
	j->chg.nkeywords = j->nkeywords;
	if (s->sel->readonly) {
		store_free(&j->j);
		imap_done(s, "NO", "[CANNOT] Mailbox is read-only (EXAMINE)");
		return;
	}
	if (j->chg.unchangedsince_set)
		imap_enable_condstore(s);
	if (j->seqs.count == 0) {
		store_free(&j->j);
		imap_done(s, "OK", "%s completed", s->cmdname);
		return;
	}
	imap_seqs_to_ranges(s, &j->seqs, &j->set, &j->nset);
	j->mailbox = xstrdup(s->sel->name);
	j->uidvalidity = s->sel->view.uidvalidity;
	j->j.work = store_work;
	j->j.done = store_done;
	j->j.free = store_free;
	imap_job_run(s, &j->j);
	return;
bad:
	store_free(&j->j);
	imap_done(s, "BAD", "%s: %s", s->cmdname, err);
}

/* ---- COPY and MOVE ---- */

struct copy_job {
	struct imap_job j;
	char *src, *dst;
	uint32_t uidvalidity;
	struct store_range *set;
	size_t nset;
	bool move;
	int64_t quota;	/* > 0: the copies must fit it */
	uint64_t bytes; /* what the copies add to the usage */
	int rc;
	bool overquota;
	enum store_err err;
	char errmsg[256];
	struct store_copy_result res;
};

static void
copy_work(struct imap_job *jj)
{
	struct copy_job *j = (struct copy_job *)jj;

	/* As APPEND: the copies count against the quota (shared files or not). */
	if (imap_quota_exceeded(j->j.st, j->quota, j->bytes)) {
		j->rc = -1;
		j->overquota = true;
		return;
	}
	/* That was a cheap early answer; the transaction holds the quota itself. */
	j->rc = store_copy_quota(j->j.st, j->src, j->uidvalidity, j->set, j->nset, j->dst, j->move,
				 j->quota, &j->res);
	if (j->rc < 0 && store_errcode(j->j.st) == STORE_ERR_OVERQUOTA) {
		j->overquota = true;
	} else if (j->rc < 0) {
		j->err = store_errcode(j->j.st);
		xsnprintf(j->errmsg, sizeof(j->errmsg), "%.200s", store_errstr(j->j.st));
	}
}

static void
copy_done(struct imap_sess *s, struct imap_job *jj)
{
	struct copy_job *j = (struct copy_job *)jj;
	struct buf su = BUF_INIT(0), du = BUF_INIT(0);
	const char *what = s->cmdname;

	if (j->overquota) {
		imap_done_overquota(s);
		return;
	}
	if (j->rc < 0) {
		if (j->err == STORE_ERR_NOMAILBOX)
			imap_done(s, "NO", "[TRYCREATE] Destination mailbox does not exist");
		else
			imap_done_store(s, what, j->err, j->errmsg);
		return;
	}
	if (j->res.n == 0) {
		imap_done(s, "OK", "%s completed: no messages", what);
		return;
	}
	imap_seqset_format_list(j->res.src_uids, j->res.n, &su);
	imap_seqset_format_list(j->res.dst_uids, j->res.n, &du);
	if (!j->move) {
		imap_done(s, "OK", "[COPYUID %u %s %s] %s completed", j->res.uidvalidity,
			  buf_str(&su), buf_str(&du), what);
	} else {
		/* RFC 6851 §4.3: COPYUID untagged, then the expunges, then OK. */
		imap_printf(s, "* OK [COPYUID %u %s %s] Moved\r\n", j->res.uidvalidity,
			    buf_str(&su), buf_str(&du));
		imap_sel_expunged(s, j->res.src_uids, j->res.n);
		imap_done(s, "OK", "%s completed", what);
	}
	buf_free(&su);
	buf_free(&du);
}

static void
copy_free(struct imap_job *jj)
{
	struct copy_job *j = (struct copy_job *)jj;

	free(j->src);
	free(j->dst);
	free(j->set);
	store_copy_result_free(&j->res);
	free(j);
}

static void
imap_copy(struct imap_sess *s, const struct imap_arg *args, bool move)
{
	struct imap_seqset seqs;
	struct buf dst = BUF_INIT(0);
	const char *err = move ? "Syntax: MOVE set mailbox" : "Syntax: COPY set mailbox";

	imap_seqset_init(&seqs);
	if (imap_arg_is_eol(args) || imap_msgset(s, &args[0], s->uid, &seqs, &err) < 0 ||
	    imap_mbox_arg(s, &args[1], &dst, &err) < 0 || !imap_arg_is_eol(&args[2])) {
		imap_seqset_free(&seqs);
		buf_free(&dst);
		imap_done(s, "BAD", "%s: %s", s->cmdname, err);
		return;
	}
	if (move && s->sel->readonly) {
		imap_seqset_free(&seqs);
		buf_free(&dst);
		imap_done(s, "NO", "[CANNOT] Mailbox is read-only (EXAMINE)");
		return;
	}
	if (seqs.count == 0) {
		imap_seqset_free(&seqs);
		buf_free(&dst);
		imap_done(s, "OK", "%s completed: no messages", s->cmdname);
		return;
	}
	struct copy_job *j = xcalloc(1, sizeof(*j));
	if (!move && imap_quota_current(s) > 0) {
		struct imap_seqset_iter it;
		uint32_t seq;
		imap_seqset_iter_init(&it);
		while (imap_seqset_iter_next(&seqs, &it, &seq))
			if (!(s->sel->mark[seq - 1] & MK_GHOST))
				j->bytes += s->sel->view.msgs[seq - 1].size;
		j->quota = s->quota;
	}
	imap_seqs_to_ranges(s, &seqs, &j->set, &j->nset);
	imap_seqset_free(&seqs);
	j->src = xstrdup(s->sel->name);
	j->dst = buf_steal(&dst);
	j->uidvalidity = s->sel->view.uidvalidity;
	j->move = move;
	j->j.work = copy_work;
	j->j.done = copy_done;
	j->j.free = copy_free;
	imap_job_run(s, &j->j);
}

void
imap_cmd_copy(struct imap_sess *s, const struct imap_arg *args)
{
	imap_copy(s, args, false);
}

void
imap_cmd_move(struct imap_sess *s, const struct imap_arg *args)
{
	imap_copy(s, args, true);
}
