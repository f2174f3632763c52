/* uploader_internal.h - what the uploader's parts share (struct uploader, runs, the buffer pool and
 * the helpers both write with). Only uploader.c and uploader_direct.c may include it; the rest use
 * uploader.h. */
#ifndef RPL_UPLOADER_INTERNAL_H
#define RPL_UPLOADER_INTERNAL_H

#include "uploader.h"

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <xxhash.h>
#include <zstd.h>

#include "lease.h"

#define MIB (1ull << 20)
#define ZERO_BLOCK (64u << 10)

/* Run buffers (BLOB_MAX_PUT_PAGE bytes) are kept for reuse while a cycle is written: each fresh
 * 4 MiB malloc is new memory, whose first touch cost 40 times the copy into it on the test machine
 * (a third of the appliance's CPU in an initial sync). Trimmed when the cycle is done. */
#define POOL_MAX 48 /* > the requests in flight and queued, and the direct writer's queue */

struct buf_pool {
  pthread_mutex_t lock;
  uint8_t *bufs[POOL_MAX];
  unsigned n;
};

/* Contiguous extents of a cycle gathered into one request (flush_run). */
struct run {
  bool zero;
  uint64_t offset, length;
  uint8_t *buf; /* data runs: BLOB_MAX_PUT_PAGE bytes, handed to the request on flush */
};

struct uploader {
  pthread_mutex_t lock;
  struct buf_pool pool; /* run buffers (its own lock) */
  struct blob_config cfg;
  struct appliance_settings settings; /* cfg's strings point here */
  struct blob_client *client;
  journal_extent_ahead_fn ahead; /* told of each checked extent before the cycle is written */
  void *ahead_ctx;
  char container[64];
  char blob[48];
  uint8_t disk_id[PROTO_ID_SIZE];
  uint64_t disk_size, blob_size;
  uint64_t committed; /* the blob's sequence number */
  ZSTD_DCtx *dctx;
  uint8_t *raw;
  XXH3_state_t *hash;
  rpl_err async_err; /* first failure of the writes in flight */
  struct rate_limit *limit_all, *limit_agent; /* bandwidth limits (not owned), or NULL */
  struct uploader_stats stats; /* lock */
  pthread_mutex_t stats_lock;  /* a leaf: guards pub only */
  struct uploader_stats pub;   /* stats_lock: stats as last published, for readers (a metrics scrape) that
                                  must not wait for an upload in progress under lock */
  struct lease lease; /* lease.c */
  struct direct *direct; /* the initial sync being written straight into the blob, or NULL */
  bool blank; /* created empty by this uploader and not written since but its footer: a zero
               * extent of the first cycle needs no clear (until an extent overlaps an earlier one) */
};

struct put_ctx {
  struct uploader *u;
  uint8_t *buf;
  bool pooled; /* buf goes back to u->pool */
};

/* Contiguous extents of a cycle gathered into one request: data up to a Put Page's 4 MiB, zeros
 * into one clear (Azure's Clear Pages takes any page-aligned range). The agent sends 1 MiB extents
 * in disk order, so an initial sync needs a quarter of the data requests and few clears. */
#define CLEAR_RUN_MAX (256ull << 20)

/* uploader.c */
uint8_t *uploader_pool_get(struct buf_pool *p);
void uploader_pool_put(struct buf_pool *p, uint8_t *b);
void uploader_pool_trim(struct buf_pool *p);
const char *uploader_lease_id_of(const struct uploader *u);
uint64_t uploader_limits_wait_us(struct rate_limit *all, struct rate_limit *agent);
void uploader_limits_take(struct rate_limit *all, struct rate_limit *agent, uint32_t len);
rpl_err uploader_flush_run(struct uploader *u, struct run *r, const struct blob_write_cond *cond);
rpl_err uploader_lease_lost_if_refused(struct uploader *u, rpl_err e);
/* Copies the figures (stats and the blob client's) for uploader_get_stats. lock held. */
void uploader_publish_stats(struct uploader *u);

#endif
