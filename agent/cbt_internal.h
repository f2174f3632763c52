/* cbt_internal.h - the change-block tracker's internals shared by cbt.c (the handle and the
 * operations of cbt.h), cbt_kernel.c (the eBPF objects and slots) and cbt_device.c (a tracked
 * device's record); nothing else includes it. */
#ifndef AGENT_CBT_INTERNAL_H
#define AGENT_CBT_INTERNAL_H

#include <bpf/libbpf.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "cbt.h"
#include "cbt_bitmap.h"
#include "cbt_shared.h"
#include "cbt_state.h"

enum pin_object {
  PIN_DEVICES, PIN_DEVMAP, PIN_BITMAPS, PIN_INFLIGHT, PIN_COUNTERS,
  PIN_LINK_BIO_QUEUE, PIN_LINK_RQ_COMPLETE, PIN_LINK_BIO_COMPLETE,
  PIN_COUNT
};
#define PIN_FIRST_LINK PIN_LINK_BIO_QUEUE
#define PROGRAMS (PIN_COUNT - PIN_FIRST_LINK)

/* A slot's bitmap mapped into this process, cached across calls (re-mapping would cost a page
 * fault per touched page on every drain). */
struct mapped_bitmap {
  uint32_t map_id;        /* 0: not mapped */
  uint64_t *words;
  size_t bytes;
  struct cbt_layout layout;
};

/* Where this handle is in a device's cycle. */
struct cycle {
  char name[64];          /* "" = unused */
  bool flipped;           /* a frozen generation awaits drain / commit */
  bool drained;           /* cbt_drain returned RPL_OK for it */
  uint64_t frozen_seq;    /* its generation number */
  uint64_t next_byte;     /* drain cursor */
};

/* History chunks: 64 KiB (or the tracker's granularity if coarser), 2 MiB of memory per TiB. */
#define CBT_HISTORY_CHUNK_SHIFT 16

/* The chunks of the generations this handle committed lately for one slot's attachment, in two
 * windows of at least CBT_HISTORY_NS each (cbt_history.c). Owned by the handle. */
struct cbt_history {
  uint64_t attach_ns;          /* the attachment (cbt_slot.attach_boot_ns) it is of; 0: none */
  uint32_t chunk_shift;
  uint64_t words;              /* of each window */
  uint64_t *bits[2];           /* [0] the current window, [1] the one before */
  uint64_t window_start_ns;    /* CLOCK_BOOTTIME of bits[0]'s start */
  uint64_t complete_since_ns;  /* every generation committed since then is in it */
  uint64_t next_seq;           /* gen_seq this handle's next flip finds, if nobody else flipped */
};

struct cbt {
  char state_dir[PATH_MAX];
  char pin_dir[PATH_MAX];
  char btf_path[PATH_MAX];
  bool btf_custom;        /* btf_path came from the caller or the environment */
  char boot_id[40];
  char no_ebpf_why[384];  /* why eBPF cannot be used ("" = it can, as far as known) */
  int lock_fd;
  int fd[PIN_COUNT];      /* -1 when not open */
  uint32_t devices_map_id;
  int prog_fd[PROGRAMS];
  enum cbt_variant variant; /* of the pinned programs; CBT_VARIANT_NONE when none are open */
  bool typed_tracepoints; /* the pinned submission program is tp_btf (else a raw tracepoint) */
  char variant_why[512];  /* why the variant cbt_variant_get returned is that one */
  struct cbt_slot *slots; /* mmap of cbt_devices, NULL when not open */
  size_t slots_bytes;
  int ncpus;
  struct mapped_bitmap bitmaps[CBT_MAX_DEVICES];
  struct cycle cycles[CBT_MAX_DEVICES];
  struct cbt_history history[CBT_MAX_DEVICES]; /* by slot */
  cbt_repair_check_fn repair_check; /* NULL: a repair marks every chunk of the history */
  void *repair_check_ctx;
};

/* A device being operated on: what the kernel says (info) and what the record says. */
struct device_info {
  char path[256];
  char name[64];
  uint32_t major, minor;
  uint64_t size;
  uint64_t diskseq;       /* /sys/block/X/diskseq (Linux >= 5.15), 0 if unknown */
  bool bio_based;         /* no blk-mq queue (device mapper, md): completions need in-flight records */
  bool present;           /* resolved from the system (false: known only from the record) */
};

