/* metrics.c - the Prometheus text exposition of the appliance (version 0.0.4 of the format), written
 * from the same in-memory state as `status --json`, and the few counters only it needs. */
#include "metrics.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "appliance.h"
#include "health.h"
#include "rpl_clock.h"
#include "rpl_version.h"

/* Upper bounds, milliseconds. */
static const uint64_t cycle_le_ms[METRICS_CYCLE_BUCKETS] = {100, 500, 1000, 2500, 5000, 10000, 30000, 60000,
                                                            120000, 300000, 900000};
static const uint64_t freeze_le_ms[METRICS_FREEZE_BUCKETS] = {10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000};
static const char *const resync_names[METRICS_RESYNC_REASONS] = {"initial_sync", "takeover", "requested"};
static const char *const storage_classes[] = {[STORE_FAILURE_RESYNC] = "data", [STORE_FAILURE_STORAGE] = "unavailable",
                                              [STORE_FAILURE_OWNERSHIP] = "lease"};

static void observe(uint64_t *bucket, const uint64_t *le, size_t n, uint64_t ms)
{
  size_t i = 0;
  while (i < n && ms > le[i])
    i++;
  bucket[i]++;
}

void metrics_cycle_committed(struct disk_metrics *m, uint8_t kind, uint64_t raw_bytes, uint64_t payload_bytes,
                             uint64_t ms)
{
  m->cycles++;
  m->read_bytes += raw_bytes;
  m->sent_bytes += payload_bytes;
  if (kind != PROTO_CYCLE_RESYNC)
    m->changed_bytes += raw_bytes;
  observe(m->cycle_bucket, cycle_le_ms, METRICS_CYCLE_BUCKETS, ms);
  m->cycle_ms_sum += ms;
}

void metrics_freeze(struct disk_metrics *m, uint32_t ms)
{
  observe(m->freeze_bucket, freeze_le_ms, METRICS_FREEZE_BUCKETS, ms);
  m->freeze_ms_sum += ms;
  m->freezes++;
}

/* ---- agents' protocol versions ------------------------------------------------------------ */

static pthread_mutex_t agents_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
  uint8_t id[PROTO_ID_SIZE];
  unsigned version;
} agents[METRICS_MAX_AGENTS];
static size_t nagents;

void metrics_agent_hello(const uint8_t agent[PROTO_ID_SIZE], unsigned protocol_version)
{
  pthread_mutex_lock(&agents_lock);
  size_t i = 0;
  while (i < nagents && memcmp(agents[i].id, agent, PROTO_ID_SIZE))
    i++;
  if (i == nagents && nagents < METRICS_MAX_AGENTS)
    memcpy(agents[nagents++].id, agent, PROTO_ID_SIZE);
  if (i < nagents)
    agents[i].version = protocol_version;
  pthread_mutex_unlock(&agents_lock);
}

static unsigned agent_version(const uint8_t agent[PROTO_ID_SIZE])
{
  unsigned v = 0;
  pthread_mutex_lock(&agents_lock);
  for (size_t i = 0; i < nagents; i++)
    if (!memcmp(agents[i].id, agent, PROTO_ID_SIZE))
      v = agents[i].version;
  pthread_mutex_unlock(&agents_lock);
  return v;
}

/* ---- the exposition ----------------------------------------------------------------------- */

/* One disk's figures, copied under L so that the text is written without it. */
struct disk_snap {
  char id[37], agent[37];
  enum catalog_disk_state state;
  bool attached, transfers;
  uint64_t size, committed, applied, uploaded;
  int64_t last_commit_time;
  uint64_t lag;
  struct journal_usage u;
  struct disk_metrics m;
  int64_t last_point_ms[SCHEDULE_KINDS];
  uint64_t missed[SCHEDULE_KINDS];
  enum health_level health;
};

struct agent_snap {
  char id[37];
  int64_t last_heartbeat;
  bool revoked;
  unsigned version;
  enum health_level health;
};

struct agents_list {
  struct agent_snap *v;
  size_t n, total;
  struct thresholds t;
};

