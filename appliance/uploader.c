/* uploader.c - journal cycles into the disk's page blob: verified two-pass apply, fenced Put Page
 * on one multi handle, commit by sequence number, recovery-point snapshots, reads for resync. */
#include "uploader_internal.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uuid/uuid.h>
#include <xxhash.h>
#include <zstd.h>

#include "lease.h"
#include "rpl_clock.h"
#include "rpl_log.h"
#include "vhd.h"

static const uint8_t zero_block[ZERO_BLOCK];

/* A pooled buffer, or a new one (NULL when out of memory). */
uint8_t *uploader_pool_get(struct buf_pool *p)
{
  pthread_mutex_lock(&p->lock);
  uint8_t *b = p->n ? p->bufs[--p->n] : NULL;
  pthread_mutex_unlock(&p->lock);
  return b ? b : malloc(BLOB_MAX_PUT_PAGE);
}

/* Back to the pool (b may be NULL); freed when the pool is full. */
void uploader_pool_put(struct buf_pool *p, uint8_t *b)
{
  if (!b)
    return;
  pthread_mutex_lock(&p->lock);
  if (p->n < POOL_MAX) {
    p->bufs[p->n++] = b;
    b = NULL;
  }
  pthread_mutex_unlock(&p->lock);
  free(b);
}

void uploader_pool_trim(struct buf_pool *p)
{
  pthread_mutex_lock(&p->lock);
  while (p->n)
    free(p->bufs[--p->n]);
  pthread_mutex_unlock(&p->lock);
}

rpl_err uploader_config(const struct appliance_settings *s, struct blob_config *cfg)
{
  blob_config_init(cfg);
  rpl_err err = blob_connstr_parse(s->storage, &cfg->account);
  if (err)
    return err;
  if ((err = uploader_check_transport(s, &cfg->account)))
    return err;
  cfg->private_dns_zone = s->private_dns_zone[0] ? s->private_dns_zone : NULL;
  cfg->ca_file = s->ca_file[0] ? s->ca_file : NULL;
  cfg->proxy = s->proxy[0] ? s->proxy : NULL;
  cfg->proxy_bypass = s->proxy_bypass[0] ? s->proxy_bypass : NULL;
  cfg->identity_endpoint = s->identity_endpoint[0] ? s->identity_endpoint : NULL;
  cfg->require_private_endpoint = s->require_private_endpoint;
  cfg->max_in_flight = s->max_in_flight;
  if (!uploader_check_parse(s->upload_check, &cfg->upload_check))
    return rpl_fail(RPL_E_CONFIG, "upload_check=%s: write none, md5 or crc64", s->upload_check);
  return RPL_OK;
}

bool uploader_check_parse(const char *text, enum blob_upload_check *out)
{
  static const struct {
    const char *name;
    enum blob_upload_check check;
  } names[] = {{"", BLOB_CHECK_NONE}, {"none", BLOB_CHECK_NONE}, {"md5", BLOB_CHECK_MD5}, {"crc64", BLOB_CHECK_CRC64}};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (strcmp(text, names[i].name) == 0) {
      *out = names[i].check;
      return true;
    }
  return false;
}

void uploader_blob_name(const uint8_t disk_id[PROTO_ID_SIZE], char out[48])
{
  char id[37];
  uuid_unparse_lower(disk_id, id);
  snprintf(out, 48, "%s.vhd", id);
}

/* "http://HOST[:PORT]/..." names this machine. */
static bool endpoint_is_loopback(const char *endpoint)
{
  const char *h = strstr(endpoint, "://");
  h = h ? h + 3 : endpoint;
  size_t n = strcspn(h, ":/");
  if (*h == '[') /* [::1]:port */
    return !strncmp(h, "[::1]", 5);
  return (n == 9 && !strncmp(h, "localhost", 9)) || !strncmp(h, "127.", 4);
}

rpl_err uploader_check_transport(const struct appliance_settings *s, const struct blob_account *acct)
{
  if (acct->https)
    return RPL_OK;
  if (s->allow_http_emulator && endpoint_is_loopback(acct->endpoint))
    return RPL_OK;
  return rpl_fail(RPL_E_BLOB_CONNSTR, "the storage endpoint %s is http: the account's key or token would cross the "
                  "network in clear text; use https (http is taken only for a storage emulator on this machine, "
                  "with init --allow-http-emulator)", acct->endpoint);
}

uint64_t uploader_blob_size(uint64_t disk_size) { return (disk_size + MIB - 1) / MIB * MIB + VHD_FOOTER_SIZE; }

