/* journal.c - the appliance's durable cache journal: open/close, append/commit, consume, readers. */
#include "journal_internal.h"
#include "state_files.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>
#include <uuid/uuid.h>
#include <xxhash.h>

#include "file_io.h"
#include "rpl_log.h"

rpl_err journal_sys_err(const char *what, const char *path)
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

bool journal_parse_segment_name(const char *name, uint64_t *seq)
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

rpl_err journal_fsync_dir(struct journal *j)
{
  if (fsync(j->dirfd) != 0)
    return journal_sys_err("fsync of directory", j->dir);
  j->dir_dirty = false;
  return RPL_OK;
}

static struct segment *last_seg(struct journal *j) { return j->nsegs ? &j->segs[j->nsegs - 1] : NULL; }

rpl_err journal_segs_push(struct journal *j, struct segment s)
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

rpl_err journal_cycles_push(struct journal *j, const struct committed_cycle *c)
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

int journal_open_segment_fd(struct journal *j, uint64_t seq, int flags)
{
  char name[SEGMENT_NAME_LEN + 1];
  segment_name(name, seq);
  return openat(j->dirfd, name, flags | O_CLOEXEC, 0600);
}

rpl_err journal_unlink_segment(struct journal *j, uint64_t seq)
{
  char name[SEGMENT_NAME_LEN + 1];
  segment_name(name, seq);
  if (unlinkat(j->dirfd, name, 0) != 0 && errno != ENOENT)
    return journal_sys_err("cannot delete segment", name);
  return RPL_OK;
}

/* ---- applied marker ----------------------------------------------------------------------- */

