/* replica.h - the file replica (storage "file:DIR"): one sparse image per disk, cycles applied from
 * the cache journal. Internal header: appliance/ and tests/ (unit, integration helpers, bench) only. */
#ifndef APPLIANCE_REPLICA_H
#define APPLIANCE_REPLICA_H

#include <stddef.h>
#include <stdint.h>

#include "journal.h"
#include "proto.h"
#include "rpl_error.h"

/*
 * What it promises
 *  - DIR/<disk uuid>.img is the disk's image: created sparse at the disk's size, grown when the
 *    disk grows (never shrunk).
 *  - replica_apply_cycle(n) checks every extent of cycle n first (range, zstd decompresses to its
 *    length, xxh3-128 of the raw bytes equals the record's hash); only when all pass does it write
 *    any (data written, zero extents as punched holes), then fdatasyncs the image, then marks n
 *    applied in the journal. A cycle that fails a check leaves the image untouched. A cycle of at
 *    most 64 MiB of raw data (and 65536 extents) is decompressed once: the checked bytes are kept
 *    (a buffer capped at 64 MiB, reused) and written from there.
 *  - Cycles apply in order (n = last applied + 1). Re-applying a cycle whose writes reached the
 *    image but whose "applied" mark did not (a crash in between) gives the same image: the
 *    writes are absolute (offset, bytes), so applying them twice equals applying them once.
 *  - Not thread-safe: one replica is driven by one thread (the disk's applier).
 */

struct replica;

/* Opens (creating as needed) the image of disk_id in dir (created if missing, one level), at least
 * disk_size bytes (a multiple of 512). RPL_E_REPLICA_SHRINK if the image is larger. */
RPL_MUST_CHECK rpl_err replica_open(const char *dir, const uint8_t disk_id[PROTO_ID_SIZE], uint64_t disk_size,
                                    struct replica **out);
void replica_close(struct replica *r);
/* Grows the image to disk_size (sparse). Equal size: no-op. Smaller: RPL_E_REPLICA_SHRINK. */
RPL_MUST_CHECK rpl_err replica_resize(struct replica *r, uint64_t disk_size);
uint64_t replica_size(const struct replica *r);
/* Whether replica_open made the image (it reads as zeros). */
bool replica_created(const struct replica *r);
const char *replica_path(const struct replica *r);

/* Applies committed cycle n of j (see above). n <= last applied: nothing to do, RPL_OK. n beyond
 * last applied + 1: RPL_E_CYCLE_ORDER. Errors: RPL_E_REPLICA_HASH, RPL_E_EXTENT_DECOMPRESS,
 * RPL_E_EXTENT_RANGE (nothing applied), RPL_E_JOURNAL_CORRUPT, RPL_E_IO. */
RPL_MUST_CHECK rpl_err replica_apply_cycle(struct replica *r, struct journal *j, uint64_t n);
/* The extents of the cycles applied from now are told to ahead first (NULL: to nobody). */
void replica_set_extent_ahead(struct replica *r, journal_extent_ahead_fn ahead, void *ctx);
/* Told of the ranges a cycle applied from the journal is about to write, before any of them is
 * written (a file replica's undo log keeps their old content for the recovery points): note for
 * each extent as the check pass reaches it, then ready once all passed; the writes follow. Either
 * failing stops the cycle before it writes anything. */
struct replica_guard {
  rpl_err (*note)(void *ctx, uint64_t offset, uint64_t length);
  rpl_err (*ready)(void *ctx);
  void *ctx;
};
/* g is copied; NULL: no guard. */
void replica_set_guard(struct replica *r, const struct replica_guard *g);
/* Applies every committed, not yet applied cycle in order; *applied (may be NULL) gets how many.
 * Stops at the first error. */
RPL_MUST_CHECK rpl_err replica_apply_pending(struct replica *r, struct journal *j, uint64_t *applied);

/* ---- direct cycles: written straight into the image (no journal) -------------------------- */

/* A cycle that arrives while the journal holds nothing unapplied (and no recovery point's image is
 * being copied) has no earlier state to wait for: its extents, once the receiver verified them, may
 * go straight into the image instead of through the journal (one write, no re-read, no second
 * decompression). A given-up cycle leaves some of its writes in the image: the agent's retry covers
 * them all, and the image is no point's copy. raw NULL: zeros (a hole). Data is written by a writer
 * thread of the replica (raw is copied: the caller keeps it): O_DIRECT for large 4 KiB-aligned
 * extents where the filesystem allows it, else buffered with writeback started as it goes; nothing
 * is durable before replica_sync(). May run on a session's thread while the applier has nothing of
 * this disk to do. RPL_E_EXTENT_RANGE past the image; a failed write of the writer thread is
 * returned by a later call. */
RPL_MUST_CHECK rpl_err replica_write_extent(struct replica *r, uint64_t offset, const void *raw, uint32_t len);
/* Room in the writer's buffer for the next direct write, len bytes at offset, for the caller to fill
 * in place (a session reads the extent's bytes straight into it): replica_write_extent with the same
 * offset, len and raw = the room then copies nothing. The replica owns it; the next write or room
 * gives it back if it was not used. NULL where the write could not use it (unaligned, no O_DIRECT,
 * no io_uring): the caller keeps the bytes itself. Waits for room, as a write does. */
uint8_t *replica_room(struct replica *r, uint64_t offset, uint32_t len);
/* replica_write_extent without the copy: where raw, offset and len are 4 KiB-aligned (and the image
 * takes O_DIRECT), the write is made from raw itself, which the caller must keep unchanged until
 * replica_flush or replica_sync returns; elsewhere raw is copied as replica_write_extent does. !wait:
 * RPL_E_AGAIN instead of waiting for a free slot or for an overlapping write in flight, nothing
 * queued (the caller tries again later, in the same order). */
RPL_MUST_CHECK rpl_err replica_write_borrowed(struct replica *r, uint64_t offset, const void *raw, uint32_t len,
                                              bool wait);
/* Waits until the writer thread has written everything queued (a cycle given up: none of its
 * writes may land after the next cycle's). Its first failure, if any. */
RPL_MUST_CHECK rpl_err replica_flush(struct replica *r);
/* Makes every write so far durable (replica_flush, then fdatasync). */
RPL_MUST_CHECK rpl_err replica_sync(struct replica *r);

/* ---- reading the replica back (restore and verification) ---------------------------------- */

/* Reads len bytes at offset (inside the image). */
RPL_MUST_CHECK rpl_err replica_read(struct replica *r, uint64_t offset, void *buf, size_t len);
/* Copies the image to a new file out_path (RPL_E_EXISTS if it exists): a reflink where the
 * filesystem has them (XFS, btrfs: no data copied), else a copy keeping holes; durable, its name too. */
RPL_MUST_CHECK rpl_err replica_copy_to(struct replica *r, const char *out_path);
/* The reflink alone: RPL_E_UNSUPPORTED (nothing created) where the filesystem has none. */
RPL_MUST_CHECK rpl_err replica_reflink_to(struct replica *r, const char *out_path);
/* Compares the image with the file or device at path: RPL_OK if byte-identical and of the same
 * size, else RPL_E_CHECKSUM with *first_difference (may be NULL) set to the first differing byte. */
RPL_MUST_CHECK rpl_err replica_compare(struct replica *r, const char *path, uint64_t *first_difference);

#endif
