/* resync_index.c - the daemon's side of the disks' hash indexes (hashindex.h): loaded with the
 * disk, kept stale-marked as cycles are applied, rehashed in the background, verified and asked
 * by a resync instead of reading the replica back, and shown in status. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "appliance.h"
#include "rpl_log.h"
#include "state_files.h"

#define REHASH_BATCH      8       /* chunks the background rehash reads per applier pass (bounded work) */
#define SAVE_EVERY_MS     30000   /* a changed index is saved at most this often (and at close) */
#define COOL_MS           30000   /* a stale chunk is rehashed once unwritten for one to two of these */
#define VERIFY_SAMPLE     32      /* known chunks a resync re-reads and compares before trusting the index */

/* RPL_HASHINDEX=off: resyncs read every chunk from the replica (the index is still kept) - the
 * full read, for comparison and as a way out. */
static bool index_off(void)
{
  const char *v = getenv("RPL_HASHINDEX");
  return v && !strcmp(v, "off");
}

void resync_index_open(struct appliance *a, struct disk *d)
{
  char id[37], path[1200];
  id_text(d->id, id);
  snprintf(path, sizeof path, "%s/" STATE_JOURNAL_DIR "/%s/" STATE_HASHINDEX, a->state_dir, id);
  rpl_err e = hashindex_open(path, d->size, HASH_CHUNK_MIN, &d->hidx);
  if (e) {
    log_warn("disk %s: no hash index (%s): a resync reads its replica back", d->name, rpl_strerror(e));
    return;
  }
  struct hashindex_stats hs;
  hashindex_get_stats(d->hidx, &hs);
  log_info("disk %s: hash index: %s%s", d->name, hs.loaded, index_off() ? " (not used: RPL_HASHINDEX=off)" : "");
  d->hidx_saved_ms = d->hidx_cooled_ms = rpl_mono_ms();
}

void resync_index_store_opened(struct disk *d, struct store *st)
{
  if (!d->hidx || !st->blank)
    return;
  hashindex_blank(d->hidx);
  log_info("disk %s: hash index: a new replica, every chunk known as zeros", d->name);
}

void resync_index_close(struct disk *d)
{
  hashindex_close(d->hidx);
  d->hidx = NULL;
}

void resync_index_follow_size(struct appliance *a, struct disk *d)
{
  if (!d->hidx)
    return;
  pthread_mutex_lock(&a->lock);
  uint64_t size = d->size;
  pthread_mutex_unlock(&a->lock);
  hashindex_resize(d->hidx, size);
}

rpl_err resync_index_stale(struct disk *d, uint64_t offset, uint64_t length)
{
  return d->hidx ? hashindex_write(d->hidx, offset, NULL, length, false, NULL) : RPL_OK;
}

/* Reads chunk c of the replica into buf and hashes it. */
static rpl_err read_chunk(struct store *st, uint64_t off, size_t len, uint8_t *buf, uint8_t h[PROTO_HASH_SIZE])
{
  rpl_err e = st->ops->read(st, off, buf, len);
  if (!e)
    proto_hash128(buf, len, h);
  return e;
}

static size_t len_of(uint64_t size, uint32_t chunk, uint64_t c)
{
  uint64_t off = c * chunk;
  return off + chunk > size ? (size_t)(size - off) : chunk;
}

bool resync_index_background(struct appliance *a, struct disk *d, bool rehash)
{
  if (!d->hidx)
    return false;
  uint64_t now = rpl_mono_ms();
  if (now - d->hidx_saved_ms >= SAVE_EVERY_MS && hashindex_dirty(d->hidx)) {
    rpl_err e = hashindex_save(d->hidx);
    if (e)
      log_warn("disk %s: hash index not saved: %s", d->name, rpl_detail(e)[0] ? rpl_detail(e) : rpl_strerror(e));
    d->hidx_saved_ms = now;
  }
  if (now - d->hidx_cooled_ms >= COOL_MS) {
    hashindex_cool(d->hidx);
    d->hidx_cooled_ms = now;
  }
  if (!rehash)
    return false;
  pthread_mutex_lock(&a->lock);
  struct store *st = d->store;
  uint64_t size = d->size;
  bool idle = st && d->last_applied == d->last_committed && !d->lease_waiting && !d->upload_waiting &&
              !d->snap_pending && !d->copy_due && d->state != CATALOG_DISK_ERROR && d->adopt_seq == 0;
  pthread_mutex_unlock(&a->lock);
  /* A direct cycle writes the replica from a session: a read now could see half of it. */
  if (!idle || hashindex_direct_busy(d->hidx))
    return false;
  hashindex_resize(d->hidx, size);
  uint64_t todo[REHASH_BATCH];
  size_t n = hashindex_stale_chunks(d->hidx, &d->hidx_cursor, todo, REHASH_BATCH);
  if (!n)
    return false;
  uint32_t chunk = hashindex_chunk_size(d->hidx);
  uint8_t *buf = malloc(chunk);
  if (!buf)
    return false;
  struct rate_limit *limit = a->settings.upload_limit_mbps ? &a->limit_all : NULL;
  size_t done = 0;
  for (; done < n && !atomic_load(&appliance_stopping); done++) {
    if (rate_limit_wait_us(limit)) /* the upload limit holds reads too: the rest waits for a later pass */
      break;
    size_t len = len_of(size, chunk, todo[done]);
    rate_limit_take(limit, len);
    uint64_t gen = hashindex_generation(d->hidx);
    uint8_t h[PROTO_HASH_SIZE];
    rpl_err e = read_chunk(st, todo[done] * chunk, len, buf, h);
    if (e) {
      log_debug("disk %s: hash index: chunk %" PRIu64 " not rehashed: %s", d->name, todo[done], rpl_strerror(e));
      break;
    }
    hashindex_rehashed(d->hidx, todo[done], h, gen);
    hashindex_count(d->hidx, HI_REHASHED_CHUNKS, 1);
    hashindex_count(d->hidx, HI_REHASH_READ_BYTES, len);
  }
  free(buf);
  return done == n;
}

