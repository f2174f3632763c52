/* store.h - the storage interface: where a disk's replica lives (a file image, a page blob), one
 * table of operations that the daemon, restore, failover, takeover and retention call without
 * knowing the backend. Internal header: appliance/ and tests/ only. */
#ifndef APPLIANCE_STORE_H
#define APPLIANCE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <stdio.h>

#include "catalog.h"
#include "journal.h"
#include "proto.h"
#include "prereq.h"
#include "ratelimit.h"
#include "rpl_error.h"
#include "settings.h"

/*
 * What every backend promises
 *  - One replica per disk, at least the disk's size, grown when the disk grows (never shrunk:
 *    RPL_E_REPLICA_SHRINK).
 *  - store_apply_next applies the next committed cycle of the journal: every extent is checked
 *    (zstd decompressed, xxh3-128 compared) before any write; the cycle is durable in the replica
 *    before the journal marks it applied. A cycle that fails a check changes nothing.
 *  - The extents of a cycle (applied or direct) land as if written in their order: where a later
 *    one overlaps an earlier one, the later one is what the replica holds (a point whose remainder
 *    was rewritten after the thaw sends it again, read frozen, in the same cycle).
 *  - A recovery-point cycle gets an image of the replica holding that cycle and nothing after it
 *    (a blob snapshot, a kept copy of the file image): its id is what the catalog records and what
 *    restore and retention are given back.
 *  - Direct cycles: a cycle the daemon may write straight into the replica as the receiver verifies
 *    it (store_direct_begin says whether the backend takes this one), made durable by
 *    store_direct_commit before the ACK. A given-up cycle may leave some of its writes in the
 *    replica; the agent's retry covers them all.
 *  - Ownership: a backend shared between appliances (a page blob) is written only under its lease;
 *    a backend with no lease reports it always held.
 *  - Thread safety: the applier drives apply, points, resize and the lease; a session thread may
 *    drive the direct operations and reads only while the applier has nothing of that disk to do.
 *    A backend that allows more says so in its own file.
 */

struct store;          /* one disk's replica, opened */
struct store_image;    /* a recovery point's image, opened for reading (restore) */
struct store_reader;   /* one reader of an image (one per restore worker) */

/* What a failure asks for. */
enum store_failure {
  STORE_FAILURE_RESYNC,    /* the cached data is bad, or the replica is behind the journal: resync */
  STORE_FAILURE_STORAGE,   /* the storage is away or throttled: the storage checks run again, then a retry */
  STORE_FAILURE_OWNERSHIP, /* another appliance holds the replica's lease: tried again; storage is fine */
};

/* Told by store_apply_next. */
struct store_apply_cb {
  /* The replica holds cycle (durable) and the journal marks it applied. point_follows: a
   * recovery-point cycle whose image is made after this call (point() follows). */
  void (*applied)(void *ctx, uint64_t cycle, uint8_t kind, bool point_follows);
  /* The image of recovery-point cycle was made; image_id names it. */
  void (*point)(void *ctx, uint64_t cycle, const char *image_id);
  /* Whether recovery-point cycle still wants its image (false: its data turned out not to be a
   * point, a catch-up or a fuzzy read: applied as a plain cycle). NULL: always. */
  bool (*image_wanted)(void *ctx, uint64_t cycle);
  /* Each extent of the cycle, checked, before anything of it is written (journal.h). NULL: none. */
  journal_extent_ahead_fn extent_ahead;
  void *ctx;
};

struct store_stats {
  bool transfers;            /* the backend moves bytes over a network (the fields below count) */
  uint64_t bytes_written;    /* bytes sent to the storage so far */
  uint64_t limit_wait_ms;    /* time spent waiting for the bandwidth limits */
};

/* A point image found in the storage itself (a takeover rebuilds the catalog from these). */
struct store_found_point {
  uint64_t cycle;
  int64_t time;
  char image_id[CATALOG_MAX_SNAPSHOT_ID + 1];
};

