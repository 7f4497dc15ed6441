/*
 * queue_spool — the on-disk form of a queued message: one file per message
 * in <data_dir>/queue/, holding framed records:
 *
 *   [type 1][length 4, big-endian][payload][crc32 4, big-endian]
 *
 * The crc covers type, length and payload; from format 2 on, the crc of
 * every record after the envelope ('H') starts from a seed made of the
 * message id, so records that a reused file still holds from an earlier
 * message can never pass for this one's. A new file is written in place
 * under its id (O_EXCL: never replacing an existing file); a reused one
 * keeps its hidden name (see spool_pool below). The group-commit barrier
 * (core/fsbarrier), or fdatasync(2) for a lone message written over a
 * reused file without growing it, makes it durable, and only then is the
 * message acknowledged. Its envelope and content records end with an 'E'
 * record: a file without one is still being written, or was when the daemon
 * died, and was never acknowledged. Delivery state (recipient delivered,
 * failed, deferred) is written after the last valid record as further
 * records, each made durable by the barrier; a torn last record fails its
 * crc and is ignored, so the previous state stands.
 *
 * A message is known by the id its file records ('H' id=), whatever the
 * file is called: the name is where it is, the id what it is.
 *
 * SECURITY: spool files are parsed with every length checked (they could be
 * truncated by a crash or damaged on disk); an incomplete file (no 'E') was
 * never acknowledged and is discarded.
 */
#ifndef SURAT_QUEUE_SPOOL_H
#define SURAT_QUEUE_SPOOL_H

#include <stddef.h>
#include <stdint.h>

struct buf;

/*
 * 16 hex digits; a notice's adds "-b" (bounce), "-d" (delay) or "-s"
 * (success) and, for a success notice, its first recipient's index in up
 * to 4 hex digits (a message gets one per job that reports successes); so
 * does a bounce after a message's first (recipients that failed later).
 */
#define QUEUE_ID_LEN 22

enum rcpt_status { RCPT_PENDING, RCPT_DELIVERED, RCPT_FAILED, RCPT_DEFERRED };

/* DSN NOTIFY bits (RFC 3461); 0 means "not given" (default FAILURE,DELAY). */
#define NOTIFY_NEVER 1
#define NOTIFY_SUCCESS 2
#define NOTIFY_FAILURE 4
#define NOTIFY_DELAY 8

/*
 * An alias of several members given with NOTIFY=SUCCESS (RFC 3461 6.2.7.3):
 * the alias itself, which is nothing to deliver, only to report as
 * "expanded" (RFC 3464 2.3.3); its members go without SUCCESS.
 */
#define SPOOL_EXPANDED 2

struct spool_rcpt {
	char *addr;		/* final address (after alias expansion) */
	char *orig;		/* the address given in RCPT TO */
	char *orcpt;		/* ORCPT parameter, or NULL */
	unsigned notify;
	int local;		/* 1: deliver into a local mailbox; SPOOL_EXPANDED: see below */
	/* state */
	enum rcpt_status status;
	unsigned attempts;
	int64_t next_try;	/* unix seconds */
	char *last_error;	/* remote or local reason text */
	char *remote;		/* remote host that answered, if any */
	int notice_owed;	/* delivered, but its success notice is still to be
				 * written (at next_try); not final until it is */
	int bounced;		/* failed, and reported in a bounce already (one
				 * written while other recipients were still queued) */
};

struct spool_msg {
	char id[QUEUE_ID_LEN + 1];
	char *mail_from;	/* "" for the null sender */
	char *envid;
	int ret_hdrs;		/* RET=HDRS */
	int ret_full;		/* RET=FULL (passed on as it came, RFC 3461 5.2.1) */
	int body_8bit;
	int smtputf8;
	int64_t created;	/* unix seconds */
	char *client_ip;
	char *helo;
	char *auth_user;
	char *session;
	int is_notice;		/* a DSN we generated: never bounced */
	/*
	 * A notice: the indexes of its message's recipients it reports ("0,2"),
	 * so that a notice found written after a crash is known for what it
	 * says (NULL in files of older versions).
	 */
	char *reports;
	int delay_warned;
	struct spool_rcpt *rcpts;
	size_t nrcpts;
	uint64_t size;		/* content octets */
	uint64_t content_off;	/* offset of the content in the file */
	int named;		/* the file records its own id (file_id): it may be recycled */
	char file_id[QUEUE_ID_LEN + 1];
	char file[QUEUE_ID_LEN + 2];	/* the file holding it, if not named id */
	uint64_t end;		/* where the next state record goes */
	uint32_t seed;		/* crc seed of its records after 'H' (0: format 1) */
	/*
	 * 16 random hex digits drawn when the message is first written ("" in
	 * files of older versions): its dedup keys hold them, so that an id
	 * that comes again (the clock set back) is never taken for a delivery
	 * made before.
	 */
	char nonce[17];
};

