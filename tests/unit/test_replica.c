/* test_replica.c - Description: journal cycles applied to the file replica give an image
 * byte-identical to a model of the disk (data, zstd and zero extents); replay after a crash before
 * or after the apply gives the same image; a hash mismatch, bad zstd or out-of-range extent leaves
 * the image untouched; order, resize, copy and compare. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uuid/uuid.h>
#include <zstd.h>
#include <cmocka.h>

#include "journal.h"
#include "replica.h"
#include "rpl_log.h"
#include "tmpdir.h"

#define DISK_SIZE (4u << 20)
#define MAX_EXTENTS 80

struct ctx {
  char dir[256];    /* short, so every path built from it fits PATH_MAX */
  char img_dir[300];
  uint8_t disk[PROTO_ID_SIZE];
  uint8_t *model;   /* what the disk holds after the cycles so far */
  uint64_t rng;
  struct journal *j;
  struct replica *r;
};

static uint64_t next_rand(struct ctx *c)
{
  c->rng ^= c->rng << 13;
  c->rng ^= c->rng >> 7;
  c->rng ^= c->rng << 17;
  return c->rng;
}

static int setup(void **state)
{
  struct ctx *c = calloc(1, sizeof *c);
  if (!c || tmpdir_create(c->dir, sizeof c->dir, "replica"))
    return -1;
  snprintf(c->img_dir, sizeof c->img_dir, "%s/images", c->dir);
  for (int i = 0; i < PROTO_ID_SIZE; i++)
    c->disk[i] = (uint8_t)(0xa0 + i);
  c->model = calloc(1, DISK_SIZE);
  c->rng = 0x243f6a8885a308d3ull;
  if (!c->model)
    return -1;
  if (journal_open(c->dir, c->disk, NULL, &c->j) || replica_open(c->img_dir, c->disk, DISK_SIZE, &c->r))
    return -1;
  *state = c;
  return 0;
}

static int teardown(void **state)
{
  struct ctx *c = *state;
  replica_close(c->r);
  journal_close(c->j);
  tmpdir_remove(c->dir);
  free(c->model);
  free(c);
  return 0;
}

static void reopen(struct ctx *c)
{
  replica_close(c->r);
  journal_close(c->j);
  c->r = NULL;
  c->j = NULL;
  assert_int_equal(journal_open(c->dir, c->disk, NULL, &c->j), RPL_OK);
  assert_int_equal(replica_open(c->img_dir, c->disk, DISK_SIZE, &c->r), RPL_OK);
}

/* Builds one extent: its raw content (random, or compressible text-like runs, or zeros) and the
 * payload for its codec. payload must hold ZSTD_compressBound(length) bytes. */
static struct journal_extent build_extent(struct ctx *c, uint64_t offset, uint32_t length, uint8_t codec,
                                          uint8_t *raw, uint8_t *payload)
{
  struct journal_extent x = {.offset = offset, .length = length, .codec = codec};
  if (codec == PROTO_CODEC_ZERO) {
    memset(raw, 0, length);
  } else if (codec == PROTO_CODEC_ZSTD) {
    for (uint32_t k = 0; k < length; k++) /* compressible: short runs of a few symbols */
      raw[k] = (uint8_t)('a' + (k / 7 + next_rand(c) % 2) % 6);
    size_t n = ZSTD_compress(payload, ZSTD_compressBound(length), raw, length, 1);
    assert_false(ZSTD_isError(n));
    x.payload = payload;
    x.payload_len = (uint32_t)n;
  } else {
    for (uint32_t k = 0; k < length; k++)
      raw[k] = (uint8_t)next_rand(c);
    memcpy(payload, raw, length);
    x.payload = payload;
    x.payload_len = length;
  }
  proto_hash128(raw, length, x.hash);
  return x;
}

struct cycle_builder {
  struct journal_cycle_totals t;
  uint8_t hashes[MAX_EXTENTS * PROTO_HASH_SIZE];
};

