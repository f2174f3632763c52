/* replica.c - the file replica: sparse image per disk, verified apply of journal cycles, cycles written directly. */
#include "replica.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <liburing.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uuid/uuid.h>
#include <xxhash.h>
#include <zstd.h>

#include "file_io.h"
#include "rpl_clock.h"
#include "rpl_log.h"

#define COPY_CHUNK (1u << 20)
#define ZERO_BLOCK (64u << 10)
#define STASH_MAX_BYTES (64u << 20) /* a cycle this small is decompressed once: kept from the check to the write */
#define STASH_MAX_EXTENTS 65536
#define STASH_KEEP_BYTES (1u << 20) /* a stash grown past this is freed after its cycle: every disk has one, and
                                       several apply workers would each keep a large one for nothing between
                                       cycles; a small one is kept, as most cycles need one that size again */
#define DIRECT_ALIGN 4096u
#define WRITEBACK_KICK (8ull << 20) /* buffered direct writes: start writeback this often, so the final fdatasync is short */
#define DIRECT_SLOTS 32 /* writes in flight at once: a delta's small extents keep a disk's queue full */
#define DIRECT_RING_BYTES (8u << 20) /* their copies, in one buffer per disk: 8 extents of the largest size */
#define REAPER_STOP UINT64_MAX       /* the tag of the NOP that ends a replica's reaper */

static const uint8_t zero_block[ZERO_BLOCK];

struct replica {
  char *path;
  int fd;
  uint64_t size;
  bool created;       /* replica_open made the image */
  ZSTD_DCtx *dctx;    /* reused for every zstd extent */
  journal_extent_ahead_fn ahead; /* told of each checked extent before the cycle is written */
  void *ahead_ctx;
  struct replica_guard guard; /* told of a cycle's ranges before it is written */
  uint8_t *raw;       /* decompression buffer, grows to at most PROTO_MAX_EXTENT */
  size_t raw_alloc;
  XXH3_state_t *hash; /* for zero extents: hashes the zeros without a buffer of their size */
  uint32_t zero_len;  /* length whose zero hash is in zero_digest (0: none yet) */
  uint8_t zero_digest[PROTO_HASH_SIZE];
  uint64_t unkicked;  /* bytes the writer thread wrote buffered since writeback was last started */
  int dfd;            /* the image opened O_DIRECT for direct cycles: -1 not yet, -2 not possible */
  /* Direct cycles' writes, in flight while the next extents are received: the session thread copies
   * each into the ring buffer and submits it; a reaper thread of the replica takes the completions.
   * Aligned extents are written O_DIRECT (no page cache: a delta's scattered 4 KiB blocks would each
   * cost a page and its buffer heads, and the fdatasync their writeback), others buffered. */
  struct {
    bool started;     /* the io_uring and the reaper exist (false: writes are made synchronously) */
    bool broken;      /* io_uring could not be set up: synchronous from then on */
    bool reaper_gone; /* the ring failed under the reaper (lock held): synchronous from then on */
    pthread_t reaper;
    struct io_uring ring;
    pthread_mutex_t lock; /* what follows */
    pthread_cond_t cv;
    struct direct_slot {
      uint64_t offset;
      uint32_t len;
      uint32_t at, span; /* its bytes at buf + at; span: those plus the ring's end it skipped */
      const uint8_t *data; /* where its bytes are: buf + at, or the caller's (replica_write_borrowed) */
      bool buffered;  /* unaligned: through the page cache */
      bool done;
    } slot[DIRECT_SLOTS];
    unsigned head, count; /* writes submitted and not yet retired, in order; retired as the oldest finish */
    uint8_t *buf;     /* DIRECT_RING_BYTES, aligned */
    uint32_t tail, used; /* next free byte; bytes held by the slots */
    int err;          /* errno of the first failed write (0: none) */
    /* replica_room's: ring bytes taken for the next write, which the caller fills in place. Held in
     * used and tail like a slot's, but no slot yet; the next write takes it, or gives it back. */
    struct { uint8_t *ptr; uint64_t offset; uint32_t len, at, span, tail_before; } room;
  } w;
  struct stash {      /* the checked raw bytes of a small cycle, written without a second pass */
    uint8_t *bytes;   /* grows to at most STASH_MAX_BYTES */
    size_t len, cap;
    struct stash_extent { uint64_t offset; uint32_t length; bool zero; } *x; /* at most STASH_MAX_EXTENTS */
    size_t n, xcap;
    bool overflow;    /* the cycle did not fit: the write pass reads the journal again */
  } st;
};

static rpl_err sys_err(const char *what, const char *path)
{
  int saved = errno;
  rpl_err e = saved == ENOMEM                      ? RPL_E_NOMEM
              : saved == EACCES || saved == EPERM ? RPL_E_PERMISSION
              : saved == EEXIST                   ? RPL_E_EXISTS
              : saved == ENOENT                   ? RPL_E_NOT_FOUND
                                                  : RPL_E_IO;
  return rpl_fail(e, "replica: %s %s: %s", what, path, strerror(saved));
}

