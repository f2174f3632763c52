/* orchestrator.c - when a session's cycles and recovery points start (RPO target, backlog, initial
 * sync, resync asked for, point groups) and how a group's point is recorded. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "events.h"
#include "group_point.h"
#include "rpl_log.h"
#include "session.h"

#define DIRECT_WAIT_MS      10000 /* an initial sync waits this long for its page blob to open */

struct group *group_of(struct session *s, struct rx_slot *sl)
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

/* A free group slot, cleared, or NULL when all are busy. */
static struct group *new_group(struct session *s, enum catalog_point_made_by made_by, bool hooks, int sched_kind)
{
  for (size_t g = 0; g < MAX_GROUPS; g++) {
    struct group *gr = &s->groups[g];
    if (gr->used)
      continue;
    memset(gr, 0, sizeof *gr);
    gr->made_by = made_by;
    gr->hooks = hooks;
    gr->sched_kind = sched_kind;
    gr->consistency = PROTO_APP_CONSISTENT;
    gr->caught_up = s->a->no_precopy;
    return gr;
  }
  return NULL;
}

rpl_err on_point_request(struct session *s, const struct proto_frame *f)
{
  struct proto_point_request m;
  rpl_err err = proto_decode_point_request(f, &m);
  if (err)
    return err;
  struct group *gr = new_group(s, CATALOG_MADE_BY_CHECKPOINT, true, -1);
  rpl_err why = gr ? RPL_OK : RPL_E_LIMIT;
  if (gr) {
    gr->request = m.request;
    for (uint32_t i = 0; i < m.count && !why; i++) {
      struct rx_slot *sl = slot_of(s, m.disk_ids + (size_t)i * PROTO_ID_SIZE);
      if (!sl)
        why = RPL_E_NOT_FOUND;
      for (size_t k = 0; k < gr->n && !why; k++)
        if (&s->slots[gr->slots[k]] == sl) /* its point round would start one cycle twice and never end */
          why = rpl_fail(RPL_E_PROTO_FIELD, "POINT_REQUEST names one disk twice");
      if (!why)
        gr->slots[gr->n++] = (size_t)(sl - s->slots);
    }
  }
  if (why) {
    if (why != RPL_E_NOT_FOUND)
      log_warn("agent %s: point request %" PRIu64 " refused: %s", s->agent_text, m.request, rpl_detail(why));
    struct proto_point p = {.request = m.request, .status = why};
    err = proto_encode_point(&s->out, &p);
    return err ? err : flush_out(s);
  }
  gr->used = true;
  return RPL_OK;
}

static enum catalog_point_kind point_kind(uint8_t consistency)
{
  switch (consistency) {
  case PROTO_APP_CONSISTENT: return CATALOG_POINT_APPLICATION_CONSISTENT;
  case PROTO_FS_CONSISTENT: return CATALOG_POINT_FILESYSTEM_CONSISTENT;
  default: return CATALOG_POINT_CRASH_CONSISTENT;
  }
}

/* A round ended: a catch-up round, or a point round the agent turned into one, starts the point
 * round next; true when the group goes on. */
static bool next_round(struct session *s, struct group *gr)
{
  if (gr->failed)
    return false;
  if (gr->gp && !gr->catching_up)
    return false; /* a group point's round is never run again: its members froze for it */
  if (!gr->catching_up && !gr->precopy)
    return false;
  if (gr->precopy && gr->rounds >= MAX_PRECOPY_ROUNDS) {
    gr->failed = true;
    gr->why = rpl_fail(RPL_E_POINT_INCONSISTENT, "the disks stayed too busy to freeze after %u catch-up rounds",
                       gr->rounds);
    log_warn("agent %s: %s", s->agent_text, rpl_detail(gr->why));
    return false;
  }
  gr->caught_up = true;
  gr->catching_up = gr->precopy = false;
  gr->started = false;
  gr->ended = 0;
  gr->freeze_ms = 0;
  gr->consistency = PROTO_APP_CONSISTENT;
  return true;
}

/* The group's disks hold the point's cycles, applied and with their images made. L held. */
static bool group_applied(struct session *s, const struct group *gr)
{
  bool applied = true;
  for (size_t i = 0; i < gr->n; i++)
    applied = applied && s->slots[gr->slots[i]].disk->last_applied >= gr->cycles[i] &&
              s->slots[gr->slots[i]].disk->snap_pending != gr->cycles[i]; /* and its image kept */
  return applied;
}