/* The name of the file in the spool directory that holds m. */
const char *spool_file(const struct spool_msg *m);

enum spool_rec {
	SPOOL_REC_DELIVERED = 'D',
	SPOOL_REC_FAILED = 'F',
	SPOOL_REC_DEFERRED = 'T',
	SPOOL_REC_WARNED = 'W',
	SPOOL_REC_NOTICE_OWED = 'N',
	SPOOL_REC_BOUNCED = 'X',
};

/* A fresh unique queue id (16 hex digits, time-ordered). */
void spool_new_id(char out[QUEUE_ID_LEN + 1]);
/* Ids handed out from now on are above id (one found in the spool at start). */
void spool_seen_id(const char *id);
/*
 * The dedup key of m's recipient idx in the store: "id.nonce:idx", or
 * "id:idx" for a message written without a nonce (an older version's).
 */
void spool_dedup_key(const struct spool_msg *m, size_t idx, char *out, size_t n);

/*
 * Spool files kept for reuse. Creating a file costs an inode allocation and
 * removing it an inode free, and a rename or a new length costs a metadata
 * write in the flush; on a busy spool that is most of the flush. A delivered
 * file is kept under a hidden name (".r" + 16 hex digits) in the same
 * directory instead, its first byte set to 0 (free), and the next message is
 * written over it in place: same name, same blocks, first byte last over a
 * 0 written first, never cut shorter (records left beyond the new end fail
 * the new message's seeded crcs). Written over within its old length, a file
 * needs no metadata on disk, only its data: one fdatasync(2). A hidden file
 * whose first byte is not 0 holds a queued message. Freeing a file and
 * writing over it take its flock(2), which `surat queue delete` holds while
 * it checks what a file holds and unlinks it. A kept file that grew past
 * 256 KiB (it is never cut) is removed when freed. Thread-safe; one per
 * spool directory.
 */
struct spool_pool;

/* A pool for dir, keeping at most max files (0: never recycle). */
struct spool_pool *spool_pool_new(const char *dir, size_t max);
void spool_pool_free(struct spool_pool **pool);

/* Take up a free hidden ".r" file of size octets found at start; 1 if kept. */
int spool_pool_adopt(struct spool_pool *pool, const char *name, uint64_t size);

/* Files the pool holds now. */
size_t spool_pool_count(struct spool_pool *pool);

/* Whether name is that of a file kept for reuse (".r" + 16 hex digits). */
int spool_reused_name(const char *name);

/*
 * Whether dir/name is free by its first byte alone (0, or an empty file), so
 * that start-up need not read and parse a kept file to learn it holds no
 * message: 1 free, with *size_r its length; 0 not free, or unreadable (the
 * caller's full read tells which).
 */
int spool_is_free(const char *dir, const char *name, uint64_t *size_r);

/*
 * The message in file (of pool's directory) is delivered: keep the file
 * (size octets of content) for reuse, or remove it if the pool is full, the
 * file large, or named is 0 (written before files recorded their id). No
 * flush: a crash that undoes it leaves the message queued again, as an
 * undone unlink(2) would. pool may be NULL: the file is removed. lockfd is
 * the delivery's descriptor from spool_delivery_lock() (or -1), which this
 * closes: its shared lock becomes the exclusive one that frees the file, so
 * that `surat queue delete` never comes between the delivery and the
 * retiring.
 */
void spool_retire(struct spool_pool *pool, const char *dir, const char *file, size_t size,
		  int named, int lockfd);

/*
 * Write msg and content durably (in place, then the group-commit barrier)
 * into dir/<msg->id>, or over a file from pool when it has one (pool may be
 * NULL). Sets msg->file (the file used), msg->end and msg->seed. Blocking:
 * call on a worker. 0, or -1 with err set. If excl is set, no reused file is
 * taken, and if dir/<msg->id> exists already, returns 1 and writes nothing.
 */
int spool_write(struct spool_pool *pool, const char *dir, struct spool_msg *msg,
		const char *content, size_t len, int excl, struct buf *err);

