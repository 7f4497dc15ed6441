/*
 * queue_local — local delivery (the MDA role): one queued message into one
 * account's INBOX through the store interface, exactly once (the store
 * commits the dedup key with the message), with the quota checked and a
 * Delivered-To: header added.
 *
 * SECURITY: blocking (file writes, fsync, SQLite): worker threads only.
 * The content is untrusted; it is parsed by the MIME module, never executed.
 */
#ifndef SURAT_QUEUE_LOCAL_H
#define SURAT_QUEUE_LOCAL_H

#include <stddef.h>
#include <stdint.h>

#include "queue/queue.h"

struct buf;

/*
 * Deliver content to account's INBOX. dedup_key makes a repeat a no-op.
 * quota: bytes allowed (0: unlimited). Returns DELIVER_OK (also for an
 * earlier identical delivery), DELIVER_TEMPFAIL or DELIVER_PERMFAIL with a
 * reply-style reason ("4.2.2 Mailbox full") in why.
 */
enum deliver_result local_deliver(const char *data_dir, const char *account, const char *content,
				  size_t len, const char *dedup_key, int64_t quota, int max_hops,
				  struct buf *why);

/*
 * 1 if account is over (or would go over with size more bytes) its quota,
 * 0 if not, -1 on error. quota 0: unlimited.
 */
int local_over_quota(const char *data_dir, const char *account, int64_t quota, uint64_t size);

#endif
