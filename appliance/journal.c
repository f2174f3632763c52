/* journal.c - the appliance's durable cache journal: record codec, append/commit, recovery, readers. */
#include "journal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>
#include <uuid/uuid.h>
#include <xxhash.h>

#include "rpl_log.h"

/*
 * Durability argument (why recovery can tell a torn tail from damage):
 *  - commit = fdatasync(segment) of the cycle's records, then write CYCLE_END, then fdatasync again
 *    (and fsync the directory if the cycle created a segment). A segment is fdatasync'ed before the
 *    next one is created. So a CYCLE_END that is readable after a crash implies that everything
 *    before it was already on stable storage when it was written.
 *  - Hence an unreadable record before the last readable CYCLE_END is damage of committed data
 *    (RPL_E_JOURNAL_CORRUPT), and anything after the last CYCLE_END is an uncommitted tail, cut.
 *  - Recovery therefore reads only record headers and bodies (payloads are skipped, not read):
 *    opening a large cache costs one small read per record. Payload CRCs are checked by readers.
 */

#define SEGMENT_RECORD_SIZE (JOURNAL_HEADER_SIZE + JOURNAL_SEGMENT_BODY)
#define END_RECORD_SIZE     (JOURNAL_HEADER_SIZE + JOURNAL_END_BODY)
#define APPLIED_MAGIC       0x50414a52u /* bytes 'R' 'J' 'A' 'P' */
#define APPLIED_SIZE        (4 + 4 + PROTO_ID_SIZE + 8 + 4)
#define APPLIED_NAME        "applied"
#define APPLIED_TMP_NAME    "applied.tmp"
#define SEGMENT_NAME_LEN    20 /* 16 hex digits + ".seg" */
#define SCAN_CHUNK          (1u << 20)

/* ---- little-endian field access ----------------------------------------------------------- */

static void put_u16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
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
static uint16_t get_u16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t get_u32(const uint8_t *p)
{
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t get_u64(const uint8_t *p) { return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32; }

/* ---- record codec ------------------------------------------------------------------------- */

static uint32_t body_size_of(uint8_t type)
{
  switch (type) {
  case JOURNAL_REC_SEGMENT: return JOURNAL_SEGMENT_BODY;
  case JOURNAL_REC_CYCLE_BEGIN: return JOURNAL_BEGIN_BODY;
  case JOURNAL_REC_EXTENT: return JOURNAL_EXTENT_BODY;
  case JOURNAL_REC_CYCLE_END: return JOURNAL_END_BODY;
  default: return 0;
  }
}

rpl_err journal_record_parse_header(const uint8_t buf[JOURNAL_HEADER_SIZE], struct journal_record_header *out)
{
  if (get_u32(buf) != JOURNAL_RECORD_MAGIC || buf[4] != JOURNAL_FORMAT_VERSION || get_u16(buf + 6) != 0)
    return RPL_E_JOURNAL_RECORD;
  uint8_t type = buf[5];
  uint32_t body_len = get_u32(buf + 8), payload_len = get_u32(buf + 12), payload_crc = get_u32(buf + 16);
  uint32_t want = body_size_of(type);
  if (want == 0 || body_len != want || body_len > JOURNAL_MAX_BODY)
    return RPL_E_JOURNAL_RECORD;
  if (payload_len > JOURNAL_MAX_PAYLOAD || (type != JOURNAL_REC_EXTENT && payload_len != 0) ||
      (payload_len == 0 && payload_crc != 0))
    return RPL_E_JOURNAL_RECORD;
  *out = (struct journal_record_header){.type = type, .body_len = body_len, .payload_len = payload_len,
                                        .payload_crc = payload_crc, .header_crc = get_u32(buf + 20)};
  return RPL_OK;
}

/* The extent fields a record may hold: the same rules as the wire's EXTENT, plus the payload size
 * its codec implies. */
static bool extent_fields_valid(uint64_t offset, uint32_t length, uint8_t codec, uint32_t payload_len)
{
  if (offset % 512 || length % 512 || length == 0 || length > PROTO_MAX_EXTENT || offset > UINT64_MAX - length)
    return false;
  switch (codec) {
  case PROTO_CODEC_NONE: return payload_len == length;
  case PROTO_CODEC_ZSTD: return payload_len > 0 && payload_len <= JOURNAL_MAX_PAYLOAD;
  case PROTO_CODEC_ZERO: return payload_len == 0;
  default: return false;
  }
}

/* Checks the header CRC and decodes the body of a record whose header+body are at buf; the payload
 * (if any) is not looked at. */
static rpl_err decode_head(const uint8_t *buf, const struct journal_record_header *h, struct journal_record *rec)
{
  const uint8_t *b = buf + JOURNAL_HEADER_SIZE;
  uint32_t crc = proto_crc32c(proto_crc32c(0, buf, 20), b, h->body_len);
  if (crc != h->header_crc)
    return RPL_E_JOURNAL_RECORD;
  memset(rec, 0, sizeof *rec);
  rec->type = h->type;
  rec->payload_len = h->payload_len;
  switch (h->type) {
  case JOURNAL_REC_SEGMENT:
    memcpy(rec->u.segment.disk_id, b, PROTO_ID_SIZE);
    rec->u.segment.seq = get_u64(b + 16);
    if (rec->u.segment.seq == 0)
      return RPL_E_JOURNAL_RECORD;
    break;
  case JOURNAL_REC_CYCLE_BEGIN:
    rec->u.begin.cycle = get_u64(b);
    rec->u.begin.kind = b[8];
    if (rec->u.begin.cycle == 0 || rec->u.begin.kind > PROTO_CYCLE_RESYNC)
      return RPL_E_JOURNAL_RECORD;
    break;
  case JOURNAL_REC_EXTENT:
    rec->u.extent.cycle = get_u64(b);
    rec->u.extent.offset = get_u64(b + 8);
    rec->u.extent.length = get_u32(b + 16);
    rec->u.extent.codec = b[20];
    memcpy(rec->u.extent.hash, b + 21, PROTO_HASH_SIZE);
    if (rec->u.extent.cycle == 0 ||
        !extent_fields_valid(rec->u.extent.offset, rec->u.extent.length, rec->u.extent.codec, h->payload_len))
      return RPL_E_JOURNAL_RECORD;
    break;
  case JOURNAL_REC_CYCLE_END:
    rec->u.end.cycle = get_u64(b);
    rec->u.end.extents = get_u64(b + 8);
    rec->u.end.raw_bytes = get_u64(b + 16);
    rec->u.end.payload_bytes = get_u64(b + 24);
    memcpy(rec->u.end.digest, b + 32, PROTO_HASH_SIZE);
    if (rec->u.end.cycle == 0)
      return RPL_E_JOURNAL_RECORD;
    break;
  default:
    return RPL_E_JOURNAL_RECORD;
  }
  return RPL_OK;
}

rpl_err journal_record_decode(const uint8_t *buf, size_t len, struct journal_record *rec, size_t *used)
{
  if (len < JOURNAL_HEADER_SIZE) {
    *used = JOURNAL_HEADER_SIZE;
    return RPL_E_AGAIN;
  }
  struct journal_record_header h;
  rpl_err e = journal_record_parse_header(buf, &h);
  if (e)
    return e;
  size_t total = (size_t)JOURNAL_HEADER_SIZE + h.body_len + h.payload_len;
  if (len < total) {
    *used = total;
    return RPL_E_AGAIN;
  }
  if ((e = decode_head(buf, &h, rec)))
    return e;
  const uint8_t *payload = buf + JOURNAL_HEADER_SIZE + h.body_len;
  if (h.payload_len && proto_crc32c(0, payload, h.payload_len) != h.payload_crc)
    return RPL_E_JOURNAL_RECORD;
  rec->payload = h.payload_len ? payload : NULL;
  *used = total;
  return RPL_OK;
}

/* Writes header + body of a record into out (JOURNAL_HEADER_SIZE + body_len bytes); payload_crc
 * is the CRC32C of the payload that will follow (0 when none). */
static size_t encode_head(uint8_t *out, uint8_t type, const uint8_t *body, uint32_t body_len, uint32_t payload_len,
                          uint32_t payload_crc)
{
  put_u32(out, JOURNAL_RECORD_MAGIC);
  out[4] = JOURNAL_FORMAT_VERSION;
  out[5] = type;
  put_u16(out + 6, 0);
  put_u32(out + 8, body_len);
  put_u32(out + 12, payload_len);
  put_u32(out + 16, payload_crc);
  memcpy(out + JOURNAL_HEADER_SIZE, body, body_len);
  put_u32(out + 20, proto_crc32c(proto_crc32c(0, out, 20), body, body_len));
  return JOURNAL_HEADER_SIZE + body_len;
}

/* ---- the journal -------------------------------------------------------------------------- */

struct segment {
  uint64_t seq;
  uint64_t size;      /* bytes in the file (as far as we wrote or validated) */
  uint64_t max_cycle; /* highest cycle any record in it belongs to */
};

struct committed_cycle {
  struct journal_cycle_info info;
  uint64_t seg_seq, begin_off; /* where its CYCLE_BEGIN record is */
};

struct journal {
  pthread_mutex_t lock;
  char *dir;
  int dirfd;
  uint8_t disk_id[PROTO_ID_SIZE];
  struct journal_options opts;

  struct segment *segs; /* consecutive seqs, oldest first; the last one takes appends */
  size_t nsegs, segs_alloc;
  int fd;               /* write descriptor of the last segment, -1 if not open */
  uint64_t next_seq;
  uint64_t total_bytes;
  bool dir_dirty;       /* a segment was created since the last directory fsync */

  struct committed_cycle *cycles; /* committed and not trimmed, increasing */
  size_t ncycles, cycles_alloc;
  uint64_t last_committed, last_applied;

  uint64_t open_cycle; /* 0: none */
  uint8_t open_kind;
  uint64_t open_seg_seq, open_off;
  uint64_t open_prev_max; /* max_cycle of its first segment before it began (restored on drop) */
  uint64_t open_extents, open_raw, open_payload;
  XXH3_state_t *digest;

  rpl_err broken; /* sticky after a write error we could not undo */
};

struct journal_reader {
  char *dir;
  uint64_t cycle, expected_extents;
  uint64_t start_seq, start_off;
  uint64_t seq, off, file_size;
  int fd;
  uint64_t extents_read;
  bool begun, done;
  uint8_t *buf;
  size_t buf_alloc;
};

static rpl_err sys_err(const char *what, const char *path)
{
  int saved = errno;
  log_err("journal: %s %s: %s", what, path, strerror(saved));
  if (saved == ENOSPC || saved == EDQUOT)
    return RPL_E_JOURNAL_FULL;
  if (saved == ENOMEM)
    return RPL_E_NOMEM;
  if (saved == EACCES || saved == EPERM)
    return RPL_E_PERMISSION;
  return RPL_E_IO;
}

static void segment_name(char out[SEGMENT_NAME_LEN + 1], uint64_t seq)
{
  snprintf(out, SEGMENT_NAME_LEN + 1, "%016" PRIx64 ".seg", seq);
}

static bool parse_segment_name(const char *name, uint64_t *seq)
{
  if (strlen(name) != SEGMENT_NAME_LEN || strcmp(name + 16, ".seg"))
    return false;
  uint64_t v = 0;
  for (int i = 0; i < 16; i++) {
    char c = name[i];
    int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (d < 0)
      return false;
    v = v << 4 | (uint64_t)d;
  }
  *seq = v;
  return v != 0;
}

static rpl_err pread_full(int fd, void *buf, size_t len, uint64_t off, size_t *got)
{
  size_t done = 0;
  while (done < len) {
    ssize_t n = pread(fd, (uint8_t *)buf + done, len - done, (off_t)(off + done));
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return RPL_E_IO;
    }
    if (n == 0)
      break;
    done += (size_t)n;
  }
  *got = done;
  return RPL_OK;
}

