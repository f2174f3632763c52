/* test_pipeline.c - Description: the agent's io_uring + zstd read pipeline emits every extent in
 * order with the device's exact bytes (zero, raw and zstd codecs), and fails cleanly. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>
#include <cmocka.h>

#include "pipeline.h"
#include "sent_hashes.h"

#define FILE_SIZE ((16u << 20) + (64u << 10))

struct fixture {
  char path[64];
  int fd_direct;
  uint8_t *content;
};

static int setup(void **state)
{
  struct fixture *f = calloc(1, sizeof *f);
  strcpy(f->path, "/var/tmp/test_pipeline.XXXXXX");
  int fd = mkstemp(f->path);
  if (fd < 0)
    return -1;
  f->content = malloc(FILE_SIZE);
  uint32_t x = 7;
  for (size_t i = 0; i < FILE_SIZE; i++) {
    size_t mib = i >> 20;
    if (mib % 4 == 1)
      f->content[i] = 0;                                   /* zero region */
    else if (mib % 4 == 2)
      f->content[i] = (uint8_t)((x = x * 1103515245u + 12345u) >> 23); /* incompressible */
    else
      f->content[i] = "replication of disk blocks "[i % 27]; /* compressible text */
  }
  if (write(fd, f->content, FILE_SIZE) != (ssize_t)FILE_SIZE || fsync(fd))
    return -1;
  close(fd);
  f->fd_direct = open(f->path, O_RDONLY | O_DIRECT);
  if (f->fd_direct < 0)
    return -1;
  *state = f;
  return 0;
}

static int teardown(void **state)
{
  struct fixture *f = *state;
  close(f->fd_direct);
  unlink(f->path);
  free(f->content);
  free(f);
  return 0;
}

struct check_ctx {
  struct fixture *f;
  const struct pipeline_extent *want;
  size_t next;
  size_t fail_at; /* emit returns an error at this index (SIZE_MAX: never) */
  uint8_t *scratch;
  bool unit_hashes; /* the run was asked for them */
};

static rpl_err check_emit(void *arg, struct proto_extent *m)
{
  struct check_ctx *c = arg;
  if (c->next == c->fail_at)
    return RPL_E_CANCELLED;
  const struct pipeline_extent *w = &c->want[c->next++];
  assert_true(m->offset == w->offset); /* in order */
  assert_int_equal(m->length, w->length);
  const uint8_t *want = c->f->content + m->offset;
  uint8_t h[PROTO_HASH_SIZE];
  proto_hash128(want, m->length, h);
  assert_memory_equal(m->hash, h, sizeof h);
  /* The unit hashes are of the raw bytes, whatever the codec (zstd overwrote the read buffer). */
  const uint64_t *units = pipeline_unit_hashes(m);
  assert_true((units != NULL) == c->unit_hashes);
  for (uint32_t off = 0; units && off < m->length; off += SENT_UNIT) {
    uint32_t len = m->length - off < SENT_UNIT ? m->length - off : SENT_UNIT;
    assert_true(units[off / SENT_UNIT] == sent_unit_hash(want + off, len));
  }
  switch (m->codec) {
  case PROTO_CODEC_ZERO:
    assert_int_equal(m->payload.len, 0);
    for (uint32_t i = 0; i < m->length; i++)
      assert_int_equal(want[i], 0);
    break;
  case PROTO_CODEC_NONE:
    assert_int_equal(m->payload.len, m->length);
    assert_memory_equal(m->payload.ptr, want, m->length);
    break;
  case PROTO_CODEC_ZSTD: {
    assert_true(m->payload.len < m->length);
    size_t d = ZSTD_decompress(c->scratch, 1u << 20, m->payload.ptr, m->payload.len);
    assert_false(ZSTD_isError(d));
    assert_int_equal(d, m->length);
    assert_memory_equal(c->scratch, want, m->length);
    break;
  }
  default:
    fail_msg("unknown codec %u", m->codec);
  }
  /* Every emitted extent makes a valid frame once the session fills in its identity. */
  m->cycle = 1;
  uint8_t prefix[PROTO_EXTENT_PREFIX_SIZE];
  assert_int_equal(proto_encode_extent_prefix(prefix, m), RPL_OK);
  return RPL_OK;
}

