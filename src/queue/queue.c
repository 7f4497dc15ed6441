/*
 * queue — see queue.h.
 *
 * Each message in the queue is a qentry: its spool envelope and state in
 * memory, its content only until the first local delivery (then it is read
 * back from the spool file when needed). The tick (every second, and on
 * every kick) starts a job for every ready message that has something due:
 * recipients to deliver locally, results from the remote transport to
 * record, a success notice owed, expiry, a delay notice, or the final
 * bounce and removal. Messages with nothing to do wait in a heap by the
 * time something falls due, or for an event, so the tick never walks the
 * whole queue. While a job runs the entry is busy and the tick leaves it
 * alone; the job's done callback (loop thread) applies what the job
 * recorded on disk.
 *
 * SECURITY: jobs own copies of everything they touch; entries are only
 * changed on the loop thread.
 */
#include "queue/queue.h"
#include "queue/queue_dsn.h"
#include "queue/queue_local.h"
#include "auth/accounts.h"
#include "core/buf.h"
#include "core/fsbarrier.h"
#include "core/log.h"
#include "core/server.h"
#include "core/util.h"
#include "core/worker.h"
#include "store/store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>

#define QUEUE_HASH 8192
/*
 * How long a delivery job waits for another thread's flush (the next
 * message's acceptance) before starting its own: under steady traffic a
 * delivery then adds no flush of its own, where a flush of its own would
 * make the next acceptance wait for two; on an idle server it costs a few
 * milliseconds of delivery delay. Delivery jobs have threads of their own
 * (QUEUE_THREADS), so their waits never hold up acceptance's spool writes.
 */
#define QUEUE_FLUSH_PATIENCE_US 10000
#define QUEUE_THREADS 8
/*
 * Delivery threads run niced: on two cores shared with the sessions, a
 * delivery that takes the CPU delays the next 250, and at one session at a
 * time that delay is the whole throughput. Deliveries fill the gaps instead;
 * under sustained load the CPU time is the same, only its order changes.
 */
#define QUEUE_NICE 10

/*
 * The full-text indexing the queue's timer starts each second (store.h,
 * STORE_FTS_IDLE_MS) stops after this long, at the end of a transaction
 * (STORE_FTS_CHUNK messages), so that a stop waits for one at most.
 */
#define QUEUE_INDEX_BUDGET_MS 200
/*
 * Mail first: that indexing starts (at the timer's next tick) only once no
 * new message has been queued for QUEUE_INDEX_QUIET_MS, and after its first
 * chunk it stops when one is. Its page writes and CPU would otherwise slow
 * the acceptance of a burst (by some 30% while it ran, measured at one
 * session), for work nobody waits on: a search indexes what is pending
 * itself, and an account that reaches STORE_FTS_BATCH waiting messages is
 * indexed by its delivery. So that mail that never pauses cannot starve it,
 * it also starts when it has not for QUEUE_INDEX_WAIT_MS, and then does at
 * least one chunk.
 */
#define QUEUE_INDEX_QUIET_MS 250
#define QUEUE_INDEX_WAIT_MS 10000
/*
 * Messages in one local delivery batch at most, and their content octets
 * (past one message): a batch holds all of its messages in memory at once,
 * and up to QUEUE_THREADS run, so big messages go a few at a time. What a
 * batch saves (a flush and a store transaction per message) is small next
 * to writing a message of a megabyte.
 */
#define QUEUE_BATCH_MAX 64
#define QUEUE_BATCH_BYTES ((uint64_t)4 << 20)
/*
 * Content octets the queue's entries hold in memory at most. A new
 * message's content stays with its entry, sparing its delivery a read of
 * the spool file, only within this; past it (mail coming in faster than a
 * mailbox takes it, a mailbox held up) delivery reads the file.
 */
#define QUEUE_KEEP_BYTES ((uint64_t)16 << 20)
/*
 * A new local message waits this long for others to the same mailbox before
 * its delivery starts, unless one to that mailbox is due anyway: under
 * traffic a batch then carries several messages for one transaction, one
 * thread wake-up and one pair of flushes. The 250 was sent long before; this
 * only delays the message's arrival in the mailbox.
 */
#define QUEUE_GATHER_MS 25
/* A job that failed (could not read its spool file, write its records or a
 * notice) runs again after this. */
#define QUEUE_ERROR_PAUSE_S 10
/* Delivered spool files kept for reuse (queue_spool.h, spool_pool). */
#define QUEUE_RECYCLE 512

struct qres {
	size_t idx;
	enum deliver_result r;
	char *text;
	char *remote;
	int flushed;	/* `queue flush` came after it was reported: a deferral is due at once */
	int relayed;	/* taken by a peer without DSN: a NOTIFY=SUCCESS gets our "relayed" */
};

struct qentry {
	struct spool_msg msg;
	struct buf content;
	int have_content;
	int busy;
	int remote_busy;
	/*
	 * Done: its file retired (or gone). Its file name may already hold
	 * another message, so no job may touch it again; it waits only for
	 * the transport to let go (remote_busy), then is freed.
	 */
	int retired;
	int no_batch;		/* a batch failed it: the per-message job takes it */
	int64_t arrived_ms;	/* when it was queued or taken up at start (monotonic) */
	struct qres *pending;	/* remote results not yet recorded */
	size_t npending;
	/*
	 * The spool file's shared delivery lock of the transport that
	 * reported them, or -1: till they are on disk, `surat queue delete`
	 * must say "being delivered", not remove a message a peer has taken.
	 */
	int pending_lockfd;
	struct qentry *prev, *next;
	struct qentry *hnext;	/* in the id hash bucket */
	/*
	 * Where the tick finds it: on the ready list (something may be due
	 * now), in the heap by the time something falls due (a retry, the
	 * delay warning, expiry), or neither (waiting for an event: a job or
	 * a remote delivery to finish). The tick looks at ready entries only,
	 * not at the whole queue.
	 */
	int ready;
	int flush;	/* `queue flush` came while busy: apply it when the job ends */
	struct qentry *rprev, *rnext;
	size_t hidx;		/* 1 + index in the heap; 0: not in it */
	int64_t due;		/* unix seconds, while in the heap */
};

struct queue {
	struct server *srv;
	char *dir;
	struct qentry *head, *tail;	/* oldest first: batches and jobs go in arrival order */
	size_t n;
	struct event *timer;
	struct event *kick;
	struct queue_remote_ops remote;
	int have_remote;
	struct qentry *hash[QUEUE_HASH];	/* by id: results name their message */
	struct qentry *rhead, *rtail;		/* ready, in the order they became so */
	struct qentry **heap;			/* waiting, earliest due first */
	size_t nheap, heapcap;
	int64_t swept;				/* last full pass (unix seconds) */
	struct lbatch *batches;			/* local delivery batches running */
	struct worker_pool *pool;		/* delivery jobs */
	uint64_t kept;				/* octets of the entries' content */
	struct spool_pool *spool;		/* delivered files for reuse; thread-safe */
	/* New messages waiting for the next spool round; one round at a time. */
	struct submit_job *sub_head, *sub_tail;
	int sub_running;
	int64_t sync_us;	/* recent spool write+flush time, a moving average */
	struct event *gather;	/* the next tick for messages still gathering */
	int indexing;		/* a store_pool_index_idle() job is out */
	int64_t last_arrival_ms;	/* when the last new message was queued (atomic: the
					 * index job reads it) */
	int64_t index_ms;		/* when the last index job started */
	int index_asked;	/* the job's yield questions so far (its thread only) */
};

static size_t
id_hash(const char *id)
{
	return util_hash32(0, id, strlen(id)) % QUEUE_HASH;
}

struct local_rcpt {
	size_t idx;
	char *account;
	int64_t quota;
};

struct qjob {
	struct queue *q;
	struct qentry *e;
	/* inputs (copies) */
	char *data_dir;
	char *dir;
	char *hostname;
	int64_t max_age;
	int64_t retry_interval, retry_max;
	int max_hops;
	struct spool_msg snap;	/* envelope and state as of job start */
	struct buf content;
	int have_content;
	struct local_rcpt *locals;
	size_t nlocals;
	struct qres *results;	/* given (remote) + produced (local, expiry) */
	size_t nresults;
	size_t held;		/* of those, the remote ones: each holds the server's stop */
	int lockfd;		/* the entry's pending_lockfd, taken with them; or -1 */
	int expire;
	int warn;
	/* state records, written at the end of the job unless the file goes */
	struct buf recs;
	int recs_keep;		/* a remote result: write recs even then */
	/* outputs */
	int warned;
	int removed;
	struct spool_msg *notices[3];	/* delayed, failed, delivered */
	int error;
	/* where a notice goes: the sender, expanded like any recipient (none: as it is) */
	struct spool_rcpt *notice_to;
	size_t nnotice_to;
};

void
queue_dir(const char *data_dir, struct buf *out)
{
	buf_printf(out, "%s/queue", data_dir);
}

/* e takes content from *from if QUEUE_KEEP_BYTES allows, else leaves it there. */
static void
entry_content_in(struct queue *q, struct qentry *e, struct buf *from)
{
	if (e->have_content || q->kept + from->len > QUEUE_KEEP_BYTES)
		return;
	q->kept += from->len;
	buf_free(&e->content);
	e->content = *from;
	buf_init(from, 0);
	e->have_content = 1;
}

/* e lets go of its content: into *to, or freed if to is NULL. */
static void
entry_content_out(struct queue *q, struct qentry *e, struct buf *to)
{
	if (e->have_content)
		q->kept -= e->content.len;
	e->have_content = 0;
	if (to != NULL) {
		*to = e->content;
		buf_init(&e->content, 0);
	} else {
		buf_free(&e->content);
	}
}

static void
entry_free(struct queue *q, struct qentry *e)
{
	spool_msg_free(&e->msg);
	entry_content_out(q, e, NULL);
	for (size_t i = 0; i < e->npending; i++) {
		free(e->pending[i].text);
		free(e->pending[i].remote);
	}
	free(e->pending);
	if (e->pending_lockfd >= 0)
		close(e->pending_lockfd);
	free(e);
}

static void entry_ready(struct queue *q, struct qentry *e);
static void ready_remove(struct queue *q, struct qentry *e);
static void heap_remove(struct queue *q, struct qentry *e);

static void
entry_link(struct queue *q, struct qentry *e)
{
	size_t b = id_hash(e->msg.id);
	e->hnext = q->hash[b];
	q->hash[b] = e;
	e->prev = q->tail;
	e->next = NULL;
	if (q->tail)
		q->tail->next = e;
	else
		q->head = e;
	q->tail = e;
	q->n++;
	entry_ready(q, e);
}

