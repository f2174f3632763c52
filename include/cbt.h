/* cbt.h - the change-block tracker's user side: attach the eBPF tracker to whole disks, flip
 * generations, drain changed extents, merge back, report and acknowledge resync-required. */
#ifndef CBT_H
#define CBT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rpl_error.h"

/*
 * Model. Each tracked disk has a bitmap with two buffers in the kernel (pinned in bpffs, so tracking
 * survives the agent exiting, crashing or being upgraded). The eBPF program marks written blocks in
 * the live buffer. A cycle is:
 *
 *     cbt_flip()    freeze the live buffer (and fold into it anything drained but never committed)
 *     cbt_drain()   read the frozen buffer as byte extents, in batches (RPL_E_AGAIN: call again)
 *     cbt_commit()  forget the frozen buffer once the consumer has the data durably
 *
 * A cycle that fails before cbt_commit() needs nothing: the next cbt_flip() re-reports it. A set that
 * was already committed can be given back with cbt_merge().
 *
 * A clean reboot keeps tracking: cbt_save_for_reboot() at the end of the shutdown writes each disk's
 * uncommitted changes into its save area (STATE/cbt/NAME.save, made by cbt_start, written raw under
 * the filesystem), and cbt_resume_after_reboot() early at boot attaches each disk and loads them,
 * when the save is of the last boot's tracking and the disk was not written since boot.
 *
 * Never silent: any event after which the tracked set may be incomplete (reboot, tracking removed
 * behind our back, a kernel miss counter, a full in-flight table, a resize, no eBPF at all) raises
 * "resync required" with a reason, increments the device's event count and renews its tracker UUID.
 * Only cbt_ack_resync() with the exact current count clears it; an event after that count keeps it.
 *
 * Where eBPF is unavailable (no BTF, no CAP_BPF, no bpffs) tracking runs in fallback mode: every
 * flip raises CBT_RESYNC_NO_EBPF and every drain returns the whole device.
 *
 * Not seen by any bio hook, hence not tracked: passthrough writes (SG_IO, NVMe ioctls, uring_cmd).
 * Zoned block devices are refused.
 *
 * Thread safety: one struct cbt per thread. Operations from several processes on one machine are
 * serialised by a lock file (/run/mobility-agent/cbt.lock).
 */

enum cbt_resync_reason {
  CBT_RESYNC_NONE = 0,
  CBT_RESYNC_REBOOT = 1,            /* boot id changed and no save of the last shutdown was resumed (a crash,
                                       a power loss, no save hook; the reason's detail is in the log) */
  CBT_RESYNC_UNCLEAN_DETACH = 2,    /* tracking vanished without cbt_stop (pins removed, program unloaded) */
  CBT_RESYNC_PROGRAM_MISSED = 3,    /* the kernel skipped the tracker program (recursion_misses) */
  CBT_RESYNC_INFLIGHT_FULL = 4,     /* in-flight table full: a completion mark may be missing */
  CBT_RESYNC_OUT_OF_RANGE = 5,      /* a write beyond the tracked size */
  CBT_RESYNC_RESIZE = 6,            /* the disk's size changed */
  CBT_RESYNC_FLIP_STORM = 7,        /* a program could not enter a generation */
  CBT_RESYNC_BITMAP_MISSING = 8,    /* a write found no bitmap to mark */
  CBT_RESYNC_NO_EBPF = 9,           /* eBPF unavailable: fallback mode */
  CBT_RESYNC_MEDIA_CHANGED = 10,    /* the disk's diskseq changed: other medium, loop device re-pointed */
  CBT_RESYNC_BOOT_WRITE = 11,       /* after a clean shutdown, the disk was written before tracking attached */
  CBT_RESYNC_SLOT_RECLAIMED = 12,   /* a stale kernel slot of the disk (owner gone, other identity) was taken over */
  CBT_RESYNC_COMPLETION_MISSED = 13, /* the kernel counted completed write sectors the completion program did not see */
};
#define CBT_RESYNC_REASON_MAX CBT_RESYNC_COMPLETION_MISSED

/* "reboot", "unclean-detach", ...; "none" for CBT_RESYNC_NONE; never NULL. Static storage. */
const char *cbt_resync_reason_name(enum cbt_resync_reason reason);

/* ---- extent sets ---- */

struct cbt_extent {
  uint64_t offset;  /* bytes from the start of the disk */
  uint64_t length;  /* bytes, > 0 */
};

/* A growable array of extents in increasing offset order, adjacent extents coalesced.
 * The set owns items; cbt_extents_free() releases it. */
