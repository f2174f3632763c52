/* test_settings.c - Description: appliance.conf round-trips through save and load, and every
 * numeric setting out of its range or not a whole number is refused with its name and range
 * (none silently replaced by a default). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "settings.h"
#include "state_files.h"
#include "tmpdir.h"

static int setup(void **state)
{
  static char dir[PATH_MAX];
  if (tmpdir_create(dir, sizeof dir, "settings") != 0)
    return -1;
  *state = dir;
  return 0;
}

static int teardown(void **state)
{
  tmpdir_remove(*state);
  return 0;
}

static void write_conf(const char *dir, const char *extra)
{
  char path[PATH_MAX + 32];
  snprintf(path, sizeof path, "%s/%s", dir, STATE_APPLIANCE_CONF);
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fprintf(f, "storage=file:/var/tmp/replica\n%s", extra);
  assert_int_equal(fclose(f), 0);
}

static void round_trip(void **state)
{
  const char *dir = *state;
  struct appliance_settings s, t;
  settings_defaults(&s);
  snprintf(s.storage, sizeof s.storage, "file:/var/tmp/replica");
  s.max_in_flight = 32;
  s.lease_duration_s = 15;
  s.upload_limit_mbps = 300;
  s.agent_limit_mbps = 40;
  s.require_private_endpoint = false;
  assert_int_equal(settings_save(dir, &s), RPL_OK);
  assert_int_equal(settings_load(dir, &t), RPL_OK);
  assert_string_equal(t.storage, s.storage);
  assert_int_equal(t.max_in_flight, 32);
  assert_int_equal(t.lease_duration_s, 15);
  assert_int_equal(t.upload_limit_mbps, 300);
  assert_int_equal(t.agent_limit_mbps, 40);
  assert_false(t.require_private_endpoint);
  char path[PATH_MAX + 32];
  struct stat st;
  snprintf(path, sizeof path, "%s/%s", dir, STATE_APPLIANCE_CONF);
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0600);
}

static void defaults_when_absent(void **state)
{
  const char *dir = *state;
  struct appliance_settings s;
  write_conf(dir, "");
  assert_int_equal(settings_load(dir, &s), RPL_OK);
  assert_int_equal(s.max_in_flight, 16);
  assert_int_equal(s.lease_duration_s, SETTINGS_DEFAULT_LEASE_S);
  assert_true(s.require_private_endpoint);
}

static void bad_numbers_refused(void **state)
{
  const char *dir = *state;
  static const struct {
    const char *line, *says;
  } cases[] = {
    {"max_in_flight=0\n", "max_in_flight must be a whole number of requests from 1 to 256"},
    {"max_in_flight=257\n", "max_in_flight must be"},
    {"max_in_flight=16x\n", "max_in_flight must be"},
    {"max_in_flight=\n", "max_in_flight must be"},
    {"max_in_flight=-4\n", "max_in_flight must be"},
    {"lease_duration_s=14\n", "lease_duration_s must be a whole number of seconds from 15 to 60"},
    {"lease_duration_s=61\n", "lease_duration_s must be"},
    {"lease_duration_s=sixty\n", "lease_duration_s must be"},
    {"lease_duration_s=99999999999999999999\n", "lease_duration_s must be"},
    {"require_private_endpoint=yes\n", "require_private_endpoint must be 0 or 1"},
    {"require_private_endpoint=2\n", "require_private_endpoint must be 0 or 1"},
    {"upload_limit_mbps=fast\n", "upload_limit_mbps must be a whole number of MB/s"},
    {"agent_limit_mbps=-1\n", "agent_limit_mbps must be a whole number of MB/s"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    struct appliance_settings s;
    write_conf(dir, cases[i].line);
    rpl_detail_clear();
    assert_int_equal(settings_load(dir, &s), RPL_E_CONFIG);
    const char *why = rpl_detail(RPL_E_CONFIG);
    if (!strstr(why, cases[i].says) || !strstr(why, "line 2")) {
      print_error("%s -> '%s'\n", cases[i].line, why);
      fail();
    }
  }
}

static void edges_accepted(void **state)
{
  const char *dir = *state;
  struct appliance_settings s;
  write_conf(dir, "max_in_flight=256\nlease_duration_s=60\nrequire_private_endpoint=0\n");
  assert_int_equal(settings_load(dir, &s), RPL_OK);
  assert_int_equal(s.max_in_flight, 256);
  assert_int_equal(s.lease_duration_s, 60);
  assert_false(s.require_private_endpoint);
  write_conf(dir, "max_in_flight=1\nlease_duration_s=15\nrequire_private_endpoint=1\n");
  assert_int_equal(settings_load(dir, &s), RPL_OK);
  assert_int_equal(s.max_in_flight, 1);
  assert_int_equal(s.lease_duration_s, 15);
  assert_true(s.require_private_endpoint);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown(round_trip, setup, teardown),
    cmocka_unit_test_setup_teardown(defaults_when_absent, setup, teardown),
    cmocka_unit_test_setup_teardown(bad_numbers_refused, setup, teardown),
    cmocka_unit_test_setup_teardown(edges_accepted, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
