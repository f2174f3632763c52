/* test_undo.c - Description: undo files keep a point's blocks across formats: version 2 (groups
 * written O_DIRECT while the next fills) gives back every point's image over many groups; a group
 * torn by a crash is cut off whole at the next open and its blocks are kept again, as are those of
 * a group whose write failed (a file size limit); a version 1 file
 * made by an older appliance is read, appended to in its own format, and merged into and from. All
 * of it again without io_uring and O_DIRECT (RPL_TEST_UNDO_PLAIN), the ways some kernels and
 * filesystems leave. */
#include <inttypes.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "proto.h"
#include "tmpdir.h"
#include "undo.h"

#define BLOCK UNDO_BLOCK
#define DISK_BLOCKS 2048u /* 8 MiB */
#define DISK_SIZE ((uint64_t)DISK_BLOCKS * BLOCK)

struct ctx {
  char dir[256];
  char image[300];
  char undo[400];               /* undo_path's answer */
  int fd;
  uint8_t *live;                /* what the image holds */
  uint8_t *at[8];               /* the image at each point (cycle 1..7) */
  uint64_t rng;
};

static uint64_t next_rand(struct ctx *c)
{
  c->rng ^= c->rng << 13;
  c->rng ^= c->rng >> 7;
  c->rng ^= c->rng << 17;
  return c->rng;
}

/* Overwrites [off, off + len) of the image (and the model) with fresh bytes, after the newest
 * undo file kept what was there, as the replica's guard does. */
static void overwrite(struct ctx *c, struct undo_log *u, uint64_t off, uint32_t len)
{
  assert_int_equal(undo_log_note(u, c->fd, DISK_SIZE, off, len), RPL_OK);
  for (uint32_t i = 0; i < len; i++)
    c->live[off + i] = (uint8_t)next_rand(c);
}

/* The notes so far made durable, then the image written as the model says. */
static void apply(struct ctx *c, struct undo_log *u)
{
  assert_int_equal(undo_log_sync(u), RPL_OK);
  assert_int_equal(pwrite(c->fd, c->live, DISK_SIZE, 0), (ssize_t)DISK_SIZE);
}

/* Many runs, of 1 block to longer than one record, and a block written twice: more than one group. */
static void churn(struct ctx *c, struct undo_log *u, unsigned runs)
{
  for (unsigned i = 0; i < runs; i++) {
    uint32_t blocks = i % 50 == 0 ? UNDO_MAX_RUN + 7 : 1 + (uint32_t)(next_rand(c) % 9);
    uint64_t first = next_rand(c) % (DISK_BLOCKS - blocks);
    overwrite(c, u, first * BLOCK, blocks * BLOCK);
    if (i % 7 == 0) /* sectors inside a block: the whole block is kept */
      overwrite(c, u, first * BLOCK + 512, 1024);
  }
}

static void snapshot(struct ctx *c, uint64_t cycle)
{
  free(c->at[cycle]);
  c->at[cycle] = malloc(DISK_SIZE);
  assert_non_null(c->at[cycle]);
  memcpy(c->at[cycle], c->live, DISK_SIZE);
}

static void expect_point(struct ctx *c, uint64_t cycle)
{
  struct undo_view *v;
  assert_int_equal(undo_view_open(c->image, cycle, &v), RPL_OK);
  uint8_t *got = malloc(DISK_SIZE);
  assert_non_null(got);
  for (uint64_t off = 0; off < DISK_SIZE; off += 1u << 20)
    assert_int_equal(undo_view_read(v, off, got + off, 1u << 20), RPL_OK);
  undo_view_close(v);
  for (uint64_t b = 0; b < DISK_BLOCKS; b++)
    if (memcmp(got + b * BLOCK, c->at[cycle] + b * BLOCK, BLOCK) != 0)
      fail_msg("point %" PRIu64 ": block %" PRIu64 " differs", cycle, b);
  free(got);
}

