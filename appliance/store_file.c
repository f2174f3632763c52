/* store_file.c - the file backend of the storage interface ("file:DIR"): the disk's image in
 * replica.c; recovery points as reflinks of it where the filesystem has them (XFS, btrfs), else as
 * undo files (undo.c) that keep what changed after each point. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uuid/uuid.h>

#include "file_io.h"
#include "replica.h"
#include "rpl_log.h"
#include "store.h"
#include "undo.h"

/* A point's kept image sits beside the live one: "<image>.cycle-N" (a reflink, or a full copy). */
#define POINT_SUFFIX ".cycle-"

/* A direct cycle while undo files are kept holds its data in memory until the undo file is synced:
 * one fdatasync per half of the stage instead of one per extent. One half fills while the other's
 * writes are in flight, made from the stage itself. */
#define STAGE_BYTES (32u << 20)
#define STAGE_EXTENTS 4096
#define HALF_BYTES (STAGE_BYTES / 2)
#define HALF_EXTENTS (STAGE_EXTENTS / 2)
#define STAGE_ALIGN 4096u /* each extent's place: its write goes O_DIRECT from there */

/* How points are kept ($RPL_FILE_POINTS; the benchmark compares them): reflinks where the filesystem
 * has them, else undo files; always undo files; always a copy of the image (a reflink where possible). */
enum point_mode { POINTS_AUTO, POINTS_UNDO, POINTS_COPY };

struct file_store {
  struct store base;
  struct replica *r;
  enum point_mode mode;
  int image_fd;          /* the image, read for the blocks an undo file keeps */
  pthread_mutex_t lock;  /* undo: the applier, and a session's direct cycle (see file_direct_begin) */
  struct undo_log *undo; /* the newest point's undo file; NULL: no point needs blocks kept */
  bool direct_undo;      /* the direct cycle in progress keeps blocks before it writes them */
  struct stage {         /* its extents held until their old blocks are durable, then written */
    uint8_t *bytes;      /* STAGE_BYTES of address space (stage_reserve), or NULL */
    unsigned cur;        /* the half being filled; the other may have writes in flight */
    struct half {
      size_t len;        /* bytes taken (each extent's rounded up to STAGE_ALIGN) */
      size_t n, sent;    /* extents held; of them, writes queued (from the first, in order) */
      bool writing;      /* sealed: its old blocks are durable, its writes go out */
      struct staged { uint64_t offset; uint32_t length; uint32_t at; bool zero; } x[HALF_EXTENTS];
    } h[2];
  } stage;
};

static enum point_mode point_mode(void)
{
  const char *m = getenv("RPL_FILE_POINTS");
  if (!m || !*m || strcmp(m, "auto") == 0)
    return POINTS_AUTO;
  if (strcmp(m, "undo") == 0)
    return POINTS_UNDO;
  if (strcmp(m, "copy") == 0)
    return POINTS_COPY;
  log_warn("RPL_FILE_POINTS=%s is not auto, undo or copy: auto is used", m);
  return POINTS_AUTO;
}

/* The replica's guard (replica.h): the blocks a cycle overwrites are kept for the newest point first. */
static rpl_err guard_note(void *ctx, uint64_t offset, uint64_t length)
{
  struct file_store *fs = ctx;
  pthread_mutex_lock(&fs->lock);
  rpl_err e = fs->undo ? undo_log_note(fs->undo, fs->image_fd, replica_size(fs->r), offset, length) : RPL_OK;
  pthread_mutex_unlock(&fs->lock);
  return e;
}

static rpl_err guard_ready(void *ctx)
{
  struct file_store *fs = ctx;
  pthread_mutex_lock(&fs->lock);
  rpl_err e = fs->undo ? undo_log_sync(fs->undo) : RPL_OK;
  pthread_mutex_unlock(&fs->lock);
  return e;
}

static struct replica *replica_of(struct store *st) { return ((struct file_store *)st)->r; }

static bool file_claims(const char *storage) { return strncmp(storage, "file:", 5) == 0; }

static void file_close(struct store *st);
static void stage_free(struct stage *sg);

