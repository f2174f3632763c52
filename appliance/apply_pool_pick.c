/* apply_pool_pick.c - the apply pool's choice of the next disk (apply_pool.h), apart from the
 * threads so that its order can be tested alone. */
#include "apply_pool.h"

size_t apply_pool_pick(const struct apply_pool_cand *c, size_t n)
{
  size_t best = n;
  for (size_t i = 0; i < n; i++) {
    if (c[i].claimed || c[i].prio == APPLY_PRIO_NONE)
      continue;
    if (best == n || c[i].prio > c[best].prio ||
        (c[i].prio == c[best].prio && c[i].served_turn < c[best].served_turn))
      best = i;
  }
  return best;
}
