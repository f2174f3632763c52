/* adopt.c - rebases a disk on the state its storage holds after a takeover (adopt.h). */
#include "adopt.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rpl_log.h"

struct known {
  const struct store_found_point *pts;
  size_t npts;
  struct catalog_point *gone;
  size_t ngone, cap;
  char (*seen)[CATALOG_MAX_SNAPSHOT_ID + 1];
  size_t nseen;
};

static int known_cb(const struct catalog_point *p, void *arg)
{
  struct known *k = arg;
  if (!p->has_snapshot)
    return 0;
  bool listed = false;
  for (size_t i = 0; i < k->npts && !listed; i++)
    listed = !strcmp(k->pts[i].image_id, p->snapshot_id);
  if (listed && k->nseen < k->npts)
    snprintf(k->seen[k->nseen++], CATALOG_MAX_SNAPSHOT_ID + 1, "%s", p->snapshot_id);
  else if (!listed && k->ngone < k->cap)
    k->gone[k->ngone++] = *p;
  return 0;
}

/* Cycles cached here predate the other appliance's writes: the resync that follows covers them.
 * They are marked applied and trimmed, and the journal continues from cycle n. */
static rpl_err drop_cached_cycles(struct journal *j, uint64_t n, struct adopt_result *out)
{
  struct journal_usage us;
  journal_get_usage(j, &us);
  if (us.open_cycle)
    return RPL_E_EXISTS; /* a cycle is being received: the caller tries again */
  struct journal_cycle_info info;
  rpl_err e;
  while ((e = journal_next_pending(j, &info)) == RPL_OK) {
    if ((e = journal_mark_applied(j, info.cycle)))
      return e;
    out->cycles_dropped++;
  }
  if (e != RPL_E_NOT_FOUND)
    return e;
  journal_get_usage(j, &us);
  if (us.last_applied && (e = journal_trim(j, us.last_applied)))
    return e;
  journal_get_usage(j, &us);
  if (us.last_committed < n && (e = journal_set_base(j, n)))
    return e;
  return RPL_OK;
}

/* The catalog's cycle n stands for the state the storage holds: a resync, committed and applied. */
static rpl_err record_base_cycle(struct catalog *cat, const uint8_t disk_id[PROTO_ID_SIZE], uint64_t n)
{
  struct catalog_cycle cy = {.n = n, .kind = PROTO_CYCLE_RESYNC, .committed_time = time(NULL)};
  memcpy(cy.disk_id, disk_id, PROTO_ID_SIZE);
  rpl_err e = catalog_cycle_committed(cat, &cy);
  if (e && e != RPL_E_EXISTS)
    return e;
  return catalog_cycle_applied(cat, disk_id, n, time(NULL));
}

/* Records the storage's point images the catalog does not know (up to cycle n) as points. */
static rpl_err add_unknown_points(struct catalog *cat, const uint8_t disk_id[PROTO_ID_SIZE], uint64_t n,
                                  const struct known *k, struct adopt_result *out)
{
  rpl_err e = RPL_OK;
  for (size_t i = 0; !e && i < k->npts; i++) {
    const struct store_found_point *fp = &k->pts[i];
    bool seen = false;
    for (size_t s = 0; s < k->nseen && !seen; s++)
      seen = !strcmp(k->seen[s], fp->image_id);
    if (seen || fp->cycle > n)
      continue;
    struct catalog_point p = {.cycle = fp->cycle, .kind = CATALOG_POINT_CRASH_CONSISTENT, .has_snapshot = true};
    memcpy(p.disk_id, disk_id, PROTO_ID_SIZE);
    p.time = fp->time ? fp->time : time(NULL);
    snprintf(p.snapshot_id, sizeof p.snapshot_id, "%s", fp->image_id);
    int64_t id;
    if ((e = catalog_point_add(cat, &p, &id)) == RPL_OK) {
      out->points_added++;
      log_info("takeover: point image %s (cycle %" PRIu64 ") recorded as point rp-%" PRId64, fp->image_id, fp->cycle, id);
    }
  }
  return e;
}

/* Points: the storage's own images are the truth. The catalog's points whose image the storage
 * no longer has are pruned; images it has that the catalog does not know are added. */
static rpl_err adopt_points(struct catalog *cat, struct store *st, const uint8_t disk_id[PROTO_ID_SIZE], uint64_t n,
                            struct adopt_result *out)
{
  struct store_found_point *pts = NULL;
  size_t npts = 0;
  rpl_err e = st->ops->list_points(st, &pts, &npts);
  if (e)
    return e;
  struct known k = {.pts = pts, .npts = npts, .cap = npts + 64};
  k.gone = calloc(k.cap, sizeof *k.gone);
  k.seen = calloc(npts + 1, sizeof *k.seen);
  if (!k.gone || !k.seen)
    e = RPL_E_NOMEM;
  if (!e)
    e = catalog_point_foreach(cat, disk_id, known_cb, &k);
  for (size_t i = 0; !e && i < k.ngone; i++)
    if ((e = catalog_point_pruned(cat, k.gone[i].id)) == RPL_OK)
      out->points_gone++;
  if (!e)
    e = add_unknown_points(cat, disk_id, n, &k, out);
  free(k.gone);
  free(k.seen);
  free(pts);
  return e;
}

rpl_err adopt_store_state(struct catalog *cat, struct journal *j, struct store *st,
                         const uint8_t disk_id[PROTO_ID_SIZE], int64_t sequence, bool *adopted,
                         struct adopt_result *out)
{
  memset(out, 0, sizeof *out);
  *adopted = false;
  struct catalog_disk cd;
  rpl_err e = catalog_disk_get(cat, disk_id, &cd);
  if (e)
    return e;
  if (sequence <= 0 || (uint64_t)sequence <= cd.last_committed_cycle)
    return RPL_OK;
  uint64_t n = (uint64_t)sequence;
  out->base = n;
  if ((e = drop_cached_cycles(j, n, out)) || (e = record_base_cycle(cat, disk_id, n)) ||
      (e = adopt_points(cat, st, disk_id, n, out)))
    return e;
  *adopted = true;
  return RPL_OK;
}
