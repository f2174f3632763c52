/* cbt_shared.h - the one plain-C header shared by the eBPF tracker (driver/cbt.bpf.c) and its user
 * side (agent/cbt.c): map sizes, the per-device slot layout, the per-CPU counters, the bitmap layout. */
#ifndef CBT_SHARED_H
#define CBT_SHARED_H

#include <linux/types.h>

/*
 * Maps (all pinned under the pin directory, see cbt.h):
 *   cbt_devices   ARRAY[CBT_MAX_DEVICES] of struct cbt_slot, BPF_F_MMAPABLE: one slot per tracked disk
 *   cbt_devmap    HASH whole-disk dev_t (kernel encoding, major << 20 | minor) -> slot index
 *   cbt_bitmaps   ARRAY_OF_MAPS[CBT_MAX_DEVICES] -> per-disk bitmap: ARRAY of __u64 words,
 *                 BPF_F_MMAPABLE | BPF_F_INNER_MAP, sized to the disk when it is attached
 *   cbt_inflight  HASH bio address -> struct cbt_inflight, for writes of bio-based disks in flight
 *   cbt_counters  PERCPU_ARRAY[CBT_MAX_DEVICES] of struct cbt_counters (statistics, and the completed sectors the agent checks)
 */
#define CBT_MAX_DEVICES 64
#define CBT_INFLIGHT_MAX 65536

/* The slot the agent gives a disk when it is free: the programs look there first, and take the
 * cbt_devmap hash map only when another disk holds it (or the disk is not tracked). */
static inline __u32 cbt_home_slot(__u32 dev)
{
  return (dev ^ (dev >> 6) ^ (dev >> 20)) & (CBT_MAX_DEVICES - 1);
}

/*
 * A disk's bitmap holds two buffers (generations); the live one is gen_seq & 1. Each buffer has
 * three levels of __u64 words: level 0 has one bit per block of the disk (block = granularity
 * bytes); bit i of level 1 says "level-0 word i may be non-zero"; bit i of level 2 says "level-1 word
 * i may be non-zero". A drain walks level 2 (8 KiB for 1 TiB at 4 KiB) and descends only where bits
 * are set, so it costs O(dirty words), not O(disk).
 *   buffer b starts at word  b * buffer_words
 *   level 0: words [0, l1_offset)   level 1: [l1_offset, l2_offset)   level 2: [l2_offset, buffer_words)
 */
#define CBT_WORD_BITS 64
#define CBT_WORD_SHIFT 6

/* Slot of one tracked disk; lives in the mmap-able cbt_devices array so that the agent reads and
 * flips it without system calls. Fields the programs write are updated with atomic operations.
 *
 * Flip protocol (why a write's mark can never land in a buffer that is being drained):
 *   program: g = gen_seq & 1; atomic add active[g] += 1 (full barrier); if gen_seq changed, undo and
 *            retry; set the bits in buffer g; atomic add active[g] -= 1.
 *   agent:   atomic exchange gen_seq += 1 (full barrier); wait until active[old & 1] == 0; the old
 *            buffer is now frozen: no program writes it until the next flip.
 * Either the program sees the new gen_seq (and retries into the new buffer) or the agent sees its
 * active count (and waits for it): the store-then-load pairs are ordered by the full barriers. */