/* The undo file of the point at cycle. */
static const char *undo_path(struct ctx *c, uint64_t cycle)
{
  snprintf(c->undo, sizeof c->undo, "%s" UNDO_SUFFIX "%" PRIu64, c->image, cycle);
  return c->undo;
}

static uint64_t file_size(struct ctx *c, uint64_t cycle)
{
  struct stat sb;
  assert_int_equal(stat(undo_path(c, cycle), &sb), 0);
  return (uint64_t)sb.st_size;
}

/* Pages of the point's undo file in the page cache. */
static size_t resident_pages(struct ctx *c, uint64_t cycle)
{
  int fd = open(undo_path(c, cycle), O_RDONLY);
  assert_true(fd >= 0);
  size_t len = (size_t)file_size(c, cycle), pages = (len + 4095) / 4096, n = 0;
  void *map = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
  assert_true(map != MAP_FAILED);
  unsigned char *vec = malloc(pages);
  assert_non_null(vec);
  assert_int_equal(mincore(map, len, vec), 0);
  for (size_t i = 0; i < pages; i++)
    n += vec[i] & 1;
  free(vec);
  munmap(map, len);
  close(fd);
  return n;
}

static bool plain_ways(void)
{
  const char *p = getenv("RPL_TEST_UNDO_PLAIN");
  return p && strcmp(p, "1") == 0;
}

static uint32_t file_version_of(struct ctx *c, uint64_t cycle)
{
  uint8_t h[16];
  int fd = open(undo_path(c, cycle), O_RDONLY);
  assert_true(fd >= 0);
  assert_int_equal(pread(fd, h, sizeof h, 0), (ssize_t)sizeof h);
  close(fd);
  uint32_t v;
  memcpy(&v, h + 8, sizeof v);
  return v;
}

/* An undo file as an appliance of format version 1 wrote it: a 64-byte header, then records (a
 * 32-byte header and the blocks), holding the model's blocks [first, first + n) as they are now. */
static void write_v1(struct ctx *c, uint64_t cycle, uint64_t first, uint32_t n)
{
  struct { char magic[8]; uint32_t version, block; uint64_t cycle; int64_t created; uint64_t disk_size;
           uint8_t reserved[16]; uint64_t hash; } h = {.version = 1, .block = BLOCK, .cycle = cycle,
                                                      .created = time(NULL), .disk_size = DISK_SIZE};
  _Static_assert(sizeof h == 64, "version 1 header");
  memcpy(h.magic, "RPLUNDO1", 8);
  h.hash = proto_hash64(&h, offsetof(__typeof__(h), hash));
  int fd = open(undo_path(c, cycle), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, &h, sizeof h), (ssize_t)sizeof h);
  for (uint32_t done = 0; done < n;) { /* records of 3 blocks */
    uint32_t k = n - done < 3 ? n - done : 3;
    struct { uint32_t magic, nblocks; uint64_t offset, data_hash, hash; } r = {
      .magic = 0x43455255u, .nblocks = k, .offset = (first + done) * BLOCK};
    const uint8_t *data = c->live + (first + done) * BLOCK;
    r.data_hash = proto_hash64(data, (size_t)k * BLOCK);
    r.hash = proto_hash64(&r, offsetof(__typeof__(r), hash));
    assert_int_equal(write(fd, &r, sizeof r), (ssize_t)sizeof r);
    assert_int_equal(write(fd, data, (size_t)k * BLOCK), (ssize_t)k * BLOCK);
    done += k;
  }
  close(fd);
}

static int setup(void **state)
{
  struct ctx *c = calloc(1, sizeof *c);
  if (!c || tmpdir_create(c->dir, sizeof c->dir, "undo"))
    return -1;
  snprintf(c->image, sizeof c->image, "%s/disk.img", c->dir);
  c->rng = 0x9e3779b97f4a7c15ull;
  c->live = malloc(DISK_SIZE);
  if (!c->live)
    return -1;
  for (uint64_t i = 0; i < DISK_SIZE; i++)
    c->live[i] = (uint8_t)next_rand(c);
  c->fd = open(c->image, O_RDWR | O_CREAT | O_TRUNC, 0600);
  if (c->fd < 0 || pwrite(c->fd, c->live, DISK_SIZE, 0) != (ssize_t)DISK_SIZE)
    return -1;
  *state = c;
  return 0;
}