static void run_and_check(struct fixture *f, const struct pipeline_config *cfg,
                          const struct pipeline_extent *x, size_t n, struct pipeline_stats *st)
{
  struct pipeline *p;
  assert_int_equal(pipeline_create(f->fd_direct, cfg, &p), RPL_OK);
  struct check_ctx c = {.f = f, .want = x, .fail_at = SIZE_MAX, .scratch = malloc(1u << 20)};
  assert_int_equal(pipeline_run(p, x, n, check_emit, &c, st), RPL_OK);
  assert_int_equal(c.next, n);
  /* The same pipeline runs again (buffers and ring reused), with unit hashes. */
  c.next = 0;
  c.unit_hashes = true;
  pipeline_set_unit_hashes(p, true);
  assert_int_equal(pipeline_run(p, x, n, check_emit, &c, NULL), RPL_OK);
  assert_int_equal(c.next, n);
  free(c.scratch);
  pipeline_destroy(p);
}

static void test_whole_file_default_config(void **state)
{
  struct fixture *f = *state;
  struct pipeline_extent x[64];
  size_t n = pipeline_split_extents(0, FILE_SIZE, 1u << 20, x, 64);
  assert_int_equal(n, 17);
  struct pipeline_stats st;
  /* The default starts with compression off: 17 extents are less than one window, so the link
   * never had the chance to ask for zstd. */
  run_and_check(f, NULL, x, n, &st);
  assert_true(st.extents == n);
  assert_true(st.raw_bytes == FILE_SIZE);
  assert_true(st.zero_extents == 4);   /* MiB 1, 5, 9, 13 */
  assert_true(st.raw_extents == 13);
  assert_true(st.zstd_tried_extents == 0);
  assert_int_equal(st.zstd_level, PIPELINE_LEVEL_RAW);
  assert_true(st.payload_bytes == FILE_SIZE - 4 * (1u << 20));

  /* Started at level 1, the text goes out compressed. */
  struct pipeline_config level1 = {PIPELINE_CONFIG_DEFAULTS, .zstd_level_start = 1};
  run_and_check(f, &level1, x, n, &st);
  assert_true(st.zero_extents == 4);
  assert_true(st.raw_extents == 4);    /* MiB 2, 6, 10, 14: random */
  assert_true(st.zstd_extents == 9);   /* text, and the 64 KiB tail */
  assert_int_equal(st.zstd_level, 1);
  assert_true(st.payload_bytes < FILE_SIZE / 2);

  /* Without raw_floor there is no "off": the default start is the cheapest level. */
  struct pipeline_config no_floor = {.compress = 1};
  run_and_check(f, &no_floor, x, n, &st);
  assert_int_equal(st.zstd_level, -9);
  assert_true(st.zstd_extents == 9);
}

static void test_small_window_many_odd_extents(void **state)
{
  struct fixture *f = *state;
  /* Small extents at odd (but 512-aligned) places, more of them than slots, out of disk order. */
  static struct pipeline_extent x[3000];
  size_t n = 0;
  uint32_t r = 99;
  while (n < 3000) {
    uint32_t len = 512u * (1 + (r = r * 1664525u + 1013904223u) % 128);
    uint64_t off = 512ull * ((r = r * 1664525u + 1013904223u) % ((FILE_SIZE - len) / 512));
    x[n].offset = off;
    x[n].length = len;
    n++;
  }
  struct pipeline_config cfg = {.queue_depth = 4, .workers = 2, .max_extent = 64u << 10, .compress = 1};
  struct pipeline_stats st;
  run_and_check(f, &cfg, x, n, &st);
  assert_true(st.extents == n);
  /* Without compression every non-zero extent goes raw. */
  cfg.compress = 0;
  run_and_check(f, &cfg, x, n, &st);
  assert_true(st.zstd_extents == 0);
  assert_true(st.zero_extents > 0);
}

static void test_errors(void **state)
{
  struct fixture *f = *state;
  struct pipeline *p;
  assert_int_equal(pipeline_create(f->fd_direct, NULL, &p), RPL_OK);
  struct check_ctx c = {.f = f, .fail_at = SIZE_MAX, .scratch = malloc(1u << 20)};
  /* Past the end of the device: a clear I/O error, not a short extent. */
  struct pipeline_extent beyond[2] = {{0, 4096}, {FILE_SIZE, 4096}};
  c.want = beyond;
  assert_int_equal(pipeline_run(p, beyond, 2, check_emit, &c, NULL), RPL_E_IO);
  /* Misaligned or oversized extents are refused before any read. */
  struct pipeline_extent bad[1] = {{100, 4096}};
  assert_int_equal(pipeline_run(p, bad, 1, check_emit, &c, NULL), RPL_E_INVALID_ARGUMENT);
  bad[0] = (struct pipeline_extent){0, (1u << 20) + 512};
  assert_int_equal(pipeline_run(p, bad, 1, check_emit, &c, NULL), RPL_E_INVALID_ARGUMENT);
  /* The consumer stops the run: its error comes back, and the pipeline stays usable. */
  struct pipeline_extent x[17];
  size_t n = pipeline_split_extents(0, FILE_SIZE, 1u << 20, x, 17);
  c.want = x;
  c.next = 0;
  c.fail_at = 5;
  assert_int_equal(pipeline_run(p, x, n, check_emit, &c, NULL), RPL_E_CANCELLED);
  assert_int_equal(c.next, 5);
  c.next = 0;
  c.fail_at = SIZE_MAX;
  assert_int_equal(pipeline_run(p, x, n, check_emit, &c, NULL), RPL_OK);
  assert_int_equal(c.next, n);
  free(c.scratch);
  pipeline_destroy(p);
  assert_int_equal(pipeline_split_extents(0, 10u << 20, 1u << 20, x, 5), SIZE_MAX);
}