rpl_err replica_open(const char *dir, const uint8_t disk_id[PROTO_ID_SIZE], uint64_t disk_size, struct replica **out)
{
  *out = NULL;
  if (!dir || !*dir || disk_size % 512)
    return RPL_E_INVALID_ARGUMENT;
  if (mkdir(dir, 0700) != 0 && errno != EEXIST)
    return sys_err("cannot create directory", dir);
  struct replica *r = calloc(1, sizeof *r);
  if (!r)
    return RPL_E_NOMEM;
  r->fd = -1;
  r->dfd = -1;
  pthread_mutex_init(&r->w.lock, NULL);
  pthread_cond_init(&r->w.cv, NULL);
  char uuid[37];
  uuid_unparse_lower(disk_id, uuid);
  size_t n = strlen(dir) + 1 + sizeof uuid + sizeof ".img";
  rpl_err e = RPL_OK;
  if (!(r->path = malloc(n)) || !(r->dctx = ZSTD_createDCtx()) || !(r->hash = XXH3_createState())) {
    e = RPL_E_NOMEM;
    goto fail;
  }
  snprintf(r->path, n, "%s/%s.img", dir, uuid);
  bool created = false;
  r->fd = open(r->path, O_RDWR | O_CLOEXEC);
  if (r->fd < 0 && errno == ENOENT) {
    r->fd = open(r->path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    created = r->created = true;
  }
  struct stat st;
  if (r->fd < 0 || fstat(r->fd, &st) != 0) {
    e = sys_err("cannot open image", r->path);
    goto fail;
  }
  r->size = (uint64_t)st.st_size;
  if ((e = replica_resize(r, disk_size)))
    goto fail;
  if (created) { /* the new name must survive a crash as well as the data written into it */
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fsync(dfd) != 0) {
      e = sys_err("cannot fsync directory", dir);
      if (dfd >= 0)
        close(dfd);
      goto fail;
    }
    close(dfd);
  }
  *out = r;
  return RPL_OK;
fail:
  replica_close(r);
  return e;
}

void replica_close(struct replica *r)
{
  if (!r)
    return;
  rpl_err e = replica_flush(r);
  (void)e;
  if (r->fd >= 0)
    close(r->fd);
  ZSTD_freeDCtx(r->dctx);
  XXH3_freeState(r->hash);
  free(r->raw);
  free(r->st.bytes);
  if (r->dfd >= 0)
    close(r->dfd);
  if (r->w.started) {
    pthread_mutex_lock(&r->w.lock);
    bool gone = r->w.reaper_gone;
    pthread_mutex_unlock(&r->w.lock);
    if (!gone) {
      struct io_uring_sqe *sqe = io_uring_get_sqe(&r->w.ring); /* the ring is empty after the flush */
      io_uring_prep_nop(sqe);
      io_uring_sqe_set_data64(sqe, REAPER_STOP);
      io_uring_submit(&r->w.ring);
    }
    pthread_join(r->w.reaper, NULL);
    io_uring_queue_exit(&r->w.ring);
  }
  free(r->w.buf);
  pthread_cond_destroy(&r->w.cv);
  pthread_mutex_destroy(&r->w.lock);
  free(r->st.x);
  free(r->path);
  free(r);
}

rpl_err replica_resize(struct replica *r, uint64_t disk_size)
{
  if (disk_size % 512 || disk_size > (uint64_t)INT64_MAX)
    return RPL_E_INVALID_ARGUMENT;
  if (disk_size < r->size) {
    log_err("replica %s: disk is %" PRIu64 " bytes, image %" PRIu64, r->path, disk_size, r->size);
    return RPL_E_REPLICA_SHRINK;
  }
  if (disk_size == r->size)
    return RPL_OK;
  if (ftruncate(r->fd, (off_t)disk_size) != 0 || fdatasync(r->fd) != 0)
    return sys_err("cannot grow image", r->path);
  r->size = disk_size;
  return RPL_OK;
}

uint64_t replica_size(const struct replica *r) { return r->size; }
const char *replica_path(const struct replica *r) { return r->path; }
bool replica_created(const struct replica *r) { return r->created; }

/* ---- applying ----------------------------------------------------------------------------- */

static rpl_err raw_buffer(struct replica *r, size_t len)
{
  if (len > PROTO_MAX_EXTENT)
    return RPL_E_LIMIT;
  if (len > r->raw_alloc) {
    uint8_t *p = realloc(r->raw, len);
    if (!p)
      return RPL_E_NOMEM;
    r->raw = p;
    r->raw_alloc = len;
  }
  return RPL_OK;
}

