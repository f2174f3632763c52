/* daemon.c - `replication-appliance run`: registers agents, orchestrates their cycles (RPO timer,
 * initial sync, recovery-point groups), verifies and journals what arrives before it ACKs, applies
 * committed cycles to the replica, records points, and serves status on the control socket. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <openssl/crypto.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <uuid/uuid.h>

#include "adopt.h"
#include "blob_lease.h"
#include "catalog.h"
#include "channel.h"
#include "commands.h"
#include "conn.h"
#include "control.h"
#include "identity.h"
#include "journal.h"
#include "json_out.h"
#include "receiver.h"
#include "retention.h"
#include "rpl_log.h"
#include "rpl_version.h"
#include "sdnotify.h"
#include "settings.h"
#include "store.h"
#include "upload_gate.h"
#include "web.h"

#define DEFAULT_RPO_MS      30000
#define DIRTY_TRIGGER       (256ull << 20) /* an agent backlog this large starts a cycle before the RPO timer */
#define HELLO_TIMEOUT_MS    30000
#define POLL_MS             50    /* also how soon a session notices an applied point */
#define HEARTBEAT_SAVE_S    30
#define REVOKE_CHECK_MS     5000  /* how soon a session notices its agent was revoked */
#define AGENT_CERT_DAYS     825
#define MAX_GROUPS          16
#define MAX_SNAPS           8  /* recovery-point images taken by the applier, not yet recorded */
#define MAX_AGENT_LIMITS    1024 /* agents with their own upload bucket */
#define OPEN_RETRY_MS       30000 /* a page blob that failed to open is tried again after this */
#define DIRECT_WAIT_MS      10000 /* an initial sync waits this long for its page blob to open */

/* ---- shared state ------------------------------------------------------------------------- */

struct disk {
  uint8_t id[PROTO_ID_SIZE];
  uint8_t agent[PROTO_ID_SIZE];
  char name[256];
  uint64_t size;
  uint32_t sector;
  struct journal *journal;        /* thread-safe */
  struct store *store;            /* the replica (store.h), NULL until opened: with the disk, or by the
                                     applier once the storage checks pass (set and read under the lock);
                                     driven by the applier, or by the session for a direct cycle while
                                     the applier has nothing of this disk to do */
  struct {                        /* images of recovery-point cycles (under snap_lock) */
    uint64_t cycle;
    char id[CATALOG_MAX_SNAPSHOT_ID + 1];
  } snaps[MAX_SNAPS];
  unsigned nsnaps;
  uint64_t last_committed, last_applied;
  uint64_t snap_pending;          /* recovery-point cycle applied, its image being made */
  uint64_t copy_due;              /* a direct recovery-point cycle, its image not made yet */
  int64_t last_commit_time;       /* unix seconds */
  uint64_t last_start_ms;         /* monotonic, of the last CYCLE_START */
  enum catalog_disk_state state;
  char reason[256];
  bool attached;                  /* a session serves it now */
  uint64_t attached_ms;           /* monotonic, when a session last attached it */
  uint64_t open_retry_ms;         /* monotonic: its store is not opened again before */
  bool upload_waiting;            /* the last upload failed for a reason that passes (storage away) */
  bool prune_due;                 /* a point was recorded: the applier applies the retention policy */
  bool adopt_resync;              /* taken over from another appliance: the next cycle is a resync */
  bool lease_waiting;             /* another appliance holds the blob's lease: no cycle starts */
  int64_t adopt_seq;              /* > 0: the lease was acquired at this sequence number, takeover to finish */
  unsigned epoch;                 /* raised by a takeover or a newer session of its agent: sessions serving it end */
  bool want_point, want_resync;   /* asked for from the configuration manager, for its session to start */
  uint64_t raw_committed;         /* bytes of cycles committed since start (the page's churn) */
  struct disk *next;
};

struct appliance {
  char state_dir[1024];
  struct appliance_settings settings;
  const struct store_ops *backend; /* the storage backend the settings name, picked once */
  char listen[256];
  char web[256];                  /* the configuration manager's ADDR:PORT, or "off" */
  const char *web_root;
  unsigned web_sample_s;
  struct catalog *cat;
  SSL_CTX *ctx;
  char *ca_cert, *ca_key;
  unsigned rpo_ms;
  pthread_mutex_t lock;           /* disks list and their counters */
  pthread_cond_t work;            /* commits for the applier */
  pthread_cond_t applied;         /* applies for sessions waiting on points */
  pthread_mutex_t snap_lock;      /* the disks' snaps */
  struct disk *disks;
  unsigned sessions;
  int listen_fd;
  uint64_t points_recorded;
  struct retention_policy retention;
  struct upload_gate *gate;       /* uploads wait for the storage checks */
  struct rate_limit limit_all;    /* appliance-wide upload bucket */
  struct {                        /* one bucket per agent (under lock) */
    uint8_t agent[PROTO_ID_SIZE];
    struct rate_limit rl;
  } *agent_limits;
  size_t nagent_limits;
};

static atomic_int stopping;
static void on_signal(int sig) { atomic_store(&stopping, 1); (void)sig; }

static uint64_t now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void id_text(const uint8_t id[PROTO_ID_SIZE], char out[37]) { uuid_unparse_lower(id, out); }

static struct disk *find_disk(struct appliance *a, const uint8_t id[PROTO_ID_SIZE])
{
  for (struct disk *d = a->disks; d; d = d->next)
    if (!memcmp(d->id, id, PROTO_ID_SIZE))
      return d;
  return NULL;
}

/* Brings the catalog up to what the journal knows (a crash can fall between the journal's commit
 * or apply and the catalog's record of it). */
static void reconcile_catalog(struct appliance *a, struct disk *d)
{
  struct catalog_disk cd;
  if (catalog_disk_get(a->cat, d->id, &cd))
    return;
  struct journal_usage u;
  journal_get_usage(d->journal, &u);
  for (uint64_t n = cd.last_committed_cycle + 1; n <= u.last_committed; n++) {
    struct journal_cycle_info info;
    if (journal_cycle_info(d->journal, n, &info))
      continue; /* trimmed already: applied, and its details are gone */
    struct catalog_cycle cy = {.n = n, .kind = info.kind, .committed_time = time(NULL), .extents = info.totals.extents,
                               .raw_bytes = info.totals.raw_bytes, .payload_bytes = info.totals.payload_bytes};
    memcpy(cy.disk_id, d->id, PROTO_ID_SIZE);
    rpl_err e = catalog_cycle_committed(a->cat, &cy);
    (void)e;
  }
  for (uint64_t n = cd.last_applied_cycle + 1; n <= u.last_applied; n++) {
    rpl_err e = catalog_cycle_applied(a->cat, d->id, n, time(NULL));
    (void)e;
  }
}

/* Opens the disk's journal and replica and adds it to the list (lock held). */
static rpl_err open_disk(struct appliance *a, const struct catalog_disk *cd, struct disk **out)
{
  struct disk *d = calloc(1, sizeof *d);
  if (!d)
    return RPL_E_NOMEM;
  memcpy(d->id, cd->id, PROTO_ID_SIZE);
  memcpy(d->agent, cd->agent_id, PROTO_ID_SIZE);
  snprintf(d->name, sizeof d->name, "%.255s", cd->name);
  d->size = cd->size_bytes;
  d->sector = cd->sector_size;
  d->state = cd->state;
  snprintf(d->reason, sizeof d->reason, "%.255s", cd->state_reason);
  char why[1024] = "";
  rpl_err err = journal_open(a->state_dir, d->id, NULL, &d->journal);
  /* A backend reached over the network is opened by the applier once the storage checks pass. */
  if (!err && !a->backend->opens_after_checks)
    err = a->backend->open(&a->settings, d->id, d->size, &d->store, why, sizeof why);
  if (err) {
    char id[37];
    id_text(d->id, id);
    log_err("disk %s: cannot open its journal or %s: %s", id, a->backend->name, why[0] ? why : rpl_strerror(err));
    journal_close(d->journal);
    if (d->store)
      d->store->ops->close(d->store);
    free(d);
    return err;
  }
  struct journal_usage u;
  journal_get_usage(d->journal, &u);
  /* A journal that lost its history (new, or moved aside) starts where the catalog stands. */
  if (u.last_committed < cd->last_applied_cycle && u.cycles_pending == 0 && u.open_cycle == 0) {
    if (journal_set_base(d->journal, cd->last_applied_cycle) == RPL_OK)
      journal_get_usage(d->journal, &u);
  }
  d->last_committed = u.last_committed;
  d->last_applied = u.last_applied;
  reconcile_catalog(a, d);
  d->next = a->disks;
  a->disks = d;
  *out = d;
  return RPL_OK;
}

static int load_disk_cb(const struct catalog_disk *cd, void *ctx)
{
  struct catalog_disk **list = ctx;
  /* Collected first: the catalog's mutex is held during the callback. */
  size_t n = 0;
  while (list[n])
    n++;
  if (n < 1023) {
    list[n] = malloc(sizeof *cd);
    if (list[n])
      *list[n] = *cd;
  }
  return 0;
}

static rpl_err load_disks(struct appliance *a)
{
  struct catalog_disk **list = calloc(1024, sizeof *list);
  if (!list)
    return RPL_E_NOMEM;
  rpl_err err = catalog_disk_foreach(a->cat, NULL, load_disk_cb, list);
  for (size_t i = 0; list[i]; i++) {
    struct disk *d;
    if (!err)
      err = open_disk(a, list[i], &d);
    free(list[i]);
  }
  free(list);
  return err;
}