/* Records the group's point in the catalog: ids[i] is member i's point id. */
static rpl_err record_point(struct session *s, struct group *gr, int64_t *ids)
{
  rpl_err err = RPL_OK;
  int64_t now = time(NULL);
  for (size_t i = 0; i < gr->n && !err; i++) {
    struct disk *d = s->slots[gr->slots[i]].disk;
    struct catalog_point cp = {.cycle = gr->cycles[i], .time = now, .kind = point_kind(gr->consistencies[i]),
                               .made_by = gr->made_by, .freeze_ms = gr->freeze_ms, .group_id = i ? ids[0] : 0};
    memcpy(cp.disk_id, d->id, PROTO_ID_SIZE);
    cp.has_snapshot = claim_snapshot(s->a, d, cp.cycle, cp.snapshot_id, sizeof cp.snapshot_id);
    int64_t id;
    err = catalog_point_add(s->a->cat, &cp, &id);
    ids[i] = id;
    if (!err && i == 1) /* a group: its first point names it too */
      err = catalog_point_set_group(s->a->cat, ids[0], ids[0]);
    if (!err) {
      pthread_mutex_lock(&s->a->lock);
      schedule_point_made(s->a, d, gr->hooks, id, (int64_t)rpl_unix_ms()); /* what hooks there are ran */
      if (gr->freeze_ms)
        metrics_freeze(&d->m, gr->freeze_ms);
      pthread_mutex_unlock(&s->a->lock);
    }
  }
  return err;
}

/* A scheduled group made no point: counted, the reason kept, tried again after SCHEDULE_RETRY_S. */
static void schedule_attempt_failed(struct session *s, struct group *gr, rpl_err why)
{
  char reason[RPL_DETAIL_MAX + 128];
  rpl_describe(why, reason, sizeof reason);
  int64_t now = (int64_t)rpl_unix_ms();
  pthread_mutex_lock(&s->a->lock);
  for (size_t i = 0; i < gr->n; i++) {
    struct disk *d = s->slots[gr->slots[i]].disk;
    d->sched_busy = false;
    d->sched[gr->sched_kind].missed++;
    d->sched[gr->sched_kind].retry_ms = now + SCHEDULE_RETRY_S * 1000;
    snprintf(d->sched_failure, sizeof d->sched_failure, "%.255s", reason);
  }
  pthread_mutex_unlock(&s->a->lock);
  log_warn("agent %s: the scheduled %s point of %zu disk(s) was not made: %s (counted as missed; tried again in %d s)",
           s->agent_text, schedule_kind_name((enum schedule_kind)gr->sched_kind), gr->n, reason, SCHEDULE_RETRY_S);
}

static void emit_point_events(struct session *s, const struct group *gr, const int64_t *ids)
{
  for (size_t i = 0; i < gr->n; i++) {
    struct event ev = {.type = EVENT_POINT, .cycle = gr->cycles[i], .kind = PROTO_CYCLE_RECOVERY_POINT,
                       .point_kind = (uint8_t)point_kind(gr->consistencies[i]), .made_by = (uint8_t)gr->made_by,
                       .freeze_ms = gr->freeze_ms};
    memcpy(ev.disk_id, s->slots[gr->slots[i]].disk->id, PROTO_ID_SIZE);
    snprintf(ev.point_id, sizeof ev.point_id, "rp-%" PRId64, ids[i]);
    events_emit(&ev);
  }
}

static rpl_err send_group_thaw(struct session *s, uint64_t attempt)
{
  struct proto_group_thaw m = {.attempt = attempt};
  rpl_err err = proto_encode_group_thaw(&s->out, &m);
  return err ? err : flush_out(s);
}

/* A consistency-group point's part ended: each member's outcome goes to the coordinator (once its
 * cycle is applied), which records the point when every member's part ended well. */
