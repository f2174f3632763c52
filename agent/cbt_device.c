/* cbt_device.c - one tracked device: resolving it in /sys, its record, reconciling the record with
 * the kernel (every possible loss becomes a resync event) and arming its tracking. */
#include <bpf/bpf.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "cbt_internal.h"
#include "rpl_clock.h"
#include "rpl_log.h"

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

rpl_err cbt_resolve_device(struct cbt *t, const char *device, struct device_info *info)
{
  struct stat st;
  char sys[PATH_MAX], link[PATH_MAX], value[64];

  memset(info, 0, sizeof *info);
  if (stat(device, &st) != 0)
    return rpl_fail(errno == ENOENT ? RPL_E_NOT_FOUND : RPL_E_IO, "%s: %s", device, strerror(errno));
  if (!S_ISBLK(st.st_mode))
    return rpl_fail(RPL_E_CBT_NOT_BLOCK_DEVICE, "%s is not a block device: give a whole disk such as /dev/sdb", device);
  if (snprintf(info->path, sizeof info->path, "%s", device) >= (int)sizeof info->path)
    return rpl_fail(RPL_E_INVALID_ARGUMENT, "device path too long: %s", device);
  info->major = major(st.st_rdev);
  info->minor = minor(st.st_rdev);
  snprintf(sys, sizeof sys, "/sys/dev/block/%u:%u", info->major, info->minor);
  ssize_t n = readlink(sys, link, sizeof link - 1);
  if (n <= 0)
    return rpl_fail(RPL_E_IO, "%s: cannot read %s: %s (is /sys mounted?)", device, sys, strerror(errno));
  link[n] = '\0';
  char *base = strrchr(link, '/');
  base = base ? base + 1 : link;
  if (strlen(base) >= sizeof info->name)
    return rpl_fail(RPL_E_INVALID_ARGUMENT, "%s: kernel name too long", device);
  strcpy(info->name, base);

  char probe[PATH_MAX + 32];
  snprintf(probe, sizeof probe, "%s/partition", sys);
  if (access(probe, F_OK) == 0) {
    *strrchr(link, '/') = '\0';
    char *parent = strrchr(link, '/');
    parent = parent ? parent + 1 : link;
    return rpl_fail(RPL_E_CBT_PARTITION,
                "%s is a partition of %s: track the whole disk /dev/%s (writes through its partitions are covered)",
                device, parent, parent);
  }
  snprintf(probe, sizeof probe, "%s/queue/zoned", sys);
  if (cbt_read_small_file(probe, value, sizeof value) == 0 && strcmp(value, "none") != 0)
    return rpl_fail(RPL_E_CBT_ZONED, "%s is a zoned block device (%s): the tracker does not support zoned devices",
                device, value);
  snprintf(probe, sizeof probe, "%s/diskseq", sys);
  if (cbt_read_small_file(probe, value, sizeof value) != 0 || sscanf(value, "%" SCNu64, &info->diskseq) != 1)
    info->diskseq = 0;
  snprintf(probe, sizeof probe, "%s/mq", sys);
  info->bio_based = access(probe, F_OK) != 0;
  snprintf(probe, sizeof probe, "%s/size", sys);
  uint64_t sectors;
  if (cbt_read_small_file(probe, value, sizeof value) != 0 || sscanf(value, "%" SCNu64, &sectors) != 1)
    return rpl_fail(RPL_E_IO, "%s: cannot read its size from %s", device, probe);
  info->size = sectors * 512;
  if (info->size == 0)
    return rpl_fail(RPL_E_INVALID_ARGUMENT, "%s has size 0 (no medium, or a loop device without a backing file)",
                device);
  info->present = true;
  return RPL_OK;
}

