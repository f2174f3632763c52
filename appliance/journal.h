/* journal.h - the appliance's durable cache journal: per-disk append-only segments of verified cycles.
 * Internal header: appliance/ and tests/ (unit, fuzz, integration helpers, bench) only. */
#ifndef APPLIANCE_JOURNAL_H
#define APPLIANCE_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto.h"
#include "rpl_error.h"

/*
 * What it promises
 *  - A cycle is committed once journal_commit_cycle() returned RPL_OK: its records and the cycle-end
 *    record are on stable storage (fdatasync of the segment, and of the directory when the cycle
 *    created a segment). Only then may the session send ACK(n).
 *  - After a crash, journal_open() finds every committed cycle intact and nothing else: records of
 *    a cycle that never committed (abandoned, or cut by the crash) are discarded, a torn record at
 *    the tail is cut off. Damage before the last committed cycle-end is not silently dropped: it is
 *    reported as RPL_E_JOURNAL_CORRUPT (the disk then needs a resync).
 *  - Payloads are kept exactly as received (zstd stays compressed); nothing is decompressed here.
 *  - The journal never grows beyond its configured size: an append that would cross it fails with
 *    RPL_E_JOURNAL_FULL before writing anything (the backpressure signal; NACK or pause the agent).
 *  - "Applied up to n" is persisted atomically (tmp file + fsync + rename + fsync of the directory).
 *
 * Layout on disk: STATE_DIR/journal/<disk uuid>/ holds segments named %016x.seg (consecutive
 * sequence numbers) and the marker file "applied". A segment is a sequence of records:
 *
 *   offset 0  u32 magic        JOURNAL_RECORD_MAGIC ("RJNL" on disk)
 *          4  u8  version      JOURNAL_FORMAT_VERSION
 *          5  u8  type         enum journal_record_type
 *          6  u16 flags        0 (reserved)
 *          8  u32 body_len     exact size of the type's fixed fields (<= JOURNAL_MAX_BODY)
 *         12  u32 payload_len  <= JOURNAL_MAX_PAYLOAD (EXTENT only; 0 for other types)
 *         16  u32 payload_crc  CRC32C of the payload (0 when empty)
 *         20  u32 header_crc   CRC32C of bytes 0..19 followed by the body
 *         24  body, then payload
 *
 * All integers little-endian, written field by field. Body of each type:
 *   SEGMENT     disk_id[16] u64 segment_seq                          (first record of every segment)
 *   CYCLE_BEGIN u64 cycle u8 kind
 *   EXTENT      u64 cycle u64 offset u32 length u8 codec hash[16]   + payload
 *   CYCLE_END   u64 cycle u64 extents u64 raw_bytes u64 payload_bytes digest[16]
 * The records of cycle n are the run from its last CYCLE_BEGIN(n) to its CYCLE_END(n); a later
 * CYCLE_BEGIN(n) (a restarted cycle) supersedes an earlier, uncommitted one.
 *
 * Threads: journal_* functions on one journal may be called from several threads (a mutex inside
 * serialises them). A journal_reader, once opened, reads files by itself and may run on another
 * thread while the journal takes appends, as long as its cycle is not trimmed meanwhile.
 */

#define JOURNAL_RECORD_MAGIC     0x4c4e4a52u /* bytes 'R' 'J' 'N' 'L' */
#define JOURNAL_FORMAT_VERSION   1
#define JOURNAL_HEADER_SIZE      24
#define JOURNAL_MAX_BODY         64
#define JOURNAL_MAX_PAYLOAD      PROTO_MAX_PAYLOAD /* an EXTENT payload never exceeds its frame's */
#define JOURNAL_MAX_RECORD       (JOURNAL_HEADER_SIZE + JOURNAL_MAX_BODY + JOURNAL_MAX_PAYLOAD)
#define JOURNAL_SEGMENT_BODY     (PROTO_ID_SIZE + 8)
#define JOURNAL_BEGIN_BODY       (8 + 1)
#define JOURNAL_EXTENT_BODY      (8 + 8 + 4 + 1 + PROTO_HASH_SIZE)
#define JOURNAL_END_BODY         (8 + 8 + 8 + 8 + PROTO_HASH_SIZE)

