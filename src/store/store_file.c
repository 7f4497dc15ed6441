/*
 * store_file — the message files of an account: msg/<2 hex>/<16 hex>,
 * immutable once written.
 *
 * Writing is crash-ordered: the bytes go to tmp/<name> (O_EXCL), the file
 * is hard-linked to msg/<xx>/<name>, the group-commit barrier
 * (core/fsbarrier) makes content and both names durable, and only then
 * does the caller commit the row naming it. The
 * temp name is removed after the commit, not renamed before it: while it
 * exists it marks "maybe committed", so after a crash store_open() finds
 * every file whose commit is in doubt by listing tmp/ instead of walking
 * msg/. A writer holds flock() on its temp file so a concurrent sweeper
 * never takes a live write for a dead one (and checks, once it has the
 * lock, that no sweeper removed the marker before it), so the first open
 * after a crash removes what the crash left. Deleting the marker needs no
 * fsync: if it comes back after a crash the sweep sees the row and only
 * drops the marker again.
 *
 * Freeing is marked the same way: before the commit that drops a file's
 * last row (an expunge, a mailbox deleted), the file is linked back to
 * tmp/<name>; after it, the file and then the marker are unlinked. A crash
 * in between leaves a marker whose row is gone, and the sweep removes the
 * file; one before the commit leaves a row, and it drops only the marker.
 * No lock is needed: the row says which, before the commit and after.
 * A row the sweep sees gone may be a commit not yet flushed (the expunge
 * flushes after it, then unlinks), so the sweep flushes before it unlinks.
 *
 * A file's name is its files.id (63 bits) in 16 hex digits, so the index
 * needs no separate name column or index to find a file's row. Ids come in
 * runs: a random start with its low 16 bits 0, then the next ones in order,
 * up to 65,536 per handle before a new random start. A batch of deliveries
 * thus adds rows next to each other in every table keyed by file id (files,
 * search_hdrs, fts_pending, the full-text index) and files to one msg/<xx>
 * directory, so its commit writes a few pages and directory blocks instead
 * of one of each per message; over many runs the directories still fill
 * evenly. A start that meets an existing file draws again.
 *
 * SECURITY: file names are generated here or read back from our own
 * directories and parsed as ids before use; nothing a peer sends becomes
 * part of a path.
 */
#include "store/store_private.h"
#include "core/fsbarrier.h"

#include "core/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define STORE_PATH_MAX 4096

/* The 16-hex-digit name of a file id. */
static void
store_file_hex(int64_t id, char *out)
{
	xsnprintf(out, 17, "%016" PRIx64, (uint64_t)id);
}

/* Parse a name we generate (16 lowercase hex digits, a positive id). 0 or -1. */
static int
store_file_parse(const char *s, int64_t *id_r)
{
	uint64_t v = 0;
	size_t i;

	for (i = 0; s[i] != '\0'; i++) {
		if (i == 16)
			return -1;
		if (s[i] >= '0' && s[i] <= '9')
			v = v << 4 | (uint64_t)(s[i] - '0');
		else if (s[i] >= 'a' && s[i] <= 'f')
			v = v << 4 | (uint64_t)(s[i] - 'a' + 10);
		else
			return -1;
	}
	if (i != 16 || v == 0 || v > INT64_MAX)
		return -1;
	*id_r = (int64_t)v;
	return 0;
}

int
store_file_path(const struct store *st, int64_t id, char *out, size_t outlen)
{
	char name[17];

	store_file_hex(id, name);
	return xsnprintf(out, outlen, "%s/msg/%.2s/%s", st->root, name, name) < 0 ? -1 : 0;
}

static int
store_file_tmp_path(const struct store *st, int64_t id, char *out, size_t outlen)
{
	char name[17];

	store_file_hex(id, name);
	return xsnprintf(out, outlen, "%s/tmp/%s", st->root, name) < 0 ? -1 : 0;
}

/* Link tmp to final, creating the 2-hex directory the first time. 0, 1 if
 * final exists already, or -1. */
static int
store_file_link(struct store *st, const char *tmp, const char *final, const char *name)
{
	char dir[STORE_PATH_MAX];

	if (link(tmp, final) < 0) {
		if (errno == EEXIST)
			return 1;
		if (errno != ENOENT)
			return store_fail(st, store_io_err(errno), "link(%s) failed: %s", final,
					  strerror(errno));
		if (xsnprintf(dir, sizeof(dir), "%s/msg/%.2s", st->root, name) < 0)
			return store_fail(st, STORE_ERR_INTERNAL, "path too long");
		/*
		 * This level only: a store moved aside meanwhile (`surat user
		 * del`) must fail here, not have its path made anew as msg/XX
		 * without tmp/, a store a user added later under the address
		 * would find and never get a message into.
		 */
		if (mkdir(dir, 0700) < 0 && errno != EEXIST)
			return store_fail(st, store_io_err(errno), "mkdir(%s) failed: %s", dir,
					  strerror(errno));
		if (link(tmp, final) < 0)
			return errno == EEXIST ? 1
					       : store_fail(st, store_io_err(errno),
							    "link(%s) failed: %s", final,
							    strerror(errno));
	}
	return 0;
}