void cbt_raise_event(struct tracked *d, enum cbt_resync_reason reason, struct cbt *t)
{
  cbt_record_raise(&d->rec, reason, (uint64_t)time(NULL));
  d->dirty = true;
  /* The record first: killed in between, the slot still has the previous UUID, which the next
   * look recognises (cbt_reconcile) and renews; the other order would look like a foreign slot. */
  if (d->slot >= 0 && cbt_save_tracked(t, d) == RPL_OK)
    memcpy(t->slots[d->slot].uuid, d->rec.uuid, sizeof d->rec.uuid);
  char uuid[37];
  cbt_uuid_string(d->rec.uuid, uuid);
  log_notice("%s: resync required (%s, event %" PRIu64 "); new tracker UUID %s", d->rec.path,
             cbt_resync_reason_name(reason), d->rec.resync_count, uuid);
}

/* Loads the record of device (a path, or a recorded name when it has no '/'). */
rpl_err cbt_load_tracked(struct cbt *t, const char *device, struct tracked *d, bool need_device)
{
  memset(d, 0, sizeof *d);
  d->slot = -1;
  rpl_err err;
  if (!strchr(device, '/')) {
    if (strlen(device) >= sizeof d->dev.name || device[0] == '.' || !device[0])
      return rpl_fail(RPL_E_INVALID_ARGUMENT, "invalid device name '%s'", device);
    strcpy(d->dev.name, device);
  } else {
    err = cbt_resolve_device(t, device, &d->dev);
    if (err && (need_device || err != RPL_E_NOT_FOUND))
      return err;
    if (err) { /* gone: find the record by the last path component */
      const char *base = strrchr(device, '/') + 1;
      snprintf(d->dev.name, sizeof d->dev.name, "%s", base);
    }
  }
  err = cbt_record_load(t->state_dir, d->dev.name, &d->rec);
  if (err == RPL_E_NOT_FOUND)
    return rpl_fail(RPL_E_CBT_NOT_TRACKED, "%s is not tracked (no record in %s/cbt): start it with "
                "'mobility-agent cbt start %s'", device, t->state_dir, device);
  if (err == RPL_E_CBT_STATE_CORRUPT)
    return rpl_fail(err, "the record %s/cbt/%s.state is unreadable: remove it and start %s again (forces a resync)",
                t->state_dir, d->dev.name, device);
  if (err)
    return rpl_fail(err, "cannot read the record of %s in %s/cbt: %s", device, t->state_dir, rpl_strerror(err));
  if (!d->dev.present) {
    /* Known only by name: use the recorded path when it still names the same disk. */
    struct device_info info;
    if (cbt_resolve_device(t, d->rec.path, &info) == RPL_OK && info.major == d->rec.major && info.minor == d->rec.minor)
      d->dev = info;
    rpl_detail_clear(); /* the failed resolve was expected: its detail is not this call's */
  } else if (d->dev.major != d->rec.major || d->dev.minor != d->rec.minor) {
    return rpl_fail(RPL_E_CBT_STATE_CORRUPT, "%s is now %u:%u but was recorded as %u:%u: stop and start it again",
                device, d->dev.major, d->dev.minor, d->rec.major, d->rec.minor);
  }
  return RPL_OK;
}

rpl_err cbt_kernel_written_sectors(const char *name, uint64_t *sectors)
{
  char path[128], buf[512];
  snprintf(path, sizeof path, "/sys/block/%s/stat", name);
  if (cbt_read_small_file(path, buf, sizeof buf) != 0)
    return rpl_fail(RPL_E_IO, "%s: %s", path, strerror(errno));
  uint64_t f[17] = {0};
  int got = sscanf(buf, "%" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64
                   " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64,
                   &f[0], &f[1], &f[2], &f[3], &f[4], &f[5], &f[6], &f[7], &f[8], &f[9], &f[10], &f[11], &f[12], &f[13]);
  if (got < 7)
    return rpl_fail(RPL_E_IO, "%s: unexpected content", path);
  *sectors = f[6] + (got >= 14 ? f[13] : 0); /* write sectors, discard sectors */
  return RPL_OK;
}

