/* uploader.h - applies committed journal cycles to the disk's Azure page blob (fenced by sequence
 * number, committed by setting it), takes recovery-point snapshots and reads the blob back.
 * Internal header: appliance/ and tests/ only. */
#ifndef APPLIANCE_UPLOADER_H
#define APPLIANCE_UPLOADER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "blob.h"
#include "journal.h"
#include "proto.h"
#include "ratelimit.h"
#include "rpl_error.h"
#include "settings.h"

/*
 * What it promises
 *  - One page blob per disk, "<disk uuid>.vhd" in the settings' container: the disk area (the disk
 *    size rounded up to a whole MiB, as Azure wants for a disk) then a 512-byte fixed-VHD footer.
 *  - Cycle n is applied in two passes, like the file replica: every extent is checked (zstd
 *    decompressed, xxh3-128 compared) before any write; then Put Page update (<= 4 MiB, with
 *    Content-MD5) for data and Put Page clear for zero extents, many in flight, each carrying
 *    x-ms-if-sequence-number-lt: n. When all are in, the blob's sequence number is set to n (the
 *    commit), and only then is the journal told cycle n is applied. A late retried write of cycle
 *    n then fails with 412 instead of overwriting cycle n+1.
 *  - After a restart the blob's sequence number says which cycles are in: a committed one is only
 *    marked applied in the journal, never written twice.
 *  - Thread-safe: a mutex inside serialises apply, read, snapshot and resize of one uploader.
 */

struct uploader;

/* blob_config from the appliance settings (strings point into s); an http endpoint is refused
 * (uploader_check_transport). */
RPL_MUST_CHECK rpl_err uploader_config(const struct appliance_settings *s, struct blob_config *cfg);
/* The settings' upload_check text ("" = none, "none", "md5", "crc64"); false for anything else.
 * None is the default: TLS protects every byte in transit and the data's xxh3-128 was verified on
 * arrival, so a check adds only the storage's own verification, for most of the client's CPU (MD5). */
bool uploader_check_parse(const char *text, enum blob_upload_check *out);
/* RPL_E_BLOB_CONNSTR (with its detail) for an http endpoint, unless s allows http for an emulator
 * and the endpoint is this machine's (loopback). */
RPL_MUST_CHECK rpl_err uploader_check_transport(const struct appliance_settings *s, const struct blob_account *acct);
/* "<disk uuid>.vhd" */
void uploader_blob_name(const uint8_t disk_id[PROTO_ID_SIZE], char out[48]);
/* The page blob's size for a disk of disk_size bytes: disk area rounded up to 1 MiB + the footer. */
uint64_t uploader_blob_size(uint64_t disk_size);

/* Opens the client (private-endpoint path checked), creates the container and the blob when
 * missing (sequence number 0, footer written), grows a smaller blob. */
RPL_MUST_CHECK rpl_err uploader_open(const struct appliance_settings *s, const uint8_t disk_id[PROTO_ID_SIZE],
                                     uint64_t disk_size, struct uploader **out);
void uploader_close(struct uploader *u);
/* Whether nothing has been written into the blob since this uploader created it (but its footer). */
bool uploader_blank(struct uploader *u);
/* Grows the blob for a disk now disk_size bytes (footer rewritten); smaller: RPL_E_REPLICA_SHRINK. */
RPL_MUST_CHECK rpl_err uploader_resize(struct uploader *u, uint64_t disk_size);
/* The blob's sequence number = the last cycle committed into it. */
uint64_t uploader_committed(struct uploader *u);

/* Called after cycle n of kind RECOVERY_POINT is committed, with the snapshot taken of it. */
typedef void (*uploader_snapshot_fn)(void *ctx, uint64_t cycle, const char *snapshot_id);
/* Applies every committed, not yet applied cycle of j in order (see above); *applied (may be NULL)
 * gets how many. Recovery-point cycles get a snapshot right after their commit, reported to
 * on_snapshot; with on_snapshot NULL they are applied as plain cycles (no snapshot). Stops at the first error; RPL_E_UPLOAD_BEHIND when the blob's sequence
 * number is below the journal's applied cycle. */
RPL_MUST_CHECK rpl_err uploader_apply_pending(struct uploader *u, struct journal *j, uint64_t *applied,
                                              uploader_snapshot_fn on_snapshot, void *ctx);
/* Snapshots the blob for recovery-point cycle n, which must be the blob's sequence number (a
 * direct point cycle); the snapshot's id into id. */
RPL_MUST_CHECK rpl_err uploader_snapshot(struct uploader *u, uint64_t n, char *id, size_t idsz);
/* What an upload failure asks for. */
enum upload_failure {
  UPLOAD_FAILURE_RESYNC,    /* the cached data itself is bad (hash, decompression, range, journal
                             * damage) or the blob is behind the journal: the disk needs a resync */
  UPLOAD_FAILURE_STORAGE,   /* storage unreachable, throttled past the retries, fenced by a commit
                             * it did not hear of: the storage checks run again, then a retry */
  UPLOAD_FAILURE_OWNERSHIP, /* another appliance holds the blob's lease, or ours was lost: the
                             * lease is tried again; the storage itself is fine */
};
enum upload_failure uploader_failure_kind(rpl_err e);
/* Like uploader_apply_pending, but applies at most max cycles (the daemon takes one per disk in
 * turn, so that disks share the uploader round-robin instead of one draining first). */