static rpl_err file_open(const struct appliance_settings *s, const uint8_t disk_id[PROTO_ID_SIZE], uint64_t disk_size,
                         struct store **out)
{
  *out = NULL;
  if (!file_claims(s->storage))
    return RPL_E_INVALID_ARGUMENT;
  struct file_store *fs = calloc(1, sizeof *fs);
  if (!fs)
    return RPL_E_NOMEM;
  fs->base.ops = &store_file_ops;
  fs->image_fd = -1;
  fs->mode = point_mode();
  pthread_mutex_init(&fs->lock, NULL);
  rpl_err e = replica_open(s->storage + 5, disk_id, disk_size, &fs->r);
  if (e) {
    pthread_mutex_destroy(&fs->lock);
    free(fs);
    return rpl_fail(e, "cannot open the image in %s: %s", s->storage + 5, rpl_strerror(e));
  }
  if ((fs->image_fd = open(replica_path(fs->r), O_RDONLY | O_CLOEXEC)) < 0)
    e = rpl_fail(RPL_E_IO, "cannot open %s: %s", replica_path(fs->r), strerror(errno));
  else if ((e = undo_log_open(replica_path(fs->r), &fs->undo)))
    e = rpl_fail(e, "cannot open the undo file of the newest point of %s: %s", replica_path(fs->r), rpl_detail(e));
  if (e) {
    file_close(&fs->base);
    return e;
  }
  replica_set_guard(fs->r, &(struct replica_guard){.note = guard_note, .ready = guard_ready, .ctx = fs});
  fs->base.blank = replica_created(fs->r);
  *out = &fs->base;
  return RPL_OK;
}

static void file_close(struct store *st)
{
  if (!st)
    return;
  struct file_store *fs = (struct file_store *)st;
  replica_close(fs->r);
  undo_log_close(fs->undo);
  stage_free(&fs->stage);
  if (fs->image_fd >= 0)
    close(fs->image_fd);
  pthread_mutex_destroy(&fs->lock);
  free(fs);
}

static rpl_err file_resize(struct store *st, uint64_t disk_size) { return replica_resize(replica_of(st), disk_size); }

static void file_set_limits(struct store *st, struct rate_limit *all, struct rate_limit *agent)
{
  (void)st, (void)all, (void)agent; /* local writes: the limits are for the network */
}

/* A reflink costs nothing; without reflinks a copy costs the whole disk, an undo file what changes
 * until the next point. Once undo files are kept, every point is one (their chain serves all). */
static rpl_err file_make_point(struct store *st, uint64_t cycle, char *image_id, size_t idsz)
{
  struct file_store *fs = (struct file_store *)st;
  char path[4200];
  int n = snprintf(path, sizeof path, "%s" POINT_SUFFIX "%" PRIu64, replica_path(fs->r), cycle);
  if (n < 0 || (size_t)n >= sizeof path || (size_t)n + 8 >= idsz)
    return RPL_E_LIMIT;
  pthread_mutex_lock(&fs->lock);
  bool undo = fs->undo != NULL;
  pthread_mutex_unlock(&fs->lock);
  rpl_err e = RPL_E_UNSUPPORTED;
  if (fs->mode != POINTS_UNDO && !undo) {
    (void)unlink(path); /* a copy left by a crash before the point was recorded */
    e = fs->mode == POINTS_COPY ? replica_copy_to(fs->r, path) : replica_reflink_to(fs->r, path);
  }
  if (e != RPL_E_UNSUPPORTED) {
    if (!e)
      snprintf(image_id, idsz, "%s", path);
    return e;
  }
  pthread_mutex_lock(&fs->lock);
  e = undo_log_start(replica_path(fs->r), cycle, replica_size(fs->r), &fs->undo);
  if (!e)
    snprintf(image_id, idsz, "%s", undo_log_path(fs->undo));
  pthread_mutex_unlock(&fs->lock);
  return e;
}

/* Each cycle is reported applied as soon as the image holds it; a point's copy follows. A failed
 * copy is logged and the point goes without an image (restore then says so). */