rpl_err cbt_slot_counters(const struct cbt *t, int slot, struct cbt_counters *sum)
{
  struct cbt_counters *per_cpu = calloc((size_t)t->ncpus, sizeof *per_cpu);
  uint32_t key = (uint32_t)slot;
  memset(sum, 0, sizeof *sum);
  if (!per_cpu)
    return RPL_E_NOMEM;
  rpl_err err = RPL_OK;
  if (bpf_map_lookup_elem(t->fd[PIN_COUNTERS], &key, per_cpu) != 0)
    err = rpl_fail(RPL_E_IO, "cannot read the tracker's counters of slot %d: %s", slot, strerror(errno));
  for (int cpu = 0; !err && cpu < t->ncpus; cpu++) {
    sum->writes += per_cpu[cpu].writes;
    sum->discards += per_cpu[cpu].discards;
    sum->secure_erases += per_cpu[cpu].secure_erases;
    sum->write_zeroes += per_cpu[cpu].write_zeroes;
    sum->empty_ignored += per_cpu[cpu].empty_ignored;
    sum->completion_marks += per_cpu[cpu].completion_marks;
    sum->inflight_records += per_cpu[cpu].inflight_records;
    sum->completed_sectors += per_cpu[cpu].completed_sectors;
  }
  free(per_cpu);
  return err;
}

/* Where a repair check marks (cbt_set_repair_check). */
struct repair_marks {
  uint64_t *words;
  const struct cbt_layout *layout;
  uint32_t block_shift;
};

static void repair_mark(void *ctx, uint64_t offset, uint64_t length)
{
  struct repair_marks *rm = ctx;
  if (!length || offset >> rm->block_shift >= rm->layout->nr_blocks)
    return;
  uint64_t first = offset >> rm->block_shift, last = (offset + length - 1) >> rm->block_shift;
  if (last >= rm->layout->nr_blocks)
    last = rm->layout->nr_blocks - 1;
  cbt_bitmap_set(rm->words, rm->layout, first, last);
}

void cbt_check_completions(struct cbt *t, struct tracked *d, int buffer)
{
  if (d->slot < 0 || !d->dev.present || !(t->slots[d->slot].flags & CBT_SLOT_COMPLETIONS_CHECKED))
    return;
  struct cbt_slot *s = &t->slots[d->slot];
  uint64_t kernel = 0;
  struct cbt_counters counters;
  /* The kernel's count first: a completion between the two reads is in the programs' count only,
   * which can hide a miss until the next check but never invents one. */
  rpl_err err = cbt_kernel_written_sectors(d->dev.name, &kernel);
  if (!err)
    err = cbt_slot_counters(t, d->slot, &counters);
  if (err) {
    char why[RPL_DETAIL_MAX + 64];
    log_warn("%s: cannot compare the kernel's completed writes with the tracker's: %s", d->rec.path,
             rpl_describe(err, why, sizeof why));
    return;
  }
  uint64_t base = __atomic_load_n(&s->kernel_sectors_base, __ATOMIC_RELAXED), seen = counters.completed_sectors;
  if (kernel < base || kernel - base <= seen)
    return;
  uint64_t missed = kernel - base - seen, chunks = 0;
  __atomic_store_n(&s->kernel_sectors_base, base + missed, __ATOMIC_RELAXED);
  struct mapped_bitmap *m = NULL;
  const struct cycle *c = cbt_find_cycle(t, d->rec.name, false);
  /* A look between this handle's flip and its commit: the frozen generation may have been read
   * before the skipped write landed, and it is in no history yet. */
  bool frozen_outstanding = buffer < 0 && c && c->flipped;
  if (buffer < 0)
    buffer = (int)(__atomic_load_n(&s->gen_seq, __ATOMIC_ACQUIRE) & 1);
  /* The write of a skipped completion was marked at its submission, in a generation committed since
   * (else it is still marked): the chunks written lately hold it. */
  if (cbt_map_bitmap(t, d->slot, &m) == RPL_OK && cbt_history_complete(t, d->slot)) {
    struct repair_marks rm = {.words = m->words + (uint64_t)buffer * m->layout.buffer_words, .layout = &m->layout,
                              .block_shift = s->block_shift};
    if (frozen_outstanding)
      cbt_bitmap_or(rm.words, m->words + (c->frozen_seq & 1) * m->layout.buffer_words, &m->layout);
    uint64_t checked = 0, differing = 0, start_ms = rpl_mono_ms();
    if (t->repair_check &&
        t->repair_check(t->repair_check_ctx, d->rec.path, repair_mark, &rm, &checked, &differing)) {
      __atomic_fetch_add(&s->completion_repairs, 1, __ATOMIC_RELAXED);
      log_notice("%s: the kernel completed %" PRIu64 " sectors of writes that the tracker's completion program did "
                 "not see (the kernel skipped it): of the %" PRIu64 " KiB sent in the last %llu s (read back in %"
                 PRIu64 " ms), %" PRIu64 " KiB differ from the disk now and are sent again", d->rec.path, missed,
                 checked >> 10, CBT_HISTORY_NS / 1000000000ULL, rpl_mono_ms() - start_ms, differing >> 10);
      return;
    }
    if (cbt_history_repair(t, d->slot, rm.words, &m->layout, &chunks)) {
      __atomic_fetch_add(&s->completion_repairs, 1, __ATOMIC_RELAXED);
      log_notice("%s: the kernel completed %" PRIu64 " sectors of writes that the tracker's completion program did "
                 "not see (the kernel skipped it): what was written in the last %llu s is sent again (%" PRIu64
                 " chunks of %u KiB)", d->rec.path, missed, CBT_HISTORY_NS / 1000000000ULL, chunks,
                 1u << (t->history[d->slot].chunk_shift - 10));
      return;
    }
  }
  log_warn("%s: the kernel completed %" PRIu64 " sectors of writes that the tracker's completion program did not "
           "see (the kernel skipped it), and this agent has not kept what was written in the last %llu s: resync",
           d->rec.path, missed, CBT_HISTORY_NS / 1000000000ULL);
  cbt_raise_event(d, CBT_RESYNC_COMPLETION_MISSED, t);
}

