/*
 * fsbarrier — see fsbarrier.h. One generation counter per filesystem:
 * "started" counts flushes begun, "done" flushes finished (they run one at
 * a time, so they finish in order). A caller needs flush started+1: the one
 * in flight when it arrived may have begun before its writes. A patient
 * caller (fsbarrier_set_patience) that finds no flush running waits on the
 * same condition, with a deadline, before it starts one itself.
 *
 * SECURITY: a failed flush fails every caller it was meant to cover.
 */
#include "core/fsbarrier.h"
#include "core/util.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define FSB_DEVS 8

struct fsb_dev {
	dev_t dev;
	int used;
	int running;
	uint64_t started, done;
	uint64_t failed_gen;	/* last generation that failed, 0 if none */
	int failed_errno;
	pthread_cond_t cv;
};

static pthread_mutex_t fsb_mu = PTHREAD_MUTEX_INITIALIZER;
static struct fsb_dev fsb_devs[FSB_DEVS];
static __thread unsigned fsb_patience;	/* microseconds */

unsigned
fsbarrier_set_patience(unsigned usec)
{
	unsigned old = fsb_patience;
	fsb_patience = usec;
	return old;
}

static struct fsb_dev *
fsb_find(dev_t dev)
{
	for (int i = 0; i < FSB_DEVS; i++)
		if (fsb_devs[i].used && fsb_devs[i].dev == dev)
			return &fsb_devs[i];
	for (int i = 0; i < FSB_DEVS; i++) {
		if (!fsb_devs[i].used) {
			fsb_devs[i].used = 1;
			fsb_devs[i].dev = dev;
			/* Patient waiters time out on the monotonic clock. */
			pthread_condattr_t ca;
			pthread_condattr_init(&ca);
			pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
			pthread_cond_init(&fsb_devs[i].cv, &ca);
			pthread_condattr_destroy(&ca);
			return &fsb_devs[i];
		}
	}
	return NULL;
}

int
fsbarrier_sync(int fd)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return -1;
	pthread_mutex_lock(&fsb_mu);
	struct fsb_dev *d = fsb_find(st.st_dev);
	if (d == NULL) {
		/* More filesystems than slots: flush alone. */
		pthread_mutex_unlock(&fsb_mu);
		return syncfs(fd);
	}
	uint64_t target = d->started + 1;
	int patient = fsb_patience > 0, flushed = 0;
	struct timespec until;
	if (patient) {
		clock_gettime(CLOCK_MONOTONIC, &until);
		long ns = until.tv_nsec + (long)(fsb_patience % 1000000) * 1000;
		until.tv_sec += fsb_patience / 1000000 + ns / 1000000000;
		until.tv_nsec = ns % 1000000000;
	}
	while (d->done < target) {
		if (d->running) {
			pthread_cond_wait(&d->cv, &fsb_mu);
			continue;
		}
		if (patient) {
			/* Someone else's flush may come; if not, ours. */
			if (pthread_cond_timedwait(&d->cv, &fsb_mu, &until) == ETIMEDOUT)
				patient = 0;
			continue;
		}
		d->running = 1;
		uint64_t gen = ++d->started;
		pthread_mutex_unlock(&fsb_mu);
		int r = syncfs(fd);
		int e = errno;
		pthread_mutex_lock(&fsb_mu);
		if (r < 0) {
			d->failed_gen = gen;
			d->failed_errno = e;
		}
		d->done = gen;
		d->running = 0;
		flushed = 1;
	}
	int failed = d->failed_gen >= target;
	int e = d->failed_errno;
	pthread_mutex_unlock(&fsb_mu);
	/* After the unlock: the waiters woken must not block on the mutex at once. */
	if (flushed)
		pthread_cond_broadcast(&d->cv);
	if (failed) {
		errno = e;
		return -1;
	}
	return 0;
}
