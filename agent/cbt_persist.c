/* cbt_persist.c - a clean reboot without a resync: at shutdown, after the last write, each tracked
 * disk's uncommitted changes are written raw into its save area (a file in STATE/cbt whose blocks
 * are found with FIEMAP, as swap files and hibernation images are written under a filesystem); at
 * the next boot, before the disk is first written, they are loaded into a fresh attachment. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <linux/magic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "cbt_bitmap.h"
#include "cbt_internal.h"
#include "proto.h"
#include "rpl_log.h"
#include "state_files.h"

#define SAVE_SUFFIX        ".save"
#define SAVE_MAGIC         "RPLCBTSV"
#define SAVE_VERSION       1
#define SAVE_HEADER_BYTES  4096u
#define SAVE_MAX_EXTENTS   64     /* a save area in more pieces than this is not used */
#define RESUME_DIR         "/run/mobility-agent/resumed" /* the boot's outcome per disk, for the daemon */

struct save_header {
  char magic[8];
  uint32_t version;
  uint32_t block_shift;
  uint8_t uuid[16];       /* the tracker UUID the changes belong to */
  char boot_id[40];       /* the boot they were tracked in */
  uint64_t size;          /* the disk's size then */
  uint64_t nr_blocks;
  uint64_t bitmap_bytes;  /* level 0 of the tracker's bitmap, little-endian words */
  uint64_t saved_unix;
  uint32_t crc;           /* CRC32C of the header (this field 0) and the bitmap */
  uint32_t reserved;
};

/* Where a save area's bytes are on the block device under its filesystem. */
struct save_map {
  uint32_t fs_major, fs_minor;
  size_t count;
  struct { uint64_t logical, physical, length; } e[SAVE_MAX_EXTENTS];
};

static uint64_t l0_words_of(uint64_t nr_blocks) { return (nr_blocks + 63) / 64; }

static uint64_t area_bytes(uint64_t nr_blocks)
{
  uint64_t bitmap = l0_words_of(nr_blocks) * 8;
  return SAVE_HEADER_BYTES + (bitmap + 4095) / 4096 * 4096;
}

static void save_path(const struct cbt *t, const char *name, char *out, size_t n)
{
  if (snprintf(out, n, "%s/%s/%s%s", t->state_dir, STATE_CBT_DIR, name, SAVE_SUFFIX) >= (int)n)
    out[0] = '\0'; /* too long a state directory: no save area (open fails, the disk resyncs) */
}

