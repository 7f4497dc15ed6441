/*
 * fsbarrier — group commit for the whole daemon. fsbarrier_sync(fd) returns
 * once every write the calling thread made before the call, on the
 * filesystem holding fd, is on stable storage (data, metadata and directory
 * entries). Threads that call at about the same time share one syncfs(2):
 * while one flush runs, newcomers wait and are all served by the next one.
 * Under load this turns N fsyncs into a handful, which is what makes "fsync
 * before 250" cheap.
 *
 * A thread whose caller is not waiting on it (local delivery: nobody is
 * answered when it finishes) can be patient: it first waits a little for a
 * flush some other thread starts (the next message's acceptance) and only
 * then starts one itself. Deliveries so ride on the flushes that acceptance
 * makes anyway, instead of adding their own flushes for acceptance to queue
 * behind.
 *
 * SECURITY: no input from peers; errors are reported to every waiter whose
 * flush failed, never swallowed.
 */
#ifndef SURAT_FSBARRIER_H
#define SURAT_FSBARRIER_H

/* 0 when durable, -1 with errno when the flush failed. Blocking: workers only. */
int fsbarrier_sync(int fd);

/*
 * For the calling thread's later fsbarrier_sync() calls: wait up to usec
 * microseconds for another thread's flush before starting one (0, the
 * default: start at once). Returns the previous value, to restore.
 */
unsigned fsbarrier_set_patience(unsigned usec);

#endif
