/* daemon.c - `mobility-agent run`: the session with the appliance (cycles from the tracker through
 * the read pipeline, recovery points under freeze), reconnection with backoff, and the control
 * socket that protect, checkpoint and status talk to. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <linux/fs.h>
#include <time.h>
#include <unistd.h>
#include <uuid/uuid.h>

#include "agent_state.h"
#include "cbt.h"
#include "channel.h"
#include "commands.h"
#include "conn.h"
#include "control.h"
#include "freeze.h"
#include "json_out.h"
#include "pipeline.h"
#include "progress.h"
#include "rpl_log.h"
#include "rpl_version.h"
#include "sdnotify.h"

#define HEARTBEAT_MS       10000
#define DIRTY_CHECK_MS     1000
#define DIRTY_TRIGGER      (256ull << 20) /* a backlog this large asks the appliance for a cycle now */
#define BACKOFF_MIN_MS     500
#define BACKOFF_MAX_MS     30000
#define DRAIN_BATCH        65536   /* extents per cbt_drain call */
#define MAX_POINT_REQUESTS 32
#define POINT_WAIT_MS      (30 * 60 * 1000)

enum disk_phase { PHASE_NEW, PHASE_SYNCING, PHASE_PROTECTED, PHASE_RESYNC, PHASE_ERROR };
static const char *const phase_names[] = {"announcing", "initial-sync", "protected", "resync-required", "error"};

struct disk_rt {
  enum disk_phase phase;
  bool announced;             /* DISK sent on this connection */
  uint64_t last_cycle;        /* last ACKed cycle */
  uint64_t cycles, bytes_sent, raw_bytes;
  time_t last_ack;
  uint64_t sync_done, sync_total; /* bytes of the cycle in progress */
  uint64_t sync_start_ms;     /* monotonic, when sync_done last started from 0 */
  char error[256];
  char last_point[64];
  int fd;                     /* O_DIRECT, opened on first use */
  uint64_t size;
  uint32_t sector;
};

struct point_req {
  bool used, sent, done;
  unsigned tries;             /* an inconsistent point (a resync ran) is asked for again */
  uint64_t id;
  size_t ndisks;
  size_t disks[AGENT_MAX_DISKS]; /* indexes into state.disks */
  rpl_err status;
  char point_id[64];
  uint8_t consistency;
};

struct agent {
  struct agent_state st;
  struct disk_rt rt[AGENT_MAX_DISKS];
  pthread_mutex_t lock;       /* st.disks/ndisks, rt, reqs, connected */
  pthread_cond_t changed;
  struct point_req reqs[MAX_POINT_REQUESTS];
  uint64_t next_req;
  bool connected;
  char conn_error[256];
  int wake;                   /* eventfd: new disks or point requests for the session thread */
  struct freeze_options freeze;

  atomic_int cbt_reopen;      /* tracking changed under another handle: the session reopens its own */

  /* session thread only */
  struct cbt *cbt;
  struct pipeline *pipes[AGENT_MAX_DISKS];
  SSL_CTX *ctx;
  struct conn *conn;
  struct proto_buf out;
};

static atomic_int stopping;

static void on_signal(int sig) { atomic_store(&stopping, 1); (void)sig; }

static uint64_t now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void wake_session(struct agent *a)
{
  uint64_t one = 1;
  ssize_t w = write(a->wake, &one, sizeof one);
  (void)w;
}

/* ---- sending ------------------------------------------------------------------------------ */

static rpl_err send_buf(struct agent *a)
{
  rpl_err err = conn_send(a->conn, &a->out);
  proto_buf_reset(&a->out);
  return err;
}

static rpl_err send_disk(struct agent *a, size_t i)
{
  struct disk_rt *rt = &a->rt[i];
  const struct agent_disk *d = &a->st.disks[i];
  if (rt->fd < 0) {
    rt->fd = open(d->device, O_RDONLY | O_DIRECT | O_CLOEXEC);
    if (rt->fd < 0) {
      pthread_mutex_lock(&a->lock);
      snprintf(rt->error, sizeof rt->error, "cannot open %s: %s", d->device, strerror(errno));
      rt->phase = PHASE_ERROR;
      pthread_mutex_unlock(&a->lock);
      log_err("%s", rt->error);
      return RPL_OK; /* the others go on */
    }
    uint64_t size = 0;
    int sector = 512;
    if (ioctl(rt->fd, BLKGETSIZE64, &size) != 0 || ioctl(rt->fd, BLKSSZGET, &sector) != 0) {
      pthread_mutex_lock(&a->lock);
      snprintf(rt->error, sizeof rt->error, "%s is not a block device", d->device);
      rt->phase = PHASE_ERROR;
      pthread_mutex_unlock(&a->lock);
      return RPL_OK;
    }
    rt->size = size;
    rt->sector = (uint32_t)sector;
  }
  struct proto_disk m = {.size_bytes = rt->size, .sector_size = rt->sector,
                         .name = {(const uint8_t *)d->device, (uint32_t)strlen(d->device)}};
  memcpy(m.disk_id, d->id, PROTO_ID_SIZE);
  rpl_err err = proto_encode_disk(&a->out, &m);
  if (!err)
    err = send_buf(a);
  if (!err)
    rt->announced = true;
  return err;
}

/* ---- one cycle ---------------------------------------------------------------------------- */

struct cycle_send {
  struct agent *a;
  size_t disk;
  uint64_t cycle;
  struct proto_digest digest;
  struct proto_cycle_end end;
};

static rpl_err emit_extent(void *arg, struct proto_extent *m)
{
  struct cycle_send *cs = arg;
  if (atomic_load(&stopping))
    return RPL_E_CANCELLED; /* hand the cycle back: uncommitted, it is re-reported at the next flip */
  memcpy(m->disk_id, cs->a->st.disks[cs->disk].id, PROTO_ID_SIZE);
  m->cycle = cs->cycle;
  rpl_err err = conn_send_extent(cs->a->conn, m);
  if (err)
    return err;
  proto_digest_update(&cs->digest, m->hash);
  cs->end.extents++;
  cs->end.raw_bytes += m->length;
  cs->end.payload_bytes += m->payload.len;
  pthread_mutex_lock(&cs->a->lock);
  cs->a->rt[cs->disk].sync_done += m->length;
  pthread_mutex_unlock(&cs->a->lock);
  return RPL_OK;
}

static rpl_err pipeline_for(struct agent *a, size_t i, struct pipeline **out)
{
  if (!a->pipes[i]) {
    rpl_err err = pipeline_create(a->rt[i].fd, NULL, &a->pipes[i]);
    if (err)
      return err;
  }
  *out = a->pipes[i];
  return RPL_OK;
}

