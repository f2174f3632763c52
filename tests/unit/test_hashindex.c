/* test_hashindex.c - Description: the hash index file (hashindex.h) round-trips its known chunks;
 * a damaged header or body, a wrong size, another version or chunk size, and a file left open by
 * a write load as all stale; writes mark chunks stale (the file open before they return); direct
 * writes make whole in-order chunks known only at commit (a whole chunk with its checked hash given
 * takes it without hashing again); a rehash raced by a write is dropped;
 * growth keeps the old chunks but the short last one; a blank replica's index knows every chunk as
 * zeros (the short last one too) and keeps them across a save. */
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
#include <cmocka.h>
#include <xxhash.h>

#include "hashindex.h"
#include "tmpdir.h"

#define CHUNK 4096u
#define DISK (10 * CHUNK + 512) /* a short last chunk */

struct ctx {
  char dir[256];
  char path[300];
};

static int setup(void **state)
{
  struct ctx *c = calloc(1, sizeof *c);
  if (!c || tmpdir_create(c->dir, sizeof c->dir, "hidx"))
    return -1;
  snprintf(c->path, sizeof c->path, "%s/hashindex", c->dir);
  *state = c;
  return 0;
}

static int teardown(void **state)
{
  struct ctx *c = *state;
  tmpdir_remove(c->dir);
  free(c);
  return 0;
}

static void fake_hash(uint64_t c, uint8_t h[PROTO_HASH_SIZE])
{
  for (int i = 0; i < PROTO_HASH_SIZE; i++)
    h[i] = (uint8_t)(c * 31 + (uint64_t)i * 7 + 1);
}

static uint64_t stale_of(struct hashindex *hi)
{
  struct hashindex_stats s;
  hashindex_get_stats(hi, &s);
  return s.stale_chunks;
}

/* An index whose chunks 0..known-1 are known (fake hashes), saved and closed. */
static void make_saved(const char *path, uint64_t known)
{
  struct hashindex *hi;
  unlink(path);
  assert_int_equal(hashindex_open(path, DISK, CHUNK, &hi), RPL_OK);
  assert_int_equal(stale_of(hi), 11);
  for (uint64_t c = 0; c < known; c++) {
    uint8_t h[PROTO_HASH_SIZE];
    fake_hash(c, h);
    hashindex_rehashed(hi, c, h, hashindex_generation(hi));
  }
  assert_int_equal(hashindex_save(hi), RPL_OK);
  hashindex_close(hi);
}

static void test_roundtrip(void **state)
{
  struct ctx *c = *state;
  make_saved(c->path, 7);
  struct hashindex *hi;
  assert_int_equal(hashindex_open(c->path, DISK, CHUNK, &hi), RPL_OK);
  assert_int_equal(stale_of(hi), 4);
  for (uint64_t k = 0; k < 11; k++) {
    uint8_t h[PROTO_HASH_SIZE], want[PROTO_HASH_SIZE];
    fake_hash(k, want);
    bool known = hashindex_lookup(hi, k, h);
    assert_int_equal(known, k < 7);
    if (known)
      assert_memory_equal(h, want, PROTO_HASH_SIZE);
  }
  assert_false(hashindex_dirty(hi));
  hashindex_close(hi);
  struct stat st;
  assert_int_equal(stat(c->path, &st), 0);
  assert_int_equal(st.st_size, HASHINDEX_HEADER_SIZE + 8 + 11 * PROTO_HASH_SIZE);
  char tmp[320];
  snprintf(tmp, sizeof tmp, "%s.tmp", c->path);
  assert_int_not_equal(access(tmp, F_OK), 0);
}

/* Flips one byte at off of the file. */
static void flip(const char *path, off_t off)
{
  int fd = open(path, O_RDWR);
  assert_true(fd >= 0);
  uint8_t b;
  assert_int_equal(pread(fd, &b, 1, off), 1);
  b ^= 0x40;
  assert_int_equal(pwrite(fd, &b, 1, off), 1);
  close(fd);
}

static void expect_all_stale(const char *path, uint64_t size, uint32_t chunk, const char *why)
{
  struct hashindex *hi;
  assert_int_equal(hashindex_open(path, size, chunk, &hi), RPL_OK);
  struct hashindex_stats s;
  hashindex_get_stats(hi, &s);
  assert_int_equal(s.stale_chunks, s.chunks);
  if (!strstr(s.loaded, why))
    fail_msg("loaded: \"%s\", expected it to say \"%s\"", s.loaded, why);
  uint8_t h[PROTO_HASH_SIZE];
  assert_false(hashindex_lookup(hi, 0, h));
  hashindex_close(hi);
}

