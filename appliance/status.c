/* status.c - the appliance's status document (text and JSON), its control socket commands, and
 * the configuration manager's view of the daemon (web.h's web_ops). */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <uuid/uuid.h>

#include "agent_readiness.h"
#include "alerts.h"
#include "appliance.h"
#include "commands.h"
#include "events.h"
#include "group_point.h"
#include "health.h"
#include "json_out.h"
#include "points_doc.h"
#include "rpl_log.h"
#include "rpl_version.h"

struct status_ctx {
  struct appliance *a;
  struct json_out *j;
  FILE *f;
  struct thresholds t; /* for the agents' health, read without L */
};

static int status_agent_cb(const struct catalog_agent *ag, void *arg)
{
  struct status_ctx *sc = arg;
  char id[37];
  id_text(ag->id, id);
  long ago = ag->last_heartbeat ? (long)(time(NULL) - ag->last_heartbeat) : -1;
  struct health h;
  health_agent(&sc->t, ag, &h);
  if (sc->j) {
    json_object_begin(sc->j, NULL);
    json_string(sc->j, "agent_id", id);
    json_string(sc->j, "hostname", ag->hostname);
    json_bool(sc->j, "revoked", ag->revoked);
    json_u64(sc->j, "registered_unix", (uint64_t)ag->registered_time);
    json_u64(sc->j, "last_heartbeat_unix", (uint64_t)ag->last_heartbeat);
    agent_readiness_json(sc->j, ag->id);
    health_json(sc->j, "health", &h);
    json_object_end(sc->j);
  } else {
    fprintf(sc->f, "[%s] agent %s (%s)%s, last heartbeat %s", health_name(h.level), id, ag->hostname, ag->revoked ? " REVOKED" : "",
            ago < 0 ? "never" : "");
    if (ago >= 0)
      fprintf(sc->f, "%lds ago", ago);
    fputc('\n', sc->f);
    health_text(sc->f, "  ", &h);
    agent_readiness_text(sc->f, ag->id);
  }
  return 0;
}

/* The disk's point schedule: per kind its period, when the next is due, the last point that
 * satisfied it and the points missed; why the last attempt failed. L held. */
static void status_schedule(struct appliance *a, const struct disk *d, struct json_out *j, FILE *f)
{
  char text[SCHEDULE_TEXT_MAX];
  schedule_format(&a->schedule, text, sizeof text);
  if (j) {
    json_object_begin(j, "points");
    json_string(j, "schedule", text);
    for (int k = 0; k < SCHEDULE_KINDS; k++) {
      char rp[40];
      snprintf(rp, sizeof rp, "rp-%" PRId64, d->sched[k].last_id);
      json_object_begin(j, schedule_kind_name((enum schedule_kind)k));
      json_u64(j, "every_seconds", (uint64_t)a->schedule.every_s[k]);
      json_u64(j, "next_due_unix_ms", (uint64_t)d->sched[k].due_ms);
      json_string(j, "last_point", d->sched[k].last_id ? rp : NULL);
      json_u64(j, "last_point_unix_ms", (uint64_t)d->sched[k].last_ms);
      json_u64(j, "missed", d->sched[k].missed);
      json_object_end(j);
    }
    json_string(j, "last_failure", d->sched_failure[0] ? d->sched_failure : NULL);
    json_object_end(j);
    return;
  }
  int64_t now = (int64_t)rpl_unix_ms();
  fprintf(f, "\n  points %s", text);
  for (int k = 0; k < SCHEDULE_KINDS; k++) {
    if (!d->sched[k].due_ms)
      continue;
    int64_t in = (d->sched[k].due_ms - now) / 1000;
    fprintf(f, ", next %s %s%" PRId64 "s", schedule_kind_name((enum schedule_kind)k), in > 0 ? "in " : "due ",
            in > 0 ? in : -in);
    if (in <= 0)
      fprintf(f, " ago");
    if (d->sched[k].missed)
      fprintf(f, " (%" PRIu64 " missed)", d->sched[k].missed);
  }
  if (d->sched_failure[0])
    fprintf(f, "; last attempt failed: %s", d->sched_failure);
}