static void zero_hash(struct replica *r, uint32_t len, uint8_t out[PROTO_HASH_SIZE])
{
  /* Zero extents mostly share one length (the agent's extent size): hash those zeros once. */
  if (len && len == r->zero_len) {
    memcpy(out, r->zero_digest, PROTO_HASH_SIZE);
    return;
  }
  XXH3_128bits_reset(r->hash);
  for (uint32_t done = 0; done < len;) {
    uint32_t n = len - done < ZERO_BLOCK ? len - done : ZERO_BLOCK;
    XXH3_128bits_update(r->hash, zero_block, n);
    done += n;
  }
  XXH128_canonical_t c;
  XXH128_canonicalFromHash(&c, XXH3_128bits_digest(r->hash));
  memcpy(out, c.digest, PROTO_HASH_SIZE);
  memcpy(r->zero_digest, c.digest, PROTO_HASH_SIZE);
  r->zero_len = len;
}

/* The raw bytes of extent x (NULL for a zero extent), checked against its hash. */
static rpl_err extent_raw(struct replica *r, uint64_t cycle, const struct journal_extent *x, const uint8_t **raw)
{
  uint8_t h[PROTO_HASH_SIZE];
  *raw = NULL;
  if (x->offset > r->size || x->length > r->size - x->offset) {
    log_err("replica %s: cycle %" PRIu64 " writes %" PRIu32 " bytes at %" PRIu64 ", past the image's %" PRIu64,
            r->path, cycle, x->length, x->offset, r->size);
    return RPL_E_EXTENT_RANGE;
  }
  switch (x->codec) {
  case PROTO_CODEC_NONE:
    if (x->payload_len != x->length)
      return RPL_E_JOURNAL_CORRUPT;
    *raw = x->payload;
    break;
  case PROTO_CODEC_ZSTD: {
    rpl_err e = raw_buffer(r, x->length);
    if (e)
      return e;
    size_t got = ZSTD_decompressDCtx(r->dctx, r->raw, x->length, x->payload, x->payload_len);
    if (ZSTD_isError(got) || got != x->length) {
      log_err("replica %s: cycle %" PRIu64 ": extent at %" PRIu64 " does not decompress to %" PRIu32 " bytes (%s)",
              r->path, cycle, x->offset, x->length, ZSTD_isError(got) ? ZSTD_getErrorName(got) : "short");
      return RPL_E_EXTENT_DECOMPRESS;
    }
    *raw = r->raw;
    break;
  }
  case PROTO_CODEC_ZERO:
    zero_hash(r, x->length, h);
    goto compare;
  default:
    return RPL_E_JOURNAL_CORRUPT;
  }
  proto_hash128(*raw, x->length, h);
compare:
  if (memcmp(h, x->hash, PROTO_HASH_SIZE)) {
    log_err("replica %s: cycle %" PRIu64 ": extent at %" PRIu64 " (%" PRIu32 " bytes) fails its xxh3-128 check",
            r->path, cycle, x->offset, x->length);
    return RPL_E_REPLICA_HASH;
  }
  return RPL_OK;
}

static rpl_err write_zeros(struct replica *r, uint64_t off, uint32_t len)
{
  /* A hole reads as zeros and costs no space; filesystems without hole punching get zeros written. */
  if (fallocate(r->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, len) == 0)
    return RPL_OK;
  if (errno != EOPNOTSUPP && errno != ENOSYS)
    return sys_err("cannot punch a hole in", r->path);
  for (uint32_t done = 0; done < len;) {
    uint32_t n = len - done < ZERO_BLOCK ? len - done : ZERO_BLOCK;
    if (file_pwrite_full(r->fd, zero_block, n, off + done))
      return sys_err("cannot write", r->path);
    done += n;
  }
  return RPL_OK;
}

/* Keeps a checked extent for the write (raw NULL: zeros), unless the cycle outgrew the stash. */
static void stash_add(struct stash *st, uint64_t offset, uint32_t length, const uint8_t *raw)
{
  if (st->overflow)
    return;
  size_t need = raw ? length : 0;
  if (st->n == STASH_MAX_EXTENTS || need > STASH_MAX_BYTES - st->len) {
    st->overflow = true;
    return;
  }
  if (st->n == st->xcap) {
    size_t cap = st->xcap ? st->xcap * 2 : 1024;
    struct stash_extent *p = realloc(st->x, cap * sizeof *p);
    if (!p) {
      st->overflow = true;
      return;
    }
    st->x = p;
    st->xcap = cap;
  }
  if (st->len + need > st->cap) {
    size_t cap = st->cap ? st->cap : (1u << 20);
    while (cap < st->len + need)
      cap *= 2;
    if (cap > STASH_MAX_BYTES)
      cap = STASH_MAX_BYTES;
    uint8_t *p = realloc(st->bytes, cap);
    if (!p) {
      st->overflow = true;
      return;
    }
    st->bytes = p;
    st->cap = cap;
  }
  if (raw)
    memcpy(st->bytes + st->len, raw, length);
  st->len += need;
  st->x[st->n++] = (struct stash_extent){offset, length, raw == NULL};
}

static rpl_err write_extent(struct replica *r, uint64_t offset, uint32_t length, const uint8_t *raw)
{
  if (raw)
    return file_pwrite_full(r->fd, raw, length, offset) ? sys_err("cannot write", r->path) : RPL_OK;
  return write_zeros(r, offset, length);
}

