/* cbt.c - the change-block tracker's user side (cbt.h): the handle and its lock, and the operations
 * (start, stop, flip / drain / commit / merge generations through mmap, status, resync acknowledgement)
 * built on cbt_kernel.c (the eBPF programs, maps and slots) and cbt_device.c (a device's record). */
#include "cbt.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>
#include <uuid/uuid.h>

#include "cbt_bitmap.h"
#include "cbt_internal.h"
#include "rpl_log.h"

#define DEFAULT_STATE_DIR "/var/lib/mobility-agent"

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
  case CBT_RESYNC_BOOT_WRITE: return "written-before-attach";
  case CBT_RESYNC_SLOT_RECLAIMED: return "slot-reclaimed";
  case CBT_RESYNC_COMPLETION_MISSED: return "completion-missed";
  }
  return "unknown";
}

/* Records why eBPF cannot be used here (shown to the user with the fallback). */
void cbt_set_no_ebpf_reason(struct cbt *t, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(t->no_ebpf_why, sizeof t->no_ebpf_why, fmt, ap);
  va_end(ap);
}

int cbt_read_small_file(const char *path, char *buf, size_t size)
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

int cbt_mkdir_parents(const char *path, mode_t mode)
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
  if (cbt_read_small_file("/proc/sys/kernel/random/boot_id", t->boot_id, sizeof t->boot_id) != 0 || !t->boot_id[0]) {
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
  libbpf_set_print(cbt_libbpf_print);

  char lock_dir[PATH_MAX];
  snprintf(lock_dir, sizeof lock_dir, "%s", CBT_LOCK_FILE);
  *strrchr(lock_dir, '/') = '\0';
  if (cbt_mkdir_parents(lock_dir, 0700) != 0 ||
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
  cbt_pins_close(t);
  for (int i = 0; i < CBT_MAX_DEVICES; i++)
    cbt_history_forget(t, i);
  if (t->lock_fd >= 0)
    close(t->lock_fd);
  free(t);
}

static rpl_err lock_tracker(struct cbt *t)
{
  while (flock(t->lock_fd, LOCK_EX) != 0)
    if (errno != EINTR)
      return rpl_fail(RPL_E_IO, "cannot lock %s: %s", CBT_LOCK_FILE, strerror(errno));
  rpl_err err = cbt_pins_refresh(t);
  if (err)
    flock(t->lock_fd, LOCK_UN);
  return err;
}

rpl_err cbt_lock(struct cbt *t) { return lock_tracker(t); }
void cbt_unlock(struct cbt *t) { flock(t->lock_fd, LOCK_UN); }

static void unlock_tracker(struct cbt *t)
{
  flock(t->lock_fd, LOCK_UN);
}

enum cbt_variant cbt_variant_get(struct cbt *t, bool *running, const char **why)
{
  /* The lock: opening the pins may remove an installation left half-done, never one in progress. */
  rpl_err err = lock_tracker(t);
  enum cbt_variant variant = cbt_variant_describe(t, running, why);
  if (!err)
    unlock_tracker(t);
  return variant;
}

bool cbt_ebpf_available(struct cbt *t, const char **why)
{
  if (why)
    *why = NULL;
  if (cbt_pins_installed(t))
    return true;
  struct statfs fs;
  if (access(t->btf_path, R_OK) != 0)
    cbt_set_no_ebpf_reason(t, "kernel BTF not found at %s: this kernel lacks CONFIG_DEBUG_INFO_BTF",
             t->btf_path);
  else if (geteuid() != 0)
    cbt_set_no_ebpf_reason(t, "not running as root: loading eBPF needs CAP_BPF and CAP_PERFMON");
  else if (statfs("/sys/fs/bpf", &fs) != 0 && errno == ENOENT)
    cbt_set_no_ebpf_reason(t, "no /sys/fs/bpf: bpffs is unavailable");
  else
    cbt_refusal_load(t);
  if (!t->no_ebpf_why[0])
    return true;
  if (why)
    *why = t->no_ebpf_why;
  return false;
}

#define REFUSAL_FILE "ebpf-refused" /* in STATE/cbt */

static void refusal_path(const struct cbt *t, char *out, size_t size)
{
  snprintf(out, size, "%s/cbt/" REFUSAL_FILE, t->state_dir);
}

void cbt_refusal_save(struct cbt *t)
{
  char dir[PATH_MAX + 8], path[PATH_MAX + 32], text[sizeof t->no_ebpf_why + 64];
  snprintf(dir, sizeof dir, "%s/cbt", t->state_dir);
  refusal_path(t, path, sizeof path);
  int len = snprintf(text, sizeof text, "%s\n%s\n", t->boot_id, t->no_ebpf_why);
  int fd = cbt_mkdir_parents(dir, 0700) == 0 ? open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600) : -1;
  if (fd < 0 || write(fd, text, (size_t)len) != len)
    log_warn("cannot keep why eBPF is unavailable in %s: %s", path, strerror(errno));
  if (fd >= 0)
    close(fd);
}