static void add_extent(struct ctx *c, struct cycle_builder *b, uint64_t n, const struct journal_extent *x)
{
  assert_true(b->t.extents < MAX_EXTENTS);
  assert_int_equal(journal_append_extent(c->j, n, x), RPL_OK);
  memcpy(b->hashes + b->t.extents * PROTO_HASH_SIZE, x->hash, PROTO_HASH_SIZE);
  b->t.extents++;
  b->t.raw_bytes += x->length;
  b->t.payload_bytes += x->payload_len;
}

static void finish_cycle(struct ctx *c, struct cycle_builder *b, uint64_t n)
{
  proto_hash128(b->hashes, b->t.extents * PROTO_HASH_SIZE, b->t.digest);
  assert_int_equal(journal_commit_cycle(c->j, n, &b->t), RPL_OK);
}

/* Commits cycle n of random extents (overlapping, all three codecs) and updates the model the way
 * the disk changed. */
static void commit_random_cycle(struct ctx *c, uint64_t n, int count)
{
  static uint8_t raw[256 << 10], payload[ZSTD_COMPRESSBOUND(256 << 10)];
  struct cycle_builder b = {0};
  assert_int_equal(journal_begin_cycle(c->j, n, PROTO_CYCLE_PLAIN), RPL_OK);
  for (int i = 0; i < count; i++) {
    uint32_t length = 512u * (uint32_t)(1 + next_rand(c) % 512);
    uint64_t offset = 512u * (next_rand(c) % ((DISK_SIZE - length) / 512 + 1));
    uint8_t codec = (uint8_t)(next_rand(c) % 3);
    struct journal_extent x = build_extent(c, offset, length, codec, raw, payload);
    add_extent(c, &b, n, &x);
    memcpy(c->model + offset, raw, length);
  }
  finish_cycle(c, &b, n);
}

static void assert_image_is_model(struct ctx *c)
{
  uint8_t *img = malloc(DISK_SIZE);
  assert_non_null(img);
  assert_int_equal(replica_size(c->r), DISK_SIZE);
  assert_int_equal(replica_read(c->r, 0, img, DISK_SIZE), RPL_OK);
  if (memcmp(img, c->model, DISK_SIZE)) {
    size_t i = 0;
    while (img[i] == c->model[i])
      i++;
    fail_msg("image differs from the model at byte %zu", i);
  }
  free(img);
}

static uint8_t *snapshot_image(struct ctx *c)
{
  uint8_t *img = malloc(replica_size(c->r));
  assert_non_null(img);
  assert_int_equal(replica_read(c->r, 0, img, replica_size(c->r)), RPL_OK);
  return img;
}

static uint64_t last_applied(struct ctx *c)
{
  struct journal_usage u;
  journal_get_usage(c->j, &u);
  return u.last_applied;
}

/* ---- tests -------------------------------------------------------------------------------- */

