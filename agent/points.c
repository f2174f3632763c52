/* points.c - recovery points: the checkpoint requests sent to the appliance and its answers, and a
 * point's group of cycles, read with the disks' filesystems frozen. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon.h"
#include "rpl_clock.h"
#include "rpl_log.h"

/* ---- requests ------------------------------------------------------------------------------ */

rpl_err points_queue_requests(struct agent *a)
{
  rpl_err err = RPL_OK;
  pthread_mutex_lock(&a->lock);
  for (size_t r = 0; r < MAX_POINT_REQUESTS && !err; r++) {
    struct point_req *q = &a->reqs[r];
    if (!q->used || q->sent || q->done)
      continue;
    uint8_t ids[AGENT_MAX_DISKS * PROTO_ID_SIZE];
    for (size_t i = 0; i < q->ndisks; i++)
      memcpy(ids + i * PROTO_ID_SIZE, a->st.disks[q->disks[i]].id, PROTO_ID_SIZE);
    struct proto_point_request m = {.request = q->id, .count = (uint32_t)q->ndisks, .disk_ids = ids};
    err = proto_encode_point_request(&a->out, &m);
    if (!err)
      q->sent = true;
  }
  pthread_mutex_unlock(&a->lock);
  return err;
}

rpl_err points_handle_reply(struct agent *a, const struct proto_frame *f)
{
  struct proto_point m;
  rpl_err err = proto_decode_point(f, &m);
  if (err)
    return err;
  pthread_mutex_lock(&a->lock);
  for (size_t r = 0; r < MAX_POINT_REQUESTS; r++) {
    struct point_req *q = &a->reqs[r];
    if (q->used && q->id == m.request && !q->done) {
      if (m.status == RPL_E_POINT_INCONSISTENT && ++q->tries < 3) {
        q->sent = false; /* the next cycles are plain again: ask once more */
        continue;
      }
      q->done = true;
      q->status = (rpl_err)m.status;
      q->consistency = m.consistency;
      snprintf(q->point_id, sizeof q->point_id, "%.*s", (int)m.point_id.len, (const char *)m.point_id.ptr);
      for (size_t i = 0; i < q->ndisks && !m.status; i++)
        snprintf(a->rt[q->disks[i]].last_point, sizeof a->rt[0].last_point, "%s", q->point_id);
    }
  }
  pthread_cond_broadcast(&a->changed);
  pthread_mutex_unlock(&a->lock);
  return RPL_OK;
}

/* The sent, unanswered request that covers the disk, or NULL. Called under a->lock. */
static struct point_req *request_for_disk(struct agent *a, size_t disk)
{
  for (size_t r = 0; r < MAX_POINT_REQUESTS; r++) {
    struct point_req *q = &a->reqs[r];
    if (!q->used || !q->sent || q->done)
      continue;
    for (size_t i = 0; i < q->ndisks; i++)
      if (q->disks[i] == disk)
        return q;
  }
  return NULL;
}

/* ---- a point's cycles ---------------------------------------------------------------------- */

/* The disks of one recovery point and each one's cycle. */
struct point_group {
  struct point_req req;      /* a copy: the table may change meanwhile */
  struct cycle_send *cs;
  uint64_t *gens, *resync_counts;
  uint64_t *writes_before;   /* the kernel's write counters at the flip */
  const char **devices;
};

/* How the group's filesystems were frozen for the read. */
struct freeze_outcome {
  bool any_fs;               /* the disks carry mounted filesystems */
  bool partial;              /* and some, spanning a disk outside the group, were not frozen */
  rpl_err frozen, thawed;    /* of finding and freezing them, of thawing them */
  uint64_t read_start_ms, read_end_ms;
  uint64_t freeze_ms;        /* how long the filesystems stayed frozen (0: none was) */
};

static void group_free(struct point_group *g)
{
  free(g->cs), free(g->gens), free(g->resync_counts), free(g->writes_before), free(g->devices);
}

