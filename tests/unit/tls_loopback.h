/* tls_loopback.h - a TLS pair over loopback for unit tests (tests/ only; after cmocka.h): one
 * authority, the server's and the client's contexts pinned to it, and a listener on a free port. */
#ifndef TESTS_TLS_LOOPBACK_H
#define TESTS_TLS_LOOPBACK_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "channel.h"
#include "conn.h"

struct tls_loopback {
  char *cert, *key;
  SSL_CTX *server_ctx, *client_ctx;
  int lfd;
  char hostport[64]; /* "127.0.0.1:PORT": for conn_connect with client_ctx */
};

static inline void tls_loopback_open(struct tls_loopback *t)
{
  uint8_t fp[CHAN_FINGERPRINT_SIZE];
  assert_int_equal(chan_make_authority("appliance", &t->cert, &t->key), RPL_OK);
  assert_int_equal(chan_fingerprint(t->cert, fp), RPL_OK);
  assert_int_equal(chan_server_ctx(t->cert, t->key, t->cert, &t->server_ctx), RPL_OK);
  assert_int_equal(chan_client_ctx(fp, NULL, NULL, &t->client_ctx), RPL_OK);
  t->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true(t->lfd >= 0);
  struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t sl = sizeof sin;
  assert_int_equal(bind(t->lfd, (struct sockaddr *)&sin, sizeof sin), 0);
  assert_int_equal(listen(t->lfd, 1), 0);
  assert_int_equal(getsockname(t->lfd, (struct sockaddr *)&sin, &sl), 0);
  snprintf(t->hostport, sizeof t->hostport, "127.0.0.1:%u", ntohs(sin.sin_port));
}

/* The server's side of the next connection to the listener (the client connects meanwhile). */
static inline struct conn *tls_loopback_accept(struct tls_loopback *t)
{
  int fd = accept(t->lfd, NULL, NULL);
  assert_true(fd >= 0);
  struct conn *c;
  assert_int_equal(conn_accept(t->server_ctx, fd, 10000, &c), RPL_OK);
  return c;
}

static inline void tls_loopback_close(struct tls_loopback *t)
{
  close(t->lfd);
  SSL_CTX_free(t->server_ctx);
  SSL_CTX_free(t->client_ctx);
  free(t->cert);
  free(t->key);
}

#endif
