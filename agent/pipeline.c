/* pipeline.c - io_uring O_DIRECT reads into registered buffers, zstd + xxh3 on worker threads,
 * extents emitted in order from a fixed window of slots (bounded memory, adaptive zstd level). */
#include "pipeline.h"

#include <errno.h>
#include <liburing.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#include "rpl_clock.h"
#include "rpl_log.h"
#include "sent_hashes.h"

#define MAX_EXTENT_CAP   (1u << 20)
#define MAX_QUEUE_DEPTH  256u
#define MAX_WORKERS      64u
#define ADAPT_WINDOW     32u        /* extents between zstd level decisions */
#define EVENTFD_TAG      UINT64_MAX /* user_data of the worker-done eventfd read */

enum slot_state { SLOT_FREE, SLOT_READING, SLOT_QUEUED, SLOT_WORKING, SLOT_DONE };

struct slot {
  uint8_t *buf;           /* registered read buffer; after compression, holds the payload */
  size_t index;           /* extent index this slot carries */
  uint32_t filled;        /* bytes read so far (short reads are resubmitted) */
  enum slot_state state;  /* FREE/READING/DONE: main thread; QUEUED/WORKING: under lock */
  uint64_t queued_ns;
  struct proto_extent m;
  bool has_unit_hashes;
  bool zstd_tried;        /* compress_slot ran zstd on it (whether or not it was sent compressed) */
  uint64_t unit_hash[MAX_EXTENT_CAP >> SENT_UNIT_SHIFT]; /* of the raw bytes, when the run asks for them */
  rpl_err err;
};

struct pipeline {
  int fd;
  struct pipeline_config cfg;
  struct io_uring ring;
  bool ring_ok, fixed_buffers;
  uint8_t *pool;           /* nslots * max_extent, page aligned */
  struct slot *slots;
  unsigned nslots;
  int efd;
  uint64_t efd_value;      /* target of the armed eventfd read */

  pthread_mutex_t lock;
  pthread_cond_t work_cv;
  unsigned *queue;         /* ring of slot indices waiting for a worker */
  unsigned q_head, q_len;
  bool stopping;
  pthread_t *threads;
  unsigned nthreads;
  uint64_t queue_wait_ns;  /* sum over extents of time spent waiting for a worker */

  _Atomic int level;
  int level_streak;        /* the level's last decisions in one direction (pipeline_next_level) */
  unsigned futile_hold;    /* windows left with compression off after a futile one */
  unsigned futile_next_hold; /* the hold after the next futile window: doubles while probes stay futile */
  const struct pipeline_extent *extents; /* of the run in progress */
  bool unit_hashes;                      /* of the runs to come (pipeline_unit_hashes) */
};

int pipeline_is_zero(const void *p, size_t len)
{
  const uint64_t *w = p;
  size_t n = len / 8;
  /* Four words per step with one branch: the compiler vectorises the OR. */
  size_t i = 0;
  for (; i + 4 <= n; i += 4)
    if (w[i] | w[i + 1] | w[i + 2] | w[i + 3])
      return 0;
  for (; i < n; i++)
    if (w[i])
      return 0;
  return 1;
}

size_t pipeline_split_extents(uint64_t offset, uint64_t length, uint32_t max_extent,
                              struct pipeline_extent *out, size_t cap)
{
  size_t n = 0;
  while (length) {
    if (n == cap)
      return SIZE_MAX;
    uint32_t len = length > max_extent ? max_extent : (uint32_t)length;
    out[n].offset = offset;
    out[n].length = len;
    n++;
    offset += len;
    length -= len;
  }
  return n;
}

void pipeline_set_unit_hashes(struct pipeline *p, bool on)
{
  p->unit_hashes = on;
}

const uint64_t *pipeline_unit_hashes(const struct proto_extent *m)
{
  const struct slot *s = (const struct slot *)((const char *)m - offsetof(struct slot, m));
  return s->has_unit_hashes ? s->unit_hash : NULL;
}

