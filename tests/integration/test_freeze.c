/* test_freeze.c - Description: freezing the ext4 filesystem on a real loop disk (through its
 * partition), the hard limit, the hook scripts, and the failure matrix (hung hook, failed freeze,
 * agent SIGSTOP and SIGKILL mid-freeze, a FIFREEZE completing after the limit, FIFREEZE under
 * heavy writes): each time the filesystem
 * accepts writes again within the limit plus a margin, and the post-thaw hook ran. */
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
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "freeze.h"

static char dir[64], loopdev[64], part[80], mnt[128], rawdev[64], post_marker[128];
static pid_t stray[8]; /* processes a failed assertion may leave behind: teardown ends them */

/* Generous on purpose (a loaded machine): the point is "bounded", not "fast". */
#define MARGIN_MS 3000

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

/* After each test of the failure matrix, and at the end: whatever a failed assertion left (a
 * frozen filesystem, a stopped agent whose watchdog keeps thawing, writers) must not leak into
 * the next test. Orphaned watchdogs come back to us (subreaper) and end once their agent did. */
static int end_strays(void **state)
{
  if (!mnt[0])
    return 0;
  int fd = open(mnt, O_RDONLY | O_DIRECTORY);
  if (fd >= 0) { /* never leave it frozen, whatever failed */
    ioctl(fd, FITHAW, 0);
    close(fd);
  }
  for (size_t i = 0; i < sizeof stray / sizeof *stray; i++)
    if (stray[i] > 0) {
      kill(-stray[i], SIGKILL);
      kill(stray[i], SIGKILL);
      waitpid(stray[i], NULL, 0);
      stray[i] = 0;
    }
  while (waitpid(-1, NULL, 0) > 0)
    ;
  return 0;
}

static int teardown_all(void **state)
{
  if (mnt[0]) {
    end_strays(state);
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
  snprintf(post_marker, sizeof post_marker, "%s/post.marker", dir);
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
  assert_int_equal(freeze_partial_count(s), 0);
  assert_null(freeze_partial_reason(s, 0));
  freeze_free(s);
  /* The partition itself is a protected device too: its filesystem is found from it. */
  const char *p1[] = {part};
  assert_int_equal(freeze_find(p1, 1, &s), RPL_OK);
  assert_int_equal(freeze_count(s), 1);
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
  /* Long enough for FIFREEZE on a loaded machine (past the limit freeze_begin itself gives up). */
  struct freeze_options opt = {.limit_ms = 500};
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

/* ---- the failure matrix ------------------------------------------------------------------- */

static uint64_t now_ms(void)
{
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000 + (uint64_t)t.tv_nsec / 1000000;
}

static void track(pid_t pid)
{
  for (size_t i = 0; i < sizeof stray / sizeof *stray; i++)
    if (stray[i] <= 0) {
      stray[i] = pid;
      return;
    }
}

static void untrack(pid_t pid)
{
  for (size_t i = 0; i < sizeof stray / sizeof *stray; i++)
    if (stray[i] == pid)
      stray[i] = 0;
}

/* Whether a write of a new file completes before the deadline (a write to a frozen filesystem
 * blocks until the thaw); done in a child so that a frozen filesystem cannot hang the test. */
static int writable_by(uint64_t deadline)
{
  char path[200];
  snprintf(path, sizeof path, "%s/probe", mnt);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0600);
    static const char data[4096];
    _exit(fd >= 0 && write(fd, data, sizeof data) == (ssize_t)sizeof data && close(fd) == 0 ? 0 : 1);
  }
  track(pid);
  for (;;) {
    int status;
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) {
      untrack(pid);
      return WIFEXITED(status) && WEXITSTATUS(status) == 0;
    }
    if (now_ms() >= deadline)
      return 0; /* the child stays tracked: teardown thaws, then reaps it */
    usleep(10000);
  }
}

static int exists_by(const char *path, uint64_t deadline)
{
  while (access(path, F_OK) != 0) {
    if (now_ms() >= deadline)
      return 0;
    usleep(10000);
  }
  return 1;
}

static struct freeze_options marked(unsigned limit_ms)
{
  static char post[256];
  snprintf(post, sizeof post, "echo $RPL_FREEZE_PHASE > %s", post_marker);
  unlink(post_marker);
  return (struct freeze_options){.limit_ms = limit_ms, .post_hook = post};
}

