/* health.c - the health roll-up of disks, agents and the appliance from the daemon's in-memory state
 * (the same that status is written from): each reason with what to do about it. */
#include "health.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "agent_readiness.h"
#include "appliance.h"
#include "rpl_clock.h"

const char *health_name(enum health_level l)
{
  return l == HEALTH_CRITICAL ? "critical" : l == HEALTH_WARNING ? "warning" : "healthy";
}

static void add(struct health *h, enum health_level l, const char *code, const char *todo, const char *fmt, ...)
  __attribute__((format(printf, 5, 6)));
static void add(struct health *h, enum health_level l, const char *code, const char *todo, const char *fmt, ...)
{
  if (l > h->level)
    h->level = l;
  if (h->n == HEALTH_MAX_REASONS)
    return;
  struct health_reason *r = &h->r[h->n++];
  r->level = l;
  r->code = code;
  snprintf(r->todo, sizeof r->todo, "%s", todo);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(r->what, sizeof r->what, fmt, ap);
  va_end(ap);
}

/* The agent's heartbeat, as the catalog has it, is older than the limit: how old (s), else -1. */
static long heartbeat_stale(const struct thresholds *t, const struct catalog_agent *ag, time_t now)
{
  if (ag->revoked || !ag->last_heartbeat)
    return -1;
  long age = (long)(now - ag->last_heartbeat);
  return age > t->agent_away_s ? age : -1;
}

void health_disk(struct appliance *a, const struct disk *d, struct health *h)
{
  memset(h, 0, sizeof *h);
  if (d->unprotected_time)
    return; /* unprotected on purpose: nothing is expected of it, its replica and points are kept */
  time_t now = time(NULL);
  int64_t now_ms = (int64_t)rpl_unix_ms();
  switch (d->state) {
  case CATALOG_DISK_ERROR:
    add(h, HEALTH_CRITICAL, "disk_error",
        "fix the cause the reason names, then ask for a resync (the page's Resync on the disk)",
        "the disk is in error: %.250s", d->reason[0] ? d->reason : "no reason recorded");
    break;
  case CATALOG_DISK_RESYNC_REQUIRED:
    add(h, HEALTH_WARNING, "resync", "keep its agent connected: the resync ends by itself, and the RPO target is met again after it",
        "a resync is running or due%s%.250s", d->reason[0] ? ": " : "", d->reason);
    break;
  case CATALOG_DISK_INITIAL_SYNC:
    add(h, HEALTH_WARNING, "initial_sync", "keep its agent connected until the initial sync ends",
        "the initial sync has not finished: the disk is not protected yet");
    break;
  case CATALOG_DISK_PROTECTED: break;
  }
  if (!d->attached)
    add(h, HEALTH_WARNING, "agent_disconnected",
        "start 'mobility-agent run' on the disk's host, and check its network path to the appliance's port",
        "its agent is not connected: no cycle runs");
  const struct thresholds *t = &a->thresholds;
  struct catalog_agent ag;
  long stale;
  if (catalog_agent_get(a->cat, d->agent, &ag) == RPL_OK && (stale = heartbeat_stale(t, &ag, now)) >= 0)
    add(h, HEALTH_CRITICAL, "agent_not_seen",
        "check that the agent's host is up and 'mobility-agent status' there; then its network path to the appliance",
        "its agent (%.64s) was last heard from %lds ago (limit %" PRId64 "s)", ag.hostname, stale, t->agent_away_s);
  int64_t warn, crit;
  thresholds_rpo_limits(t, a->rpo_ms, &warn, &crit);
  long lag = d->last_commit_time ? (long)(now - d->last_commit_time) : -1;
  if (lag >= 0 && d->state != CATALOG_DISK_INITIAL_SYNC && lag > warn)
    add(h, lag > crit ? HEALTH_CRITICAL : HEALTH_WARNING, "rpo_lag",
        "see the disk's other reasons (agent away, storage); a backlog that lasts wants more upload bandwidth or a longer RPO target",
        "RPO lag %lds is over %" PRId64 "s (RPO target %.1fs)", lag, lag > crit ? crit : warn, (double)a->rpo_ms / 1000);
  struct catalog_point newest;
  if (t->point_age_s && d->state == CATALOG_DISK_PROTECTED) {
    bool any = catalog_point_latest(a->cat, d->id, &newest) == RPL_OK;
    /* A disk without a point counts from when this appliance started serving it. */
    int64_t since = any ? newest.time : a->started_time;
    if (since && now - since > t->point_age_s)
      add(h, HEALTH_WARNING, "point_age",
          "see why points fail (status: the schedule's last attempt; the events); or take one: mobility-agent checkpoint",
          "%s %" PRId64 "s (limit %" PRId64 "s)",
          any ? "the newest recovery point is from" : "no recovery point since the appliance started,",
          (int64_t)now - since, t->point_age_s);
  }
  for (int k = 0; k < SCHEDULE_KINDS && d->last_committed; k++) {
    int64_t period = (int64_t)schedule_period_ms(&a->schedule, (enum schedule_kind)k);
    int64_t due = d->sched[k].due_ms;
    if (!period || !due || now_ms - due <= period)
      continue;
    add(h, HEALTH_WARNING, "point_overdue",
        "see why the last attempt failed (status, the events); an application-consistent point needs the agent's freeze to work",
        "no %s point within its schedule: due %" PRId64 "s ago (every %" PRId64 "s)%s%.150s",
        schedule_kind_name((enum schedule_kind)k), (now_ms - due) / 1000, period / 1000,
        d->sched_failure[0] ? "; last attempt: " : "", d->sched_failure);
  }
  if (d->upload_waiting)
    add(h, HEALTH_WARNING, "storage",
        "run 'replication-appliance check' to see which storage check fails; the cycles wait in the cache meanwhile",
        "%.300s", d->reason);
  struct journal_usage u;
  journal_get_usage(d->journal, &u);
  if (u.limit_bytes && u.bytes > u.limit_bytes / 100 * t->cache_pct)
    add(h, HEALTH_WARNING, "cache_full",
        "the storage is not keeping up: see the uploads line and the storage reasons; a full cache holds the agents' cycles back",
        "the disk's cache is %" PRIu64 "%% full (%" PRIu64 " of %" PRIu64 " MiB)", u.bytes * 100 / u.limit_bytes,
        u.bytes >> 20, u.limit_bytes >> 20);
}