/* ---- workers ------------------------------------------------------------------------------ */

struct worker_arg {
  struct pipeline *p;
  ZSTD_CCtx *cctx;
  uint8_t *out;
  size_t out_cap;
  uint32_t zero_len;                 /* length whose all-zero hash is in zero_hash (0: none yet) */
  uint8_t zero_hash[PROTO_HASH_SIZE];
};

/* One hash per SENT_UNIT of the slot's raw bytes (before compression overwrites them). */
static void hash_units(struct slot *s, uint32_t length)
{
  for (uint32_t i = 0, off = 0; off < length; i++, off += SENT_UNIT)
    s->unit_hash[i] = sent_unit_hash(s->buf + off, length - off < SENT_UNIT ? length - off : SENT_UNIT);
}

static void compress_slot(struct pipeline *p, struct worker_arg *w, struct slot *s)
{
  struct proto_extent *m = &s->m;
  const struct pipeline_extent *x = &p->extents[s->index];
  memset(m, 0, sizeof *m);
  m->offset = x->offset;
  m->length = x->length;
  s->has_unit_hashes = p->unit_hashes;
  s->zstd_tried = false;
  if (s->has_unit_hashes)
    hash_units(s, x->length);
  if (pipeline_is_zero(s->buf, x->length)) { /* a half-empty disk: its zeros are not hashed again and again */
    if (w->zero_len != x->length) {
      proto_hash128(s->buf, x->length, w->zero_hash);
      w->zero_len = x->length;
    }
    memcpy(m->hash, w->zero_hash, PROTO_HASH_SIZE);
    m->codec = PROTO_CODEC_ZERO;
    return;
  }
  proto_hash128(s->buf, x->length, m->hash);
  m->codec = PROTO_CODEC_NONE;
  m->payload.ptr = s->buf;
  m->payload.len = x->length;
  int level = atomic_load(&p->level);
  if (!p->cfg.compress || level == PIPELINE_LEVEL_RAW)
    return;
  /* Worth sending compressed only if it saves at least 1/32; otherwise zstd stops early. */
  size_t limit = x->length - x->length / 32;
  s->zstd_tried = true;
  ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_compressionLevel, level);
  size_t c = ZSTD_compress2(w->cctx, w->out, limit, s->buf, x->length);
  if (!ZSTD_isError(c) && c > 0 && c < limit) {
    memcpy(s->buf, w->out, c); /* the slot's buffer carries the payload until it is emitted */
    m->codec = PROTO_CODEC_ZSTD;
    m->payload.len = (uint32_t)c;
  }
}

static void *worker_main(void *arg)
{
  struct worker_arg *w = arg;
  struct pipeline *p = w->p;
  pthread_mutex_lock(&p->lock);
  for (;;) {
    while (!p->stopping && p->q_len == 0)
      pthread_cond_wait(&p->work_cv, &p->lock);
    if (p->stopping)
      break;
    struct slot *s = &p->slots[p->queue[p->q_head]];
    p->q_head = (p->q_head + 1) % p->nslots;
    p->q_len--;
    s->state = SLOT_WORKING;
    p->queue_wait_ns += rpl_mono_ns() - s->queued_ns;
    pthread_mutex_unlock(&p->lock);

    compress_slot(p, w, s);

    pthread_mutex_lock(&p->lock);
    s->state = SLOT_DONE;
    uint64_t one = 1;
    ssize_t r = write(p->efd, &one, sizeof one); /* wakes the ring's armed eventfd read */
    (void)r;
  }
  pthread_mutex_unlock(&p->lock);
  ZSTD_freeCCtx(w->cctx);
  free(w->out);
  free(w);
  return NULL;
}

/* ---- setup -------------------------------------------------------------------------------- */