static rpl_err file_apply_next(struct store *st, struct journal *j, const struct store_apply_cb *cb)
{
  struct journal_cycle_info info;
  rpl_err e = journal_next_pending(j, &info);
  if (e)
    return e;
  replica_set_extent_ahead(replica_of(st), cb->extent_ahead, cb->ctx);
  e = replica_apply_cycle(replica_of(st), j, info.cycle);
  replica_set_extent_ahead(replica_of(st), NULL, NULL);
  if (e)
    return e;
  bool point = info.kind == PROTO_CYCLE_RECOVERY_POINT && (!cb->image_wanted || cb->image_wanted(cb->ctx, info.cycle));
  cb->applied(cb->ctx, info.cycle, info.kind, point);
  if (!point)
    return RPL_OK;
  char id[CATALOG_MAX_SNAPSHOT_ID + 1];
  if ((e = file_make_point(st, info.cycle, id, sizeof id)))
    log_warn("cannot keep the image of recovery-point cycle %" PRIu64 ": %s", info.cycle, rpl_strerror(e));
  else
    cb->point(cb->ctx, info.cycle, id);
  return RPL_OK;
}

static rpl_err file_delete_point(struct store *st, const char *image_id)
{
  struct file_store *fs = (struct file_store *)st;
  char image[4200];
  uint64_t cycle;
  if (!undo_parse_path(image_id, image, sizeof image, &cycle))
    return unlink(image_id) == 0 || errno == ENOENT ? RPL_OK : RPL_E_IO;
  pthread_mutex_lock(&fs->lock);
  rpl_err e = undo_delete(image, cycle, strcmp(image, replica_path(fs->r)) ? &(struct undo_log *){NULL} : &fs->undo);
  pthread_mutex_unlock(&fs->lock);
  return e;
}

/* The kept copies "<image>.cycle-N" beside the image. */
static rpl_err file_list_points(struct store *st, struct store_found_point **out, size_t *count)
{
  *out = NULL;
  *count = 0;
  const char *image = replica_path(replica_of(st));
  const char *slash = strrchr(image, '/');
  char dir[4096];
  snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - image) : 1, slash ? image : ".");
  const char *base = slash ? slash + 1 : image;
  size_t blen = strlen(base);
  DIR *dp = opendir(dir);
  if (!dp)
    return RPL_E_IO;
  size_t cap = 0;
  rpl_err e = RPL_OK;
  for (struct dirent *de; !e && (de = readdir(dp));) {
    if (strncmp(de->d_name, base, blen) || strncmp(de->d_name + blen, POINT_SUFFIX, strlen(POINT_SUFFIX)))
      continue;
    const char *num = de->d_name + blen + strlen(POINT_SUFFIX);
    char *end;
    unsigned long long c = strtoull(num, &end, 10);
    if (!isdigit((unsigned char)*num) || *end || c == 0)
      continue; /* not a kept image of ours */
    if (*count == cap) {
      size_t ncap = cap ? cap * 2 : 16;
      struct store_found_point *p = ncap <= 65536 ? realloc(*out, ncap * sizeof *p) : NULL;
      if (!p) {
        e = RPL_E_NOMEM;
        break;
      }
      *out = p;
      cap = ncap;
    }
    char path[4096 + 256];
    int plen = snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
    struct store_found_point *fp = &(*out)[*count];
    if (plen < 0 || (size_t)plen >= sizeof fp->image_id)
      continue; /* a path the catalog cannot record: not one of ours */
    memset(fp, 0, sizeof *fp);
    fp->cycle = c;
    memcpy(fp->image_id, path, (size_t)plen + 1);
    struct stat sb;
    fp->time = stat(fp->image_id, &sb) == 0 ? (int64_t)sb.st_mtime : 0;
    (*count)++;
  }
  closedir(dp);
  struct undo_file *undo = NULL;
  size_t nundo = 0;
  if (!e)
    e = undo_list(image, &undo, &nundo);
  for (size_t i = 0; !e && i < nundo; i++) {
    if (*count == cap) {
      size_t ncap = cap ? cap * 2 : 16;
      struct store_found_point *p = ncap <= 65536 ? realloc(*out, ncap * sizeof *p) : NULL;
      if (!p) {
        e = RPL_E_NOMEM;
        break;
      }
      *out = p;
      cap = ncap;
    }
    struct store_found_point *fp = &(*out)[*count];
    size_t plen = strlen(undo[i].path);
    if (plen >= sizeof fp->image_id)
      continue; /* a path the catalog cannot record: not one of ours */
    memset(fp, 0, sizeof *fp);
    fp->cycle = undo[i].cycle;
    fp->time = undo[i].created;
    memcpy(fp->image_id, undo[i].path, plen + 1);
    (*count)++;
  }
  free(undo);
  if (e) {
    free(*out);
    *out = NULL;
    *count = 0;
  }
  return e;
}

