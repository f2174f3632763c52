/* test_conn_writes.c - Description: a connection's TLS records go out together: a 1 MiB EXTENT
 * takes a few write() calls on the socket, not one per 16 KiB record, and nothing is left waiting
 * in the write buffer after a frame (a heartbeat after it arrives, in one write of its own). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <cmocka.h>

#include "tls_loopback.h"

#define BIG (1u << 20)

/* The write() that libssl's socket BIO calls resolves to this one: it counts the calls on one
 * descriptor (the client's socket) and makes the system call itself. */
static atomic_int counted_fd = -1;
static atomic_int counted_writes;

ssize_t write(int fd, const void *buf, size_t count)
{
  if (fd == atomic_load(&counted_fd))
    atomic_fetch_add(&counted_writes, 1);
  return syscall(SYS_write, fd, buf, count);
}

struct client {
  SSL_CTX *ctx;
  char hostport[64];
  int extent_writes, heartbeat_writes;
  atomic_int done, release;
  rpl_err err;
};

static void *client_main(void *arg)
{
  struct client *cl = arg;
  struct conn *c = NULL;
  uint8_t *buf = malloc(BIG);
  rpl_err err = buf ? conn_connect(cl->ctx, cl->hostport, 10000, &c) : RPL_E_NOMEM;
  if (!err) {
    for (uint32_t k = 0; k < BIG; k++)
      buf[k] = (uint8_t)(k * 7 + 1);
    struct proto_extent m = {.cycle = 1, .offset = 1u << 20, .length = BIG, .codec = PROTO_CODEC_NONE,
                             .payload = {.ptr = buf, .len = BIG}};
    proto_hash128(buf, BIG, m.hash);
    atomic_store(&counted_fd, conn_fd(c));
    err = conn_send_extent(c, &m);
    cl->extent_writes = atomic_exchange(&counted_writes, 0);
  }
  if (!err) {
    struct proto_buf b = {.cap = 4096};
    struct proto_heartbeat hb = {.sequence = 9};
    err = proto_encode_heartbeat(&b, &hb);
    if (!err)
      err = conn_send(c, &b);
    cl->heartbeat_writes = atomic_exchange(&counted_writes, 0);
    proto_buf_free(&b);
  }
  atomic_store(&counted_fd, -1);
  free(buf);
  cl->err = err;
  atomic_store(&cl->done, 1);
  while (!atomic_load(&cl->release)) /* the server reads before the connection closes */
    usleep(1000);
  conn_close(c);
  return NULL;
}

static void records_go_out_together(void **state)
{
  (void)state;
  struct tls_loopback tl;
  tls_loopback_open(&tl);
  struct client cl = {.ctx = tl.client_ctx};
  snprintf(cl.hostport, sizeof cl.hostport, "%s", tl.hostport);
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, client_main, &cl), 0);
  struct conn *c = tls_loopback_accept(&tl);

  struct proto_frame f;
  struct proto_extent m;
  assert_int_equal(conn_recv(c, &f, 10000), RPL_OK);
  assert_int_equal(proto_decode_extent(&f, &m), RPL_OK);
  assert_int_equal(m.length, BIG);
  assert_int_equal(m.payload.len, BIG);
  for (uint32_t k = 0; k < BIG; k += 4099)
    assert_int_equal(m.payload.ptr[k], (uint8_t)(k * 7 + 1));
  /* Within the 10 s only if the frame before it left nothing in the client's buffer. */
  struct proto_heartbeat hb;
  assert_int_equal(conn_recv(c, &f, 10000), RPL_OK);
  assert_int_equal(proto_decode_heartbeat(&f, &hb), RPL_OK);
  assert_int_equal(hb.sequence, 9);

  while (!atomic_load(&cl.done))
    usleep(1000);
  assert_int_equal(cl.err, RPL_OK);
  /* 65 records of up to 16 KiB: one write each before; 256 KiB at a time now (the socket's 4 MiB
   * send buffer takes each whole). */
  print_message("1 MiB EXTENT: %d write() calls; heartbeat: %d\n", cl.extent_writes, cl.heartbeat_writes);
  assert_in_range(cl.extent_writes, 1, 8);
  assert_int_equal(cl.heartbeat_writes, 1);
  atomic_store(&cl.release, 1);
  pthread_join(t, NULL);
  conn_close(c);
  tls_loopback_close(&tl);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(records_go_out_together),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
