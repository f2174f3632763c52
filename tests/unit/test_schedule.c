/* test_schedule.c - Description: unit tests of the recovery-point schedule (appliance/schedule.c):
 * its text form, the errors that name what is wrong, the 30 s floor, "off", the time scale, and
 * when a kind of point is next due. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "schedule.h"

static void test_parse_and_format(void **state)
{
  (void)state;
  struct point_schedule s;
  char text[SCHEDULE_TEXT_MAX];
  assert_int_equal(schedule_parse(NULL, &s), RPL_OK);
  assert_int_equal(s.every_s[SCHEDULE_CRASH], 300);
  assert_int_equal(s.every_s[SCHEDULE_APP], 3600);
  schedule_format(&s, text, sizeof text);
  assert_string_equal(text, SCHEDULE_DEFAULT);
  assert_int_equal(schedule_parse("app=12h,crash=30s", &s), RPL_OK);
  schedule_format(&s, text, sizeof text);
  assert_string_equal(text, "crash=30s,app=12h");
  assert_int_equal(schedule_parse("crash=1m", &s), RPL_OK); /* a missing kind keeps its default */
  assert_int_equal(s.every_s[SCHEDULE_APP], 3600);
  assert_int_equal(schedule_parse("crash=off,app=0", &s), RPL_OK);
  schedule_format(&s, text, sizeof text);
  assert_string_equal(text, "crash=off,app=off");
  assert_int_equal(schedule_parse("crash=90s", &s), RPL_OK);
  schedule_format(&s, text, sizeof text);
  assert_string_equal(text, "crash=90s,app=1h");
  /* the canonical text parses back to the same schedule */
  struct point_schedule again;
  assert_int_equal(schedule_parse(text, &again), RPL_OK);
  assert_memory_equal(again.every_s, s.every_s, sizeof s.every_s);
}

static void test_errors_say_what(void **state)
{
  (void)state;
  struct point_schedule s;
  static const struct {
    const char *text, *says;
  } bad[] = {
    {"crash=10s", "more often than every 30s"},
    {"crash=29s", "more often"},
    {"hourly=1h", "unknown kind"},
    {"crash=5m,crash=1m", "repeats"},
    {"crash", "not KIND=DURATION"},
    {"crash=5x", "bad duration"},
    {"crash=5", "bad duration"},
    {"crash=", "bad duration"},
    {"crash=367d", "bad duration"},
    {"crash=5m,", "not KIND=DURATION"},
    {"crash=0000000000000000000000000000000000000000000000000000000000005m", "too long"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    rpl_err e = schedule_parse(bad[i].text, &s);
    assert_int_equal(e, RPL_E_POINT_SCHEDULE);
    if (!strstr(rpl_detail(e), bad[i].says))
      fail_msg("'%s': '%s' does not say '%s'", bad[i].text, rpl_detail(e), bad[i].says);
  }
}

static void test_next_due(void **state)
{
  (void)state;
  struct point_schedule s;
  assert_int_equal(schedule_parse("crash=1m,app=off", &s), RPL_OK);
  int64_t now = 1000000000;
  assert_int_equal(schedule_next_due(&s, SCHEDULE_CRASH, 0, now), now); /* never: now */
  assert_int_equal(schedule_next_due(&s, SCHEDULE_CRASH, now - 10000, now), now + 50000);
  assert_int_equal(schedule_next_due(&s, SCHEDULE_CRASH, now - 600000, now), now); /* overdue: now, not the past */
  assert_int_equal(schedule_next_due(&s, SCHEDULE_APP, now - 10000, now), 0); /* off */
  assert_int_equal(schedule_period_ms(&s, SCHEDULE_CRASH), 60000);
  s.time_scale = 60; /* a minute counts as a second */
  assert_int_equal(schedule_period_ms(&s, SCHEDULE_CRASH), 1000);
  assert_int_equal(schedule_next_due(&s, SCHEDULE_CRASH, now - 200, now), now + 800);
  assert_string_equal(schedule_kind_name(SCHEDULE_APP), "app");
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_parse_and_format),
    cmocka_unit_test(test_errors_say_what),
    cmocka_unit_test(test_next_due),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