/* Compares the record with the kernel and raises an event for every way tracking may have lost a
 * write since the last look. Never re-arms; see cbt_arm(). */
void cbt_reconcile(struct cbt *t, struct tracked *d)
{
  uint32_t kdev = kernel_dev(d->rec.major, d->rec.minor);
  int slot = cbt_find_slot(t, kdev);
  if (slot >= 0 && memcmp(t->slots[slot].uuid, d->rec.uuid, sizeof d->rec.uuid) != 0) {
    if (d->rec.has_previous_uuid && !memcmp(t->slots[slot].uuid, d->rec.previous_uuid, sizeof d->rec.uuid)) {
      /* An event was recorded and the agent died before renewing the slot's UUID: finish it. */
      memcpy(t->slots[slot].uuid, d->rec.uuid, sizeof d->rec.uuid);
      log_info("%s: the slot's tracker UUID renewed after an interrupted event", d->rec.path);
    } else {
      d->foreign_slot = true;
      slot = -1;
    }
  }
  d->slot = slot;

  if (strcmp(d->rec.boot_id, t->boot_id) != 0) {
    /* Pins never survive a reboot: a slot here was attached by the boot's resume step, with the
     * outcome it left (or the record was stale). */
    enum cbt_resync_reason why = CBT_RESYNC_REBOOT;
    bool resumed = slot >= 0 && cbt_resumed_this_boot(t, d, &why);
    snprintf(d->rec.boot_id, sizeof d->rec.boot_id, "%s", t->boot_id);
    d->rec.armed = slot >= 0;
    d->dirty = true;
    if (resumed)
      log_notice("%s: tracking kept across a clean reboot (the changes saved at shutdown were restored): no resync",
                 d->rec.path);
    else
      cbt_raise_event(d, why, t);
  } else if (d->rec.armed && slot < 0) {
    d->rec.armed = false;
    cbt_raise_event(d, CBT_RESYNC_UNCLEAN_DETACH, t);
  }
  /* Same dev_t, other content without a single write: a loop device re-pointed, a medium swapped. */
  if (d->dev.present && d->dev.diskseq != d->rec.diskseq) {
    if (d->rec.diskseq && d->dev.diskseq)
      cbt_raise_event(d, CBT_RESYNC_MEDIA_CHANGED, t);
    d->rec.diskseq = d->dev.diskseq;
    if (slot >= 0) /* the owner took the new medium on: its slot is not stale for others */
      t->slots[slot].diskseq = d->dev.diskseq;
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
    cbt_raise_event(d, CBT_RESYNC_UNCLEAN_DETACH, t);
  }
  for (int i = 0; i < CBT_SLOT_LOSS_FIELDS; i++) {
    uint64_t now = slot_loss(&t->slots[slot], i);
    if (now > d->rec.losses_seen[i])
      cbt_raise_event(d, loss_reasons[i], t);
    if (now != d->rec.losses_seen[i]) {
      d->rec.losses_seen[i] = now;
      d->dirty = true;
    }
  }
  cbt_check_completions(t, d, -1);
  uint64_t misses = cbt_program_misses(t);
  if (misses > d->rec.program_misses_seen)
    cbt_raise_event(d, CBT_RESYNC_PROGRAM_MISSED, t);
  if (misses != d->rec.program_misses_seen) {
    d->rec.program_misses_seen = misses;
    d->dirty = true;
  }
  if (d->dev.present && d->dev.size != d->rec.size) {
    log_notice("%s: size changed from %" PRIu64 " to %" PRIu64 " bytes", d->rec.path, d->rec.size, d->dev.size);
    cbt_raise_event(d, CBT_RESYNC_RESIZE, t);
    /* A bitmap sized for the new disk, at once: writes must not go untracked until the next flip. */
    if (cbt_slot_detach(t, slot) == RPL_OK) {
      d->slot = -1;
      d->rec.armed = false;
      rpl_err e = cbt_slot_attach(t, d);
      char why[RPL_DETAIL_MAX + 256];
      if (e)
        log_warn("%s: cannot re-attach after the resize: %s", d->rec.path, rpl_describe(e, why, sizeof why));
    }
  }
}

