/* test_conn_stream.c - Description: how a framed TLS connection meets TCP: a large frame goes out
 * corked, in full-size segments, its records in a few write() calls (not one per 16 KiB record), and
 * the socket is uncorked after it (its tail is not held back); a small frame is one write() and
 * nothing waits in the write buffer after it; frames whose records OpenSSL read ahead of the socket
 * are still reported by conn_pending, which the agent asks before it polls the socket. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <linux/tcp.h> /* struct tcp_info with tcpi_segs_out (glibc's is older) */
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "tls_loopback.h"

#define EXTENT_SIZE (1u << 20)
/* A TLS 1.3 record around n bytes of data: 5 bytes of header, the content type, a 16-byte tag. */
#define RECORD_SIZE(n) ((n) + 5 + 1 + 16)

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
  bool extent;            /* one 1 MiB EXTENT, else two heartbeats */
  atomic_int go, sent, release; /* go: the server finished its handshake (read ahead in it, the
                                 * frames would not be in the socket) */
  rpl_err err;
  uint64_t segments;      /* TCP segments the frame(s) took */
  int corked_after;       /* TCP_CORK once the send returned */
  size_t bytes;           /* frame bytes sent */
  int writes;             /* write() calls on the socket for the frame(s) */
};

static uint64_t segments_out(int fd)
{
  struct tcp_info ti;
  socklen_t len = sizeof ti;
  assert_int_equal(getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len), 0);
  return ti.tcpi_segs_out;
}

static void fill(uint8_t *buf)
{
  for (size_t k = 0; k < EXTENT_SIZE; k += 8) {
    uint64_t v = k * 0x9e3779b97f4a7c15ull;
    memcpy(buf + k, &v, 8);
  }
}

static void *client_main(void *arg)
{
  struct client *cl = arg;
  struct conn *c = NULL;
  uint8_t *buf = NULL;
  cl->err = conn_connect(cl->ctx, cl->hostport, 10000, &c);
  if (!cl->err && cl->extent) {
    buf = malloc(EXTENT_SIZE);
    cl->err = buf ? RPL_OK : RPL_E_NOMEM;
  }
  while (!cl->err && !atomic_load(&cl->go))
    usleep(1000);
  if (!cl->err) {
    uint64_t before = segments_out(conn_fd(c));
    atomic_store(&counted_writes, 0);
    atomic_store(&counted_fd, conn_fd(c));
    if (cl->extent) {
      fill(buf);
      struct proto_extent m = {.cycle = 1, .length = EXTENT_SIZE, .codec = PROTO_CODEC_NONE,
                               .payload = {.ptr = buf, .len = EXTENT_SIZE}};
      proto_hash128(buf, EXTENT_SIZE, m.hash);
      cl->err = conn_send_extent(c, &m);
      cl->bytes = PROTO_EXTENT_PREFIX_SIZE + EXTENT_SIZE;
    } else {
      for (uint64_t seq = 1; seq <= 2 && !cl->err; seq++) { /* two sends: two records */
        struct proto_buf b = {.cap = 4096};
        struct proto_heartbeat hb = {.sequence = seq};
        cl->err = proto_encode_heartbeat(&b, &hb);
        if (!cl->err)
          cl->err = conn_send(c, &b);
        cl->bytes = b.len;
        proto_buf_free(&b);
      }
    }
    atomic_store(&counted_fd, -1);
    cl->writes = atomic_load(&counted_writes);
    cl->segments = segments_out(conn_fd(c)) - before;
    socklen_t len = sizeof cl->corked_after;
    if (getsockopt(conn_fd(c), IPPROTO_TCP, TCP_CORK, &cl->corked_after, &len))
      cl->corked_after = -1;
  }
  atomic_store(&cl->sent, 1);
  while (!atomic_load(&cl->release)) /* the server reads before the connection closes */
    usleep(1000);
  conn_close(c);
  free(buf);
  return NULL;
}

