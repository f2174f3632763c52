/* events.h - the appliance's cycle and point events (started, committed, applied, point), kept in a bounded
 * ring and read by `replication-appliance events` as JSON lines: the machine interface benchmarks
 * and tests time cycles by (log lines are free to change). Internal header: appliance/ only. */
#ifndef APPLIANCE_EVENTS_H
#define APPLIANCE_EVENTS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "proto.h"
#include "store.h"

/* Events kept: a reader further behind than this misses the oldest (it sees a gap in seq). */
#define EVENTS_RING 8192 /* a few thousand cycles of a fleet, each started and committed (and applied) */
/* The longest a reader may wait for a new event in one call. */
#define EVENTS_MAX_WAIT_MS 600000

enum event_type { EVENT_COMMITTED, EVENT_APPLIED, EVENT_POINT, EVENT_GROUP_FAILED, EVENT_STARTED };

struct event {
  uint64_t seq;                   /* 1, 2, ... in the order they happened (set by events_emit) */
  uint64_t unix_ms;               /* wall clock, milliseconds (set by events_emit) */
  enum event_type type;
  uint8_t disk_id[PROTO_ID_SIZE];
  uint64_t cycle;
  uint8_t kind;                   /* PROTO_CYCLE_* */
  bool direct;                    /* committed: written straight into the store (committed and applied) */
  uint64_t extents, raw_bytes, payload_bytes; /* committed (raw_bytes: applied too) */
  unsigned open;                  /* started: the cycles open in the agent's session, this one included */
  unsigned worker;                /* applied: the apply worker that applied it (0, 1, ...) */
  uint64_t apply_ms;              /* applied: from the worker taking the cycle up to the cycle applied */
  uint64_t upload_bytes, upload_ms, limit_wait_ms; /* applied (and direct committed) to a network store */
  char point_id[32];              /* point: "rp-N" */
  uint8_t point_kind;             /* point: enum catalog_point_kind */
  uint8_t made_by;                /* point: enum catalog_point_made_by */
  uint32_t freeze_ms;             /* point: how long its filesystems were frozen */
  char group[PROTO_MAX_GROUP_NAME + 1]; /* point of a consistency group, group_failed: the group ("" none) */
  char group_point[32];           /* point of a consistency group: the group point's id (its first point) */
  uint32_t group_window_ms;       /* point of a consistency group: first freeze to last thaw, all members */
  char reason[320];               /* group_failed: why no group point was made */
};

/* The upload figures of e from a store's stats before and after, and when it started (monotonic
 * ms); nothing for a store that moves no bytes over a network. */
void event_set_upload(struct event *e, const struct store_stats *before, const struct store_stats *after,
                      uint64_t started_ms);
/* Records an event (thread-safe) and wakes readers waiting for one. */
void events_emit(struct event *e);
/* Writes every event with seq > since as one JSON object per line to out. With none, waits up to
 * wait_ms (capped at EVENTS_MAX_WAIT_MS) for one, or until stopping is set. Returns how many. */
unsigned events_write_since(uint64_t since, unsigned wait_ms, FILE *out);
/* Wakes waiting readers (the daemon stops). */
void events_wake_all(void);

#endif