/* One pipeline run over the extents; says at debug level where the time went (the level follows it). */
static rpl_err run_extents(struct cycle_send *cs, struct pipeline *p, const struct pipeline_extent *px, size_t n)
{
  struct pipeline_stats st;
  rpl_err err = pipeline_run(p, px, n, emit_extent, cs, &st);
  if (!err)
    log_debug("%s: cycle %" PRIu64 ": %" PRIu64 " extents (%" PRIu64 " zero, %" PRIu64 " zstd), %" PRIu64
              " bytes sent as %" PRIu64 "; read extents waited %" PRIu64 " ms in all for a worker, the sends %" PRIu64
              " ms for the link; zstd level now %d", cs->a->st.disks[cs->disk].device, cs->cycle, st.extents, st.zero_extents,
              st.zstd_extents, st.raw_bytes, st.payload_bytes, st.read_ns_waiting_workers / 1000000,
              st.emit_ns / 1000000, st.zstd_level);
  return err;
}

/* Reads and sends one batch of byte extents, splitting them to the pipeline's extent size. */
static rpl_err send_extents(struct cycle_send *cs, const struct cbt_extent *x, size_t n)
{
  struct pipeline *p;
  rpl_err err = pipeline_for(cs->a, cs->disk, &p);
  if (err)
    return err;
  size_t cap = 4096, used = 0;
  struct pipeline_extent *px = malloc(cap * sizeof *px);
  if (!px)
    return RPL_E_NOMEM;
  for (size_t i = 0; i < n && !err; i++) {
    uint64_t off = x[i].offset, len = x[i].length;
    while (len && !err) {
      if (used == cap) {
        err = run_extents(cs, p, px, used);
        used = 0;
        if (err)
          break;
      }
      uint32_t l = len > (1u << 20) ? 1u << 20 : (uint32_t)len;
      px[used++] = (struct pipeline_extent){off, l};
      off += l;
      len -= l;
    }
  }
  if (!err && used)
    err = run_extents(cs, p, px, used);
  free(px);
  return err;
}

static uint64_t write_counter(struct agent *a, const char *device)
{
  struct cbt_status s;
  if (cbt_status_get(a->cbt, device, &s))
    return UINT64_MAX;
  return s.writes + s.discards + s.write_zeroes + s.secure_erases;
}

/* ---- resync by comparison ----------------------------------------------------------------- */

#define RESYNC_CHUNK      (1u << 20)
#define HASHES_PER_FRAME  4096u

struct hash_pass {
  struct agent *a;
  size_t disk;
  uint8_t *hashes;      /* HASHES_PER_FRAME * PROTO_HASH_SIZE */
  uint32_t n;
  uint64_t first_chunk; /* of hashes[0] */
  rpl_err err;
};

static rpl_err flush_hashes(struct hash_pass *hp)
{
  if (!hp->n)
    return RPL_OK;
  struct proto_hashes m = {.chunk_size = RESYNC_CHUNK, .first_chunk = hp->first_chunk, .count = hp->n,
                           .hashes = hp->hashes};
  memcpy(m.disk_id, hp->a->st.disks[hp->disk].id, PROTO_ID_SIZE);
  rpl_err err = proto_encode_hashes(&hp->a->out, &m);
  if (!err)
    err = send_buf(hp->a);
  hp->first_chunk += hp->n;
  hp->n = 0;
  return err;
}

static rpl_err emit_hash(void *arg, struct proto_extent *m)
{
  struct hash_pass *hp = arg;
  if (atomic_load(&stopping))
    return RPL_E_CANCELLED;
  memcpy(hp->hashes + (size_t)hp->n * PROTO_HASH_SIZE, m->hash, PROTO_HASH_SIZE);
  pthread_mutex_lock(&hp->a->lock);
  hp->a->rt[hp->disk].sync_done += m->length;
  pthread_mutex_unlock(&hp->a->lock);
  if (++hp->n == HASHES_PER_FRAME)
    return flush_hashes(hp);
  return RPL_OK;
}

/* Hashes the whole disk in RESYNC_CHUNK chunks, sends them as HASHES, and turns the appliance's NEED
 * into the byte extents to send. The caller owns *out (free). */
static rpl_err hash_compare(struct agent *a, struct cycle_send *cs, struct cbt_extent **out, size_t *nout)
{
  *out = NULL;
  *nout = 0;
  struct disk_rt *rt = &a->rt[cs->disk];
  struct pipeline *p;
  struct pipeline_config cfg = {.compress = 0, .max_extent = RESYNC_CHUNK};
  rpl_err err = pipeline_create(rt->fd, &cfg, &p); /* hashing only: no compression */
  if (err)
    return err;
  struct hash_pass hp = {.a = a, .disk = cs->disk, .hashes = malloc((size_t)HASHES_PER_FRAME * PROTO_HASH_SIZE)};
  size_t nchunks = (size_t)((rt->size + RESYNC_CHUNK - 1) / RESYNC_CHUNK);
  struct pipeline_extent *px = calloc(nchunks, sizeof *px);
  if (!hp.hashes || !px)
    err = RPL_E_NOMEM;
  if (!err) {
    pthread_mutex_lock(&a->lock);
    rt->sync_done = 0;
    rt->sync_start_ms = now_ms();
    rt->sync_total = rt->size;
    pthread_mutex_unlock(&a->lock);
    pipeline_split_extents(0, rt->size, RESYNC_CHUNK, px, nchunks);
    err = pipeline_run(p, px, nchunks, emit_hash, &hp, NULL);
  }
  if (!err)
    err = flush_hashes(&hp);
  pipeline_destroy(p);
  free(px);
  free(hp.hashes);
  if (err)
    return err;
  /* The appliance answers once it has every hash. */
  struct proto_frame f;
  for (;;) {
    if ((err = conn_recv(a->conn, &f, CONN_IO_TIMEOUT_MS)))
      return err;
    if (f.type != PROTO_HEARTBEAT)
      break;
  }
  struct proto_need need;
  if (f.type != PROTO_NEED || (err = proto_decode_need(&f, &need)))
    return err ? err : RPL_E_PROTO_UNEXPECTED;
  struct cbt_extent *x = calloc(need.count ? need.count : 1, sizeof *x);
  if (!x)
    return RPL_E_NOMEM;
  uint64_t bytes = 0;
  for (uint32_t i = 0; i < need.count; i++) {
    struct proto_need_range r = proto_need_range_at(&need, i);
    uint64_t off = r.first_chunk * need.chunk_size, len = (uint64_t)r.count * need.chunk_size;
    if (off >= rt->size) {
      free(x);
      return RPL_E_PROTO_FIELD;
    }
    if (len > rt->size - off)
      len = rt->size - off;
    x[i] = (struct cbt_extent){off, len};
    bytes += len;
  }
  log_notice("%s: resync by comparison: %" PRIu64 " MiB of %" PRIu64 " MiB differ", a->st.disks[cs->disk].device,
             bytes >> 20, rt->size >> 20);
  pthread_mutex_lock(&a->lock);
  rt->sync_done = 0;
  rt->sync_start_ms = now_ms();
  rt->sync_total = bytes;
  pthread_mutex_unlock(&a->lock);
  *out = x;
  *nout = need.count;
  return RPL_OK;
}