static void config_defaults(struct pipeline_config *c, const struct pipeline_config *in)
{
  *c = in ? *in : (struct pipeline_config){PIPELINE_CONFIG_DEFAULTS};
  if (!c->queue_depth)
    c->queue_depth = 32;
  if (c->queue_depth > MAX_QUEUE_DEPTH)
    c->queue_depth = MAX_QUEUE_DEPTH;
  if (!c->workers) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    c->workers = n > 0 ? (unsigned)n : 1;
  }
  if (c->workers > MAX_WORKERS)
    c->workers = MAX_WORKERS;
  if (!c->max_extent || c->max_extent > MAX_EXTENT_CAP)
    c->max_extent = MAX_EXTENT_CAP;
  if (!c->zstd_level_min && !c->zstd_level_max) {
    c->zstd_level_min = -9;
    c->zstd_level_max = 6;
  }
  if (c->zstd_level_min < ZSTD_minCLevel())
    c->zstd_level_min = ZSTD_minCLevel();
  if (c->zstd_level_max > ZSTD_maxCLevel())
    c->zstd_level_max = ZSTD_maxCLevel();
  if (c->zstd_level_max < c->zstd_level_min)
    c->zstd_level_max = c->zstd_level_min;
  /* Compression spends the source server's CPU; it starts at the cheapest setting and rises only
   * when the link proves to be the bottleneck. */
  if (!c->zstd_level_start)
    c->zstd_level_start = c->raw_floor ? PIPELINE_LEVEL_RAW : c->zstd_level_min;
  if (c->zstd_level_start == PIPELINE_LEVEL_RAW && c->raw_floor)
    return;
  if (c->zstd_level_start < c->zstd_level_min)
    c->zstd_level_start = c->zstd_level_min;
  if (c->zstd_level_start > c->zstd_level_max)
    c->zstd_level_start = c->zstd_level_max;
  if (c->zstd_level_start == 0) /* zstd's 0 is its default, 3: the nearest level inside the range */
    c->zstd_level_start = c->zstd_level_min < 0 ? -1 : 1;
}

rpl_err pipeline_create(int fd, const struct pipeline_config *cfg, struct pipeline **out)
{
  *out = NULL;
  if (cfg && (cfg->max_extent % 512))
    return RPL_E_INVALID_ARGUMENT;
  struct pipeline *p = calloc(1, sizeof *p);
  if (!p)
    return RPL_E_NOMEM;
  p->fd = fd;
  p->efd = -1;
  config_defaults(&p->cfg, cfg);
  atomic_store(&p->level, p->cfg.zstd_level_start);
  p->futile_next_hold = PIPELINE_FUTILE_HOLD_MIN;
  pthread_mutex_init(&p->lock, NULL);
  pthread_cond_init(&p->work_cv, NULL);
  rpl_err err = RPL_E_NOMEM;

  p->nslots = p->cfg.queue_depth + p->cfg.workers + 1;
  p->slots = calloc(p->nslots, sizeof *p->slots);
  p->queue = calloc(p->nslots, sizeof *p->queue);
  p->threads = calloc(p->cfg.workers, sizeof *p->threads);
  if (!p->slots || !p->queue || !p->threads ||
      posix_memalign((void **)&p->pool, 4096, (size_t)p->nslots * p->cfg.max_extent))
    goto fail;
  struct iovec *iov = calloc(p->nslots, sizeof *iov);
  if (!iov)
    goto fail;
  for (unsigned i = 0; i < p->nslots; i++) {
    p->slots[i].buf = p->pool + (size_t)i * p->cfg.max_extent;
    iov[i].iov_base = p->slots[i].buf;
    iov[i].iov_len = p->cfg.max_extent;
  }

  p->efd = eventfd(0, EFD_CLOEXEC);
  int r = p->efd < 0 ? -errno : io_uring_queue_init(p->cfg.queue_depth + 2, &p->ring, 0);
  if (r < 0) {
    free(iov);
    log_err("io_uring setup failed: %s (a kernel with io_uring enabled is required; "
            "check /proc/sys/kernel/io_uring_disabled)", strerror(-r));
    err = -r == EPERM || -r == EACCES ? RPL_E_PERMISSION : RPL_E_UNSUPPORTED;
    goto fail;
  }
  p->ring_ok = true;
  /* Registered buffers spare the kernel a page pin per read; without them (memlock limits) the
   * same reads go through plain buffers. */
  r = io_uring_register_buffers(&p->ring, iov, p->nslots);
  free(iov);
  p->fixed_buffers = r == 0;
  if (r < 0)
    log_warn("io_uring buffer registration failed (%s): reading without registered buffers",
             strerror(-r));

  for (unsigned i = 0; i < p->cfg.workers; i++) {
    struct worker_arg *w = calloc(1, sizeof *w);
    if (!w)
      goto fail;
    w->p = p;
    w->cctx = ZSTD_createCCtx();
    w->out_cap = p->cfg.max_extent;
    w->out = malloc(w->out_cap);
    if (!w->cctx || !w->out || pthread_create(&p->threads[i], NULL, worker_main, w)) {
      ZSTD_freeCCtx(w->cctx);
      free(w->out);
      free(w);
      goto fail;
    }
    p->nthreads++;
  }
  *out = p;
  return RPL_OK;
fail:
  pipeline_destroy(p);
  return err;
}

