/* session.c - one agent's session: HELLO, disks attached, cycles received (verified, journaled or
 * written straight into the store) and ACKed once durable, resync by comparison, the frame loop. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <uuid/uuid.h>

#include "agent_readiness.h"
#include "channel.h"
#include "events.h"
#include "group_point.h"
#include "rpl_log.h"
#include "session.h"

#define DIRTY_TRIGGER       (256ull << 20) /* an agent backlog this large starts a cycle before the RPO timer */

#define HEARTBEAT_SAVE_S    30

#define REVOKE_CHECK_MS     5000  /* how soon a session notices its agent was revoked */

rpl_err flush_out(struct session *s)
{
  rpl_err err = conn_send(s->c, &s->out);
  proto_buf_reset(&s->out);
  return err;
}

rpl_err send_error(struct conn *c, rpl_err code, const char *msg)
{
  struct proto_buf b = {0};
  struct proto_error e = {.code = code, .message = {(const uint8_t *)msg, (uint32_t)strlen(msg)}};
  rpl_err err = proto_encode_error(&b, &e);
  if (!err)
    err = conn_send(c, &b);
  proto_buf_free(&b);
  return err;
}

struct rx_slot *slot_of(struct session *s, const uint8_t id[PROTO_ID_SIZE])
{
  for (size_t i = 0; i < s->nslots; i++)
    if (!memcmp(s->slots[i].disk->id, id, PROTO_ID_SIZE))
      return &s->slots[i];
  return NULL;
}

/* The disk's agent connected again while its earlier session still holds the disk (that session
 * has not noticed yet that its connection is gone): the earlier session is told to let go (it
 * sees the epoch change within a poll, ends, and drops its unfinished cycle), and this waits for
 * it, up to RECLAIM_WAIT_MS. Lock held (released while waiting). True when the disk is free. */
#define RECLAIM_WAIT_MS 20000

static bool reclaim_disk(struct appliance *a, struct disk *d)
{
  d->epoch++;
  uint64_t deadline = rpl_mono_ms() + RECLAIM_WAIT_MS;
  while (d->attached && !atomic_load(&appliance_stopping) && rpl_mono_ms() < deadline) {
    struct timespec ts = rpl_realtime_in_ms(200);
    pthread_cond_timedwait(&a->applied, &a->lock, &ts);
  }
  return !d->attached;
}

static int count_disk(const struct catalog_disk *cd, void *arg)
{
  if (!cd->unprotected_time) /* an unprotected disk's replica is kept, but it is not served */
    (*(size_t *)arg)++;
  return 0;
}

/* Whether the agent may add a disk the catalog does not know yet (MAX_AGENT_DISKS). */
static bool agent_disk_room(struct appliance *a, const uint8_t agent[PROTO_ID_SIZE], const uint8_t disk[PROTO_ID_SIZE])
{
  struct catalog_disk known;
  if (catalog_disk_get(a->cat, disk, &known) == RPL_OK)
    return true;
  size_t n = 0;
  rpl_err e = catalog_disk_foreach(a->cat, agent, count_disk, &n);
  return !e && n < MAX_AGENT_DISKS;
}

/* DISK again for a disk this session serves: the agent saw it grow. The replica grows before any
 * extent past the old end comes (a store not open yet is opened at the new size), then the receiver
 * and the catalog take the size. A smaller or unservable size puts the disk in error with the
 * reason, so that no cycle is asked of it (never refused in a loop). */
static rpl_err resize_attached(struct session *s, struct rx_slot *sl, const struct proto_disk *m)
{
  struct appliance *a = s->a;
  struct disk *d = sl->disk;
  rpl_err err = RPL_OK;
  pthread_mutex_lock(&a->lock);
  uint64_t was = d->size;
  struct store *st = d->store;
  if (m->size_bytes == was) {
    pthread_mutex_unlock(&a->lock);
    return RPL_OK; /* announced again at the size it has */
  }
  if (m->size_bytes < was)
    err = rpl_fail(RPL_E_REPLICA_SHRINK, "the disk is now %" PRIu64 " bytes, its replica %" PRIu64, m->size_bytes, was);
  else if (m->size_bytes > (uint64_t)INT64_MAX || m->size_bytes % 512 ||
           (a->backend->max_disk_bytes && m->size_bytes > a->backend->max_disk_bytes))
    err = rpl_fail(RPL_E_LIMIT, "the disk grew to %" PRIu64 " bytes: %s storage takes no disk that large", m->size_bytes,
                   a->backend->name);
  else if (!st)
    d->size = m->size_bytes;
  pthread_mutex_unlock(&a->lock);
  if (!err && st && (err = st->ops->resize(st, m->size_bytes)) == RPL_OK) { /* no lock: storage calls */
    pthread_mutex_lock(&a->lock);
    d->size = m->size_bytes;
    pthread_mutex_unlock(&a->lock);
  }
  struct catalog_disk cd;
  if (!err && (err = catalog_disk_get(a->cat, d->id, &cd)) == RPL_OK) {
    cd.size_bytes = m->size_bytes;
    err = catalog_disk_upsert(a->cat, &cd);
  }
  char id[37], why[RPL_DETAIL_MAX + 128];
  id_text(d->id, id);
  if (err) {
    rpl_describe(err, why, sizeof why);
    log_warn("agent %s: disk %s (%s) cannot take its new size: %s", s->agent_text, id, d->name, why);
    pthread_mutex_lock(&a->lock);
    d->state = CATALOG_DISK_ERROR;
    snprintf(d->reason, sizeof d->reason, "%.*s", (int)sizeof d->reason - 1, why);
    snprintf(why, sizeof why, "%s", d->reason); /* what the catalog keeps of it */
    pthread_mutex_unlock(&a->lock);
    rpl_err e = catalog_disk_set_state(a->cat, d->id, CATALOG_DISK_ERROR, why);
    (void)e;
    return RPL_OK; /* the agent's other disks go on */
  }
  receiver_set_disk_size(sl->rx, m->size_bytes);
  log_notice("agent %s: disk %s (%s) grew from %" PRIu64 " to %" PRIu64 " MiB: its replica grew", s->agent_text, id,
             d->name, was >> 20, m->size_bytes >> 20);
  return RPL_OK;
}