static void large_frame_goes_out_corked_in_full_segments(void **state)
{
  (void)state;
  struct tls_loopback tl;
  tls_loopback_open(&tl);
  struct client cl = {.ctx = tl.client_ctx, .extent = true};
  snprintf(cl.hostport, sizeof cl.hostport, "%s", tl.hostport);
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, client_main, &cl), 0);
  struct conn *c = tls_loopback_accept(&tl);
  atomic_store(&cl.go, 1);
  struct proto_frame f;
  assert_int_equal(conn_recv(c, &f, -1), RPL_OK);
  struct proto_extent m;
  assert_int_equal(proto_decode_extent(&f, &m), RPL_OK);
  uint8_t *want = malloc(EXTENT_SIZE);
  assert_non_null(want);
  fill(want);
  assert_int_equal(m.payload.len, EXTENT_SIZE);
  assert_memory_equal(m.payload.ptr, want, EXTENT_SIZE);
  while (!atomic_load(&cl.sent))
    usleep(1000);
  atomic_store(&cl.release, 1);
  pthread_join(t, NULL);
  assert_int_equal(cl.err, RPL_OK);
  /* 1 MiB is 65 records of at most 16 KiB: uncorked with TCP_NODELAY each is a segment of its own;
   * corked, segments are as large as the path allows (64 KiB on loopback: 17 of them). */
  printf("a 1 MiB frame took %llu segments, %d write() calls\n", (unsigned long long)cl.segments, cl.writes);
  /* Written straight to the socket, each record was a write() of its own (65); through the 256 KiB
   * write buffer, 5 (the socket's 4 MiB send buffer takes each whole). */
  assert_in_range(cl.writes, 1, 8);
  assert_true(cl.segments > 0);
  assert_true(cl.segments < EXTENT_SIZE / RECORD_SIZE(16384) / 2);
  assert_int_equal(cl.corked_after, 0);
  free(want);
  conn_close(c);
  tls_loopback_close(&tl);
}

static void records_read_ahead_are_pending(void **state)
{
  (void)state;
  struct tls_loopback tl;
  tls_loopback_open(&tl);
  struct client cl = {.ctx = tl.client_ctx};
  snprintf(cl.hostport, sizeof cl.hostport, "%s", tl.hostport);
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, client_main, &cl), 0);
  struct conn *c = tls_loopback_accept(&tl);
  atomic_store(&cl.go, 1);
  while (!atomic_load(&cl.sent))
    usleep(1000);
  assert_int_equal(cl.err, RPL_OK);
  /* One write() per small frame: each was flushed out of the write buffer at its end (else the
   * records below would never reach the socket). */
  assert_int_equal(cl.writes, 2);
  /* Both records in the socket before the first read (loopback may hand them over a little later). */
  int queued = 0;
  for (int i = 0; i < 10000 && queued < (int)(2 * RECORD_SIZE(cl.bytes)); i++) {
    assert_int_equal(ioctl(conn_fd(c), FIONREAD, &queued), 0);
    if (queued < (int)(2 * RECORD_SIZE(cl.bytes)))
      usleep(1000);
  }
  assert_int_equal(queued, (int)(2 * RECORD_SIZE(cl.bytes)));

  struct proto_frame f;
  struct proto_heartbeat hb;
  assert_int_equal(conn_recv(c, &f, -1), RPL_OK);
  assert_int_equal(proto_decode_heartbeat(&f, &hb), RPL_OK);
  assert_int_equal(hb.sequence, 1);
  /* The second record was read with the first: the socket has nothing, and only conn_pending knows. */
  struct pollfd p = {.fd = conn_fd(c), .events = POLLIN};
  assert_int_equal(poll(&p, 1, 0), 0);
  assert_true(conn_pending(c));
  assert_int_equal(conn_recv(c, &f, -1), RPL_OK);
  assert_int_equal(proto_decode_heartbeat(&f, &hb), RPL_OK);
  assert_int_equal(hb.sequence, 2);
  assert_false(conn_pending(c));
  /* Small frames are never corked. */
  assert_int_equal(cl.corked_after, 0);

  atomic_store(&cl.release, 1);
  pthread_join(t, NULL);
  conn_close(c);
  tls_loopback_close(&tl);
}

int main(void)
{
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(large_frame_goes_out_corked_in_full_segments),
    cmocka_unit_test(records_read_ahead_are_pending),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