/* ---- the applier -------------------------------------------------------------------------- */

struct snap_ctx {
  struct appliance *a;
  struct disk *d;
};

/* The image of recovery-point cycle n was taken (blob snapshot, or file copy): kept for finish_groups. */
static void remember_snapshot(void *arg, uint64_t n, const char *id)
{
  struct snap_ctx *sc = arg;
  pthread_mutex_lock(&sc->a->snap_lock);
  struct disk *d = sc->d;
  if (d->nsnaps == MAX_SNAPS) { /* the oldest was never claimed (its point was not offered) */
    memmove(&d->snaps[0], &d->snaps[1], (MAX_SNAPS - 1) * sizeof d->snaps[0]);
    d->nsnaps--;
  }
  d->snaps[d->nsnaps].cycle = n;
  snprintf(d->snaps[d->nsnaps].id, sizeof d->snaps[0].id, "%s", id);
  d->nsnaps++;
  pthread_mutex_unlock(&sc->a->snap_lock);
}

static bool claim_snapshot(struct appliance *a, struct disk *d, uint64_t n, char *id, size_t idsz)
{
  bool found = false;
  pthread_mutex_lock(&a->snap_lock);
  for (unsigned i = 0; i < d->nsnaps && !found; i++)
    if (d->snaps[i].cycle == n) {
      snprintf(id, idsz, "%s", d->snaps[i].id);
      memmove(&d->snaps[i], &d->snaps[i + 1], (d->nsnaps - i - 1) * sizeof d->snaps[0]);
      d->nsnaps--;
      found = true;
    }
  pthread_mutex_unlock(&a->snap_lock);
  return found;
}

/* A direct recovery-point cycle: the store holds it and nothing after it, and its image is made
 * now (copy_due and snap_pending set by the session, cleared here). A storage that is away keeps
 * it due (and nothing more of the disk is applied before); any other failure leaves the point
 * without an image, said in the log. */
static rpl_err make_direct_point(struct appliance *a, struct disk *d, uint64_t n)
{
  struct snap_ctx sc = {a, d};
  char id[CATALOG_MAX_SNAPSHOT_ID + 1];
  rpl_err e = d->store->ops->make_point(d->store, n, id, sizeof id);
  bool retry = e && d->store->ops->failure_kind(e) == STORE_FAILURE_STORAGE;
  if (!e)
    remember_snapshot(&sc, n, id);
  else
    log_warn("disk %s: cannot make the image of recovery-point cycle %" PRIu64 ": %s%s", d->name, n, rpl_strerror(e),
             retry ? " (tried again)" : "");
  pthread_mutex_lock(&a->lock);
  if (!retry) {
    if (d->snap_pending == n)
      d->snap_pending = 0;
    if (d->copy_due == n)
      d->copy_due = 0;
  }
  pthread_cond_broadcast(&a->applied);
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
};

static void on_cycle_applied(void *arg, uint64_t n, uint8_t kind, bool point_follows)
{
  struct apply_ctx *ac = arg;
  struct disk *d = ac->d;
  (void)kind;
  rpl_err e = catalog_cycle_applied(ac->a->cat, d->id, n, time(NULL));
  if (e)
    log_warn("catalog: cycle %" PRIu64 " applied but not recorded: %s", n, rpl_strerror(e));
  pthread_mutex_lock(&ac->a->lock);
  d->last_applied = n;
  d->snap_pending = point_follows ? n : 0;
  pthread_cond_broadcast(&ac->a->applied);
  pthread_mutex_unlock(&ac->a->lock);
  ac->point_cycle = point_follows ? n : 0;
  char id[37];
  id_text(d->id, id);
  struct store_stats st1;
  d->store->ops->get_stats(d->store, &st1);
  if (st1.transfers) /* bench/upload_limit.sh reads the rate from this line */
    log_info("disk %s: cycle %" PRIu64 " applied (%" PRIu64 " bytes uploaded in %" PRIu64 " ms, %" PRIu64
             " ms waiting for the bandwidth limits)", id, n, st1.bytes_written - ac->st0.bytes_written,
             now_ms() - ac->t0, st1.limit_wait_ms - ac->st0.limit_wait_ms);
  else
    log_info("disk %s: cycle %" PRIu64 " applied", id, n); /* a point's image follows */
}

static void on_point_image(void *arg, uint64_t n, const char *image_id)
{
  struct apply_ctx *ac = arg;
  struct snap_ctx sc = {ac->a, ac->d};
  remember_snapshot(&sc, n, image_id);
}

/* The upload bucket of an agent (created on first use; NULL without a per-agent limit). Lock held. */
static struct rate_limit *agent_limit(struct appliance *a, const uint8_t agent[PROTO_ID_SIZE])
{
  if (!a->settings.agent_limit_mbps || !a->agent_limits)
    return NULL;
  for (size_t i = 0; i < a->nagent_limits; i++)
    if (!memcmp(a->agent_limits[i].agent, agent, PROTO_ID_SIZE))
      return &a->agent_limits[i].rl;
  if (a->nagent_limits == MAX_AGENT_LIMITS)
    return NULL; /* the appliance-wide limit still holds */
  size_t i = a->nagent_limits++;
  memcpy(a->agent_limits[i].agent, agent, PROTO_ID_SIZE);
  rate_limit_init(&a->agent_limits[i].rl, (uint64_t)a->settings.agent_limit_mbps * 1000000);
  return &a->agent_limits[i].rl;
}

/* Opens the disk's store when it is not open yet (a backend opened after the storage checks);
 * the network calls run without the appliance's lock. */
static rpl_err ensure_store(struct appliance *a, struct disk *d, char *why, size_t whysz)
{
  pthread_mutex_lock(&a->lock);
  bool need = !d->store;
  uint64_t size = d->size;
  pthread_mutex_unlock(&a->lock);
  if (!need)
    return RPL_OK;
  struct store *st;
  rpl_err err = a->backend->open(&a->settings, d->id, size, &st, why, whysz);
  if (err)
    return err;
  pthread_mutex_lock(&a->lock);
  st->ops->set_limits(st, a->settings.upload_limit_mbps ? &a->limit_all : NULL, agent_limit(a, d->agent));
  d->store = st;
  /* No cycle is applied before the lease is held and the storage's state checked (housekeeping). */
  d->adopt_seq = st->ops->lease_held(st, NULL) ? (int64_t)st->ops->committed(st) : 0;
  d->lease_waiting = true;
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
  if (storage_failed) { /* the cycles stay in the cache; retried once the storage checks pass again */
    snprintf(d->reason, sizeof d->reason, "upload of cycle %" PRIu64 " waiting for storage: %s", applied_after + 1,
             rpl_strerror(err));
    if (!d->upload_waiting)
      log_warn("disk %s: %s", d->name, d->reason);
    d->upload_waiting = true;
  } else if (d->upload_waiting && !err) {
    d->upload_waiting = false;
    d->reason[0] = 0;
    log_notice("disk %s: uploads resumed", d->name);
  }
  if (disk_failed) {
    snprintf(d->reason, sizeof d->reason, "applying cycle %" PRIu64 " failed: %s", applied_after + 1,
             rpl_strerror(err));
    d->state = CATALOG_DISK_ERROR;
    log_err("disk %s: %s", id, d->reason);
    rpl_err e = catalog_disk_set_state(a->cat, d->id, d->state, d->reason);
    (void)e;
  }
  pthread_cond_broadcast(&a->applied);
  pthread_mutex_unlock(&a->lock);
  if (storage_failed)
    upload_gate_failed(a->gate, rpl_strerror(err));
  else if (applied_after > applied_before)
    upload_gate_succeeded(a->gate);
}

/* Applies at most one pending cycle of d: the applier takes disks in turn, one cycle each, so
 * that every disk with pending cycles progresses (round-robin) instead of one draining first. */