/* The extents of path, all of them plain data that a raw write under the filesystem reaches. */
static rpl_err map_area(const char *path, uint64_t bytes, struct save_map *m)
{
  memset(m, 0, sizeof *m);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return rpl_fail(errno == ENOENT ? RPL_E_NOT_FOUND : RPL_E_IO, "%s: %s", path, strerror(errno));
  struct stat st;
  struct statfs sf;
  size_t fmsz = sizeof(struct fiemap) + SAVE_MAX_EXTENTS * sizeof(struct fiemap_extent);
  struct fiemap *fm = calloc(1, fmsz);
  rpl_err err = RPL_OK;
  if (!fm)
    err = RPL_E_NOMEM;
  else if (fstat(fd, &st) != 0 || fstatfs(fd, &sf) != 0)
    err = rpl_fail(RPL_E_IO, "%s: %s", path, strerror(errno));
  else if ((uint64_t)st.st_size != bytes)
    err = rpl_fail(RPL_E_CBT_STATE_CORRUPT, "%s is %lld bytes, not %" PRIu64, path, (long long)st.st_size, bytes);
  else if (sf.f_type == BTRFS_SUPER_MAGIC)
    err = rpl_fail(RPL_E_UNSUPPORTED, "%s is on btrfs, whose block addresses are not the device's", path);
  if (!err) {
    fm->fm_length = bytes;
    fm->fm_flags = FIEMAP_FLAG_SYNC;
    fm->fm_extent_count = SAVE_MAX_EXTENTS;
    if (ioctl(fd, FS_IOC_FIEMAP, fm) != 0)
      err = rpl_fail(RPL_E_UNSUPPORTED, "%s: its filesystem does not map its blocks (FIEMAP: %s)", path, strerror(errno));
  }
  uint64_t next = 0;
  const uint32_t unusable = FIEMAP_EXTENT_UNKNOWN | FIEMAP_EXTENT_DELALLOC | FIEMAP_EXTENT_ENCODED |
                            FIEMAP_EXTENT_DATA_ENCRYPTED | FIEMAP_EXTENT_NOT_ALIGNED | FIEMAP_EXTENT_DATA_INLINE |
                            FIEMAP_EXTENT_DATA_TAIL | FIEMAP_EXTENT_UNWRITTEN | FIEMAP_EXTENT_SHARED;
  for (uint32_t i = 0; !err && i < fm->fm_mapped_extents; i++) {
    const struct fiemap_extent *x = &fm->fm_extents[i];
    if ((x->fe_flags & unusable) || x->fe_logical != next || x->fe_physical % 512 || x->fe_length % 512)
      err = rpl_fail(RPL_E_UNSUPPORTED, "%s: extent %u is not plain allocated data (flags 0x%x)", path, i, x->fe_flags);
    m->e[i].logical = x->fe_logical;
    m->e[i].physical = x->fe_physical;
    m->e[i].length = x->fe_length;
    next = x->fe_logical + x->fe_length;
  }
  if (!err && next < bytes)
    err = rpl_fail(RPL_E_UNSUPPORTED, "%s is in more than %d pieces, or has holes", path, SAVE_MAX_EXTENTS);
  if (!err) {
    m->count = fm->fm_mapped_extents;
    m->fs_major = major(st.st_dev);
    m->fs_minor = minor(st.st_dev);
  }
  free(fm);
  close(fd);
  return err;
}

/* The disk holding the filesystem's device: its kernel name and the device's first byte on it.
 * RPL_E_UNSUPPORTED for a stacked device (device mapper, md), whose blocks map to disks through a
 * table this does not read. */
static rpl_err whole_disk_of(uint32_t maj, uint32_t min, char *disk, size_t n, uint64_t *start, char *node, size_t nn)
{
  char sys[128], path[PATH_MAX], buf[128];
  snprintf(sys, sizeof sys, "/sys/dev/block/%u:%u", maj, min);
  if (!realpath(sys, path))
    return rpl_fail(RPL_E_IO, "%s: %s", sys, strerror(errno));
  char probe[PATH_MAX + 32];
  snprintf(probe, sizeof probe, "%s/uevent", path);
  FILE *f = fopen(probe, "re");
  node[0] = '\0';
  while (f && fgets(buf, sizeof buf, f))
    if (!strncmp(buf, "DEVNAME=", 8)) {
      buf[strcspn(buf, "\n")] = '\0';
      if (snprintf(node, nn, "/dev/%s", buf + 8) >= (int)nn)
        node[0] = '\0';
    }
  if (f)
    fclose(f);
  if (!node[0])
    return rpl_fail(RPL_E_IO, "%s names no device node", probe);
  snprintf(probe, sizeof probe, "%s/partition", path);
  *start = 0;
  if (access(probe, F_OK) == 0) {
    snprintf(probe, sizeof probe, "%s/start", path);
    if (cbt_read_small_file(probe, buf, sizeof buf) != 0)
      return rpl_fail(RPL_E_IO, "%s: %s", probe, strerror(errno));
    *start = strtoull(buf, NULL, 10) * 512;
    char *parent = dirname(path);
    snprintf(disk, n, "%s", strrchr(parent, '/') + 1);
    return RPL_OK;
  }
  snprintf(probe, sizeof probe, "%s/slaves", path);
  DIR *dir = opendir(probe);
  bool stacked = false;
  for (struct dirent *e; dir && (e = readdir(dir));)
    stacked = stacked || e->d_name[0] != '.';
  if (dir)
    closedir(dir);
  if (stacked)
    return rpl_fail(RPL_E_UNSUPPORTED, "the state directory's filesystem is on %s, a stacked device (device mapper, "
                    "md): the save's own blocks cannot be placed on its disks", node);
  snprintf(disk, n, "%s", strrchr(path, '/') + 1);
  return RPL_OK;
}