/* A disk the catalog knows that this daemon does not serve (it could not be opened). L held. */
static int unserved_cb(const struct catalog_disk *cd, void *arg)
{
  struct status_ctx *u = arg;
  if (find_disk(u->a, cd->id))
    return 0;
  char id[37], agent[37];
  id_text(cd->id, id);
  id_text(cd->agent_id, agent);
  const char *reason = cd->state_reason[0] ? cd->state_reason : "not loaded";
  if (u->j) {
    json_object_begin(u->j, NULL);
    json_string(u->j, "disk_id", id);
    json_string(u->j, "agent_id", agent);
    json_string(u->j, "name", cd->name);
    json_u64(u->j, "size", cd->size_bytes);
    json_string(u->j, "state", catalog_disk_state_name(cd->state));
    json_string(u->j, "reason", reason);
    json_bool(u->j, "connected", false);
    json_bool(u->j, "served", false);
    json_object_begin(u->j, "health");
    json_string(u->j, "state", health_name(HEALTH_CRITICAL));
    json_array_begin(u->j, "reasons");
    json_object_begin(u->j, NULL);
    json_string(u->j, "level", health_name(HEALTH_CRITICAL));
    json_string(u->j, "code", "disk_not_served");
    json_string(u->j, "what", reason);
    json_string(u->j, "todo", "fix the cause and restart the appliance");
    json_object_end(u->j);
    json_array_end(u->j);
    json_object_end(u->j);
    json_object_end(u->j);
  } else {
    fprintf(u->f, "[critical] disk %s (%s, agent %s): %s: %s; not served: fix the cause and restart the appliance\n", id,
            cd->name, agent, catalog_disk_state_name(cd->state), reason);
  }
  return 0;
}

/* What the cache's refusals of d's cycles mean now: the action ("wait", "resync", or NULL when its
 * cycles go through), and in note what happens and what to do. L held. */
static const char *cache_action(const struct disk *d, uint64_t *wait_s, char *note, size_t notesz)
{
  uint64_t now = rpl_mono_ms();
  *wait_s = d->cache_wait_until_ms > now ? (d->cache_wait_until_ms - now + 999) / 1000 : 0;
  if (d->cache_bypass) {
    snprintf(note, notesz, "its changes do not fit in the cache: the next cycle is a resync written straight into "
                           "the storage%s; raise the cache size if this recurs",
             !d->store || d->upload_waiting ? " once the storage is reachable"
             : d->last_applied != d->last_committed ? " once the cycles before it are applied" : "");
    return "resync";
  }
  if (d->cache_waits) {
    snprintf(note, notesz, "the cache is full for now (uploads behind, the storage away, or no space): the agent "
                           "keeps its changes; next try in %" PRIu64 " s", *wait_s);
    return "wait";
  }
  note[0] = '\0';
  return NULL;
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
    const char *state = d->unprotected_time ? "unprotected" : catalog_disk_state_name(d->state);
    struct health h;
    health_disk(a, d, &h);
    char cache_note[256];
    uint64_t cache_wait_s;
    const char *cache = cache_action(d, &cache_wait_s, cache_note, sizeof cache_note);
    if (j) {
      json_object_begin(j, NULL);
      json_string(j, "disk_id", id);
      json_string(j, "agent_id", agent);
      json_string(j, "name", d->name);
      json_u64(j, "size", d->size);
      json_string(j, "state", state);
      json_string(j, "reason", d->reason[0] ? d->reason : NULL);
      json_bool(j, "connected", d->attached);
      json_bool(j, "served", true);
      json_u64(j, "last_committed_cycle", d->last_committed);
      json_u64(j, "last_applied_cycle", d->last_applied);
      json_u64(j, "rpo_lag_seconds", lag < 0 ? 0 : (uint64_t)lag);
      json_u64(j, "backlog_cycles", u.cycles_pending);
      json_u64(j, "backlog_bytes", u.pending_bytes);
      json_u64(j, "cache_bytes", u.bytes);
      json_u64(j, "cache_limit_bytes", u.limit_bytes);
      json_u64(j, "cache_refusals", d->cache_refusals);
      json_string(j, "cache_action", cache);
      json_u64(j, "cache_wait_seconds", cache_wait_s);
      json_string(j, "cache_note", cache ? cache_note : NULL);
      json_string(j, "last_point", has_point ? point_id : NULL);
      json_string(j, "last_point_kind", has_point ? catalog_point_kind_name(p.kind) : NULL);
      status_schedule(a, d, j, f);
      health_json(j, "health", &h);
      resync_index_status(d, j, f);
      json_object_end(j);
    } else {
      fprintf(f, "[%s] disk %s (%s, agent %s): %s%s%s, %" PRIu64 " MiB, cycle %" PRIu64 " committed / %" PRIu64
                 " applied, backlog %" PRIu64 " cycle(s) %" PRIu64 " KiB, cache %" PRIu64 " MiB",
              health_name(h.level), id, d->name, agent, state, d->reason[0] ? ": " : "", d->reason, d->size >> 20, d->last_committed,
              d->last_applied, u.cycles_pending, u.pending_bytes >> 10, u.bytes >> 20);
      if (cache)
        fprintf(f, ", cache: %s", cache_note);
      if (lag >= 0)
        fprintf(f, ", RPO lag %lds", lag);
      if (has_point)
        fprintf(f, ", last point %s (%s)", point_id, catalog_point_kind_name(p.kind));
      status_schedule(a, d, NULL, f);
      resync_index_status(d, NULL, f);
      fputc('\n', f);
      health_text(f, "  ", &h);
    }
  }
  struct status_ctx u = {.a = a, .j = j, .f = f};
  rpl_err e = catalog_disk_foreach(a->cat, NULL, unserved_cb, &u);
  (void)e;
  pthread_mutex_unlock(&a->lock);
}

