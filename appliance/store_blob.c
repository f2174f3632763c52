/* store_blob.c - the page-blob backend of the storage interface (Azure storage): the uploader
 * (uploader.c) for the live blob, its snapshots as recovery points, ranged reads for restore, and
 * failover's standalone copies of a snapshot. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "blob.h"
#include "rpl_log.h"
#include "store.h"
#include "uploader.h"
#include "vhd.h"

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
  bs->base.blank = uploader_blank(bs->u);
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
  uploader_set_extent_ahead(up_of(st), cb->extent_ahead, cb->ctx);
  e = uploader_apply_some(up_of(st), j, 1, &applied, image ? relay_snapshot : NULL, &pr);
  uploader_set_extent_ahead(up_of(st), NULL, NULL);
  if (e)
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

static rpl_err blob_store_delete_replica(struct store *st) { return uploader_delete_blob(up_of(st)); }

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

/* The initial sync of a blob nothing was committed to (there is no earlier state or snapshot to
 * keep), or the resync of a disk whose changes do not fit in the cache (the points are snapshots,
 * which direct writes leave alone; the blob's newest state is a resync's until it ends).
 * uploader_direct_begin checks the blob, its sequence number and the lease. */
static bool blob_store_direct_begin(struct store *st, uint64_t n, uint8_t kind, bool cache_bypass)
{
  return kind == PROTO_CYCLE_RESYNC && (n == 1 || cache_bypass) && uploader_direct_begin(up_of(st), n);
}

static rpl_err blob_store_direct_extent(struct store *st, uint64_t offset, const uint8_t *raw, uint32_t len)
{
  return uploader_direct_extent(up_of(st), offset, raw, len);
}