static void
entry_unlink(struct queue *q, struct qentry *e)
{
	struct qentry **pp = &q->hash[id_hash(e->msg.id)];
	while (*pp && *pp != e)
		pp = &(*pp)->hnext;
	if (*pp)
		*pp = e->hnext;
	if (e->prev)
		e->prev->next = e->next;
	else
		q->head = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		q->tail = e->prev;
	q->n--;
	ready_remove(q, e);
	heap_remove(q, e);
}

/* ---- ready list and due heap ---- */

static void
heap_swap(struct queue *q, size_t a, size_t b)
{
	struct qentry *t = q->heap[a];
	q->heap[a] = q->heap[b];
	q->heap[b] = t;
	q->heap[a]->hidx = a + 1;
	q->heap[b]->hidx = b + 1;
}

static void
heap_fix(struct queue *q, size_t i)
{
	while (i > 0 && q->heap[(i - 1) / 2]->due > q->heap[i]->due) {
		heap_swap(q, i, (i - 1) / 2);
		i = (i - 1) / 2;
	}
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i;
		if (l < q->nheap && q->heap[l]->due < q->heap[m]->due)
			m = l;
		if (r < q->nheap && q->heap[r]->due < q->heap[m]->due)
			m = r;
		if (m == i)
			break;
		heap_swap(q, i, m);
		i = m;
	}
}

static void
heap_remove(struct queue *q, struct qentry *e)
{
	if (e->hidx == 0)
		return;
	size_t i = e->hidx - 1;
	e->hidx = 0;
	if (i != --q->nheap) {
		q->heap[i] = q->heap[q->nheap];
		q->heap[i]->hidx = i + 1;
		heap_fix(q, i);
	}
}

static void
ready_remove(struct queue *q, struct qentry *e)
{
	if (!e->ready)
		return;
	e->ready = 0;
	if (e->rprev)
		e->rprev->rnext = e->rnext;
	else
		q->rhead = e->rnext;
	if (e->rnext)
		e->rnext->rprev = e->rprev;
	else
		q->rtail = e->rprev;
	e->rprev = e->rnext = NULL;
}

/* Something may be due for e now: the next tick looks at it. */
static void
entry_ready(struct queue *q, struct qentry *e)
{
	heap_remove(q, e);
	if (e->ready)
		return;
	e->ready = 1;
	e->rnext = NULL;
	e->rprev = q->rtail;
	if (q->rtail)
		q->rtail->rnext = e;
	else
		q->rhead = e;
	q->rtail = e;
}

/* Nothing for e before due (INT64_MAX: before an event readies it). */
static void
entry_wait(struct queue *q, struct qentry *e, int64_t due)
{
	ready_remove(q, e);
	heap_remove(q, e);
	if (due == INT64_MAX)
		return;
	if (q->nheap == q->heapcap) {
		q->heapcap = q->heapcap ? q->heapcap * 2 : 64;
		q->heap = xrealloc(q->heap, q->heapcap * sizeof(*q->heap));
	}
	e->due = due;
	q->heap[q->nheap++] = e;
	e->hidx = q->nheap;
	heap_fix(q, q->nheap - 1);
}

static struct qentry *
entry_find(struct queue *q, const char *id)
{
	for (struct qentry *e = q->hash[id_hash(id)]; e; e = e->hnext)
		if (strcmp(e->msg.id, id) == 0)
			return e;
	return NULL;
}

static void
resolve_cb(const char *addr, int local, void *arg)
{
	struct spool_rcpt *rc = arg;
	if (local && !rc->local) {
		free(rc->addr);
		rc->addr = xstrdup(addr);
		rc->local = 1;
	}
}

/*
 * A message queued before local parts were kept in NFC (accounts.c) names
 * its local recipients as they were spelt then: in NFC, as the users are
 * now, or the delivery would find no such user, and a store's path would
 * be spelt two ways.
 */
static void
rcpts_nfc(struct spool_msg *m)
{
	for (size_t i = 0; i < m->nrcpts; i++) {
		struct spool_rcpt *rc = &m->rcpts[i];
		if (rc->local != 1 || !util_has_8bit(rc->addr, strlen(rc->addr)))
			continue;
		struct buf n = BUF_INIT(0), e = BUF_INIT(0);
		if (accounts_normalise(rc->addr, 0, &n, &e) == 0 && strcmp(n.data, rc->addr) != 0) {
			free(rc->addr);
			rc->addr = buf_steal(&n);
		}
		buf_free(&n);
		buf_free(&e);
	}
}

static void
notice_to_free(struct qjob *j)
{
	for (size_t i = 0; i < j->nnotice_to; i++)
		free(j->notice_to[i].addr);
	free(j->notice_to);
	j->notice_to = NULL;
	j->nnotice_to = 0;
}

static void
notice_to_cb(const char *addr, int local, void *arg)
{
	struct qjob *j = arg;

	j->notice_to = xrealloc(j->notice_to, (j->nnotice_to + 1) * sizeof(*j->notice_to));
	j->notice_to[j->nnotice_to++] = (struct spool_rcpt){.addr = xstrdup(addr), .local = local};
}

/*
 * (queue.h) An address of a local domain that is no user (any more) is left
 * to the local delivery, which fails it (5.1.1) and so drops the notice:
 * never to the outbound transport, whose MX lookup would lead back here.
 */
void
queue_notice_rcpt(struct accounts *a, struct spool_msg *m)
{
	struct spool_rcpt *rc = &m->rcpts[0];

	if (!m->is_notice || m->nrcpts != 1 || rc->local)
		return;
	int n = accounts_resolve(a, rc->addr, resolve_cb, rc);
	const char *at = strrchr(rc->addr, '@');
	struct buf dom = BUF_INIT(0), err = BUF_INIT(0);
	if (n == 0 && at != NULL && accounts_normalise_domain(at + 1, &dom, &err) == 0 &&
	    accounts_domain_exists(a, dom.data) == 1)
		rc->local = 1;
	buf_free(&dom);
	buf_free(&err);
}

static void
copy_msg(struct spool_msg *dst, const struct spool_msg *src)
{
	*dst = *src;
#define DUP(f) dst->f = src->f ? xstrdup(src->f) : NULL
	DUP(mail_from);
	DUP(envid);
	DUP(client_ip);
	DUP(helo);
	DUP(auth_user);
	DUP(session);
	DUP(reports);
	dst->rcpts = xcalloc(src->nrcpts ? src->nrcpts : 1, sizeof(*dst->rcpts));
	for (size_t i = 0; i < src->nrcpts; i++) {
		dst->rcpts[i] = src->rcpts[i];
		DUP(rcpts[i].addr);
		DUP(rcpts[i].orig);
		DUP(rcpts[i].orcpt);
		DUP(rcpts[i].last_error);
		DUP(rcpts[i].remote);
	}
#undef DUP
}

/* Nothing left to do for rc: delivered (its success notice written) or failed. */
static int
rcpt_final(const struct spool_rcpt *rc)
{
	return (rc->status == RCPT_DELIVERED && !rc->notice_owed) || rc->status == RCPT_FAILED;
}

/*
 * When m's delay warning falls due: INT64_MAX if sent already, turned off,
 * or a recipient is still untried (its first attempt, still running, may
 * yet defer it: asked before, the answer "nothing delayed" would be final).
 */
static int64_t
warn_time(const struct config *cfg, const struct spool_msg *m)
{
	if (m->delay_warned || cfg->queue_delay_warning <= 0)
		return INT64_MAX;
	for (size_t i = 0; i < m->nrcpts; i++)
		if (m->rcpts[i].status == RCPT_PENDING)
			return INT64_MAX;
	return m->created + cfg->queue_delay_warning;
}

static int
warn_due(const struct config *cfg, const struct spool_msg *m, int64_t now)
{
	return warn_time(cfg, m) <= now;
}

/* Whether rc waits for its next_try: deferred, or its success notice owed. */
static int
rcpt_timed(const struct spool_rcpt *rc)
{
	return rc->status == RCPT_DEFERRED || rc->notice_owed;
}

static int
rcpt_due(const struct spool_rcpt *rc, int64_t now)
{
	return rc->status == RCPT_PENDING || (rcpt_timed(rc) && rc->next_try <= now);
}

static int64_t
retry_delay(const struct qjob *j, unsigned attempts)
{
	int64_t d = j->retry_interval;
	for (unsigned i = 1; i < attempts && d < j->retry_max; i++)
		d *= 2;
	if (d > j->retry_max && j->retry_max >= j->retry_interval)
		d = j->retry_max;
	return d;
}

/* Apply one result to a message's in-memory state (job snapshot or entry). */
static void
apply_result(struct spool_msg *m, const struct qres *r, int64_t next_try)
{
	struct spool_rcpt *rc = &m->rcpts[r->idx];
	/* Copy before freeing: r may point at rc's own strings (expiry). */
	char *text = r->text ? xstrdup(r->text) : NULL;
	char *remote = r->remote ? xstrdup(r->remote) : NULL;
	rc->attempts++;
	free(rc->last_error);
	free(rc->remote);
	rc->last_error = text;
	rc->remote = remote;
	rc->notice_owed = 0;
	rc->bounced = 0;
	switch (r->r) {
	case DELIVER_OK:
		rc->status = RCPT_DELIVERED;
		break;
	case DELIVER_PERMFAIL:
		rc->status = RCPT_FAILED;
		break;
	case DELIVER_TEMPFAIL:
		rc->status = RCPT_DEFERRED;
		rc->next_try = next_try;
		break;
	}
}

static const char *
result_word(enum deliver_result r)
{
	return r == DELIVER_OK ? "sent" : r == DELIVER_TEMPFAIL ? "deferred" : "bounced";
}

/*
 * Apply a result to the job's snapshot and queue its state record. The
 * records reach the spool file in one write at the end of the job, and not
 * at all when the job removes the file: a local delivery is in the store
 * under its dedup key, so if a crash brings the file back the delivery
 * repeats as a no-op.
 */
