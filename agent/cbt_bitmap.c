/* cbt_bitmap.c - the tracker's three-level bitmap from user space: the same marking rule as
 * driver/cbt.bpf.c, plus the O(dirty) walks that drain, fold, clear and count a buffer. */
#include "cbt_bitmap.h"

#include <stddef.h>

#include "cbt_shared.h"

#define NONE UINT64_MAX

/* The kernel marks a live buffer concurrently: every access is atomic. Relaxed is enough for loads
 * of a frozen buffer (the flip's exchange and the acquire load of the active count order them). */
static inline uint64_t load_word(const uint64_t *w)
{
  return __atomic_load_n(w, __ATOMIC_RELAXED);
}

static inline void store_word(uint64_t *w, uint64_t v)
{
  __atomic_store_n(w, v, __ATOMIC_RELAXED);
}

static inline void or_word(uint64_t *w, uint64_t mask)
{
  if ((load_word(w) & mask) != mask)
    __atomic_fetch_or(w, mask, __ATOMIC_SEQ_CST);
}

void cbt_layout_init(struct cbt_layout *layout, uint64_t nr_blocks)
{
  layout->nr_blocks = nr_blocks;
  layout->l0_words = (nr_blocks + CBT_WORD_BITS - 1) / CBT_WORD_BITS;
  layout->l1_words = (layout->l0_words + CBT_WORD_BITS - 1) / CBT_WORD_BITS;
  layout->l2_words = (layout->l1_words + CBT_WORD_BITS - 1) / CBT_WORD_BITS;
  layout->l1_offset = layout->l0_words;
  layout->l2_offset = layout->l0_words + layout->l1_words;
  layout->buffer_words = layout->l0_words + layout->l1_words + layout->l2_words;
}

static uint64_t level_offset(const struct cbt_layout *layout, int level)
{
  return level == 0 ? 0 : level == 1 ? layout->l1_offset : layout->l2_offset;
}

static uint64_t level_words(const struct cbt_layout *layout, int level)
{
  return level == 0 ? layout->l0_words : level == 1 ? layout->l1_words : layout->l2_words;
}

static void set_bits(uint64_t *words, uint64_t first, uint64_t last)
{
  uint64_t first_word = first >> CBT_WORD_SHIFT, last_word = last >> CBT_WORD_SHIFT;
  for (uint64_t w = first_word; w <= last_word; w++) {
    uint64_t mask = ~0ULL;
    if (w == first_word)
      mask &= ~0ULL << (first & 63);
    if (w == last_word)
      mask &= ~0ULL >> (63 - (last & 63));
    or_word(&words[w], mask);
  }
}

void cbt_bitmap_set(uint64_t *buffer, const struct cbt_layout *layout, uint64_t first, uint64_t last)
{
  if (first > last || last >= layout->nr_blocks)
    return;
  for (int level = 0; level < 3; level++) {
    set_bits(buffer + level_offset(layout, level), first, last);
    first >>= CBT_WORD_SHIFT;
    last >>= CBT_WORD_SHIFT;
  }
}

/* First set bit >= bit at this level, using the level above to skip words that are all clear. */
static uint64_t find_next(const uint64_t *buffer, const struct cbt_layout *layout, int level, uint64_t bit)
{
  const uint64_t *words = buffer + level_offset(layout, level);
  uint64_t nwords = level_words(layout, level);

  while ((bit >> CBT_WORD_SHIFT) < nwords) {
    uint64_t w = bit >> CBT_WORD_SHIFT;
    uint64_t m = load_word(&words[w]) & (~0ULL << (bit & 63));
    if (m)
      return (w << CBT_WORD_SHIFT) + (uint64_t)__builtin_ctzll(m);
    if (level == 2) {
      bit = (w + 1) << CBT_WORD_SHIFT;
      continue;
    }
    /* A summary bit may be stale (set, with its word already clear): the loop then goes on. */
    uint64_t up = find_next(buffer, layout, level + 1, w + 1);
    if (up == NONE)
      return NONE;
    bit = up << CBT_WORD_SHIFT;
  }
  return NONE;
}

uint64_t cbt_bitmap_next_set(const uint64_t *buffer, const struct cbt_layout *layout, uint64_t from)
{
  if (from >= layout->nr_blocks)
    return layout->nr_blocks;
  uint64_t found = find_next(buffer, layout, 0, from);
  return found < layout->nr_blocks ? found : layout->nr_blocks;
}