/* The kept copies and undo files first: an interrupted deletion leaves the image, which names the disk. */
static rpl_err file_delete_replica(struct store *st)
{
  struct file_store *fs = (struct file_store *)st;
  pthread_mutex_lock(&fs->lock);
  undo_log_close(fs->undo);
  fs->undo = NULL;
  pthread_mutex_unlock(&fs->lock);
  struct store_found_point *points;
  size_t n;
  rpl_err e = file_list_points(st, &points, &n);
  if (e)
    return rpl_fail(e, "cannot list the kept images beside %s", replica_path(replica_of(st)));
  for (size_t i = 0; i < n && !e; i++)
    if (unlink(points[i].image_id) != 0 && errno != ENOENT)
      e = rpl_fail(RPL_E_IO, "cannot delete %s: %s", points[i].image_id, strerror(errno));
  free(points);
  const char *image = replica_path(replica_of(st));
  if (!e && unlink(image) != 0 && errno != ENOENT)
    e = rpl_fail(RPL_E_IO, "cannot delete %s: %s", image, strerror(errno));
  if (!e && (e = file_fsync_parent(image)))
    e = rpl_fail(e, "cannot make the deletion of %s durable", image);
  return e;
}

/* Any cycle may go straight in. While undo files are kept, the blocks a cycle overwrites must be
 * kept, durably, before they are: a direct cycle keeps each extent's old blocks as it comes (not
 * yet synced) and holds the extent in a half of the stage; a full half, and the commit, sync the
 * undo file once, then write what the half held, from the stage, while the other half fills. A
 * given-up cycle drops what it held; what it wrote was kept first. */
static void half_clear(struct half *h)
{
  h->len = h->n = h->sent = 0;
  h->writing = false;
}

static bool half_fits(const struct half *h, size_t need) { return h->n < HALF_EXTENTS && h->len + need <= HALF_BYTES; }

static void stage_reset(struct stage *sg)
{
  half_clear(&sg->h[0]);
  half_clear(&sg->h[1]);
  sg->cur = 0;
}

static bool file_direct_begin(struct store *st, uint64_t n, uint8_t kind, bool cache_bypass)
{
  (void)n, (void)kind, (void)cache_bypass;
  struct file_store *fs = (struct file_store *)st;
  pthread_mutex_lock(&fs->lock);
  fs->direct_undo = fs->undo != NULL;
  pthread_mutex_unlock(&fs->lock);
  stage_reset(&fs->stage);
  return true;
}

static void stage_free(struct stage *sg)
{
  if (sg->bytes)
    munmap(sg->bytes, STAGE_BYTES);
  sg->bytes = NULL;
  stage_reset(sg);
}

/* The stage's memory, reserved whole and touched as it fills, in huge pages where the kernel has
 * them: a 41 MiB cycle faulted and zeroed its 32 MiB afresh every time, a fifth of the session
 * thread's time. Kept between cycles, but given back lazily (stage_done): a fleet's disks do not
 * each hold 32 MiB the kernel wants, and a disk's next cycle reuses the pages the kernel left.
 * Nothing may be in flight from it (replica_flush first). */
static void stage_done(struct stage *sg)
{
  if (sg->bytes)
    (void)madvise(sg->bytes, STAGE_BYTES, MADV_FREE);
  stage_reset(sg);
}