rpl_err resync_index_begin(struct appliance *a, struct disk *d, struct store *st, uint32_t chunk_size, uint8_t *buf)
{
  bool use = d->hidx && !index_off() && st && chunk_size == hashindex_chunk_size(d->hidx);
  log_info("disk %s: resync: first hashes in (chunks of %" PRIu32 " bytes): %s", d->name, chunk_size,
           use ? "compared with the hash index" : d->hidx && index_off() ? "the replica is read back (RPL_HASHINDEX=off)"
                                                                       : "the replica is read back");
  if (d->hidx)
    hashindex_count(d->hidx, HI_RESYNCS, 1);
  if (!use)
    return RPL_OK;
  resync_index_follow_size(a, d);
  pthread_mutex_lock(&a->lock);
  uint64_t size = d->size;
  pthread_mutex_unlock(&a->lock);
  /* Sampled known chunks read back: an index that lies about one of them is not trusted at all. */
  uint64_t sample[VERIFY_SAMPLE];
  size_t n = hashindex_sample(d->hidx, sample, VERIFY_SAMPLE);
  for (size_t i = 0; i < n; i++) {
    uint64_t gen = hashindex_generation(d->hidx);
    size_t len = len_of(size, chunk_size, sample[i]);
    uint8_t h[PROTO_HASH_SIZE], known[PROTO_HASH_SIZE];
    rpl_err e = read_chunk(st, sample[i] * chunk_size, len, buf, h);
    if (e)
      return e;
    hashindex_count(d->hidx, HI_VERIFIED_CHUNKS, 1);
    hashindex_count(d->hidx, HI_VERIFY_READ_BYTES, len);
    if (hashindex_lookup(d->hidx, sample[i], known) && gen == hashindex_generation(d->hidx) &&
        memcmp(known, h, PROTO_HASH_SIZE)) {
      char why[96];
      snprintf(why, sizeof why, "chunk %" PRIu64 " did not match the replica when verified", sample[i]);
      hashindex_count(d->hidx, HI_VERIFY_FAILURES, 1);
      log_warn("disk %s: hash index: %s: every chunk is read from the replica", d->name, why);
      if ((e = hashindex_invalidate(d->hidx, why)))
        return e;
      break;
    }
  }
  struct hashindex_stats hs;
  hashindex_get_stats(d->hidx, &hs);
  hashindex_count(d->hidx, HI_RESYNC_STALE_CHUNKS, hs.stale_chunks);
  log_info("disk %s: resync: %zu chunk(s) of the hash index verified, %" PRIu64 " of %" PRIu64 " stale", d->name, n,
           hs.stale_chunks, hs.chunks);
  return RPL_OK;
}

rpl_err resync_index_differs(struct disk *d, struct store *st, uint32_t chunk_size, uint64_t c, uint64_t off,
                             size_t len, const uint8_t *hash, uint8_t *buf, bool *differs)
{
  uint8_t h[PROTO_HASH_SIZE];
  bool use = d->hidx && !index_off() && chunk_size == hashindex_chunk_size(d->hidx);
  if (use && hashindex_lookup(d->hidx, c, h)) {
    hashindex_count(d->hidx, HI_RESYNC_INDEX_CHUNKS, 1);
    *differs = memcmp(h, hash, PROTO_HASH_SIZE) != 0;
    return RPL_OK;
  }
  uint64_t gen = d->hidx ? hashindex_generation(d->hidx) : 0;
  rpl_err e = read_chunk(st, off, len, buf, h);
  if (e)
    return e;
  if (d->hidx) {
    hashindex_count(d->hidx, HI_RESYNC_READ_CHUNKS, 1);
    hashindex_count(d->hidx, HI_RESYNC_READ_BYTES, len);
    if (chunk_size == hashindex_chunk_size(d->hidx))
      hashindex_rehashed(d->hidx, c, h, gen);
  }
  *differs = memcmp(h, hash, PROTO_HASH_SIZE) != 0;
  return RPL_OK;
}

void resync_index_status(struct disk *d, struct json_out *j, FILE *f)
{
  if (!d->hidx)
    return;
  struct hashindex_stats s;
  hashindex_get_stats(d->hidx, &s);
  if (!j) {
    fprintf(f, ", hash index %" PRIu64 "/%" PRIu64 " chunks stale", s.stale_chunks, s.chunks);
    return;
  }
  json_object_begin(j, "hash_index");
  json_bool(j, "used", !index_off());
  json_u64(j, "chunk_size", s.chunk_size);
  json_u64(j, "chunks", s.chunks);
  json_u64(j, "stale_chunks", s.stale_chunks);
  json_u64(j, "resyncs", s.resyncs);
  json_u64(j, "resync_read_bytes", s.resync_read_bytes);
  json_u64(j, "resync_read_chunks", s.resync_read_chunks);
  json_u64(j, "resync_index_chunks", s.resync_index_chunks);
  json_u64(j, "resync_stale_chunks", s.resync_stale_chunks);
  json_u64(j, "verified_chunks", s.verified_chunks);
  json_u64(j, "verify_read_bytes", s.verify_read_bytes);
  json_u64(j, "verify_failures", s.verify_failures);
  json_u64(j, "rehashed_chunks", s.rehashed_chunks);
  json_u64(j, "rehash_read_bytes", s.rehash_read_bytes);
  json_string(j, "loaded", s.loaded);
  json_object_end(j);
}