static int teardown(void **state)
{
  struct ctx *c = *state;
  if (c->fd >= 0)
    close(c->fd);
  tmpdir_remove(c->dir);
  for (size_t i = 0; i < 8; i++)
    free(c->at[i]);
  free(c->live);
  free(c);
  return 0;
}

static void test_groups_keep_every_point(void **state)
{
  struct ctx *c = *state;
  struct undo_log *u = NULL;
  for (uint64_t cycle = 1; cycle <= 3; cycle++) {
    snapshot(c, cycle);
    assert_int_equal(undo_log_start(c->image, cycle, DISK_SIZE, &u), RPL_OK);
    assert_int_equal(file_version_of(c, cycle), 2);
    churn(c, u, 400); /* about 2,400 blocks in runs: many groups, some full by entries, some by blocks */
    apply(c, u);
    assert_int_equal(file_size(c, cycle) % BLOCK, 0);
    /* O_DIRECT: the groups took no page-cache pages (the header block, written at the start, may be there). */
    size_t cached = plain_ways() ? 0 : resident_pages(c, cycle);
    if (cached > 1)
      fail_msg("point %" PRIu64 ": %zu of the undo file's %" PRIu64 " pages are in the page cache", cycle, cached,
               file_size(c, cycle) / 4096);
  }
  undo_log_close(u);
  for (uint64_t cycle = 1; cycle <= 3; cycle++)
    expect_point(c, cycle);
  /* Retention: point 2 merged into point 1, then gone; point 1 and 3 unchanged. */
  u = NULL;
  assert_int_equal(undo_log_open(c->image, &u), RPL_OK);
  assert_int_equal(undo_delete(c->image, 2, &u), RPL_OK);
  undo_log_close(u);
  expect_point(c, 1);
  expect_point(c, 3);
}

/* Point 1, and a cycle after it that kept blocks 0..49 in 10 runs: 100..163 stay not kept. */
static struct undo_log *point1_small(struct ctx *c)
{
  struct undo_log *u = NULL;
  snapshot(c, 1);
  assert_int_equal(undo_log_start(c->image, 1, DISK_SIZE, &u), RPL_OK);
  for (uint64_t i = 0; i < 10; i++)
    overwrite(c, u, i * 5 * BLOCK, 5 * BLOCK);
  apply(c, u);
  return u;
}

static void test_torn_group_cut_off(void **state)
{
  struct ctx *c = *state;
  struct undo_log *u = point1_small(c);
  uint64_t whole = file_size(c, 1);
  /* A crash amid the next group: its header and part of its blocks reached the file. */
  overwrite(c, u, 100 * BLOCK, 64 * BLOCK);
  assert_int_equal(undo_log_sync(u), RPL_OK); /* the image is not written: the crash came first */
  undo_log_close(u);
  assert_true(file_size(c, 1) > whole + BLOCK);
  assert_int_equal(truncate(undo_path(c, 1), (off_t)(whole + BLOCK + 10 * BLOCK + 100)), 0);
  assert_int_equal(pread(c->fd, c->live, DISK_SIZE, 0), (ssize_t)DISK_SIZE); /* that write never happened */
  u = NULL;
  assert_int_equal(undo_log_open(c->image, &u), RPL_OK);
  assert_int_equal(file_size(c, 1), whole); /* the torn group is cut off whole */
  expect_point(c, 1);
  /* Its blocks are kept again when they are about to be overwritten. */
  overwrite(c, u, 100 * BLOCK, 64 * BLOCK);
  apply(c, u);
  undo_log_close(u);
  assert_true(file_size(c, 1) > whole);
  expect_point(c, 1);
}

