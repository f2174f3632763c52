/* cbt.c - the change-block tracker's user side (cbt.h): installs and pins the eBPF programs and
 * maps, attaches disks to slots, flips / drains / commits / merges generations through mmap, and
 * turns every possible loss into a recorded resync event. */
#include "cbt.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>
#include <uuid/uuid.h>

#include "cbt_bpf.skel.h"
#include "cbt_bitmap.h"
#include "cbt_shared.h"
#include "cbt_state.h"
#include "rpl_log.h"

#ifndef BPF_FS_MAGIC
#define BPF_FS_MAGIC 0xcafe4a11
#endif

_Static_assert(sizeof(struct cbt_slot) == 256, "struct cbt_slot layout is shared with the BPF program");
_Static_assert(sizeof(struct cbt_counters) % 8 == 0, "per-CPU values are 8-byte aligned");

#define DEFAULT_STATE_DIR "/var/lib/mobility-agent"
#define BPFFS_ROOT "/sys/fs/bpf"
/* How long a flip or a detach waits for marking programs to leave a buffer; they run for
 * microseconds with preemption disabled, so this only trips on a kernel bug. */
#define ACTIVE_WAIT_NS (5ULL * 1000 * 1000 * 1000)

const char *cbt_resync_reason_name(enum cbt_resync_reason reason)
{
  switch (reason) {
  case CBT_RESYNC_NONE: return "none";
  case CBT_RESYNC_REBOOT: return "reboot";
  case CBT_RESYNC_UNCLEAN_DETACH: return "unclean-detach";
  case CBT_RESYNC_PROGRAM_MISSED: return "program-missed";
  case CBT_RESYNC_INFLIGHT_FULL: return "inflight-table-full";
  case CBT_RESYNC_OUT_OF_RANGE: return "write-out-of-range";
  case CBT_RESYNC_RESIZE: return "resize";
  case CBT_RESYNC_FLIP_STORM: return "flip-storm";
  case CBT_RESYNC_BITMAP_MISSING: return "bitmap-missing";
  case CBT_RESYNC_NO_EBPF: return "no-ebpf";
  case CBT_RESYNC_MEDIA_CHANGED: return "media-changed";
  }
  return "unknown";
}

/* The slot's loss counters, in struct order, and the event each one raises. */
static const enum cbt_resync_reason loss_reasons[CBT_SLOT_LOSS_FIELDS] = {
  CBT_RESYNC_INFLIGHT_FULL, CBT_RESYNC_OUT_OF_RANGE, CBT_RESYNC_FLIP_STORM, CBT_RESYNC_BITMAP_MISSING,
};

static uint64_t slot_loss(const struct cbt_slot *s, int i)
{
  const __u64 *counters[CBT_SLOT_LOSS_FIELDS] = {
    &s->lost_inflight_full, &s->lost_out_of_range, &s->lost_retry_exhausted, &s->lost_bitmap_missing,
  };
  return __atomic_load_n(counters[i], __ATOMIC_RELAXED);
}

/* ---- extent sets ---- */

void cbt_extents_init(struct cbt_extents *set, size_t limit, uint64_t max_length)
{
  set->items = NULL;
  set->count = 0;
  set->capacity = 0;
  set->limit = limit < 1 ? 1 : limit > CBT_EXTENTS_LIMIT_MAX ? CBT_EXTENTS_LIMIT_MAX : limit;
  set->max_length = max_length;
}

void cbt_extents_clear(struct cbt_extents *set)
{
  set->count = 0;
}

void cbt_extents_free(struct cbt_extents *set)
{
  free(set->items);
  set->items = NULL;
  set->count = 0;
  set->capacity = 0;
}

rpl_err cbt_extents_add(struct cbt_extents *set, uint64_t offset, uint64_t length)
{
  if (length == 0 || offset + length < offset || (set->max_length && length > set->max_length))
    return RPL_E_INVALID_ARGUMENT;
  if (set->count) {
    struct cbt_extent *last = &set->items[set->count - 1];
    uint64_t last_end = last->offset + last->length;
    if (offset < last_end)
      return RPL_E_INVALID_ARGUMENT;
    if (offset == last_end && (!set->max_length || last->length + length <= set->max_length)) {
      last->length += length;
      return RPL_OK;
    }
  }
  if (set->count >= set->limit)
    return RPL_E_LIMIT;
  if (set->count == set->capacity) {
    size_t capacity = set->capacity ? set->capacity * 2 : 256;
    if (capacity > set->limit)
      capacity = set->limit;
    struct cbt_extent *items = realloc(set->items, capacity * sizeof *items);
    if (!items)
      return RPL_E_NOMEM;
    set->items = items;
    set->capacity = capacity;
  }
  set->items[set->count++] = (struct cbt_extent){offset, length};
  return RPL_OK;
}

uint64_t cbt_extents_bytes(const struct cbt_extents *set)
{
  uint64_t total = 0;
  for (size_t i = 0; i < set->count; i++)
    total += set->items[i].length;
  return total;
}

/* ---- the handle ---- */

enum pin_object {
  PIN_DEVICES, PIN_DEVMAP, PIN_BITMAPS, PIN_INFLIGHT, PIN_COUNTERS,
  PIN_LINK_BIO_QUEUE, PIN_LINK_RQ_COMPLETE, PIN_LINK_BIO_COMPLETE,
  PIN_COUNT
};
static const char *const pin_names[PIN_COUNT] = {
  "cbt_devices", "cbt_devmap", "cbt_bitmaps", "cbt_inflight", "cbt_counters",
  "cbt_link_bio_queue", "cbt_link_rq_complete", "cbt_link_bio_complete",
};
#define PIN_FIRST_LINK PIN_LINK_BIO_QUEUE
#define PROGRAMS (PIN_COUNT - PIN_FIRST_LINK)

/* A slot's bitmap mapped into this process, cached across calls (re-mapping would cost a page
 * fault per touched page on every drain). */
struct mapped_bitmap {
  uint32_t map_id;        /* 0: not mapped */
  uint64_t *words;
  size_t bytes;
  struct cbt_layout layout;
};

/* Where this handle is in a device's cycle. */
struct cycle {
  char name[64];          /* "" = unused */
  bool flipped;           /* a frozen generation awaits drain / commit */
  bool drained;           /* cbt_drain returned RPL_OK for it */
  uint64_t frozen_seq;    /* its generation number */
  uint64_t next_byte;     /* drain cursor */
};

struct cbt {
  char state_dir[PATH_MAX];
  char pin_dir[PATH_MAX];
  char btf_path[PATH_MAX];
  bool btf_custom;        /* btf_path came from the caller or the environment */
  char boot_id[40];
  char errmsg[512];
  char no_ebpf_why[384];  /* why eBPF cannot be used ("" = it can, as far as known) */
  int lock_fd;
  int fd[PIN_COUNT];      /* -1 when not open */
  uint32_t devices_map_id;
  int prog_fd[PROGRAMS];
  struct cbt_slot *slots; /* mmap of cbt_devices, NULL when not open */
  size_t slots_bytes;
  int ncpus;
  struct mapped_bitmap bitmaps[CBT_MAX_DEVICES];
  struct cycle cycles[CBT_MAX_DEVICES];
};

/* A device being operated on: what the kernel says (info) and what the record says. */
struct device_info {
  char path[256];
  char name[64];
  uint32_t major, minor;
  uint64_t size;
  uint64_t diskseq;       /* /sys/block/X/diskseq (Linux >= 5.15), 0 if unknown */
  bool bio_based;         /* no blk-mq queue (device mapper, md): completions need in-flight records */
  bool present;           /* resolved from the system (false: known only from the record) */
};

struct tracked {
  struct device_info dev;
  struct cbt_record rec;
  int slot;               /* -1: not attached */
  bool foreign_slot;      /* a slot for this disk exists with another UUID */
  bool dirty;             /* rec must be saved */
};