void pipeline_destroy(struct pipeline *p)
{
  if (!p)
    return;
  pthread_mutex_lock(&p->lock);
  p->stopping = true;
  pthread_cond_broadcast(&p->work_cv);
  pthread_mutex_unlock(&p->lock);
  for (unsigned i = 0; i < p->nthreads; i++)
    pthread_join(p->threads[i], NULL);
  if (p->ring_ok)
    io_uring_queue_exit(&p->ring);
  if (p->efd >= 0)
    close(p->efd);
  pthread_mutex_destroy(&p->lock);
  pthread_cond_destroy(&p->work_cv);
  free(p->pool);
  free(p->slots);
  free(p->queue);
  free(p->threads);
  free(p);
}

/* ---- the run loop (main thread) ----------------------------------------------------------- */

static void submit_read(struct pipeline *p, unsigned si)
{
  struct slot *s = &p->slots[si];
  const struct pipeline_extent *x = &p->extents[s->index];
  struct io_uring_sqe *sqe = io_uring_get_sqe(&p->ring); /* ring sized for queue_depth + 2 */
  uint32_t left = x->length - s->filled;
  if (p->fixed_buffers)
    io_uring_prep_read_fixed(sqe, p->fd, s->buf + s->filled, left, x->offset + s->filled, (int)si);
  else
    io_uring_prep_read(sqe, p->fd, s->buf + s->filled, left, x->offset + s->filled);
  io_uring_sqe_set_data64(sqe, si);
}

static void arm_eventfd(struct pipeline *p)
{
  struct io_uring_sqe *sqe = io_uring_get_sqe(&p->ring);
  io_uring_prep_read(sqe, p->efd, &p->efd_value, sizeof p->efd_value, 0);
  io_uring_sqe_set_data64(sqe, EVENTFD_TAG);
}

/* Levels as positions on a line without zstd's 0 (its default, 3): 1 and -1 are neighbours. */
static int level_position(int level) { return level > 0 ? level - 1 : level; }
static int position_level(int pos) { return pos >= 0 ? pos + 1 : pos; }

int pipeline_next_level(int level, int min, int max, bool raw_floor, uint64_t cpu_wait, uint64_t link_wait,
                        int *streak)
{
  bool up = link_wait > 2 * cpu_wait, down = cpu_wait > 2 * link_wait;
  int dir = up ? 1 : down ? -1 : 0;
  if (!dir)
    *streak = 0;
  else if ((*streak > 0 && dir > 0) || (*streak < 0 && dir < 0))
    *streak = abs(*streak) > PIPELINE_STEP_DOUBLINGS ? *streak : *streak + dir;
  else
    *streak = dir;
  if (level == PIPELINE_LEVEL_RAW)
    return up ? min : level;
  if (down && level == min && raw_floor)
    return PIPELINE_LEVEL_RAW;
  int step = dir ? 1 << (abs(*streak) - 1) : 0;
  int next = position_level(level_position(level) + dir * step);
  return next < min ? min : next > max ? max : next;
}