static void test_damage_loads_stale(void **state)
{
  struct ctx *c = *state;
  make_saved(c->path, 11);
  flip(c->path, HASHINDEX_HEADER_SIZE + 8 + 5 * PROTO_HASH_SIZE + 3); /* a hash */
  expect_all_stale(c->path, DISK, CHUNK, "checksum is wrong");

  make_saved(c->path, 11);
  flip(c->path, HASHINDEX_HEADER_SIZE); /* the bitmap */
  expect_all_stale(c->path, DISK, CHUNK, "checksum is wrong");

  make_saved(c->path, 11);
  flip(c->path, 30); /* disk_size, under the header checksum */
  expect_all_stale(c->path, DISK, CHUNK, "header is damaged");

  make_saved(c->path, 11);
  assert_int_equal(truncate(c->path, HASHINDEX_HEADER_SIZE + 20), 0);
  expect_all_stale(c->path, DISK, CHUNK, "size is wrong");

  make_saved(c->path, 11);
  int fd = open(c->path, O_WRONLY | O_APPEND);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, "x", 1), 1);
  close(fd);
  expect_all_stale(c->path, DISK, CHUNK, "size is wrong");

  make_saved(c->path, 11);
  flip(c->path, 0);
  expect_all_stale(c->path, DISK, CHUNK, "not a hash index");

  make_saved(c->path, 11);
  expect_all_stale(c->path, DISK, CHUNK * 2, "chunks of 4096 bytes");
  make_saved(c->path, 11);
  expect_all_stale(c->path, DISK - CHUNK, CHUNK, "made for a disk of");

  unlink(c->path);
  expect_all_stale(c->path, DISK, CHUNK, "none yet");
}

/* A file of another version, its header checksum right: refused all the same. */
static void test_other_version(void **state)
{
  struct ctx *c = *state;
  make_saved(c->path, 11);
  int fd = open(c->path, O_RDWR);
  assert_true(fd >= 0);
  uint8_t h[HASHINDEX_HEADER_SIZE];
  assert_int_equal(pread(fd, h, sizeof h, 0), (ssize_t)sizeof h);
  h[8] = HASHINDEX_VERSION + 1;
  uint64_t sum = XXH3_64bits(h, 48);
  for (int i = 0; i < 8; i++)
    h[48 + i] = (uint8_t)(sum >> (8 * i));
  assert_int_equal(pwrite(fd, h, sizeof h, 0), (ssize_t)sizeof h);
  close(fd);
  expect_all_stale(c->path, DISK, CHUNK, "version 2");
}

static void test_write_marks_open(void **state)
{
  struct ctx *c = *state;
  make_saved(c->path, 11);
  struct hashindex *hi;
  assert_int_equal(hashindex_open(c->path, DISK, CHUNK, &hi), RPL_OK);
  assert_int_equal(stale_of(hi), 0);
  /* Chunks 2 and 3 written (a range across their boundary). */
  assert_int_equal(hashindex_write(hi, 2 * CHUNK + 100, NULL, CHUNK, false, NULL), RPL_OK);
  assert_int_equal(stale_of(hi), 2);
  uint8_t h[PROTO_HASH_SIZE];
  assert_false(hashindex_lookup(hi, 2, h));
  assert_false(hashindex_lookup(hi, 3, h));
  assert_true(hashindex_lookup(hi, 4, h));
  /* A crash now: the file on disk says open, so a load finds it all stale. */
  expect_all_stale(c->path, DISK, CHUNK, "left open");
  /* Saved: closed again, with 2 and 3 stale. */
  assert_int_equal(hashindex_save(hi), RPL_OK);
  hashindex_close(hi);
  assert_int_equal(hashindex_open(c->path, DISK, CHUNK, &hi), RPL_OK);
  assert_int_equal(stale_of(hi), 2);
  assert_false(hashindex_lookup(hi, 3, h));
  hashindex_close(hi);
}