static rpl_err attach_disk(struct session *s, const struct proto_disk *m)
{
  struct appliance *a = s->a;
  char id[37];
  id_text(m->disk_id, id);
  struct rx_slot *have = slot_of(s, m->disk_id);
  if (have)
    return resize_attached(s, have, m);
  if (s->nslots == sizeof s->slots / sizeof s->slots[0])
    return RPL_E_LIMIT;
  struct catalog_disk cd = {0};
  memcpy(cd.id, m->disk_id, PROTO_ID_SIZE);
  memcpy(cd.agent_id, s->agent, PROTO_ID_SIZE);
  snprintf(cd.name, sizeof cd.name, "%.*s", (int)m->name.len, (const char *)m->name.ptr);
  cd.size_bytes = m->size_bytes;
  cd.sector_size = m->sector_size;
  pthread_mutex_lock(&a->lock);
  struct disk *d = find_disk(a, m->disk_id);
  rpl_err err = RPL_OK;
  bool unopened = false;
  /* Everything that can refuse the disk is checked before its row is written. */
  if (d && memcmp(d->agent, s->agent, PROTO_ID_SIZE)) {
    err = rpl_fail(RPL_E_PERMISSION, "the disk id is another agent's disk");
  } else if (d && d->unprotected_time) { /* an agent state from before the unprotect */
    err = rpl_fail(RPL_E_PERMISSION, "the disk was unprotected: protect the device again (it gets a new disk id)");
  } else if (d && d->attached && !reclaim_disk(a, d)) {
    err = RPL_E_EXISTS;
  } else if (d && m->size_bytes < d->size) {
    err = rpl_fail(RPL_E_REPLICA_SHRINK, "the disk is now %" PRIu64 " bytes, its replica %" PRIu64, m->size_bytes,
                   d->size);
  } else if (!d && !agent_disk_room(a, s->agent, m->disk_id)) {
    err = rpl_fail(RPL_E_LIMIT, "the agent has %d disks on this appliance already: unprotect one first",
                   MAX_AGENT_DISKS);
  } else if (m->size_bytes > (uint64_t)INT64_MAX) { /* past what a file offset or the catalog can hold */
    err = rpl_fail(RPL_E_LIMIT, "the disk is %" PRIu64 " GiB; %s storage takes no disk that large", m->size_bytes >> 30,
                   a->backend->name);
  } else if (a->backend->max_disk_bytes && m->size_bytes > a->backend->max_disk_bytes) {
    err = rpl_fail(RPL_E_LIMIT, "the disk is %" PRIu64 " GiB; %s storage takes disks of at most %" PRIu64 " GiB",
                   m->size_bytes >> 30, a->backend->name, a->backend->max_disk_bytes >> 30);
  } else {
    if (d && d->size != m->size_bytes) {
      /* The disk grew: the replica grows with it before any extent beyond the old end lands, and
       * before the catalog says the new size (a store not open yet is opened at the new size). One
       * that cannot grow (past its file system's largest file) refuses the disk, as it stood. */
      if (d->store && (err = d->store->ops->resize(d->store, m->size_bytes)) != RPL_OK)
        unopened = true; /* as a disk that cannot be opened: said below, the others go on */
      else
        d->size = m->size_bytes;
    }
    if (!err)
      err = catalog_disk_upsert(a->cat, &cd); /* refused in SQL too when another agent owns the row */
    if (!err && !d) {
      struct catalog_disk full;
      err = catalog_disk_get(a->cat, m->disk_id, &full);
      if (!err && (err = open_disk(a, &full, &d)) != RPL_OK && err != RPL_E_LIMIT) {
        rpl_err se = catalog_disk_set_state(a->cat, m->disk_id, CATALOG_DISK_ERROR,
                                            rpl_detail(err)[0] ? rpl_detail(err) : rpl_strerror(err));
        (void)se;
        unopened = true; /* said below; the agent's other disks go on */
      }
    }
  }
  if (!err) {
    d->attached = true;
    d->served_by = s;
    d->attached_ms = rpl_mono_ms();
    d->agent_unprotect_request = (s->agent_caps & PROTO_CAP_UNPROTECT_REQUEST) != 0;
    d->agent_group_point = (s->agent_caps & PROTO_CAP_GROUP_POINT) != 0;
    pthread_cond_signal(&a->work); /* the applier opens its page blob */
  }
  pthread_mutex_unlock(&a->lock);
  if (err == RPL_E_EXISTS) {
    /* Still held by the old session: this one ends, and the agent's next connection tries again
     * (returning OK here would leave the disk unserved until the agent happened to reconnect). */
    log_warn("agent %s: disk %s (%s) is still served by its earlier session: this session ends, the agent reconnects",
             s->agent_text, id, cd.name);
    rpl_err e = send_error(s->c, RPL_E_EXISTS, "the disk is still served by this agent's earlier session: reconnect");
    (void)e;
    return err;
  }
  if (err) {
    char why[RPL_DETAIL_MAX + 128];
    log_warn("agent %s: disk %s (%s) refused: %s", s->agent_text, id, cd.name, rpl_describe(err, why, sizeof why));
    /* A disk that cannot be served is not a reason to end the session: the agent's others go on. */
    return err == RPL_E_PERMISSION || err == RPL_E_REPLICA_SHRINK || err == RPL_E_LIMIT || unopened ? RPL_OK : err;
  }
  struct rx_slot *sl = &s->slots[s->nslots];
  memset(sl, 0, sizeof *sl);
  sl->disk = d;
  pthread_mutex_lock(&a->lock);
  sl->epoch = d->epoch;
  uint64_t base = d->last_committed;
  pthread_mutex_unlock(&a->lock);
  err = receiver_create(d->id, d->size, base, &sl->rx);
  if (err) {
    pthread_mutex_lock(&a->lock);
    d->attached = false;
    if (d->served_by == s)
      d->served_by = NULL;
    pthread_mutex_unlock(&a->lock);
    return err;
  }
  s->nslots++;
  log_info("agent %s: disk %s (%s, %" PRIu64 " MiB) attached, last committed cycle %" PRIu64, s->agent_text, id,
           cd.name, m->size_bytes >> 20, d->last_committed);
  return RPL_OK;
}

/* A cycle is written straight into the disk's store as it is verified, and made durable there
 * before the ACK; the journal only records that the cycle is in. The receive and the write overlap,
 * and the cache holds no copy of it. Only when no apply worker holds the disk and it has nothing
 * for one to do (no cycle unapplied, no point's image being made), the storage is not away, and the backend takes this cycle
 * (store_ops.direct_begin: a file replica any, a page blob the initial sync, or the resync of a disk
 * whose cycle did not fit in the cache). Anything else goes through the journal. */
static void start_direct(struct session *s, struct rx_slot *sl, uint64_t n, uint8_t kind)
{
  struct disk *d = sl->disk;
  struct journal_usage u;
  journal_get_usage(d->journal, &u);
  sl->direct = false;
  sl->direct_store = NULL;
  pthread_mutex_lock(&s->a->lock);
  /* A worker holding a disk with nothing to apply is on a short turn (its lease, a rehash, opening
   * its store): worth a moment's wait, as the cycle would otherwise go through the cache. */
  uint64_t until = rpl_mono_ms() + DIRECT_CLAIM_WAIT_MS;
  while (d->claimed && d->last_applied == d->last_committed && !d->snap_pending && !d->copy_due &&
         rpl_mono_ms() < until && !atomic_load(&appliance_stopping)) {
    struct timespec ts = rpl_realtime_in_ms(POLL_MS);
    pthread_cond_timedwait(&s->a->applied, &s->a->lock, &ts);
  }
  struct store *st = d->upload_waiting || d->lease_waiting ? NULL : d->store;
  /* No worker holds it: a worker's turn may still be finishing the cycle it applied last (trim,
   * image, rehash) after last_applied moved on. */
  bool idle = !d->claimed && d->last_applied == d->last_committed && !d->snap_pending && !d->copy_due;
  bool bypass = d->cache_bypass;
  pthread_mutex_unlock(&s->a->lock);
  if (!st || !idle || (s->a->no_direct && !bypass) || u.open_cycle || u.cycles_pending || u.last_applied != u.last_committed ||
      u.last_committed + 1 != n || !st->ops->direct_begin(st, n, kind, bypass))
    return;
  sl->direct = true;
  sl->direct_store = st;
  st->ops->get_stats(st, &sl->direct_stats);
  sl->direct_start_ms = rpl_mono_ms();
}

/* A write straight into the store failed: the cycle is NACKed, and the agent's next try goes
 * through the cache, which holds it while the storage is away (a lost lease is housekeeping's). */
static void direct_failed(struct session *s, struct rx_slot *sl, rpl_err err)
{
  struct disk *d = sl->disk;
  enum store_failure kind = sl->direct_store->ops->failure_kind(err);
  bool storage = kind == STORE_FAILURE_STORAGE;
  pthread_mutex_lock(&s->a->lock);
  s->a->m.storage_errors[kind]++;
  if (storage) {
    snprintf(d->reason, sizeof d->reason, "upload of cycle %" PRIu64 " waiting for storage: %s", sl->cycle,
             rpl_strerror(err));
    d->upload_waiting = true;
  }
  pthread_mutex_unlock(&s->a->lock);
  log_warn("disk %s: cycle %" PRIu64 " written straight into the %s failed: %s; the agent sends it again%s", d->name,
           sl->cycle, sl->direct_store->ops->name, rpl_strerror(err),
           storage ? ", into the cache while the storage is away" : "");
  if (storage)
    upload_gate_failed(s->a->gate, rpl_strerror(err));
}

