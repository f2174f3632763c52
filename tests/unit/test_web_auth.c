/* test_web_auth.c - Description: the configuration manager's login secrets: the admin password is
 * stored only as a salted hash (0600) and checks right and wrong; unusable passwords are refused; the
 * one-time token works once and is not stored in clear; a malformed file is a clear error; the
 * /metrics bearer token is made once (0600) and matches only itself, an operator's own one too. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "identity.h"
#include "state_files.h"
#include "tmpdir.h"
#include "web.h"

static int setup(void **state)
{
  char *dir = calloc(1, 256);
  if (!dir || tmpdir_create(dir, 256, "webauth"))
    return -1;
  *state = dir;
  return 0;
}

static int teardown(void **state)
{
  tmpdir_remove(*state);
  free(*state);
  return 0;
}

static char *slurp(const char *dir, const char *name)
{
  char path[512], *text = NULL;
  snprintf(path, sizeof path, "%s/%s", dir, name);
  if (file_read_all(path, 4096, &text) != RPL_OK)
    return NULL;
  return text;
}

static void test_password(void **state)
{
  const char *dir = *state;
  bool ok = true;
  assert_false(web_auth_has_password(dir));
  assert_int_equal(web_auth_check_password(dir, "anything at all", &ok), RPL_OK);
  assert_false(ok); /* none set: nothing logs in */
  assert_int_equal(web_auth_set_password(dir, "short"), RPL_E_WEB_PASSWORD);
  assert_int_equal(web_auth_set_password(dir, "with\nnewline"), RPL_E_WEB_PASSWORD);
  assert_int_equal(web_auth_set_password(dir, "correct horse"), RPL_OK);
  assert_true(web_auth_has_password(dir));
  char *stored = slurp(dir, STATE_WEB_ADMIN);
  assert_non_null(stored);
  assert_null(strstr(stored, "correct horse"));
  assert_int_equal(strncmp(stored, "pbkdf2-sha256 ", 14), 0);
  free(stored);
  char path[512];
  struct stat st;
  snprintf(path, sizeof path, "%s/%s", dir, STATE_WEB_ADMIN);
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0600);
  assert_int_equal(web_auth_check_password(dir, "correct horse", &ok), RPL_OK);
  assert_true(ok);
  assert_int_equal(web_auth_check_password(dir, "correct horsE", &ok), RPL_OK);
  assert_false(ok);
  assert_int_equal(web_auth_check_password(dir, "", &ok), RPL_OK);
  assert_false(ok);
  /* A second hash of the same password differs (a fresh salt). */
  char *first = slurp(dir, STATE_WEB_ADMIN);
  assert_int_equal(web_auth_set_password(dir, "correct horse"), RPL_OK);
  char *second = slurp(dir, STATE_WEB_ADMIN);
  assert_string_not_equal(first, second);
  free(first);
  free(second);
}

