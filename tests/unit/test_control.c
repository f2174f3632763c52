/* test_control.c - Description: the control socket: commands and replies round trip, exit status,
 * reply cap, malformed requests, no daemon, a second daemon refused, owner-only permissions. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <cmocka.h>

#include "control.h"
#include "state_files.h"

static char dir[64];

static int handler(void *ctx, int argc, char **argv, struct control_reply *out)
{
  (*(int *)ctx)++;
  if (!strcmp(argv[0], "echo")) {
    for (int i = 1; i < argc; i++)
      control_printf(out, "%s%s", argv[i], i + 1 < argc ? " " : "\n");
    return 0;
  }
  if (!strcmp(argv[0], "flood")) {
    for (int i = 0; i < 1000000; i++)
      control_printf(out, "line %d of a very long reply that must be cut\n", i);
    return 0;
  }
  control_printf(out, "unknown command '%s'", argv[0]);
  return 2;
}

static int setup(void **state)
{
  strcpy(dir, "/tmp/test_control.XXXXXX");
  return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  return system(cmd);
}

static void test_round_trip(void **state)
{
  int calls = 0;
  struct control_server *s;
  int status;
  char *reply;
  const char *echo[] = {"echo", "hello", "world", ""};
  assert_int_equal(control_call(dir, 3, echo, &status, &reply), RPL_E_NO_DAEMON);
  assert_int_equal(control_server_start(dir, handler, &calls, &s), RPL_OK);

  char path[100];
  snprintf(path, sizeof path, "%s/%s", dir, STATE_CONTROL_SOCKET);
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(st.st_mode & 077, 0); /* owner only */

  assert_int_equal(control_call(dir, 4, echo, &status, &reply), RPL_OK);
  assert_int_equal(status, 0);
  assert_string_equal(reply, "hello world \n");
  free(reply);
  const char *bad[] = {"frobnicate"};
  assert_int_equal(control_call(dir, 1, bad, &status, &reply), RPL_OK);
  assert_int_equal(status, 2);
  assert_string_equal(reply, "unknown command 'frobnicate'");
  free(reply);

  /* A reply past the cap is cut, and says so. */
  const char *flood[] = {"flood"};
  assert_int_equal(control_call(dir, 1, flood, &status, &reply), RPL_OK);
  assert_true(strlen(reply) <= CONTROL_MAX_REPLY + 100);
  assert_non_null(strstr(reply, "(output truncated"));
  free(reply);

  /* A second daemon on the same state directory is refused. */
  struct control_server *s2;
  int calls2 = 0;
  assert_int_equal(control_server_start(dir, handler, &calls2, &s2), RPL_E_EXISTS);

  /* Malformed requests get an error and do not reach the handler. */
  int before = calls;
  const uint8_t zero_len[4] = {0, 0, 0, 0}, huge_len[4] = {0xff, 0xff, 0xff, 0x7f}, unterminated[7] = {3, 0, 0, 0, 'a', 'b', 'c'};
  /* More arguments than a client may send: refused, not cut to the first CONTROL_MAX_ARGS. */
  uint8_t too_many[4 + 2 * (CONTROL_MAX_ARGS + 1)] = {2 * (CONTROL_MAX_ARGS + 1)};
  for (size_t i = 0; i <= CONTROL_MAX_ARGS; i++)
    too_many[4 + 2 * i] = 'a';
  const struct { const uint8_t *p; size_t n; } cases[] = {{zero_len, 4}, {huge_len, 4}, {unterminated, 7}, {too_many, sizeof too_many}};
  for (size_t i = 0; i < 4; i++) {
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(write(fd, cases[i].p, cases[i].n), (ssize_t)cases[i].n);
    uint8_t head[8];
    assert_int_equal(read(fd, head, 8), 8);
    assert_int_equal(head[0], 2); /* usage-error status */
    close(fd);
  }
  assert_int_equal(calls, before);

  control_server_stop(s);
  assert_int_not_equal(access(path, F_OK), 0); /* socket removed */
  assert_int_equal(control_call(dir, 4, echo, &status, &reply), RPL_E_NO_DAEMON);
  /* A stale socket file (daemon killed) does not block the next start. */
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
  assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
  close(fd);
  assert_int_equal(control_call(dir, 4, echo, &status, &reply), RPL_E_NO_DAEMON);
  assert_int_equal(control_server_start(dir, handler, &calls, &s), RPL_OK);
  control_server_stop(s);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
