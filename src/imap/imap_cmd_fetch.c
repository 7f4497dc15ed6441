/*
 * imap_cmd_fetch — FETCH and UID FETCH (RFC 9051 §6.4.5), with CONDSTORE's
 * CHANGEDSINCE and QRESYNC's VANISHED modifier (RFC 7162). The data items
 * are imap_fetch's; this file owns the message set, the \Seen update, the
 * batching of long replies and the completion codes.
 *
 * The work runs on the worker pool in batches of up to BATCH_MSGS messages
 * (after CHANGEDSINCE has filtered them): a batch sets \Seen on those of its
 * messages that need it, with one store_flags() call, then writes their
 * replies until BATCH_BYTES of output; the rest of the batch goes first in
 * the next one, which starts only when the client has read most of it, so
 * a FETCH of a large mailbox never holds more than a few megabytes.
 *
 * \Seen is a side effect of returning a body section (RFC 9051 §6.4.5), so
 * it is kept only on messages whose reply was sent: a job takes it back
 * from the messages of its batch it set it on and did not write, those it
 * leaves for the next job (set again there) and, when a message's reply
 * fails (NO [LIMIT], [UNKNOWN-CTE], a store error) and the command ends,
 * that message and the ones after it; unless something else changed them
 * meanwhile (fetch_unset_seen). (A client that goes away mid-command
 * leaves \Seen on the rest of the batch being written.)
 *
 * SECURITY: the set and the items are peer input (validated by imap_msgset
 * and imap_fetch_parse); messages are sent only as counted literals by
 * imap_fetch. While a batch runs the session does not touch its view, which
 * the job reads.
 */
#include "imap/imap_cmd.h"
#include "imap/imap_fetch.h"

#include "core/log.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define BATCH_MSGS 256
#define BATCH_BYTES (2u * 1024 * 1024)
/*
 * The reply of one message is built whole before any of it is sent, so
 * its body sections are bounded (imap_fetch_ctx.section_budget):
 * SECTION_MSG_FACTOR times the message plus SECTION_BASE. Every
 * legitimate request fits (a section is never larger than the message);
 * without a bound one FETCH asking for BODY[] of a 25 MB message five
 * thousand times (a 64 KB command line) made the daemon try to hold
 * 125 GB. ENVELOPE, BODY and BODYSTRUCTURE are sent once each, and are
 * bounded by the message.
 */
#define SECTION_BASE ((uint64_t)16 * 1024 * 1024)
#define SECTION_MSG_FACTOR 4

struct fetch_job {
	struct imap_job j;
	struct imap_fetch_req *req;
	char *mailbox;
	uint32_t uidvalidity;
	int rev2;
	int condstore;
	const struct store_mbox_view *view; /* the session's; read-only while we run */
	const struct imap_seqset *recent;   /* the session's \Recent UIDs (rev1) */
	struct imap_seqset seqs;
	struct imap_seqset_iter it;
	uint32_t next_seq; /* 0: take the next from it */
	bool finished;
	bool set_seen;
	struct store_flag_result seen_res;   /* merged into the view by the next done */
	struct store_flag_result unseen_res; /* \Seen taken back; merged after seen_res */
	struct imap_seqset seen_uids;	     /* UIDs whose \Seen this command set */
	uint64_t changedsince;
	struct buf out;
	bool expunged;
	const char *fail; /* an IMAP_FETCH_ERR_* that ends the command */
	enum store_err err;
	char errmsg[256];
};

