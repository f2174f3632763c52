/* journal_internal.h - what the cache journal's parts share (layout constants, struct journal, helpers).
 * Only journal.c, journal_record.c and journal_recover.c may include it; the rest use journal.h. */
#ifndef RPL_JOURNAL_INTERNAL_H
#define RPL_JOURNAL_INTERNAL_H

#include "journal.h"
#include "state_files.h"

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <xxhash.h>

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
#define SEGMENT_NAME_LEN    20 /* 16 hex digits + ".seg" */
#define SCAN_CHUNK          (1u << 20)

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

/* journal_record.c */
void journal_put_u32(uint8_t *p, uint32_t v);
void journal_put_u64(uint8_t *p, uint64_t v);
uint32_t journal_get_u32(const uint8_t *p);
uint64_t journal_get_u64(const uint8_t *p);
bool journal_extent_fields_valid(uint64_t offset, uint32_t length, uint8_t codec, uint32_t payload_len);
rpl_err journal_decode_head(const uint8_t *buf, const struct journal_record_header *h, struct journal_record *rec);
size_t journal_encode_head(uint8_t *out, uint8_t type, const uint8_t *body, uint32_t body_len, uint32_t payload_len,
                           uint32_t payload_crc);

/* journal_recover.c */
rpl_err journal_read_head(int fd, uint64_t off, uint64_t file_size, struct journal_record *rec, uint64_t *rec_len,
                          uint32_t *payload_crc);
rpl_err journal_recover(struct journal *j);

/* journal.c */
rpl_err journal_sys_err(const char *what, const char *path);
bool journal_parse_segment_name(const char *name, uint64_t *seq);
rpl_err journal_fsync_dir(struct journal *j);
rpl_err journal_segs_push(struct journal *j, struct segment s);
rpl_err journal_cycles_push(struct journal *j, const struct committed_cycle *c);
int journal_open_segment_fd(struct journal *j, uint64_t seq, int flags);
rpl_err journal_unlink_segment(struct journal *j, uint64_t seq);
rpl_err journal_read_applied(struct journal *j, uint64_t *applied);

#endif
