/* freeze.c - FIFREEZE/FITHAW of the filesystems on protected disks, with a watchdog process that
 * guarantees the thaw (time limit, or the agent's death), and pre/post hook scripts. */
#include "freeze.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "rpl_clock.h"
#include "rpl_log.h"

#define MAX_DEVS 1024

struct mount {
  dev_t dev;
  char *path;
  int fd;       /* open directory of the mount point: FIFREEZE/FITHAW go through it */
  bool frozen;
};

struct freeze_set {
  struct mount *mounts;
  size_t n;
  struct freeze_options opt;
  pid_t watchdog;
  int to_watchdog, from_watchdog; /* pipes: 'D' = done, please thaw; reply 'O' in time, 'X' expired */
};

/* ---- finding the filesystems ------------------------------------------------------------- */

/* The device numbers of a whole disk and its partitions (from sysfs). */
static size_t disk_devs(dev_t disk, dev_t *out, size_t cap)
{
  size_t n = 0;
  out[n++] = disk;
  char dir[128];
  snprintf(dir, sizeof dir, "/sys/dev/block/%u:%u", major(disk), minor(disk));
  DIR *d = opendir(dir);
  if (!d)
    return n;
  struct dirent *e;
  while ((e = readdir(d)) && n < cap) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s/partition", dir, e->d_name);
    if (access(path, F_OK) != 0)
      continue;
    snprintf(path, sizeof path, "%s/%s/dev", dir, e->d_name);
    FILE *f = fopen(path, "r");
    unsigned ma, mi;
    if (f && fscanf(f, "%u:%u", &ma, &mi) == 2)
      out[n++] = makedev(ma, mi);
    if (f)
      fclose(f);
  }
  closedir(d);
  return n;
}

/* mountinfo escapes space, tab, newline and backslash as \ooo. */
static void unescape(char *s)
{
  char *o = s;
  for (char *p = s; *p;) {
    if (p[0] == '\\' && p[1] >= '0' && p[1] <= '3' && p[2] >= '0' && p[2] <= '7' && p[3] >= '0' && p[3] <= '7') {
      *o++ = (char)((p[1] - '0') * 64 + (p[2] - '0') * 8 + (p[3] - '0'));
      p += 4;
    } else {
      *o++ = *p++;
    }
  }
  *o = '\0';
}

rpl_err freeze_find(const char *const *devices, size_t n, struct freeze_set **out)
{
  *out = NULL;
  dev_t *devs = malloc(MAX_DEVS * sizeof *devs);
  struct freeze_set *s = calloc(1, sizeof *s);
  if (!devs || !s) {
    free(devs);
    free(s);
    return RPL_E_NOMEM;
  }
  s->to_watchdog = s->from_watchdog = -1;
  size_t ndev = 0;
  for (size_t i = 0; i < n; i++) {
    struct stat st;
    if (stat(devices[i], &st) != 0 || !S_ISBLK(st.st_mode)) {
      log_err("%s is not a block device: give the protected disk's device path (e.g. /dev/sdb)", devices[i]);
      free(devs);
      freeze_free(s);
      return RPL_E_INVALID_ARGUMENT;
    }
    ndev += disk_devs(st.st_rdev, devs + ndev, MAX_DEVS - ndev);
  }
  FILE *f = fopen("/proc/self/mountinfo", "r");
  if (!f) {
    log_err("cannot read /proc/self/mountinfo: %s", strerror(errno));
    free(devs);
    freeze_free(s);
    return RPL_E_IO;
  }
  s->mounts = calloc(FREEZE_MAX_MOUNTS, sizeof *s->mounts);
  char *line = NULL;
  size_t cap = 0;
  rpl_err err = s->mounts ? RPL_OK : RPL_E_NOMEM;
  while (!err && getline(&line, &cap, f) > 0) {
    unsigned ma, mi;
    char mp[4096];
    if (sscanf(line, "%*u %*u %u:%u %*s %4095s", &ma, &mi, mp) != 3)
      continue;
    dev_t dev = makedev(ma, mi);
    bool ours = false, seen = false;
    for (size_t i = 0; i < ndev && !ours; i++)
      ours = devs[i] == dev;
    for (size_t i = 0; i < s->n && !seen; i++)
      seen = s->mounts[i].dev == dev;
    if (!ours || seen)
      continue;
    if (s->n == FREEZE_MAX_MOUNTS) {
      err = RPL_E_LIMIT;
      break;
    }
    unescape(mp);
    struct mount *m = &s->mounts[s->n];
    m->dev = dev;
    m->fd = -1;
    m->path = strdup(mp);
    if (!m->path)
      err = RPL_E_NOMEM;
    else
      s->n++;
  }
  free(line);
  fclose(f);
  free(devs);
  if (err) {
    freeze_free(s);
    return err;
  }
  *out = s;
  return RPL_OK;
}

