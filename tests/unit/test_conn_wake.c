/* test_conn_wake.c - Description: conn_recv_wakeable's wait for a frame ends when its eventfd is
 * written (before the call or during it, from another thread), returns RPL_E_TIMEOUT with the
 * eventfd drained, and frames sent afterwards still arrive whole; without a wake it waits for the
 * frame as conn_recv does. The waits have a 60 s timeout: a wake that did not work fails the test
 * by ctest's timeout, not by a measured time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <cmocka.h>

#include "tls_loopback.h"

#define LONG_WAIT_MS 60000

struct peer {
  SSL_CTX *ctx;
  char hostport[64];
  int wake;              /* the receiver's eventfd, written by the peer thread */
  atomic_int step;       /* 1: connected; 2: the receiver asks for the wake; 3: send the heartbeat */
  rpl_err err;
};

static void wait_step(atomic_int *step, int want)
{
  while (atomic_load(step) < want)
    usleep(1000);
}

static void *peer_main(void *arg)
{
  struct peer *p = arg;
  struct conn *c = NULL;
  p->err = conn_connect(p->ctx, p->hostport, 10000, &c);
  atomic_store(&p->step, 1);
  if (p->err)
    return NULL;
  wait_step(&p->step, 2);
  usleep(100000); /* the receiver is (most likely) in its wait by now; if not, the wake waits for it */
  uint64_t one = 1;
  if (write(p->wake, &one, sizeof one) != sizeof one)
    p->err = RPL_E_IO;
  wait_step(&p->step, 3);
  struct proto_buf out = {0};
  struct proto_heartbeat hb = {.sequence = 7};
  if (!p->err && !(p->err = proto_encode_heartbeat(&out, &hb)))
    p->err = conn_send(c, &out);
  proto_buf_free(&out);
  /* Stays connected until the receiver has the frame (closing could race its read). */
  wait_step(&p->step, 4);
  conn_close(c);
  return NULL;
}

static bool drained(int fd)
{
  uint64_t v;
  return read(fd, &v, sizeof v) < 0 && errno == EAGAIN;
}

static void wake_ends_the_wait(void **state)
{
  (void)state;
  struct tls_loopback t;
  tls_loopback_open(&t);
  int wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  assert_true(wake >= 0);

  struct peer p = {.ctx = t.client_ctx, .wake = wake};
  snprintf(p.hostport, sizeof p.hostport, "%s", t.hostport);
  pthread_t pt;
  assert_int_equal(pthread_create(&pt, NULL, peer_main, &p), 0);
  struct conn *c = tls_loopback_accept(&t);
  wait_step(&p.step, 1);
  assert_int_equal(p.err, RPL_OK);

  /* Woken before the call: it returns at once, and the wake is used up. */
  uint64_t one = 1;
  assert_int_equal(write(wake, &one, sizeof one), sizeof one);
  struct proto_frame f;
  assert_int_equal(conn_recv_wakeable(c, &f, LONG_WAIT_MS, wake), RPL_E_TIMEOUT);
  assert_true(drained(wake));

  /* Woken during the wait, from another thread. */
  atomic_store(&p.step, 2);
  assert_int_equal(conn_recv_wakeable(c, &f, LONG_WAIT_MS, wake), RPL_E_TIMEOUT);
  assert_true(drained(wake));

  /* Not woken: the frame sent next arrives whole. */
  atomic_store(&p.step, 3);
  assert_int_equal(conn_recv_wakeable(c, &f, LONG_WAIT_MS, wake), RPL_OK);
  assert_int_equal(f.type, PROTO_HEARTBEAT);
  struct proto_heartbeat hb;
  assert_int_equal(proto_decode_heartbeat(&f, &hb), RPL_OK);
  assert_int_equal(hb.sequence, 7);
  atomic_store(&p.step, 4);

  pthread_join(pt, NULL);
  assert_int_equal(p.err, RPL_OK);
  close(wake);
  conn_close(c);
  tls_loopback_close(&t);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(wake_ends_the_wait),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