/* The group is the request that covers `first`, else `first` alone. */
static rpl_err group_init(struct agent *a, size_t first, struct point_group *g)
{
  pthread_mutex_lock(&a->lock);
  struct point_req *q = request_for_disk(a, first);
  g->req = q ? *q : (struct point_req){.ndisks = 1, .disks = {first}};
  pthread_mutex_unlock(&a->lock);

  size_t n = g->req.ndisks;
  g->cs = calloc(n, sizeof *g->cs);
  g->gens = calloc(n, sizeof *g->gens), g->resync_counts = calloc(n, sizeof *g->resync_counts);
  g->writes_before = calloc(n, sizeof *g->writes_before);
  g->devices = calloc(n, sizeof *g->devices);
  if (!g->cs || !g->gens || !g->resync_counts || !g->writes_before || !g->devices) {
    group_free(g);
    return RPL_E_NOMEM;
  }
  for (size_t i = 0; i < n; i++) {
    g->cs[i] = (struct cycle_send){.a = a, .disk = g->req.disks[i]};
    proto_digest_init(&g->cs[i].digest);
    g->devices[i] = a->st.disks[g->req.disks[i]].device;
  }
  return RPL_OK;
}

/* The appliance sent CYCLE_START(RECOVERY_POINT) for the first disk of a group; the others follow
 * back to back. */
static rpl_err collect_cycle_starts(struct agent *a, struct point_group *g, size_t first, uint64_t first_cycle)
{
  size_t have = 0;
  for (size_t i = 0; i < g->req.ndisks; i++)
    if (g->req.disks[i] == first)
      g->cs[i].cycle = first_cycle, have++;
  while (have < g->req.ndisks) {
    struct proto_frame f;
    struct proto_cycle_start m;
    rpl_err err = conn_recv(a->conn, &f, CONN_IO_TIMEOUT_MS);
    if (err)
      return err;
    if (f.type == PROTO_HEARTBEAT)
      continue;
    if (f.type != PROTO_CYCLE_START || (err = proto_decode_cycle_start(&f, &m)) || m.kind != PROTO_CYCLE_RECOVERY_POINT)
      return err ? err : RPL_E_PROTO_UNEXPECTED;
    ssize_t d = agent_disk_index(a, m.disk_id);
    for (size_t i = 0; i < g->req.ndisks; i++)
      if ((ssize_t)g->req.disks[i] == d && !g->cs[i].cycle)
        g->cs[i].cycle = m.cycle, have++;
  }
  return RPL_OK;
}

static uint64_t write_counter(struct agent *a, const char *device)
{
  struct cbt_status s;
  if (cbt_status_get(a->cbt, device, &s))
    return UINT64_MAX;
  return s.writes + s.discards + s.write_zeroes + s.secure_erases;
}

/* Freeze all, flip all, read all, thaw. */
static rpl_err read_group_frozen(struct agent *a, struct point_group *g, struct freeze_outcome *fo)
{
  struct freeze_set *fs = NULL;
  fo->frozen = freeze_find(g->devices, g->req.ndisks, &fs);
  fo->any_fs = !fo->frozen && freeze_count(fs) > 0;
  fo->partial = !fo->frozen && freeze_partial_count(fs) > 0;
  if (fo->any_fs)
    fo->frozen = freeze_begin(fs, &a->freeze);
  fo->read_start_ms = rpl_mono_ms();
  for (size_t i = 0; i < g->req.ndisks; i++)
    g->writes_before[i] = write_counter(a, g->devices[i]);
  rpl_err err = RPL_OK;
  for (size_t i = 0; i < g->req.ndisks && !err; i++)
    err = cycle_send_body(a, &g->cs[i], false, &g->gens[i], &g->resync_counts[i]);
  fo->thawed = RPL_OK;
  if (fo->any_fs && !fo->frozen) {
    fo->thawed = freeze_end(fs);
    fo->freeze_ms = freeze_duration_ms(fs);
  }
  fo->read_end_ms = rpl_mono_ms();
  freeze_free(fs);
  return err;
}

/* Each disk's consistency: frozen filesystems within the limit; without a filesystem, no write
 * at all between the flip and the end of the read (the kernel's counters did not move). A
 * filesystem left unfrozen because it spans a disk outside the group (freeze_find logged which)
 * is written to during the read: the same no-write test then decides, frozen filesystems or not. */