struct cbt_extents {
  struct cbt_extent *items;
  size_t count;
  size_t capacity;      /* allocated items */
  size_t limit;         /* hard cap on count: adding beyond it fails with RPL_E_LIMIT */
  uint64_t max_length;  /* an extent never exceeds this many bytes (0: no cap) */
};

#define CBT_EXTENTS_LIMIT_MAX ((size_t)1 << 24) /* 16 Mi extents = 256 MiB */

/* limit is clamped to [1, CBT_EXTENTS_LIMIT_MAX]. Allocates nothing yet. */
void cbt_extents_init(struct cbt_extents *set, size_t limit, uint64_t max_length);
/* Empties the set, keeping its memory. */
void cbt_extents_clear(struct cbt_extents *set);
void cbt_extents_free(struct cbt_extents *set);
/* Appends [offset, offset + length), which must not start before the end of the last extent;
 * coalesces with the last extent when adjacent (up to max_length) and splits at max_length.
 * RPL_E_LIMIT when the set is full (the set is unchanged), RPL_E_NOMEM. */
RPL_MUST_CHECK rpl_err cbt_extents_add(struct cbt_extents *set, uint64_t offset, uint64_t length);
/* Total bytes in the set. */
uint64_t cbt_extents_bytes(const struct cbt_extents *set);

/* ---- the tracker ---- */

struct cbt;

struct cbt_options {
  const char *state_dir; /* agent state directory; NULL: /var/lib/mobility-agent. Records go to STATE/cbt/. */
  const char *pin_dir;   /* NULL: $MOBILITY_AGENT_BPF_PIN_DIR, else /sys/fs/bpf/mobility-agent */
  const char *btf_path;  /* kernel BTF for CO-RE; NULL: $MOBILITY_AGENT_BTF, else /sys/kernel/btf/vmlinux */
};

#define CBT_DEFAULT_PIN_DIR "/sys/fs/bpf/mobility-agent"
#define CBT_DEFAULT_BTF "/sys/kernel/btf/vmlinux"
#define CBT_LOCK_FILE "/run/mobility-agent/cbt.lock"
/* Granularity: 4 KiB up to 1 TiB disks; above, the smallest power of two that keeps one buffer's
 * level 0 at 2^28 bits (32 MiB): 8 KiB up to 2 TiB, 64 KiB up to 16 TiB, ... */
#define CBT_MIN_BLOCK_SHIFT 12
#define CBT_MAX_BLOCKS ((uint64_t)1 << 28)

/* Opens the tracker: opens the pinned maps if a tracker is installed, installs nothing. On success
 * *out is owned by the caller (cbt_close()). On failure *out is NULL; messages go to the log. */
RPL_MUST_CHECK rpl_err cbt_open(struct cbt **out, const struct cbt_options *options);
/* A failed call records what went wrong, and how to fix it, as its error's detail (rpl_detail,
 * rpl_describe in rpl_error.h). */
/* Releases the handle; tracking goes on in the kernel. NULL is allowed. */
void cbt_close(struct cbt *t);
/* Whether the eBPF tracker is (or can be) used; if not, *why (owned by t) says why. */
bool cbt_ebpf_available(struct cbt *t, const char **why);

/* The tracker's program variants (docs/architecture.md, "Kernel versions"): bpf_loop (Linux 5.17+),
 * bounded loops (5.12+) or legacy (5.10+: bounded loops and byte stores, which mark whole bytes of
 * the bitmap, i.e. runs widened to 8 blocks). Chosen at install by probing the kernel for bpf_loop and
 * atomic OR; the environment variable CBT_VARIANT_ENV (auto, bpf_loop, bounded, legacy) overrides the
 * probe (tests, a kernel whose verifier refuses one). The variant stays until the tracker is
 * installed again. */
enum cbt_variant {
  CBT_VARIANT_NONE = 0,     /* none chosen: CBT_VARIANT_ENV holds an unknown value */
  CBT_VARIANT_BPF_LOOP = 1,
  CBT_VARIANT_BOUNDED = 2,
  CBT_VARIANT_LEGACY = 3,
};
#define CBT_VARIANT_ENV "MOBILITY_AGENT_CBT_VARIANT"
/* "bpf_loop", "bounded", "legacy", "none"; never NULL. Static storage. */
const char *cbt_variant_name(enum cbt_variant variant);
/* The variant running (pinned, *running true) or, when no tracker is installed, the one cbt_start
 * would load (*running false); *why (owned by t) says why it is that one. */
