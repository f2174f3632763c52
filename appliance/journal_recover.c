/* journal_recover.c - the cache journal's recovery scan at open: cuts an uncommitted tail, tells it
 * from damage. */
#include "journal_internal.h"
#include "state_files.h"

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "file_io.h"
#include "rpl_log.h"

/* ---- recovery ----------------------------------------------------------------------------- */

static int cmp_u64(const void *a, const void *b)
{
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* Reads header and body of the record at off into buf and decodes them (payload skipped).
 * RPL_E_JOURNAL_RECORD if there is no complete, valid record there. */
rpl_err journal_read_head(int fd, uint64_t off, uint64_t file_size, struct journal_record *rec, uint64_t *rec_len,
                          uint32_t *payload_crc)
{
  uint8_t buf[JOURNAL_HEADER_SIZE + JOURNAL_MAX_BODY];
  size_t got;
  if (off + JOURNAL_HEADER_SIZE > file_size)
    return RPL_E_JOURNAL_RECORD;
  if (file_pread_full(fd, buf, JOURNAL_HEADER_SIZE, off, &got) || got != JOURNAL_HEADER_SIZE)
    return RPL_E_IO;
  struct journal_record_header h;
  if (journal_record_parse_header(buf, &h))
    return RPL_E_JOURNAL_RECORD;
  uint64_t len = (uint64_t)JOURNAL_HEADER_SIZE + h.body_len + h.payload_len;
  if (off + len > file_size)
    return RPL_E_JOURNAL_RECORD;
  if (file_pread_full(fd, buf + JOURNAL_HEADER_SIZE, h.body_len, off + JOURNAL_HEADER_SIZE, &got) || got != h.body_len)
    return RPL_E_IO;
  rpl_err e = journal_decode_head(buf, &h, rec);
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
    if ((e = file_pread_full(fd, chunk, want, base, &got)))
      break;
    size_t limit = got < SCAN_CHUNK ? got : SCAN_CHUNK; /* candidates starting in this chunk */
    for (size_t i = 0; i < limit && i + END_RECORD_SIZE <= got; i++) {
      if (chunk[i] != 'R' || journal_get_u32(chunk + i) != JOURNAL_RECORD_MAGIC)
        continue;
      struct journal_record_header h;
      struct journal_record rec;
      if (journal_record_parse_header(chunk + i, &h) == RPL_OK && h.type == JOURNAL_REC_CYCLE_END &&
          journal_decode_head(chunk + i, &h, &rec) == RPL_OK && rec.u.end.cycle > after) {
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
    rpl_err e = journal_cycles_push(j, &s->pending);
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
  int fd = journal_open_segment_fd(j, seg->seq, O_RDONLY);
  if (fd < 0)
    return journal_sys_err("cannot open segment in", j->dir);
  struct stat st;
  if (fstat(fd, &st) != 0) {
    rpl_err e = journal_sys_err("cannot stat segment in", j->dir);
    close(fd);
    return e;
  }
  uint64_t size = (uint64_t)st.st_size, off = 0, len = 0;
  struct journal_record rec;
  rpl_err e = journal_read_head(fd, 0, size, &rec, &len, NULL);
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
      if ((e = journal_read_head(fd, off, size, &rec, &len, NULL)) != RPL_OK)
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

/* Fills j->segs with the directory's segment files, in sequence order. */
static rpl_err load_segment_list(struct journal *j)
{
  DIR *d = opendir(j->dir);
  if (!d)
    return journal_sys_err("cannot list", j->dir);
  uint64_t *seqs = NULL;
  size_t nseqs = 0, alloc = 0;
  rpl_err e = RPL_OK;
  struct dirent *de;
  while ((de = readdir(d))) {
    uint64_t seq;
    if (!journal_parse_segment_name(de->d_name, &seq))
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
    qsort(seqs, nseqs, sizeof *seqs, cmp_u64); /* readdir's order is the filesystem's */
  for (size_t i = 0; i < nseqs && !e; i++)
    e = journal_segs_push(j, (struct segment){.seq = seqs[i]});
  free(seqs);
  return e;
}

/* Scans the segments in order up to the first unreadable record, if any: *stop, and where. */
static rpl_err scan_segments(struct journal *j, struct scan *s, bool *stop, size_t *stop_index, uint64_t *stop_off)
{
  *stop = false;
  *stop_off = 0;
  *stop_index = j->nsegs;
  for (size_t i = 0; i < j->nsegs && !*stop; i++) {
    rpl_err e = scan_segment(j, s, i, stop, stop_off);
    if (e)
      return e;
    if (*stop)
      *stop_index = i;
  }
  return RPL_OK;
}

/* Past an unreadable record: a torn tail unless a committed cycle-end follows. */
static rpl_err check_tail_is_torn(struct journal *j, size_t stop_index, uint64_t stop_off)
{
  for (size_t i = stop_index; i < j->nsegs; i++) {
    int fd = journal_open_segment_fd(j, j->segs[i].seq, O_RDONLY);
    if (fd < 0)
      return journal_sys_err("cannot open segment in", j->dir);
    struct stat st;
    bool found = false;
    rpl_err e = fstat(fd, &st) ? RPL_E_IO
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
  return RPL_OK;
}

static rpl_err truncate_segment(struct journal *j, struct segment *seg, uint64_t cut_off)
{
  if (seg->size <= cut_off)
    return RPL_OK;
  log_warn("journal %s: cut %" PRIu64 " bytes of uncommitted or torn records from segment %" PRIu64, j->dir,
           seg->size - cut_off, seg->seq);
  int fd = journal_open_segment_fd(j, seg->seq, O_WRONLY);
  if (fd < 0 || ftruncate(fd, (off_t)cut_off) != 0) {
    rpl_err e = journal_sys_err("cannot truncate segment in", j->dir);
    if (fd >= 0)
      close(fd);
    return e;
  }
  close(fd);
  seg->size = cut_off;
  return RPL_OK;
}

/* Cuts everything after the last committed cycle end (torn records, uncommitted cycles). */
static rpl_err cut_after_last_commit(struct journal *j, const struct scan *s)
{
  rpl_err e;
  size_t keep = s->have_cut ? s->cut_index + 1 : 0;
  bool unlinked = false;
  for (size_t i = j->nsegs; i-- > keep;) {
    if ((e = journal_unlink_segment(j, j->segs[i].seq)))
      return e;
    unlinked = true;
  }
  if (unlinked)
    log_warn("journal %s: removed %zu segment(s) holding only uncommitted records", j->dir, j->nsegs - keep);
  j->nsegs = keep;
  if (keep && (e = truncate_segment(j, &j->segs[keep - 1], s->cut_off)))
    return e;
  if (unlinked && (e = journal_fsync_dir(j)))
    return e;
  return RPL_OK;
}

rpl_err journal_recover(struct journal *j)
{
  rpl_err e = load_segment_list(j);
  if (e)
    return e;
  (void)unlinkat(j->dirfd, STATE_JOURNAL_APPLIED_TMP, 0); /* a marker update that never got renamed */
  if ((e = journal_read_applied(j, &j->last_applied)))
    return e;
  j->last_committed = j->last_applied;

  struct scan s = {.digest = j->digest};
  bool stop;
  size_t stop_index;
  uint64_t stop_off;
  if ((e = scan_segments(j, &s, &stop, &stop_index, &stop_off)))
    return e;
  if (stop && (e = check_tail_is_torn(j, stop_index, stop_off)))
    return e;
  if ((e = cut_after_last_commit(j, &s)))
    return e;
  j->total_bytes = 0;
  for (size_t i = 0; i < j->nsegs; i++)
    j->total_bytes += j->segs[i].size;
  j->next_seq = j->nsegs ? j->segs[j->nsegs - 1].seq + 1 : 1;
  return RPL_OK;
}