/* Writes data (bytes, from file offset `from`) raw at the save area's blocks, through the device
 * under the filesystem, bypassing it (it is read-only or about to be). */
static rpl_err write_raw(const struct save_map *m, const char *node, uint64_t from, const void *data, uint64_t bytes)
{
  int fd = open(node, O_WRONLY | O_DIRECT | O_CLOEXEC);
  if (fd < 0)
    return rpl_fail(RPL_E_IO, "cannot open %s to write the save area: %s", node, strerror(errno));
  rpl_err err = RPL_OK;
  for (size_t i = 0; i < m->count && !err; i++) {
    uint64_t a = m->e[i].logical > from ? m->e[i].logical : from;
    uint64_t b = m->e[i].logical + m->e[i].length < from + bytes ? m->e[i].logical + m->e[i].length : from + bytes;
    for (uint64_t off = a; off < b && !err;) {
      size_t len = b - off > (64u << 20) ? (64u << 20) : (size_t)(b - off);
      ssize_t w = pwrite(fd, (const uint8_t *)data + (off - from), len, (off_t)(m->e[i].physical + (off - m->e[i].logical)));
      if (w <= 0)
        err = rpl_fail(RPL_E_IO, "writing the save area on %s: %s", node, w < 0 ? strerror(errno) : "short write");
      else
        off += (uint64_t)w;
    }
  }
  if (!err && fsync(fd) != 0)
    err = rpl_fail(RPL_E_IO, "flushing %s: %s", node, strerror(errno));
  close(fd);
  return err;
}

rpl_err cbt_save_area_ensure(struct cbt *t, const struct tracked *d)
{
  if (d->rec.fallback)
    return RPL_OK;
  char path[PATH_MAX + 64];
  save_path(t, d->rec.name, path, sizeof path);
  uint64_t nr_blocks = (d->rec.size + (1ull << d->rec.block_shift) - 1) >> d->rec.block_shift;
  uint64_t bytes = area_bytes(nr_blocks);
  struct stat st;
  if (stat(path, &st) == 0 && (uint64_t)st.st_size == bytes)
    return RPL_OK;
  /* Written, not only allocated: a raw write into an unwritten extent would read back as zeros. */
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0)
    return rpl_fail(RPL_E_IO, "cannot make the save area %s: %s", path, strerror(errno));
  static const uint8_t zeros[65536];
  rpl_err err = RPL_OK;
  for (uint64_t off = 0; off < bytes && !err; off += sizeof zeros) {
    size_t len = bytes - off < sizeof zeros ? (size_t)(bytes - off) : sizeof zeros;
    if (pwrite(fd, zeros, len, (off_t)off) != (ssize_t)len)
      err = rpl_fail(RPL_E_IO, "writing the save area %s: %s", path, strerror(errno));
  }
  if (!err && fsync(fd) != 0)
    err = rpl_fail(RPL_E_IO, "flushing %s: %s", path, strerror(errno));
  close(fd);
  struct save_map m;
  if (!err && (err = map_area(path, bytes, &m))) {
    char why[RPL_DETAIL_MAX + 64];
    log_notice("%s: clean reboots will resync it: %s", d->rec.path, rpl_describe(err, why, sizeof why));
    unlink(path);
    err = RPL_OK; /* tracking works without it */
  }
  return err;
}

/* ---- shutdown ------------------------------------------------------------------------------ */

struct pending_save {
  struct tracked d;
  struct save_map map;
  uint64_t bytes;
  uint8_t *area;          /* header + bitmap, 4 KiB aligned */
  bool ok;
};