static void apply_disk(struct appliance *a, struct disk *d)
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
  char why[1024] = "";
  rpl_err err = ensure_store(a, d, why, sizeof why);
  if (err && why[0])
    log_warn("disk %s: cannot open its %s: %s", d->name, a->backend->name, why);
  pthread_mutex_lock(&a->lock);
  struct store *st = d->store;
  pthread_mutex_unlock(&a->lock);
  struct apply_ctx ac = {.a = a, .d = d, .t0 = now_ms()};
  struct store_apply_cb cb = {.applied = on_cycle_applied, .point = on_point_image, .ctx = &ac};
  if (!err && st) {
    st->ops->get_stats(st, &ac.st0);
    err = st->ops->apply_next(st, d->journal, &cb);
    if (err == RPL_E_NOT_FOUND)
      err = RPL_OK;
  }
  if (ac.point_cycle) { /* made or not, the point's image is settled */
    pthread_mutex_lock(&a->lock);
    if (d->snap_pending == ac.point_cycle)
      d->snap_pending = 0;
    pthread_cond_broadcast(&a->applied);
    pthread_mutex_unlock(&a->lock);
  }
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
  struct store *st = d->store; /* set by this thread (the applier) only */
  if (st) {
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
      d->state = CATALOG_DISK_RESYNC_REQUIRED;
      d->epoch++;
      log_notice("disk %s: taken over at cycle %" PRIu64 " (the blob's sequence number): %u point(s) from its "
                 "snapshots, %u gone, %u cached cycle(s) dropped; the disk is resynced against the blob",
                 d->name, ar.base, ar.points_added, ar.points_gone, ar.cycles_dropped);
      snprintf(d->reason, sizeof d->reason, "taken over from another appliance at cycle %" PRIu64 ": resync", ar.base);
    }
    bool held = st->ops->lease_held(st, &e) && d->adopt_seq == 0;
    if (!held) {
      if (d->adopt_seq > 0)
        snprintf(d->reason, sizeof d->reason, "taking the disk over from its page blob (cycle %" PRId64 ")", d->adopt_seq);
      else
        snprintf(d->reason, sizeof d->reason, "waiting for the page blob's lease: %s", rpl_strerror(e));
      if (!d->lease_waiting)
        log_warn("disk %s: %s", d->name, d->reason);
    } else if (d->lease_waiting && !adopted) {
      d->reason[0] = 0;
    }
    d->lease_waiting = !held;
    pthread_mutex_unlock(&a->lock);
    if (acquired && !adopted && held)
      log_notice("disk %s: the page blob's lease is this appliance's again", d->name);
  }
  pthread_mutex_lock(&a->lock);
  bool prune = d->prune_due;
  d->prune_due = false;
  pthread_mutex_unlock(&a->lock);
  if (prune && !st) { /* its images are deleted once the store is open */
    pthread_mutex_lock(&a->lock);
    d->prune_due = true;
    pthread_mutex_unlock(&a->lock);
  } else if (prune) {
    struct retention_result r;
    rpl_err e = retention_prune(a->cat, d->id, &a->retention, time(NULL), delete_point_image, st, &r);
    if (e)
      log_warn("disk %s: retention: %s", d->name, rpl_strerror(e));
    else
      log_notice("disk %s: retention at %lld (newest rp-%lld): %zu point(s) kept, %zu pruned, %zu to retry", d->name,
                 (long long)r.now, (long long)r.newest_id, r.kept, r.pruned, r.failed);
    if (e || r.failed) {
      pthread_mutex_lock(&a->lock);
      d->prune_due = true; /* tried again on the next pass */
      pthread_mutex_unlock(&a->lock);
    }
  }
}

static void *applier_main(void *arg)
{
  struct appliance *a = arg;
  while (!atomic_load(&stopping)) {
    /* Nothing is uploaded before the storage checks pass (run again with backoff after a failure). */
    bool opened, opened_any = false;
    bool pass = upload_gate_pass(a->gate, &opened);
    if (pass) { /* open the blobs as soon as uploads may run: a resync compares against them, and an
                 * initial sync is written straight into its blob */
      pthread_mutex_lock(&a->lock);
      struct disk *list[1024];
      size_t n = 0;
      uint64_t now = now_ms();
      for (struct disk *d = a->disks; d && n < 1024; d = d->next)
        if (!d->store && (opened || now >= d->open_retry_ms))
          list[n++] = d;
      pthread_mutex_unlock(&a->lock);
      for (size_t i = 0; i < n && !atomic_load(&stopping); i++) {
        char why[1024] = "";
        rpl_err e = ensure_store(a, list[i], why, sizeof why);
        opened_any = opened_any || !e;
        if (e) {
          pthread_mutex_lock(&a->lock);
          list[i]->open_retry_ms = now_ms() + OPEN_RETRY_MS;
          pthread_mutex_unlock(&a->lock);
          log_warn("disk %s: cannot open its %s: %s", list[i]->name, a->backend->name, why[0] ? why : rpl_strerror(e));
          if (a->backend->failure_kind(e) == STORE_FAILURE_STORAGE) {
            upload_gate_failed(a->gate, rpl_strerror(e));
            pass = false;
            break;
          }
        }
      }
    }
    pthread_mutex_lock(&a->lock);
    struct disk *todo[1024];
    size_t n = 0;
    for (struct disk *d = a->disks; pass && d && n < 1024; d = d->next)
      if ((d->last_committed > d->last_applied && d->state != CATALOG_DISK_ERROR && !d->lease_waiting) || d->copy_due)
        todo[n++] = d;
    if (n == 0 && !opened_any) { /* a blob just opened: its lease is settled below at once */
      uint64_t wait = pass ? 1000 : upload_gate_wait_ms(a->gate);
      if (wait > 1000)
        wait = 1000;
      struct timespec ts;
      clock_gettime(CLOCK_REALTIME, &ts);
      ts.tv_sec += (time_t)(wait / 1000);
      ts.tv_nsec += (long)(wait % 1000) * 1000000;
      if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
      }
      if (wait)
        pthread_cond_timedwait(&a->work, &a->lock, &ts);
    }
    struct disk *all[1024];
    size_t m = 0;
    for (struct disk *d = a->disks; d && m < 1024; d = d->next)
      all[m++] = d;
    pthread_mutex_unlock(&a->lock);
    /* One cycle per disk per pass, in turn (round-robin). */
    for (size_t i = 0; i < n && !atomic_load(&stopping); i++)
      apply_disk(a, todo[i]);
    for (size_t i = 0; i < m; i++)
      housekeeping(a, all[i]);
  }
  return NULL;
}

/* ---- sessions ----------------------------------------------------------------------------- */

struct need_list {                /* chunks whose replica differs, during a resync by comparison */
  struct proto_need_range *ranges;
  uint32_t count, cap;
  uint32_t chunk_size;
  uint64_t chunks_seen;
  uint8_t *buf;                   /* one chunk of the replica */
};

struct rx_slot {                  /* a disk this session serves */
  struct disk *disk;
  struct receiver *rx;
  struct need_list need;
  uint64_t cycle;                 /* started and not finished, or 0 */
  uint8_t kind;
  bool failed;                    /* NACKed: frames of the cycle are dropped until its CYCLE_END */
  bool direct;                    /* the cycle is written straight into the disk's store, not the cache */
  struct store *direct_store;     /* ... this one */
  struct store_stats direct_stats; /* the store's figures when the direct cycle started */
  uint64_t direct_start_ms;
  uint8_t consistency;            /* from its CYCLE_END */
  unsigned epoch;                 /* the disk's epoch when attached */
};

struct group {
  bool used, started;
  bool local;                     /* asked for by the appliance (configuration manager): no POINT to the agent */
  uint64_t request;
  size_t n;
  size_t slots[PROTO_MAX_GROUP];
  uint64_t cycles[PROTO_MAX_GROUP];
  size_t ended;
  bool failed;
  rpl_err why;
  uint8_t consistency;
};

struct session {
  struct appliance *a;
  struct conn *c;
  uint8_t agent[PROTO_ID_SIZE];
  char agent_text[37];
  struct rx_slot slots[64];
  size_t nslots;
  unsigned cycles_open;
  struct group groups[MAX_GROUPS];
  struct proto_buf out;
  time_t last_heartbeat_saved;
  bool dirty_pressure;            /* the agent's backlog is large: the next cycle starts now */
};

static rpl_err flush_out(struct session *s)
{
  rpl_err err = conn_send(s->c, &s->out);
  proto_buf_reset(&s->out);
  return err;
}

static rpl_err send_error(struct conn *c, rpl_err code, const char *msg)
{
  struct proto_buf b = {0};
  struct proto_error e = {.code = code, .message = {(const uint8_t *)msg, (uint32_t)strlen(msg)}};
  rpl_err err = proto_encode_error(&b, &e);
  if (!err)
    err = conn_send(c, &b);
  proto_buf_free(&b);
  return err;
}

static void registration(struct appliance *a, struct conn *c)
{
  struct proto_frame f;
  struct proto_register m;
  rpl_err err = conn_recv(c, &f, HELLO_TIMEOUT_MS);
  if (!err)
    err = f.type == PROTO_REGISTER ? proto_decode_register(&f, &m) : RPL_E_PROTO_UNEXPECTED;
  if (err) {
    log_warn("%s: connection without a client certificate that did not register (%s): refused", conn_peer(c),
             rpl_strerror(err));
    rpl_err e = send_error(c, RPL_E_PERMISSION, "unregistered agent: register with a key from 'replication-appliance init'");
    (void)e;
    return;
  }
  char hostname[256];
  snprintf(hostname, sizeof hostname, "%.*s", (int)m.hostname.len, (const char *)m.hostname.ptr);
  char *csr = strndup((const char *)m.csr_pem.ptr, m.csr_pem.len);
  struct catalog_agent ag = {0};
  uuid_generate(ag.id);
  char idtext[37];
  id_text(ag.id, idtext);
  snprintf(ag.hostname, sizeof ag.hostname, "%s", hostname);
  ag.registered_time = time(NULL);
  char *cert = NULL;
  uint8_t fp[CHAN_FINGERPRINT_SIZE];
  err = csr ? chan_sign_csr(a->ca_cert, a->ca_key, csr, idtext, AGENT_CERT_DAYS, &cert) : RPL_E_NOMEM;
  if (!err)
    err = chan_fingerprint(cert, fp);
  if (!err) {
    char hex[2 * CHAN_FINGERPRINT_SIZE + 8] = "sha256:";
    for (int i = 0; i < CHAN_FINGERPRINT_SIZE; i++)
      sprintf(hex + 7 + 2 * i, "%02x", fp[i]);
    snprintf(ag.cert_fingerprint, sizeof ag.cert_fingerprint, "%s", hex);
    err = catalog_register_agent(a->cat, m.secret, &ag);
  }
  if (err) {
    const char *why = err == RPL_E_CATALOG_KEY_USED      ? "this registration key was used already: issue a new one with 'replication-appliance init'"
                      : err == RPL_E_CATALOG_KEY_UNKNOWN ? "this registration key is not one this appliance issued"
                                                         : rpl_strerror(err);
    log_warn("registration from %s (%s) refused: %s", conn_peer(c), hostname, why);
    rpl_err e = send_error(c, err, why);
    (void)e;
  } else {
    struct proto_buf b = {0};
    struct proto_registered r = {.cert_pem = {(const uint8_t *)cert, (uint32_t)strlen(cert)}};
    memcpy(r.agent_id, ag.id, PROTO_ID_SIZE);
    if (proto_encode_registered(&b, &r) == RPL_OK && conn_send(c, &b) == RPL_OK)
      log_notice("registered agent %s (%s) from %s", idtext, hostname, conn_peer(c));
    proto_buf_free(&b);
  }
  OPENSSL_cleanse(&m, sizeof m);
  free(csr);
  free(cert);
}

