/* cbt.bpf.c - the eBPF change-block tracker: marks every block written (write, discard, secure
 * erase, write-zeroes) to a tracked whole disk in that disk's bitmap, on submission and again on
 * completion, so that a write in flight across a generation flip is reported after it landed.
 *
 * Built twice (driver/CMakeLists.txt), one CO-RE object per variant, from this one source so that
 * both mark exactly alike: the default iterates with bpf_loop (kernel 5.17+); with CBT_BOUNDED the
 * loops are bounded C loops split across global functions, for 5.12-5.16 verifiers; CBT_LEGACY (with
 * CBT_BOUNDED) adds what 5.10 and 5.11 need: bits set by byte stores (no atomic OR), global functions
 * with scalar arguments only, bio->bi_disk, block_bio_queue's request_queue argument (see "Kernel
 * versions" in docs/architecture.md). The bounded variant's programs are named cbtb_*, the legacy
 * one's cbtl_*: that is how the agent tells which variant is pinned. */
#include "vmlinux_min.h"

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>

#include "cbt_shared.h"

/* bpf_probe_read_kernel, which CO-RE reads use, is GPL-only. */
char LICENSE[] SEC("license") = "Dual BSD/GPL";

#if defined(CBT_LEGACY) && !defined(CBT_BOUNDED)
#error "CBT_LEGACY builds on CBT_BOUNDED"
#endif

#if defined(CBT_LEGACY)
#define PROG(name) cbtl_##name
#elif defined(CBT_BOUNDED)
#define PROG(name) cbtb_##name
#else
#define PROG(name) cbt_##name
#endif

_Static_assert(sizeof(struct cbt_slot) == 256, "struct cbt_slot layout is shared with the agent");

/* Template of the per-disk bitmaps: the agent creates one per disk with the disk's own size;
 * BPF_F_INNER_MAP lets inner maps of different sizes share the template. */
struct cbt_bitmap {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(map_flags, BPF_F_MMAPABLE | BPF_F_INNER_MAP);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, __u64);
};

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
  __uint(max_entries, CBT_MAX_DEVICES);
  __type(key, __u32);
  __array(values, struct cbt_bitmap);
} cbt_bitmaps SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(map_flags, BPF_F_MMAPABLE);
  __uint(max_entries, CBT_MAX_DEVICES);
  __type(key, __u32);
  __type(value, struct cbt_slot);
} cbt_devices SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, CBT_MAX_DEVICES);
  __type(key, __u32);   /* whole-disk dev_t */
  __type(value, __u32); /* slot */
} cbt_devmap SEC(".maps");

/* Bio-based disks only. Preallocated (the default): an insert never allocates memory in the I/O
 * path, and a full table is counted as a loss instead of silently evicting a record (as LRU would). */
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, CBT_INFLIGHT_MAX);
  __type(key, __u64);   /* address of the struct bio */
  __type(value, struct cbt_inflight);
} cbt_inflight SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, CBT_MAX_DEVICES);
  __type(key, __u32);
  __type(value, struct cbt_counters);
} cbt_counters SEC(".maps");

/* One level's run of bits [first_bit, last_bit] to set, word by word, in buffer words at base. */
struct mark_range {
  __u32 slot;
  __u32 failed;
  __u32 changed;          /* some word got a new bit */
  __u32 pad;
  __u64 base;
  __u64 first_bit;
  __u64 last_bit;
};

/* Sets mask's bits in *word, another CPU may be setting bits of it at once. Before 5.12 there is no
 * atomic OR (only an add, which would carry into the next bit when two CPUs add one bit): every byte
 * mask touches is stored whole as 0xFF, a store that cannot undo another's since every store only
 * sets. A byte partly in mask marks its other blocks too: a run is widened to 8-block boundaries. */
static __always_inline void set_bits(__u64 *word, __u64 mask)
{
#ifdef CBT_LEGACY
  if (mask == ~0ULL) {
    *(volatile __u64 *)word = ~0ULL;
    return;
  }
  volatile __u8 *bytes = (volatile __u8 *)word;
#pragma unroll
  for (int i = 0; i < 8; i++)
    if ((mask >> (8 * i)) & 0xFF)
      bytes[i] = 0xFF;
#else
  __sync_fetch_and_or(word, mask);
#endif
}