/* Flips the disk's tracker and sends its frozen set (everything, when the appliance asks for it;
 * the chunks that differ from the replica, when the tracker requires a resync), but not CYCLE_END.
 * *gen and *resync_count say what to commit and acknowledge after the ACK. */
static rpl_err send_cycle_body(struct agent *a, struct cycle_send *cs, bool full, uint64_t *gen,
                               uint64_t *resync_count)
{
  const char *dev = a->st.disks[cs->disk].device;
  struct disk_rt *rt = &a->rt[cs->disk];
  struct cbt_status s;
  rpl_err err = cbt_status_get(a->cbt, dev, &s);
  if (err)
    return err;
  *resync_count = 0;
  bool compare = false;
  if (s.resync_required || full) {
    *resync_count = s.resync_count;
    compare = !full; /* the replica holds data: only what differs travels */
    full = true;
    if (s.resync_required && s.resync_reason != CBT_RESYNC_NONE)
      log_notice("%s: resync (%s): comparing the whole disk with the replica", dev,
                 cbt_resync_reason_name(s.resync_reason));
  }
  err = cbt_flip(a->cbt, dev, gen);
  if (err)
    return err;
  if (full) {
    /* The whole disk is read: the frozen set is covered; drain it so that it can be committed. */
    struct cbt_extents skip;
    cbt_extents_init(&skip, DRAIN_BATCH, 0);
    do {
      cbt_extents_clear(&skip);
      err = cbt_drain(a->cbt, dev, &skip);
    } while (err == RPL_E_AGAIN);
    cbt_extents_free(&skip);
    if (err)
      return err;
  }
  pthread_mutex_lock(&a->lock);
  rt->sync_done = 0;
  rt->sync_start_ms = now_ms();
  rt->sync_total = full ? rt->size : 0;
  if (full && rt->phase != PHASE_NEW && rt->phase != PHASE_SYNCING)
    rt->phase = PHASE_RESYNC;
  pthread_mutex_unlock(&a->lock);
  if (compare) {
    struct cbt_extent *x;
    size_t n;
    if ((err = hash_compare(a, cs, &x, &n)))
      return err;
    err = send_extents(cs, x, n);
    free(x);
    return err;
  }
  if (full) {
    struct cbt_extent whole = {0, rt->size};
    return send_extents(cs, &whole, 1);
  }
  struct cbt_extents set;
  cbt_extents_init(&set, DRAIN_BATCH, 1u << 20);
  do {
    cbt_extents_clear(&set);
    err = cbt_drain(a->cbt, dev, &set);
    if (err && err != RPL_E_AGAIN)
      break;
    pthread_mutex_lock(&a->lock);
    rt->sync_total += cbt_extents_bytes(&set);
    pthread_mutex_unlock(&a->lock);
    rpl_err e2 = send_extents(cs, set.items, set.count);
    if (e2)
      err = e2;
  } while (err == RPL_E_AGAIN);
  cbt_extents_free(&set);
  return err;
}

static rpl_err send_cycle_end(struct agent *a, struct cycle_send *cs, uint8_t consistency)
{
  cs->end.cycle = cs->cycle;
  cs->end.consistency = consistency;
  memcpy(cs->end.disk_id, a->st.disks[cs->disk].id, PROTO_ID_SIZE);
  proto_digest_final(&cs->digest, cs->end.digest);
  rpl_err err = proto_encode_cycle_end(&a->out, &cs->end);
  return err ? err : send_buf(a);
}

static ssize_t disk_index(struct agent *a, const uint8_t id[PROTO_ID_SIZE])
{
  for (size_t i = 0; i < a->st.ndisks; i++)
    if (!memcmp(a->st.disks[i].id, id, PROTO_ID_SIZE))
      return (ssize_t)i;
  return -1;
}

static rpl_err handle_point(struct agent *a, const struct proto_frame *f);

/* Waits for the ACK or NACK of (disk, cycle); heartbeats and POINTs may come in between. */
static rpl_err wait_ack(struct agent *a, size_t disk, uint64_t cycle, bool *acked)
{
  *acked = false;
  for (;;) {
    struct proto_frame f;
    rpl_err err = conn_recv(a->conn, &f, CONN_IO_TIMEOUT_MS);
    if (err)
      return err;
    if (f.type == PROTO_HEARTBEAT)
      continue;
    if (f.type == PROTO_POINT) {
      if ((err = handle_point(a, &f)))
        return err;
      continue;
    }
    if (f.type == PROTO_ACK) {
      struct proto_ack m;
      if ((err = proto_decode_ack(&f, &m)))
        return err;
      if (disk_index(a, m.disk_id) != (ssize_t)disk || m.cycle != cycle)
        return RPL_E_PROTO_UNEXPECTED;
      *acked = true;
      return RPL_OK;
    }
    if (f.type == PROTO_NACK) {
      struct proto_nack m;
      if ((err = proto_decode_nack(&f, &m)))
        return err;
      log_warn("%s: cycle %" PRIu64 " refused by the appliance (%s: %.*s); it is sent again",
               a->st.disks[disk].device, cycle, rpl_errname((rpl_err)m.reason), (int)m.message.len,
               (const char *)m.message.ptr);
      return RPL_OK;
    }
    return RPL_E_PROTO_UNEXPECTED;
  }
}

static rpl_err after_ack(struct agent *a, struct cycle_send *cs, uint64_t gen, uint64_t resync_count, bool full)
{
  const char *dev = a->st.disks[cs->disk].device;
  rpl_err err = cbt_commit(a->cbt, dev, gen);
  if (err == RPL_E_CBT_GENERATION_CHANGED)
    err = RPL_OK; /* re-reported at the next flip: nothing lost */
  if (!err && full && resync_count) {
    rpl_err ack = cbt_ack_resync(a->cbt, dev, resync_count);
    if (ack == RPL_E_CBT_ACK_STALE)
      log_notice("%s: a new resync event happened during the resync: another follows", dev);
    else if (ack)
      err = ack;
  }
  struct cbt_status s;
  bool resync = cbt_status_get(a->cbt, dev, &s) == RPL_OK && s.resync_required;
  pthread_mutex_lock(&a->lock);
  struct disk_rt *rt = &a->rt[cs->disk];
  rt->last_cycle = cs->cycle;
  rt->cycles++;
  rt->bytes_sent += cs->end.payload_bytes;
  rt->raw_bytes += cs->end.raw_bytes;
  rt->last_ack = time(NULL);
  rt->phase = resync ? PHASE_RESYNC : PHASE_PROTECTED;
  rt->error[0] = '\0';
  pthread_cond_broadcast(&a->changed);
  pthread_mutex_unlock(&a->lock);
  return err;
}

/* A cbt handle sees the tracker as it was when opened: after protect installed or changed the
 * tracker through another handle, the session's handle is opened again. */
