/* test_apply_pool.c - Description: unit tests of the apply pool's choice of the next disk
 * (appliance/apply_pool_pick.c): a due lease renewal before any apply, an apply before a rehash,
 * the disk served least recently first among equals, claimed disks and disks without work skipped. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "apply_pool.h"

static void test_none(void **state)
{
  (void)state;
  assert_int_equal(apply_pool_pick(NULL, 0), 0);
  struct apply_pool_cand c[] = {{.prio = APPLY_PRIO_NONE, .served_turn = 1},
                                {.prio = APPLY_PRIO_APPLY, .claimed = true, .served_turn = 0}};
  assert_int_equal(apply_pool_pick(c, 2), 2); /* nothing to do, or only claimed ones */
}

static void test_least_recently_served(void **state)
{
  (void)state;
  struct apply_pool_cand c[] = {{.prio = APPLY_PRIO_APPLY, .served_turn = 9},
                                {.prio = APPLY_PRIO_APPLY, .served_turn = 3},
                                {.prio = APPLY_PRIO_APPLY, .served_turn = 3},
                                {.prio = APPLY_PRIO_APPLY, .served_turn = 5}};
  assert_int_equal(apply_pool_pick(c, 4), 1); /* the oldest turn; ties: the first */
  c[1].claimed = true;
  assert_int_equal(apply_pool_pick(c, 4), 2); /* a claimed disk is never handed out twice */
  c[2].claimed = true;
  assert_int_equal(apply_pool_pick(c, 4), 3);
}

/* Handing out in a loop as the coordinator does: every disk with work gets a turn before any gets
 * a second one (fair), whatever the order of the list. */
static void test_round_robin(void **state)
{
  (void)state;
  struct apply_pool_cand c[5];
  for (size_t i = 0; i < 5; i++)
    c[i] = (struct apply_pool_cand){.prio = APPLY_PRIO_APPLY, .served_turn = 0};
  uint64_t turn = 0;
  int seen[5] = {0};
  for (int round = 0; round < 3; round++)
    for (size_t k = 0; k < 5; k++) {
      size_t i = apply_pool_pick(c, 5);
      assert_true(i < 5);
      c[i].served_turn = ++turn;
      seen[i]++;
      for (size_t j = 0; j < 5; j++)
        assert_true(seen[j] >= round && seen[j] <= round + 1);
    }
}

static void test_priorities(void **state)
{
  (void)state;
  struct apply_pool_cand c[] = {{.prio = APPLY_PRIO_REHASH, .served_turn = 0},
                                {.prio = APPLY_PRIO_APPLY, .served_turn = 7},
                                {.prio = APPLY_PRIO_DUE, .served_turn = 8},
                                {.prio = APPLY_PRIO_APPLY, .served_turn = 6}};
  assert_int_equal(apply_pool_pick(c, 4), 2); /* a due lease renewal first, however recently served */
  c[2].claimed = true;
  assert_int_equal(apply_pool_pick(c, 4), 3); /* then the applies, least recently served */
  c[3].claimed = c[1].claimed = true;
  assert_int_equal(apply_pool_pick(c, 4), 0); /* the rehash last */
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_none),
    cmocka_unit_test(test_least_recently_served),
    cmocka_unit_test(test_round_robin),
    cmocka_unit_test(test_priorities),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