static rpl_err finish_group_point_part(struct session *s, struct group *gr)
{
  rpl_err st = gr->failed ? (gr->why ? gr->why : RPL_E_GROUP_POINT_FAILED) : RPL_OK;
  /* A fuzzy member is no point either way (the coordinator says why, and may try again at once). */
  bool fuzzy = gr->consistency == PROTO_FUZZY || gr->consistency == PROTO_PRECOPY;
  if (!st && !fuzzy) {
    pthread_mutex_lock(&s->a->lock);
    bool applied = group_applied(s, gr);
    pthread_mutex_unlock(&s->a->lock);
    if (!applied)
      return RPL_OK; /* asked again on the next pass */
  }
  gr->used = false;
  for (size_t i = 0; i < gr->n; i++)
    gp_member_ended(s->a, gr->gp, s->slots[gr->slots[i]].disk->id, gr->cycles[i], gr->consistencies[i], gr->freeze_ms,
                    st);
  return (st || fuzzy) && gr->gp_freeze_sent ? send_group_thaw(s, gr->gp) : RPL_OK; /* (ignored by an agent that thawed) */
}

/* Ends a group whose rounds are over: records its point (or why none was made) and tells the
 * agent; false while its cycles are still being applied. */
static rpl_err finish_group(struct session *s, struct group *gr)
{
  if (gr->gp)
    return finish_group_point_part(s, gr);
  struct proto_point p = {.request = gr->request};
  char point_id[64] = "";
  if (gr->failed || gr->consistency == PROTO_FUZZY) {
    p.status = gr->failed ? gr->why : RPL_E_POINT_INCONSISTENT;
  } else {
    pthread_mutex_lock(&s->a->lock);
    bool applied = group_applied(s, gr);
    pthread_mutex_unlock(&s->a->lock);
    if (!applied)
      return RPL_OK; /* asked again on the next pass */
    int64_t ids[PROTO_MAX_GROUP];
    p.status = record_point(s, gr, ids);
    if (!p.status) {
      snprintf(point_id, sizeof point_id, "rp-%" PRId64, ids[0]);
      p.consistency = gr->consistency;
      p.point_id = (struct proto_bytes){(const uint8_t *)point_id, (uint32_t)strlen(point_id)};
      pthread_mutex_lock(&s->a->lock);
      s->a->points_recorded++;
      for (size_t i = 0; i < gr->n; i++) {
        s->slots[gr->slots[i]].disk->prune_due = true;
        if (gr->made_by == CATALOG_MADE_BY_SCHEDULE)
          s->slots[gr->slots[i]].disk->sched_busy = false;
      }
      pthread_cond_signal(&s->a->work);
      pthread_mutex_unlock(&s->a->lock);
      emit_point_events(s, gr, ids);
      log_notice("agent %s: recovery point %s (%s, by %s, filesystems frozen %" PRIu32 " ms) of %zu disk(s)",
                 s->agent_text, point_id, catalog_point_kind_name(point_kind(gr->consistency)),
                 catalog_point_made_by_name(gr->made_by), gr->freeze_ms, gr->n);
    }
  }
  gr->used = false;
  if (p.status && gr->made_by == CATALOG_MADE_BY_SCHEDULE)
    schedule_attempt_failed(s, gr, (rpl_err)p.status);
  else if (p.status && gr->local)
    log_warn("agent %s: the recovery point asked for on the configuration manager was not made: %s", s->agent_text,
             rpl_strerror((rpl_err)p.status));
  if (gr->local)
    return RPL_OK;
  rpl_err err = proto_encode_point(&s->out, &p);
  return err ? err : flush_out(s);
}

/* The answers to this agent's group point requests (POINT). */
static rpl_err answer_group_requests(struct session *s)
{
  struct proto_point p[8];
  char ids[8][32];
  size_t n = gp_answers(s->a, s->agent, p, ids, 8);
  rpl_err err = RPL_OK;
  for (size_t i = 0; i < n && !err; i++)
    err = proto_encode_point(&s->out, &p[i]);
  return err || !n ? err : flush_out(s);
}

rpl_err finish_groups(struct session *s)
{
  rpl_err e = answer_group_requests(s);
  if (e)
    return e;
  for (size_t g = 0; g < MAX_GROUPS; g++) {
    struct group *gr = &s->groups[g];
    /* a catch-up round that failed starts no more of its cycles: it is over once those started ended */
    bool over = gr->ended == gr->n || (gr->catching_up && gr->failed && gr->ended == gr->next_catch_up);
    if (!gr->used || !gr->started || !over)
      continue;
    if (next_round(s, gr))
      continue;
    rpl_err err = finish_group(s, gr);
    if (err)
      return err;
  }
  return RPL_OK;
}

