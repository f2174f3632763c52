/* retain.c - the blocks of acknowledged cycles until their storage holds them (retain.h). */
#include "retain.h"

#include <stdlib.h>
#include <string.h>

rpl_err retain_append(struct cbt_extents *set, uint64_t offset, uint64_t length)
{
  if (!length)
    return RPL_OK;
  if (set->count >= set->limit)
    return RPL_E_LIMIT;
  if (set->count == set->capacity) {
    size_t cap = set->capacity ? set->capacity * 2 : 64;
    if (cap > set->limit)
      cap = set->limit;
    struct cbt_extent *items = realloc(set->items, cap * sizeof *items);
    if (!items)
      return RPL_E_NOMEM;
    set->items = items;
    set->capacity = cap;
  }
  set->items[set->count++] = (struct cbt_extent){offset, length};
  return RPL_OK;
}

static int by_offset(const void *x, const void *y)
{
  const struct cbt_extent *a = x, *b = y;
  return a->offset < b->offset ? -1 : a->offset > b->offset;
}

void retain_normalize(struct cbt_extents *set)
{
  if (set->count < 2)
    return;
  qsort(set->items, set->count, sizeof set->items[0], by_offset);
  size_t out = 0;
  for (size_t i = 1; i < set->count; i++) {
    struct cbt_extent *last = &set->items[out], *e = &set->items[i];
    uint64_t last_end = last->offset + last->length;
    if (e->offset <= last_end) {
      if (e->offset + e->length > last_end)
        last->length = e->offset + e->length - last->offset;
    } else {
      set->items[++out] = *e;
    }
  }
  set->count = out + 1;
}

static void drop_at(struct retain *r, size_t i)
{
  r->extents -= r->c[i].set.count;
  cbt_extents_free(&r->c[i].set);
  memmove(&r->c[i], &r->c[i + 1], (r->n - i - 1) * sizeof r->c[0]);
  r->n--;
}

void retain_free(struct retain *r)
{
  while (r->n)
    drop_at(r, r->n - 1);
  free(r->c);
  memset(r, 0, sizeof *r);
}

static void raise_known(struct retain *r, uint64_t n)
{
  if (!r->known || r->known_after < n)
    r->known_after = n;
  r->known = true;
}

void retain_acked(struct retain *r, uint64_t n, const struct cbt_extents *sent, bool incomplete)
{
  while (r->n && r->c[r->n - 1].cycle >= n)
    drop_at(r, r->n - 1);
  if (!r->known || r->known_after >= n)
    r->known_after = n - 1; /* the first acknowledged here: what came before this process is unknown */
  r->known = true;
  if (incomplete || !sent || sent->count > RETAIN_EXTENTS_MAX) {
    raise_known(r, n);
    return;
  }
  while (r->n && r->extents + sent->count > RETAIN_EXTENTS_MAX) {
    raise_known(r, r->c[0].cycle); /* forgotten: a replay from before it cannot be answered */
    drop_at(r, 0);
  }
  if (r->n == r->cap) {
    size_t cap = r->cap ? r->cap * 2 : 8;
    struct retained_cycle *c = realloc(r->c, cap * sizeof *c);
    if (!c) {
      raise_known(r, n);
      return;
    }
    r->c = c;
    r->cap = cap;
  }
  struct retained_cycle *k = &r->c[r->n];
  k->cycle = n;
  cbt_extents_init(&k->set, RETAIN_EXTENTS_MAX, 0);
  for (size_t i = 0; i < sent->count; i++) {
    if (retain_append(&k->set, sent->items[i].offset, sent->items[i].length)) {
      cbt_extents_free(&k->set);
      raise_known(r, n);
      return;
    }
  }
  retain_normalize(&k->set);
  r->extents += k->set.count;
  r->n++;
}

void retain_stored(struct retain *r, uint64_t n)
{
  while (r->n && r->c[0].cycle <= n)
    drop_at(r, 0);
}

bool retain_complete(const struct retain *r, uint64_t base)
{
  return r->known && base >= r->known_after;
}

rpl_err retain_after(const struct retain *r, uint64_t base, struct cbt_extents *out)
{
  for (size_t i = 0; i < r->n; i++) {
    if (r->c[i].cycle <= base)
      continue;
    for (size_t j = 0; j < r->c[i].set.count; j++) {
      rpl_err e = retain_append(out, r->c[i].set.items[j].offset, r->c[i].set.items[j].length);
      if (e)
        return e;
    }
  }
  retain_normalize(out);
  return RPL_OK;
}
