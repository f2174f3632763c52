/* test_prereq.c - Description: unit tests of the storage prerequisites (appliance/prereq.c) for
 * file: storage: a writable replica directory passes, a missing one fails with its name and a
 * remedy; and for Azure settings with a malformed connection string. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "prereq.h"

static void test_file_storage(void **state)
{
  (void)state;
  char dir[] = "/tmp/test_prereq.XXXXXX";
  assert_non_null(mkdtemp(dir));
  struct appliance_settings s;
  settings_defaults(&s);
  snprintf(s.storage, sizeof s.storage, "file:%s", dir);
  struct prereq_report r;
  prereq_run(&s, &r);
  assert_int_equal(r.n, 1);
  assert_int_equal(prereq_failed(&r), 0);
  assert_null(prereq_first_failure(&r));
  assert_string_equal(r.items[0].name, "replica directory");

  snprintf(s.storage, sizeof s.storage, "file:%s/missing", dir);
  prereq_run(&s, &r);
  assert_int_equal(prereq_failed(&r), 1);
  const struct prereq_item *bad = prereq_first_failure(&r);
  assert_non_null(bad);
  assert_string_equal(bad->name, "replica directory");
  assert_non_null(strstr(bad->detail, "missing"));
  assert_true(bad->remedy[0] != '\0');
  assert_int_equal(rmdir(dir), 0);
}

static void test_bad_connection_string(void **state)
{
  (void)state;
  struct appliance_settings s;
  settings_defaults(&s);
  snprintf(s.storage, sizeof s.storage, "DefaultEndpointsProtocol=https;AccountName=x");
  struct prereq_report r;
  prereq_run(&s, &r);
  const struct prereq_item *bad = prereq_first_failure(&r);
  assert_non_null(bad);
  assert_string_equal(bad->name, "storage settings");
  assert_true(bad->remedy[0] != '\0');
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_file_storage),
    cmocka_unit_test(test_bad_connection_string),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
