/* test_receiver.c - Description: the appliance's cycle checks: a cycle read by the agent's pipeline
 * and framed on the wire verifies and rebuilds the disk; every corruption, reordering, range and
 * totals error is refused with its own code. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>
#include <cmocka.h>

#include "pipeline.h"
#include "receiver.h"

#define DISK_SIZE (4u << 20)
static const uint8_t disk_id[PROTO_ID_SIZE] = {1, 2, 3};

struct sender {
  struct proto_buf wire;
  struct proto_digest digest;
  struct proto_cycle_end end;
};

static rpl_err frame_extent(void *arg, struct proto_extent *m)
{
  struct sender *s = arg;
  memcpy(m->disk_id, disk_id, PROTO_ID_SIZE);
  m->cycle = s->end.cycle;
  proto_digest_update(&s->digest, m->hash);
  s->end.extents++;
  s->end.raw_bytes += m->length;
  s->end.payload_bytes += m->payload.len;
  return proto_encode_extent(&s->wire, m);
}

static void test_pipeline_to_receiver(void **state)
{
  /* A disk image: text, zeros and noise. */
  char path[] = "/var/tmp/test_receiver.XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  uint8_t *img = malloc(DISK_SIZE), *replica = calloc(1, DISK_SIZE);
  uint32_t x = 5;
  for (size_t i = 0; i < DISK_SIZE; i++)
    img[i] = i < DISK_SIZE / 4 ? (uint8_t)"abcdefgh"[i % 8] : i < DISK_SIZE / 2 ? 0 : (uint8_t)((x = x * 69069 + 1) >> 24);
  assert_int_equal(write(fd, img, DISK_SIZE), DISK_SIZE);
  close(fd);
  fd = open(path, O_RDONLY | O_DIRECT);
  assert_true(fd >= 0);

  struct pipeline *p;
  struct pipeline_config cfg = {.queue_depth = 8, .workers = 2, .max_extent = 256u << 10, .compress = 1};
  assert_int_equal(pipeline_create(fd, &cfg, &p), RPL_OK);
  struct pipeline_extent ext[32];
  size_t n = pipeline_split_extents(0, DISK_SIZE, 256u << 10, ext, 32);
  struct sender s = {.end.cycle = 1};
  memcpy(s.end.disk_id, disk_id, PROTO_ID_SIZE);
  proto_digest_init(&s.digest);
  assert_int_equal(pipeline_run(p, ext, n, frame_extent, &s, NULL), RPL_OK);
  proto_digest_final(&s.digest, s.end.digest);
  assert_int_equal(proto_encode_cycle_end(&s.wire, &s.end), RPL_OK);
  pipeline_destroy(p);
  close(fd);
  unlink(path);

  /* The appliance side: stream decoder, checks, then the replica. */
  struct receiver *r;
  assert_int_equal(receiver_create(disk_id, DISK_SIZE, 0, &r), RPL_OK);
  assert_int_equal(receiver_begin(r, 1, PROTO_CYCLE_PLAIN), RPL_OK);
  struct proto_decoder d;
  proto_decoder_init(&d);
  assert_int_equal(proto_decoder_feed(&d, s.wire.data, s.wire.len), RPL_OK);
  struct proto_frame f;
  int ended = 0;
  while (proto_decoder_next(&d, &f) == RPL_OK) {
    if (f.type == PROTO_EXTENT) {
      struct proto_extent m;
      const uint8_t *raw;
      assert_int_equal(proto_decode_extent(&f, &m), RPL_OK);
      assert_int_equal(receiver_extent(r, &m, &raw), RPL_OK);
      if (raw)
        memcpy(replica + m.offset, raw, m.length);
      else
        memset(replica + m.offset, 0, m.length);
    } else {
      struct proto_cycle_end e;
      struct receiver_totals t;
      assert_int_equal(proto_decode_cycle_end(&f, &e), RPL_OK);
      assert_int_equal(receiver_end(r, &e, &t), RPL_OK);
      assert_true(t.extents == n && t.raw_bytes == DISK_SIZE);
      receiver_committed(r);
      ended = 1;
    }
  }
  assert_true(ended);
  assert_true(receiver_last_committed(r) == 1);
  assert_memory_equal(replica, img, DISK_SIZE);
  proto_decoder_free(&d);
  receiver_destroy(r);
  proto_buf_free(&s.wire);
  free(img);
  free(replica);
}

static void make_extent(struct proto_extent *m, uint8_t *data, uint32_t len, uint64_t cycle)
{
  memset(m, 0, sizeof *m);
  memcpy(m->disk_id, disk_id, PROTO_ID_SIZE);
  m->cycle = cycle;
  m->offset = 4096;
  m->length = len;
  m->codec = PROTO_CODEC_NONE;
  m->payload.ptr = data;
  m->payload.len = len;
  proto_hash128(data, len, m->hash);
}

