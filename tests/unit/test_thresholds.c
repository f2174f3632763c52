/* test_thresholds.c - Description: unit tests of the health thresholds (appliance/thresholds.c): the
 * defaults and their text, keys in any order, auto and off, every refusal naming what is wrong, and
 * the RPO limits auto gives for short and long RPO targets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "thresholds.h"

static void test_defaults_and_round_trip(void **state)
{
  (void)state;
  struct thresholds t, again;
  char text[THRESHOLDS_TEXT_MAX];
  assert_int_equal(thresholds_parse(NULL, &t), RPL_OK);
  thresholds_format(&t, text, sizeof text);
  assert_string_equal(text, THRESHOLDS_DEFAULT);
  assert_int_equal(thresholds_parse("", &again), RPL_OK);
  assert_memory_equal(&t, &again, sizeof t);

  assert_int_equal(thresholds_parse("cache=95,agent-away=5m,rpo-crit=1h,point-age=2h,rpo-warn=90s", &t), RPL_OK);
  assert_int_equal(t.rpo_warn_s, 90);
  assert_int_equal(t.rpo_crit_s, 3600);
  assert_int_equal(t.point_age_s, 7200);
  assert_int_equal(t.agent_away_s, 300);
  assert_int_equal(t.cache_pct, 95);
  thresholds_format(&t, text, sizeof text);
  assert_string_equal(text, "rpo-warn=90s,rpo-crit=1h,point-age=2h,agent-away=5m,cache=95");
  assert_int_equal(thresholds_parse(text, &again), RPL_OK); /* the canonical text parses back */
  assert_memory_equal(&t, &again, sizeof t);

  /* A missing key keeps its default; auto and off. */
  assert_int_equal(thresholds_parse("point-age=30m", &t), RPL_OK);
  assert_int_equal(t.agent_away_s, 90);
  assert_int_equal(t.cache_pct, 80);
  assert_int_equal(thresholds_parse("rpo-warn=auto,point-age=off", &t), RPL_OK);
  assert_int_equal(t.rpo_warn_s, 0);
  assert_int_equal(t.point_age_s, 0);
}

static void expect_refused(const char *text, const char *detail_part)
{
  struct thresholds t;
  rpl_err e = thresholds_parse(text, &t);
  if (e != RPL_E_ALERT_THRESHOLDS)
    fail_msg("'%s' was not refused (%s)", text, rpl_errname(e));
  if (!strstr(rpl_detail(e), detail_part))
    fail_msg("'%s': the detail '%s' does not say '%s'", text, rpl_detail(e), detail_part);
}

static void test_refusals(void **state)
{
  (void)state;
  expect_refused("rpo-warn", "is not KEY=VALUE");
  expect_refused("rpo-late=1m", "unknown key in 'rpo-late=1m'");
  expect_refused("cache=80,cache=90", "repeats a key");
  expect_refused("rpo-warn=5x", "bad value in 'rpo-warn=5x'");
  expect_refused("rpo-warn=0", "bad value");
  expect_refused("point-age=auto", "or off");           /* auto is for the RPO keys only */
  expect_refused("agent-away=off", "bad value");
  expect_refused("agent-away=30s", "is under 60s");
  expect_refused("cache=0", "percentage from 1 to 100");
  expect_refused("cache=101", "percentage from 1 to 100");
  expect_refused("cache=8%", "percentage from 1 to 100");
  expect_refused("cache=", "percentage from 1 to 100");
  expect_refused("rpo-warn=10m,rpo-crit=5m", "rpo-crit is shorter than rpo-warn");
  expect_refused("rpo-warn=400d", "at most 366d");
  char long_text[THRESHOLDS_TEXT_MAX + 8];
  memset(long_text, 'a', sizeof long_text - 1);
  long_text[sizeof long_text - 1] = '\0';
  expect_refused(long_text, "too long");
}

static void test_rpo_limits(void **state)
{
  (void)state;
  struct thresholds t;
  int64_t w, c;
  assert_int_equal(thresholds_parse(NULL, &t), RPL_OK);
  thresholds_rpo_limits(&t, 500, &w, &c); /* a 0.5 s target: the floors */
  assert_int_equal(w, THRESHOLDS_RPO_WARN_FLOOR_S);
  assert_int_equal(c, THRESHOLDS_RPO_CRIT_FLOOR_S);
  thresholds_rpo_limits(&t, 60000, &w, &c); /* a minute: 2 and 10 targets */
  assert_int_equal(w, 120);
  assert_int_equal(c, 600);
  assert_int_equal(thresholds_parse("rpo-warn=15m", &t), RPL_OK);
  thresholds_rpo_limits(&t, 60000, &w, &c); /* an explicit warn past the automatic crit lifts crit */
  assert_int_equal(w, 900);
  assert_int_equal(c, 900);
  assert_int_equal(thresholds_parse("rpo-warn=10s,rpo-crit=20s", &t), RPL_OK);
  thresholds_rpo_limits(&t, 60000, &w, &c); /* explicit values are not floored */
  assert_int_equal(w, 10);
  assert_int_equal(c, 20);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_defaults_and_round_trip),
    cmocka_unit_test(test_refusals),
    cmocka_unit_test(test_rpo_limits),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
