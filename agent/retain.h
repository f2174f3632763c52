/* retain.h - the blocks of a disk's acknowledged cycles, kept until the appliance says its storage
 * holds them (STORED), so that an appliance that took the disk over from the storage's own state
 * can be sent them again (a REPLAY cycle) instead of a resync of the whole disk. Internal to agent/. */
#ifndef AGENT_RETAIN_H
#define AGENT_RETAIN_H

#include <stdbool.h>
#include <stdint.h>

#include "cbt.h"
#include "rpl_error.h"

/* Extents kept for all of a disk's unstored cycles: 16 bytes each, 4 MiB at most per disk (a backlog
 * of 1 GiB in random 4 KiB writes). Past it the oldest cycles are forgotten, and a replay from
 * before them is refused (a resync instead). */
#define RETAIN_EXTENTS_MAX ((uint64_t)1 << 18)

struct retained_cycle {
  uint64_t cycle;
  struct cbt_extents set;
};

/*
 * What it promises
 *  - retain_complete(r, base) is true only when every cycle acknowledged after base is kept (or the
 *    appliance said it is stored): the cycles acknowledged before this process started, or forgotten
 *    past the limit, are unknown, and a replay from before them is refused.
 *  - Not thread-safe: the session thread alone uses a disk's set.
 */
struct retain {
  struct retained_cycle *c; /* ascending cycle numbers */
  size_t n, cap;
  uint64_t extents;         /* in all of c[] */
  uint64_t known_after;     /* complete for a replay from any base >= this, once known */
  bool known;               /* false until a cycle is acknowledged in this process */
};

/* A zeroed struct retain is an empty one. */
void retain_free(struct retain *r);
/* Cycle n was acknowledged with the blocks of sent (NULL or incomplete: the cycle's blocks are not
 * known, e.g. past the sender's limit). Kept cycles numbered n or more are dropped first: a new
 * appliance numbers from where its storage is, and cycle n covers them. */
void retain_acked(struct retain *r, uint64_t n, const struct cbt_extents *sent, bool incomplete);
/* The storage holds every cycle up to n: their blocks are forgotten. */
void retain_stored(struct retain *r, uint64_t n);
/* Whether a replay from base (the storage holds the disk up to cycle base) can be answered. */
bool retain_complete(const struct retain *r, uint64_t base);
/* The blocks of every kept cycle after base, added to out (which the caller owns), which is then
 * sorted with overlapping and adjacent extents joined (what cbt_merge takes). */
RPL_MUST_CHECK rpl_err retain_after(const struct retain *r, uint64_t base, struct cbt_extents *out);
/* Appends an extent in any order (cbt_extents_add wants them ascending): RPL_E_LIMIT past the
 * set's limit, RPL_E_NOMEM. */
RPL_MUST_CHECK rpl_err retain_append(struct cbt_extents *set, uint64_t offset, uint64_t length);
/* Sorts the set by offset and joins overlapping and adjacent extents. */
void retain_normalize(struct cbt_extents *set);

#endif