const char *pipeline_level_text(int level, char out[16])
{
  if (level == PIPELINE_LEVEL_RAW)
    snprintf(out, 16, "off");
  else
    snprintf(out, 16, "%d", level);
  return out;
}

static void adapt_level(struct pipeline *p, uint64_t cpu_wait, uint64_t link_wait)
{
  atomic_store(&p->level, pipeline_next_level(atomic_load(&p->level), p->cfg.zstd_level_min, p->cfg.zstd_level_max,
                                              p->cfg.raw_floor, cpu_wait, link_wait, &p->level_streak));
}

/* One run's loop state, kept together so that the loop's steps can be helpers; they are static and
 * inlined into pipeline_run, so the state stays local to it as when it was one function. */
struct run {
  size_t n, next_submit, next_emit;        /* extents: all, whose read was started, emitted */
  unsigned reads_in_flight;
  rpl_err err;
  pipeline_emit_fn emit;
  void *ctx;
  struct pipeline_stats st;
  uint64_t window_cpu_start, window_link_wait;  /* the adaptive zstd level's current window */
  uint64_t window_data, window_tried, window_saved; /* its bytes not all zero, of those zstd ran on, saved */
  unsigned window_n;
  bool eventfd_armed;
};

static rpl_err check_extents(const struct pipeline *p, const struct pipeline_extent *extents, size_t n)
{
  for (size_t i = 0; i < n; i++)
    if (extents[i].length == 0 || extents[i].length > p->cfg.max_extent || extents[i].length % 512 ||
        extents[i].offset % 512)
      return RPL_E_INVALID_ARGUMENT;
  return RPL_OK;
}

static inline bool slot_is_done(struct pipeline *p, const struct slot *s)
{
  pthread_mutex_lock(&p->lock); /* a worker sets DONE under the lock */
  bool done = s->state == SLOT_DONE;
  pthread_mutex_unlock(&p->lock);
  return done;
}

static inline void count_emitted(struct pipeline_stats *st, const struct slot *s)
{
  const struct proto_extent *m = &s->m;
  st->extents++;
  st->zstd_tried_extents += s->zstd_tried;
  st->raw_bytes += m->length;
  st->payload_bytes += m->payload.len;
  st->zero_extents += m->codec == PROTO_CODEC_ZERO;
  st->raw_extents += m->codec == PROTO_CODEC_NONE;
  st->zstd_extents += m->codec == PROTO_CODEC_ZSTD;
}

/* zstd ran on enough of a window (half of its bytes that were not all zero) to judge it. */
static bool zstd_sampled(uint64_t data_bytes, uint64_t tried_bytes)
{
  return tried_bytes && tried_bytes >= data_bytes / 2;
}

bool pipeline_compression_futile(uint64_t data_bytes, uint64_t tried_bytes, uint64_t saved_bytes)
{
  return zstd_sampled(data_bytes, tried_bytes) && saved_bytes < tried_bytes / 32;
}

/* The level follows whichever side waited more over the last ADAPT_WINDOW extents: the workers
 * (CPU-bound, go faster) or emit (link-bound, compress harder). Unless compression was futile: then
 * it is off (or at its minimum without raw_floor) for a hold of windows, whatever the link does,
 * and the next futile probe after the hold doubles it. */
