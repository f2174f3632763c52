/* uploader.c - journal cycles into the disk's page blob: verified two-pass apply, fenced Put Page
 * on one multi handle, commit by sequence number, recovery-point snapshots, reads for resync. */
#include "uploader.h"

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

#include "blob_lease.h"
#include "rpl_log.h"
#include "vhd.h"

#define MIB (1ull << 20)
#define ZERO_BLOCK (64u << 10)

static const uint8_t zero_block[ZERO_BLOCK];

/* Run buffers (BLOB_MAX_PUT_PAGE bytes) are kept for reuse while a cycle is written: each fresh
 * 4 MiB malloc is new memory, whose first touch cost 40 times the copy into it on the test machine
 * (a third of the appliance's CPU in an initial sync). Trimmed when the cycle is done. */
#define POOL_MAX 48 /* > the requests in flight and queued, and the direct writer's queue */

struct buf_pool {
  pthread_mutex_t lock;
  uint8_t *bufs[POOL_MAX];
  unsigned n;
};

/* A pooled buffer, or a new one (NULL when out of memory). */
static uint8_t *pool_get(struct buf_pool *p)
{
  pthread_mutex_lock(&p->lock);
  uint8_t *b = p->n ? p->bufs[--p->n] : NULL;
  pthread_mutex_unlock(&p->lock);
  return b ? b : malloc(BLOB_MAX_PUT_PAGE);
}

/* Back to the pool (b may be NULL); freed when the pool is full. */
static void pool_put(struct buf_pool *p, uint8_t *b)
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

static void pool_trim(struct buf_pool *p)
{
  pthread_mutex_lock(&p->lock);
  while (p->n)
    free(p->bufs[--p->n]);
  pthread_mutex_unlock(&p->lock);
}

/* Contiguous extents of a cycle gathered into one request (flush_run). */
struct run {
  bool zero;
  uint64_t offset, length;
  uint8_t *buf; /* data runs: BLOB_MAX_PUT_PAGE bytes, handed to the request on flush */
};

struct uploader {
  pthread_mutex_t lock;
  struct buf_pool pool; /* run buffers (its own lock) */
  struct blob_config cfg;
  struct appliance_settings settings; /* cfg's strings point here */
  struct blob_client *client;
  char container[64];
  char blob[48];
  uint8_t disk_id[PROTO_ID_SIZE];
  uint64_t disk_size, blob_size;
  uint64_t committed; /* the blob's sequence number */
  ZSTD_DCtx *dctx;
  uint8_t *raw;
  XXH3_state_t *hash;
  rpl_err async_err; /* first failure of the writes in flight */
  struct rate_limit *limit_all, *limit_agent; /* bandwidth limits (not owned), or NULL */
  struct uploader_stats stats;
  struct uploader_lease lease; /* blob_lease.c */
  struct direct *direct; /* the initial sync being written straight into the blob, or NULL */
  bool blank; /* created empty by this uploader and not written since but its footer: a zero
               * extent of the first cycle needs no clear (the extents of a cycle never overlap) */
};

struct put_ctx {
  struct uploader *u;
  uint8_t *buf;
  bool pooled; /* buf goes back to u->pool */
};

rpl_err uploader_config(const struct appliance_settings *s, struct blob_config *cfg, char *why, size_t whysz)
{
  blob_config_init(cfg);
  rpl_err err = blob_connstr_parse(s->storage, &cfg->account, why, whysz);
  if (err)
    return err;
  cfg->private_dns_zone = s->private_dns_zone[0] ? s->private_dns_zone : NULL;
  cfg->ca_file = s->ca_file[0] ? s->ca_file : NULL;
  cfg->proxy = s->proxy[0] ? s->proxy : NULL;
  cfg->proxy_bypass = s->proxy_bypass[0] ? s->proxy_bypass : NULL;
  cfg->identity_endpoint = s->identity_endpoint[0] ? s->identity_endpoint : NULL;
  cfg->require_private_endpoint = s->require_private_endpoint;
  cfg->max_in_flight = s->max_in_flight;
  return RPL_OK;
}

void uploader_blob_name(const uint8_t disk_id[PROTO_ID_SIZE], char out[48])
{
  char id[37];
  uuid_unparse_lower(disk_id, id);
  snprintf(out, 48, "%s.vhd", id);
}

uint64_t uploader_blob_size(uint64_t disk_size) { return (disk_size + MIB - 1) / MIB * MIB + VHD_FOOTER_SIZE; }