/* The apply workers: how many, how many busy, and the disk each holds. L held. */
static void appliers_status(struct appliance *a, struct json_out *j, FILE *f)
{
  uint64_t now = rpl_mono_ms();
  const struct apply_pool_state *p = &a->pool;
  if (j) {
    json_object_begin(j, "appliers");
    json_u64(j, "workers", p->nworkers);
    json_u64(j, "busy", p->busy);
    json_u64(j, "busy_max", p->busy_max);
    json_u64(j, "queue_disks", p->queue_disks);
    json_u64(j, "apply_ms_total", p->apply_ms_total);
    json_array_begin(j, "holding");
    for (unsigned w = 0; w < p->nworkers; w++) {
      char id[37];
      if (p->workers[w].disk)
        id_text(p->workers[w].disk->id, id);
      json_object_begin(j, NULL);
      json_u64(j, "worker", w);
      json_string(j, "disk_id", p->workers[w].disk ? id : NULL);
      json_u64(j, "busy_ms", p->workers[w].disk ? now - p->workers[w].since_ms : 0);
      json_u64(j, "turns", p->workers[w].turns);
      json_object_end(j);
    }
    json_array_end(j);
    json_object_end(j);
    return;
  }
  fprintf(f, "apply workers: %u, %u busy (at most %u at once so far), %u disk(s) waiting for one\n", p->nworkers, p->busy,
          p->busy_max, p->queue_disks);
}

