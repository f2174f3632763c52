/* points_doc.c - the recovery-points document of GET /api/points and `replication-appliance points`. */
#include "points_doc.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uuid/uuid.h>

#include "json_out.h"

struct disk_list {
  struct catalog_disk *d;
  size_t n;
};

static int disk_cb(const struct catalog_disk *cd, void *arg)
{
  struct disk_list *l = arg;
  if (l->n < POINTS_DOC_MAX_DISKS)
    l->d[l->n++] = *cd;
  return 0;
}

struct point_ctx {
  struct json_out *j;
  FILE *f;
  const char *state_dir, *disk_id;
};

static int point_cb(const struct catalog_point *p, void *arg)
{
  struct point_ctx *pc = arg;
  char rp[40], cmd[4600];
  snprintf(rp, sizeof rp, "rp-%" PRId64, p->id);
  if (!pc->j) {
    char when[32];
    time_t t = (time_t)p->time;
    struct tm tm;
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t, &tm));
    fprintf(pc->f, "  %-10s %s cycle %-8" PRIu64 " %-22s by %-10s frozen %5" PRIu32 " ms%s\n", rp, when, p->cycle,
            catalog_point_kind_name(p->kind), catalog_point_made_by_name(p->made_by), p->freeze_ms,
            p->has_snapshot ? "" : "  (image pruned)");
    if (p->consistency_group[0])
      fprintf(pc->f, "  %-10s group point rp-%" PRId64 " of group %s (freeze window %" PRIu32 " ms)\n", "",
              p->group_id, p->consistency_group, p->group_window_ms);
    return 0;
  }
  snprintf(cmd, sizeof cmd, "replication-appliance restore --state '%s' --disk %s --point %s --out ./%s-%s.img",
           pc->state_dir, pc->disk_id, rp, pc->disk_id, rp);
  json_object_begin(pc->j, NULL);
  json_string(pc->j, "point", rp);
  json_u64(pc->j, "cycle", p->cycle);
  json_u64(pc->j, "time_unix", (uint64_t)p->time);
  json_string(pc->j, "kind", catalog_point_kind_name(p->kind));
  json_string(pc->j, "trigger", catalog_point_made_by_name(p->made_by));
  json_u64(pc->j, "freeze_ms", p->freeze_ms);
  char group[40];
  snprintf(group, sizeof group, "rp-%" PRId64, p->group_id);
  json_string(pc->j, "group", p->group_id ? group : NULL);
  json_string(pc->j, "consistency_group", p->consistency_group[0] ? p->consistency_group : NULL);
  json_u64(pc->j, "group_window_ms", p->group_window_ms);
  json_bool(pc->j, "has_image", p->has_snapshot);
  json_string(pc->j, "restore_command", cmd);
  json_object_end(pc->j);
  return 0;
}

rpl_err points_doc_write(struct catalog *cat, const char *state_dir, const uint8_t *disk_id, struct json_out *j,
                         FILE *f)
{
  struct disk_list l = {.d = calloc(POINTS_DOC_MAX_DISKS, sizeof *l.d)};
  if (!l.d)
    return RPL_E_NOMEM;
  rpl_err err = RPL_OK;
  if (disk_id) {
    err = catalog_disk_get(cat, disk_id, &l.d[0]);
    l.n = err ? 0 : 1;
  } else {
    err = catalog_disk_foreach(cat, NULL, disk_cb, &l); /* collected: the walk holds the catalog */
  }
  if (err) {
    free(l.d);
    return err;
  }
  if (j) {
    json_object_begin(j, NULL);
    json_array_begin(j, "disks");
  }
  for (size_t i = 0; i < l.n && !err; i++) {
    char id[37];
    uuid_unparse_lower(l.d[i].id, id);
    struct point_ctx pc = {.j = j, .f = f, .state_dir = state_dir, .disk_id = id};
    if (j) {
      json_object_begin(j, NULL);
      json_string(j, "disk_id", id);
      json_string(j, "name", l.d[i].name);
      json_array_begin(j, "points");
    } else {
      fprintf(f, "disk %s (%s)\n", id, l.d[i].name);
    }
    err = catalog_point_foreach(cat, l.d[i].id, point_cb, &pc);
    if (j) {
      json_array_end(j);
      json_object_end(j);
    }
  }
  if (j) {
    json_array_end(j);
    json_object_end(j);
  }
  free(l.d);
  return err;
}
