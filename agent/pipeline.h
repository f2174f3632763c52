/* pipeline.h - the agent's read path: io_uring O_DIRECT reads -> zstd/hash workers -> ordered emit.
 * Internal to agent/ (and its tests and benchmarks). */
#ifndef AGENT_PIPELINE_H
#define AGENT_PIPELINE_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto.h"
#include "rpl_error.h"

/* A byte range of the device to send: offset and length multiples of the device's logical block
 * size; length <= pipeline_config.max_extent (the caller splits longer ranges: see
 * pipeline_split_extents()). */
struct pipeline_extent {
  uint64_t offset;
  uint32_t length;
};

struct pipeline_config {
  unsigned queue_depth;   /* reads in flight; default 32 */
  unsigned workers;       /* compression threads; default: online CPUs */
  uint32_t max_extent;    /* bytes per read and per EXTENT frame; default and cap 1 MiB */
  int zstd_level_min;     /* the level adapts within [min, max]: down when the workers are the */
  int zstd_level_max;     /* bottleneck, up when the consumer (the link) is; defaults -9 .. 6 */
  int zstd_level_start;   /* default: off (PIPELINE_LEVEL_RAW) with raw_floor, else zstd_level_min */
  int compress;           /* 0: send raw (codec NONE) unless all-zero; default 1 */
  int raw_floor;          /* 1: one step below zstd_level_min is no compression at all (PIPELINE_LEVEL_RAW),
                             taken when the workers are still the bottleneck there (a fast link, where
                             zstd's few per cent cost more CPU than they save time); default 1 */
  uint64_t (*link_wait_ns)(void); /* the emitting thread's clock of time its sends waited for the link
                                     (conn_send_wait_ns): what the level's "link waited" counts; NULL:
                                     an emit's whole time, its own CPU (TLS, copies) too */
};

/* The fields a NULL config has that zero would not give; a caller's own config starts from them. */
#define PIPELINE_CONFIG_DEFAULTS .compress = 1, .raw_floor = 1

/* The adaptive level below every zstd level: extents are sent uncompressed (codec NONE). */
#define PIPELINE_LEVEL_RAW INT_MIN

/* Counters of one run; the level is the one in use at the end (it carries over between runs). */
struct pipeline_stats {
  uint64_t extents, zero_extents, raw_extents, zstd_extents;
  uint64_t raw_bytes, payload_bytes;
  uint64_t read_ns_waiting_workers; /* reads done, no worker free: CPU-bound */
  uint64_t emit_ns;                 /* time inside the emit callback */
  uint64_t link_wait_ns;            /* of emit_ns, the part spent waiting for the link (all of it
                                       when the config has no link_wait_ns clock) */
  uint64_t zstd_tried_extents;      /* extents zstd ran on, sent compressed or not */
  uint64_t futile_windows;          /* windows where compression was futile (pipeline_compression_futile) */
  int zstd_level;                   /* PIPELINE_LEVEL_RAW: compression off */
};

struct pipeline;

/* Called once per extent, in the order the extents were given, from the thread that called
 * pipeline_run(). m->payload points into a buffer the pipeline owns, valid only during the call;
 * m->disk_id and m->cycle are left zero for the caller to fill. Returning non-OK stops the run. */
typedef rpl_err (*pipeline_emit_fn)(void *ctx, struct proto_extent *m);

/* Creates a pipeline reading from fd (opened O_RDONLY|O_DIRECT by the caller, who keeps owning
 * it). cfg may be NULL for the defaults. Buffers are registered with the ring once, here. */
RPL_MUST_CHECK rpl_err pipeline_create(int fd, const struct pipeline_config *cfg, struct pipeline **out);
void pipeline_destroy(struct pipeline *p);

/* Reads, compresses and emits extents[0..n). Memory is bounded by the fixed buffer pool
 * (queue_depth + workers buffers of max_extent bytes, both for reads and compressed output),
 * whatever n is. stats may be NULL. */
RPL_MUST_CHECK rpl_err pipeline_run(struct pipeline *p, const struct pipeline_extent *extents, size_t n,
                                    pipeline_emit_fn emit, void *ctx, struct pipeline_stats *stats);

/* The zstd level after one adaptation window: up when the link (link_wait) waited more than twice
 * the workers (cpu_wait), down in the opposite case, within [min, max] (a step past a bound stops at
 * it), and with raw_floor one step below min to PIPELINE_LEVEL_RAW (and from it back up to min).
 * *streak (0 at first) counts the decisions in a row that went the same way, +up or -down: the
 * step doubles with each (1, 2, 4, then 4: PIPELINE_STEP_DOUBLINGS), so a level far from the
 * bottleneck's is reached in a few windows, and a turn starts again at 1. Never 0: zstd reads level
 * 0 as its default (3), which would put a step down from 1 above it; 1 and -1 are neighbours. */
#define PIPELINE_STEP_DOUBLINGS 2
int pipeline_next_level(int level, int min, int max, bool raw_floor, uint64_t cpu_wait, uint64_t link_wait,
                        int *streak);
/* Whether zstd was futile over an adaptation window: it ran on at least half of the window's bytes
 * that were not all zero (data_bytes), and what it ran on (tried_bytes) came out less than 1/32
 * smaller in all (saved_bytes). Data that is encrypted, media or compressed already: every level
 * only burns the source server's CPU, however slow the link. The level then goes off (its minimum
 * without raw_floor) for PIPELINE_FUTILE_HOLD_MIN windows, whatever the link does; a probe after the
 * hold that is futile again doubles it, up to PIPELINE_FUTILE_HOLD_MAX (64 windows: 2 GiB of 1 MiB
 * extents between probes at most); a window where zstd paid starts it again at the minimum. */
bool pipeline_compression_futile(uint64_t data_bytes, uint64_t tried_bytes, uint64_t saved_bytes);
#define PIPELINE_FUTILE_HOLD_MIN 8u
#define PIPELINE_FUTILE_HOLD_MAX 64u

/* The level as logs and benchmarks show it: the zstd level, or "off" for PIPELINE_LEVEL_RAW; into out. */
const char *pipeline_level_text(int level, char out[16]);

/* Splits [offset, offset+length) into extents of at most max_extent bytes, appending to out
 * (capacity cap); returns the number written, or SIZE_MAX when cap is too small. */
size_t pipeline_split_extents(uint64_t offset, uint64_t length, uint32_t max_extent,
                              struct pipeline_extent *out, size_t cap);

/* True when all len bytes are zero (len a multiple of 8, p 8-byte aligned). */
int pipeline_is_zero(const void *p, size_t len);

/* Whether the runs to come also hash each extent's raw bytes per SENT_UNIT (sent_hashes.h); set
 * between runs only. */
void pipeline_set_unit_hashes(struct pipeline *p, bool on);
/* Inside the emit callback: the unit hashes of the extent m being emitted (one per SENT_UNIT, the
 * last one of a partial unit), owned by the pipeline; NULL when the run did not ask for them. */
const uint64_t *pipeline_unit_hashes(const struct proto_extent *m);

#endif