/* Failover: a standalone copy of a point's image, laid out as a fixed VHD (store_ops.image_export). */
struct store_meta {
  const char *key, *value; /* a C identifier; printable ASCII */
};
struct store_export {
  const char *container;        /* NULL: the settings' container */
  const char *name;             /* the copy's name; an existing one is refused (RPL_E_FAILOVER_EXISTS) */
  uint64_t disk_size;           /* bytes of the image that are the disk's: above them the copy reads zeros */
  uint64_t vhd_size;            /* the copy's virtual size (whole MiB, >= disk_size); the footer follows it */
  const uint8_t *footer;        /* VHD_FOOTER_SIZE bytes */
  int64_t sequence;             /* the copy's sequence number */
  const struct store_meta *meta;
  size_t nmeta;
  bool no_server_copy;          /* read and write through this machine even where the storage could copy */
};
struct store_export_result {
  char url[2048];               /* the copy's address, without credentials */
  char account[64];             /* the storage account holding it */
  bool server_copy;             /* the storage copied it; false: read and written through this machine */
  char why_not_server[256];     /* when it did not: what the storage answered */
  uint64_t bytes_sent;          /* through this machine */
};

struct store_ops {
  const char *name;          /* for messages: "file replica", "page blob" */
  const char *kind;          /* what `check --json` calls the storage: "file", "azure" */
  uint64_t max_disk_bytes;   /* the largest disk it takes (checked before anything is written); 0: what
                                the filesystem under it allows, found when the replica is opened */

  /* ---- configuration (init, check) ---- */
  /* Whether the storage string names this backend ("file:DIR" ...). */
  bool (*claims)(const char *storage);
  /* init: checks the storage string now (a typo is reported here, not at the first upload), records
   * it in s->storage (as the daemon will need it) and says in summary what it is. */
  RPL_MUST_CHECK rpl_err (*configure)(const char *storage, struct appliance_settings *s, char *summary,
                                      size_t summary_size);
  /* init: the lines that say how this storage is reached, after the summary (may print nothing). */
  void (*print_settings)(const struct appliance_settings *s, FILE *out);
  /* check: the prerequisites of reaching the storage, each PASS or FAIL with a remedy. */
  void (*check)(const struct appliance_settings *s, struct prereq_report *r);

  /* Opened by the applier once the storage checks pass (a network backend), rather than with the disk. */
  bool opens_after_checks;
  /* Shared between appliances and written under a lease, whose id is this appliance's (STATE/lease-id). */
  bool leased;
  /* What status shows of the storage: the settings' storage string, or a name without secrets. */
  void (*describe)(const struct appliance_settings *s, char *out, size_t outsz);

  RPL_MUST_CHECK rpl_err (*open)(const struct appliance_settings *s, const uint8_t disk_id[PROTO_ID_SIZE],
                                 uint64_t disk_size, struct store **out);
  void (*close)(struct store *st);
  RPL_MUST_CHECK rpl_err (*resize)(struct store *st, uint64_t disk_size);
  /* Bandwidth buckets for writes (either may be NULL; not owned). */
  void (*set_limits)(struct store *st, struct rate_limit *all, struct rate_limit *agent);

  /* Applies the next committed cycle of j (see above); RPL_E_NOT_FOUND when none is pending. */
  RPL_MUST_CHECK rpl_err (*apply_next)(struct store *st, struct journal *j, const struct store_apply_cb *cb);
  /* Makes the image of recovery-point cycle, which the replica holds now with nothing after it
   * (a direct point cycle); its id into image_id. */
  RPL_MUST_CHECK rpl_err (*make_point)(struct store *st, uint64_t cycle, char *image_id, size_t idsz);
  /* Deletes a point's image (retention); one already gone is not an error. */
  RPL_MUST_CHECK rpl_err (*delete_point)(struct store *st, const char *image_id);
  /* The point images the storage holds, with the cycles they were made of; the caller frees *out. */
  RPL_MUST_CHECK rpl_err (*list_points)(struct store *st, struct store_found_point **out, size_t *count);
  /* Unprotect with --delete-replica: deletes the replica and every point image of it (the page blob
   * with its snapshots; the image file with its kept copies), nothing else (failover copies are the
   * user's). Only close may follow. What is gone already is not an error: a retry finishes it. */
  RPL_MUST_CHECK rpl_err (*delete_replica)(struct store *st);