static long mark_word(__u32 i, void *data)
{
  struct mark_range *r = data;
  __u64 first_word = r->first_bit >> CBT_WORD_SHIFT;
  __u64 last_word = r->last_bit >> CBT_WORD_SHIFT;
  __u64 w = first_word + i;
  __u64 mask = ~0ULL;

  if (w > last_word)
    return 1;
  if (w == first_word)
    mask &= ~0ULL << (r->first_bit & 63);
  if (w == last_word)
    mask &= ~0ULL >> (63 - (r->last_bit & 63));
  void *bitmap = bpf_map_lookup_elem(&cbt_bitmaps, &r->slot);
  if (!bitmap) {
    r->failed = 1;
    return 1;
  }
  __u32 key = (__u32)(r->base + w);
  __u64 *word = bpf_map_lookup_elem(bitmap, &key);
  if (!word) {
    r->failed = 1;
    return 1;
  }
  /* Test first: rewriting hot blocks then costs a load, not a locked read-modify-write. */
  if ((*word & mask) != mask) {
    set_bits(word, mask);
    r->changed = 1;
  }
  return 0;
}

#ifdef CBT_BOUNDED
/* Words one chunk call marks, and chunks per level: a bio is < 4 GiB, i.e. at most 2^14 + 1 level-0
 * words at the 4 KiB minimum granularity (257 chunks). Old verifiers walk every iteration of a
 * bounded loop and keep one pending state per undecided branch (8192 at most); a global function is
 * verified once, so the chunk and the level loops cost 64 + 257 iterations, not their product. The
 * sizes are measured: 6.1's verifier processes 27,000 instructions for a 64-word chunk but 246,000
 * for a 256-word one (docs/architecture.md, "Kernel versions"). */
#define CBT_CHUNK_WORDS 64
#define CBT_MAX_CHUNKS 257

/* mark_word over words [0, CBT_CHUNK_WORDS) of range r; what a bpf_loop would do. Global: verified once. */
__noinline int cbt_mark_chunk(__u32 slot, __u64 base, __u64 first_bit, __u64 last_bit)
{
  struct mark_range r = {.slot = slot, .base = base, .first_bit = first_bit, .last_bit = last_bit};
  for (__u32 i = 0; i < CBT_CHUNK_WORDS; i++)
    if (mark_word(i, &r))
      break;
  return r.failed ? -1 : (int)r.changed;
}

/* Sets bits [first, last] of one level of a buffer (words from base), chunk by chunk. -1 if the
 * bitmap is missing or the range too long, else whether a bit was new. Global: verified once. */
__noinline int cbt_mark_level(__u32 slot, __u64 base, __u64 first, __u64 last)
{
  __u64 last_word = last >> CBT_WORD_SHIFT;
  if (last_word - (first >> CBT_WORD_SHIFT) + 1 > (__u64)CBT_CHUNK_WORDS * CBT_MAX_CHUNKS)
    return -1;
  int changed = 0;
  for (__u32 c = 0; c < CBT_MAX_CHUNKS; c++) {
    __u64 chunk_first_word = (first >> CBT_WORD_SHIFT) + (__u64)c * CBT_CHUNK_WORDS;
    if (chunk_first_word > last_word)
      break;
    __u64 chunk_first = c ? chunk_first_word << CBT_WORD_SHIFT : first;
    __u64 chunk_last = ((chunk_first_word + CBT_CHUNK_WORDS) << CBT_WORD_SHIFT) - 1;
    int r = cbt_mark_chunk(slot, base, chunk_first, chunk_last < last ? chunk_last : last);
    if (r < 0)
      return -1;
    changed |= r;
  }
  return changed;
}
#endif

/* Sets mask in word key of a bitmap, testing first: rewriting hot blocks then costs a load, not a
 * locked read-modify-write. -1 if the word is missing, else whether a bit was new. */
static __always_inline int set_word(void *bitmap, __u32 key, __u64 mask)
{
  __u64 *word = bpf_map_lookup_elem(bitmap, &key);
  if (!word)
    return -1;
  if ((*word & mask) == mask)
    return 0;
  set_bits(word, mask);
  return 1;
}

/* Bits [first, last] of one word (first >> 6 == last >> 6). */
static __always_inline __u64 word_mask(__u64 first, __u64 last)
{
  return (~0ULL << (first & 63)) & (~0ULL >> (63 - (last & 63)));
}

/* Sets blocks [first, last] in buffer `buffer` of the slot's bitmap, level 0 first, then the
 * summary levels. Returns -1 if the bitmap is missing or too small, else whether a bit was new.
 * The common case, a run inside one level-0 word (a write of up to 64 blocks that does not cross a
 * 256 KiB boundary at 4 KiB), is one word per level, set in straight-line code with the bitmap
 * looked up once (bitmap: the slot's, NULL if missing); longer runs loop. */