static void test_token_once(void **state)
{
  const char *dir = *state;
  char token[WEB_TOKEN_CHARS + 1];
  bool ok = true;
  assert_int_equal(web_auth_use_token(dir, "x", &ok), RPL_OK);
  assert_false(ok);
  assert_int_equal(web_auth_issue_token(dir, token), RPL_OK);
  assert_int_equal(strlen(token), WEB_TOKEN_CHARS);
  assert_int_equal(strspn(token, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"), WEB_TOKEN_CHARS);
  char *stored = slurp(dir, STATE_WEB_LOGIN);
  assert_non_null(stored);
  assert_null(strstr(stored, token));
  free(stored);
  char wrong[WEB_TOKEN_CHARS + 1];
  memcpy(wrong, token, sizeof wrong);
  wrong[0] = wrong[0] == 'A' ? 'B' : 'A';
  assert_int_equal(web_auth_use_token(dir, wrong, &ok), RPL_OK);
  assert_false(ok);
  assert_int_equal(web_auth_use_token(dir, token, &ok), RPL_OK);
  assert_true(ok);
  assert_int_equal(web_auth_use_token(dir, token, &ok), RPL_OK);
  assert_false(ok); /* used once */
}

static void test_malformed_file(void **state)
{
  const char *dir = *state;
  char path[512];
  snprintf(path, sizeof path, "%s/%s", dir, STATE_WEB_ADMIN);
  assert_int_equal(file_write_atomic(path, "pbkdf2-sha256 12 zz\n", 20, 0600), RPL_OK);
  bool ok = true;
  assert_int_equal(web_auth_check_password(dir, "correct horse", &ok), RPL_E_WEB_AUTH_FILE);
  assert_false(ok);
  /* A salt or hash with a byte that is not a hex digit is damage too (sscanf's %2x took "a%"). */
  char line[200];
  struct web_auth_hash h;
  snprintf(line, sizeof line, "pbkdf2-sha256 1000 %032d %064d\n", 0, 0);
  assert_int_equal(web_auth_parse(line, strlen(line), &h), RPL_OK);
  assert_int_equal(h.iter, 1000);
  line[19 + 31] = '%';
  assert_int_equal(web_auth_parse(line, strlen(line), &h), RPL_E_WEB_AUTH_FILE);
}

static void test_password_file(void **state)
{
  const char *dir = *state;
  char path[512], out[WEB_PASSWORD_MAX + 1];
  snprintf(path, sizeof path, "%s/pw", dir);
  assert_int_equal(file_write_atomic(path, "a good password\nsecond line\n", 28, 0600), RPL_OK);
  assert_int_equal(web_auth_read_password_file(path, out, sizeof out), RPL_OK);
  assert_string_equal(out, "a good password");
  assert_int_equal(file_write_atomic(path, "tiny\n", 5, 0600), RPL_OK);
  assert_int_equal(web_auth_read_password_file(path, out, sizeof out), RPL_E_WEB_PASSWORD);
  char big[400];
  memset(big, 'x', sizeof big);
  assert_int_equal(file_write_atomic(path, big, sizeof big, 0600), RPL_OK);
  assert_int_equal(web_auth_read_password_file(path, out, sizeof out), RPL_E_WEB_PASSWORD);
}

static void test_metrics_token(void **state)
{
  const char *dir = *state;
  bool ok = true, created = false;
  assert_int_equal(web_auth_metrics_check(dir, "anything", &ok), RPL_OK);
  assert_false(ok); /* none made: nothing matches */
  assert_int_equal(web_auth_metrics_token_ensure(dir, &created), RPL_OK);
  assert_true(created);
  char *token = slurp(dir, STATE_METRICS_TOKEN);
  assert_non_null(token);
  token[strcspn(token, "\n")] = 0;
  assert_int_equal(strlen(token), WEB_TOKEN_CHARS);
  char path[512];
  struct stat st;
  snprintf(path, sizeof path, "%s/%s", dir, STATE_METRICS_TOKEN);
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0600);
  assert_int_equal(web_auth_metrics_check(dir, token, &ok), RPL_OK);
  assert_true(ok);
  char other[2 * WEB_TOKEN_CHARS + 1];
  snprintf(other, sizeof other, "%s", token);
  other[WEB_TOKEN_CHARS - 1] ^= 1;
  assert_int_equal(web_auth_metrics_check(dir, other, &ok), RPL_OK);
  assert_false(ok);
  snprintf(other, sizeof other, "%s%s", token, token);
  assert_int_equal(web_auth_metrics_check(dir, other, &ok), RPL_OK);
  assert_false(ok);
  other[WEB_TOKEN_CHARS - 1] = 0;
  assert_int_equal(web_auth_metrics_check(dir, other, &ok), RPL_OK);
  assert_false(ok);
  assert_int_equal(web_auth_metrics_check(dir, "", &ok), RPL_OK);
  assert_false(ok);
  /* Made once: a second start keeps it. */
  assert_int_equal(web_auth_metrics_token_ensure(dir, &created), RPL_OK);
  assert_false(created);
  char *again = slurp(dir, STATE_METRICS_TOKEN);
  assert_non_null(again);
  again[strcspn(again, "\n")] = 0;
  assert_string_equal(token, again);
  free(again);
  /* An operator's own token: long enough matches; a short one (or empty) matches nothing. */
  static const char own[] = "an-operator's-own-token-of-40-characters\n";
  assert_int_equal(file_write_atomic(path, own, sizeof own - 1, 0600), RPL_OK);
  assert_int_equal(web_auth_metrics_check(dir, "an-operator's-own-token-of-40-characters", &ok), RPL_OK);
  assert_true(ok);
  assert_int_equal(web_auth_metrics_check(dir, token, &ok), RPL_OK);
  assert_false(ok);
  assert_int_equal(file_write_atomic(path, "short\n", 6, 0600), RPL_OK);
  assert_int_equal(web_auth_metrics_check(dir, "short", &ok), RPL_OK);
  assert_false(ok);
  assert_int_equal(file_write_atomic(path, "\n", 1, 0600), RPL_OK);
  assert_int_equal(web_auth_metrics_check(dir, "", &ok), RPL_OK);
  assert_false(ok);
  free(token);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown(test_password, setup, teardown),
    cmocka_unit_test_setup_teardown(test_token_once, setup, teardown),
    cmocka_unit_test_setup_teardown(test_malformed_file, setup, teardown),
    cmocka_unit_test_setup_teardown(test_password_file, setup, teardown),
    cmocka_unit_test_setup_teardown(test_metrics_token, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
