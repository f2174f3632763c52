/* fuzz_control_request.c - Description: libFuzzer target for the control socket's request decoder,
 * both daemons' way in for the users' commands: control_request_parse on the bytes, then the bytes
 * as a raw request stream (length prefix, arguments) to a real control server in this process, whose
 * reply must match what the decoder said (the handler only when it accepted, with its arguments). */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "control.h"
#include "fuzz_socket.h"
#include "rpl_log.h"
#include "state_files.h"
#include "../unit/tmpdir.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[256];
static struct sockaddr_un addr;
static struct control_server *server;

/* Says what it was given: the count, then each argument's length and bytes' sum. */
static int echo_handler(void *ctx, int argc, char **argv, struct control_reply *out)
{
  (void)ctx;
  control_printf(out, "%d", argc);
  for (int i = 0; i < argc; i++) {
    unsigned sum = 0;
    for (const unsigned char *p = (const unsigned char *)argv[i]; *p; p++)
      sum += *p;
    control_printf(out, " %zu:%u", strlen(argv[i]), sum);
  }
  return argc == 1 ? 0 : 3;
}

static void stop_all(void)
{
  control_server_stop(server);
  (void)rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  (void)argc;
  (void)argv;
  log_set_level((enum log_level)(LOG_LVL_ERR - 1));
  if (tmpdir_create_in(dir, sizeof dir, "/tmp", "fuzz-control") ||
      control_server_start(dir, echo_handler, NULL, &server) != RPL_OK)
    abort();
  addr.sun_family = AF_UNIX;
  snprintf(addr.sun_path, sizeof addr.sun_path, "%s/%s", dir, STATE_CONTROL_SOCKET);
  atexit(stop_all);
  return 0;
}

static uint32_t get32(const uint8_t *p)
{
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* The reply the server must give to a request stream (*status -1: none, it closes without one). */
static void expected_reply(const uint8_t *data, size_t size, char *want, size_t wantsz, int *status)
{
  want[0] = '\0';
  *status = -1;
  if (size < 4)
    return;
  uint32_t len = get32(data);
  if (len == 0 || len > CONTROL_MAX_REQUEST || size - 4 < len) { /* short: it sees the stream end */
    snprintf(want, wantsz, "malformed control request");
    *status = 2;
    return;
  }
  char *req = malloc(len), *argv[CONTROL_MAX_ARGS + 1];
  if (!req)
    abort();
  memcpy(req, data + 4, len);
  int argc = control_request_parse(req, len, argv);
  if (argc < 0) {
    snprintf(want, wantsz, "malformed control request");
    *status = 2;
  } else {
    struct control_reply r = {0};
    *status = echo_handler(NULL, argc, argv, &r);
    snprintf(want, wantsz, "%s", r.text ? r.text : "");
    free(r.text);
  }
  free(req);
}

static void over_the_socket(const uint8_t *data, size_t size)
{
  static char want[CONTROL_MAX_ARGS * 32 + 64], got[sizeof want + 64];
  int status;
  expected_reply(data, size, want, sizeof want, &status);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct timeval tv = {.tv_sec = 5};
  if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0) {
    fprintf(stderr, "fuzz_control_request: cannot make the client socket: %s\n", strerror(errno));
    abort();
  }
  if (fuzz_connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0)
    abort();
  /* The server may answer and close before reading it all (a refused length): EPIPE is fine. */
  for (size_t off = 0; off < size;) {
    ssize_t n = send(fd, data + off, size - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR)
      continue; /* libFuzzer's timeout alarm */
    if (n <= 0)
      break;
    off += (size_t)n;
  }
  (void)shutdown(fd, SHUT_WR);
  size_t have = 0;
  for (;;) {
    ssize_t n = recv(fd, got + have, sizeof got - 1 - have, 0);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && errno == ECONNRESET)
      break;
    if (n < 0)
      abort(); /* no answer and no close within 5 s: the server hangs */
    if (n == 0 || (have += (size_t)n) == sizeof got - 1)
      break;
  }
  close(fd);
  if (status < 0) {
    if (have != 0)
      abort();
    return;
  }
  if (have < 8)
    abort();
  uint32_t st = get32((const uint8_t *)got), n = get32((const uint8_t *)got + 4);
  got[have] = '\0';
  if (st != (uint32_t)status || n != have - 8 || strcmp(got + 8, want))
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  /* The bytes as a request body: the arguments are exactly its NUL-terminated pieces. */
  if (size <= CONTROL_MAX_REQUEST) {
    char *req = malloc(size ? size : 1), *argv[CONTROL_MAX_ARGS + 1];
    if (!req)
      abort();
    memcpy(req, data, size);
    int argc = control_request_parse(req, size, argv);
    if (argc >= 0) {
      size_t off = 0;
      if (argc < 1 || argc > CONTROL_MAX_ARGS || argv[argc] != NULL)
        abort();
      for (int i = 0; i < argc; i++) {
        if (argv[i] != req + off)
          abort();
        off += strlen(argv[i]) + 1;
      }
      if (off != size)
        abort();
    }
    free(req);
  }
  over_the_socket(data, size);
  return 0;
}