static __always_inline int mark_blocks(__u32 slot, struct cbt_slot *s, void *bitmap, __u64 buffer, __u64 first,
                                       __u64 last)
{
  __u64 buffer_base = buffer * s->buffer_words;
  __u64 w0 = first >> CBT_WORD_SHIFT;

  if (w0 == last >> CBT_WORD_SHIFT) {
    if (!bitmap)
      return -1;
    int changed = set_word(bitmap, (__u32)(buffer_base + w0), word_mask(first, last));
    if (changed < 0 ||
        set_word(bitmap, (__u32)(buffer_base + s->l1_offset + (w0 >> CBT_WORD_SHIFT)), 1ULL << (w0 & 63)) < 0 ||
        set_word(bitmap, (__u32)(buffer_base + s->l2_offset + (w0 >> (2 * CBT_WORD_SHIFT))),
                 1ULL << ((w0 >> CBT_WORD_SHIFT) & 63)) < 0)
      return -1;
    return changed;
  }

  __u64 level_base[3] = {buffer_base, buffer_base + s->l1_offset, buffer_base + s->l2_offset};
  int changed = 0;
  for (int level = 0; level < 3; level++) {
#ifdef CBT_BOUNDED
    int r = cbt_mark_level(slot, level_base[level], first, last);
    if (r < 0)
      return -1;
    if (level == 0)
      changed = r;
#else
    __u64 words = (last >> CBT_WORD_SHIFT) - (first >> CBT_WORD_SHIFT) + 1;
    struct mark_range r = {.slot = slot, .base = level_base[level], .first_bit = first, .last_bit = last};
    if (words > (1u << 23)) /* bpf_loop's limit; a bio is < 4 GiB, i.e. <= 2^14 words at 4 KiB */
      return -1;
    bpf_loop((__u32)words, mark_word, &r, 0);
    if (r.failed)
      return -1;
    if (level == 0)
      changed = r.changed;
#endif
    first >>= CBT_WORD_SHIFT;
    last >>= CBT_WORD_SHIFT;
  }
  return changed;
}

#ifndef CBT_LEGACY
/* Level-0 words of one buffer whose bits [first_bit, last_bit] are checked (all set?). */
struct check_range {
  __u32 slot;
  __u32 missing;          /* some bit is clear, or the bitmap is missing */
  __u64 base;
  __u64 first_bit;
  __u64 last_bit;
};

static long check_word(__u32 i, void *data)
{
  struct check_range *r = data;
  __u64 first_word = r->first_bit >> CBT_WORD_SHIFT;
  __u64 last_word = r->last_bit >> CBT_WORD_SHIFT;
  __u64 w = first_word + i;
  __u64 mask = ~0ULL;

  if (w > last_word)
    return 1;
  if (w == first_word)
    mask &= ~0ULL << (r->first_bit & 63);
  if (w == last_word)
    mask &= ~0ULL >> (63 - (r->last_bit & 63));
  void *bitmap = bpf_map_lookup_elem(&cbt_bitmaps, &r->slot);
  __u32 key = (__u32)(r->base + w);
  __u64 *word = bitmap ? bpf_map_lookup_elem(bitmap, &key) : 0;
  if (!word || (*word & mask) != mask) {
    r->missing = 1;
    return 1;
  }
  return 0;
}
#endif

#define READ_ONCE_U64(x) (*(volatile __u64 *)&(x))
#define READ_ONCE_U32(x) (*(volatile __u32 *)&(x))

/* Enters the live generation (see the flip protocol in cbt_shared.h); the x86-64 JIT emits every
 * BPF atomic as a lock-prefixed instruction, i.e. a full barrier. Returns the buffer index, or -1
 * when flips kept racing us (counted as a loss by the caller). */
static __always_inline int enter_generation(struct cbt_slot *s, __u64 *seq_out)
{
  for (int i = 0; i < CBT_FLIP_RETRIES; i++) {
    __u64 seq = READ_ONCE_U64(s->gen_seq);
    __u64 buffer = seq & 1;
    __sync_fetch_and_add(&s->active[buffer], 1);
    if (READ_ONCE_U64(s->gen_seq) == seq) {
      *seq_out = seq;
      return (int)buffer;
    }
    __sync_fetch_and_add(&s->active[buffer], -1);
  }
  return -1;
}

static __always_inline void leave_generation(struct cbt_slot *s, int buffer)
{
  __sync_fetch_and_add(&s->active[buffer & 1], -1);
}

static __always_inline int is_write_op(__u32 op)
{
  return op == CBT_REQ_OP_WRITE || op == CBT_REQ_OP_DISCARD || op == CBT_REQ_OP_SECURE_ERASE ||
         op == CBT_REQ_OP_WRITE_ZEROES;
}

/* Marks bytes [sector * 512, + bytes) of the disk dev (tracked in slot) in its live generation.
 * Returns -1 if the slot is not dev's (nothing marked), else (generation << 1) | (a bit was new).
 * Every way of not marking a byte that was asked for is counted as a loss. A global function: the
 * verifier checks it once, not once per caller and loop iteration. */