void abandon_groups(struct session *s, rpl_err why)
{
  for (size_t g = 0; g < MAX_GROUPS; g++)
    if (s->groups[g].used && !s->groups[g].gp && s->groups[g].made_by == CATALOG_MADE_BY_SCHEDULE)
      schedule_attempt_failed(s, &s->groups[g], why);
  gp_session_gone(s->a, s->agent); /* its agent thaws by itself (its watchdog), the others are told */
}

/* A checkpoint asked for on the configuration manager: a recovery-point group of that disk alone. */
static void queue_local_point_groups(struct session *s)
{
  for (size_t i = 0; i < s->nslots; i++) {
    struct disk *d = s->slots[i].disk;
    pthread_mutex_lock(&s->a->lock);
    bool want = d->want_point && d->last_committed > 0 && !d->unprotected_time && !d->want_unprotect;
    pthread_mutex_unlock(&s->a->lock);
    if (!want)
      continue;
    struct group *gr = new_group(s, CATALOG_MADE_BY_PAGE, true, -1);
    if (!gr)
      break; /* all busy: asked again on the next pass */
    gr->used = gr->local = true;
    gr->slots[gr->n++] = i;
    pthread_mutex_lock(&s->a->lock);
    d->want_point = false;
    pthread_mutex_unlock(&s->a->lock);
  }
}

/* Whether d can take a point now (synced, its lease held, no takeover or resync pending). L held. */
bool point_ready(const struct disk *d)
{
  return d->last_committed > 0 && !d->lease_waiting && !d->adopt_resync && d->adopt_seq == 0 &&
         d->state != CATALOG_DISK_ERROR && !d->cache_bypass && d->cache_wait_until_ms <= rpl_mono_ms() &&
         !d->unprotected_time && !d->want_unprotect;
}

/* The schedule's due points: when a disk of the agent is due for an application point (hooks),
 * one group of all its disks that can take one; then likewise for a crash point. A point is one
 * instant of all the server's disks (CYCLE_START's group tells the agent), and their schedules
 * move on together from it. */
static void queue_scheduled_groups(struct session *s)
{
  int64_t now = (int64_t)rpl_unix_ms();
  pthread_mutex_lock(&s->a->lock);
  for (int k = SCHEDULE_APP; k >= SCHEDULE_CRASH; k--) {
    bool any_due = false;
    for (size_t i = 0; i < s->nslots && !any_due; i++) {
      const struct disk *d = s->slots[i].disk;
      any_due = d->sched[k].due_ms && d->sched[k].due_ms <= now && d->sched[k].retry_ms <= now && !d->sched_busy &&
                point_ready(d) && !gp_disk_in_group(s->a, d->id);
    }
    struct group *gr = any_due ? new_group(s, CATALOG_MADE_BY_SCHEDULE, k == SCHEDULE_APP, k) : NULL;
    for (size_t i = 0; gr && i < s->nslots; i++) {
      struct disk *d = s->slots[i].disk;
      if (!d->sched[k].due_ms || d->sched_busy || !point_ready(d) || gp_disk_in_group(s->a, d->id))
        continue; /* (a consistency group's member: its points are the group's) */
      gr->used = gr->local = true;
      gr->slots[gr->n++] = i;
      d->sched_busy = true;
    }
  }
  pthread_mutex_unlock(&s->a->lock);
}

/* Whether start_cycle's err says the disk's cache cannot take a cycle now (full of cycles not
 * applied, or its changes go round the cache and the store does not take them yet): the disk then
 * waits (no group takes it meanwhile: point_ready), rather than the session ending. */
static bool cache_refuses(struct session *s, struct rx_slot *sl, rpl_err err)
{
  if (err != RPL_E_JOURNAL_FULL && err != RPL_E_CYCLE_TOO_BIG)
    return false;
  pthread_mutex_lock(&s->a->lock);
  uint64_t delay = cache_wait_more(sl->disk);
  unsigned waits = sl->disk->cache_waits;
  pthread_mutex_unlock(&s->a->lock);
  if (waits == 1)
    log_warn("disk %s: %s: its cycle waits (%" PRIu64 " s at first)", sl->disk->name,
             err == RPL_E_JOURNAL_FULL ? "the cache is full of cycles not applied yet"
                                       : "the storage does not take its resync straight now",
             delay / 1000);
  return true;
}