/* The direct write of the slot's cycle is given up (NACK, lost connection). */
static void abort_direct(struct rx_slot *sl)
{
  if (sl->direct)
    sl->direct_store->ops->direct_abort(sl->direct_store);
  if (sl->direct && sl->disk->hidx)
    hashindex_direct_abort(sl->disk->hidx);
  sl->direct_store = NULL;
  sl->direct = false;
}

rpl_err start_cycle(struct session *s, struct rx_slot *sl, uint8_t kind, uint16_t group)
{
  uint64_t n = receiver_last_committed(sl->rx) + 1;
  uint8_t wire_kind = kind;
  if (proto_cycle_is_point(kind))
    kind = PROTO_CYCLE_RECOVERY_POINT; /* hooks or not is the agent's business: here a point is a point */
  if (kind == PROTO_CYCLE_REPLAY)
    kind = PROTO_CYCLE_PLAIN; /* changed blocks like any other cycle's: only the agent's choice of them differs */
  rpl_err err = receiver_begin(sl->rx, n, kind);
  if (err)
    return err;
  start_direct(s, sl, n, kind);
  pthread_mutex_lock(&s->a->lock);
  bool bypass = sl->disk->cache_bypass;
  pthread_mutex_unlock(&s->a->lock);
  if (!sl->direct && bypass)
    err = RPL_E_CYCLE_TOO_BIG; /* it would not fit in the cache again: the store must take it */
  else if (!sl->direct)
    err = journal_begin_cycle(sl->disk->journal, n, kind);
  if (err) {
    receiver_abort(sl->rx);
    return err;
  }
  struct proto_cycle_start m = {.cycle = n, .kind = wire_kind, .group = group};
  memcpy(m.disk_id, sl->disk->id, PROTO_ID_SIZE);
  if ((err = proto_encode_cycle_start(&s->out, &m)))
    return err;
  sl->cycle = n;
  sl->kind = kind;
  sl->replay = wire_kind == PROTO_CYCLE_REPLAY;
  sl->failed = false;
  s->cycles_open++;
  struct event ev = {.type = EVENT_STARTED, .cycle = n, .kind = kind, .open = s->cycles_open};
  memcpy(ev.disk_id, sl->disk->id, PROTO_ID_SIZE);
  events_emit(&ev);
  pthread_mutex_lock(&s->a->lock);
  sl->disk->last_start_ms = rpl_mono_ms();
  if (kind == PROTO_CYCLE_RESYNC && sl->disk->state == CATALOG_DISK_PROTECTED)
    sl->disk->state = CATALOG_DISK_RESYNC_REQUIRED;
  pthread_mutex_unlock(&s->a->lock);
  return RPL_OK;
}

static void need_reset(struct need_list *nl)
{
  free(nl->ranges);
  free(nl->buf);
  memset(nl, 0, sizeof *nl);
}

void drop_cycle(struct session *s, struct rx_slot *sl)
{
  need_reset(&sl->need);
  if (!sl->cycle)
    return;
  rpl_err e = journal_abandon_cycle(sl->disk->journal, sl->cycle);
  (void)e;
  receiver_abort(sl->rx);
  abort_direct(sl);
  sl->cycle = 0;
  s->cycles_open--;
}

static rpl_err nack(struct session *s, struct rx_slot *sl, rpl_err why)
{
  char id[37];
  id_text(sl->disk->id, id);
  char detail[RPL_DETAIL_MAX + 128];
  log_warn("agent %s: disk %s cycle %" PRIu64 " refused: %s", s->agent_text, id, sl->cycle,
           rpl_describe(why, detail, sizeof detail));
  /* With its detail: what the agent shows of a refusal (a cache's pause, its size) is the appliance's word. */
  size_t len = strlen(detail);
  struct proto_nack m = {.cycle = sl->cycle, .reason = why,
                         .message = {(const uint8_t *)detail, (uint32_t)(len < PROTO_MAX_STRING ? len : PROTO_MAX_STRING)}};
  memcpy(m.disk_id, sl->disk->id, PROTO_ID_SIZE);
  rpl_err e = journal_abandon_cycle(sl->disk->journal, sl->cycle);
  (void)e;
  receiver_abort(sl->rx);
  abort_direct(sl);
  need_reset(&sl->need);
  sl->failed = true;
  sl->failed_why = why;
  rpl_err err = proto_encode_nack(&s->out, &m);
  return err ? err : flush_out(s);
}

uint64_t cache_wait_more(struct disk *d)
{
  uint64_t delay = CACHE_WAIT_MIN_MS;
  for (unsigned i = 0; i < d->cache_waits && delay < CACHE_WAIT_MAX_MS; i++)
    delay *= 2;
  if (delay > CACHE_WAIT_MAX_MS)
    delay = CACHE_WAIT_MAX_MS;
  d->cache_waits++;
  d->cache_wait_until_ms = rpl_mono_ms() + delay;
  return delay;
}

/* The cache could not take the next extent of sl's cycle. Draining frees only what the older cycles
 * take: when the cycle fills most of the cache by itself it could never fit, and the disk goes round
 * the cache (a resync written straight into the store); else it waits for the cache to drain. The
 * reason NACKs the cycle; none of the disk starts again at once either way. */
static rpl_err cache_refused(struct session *s, struct rx_slot *sl)
{
  struct disk *d = sl->disk;
  struct journal_usage u;
  journal_get_usage(d->journal, &u);
  uint64_t others = u.bytes > u.open_bytes ? u.bytes - u.open_bytes : 0;
  bool too_big = u.open_bytes > u.limit_bytes / 2 && u.open_bytes > others;
  pthread_mutex_lock(&s->a->lock);
  bool changed = too_big != d->cache_bypass || (!too_big && !d->cache_waits);
  uint64_t delay = 0;
  d->cache_refusals++;
  if (too_big) {
    d->cache_bypass = true;
    d->cache_waits = 0;
    d->cache_wait_until_ms = 0;
  } else {
    delay = cache_wait_more(d);
  }
  pthread_mutex_unlock(&s->a->lock);
  if (changed)
    log_notice("disk %s: the cache (%" PRIu64 " of %" PRIu64 " MiB used, %" PRIu64 " MiB of it cycle %" PRIu64
               ") cannot take the cycle %s", d->name, u.bytes >> 20, u.limit_bytes >> 20, u.open_bytes >> 20, sl->cycle,
               too_big ? "at all: the disk is sent next as a resync straight into the storage"
                       : "for now: its cycles wait for the cache to drain");
  if (too_big)
    return rpl_fail(RPL_E_CYCLE_TOO_BIG, "the cycle passed %" PRIu64 " MiB, the cache holds %" PRIu64 " MiB",
                    u.open_bytes >> 20, u.limit_bytes >> 20);
  return rpl_fail(RPL_E_CACHE_WAIT, "%" PRIu64 " of %" PRIu64 " MiB of the cache in use; asked again in %" PRIu64 " s",
                  u.bytes >> 20, u.limit_bytes >> 20, (delay + 999) / 1000);
}

/* Raw extents this large are read from TLS straight into the storage's write buffer (conn.h's extent
 * sink), sparing a copy of every byte of a direct cycle; below it the call costs more than the copy. */
#define EXTENT_ROOM_MIN (64u << 10)

/* Room in the direct store's buffer for extent m of sl's direct cycle; NULL where there is none. */
static uint8_t *direct_room(struct rx_slot *sl, const struct proto_extent *m)
{
  if (!sl->direct || m->length < EXTENT_ROOM_MIN || !sl->direct_store->ops->direct_room)
    return NULL;
  return sl->direct_store->ops->direct_room(sl->direct_store, m->offset, m->length);
}

/* The extent sink: room for a raw extent of the cycle being written straight (checked as on_extent
 * does, which sees the frame next), or NULL to receive it whole. */
static uint8_t *extent_room(void *arg, const struct proto_extent *m)
{
  struct session *s = arg;
  struct rx_slot *sl = slot_of(s, m->disk_id);
  return sl && sl->cycle && m->cycle == sl->cycle && !sl->failed ? direct_room(sl, m) : NULL;
}