__noinline __s64 cbt_mark_live(__u32 slot, __u32 dev, __u64 sector, __u64 bytes)
{
  struct cbt_slot *s = bpf_map_lookup_elem(&cbt_devices, &slot);
  if (!s || !bytes)
    return -1;
  /* Fast path, no atomics: when every block is already marked in the live buffer and that buffer is
   * still live after the check, a flip (hence the drain and its read of these blocks) comes after
   * this point. Live bits are never cleared (only a frozen buffer is). Summary bits of a marker still
   * in its generation are completed before any flip finishes waiting for it. x86-64 keeps the loads
   * (generation, word, generation) in order. The common case: a completion in the generation of its submission mark. */
  __u64 seen = READ_ONCE_U64(s->gen_seq);
  void *bitmap = bpf_map_lookup_elem(&cbt_bitmaps, &slot);
  if (s->dev == dev && bitmap) {
    __u32 shift = s->block_shift & 63;
    __u64 first = (sector << 9) >> shift;
    __u64 last = ((sector << 9) + bytes - 1) >> shift;
    __u64 words = (last >> CBT_WORD_SHIFT) - (first >> CBT_WORD_SHIFT) + 1;
    __u64 base = (seen & 1) * s->buffer_words;
    if (last < s->nr_blocks && words == 1) {
      /* One word: one lookup and one load, no loop. */
      __u32 key = (__u32)(base + (first >> CBT_WORD_SHIFT));
      __u64 *word = bpf_map_lookup_elem(bitmap, &key);
      __u64 mask = word_mask(first, last);
      if (word && (*word & mask) == mask && READ_ONCE_U64(s->gen_seq) == seen)
        return (__s64)(seen << 1);
    }
#ifndef CBT_LEGACY /* 5.10 allows 512 bytes of stack for a chain of calls: legacy leaves this out */
    else if (last < s->nr_blocks && words <= 4) {
      struct check_range r = {.slot = slot, .base = base, .first_bit = first, .last_bit = last};
#ifdef CBT_BOUNDED
      for (__u32 i = 0; i < 4; i++)
        if (check_word(i, &r))
          break;
#else
      bpf_loop((__u32)words, check_word, &r, 0);
#endif
      if (!r.missing && READ_ONCE_U64(s->gen_seq) == seen)
        return (__s64)(seen << 1);
    }
#endif
  }

  __u64 seq = 0;
  int buffer = enter_generation(s, &seq);
  if (buffer < 0) {
    __sync_fetch_and_add(&s->lost_retry_exhausted, 1);
    return -1;
  }
  __s64 result = -1;
  if (s->dev == dev) { /* not a slot being torn down or reused */
    __u32 shift = s->block_shift & 63;
    __u64 start = sector << 9;
    __u64 first = start >> shift;
    __u64 last = (start + bytes - 1) >> shift;
    __u64 nr_blocks = s->nr_blocks;
    int changed = 0;
    if (last >= nr_blocks) {
      __sync_fetch_and_add(&s->lost_out_of_range, 1);
      last = nr_blocks - 1;
    }
    if (first <= last) {
      /* Looked up again inside the generation, as the loops do: a slot detached and attached again
       * since the fast path's lookup has another bitmap. */
      bitmap = bpf_map_lookup_elem(&cbt_bitmaps, &slot);
      changed = mark_blocks(slot, s, bitmap, (__u64)buffer, first, last);
      if (changed < 0) {
        __sync_fetch_and_add(&s->lost_bitmap_missing, 1);
        changed = 0;
      }
    }
    result = (__s64)((seq << 1) | (__u64)changed);
  }
  leave_generation(s, buffer);
  return result;
}

/*
 * Reading kernel memory: every bpf_probe_read_kernel costs about 20 ns, so the head of a struct
 * bio (or request) is copied once and its fields are picked from the copy at their CO-RE-relocated
 * offsets. Should a future kernel move a field out of the copied head, the field is read on its own.
 */
#ifdef CBT_LEGACY
/* Enough for a bio's fields (the last, bi_iter.bi_size, ends at byte 44 from 5.10 to 6.18), not for a
 * request's (read field by field): 5.10 allows 512 bytes of stack for a chain of calls. */
#define HEAD_BYTES 48
#else
#define HEAD_BYTES 64
#endif

struct bio_fields {
  __u64 next;             /* struct bio * of the next bio in a request */
  __u64 bdev;             /* struct block_device *; before 5.12 (legacy only) bio->bi_disk, a struct gendisk * */
  __u64 sector;
  __u32 opf;
  __u32 size;
};

