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
  char *reason; /* partial mounts only: why it is not frozen */
  int fd;       /* open directory of the mount point: FIFREEZE/FITHAW go through it */
  bool frozen;
};

struct freeze_set {
  struct mount *mounts;
  size_t n;
  struct mount *partial; /* on a device that also sits on a disk outside the set: never frozen */
  size_t npartial;
  struct freeze_options opt;
  char **env[2]; /* the hooks' environments (pre, post), built before any fork */
  pid_t watchdog;
  /* pipes: 'D' + the number of mounts frozen = done, please thaw them and run the post hook;
   * reply 'O' in time, 'X' expired, 'H' in time but the post hook failed */
  int to_watchdog, from_watchdog;
  uint64_t frozen_at_ms, thawed_at_ms; /* monotonic: the first FIFREEZE began, the thaw returned */
};

/* ---- finding the filesystems ------------------------------------------------------------- */

/* Every block device built on the protected disks: the disks, their partitions, and whatever
 * the kernel stacks on any of them (device-mapper: linear, crypt, LVM; md), found through
 * sysfs holders/ recursively. A stacked device some of whose slaves are outside this set spans a
 * disk that is not protected: its filesystems are reported, not frozen. */
#define MAX_DEPTH 16 /* stacking deeper than this is not followed (a loop in sysfs, or absurd) */

struct blockdev {
  dev_t dev;
  char name[256];
  char outside[256]; /* a slave outside the set this device sits on, directly or lower down; "" if none */
};

struct devset {
  struct blockdev *d;
  size_t n;
};

static ssize_t devset_find(const struct devset *ds, dev_t dev)
{
  for (size_t i = 0; i < ds->n; i++)
    if (ds->d[i].dev == dev)
      return (ssize_t)i;
  return -1;
}

static bool read_devno(const char *path, dev_t *out)
{
  FILE *f = fopen(path, "r");
  unsigned ma, mi;
  bool ok = f && fscanf(f, "%u:%u", &ma, &mi) == 2;
  if (f)
    fclose(f);
  if (ok)
    *out = makedev(ma, mi);
  return ok;
}

static void dev_name(dev_t dev, char *out, size_t n)
{
  char path[64], target[512];
  snprintf(path, sizeof path, "/sys/dev/block/%u:%u", major(dev), minor(dev));
  ssize_t len = readlink(path, target, sizeof target - 1);
  if (len <= 0) {
    snprintf(out, n, "%u:%u", major(dev), minor(dev));
    return;
  }
  target[len] = '\0';
  const char *base = strrchr(target, '/');
  snprintf(out, n, "%.200s", base ? base + 1 : target);
}

static void devset_add(struct devset *ds, dev_t dev, size_t depth)
{
  if (devset_find(ds, dev) >= 0)
    return;
  if (ds->n == MAX_DEVS || depth > MAX_DEPTH) {
    log_warn("more than %d stacked devices or %d levels over the protected disks: the rest are not frozen",
             MAX_DEVS, MAX_DEPTH);
    return;
  }
  struct blockdev *b = &ds->d[ds->n++];
  b->dev = dev;
  b->outside[0] = '\0';
  dev_name(dev, b->name, sizeof b->name);
  char dir[64];
  snprintf(dir, sizeof dir, "/sys/dev/block/%u:%u", major(dev), minor(dev));
  /* Partitions are subdirectories of their disk's directory, each with a "partition" file;
   * stacked devices are links in holders/. Both lead to devices built on this one. */
  const char *subs[] = {"", "/holders"};
  for (size_t k = 0; k < 2; k++) {
    char sub[128];
    snprintf(sub, sizeof sub, "%s%s", dir, subs[k]);
    DIR *d = opendir(sub);
    if (!d)
      continue;
    struct dirent *e;
    while ((e = readdir(d))) {
      if (e->d_name[0] == '.')
        continue;
      char path[512];
      if (k == 0) {
        snprintf(path, sizeof path, "%s/%s/partition", sub, e->d_name);
        if (access(path, F_OK) != 0)
          continue;
      }
      snprintf(path, sizeof path, "%s/%s/dev", sub, e->d_name);
      dev_t child;
      if (read_devno(path, &child))
        devset_add(ds, child, depth + 1);
    }
    closedir(d);
  }
}