static void
job_record(struct qjob *j, struct qres *r)
{
	struct spool_rcpt *rc = &j->snap.rcpts[r->idx];
	int64_t now = util_now_ms() / 1000;
	int64_t next = r->flushed ? now : now + retry_delay(j, rc->attempts + 1);
	enum spool_rec type = r->r == DELIVER_OK	 ? SPOOL_REC_DELIVERED
			      : r->r == DELIVER_PERMFAIL ? SPOOL_REC_FAILED
							 : SPOOL_REC_DEFERRED;

	spool_state_record(&j->recs, j->snap.seed, type, r->idx, rc->attempts + 1, next, r->text, r->remote);
	apply_result(&j->snap, r, next);
	char a[300], t[300], rem[128];
	log_msg(LL_INFO, j->snap.session,
		"delivery id=%s rcpt=%s status=%s relay=%s attempt=%u delay=%llds reason=\"%s\"",
		j->snap.id, log_esc_also(a, sizeof(a), rc->addr, " "), result_word(r->r),
		rc->local == SPOOL_EXPANDED ? "alias"
		: rc->local		    ? "local"
					    : log_esc(rem, sizeof(rem), rc->remote ? rc->remote : "none"),
		rc->attempts, (long long)(now - j->snap.created),
		log_esc(t, sizeof(t), rc->last_error ? rc->last_error : ""));
}

/* Write the queued state records. 0 or -1 (j->error set). */
static int
job_write_records(struct qjob *j)
{
	struct buf err = BUF_INIT(0);

	if (j->recs.len == 0)
		return 0;
	if (spool_append_records(j->dir, &j->snap, &j->recs, &err) < 0) {
		log_error("queue %s: cannot record state: %s", j->snap.id, buf_str(&err));
		j->error = 1;
		buf_free(&err);
		return -1;
	}
	buf_reset(&j->recs);
	buf_free(&err);
	return 0;
}

static void
job_add_result(struct qjob *j, size_t idx, enum deliver_result r, const char *text,
	       const char *remote)
{
	j->results = xrealloc(j->results, (j->nresults + 1) * sizeof(*j->results));
	j->results[j->nresults++] = (struct qres){idx, r, text ? xstrdup(text) : NULL,
						  remote ? xstrdup(remote) : NULL, 0, 0};
}

static int
job_content(struct qjob *j)
{
	if (j->have_content)
		return 0;
	struct spool_msg tmp;
	struct buf err = BUF_INIT(0);
	if (spool_load(j->dir, spool_file(&j->snap), j->snap.id, &tmp, &j->content, &err) < 0) {
		log_error("queue %s: cannot read: %s", j->snap.id, buf_str(&err));
		buf_free(&err);
		j->error = 1;	/* tried again after a pause, not at once */
		return -1;
	}
	spool_msg_free(&tmp);
	buf_free(&err);
	j->have_content = 1;
	return 0;
}

/* The longest list of reported recipients a notice's envelope keeps. */
#define QUEUE_REPORTS_MAX 4096

/* The indexes of the recipients a notice of kind reports, as "0,2,5". */
static void
notice_reports(const struct spool_msg *m, enum dsn_kind kind, struct buf *out)
{
	buf_reset(out);
	for (size_t i = 0; i < m->nrcpts; i++)
		if (dsn_reports(&m->rcpts[i], kind))
			buf_printf(out, "%s%zu", out->len ? "," : "", i);
}

/* Whether the list s ("0,2,5", from a spool file) holds index i. */
static int
reports_has(const char *s, size_t i)
{
	uint64_t v;

	while (*s) {
		size_t n = strcspn(s, ",");
		if (util_parse_u64(s, n, &v) == 0 && v == i)
			return 1;
		s += n + (s[n] == ',');
	}
	return 0;
}

/*
 * Build the notice of kind named nid for what the snapshot reports (rep)
 * and write it. 0 with *n_r the notice, 1 if one of that name is queued
 * already (*n_r NULL), -1 (logged, *n_r NULL).
 */
static int
notice_write(struct qjob *j, enum dsn_kind kind, const char *nid, const struct buf *rep,
	     struct spool_msg **n_r)
{
	struct spool_msg *n = xcalloc(1, sizeof(*n));
	struct buf c = BUF_INIT(0), err = BUF_INIT(0);

	/*
	 * A client without AUTH names any sender it likes and can make delivery
	 * fail at will (a Delivered-To: loop, a full mailbox): a notice that
	 * returned its text whole to a remote address would relay that text
	 * there (backscatter). It returns the header only, as a success
	 * notice does; a user's own submission, or a notice that stays
	 * local, is returned whole.
	 */
	int hdrs_only = j->snap.auth_user == NULL || j->snap.auth_user[0] == '\0';
	if (hdrs_only && j->nnotice_to > 0) {
		hdrs_only = 0;
		for (size_t i = 0; i < j->nnotice_to; i++)
			hdrs_only |= !j->notice_to[i].local;
	}
	dsn_build(&j->snap, j->content.data ? j->content.data : "", j->content.len, kind,
		  j->hostname, nid, j->max_age, hdrs_only, n, &c);
	if (j->nnotice_to > 0) {
		/* One recipient per member: the same addresses mail to the sender reaches. */
		struct spool_rcpt proto = n->rcpts[0];
		n->rcpts = xrealloc(n->rcpts, j->nnotice_to * sizeof(*n->rcpts));
		n->nrcpts = j->nnotice_to;
		for (size_t i = 0; i < j->nnotice_to; i++) {
			n->rcpts[i] = proto;
			n->rcpts[i].addr = xstrdup(j->notice_to[i].addr);
			n->rcpts[i].orig = xstrdup(proto.orig);
			n->rcpts[i].local = j->notice_to[i].local;
		}
		free(proto.addr);
		free(proto.orig);
	}
	snprintf(n->id, sizeof(n->id), "%s", nid);
	/* (Not for thousands: the envelope must stay within what a look at a
	 * file's head reads, spool_holds(). Without it, the old behaviour.) */
	if (rep->len <= QUEUE_REPORTS_MAX)
		n->reports = xstrdup(buf_str(rep));
	/*
	 * Its nonce comes from the message's and what it reports, not from
	 * chance: a crash between this write and the record of it (or the
	 * message's removal) makes the same notice again, under the same id,
	 * perhaps once the first was delivered and its file gone. With the
	 * same dedup key a local mailbox takes it once. (A delay notice is
	 * sent once a message, whichever recipients it names.)
	 */
	uint32_t a = util_crc32(0xffffffffu, j->snap.nonce, strlen(j->snap.nonce));
	uint32_t b = kind == DSN_DELAYED ? a : util_crc32(a, rep->data ? rep->data : "", rep->len);
	snprintf(n->nonce, sizeof(n->nonce), "%08x%08x", (unsigned)util_crc32(b, "n", 1),
		 (unsigned)b);
	n->size = c.len;
	int rc = spool_write(j->q->spool, j->dir, n, c.data, c.len, 1, &err);
	if (rc < 0)
		log_error("queue %s: cannot write notice: %s", j->snap.id, buf_str(&err));
	if (rc == 0) {
		/* The sender is the client's text: escaped, spaces too (no quotes). */
		char to[300];
		log_msg(LL_INFO, j->snap.session, "notice id=%s kind=%s for=%s to=%s", n->id,
			dsn_kind_name(kind), j->snap.id,
			log_esc_also(to, sizeof(to), j->snap.mail_from, " "));
		*n_r = n;
	} else {
		spool_msg_free(n);
		free(n);
		*n_r = NULL;
	}
	buf_free(&c);
	buf_free(&err);
	return rc;
}

/* Tries at writing a notice under a name taken (each a read of the file there). */
#define QUEUE_NOTICE_TRIES 16

/*
 * first: for a success notice, or a bounce after the message's first, its
 * first recipient's index, which names it (SIZE_MAX: a bounce named -b).
 *
 * A notice of that name may be queued already, written before a crash cut
 * its job short of recording it. If it reports what this one would, it is
 * this one. If a recipient has failed (or been delivered) since, it reports
 * fewer: they are left out of this one, which reports the rest under the
 * next free name. (A delay notice is sent once a message whatever it says.)
 */
static struct spool_msg *
job_notice(struct qjob *j, enum dsn_kind kind, size_t first)
{
	struct spool_msg *n = NULL;
	struct buf rep = BUF_INIT(0), err = BUF_INIT(0);
	enum rcpt_status *was = xcalloc(j->snap.nrcpts ? j->snap.nrcpts : 1, sizeof(*was));
	char nid[QUEUE_ID_LEN + 1];
	size_t k = 0;
	int tries = 0;

	for (size_t i = 0; i < j->snap.nrcpts; i++)
		was[i] = j->snap.rcpts[i].status;
	for (;;) {
		if (k > 0) /* (still a name `surat queue` knows) */
			snprintf(nid, sizeof(nid), "%.16s-%c%zx", j->snap.id,
				 kind == DSN_FAILED ? 'b' : 's', ((first + 1) + k) & 0xffff);
		else if (kind == DSN_DELIVERED || (kind == DSN_FAILED && first != SIZE_MAX))
			snprintf(nid, sizeof(nid), "%.16s-%c%zx", j->snap.id,
				 kind == DSN_FAILED ? 'b' : 's', first & 0xffff);
		else
			snprintf(nid, sizeof(nid), "%.16s-%c", j->snap.id,
				 kind == DSN_FAILED ? 'b' : 'd');
		notice_reports(&j->snap, kind, &rep);
		if (rep.len == 0)
			break; /* all reported by those found written */
		int rc = notice_write(j, kind, nid, &rep, &n);
		if (rc <= 0) {
			j->error = rc < 0;
			break;
		}
		struct spool_msg old;
		buf_reset(&err);
		if (spool_load(j->dir, nid, nid, &old, NULL, &err) < 0) {
			/* Gone since (delivered): its name is free again. */
			if (++tries < QUEUE_NOTICE_TRIES)
				continue;
			log_error("queue %s: cannot read notice %s: %s", j->snap.id, nid,
				  buf_str(&err));
			j->error = 1;
			break;
		}
		int same = old.reports == NULL || kind == DSN_DELAYED ||
			   strcmp(old.reports, buf_str(&rep)) == 0;
		/* Those it reports are out of this one (as if not in that state). */
		for (size_t i = 0; !same && i < j->snap.nrcpts; i++)
			if (reports_has(old.reports, i) && dsn_reports(&j->snap.rcpts[i], kind))
				j->snap.rcpts[i].status = RCPT_PENDING;
		spool_msg_free(&old);
		if (same)
			break;
		if (++k >= QUEUE_NOTICE_TRIES) {
			/* Not lost: its recipients stay unrecorded, tried again. */
			log_error("queue %s: no free name for a notice", j->snap.id);
			j->error = 1;
			break;
		}
	}
	for (size_t i = 0; i < j->snap.nrcpts; i++)
		j->snap.rcpts[i].status = was[i];
	free(was);
	buf_free(&rep);
	buf_free(&err);
	return n;
}

/*
 * Record recipient idx's success notice as owed (written again at the next
 * try; the recipient stays delivered) or as settled (written, or dropped).
 */