static rpl_err on_extent(struct session *s, const struct proto_frame *f)
{
  struct proto_extent m;
  rpl_err err = proto_decode_extent(f, &m);
  if (err)
    return err;
  struct rx_slot *sl = slot_of(s, m.disk_id);
  if (!sl || !sl->cycle || m.cycle != sl->cycle)
    return RPL_E_PROTO_UNEXPECTED;
  if (sl->failed)
    return RPL_OK; /* already NACKed: the rest of the cycle is dropped */
  const uint8_t *raw = NULL;
  /* Straight to the storage: a compressed extent is decompressed into its room there, if it has one
   * (a raw one was read into it already: extent_room). */
  uint8_t *room = m.codec == PROTO_CODEC_ZSTD ? direct_room(sl, &m) : NULL;
  err = receiver_extent_into(sl->rx, &m, room, sl->direct ? &raw : NULL);
  /* The hash index learns of the write before the replica sees it (hashindex.h). */
  if (!err && sl->direct && sl->disk->hidx)
    err = hashindex_write(sl->disk->hidx, m.offset, raw, m.length, raw == NULL, m.hash);
  if (!err && sl->direct) {
    if ((err = sl->direct_store->ops->direct_extent(sl->direct_store, m.offset, raw, m.length)))
      direct_failed(s, sl, err);
  } else if (!err) {
    struct journal_extent je = {.offset = m.offset, .length = m.length, .codec = m.codec,
                                .payload = m.payload.ptr, .payload_len = m.payload.len};
    memcpy(je.hash, m.hash, PROTO_HASH_SIZE);
    if ((err = journal_append_extent(sl->disk->journal, sl->cycle, &je)) == RPL_E_JOURNAL_FULL)
      err = cache_refused(s, sl);
  }
  return err ? nack(s, sl, err) : RPL_OK;
}

static void record_committed(struct session *s, struct rx_slot *sl, const struct receiver_totals *t);

static rpl_err on_cycle_end(struct session *s, const struct proto_frame *f)
{
  struct proto_cycle_end m;
  rpl_err err = proto_decode_cycle_end(f, &m);
  if (err)
    return err;
  struct rx_slot *sl = slot_of(s, m.disk_id);
  if (!sl || !sl->cycle || m.cycle != sl->cycle)
    return RPL_E_PROTO_UNEXPECTED;
  struct group *gr = group_of(s, sl);
  if (sl->failed) {
    sl->cycle = 0;
    s->cycles_open--;
    if (gr)
      gr->failed = true, gr->why = sl->failed_why ? sl->failed_why : RPL_E_CHECKSUM, gr->ended++;
    return RPL_OK;
  }
  if (sl->kind == PROTO_CYCLE_RECOVERY_POINT && (m.consistency == PROTO_FUZZY || m.consistency == PROTO_PRECOPY)) {
    pthread_mutex_lock(&s->a->lock);
    sl->disk->image_unwanted = sl->cycle; /* before the commit, so the applier never makes its image */
    pthread_mutex_unlock(&s->a->lock);
  }
  struct receiver_totals t;
  uint64_t t0 = rpl_mono_ms();
  err = receiver_end(sl->rx, &m, &t);
  struct journal_cycle_totals jt = {.extents = m.extents, .raw_bytes = m.raw_bytes, .payload_bytes = m.payload_bytes};
  memcpy(jt.digest, m.digest, PROTO_HASH_SIZE);
  if (!err && sl->direct && (err = sl->direct_store->ops->direct_commit(sl->direct_store)))
    direct_failed(s, sl, err);
  if (!err && sl->direct && sl->disk->hidx)
    hashindex_direct_commit(sl->disk->hidx);
  if (!err && sl->direct)
    err = journal_set_base(sl->disk->journal, sl->cycle); /* committed and applied, durable before the ACK */
  else if (!err)
    err = journal_commit_cycle(sl->disk->journal, sl->cycle, &jt); /* durable before the ACK */
  if (err) {
    rpl_err e = nack(s, sl, err);
    sl->cycle = 0;
    s->cycles_open--;
    if (gr)
      gr->failed = true, gr->why = err, gr->ended++;
    return e;
  }
  receiver_committed(sl->rx);
  uint64_t t1 = rpl_mono_ms();
  record_committed(s, sl, &t);
  struct disk *d = sl->disk;
  struct proto_ack ack = {.cycle = sl->cycle};
  memcpy(ack.disk_id, d->id, PROTO_ID_SIZE);
  sl->consistency = m.consistency;
  sl->cycle = 0;
  sl->direct = false;
  sl->direct_store = NULL;
  s->cycles_open--;
  if (gr) {
    gr->ended++;
    for (size_t i = 0; i < gr->n; i++)
      if (gr->cycles[i] == m.cycle && &s->slots[gr->slots[i]] == sl)
        gr->consistencies[i] = m.consistency;
    if (m.consistency == PROTO_PRECOPY)
      gr->precopy = true;
    else if (m.consistency < gr->consistency)
      gr->consistency = m.consistency;
    if (m.freeze_ms > gr->freeze_ms)
      gr->freeze_ms = m.freeze_ms;
  }
  err = proto_encode_ack(&s->out, &ack);
  char idt[37];
  id_text(d->id, idt);
  log_debug("disk %s: cycle %" PRIu64 ": durable %" PRIu64 " ms after its end came, ACK at %" PRIu64 " ms", idt,
            ack.cycle, t1 - t0, rpl_mono_ms() - t0);
  return err ? err : flush_out(s);
}

/* Cycle sl->cycle is durable: the catalog, the log and the disk's counters say so. */
static void record_committed(struct session *s, struct rx_slot *sl, const struct receiver_totals *t)
{
  struct disk *d = sl->disk;
  struct catalog_cycle cy = {.n = sl->cycle, .kind = sl->kind, .committed_time = time(NULL), .extents = t->extents,
                             .raw_bytes = t->raw_bytes, .payload_bytes = t->payload_bytes};
  memcpy(cy.disk_id, d->id, PROTO_ID_SIZE);
  rpl_err ce = catalog_cycle_committed(s->a->cat, &cy);
  if (ce)
    log_warn("catalog: cycle %" PRIu64 " committed but not recorded: %s", sl->cycle, rpl_strerror(ce));
  struct event ev = {.type = EVENT_COMMITTED, .cycle = sl->cycle, .kind = sl->kind, .direct = sl->direct,
                     .extents = t->extents, .raw_bytes = t->raw_bytes, .payload_bytes = t->payload_bytes};
  memcpy(ev.disk_id, d->id, PROTO_ID_SIZE);
  struct store_stats st = {0};
  if (sl->direct)
    sl->direct_store->ops->get_stats(sl->direct_store, &st);
  event_set_upload(&ev, &sl->direct_stats, &st, sl->direct_start_ms);
  events_emit(&ev);
  char idt[37];
  id_text(d->id, idt);
  char upload[160] = "";
  if (st.transfers) /* as the applier says it of a cycle uploaded from the cache */
    snprintf(upload, sizeof upload, " (%" PRIu64 " bytes uploaded in %" PRIu64 " ms, %" PRIu64
             " ms waiting for the bandwidth limits)", ev.upload_bytes, ev.upload_ms, ev.limit_wait_ms);
  log_info("disk %s: cycle %" PRIu64 " committed%s (%" PRIu64 " extents, %" PRIu64 " bytes, %" PRIu64 " sent)%s", idt,
           sl->cycle, sl->direct ? " and applied" : "", t->extents, t->raw_bytes, t->payload_bytes, upload);
  if (sl->direct && (ce = catalog_cycle_applied(s->a->cat, d->id, sl->cycle, time(NULL))))
    log_warn("catalog: cycle %" PRIu64 " applied but not recorded: %s", sl->cycle, rpl_strerror(ce));
  pthread_mutex_lock(&s->a->lock);
  d->last_committed = sl->cycle;
  if (sl->direct) {
    d->last_applied = sl->cycle;
    if (sl->kind == PROTO_CYCLE_RECOVERY_POINT) /* the applier makes the point's image */
      d->snap_pending = d->copy_due = sl->cycle;
    pthread_cond_broadcast(&s->a->applied);
  }
  d->last_commit_time = time(NULL);
  metrics_cycle_committed(&d->m, sl->kind, t->raw_bytes, t->payload_bytes, rpl_mono_ms() - d->last_start_ms);
  if (sl->kind == PROTO_CYCLE_RESYNC || sl->replay)
    d->adopt_resync = false;
  bool cache_was_refusing = d->cache_waits || d->cache_bypass;
  d->cache_waits = 0;
  d->cache_wait_until_ms = 0;
  if (sl->direct)
    d->cache_bypass = false; /* the changes that did not fit are in, round the cache */
  d->raw_committed += t->raw_bytes;
  bool state_changed = d->state != CATALOG_DISK_PROTECTED;
  d->state = CATALOG_DISK_PROTECTED;
  if (!d->upload_waiting) /* "waiting for storage" stays shown until an upload goes through */
    d->reason[0] = '\0';
  pthread_cond_signal(&s->a->work);
  pthread_mutex_unlock(&s->a->lock);
  if (state_changed) {
    rpl_err e = catalog_disk_set_state(s->a->cat, d->id, CATALOG_DISK_PROTECTED, "");
    (void)e;
  }
  if (cache_was_refusing)
    log_notice("disk %s: cycle %" PRIu64 " went %s: its cycles go through the cache again", d->name, sl->cycle,
               sl->direct ? "straight into the storage" : "into the cache");
}

