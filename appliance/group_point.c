/* group_point.c - consistency groups across servers: the groups kept in memory (from the catalog)
 * and the coordinator of their two-phase points (group_point.h), which the sessions share. */
#include "group_point.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "events.h"
#include "rpl_log.h"
#include "session.h"

#define GP_ANSWER_KEEP_MS 60000 /* an answer not fetched by then is dropped (the agent asks again) */
#define GP_MAX_REQUESTS   8     /* requests one attempt answers */
#define GP_SCHEDULE_CHECK_MS 200 /* how often the groups' schedules are looked at */

enum gp_phase { PH_CATCH_UP, PH_FREEZE, PH_FLIP, PH_RECORDING, PH_DONE };

struct gp_member {
  uint8_t disk[PROTO_ID_SIZE], agent[PROTO_ID_SIZE];
  char name[64];                  /* the disk's device name, for messages */
  bool taken, caught_up, freeze_sent, frozen, ended;
  rpl_err status;
  uint64_t cycle;
  uint8_t consistency;
  uint32_t freeze_ms;
  uint64_t frozen_at_us;
};

struct gp_attempt {
  bool used;
  uint64_t id;
  char group[CATALOG_MAX_GROUP_NAME + 1];
  enum gp_phase phase;
  enum catalog_point_made_by made_by;
  bool hooks;
  int sched_kind;                 /* enum schedule_kind, or -1 */
  uint64_t start_ms, freeze_start_ms, done_ms; /* monotonic */
  bool failed, reported;
  bool retry_ok;                  /* it failed only because a member's remainder was written after its thaw */
  unsigned retries;               /* attempts made before this one for the same request (0 or 1) */
  char why[320];
  size_t n;
  struct gp_member m[CATALOG_GROUP_MAX_DISKS];
  size_t nreq;
  struct {
    uint8_t agent[PROTO_ID_SIZE];
    uint64_t request;
    bool answered;
  } req[GP_MAX_REQUESTS];
  rpl_err status;                 /* PH_DONE: RPL_OK and point_id, or why not */
  char point_id[32];
  uint8_t consistency;
  uint32_t window_ms;
};

struct gp_group {
  struct catalog_group g;
  uint64_t points, failures;
  char last_failure[320];
  char last_point[32];
  uint32_t last_window_ms;
};

struct group_points {
  pthread_mutex_t lock;           /* a leaf: may be taken with a->lock held, never the other way round */
  struct gp_group *groups;        /* GP_MAX_GROUPS */
  size_t ngroups;
  struct gp_attempt *att;         /* GP_MAX_ATTEMPTS */
  uint64_t next_id;
  uint64_t sched_checked_ms;      /* monotonic: the last gp_schedule_check that looked */
};

static struct group_points *gp_of(struct appliance *a) { return a->gp; }

/* ---- the groups ---------------------------------------------------------------------------- */

static int load_cb(const struct catalog_group *g, void *ctx)
{
  struct group_points *gp = ctx;
  if (gp->ngroups < GP_MAX_GROUPS)
    gp->groups[gp->ngroups++].g = *g;
  return 0;
}

rpl_err gp_open(struct appliance *a)
{
  struct group_points *gp = calloc(1, sizeof *gp);
  if (!gp)
    return RPL_E_NOMEM;
  gp->groups = calloc(GP_MAX_GROUPS, sizeof *gp->groups);
  gp->att = calloc(GP_MAX_ATTEMPTS, sizeof *gp->att);
  if (!gp->groups || !gp->att) {
    free(gp->groups), free(gp->att), free(gp);
    return RPL_E_NOMEM;
  }
  pthread_mutex_init(&gp->lock, NULL);
  gp->next_id = (uint64_t)time(NULL) << 16; /* not reused across restarts: a stale GROUP_FROZEN never matches */
  rpl_err err = catalog_group_foreach(a->cat, load_cb, gp);
  if (err) {
    gp_close(a);
    return err;
  }
  a->gp = gp;
  if (gp->ngroups)
    log_info("%zu consistency group(s) loaded", gp->ngroups);
  return RPL_OK;
}

void gp_close(struct appliance *a)
{
  struct group_points *gp = a->gp;
  if (!gp)
    return;
  pthread_mutex_destroy(&gp->lock);
  free(gp->groups), free(gp->att), free(gp);
  a->gp = NULL;
}

static struct gp_group *find_group(struct group_points *gp, const char *name)
{
  for (size_t i = 0; i < gp->ngroups; i++)
    if (!strcmp(gp->groups[i].g.name, name))
      return &gp->groups[i];
  return NULL;
}