static void
job_notice_state(struct qjob *j, size_t idx, int owed)
{
	struct spool_rcpt *rc = &j->snap.rcpts[idx];
	int64_t next = util_now_ms() / 1000 + retry_delay(j, rc->attempts);

	spool_state_record(&j->recs, j->snap.seed,
			   owed ? SPOOL_REC_NOTICE_OWED : SPOOL_REC_DELIVERED, idx, rc->attempts, next,
			   rc->last_error, rc->remote);
	rc->notice_owed = owed;
	if (owed)
		rc->next_try = next;
}

/* Whether recipient idx was handed by this job's results to a peer without DSN. */
static int
job_relayed(const struct qjob *j, size_t idx)
{
	for (size_t k = 0; k < j->nresults; k++)
		if (j->results[k].relayed && j->results[k].r == DELIVER_OK &&
		    (idx == SIZE_MAX || j->results[k].idx == idx))
			return 1;
	return 0;
}

/*
 * Whether this job's success notice reports recipient i: one it delivered
 * (locally, or to a peer without DSN) or one whose notice is owed.
 */
static int
job_reports(const struct qjob *j, size_t i)
{
	if (j->snap.rcpts[i].notice_owed || job_relayed(j, i))
		return 1;
	for (size_t k = 0; k < j->nlocals; k++)
		if (j->locals[k].idx == i)
			return 1;
	return 0;
}

/*
 * The success notice (RFC 3461 6.2) for the recipients that asked for one
 * (NOTIFY=SUCCESS) and that this job reports (job_reports): "delivered"
 * into a mailbox, "relayed" to a peer that does not do DSN (RFC 3461
 * 5.2.2: nobody further on will report), "expanded" for an alias. Those
 * of an earlier job were reported then, or are owed and reported now.
 * Each such job writes its own, named by its first recipient: a recipient
 * is reported once, so no two written notices share a name, and a job run
 * again after a crash finds its notice written already.
 */
static void
job_success_notice(struct qjob *j)
{
	struct spool_msg *m = &j->snap;
	enum rcpt_status *was = xcalloc(m->nrcpts, sizeof(*was));
	size_t first = SIZE_MAX;

	for (size_t i = 0; i < m->nrcpts; i++) {
		int now = job_reports(j, i);
		was[i] = m->rcpts[i].status;
		if (!now && was[i] == RCPT_DELIVERED)
			m->rcpts[i].status = RCPT_PENDING;	/* left out of this notice */
		else if (now && was[i] == RCPT_DELIVERED && first == SIZE_MAX &&
			 dsn_wanted(&m->rcpts[i], DSN_DELIVERED))
			first = i;
	}
	if (dsn_needed(m, DSN_DELIVERED))
		j->notices[2] = job_notice(j, DSN_DELIVERED, first);
	for (size_t i = 0; i < m->nrcpts; i++)
		m->rcpts[i].status = was[i];
	free(was);
	for (size_t i = 0; i < m->nrcpts && !j->error; i++)
		if (m->rcpts[i].notice_owed)
			job_notice_state(j, i, 0);
}

/* Whether a recipient's success notice is owed and due (any, if all). */
static int
job_owes_notice(const struct qjob *j, int64_t now, int all)
{
	for (size_t i = 0; i < j->snap.nrcpts; i++) {
		const struct spool_rcpt *rc = &j->snap.rcpts[i];
		if (rc->notice_owed && (all || rc->next_try <= now))
			return 1;
	}
	return 0;
}

/*
 * The success notice could not be written (a full disk, say). The
 * recipients it reports stay delivered (sending again would reach a peer
 * twice), their notice recorded owed: the next try writes only the notice.
 */
static void
job_notice_owed(struct qjob *j)
{
	for (size_t i = 0; i < j->snap.nrcpts; i++) {
		struct spool_rcpt *rc = &j->snap.rcpts[i];
		if (rc->status == RCPT_DELIVERED && job_reports(j, i) &&
		    dsn_wanted(rc, DSN_DELIVERED))
			job_notice_state(j, i, 1);
	}
}

/*
 * A success notice still not written when the message has been in the
 * queue for queue.max_age is given up, so that the message can end. Its
 * recipients stay delivered: they are never bounced.
 */
static void
job_notice_dropped(struct qjob *j)
{
	char from[300];
	log_error("queue %s: success notice to <%s> given up after queue.max_age", j->snap.id,
		  log_esc(from, sizeof(from), j->snap.mail_from));
	for (size_t i = 0; i < j->snap.nrcpts; i++)
		if (j->snap.rcpts[i].notice_owed)
			job_notice_state(j, i, 0);
	j->error = 0;
}

/*
 * The bounce for the failed recipients not reported yet. The first a message
 * gets is named -b, a later one by its first recipient; those it reports are
 * recorded as such unless it is the last (the file goes then).
 */
static void
job_bounce(struct qjob *j, int last)
{
	struct spool_msg *m = &j->snap;
	size_t first = SIZE_MAX;
	int earlier = 0;

	for (size_t i = 0; i < m->nrcpts; i++) {
		earlier |= m->rcpts[i].bounced;
		if (first == SIZE_MAX && dsn_reports(&m->rcpts[i], DSN_FAILED))
			first = i;
	}
	if (job_content(j) < 0)
		return;
	j->notices[1] = job_notice(j, DSN_FAILED, earlier ? first : SIZE_MAX);
	if (j->error || last)
		return;
	for (size_t i = 0; i < m->nrcpts; i++) {
		if (dsn_reports(&m->rcpts[i], DSN_FAILED)) {
			spool_state_record(&j->recs, m->seed, SPOOL_REC_BOUNCED, i, 0, 0, NULL, NULL);
			m->rcpts[i].bounced = 1;
		}
	}
}

static void
job_run(struct qjob *j)
{
	int64_t now = util_now_ms() / 1000;
	char path[4096];

	/* `surat queue delete` removed the file (or, never expected, it went to
	 * another message): forget the message, touch nothing. Local
	 * deliveries hold the file's shared lock, so that a delete waits for
	 * them or says it cannot, never reports a message deleted that is
	 * delivered after. */
	int lockfd = j->lockfd;
	j->lockfd = -1;
	/* The transport's lock, held since it sent the message: it serves the
	 * local deliveries too (a second lock of ours would make the
	 * retiring wait for ever, see spool_retire()). */
	int holds = lockfd < 0 && j->nlocals > 0
			? spool_delivery_lock(j->dir, spool_file(&j->snap), j->snap.id, 1, &lockfd)
			: spool_holds(j->dir, spool_file(&j->snap), j->snap.id);
	if (holds != 1) {
		if (lockfd >= 0)
			close(lockfd);
		lockfd = -1;
		snprintf(path, sizeof(path), "%s/%s", j->dir, spool_file(&j->snap));
		if (holds == 0)
			log_info("queue %s: spool file deleted; message dropped", j->snap.id);
		else
			log_error("queue %s: %s holds another message now; entry dropped",
				  j->snap.id, path);
		j->removed = 1;
		return;
	}

	/* Results the remote transport reported: a repeat would reach the peer
	 * twice, so these are written even if the file then goes. */
	for (size_t i = 0; i < j->nresults; i++)
		job_record(j, &j->results[i]);
	j->recs_keep = j->nresults > 0;

	if (j->nlocals > 0 && job_content(j) == 0) {
		for (size_t i = 0; i < j->nlocals; i++) {
			struct local_rcpt *lr = &j->locals[i];
			struct spool_rcpt *rc = &j->snap.rcpts[lr->idx];
			struct buf why = BUF_INIT(0);
			char key[64];
			spool_dedup_key(&j->snap, lr->idx, key, sizeof(key));
			enum deliver_result r = DELIVER_OK;
			if (rc->local == SPOOL_EXPANDED)
				buf_puts(&why, "2.0.0 Alias expanded to its members");
			else
				r = local_deliver(j->data_dir, lr->account, j->snap.mail_from,
						  j->content.data, j->content.len, key, lr->quota,
						  j->max_hops, &why);
			struct qres res = {lr->idx, r, why.len ? why.data : NULL, NULL, 0, 0};
			job_record(j, &res);
			buf_free(&why);
		}
	}
	/* A notice that cannot be made now, for want of the content either,
	 * is owed: the recipients it reports are delivered already. */
	if (j->nlocals > 0 || job_relayed(j, SIZE_MAX) || job_owes_notice(j, now, j->expire)) {
		if (!j->error && job_content(j) == 0)
			job_success_notice(j);
		if (j->error && j->expire)
			job_notice_dropped(j);
		else if (j->error)
			job_notice_owed(j);
	}

	if (j->expire && !j->error) {
		for (size_t i = 0; i < j->snap.nrcpts && !j->error; i++) {
			struct spool_rcpt *rc = &j->snap.rcpts[i];
			if (rcpt_final(rc))
				continue;
			struct buf why = BUF_INIT(0);
			char age[32];
			dsn_duration(age, sizeof(age), j->max_age);
			buf_printf(&why, "5.4.7 Delivery time expired after %s%s%s", age,
				   rc->last_error ? "; last error: " : "",
				   rc->last_error ? rc->last_error : "");
			struct qres res = {i, DELIVER_PERMFAIL, why.data, rc->remote, 0, 0};
			job_record(j, &res);
			buf_free(&why);
		}
	}

	int all_final = 1;
	for (size_t i = 0; i < j->snap.nrcpts; i++)
		if (!rcpt_final(&j->snap.rcpts[i]))
			all_final = 0;

	if (j->warn && !all_final && dsn_needed(&j->snap, DSN_DELAYED)) {
		if (!j->error && job_content(j) == 0)
			j->notices[0] = job_notice(j, DSN_DELAYED, 0);
		if (!j->error) {
			spool_state_record(&j->recs, j->snap.seed, SPOOL_REC_WARNED, 0, 0, 0, NULL, NULL);
			j->warned = 1;
		}
	} else if (j->warn) {
		j->warned = 1;	/* nothing to warn about; don't ask again */
	}

	/* Failures are reported now, not when the last recipient is done,
	 * which may be days away (queue.max_age). */
	if (!j->error && dsn_needed(&j->snap, DSN_FAILED))
		job_bounce(j, all_final);

	if (all_final && !j->error) {
		if (!j->error && j->recs_keep)
			job_write_records(j);
		if (!j->error) {
			spool_retire(j->q->spool, j->dir, spool_file(&j->snap), j->snap.size,
				     j->snap.named, lockfd);
			lockfd = -1; /* closed */
			j->removed = 1;
		}
	}
	if (!j->removed)
		job_write_records(j);
	/* Only now: a delete meanwhile would say "deleted" of what was delivered. */
	if (lockfd >= 0)
		close(lockfd);
}

