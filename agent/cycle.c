/* cycle.c - one cycle of one disk: flip the tracker's generation, read the frozen set through the
 * pipeline and send it (after a hash comparison with the replica, for a resync), CYCLE_END, the ACK,
 * then commit; on the session thread (points) or a cycle thread of its own (cycle_workers.c). */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "daemon.h"
#include "rpl_clock.h"
#include "rpl_log.h"

#define DRAIN_BATCH       65536   /* extents per cbt_drain call */
#define RESYNC_CHUNK      (1u << 20)
#define HASHES_PER_FRAME  4096u

/* The progress status shows starts again from 0 of total_bytes. */
static void restart_progress(struct agent *a, struct disk_rt *rt, uint64_t total_bytes)
{
  pthread_mutex_lock(&a->lock);
  rt->sync_done = 0;
  rt->sync_start_ms = rpl_mono_ms();
  rt->sync_total = total_bytes;
  pthread_mutex_unlock(&a->lock);
}

/* ---- sending extents ----------------------------------------------------------------------- */

static rpl_err emit_extent(void *arg, struct proto_extent *m)
{
  struct cycle_send *cs = arg;
  if (atomic_load(&agent_stopping))
    return RPL_E_CANCELLED; /* hand the cycle back: uncommitted, it is re-reported at the next flip */
  memcpy(m->disk_id, cs->a->st.disks[cs->disk].id, PROTO_ID_SIZE);
  m->cycle = cs->cycle;
  rpl_err err = conn_send_extent(cs->a->conn, m);
  if (err)
    return err;
  proto_digest_update(&cs->digest, m->hash);
  if (cs->record_units)
    sent_hashes_add(cs->a->rt[cs->disk].sent, m->offset, m->length, pipeline_unit_hashes(m));
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
    /* The level goes up only when the sends waited for the appliance, not for their own TLS. */
    struct pipeline_config cfg = {PIPELINE_CONFIG_DEFAULTS, .link_wait_ns = conn_send_wait_ns};
    rpl_err err = pipeline_create(a->rt[i].fd, &cfg, &a->pipes[i]);
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
  char level[16];
  rpl_err err = pipeline_run(p, px, n, emit_extent, cs, &st);
  if (!err)
    log_debug("%s: cycle %" PRIu64 ": %" PRIu64 " extents (%" PRIu64 " zero, %" PRIu64 " zstd of %" PRIu64
              " tried; %" PRIu64 " windows where zstd was futile), %" PRIu64
              " bytes sent as %" PRIu64 "; read extents waited %" PRIu64 " ms in all for a worker; the sends took %" PRIu64
              " ms, %" PRIu64 " of them waiting for the link; zstd level now %s", cs->a->st.disks[cs->disk].device,
              cs->cycle, st.extents, st.zero_extents, st.zstd_extents, st.zstd_tried_extents, st.futile_windows,
              st.raw_bytes, st.payload_bytes,
              st.read_ns_waiting_workers / 1000000, st.emit_ns / 1000000, st.link_wait_ns / 1000000,
              pipeline_level_text(st.zstd_level, level));
  return err;
}

/* Reads and sends one batch of byte extents, splitting them to the pipeline's extent size. */
void cycle_send_release(struct cycle_send *cs)
{
  if (cs->sent) {
    cbt_extents_free(cs->sent);
    free(cs->sent);
    cs->sent = NULL;
  }
  proto_buf_free(&cs->out);
}

/* Sends what is encoded in cs->out (whole frames, never interleaved with another thread's). */
static rpl_err send_cs_out(struct cycle_send *cs)
{
  rpl_err err = conn_send(cs->a->conn, &cs->out);
  proto_buf_reset(&cs->out);
  return err;
}

/* The next frame for the cycle: from its mailbox (a cycle thread), or read off the connection by the
 * session thread itself (a point's cycles), which then handles what else comes as it did before cycles
 * ran on threads. The caller frees *own (its payload) with cycle_frame_free. */
