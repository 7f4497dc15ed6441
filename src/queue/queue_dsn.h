/*
 * queue_dsn — delivery status notifications (RFC 3464 multipart/report):
 * the bounce sent when recipients failed for good, the one "delayed"
 * notice sent after queue.delay_warning, and the "delivered" notice for
 * local recipients that asked for one (NOTIFY=SUCCESS, RFC 3461 6.2).
 *
 * SECURITY: text from remote servers goes into the report as is but with
 * CR, LF and non-ASCII bytes replaced, so a peer cannot inject headers.
 */
#ifndef SURAT_QUEUE_DSN_H
#define SURAT_QUEUE_DSN_H

#include "queue/queue_spool.h"

struct buf;

enum dsn_kind { DSN_FAILED, DSN_DELAYED, DSN_DELIVERED };

/* "bounce", "delay" or "delivered": for logs and Message-IDs. */
const char *dsn_kind_name(enum dsn_kind kind);
/* Nonzero if recipient rc wants a notice of this kind (NOTIFY, RFC 3461). */
int dsn_wanted(const struct spool_rcpt *rc, enum dsn_kind kind);
/*
 * Nonzero if a notice of this kind reports rc: in the state it reports, asked
 * for, and (a failure) not reported by an earlier bounce.
 */
int dsn_reports(const struct spool_rcpt *rc, enum dsn_kind kind);
/* Nonzero if msg should get a notice of this kind at all. */
int dsn_needed(const struct spool_msg *msg, enum dsn_kind kind);

/*
 * Build the notice for msg (whose recipients' states say what happened) into
 * out_msg (envelope: null sender, one recipient: the original sender) and
 * out_content. original is the queued content. hostname names this MTA;
 * nid is the notice's own queue id (its Message-ID is made of it).
 * hdrs_only: return the original's header only, whatever RET= asked
 * (a notice that would carry text someone else chose: queue.c, job_notice).
 */
void dsn_build(const struct spool_msg *msg, const char *original, size_t len,
	       enum dsn_kind kind, const char *hostname, const char *nid, int64_t max_age,
	       int hdrs_only, struct spool_msg *out_msg, struct buf *out_content);

/* A span of seconds for people: "5 days", "1 day", "4 hours", "90 seconds". */
void dsn_duration(char *out, size_t n, int64_t secs);

#endif