static rpl_err fail(struct cbt *t, rpl_err err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static rpl_err fail(struct cbt *t, rpl_err err, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(t->errmsg, sizeof t->errmsg, fmt, ap);
  va_end(ap);
  return err;
}

const char *cbt_errmsg(const struct cbt *t)
{
  return t->errmsg;
}

static void set_why(struct cbt *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Records why eBPF cannot be used here (shown to the user with the fallback). */
static void set_why(struct cbt *t, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(t->no_ebpf_why, sizeof t->no_ebpf_why, fmt, ap);
  va_end(ap);
}

/* For a failure that a more important error is already being reported for. */
static inline void ignore_error(rpl_err err)
{
  (void)err;
}

static uint32_t kernel_dev(uint32_t major, uint32_t minor)
{
  return (major << 20) | minor; /* MKDEV() of include/linux/kdev_t.h */
}

/* libbpf's messages go to our log at debug level; the first warning of a load (the one that names
 * the failing program or map) is kept for the error message. */
static __thread char libbpf_last_warning[256];

static int libbpf_print(enum libbpf_print_level level, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

static int libbpf_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
  char line[512];
  vsnprintf(line, sizeof line, fmt, ap);
  size_t len = strlen(line);
  while (len && (line[len - 1] == '\n' || line[len - 1] == ' '))
    line[--len] = '\0';
  const char *text = strncmp(line, "libbpf: ", 8) ? line : line + 8;
  if (level == LIBBPF_WARN && len && !libbpf_last_warning[0]) {
    size_t keep = strnlen(text, sizeof libbpf_last_warning - 1);
    memcpy(libbpf_last_warning, text, keep);
    libbpf_last_warning[keep] = '\0';
  }
  log_debug("libbpf: %s", text);
  return 0;
}

static int read_small_file(const char *path, char *buf, size_t size)
{
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return -1;
  ssize_t n;
  do
    n = read(fd, buf, size - 1);
  while (n < 0 && errno == EINTR);
  close(fd);
  if (n < 0)
    return -1;
  buf[n] = '\0';
  while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
    buf[--n] = '\0';
  return 0;
}

static int mkdir_parents(const char *path, mode_t mode)
{
  char tmp[PATH_MAX];
  if (snprintf(tmp, sizeof tmp, "%s", path) >= (int)sizeof tmp)
    return -1;
  for (char *p = tmp + 1; *p; p++) {
    if (*p != '/')
      continue;
    *p = '\0';
    if (mkdir(tmp, mode) != 0 && errno != EEXIST)
      return -1;
    *p = '/';
  }
  if (mkdir(tmp, mode) != 0 && errno != EEXIST)
    return -1;
  return 0;
}

/* ---- pins ---- */

static void unmap_bitmap(struct mapped_bitmap *m)
{
  if (m->words)
    munmap(m->words, m->bytes);
  memset(m, 0, sizeof *m);
}

static void pins_close(struct cbt *t)
{
  for (int i = 0; i < CBT_MAX_DEVICES; i++)
    unmap_bitmap(&t->bitmaps[i]);
  if (t->slots)
    munmap(t->slots, t->slots_bytes);
  t->slots = NULL;
  for (int i = 0; i < PIN_COUNT; i++) {
    if (t->fd[i] >= 0)
      close(t->fd[i]);
    t->fd[i] = -1;
  }
  for (int i = 0; i < PROGRAMS; i++) {
    if (t->prog_fd[i] >= 0)
      close(t->prog_fd[i]);
    t->prog_fd[i] = -1;
  }
  t->devices_map_id = 0;
}

static int pin_path(const struct cbt *t, int object, char *out, size_t size)
{
  int n = snprintf(out, size, "%s/%s", t->pin_dir, pin_names[object]);
  return n < 0 || (size_t)n >= size ? -1 : 0;
}

/* Removes our pinned objects (links first, so the programs detach before their maps go) and the
 * pin directory if nothing else is in it. Tracking of every device ends. */
static void pins_remove(struct cbt *t)
{
  char path[PATH_MAX];
  pins_close(t);
  for (int i = PIN_COUNT - 1; i >= 0; i--)
    if (!pin_path(t, i, path, sizeof path) && unlink(path) != 0 && errno != ENOENT)
      log_warn("cannot unpin %s: %s", path, strerror(errno));
  if (rmdir(t->pin_dir) != 0 && errno != ENOENT && errno != ENOTEMPTY)
    log_warn("cannot remove %s: %s", t->pin_dir, strerror(errno));
}

static uint32_t fd_object_id(int fd, uint32_t *max_entries, uint32_t *value_size)
{
  struct bpf_map_info info;
  uint32_t len = sizeof info;
  memset(&info, 0, sizeof info);
  if (bpf_obj_get_info_by_fd(fd, &info, &len))
    return 0;
  if (max_entries)
    *max_entries = info.max_entries;
  if (value_size)
    *value_size = info.value_size;
  return info.id;
}

/* Opens the pinned tracker if one is installed. RPL_E_NOT_FOUND if none is; an incomplete
 * installation (a crash while installing or removing) is removed and reported as none. */
static rpl_err pins_open(struct cbt *t)
{
  char path[PATH_MAX];
  int present = 0;
  rpl_err err = RPL_OK;

  pins_close(t);
  for (int i = 0; i < PIN_COUNT; i++) {
    if (pin_path(t, i, path, sizeof path))
      return fail(t, RPL_E_INVALID_ARGUMENT, "pin directory path too long: %s", t->pin_dir);
    t->fd[i] = bpf_obj_get(path);
    if (t->fd[i] >= 0)
      present++;
    else if (errno != ENOENT)
      err = fail(t, errno == EPERM || errno == EACCES ? RPL_E_PERMISSION : RPL_E_IO,
                 "cannot open pinned %s: %s (run as root)", path, strerror(errno));
  }
  if (err) {
    pins_close(t);
    return err;
  }
  if (present == 0) {
    pins_close(t);
    return RPL_E_NOT_FOUND;
  }
  /* Another agent version's tracker (other slot layout or other set of objects) is never touched. */
  uint32_t max_entries = 0, value_size = 0;
  if (t->fd[PIN_DEVICES] >= 0)
    t->devices_map_id = fd_object_id(t->fd[PIN_DEVICES], &max_entries, &value_size);
  if (t->fd[PIN_DEVICES] >= 0 &&
      (!t->devices_map_id || max_entries != CBT_MAX_DEVICES || value_size != sizeof(struct cbt_slot))) {
    pins_close(t);
    return fail(t, RPL_E_CBT_PINS_INCOMPATIBLE,
                "the tracker pinned in %s has another layout (agent version mismatch): stop its devices with "
                "the agent that started them, or remove %s (every tracked device then needs a resync)",
                t->pin_dir, t->pin_dir);
  }
  if (present < PIN_COUNT) {
    log_warn("the pinned tracker in %s is incomplete (interrupted install or removal): removing it", t->pin_dir);
    pins_remove(t);
    return RPL_E_NOT_FOUND;
  }
  t->slots_bytes = CBT_MAX_DEVICES * sizeof(struct cbt_slot); /* 16 KiB: whole pages */
  void *slots = mmap(NULL, t->slots_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, t->fd[PIN_DEVICES], 0);
  if (slots == MAP_FAILED) {
    err = fail(t, RPL_E_IO, "cannot mmap the pinned cbt_devices map: %s", strerror(errno));
    pins_close(t);
    return err;
  }
  t->slots = slots;
  for (int i = 0; i < PROGRAMS; i++) {
    struct bpf_link_info info;
    uint32_t len = sizeof info;
    memset(&info, 0, sizeof info);
    if (bpf_obj_get_info_by_fd(t->fd[PIN_FIRST_LINK + i], &info, &len) ||
        (t->prog_fd[i] = bpf_prog_get_fd_by_id(info.prog_id)) < 0) {
      err = fail(t, RPL_E_IO, "cannot inspect the pinned tracker program %s: %s", pin_names[PIN_FIRST_LINK + i],
                 strerror(errno));
      pins_close(t);
      return err;
    }
  }
  return RPL_OK;
}

/* Re-opens the pins when another process removed or replaced them since we opened them. */
static rpl_err pins_refresh(struct cbt *t)
{
  if (t->slots) {
    char path[PATH_MAX];
    if (!pin_path(t, PIN_DEVICES, path, sizeof path)) {
      int fd = bpf_obj_get(path);
      uint32_t id = fd >= 0 ? fd_object_id(fd, NULL, NULL) : 0;
      if (fd >= 0)
        close(fd);
      if (id && id == t->devices_map_id)
        return RPL_OK;
    }
  }
  rpl_err err = pins_open(t);
  return err == RPL_E_NOT_FOUND ? RPL_OK : err;
}

static bool pins_installed(const struct cbt *t)
{
  return t->slots != NULL;
}

/* bpffs must hold the pin directory; /sys/fs/bpf is mounted if it is not yet. */
static rpl_err ensure_bpffs(struct cbt *t)
{
  struct statfs fs;
  if (!strncmp(t->pin_dir, BPFFS_ROOT "/", sizeof BPFFS_ROOT) &&
      (statfs(BPFFS_ROOT, &fs) != 0 || fs.f_type != BPF_FS_MAGIC)) {
    mkdir_parents(BPFFS_ROOT, 0755);
    if (mount("bpf", BPFFS_ROOT, "bpf", 0, "mode=0700") != 0) {
      set_why(t,
               "bpffs is not mounted on " BPFFS_ROOT " and mounting it failed (%s): mount -t bpf bpf " BPFFS_ROOT,
               strerror(errno));
      return RPL_E_CBT_NO_BPFFS;
    }
    log_info("mounted bpffs on " BPFFS_ROOT);
  }
  if (mkdir_parents(t->pin_dir, 0700) != 0 || statfs(t->pin_dir, &fs) != 0 || fs.f_type != BPF_FS_MAGIC) {
    set_why(t, "the pin directory %s is not on a bpffs mount (%s)",
             t->pin_dir, errno ? strerror(errno) : "wrong file system");
    return RPL_E_CBT_NO_BPFFS;
  }
  return RPL_OK;
}

/* Loads, attaches and pins the programs and maps. On failure t->no_ebpf_why says why when eBPF is
 * unusable here (the caller falls back); other failures are errors. */
static rpl_err pins_install(struct cbt *t)
{
  struct cbt_bpf *skel = NULL;
  char path[PATH_MAX];
  rpl_err err = RPL_OK;
  int pinned = 0;

  t->no_ebpf_why[0] = '\0';
  if (access(t->btf_path, R_OK) != 0) {
    set_why(t,
             "kernel BTF not found at %s (%s): this kernel lacks CONFIG_DEBUG_INFO_BTF%s", t->btf_path,
             strerror(errno), t->btf_custom ? "" : "; set MOBILITY_AGENT_BTF to a BTF file for it");
    return RPL_E_UNSUPPORTED;
  }
  err = ensure_bpffs(t);
  if (err)
    return err;

  LIBBPF_OPTS(bpf_object_open_opts, open_opts, .btf_custom_path = t->btf_custom ? t->btf_path : NULL);
  libbpf_last_warning[0] = '\0';
  skel = cbt_bpf__open_opts(&open_opts);
  if (!skel) {
    set_why(t, "cannot open the eBPF tracker object: %s%s%s",
             strerror(errno), libbpf_last_warning[0] ? "; libbpf: " : "", libbpf_last_warning);
    return RPL_E_CBT_LOAD;
  }
  int rc = cbt_bpf__load(skel);
  if (rc) {
    if (rc == -EPERM || rc == -EACCES)
      set_why(t,
               "not allowed to load eBPF programs (%s): run as root (CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN)",
               strerror(-rc));
    else
      set_why(t, "the kernel refused the eBPF tracker (%s)%s%s",
               strerror(-rc), libbpf_last_warning[0] ? "; libbpf: " : "", libbpf_last_warning);
    err = RPL_E_CBT_LOAD;
    goto cleanup;
  }
  rc = cbt_bpf__attach(skel);
  if (rc) {
    set_why(t,
             "cannot attach the tracker to the block_bio_queue / block_rq_complete / block_bio_complete raw "
             "tracepoints (%s)",
             strerror(-rc));
    err = RPL_E_CBT_LOAD;
    goto cleanup;
  }

  struct bpf_map *maps[PIN_FIRST_LINK] = {
    skel->maps.cbt_devices, skel->maps.cbt_devmap, skel->maps.cbt_bitmaps, skel->maps.cbt_inflight,
    skel->maps.cbt_counters,
  };
  struct bpf_link *links[PROGRAMS] = {skel->links.cbt_bio_queue, skel->links.cbt_rq_complete,
                                      skel->links.cbt_bio_complete};
  for (pinned = 0; pinned < PIN_COUNT; pinned++) {
    if (pin_path(t, pinned, path, sizeof path)) {
      err = fail(t, RPL_E_INVALID_ARGUMENT, "pin directory path too long: %s", t->pin_dir);
      goto cleanup;
    }
    rc = pinned < PIN_FIRST_LINK ? bpf_map__pin(maps[pinned], path)
                                 : bpf_link__pin(links[pinned - PIN_FIRST_LINK], path);
    if (rc) {
      err = fail(t, RPL_E_IO, "cannot pin %s: %s", path, strerror(-rc));
      goto cleanup;
    }
  }
  log_info("eBPF change-block tracker loaded and pinned in %s", t->pin_dir);

cleanup:
  if (err && pinned > 0)
    for (int i = pinned - 1; i >= 0; i--)
      if (!pin_path(t, i, path, sizeof path))
        unlink(path);
  cbt_bpf__destroy(skel); /* pinned links keep the programs attached */
  if (err)
    return err;
  return pins_open(t);
}

/* ---- open / close ---- */

static const char *env_or(const char *value, const char *env, const char *fallback, bool *from_caller)
{
  const char *e = getenv(env);
  if (from_caller)
    *from_caller = value || (e && *e);
  if (value)
    return value;
  return e && *e ? e : fallback;
}

rpl_err cbt_open(struct cbt **out, const struct cbt_options *options)
{
  struct cbt_options none = {0};
  const struct cbt_options *o = options ? options : &none;
  *out = NULL;

  struct cbt *t = calloc(1, sizeof *t);
  if (!t)
    return RPL_E_NOMEM;
  t->lock_fd = -1;
  for (int i = 0; i < PIN_COUNT; i++)
    t->fd[i] = -1;
  for (int i = 0; i < PROGRAMS; i++)
    t->prog_fd[i] = -1;

  const char *state = o->state_dir ? o->state_dir : DEFAULT_STATE_DIR;
  const char *pins = env_or(o->pin_dir, "MOBILITY_AGENT_BPF_PIN_DIR", CBT_DEFAULT_PIN_DIR, NULL);
  const char *btf = env_or(o->btf_path, "MOBILITY_AGENT_BTF", CBT_DEFAULT_BTF, &t->btf_custom);
  if (snprintf(t->state_dir, sizeof t->state_dir, "%s", state) >= (int)sizeof t->state_dir ||
      snprintf(t->pin_dir, sizeof t->pin_dir, "%s", pins) >= (int)sizeof t->pin_dir ||
      snprintf(t->btf_path, sizeof t->btf_path, "%s", btf) >= (int)sizeof t->btf_path || pins[0] != '/') {
    log_err("tracker paths must be absolute and shorter than %d bytes", PATH_MAX);
    free(t);
    return RPL_E_INVALID_ARGUMENT;
  }
  if (read_small_file("/proc/sys/kernel/random/boot_id", t->boot_id, sizeof t->boot_id) != 0 || !t->boot_id[0]) {
    log_err("cannot read /proc/sys/kernel/random/boot_id: %s (is /proc mounted?)", strerror(errno));
    free(t);
    return RPL_E_IO;
  }
  t->ncpus = libbpf_num_possible_cpus();
  if (t->ncpus <= 0) {
    log_err("cannot count the possible CPUs (/sys/devices/system/cpu/possible)");
    free(t);
    return RPL_E_IO;
  }
  libbpf_set_print(libbpf_print);

  char lock_dir[PATH_MAX];
  snprintf(lock_dir, sizeof lock_dir, "%s", CBT_LOCK_FILE);
  *strrchr(lock_dir, '/') = '\0';
  if (mkdir_parents(lock_dir, 0700) != 0 ||
      (t->lock_fd = open(CBT_LOCK_FILE, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) < 0) {
    rpl_err err = errno == EACCES || errno == EPERM ? RPL_E_PERMISSION : RPL_E_IO;
    log_err("cannot open the tracker lock %s: %s (run as root)", CBT_LOCK_FILE, strerror(errno));
    free(t);
    return err;
  }
  *out = t;
  return RPL_OK;
}

void cbt_close(struct cbt *t)
{
  if (!t)
    return;
  pins_close(t);
  if (t->lock_fd >= 0)
    close(t->lock_fd);
  free(t);
}

static rpl_err lock_tracker(struct cbt *t)
{
  t->errmsg[0] = '\0';
  while (flock(t->lock_fd, LOCK_EX) != 0)
    if (errno != EINTR)
      return fail(t, RPL_E_IO, "cannot lock %s: %s", CBT_LOCK_FILE, strerror(errno));
  rpl_err err = pins_refresh(t);
  if (err)
    flock(t->lock_fd, LOCK_UN);
  return err;
}

static void unlock_tracker(struct cbt *t)
{
  flock(t->lock_fd, LOCK_UN);
}

bool cbt_ebpf_available(struct cbt *t, const char **why)
{
  if (why)
    *why = NULL;
  if (pins_installed(t))
    return true;
  struct statfs fs;
  if (access(t->btf_path, R_OK) != 0)
    set_why(t, "kernel BTF not found at %s: this kernel lacks CONFIG_DEBUG_INFO_BTF",
             t->btf_path);
  else if (geteuid() != 0)
    set_why(t, "not running as root: loading eBPF needs CAP_BPF and CAP_PERFMON");
  else if (statfs("/sys/fs/bpf", &fs) != 0 && errno == ENOENT)
    set_why(t, "no /sys/fs/bpf: bpffs is unavailable");
  if (!t->no_ebpf_why[0])
    return true;
  if (why)
    *why = t->no_ebpf_why;
  return false;
}

/* ---- devices ---- */

static rpl_err resolve_device(struct cbt *t, const char *device, struct device_info *info)
{
  struct stat st;
  char sys[PATH_MAX], link[PATH_MAX], value[64];

  memset(info, 0, sizeof *info);
  if (stat(device, &st) != 0)
    return fail(t, errno == ENOENT ? RPL_E_NOT_FOUND : RPL_E_IO, "%s: %s", device, strerror(errno));
  if (!S_ISBLK(st.st_mode))
    return fail(t, RPL_E_CBT_NOT_BLOCK_DEVICE, "%s is not a block device: give a whole disk such as /dev/sdb", device);
  if (snprintf(info->path, sizeof info->path, "%s", device) >= (int)sizeof info->path)
    return fail(t, RPL_E_INVALID_ARGUMENT, "device path too long: %s", device);
  info->major = major(st.st_rdev);
  info->minor = minor(st.st_rdev);
  snprintf(sys, sizeof sys, "/sys/dev/block/%u:%u", info->major, info->minor);
  ssize_t n = readlink(sys, link, sizeof link - 1);
  if (n <= 0)
    return fail(t, RPL_E_IO, "%s: cannot read %s: %s (is /sys mounted?)", device, sys, strerror(errno));
  link[n] = '\0';
  char *base = strrchr(link, '/');
  base = base ? base + 1 : link;
  if (strlen(base) >= sizeof info->name)
    return fail(t, RPL_E_INVALID_ARGUMENT, "%s: kernel name too long", device);
  strcpy(info->name, base);

  char probe[PATH_MAX + 32];
  snprintf(probe, sizeof probe, "%s/partition", sys);
  if (access(probe, F_OK) == 0) {
    *strrchr(link, '/') = '\0';
    char *parent = strrchr(link, '/');
    parent = parent ? parent + 1 : link;
    return fail(t, RPL_E_CBT_PARTITION,
                "%s is a partition of %s: track the whole disk /dev/%s (writes through its partitions are covered)",
                device, parent, parent);
  }
  snprintf(probe, sizeof probe, "%s/queue/zoned", sys);
  if (read_small_file(probe, value, sizeof value) == 0 && strcmp(value, "none") != 0)
    return fail(t, RPL_E_CBT_ZONED, "%s is a zoned block device (%s): the tracker does not support zoned devices",
                device, value);
  snprintf(probe, sizeof probe, "%s/diskseq", sys);
  if (read_small_file(probe, value, sizeof value) != 0 || sscanf(value, "%" SCNu64, &info->diskseq) != 1)
    info->diskseq = 0;
  snprintf(probe, sizeof probe, "%s/mq", sys);
  info->bio_based = access(probe, F_OK) != 0;
  snprintf(probe, sizeof probe, "%s/size", sys);
  uint64_t sectors;
  if (read_small_file(probe, value, sizeof value) != 0 || sscanf(value, "%" SCNu64, &sectors) != 1)
    return fail(t, RPL_E_IO, "%s: cannot read its size from %s", device, probe);
  info->size = sectors * 512;
  if (info->size == 0)
    return fail(t, RPL_E_INVALID_ARGUMENT, "%s has size 0 (no medium, or a loop device without a backing file)",
                device);
  info->present = true;
  return RPL_OK;
}

static uint32_t block_shift_for(uint64_t size)
{
  uint32_t shift = CBT_MIN_BLOCK_SHIFT;
  while (((size + (1ULL << shift) - 1) >> shift) > CBT_MAX_BLOCKS)
    shift++;
  return shift;
}

static int find_slot(const struct cbt *t, uint32_t kdev)
{
  if (!pins_installed(t))
    return -1;
  for (int i = 0; i < CBT_MAX_DEVICES; i++)
    if (__atomic_load_n(&t->slots[i].dev, __ATOMIC_ACQUIRE) == kdev)
      return i;
  return -1;
}

static bool any_slot_used(const struct cbt *t)
{
  for (int i = 0; pins_installed(t) && i < CBT_MAX_DEVICES; i++)
    if (__atomic_load_n(&t->slots[i].dev, __ATOMIC_ACQUIRE))
      return true;
  return false;
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#else
  __asm__ __volatile__("" ::: "memory");
#endif
}

/* Waits until no program marks buffer `buffer` of slot s (see the flip protocol, cbt_shared.h). */
static rpl_err wait_inactive(struct cbt *t, struct cbt_slot *s, int buffer)
{
  struct timespec start, now;
  clock_gettime(CLOCK_MONOTONIC, &start);
  for (unsigned spins = 0; __atomic_load_n(&s->active[buffer], __ATOMIC_ACQUIRE) != 0; spins++) {
    if (spins < 1000) {
      cpu_relax();
      continue;
    }
    sched_yield();
    clock_gettime(CLOCK_MONOTONIC, &now);
    if ((uint64_t)(now.tv_sec - start.tv_sec) * 1000000000ULL + (uint64_t)now.tv_nsec - (uint64_t)start.tv_nsec >
        ACTIVE_WAIT_NS)
      return fail(t, RPL_E_CBT_STUCK, "tracker programs did not leave buffer %d within 5 s (active count %" PRIu64 ")",
                  buffer, (uint64_t)__atomic_load_n(&s->active[buffer], __ATOMIC_RELAXED));
  }
  return RPL_OK;
}

/* Maps slot's bitmap (cached by map id). */
static rpl_err map_bitmap(struct cbt *t, int slot, struct mapped_bitmap **out)
{
  struct mapped_bitmap *m = &t->bitmaps[slot];
  uint32_t key = (uint32_t)slot, id = 0;
  if (bpf_map_lookup_elem(t->fd[PIN_BITMAPS], &key, &id) != 0 || !id)
    return fail(t, RPL_E_IO, "slot %d has no bitmap map: %s", slot, strerror(errno));
  if (m->map_id == id && m->words) {
    *out = m;
    return RPL_OK;
  }
  unmap_bitmap(m);
  int fd = bpf_map_get_fd_by_id(id);
  if (fd < 0)
    return fail(t, RPL_E_IO, "cannot open bitmap map %u: %s", id, strerror(errno));
  uint32_t max_entries = 0;
  fd_object_id(fd, &max_entries, NULL);
  cbt_layout_init(&m->layout, t->slots[slot].nr_blocks ? t->slots[slot].nr_blocks : 1);
  if ((uint64_t)max_entries < 2 * m->layout.buffer_words) {
    close(fd);
    return fail(t, RPL_E_INTERNAL, "bitmap map %u has %u words, the slot needs %" PRIu64, id, max_entries,
                2 * m->layout.buffer_words);
  }
  m->bytes = ((size_t)max_entries * 8 + 4095) & ~(size_t)4095;
  void *words = mmap(NULL, m->bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  int saved = errno;
  close(fd); /* the mapping keeps the map alive */
  if (words == MAP_FAILED) {
    memset(m, 0, sizeof *m);
    return fail(t, RPL_E_IO, "cannot mmap bitmap map %u: %s", id, strerror(saved));
  }
  m->words = words;
  m->map_id = id;
  *out = m;
  return RPL_OK;
}

static uint64_t program_misses(const struct cbt *t)
{
  uint64_t total = 0;
  for (int i = 0; i < PROGRAMS; i++) {
    struct bpf_prog_info info;
    uint32_t len = sizeof info;
    memset(&info, 0, sizeof info);
    if (t->prog_fd[i] >= 0 && bpf_obj_get_info_by_fd(t->prog_fd[i], &info, &len) == 0)
      total += info.recursion_misses;
  }
  return total;
}

/* Attaches a free slot to the disk of d (whose record already carries the UUID). */
static rpl_err slot_attach(struct cbt *t, struct tracked *d)
{
  int slot = -1;
  for (int i = 0; i < CBT_MAX_DEVICES && slot < 0; i++)
    if (__atomic_load_n(&t->slots[i].dev, __ATOMIC_ACQUIRE) == 0)
      slot = i;
  if (slot < 0)
    return fail(t, RPL_E_CBT_TOO_MANY_DEVICES, "all %d tracker slots are in use: stop tracking a device first",
                CBT_MAX_DEVICES);

  uint32_t shift = block_shift_for(d->dev.size);
  uint64_t nr_blocks = (d->dev.size + (1ULL << shift) - 1) >> shift;
  struct cbt_layout layout;
  cbt_layout_init(&layout, nr_blocks);

  LIBBPF_OPTS(bpf_map_create_opts, opts, .map_flags = BPF_F_MMAPABLE | BPF_F_INNER_MAP);
  int bitmap_fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, "cbt_bitmap", 4, 8, (uint32_t)(2 * layout.buffer_words), &opts);
  if (bitmap_fd < 0)
    return fail(t, errno == ENOMEM ? RPL_E_NOMEM : RPL_E_IO, "cannot create the %" PRIu64 "-byte bitmap of %s: %s",
                2 * layout.buffer_words * 8, d->dev.path, strerror(errno));

  /* Set the slot up while dev == 0: no program uses it until dev and the devmap entry appear. */
  struct cbt_slot *s = &t->slots[slot];
  __atomic_store_n(&s->gen_seq, 0, __ATOMIC_RELAXED);
  s->block_shift = shift;
  s->nr_blocks = nr_blocks;
  s->l1_offset = layout.l1_offset;
  s->l2_offset = layout.l2_offset;
  s->buffer_words = layout.buffer_words;
  memcpy(s->uuid, d->rec.uuid, sizeof s->uuid);
  s->flags = d->dev.bio_based ? CBT_SLOT_BIO_BASED : 0;
  struct timespec boot;
  clock_gettime(CLOCK_BOOTTIME, &boot);
  s->attach_boot_ns = (uint64_t)boot.tv_sec * 1000000000ULL + (uint64_t)boot.tv_nsec;
  __atomic_store_n(&s->lost_inflight_full, 0, __ATOMIC_RELAXED);
  __atomic_store_n(&s->lost_out_of_range, 0, __ATOMIC_RELAXED);
  __atomic_store_n(&s->lost_retry_exhausted, 0, __ATOMIC_RELAXED);
  __atomic_store_n(&s->lost_bitmap_missing, 0, __ATOMIC_RELAXED);

  rpl_err err = RPL_OK;
  uint32_t key = (uint32_t)slot, kdev = kernel_dev(d->dev.major, d->dev.minor);
  size_t counters_bytes = (size_t)t->ncpus * sizeof(struct cbt_counters);
  void *zero = calloc(1, counters_bytes);
  if (!zero) {
    close(bitmap_fd);
    return RPL_E_NOMEM;
  }
  if (bpf_map_update_elem(t->fd[PIN_COUNTERS], &key, zero, BPF_ANY) != 0 ||
      bpf_map_update_elem(t->fd[PIN_BITMAPS], &key, &bitmap_fd, BPF_ANY) != 0) {
    err = fail(t, RPL_E_IO, "cannot install the bitmap of %s in slot %d: %s", d->dev.path, slot, strerror(errno));
    goto cleanup;
  }
  __atomic_store_n(&s->dev, kdev, __ATOMIC_SEQ_CST);
  if (bpf_map_update_elem(t->fd[PIN_DEVMAP], &kdev, &key, BPF_ANY) != 0) {
    __atomic_store_n(&s->dev, 0, __ATOMIC_SEQ_CST);
    err = fail(t, RPL_E_IO, "cannot register %s with the tracker: %s", d->dev.path, strerror(errno));
    goto cleanup;
  }
  d->slot = slot;
  d->rec.block_shift = shift;
  d->rec.size = d->dev.size;
  d->rec.diskseq = d->dev.diskseq;
  d->rec.fallback = false;
  d->rec.armed = true;
  memset(d->rec.losses_seen, 0, sizeof d->rec.losses_seen);
  d->rec.program_misses_seen = program_misses(t);
  d->dirty = true;
  log_info("tracking %s (%s) in slot %d: granularity %u bytes, %" PRIu64 " blocks", d->dev.path, d->dev.name, slot,
           1u << shift, nr_blocks);

cleanup:
  free(zero);
  close(bitmap_fd); /* the outer map holds it */
  return err;
}

static rpl_err slot_detach(struct cbt *t, int slot)
{
  struct cbt_slot *s = &t->slots[slot];
  uint32_t key = (uint32_t)slot, kdev = __atomic_load_n(&s->dev, __ATOMIC_ACQUIRE);
  if (kdev && bpf_map_delete_elem(t->fd[PIN_DEVMAP], &kdev) != 0 && errno != ENOENT)
    log_warn("cannot remove device %u:%u from the tracker's device map: %s", kdev >> 20, kdev & 0xfffff,
             strerror(errno));
  __atomic_store_n(&s->dev, 0, __ATOMIC_SEQ_CST);
  rpl_err err = wait_inactive(t, s, 0);
  if (!err)
    err = wait_inactive(t, s, 1);
  if (err)
    return err;
  unmap_bitmap(&t->bitmaps[slot]);
  if (bpf_map_delete_elem(t->fd[PIN_BITMAPS], &key) != 0 && errno != ENOENT)
    log_warn("cannot free the bitmap of slot %d: %s", slot, strerror(errno));
  memset(s->uuid, 0, sizeof s->uuid);
  return RPL_OK;
}

/* ---- records and events ---- */

static void raise_event(struct tracked *d, enum cbt_resync_reason reason, struct cbt *t)
{
  cbt_record_raise(&d->rec, reason, (uint64_t)time(NULL));
  d->dirty = true;
  if (d->slot >= 0)
    memcpy(t->slots[d->slot].uuid, d->rec.uuid, sizeof d->rec.uuid);
  char uuid[37];
  cbt_uuid_string(d->rec.uuid, uuid);
  log_notice("%s: resync required (%s, event %" PRIu64 "); new tracker UUID %s", d->rec.path,
             cbt_resync_reason_name(reason), d->rec.resync_count, uuid);
}

/* Loads the record of device (a path, or a recorded name when it has no '/'). */
static rpl_err load_tracked(struct cbt *t, const char *device, struct tracked *d, bool need_device)
{
  memset(d, 0, sizeof *d);
  d->slot = -1;
  rpl_err err;
  if (!strchr(device, '/')) {
    if (strlen(device) >= sizeof d->dev.name || device[0] == '.' || !device[0])
      return fail(t, RPL_E_INVALID_ARGUMENT, "invalid device name '%s'", device);
    strcpy(d->dev.name, device);
  } else {
    err = resolve_device(t, device, &d->dev);
    if (err && (need_device || err != RPL_E_NOT_FOUND))
      return err;
    if (err) { /* gone: find the record by the last path component */
      const char *base = strrchr(device, '/') + 1;
      snprintf(d->dev.name, sizeof d->dev.name, "%s", base);
    }
  }
  err = cbt_record_load(t->state_dir, d->dev.name, &d->rec);
  if (err == RPL_E_NOT_FOUND)
    return fail(t, RPL_E_CBT_NOT_TRACKED, "%s is not tracked (no record in %s/cbt): start it with "
                "'mobility-agent cbt start %s'", device, t->state_dir, device);
  if (err == RPL_E_CBT_STATE_CORRUPT)
    return fail(t, err, "the record %s/cbt/%s.state is unreadable: remove it and start %s again (forces a resync)",
                t->state_dir, d->dev.name, device);
  if (err)
    return fail(t, err, "cannot read the record of %s in %s/cbt: %s", device, t->state_dir, rpl_strerror(err));
  if (!d->dev.present) {
    /* Known only by name: use the recorded path when it still names the same disk. */
    struct device_info info;
    if (resolve_device(t, d->rec.path, &info) == RPL_OK && info.major == d->rec.major && info.minor == d->rec.minor)
      d->dev = info;
    t->errmsg[0] = '\0';
  } else if (d->dev.major != d->rec.major || d->dev.minor != d->rec.minor) {
    return fail(t, RPL_E_CBT_STATE_CORRUPT, "%s is now %u:%u but was recorded as %u:%u: stop and start it again",
                device, d->dev.major, d->dev.minor, d->rec.major, d->rec.minor);
  }
  return RPL_OK;
}

/* Compares the record with the kernel and raises an event for every way tracking may have lost a
 * write since the last look. Never re-arms; see arm(). */
static void reconcile(struct cbt *t, struct tracked *d)
{
  uint32_t kdev = kernel_dev(d->rec.major, d->rec.minor);
  int slot = find_slot(t, kdev);
  if (slot >= 0 && memcmp(t->slots[slot].uuid, d->rec.uuid, sizeof d->rec.uuid) != 0) {
    d->foreign_slot = true;
    slot = -1;
  }
  d->slot = slot;

  if (strcmp(d->rec.boot_id, t->boot_id) != 0) {
    snprintf(d->rec.boot_id, sizeof d->rec.boot_id, "%s", t->boot_id);
    d->rec.armed = slot >= 0; /* pins never survive a reboot; a slot here means the record was stale */
    raise_event(d, CBT_RESYNC_REBOOT, t);
  } else if (d->rec.armed && slot < 0) {
    d->rec.armed = false;
    raise_event(d, CBT_RESYNC_UNCLEAN_DETACH, t);
  }
  /* Same dev_t, other content without a single write: a loop device re-pointed, a medium swapped. */
  if (d->dev.present && d->dev.diskseq != d->rec.diskseq) {
    if (d->rec.diskseq && d->dev.diskseq)
      raise_event(d, CBT_RESYNC_MEDIA_CHANGED, t);
    d->rec.diskseq = d->dev.diskseq;
    d->dirty = true;
  }
  if (slot < 0)
    return;

  /* The programs find the slot through the device map: if the entry is gone, nothing was marked. */
  uint32_t mapped = UINT32_MAX;
  if (bpf_map_lookup_elem(t->fd[PIN_DEVMAP], &kdev, &mapped) != 0 || mapped != (uint32_t)slot) {
    uint32_t key = (uint32_t)slot;
    if (bpf_map_update_elem(t->fd[PIN_DEVMAP], &kdev, &key, BPF_ANY) != 0)
      log_warn("cannot repair the device map entry of %s: %s", d->rec.path, strerror(errno));
    raise_event(d, CBT_RESYNC_UNCLEAN_DETACH, t);
  }
  for (int i = 0; i < CBT_SLOT_LOSS_FIELDS; i++) {
    uint64_t now = slot_loss(&t->slots[slot], i);
    if (now > d->rec.losses_seen[i])
      raise_event(d, loss_reasons[i], t);
    if (now != d->rec.losses_seen[i]) {
      d->rec.losses_seen[i] = now;
      d->dirty = true;
    }
  }
  uint64_t misses = program_misses(t);
  if (misses > d->rec.program_misses_seen)
    raise_event(d, CBT_RESYNC_PROGRAM_MISSED, t);
  if (misses != d->rec.program_misses_seen) {
    d->rec.program_misses_seen = misses;
    d->dirty = true;
  }
  if (d->dev.present && d->dev.size != d->rec.size) {
    log_notice("%s: size changed from %" PRIu64 " to %" PRIu64 " bytes", d->rec.path, d->rec.size, d->dev.size);
    raise_event(d, CBT_RESYNC_RESIZE, t);
    /* A bitmap sized for the new disk, at once: writes must not go untracked until the next flip. */
    if (slot_detach(t, slot) == RPL_OK) {
      d->slot = -1;
      d->rec.armed = false;
      if (slot_attach(t, d) != RPL_OK)
        log_warn("%s: cannot re-attach after the resize: %s", d->rec.path, t->errmsg);
    }
  }
}

/* Makes sure the device is tracked: attaches a slot (installing the tracker if needed) or, where
 * eBPF cannot work, switches the record to fallback mode. */
static rpl_err arm(struct cbt *t, struct tracked *d)
{
  if (d->slot >= 0)
    return RPL_OK;
  if (d->foreign_slot)
    return fail(t, RPL_E_CBT_OWNED_ELSEWHERE, "%s is tracked under another agent state directory (not %s): use that "
                "--state", d->rec.path, t->state_dir);
  if (!d->dev.present)
    return fail(t, RPL_E_NOT_FOUND, "%s is not present: cannot track it", d->rec.path);
  if (!pins_installed(t)) {
    rpl_err err = pins_install(t);
    if (err && t->no_ebpf_why[0]) {
      if (!d->rec.fallback) {
        log_warn("eBPF tracking unavailable: %s", t->no_ebpf_why);
        d->rec.fallback = true;
        d->rec.armed = false;
        d->rec.size = d->dev.size;
        d->rec.block_shift = block_shift_for(d->dev.size);
        raise_event(d, CBT_RESYNC_NO_EBPF, t);
      }
      return RPL_OK;
    }
    if (err)
      return err;
  }
  return slot_attach(t, d);
}

static rpl_err save_tracked(struct cbt *t, struct tracked *d)
{
  if (!d->dirty)
    return RPL_OK;
  rpl_err err = cbt_record_save(t->state_dir, &d->rec);
  if (err)
    return fail(t, err, "cannot save the record of %s in %s/cbt: %s", d->rec.path, t->state_dir, rpl_strerror(err));
  d->dirty = false;
  return RPL_OK;
}

static struct cycle *find_cycle(struct cbt *t, const char *name, bool create)
{
  struct cycle *free_one = NULL;
  for (int i = 0; i < CBT_MAX_DEVICES; i++) {
    if (!strcmp(t->cycles[i].name, name))
      return &t->cycles[i];
    if (!free_one && (!t->cycles[i].name[0] || !t->cycles[i].flipped))
      free_one = &t->cycles[i];
  }
  if (!create || !free_one)
    return NULL;
  memset(free_one, 0, sizeof *free_one);
  snprintf(free_one->name, sizeof free_one->name, "%s", name);
  return free_one;
}

/* ---- operations ---- */

rpl_err cbt_start(struct cbt *t, const char *device)
{
  struct tracked d;
  memset(&d, 0, sizeof d);
  d.slot = -1;
  rpl_err err = lock_tracker(t);
  if (err)
    return err;
  err = resolve_device(t, device, &d.dev);
  if (err)
    goto out;

  err = cbt_record_load(t->state_dir, d.dev.name, &d.rec);
  if (err == RPL_OK) {
    if (d.rec.major != d.dev.major || d.rec.minor != d.dev.minor) {
      err = fail(t, RPL_E_CBT_STATE_CORRUPT, "%s is %u:%u but %s/cbt/%s.state records %u:%u: stop it first",
                 device, d.dev.major, d.dev.minor, t->state_dir, d.dev.name, d.rec.major, d.rec.minor);
      goto out;
    }
    reconcile(t, &d);
    if (d.slot >= 0 || (d.rec.fallback && !d.dirty)) {
      char uuid[37];
      cbt_uuid_string(d.rec.uuid, uuid);
      err = save_tracked(t, &d);
      if (!err)
        err = fail(t, RPL_E_CBT_ALREADY_TRACKED, "%s is already tracked (tracker UUID %s%s)", device, uuid,
                   d.rec.fallback ? ", fallback mode" : "");
      goto out;
    }
    snprintf(d.rec.path, sizeof d.rec.path, "%s", device);
  } else if (err == RPL_E_NOT_FOUND || err == RPL_E_CBT_STATE_CORRUPT) {
    if (err == RPL_E_CBT_STATE_CORRUPT)
      log_warn("%s/cbt/%s.state is unreadable: starting %s afresh", t->state_dir, d.dev.name, device);
    if (find_slot(t, kernel_dev(d.dev.major, d.dev.minor)) >= 0) {
      err = fail(t, RPL_E_CBT_OWNED_ELSEWHERE, "%s is already tracked under another agent state directory (not %s)",
                 device, t->state_dir);
      goto out;
    }
    memset(&d.rec, 0, sizeof d.rec);
    snprintf(d.rec.name, sizeof d.rec.name, "%s", d.dev.name);
    snprintf(d.rec.path, sizeof d.rec.path, "%s", device);
    d.rec.major = d.dev.major;
    d.rec.minor = d.dev.minor;
    d.rec.size = d.dev.size;
    d.rec.diskseq = d.dev.diskseq;
    d.rec.block_shift = block_shift_for(d.dev.size);
    snprintf(d.rec.boot_id, sizeof d.rec.boot_id, "%s", t->boot_id);
    uuid_generate_random(d.rec.uuid);
    d.dirty = true;
  } else {
    err = fail(t, err, "cannot read %s/cbt/%s.state: %s", t->state_dir, d.dev.name, rpl_strerror(err));
    goto out;
  }

  /* Record first (armed, with the UUID), attach second: a crash in between is then seen as an
   * unclean detach instead of going unnoticed. */
  d.rec.armed = !d.rec.fallback;
  d.dirty = true;
  err = save_tracked(t, &d);
  if (!err)
    err = arm(t, &d);
  if (err) {
    if (d.rec.resync_count == 0)
      ignore_error(cbt_record_remove(t->state_dir, d.rec.name)); /* a fresh start that failed leaves nothing */
    else {
      d.rec.armed = false;
      d.dirty = true;
      ignore_error(save_tracked(t, &d));
    }
    if (!any_slot_used(t) && pins_installed(t))
      pins_remove(t);
    goto out;
  }
  err = save_tracked(t, &d);
out:
  unlock_tracker(t);
  return err;
}

rpl_err cbt_stop(struct cbt *t, const char *device)
{
  struct tracked d;
  rpl_err err = lock_tracker(t);
  if (err)
    return err;
  err = load_tracked(t, device, &d, false);
  if (err)
    goto out;
  uint32_t kdev = kernel_dev(d.rec.major, d.rec.minor);
  int slot = find_slot(t, kdev);
  if (slot >= 0 && memcmp(t->slots[slot].uuid, d.rec.uuid, sizeof d.rec.uuid) == 0) {
    err = slot_detach(t, slot);
    if (err)
      goto out;
  }
  err = cbt_record_remove(t->state_dir, d.rec.name);
  if (err) {
    err = fail(t, err, "cannot remove %s/cbt/%s.state", t->state_dir, d.rec.name);
    goto out;
  }
  struct cycle *c = find_cycle(t, d.rec.name, false);
  if (c)
    memset(c, 0, sizeof *c);
  if (pins_installed(t) && !any_slot_used(t)) {
    pins_remove(t);
    log_info("no device tracked any more: tracker programs unpinned from %s", t->pin_dir);
  }
out:
  unlock_tracker(t);
  return err;
}

rpl_err cbt_flip(struct cbt *t, const char *device, uint64_t *generation)
{
  struct tracked d;
  rpl_err err = lock_tracker(t);
  if (err)
    return err;
  err = load_tracked(t, device, &d, false);
  if (err)
    goto out;
  reconcile(t, &d);
  err = arm(t, &d);
  if (err) {
    ignore_error(save_tracked(t, &d));
    goto out;
  }
  struct cycle *c = find_cycle(t, d.rec.name, true);
  if (!c) {
    err = fail(t, RPL_E_LIMIT, "more than %d devices in the middle of a cycle in one handle", CBT_MAX_DEVICES);
    goto out;
  }
  if (d.rec.fallback) {
    raise_event(&d, CBT_RESYNC_NO_EBPF, t);
    d.rec.fallback_generation++;
    err = save_tracked(t, &d);
    if (err)
      goto out;
    *c = (struct cycle){.flipped = true, .frozen_seq = d.rec.fallback_generation};
    snprintf(c->name, sizeof c->name, "%s", d.rec.name);
    if (generation)
      *generation = c->frozen_seq;
    goto out;
  }
  err = save_tracked(t, &d);
  if (err)
    goto out;

  struct cbt_slot *s = &t->slots[d.slot];
  struct mapped_bitmap *m;
  err = map_bitmap(t, d.slot, &m);
  if (err)
    goto out;
  uint64_t seq = __atomic_load_n(&s->gen_seq, __ATOMIC_ACQUIRE);
  int live = (int)(seq & 1);
  uint64_t *live_buf = m->words + (uint64_t)live * m->layout.buffer_words;
  uint64_t *frozen_buf = m->words + (uint64_t)(live ^ 1) * m->layout.buffer_words;
  /* Whatever an earlier flip froze and nobody committed goes into this generation. */
  cbt_bitmap_fold(live_buf, frozen_buf, &m->layout);
  __atomic_store_n(&s->gen_seq, seq + 1, __ATOMIC_SEQ_CST);
  err = wait_inactive(t, s, live);
  if (err)
    goto out;
  *c = (struct cycle){.flipped = true, .frozen_seq = seq};
  snprintf(c->name, sizeof c->name, "%s", d.rec.name);
  if (generation)
    *generation = seq;
out:
  unlock_tracker(t);
  return err;
}

/* The frozen cycle of device for drain / commit, checked against the kernel. */
static rpl_err frozen_cycle(struct cbt *t, const char *device, struct tracked *d, struct cycle **out)
{
  rpl_err err = load_tracked(t, device, d, false);
  if (err)
    return err;
  struct cycle *c = find_cycle(t, d->rec.name, false);
  if (!c || !c->flipped)
    return fail(t, RPL_E_CBT_NOT_FLIPPED, "%s: no frozen generation in this process: flip first", device);
  *out = c;
  if (d->rec.fallback)
    return RPL_OK;
  int slot = find_slot(t, kernel_dev(d->rec.major, d->rec.minor));
  uint64_t live = slot >= 0 ? __atomic_load_n(&t->slots[slot].gen_seq, __ATOMIC_ACQUIRE) : 0;
  if (slot < 0 || memcmp(t->slots[slot].uuid, d->rec.uuid, sizeof d->rec.uuid) != 0 || live != c->frozen_seq + 1) {
    c->flipped = false;
    return fail(t, RPL_E_CBT_GENERATION_CHANGED,
                "%s: generation %" PRIu64 " is no longer frozen (%s): nothing is lost, its blocks are reported "
                "again after the next flip", device, c->frozen_seq,
                slot < 0 ? "tracking stopped" : live != c->frozen_seq + 1 ? "another flip happened" : "tracking restarted");
  }
  d->slot = slot;
  return RPL_OK;
}

/* Appends [offset, end) to set in max_length pieces; RPL_E_LIMIT leaves *offset at the first byte
 * not added. */
static rpl_err add_range(struct cbt_extents *set, uint64_t *offset, uint64_t end)
{
  while (*offset < end) {
    uint64_t length = end - *offset;
    if (set->max_length && length > set->max_length)
      length = set->max_length;
    rpl_err err = cbt_extents_add(set, *offset, length);
    if (err)
      return err;
    *offset += length;
  }
  return RPL_OK;
}

rpl_err cbt_drain(struct cbt *t, const char *device, struct cbt_extents *set)
{
  struct tracked d;
  struct cycle *c;
  rpl_err err = lock_tracker(t);
  if (err)
    return err;
  err = frozen_cycle(t, device, &d, &c);
  if (err)
    goto out;
  if (d.rec.fallback) {
    err = add_range(set, &c->next_byte, d.rec.size);
    goto done;
  }
  struct mapped_bitmap *m;
  err = map_bitmap(t, d.slot, &m);
  if (err)
    goto out;
  const uint64_t *frozen = m->words + (c->frozen_seq & 1) * m->layout.buffer_words;
  uint32_t shift = t->slots[d.slot].block_shift;
  uint64_t size = d.rec.size;
  while (c->next_byte < size) {
    uint64_t first = cbt_bitmap_next_set(frozen, &m->layout, c->next_byte >> shift);
    if (first >= m->layout.nr_blocks) {
      c->next_byte = size;
      break;
    }
    uint64_t end_block = cbt_bitmap_next_clear(frozen, &m->layout, first);
    uint64_t start = first << shift > c->next_byte ? first << shift : c->next_byte;
    uint64_t end = end_block << shift < size ? end_block << shift : size;
    c->next_byte = start;
    err = add_range(set, &c->next_byte, end);
    if (err)
      break;
    c->next_byte = end;
  }
done:
  if (err == RPL_E_LIMIT)
    err = RPL_E_AGAIN;
  else if (err)
    err = fail(t, err, "%s: cannot collect extents: %s", device, rpl_strerror(err));
  else
    c->drained = true;
out:
  unlock_tracker(t);
  return err;
}

rpl_err cbt_commit(struct cbt *t, const char *device, uint64_t generation)
{
  struct tracked d;
  struct cycle *c;
  rpl_err err = lock_tracker(t);
  if (err)
    return err;
  err = frozen_cycle(t, device, &d, &c);
  if (err)
    goto out;
  if (c->frozen_seq != generation) {
    err = fail(t, RPL_E_CBT_GENERATION_CHANGED, "%s: generation %" PRIu64 " is not the frozen one (%" PRIu64 ")",
               device, generation, c->frozen_seq);
    goto out;
  }
  if (!c->drained) {
    err = fail(t, RPL_E_INVALID_ARGUMENT, "%s: generation %" PRIu64 " is not fully drained: committing it would lose "
               "blocks", device, generation);
    goto out;
  }
  if (!d.rec.fallback) {
    struct mapped_bitmap *m;
    err = map_bitmap(t, d.slot, &m);
    if (err)
      goto out;
    cbt_bitmap_clear(m->words + (generation & 1) * m->layout.buffer_words, &m->layout);
  }
  c->flipped = false;
  c->drained = false;
  c->next_byte = 0;
out:
  unlock_tracker(t);
  return err;
}

rpl_err cbt_merge(struct cbt *t, const char *device, const struct cbt_extents *set)
{
  struct tracked d;
  rpl_err err = lock_tracker(t);
  if (err)
    return err;
  err = load_tracked(t, device, &d, false);
  if (err)
    goto out;
  reconcile(t, &d);
  if (d.rec.fallback || d.slot < 0) {
    /* Nothing tracked to merge into: the recorded event already makes the next cycle a resync. */
    err = save_tracked(t, &d);
    goto out;
  }
  struct mapped_bitmap *m;
  err = save_tracked(t, &d);
  if (!err)
    err = map_bitmap(t, d.slot, &m);
  if (err)
    goto out;
  struct cbt_slot *s = &t->slots[d.slot];
  uint64_t *live = m->words + (__atomic_load_n(&s->gen_seq, __ATOMIC_ACQUIRE) & 1) * m->layout.buffer_words;
  uint32_t shift = s->block_shift;
  for (size_t i = 0; i < set->count; i++) {
    const struct cbt_extent *e = &set->items[i];
    if (!e->length || e->offset >= d.rec.size)
      continue;
    uint64_t end = e->offset + e->length < d.rec.size ? e->offset + e->length : d.rec.size;
    cbt_bitmap_set(live, &m->layout, e->offset >> shift, (end - 1) >> shift);
  }
out:
  unlock_tracker(t);
  return err;
}

static void read_counters(struct cbt *t, int slot, struct cbt_status *st)
{
  size_t bytes = (size_t)t->ncpus * sizeof(struct cbt_counters);
  struct cbt_counters *per_cpu = calloc(1, bytes);
  uint32_t key = (uint32_t)slot;
  if (!per_cpu || bpf_map_lookup_elem(t->fd[PIN_COUNTERS], &key, per_cpu) != 0) {
    free(per_cpu);
    return;
  }
  for (int cpu = 0; cpu < t->ncpus; cpu++) {
    st->writes += per_cpu[cpu].writes;
    st->discards += per_cpu[cpu].discards;
    st->secure_erases += per_cpu[cpu].secure_erases;
    st->write_zeroes += per_cpu[cpu].write_zeroes;
    st->empty_ignored += per_cpu[cpu].empty_ignored;
    st->completion_marks += per_cpu[cpu].completion_marks;
    st->inflight_records += per_cpu[cpu].inflight_records;
  }
  free(per_cpu);
}

rpl_err cbt_status_get(struct cbt *t, const char *device, struct cbt_status *st)
{
  struct tracked d;
  memset(st, 0, sizeof *st);
  rpl_err err = lock_tracker(t);
  if (err)
    return err;
  err = load_tracked(t, device, &d, false);
  if (err)
    goto out;
  reconcile(t, &d);
  err = save_tracked(t, &d);
  if (err)
    goto out;
  snprintf(st->device, sizeof st->device, "%s", d.rec.path);
  snprintf(st->name, sizeof st->name, "%s", d.rec.name);
  st->fallback = d.rec.fallback;
  st->tracking = d.slot >= 0;
  st->size = d.rec.size;
  st->granularity = 1ULL << d.rec.block_shift;
  cbt_uuid_string(d.rec.uuid, st->uuid);
  st->resync_required = cbt_record_resync_required(&d.rec) || d.rec.fallback;
  st->resync_reason = d.rec.resync_reason;
  st->resync_count = d.rec.resync_count;
  st->resync_acked = d.rec.resync_acked;
  st->resync_time = d.rec.resync_time;
  if (d.rec.fallback) {
    st->generation = d.rec.fallback_generation;
    st->dirty_bytes = d.rec.size;
  }
  if (d.slot < 0)
    goto out;
  struct cbt_slot *s = &t->slots[d.slot];
  st->generation = __atomic_load_n(&s->gen_seq, __ATOMIC_ACQUIRE);
  st->program_misses = program_misses(t);
  read_counters(t, d.slot, st);
  struct mapped_bitmap *m;
  if (map_bitmap(t, d.slot, &m) == RPL_OK) {
    uint64_t blocks = cbt_bitmap_count(m->words, m->words + m->layout.buffer_words, &m->layout);
    uint64_t bytes = blocks << s->block_shift;
    st->dirty_bytes = bytes < st->size ? bytes : st->size;
  }
out:
  unlock_tracker(t);
  return err;
}

rpl_err cbt_list(struct cbt *t, char (*names)[64], size_t max, size_t *count)
{
  rpl_err err = cbt_record_list(t->state_dir, names, max, count);
  if (err)
    return fail(t, err, "cannot list %s/cbt: %s", t->state_dir, rpl_strerror(err));
  return RPL_OK;
}

rpl_err cbt_ack_resync(struct cbt *t, const char *device, uint64_t count)
{
  struct tracked d;
  rpl_err err = lock_tracker(t);
  if (err)
    return err;
  err = load_tracked(t, device, &d, false);
  if (err)
    goto out;
  reconcile(t, &d);
  rpl_err ack = cbt_record_ack(&d.rec, count);
  if (!ack)
    d.dirty = true;
  err = save_tracked(t, &d);
  if (err)
    goto out;
  if (ack == RPL_E_CBT_ACK_STALE)
    err = fail(t, ack, "%s: event %" PRIu64 " is not the latest: %" PRIu64 " events so far (last: %s); resync again "
               "and acknowledge %" PRIu64, device, count, d.rec.resync_count,
               cbt_resync_reason_name(d.rec.resync_reason), d.rec.resync_count);
  else if (ack)
    err = fail(t, ack, "%s: no resync event number %" PRIu64 " (%" PRIu64 " events so far)", device, count,
               d.rec.resync_count);
  else if (d.rec.fallback)
    log_notice("%s: acknowledged, but in fallback mode every cycle raises a new event", d.rec.path);
out:
  unlock_tracker(t);
  return err;
}