struct tracked {
  struct device_info dev;
  struct cbt_record rec;
  int slot;               /* -1: not attached */
  bool foreign_slot;      /* a slot for this disk exists with another UUID */
  bool dirty;             /* rec must be saved */
};

/* For a failure that a more important error is already being reported for. */
static inline void ignore_error(rpl_err err)
{
  (void)err;
}

static inline uint32_t kernel_dev(uint32_t major, uint32_t minor)
{
  return (major << 20) | minor; /* MKDEV() of include/linux/kdev_t.h */
}

/* ---- cbt.c --------------------------------------------------------------------------------- */

/* Records why eBPF cannot be used here (shown to the user with the fallback). */
void cbt_set_no_ebpf_reason(struct cbt *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A small text file (sysfs, procfs) without its trailing newline; -1 with errno set on failure. */
int cbt_read_small_file(const char *path, char *buf, size_t size);
int cbt_mkdir_parents(const char *path, mode_t mode);

/* ---- cbt_kernel.c: pins ---------------------------------------------------------------------- */

/* libbpf's print callback: its messages go to our log at debug level. */
int cbt_libbpf_print(enum libbpf_print_level level, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
void cbt_pins_close(struct cbt *t);
/* Removes our pinned objects and the pin directory; tracking of every device ends. */
void cbt_pins_remove(struct cbt *t);
/* Re-opens the pins when another process removed or replaced them since we opened them. */
rpl_err cbt_pins_refresh(struct cbt *t);
bool cbt_pins_installed(const struct cbt *t);
/* Loads, attaches and pins the programs and maps. On failure t->no_ebpf_why says why when eBPF is
 * unusable here (the caller falls back); other failures are errors. */
rpl_err cbt_pins_install(struct cbt *t);

/* cbt_variant_get of cbt.h once the pins are open (under the tracker lock). */
enum cbt_variant cbt_variant_describe(struct cbt *t, bool *running, const char **why);

/* ---- cbt_kernel.c: slots ------------------------------------------------------------------- */

uint32_t cbt_block_shift_for(uint64_t size);
/* The slot tracking kernel device kdev, or -1. */
int cbt_find_slot(const struct cbt *t, uint32_t kdev);
bool cbt_any_slot_used(const struct cbt *t);
/* Waits until no program marks buffer `buffer` of slot s (see the flip protocol, cbt_shared.h). */
rpl_err cbt_wait_inactive(struct cbt *t, struct cbt_slot *s, int buffer);
/* Maps slot's bitmap (cached by map id). */
rpl_err cbt_map_bitmap(struct cbt *t, int slot, struct mapped_bitmap **out);
uint64_t cbt_program_misses(const struct cbt *t);
/* Attaches a free slot to the disk of d (whose record already carries the UUID). */
rpl_err cbt_slot_attach(struct cbt *t, struct tracked *d);
rpl_err cbt_slot_detach(struct cbt *t, int slot);

/* The tracker's lock (a file lock, with the pins refreshed), for cbt_persist.c. */
rpl_err cbt_lock(struct cbt *t);
void cbt_unlock(struct cbt *t);

/* Why this kernel could not load the tracker in this boot, kept in STATE/cbt/ebpf-refused (boot id,
 * reason) after a failed install so that later processes (cbt status) say so too; a successful
 * install removes it. cbt_refusal_load fills t->no_ebpf_why when this boot has one. */
void cbt_refusal_save(struct cbt *t);
void cbt_refusal_load(struct cbt *t);
void cbt_refusal_forget(struct cbt *t);

/* This handle's cycle of the disk with kernel name `name` (NULL if none; made when create). */
struct cycle *cbt_find_cycle(struct cbt *t, const char *name, bool create);

/* ---- cbt_history.c ------------------------------------------------------------------------- */

/* A fresh history of slot, complete from its attach (called by the attach). */
void cbt_history_begin(struct cbt *t, int slot);
void cbt_history_forget(struct cbt *t, int slot);
/* Before this handle flips slot at generation seq: a history made here is complete from the attach
 * when seq is 0; a flip by another process since the last one of this handle restarts it. */
void cbt_history_flip(struct cbt *t, int slot, uint64_t seq);
/* Adds the chunks of a frozen buffer being committed (layout is the slot's). */
void cbt_history_record(struct cbt *t, int slot, const uint64_t *frozen, const struct cbt_layout *layout);
/* Whether every generation committed in the last CBT_HISTORY_NS is in slot's history. */
bool cbt_history_complete(struct cbt *t, int slot);
/* Marks in buffer every chunk of the generations committed in the last CBT_HISTORY_NS; false (and
 * nothing marked) when the history does not reach back that far (*chunks: how many were marked). */
bool cbt_history_repair(struct cbt *t, int slot, uint64_t *buffer, const struct cbt_layout *layout, uint64_t *chunks);

/* ---- cbt_slots.c --------------------------------------------------------------------------- */

/* Records this state directory as the owner of slot's attachment (of the disk recorded as name). */
void cbt_owner_record(struct cbt *t, int slot, const char *name);
void cbt_owner_forget(struct cbt *t, int slot);
/* Removes every owner file of this tracker instance (its pins are being removed). */
void cbt_owners_remove(struct cbt *t);
/* Fills *out for slot (in use), judging whether it is stale. */
void cbt_slot_judge(const struct cbt *t, int slot, struct cbt_slot_info *out);
/* Frees slot, which tracks d's disk for another tracker UUID, when it is stale (logged once, and
 * d's record raises CBT_RESYNC_SLOT_RECLAIMED); else RPL_E_CBT_OWNED_ELSEWHERE naming the owner. */
rpl_err cbt_slot_reclaim(struct cbt *t, int slot, struct tracked *d);

/* ---- cbt_persist.c ------------------------------------------------------------------------- */

/* Makes d's save area (STATE/cbt/NAME.save) if missing or of another size: written zeros, then its
 * blocks checked mappable (else removed, with a notice: clean reboots of that disk resync). */
rpl_err cbt_save_area_ensure(struct cbt *t, const struct tracked *d);
/* The outcome cbt_resume_after_reboot left for d in this boot, read once: true when its changes
 * were restored (no resync); false with *why the reason to raise. */
bool cbt_resumed_this_boot(struct cbt *t, const struct tracked *d, enum cbt_resync_reason *why);

/* ---- cbt_device.c -------------------------------------------------------------------------- */

rpl_err cbt_resolve_device(struct cbt *t, const char *device, struct device_info *info);
/* Sectors written and discarded on the whole disk NAME since boot, as the kernel counts them at
 * completion (/sys/block/NAME/stat, fields 7 and 14). */
rpl_err cbt_kernel_written_sectors(const char *name, uint64_t *sectors);
/* The programs' counters of slot since its attach, summed over the CPUs (zero on failure). */
rpl_err cbt_slot_counters(const struct cbt *t, int slot, struct cbt_counters *sum);
/* The kernel's and the programs' counts of completed write sectors of d's disk compared (request-
 * based disks): a deficit is a completion the kernel did not run the tracker for. It is repaired by
 * marking in buffer (0 or 1; -1: the live one) the chunks of the generations committed lately
 * (cbt_history_repair), else raised as CBT_RESYNC_COMPLETION_MISSED; either way it is taken into the
 * slot's base (so it is handled once). */
void cbt_check_completions(struct cbt *t, struct tracked *d, int buffer);
void cbt_raise_event(struct tracked *d, enum cbt_resync_reason reason, struct cbt *t);
/* Loads the record of device (a path, or a recorded name when it has no '/'). */
rpl_err cbt_load_tracked(struct cbt *t, const char *device, struct tracked *d, bool need_device);
/* Compares the record with the kernel and raises an event for every way tracking may have lost a
 * write since the last look. Never re-arms; see cbt_arm(). */
void cbt_reconcile(struct cbt *t, struct tracked *d);
/* Makes sure the device is tracked: attaches a slot (installing the tracker if needed) or, where
 * eBPF cannot work, switches the record to fallback mode. */
rpl_err cbt_arm(struct cbt *t, struct tracked *d);
/* Saves the record if it changed. */
rpl_err cbt_save_tracked(struct cbt *t, struct tracked *d);

#endif
