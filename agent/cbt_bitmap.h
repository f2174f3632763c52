/* cbt_bitmap.h - the tracker's three-level bitmap (layout in cbt_shared.h) as seen from user space:
 * set, find, fold, clear and count over one buffer of __u64 words (agent/ internal). */
#ifndef AGENT_CBT_BITMAP_H
#define AGENT_CBT_BITMAP_H

#include <stdint.h>

/* Word counts and offsets of one buffer for a disk of nr_blocks blocks. */
struct cbt_layout {
  uint64_t nr_blocks;
  uint64_t l0_words;
  uint64_t l1_offset, l1_words;
  uint64_t l2_offset, l2_words;
  uint64_t buffer_words;  /* l0_words + l1_words + l2_words */
};

/* nr_blocks >= 1. */
void cbt_layout_init(struct cbt_layout *layout, uint64_t nr_blocks);

/* All functions take one buffer (words of length layout->buffer_words). Words are read and written
 * with atomic operations, so a live buffer may be marked by the kernel at the same time; the
 * find / count / clear functions are exact only on a frozen buffer. */

/* Marks blocks [first, last] (inclusive, last < nr_blocks), level 0 first then the summaries. */
void cbt_bitmap_set(uint64_t *buffer, const struct cbt_layout *layout, uint64_t first, uint64_t last);
/* First marked block >= from, or nr_blocks if none. Cost: O(words visited), skipping clean
 * regions through the summary levels. */
uint64_t cbt_bitmap_next_set(const uint64_t *buffer, const struct cbt_layout *layout, uint64_t from);
/* First unmarked block >= from, or nr_blocks if none. */
uint64_t cbt_bitmap_next_clear(const uint64_t *buffer, const struct cbt_layout *layout, uint64_t from);
/* ORs every mark of src into dst (dst may be live), then clears src. O(marked words of src). */
void cbt_bitmap_fold(uint64_t *dst, uint64_t *src, const struct cbt_layout *layout);
/* ORs every mark of src into dst (dst may be live); src stays as it is. O(marked words of src). */
void cbt_bitmap_or(uint64_t *dst, const uint64_t *src, const struct cbt_layout *layout);
/* Clears every word reachable from the summaries (all of them, on a frozen buffer). O(marked words). */
void cbt_bitmap_clear(uint64_t *buffer, const struct cbt_layout *layout);
/* Blocks marked in a or b (b may be NULL). O(marked words). */
uint64_t cbt_bitmap_count(const uint64_t *a, const uint64_t *b, const struct cbt_layout *layout);

#endif