/* Makes sure the device is tracked: attaches a slot (installing the tracker if needed) or, where
 * eBPF cannot work, switches the record to fallback mode. */
rpl_err cbt_arm(struct cbt *t, struct tracked *d)
{
  if (d->slot >= 0)
    return RPL_OK;
  if (!d->dev.present)
    return rpl_fail(RPL_E_NOT_FOUND, "%s is not present: cannot track it", d->rec.path);
  if (d->foreign_slot) {
    int foreign = cbt_find_slot(t, kernel_dev(d->rec.major, d->rec.minor));
    rpl_err err = foreign >= 0 ? cbt_slot_reclaim(t, foreign, d) : RPL_OK;
    if (err)
      return err;
    d->foreign_slot = false;
  }
  if (!cbt_pins_installed(t)) {
    rpl_err err = cbt_pins_install(t);
    if (err && t->no_ebpf_why[0]) {
      cbt_refusal_save(t);
      if (!d->rec.fallback) {
        log_warn("eBPF tracking unavailable: %s", t->no_ebpf_why);
        d->rec.fallback = true;
        d->rec.armed = false;
        d->rec.size = d->dev.size;
        d->rec.block_shift = cbt_block_shift_for(d->dev.size);
        cbt_raise_event(d, CBT_RESYNC_NO_EBPF, t);
      }
      return RPL_OK;
    }
    if (err)
      return err;
  }
  return cbt_slot_attach(t, d);
}

rpl_err cbt_save_tracked(struct cbt *t, struct tracked *d)
{
  if (!d->dirty)
    return RPL_OK;
  rpl_err err = cbt_record_save(t->state_dir, &d->rec);
  if (err)
    return rpl_fail(err, "cannot save the record of %s in %s/cbt: %s", d->rec.path, t->state_dir, rpl_strerror(err));
  d->dirty = false;
  return RPL_OK;
}
