/* retention.c - the recovery-point retention policy: parsing, the keep/drop decision (pure), and
 * pruning a disk's points through a delete callback and the catalog. */
#include "retention.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "duration.h"
#include "rpl_log.h"

#define HOUR 3600
#define DAY 86400

rpl_err retention_parse(const char *text, struct retention_policy *out)
{
  memset(out, 0, sizeof *out);
  out->time_scale = 1;
  if (!text || !*text)
    text = RETENTION_DEFAULT;
  if (strlen(text) >= RETENTION_TEXT_MAX)
    return rpl_fail(RPL_E_RETENTION_POLICY, "retention policy too long (at most %d characters)", RETENTION_TEXT_MAX - 1);
  bool seen[3] = {false, false, false};
  static const char *const keys[3] = {"all", "hourly", "daily"};
  int64_t *vals[3] = {&out->all_s, &out->hourly_s, &out->daily_s};
  const char *p = text;
  for (;;) {
    const char *end = strchr(p, ',');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    char part[RETENTION_TEXT_MAX];
    snprintf(part, sizeof part, "%.*s", (int)len, p);
    const char *eq = memchr(p, '=', len);
    if (!eq)
      return rpl_fail(RPL_E_RETENTION_POLICY, "retention policy: '%s' is not KEY=DURATION (all=1h,hourly=24h,daily=7d)", part);
    size_t klen = (size_t)(eq - p);
    int k = -1;
    for (int i = 0; i < 3; i++)
      if (strlen(keys[i]) == klen && !memcmp(p, keys[i], klen))
        k = i;
    if (k < 0)
      return rpl_fail(RPL_E_RETENTION_POLICY, "retention policy: unknown key in '%s' (the keys are all, hourly, daily)", part);
    if (seen[k])
      return rpl_fail(RPL_E_RETENTION_POLICY, "retention policy: '%s' repeats a key", part);
    seen[k] = true;
    if (!duration_parse(eq + 1, len - klen - 1, RETENTION_MAX_SECONDS, vals[k]))
      return rpl_fail(RPL_E_RETENTION_POLICY,
                      "retention policy: bad duration in '%s' (a whole number with s, m, h or d, at most 3650d; or 0)", part);
    if (!end)
      break;
    p = end + 1;
  }
  return RPL_OK;
}

void retention_format(const struct retention_policy *p, char *out, size_t outsz)
{
  char a[24], h[24], d[24];
  duration_format(p->all_s, a, sizeof a);
  duration_format(p->hourly_s, h, sizeof h);
  duration_format(p->daily_s, d, sizeof d);
  snprintf(out, outsz, "all=%s,hourly=%s,daily=%s", a, h, d);
}

/* Floor division (times before 1970 stay in the right bucket). */
static int64_t bucket(int64_t t, int64_t size) { return t >= 0 ? t / size : -((-t + size - 1) / size); }

void retention_decide(const struct retention_policy *p, int64_t now, const int64_t *times, size_t n, bool *keep)
{
  int64_t scale = p->time_scale ? p->time_scale : 1;
  for (size_t i = 0; i < n; i++) {
    int64_t t = times[i] * scale, age = (now - times[i]) * scale;
    /* times are sorted: the newest of its hour/day is the last one in that bucket */
    bool last_of_hour = i + 1 == n || bucket(times[i + 1] * scale, HOUR) != bucket(t, HOUR);
    bool last_of_day = i + 1 == n || bucket(times[i + 1] * scale, DAY) != bucket(t, DAY);
    keep[i] = i + 1 == n || age < 0 || age <= p->all_s || (age <= p->hourly_s && last_of_hour) ||
              (age <= p->daily_s && last_of_day);
  }
}

struct collect {
  struct catalog_point *pts;
  size_t n, cap;
  bool truncated, nomem;
};

static int collect_cb(const struct catalog_point *p, void *arg)
{
  struct collect *c = arg;
  if (!p->has_snapshot)
    return 0; /* pruned already, or never had an image */
  if (c->n == c->cap) {
    size_t cap = c->cap ? 2 * c->cap : 64;
    if (cap > RETENTION_MAX_POINTS)
      cap = RETENTION_MAX_POINTS;
    if (c->n == cap) {
      c->truncated = true;
      return 1;
    }
    struct catalog_point *np = realloc(c->pts, cap * sizeof *np);
    if (!np) {
      c->nomem = true;
      return 1;
    }
    c->pts = np;
    c->cap = cap;
  }
  c->pts[c->n++] = *p;
  return 0;
}

static int by_time(const void *a, const void *b)
{
  const struct catalog_point *x = a, *y = b;
  if (x->time != y->time)
    return x->time < y->time ? -1 : 1;
  return x->id < y->id ? -1 : x->id > y->id;
}

rpl_err retention_prune(struct catalog *cat, const uint8_t disk_id[PROTO_ID_SIZE], const struct retention_policy *p,
                        int64_t now, retention_delete_fn del, void *ctx, struct retention_result *out)
{
  memset(out, 0, sizeof *out);
  out->now = now;
  struct collect c = {0};
  rpl_err e = catalog_point_foreach(cat, disk_id, collect_cb, &c);
  if (!e && c.nomem)
    e = RPL_E_NOMEM;
  int64_t *times = NULL;
  bool *keep = NULL;
  if (!e && c.n && (!(times = calloc(c.n, sizeof *times)) || !(keep = calloc(c.n, sizeof *keep))))
    e = RPL_E_NOMEM;
  if (!e && c.n && times && keep) {
    if (c.truncated)
      log_warn("retention: more than %u points on one disk; the newest are not considered this time",
               RETENTION_MAX_POINTS);
    qsort(c.pts, c.n, sizeof *c.pts, by_time);
    for (size_t i = 0; i < c.n; i++)
      times[i] = c.pts[i].time;
    retention_decide(p, now, times, c.n, keep);
    out->considered = c.n;
    out->newest_id = c.pts[c.n - 1].id;
    for (size_t i = 0; i < c.n && !e; i++) {
      if (keep[i]) {
        out->kept++;
        continue;
      }
      rpl_err d = del(ctx, &c.pts[i]);
      if (d && d != RPL_E_BLOB_NOT_FOUND && d != RPL_E_NOT_FOUND) {
        log_warn("retention: cannot delete the image of point rp-%" PRId64 " (%s): %s; tried again later",
                 c.pts[i].id, c.pts[i].snapshot_id, rpl_strerror(d));
        out->failed++;
        continue;
      }
      if ((e = catalog_point_pruned(cat, c.pts[i].id)) == RPL_OK) {
        out->pruned++;
        log_info("retention: pruned point rp-%" PRId64 " (cycle %" PRIu64 ", image %s)", c.pts[i].id, c.pts[i].cycle,
                 c.pts[i].snapshot_id);
      }
    }
  }
  free(times);
  free(keep);
  free(c.pts);
  return e;
}