static rpl_err fsync_dir(struct journal *j)
{
  if (fsync(j->dirfd) != 0)
    return sys_err("fsync of directory", j->dir);
  j->dir_dirty = false;
  return RPL_OK;
}

static struct segment *last_seg(struct journal *j) { return j->nsegs ? &j->segs[j->nsegs - 1] : NULL; }

static rpl_err segs_push(struct journal *j, struct segment s)
{
  if (j->nsegs == j->segs_alloc) {
    if (j->segs_alloc >= JOURNAL_MAX_SEGMENTS)
      return RPL_E_LIMIT;
    size_t n = j->segs_alloc ? j->segs_alloc * 2 : 16;
    struct segment *p = realloc(j->segs, n * sizeof *p);
    if (!p)
      return RPL_E_NOMEM;
    j->segs = p;
    j->segs_alloc = n;
  }
  j->segs[j->nsegs++] = s;
  return RPL_OK;
}

static rpl_err cycles_push(struct journal *j, const struct committed_cycle *c)
{
  if (j->ncycles == j->cycles_alloc) {
    if (j->cycles_alloc >= JOURNAL_MAX_PENDING_CYCLES)
      return RPL_E_LIMIT;
    size_t n = j->cycles_alloc ? j->cycles_alloc * 2 : 64;
    struct committed_cycle *p = realloc(j->cycles, n * sizeof *p);
    if (!p)
      return RPL_E_NOMEM;
    j->cycles = p;
    j->cycles_alloc = n;
  }
  j->cycles[j->ncycles++] = *c;
  return RPL_OK;
}

static int open_segment_fd(struct journal *j, uint64_t seq, int flags)
{
  char name[SEGMENT_NAME_LEN + 1];
  segment_name(name, seq);
  return openat(j->dirfd, name, flags | O_CLOEXEC, 0600);
}