/* Records e with what failed and what the storage answered; returns e. */
static rpl_err blob_fail(const char *what, const struct blob_reply *r, rpl_err e)
{
  return rpl_fail(e, "%s: %s (HTTP %ld %s%s%s)", what, rpl_strerror(e), r->status, r->error_code,
                  r->message[0] ? ": " : "", r->message);
}

static void write_done(void *ctx, rpl_err err, const struct blob_reply *reply);

/* The lease id every write carries (NULL before the lease is held: the write is then refused). */
const char *uploader_lease_id_of(const struct uploader *u) { return u->lease.held ? u->lease.id : NULL; }

static rpl_err write_footer(struct uploader *u)
{
  struct put_ctx *pc = calloc(1, sizeof *pc);
  uint8_t *f = malloc(VHD_FOOTER_SIZE);
  if (!pc || !f) {
    free(pc);
    free(f);
    return RPL_E_NOMEM;
  }
  vhd_footer_make(f, u->blob_size - VHD_FOOTER_SIZE, u->disk_id, time(NULL));
  pc->u = u;
  pc->buf = f;
  u->async_err = RPL_OK;
  /* Not part of a cycle: no fencing (the footer lies outside every cycle's range). */
  struct blob_write_cond none = {.lease_id = uploader_lease_id_of(u)};
  rpl_err e = blob_put_page_async(u->client, u->container, u->blob, u->blob_size - VHD_FOOTER_SIZE, f,
                                  VHD_FOOTER_SIZE, &none, write_done, pc);
  if (e) {
    free(f);
    free(pc);
    return e;
  }
  e = blob_client_drain(u->client);
  return e ? e : u->async_err;
}

/* A footer of an older appliance (creator "rpla": qemu read its CHS geometry, 256 KiB short of a
 * 1 GiB disk) is written again as vhd.c makes it now. Best effort: the data does not depend on it. */
static void refresh_footer(struct uploader *u)
{
  uint8_t f[VHD_FOOTER_SIZE];
  struct blob_reply r = {0};
  uint64_t size;
  if (u->blob_size < VHD_FOOTER_SIZE ||
      blob_read(u->client, u->container, u->blob, NULL, u->blob_size - VHD_FOOTER_SIZE, f, VHD_FOOTER_SIZE, &r) != RPL_OK ||
      !vhd_footer_check(f, &size) || !memcmp(f + 28, VHD_CREATOR_APP, 4))
    return;
  rpl_err e = write_footer(u);
  if (e)
    log_warn("uploader %s/%s: cannot rewrite the old VHD footer: %s", u->container, u->blob, rpl_strerror(e));
  else
    log_notice("uploader %s/%s: rewrote the VHD footer of an older version (creator \"%.4s\")", u->container, u->blob,
               (const char *)f + 28);
}

static void write_done(void *ctx, rpl_err err, const struct blob_reply *reply)
{
  struct put_ctx *pc = ctx;
  struct uploader *u = pc->u;
  if (err && !u->async_err) {
    u->async_err = err;
    log_err("uploader %s: write failed: %s (HTTP %ld %s)", u->blob, rpl_strerror(err), reply ? reply->status : 0,
            reply ? reply->error_code : "");
  }
  if (pc->pooled)
    uploader_pool_put(&u->pool, pc->buf);
  else
    free(pc->buf);
  free(pc);
}

