/* test_freeze.c - Description: freezing the ext4 filesystem on a real loop disk (through its
 * partition), the hard limit, the watchdog thawing after kill -9, and the hook scripts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "freeze.h"

static char dir[64], loopdev[64], part[80], mnt[128], rawdev[64];

__attribute__((format(printf, 1, 2))) static int sh(const char *fmt, ...)
{
  char cmd[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  return system(cmd);
}

static int read_line(const char *cmd, char *out, size_t n)
{
  FILE *p = popen(cmd, "r");
  if (!p || !fgets(out, (int)n, p)) {
    if (p)
      pclose(p);
    return -1;
  }
  out[strcspn(out, "\n")] = '\0';
  return pclose(p) == 0 ? 0 : -1;
}

static int teardown_all(void **state)
{
  if (mnt[0]) {
    int fd = open(mnt, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) { /* never leave it frozen, whatever failed */
      ioctl(fd, FITHAW, 0);
      close(fd);
    }
    sh("umount %s 2>/dev/null", mnt);
  }
  if (loopdev[0])
    sh("losetup -d %s", loopdev);
  if (rawdev[0])
    sh("losetup -d %s", rawdev);
  if (dir[0])
    sh("rm -rf %s", dir);
  return 0;
}

static int setup_all(void **state)
{
  if (geteuid() != 0 || access("/usr/sbin/mkfs.ext4", X_OK) != 0 || access("/usr/sbin/sfdisk", X_OK) != 0) {
    fprintf(stderr, "skipped: needs root, mkfs.ext4 and sfdisk\n");
    exit(77);
  }
  strcpy(dir, "/var/tmp/test_freeze.XXXXXX");
  if (!mkdtemp(dir))
    return -1;
  /* A disk with a partition table and ext4 in partition 1, and a disk with no filesystem. */
  char cmd[512];
  snprintf(cmd, sizeof cmd, "truncate -s 64M %s/disk.img && echo 'start=2048, type=83' | sfdisk -q %s/disk.img", dir, dir);
  if (sh("%s", cmd) != 0)
    return -1;
  snprintf(cmd, sizeof cmd, "losetup --find --show -P %s/disk.img", dir);
  if (read_line(cmd, loopdev, sizeof loopdev) != 0)
    return -1;
  /* Without udev no partition node appears in /dev: make one in our directory from sysfs. */
  const char *name = strrchr(loopdev, '/') + 1;
  snprintf(part, sizeof part, "%s/part1", dir);
  /* Some kernels here do not parse partition tables on their own: add it with BLKPG (partx). */
  sh("test -e /sys/block/%s/%sp1 || partx -a %s", name, name, loopdev);
  snprintf(cmd, sizeof cmd, "cat /sys/block/%s/%sp1/dev", name, name);
  char majmin[32];
  unsigned ma, mi;
  if (read_line(cmd, majmin, sizeof majmin) != 0 || sscanf(majmin, "%u:%u", &ma, &mi) != 2)
    return -1;
  snprintf(mnt, sizeof mnt, "%s/mnt", dir);
  if (sh("mknod %s b %u %u && mkfs.ext4 -q %s && mkdir -p %s && mount %s %s", part, ma, mi, part, mnt, part, mnt) != 0)
    return -1;
  snprintf(cmd, sizeof cmd, "truncate -s 16M %s/raw.img && losetup --find --show %s/raw.img", dir, dir);
  if (read_line(cmd, rawdev, sizeof rawdev) != 0)
    return -1;
  /* Orphaned watchdogs come back to us, so the test can wait for them instead of guessing. */
  prctl(PR_SET_CHILD_SUBREAPER, 1);
  return 0;
}

/* FIFREEZE on a frozen filesystem answers EBUSY; FITHAW on a thawed one answers EINVAL. */
static int is_frozen(void)
{
  int fd = open(mnt, O_RDONLY | O_DIRECTORY);
  assert_true(fd >= 0);
  int r = ioctl(fd, FIFREEZE, 0);
  int frozen = r != 0 && errno == EBUSY;
  if (r == 0)
    ioctl(fd, FITHAW, 0); /* it was not frozen: undo our probe */
  close(fd);
  return frozen;
}

static struct freeze_set *find_disk(void)
{
  const char *devs[] = {loopdev};
  struct freeze_set *s;
  assert_int_equal(freeze_find(devs, 1, &s), RPL_OK);
  return s;
}

static void test_find(void **state)
{
  struct freeze_set *s = find_disk();
  assert_int_equal(freeze_count(s), 1); /* found through the partition */
  assert_string_equal(freeze_mountpoint(s, 0), mnt);
  freeze_free(s);
  const char *raw[] = {rawdev};
  assert_int_equal(freeze_find(raw, 1, &s), RPL_OK);
  assert_int_equal(freeze_count(s), 0); /* no filesystem: nothing to freeze */
  freeze_free(s);
  const char *bad[] = {"/etc/hostname"};
  assert_int_equal(freeze_find(bad, 1, &s), RPL_E_INVALID_ARGUMENT);
}