static rpl_err stage_reserve(struct stage *sg)
{
  if (sg->bytes)
    return RPL_OK;
  void *p = mmap(NULL, STAGE_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED)
    return RPL_E_NOMEM;
  (void)madvise(p, STAGE_BYTES, MADV_HUGEPAGE); /* a hint: without THP, 4 KiB pages as before */
  sg->bytes = p;
  return RPL_OK;
}

static uint8_t *half_bytes(struct stage *sg, unsigned i) { return sg->bytes + (size_t)i * HALF_BYTES; }

/* Queues the writes of sealed half i, in order, from the stage: all of them when wait, else as many
 * as the replica takes without waiting. */
static rpl_err half_send(struct file_store *fs, unsigned i, bool wait)
{
  struct half *h = &fs->stage.h[i];
  while (h->writing && h->sent < h->n) {
    const struct staged *x = &h->x[h->sent];
    rpl_err e = x->zero ? replica_write_extent(fs->r, x->offset, NULL, x->length)
                        : replica_write_borrowed(fs->r, x->offset, half_bytes(&fs->stage, i) + x->at, x->length, wait);
    if (e == RPL_E_AGAIN && !wait)
      return RPL_OK;
    if (e)
      return e;
    h->sent++;
  }
  return RPL_OK;
}

/* Half i's writes all queued and back: the half is empty again. */
static rpl_err half_drain(struct file_store *fs, unsigned i)
{
  struct half *h = &fs->stage.h[i];
  rpl_err e = half_send(fs, i, true);
  rpl_err fe = h->sent ? replica_flush(fs->r) : RPL_OK;
  half_clear(h);
  return e ? e : fe;
}

/* The half being filled, when it holds anything, is sealed (every old block kept so far made
 * durable) and its writes start; the other half, written first, becomes the one filled. */
static rpl_err stage_turn(struct file_store *fs)
{
  struct stage *sg = &fs->stage;
  unsigned c = sg->cur, o = !c;
  if (!sg->h[c].n)
    return RPL_OK;
  rpl_err e = guard_ready(fs);
  if (!e)
    e = half_drain(fs, o); /* its writes before the newer half's: the same bytes land in order */
  if (e)
    return e;
  sg->h[c].writing = true;
  sg->cur = o;
  return half_send(fs, c, false);
}

/* Everything held made durable and written (queued; replica_sync waits for it). */
static rpl_err stage_flush(struct file_store *fs)
{
  struct stage *sg = &fs->stage;
  rpl_err e = stage_turn(fs);
  if (!e)
    e = half_send(fs, !sg->cur, true);
  return e;
}

/* Room for the extent in the half being filled, NULL where it would need a turn first. */
static uint8_t *stage_place(struct file_store *fs, uint32_t len)
{
  struct stage *sg = &fs->stage;
  if (!half_fits(&sg->h[sg->cur], len) || stage_reserve(sg))
    return NULL;
  return half_bytes(sg, sg->cur) + sg->h[sg->cur].len;
}

static rpl_err file_direct_extent(struct store *st, uint64_t offset, const uint8_t *raw, uint32_t len)
{
  struct file_store *fs = (struct file_store *)st;
  if (!fs->direct_undo)
    return replica_write_extent(fs->r, offset, raw, len);
  struct stage *sg = &fs->stage;
  size_t need = raw ? ((size_t)len + STAGE_ALIGN - 1) / STAGE_ALIGN * STAGE_ALIGN : 0;
  rpl_err e = RPL_OK;
  if (need > HALF_BYTES) { /* larger than a half: kept and written at once, after what was held */
    if (!(e = stage_flush(fs)) && !(e = half_drain(fs, !sg->cur)) && !(e = guard_note(fs, offset, len)) &&
        !(e = guard_ready(fs)))
      e = replica_write_extent(fs->r, offset, raw, len);
    return e;
  }
  struct half *h = &sg->h[sg->cur];
  if (!half_fits(h, need)) {
    if ((e = stage_turn(fs)))
      return e;
    h = &sg->h[sg->cur];
  }
  if (need && (e = stage_reserve(sg)))
    return e;
  if ((e = guard_note(fs, offset, len)))
    return e;
  if (raw) {
    uint8_t *at = half_bytes(sg, sg->cur) + h->len;
    if (raw != at) /* else it was read into its place (file_direct_room) */
      memcpy(at, raw, len);
  }
  h->x[h->n++] = (struct staged){offset, len, (uint32_t)h->len, raw == NULL};
  h->len += need;
  return half_send(fs, !sg->cur, false); /* the sealed half's writes, as slots come free */
}