static rpl_err refresh_cbt(struct agent *a)
{
  if (!atomic_exchange(&a->cbt_reopen, 0) && a->cbt)
    return RPL_OK;
  cbt_close(a->cbt);
  a->cbt = NULL;
  struct cbt_options opt = {.state_dir = a->st.dir};
  rpl_err err = cbt_open(&a->cbt, &opt);
  if (err)
    atomic_store(&a->cbt_reopen, 1);
  return err;
}

static rpl_err run_cycle(struct agent *a, size_t disk, uint64_t cycle, uint8_t kind)
{
  struct cycle_send cs = {.a = a, .disk = disk, .cycle = cycle};
  proto_digest_init(&cs.digest);
  bool full = kind == PROTO_CYCLE_RESYNC;
  uint64_t gen = 0, count = 0;
  pthread_mutex_lock(&a->lock);
  if (full && a->rt[disk].phase == PHASE_NEW)
    a->rt[disk].phase = PHASE_SYNCING;
  pthread_mutex_unlock(&a->lock);
  uint64_t t0 = now_ms();
  rpl_err err = send_cycle_body(a, &cs, full, &gen, &count);
  if (!err)
    err = send_cycle_end(a, &cs, PROTO_FUZZY);
  uint64_t t1 = now_ms();
  bool acked = false;
  if (!err)
    err = wait_ack(a, disk, cycle, &acked);
  log_debug("%s: cycle %" PRIu64 ": sent in %" PRIu64 " ms, %s %" PRIu64 " ms later", a->st.disks[disk].device,
            cycle, t1 - t0, acked ? "ACK" : "no ACK", now_ms() - t1);
  if (!err && acked)
    err = after_ack(a, &cs, gen, count, full || count);
  if (err && err != RPL_E_IO && err != RPL_E_TLS && err != RPL_E_CANCELLED)
    log_warn("%s: cycle %" PRIu64 " failed: %s (%s)", a->st.disks[disk].device, cycle, rpl_strerror(err),
             cbt_errmsg(a->cbt));
  return err;
}

/* ---- recovery points ---------------------------------------------------------------------- */

static struct point_req *request_for_disk(struct agent *a, size_t disk)
{
  for (size_t r = 0; r < MAX_POINT_REQUESTS; r++) {
    struct point_req *q = &a->reqs[r];
    if (!q->used || !q->sent || q->done)
      continue;
    for (size_t i = 0; i < q->ndisks; i++)
      if (q->disks[i] == disk)
        return q;
  }
  return NULL;
}

/* The appliance sent CYCLE_START(RECOVERY_POINT) for the first disk of a group; the others follow
 * back to back. Freeze all, flip all, read all, thaw, then end every cycle with its consistency. */
static rpl_err run_point_cycles(struct agent *a, size_t first, uint64_t first_cycle)
{
  pthread_mutex_lock(&a->lock);
  struct point_req *q = request_for_disk(a, first);
  struct point_req req = q ? *q : (struct point_req){.ndisks = 1, .disks = {first}};
  pthread_mutex_unlock(&a->lock);

  struct cycle_send *cs = calloc(req.ndisks, sizeof *cs);
  uint64_t *gens = calloc(req.ndisks, sizeof *gens), *counts = calloc(req.ndisks, sizeof *counts);
  uint64_t *writes_before = calloc(req.ndisks, sizeof *writes_before);
  const char **devices = calloc(req.ndisks, sizeof *devices);
  if (!cs || !gens || !counts || !writes_before || !devices) {
    free(cs), free(gens), free(counts), free(writes_before), free(devices);
    return RPL_E_NOMEM;
  }
  rpl_err err = RPL_OK;
  /* Collect the group's CYCLE_STARTs. */
  for (size_t i = 0; i < req.ndisks; i++) {
    cs[i] = (struct cycle_send){.a = a, .disk = req.disks[i]};
    proto_digest_init(&cs[i].digest);
    devices[i] = a->st.disks[req.disks[i]].device;
  }
  size_t have = 0;
  for (size_t i = 0; i < req.ndisks; i++)
    if (req.disks[i] == first)
      cs[i].cycle = first_cycle, have++;
  while (!err && have < req.ndisks) {
    struct proto_frame f;
    struct proto_cycle_start m;
    if ((err = conn_recv(a->conn, &f, CONN_IO_TIMEOUT_MS)))
      break;
    if (f.type == PROTO_HEARTBEAT)
      continue;
    if (f.type != PROTO_CYCLE_START || (err = proto_decode_cycle_start(&f, &m)) || m.kind != PROTO_CYCLE_RECOVERY_POINT) {
      err = err ? err : RPL_E_PROTO_UNEXPECTED;
      break;
    }
    ssize_t d = disk_index(a, m.disk_id);
    for (size_t i = 0; i < req.ndisks; i++)
      if ((ssize_t)req.disks[i] == d && !cs[i].cycle)
        cs[i].cycle = m.cycle, have++;
  }
  if (err)
    goto out;

  struct freeze_set *fs = NULL;
  rpl_err frozen = freeze_find(devices, req.ndisks, &fs);
  bool any_fs = !frozen && freeze_count(fs) > 0;
  if (any_fs)
    frozen = freeze_begin(fs, &a->freeze);
  uint64_t t0 = now_ms();
  for (size_t i = 0; i < req.ndisks; i++)
    writes_before[i] = write_counter(a, devices[i]);
  for (size_t i = 0; i < req.ndisks && !err; i++)
    err = send_cycle_body(a, &cs[i], false, &gens[i], &counts[i]);
  rpl_err thawed = RPL_OK;
  if (any_fs && !frozen)
    thawed = freeze_end(fs);
  uint64_t t1 = now_ms();
  freeze_free(fs);
  if (err)
    goto out;
  /* Each disk's consistency: frozen filesystems within the limit; without a filesystem, no write
   * at all between the flip and the end of the read (the kernel's counters did not move). */
  for (size_t i = 0; i < req.ndisks && !err; i++) {
    uint8_t c = PROTO_FUZZY;
    uint64_t after = write_counter(a, devices[i]);
    if (counts[i]) {
      c = PROTO_FUZZY; /* a resync read is never a point */
    } else if (any_fs && !frozen && !thawed) {
      c = PROTO_FS_CONSISTENT;
    } else if (!any_fs && writes_before[i] != UINT64_MAX && after == writes_before[i]) {
      c = PROTO_CRASH_CONSISTENT;
    }
    err = send_cycle_end(a, &cs[i], c);
  }
  log_debug("recovery point of %zu disk(s): read and sent in %" PRIu64 " ms (the filesystems frozen meanwhile: %s)",
            req.ndisks, t1 - t0, any_fs && !frozen ? "yes" : "no");
  for (size_t i = 0; i < req.ndisks && !err; i++) {
    bool acked;
    err = wait_ack(a, cs[i].disk, cs[i].cycle, &acked);
    log_debug("%s: cycle %" PRIu64 ": %s %" PRIu64 " ms after the end was sent", devices[i], cs[i].cycle,
              acked ? "ACK" : "no ACK", now_ms() - t1);
    if (!err && acked)
      err = after_ack(a, &cs[i], gens[i], counts[i], counts[i] != 0);
  }
  if (frozen == RPL_E_FREEZE || thawed)
    log_warn("recovery point without filesystem consistency: %s", rpl_strerror(frozen ? frozen : thawed));
out:
  free(cs), free(gens), free(counts), free(writes_before), free(devices);
  return err;
}

