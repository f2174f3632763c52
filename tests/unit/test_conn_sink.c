/* test_conn_sink.c - Description: a receiver's extent sink over a real TLS connection: large raw
 * EXTENT bytes are read straight into the sink's buffers and come back intact in the frames, in
 * order among frames received whole (the sink declines, a compressed extent, a small one, a
 * heartbeat); a split frame with a wrong CRC breaks the stream for good. */
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
#include <unistd.h>
#include <cmocka.h>

#include "tls_loopback.h"

#define BIG (1u << 20)
#define SINK_MIN (64u << 10)

enum { ACCEPTED = 1, DECLINED = 2 }; /* disk_id[0]: what the sink does with the extent */

static void fill(uint8_t *buf, uint32_t len, uint64_t seed)
{
  for (uint32_t k = 0; k + 8 <= len; k += 8) {
    uint64_t v = (k + seed) * 0x9e3779b97f4a7c15ull;
    memcpy(buf + k, &v, 8);
  }
}

struct client {
  SSL_CTX *ctx;
  char hostport[64];
  bool bad_crc;           /* end with a split frame whose CRC is wrong */
  atomic_int done, release;
  rpl_err err;
};

static rpl_err send_extent(struct conn *c, uint8_t who, uint8_t codec, uint32_t len, uint64_t seed)
{
  uint8_t *buf = malloc(len);
  if (!buf)
    return RPL_E_NOMEM;
  fill(buf, len, seed);
  struct proto_extent m = {.cycle = 1, .offset = seed << 20, .length = len, .codec = codec,
                           .payload = {.ptr = buf, .len = codec == PROTO_CODEC_ZSTD ? len / 2 : len}};
  m.disk_id[0] = who;
  proto_hash128(buf, len, m.hash);
  rpl_err err = conn_send_extent(c, &m);
  free(buf);
  return err;
}

static void *client_main(void *arg)
{
  struct client *cl = arg;
  struct conn *c = NULL;
  rpl_err err = conn_connect(cl->ctx, cl->hostport, 10000, &c);
  if (!err)
    err = send_extent(c, ACCEPTED, PROTO_CODEC_NONE, BIG, 1);
  if (!err)
    err = send_extent(c, DECLINED, PROTO_CODEC_NONE, 256u << 10, 2);
  if (!err)
    err = send_extent(c, ACCEPTED, PROTO_CODEC_ZSTD, BIG, 3); /* compressed: never offered */
  if (!err)
    err = send_extent(c, ACCEPTED, PROTO_CODEC_NONE, 32u << 10, 4); /* under the sink's minimum */
  if (!err) {
    struct proto_buf b = {.cap = 4096};
    struct proto_heartbeat hb = {.sequence = 7};
    err = proto_encode_heartbeat(&b, &hb);
    if (!err)
      err = conn_send(c, &b);
    proto_buf_free(&b);
  }
  if (!err)
    err = send_extent(c, ACCEPTED, PROTO_CODEC_NONE, BIG, 5);
  if (!err && cl->bad_crc) {
    uint8_t *buf = malloc(128u << 10);
    struct proto_extent m = {.cycle = 1, .length = 128u << 10, .codec = PROTO_CODEC_NONE,
                             .payload = {.ptr = buf, .len = 128u << 10}};
    m.disk_id[0] = ACCEPTED;
    fill(buf, m.length, 6);
    struct proto_buf b = {.cap = (128u << 10) + 4096};
    err = buf ? proto_encode_extent(&b, &m) : RPL_E_NOMEM;
    if (!err) {
      b.data[12] ^= 1; /* the frame's CRC */
      err = conn_send(c, &b);
    }
    proto_buf_free(&b);
    free(buf);
  }
  cl->err = err;
  atomic_store(&cl->done, 1);
  while (!atomic_load(&cl->release)) /* the server reads before the connection closes */
    usleep(1000);
  conn_close(c);
  return NULL;
}

struct sink {
  uint8_t *buf[4];
  unsigned offered, given;
  uint32_t last_len;
};

static uint8_t *sink_fn(void *arg, const struct proto_extent *m)
{
  struct sink *s = arg;
  s->offered++;
  assert_null(m->payload.ptr);
  assert_int_equal(m->codec, PROTO_CODEC_NONE);
  assert_true(m->payload.len == m->length && m->length >= SINK_MIN);
  s->last_len = m->length;
  if (m->disk_id[0] != ACCEPTED)
    return NULL;
  assert_true(s->given < 4);
  uint8_t *b = s->buf[s->given++] = malloc(m->length);
  assert_non_null(b);
  memset(b, 0xAA, m->length);
  return b;
}