/* The level-0 bits of both buffers (everything not committed) into the area's bitmap. */
static void collect(struct pending_save *p, const struct mapped_bitmap *mb)
{
  uint64_t *out = (uint64_t *)(p->area + SAVE_HEADER_BYTES);
  const uint64_t *w = mb->words;
  for (uint64_t i = 0; i < mb->layout.l0_words; i++)
    out[i] = __atomic_load_n(&w[i], __ATOMIC_RELAXED) | __atomic_load_n(&w[mb->layout.buffer_words + i], __ATOMIC_RELAXED);
}

/* Marks in p's bitmap the blocks [first_byte, first_byte + len) of its disk. */
static void mark_bytes(struct pending_save *p, uint64_t first_byte, uint64_t len)
{
  uint64_t *bits = (uint64_t *)(p->area + SAVE_HEADER_BYTES);
  uint32_t shift = p->d.rec.block_shift;
  uint64_t nr = (p->d.rec.size + (1ull << shift) - 1) >> shift;
  for (uint64_t b = first_byte >> shift; b <= (first_byte + len - 1) >> shift && b < nr; b++)
    bits[b / 64] |= 1ull << (b % 64);
}

static uint64_t count_bits(const uint64_t *w, uint64_t words)
{
  uint64_t n = 0;
  for (uint64_t i = 0; i < words; i++)
    n += (uint64_t)__builtin_popcountll(w[i]);
  return n;
}

/* One device's changes gathered into p (its save area mapped); false with the reason logged. */
static bool gather(struct cbt *t, const char *name, struct pending_save *p)
{
  char path[PATH_MAX + 64], why[RPL_DETAIL_MAX + 64];
  save_path(t, name, path, sizeof path);
  rpl_err e = cbt_load_tracked(t, name, &p->d, false);
  int slot = e ? -1 : cbt_find_slot(t, kernel_dev(p->d.rec.major, p->d.rec.minor));
  struct mapped_bitmap *mb = NULL;
  if (!e && (slot < 0 || memcmp(t->slots[slot].uuid, p->d.rec.uuid, 16)))
    e = rpl_fail(RPL_E_CBT_NOT_TRACKED, "not tracked now (its changes are unknown already)");
  if (!e) {
    p->bytes = area_bytes(t->slots[slot].nr_blocks);
    e = map_area(path, p->bytes, &p->map);
  }
  if (!e && posix_memalign((void **)&p->area, 4096, p->bytes) != 0)
    e = RPL_E_NOMEM;
  if (!e && !(e = cbt_map_bitmap(t, slot, &mb))) {
    memset(p->area, 0, p->bytes);
    collect(p, mb);
  }
  if (e)
    log_warn("%s: its changes are not saved for the reboot (it resyncs after it): %s", name,
             rpl_describe(e, why, sizeof why));
  return p->ok = !e;
}