int
store_file_write(struct store *st, const char *data, size_t len, struct store_file *f)
{
	char tmp[STORE_PATH_MAX], final[STORE_PATH_MAX];
	int fd;

	f->fd = -1;
	for (int tries = 0;; tries++) {
		if ((st->file_next & 0xffff) == 0) {
			/* A new run: 47 random bits, then a 16-bit count from 1. */
			uint64_t r;
			util_random(&r, sizeof(r));
			st->file_next = ((r >> 1) & ~(uint64_t)0xffff) | 1;
		}
		f->id = (int64_t)st->file_next++;
		store_file_hex(f->id, f->name);
		if (store_file_tmp_path(st, f->id, tmp, sizeof(tmp)) < 0 ||
		    store_file_path(st, f->id, final, sizeof(final)) < 0)
			return store_fail(st, STORE_ERR_INTERNAL, "path too long");
		fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (fd < 0) {
			if (errno == EEXIST && tries < 8) {
				st->file_next = 0;	/* another writer's run: draw again */
				continue;
			}
			return store_fail(st, store_io_err(errno), "open(%s) failed: %s", tmp,
					  strerror(errno));
		}
		if (flock(fd, LOCK_EX) < 0) {
			store_fail(st, STORE_ERR_INTERNAL, "flock(%s) failed: %s", tmp,
				   strerror(errno));
			goto fail;
		}
		/*
		 * Between open() and flock() the marker was unlocked: a sweeper
		 * may have taken it for a dead writer's and removed it. It
		 * unlinks under the lock, so holding the lock now, a marker
		 * that still has its name is ours for good; one without is
		 * dropped for a new id.
		 */
		struct stat sb;
		if (fstat(fd, &sb) < 0) {
			store_fail(st, STORE_ERR_INTERNAL, "fstat(%s) failed: %s", tmp,
				   strerror(errno));
			goto fail;
		}
		if (sb.st_nlink == 0) {
			close(fd);
			if (tries == 8)
				return store_fail(st, STORE_ERR_INTERNAL, "%s swept while made",
						  tmp);
			st->file_next = 0;
			continue;
		}
		if (util_write_all(fd, data, len) < 0) {
			store_fail(st, store_io_err(errno), "write(%s) failed: %s", tmp,
				   strerror(errno));
			goto fail;
		}
		int linked = store_file_link(st, tmp, final, f->name);
		if (linked == 0)
			break;
		if (linked < 0)
			goto fail;
		/* The id is taken (a file of another run): draw again. */
		unlink(tmp);
		close(fd);
		if (tries == 8)
			return store_fail(st, STORE_ERR_INTERNAL, "%s exists already", final);
		st->file_next = 0;
	}
	f->fd = fd;
	return 0;
fail:
	unlink(tmp);
	close(fd);
	return -1;
}

int
store_file_sync(struct store *st, const struct store_file *f)
{
	/* A file-system-wide barrier: one flush covers every file written so far. */
	if (fsbarrier_sync(f->fd) < 0)
		return store_fail(st, store_io_err(errno), "sync of message file %s failed: %s",
				  f->name, strerror(errno));
	return 0;
}

void
store_file_done(struct store *st, struct store_file *f)
{
	char tmp[STORE_PATH_MAX];

	if (f->fd < 0)
		return;
	if (store_file_tmp_path(st, f->id, tmp, sizeof(tmp)) == 0 && unlink(tmp) < 0)
		log_warn("store: unlink(%s) failed: %s", tmp, strerror(errno));
	close(f->fd);
	f->fd = -1;
}

void
store_file_abort(struct store *st, struct store_file *f)
{
	char path[STORE_PATH_MAX];

	if (f->fd < 0)
		return;
	/* The file first: while the marker stays, a sweeper knows to look at it. */
	if (store_file_path(st, f->id, path, sizeof(path)) == 0)
		unlink(path);
	if (store_file_tmp_path(st, f->id, path, sizeof(path)) == 0)
		unlink(path);
	close(f->fd);
	f->fd = -1;
}

void
store_file_leave(struct store *st, struct store_file *f)
{
	(void)st;
	if (f->fd < 0)
		return;
	close(f->fd);
	f->fd = -1;
}