rpl_err uploader_open(const struct appliance_settings *s, const uint8_t disk_id[PROTO_ID_SIZE], uint64_t disk_size,
                      struct uploader **out)
{
  *out = NULL;
  struct uploader *u = calloc(1, sizeof *u);
  if (!u)
    return RPL_E_NOMEM;
  pthread_mutex_init(&u->lock, NULL);
  pthread_mutex_init(&u->stats_lock, NULL);
  pthread_mutex_init(&u->pool.lock, NULL);
  u->settings = *s;
  memcpy(u->disk_id, disk_id, PROTO_ID_SIZE);
  snprintf(u->container, sizeof u->container, "%s", s->container[0] ? s->container : SETTINGS_DEFAULT_CONTAINER);
  uploader_blob_name(disk_id, u->blob);
  u->disk_size = disk_size;
  lease_init(&u->lease, s->lease_id, s->lease_duration_s);
  rpl_err e = RPL_OK;
  struct blob_reply r = {0};
  if (!(u->dctx = ZSTD_createDCtx()) || !(u->hash = XXH3_createState()) || !(u->raw = malloc(PROTO_MAX_EXTENT))) {
    e = RPL_E_NOMEM;
    goto fail;
  }
  if ((e = uploader_config(&u->settings, &u->cfg)))
    goto fail;
  /* A request gives up after about 20 s (6 tries, backoff capped at 10 s) instead of the client's
   * minutes: the daemon then holds uploads, shows the storage error in status, checks the storage
   * path again with backoff and retries the whole cycle from the cache. */
  u->cfg.max_tries = 6;
  u->cfg.retry_cap_ms = 10000;
  if ((e = blob_client_open(&u->cfg, &u->client)))
    goto fail;
  e = blob_container_create(u->client, u->container, &r);
  if (e && e != RPL_E_BLOB_EXISTS) {
    e = blob_fail("cannot create the container", &r, e);
    goto fail;
  }
  e = blob_get_properties(u->client, u->container, u->blob, NULL, &r);
  if (e == RPL_E_BLOB_NOT_FOUND) {
    u->blob_size = uploader_blob_size(disk_size);
    e = blob_create_page_blob(u->client, u->container, u->blob, u->blob_size, 0, true, &r);
    if (!e && (e = lease_acquire(u->client, u->container, u->blob, &u->lease, &r)) == RPL_OK)
      e = write_footer(u);
    if (e) {
      e = blob_fail("cannot create the page blob", &r, e);
      goto fail;
    }
    u->committed = 0;
    u->blank = true;
    log_notice("uploader: created page blob %s/%s (%" PRIu64 " bytes)", u->container, u->blob, u->blob_size);
  } else if (e) {
    e = blob_fail("cannot read the page blob's properties", &r, e);
    goto fail;
  } else {
    if (strcmp(r.blob_type, "PageBlob") || r.content_length < 0 || r.sequence_number < 0) {
      e = rpl_fail(RPL_E_UPLOAD_BLOB, "%s/%s: %s", u->container, u->blob, rpl_strerror(RPL_E_UPLOAD_BLOB));
      goto fail;
    }
    u->blob_size = (uint64_t)r.content_length;
    u->committed = (uint64_t)r.sequence_number;
    e = lease_acquire(u->client, u->container, u->blob, &u->lease, &r);
    if (e == RPL_E_LEASE_HELD) { /* another appliance writes it: this one waits (uploader_lease_tick) */
      log_warn("uploader %s/%s: %s", u->container, u->blob, rpl_strerror(e));
      e = RPL_OK;
    } else if (e) {
      e = blob_fail("cannot acquire the page blob's lease", &r, e);
      goto fail;
    }
    if (u->lease.held && u->blob_size < uploader_blob_size(disk_size) && (e = uploader_resize(u, disk_size))) {
      e = rpl_fail(e, "cannot grow the page blob: %s", rpl_strerror(e));
      goto fail;
    }
    if (u->lease.held)
      refresh_footer(u);
  }
  uploader_publish_stats(u);
  *out = u;
  return RPL_OK;
fail:
  uploader_close(u);
  return e;
}

bool uploader_blank(struct uploader *u)
{
  pthread_mutex_lock(&u->lock);
  bool blank = u->blank;
  pthread_mutex_unlock(&u->lock);
  return blank;
}

void uploader_close(struct uploader *u)
{
  if (!u)
    return;
  uploader_direct_abort(u);
  if (u->client && u->lease.held && blob_client_pending(u->client) == 0)
    lease_release(u->client, u->container, u->blob, &u->lease);
  blob_client_close(u->client);
  uploader_pool_trim(&u->pool);
  pthread_mutex_destroy(&u->pool.lock);
  ZSTD_freeDCtx(u->dctx);
  XXH3_freeState(u->hash);
  free(u->raw);
  pthread_mutex_destroy(&u->lock);
  pthread_mutex_destroy(&u->stats_lock);
  free(u);
}

rpl_err uploader_resize(struct uploader *u, uint64_t disk_size)
{
  pthread_mutex_lock(&u->lock);
  rpl_err e = RPL_OK;
  uint64_t want = uploader_blob_size(disk_size);
  if (disk_size < u->disk_size) {
    e = RPL_E_REPLICA_SHRINK;
  } else if (want > u->blob_size && !u->lease.held) {
    e = u->lease.err ? u->lease.err : RPL_E_LEASE_HELD;
  } else if (want > u->blob_size) {
    struct blob_reply r;
    u->blank = false; /* the old footer is cleared below, but a failure would leave it */
    uint64_t old_footer = u->blob_size - VHD_FOOTER_SIZE;
    e = blob_resize(u->client, u->container, u->blob, want, uploader_lease_id_of(u), &r);
    if (!e) {
      u->blob_size = want;
      /* The old footer now lies inside the disk area, which reads as zeros on a new disk. */
      struct blob_write_cond none = {.lease_id = uploader_lease_id_of(u)};
      e = blob_clear_pages_async(u->client, u->container, u->blob, old_footer, VHD_FOOTER_SIZE, &none, NULL, NULL);
      if (!e)
        e = blob_client_drain(u->client);
      if (!e)
        e = write_footer(u);
    }
  }
  if (!e)
    u->disk_size = disk_size > u->disk_size ? disk_size : u->disk_size;
  pthread_mutex_unlock(&u->lock);
  return e;
}