static uint8_t *file_direct_room(struct store *st, uint64_t offset, uint32_t len)
{
  struct file_store *fs = (struct file_store *)st;
  if (!fs->direct_undo)
    return replica_room(fs->r, offset, len);
  return len % STAGE_ALIGN ? NULL : stage_place(fs, len);
}

static rpl_err file_direct_commit(struct store *st)
{
  struct file_store *fs = (struct file_store *)st;
  rpl_err e = stage_flush(fs);
  rpl_err se = replica_sync(fs->r); /* whatever was queued is back before the stage is given back */
  stage_done(&fs->stage);
  return e ? e : se;
}

static void file_direct_abort(struct store *st)
{
  struct file_store *fs = (struct file_store *)st;
  if (replica_flush(fs->r))
    log_warn("replica %s: a write of a given-up direct cycle failed (it is sent again)", replica_path(fs->r));
  stage_done(&fs->stage);
}

static rpl_err file_read(struct store *st, uint64_t offset, void *buf, size_t len)
{
  return replica_read(replica_of(st), offset, buf, len);
}

static uint64_t file_committed(struct store *st)
{
  (void)st;
  return 0;
}

static enum store_failure file_failure_kind(rpl_err e)
{
  /* A replica that cannot be written now (its filesystem full, an I/O error, memory) waits like a
   * storage that is away: the cycles stay cached and are applied once the checks pass again. Data
   * that does not check out is the disk's error. */
  return e == RPL_E_IO || e == RPL_E_NOMEM || e == RPL_E_PERMISSION ? STORE_FAILURE_STORAGE : STORE_FAILURE_RESYNC;
}

static void file_get_stats(struct store *st, struct store_stats *out)
{
  (void)st;
  memset(out, 0, sizeof *out);
}

static rpl_err file_lease_tick(struct store *st, bool *acquired_now, int64_t *sequence)
{
  (void)st;
  *acquired_now = false;
  if (sequence)
    *sequence = -1;
  return RPL_OK;
}

static bool file_lease_held(struct store *st, rpl_err *why)
{
  (void)st;
  if (why)
    *why = RPL_OK;
  return true;
}

/* ---- restore: a kept copy, read with pread by any number of threads ---------------------- */

struct file_image {
  struct store_image base;
  int fd;                /* a kept copy; -1 for an undo point */
  struct undo_view *view;
};

struct file_reader {
  struct store_reader base;
  int fd;
  struct undo_view *view;
};

static rpl_err file_image_open(const struct appliance_settings *s, const uint8_t disk_id[PROTO_ID_SIZE],
                               const char *image_id, uint64_t disk_size, struct store_image **out)
{
  (void)s, (void)disk_id, (void)disk_size;
  *out = NULL;
  struct file_image *fi = calloc(1, sizeof *fi);
  if (!fi)
    return RPL_E_NOMEM;
  fi->base.ops = &store_file_ops;
  fi->fd = -1;
  char image[4200];
  uint64_t cycle;
  if (undo_parse_path(image_id, image, sizeof image, &cycle)) {
    rpl_err e = undo_view_open(image, cycle, &fi->view);
    if (e) {
      free(fi);
      return e;
    }
    *out = &fi->base;
    return RPL_OK;
  }
  if ((fi->fd = open(image_id, O_RDONLY | O_CLOEXEC)) < 0) {
    rpl_err e = rpl_fail(RPL_E_RESTORE_NO_IMAGE, "%s (%s: %s)", rpl_strerror(RPL_E_RESTORE_NO_IMAGE), image_id,
                         strerror(errno));
    free(fi);
    return e;
  }
  *out = &fi->base;
  return RPL_OK;
}

