/* adopt.c - rebases a disk on the state its page blob holds after a takeover (adopt.h). */
#include "adopt.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rpl_log.h"

/* The value of key in "key=value\n" lines, or NULL. */
static const char *meta_get(const char *meta, const char *key, char *out, size_t outsz)
{
  size_t kl = strlen(key);
  for (const char *p = meta; *p;) {
    const char *nl = strchr(p, '\n');
    size_t len = nl ? (size_t)(nl - p) : strlen(p);
    if (len > kl && !strncmp(p, key, kl) && p[kl] == '=') {
      snprintf(out, outsz, "%.*s", (int)(len - kl - 1), p + kl + 1);
      return out;
    }
    p += len + (nl ? 1 : 0);
  }
  return NULL;
}

struct known {
  const struct blob_list *snaps;
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
  for (size_t i = 0; i < k->snaps->count && !listed; i++)
    listed = !strcmp(k->snaps->items[i].snapshot, p->snapshot_id);
  if (listed && k->nseen < k->snaps->count)
    snprintf(k->seen[k->nseen++], CATALOG_MAX_SNAPSHOT_ID + 1, "%s", p->snapshot_id);
  else if (!listed && k->ngone < k->cap)
    k->gone[k->ngone++] = *p;
  return 0;
}

rpl_err adopt_blob_state(struct catalog *cat, struct journal *j, struct uploader *u,
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

  /* Cycles cached here predate the other appliance's writes: the resync that follows covers them. */
  struct journal_usage us;
  journal_get_usage(j, &us);
  if (us.open_cycle)
    return RPL_E_EXISTS; /* a cycle is being received: the caller tries again */
  struct journal_cycle_info info;
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

  struct catalog_cycle cy = {.n = n, .kind = PROTO_CYCLE_RESYNC, .committed_time = time(NULL)};
  memcpy(cy.disk_id, disk_id, PROTO_ID_SIZE);
  e = catalog_cycle_committed(cat, &cy);
  if (e && e != RPL_E_EXISTS)
    return e;
  if ((e = catalog_cycle_applied(cat, disk_id, n, time(NULL))))
    return e;

  /* Points: the blob's snapshots are the truth. */
  struct blob_list snaps = {0};
  if ((e = uploader_list_snapshots(u, &snaps)))
    return e;
  struct known k = {.snaps = &snaps, .cap = snaps.count + 64};
  k.gone = calloc(k.cap, sizeof *k.gone);
  k.seen = calloc(snaps.count + 1, sizeof *k.seen);
  if (!k.gone || !k.seen)
    e = RPL_E_NOMEM;
  if (!e)
    e = catalog_point_foreach(cat, disk_id, known_cb, &k);
  for (size_t i = 0; !e && i < k.ngone; i++)
    if ((e = catalog_point_pruned(cat, k.gone[i].id)) == RPL_OK)
      out->points_gone++;
  for (size_t i = 0; !e && i < snaps.count; i++) {
    const struct blob_item *it = &snaps.items[i];
    char cyc[32], when[32];
    if (!it->snapshot[0] || !meta_get(it->metadata, UPLOADER_META_CYCLE, cyc, sizeof cyc))
      continue; /* the base blob, or a snapshot not ours */
    bool seen = false;
    for (size_t s = 0; s < k.nseen && !seen; s++)
      seen = !strcmp(k.seen[s], it->snapshot);
    if (seen)
      continue;
    char *end;
    unsigned long long c = strtoull(cyc, &end, 10);
    if (*end || c == 0 || c > n)
      continue;
    struct catalog_point p = {.cycle = c, .kind = CATALOG_POINT_CRASH_CONSISTENT, .has_snapshot = true};
    memcpy(p.disk_id, disk_id, PROTO_ID_SIZE);
    p.time = meta_get(it->metadata, UPLOADER_META_TIME, when, sizeof when) ? strtoll(when, NULL, 10) : time(NULL);
    snprintf(p.snapshot_id, sizeof p.snapshot_id, "%s", it->snapshot);
    int64_t id;
    if ((e = catalog_point_add(cat, &p, &id)) == RPL_OK) {
      out->points_added++;
      log_info("takeover: snapshot %s (cycle %llu) recorded as point rp-%" PRId64, it->snapshot, c, id);
    }
  }
  free(k.gone);
  free(k.seen);
  blob_list_free(&snaps);
  if (!e)
    *adopted = true;
  return e;
}