static void test_is_zero(void **state)
{
  static uint64_t buf[1024];
  memset(buf, 0, sizeof buf);
  assert_true(pipeline_is_zero(buf, sizeof buf));
  for (size_t i = 0; i < 1024; i += 97) {
    buf[i] = 1ull << (i % 64);
    assert_false(pipeline_is_zero(buf, sizeof buf));
    buf[i] = 0;
  }
}

/* One decision from a fresh streak (no decision before it). */
static int next(int level, int min, int max, bool raw_floor, uint64_t cpu_wait, uint64_t link_wait)
{
  int streak = 0;
  return pipeline_next_level(level, min, max, raw_floor, cpu_wait, link_wait, &streak);
}

/* The adaptive level's first step is one within its bounds, never through 0 (zstd's default, 3);
 * with the raw floor, one step below the lowest level turns compression off, and back up from it.
 * Decisions in a row the same way double the step (1, 2, 4, 4), a step past a bound stops at it,
 * and a turn or a hold starts again at 1. */
static void test_next_level(void **state)
{
  (void)state;
  /* CPU-bound from level 1: -1, -3, -7, then -9 (the bound), then off: 5 windows, not 11. */
  int streak = 0, lv = 1;
  const int down_from_1[] = {-1, -3, -7, -9, PIPELINE_LEVEL_RAW, PIPELINE_LEVEL_RAW};
  for (size_t i = 0; i < sizeof down_from_1 / sizeof down_from_1[0]; i++) {
    lv = pipeline_next_level(lv, -9, 6, true, 100, 0, &streak);
    assert_int_equal(lv, down_from_1[i]);
  }
  /* The link waits: back to -9, then -7, -3, 2 (over 0: four steps above -3), 6, 6 (the bound). */
  streak = 0;
  const int up_from_off[] = {-9, -7, -3, 2, 6, 6};
  for (size_t i = 0; i < sizeof up_from_off / sizeof up_from_off[0]; i++) {
    lv = pipeline_next_level(lv, -9, 6, true, 0, 100, &streak);
    assert_int_equal(lv, up_from_off[i]);
  }
  /* A turn starts at one step, and so does a decision after a hold. */
  assert_int_equal(pipeline_next_level(6, -9, 6, true, 100, 0, &streak), 5);
  assert_int_equal(streak, -1);
  assert_int_equal(pipeline_next_level(5, -9, 6, true, 100, 0, &streak), 3);
  assert_int_equal(pipeline_next_level(3, -9, 6, true, 100, 60, &streak), 3); /* neither: held */
  assert_int_equal(streak, 0);
  assert_int_equal(pipeline_next_level(3, -9, 6, true, 100, 0, &streak), 2);
  /* The streak stays bounded however long one way lasts. */
  for (int i = 0; i < 1000; i++)
    (void)pipeline_next_level(-9, -9, 6, false, 100, 0, &streak);
  assert_int_equal(streak, -(PIPELINE_STEP_DOUBLINGS + 1));
  assert_int_equal(next(1, -9, 6, false, 100, 0), -1);   /* workers waited: down, over 0 */
  assert_int_equal(next(-1, -9, 6, false, 0, 100), 1);   /* the link waited: up, over 0 */
  assert_int_equal(next(3, -9, 6, false, 0, 100), 4);
  assert_int_equal(next(-3, -9, 6, false, 100, 0), -4);
  assert_int_equal(next(6, -9, 6, false, 0, 100), 6);    /* at the top */
  assert_int_equal(next(-9, -9, 6, false, 100, 0), -9);  /* at the bottom */
  assert_int_equal(next(1, 1, 6, false, 100, 0), 1);     /* -1 is outside the range */
  assert_int_equal(next(2, -9, 6, false, 100, 60), 2);   /* neither waited twice the other */
  assert_int_equal(next(2, -9, 6, false, 0, 0), 2);
  for (int level = -9; level <= 6; level++)
    if (level) {
      assert_int_not_equal(next(level, -9, 6, true, 100, 0), 0);
      assert_int_not_equal(next(level, -9, 6, true, 0, 100), 0);
    }
  /* The raw floor: below the bottom, compression off; it stays off until the link waits. */
  assert_int_equal(next(-9, -9, 6, true, 100, 0), PIPELINE_LEVEL_RAW);
  assert_int_equal(next(-8, -9, 6, true, 100, 0), -9);
  assert_int_equal(next(PIPELINE_LEVEL_RAW, -9, 6, true, 100, 0), PIPELINE_LEVEL_RAW);
  assert_int_equal(next(PIPELINE_LEVEL_RAW, -9, 6, true, 100, 60), PIPELINE_LEVEL_RAW);
  assert_int_equal(next(PIPELINE_LEVEL_RAW, -9, 6, true, 0, 100), -9);
  assert_int_equal(next(1, 1, 6, true, 100, 0), PIPELINE_LEVEL_RAW); /* the floor is below any min */
  char text[16];
  assert_string_equal(pipeline_level_text(PIPELINE_LEVEL_RAW, text), "off");
  assert_string_equal(pipeline_level_text(-9, text), "-9");
}