static inline void adapt_at_window_end(struct pipeline *p, struct run *r)
{
  if (++r->window_n != ADAPT_WINDOW)
    return;
  pthread_mutex_lock(&p->lock);
  uint64_t cpu = p->queue_wait_ns;
  pthread_mutex_unlock(&p->lock);
  if (p->futile_hold) {
    p->futile_hold--;
  } else if (pipeline_compression_futile(r->window_data, r->window_tried, r->window_saved)) {
    atomic_store(&p->level, p->cfg.raw_floor ? PIPELINE_LEVEL_RAW : p->cfg.zstd_level_min);
    p->level_streak = 0;
    p->futile_hold = p->futile_next_hold;
    p->futile_next_hold = p->futile_next_hold >= PIPELINE_FUTILE_HOLD_MAX / 2 ? PIPELINE_FUTILE_HOLD_MAX
                                                                              : p->futile_next_hold * 2;
    r->st.futile_windows++;
  } else {
    if (zstd_sampled(r->window_data, r->window_tried))
      p->futile_next_hold = PIPELINE_FUTILE_HOLD_MIN; /* compression paid: a later futile stretch starts short */
    adapt_level(p, cpu - r->window_cpu_start, r->window_link_wait);
  }
  r->window_cpu_start = cpu;
  r->window_link_wait = 0;
  r->window_data = r->window_tried = r->window_saved = 0;
  r->window_n = 0;
}

/* Extents leave in order: the first one not compressed yet holds back those behind it. */
static inline void emit_done_in_order(struct pipeline *p, struct run *r)
{
  while (!r->err && r->next_emit < r->next_submit) {
    struct slot *s = &p->slots[r->next_emit % p->nslots];
    if (!slot_is_done(p, s))
      break;
    uint64_t t0 = rpl_mono_ns(), w0 = p->cfg.link_wait_ns ? p->cfg.link_wait_ns() : 0;
    r->err = r->emit(r->ctx, &s->m);
    uint64_t dt = rpl_mono_ns() - t0, waited = p->cfg.link_wait_ns ? p->cfg.link_wait_ns() - w0 : dt;
    r->st.emit_ns += dt;
    r->st.link_wait_ns += waited;
    r->window_link_wait += waited;
    count_emitted(&r->st, s);
    if (s->m.codec != PROTO_CODEC_ZERO) {
      r->window_data += s->m.length;
      r->window_tried += s->zstd_tried ? s->m.length : 0;
      r->window_saved += s->m.codec == PROTO_CODEC_ZSTD ? s->m.length - s->m.payload.len : 0;
    }
    s->state = SLOT_FREE;
    r->next_emit++;
    adapt_at_window_end(p, r);
  }
}

/* Slot = extent index mod nslots, so reads may run at most nslots extents ahead of emission. */
static inline void submit_reads_into_free_slots(struct pipeline *p, struct run *r)
{
  while (!r->err && r->next_submit < r->n && r->reads_in_flight < p->cfg.queue_depth &&
         r->next_submit - r->next_emit < p->nslots) {
    unsigned si = (unsigned)(r->next_submit % p->nslots);
    struct slot *s = &p->slots[si];
    s->index = r->next_submit++;
    s->filled = 0;
    s->state = SLOT_READING;
    submit_read(p, si);
    r->reads_in_flight++;
  }
}

/* A slot with a worker must not be reused or left behind when the run returns. */
static inline bool workers_busy(struct pipeline *p, const struct run *r)
{
  bool busy = false;
  pthread_mutex_lock(&p->lock);
  for (size_t i = r->next_emit; i < r->next_submit && !busy; i++) {
    enum slot_state stt = p->slots[i % p->nslots].state;
    busy = stt == SLOT_QUEUED || stt == SLOT_WORKING;
  }
  pthread_mutex_unlock(&p->lock);
  return busy;
}

static inline void queue_for_worker(struct pipeline *p, struct slot *s, unsigned si)
{
  pthread_mutex_lock(&p->lock);
  s->state = SLOT_QUEUED;
  s->queued_ns = rpl_mono_ns();
  p->queue[(p->q_head + p->q_len) % p->nslots] = si;
  p->q_len++;
  pthread_cond_signal(&p->work_cv);
  pthread_mutex_unlock(&p->lock);
}

/* A read's completion: interrupted reads and short reads are resubmitted for the rest, a failed
 * one ends the run (the first failure is the one reported), a full one goes to a worker. */