static void
job_work(void *arg)
{
	/* Nobody waits on a delivery's flushes: let them ride on acceptance's. */
	unsigned old = fsbarrier_set_patience(QUEUE_FLUSH_PATIENCE_US);
	job_run(arg);
	fsbarrier_set_patience(old);
}

static void
queue_add_entry(struct queue *q, struct spool_msg *m, struct buf *content)
{
	struct qentry *e = xcalloc(1, sizeof(*e));
	e->pending_lockfd = -1;
	e->msg = *m;
	memset(m, 0, sizeof(*m));
	queue_notice_rcpt(q->srv->accounts, &e->msg);
	e->arrived_ms = util_mono_ms();
	buf_init(&e->content, 0);
	if (content)
		entry_content_in(q, e, content);
	entry_link(q, e);
}

static void
job_free(struct qjob *j)
{
	if (j->lockfd >= 0)
		close(j->lockfd);
	free(j->data_dir);
	free(j->dir);
	free(j->hostname);
	spool_msg_free(&j->snap);
	buf_free(&j->content);
	buf_free(&j->recs);
	for (size_t i = 0; i < j->nlocals; i++)
		free(j->locals[i].account);
	free(j->locals);
	for (size_t i = 0; i < j->nresults; i++) {
		free(j->results[i].text);
		free(j->results[i].remote);
	}
	free(j->results);
	notice_to_free(j);
	free(j);
}

static void
job_done(void *arg)
{
	struct qjob *j = arg;
	struct queue *q = j->q;
	struct qentry *e = j->e;

	e->busy = 0;
	/* The snapshot is what is on disk now. */
	spool_msg_free(&e->msg);
	e->msg = j->snap;
	memset(&j->snap, 0, sizeof(j->snap));
	if (j->warned)
		e->msg.delay_warned = 1;
	if (e->flush) {
		/*
		 * Due now: every deferred recipient but those this job tried
		 * itself, whose attempts were under way when the flush came
		 * (remote results it only recorded were in before).
		 */
		e->flush = 0;
		for (size_t i = 0; i < e->msg.nrcpts; i++) {
			int tried = 0;
			for (size_t k = 0; k < j->nlocals && !tried; k++)
				tried = j->locals[k].idx == i;
			if (!tried && rcpt_timed(&e->msg.rcpts[i]))
				e->msg.rcpts[i].next_try = 0;
		}
	}
	/* Content is dropped after the first pass: it is on disk. */
	entry_content_out(q, e, NULL);
	for (int i = 0; i < 3; i++) {
		if (j->notices[i]) {
			/*
			 * Written under a free name: an entry still under it is a
			 * notice deleted (`surat queue delete`) while it waited for
			 * this message (notice_held). Its job would find this file
			 * there and send it a second time.
			 */
			struct qentry *old = entry_find(q, j->notices[i]->id);
			if (old != NULL && !old->busy && !old->remote_busy && old->npending == 0) {
				entry_unlink(q, old);
				entry_free(q, old);
			}
			queue_add_entry(q, j->notices[i], NULL);
			free(j->notices[i]);
			j->notices[i] = NULL;
		}
	}
	q->srv->holds -= (unsigned)j->held;
	int more = e->npending > 0;
	/* Kept while the transport has it: queue_remote_done() drops it. */
	if (j->removed && !e->remote_busy) {
		q->srv->holds -= (unsigned)e->npending;
		entry_unlink(q, e);
		entry_free(q, e);
	} else if (j->removed) {
		e->retired = 1;
	} else if (j->error) {
		/* (A disk full, say: not again at once.) */
		entry_wait(q, e, util_now_ms() / 1000 + QUEUE_ERROR_PAUSE_S);
	} else {
		entry_ready(q, e);
	}
	job_free(j);
	if (!q->srv->stopping || more)
		event_active(q->kick, 0, 0);
}

/*
 * Whether entry_start_job() would find anything to do: the same tests,
 * without allocating, because the tick asks this of every ready message
 * each time it runs.
 */
static int
entry_has_work(const struct queue *q, const struct qentry *e, int64_t now)
{
	const struct config *cfg = q->srv->cfg;
	int all_final = 1;

	if (e->npending)
		return 1;
	for (size_t i = 0; i < e->msg.nrcpts; i++) {
		const struct spool_rcpt *rc = &e->msg.rcpts[i];
		if (rcpt_final(rc))
			continue;
		all_final = 0;
		if (rcpt_due(rc, now) &&
		    (rc->local || rc->notice_owed || !q->have_remote || !e->remote_busy))
			return 1;
	}
	if (all_final)
		return !e->remote_busy;
	if (now - e->msg.created >= cfg->queue_max_age && !e->remote_busy)
		return 1;
	return warn_due(cfg, &e->msg, now);
}

static void
entry_start_job(struct queue *q, struct qentry *e, int64_t now)
{
	struct config *cfg = q->srv->cfg;
	struct qjob *j = xcalloc(1, sizeof(*j));
	int want = 0;

	j->lockfd = -1;

	j->q = q;
	j->e = e;
	j->data_dir = xstrdup(cfg->data_dir);
	j->dir = xstrdup(q->dir);
	j->hostname = xstrdup(cfg->hostname);
	j->max_age = cfg->queue_max_age;
	j->retry_interval = cfg->queue_retry_interval;
	j->retry_max = cfg->queue_retry_max;
	j->max_hops = (int)cfg->smtp_max_hops;
	copy_msg(&j->snap, &e->msg);
	buf_init(&j->content, 0);
	buf_init(&j->recs, 0);

	/* Remote results waiting to be recorded. */
	if (e->npending) {
		j->results = e->pending;
		j->nresults = e->npending;
		j->held = e->npending;
		j->lockfd = e->pending_lockfd;
		e->pending = NULL;
		e->npending = 0;
		e->pending_lockfd = -1;
		want = 1;
	}
	int all_final = 1;
	size_t nremote = 0;
	size_t *remote_idx = NULL;
	for (size_t i = 0; i < e->msg.nrcpts; i++) {
		struct spool_rcpt *rc = &e->msg.rcpts[i];
		int pending_result = 0;
		for (size_t k = 0; k < j->nresults; k++)
			if (j->results[k].idx == i)
				pending_result = 1;
		if (rcpt_final(rc) || pending_result)
			continue;
		all_final = 0;
		if (!rcpt_due(rc, now))
			continue;
		if (rc->notice_owed) {
			want = 1;	/* only its notice to write (job_run) */
			continue;
		}
		if (rc->local == SPOOL_EXPANDED) {
			/* Nothing to deliver (its members are recipients of their
			 * own), but reported like a local delivery. */
			j->locals = xrealloc(j->locals, (j->nlocals + 1) * sizeof(*j->locals));
			j->locals[j->nlocals++] = (struct local_rcpt){i, NULL, 0};
			want = 1;
		} else if (rc->local) {
			struct account_user u = {0};
			int64_t quota = cfg->user_quota;
			int found = accounts_user_get(q->srv->accounts, rc->addr, &u);
			if (found == 1) {
				if (u.quota >= 0)
					quota = u.quota;
				accounts_user_free(&u);
			} else if (found == 0) {
				/* The user was deleted after the message was accepted. */
				job_add_result(j, i, DELIVER_PERMFAIL, "5.1.1 No such user here", NULL);
				want = 1;
				continue;
			} else {
				/* The lookup failed: no answer, so no bounce (RFC 3463 X.3.0). */
				job_add_result(j, i, DELIVER_TEMPFAIL,
					       "4.3.0 Temporary accounts lookup failure", NULL);
				want = 1;
				continue;
			}
			j->locals = xrealloc(j->locals, (j->nlocals + 1) * sizeof(*j->locals));
			j->locals[j->nlocals++] = (struct local_rcpt){i, xstrdup(rc->addr), quota};
			want = 1;
		} else if (q->have_remote) {
			if (e->remote_busy)
				continue;
			remote_idx = xrealloc(remote_idx, (nremote + 1) * sizeof(size_t));
			remote_idx[nremote++] = i;
		} else {
			job_add_result(j, i, DELIVER_TEMPFAIL,
				       "4.4.1 No outbound transport available yet", NULL);
			want = 1;
		}
	}
	if (!all_final && now - e->msg.created >= cfg->queue_max_age && !e->remote_busy) {
		j->expire = 1;
		want = 1;
	}
	if (!all_final && warn_due(cfg, &e->msg, now)) {
		j->warn = 1;
		want = 1;
	}
	if (all_final && !e->remote_busy)
		want = 1;	/* bounce if needed, then remove */
	if (nremote > 0 && !j->expire) {
		e->remote_busy = 1;
		q->remote.deliver(q->remote.ctx, q, &e->msg, remote_idx, nremote);
	}
	free(remote_idx);
	if (!want) {
		/* The transport reads the content when it sends. */
		entry_content_out(q, e, NULL);
		job_free(j);
		return;
	}
	/*
	 * Should the job write a notice, an alias as sender expands here, on the
	 * loop (the accounts are the loop's): every member gets it, as every
	 * member gets mail sent to the alias. (A remote sender: one lookup.)
	 */
	if (!e->msg.is_notice && e->msg.mail_from != NULL && e->msg.mail_from[0] != '\0' &&
	    accounts_resolve(q->srv->accounts, e->msg.mail_from, notice_to_cb, j) < 0)
		notice_to_free(j);	/* as it is, then */
	if (e->have_content) {
		entry_content_out(q, e, &j->content);
		j->have_content = 1;
	}
	e->busy = 1;
	worker_submit(q->pool, job_work, job_done, j);
}

/*
 * Local delivery in batches. A message whose one recipient is a local
 * account and that was never tried goes to a batch job of that account,
 * with every other such message waiting for it: one store transaction, one
 * flush for their files and one for the index, however many there are.
 * One batch per account runs at a time, so an account's deliveries never
 * contend for its index, and messages that arrive meanwhile make the next
 * batch. A delivered message's spool file is removed with no state record
 * (its dedup key is in the store); anything else (a loop, the quota, a
 * store error) leaves the message as it was for the per-message job, which
 * records and reports it.
 */
struct lbatch_item {
	struct qentry *e;
	struct buf content;
	int have_content;
	char id[QUEUE_ID_LEN + 1];
	char file[QUEUE_ID_LEN + 2];	/* the spool file holding it */
	char *session;
	int64_t created;
	char key[64];
	char *from;	/* the envelope sender, for Return-Path */
	struct buf why;
	enum deliver_result r;
	int removed;
	int named;	/* the spool file may be recycled */
};