static void test_rehash_race(void **state)
{
  struct ctx *c = *state;
  struct hashindex *hi;
  assert_int_equal(hashindex_open(c->path, DISK, CHUNK, &hi), RPL_OK);
  uint8_t h[PROTO_HASH_SIZE];
  fake_hash(1, h);
  uint64_t gen = hashindex_generation(hi);
  assert_int_equal(hashindex_write(hi, 8 * CHUNK, NULL, 512, false, NULL), RPL_OK); /* another chunk, still a write */
  hashindex_rehashed(hi, 1, h, gen);
  assert_false(hashindex_lookup(hi, 1, h));
  hashindex_rehashed(hi, 1, h, hashindex_generation(hi));
  assert_true(hashindex_lookup(hi, 1, h));
  /* The stale list offers cold chunks only: chunk 8, just written, after two periods. */
  uint64_t cur = 0, out[16];
  size_t n = hashindex_stale_chunks(hi, &cur, out, 16);
  assert_int_equal(n, 9);
  assert_int_equal(out[0], 0);
  assert_int_equal(out[1], 2);
  assert_int_equal(out[7], 9);
  hashindex_cool(hi);
  assert_int_equal(hashindex_stale_chunks(hi, &cur, out, 16), 9);
  hashindex_cool(hi);
  cur = 0;
  assert_int_equal(hashindex_stale_chunks(hi, &cur, out, 16), 10);
  assert_int_equal(out[7], 8);
  n = hashindex_sample(hi, out, 4);
  assert_int_equal(n, 1);
  assert_int_equal(out[0], 1);
  assert_int_equal(hashindex_invalidate(hi, "test"), RPL_OK);
  assert_int_equal(stale_of(hi), 11);
  hashindex_close(hi);
}

static void test_direct_commit_abort(void **state)
{
  struct ctx *c = *state;
  struct hashindex *hi;
  assert_int_equal(hashindex_open(c->path, DISK, CHUNK, &hi), RPL_OK);
  uint8_t *data = malloc(DISK);
  assert_non_null(data);
  for (size_t i = 0; i < DISK; i++)
    data[i] = (uint8_t)(i * 13 + 5);
  /* Chunk 0 in two halves in order, chunk 1 as zeros, chunk 2 out of order, the short last whole. */
  assert_int_equal(hashindex_write(hi, 0, data, CHUNK / 2, false, NULL), RPL_OK);
  assert_int_equal(hashindex_write(hi, CHUNK / 2, data + CHUNK / 2, CHUNK / 2, false, NULL), RPL_OK);
  assert_int_equal(hashindex_write(hi, CHUNK, NULL, CHUNK, true, NULL), RPL_OK);
  assert_int_equal(hashindex_write(hi, 2 * CHUNK + CHUNK / 2, data, CHUNK / 2, false, NULL), RPL_OK);
  assert_int_equal(hashindex_write(hi, 2 * CHUNK, data, CHUNK / 2, false, NULL), RPL_OK);
  assert_int_equal(hashindex_write(hi, 10 * CHUNK, data + 10 * CHUNK, 512, false, NULL), RPL_OK);
  /* A whole chunk with its checked hash given: taken as it is, the bytes not hashed again. */
  uint8_t given[PROTO_HASH_SIZE];
  memset(given, 0xab, sizeof given);
  assert_int_equal(hashindex_write(hi, 3 * CHUNK, data + 3 * CHUNK, CHUNK, false, given), RPL_OK);
  assert_true(hashindex_direct_busy(hi));
  uint8_t h[PROTO_HASH_SIZE], want[PROTO_HASH_SIZE];
  assert_false(hashindex_lookup(hi, 0, h)); /* pending until the commit */
  hashindex_direct_commit(hi);
  assert_false(hashindex_direct_busy(hi));
  proto_hash128(data, CHUNK, want);
  assert_true(hashindex_lookup(hi, 0, h));
  assert_memory_equal(h, want, PROTO_HASH_SIZE);
  uint8_t *zeros = calloc(1, CHUNK);
  proto_hash128(zeros, CHUNK, want);
  assert_true(hashindex_lookup(hi, 1, h));
  assert_memory_equal(h, want, PROTO_HASH_SIZE);
  assert_false(hashindex_lookup(hi, 2, h));
  proto_hash128(data + 10 * CHUNK, 512, want);
  assert_true(hashindex_lookup(hi, 10, h));
  assert_memory_equal(h, want, PROTO_HASH_SIZE);
  assert_true(hashindex_lookup(hi, 3, h));
  assert_memory_equal(h, given, PROTO_HASH_SIZE);
  /* An aborted direct cycle: its whole chunk stays stale, and the one it overwrote is stale too. */
  assert_int_equal(hashindex_write(hi, 0, data, CHUNK, false, NULL), RPL_OK);
  hashindex_direct_abort(hi);
  assert_false(hashindex_lookup(hi, 0, h));
  assert_int_equal(stale_of(hi), 8);
  free(zeros);
  free(data);
  hashindex_close(hi);
}