static void test_hung_pre_hook(void **state)
{
  struct freeze_set *s = find_disk();
  struct freeze_options opt = marked(500);
  opt.pre_hook = "sleep 30";
  opt.hook_timeout_ms = 200;
  uint64_t start = now_ms();
  assert_int_equal(freeze_begin(s, &opt), RPL_E_FREEZE_HOOK);
  assert_false(is_frozen());
  assert_true(writable_by(start + opt.limit_ms + MARGIN_MS));
  assert_int_equal(sh("grep -qx post-thaw %s", post_marker), 0); /* it pairs with the pre hook that was started */
  freeze_free(s);
}

static void test_failed_freeze_runs_post_hook(void **state)
{
  /* Someone else holds the filesystem frozen: our FIFREEZE fails with EBUSY. */
  int fd = open(mnt, O_RDONLY | O_DIRECTORY);
  assert_true(fd >= 0);
  assert_int_equal(ioctl(fd, FIFREEZE, 0), 0);
  struct freeze_set *s = find_disk();
  struct freeze_options opt = marked(5000);
  opt.pre_hook = "true";
  rpl_err err = freeze_begin(s, &opt);
  int still_frozen = is_frozen();
  ioctl(fd, FITHAW, 0);
  close(fd);
  assert_int_equal(err, RPL_E_FREEZE);
  assert_int_equal(sh("grep -qx post-thaw %s", post_marker), 0);
  assert_true(still_frozen); /* not ours to thaw: the other freezer's freeze is left alone */
  assert_int_equal(freeze_watchdog_pid(s), 0);
  freeze_free(s);
}

struct report {
  rpl_err err;
  pid_t watchdog;
};

enum after_freeze { STOP_SELF, WAIT_FOR_KILL };

/* Forks an "agent" that freezes with the limit and the post hook post_marker, reports, then stops
 * itself or waits. Returns its pid; *r is its report, *reported the time the report came. */
static pid_t agent_child(unsigned limit_ms, enum after_freeze then, struct report *r, uint64_t *reported)
{
  int p[2];
  assert_int_equal(pipe(p), 0);
  struct freeze_options opt = marked(limit_ms);
  pid_t child = fork();
  assert_true(child >= 0);
  if (child == 0) {
    close(p[0]);
    struct freeze_set *s = find_disk();
    struct report out = {.err = freeze_begin(s, &opt)};
    out.watchdog = freeze_watchdog_pid(s);
    if (write(p[1], &out, sizeof out) != sizeof out)
      _exit(1);
    if (then == STOP_SELF)
      raise(SIGSTOP);
    for (;;)
      pause();
  }
  track(child);
  close(p[1]);
  assert_int_equal(read(p[0], r, sizeof *r), sizeof *r);
  *reported = now_ms();
  close(p[0]);
  return child;
}

