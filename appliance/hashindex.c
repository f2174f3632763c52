/* hashindex.c - a disk's hash index (hashindex.h): the chunks' hashes in memory, the write-ahead
 * "open" mark and the crash-safe save of the file beside the disk's journal. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t: a direct write's chunk hashed as it streams in */
#include <xxhash.h>

#include "file_io.h"
#include "hashindex.h"
#include "rpl_log.h"

enum chunk_state { CH_STALE = 0, CH_KNOWN = 1, CH_PENDING = 2 };

struct hashindex {
  pthread_mutex_t lock;
  char path[4096];
  uint32_t chunk_size;
  uint64_t disk_size, nchunks;
  uint8_t *state;                  /* enum chunk_state per chunk */
  uint8_t *heat;                   /* per chunk: bit 0 written this period, bit 1 the period before */
  uint8_t (*hash)[PROTO_HASH_SIZE];
  uint64_t stale;                  /* chunks not CH_KNOWN */
  uint64_t gen;                    /* raised by every write */
  bool dirty;                      /* changed since the file was written */
  uint64_t version;                /* raised by every change (a save knows whether it caught them all) */
  bool open_on_disk;               /* the file says open (or there is none): no flip needed before a write */
  unsigned direct;                 /* direct writes since the last commit or abort */
  /* A direct write's chunk hashed as its bytes stream in, in order. */
  XXH3_state_t stream;
  bool streaming;
  uint64_t stream_chunk, stream_next; /* the chunk, and the offset its next byte is at */
  uint8_t zero_hash[PROTO_HASH_SIZE];   /* of a whole chunk of zeros, once zero_hashed */
  bool zero_hashed;
  uint64_t rng;
  uint64_t counters[HI_COUNTERS];
  char loaded[160];
};