static struct rx_slot *slot_of(struct session *s, const uint8_t id[PROTO_ID_SIZE])
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
  uint64_t deadline = now_ms() + RECLAIM_WAIT_MS;
  while (d->attached && !atomic_load(&stopping) && now_ms() < deadline) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 200 * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&a->applied, &a->lock, &ts);
  }
  return !d->attached;
}

static rpl_err attach_disk(struct session *s, const struct proto_disk *m)
{
  struct appliance *a = s->a;
  char id[37];
  id_text(m->disk_id, id);
  if (slot_of(s, m->disk_id))
    return RPL_OK;
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
  if (d && memcmp(d->agent, s->agent, PROTO_ID_SIZE)) {
    err = RPL_E_PERMISSION; /* another agent's disk */
  } else if (d && d->attached && !reclaim_disk(a, d)) {
    err = RPL_E_EXISTS;
  } else {
    err = catalog_disk_upsert(a->cat, &cd);
    if (!err && !d) {
      struct catalog_disk full;
      err = catalog_disk_get(a->cat, m->disk_id, &full);
      if (!err)
        err = open_disk(a, &full, &d);
    } else if (!err && d->size != m->size_bytes) {
      /* The disk grew: the replica grows with it before any extent beyond the old end lands (a
       * store not open yet is opened at the new size). */
      if (m->size_bytes < d->size)
        err = RPL_E_REPLICA_SHRINK;
      else if (d->store)
        err = d->store->ops->resize(d->store, m->size_bytes);
      if (!err)
        d->size = m->size_bytes;
    }
  }
  if (!err) {
    d->attached = true;
    d->attached_ms = now_ms();
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
    log_warn("agent %s: disk %s (%s) refused: %s", s->agent_text, id, cd.name, rpl_strerror(err));
    return err == RPL_E_PERMISSION ? RPL_OK : err;
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
 * and the cache holds no copy of it. Only when the applier has nothing of the disk to do (no cycle
 * unapplied, no point's image being made), the storage is not away, and the backend takes this cycle
 * (store_ops.direct_begin: a file replica any, a page blob only the initial sync). Anything else
 * goes through the journal. */
static void start_direct(struct session *s, struct rx_slot *sl, uint64_t n, uint8_t kind)
{
  struct disk *d = sl->disk;
  struct journal_usage u;
  journal_get_usage(d->journal, &u);
  sl->direct = false;
  sl->direct_store = NULL;
  pthread_mutex_lock(&s->a->lock);
  struct store *st = d->upload_waiting || d->lease_waiting ? NULL : d->store;
  bool idle = d->last_applied == d->last_committed && !d->snap_pending && !d->copy_due;
  pthread_mutex_unlock(&s->a->lock);
  if (!st || !idle || u.open_cycle || u.cycles_pending || u.last_applied != u.last_committed ||
      u.last_committed + 1 != n || !st->ops->direct_begin(st, n, kind))
    return;
  sl->direct = true;
  sl->direct_store = st;
  st->ops->get_stats(st, &sl->direct_stats);
  sl->direct_start_ms = now_ms();
}

/* A write straight into the store failed: the cycle is NACKed, and the agent's next try goes
 * through the cache, which holds it while the storage is away (a lost lease is housekeeping's). */
static void direct_failed(struct session *s, struct rx_slot *sl, rpl_err err)
{
  struct disk *d = sl->disk;
  bool storage = sl->direct_store->ops->failure_kind(err) == STORE_FAILURE_STORAGE;
  pthread_mutex_lock(&s->a->lock);
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
  sl->direct_store = NULL;
  sl->direct = false;
}

static rpl_err start_cycle(struct session *s, struct rx_slot *sl, uint8_t kind)
{
  uint64_t n = receiver_last_committed(sl->rx) + 1;
  rpl_err err = receiver_begin(sl->rx, n, kind);
  if (err)
    return err;
  start_direct(s, sl, n, kind);
  if (!sl->direct && (err = journal_begin_cycle(sl->disk->journal, n, kind)))
    return err;
  struct proto_cycle_start m = {.cycle = n, .kind = kind};
  memcpy(m.disk_id, sl->disk->id, PROTO_ID_SIZE);
  if ((err = proto_encode_cycle_start(&s->out, &m)))
    return err;
  sl->cycle = n;
  sl->kind = kind;
  sl->failed = false;
  s->cycles_open++;
  pthread_mutex_lock(&s->a->lock);
  sl->disk->last_start_ms = now_ms();
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

static void drop_cycle(struct session *s, struct rx_slot *sl)
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
  log_warn("agent %s: disk %s cycle %" PRIu64 " refused: %s", s->agent_text, id, sl->cycle, rpl_strerror(why));
  const char *msg = rpl_strerror(why);
  struct proto_nack m = {.cycle = sl->cycle, .reason = why, .message = {(const uint8_t *)msg, (uint32_t)strlen(msg)}};
  memcpy(m.disk_id, sl->disk->id, PROTO_ID_SIZE);
  rpl_err e = journal_abandon_cycle(sl->disk->journal, sl->cycle);
  (void)e;
  receiver_abort(sl->rx);
  abort_direct(sl);
  need_reset(&sl->need);
  sl->failed = true;
  rpl_err err = proto_encode_nack(&s->out, &m);
  return err ? err : flush_out(s);
}

static struct group *group_of(struct session *s, struct rx_slot *sl)
{
  size_t idx = (size_t)(sl - s->slots);
  for (size_t g = 0; g < MAX_GROUPS; g++) {
    struct group *gr = &s->groups[g];
    if (!gr->used || !gr->started)
      continue;
    for (size_t i = 0; i < gr->n; i++)
      if (gr->slots[i] == idx && gr->cycles[i] == sl->cycle)
        return gr;
  }
  return NULL;
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
  err = receiver_extent(sl->rx, &m, sl->direct ? &raw : NULL);
  if (!err && sl->direct) {
    if ((err = sl->direct_store->ops->direct_extent(sl->direct_store, m.offset, raw, m.length)))
      direct_failed(s, sl, err);
  } else if (!err) {
    struct journal_extent je = {.offset = m.offset, .length = m.length, .codec = m.codec,
                                .payload = m.payload.ptr, .payload_len = m.payload.len};
    memcpy(je.hash, m.hash, PROTO_HASH_SIZE);
    err = journal_append_extent(sl->disk->journal, sl->cycle, &je);
  }
  return err ? nack(s, sl, err) : RPL_OK;
}

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
      gr->failed = true, gr->why = RPL_E_CHECKSUM, gr->ended++;
    return RPL_OK;
  }
  struct receiver_totals t;
  uint64_t t0 = now_ms();
  err = receiver_end(sl->rx, &m, &t);
  struct journal_cycle_totals jt = {.extents = m.extents, .raw_bytes = m.raw_bytes, .payload_bytes = m.payload_bytes};
  memcpy(jt.digest, m.digest, PROTO_HASH_SIZE);
  if (!err && sl->direct && (err = sl->direct_store->ops->direct_commit(sl->direct_store)))
    direct_failed(s, sl, err);
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
  uint64_t t1 = now_ms();
  struct disk *d = sl->disk;
  struct catalog_cycle cy = {.n = sl->cycle, .kind = sl->kind, .committed_time = time(NULL), .extents = t.extents,
                             .raw_bytes = t.raw_bytes, .payload_bytes = t.payload_bytes};
  memcpy(cy.disk_id, d->id, PROTO_ID_SIZE);
  rpl_err ce = catalog_cycle_committed(s->a->cat, &cy);
  if (ce)
    log_warn("catalog: cycle %" PRIu64 " committed but not recorded: %s", sl->cycle, rpl_strerror(ce));
  /* bench/lib_bench.sh times cycles from this line and the "applied" one (no status polling) */
  char idt[37];
  id_text(d->id, idt);
  char upload[160] = "";
  struct store_stats st = {0};
  if (sl->direct)
    sl->direct_store->ops->get_stats(sl->direct_store, &st);
  if (st.transfers) { /* as the applier says it of a cycle uploaded from the cache (bench/upload_limit.sh) */
    snprintf(upload, sizeof upload, " (%" PRIu64 " bytes uploaded in %" PRIu64 " ms, %" PRIu64
             " ms waiting for the bandwidth limits)", st.bytes_written - sl->direct_stats.bytes_written,
             now_ms() - sl->direct_start_ms, st.limit_wait_ms - sl->direct_stats.limit_wait_ms);
  }
  log_info("disk %s: cycle %" PRIu64 " committed%s (%" PRIu64 " extents, %" PRIu64 " bytes, %" PRIu64 " sent)%s", idt,
           sl->cycle, sl->direct ? " and applied" : "", t.extents, t.raw_bytes, t.payload_bytes, upload);
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
  if (sl->kind == PROTO_CYCLE_RESYNC)
    d->adopt_resync = false;
  d->raw_committed += t.raw_bytes;
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
  struct proto_ack ack = {.cycle = sl->cycle};
  memcpy(ack.disk_id, d->id, PROTO_ID_SIZE);
  sl->consistency = m.consistency;
  sl->cycle = 0;
  sl->direct = false;
  sl->direct_store = NULL;
  s->cycles_open--;
  if (gr) {
    gr->ended++;
    if (m.consistency < gr->consistency)
      gr->consistency = m.consistency;
  }
  err = proto_encode_ack(&s->out, &ack);
  log_debug("disk %s: cycle %" PRIu64 ": durable %" PRIu64 " ms after its end came, ACK at %" PRIu64 " ms", idt,
            ack.cycle, t1 - t0, now_ms() - t0);
  return err ? err : flush_out(s);
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
    if (m.first_chunk != 0 || m.chunk_size > (64u << 20))
      return nack(s, sl, RPL_E_PROTO_FIELD);
    need_reset(nl);
    nl->chunk_size = m.chunk_size;
    if (!(nl->buf = malloc(m.chunk_size)))
      return RPL_E_NOMEM;
    pthread_mutex_lock(&s->a->lock);
    pthread_cond_signal(&s->a->work);
    while (d->last_applied < d->last_committed && d->state != CATALOG_DISK_ERROR && !atomic_load(&stopping))
      pthread_cond_wait(&s->a->applied, &s->a->lock);
    pthread_mutex_unlock(&s->a->lock);
  }
  uint64_t nchunks = (d->size + nl->chunk_size - 1) / nl->chunk_size;
  if (m.chunk_size != nl->chunk_size || m.first_chunk != nl->chunks_seen || m.first_chunk + m.count > nchunks)
    return nack(s, sl, RPL_E_PROTO_FIELD);
  for (uint32_t i = 0; i < m.count && !err; i++) {
    uint64_t c = m.first_chunk + i, off = c * nl->chunk_size;
    size_t len = off + nl->chunk_size > d->size ? (size_t)(d->size - off) : nl->chunk_size;
    uint8_t h[PROTO_HASH_SIZE];
    /* The replica is the applier's, but it is idle for this disk: every committed cycle is in and
     * the open one commits only after this comparison. */
    pthread_mutex_lock(&s->a->lock);
    struct store *st = d->store;
    pthread_mutex_unlock(&s->a->lock);
    if (!st) { /* the store is not open (storage checks not passed): send it all */
      err = need_add(nl, c);
      continue;
    }
    err = st->ops->read(st, off, nl->buf, len);
    if (!err) {
      proto_hash128(nl->buf, len, h);
      if (memcmp(h, m.hashes + (size_t)i * PROTO_HASH_SIZE, PROTO_HASH_SIZE))
        err = need_add(nl, c);
    }
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

static rpl_err on_point_request(struct session *s, const struct proto_frame *f)
{
  struct proto_point_request m;
  rpl_err err = proto_decode_point_request(f, &m);
  if (err)
    return err;
  struct group *gr = NULL;
  for (size_t g = 0; g < MAX_GROUPS && !gr; g++)
    if (!s->groups[g].used)
      gr = &s->groups[g];
  rpl_err why = RPL_OK;
  if (!gr)
    why = RPL_E_LIMIT;
  if (gr) {
    memset(gr, 0, sizeof *gr);
    gr->request = m.request;
    gr->consistency = PROTO_FS_CONSISTENT;
    for (uint32_t i = 0; i < m.count && !why; i++) {
      struct rx_slot *sl = slot_of(s, m.disk_ids + (size_t)i * PROTO_ID_SIZE);
      if (!sl)
        why = RPL_E_NOT_FOUND;
      else
        gr->slots[gr->n++] = (size_t)(sl - s->slots);
    }
  }
  if (why) {
    struct proto_point p = {.request = m.request, .status = why};
    err = proto_encode_point(&s->out, &p);
    return err ? err : flush_out(s);
  }
  gr->used = true;
  return RPL_OK;
}

/* Records the points of a group whose cycles are all applied, and tells the agent. */
static rpl_err finish_groups(struct session *s)
{
  for (size_t g = 0; g < MAX_GROUPS; g++) {
    struct group *gr = &s->groups[g];
    if (!gr->used || !gr->started || gr->ended < gr->n)
      continue;
    struct proto_point p = {.request = gr->request};
    char point_id[64] = "";
    if (gr->failed || gr->consistency == PROTO_FUZZY) {
      p.status = gr->failed ? gr->why : RPL_E_POINT_INCONSISTENT;
    } else {
      bool applied = true;
      pthread_mutex_lock(&s->a->lock);
      for (size_t i = 0; i < gr->n; i++)
        applied = applied && s->slots[gr->slots[i]].disk->last_applied >= gr->cycles[i] &&
                  s->slots[gr->slots[i]].disk->snap_pending != gr->cycles[i]; /* and its image kept */
      pthread_mutex_unlock(&s->a->lock);
      if (!applied)
        continue;
      int64_t first = 0;
      for (size_t i = 0; i < gr->n && !p.status; i++) {
        struct catalog_point cp = {.cycle = gr->cycles[i], .time = time(NULL),
                                   .kind = gr->consistency == PROTO_FS_CONSISTENT ? CATALOG_POINT_FILESYSTEM_CONSISTENT
                                                                                  : CATALOG_POINT_CRASH_CONSISTENT};
        memcpy(cp.disk_id, s->slots[gr->slots[i]].disk->id, PROTO_ID_SIZE);
        cp.has_snapshot = claim_snapshot(s->a, s->slots[gr->slots[i]].disk, cp.cycle, cp.snapshot_id,
                                         sizeof cp.snapshot_id);
        int64_t id;
        p.status = catalog_point_add(s->a->cat, &cp, &id);
        if (i == 0)
          first = id;
      }
      if (!p.status) {
        snprintf(point_id, sizeof point_id, "rp-%" PRId64, first);
        p.consistency = gr->consistency;
        p.point_id = (struct proto_bytes){(const uint8_t *)point_id, (uint32_t)strlen(point_id)};
        pthread_mutex_lock(&s->a->lock);
        s->a->points_recorded++;
        for (size_t i = 0; i < gr->n; i++)
          s->slots[gr->slots[i]].disk->prune_due = true;
        pthread_cond_signal(&s->a->work);
        pthread_mutex_unlock(&s->a->lock);
        log_notice("agent %s: recovery point %s (%s) of %zu disk(s)", s->agent_text, point_id,
                   gr->consistency == PROTO_FS_CONSISTENT ? "filesystem-consistent" : "crash-consistent", gr->n);
      }
    }
    gr->used = false;
    if (gr->local) {
      if (p.status)
        log_warn("agent %s: the recovery point asked for on the configuration manager was not made: %s", s->agent_text,
                 rpl_strerror(p.status));
      continue;
    }
    rpl_err err = proto_encode_point(&s->out, &p);
    if (!err)
      err = flush_out(s);
    if (err)
      return err;
  }
  return RPL_OK;
}

/* Starts what is due: a pending recovery-point group (all its disks at once), else the disk that
 * waited longest past the RPO target, or one that never synced. */
static rpl_err orchestrate(struct session *s)
{
  if (s->cycles_open)
    return RPL_OK;
  /* A checkpoint asked for on the configuration manager: a recovery-point group of that disk alone. */
  for (size_t i = 0; i < s->nslots; i++) {
    struct disk *d = s->slots[i].disk;
    pthread_mutex_lock(&s->a->lock);
    bool want = d->want_point && d->last_committed > 0;
    pthread_mutex_unlock(&s->a->lock);
    if (!want)
      continue;
    struct group *gr = NULL;
    for (size_t g = 0; g < MAX_GROUPS && !gr; g++)
      if (!s->groups[g].used)
        gr = &s->groups[g];
    if (!gr)
      break; /* all busy: asked again on the next pass */
    memset(gr, 0, sizeof *gr);
    gr->used = gr->local = true;
    gr->consistency = PROTO_FS_CONSISTENT;
    gr->slots[gr->n++] = i;
    pthread_mutex_lock(&s->a->lock);
    d->want_point = false;
    pthread_mutex_unlock(&s->a->lock);
  }
  for (size_t g = 0; g < MAX_GROUPS; g++) {
    struct group *gr = &s->groups[g];
    if (!gr->used || gr->started)
      continue;
    bool ready = true;
    pthread_mutex_lock(&s->a->lock);
    for (size_t i = 0; i < gr->n; i++)
      ready = ready && s->slots[gr->slots[i]].disk->last_committed > 0 && !s->slots[gr->slots[i]].disk->lease_waiting &&
              !s->slots[gr->slots[i]].disk->adopt_resync;
    pthread_mutex_unlock(&s->a->lock);
    if (!ready)
      continue; /* after the initial sync */
    for (size_t i = 0; i < gr->n; i++) {
      struct rx_slot *sl = &s->slots[gr->slots[i]];
      rpl_err err = start_cycle(s, sl, PROTO_CYCLE_RECOVERY_POINT);
      if (err)
        return err;
      gr->cycles[i] = sl->cycle;
    }
    gr->started = true;
    return flush_out(s);
  }
  uint64_t now = now_ms();
  struct rx_slot *pick = NULL;
  uint64_t oldest = UINT64_MAX;
  uint8_t kind = PROTO_CYCLE_PLAIN;
  pthread_mutex_lock(&s->a->lock);
  for (size_t i = 0; i < s->nslots; i++) {
    struct disk *d = s->slots[i].disk;
    if (d->state == CATALOG_DISK_ERROR || d->lease_waiting || d->adopt_seq > 0)
      continue;
    if (d->last_committed == 0 && !d->store && now - d->attached_ms < DIRECT_WAIT_MS &&
        upload_gate_is_open(s->a->gate))
      continue; /* its page blob opens in a moment: the initial sync then goes straight into it */
    if (d->last_committed == 0 || d->adopt_resync || d->want_resync) { /* initial sync, a takeover, or asked: a resync */
      d->want_resync = false;
      pick = &s->slots[i];
      kind = PROTO_CYCLE_RESYNC;
      break;
    }
    if ((now - d->last_start_ms >= s->a->rpo_ms || s->dirty_pressure) && d->last_start_ms < oldest) {
      oldest = d->last_start_ms;
      pick = &s->slots[i];
    }
  }
  pthread_mutex_unlock(&s->a->lock);
  if (!pick)
    return RPL_OK;
  s->dirty_pressure = false;
  rpl_err err = start_cycle(s, pick, kind);
  if (err == RPL_E_JOURNAL_FULL) {
    pick->disk->last_start_ms = now; /* back off one RPO period while the applier drains */
    log_warn("agent %s: cache full, cycle postponed", s->agent_text);
    return RPL_OK;
  }
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
  char hostname[] = "replication-appliance";
  struct proto_hello mine = {.version_min = PROTO_VERSION_MIN, .version_max = PROTO_VERSION_MAX,
                             .hostname = {(const uint8_t *)hostname, (uint32_t)strlen(hostname)}};
  if ((err = proto_encode_hello(&s->out, &mine)))
    return err;
  return flush_out(s);
}

static rpl_err session_loop(struct session *s)
{
  rpl_err err = session_hello(s);
  if (err)
    return err;
  uint64_t last_rx = now_ms(), last_revoke_check = now_ms();
  while (!atomic_load(&stopping)) {
    if ((err = orchestrate(s)) || (err = finish_groups(s)))
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
    if (now_ms() - last_revoke_check >= REVOKE_CHECK_MS) {
      last_revoke_check = now_ms();
      struct catalog_agent ag;
      if (catalog_agent_get(s->a->cat, s->agent, &ag) == RPL_OK && ag.revoked) {
        log_warn("agent %s: revoked: session ended", s->agent_text);
        rpl_err e = send_error(s->c, RPL_E_PERMISSION, "this agent was revoked: register it again with a new key");
        (void)e;
        return RPL_E_PERMISSION;
      }
    }
    struct proto_frame f;
    err = conn_recv(s->c, &f, POLL_MS);
    if (err == RPL_E_TIMEOUT) {
      if (now_ms() - last_rx > 3 * 10000 + CONN_IO_TIMEOUT_MS)
        return RPL_E_TIMEOUT; /* no heartbeat for far too long */
      continue;
    }
    if (err)
      return err;
    last_rx = now_ms();
    /* Any frame shows the agent alive: one busy sending cycles sends no HEARTBEAT. */
    if (time(NULL) - s->last_heartbeat_saved >= HEARTBEAT_SAVE_S) {
      rpl_err e = catalog_agent_heartbeat(s->a->cat, s->agent, time(NULL));
      (void)e;
      s->last_heartbeat_saved = time(NULL);
    }
    switch (f.type) {
    case PROTO_EXTENT: err = on_extent(s, &f); break;
    case PROTO_CYCLE_END: err = on_cycle_end(s, &f); break;
    case PROTO_POINT_REQUEST: err = on_point_request(s, &f); break;
    case PROTO_HASHES: err = on_hashes(s, &f); break;
    case PROTO_DISK: {
      struct proto_disk m;
      err = proto_decode_disk(&f, &m);
      if (!err)
        err = attach_disk(s, &m);
      break;
    }
    case PROTO_NACK: {
      /* The agent could not run the cycle (device gone): give it up; it is asked again later. */
      struct proto_nack m;
      err = proto_decode_nack(&f, &m);
      struct rx_slot *sl = err ? NULL : slot_of(s, m.disk_id);
      if (sl && sl->cycle == m.cycle) {
        drop_cycle(s, sl);
        pthread_mutex_lock(&s->a->lock);
        sl->disk->state = CATALOG_DISK_ERROR;
        snprintf(sl->disk->reason, sizeof sl->disk->reason, "the agent cannot read the disk: %.*s",
                 (int)m.message.len, (const char *)m.message.ptr);
        pthread_mutex_unlock(&s->a->lock);
      }
      break;
    }
    case PROTO_HEARTBEAT: {
      struct proto_heartbeat hb;
      if ((err = proto_decode_heartbeat(&f, &hb)))
        break;
      if (hb.dirty_bytes >= DIRTY_TRIGGER)
        s->dirty_pressure = true;
      break;
    }
    default:
      log_warn("agent %s: unexpected %s frame", s->agent_text, proto_type_name(f.type));
      err = RPL_E_PROTO_UNEXPECTED;
    }
    if (err)
      return err;
  }
  return RPL_OK;
}

struct session_arg {
  struct appliance *a;
  int fd;
};

static void *session_main(void *arg)
{
  struct session_arg *sa = arg;
  struct appliance *a = sa->a;
  struct conn *c;
  rpl_err err = conn_accept(a->ctx, sa->fd, HELLO_TIMEOUT_MS, &c);
  free(sa);
  if (err)
    goto done;
  char cn[128];
  err = chan_peer_cn(conn_ssl(c), cn, sizeof cn);
  if (err == RPL_E_NOT_FOUND) {
    registration(a, c);
    conn_close(c);
    goto done;
  }
  struct session *s = calloc(1, sizeof *s);
  struct catalog_agent ag;
  if (!s || err || uuid_parse(cn, s->agent) || catalog_agent_get(a->cat, s->agent, &ag) || ag.revoked) {
    log_warn("%s: client certificate for '%s' refused: unknown or revoked agent", conn_peer(c), cn);
    rpl_err e = send_error(c, RPL_E_PERMISSION, "unknown or revoked agent: register it again with a new key");
    (void)e;
    conn_close(c);
    free(s);
    goto done;
  }
  s->a = a;
  s->c = c;
  id_text(s->agent, s->agent_text);
  log_info("agent %s (%s) connected from %s", cn, ag.hostname, conn_peer(c));
  err = session_loop(s);
  log_info("agent %s: session ended (%s)", cn, err ? rpl_strerror(err) : "stopping");
  for (size_t i = 0; i < s->nslots; i++) {
    drop_cycle(s, &s->slots[i]); /* an unfinished cycle is not committed: the agent sends it again */
    receiver_destroy(s->slots[i].rx);
    pthread_mutex_lock(&a->lock);
    s->slots[i].disk->attached = false;
    pthread_mutex_unlock(&a->lock);
  }
  rpl_err e = catalog_agent_heartbeat(a->cat, s->agent, time(NULL));
  (void)e;
  proto_buf_free(&s->out);
  conn_close(c);
  free(s);
done:
  pthread_mutex_lock(&a->lock);
  a->sessions--;
  pthread_cond_broadcast(&a->applied);
  pthread_mutex_unlock(&a->lock);
  return NULL;
}

static rpl_err listen_on(struct appliance *a)
{
  char host[256], port[16];
  if (conn_split_hostport(a->listen, host, sizeof host, port, sizeof port, CONN_DEFAULT_PORT))
    return RPL_E_INVALID_ARGUMENT;
  struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *ai;
  if (getaddrinfo(strcmp(host, "*") ? host : NULL, port, &hints, &ai))
    return RPL_E_INVALID_ARGUMENT;
  int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  if (fd >= 0)
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 64) != 0) {
    log_err("cannot listen on %s: %s", a->listen, strerror(errno));
    if (fd >= 0)
      close(fd);
    freeaddrinfo(ai);
    return RPL_E_IO;
  }
  freeaddrinfo(ai);
  a->listen_fd = fd;
  return RPL_OK;
}