rpl_err cbt_save_for_reboot(struct cbt *t, size_t *saved, size_t *skipped)
{
  *saved = *skipped = 0;
  char names[CBT_MAX_DEVICES][64];
  size_t n = 0;
  rpl_err err = cbt_lock(t);
  if (err)
    return err;
  struct pending_save *ps = NULL;
  if ((err = cbt_record_list(t->state_dir, names, CBT_MAX_DEVICES, &n)) || !n)
    goto out;
  if (!(ps = calloc(n, sizeof *ps))) {
    err = RPL_E_NOMEM;
    goto out;
  }
  for (size_t i = 0; i < n; i++)
    if (!gather(t, names[i], &ps[i]))
      (*skipped)++;
  /* Every save area is on the state directory's filesystem: where its blocks are on which disk. */
  char disk[64] = "", node[160] = "", why[RPL_DETAIL_MAX + 64];
  uint64_t disk_start = 0;
  rpl_err where = RPL_E_NOT_FOUND;
  for (size_t i = 0; i < n && where == RPL_E_NOT_FOUND; i++)
    if (ps[i].ok)
      where = whole_disk_of(ps[i].map.fs_major, ps[i].map.fs_minor, disk, sizeof disk, &disk_start, node, sizeof node);
  if (where != RPL_OK && where != RPL_E_NOT_FOUND) {
    for (size_t i = 0; i < n; i++)
      if (ps[i].ok) {
        ps[i].ok = false;
        (*skipped)++;
        log_warn("%s: its changes are not saved for the reboot (it resyncs after it): %s", names[i],
                 rpl_describe(where, why, sizeof why));
      }
  }
  /* The saves' own blocks are written after the changes were collected: they join their disk's set. */
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j < n && ps[i].ok && !strcmp(ps[i].d.rec.name, disk); j++)
      for (size_t k = 0; ps[j].ok && k < ps[j].map.count; k++)
        mark_bytes(&ps[i], disk_start + ps[j].map.e[k].physical, ps[j].map.e[k].length);
  for (size_t i = 0; i < n; i++) {
    struct pending_save *p = &ps[i];
    if (!p->ok)
      continue;
    struct save_header h = {.version = SAVE_VERSION, .block_shift = p->d.rec.block_shift, .size = p->d.rec.size,
                            .saved_unix = (uint64_t)time(NULL)};
    memcpy(h.magic, SAVE_MAGIC, sizeof h.magic);
    memcpy(h.uuid, p->d.rec.uuid, sizeof h.uuid);
    snprintf(h.boot_id, sizeof h.boot_id, "%s", t->boot_id);
    h.nr_blocks = (p->d.rec.size + (1ull << h.block_shift) - 1) >> h.block_shift;
    h.bitmap_bytes = p->bytes - SAVE_HEADER_BYTES;
    uint32_t crc = proto_crc32c(0, &h, sizeof h);
    h.crc = proto_crc32c(crc, p->area + SAVE_HEADER_BYTES, h.bitmap_bytes);
    memcpy(p->area, &h, sizeof h);
    rpl_err e = write_raw(&p->map, node, 0, p->area, p->bytes);
    if (e) {
      log_warn("%s: its changes could not be saved for the reboot (it resyncs after it): %s", p->d.rec.name,
               rpl_describe(e, why, sizeof why));
      (*skipped)++;
      continue;
    }
    log_notice("%s: %" PRIu64 " changed blocks saved for the reboot (tracker UUID kept)", p->d.rec.name,
               count_bits((const uint64_t *)(p->area + SAVE_HEADER_BYTES), l0_words_of(h.nr_blocks)));
    (*saved)++;
  }
out:
  for (size_t i = 0; ps && i < n; i++)
    free(ps[i].area);
  free(ps);
  cbt_unlock(t);
  return err;
}

/* ---- boot ---------------------------------------------------------------------------------- */

static void leave_outcome(const char *name, const uint8_t uuid[16], const char *boot_id, enum cbt_resync_reason why,
                          const char *detail)
{
  char path[256], text[RPL_DETAIL_MAX + 256], u[37];
  cbt_mkdir_parents(RESUME_DIR "/x", 0700);
  snprintf(path, sizeof path, "%s/%s", RESUME_DIR, name);
  cbt_uuid_string(uuid, u);
  int len = snprintf(text, sizeof text, "%s %s %d %s\n", u, boot_id, (int)why, detail);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd >= 0) {
    if (write(fd, text, (size_t)len) != len)
      log_warn("%s: %s", path, strerror(errno));
    close(fd);
  }
}