enum cbt_variant cbt_variant_get(struct cbt *t, bool *running, const char **why);

/* Starts tracking DEVICE (a whole disk; its partitions are covered). Installs and pins the eBPF
 * programs on first use. In fallback mode the device is recorded and resync-required.
 * RPL_E_CBT_ALREADY_TRACKED if it is tracked already. */
RPL_MUST_CHECK rpl_err cbt_start(struct cbt *t, const char *device);
/* Stops tracking DEVICE and forgets its record; the last device stopped unpins the programs. */
RPL_MUST_CHECK rpl_err cbt_stop(struct cbt *t, const char *device);
/* Like cbt_stop, but also frees a kernel slot of DEVICE that this state directory does not own (its
 * owner's state directory gone, or the device re-pointed since): an owner still alive sees its
 * tracking gone (resync: unclean-detach). RPL_E_CBT_NOT_TRACKED when neither slot nor record exists. */
RPL_MUST_CHECK rpl_err cbt_stop_force(struct cbt *t, const char *device);

/* Freezes the live buffer, first folding into it whatever an earlier flip froze and nobody
 * committed. *generation (optional) is the frozen generation's number, for cbt_commit(). Checks
 * every loss counter first (see above). */
RPL_MUST_CHECK rpl_err cbt_flip(struct cbt *t, const char *device, uint64_t *generation);
/* Appends the frozen buffer's extents to set, from where the previous call stopped. RPL_OK when
 * all are in the set, RPL_E_AGAIN when set reached its limit (consume it, clear it, call again).
 * In fallback mode the extents cover the whole device. Needs a cbt_flip() by this handle. */
RPL_MUST_CHECK rpl_err cbt_drain(struct cbt *t, const char *device, struct cbt_extents *set);
/* Forgets the frozen generation (its data is safe elsewhere). RPL_E_CBT_GENERATION_CHANGED if
 * another flip happened since: nothing is lost, the set is re-reported at the next flip. */
RPL_MUST_CHECK rpl_err cbt_commit(struct cbt *t, const char *device, uint64_t generation);
/* Whether any block of set (extents of the frozen generation, already read) was written since the
 * flip: marked in the live generation, at submission or, for a write in flight across the flip, at
 * its completion. A point read after the thaw is exact when this says no. In fallback mode, or when
 * the frozen generation is gone, *rewritten is true (nothing can be shown). */
RPL_MUST_CHECK rpl_err cbt_rewritten(struct cbt *t, const char *device, const struct cbt_extents *set, bool *rewritten);
/* Marks set's extents changed again in the live generation (a committed cycle that failed later). */
RPL_MUST_CHECK rpl_err cbt_merge(struct cbt *t, const char *device, const struct cbt_extents *set);

/* How long a write may be in flight, at most, for a completion the kernel skipped to be repaired
 * from the handle's history of what it committed (block devices time requests out after 30 s by
 * default; a cycle may come up to a minute later than the completion). A longer one is lost only if
 * its completion is also the one skipped. */
#define CBT_HISTORY_NS (120ULL * 1000000000ULL)

/* When the kernel skipped a completion and the handle's history reaches back far enough, the blocks
 * written lately are marked again for the next drain. A check set here is asked first which of them
 * differ from what the replica holds: it calls mark(mark_ctx, offset, length) for each byte range to
 * send again, adds to *checked_bytes what it compared and to *differing_bytes what it marked, and
 * returns true; false when it cannot tell (everything written lately is then marked). device is the
 * path given to cbt_start. Called with the tracker locked, from cbt_flip and from the looks of every
 * call that looks (cbt_status_get and others). fn NULL: no check. */
typedef bool (*cbt_repair_check_fn)(void *ctx, const char *device,
                                    void (*mark)(void *mark_ctx, uint64_t offset, uint64_t length), void *mark_ctx,
                                    uint64_t *checked_bytes, uint64_t *differing_bytes);
void cbt_set_repair_check(struct cbt *t, cbt_repair_check_fn fn, void *ctx);