/* The next catch-up cycle of a group in its catch-up round (a plain cycle of one member). A member
 * whose cache refuses it (or refused one meanwhile) fails the group: no point is made now (its
 * schedule tries again), and the session's other cycles go on. */
static rpl_err start_catch_up(struct session *s, struct group *gr)
{
  size_t i = gr->next_catch_up;
  struct rx_slot *sl = &s->slots[gr->slots[i]];
  pthread_mutex_lock(&s->a->lock);
  bool ready = point_ready(sl->disk);
  pthread_mutex_unlock(&s->a->lock);
  rpl_err err = ready ? start_cycle(s, sl, PROTO_CYCLE_PLAIN, 1) : RPL_E_JOURNAL_FULL;
  if (!ready || cache_refuses(s, sl, err)) {
    gr->failed = true; /* over once the catch-up cycles started before have ended */
    gr->why = err == RPL_E_CYCLE_TOO_BIG ? err : RPL_E_CACHE_WAIT;
    return RPL_OK;
  }
  if (err)
    return err;
  gr->next_catch_up++;
  gr->cycles[i] = sl->cycle;
  return flush_out(s);
}

/* The point round of a group: every member's point cycle at once, so that the point is one moment
 * of all of them. */
static rpl_err start_point_round(struct session *s, struct group *gr)
{
  uint8_t kind = gr->hooks ? PROTO_CYCLE_RECOVERY_POINT : PROTO_CYCLE_POINT_NO_HOOKS;
  size_t queued = s->out.len;
  for (size_t i = 0; i < gr->n; i++) {
    struct rx_slot *sl = &s->slots[gr->slots[i]];
    rpl_err err = start_cycle(s, sl, kind, i == 0 ? (uint16_t)gr->n : 1);
    if (cache_refuses(s, sl, err)) {
      /* The point is one instant of all its disks: none is made now (its schedule tries again). */
      for (size_t k = 0; k < i; k++)
        drop_cycle(s, &s->slots[gr->slots[k]]);
      s->out.len = queued; /* their CYCLE_STARTs were not sent yet */
      gr->failed = true;
      gr->why = err == RPL_E_CYCLE_TOO_BIG ? err : RPL_E_CACHE_WAIT;
      return finish_group(s, gr);
    }
    if (err)
      return err;
    gr->cycles[i] = sl->cycle;
  }
  gr->rounds++;
  return flush_out(s);
}

/* Starts the cycles of the first pending group whose disks can all take one now: its catch-up
 * round (a plain cycle of each member, one after another), then its point rounds (all members'
 * point cycles at once, so that the point is one moment of all of them). *started says whether
 * a cycle was. */
static rpl_err start_ready_group(struct session *s, bool *started)
{
  *started = false;
  for (size_t g = 0; g < MAX_GROUPS; g++) {
    struct group *gr = &s->groups[g];
    if (gr->used && gr->started && gr->catching_up && !gr->failed && gr->next_catch_up < gr->n) {
      *started = true;
      return start_catch_up(s, gr);
    }
    if (!gr->used || gr->started)
      continue;
    bool ready = true;
    pthread_mutex_lock(&s->a->lock);
    for (size_t i = 0; i < gr->n; i++)
      ready = ready && point_ready(s->slots[gr->slots[i]].disk);
    pthread_mutex_unlock(&s->a->lock);
    if (!ready)
      continue; /* after the initial sync */
    if (gr->gp && gr->caught_up)
      continue; /* a group point's part: drive_group_points starts it */
    gr->started = *started = true;
    if (!gr->caught_up) {
      gr->catching_up = true;
      gr->next_catch_up = 0;
      return start_catch_up(s, gr);
    }
    return start_point_round(s, gr);
  }
  return RPL_OK;
}

/* Consistency-group point attempts with members of this agent: each becomes a group of this
 * session (its catch-up round first). A member this session does not serve fails the attempt. */