size_t freeze_count(const struct freeze_set *s) { return s->n; }
const char *freeze_mountpoint(const struct freeze_set *s, size_t i) { return i < s->n ? s->mounts[i].path : NULL; }
pid_t freeze_watchdog_pid(const struct freeze_set *s) { return s->watchdog; }

/* ---- hooks -------------------------------------------------------------------------------- */

static rpl_err run_hook(const struct freeze_set *s, const char *which, const char *cmd)
{
  if (!cmd)
    return RPL_OK;
  pid_t pid = fork();
  if (pid < 0) {
    log_err("%s hook: fork failed: %s", which, strerror(errno));
    return RPL_E_FREEZE_HOOK;
  }
  if (pid == 0) {
    setpgid(0, 0); /* its own group, so a timeout kills whatever the script started too */
    setenv("RPL_FREEZE_PHASE", which, 1);
    execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
    _exit(127);
  }
  setpgid(pid, pid); /* also here: whichever of parent and child runs first */
  int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
  unsigned timeout = s->opt.hook_timeout_ms ? s->opt.hook_timeout_ms : 30000;
  bool timed_out = false;
  if (pidfd >= 0) {
    struct pollfd p = {.fd = pidfd, .events = POLLIN};
    int r;
    while ((r = poll(&p, 1, (int)timeout)) < 0 && errno == EINTR)
      ;
    if (r == 0) {
      timed_out = true;
      kill(-pid, SIGKILL);
    }
    close(pidfd);
  }
  int status;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
    ;
  if (timed_out) {
    log_err("%s hook '%s' ran longer than %u ms and was killed", which, cmd, timeout);
    return RPL_E_FREEZE_HOOK;
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    log_err("%s hook '%s' failed (%s %d)", which, cmd, WIFEXITED(status) ? "exit status" : "signal",
            WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
    return RPL_E_FREEZE_HOOK;
  }
  return RPL_OK;
}

/* ---- the watchdog ------------------------------------------------------------------------- */

static void thaw_all_fds(const struct freeze_set *s)
{
  for (size_t i = 0; i < s->n; i++)
    if (s->mounts[i].fd >= 0)
      ioctl(s->mounts[i].fd, FITHAW, 0);
}

/* Runs in the forked child: async-signal-safe calls only (the parent may be multi-threaded). */
static void watchdog_main(const struct freeze_set *s, int ctl, int reply, uint64_t deadline)
{
  setsid(); /* signals to the agent's process group do not reach it */
  bool expired = false;
  for (;;) {
    uint64_t now = rpl_mono_ms();
    int wait = expired ? -1 : (now >= deadline ? 0 : (int)(deadline - now));
    struct pollfd p = {.fd = ctl, .events = POLLIN};
    int r = poll(&p, 1, wait);
    if (r < 0 && errno == EINTR)
      continue;
    if (r == 0) { /* the limit passed: thaw now, then tell the agent when it asks */
      thaw_all_fds(s);
      expired = true;
      continue;
    }
    char c = 0;
    ssize_t got = read(ctl, &c, 1);
    thaw_all_fds(s); /* asked to thaw, or the agent died (EOF): thaw either way */
    if (got == 1) {
      char answer = expired ? 'X' : 'O';
      ssize_t w = write(reply, &answer, 1);
      (void)w;
    }
    _exit(0);
  }
}

static rpl_err start_watchdog(struct freeze_set *s, uint64_t deadline)
{
  int ctl[2], rep[2];
  if (pipe2(ctl, O_CLOEXEC) != 0)
    return RPL_E_FREEZE_WATCHDOG;
  if (pipe2(rep, O_CLOEXEC) != 0) {
    close(ctl[0]), close(ctl[1]);
    return RPL_E_FREEZE_WATCHDOG;
  }
  pid_t pid = fork();
  if (pid < 0) {
    log_err("cannot start the freeze watchdog: %s", strerror(errno));
    close(ctl[0]), close(ctl[1]), close(rep[0]), close(rep[1]);
    return RPL_E_FREEZE_WATCHDOG;
  }
  if (pid == 0) {
    close(ctl[1]);
    close(rep[0]);
    watchdog_main(s, ctl[0], rep[1], deadline);
  }
  close(ctl[0]);
  close(rep[1]);
  s->watchdog = pid;
  s->to_watchdog = ctl[1];
  s->from_watchdog = rep[0];
  return RPL_OK;
}

/* ---- freeze / thaw ------------------------------------------------------------------------ */

static void close_mount_fds(struct freeze_set *s)
{
  for (size_t i = 0; i < s->n; i++) {
    if (s->mounts[i].fd >= 0)
      close(s->mounts[i].fd);
    s->mounts[i].fd = -1;
  }
}

/* Stops the watchdog (it thaws on the way out) and reports whether it had expired. */
static rpl_err stop_watchdog(struct freeze_set *s)
{
  if (!s->watchdog)
    return RPL_OK;
  rpl_err err = RPL_OK;
  char c = 'D', answer = 0;
  if (write(s->to_watchdog, &c, 1) != 1 || read(s->from_watchdog, &answer, 1) != 1) {
    log_err("the freeze watchdog died before the thaw; thawing directly");
    err = RPL_E_FREEZE_WATCHDOG;
  } else if (answer == 'X') {
    err = RPL_E_FREEZE_EXPIRED;
  }
  close(s->to_watchdog);
  close(s->from_watchdog);
  s->to_watchdog = s->from_watchdog = -1;
  while (waitpid(s->watchdog, NULL, 0) < 0 && errno == EINTR)
    ;
  s->watchdog = 0;
  return err;
}

rpl_err freeze_begin(struct freeze_set *s, const struct freeze_options *opt)
{
  s->opt = opt ? *opt : (struct freeze_options){0};
  if (!s->opt.limit_ms)
    s->opt.limit_ms = 2000;
  rpl_err err = run_hook(s, "pre-freeze", s->opt.pre_hook);
  if (err)
    return err;
  for (size_t i = 0; i < s->n; i++) {
    s->mounts[i].fd = open(s->mounts[i].path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (s->mounts[i].fd < 0) {
      log_err("cannot open mount point %s: %s", s->mounts[i].path, strerror(errno));
      close_mount_fds(s);
      return RPL_E_FREEZE;
    }
  }
  uint64_t start = rpl_mono_ms();
  err = start_watchdog(s, start + s->opt.limit_ms);
  if (err) {
    close_mount_fds(s);
    return err;
  }
  for (size_t i = 0; i < s->n; i++) {
    if (ioctl(s->mounts[i].fd, FIFREEZE, 0) != 0) {
      int e = errno;
      log_err("cannot freeze %s: %s%s", s->mounts[i].path, strerror(e),
              e == EOPNOTSUPP ? " (this filesystem cannot be frozen: the disk gets crash-consistent points only)"
              : e == EBUSY    ? " (already frozen by someone else)"
                              : "");
      rpl_err stopped = stop_watchdog(s);
      (void)stopped;
      thaw_all_fds(s);
      for (size_t j = 0; j < s->n; j++)
        s->mounts[j].frozen = false;
      close_mount_fds(s);
      return RPL_E_FREEZE;
    }
    s->mounts[i].frozen = true;
  }
  log_info("froze %zu filesystem(s) in %llu ms (limit %u ms)", s->n, (unsigned long long)(rpl_mono_ms() - start),
           s->opt.limit_ms);
  return RPL_OK;
}

rpl_err freeze_end(struct freeze_set *s)
{
  rpl_err err = stop_watchdog(s);
  thaw_all_fds(s); /* again, directly: a thaw of a thawed filesystem is a harmless EINVAL */
  for (size_t i = 0; i < s->n; i++)
    s->mounts[i].frozen = false;
  close_mount_fds(s);
  rpl_err hook = run_hook(s, "post-thaw", s->opt.post_hook);
  if (err == RPL_E_FREEZE_EXPIRED)
    log_warn("the freeze limit of %u ms passed before the thaw: the recovery point is not offered", s->opt.limit_ms);
  return err ? err : hook;
}

void freeze_free(struct freeze_set *s)
{
  if (!s)
    return;
  if (s->watchdog) { /* never leave a filesystem frozen, even on a caller's error path */
    rpl_err thawed = freeze_end(s);
    (void)thawed;
  }
  for (size_t i = 0; i < s->n; i++)
    free(s->mounts[i].path);
  free(s->mounts);
  free(s);
}
