/* cbt_extents.c - extent sets (cbt.h): the byte ranges a drain collects and a merge takes, coalesced
 * and capped. */
#include <stdlib.h>

#include "cbt.h"

void cbt_extents_init(struct cbt_extents *set, size_t limit, uint64_t max_length)
{
  set->items = NULL;
  set->count = 0;
  set->capacity = 0;
  set->limit = limit < 1 ? 1 : limit > CBT_EXTENTS_LIMIT_MAX ? CBT_EXTENTS_LIMIT_MAX : limit;
  set->max_length = max_length;
}

void cbt_extents_clear(struct cbt_extents *set)
{
  set->count = 0;
}

void cbt_extents_free(struct cbt_extents *set)
{
  free(set->items);
  set->items = NULL;
  set->count = 0;
  set->capacity = 0;
}

rpl_err cbt_extents_add(struct cbt_extents *set, uint64_t offset, uint64_t length)
{
  if (length == 0 || offset + length < offset || (set->max_length && length > set->max_length))
    return RPL_E_INVALID_ARGUMENT;
  if (set->count) {
    struct cbt_extent *last = &set->items[set->count - 1];
    uint64_t last_end = last->offset + last->length;
    if (offset < last_end)
      return RPL_E_INVALID_ARGUMENT;
    if (offset == last_end && (!set->max_length || last->length + length <= set->max_length)) {
      last->length += length;
      return RPL_OK;
    }
  }
  if (set->count >= set->limit)
    return RPL_E_LIMIT;
  if (set->count == set->capacity) {
    size_t capacity = set->capacity ? set->capacity * 2 : 256;
    if (capacity > set->limit)
      capacity = set->limit;
    struct cbt_extent *items = realloc(set->items, capacity * sizeof *items);
    if (!items)
      return RPL_E_NOMEM;
    set->items = items;
    set->capacity = capacity;
  }
  set->items[set->count++] = (struct cbt_extent){offset, length};
  return RPL_OK;
}

uint64_t cbt_extents_bytes(const struct cbt_extents *set)
{
  uint64_t total = 0;
  for (size_t i = 0; i < set->count; i++)
    total += set->items[i].length;
  return total;
}