/* One pass over the cycle: check every extent; when write is set, also write it; when stash is
 * set, keep the checked bytes for write_stash. */
static rpl_err apply_pass(struct replica *r, struct journal_reader *rd, uint64_t n, bool write, bool stash)
{
  for (;;) {
    struct journal_extent x;
    bool end;
    rpl_err e = journal_reader_next(rd, &x, &end);
    if (e || end)
      return e;
    const uint8_t *raw;
    if ((e = extent_raw(r, n, &x, &raw)))
      return e;
    if (!write && r->ahead && (e = r->ahead(r->ahead_ctx, x.offset, x.length)))
      return e;
    if (!write && r->guard.note && (e = r->guard.note(r->guard.ctx, x.offset, x.length)))
      return e;
    if (stash)
      stash_add(&r->st, x.offset, x.length, raw);
    if (write && (e = write_extent(r, x.offset, x.length, raw)))
      return e;
  }
}

void replica_set_extent_ahead(struct replica *r, journal_extent_ahead_fn ahead, void *ctx)
{
  r->ahead = ahead;
  r->ahead_ctx = ctx;
}

void replica_set_guard(struct replica *r, const struct replica_guard *g)
{
  if (g)
    r->guard = *g;
  else
    memset(&r->guard, 0, sizeof r->guard);
}

rpl_err replica_apply_cycle(struct replica *r, struct journal *j, uint64_t n)
{
  struct journal_usage u;
  journal_get_usage(j, &u);
  if (n <= u.last_applied)
    return RPL_OK;
  if (n != u.last_applied + 1)
    return RPL_E_CYCLE_ORDER;
  struct journal_reader *rd;
  rpl_err e = journal_reader_open(j, n, &rd);
  if (e)
    return e;
  /* Check all before writing any, so a bad extent leaves the image as it was. A small cycle is
   * written from the bytes the check decompressed; a large one by a second pass that re-reads
   * payloads under their CRC32C, so it writes exactly the bytes the first pass checked. */
  struct stash *st = &r->st;
  st->len = st->n = 0;
  st->overflow = false;
  if ((e = apply_pass(r, rd, n, false, true)) == RPL_OK && r->guard.ready)
    e = r->guard.ready(r->guard.ctx);
  if (e == RPL_OK) {
    if (!st->overflow) {
      size_t pos = 0;
      for (size_t i = 0; i < st->n && !e; i++) {
        e = write_extent(r, st->x[i].offset, st->x[i].length, st->x[i].zero ? NULL : st->bytes + pos);
        pos += st->x[i].zero ? 0 : st->x[i].length;
      }
    } else if ((e = journal_reader_rewind(rd)) == RPL_OK) {
      e = apply_pass(r, rd, n, true, false);
    }
  }
  journal_reader_close(rd);
  if (st->cap > STASH_KEEP_BYTES) {
    free(st->bytes);
    free(st->x);
    *st = (struct stash){0};
  }
  if (e)
    return e;
  if (fdatasync(r->fd) != 0)
    return sys_err("fdatasync of", r->path);
  return journal_mark_applied(j, n);
}

/* ---- direct cycles ---------------------------------------------------------------------------- */

static void retire_done(struct replica *r)
{
  while (r->w.count && r->w.slot[r->w.head].done) {
    r->w.used -= r->w.slot[r->w.head].span;
    r->w.head = (r->w.head + 1) % DIRECT_SLOTS;
    r->w.count--;
  }
  pthread_cond_broadcast(&r->w.cv);
}

/* A write's result made whole: a short one is finished synchronously, and an O_DIRECT one the
 * filesystem refused (EINVAL: it wants another alignment there) is made through the page cache.
 * res: bytes written or -errno. Returns an errno (0: written). */
