/* applier.c - an apply worker's turn on one disk: applies its committed cycles to its store one
 * per turn, makes the images of recovery points, opens its store once the storage checks pass,
 * keeps its lease (and a takeover), applies retention, deletes it (apply_pool.c hands out turns). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "adopt.h"
#include "appliance.h"
#include "events.h"
#include "rpl_log.h"

#define OPEN_RETRY_MS       30000 /* a page blob that failed to open is tried again after this */

/* A direct recovery-point cycle: the store holds it and nothing after it, and its image is made
 * now (copy_due and snap_pending set by the session, cleared here). A storage that is away keeps
 * it due (and nothing more of the disk is applied before); any other failure leaves the point
 * without an image, said in the log. */
static rpl_err make_direct_point(struct appliance *a, struct disk *d, uint64_t n)
{
  char id[CATALOG_MAX_SNAPSHOT_ID + 1];
  rpl_err e = d->store->ops->make_point(d->store, n, id, sizeof id);
  enum store_failure kind = e ? d->store->ops->failure_kind(e) : STORE_FAILURE_RESYNC;
  bool retry = e && kind == STORE_FAILURE_STORAGE;
  if (!e)
    remember_snapshot(a, d, n, id);
  else
    log_warn("disk %s: cannot make the image of recovery-point cycle %" PRIu64 ": %s%s", d->name, n, rpl_strerror(e),
             retry ? " (tried again)" : "");
  pthread_mutex_lock(&a->lock);
  if (e)
    a->m.storage_errors[kind]++;
  if (!retry) {
    if (d->snap_pending == n)
      d->snap_pending = 0;
    if (d->copy_due == n)
      d->copy_due = 0;
  }
  pthread_cond_broadcast(&a->applied);
  disk_wake_session(d);
  pthread_mutex_unlock(&a->lock);
  return retry ? e : RPL_OK;
}

/* What store_apply_next tells the applier of one disk. */
struct apply_ctx {
  struct appliance *a;
  struct disk *d;
  struct store_stats st0;   /* the store's figures before the apply */
  uint64_t t0;
  uint64_t point_cycle;     /* a point's image follows this applied cycle */
  unsigned worker;          /* the apply worker (events) */
};

static rpl_err resync_index_extent_ahead(void *arg, uint64_t offset, uint64_t length)
{
  struct apply_ctx *ac = arg;
  return resync_index_stale(ac->d, offset, length);
}

static void on_cycle_applied(void *arg, uint64_t n, uint8_t kind, bool point_follows)
{
  struct apply_ctx *ac = arg;
  struct disk *d = ac->d;
  rpl_err e = catalog_cycle_applied(ac->a->cat, d->id, n, time(NULL));
  if (e)
    log_warn("catalog: cycle %" PRIu64 " applied but not recorded: %s", n, rpl_strerror(e));
  pthread_mutex_lock(&ac->a->lock);
  d->last_applied = n;
  d->snap_pending = point_follows ? n : 0;
  pthread_cond_broadcast(&ac->a->applied);
  disk_wake_session(d);
  pthread_mutex_unlock(&ac->a->lock);
  ac->point_cycle = point_follows ? n : 0;
  char id[37];
  id_text(d->id, id);
  struct store_stats st1;
  d->store->ops->get_stats(d->store, &st1);
  struct event ev = {.type = EVENT_APPLIED, .cycle = n, .kind = kind, .worker = ac->worker,
                     .apply_ms = rpl_mono_ms() - ac->t0};
  memcpy(ev.disk_id, d->id, PROTO_ID_SIZE);
  struct journal_cycle_info info;
  if (journal_cycle_info(d->journal, n, &info) == RPL_OK) /* still there: trimmed after the apply */
    ev.raw_bytes = info.totals.raw_bytes;
  event_set_upload(&ev, &ac->st0, &st1, ac->t0);
  events_emit(&ev);
  if (st1.transfers)
    log_info("disk %s: cycle %" PRIu64 " applied (%" PRIu64 " bytes uploaded in %" PRIu64 " ms, %" PRIu64
             " ms waiting for the bandwidth limits)", id, n, ev.upload_bytes, ev.upload_ms, ev.limit_wait_ms);
  else
    log_info("disk %s: cycle %" PRIu64 " applied", id, n);
}