static void test_roundtrip_byte_identical(void **state)
{
  struct ctx *c = *state;
  for (uint64_t n = 1; n <= 8; n++)
    commit_random_cycle(c, n, 12);
  uint64_t applied;
  assert_int_equal(replica_apply_pending(c->r, c->j, &applied), RPL_OK);
  assert_int_equal(applied, 8);
  assert_int_equal(last_applied(c), 8);
  assert_image_is_model(c);

  /* Interleaved: commit, apply, commit, apply. */
  for (uint64_t n = 9; n <= 12; n++) {
    commit_random_cycle(c, n, 5);
    assert_int_equal(replica_apply_cycle(c->r, c->j, n), RPL_OK);
    assert_image_is_model(c);
  }
  /* The image as a file: copy (holes kept) and compare, with a model file as the peer. */
  char model_path[PATH_MAX], copy_path[PATH_MAX];
  snprintf(model_path, sizeof model_path, "%s/model.img", c->dir);
  snprintf(copy_path, sizeof copy_path, "%s/copy.img", c->dir);
  int fd = open(model_path, O_WRONLY | O_CREAT | O_EXCL, 0600);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, c->model, DISK_SIZE), DISK_SIZE);
  close(fd);
  uint64_t diff = 0;
  assert_int_equal(replica_compare(c->r, model_path, &diff), RPL_OK);
  assert_int_equal(replica_copy_to(c->r, copy_path), RPL_OK);
  assert_int_equal(replica_copy_to(c->r, copy_path), RPL_E_EXISTS);
  assert_int_equal(replica_compare(c->r, copy_path, &diff), RPL_OK);
  /* A differing byte and a differing length are both found. */
  c->model[DISK_SIZE - 3] ^= 1;
  fd = open(model_path, O_WRONLY);
  assert_int_equal(pwrite(fd, c->model + DISK_SIZE - 3, 1, DISK_SIZE - 3), 1);
  close(fd);
  assert_int_equal(replica_compare(c->r, model_path, &diff), RPL_E_CHECKSUM);
  assert_int_equal(diff, DISK_SIZE - 3);
  assert_int_equal(truncate(copy_path, DISK_SIZE - 512), 0);
  assert_int_equal(replica_compare(c->r, copy_path, &diff), RPL_E_CHECKSUM);
  assert_int_equal(diff, DISK_SIZE - 512);
  c->model[DISK_SIZE - 3] ^= 1;

  /* The image lives where docs/architecture.md says: DIR/<disk-id>.img. */
  char uuid[37], want[PATH_MAX];
  uuid_unparse_lower(c->disk, uuid);
  snprintf(want, sizeof want, "%s/%s.img", c->img_dir, uuid);
  assert_string_equal(replica_path(c->r), want);
}

/* Crash after commit, before apply: the reopened journal still has the cycles pending, and they
 * are applied exactly once. */
static void test_replay_after_crash_before_apply(void **state)
{
  struct ctx *c = *state;
  commit_random_cycle(c, 1, 10);
  assert_int_equal(replica_apply_cycle(c->r, c->j, 1), RPL_OK);
  commit_random_cycle(c, 2, 10);
  commit_random_cycle(c, 3, 10);
  reopen(c);
  assert_int_equal(last_applied(c), 1);
  uint64_t applied;
  assert_int_equal(replica_apply_pending(c->r, c->j, &applied), RPL_OK);
  assert_int_equal(applied, 2);
  assert_image_is_model(c);
  reopen(c);
  assert_int_equal(replica_apply_pending(c->r, c->j, &applied), RPL_OK);
  assert_int_equal(applied, 0);
  assert_int_equal(last_applied(c), 3);
  assert_image_is_model(c);
}

/* Crash after the image got cycle n's writes but before "applied n" was persisted: emulated by
 * putting back the marker file as it was before the apply. The replay applies n again and the
 * image is the same. */
static void test_replay_after_crash_between_write_and_mark(void **state)
{
  struct ctx *c = *state;
  commit_random_cycle(c, 1, 10);
  assert_int_equal(replica_apply_cycle(c->r, c->j, 1), RPL_OK);
  char marker[PATH_MAX], uuid[37];
  uuid_unparse_lower(c->disk, uuid);
  snprintf(marker, sizeof marker, "%s/journal/%s/applied", c->dir, uuid);
  uint8_t saved[64];
  int fd = open(marker, O_RDONLY);
  assert_true(fd >= 0);
  ssize_t saved_len = read(fd, saved, sizeof saved);
  assert_true(saved_len > 0);
  close(fd);
  commit_random_cycle(c, 2, 10);
  commit_random_cycle(c, 3, 10);
  assert_int_equal(replica_apply_cycle(c->r, c->j, 2), RPL_OK);
  assert_int_equal(replica_apply_cycle(c->r, c->j, 3), RPL_OK);
  replica_close(c->r);
  journal_close(c->j);
  c->r = NULL;
  c->j = NULL;
  fd = open(marker, O_WRONLY | O_TRUNC);
  assert_int_equal(write(fd, saved, (size_t)saved_len), saved_len);
  close(fd);
  assert_int_equal(journal_open(c->dir, c->disk, NULL, &c->j), RPL_OK);
  assert_int_equal(replica_open(c->img_dir, c->disk, DISK_SIZE, &c->r), RPL_OK);
  assert_int_equal(last_applied(c), 1);
  uint64_t applied;
  assert_int_equal(replica_apply_pending(c->r, c->j, &applied), RPL_OK);
  assert_int_equal(applied, 2);
  assert_image_is_model(c);
}