struct cbt_status {
  char device[256];        /* path given to cbt_start */
  char name[64];           /* kernel name (loop3, sdb) */
  bool tracking;           /* the eBPF tracker marks this device now */
  bool fallback;           /* eBPF unavailable: resync every cycle */
  uint64_t size;           /* bytes */
  uint64_t granularity;    /* bytes per bitmap bit */
  uint64_t generation;     /* live generation number (restarts with every new tracker UUID) */
  uint64_t dirty_bytes;    /* marked and not committed (live + frozen), granularity-rounded */
  char uuid[37];           /* tracker UUID */
  bool resync_required;
  enum cbt_resync_reason resync_reason;  /* of the latest event */
  uint64_t resync_count;   /* events so far; acknowledge this number */
  uint64_t resync_acked;
  uint64_t resync_time;    /* unix time of the latest event, 0 if none */
  /* kernel counters since the tracker UUID's attach (0 when not tracking) */
  uint64_t writes, discards, secure_erases, write_zeroes, empty_ignored, completion_marks;
  uint64_t inflight_records; /* bio-based disks (device mapper, md) only */
  uint64_t program_misses;   /* recursion_misses of the tracker programs (all devices) */
  /* Request-based disks: write and discard sectors completed since the attach, as the completion
   * program saw them and as the kernel counted them (less what was raised as completion-missed);
   * the kernel's is never ahead unless a completion went unseen. */
  bool completions_checked;
  uint64_t completed_sectors, kernel_completed_sectors;
  uint64_t completion_repairs; /* misses repaired from the agent's write history (no resync) */
};

/* Fills *st for DEVICE, a device path or a recorded kernel name from cbt_list() (recording any new
 * resync event first). */
RPL_MUST_CHECK rpl_err cbt_status_get(struct cbt *t, const char *device, struct cbt_status *st);
/* Names (kernel names, e.g. "loop3") of the devices recorded in the state directory, sorted; at
 * most max. *count receives how many were written. */
RPL_MUST_CHECK rpl_err cbt_list(struct cbt *t, char (*names)[64], size_t max, size_t *count);
/* Clears resync-required if count is the device's current event count. RPL_E_CBT_ACK_STALE if a
 * newer event happened (resync again), RPL_E_INVALID_ARGUMENT if count is not an event count. */
RPL_MUST_CHECK rpl_err cbt_ack_resync(struct cbt *t, const char *device, uint64_t count);

/* ---- kernel slots ---- */

/* One kernel tracking slot in use, whoever owns it. A stale slot (owner state directory or its record
 * gone, the disk now another one or gone) is reclaimed by cbt_start of its disk under any state
 * directory, with the resync reason CBT_RESYNC_SLOT_RECLAIMED; a live one is refused
 * (RPL_E_CBT_OWNED_ELSEWHERE). */
struct cbt_slot_info {
  int slot;
  uint32_t major, minor;
  char name[64];              /* kernel name of major:minor now, "" when no such device exists */
  bool owner_known;           /* false: attached by an agent that recorded no owner */
  char owner[4096];           /* owner's state directory (absolute) */
  char owner_name[64];        /* the record's name there (STATE/cbt/NAME.state) */
  char tracker_uuid[37];
  uint64_t diskseq_recorded;  /* the disk's identity the tracking is of (0: unknown) */
  uint64_t diskseq_now;       /* the device's identity now (0: unknown, no device) */
  bool stale;
  char stale_reason[32];      /* owner-gone, owner-record-gone, device-gone, identity-changed, no-medium; "" */
  char stale_detail[4352];    /* the reason for a person */
};

#define CBT_MAX_SLOTS 64 /* slots of one tracker instance (CBT_MAX_DEVICES of cbt_shared.h) */
/* Every slot in use of this tracker instance (pin directory), in slot order; at most max. */
RPL_MUST_CHECK rpl_err cbt_slots_list(struct cbt *t, struct cbt_slot_info *out, size_t max, size_t *count);

/* ---- clean reboots ---- */

/* At shutdown, after the last write that can happen (the filesystems unmounted or read-only): saves
 * each tracked disk's uncommitted changes, and the save's own blocks, into its save area, written
 * raw through the device under the state directory's filesystem; writes nothing else. *saved and
 * *skipped count disks; a skipped disk (its reason logged) resyncs after the reboot. */
RPL_MUST_CHECK rpl_err cbt_save_for_reboot(struct cbt *t, size_t *saved, size_t *skipped);
/* At boot, before the disks are first written (the state directory may still be read-only; this
 * writes to it nothing but the spent saves' headers, raw): attaches each recorded disk and loads what
 * the last shutdown saved, when the save is of the last boot's tracking, the disk's size is the same
 * and the kernel counted no sector written or discarded on it since boot. The outcome waits in
 * /run/mobility-agent/resumed for the daemon's first look at the disk: no resync when restored, else
 * CBT_RESYNC_REBOOT or CBT_RESYNC_BOOT_WRITE with the reason. */
RPL_MUST_CHECK rpl_err cbt_resume_after_reboot(struct cbt *t, size_t *resumed, size_t *refused);

#endif
