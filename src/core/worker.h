/*
 * worker — a small pool of threads for blocking work (fsync, SQLite writes,
 * crypt(3)), with completions posted back to the event loop.
 *
 * worker_submit(pool, work, done, arg): work(arg) runs on a pool thread;
 * then done(arg) runs on the loop thread. Jobs run in parallel; a caller
 * that needs ordering chains jobs from its done callback.
 *
 * SECURITY: work functions must not touch loop-owned state (sessions,
 * bufferevents); they get only what arg carries.
 */
#ifndef SURAT_WORKER_H
#define SURAT_WORKER_H

struct event_base;
struct worker_pool;

typedef void (*worker_fn)(void *arg);

/* Start nthreads threads bound to base. Never NULL (aborts on failure). */
struct worker_pool *worker_pool_new(struct event_base *base, int nthreads);
/*
 * The same with threads at the given nice value (setpriority(2) on each
 * thread): background work that should yield the CPUs to the loop and to
 * work someone is waiting on.
 */
struct worker_pool *worker_pool_new_nice(struct event_base *base, int nthreads, int nice);
/* Queue a job. done may be NULL. Safe from the loop thread only. */
void worker_submit(struct worker_pool *pool, worker_fn work, worker_fn done, void *arg);
/* Jobs queued or running whose done callback has not yet run. */
unsigned worker_pending(const struct worker_pool *pool);
/* Finish queued jobs, run their done callbacks, stop the threads, free. */
void worker_pool_free(struct worker_pool **pool);

#endif