#define JOURNAL_DEFAULT_SEGMENT_BYTES (256ull << 20)
#define JOURNAL_DEFAULT_LIMIT_BYTES   (64ull << 30)
#define JOURNAL_MAX_SEGMENTS          (1u << 20) /* hard cap on the in-memory segment table */
#define JOURNAL_MAX_PENDING_CYCLES    (1u << 20) /* hard cap on the committed-cycle index */

enum journal_record_type {
  JOURNAL_REC_SEGMENT = 1,
  JOURNAL_REC_CYCLE_BEGIN = 2,
  JOURNAL_REC_EXTENT = 3,
  JOURNAL_REC_CYCLE_END = 4,
};

/* One decoded record; payload points into the buffer it was decoded from. */
struct journal_record {
  uint8_t type;
  uint32_t payload_len;
  const uint8_t *payload;
  union {
    struct { uint8_t disk_id[PROTO_ID_SIZE]; uint64_t seq; } segment;
    struct { uint64_t cycle; uint8_t kind; } begin;
    struct { uint64_t cycle, offset; uint32_t length; uint8_t codec; uint8_t hash[PROTO_HASH_SIZE]; } extent;
    struct { uint64_t cycle, extents, raw_bytes, payload_bytes; uint8_t digest[PROTO_HASH_SIZE]; } end;
  } u;
};

/* The size fields of a record header, validated (magic, version, type, flags, body_len exact for the
 * type, payload_len under its cap and allowed for the type) before anything is sized from them. */
struct journal_record_header {
  uint8_t type;
  uint32_t body_len, payload_len, payload_crc, header_crc;
};
RPL_MUST_CHECK rpl_err journal_record_parse_header(const uint8_t buf[JOURNAL_HEADER_SIZE],
                                                   struct journal_record_header *out);

/* Decodes the record at the start of buf. RPL_OK: *rec is set, *used is its size. RPL_E_AGAIN: buf
 * is a valid prefix, *used is the total size needed (JOURNAL_HEADER_SIZE while the header is
 * incomplete). RPL_E_JOURNAL_RECORD: not a valid record (both CRCs and every field are checked). */
RPL_MUST_CHECK rpl_err journal_record_decode(const uint8_t *buf, size_t len, struct journal_record *rec,
                                             size_t *used);

/* ---- the journal ------------------------------------------------------------------------- */

struct journal;

struct journal_options {
  uint64_t limit_bytes;   /* cache size limit over all segments; 0 = JOURNAL_DEFAULT_LIMIT_BYTES */
  uint64_t segment_bytes; /* a segment is closed and a new one started past this; 0 = default */
};

/* Totals the agent sent in CYCLE_END; the journal checks them against what it appended. digest is
 * xxh3-128 (canonical) over the concatenated 16-byte hashes of the cycle's extents, in order. */
struct journal_cycle_totals {
  uint64_t extents, raw_bytes, payload_bytes;
  uint8_t digest[PROTO_HASH_SIZE];
};

/* One extent as appended (payload as received: codec NONE = length raw bytes, ZSTD = compressed,
 * ZERO = empty) and as read back by a journal_reader (payload valid until the next read). */
struct journal_extent {
  uint64_t offset;
  uint32_t length;
  uint8_t codec;
  uint8_t hash[PROTO_HASH_SIZE];
  const uint8_t *payload;
  uint32_t payload_len;
};

struct journal_cycle_info {
  uint64_t cycle;
  uint8_t kind;
  struct journal_cycle_totals totals;
};

struct journal_usage {
  uint64_t bytes;            /* size of all segment files */
  uint64_t limit_bytes;
  uint64_t segments;
  uint64_t cycles_pending;   /* committed, not yet applied */
  uint64_t pending_bytes;    /* payload bytes of those cycles */
  uint64_t last_committed, last_applied;
  uint64_t open_cycle;       /* 0 when none */
  uint64_t open_bytes;       /* bytes the open cycle's records take so far (0 when none): what of the cache
                                its own size fills, as against what draining the older cycles frees */
};

/* Opens (creating as needed) the journal of disk_id under state_dir/journal/, recovering it: scans
 * the segments, cuts a torn tail and uncommitted records, loads the committed-cycle index and the
 * applied marker. opts may be NULL (defaults). The journal is locked (flock) while open:
 * RPL_E_JOURNAL_LOCKED if another process (or another open here) holds it. */
