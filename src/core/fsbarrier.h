/*
 * fsbarrier — group commit for the whole daemon. fsbarrier_sync(fd) returns
 * once every write the calling thread made before the call, on the
 * filesystem holding fd, is on stable storage (data, metadata and directory
 * entries). Threads that call at about the same time share one syncfs(2):
 * while one flush runs, newcomers wait and are all served by the next one.
 * Under load this turns N fsyncs into a handful, which is what makes "fsync
 * before 250" cheap.
 *
 * SECURITY: no input from peers; errors are reported to every waiter whose
 * flush failed, never swallowed.
 */
#ifndef SURAT_FSBARRIER_H
#define SURAT_FSBARRIER_H

/* 0 when durable, -1 with errno when the flush failed. Blocking: workers only. */
int fsbarrier_sync(int fd);

#endif
