/* metrics.h - the appliance's Prometheus text exposition (GET /metrics on the configuration manager)
 * and the counters only it reads; appliance/ internal (metrics.c). */
#ifndef APPLIANCE_METRICS_H
#define APPLIANCE_METRICS_H

#include <stdint.h>
#include <stdio.h>

#include "proto.h"
#include "store.h"

#define METRICS_CYCLE_BUCKETS  11   /* cycle durations: 0.1 s .. 15 min, then +Inf */
#define METRICS_FREEZE_BUCKETS 10   /* freeze durations: 10 ms .. 10 s, then +Inf */
#define METRICS_MAX_AGENTS     1024 /* agents whose protocol version is remembered: past it, new ones are not */

/* Why a resync cycle was started (the appliance's reasons; the agent's own tracker resyncs are
 * plain cycles by comparison and not counted here). */
enum metrics_resync {
  METRICS_RESYNC_INITIAL,   /* the disk's first sync */
  METRICS_RESYNC_TAKEOVER,  /* taken over from another appliance */
  METRICS_RESYNC_REQUESTED, /* asked for: the page, or a disk opened again after an error */
  METRICS_RESYNC_REASONS
};

/* One disk's counters since the daemon started; in struct disk, guarded by its lock (L). */
struct disk_metrics {
  uint64_t cycles;                              /* committed */
  uint64_t read_bytes, sent_bytes, changed_bytes; /* raw, on the wire, raw of non-resync cycles */
  uint64_t cycle_bucket[METRICS_CYCLE_BUCKETS + 1]; /* per bucket (not cumulative), the last is +Inf */
  uint64_t cycle_ms_sum;
  uint64_t freeze_bucket[METRICS_FREEZE_BUCKETS + 1];
  uint64_t freeze_ms_sum, freezes;
  uint64_t resyncs[METRICS_RESYNC_REASONS];
};

/* The appliance's counters since start; in struct appliance, guarded by L. */
struct appliance_metrics {
  uint64_t storage_errors[STORE_FAILURE_OWNERSHIP + 1]; /* by enum store_failure */
  uint64_t group_points_failed;   /* consistency-group point attempts that made no point */
};

/* A cycle of this kind committed after ms since its CYCLE_START. L held. */
void metrics_cycle_committed(struct disk_metrics *m, uint8_t kind, uint64_t raw_bytes, uint64_t payload_bytes,
                             uint64_t ms);
/* A point's filesystems stayed frozen ms (> 0). L held. */
void metrics_freeze(struct disk_metrics *m, uint32_t ms);
/* The agent said HELLO with this protocol version (thread-safe; remembered until the daemon ends). */
void metrics_agent_hello(const uint8_t agent[PROTO_ID_SIZE], unsigned protocol_version);
/* Writes the exposition of the appliance (a struct appliance *) to f; the web_ops.metrics. */
void metrics_write(void *appliance, FILE *f);

#endif