#define FITS(offset, size) ((offset) + (size) <= HEAD_BYTES && (offset) % (size) == 0)
#define HEAD_FIELD(head, offset, type) (*(type *)((char *)(head) + (offset)))

static __always_inline int read_bio(struct bio *bio, struct bio_fields *f)
{
  __u64 head[HEAD_BYTES / 8];
  __u32 o_next = bpf_core_field_offset(struct bio, bi_next);
#ifdef CBT_LEGACY
  __u32 o_bdev;
  if (bpf_core_field_exists(struct bio, bi_bdev))
    o_bdev = bpf_core_field_offset(struct bio, bi_bdev);
  else
    o_bdev = bpf_core_field_offset(struct bio___old, bi_disk);
#else
  __u32 o_bdev = bpf_core_field_offset(struct bio, bi_bdev);
#endif
  __u32 o_opf = bpf_core_field_offset(struct bio, bi_opf);
  __u32 o_sector = bpf_core_field_offset(((struct bio *)0)->bi_iter.bi_sector);
  __u32 o_size = bpf_core_field_offset(((struct bio *)0)->bi_iter.bi_size);

  if (FITS(o_next, 8) && FITS(o_bdev, 8) && FITS(o_opf, 4) && FITS(o_sector, 8) && FITS(o_size, 4)) {
    if (bpf_probe_read_kernel(head, sizeof head, bio))
      return -1;
    f->next = HEAD_FIELD(head, o_next, __u64);
    f->bdev = HEAD_FIELD(head, o_bdev, __u64);
    f->opf = HEAD_FIELD(head, o_opf, __u32);
    f->sector = HEAD_FIELD(head, o_sector, __u64);
    f->size = HEAD_FIELD(head, o_size, __u32);
    return 0;
  }
  f->next = (__u64)BPF_CORE_READ(bio, bi_next);
  if (bpf_probe_read_kernel(&f->bdev, sizeof f->bdev, (char *)bio + o_bdev))
    return -1;
  f->opf = BPF_CORE_READ(bio, bi_opf);
  f->sector = BPF_CORE_READ(bio, bi_iter.bi_sector);
  f->size = BPF_CORE_READ(bio, bi_iter.bi_size);
  return 0;
}

/* The whole disk's dev_t (kernel encoding) of a block_device: through a partition, bdev is the
 * partition, its bd_disk the whole disk, whose dev_t is (major, first_minor). Before 5.12 a bio names
 * its disk itself (read_bio's bdev is that gendisk). */
static __always_inline __u32 disk_dev(__u64 bdev)
{
#ifdef CBT_LEGACY
  struct gendisk *disk = bpf_core_field_exists(struct bio, bi_bdev)
                           ? BPF_CORE_READ((struct block_device *)bdev, bd_disk)
                           : (struct gendisk *)bdev;
#else
  struct gendisk *disk = BPF_CORE_READ((struct block_device *)bdev, bd_disk);
#endif
  __u32 o_major = bpf_core_field_offset(struct gendisk, major);
  __u32 o_minor = bpf_core_field_offset(struct gendisk, first_minor);
  if (!disk)
    return 0;
  if (o_minor == o_major + 4) { /* adjacent (every kernel so far): one 8-byte read */
    int pair[2];
    if (bpf_probe_read_kernel(pair, sizeof pair, (char *)disk + o_major))
      return 0;
    return ((__u32)pair[0] << 20) | (__u32)pair[1];
  }
  return ((__u32)BPF_CORE_READ(disk, major) << 20) | (__u32)BPF_CORE_READ(disk, first_minor);
}

/* The tracked slot of a whole disk, NULL if it is not tracked. A hash lookup costs about 17 ns and
 * touches lines of its own; the disk's home slot (cbt_home_slot), where the agent attaches it when
 * that slot is free, is an inlined array lookup of the slot's first line, which the marking reads
 * anyway. It is believed only while it tracks that disk: a disk is tracked in one slot at most, so
 * the answer is the hash map's. */
static __always_inline struct cbt_slot *slot_of(__u32 dev, __u32 *slot_out)
{
  __u32 home = cbt_home_slot(dev);
  struct cbt_slot *s = bpf_map_lookup_elem(&cbt_devices, &home);
  if (s && dev && READ_ONCE_U32(s->dev) == dev) {
    *slot_out = home;
    return s;
  }
  __u32 *slot_ptr = bpf_map_lookup_elem(&cbt_devmap, &dev);
  if (!slot_ptr)
    return NULL;
  __u32 slot = *slot_ptr;
  *slot_out = slot;
  return bpf_map_lookup_elem(&cbt_devices, &slot);
}