static int agent_cb(const struct catalog_agent *ag, void *arg)
{
  struct agents_list *l = arg;
  l->total++;
  if (l->n == METRICS_MAX_AGENTS)
    return 0;
  struct agent_snap *s = &l->v[l->n++];
  id_text(ag->id, s->id);
  s->last_heartbeat = ag->last_heartbeat;
  s->revoked = ag->revoked;
  s->version = agent_version(ag->id);
  struct health h;
  health_agent(&l->t, ag, &h);
  s->health = h.level;
  return 0;
}

static void family(FILE *f, const char *name, const char *type, const char *help)
{
  fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A histogram of one disk: cumulative buckets, the sum in seconds, the count. */
static void histogram(FILE *f, const char *name, const char *disk, const uint64_t *bucket, const uint64_t *le, size_t n,
                      uint64_t sum_ms)
{
  uint64_t cum = 0;
  for (size_t i = 0; i < n; i++) {
    cum += bucket[i];
    fprintf(f, "%s_bucket{disk_id=\"%s\",le=\"%g\"} %" PRIu64 "\n", name, disk, (double)le[i] / 1000, cum);
  }
  cum += bucket[n];
  fprintf(f, "%s_bucket{disk_id=\"%s\",le=\"+Inf\"} %" PRIu64 "\n", name, disk, cum);
  fprintf(f, "%s_sum{disk_id=\"%s\"} %.3f\n", name, disk, (double)sum_ms / 1000);
  fprintf(f, "%s_count{disk_id=\"%s\"} %" PRIu64 "\n", name, disk, cum);
}

/* A family of one value per disk. */
#define PER_DISK(name, type, help, fmt, expr)                                   \
  do {                                                                          \
    family(f, name, type, help);                                                \
    for (size_t i = 0; i < nd; i++) {                                           \
      const struct disk_snap *s = &ds[i];                                       \
      fprintf(f, name "{disk_id=\"%s\"} " fmt "\n", s->id, (expr));             \
    }                                                                           \
  } while (0)

static void write_disks(FILE *f, const struct disk_snap *ds, size_t nd, int64_t now_ms)
{
  family(f, "rpl_disk_info", "gauge", "A disk this appliance serves: 1, with its agent's id.");
  for (size_t i = 0; i < nd; i++)
    fprintf(f, "rpl_disk_info{disk_id=\"%s\",agent_id=\"%s\"} 1\n", ds[i].id, ds[i].agent);
  family(f, "rpl_disk_state", "gauge", "The disk's state: 1 for the one it is in, 0 for the others.");
  for (size_t i = 0; i < nd; i++)
    for (int st = CATALOG_DISK_INITIAL_SYNC; st <= CATALOG_DISK_ERROR; st++)
      fprintf(f, "rpl_disk_state{disk_id=\"%s\",state=\"%s\"} %d\n", ds[i].id,
              catalog_disk_state_name((enum catalog_disk_state)st), ds[i].state == (enum catalog_disk_state)st);
  PER_DISK("rpl_disk_health", "gauge", "The disk's health: 0 healthy, 1 warning, 2 critical (status says why).", "%d",
           (int)s->health);
  PER_DISK("rpl_disk_connected", "gauge", "1 while a session of its agent serves the disk.", "%d", s->attached ? 1 : 0);
  PER_DISK("rpl_disk_size_bytes", "gauge", "The disk's size.", "%" PRIu64, s->size);
  PER_DISK("rpl_disk_rpo_lag_seconds", "gauge", "Seconds since the disk's last committed cycle (0 before the first).",
           "%" PRIu64, s->lag);
  PER_DISK("rpl_disk_last_commit_timestamp_seconds", "gauge", "Unix time of the last committed cycle (0: none yet).",
           "%" PRId64, s->last_commit_time);
  PER_DISK("rpl_disk_committed_cycle", "gauge", "The last committed cycle number.", "%" PRIu64, s->committed);
  PER_DISK("rpl_disk_applied_cycle", "gauge", "The last cycle applied to the replica.", "%" PRIu64, s->applied);
  PER_DISK("rpl_disk_backlog_bytes", "gauge", "Bytes of committed cycles in the cache not yet applied to the replica.",
           "%" PRIu64, s->u.pending_bytes);
  PER_DISK("rpl_disk_backlog_cycles", "gauge", "Committed cycles in the cache not yet applied to the replica.",
           "%" PRIu64, s->u.cycles_pending);
  PER_DISK("rpl_disk_cache_bytes", "gauge", "Bytes the disk's cache (journal) uses.", "%" PRIu64, s->u.bytes);
  PER_DISK("rpl_disk_cache_limit_bytes", "gauge", "The disk's cache limit.", "%" PRIu64, s->u.limit_bytes);
  family(f, "rpl_disk_last_point_age_seconds", "gauge",
         "Seconds since the last recovery point satisfying the schedule of this kind (absent: none yet).");
  for (size_t i = 0; i < nd; i++)
    for (int k = 0; k < SCHEDULE_KINDS; k++)
      if (ds[i].last_point_ms[k] > 0)
        fprintf(f, "rpl_disk_last_point_age_seconds{disk_id=\"%s\",kind=\"%s\"} %.3f\n", ds[i].id,
                schedule_kind_name((enum schedule_kind)k),
                (double)(now_ms > ds[i].last_point_ms[k] ? now_ms - ds[i].last_point_ms[k] : 0) / 1000);
  family(f, "rpl_disk_points_missed_total", "counter", "Scheduled recovery points not made when due, by kind.");
  for (size_t i = 0; i < nd; i++)
    for (int k = 0; k < SCHEDULE_KINDS; k++)
      fprintf(f, "rpl_disk_points_missed_total{disk_id=\"%s\",kind=\"%s\"} %" PRIu64 "\n", ds[i].id,
              schedule_kind_name((enum schedule_kind)k), ds[i].missed[k]);
  PER_DISK("rpl_disk_cycles_total", "counter", "Cycles committed since the appliance started.", "%" PRIu64,
           s->m.cycles);
  PER_DISK("rpl_disk_changed_bytes_total", "counter",
           "Changed bytes the agent sent in plain and point cycles (raw, before compression): the churn is its rate.",
           "%" PRIu64, s->m.changed_bytes);
  PER_DISK("rpl_disk_read_bytes_total", "counter",
           "Bytes the agent read from the disk and sent in committed cycles, resyncs included (raw).", "%" PRIu64,
           s->m.read_bytes);
  PER_DISK("rpl_disk_sent_bytes_total", "counter", "Bytes of committed cycles on the wire (compressed).", "%" PRIu64,
           s->m.sent_bytes);
  family(f, "rpl_disk_uploaded_bytes_total", "counter",
         "Bytes sent to the storage since its replica was opened (network backends only).");
  for (size_t i = 0; i < nd; i++)
    if (ds[i].transfers)
      fprintf(f, "rpl_disk_uploaded_bytes_total{disk_id=\"%s\"} %" PRIu64 "\n", ds[i].id, ds[i].uploaded);
  family(f, "rpl_disk_cycle_duration_seconds", "histogram", "From a cycle's start to its commit.");
  for (size_t i = 0; i < nd; i++)
    histogram(f, "rpl_disk_cycle_duration_seconds", ds[i].id, ds[i].m.cycle_bucket, cycle_le_ms,
              METRICS_CYCLE_BUCKETS, ds[i].m.cycle_ms_sum);
  family(f, "rpl_disk_freeze_duration_seconds", "histogram",
         "How long the filesystems stayed frozen for a recovery point (points with a freeze only).");
  for (size_t i = 0; i < nd; i++)
    histogram(f, "rpl_disk_freeze_duration_seconds", ds[i].id, ds[i].m.freeze_bucket, freeze_le_ms,
              METRICS_FREEZE_BUCKETS, ds[i].m.freeze_ms_sum);
  family(f, "rpl_disk_resyncs_total", "counter", "Resync cycles the appliance started, by reason.");
  for (size_t i = 0; i < nd; i++)
    for (int r = 0; r < METRICS_RESYNC_REASONS; r++)
      fprintf(f, "rpl_disk_resyncs_total{disk_id=\"%s\",reason=\"%s\"} %" PRIu64 "\n", ds[i].id, resync_names[r],
              ds[i].m.resyncs[r]);
}

static void write_agents(FILE *f, const struct agents_list *l, time_t now)
{
  family(f, "rpl_agent_info", "gauge", "A registered agent: 1, with the protocol version of its last session (0: none since start).");
  for (size_t i = 0; i < l->n; i++)
    fprintf(f, "rpl_agent_info{agent_id=\"%s\",protocol_version=\"%u\"} 1\n", l->v[i].id, l->v[i].version);
  family(f, "rpl_agent_revoked", "gauge", "1 when the agent's registration was revoked.");
  for (size_t i = 0; i < l->n; i++)
    fprintf(f, "rpl_agent_revoked{agent_id=\"%s\"} %d\n", l->v[i].id, l->v[i].revoked ? 1 : 0);
  family(f, "rpl_agent_heartbeat_age_seconds", "gauge",
         "Seconds since the agent was last heard from, as recorded every 30 s (absent: never).");
  for (size_t i = 0; i < l->n; i++)
    if (l->v[i].last_heartbeat)
      fprintf(f, "rpl_agent_heartbeat_age_seconds{agent_id=\"%s\"} %" PRId64 "\n", l->v[i].id,
              now > l->v[i].last_heartbeat ? (int64_t)now - l->v[i].last_heartbeat : 0);
  family(f, "rpl_agent_health", "gauge", "The agent's health: 0 healthy, 1 warning, 2 critical.");
  for (size_t i = 0; i < l->n; i++)
    fprintf(f, "rpl_agent_health{agent_id=\"%s\"} %d\n", l->v[i].id, (int)l->v[i].health);
}

static void gauge(FILE *f, const char *name, const char *type, const char *help, uint64_t v)
{
  family(f, name, type, help);
  fprintf(f, "%s %" PRIu64 "\n", name, v);
}

void metrics_write(void *appliance, FILE *f)
{
  struct appliance *a = appliance;
  time_t now = time(NULL);
  int64_t now_ms = (int64_t)rpl_unix_ms();
  struct health ah;
  health_appliance(a, &ah);
  struct upload_gate_info g;
  upload_gate_get_info(a->gate, &g);

  pthread_mutex_lock(&a->lock);
  size_t nd = 0, cap = a->ndisks < MAX_DISKS ? a->ndisks : MAX_DISKS;
  struct disk_snap *ds = calloc(cap ? cap : 1, sizeof *ds);
  uint64_t cache = 0, cache_limit = 0;
  for (struct disk *d = a->disks; d && ds && nd < cap; d = d->next) {
    struct disk_snap *s = &ds[nd++];
    id_text(d->id, s->id);
    id_text(d->agent, s->agent);
    s->state = d->state;
    s->attached = d->attached;
    s->size = d->size;
    s->committed = d->last_committed;
    s->applied = d->last_applied;
    s->last_commit_time = d->last_commit_time;
    s->lag = d->last_commit_time && now > d->last_commit_time ? (uint64_t)(now - d->last_commit_time) : 0;
    journal_get_usage(d->journal, &s->u);
    cache += s->u.bytes;
    cache_limit += s->u.limit_bytes;
    s->m = d->m;
    for (int k = 0; k < SCHEDULE_KINDS; k++) {
      s->last_point_ms[k] = d->sched[k].last_ms;
      s->missed[k] = d->sched[k].missed;
    }
    if (d->store) {
      struct store_stats st;
      d->store->ops->get_stats(d->store, &st);
      s->transfers = st.transfers;
      s->uploaded = st.bytes_written;
    }
    struct health h;
    health_disk(a, d, &h);
    s->health = h.level;
  }
  unsigned sessions = a->sessions;
  uint64_t refused = a->refused_connections, free_bytes = a->state_free_bytes, points = a->points_recorded;
  bool held_for_space = a->state_free_checked_ms && a->state_free_bytes < STATE_FREE_MIN;
  struct appliance_metrics am = a->m;
  struct apply_pool_state pool = a->pool;
  pthread_mutex_unlock(&a->lock);

  struct agents_list al = {.v = calloc(METRICS_MAX_AGENTS, sizeof *al.v), .t = appliance_thresholds(a)};
  if (al.v) {
    rpl_err e = catalog_agent_foreach(a->cat, agent_cb, &al);
    (void)e;
  }

  family(f, "rpl_appliance_info", "gauge", "The appliance's software version: 1.");
  fprintf(f, "rpl_appliance_info{version=\"%s\"} 1\n", RPL_VERSION);
  gauge(f, "rpl_appliance_health", "gauge", "The appliance's overall health: 0 healthy, 1 warning, 2 critical.",
        (uint64_t)ah.level);
  gauge(f, "rpl_appliance_rpo_target_seconds", "gauge", "The RPO target cycles are started at.", a->rpo_ms / 1000);
  gauge(f, "rpl_appliance_disks", "gauge", "Disks this appliance serves.", nd);
  gauge(f, "rpl_appliance_agents", "gauge", "Registered agents, revoked ones included.", al.total);
  gauge(f, "rpl_appliance_sessions", "gauge", "Agent connections being served.", sessions);
  gauge(f, "rpl_appliance_sessions_limit", "gauge", "Connections served at once; past it new ones are closed.",
        MAX_CONNECTIONS);
  gauge(f, "rpl_appliance_refused_connections_total", "counter", "Connections closed at once by the connection limits.",
        refused);
  gauge(f, "rpl_appliance_cache_bytes", "gauge", "Bytes all disks' caches use.", cache);
  gauge(f, "rpl_appliance_cache_limit_bytes", "gauge", "The sum of the disks' cache limits.", cache_limit);
  gauge(f, "rpl_appliance_state_free_bytes", "gauge", "Free bytes on the state directory's file system (last look).",
        free_bytes);
  gauge(f, "rpl_appliance_cycles_held_for_space", "gauge", "1 while no cycle starts for lack of space on the state directory.",
        held_for_space);
  gauge(f, "rpl_appliance_points_recorded_total", "counter", "Recovery points recorded since start.", points);
  family(f, "rpl_appliance_upload_state", "gauge",
         "Uploads to the storage: 1 for the state they are in (running, held after a failure, checking before the first run).");
  const char *ustate = g.open ? "running" : g.checked ? "held" : "checking";
  static const char *const ustates[] = {"running", "held", "checking"};
  for (int i = 0; i < 3; i++)
    fprintf(f, "rpl_appliance_upload_state{state=\"%s\"} %d\n", ustates[i], !strcmp(ustate, ustates[i]));
  gauge(f, "rpl_appliance_storage_check_runs_total", "counter", "Runs of the storage checks.", g.runs);
  gauge(f, "rpl_appliance_storage_check_failures_total", "counter", "Runs of the storage checks that failed.", g.failures);
  family(f, "rpl_appliance_storage_errors_total", "counter",
         "Storage operations that failed, by class: unavailable (away or throttled), data (the cached data or the "
         "replica is bad: a resync), lease (another appliance holds the replica).");
  for (size_t i = 0; i < sizeof storage_classes / sizeof *storage_classes; i++)
    fprintf(f, "rpl_appliance_storage_errors_total{class=\"%s\"} %" PRIu64 "\n", storage_classes[i],
            am.storage_errors[i]);
  gauge(f, "rpl_appliance_group_point_failures_total", "counter",
        "Consistency-group point attempts that made no point (a member late, failing or gone).", am.group_points_failed);
  gauge(f, "rpl_apply_workers", "gauge", "Apply workers: disks whose cycles are applied at once.", pool.nworkers);
  gauge(f, "rpl_apply_workers_busy", "gauge", "Apply workers holding a disk now.", pool.busy);
  gauge(f, "rpl_apply_queue_disks", "gauge",
        "Disks with a committed cycle to apply that no worker holds (waiting for a free worker).", pool.queue_disks);
  family(f, "rpl_apply_seconds_total", "counter", "Time the apply workers spent applying cycles, all workers together.");
  fprintf(f, "rpl_apply_seconds_total %" PRIu64 ".%03" PRIu64 "\n", pool.apply_ms_total / 1000, pool.apply_ms_total % 1000);
  write_agents(f, &al, now);
  if (ds)
    write_disks(f, ds, nd, now_ms);
  free(al.v);
  free(ds);
}
