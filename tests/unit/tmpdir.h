/* tmpdir.h - temporary directories for unit tests (tests/ only): created per test, removed
 * recursively by the teardown even when the test failed. */
#ifndef TESTS_TMPDIR_H
#define TESTS_TMPDIR_H

#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int tmpdir_remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(path);
}

/* Creates a fresh directory under $TMPDIR (or /tmp); its path goes to out (size bytes); 0 or -1. */
static inline int tmpdir_create(char *out, size_t size, const char *tag)
{
  const char *base = getenv("TMPDIR");
  snprintf(out, size, "%s/rpl-%s-XXXXXX", base && *base ? base : "/tmp", tag);
  return mkdtemp(out) ? 0 : -1;
}

/* Removes dir and everything below it (never follows symlinks). */
static inline void tmpdir_remove(const char *dir)
{
  if (dir && *dir)
    (void)nftw(dir, tmpdir_remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

#endif