rpl_err gp_create(struct appliance *a, const struct catalog_group *g)
{
  struct group_points *gp = gp_of(a);
  pthread_mutex_lock(&gp->lock);
  bool full = gp->ngroups == GP_MAX_GROUPS;
  pthread_mutex_unlock(&gp->lock);
  if (full)
    return rpl_fail(RPL_E_LIMIT, "this appliance has %d groups already: delete one first", GP_MAX_GROUPS);
  rpl_err err = catalog_group_create(a->cat, g); /* every refusal is the catalog's, in one transaction */
  if (err)
    return err;
  pthread_mutex_lock(&gp->lock);
  if (gp->ngroups < GP_MAX_GROUPS) {
    memset(&gp->groups[gp->ngroups], 0, sizeof gp->groups[0]);
    gp->groups[gp->ngroups++].g = *g;
  }
  pthread_mutex_unlock(&gp->lock);
  log_notice("consistency group %s created with %zu disk(s): their points are made together", g->name, g->n);
  return RPL_OK;
}

rpl_err gp_delete(struct appliance *a, const char *name)
{
  struct group_points *gp = gp_of(a);
  rpl_err err = catalog_group_delete(a->cat, name);
  if (err)
    return err;
  pthread_mutex_lock(&gp->lock);
  struct gp_group *g = find_group(gp, name);
  if (g) {
    size_t i = (size_t)(g - gp->groups);
    memmove(g, g + 1, (gp->ngroups - i - 1) * sizeof *g);
    gp->ngroups--;
  }
  pthread_mutex_unlock(&gp->lock);
  log_notice("consistency group %s deleted: its disks' points are their agents' again (its points are kept)", name);
  return RPL_OK;
}

bool gp_disk_in_group(struct appliance *a, const uint8_t id[PROTO_ID_SIZE])
{
  struct group_points *gp = gp_of(a);
  if (!gp)
    return false;
  bool in = false;
  pthread_mutex_lock(&gp->lock);
  for (size_t i = 0; i < gp->ngroups && !in; i++)
    for (size_t k = 0; k < gp->groups[i].g.n && !in; k++)
      in = !memcmp(gp->groups[i].g.disks[k], id, PROTO_ID_SIZE);
  pthread_mutex_unlock(&gp->lock);
  return in;
}

static struct gp_attempt *active_of(struct group_points *gp, const char *name)
{
  for (size_t i = 0; i < GP_MAX_ATTEMPTS; i++)
    if (gp->att[i].used && gp->att[i].phase != PH_DONE && !strcmp(gp->att[i].group, name))
      return &gp->att[i];
  return NULL;
}

void gp_write(struct appliance *a, struct json_out *j, FILE *f)
{
  struct group_points *gp = gp_of(a);
  size_t n = 0;
  pthread_mutex_lock(&gp->lock);
  struct gp_group *copy = calloc(gp->ngroups ? gp->ngroups : 1, sizeof *copy);
  bool *busy = calloc(gp->ngroups ? gp->ngroups : 1, sizeof *busy);
  if (copy && busy) {
    n = gp->ngroups;
    memcpy(copy, gp->groups, n * sizeof *copy);
    for (size_t i = 0; i < n; i++)
      busy[i] = active_of(gp, copy[i].g.name) != NULL;
  }
  pthread_mutex_unlock(&gp->lock);
  for (size_t i = 0; i < n; i++) {
    const struct gp_group *g = &copy[i];
    if (j) {
      json_object_begin(j, NULL);
      json_string(j, "name", g->g.name);
      json_u64(j, "created_unix", (uint64_t)g->g.created_time);
      json_array_begin(j, "disks");
    } else {
      fprintf(f, "group %s: %zu disk(s), %" PRIu64 " point(s), %" PRIu64 " failed attempt(s)%s%s\n", g->g.name, g->g.n,
              g->points, g->failures, g->last_point[0] ? ", last point " : "", g->last_point);
    }
    for (size_t k = 0; k < g->g.n; k++) {
      char id[37];
      id_text(g->g.disks[k], id);
      pthread_mutex_lock(&a->lock);
      struct disk *d = find_disk(a, g->g.disks[k]);
      char name[256] = "";
      bool attached = d && d->attached, capable = d && d->agent_group_point;
      if (d)
        snprintf(name, sizeof name, "%s", d->name);
      pthread_mutex_unlock(&a->lock);
      if (j) {
        json_object_begin(j, NULL);
        json_string(j, "disk_id", id);
        json_string(j, "name", name);
        json_bool(j, "agent_connected", attached);
        json_bool(j, "agent_group_points", capable);
        json_object_end(j);
      } else {
        fprintf(f, "  disk %s (%s)%s\n", id, name[0] ? name : "unknown",
                !attached ? ": agent not connected" : !capable ? ": agent too old for group points" : "");
      }
    }
    if (j) {
      json_array_end(j);
      json_bool(j, "point_under_way", busy[i]);
      json_u64(j, "points_made", g->points);
      json_u64(j, "attempts_failed", g->failures);
      json_string(j, "last_failure", g->last_failure[0] ? g->last_failure : NULL);
      json_string(j, "last_point", g->last_point[0] ? g->last_point : NULL);
      json_u64(j, "last_window_ms", g->last_window_ms);
      json_object_end(j);
    } else if (g->last_failure[0]) {
      fprintf(f, "  last failure: %s\n", g->last_failure);
    }
  }
  free(copy);
  free(busy);
}