struct lbatch {
	struct queue *q;
	char *account;
	char *data_dir;
	char *dir;
	int64_t quota;
	struct lbatch_item *items;
	size_t n;
	uint64_t bytes;	/* content octets of its items */
	struct lbatch *next;
};

static int
entry_batchable(const struct qentry *e)
{
	/* (A batch reports nothing: a "delivered" notice needs the per-message job.) */
	return !e->no_batch && e->npending == 0 && !e->remote_busy && e->msg.nrcpts == 1 &&
	       e->msg.rcpts[0].local && e->msg.rcpts[0].status == RCPT_PENDING &&
	       !(e->msg.rcpts[0].notify & NOTIFY_SUCCESS);
}

static struct lbatch *
batch_find(struct lbatch *list, const char *account)
{
	for (; list; list = list->next)
		if (strcmp(list->account, account) == 0)
			return list;
	return NULL;
}

static void
batch_free(struct lbatch *b)
{
	for (size_t i = 0; i < b->n; i++) {
		buf_free(&b->items[i].content);
		buf_free(&b->items[i].why);
		free(b->items[i].session);
		free(b->items[i].from);
	}
	free(b->items);
	free(b->account);
	free(b->data_dir);
	free(b->dir);
	free(b);
}

/*
 * Put e in its account's batch being built in *building, starting one if
 * needed. 0 if taken, or if it must wait for a later batch (its account's
 * batch is running, or this one is full: e stays not busy); -1 if e is left
 * to the per-message job.
 */
static int
batch_add(struct queue *q, struct lbatch **building, struct qentry *e)
{
	const char *account = e->msg.rcpts[0].addr;

	if (batch_find(q->batches, account) != NULL)
		return 0;	/* its account is busy: the batch's end kicks the queue */
	struct lbatch *b = batch_find(*building, account);
	if (b == NULL) {
		struct account_user u = {0};
		int64_t quota = q->srv->cfg->user_quota;
		if (accounts_user_get(q->srv->accounts, account, &u) != 1) {
			e->no_batch = 1;	/* deleted user: the job bounces it */
			return -1;
		}
		if (u.quota >= 0)
			quota = u.quota;
		accounts_user_free(&u);
		b = xcalloc(1, sizeof(*b));
		b->q = q;
		b->account = xstrdup(account);
		b->data_dir = xstrdup(q->srv->cfg->data_dir);
		b->dir = xstrdup(q->dir);
		b->quota = quota;
		b->items = xcalloc(QUEUE_BATCH_MAX, sizeof(*b->items));
		b->next = *building;
		*building = b;
	}
	if (b->n == QUEUE_BATCH_MAX || (b->n > 0 && b->bytes + e->msg.size > QUEUE_BATCH_BYTES))
		return 0;	/* the next batch */
	b->bytes += e->msg.size;
	struct lbatch_item *it = &b->items[b->n++];
	it->e = e;
	memcpy(it->id, e->msg.id, sizeof(it->id));
	snprintf(it->file, sizeof(it->file), "%s", spool_file(&e->msg));
	it->session = e->msg.session ? xstrdup(e->msg.session) : NULL;
	it->from = xstrdup(e->msg.mail_from ? e->msg.mail_from : "");
	it->created = e->msg.created;
	it->named = e->msg.named;
	spool_dedup_key(&e->msg, 0, it->key, sizeof(it->key));
	buf_init(&it->content, 0);
	buf_init(&it->why, 0);
	if (e->have_content) {
		entry_content_out(q, e, &it->content);
		it->have_content = 1;
	}
	e->busy = 1;
	return 0;
}

static void
batch_run(struct lbatch *b)
{
	struct local_item *li = xcalloc(b->n, sizeof(*li));
	size_t *which = xcalloc(b->n, sizeof(*which));
	int *lockfds = xcalloc(b->n, sizeof(*lockfds));
	size_t nli = 0;

	for (size_t i = 0; i < b->n; i++) {
		struct lbatch_item *it = &b->items[i];
		it->r = DELIVER_TEMPFAIL;
		/* Held while it is delivered: `surat queue delete` waits or says
		 * it cannot, and once it has deleted, no delivery begins. */
		if (spool_delivery_lock(b->dir, it->file, it->id, 1, &lockfds[nli]) != 1) {
			/* `surat queue delete` removed it while it waited for this
			 * batch: left to the per-message job, which drops it. */
			continue;
		}
		if (!it->have_content) {
			/* Taken up again from the spool at start. */
			struct spool_msg tmp;
			struct buf err = BUF_INIT(0);
			int ours = spool_load(b->dir, it->file, it->id, &tmp, &it->content, &err) == 0;
			if (ours)
				spool_msg_free(&tmp);
			buf_free(&err);
			if (!ours) {
				buf_reset(&it->content);
				if (lockfds[nli] >= 0)
					close(lockfds[nli]);
				continue;	/* the per-message job reports it */
			}
			it->have_content = 1;
		}
		li[nli] = (struct local_item){it->from, it->content.data ? it->content.data : "",
					      it->content.len, it->key, DELIVER_TEMPFAIL, &it->why};
		which[nli++] = i;
	}
	local_deliver_many(b->data_dir, b->account, b->quota, li, nli);
	int64_t now = util_now_ms() / 1000;
	for (size_t k = 0; k < nli; k++) {
		struct lbatch_item *it = &b->items[which[k]];
		it->r = li[k].result;
		if (it->r != DELIVER_OK)
			continue;
		char a[300], t[300];
		log_msg(LL_INFO, it->session,
			"delivery id=%s rcpt=%s status=sent relay=local attempt=1 delay=%llds "
			"reason=\"%s\"",
			it->id, log_esc(a, sizeof(a), b->account), (long long)(now - it->created),
			log_esc(t, sizeof(t), buf_str(&it->why)));
		/*
		 * Delivered: the spool file goes (or is kept for reuse), with no
		 * record. Should a crash undo that, the message is delivered again
		 * into its dedup key, which the store already holds: a no-op.
		 * Under the delivery's lock, made exclusive: a delete never comes
		 * between, to say "deleted" of what was delivered.
		 */
		spool_retire(b->q->spool, b->dir, it->file, it->content.len, it->named, lockfds[k]);
		lockfds[k] = -1; /* closed */
		it->removed = 1;
	}
	for (size_t k = 0; k < nli; k++)
		if (lockfds[k] >= 0)
			close(lockfds[k]);
	free(lockfds);
	free(li);
	free(which);
}

static void
batch_work(void *arg)
{
	unsigned old = fsbarrier_set_patience(QUEUE_FLUSH_PATIENCE_US);
	batch_run(arg);
	fsbarrier_set_patience(old);
}

static void
batch_done(void *arg)
{
	struct lbatch *b = arg;
	struct queue *q = b->q;

	for (struct lbatch **pp = &q->batches; *pp; pp = &(*pp)->next) {
		if (*pp == b) {
			*pp = b->next;
			break;
		}
	}
	for (size_t i = 0; i < b->n; i++) {
		struct lbatch_item *it = &b->items[i];
		struct qentry *e = it->e;
		e->busy = 0;
		e->flush = 0;	/* (a batch leaves e->msg as queue_flush() set it) */
		if (it->removed && e->remote_busy) {
			e->retired = 1;
			continue;
		}
		if (it->removed) {
			entry_unlink(q, e);
			entry_free(q, e);
			continue;
		}
		/* Back to the per-message job, content and all. */
		e->no_batch = 1;
		entry_ready(q, e);
		if (it->have_content)
			entry_content_in(q, e, &it->content);
	}
	batch_free(b);
	if (!q->srv->stopping)
		event_active(q->kick, 0, 0);
}

static int
item_cmp(const void *a, const void *b)
{
	return strcmp(((const struct lbatch_item *)a)->id, ((const struct lbatch_item *)b)->id);
}

/* Start the batches built by a pass of the tick. */
static void
batch_start(struct queue *q, struct lbatch *building)
{
	while (building) {
		struct lbatch *b = building;
		building = b->next;
		/* Ids grow with time: in id order is in arrival order (UIDs follow it). */
		qsort(b->items, b->n, sizeof(*b->items), item_cmp);
		b->next = q->batches;
		q->batches = b;
		worker_submit(q->pool, batch_work, batch_done, b);
	}
}

/*
 * The earliest time something falls due for e by the clock alone: a
 * deferred recipient's retry, expiry, the delay warning; INT64_MAX if only
 * an event (a job or a remote delivery ending) can bring it work. Never
 * before now + 1: what is due now and still not startable waits for its
 * event, or at worst for the next second.
 */
static int64_t
entry_due(const struct queue *q, const struct qentry *e, int64_t now)
{
	const struct config *cfg = q->srv->cfg;
	const struct spool_msg *m = &e->msg;
	int64_t due = INT64_MAX;
	int all_final = 1;

	/* As entry_has_work() decides: what the transport holds, its end readies. */
	for (size_t i = 0; i < m->nrcpts; i++) {
		const struct spool_rcpt *rc = &m->rcpts[i];
		if (rcpt_final(rc))
			continue;
		all_final = 0;
		if (rcpt_timed(rc) && rc->next_try < due &&
		    (rc->local || rc->notice_owed || !q->have_remote || !e->remote_busy))
			due = rc->next_try;
	}
	if (!all_final) {
		if (!e->remote_busy && m->created + cfg->queue_max_age < due)
			due = m->created + cfg->queue_max_age;
		int64_t warn = warn_time(cfg, m);
		if (warn < due)
			due = warn;
	}
	return due <= now ? now + 1 : due;
}

/*
 * Whether e is a bounce (or success notice) its message has not recorded
 * yet: a recipient it reports is not marked bounced ('X') in the message,
 * still queued (or not delivered with its notice settled; for a delay
 * notice, the message has not recorded its warning). Only a crash
 * between the notice's writing and that record leaves one (else it is
 * queued after the record). The message, taken up as before its attempt,
 * tries the recipient again and writes the notice again; sent before
 * that, it would be gone, its name free, and sent twice. So it waits until
 * the message has found it written (and recorded it) or is done.
 */