#ifndef CBT_LEGACY /* BTF-typed tracepoints of 5.12+ kernels (legacy loads the raw ones) */
/* Reading a bio's fields and its disk: with probe reads (raw tracepoints, any kernel with a BTF
 * for CO-RE, even a file given with MOBILITY_AGENT_BTF), or as plain loads where the kernel types
 * the tracepoint's arguments itself (tp_btf: the verifier turns them into faulting loads, about 1
 * ns each instead of 10-20 for a probe read). The agent loads the tp_btf programs when the kernel
 * has its own BTF, the raw tracepoint ones otherwise (docs/architecture.md). */
static __always_inline void read_bio_btf(struct bio *bio, struct bio_fields *f)
{
  f->next = (__u64)bio->bi_next;
  f->bdev = (__u64)bio->bi_bdev;
  f->opf = bio->bi_opf;
  f->sector = bio->bi_iter.bi_sector;
  f->size = bio->bi_iter.bi_size;
}

static __always_inline __u32 disk_dev_btf(struct bio *bio)
{
  struct gendisk *disk = bio->bi_bdev->bd_disk;
  if (!disk)
    return 0;
  return ((__u32)disk->major << 20) | (__u32)disk->first_minor;
}
#endif

/* block_bio_queue once the bio's fields are read: bio_key is its address, dev its whole disk. */
static __always_inline int on_bio_queue(__u64 bio_key, struct bio_fields *f, __u32 dev)
{
  __u32 op = f->opf & CBT_REQ_OP_MASK, slot = 0;
  struct cbt_slot *s = slot_of(dev, &slot);
  if (!s)
    return 0;
  struct cbt_counters *counters = bpf_map_lookup_elem(&cbt_counters, &slot);
  if (!counters)
    return 0;
  if (f->size == 0) { /* a flush carried by an empty write: no data changes */
    counters->empty_ignored++;
    return 0;
  }
  /* Whole-disk absolute already: blk_partition_remap ran before this tracepoint. */
  __s64 marked = cbt_mark_live(slot, dev, f->sector, f->size);
  if (marked < 0)
    return 0;

  if (s->flags & CBT_SLOT_BIO_BASED) {
    struct cbt_inflight record = {
      .dev = dev, .slot = slot, .sector = f->sector, .bytes = f->size, .gen_seq = (__u64)marked >> 1,
    };
    if (bpf_map_update_elem(&cbt_inflight, &bio_key, &record, BPF_ANY))
      __sync_fetch_and_add(&s->lost_inflight_full, 1);
    else
      counters->inflight_records++;
  }
  if (op == CBT_REQ_OP_WRITE)
    counters->writes++;
  else if (op == CBT_REQ_OP_DISCARD)
    counters->discards++;
  else if (op == CBT_REQ_OP_SECURE_ERASE)
    counters->secure_erases++;
  else
    counters->write_zeroes++;
  return 0;
}

static __always_inline int on_raw_bio_queue(struct bio *bio)
{
  struct bio_fields f;
  if (read_bio(bio, &f) || !is_write_op(f.opf & CBT_REQ_OP_MASK))
    return 0;
  return on_bio_queue((__u64)bio, &f, disk_dev(f.bdev));
}

SEC("raw_tp/block_bio_queue")
int PROG(bio_queue)(struct bpf_raw_tracepoint_args *ctx) /* (struct bio *bio), 5.11+ */
{
  return on_raw_bio_queue((struct bio *)ctx->args[0]);
}

#ifdef CBT_LEGACY
/* Before 5.11 the tracepoint's first argument is the request_queue; the agent loads the program
 * whose arguments the kernel's BTF names. */
SEC("raw_tp/block_bio_queue")
int PROG(bio_queue_q)(struct bpf_raw_tracepoint_args *ctx) /* (struct request_queue *q, struct bio *bio) */
{
  return on_raw_bio_queue((struct bio *)ctx->args[1]);
}
#else
SEC("tp_btf/block_bio_queue")
int PROG(bioq_btf)(__u64 *ctx) /* (struct bio *bio) */
{
  struct bio *bio = (struct bio *)ctx[0];
  struct bio_fields f;
  read_bio_btf(bio, &f);
  if (!is_write_op(f.opf & CBT_REQ_OP_MASK))
    return 0;
  return on_bio_queue((__u64)bio, &f, disk_dev_btf(bio));
}
#endif

/* Walk of a completed request's bios: each bio still carries its sector and size here. */
struct request_walk {
  __u64 bio;              /* struct bio *, read with probe reads only */
  __u32 remaining;        /* bytes of this completion not walked yet (block_rq_complete's nr_bytes) */
  __u32 dev;
  __u32 slot;
  __u32 new_bits;         /* bios whose completion mark set a bit (a flip took the submission mark) */
};