/* ---- attempts ------------------------------------------------------------------------------ */

static struct gp_attempt *attempt_of(struct group_points *gp, uint64_t id)
{
  for (size_t i = 0; i < GP_MAX_ATTEMPTS; i++)
    if (gp->att[i].used && gp->att[i].id == id)
      return &gp->att[i];
  return NULL;
}

/* Frees answered attempts, and those whose answers nobody fetched in time. gp->lock held. */
static void sweep(struct group_points *gp, uint64_t now)
{
  for (size_t i = 0; i < GP_MAX_ATTEMPTS; i++) {
    struct gp_attempt *at = &gp->att[i];
    if (!at->used || at->phase != PH_DONE || !at->reported)
      continue;
    bool pending = false;
    for (size_t r = 0; r < at->nreq; r++)
      pending = pending || !at->req[r].answered;
    if (!pending || now - at->done_ms > GP_ANSWER_KEEP_MS)
      at->used = false;
  }
}

/* The attempt fails (once): every member thaws. gp->lock held. */
static void fail(struct gp_attempt *at, rpl_err why, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fail(struct gp_attempt *at, rpl_err why, const char *fmt, ...)
{
  if (at->failed)
    return;
  at->failed = true;
  at->status = why;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(at->why, sizeof at->why, fmt, ap);
  va_end(ap);
}

static bool all_ended(const struct gp_attempt *at)
{
  for (size_t i = 0; i < at->n; i++)
    if (!at->m[i].ended)
      return false;
  return true;
}

/* Moves the attempt on by what its members did and the deadlines. gp->lock held. */
static void advance(struct gp_attempt *at, uint64_t now)
{
  if (at->phase == PH_DONE || at->phase == PH_RECORDING)
    return;
  if (!at->failed && now - at->start_ms > GP_DEADLINE_MS) {
    for (size_t i = 0; i < at->n && !at->failed; i++)
      if (!at->m[i].ended)
        fail(at, RPL_E_GROUP_POINT_FAILED, "member %s did not %s within the group point's %d ms", at->m[i].name,
             at->phase == PH_CATCH_UP ? "catch up" : "end its point cycle", GP_DEADLINE_MS);
  }
  if (!at->failed && at->phase == PH_CATCH_UP) {
    bool all = true;
    for (size_t i = 0; i < at->n; i++)
      all = all && at->m[i].caught_up;
    if (all) {
      at->phase = PH_FREEZE;
      at->freeze_start_ms = now;
    }
  }
  if (!at->failed && at->phase == PH_FREEZE) {
    bool all = true;
    for (size_t i = 0; i < at->n; i++)
      all = all && at->m[i].frozen;
    if (all) {
      at->phase = PH_FLIP;
    } else if (now - at->freeze_start_ms > GP_FREEZE_DEADLINE_MS) {
      for (size_t i = 0; i < at->n && !at->failed; i++)
        if (!at->m[i].frozen)
          fail(at, RPL_E_GROUP_POINT_FAILED, "member %s was not frozen %d ms after the freeze began (late agent)",
               at->m[i].name, GP_FREEZE_DEADLINE_MS);
    }
  }
  /* Failed: done once no member's point cycle is still under way (none started before the flip). */
  if (at->failed && (at->phase != PH_FLIP || all_ended(at))) {
    at->phase = PH_DONE;
    at->done_ms = now;
  }
}

/* The attempt's outcome for the schedule, the counters, the events and the log, once. L not held. */
static void report(struct appliance *a, struct gp_attempt *copy)
{
  struct group_points *gp = gp_of(a);
  int64_t now = (int64_t)rpl_unix_ms();
  pthread_mutex_lock(&gp->lock);
  struct gp_group *g = find_group(gp, copy->group);
  if (g && copy->failed) {
    g->failures++;
    snprintf(g->last_failure, sizeof g->last_failure, "%s", copy->why);
  } else if (g) {
    g->points++;
    g->last_failure[0] = '\0';
    snprintf(g->last_point, sizeof g->last_point, "%s", copy->point_id);
    g->last_window_ms = copy->window_ms;
  }
  pthread_mutex_unlock(&gp->lock);
  if (!copy->failed)
    return;
  pthread_mutex_lock(&a->lock);
  a->m.group_points_failed++;
  for (size_t i = 0; i < copy->n && copy->sched_kind >= 0; i++) {
    struct disk *d = find_disk(a, copy->m[i].disk);
    if (!d)
      continue;
    d->sched_busy = false;
    d->sched[copy->sched_kind].missed++;
    d->sched[copy->sched_kind].retry_ms = now + SCHEDULE_RETRY_S * 1000;
    snprintf(d->sched_failure, sizeof d->sched_failure, "group %s: %.170s", copy->group, copy->why);
  }
  pthread_mutex_unlock(&a->lock);
  struct event ev = {.type = EVENT_GROUP_FAILED};
  snprintf(ev.group, sizeof ev.group, "%s", copy->group);
  snprintf(ev.reason, sizeof ev.reason, "%s", copy->why);
  events_emit(&ev);
  log_warn("consistency group %s: the group point was not made: %s; every member thawed and none kept a part of it%s",
           copy->group, copy->why, copy->sched_kind >= 0 ? " (tried again at the next schedule tick)" : "");
}

/* Reports what ended since (outside gp->lock). */
static void after(struct appliance *a)
{
  struct group_points *gp = gp_of(a);
  struct gp_attempt *copy = malloc(sizeof *copy);
  if (!copy)
    return;
  for (;;) {
    bool found = false;
    pthread_mutex_lock(&gp->lock);
    for (size_t i = 0; i < GP_MAX_ATTEMPTS && !found; i++) {
      struct gp_attempt *at = &gp->att[i];
      if (at->used && at->phase == PH_DONE && !at->reported) {
        at->reported = found = true;
        *copy = *at;
      }
    }
    sweep(gp, rpl_mono_ms());
    pthread_mutex_unlock(&gp->lock);
    if (!found)
      break;
    report(a, copy);
  }
  free(copy);
}

/* A new attempt of group g (gp->lock held), or NULL when all are busy. */
static struct gp_attempt *new_attempt(struct group_points *gp, const struct gp_group *g,
                                      enum catalog_point_made_by made_by, bool hooks, int sched_kind)
{
  for (size_t i = 0; i < GP_MAX_ATTEMPTS; i++) {
    struct gp_attempt *at = &gp->att[i];
    if (at->used)
      continue;
    memset(at, 0, sizeof *at);
    at->used = true;
    at->id = ++gp->next_id;
    snprintf(at->group, sizeof at->group, "%s", g->g.name);
    at->made_by = made_by;
    at->hooks = hooks;
    at->sched_kind = sched_kind;
    at->start_ms = rpl_mono_ms();
    at->n = g->g.n;
    for (size_t k = 0; k < g->g.n; k++)
      memcpy(at->m[k].disk, g->g.disks[k], PROTO_ID_SIZE);
    return at;
  }
  return NULL;
}

/* Whether every member of g can take a point now: attached to a session whose agent states
 * PROTO_CAP_GROUP_POINT, and ready (point_ready); names and agents filled into at. L held. */
static rpl_err members_ready(struct appliance *a, const struct catalog_group *g, struct gp_attempt *at)
{
  if (g->n == 0)
    return rpl_fail(RPL_E_GROUP_EMPTY, "group %s has no disk left", g->name);
  for (size_t i = 0; i < g->n; i++) {
    struct disk *d = find_disk(a, g->disks[i]);
    char id[37];
    id_text(g->disks[i], id);
    if (!d || d->unprotected_time)
      return rpl_fail(RPL_E_GROUP_MEMBER, "member disk %s is no longer protected: delete the group and create it again", id);
    if (!d->attached)
      return rpl_fail(RPL_E_GROUP_AGENT, "member disk %s (%s): its agent is not connected", id, d->name);
    if (!d->agent_group_point)
      return rpl_fail(RPL_E_GROUP_AGENT, "member disk %s (%s): its agent is too old for group points: upgrade it", id,
                      d->name);
    if (!point_ready(d))
      return rpl_fail(RPL_E_GROUP_AGENT, "member disk %s (%s) cannot take a point now (initial sync, resync, or its "
                      "cache is full)", id, d->name);
    if (at) {
      memcpy(at->m[i].agent, d->agent, PROTO_ID_SIZE);
      snprintf(at->m[i].name, sizeof at->m[i].name, "%.*s", (int)sizeof at->m[i].name - 1, d->name);
    }
  }
  return RPL_OK;
}

rpl_err gp_request(struct appliance *a, const char *name, const uint8_t agent[PROTO_ID_SIZE], uint64_t request,
                   enum catalog_point_made_by made_by)
{
  struct group_points *gp = gp_of(a);
  struct catalog_group *g = malloc(sizeof *g);
  struct gp_attempt *tmp = calloc(1, sizeof *tmp);
  rpl_err err = g && tmp ? RPL_OK : RPL_E_NOMEM;
  pthread_mutex_lock(&a->lock);
  if (!err) {
    pthread_mutex_lock(&gp->lock);
    struct gp_group *found = find_group(gp, name);
    if (found)
      *g = found->g;
    pthread_mutex_unlock(&gp->lock);
    err = found ? RPL_OK : rpl_fail(RPL_E_GROUP_UNKNOWN, "no group %s", name);
  }
  if (!err)
    err = members_ready(a, g, tmp);
  if (!err) {
    pthread_mutex_lock(&gp->lock);
    struct gp_attempt *at = active_of(gp, name);
    if (at && at->phase != PH_CATCH_UP)
      err = rpl_fail(RPL_E_GROUP_BUSY, "group %s's point under way froze before this request", name);
    else if (at && at->nreq == GP_MAX_REQUESTS)
      err = rpl_fail(RPL_E_LIMIT, "%d requests wait for group %s's point already", GP_MAX_REQUESTS, name);
    if (!err && !at) {
      struct gp_group *gg = find_group(gp, name);
      at = gg ? new_attempt(gp, gg, made_by, true, -1) : NULL;
      if (!at)
        err = rpl_fail(RPL_E_LIMIT, "%d group points are under way already", GP_MAX_ATTEMPTS);
      for (size_t i = 0; at && i < at->n; i++) {
        memcpy(at->m[i].agent, tmp->m[i].agent, PROTO_ID_SIZE);
        memcpy(at->m[i].name, tmp->m[i].name, sizeof at->m[i].name);
      }
      if (at)
        log_notice("consistency group %s: group point %" PRIu64 " of %zu disk(s) started (%s)", name, at->id, at->n,
                   catalog_point_made_by_name(made_by));
    }
    if (!err && request) {
      memcpy(at->req[at->nreq].agent, agent, PROTO_ID_SIZE);
      at->req[at->nreq++].request = request;
    }
    pthread_mutex_unlock(&gp->lock);
  }
  pthread_mutex_unlock(&a->lock);
  free(g);
  free(tmp);
  return err;
}

/* Group g's scheduled point, when due: started, or (a member cannot take one) counted as missed and
 * tried again after SCHEDULE_RETRY_S. L held. */
static void schedule_one(struct appliance *a, const struct catalog_group *g, struct gp_attempt *tmp, int64_t now)
{
  struct group_points *gp = gp_of(a);
  for (int k = SCHEDULE_APP; k >= SCHEDULE_CRASH; k--) {
    bool due = false, busy = false;
    for (size_t i = 0; i < g->n; i++) {
      struct disk *d = find_disk(a, g->disks[i]);
      if (!d)
        continue;
      busy = busy || d->sched_busy;
      due = due || (d->sched[k].due_ms && d->sched[k].due_ms <= now && d->sched[k].retry_ms <= now);
    }
    if (!due || busy)
      continue;
    memset(tmp, 0, sizeof *tmp);
    rpl_err err = members_ready(a, g, tmp);
    if (err) {
      char why[RPL_DETAIL_MAX + 128];
      rpl_describe(err, why, sizeof why);
      for (size_t i = 0; i < g->n; i++) {
        struct disk *d = find_disk(a, g->disks[i]);
        if (!d || !d->attached)
          continue; /* its missed points are counted while it is away (schedule_tick) */
        d->sched[k].missed++;
        d->sched[k].retry_ms = now + SCHEDULE_RETRY_S * 1000;
        snprintf(d->sched_failure, sizeof d->sched_failure, "group %s: %.170s", g->name, why);
      }
      log_warn("consistency group %s: its scheduled %s point cannot start: %s (tried again in %d s)", g->name,
               schedule_kind_name((enum schedule_kind)k), why, SCHEDULE_RETRY_S);
      return;
    }
    pthread_mutex_lock(&gp->lock);
    struct gp_group *gg = find_group(gp, g->name);
    struct gp_attempt *at = gg && !active_of(gp, g->name) ? new_attempt(gp, gg, CATALOG_MADE_BY_SCHEDULE,
                                                                          k == SCHEDULE_APP, k) : NULL;
    for (size_t i = 0; at && i < at->n; i++) {
      memcpy(at->m[i].agent, tmp->m[i].agent, PROTO_ID_SIZE);
      memcpy(at->m[i].name, tmp->m[i].name, sizeof at->m[i].name);
    }
    pthread_mutex_unlock(&gp->lock);
    for (size_t i = 0; at && i < g->n; i++)
      find_disk(a, g->disks[i])->sched_busy = true;
    if (at)
      log_info("consistency group %s: scheduled %s group point %" PRIu64 " started", g->name,
               schedule_kind_name((enum schedule_kind)k), at->id);
    return;
  }
}

void gp_schedule_check(struct appliance *a)
{
  struct group_points *gp = gp_of(a);
  struct catalog_group *groups = NULL;
  size_t n = 0;
  uint64_t now_mono = rpl_mono_ms();
  pthread_mutex_lock(&gp->lock);
  bool look = now_mono - gp->sched_checked_ms >= GP_SCHEDULE_CHECK_MS; /* every session calls it, often */
  if (look)
    gp->sched_checked_ms = now_mono;
  if (look && gp->ngroups && (groups = malloc(gp->ngroups * sizeof *groups)) != NULL) {
    for (size_t i = 0; i < gp->ngroups; i++)
      if (!active_of(gp, gp->groups[i].g.name))
        groups[n++] = gp->groups[i].g;
  }
  pthread_mutex_unlock(&gp->lock);
  struct gp_attempt *tmp = n ? malloc(sizeof *tmp) : NULL;
  if (tmp) {
    int64_t now = (int64_t)rpl_unix_ms();
    pthread_mutex_lock(&a->lock);
    for (size_t i = 0; i < n; i++)
      schedule_one(a, &groups[i], tmp, now);
    pthread_mutex_unlock(&a->lock);
  }
  free(tmp);
  free(groups);
}

/* ---- the members' sessions ----------------------------------------------------------------- */

bool gp_take_part(struct appliance *a, const uint8_t agent[PROTO_ID_SIZE], struct gp_part *out)
{
  struct group_points *gp = gp_of(a);
  bool found = false;
  pthread_mutex_lock(&gp->lock);
  for (size_t i = 0; i < GP_MAX_ATTEMPTS && !found; i++) {
    struct gp_attempt *at = &gp->att[i];
    if (!at->used || at->phase != PH_CATCH_UP || at->failed)
      continue;
    memset(out, 0, sizeof *out);
    for (size_t k = 0; k < at->n; k++) {
      if (memcmp(at->m[k].agent, agent, PROTO_ID_SIZE) || at->m[k].taken)
        continue;
      at->m[k].taken = true;
      memcpy(out->disks[out->n++], at->m[k].disk, PROTO_ID_SIZE);
    }
    if (out->n) {
      found = true;
      out->attempt = at->id;
      out->hooks = at->hooks;
      out->made_by = at->made_by;
    }
  }
  pthread_mutex_unlock(&gp->lock);
  return found;
}

enum gp_action gp_poll(struct appliance *a, uint64_t attempt, const uint8_t agent[PROTO_ID_SIZE])
{
  struct group_points *gp = gp_of(a);
  enum gp_action act = GP_WAIT;
  uint64_t now = rpl_mono_ms();
  pthread_mutex_lock(&gp->lock);
  struct gp_attempt *at = attempt_of(gp, attempt);
  if (at) {
    for (size_t k = 0; k < at->n; k++)
      if (!memcmp(at->m[k].agent, agent, PROTO_ID_SIZE))
        at->m[k].caught_up = true;
    advance(at, now);
  }
  if (!at || at->failed) {
    act = GP_ABORT;
  } else if (at->phase == PH_FREEZE) {
    for (size_t k = 0; k < at->n; k++)
      if (!memcmp(at->m[k].agent, agent, PROTO_ID_SIZE) && !at->m[k].freeze_sent) {
        at->m[k].freeze_sent = true;
        act = GP_FREEZE;
      }
  } else if (at->phase == PH_FLIP) {
    act = GP_FLIP;
  }
  pthread_mutex_unlock(&gp->lock);
  after(a);
  return act;
}

void gp_frozen(struct appliance *a, const uint8_t agent[PROTO_ID_SIZE], const struct proto_group_frozen *m)
{
  struct group_points *gp = gp_of(a);
  char agent_text[37];
  id_text(agent, agent_text);
  pthread_mutex_lock(&gp->lock);
  struct gp_attempt *at = attempt_of(gp, m->attempt);
  bool ours = false;
  for (size_t k = 0; at && k < at->n; k++) {
    struct gp_member *mb = &at->m[k];
    if (memcmp(mb->agent, agent, PROTO_ID_SIZE) || !mb->freeze_sent || mb->frozen)
      continue;
    ours = true;
    if (m->status) {
      fail(at, RPL_E_GROUP_POINT_FAILED, "member %s could not freeze: %s%s%.*s", mb->name,
           rpl_strerror((rpl_err)m->status), m->message.len ? ": " : "", (int)m->message.len,
           (const char *)m->message.ptr);
    } else {
      mb->frozen = true;
      mb->frozen_at_us = m->frozen_at_us;
    }
  }
  if (at && ours)
    advance(at, rpl_mono_ms());
  pthread_mutex_unlock(&gp->lock);
  if (!ours)
    log_info("agent %s: GROUP_FROZEN of attempt %" PRIu64 ", which is over or not its: ignored", agent_text,
             m->attempt);
  after(a);
}

/* The points of a successful attempt, one transaction each (as any group's): the first member's id
 * is the group point's id and every member's `group`. L not held. */
static rpl_err record(struct appliance *a, struct gp_attempt *at)
{
  int64_t ids[CATALOG_GROUP_MAX_DISKS];
  int64_t now = time(NULL);
  uint64_t first_us = UINT64_MAX, last_us = 0;
  uint32_t longest = 0;
  at->consistency = PROTO_APP_CONSISTENT;
  for (size_t i = 0; i < at->n; i++) {
    const struct gp_member *mb = &at->m[i];
    if (mb->consistency < at->consistency)
      at->consistency = mb->consistency;
    if (mb->freeze_ms > longest)
      longest = mb->freeze_ms;
    if (mb->frozen_at_us && mb->frozen_at_us < first_us)
      first_us = mb->frozen_at_us;
    if (mb->frozen_at_us && mb->frozen_at_us + (uint64_t)mb->freeze_ms * 1000 > last_us)
      last_us = mb->frozen_at_us + (uint64_t)mb->freeze_ms * 1000;
  }
  at->window_ms = first_us == UINT64_MAX ? 0 : (uint32_t)((last_us - first_us + 999) / 1000);
  rpl_err err = RPL_OK;
  for (size_t i = 0; i < at->n && !err; i++) {
    const struct gp_member *mb = &at->m[i];
    pthread_mutex_lock(&a->lock);
    struct disk *d = find_disk(a, mb->disk);
    pthread_mutex_unlock(&a->lock);
    if (!d) {
      err = rpl_fail(RPL_E_NOT_FOUND, "member %s was deleted meanwhile", mb->name);
      break;
    }
    struct catalog_point cp = {.cycle = mb->cycle, .time = now, .made_by = at->made_by, .freeze_ms = mb->freeze_ms,
                               .group_id = i ? ids[0] : 0, .group_window_ms = at->window_ms};
    cp.kind = mb->consistency == PROTO_APP_CONSISTENT  ? CATALOG_POINT_APPLICATION_CONSISTENT
              : mb->consistency == PROTO_FS_CONSISTENT ? CATALOG_POINT_FILESYSTEM_CONSISTENT
                                                       : CATALOG_POINT_CRASH_CONSISTENT;
    snprintf(cp.consistency_group, sizeof cp.consistency_group, "%s", at->group);
    memcpy(cp.disk_id, mb->disk, PROTO_ID_SIZE);
    cp.has_snapshot = claim_snapshot(a, d, cp.cycle, cp.snapshot_id, sizeof cp.snapshot_id);
    err = catalog_point_add(a->cat, &cp, &ids[i]);
    if (!err && i == at->n - 1) /* the first point names the group too (one of one: itself) */
      err = catalog_point_set_group(a->cat, ids[0], ids[0]);
    if (err)
      break;
    pthread_mutex_lock(&a->lock);
    schedule_point_made(a, d, at->hooks, ids[i], (int64_t)rpl_unix_ms());
    if (mb->freeze_ms)
      metrics_freeze(&d->m, mb->freeze_ms);
    d->prune_due = true;
    d->sched_busy = false;
    a->points_recorded++;
    pthread_cond_signal(&a->work);
    pthread_mutex_unlock(&a->lock);
    struct event ev = {.type = EVENT_POINT, .cycle = mb->cycle, .kind = PROTO_CYCLE_RECOVERY_POINT,
                       .point_kind = (uint8_t)cp.kind, .made_by = (uint8_t)at->made_by, .freeze_ms = mb->freeze_ms,
                       .group_window_ms = at->window_ms};
    memcpy(ev.disk_id, mb->disk, PROTO_ID_SIZE);
    snprintf(ev.point_id, sizeof ev.point_id, "rp-%" PRId64, ids[i]);
    snprintf(ev.group, sizeof ev.group, "%s", at->group);
    snprintf(ev.group_point, sizeof ev.group_point, "rp-%" PRId64, ids[0]);
    events_emit(&ev);
  }
  if (!err) {
    snprintf(at->point_id, sizeof at->point_id, "rp-%" PRId64, ids[0]);
    log_notice("consistency group %s: group point %s of %zu disk(s) (%s, by %s): filesystems frozen %" PRIu32
               " ms across all members (first freeze to last thaw), the longest member %" PRIu32 " ms",
               at->group, at->point_id, at->n, proto_consistency_name(at->consistency),
               catalog_point_made_by_name(at->made_by), at->window_ms, longest);
  }
  return err;
}

/* A member's remainder read after its thaw was written meanwhile: the attempt is over, and one more
 * starts at once for the same requests (that disk now reads its remainder frozen). gp->lock held. */
static void retry(struct group_points *gp, struct gp_attempt *at)
{
  struct gp_group *gg = find_group(gp, at->group);
  struct gp_attempt *next = gg && gg->g.n == at->n ? new_attempt(gp, gg, at->made_by, at->hooks, at->sched_kind) : NULL;
  if (!next)
    return;
  next->retries = at->retries + 1;
  for (size_t i = 0; i < at->n; i++) {
    memcpy(next->m[i].agent, at->m[i].agent, PROTO_ID_SIZE);
    memcpy(next->m[i].name, at->m[i].name, sizeof next->m[i].name);
  }
  memcpy(next->req, at->req, sizeof next->req);
  next->nreq = at->nreq;
  at->nreq = 0;          /* answered by the next one */
  at->sched_kind = -1;   /* its schedule goes on with the next one: not missed */
  log_info("consistency group %s: group point %" PRIu64 " tried again as %" PRIu64 " (%s)", at->group, at->id, next->id,
           at->why);
}

void gp_member_ended(struct appliance *a, uint64_t attempt, const uint8_t disk[PROTO_ID_SIZE], uint64_t cycle,
                     uint8_t consistency, uint32_t freeze_ms, rpl_err status)
{
  struct group_points *gp = gp_of(a);
  struct gp_attempt *copy = NULL;
  pthread_mutex_lock(&gp->lock);
  struct gp_attempt *at = attempt_of(gp, attempt);
  for (size_t k = 0; at && k < at->n; k++) {
    struct gp_member *mb = &at->m[k];
    if (memcmp(mb->disk, disk, PROTO_ID_SIZE) || mb->ended)
      continue;
    mb->ended = true;
    mb->status = status;
    mb->cycle = cycle;
    mb->consistency = consistency;
    mb->freeze_ms = freeze_ms;
    if (status)
      fail(at, RPL_E_GROUP_POINT_FAILED, "member %s: %s", mb->name, rpl_strerror(status));
    else if (consistency == PROTO_PRECOPY)
      fail(at, RPL_E_GROUP_POINT_FAILED, "member %s had too much to read to freeze (a catch-up round)", mb->name);
    else if (consistency < PROTO_FS_CONSISTENT && mb->frozen_at_us && !at->failed) {
      fail(at, RPL_E_GROUP_POINT_FAILED, "member %s was written while its filesystems were to be frozen, or its "
           "remainder after the thaw (%s)", mb->name, proto_consistency_name(consistency));
      at->retry_ok = true;
    }
    else if (consistency == PROTO_FUZZY || consistency == PROTO_PRECOPY)
      fail(at, RPL_E_GROUP_POINT_FAILED, "member %s was written while it was read (no filesystem to freeze)", mb->name);
  }
  if (at) {
    advance(at, rpl_mono_ms());
    if (at->phase == PH_FLIP && !at->failed && all_ended(at) && (copy = malloc(sizeof *copy)) != NULL) {
      at->phase = PH_RECORDING;
      *copy = *at;
    }
    if (at->phase == PH_DONE && at->failed && at->retry_ok && !at->retries)
      retry(gp, at);
  }
  pthread_mutex_unlock(&gp->lock);
  if (copy) {
    rpl_err err = record(a, copy);
    pthread_mutex_lock(&gp->lock);
    if ((at = attempt_of(gp, attempt)) != NULL) {
      at->phase = PH_DONE;
      at->done_ms = rpl_mono_ms();
      at->window_ms = copy->window_ms;
      at->consistency = copy->consistency;
      snprintf(at->point_id, sizeof at->point_id, "%s", copy->point_id);
      if (err) {
        char why[RPL_DETAIL_MAX + 128];
        fail(at, err, "the points were not recorded: %s", rpl_describe(err, why, sizeof why));
      } else {
        at->status = RPL_OK;
      }
    }
    pthread_mutex_unlock(&gp->lock);
    free(copy);
  }
  after(a);
}

void gp_session_gone(struct appliance *a, const uint8_t agent[PROTO_ID_SIZE])
{
  struct group_points *gp = gp_of(a);
  pthread_mutex_lock(&gp->lock);
  for (size_t i = 0; i < GP_MAX_ATTEMPTS; i++) {
    struct gp_attempt *at = &gp->att[i];
    if (!at->used || at->phase == PH_DONE || at->phase == PH_RECORDING)
      continue;
    for (size_t k = 0; k < at->n; k++) {
      struct gp_member *mb = &at->m[k];
      if (memcmp(mb->agent, agent, PROTO_ID_SIZE) || mb->ended)
        continue;
      mb->ended = true;
      mb->status = RPL_E_CANCELLED;
      fail(at, RPL_E_GROUP_POINT_FAILED, "member %s: its agent's session ended", mb->name);
    }
    advance(at, rpl_mono_ms());
  }
  pthread_mutex_unlock(&gp->lock);
  after(a);
}

size_t gp_answers(struct appliance *a, const uint8_t agent[PROTO_ID_SIZE], struct proto_point *out, char (*ids)[32],
                  size_t max)
{
  struct group_points *gp = gp_of(a);
  size_t n = 0;
  uint64_t now = rpl_mono_ms();
  pthread_mutex_lock(&gp->lock);
  for (size_t i = 0; i < GP_MAX_ATTEMPTS; i++) {
    struct gp_attempt *at = &gp->att[i];
    if (at->used && at->phase != PH_DONE)
      advance(at, now); /* deadlines pass even when no member's session polls */
    if (!at->used || at->phase != PH_DONE || !at->reported)
      continue;
    for (size_t r = 0; r < at->nreq && n < max; r++) {
      if (at->req[r].answered || memcmp(at->req[r].agent, agent, PROTO_ID_SIZE))
        continue;
      at->req[r].answered = true;
      out[n] = (struct proto_point){.request = at->req[r].request, .status = at->failed ? at->status : RPL_OK};
      if (!at->failed) {
        snprintf(ids[n], 32, "%s", at->point_id);
        out[n].consistency = at->consistency;
        out[n].point_id = (struct proto_bytes){(const uint8_t *)ids[n], (uint32_t)strlen(ids[n])};
      }
      n++;
    }
  }
  pthread_mutex_unlock(&gp->lock);
  after(a);
  return n;
}