/* A link that always waited a second per send: the level wants up at every window. */
static uint64_t slow_link_ns;
static uint64_t slow_link_clock(void) { return slow_link_ns += 1000000000ull; }

/* count extents of 16 KiB taken round-robin from the MiBs of the fixture with this remainder mod 4. */
static struct pipeline_extent *extents_in(unsigned mib_mod4, size_t count)
{
  struct pipeline_extent *x = calloc(count, sizeof *x);
  assert_non_null(x);
  const size_t per_mib = (1u << 20) / (16u << 10);
  for (size_t i = 0; i < count; i++) {
    size_t k = i % (4 * per_mib); /* the fixture has 4 such MiBs */
    x[i].offset = ((k / per_mib) * 4 + mib_mod4) * (1ull << 20) + (k % per_mib) * (16u << 10);
    x[i].length = 16u << 10;
  }
  return x;
}

/* zstd is futile when what it ran on (at least half of the data) came out less than 1/32 smaller. */
static void test_compression_futile(void **state)
{
  (void)state;
  assert_false(pipeline_compression_futile(0, 0, 0));           /* nothing tried */
  assert_false(pipeline_compression_futile(1000, 0, 0));
  assert_false(pipeline_compression_futile(1000, 499, 0));      /* too little tried to tell */
  assert_true(pipeline_compression_futile(1000, 500, 0));
  assert_true(pipeline_compression_futile(3200, 3200, 99));     /* under 1/32 */
  assert_false(pipeline_compression_futile(3200, 3200, 100));   /* 1/32: worth it */
  assert_false(pipeline_compression_futile(3200, 1600, 1000));
}

/* Incompressible data on a slow link: the level wants up all the time, but after the first futile
 * window zstd runs only in short probes, further apart each time, and the extents arrive intact.
 * Compressible data on the same link is never futile and goes out compressed. */
static void test_futile_compression_holds_off(void **state)
{
  struct fixture *f = *state;
  const size_t n = 40 * 32; /* 40 windows */
  struct pipeline_config cfg = {PIPELINE_CONFIG_DEFAULTS, .max_extent = 16u << 10, .link_wait_ns = slow_link_clock};
  struct pipeline_extent *random = extents_in(2, n);
  struct pipeline_stats st;
  run_and_check(f, &cfg, random, n, &st);
  printf("incompressible: zstd ran on %llu of %llu extents, %llu futile windows\n",
         (unsigned long long)st.zstd_tried_extents, (unsigned long long)st.extents, (unsigned long long)st.futile_windows);
  assert_int_equal(st.zstd_extents, 0);
  /* The first window, then probes after holds of 8 and 16 windows (each a window or two, and the
   * extents already in the workers): a quarter at most, not the 1280 extents of a level that only
   * follows the link. */
  assert_true(st.futile_windows >= 3);
  assert_true(st.zstd_tried_extents <= n / 4);
  assert_int_equal(st.zstd_level, PIPELINE_LEVEL_RAW);
  free(random);

  struct pipeline_extent *text = extents_in(3, n);
  run_and_check(f, &cfg, text, n, &st);
  assert_int_equal(st.futile_windows, 0);
  assert_true(st.zstd_extents > n / 2);
  assert_true(st.zstd_level > 1); /* the slow link raised it */
  free(text);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_whole_file_default_config),
    cmocka_unit_test(test_small_window_many_odd_extents),
    cmocka_unit_test(test_errors),
    cmocka_unit_test(test_is_zero),
    cmocka_unit_test(test_next_level),
    cmocka_unit_test(test_compression_futile),
    cmocka_unit_test(test_futile_compression_holds_off),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