/* A corrupted extent (its data does not match its hash) is the last of its cycle, so a one-pass
 * apply would already have written the others: nothing of the cycle may reach the image. */
static void test_hash_mismatch_applies_nothing(void **state)
{
  struct ctx *c = *state;
  commit_random_cycle(c, 1, 8);
  assert_int_equal(replica_apply_pending(c->r, c->j, NULL), RPL_OK);
  uint8_t *before = snapshot_image(c);

  static uint8_t raw[64 << 10], payload[ZSTD_COMPRESSBOUND(64 << 10)];
  struct cycle_builder b = {0};
  assert_int_equal(journal_begin_cycle(c->j, 2, PROTO_CYCLE_PLAIN), RPL_OK);
  for (uint8_t codec = 0; codec < 3; codec++) {
    struct journal_extent x = build_extent(c, 65536u * codec, 8192, codec, raw, payload);
    add_extent(c, &b, 2, &x);
  }
  struct journal_extent bad = build_extent(c, 1u << 20, 4096, PROTO_CODEC_NONE, raw, payload);
  payload[100] ^= 0x01; /* damaged after hashing, as a bit flip in transit past the checks would */
  add_extent(c, &b, 2, &bad);
  finish_cycle(c, &b, 2);

  assert_int_equal(replica_apply_cycle(c->r, c->j, 2), RPL_E_REPLICA_HASH);
  uint8_t *after = snapshot_image(c);
  assert_memory_equal(before, after, DISK_SIZE);
  assert_int_equal(last_applied(c), 1);
  assert_int_equal(replica_apply_pending(c->r, c->j, NULL), RPL_E_REPLICA_HASH);
  free(after);
  free(before);
}

static void test_bad_zstd_applies_nothing(void **state)
{
  struct ctx *c = *state;
  uint8_t *before = snapshot_image(c);
  static uint8_t raw[64 << 10], payload[ZSTD_COMPRESSBOUND(64 << 10)];
  struct cycle_builder b = {0};
  assert_int_equal(journal_begin_cycle(c->j, 1, PROTO_CYCLE_PLAIN), RPL_OK);
  struct journal_extent x = build_extent(c, 0, 8192, PROTO_CODEC_NONE, raw, payload);
  add_extent(c, &b, 1, &x);
  x = build_extent(c, 16384, 8192, PROTO_CODEC_ZSTD, raw, payload);
  x.length = 16384; /* the frame holds 8 KiB: it does not decompress to the stated length */
  add_extent(c, &b, 1, &x);
  finish_cycle(c, &b, 1);
  assert_int_equal(replica_apply_cycle(c->r, c->j, 1), RPL_E_EXTENT_DECOMPRESS);
  uint8_t *after = snapshot_image(c);
  assert_memory_equal(before, after, DISK_SIZE);
  free(after);
  free(before);
}

/* A cycle reaching past the image's end is refused whole until the image grows to the disk's
 * new size. */
