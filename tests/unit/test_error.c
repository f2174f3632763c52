/* test_error.c - Description: every error code has a distinct name and a real message. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "rpl_error.h"

static const int all_codes[] = {
#define CODE(name, value, msg) value,
  RPL_ERROR_LIST(CODE)
#undef CODE
};

static void test_messages_and_names(void **state)
{
  size_t n = sizeof all_codes / sizeof all_codes[0];
  for (size_t i = 0; i < n; i++) {
    const char *msg = rpl_strerror((rpl_err)all_codes[i]);
    assert_non_null(msg);
    assert_true(strlen(msg) > 5);
    assert_string_not_equal(msg, "unknown error code");
    for (size_t j = 0; j < i; j++) {
      assert_int_not_equal(all_codes[i], all_codes[j]); /* values never reused */
      assert_string_not_equal(rpl_errname((rpl_err)all_codes[i]), rpl_errname((rpl_err)all_codes[j]));
    }
  }
}

static void test_stable_values(void **state)
{
  /* Values are part of the wire protocol (NACK reason, ERROR code): they must never change. */
  assert_int_equal(RPL_OK, 0);
  assert_int_equal(RPL_E_NOMEM, 1);
  assert_int_equal(RPL_E_PROTO_MAGIC, 100);
  assert_int_equal(RPL_E_PROTO_CRC, 105);
  assert_int_equal(RPL_E_PROTO_NO_COMMON_VERSION, 110);
  assert_string_equal(rpl_errname(RPL_E_PROTO_CRC), "RPL_E_PROTO_CRC");
  assert_string_equal(rpl_strerror((rpl_err)99999), "unknown error code");
}

static rpl_err fail_open(const char *path) { return rpl_fail(RPL_E_IO, "cannot open %s: no such file", path); }

static void test_detail(void **state)
{
  char buf[RPL_DETAIL_MAX + 200];
  rpl_detail_clear();
  assert_string_equal(rpl_detail(RPL_E_IO), "");
  assert_string_equal(rpl_describe(RPL_E_IO, buf, sizeof buf), rpl_strerror(RPL_E_IO));
  assert_int_equal(fail_open("/x/y"), RPL_E_IO);
  assert_string_equal(rpl_detail(RPL_E_IO), "cannot open /x/y: no such file");
  /* another code: the detail is not shown with it */
  assert_string_equal(rpl_detail(RPL_E_NOMEM), "");
  assert_string_equal(rpl_detail(RPL_OK), "");
  rpl_describe(RPL_E_IO, buf, sizeof buf);
  assert_true(strstr(buf, rpl_strerror(RPL_E_IO)) == buf);
  assert_non_null(strstr(buf, ": cannot open /x/y"));
  /* a caller adding context to its callee's detail reads the detail while it is replaced */
  assert_int_equal(rpl_fail(RPL_E_IO, "disk 1: %s", rpl_detail(RPL_E_IO)), RPL_E_IO);
  assert_string_equal(rpl_detail(RPL_E_IO), "disk 1: cannot open /x/y: no such file");
  /* a later failure replaces it; a long detail is cut, not overrun */
  char big[RPL_DETAIL_MAX * 2];
  memset(big, 'a', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  assert_int_equal(rpl_fail(RPL_E_LIMIT, "%s", big), RPL_E_LIMIT);
  assert_string_equal(rpl_detail(RPL_E_IO), "");
  assert_int_equal(strlen(rpl_detail(RPL_E_LIMIT)), RPL_DETAIL_MAX - 1);
  rpl_detail_clear();
  assert_string_equal(rpl_detail(RPL_E_LIMIT), "");
  (void)state;
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_detail),
    cmocka_unit_test(test_messages_and_names),
    cmocka_unit_test(test_stable_values),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