static void blob_why(const char *what, const struct blob_reply *r, rpl_err e, char *why, size_t whysz)
{
  snprintf(why, whysz, "%s: %s (HTTP %ld %s%s%s)", what, rpl_strerror(e), r->status, r->error_code,
           r->message[0] ? ": " : "", r->message);
}

static void write_done(void *ctx, rpl_err err, const struct blob_reply *reply);

/* The lease id every write carries (NULL before the lease is held: the write is then refused). */
static const char *lease_id_of(const struct uploader *u) { return u->lease.held ? u->lease.id : NULL; }

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
  struct blob_write_cond none = {.lease_id = lease_id_of(u)};
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
    pool_put(&u->pool, pc->buf);
  else
    free(pc->buf);
  free(pc);
}

rpl_err uploader_open(const struct appliance_settings *s, const uint8_t disk_id[PROTO_ID_SIZE], uint64_t disk_size,
                      struct uploader **out, char *why, size_t whysz)
{
  *out = NULL;
  struct uploader *u = calloc(1, sizeof *u);
  if (!u)
    return RPL_E_NOMEM;
  pthread_mutex_init(&u->lock, NULL);
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
  if ((e = uploader_config(&u->settings, &u->cfg, why, whysz)))
    goto fail;
  /* A request gives up after about 20 s (6 tries, backoff capped at 10 s) instead of the client's
   * minutes: the daemon then holds uploads, shows the storage error in status, checks the storage
   * path again with backoff and retries the whole cycle from the cache. */
  u->cfg.max_tries = 6;
  u->cfg.retry_cap_ms = 10000;
  if ((e = blob_client_open(&u->cfg, &u->client, why, whysz)))
    goto fail;
  e = blob_container_create(u->client, u->container, &r);
  if (e && e != RPL_E_BLOB_EXISTS) {
    blob_why("cannot create the container", &r, e, why, whysz);
    goto fail;
  }
  e = blob_get_properties(u->client, u->container, u->blob, NULL, &r);
  if (e == RPL_E_BLOB_NOT_FOUND) {
    u->blob_size = uploader_blob_size(disk_size);
    e = blob_create_page_blob(u->client, u->container, u->blob, u->blob_size, 0, true, &r);
    if (!e && (e = lease_acquire(u->client, u->container, u->blob, &u->lease, &r)) == RPL_OK)
      e = write_footer(u);
    if (e) {
      blob_why("cannot create the page blob", &r, e, why, whysz);
      goto fail;
    }
    u->committed = 0;
    u->blank = true;
    log_notice("uploader: created page blob %s/%s (%" PRIu64 " bytes)", u->container, u->blob, u->blob_size);
  } else if (e) {
    blob_why("cannot read the page blob's properties", &r, e, why, whysz);
    goto fail;
  } else {
    if (strcmp(r.blob_type, "PageBlob") || r.content_length < 0 || r.sequence_number < 0) {
      e = RPL_E_UPLOAD_BLOB;
      snprintf(why, whysz, "%s/%s: %s", u->container, u->blob, rpl_strerror(e));
      goto fail;
    }
    u->blob_size = (uint64_t)r.content_length;
    u->committed = (uint64_t)r.sequence_number;
    e = lease_acquire(u->client, u->container, u->blob, &u->lease, &r);
    if (e == RPL_E_LEASE_HELD) { /* another appliance writes it: this one waits (uploader_lease_tick) */
      log_warn("uploader %s/%s: %s", u->container, u->blob, rpl_strerror(e));
      e = RPL_OK;
    } else if (e) {
      blob_why("cannot acquire the page blob's lease", &r, e, why, whysz);
      goto fail;
    }
    if (u->lease.held && u->blob_size < uploader_blob_size(disk_size) && (e = uploader_resize(u, disk_size))) {
      snprintf(why, whysz, "cannot grow the page blob: %s", rpl_strerror(e));
      goto fail;
    }
  }
  *out = u;
  return RPL_OK;
fail:
  uploader_close(u);
  return e;
}