static inline void complete_read(struct pipeline *p, struct run *r, unsigned si, int res)
{
  struct slot *s = &p->slots[si];
  const struct pipeline_extent *x = &p->extents[s->index];
  if (res == -EINTR || res == -EAGAIN) {
    submit_read(p, si);
    return;
  }
  if (res <= 0) {
    if (!r->err)
      log_err("read of %u bytes at offset %llu failed: %s", x->length,
              (unsigned long long)x->offset, res ? strerror(-res) : "beyond the end of the device");
    r->err = r->err ? r->err : RPL_E_IO;
    s->state = SLOT_FREE;
    r->reads_in_flight--;
    return;
  }
  s->filled += (uint32_t)res;
  if (s->filled < x->length) {
    submit_read(p, si);
    return;
  }
  r->reads_in_flight--;
  queue_for_worker(p, s, si);
}

/* The eventfd read's completion only wakes the loop (a worker finished a slot); it is re-armed so
 * the next wait wakes again. */
static inline void reap_completions(struct pipeline *p, struct run *r)
{
  struct io_uring_cqe *cqe;
  unsigned head, seen = 0;
  io_uring_for_each_cqe(&p->ring, head, cqe) {
    seen++;
    uint64_t tag = io_uring_cqe_get_data64(cqe);
    if (tag == EVENTFD_TAG) {
      r->eventfd_armed = false;
      continue;
    }
    complete_read(p, r, (unsigned)tag, cqe->res);
  }
  io_uring_cq_advance(&p->ring, seen);
  if (!r->eventfd_armed) {
    arm_eventfd(p);
    r->eventfd_armed = true;
  }
}

/* Leaves no read of ours in the ring, so the next run (or pipeline_destroy) starts from an empty
 * one: the armed eventfd read is completed by a write of ours. */
static void retire_eventfd_read(struct pipeline *p, bool armed)
{
  if (!armed)
    return;
  uint64_t one = 1;
  ssize_t w = write(p->efd, &one, sizeof one);
  (void)w;
  io_uring_submit(&p->ring); /* the re-armed read may still sit in the submission queue */
  struct io_uring_cqe *cqe;
  while (io_uring_wait_cqe(&p->ring, &cqe) == 0) {
    uint64_t tag = io_uring_cqe_get_data64(cqe);
    io_uring_cqe_seen(&p->ring, cqe);
    if (tag == EVENTFD_TAG)
      break;
  }
}

rpl_err pipeline_run(struct pipeline *p, const struct pipeline_extent *extents, size_t n,
                     pipeline_emit_fn emit, void *ctx, struct pipeline_stats *stats)
{
  if (check_extents(p, extents, n))
    return RPL_E_INVALID_ARGUMENT;
  p->extents = extents;
  p->queue_wait_ns = 0;
  for (unsigned i = 0; i < p->nslots; i++)
    p->slots[i].state = SLOT_FREE;

  struct run r = {.n = n, .emit = emit, .ctx = ctx};
  arm_eventfd(p);
  r.eventfd_armed = true;
  for (;;) {
    emit_done_in_order(p, &r);
    submit_reads_into_free_slots(p, &r);
    bool busy = workers_busy(p, &r);
    /* Done, or failed: either way only once nothing of ours is in the ring or with a worker. */
    if ((r.err || r.next_emit == n) && r.reads_in_flight == 0 && !busy)
      break;
    int rc = io_uring_submit_and_wait(&p->ring, 1);
    if (rc < 0 && rc != -EINTR) {
      log_err("io_uring submit failed: %s", strerror(-rc));
      r.err = RPL_E_IO;
      if (r.reads_in_flight == 0 && !busy)
        break;
    }
    reap_completions(p, &r);
  }
  retire_eventfd_read(p, r.eventfd_armed);
  r.st.read_ns_waiting_workers = p->queue_wait_ns;
  r.st.zstd_level = atomic_load(&p->level);
  if (stats)
    *stats = r.st;
  return r.err;
}