static int complete_write(struct replica *r, const uint8_t *data, uint64_t offset, uint32_t len, bool buffered, int res)
{
  bool cached = buffered;
  if (res == -EINVAL && !buffered) {
    cached = true;
    res = file_pwrite_full(r->fd, data, len, offset) == RPL_OK ? (int)len : -(errno ? errno : EIO);
  } else if (res >= 0 && (uint32_t)res < len) {
    uint32_t done = (uint32_t)res;
    res = file_pwrite_full(r->fd, data + done, len - done, offset + done) == RPL_OK ? (int)len : -(errno ? errno : EIO);
  }
  if (res < 0)
    return -res;
  if (cached && (r->unkicked += len) >= WRITEBACK_KICK) {
    /* Asynchronous: the disk writes while the next extents arrive; durability is replica_sync's. */
    (void)sync_file_range(r->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
    r->unkicked = 0;
  }
  return 0;
}

static void *direct_reaper(void *arg)
{
  struct replica *r = arg;
  for (;;) {
    struct io_uring_cqe *cqe;
    int rc = io_uring_wait_cqe(&r->w.ring, &cqe);
    if (rc == -EINTR)
      continue;
    if (rc < 0) { /* the ring itself failed: nothing more will complete */
      pthread_mutex_lock(&r->w.lock);
      r->w.err = r->w.err ? r->w.err : -rc;
      r->w.reaper_gone = true;
      for (unsigned i = 0; i < r->w.count; i++)
        r->w.slot[(r->w.head + i) % DIRECT_SLOTS].done = true;
      retire_done(r);
      pthread_mutex_unlock(&r->w.lock);
      return NULL;
    }
    uint64_t tag = io_uring_cqe_get_data64(cqe);
    int res = cqe->res;
    io_uring_cqe_seen(&r->w.ring, cqe);
    if (tag == REAPER_STOP)
      return NULL;
    struct direct_slot *sl = &r->w.slot[tag];
    int err = complete_write(r, sl->data, sl->offset, sl->len, sl->buffered, res);
    pthread_mutex_lock(&r->w.lock);
    if (err && !r->w.err)
      r->w.err = err;
    sl->done = true;
    retire_done(r);
    pthread_mutex_unlock(&r->w.lock);
  }
}

static rpl_err write_failed(struct replica *r, int err)
{
  errno = err;
  return sys_err("cannot write", r->path);
}

/* The io_uring and its reaper, made on the first direct write; false: writes stay synchronous. */
static bool direct_start(struct replica *r)
{
  if (r->w.started || r->w.broken)
    return r->w.started;
  r->w.broken = true;
  if (posix_memalign((void **)&r->w.buf, DIRECT_ALIGN, DIRECT_RING_BYTES) != 0) {
    r->w.buf = NULL;
    return false;
  }
  int rc = io_uring_queue_init(DIRECT_SLOTS + 1, &r->w.ring, 0); /* + 1: the reaper's stop */
  if (rc < 0) {
    log_warn("replica %s: no io_uring (%s): direct cycles are written one extent at a time", r->path, strerror(-rc));
    return false;
  }
  if (pthread_create(&r->w.reaper, NULL, direct_reaper, r) != 0) {
    io_uring_queue_exit(&r->w.ring);
    return false;
  }
  r->w.started = true;
  r->w.broken = false;
  return true;
}

/* A write made at once, where there is no io_uring. */
static rpl_err write_now(struct replica *r, uint64_t offset, const void *raw, uint32_t len, bool buffered)
{
  ssize_t n = pwrite(buffered ? r->fd : r->dfd, raw, len, (off_t)offset);
  int err = complete_write(r, raw, offset, len, buffered, n < 0 ? -errno : (int)n);
  return err ? write_failed(r, err) : RPL_OK;
}

/* Gives back the ring bytes of a room no write took (its caller gave the extent up). Under w.lock. */
static void drop_room(struct replica *r)
{
  if (!r->w.room.ptr)
    return;
  r->w.used -= r->w.room.span;
  r->w.tail = r->w.room.tail_before;
  r->w.room.ptr = NULL;
  pthread_cond_broadcast(&r->w.cv);
}

/* Takes len bytes of the ring for the next write (waiting for room): their place in *at, the ring
 * bytes they hold in *span. The errno of an earlier failed write instead, or -1 when the reaper is
 * gone (nothing would take the completion). Under w.lock. */
static int take_ring(struct replica *r, uint32_t len, uint32_t *at, uint32_t *span)
{
  uint32_t need = (len + DIRECT_ALIGN - 1) / DIRECT_ALIGN * DIRECT_ALIGN;
  drop_room(r);
  for (;;) {
    if (r->w.reaper_gone)
      return -1;
    *at = r->w.count ? r->w.tail : 0;
    *span = need;
    if (*at + need > DIRECT_RING_BYTES) { /* does not fit before the end: from the start, skipping the rest */
      *span += DIRECT_RING_BYTES - *at;
      *at = 0;
    }
    if (r->w.err)
      return r->w.err;
    if (r->w.count < DIRECT_SLOTS && r->w.used + *span <= DIRECT_RING_BYTES)
      break;
    pthread_cond_wait(&r->w.cv, &r->w.lock);
  }
  r->w.used += *span;
  r->w.tail = *at + need;
  return 0;
}

/* A slot for a write from the caller's bytes (no ring bytes), waiting for one when wait; 1 when
 * none is free and !wait. The errno of an earlier failed write instead, or -1 when the reaper is
 * gone. Under w.lock. */
static int take_slot(struct replica *r, bool wait)
{
  for (;;) {
    if (r->w.reaper_gone)
      return -1;
    if (r->w.err)
      return r->w.err;
    if (r->w.count < DIRECT_SLOTS)
      return 0;
    if (!wait)
      return 1;
    pthread_cond_wait(&r->w.cv, &r->w.lock);
  }
}

/* Submits the extent's write: from raw itself when borrowed (the caller keeps it until the write is
 * back), else from the ring, copied into it (waiting for room) unless raw is the room replica_room
 * gave for it. A borrowed write finds no free slot and !wait: RPL_E_AGAIN, nothing queued. */
static rpl_err queue_direct(struct replica *r, uint64_t offset, const void *raw, uint32_t len, bool buffered,
                            bool borrowed, bool wait)
{
  if (!direct_start(r))
    return write_now(r, offset, raw, len, buffered);
  pthread_mutex_lock(&r->w.lock);
  uint32_t at = 0, span = 0;
  bool in_room = !borrowed && raw == r->w.room.ptr && offset == r->w.room.offset && len == r->w.room.len &&
                 !r->w.err && !r->w.reaper_gone;
  int err = 0;
  if (borrowed) {
    if ((err = take_slot(r, wait)) == 1) {
      pthread_mutex_unlock(&r->w.lock);
      return RPL_E_AGAIN;
    }
  } else if (in_room) {
    at = r->w.room.at;
    span = r->w.room.span;
    r->w.room.ptr = NULL;
  } else {
    err = take_ring(r, len, &at, &span);
  }
  unsigned idx = (r->w.head + r->w.count) % DIRECT_SLOTS;
  pthread_mutex_unlock(&r->w.lock);
  if (err < 0) /* the reaper is gone, nothing would take the completion: written at once */
    return write_now(r, offset, raw, len, buffered);
  if (err)
    return write_failed(r, err);
  /* Only this thread adds, so the slot and its bytes stay free while they are filled unlocked. */
  struct direct_slot *sl = &r->w.slot[idx];
  const uint8_t *data = borrowed ? raw : r->w.buf + at;
  if (!borrowed && !in_room)
    memcpy(r->w.buf + at, raw, len);
  *sl = (struct direct_slot){.offset = offset, .len = len, .at = at, .span = span, .data = data, .buffered = buffered};
  struct io_uring_sqe *sqe = io_uring_get_sqe(&r->w.ring); /* never NULL: one entry per slot, and the stop's */
  io_uring_prep_write(sqe, buffered ? r->fd : r->dfd, data, len, offset);
  io_uring_sqe_set_data64(sqe, idx);
  pthread_mutex_lock(&r->w.lock);
  bool gone = r->w.reaper_gone;
  if (!gone)
    r->w.count++;
  pthread_mutex_unlock(&r->w.lock);
  if (gone) /* the reaper went meanwhile: this entry is never submitted (replica_close submits nothing then) */
    return write_now(r, offset, raw, len, buffered);
  int rc;
  for (unsigned tries = 0; (rc = io_uring_submit(&r->w.ring)) == -EAGAIN || rc == -EINTR || rc == -EBUSY; tries++) {
    if (tries == 1000)
      break;
    usleep(1000); /* the kernel is short of memory for the request: a moment, as for any write */
  }
  if (rc != 1) { /* the ring cannot take work: this write failed, the cycle is sent again, later ones go at once */
    log_err("replica %s: cannot submit a write to io_uring: %s", r->path, strerror(rc < 0 ? -rc : EIO));
    pthread_mutex_lock(&r->w.lock);
    if (!r->w.err)
      r->w.err = rc < 0 ? -rc : EIO;
    sl->done = true;
    retire_done(r);
    pthread_mutex_unlock(&r->w.lock);
    return write_failed(r, rc < 0 ? -rc : EIO);
  }
  return RPL_OK;
}

/* Whether a write in flight overlaps [offset, offset+len). */
static bool queued_overlap(struct replica *r, uint64_t offset, uint32_t len)
{
  if (!r->w.started)
    return false;
  bool overlap = false;
  pthread_mutex_lock(&r->w.lock);
  for (unsigned i = 0; i < r->w.count && !overlap; i++) {
    const struct direct_slot *sl = &r->w.slot[(r->w.head + i) % DIRECT_SLOTS];
    overlap = !sl->done && sl->offset < offset + len && offset < sl->offset + sl->len;
  }
  pthread_mutex_unlock(&r->w.lock);
  return overlap;
}

/* Waits for the writes in flight when one of them overlaps [offset, offset+len). */
static rpl_err flush_if_queued(struct replica *r, uint64_t offset, uint32_t len)
{
  return queued_overlap(r, offset, len) ? replica_flush(r) : RPL_OK;
}

rpl_err replica_flush(struct replica *r)
{
  if (!r->w.started)
    return RPL_OK;
  pthread_mutex_lock(&r->w.lock);
  while (r->w.count)
    pthread_cond_wait(&r->w.cv, &r->w.lock);
  int err = r->w.err;
  r->w.err = 0;
  pthread_mutex_unlock(&r->w.lock);
  return err ? write_failed(r, err) : RPL_OK;
}

/* The image's O_DIRECT descriptor, opened on first use; false where the filesystem refuses it. */
static bool open_direct(struct replica *r)
{
  if (r->dfd == -1) {
    r->dfd = open(r->path, O_WRONLY | O_DIRECT | O_CLOEXEC);
    if (r->dfd < 0)
      r->dfd = -2;
  }
  return r->dfd >= 0;
}

uint8_t *replica_room(struct replica *r, uint64_t offset, uint32_t len)
{
  if (offset > r->size || len > r->size - offset || len > PROTO_MAX_EXTENT || offset % DIRECT_ALIGN ||
      len % DIRECT_ALIGN || !open_direct(r) || !direct_start(r))
    return NULL;
  pthread_mutex_lock(&r->w.lock);
  drop_room(r); /* first: the tail it gives back is the one this room restores */
  uint32_t tail_before = r->w.tail, at, span;
  uint8_t *room = NULL;
  if (take_ring(r, len, &at, &span) == 0) {
    room = r->w.buf + at;
    r->w.room.ptr = room;
    r->w.room.offset = offset;
    r->w.room.len = len;
    r->w.room.at = at;
    r->w.room.span = span;
    r->w.room.tail_before = tail_before;
  }
  pthread_mutex_unlock(&r->w.lock);
  return room;
}

rpl_err replica_write_extent(struct replica *r, uint64_t offset, const void *raw, uint32_t len)
{
  if (offset > r->size || len > r->size - offset) {
    log_err("replica %s: a direct cycle writes %" PRIu32 " bytes at %" PRIu64 ", past the image's %" PRIu64, r->path,
            len, offset, r->size);
    return RPL_E_EXTENT_RANGE;
  }
  /* In flight while the next extents are received and checked (up to DIRECT_SLOTS at once), O_DIRECT
   * where aligned and the image's filesystem takes it: the data goes to the disk as it comes, with
   * neither dirty pages to throttle on nor a long fdatasync at the end. Two writes of the same bytes
   * are never in flight together: the later one waits. */
  rpl_err qe = flush_if_queued(r, offset, len);
  if (qe)
    return qe;
  if (raw && len <= PROTO_MAX_EXTENT) {
    bool direct_io = open_direct(r) && offset % DIRECT_ALIGN == 0 && len % DIRECT_ALIGN == 0;
    return queue_direct(r, offset, raw, len, !direct_io, false, true);
  }
  if (!raw) { /* zeros where the image has a hole already (a new image: everywhere) cost nothing */
    off_t data = lseek(r->fd, (off_t)offset, SEEK_DATA);
    if ((data < 0 && errno == ENXIO) || (data >= 0 && (uint64_t)data >= offset + len))
      return RPL_OK;
  }
  return raw ? (file_pwrite_full(r->fd, raw, len, offset) ? sys_err("cannot write", r->path) : RPL_OK)
             : write_zeros(r, offset, len);
}

rpl_err replica_write_borrowed(struct replica *r, uint64_t offset, const void *raw, uint32_t len, bool wait)
{
  bool in_place = raw && offset <= r->size && len <= r->size - offset && len <= PROTO_MAX_EXTENT &&
                  (uintptr_t)raw % DIRECT_ALIGN == 0 && offset % DIRECT_ALIGN == 0 && len % DIRECT_ALIGN == 0 &&
                  open_direct(r) && direct_start(r);
  if (!in_place)
    return replica_write_extent(r, offset, raw, len);
  if (queued_overlap(r, offset, len)) {
    if (!wait)
      return RPL_E_AGAIN;
    rpl_err e = replica_flush(r);
    if (e)
      return e;
  }
  return queue_direct(r, offset, raw, len, false, true, wait);
}

rpl_err replica_sync(struct replica *r)
{
  uint64_t t0 = rpl_mono_ms();
  rpl_err e = replica_flush(r);
  if (e)
    return e;
  r->unkicked = 0;
  uint64_t t1 = rpl_mono_ms();
  e = fdatasync(r->fd) != 0 ? sys_err("fdatasync of", r->path) : RPL_OK;
  log_debug("replica %s: queued writes done in %" PRIu64 " ms, fdatasync in %" PRIu64 " ms", r->path, t1 - t0,
            rpl_mono_ms() - t1);
  return e;
}

rpl_err replica_apply_pending(struct replica *r, struct journal *j, uint64_t *applied)
{
  if (applied)
    *applied = 0;
  for (;;) {
    struct journal_cycle_info info;
    rpl_err e = journal_next_pending(j, &info);
    if (e == RPL_E_NOT_FOUND)
      return RPL_OK;
    if (e || (e = replica_apply_cycle(r, j, info.cycle)))
      return e;
    if (applied)
      (*applied)++;
  }
}

/* ---- reading back ------------------------------------------------------------------------- */

rpl_err replica_read(struct replica *r, uint64_t offset, void *buf, size_t len)
{
  if (offset > r->size || len > r->size - offset)
    return RPL_E_INVALID_ARGUMENT;
  size_t got;
  if (file_pread_full(r->fd, buf, len, offset, &got) || got != len)
    return sys_err("cannot read", r->path);
  return RPL_OK;
}

/* The directory entry of a new file must survive a crash as well as its data. */
static rpl_err fsync_parent(const char *path)
{
  char dir[4096];
  snprintf(dir, sizeof dir, "%s", path);
  char *slash = strrchr(dir, '/');
  if (slash)
    *slash = '\0';
  int dfd = open(slash ? (dir[0] ? dir : "/") : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  rpl_err e = dfd >= 0 && fsync(dfd) == 0 ? RPL_OK : sys_err("cannot fsync the directory of", path);
  if (dfd >= 0)
    close(dfd);
  return e;
}

/* A reflink where the filesystem has them (XFS, btrfs): the copy shares the image's blocks until
 * either is written, so it costs no data I/O however large the disk. Elsewhere (ext4: EOPNOTSUPP,
 * another filesystem: EXDEV) RPL_E_UNSUPPORTED, with nothing left behind. */
static rpl_err reflink_fd(struct replica *r, int out, const char *out_path)
{
  if (ioctl(out, FICLONE, r->fd) != 0)
    return RPL_E_UNSUPPORTED;
  rpl_err e = fsync(out) == 0 ? RPL_OK : sys_err("fsync of", out_path);
  if (!e)
    e = fsync_parent(out_path);
  if (!e)
    log_debug("replica %s: point image %s is a reflink", r->path, out_path);
  return e;
}

rpl_err replica_reflink_to(struct replica *r, const char *out_path)
{
  int out = open(out_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (out < 0)
    return sys_err("cannot create", out_path);
  rpl_err e = reflink_fd(r, out, out_path);
  close(out);
  if (e)
    (void)unlink(out_path);
  return e;
}

rpl_err replica_copy_to(struct replica *r, const char *out_path)
{
  int out = open(out_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (out < 0)
    return sys_err("cannot create", out_path);
  rpl_err e = reflink_fd(r, out, out_path);
  if (e != RPL_E_UNSUPPORTED) {
    close(out);
    if (e)
      (void)unlink(out_path);
    return e;
  }
  uint8_t *buf = malloc(COPY_CHUNK);
  e = buf ? RPL_OK : RPL_E_NOMEM;
  if (e == RPL_OK && ftruncate(out, (off_t)r->size) != 0)
    e = sys_err("cannot size", out_path);
  /* Only the data ranges: holes of the image stay holes in the copy. */
  for (uint64_t off = 0; e == RPL_OK && off < r->size;) {
    off_t data = lseek(r->fd, (off_t)off, SEEK_DATA);
    if (data < 0) {
      if (errno != ENXIO) /* ENXIO: no data after off */
        e = sys_err("cannot seek in", r->path);
      break;
    }
    off_t hole = lseek(r->fd, data, SEEK_HOLE);
    if (hole < 0) {
      e = sys_err("cannot seek in", r->path);
      break;
    }
    for (uint64_t pos = (uint64_t)data; e == RPL_OK && pos < (uint64_t)hole;) {
      size_t want = (uint64_t)hole - pos < COPY_CHUNK ? (size_t)((uint64_t)hole - pos) : COPY_CHUNK, got;
      if (file_pread_full(r->fd, buf, want, pos, &got) || got != want)
        e = sys_err("cannot read", r->path);
      else if (file_pwrite_full(out, buf, want, pos))
        e = sys_err("cannot write", out_path);
      pos += want;
    }
    off = (uint64_t)hole;
  }
  if (e == RPL_OK && fdatasync(out) != 0)
    e = sys_err("fdatasync of", out_path);
  if (e == RPL_OK) /* durable: a kept point image is not read again soon, its pages go */
    (void)posix_fadvise(out, 0, 0, POSIX_FADV_DONTNEED);
  close(out);
  free(buf);
  if (!e)
    e = fsync_parent(out_path);
  if (e)
    (void)unlink(out_path);
  return e;
}

rpl_err replica_compare(struct replica *r, const char *path, uint64_t *first_difference)
{
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return sys_err("cannot open", path);
  uint8_t *a = malloc(COPY_CHUNK), *b = malloc(COPY_CHUNK);
  rpl_err e = a && b ? RPL_OK : RPL_E_NOMEM;
  uint64_t diff = UINT64_MAX;
  for (uint64_t off = 0; e == RPL_OK && diff == UINT64_MAX;) {
    size_t ga, gb;
    if (file_pread_full(r->fd, a, COPY_CHUNK, off, &ga) || file_pread_full(fd, b, COPY_CHUNK, off, &gb)) {
      e = sys_err("cannot read for comparison", path);
      break;
    }
    size_t common = ga < gb ? ga : gb;
    for (size_t i = 0; i < common; i++)
      if (a[i] != b[i]) {
        diff = off + i;
        break;
      }
    if (diff == UINT64_MAX && ga != gb)
      diff = off + common; /* one ends before the other */
    if (ga < COPY_CHUNK || gb < COPY_CHUNK)
      break;
    off += COPY_CHUNK;
  }
  close(fd);
  free(a);
  free(b);
  if (e)
    return e;
  if (diff == UINT64_MAX)
    return RPL_OK;
  if (first_difference)
    *first_difference = diff;
  return RPL_E_CHECKSUM;
}