static void test_range_refused_until_resize(void **state)
{
  struct ctx *c = *state;
  static uint8_t raw[8192], payload[ZSTD_COMPRESSBOUND(8192)], first[4096], second[8192];
  uint8_t *before = snapshot_image(c);
  struct cycle_builder b = {0};
  assert_int_equal(journal_begin_cycle(c->j, 1, PROTO_CYCLE_PLAIN), RPL_OK);
  struct journal_extent x = build_extent(c, 0, 4096, PROTO_CODEC_NONE, raw, payload);
  memcpy(first, raw, sizeof first);
  add_extent(c, &b, 1, &x);
  x = build_extent(c, DISK_SIZE, 8192, PROTO_CODEC_NONE, raw, payload);
  memcpy(second, raw, sizeof second);
  add_extent(c, &b, 1, &x);
  finish_cycle(c, &b, 1);
  assert_int_equal(replica_apply_cycle(c->r, c->j, 1), RPL_E_EXTENT_RANGE);
  assert_int_equal(last_applied(c), 0);
  uint8_t *after = snapshot_image(c);
  assert_memory_equal(before, after, DISK_SIZE);
  assert_int_equal(replica_resize(c->r, DISK_SIZE + 8192), RPL_OK);
  assert_int_equal(replica_apply_cycle(c->r, c->j, 1), RPL_OK);
  uint8_t got[8192];
  assert_int_equal(replica_read(c->r, 0, got, 4096), RPL_OK);
  assert_memory_equal(got, first, 4096);
  assert_int_equal(replica_read(c->r, DISK_SIZE, got, 8192), RPL_OK);
  assert_memory_equal(got, second, 8192);
  free(after);
  free(before);
}

static void test_order_resize_and_reopen(void **state)
{
  struct ctx *c = *state;
  commit_random_cycle(c, 1, 4);
  commit_random_cycle(c, 2, 4);
  assert_int_equal(replica_apply_cycle(c->r, c->j, 2), RPL_E_CYCLE_ORDER);
  assert_int_equal(replica_apply_cycle(c->r, c->j, 1), RPL_OK);
  assert_int_equal(replica_apply_cycle(c->r, c->j, 1), RPL_OK); /* already applied: nothing to do */
  assert_int_equal(replica_apply_cycle(c->r, c->j, 2), RPL_OK);
  assert_int_equal(replica_apply_cycle(c->r, c->j, 3), RPL_E_JOURNAL_NOT_COMMITTED);
  assert_image_is_model(c);

  assert_int_equal(replica_resize(c->r, DISK_SIZE - 512), RPL_E_REPLICA_SHRINK);
  assert_int_equal(replica_resize(c->r, DISK_SIZE + 100), RPL_E_INVALID_ARGUMENT);
  assert_int_equal(replica_resize(c->r, 2 * DISK_SIZE), RPL_OK);
  assert_int_equal(replica_size(c->r), 2 * DISK_SIZE);
  uint8_t tail[512];
  assert_int_equal(replica_read(c->r, 2 * DISK_SIZE - 512, tail, sizeof tail), RPL_OK);
  for (size_t i = 0; i < sizeof tail; i++)
    assert_int_equal(tail[i], 0);
  assert_int_equal(replica_read(c->r, 2 * DISK_SIZE - 256, tail, sizeof tail), RPL_E_INVALID_ARGUMENT);
  replica_close(c->r);
  c->r = NULL;
  assert_int_equal(replica_open(c->img_dir, c->disk, DISK_SIZE, &c->r), RPL_E_REPLICA_SHRINK);
  assert_int_equal(replica_open(c->img_dir, c->disk, 2 * DISK_SIZE, &c->r), RPL_OK);
  struct stat st;
  assert_int_equal(stat(replica_path(c->r), &st), 0);
  assert_int_equal(st.st_size, 2 * DISK_SIZE);
  /* Sparse: an image that grew by 4 MiB of zeros does not take 4 MiB more space. */
  assert_true((uint64_t)st.st_blocks * 512 < 2ull * DISK_SIZE);
}