void
store_file_mark_dead(struct store *st, const struct store_names *names)
{
	char path[STORE_PATH_MAX], tmp[STORE_PATH_MAX];

	for (size_t i = 0; i < names->n; i++) {
		if (store_file_path(st, names->v[i], path, sizeof(path)) < 0 ||
		    store_file_tmp_path(st, names->v[i], tmp, sizeof(tmp)) < 0)
			continue;
		/* Without it only a crash in the window leaves an orphan: go on. */
		if (link(path, tmp) < 0 && errno != EEXIST && errno != ENOENT)
			log_warn("store: link(%s, %s) failed: %s", path, tmp, strerror(errno));
	}
}

void
store_file_unlink(struct store *st, const struct store_names *names)
{
	char path[STORE_PATH_MAX];

	for (size_t i = 0; i < names->n; i++) {
		if (store_file_path(st, names->v[i], path, sizeof(path)) < 0)
			continue;
		/* A failure keeps the marker: the next open's sweep tries again. */
		if (unlink(path) < 0 && errno != ENOENT) {
			log_warn("store: unlink(%s) failed: %s", path, strerror(errno));
			continue;
		}
		if (store_file_tmp_path(st, names->v[i], path, sizeof(path)) == 0 &&
		    unlink(path) < 0 && errno != ENOENT)
			log_warn("store: unlink(%s) failed: %s", path, strerror(errno));
	}
}

/* 1 if a files row has this id, 0 if none, -1 on error. Autocommit: a fresh snapshot. */
static int
store_file_known(struct store *st, int64_t id)
{
	sqlite3_stmt *s = store_stmt(st, SQL_FILE_EXISTS);
	int rc;

	if (s == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, id);
	rc = store_step(st, s);
	if (rc == 1)
		sqlite3_reset(s);
	return rc;
}

/* A marker taken by the sweep whose row is gone: its file goes after the flush. */
struct sweep_dead {
	int64_t id;
	int fd; /* the marker, locked */
};

/*
 * Markers held locked at once: each is a descriptor of the daemon's, and a
 * crash amid the expunge of a large mailbox leaves one per message; past
 * this many they go a batch (and one flush) at a time.
 */
#define SWEEP_DEAD_BATCH 64

/*
 * A row seen gone may be an expunge committed by another handle that has
 * not flushed it yet (its files wait marked here until it has): a power
 * cut would bring the row back. One flush makes every such commit seen so
 * far durable before any of their files goes. Closes the markers.
 */
static void
sweep_dead_remove(struct store *st, int tmp_fd, struct sweep_dead *dead, size_t ndead)
{
	char path[STORE_PATH_MAX];

	if (ndead > 0 && fsbarrier_sync(st->root_fd) < 0) {
		log_warn("store: sync(%s) failed: %s; message files kept", st->root,
			 strerror(errno));
		for (size_t i = 0; i < ndead; i++)
			close(dead[i].fd);
		return;
	}
	for (size_t i = 0; i < ndead; i++) {
		char name[17];
		store_file_hex(dead[i].id, name);
		xsnprintf(path, sizeof(path), "msg/%.2s/%s", name, name);
		if (unlinkat(st->root_fd, path, 0) == 0)
			log_info("store: removed uncommitted message file %s/%s", st->root, path);
		unlinkat(tmp_fd, name, 0);
		close(dead[i].fd);
	}
}

