/* sent_hashes.h - what the replica holds, as hashes of the 4 KiB units committed delta cycles sent:
 * a completion the kernel skipped is checked against the disk instead of re-sending all that was
 * written lately (docs/architecture.md, "Completions the kernel did not run the program for"). */
#ifndef SENT_HASHES_H
#define SENT_HASHES_H

#include <stdbool.h>
#include <stdint.h>

#include "rpl_error.h"

#define SENT_UNIT_SHIFT 12
#define SENT_UNIT (1u << SENT_UNIT_SHIFT)
/* The record keeps units in pages of SENT_PAGE_UNITS (2 MiB of disk, 4 KiB of hashes), made as units
 * are committed there and freed once nothing was committed to them for a window. At most
 * SENT_HASHES_MAX_PAGES (64 MiB; 32 GiB of disk written in 2 MiB regions within two windows), and a
 * cycle records at most SENT_HASHES_MAX_CYCLE_UNITS (4 GiB sent, 16 MiB until its ACK). Past either,
 * the record cannot check for a window, and what was written lately is sent again, as without one. */
#define SENT_PAGE_UNITS 512u
#define SENT_HASHES_MAX_PAGES 16384u
#define SENT_HASHES_MAX_CYCLE_UNITS (1u << 20)

struct sent_hashes;

struct sent_check {
  uint64_t checked_bytes;   /* read back from the disk and compared */
  uint64_t differing_bytes; /* found to differ from what was sent: handed to mark */
};

/* A record whose committed units are kept for at least window_ns (two windows: between window_ns and
 * twice that). It can check nothing until it has been complete for window_ns. *out is the caller's
 * (sent_hashes_destroy). */
RPL_MUST_CHECK rpl_err sent_hashes_create(uint64_t window_ns, struct sent_hashes **out);
void sent_hashes_destroy(struct sent_hashes *sh);

/* A cycle starts reading: what an earlier attempt sent, uncommitted, is dropped. recorded false: this
 * cycle sends what is not recorded unit by unit (the whole disk, a comparison), and its commit makes the
 * record incomplete. */
void sent_hashes_begin(struct sent_hashes *sh, bool recorded, uint64_t disk_size);
/* [offset, offset + length) was sent; unit_hashes holds one sent_unit_hash per unit, the last one
 * partial only at the end of the disk. Anything else (an offset off a unit boundary, a partial unit
 * inside the disk, no hashes) makes the cycle unrecorded. */
void sent_hashes_add(struct sent_hashes *sh, uint64_t offset, uint32_t length, const uint64_t *unit_hashes);
/* The cycle's ACK came: what it sent is what the replica holds. */
void sent_hashes_commit(struct sent_hashes *sh);
/* The replica may hold something else than recorded (a takeover's replay): nothing is checked for a
 * window. */
void sent_hashes_forget(struct sent_hashes *sh);

/* Reads every unit committed in the last windows from fd (opened O_DIRECT, disk_size bytes) and calls
 * mark(ctx, offset, length) for each run of units whose content differs from what was sent. False
 * when the record is not complete (every commit of the last window recorded), on a read error or
 * without memory (what it marked before stays marked); the caller then sends everything written
 * lately again. */
bool sent_hashes_check(struct sent_hashes *sh, int fd, uint64_t disk_size,
                       void (*mark)(void *ctx, uint64_t offset, uint64_t length), void *ctx, struct sent_check *st);

/* What the checks of this record found so far. */
struct sent_stats {
  bool complete;            /* every commit of the last window is recorded: it can check */
  uint64_t units;           /* committed units kept */
  uint64_t pages;           /* pages they take (SENT_PAGE_UNITS each) */
  uint64_t checks;          /* sent_hashes_check calls that compared */
  uint64_t refused;         /* ... that could not (incomplete, a read failed): all written lately went again */
  uint64_t checked_bytes, differing_bytes;
  uint64_t check_ms;        /* the checks' time, all together (the tracker is locked meanwhile) */
};
void sent_hashes_stats(struct sent_hashes *sh, struct sent_stats *st);

/* The hash of one unit's bytes (len <= SENT_UNIT). */
uint64_t sent_unit_hash(const void *data, uint32_t len);

#endif