void cbt_refusal_load(struct cbt *t)
{
  char path[PATH_MAX + 32], text[sizeof t->no_ebpf_why + 64];
  refusal_path(t, path, sizeof path);
  if (cbt_read_small_file(path, text, sizeof text) != 0)
    return;
  char *reason = strchr(text, '\n');
  if (!reason || (size_t)(reason - text) != strlen(t->boot_id) || strncmp(text, t->boot_id, strlen(t->boot_id)))
    return; /* another boot's: this kernel may be another one */
  reason++;
  reason[strcspn(reason, "\n")] = '\0';
  cbt_set_no_ebpf_reason(t, "%s (the last try in this boot; the next start tries again)", reason);
}

void cbt_refusal_forget(struct cbt *t)
{
  char path[PATH_MAX + 32];
  refusal_path(t, path, sizeof path);
  if (unlink(path) != 0 && errno != ENOENT)
    log_warn("cannot remove %s: %s", path, strerror(errno));
}

struct cycle *cbt_find_cycle(struct cbt *t, const char *name, bool create)
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
  err = cbt_resolve_device(t, device, &d.dev);
  if (err)
    goto out;

  err = cbt_record_load(t->state_dir, d.dev.name, &d.rec);
  if (err == RPL_OK) {
    if (d.rec.major != d.dev.major || d.rec.minor != d.dev.minor) {
      err = rpl_fail(RPL_E_CBT_STATE_CORRUPT, "%s is %u:%u but %s/cbt/%s.state records %u:%u: stop it first",
                 device, d.dev.major, d.dev.minor, t->state_dir, d.dev.name, d.rec.major, d.rec.minor);
      goto out;
    }
    cbt_reconcile(t, &d);
    if (d.slot >= 0 || (d.rec.fallback && !d.dirty)) {
      char uuid[37];
      cbt_uuid_string(d.rec.uuid, uuid);
      err = cbt_save_tracked(t, &d);
      if (!err)
        err = cbt_save_area_ensure(t, &d); /* records from before save areas get one */
      if (!err)
        err = rpl_fail(RPL_E_CBT_ALREADY_TRACKED, "%s is already tracked (tracker UUID %s%s)", device, uuid,
                   d.rec.fallback ? ", fallback mode" : "");
      goto out;
    }
    snprintf(d.rec.path, sizeof d.rec.path, "%s", device);
  } else if (err == RPL_E_NOT_FOUND || err == RPL_E_CBT_STATE_CORRUPT) {
    if (err == RPL_E_CBT_STATE_CORRUPT)
      log_warn("%s/cbt/%s.state is unreadable: starting %s afresh", t->state_dir, d.dev.name, device);
    memset(&d.rec, 0, sizeof d.rec);
    /* Another state directory's slot of this disk: cbt_arm reclaims it when stale, else refuses. */
    d.foreign_slot = cbt_find_slot(t, kernel_dev(d.dev.major, d.dev.minor)) >= 0;
    snprintf(d.rec.name, sizeof d.rec.name, "%s", d.dev.name);
    snprintf(d.rec.path, sizeof d.rec.path, "%s", device);
    d.rec.major = d.dev.major;
    d.rec.minor = d.dev.minor;
    d.rec.size = d.dev.size;
    d.rec.diskseq = d.dev.diskseq;
    d.rec.block_shift = cbt_block_shift_for(d.dev.size);
    snprintf(d.rec.boot_id, sizeof d.rec.boot_id, "%s", t->boot_id);
    uuid_generate_random(d.rec.uuid);
    d.dirty = true;
  } else {
    err = rpl_fail(err, "cannot read %s/cbt/%s.state: %s", t->state_dir, d.dev.name, rpl_strerror(err));
    goto out;
  }

  /* Record first (armed, with the UUID), attach second: a crash in between is then seen as an
   * unclean detach instead of going unnoticed. */
  d.rec.armed = !d.rec.fallback;
  d.dirty = true;
  err = cbt_save_tracked(t, &d);
  if (!err)
    err = cbt_arm(t, &d);
  if (err) {
    if (d.rec.resync_count == 0)
      ignore_error(cbt_record_remove(t->state_dir, d.rec.name)); /* a fresh start that failed leaves nothing */
    else {
      d.rec.armed = false;
      d.dirty = true;
      ignore_error(cbt_save_tracked(t, &d));
    }
    if (!cbt_any_slot_used(t) && cbt_pins_installed(t))
      cbt_pins_remove(t);
    goto out;
  }
  err = cbt_save_tracked(t, &d);
  if (!err)
    err = cbt_save_area_ensure(t, &d);
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
  err = cbt_load_tracked(t, device, &d, false);
  if (err)
    goto out;
  uint32_t kdev = kernel_dev(d.rec.major, d.rec.minor);
  int slot = cbt_find_slot(t, kdev);
  if (slot >= 0 && memcmp(t->slots[slot].uuid, d.rec.uuid, sizeof d.rec.uuid) == 0) {
    err = cbt_slot_detach(t, slot);
    if (err)
      goto out;
  }
  err = cbt_record_remove(t->state_dir, d.rec.name);
  if (err) {
    err = rpl_fail(err, "cannot remove %s/cbt/%s.state", t->state_dir, d.rec.name);
    goto out;
  }
  struct cycle *c = cbt_find_cycle(t, d.rec.name, false);
  if (c)
    memset(c, 0, sizeof *c);
  if (cbt_pins_installed(t) && !cbt_any_slot_used(t)) {
    cbt_pins_remove(t);
    log_info("no device tracked any more: tracker programs unpinned from %s", t->pin_dir);
  }