static void on_point_image(void *arg, uint64_t n, const char *image_id)
{
  struct apply_ctx *ac = arg;
  remember_snapshot(ac->a, ac->d, n, image_id);
}

static bool point_image_wanted(void *arg, uint64_t n)
{
  struct apply_ctx *ac = arg;
  pthread_mutex_lock(&ac->a->lock);
  bool wanted = ac->d->image_unwanted != n;
  pthread_mutex_unlock(&ac->a->lock);
  return wanted;
}

/* Opens the disk's store when it is not open yet (a backend opened after the storage checks);
 * the network calls run without the appliance's lock. */
static rpl_err ensure_store(struct appliance *a, struct disk *d)
{
  pthread_mutex_lock(&a->lock);
  bool need = !d->store;
  uint64_t size = d->size;
  pthread_mutex_unlock(&a->lock);
  if (!need)
    return RPL_OK;
  struct store *st;
  rpl_err err = a->backend->open(&a->settings, d->id, size, &st);
  if (err)
    return err;
  resync_index_store_opened(d, st); /* before d->store is seen: nothing can write the replica yet */
  pthread_mutex_lock(&a->lock);
  st->ops->set_limits(st, a->settings.upload_limit_mbps ? &a->limit_all : NULL, agent_limit(a, d->agent));
  d->store = st;
  /* No cycle is applied before the lease is held and the storage's state checked (housekeeping). */
  d->adopt_seq = st->ops->lease_held(st, NULL) ? (int64_t)st->ops->committed(st) : 0;
  d->lease_waiting = true;
  d->lease_waiting_ms = rpl_mono_ms();
  d->lease_why = RPL_OK;
  uint64_t now_size = d->size;
  pthread_mutex_unlock(&a->lock);
  /* The disk grew while the store was being opened. */
  return now_size > size ? st->ops->resize(st, now_size) : RPL_OK;
}

/* What an apply's failure means, by what the backend says it asks for: the storage's failures pass
 * (the cycles stay cached and the storage checks run again), bad cached data is the disk's error,
 * and the lease is housekeeping's business (its own reason in status). */
static void apply_outcome(struct appliance *a, struct disk *d, rpl_err err, uint64_t applied_before,
                          uint64_t applied_after)
{
  enum store_failure kind = err ? a->backend->failure_kind(err) : STORE_FAILURE_RESYNC;
  bool storage_failed = err && kind == STORE_FAILURE_STORAGE;
  bool disk_failed = err && kind == STORE_FAILURE_RESYNC;
  char id[37];
  id_text(d->id, id);
  pthread_mutex_lock(&a->lock);
  d->last_applied = applied_after;
  if (err)
    a->m.storage_errors[kind]++;
  if (storage_failed) { /* the cycles stay in the cache; retried once the storage checks pass again */
    snprintf(d->reason, sizeof d->reason, "upload of cycle %" PRIu64 " waiting for storage: %s", applied_after + 1,
             rpl_detail(err)[0] ? rpl_detail(err) : rpl_strerror(err));
    if (!d->upload_waiting)
      log_warn("disk %s: %s", d->name, d->reason);
    d->upload_waiting = true;
  } else if (d->upload_waiting && !err) {
    d->upload_waiting = false;
    d->reason[0] = 0;
    log_notice("disk %s: uploads resumed", d->name);
  }
  if (disk_failed) {
    char why[RPL_DETAIL_MAX + 128];
    snprintf(d->reason, sizeof d->reason, "applying cycle %" PRIu64 " failed: %s", applied_after + 1,
             rpl_describe(err, why, sizeof why));
    d->state = CATALOG_DISK_ERROR;
    log_err("disk %s: %s", id, d->reason);
    rpl_err e = catalog_disk_set_state(a->cat, d->id, d->state, d->reason);
    (void)e;
  }
  pthread_cond_broadcast(&a->applied);
  disk_wake_session(d);
  pthread_mutex_unlock(&a->lock);
  if (storage_failed)
    upload_gate_failed(a->gate, rpl_strerror(err));
  else if (applied_after > applied_before)
    upload_gate_succeeded(a->gate);
}