static rpl_err handle_point(struct agent *a, const struct proto_frame *f)
{
  struct proto_point m;
  rpl_err err = proto_decode_point(f, &m);
  if (err)
    return err;
  pthread_mutex_lock(&a->lock);
  for (size_t r = 0; r < MAX_POINT_REQUESTS; r++) {
    struct point_req *q = &a->reqs[r];
    if (q->used && q->id == m.request && !q->done) {
      if (m.status == RPL_E_POINT_INCONSISTENT && ++q->tries < 3) {
        q->sent = false; /* the next cycles are plain again: ask once more */
        continue;
      }
      q->done = true;
      q->status = (rpl_err)m.status;
      q->consistency = m.consistency;
      snprintf(q->point_id, sizeof q->point_id, "%.*s", (int)m.point_id.len, (const char *)m.point_id.ptr);
      for (size_t i = 0; i < q->ndisks && !m.status; i++)
        snprintf(a->rt[q->disks[i]].last_point, sizeof a->rt[0].last_point, "%s", q->point_id);
    }
  }
  pthread_cond_broadcast(&a->changed);
  pthread_mutex_unlock(&a->lock);
  return RPL_OK;
}

/* ---- the session -------------------------------------------------------------------------- */

static rpl_err send_pending(struct agent *a)
{
  rpl_err err = RPL_OK;
  pthread_mutex_lock(&a->lock);
  size_t n = a->st.ndisks;
  pthread_mutex_unlock(&a->lock);
  for (size_t i = 0; i < n && !err; i++)
    if (!a->rt[i].announced)
      err = send_disk(a, i);
  pthread_mutex_lock(&a->lock);
  for (size_t r = 0; r < MAX_POINT_REQUESTS && !err; r++) {
    struct point_req *q = &a->reqs[r];
    if (!q->used || q->sent || q->done)
      continue;
    uint8_t ids[AGENT_MAX_DISKS * PROTO_ID_SIZE];
    for (size_t i = 0; i < q->ndisks; i++)
      memcpy(ids + i * PROTO_ID_SIZE, a->st.disks[q->disks[i]].id, PROTO_ID_SIZE);
    struct proto_point_request m = {.request = q->id, .count = (uint32_t)q->ndisks, .disk_ids = ids};
    err = proto_encode_point_request(&a->out, &m);
    if (!err)
      q->sent = true;
  }
  pthread_mutex_unlock(&a->lock);
  if (!err && a->out.len)
    err = send_buf(a);
  return err;
}

static rpl_err handshake(struct agent *a)
{
  char hostname[256] = "unknown";
  gethostname(hostname, sizeof hostname - 1);
  struct proto_hello h = {.version_min = PROTO_VERSION_MIN, .version_max = PROTO_VERSION_MAX,
                          .capabilities = PROTO_CAP_ZSTD | PROTO_CAP_CBT_EBPF | PROTO_CAP_FREEZE,
                          .hostname = {(const uint8_t *)hostname, (uint32_t)strlen(hostname)}};
  uuid_parse(a->st.agent_id, h.agent_id);
  rpl_err err = proto_encode_hello(&a->out, &h);
  if (!err)
    err = send_buf(a);
  struct proto_frame f;
  if (!err)
    err = conn_recv(a->conn, &f, CONN_IO_TIMEOUT_MS);
  if (err)
    return err;
  if (f.type == PROTO_ERROR) {
    struct proto_error e;
    if (proto_decode_error(&f, &e) == RPL_OK) {
      pthread_mutex_lock(&a->lock);
      snprintf(a->conn_error, sizeof a->conn_error, "the appliance refused the session: %.*s", (int)e.message.len,
               (const char *)e.message.ptr);
      pthread_mutex_unlock(&a->lock);
      log_err("%s", a->conn_error);
      return (rpl_err)e.code ? (rpl_err)e.code : RPL_E_PROTO_UNEXPECTED;
    }
    return RPL_E_PROTO_UNEXPECTED;
  }
  struct proto_hello peer;
  if ((err = proto_decode_hello(&f, &peer)))
    return err;
  uint16_t v;
  char msg[160];
  if ((err = proto_negotiate(PROTO_VERSION_MIN, PROTO_VERSION_MAX, peer.version_min, peer.version_max, &v, msg, sizeof msg))) {
    log_err("%s", msg);
    return err;
  }
  return RPL_OK;
}

static uint64_t dirty_total(struct agent *a)
{
  uint64_t sum = 0;
  for (size_t i = 0; i < a->st.ndisks; i++) {
    struct cbt_status s;
    if (a->rt[i].phase != PHASE_ERROR && cbt_status_get(a->cbt, a->st.disks[i].device, &s) == RPL_OK)
      sum += s.dirty_bytes;
  }
  return sum;
}