RPL_MUST_CHECK rpl_err journal_open(const char *state_dir, const uint8_t disk_id[PROTO_ID_SIZE],
                                    const struct journal_options *opts, struct journal **out);
/* Closes the files; an open cycle is left uncommitted (discarded on the next open). NULL is fine. */
void journal_close(struct journal *j);

/* Starts cycle n: n must be last_committed + 1, or the open cycle (a restart: its records so far
 * are discarded). Otherwise RPL_E_CYCLE_ORDER. */
RPL_MUST_CHECK rpl_err journal_begin_cycle(struct journal *j, uint64_t n, uint8_t kind);
/* Appends one verified extent of open cycle n (RPL_E_JOURNAL_NO_CYCLE if n is not open). Fields
 * are checked (512-aligned, length 1..PROTO_MAX_EXTENT, codec, payload size for the codec, payload
 * <= JOURNAL_MAX_PAYLOAD) before anything is written. RPL_E_JOURNAL_FULL: nothing was written. */
RPL_MUST_CHECK rpl_err journal_append_extent(struct journal *j, uint64_t n, const struct journal_extent *e);
/* Checks totals against the appended extents, writes the cycle-end record and makes the cycle
 * durable; returns RPL_OK only once it is. On RPL_E_CYCLE_TOTALS the cycle stays open (abandon
 * or restart it). */
RPL_MUST_CHECK rpl_err journal_commit_cycle(struct journal *j, uint64_t n, const struct journal_cycle_totals *totals);
/* Drops open cycle n (a connection lost mid-cycle): its records are removed; the next cycle is
 * n again. RPL_E_JOURNAL_NO_CYCLE if n is not open. */
RPL_MUST_CHECK rpl_err journal_abandon_cycle(struct journal *j, uint64_t n);

/* The oldest committed cycle not yet applied: RPL_OK and *info, or RPL_E_NOT_FOUND if none. */
RPL_MUST_CHECK rpl_err journal_next_pending(struct journal *j, struct journal_cycle_info *info);
/* Info of committed, untrimmed cycle n, or RPL_E_JOURNAL_NOT_COMMITTED. */
RPL_MUST_CHECK rpl_err journal_cycle_info(struct journal *j, uint64_t n, struct journal_cycle_info *info);
/* Persists "applied up to n" atomically. n must be committed; n <= last applied is a no-op. */
RPL_MUST_CHECK rpl_err journal_mark_applied(struct journal *j, uint64_t n);
/* Deletes the segments holding nothing newer than n (n <= last applied, else
 * RPL_E_JOURNAL_NOT_APPLIED) and forgets those cycles. */
RPL_MUST_CHECK rpl_err journal_trim(struct journal *j, uint64_t n);
/* For a new or lost journal whose disk's history is known elsewhere (the catalog): sets last
 * committed = last applied = n. Only when no cycle is pending or open (else RPL_E_EXISTS). */
RPL_MUST_CHECK rpl_err journal_set_base(struct journal *j, uint64_t n);
void journal_get_usage(struct journal *j, struct journal_usage *usage);

/* ---- reading a committed cycle ------------------------------------------------------------ */

struct journal_reader;
/* Opens committed cycle n for reading its extents in order. */
RPL_MUST_CHECK rpl_err journal_reader_open(struct journal *j, uint64_t n, struct journal_reader **out);
/* Next extent: RPL_OK and *e (payload valid until the next call), *end = false; at the cycle's end
 * RPL_OK with *end = true. The payload CRC is verified; a damaged record gives
 * RPL_E_JOURNAL_CORRUPT. */
RPL_MUST_CHECK rpl_err journal_reader_next(struct journal_reader *r, struct journal_extent *e, bool *end);

/* Told of each extent of a cycle being applied, once it passed its check and before anything of
 * the cycle is written into the replica (the hash index marks its range stale). An error stops the
 * apply, nothing written. */
typedef rpl_err (*journal_extent_ahead_fn)(void *ctx, uint64_t offset, uint64_t length);
/* Back to the cycle's first extent (for a second pass). */
RPL_MUST_CHECK rpl_err journal_reader_rewind(struct journal_reader *r);
void journal_reader_close(struct journal_reader *r);

#endif