/* Applies at most one pending cycle of d: the workers take disks in turn, one cycle each, so
 * that every disk with pending cycles progresses (round-robin) instead of one draining first. */
static void apply_disk(struct appliance *a, struct disk *d, unsigned worker)
{
  pthread_mutex_lock(&a->lock);
  uint64_t copy = d->copy_due;
  pthread_mutex_unlock(&a->lock);
  /* A direct recovery-point cycle: no direct cycle starts, nor is one applied, before its image. */
  if (copy && make_direct_point(a, d, copy))
    return;
  struct journal_usage before, after;
  journal_get_usage(d->journal, &before);
  if (before.last_applied >= before.last_committed)
    return;
  rpl_err err = ensure_store(a, d);
  if (err && rpl_detail(err)[0])
    log_warn("disk %s: cannot open its %s: %s", d->name, a->backend->name, rpl_detail(err));
  pthread_mutex_lock(&a->lock);
  struct store *st = d->store;
  pthread_mutex_unlock(&a->lock);
  struct apply_ctx ac = {.a = a, .d = d, .t0 = rpl_mono_ms(), .worker = worker};
  /* Its ranges are stale in the hash index before the replica is written in them: told by the
   * apply's own check pass, which reads every extent anyway. */
  struct store_apply_cb cb = {.applied = on_cycle_applied, .point = on_point_image, .image_wanted = point_image_wanted,
                              .extent_ahead = d->hidx ? resync_index_extent_ahead : NULL, .ctx = &ac};
  if (!err && st) {
    if (a->pool.hold_ms) /* test hook (fixed once run starts): overlapping applies become observable */
      usleep(a->pool.hold_ms * 1000u);
    st->ops->get_stats(st, &ac.st0);
    resync_index_follow_size(a, d);
    err = st->ops->apply_next(st, d->journal, &cb);
    if (err == RPL_E_NOT_FOUND)
      err = RPL_OK;
  }
  if (ac.point_cycle) { /* made or not, the point's image is settled */
    pthread_mutex_lock(&a->lock);
    if (d->snap_pending == ac.point_cycle)
      d->snap_pending = 0;
    pthread_cond_broadcast(&a->applied);
    disk_wake_session(d);
    pthread_mutex_unlock(&a->lock);
  }
  pthread_mutex_lock(&a->lock);
  a->pool.apply_ms_total += rpl_mono_ms() - ac.t0;
  pthread_mutex_unlock(&a->lock);
  journal_get_usage(d->journal, &after);
  if (after.last_applied > before.last_applied) {
    rpl_err e = journal_trim(d->journal, after.last_applied);
    if (e)
      log_warn("journal trim: %s", rpl_strerror(e));
  }
  apply_outcome(a, d, err, before.last_applied, after.last_applied);
}

/* Retention: the point's image goes from the store. */
static rpl_err delete_point_image(void *ctx, const struct catalog_point *p)
{
  struct store *st = ctx;
  return st->ops->delete_point(st, p->snapshot_id);
}

/* Between applies: the store's lease (kept, or tried while another appliance holds it, then the
 * takeover), and the retention policy after a new point. */