/* Ends the "agent" and reaps its watchdog (ours as subreaper), which must exit cleanly. */
static void end_agent(pid_t child, pid_t wd)
{
  kill(child, SIGKILL);
  waitpid(child, NULL, 0);
  untrack(child);
  if (wd > 0) {
    int status;
    assert_int_equal(waitpid(wd, &status, 0), wd);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
}

static void test_agent_sigstop_mid_freeze(void **state)
{
  struct report r;
  uint64_t t;
  pid_t child = agent_child(500, STOP_SELF, &r, &t);
  assert_int_equal(r.err, RPL_OK);
  int status;
  assert_int_equal(waitpid(child, &status, WUNTRACED), child);
  assert_true(WIFSTOPPED(status));
  /* The agent is stopped with the filesystem frozen: the watchdog thaws at the limit, and runs
   * the post hook itself, since the agent may never come back. */
  assert_true(writable_by(t + 500 + MARGIN_MS));
  assert_true(exists_by(post_marker, t + 500 + MARGIN_MS));
  assert_int_equal(kill(r.watchdog, 0), 0); /* still there, thawing until the agent ends */
  end_agent(child, r.watchdog);
  assert_false(is_frozen());
}

static void test_agent_sigkill_mid_freeze(void **state)
{
  struct report r;
  uint64_t t;
  pid_t child = agent_child(600000, WAIT_FOR_KILL, &r, &t); /* only the agent's death ends it */
  assert_int_equal(r.err, RPL_OK);
  assert_true(is_frozen());
  assert_int_equal(access(post_marker, F_OK), -1);
  uint64_t killed = now_ms();
  end_agent(child, r.watchdog);
  assert_true(writable_by(killed + MARGIN_MS));
  assert_int_equal(sh("grep -qx post-thaw %s", post_marker), 0);
}

/* A FIFREEZE that completes after the watchdog's thaw at the limit (one that waited for writers,
 * or the agent's after a SIGSTOP) is thawed again by the watchdog, which keeps thawing until the
 * agent ends the freeze. Made deterministic: the "agent" freezes again itself once thawed. */
static void test_late_fifreeze_is_thawed(void **state)
{
  int p[2];
  assert_int_equal(pipe(p), 0);
  struct freeze_options opt = marked(300);
  pid_t child = fork();
  assert_true(child >= 0);
  if (child == 0) {
    close(p[0]);
    struct freeze_set *s = find_disk();
    if (freeze_begin(s, &opt) != RPL_OK)
      _exit(1);
    int fd = open(mnt, O_RDONLY | O_DIRECTORY);
    while (ioctl(fd, FIFREEZE, 0) != 0) /* EBUSY until the watchdog's thaw at the limit */
      usleep(10000);
    pid_t wd = freeze_watchdog_pid(s);
    if (write(p[1], &wd, sizeof wd) != sizeof wd)
      _exit(1);
    for (;;)
      pause();
  }
  track(child);
  close(p[1]);
  pid_t wd = 0;
  assert_int_equal(read(p[0], &wd, sizeof wd), sizeof wd);
  uint64_t refrozen = now_ms();
  close(p[0]);
  assert_true(writable_by(refrozen + MARGIN_MS));
  assert_true(exists_by(post_marker, refrozen + MARGIN_MS));
  end_agent(child, wd);
  assert_false(is_frozen());
}

static void test_freeze_under_heavy_writes(void **state)
{
  /* Writers that keep the filesystem busy (and dirty) the whole time, in their own group. */
  pid_t writers = fork();
  assert_true(writers >= 0);
  if (writers == 0) {
    setpgid(0, 0);
    char cmd[512];
    snprintf(cmd, sizeof cmd,
             "for i in 1 2 3 4; do (while :; do dd if=/dev/zero of=%s/w$i bs=1M count=8 conv=notrunc 2>/dev/null; done) & done; wait",
             mnt);
    execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
    _exit(127);
  }
  setpgid(writers, writers);
  track(writers);
  usleep(300000); /* let them get going: not a timing assertion, only more load */
  /* 20 ms: FIFREEZE usually still waits for the writers at the limit; 200 ms: usually not. */
  const unsigned limits[] = {20, 200};
  for (size_t i = 0; i < 2; i++) {
    struct report r;
    uint64_t t;
    pid_t child = agent_child(limits[i], WAIT_FOR_KILL, &r, &t);
    /* Frozen in time, or the limit passed while FIFREEZE waited for the writers: either way
     * the filesystem is writable again within the limit plus the margin, and the post hook ran. */
    assert_true(r.err == RPL_OK || r.err == RPL_E_FREEZE_EXPIRED);
    assert_true(writable_by(t + limits[i] + MARGIN_MS));
    assert_true(exists_by(post_marker, t + limits[i] + MARGIN_MS));
    end_agent(child, r.watchdog);
  }
  kill(-writers, SIGKILL);
  waitpid(writers, NULL, 0);
  untrack(writers);
  assert_false(is_frozen());
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_find),
    cmocka_unit_test(test_freeze_and_thaw),
    cmocka_unit_test(test_limit_expires),
    cmocka_unit_test(test_watchdog_thaws_after_kill9),
    cmocka_unit_test(test_hooks),
    cmocka_unit_test_teardown(test_hung_pre_hook, end_strays),
    cmocka_unit_test_teardown(test_failed_freeze_runs_post_hook, end_strays),
    cmocka_unit_test_teardown(test_agent_sigstop_mid_freeze, end_strays),
    cmocka_unit_test_teardown(test_agent_sigkill_mid_freeze, end_strays),
    cmocka_unit_test_teardown(test_late_fifreeze_is_thawed, end_strays),
    cmocka_unit_test_teardown(test_freeze_under_heavy_writes, end_strays),
  };
  return cmocka_run_group_tests(tests, setup_all, teardown_all);
}
