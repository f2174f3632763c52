/* test_log.c - Description: secrets are redacted before logging; levels parse and filter; control
 * characters from a peer are escaped, so one line stays one line. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "rpl_log.h"

static void test_redact_connection_string(void **state)
{
  char out[512];
  log_redact("DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=c2VjcmV0a2V5PT0=;EndpointSuffix=core.windows.net",
             out, sizeof out);
  assert_null(strstr(out, "c2VjcmV0a2V5PT0"));
  assert_non_null(strstr(out, "AccountKey=***;"));
  assert_non_null(strstr(out, "AccountName=acct"));
  assert_non_null(strstr(out, "EndpointSuffix=core.windows.net"));
}

static void test_redact_sas_and_headers(void **state)
{
  char out[512];
  log_redact("https://a.blob.core.windows.net/c/b?sv=2021-08-06&sig=abc%2Bdef&se=2030", out, sizeof out);
  assert_null(strstr(out, "abc%2Bdef"));
  assert_non_null(strstr(out, "sv=2021-08-06"));
  assert_non_null(strstr(out, "&se=2030"));
  log_redact("Authorization: SharedKey devstoreaccount1:CNJ5DipGxeZ38", out, sizeof out);
  assert_null(strstr(out, "CNJ5DipGxeZ38"));
  assert_null(strstr(out, "devstoreaccount1:"));
  log_redact("{\"access_token\": \"eyJ0eXAi\", \"expires_in\": \"3599\"}", out, sizeof out);
  assert_null(strstr(out, "eyJ0eXAi"));
  assert_non_null(strstr(out, "expires_in"));
}

static void test_redact_truncates_safely(void **state)
{
  char out[8];
  log_redact("AccountKey=verysecretvalue", out, sizeof out);
  assert_int_equal(strlen(out), 7);
  assert_null(strstr(out, "very"));
  char one[1];
  log_redact("anything", one, sizeof one);
  assert_int_equal(one[0], '\0');
}

static void test_levels(void **state)
{
  assert_int_equal(log_level_parse("debug"), LOG_LVL_DEBUG);
  assert_int_equal(log_level_parse("WARN"), LOG_LVL_WARN);
  assert_int_equal(log_level_parse("loud"), -1);
  assert_int_equal(log_level_parse(NULL), -1);

  /* Lines go to stderr with a journald priority prefix; lines above the level are dropped. */
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  int saved = dup(STDERR_FILENO);
  dup2(fds[1], STDERR_FILENO);
  log_init("unit", LOG_LVL_WARN);
  log_info("dropped %d", 1);
  log_err("kept %d", 2);
  dup2(saved, STDERR_FILENO);
  close(saved);
  close(fds[1]);
  char buf[256] = {0};
  ssize_t n = read(fds[0], buf, sizeof buf - 1);
  close(fds[0]);
  assert_true(n > 0);
  assert_string_equal(buf, "<3>unit: kept 2\n");

  /* A hostname with a newline and a terminal escape cannot forge a second line. */
  assert_int_equal(pipe(fds), 0);
  saved = dup(STDERR_FILENO);
  dup2(fds[1], STDERR_FILENO);
  log_err("registered %s", "host\n<3>fake: line\x1b[2J\x7f");
  dup2(saved, STDERR_FILENO);
  close(saved);
  close(fds[1]);
  memset(buf, 0, sizeof buf);
  n = read(fds[0], buf, sizeof buf - 1);
  close(fds[0]);
  assert_true(n > 0);
  assert_string_equal(buf, "<3>unit: registered host\\x0a<3>fake: line\\x1b[2J\\x7f\n");
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_redact_connection_string),
    cmocka_unit_test(test_redact_sas_and_headers),
    cmocka_unit_test(test_redact_truncates_safely),
    cmocka_unit_test(test_levels),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
