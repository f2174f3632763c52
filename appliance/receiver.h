/* receiver.h - the appliance's check of one disk's cycle as it arrives: order, ranges, payload
 * integrity (decompression and xxh3-128), CYCLE_END totals and digest. Internal to appliance/
 * (and its tests). It stores nothing itself: verified extents go to the caller's sink. */
#ifndef APPLIANCE_RECEIVER_H
#define APPLIANCE_RECEIVER_H

#include <stdbool.h>
#include <stdint.h>

#include "proto.h"
#include "rpl_error.h"

struct receiver;

struct receiver_totals {
  uint64_t extents, raw_bytes, payload_bytes;
};

/* disk_size bounds every extent; last_committed is the newest cycle already durable. */
RPL_MUST_CHECK rpl_err receiver_create(const uint8_t disk_id[PROTO_ID_SIZE], uint64_t disk_size,
                                       uint64_t last_committed, struct receiver **out);
void receiver_destroy(struct receiver *r);

/* The appliance starts cycle n: n must be last_committed + 1 (or a restart of the same n after a
 * NACK or a lost connection, which discards what had arrived of it). */
RPL_MUST_CHECK rpl_err receiver_begin(struct receiver *r, uint64_t cycle, uint8_t kind);

/* Verifies one EXTENT of the cycle in progress. On RPL_OK the extent may be stored as it came
 * (compressed); *raw, if not NULL, receives the decompressed bytes (valid until the next call;
 * NULL for zero extents). Any other result: NACK the cycle with it. */
RPL_MUST_CHECK rpl_err receiver_extent(struct receiver *r, const struct proto_extent *m, const uint8_t **raw);
/* receiver_extent, with a compressed extent decompressed into `into` (m->length bytes, the caller's:
 * the storage's room for it), which *raw then names. */
RPL_MUST_CHECK rpl_err receiver_extent_into(struct receiver *r, const struct proto_extent *m, uint8_t *into,
                                            const uint8_t **raw);

/* Checks CYCLE_END against what was received; on RPL_OK the caller makes the cycle durable and
 * then calls receiver_committed() before sending ACK. */
RPL_MUST_CHECK rpl_err receiver_end(struct receiver *r, const struct proto_cycle_end *m,
                                    struct receiver_totals *totals);
void receiver_committed(struct receiver *r);
/* A cycle given up (NACK sent, connection lost): it may be started again. */
void receiver_abort(struct receiver *r);

uint64_t receiver_last_committed(const struct receiver *r);
bool receiver_in_cycle(const struct receiver *r);
void receiver_set_disk_size(struct receiver *r, uint64_t disk_size);

#endif
