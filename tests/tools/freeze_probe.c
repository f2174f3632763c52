/* freeze_probe.c - drives agent/freeze.c from shell tests (the qemu guest's device-mapper layouts):
 * lists what freeze_find sees on a set of disks, or freezes it, checks the FIFREEZE state of each
 * filesystem while frozen and after the thaw, and prints one line per fact for the script to check. */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "freeze.h"

/* FIFREEZE on a frozen filesystem answers EBUSY; on a thawed one it freezes (undone at once). */
static const char *state(const char *mountpoint)
{
  int fd = open(mountpoint, O_RDONLY | O_DIRECTORY);
  if (fd < 0)
    return "unknown";
  int r = ioctl(fd, FIFREEZE, 0);
  int e = errno;
  if (r == 0)
    ioctl(fd, FITHAW, 0);
  close(fd);
  return r == 0 ? "thawed" : e == EBUSY ? "frozen" : "unknown";
}

int main(int argc, char **argv)
{
  if (argc < 3 || (strcmp(argv[1], "find") != 0 && strcmp(argv[1], "freeze") != 0)) {
    fprintf(stderr, "usage: freeze_probe find|freeze DEVICE...\n");
    return 2;
  }
  struct freeze_set *s;
  rpl_err err = freeze_find((const char *const *)argv + 2, (size_t)(argc - 2), &s);
  if (err) {
    printf("find-error %d\n", (int)err);
    return 1;
  }
  for (size_t i = 0; i < freeze_count(s); i++)
    printf("mount %s\n", freeze_mountpoint(s, i));
  for (size_t i = 0; i < freeze_partial_count(s); i++)
    printf("partial %s: %s\n", freeze_partial_mountpoint(s, i), freeze_partial_reason(s, i));
  int rc = 0;
  if (strcmp(argv[1], "freeze") == 0) {
    struct freeze_options opt = {.limit_ms = 60000};
    err = freeze_begin(s, &opt);
    printf("begin %d\n", (int)err);
    for (size_t i = 0; i < freeze_count(s); i++)
      printf("during %s %s\n", freeze_mountpoint(s, i), state(freeze_mountpoint(s, i)));
    for (size_t i = 0; i < freeze_partial_count(s); i++)
      printf("during %s %s\n", freeze_partial_mountpoint(s, i), state(freeze_partial_mountpoint(s, i)));
    if (!err) {
      err = freeze_end(s);
      printf("end %d\n", (int)err);
    }
    for (size_t i = 0; i < freeze_count(s); i++)
      printf("after %s %s\n", freeze_mountpoint(s, i), state(freeze_mountpoint(s, i)));
    rc = err ? 1 : 0;
  }
  freeze_free(s);
  return rc;
}