static void test_zero_extent_punches_hole(void **state)
{
  struct ctx *c = *state;
  static uint8_t raw[1 << 20], payload[ZSTD_COMPRESSBOUND(1 << 20)];
  struct cycle_builder b = {0};
  assert_int_equal(journal_begin_cycle(c->j, 1, PROTO_CYCLE_PLAIN), RPL_OK);
  struct journal_extent x = build_extent(c, 0, 1u << 20, PROTO_CODEC_NONE, raw, payload);
  add_extent(c, &b, 1, &x);
  memcpy(c->model, raw, 1u << 20);
  finish_cycle(c, &b, 1);
  assert_int_equal(replica_apply_pending(c->r, c->j, NULL), RPL_OK);
  struct stat st1, st2;
  assert_int_equal(stat(replica_path(c->r), &st1), 0);

  b = (struct cycle_builder){0};
  assert_int_equal(journal_begin_cycle(c->j, 2, PROTO_CYCLE_PLAIN), RPL_OK);
  x = build_extent(c, 0, 1u << 20, PROTO_CODEC_ZERO, raw, payload);
  add_extent(c, &b, 2, &x);
  memset(c->model, 0, 1u << 20);
  finish_cycle(c, &b, 2);
  assert_int_equal(replica_apply_pending(c->r, c->j, NULL), RPL_OK);
  assert_image_is_model(c);
  assert_int_equal(stat(replica_path(c->r), &st2), 0);
  assert_int_equal(st2.st_size, st1.st_size);
  assert_true(st2.st_blocks <= st1.st_blocks); /* a hole, where the filesystem can punch one */

  /* A zero record whose hash is not that of zeros is refused like any mismatch. */
  b = (struct cycle_builder){0};
  assert_int_equal(journal_begin_cycle(c->j, 3, PROTO_CYCLE_PLAIN), RPL_OK);
  x = build_extent(c, 4096, 4096, PROTO_CODEC_ZERO, raw, payload);
  x.hash[0] ^= 1;
  add_extent(c, &b, 3, &x);
  finish_cycle(c, &b, 3);
  assert_int_equal(replica_apply_pending(c->r, c->j, NULL), RPL_E_REPLICA_HASH);
}

/* A cycle of more raw bytes than the apply keeps in memory (66 overlapping 1 MiB extents, 66 MiB)
 * takes the second pass: same image, and a bad last extent still leaves the image untouched. */
static void test_large_cycle_second_pass(void **state)
{
  struct ctx *c = *state;
  static uint8_t raw[1 << 20], payload[ZSTD_COMPRESSBOUND(1 << 20)];
  for (uint64_t n = 1; n <= 2; n++) {
    struct cycle_builder b = {0};
    uint8_t *before = malloc(DISK_SIZE);
    assert_non_null(before);
    memcpy(before, c->model, DISK_SIZE);
    assert_int_equal(journal_begin_cycle(c->j, n, PROTO_CYCLE_PLAIN), RPL_OK);
    for (int i = 0; i < 66; i++) {
      uint64_t off = (next_rand(c) % (DISK_SIZE / 4096 - 256)) * 4096;
      struct journal_extent x = build_extent(c, off, 1u << 20, PROTO_CODEC_ZSTD, raw, payload);
      if (n == 2 && i == 65)
        x.hash[3] ^= 1;
      memcpy(c->model + off, raw, 1u << 20);
      add_extent(c, &b, n, &x);
    }
    finish_cycle(c, &b, n);
    if (n == 1) {
      assert_int_equal(replica_apply_pending(c->r, c->j, NULL), RPL_OK);
    } else {
      assert_int_equal(replica_apply_pending(c->r, c->j, NULL), RPL_E_REPLICA_HASH);
      memcpy(c->model, before, DISK_SIZE);
    }
    assert_image_is_model(c);
    free(before);
  }
}

/* A direct write is queued for the replica's writer thread: zeros (or a buffered write) over a range
 * whose data is still queued must not be overtaken by it. Rounds of queued data, each followed at
 * once by zeros over its first extent. */