static int
notice_held(struct queue *q, const struct qentry *e)
{
	const struct spool_msg *m = &e->msg;
	char pid[QUEUE_ID_LEN + 1];

	if (!m->is_notice || m->reports == NULL || strlen(m->id) < 18 ||
	    (m->id[17] != 'b' && m->id[17] != 's' && m->id[17] != 'd'))
		return 0;
	snprintf(pid, sizeof(pid), "%.16s", m->id);
	const struct qentry *p = entry_find(q, pid);
	if (p == NULL || p->retired)
		return 0;
	/* A delay notice: the message warns again until it records the warning. */
	if (m->id[17] == 'd')
		return !p->msg.delay_warned && q->srv->cfg->queue_delay_warning > 0;
	for (size_t i = 0; i < p->msg.nrcpts; i++) {
		const struct spool_rcpt *rc = &p->msg.rcpts[i];
		int recorded = m->id[17] == 'b' ? rc->bounced
						: rc->status == RCPT_DELIVERED && !rc->notice_owed;
		/* Delivered since (failed, for a success notice): the message
		 * never writes this notice again, and may stay for days. */
		int never = rc->status == (m->id[17] == 'b' ? RCPT_DELIVERED : RCPT_FAILED);
		if (!recorded && !never && reports_has(m->reports, i))
			return 1;
	}
	return 0;
}

/* Once a minute every entry is looked at again, should an event have been missed. */
#define QUEUE_SWEEP_S 60

static void
queue_tick(evutil_socket_t fd, short what, void *arg)
{
	struct queue *q = arg;
	int64_t now = util_now_ms() / 1000;

	if (q->srv->stopping) {
		/*
		 * Only messages with results from the transport are taken up
		 * now, so that a peer that took one does not get it again after
		 * the restart. Their jobs do whatever else is due on them too;
		 * nothing new goes out (dest_run() starts no connection).
		 */
		for (struct qentry *e = q->rhead, *next; e; e = next) {
			next = e->rnext;
			if (!e->busy && !e->retired && e->npending > 0)
				entry_start_job(q, e, now);
			if (e->busy)
				ready_remove(q, e);
		}
		return;
	}
	if (now - q->swept >= QUEUE_SWEEP_S) {
		q->swept = now;
		for (struct qentry *e = q->head; e; e = e->next)
			if (!e->busy && !e->retired)
				entry_ready(q, e);
	}
	while (q->nheap > 0 && q->heap[0]->due <= now)
		entry_ready(q, q->heap[0]);

	struct lbatch *building = NULL;
	struct qentry **young = NULL;
	size_t nyoung = 0, cap = 0;
	int64_t now_ms = util_mono_ms(), wake = 0;
	for (struct qentry *e = q->rhead, *next; e; e = next) {
		next = e->rnext;
		if (e->busy || e->retired) {
			/* Readied again when its job ends; freed when the transport lets go. */
			ready_remove(q, e);
			continue;
		}
		if (notice_held(q, e)) {
			entry_wait(q, e, now + 1); /* looked at again each second */
			continue;
		}
		if (entry_batchable(e)) {
			if (now_ms - e->arrived_ms < QUEUE_GATHER_MS) {
				if (nyoung == cap) {
					cap = cap ? cap * 2 : 64;
					young = xrealloc(young, cap * sizeof(*young));
				}
				young[nyoung++] = e;
				continue;
			}
			if (batch_add(q, &building, e) == 0) {
				if (e->busy)
					ready_remove(q, e);
				continue;	/* (not taken: its mailbox's batch is full; the next) */
			}
		}
		if (entry_has_work(q, e, now))
			entry_start_job(q, e, now);
		if (e->busy)
			ready_remove(q, e);
		else if (e->npending == 0)	/* (results already in: the kick comes) */
			entry_wait(q, e, entry_due(q, e, now));
	}
	/* Gathering messages go along with a batch their mailbox starts anyway. */
	for (size_t i = 0; i < nyoung; i++) {
		struct qentry *e = young[i];
		if (batch_find(building, e->msg.rcpts[0].addr) != NULL &&
		    batch_add(q, &building, e) == 0 && e->busy) {
			ready_remove(q, e);
			continue;
		}
		if (!e->busy && (wake == 0 || e->arrived_ms + QUEUE_GATHER_MS < wake))
			wake = e->arrived_ms + QUEUE_GATHER_MS;
	}
	free(young);
	if (wake != 0) {
		int64_t ms = wake - now_ms < 1 ? 1 : wake - now_ms;
		event_add(q->gather, &(struct timeval){ms / 1000, (ms % 1000) * 1000});
	}
	batch_start(q, building);
}

struct submit_job {
	struct queue *q;
	struct spool_msg msg;
	struct buf content;
	struct buf err;
	int rc;
	void (*done)(void *arg, const char *id, const char *error);
	void *arg;
	struct submit_job *next;
};

/*
 * New messages are written in rounds: one worker job writes every message
 * that arrived since the last round began, then makes them all durable with
 * one flush, and the loop answers them all when it is done. Under load a
 * round carries many messages for one thread wake-up and one flush; a lone
 * message is a round of one, as fast as before. While a round runs, the
 * next one gathers.
 */
struct submit_round {
	struct queue *q;
	struct submit_job *list;
	int alone;	/* a large message on its own, outside the rounds */
	int64_t us;	/* how long the writes and the flush took */
};

/* Larger messages are written in a job of their own: a round waits for none of them. */
#define QUEUE_ROUND_MAX_BYTES ((size_t)1 << 20)
/*
 * queue_submit_lone() writes a message on the caller's thread only while the
 * spool's recent rounds took less than this, and only a message this small:
 * the loop must never wait long on the disk.
 */
#define QUEUE_NOW_MAX_US 2000
#define QUEUE_NOW_MAX_BYTES ((size_t)256 * 1024)

/*
 * Make a lone message written over a kept file durable: its data alone, one
 * fdatasync(2) of fd. 0, or -1 with s->err set and the file freed (never
 * acknowledged).
 */
static int
submit_flush_one(struct queue *q, struct submit_job *s, int fd)
{
	if (fdatasync(fd) == 0)
		return 0;
	buf_printf(&s->err, "fdatasync(%s/%s) failed: %s", q->dir, spool_file(&s->msg),
		   strerror(errno));
	spool_retire(NULL, q->dir, spool_file(&s->msg), 0, 0, -1);
	return -1;
}

static void
submit_round_work(void *arg)
{
	struct submit_round *r = arg;
	struct submit_job *s;
	int synced = 0, fd = -1;	/* synced: 1 durable, -1 failed */
	int64_t t0 = util_mono_us();

	/* fd is set only for a round of one written over a kept file. */
	for (s = r->list; s; s = s->next)
		s->rc = spool_write_unsynced(r->q->spool, r->q->dir, &s->msg,
					     s->content.data ? s->content.data : "",
					     s->content.len, r->list->next ? NULL : &fd, &s->err);
	/*
	 * A lone message written over a kept file within its length changed
	 * no metadata: its data alone, one fdatasync(2), is what must reach
	 * the disk. Anything else takes one flush of the whole filesystem,
	 * shared with whoever needs one at the same moment.
	 */
	for (s = r->list; s; s = s->next) {
		if (s->rc != 0)
			continue;
		if (fd >= 0) {
			s->rc = submit_flush_one(r->q, s, fd);
			break;
		}
		if (synced == 0)
			synced = spool_sync(r->q->dir, &s->err) == 0 ? 1 : -1;
		if (synced < 0)	/* never acknowledged */
			spool_retire(NULL, r->q->dir, spool_file(&s->msg), 0, 0, -1);
		s->rc = synced < 0 ? -1 : 0;
	}
	if (fd >= 0)
		close(fd);
	r->us = util_mono_us() - t0;
}

/* Loop thread: fold a round's time into the average queue_submit_lone() consults. */
static void
submit_round_timed(struct queue *q, int64_t us)
{
	q->sync_us += (us - q->sync_us) / 8;
}

static void
submit_done(struct submit_job *s)
{
	if (s->rc == 0) {
		char id[QUEUE_ID_LEN + 1];
		__atomic_store_n(&s->q->last_arrival_ms, util_mono_ms(), __ATOMIC_RELAXED);
		memcpy(id, s->msg.id, sizeof(id));
		queue_add_entry(s->q, &s->msg, &s->content);
		if (s->done)
			s->done(s->arg, id, NULL);
		event_active(s->q->kick, 0, 0);
	} else {
		log_error("queue: cannot write message: %s", buf_str(&s->err));
		if (s->done)
			s->done(s->arg, NULL, buf_str(&s->err));
		spool_msg_free(&s->msg);
	}
	buf_free(&s->content);
	buf_free(&s->err);
	free(s);
}

static void submit_round_done(void *arg);

/* Write list in a worker job: the next round, or (alone) one large message beside them. */
static void
submit_round_run(struct queue *q, struct submit_job *list, int alone)
{
	struct submit_round *r = xcalloc(1, sizeof(*r));

	r->q = q;
	r->list = list;
	r->alone = alone;
	worker_submit(q->srv->pool, submit_round_work, submit_round_done, r);
}

static void
submit_round_start(struct queue *q)
{
	struct submit_job *list = q->sub_head;

	q->sub_head = q->sub_tail = NULL;
	q->sub_running = 1;
	submit_round_run(q, list, 0);
}

static void
submit_round_done(void *arg)
{
	struct submit_round *r = arg;
	struct queue *q = r->q;

	submit_round_timed(q, r->us);
	for (struct submit_job *s = r->list, *next; s; s = next) {
		next = s->next;
		submit_done(s);
	}
	int alone = r->alone;
	free(r);
	if (alone)
		return;
	q->sub_running = 0;
	if (q->sub_head != NULL)
		submit_round_start(q);
}

static struct submit_job *
submit_job_new(struct queue *q, struct spool_msg *msg, struct buf *content,
	       void (*done)(void *arg, const char *id, const char *error), void *arg)
{
	struct submit_job *s = xcalloc(1, sizeof(*s));

	s->q = q;
	copy_msg(&s->msg, msg);
	/* The session may have named it already, for its Received: field. */
	if (s->msg.id[0] == '\0')
		spool_new_id(s->msg.id);
	memcpy(msg->id, s->msg.id, sizeof(msg->id));
	s->msg.size = content->len;
	s->content = *content;
	buf_init(content, content->max);
	buf_init(&s->err, 0);
	s->done = done;
	s->arg = arg;
	return s;
}

/* Into the next round (a large message: a job of its own). */
static void
submit_enqueue(struct queue *q, struct submit_job *s)
{
	if (s->content.len > QUEUE_ROUND_MAX_BYTES) {
		submit_round_run(q, s, 1);
		return;
	}
	if (q->sub_tail)
		q->sub_tail->next = s;
	else
		q->sub_head = s;
	q->sub_tail = s;
	if (!q->sub_running)
		submit_round_start(q);
}

int
queue_submit_lone(struct queue *q, struct spool_msg *msg, struct buf *content,
		  void (*done)(void *arg, const char *id, const char *error), void *arg, char *id,
		  struct buf *err)
{
	struct submit_job *s = submit_job_new(q, msg, content, done, arg);

