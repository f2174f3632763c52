/* fuzz_tmpdir.h - a fuzz harness's scratch directory, named after the harness and its process, and
 * the ones its earlier runs could not remove. libFuzzer leaves by _Exit after a crash, a timeout or
 * an interrupt (and ctest kills a harness past its time), so atexit never runs there: the next run of
 * the same harness removes a directory of its name whose process is gone. */
#ifndef RPL_FUZZ_TMPDIR_H
#define RPL_FUZZ_TMPDIR_H

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static inline int fuzz_tmpdir_remove_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
  (void)st;
  (void)ftw;
  return (type == FTW_DP ? rmdir(path) : unlink(path)) == 0 || errno == ENOENT ? 0 : -1;
}

/* Removes dir and everything under it (symbolic links themselves, never what they point at). */
static inline void fuzz_tmpdir_remove(const char *dir)
{
  if (dir[0] && nftw(dir, fuzz_tmpdir_remove_one, 16, FTW_DEPTH | FTW_PHYS) != 0 && errno != ENOENT)
    fprintf(stderr, "fuzz harness: %s not removed: %s\n", dir, strerror(errno));
}

/* Makes base/rpl-fuzz-NAME-PID-XXXXXX into dir (size bytes), after removing base's
 * rpl-fuzz-NAME-PID-* directories of this user whose PID is no process. 0, or -1 (said). */
static inline int fuzz_tmpdir_make(char *dir, size_t size, const char *base, const char *name)
{
  char prefix[128];
  int plen = snprintf(prefix, sizeof prefix, "rpl-fuzz-%s-", name);
  DIR *d = opendir(base);
  for (struct dirent *de; d && (de = readdir(d));) {
    char *end;
    if (strncmp(de->d_name, prefix, (size_t)plen) != 0)
      continue;
    long pid = strtol(de->d_name + plen, &end, 10);
    struct stat st;
    char path[512];
    snprintf(path, sizeof path, "%s/%s", base, de->d_name);
    if (end == de->d_name + plen || *end != '-' || pid <= 0 || (kill((pid_t)pid, 0) == -1 ? errno != ESRCH : 1) ||
        lstat(path, &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != getuid())
      continue;
    fuzz_tmpdir_remove(path);
  }
  if (d)
    closedir(d);
  if (snprintf(dir, size, "%s/%s%ld-XXXXXX", base, prefix, (long)getpid()) >= (int)size || !mkdtemp(dir)) {
    fprintf(stderr, "fuzz harness: cannot make a directory under %s: %s\n", base, strerror(errno));
    return -1;
  }
  return 0;
}

#endif