static long complete_bio(__u32 i, void *data)
{
  struct request_walk *w = data;
  struct bio_fields f;
  if (!w->bio || !w->remaining || read_bio((struct bio *)w->bio, &f))
    return 1;
  /* A partial completion covers the first `remaining` bytes only; the rest of that bio is marked
   * when its own completion comes (its iterator is advanced by then). */
  __u64 done = f.size < w->remaining ? f.size : w->remaining;
  __s64 marked = done ? cbt_mark_live(w->slot, w->dev, f.sector, done) : -1;
  if (marked > 0 && (marked & 1))
    w->new_bits++;
  w->remaining -= done;
  w->bio = f.next;
  return 0;
}

#ifdef CBT_BOUNDED
/* Bios one call of cbt_walk_bios walks: as with the chunks of mark_blocks, a global function keeps
 * the verifier's work at 32 + 32 iterations for the 1024 bios of a request. */
#define CBT_WALK_BATCH 32

/* complete_bio for the next CBT_WALK_BATCH bios of w; 1 when the walk is over. */
static __always_inline int walk_batch(struct request_walk *w)
{
  for (__u32 i = 0; i < CBT_WALK_BATCH; i++)
    if (complete_bio(i, w))
      return 1;
  return 0;
}
#endif

#ifdef CBT_LEGACY
/* Before 5.12 a global function takes scalars only: a walk's state lives in a per-CPU array, one
 * entry per nesting level (a completion in an interrupt may run inside another on the same CPU);
 * the entry after the last counts the levels in use, in its `remaining`. A plain increment is
 * enough: whatever interrupts it has put the count back before it resumes. */
#define CBT_WALK_LEVELS 4
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, CBT_WALK_LEVELS + 1);
  __type(key, __u32);
  __type(value, struct request_walk);
} cbt_walks SEC(".maps");

/* complete_bio for the next CBT_WALK_BATCH bios of the walk at nesting level `level`; 1 when the
 * walk is over. */
__noinline int cbt_walk_bios(__u32 level)
{
  struct request_walk *w = bpf_map_lookup_elem(&cbt_walks, &level);
  return w ? walk_batch(w) : 1;
}

/* cbt_walk_bios over the rest of w's bios, at the next free level; w is left as the walk left it
 * (with its bio and remaining, if no level was free). */
static __always_inline void walk_request(struct request_walk *w)
{
  __u32 top = CBT_WALK_LEVELS;
  struct request_walk *levels = bpf_map_lookup_elem(&cbt_walks, &top);
  if (!levels)
    return;
  __u32 level = (__u32)levels->remaining;
  struct request_walk *shared = level < CBT_WALK_LEVELS ? bpf_map_lookup_elem(&cbt_walks, &level) : NULL;
  if (!shared)
    return;
  levels->remaining = level + 1;
  *shared = *w;
  for (__u32 i = 0; i < CBT_RQ_MAX_BIOS / CBT_WALK_BATCH; i++)
    if (cbt_walk_bios(level))
      break;
  *w = *shared;
  levels->remaining = level;
}
#elif defined(CBT_BOUNDED)
/* complete_bio for the next CBT_WALK_BATCH bios of w; 1 when the walk is over. A pointer argument of
 * a global function (5.12+) is checked as a possibly-NULL pointer to memory of its type's size. */
__noinline int cbt_walk_bios(struct request_walk *w)
{
  return w ? walk_batch(w) : 1;
}
#else
/* complete_bio for the rest of w's bios. Global, so verified once with w unknown: inline, 6.18's
 * verifier explores the callback once per distinct state of the caller (over a million
 * instructions once the first bio is handled before the loop). bpf_loop wants its context on the
 * stack, hence the copy. */
__noinline int cbt_walk_bios(struct request_walk *w)
{
  if (!w)
    return 1;
  struct request_walk local = *w;
  bpf_loop(CBT_RQ_MAX_BIOS, complete_bio, &local, 0);
  *w = local;
  return 1;
}
#endif

