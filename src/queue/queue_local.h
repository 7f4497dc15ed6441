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
enum deliver_result local_deliver(const char *data_dir, const char *account,
				  const char *return_path, const char *content, size_t len,
				  const char *dedup_key, int64_t quota, int max_hops,
				  struct buf *why);

/* One message of local_deliver_many(). */
struct local_item {
	const char *return_path;	/* the envelope sender, "" for <> */
	const char *content;
	size_t len;
	const char *dedup_key;
	enum deliver_result result;	/* out */
	struct buf *why;		/* out: the reason, appended */
};

/*
 * Deliver n messages to one account's INBOX in one store transaction (one
 * flush for the files, one for the index), each as local_deliver() would.
 * A message that would loop or overrun the quota fails alone; a store
 * failure fails them all (DELIVER_TEMPFAIL), and so does an account that
 * has no store and is no user (any more): DELIVER_PERMFAIL, 5.1.1, no
 * store made. Blocking.
 */
void local_deliver_many(const char *data_dir, const char *account, int64_t quota,
			struct local_item *items, size_t n);

/*
 * The octets delivery adds on top of a message it stores for account:
 * the Return-Path: and Delivered-To: lines (return_path NULL: <>).
 */
size_t local_added_len(const char *return_path, const char *account);

/*
 * 1 if account is over (or would go over with a message of size octets,
 * 0 if unknown, plus added octets of headers) its quota, 2 if a message
 * of a known size can never fit (bigger than the whole quota: no expunge
 * makes room), 0 if neither, -1 on error. quota 0: unlimited. Opens the
 * store unless the answer is 2: call on a worker. Makes no store: an
 * account without one uses nothing.
 */
int local_over_quota(const char *data_dir, const char *account, int64_t quota, uint64_t size,
		     uint64_t added);

#endif