/* Loads and checks the save area of d: the header and bitmap (aligned, len bytes) into area. */
static rpl_err read_save(struct cbt *t, const struct tracked *d, uint8_t **area, uint64_t *bytes, struct save_map *m)
{
  char path[PATH_MAX + 64];
  save_path(t, d->rec.name, path, sizeof path);
  uint64_t nr = (d->dev.size + (1ull << d->rec.block_shift) - 1) >> d->rec.block_shift;
  *bytes = area_bytes(nr);
  rpl_err err = map_area(path, *bytes, m);
  if (err)
    return err;
  if (posix_memalign((void **)area, 4096, *bytes) != 0)
    return RPL_E_NOMEM;
  int fd = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC); /* what is on the disk, not a cached page */
  ssize_t r = fd >= 0 ? pread(fd, *area, *bytes, 0) : -1;
  if (fd >= 0)
    close(fd);
  if (r != (ssize_t)*bytes)
    return rpl_fail(RPL_E_IO, "cannot read %s: %s", path, r < 0 ? strerror(errno) : "short read");
  struct save_header h;
  memcpy(&h, *area, sizeof h);
  uint32_t want = h.crc;
  h.crc = 0;
  uint32_t crc = proto_crc32c(0, &h, sizeof h);
  if (memcmp(h.magic, SAVE_MAGIC, 8) || h.version != SAVE_VERSION)
    return rpl_fail(RPL_E_CBT_STATE_CORRUPT, "no save from the last shutdown (a crash, a power loss, or no save hook)");
  if (h.bitmap_bytes != *bytes - SAVE_HEADER_BYTES || proto_crc32c(crc, *area + SAVE_HEADER_BYTES, h.bitmap_bytes) != want)
    return rpl_fail(RPL_E_CBT_STATE_CORRUPT, "the save from the last shutdown is damaged (checksum)");
  if (memcmp(h.uuid, d->rec.uuid, 16) || strcmp(h.boot_id, d->rec.boot_id))
    return rpl_fail(RPL_E_CBT_STATE_CORRUPT, "the save is not of the last boot's tracking (an older shutdown's)");
  if (h.size != d->dev.size || h.block_shift != d->rec.block_shift)
    return rpl_fail(RPL_E_CBT_STATE_CORRUPT, "the disk's size changed since the save");
  return RPL_OK;
}

/* Loads what the save holds into the fresh attachment's live buffer; then spends the save. */
static rpl_err restore_bits(struct cbt *t, struct tracked *d, const uint8_t *area, const struct save_map *m,
                            uint64_t *blocks)
{
  struct mapped_bitmap *mb = NULL;
  rpl_err err = cbt_map_bitmap(t, d->slot, &mb);
  if (err)
    return err;
  struct cbt_slot *s = &t->slots[d->slot];
  uint64_t *live = mb->words + (__atomic_load_n(&s->gen_seq, __ATOMIC_ACQUIRE) & 1) * mb->layout.buffer_words;
  const uint64_t *bits = (const uint64_t *)(area + SAVE_HEADER_BYTES);
  *blocks = 0;
  for (uint64_t b = 0; b < mb->layout.nr_blocks;) {
    if (!(bits[b / 64] >> (b % 64) & 1)) {
      b++;
      continue;
    }
    uint64_t first = b;
    while (b < mb->layout.nr_blocks && (bits[b / 64] >> (b % 64) & 1))
      b++;
    cbt_bitmap_set(live, &mb->layout, first, b - 1);
    *blocks += b - first;
  }
  /* Used once: a crash later in this boot must not bring it back (the write is tracked, and its
   * blocks were in the save's set). */
  static uint8_t spent[SAVE_HEADER_BYTES] __attribute__((aligned(4096)));
  char disk[64], node[160];
  uint64_t start;
  if (!(err = whole_disk_of(m->fs_major, m->fs_minor, disk, sizeof disk, &start, node, sizeof node)))
    err = write_raw(m, node, 0, spent, SAVE_HEADER_BYTES);
  return err;
}

/* Resumes one recorded disk and leaves the outcome for the daemon; *acted false when there was
 * nothing to resume (the daemon's first look then decides, as without this step). */