uint64_t uploader_committed(struct uploader *u)
{
  pthread_mutex_lock(&u->lock);
  uint64_t n = u->committed;
  pthread_mutex_unlock(&u->lock);
  return n;
}

/* ---- applying ----------------------------------------------------------------------------- */

static void zero_hash(struct uploader *u, uint32_t len, uint8_t out[PROTO_HASH_SIZE])
{
  XXH3_128bits_reset(u->hash);
  for (uint32_t done = 0; done < len;) {
    uint32_t n = len - done < ZERO_BLOCK ? len - done : ZERO_BLOCK;
    XXH3_128bits_update(u->hash, zero_block, n);
    done += n;
  }
  XXH128_canonical_t c;
  XXH128_canonicalFromHash(&c, XXH3_128bits_digest(u->hash));
  memcpy(out, c.digest, PROTO_HASH_SIZE);
}

/* The raw bytes of extent x (NULL for a zero extent), checked against its hash. */
static rpl_err extent_raw(struct uploader *u, uint64_t cycle, const struct journal_extent *x, const uint8_t **raw)
{
  uint8_t h[PROTO_HASH_SIZE];
  *raw = NULL;
  if (x->offset > u->disk_size || x->length > u->disk_size - x->offset || x->length > PROTO_MAX_EXTENT) {
    log_err("uploader %s: cycle %" PRIu64 " writes %" PRIu32 " bytes at %" PRIu64 ", past the disk's %" PRIu64,
            u->blob, cycle, x->length, x->offset, u->disk_size);
    return RPL_E_EXTENT_RANGE;
  }
  switch (x->codec) {
  case PROTO_CODEC_NONE:
    if (x->payload_len != x->length)
      return RPL_E_JOURNAL_CORRUPT;
    *raw = x->payload;
    break;
  case PROTO_CODEC_ZSTD: {
    size_t got = ZSTD_decompressDCtx(u->dctx, u->raw, x->length, x->payload, x->payload_len);
    if (ZSTD_isError(got) || got != x->length) {
      log_err("uploader %s: cycle %" PRIu64 ": extent at %" PRIu64 " does not decompress to %" PRIu32 " bytes",
              u->blob, cycle, x->offset, x->length);
      return RPL_E_EXTENT_DECOMPRESS;
    }
    *raw = u->raw;
    break;
  }
  case PROTO_CODEC_ZERO:
    zero_hash(u, x->length, h);
    goto compare;
  default:
    return RPL_E_JOURNAL_CORRUPT;
  }
  proto_hash128(*raw, x->length, h);
compare:
  if (memcmp(h, x->hash, PROTO_HASH_SIZE)) {
    log_err("uploader %s: cycle %" PRIu64 ": extent at %" PRIu64 " (%" PRIu32 " bytes) fails its xxh3-128 check",
            u->blob, cycle, x->offset, x->length);
    return RPL_E_REPLICA_HASH;
  }
  return RPL_OK;
}

/* Keeps the multi handle fed without unbounded memory: at most twice the in-flight limit queued. */
static rpl_err throttle(struct uploader *u)
{
  size_t limit = 2 * (u->cfg.max_in_flight ? u->cfg.max_in_flight : BLOB_DEFAULT_IN_FLIGHT);
  rpl_err le = lease_renew_if_due(u->client, u->container, u->blob, &u->lease);
  if (le)
    return le;
  while (blob_client_pending(u->client) >= limit && !u->async_err) {
    rpl_err e = blob_client_poll(u->client, 100);
    if (e)
      return e;
  }
  return u->async_err;
}

void uploader_set_limits(struct uploader *u, struct rate_limit *all, struct rate_limit *agent)
{
  pthread_mutex_lock(&u->lock);
  u->limit_all = all;
  u->limit_agent = agent;
  pthread_mutex_unlock(&u->lock);
}