static void housekeeping(struct appliance *a, struct disk *d)
{
  struct store *st = d->store; /* set only by the worker holding d (this one) */
  if (!st)
    return; /* no lease to keep yet, and its point images are pruned once it is open */
  bool acquired = false;
  int64_t seq = -1;
  rpl_err e = st->ops->lease_tick(st, &acquired, &seq);
  struct adopt_result ar = {0};
  bool adopted = false;
  pthread_mutex_lock(&a->lock);
  if (acquired)
    d->adopt_seq = seq > 0 ? seq : 0;
  if (d->adopt_seq > 0 && (e = adopt_store_state(a->cat, d->journal, st, d->id, d->adopt_seq, &adopted, &ar)) == RPL_OK) {
    d->adopt_seq = 0;
  } else if (d->adopt_seq > 0) {
    log_err("disk %s: takeover of the blob's state failed: %s; tried again", d->name, rpl_strerror(e));
  }
  if (adopted) {
    d->last_committed = d->last_applied = ar.base;
    d->adopt_resync = true;
    d->replay_refused = false;
    d->state = CATALOG_DISK_RESYNC_REQUIRED;
    d->epoch++;
    log_notice("disk %s: taken over at cycle %" PRIu64 " (the blob's sequence number): %u point(s) from its "
               "snapshots, %u gone, %u cached cycle(s) dropped; its agent sends again what the blob misses (a replay of the "
               "blocks it kept), else the disk is resynced against the blob",
               d->name, ar.base, ar.points_added, ar.points_gone, ar.cycles_dropped);
    snprintf(d->reason, sizeof d->reason, "taken over from another appliance at cycle %" PRIu64 ": resync", ar.base);
    /* Another appliance wrote the blob: nothing this index says of it holds. */
    if (d->hidx && (e = hashindex_invalidate(d->hidx, "the disk was taken over from another appliance")))
      log_warn("disk %s: hash index: %s", d->name, rpl_strerror(e));
  }
  bool held = st->ops->lease_held(st, &e) && d->adopt_seq == 0;
  if (!held) {
    if (d->adopt_seq > 0)
      snprintf(d->reason, sizeof d->reason, "taking the disk over from its page blob (cycle %" PRId64 ")", d->adopt_seq);
    else
      snprintf(d->reason, sizeof d->reason, "waiting for the page blob's lease: %s", rpl_strerror(e));
    if (!d->lease_waiting) {
      log_warn("disk %s: %s", d->name, d->reason);
      d->lease_waiting_ms = rpl_mono_ms();
    }
    d->lease_why = d->adopt_seq > 0 ? RPL_OK : e;
  } else if (d->lease_waiting && !adopted) {
    d->reason[0] = 0;
  }
  d->lease_waiting = !held;
  bool prune = d->prune_due;
  d->prune_due = false;
  pthread_mutex_unlock(&a->lock);
  if (acquired && !adopted && held)
    log_notice("disk %s: the page blob's lease is this appliance's again", d->name);
  if (prune) {
    struct retention_result r;
    rpl_err pe = retention_prune(a->cat, d->id, &a->retention, time(NULL), delete_point_image, st, &r);
    if (pe)
      log_warn("disk %s: retention: %s", d->name, rpl_strerror(pe));
    else
      log_notice("disk %s: retention at %lld (newest rp-%lld): %zu point(s) kept, %zu pruned, %zu to retry", d->name,
                 (long long)r.now, (long long)r.newest_id, r.kept, r.pruned, r.failed);
    if (pe || r.failed) {
      pthread_mutex_lock(&a->lock);
      d->prune_due = true; /* tried again on the next pass */
      pthread_mutex_unlock(&a->lock);
    }
  }
}

/* Unprotect --delete-replica: the replica with its point images goes from the storage, then the
 * catalog rows, then the cache (the marker in its journal folder finishes it after a restart); a
 * failure is tried again after OPEN_RETRY_MS. */
static void delete_disk(struct appliance *a, struct disk *d)
{
  char id[37];
  id_text(d->id, id);
  rpl_err e = ensure_store(a, d);
  if (!e) {
    pthread_mutex_lock(&a->lock);
    struct store *st = d->store;
    pthread_mutex_unlock(&a->lock);
    e = st->ops->delete_replica(st);
  }
  if (!e && (e = catalog_disk_delete(a->cat, d->id)) == RPL_E_NOT_FOUND)
    e = RPL_OK;
  if (!e) {
    log_notice("disk %s (%s) deleted (unprotect --delete-replica): its %s with every point image, its catalog rows "
               "and its cache", id, d->name, a->backend->name);
    e = disk_retire(a, d); /* d is off the list now: only its cache folder can be left */
    if (e)
      log_warn("disk %s: its cache folder could not be removed: %s (removed at the next start)", id,
               rpl_detail(e)[0] ? rpl_detail(e) : rpl_strerror(e));
    return;
  }
  pthread_mutex_lock(&a->lock);
  d->delete_retry_ms = rpl_mono_ms() + OPEN_RETRY_MS;
  a->m.storage_errors[a->backend->failure_kind(e)]++;
  pthread_mutex_unlock(&a->lock);
  log_warn("disk %s (%s): cannot delete its replica yet: %s; tried again in %d s", id, d->name,
           rpl_detail(e)[0] ? rpl_detail(e) : rpl_strerror(e), OPEN_RETRY_MS / 1000);
}