static void test_growth(void **state)
{
  struct ctx *c = *state;
  make_saved(c->path, 11);
  /* Loaded for a disk that grew: the old short last chunk and the new ones stale. */
  struct hashindex *hi;
  assert_int_equal(hashindex_open(c->path, DISK + 3 * CHUNK, CHUNK, &hi), RPL_OK);
  struct hashindex_stats s;
  hashindex_get_stats(hi, &s);
  assert_int_equal(s.chunks, 14);
  assert_int_equal(s.stale_chunks, 4);
  uint8_t h[PROTO_HASH_SIZE];
  assert_true(hashindex_lookup(hi, 9, h));
  assert_false(hashindex_lookup(hi, 10, h));
  hashindex_close(hi);
  /* Grown while open. */
  make_saved(c->path, 11);
  assert_int_equal(hashindex_open(c->path, DISK, CHUNK, &hi), RPL_OK);
  hashindex_resize(hi, 20 * CHUNK);
  hashindex_get_stats(hi, &s);
  assert_int_equal(s.chunks, 20);
  assert_int_equal(s.stale_chunks, 10);
  assert_false(hashindex_lookup(hi, 10, h));
  assert_true(hashindex_lookup(hi, 9, h));
  hashindex_close(hi);
}

/* The xxh3-128 of len zero bytes, as the index stores it (canonical). */
static void zeros_hash(size_t len, uint8_t h[PROTO_HASH_SIZE])
{
  uint8_t *z = calloc(1, len);
  assert_non_null(z);
  XXH128_canonical_t can;
  XXH128_canonicalFromHash(&can, XXH3_128bits(z, len));
  memcpy(h, can.digest, PROTO_HASH_SIZE);
  free(z);
}

static void test_blank(void **state)
{
  struct ctx *c = *state;
  unlink(c->path);
  struct hashindex *hi;
  assert_int_equal(hashindex_open(c->path, DISK, CHUNK, &hi), RPL_OK);
  assert_int_equal(stale_of(hi), 11);
  uint64_t gen = hashindex_generation(hi);
  hashindex_blank(hi);
  assert_int_equal(stale_of(hi), 0);
  assert_true(hashindex_generation(hi) != gen); /* a rehash read before it does not count */
  uint8_t want[PROTO_HASH_SIZE], got[PROTO_HASH_SIZE], last[PROTO_HASH_SIZE];
  zeros_hash(CHUNK, want);
  zeros_hash(DISK - 10 * CHUNK, last);
  assert_true(hashindex_lookup(hi, 0, got));
  assert_memory_equal(got, want, PROTO_HASH_SIZE);
  assert_true(hashindex_lookup(hi, 9, got));
  assert_memory_equal(got, want, PROTO_HASH_SIZE);
  assert_true(hashindex_lookup(hi, 10, got));
  assert_memory_equal(got, last, PROTO_HASH_SIZE);
  uint64_t cursor = 0, todo[4];
  hashindex_cool(hi);
  hashindex_cool(hi);
  assert_int_equal(hashindex_stale_chunks(hi, &cursor, todo, 4), 0); /* nothing for the background rehash */
  /* A write afterwards makes its chunk stale as ever; the rest survive a save and a load. */
  assert_int_equal(hashindex_write(hi, 2 * CHUNK + 100, NULL, 10, false, NULL), RPL_OK);
  assert_int_equal(stale_of(hi), 1);
  assert_int_equal(hashindex_save(hi), RPL_OK);
  hashindex_close(hi);
  assert_int_equal(hashindex_open(c->path, DISK, CHUNK, &hi), RPL_OK);
  assert_int_equal(stale_of(hi), 1);
  assert_false(hashindex_lookup(hi, 2, got));
  assert_true(hashindex_lookup(hi, 10, got));
  assert_memory_equal(got, last, PROTO_HASH_SIZE);
  hashindex_close(hi);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown(test_roundtrip, setup, teardown),
    cmocka_unit_test_setup_teardown(test_damage_loads_stale, setup, teardown),
    cmocka_unit_test_setup_teardown(test_other_version, setup, teardown),
    cmocka_unit_test_setup_teardown(test_write_marks_open, setup, teardown),
    cmocka_unit_test_setup_teardown(test_rehash_race, setup, teardown),
    cmocka_unit_test_setup_teardown(test_direct_commit_abort, setup, teardown),
    cmocka_unit_test_setup_teardown(test_growth, setup, teardown),
    cmocka_unit_test_setup_teardown(test_blank, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