void uploader_set_extent_ahead(struct uploader *u, journal_extent_ahead_fn ahead, void *ctx)
{
  pthread_mutex_lock(&u->lock);
  u->ahead = ahead;
  u->ahead_ctx = ctx;
  pthread_mutex_unlock(&u->lock);
}

/* How long both bandwidth limits (either may be NULL) hold back the next bytes, in microseconds. */
uint64_t uploader_limits_wait_us(struct rate_limit *all, struct rate_limit *agent)
{
  uint64_t a = rate_limit_wait_us(all), b = rate_limit_wait_us(agent);
  return a > b ? a : b;
}

void uploader_limits_take(struct rate_limit *all, struct rate_limit *agent, uint32_t len)
{
  rate_limit_take(all, len);
  rate_limit_take(agent, len);
}

/* Waits until the bandwidth limits allow len more bytes (the writes in flight progress meanwhile),
 * then takes them from both buckets. */
static rpl_err pace(struct uploader *u, uint32_t len)
{
  uint64_t t0 = 0;
  for (;;) {
    uint64_t w = uploader_limits_wait_us(u->limit_all, u->limit_agent);
    if (!w)
      break;
    if (!t0)
      t0 = rpl_mono_ms();
    int ms = w > 100000 ? 100 : (int)((w + 999) / 1000);
    if (blob_client_pending(u->client)) {
      rpl_err e = blob_client_poll(u->client, ms);
      if (e)
        return e;
      if (u->async_err)
        return u->async_err;
    } else {
      struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)ms * 1000000};
      nanosleep(&ts, NULL);
    }
  }
  if (t0)
    u->stats.limit_wait_ms += rpl_mono_ms() - t0;
  uploader_limits_take(u->limit_all, u->limit_agent, len);
  return RPL_OK;
}

rpl_err uploader_flush_run(struct uploader *u, struct run *r, const struct blob_write_cond *cond)
{
  if (!r->length)
    return RPL_OK;
  rpl_err e;
  struct put_ctx *pc = calloc(1, sizeof *pc);
  if (!pc)
    return RPL_E_NOMEM;
  pc->u = u;
  if (r->zero && u->blank) {
    free(pc); /* the pages read as zeros already */
    r->length = 0;
    return RPL_OK;
  }
  if (r->zero) {
    e = blob_clear_pages_async(u->client, u->container, u->blob, r->offset, r->length, cond, write_done, pc);
    if (!e)
      u->stats.clears++;
  } else {
    if ((e = pace(u, (uint32_t)r->length))) {
      free(pc);
      return e;
    }
    pc->buf = r->buf;
    pc->pooled = true;
    e = blob_put_page_async(u->client, u->container, u->blob, r->offset, r->buf, (uint32_t)r->length, cond,
                            write_done, pc);
    if (!e) {
      r->buf = NULL; /* the request owns it now */
      u->stats.put_pages++;
      u->stats.bytes_uploaded += r->length;
    } else {
      pc->buf = NULL;
    }
  }
  if (e)
    free(pc);
  r->length = 0;
  uploader_publish_stats(u);
  return e ? e : throttle(u);
}

/* Adds extent bytes (raw, or NULL for zeros) at offset to the run, flushing it first when they
 * do not continue it. */
static rpl_err add_to_run(struct uploader *u, struct run *r, const struct blob_write_cond *cond, uint64_t offset,
                          const uint8_t *raw, uint32_t length)
{
  bool zero = raw == NULL;
  uint64_t cap = zero ? CLEAR_RUN_MAX : BLOB_MAX_PUT_PAGE;
  rpl_err e;
  if (r->length && (r->zero != zero || r->offset + r->length != offset || r->length + length > cap))
    if ((e = uploader_flush_run(u, r, cond)))
      return e;
  if (!r->length) {
    r->zero = zero;
    r->offset = offset;
  }
  if (!zero) {
    if (!r->buf && !(r->buf = uploader_pool_get(&u->pool)))
      return RPL_E_NOMEM;
    memcpy(r->buf + r->length, raw, length);
  }
  r->length += length;
  return RPL_OK;
}

/* Before an extent that starts below the end of those already queued: the writes queued and in
 * flight finish first. The requests in flight land in any order, and a later extent of a cycle
 * overlapping an earlier one must win (a point's remainder read again frozen, see agent/points.c).
 * The blob's pages under it may hold data from now on, so zeros are cleared, not skipped. */
static rpl_err settle_before_overlap(struct uploader *u, struct run *run, const struct blob_write_cond *cond)
{
  rpl_err e = uploader_flush_run(u, run, cond);
  if (!e)
    e = blob_client_drain(u->client);
  if (!e)
    e = u->async_err;
  u->blank = false;
  return e;
}