RPL_MUST_CHECK rpl_err uploader_apply_some(struct uploader *u, struct journal *j, uint64_t max, uint64_t *applied,
                                           uploader_snapshot_fn on_snapshot, void *ctx);
/* ---- the initial sync written straight into the blob ----
 * Cycle 1 of a blob nothing was committed to needs no cache: the receiver has verified each extent
 * (decompressed, xxh3-128 compared), and the session thread hands the raw bytes to
 * uploader_direct_extent, which gathers runs and queues their writes (fenced, under the lease) on
 * the multi handle, blocking while too many are in flight: the receive and the upload overlap, and
 * the agent is slowed by TCP when the storage is the limit. uploader_direct_commit then drains them
 * and sets the sequence number (the commit) before the ACK. A cycle given up (uploader_direct_abort)
 * leaves some of its pages in the blob at sequence number 0, where no point and nothing committed
 * lies; the next try writes every page again, zeros included. Each call takes the uploader's lock
 * for its own length only, so the applier keeps using the uploader for other work meanwhile.
 * The same path takes a later cycle n (the blob's sequence number n - 1) when the daemon asks for it:
 * the resync of a disk whose changes do not fit in the cache. A given-up one leaves pages newer than
 * the blob's sequence number says (its snapshots, the points, are untouched): like any resync, the
 * blob's newest state is consistent again only once the retry commits. */

/* Starts the direct write of cycle n; false (nothing started) unless n follows the blob's sequence
 * number, the lease is held and no direct cycle is open: the cycle then goes through the cache. */
bool uploader_direct_begin(struct uploader *u, uint64_t n);
/* len bytes of the cycle at offset: raw (copied; the caller keeps it), or zeros when raw is NULL. */
RPL_MUST_CHECK rpl_err uploader_direct_extent(struct uploader *u, uint64_t offset, const uint8_t *raw,
                                              uint32_t len);
/* Room for the len bytes at offset of the next uploader_direct_extent, in the Put Page being
 * gathered: the caller fills it and passes it as raw (nothing is copied then). The uploader owns it;
 * if the next extent is another, its bytes simply go there. NULL where it cannot be given (an extent
 * before one already gathered, more than a Put Page): raw is copied as usual. */
uint8_t *uploader_direct_room(struct uploader *u, uint64_t offset, uint32_t len);
/* Writes what is gathered, waits for every write, and commits the cycle (sequence number = n). */
RPL_MUST_CHECK rpl_err uploader_direct_commit(struct uploader *u);
/* Gives the cycle up: waits for the writes in flight (their failures ignored), commits nothing. */
void uploader_direct_abort(struct uploader *u);

/* Bandwidth limits for the Put Page bodies of this blob (each may be NULL = none; not owned, shared
 * between uploaders): every write waits until both buckets allow it, the multi handle running meanwhile. */
void uploader_set_limits(struct uploader *u, struct rate_limit *all, struct rate_limit *agent);
/* The extents of the cycles applied from now are told to ahead first (NULL: to nobody). */
void uploader_set_extent_ahead(struct uploader *u, journal_extent_ahead_fn ahead, void *ctx);
/* Reads len bytes of the disk area at offset; pages never written read as zeros without a GET. */
RPL_MUST_CHECK rpl_err uploader_read(struct uploader *u, uint64_t offset, void *buf, size_t len);

/* ---- ownership (lease.h) and the blob's own record of points ---- */

/* Snapshot metadata: the cycle (= the blob's sequence number when taken) and the unix time. */
#define UPLOADER_META_CYCLE "rplcycle"
#define UPLOADER_META_TIME "rpltime"

/* Keeps the lease: renews it when due, or, when not held, tries to acquire it. *acquired_now is
 * set when it was acquired by this call; the uploader then took the blob's own state (sequence
 * number -> *sequence, may be NULL; size). RPL_E_LEASE_HELD while another appliance holds it. */
RPL_MUST_CHECK rpl_err uploader_lease_tick(struct uploader *u, bool *acquired_now, int64_t *sequence);
/* Whether this appliance holds the blob's lease; *why (may be NULL) = why not. */
bool uploader_lease_held(struct uploader *u, rpl_err *why);
/* Deletes one snapshot of the blob (retention). */
RPL_MUST_CHECK rpl_err uploader_delete_snapshot(struct uploader *u, const char *snapshot);
/* Deletes the blob with all its snapshots (its lease released first when held; one another appliance
 * holds refuses it). Only uploader_close may follow. */
RPL_MUST_CHECK rpl_err uploader_delete_blob(struct uploader *u);
/* The blob's snapshots and the blob itself (last), with their metadata (blob_list_snapshots). */
RPL_MUST_CHECK rpl_err uploader_list_snapshots(struct uploader *u, struct blob_list *out);

struct uploader_stats {
  uint64_t cycles, put_pages, clears, bytes_uploaded, snapshots;
  uint64_t limit_wait_ms; /* time spent waiting for the bandwidth limits */
  struct blob_stats blob;
};
void uploader_get_stats(struct uploader *u, struct uploader_stats *out);

#endif