static void take_group_point_parts(struct session *s)
{
  struct gp_part part;
  while (gp_take_part(s->a, s->agent, &part)) {
    struct group *gr = new_group(s, part.made_by, part.hooks, -1);
    rpl_err why = gr ? RPL_OK : rpl_fail(RPL_E_LIMIT, "the session runs %d point groups already", MAX_GROUPS);
    for (size_t i = 0; i < part.n && !why; i++) {
      struct rx_slot *sl = slot_of(s, part.disks[i]);
      if (!sl)
        why = RPL_E_NOT_FOUND;
      else
        gr->slots[gr->n++] = (size_t)(sl - s->slots);
    }
    if (why) {
      for (size_t i = 0; i < part.n; i++)
        gp_member_ended(s->a, part.attempt, part.disks[i], 0, 0, 0, why);
      continue;
    }
    gr->used = gr->local = true;
    gr->gp = part.attempt;
  }
}

static rpl_err send_group_freeze(struct session *s, struct group *gr)
{
  uint8_t ids[PROTO_MAX_GROUP * PROTO_ID_SIZE];
  for (size_t i = 0; i < gr->n; i++)
    memcpy(ids + i * PROTO_ID_SIZE, s->slots[gr->slots[i]].disk->id, PROTO_ID_SIZE);
  struct proto_group_freeze m = {.attempt = gr->gp, .limit_ms = GP_FREEZE_LIMIT_MS, .hooks = gr->hooks,
                                 .count = (uint32_t)gr->n, .disk_ids = ids};
  rpl_err err = proto_encode_group_freeze(&s->out, &m);
  if (!err)
    gr->gp_freeze_sent = true;
  return err ? err : flush_out(s);
}

/* The parts of group points whose members caught up: wait for the others, freeze, flip, or give up
 * as the coordinator says. *started: nothing else may start now (a part waits or its round began). */
static rpl_err drive_group_points(struct session *s, bool *started)
{
  *started = false;
  s->gp_waiting = false;
  for (size_t g = 0; g < MAX_GROUPS; g++) {
    struct group *gr = &s->groups[g];
    if (!gr->used || !gr->gp || !gr->caught_up || gr->started)
      continue;
    rpl_err err = RPL_OK;
    switch (gp_poll(s->a, gr->gp, s->agent)) {
    case GP_WAIT:
      *started = s->gp_waiting = true;
      break;
    case GP_FREEZE:
      *started = s->gp_waiting = true;
      err = send_group_freeze(s, gr);
      break;
    case GP_FLIP:
      *started = true;
      gr->started = true;
      return start_point_round(s, gr);
    case GP_ABORT:
      gr->failed = true;
      gr->why = RPL_E_GROUP_POINT_FAILED;
      err = finish_group(s, gr);
      break;
    }
    if (err || *started)
      return err;
  }
  return RPL_OK;
}

/* The disk whose cycle is due, and of which kind: the first that needs a resync, else the one that
 * waited longest past the RPO target (any, under dirty pressure). NULL if none. */
static struct rx_slot *pick_due_disk(struct session *s, uint64_t now, uint8_t *kind)
{
  struct rx_slot *pick = NULL;
  uint64_t oldest = UINT64_MAX;
  *kind = PROTO_CYCLE_PLAIN;
  pthread_mutex_lock(&s->a->lock);
  for (size_t i = 0; i < s->nslots; i++) {
    struct disk *d = s->slots[i].disk;
    if (s->slots[i].cycle)
      continue; /* its cycle is open: one at a time, committed in order */
    if (d->state == CATALOG_DISK_ERROR && d->want_resync)
      d->state = CATALOG_DISK_RESYNC_REQUIRED; /* a resync asked for is the way out of an error */
    if (d->state == CATALOG_DISK_ERROR || d->lease_waiting || d->adopt_seq > 0 || d->cache_wait_until_ms > now ||
        d->unprotected_time || d->want_unprotect)
      continue; /* (the cache refused its cycle for now: it waits, whatever the backlog) */
    if (d->cache_bypass) {
      /* Its changes do not fit in the cache: a resync written straight into the store, once the
       * store is open and reachable and no apply worker holds the disk or has anything of it left. */
      if (!d->store || d->claimed || d->upload_waiting || d->last_applied != d->last_committed || d->snap_pending ||
          d->copy_due)
        continue;
      pick = &s->slots[i];
      *kind = PROTO_CYCLE_RESYNC;
      break;
    }
    if (d->last_committed == 0 && (!d->store || d->claimed) && now - d->attached_ms < DIRECT_WAIT_MS &&
        upload_gate_is_open(s->a->gate))
      continue; /* its page blob opens in a moment (or the worker that opened it lets go of it): the
                 * initial sync then goes straight into it */
    if (d->adopt_resync && !d->replay_refused && !d->want_resync && (s->agent_caps & PROTO_CAP_REPLAY)) {
      /* A takeover: the agent sends again what the storage misses, from the blocks it kept. */
      pick = &s->slots[i];
      *kind = PROTO_CYCLE_REPLAY;
      break;
    }
    if (d->last_committed == 0 || d->adopt_resync || d->want_resync) { /* initial sync, a takeover, or asked: a resync */
      d->m.resyncs[d->last_committed == 0 ? METRICS_RESYNC_INITIAL
                   : d->adopt_resync      ? METRICS_RESYNC_TAKEOVER
                                          : METRICS_RESYNC_REQUESTED]++;
      d->want_resync = false;
      pick = &s->slots[i];
      *kind = PROTO_CYCLE_RESYNC;
      break;
    }
    if ((now - d->last_start_ms >= s->a->rpo_ms || s->dirty_pressure) && d->last_start_ms < oldest) {
      oldest = d->last_start_ms;
      pick = &s->slots[i];
    }
  }
  pthread_mutex_unlock(&s->a->lock);
  return pick;
}