/* Marks every device with a slave outside the set, and (until nothing changes) every device
 * on such a device. */
static void devset_mark_partial(struct devset *ds)
{
  for (bool changed = true; changed;) {
    changed = false;
    for (size_t i = 0; i < ds->n; i++) {
      struct blockdev *b = &ds->d[i];
      if (b->outside[0])
        continue;
      char dir[128];
      snprintf(dir, sizeof dir, "/sys/dev/block/%u:%u/slaves", major(b->dev), minor(b->dev));
      DIR *d = opendir(dir);
      if (!d)
        continue;
      struct dirent *e;
      while (!b->outside[0] && (e = readdir(d))) {
        if (e->d_name[0] == '.')
          continue;
        char path[512];
        snprintf(path, sizeof path, "%s/%s/dev", dir, e->d_name);
        dev_t slave;
        if (!read_devno(path, &slave))
          continue;
        ssize_t j = devset_find(ds, slave);
        if (j < 0)
          snprintf(b->outside, sizeof b->outside, "%s", e->d_name);
        else if (ds->d[j].outside[0])
          snprintf(b->outside, sizeof b->outside, "%s", ds->d[j].outside);
        changed |= b->outside[0] != '\0';
      }
      closedir(d);
    }
  }
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

static bool seen_dev(const struct mount *m, size_t n, dev_t dev)
{
  for (size_t i = 0; i < n; i++)
    if (m[i].dev == dev)
      return true;
  return false;
}

rpl_err freeze_find(const char *const *devices, size_t n, struct freeze_set **out)
{
  *out = NULL;
  struct devset ds = {.d = calloc(MAX_DEVS, sizeof *ds.d)};
  struct freeze_set *s = calloc(1, sizeof *s);
  if (!ds.d || !s) {
    free(ds.d);
    free(s);
    return RPL_E_NOMEM;
  }
  s->to_watchdog = s->from_watchdog = -1;
  for (size_t i = 0; i < n; i++) {
    struct stat st;
    if (stat(devices[i], &st) != 0 || !S_ISBLK(st.st_mode)) {
      log_err("%s is not a block device: give the protected disk's device path (e.g. /dev/sdb)", devices[i]);
      free(ds.d);
      freeze_free(s);
      return RPL_E_INVALID_ARGUMENT;
    }
    devset_add(&ds, st.st_rdev, 0);
  }
  devset_mark_partial(&ds);
  FILE *f = fopen("/proc/self/mountinfo", "r");
  if (!f) {
    log_err("cannot read /proc/self/mountinfo: %s", strerror(errno));
    free(ds.d);
    freeze_free(s);
    return RPL_E_IO;
  }
  s->mounts = calloc(FREEZE_MAX_MOUNTS, sizeof *s->mounts);
  s->partial = calloc(FREEZE_MAX_MOUNTS, sizeof *s->partial);
  char *line = NULL;
  size_t cap = 0;
  rpl_err err = s->mounts && s->partial ? RPL_OK : RPL_E_NOMEM;
  while (!err && getline(&line, &cap, f) > 0) {
    unsigned ma, mi;
    char mp[4096];
    if (sscanf(line, "%*u %*u %u:%u %*s %4095s", &ma, &mi, mp) != 3)
      continue;
    dev_t dev = makedev(ma, mi);
    ssize_t k = devset_find(&ds, dev);
    if (k < 0 || seen_dev(s->mounts, s->n, dev) || seen_dev(s->partial, s->npartial, dev))
      continue;
    const struct blockdev *b = &ds.d[k];
    bool partial = b->outside[0] != '\0';
    if ((partial ? s->npartial : s->n) == FREEZE_MAX_MOUNTS) {
      err = RPL_E_LIMIT;
      break;
    }
    unescape(mp);
    struct mount *m = partial ? &s->partial[s->npartial] : &s->mounts[s->n];
    m->dev = dev;
    m->fd = -1;
    m->path = strdup(mp);
    if (partial && m->path &&
        asprintf(&m->reason, "%s is on %s, which also sits on %s, a disk not in the set: not frozen, its point is crash-consistent",
                 mp, b->name, b->outside) < 0)
      m->reason = NULL;
    if (!m->path || (partial && !m->reason)) {
      free(m->path);
      err = RPL_E_NOMEM;
    } else if (partial) {
      log_warn("%s", m->reason);
      s->npartial++;
    } else {
      s->n++;
    }
  }
  free(line);
  fclose(f);
  free(ds.d);
  if (err) {
    freeze_free(s);
    return err;
  }
  *out = s;
  return RPL_OK;
}

size_t freeze_count(const struct freeze_set *s) { return s->n; }
size_t freeze_partial_count(const struct freeze_set *s) { return s->npartial; }
const char *freeze_partial_mountpoint(const struct freeze_set *s, size_t i)
{
  return i < s->npartial ? s->partial[i].path : NULL;
}
const char *freeze_partial_reason(const struct freeze_set *s, size_t i)
{
  return i < s->npartial ? s->partial[i].reason : NULL;
}
const char *freeze_mountpoint(const struct freeze_set *s, size_t i) { return i < s->n ? s->mounts[i].path : NULL; }
pid_t freeze_watchdog_pid(const struct freeze_set *s) { return s->watchdog; }

/* ---- hooks -------------------------------------------------------------------------------- */

/* environ plus RPL_FREEZE_PHASE=phase, so a forked child can execve without allocating. */
static char **hook_env(const char *phase)
{
  extern char **environ;
  size_t n = 0;
  while (environ[n])
    n++;
  char **env = calloc(n + 2, sizeof *env);
  if (!env)
    return NULL;
  size_t k = 0;
  for (size_t i = 0; i < n; i++)
    if (strncmp(environ[i], "RPL_FREEZE_PHASE=", 17) != 0)
      env[k++] = environ[i];
  if (asprintf(&env[k], "RPL_FREEZE_PHASE=%s", phase) < 0) {
    free(env);
    return NULL;
  }
  return env;
}

static void free_hook_env(char **env)
{
  if (!env)
    return;
  size_t k = 0;
  while (env[k + 1])
    k++;
  free(env[k]); /* the last one is ours; the others belong to environ */
  free(env);
}

enum hook_result { HOOK_OK, HOOK_FAILED, HOOK_TIMED_OUT };

/* Async-signal-safe (the watchdog, a fork of a possibly multi-threaded agent, runs it too):
 * fork, execve, pidfd poll, kill, waitpid. *status is the wait status. */
static enum hook_result spawn_hook(const char *cmd, char **env, unsigned timeout_ms, int *status)
{
  *status = 0;
  pid_t pid = fork();
  if (pid < 0)
    return HOOK_FAILED;
  if (pid == 0) {
    setpgid(0, 0); /* its own group, so a timeout kills whatever the script started too */
    char *argv[] = {"sh", "-c", (char *)cmd, NULL};
    execve("/bin/sh", argv, env);
    _exit(127);
  }
  setpgid(pid, pid); /* also here: whichever of parent and child runs first */
  int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
  bool timed_out = false;
  if (pidfd >= 0) {
    struct pollfd p = {.fd = pidfd, .events = POLLIN};
    int r;
    while ((r = poll(&p, 1, (int)timeout_ms)) < 0 && errno == EINTR)
      ;
    if (r == 0) {
      timed_out = true;
      kill(-pid, SIGKILL);
    }
    close(pidfd);
  }
  while (waitpid(pid, status, 0) < 0 && errno == EINTR)
    ;
  if (timed_out)
    return HOOK_TIMED_OUT;
  return WIFEXITED(*status) && WEXITSTATUS(*status) == 0 ? HOOK_OK : HOOK_FAILED;
}

static unsigned hook_timeout(const struct freeze_set *s) { return s->opt.hook_timeout_ms ? s->opt.hook_timeout_ms : 30000; }

static rpl_err run_hook(const struct freeze_set *s, int which)
{
  const char *cmd = which == 0 ? s->opt.pre_hook : s->opt.post_hook;
  const char *name = which == 0 ? "pre-freeze" : "post-thaw";
  if (!cmd)
    return RPL_OK;
  if (!s->env[which]) {
    log_err("%s hook: out of memory", name);
    return rpl_fail(RPL_E_FREEZE_HOOK, "%s hook: out of memory", name);
  }
  int status;
  enum hook_result r = spawn_hook(cmd, s->env[which], hook_timeout(s), &status);
  if (r == HOOK_TIMED_OUT) {
    log_err("%s hook '%s' ran longer than %u ms and was killed", name, cmd, hook_timeout(s));
    return rpl_fail(RPL_E_FREEZE_HOOK, "%s hook '%s' ran longer than %u ms and was killed", name, cmd, hook_timeout(s));
  }
  if (r == HOOK_FAILED) {
    log_err("%s hook '%s' failed (%s %d)", name, cmd, WIFEXITED(status) ? "exit status" : "signal",
            WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
    return rpl_fail(RPL_E_FREEZE_HOOK, "%s hook '%s' failed (%s %d)", name, cmd,
                    WIFEXITED(status) ? "exit status" : "signal", WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
  }
  return RPL_OK;
}

/* ---- the watchdog ------------------------------------------------------------------------- */

#define REPEAT_THAW_MS 50

/* FITHAW answers 0 when it thawed something and EINVAL when the filesystem was not frozen:
 * repeat until a round finds nothing frozen (bounded, should someone keep freezing). */
static void thaw_fds(const struct freeze_set *s, size_t n)
{
  for (int round = 0; round < 100; round++) {
    bool any = false;
    for (size_t i = 0; i < n; i++)
      if (s->mounts[i].fd >= 0 && ioctl(s->mounts[i].fd, FITHAW, 0) == 0)
        any = true;
    if (!any)
      return;
  }
}

static void say(const char *msg)
{
  ssize_t w = write(STDERR_FILENO, msg, strlen(msg));
  (void)w;
}

/* Runs in the forked child: async-signal-safe calls only (the parent may be multi-threaded).
 * At the limit it thaws everything and runs the post hook (the point is lost anyway, and the
 * application should not wait for the agent), then keeps thawing every REPEAT_THAW_MS until the
 * agent is done or dead: a FIFREEZE that was still waiting for writers at the deadline, or one
 * the agent issues after a SIGSTOP, freezes afterwards. */
static void watchdog_main(const struct freeze_set *s, int ctl, int reply, uint64_t deadline)
{
  setsid(); /* signals to the agent's process group do not reach it */
  bool expired = false, hook_done = false, hook_failed = false;
  pid_t late_hook = 0; /* the post hook run at the limit, in a child so the thawing goes on meanwhile */
  for (;;) {
    uint64_t now = rpl_mono_ms();
    int wait = expired ? REPEAT_THAW_MS : (now >= deadline ? 0 : (int)(deadline - now));
    struct pollfd p = {.fd = ctl, .events = POLLIN};
    int r = poll(&p, 1, wait);
    if (r < 0 && errno == EINTR)
      continue;
    if (r == 0) {
      thaw_fds(s, s->n);
      if (!expired)
        say("mobility-agent: freeze limit reached: the watchdog thawed the filesystems\n");
      expired = true;
    } else {
      unsigned char msg[1 + sizeof(uint32_t)];
      ssize_t got = read(ctl, msg, sizeof msg);
      uint32_t frozen = (uint32_t)s->n;
      if (got == (ssize_t)sizeof msg)
        memcpy(&frozen, msg + 1, sizeof frozen);
      /* Asked to thaw, or the agent died (EOF): thaw either way. Asked, only what the agent
       * froze (a filesystem frozen by someone else stays so); dead, everything. */
      thaw_fds(s, expired || got != (ssize_t)sizeof msg || frozen > s->n ? s->n : frozen);
      if (!hook_done && s->opt.post_hook && s->env[1]) {
        int status;
        hook_failed = spawn_hook(s->opt.post_hook, s->env[1], hook_timeout(s), &status) != HOOK_OK;
      }
      while (late_hook > 0 && waitpid(late_hook, NULL, 0) < 0 && errno == EINTR)
        ; /* the agent hears back only once the post hook is over, whichever ran it */
      if (got > 0) {
        char answer = expired ? 'X' : hook_failed ? 'H' : 'O';
        ssize_t w = write(reply, &answer, 1);
        (void)w;
      }
      _exit(0);
    }
    if (expired && !hook_done) {
      hook_done = true;
      if (s->opt.post_hook && s->env[1] && (late_hook = fork()) <= 0) {
        int status; /* in the child, or here if fork failed: the hook runs either way */
        if (spawn_hook(s->opt.post_hook, s->env[1], hook_timeout(s), &status) != HOOK_OK)
          say("mobility-agent: the post-thaw hook failed or timed out (run by the freeze watchdog)\n");
        if (late_hook == 0)
          _exit(0);
        late_hook = 0;
      }
    }
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

static size_t count_frozen(const struct freeze_set *s)
{
  size_t k = 0;
  while (k < s->n && s->mounts[k].frozen)
    k++;
  return k;
}

/* Stops the watchdog (it thaws what we froze and runs the post hook on the way out) and reports
 * whether it had expired or the hook failed. */
static rpl_err stop_watchdog(struct freeze_set *s)
{
  if (!s->watchdog)
    return RPL_OK;
  rpl_err err = RPL_OK;
  unsigned char msg[1 + sizeof(uint32_t)] = {'D'};
  uint32_t frozen = (uint32_t)count_frozen(s);
  memcpy(msg + 1, &frozen, sizeof frozen);
  char answer = 0;
  if (write(s->to_watchdog, msg, sizeof msg) != (ssize_t)sizeof msg || read(s->from_watchdog, &answer, 1) != 1) {
    log_err("the freeze watchdog died before the thaw; thawing directly");
    err = RPL_E_FREEZE_WATCHDOG;
  } else if (answer == 'X') {
    err = RPL_E_FREEZE_EXPIRED;
  } else if (answer == 'H') {
    log_err("post-thaw hook '%s' failed or ran longer than %u ms", s->opt.post_hook, hook_timeout(s));
    err = RPL_E_FREEZE_HOOK;
  }
  close(s->to_watchdog);
  close(s->from_watchdog);
  s->to_watchdog = s->from_watchdog = -1;
  while (waitpid(s->watchdog, NULL, 0) < 0 && errno == EINTR)
    ;
  s->watchdog = 0;
  return err;
}

/* Thaws what we froze, directly, after the watchdog has done so too (a thaw of a thawed filesystem
 * is a harmless EINVAL), and forgets the freeze. */
static void thaw_ours(struct freeze_set *s)
{
  thaw_fds(s, count_frozen(s));
  for (size_t i = 0; i < s->n; i++)
    s->mounts[i].frozen = false;
  close_mount_fds(s);
}

/* Ends a freeze the watchdog guards: it thaws and runs the post hook; should it have died, both
 * happen here. Returns what stop_watchdog said. */
static rpl_err end_guarded(struct freeze_set *s)
{
  rpl_err err = stop_watchdog(s);
  thaw_ours(s);
  if (err == RPL_E_FREEZE_WATCHDOG) {
    rpl_err hook = run_hook(s, 1);
    (void)hook;
  }
  return err;
}

/* A failure before the watchdog ran: the post hook still pairs with the pre hook. */
static rpl_err fail_early(struct freeze_set *s, rpl_err err)
{
  close_mount_fds(s);
  rpl_err hook = run_hook(s, 1);
  (void)hook;
  return err;
}

rpl_err freeze_begin(struct freeze_set *s, const struct freeze_options *opt)
{
  s->opt = opt ? *opt : (struct freeze_options){0};
  if (!s->opt.limit_ms)
    s->opt.limit_ms = 2000;
  for (int i = 0; i < 2; i++) {
    free_hook_env(s->env[i]);
    s->env[i] = NULL;
  }
  if (s->opt.pre_hook)
    s->env[0] = hook_env("pre-freeze");
  if (s->opt.post_hook)
    s->env[1] = hook_env("post-thaw");
  rpl_err err = run_hook(s, 0);
  if (err)
    return fail_early(s, err);
  for (size_t i = 0; i < s->n; i++) {
    s->mounts[i].fd = open(s->mounts[i].path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (s->mounts[i].fd < 0) {
      log_err("cannot open mount point %s: %s", s->mounts[i].path, strerror(errno));
      return fail_early(s, rpl_fail(RPL_E_FREEZE, "cannot open mount point %s: %s", s->mounts[i].path, strerror(errno)));
    }
    /* Flush before the clock starts: FIFREEZE then only waits for what was written since. */
    syncfs(s->mounts[i].fd);
  }
  uint64_t start = rpl_mono_ms(), deadline = start + s->opt.limit_ms;
  err = start_watchdog(s, deadline);
  if (err)
    return fail_early(s, err);
  s->frozen_at_ms = rpl_mono_ms();
  s->thawed_at_ms = 0;
  for (size_t i = 0; i < s->n; i++) {
    /* Past the limit the watchdog is thawing: freezing more would only undo it. */
    bool late = rpl_mono_ms() >= deadline;
    if (late || ioctl(s->mounts[i].fd, FIFREEZE, 0) != 0) {
      int e = errno;
      if (late)
        log_err("the freeze limit of %u ms passed before %s could be frozen", s->opt.limit_ms, s->mounts[i].path);
      else
        log_err("cannot freeze %s: %s%s", s->mounts[i].path, strerror(e),
                e == EOPNOTSUPP ? " (this filesystem cannot be frozen: the disk gets crash-consistent points only)"
                : e == EBUSY    ? " (already frozen by someone else)"
                                : "");
      rpl_err ended = end_guarded(s);
      (void)ended;
      if (late)
        return rpl_fail(RPL_E_FREEZE_EXPIRED, "the freeze limit of %u ms passed before %s could be frozen",
                        s->opt.limit_ms, s->mounts[i].path);
      return rpl_fail(RPL_E_FREEZE, "cannot freeze %s: %s", s->mounts[i].path, strerror(e));
    }
    s->mounts[i].frozen = true;
  }
  if (rpl_mono_ms() >= deadline) { /* the last FIFREEZE waited for writers past the limit */
    log_err("the freeze limit of %u ms passed while freezing", s->opt.limit_ms);
    rpl_err ended = end_guarded(s);
    (void)ended;
    return RPL_E_FREEZE_EXPIRED;
  }
  log_info("froze %zu filesystem(s) in %llu ms (limit %u ms)", s->n, (unsigned long long)(rpl_mono_ms() - start),
           s->opt.limit_ms);
  return RPL_OK;
}

rpl_err freeze_end(struct freeze_set *s)
{
  if (!s->watchdog) /* freeze_begin failed or was not called: nothing to thaw, hooks done */
    return RPL_OK;
  rpl_err err = end_guarded(s);
  s->thawed_at_ms = rpl_mono_ms();
  if (err == RPL_E_FREEZE_EXPIRED)
    log_warn("the freeze limit of %u ms passed before the thaw: the recovery point is not offered", s->opt.limit_ms);
  return err;
}

uint64_t freeze_duration_ms(const struct freeze_set *s)
{
  return s->frozen_at_ms && s->thawed_at_ms >= s->frozen_at_ms ? s->thawed_at_ms - s->frozen_at_ms : 0;
}

uint64_t freeze_frozen_at_ms(const struct freeze_set *s) { return s->frozen_at_ms; }

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
  for (size_t i = 0; i < s->npartial; i++) {
    free(s->partial[i].path);
    free(s->partial[i].reason);
  }
  for (int i = 0; i < 2; i++)
    free_hook_env(s->env[i]);
  free(s->mounts);
  free(s->partial);
  free(s);
}