static const struct store_msg *
fetch_seen_state(const struct fetch_job *j, uint32_t uid)
{
	size_t lo = 0, hi = j->seen_res.nchanged;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		uint32_t u = j->seen_res.changed[mid].uid;
		if (u == uid)
			return &j->seen_res.changed[mid];
		if (u < uid)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

/* Add uid to the ascending ranges r[0..*n) (capacity *cap); may reallocate r. */
static void
fetch_range_add(struct store_range **r, size_t *n, size_t *cap, uint32_t uid)
{
	if (*n > 0 && (*r)[*n - 1].hi + 1 == uid) {
		(*r)[*n - 1].hi = uid;
		return;
	}
	if (*n == *cap) {
		*cap = *cap ? *cap * 2 : 64;
		*r = xrealloc(*r, *cap * sizeof(**r));
	}
	(*r)[(*n)++] = (struct store_range){uid, uid};
}

/*
 * One store_flags() call: +\Seen on every message of the batch that lacks
 * it in the store. Not only those the view shows without it: the view may
 * be older than another session's -\Seen, and the message would then be
 * returned and stay unseen (Dovecot sets it). The store changes only what
 * lacks the flag.
 */
static int
fetch_set_seen(struct fetch_job *j, const uint32_t *batch, size_t nb)
{
	struct store_range *r = NULL;
	size_t n = 0, cap = 0;

	/* The previous batch's result went into the view at its done. */
	store_flag_result_free(&j->seen_res);
	for (size_t i = 0; i < nb; i++)
		fetch_range_add(&r, &n, &cap, j->view->msgs[batch[i] - 1].uid);
	if (n == 0)
		return 0;
	struct store_flag_change chg = {.op = STORE_FLAGS_ADD, .flags = STORE_F_SEEN};
	int rc = store_flags(j->j.st, j->mailbox, j->uidvalidity, r, n, &chg, &j->seen_res);
	free(r);
	if (rc < 0)
		return -1;
	for (size_t i = 0; i < j->seen_res.nchanged; i++)
		imap_seqset_add(&j->seen_uids, j->seen_res.changed[i].uid,
				j->seen_res.changed[i].uid);
	imap_seqset_normalize(&j->seen_uids);
	return 0;
}

/*
 * None of batch[0..nb) is returned by this job (batch[0]'s reply failed and
 * the command ends, or they wait for the next job): take \Seen back from
 * those this job set it on. Each keeps it if anything changed it after
 * this job did (UNCHANGEDSINCE the mod-sequence it was given). Only this
 * job's: between jobs the client is waited for, and another session's
 * STORE +FLAGS (\Seen) meanwhile changes nothing the store can tell from
 * ours, so a take-back then would undo what it was told was done. Within
 * a job the window is that of building its replies.
 */
static void
fetch_unset_seen(struct fetch_job *j, const uint32_t *batch, size_t nb)
{
	struct store_range *r = NULL;
	size_t n = 0, cap = 0;

	for (size_t i = 0; i < nb; i++) {
		uint32_t uid = j->view->msgs[batch[i] - 1].uid;
		if (fetch_seen_state(j, uid) != NULL)
			fetch_range_add(&r, &n, &cap, uid);
	}
	/* This job's one store_flags() set them all: one mod-sequence. */
	struct store_flag_change chg = {.op = STORE_FLAGS_REMOVE,
					.flags = STORE_F_SEEN,
					.unchangedsince_set = 1,
					.unchangedsince = j->seen_res.modseq};
	if (n > 0 &&
	    store_flags(j->j.st, j->mailbox, j->uidvalidity, r, n, &chg, &j->unseen_res) < 0) {
		log_warn("FETCH failed, and so did taking its \\Seen back: %s",
			 store_errstr(j->j.st));
		store_flag_result_free(&j->unseen_res);
	}
	free(r);
}

static void
fetch_work(struct imap_job *jj)
{
	struct fetch_job *j = (struct fetch_job *)jj;
	uint32_t batch[BATCH_MSGS];
	size_t nb = 0;

	/* The next batch of sequence numbers (CHANGEDSINCE filtered). */
	for (;;) {
		uint32_t seq;
		if (j->next_seq) {
			seq = j->next_seq;
			j->next_seq = 0;
		} else if (!imap_seqset_iter_next(&j->seqs, &j->it, &seq)) {
			break;
		}
		if (nb == BATCH_MSGS) {
			j->next_seq = seq;
			break;
		}
		const struct store_msg *m = &j->view->msgs[seq - 1];
		const struct store_msg *sm = fetch_seen_state(j, m->uid);
		if (sm)
			m = sm;
		if (j->changedsince && m->modseq <= j->changedsince)
			continue;
		batch[nb++] = seq;
	}
	if (nb == 0) {
		j->finished = true;
		return;
	}
	if (j->set_seen && fetch_set_seen(j, batch, nb) < 0) {
		j->fail = IMAP_FETCH_ERR_STORE;
		j->err = store_errcode(j->j.st);
		xsnprintf(j->errmsg, sizeof(j->errmsg), "%.200s", store_errstr(j->j.st));
		j->finished = true;
		return;
	}

	/* Cached ENVELOPE/BODYSTRUCTURE of the batch in one pass. */
	struct store_msg_meta *meta = NULL;
	size_t nmeta = 0, mi = 0;
	if (imap_fetch_req_wants_meta(j->req)) {
		struct store_range *r = xcalloc(nb, sizeof(*r));
		size_t nr = 0;
		for (size_t i = 0; i < nb; i++) {
			uint32_t u = j->view->msgs[batch[i] - 1].uid;
			if (nr > 0 && r[nr - 1].hi + 1 == u)
				r[nr - 1].hi = u;
			else
				r[nr++] = (struct store_range){u, u};
		}
		if (store_fetch_meta(j->j.st, j->mailbox, j->uidvalidity, r, nr, &meta, &nmeta) <
		    0) {
			meta = NULL;
			nmeta = 0; /* imap_fetch looks each up itself */
		}
		free(r);
	}

	struct imap_fetch_ctx ctx = {.st = j->j.st,
				     .mailbox = j->mailbox,
				     .uidvalidity = j->uidvalidity,
				     .rev2 = j->rev2,
				     .condstore = j->condstore,
				     .recent = j->recent};
	size_t i;
	for (i = 0; i < nb; i++) {
		uint32_t seq = batch[i];
		const struct store_msg *m = &j->view->msgs[seq - 1];
		const struct store_msg *sm = fetch_seen_state(j, m->uid);
		const char *err = NULL;
		if (sm)
			m = sm;
		while (mi < nmeta && meta[mi].uid < m->uid)
			mi++;
		ctx.meta = (mi < nmeta && meta[mi].uid == m->uid) ? &meta[mi] : NULL;
		ctx.seen_changed =
		    j->seen_uids.count > 0 && imap_seqset_contains(&j->seen_uids, m->uid);
		ctx.section_budget = SECTION_BASE + SECTION_MSG_FACTOR * m->size;
		if (imap_fetch_message(&j->out, &ctx, j->req, seq, m, &err) < 0) {
			if (strcmp(err, IMAP_FETCH_ERR_EXPUNGED) == 0) {
				j->expunged = true;
				continue;
			}
			j->fail = err;
			if (strcmp(err, IMAP_FETCH_ERR_STORE) == 0) {
				j->err = store_errcode(j->j.st);
				xsnprintf(j->errmsg, sizeof(j->errmsg), "%.200s",
					  store_errstr(j->j.st));
			}
			j->finished = true;
			if (j->set_seen)
				fetch_unset_seen(j, batch + i, nb - i);
			break;
		}
		if (j->out.len >= BATCH_BYTES && i + 1 < nb) {
			i++;
			break;
		}
	}
	/* Messages of the batch not done yet go first next time, which sets \Seen again. */
	if (!j->finished && i < nb) {
		if (j->set_seen)
			fetch_unset_seen(j, batch + i, nb - i);
		struct imap_seqset rest;
		imap_seqset_init(&rest);
		for (size_t k = i; k < nb; k++)
			imap_seqset_add(&rest, batch[k], batch[k]);
		if (j->next_seq)
			imap_seqset_add(&rest, j->next_seq, j->next_seq);
		uint32_t seq;
		while (imap_seqset_iter_next(&j->seqs, &j->it, &seq))
			imap_seqset_add(&rest, seq, seq);
		imap_seqset_normalize(&rest);
		imap_seqset_free(&j->seqs);
		j->seqs = rest;
		imap_seqset_iter_init(&j->it);
		j->next_seq = 0;
	}
	store_msg_meta_array_free(&meta, nmeta);
}

static void
fetch_done(struct imap_sess *s, struct imap_job *jj)
{
	struct fetch_job *j = (struct fetch_job *)jj;
	struct imap_mbox *m = s->sel;

	if (j->seen_res.nchanged > 0) {
		/* The replies carried FLAGS for these: no unsolicited FETCH later. */
		imap_sel_merge(s, j->seen_res.changed, j->seen_res.nchanged, false);
		if (j->seen_res.modseq == m->modseq + 1)
			m->modseq = j->seen_res.modseq;
		if (m->flags_dirty)
			imap_sel_send_flags(s);
		store_flag_result_free(&j->seen_res);
	}
	/*
	 * The client never saw these with \Seen: nothing to tell it. The
	 * mailbox's mod-sequence stays; the next poll reads the change again.
	 * (Freed whatever it holds: the next job's take-back fills it anew.)
	 */
	imap_sel_merge(s, j->unseen_res.changed, j->unseen_res.nchanged, false);
	store_flag_result_free(&j->unseen_res);
	imap_write_buf(s, &j->out);
	if (!j->finished) {
		imap_job_continue(s, jj);
		return;
	}
	const char *what = s->cmdname;
	if (j->fail == NULL) {
		if (j->expunged)
			imap_done(s, "NO",
				  "[EXPUNGEISSUED] Some of the requested messages no longer exist");
		else
			imap_done(s, "OK", "%s completed", what);
	} else if (strcmp(j->fail, IMAP_FETCH_ERR_UNKNOWN_CTE) == 0) {
		imap_done(s, "NO", "[UNKNOWN-CTE] Cannot decode the content-transfer-encoding");
	} else if (strcmp(j->fail, IMAP_FETCH_ERR_TOOBIG) == 0) {
		imap_done(s, "NO", "[LIMIT] The reply for one message would be too large");
	} else if (strcmp(j->fail, IMAP_FETCH_ERR_STORE) == 0) {
		imap_done_store(s, what, j->err, j->errmsg);
	} else {
		imap_done_store(s, what, STORE_ERR_INTERNAL, j->fail);
	}
}

static void
fetch_free(struct imap_job *jj)
{
	struct fetch_job *j = (struct fetch_job *)jj;

	imap_fetch_req_free(&j->req);
	free(j->mailbox);
	imap_seqset_free(&j->seqs);
	imap_seqset_free(&j->seen_uids);
	store_flag_result_free(&j->seen_res);
	store_flag_result_free(&j->unseen_res);
	buf_free(&j->out);
	free(j);
}

/* UID FETCH ... (CHANGEDSINCE n VANISHED): UIDs of the set expunged since n. */
static int
fetch_vanished(struct imap_sess *s, const struct imap_arg *set, uint64_t since)
{
	struct imap_mbox *m = s->sel;
	struct imap_seqset parsed, uids, gone;
	struct store_changes ch;
	const char *err;
	struct buf b = BUF_INIT(0);

	imap_seqset_init(&parsed);
	imap_seqset_init(&uids);
	imap_seqset_init(&gone);
	if (imap_seqset_parse(&parsed, set->str, set->len, IMAP_SEQSET_ALLOW_SAVED, &err) < 0) {
		imap_seqset_free(&parsed);
		return 0;
	}
	imap_seqset_resolve(&parsed, m->view.uidnext > 1 ? m->view.uidnext - 1 : 0,
			    s->saved_valid ? &s->saved : NULL, &uids);
	if (store_changes_since(s->st, m->name, m->view.uidvalidity, since, &ch) < 0) {
		imap_seqset_free(&parsed);
		imap_seqset_free(&uids);
		return -1;
	}
	for (size_t i = 0; i < ch.nexpunged; i++)
		if (imap_seqset_contains(&uids, ch.expunged[i]))
			imap_seqset_add(&gone, ch.expunged[i], ch.expunged[i]);
	imap_seqset_normalize(&gone);
	if (gone.count > 0) {
		buf_puts(&b, "* VANISHED (EARLIER) ");
		imap_seqset_format(&gone, &b);
		buf_puts(&b, "\r\n");
		imap_write_buf(s, &b);
	}
	buf_free(&b);
	store_changes_free(&ch);
	imap_seqset_free(&parsed);
	imap_seqset_free(&uids);
	imap_seqset_free(&gone);
	return 0;
}

void
imap_cmd_fetch(struct imap_sess *s, const struct imap_arg *args)
{
	struct fetch_job *j = xcalloc(1, sizeof(*j));
	const char *err = "Syntax: FETCH set items [(modifiers)]";
	const struct imap_arg *mods = NULL;

	imap_seqset_init(&j->seqs);
	imap_seqset_init(&j->seen_uids);
	if (imap_arg_is_eol(&args[0]) || imap_arg_is_eol(&args[1]))
		goto bad;
	if (!imap_arg_is_eol(&args[2])) {
		if (args[2].type != IMAP_ARG_LIST || !imap_arg_is_eol(&args[3]))
			goto bad;
		mods = &args[2];
	}
	if (imap_msgset(s, &args[0], s->uid, &j->seqs, &err) < 0)
		goto bad;
	if (imap_fetch_parse(&args[1], mods, (s->enabled & EN_REV2) != 0, &j->req, &err) < 0)
		goto bad;
	if (s->uid)
		imap_fetch_req_set_uid(j->req);
	j->changedsince = imap_fetch_req_changedsince(j->req);
	if (imap_fetch_req_vanished(j->req)) {
		if (!s->uid || !(s->enabled & EN_QRESYNC) || j->changedsince == 0) {
			err = "VANISHED needs UID FETCH, CHANGEDSINCE and ENABLE QRESYNC";
			goto bad;
		}
	}
	if (imap_fetch_req_wants_modseq(j->req))
		imap_enable_condstore(s);
	if (imap_fetch_req_vanished(j->req) && fetch_vanished(s, &args[0], j->changedsince) < 0) {
		fetch_free(&j->j);
		imap_done_store_err(s, s->cmdname);
		return;
	}
	if (j->seqs.count == 0) {
		fetch_free(&j->j);
		imap_done(s, "OK", "%s completed", s->cmdname);
		return;
	}
	j->mailbox = xstrdup(s->sel->name);
	j->uidvalidity = s->sel->view.uidvalidity;
	j->rev2 = (s->enabled & EN_REV2) != 0;
	j->condstore = (s->enabled & EN_CONDSTORE) != 0;
	j->view = &s->sel->view;
	j->recent = &s->sel->recent;
	j->set_seen = imap_fetch_req_sets_seen(j->req) && !s->sel->readonly;
	imap_seqset_iter_init(&j->it);
	j->j.work = fetch_work;
	j->j.done = fetch_done;
	j->j.free = fetch_free;
	if (!j->set_seen && imap_fetch_req_view_only(j->req))
		imap_job_run_here(s, &j->j);
	else
		imap_job_run(s, &j->j);
	return;
bad:
	fetch_free(&j->j);
	imap_done(s, "BAD", "%s: %s", s->cmdname, err);
}