/* Adds chunk c to the list, coalescing with the last range; past the cap (a NEED frame's room), the
 * last range grows to cover c: sending chunks that match costs bytes, never correctness. */
static rpl_err need_add(struct need_list *nl, uint64_t c)
{
  enum { NEED_MAX = (PROTO_MAX_PAYLOAD - 64) / 12 };
  if (nl->count) {
    struct proto_need_range *last = &nl->ranges[nl->count - 1];
    if (last->first_chunk + last->count == c || nl->count == NEED_MAX) {
      last->count = (uint32_t)(c - last->first_chunk + 1);
      return RPL_OK;
    }
  }
  if (nl->count == nl->cap) {
    uint32_t cap = nl->cap ? nl->cap * 2 : 1024;
    if (cap > NEED_MAX)
      cap = NEED_MAX;
    struct proto_need_range *r = realloc(nl->ranges, cap * sizeof *r);
    if (!r)
      return RPL_E_NOMEM;
    nl->ranges = r;
    nl->cap = cap;
  }
  nl->ranges[nl->count++] = (struct proto_need_range){c, 1};
  return RPL_OK;
}

/* A comparison that reads the replica back can outlast the agent's wait for NEED (it gives a silent
 * peer CONN_IO_TIMEOUT_MS, then starts the resync over): a HEARTBEAT now and then, which it skips
 * while waiting, tells it the appliance is at work. */
static rpl_err comparison_alive(struct session *s, struct need_list *nl)
{
  uint64_t now = rpl_mono_ms();
  if (now - nl->alive_ms < CONN_IO_TIMEOUT_MS / 6)
    return RPL_OK;
  nl->alive_ms = now;
  struct proto_heartbeat hb = {.time_ns = rpl_unix_ms() * 1000000};
  rpl_err err = proto_encode_heartbeat(&s->out, &hb);
  return err ? err : flush_out(s);
}

/* HASHES of a resync by comparison: compares each chunk with the replica; after the last chunk of
 * the disk, answers NEED. The replica must hold every committed cycle first. */
static rpl_err on_hashes(struct session *s, const struct proto_frame *f)
{
  struct proto_hashes m;
  rpl_err err = proto_decode_hashes(f, &m);
  if (err)
    return err;
  struct rx_slot *sl = slot_of(s, m.disk_id);
  if (!sl || !sl->cycle || sl->failed)
    return sl && sl->failed ? RPL_OK : RPL_E_PROTO_UNEXPECTED;
  struct disk *d = sl->disk;
  struct need_list *nl = &sl->need;
  if (nl->chunks_seen == 0) {
    if (m.first_chunk != 0 || m.chunk_size > (64u << 20) || m.chunk_size < HASH_CHUNK_MIN)
      return nack(s, sl, rpl_fail(RPL_E_PROTO_FIELD, "HASHES: chunks of %u bytes (1 MiB to 64 MiB)", m.chunk_size));
    need_reset(nl);
    nl->chunk_size = m.chunk_size;
    nl->alive_ms = rpl_mono_ms();
    if (!(nl->buf = malloc(m.chunk_size)))
      return RPL_E_NOMEM;
    pthread_mutex_lock(&s->a->lock);
    pthread_cond_signal(&s->a->work);
    while (d->last_applied < d->last_committed && d->state != CATALOG_DISK_ERROR && !atomic_load(&appliance_stopping)) {
      struct timespec ts = rpl_realtime_in_ms(POLL_MS * 10); /* a stop is seen within half a second */
      pthread_cond_timedwait(&s->a->applied, &s->a->lock, &ts);
    }
    struct store *st = d->store;
    pthread_mutex_unlock(&s->a->lock);
    if ((err = resync_index_begin(s->a, d, st, nl->chunk_size, nl->buf)))
      return nack(s, sl, err);
  }
  uint64_t nchunks = (d->size + nl->chunk_size - 1) / nl->chunk_size;
  if (m.chunk_size != nl->chunk_size || m.first_chunk != nl->chunks_seen || m.first_chunk + m.count > nchunks)
    return nack(s, sl, RPL_E_PROTO_FIELD);
  for (uint32_t i = 0; i < m.count && !err; i++) {
    uint64_t c = m.first_chunk + i, off = c * nl->chunk_size;
    size_t len = off + nl->chunk_size > d->size ? (size_t)(d->size - off) : nl->chunk_size;
    /* The replica is the applier's, but it is idle for this disk: every committed cycle is in and
     * the open one commits only after this comparison. */
    pthread_mutex_lock(&s->a->lock);
    struct store *st = d->store;
    pthread_mutex_unlock(&s->a->lock);
    if (!st) { /* the store is not open (storage checks not passed): send it all */
      err = need_add(nl, c);
      continue;
    }
    /* From the hash index where it knows the chunk, else read back. */
    bool differs;
    err = resync_index_differs(d, st, nl->chunk_size, c, off, len, m.hashes + (size_t)i * PROTO_HASH_SIZE, nl->buf,
                               &differs);
    if (!err && differs)
      err = need_add(nl, c);
    if (!err)
      err = comparison_alive(s, nl);
  }
  if (err)
    return nack(s, sl, err);
  nl->chunks_seen += m.count;
  if (nl->chunks_seen < nchunks)
    return RPL_OK;
  struct proto_need need = {.chunk_size = nl->chunk_size, .count = nl->count};
  memcpy(need.disk_id, d->id, PROTO_ID_SIZE);
  uint64_t differ = 0;
  for (uint32_t i = 0; i < nl->count; i++)
    differ += nl->ranges[i].count;
  char id[37];
  id_text(d->id, id);
  log_notice("agent %s: disk %s resync by comparison: %" PRIu64 " of %" PRIu64 " chunks differ", s->agent_text, id,
             differ, nchunks);
  err = proto_encode_need(&s->out, &need, nl->ranges);
  need_reset(nl);
  return err ? err : flush_out(s);
}