uint64_t cbt_bitmap_next_clear(const uint64_t *buffer, const struct cbt_layout *layout, uint64_t from)
{
  for (uint64_t bit = from; bit < layout->nr_blocks;) {
    uint64_t w = bit >> CBT_WORD_SHIFT;
    uint64_t m = ~load_word(&buffer[w]) & (~0ULL << (bit & 63));
    if (m) {
      uint64_t found = (w << CBT_WORD_SHIFT) + (uint64_t)__builtin_ctzll(m);
      return found < layout->nr_blocks ? found : layout->nr_blocks;
    }
    bit = (w + 1) << CBT_WORD_SHIFT;
  }
  return layout->nr_blocks;
}

/* Calls visit(ctx, level-0 word index) for each level-0 word the summaries of a (and b, if not
 * NULL) point at; with clear set, zeroes the visited words of a and its summary words. */
typedef void (*word_visitor)(void *ctx, uint64_t word_index);

static void walk(uint64_t *a, const uint64_t *b, const struct cbt_layout *layout, int clear,
                 word_visitor visit, void *ctx)
{
  uint64_t *a1 = a + layout->l1_offset, *a2 = a + layout->l2_offset;
  const uint64_t *b1 = b ? b + layout->l1_offset : NULL, *b2 = b ? b + layout->l2_offset : NULL;

  for (uint64_t i = 0; i < layout->l2_words; i++) {
    uint64_t v2 = load_word(&a2[i]) | (b2 ? load_word(&b2[i]) : 0);
    while (v2) {
      uint64_t k = (i << CBT_WORD_SHIFT) + (uint64_t)__builtin_ctzll(v2);
      v2 &= v2 - 1;
      if (k >= layout->l1_words)
        break;
      uint64_t v1 = load_word(&a1[k]) | (b1 ? load_word(&b1[k]) : 0);
      while (v1) {
        uint64_t w = (k << CBT_WORD_SHIFT) + (uint64_t)__builtin_ctzll(v1);
        v1 &= v1 - 1;
        if (w >= layout->l0_words)
          break;
        visit(ctx, w);
        if (clear)
          store_word(&a[w], 0);
      }
      if (clear)
        store_word(&a1[k], 0);
    }
    if (clear)
      store_word(&a2[i], 0);
  }
}

struct fold_ctx {
  uint64_t *dst;
  const uint64_t *src;
  const struct cbt_layout *layout;
};

static void fold_word(void *ctx, uint64_t w)
{
  struct fold_ctx *f = ctx;
  uint64_t v = load_word(&f->src[w]);
  if (!v)
    return;
  or_word(&f->dst[w], v);
  or_word(&f->dst[f->layout->l1_offset + (w >> CBT_WORD_SHIFT)], 1ULL << (w & 63));
  or_word(&f->dst[f->layout->l2_offset + (w >> (2 * CBT_WORD_SHIFT))], 1ULL << ((w >> CBT_WORD_SHIFT) & 63));
}

void cbt_bitmap_fold(uint64_t *dst, uint64_t *src, const struct cbt_layout *layout)
{
  struct fold_ctx f = {dst, src, layout};
  walk(src, NULL, layout, 1, fold_word, &f);
}

void cbt_bitmap_or(uint64_t *dst, const uint64_t *src, const struct cbt_layout *layout)
{
  struct fold_ctx f = {dst, src, layout};
  walk((uint64_t *)src, NULL, layout, 0, fold_word, &f); /* clear 0: src is only read */
}

static void visit_nothing(void *ctx, uint64_t w)
{
  (void)ctx;
  (void)w;
}

void cbt_bitmap_clear(uint64_t *buffer, const struct cbt_layout *layout)
{
  walk(buffer, NULL, layout, 1, visit_nothing, NULL);
}

struct count_ctx {
  const uint64_t *a, *b;
  const struct cbt_layout *layout;
  uint64_t blocks;
};

static void count_word(void *ctx, uint64_t w)
{
  struct count_ctx *c = ctx;
  uint64_t v = load_word(&c->a[w]) | (c->b ? load_word(&c->b[w]) : 0);
  /* The legacy tracker marks whole bytes: the last one may reach past the last block. */
  uint64_t left = c->layout->nr_blocks - (w << CBT_WORD_SHIFT); /* blocks from this word on */
  if (left < CBT_WORD_BITS)
    v &= (1ULL << left) - 1;
  c->blocks += (uint64_t)__builtin_popcountll(v);
}

uint64_t cbt_bitmap_count(const uint64_t *a, const uint64_t *b, const struct cbt_layout *layout)
{
  struct count_ctx c = {a, b, layout, 0};
  /* walk() writes only when clearing; a is not modified here. */
  walk((uint64_t *)(uintptr_t)a, b, layout, 0, count_word, &c);
  return c.blocks;
}