void health_agent(const struct thresholds *t, const struct catalog_agent *ag, struct health *h)
{
  memset(h, 0, sizeof *h);
  if (ag->revoked)
    return;
  long stale = heartbeat_stale(t, ag, time(NULL));
  if (!ag->last_heartbeat)
    add(h, HEALTH_WARNING, "agent_never_seen", "start 'mobility-agent run' on its host",
        "registered but never connected");
  else if (stale >= 0)
    add(h, HEALTH_CRITICAL, "agent_not_seen",
        "check that the agent's host is up and 'mobility-agent status' there; then its network path to the appliance",
        "last heard from %lds ago (limit %" PRId64 "s)", stale, t->agent_away_s);
  unsigned failed;
  char first[256];
  if (agent_readiness_failed(ag->id, &failed, first, sizeof first))
    add(h, HEALTH_WARNING, "readiness_fail",
        "run 'mobility-agent check' on its host and apply each FAIL's remedy: the server would not start in Azure",
        "%u boot readiness check(s) fail: %.200s", failed, first);
}

struct roll {
  struct appliance *a;
  struct thresholds thresholds; /* a copy taken under L: the agents' walk runs without it */
  unsigned warning, critical, unserved;
};

static int agent_cb(const struct catalog_agent *ag, void *arg)
{
  struct roll *r = arg;
  struct health h;
  health_agent(&r->thresholds, ag, &h);
  r->warning += h.level == HEALTH_WARNING;
  r->critical += h.level == HEALTH_CRITICAL;
  return 0;
}

static int unserved_cb(const struct catalog_disk *cd, void *arg)
{
  struct roll *r = arg;
  r->unserved += find_disk(r->a, cd->id) == NULL;
  return 0;
}

void health_appliance(struct appliance *a, struct health *h)
{
  memset(h, 0, sizeof *h);
  struct upload_gate_info g;
  upload_gate_get_info(a->gate, &g);
  if (!g.open && g.checked && g.failed_check[0])
    add(h, HEALTH_WARNING, "storage_held", g.remedy, "uploads held: storage check '%s' failed: %.200s", g.failed_check,
        g.detail);
  else if (!g.open && g.upload_error[0])
    add(h, HEALTH_WARNING, "storage_held",
        "the storage checks run again with backoff; 'replication-appliance check' says which one fails",
        "uploads held after a storage error: %.250s", g.upload_error);
  struct roll disks = {.a = a}, agents = {.a = a};
  pthread_mutex_lock(&a->lock);
  if (a->state_free_checked_ms && a->state_free_bytes < STATE_FREE_MIN)
    add(h, HEALTH_CRITICAL, "state_space", "free space on the state directory's file system",
        "no cycle starts: the state directory's file system has %" PRIu64 " MiB free", a->state_free_bytes >> 20);
  for (struct disk *d = a->disks; d; d = d->next) {
    struct health dh;
    health_disk(a, d, &dh);
    disks.warning += dh.level == HEALTH_WARNING;
    disks.critical += dh.level == HEALTH_CRITICAL;
  }
  rpl_err e = catalog_disk_foreach(a->cat, NULL, unserved_cb, &disks);
  agents.thresholds = a->thresholds;
  pthread_mutex_unlock(&a->lock);
  (void)e;
  e = catalog_agent_foreach(a->cat, agent_cb, &agents);
  (void)e;
  if (disks.unserved)
    add(h, HEALTH_CRITICAL, "disk_not_served", "fix the cause status gives for each, then restart the appliance",
        "%u disk(s) could not be opened and are not served", disks.unserved);
  if (disks.critical || disks.warning)
    add(h, disks.critical ? HEALTH_CRITICAL : HEALTH_WARNING, "disks", "see each disk's reasons",
        "%u disk(s) critical, %u warning", disks.critical, disks.warning);
  if (agents.critical || agents.warning)
    add(h, agents.critical ? HEALTH_CRITICAL : HEALTH_WARNING, "agents", "see each agent's reasons",
        "%u agent(s) critical, %u warning", agents.critical, agents.warning);
}

void health_json(struct json_out *j, const char *key, const struct health *h)
{
  json_object_begin(j, key);
  json_string(j, "state", health_name(h->level));
  json_array_begin(j, "reasons");
  for (unsigned i = 0; i < h->n; i++) {
    json_object_begin(j, NULL);
    json_string(j, "level", health_name(h->r[i].level));
    json_string(j, "code", h->r[i].code);
    json_string(j, "what", h->r[i].what);
    json_string(j, "todo", h->r[i].todo);
    json_object_end(j);
  }
  json_array_end(j);
  json_object_end(j);
}

void health_text(FILE *f, const char *indent, const struct health *h)
{
  for (unsigned i = 0; i < h->n; i++)
    fprintf(f, "%s%s: %s; do: %s\n", indent, health_name(h->r[i].level), h->r[i].what, h->r[i].todo);
}