static rpl_err serve(struct agent *a)
{
  uint64_t last_send = now_ms(), last_check = now_ms();
  uint64_t hb_seq = 0;
  bool pressure_sent = false; /* one request per backlog: the cycles that follow drain it */
  for (;;) {
    if (atomic_load(&stopping))
      return RPL_OK;
    rpl_err err = send_pending(a);
    if (err)
      return err;
    if (!conn_pending(a->conn)) {
      struct pollfd p[2] = {{.fd = conn_fd(a->conn), .events = POLLIN}, {.fd = a->wake, .events = POLLIN}};
      uint64_t now = now_ms();
      int wait = now - last_send >= HEARTBEAT_MS ? 0 : (int)(HEARTBEAT_MS - (now - last_send));
      if (wait > DIRTY_CHECK_MS)
        wait = DIRTY_CHECK_MS;
      int r = poll(p, 2, wait);
      if (r < 0 && errno == EINTR)
        continue;
      if (p[1].revents) {
        uint64_t v;
        ssize_t n = read(a->wake, &v, sizeof v);
        (void)n;
      }
      uint64_t dirty = 0;
      if (now_ms() - last_check >= DIRTY_CHECK_MS && a->cbt && !atomic_load(&a->cbt_reopen)) {
        last_check = now_ms();
        dirty = dirty_total(a);
        if (dirty < DIRTY_TRIGGER)
          pressure_sent = false;
      }
      bool pressure = dirty >= DIRTY_TRIGGER && !pressure_sent;
      if (pressure || now_ms() - last_send >= HEARTBEAT_MS) {
        pressure_sent = pressure_sent || pressure;
        struct proto_heartbeat hb = {.sequence = ++hb_seq, .time_ns = (uint64_t)time(NULL) * 1000000000ull,
                                     .dirty_bytes = dirty};
        if ((err = proto_encode_heartbeat(&a->out, &hb)) || (err = send_buf(a)))
          return err;
        last_send = now_ms();
      }
      if (!(p[0].revents & (POLLIN | POLLHUP | POLLERR)))
        continue;
    }
    struct proto_frame f;
    err = conn_recv(a->conn, &f, CONN_IO_TIMEOUT_MS);
    if (err == RPL_E_TIMEOUT)
      continue;
    if (err)
      return err;
    switch (f.type) {
    case PROTO_HEARTBEAT:
      break;
    case PROTO_POINT:
      err = handle_point(a, &f);
      break;
    case PROTO_CYCLE_START: {
      struct proto_cycle_start m;
      if ((err = proto_decode_cycle_start(&f, &m)))
        break;
      ssize_t d = disk_index(a, m.disk_id);
      if (d < 0 || a->rt[d].phase == PHASE_ERROR) {
        log_warn("the appliance asked for a cycle of a disk this agent does not protect");
        struct proto_nack nk = {.cycle = m.cycle, .reason = RPL_E_NOT_FOUND};
        memcpy(nk.disk_id, m.disk_id, PROTO_ID_SIZE);
        if (!(err = proto_encode_nack(&a->out, &nk)))
          err = send_buf(a);
        break;
      }
      if ((err = refresh_cbt(a)))
        break;
      err = m.kind == PROTO_CYCLE_RECOVERY_POINT ? run_point_cycles(a, (size_t)d, m.cycle)
                                                 : run_cycle(a, (size_t)d, m.cycle, m.kind);
      last_send = now_ms();
      pressure_sent = false;
      break;
    }
    case PROTO_ERROR: {
      struct proto_error e;
      if (proto_decode_error(&f, &e) == RPL_OK)
        log_err("the appliance ended the session: %.*s", (int)e.message.len, (const char *)e.message.ptr);
      return RPL_E_PROTO_UNEXPECTED;
    }
    default:
      log_warn("unexpected %s frame from the appliance", proto_type_name(f.type));
      return RPL_E_PROTO_UNEXPECTED;
    }
    if (err)
      return err;
  }
}

static void session_loop(struct agent *a)
{
  unsigned backoff = BACKOFF_MIN_MS;
  while (!atomic_load(&stopping)) {
    rpl_err err = conn_connect(a->ctx, a->st.appliance, 10000, &a->conn);
    if (!err)
      err = handshake(a);
    if (!err) {
      log_info("connected to the appliance at %s", a->st.appliance);
      pthread_mutex_lock(&a->lock);
      a->connected = true;
      a->conn_error[0] = '\0';
      for (size_t i = 0; i < a->st.ndisks; i++)
        a->rt[i].announced = false;
      for (size_t r = 0; r < MAX_POINT_REQUESTS; r++)
        a->reqs[r].sent = a->reqs[r].done; /* unanswered requests are asked again */
      pthread_cond_broadcast(&a->changed);
      pthread_mutex_unlock(&a->lock);
      backoff = BACKOFF_MIN_MS;
      err = serve(a);
    }
    proto_buf_reset(&a->out);
    conn_close(a->conn);
    a->conn = NULL;
    pthread_mutex_lock(&a->lock);
    if (a->connected || !a->conn_error[0])
      snprintf(a->conn_error, sizeof a->conn_error, "%s", err ? rpl_strerror(err) : "stopping");
    a->connected = false;
    pthread_cond_broadcast(&a->changed);
    pthread_mutex_unlock(&a->lock);
    if (atomic_load(&stopping))
      break;
    log_warn("session with the appliance at %s ended (%s); reconnecting in %u ms", a->st.appliance, rpl_strerror(err),
             backoff);
    /* Sleep, but wake for a stop. */
    struct pollfd p = {.fd = a->wake, .events = POLLIN};
    uint64_t until = now_ms() + backoff;
    while (!atomic_load(&stopping) && now_ms() < until)
      if (poll(&p, 1, 200) > 0) {
        uint64_t v;
        ssize_t n = read(a->wake, &v, sizeof v);
        (void)n;
      }
    backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
    /* Jitter keeps a fleet of agents from reconnecting in lockstep after an appliance restart. */
    backoff -= (unsigned)(rand() % (backoff / 4 + 1));
  }
}

/* ---- control commands --------------------------------------------------------------------- */

static int ctl_protect(struct agent *a, int argc, char **argv, struct control_reply *out)
{
  if (argc != 2) {
    control_printf(out, "usage: mobility-agent protect DEVICE");
    return 2;
  }
  const char *dev = argv[1];
  struct cbt *t;
  struct cbt_options opt = {.state_dir = a->st.dir};
  rpl_err err = cbt_open(&t, &opt);
  if (!err) {
    err = cbt_start(t, dev);
    if (err == RPL_E_CBT_ALREADY_TRACKED)
      err = RPL_OK;
    if (err)
      control_printf(out, "cannot track %s: %s", dev, cbt_errmsg(t));
    cbt_close(t);
  } else {
    control_printf(out, "cannot open the change-block tracker: %s", rpl_strerror(err));
  }
  if (err)
    return 1;
  atomic_store(&a->cbt_reopen, 1);
  pthread_mutex_lock(&a->lock);
  struct agent_disk *d = agent_state_find_disk(&a->st, dev);
  char id[37];
  if (!d) {
    if (a->st.ndisks == AGENT_MAX_DISKS) {
      pthread_mutex_unlock(&a->lock);
      control_printf(out, "this agent protects %d disks already, the most it can", AGENT_MAX_DISKS);
      return 1;
    }
    d = &a->st.disks[a->st.ndisks];
    snprintf(d->device, sizeof d->device, "%s", dev);
    uuid_generate(d->id);
    struct disk_rt *rt = &a->rt[a->st.ndisks];
    memset(rt, 0, sizeof *rt);
    rt->fd = -1;
    a->st.ndisks++;
    err = agent_state_save(&a->st);
    if (err) {
      a->st.ndisks--;
      pthread_mutex_unlock(&a->lock);
      control_printf(out, "cannot save the agent state: %s", rpl_strerror(err));
      return 1;
    }
  }
  agent_disk_id_text(d->id, id);
  pthread_mutex_unlock(&a->lock);
  wake_session(a);
  control_printf(out, "protecting %s as disk %s: tracking changes; the appliance starts the initial sync\n", dev, id);
  return 0;
}