out:
  unlock_tracker(t);
  return err;
}

rpl_err cbt_stop_force(struct cbt *t, const char *device)
{
  struct device_info info;
  rpl_err err = cbt_resolve_device(t, device, &info);
  if (err)
    return err;
  if ((err = lock_tracker(t)))
    return err;
  int slot = cbt_find_slot(t, kernel_dev(info.major, info.minor));
  struct cbt_record rec;
  bool recorded = cbt_record_load(t->state_dir, info.name, &rec) == RPL_OK;
  rpl_detail_clear(); /* no record is expected here: its detail is not this call's */
  if (slot >= 0 && (!recorded || memcmp(t->slots[slot].uuid, rec.uuid, sizeof rec.uuid))) {
    char uuid[37];
    cbt_uuid_string(t->slots[slot].uuid, uuid);
    if ((err = cbt_slot_detach(t, slot)))
      goto out;
    log_notice("%s: forced stop: the kernel slot of tracker UUID %s, owned by no record in %s/cbt, freed (an "
               "owner still running resyncs: unclean-detach)", device, uuid, t->state_dir);
  } else if (slot < 0 && !recorded) {
    err = rpl_fail(RPL_E_CBT_NOT_TRACKED, "%s is not tracked (no kernel slot, no record in %s/cbt)", device,
                   t->state_dir);
    goto out;
  }
  if (!recorded && cbt_pins_installed(t) && !cbt_any_slot_used(t)) {
    cbt_pins_remove(t);
    log_info("no device tracked any more: tracker programs unpinned from %s", t->pin_dir);
  }
  unlock_tracker(t);
  return recorded ? cbt_stop(t, device) : RPL_OK;
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
  err = cbt_load_tracked(t, device, &d, false);
  if (err)
    goto out;
  cbt_reconcile(t, &d);
  err = cbt_arm(t, &d);
  if (err) {
    ignore_error(cbt_save_tracked(t, &d));
    goto out;
  }
  struct cycle *c = cbt_find_cycle(t, d.rec.name, true);
  if (!c) {
    err = rpl_fail(RPL_E_LIMIT, "more than %d devices in the middle of a cycle in one handle", CBT_MAX_DEVICES);
    goto out;
  }
  if (d.rec.fallback) {
    cbt_raise_event(&d, CBT_RESYNC_NO_EBPF, t);
    d.rec.fallback_generation++;
    err = cbt_save_tracked(t, &d);
    if (err)
      goto out;
    *c = (struct cycle){.flipped = true, .frozen_seq = d.rec.fallback_generation};
    snprintf(c->name, sizeof c->name, "%s", d.rec.name);
    if (generation)
      *generation = c->frozen_seq;
    goto out;
  }
  err = cbt_save_tracked(t, &d);
  if (err)
    goto out;

  struct cbt_slot *s = &t->slots[d.slot];
  struct mapped_bitmap *m;
  err = cbt_map_bitmap(t, d.slot, &m);
  if (err)
    goto out;
  uint64_t seq = __atomic_load_n(&s->gen_seq, __ATOMIC_ACQUIRE);
  int live = (int)(seq & 1);
  uint64_t *live_buf = m->words + (uint64_t)live * m->layout.buffer_words;
  uint64_t *frozen_buf = m->words + (uint64_t)(live ^ 1) * m->layout.buffer_words;
  /* Whatever an earlier flip froze and nobody committed goes into this generation. */
  cbt_bitmap_fold(live_buf, frozen_buf, &m->layout);
  cbt_history_flip(t, d.slot, seq);
  __atomic_store_n(&s->gen_seq, seq + 1, __ATOMIC_SEQ_CST);
  err = cbt_wait_inactive(t, s, live);
  if (err)
    goto out;
  /* Every completion before the flip is in the kernel's count now: a miss among them makes this
   * cycle a resync (the caller reads the status after the flip), not a point without the write. */
  cbt_check_completions(t, &d, live); /* the frozen buffer, about to be drained */
  err = cbt_save_tracked(t, &d);
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
  rpl_err err = cbt_load_tracked(t, device, d, false);
  if (err)
    return err;
  struct cycle *c = cbt_find_cycle(t, d->rec.name, false);
  if (!c || !c->flipped)
    return rpl_fail(RPL_E_CBT_NOT_FLIPPED, "%s: no frozen generation in this process: flip first", device);
  *out = c;
  if (d->rec.fallback)
    return RPL_OK;
  int slot = cbt_find_slot(t, kernel_dev(d->rec.major, d->rec.minor));
  uint64_t live = slot >= 0 ? __atomic_load_n(&t->slots[slot].gen_seq, __ATOMIC_ACQUIRE) : 0;
  if (slot < 0 || memcmp(t->slots[slot].uuid, d->rec.uuid, sizeof d->rec.uuid) != 0 || live != c->frozen_seq + 1) {
    c->flipped = false;
    return rpl_fail(RPL_E_CBT_GENERATION_CHANGED,
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
  err = cbt_map_bitmap(t, d.slot, &m);
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
    err = rpl_fail(err, "%s: cannot collect extents: %s", device, rpl_strerror(err));
  else
    c->drained = true;
out:
  unlock_tracker(t);
  return err;
}

void cbt_set_repair_check(struct cbt *t, cbt_repair_check_fn fn, void *ctx)
{
  t->repair_check = fn;
  t->repair_check_ctx = ctx;
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
    err = rpl_fail(RPL_E_CBT_GENERATION_CHANGED, "%s: generation %" PRIu64 " is not the frozen one (%" PRIu64 ")",
               device, generation, c->frozen_seq);
    goto out;
  }
  if (!c->drained) {
    err = rpl_fail(RPL_E_INVALID_ARGUMENT, "%s: generation %" PRIu64 " is not fully drained: committing it would lose "
               "blocks", device, generation);
    goto out;
  }
  if (!d.rec.fallback) {
    struct mapped_bitmap *m;
    err = cbt_map_bitmap(t, d.slot, &m);
    if (err)
      goto out;
    uint64_t *frozen = m->words + (generation & 1) * m->layout.buffer_words;
    cbt_history_record(t, d.slot, frozen, &m->layout);
    cbt_bitmap_clear(frozen, &m->layout);
  }
  c->flipped = false;
  c->drained = false;
  c->next_byte = 0;
out:
  unlock_tracker(t);
  return err;
}

rpl_err cbt_rewritten(struct cbt *t, const char *device, const struct cbt_extents *set, bool *rewritten)
{
  struct tracked d;
  struct cycle *c;
  *rewritten = true;
  rpl_err err = lock_tracker(t);
  if (err)
    return err;
  err = frozen_cycle(t, device, &d, &c);
  if (err || d.rec.fallback)
    goto out;
  struct mapped_bitmap *m;
  if ((err = cbt_map_bitmap(t, d.slot, &m)))
    goto out;
  const uint64_t *live = m->words + ((c->frozen_seq + 1) & 1) * m->layout.buffer_words;
  uint32_t shift = t->slots[d.slot].block_shift;
  bool hit = false;
  for (size_t i = 0; i < set->count && !hit; i++) {
    const struct cbt_extent *e = &set->items[i];
    if (!e->length || e->offset >= d.rec.size)
      continue;
    uint64_t end = e->offset + e->length < d.rec.size ? e->offset + e->length : d.rec.size;
    uint64_t first = e->offset >> shift, last = (end - 1) >> shift;
    hit = cbt_bitmap_next_set(live, &m->layout, first) <= last;
  }
  *rewritten = hit;
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
  err = cbt_load_tracked(t, device, &d, false);
  if (err)
    goto out;
  cbt_reconcile(t, &d);
  if (d.rec.fallback || d.slot < 0) {
    /* Nothing tracked to merge into: the recorded event already makes the next cycle a resync. */
    err = cbt_save_tracked(t, &d);
    goto out;
  }
  struct mapped_bitmap *m;
  err = cbt_save_tracked(t, &d);
  if (!err)
    err = cbt_map_bitmap(t, d.slot, &m);
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

rpl_err cbt_status_get(struct cbt *t, const char *device, struct cbt_status *st)
{
  struct tracked d;
  memset(st, 0, sizeof *st);
  rpl_err err = lock_tracker(t);
  if (err)
    return err;
  err = cbt_load_tracked(t, device, &d, false);
  if (err)
    goto out;
  cbt_reconcile(t, &d);
  err = cbt_save_tracked(t, &d);
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
  st->program_misses = cbt_program_misses(t);
  uint64_t kernel = 0, base = __atomic_load_n(&s->kernel_sectors_base, __ATOMIC_RELAXED);
  st->completions_checked = (s->flags & CBT_SLOT_COMPLETIONS_CHECKED) && d.dev.present &&
                            cbt_kernel_written_sectors(d.dev.name, &kernel) == RPL_OK;
  st->kernel_completed_sectors = st->completions_checked && kernel > base ? kernel - base : 0;
  st->completion_repairs = __atomic_load_n(&s->completion_repairs, __ATOMIC_RELAXED);
  struct cbt_counters sum;
  if (cbt_slot_counters(t, d.slot, &sum) == RPL_OK) {
    st->writes = sum.writes;
    st->discards = sum.discards;
    st->secure_erases = sum.secure_erases;
    st->write_zeroes = sum.write_zeroes;
    st->empty_ignored = sum.empty_ignored;
    st->completion_marks = sum.completion_marks;
    st->inflight_records = sum.inflight_records;
    st->completed_sectors = sum.completed_sectors;
  }
  struct mapped_bitmap *m;
  if (cbt_map_bitmap(t, d.slot, &m) == RPL_OK) {
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
    return rpl_fail(err, "cannot list %s/cbt: %s", t->state_dir, rpl_strerror(err));
  return RPL_OK;
}

rpl_err cbt_ack_resync(struct cbt *t, const char *device, uint64_t count)
{
  struct tracked d;
  rpl_err err = lock_tracker(t);
  if (err)
    return err;
  err = cbt_load_tracked(t, device, &d, false);
  if (err)
    goto out;
  cbt_reconcile(t, &d);
  rpl_err ack = cbt_record_ack(&d.rec, count);
  if (!ack)
    d.dirty = true;
  err = cbt_save_tracked(t, &d);
  if (err)
    goto out;
  if (ack == RPL_E_CBT_ACK_STALE)
    err = rpl_fail(ack, "%s: event %" PRIu64 " is not the latest: %" PRIu64 " events so far (last: %s); resync again "
               "and acknowledge %" PRIu64, device, count, d.rec.resync_count,
               cbt_resync_reason_name(d.rec.resync_reason), d.rec.resync_count);
  else if (ack)
    err = rpl_fail(ack, "%s: no resync event number %" PRIu64 " (%" PRIu64 " events so far)", device, count,
               d.rec.resync_count);
  else if (d.rec.fallback)
    log_notice("%s: acknowledged, but in fallback mode every cycle raises a new event", d.rec.path);
out:
  unlock_tracker(t);
  return err;
}