/* One pass over the cycle: check every extent; when write is set, also queue its writes. */
static rpl_err apply_pass(struct uploader *u, struct journal_reader *rd, uint64_t n, bool write)
{
  struct blob_write_cond cond = {.sequence_lt = (int64_t)n, .lease_id = uploader_lease_id_of(u)};
  struct run run = {0};
  uint64_t queued_end = 0; /* the highest end of the extents queued so far */
  rpl_err e;
  for (;;) {
    struct journal_extent x;
    bool end;
    if ((e = journal_reader_next(rd, &x, &end)) || end)
      break;
    const uint8_t *raw;
    if ((e = extent_raw(u, n, &x, &raw)))
      break;
    if (!write && u->ahead && (e = u->ahead(u->ahead_ctx, x.offset, x.length)))
      break;
    if (!write)
      continue;
    if (x.offset < queued_end && (e = settle_before_overlap(u, &run, &cond)))
      break;
    if (x.offset + x.length > queued_end)
      queued_end = x.offset + x.length;
    for (uint32_t done = 0; done < x.length && !e;) {
      uint32_t len = x.length - done < BLOB_MAX_PUT_PAGE ? x.length - done : BLOB_MAX_PUT_PAGE;
      e = add_to_run(u, &run, &cond, x.offset + done, raw ? raw + done : NULL, len);
      done += len;
    }
    /* The transfers move only while the client is polled: a turn between extents keeps them going
     * while this thread reads and checks the next ones. */
    if (!e && blob_client_pending(u->client))
      e = blob_client_poll(u->client, 0);
    if (!e)
      e = u->async_err;
    if (e)
      break;
  }
  if (!e && write)
    e = uploader_flush_run(u, &run, &cond);
  uploader_pool_put(&u->pool, run.buf);
  return e;
}

/* Snapshot of the blob at cycle n, carrying what another appliance needs to adopt it as a point
 * (UPLOADER_META_* metadata: the cycle, the time). */
static rpl_err take_snapshot(struct uploader *u, uint64_t n, struct blob_reply *r)
{
  char cycle[24], when[24];
  snprintf(cycle, sizeof cycle, "%" PRIu64, n);
  snprintf(when, sizeof when, "%lld", (long long)time(NULL));
  const struct blob_header meta[] = {{UPLOADER_META_CYCLE, cycle}, {UPLOADER_META_TIME, when}};
  return blob_snapshot_meta(u->client, u->container, u->blob, meta, 2, uploader_lease_id_of(u), r);
}

static rpl_err apply_cycle(struct uploader *u, struct journal *j, uint64_t n, uint8_t kind,
                           uploader_snapshot_fn on_snapshot, void *ctx)
{
  if (u->committed >= n) { /* committed before a restart: the journal only did not hear of it */
    struct blob_reply r;
    /* A point's snapshot lost to the crash can still be taken while the blob is at exactly n. */
    if (u->committed == n && kind == PROTO_CYCLE_RECOVERY_POINT && on_snapshot && take_snapshot(u, n, &r) == RPL_OK) {
      u->stats.snapshots++;
      on_snapshot(ctx, n, r.snapshot);
    }
    return journal_mark_applied(j, n);
  }
  struct journal_reader *rd;
  rpl_err e = journal_reader_open(j, n, &rd);
  if (e)
    return e;
  u->async_err = RPL_OK;
  if ((e = apply_pass(u, rd, n, false)) == RPL_OK && (e = journal_reader_rewind(rd)) == RPL_OK)
    e = apply_pass(u, rd, n, true);
  journal_reader_close(rd);
  /* Whatever happened, nothing of the cycle may stay in flight past this call. */
  rpl_err d = blob_client_drain(u->client);
  uploader_pool_trim(&u->pool);
  u->blank = false; /* a cycle tried again after a failure clears its zeros as any other */
  if (!e)
    e = d ? d : u->async_err;
  struct blob_reply r;
  if (e == RPL_E_BLOB_FENCED && blob_get_properties(u->client, u->container, u->blob, NULL, &r) == RPL_OK &&
      r.sequence_number >= 0) {
    /* Someone committed a cycle >= n (this appliance before a lost reply): the blob says which. */
    log_warn("uploader %s: cycle %" PRIu64 " fenced: the blob's sequence number is %" PRId64, u->blob, n,
             r.sequence_number);
    u->committed = (uint64_t)r.sequence_number;
  }
  if (e)
    return e;
  if ((e = blob_set_sequence_number(u->client, u->container, u->blob, BLOB_SEQUENCE_UPDATE, (int64_t)n, uploader_lease_id_of(u),
                                    &r))) {
    log_err("uploader %s: cannot commit cycle %" PRIu64 ": %s (HTTP %ld %s)", u->blob, n, rpl_strerror(e), r.status,
            r.error_code);
    return e;
  }
  u->committed = n;
  u->stats.cycles++;
  if (kind == PROTO_CYCLE_RECOVERY_POINT && on_snapshot) {
    if ((e = take_snapshot(u, n, &r))) {
      log_err("uploader %s: snapshot of cycle %" PRIu64 " failed: %s", u->blob, n, rpl_strerror(e));
      return e;
    }
    u->stats.snapshots++;
    on_snapshot(ctx, n, r.snapshot);
  }
  return journal_mark_applied(j, n);
}

