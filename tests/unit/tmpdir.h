/* tmpdir.h - temporary directories for unit tests and fuzz harnesses (tests/ only): created per test
 * or harness, named after it and its process, removed recursively by the teardown even when the test
 * failed. A process killed past its time (ctest's timeout; libFuzzer's _Exit after a crash, a timeout
 * or an interrupt, which skips atexit) cannot remove its own: the next one of the same name removes
 * those whose process is gone. */
#ifndef TESTS_TMPDIR_H
#define TESTS_TMPDIR_H

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int tmpdir_remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(path);
}

/* Removes dir and everything below it (never follows symlinks). */
static inline void tmpdir_remove(const char *dir)
{
  if (dir && *dir)
    (void)nftw(dir, tmpdir_remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Removes base's rpl-TAG-PID-* directories of this user whose PID is no process. */
static inline void tmpdir_remove_stale(const char *base, const char *tag)
{
  char prefix[128];
  int plen = snprintf(prefix, sizeof prefix, "rpl-%s-", tag);
  DIR *d = opendir(base);
  for (struct dirent *de; d && (de = readdir(d));) {
    char *end, path[PATH_MAX];
    struct stat st;
    if (strncmp(de->d_name, prefix, (size_t)plen) != 0)
      continue;
    long pid = strtol(de->d_name + plen, &end, 10);
    if (end == de->d_name + plen || *end != '-' || pid <= 0)
      continue;
    if (kill((pid_t)pid, 0) == 0 || errno != ESRCH)
      continue; /* its process runs (or is not ours to ask) */
    snprintf(path, sizeof path, "%s/%s", base, de->d_name);
    if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == getuid())
      tmpdir_remove(path);
  }
  if (d)
    closedir(d);
}

/* Creates a fresh directory base/rpl-TAG-PID-XXXXXX; its path goes to out (size bytes); 0, or -1
 * (said on stderr). */
static inline int tmpdir_create_in(char *out, size_t size, const char *base, const char *tag)
{
  tmpdir_remove_stale(base, tag);
  if (snprintf(out, size, "%s/rpl-%s-%ld-XXXXXX", base, tag, (long)getpid()) >= (int)size || !mkdtemp(out)) {
    fprintf(stderr, "tmpdir: cannot make a directory under %s: %s\n", base, strerror(errno));
    return -1;
  }
  return 0;
}

/* tmpdir_create_in under $TMPDIR (or /tmp). */
static inline int tmpdir_create(char *out, size_t size, const char *tag)
{
  const char *base = getenv("TMPDIR");
  return tmpdir_create_in(out, size, base && *base ? base : "/tmp", tag);
}

#endif