static int ctl_checkpoint(struct agent *a, int argc, char **argv, struct control_reply *out)
{
  const char *dev = NULL;
  bool wait = false;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--wait"))
      wait = true;
    else if (!dev && argv[i][0] != '-')
      dev = argv[i];
    else {
      control_printf(out, "usage: mobility-agent checkpoint [DEVICE] [--wait]");
      return 2;
    }
  }
  pthread_mutex_lock(&a->lock);
  struct point_req *q = NULL;
  for (size_t r = 0; r < MAX_POINT_REQUESTS && !q; r++)
    if (!a->reqs[r].used)
      q = &a->reqs[r];
  if (!q) {
    pthread_mutex_unlock(&a->lock);
    control_printf(out, "too many recovery points requested at once: wait for one to finish");
    return 1;
  }
  memset(q, 0, sizeof *q);
  for (size_t i = 0; i < a->st.ndisks; i++)
    if ((!dev || !strcmp(a->st.disks[i].device, dev)) && a->rt[i].phase != PHASE_ERROR)
      q->disks[q->ndisks++] = i;
  if (q->ndisks == 0) {
    pthread_mutex_unlock(&a->lock);
    if (dev)
      control_printf(out, "%s is not protected (mobility-agent protect %s)", dev, dev);
    else
      control_printf(out, "no disk is protected yet (mobility-agent protect DEVICE)");
    return 1;
  }
  q->used = true;
  q->id = ++a->next_req;
  uint64_t id = q->id;
  pthread_mutex_unlock(&a->lock);
  wake_session(a);

  /* Without --wait, the request is handed over; with it, we stay until the point exists. */
  struct timespec deadline;
  clock_gettime(CLOCK_REALTIME, &deadline);
  deadline.tv_sec += wait ? POINT_WAIT_MS / 1000 : 60;
  pthread_mutex_lock(&a->lock);
  int status = 1;
  for (;;) {
    if (q->id != id)
      break;
    if (q->done || (!wait && q->sent))
      break;
    if (atomic_load(&stopping) || pthread_cond_timedwait(&a->changed, &a->lock, &deadline) == ETIMEDOUT)
      break;
  }
  if (q->id == id && q->done) {
    if (q->status == RPL_OK) {
      control_printf(out, "recovery point (%s) of %zu disk(s)\n%s\n",
                     q->consistency == PROTO_FS_CONSISTENT ? "filesystem-consistent" : "crash-consistent", q->ndisks,
                     q->point_id);
      status = 0;
    } else {
      control_printf(out, "no recovery point: %s", rpl_strerror(q->status));
    }
    q->used = false;
  } else if (q->id == id && q->sent && !wait) {
    control_printf(out, "recovery point requested (request %" PRIu64 "); use --wait to wait for its id\n", id);
    status = 0;
  } else {
    control_printf(out, "no recovery point yet: %s", a->connected ? "timed out waiting for the appliance"
                                                                  : "the agent is not connected to the appliance");
    if (q->id == id)
      q->used = !q->sent ? false : q->used;
  }
  pthread_mutex_unlock(&a->lock);
  return status;
}

/* `status --progress DEVICE`, what a terminal's `protect` polls: one line
 * "PHASE DONE_BYTES TOTAL_BYTES ELAPSED_MS LAST_CYCLE" (a cycle in progress: DONE < TOTAL). */
static int ctl_progress(struct agent *a, const char *dev, struct control_reply *out)
{
  pthread_mutex_lock(&a->lock);
  struct agent_disk *d = agent_state_find_disk(&a->st, dev);
  if (!d) {
    pthread_mutex_unlock(&a->lock);
    control_printf(out, "%s is not protected (mobility-agent protect %s)", dev, dev);
    return 1;
  }
  const struct disk_rt *rt = &a->rt[d - a->st.disks];
  control_printf(out, "%s %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 "\n", phase_names[rt->phase], rt->sync_done,
                 rt->sync_total, rt->sync_start_ms ? now_ms() - rt->sync_start_ms : 0, rt->last_cycle);
  if (rt->error[0])
    control_printf(out, "%s\n", rt->error);
  pthread_mutex_unlock(&a->lock);
  return 0;
}

static int ctl_status(struct agent *a, int argc, char **argv, struct control_reply *out)
{
  if (argc == 3 && !strcmp(argv[1], "--progress"))
    return ctl_progress(a, argv[2], out);
  bool json = argc > 1 && !strcmp(argv[1], "--json");
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  if (!f) {
    control_printf(out, "out of memory");
    return 1;
  }
  pthread_mutex_lock(&a->lock);
  if (json) {
    struct json_out j;
    json_init(&j, f);
    json_object_begin(&j, NULL);
    json_string(&j, "agent_id", a->st.agent_id);
    json_string(&j, "appliance", a->st.appliance);
    json_bool(&j, "connected", a->connected);
    json_string(&j, "connection_error", a->connected ? NULL : a->conn_error);
    json_array_begin(&j, "disks");
    for (size_t i = 0; i < a->st.ndisks; i++) {
      const struct disk_rt *rt = &a->rt[i];
      char id[37];
      agent_disk_id_text(a->st.disks[i].id, id);
      json_object_begin(&j, NULL);
      json_string(&j, "device", a->st.disks[i].device);
      json_string(&j, "disk_id", id);
      json_string(&j, "state", phase_names[rt->phase]);
      json_string(&j, "error", rt->error[0] ? rt->error : NULL);
      json_u64(&j, "size", rt->size);
      json_u64(&j, "last_cycle", rt->last_cycle);
      json_u64(&j, "cycles", rt->cycles);
      json_u64(&j, "last_ack_unix", (uint64_t)rt->last_ack);
      json_u64(&j, "rpo_lag_seconds", rt->last_ack ? (uint64_t)(time(NULL) - rt->last_ack) : 0);
      json_u64(&j, "bytes_sent", rt->bytes_sent);
      json_u64(&j, "raw_bytes", rt->raw_bytes);
      json_u64(&j, "cycle_done_bytes", rt->sync_done);
      json_u64(&j, "cycle_total_bytes", rt->sync_total);
      struct progress pr;
      bool moving = rt->sync_total && rt->sync_done < rt->sync_total;
      progress_compute(rt->sync_done, rt->sync_total, moving ? now_ms() - rt->sync_start_ms : 0, &pr);
      json_u64(&j, "cycle_bytes_per_second", moving ? pr.bytes_per_s : 0);
      if (moving && pr.eta_s >= 0)
        json_u64(&j, "cycle_eta_seconds", (uint64_t)pr.eta_s);
      else
        json_string(&j, "cycle_eta_seconds", NULL);
      json_string(&j, "last_point", rt->last_point[0] ? rt->last_point : NULL);
      json_object_end(&j);
    }
    json_array_end(&j);
    json_object_end(&j);
    json_finish(&j);
  } else {
    fprintf(f, "agent %s, appliance %s: %s%s%s\n", a->st.agent_id, a->st.appliance,
            a->connected ? "connected" : "not connected", a->connected ? "" : " - ", a->connected ? "" : a->conn_error);
    for (size_t i = 0; i < a->st.ndisks; i++) {
      const struct disk_rt *rt = &a->rt[i];
      char id[37];
      agent_disk_id_text(a->st.disks[i].id, id);
      fprintf(f, "%s (disk %s): %s", a->st.disks[i].device, id, phase_names[rt->phase]);
      if (rt->sync_total && rt->sync_done < rt->sync_total) {
        char line[160];
        progress_format(line, sizeof line, rt->sync_done, rt->sync_total, now_ms() - rt->sync_start_ms);
        fprintf(f, ", cycle %s", line);
      }
      fprintf(f, ", last cycle %" PRIu64, rt->last_cycle);
      if (rt->last_ack)
        fprintf(f, " (%lds ago)", (long)(time(NULL) - rt->last_ack));
      if (rt->last_point[0])
        fprintf(f, ", last point %s", rt->last_point);
      if (rt->error[0])
        fprintf(f, ", error: %s", rt->error);
      fputc('\n', f);
    }
  }
  pthread_mutex_unlock(&a->lock);
  fclose(f);
  control_printf(out, "%s", buf);
  free(buf);
  return 0;
}