void uploader_close(struct uploader *u)
{
  if (!u)
    return;
  uploader_direct_abort(u);
  if (u->client && u->lease.held && blob_client_pending(u->client) == 0)
    lease_release(u->client, u->container, u->blob, &u->lease);
  blob_client_close(u->client);
  pool_trim(&u->pool);
  pthread_mutex_destroy(&u->pool.lock);
  ZSTD_freeDCtx(u->dctx);
  XXH3_freeState(u->hash);
  free(u->raw);
  pthread_mutex_destroy(&u->lock);
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
    e = blob_resize(u->client, u->container, u->blob, want, lease_id_of(u), &r);
    if (!e) {
      u->blob_size = want;
      /* The old footer now lies inside the disk area, which reads as zeros on a new disk. */
      struct blob_write_cond none = {.lease_id = lease_id_of(u)};
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
    return RPL_E_REPLICA_RANGE;
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
      return RPL_E_REPLICA_DECOMPRESS;
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

/* Waits until the bandwidth limits allow len more bytes (the writes in flight progress meanwhile),
 * then takes them from both buckets. */
static uint64_t mono_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* How long both bandwidth limits (either may be NULL) hold back the next bytes, in microseconds. */
static uint64_t limits_wait_us(struct rate_limit *all, struct rate_limit *agent)
{
  uint64_t a = rate_limit_wait_us(all), b = rate_limit_wait_us(agent);
  return a > b ? a : b;
}

static void limits_take(struct rate_limit *all, struct rate_limit *agent, uint32_t len)
{
  rate_limit_take(all, len);
  rate_limit_take(agent, len);
}

static rpl_err pace(struct uploader *u, uint32_t len)
{
  uint64_t t0 = 0;
  for (;;) {
    uint64_t w = limits_wait_us(u->limit_all, u->limit_agent);
    if (!w)
      break;
    if (!t0)
      t0 = mono_ms();
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
    u->stats.limit_wait_ms += mono_ms() - t0;
  limits_take(u->limit_all, u->limit_agent, len);
  return RPL_OK;
}

/* Contiguous extents of a cycle gathered into one request: data up to a Put Page's 4 MiB, zeros
 * into one clear (Azure's Clear Pages takes any page-aligned range). The agent sends 1 MiB extents
 * in disk order, so an initial sync needs a quarter of the data requests and few clears. */
#define CLEAR_RUN_MAX (256ull << 20)

static rpl_err flush_run(struct uploader *u, struct run *r, const struct blob_write_cond *cond)
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
    if ((e = flush_run(u, r, cond)))
      return e;
  if (!r->length) {
    r->zero = zero;
    r->offset = offset;
  }
  if (!zero) {
    if (!r->buf && !(r->buf = pool_get(&u->pool)))
      return RPL_E_NOMEM;
    memcpy(r->buf + r->length, raw, length);
  }
  r->length += length;
  return RPL_OK;
}

/* One pass over the cycle: check every extent; when write is set, also queue its writes. */
static rpl_err apply_pass(struct uploader *u, struct journal_reader *rd, uint64_t n, bool write)
{
  struct blob_write_cond cond = {.sequence_lt = (int64_t)n, .lease_id = lease_id_of(u)};
  struct run run = {0};
  rpl_err e;
  for (;;) {
    struct journal_extent x;
    bool end;
    if ((e = journal_reader_next(rd, &x, &end)) || end)
      break;
    const uint8_t *raw;
    if ((e = extent_raw(u, n, &x, &raw)))
      break;
    if (!write)
      continue;
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
    e = flush_run(u, &run, &cond);
  pool_put(&u->pool, run.buf);
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
  return blob_snapshot_meta(u->client, u->container, u->blob, meta, 2, lease_id_of(u), r);
}

static rpl_err apply_cycle(struct uploader *u, struct journal *j, uint64_t n, uint8_t kind,
                           uploader_snapshot_fn on_snapshot, void *ctx)
{
  if (u->committed >= n) { /* committed before a restart: the journal only did not hear of it */
    struct blob_reply r;
    /* A point's snapshot lost to the crash can still be taken while the blob is at exactly n. */
    if (u->committed == n && kind == PROTO_CYCLE_RECOVERY_POINT && take_snapshot(u, n, &r) == RPL_OK && on_snapshot) {
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
  pool_trim(&u->pool);
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
  if ((e = blob_set_sequence_number(u->client, u->container, u->blob, BLOB_SEQUENCE_UPDATE, (int64_t)n, lease_id_of(u),
                                    &r))) {
    log_err("uploader %s: cannot commit cycle %" PRIu64 ": %s (HTTP %ld %s)", u->blob, n, rpl_strerror(e), r.status,
            r.error_code);
    return e;
  }
  u->committed = n;
  u->stats.cycles++;
  if (kind == PROTO_CYCLE_RECOVERY_POINT) {
    if ((e = take_snapshot(u, n, &r))) {
      log_err("uploader %s: snapshot of cycle %" PRIu64 " failed: %s", u->blob, n, rpl_strerror(e));
      return e;
    }
    u->stats.snapshots++;
    if (on_snapshot)
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
  pthread_mutex_unlock(&u->lock);
  return e;
}

/* A write refused for the lease: someone else has it. Lock held. */
static rpl_err lease_lost_if_refused(struct uploader *u, rpl_err e)
{
  if (e == RPL_E_BLOB_LEASE && u->lease.held) {
    u->lease.held = false;
    u->lease.err = e = RPL_E_LEASE_LOST;
    log_err("uploader %s: %s", u->blob, rpl_strerror(e));
  }
  return e;
}

/* ---- the initial sync written straight into the blob (uploader.h) ---- */

/* The session thread gathers runs and queues them; a writer thread of the direct cycle submits them
 * on a client of its own and keeps the transfers moving while the session thread receives. The
 * uploader's own client stays the applier's (lease renewals, other work). */
#define DIRECT_QUEUE 4 /* runs waiting for the writer; with those in flight, all of the cycle's memory */

struct direct {
  struct uploader *u;
  struct blob_client *client;   /* the writer thread's alone */
  pthread_t writer;
  uint64_t cycle;
  char lease_id[sizeof ((struct uploader_lease *)0)->id];
  size_t in_flight_limit;
  uint64_t disk_size;
  struct rate_limit *limit_all, *limit_agent; /* the uploader's, when the cycle began */
  bool blank;                   /* the blob's zeros need no clear */
  struct run run;               /* being gathered (the session thread's alone) */
  uint64_t limit_wait_ms;       /* the session thread's, for the stats */
  pthread_mutex_t lock;         /* what follows */
  pthread_cond_t changed;
  struct run queue[DIRECT_QUEUE];
  unsigned head, count;
  bool ending, abandon;         /* no more runs: write the queued ones / drop them */
  rpl_err err;                  /* the first failure; later runs are dropped */
  uint64_t put_pages, clears, bytes;
};

struct direct_write {
  struct direct *dr;
  uint8_t *buf;
};

static void direct_fail(struct direct *dr, rpl_err e)
{
  pthread_mutex_lock(&dr->lock);
  if (!dr->err) {
    dr->err = e;
    pthread_cond_broadcast(&dr->changed);
  }
  pthread_mutex_unlock(&dr->lock);
}

static void direct_done(void *ctx, rpl_err err, const struct blob_reply *reply)
{
  struct direct_write *w = ctx;
  if (err) {
    log_err("uploader %s: write failed: %s (HTTP %ld %s)", w->dr->u->blob, rpl_strerror(err), reply ? reply->status : 0,
            reply ? reply->error_code : "");
    direct_fail(w->dr, err);
  }
  pool_put(&w->dr->u->pool, w->buf);
  free(w);
}

/* Writer thread: queues one run on its client (takes its buffer). */
static rpl_err direct_submit(struct direct *dr, struct run *r)
{
  struct uploader *u = dr->u;
  struct blob_write_cond cond = {.sequence_lt = (int64_t)dr->cycle, .lease_id = dr->lease_id};
  struct direct_write *w = calloc(1, sizeof *w);
  if (!w) {
    pool_put(&u->pool, r->buf);
    return RPL_E_NOMEM;
  }
  w->dr = dr;
  rpl_err e;
  if (r->zero) {
    e = blob_clear_pages_async(dr->client, u->container, u->blob, r->offset, r->length, &cond, direct_done, w);
  } else {
    w->buf = r->buf;
    e = blob_put_page_async(dr->client, u->container, u->blob, r->offset, r->buf, (size_t)r->length, &cond,
                            direct_done, w);
  }
  if (e) {
    pool_put(&u->pool, w->buf);
    free(w);
    return e;
  }
  pthread_mutex_lock(&dr->lock);
  if (r->zero)
    dr->clears++;
  else
    dr->put_pages++, dr->bytes += r->length;
  pthread_mutex_unlock(&dr->lock);
  return RPL_OK;
}

static void *direct_writer(void *arg)
{
  struct direct *dr = arg;
  pthread_mutex_lock(&dr->lock);
  for (;;) {
    size_t pending = blob_client_pending(dr->client);
    if (dr->count && (dr->err || dr->abandon || pending < dr->in_flight_limit)) {
      struct run r = dr->queue[dr->head];
      dr->head = (dr->head + 1) % DIRECT_QUEUE;
      dr->count--;
      pthread_cond_broadcast(&dr->changed); /* room for the session thread */
      bool drop = dr->err || dr->abandon;
      pthread_mutex_unlock(&dr->lock);
      rpl_err e = RPL_OK;
      if (drop)
        pool_put(&dr->u->pool, r.buf);
      else if ((e = direct_submit(dr, &r)) == RPL_OK)
        e = blob_client_poll(dr->client, 0);
      if (e)
        direct_fail(dr, e);
      pthread_mutex_lock(&dr->lock);
      continue;
    }
    if (!dr->count && dr->ending && !pending)
      break;
    if (pending) {
      pthread_mutex_unlock(&dr->lock);
      rpl_err e = blob_client_poll(dr->client, 100); /* returns early on blob_client_wakeup */
      if (e)
        direct_fail(dr, e);
      pthread_mutex_lock(&dr->lock);
    } else {
      pthread_cond_wait(&dr->changed, &dr->lock);
    }
  }
  pthread_mutex_unlock(&dr->lock);
  return NULL;
}

/* Session thread: the gathered run to the writer, waiting while its queue is full. */
static rpl_err direct_push(struct direct *dr)
{
  struct run *r = &dr->run;
  if (!r->length)
    return RPL_OK;
  if (r->zero && dr->blank) {
    r->length = 0; /* the pages read as zeros already */
    return RPL_OK;
  }
  if (!r->zero) { /* the bandwidth limits hold the receive back (the writer keeps the transfers going) */
    uint64_t t0 = 0;
    for (;;) {
      uint64_t w = limits_wait_us(dr->limit_all, dr->limit_agent);
      if (!w)
        break;
      if (!t0)
        t0 = mono_ms();
      struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)(w > 100000 ? 100000 : w) * 1000};
      nanosleep(&ts, NULL);
    }
    if (t0)
      dr->limit_wait_ms += mono_ms() - t0;
    limits_take(dr->limit_all, dr->limit_agent, (uint32_t)r->length);
  }
  pthread_mutex_lock(&dr->lock);
  while (dr->count == DIRECT_QUEUE && !dr->err)
    pthread_cond_wait(&dr->changed, &dr->lock);
  rpl_err e = dr->err;
  if (!e) {
    dr->queue[(dr->head + dr->count) % DIRECT_QUEUE] = *r;
    dr->count++;
    r->buf = NULL; /* the writer's now */
    pthread_cond_broadcast(&dr->changed);
  }
  pthread_mutex_unlock(&dr->lock);
  blob_client_wakeup(dr->client);
  r->length = 0;
  return e;
}

bool uploader_direct_begin(struct uploader *u, uint64_t n)
{
  pthread_mutex_lock(&u->lock);
  struct direct *dr = NULL;
  bool ok = n == 1 && u->lease.held && u->committed == 0 && !u->direct && (dr = calloc(1, sizeof *dr)) != NULL;
  if (ok) {
    char why[512] = "";
    dr->u = u;
    dr->cycle = n;
    dr->blank = u->blank;
    dr->disk_size = u->disk_size;
    dr->limit_all = u->limit_all;
    dr->limit_agent = u->limit_agent;
    snprintf(dr->lease_id, sizeof dr->lease_id, "%s", u->lease.id);
    dr->in_flight_limit = u->cfg.max_in_flight ? u->cfg.max_in_flight : BLOB_DEFAULT_IN_FLIGHT;
    pthread_mutex_init(&dr->lock, NULL);
    pthread_cond_init(&dr->changed, NULL);
    rpl_err e = blob_client_open(&u->cfg, &dr->client, why, sizeof why);
    if (e)
      log_warn("uploader %s: no second connection for the initial sync (%s): it goes through the cache", u->blob,
               why[0] ? why : rpl_strerror(e));
    ok = !e && pthread_create(&dr->writer, NULL, direct_writer, dr) == 0;
    if (!ok) {
      blob_client_close(dr->client);
      pthread_cond_destroy(&dr->changed);
      pthread_mutex_destroy(&dr->lock);
      free(dr);
      dr = NULL;
    }
  }
  u->direct = dr;
  pthread_mutex_unlock(&u->lock);
  return ok;
}

rpl_err uploader_direct_extent(struct uploader *u, uint64_t offset, const uint8_t *raw, uint32_t len)
{
  struct direct *dr = u->direct; /* set and cleared by this (the session) thread's calls only */
  if (!dr)
    return RPL_E_INVALID_ARGUMENT;
  if (offset > dr->disk_size || len > dr->disk_size - offset)
    return RPL_E_REPLICA_RANGE;
  struct run *r = &dr->run;
  rpl_err e = RPL_OK;
  for (uint32_t done = 0; done < len && !e;) {
    uint32_t n = len - done < BLOB_MAX_PUT_PAGE ? len - done : BLOB_MAX_PUT_PAGE;
    bool zero = raw == NULL;
    uint64_t cap = zero ? CLEAR_RUN_MAX : BLOB_MAX_PUT_PAGE;
    if (r->length && (r->zero != zero || r->offset + r->length != offset + done || r->length + n > cap))
      e = direct_push(dr);
    if (e)
      break;
    if (!r->length) {
      r->zero = zero;
      r->offset = offset + done;
    }
    if (!zero) {
      if (!r->buf && !(r->buf = pool_get(&u->pool)))
        return RPL_E_NOMEM;
      memcpy(r->buf + r->length, raw + done, n);
    }
    r->length += n;
    done += n;
  }
  if (!e) {
    pthread_mutex_lock(&dr->lock);
    e = dr->err;
    pthread_mutex_unlock(&dr->lock);
  }
  return e;
}

/* Ends the direct cycle: the writer joined (every write finished), its client closed; with commit,
 * the sequence number set. Takes the uploader's lock. */
static rpl_err direct_finish(struct uploader *u, bool commit)
{
  struct direct *dr = u->direct;
  rpl_err e = commit ? direct_push(dr) : RPL_OK;
  pthread_mutex_lock(&dr->lock);
  dr->ending = true;
  dr->abandon = !commit || e;
  pthread_cond_broadcast(&dr->changed);
  pthread_mutex_unlock(&dr->lock);
  blob_client_wakeup(dr->client);
  pthread_join(dr->writer, NULL);
  if (!e)
    e = dr->err;
  blob_client_close(dr->client);
  pool_put(&u->pool, dr->run.buf);
  pool_trim(&u->pool);
  pthread_mutex_lock(&u->lock);
  u->direct = NULL;
  u->blank = false;
  u->stats.put_pages += dr->put_pages;
  u->stats.clears += dr->clears;
  u->stats.bytes_uploaded += dr->bytes;
  u->stats.limit_wait_ms += dr->limit_wait_ms;
  struct blob_reply r;
  if (commit && !e &&
      (e = blob_set_sequence_number(u->client, u->container, u->blob, BLOB_SEQUENCE_UPDATE, (int64_t)dr->cycle,
                                    lease_id_of(u), &r)))
    log_err("uploader %s: cannot commit cycle %" PRIu64 ": %s (HTTP %ld %s)", u->blob, dr->cycle, rpl_strerror(e),
            r.status, r.error_code);
  if (commit && !e) {
    u->committed = dr->cycle;
    u->stats.cycles++;
  }
  e = lease_lost_if_refused(u, e);
  pthread_mutex_unlock(&u->lock);
  pthread_cond_destroy(&dr->changed);
  pthread_mutex_destroy(&dr->lock);
  free(dr);
  return e;
}

rpl_err uploader_direct_commit(struct uploader *u) { return u->direct ? direct_finish(u, true) : RPL_E_INVALID_ARGUMENT; }

void uploader_direct_abort(struct uploader *u)
{
  if (u->direct) {
    rpl_err e = direct_finish(u, false);
    (void)e;
  }
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
  e = lease_lost_if_refused(u, e);
  pthread_mutex_unlock(&u->lock);
  return e;
}

enum upload_failure uploader_failure_kind(rpl_err e)
{
  switch (e) {
  case RPL_E_REPLICA_HASH:
  case RPL_E_REPLICA_DECOMPRESS:
  case RPL_E_REPLICA_RANGE:
  case RPL_E_JOURNAL_CORRUPT:
  case RPL_E_JOURNAL_CYCLE_ORDER:
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

void uploader_get_stats(struct uploader *u, struct uploader_stats *out)
{
  pthread_mutex_lock(&u->lock);
  *out = u->stats;
  blob_client_stats(u->client, &out->blob);
  pthread_mutex_unlock(&u->lock);
}

/* ---- the lease (blob_lease.h) ----------------------------------------------------------------- */

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

rpl_err uploader_list_snapshots(struct uploader *u, struct blob_list *out)
{
  pthread_mutex_lock(&u->lock);
  struct blob_reply r;
  rpl_err e = blob_list_snapshots(u->client, u->container, u->blob, out, &r);
  pthread_mutex_unlock(&u->lock);
  return e;
}