static rpl_err session_hello(struct session *s)
{
  struct proto_frame f;
  struct proto_hello h;
  rpl_err err = conn_recv(s->c, &f, HELLO_TIMEOUT_MS);
  if (!err)
    err = f.type == PROTO_HELLO ? proto_decode_hello(&f, &h) : RPL_E_PROTO_UNEXPECTED;
  if (err)
    return err;
  if (memcmp(h.agent_id, s->agent, PROTO_ID_SIZE)) {
    rpl_err e = send_error(s->c, RPL_E_PERMISSION, "HELLO names another agent than the certificate");
    (void)e;
    return RPL_E_PERMISSION;
  }
  uint16_t v;
  char msg[160];
  if ((err = proto_negotiate(PROTO_VERSION_MIN, PROTO_VERSION_MAX, h.version_min, h.version_max, &v, msg, sizeof msg))) {
    rpl_err e = send_error(s->c, err, msg);
    (void)e;
    log_warn("agent %s: %s", s->agent_text, msg);
    return err;
  }
  metrics_agent_hello(s->agent, v);
  s->agent_caps = h.capabilities;
  char hostname[] = "replication-appliance";
  struct proto_hello mine = {.version_min = PROTO_VERSION_MIN, .version_max = PROTO_VERSION_MAX,
                             .capabilities = PROTO_CAP_READINESS | PROTO_CAP_RENEW | PROTO_CAP_DISK_RESIZE | PROTO_CAP_UNPROTECT |
                                             PROTO_CAP_UNPROTECT_DELETE | PROTO_CAP_GROUP_POINT | PROTO_CAP_REPLAY,
                             .hostname = {(const uint8_t *)hostname, (uint32_t)strlen(hostname)}};
  if ((err = proto_encode_hello(&s->out, &mine)) || (err = flush_out(s)))
    return err;
  if (!(h.capabilities & PROTO_CAP_RENEWING))
    return RPL_OK;
  /* The agent's certificate is two thirds through its life: its RENEW comes before anything else. */
  if (!(err = conn_recv(s->c, &f, HELLO_TIMEOUT_MS)))
    err = f.type == PROTO_RENEW ? registration_renew(s->a, s->agent, &f, &s->out) : RPL_E_PROTO_UNEXPECTED;
  return err ? err : flush_out(s);
}

/* UNPROTECT: the agent no longer protects the disk. Its open cycle (a CYCLE_START the agent had not
 * read yet) is given up and no cycle or point is asked of it again; its replica, points and catalog
 * rows stay (restore and failover go on working), unless the agent asked for them to be deleted: the
 * applier does that (disk_delete_ask). The slot stays until the session ends. */
static rpl_err on_unprotect(struct session *s, const struct proto_frame *f)
{
  struct proto_unprotect m;
  rpl_err err = proto_decode_unprotect(f, &m);
  if (err)
    return err;
  struct rx_slot *sl = slot_of(s, m.disk_id);
  char id[37];
  id_text(m.disk_id, id);
  pthread_mutex_lock(&s->a->lock);
  struct disk *d = sl ? sl->disk : find_disk(s->a, m.disk_id); /* one not attached now (never opened) */
  bool ours = d && !memcmp(d->agent, s->agent, PROTO_ID_SIZE);
  pthread_mutex_unlock(&s->a->lock);
  if (!ours) {
    log_warn("agent %s: UNPROTECT of disk %s, which is not one of its disks here: ignored", s->agent_text, id);
    return RPL_OK;
  }
  if (sl && sl->cycle) {
    struct group *gr = group_of(s, sl);
    drop_cycle(s, sl);
    if (gr)
      gr->failed = true, gr->why = RPL_E_CANCELLED, gr->ended++;
  }
  int64_t now = (int64_t)time(NULL);
  pthread_mutex_lock(&s->a->lock);
  d->unprotected_time = now;
  d->want_point = d->want_resync = d->want_unprotect = false;
  pthread_mutex_unlock(&s->a->lock);
  bool delete = m.flags & PROTO_UNPROTECT_DELETE_REPLICA;
  if (delete && (err = disk_delete_ask(s->a, d)))
    log_warn("disk %s: its deletion is not recorded durably (an appliance restart before it ends keeps the replica): "
             "%s", id, rpl_detail(err)[0] ? rpl_detail(err) : rpl_strerror(err));
  if ((err = catalog_disk_set_unprotected(s->a->cat, d->id, now)))
    log_warn("catalog: disk %s unprotected but not recorded: %s", id, rpl_strerror(err));
  log_notice("agent %s: disk %s (%s) unprotected: no more cycles; %s", s->agent_text, id, d->name,
             delete ? "its replica, recovery points, cache and catalog rows are being deleted (--delete-replica)"
                    : "its replica and recovery points are kept");
  return RPL_OK;
}

/* Whether the agent reads what is sent to it now: always, one that serves cycles at once (it reads
 * every frame as it comes, PROTO_CAP_CYCLES) unless a point's cycles are open; else only between
 * cycles (it reads a cycle's frames only when it waits for them). */
static bool between_cycles(const struct session *s)
{
  if (!s->cycles_open)
    return true;
  if (!(s->agent_caps & PROTO_CAP_CYCLES))
    return false;
  for (size_t g = 0; g < MAX_GROUPS; g++)
    if (s->groups[g].used && s->groups[g].started)
      return false; /* a point's cycles run on the agent's session thread, which reads them as it always did */
  return true;
}

/* The configuration manager's Unprotect: UNPROTECT_REQUEST to the agent, once per session, between
 * cycles (the agent takes it during a cycle too, and acts once the cycle ends). The agent answers
 * with UNPROTECT once it stopped tracking the disk; a session that ends first leaves the request to
 * the agent's next session. */
static rpl_err send_unprotect_requests(struct session *s)
{
  if (!between_cycles(s) || !(s->agent_caps & PROTO_CAP_UNPROTECT_REQUEST))
    return RPL_OK;
  for (size_t i = 0; i < s->nslots; i++) {
    struct rx_slot *sl = &s->slots[i];
    pthread_mutex_lock(&s->a->lock);
    bool want = sl->disk->want_unprotect && !sl->disk->unprotected_time && !sl->unprotect_sent;
    struct proto_unprotect_request m = {.flags = sl->disk->unprotect_flags};
    pthread_mutex_unlock(&s->a->lock);
    if (!want)
      continue;
    memcpy(m.disk_id, sl->disk->id, PROTO_ID_SIZE);
    rpl_err err = proto_encode_unprotect_request(&s->out, &m);
    if (err || (err = flush_out(s)))
      return err;
    sl->unprotect_sent = true;
    char id[37];
    id_text(m.disk_id, id);
    log_notice("agent %s: asked to unprotect disk %s (%s)%s", s->agent_text, id, sl->disk->name,
               m.flags & PROTO_UNPROTECT_DELETE_REPLICA ? ", deleting its replica" : "");
  }
  return RPL_OK;
}

/* GROUP_POINT_REQUEST (mobility-agent checkpoint --group): the coordinator runs the group's point
 * and its answer comes by finish_groups; a refusal is answered at once. */
static rpl_err on_group_point_request(struct session *s, const struct proto_frame *f)
{
  struct proto_group_point_request m;
  rpl_err err = proto_decode_group_point_request(f, &m);
  if (err)
    return err;
  char name[PROTO_MAX_GROUP_NAME + 1];
  snprintf(name, sizeof name, "%.*s", (int)m.name.len, (const char *)m.name.ptr);
  rpl_err why = gp_request(s->a, name, s->agent, m.request, CATALOG_MADE_BY_CHECKPOINT);
  if (!why)
    return RPL_OK;
  char detail[RPL_DETAIL_MAX + 128];
  log_warn("agent %s: point of group %s refused: %s", s->agent_text, name, rpl_describe(why, detail, sizeof detail));
  struct proto_point p = {.request = m.request, .status = why};
  err = proto_encode_point(&s->out, &p);
  return err ? err : flush_out(s);
}

