/*
 * queue — the queue manager inside the daemon. It owns every message that
 * was acknowledged and is not yet delivered or bounced: it takes new ones
 * from the SMTP sessions (queue_submit writes them durably before the
 * session may reply 250), loads the spool at start, schedules delivery
 * attempts, hands local recipients to local delivery and remote ones to the
 * outbound transport, retries deferred recipients every
 * queue.retry_interval, warns the sender after queue.delay_warning and
 * bounces after queue.max_age or on a permanent failure.
 *
 * A message leaves the spool only after its deliveries are durable in the
 * store (each under a dedup key committed with it), and a state change that
 * keeps it in the spool is on disk (spool_append_records) before it counts,
 * so a crash at any point redelivers at most what the dedup key absorbs. A
 * message delivered in full is unlinked without state records: should the
 * crash undo the unlink, the redelivery is that no-op. Local deliveries of
 * one account run one batch at a time, one store transaction per batch.
 *
 * SECURITY: runs on the loop thread; all disk work is done by worker jobs
 * that get copies of what they need.
 */
#ifndef SURAT_QUEUE_H
#define SURAT_QUEUE_H

#include <stddef.h>
#include <stdint.h>

#include "queue/queue_spool.h"

struct server;
struct buf;
struct queue;

/* Outcome of one delivery attempt for one recipient. */
enum deliver_result { DELIVER_OK, DELIVER_TEMPFAIL, DELIVER_PERMFAIL };

/*
 * The remote transport (outbound SMTP). It is given the message and the
 * indexes of the recipients to try; it reports each recipient's result
 * with queue_remote_result() and then calls queue_remote_done().
 */
struct queue_remote_ops {
	void (*deliver)(void *ctx, struct queue *q, const struct spool_msg *msg, const size_t *idx,
			size_t n);
	void *ctx;
};

/* Create the manager: load every complete spool file from data_dir/queue. */
struct queue *queue_new(struct server *srv, struct buf *err);
/* Start the scheduler timer. */
void queue_start(struct queue *q);
void queue_free(struct queue **q);
/* Install the remote transport (issue: outbound). */
void queue_set_remote(struct queue *q, const struct queue_remote_ops *ops);

/*
 * Write msg with content durably under msg->id, or under an id assigned
 * here when it is empty (a caller that names the message before, in its
 * trace header, takes one from spool_new_id()), then call
 * done(arg, id, NULL) on the loop, or done(arg, NULL, error). content is
 * taken over (reset on return). msg is copied; the caller keeps its own.
 */
void queue_submit(struct queue *q, struct spool_msg *msg, struct buf *content,
		  void (*done)(void *arg, const char *id, const char *error), void *arg);

/*
 * queue_submit() for a message whose session is the only one (no other
 * could share its flush). When no round is running or gathering, the spool's
 * recent flushes were fast (QUEUE_NOW_MAX_US) and the message fits in a kept
 * spool file, it is written and flushed (one fdatasync) on the calling loop
 * thread: a worker round would cost two thread wake-ups, more than such a
 * flush. Then 1 is returned, done is not called, and id (QUEUE_ID_LEN + 1
 * bytes) is set, or err if the write failed (answer 451). Otherwise the
 * message goes to the rounds as with queue_submit() and 0 is returned.
 */
int queue_submit_lone(struct queue *q, struct spool_msg *msg, struct buf *content,
		      void (*done)(void *arg, const char *id, const char *error), void *arg,
		      char *id, struct buf *err);

/*
 * Report a remote recipient's result (loop thread). relayed: the peer that
 * took it does not do DSN, so a success notice asked for is ours to send.
 * lockfd: the transport's shared lock on the message's spool file (from
 * spool_delivery_lock(), or -1); the queue keeps a duplicate of it until the
 * result is on disk, so that `surat queue delete` does not remove a message
 * in between, saying "deleted" of one a peer took. The caller still closes
 * lockfd.
 */
void queue_remote_result(struct queue *q, const char *id, size_t idx, enum deliver_result r,
			 const char *text, const char *remote, int relayed, int lockfd);
/* The transport is done with this message. */
void queue_remote_done(struct queue *q, const char *id);

/* Number of messages in the queue. */
size_t queue_count(const struct queue *q);
/*
 * 1 if the spool's filesystem has less than need bytes free for surat
 * (statvfs f_bavail: the root reserve does not count), else 0. No disk I/O.
 */
int queue_space_low(const struct queue *q, int64_t need);
/* Retry every deferred recipient now (what `surat queue flush` asks for). */
void queue_flush(struct queue *q);

/* The spool directory for a data_dir, into out. */
void queue_dir(const char *data_dir, struct buf *out);
/*
 * A notice written with one recipient as the sender was (the job found
 * nothing to expand it to), as the queue delivers it: a local user or
 * alias target, or an unknown address of a local domain (local: failed
 * there, never routed out); set in m's envelope, which is not written back
 * (the queue decides again each time it loads it). A sender that is an
 * alias was already written as one recipient per member.
 */
struct accounts;
void queue_notice_rcpt(struct accounts *a, struct spool_msg *m);

#endif
