/* store_blob.c - the page-blob backend of the storage interface (Azure storage): the uploader
 * (uploader.c) for the live blob, its snapshots as recovery points, ranged reads for restore. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blob.h"
#include "rpl_log.h"
#include "store.h"
#include "uploader.h"

struct blob_store {
  struct store base;
  struct uploader *u;
};

static struct uploader *up_of(struct store *st) { return ((struct blob_store *)st)->u; }

static rpl_err blob_store_open(const struct appliance_settings *s, const uint8_t disk_id[PROTO_ID_SIZE],
                               uint64_t disk_size, struct store **out)
{
  *out = NULL;
  struct blob_store *bs = calloc(1, sizeof *bs);
  if (!bs)
    return RPL_E_NOMEM;
  bs->base.ops = &store_blob_ops;
  rpl_err e = uploader_open(s, disk_id, disk_size, &bs->u);
  if (e) {
    free(bs);
    return e;
  }
  *out = &bs->base;
  return RPL_OK;
}

static void blob_store_close(struct store *st)
{
  if (!st)
    return;
  uploader_close(up_of(st));
  free(st);
}

static rpl_err blob_store_resize(struct store *st, uint64_t disk_size) { return uploader_resize(up_of(st), disk_size); }

static void blob_store_set_limits(struct store *st, struct rate_limit *all, struct rate_limit *agent)
{
  uploader_set_limits(up_of(st), all, agent);
}

struct point_relay {
  const struct store_apply_cb *cb;
};

static void relay_snapshot(void *ctx, uint64_t cycle, const char *snapshot_id)
{
  const struct store_apply_cb *cb = ((struct point_relay *)ctx)->cb;
  cb->point(cb->ctx, cycle, snapshot_id);
}

/* The uploader snapshots a point's cycle right after its commit, before the journal marks it
 * applied: the point's image exists when the cycle is reported. */
static rpl_err blob_store_apply_next(struct store *st, struct journal *j, const struct store_apply_cb *cb)
{
  struct journal_cycle_info info;
  rpl_err e = journal_next_pending(j, &info);
  if (e)
    return e;
  struct point_relay pr = {cb};
  uint64_t applied = 0;
  bool image = !cb->image_wanted || cb->image_wanted(cb->ctx, info.cycle);
  if ((e = uploader_apply_some(up_of(st), j, 1, &applied, image ? relay_snapshot : NULL, &pr)))
    return e;
  if (applied)
    cb->applied(cb->ctx, info.cycle, info.kind, false);
  return RPL_OK;
}

static rpl_err blob_store_make_point(struct store *st, uint64_t cycle, char *image_id, size_t idsz)
{
  return uploader_snapshot(up_of(st), cycle, image_id, idsz);
}

static rpl_err blob_store_delete_point(struct store *st, const char *image_id)
{
  rpl_err e = uploader_delete_snapshot(up_of(st), image_id);
  return e == RPL_E_BLOB_NOT_FOUND ? RPL_OK : e; /* gone already (pruned elsewhere, or a retry) */
}

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

/* The blob's snapshots that carry our metadata (the cycle, the time). */
static rpl_err blob_store_list_points(struct store *st, struct store_found_point **out, size_t *count)
{
  *out = NULL;
  *count = 0;
  struct blob_list snaps = {0};
  rpl_err e = uploader_list_snapshots(up_of(st), &snaps);
  if (e)
    return e;
  struct store_found_point *pts = snaps.count ? calloc(snaps.count, sizeof *pts) : NULL;
  if (snaps.count && !pts) {
    blob_list_free(&snaps);
    return RPL_E_NOMEM;
  }
  for (size_t i = 0; i < snaps.count; i++) {
    const struct blob_item *it = &snaps.items[i];
    char cyc[32], when[32];
    if (!it->snapshot[0] || !meta_get(it->metadata, UPLOADER_META_CYCLE, cyc, sizeof cyc))
      continue; /* the base blob, or a snapshot not ours */
    char *end;
    unsigned long long c = strtoull(cyc, &end, 10);
    if (*end || c == 0)
      continue;
    struct store_found_point *p = &pts[(*count)++];
    p->cycle = c;
    p->time = meta_get(it->metadata, UPLOADER_META_TIME, when, sizeof when) ? strtoll(when, NULL, 10) : 0;
    snprintf(p->image_id, sizeof p->image_id, "%s", it->snapshot);
  }
  blob_list_free(&snaps);
  *out = pts;
  return RPL_OK;
}

/* Only the initial sync of a blob nothing was committed to: there is no earlier state or snapshot
 * to keep (uploader_direct_begin checks the blob and the lease). */
