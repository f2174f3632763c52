/* test_ratelimit.c - Description: unit tests of the upload token buckets (appliance/ratelimit.c):
 * parsing of MB/s limits, no limit, debt after a take and the wait it implies (computed, not timed). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ratelimit.h"

static void test_parse(void **state)
{
  (void)state;
  unsigned v = 7;
  assert_true(rate_limit_parse_mbps("0", &v));
  assert_int_equal(v, 0);
  assert_true(rate_limit_parse_mbps("250", &v));
  assert_int_equal(v, 250);
  assert_true(rate_limit_parse_mbps("100000", &v));
  assert_int_equal(v, RATELIMIT_MAX_MBPS);
  const char *bad[] = {"", "-1", "+5", "1.5", "abc", "12x", "100001", "99999999999999999999", " 5"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    v = 7;
    assert_false(rate_limit_parse_mbps(bad[i], &v));
    assert_int_equal(v, 7); /* untouched */
  }
  assert_false(rate_limit_parse_mbps(NULL, &v));
}

static void test_unlimited(void **state)
{
  (void)state;
  struct rate_limit r;
  rate_limit_init(&r, 0);
  assert_false(rate_limit_enabled(&r));
  rate_limit_take(&r, 1ull << 40);
  assert_int_equal(rate_limit_wait_us(&r), 0);
  assert_int_equal(rate_limit_wait_us(NULL), 0);
  rate_limit_take(NULL, 100);
  rate_limit_destroy(&r);
}

static void test_debt(void **state)
{
  (void)state;
  struct rate_limit r;
  rate_limit_init(&r, 1000000); /* 1 MB/s */
  assert_true(rate_limit_enabled(&r));
  assert_int_equal(rate_limit_wait_us(&r), 0); /* not in debt: the first take goes at once */
  rate_limit_take(&r, 10000000);                /* 10 MB taken whole */
  uint64_t w = rate_limit_wait_us(&r);
  /* About 10 s of refill owed (less the moments since the take). */
  assert_true(w > 9000000 && w <= 10000001);
  rate_limit_destroy(&r);
}

static void test_burst_cap(void **state)
{
  (void)state;
  struct rate_limit r;
  rate_limit_init(&r, 400000000); /* 400 MB/s: a quarter second = 100 MB of burst */
  r.tokens = 1e12;                /* as if idle for a long time */
  r.last_us -= 1000000;
  rate_limit_take(&r, 1);          /* refill caps the bucket at its burst */
  assert_true(r.tokens <= r.burst);
  assert_true(r.burst >= 100000000.0 - 1 && r.burst <= 100000000.0 + 1);
  rate_limit_destroy(&r);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_parse),
    cmocka_unit_test(test_unlimited),
    cmocka_unit_test(test_debt),
    cmocka_unit_test(test_burst_cap),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
