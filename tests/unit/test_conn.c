/* test_conn.c - Description: a framed TLS connection over loopback keeps going when signals (or
 * io_uring task work, which interrupts the same way) hit a send blocked on a full socket or a
 * receive waiting for data: 64 MiB of EXTENT frames arrive whole and in order. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "tls_loopback.h"

#define EXTENTS     64
#define EXTENT_SIZE (1u << 20)

static atomic_int interruptions;
static atomic_int sending_done;

static void on_usr1(int sig)
{
  (void)sig;
  atomic_fetch_add(&interruptions, 1);
}

struct sender {
  SSL_CTX *ctx;
  char hostport[64];
  atomic_int started;
  rpl_err err;
  int sent;
};

static void fill(uint8_t *buf, unsigned i)
{
  for (size_t k = 0; k < EXTENT_SIZE; k += 8) {
    uint64_t v = (uint64_t)i * 0x9e3779b97f4a7c15ull ^ k;
    memcpy(buf + k, &v, 8);
  }
}

static void *sender_main(void *arg)
{
  struct sender *s = arg;
  struct conn *c = NULL;
  uint8_t *buf = malloc(EXTENT_SIZE);
  s->err = buf ? conn_connect(s->ctx, s->hostport, 10000, &c) : RPL_E_NOMEM;
  atomic_store(&s->started, 1);
  for (unsigned i = 0; !s->err && i < EXTENTS; i++) {
    fill(buf, i);
    struct proto_extent m = {.cycle = 1, .offset = (uint64_t)i * EXTENT_SIZE, .length = EXTENT_SIZE,
                             .codec = PROTO_CODEC_NONE, .payload = {.ptr = buf, .len = EXTENT_SIZE}};
    proto_hash128(buf, EXTENT_SIZE, m.hash);
    s->err = conn_send_extent(c, &m);
    if (!s->err)
      s->sent++;
  }
  atomic_store(&sending_done, 1);
  conn_close(c);
  free(buf);
  return NULL;
}

struct signaller {
  pthread_t targets[2];
  atomic_int stop;
};

static void *signaller_main(void *arg)
{
  struct signaller *g = arg;
  struct timespec ms = {.tv_nsec = 1000000};
  while (!atomic_load(&g->stop)) {
    for (int i = 0; i < 2; i++)
      pthread_kill(g->targets[i], SIGUSR1);
    nanosleep(&ms, NULL);
  }
  return NULL;
}

static void sends_and_receives_through_signals(void **state)
{
  (void)state;
  /* No SA_RESTART: a blocked socket call with a timeout returns EINTR, as it does for io_uring
   * task work whatever the flags. */
  struct sigaction sa = {.sa_handler = on_usr1};
  sigemptyset(&sa.sa_mask);
  assert_int_equal(sigaction(SIGUSR1, &sa, NULL), 0);

  struct tls_loopback tl;
  tls_loopback_open(&tl);
  struct sender s = {.ctx = tl.client_ctx};
  snprintf(s.hostport, sizeof s.hostport, "%s", tl.hostport);
  pthread_t st;
  assert_int_equal(pthread_create(&st, NULL, sender_main, &s), 0);
  struct conn *c = tls_loopback_accept(&tl);
  while (!atomic_load(&s.started))
    usleep(1000);

  struct signaller g = {.targets = {st, pthread_self()}};
  pthread_t gt;
  assert_int_equal(pthread_create(&gt, NULL, signaller_main, &g), 0);
  /* 64 MiB cannot fit in the socket buffers: the sender blocks while nothing is read (300 ms,
   * counted on the clock: the signals cut every sleep short). */
  struct timespec t0, t;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  do {
    usleep(10000);
    clock_gettime(CLOCK_MONOTONIC, &t);
  } while ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 < 300);

  uint8_t *want = malloc(EXTENT_SIZE);
  assert_non_null(want);
  unsigned got = 0;
  while (got < EXTENTS) {
    struct proto_frame f;
    rpl_err err = conn_recv(c, &f, -1);
    assert_int_equal(err, RPL_OK);
    assert_int_equal(f.type, PROTO_EXTENT);
    struct proto_extent m;
    assert_int_equal(proto_decode_extent(&f, &m), RPL_OK);
    assert_int_equal(m.offset, (uint64_t)got * EXTENT_SIZE);
    assert_int_equal(m.payload.len, EXTENT_SIZE);
    fill(want, got);
    assert_memory_equal(m.payload.ptr, want, EXTENT_SIZE);
    got++;
  }
  atomic_store(&g.stop, 1);
  pthread_join(gt, NULL);
  pthread_join(st, NULL);
  assert_int_equal(s.err, RPL_OK);
  assert_int_equal(s.sent, EXTENTS);
  /* The test means something only if signals really arrived during the transfer. */
  assert_true(atomic_load(&interruptions) > 10);
  printf("%d signals during the transfer of %u MiB\n", atomic_load(&interruptions), EXTENTS);

  free(want);
  conn_close(c);
  tls_loopback_close(&tl);
}

int main(void)
{
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(sends_and_receives_through_signals),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