struct cbt_slot {
  /* cache line 0: read by every marking program, written by the agent (flip, attach) */
  __u64 gen_seq;          /* generation number; buffer gen_seq & 1 is live */
  __u32 dev;              /* whole-disk dev_t (kernel encoding); 0 = slot free or being torn down */
  __u32 block_shift;      /* log2(granularity in bytes) */
  __u64 nr_blocks;        /* blocks of the disk when attached */
  __u64 l1_offset;        /* word offsets inside one buffer, see above */
  __u64 l2_offset;
  __u64 buffer_words;     /* words per buffer; the bitmap map has 2 * buffer_words entries */
  __u32 flags;            /* CBT_SLOT_* */
  __u32 reserved0;
  __u64 reserved1;
  /* cache line 1: written by the agent only */
  __u8 uuid[16];          /* tracker UUID of this attachment; the agent's state file must agree */
  __u64 attach_boot_ns;   /* CLOCK_BOOTTIME of the attach: names this attachment (its owner file) */
  __u64 diskseq;          /* the disk's diskseq the tracking is of (0: unknown): another one = a stale slot */
  __u64 kernel_sectors_base; /* with CBT_SLOT_COMPLETIONS_CHECKED: the kernel's completed write and discard
                              * sectors of the disk (/sys/block/NAME/stat) that the programs' count
                              * (cbt_counters.completed_sectors) starts from; raised by what was reported missed */
  __u64 completion_repairs; /* completions found missed and repaired from the agent's write history */
  __u64 reserved2[2];
  /* cache line 2: written by every slow-path marker; apart, so that line 0 stays shared-clean */
  __u64 active[2];        /* programs currently marking buffer 0 / 1 */
  __u64 reserved3[6];
  /* cache line 3: loss counters, written (rarely) by the programs; any increase = resync required */
  __u64 lost_inflight_full;   /* a write could not be recorded for its completion mark */
  __u64 lost_out_of_range;    /* a write beyond nr_blocks (the disk grew) */
  __u64 lost_retry_exhausted; /* gen_seq kept changing under a program (flip storm) */
  __u64 lost_bitmap_missing;  /* the slot had a device but no bitmap map, or a request had too many bios */
  __u64 reserved_loss[4];
};

#define CBT_SLOT_LOSS_FIELDS 4

/* The disk is bio-based (device mapper, md): its writes complete through block_bio_complete and
 * need an in-flight record. Request-based (blk-mq) disks complete through block_rq_complete, where
 * every bio of the request still carries its sector and size: no record is needed. */
#define CBT_SLOT_BIO_BASED 1u

/* Request-based disks: the agent compares the kernel's count of completed write and discard sectors
 * with the sectors block_rq_complete's program saw (kernel_sectors_base, completed_sectors). The
 * kernel counts them after the tracepoint, so the program's count is never behind unless the kernel
 * did not run the program for a completion: a write the completion mark may miss. The programs do
 * not read this flag. */
#define CBT_SLOT_COMPLETIONS_CHECKED 2u

/* Per-CPU counters of one slot: statistics, and the completed sectors the agent checks. */
struct cbt_counters {
  __u64 writes;           /* REQ_OP_WRITE bios marked at submission */
  __u64 discards;         /* REQ_OP_DISCARD */
  __u64 secure_erases;    /* REQ_OP_SECURE_ERASE */
  __u64 write_zeroes;     /* REQ_OP_WRITE_ZEROES */
  __u64 empty_ignored;    /* size-0 bios (flushes) that were not marked */
  __u64 completion_marks; /* completions that set bits a flip had taken away while the write was in flight */
  __u64 inflight_records; /* in-flight records made (bio-based disks only) */
  __u64 reserved;
  /* Added after the others: the map's value size (checked when pins are opened) tells a tracker of an
   * agent that does not count it, whose pins are then refused rather than read as missed completions. */
  __u64 completed_sectors; /* 512-byte sectors of write-type requests block_rq_complete's program saw complete */
};

/* What the bio completion program needs to mark a write of a bio-based disk again after a flip. */
struct cbt_inflight {
  __u32 dev;              /* whole-disk dev_t when submitted (a reused slot must not be marked) */
  __u32 slot;
  __u64 sector;           /* whole-disk 512-byte sector */
  __u64 bytes;
  __u64 gen_seq;          /* generation the submission mark went into */
};

/* Bios walked per completed request; a longer chain counts a loss. A request holds at most
 * max_segments bios (128 by default, 256 on some NVMe). */
#define CBT_RQ_MAX_BIOS 1024

/* Operation codes (bi_opf & CBT_REQ_OP_MASK), stable kernel ABI since 4.10. */
#define CBT_REQ_OP_MASK 0xffu
#define CBT_REQ_OP_WRITE 1u
#define CBT_REQ_OP_DISCARD 3u
#define CBT_REQ_OP_SECURE_ERASE 5u
#define CBT_REQ_OP_WRITE_ZEROES 9u

/* Retries of the flip protocol before a program gives up and counts a loss. */
#define CBT_FLIP_RETRIES 8

#endif