static bool blob_store_direct_begin(struct store *st, uint64_t n, uint8_t kind)
{
  return kind == PROTO_CYCLE_RESYNC && n == 1 && uploader_direct_begin(up_of(st), n);
}

static rpl_err blob_store_direct_extent(struct store *st, uint64_t offset, const uint8_t *raw, uint32_t len)
{
  return uploader_direct_extent(up_of(st), offset, raw, len);
}

static rpl_err blob_store_direct_commit(struct store *st) { return uploader_direct_commit(up_of(st)); }

static void blob_store_direct_abort(struct store *st) { uploader_direct_abort(up_of(st)); }

static rpl_err blob_store_read(struct store *st, uint64_t offset, void *buf, size_t len)
{
  return uploader_read(up_of(st), offset, buf, len);
}

static uint64_t blob_store_committed(struct store *st) { return uploader_committed(up_of(st)); }

static enum store_failure blob_store_failure_kind(rpl_err e)
{
  switch (uploader_failure_kind(e)) {
  case UPLOAD_FAILURE_STORAGE: return STORE_FAILURE_STORAGE;
  case UPLOAD_FAILURE_OWNERSHIP: return STORE_FAILURE_OWNERSHIP;
  case UPLOAD_FAILURE_RESYNC: break;
  }
  return STORE_FAILURE_RESYNC;
}

static void blob_store_get_stats(struct store *st, struct store_stats *out)
{
  struct uploader_stats us;
  uploader_get_stats(up_of(st), &us);
  *out = (struct store_stats){.transfers = true, .bytes_written = us.bytes_uploaded, .limit_wait_ms = us.limit_wait_ms};
}

static rpl_err blob_store_lease_tick(struct store *st, bool *acquired_now, int64_t *sequence)
{
  return uploader_lease_tick(up_of(st), acquired_now, sequence);
}

static bool blob_store_lease_held(struct store *st, rpl_err *why) { return uploader_lease_held(up_of(st), why); }

/* ---- restore: a snapshot read with ranged GETs, one client per reader -------------------- */

struct blob_image {
  struct store_image base;
  struct appliance_settings settings; /* the client configuration points into it */
  struct blob_config cfg;
  char container[64];
  char blob[48];
  char snapshot[CATALOG_MAX_SNAPSHOT_ID + 1];
  struct blob_page_list ranges;       /* the snapshot's written pages: the rest reads as zeros */
};

struct blob_reader {
  struct store_reader base;
  struct blob_image *img;
  struct blob_client *client;
};

static rpl_err blob_image_open(const struct appliance_settings *s, const uint8_t disk_id[PROTO_ID_SIZE],
                               const char *image_id, uint64_t disk_size, struct store_image **out)
{
  *out = NULL;
  struct blob_image *bi = calloc(1, sizeof *bi);
  if (!bi)
    return RPL_E_NOMEM;
  bi->base.ops = &store_blob_ops;
  bi->settings = *s;
  uploader_blob_name(disk_id, bi->blob);
  snprintf(bi->container, sizeof bi->container, "%s", s->container[0] ? s->container : SETTINGS_DEFAULT_CONTAINER);
  snprintf(bi->snapshot, sizeof bi->snapshot, "%s", image_id);
  struct blob_client *client = NULL;
  struct blob_reply r = {0};
  rpl_err e = uploader_config(&bi->settings, &bi->cfg);
  if (!e)
    e = blob_client_open(&bi->cfg, &client);
  if (!e && (e = blob_get_page_ranges(client, bi->container, bi->blob, bi->snapshot, 0, disk_size, &bi->ranges, &r)))
    e = rpl_fail(e, "snapshot %s of %s: %s (HTTP %ld %s)", bi->snapshot, bi->blob, rpl_strerror(e), r.status,
                 r.error_code);
  blob_client_close(client);
  if (e) {
    blob_page_list_free(&bi->ranges);
    free(bi);
    return e;
  }
  *out = &bi->base;
  return RPL_OK;
}

static void blob_image_close(struct store_image *img)
{
  if (!img)
    return;
  blob_page_list_free(&((struct blob_image *)img)->ranges);
  free(img);
}

static rpl_err blob_reader_open(struct store_image *img, struct store_reader **out)
{
  struct blob_reader *rd = calloc(1, sizeof *rd);
  if (!rd)
    return RPL_E_NOMEM;
  rd->base.ops = &store_blob_ops;
  rd->img = (struct blob_image *)img;
  rpl_err e = blob_client_open(&rd->img->cfg, &rd->client);
  if (e) {
    free(rd);
    return e;
  }
  *out = &rd->base;
  return RPL_OK;
}

