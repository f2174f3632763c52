/* cbt_slots.c - who owns each kernel tracking slot (an owner file per attachment, next to the
 * tracker's lock), the list of every slot in use, and whether a slot is stale (its owner's state
 * directory or record gone, the disk now another one) so that starting the disk elsewhere reclaims it. */
#include <errno.h>
#include <stdarg.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cbt_internal.h"
#include "rpl_log.h"

/* The slots of a pin directory know nothing of paths (they are kernel memory the programs read);
 * the state directory that owns one is written here, in tmpfs: like the pins, gone at reboot. */
#define OWNERS_ROOT "/run/mobility-agent/slots"

_Static_assert(CBT_MAX_SLOTS == CBT_MAX_DEVICES, "cbt.h sizes slot lists by CBT_MAX_SLOTS");

/* Copies src into dst, cut to fit (the paths here were written by us, within PATH_MAX). */
static void copy_text(char *dst, size_t size, const char *src)
{
  size_t len = strnlen(src, size - 1);
  memcpy(dst, src, len);
  dst[len] = '\0';
}

static void set_stale(struct cbt_slot_info *out, const char *reason, const char *fmt, ...)
  __attribute__((format(printf, 3, 4)));

static void set_stale(struct cbt_slot_info *out, const char *reason, const char *fmt, ...)
{
  va_list ap;
  copy_text(out->stale_reason, sizeof out->stale_reason, reason);
  va_start(ap, fmt);
  vsnprintf(out->stale_detail, sizeof out->stale_detail, fmt, ap);
  va_end(ap);
}

/* OWNERS_ROOT/<the pin directory, '/' as '_'>: one tracker instance's owner files. */
static int owners_dir(const struct cbt *t, char *out, size_t size)
{
  const char *pins = t->pin_dir[0] == '/' ? t->pin_dir + 1 : t->pin_dir;
  int n = snprintf(out, size, "%s/%s", OWNERS_ROOT, pins);
  if (n < 0 || (size_t)n >= size)
    return -1;
  for (char *p = out + strlen(OWNERS_ROOT) + 1; *p; p++)
    if (*p == '/')
      *p = '_';
  return 0;
}

static int owner_path(const struct cbt *t, int slot, char *out, size_t size)
{
  char dir[PATH_MAX];
  if (owners_dir(t, dir, sizeof dir))
    return -1;
  int n = snprintf(out, size, "%s/%d", dir, slot);
  return n < 0 || (size_t)n >= size ? -1 : 0;
}

void cbt_owner_record(struct cbt *t, int slot, const char *name)
{
  char dir[PATH_MAX], path[PATH_MAX], tmp[PATH_MAX + 8], state[PATH_MAX];
  if (!realpath(t->state_dir, state))
    snprintf(state, sizeof state, "%s", t->state_dir);
  if (owners_dir(t, dir, sizeof dir) || owner_path(t, slot, path, sizeof path) ||
      snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp || cbt_mkdir_parents(dir, 0700) != 0)
    goto fail;
  FILE *f = fopen(tmp, "we");
  if (!f)
    goto fail;
  fprintf(f, "attach=%" PRIu64 "\nstate=%s\nname=%s\n", (uint64_t)t->slots[slot].attach_boot_ns, state, name);
  if (fclose(f) != 0 || rename(tmp, path) != 0) {
    unlink(tmp);
    goto fail;
  }
  return;
fail:
  /* Tracking works without it; only a later reclaim of this slot needs to know its owner. */
  log_warn("cannot record the owner of tracker slot %d in %s: %s (if this state directory is removed, free the "
           "slot with 'mobility-agent cbt stop --force')", slot, OWNERS_ROOT, strerror(errno));
}

void cbt_owner_forget(struct cbt *t, int slot)
{
  char path[PATH_MAX];
  if (!owner_path(t, slot, path, sizeof path) && unlink(path) != 0 && errno != ENOENT)
    log_warn("cannot remove %s: %s", path, strerror(errno));
}

void cbt_owners_remove(struct cbt *t)
{
  char dir[PATH_MAX];
  if (owners_dir(t, dir, sizeof dir))
    return;
  for (int slot = 0; slot < CBT_MAX_DEVICES; slot++)
    cbt_owner_forget(t, slot);
  if (rmdir(dir) != 0 && errno != ENOENT && errno != ENOTEMPTY)
    log_warn("cannot remove %s: %s", dir, strerror(errno));
}

/* The owner of slot's current attachment: false when unknown (no file, or one of an earlier
 * attachment of the slot, or one an agent without owner files left). */
static bool owner_read(const struct cbt *t, int slot, char *state, size_t state_size, char *name, size_t name_size)
{
  char path[PATH_MAX], line[PATH_MAX + 16];
  if (owner_path(t, slot, path, sizeof path))
    return false;
  FILE *f = fopen(path, "re");
  if (!f)
    return false;
  uint64_t attach = 0;
  bool have_attach = false;
  state[0] = name[0] = '\0';
  while (fgets(line, sizeof line, f)) {
    line[strcspn(line, "\n")] = '\0';
    if (!strncmp(line, "attach=", 7))
      have_attach = sscanf(line + 7, "%" SCNu64, &attach) == 1;
    else if (!strncmp(line, "state=", 6))
      copy_text(state, state_size, line + 6);
    else if (!strncmp(line, "name=", 5))
      copy_text(name, name_size, line + 5);
  }
  fclose(f);
  return have_attach && attach == t->slots[slot].attach_boot_ns && state[0] == '/' && name[0] && !strchr(name, '/');
}