/* The next frame must be an EXTENT of len bytes filled with seed; its bytes in the sink's buffer
 * *into once received (into NULL: received whole). */
static void expect_extent(struct conn *c, uint8_t codec, uint32_t len, uint64_t seed, uint8_t *const *into)
{
  struct proto_frame f;
  struct proto_extent m;
  assert_int_equal(conn_recv(c, &f, 10000), RPL_OK);
  const uint8_t *in = into ? *into : NULL;
  if (into)
    assert_non_null(in);
  assert_int_equal(proto_decode_extent(&f, &m), RPL_OK);
  assert_true(f.extent_data == in);
  assert_int_equal(m.codec, codec);
  assert_int_equal(m.length, len);
  assert_int_equal(m.offset, seed << 20);
  if (in)
    assert_true(m.payload.ptr == in);
  uint8_t *want = malloc(len);
  assert_non_null(want);
  fill(want, len, seed);
  assert_int_equal(m.payload.len, codec == PROTO_CODEC_ZSTD ? len / 2 : len);
  assert_memory_equal(m.payload.ptr, want, m.payload.len);
  if (codec == PROTO_CODEC_NONE) {
    uint8_t h[PROTO_HASH_SIZE];
    proto_hash128(m.payload.ptr, m.payload.len, h);
    assert_memory_equal(h, m.hash, sizeof h);
  }
  free(want);
}

static void run(bool bad_crc)
{
  struct tls_loopback tl;
  tls_loopback_open(&tl);
  struct client cl = {.ctx = tl.client_ctx, .bad_crc = bad_crc};
  snprintf(cl.hostport, sizeof cl.hostport, "%s", tl.hostport);
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, client_main, &cl), 0);
  struct conn *c = tls_loopback_accept(&tl);
  struct sink s = {0};
  conn_set_extent_sink(c, sink_fn, &s, SINK_MIN);

  expect_extent(c, PROTO_CODEC_NONE, BIG, 1, &s.buf[0]);
  assert_int_equal(s.given, 1);
  expect_extent(c, PROTO_CODEC_NONE, 256u << 10, 2, NULL);  /* declined: whole */
  assert_int_equal(s.offered, 2);
  expect_extent(c, PROTO_CODEC_ZSTD, BIG, 3, NULL);
  expect_extent(c, PROTO_CODEC_NONE, 32u << 10, 4, NULL);
  assert_int_equal(s.offered, 2); /* neither the compressed nor the small one was offered */
  struct proto_frame f;
  struct proto_heartbeat hb;
  assert_int_equal(conn_recv(c, &f, 10000), RPL_OK);
  assert_int_equal(proto_decode_heartbeat(&f, &hb), RPL_OK);
  assert_int_equal(hb.sequence, 7);
  expect_extent(c, PROTO_CODEC_NONE, BIG, 5, &s.buf[1]);
  assert_int_equal(s.given, 2);
  assert_int_equal(s.offered, 3);
  if (bad_crc) {
    assert_int_equal(conn_recv(c, &f, 10000), RPL_E_PROTO_CRC);
    assert_int_equal(s.offered, 4);
    assert_int_equal(s.last_len, 128u << 10);
    assert_int_equal(conn_recv(c, &f, 10000), RPL_E_PROTO_CRC); /* for good */
  }
  while (!atomic_load(&cl.done))
    usleep(1000);
  assert_int_equal(cl.err, RPL_OK);
  atomic_store(&cl.release, 1);
  pthread_join(t, NULL);
  conn_close(c);
  for (unsigned i = 0; i < 4; i++)
    free(s.buf[i]);
  tls_loopback_close(&tl);
}

static void raw_extents_land_in_the_sink(void **state)
{
  (void)state;
  run(false);
}

static void a_split_frame_with_a_wrong_crc_breaks_the_stream(void **state)
{
  (void)state;
  run(true);
}

int main(void)
{
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(raw_extents_land_in_the_sink),
    cmocka_unit_test(a_split_frame_with_a_wrong_crc_breaks_the_stream),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