/* The `status` document (text, or JSON for --json and the configuration manager's /api/status). */
static void status_write(struct appliance *a, bool json, FILE *f)
{
  struct json_out j;
  struct status_ctx sc = {.a = a, .f = f, .t = appliance_thresholds(a)};
  char storage[sizeof a->settings.storage];
  a->backend->describe(&a->settings, storage, sizeof storage);
  char sched[SCHEDULE_TEXT_MAX];
  web_schedule_get(a, sched, sizeof sched);
  struct health h;
  health_appliance(a, &h);
  if (json) {
    json_init(&j, f);
    sc.j = &j;
    json_object_begin(&j, NULL);
    json_string(&j, "version", RPL_VERSION);
    json_string(&j, "listen", a->listen);
    json_string(&j, "storage", storage);
    json_u64(&j, "rpo_target_seconds", a->rpo_ms / 1000);
    json_string(&j, "points_schedule", sched);
    health_json(&j, "health", &h);
    pthread_mutex_lock(&a->lock);
    json_u64(&j, "state_free_bytes", a->state_free_bytes);
    json_bool(&j, "cycles_held_for_space", a->state_free_checked_ms && a->state_free_bytes < STATE_FREE_MIN);
    json_object_begin(&j, "connections");
    json_u64(&j, "open", a->sessions);
    json_u64(&j, "refused", a->refused_connections);
    json_u64(&j, "limit", MAX_CONNECTIONS);
    json_u64(&j, "unauthenticated_per_address_limit", MAX_PREAUTH_PER_ADDRESS);
    json_object_end(&j);
    appliers_status(a, &j, NULL);
    pthread_mutex_unlock(&a->lock);
    json_u64(&j, "upload_limit_mbps", a->settings.upload_limit_mbps);
    json_u64(&j, "agent_limit_mbps", a->settings.agent_limit_mbps);
    upload_gate_status(a->gate, &j, NULL);
    alerts_status(a->alerts, &j, NULL);
    json_array_begin(&j, "agents");
  } else {
    fprintf(f, "replication-appliance %s listening on %s, storage %s, RPO target %us, recovery points %s\n", RPL_VERSION,
            a->listen, storage, a->rpo_ms / 1000, sched);
    fprintf(f, "health: %s\n", health_name(h.level));
    health_text(f, "  ", &h);
    upload_gate_status(a->gate, NULL, f);
    pthread_mutex_lock(&a->lock);
    if (a->state_free_checked_ms && a->state_free_bytes < STATE_FREE_MIN)
      fprintf(f, "cycles held: the state directory's file system has %" PRIu64 " MiB free (at least %llu MiB wanted): "
                 "free space there\n", a->state_free_bytes >> 20, STATE_FREE_MIN >> 20);
    appliers_status(a, NULL, f);
    pthread_mutex_unlock(&a->lock);
    fprintf(f, "upload limits: ");
    if (a->settings.upload_limit_mbps)
      fprintf(f, "%u MB/s in all, ", a->settings.upload_limit_mbps);
    else
      fprintf(f, "none in all, ");
    if (a->settings.agent_limit_mbps)
      fprintf(f, "%u MB/s per agent\n", a->settings.agent_limit_mbps);
    else
      fprintf(f, "none per agent\n");
    alerts_status(a->alerts, NULL, f);
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
    json_array_begin(&j, "groups"); /* consistency groups across servers (group_point.h) */
  }
  gp_write(a, json ? &j : NULL, f);
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

void web_status_json(void *ctx, FILE *f) { status_write(ctx, true, f); }

void web_sample(void *ctx, web_sample_fn fn, void *arg)
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

void web_schedule_get(void *ctx, char *text, size_t size)
{
  struct appliance *a = ctx;
  pthread_mutex_lock(&a->lock);
  schedule_format(&a->schedule, text, size);
  pthread_mutex_unlock(&a->lock);
}

void web_alerts_json(void *ctx, FILE *f)
{
  struct json_out j;
  json_init(&j, f);
  json_object_begin(&j, NULL);
  alerts_status(((struct appliance *)ctx)->alerts, &j, NULL);
  json_object_end(&j);
  json_finish(&j);
}

void web_thresholds_set(void *ctx, const struct thresholds *t)
{
  struct appliance *a = ctx;
  pthread_mutex_lock(&a->lock);
  a->thresholds = *t;
  pthread_mutex_unlock(&a->lock);
}

rpl_err web_alerts_test(void *ctx, unsigned *queued) { return alerts_send_test(((struct appliance *)ctx)->alerts, queued); }

void web_schedule_set(void *ctx, const struct point_schedule *s)
{
  struct appliance *a = ctx;
  int64_t now = (int64_t)rpl_unix_ms();
  pthread_mutex_lock(&a->lock);
  uint32_t scale = a->schedule.time_scale; /* the test time scale stays */
  a->schedule = *s;
  a->schedule.time_scale = scale;
  for (struct disk *d = a->disks; d; d = d->next)
    schedule_reset_disk(a, d, now);
  pthread_mutex_unlock(&a->lock);
}

rpl_err web_disk_request(void *ctx, const uint8_t id[PROTO_ID_SIZE], enum web_disk_action act)
{
  struct appliance *a = ctx;
  rpl_err err = RPL_OK;
  pthread_mutex_lock(&a->lock);
  struct disk *d = find_disk(a, id);
  if (!d) {
    err = RPL_E_NOT_FOUND;
  } else if (d->unprotected_time) {
    err = rpl_fail(RPL_E_INVALID_ARGUMENT,
                   "the disk is unprotected: protect its device again (a new disk) to replicate it");
  } else if (!d->attached) {
    err = rpl_fail(RPL_E_NO_DAEMON, "the disk's agent is not connected: start 'mobility-agent run' on it, then ask again");
  } else if (act == WEB_DISK_CHECKPOINT && d->last_committed == 0) {
    err = rpl_fail(RPL_E_INVALID_ARGUMENT, "the disk has not finished its initial sync: a recovery point needs it first");
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

rpl_err web_disk_unprotect(void *ctx, const uint8_t id[PROTO_ID_SIZE], bool delete_replica)
{
  struct appliance *a = ctx;
  rpl_err err = RPL_OK;
  char name[sizeof a->disks->name] = "";
  pthread_mutex_lock(&a->lock);
  struct disk *d = find_disk(a, id);
  if (!d) {
    err = RPL_E_NOT_FOUND;
  } else if (d->unprotected_time) {
    err = rpl_fail(RPL_E_EXISTS, "the disk is unprotected already%s",
                   d->delete_due ? " and its replica is being deleted" : "");
  } else if (d->want_unprotect) { /* its request may be on its way to the agent: it is not changed under it */
    err = rpl_fail(RPL_E_EXISTS, "unprotect was asked already (%s the replica): it completes after the agent's cycle "
                   "under way", d->unprotect_flags & PROTO_UNPROTECT_DELETE_REPLICA ? "deleting" : "keeping");
  } else if (!d->attached) {
    err = rpl_fail(RPL_E_NO_DAEMON, "the disk's agent is not connected: start 'mobility-agent run' on it and ask "
                   "again, or run 'mobility-agent unprotect %s' on its host", d->name);
  } else if (!d->agent_unprotect_request) {
    err = rpl_fail(RPL_E_UNSUPPORTED, "the disk's agent is an older version that cannot be asked to unprotect from "
                   "here: upgrade it, or run 'mobility-agent unprotect %s%s' on its host", d->name,
                   delete_replica ? " --delete-replica" : "");
  } else {
    d->want_unprotect = true;
    d->unprotect_flags = delete_replica ? PROTO_UNPROTECT_DELETE_REPLICA : 0;
    snprintf(name, sizeof name, "%s", d->name);
  }
  pthread_mutex_unlock(&a->lock);
  if (!err)
    log_notice("disk %s: unprotect asked for on the configuration manager (%s)", name,
               delete_replica ? "its replica, recovery points, cache and catalog rows to be deleted"
                              : "its replica and recovery points kept");
  return err;
}

/* events [SINCE [WAIT_MS]]: the events after SINCE as JSON lines, waiting up to WAIT_MS for one. */
static int ctl_events(int argc, char **argv, struct control_reply *out)
{
  char *end;
  unsigned long long since = argc > 1 ? strtoull(argv[1], &end, 10) : 0;
  if (argc > 1 && (*end || !isdigit((unsigned char)argv[1][0]))) {
    control_printf(out, "events: SINCE must be an event number, not '%s'", argv[1]);
    return 2;
  }
  unsigned long wait = argc > 2 ? strtoul(argv[2], &end, 10) : 0;
  if (argc > 2 && (*end || !isdigit((unsigned char)argv[2][0]) || wait > EVENTS_MAX_WAIT_MS)) {
    control_printf(out, "events: the wait is milliseconds from 0 to %u, not '%s'", EVENTS_MAX_WAIT_MS, argv[2]);
    return 2;
  }
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  if (!f)
    return 1;
  events_write_since(since, (unsigned)wait, f);
  fclose(f);
  control_printf(out, "%s", buf);
  free(buf);
  return 0;
}

/* points [DISK_ID] [--json]: the recovery-points document. */
static int ctl_points(struct appliance *a, int argc, char **argv, struct control_reply *out)
{
  bool json = false;
  const char *disk = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--json"))
      json = true;
    else
      disk = argv[i];
  }
  uuid_t id;
  if (disk && uuid_parse(disk, id)) {
    control_printf(out, "points: --disk takes a disk id (a UUID, see 'replication-appliance status'), not '%s'", disk);
    return 2;
  }
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  if (!f)
    return 1;
  struct json_out j;
  if (json)
    json_init(&j, f);
  rpl_err err = points_doc_write(a->cat, a->state_dir, disk ? id : NULL, json ? &j : NULL, f);
  if (json)
    json_finish(&j);
  fclose(f);
  if (err == RPL_E_NOT_FOUND)
    control_printf(out, "points: no disk %s on this appliance (see 'replication-appliance status')", disk);
  else if (err)
    control_printf(out, "points: %s", rpl_strerror(err));
  else
    control_printf(out, "%s", buf);
  free(buf);
  return err == RPL_E_NOT_FOUND ? 2 : err ? 1 : 0;
}

int control_handler(void *ctx, int argc, char **argv, struct control_reply *out)
{
  struct appliance *a = ctx;
  if (!strcmp(argv[0], "points"))
    return ctl_points(a, argc, argv, out);
  if (!strcmp(argv[0], "status"))
    return ctl_status(a, argc > 1 && !strcmp(argv[1], "--json"), out);
  if (!strcmp(argv[0], "events"))
    return ctl_events(argc, argv, out);
  if (!strcmp(argv[0], "group"))
    return gp_control(a, argc, argv, out);
  control_printf(out, "unknown daemon command '%s'", argv[0]);
  return 2;
}

/* Runs one command in the daemon of state and prints its answer; the exit status. */
static int call_daemon(const char *name, const char *state, int n, const char *const *args)
{
  int status;
  char *reply;
  rpl_err err = control_call(state, n, args, &status, &reply);
  if (err == RPL_E_NO_DAEMON) {
    fprintf(stderr, "replication-appliance %s: the appliance is not running (no control socket in %s): start it with 'replication-appliance run --state %s'\n",
            name, state, state);
    return 1;
  }
  if (err) {
    fprintf(stderr, "replication-appliance %s: %s\n", name, rpl_strerror(err));
    return 1;
  }
  fputs(reply, status ? stderr : stdout);
  free(reply);
  return status;
}

int appliance_cmd_status(int argc, char **argv)
{
  const char *state = APPLIANCE_DEFAULT_STATE;
  bool json = false;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--state") && i + 1 < argc)
      state = argv[++i];
    else if (!strcmp(argv[i], "--json"))
      json = true;
    else {
      fprintf(stderr, "replication-appliance status: usage: status --state DIR [--json]\n");
      return 2;
    }
  }
  const char *args[2] = {"status", "--json"};
  return call_daemon("status", state, json ? 2 : 1, args);
}

int appliance_cmd_events(int argc, char **argv)
{
  const char *state = APPLIANCE_DEFAULT_STATE, *since = "0";
  char wait_ms[32] = "0";
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--state") && i + 1 < argc) {
      state = argv[++i];
    } else if (!strcmp(argv[i], "--since") && i + 1 < argc) {
      since = argv[++i];
    } else if (!strcmp(argv[i], "--wait") && i + 1 < argc) {
      char *end;
      double secs = strtod(argv[++i], &end);
      if (*end || !*argv[i] || !(secs >= 0 && secs * 1000 <= EVENTS_MAX_WAIT_MS)) { /* NaN fails too */
        fprintf(stderr, "replication-appliance events: --wait takes seconds from 0 to %u, not '%s'\n",
                EVENTS_MAX_WAIT_MS / 1000, argv[i]);
        return 2;
      }
      snprintf(wait_ms, sizeof wait_ms, "%u", (unsigned)(secs * 1000));
    } else {
      fprintf(stderr, "replication-appliance events: usage: events --state DIR [--since SEQ] [--wait SECONDS]\n");
      return 2;
    }
  }
  const char *args[3] = {"events", since, wait_ms};
  return call_daemon("events", state, 3, args);
}

int appliance_cmd_points(int argc, char **argv)
{
  const char *state = APPLIANCE_DEFAULT_STATE, *disk = NULL;
  bool json = false;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--state") && i + 1 < argc)
      state = argv[++i];
    else if (!strcmp(argv[i], "--disk") && i + 1 < argc)
      disk = argv[++i];
    else if (!strcmp(argv[i], "--json"))
      json = true;
    else {
      fprintf(stderr, "replication-appliance points: usage: points --state DIR [--disk ID] [--json]\n");
      return 2;
    }
  }
  const char *args[3] = {"points"};
  int n = 1;
  if (disk)
    args[n++] = disk;
  if (json)
    args[n++] = "--json";
  return call_daemon("points", state, n, args);
}