rpl_err journal_read_applied(struct journal *j, uint64_t *applied)
{
  *applied = 0;
  int fd = openat(j->dirfd, STATE_JOURNAL_APPLIED, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return errno == ENOENT ? RPL_OK : journal_sys_err("cannot open", STATE_JOURNAL_APPLIED);
  uint8_t b[APPLIED_SIZE + 1];
  size_t got;
  rpl_err e = file_pread_full(fd, b, sizeof b, 0, &got);
  close(fd);
  if (e)
    return journal_sys_err("cannot read", STATE_JOURNAL_APPLIED);
  /* Written by rename of a complete, fsynced file: anything else is damage, not a torn write. */
  if (got != APPLIED_SIZE || journal_get_u32(b) != APPLIED_MAGIC || journal_get_u32(b + 4) != JOURNAL_FORMAT_VERSION ||
      journal_get_u32(b + 32) != proto_crc32c(0, b, 32)) {
    log_err("journal %s: the applied marker is damaged", j->dir);
    return RPL_E_JOURNAL_CORRUPT;
  }
  if (memcmp(b + 8, j->disk_id, PROTO_ID_SIZE)) {
    log_err("journal %s: the applied marker names another disk", j->dir);
    return RPL_E_JOURNAL_FOREIGN;
  }
  *applied = journal_get_u64(b + 24);
  return RPL_OK;
}

static rpl_err write_applied(struct journal *j, uint64_t applied)
{
  uint8_t b[APPLIED_SIZE];
  journal_put_u32(b, APPLIED_MAGIC);
  journal_put_u32(b + 4, JOURNAL_FORMAT_VERSION);
  memcpy(b + 8, j->disk_id, PROTO_ID_SIZE);
  journal_put_u64(b + 24, applied);
  journal_put_u32(b + 32, proto_crc32c(0, b, 32));
  int fd = openat(j->dirfd, STATE_JOURNAL_APPLIED_TMP, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0)
    return journal_sys_err("cannot create", STATE_JOURNAL_APPLIED_TMP);
  ssize_t n = write(fd, b, sizeof b);
  if (n != (ssize_t)sizeof b || fdatasync(fd) != 0) {
    rpl_err e = n < 0 || n == (ssize_t)sizeof b ? journal_sys_err("cannot write", STATE_JOURNAL_APPLIED_TMP) : RPL_E_IO;
    close(fd);
    return e;
  }
  close(fd);
  if (renameat(j->dirfd, STATE_JOURNAL_APPLIED_TMP, j->dirfd, STATE_JOURNAL_APPLIED) != 0)
    return journal_sys_err("cannot rename", STATE_JOURNAL_APPLIED_TMP);
  return journal_fsync_dir(j);
}

/* ---- open / close ------------------------------------------------------------------------- */

static rpl_err make_dir(const char *path)
{
  if (mkdir(path, 0700) == 0 || errno == EEXIST)
    return RPL_OK;
  return journal_sys_err("cannot create directory", path);
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
  snprintf(parent, n, "%s/" STATE_JOURNAL_DIR, state_dir);
  snprintf(j->dir, n, "%s/" STATE_JOURNAL_DIR "/%s", state_dir, uuid);
  if ((e = make_dir(parent)) || (e = make_dir(j->dir)))
    goto fail;
  j->dirfd = open(j->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (j->dirfd < 0) {
    e = journal_sys_err("cannot open directory", j->dir);
    goto fail;
  }
  /* One writer per journal: a second appliance on the same state would interleave appends. The
   * lock goes with the descriptor, so a killed process releases it. */
  if (flock(j->dirfd, LOCK_EX | LOCK_NB) != 0) {
    e = errno == EWOULDBLOCK ? RPL_E_JOURNAL_LOCKED : journal_sys_err("cannot lock", j->dir);
    goto fail;
  }
  if ((e = journal_recover(j)))
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
      return journal_sys_err("fdatasync of segment in", j->dir);
    }
    close(j->fd);
    j->fd = -1;
  }
  uint64_t seq = j->next_seq;
  int fd = journal_open_segment_fd(j, seq, O_WRONLY | O_CREAT | O_EXCL);
  if (fd < 0)
    return journal_sys_err("cannot create segment in", j->dir);
  uint8_t body[JOURNAL_SEGMENT_BODY], rec[SEGMENT_RECORD_SIZE];
  memcpy(body, j->disk_id, PROTO_ID_SIZE);
  journal_put_u64(body + 16, seq);
  journal_encode_head(rec, JOURNAL_REC_SEGMENT, body, sizeof body, 0, 0);
  rpl_err e = journal_segs_push(j, (struct segment){.seq = seq, .size = 0});
  if (e == RPL_OK && pwrite(fd, rec, sizeof rec, 0) != (ssize_t)sizeof rec) {
    e = journal_sys_err("cannot write segment header in", j->dir);
    j->nsegs--;
  }
  if (e) {
    close(fd);
    (void)journal_unlink_segment(j, seq);
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
  if (j->fd < 0 && seg && seg->size + len <= j->opts.segment_bytes) {
    /* After a reopen: keep filling the last segment rather than leave a short one per restart. */
    if ((j->fd = journal_open_segment_fd(j, seg->seq, O_WRONLY)) < 0)
      return journal_sys_err("cannot reopen segment in", j->dir);
  }
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
      e = n < 0 ? journal_sys_err("cannot append to segment in", j->dir) : RPL_E_IO;
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
    if ((e = journal_unlink_segment(j, seg->seq))) {
      j->broken = RPL_E_JOURNAL_BROKEN;
      return e;
    }
    j->total_bytes -= seg->size;
    j->nsegs--;
    unlinked = true;
  }
  j->next_seq = last_seg(j)->seq + 1;
  if (j->fd < 0 && (j->fd = journal_open_segment_fd(j, j->open_seg_seq, O_WRONLY)) < 0) {
    j->broken = RPL_E_JOURNAL_BROKEN;
    return journal_sys_err("cannot reopen segment in", j->dir);
  }
  struct segment *seg = last_seg(j);
  if (ftruncate(j->fd, (off_t)j->open_off) != 0) {
    j->broken = RPL_E_JOURNAL_BROKEN;
    return journal_sys_err("cannot truncate segment in", j->dir);
  }
  j->total_bytes -= seg->size - j->open_off;
  seg->size = j->open_off;
  seg->max_cycle = j->open_prev_max;
  j->open_cycle = 0;
  if (unlinked && (e = journal_fsync_dir(j)))
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
    e = RPL_E_CYCLE_ORDER;
    goto out;
  }
  uint8_t body[JOURNAL_BEGIN_BODY], rec[JOURNAL_HEADER_SIZE + JOURNAL_BEGIN_BODY];
  journal_put_u64(body, n);
  body[8] = kind;
  size_t len = journal_encode_head(rec, JOURNAL_REC_CYCLE_BEGIN, body, sizeof body, 0, 0);
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
      !journal_extent_fields_valid(x->offset, x->length, x->codec, x->payload_len))
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
  journal_put_u64(body, n);
  journal_put_u64(body + 8, x->offset);
  journal_put_u32(body + 16, x->length);
  body[20] = x->codec;
  memcpy(body + 21, x->hash, PROTO_HASH_SIZE);
  uint32_t crc = x->payload_len ? proto_crc32c(0, x->payload, x->payload_len) : 0;
  size_t len = journal_encode_head(rec, JOURNAL_REC_EXTENT, body, sizeof body, x->payload_len, crc);
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
    e = RPL_E_CYCLE_TOTALS;
    goto out;
  }
  /* First the cycle's records, then its end record: a readable end record then proves that all
   * before it is durable (see the argument at the top). */
  if (fdatasync(j->fd) != 0) {
    j->broken = RPL_E_JOURNAL_BROKEN;
    e = journal_sys_err("fdatasync of segment in", j->dir);
    goto out;
  }
  uint8_t body[JOURNAL_END_BODY], rec[END_RECORD_SIZE];
  journal_put_u64(body, n);
  journal_put_u64(body + 8, t->extents);
  journal_put_u64(body + 16, t->raw_bytes);
  journal_put_u64(body + 24, t->payload_bytes);
  memcpy(body + 32, t->digest, PROTO_HASH_SIZE);
  journal_encode_head(rec, JOURNAL_REC_CYCLE_END, body, sizeof body, 0, 0);
  if ((e = write_record(j, rec, sizeof rec, NULL, 0, n, 0)))
    goto out;
  if (fdatasync(j->fd) != 0) {
    j->broken = RPL_E_JOURNAL_BROKEN;
    e = journal_sys_err("fdatasync of segment in", j->dir);
    goto out;
  }
  if (j->dir_dirty && (e = journal_fsync_dir(j))) {
    j->broken = RPL_E_JOURNAL_BROKEN;
    goto out;
  }
  struct committed_cycle c = {.info = {.cycle = n, .kind = j->open_kind, .totals = *t},
                              .seg_seq = j->open_seg_seq, .begin_off = j->open_off};
  if ((e = journal_cycles_push(j, &c))) {
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
    if ((e = journal_unlink_segment(j, j->segs[i].seq))) {
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
    e = journal_fsync_dir(j);
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
  bool in_open = false;
  for (size_t i = 0; j->open_cycle && i < j->nsegs; i++) {
    if (j->segs[i].seq == j->open_seg_seq) {
      in_open = true;
      u->open_bytes += j->segs[i].size - j->open_off;
    } else if (in_open) {
      u->open_bytes += j->segs[i].size;
    }
  }
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
      if (journal_read_head(r->fd, 0, r->file_size, &seg, &len, NULL) || seg.type != JOURNAL_REC_SEGMENT)
        return reader_damaged(r, "bad segment header");
      r->off = len;
      continue;
    }
    struct journal_record rec;
    uint64_t len;
    uint32_t payload_crc;
    rpl_err e = journal_read_head(r->fd, r->off, r->file_size, &rec, &len, &payload_crc);
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
        (file_pread_full(r->fd, r->buf, rec.payload_len, poff, &got) || got != rec.payload_len ||
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
