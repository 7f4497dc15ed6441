/* Unit tests for core/worker: jobs run on pool threads, completions on the loop. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "core/worker.h"

struct job {
	pthread_t loop_thread;
	pthread_t ran_on;
	int work_done;
	int *completed;
	struct event_base *base;
	int total;
};

static void
work(void *arg)
{
	struct job *j = arg;
	j->ran_on = pthread_self();
	usleep(1000);
	j->work_done = 1;
}

static void
done(void *arg)
{
	struct job *j = arg;
	assert_int_equal(j->work_done, 1);
	assert_true(pthread_equal(pthread_self(), j->loop_thread));
	assert_false(pthread_equal(j->ran_on, j->loop_thread));
	if (++*j->completed == j->total)
		event_base_loopexit(j->base, NULL);
}

static void
test_jobs_complete_on_loop(void **state)
{
	struct event_base *base = event_base_new();
	struct worker_pool *pool = worker_pool_new(base, 3);
	int completed = 0;
	enum { N = 200 };
	struct job *jobs = calloc(N, sizeof(*jobs));

	for (int i = 0; i < N; i++) {
		jobs[i].loop_thread = pthread_self();
		jobs[i].completed = &completed;
		jobs[i].base = base;
		jobs[i].total = N;
		worker_submit(pool, work, done, &jobs[i]);
	}
	assert_int_equal(worker_pending(pool), N);
	struct timeval limit = {20, 0};
	event_base_loopexit(base, &limit);
	event_base_dispatch(base);
	assert_int_equal(completed, N);
	assert_int_equal(worker_pending(pool), 0);
	worker_pool_free(&pool);
	assert_null(pool);
	event_base_free(base);
	free(jobs);
}

static void
test_free_runs_pending(void **state)
{
	struct event_base *base = event_base_new();
	struct worker_pool *pool = worker_pool_new(base, 2);
	int completed = 0;
	struct job j[5];
	for (int i = 0; i < 5; i++) {
		j[i] = (struct job){pthread_self(), pthread_self(), 0, &completed, base, 100};
		worker_submit(pool, work, done, &j[i]);
	}
	/* Freeing finishes the queued jobs and runs their completions. */
	worker_pool_free(&pool);
	assert_int_equal(completed, 5);
	event_base_free(base);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_jobs_complete_on_loop),
		cmocka_unit_test(test_free_runs_pending),
	};
	return cmocka_run_group_tests_name("worker", tests, NULL, NULL);
}