void cbt_slot_judge(const struct cbt *t, int slot, struct cbt_slot_info *out)
{
  const struct cbt_slot *s = &t->slots[slot];
  uint32_t kdev = __atomic_load_n(&s->dev, __ATOMIC_ACQUIRE);
  memset(out, 0, sizeof *out);
  out->slot = slot;
  out->major = kdev >> 20;
  out->minor = kdev & 0xfffff;
  cbt_uuid_string(s->uuid, out->tracker_uuid);
  out->diskseq_recorded = s->diskseq;

  char sys[64], link[PATH_MAX], probe[PATH_MAX + 32], value[64];
  snprintf(sys, sizeof sys, "/sys/dev/block/%u:%u", out->major, out->minor);
  ssize_t n = readlink(sys, link, sizeof link - 1);
  uint64_t sectors = 0;
  if (n > 0) {
    link[n] = '\0';
    const char *base = strrchr(link, '/');
    copy_text(out->name, sizeof out->name, base ? base + 1 : link);
    snprintf(probe, sizeof probe, "%s/diskseq", sys);
    if (cbt_read_small_file(probe, value, sizeof value) != 0 || sscanf(value, "%" SCNu64, &out->diskseq_now) != 1)
      out->diskseq_now = 0;
    snprintf(probe, sizeof probe, "%s/size", sys);
    if (cbt_read_small_file(probe, value, sizeof value) != 0 || sscanf(value, "%" SCNu64, &sectors) != 1)
      sectors = 0;
  }
  out->owner_known = owner_read(t, slot, out->owner, sizeof out->owner, out->owner_name, sizeof out->owner_name);

  struct stat st;
  char record[PATH_MAX + 96];
  if (out->owner_known)
    (void)!snprintf(record, sizeof record, "%s/cbt/%s.state", out->owner, out->owner_name);
  if (out->owner_known && stat(out->owner, &st) != 0 && errno == ENOENT)
    set_stale(out, "owner-gone", "its owner's state directory %s is gone", out->owner);
  else if (out->owner_known && stat(record, &st) != 0 && errno == ENOENT)
    set_stale(out, "owner-record-gone", "its owner %s has no record of it (%s)", out->owner, record);
  else if (n <= 0)
    set_stale(out, "device-gone", "no block device %u:%u exists any more", out->major, out->minor);
  else if (out->diskseq_recorded && out->diskseq_now && out->diskseq_recorded != out->diskseq_now)
    set_stale(out, "identity-changed", "%s is another disk now (diskseq %" PRIu64 ", tracked %" PRIu64 "): a loop "
              "device re-attached, a medium swapped", out->name, out->diskseq_now, out->diskseq_recorded);
  else if (sectors == 0)
    set_stale(out, "no-medium", "%s has no medium (a loop device detached)", out->name);
  out->stale = out->stale_reason[0] != '\0';
}

rpl_err cbt_slot_reclaim(struct cbt *t, int slot, struct tracked *d)
{
  struct cbt_slot_info info;
  cbt_slot_judge(t, slot, &info);
  if (!info.stale) {
    char owner[PATH_MAX + 32];
    if (info.owner_known)
      snprintf(owner, sizeof owner, "%s", info.owner);
    else
      snprintf(owner, sizeof owner, "owner unknown");
    return rpl_fail(RPL_E_CBT_OWNED_ELSEWHERE, "%s is already tracked under another agent state directory (%s; not "
                    "%s): use that --state; if that one is gone, or the device was re-pointed since, free it with "
                    "'mobility-agent cbt stop --force %s'", d->rec.path, owner, t->state_dir, d->rec.path);
  }
  rpl_err err = cbt_slot_detach(t, slot);
  if (err)
    return err;
  d->foreign_slot = false;
  log_warn("%s: reclaimed stale kernel tracking slot %d (tracker UUID %s, owner %s): %s; tracking starts under %s "
           "with a resync (slot-reclaimed)", d->rec.path, slot, info.tracker_uuid,
           info.owner_known ? info.owner : "unknown", info.stale_detail, t->state_dir);
  cbt_raise_event(d, CBT_RESYNC_SLOT_RECLAIMED, t);
  return RPL_OK;
}

rpl_err cbt_slots_list(struct cbt *t, struct cbt_slot_info *out, size_t max, size_t *count)
{
  *count = 0;
  rpl_err err = cbt_lock(t);
  if (err)
    return err;
  for (int i = 0; cbt_pins_installed(t) && i < CBT_MAX_DEVICES; i++) {
    if (!__atomic_load_n(&t->slots[i].dev, __ATOMIC_ACQUIRE))
      continue;
    if (*count == max) {
      err = rpl_fail(RPL_E_LIMIT, "more than %zu tracker slots in use", max);
      break;
    }
    cbt_slot_judge(t, i, &out[(*count)++]);
  }
  cbt_unlock(t);
  return err;
}