static rpl_err unlink_segment(struct journal *j, uint64_t seq)
{
  char name[SEGMENT_NAME_LEN + 1];
  segment_name(name, seq);
  if (unlinkat(j->dirfd, name, 0) != 0 && errno != ENOENT)
    return sys_err("cannot delete segment", name);
  return RPL_OK;
}

/* ---- applied marker ----------------------------------------------------------------------- */

static rpl_err read_applied(struct journal *j, uint64_t *applied)
{
  *applied = 0;
  int fd = openat(j->dirfd, APPLIED_NAME, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return errno == ENOENT ? RPL_OK : sys_err("cannot open", APPLIED_NAME);
  uint8_t b[APPLIED_SIZE + 1];
  size_t got;
  rpl_err e = pread_full(fd, b, sizeof b, 0, &got);
  close(fd);
  if (e)
    return sys_err("cannot read", APPLIED_NAME);
  /* Written by rename of a complete, fsynced file: anything else is damage, not a torn write. */
  if (got != APPLIED_SIZE || get_u32(b) != APPLIED_MAGIC || get_u32(b + 4) != JOURNAL_FORMAT_VERSION ||
      get_u32(b + 32) != proto_crc32c(0, b, 32)) {
    log_err("journal %s: the applied marker is damaged", j->dir);
    return RPL_E_JOURNAL_CORRUPT;
  }
  if (memcmp(b + 8, j->disk_id, PROTO_ID_SIZE)) {
    log_err("journal %s: the applied marker names another disk", j->dir);
    return RPL_E_JOURNAL_FOREIGN;
  }
  *applied = get_u64(b + 24);
  return RPL_OK;
}

static rpl_err write_applied(struct journal *j, uint64_t applied)
{
  uint8_t b[APPLIED_SIZE];
  put_u32(b, APPLIED_MAGIC);
  put_u32(b + 4, JOURNAL_FORMAT_VERSION);
  memcpy(b + 8, j->disk_id, PROTO_ID_SIZE);
  put_u64(b + 24, applied);
  put_u32(b + 32, proto_crc32c(0, b, 32));
  int fd = openat(j->dirfd, APPLIED_TMP_NAME, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0)
    return sys_err("cannot create", APPLIED_TMP_NAME);
  ssize_t n = write(fd, b, sizeof b);
  if (n != (ssize_t)sizeof b || fdatasync(fd) != 0) {
    rpl_err e = n < 0 || n == (ssize_t)sizeof b ? sys_err("cannot write", APPLIED_TMP_NAME) : RPL_E_IO;
    close(fd);
    return e;
  }
  close(fd);
  if (renameat(j->dirfd, APPLIED_TMP_NAME, j->dirfd, APPLIED_NAME) != 0)
    return sys_err("cannot rename", APPLIED_TMP_NAME);
  return fsync_dir(j);
}

/* ---- recovery ----------------------------------------------------------------------------- */

static int cmp_u64(const void *a, const void *b)
{
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* Reads header and body of the record at off into buf and decodes them (payload skipped).
 * RPL_E_JOURNAL_RECORD if there is no complete, valid record there. */
static rpl_err read_head(int fd, uint64_t off, uint64_t file_size, struct journal_record *rec, uint64_t *rec_len,
                         uint32_t *payload_crc)
{
  uint8_t buf[JOURNAL_HEADER_SIZE + JOURNAL_MAX_BODY];
  size_t got;
  if (off + JOURNAL_HEADER_SIZE > file_size)
    return RPL_E_JOURNAL_RECORD;
  if (pread_full(fd, buf, JOURNAL_HEADER_SIZE, off, &got) || got != JOURNAL_HEADER_SIZE)
    return RPL_E_IO;
  struct journal_record_header h;
  if (journal_record_parse_header(buf, &h))
    return RPL_E_JOURNAL_RECORD;
  uint64_t len = (uint64_t)JOURNAL_HEADER_SIZE + h.body_len + h.payload_len;
  if (off + len > file_size)
    return RPL_E_JOURNAL_RECORD;
  if (pread_full(fd, buf + JOURNAL_HEADER_SIZE, h.body_len, off + JOURNAL_HEADER_SIZE, &got) || got != h.body_len)
    return RPL_E_IO;
  rpl_err e = decode_head(buf, &h, rec);
  if (e)
    return e;
  *rec_len = len;
  if (payload_crc)
    *payload_crc = h.payload_crc;
  return RPL_OK;
}

/* Looks for a readable CYCLE_END of a cycle after `after` anywhere in [from, size) of fd: its
 * presence past an unreadable record means damage of committed data rather than a torn tail. */
static rpl_err find_later_end(int fd, uint64_t from, uint64_t size, uint64_t after, bool *found)
{
  *found = false;
  uint8_t *chunk = malloc(SCAN_CHUNK + END_RECORD_SIZE);
  if (!chunk)
    return RPL_E_NOMEM;
  rpl_err e = RPL_OK;
  for (uint64_t base = from; base < size && !*found; base += SCAN_CHUNK) {
    size_t want = (size_t)(size - base < SCAN_CHUNK + END_RECORD_SIZE ? size - base : SCAN_CHUNK + END_RECORD_SIZE);
    size_t got;
    if ((e = pread_full(fd, chunk, want, base, &got)))
      break;
    size_t limit = got < SCAN_CHUNK ? got : SCAN_CHUNK; /* candidates starting in this chunk */
    for (size_t i = 0; i < limit && i + END_RECORD_SIZE <= got; i++) {
      if (chunk[i] != 'R' || get_u32(chunk + i) != JOURNAL_RECORD_MAGIC)
        continue;
      struct journal_record_header h;
      struct journal_record rec;
      if (journal_record_parse_header(chunk + i, &h) == RPL_OK && h.type == JOURNAL_REC_CYCLE_END &&
          decode_head(chunk + i, &h, &rec) == RPL_OK && rec.u.end.cycle > after) {
        *found = true;
        break;
      }
    }
  }
  free(chunk);
  return e;
}

/* State of the scan over all segments. */
struct scan {
  uint64_t cur;           /* cycle of the run being read, 0 if none */
  struct committed_cycle pending;
  XXH3_state_t *digest;
  uint64_t cut_index, cut_off; /* keep [segment 0 .. cut_index) whole and cut_index up to cut_off */
  bool have_cut;
};

/* Applies one record to the scan. false: the record does not fit the sequence (treated like an
 * unreadable record). */
static bool scan_record(struct journal *j, struct scan *s, const struct journal_record *rec, uint64_t seg_seq,
                        uint64_t off)
{
  switch (rec->type) {
  case JOURNAL_REC_CYCLE_BEGIN: {
    uint64_t n = rec->u.begin.cycle;
    /* Cycles up to the applied marker may be anything left untrimmed; after it, strictly the next. */
    if (n > j->last_applied && n != j->last_committed + 1)
      return false;
    s->cur = n;
    s->pending = (struct committed_cycle){.info = {.cycle = n, .kind = rec->u.begin.kind},
                                          .seg_seq = seg_seq, .begin_off = off};
    XXH3_128bits_reset(s->digest);
    return true;
  }
  case JOURNAL_REC_EXTENT:
    if (s->cur == 0) /* the tail of a cycle whose first segments were trimmed */
      return rec->u.extent.cycle <= j->last_applied;
    if (rec->u.extent.cycle != s->cur)
      return false;
    s->pending.info.totals.extents++;
    s->pending.info.totals.raw_bytes += rec->u.extent.length;
    s->pending.info.totals.payload_bytes += rec->payload_len;
    XXH3_128bits_update(s->digest, rec->u.extent.hash, PROTO_HASH_SIZE);
    return true;
  case JOURNAL_REC_CYCLE_END:
    if (s->cur == 0)
      return rec->u.end.cycle <= j->last_applied;
    return rec->u.end.cycle == s->cur;
  default:
    return false;
  }
}

/* Called for a valid CYCLE_END that fits the sequence: the cycle is committed. */
static rpl_err scan_commit(struct journal *j, struct scan *s, const struct journal_record *rec)
{
  if (s->cur) { /* 0: the end of a cycle whose start was trimmed (it is applied) */
    struct journal_cycle_totals *t = &s->pending.info.totals;
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits_digest(s->digest));
    memcpy(t->digest, c.digest, PROTO_HASH_SIZE);
    if (t->extents != rec->u.end.extents || t->raw_bytes != rec->u.end.raw_bytes ||
        t->payload_bytes != rec->u.end.payload_bytes || memcmp(t->digest, rec->u.end.digest, PROTO_HASH_SIZE) ||
        (j->ncycles && j->cycles[j->ncycles - 1].info.cycle >= s->cur)) {
      log_err("journal %s: cycle %" PRIu64 " is committed but its records do not add up to its totals (or repeat a cycle)", j->dir,
              s->cur);
      return RPL_E_JOURNAL_CORRUPT;
    }
    rpl_err e = cycles_push(j, &s->pending);
    if (e)
      return e;
    if (s->cur > j->last_committed)
      j->last_committed = s->cur;
  }
  s->cur = 0;
  return RPL_OK;
}

/* Scans segment index i. *stop = true when an unreadable record (or a gap) ends the valid log. */
static rpl_err scan_segment(struct journal *j, struct scan *s, size_t i, bool *stop, uint64_t *stop_off)
{
  struct segment *seg = &j->segs[i];
  int fd = open_segment_fd(j, seg->seq, O_RDONLY);
  if (fd < 0)
    return sys_err("cannot open segment in", j->dir);
  struct stat st;
  if (fstat(fd, &st) != 0) {
    rpl_err e = sys_err("cannot stat segment in", j->dir);
    close(fd);
    return e;
  }
  uint64_t size = (uint64_t)st.st_size, off = 0, len = 0;
  struct journal_record rec;
  rpl_err e = read_head(fd, 0, size, &rec, &len, NULL);
  *stop = false;
  if (e == RPL_OK && (rec.type != JOURNAL_REC_SEGMENT || rec.u.segment.seq != seg->seq ||
                      (i > 0 && seg->seq != j->segs[i - 1].seq + 1)))
    e = RPL_E_JOURNAL_RECORD;
  if (e == RPL_OK && memcmp(rec.u.segment.disk_id, j->disk_id, PROTO_ID_SIZE)) {
    close(fd);
    log_err("journal %s: segment %" PRIu64 " belongs to another disk", j->dir, seg->seq);
    return RPL_E_JOURNAL_FOREIGN;
  }
  if (e == RPL_OK) {
    off = len;
    if (!s->have_cut) { /* nothing committed before: keep at least this segment's header */
      s->have_cut = true;
      s->cut_index = i;
      s->cut_off = off;
    }
    while (off < size) {
      if ((e = read_head(fd, off, size, &rec, &len, NULL)) != RPL_OK)
        break;
      if (!scan_record(j, s, &rec, seg->seq, off)) {
        e = RPL_E_JOURNAL_RECORD;
        break;
      }
      uint64_t c = rec.type == JOURNAL_REC_EXTENT ? rec.u.extent.cycle
                   : rec.type == JOURNAL_REC_CYCLE_BEGIN ? rec.u.begin.cycle : rec.u.end.cycle;
      if (c > seg->max_cycle)
        seg->max_cycle = c;
      off += len;
      if (rec.type == JOURNAL_REC_CYCLE_END) {
        if ((e = scan_commit(j, s, &rec)))
          break;
        s->cut_index = i;
        s->cut_off = off;
      }
    }
  }
  seg->size = size;
  close(fd);
  if (e == RPL_E_JOURNAL_RECORD) {
    *stop = true;
    *stop_off = off;
    return RPL_OK;
  }
  return e;
}

static rpl_err recover(struct journal *j)
{
  /* Segment files, in order. */
  DIR *d = opendir(j->dir);
  if (!d)
    return sys_err("cannot list", j->dir);
  uint64_t *seqs = NULL;
  size_t nseqs = 0, alloc = 0;
  rpl_err e = RPL_OK;
  struct dirent *de;
  while ((de = readdir(d))) {
    uint64_t seq;
    if (!parse_segment_name(de->d_name, &seq))
      continue;
    if (nseqs == alloc) {
      if (alloc >= JOURNAL_MAX_SEGMENTS) {
        e = RPL_E_LIMIT;
        break;
      }
      size_t n = alloc ? alloc * 2 : 16;
      uint64_t *p = realloc(seqs, n * sizeof *p);
      if (!p) {
        e = RPL_E_NOMEM;
        break;
      }
      seqs = p;
      alloc = n;
    }
    seqs[nseqs++] = seq;
  }
  closedir(d);
  if (e) {
    free(seqs);
    return e;
  }
  if (nseqs)
    qsort(seqs, nseqs, sizeof *seqs, cmp_u64);
  for (size_t i = 0; i < nseqs && !e; i++)
    e = segs_push(j, (struct segment){.seq = seqs[i]});
  free(seqs);
  if (e)
    return e;
  (void)unlinkat(j->dirfd, APPLIED_TMP_NAME, 0); /* a marker update that never got renamed */
  if ((e = read_applied(j, &j->last_applied)))
    return e;
  j->last_committed = j->last_applied;

  struct scan s = {.digest = j->digest};
  bool stop = false;
  uint64_t stop_off = 0;
  size_t stop_index = j->nsegs;
  for (size_t i = 0; i < j->nsegs && !stop; i++) {
    if ((e = scan_segment(j, &s, i, &stop, &stop_off)))
      return e;
    if (stop)
      stop_index = i;
  }

  if (stop) {
    /* Past an unreadable record: a torn tail unless a committed cycle-end follows. */
    for (size_t i = stop_index; i < j->nsegs; i++) {
      int fd = open_segment_fd(j, j->segs[i].seq, O_RDONLY);
      if (fd < 0)
        return sys_err("cannot open segment in", j->dir);
      struct stat st;
      bool found = false;
      e = fstat(fd, &st) ? RPL_E_IO
                         : find_later_end(fd, i == stop_index ? stop_off + 1 : 0, (uint64_t)st.st_size,
                                          j->last_committed, &found);
      close(fd);
      if (e)
        return e;
      if (found) {
        log_err("journal %s: segment %" PRIu64 " has an unreadable record at byte %" PRIu64
                " before a committed cycle end", j->dir, j->segs[stop_index].seq, stop_off);
        return RPL_E_JOURNAL_CORRUPT;
      }
    }
  }

  /* Cut everything after the last committed cycle end (torn records, uncommitted cycles). */
  size_t keep = s.have_cut ? s.cut_index + 1 : 0;
  bool unlinked = false;
  for (size_t i = j->nsegs; i-- > keep;) {
    if ((e = unlink_segment(j, j->segs[i].seq)))
      return e;
    unlinked = true;
  }
  if (unlinked)
    log_warn("journal %s: removed %zu segment(s) holding only uncommitted records", j->dir, j->nsegs - keep);
  j->nsegs = keep;
  if (keep) {
    struct segment *seg = &j->segs[keep - 1];
    if (seg->size > s.cut_off) {
      log_warn("journal %s: cut %" PRIu64 " bytes of uncommitted or torn records from segment %" PRIu64, j->dir,
               seg->size - s.cut_off, seg->seq);
      int fd = open_segment_fd(j, seg->seq, O_WRONLY);
      if (fd < 0 || ftruncate(fd, (off_t)s.cut_off) != 0) {
        e = sys_err("cannot truncate segment in", j->dir);
        if (fd >= 0)
          close(fd);
        return e;
      }
      close(fd);
      seg->size = s.cut_off;
    }
  }
  if (unlinked && (e = fsync_dir(j)))
    return e;
  j->total_bytes = 0;
  for (size_t i = 0; i < j->nsegs; i++)
    j->total_bytes += j->segs[i].size;
  j->next_seq = j->nsegs ? j->segs[j->nsegs - 1].seq + 1 : 1;
  return RPL_OK;
}

/* ---- open / close ------------------------------------------------------------------------- */

static rpl_err make_dir(const char *path)
{
  if (mkdir(path, 0700) == 0 || errno == EEXIST)
    return RPL_OK;
  return sys_err("cannot create directory", path);
}

rpl_err journal_open(const char *state_dir, const uint8_t disk_id[PROTO_ID_SIZE], const struct journal_options *opts,
                     struct journal **out)
{
  *out = NULL;
  if (!state_dir || !*state_dir)
    return RPL_E_INVALID_ARGUMENT;
  struct journal *j = calloc(1, sizeof *j);
  if (!j)
    return RPL_E_NOMEM;
  pthread_mutex_init(&j->lock, NULL);
  j->fd = -1;
  j->dirfd = -1;
  memcpy(j->disk_id, disk_id, PROTO_ID_SIZE);
  j->opts.limit_bytes = opts && opts->limit_bytes ? opts->limit_bytes : JOURNAL_DEFAULT_LIMIT_BYTES;
  j->opts.segment_bytes = opts && opts->segment_bytes ? opts->segment_bytes : JOURNAL_DEFAULT_SEGMENT_BYTES;
  char uuid[37];
  uuid_unparse_lower(disk_id, uuid);
  size_t n = strlen(state_dir) + sizeof "/journal/" + sizeof uuid;
  rpl_err e = RPL_OK;
  char *parent = malloc(n);
  j->dir = malloc(n);
  j->digest = XXH3_createState();
  if (!parent || !j->dir || !j->digest) {
    e = RPL_E_NOMEM;
    goto fail;
  }
  snprintf(parent, n, "%s/journal", state_dir);
  snprintf(j->dir, n, "%s/journal/%s", state_dir, uuid);
  if ((e = make_dir(parent)) || (e = make_dir(j->dir)))
    goto fail;
  j->dirfd = open(j->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (j->dirfd < 0) {
    e = sys_err("cannot open directory", j->dir);
    goto fail;
  }
  if ((e = recover(j)))
    goto fail;
  free(parent);
  *out = j;
  return RPL_OK;
fail:
  free(parent);
  journal_close(j);
  return e;
}

void journal_close(struct journal *j)
{
  if (!j)
    return;
  if (j->fd >= 0)
    close(j->fd);
  if (j->dirfd >= 0)
    close(j->dirfd);
  XXH3_freeState(j->digest);
  pthread_mutex_destroy(&j->lock);
  free(j->segs);
  free(j->cycles);
  free(j->dir);
  free(j);
}

/* ---- appending ---------------------------------------------------------------------------- */

/* Starts a new segment after making the current one durable, so that a later segment's existence
 * implies every earlier one is complete on disk. */
static rpl_err roll_segment(struct journal *j)
{
  if (j->fd >= 0) {
    if (fdatasync(j->fd) != 0) {
      j->broken = RPL_E_JOURNAL_BROKEN;
      return sys_err("fdatasync of segment in", j->dir);
    }
    close(j->fd);
    j->fd = -1;
  }
  uint64_t seq = j->next_seq;
  int fd = open_segment_fd(j, seq, O_WRONLY | O_CREAT | O_EXCL);
  if (fd < 0)
    return sys_err("cannot create segment in", j->dir);
  uint8_t body[JOURNAL_SEGMENT_BODY], rec[SEGMENT_RECORD_SIZE];
  memcpy(body, j->disk_id, PROTO_ID_SIZE);
  put_u64(body + 16, seq);
  encode_head(rec, JOURNAL_REC_SEGMENT, body, sizeof body, 0, 0);
  rpl_err e = segs_push(j, (struct segment){.seq = seq, .size = 0});
  if (e == RPL_OK && pwrite(fd, rec, sizeof rec, 0) != (ssize_t)sizeof rec) {
    e = sys_err("cannot write segment header in", j->dir);
    j->nsegs--;
  }
  if (e) {
    close(fd);
    (void)unlink_segment(j, seq);
    return e;
  }
  j->fd = fd;
  j->next_seq = seq + 1;
  last_seg(j)->size = sizeof rec;
  j->total_bytes += sizeof rec;
  j->dir_dirty = true;
  return RPL_OK;
}

/* Appends one record (head = header + body, then payload) to the last segment, rolling to a new
 * segment when it is full. reserve_bytes: room that must stay free after this record (so that a
 * cycle that got its extents in can always write its end record). On a write error the segment is
 * truncated back, so the file never keeps half a record. */
static rpl_err write_record(struct journal *j, const uint8_t *head, size_t head_len, const uint8_t *payload,
                            uint32_t payload_len, uint64_t cycle, uint64_t reserve_bytes)
{
  uint64_t len = head_len + (uint64_t)payload_len;
  struct segment *seg = last_seg(j);
  bool roll = j->fd < 0 || (seg->size + len > j->opts.segment_bytes && seg->size > SEGMENT_RECORD_SIZE);
  uint64_t need = len + reserve_bytes + (roll ? SEGMENT_RECORD_SIZE : 0);
  if (j->total_bytes + need > j->opts.limit_bytes)
    return RPL_E_JOURNAL_FULL;
  rpl_err e;
  if (roll && (e = roll_segment(j)))
    return e;
  seg = last_seg(j);
  struct iovec iov[2] = {{(void *)head, head_len}, {(void *)payload, payload_len}};
  int iovcnt = payload_len ? 2 : 1;
  uint64_t done = 0;
  while (done < len) {
    ssize_t n = pwritev(j->fd, iov, iovcnt, (off_t)(seg->size + done));
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      e = n < 0 ? sys_err("cannot append to segment in", j->dir) : RPL_E_IO;
      if (ftruncate(j->fd, (off_t)seg->size) != 0) {
        log_err("journal %s: cannot cut a partly written record: %s", j->dir, strerror(errno));
        j->broken = RPL_E_JOURNAL_BROKEN;
      }
      return e;
    }
    done += (uint64_t)n;
    /* Advance the vector past what was written (short writes are rare but legal). */
    size_t k = (size_t)n;
    for (int i = 0; i < iovcnt && k; i++) {
      size_t take = k < iov[i].iov_len ? k : iov[i].iov_len;
      iov[i].iov_base = (uint8_t *)iov[i].iov_base + take;
      iov[i].iov_len -= take;
      k -= take;
    }
  }
  seg->size += len;
  j->total_bytes += len;
  if (cycle > seg->max_cycle)
    seg->max_cycle = cycle;
  return RPL_OK;
}

/* Room kept free while a cycle is open: its end record, possibly in a new segment. */
#define COMMIT_RESERVE (END_RECORD_SIZE + SEGMENT_RECORD_SIZE)

/* Removes the open cycle's records: truncates its first segment back to its CYCLE_BEGIN and
 * deletes the segments it rolled into (durably, so they cannot reappear and mix with the next
 * attempt's records). */
static rpl_err drop_open_cycle(struct journal *j)
{
  size_t idx = j->nsegs;
  for (size_t i = 0; i < j->nsegs; i++)
    if (j->segs[i].seq == j->open_seg_seq)
      idx = i;
  if (idx == j->nsegs) {
    j->broken = RPL_E_JOURNAL_BROKEN;
    return RPL_E_INTERNAL;
  }
  rpl_err e;
  bool unlinked = false;
  while (j->nsegs > idx + 1) {
    struct segment *seg = last_seg(j);
    if (j->fd >= 0) {
      close(j->fd);
      j->fd = -1;
    }
    if ((e = unlink_segment(j, seg->seq))) {
      j->broken = RPL_E_JOURNAL_BROKEN;
      return e;
    }
    j->total_bytes -= seg->size;
    j->nsegs--;
    unlinked = true;
  }
  j->next_seq = last_seg(j)->seq + 1;
  if (j->fd < 0 && (j->fd = open_segment_fd(j, j->open_seg_seq, O_WRONLY)) < 0) {
    j->broken = RPL_E_JOURNAL_BROKEN;
    return sys_err("cannot reopen segment in", j->dir);
  }
  struct segment *seg = last_seg(j);
  if (ftruncate(j->fd, (off_t)j->open_off) != 0) {
    j->broken = RPL_E_JOURNAL_BROKEN;
    return sys_err("cannot truncate segment in", j->dir);
  }
  j->total_bytes -= seg->size - j->open_off;
  seg->size = j->open_off;
  seg->max_cycle = j->open_prev_max;
  j->open_cycle = 0;
  if (unlinked && (e = fsync_dir(j)))
    return e;
  return RPL_OK;
}

static rpl_err usable(struct journal *j) { return j->broken; }

rpl_err journal_begin_cycle(struct journal *j, uint64_t n, uint8_t kind)
{
  if (kind > PROTO_CYCLE_RESYNC || n == 0)
    return RPL_E_INVALID_ARGUMENT;
  pthread_mutex_lock(&j->lock);
  rpl_err e = usable(j);
  if (e)
    goto out;
  if (j->open_cycle && j->open_cycle == n) {
    if ((e = drop_open_cycle(j)))
      goto out;
  }
  if (j->open_cycle || n != j->last_committed + 1) {
    log_warn("journal %s: refused cycle %" PRIu64 " (last committed %" PRIu64 ", open %" PRIu64 ")", j->dir, n,
             j->last_committed, j->open_cycle);
    e = RPL_E_JOURNAL_CYCLE_ORDER;
    goto out;
  }
  uint8_t body[JOURNAL_BEGIN_BODY], rec[JOURNAL_HEADER_SIZE + JOURNAL_BEGIN_BODY];
  put_u64(body, n);
  body[8] = kind;
  size_t len = encode_head(rec, JOURNAL_REC_CYCLE_BEGIN, body, sizeof body, 0, 0);
  uint64_t seq_before = j->nsegs ? last_seg(j)->seq : 0, max_before = j->nsegs ? last_seg(j)->max_cycle : 0;
  if ((e = write_record(j, rec, len, NULL, 0, n, COMMIT_RESERVE)))
    goto out;
  /* Where the record landed: write_record may have started a new segment for it. */
  j->open_prev_max = last_seg(j)->seq == seq_before ? max_before : 0;
  j->open_cycle = n;
  j->open_kind = kind;
  j->open_seg_seq = last_seg(j)->seq;
  j->open_off = last_seg(j)->size - len;
  j->open_extents = j->open_raw = j->open_payload = 0;
  XXH3_128bits_reset(j->digest);
out:
  pthread_mutex_unlock(&j->lock);
  return e;
}

rpl_err journal_append_extent(struct journal *j, uint64_t n, const struct journal_extent *x)
{
  if (!x || (x->payload_len && !x->payload) || x->payload_len > JOURNAL_MAX_PAYLOAD ||
      !extent_fields_valid(x->offset, x->length, x->codec, x->payload_len))
    return RPL_E_INVALID_ARGUMENT;
  pthread_mutex_lock(&j->lock);
  rpl_err e = usable(j);
  if (e)
    goto out;
  if (!j->open_cycle || j->open_cycle != n) {
    e = RPL_E_JOURNAL_NO_CYCLE;
    goto out;
  }
  uint8_t body[JOURNAL_EXTENT_BODY], rec[JOURNAL_HEADER_SIZE + JOURNAL_EXTENT_BODY];
  put_u64(body, n);
  put_u64(body + 8, x->offset);
  put_u32(body + 16, x->length);
  body[20] = x->codec;
  memcpy(body + 21, x->hash, PROTO_HASH_SIZE);
  uint32_t crc = x->payload_len ? proto_crc32c(0, x->payload, x->payload_len) : 0;
  size_t len = encode_head(rec, JOURNAL_REC_EXTENT, body, sizeof body, x->payload_len, crc);
  if ((e = write_record(j, rec, len, x->payload, x->payload_len, n, COMMIT_RESERVE)))
    goto out;
  j->open_extents++;
  j->open_raw += x->length;
  j->open_payload += x->payload_len;
  XXH3_128bits_update(j->digest, x->hash, PROTO_HASH_SIZE);
out:
  pthread_mutex_unlock(&j->lock);
  return e;
}

rpl_err journal_commit_cycle(struct journal *j, uint64_t n, const struct journal_cycle_totals *t)
{
  if (!t)
    return RPL_E_INVALID_ARGUMENT;
  pthread_mutex_lock(&j->lock);
  rpl_err e = usable(j);
  if (e)
    goto out;
  if (!j->open_cycle || j->open_cycle != n) {
    e = RPL_E_JOURNAL_NO_CYCLE;
    goto out;
  }
  XXH128_canonical_t digest;
  XXH128_canonicalFromHash(&digest, XXH3_128bits_digest(j->digest));
  if (t->extents != j->open_extents || t->raw_bytes != j->open_raw || t->payload_bytes != j->open_payload ||
      memcmp(t->digest, digest.digest, PROTO_HASH_SIZE)) {
    log_warn("journal %s: cycle %" PRIu64 " totals differ: %" PRIu64 " extents/%" PRIu64 " raw bytes sent, %" PRIu64
             "/%" PRIu64 " journaled (or the digest differs)", j->dir, n, t->extents, t->raw_bytes, j->open_extents,
             j->open_raw);
    e = RPL_E_JOURNAL_TOTALS;
    goto out;
  }
  /* First the cycle's records, then its end record: a readable end record then proves that all
   * before it is durable (see the argument at the top). */
  if (fdatasync(j->fd) != 0) {
    j->broken = RPL_E_JOURNAL_BROKEN;
    e = sys_err("fdatasync of segment in", j->dir);
    goto out;
  }
  uint8_t body[JOURNAL_END_BODY], rec[END_RECORD_SIZE];
  put_u64(body, n);
  put_u64(body + 8, t->extents);
  put_u64(body + 16, t->raw_bytes);
  put_u64(body + 24, t->payload_bytes);
  memcpy(body + 32, t->digest, PROTO_HASH_SIZE);
  encode_head(rec, JOURNAL_REC_CYCLE_END, body, sizeof body, 0, 0);
  if ((e = write_record(j, rec, sizeof rec, NULL, 0, n, 0)))
    goto out;
  if (fdatasync(j->fd) != 0) {
    j->broken = RPL_E_JOURNAL_BROKEN;
    e = sys_err("fdatasync of segment in", j->dir);
    goto out;
  }
  if (j->dir_dirty && (e = fsync_dir(j))) {
    j->broken = RPL_E_JOURNAL_BROKEN;
    goto out;
  }
  struct committed_cycle c = {.info = {.cycle = n, .kind = j->open_kind, .totals = *t},
                              .seg_seq = j->open_seg_seq, .begin_off = j->open_off};
  if ((e = cycles_push(j, &c))) {
    /* Durable but not indexed: only a reopen can pick it up. */
    j->broken = RPL_E_JOURNAL_BROKEN;
    goto out;
  }
  j->last_committed = n;
  j->open_cycle = 0;
out:
  pthread_mutex_unlock(&j->lock);
  return e;
}

rpl_err journal_abandon_cycle(struct journal *j, uint64_t n)
{
  pthread_mutex_lock(&j->lock);
  rpl_err e = usable(j);
  if (e == RPL_OK && (!j->open_cycle || j->open_cycle != n))
    e = RPL_E_JOURNAL_NO_CYCLE;
  if (e == RPL_OK)
    e = drop_open_cycle(j);
  pthread_mutex_unlock(&j->lock);
  return e;
}

/* ---- consuming ---------------------------------------------------------------------------- */

static const struct committed_cycle *find_cycle(const struct journal *j, uint64_t n)
{
  size_t lo = 0, hi = j->ncycles;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (j->cycles[mid].info.cycle < n)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo < j->ncycles && j->cycles[lo].info.cycle == n ? &j->cycles[lo] : NULL;
}

rpl_err journal_next_pending(struct journal *j, struct journal_cycle_info *info)
{
  pthread_mutex_lock(&j->lock);
  const struct committed_cycle *c = j->last_applied < j->last_committed ? find_cycle(j, j->last_applied + 1) : NULL;
  if (c)
    *info = c->info;
  pthread_mutex_unlock(&j->lock);
  return c ? RPL_OK : RPL_E_NOT_FOUND;
}

rpl_err journal_cycle_info(struct journal *j, uint64_t n, struct journal_cycle_info *info)
{
  pthread_mutex_lock(&j->lock);
  const struct committed_cycle *c = find_cycle(j, n);
  if (c)
    *info = c->info;
  pthread_mutex_unlock(&j->lock);
  return c ? RPL_OK : RPL_E_JOURNAL_NOT_COMMITTED;
}

rpl_err journal_mark_applied(struct journal *j, uint64_t n)
{
  pthread_mutex_lock(&j->lock);
  rpl_err e = RPL_OK;
  if (n > j->last_committed)
    e = RPL_E_JOURNAL_NOT_COMMITTED;
  else if (n > j->last_applied && (e = write_applied(j, n)) == RPL_OK)
    j->last_applied = n;
  pthread_mutex_unlock(&j->lock);
  return e;
}

rpl_err journal_trim(struct journal *j, uint64_t n)
{
  pthread_mutex_lock(&j->lock);
  rpl_err e = RPL_OK;
  if (n > j->last_applied) {
    e = RPL_E_JOURNAL_NOT_APPLIED;
    goto out;
  }
  /* Oldest first; the last segment only when it takes no open cycle (the next append starts a new
   * one). Segments hold increasing cycles, so the deletable ones are a prefix. */
  size_t drop = 0;
  while (drop < j->nsegs && j->segs[drop].max_cycle <= n && (drop + 1 < j->nsegs || !j->open_cycle))
    drop++;
  for (size_t i = 0; i < drop; i++) {
    if (i + 1 == j->nsegs && j->fd >= 0) {
      close(j->fd);
      j->fd = -1;
    }
    if ((e = unlink_segment(j, j->segs[i].seq))) {
      drop = i;
      break;
    }
    j->total_bytes -= j->segs[i].size;
  }
  if (drop && j->nsegs > drop)
    memmove(j->segs, j->segs + drop, (j->nsegs - drop) * sizeof *j->segs);
  j->nsegs -= drop;
  size_t k = 0;
  while (k < j->ncycles && j->cycles[k].info.cycle <= n)
    k++;
  if (k && j->ncycles > k)
    memmove(j->cycles, j->cycles + k, (j->ncycles - k) * sizeof *j->cycles);
  j->ncycles -= k;
  /* Deletions made durable now, so an old segment can never reappear next to newer ones. */
  if (drop && e == RPL_OK)
    e = fsync_dir(j);
out:
  pthread_mutex_unlock(&j->lock);
  return e;
}

rpl_err journal_set_base(struct journal *j, uint64_t n)
{
  pthread_mutex_lock(&j->lock);
  rpl_err e = RPL_OK;
  if (j->open_cycle || j->last_committed != j->last_applied)
    e = RPL_E_EXISTS;
  else if (n < j->last_committed)
    e = RPL_E_INVALID_ARGUMENT;
  else if (n > j->last_committed && (e = write_applied(j, n)) == RPL_OK)
    j->last_committed = j->last_applied = n;
  pthread_mutex_unlock(&j->lock);
  return e;
}

void journal_get_usage(struct journal *j, struct journal_usage *u)
{
  pthread_mutex_lock(&j->lock);
  *u = (struct journal_usage){.bytes = j->total_bytes, .limit_bytes = j->opts.limit_bytes, .segments = j->nsegs,
                              .last_committed = j->last_committed, .last_applied = j->last_applied,
                              .open_cycle = j->open_cycle};
  for (size_t i = 0; i < j->ncycles; i++)
    if (j->cycles[i].info.cycle > j->last_applied) {
      u->cycles_pending++;
      u->pending_bytes += j->cycles[i].info.totals.payload_bytes;
    }
  pthread_mutex_unlock(&j->lock);
}

/* ---- readers ------------------------------------------------------------------------------ */

rpl_err journal_reader_open(struct journal *j, uint64_t n, struct journal_reader **out)
{
  *out = NULL;
  pthread_mutex_lock(&j->lock);
  const struct committed_cycle *c = find_cycle(j, n);
  struct journal_reader *r = NULL;
  rpl_err e = RPL_OK;
  if (!c) {
    e = RPL_E_JOURNAL_NOT_COMMITTED;
    goto out;
  }
  if (!(r = calloc(1, sizeof *r)) || !(r->dir = strdup(j->dir))) {
    free(r);
    r = NULL;
    e = RPL_E_NOMEM;
    goto out;
  }
  r->cycle = n;
  r->expected_extents = c->info.totals.extents;
  r->start_seq = c->seg_seq;
  r->start_off = c->begin_off;
  r->fd = -1;
out:
  pthread_mutex_unlock(&j->lock);
  if (e == RPL_OK) {
    if ((e = journal_reader_rewind(r))) {
      journal_reader_close(r);
      return e;
    }
    *out = r;
  }
  return e;
}

static rpl_err reader_open_seg(struct journal_reader *r, uint64_t seq)
{
  if (r->fd >= 0)
    close(r->fd);
  char path[PATH_MAX];
  char name[SEGMENT_NAME_LEN + 1];
  segment_name(name, seq);
  snprintf(path, sizeof path, "%s/%s", r->dir, name);
  r->fd = open(path, O_RDONLY | O_CLOEXEC);
  struct stat st;
  if (r->fd < 0 || fstat(r->fd, &st) != 0) {
    log_err("journal: cannot read segment %s of cycle %" PRIu64 ": %s", path, r->cycle, strerror(errno));
    return RPL_E_JOURNAL_CORRUPT;
  }
  r->seq = seq;
  r->file_size = (uint64_t)st.st_size;
  return RPL_OK;
}

rpl_err journal_reader_rewind(struct journal_reader *r)
{
  r->begun = r->done = false;
  r->extents_read = 0;
  rpl_err e = reader_open_seg(r, r->start_seq);
  r->off = r->start_off;
  return e;
}

static rpl_err reader_damaged(struct journal_reader *r, const char *what)
{
  log_err("journal %s: cycle %" PRIu64 ": %s in segment %" PRIu64 " at byte %" PRIu64, r->dir, r->cycle, what,
          r->seq, r->off);
  return RPL_E_JOURNAL_CORRUPT;
}

rpl_err journal_reader_next(struct journal_reader *r, struct journal_extent *x, bool *end)
{
  *end = false;
  if (r->done) {
    *end = true;
    return RPL_OK;
  }
  for (;;) {
    if (r->off >= r->file_size) { /* the cycle continues in the next segment */
      rpl_err e = reader_open_seg(r, r->seq + 1);
      if (e)
        return e;
      struct journal_record seg;
      uint64_t len;
      if (read_head(r->fd, 0, r->file_size, &seg, &len, NULL) || seg.type != JOURNAL_REC_SEGMENT)
        return reader_damaged(r, "bad segment header");
      r->off = len;
      continue;
    }
    struct journal_record rec;
    uint64_t len;
    uint32_t payload_crc;
    rpl_err e = read_head(r->fd, r->off, r->file_size, &rec, &len, &payload_crc);
    if (e)
      return reader_damaged(r, "unreadable record");
    if (!r->begun) {
      if (rec.type != JOURNAL_REC_CYCLE_BEGIN || rec.u.begin.cycle != r->cycle)
        return reader_damaged(r, "cycle start record missing");
      r->begun = true;
      r->off += len;
      continue;
    }
    if (rec.type == JOURNAL_REC_CYCLE_END) {
      if (rec.u.end.cycle != r->cycle || r->extents_read != r->expected_extents)
        return reader_damaged(r, "cycle end does not match");
      r->off += len;
      r->done = true;
      *end = true;
      return RPL_OK;
    }
    if (rec.type != JOURNAL_REC_EXTENT || rec.u.extent.cycle != r->cycle)
      return reader_damaged(r, "foreign record inside the cycle");
    if (rec.payload_len > r->buf_alloc) { /* capped: payload_len <= JOURNAL_MAX_PAYLOAD */
      uint8_t *p = realloc(r->buf, rec.payload_len);
      if (!p)
        return RPL_E_NOMEM;
      r->buf = p;
      r->buf_alloc = rec.payload_len;
    }
    uint64_t poff = r->off + len - rec.payload_len;
    size_t got;
    if (rec.payload_len &&
        (pread_full(r->fd, r->buf, rec.payload_len, poff, &got) || got != rec.payload_len ||
         proto_crc32c(0, r->buf, rec.payload_len) != payload_crc))
      return reader_damaged(r, "payload checksum mismatch");
    *x = (struct journal_extent){.offset = rec.u.extent.offset, .length = rec.u.extent.length,
                                 .codec = rec.u.extent.codec, .payload = rec.payload_len ? r->buf : NULL,
                                 .payload_len = rec.payload_len};
    memcpy(x->hash, rec.u.extent.hash, PROTO_HASH_SIZE);
    r->extents_read++;
    r->off += len;
    return RPL_OK;
  }
}

void journal_reader_close(struct journal_reader *r)
{
  if (!r)
    return;
  if (r->fd >= 0)
    close(r->fd);
  free(r->buf);
  free(r->dir);
  free(r);
}
