/*
 * unit_util — what several unit tests need beside cmocka: removing a test's
 * temporary directory tree.
 */
#ifndef SURAT_UNIT_UTIL_H
#define SURAT_UNIT_UTIL_H

#include <ftw.h>
#include <stdio.h>
#include <sys/stat.h>

static int
unit_rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* Remove dir and everything below it (not following links). */
static inline void
unit_rm_tree(const char *dir)
{
	nftw(dir, unit_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

#endif