static void test_freeze_and_thaw(void **state)
{
  sh("echo data > %s/file", mnt);
  struct freeze_set *s = find_disk();
  struct freeze_options opt = {.limit_ms = 20000};
  assert_int_equal(freeze_begin(s, &opt), RPL_OK);
  assert_true(freeze_watchdog_pid(s) > 0);
  assert_true(is_frozen());
  assert_int_equal(freeze_end(s), RPL_OK);
  assert_false(is_frozen());
  assert_int_equal(freeze_watchdog_pid(s), 0);
  freeze_free(s);
}

static void test_limit_expires(void **state)
{
  struct freeze_set *s = find_disk();
  struct freeze_options opt = {.limit_ms = 50};
  assert_int_equal(freeze_begin(s, &opt), RPL_OK);
  pid_t wd = freeze_watchdog_pid(s);
  /* Wait until the watchdog has acted rather than sleeping a guessed time: it thaws at the limit
   * and then waits for us, so the filesystem turns thawed while the watchdog still lives. */
  while (is_frozen())
    usleep(10000);
  assert_int_equal(kill(wd, 0), 0);
  assert_int_equal(freeze_end(s), RPL_E_FREEZE_EXPIRED);
  assert_false(is_frozen());
  freeze_free(s);
}

static void test_watchdog_thaws_after_kill9(void **state)
{
  int p[2];
  assert_int_equal(pipe(p), 0);
  pid_t child = fork();
  assert_true(child >= 0);
  if (child == 0) {
    struct freeze_set *s = find_disk();
    struct freeze_options opt = {.limit_ms = 600000}; /* only the agent's death can end it */
    if (freeze_begin(s, &opt) != RPL_OK)
      _exit(1);
    pid_t wd = freeze_watchdog_pid(s);
    if (write(p[1], &wd, sizeof wd) != sizeof wd)
      _exit(1);
    for (;;)
      pause();
  }
  close(p[1]);
  pid_t wd = 0;
  assert_int_equal(read(p[0], &wd, sizeof wd), sizeof wd);
  close(p[0]);
  assert_true(is_frozen());
  kill(child, SIGKILL);
  waitpid(child, NULL, 0);
  /* The watchdog sees the pipe close, thaws and exits; as subreaper we reap it. */
  int status;
  assert_int_equal(waitpid(wd, &status, 0), wd);
  assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  assert_false(is_frozen());
}

static void test_hooks(void **state)
{
  char pre[256], post[256], marker[200];
  snprintf(marker, sizeof marker, "%s/hooks.log", dir);
  snprintf(pre, sizeof pre, "echo pre-$RPL_FREEZE_PHASE >> %s", marker);
  snprintf(post, sizeof post, "echo post-$RPL_FREEZE_PHASE >> %s", marker);
  struct freeze_set *s = find_disk();
  struct freeze_options opt = {.limit_ms = 20000, .pre_hook = pre, .post_hook = post};
  assert_int_equal(freeze_begin(s, &opt), RPL_OK);
  assert_int_equal(freeze_end(s), RPL_OK);
  char line[128];
  char cmd[300];
  snprintf(cmd, sizeof cmd, "tr '\\n' ' ' < %s", marker);
  assert_int_equal(read_line(cmd, line, sizeof line), 0);
  assert_string_equal(line, "pre-pre-freeze post-post-thaw ");

  /* A failing pre hook: no freeze at all, and the reason. */
  opt.pre_hook = "exit 3";
  assert_int_equal(freeze_begin(s, &opt), RPL_E_FREEZE_HOOK);
  assert_false(is_frozen());
  /* A hook that hangs is killed at its timeout. */
  opt.pre_hook = "sleep 30";
  opt.hook_timeout_ms = 100;
  assert_int_equal(freeze_begin(s, &opt), RPL_E_FREEZE_HOOK);
  assert_false(is_frozen());
  /* A failing post hook is reported, and the filesystem is thawed all the same. */
  opt.pre_hook = NULL;
  opt.post_hook = "exit 1";
  assert_int_equal(freeze_begin(s, &opt), RPL_OK);
  assert_int_equal(freeze_end(s), RPL_E_FREEZE_HOOK);
  assert_false(is_frozen());
  freeze_free(s);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_find),
    cmocka_unit_test(test_freeze_and_thaw),
    cmocka_unit_test(test_limit_expires),
    cmocka_unit_test(test_watchdog_thaws_after_kill9),
    cmocka_unit_test(test_hooks),
  };
  return cmocka_run_group_tests(tests, setup_all, teardown_all);
}
