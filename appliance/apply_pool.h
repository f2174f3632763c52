/* apply_pool.h - the appliance's bounded pool of apply workers and the coordinator that hands them
 * disks, one disk per worker at a time. Internal header: appliance.h and the daemon's role files. */
#ifndef APPLIANCE_APPLY_POOL_H
#define APPLIANCE_APPLY_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rpl_error.h"

/* Workers that apply at once. One worker moves about one page blob's throughput; 8 keep a few dozen
 * disks' changes flowing on a small appliance without each holding buffers and connections for
 * nothing; past 32 the appliance's own CPU and the cache's disk, not the storage, are the limit. */
#define APPLY_WORKERS_MIN     1
#define APPLY_WORKERS_MAX     32
#define APPLY_WORKERS_DEFAULT 8
/* How often a disk's lease and retention are looked at when it has nothing else to do: the single
 * applier's idle pass did it about this often, and a lease (15-60 s) is renewed at a third of it. */
#define HOUSEKEEPING_PERIOD_MS 1000
/* The test hook RPL_TEST_APPLY_HOLD_MS stretches each apply by at most this (tests only). */
#define APPLY_HOLD_MAX_MS     10000

/* How much a disk's turn matters: a due lease renewal (or a deletion) before any apply, so that the
 * leases of every disk are renewed on time however long the applies of others take (a lost lease
 * stops the disk's writes); applies before the background rehash, which never holds one up. */
enum { APPLY_PRIO_NONE = 0, APPLY_PRIO_REHASH, APPLY_PRIO_APPLY, APPLY_PRIO_DUE };

/* One disk as the coordinator sees it when it picks the next. */
struct apply_pool_cand {
  int prio;             /* APPLY_PRIO_* */
  bool claimed;         /* a worker holds it: not handed out again */
  uint64_t served_turn; /* when it was last handed out (smaller: longer ago) */
};

/* The candidate to hand out next: the most urgent unclaimed one with work, among those the one
 * served least recently (ties: the first). n when there is none. */
size_t apply_pool_pick(const struct apply_pool_cand *c, size_t n);

struct disk;

/* The pool's state (in struct appliance, under its lock L). */
struct apply_pool_state {
  unsigned nworkers;               /* fixed once run starts */
  unsigned busy;                   /* workers holding a disk */
  uint64_t turn;                   /* disks handed out so far */
  uint64_t apply_ms_total;         /* time workers spent applying cycles */
  unsigned queue_disks;            /* disks with a cycle to apply that no worker holds, at the last look */
  unsigned busy_max;               /* the most workers busy at once since start */
  unsigned hold_ms;                /* test hook: each apply is stretched by this ($RPL_TEST_APPLY_HOLD_MS) */
  struct apply_worker_slot {
    struct disk *disk;             /* the disk it holds, or NULL */
    uint64_t since_ms;             /* monotonic: since when */
    uint64_t turns;                /* disks it was handed */
  } workers[APPLY_WORKERS_MAX];
};

struct appliance;
/* Starts the coordinator and a->pool.nworkers workers; apply_pool_stop joins them once
 * appliance_stopping is set. */
RPL_MUST_CHECK rpl_err apply_pool_start(struct appliance *a);
void apply_pool_stop(struct appliance *a);

#endif