static rpl_err next_frame(struct cycle_send *cs, struct proto_frame *f, struct cycle_frame *own)
{
  struct agent *a = cs->a;
  memset(own, 0, sizeof *own);
  if (cs->by_mailbox) {
    rpl_err err;
    do /* no limit of its own: the session thread ends it when the connection does, or the agent stops */
      err = cycle_router_take(&a->router, cs->box, 1000, own);
    while (err == RPL_E_TIMEOUT && !atomic_load(&agent_stopping));
    if (err == RPL_E_TIMEOUT)
      err = RPL_E_CANCELLED;
    if (!err)
      *f = own->f;
    return err;
  }
  for (;;) {
    rpl_err err = conn_recv(a->conn, f, CONN_IO_TIMEOUT_MS);
    if (err)
      return err;
    if (f->type == PROTO_POINT)
      err = points_handle_reply(a, f); /* the answer to an earlier request */
    else if (f->type == PROTO_UNPROTECT_REQUEST)
      err = session_unprotect_request(a, f); /* done once this cycle ends */
    else if (f->type == PROTO_GROUP_THAW)
      err = group_thaw_on_frame(a, f); /* a group point given up: the appliance may say so during a cycle */
    else if (f->type == PROTO_STORED)
      err = session_stored(a, f);
    else if (f->type == PROTO_MEMBERS)
      err = session_members(a, f);
    else if (f->type != PROTO_HEARTBEAT)
      return RPL_OK;
    if (err)
      return err;
  }
}

/* What the cycle sent, kept until its ACK puts it in the disk's retained set. */
static void note_sent(struct cycle_send *cs, const struct cbt_extent *x, size_t n)
{
  if (cs->sent_incomplete)
    return;
  if (!cs->sent && (cs->sent = malloc(sizeof *cs->sent)))
    cbt_extents_init(cs->sent, RETAIN_EXTENTS_MAX, 0);
  bool failed = !cs->sent;
  for (size_t i = 0; !failed && i < n; i++) /* in any order: a point's second read goes back */
    failed = retain_append(cs->sent, x[i].offset, x[i].length) != RPL_OK;
  if (failed) {
    cs->sent_incomplete = true;
    cycle_send_release(cs);
  }
}