static uint8_t *blob_store_direct_room(struct store *st, uint64_t offset, uint32_t len)
{
  return uploader_direct_room(up_of(st), offset, len);
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
  /* A snapshot made before the disk grew ends with its footer below disk_size: the image stops
   * there (the rest reads as zeros), so the old footer is never taken for the disk's data. */
  uint64_t end = disk_size;
  if (!e && !(e = blob_get_properties(client, bi->container, bi->blob, bi->snapshot, &r)) && r.content_length >= 0 &&
      (uint64_t)r.content_length < end + VHD_FOOTER_SIZE)
    end = (uint64_t)r.content_length >= VHD_FOOTER_SIZE ? (uint64_t)r.content_length - VHD_FOOTER_SIZE : 0;
  if (!e && end && (e = blob_get_page_ranges(client, bi->container, bi->blob, bi->snapshot, 0, end, &bi->ranges, &r)))
    e = rpl_fail(e, "snapshot %s of %s: %s (HTTP %ld %s%s%s)", bi->snapshot, bi->blob, rpl_strerror(e), r.status,
                 r.error_code[0] ? r.error_code : "-", r.message[0] ? ": " : "", r.message);
  else if (e && !rpl_detail(e)[0])
    e = rpl_fail(e, "snapshot %s of %s: %s (HTTP %ld %s%s%s)", bi->snapshot, bi->blob, rpl_strerror(e), r.status,
                 r.error_code[0] ? r.error_code : "-", r.message[0] ? ": " : "", r.message);
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

/* ---- failover: a standalone page blob made from a snapshot ------------------------------- */

#define EXPORT_MAX_META 8
#define EXPORT_SLOTS 8 /* Put Pages in flight through this machine */

/* Blob errors keep what the storage answered. */
static rpl_err export_fail(rpl_err e, const char *what, const struct blob_reply *r)
{
  return rpl_fail(e, "%s: %s (HTTP %ld %s%s%s)", what, rpl_strerror(e), r->status, r->error_code[0] ? r->error_code : "-",
                  r->message[0] ? ": " : "", r->message);
}

/* Copy Blob of the snapshot, waited for. RPL_E_AGAIN: the storage refused to copy (its answer in
 * out->why_not_server) and nothing was made: the caller copies through this machine. */
static rpl_err export_server_copy(struct blob_image *bi, struct blob_client *c, const char *container,
                                  const struct store_export *x, const struct blob_header *meta,
                                  struct store_export_result *out, int64_t *copied_len)
{
  char src[BLOB_SAS_MAX + 1536];
  struct blob_reply r = {0};
  rpl_err e = blob_url(&bi->cfg.account, bi->container, bi->blob, bi->snapshot, true, src, sizeof src);
  if (e)
    return rpl_fail(e, "the snapshot's address does not fit");
  e = blob_copy_start(c, container, x->name, src, meta, x->nmeta, true, &r);
  if (e == RPL_E_BLOB_EXISTS)
    return rpl_fail(RPL_E_FAILOVER_EXISTS, "blob %s/%s: %s", container, x->name, rpl_strerror(RPL_E_FAILOVER_EXISTS));
  if (e && r.status >= 400) {
    snprintf(out->why_not_server, sizeof out->why_not_server, "HTTP %ld %s", r.status, r.error_code[0] ? r.error_code : "");
    return RPL_E_AGAIN;
  }
  if (e)
    return export_fail(e, "Copy Blob", &r);
  /* Azure copies asynchronously: the copy's properties say when it is done. */
  while (!strcmp(r.copy_status, "pending")) {
    nanosleep(&(struct timespec){.tv_sec = 1}, NULL);
    if ((e = blob_get_properties(c, container, x->name, NULL, &r)))
      return export_fail(e, "the copy's properties", &r);
  }
  if (strcmp(r.copy_status, "success"))
    return rpl_fail(RPL_E_FAILOVER_COPY, "%s: the copy ended '%s'", rpl_strerror(RPL_E_FAILOVER_COPY), r.copy_status);
  if (r.content_length < 0 && (e = blob_get_properties(c, container, x->name, NULL, &r)))
    return export_fail(e, "the copy's properties", &r);
  *copied_len = r.content_length;
  out->server_copy = true;
  return RPL_OK;
}

struct export_slot {
  uint8_t *buf;
  bool busy;
  rpl_err *err;
};

static void export_put_done(void *ctx, rpl_err err, const struct blob_reply *reply)
{
  struct export_slot *s = ctx;
  (void)reply;
  s->busy = false;
  if (err && !*s->err)
    *s->err = err;
}

/* The snapshot's written pages below disk_size, read and put into the new blob EXPORT_SLOTS at a
 * time; the rest of the new blob reads as zeros. */
static rpl_err export_through_here(struct blob_image *bi, struct blob_client *c, const char *container,
                                   const struct store_export *x, struct store_export_result *out)
{
  struct export_slot slots[EXPORT_SLOTS] = {0};
  rpl_err put_err = RPL_OK, e = RPL_OK;
  for (int i = 0; i < EXPORT_SLOTS && !e; i++) {
    slots[i].err = &put_err;
    if (!(slots[i].buf = malloc(BLOB_MAX_PUT_PAGE)))
      e = RPL_E_NOMEM;
  }
  for (size_t i = 0; i < bi->ranges.count && !e && !put_err; i++) {
    uint64_t a = bi->ranges.ranges[i].offset, b = a + bi->ranges.ranges[i].length;
    if (b > x->disk_size)
      b = x->disk_size;
    for (uint64_t off = a; off < b && !e && !put_err;) {
      size_t len = b - off < BLOB_MAX_PUT_PAGE ? (size_t)(b - off) : BLOB_MAX_PUT_PAGE;
      struct export_slot *s = NULL;
      while (!s && !e) {
        for (int k = 0; k < EXPORT_SLOTS && !s; k++)
          if (!slots[k].busy)
            s = &slots[k];
        if (!s)
          e = blob_client_poll(c, 1000);
      }
      if (e)
        break;
      struct blob_reply r = {0};
      if ((e = blob_read(c, bi->container, bi->blob, bi->snapshot, off, s->buf, len, &r))) {
        e = export_fail(e, "reading the snapshot", &r);
        break;
      }
      s->busy = true;
      if ((e = blob_put_page_async(c, container, x->name, off, s->buf, len, NULL, export_put_done, s))) {
        s->busy = false;
        break;
      }
      out->bytes_sent += len;
      off += len;
    }
  }
  rpl_err d = blob_client_drain(c); /* nothing may still point into the buffers when they go */
  for (int i = 0; i < EXPORT_SLOTS; i++)
    free(slots[i].buf);
  if (!e)
    e = d ? d : put_err;
  return e;
}

static rpl_err blob_image_export(struct store_image *img, const struct store_export *x, struct store_export_result *out)
{
  struct blob_image *bi = (struct blob_image *)img;
  const char *container = x->container ? x->container : bi->container;
  memset(out, 0, sizeof *out);
  snprintf(out->account, sizeof out->account, "%s", bi->cfg.account.name);
  if (x->nmeta > EXPORT_MAX_META || x->vhd_size % (1u << 20) || x->vhd_size < x->disk_size)
    return RPL_E_INVALID_ARGUMENT;
  rpl_err e = blob_url(&bi->cfg.account, container, x->name, NULL, false, out->url, sizeof out->url);
  if (e)
    return rpl_fail(e, "the blob's name is too long");
  struct blob_header meta[EXPORT_MAX_META];
  for (size_t i = 0; i < x->nmeta; i++)
    meta[i] = (struct blob_header){x->meta[i].key, x->meta[i].value};
  struct blob_client *c = NULL;
  if ((e = blob_client_open(&bi->cfg, &c)))
    return e;
  struct blob_reply r = {0};
  bool made = false;
  int64_t len = -1;
  if (strcmp(container, bi->container) && (e = blob_container_create(c, container, &r)) && e != RPL_E_BLOB_EXISTS) {
    e = export_fail(e, "creating the container", &r);
    goto out;
  }
  e = blob_get_properties(c, container, x->name, NULL, &r);
  if (!e) {
    e = rpl_fail(RPL_E_FAILOVER_EXISTS, "blob %s/%s: %s", container, x->name, rpl_strerror(RPL_E_FAILOVER_EXISTS));
    goto out;
  }
  if (e != RPL_E_BLOB_NOT_FOUND) {
    e = export_fail(e, "looking for an existing blob of that name", &r);
    goto out;
  }
  e = x->no_server_copy ? RPL_E_AGAIN : export_server_copy(bi, c, container, x, meta, out, &len);
  if (e == RPL_OK) {
    made = true;
    uint64_t want = x->vhd_size + VHD_FOOTER_SIZE;
    if (len >= 0 && (uint64_t)len != want) { /* the disk grew since the point: the old footer is cleared */
      if ((e = blob_resize(c, container, x->name, want, NULL, &r)))
        e = export_fail(e, "resizing the copy", &r);
      else if ((uint64_t)len >= VHD_FOOTER_SIZE && (uint64_t)len - VHD_FOOTER_SIZE < x->vhd_size &&
               (e = blob_clear_pages_async(c, container, x->name, (uint64_t)len - VHD_FOOTER_SIZE, VHD_FOOTER_SIZE, NULL,
                                           NULL, NULL)) == RPL_OK)
        e = blob_client_drain(c);
    }
  } else if (e == RPL_E_AGAIN) {
    e = blob_create_page_blob(c, container, x->name, x->vhd_size + VHD_FOOTER_SIZE, x->sequence, true, &r);
    if (e == RPL_E_BLOB_EXISTS)
      e = rpl_fail(RPL_E_FAILOVER_EXISTS, "blob %s/%s: %s", container, x->name, rpl_strerror(RPL_E_FAILOVER_EXISTS));
    else if (e)
      e = export_fail(e, "creating the page blob", &r);
    made = !e;
    if (!e && (e = blob_set_metadata(c, container, x->name, meta, x->nmeta, &r)))
      e = export_fail(e, "setting the copy's metadata", &r);
    if (!e)
      e = export_through_here(bi, c, container, x, out);
  }
  if (!e) { /* this copy's own footer (its own id), then its sequence number */
    uint8_t *f = malloc(VHD_FOOTER_SIZE);
    if (!f)
      e = RPL_E_NOMEM;
    else {
      memcpy(f, x->footer, VHD_FOOTER_SIZE);
      rpl_err put = RPL_OK;
      struct export_slot s = {.buf = f, .busy = true, .err = &put};
      e = blob_put_page_async(c, container, x->name, x->vhd_size, f, VHD_FOOTER_SIZE, NULL, export_put_done, &s);
      if (!e)
        e = blob_client_drain(c);
      if (!e)
        e = put;
      free(f);
    }
    if (!e && (e = blob_set_sequence_number(c, container, x->name, BLOB_SEQUENCE_UPDATE, x->sequence, NULL, &r)))
      e = export_fail(e, "setting the copy's sequence number", &r);
  }
  if (e && made) { /* no half-made disk is left for someone to import */
    rpl_err keep = e;
    char why[512];
    snprintf(why, sizeof why, "%s", rpl_detail(e));
    if (blob_delete(c, container, x->name, NULL, &r) != RPL_OK)
      log_warn("failover: the incomplete copy %s/%s could not be deleted: delete it by hand", container, x->name);
    e = why[0] ? rpl_fail(keep, "%s", why) : keep;
  }
out:
  blob_client_close(c);
  return e;
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
  if (!err)
    err = uploader_check_transport(s, &acct);
  if (err != RPL_OK)
    return rpl_fail(err, "%s (%s)", rpl_detail(err), rpl_errname(err));
  if (strlen(storage) >= sizeof s->storage)
    return rpl_fail(RPL_E_CONFIG, "the connection string is too long");
  bool principal = acct.auth == BLOB_AUTH_CLIENT_SECRET || acct.auth == BLOB_AUTH_CLIENT_CERT;
  /* The file is read now so that a wrong one is refused by init, not found by the daemon later. */
  if (principal && (err = blob_entra_check_credential(acct.auth, acct.credential_file)))
    return rpl_fail(err, "%s (%s)", rpl_detail(err), rpl_errname(err));
  snprintf(s->storage, sizeof s->storage, "%s", storage);
  char url[BLOB_ENDPOINT_MAX + 200] = "";
  if (principal && blob_entra_token_url(&acct, url, sizeof url) != RPL_OK)
    url[0] = '\0';
  snprintf(summary, summary_size, "storage: account %s at %s, authorized by %s%s%s%s%s", acct.name, acct.endpoint,
           blob_auth_name(acct.auth), principal ? " (client " : "", principal ? acct.client_id : "",
           principal ? ", token endpoint " : "", principal ? url : "");
  if (principal && strlen(summary) + 2 < summary_size)
    strcat(summary, ")");
  return RPL_OK;
}

static void blob_store_print_settings(const struct appliance_settings *s, FILE *out)
{
  fprintf(out, "path: %s%s, %s\n", s->private_dns_zone[0] ? "private DNS zone file " : "system resolver",
          s->private_dns_zone, s->require_private_endpoint ? "private endpoint required" : "public endpoint allowed");
  fprintf(out, "TLS: verified against %s\n", s->ca_file[0] ? s->ca_file : "the system CAs");
  fprintf(out, "proxy: %s\n", s->proxy[0] ? "configured (see check)" : "none");
  fprintf(out, "ownership: a %u s lease on each disk's page blob, renewed while running\n", s->lease_duration_s);
  fprintf(out, "page writes carry: %s\n", !s->upload_check[0] || !strcmp(s->upload_check, "none")
                                             ? "no hash (TLS protects them in transit; --upload-check md5|crc64 adds one)"
                                             : !strcmp(s->upload_check, "md5") ? "Content-MD5, verified by the storage"
                                                                              : "x-ms-content-crc64, verified by the storage");
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
  .delete_replica = blob_store_delete_replica,
  .list_points = blob_store_list_points,
  .direct_begin = blob_store_direct_begin,
  .direct_extent = blob_store_direct_extent,
  .direct_room = blob_store_direct_room,
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
  .image_export = blob_image_export,
};
