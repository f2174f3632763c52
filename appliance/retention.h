/* retention.h - the recovery-point retention policy (keep all for a while, then one per hour, then
 * one per day) as a pure function, its text form, and the pruning of the points it drops.
 * Internal header: appliance/ and tests/ only. */
#ifndef APPLIANCE_RETENTION_H
#define APPLIANCE_RETENTION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "catalog.h"
#include "rpl_error.h"

/*
 * What it promises
 *  - A point of age A (now - its time, seconds) is kept when
 *      it is the newest point, or A < 0 (clock went back), or A <= all_s, or
 *      A <= hourly_s and it is the newest point of its UTC hour, or
 *      A <= daily_s and it is the newest point of its UTC day;
 *    every other point is dropped. A tier of 0 is off. Boundaries are inclusive.
 *  - The decision is a pure function of the points' times, the policy and now: applying it again to
 *    what it kept keeps all of it.
 *  - time_scale (test-only, normally 1) makes one real second count as time_scale policy seconds,
 *    ages and hour/day boundaries alike; the daemon takes it from $RPL_TEST_RETENTION_SCALE.
 */

#define RETENTION_DEFAULT "all=1h,hourly=24h,daily=7d"
#define RETENTION_TEXT_MAX 128
#define RETENTION_MAX_SECONDS (3650ll * 86400) /* ten years per tier */
#define RETENTION_MAX_SCALE 86400u

struct retention_policy {
  int64_t all_s, hourly_s, daily_s;
  uint32_t time_scale; /* 0 or 1: real time */
};

/* Parses "all=1h,hourly=24h,daily=7d" (keys in any order, each at most once, a missing key's tier
 * is off; durations are a whole number with s, m, h or d, or 0). NULL or "" gives the default.
 * RPL_E_RETENTION_POLICY with its detail (rpl_detail) naming the wrong part. */
RPL_MUST_CHECK rpl_err retention_parse(const char *text, struct retention_policy *out);
/* The canonical text of a policy ("all=1h,hourly=24h,daily=7d"). */
void retention_format(const struct retention_policy *p, char *out, size_t outsz);

/* Decides, for n point times sorted oldest first, which to keep (keep[i]). */
void retention_decide(const struct retention_policy *p, int64_t now, const int64_t *times, size_t n, bool *keep);

/* Deletes the stored image of a dropped point (blob snapshot, or kept file); RPL_E_BLOB_NOT_FOUND
 * or RPL_E_NOT_FOUND count as deleted. */
typedef rpl_err (*retention_delete_fn)(void *ctx, const struct catalog_point *p);

struct retention_result {
  size_t considered, kept, pruned, failed;
  int64_t now;       /* the time the policy was applied at */
  int64_t newest_id; /* the newest point considered (0: none) */
};
/* Applies the policy at now to the disk's points that still have an image: each dropped one is
 * deleted through del and then marked pruned in the catalog (its row stays, without an image, so
 * restoring it says RPL_E_RESTORE_NO_IMAGE). A failed delete leaves the point as it was (tried
 * again next time) and is counted in failed. At most RETENTION_MAX_POINTS points per call. */
#define RETENTION_MAX_POINTS 100000u
RPL_MUST_CHECK rpl_err retention_prune(struct catalog *cat, const uint8_t disk_id[PROTO_ID_SIZE],
                                       const struct retention_policy *p, int64_t now, retention_delete_fn del,
                                       void *ctx, struct retention_result *out);

#endif
