/* fuzz_socket.h - connecting a fuzz harness's client socket through libFuzzer's timeout alarm. */
#ifndef RPL_FUZZ_SOCKET_H
#define RPL_FUZZ_SOCKET_H

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

/* connect(2) that a signal does not break: with -timeout=N, libFuzzer's SIGALRM fires every N/2 + 1
 * seconds, and a connect waiting for a busy server's accept queue then returns EINTR while the
 * connection goes on being made; waiting for it to become writable and reading SO_ERROR gives the
 * real outcome. 0 when connected; otherwise -1, with what failed printed. */
static inline int fuzz_connect(int fd, const struct sockaddr *addr, socklen_t len)
{
  if (connect(fd, addr, len) == 0)
    return 0;
  if (errno != EINTR) {
    fprintf(stderr, "fuzz harness: connect: %s\n", strerror(errno));
    return -1;
  }
  struct pollfd p = {.fd = fd, .events = POLLOUT};
  int rc;
  while ((rc = poll(&p, 1, -1)) < 0 && errno == EINTR)
    ;
  int err = 0;
  socklen_t size = sizeof err;
  if (rc < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &size) != 0)
    err = errno;
  if (err) {
    fprintf(stderr, "fuzz harness: connect (after an interrupted wait): %s\n", strerror(err));
    return -1;
  }
  return 0;
}

#endif
