/* test_progress.c - Description: the sync progress line (percent, MB/s, ETA) that status and a
 * terminal's protect show: rate and ETA from bytes and elapsed time, unknown before any progress,
 * hour-long ETAs, clamping, and cutting to the buffer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "progress.h"

#define MiB (1ull << 20)

static void test_rate_and_eta(void **state)
{
  (void)state;
  char s[128];
  /* 512 MiB of 2 GiB in 2 s: 268 MB/s, 1536 MiB left at that rate = 6 s. */
  progress_format(s, sizeof s, 512 * MiB, 2048 * MiB, 2000);
  assert_string_equal(s, "25.0% of 2048 MiB, 268 MB/s, ETA 0:06");
  struct progress p;
  progress_compute(512 * MiB, 2048 * MiB, 2000, &p);
  assert_int_equal(p.bytes_per_s, 268435456);
  assert_int_equal(p.eta_s, 6);
  /* 10 MB of 100 GiB in 10 s: 1 MB/s, 107364 s left = 29:49:24. */
  progress_format(s, sizeof s, 10000000, 100 * 1024 * MiB, 10000);
  assert_string_equal(s, "0.0% of 102400 MiB, 1 MB/s, ETA 29:49:24");
  /* Minutes. */
  progress_format(s, sizeof s, 100 * MiB, 1100 * MiB, 10000);
  assert_string_equal(s, "9.1% of 1100 MiB, 10 MB/s, ETA 1:40");
}

static void test_unknown_rate(void **state)
{
  (void)state;
  char s[128];
  progress_format(s, sizeof s, 0, 1024 * MiB, 5000);
  assert_string_equal(s, "0.0% of 1024 MiB, -- MB/s, ETA --:--");
  progress_format(s, sizeof s, 10 * MiB, 1024 * MiB, 100); /* too soon to say */
  assert_string_equal(s, "1.0% of 1024 MiB, -- MB/s, ETA --:--");
  struct progress p;
  progress_compute(0, 0, 0, &p);
  assert_true(p.percent == 100.0);
  assert_int_equal(p.eta_s, -1);
}

static void test_edges(void **state)
{
  (void)state;
  char s[128];
  /* Never 100.0% before the last byte; done beyond total counts as complete. */
  progress_format(s, sizeof s, 1024 * MiB - 4096, 1024 * MiB, 4000);
  assert_string_equal(s, "99.9% of 1024 MiB, 268 MB/s, ETA 0:00");
  progress_format(s, sizeof s, 2048 * MiB, 1024 * MiB, 4000);
  assert_string_equal(s, "100.0% of 1024 MiB, 268 MB/s, ETA 0:00");
  /* Cut to the buffer, terminated, the wanted length returned. */
  char small[8];
  memset(small, 'x', sizeof small);
  int want = progress_format(small, sizeof small, 512 * MiB, 2048 * MiB, 2000);
  assert_int_equal(want, (int)strlen("25.0% of 2048 MiB, 268 MB/s, ETA 0:06"));
  assert_string_equal(small, "25.0% o");
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_rate_and_eta),
    cmocka_unit_test(test_unknown_rate),
    cmocka_unit_test(test_edges),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
