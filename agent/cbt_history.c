/* cbt_history.c - completions the kernel did not run the tracker's program for: the chunks of the
 * generations this handle committed lately, re-marked for the next drain instead of a resync. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cbt_bitmap.h"
#include "cbt_internal.h"
#include "rpl_log.h"

static uint64_t boottime_ns(void)
{
  struct timespec now;
  clock_gettime(CLOCK_BOOTTIME, &now);
  return (uint64_t)now.tv_sec * 1000000000ULL + (uint64_t)now.tv_nsec;
}

void cbt_history_forget(struct cbt *t, int slot)
{
  struct cbt_history *h = &t->history[slot];
  free(h->bits[0]);
  free(h->bits[1]);
  memset(h, 0, sizeof *h);
}

/* The history of slot's attachment, made (empty, complete from now) if it is another one's or none
 * yet; NULL without memory. */
static struct cbt_history *history_of(struct cbt *t, int slot, uint64_t complete_since_ns)
{
  struct cbt_history *h = &t->history[slot];
  const struct cbt_slot *s = &t->slots[slot];
  if (h->bits[0] && h->attach_ns == s->attach_boot_ns)
    return h;
  cbt_history_forget(t, slot);
  uint32_t shift = s->block_shift > CBT_HISTORY_CHUNK_SHIFT ? s->block_shift : CBT_HISTORY_CHUNK_SHIFT;
  uint64_t bytes = s->nr_blocks << s->block_shift;
  uint64_t chunks = (bytes + (1ULL << shift) - 1) >> shift;
  h->words = (chunks + 63) / 64;
  h->bits[0] = calloc(h->words ? h->words : 1, sizeof(uint64_t));
  h->bits[1] = calloc(h->words ? h->words : 1, sizeof(uint64_t));
  if (!h->bits[0] || !h->bits[1]) {
    cbt_history_forget(t, slot);
    return NULL;
  }
  h->attach_ns = s->attach_boot_ns;
  h->chunk_shift = shift;
  h->window_start_ns = complete_since_ns;
  h->complete_since_ns = complete_since_ns;
  return h;
}

void cbt_history_begin(struct cbt *t, int slot)
{
  cbt_history_forget(t, slot);
  if (!history_of(t, slot, t->slots[slot].attach_boot_ns))
    log_warn("no memory for the write history of slot %d: a completion the kernel skips will mean a resync", slot);
}

void cbt_history_flip(struct cbt *t, int slot, uint64_t seq)
{
  struct cbt_history *h = &t->history[slot];
  uint64_t now = boottime_ns();
  if (h->bits[0] && h->attach_ns == t->slots[slot].attach_boot_ns) {
    if (seq != h->next_seq) /* another process flipped (and may have committed) since: not in here */
      h->complete_since_ns = now;
  } else {
    /* The first flip of this attachment (the daemon's, after a protect through another handle):
     * nothing was committed before it. */
    h = history_of(t, slot, seq == 0 ? t->slots[slot].attach_boot_ns : now);
    if (!h)
      return;
  }
  h->next_seq = seq + 1;
}

void cbt_history_record(struct cbt *t, int slot, const uint64_t *frozen, const struct cbt_layout *layout)
{
  uint64_t now = boottime_ns();
  struct cbt_history *h = history_of(t, slot, now);
  if (!h)
    return;
  if (now - h->window_start_ns >= CBT_HISTORY_NS) { /* the older window goes; the newer one becomes it */
    uint64_t *older = h->bits[1];
    h->bits[1] = h->bits[0];
    h->bits[0] = older;
    memset(h->bits[0], 0, h->words * sizeof(uint64_t));
    h->window_start_ns = now;
  }
  uint32_t block_shift = t->slots[slot].block_shift, to_chunk = h->chunk_shift - block_shift;
  for (uint64_t b = cbt_bitmap_next_set(frozen, layout, 0); b < layout->nr_blocks;) {
    uint64_t end = cbt_bitmap_next_clear(frozen, layout, b);
    for (uint64_t c = b >> to_chunk; c <= (end - 1) >> to_chunk; c++)
      h->bits[0][c / 64] |= 1ULL << (c % 64);
    b = end < layout->nr_blocks ? cbt_bitmap_next_set(frozen, layout, end) : end;
  }
}

bool cbt_history_complete(struct cbt *t, int slot)
{
  const struct cbt_history *h = &t->history[slot];
  const struct cbt_slot *s = &t->slots[slot];
  /* Kept since the attach, or for longer than CBT_HISTORY_NS. */
  return h->bits[0] && h->attach_ns == s->attach_boot_ns &&
         (h->complete_since_ns <= s->attach_boot_ns || boottime_ns() - h->complete_since_ns >= CBT_HISTORY_NS);
}

bool cbt_history_repair(struct cbt *t, int slot, uint64_t *buffer, const struct cbt_layout *layout, uint64_t *chunks)
{
  struct cbt_history *h = &t->history[slot];
  const struct cbt_slot *s = &t->slots[slot];
  *chunks = 0;
  if (!cbt_history_complete(t, slot))
    return false;
  uint32_t to_chunk = h->chunk_shift - s->block_shift;
  for (uint64_t w = 0; w < h->words; w++) {
    uint64_t bits = h->bits[0][w] | h->bits[1][w];
    while (bits) {
      uint64_t c = w * 64 + (uint64_t)__builtin_ctzll(bits);
      bits &= bits - 1;
      uint64_t first = c << to_chunk, last = ((c + 1) << to_chunk) - 1;
      if (first >= layout->nr_blocks)
        break;
      cbt_bitmap_set(buffer, layout, first, last < layout->nr_blocks ? last : layout->nr_blocks - 1);
      (*chunks)++;
    }
  }
  return true;
}