static void test_failed_write_kept_again(void **state)
{
  struct ctx *c = *state;
  struct undo_log *u = point1_small(c);
  uint64_t whole = file_size(c, 1);
  /* The next group does not fit under the file size limit: its write fails (EFBIG). */
  struct rlimit lim, low;
  assert_int_equal(getrlimit(RLIMIT_FSIZE, &lim), 0);
  low = lim;
  low.rlim_cur = whole + 2 * BLOCK;
  signal(SIGXFSZ, SIG_IGN);
  assert_int_equal(setrlimit(RLIMIT_FSIZE, &low), 0);
  overwrite(c, u, 100 * BLOCK, 64 * BLOCK);
  rpl_err e = undo_log_sync(u);
  assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
  assert_int_not_equal(e, RPL_OK);
  /* So the image was not written; the cycle comes again and its blocks are kept this time. */
  assert_int_equal(pread(c->fd, c->live, DISK_SIZE, 0), (ssize_t)DISK_SIZE);
  overwrite(c, u, 100 * BLOCK, 64 * BLOCK);
  apply(c, u);
  undo_log_close(u);
  assert_true(file_size(c, 1) >= whole + BLOCK + 64 * BLOCK);
  expect_point(c, 1);
}

static void test_version1_read_appended_merged(void **state)
{
  struct ctx *c = *state;
  /* Point 1 by an older appliance: it kept blocks 10..29 before they changed. */
  snapshot(c, 1);
  write_v1(c, 1, 10, 20);
  for (uint64_t i = 10 * BLOCK; i < 30 * BLOCK; i++)
    c->live[i] ^= 0x5a;
  assert_int_equal(pwrite(c->fd, c->live, DISK_SIZE, 0), (ssize_t)DISK_SIZE);
  expect_point(c, 1);

  /* This appliance appends to it in version 1 (the file stays readable by both). */
  struct undo_log *u = NULL;
  assert_int_equal(undo_log_open(c->image, &u), RPL_OK);
  churn(c, u, 60);
  apply(c, u);
  assert_int_equal(file_version_of(c, 1), 1);
  expect_point(c, 1);

  /* A new point is version 2; pruning it merges its blocks into the version 1 file. */
  snapshot(c, 2);
  assert_int_equal(undo_log_start(c->image, 2, DISK_SIZE, &u), RPL_OK);
  assert_int_equal(file_version_of(c, 2), 2);
  churn(c, u, 60);
  apply(c, u);
  snapshot(c, 3);
  assert_int_equal(undo_log_start(c->image, 3, DISK_SIZE, &u), RPL_OK);
  churn(c, u, 60);
  apply(c, u);
  expect_point(c, 1);
  expect_point(c, 2);
  assert_int_equal(undo_delete(c->image, 2, &u), RPL_OK);
  expect_point(c, 1);
  expect_point(c, 3);
  /* Pruning the version 1 point (the oldest) leaves point 3 whole. */
  assert_int_equal(undo_delete(c->image, 1, &u), RPL_OK);
  expect_point(c, 3);
  undo_log_close(u);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown(test_groups_keep_every_point, setup, teardown),
    cmocka_unit_test_setup_teardown(test_torn_group_cut_off, setup, teardown),
    cmocka_unit_test_setup_teardown(test_failed_write_kept_again, setup, teardown),
    cmocka_unit_test_setup_teardown(test_version1_read_appended_merged, setup, teardown),
  };
  int failed = cmocka_run_group_tests_name("io_uring and O_DIRECT", tests, NULL, NULL);
  /* The ways without them: a kernel without io_uring, a filesystem that refuses O_DIRECT. */
  setenv("RPL_TEST_UNDO_PLAIN", "1", 1);
  return failed + cmocka_run_group_tests_name("one at a time, through the page cache", tests, NULL, NULL);
}