static enum cbt_resync_reason resume_one(struct cbt *t, const char *name, char *detail, size_t dn, bool *acted)
{
  struct tracked d;
  *acted = false;
  rpl_err err = cbt_load_tracked(t, name, &d, false);
  if (err || !d.dev.present || d.rec.fallback || !strcmp(d.rec.boot_id, t->boot_id) ||
      cbt_find_slot(t, kernel_dev(d.rec.major, d.rec.minor)) >= 0) {
    snprintf(detail, dn, "nothing to resume (not present, fallback mode, or tracked already in this boot)");
    return CBT_RESYNC_NONE;
  }
  uint8_t *area = NULL;
  uint64_t bytes = 0, written = 0, blocks = 0;
  struct save_map m;
  enum cbt_resync_reason why = CBT_RESYNC_NONE;
  err = read_save(t, &d, &area, &bytes, &m);
  /* Checked before the attach: a write after it is tracked, one before it is not. */
  if (!err)
    err = cbt_kernel_written_sectors(d.dev.name, &written);
  if (err) {
    why = CBT_RESYNC_REBOOT;
    rpl_describe(err, detail, dn);
  } else if (written) {
    why = CBT_RESYNC_BOOT_WRITE;
    snprintf(detail, dn, "%" PRIu64 " sectors were written to the disk after boot, before tracking attached", written);
  }
  /* Attached whatever the outcome: tracked from now, so a resync starts from a known point. */
  rpl_err attach = cbt_pins_installed(t) ? RPL_OK : cbt_pins_install(t);
  if (!attach)
    attach = cbt_slot_attach(t, &d);
  if (attach) {
    rpl_describe(attach, detail, dn);
    free(area);
    return CBT_RESYNC_REBOOT; /* no attachment, no outcome: the daemon's look finds a reboot */
  }
  *acted = true;
  if (why == CBT_RESYNC_NONE && (err = restore_bits(t, &d, area, &m, &blocks))) {
    why = CBT_RESYNC_REBOOT;
    rpl_describe(err, detail, dn);
  } else if (why == CBT_RESYNC_NONE) {
    snprintf(detail, dn, "restored %" PRIu64 " changed blocks saved at shutdown", blocks);
  }
  leave_outcome(name, d.rec.uuid, d.rec.boot_id, why, detail);
  free(area);
  return why;
}

rpl_err cbt_resume_after_reboot(struct cbt *t, size_t *resumed, size_t *refused)
{
  *resumed = *refused = 0;
  char names[CBT_MAX_DEVICES][64];
  size_t n = 0;
  rpl_err err = cbt_lock(t);
  if (err)
    return err;
  if (!(err = cbt_record_list(t->state_dir, names, CBT_MAX_DEVICES, &n))) {
    for (size_t i = 0; i < n; i++) {
      char detail[RPL_DETAIL_MAX + 128] = "";
      bool acted;
      enum cbt_resync_reason why = resume_one(t, names[i], detail, sizeof detail, &acted);
      if (acted && why == CBT_RESYNC_NONE) {
        log_notice("%s: tracking resumed after a clean shutdown: %s", names[i], detail);
        (*resumed)++;
      } else if (why != CBT_RESYNC_NONE) {
        log_warn("%s: resumed without its changes (it resyncs: %s): %s", names[i], cbt_resync_reason_name(why), detail);
        (*refused)++;
      }
    }
  }
  cbt_unlock(t);
  return err;
}

bool cbt_resumed_this_boot(struct cbt *t, const struct tracked *d, enum cbt_resync_reason *why)
{
  char path[256], buf[RPL_DETAIL_MAX + 256], u[37];
  snprintf(path, sizeof path, "%s/%s", RESUME_DIR, d->rec.name);
  *why = CBT_RESYNC_REBOOT;
  if (cbt_read_small_file(path, buf, sizeof buf) != 0)
    return false;
  cbt_uuid_string(d->rec.uuid, u);
  char uuid[40] = "", boot[48] = "";
  int reason = -1, off = 0;
  if (sscanf(buf, "%39s %47s %d %n", uuid, boot, &reason, &off) < 3 || strcmp(uuid, u) ||
      strcmp(boot, d->rec.boot_id) || reason < 0 || reason > CBT_RESYNC_REASON_MAX)
    return false;
  unlink(path); /* read once: the daemon's first look in this boot */
  *why = (enum cbt_resync_reason)reason;
  if (reason != CBT_RESYNC_NONE)
    log_warn("%s: %s", d->rec.path, buf + off);
  return reason == CBT_RESYNC_NONE;
}