/* ---- status ------------------------------------------------------------------------------- */

struct status_ctx {
  struct appliance *a;
  struct json_out *j;
  FILE *f;
};

static int status_agent_cb(const struct catalog_agent *ag, void *arg)
{
  struct status_ctx *sc = arg;
  char id[37];
  id_text(ag->id, id);
  long ago = ag->last_heartbeat ? (long)(time(NULL) - ag->last_heartbeat) : -1;
  if (sc->j) {
    json_object_begin(sc->j, NULL);
    json_string(sc->j, "agent_id", id);
    json_string(sc->j, "hostname", ag->hostname);
    json_bool(sc->j, "revoked", ag->revoked);
    json_u64(sc->j, "registered_unix", (uint64_t)ag->registered_time);
    json_u64(sc->j, "last_heartbeat_unix", (uint64_t)ag->last_heartbeat);
    json_object_end(sc->j);
  } else {
    fprintf(sc->f, "agent %s (%s)%s, last heartbeat %s", id, ag->hostname, ag->revoked ? " REVOKED" : "",
            ago < 0 ? "never" : "");
    if (ago >= 0)
      fprintf(sc->f, "%lds ago", ago);
    fputc('\n', sc->f);
  }
  return 0;
}

static void status_disks(struct appliance *a, struct json_out *j, FILE *f)
{
  pthread_mutex_lock(&a->lock);
  for (struct disk *d = a->disks; d; d = d->next) {
    char id[37], agent[37];
    id_text(d->id, id);
    id_text(d->agent, agent);
    struct journal_usage u;
    journal_get_usage(d->journal, &u);
    struct catalog_point p;
    bool has_point = catalog_point_latest(a->cat, d->id, &p) == RPL_OK;
    char point_id[40] = "";
    if (has_point)
      snprintf(point_id, sizeof point_id, "rp-%" PRId64, p.id);
    long lag = d->last_commit_time ? (long)(time(NULL) - d->last_commit_time) : -1;
    const char *state = catalog_disk_state_name(d->state);
    if (j) {
      json_object_begin(j, NULL);
      json_string(j, "disk_id", id);
      json_string(j, "agent_id", agent);
      json_string(j, "name", d->name);
      json_u64(j, "size", d->size);
      json_string(j, "state", state);
      json_string(j, "reason", d->reason[0] ? d->reason : NULL);
      json_bool(j, "connected", d->attached);
      json_u64(j, "last_committed_cycle", d->last_committed);
      json_u64(j, "last_applied_cycle", d->last_applied);
      json_u64(j, "rpo_lag_seconds", lag < 0 ? 0 : (uint64_t)lag);
      json_u64(j, "backlog_cycles", u.cycles_pending);
      json_u64(j, "backlog_bytes", u.pending_bytes);
      json_u64(j, "cache_bytes", u.bytes);
      json_u64(j, "cache_limit_bytes", u.limit_bytes);
      json_string(j, "last_point", has_point ? point_id : NULL);
      json_string(j, "last_point_kind", has_point ? catalog_point_kind_name(p.kind) : NULL);
      json_object_end(j);
    } else {
      fprintf(f, "disk %s (%s, agent %s): %s%s%s, %" PRIu64 " MiB, cycle %" PRIu64 " committed / %" PRIu64
                 " applied, backlog %" PRIu64 " cycle(s) %" PRIu64 " KiB, cache %" PRIu64 " MiB",
              id, d->name, agent, state, d->reason[0] ? ": " : "", d->reason, d->size >> 20, d->last_committed,
              d->last_applied, u.cycles_pending, u.pending_bytes >> 10, u.bytes >> 20);
      if (lag >= 0)
        fprintf(f, ", RPO lag %lds", lag);
      if (has_point)
        fprintf(f, ", last point %s (%s)", point_id, catalog_point_kind_name(p.kind));
      fputc('\n', f);
    }
  }
  pthread_mutex_unlock(&a->lock);
}