void
store_file_sweep_tmp(struct store *st)
{
	struct sweep_dead dead[SWEEP_DEAD_BATCH];
	size_t ndead = 0;
	struct dirent *e;
	DIR *d;
	/* Below root_fd: see store_file_sweep_all(). */
	int dfd = openat(st->root_fd, "tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);

	if (dfd < 0)
		return;
	if ((d = fdopendir(dfd)) == NULL) {
		close(dfd);
		return;
	}
	while ((e = readdir(d)) != NULL) {
		int64_t id;
		if (store_file_parse(e->d_name, &id) < 0)
			continue;
		int fd = openat(dirfd(d), e->d_name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		if (fd < 0)
			continue;
		/*
		 * Locked: its writer is alive and will finish or abort on its
		 * own. Unlocked: its writer died (a crash just before this
		 * start, most often: swept now, not left for a later open),
		 * or has just created it and not locked it yet; that one finds
		 * its marker gone once it has the lock and starts over
		 * (store_file_write), so taking it is safe.
		 */
		if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
			close(fd);
			continue;
		}
		int known = store_file_known(st, id);
		if (known == 0) {
			dead[ndead++] = (struct sweep_dead){id, fd};
			if (ndead == SWEEP_DEAD_BATCH) {
				sweep_dead_remove(st, dirfd(d), dead, ndead);
				ndead = 0;
			}
			continue;
		}
		if (known > 0)
			unlinkat(dirfd(d), e->d_name, 0);
		close(fd);
	}
	sweep_dead_remove(st, dirfd(d), dead, ndead);
	closedir(d);
}

/* The directory orphans are moved into, made if need be: a descriptor, or -1. */
static int
orphans_open(int root_fd)
{
	if (mkdirat(root_fd, STORE_ORPHANS_DIR, 0700) < 0 && errno != EEXIST)
		return -1;
	return openat(root_fd, STORE_ORPHANS_DIR, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
}

/*
 * Move name from dir into the orphans directory, under name or, taken,
 * name.1, name.2...: an earlier sweep's file of the same id (an index.db
 * put back twice hands ids out again) is never replaced. link(2), never
 * rename(2), which would. The name used goes to dest. 0 or -1.
 */
static int
orphan_move(int dir, const char *name, int lost_fd, char *dest, size_t destsz)
{
	struct stat src, there;

	if (fstatat(dir, name, &src, AT_SYMLINK_NOFOLLOW) < 0)
		return -1;
	for (unsigned n = 0; n < 1000; n++) {
		if (n == 0)
			xsnprintf(dest, destsz, "%s", name);
		else
			xsnprintf(dest, destsz, "%s.%u", name, n);
		if (linkat(dir, name, lost_fd, dest, 0) == 0)
			return unlinkat(dir, name, 0);
		if (errno != EEXIST)
			return -1;
		/*
		 * The file itself, linked by a move that a crash (or a failed
		 * unlink) cut short: finish that move, never add a second
		 * copy under NAME.1 that an admin would put back twice.
		 */
		if (fstatat(lost_fd, dest, &there, AT_SYMLINK_NOFOLLOW) == 0 &&
		    there.st_dev == src.st_dev && there.st_ino == src.st_ino)
			return unlinkat(dir, name, 0);
	}
	return -1;
}

int
store_file_sweep_all(struct store *st)
{
	char path[STORE_PATH_MAX], tmp[64], lost[STORE_PATH_MAX], dest[64];
	int moved = 0, lost_fd = -1;

	/*
	 * Below root_fd, not st->root: `surat user del` may move the store
	 * aside while this walks, and a store made anew at its path has
	 * files this handle's index does not name.
	 */
	xsnprintf(lost, sizeof(lost), "%s/" STORE_ORPHANS_DIR, st->root);
	for (unsigned i = 0; i < 256; i++) {
		struct dirent *e;
		DIR *d;

		xsnprintf(path, sizeof(path), "msg/%02x", i);
		int fd = openat(st->root_fd, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
		if (fd < 0)
			continue;
		if ((d = fdopendir(fd)) == NULL) {
			close(fd);
			continue;
		}
		xsnprintf(path, sizeof(path), "%s/msg/%02x", st->root, i);
		while ((e = readdir(d)) != NULL) {
			int64_t id;
			if (store_file_parse(e->d_name, &id) < 0)
				continue;
			/*
			 * Marker first, row second: a marker gone means its
			 * writer committed (the row is visible now) or gave up.
			 */
			char name[17];
			store_file_hex(id, name);
			xsnprintf(tmp, sizeof(tmp), "tmp/%s", name);
			if (faccessat(st->root_fd, tmp, F_OK, 0) == 0)
				continue;
			int known = store_file_known(st, id);
			if (known != 0) {
				if (known > 0)
					continue;
				closedir(d);
				goto fail;
			}
			/*
			 * Moved aside, not unlinked: an index.db put back
			 * from a backup names none of the mail delivered
			 * since, which is whole and wanted.
			 */
			if (lost_fd < 0 && (lost_fd = orphans_open(st->root_fd)) < 0) {
				store_fail(st, STORE_ERR_INTERNAL, "%s: %s", lost, strerror(errno));
				closedir(d);
				goto fail;
			}
			if (orphan_move(dirfd(d), e->d_name, lost_fd, dest, sizeof(dest)) == 0) {
				log_info("store: moved orphan message file %s/%s to %s/%s", path,
					 e->d_name, lost, dest);
				moved++;
			} else if (errno != ENOENT) { /* else gone meanwhile: nothing to move */
				log_warn("store: cannot move orphan message file %s/%s to %s: %s",
					 path, e->d_name, lost, strerror(errno));
			}
		}
		closedir(d);
	}
	if (lost_fd >= 0)
		close(lost_fd);
	return moved;
fail:
	if (lost_fd >= 0)
		close(lost_fd);
	return -1;
}
