/* orchestrator.c - when a session's cycles and recovery points start (RPO target, backlog, initial
 * sync, resync asked for, point groups) and how a group's point is recorded. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "events.h"
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

rpl_err on_point_request(struct session *s, const struct proto_frame *f)
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
rpl_err finish_groups(struct session *s)
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
        for (size_t i = 0; i < gr->n; i++) {
          struct event ev = {.type = EVENT_POINT, .cycle = gr->cycles[i], .kind = PROTO_CYCLE_RECOVERY_POINT};
          memcpy(ev.disk_id, s->slots[gr->slots[i]].disk->id, PROTO_ID_SIZE);
          snprintf(ev.point_id, sizeof ev.point_id, "%s", point_id);
          events_emit(&ev);
        }
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

/* A checkpoint asked for on the configuration manager: a recovery-point group of that disk alone. */
static void queue_local_point_groups(struct session *s)
{
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
}

/* Starts the cycles of the first pending group whose disks can all take one now (all at once, so
 * that the point is one moment of all of them); *started says whether one was. */
static rpl_err start_ready_group(struct session *s, bool *started)
{
  *started = false;
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
    *started = true;
    return flush_out(s);
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
    if (d->state == CATALOG_DISK_ERROR || d->lease_waiting || d->adopt_seq > 0)
      continue;
    if (d->last_committed == 0 && !d->store && now - d->attached_ms < DIRECT_WAIT_MS &&
        upload_gate_is_open(s->a->gate))
      continue; /* its page blob opens in a moment: the initial sync then goes straight into it */
    if (d->last_committed == 0 || d->adopt_resync || d->want_resync) { /* initial sync, a takeover, or asked: a resync */
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

/* Starts what is due: a pending recovery-point group (all its disks at once), else the disk that
 * waited longest past the RPO target, or one that never synced. */
rpl_err orchestrate(struct session *s)
{
  if (s->cycles_open)
    return RPL_OK;
  queue_local_point_groups(s);
  bool started;
  rpl_err err = start_ready_group(s, &started);
  if (err || started)
    return err;
  uint64_t now = rpl_mono_ms();
  uint8_t kind;
  struct rx_slot *pick = pick_due_disk(s, now, &kind);
  if (!pick)
    return RPL_OK;
  s->dirty_pressure = false;
  err = start_cycle(s, pick, kind);
  if (err == RPL_E_JOURNAL_FULL) {
    pick->disk->last_start_ms = now; /* back off one RPO period while the applier drains */
    log_warn("agent %s: cache full, cycle postponed", s->agent_text);
    return RPL_OK;
  }
  return err ? err : flush_out(s);
}