/* block_rq_complete once the request's first bio is read (f; dev its whole disk). */
static __always_inline int on_rq_complete(__u32 nr_bytes, struct bio_fields *f, __u32 dev)
{
  struct request_walk w = {.remaining = nr_bytes, .dev = dev};
  struct cbt_slot *s = slot_of(dev, &w.slot);
  if (!s)
    return 0;
  __u32 key = w.slot;
  struct cbt_counters *counters = bpf_map_lookup_elem(&cbt_counters, &key);
  /* Before the kernel counts them: the agent's check relies on that order. Atomic although per
   * CPU: where a kernel lets this program run in an interrupt on top of its own run in a task on
   * the same CPU, a lost add would raise a false completion-missed. */
  if (counters)
    __sync_fetch_and_add(&counters->completed_sectors, nr_bytes >> 9);
  /* The first bio inline: most requests carry one. */
  __u64 done = f->size < w.remaining ? f->size : w.remaining;
  __s64 marked = done ? cbt_mark_live(w.slot, w.dev, f->sector, done) : -1;
  if (marked > 0 && (marked & 1))
    w.new_bits++;
  w.remaining -= done;
  w.bio = f->next;
  if (w.bio && w.remaining) {
#if defined(CBT_LEGACY)
    walk_request(&w);
#elif defined(CBT_BOUNDED)
    for (__u32 i = 0; i < CBT_RQ_MAX_BIOS / CBT_WALK_BATCH; i++)
      if (cbt_walk_bios(&w))
        break;
#else
    cbt_walk_bios(&w);
#endif
    if (w.bio && w.remaining)
      __sync_fetch_and_add(&s->lost_bitmap_missing, 1);
  }
  if (w.new_bits && counters)
    counters->completion_marks += w.new_bits;
  return 0;
}

/* Request-based disks (blk-mq): called before the bios are advanced and ended, after the device
 * wrote the data (block_bio_complete does not fire for them: blk_update_request clears the flag). */
SEC("raw_tp/block_rq_complete")
int PROG(rq_complete)(struct bpf_raw_tracepoint_args *ctx)
{
  struct request *rq = (struct request *)ctx->args[0]; /* (rq, blk_status_t error, nr_bytes) */
  __u32 nr_bytes = (__u32)ctx->args[2];
  __u32 o_flags = bpf_core_field_offset(struct request, cmd_flags);
  __u32 o_bio = bpf_core_field_offset(struct request, bio);
  __u32 op;
  __u64 bio;
  if (FITS(o_flags, 4) && FITS(o_bio, 8)) {
    __u64 head[HEAD_BYTES / 8];
    if (bpf_probe_read_kernel(head, sizeof head, rq))
      return 0;
    op = HEAD_FIELD(head, o_flags, __u32) & CBT_REQ_OP_MASK;
    bio = HEAD_FIELD(head, o_bio, __u64);
  } else {
    op = BPF_CORE_READ(rq, cmd_flags) & CBT_REQ_OP_MASK;
    bio = (__u64)BPF_CORE_READ(rq, bio);
  }
  if (!is_write_op(op) || nr_bytes == 0 || !bio)
    return 0;
  /* The first bio's head also names the disk. */
  struct bio_fields f;
  if (read_bio((struct bio *)bio, &f))
    return 0;
  return on_rq_complete(nr_bytes, &f, disk_dev(f.bdev));
}

#ifndef CBT_LEGACY
SEC("tp_btf/block_rq_complete")
int PROG(rqc_btf)(__u64 *ctx) /* (struct request *rq, blk_status_t error, unsigned int nr_bytes) */
{
  struct request *rq = (struct request *)ctx[0];
  __u32 nr_bytes = (__u32)ctx[2];
  struct bio *bio = rq->bio;
  if (!is_write_op(rq->cmd_flags & CBT_REQ_OP_MASK) || nr_bytes == 0 || !bio)
    return 0;
  struct bio_fields f;
  read_bio_btf(bio, &f);
  return on_rq_complete(nr_bytes, &f, disk_dev_btf(bio));
}
#endif

/* Bio-based disks (device mapper, md): the bio's iterator may have moved, so the submission
 * recorded the range. Marked again only if a flip happened since the submission mark. */
SEC("raw_tp/block_bio_complete")
int PROG(bio_complete)(struct bpf_raw_tracepoint_args *ctx)
{
  __u64 key = ctx->args[1]; /* (struct request_queue *q, struct bio *bio) */
  struct cbt_inflight *found = bpf_map_lookup_elem(&cbt_inflight, &key);
  if (!found)
    return 0;
  struct cbt_inflight record = *found;
  bpf_map_delete_elem(&cbt_inflight, &key);

  __u32 slot = record.slot;
  struct cbt_slot *s = bpf_map_lookup_elem(&cbt_devices, &slot);
  struct cbt_counters *counters = bpf_map_lookup_elem(&cbt_counters, &slot);
  if (!s || !counters)
    return 0;
  if (READ_ONCE_U64(s->gen_seq) == record.gen_seq)
    return 0; /* no flip since the submission mark: those bits are still live */
  __s64 marked = cbt_mark_live(slot, record.dev, record.sector, record.bytes);
  if (marked > 0 && (marked & 1))
    counters->completion_marks++;
  return 0;
}