/*
 * spool_write() without the flush, for writing several messages under one:
 * none of them is durable (nor may be acknowledged) before spool_sync(dir)
 * returns 0. After a failed sync, spool_retire(NULL, ...) each of them.
 * If fd_r is given and the message went over a reused file without growing
 * it, *fd_r is that file, still open, and fdatasync(*fd_r) alone makes the
 * message durable; else *fd_r is -1. The caller closes it.
 */
int spool_write_unsynced(struct spool_pool *pool, const char *dir, struct spool_msg *msg,
			 const char *content, size_t len, int *fd_r, struct buf *err);
/*
 * spool_write_unsynced() over a kept file the message fits in, or nothing:
 * 0 with *fd_r open (fdatasync(*fd_r) makes it durable; the caller closes
 * it), 1 if the pool has no such file (nothing written), -1 with err set.
 */
int spool_write_kept(struct spool_pool *pool, const char *dir, struct spool_msg *msg,
		     const char *content, size_t len, int *fd_r, struct buf *err);
int spool_sync(const char *dir, struct buf *err);

/* spool_parse() and spool_load(): no end record yet (being written, or torn). */
#define SPOOL_INCOMPLETE (-2)
/* spool_load(): the file holds another message than the one asked for. */
#define SPOOL_OTHER (-3)

/*
 * Parse a spool file image (data, len) into msg, replaying the state
 * records. 0 on success; SPOOL_INCOMPLETE when the acknowledged part is not
 * all there, -1 when the file is damaged (err says why). msg is filled with
 * malloc'd fields: spool_msg_free().
 */
int spool_parse(const char *data, size_t len, struct spool_msg *msg, struct buf *err);

/*
 * Read and parse the file dir/name. If id is non-NULL, the file must hold
 * that message: a file reused for another one since (or one a crash left
 * under an earlier name) gives SPOOL_OTHER. If content_r is non-NULL, the
 * content is returned in it (the buf is reset first). 0, or SPOOL_INCOMPLETE,
 * SPOOL_OTHER or -1 + err. The message's id is the one its file records; msg->file is name when
 * that differs. A hidden reused file in format 1, or one starting with 0,
 * holds no queued message (SPOOL_INCOMPLETE); so does a format 1 file that
 * records another id than its name (a reused file whose rewrite a crash cut
 * short, in the way format 1 reused files).
 */
int spool_load(const char *dir, const char *name, const char *id, struct spool_msg *msg,
	       struct buf *content_r, struct buf *err);

/*
 * Whether dir/name still holds queued message id, from its envelope alone
 * (the start of the file): 1 if it holds id, or cannot be read for another
 * reason than being gone (the caller's own read reports that); 0 if the
 * file is gone; -1 if it is free or holds another message.
 */
int spool_holds(const char *dir, const char *name, const char *id);

/*
 * spool_holds() under a shared lock on dir/name, for a delivery about to
 * begin: `surat queue delete` takes the file's exclusive lock, so while
 * *fd_r is open it cannot remove the message, and once it has, no delivery
 * begins. 1 with *fd_r the locked descriptor (the caller closes it once the
 * delivery's outcome is known; -1 if the file could not be opened for
 * another reason than being gone), else spool_holds()'s 0 or -1, or -2
 * without wait when the file is locked exclusively (being deleted: try
 * later), with *fd_r -1.
 */
int spool_delivery_lock(const char *dir, const char *name, const char *id, int wait, int *fd_r);

/*
 * Write one state record for recipient idx (and text for F/T) after the
 * last record of msg's file and make it durable (group-commit barrier);
 * msg->end moves past it. Blocking. 0 or -1 + err.
 */
int spool_append_state(const char *dir, struct spool_msg *msg, enum spool_rec type, size_t idx,
		       unsigned attempts, int64_t next_try, const char *text, const char *remote,
		       struct buf *err);

/* Add the same record for a message whose records use seed (msg->seed) to
 * recs (may reallocate recs), for spool_append_records(). */
void spool_state_record(struct buf *recs, uint32_t seed, enum spool_rec type, size_t idx,
			unsigned attempts, int64_t next_try, const char *text, const char *remote);

/* Write records built by spool_state_record() after the last record of
 * msg's file in one write, then the barrier; msg->end moves past them.
 * Blocking. 0 or -1 + err. */
int spool_append_records(const char *dir, struct spool_msg *msg, const struct buf *recs,
			 struct buf *err);

/* Free the fields of msg (not msg itself). */
void spool_msg_free(struct spool_msg *msg);

/* Name of a rcpt status for listings. */
const char *spool_status_name(enum rcpt_status s);

#endif