  /* Whether cycle n of kind may be written straight into the replica; true starts it. The daemon
   * asks only when nothing of the disk is unapplied and n follows the last committed cycle.
   * cache_bypass: the disk's changes did not fit in its whole cache, so this cycle cannot go through
   * it (a backend that takes only some cycles straight takes a resync then: the replica's newest state
   * is inconsistent until it ends, as in any resync, and the point images stay as they were). */
  bool (*direct_begin)(struct store *st, uint64_t n, uint8_t kind, bool cache_bypass);
  /* len verified bytes at offset (raw copied: the caller keeps it), or zeros when raw is NULL. */
  RPL_MUST_CHECK rpl_err (*direct_extent)(struct store *st, uint64_t offset, const uint8_t *raw, uint32_t len);
  /* Optional: room of the backend's own for the len bytes at offset of the next direct_extent, which
   * the caller fills in place and passes as raw (then nothing is copied); the backend owns it, and
   * takes it back if the next direct_extent is another. NULL: none here, raw is copied as usual. */
  uint8_t *(*direct_room)(struct store *st, uint64_t offset, uint32_t len);
  /* Everything of the direct cycle durable (and committed in the storage). */
  RPL_MUST_CHECK rpl_err (*direct_commit)(struct store *st);
  /* Gives the direct cycle up: nothing of it lands after this returns. */
  void (*direct_abort)(struct store *st);

  /* Reads len bytes of the replica at offset (a resync compares chunks with it). */
  RPL_MUST_CHECK rpl_err (*read)(struct store *st, uint64_t offset, void *buf, size_t len);
  /* The last cycle the storage itself says it holds (0 when it keeps no such record). */
  uint64_t (*committed)(struct store *st);
  enum store_failure (*failure_kind)(rpl_err e);
  void (*get_stats)(struct store *st, struct store_stats *out);

  /* Keeps the lease: renews it, or tries to acquire it. *acquired_now when this call acquired it,
   * with the storage's own last cycle in *sequence. */
  RPL_MUST_CHECK rpl_err (*lease_tick)(struct store *st, bool *acquired_now, int64_t *sequence);
  bool (*lease_held)(struct store *st, rpl_err *why);

  /* Restore: opens the image of a point (image_id from the catalog) of a disk of disk_size bytes. */
  RPL_MUST_CHECK rpl_err (*image_open)(const struct appliance_settings *s, const uint8_t disk_id[PROTO_ID_SIZE],
                                       const char *image_id, uint64_t disk_size, struct store_image **out);
  void (*image_close)(struct store_image *img);
  /* One reader per thread; readers of one image run in parallel. */
  RPL_MUST_CHECK rpl_err (*reader_open)(struct store_image *img, struct store_reader **out);
  void (*reader_close)(struct store_reader *rd);
  /* len bytes of the image at offset into buf; *hole when none of them was ever written (zeros). */
  RPL_MUST_CHECK rpl_err (*reader_read)(struct store_reader *rd, uint64_t offset, uint8_t *buf, size_t len, bool *hole);
  /* What restore prints of where the image came from: "snapshot", "kept image". */
  const char *image_kind;
  /* Failover: makes the standalone copy x of an opened point image (a page blob copied by the
   * storage, else through this machine); NULL where the storage holds no such copies (file: the
   * command writes a VHD file instead). The copy is the user's: outside the replica's lease and
   * retention; neither the replica nor its lease is touched. A failed copy is deleted. */
  RPL_MUST_CHECK rpl_err (*image_export)(struct store_image *img, const struct store_export *x,
                                         struct store_export_result *out);
};

/* Every opened store, image and reader starts with this: the backend it belongs to. */
struct store {
  const struct store_ops *ops;
  bool blank; /* open made the replica just now: it reads as zeros throughout (its hash index says so) */
};
struct store_image {
  const struct store_ops *ops;
};
struct store_reader {
  const struct store_ops *ops;
};

/* The backends (store_file.c, store_blob.c). */
extern const struct store_ops store_file_ops;
extern const struct store_ops store_blob_ops;

/* The backend a storage string names ("file:DIR", else Azure). */
const struct store_ops *store_backend_of(const char *storage);
/* The backend the settings' storage string names. */
const struct store_ops *store_backend(const struct appliance_settings *s);

#endif