	if (q->sub_running || q->sub_head != NULL || q->sync_us > QUEUE_NOW_MAX_US ||
	    s->content.len > QUEUE_NOW_MAX_BYTES) {
		submit_enqueue(q, s);
		return 0;
	}
	int64_t t0 = util_mono_us();
	int fd = -1;
	s->rc = spool_write_kept(q->spool, q->dir, &s->msg, s->content.data ? s->content.data : "",
				 s->content.len, &fd, &s->err);
	if (s->rc == 1) {
		/* No kept file it fits in: a new file wants a flush of the
		 * filesystem, which is not for the loop. The next round takes it. */
		s->rc = 0;
		submit_enqueue(q, s);
		return 0;
	}
	if (fd >= 0) {
		s->rc = submit_flush_one(q, s, fd);
		close(fd);
	}
	submit_round_timed(q, util_mono_us() - t0);
	if (s->rc == 0)
		memcpy(id, s->msg.id, QUEUE_ID_LEN + 1);
	else
		buf_puts(err, buf_str(&s->err));
	s->done = NULL;
	submit_done(s);
	return 1;
}

void
queue_submit(struct queue *q, struct spool_msg *msg, struct buf *content,
	     void (*done)(void *arg, const char *id, const char *error), void *arg)
{
	submit_enqueue(q, submit_job_new(q, msg, content, done, arg));
}

void
queue_remote_result(struct queue *q, const char *id, size_t idx, enum deliver_result r,
		    const char *text, const char *remote, int relayed, int lockfd)
{
	struct qentry *e = entry_find(q, id);
	if (e == NULL || e->retired || idx >= e->msg.nrcpts)
		return;
	/* One is enough: every transport's lock is on the same file. */
	if (lockfd >= 0 && e->pending_lockfd < 0 &&
	    (e->pending_lockfd = fcntl(lockfd, F_DUPFD_CLOEXEC, 0)) < 0)
		log_error("queue %s: dup of its spool file's lock failed: %s; `surat queue "
			  "delete` may remove it before its result is recorded",
			  id, strerror(errno));
	e->pending = xrealloc(e->pending, (e->npending + 1) * sizeof(*e->pending));
	e->pending[e->npending++] = (struct qres){idx, r, text ? xstrdup(text) : NULL,
						  remote ? xstrdup(remote) : NULL, 0, relayed};
	q->srv->holds++; /* a stop waits until it is recorded */
	/*
	 * Recorded now, not at the next tick: a peer that took the message
	 * must not get it again should we crash while its other destinations
	 * are still being tried. (Results of one callback share the kick.)
	 */
	entry_ready(q, e);
	event_active(q->kick, 0, 0);
}

void
queue_remote_done(struct queue *q, const char *id)
{
	struct qentry *e = entry_find(q, id);
	if (e == NULL)
		return;
	e->remote_busy = 0;
	if (e->retired && !e->busy) {
		q->srv->holds -= (unsigned)e->npending;
		entry_unlink(q, e);
		entry_free(q, e);
		return;
	}
	entry_ready(q, e);
	event_active(q->kick, 0, 0);
}

void
queue_set_remote(struct queue *q, const struct queue_remote_ops *ops)
{
	q->remote = *ops;
	q->have_remote = 1;
}

size_t
queue_count(const struct queue *q)
{
	return q->n;
}

int
queue_space_low(const struct queue *q, int64_t need)
{
	return util_space_low(q->dir, need);
}

void
queue_flush(struct queue *q)
{
	for (struct qentry *e = q->head; e; e = e->next) {
		for (size_t i = 0; i < e->msg.nrcpts; i++)
			if (rcpt_timed(&e->msg.rcpts[i]))
				e->msg.rcpts[i].next_try = 0;
		/* Reported by the transport, not yet recorded: deferrals all the same. */
		for (size_t i = 0; i < e->npending; i++)
			e->pending[i].flushed = 1;
		if (e->busy)
			e->flush = 1;	/* its job's snapshot would undo the above */
		else if (!e->retired)
			entry_ready(q, e);
	}
	event_active(q->kick, 0, 0);
}

static void
flush_check(struct queue *q)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/flush", q->dir);
	if (unlink(path) == 0) {
		log_info("queue: flush requested");
		queue_flush(q);
	}
}

/* Worker: whether a new message came in since the index job started (never before its
 * first chunk). */
static int
index_yield(void *arg)
{
	struct queue *q = arg;
	return q->index_asked++ > 0 &&
	       __atomic_load_n(&q->last_arrival_ms, __ATOMIC_RELAXED) >= q->index_ms;
}

static void
index_work(void *arg)
{
	store_pool_index_idle(STORE_FTS_IDLE_MS, QUEUE_INDEX_BUDGET_MS, index_yield, arg);
}

static void
index_done(void *arg)
{
	((struct queue *)arg)->indexing = 0;
}

static void
queue_timer(evutil_socket_t fd, short what, void *arg)
{
	struct queue *q = arg;

	flush_check(q);
	queue_tick(fd, what, q);
	/* Full-text indexing of the mailboxes whose deliveries paused (store.h). */
	int64_t now = util_mono_ms();
	if (!q->indexing && !q->srv->stopping &&
	    (now - q->last_arrival_ms >= QUEUE_INDEX_QUIET_MS ||
	     now - q->index_ms >= QUEUE_INDEX_WAIT_MS) &&
	    store_pool_index_waiting()) {
		q->indexing = 1;
		q->index_ms = now;
		q->index_asked = 0;
		worker_submit(q->pool, index_work, index_done, q);
	}
}

struct queue *
queue_new(struct server *srv, struct buf *err)
{
	struct queue *q = xcalloc(1, sizeof(*q));
	q->sync_us = QUEUE_NOW_MAX_US + 1;	/* until a worker round shows the disk is fast */
	q->index_ms = util_mono_ms();		/* QUEUE_INDEX_WAIT_MS counts from the start */
	struct buf dir = BUF_INIT(0);

	q->srv = srv;
	queue_dir(srv->cfg->data_dir, &dir);
	q->dir = buf_steal(&dir);
	if (util_mkdir_p(q->dir, 0700) < 0) {
		buf_printf(err, "mkdir(%s) failed: %s", q->dir, strerror(errno));
		free(q->dir);
		free(q);
		return NULL;
	}
	DIR *d = opendir(q->dir);
	if (d == NULL) {
		buf_printf(err, "opendir(%s) failed: %s", q->dir, strerror(errno));
		free(q->dir);
		free(q);
		return NULL;
	}
	q->spool = spool_pool_new(q->dir, QUEUE_RECYCLE);
	struct dirent *de;
	size_t loaded = 0, dropped = 0;
	while ((de = readdir(d)) != NULL) {
		char path[4096];
		snprintf(path, sizeof(path), "%s/%s", q->dir, de->d_name);
		/* A file kept for reuse: free, or holding a queued message. */
		int kept = strncmp(de->d_name, ".r", 2) == 0;
		if (kept && !spool_reused_name(de->d_name)) {
			unlink(path);
			continue;
		}
		if (!kept && (de->d_name[0] == '.' || strcmp(de->d_name, "flush") == 0))
			continue;
		if (strncmp(de->d_name, "tmp.", 4) == 0) {
			/* Never acknowledged: the writer died before rename (older versions). */
			unlink(path);
			dropped++;
			continue;
		}
		uint64_t fsize = 0;
		int is_free = kept && spool_is_free(q->dir, de->d_name, &fsize);
		struct spool_msg m;
		struct buf e = BUF_INIT(0);
		int lr = SPOOL_INCOMPLETE;
		if (!is_free && strlen(de->d_name) > QUEUE_ID_LEN) {
			buf_puts(&e, "not a spool file (name too long)");
			lr = -1;
		} else if (!is_free) {
			lr = spool_load(q->dir, de->d_name, NULL, &m, NULL, &e);
		}
		if (lr == SPOOL_INCOMPLETE && kept) {
			/* Free by its first byte (left unread), or a rewrite that never
			 * finished: kept again, or removed if too many. */
			struct stat st;
			buf_free(&e);
			if (!is_free)
				fsize = stat(path, &st) == 0 ? (uint64_t)st.st_size : UINT64_MAX;
			if (fsize == UINT64_MAX || !spool_pool_adopt(q->spool, de->d_name, fsize))
				unlink(path);
			continue;
		}
		if (lr == SPOOL_INCOMPLETE) {
			/* Never acknowledged: the writer died before its end record. */
			unlink(path);
			dropped++;
			buf_free(&e);
			continue;
		}
		if (lr < 0) {
			/* Never delivered either way; where it is now, the log says. */
			char bad[4200];
			int moved = 0;
			if (xsnprintf(bad, sizeof(bad), "%s/.corrupt.%s", q->dir, de->d_name) < 0)
				errno = ENAMETOOLONG;
			else
				moved = rename(path, bad) == 0;
			if (moved)
				log_error("queue: %s: %s; moved aside", path, buf_str(&e));
			else
				log_error("queue: %s: %s; left in place, never delivered (cannot "
					  "move it aside: %s)",
					  path, buf_str(&e), strerror(errno));
			buf_free(&e);
			continue;
		}
		buf_free(&e);
		/* New ids go above it, should the clock have been set back. */
		spool_seen_id(m.id);
		rcpts_nfc(&m);
		queue_add_entry(q, &m, NULL);
		loaded++;
	}
	closedir(d);
	if (loaded || dropped)
		log_info("queue: %zu messages taken up again, %zu unacknowledged files dropped",
			 loaded, dropped);
	q->timer = event_new(srv->base, -1, EV_PERSIST, queue_timer, q);
	q->kick = event_new(srv->base, -1, 0, queue_tick, q);
	q->gather = event_new(srv->base, -1, 0, queue_tick, q);
	q->pool = worker_pool_new_nice(srv->base, QUEUE_THREADS, QUEUE_NICE);
	return q;
}

void
queue_start(struct queue *q)
{
	event_add(q->timer, &(struct timeval){1, 0});
	event_active(q->kick, 0, 0);
}

void
queue_free(struct queue **pq)
{
	struct queue *q = *pq;
	if (q == NULL)
		return;
	/* Running jobs finish first: their done callbacks need the queue. */
	worker_pool_free(&q->pool);
	while (q->head) {
		struct qentry *e = q->head;
		entry_unlink(q, e);
		entry_free(q, e);
	}
	if (q->timer)
		event_free(q->timer);
	if (q->kick)
		event_free(q->kick);
	if (q->gather)
		event_free(q->gather);
	spool_pool_free(&q->spool);
	free(q->heap);
	free(q->dir);
	free(q);
	*pq = NULL;
}