int applier_disk_work(struct appliance *a, struct disk *d, bool pass, uint64_t now_ms)
{
  (void)a;
  if (d->delete_due) /* its store is the deletion's (the lease is not kept any more) */
    return now_ms >= d->delete_retry_ms ? APPLY_PRIO_DUE : APPLY_PRIO_NONE;
  if (d->store && (now_ms >= d->housekeep_due_ms || d->prune_due))
    return APPLY_PRIO_DUE;
  if (!pass) /* nothing is uploaded before the storage checks pass */
    return APPLY_PRIO_NONE;
  if (!d->store && now_ms >= d->open_retry_ms)
    return APPLY_PRIO_APPLY; /* a resync compares against its blob, an initial sync is written into it */
  if ((d->last_committed > d->last_applied && d->state != CATALOG_DISK_ERROR && !d->lease_waiting) || d->copy_due)
    return APPLY_PRIO_APPLY;
  return d->rehash_more ? APPLY_PRIO_REHASH : APPLY_PRIO_NONE;
}

/* Opens d's store once uploads may run; false when it failed (tried again after OPEN_RETRY_MS). */
static bool open_store(struct appliance *a, struct disk *d)
{
  rpl_err e = ensure_store(a, d);
  if (!e)
    return true;
  pthread_mutex_lock(&a->lock);
  d->open_retry_ms = rpl_mono_ms() + OPEN_RETRY_MS;
  a->m.storage_errors[a->backend->failure_kind(e)]++;
  pthread_mutex_unlock(&a->lock);
  log_warn("disk %s: cannot open its %s: %s", d->name, a->backend->name, rpl_detail(e)[0] ? rpl_detail(e) : rpl_strerror(e));
  if (a->backend->failure_kind(e) == STORE_FAILURE_STORAGE)
    upload_gate_failed(a->gate, rpl_strerror(e));
  return false;
}

void applier_serve_disk(struct appliance *a, struct disk *d, bool pass, unsigned worker)
{
  pthread_mutex_lock(&a->lock);
  bool doomed = d->delete_due;
  bool need_open = pass && !d->store && rpl_mono_ms() >= d->open_retry_ms;
  pthread_mutex_unlock(&a->lock);
  if (doomed) {
    delete_disk(a, d);
    return;
  }
  if (need_open && !open_store(a, d))
    return;
  /* After the open: a blob just opened applies nothing before housekeeping settled its lease. */
  pthread_mutex_lock(&a->lock);
  bool apply = pass && (((d->last_committed > d->last_applied && d->state != CATALOG_DISK_ERROR && !d->lease_waiting)) ||
                        d->copy_due);
  pthread_mutex_unlock(&a->lock);
  if (apply && !atomic_load(&appliance_stopping))
    apply_disk(a, d, worker); /* one cycle per turn: the disks with pending cycles take turns */
  housekeeping(a, d);
  /* Rehashes only when the disk has no cycle waiting: the background rehash never holds up an apply. */
  bool more = !atomic_load(&appliance_stopping) && resync_index_background(a, d, pass && !apply);
  pthread_mutex_lock(&a->lock);
  d->housekeep_due_ms = rpl_mono_ms() + HOUSEKEEPING_PERIOD_MS;
  d->rehash_more = more;
  pthread_mutex_unlock(&a->lock);
}