rpl_err uploader_snapshot(struct uploader *u, uint64_t n, char *id, size_t idsz)
{
  struct blob_reply r;
  pthread_mutex_lock(&u->lock);
  rpl_err e = u->committed == n ? take_snapshot(u, n, &r) : RPL_E_INVALID_ARGUMENT;
  if (!e) {
    u->stats.snapshots++;
    snprintf(id, idsz, "%s", r.snapshot);
  }
  uploader_publish_stats(u);
  pthread_mutex_unlock(&u->lock);
  return e;
}

/* A write refused for the lease: someone else has it. Lock held. */
rpl_err uploader_lease_lost_if_refused(struct uploader *u, rpl_err e)
{
  if ((e == RPL_E_LEASE_HELD || e == RPL_E_LEASE_LOST) && u->lease.held) {
    u->lease.held = false;
    u->lease.err = e = RPL_E_LEASE_LOST;
    log_err("uploader %s: %s", u->blob, rpl_strerror(e));
  }
  return e;
}

rpl_err uploader_apply_pending(struct uploader *u, struct journal *j, uint64_t *applied,
                               uploader_snapshot_fn on_snapshot, void *ctx)
{
  return uploader_apply_some(u, j, UINT64_MAX, applied, on_snapshot, ctx);
}

rpl_err uploader_apply_some(struct uploader *u, struct journal *j, uint64_t max, uint64_t *applied,
                            uploader_snapshot_fn on_snapshot, void *ctx)
{
  uint64_t done = 0;
  if (applied)
    *applied = 0;
  pthread_mutex_lock(&u->lock);
  rpl_err e = RPL_OK;
  struct journal_usage us;
  journal_get_usage(j, &us);
  if (!u->lease.held || (e = lease_renew_if_due(u->client, u->container, u->blob, &u->lease))) {
    e = e ? e : u->lease.err ? u->lease.err : RPL_E_LEASE_HELD;
  } else if (u->committed < us.last_applied) {
    log_err("uploader %s: blob sequence number %" PRIu64 " < applied cycle %" PRIu64, u->blob, u->committed,
            us.last_applied);
    e = RPL_E_UPLOAD_BEHIND;
  }
  while (!e && done < max) {
    struct journal_cycle_info info;
    e = journal_next_pending(j, &info);
    if (e == RPL_E_NOT_FOUND) {
      e = RPL_OK;
      break;
    }
    if (e || (e = apply_cycle(u, j, info.cycle, info.kind, on_snapshot, ctx)))
      break;
    done++;
    if (applied)
      (*applied)++;
  }
  e = uploader_lease_lost_if_refused(u, e);
  uploader_publish_stats(u);
  pthread_mutex_unlock(&u->lock);
  return e;
}

enum upload_failure uploader_failure_kind(rpl_err e)
{
  switch (e) {
  case RPL_E_REPLICA_HASH:
  case RPL_E_EXTENT_DECOMPRESS:
  case RPL_E_EXTENT_RANGE:
  case RPL_E_JOURNAL_CORRUPT:
  case RPL_E_CYCLE_ORDER:
  case RPL_E_UPLOAD_BEHIND:
  case RPL_E_UPLOAD_BLOB:
  case RPL_E_NOMEM:
    return UPLOAD_FAILURE_RESYNC;
  case RPL_E_LEASE_HELD:
  case RPL_E_LEASE_LOST:
    return UPLOAD_FAILURE_OWNERSHIP;
  default:
    return UPLOAD_FAILURE_STORAGE;
  }
}