static int control_handler(void *ctx, int argc, char **argv, struct control_reply *out)
{
  struct agent *a = ctx;
  if (!strcmp(argv[0], "protect"))
    return ctl_protect(a, argc, argv, out);
  if (!strcmp(argv[0], "checkpoint"))
    return ctl_checkpoint(a, argc, argv, out);
  if (!strcmp(argv[0], "status"))
    return ctl_status(a, argc, argv, out);
  control_printf(out, "unknown daemon command '%s'", argv[0]);
  return 2;
}

/* ---- run ---------------------------------------------------------------------------------- */

static void *watch_stop(void *arg)
{
  struct agent *a = arg;
  while (!atomic_load(&stopping))
    usleep(100000);
  wake_session(a);
  return NULL;
}

int agent_cmd_run(int argc, char **argv)
{
  const char *state_dir = AGENT_DEFAULT_STATE;
  unsigned freeze_ms = 2000;
  const char *pre = NULL, *post = NULL;
  static const struct option opts[] = {{"state", required_argument, NULL, 's'},
                                       {"freeze-limit-ms", required_argument, NULL, 'f'},
                                       {"pre-freeze-hook", required_argument, NULL, 'p'},
                                       {"post-thaw-hook", required_argument, NULL, 'q'},
                                       {0, 0, 0, 0}};
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
    case 's': state_dir = optarg; break;
    case 'f': freeze_ms = (unsigned)strtoul(optarg, NULL, 10); break;
    case 'p': pre = optarg; break;
    case 'q': post = optarg; break;
    default:
      fprintf(stderr, "usage: mobility-agent run [--state DIR] [--freeze-limit-ms N] [--pre-freeze-hook CMD] [--post-thaw-hook CMD]\n");
      return 2;
    }
  }
  static struct agent a; /* large; one per process */
  memset(&a, 0, sizeof a);
  rpl_err err = agent_state_load(state_dir, &a.st);
  if (err) {
    fprintf(stderr, "mobility-agent run: cannot load the state in %s: %s\n", state_dir, rpl_strerror(err));
    return 1;
  }
  if (!a.st.registered) {
    fprintf(stderr, "mobility-agent run: not registered: run 'mobility-agent register --appliance HOST:PORT --key KEY --state %s' first\n",
            state_dir);
    return 1;
  }
  char crt_path[600], key_path[600];
  char *crt = NULL, *key = NULL;
  agent_state_path(&a.st, "agent.crt", crt_path, sizeof crt_path);
  agent_state_path(&a.st, "agent.key", key_path, sizeof key_path);
  if (file_read_all(crt_path, 65536, &crt) || file_read_all(key_path, 65536, &key) ||
      chan_client_ctx(a.st.fingerprint, crt, key, &a.ctx)) {
    fprintf(stderr, "mobility-agent run: the client certificate in %s is missing or invalid: register again\n", state_dir);
    free(crt), free(key);
    return 1;
  }
  OPENSSL_cleanse(key, strlen(key));
  free(crt), free(key);
  a.freeze = (struct freeze_options){.limit_ms = freeze_ms, .pre_hook = pre, .post_hook = post};
  pthread_mutex_init(&a.lock, NULL);
  pthread_cond_init(&a.changed, NULL);
  a.wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  for (size_t i = 0; i < AGENT_MAX_DISKS; i++)
    a.rt[i].fd = -1;
  struct cbt_options opt = {.state_dir = a.st.dir};
  struct cbt *boot;
  if ((err = cbt_open(&boot, &opt))) {
    fprintf(stderr, "mobility-agent run: cannot open the change-block tracker: %s\n", rpl_strerror(err));
    return 1;
  }
  /* Tracking must be on for every protected disk, also after a reboot (it then reports resync). */
  for (size_t i = 0; i < a.st.ndisks; i++) {
    rpl_err e = cbt_start(boot, a.st.disks[i].device);
    if (e && e != RPL_E_CBT_ALREADY_TRACKED) {
      snprintf(a.rt[i].error, sizeof a.rt[i].error, "tracking failed: %s", cbt_errmsg(boot));
      a.rt[i].phase = PHASE_ERROR;
      log_err("%s: %s", a.st.disks[i].device, a.rt[i].error);
    }
  }
  cbt_close(boot);
  if ((err = refresh_cbt(&a))) {
    fprintf(stderr, "mobility-agent run: cannot open the change-block tracker: %s\n", rpl_strerror(err));
    return 1;
  }
  struct control_server *ctl;
  if ((err = control_server_start(a.st.dir, control_handler, &a, &ctl))) {
    fprintf(stderr, "mobility-agent run: cannot serve the control socket in %s: %s\n", state_dir, rpl_strerror(err));
    cbt_close(a.cbt);
    return 1;
  }
  struct sigaction sa = {.sa_handler = on_signal};
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  srand((unsigned)(time(NULL) ^ getpid()));
  log_info("mobility-agent %s: agent %s, appliance %s, %zu protected disk(s)", RPL_VERSION, a.st.agent_id,
           a.st.appliance, a.st.ndisks);
  sd_notify_ready("agent running");

  /* A signal only sets the flag: a thread watches it and wakes the session's poll. */
  pthread_t watcher;
  pthread_create(&watcher, NULL, watch_stop, &a);
  session_loop(&a);
  pthread_join(watcher, NULL);

  sd_notify_stopping();
  log_info("stopping");
  control_server_stop(ctl);
  for (size_t i = 0; i < AGENT_MAX_DISKS; i++) {
    pipeline_destroy(a.pipes[i]);
    if (a.rt[i].fd >= 0)
      close(a.rt[i].fd);
  }
  cbt_close(a.cbt);
  SSL_CTX_free(a.ctx);
  proto_buf_free(&a.out);
  close(a.wake);
  return 0;
}