/* The `status` document (text, or JSON for --json and the configuration manager's /api/status). */
static void status_write(struct appliance *a, bool json, FILE *f)
{
  struct json_out j;
  struct status_ctx sc = {.a = a, .f = f};
  char storage[sizeof a->settings.storage];
  a->backend->describe(&a->settings, storage, sizeof storage);
  if (json) {
    json_init(&j, f);
    sc.j = &j;
    json_object_begin(&j, NULL);
    json_string(&j, "version", RPL_VERSION);
    json_string(&j, "listen", a->listen);
    json_string(&j, "storage", storage);
    json_u64(&j, "rpo_target_seconds", a->rpo_ms / 1000);
    json_u64(&j, "upload_limit_mbps", a->settings.upload_limit_mbps);
    json_u64(&j, "agent_limit_mbps", a->settings.agent_limit_mbps);
    upload_gate_status(a->gate, &j, NULL);
    json_array_begin(&j, "agents");
  } else {
    fprintf(f, "replication-appliance %s listening on %s, storage %s, RPO target %us\n", RPL_VERSION, a->listen,
            storage, a->rpo_ms / 1000);
    upload_gate_status(a->gate, NULL, f);
    fprintf(f, "upload limits: ");
    if (a->settings.upload_limit_mbps)
      fprintf(f, "%u MB/s in all, ", a->settings.upload_limit_mbps);
    else
      fprintf(f, "none in all, ");
    if (a->settings.agent_limit_mbps)
      fprintf(f, "%u MB/s per agent\n", a->settings.agent_limit_mbps);
    else
      fprintf(f, "none per agent\n");
  }
  rpl_err e = catalog_agent_foreach(a->cat, status_agent_cb, &sc);
  (void)e;
  if (json) {
    json_array_end(&j);
    json_array_begin(&j, "disks");
  }
  status_disks(a, sc.j, f);
  if (json) {
    json_array_end(&j);
    json_object_end(&j);
    json_finish(&j);
  }
}