rpl_err uploader_read(struct uploader *u, uint64_t offset, void *buf, size_t len)
{
  if (offset > u->disk_size || len > u->disk_size - offset)
    return RPL_E_INVALID_ARGUMENT;
  pthread_mutex_lock(&u->lock);
  struct blob_page_list pl = {0};
  struct blob_reply r;
  rpl_err e = blob_get_page_ranges(u->client, u->container, u->blob, NULL, offset, len, &pl, &r);
  if (!e) {
    memset(buf, 0, len);
    for (size_t i = 0; i < pl.count && !e; i++) {
      uint64_t a = pl.ranges[i].offset < offset ? offset : pl.ranges[i].offset;
      uint64_t b = pl.ranges[i].offset + pl.ranges[i].length;
      if (b > offset + len)
        b = offset + len;
      if (b > a)
        e = blob_read(u->client, u->container, u->blob, NULL, a, (uint8_t *)buf + (a - offset), (size_t)(b - a), &r);
    }
  }
  blob_page_list_free(&pl);
  pthread_mutex_unlock(&u->lock);
  return e;
}

void uploader_publish_stats(struct uploader *u)
{
  pthread_mutex_lock(&u->stats_lock);
  u->pub = u->stats;
  blob_client_stats(u->client, &u->pub.blob);
  pthread_mutex_unlock(&u->stats_lock);
}

/* Never waits for u->lock: an apply holds it for a whole cycle's upload, and a metrics scrape or
 * status (under the appliance's lock) must not wait that long. */
void uploader_get_stats(struct uploader *u, struct uploader_stats *out)
{
  pthread_mutex_lock(&u->stats_lock);
  *out = u->pub;
  pthread_mutex_unlock(&u->stats_lock);
}

/* ---- the lease (lease.h) ----------------------------------------------------------------- */

rpl_err uploader_lease_tick(struct uploader *u, bool *acquired_now, int64_t *sequence)
{
  *acquired_now = false;
  pthread_mutex_lock(&u->lock);
  rpl_err e = RPL_OK;
  if (u->lease.held) {
    e = lease_renew_if_due(u->client, u->container, u->blob, &u->lease);
  } else {
    struct blob_reply r;
    e = lease_acquire(u->client, u->container, u->blob, &u->lease, &r);
    if (!e && (e = blob_get_properties(u->client, u->container, u->blob, NULL, &r)) == RPL_OK) {
      /* The blob's own state is the truth now: another appliance may have written it meanwhile. */
      u->blob_size = (uint64_t)r.content_length;
      u->committed = r.sequence_number > 0 ? (uint64_t)r.sequence_number : 0;
      *acquired_now = true;
      if (sequence)
        *sequence = r.sequence_number;
    }
  }
  pthread_mutex_unlock(&u->lock);
  if (!e && *acquired_now && u->blob_size < uploader_blob_size(u->disk_size))
    e = uploader_resize(u, u->disk_size);
  return e;
}

bool uploader_lease_held(struct uploader *u, rpl_err *why)
{
  pthread_mutex_lock(&u->lock);
  bool held = u->lease.held;
  if (why)
    *why = held ? RPL_OK : u->lease.err ? u->lease.err : RPL_E_LEASE_HELD;
  pthread_mutex_unlock(&u->lock);
  return held;
}

rpl_err uploader_delete_snapshot(struct uploader *u, const char *snapshot)
{
  if (!snapshot || !*snapshot)
    return RPL_E_INVALID_ARGUMENT;
  pthread_mutex_lock(&u->lock);
  struct blob_reply r;
  rpl_err e = blob_delete(u->client, u->container, u->blob, snapshot, &r);
  pthread_mutex_unlock(&u->lock);
  return e;
}

rpl_err uploader_delete_blob(struct uploader *u)
{
  uploader_direct_abort(u);
  pthread_mutex_lock(&u->lock);
  if (u->lease.held)
    lease_release(u->client, u->container, u->blob, &u->lease);
  struct blob_reply r;
  memset(&r, 0, sizeof r);
  rpl_err e = blob_delete(u->client, u->container, u->blob, NULL, &r);
  pthread_mutex_unlock(&u->lock);
  if (e == RPL_E_BLOB_NOT_FOUND)
    return RPL_OK;
  return e ? rpl_fail(e, "cannot delete the page blob %s/%s: %s (HTTP %ld %s)", u->container, u->blob,
                      rpl_strerror(e), r.status, r.error_code)
           : RPL_OK;
}

rpl_err uploader_list_snapshots(struct uploader *u, struct blob_list *out)
{
  pthread_mutex_lock(&u->lock);
  struct blob_reply r;
  rpl_err e = blob_list_snapshots(u->client, u->container, u->blob, out, &r);
  pthread_mutex_unlock(&u->lock);
  return e;
}