/* One frame from the agent, by its type. */
static rpl_err on_frame(struct session *s, const struct proto_frame *f)
{
  rpl_err err = RPL_OK;
  switch (f->type) {
  case PROTO_EXTENT: err = on_extent(s, f); break;
  case PROTO_CYCLE_END: err = on_cycle_end(s, f); break;
  case PROTO_POINT_REQUEST: err = on_point_request(s, f); break;
  case PROTO_GROUP_POINT_REQUEST: err = on_group_point_request(s, f); break;
  case PROTO_GROUP_FROZEN: {
    struct proto_group_frozen m;
    if ((err = proto_decode_group_frozen(f, &m)) == RPL_OK)
      gp_frozen(s->a, s->agent, &m);
    break;
  }
  case PROTO_HASHES: err = on_hashes(s, f); break;
  case PROTO_DISK: {
    struct proto_disk m;
    err = proto_decode_disk(f, &m);
    if (!err)
      err = attach_disk(s, &m);
    break;
  }
  case PROTO_NACK: {
    /* The agent could not run the cycle (device gone): give it up; it is asked again later. A NACK
     * of no open cycle (cycle 0 when none is) is stale or hostile: it must not put the disk in error. */
    struct proto_nack m;
    err = proto_decode_nack(f, &m);
    struct rx_slot *sl = err ? NULL : slot_of(s, m.disk_id);
    if (sl && sl->cycle && sl->cycle == m.cycle && sl->replay && m.reason == RPL_E_REPLAY_INCOMPLETE) {
      drop_cycle(s, sl); /* the agent no longer knows the blocks: a resync (the whole disk) next */
      pthread_mutex_lock(&s->a->lock);
      sl->disk->replay_refused = true;
      pthread_mutex_unlock(&s->a->lock);
      log_notice("agent %s: disk %s: %s", s->agent_text, sl->disk->name, rpl_strerror(RPL_E_REPLAY_INCOMPLETE));
    } else if (sl && sl->cycle && sl->cycle == m.cycle) {
      drop_cycle(s, sl);
      pthread_mutex_lock(&s->a->lock);
      sl->disk->state = CATALOG_DISK_ERROR;
      snprintf(sl->disk->reason, sizeof sl->disk->reason, "the agent cannot read the disk: %.*s",
               (int)m.message.len, (const char *)m.message.ptr);
      pthread_mutex_unlock(&s->a->lock);
    }
    break;
  }
  case PROTO_READINESS:
    err = agent_readiness_on_frame(s->agent, f);
    break;
  case PROTO_UNPROTECT:
    err = on_unprotect(s, f);
    break;
  case PROTO_HEARTBEAT: {
    struct proto_heartbeat hb;
    if ((err = proto_decode_heartbeat(f, &hb)))
      break;
    if (hb.dirty_bytes >= DIRTY_TRIGGER)
      s->dirty_pressure = true;
    break;
  }
  default:
    log_warn("agent %s: unexpected %s frame", s->agent_text, proto_type_name(f->type));
    err = RPL_E_PROTO_UNEXPECTED;
  }
  return err;
}

/* In an appliance group, a disk whose page blob another member keeps leased (renewed past a whole
 * lease duration, so that member is alive) is that member's to serve: the agent is sent on to the
 * group's next member (it knows their addresses), rather than kept here with nothing replicating. */
static rpl_err send_elsewhere(struct session *s)
{
  if (!s->a->members.in_group)
    return RPL_OK;
  uint64_t wait_ms = (uint64_t)s->a->settings.lease_duration_s * 1000 + ELSEWHERE_GRACE_MS;
  char name[256] = "";
  pthread_mutex_lock(&s->a->lock);
  for (size_t i = 0; i < s->nslots && !name[0]; i++) {
    const struct disk *d = s->slots[i].disk;
    if (d->lease_waiting && d->lease_why == RPL_E_LEASE_HELD && rpl_mono_ms() - d->lease_waiting_ms >= wait_ms)
      snprintf(name, sizeof name, "%s", d->name);
  }
  pthread_mutex_unlock(&s->a->lock);
  if (!name[0])
    return RPL_OK;
  char msg[512];
  snprintf(msg, sizeof msg, "disk %s: another member of the appliance group has kept its page blob leased for %u s: "
           "it serves this agent", name, (unsigned)(wait_ms / 1000));
  log_notice("agent %s: %s; sent on", s->agent_text, msg);
  rpl_err e = send_error(s->c, RPL_E_MEMBERS_ELSEWHERE, msg);
  (void)e;
  return RPL_E_MEMBERS_ELSEWHERE;
}

/* STORED for each disk whose storage holds more applied cycles than the agent was told: it forgets
 * their blocks (kept for a takeover's REPLAY). Between cycles only: the agent reads it while idle. */
/* MEMBERS, once per session and after each change: the agent keeps the other members' addresses. */
static rpl_err send_members(struct session *s)
{
  if (!(s->agent_caps & PROTO_CAP_MEMBERS) || !between_cycles(s))
    return RPL_OK;
  struct proto_members m = {0};
  char addrs[MEMBERS_MAX][256];
  pthread_mutex_lock(&s->a->lock);
  unsigned gen = s->a->members_gen;
  size_t n = s->a->nmember_addrs;
  memcpy(addrs, s->a->member_addrs, n * sizeof addrs[0]);
  pthread_mutex_unlock(&s->a->lock);
  if (gen == s->members_sent_gen || n == 0)
    return RPL_OK;
  s->members_sent_gen = gen;
  m.count = (uint32_t)n;
  for (size_t i = 0; i < n; i++)
    m.address[i] = (struct proto_bytes){(const uint8_t *)addrs[i], (uint32_t)strlen(addrs[i])};
  rpl_err err = proto_encode_members(&s->out, &m);
  return err ? err : flush_out(s);
}

static rpl_err send_stored(struct session *s)
{
  if (!(s->agent_caps & PROTO_CAP_REPLAY) || !between_cycles(s))
    return RPL_OK;
  bool any = false;
  for (size_t i = 0; i < s->nslots; i++) {
    struct rx_slot *sl = &s->slots[i];
    pthread_mutex_lock(&s->a->lock);
    uint64_t applied = sl->disk->last_applied;
    pthread_mutex_unlock(&s->a->lock);
    if (applied <= sl->stored_sent)
      continue;
    struct proto_stored m = {.cycle = applied};
    memcpy(m.disk_id, sl->disk->id, PROTO_ID_SIZE);
    rpl_err err = proto_encode_stored(&s->out, &m);
    if (err)
      return err;
    sl->stored_sent = applied;
    any = true;
  }
  return any ? flush_out(s) : RPL_OK;
}

void disk_wake_session(struct disk *d)
{
  uint64_t one = 1;
  if (d->served_by && d->served_by->wake >= 0) {
    ssize_t n = write(d->served_by->wake, &one, sizeof one); /* nonblocking: a full counter is a wake already */
    (void)n;
  }
}

static rpl_err session_loop(struct session *s)
{
  rpl_err err = session_hello(s);
  if (err)
    return err;
  uint64_t last_rx = rpl_mono_ms(), last_revoke_check = rpl_mono_ms();
  while (!atomic_load(&appliance_stopping)) {
    /* Groups first: a catch-up round that just ended makes its point round ready, and orchestrate
     * starts it in this pass instead of after the next wait for a frame. */
    if ((err = send_unprotect_requests(s)) || (err = finish_groups(s)) || (err = orchestrate(s)) ||
        (err = send_stored(s)) || (err = send_members(s)))
      return err;
    bool rebased = false;
    pthread_mutex_lock(&s->a->lock);
    for (size_t i = 0; i < s->nslots; i++)
      rebased = rebased || s->slots[i].epoch != s->slots[i].disk->epoch;
    pthread_mutex_unlock(&s->a->lock);
    if (rebased) {
      log_notice("agent %s: a disk was taken over (by a newer session of its agent, or from another appliance): "
                 "this session ends", s->agent_text);
      return RPL_E_CANCELLED;
    }
    /* Revoked meanwhile (configuration manager): the session ends, and reconnections are refused. */
    if (rpl_mono_ms() - last_revoke_check >= REVOKE_CHECK_MS) {
      last_revoke_check = rpl_mono_ms();
      if ((err = send_elsewhere(s)))
        return err;
      struct catalog_agent ag;
      if (catalog_agent_get(s->a->cat, s->agent, &ag) == RPL_OK && ag.revoked) {
        log_warn("agent %s: revoked: session ended", s->agent_text);
        rpl_err e = send_error(s->c, RPL_E_PERMISSION, "this agent was revoked: register it again with a new key");
        (void)e;
        return RPL_E_PERMISSION;
      }
    }
    struct proto_frame f;
    /* A group point's members wait on each other; disk_wake_session ends the wait sooner. */
    err = conn_recv_wakeable(s->c, &f, s->gp_waiting ? 2 : POLL_MS, s->wake);
    if (err == RPL_E_TIMEOUT) {
      if (rpl_mono_ms() - last_rx > 3 * 10000 + CONN_IO_TIMEOUT_MS)
        return RPL_E_TIMEOUT; /* no heartbeat for far too long */
      continue;
    }
    if (err)
      return err;
    last_rx = rpl_mono_ms();
    /* Any frame shows the agent alive: one busy sending cycles sends no HEARTBEAT. */
    if (time(NULL) - s->last_heartbeat_saved >= HEARTBEAT_SAVE_S) {
      rpl_err e = catalog_agent_heartbeat(s->a->cat, s->agent, time(NULL));
      (void)e;
      s->last_heartbeat_saved = time(NULL);
    }
    err = on_frame(s, &f);
    if (err)
      return err;
    /* The agent's silence counts from when this session listens again: a long frame (a resync's
     * comparison reading the replica back) kept it from hearing the agent meanwhile. */
    last_rx = rpl_mono_ms();
  }
  return RPL_OK;
}

