/*
 * worker — see worker.h. Jobs wait in a FIFO under one mutex; finished jobs
 * go to a second list and an eventfd wakes the loop, which runs every done
 * callback it finds. One wake-up may carry many completions.
 *
 * SECURITY: no job data is shared between threads except through the two
 * lists, both under the mutex.
 */
#include "core/worker.h"
#include "core/util.h"
#include "core/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <unistd.h>

#include <event2/event.h>

struct worker_job {
	worker_fn work;
	worker_fn done;
	void *arg;
	struct worker_job *next;
};

struct worker_pool {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct worker_job *q_head, *q_tail;	/* waiting to run */
	struct worker_job *d_head, *d_tail;	/* finished, done() pending */
	unsigned pending;
	int stopping;
	int efd;
	struct event *ev;
	pthread_t *threads;
	int nthreads;
	int nice;
};

static void *
worker_main(void *p)
{
	struct worker_pool *pool = p;

	/* Linux nice values are per thread. A refusal only leaves it at 0. */
	if (pool->nice != 0)
		(void)setpriority(PRIO_PROCESS, (id_t)gettid(), pool->nice);
	pthread_mutex_lock(&pool->mu);
	for (;;) {
		while (pool->q_head == NULL && !pool->stopping)
			pthread_cond_wait(&pool->cv, &pool->mu);
		struct worker_job *job = pool->q_head;
		if (job == NULL)
			break;
		pool->q_head = job->next;
		if (pool->q_head == NULL)
			pool->q_tail = NULL;
		pthread_mutex_unlock(&pool->mu);

		job->work(job->arg);

		pthread_mutex_lock(&pool->mu);
		job->next = NULL;
		int wake = pool->d_head == NULL;
		if (pool->d_tail)
			pool->d_tail->next = job;
		else
			pool->d_head = job;
		pool->d_tail = job;
		if (wake) {
			/* After the unlock: the loop, woken, takes the mutex at once. */
			pthread_mutex_unlock(&pool->mu);
			uint64_t one = 1;
			(void)!write(pool->efd, &one, sizeof(one));
			pthread_mutex_lock(&pool->mu);
		}
	}
	pthread_mutex_unlock(&pool->mu);
	return NULL;
}

static void
worker_drain(struct worker_pool *pool)
{
	pthread_mutex_lock(&pool->mu);
	struct worker_job *job = pool->d_head;
	pool->d_head = pool->d_tail = NULL;
	pthread_mutex_unlock(&pool->mu);

	while (job) {
		struct worker_job *next = job->next;
		pool->pending--;
		if (job->done)
			job->done(job->arg);
		free(job);
		job = next;
	}
}

static void
worker_on_event(evutil_socket_t fd, short what, void *arg)
{
	uint64_t v;

	(void)!read(fd, &v, sizeof(v));
	worker_drain(arg);
}

struct worker_pool *
worker_pool_new(struct event_base *base, int nthreads)
{
	return worker_pool_new_nice(base, nthreads, 0);
}

struct worker_pool *
worker_pool_new_nice(struct event_base *base, int nthreads, int nice)
{
	struct worker_pool *pool = xcalloc(1, sizeof(*pool));

	pthread_mutex_init(&pool->mu, NULL);
	pthread_cond_init(&pool->cv, NULL);
	pool->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (pool->efd < 0)
		PANIC("eventfd failed: %s", strerror(errno));
	pool->ev = event_new(base, pool->efd, EV_READ | EV_PERSIST, worker_on_event, pool);
	event_add(pool->ev, NULL);
	pool->nthreads = nthreads;
	pool->nice = nice;
	pool->threads = xcalloc((size_t)nthreads, sizeof(pthread_t));
	for (int i = 0; i < nthreads; i++) {
		int e = pthread_create(&pool->threads[i], NULL, worker_main, pool);
		if (e != 0)
			PANIC("pthread_create failed: %s", strerror(e));
	}
	return pool;
}

void
worker_submit(struct worker_pool *pool, worker_fn work, worker_fn done, void *arg)
{
	struct worker_job *job = xmalloc(sizeof(*job));

	job->work = work;
	job->done = done;
	job->arg = arg;
	job->next = NULL;
	pool->pending++;
	pthread_mutex_lock(&pool->mu);
	if (pool->q_tail)
		pool->q_tail->next = job;
	else
		pool->q_head = job;
	pool->q_tail = job;
	pthread_mutex_unlock(&pool->mu);
	/* After the unlock: the woken thread must not block on the mutex at once. */
	pthread_cond_signal(&pool->cv);
}

unsigned
worker_pending(const struct worker_pool *pool)
{
	return pool->pending;
}

void
worker_pool_free(struct worker_pool **pp)
{
	struct worker_pool *pool = *pp;

	if (pool == NULL)
		return;
	pthread_mutex_lock(&pool->mu);
	pool->stopping = 1;
	pthread_cond_broadcast(&pool->cv);
	pthread_mutex_unlock(&pool->mu);
	for (int i = 0; i < pool->nthreads; i++)
		pthread_join(pool->threads[i], NULL);
	while (pool->pending > 0 && pool->d_head)
		worker_drain(pool);
	event_free(pool->ev);
	close(pool->efd);
	pthread_mutex_destroy(&pool->mu);
	pthread_cond_destroy(&pool->cv);
	free(pool->threads);
	free(pool);
	*pp = NULL;
}