/* Whether the state directory's file system has room for more cycles (looked at every
 * STATE_FREE_CHECK_MS; said in the log when it changes, and in status). */
static bool state_has_room(struct appliance *a)
{
  uint64_t now = rpl_mono_ms();
  pthread_mutex_lock(&a->lock);
  bool look = now - a->state_free_checked_ms >= STATE_FREE_CHECK_MS || !a->state_free_checked_ms;
  uint64_t before = a->state_free_bytes;
  if (look)
    a->state_free_checked_ms = now;
  pthread_mutex_unlock(&a->lock);
  if (look) {
    struct statvfs v;
    uint64_t free_bytes = statvfs(a->state_dir, &v) == 0 ? (uint64_t)v.f_bavail * v.f_frsize : UINT64_MAX;
    pthread_mutex_lock(&a->lock);
    a->state_free_bytes = free_bytes;
    pthread_mutex_unlock(&a->lock);
    if ((free_bytes < STATE_FREE_MIN) != (before < STATE_FREE_MIN) || !before) {
      if (free_bytes < STATE_FREE_MIN)
        log_err("the state directory %s has %" PRIu64 " MiB free (at least %llu MiB wanted): no cycle starts until "
                "there is room; the agents keep their changes", a->state_dir, free_bytes >> 20, STATE_FREE_MIN >> 20);
      else if (before && before < STATE_FREE_MIN)
        log_notice("the state directory %s has room again (%" PRIu64 " MiB free): cycles resume", a->state_dir,
                   free_bytes >> 20);
    }
    return free_bytes >= STATE_FREE_MIN;
  }
  return before >= STATE_FREE_MIN;
}

/* Cycles the session may have open at once: run --agent-cycles for an agent that serves them
 * (PROTO_CAP_CYCLES), one for any other. */
static unsigned cycles_allowed(const struct session *s)
{
  return (s->agent_caps & PROTO_CAP_CYCLES) ? s->a->agent_cycles : 1;
}

/* Whether a point group is under way, or ready to start once the open cycles end: no more plain
 * cycles start meanwhile (a group starts only with none open, and would otherwise wait for ever
 * behind the disks' turns). A group waiting for a disk to be ready (its initial sync) does not hold
 * them. */
static bool group_holds_cycles(struct session *s)
{
  for (size_t g = 0; g < MAX_GROUPS; g++) {
    struct group *gr = &s->groups[g];
    if (!gr->used)
      continue;
    if (gr->started || gr->gp)
      return true;
    bool ready = true;
    pthread_mutex_lock(&s->a->lock);
    for (size_t i = 0; i < gr->n; i++)
      ready = ready && point_ready(s->slots[gr->slots[i]].disk);
    pthread_mutex_unlock(&s->a->lock);
    if (ready)
      return true;
  }
  return false;
}

/* Starts what is due: a pending recovery-point group (all its disks at once, with no other cycle
 * open), else the disk that waited longest past the RPO target, or one that never synced, while
 * fewer than cycles_allowed are open (one cycle of a disk at a time). */