static uint8_t disk_consistency(const struct point_group *g, size_t i, const struct freeze_outcome *fo,
                                uint64_t writes_after)
{
  if (g->resync_counts[i])
    return PROTO_FUZZY; /* a resync read is never a point */
  bool no_writes = g->writes_before[i] != UINT64_MAX && writes_after == g->writes_before[i];
  if (fo->any_fs && !fo->frozen && !fo->thawed && (!fo->partial || no_writes))
    return PROTO_FS_CONSISTENT;
  if (!fo->any_fs && no_writes)
    return PROTO_CRASH_CONSISTENT;
  return PROTO_FUZZY;
}

/* Ends every cycle of the group with its disk's consistency. */
static rpl_err end_group_cycles(struct agent *a, struct point_group *g, const struct freeze_outcome *fo)
{
  rpl_err err = RPL_OK;
  for (size_t i = 0; i < g->req.ndisks && !err; i++) {
    uint64_t after = write_counter(a, g->devices[i]);
    err = cycle_send_end(a, &g->cs[i], disk_consistency(g, i, fo, after));
  }
  return err;
}

static rpl_err await_group_acks(struct agent *a, struct point_group *g, const struct freeze_outcome *fo)
{
  rpl_err err = RPL_OK;
  for (size_t i = 0; i < g->req.ndisks && !err; i++) {
    bool acked;
    err = cycle_wait_ack(a, g->cs[i].disk, g->cs[i].cycle, &acked);
    log_debug("%s: cycle %" PRIu64 ": %s %" PRIu64 " ms after the end was sent", g->devices[i], g->cs[i].cycle,
              acked ? "ACK" : "no ACK", rpl_mono_ms() - fo->read_end_ms);
    if (!err && acked)
      err = cycle_after_ack(a, &g->cs[i], g->gens[i], g->resync_counts[i], g->resync_counts[i] != 0);
  }
  return err;
}

/* Each frozen disk of the group keeps how long its filesystems were frozen (status shows them). */
static void record_freeze(struct agent *a, const struct point_group *g, const struct freeze_outcome *fo)
{
  if (!fo->any_fs || fo->frozen)
    return; /* nothing was frozen */
  uint32_t ms = fo->freeze_ms > UINT32_MAX ? UINT32_MAX : (uint32_t)fo->freeze_ms;
  pthread_mutex_lock(&a->lock);
  for (size_t i = 0; i < g->req.ndisks; i++) {
    struct disk_rt *rt = &a->rt[g->req.disks[i]];
    rt->freezes.ms[rt->freezes.next] = ms;
    rt->freezes.next = (rt->freezes.next + 1) % FREEZE_KEPT;
    if (rt->freezes.n < FREEZE_KEPT)
      rt->freezes.n++;
    rt->freezes.count++;
  }
  pthread_mutex_unlock(&a->lock);
}

rpl_err points_run_cycles(struct agent *a, size_t first, uint64_t first_cycle)
{
  struct point_group g;
  rpl_err err = group_init(a, first, &g);
  if (err)
    return err;
  struct freeze_outcome fo = {0};
  err = collect_cycle_starts(a, &g, first, first_cycle);
  if (!err)
    err = read_group_frozen(a, &g, &fo);
  record_freeze(a, &g, &fo);
  if (!err) {
    err = end_group_cycles(a, &g, &fo);
    log_debug("recovery point of %zu disk(s): read and sent in %" PRIu64 " ms (the filesystems frozen meanwhile: %s)",
              g.req.ndisks, fo.read_end_ms - fo.read_start_ms, fo.any_fs && !fo.frozen ? "yes" : "no");
    if (!err)
      err = await_group_acks(a, &g, &fo);
    if (fo.frozen == RPL_E_FREEZE || fo.thawed)
      log_warn("recovery point without filesystem consistency: %s", rpl_strerror(fo.frozen ? fo.frozen : fo.thawed));
  }
  group_free(&g);
  return err;
}