static int ctl_status(struct appliance *a, bool json, struct control_reply *out)
{
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  if (!f)
    return 1;
  status_write(a, json, f);
  fclose(f);
  control_printf(out, "%s", buf);
  free(buf);
  return 0;
}

/* ---- the configuration manager's view of the daemon (web.h's web_ops) ---------------------- */

static void web_status_json(void *ctx, FILE *f) { status_write(ctx, true, f); }

static void web_sample(void *ctx, web_sample_fn fn, void *arg)
{
  struct appliance *a = ctx;
  pthread_mutex_lock(&a->lock);
  for (struct disk *d = a->disks; d; d = d->next) {
    struct journal_usage u;
    journal_get_usage(d->journal, &u);
    struct web_disk_sample s = {.rpo_lag_s = d->last_commit_time ? (uint64_t)(time(NULL) - d->last_commit_time) : 0,
                                .backlog_bytes = u.pending_bytes, .committed_raw_bytes = d->raw_committed};
    memcpy(s.disk_id, d->id, PROTO_ID_SIZE);
    fn(arg, &s);
  }
  pthread_mutex_unlock(&a->lock);
}

static rpl_err web_disk_request(void *ctx, const uint8_t id[PROTO_ID_SIZE], enum web_disk_action act, char *why,
                                size_t whysz)
{
  struct appliance *a = ctx;
  rpl_err err = RPL_OK;
  pthread_mutex_lock(&a->lock);
  struct disk *d = find_disk(a, id);
  if (!d) {
    err = RPL_E_NOT_FOUND;
  } else if (!d->attached) {
    snprintf(why, whysz, "the disk's agent is not connected: start 'mobility-agent run' on it, then ask again");
    err = RPL_E_NO_DAEMON;
  } else if (act == WEB_DISK_CHECKPOINT && d->last_committed == 0) {
    snprintf(why, whysz, "the disk has not finished its initial sync: a recovery point needs it first");
    err = RPL_E_INVALID_ARGUMENT;
  } else if (act == WEB_DISK_CHECKPOINT) {
    d->want_point = true;
  } else {
    d->want_resync = true;
  }
  pthread_mutex_unlock(&a->lock);
  if (!err)
    log_notice("disk %s: %s asked for on the configuration manager", d->name,
               act == WEB_DISK_CHECKPOINT ? "a recovery point" : "a resync");
  return err;
}

static int control_handler(void *ctx, int argc, char **argv, struct control_reply *out)
{
  struct appliance *a = ctx;
  if (!strcmp(argv[0], "status"))
    return ctl_status(a, argc > 1 && !strcmp(argv[1], "--json"), out);
  control_printf(out, "unknown daemon command '%s'", argv[0]);
  return 2;
}

int cmd_status(int argc, char **argv)
{
  const char *state = APPLIANCE_DEFAULT_STATE;
  const char *args[2] = {"status", NULL};
  int n = 1;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--state") && i + 1 < argc)
      state = argv[++i];
    else if (!strcmp(argv[i], "--json"))
      args[n++] = "--json";
    else {
      fprintf(stderr, "replication-appliance status: usage: status --state DIR [--json]\n");
      return 2;
    }
  }
  int status;
  char *reply;
  rpl_err err = control_call(state, n, args, &status, &reply);
  if (err == RPL_E_NO_DAEMON) {
    fprintf(stderr, "replication-appliance status: the appliance is not running (no control socket in %s): start it with 'replication-appliance run --state %s'\n",
            state, state);
    return 1;
  }
  if (err) {
    fprintf(stderr, "replication-appliance status: %s\n", rpl_strerror(err));
    return 1;
  }
  fputs(reply, status ? stderr : stdout);
  free(reply);
  return status;
}

/* ---- run ---------------------------------------------------------------------------------- */