static void test_direct_zeros_after_queued_data(void **state)
{
  struct ctx *c = *state;
  static uint8_t raw[1 << 20];
  memset(raw, 0xa5, sizeof raw);
  for (int round = 0; round < 8; round++) {
    for (uint64_t off = 0; off < DISK_SIZE; off += sizeof raw)
      assert_int_equal(replica_write_extent(c->r, off, raw, sizeof raw), RPL_OK);
    assert_int_equal(replica_write_extent(c->r, 0, NULL, sizeof raw), RPL_OK);
    assert_int_equal(replica_sync(c->r), RPL_OK);
    memset(c->model, 0xa5, DISK_SIZE);
    memset(c->model, 0, sizeof raw);
    assert_image_is_model(c);
  }
}

/* A delta's many small writes are in flight together (O_DIRECT where aligned, buffered where not):
 * random 4 KiB-aligned and unaligned extents, some rewriting bytes a write still in flight holds
 * (the later must win), more of them than the writes in flight and than the ring's bytes, then one
 * sync: the image is the model. */
static void test_direct_many_small_in_flight(void **state)
{
  struct ctx *c = *state;
  static uint8_t raw[256 << 10];
  for (int round = 0; round < 4; round++) {
    for (int i = 0; i < 600; i++) {
      uint32_t r = next_rand(c);
      bool aligned = r % 4 != 0;
      uint32_t len = aligned ? (1 + r % 16) * 4096u : 1 + r % 20000;
      if (i % 100 == 99)
        len = sizeof raw; /* a large one now and then: the ring wraps around */
      uint64_t off = aligned || len == sizeof raw ? (uint64_t)(next_rand(c) % ((DISK_SIZE - len) / 4096)) * 4096
                                                  : next_rand(c) % (DISK_SIZE - len);
      if (i % 7 == 3) /* the same place again: over a write likely still in flight */
        off = 4096u * (uint64_t)(round + 1);
      for (uint32_t k = 0; k < len; k++)
        raw[k] = (uint8_t)next_rand(c);
      memcpy(c->model + off, raw, len);
      assert_int_equal(replica_write_extent(c->r, off, raw, len), RPL_OK);
    }
    assert_int_equal(replica_sync(c->r), RPL_OK);
    assert_image_is_model(c);
  }
}

/* The initial sync written straight into the image: data and zero extents land where they say,
 * writes past the image are refused, and after replica_sync + journal_set_base the journal has
 * cycle 1 committed and applied, with the next cycle going through the journal as usual. */
static void test_direct_initial_sync(void **state)
{
  struct ctx *c = *state;
  static uint8_t raw[1 << 20], payload[ZSTD_COMPRESSBOUND(1 << 20)];
  /* An earlier, unfinished initial sync left data: zero extents must clear it (not skip it as a
   * hole); on a hole they write nothing. */
  memset(raw, 0x5a, sizeof raw);
  assert_int_equal(replica_write_extent(c->r, 1u << 20, raw, sizeof raw), RPL_OK);
  assert_int_equal(replica_write_extent(c->r, 3u << 20, raw, 4096), RPL_OK);
  for (uint64_t off = 0; off < DISK_SIZE; off += sizeof raw) {
    bool zero = (off >> 20) % 2 == 1;
    for (size_t i = 0; i < sizeof raw; i++)
      raw[i] = zero ? 0 : (uint8_t)next_rand(c);
    memcpy(c->model + off, raw, sizeof raw);
    assert_int_equal(replica_write_extent(c->r, off, zero ? NULL : raw, sizeof raw), RPL_OK);
  }
  assert_int_equal(replica_write_extent(c->r, DISK_SIZE - 4096, raw, 8192), RPL_E_EXTENT_RANGE);
  assert_int_equal(replica_sync(c->r), RPL_OK);
  assert_int_equal(journal_set_base(c->j, 1), RPL_OK);
  struct journal_usage u;
  journal_get_usage(c->j, &u);
  assert_int_equal(u.last_committed, 1);
  assert_int_equal(u.last_applied, 1);
  assert_image_is_model(c);

  struct cycle_builder b = {0};
  assert_int_equal(journal_begin_cycle(c->j, 2, PROTO_CYCLE_PLAIN), RPL_OK);
  struct journal_extent x = build_extent(c, 1u << 20, 1u << 20, PROTO_CODEC_ZSTD, raw, payload);
  memcpy(c->model + (1u << 20), raw, 1u << 20);
  add_extent(c, &b, 2, &x);
  finish_cycle(c, &b, 2);
  assert_int_equal(replica_apply_pending(c->r, c->j, NULL), RPL_OK);
  assert_image_is_model(c);
  /* Reopened, the journal still knows cycle 1 as in. */
  journal_close(c->j);
  assert_int_equal(journal_open(c->dir, c->disk, NULL, &c->j), RPL_OK);
  journal_get_usage(c->j, &u);
  assert_int_equal(u.last_applied, 2);
}