static rpl_err send_extents(struct cycle_send *cs, const struct cbt_extent *x, size_t n)
{
  struct pipeline *p;
  rpl_err err = pipeline_for(cs->a, cs->disk, &p);
  if (err)
    return err;
  pipeline_set_unit_hashes(p, cs->record_units);
  note_sent(cs, x, n);
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

/* ---- resync by comparison ------------------------------------------------------------------ */

struct hash_pass {
  struct agent *a;
  struct cycle_send *cs;      /* the cycle whose HASHES these are (its out buffer) */
  size_t disk;
  uint8_t *hashes;      /* HASHES_PER_FRAME * PROTO_HASH_SIZE */
  uint32_t n;
  uint64_t first_chunk; /* of hashes[0] */
};

static rpl_err flush_hashes(struct hash_pass *hp)
{
  if (!hp->n)
    return RPL_OK;
  struct proto_hashes m = {.chunk_size = RESYNC_CHUNK, .first_chunk = hp->first_chunk, .count = hp->n,
                           .hashes = hp->hashes};
  memcpy(m.disk_id, hp->a->st.disks[hp->disk].id, PROTO_ID_SIZE);
  rpl_err err = proto_encode_hashes(&hp->cs->out, &m);
  if (!err)
    err = send_cs_out(hp->cs);
  hp->first_chunk += hp->n;
  hp->n = 0;
  return err;
}

static rpl_err emit_hash(void *arg, struct proto_extent *m)
{
  struct hash_pass *hp = arg;
  if (atomic_load(&agent_stopping))
    return RPL_E_CANCELLED;
  memcpy(hp->hashes + (size_t)hp->n * PROTO_HASH_SIZE, m->hash, PROTO_HASH_SIZE);
  pthread_mutex_lock(&hp->a->lock);
  hp->a->rt[hp->disk].sync_done += m->length;
  pthread_mutex_unlock(&hp->a->lock);
  if (++hp->n == HASHES_PER_FRAME)
    return flush_hashes(hp);
  return RPL_OK;
}

/* Hashes the whole disk in RESYNC_CHUNK chunks and sends them as HASHES. */
static rpl_err send_disk_hashes(struct agent *a, struct cycle_send *cs)
{
  struct disk_rt *rt = &a->rt[cs->disk];
  struct pipeline *p;
  struct pipeline_config cfg = {.compress = 0, .max_extent = RESYNC_CHUNK};
  rpl_err err = pipeline_create(rt->fd, &cfg, &p); /* hashing only: no compression */
  if (err)
    return err;
  struct hash_pass hp = {.a = a, .cs = cs, .disk = cs->disk, .hashes = malloc((size_t)HASHES_PER_FRAME * PROTO_HASH_SIZE)};
  size_t nchunks = (size_t)((rt->size + RESYNC_CHUNK - 1) / RESYNC_CHUNK);
  struct pipeline_extent *px = calloc(nchunks, sizeof *px);
  if (!hp.hashes || !px)
    err = RPL_E_NOMEM;
  if (!err) {
    restart_progress(a, rt, rt->size);
    pipeline_split_extents(0, rt->size, RESYNC_CHUNK, px, nchunks);
    err = pipeline_run(p, px, nchunks, emit_hash, &hp, NULL);
  }
  if (!err)
    err = flush_hashes(&hp);
  pipeline_destroy(p);
  free(px);
  free(hp.hashes);
  return err;
}

/* The appliance's NEED, which it sends once it has every hash, as the byte extents to send. The
 * caller owns *out (free). */
static rpl_err receive_need(struct agent *a, struct cycle_send *cs, struct cbt_extent **out, size_t *nout)
{
  struct disk_rt *rt = &a->rt[cs->disk];
  struct proto_frame f;
  struct cycle_frame own;
  rpl_err err = next_frame(cs, &f, &own);
  if (err)
    return err;
  struct proto_need need;
  if (f.type != PROTO_NEED || (err = proto_decode_need(&f, &need))) {
    cycle_frame_free(&own);
    return err ? err : RPL_E_PROTO_UNEXPECTED;
  }
  struct cbt_extent *x = calloc(need.count ? need.count : 1, sizeof *x);
  if (!x) {
    cycle_frame_free(&own);
    return RPL_E_NOMEM;
  }
  uint64_t bytes = 0;
  for (uint32_t i = 0; i < need.count; i++) {
    struct proto_need_range r = proto_need_range_at(&need, i);
    uint64_t off = r.first_chunk * need.chunk_size, len = (uint64_t)r.count * need.chunk_size;
    if (off >= rt->size) {
      free(x);
      cycle_frame_free(&own);
      return RPL_E_PROTO_FIELD;
    }
    if (len > rt->size - off)
      len = rt->size - off;
    x[i] = (struct cbt_extent){off, len};
    bytes += len;
  }
  log_notice("%s: resync by comparison: %" PRIu64 " MiB of %" PRIu64 " MiB differ", a->st.disks[cs->disk].device,
             bytes >> 20, rt->size >> 20);
  restart_progress(a, rt, bytes);
  *out = x;
  *nout = need.count;
  cycle_frame_free(&own);
  return RPL_OK;
}

/* Sends only the chunks of the disk that differ from the replica. */
static rpl_err send_differing_chunks(struct agent *a, struct cycle_send *cs)
{
  rpl_err err = send_disk_hashes(a, cs);
  struct cbt_extent *x = NULL;
  size_t n = 0;
  if (!err)
    err = receive_need(a, cs, &x, &n);
  if (!err)
    err = send_extents(cs, x, n);
  free(x);
  return err;
}

/* ---- the cycle's body ---------------------------------------------------------------------- */

/* Whether the cycle reads the whole disk (*full: the appliance asked for it, or the tracker requires
 * a resync) and, when only the tracker does, compares first (*compare: the replica holds data, only
 * what differs travels). *resync_count is the tracker's resync to acknowledge, 0 for none. */
static rpl_err plan_cycle(struct agent *a, const char *dev, uint64_t announced, bool *full, bool *compare,
                          uint64_t *resync_count)
{
  struct cbt_status s;
  pthread_mutex_lock(&a->cbt_lock);
  rpl_err err = cbt_status_get(a->cbt, dev, &s);
  pthread_mutex_unlock(&a->cbt_lock);
  if (err)
    return err;
  *resync_count = 0;
  *compare = false;
  if (s.resync_required || *full) {
    *resync_count = s.resync_count;
    *compare = !*full;
    *full = true;
    if (s.resync_required && s.resync_reason != CBT_RESYNC_NONE)
      log_notice("%s: resync (%s): comparing the whole disk with the replica", dev,
                 cbt_resync_reason_name(s.resync_reason));
  }
  /* The disk changed size since it was announced (a point's other disk grew): this cycle reads the
   * announced size, so only a cycle at the new size (announced first) acknowledges the resync. */
  if (s.size != announced)
    *resync_count = 0;
  return RPL_OK;
}

/* The whole disk is read: the frozen set is covered; drain it so that it can be committed. */
static rpl_err drain_covered_set(struct agent *a, const char *dev)
{
  struct cbt_extents skip;
  rpl_err err;
  cbt_extents_init(&skip, DRAIN_BATCH, 0);
  do {
    cbt_extents_clear(&skip);
    pthread_mutex_lock(&a->cbt_lock);
    err = cbt_drain(a->cbt, dev, &skip);
    pthread_mutex_unlock(&a->cbt_lock);
  } while (err == RPL_E_AGAIN);
  cbt_extents_free(&skip);
  return err;
}

/* Adds a drained batch to what the caller keeps of the cycle's set; past its limit the copy is
 * marked incomplete (the caller then cannot show what it read was not rewritten). */
static void keep_batch(struct kept_set *keep, const struct cbt_extents *batch)
{
  for (size_t i = 0; keep && !keep->incomplete && i < batch->count; i++)
    if (cbt_extents_add(&keep->set, batch->items[i].offset, batch->items[i].length))
      keep->incomplete = true;
}

/* Drains the frozen set batch by batch and sends each. */
static rpl_err send_frozen_set(struct agent *a, struct cycle_send *cs, const char *dev, struct kept_set *keep)
{
  struct disk_rt *rt = &a->rt[cs->disk];
  struct cbt_extents set;
  rpl_err err;
  cbt_extents_init(&set, DRAIN_BATCH, 1u << 20);
  do {
    cbt_extents_clear(&set);
    pthread_mutex_lock(&a->cbt_lock);
    err = cbt_drain(a->cbt, dev, &set);
    pthread_mutex_unlock(&a->cbt_lock);
    if (err && err != RPL_E_AGAIN)
      break;
    pthread_mutex_lock(&a->lock);
    rt->sync_total += cbt_extents_bytes(&set);
    pthread_mutex_unlock(&a->lock);
    keep_batch(keep, &set);
    rpl_err e2 = send_extents(cs, set.items, set.count);
    if (e2)
      err = e2;
  } while (err == RPL_E_AGAIN);
  cbt_extents_free(&set);
  return err;
}

rpl_err cycle_flip(struct agent *a, struct cycle_send *cs, bool full, struct cycle_plan *plan)
{
  const char *dev = a->st.disks[cs->disk].device;
  plan->full = full;
  /* The flip first: an event it finds (a completion the kernel skipped before it) makes this very
   * cycle a resync. */
  pthread_mutex_lock(&a->cbt_lock);
  rpl_err err = cbt_flip(a->cbt, dev, &plan->gen);
  pthread_mutex_unlock(&a->cbt_lock);
  if (!err)
    err = plan_cycle(a, dev, a->rt[cs->disk].size, &plan->full, &plan->compare, &plan->resync_count);
  pthread_mutex_lock(&a->lock);
  bool too_big = a->rt[cs->disk].cache == CACHE_TOO_BIG;
  pthread_mutex_unlock(&a->lock);
  if (!err && plan->full && too_big) {
    /* The resync the appliance asks for because the changes did not fit in its cache: the replica
     * holds every cycle before them, so only the chunks that differ from it travel. */
    plan->compare = true;
    log_notice("%s: the resync the appliance's cache asked for compares the disk with the replica", dev);
  }
  return err;
}

rpl_err cycle_read(struct agent *a, struct cycle_send *cs, const struct cycle_plan *plan, struct kept_set *keep)
{
  const char *dev = a->st.disks[cs->disk].device;
  struct disk_rt *rt = &a->rt[cs->disk];
  bool full = plan->full, compare = plan->compare;
  rpl_err err;
  if (keep && full)
    keep->incomplete = true; /* a whole-disk read is never a point */
  /* What a delta sends is recorded unit by unit; a whole-disk read or a comparison is not, and makes
   * the record incomplete once committed. */
  cs->record_units = !full && !compare && rt->sent;
  if (rt->sent)
    sent_hashes_begin(rt->sent, cs->record_units, rt->size);
  if (full && (err = drain_covered_set(a, dev)))
    return err;
  pthread_mutex_lock(&a->lock);
  rt->sync_done = 0;
  rt->sync_start_ms = rpl_mono_ms();
  rt->sync_total = full ? rt->size : 0;
  if (full && rt->phase != PHASE_NEW && rt->phase != PHASE_SYNCING)
    rt->phase = PHASE_RESYNC;
  pthread_mutex_unlock(&a->lock);
  if (compare)
    return send_differing_chunks(a, cs);
  if (full) {
    struct cbt_extent whole = {0, rt->size};
    return send_extents(cs, &whole, 1);
  }
  return send_frozen_set(a, cs, dev, keep);
}

rpl_err cycle_send_body(struct agent *a, struct cycle_send *cs, bool full, uint64_t *gen, uint64_t *resync_count)
{
  struct cycle_plan plan;
  rpl_err err = cycle_flip(a, cs, full, &plan);
  *gen = plan.gen;
  *resync_count = plan.resync_count;
  return err ? err : cycle_read(a, cs, &plan, NULL);
}

rpl_err cycle_send_end(struct agent *a, struct cycle_send *cs, uint8_t consistency)
{
  cs->end.cycle = cs->cycle;
  cs->end.consistency = consistency;
  memcpy(cs->end.disk_id, a->st.disks[cs->disk].id, PROTO_ID_SIZE);
  proto_digest_final(&cs->digest, cs->end.digest);
  rpl_err err = proto_encode_cycle_end(&cs->out, &cs->end);
  return err ? err : send_cs_out(cs);
}

/* ---- the ACK and after --------------------------------------------------------------------- */

bool cycle_cache_quiet(struct agent *a)
{
  uint64_t now = rpl_mono_ms();
  for (size_t i = 0; i < a->st.ndisks; i++)
    if (a->rt[i].cache == CACHE_WAIT && a->rt[i].cache_quiet_until_ms > now)
      return true;
  return false;
}

/* The appliance's cache refused the cycle: for now (wait, with a pause that doubles while it lasts,
 * its changes kept in the tracker), or for good (the disk's next cycle is a resync the appliance
 * writes straight into its storage). Said in the log once per change, and in status. */
static void cache_refused(struct agent *a, size_t disk, uint64_t cycle, rpl_err why, const struct proto_nack *m)
{
  const char *dev = a->st.disks[disk].device;
  pthread_mutex_lock(&a->lock);
  struct disk_rt *rt = &a->rt[disk];
  enum cache_answer before = rt->cache;
  uint64_t pause = 0;
  if (why == RPL_E_CACHE_WAIT) {
    pause = CACHE_WAIT_FIRST_MS;
    for (unsigned i = 0; i < rt->cache_waits && pause < CACHE_WAIT_MAX_MS; i++)
      pause *= 2;
    if (pause > CACHE_WAIT_MAX_MS)
      pause = CACHE_WAIT_MAX_MS;
    rt->cache_waits++;
    rt->cache = CACHE_WAIT;
    rt->cache_quiet_until_ms = rpl_mono_ms() + pause;
    snprintf(rt->cache_note, sizeof rt->cache_note,
             "waiting for the appliance's cache, the changes kept (%u refusal(s) in a row): %.*s", rt->cache_waits,
             (int)m->message.len, (const char *)m->message.ptr);
  } else {
    rt->cache = CACHE_TOO_BIG;
    rt->cache_waits = 0;
    rt->cache_quiet_until_ms = 0;
    snprintf(rt->cache_note, sizeof rt->cache_note, "resync by comparison next, straight into the storage: %.*s",
             (int)m->message.len, (const char *)m->message.ptr);
  }
  char note[sizeof rt->cache_note];
  snprintf(note, sizeof note, "%s", rt->cache_note);
  pthread_cond_broadcast(&a->changed);
  pthread_mutex_unlock(&a->lock);
  if (before != (why == RPL_E_CACHE_WAIT ? CACHE_WAIT : CACHE_TOO_BIG))
    log_warn("%s: cycle %" PRIu64 " refused: %s", dev, cycle, note);
  else
    log_debug("%s: cycle %" PRIu64 " refused again (%s); pausing %" PRIu64 " ms", dev, cycle, rpl_errname(why), pause);
}

static rpl_err nack_received(struct agent *a, size_t disk, uint64_t cycle, const struct proto_frame *f)
{
  struct proto_nack m;
  rpl_err err = proto_decode_nack(f, &m);
  if (err)
    return err;
  if (m.reason == RPL_E_CACHE_WAIT || m.reason == RPL_E_CYCLE_TOO_BIG) {
    cache_refused(a, disk, cycle, (rpl_err)m.reason, &m);
    return RPL_OK;
  }
  pthread_mutex_lock(&a->lock);
  a->rt[disk].refused++;
  pthread_mutex_unlock(&a->lock);
  log_warn("%s: cycle %" PRIu64 " refused by the appliance (%s: %.*s); it is sent again",
           a->st.disks[disk].device, cycle, rpl_errname((rpl_err)m.reason), (int)m.message.len,
           (const char *)m.message.ptr);
  return RPL_OK;
}

rpl_err cycle_wait_ack(struct cycle_send *cs, bool *acked)
{
  *acked = false;
  struct proto_frame f;
  struct cycle_frame own;
  rpl_err err = next_frame(cs, &f, &own);
  if (err)
    return err;
  if (f.type == PROTO_ACK) {
    struct proto_ack m;
    if (!(err = proto_decode_ack(&f, &m)) &&
        (agent_disk_index(cs->a, m.disk_id) != (ssize_t)cs->disk || m.cycle != cs->cycle))
      err = RPL_E_PROTO_UNEXPECTED;
    *acked = !err;
  } else if (f.type == PROTO_NACK) {
    err = nack_received(cs->a, cs->disk, cs->cycle, &f);
  } else {
    err = RPL_E_PROTO_UNEXPECTED;
  }
  cycle_frame_free(&own);
  return err;
}

rpl_err cycle_after_ack(struct agent *a, struct cycle_send *cs, uint64_t gen, uint64_t resync_count, bool full)
{
  const char *dev = a->st.disks[cs->disk].device;
  pthread_mutex_lock(&a->cbt_lock);
  rpl_err err = cbt_commit(a->cbt, dev, gen);
  pthread_mutex_unlock(&a->cbt_lock);
  if (a->rt[cs->disk].sent) /* what it sent is in the replica now */
    sent_hashes_commit(a->rt[cs->disk].sent);
  if (err == RPL_E_CBT_GENERATION_CHANGED)
    err = RPL_OK; /* re-reported at the next flip: nothing lost */
  if (!err && full && resync_count) {
    pthread_mutex_lock(&a->cbt_lock);
    rpl_err ack = cbt_ack_resync(a->cbt, dev, resync_count);
    pthread_mutex_unlock(&a->cbt_lock);
    if (ack == RPL_E_CBT_ACK_STALE)
      log_notice("%s: a new resync event happened during the resync: another follows", dev);
    else if (ack)
      err = ack;
  }
  /* Until the appliance says its storage holds them: a takeover may ask for them again. */
  pthread_mutex_lock(&a->retain_lock);
  if (a->peer_replay)
    retain_acked(&a->rt[cs->disk].retain, cs->cycle, cs->sent, cs->sent_incomplete);
  else
    retain_free(&a->rt[cs->disk].retain); /* an appliance that never says what is stored asks for no replay */
  pthread_mutex_unlock(&a->retain_lock);
  cycle_send_release(cs);
  struct cbt_status s;
  pthread_mutex_lock(&a->cbt_lock);
  bool resync = cbt_status_get(a->cbt, dev, &s) == RPL_OK && s.resync_required;
  pthread_mutex_unlock(&a->cbt_lock);
  pthread_mutex_lock(&a->lock);
  struct disk_rt *rt = &a->rt[cs->disk];
  rt->last_cycle = cs->cycle;
  rt->cycles++;
  rt->bytes_sent += cs->end.payload_bytes;
  rt->raw_bytes += cs->end.raw_bytes;
  rt->last_ack = time(NULL);
  rt->phase = resync ? PHASE_RESYNC : PHASE_PROTECTED;
  rt->error[0] = '\0';
  bool cache_was_refusing = rt->cache != CACHE_TOOK;
  rt->cache = CACHE_TOOK;
  rt->cache_waits = 0;
  rt->cache_quiet_until_ms = 0;
  rt->cache_note[0] = '\0';
  pthread_cond_broadcast(&a->changed);
  pthread_mutex_unlock(&a->lock);
  if (cache_was_refusing)
    log_notice("%s: cycle %" PRIu64 " acknowledged: the appliance takes this disk's cycles again", dev, cs->cycle);
  return err;
}

void note_read_rate(struct agent *a, size_t disk, uint64_t bytes, uint64_t ms)
{
  if (bytes < (1u << 20) || !ms)
    return; /* too little to say anything of the disk's speed */
  uint64_t rate = bytes * 1000 / ms;
  pthread_mutex_lock(&a->lock);
  uint64_t *r = &a->rt[disk].read_bytes_per_s;
  *r = *r ? (*r * 3 + rate) / 4 : rate;
  pthread_mutex_unlock(&a->lock);
}

rpl_err cycle_run(struct agent *a, size_t disk, uint64_t cycle, uint8_t kind, int box, bool *ended)
{
  struct cycle_send cs = {.a = a, .disk = disk, .cycle = cycle, .by_mailbox = box >= 0, .box = box};
  *ended = false;
  proto_digest_init(&cs.digest);
  bool full = kind == PROTO_CYCLE_RESYNC;
  uint64_t gen = 0, count = 0;
  pthread_mutex_lock(&a->lock);
  if (full && a->rt[disk].phase == PHASE_NEW)
    a->rt[disk].phase = PHASE_SYNCING;
  pthread_mutex_unlock(&a->lock);
  uint64_t t0 = rpl_mono_ms();
  rpl_err err = cycle_send_body(a, &cs, full, &gen, &count);
  if (!err && !(err = cycle_send_end(a, &cs, PROTO_FUZZY)))
    *ended = true;
  uint64_t t1 = rpl_mono_ms();
  note_read_rate(a, disk, cs.end.raw_bytes, t1 - t0);
  bool acked = false;
  if (!err)
    err = cycle_wait_ack(&cs, &acked);
  log_debug("%s: cycle %" PRIu64 ": sent in %" PRIu64 " ms, %s %" PRIu64 " ms later", a->st.disks[disk].device,
            cycle, t1 - t0, acked ? "ACK" : "no ACK", rpl_mono_ms() - t1);
  if (!err && acked)
    err = cycle_after_ack(a, &cs, gen, count, full || count);
  cycle_send_release(&cs);
  char why[RPL_DETAIL_MAX + 128];
  if (err && err != RPL_E_IO && err != RPL_E_TLS && err != RPL_E_CANCELLED)
    log_warn("%s: cycle %" PRIu64 " failed: %s", a->st.disks[disk].device, cycle,
             rpl_describe(err, why, sizeof why));
  return err;
}