int cmd_run(int argc, char **argv)
{
  static struct appliance a;
  memset(&a, 0, sizeof a);
  const char *state = APPLIANCE_DEFAULT_STATE;
  snprintf(a.listen, sizeof a.listen, "*:%d", CONN_DEFAULT_PORT);
  a.rpo_ms = DEFAULT_RPO_MS;
  snprintf(a.web, sizeof a.web, "%s", WEB_DEFAULT_ADDR);
  bool web_explicit = false;
  const char *sample = getenv("RPL_WEB_SAMPLE_SECONDS"); /* the series' interval (tests shorten it) */
  a.web_sample_s = sample ? (unsigned)strtoul(sample, NULL, 10) : 0;
  if (a.web_sample_s > 600)
    a.web_sample_s = 600;
  static const struct option opts[] = {{"state", required_argument, NULL, 's'},
                                       {"listen", required_argument, NULL, 'l'},
                                       {"rpo", required_argument, NULL, 'r'},
                                       {"upload-limit", required_argument, NULL, 'U'},
                                       {"agent-limit", required_argument, NULL, 'A'},
                                       {"web", required_argument, NULL, 'w'},
                                       {"web-root", required_argument, NULL, 'W'},
                                       {0, 0, 0, 0}};
  const char *upload_limit = NULL, *agent_limit_arg = NULL;
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
    case 's': state = optarg; break;
    case 'l': snprintf(a.listen, sizeof a.listen, "%s", optarg); break;
    case 'w':
      snprintf(a.web, sizeof a.web, "%s", optarg);
      web_explicit = true;
      break;
    case 'W': a.web_root = optarg; break;
    case 'r': {
      char *end;
      double secs = strtod(optarg, &end);
      if (*end || secs < 0.1 || secs > 86400) {
        fprintf(stderr, "replication-appliance run: --rpo takes seconds between 0.1 and 86400\n");
        return 2;
      }
      a.rpo_ms = (unsigned)(secs * 1000);
      break;
    }
    case 'U': upload_limit = optarg; break;
    case 'A': agent_limit_arg = optarg; break;
    default:
      fprintf(stderr, "usage: replication-appliance run --state DIR [--listen ADDR:PORT] [--rpo SECONDS] [--upload-limit MBPS] [--agent-limit MBPS]\n"
                      "                                 [--web ADDR:PORT|off] [--web-root DIR]\n");
      return 2;
    }
  }
  snprintf(a.state_dir, sizeof a.state_dir, "%s", state);
  char why[1024] = "";
  rpl_err err = settings_load(state, &a.settings, why, sizeof why);
  if (err) {
    fprintf(stderr, "replication-appliance run: %s\n", err == RPL_E_NOT_FOUND ? "not initialised: run 'replication-appliance init' first" : why);
    return 1;
  }
  if ((err = retention_parse(a.settings.retention, &a.retention, why, sizeof why))) {
    fprintf(stderr, "replication-appliance run: %s (in %s/%s: run init again with --retention)\n", why, state, SETTINGS_FILE);
    return 1;
  }
  /* Test-only: compresses the retention policy's time scale (3600: one second counts as an hour). */
  const char *scale = getenv("RPL_TEST_RETENTION_SCALE");
  if (scale && *scale) {
    long v = strtol(scale, NULL, 10);
    a.retention.time_scale = v >= 1 && v <= (long)RETENTION_MAX_SCALE ? (unsigned)v : 1;
    log_warn("RPL_TEST_RETENTION_SCALE=%u: retention runs on a compressed time scale (tests only)", a.retention.time_scale);
  }
  a.backend = store_backend(&a.settings);
  if (a.backend->leased && (err = lease_owner_id(state, a.settings.lease_id))) {
    fprintf(stderr, "replication-appliance run: cannot read or make %s/lease-id: %s\n", state, rpl_strerror(err));
    return 1;
  }
  /* Limits given to run override the settings init stored (for this run only). */
  const char *lim_arg[2] = {upload_limit, agent_limit_arg};
  unsigned *lim_dst[2] = {&a.settings.upload_limit_mbps, &a.settings.agent_limit_mbps};
  for (int i = 0; i < 2; i++)
    if (lim_arg[i] && !rate_limit_parse_mbps(lim_arg[i], lim_dst[i])) {
      fprintf(stderr, "replication-appliance run: --%s takes a whole number of MB/s (10^6 bytes per second) from 0 (no limit) to %u, not '%s'\n",
              i == 0 ? "upload-limit" : "agent-limit", RATELIMIT_MAX_MBPS, lim_arg[i]);
      return 2;
    }
  rate_limit_init(&a.limit_all, (uint64_t)a.settings.upload_limit_mbps * 1000000);
  if ((err = upload_gate_create(&a.settings, &a.gate)) ||
      (a.settings.agent_limit_mbps && !(a.agent_limits = calloc(MAX_AGENT_LIMITS, sizeof *a.agent_limits)))) {
    fprintf(stderr, "replication-appliance run: %s\n", rpl_strerror(err ? err : RPL_E_NOMEM));
    return 1;
  }
  if ((err = identity_load(state, &a.ca_cert, &a.ca_key)) || (err = chan_server_ctx(a.ca_cert, a.ca_key, &a.ctx))) {
    fprintf(stderr, "replication-appliance run: the appliance's certificate in %s is missing or invalid (%s): run init again\n",
            state, rpl_strerror(err));
    return 1;
  }
  if ((err = identity_open_catalog(state, &a.cat))) {
    fprintf(stderr, "replication-appliance run: cannot open the catalog: %s\n", rpl_strerror(err));
    return 1;
  }
  pthread_mutex_init(&a.lock, NULL);
  pthread_cond_init(&a.work, NULL);
  pthread_cond_init(&a.applied, NULL);
  pthread_mutex_init(&a.snap_lock, NULL);
  if ((err = load_disks(&a))) {
    fprintf(stderr, "replication-appliance run: cannot open the disks' journals or storage: %s (see the log line before)\n",
            rpl_strerror(err));
    return 1;
  }
  if ((err = listen_on(&a))) {
    fprintf(stderr, "replication-appliance run: cannot listen on %s: %s\n", a.listen, strerror(errno));
    return 1;
  }
  struct control_server *ctl;
  if ((err = control_server_start(state, control_handler, &a, &ctl))) {
    fprintf(stderr, "replication-appliance run: cannot serve the control socket in %s: %s\n", state, rpl_strerror(err));
    return 1;
  }
  struct web_server *web = NULL;
  if (strcmp(a.web, "off")) {
    char why2[1024] = "";
    struct web_config wc = {.addr = a.web, .root = a.web_root, .state_dir = state, .cert_pem = a.ca_cert,
                            .key_pem = a.ca_key, .cat = a.cat, .sample_s = a.web_sample_s,
                            .ops = {.ctx = &a, .status_json = web_status_json, .sample = web_sample,
                                    .disk_request = web_disk_request}};
    if ((err = web_start(&wc, &web, why2, sizeof why2))) {
      if (web_explicit) {
        fprintf(stderr, "replication-appliance run: configuration manager: %s (%s)\n", why2, rpl_strerror(err));
        control_server_stop(ctl);
        return 1;
      }
      /* At the default address (another appliance on this machine?) replication goes on without the page. */
      log_err("configuration manager not started: %s (%s)", why2, rpl_strerror(err));
    }
  }
  struct sigaction sig = {.sa_handler = on_signal};
  sigaction(SIGTERM, &sig, NULL);
  sigaction(SIGINT, &sig, NULL);
  signal(SIGPIPE, SIG_IGN);
  pthread_t applier;
  pthread_create(&applier, NULL, applier_main, &a);
  char storage[sizeof a.settings.storage];
  a.backend->describe(&a.settings, storage, sizeof storage);
  log_info("replication-appliance %s listening on %s, storage %s (%ss), RPO target %.1f s, upload limits %u MB/s in all, %u MB/s per agent (0 = none)",
           RPL_VERSION, a.listen, storage, a.backend->name,
           a.rpo_ms / 1000.0, a.settings.upload_limit_mbps, a.settings.agent_limit_mbps);
  sd_notify_ready("appliance running");

  while (!atomic_load(&stopping)) {
    struct pollfd p = {.fd = a.listen_fd, .events = POLLIN};
    if (poll(&p, 1, POLL_MS) <= 0)
      continue;
    int fd = accept4(a.listen_fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0)
      continue;
    struct session_arg *sa = malloc(sizeof *sa);
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_mutex_lock(&a.lock);
    a.sessions++;
    pthread_mutex_unlock(&a.lock);
    if (!sa || (sa->a = &a, sa->fd = fd, pthread_create(&t, &attr, session_main, sa)) != 0) {
      free(sa);
      close(fd);
      pthread_mutex_lock(&a.lock);
      a.sessions--;
      pthread_mutex_unlock(&a.lock);
    }
    pthread_attr_destroy(&attr);
  }
  sd_notify_stopping();
  log_info("stopping: waiting for sessions to end");
  close(a.listen_fd);
  pthread_mutex_lock(&a.lock);
  while (a.sessions)
    pthread_cond_wait(&a.applied, &a.lock);
  pthread_cond_broadcast(&a.work);
  pthread_mutex_unlock(&a.lock);
  pthread_join(applier, NULL);
  web_stop(web);
  control_server_stop(ctl);
  for (struct disk *d = a.disks, *next; d; d = next) {
    next = d->next;
    if (d->store)
      d->store->ops->close(d->store);
    journal_close(d->journal);
    free(d);
  }
  catalog_close(a.cat);
  upload_gate_free(a.gate);
  for (size_t i = 0; i < a.nagent_limits; i++)
    rate_limit_destroy(&a.agent_limits[i].rl);
  free(a.agent_limits);
  rate_limit_destroy(&a.limit_all);
  SSL_CTX_free(a.ctx);
  OPENSSL_cleanse(a.ca_key, strlen(a.ca_key));
  free(a.ca_cert);
  free(a.ca_key);
  return 0;
}