static void blob_reader_close(struct store_reader *rd)
{
  if (!rd)
    return;
  blob_client_close(((struct blob_reader *)rd)->client);
  free(rd);
}

static rpl_err blob_reader_read(struct store_reader *srd, uint64_t off, uint8_t *buf, size_t len, bool *hole)
{
  struct blob_reader *rd = (struct blob_reader *)srd;
  const struct blob_page_list *pl = &rd->img->ranges;
  memset(buf, 0, len);
  *hole = true;
  /* The first range that ends after off (ranges are ascending and disjoint). */
  size_t lo = 0, hi = pl->count;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (pl->ranges[mid].offset + pl->ranges[mid].length <= off)
      lo = mid + 1;
    else
      hi = mid;
  }
  for (size_t i = lo; i < pl->count && pl->ranges[i].offset < off + len; i++) {
    uint64_t a = pl->ranges[i].offset, b = a + pl->ranges[i].length;
    if (a < off)
      a = off;
    if (b > off + len)
      b = off + len;
    if (b <= a)
      continue;
    struct blob_reply r;
    rpl_err e = blob_read(rd->client, rd->img->container, rd->img->blob, rd->img->snapshot, a, buf + (a - off),
                          (size_t)(b - a), &r);
    if (e)
      return e;
    *hole = false;
  }
  return RPL_OK;
}

static bool blob_store_claims(const char *storage)
{
  (void)storage; /* a connection string: whatever no other backend claims */
  return true;
}

/* A connection string is parsed now so a typo is reported here, not when the daemon first uploads. */
static rpl_err blob_store_configure(const char *storage, struct appliance_settings *s, char *summary,
                                    size_t summary_size)
{
  struct blob_account acct;
  rpl_err err = blob_connstr_parse(storage, &acct);
  if (err != RPL_OK)
    return rpl_fail(err, "%s (%s)", rpl_detail(err), rpl_errname(err));
  if (strlen(storage) >= sizeof s->storage)
    return rpl_fail(RPL_E_CONFIG, "the connection string is too long");
  snprintf(s->storage, sizeof s->storage, "%s", storage);
  snprintf(summary, summary_size, "storage: account %s at %s, authorized by %s", acct.name, acct.endpoint,
           blob_auth_name(acct.auth));
  return RPL_OK;
}

static void blob_store_print_settings(const struct appliance_settings *s, FILE *out)
{
  fprintf(out, "path: %s%s, %s\n", s->private_dns_zone[0] ? "private DNS zone file " : "system resolver",
          s->private_dns_zone, s->require_private_endpoint ? "private endpoint required" : "public endpoint allowed");
  fprintf(out, "TLS: verified against %s\n", s->ca_file[0] ? s->ca_file : "the system CAs");
  fprintf(out, "proxy: %s\n", s->proxy[0] ? "configured (see check)" : "none");
  fprintf(out, "ownership: a %u s lease on each disk's page blob, renewed while running\n", s->lease_duration_s);
}

static void blob_store_describe(const struct appliance_settings *s, char *out, size_t outsz)
{
  (void)s; /* the connection string holds the account key */
  snprintf(out, outsz, "azure");
}

const struct store_ops store_blob_ops = {
  .name = "page blob",
  .kind = "azure",
  .max_disk_bytes = (8ull << 40) - (1ull << 20), /* a page blob holds 8 TiB, with the VHD footer after the disk rounded to a MiB */
  .claims = blob_store_claims,
  .configure = blob_store_configure,
  .print_settings = blob_store_print_settings,
  .check = prereq_check_azure,
  .opens_after_checks = true,
  .leased = true,
  .describe = blob_store_describe,
  .open = blob_store_open,
  .close = blob_store_close,
  .resize = blob_store_resize,
  .set_limits = blob_store_set_limits,
  .apply_next = blob_store_apply_next,
  .make_point = blob_store_make_point,
  .delete_point = blob_store_delete_point,
  .list_points = blob_store_list_points,
  .direct_begin = blob_store_direct_begin,
  .direct_extent = blob_store_direct_extent,
  .direct_commit = blob_store_direct_commit,
  .direct_abort = blob_store_direct_abort,
  .read = blob_store_read,
  .committed = blob_store_committed,
  .failure_kind = blob_store_failure_kind,
  .get_stats = blob_store_get_stats,
  .lease_tick = blob_store_lease_tick,
  .lease_held = blob_store_lease_held,
  .image_open = blob_image_open,
  .image_close = blob_image_close,
  .reader_open = blob_reader_open,
  .reader_close = blob_reader_close,
  .reader_read = blob_reader_read,
  .image_kind = "snapshot",
};