/* An entry in the per-agent count of sessions, or -1 past MAX_AGENT_SESSIONS. */
static int agent_session_take(struct appliance *a, const uint8_t agent[PROTO_ID_SIZE])
{
  int found = -1, free_slot = -1;
  pthread_mutex_lock(&a->lock);
  for (int i = 0; i < MAX_CONNECTIONS && found < 0; i++) {
    if (a->agent_sessions[i].n && !memcmp(a->agent_sessions[i].agent, agent, PROTO_ID_SIZE))
      found = i;
    else if (!a->agent_sessions[i].n && free_slot < 0)
      free_slot = i;
  }
  if (found >= 0 && a->agent_sessions[found].n >= MAX_AGENT_SESSIONS)
    found = -2;
  else if (found < 0 && free_slot >= 0)
    memcpy(a->agent_sessions[found = free_slot].agent, agent, PROTO_ID_SIZE);
  if (found >= 0)
    a->agent_sessions[found].n++;
  pthread_mutex_unlock(&a->lock);
  return found >= 0 ? found : -1;
}

/* An agent this member does not know (registered, or renewed, at another member of the appliance
 * group): its record in the group, into the catalog. False when the group has none (logged). */
static bool import_agent(struct appliance *a, const uint8_t agent[PROTO_ID_SIZE], const char *cn)
{
  char why[RPL_DETAIL_MAX + 256];
  rpl_err e = members_import_agent(&a->members, &a->settings, a->cat, agent);
  if (e)
    log_warn("agent %s: not in the appliance group's records either: %s", cn, rpl_describe(e, why, sizeof why));
  else
    log_notice("agent %s: known from the appliance group's records (registered or renewed at another member)", cn);
  return e == RPL_OK;
}

void *session_main(void *arg)
{
  struct session_arg *sa = arg;
  struct appliance *a = sa->a;
  int preauth = sa->preauth;
  struct conn *c;
  pthread_mutex_lock(&a->lock);
  SSL_CTX *ctx = a->ctx; /* a renewal may replace it meanwhile: this connection keeps its own */
  SSL_CTX_up_ref(ctx);
  pthread_mutex_unlock(&a->lock);
  rpl_err err = conn_accept(ctx, sa->fd, HANDSHAKE_TIMEOUT_MS, &c);
  SSL_CTX_free(ctx);
  free(sa);
  int agent_slot = -1;
  if (err)
    goto done;
  conn_set_recv_limit(c, PREAUTH_MAX_PAYLOAD);
  char cn[128];
  err = chan_peer_cn(conn_ssl(c), cn, sizeof cn);
  if (err == RPL_E_NOT_FOUND) {
    registration(a, c);
    conn_close(c);
    goto done;
  }
  struct session *s = calloc(1, sizeof *s);
  struct catalog_agent ag;
  bool known = s && !err && !uuid_parse(cn, s->agent) && !catalog_agent_get(a->cat, s->agent, &ag);
  if (s && !err && !known && a->members.in_group && !uuid_parse(cn, s->agent) && import_agent(a, s->agent, cn))
    known = !catalog_agent_get(a->cat, s->agent, &ag);
  if (!known || ag.revoked) {
    log_warn("%s: client certificate for '%s' refused: unknown or revoked agent", conn_peer(c), cn);
    rpl_err e = send_error(c, RPL_E_PERMISSION, "unknown or revoked agent: register it again with a new key");
    (void)e;
    conn_close(c);
    free(s);
    goto done;
  }
  /* Its current certificate, or the renewed one, which then retires the one before. */
  uint8_t fp[CHAN_FINGERPRINT_SIZE];
  char fptext[CATALOG_MAX_FINGERPRINT + 1];
  bool renewed = false;
  if ((err = chan_peer_fingerprint(conn_ssl(c), fp)) == RPL_OK) {
    registration_fingerprint_text(fp, fptext);
    err = catalog_agent_use_cert(a->cat, s->agent, fptext, &renewed);
    /* Renewed by another member of the appliance group: its record has the certificate. */
    if (err == RPL_E_AGENT_CERT_REPLACED && a->members.in_group && import_agent(a, s->agent, cn))
      err = catalog_agent_use_cert(a->cat, s->agent, fptext, &renewed);
    if (!err && renewed && a->members.in_group)
      appliance_publish_agent(a, s->agent);
  }
  if (err) {
    log_warn("%s: agent %s refused: %s", conn_peer(c), cn, rpl_strerror(err));
    rpl_err e = send_error(c, err, rpl_strerror(err));
    (void)e;
    conn_close(c);
    free(s);
    goto done;
  }
  if (renewed)
    log_notice("agent %s: its renewed certificate is in use; the one before is no longer accepted", cn);
  if ((agent_slot = agent_session_take(a, s->agent)) < 0) {
    log_warn("%s: agent %s refused: %u sessions of it at once already", conn_peer(c), cn, MAX_AGENT_SESSIONS);
    rpl_err e = send_error(c, RPL_E_LIMIT, "too many sessions of this agent at once: is it running twice?");
    (void)e;
    conn_close(c);
    free(s);
    goto done;
  }
  s->a = a;
  s->c = c;
  conn_set_recv_limit(c, 0); /* a registered agent's certificate: its cycles' frames are large */
  conn_set_extent_sink(c, extent_room, s, EXTENT_ROOM_MIN);
  preauth_release(a, &preauth);
  id_text(s->agent, s->agent_text);
  log_info("agent %s (%s) connected from %s", cn, ag.hostname, conn_peer(c));
  /* Without an eventfd the session still looks every POLL_MS: slower, not wrong. */
  s->wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  err = session_loop(s);
  log_info("agent %s: session ended (%s)", cn, err ? rpl_strerror(err) : "stopping");
  abandon_groups(s, err ? err : RPL_E_CANCELLED);
  for (size_t i = 0; i < s->nslots; i++) {
    drop_cycle(s, &s->slots[i]); /* an unfinished cycle is not committed: the agent sends it again */
    receiver_destroy(s->slots[i].rx);
    pthread_mutex_lock(&a->lock);
    s->slots[i].disk->attached = false;
    if (s->slots[i].disk->served_by == s)
      s->slots[i].disk->served_by = NULL;
    pthread_mutex_unlock(&a->lock);
  }
  if (s->wake >= 0)
    close(s->wake); /* no disk points to this session any more */
  rpl_err e = catalog_agent_heartbeat(a->cat, s->agent, time(NULL));
  (void)e;
  proto_buf_free(&s->out);
  conn_close(c);
  free(s);
done:
  preauth_release(a, &preauth);
  pthread_mutex_lock(&a->lock);
  if (agent_slot >= 0)
    a->agent_sessions[agent_slot].n--;
  a->sessions--;
  pthread_cond_broadcast(&a->applied);
  pthread_mutex_unlock(&a->lock);
  return NULL;
}