static void test_refusals(void **state)
{
  static uint8_t data[8192], packed[9000];
  for (size_t i = 0; i < sizeof data; i++)
    data[i] = (uint8_t)(i / 64);
  struct receiver *r;
  assert_int_equal(receiver_create(disk_id, DISK_SIZE, 6, &r), RPL_OK);
  /* Order: only cycle 7 may start. */
  assert_int_equal(receiver_begin(r, 6, 0), RPL_E_CYCLE_ORDER);
  assert_int_equal(receiver_begin(r, 8, 0), RPL_E_CYCLE_ORDER);
  struct proto_extent m;
  make_extent(&m, data, sizeof data, 7);
  assert_int_equal(receiver_extent(r, &m, NULL), RPL_E_CYCLE_MISMATCH); /* no cycle started */
  assert_int_equal(receiver_begin(r, 7, 0), RPL_OK);

  /* Corrupted payload: hash mismatch. */
  uint8_t copy[8192];
  memcpy(copy, data, sizeof copy);
  copy[100] ^= 1;
  m.payload.ptr = copy;
  assert_int_equal(receiver_extent(r, &m, NULL), RPL_E_CHECKSUM);
  /* Wrong cycle, wrong disk. */
  make_extent(&m, data, sizeof data, 8);
  assert_int_equal(receiver_extent(r, &m, NULL), RPL_E_CYCLE_MISMATCH);
  make_extent(&m, data, sizeof data, 7);
  m.disk_id[0] = 9;
  assert_int_equal(receiver_extent(r, &m, NULL), RPL_E_CYCLE_MISMATCH);
  /* Beyond the end of the disk. */
  make_extent(&m, data, sizeof data, 7);
  m.offset = DISK_SIZE - 4096;
  assert_int_equal(receiver_extent(r, &m, NULL), RPL_E_EXTENT_RANGE);
  /* zstd: a frame declaring another size (a decompression bomb or a lie) is refused unread. */
  size_t c = ZSTD_compress(packed, sizeof packed, data, 4096, 1);
  assert_false(ZSTD_isError(c));
  make_extent(&m, data, sizeof data, 7);
  m.codec = PROTO_CODEC_ZSTD;
  m.payload.ptr = packed;
  m.payload.len = (uint32_t)c;
  assert_int_equal(receiver_extent(r, &m, NULL), RPL_E_EXTENT_DECOMPRESS);
  m.payload.len = 5; /* garbage */
  assert_int_equal(receiver_extent(r, &m, NULL), RPL_E_EXTENT_DECOMPRESS);
  /* A zero extent must hash as zeros. */
  make_extent(&m, data, sizeof data, 7);
  m.codec = PROTO_CODEC_ZERO;
  m.payload.len = 0;
  assert_int_equal(receiver_extent(r, &m, NULL), RPL_E_CHECKSUM);
  static const uint8_t zeros[8192];
  proto_hash128(zeros, sizeof zeros, m.hash);
  const uint8_t *raw = data;
  assert_int_equal(receiver_extent(r, &m, &raw), RPL_OK);
  assert_null(raw);

  /* One good extent, then CYCLE_END with wrong totals / digest, then right ones. */
  make_extent(&m, data, sizeof data, 7);
  assert_int_equal(receiver_extent(r, &m, NULL), RPL_OK);
  struct proto_cycle_end e = {.cycle = 7, .extents = 2, .raw_bytes = 2 * sizeof data, .payload_bytes = sizeof data};
  memcpy(e.disk_id, disk_id, PROTO_ID_SIZE);
  assert_int_equal(receiver_end(r, &e, NULL), RPL_E_CYCLE_TOTALS); /* digest all zero */
  struct proto_digest dg;
  proto_digest_init(&dg);
  proto_hash128(zeros, sizeof zeros, e.digest);
  proto_digest_update(&dg, e.digest);
  proto_digest_update(&dg, m.hash);
  proto_digest_final(&dg, e.digest);
  e.extents = 3;
  assert_int_equal(receiver_end(r, &e, NULL), RPL_E_CYCLE_TOTALS);
  e.extents = 2;
  assert_int_equal(receiver_end(r, &e, NULL), RPL_OK);
  receiver_committed(r);
  assert_true(receiver_last_committed(r) == 7);
  assert_false(receiver_in_cycle(r));

  /* An aborted cycle can be sent again from scratch. */
  assert_int_equal(receiver_begin(r, 8, 0), RPL_OK);
  make_extent(&m, data, sizeof data, 8);
  assert_int_equal(receiver_extent(r, &m, NULL), RPL_OK);
  receiver_abort(r);
  assert_int_equal(receiver_begin(r, 8, 0), RPL_OK);
  e.cycle = 8;
  e.extents = 0, e.raw_bytes = 0, e.payload_bytes = 0;
  proto_digest_init(&dg);
  proto_digest_final(&dg, e.digest);
  assert_int_equal(receiver_end(r, &e, NULL), RPL_OK); /* the first attempt's extent is forgotten */
  receiver_destroy(r);
}

/* A compressed extent decompressed into the caller's buffer (a storage's room): *raw names it, it
 * holds the bytes, and a wrong hash is still refused. */
static void test_extent_into(void **state)
{
  (void)state;
  static uint8_t data[8192], packed[9000], room[8192];
  for (size_t i = 0; i < sizeof data; i++)
    data[i] = (uint8_t)(i / 64);
  struct receiver *r;
  assert_int_equal(receiver_create(disk_id, DISK_SIZE, 6, &r), RPL_OK);
  assert_int_equal(receiver_begin(r, 7, 0), RPL_OK);
  size_t c = ZSTD_compress(packed, sizeof packed, data, sizeof data, 1);
  assert_false(ZSTD_isError(c));
  struct proto_extent m;
  make_extent(&m, data, sizeof data, 7);
  m.codec = PROTO_CODEC_ZSTD;
  m.payload.ptr = packed;
  m.payload.len = (uint32_t)c;
  const uint8_t *raw = NULL;
  assert_int_equal(receiver_extent_into(r, &m, room, &raw), RPL_OK);
  assert_true(raw == room);
  assert_memory_equal(room, data, sizeof data);
  m.hash[0] ^= 1;
  assert_int_equal(receiver_extent_into(r, &m, room, &raw), RPL_E_CHECKSUM);
  receiver_destroy(r);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_pipeline_to_receiver),
    cmocka_unit_test(test_refusals),
    cmocka_unit_test(test_extent_into),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