rpl_err orchestrate(struct session *s)
{
  if (s->cycles_open >= cycles_allowed(s) || !state_has_room(s->a))
    return RPL_OK;
  queue_local_point_groups(s);
  queue_scheduled_groups(s);
  gp_schedule_check(s->a);
  take_group_point_parts(s);
  bool started;
  rpl_err err;
  if (s->cycles_open) {
    if (group_holds_cycles(s))
      return RPL_OK; /* it starts once the open cycles end */
  } else {
    err = drive_group_points(s, &started);
    if (err || started)
      return err;
    err = start_ready_group(s, &started);
    if (err || started)
      return err;
  }
  uint64_t now = rpl_mono_ms();
  uint8_t kind;
  struct rx_slot *pick = pick_due_disk(s, now, &kind);
  if (!pick)
    return RPL_OK;
  s->dirty_pressure = false;
  err = start_cycle(s, pick, kind, 1);
  if (cache_refuses(s, pick, err))
    return RPL_OK; /* nothing was asked of the agent */
  return err ? err : flush_out(s);
}

/* ---- the point schedule's bookkeeping (appliance.h) ---------------------------------------- */

static void set_due(struct appliance *a, struct disk *d, int k, int64_t now_ms)
{
  d->sched[k].due_ms = schedule_next_due(&a->schedule, (enum schedule_kind)k, d->sched[k].last_ms, now_ms);
  d->sched[k].miss_mark_ms = d->sched[k].due_ms;
}

void schedule_point_made(struct appliance *a, struct disk *d, bool app, int64_t id, int64_t now_ms)
{
  for (int k = 0; k < SCHEDULE_KINDS; k++) {
    if (k == SCHEDULE_APP && !app)
      continue; /* any point is a crash point; only one with the hooks an application point */
    d->sched[k].last_ms = now_ms;
    d->sched[k].last_id = id;
    d->sched[k].retry_ms = 0;
    set_due(a, d, k, now_ms);
  }
  d->sched_failure[0] = '\0';
}

struct newest_points {
  int64_t time_s[SCHEDULE_KINDS], id[SCHEDULE_KINDS];
};

static int newest_cb(const struct catalog_point *p, void *ctx)
{
  struct newest_points *np = ctx;
  for (int k = 0; k < SCHEDULE_KINDS; k++)
    if ((k == SCHEDULE_CRASH || p->kind == CATALOG_POINT_APPLICATION_CONSISTENT) && p->time >= np->time_s[k]) {
      np->time_s[k] = p->time;
      np->id[k] = p->id;
    }
  return 0;
}

void schedule_init_disk(struct appliance *a, struct disk *d, int64_t now_ms)
{
  struct newest_points np = {{0, 0}, {0, 0}};
  rpl_err e = catalog_point_foreach(a->cat, d->id, newest_cb, &np);
  if (e)
    log_warn("disk %s: cannot read its points for the schedule (%s): the next points are due now", d->name,
             rpl_strerror(e));
  for (int k = 0; k < SCHEDULE_KINDS; k++) {
    d->sched[k].last_ms = np.time_s[k] * 1000;
    d->sched[k].last_id = np.id[k];
    set_due(a, d, k, now_ms);
  }
}

void schedule_reset_disk(struct appliance *a, struct disk *d, int64_t now_ms)
{
  for (int k = 0; k < SCHEDULE_KINDS; k++) {
    d->sched[k].retry_ms = 0;
    set_due(a, d, k, now_ms);
  }
}

void schedule_tick(struct appliance *a, int64_t now_ms)
{
  for (struct disk *d = a->disks; d; d = d->next) {
    if (d->attached)
      continue; /* its session makes the points, and counts the attempts that fail */
    for (int k = 0; k < SCHEDULE_KINDS; k++) {
      uint64_t period = schedule_period_ms(&a->schedule, (enum schedule_kind)k);
      if (!period || !d->sched[k].due_ms || now_ms < d->sched[k].miss_mark_ms)
        continue;
      uint64_t periods = (uint64_t)(now_ms - d->sched[k].miss_mark_ms) / period + 1;
      d->sched[k].missed += periods;
      d->sched[k].miss_mark_ms += (int64_t)(periods * period);
      snprintf(d->sched_failure, sizeof d->sched_failure, "the agent was not connected when the %s point was due",
               schedule_kind_name((enum schedule_kind)k));
    }
  }
}