static void file_image_close(struct store_image *img)
{
  if (!img)
    return;
  struct file_image *fi = (struct file_image *)img;
  if (fi->fd >= 0)
    close(fi->fd);
  undo_view_close(fi->view);
  free(fi);
}

static rpl_err file_reader_open(struct store_image *img, struct store_reader **out)
{
  struct file_reader *rd = calloc(1, sizeof *rd);
  if (!rd)
    return RPL_E_NOMEM;
  rd->base.ops = &store_file_ops;
  rd->fd = ((struct file_image *)img)->fd;
  rd->view = ((struct file_image *)img)->view;
  *out = &rd->base;
  return RPL_OK;
}

static void file_reader_close(struct store_reader *rd) { free(rd); }

static rpl_err file_reader_read(struct store_reader *rd, uint64_t offset, uint8_t *buf, size_t len, bool *hole)
{
  struct file_reader *fr = (struct file_reader *)rd;
  ssize_t n = (ssize_t)len;
  if (fr->view) {
    rpl_err e = undo_view_read(fr->view, offset, buf, len);
    if (e)
      return e;
  } else if ((n = pread(fr->fd, buf, len, (off_t)offset)) < 0) {
    return RPL_E_IO;
  } else {
    memset(buf + n, 0, len - (size_t)n);
  }
  *hole = len == 0 || (buf[0] == 0 && memcmp(buf, buf + 1, len - 1) == 0); /* all zeros */
  return RPL_OK;
}

/* The replica directory is made now and recorded absolute, so the daemon finds it whatever its cwd. */
static rpl_err file_configure(const char *storage, struct appliance_settings *s, char *summary, size_t summary_size)
{
  const char *dir = storage + 5;
  if (!*dir)
    return rpl_fail(RPL_E_CONFIG, "file: needs a directory (file:/var/lib/replicas)");
  if (mkdir(dir, 0700) != 0 && errno != EEXIST)
    return rpl_fail(RPL_E_CONFIG, "cannot create the replica directory %s: %s", dir, strerror(errno));
  char abs[PATH_MAX];
  if (!realpath(dir, abs))
    return rpl_fail(RPL_E_CONFIG, "replica directory %s: %s", dir, strerror(errno));
  snprintf(s->storage, sizeof s->storage, "file:%s", abs);
  snprintf(summary, summary_size, "storage: local replica directory %s", abs);
  return RPL_OK;
}

static void file_print_settings(const struct appliance_settings *s, FILE *out)
{
  (void)s, (void)out; /* the summary said it all: a local directory */
}

static void file_describe(const struct appliance_settings *s, char *out, size_t outsz)
{
  snprintf(out, outsz, "%s", s->storage);
}

const struct store_ops store_file_ops = {
  .name = "file replica",
  .kind = "file",
  .claims = file_claims,
  .configure = file_configure,
  .print_settings = file_print_settings,
  .check = prereq_check_file_storage,
  .opens_after_checks = false,
  .leased = false,
  .describe = file_describe,
  .open = file_open,
  .close = file_close,
  .resize = file_resize,
  .set_limits = file_set_limits,
  .apply_next = file_apply_next,
  .make_point = file_make_point,
  .delete_point = file_delete_point,
  .delete_replica = file_delete_replica,
  .list_points = file_list_points,
  .direct_begin = file_direct_begin,
  .direct_extent = file_direct_extent,
  .direct_room = file_direct_room,
  .direct_commit = file_direct_commit,
  .direct_abort = file_direct_abort,
  .read = file_read,
  .committed = file_committed,
  .failure_kind = file_failure_kind,
  .get_stats = file_get_stats,
  .lease_tick = file_lease_tick,
  .lease_held = file_lease_held,
  .image_open = file_image_open,
  .image_close = file_image_close,
  .reader_open = file_reader_open,
  .reader_close = file_reader_close,
  .reader_read = file_reader_read,
  .image_kind = "kept image",
};
