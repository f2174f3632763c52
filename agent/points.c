/* points.c - recovery points: the checkpoint requests sent to the appliance and its answers, and a
 * point's group of cycles, read with the disks' filesystems frozen. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon.h"
#include "rpl_clock.h"
#include "rpl_log.h"

#define KEPT_EXTENTS_MAX (1u << 20) /* extents of a point's remainder kept to check it was not rewritten */

/* ---- requests ------------------------------------------------------------------------------ */

rpl_err points_queue_requests(struct agent *a)
{
  rpl_err err = RPL_OK;
  pthread_mutex_lock(&a->lock);
  for (size_t r = 0; r < MAX_POINT_REQUESTS && !err; r++) {
    struct point_req *q = &a->reqs[r];
    if (!q->used || q->sent || q->done)
      continue;
    if (q->group[0] && !a->peer_group_point) { /* an older appliance would end the session on the frame */
      q->done = true;
      q->status = RPL_E_GROUP_APPLIANCE;
      pthread_cond_broadcast(&a->changed);
      continue;
    }
    if (q->group[0]) {
      struct proto_group_point_request m = {.request = q->id,
                                            .name = {(const uint8_t *)q->group, (uint32_t)strlen(q->group)}};
      if ((err = proto_encode_group_point_request(&a->out, &m)) == RPL_OK)
        q->sent = true;
      continue;
    }
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
  bool hooks;                /* the appliance asked for the application hooks */
  struct cycle_send *cs;
  struct cycle_plan *plans;
  struct kept_set *kept;     /* what each disk's point read (its remainder) */
  uint8_t *fs_state;         /* per disk: FS_NONE, FS_FROZEN (all its filesystems are frozen), FS_PARTIAL */
  uint64_t *gens, *resync_counts;
  uint64_t *writes_before;   /* the kernel's write counters at the flip */
  const char **devices;
};

/* How the group's filesystems were frozen for the point. */
struct freeze_outcome {
  char note[384];            /* what made the point less than filesystem-consistent, for status */
  bool any_fs;               /* the disks carry mounted filesystems */
  bool partial;              /* and some, spanning a disk outside the group, were not frozen */
  bool hooks;                /* the application hooks ran around the freeze */
  bool thawed_first;         /* the remainder was read after the thaw (and was not rewritten meanwhile) */
  rpl_err frozen, thawed;    /* of finding and freezing them, of thawing them */
  uint64_t read_start_ms, read_end_ms;
  uint64_t freeze_ms;        /* how long the filesystems stayed frozen, all freezes of the point (0: none) */
};

static void group_free(struct point_group *g)
{
  for (size_t i = 0; g->kept && i < g->req.ndisks; i++)
    cbt_extents_free(&g->kept[i].set);
  for (size_t i = 0; g->cs && i < g->req.ndisks; i++)
    cycle_send_release(&g->cs[i]);
  free(g->cs), free(g->plans), free(g->kept), free(g->gens), free(g->resync_counts), free(g->writes_before);
  free(g->fs_state);
  free(g->devices);
}

enum { FS_NONE = 0, FS_FROZEN = 1, FS_PARTIAL = 2 };
#define MEMBER_UNKNOWN SIZE_MAX /* a member of the appliance's group whose CYCLE_START has not come yet */

static void member_init(struct agent *a, struct point_group *g, size_t i, size_t disk)
{
  g->req.disks[i] = disk;
  g->cs[i] = (struct cycle_send){.a = a, .disk = disk};
  proto_digest_init(&g->cs[i].digest);
  g->devices[i] = a->st.disks[disk].device;
}

/* The group is the request that covers `first`; else, when the appliance made it (the schedule),
 * `first` and the group_size - 1 disks whose CYCLE_STARTs follow; else `first` alone. */
static rpl_err group_init(struct agent *a, size_t first, uint16_t group_size, struct point_group *g)
{
  pthread_mutex_lock(&a->lock);
  struct point_req *q = request_for_disk(a, first);
  g->req = q ? *q : (struct point_req){.ndisks = 1, .disks = {first}};
  pthread_mutex_unlock(&a->lock);
  if (!q && group_size > 1) {
    if (group_size > a->st.ndisks)
      return RPL_E_PROTO_FIELD; /* more disks than this agent has */
    g->req.ndisks = group_size;
    for (size_t i = 1; i < group_size; i++)
      g->req.disks[i] = MEMBER_UNKNOWN;
  } else if (group_size != g->req.ndisks) {
    return RPL_E_PROTO_FIELD;
  }

  size_t n = g->req.ndisks;
  g->cs = calloc(n, sizeof *g->cs);
  g->gens = calloc(n, sizeof *g->gens), g->resync_counts = calloc(n, sizeof *g->resync_counts);
  g->writes_before = calloc(n, sizeof *g->writes_before);
  g->devices = calloc(n, sizeof *g->devices);
  g->plans = calloc(n, sizeof *g->plans), g->kept = calloc(n, sizeof *g->kept);
  g->fs_state = calloc(n, sizeof *g->fs_state);
  if (!g->cs || !g->gens || !g->resync_counts || !g->writes_before || !g->devices || !g->plans || !g->kept ||
      !g->fs_state) {
    group_free(g);
    return RPL_E_NOMEM;
  }
  for (size_t i = 0; i < n; i++) {
    if (g->req.disks[i] != MEMBER_UNKNOWN)
      member_init(a, g, i, g->req.disks[i]);
    cbt_extents_init(&g->kept[i].set, KEPT_EXTENTS_MAX, 0);
  }
  return RPL_OK;
}

/* The next CYCLE_START of a point's group: one the session thread read already (queued while a plain
 * cycle's thread was still committing its ACK) first, in order; else off the connection, handling
 * what else comes meanwhile. */
static rpl_err next_cycle_start(struct agent *a, uint8_t kind, struct proto_cycle_start *m)
{
  if (a->nstarts) {
    *m = a->starts[0];
    memmove(&a->starts[0], &a->starts[1], --a->nstarts * sizeof a->starts[0]);
    return m->kind == kind ? RPL_OK : RPL_E_PROTO_UNEXPECTED;
  }
  for (;;) {
    struct proto_frame f;
    rpl_err err = conn_recv(a->conn, &f, CONN_IO_TIMEOUT_MS);
    if (err)
      return err;
    if (f.type == PROTO_HEARTBEAT)
      continue;
    if (f.type == PROTO_POINT) /* the answer to an earlier request */
      err = points_handle_reply(a, &f);
    else if (f.type == PROTO_UNPROTECT_REQUEST) /* done once the point's cycles end */
      err = session_unprotect_request(a, &f);
    else if (f.type == PROTO_GROUP_THAW) /* an earlier attempt given up */
      err = group_thaw_on_frame(a, &f);
    else if (f.type == PROTO_STORED || f.type == PROTO_MEMBERS)
      err = f.type == PROTO_STORED ? session_stored(a, &f) : session_members(a, &f);
    else if (f.type != PROTO_CYCLE_START || (err = proto_decode_cycle_start(&f, m)) || m->kind != kind)
      return err ? err : RPL_E_PROTO_UNEXPECTED;
    else
      return RPL_OK;
    if (err)
      return err;
  }
}

/* The appliance sent CYCLE_START(RECOVERY_POINT) for the first disk of a group; the others follow
 * back to back. */
static rpl_err collect_cycle_starts(struct agent *a, struct point_group *g, size_t first, uint64_t first_cycle,
                                    uint8_t kind)
{
  size_t have = 0;
  for (size_t i = 0; i < g->req.ndisks; i++)
    if (g->req.disks[i] == first)
      g->cs[i].cycle = first_cycle, have++;
  while (have < g->req.ndisks) {
    struct proto_cycle_start m;
    rpl_err err = next_cycle_start(a, kind, &m);
    if (err)
      return err;
    ssize_t d = agent_disk_index(a, m.disk_id);
    size_t slot = SIZE_MAX;
    for (size_t i = 0; i < g->req.ndisks && slot == SIZE_MAX && d >= 0; i++)
      if (g->req.disks[i] == (size_t)d && !g->cs[i].cycle)
        slot = i;
    for (size_t i = 0; i < g->req.ndisks && slot == SIZE_MAX && d >= 0; i++)
      if (g->req.disks[i] == MEMBER_UNKNOWN) {
        member_init(a, g, i, (size_t)d);
        slot = i;
      }
    if (slot == SIZE_MAX || m.group != 1)
      return RPL_E_PROTO_UNEXPECTED; /* a disk outside the group, or twice in it */
    g->cs[slot].cycle = m.cycle, have++;
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

/* ---- pre-copy: how much may be dirty when the filesystems freeze ---------------------------- */

/* The dirty bytes a point reads after its flip: what the disk reads in PRECOPY_TARGET_MS at the
 * rate its last cycles were read, within [PRECOPY_MIN, PRECOPY_MAX]. Past it, the point's round
 * is a catch-up (read fuzzy, answered PRECOPY) and the appliance runs another. */
#define PRECOPY_TARGET_MS 50
#define PRECOPY_MIN (4ull << 20)
#define PRECOPY_MAX (256ull << 20)
#define PRECOPY_ROUNDS_MAX 3 /* then the point freezes whatever is dirty */
/* A disk whose filesystem rewrites right after a thaw what the freeze flushed (ext4's journal
 * under fsync, say) makes a thaw-first read miss, and a miss costs a second freeze; such a disk's
 * next points read their (small) remainder frozen, trying the thaw-first read again every so often. */
#define THAW_FIRST_RETRY 8

static uint64_t precopy_bound(const struct disk_rt *rt)
{
  uint64_t b = rt->read_bytes_per_s ? rt->read_bytes_per_s / 1000 * PRECOPY_TARGET_MS : 16ull << 20;
  return b < PRECOPY_MIN ? PRECOPY_MIN : b > PRECOPY_MAX ? PRECOPY_MAX : b;
}

/* Whether the group's round should catch up first: some disk has more dirty than its bound, and
 * the point can be exact at all (no resync due, eBPF tracking). */
static bool needs_catch_up(struct agent *a, const struct point_group *g)
{
  bool over = false;
  for (size_t i = 0; i < g->req.ndisks; i++) {
    struct cbt_status st;
    const struct disk_rt *rt = &a->rt[g->req.disks[i]];
    if (cbt_status_get(a->cbt, g->devices[i], &st) || st.resync_required || st.fallback)
      return false; /* this round is fuzzy whatever it does */
    if (rt->catch_up_rounds >= PRECOPY_ROUNDS_MAX)
      return false;
    if (st.dirty_bytes > precopy_bound(rt)) {
      log_info("%s: %" PRIu64 " MiB dirty, more than the %" PRIu64 " MiB a point reads after its flip: catching up "
               "first", g->devices[i], st.dirty_bytes >> 20, precopy_bound(rt) >> 20);
      over = true;
    }
  }
  return over;
}

/* The group's disks read as a catch-up, fuzzy; ended PRECOPY. */
static rpl_err catch_up_round(struct agent *a, struct point_group *g)
{
  rpl_err err = RPL_OK;
  for (size_t i = 0; i < g->req.ndisks && !err; i++)
    err = cycle_send_body(a, &g->cs[i], false, &g->gens[i], &g->resync_counts[i]);
  for (size_t i = 0; i < g->req.ndisks && !err; i++)
    err = cycle_send_end(a, &g->cs[i], PROTO_PRECOPY);
  pthread_mutex_lock(&a->lock);
  for (size_t i = 0; i < g->req.ndisks; i++)
    a->rt[g->req.disks[i]].catch_up_rounds++;
  pthread_mutex_unlock(&a->lock);
  return err;
}

/* ---- the point: freeze, flip, thaw, then read --------------------------------------------- */

static rpl_err flip_all(struct agent *a, struct point_group *g)
{
  rpl_err err = RPL_OK;
  for (size_t i = 0; i < g->req.ndisks && !err; i++) {
    g->writes_before[i] = write_counter(a, g->devices[i]);
    err = cycle_flip(a, &g->cs[i], false, &g->plans[i]);
    g->gens[i] = g->plans[i].gen;
    g->resync_counts[i] = g->plans[i].resync_count;
  }
  return err;
}

/* Reads every disk's frozen set, keeping its extents (what disk_rewritten checks). */
static rpl_err read_all(struct agent *a, struct point_group *g)
{
  rpl_err err = RPL_OK;
  for (size_t i = 0; i < g->req.ndisks && !err; i++) {
    cbt_extents_clear(&g->kept[i].set);
    g->kept[i].incomplete = false;
    err = cycle_read(a, &g->cs[i], &g->plans[i], &g->kept[i]);
  }
  return err;
}

/* Whether some of what disk i read since its flip was written meanwhile (or cannot be shown not
 * to have been): then what was read is not the disk at the flip. */
static bool disk_rewritten(struct agent *a, const struct point_group *g, size_t i)
{
  if (g->writes_before[i] != UINT64_MAX && write_counter(a, g->devices[i]) == g->writes_before[i])
    return false; /* not one write since the flip */
  bool hit = true;
  return g->kept[i].incomplete || cbt_rewritten(a->cbt, g->devices[i], &g->kept[i].set, &hit) || hit;
}

/* After a read that followed the thaw: whether any disk's remainder was written meanwhile. */
static bool remainder_rewritten(struct agent *a, struct point_group *g)
{
  for (size_t i = 0; i < g->req.ndisks; i++)
    if (disk_rewritten(a, g, i))
      return true;
  return false;
}

/* Each disk's filesystems: none; all frozen with the group's (also one spanning several disks of
 * the group); or, when the group has a filesystem spanning a disk outside it, unknown which disk
 * carries that one: every disk with a filesystem then counts as partial. */
static void find_disk_filesystems(struct point_group *g, bool group_partial)
{
  for (size_t i = 0; i < g->req.ndisks; i++) {
    struct freeze_set *one = NULL;
    if (freeze_find(&g->devices[i], 1, &one)) {
      g->fs_state[i] = FS_PARTIAL; /* unknown: only a read no write touched counts */
      continue;
    }
    bool any = freeze_count(one) + freeze_partial_count(one) > 0;
    g->fs_state[i] = !any ? FS_NONE : group_partial ? FS_PARTIAL : FS_FROZEN;
    freeze_free(one);
  }
}

/* One freeze: the filesystems frozen around the flip of every disk, and, when frozen_read, around
 * the read too. */
static rpl_err frozen_flip(struct agent *a, struct point_group *g, struct freeze_set *fs,
                           const struct freeze_options *fopt, struct freeze_outcome *fo, bool frozen_read)
{
  fo->frozen = freeze_begin(fs, fopt);
  rpl_err err = flip_all(a, g);
  if (!err && frozen_read)
    err = read_all(a, g);
  if (!fo->frozen) {
    fo->thawed = freeze_end(fs);
    fo->freeze_ms += freeze_duration_ms(fs);
  }
  return err;
}

/* Whether to read after the thaw this time (see THAW_FIRST_RETRY). */
static bool try_thaw_first(struct agent *a, const struct point_group *g)
{
  bool yes = true;
  pthread_mutex_lock(&a->lock);
  for (size_t i = 0; i < g->req.ndisks; i++) {
    const struct disk_rt *rt = &a->rt[g->req.disks[i]];
    if (rt->thaw_first_missed && rt->frozen_reads < THAW_FIRST_RETRY)
      yes = false;
  }
  pthread_mutex_unlock(&a->lock);
  return yes;
}

static void note_thaw_first(struct agent *a, const struct point_group *g, bool tried, bool missed)
{
  pthread_mutex_lock(&a->lock);
  for (size_t i = 0; i < g->req.ndisks; i++) {
    struct disk_rt *rt = &a->rt[g->req.disks[i]];
    if (tried) {
      rt->thaw_first_missed = missed;
      rt->frozen_reads = 0;
    } else {
      rt->frozen_reads++;
    }
  }
  pthread_mutex_unlock(&a->lock);
}

/* A consistency group's point (group_freeze.c): the filesystems were frozen at GROUP_FREEZE and held
 * while the other servers froze theirs; flip every disk, thaw, then read the remainder, as a single
 * point does. But a second freeze after a thaw-first miss (read_group_point) could not be one
 * instant with the other members: a miss makes this member's cycles fuzzy (the appliance gives the
 * attempt up and tries once more), and like a single point the disk then reads its next points'
 * remainder frozen (THAW_FIRST_RETRY). The freeze lasted from GROUP_FREEZE to the thaw. */
static rpl_err read_held_point(struct agent *a, struct point_group *g, struct freeze_outcome *fo)
{
  struct held_freeze *h = &a->held;
  fo->hooks = h->hooks && (a->freeze.pre_hook || a->freeze.post_hook);
  fo->any_fs = freeze_count(h->fs) > 0;
  fo->partial = freeze_partial_count(h->fs) > 0;
  if (fo->partial)
    snprintf(fo->note, sizeof fo->note, "%s is not frozen: %s (the point is crash-consistent only when nothing "
             "was written while it was read)", freeze_partial_mountpoint(h->fs, 0), freeze_partial_reason(h->fs, 0));
  find_disk_filesystems(g, fo->partial);
  fo->read_start_ms = rpl_mono_ms();
  bool thaw_first = fo->any_fs && !a->no_precopy && try_thaw_first(a, g);
  rpl_err err = flip_all(a, g);
  if (!err && !thaw_first)
    err = read_all(a, g);
  if (h->frozen) {
    fo->thawed = freeze_end(h->fs);
    fo->freeze_ms = freeze_duration_ms(h->fs); /* first FIFREEZE (at GROUP_FREEZE) to the thaw */
    if (!fo->freeze_ms)
      fo->freeze_ms = 1; /* (a hook alone, nothing frozen: still a freeze of the group) */
  }
  if (!err && thaw_first) {
    err = read_all(a, g);
    bool missed = !err && !fo->thawed && remainder_rewritten(a, g);
    if (!err && !fo->thawed)
      note_thaw_first(a, g, true, missed);
    fo->thawed_first = !err && !fo->thawed && !missed;
    if (missed) {
      snprintf(fo->note, sizeof fo->note, "blocks read after the thaw were written meanwhile: the group point is "
               "not offered (this disk's next points read their remainder frozen)");
      fo->thawed = RPL_E_POINT_INCONSISTENT; /* its cycles end fuzzy */
    }
  } else if (!err && fo->any_fs && !fo->thawed) {
    note_thaw_first(a, g, false, false);
  }
  fo->read_end_ms = rpl_mono_ms();
  if (fo->any_fs && fo->thawed && !fo->note[0]) {
    char why[RPL_DETAIL_MAX + 128];
    snprintf(fo->note, sizeof fo->note, "the filesystems were not frozen within the limit: %s",
             rpl_describe(fo->thawed, why, sizeof why));
  }
  log_info("group point attempt %" PRIu64 ": flipped and thawed, frozen %" PRIu64 " ms", h->attempt, fo->freeze_ms);
  freeze_free(h->fs);
  memset(h, 0, sizeof *h);
  return err;
}

/* Freeze, flip all, thaw, read the remainder; when some of it was written after the thaw, once
 * more with the (small) remainder read while frozen. A disk that missed that way lately has its
 * remainder read frozen at once (one freeze, not two). Disks without a filesystem: flip and read. */
static rpl_err read_group_point(struct agent *a, struct point_group *g, struct freeze_outcome *fo)
{
  if (group_freeze_covers(a, g->req.disks, g->req.ndisks))
    return read_held_point(a, g, fo);
  group_freeze_release(a, "a point of other disks began"); /* a stale hold: never kept across another point */
  struct freeze_set *fs = NULL;
  struct freeze_options fopt = a->freeze;
  if (!g->hooks)
    fopt.pre_hook = fopt.post_hook = NULL;
  fo->hooks = fopt.pre_hook || fopt.post_hook;
  fo->frozen = freeze_find(g->devices, g->req.ndisks, &fs);
  fo->any_fs = !fo->frozen && freeze_count(fs) > 0;
  fo->partial = !fo->frozen && freeze_partial_count(fs) > 0;
  if (fo->partial)
    snprintf(fo->note, sizeof fo->note, "%s is not frozen: %s (the point is crash-consistent only when nothing "
             "was written while it was read)", freeze_partial_mountpoint(fs, 0), freeze_partial_reason(fs, 0));
  find_disk_filesystems(g, fo->partial || fo->frozen);
  fo->read_start_ms = rpl_mono_ms();
  rpl_err err;
  if (!fo->any_fs) {
    err = flip_all(a, g);
    if (!err)
      err = read_all(a, g);
  } else if (a->no_precopy || !try_thaw_first(a, g)) {
    err = frozen_flip(a, g, fs, &fopt, fo, true);
    note_thaw_first(a, g, false, false);
  } else {
    err = frozen_flip(a, g, fs, &fopt, fo, false);
    if (!err)
      err = read_all(a, g);
    fo->thawed_first = !err && !fo->frozen && !fo->thawed && !remainder_rewritten(a, g);
    if (!err && !fo->frozen && !fo->thawed)
      note_thaw_first(a, g, true, !fo->thawed_first);
    if (!err && !fo->frozen && !fo->thawed && !fo->thawed_first) {
      log_info("recovery point of %zu disk(s): blocks read after the thaw were written meanwhile: flipping again, "
               "the remainder read frozen", g->req.ndisks);
      err = frozen_flip(a, g, fs, &fopt, fo, true);
    }
  }
  fo->read_end_ms = rpl_mono_ms();
  if (fo->any_fs && (fo->frozen || fo->thawed) && !fo->note[0]) {
    char why[RPL_DETAIL_MAX + 128];
    snprintf(fo->note, sizeof fo->note, "the filesystems were not frozen within the limit: %s",
             rpl_describe(fo->frozen ? fo->frozen : fo->thawed, why, sizeof why));
  }
  freeze_free(fs);
  return err;
}

/* Each disk's consistency. All its filesystems frozen within the limit (its remainder not
 * rewritten after the thaw, or read frozen): filesystem- or application-consistent. Otherwise
 * (no filesystem, or one spanning a disk outside the group, which is not frozen) the data read is
 * the disk at its flip only if none of it was written between the flip and the read: then
 * crash-consistent, else fuzzy. */
static uint8_t disk_consistency(struct agent *a, const struct point_group *g, size_t i, const struct freeze_outcome *fo)
{
  if (g->resync_counts[i] || g->plans[i].full)
    return PROTO_FUZZY; /* a resync read is never a point */
  if (g->fs_state[i] == FS_FROZEN && fo->any_fs && !fo->frozen && !fo->thawed)
    return fo->hooks ? PROTO_APP_CONSISTENT : PROTO_FS_CONSISTENT;
  if (g->fs_state[i] == FS_FROZEN)
    return PROTO_FUZZY; /* its filesystems were written while it was read */
  return disk_rewritten(a, g, i) ? PROTO_FUZZY : PROTO_CRASH_CONSISTENT;
}

static uint32_t freeze_ms_of(const struct freeze_outcome *fo)
{
  return fo->freeze_ms > UINT32_MAX ? UINT32_MAX : (uint32_t)fo->freeze_ms;
}

/* Ends every cycle of the group with its disk's consistency. */
static rpl_err end_group_cycles(struct agent *a, struct point_group *g, const struct freeze_outcome *fo)
{
  rpl_err err = RPL_OK;
  for (size_t i = 0; i < g->req.ndisks && !err; i++) {
    g->cs[i].end.freeze_ms = freeze_ms_of(fo);
    err = cycle_send_end(a, &g->cs[i], disk_consistency(a, g, i, fo));
  }
  return err;
}

static rpl_err await_group_acks(struct agent *a, struct point_group *g, const struct freeze_outcome *fo)
{
  rpl_err err = RPL_OK;
  for (size_t i = 0; i < g->req.ndisks && !err; i++) {
    bool acked;
    err = cycle_wait_ack(&g->cs[i], &acked);
    log_debug("%s: cycle %" PRIu64 ": %s %" PRIu64 " ms after the end was sent", g->devices[i], g->cs[i].cycle,
              acked ? "ACK" : "no ACK", rpl_mono_ms() - fo->read_end_ms);
    if (!err && acked)
      err = cycle_after_ack(a, &g->cs[i], g->gens[i], g->resync_counts[i], g->resync_counts[i] != 0);
  }
  return err;
}

/* Each frozen disk of the group keeps how long its filesystems were frozen (status shows them),
 * and starts counting its catch-up rounds again. */
static void record_freeze(struct agent *a, const struct point_group *g, const struct freeze_outcome *fo)
{
  uint32_t ms = freeze_ms_of(fo);
  pthread_mutex_lock(&a->lock);
  for (size_t i = 0; i < g->req.ndisks; i++) {
    struct disk_rt *rt = &a->rt[g->req.disks[i]];
    rt->catch_up_rounds = 0;
    snprintf(rt->point_note, sizeof rt->point_note, "%s", fo->note);
    if (!fo->any_fs || !fo->freeze_ms)
      continue; /* nothing was frozen */
    rt->freezes.ms[rt->freezes.next] = ms;
    rt->freezes.next = (rt->freezes.next + 1) % FREEZE_KEPT;
    if (rt->freezes.n < FREEZE_KEPT)
      rt->freezes.n++;
    rt->freezes.count++;
  }
  pthread_mutex_unlock(&a->lock);
}

rpl_err points_run_cycles(struct agent *a, size_t first, uint64_t first_cycle, uint8_t kind, uint16_t group_size)
{
  struct point_group g = {0};
  rpl_err err = group_init(a, first, group_size, &g);
  if (err)
    return err;
  g.hooks = kind == PROTO_CYCLE_RECOVERY_POINT;
  struct freeze_outcome fo = {0};
  err = collect_cycle_starts(a, &g, first, first_cycle, kind);
  bool held = !err && group_freeze_covers(a, g.req.disks, g.req.ndisks); /* frozen already: no catch-up now */
  if (!err && !held && !a->no_precopy && needs_catch_up(a, &g)) {
    err = catch_up_round(a, &g);
    if (!err)
      err = await_group_acks(a, &g, &fo);
    group_free(&g);
    return err;
  }
  if (!err)
    err = read_group_point(a, &g, &fo);
  record_freeze(a, &g, &fo);
  if (!err) {
    err = end_group_cycles(a, &g, &fo);
    log_info("recovery point of %zu disk(s): filesystems frozen %" PRIu64 " ms%s, read and sent in %" PRIu64 " ms",
             g.req.ndisks, fo.freeze_ms, fo.thawed_first ? " (the flip only)" : "", fo.read_end_ms - fo.read_start_ms);
    if (!err)
      err = await_group_acks(a, &g, &fo);
    if (fo.frozen == RPL_E_FREEZE || fo.thawed)
      log_warn("recovery point without filesystem consistency: %s", rpl_strerror(fo.frozen ? fo.frozen : fo.thawed));
  }
  group_free(&g);
  return err;
}