static void put_u32(uint8_t *p, uint32_t v)
{
  for (int i = 0; i < 4; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}
static void put_u64(uint8_t *p, uint64_t v)
{
  for (int i = 0; i < 8; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get_u32(const uint8_t *p)
{
  uint32_t v = 0;
  for (int i = 3; i >= 0; i--)
    v = v << 8 | p[i];
  return v;
}
static uint64_t get_u64(const uint8_t *p)
{
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--)
    v = v << 8 | p[i];
  return v;
}

static uint64_t nchunks_of(uint64_t size, uint32_t chunk) { return (size + chunk - 1) / chunk; }
static size_t bitmap_words(uint64_t nchunks) { return (size_t)((nchunks + 63) / 64); }
static size_t body_size(uint64_t nchunks) { return bitmap_words(nchunks) * 8 + (size_t)nchunks * PROTO_HASH_SIZE; }

static void encode_header(uint8_t h[HASHINDEX_HEADER_SIZE], uint32_t flags, uint32_t chunk, uint64_t disk_size,
                          uint64_t nchunks, uint64_t body_sum)
{
  memset(h, 0, HASHINDEX_HEADER_SIZE);
  memcpy(h, HASHINDEX_MAGIC, sizeof HASHINDEX_MAGIC);
  put_u32(h + 8, HASHINDEX_VERSION);
  put_u32(h + 12, flags);
  put_u32(h + 16, chunk);
  put_u64(h + 24, disk_size);
  put_u64(h + 32, nchunks);
  put_u64(h + 40, body_sum);
  put_u64(h + 48, XXH3_64bits(h, 48));
}

/* Something changed that the file does not say yet (lock held). */
static void changed(struct hashindex *hi)
{
  hi->dirty = true;
  hi->version++;
}

/* Every chunk stale (lock held). */
static void all_stale(struct hashindex *hi)
{
  memset(hi->state, CH_STALE, (size_t)hi->nchunks);
  memset(hi->hash, 0, (size_t)hi->nchunks * PROTO_HASH_SIZE);
  hi->stale = hi->nchunks;
  hi->streaming = false;
  hi->gen++;
  changed(hi);
}

static rpl_err alloc_arrays(struct hashindex *hi, uint64_t nchunks)
{
  uint8_t *st = realloc(hi->state, nchunks ? (size_t)nchunks : 1);
  if (!st)
    return RPL_E_NOMEM;
  hi->state = st;
  uint8_t(*h)[PROTO_HASH_SIZE] = realloc(hi->hash, nchunks ? (size_t)nchunks * PROTO_HASH_SIZE : 1);
  if (!h)
    return RPL_E_NOMEM;
  hi->hash = h;
  uint8_t *heat = realloc(hi->heat, nchunks ? (size_t)nchunks : 1);
  if (!heat)
    return RPL_E_NOMEM;
  if (nchunks > hi->nchunks)
    memset(heat + hi->nchunks, 0, (size_t)(nchunks - hi->nchunks));
  hi->heat = heat;
  return RPL_OK;
}

/* Reads the file into hi (arrays sized already); "" when it loaded, else why not. */
static void load(struct hashindex *hi, char *why, size_t whysz)
{
  int fd = open(hi->path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    snprintf(why, whysz, errno == ENOENT ? "none yet" : "unreadable: %s", strerror(errno));
    return;
  }
  uint8_t h[HASHINDEX_HEADER_SIZE];
  uint8_t *body = NULL;
  ssize_t n = pread(fd, h, sizeof h, 0);
  if (n != (ssize_t)sizeof h || memcmp(h, HASHINDEX_MAGIC, sizeof HASHINDEX_MAGIC)) {
    snprintf(why, whysz, "not a hash index");
  } else if (get_u64(h + 48) != XXH3_64bits(h, 48)) {
    snprintf(why, whysz, "its header is damaged");
  } else if (get_u32(h + 8) != HASHINDEX_VERSION) {
    snprintf(why, whysz, "version %" PRIu32 " (this one reads %u)", get_u32(h + 8), HASHINDEX_VERSION);
  } else if (get_u32(h + 12) & HASHINDEX_FLAG_OPEN) {
    snprintf(why, whysz, "left open (the replica was being written when the appliance stopped)");
  } else if (get_u32(h + 16) != hi->chunk_size) {
    snprintf(why, whysz, "chunks of %" PRIu32 " bytes, not %" PRIu32, get_u32(h + 16), hi->chunk_size);
  } else if (get_u64(h + 24) > hi->disk_size || get_u64(h + 32) != nchunks_of(get_u64(h + 24), hi->chunk_size)) {
    snprintf(why, whysz, "made for a disk of %" PRIu64 " bytes", get_u64(h + 24));
  } else {
    uint64_t fchunks = get_u64(h + 32);
    size_t fsz = body_size(fchunks);
    if (!(body = malloc(fsz ? fsz : 1))) {
      snprintf(why, whysz, "out of memory");
    } else if (pread(fd, body, fsz, HASHINDEX_HEADER_SIZE) != (ssize_t)fsz ||
               pread(fd, h, 1, (off_t)(HASHINDEX_HEADER_SIZE + fsz)) != 0) {
      snprintf(why, whysz, "its size is wrong");
    } else if (XXH3_64bits(body, fsz) != get_u64(h + 40)) {
      snprintf(why, whysz, "its checksum is wrong");
    } else {
      const uint8_t *hashes = body + bitmap_words(fchunks) * 8;
      /* A disk that grew: the chunks past the old end, and the old last chunk, stay stale. */
      uint64_t keep = fchunks;
      if (get_u64(h + 24) < hi->disk_size && get_u64(h + 24) % hi->chunk_size)
        keep--;
      for (uint64_t c = 0; c < keep; c++) {
        if (get_u64(body + (c / 64) * 8) >> (c % 64) & 1) {
          hi->state[c] = CH_KNOWN;
          memcpy(hi->hash[c], hashes + c * PROTO_HASH_SIZE, PROTO_HASH_SIZE);
          hi->stale--;
        }
      }
      why[0] = '\0';
    }
  }
  free(body);
  close(fd);
}

rpl_err hashindex_open(const char *path, uint64_t disk_size, uint32_t chunk_size, struct hashindex **out)
{
  *out = NULL;
  if (!chunk_size || (chunk_size & (chunk_size - 1)) || strlen(path) >= sizeof((struct hashindex *)0)->path)
    return RPL_E_INVALID_ARGUMENT;
  struct hashindex *hi = calloc(1, sizeof *hi);
  if (!hi)
    return RPL_E_NOMEM;
  pthread_mutex_init(&hi->lock, NULL);
  snprintf(hi->path, sizeof hi->path, "%s", path);
  hi->chunk_size = chunk_size;
  hi->disk_size = disk_size;
  hi->rng = XXH3_64bits(path, strlen(path)) ^ (uint64_t)getpid() ^ (uint64_t)(uintptr_t)hi;
  if (alloc_arrays(hi, nchunks_of(disk_size, chunk_size))) { /* from 0 chunks: the new ones zeroed */
    hashindex_close(hi);
    return RPL_E_NOMEM;
  }
  hi->nchunks = nchunks_of(disk_size, chunk_size);
  all_stale(hi);
  char why[128];
  load(hi, why, sizeof why);
  /* Loaded: the file is closed and matches memory. Not loaded: none that says anything, so no
   * write needs a flip before it (the first save writes one). */
  hi->dirty = why[0] != '\0';
  hi->open_on_disk = why[0] != '\0';
  if (why[0])
    snprintf(hi->loaded, sizeof hi->loaded, "all %" PRIu64 " chunks stale: %s", hi->nchunks, why);
  else
    snprintf(hi->loaded, sizeof hi->loaded, "%" PRIu64 " of %" PRIu64 " chunks stale", hi->stale, hi->nchunks);
  *out = hi;
  return RPL_OK;
}

void hashindex_close(struct hashindex *hi)
{
  if (!hi)
    return;
  if (hi->state && hi->hash && hi->heat && hi->nchunks == nchunks_of(hi->disk_size, hi->chunk_size)) {
    rpl_err e = hashindex_save(hi);
    if (e)
      log_warn("hash index %s not saved: %s", hi->path, rpl_detail(e)[0] ? rpl_detail(e) : rpl_strerror(e));
  }
  pthread_mutex_destroy(&hi->lock);
  free(hi->state);
  free(hi->hash);
  free(hi->heat);
  free(hi);
}

static rpl_err write_all(int fd, const void *buf, size_t len, off_t off)
{
  const uint8_t *p = buf;
  while (len) {
    ssize_t n = pwrite(fd, p, len, off);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return RPL_E_IO;
    p += n, len -= (size_t)n, off += n;
  }
  return RPL_OK;
}

rpl_err hashindex_save(struct hashindex *hi)
{
  pthread_mutex_lock(&hi->lock);
  if (!hi->dirty) {
    pthread_mutex_unlock(&hi->lock);
    return RPL_OK;
  }
  size_t bsz = body_size(hi->nchunks);
  uint8_t *body = calloc(1, bsz ? bsz : 1);
  if (!body) {
    pthread_mutex_unlock(&hi->lock);
    return RPL_E_NOMEM;
  }
  uint8_t *hashes = body + bitmap_words(hi->nchunks) * 8;
  for (uint64_t c = 0; c < hi->nchunks; c++) {
    if (hi->state[c] != CH_KNOWN) /* a pending hash is not durable yet: stale in the file */
      continue;
    uint8_t *w = body + (c / 64) * 8;
    put_u64(w, get_u64(w) | 1ull << (c % 64));
    memcpy(hashes + c * PROTO_HASH_SIZE, hi->hash[c], PROTO_HASH_SIZE);
  }
  uint8_t h[HASHINDEX_HEADER_SIZE];
  encode_header(h, 0, hi->chunk_size, hi->disk_size, hi->nchunks, XXH3_64bits(body, bsz));
  uint64_t gen = hi->gen, version = hi->version;
  pthread_mutex_unlock(&hi->lock);
  /* The file is written without the lock (writes and lookups go on meanwhile); it replaces the
   * index only if no write came since the copy, which it would not say is stale. */
  char tmp[sizeof hi->path + 8];
  snprintf(tmp, sizeof tmp, "%s.tmp", hi->path);
  rpl_err e = RPL_OK;
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0)
    e = rpl_fail(RPL_E_IO, "cannot create %s: %s", tmp, strerror(errno));
  else if (write_all(fd, h, sizeof h, 0) || write_all(fd, body, bsz, HASHINDEX_HEADER_SIZE) || fsync(fd))
    e = rpl_fail(RPL_E_IO, "cannot write %s: %s", tmp, strerror(errno));
  if (fd >= 0 && close(fd) && !e)
    e = rpl_fail(RPL_E_IO, "cannot write %s: %s", tmp, strerror(errno));
  free(body);
  pthread_mutex_lock(&hi->lock);
  bool outdated = !e && gen != hi->gen; /* saved again later */
  if (!e && !outdated && rename(tmp, hi->path))
    e = rpl_fail(RPL_E_IO, "cannot rename %s: %s", tmp, strerror(errno));
  else if (!e && !outdated) {
    hi->open_on_disk = false; /* the file there now is the closed copy: the next write marks it open */
    if (!(e = file_fsync_parent(hi->path)))
      hi->dirty = hi->version != version;
  }
  if (e || outdated)
    unlink(tmp);
  pthread_mutex_unlock(&hi->lock);
  return e;
}

/* Before the first write after a save: the file says open, durably (lock held). */
static rpl_err mark_open(struct hashindex *hi)
{
  if (hi->open_on_disk)
    return RPL_OK;
  int fd = open(hi->path, O_RDWR | O_CLOEXEC);
  if (fd < 0)
    return rpl_fail(RPL_E_IO, "cannot open %s: %s", hi->path, strerror(errno));
  uint8_t h[HASHINDEX_HEADER_SIZE];
  rpl_err e = pread(fd, h, sizeof h, 0) == (ssize_t)sizeof h ? RPL_OK : RPL_E_IO;
  if (!e) {
    /* One 64-byte header in one sector: a torn write fails its checksum, which also reads as stale. */
    encode_header(h, get_u32(h + 12) | HASHINDEX_FLAG_OPEN, get_u32(h + 16), get_u64(h + 24), get_u64(h + 32),
                  get_u64(h + 40));
    if (write_all(fd, h, sizeof h, 0) || fdatasync(fd))
      e = RPL_E_IO;
  }
  close(fd);
  if (e)
    return rpl_fail(RPL_E_IO, "cannot mark %s open: %s", hi->path, strerror(errno));
  hi->open_on_disk = true;
  return RPL_OK;
}

static void set_stale(struct hashindex *hi, uint64_t c)
{
  if (hi->state[c] == CH_KNOWN)
    hi->stale++;
  hi->state[c] = CH_STALE;
}

void hashindex_resize(struct hashindex *hi, uint64_t disk_size)
{
  pthread_mutex_lock(&hi->lock);
  uint64_t n = nchunks_of(disk_size, hi->chunk_size);
  if (disk_size > hi->disk_size && alloc_arrays(hi, n) == RPL_OK) {
    uint64_t old = hi->nchunks;
    if (old && hi->disk_size % hi->chunk_size) /* the old last chunk was short: its hash is not the new one's */
      set_stale(hi, old - 1);
    memset(hi->state + old, CH_STALE, (size_t)(n - old));
    memset(hi->hash + old, 0, (size_t)(n - old) * PROTO_HASH_SIZE);
    hi->stale += n - old;
    hi->nchunks = n;
    hi->disk_size = disk_size;
    hi->gen++;
    changed(hi);
  }
  pthread_mutex_unlock(&hi->lock);
}

static uint64_t chunk_len(const struct hashindex *hi, uint64_t c)
{
  uint64_t off = c * hi->chunk_size;
  return off + hi->chunk_size > hi->disk_size ? hi->disk_size - off : hi->chunk_size;
}

static const uint8_t zero[64 << 10];

/* The xxh3-128 (canonical) of len zero bytes, without a buffer of their size. */
static void hash_zeros(uint64_t len, uint8_t out[PROTO_HASH_SIZE])
{
  XXH3_state_t st;
  XXH3_128bits_reset(&st);
  for (uint64_t done = 0; done < len; done += sizeof zero)
    XXH3_128bits_update(&st, zero, len - done < sizeof zero ? (size_t)(len - done) : sizeof zero);
  XXH128_canonical_t can;
  XXH128_canonicalFromHash(&can, XXH3_128bits_digest(&st));
  memcpy(out, can.digest, PROTO_HASH_SIZE);
}

static const uint8_t *zero_chunk_hash(struct hashindex *hi)
{
  if (!hi->zero_hashed) {
    hash_zeros(hi->chunk_size, hi->zero_hash);
    hi->zero_hashed = true;
  }
  return hi->zero_hash;
}

/* A direct write's bytes [off, off+len) fed to the chunk stream (lock held); a chunk completed in
 * order becomes pending. A whole chunk whose hash is known (given, or zeros) is not hashed again. */
static void stream_feed(struct hashindex *hi, uint64_t off, const uint8_t *data, uint64_t len, bool zeros,
                        const uint8_t *hash)
{
  while (len) {
    uint64_t c = off / hi->chunk_size, in = off - c * hi->chunk_size;
    if (in == 0 && chunk_len(hi, c) == hi->chunk_size && len >= hi->chunk_size &&
        ((hash && len == hi->chunk_size) || zeros)) {
      memcpy(hi->hash[c], zeros ? zero_chunk_hash(hi) : hash, PROTO_HASH_SIZE);
      hi->state[c] = CH_PENDING;
      hi->streaming = false;
      off += hi->chunk_size, len -= hi->chunk_size;
      if (data)
        data += hi->chunk_size;
      continue;
    }
    if (!hi->streaming || hi->stream_chunk != c || hi->stream_next != off) {
      if (in) { /* not the chunk's start, nor where its stream stopped: the chunk stays stale */
        hi->streaming = false;
        uint64_t skip = hi->chunk_size - in < len ? hi->chunk_size - in : len;
        off += skip, len -= skip;
        if (data)
          data += skip;
        continue;
      }
      XXH3_128bits_reset(&hi->stream);
      hi->streaming = true;
      hi->stream_chunk = c;
    }
    uint64_t clen = chunk_len(hi, c);
    uint64_t take = clen - in < len ? clen - in : len;
    if (zeros) {
      for (uint64_t done = 0; done < take;) {
        size_t k = take - done < sizeof zero ? (size_t)(take - done) : sizeof zero;
        XXH3_128bits_update(&hi->stream, zero, k);
        done += k;
      }
    } else {
      XXH3_128bits_update(&hi->stream, data, (size_t)take);
      data += take;
    }
    off += take, len -= take;
    hi->stream_next = off;
    if (in + take == clen) {
      XXH128_canonical_t can;
      XXH128_canonicalFromHash(&can, XXH3_128bits_digest(&hi->stream));
      memcpy(hi->hash[c], can.digest, PROTO_HASH_SIZE);
      hi->state[c] = CH_PENDING;
      hi->streaming = false;
    }
  }
}

rpl_err hashindex_write(struct hashindex *hi, uint64_t offset, const uint8_t *data, uint64_t len, bool zeros,
                        const uint8_t hash[PROTO_HASH_SIZE])
{
  if (!len)
    return RPL_OK;
  pthread_mutex_lock(&hi->lock);
  rpl_err e = mark_open(hi);
  if (!e && offset < hi->disk_size) {
    uint64_t end = offset + len > hi->disk_size ? hi->disk_size : offset + len;
    for (uint64_t c = offset / hi->chunk_size; c <= (end - 1) / hi->chunk_size; c++) {
      set_stale(hi, c);
      hi->heat[c] |= 1;
    }
    if (hi->streaming && (offset / hi->chunk_size <= hi->stream_chunk && hi->stream_chunk <= (end - 1) / hi->chunk_size) &&
        offset != hi->stream_next)
      hi->streaming = false; /* a write into the streamed chunk out of order */
    if (data || zeros) {
      hi->direct++;
      stream_feed(hi, offset, data, end - offset, zeros, end - offset == len ? hash : NULL);
    }
    hi->gen++;
    changed(hi);
  }
  pthread_mutex_unlock(&hi->lock);
  return e;
}

static void end_direct(struct hashindex *hi, bool commit)
{
  pthread_mutex_lock(&hi->lock);
  if (hi->direct) {
    for (uint64_t c = 0; c < hi->nchunks; c++) {
      if (hi->state[c] != CH_PENDING)
        continue;
      hi->state[c] = commit ? CH_KNOWN : CH_STALE;
      if (commit)
        hi->stale--;
    }
    changed(hi);
  }
  hi->direct = 0;
  hi->streaming = false;
  pthread_mutex_unlock(&hi->lock);
}

void hashindex_direct_commit(struct hashindex *hi) { end_direct(hi, true); }
void hashindex_direct_abort(struct hashindex *hi) { end_direct(hi, false); }

rpl_err hashindex_invalidate(struct hashindex *hi, const char *why)
{
  pthread_mutex_lock(&hi->lock);
  rpl_err e = mark_open(hi);
  all_stale(hi);
  snprintf(hi->loaded, sizeof hi->loaded, "all %" PRIu64 " chunks made stale: %s", hi->nchunks, why);
  pthread_mutex_unlock(&hi->lock);
  return e;
}

uint32_t hashindex_chunk_size(const struct hashindex *hi) { return hi->chunk_size; }

bool hashindex_lookup(struct hashindex *hi, uint64_t c, uint8_t hash[PROTO_HASH_SIZE])
{
  pthread_mutex_lock(&hi->lock);
  bool known = c < hi->nchunks && hi->state[c] == CH_KNOWN;
  if (known)
    memcpy(hash, hi->hash[c], PROTO_HASH_SIZE);
  pthread_mutex_unlock(&hi->lock);
  return known;
}

uint64_t hashindex_generation(struct hashindex *hi)
{
  pthread_mutex_lock(&hi->lock);
  uint64_t g = hi->gen;
  pthread_mutex_unlock(&hi->lock);
  return g;
}

void hashindex_blank(struct hashindex *hi)
{
  pthread_mutex_lock(&hi->lock);
  if (hi->nchunks) {
    const uint8_t *whole = zero_chunk_hash(hi);
    for (uint64_t c = 0; c < hi->nchunks; c++) {
      uint64_t len = chunk_len(hi, c);
      if (len == hi->chunk_size)
        memcpy(hi->hash[c], whole, PROTO_HASH_SIZE);
      else /* the short last chunk */
        hash_zeros(len, hi->hash[c]);
    }
    memset(hi->state, CH_KNOWN, (size_t)hi->nchunks);
    hi->stale = 0;
    hi->streaming = false;
    hi->gen++;
    changed(hi);
  }
  pthread_mutex_unlock(&hi->lock);
}

void hashindex_rehashed(struct hashindex *hi, uint64_t c, const uint8_t hash[PROTO_HASH_SIZE], uint64_t gen)
{
  pthread_mutex_lock(&hi->lock);
  if (gen == hi->gen && !hi->direct && c < hi->nchunks && hi->state[c] == CH_STALE) {
    memcpy(hi->hash[c], hash, PROTO_HASH_SIZE);
    hi->state[c] = CH_KNOWN;
    hi->stale--;
    changed(hi);
  }
  pthread_mutex_unlock(&hi->lock);
}

size_t hashindex_stale_chunks(struct hashindex *hi, uint64_t *cursor, uint64_t *out, size_t max)
{
  pthread_mutex_lock(&hi->lock);
  size_t n = 0;
  uint64_t c = *cursor < hi->nchunks ? *cursor : 0;
  for (uint64_t seen = 0; seen < hi->nchunks && n < max && hi->stale; seen++) {
    if (hi->state[c] == CH_STALE && !hi->heat[c])
      out[n++] = c;
    if (++c == hi->nchunks)
      c = 0;
  }
  *cursor = c;
  pthread_mutex_unlock(&hi->lock);
  return n;
}

void hashindex_cool(struct hashindex *hi)
{
  pthread_mutex_lock(&hi->lock);
  for (uint64_t c = 0; c < hi->nchunks; c++)
    hi->heat[c] = (uint8_t)((hi->heat[c] & 1) << 1);
  pthread_mutex_unlock(&hi->lock);
}

static uint64_t next_rand(uint64_t *s)
{
  *s += 0x9e3779b97f4a7c15ull; /* splitmix64: sampling needs spread, not secrecy */
  uint64_t z = *s;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static int cmp_u64(const void *a, const void *b)
{
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

size_t hashindex_sample(struct hashindex *hi, uint64_t *out, size_t max)
{
  pthread_mutex_lock(&hi->lock);
  uint64_t known = hi->nchunks - hi->stale;
  size_t n = 0;
  /* Random probes; each lands on the next known chunk at or after it, duplicates dropped. */
  for (size_t tries = 0; known && n < max && tries < max * 4; tries++) {
    uint64_t c = next_rand(&hi->rng) % hi->nchunks;
    for (uint64_t k = 0; k < hi->nchunks && hi->state[c] != CH_KNOWN; k++)
      c = c + 1 == hi->nchunks ? 0 : c + 1;
    bool dup = false;
    for (size_t i = 0; i < n && !dup; i++)
      dup = out[i] == c;
    if (!dup)
      out[n++] = c;
    if (n == known)
      break;
  }
  pthread_mutex_unlock(&hi->lock);
  qsort(out, n, sizeof *out, cmp_u64);
  return n;
}

bool hashindex_direct_busy(struct hashindex *hi)
{
  pthread_mutex_lock(&hi->lock);
  bool b = hi->direct > 0;
  pthread_mutex_unlock(&hi->lock);
  return b;
}

bool hashindex_dirty(struct hashindex *hi)
{
  pthread_mutex_lock(&hi->lock);
  bool d = hi->dirty;
  pthread_mutex_unlock(&hi->lock);
  return d;
}

void hashindex_count(struct hashindex *hi, enum hashindex_counter which, uint64_t n)
{
  pthread_mutex_lock(&hi->lock);
  hi->counters[which] += n;
  pthread_mutex_unlock(&hi->lock);
}

void hashindex_get_stats(struct hashindex *hi, struct hashindex_stats *out)
{
  pthread_mutex_lock(&hi->lock);
  *out = (struct hashindex_stats){.chunk_size = hi->chunk_size, .chunks = hi->nchunks, .stale_chunks = hi->stale,
                                  .resyncs = hi->counters[HI_RESYNCS],
                                  .resync_read_bytes = hi->counters[HI_RESYNC_READ_BYTES],
                                  .resync_index_chunks = hi->counters[HI_RESYNC_INDEX_CHUNKS],
                                  .resync_read_chunks = hi->counters[HI_RESYNC_READ_CHUNKS],
                                  .rehashed_chunks = hi->counters[HI_REHASHED_CHUNKS],
                                  .rehash_read_bytes = hi->counters[HI_REHASH_READ_BYTES],
                                  .verified_chunks = hi->counters[HI_VERIFIED_CHUNKS],
                                  .verify_failures = hi->counters[HI_VERIFY_FAILURES],
                                  .verify_read_bytes = hi->counters[HI_VERIFY_READ_BYTES],
                                  .resync_stale_chunks = hi->counters[HI_RESYNC_STALE_CHUNKS]};
  snprintf(out->loaded, sizeof out->loaded, "%s", hi->loaded);
  pthread_mutex_unlock(&hi->lock);
}