/* A session reads extents straight into rooms of the writer's ring: rooms filled and written in
 * place, rooms given up (the cycle's check failed) and taken back by the next write or room, many
 * more bytes than the ring holds, writes over bytes still in flight; no room where the write could
 * not use it. The image is the model, and nothing waits for ring bytes no write holds. */
static void test_direct_rooms(void **state)
{
  struct ctx *c = *state;
  static uint8_t raw[1 << 20];
  assert_null(replica_room(c->r, 512, 4096));               /* unaligned */
  assert_null(replica_room(c->r, 0, 4096 + 512));
  assert_null(replica_room(c->r, DISK_SIZE - 4096, 8192));  /* past the image */
  for (int i = 0; i < 300; i++) {
    uint32_t r = (uint32_t)next_rand(c);
    uint32_t len = i % 5 == 0 ? sizeof raw : (1 + r % 64) * 4096u;
    uint64_t off = (next_rand(c) % ((DISK_SIZE - len) / 4096 + 1)) * 4096;
    uint8_t *room = replica_room(c->r, off, len);
    assert_non_null(room);
    for (uint32_t k = 0; k < len; k += 8) {
      uint64_t v = next_rand(c);
      memcpy(room + k, &v, 8);
    }
    switch (i % 4) {
    case 0: case 1: /* filled, then written from the room */
      memcpy(c->model + off, room, len);
      assert_int_equal(replica_write_extent(c->r, off, room, len), RPL_OK);
      break;
    case 2: /* given up: the next write is another, from the caller's own bytes */
      for (uint32_t k = 0; k < 4096; k++)
        raw[k] = (uint8_t)next_rand(c);
      memcpy(c->model + 8192, raw, 4096);
      assert_int_equal(replica_write_extent(c->r, 8192, raw, 4096), RPL_OK);
      break;
    default: /* given up: the next room takes it back */
      break;
    }
  }
  assert_int_equal(replica_sync(c->r), RPL_OK);
  assert_image_is_model(c);
}

int main(void)
{
  log_init("test_replica", LOG_LVL_ERR);
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown(test_roundtrip_byte_identical, setup, teardown),
    cmocka_unit_test_setup_teardown(test_replay_after_crash_before_apply, setup, teardown),
    cmocka_unit_test_setup_teardown(test_replay_after_crash_between_write_and_mark, setup, teardown),
    cmocka_unit_test_setup_teardown(test_hash_mismatch_applies_nothing, setup, teardown),
    cmocka_unit_test_setup_teardown(test_bad_zstd_applies_nothing, setup, teardown),
    cmocka_unit_test_setup_teardown(test_range_refused_until_resize, setup, teardown),
    cmocka_unit_test_setup_teardown(test_order_resize_and_reopen, setup, teardown),
    cmocka_unit_test_setup_teardown(test_zero_extent_punches_hole, setup, teardown),
    cmocka_unit_test_setup_teardown(test_direct_zeros_after_queued_data, setup, teardown),
    cmocka_unit_test_setup_teardown(test_direct_initial_sync, setup, teardown),
    cmocka_unit_test_setup_teardown(test_direct_many_small_in_flight, setup, teardown),
    cmocka_unit_test_setup_teardown(test_direct_rooms, setup, teardown),
    cmocka_unit_test_setup_teardown(test_large_cycle_second_pass, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
