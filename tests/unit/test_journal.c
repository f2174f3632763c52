/* test_journal.c - Description: cache journal round trips, torn tails cut at every byte of the last
 * cycle, damage before a commit reported, cycle order, restart and abandon, totals check, cache-full
 * backpressure, trim, multi-segment cycles, the applied marker and the record decoder's checks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uuid/uuid.h>
#include <cmocka.h>

#include "journal.h"
#include "rpl_log.h"
#include "tmpdir.h"

#define MAX_TEST_EXTENTS 64

struct ctx {
  char dir[256]; /* short, so every path built from it fits PATH_MAX */
  uint8_t disk[PROTO_ID_SIZE];
  char jdir[512]; /* dir/journal/<uuid> */
};

static int setup(void **state)
{
  struct ctx *c = calloc(1, sizeof *c);
  if (!c || tmpdir_create(c->dir, sizeof c->dir, "journal"))
    return -1;
  for (int i = 0; i < PROTO_ID_SIZE; i++)
    c->disk[i] = (uint8_t)(0x10 + i);
  char uuid[37];
  uuid_unparse_lower(c->disk, uuid);
  snprintf(c->jdir, sizeof c->jdir, "%s/journal/%s", c->dir, uuid);
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

/* Extent i of a test cycle: its content derives from (seed, i); sizes and codecs vary. */
static void extent_content(uint64_t seed, int i, uint8_t *buf, uint32_t len)
{
  uint64_t x = seed * 0x9e3779b97f4a7c15ull + (uint64_t)i * 0xbf58476d1ce4e5b9ull + 1;
  for (uint32_t k = 0; k < len; k++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    buf[k] = (uint8_t)x;
  }
}

static struct journal_extent make_extent(uint64_t seed, int i, uint8_t *buf)
{
  uint32_t len = 512u * (uint32_t)(1 + (seed + (uint64_t)i) % 4);
  struct journal_extent x = {.offset = 4096u * (uint64_t)(i * 3 + (int)(seed % 5)), .length = len};
  if ((seed + (uint64_t)i) % 5 == 4) { /* every fifth extent is a zero record */
    memset(buf, 0, len);
    x.codec = PROTO_CODEC_ZERO;
  } else {
    extent_content(seed, i, buf, len);
    x.codec = PROTO_CODEC_NONE;
    x.payload = buf;
    x.payload_len = len;
  }
  proto_hash128(buf, len, x.hash);
  return x;
}

/* Appends `count` extents derived from seed to open cycle n and returns the matching totals. */
static struct journal_cycle_totals append_extents(struct journal *j, uint64_t n, int count, uint64_t seed)
{
  struct journal_cycle_totals t = {0};
  uint8_t hashes[MAX_TEST_EXTENTS * PROTO_HASH_SIZE];
  uint8_t buf[4 * 512];
  assert_true(count <= MAX_TEST_EXTENTS);
  for (int i = 0; i < count; i++) {
    struct journal_extent x = make_extent(seed, i, buf);
    assert_int_equal(journal_append_extent(j, n, &x), RPL_OK);
    t.extents++;
    t.raw_bytes += x.length;
    t.payload_bytes += x.payload_len;
    memcpy(hashes + i * PROTO_HASH_SIZE, x.hash, PROTO_HASH_SIZE);
  }
  proto_hash128(hashes, (size_t)count * PROTO_HASH_SIZE, t.digest);
  return t;
}

static void commit_cycle(struct journal *j, uint64_t n, int count, uint64_t seed)
{
  assert_int_equal(journal_begin_cycle(j, n, PROTO_CYCLE_PLAIN), RPL_OK);
  struct journal_cycle_totals t = append_extents(j, n, count, seed);
  assert_int_equal(journal_commit_cycle(j, n, &t), RPL_OK);
}

/* Reads committed cycle n back and checks every extent against what (count, seed) produced. */
static void verify_cycle(struct journal *j, uint64_t n, int count, uint64_t seed)
{
  struct journal_cycle_info info;
  assert_int_equal(journal_cycle_info(j, n, &info), RPL_OK);
  assert_int_equal(info.cycle, n);
  assert_int_equal(info.totals.extents, (uint64_t)count);
  struct journal_reader *r;
  assert_int_equal(journal_reader_open(j, n, &r), RPL_OK);
  for (int pass = 0; pass < 2; pass++) { /* the second pass checks rewind */
    uint8_t buf[4 * 512];
    for (int i = 0; i < count; i++) {
      struct journal_extent want = make_extent(seed, i, buf), got;
      bool end;
      assert_int_equal(journal_reader_next(r, &got, &end), RPL_OK);
      assert_false(end);
      assert_int_equal(got.offset, want.offset);
      assert_int_equal(got.length, want.length);
      assert_int_equal(got.codec, want.codec);
      assert_memory_equal(got.hash, want.hash, PROTO_HASH_SIZE);
      assert_int_equal(got.payload_len, want.payload_len);
      if (want.payload_len)
        assert_memory_equal(got.payload, want.payload, want.payload_len);
    }
    struct journal_extent x;
    bool end = false;
    assert_int_equal(journal_reader_next(r, &x, &end), RPL_OK);
    assert_true(end);
    assert_int_equal(journal_reader_rewind(r), RPL_OK);
  }
  journal_reader_close(r);
}

static struct journal *open_journal(struct ctx *c, const struct journal_options *o)
{
  struct journal *j = NULL;
  assert_int_equal(journal_open(c->dir, c->disk, o, &j), RPL_OK);
  return j;
}

static void segment_path(const struct ctx *c, uint64_t seq, char out[PATH_MAX])
{
  snprintf(out, PATH_MAX, "%s/%016llx.seg", c->jdir, (unsigned long long)seq);
}

static uint64_t file_size(const char *path)
{
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  return (uint64_t)st.st_size;
}

static uint8_t *read_file(const char *path, size_t *len)
{
  *len = (size_t)file_size(path);
  uint8_t *p = malloc(*len ? *len : 1);
  assert_non_null(p);
  int fd = open(path, O_RDONLY);
  assert_true(fd >= 0);
  assert_int_equal(read(fd, p, *len), (ssize_t)*len);
  close(fd);
  return p;
}

static void write_file(const char *path, const uint8_t *data, size_t len)
{
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, data, len), (ssize_t)len);
  close(fd);
}

/* ---- tests -------------------------------------------------------------------------------- */

static void test_roundtrip_and_reopen(void **state)
{
  struct ctx *c = *state;
  struct journal *j = open_journal(c, NULL);
  struct journal_usage u;
  journal_get_usage(j, &u);
  assert_int_equal(u.last_committed, 0);
  assert_int_equal(u.cycles_pending, 0);
  for (uint64_t n = 1; n <= 5; n++)
    commit_cycle(j, n, (int)(n * 3), n * 11);
  for (uint64_t n = 1; n <= 5; n++)
    verify_cycle(j, n, (int)(n * 3), n * 11);
  journal_get_usage(j, &u);
  assert_int_equal(u.last_committed, 5);
  assert_int_equal(u.cycles_pending, 5);
  assert_true(u.bytes > 0);
  journal_close(j);

  j = open_journal(c, NULL);
  for (uint64_t n = 1; n <= 5; n++)
    verify_cycle(j, n, (int)(n * 3), n * 11);
  struct journal_cycle_info info;
  assert_int_equal(journal_next_pending(j, &info), RPL_OK);
  assert_int_equal(info.cycle, 1);
  struct journal_usage u2;
  journal_get_usage(j, &u2);
  assert_int_equal(u2.bytes, u.bytes);
  assert_int_equal(u2.last_committed, 5);
  commit_cycle(j, 6, 2, 66); /* appends continue after a reopen, in the same segment */
  journal_get_usage(j, &u2);
  assert_int_equal(u2.segments, 1);
  journal_close(j);
  j = open_journal(c, NULL);
  verify_cycle(j, 6, 2, 66);
  verify_cycle(j, 5, 15, 55);
  commit_cycle(j, 7, 0, 0); /* nothing changed on the disk: an empty cycle is a cycle too */
  journal_close(j);
  j = open_journal(c, NULL);
  verify_cycle(j, 7, 0, 0);
  journal_close(j);
}

struct reader_thread {
  struct journal *j;
  int rounds;
};

/* verify_cycle without cmocka's asserts, which must not fire on another thread. */
static bool cycle_matches(struct journal *j, uint64_t n, int count, uint64_t seed)
{
  struct journal_reader *r;
  if (journal_reader_open(j, n, &r) != RPL_OK)
    return false;
  bool ok = true, end = false;
  uint8_t buf[4 * 512];
  for (int i = 0; i <= count && ok; i++) {
    struct journal_extent want = make_extent(seed, i, buf), got;
    ok = journal_reader_next(r, &got, &end) == RPL_OK && end == (i == count);
    if (ok && !end)
      ok = got.offset == want.offset && got.length == want.length && got.payload_len == want.payload_len &&
           !memcmp(got.hash, want.hash, PROTO_HASH_SIZE) &&
           (!want.payload_len || !memcmp(got.payload, want.payload, want.payload_len));
  }
  journal_reader_close(r);
  return ok;
}

/* Reads committed cycle 1 over and over while the main thread appends and commits; returns the
 * number of failed reads. */
static void *read_cycle1(void *arg)
{
  struct reader_thread *t = arg;
  intptr_t failures = 0;
  for (int i = 0; i < t->rounds; i++) {
    struct journal_usage u;
    journal_get_usage(t->j, &u);
    failures += !cycle_matches(t->j, 1, 20, 1) || u.last_committed < 1;
  }
  return (void *)failures;
}

/* The threading promise of journal.h: calls from several threads, a reader beside the writer. */
static void test_reader_beside_writer(void **state)
{
  struct ctx *c = *state;
  struct journal_options o = {.segment_bytes = 8192};
  struct journal *j = open_journal(c, &o);
  commit_cycle(j, 1, 20, 1);
  struct reader_thread t = {.j = j, .rounds = 40};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, read_cycle1, &t), 0);
  for (uint64_t n = 2; n <= 30; n++)
    commit_cycle(j, n, 6, n);
  void *failures;
  assert_int_equal(pthread_join(th, &failures), 0);
  assert_int_equal((intptr_t)failures, 0);
  for (uint64_t n = 2; n <= 30; n++)
    verify_cycle(j, n, 6, n);
  journal_close(j);
}

/* Truncates the segment at every byte position inside the last cycle: the journal must come back
 * with cycle 1 intact and cycle 2 absent (unless the file is whole), and take cycle 2 again. */
static void test_torn_tail_every_byte(void **state)
{
  struct ctx *c = *state;
  struct journal *j = open_journal(c, NULL);
  commit_cycle(j, 1, 4, 7);
  struct journal_usage u;
  journal_get_usage(j, &u);
  uint64_t end_of_cycle1 = u.bytes;
  commit_cycle(j, 2, 5, 8);
  journal_close(j);

  char seg[PATH_MAX];
  segment_path(c, 1, seg);
  size_t whole_len;
  uint8_t *whole = read_file(seg, &whole_len);
  assert_true(whole_len > end_of_cycle1);
  for (size_t cut = (size_t)end_of_cycle1; cut <= whole_len; cut++) {
    write_file(seg, whole, cut);
    j = open_journal(c, NULL);
    verify_cycle(j, 1, 4, 7);
    journal_get_usage(j, &u);
    if (cut == whole_len) {
      assert_int_equal(u.last_committed, 2);
      verify_cycle(j, 2, 5, 8);
    } else {
      assert_int_equal(u.last_committed, 1);
      assert_int_equal(u.bytes, end_of_cycle1); /* the torn tail was cut off */
      struct journal_cycle_info info;
      assert_int_equal(journal_cycle_info(j, 2, &info), RPL_E_JOURNAL_NOT_COMMITTED);
      assert_int_equal(file_size(seg), end_of_cycle1);
    }
    journal_close(j);
  }
  /* Garbage after the last commit (a torn write of random bytes) is cut as well. */
  uint8_t *garbage = malloc(whole_len + 700);
  assert_non_null(garbage);
  memcpy(garbage, whole, end_of_cycle1);
  extent_content(99, 1, garbage + end_of_cycle1, 700);
  write_file(seg, garbage, end_of_cycle1 + 700);
  j = open_journal(c, NULL);
  journal_get_usage(j, &u);
  assert_int_equal(u.last_committed, 1);
  commit_cycle(j, 2, 3, 9);
  journal_close(j);
  j = open_journal(c, NULL);
  verify_cycle(j, 1, 4, 7);
  verify_cycle(j, 2, 3, 9);
  journal_close(j);
  free(garbage);
  free(whole);
}

/* A byte flipped inside a committed cycle's records, with a commit after it, is damage, not a
 * torn tail: open must refuse rather than drop acknowledged cycles. */
static void test_damage_before_commit_reported(void **state)
{
  struct ctx *c = *state;
  struct journal *j = open_journal(c, NULL);
  commit_cycle(j, 1, 3, 1);
  commit_cycle(j, 2, 3, 2);
  journal_close(j);
  char seg[PATH_MAX];
  segment_path(c, 1, seg);
  size_t len;
  uint8_t *data = read_file(seg, &len);
  size_t header_of_cycle1 = JOURNAL_HEADER_SIZE + JOURNAL_SEGMENT_BODY; /* its CYCLE_BEGIN */
  data[header_of_cycle1 + 30] ^= 0x40;
  write_file(seg, data, len);
  j = NULL;
  assert_int_equal(journal_open(c->dir, c->disk, NULL, &j), RPL_E_JOURNAL_CORRUPT);
  assert_null(j);
  assert_int_equal(file_size(seg), len); /* nothing cut */

  /* Payload damage is not seen by the (header-only) recovery scan but by the reader. */
  data[header_of_cycle1 + 30] ^= 0x40;
  size_t payload_of_first_extent = header_of_cycle1 + JOURNAL_HEADER_SIZE + JOURNAL_BEGIN_BODY +
                                   JOURNAL_HEADER_SIZE + JOURNAL_EXTENT_BODY;
  data[payload_of_first_extent + 5] ^= 1;
  write_file(seg, data, len);
  j = open_journal(c, NULL);
  struct journal_reader *r;
  assert_int_equal(journal_reader_open(j, 1, &r), RPL_OK);
  struct journal_extent x;
  bool end;
  assert_int_equal(journal_reader_next(r, &x, &end), RPL_E_JOURNAL_CORRUPT);
  journal_reader_close(r);
  verify_cycle(j, 2, 3, 2);
  journal_close(j);
  free(data);
}

static void test_cycle_order(void **state)
{
  struct ctx *c = *state;
  struct journal *j = open_journal(c, NULL);
  assert_int_equal(journal_begin_cycle(j, 2, PROTO_CYCLE_PLAIN), RPL_E_CYCLE_ORDER);
  assert_int_equal(journal_begin_cycle(j, 0, PROTO_CYCLE_PLAIN), RPL_E_INVALID_ARGUMENT);
  uint8_t buf[512] = {0};
  struct journal_extent x = {.offset = 0, .length = 512, .codec = PROTO_CODEC_ZERO};
  proto_hash128(buf, 512, x.hash);
  assert_int_equal(journal_append_extent(j, 1, &x), RPL_E_JOURNAL_NO_CYCLE);
  assert_int_equal(journal_begin_cycle(j, 1, PROTO_CYCLE_PLAIN), RPL_OK);
  assert_int_equal(journal_begin_cycle(j, 2, PROTO_CYCLE_PLAIN), RPL_E_CYCLE_ORDER); /* 1 is open */
  assert_int_equal(journal_append_extent(j, 2, &x), RPL_E_JOURNAL_NO_CYCLE);
  struct journal_cycle_totals t = append_extents(j, 1, 3, 5);
  assert_int_equal(journal_commit_cycle(j, 2, &t), RPL_E_JOURNAL_NO_CYCLE);
  assert_int_equal(journal_commit_cycle(j, 1, &t), RPL_OK);
  assert_int_equal(journal_begin_cycle(j, 1, PROTO_CYCLE_PLAIN), RPL_E_CYCLE_ORDER); /* committed */
  assert_int_equal(journal_begin_cycle(j, 3, PROTO_CYCLE_PLAIN), RPL_E_CYCLE_ORDER);

  /* A restart of the open cycle discards what it had so far. */
  assert_int_equal(journal_begin_cycle(j, 2, PROTO_CYCLE_RECOVERY_POINT), RPL_OK);
  (void)append_extents(j, 2, 6, 100);
  assert_int_equal(journal_begin_cycle(j, 2, PROTO_CYCLE_RECOVERY_POINT), RPL_OK);
  t = append_extents(j, 2, 2, 200);
  assert_int_equal(journal_commit_cycle(j, 2, &t), RPL_OK);
  verify_cycle(j, 2, 2, 200);
  struct journal_cycle_info info;
  assert_int_equal(journal_cycle_info(j, 2, &info), RPL_OK);
  assert_int_equal(info.kind, PROTO_CYCLE_RECOVERY_POINT);
  journal_close(j);
  j = open_journal(c, NULL);
  verify_cycle(j, 1, 3, 5);
  verify_cycle(j, 2, 2, 200);
  journal_close(j);
}

static void test_abandon_discards(void **state)
{
  struct ctx *c = *state;
  struct journal *j = open_journal(c, NULL);
  commit_cycle(j, 1, 2, 1);
  struct journal_usage before, u;
  journal_get_usage(j, &before);
  assert_int_equal(journal_begin_cycle(j, 2, PROTO_CYCLE_PLAIN), RPL_OK);
  (void)append_extents(j, 2, 8, 42);
  journal_get_usage(j, &u);
  assert_int_equal(u.open_cycle, 2);
  assert_true(u.bytes > before.bytes);
  assert_int_equal(journal_abandon_cycle(j, 3), RPL_E_JOURNAL_NO_CYCLE);
  assert_int_equal(journal_abandon_cycle(j, 2), RPL_OK);
  journal_get_usage(j, &u);
  assert_int_equal(u.open_cycle, 0);
  assert_int_equal(u.bytes, before.bytes);
  assert_int_equal(journal_abandon_cycle(j, 2), RPL_E_JOURNAL_NO_CYCLE);
  assert_int_equal(journal_next_pending(j, &(struct journal_cycle_info){0}), RPL_OK);

  /* A cycle left open by a dying process is discarded on reopen. */
  assert_int_equal(journal_begin_cycle(j, 2, PROTO_CYCLE_PLAIN), RPL_OK);
  (void)append_extents(j, 2, 5, 43);
  journal_close(j);
  j = open_journal(c, NULL);
  journal_get_usage(j, &u);
  assert_int_equal(u.last_committed, 1);
  assert_int_equal(u.bytes, before.bytes);
  commit_cycle(j, 2, 3, 44);
  journal_close(j);
  j = open_journal(c, NULL);
  verify_cycle(j, 1, 2, 1);
  verify_cycle(j, 2, 3, 44);
  journal_close(j);
}

static void test_totals_checked(void **state)
{
  struct ctx *c = *state;
  struct journal *j = open_journal(c, NULL);
  assert_int_equal(journal_begin_cycle(j, 1, PROTO_CYCLE_PLAIN), RPL_OK);
  struct journal_cycle_totals t = append_extents(j, 1, 4, 3);
  struct journal_cycle_totals bad = t;
  bad.extents++;
  assert_int_equal(journal_commit_cycle(j, 1, &bad), RPL_E_CYCLE_TOTALS);
  bad = t;
  bad.raw_bytes += 512;
  assert_int_equal(journal_commit_cycle(j, 1, &bad), RPL_E_CYCLE_TOTALS);
  bad = t;
  bad.payload_bytes--;
  assert_int_equal(journal_commit_cycle(j, 1, &bad), RPL_E_CYCLE_TOTALS);
  bad = t;
  bad.digest[7] ^= 1;
  assert_int_equal(journal_commit_cycle(j, 1, &bad), RPL_E_CYCLE_TOTALS);
  assert_int_equal(journal_commit_cycle(j, 1, &t), RPL_OK); /* still open after the refusals */
  verify_cycle(j, 1, 4, 3);
  journal_close(j);
}

static void test_extent_fields_checked(void **state)
{
  struct ctx *c = *state;
  struct journal *j = open_journal(c, NULL);
  assert_int_equal(journal_begin_cycle(j, 1, PROTO_CYCLE_PLAIN), RPL_OK);
  uint8_t buf[1024] = {1};
  struct journal_extent ok = {.offset = 512, .length = 1024, .codec = PROTO_CODEC_NONE, .payload = buf,
                              .payload_len = 1024};
  struct journal_extent x = ok;
  x.offset = 100;
  assert_int_equal(journal_append_extent(j, 1, &x), RPL_E_INVALID_ARGUMENT);
  x = ok;
  x.length = 1000;
  assert_int_equal(journal_append_extent(j, 1, &x), RPL_E_INVALID_ARGUMENT);
  x = ok;
  x.length = 0;
  x.payload_len = 0;
  assert_int_equal(journal_append_extent(j, 1, &x), RPL_E_INVALID_ARGUMENT);
  x = ok;
  x.length = PROTO_MAX_EXTENT + 512;
  assert_int_equal(journal_append_extent(j, 1, &x), RPL_E_INVALID_ARGUMENT);
  x = ok;
  x.payload_len = 512; /* NONE carries exactly length bytes */
  assert_int_equal(journal_append_extent(j, 1, &x), RPL_E_INVALID_ARGUMENT);
  x = ok;
  x.codec = PROTO_CODEC_ZERO; /* ZERO carries none */
  assert_int_equal(journal_append_extent(j, 1, &x), RPL_E_INVALID_ARGUMENT);
  x = ok;
  x.codec = 7;
  assert_int_equal(journal_append_extent(j, 1, &x), RPL_E_INVALID_ARGUMENT);
  x = ok;
  x.codec = PROTO_CODEC_ZSTD;
  x.payload_len = JOURNAL_MAX_PAYLOAD + 1; /* refused before anything is read from payload */
  assert_int_equal(journal_append_extent(j, 1, &x), RPL_E_INVALID_ARGUMENT);
  x = ok;
  x.offset = UINT64_MAX - 511;
  assert_int_equal(journal_append_extent(j, 1, &x), RPL_E_INVALID_ARGUMENT);
  assert_int_equal(journal_append_extent(j, 1, &ok), RPL_OK);
  journal_close(j);
}

static void test_cache_full_backpressure(void **state)
{
  struct ctx *c = *state;
  struct journal_options o = {.limit_bytes = 64 * 1024, .segment_bytes = 16 * 1024};
  struct journal *j = open_journal(c, &o);
  commit_cycle(j, 1, 4, 1);
  struct journal_usage u0;
  journal_get_usage(j, &u0);
  assert_int_equal(u0.open_bytes, 0);
  assert_int_equal(journal_begin_cycle(j, 2, PROTO_CYCLE_PLAIN), RPL_OK);
  uint8_t buf[4096];
  extent_content(5, 5, buf, sizeof buf);
  struct journal_extent x = {.offset = 0, .length = 4096, .codec = PROTO_CODEC_NONE, .payload = buf,
                             .payload_len = 4096};
  proto_hash128(buf, sizeof buf, x.hash);
  uint8_t hashes[64 * PROTO_HASH_SIZE];
  struct journal_cycle_totals t = {0};
  rpl_err e;
  int appended = 0;
  while ((e = journal_append_extent(j, 2, &x)) == RPL_OK) {
    memcpy(hashes + appended * PROTO_HASH_SIZE, x.hash, PROTO_HASH_SIZE);
    appended++;
    t.extents++;
    t.raw_bytes += 4096;
    t.payload_bytes += 4096;
    assert_true(appended < 64);
  }
  assert_int_equal(e, RPL_E_JOURNAL_FULL);
  assert_true(appended > 4);
  struct journal_usage u;
  journal_get_usage(j, &u);
  assert_true(u.bytes <= o.limit_bytes);
  /* What the open cycle takes (a session tells a cycle too big for the cache from one it waits with):
   * its records, all of what came after cycle 1 but a new segment's header. */
  assert_true(u.open_bytes >= (uint64_t)appended * 4096 && u.open_bytes <= u.bytes - u0.bytes);
  /* Measure the files themselves, not only the accounting. */
  uint64_t on_disk = 0;
  for (uint64_t s = 1; s <= u.segments; s++) {
    char p[PATH_MAX];
    segment_path(c, s, p);
    on_disk += file_size(p);
  }
  assert_int_equal(on_disk, u.bytes);
  assert_true(on_disk <= o.limit_bytes);
  /* The room kept for the end record lets the cycle commit with what did fit. */
  proto_hash128(hashes, (size_t)appended * PROTO_HASH_SIZE, t.digest);
  assert_int_equal(journal_commit_cycle(j, 2, &t), RPL_OK);
  journal_get_usage(j, &u);
  assert_int_equal(u.open_bytes, 0);
  e = journal_begin_cycle(j, 3, PROTO_CYCLE_PLAIN); /* its begin record may or may not fit */
  assert_true(e == RPL_OK || e == RPL_E_JOURNAL_FULL);
  if (e == RPL_OK) {
    assert_int_equal(journal_append_extent(j, 3, &x), RPL_E_JOURNAL_FULL);
    assert_int_equal(journal_abandon_cycle(j, 3), RPL_OK);
  }
  /* Applying and trimming makes room again. */
  assert_int_equal(journal_mark_applied(j, 2), RPL_OK);
  assert_int_equal(journal_trim(j, 2), RPL_OK);
  commit_cycle(j, 3, 4, 3);
  journal_close(j);
  j = open_journal(c, &o);
  verify_cycle(j, 3, 4, 3);
  journal_close(j);
}

static void test_trim_frees_space(void **state)
{
  struct ctx *c = *state;
  struct journal_options o = {.segment_bytes = 8 * 1024};
  struct journal *j = open_journal(c, &o);
  for (uint64_t n = 1; n <= 10; n++)
    commit_cycle(j, n, 6, n);
  struct journal_usage u0, u;
  journal_get_usage(j, &u0);
  assert_true(u0.segments > 3);
  assert_int_equal(u0.cycles_pending, 10);
  assert_int_equal(journal_trim(j, 1), RPL_E_JOURNAL_NOT_APPLIED);
  assert_int_equal(journal_mark_applied(j, 11), RPL_E_JOURNAL_NOT_COMMITTED);
  assert_int_equal(journal_mark_applied(j, 5), RPL_OK);
  assert_int_equal(journal_mark_applied(j, 3), RPL_OK); /* already covered: no-op */
  assert_int_equal(journal_trim(j, 6), RPL_E_JOURNAL_NOT_APPLIED);
  assert_int_equal(journal_trim(j, 5), RPL_OK);
  journal_get_usage(j, &u);
  assert_true(u.bytes < u0.bytes);
  assert_true(u.segments < u0.segments);
  assert_int_equal(u.cycles_pending, 5);
  assert_int_equal(u.last_applied, 5);
  char first[PATH_MAX];
  segment_path(c, 1, first);
  assert_int_equal(access(first, F_OK), -1);
  struct journal_cycle_info info;
  assert_int_equal(journal_next_pending(j, &info), RPL_OK);
  assert_int_equal(info.cycle, 6);
  assert_int_equal(journal_cycle_info(j, 2, &info), RPL_E_JOURNAL_NOT_COMMITTED);
  journal_close(j);

  j = open_journal(c, &o); /* a trimmed journal reopens with its marker and what is left */
  journal_get_usage(j, &u);
  assert_int_equal(u.last_applied, 5);
  assert_int_equal(u.last_committed, 10);
  assert_int_equal(u.cycles_pending, 5);
  for (uint64_t n = 6; n <= 10; n++)
    verify_cycle(j, n, 6, n);
  assert_int_equal(journal_mark_applied(j, 10), RPL_OK);
  assert_int_equal(journal_trim(j, 10), RPL_OK);
  journal_get_usage(j, &u);
  assert_int_equal(u.bytes, 0);
  assert_int_equal(u.segments, 0);
  assert_int_equal(journal_next_pending(j, &info), RPL_E_NOT_FOUND);
  commit_cycle(j, 11, 2, 11); /* numbering continues from the marker */
  journal_close(j);
  j = open_journal(c, &o);
  journal_get_usage(j, &u);
  assert_int_equal(u.last_committed, 11);
  verify_cycle(j, 11, 2, 11);
  journal_close(j);
  /* An empty, fully trimmed journal keeps its numbering too. */
  j = open_journal(c, &o);
  assert_int_equal(journal_mark_applied(j, 11), RPL_OK);
  assert_int_equal(journal_trim(j, 11), RPL_OK);
  journal_close(j);
  j = open_journal(c, &o);
  journal_get_usage(j, &u);
  assert_int_equal(u.last_committed, 11);
  assert_int_equal(journal_begin_cycle(j, 12, PROTO_CYCLE_PLAIN), RPL_OK);
  journal_close(j);
}

/* Cycles bigger than a segment span several; torn tails in a later segment, and abandoning such a
 * cycle, keep earlier commits intact. */
static void test_multi_segment_cycles(void **state)
{
  struct ctx *c = *state;
  struct journal_options o = {.segment_bytes = 4096};
  struct journal *j = open_journal(c, &o);
  commit_cycle(j, 1, 20, 1);
  struct journal_usage u;
  journal_get_usage(j, &u);
  assert_true(u.segments >= 3);
  uint64_t segs_after_1 = u.segments, bytes_after_1 = u.bytes;
  assert_int_equal(journal_begin_cycle(j, 2, PROTO_CYCLE_PLAIN), RPL_OK);
  (void)append_extents(j, 2, 30, 2);
  journal_get_usage(j, &u);
  assert_true(u.segments > segs_after_1);
  assert_int_equal(journal_abandon_cycle(j, 2), RPL_OK);
  journal_get_usage(j, &u);
  assert_int_equal(u.segments, segs_after_1);
  assert_int_equal(u.bytes, bytes_after_1);
  commit_cycle(j, 2, 30, 3);
  verify_cycle(j, 1, 20, 1);
  verify_cycle(j, 2, 30, 3);
  journal_get_usage(j, &u);
  uint64_t last = u.segments;
  journal_close(j);

  j = open_journal(c, &o);
  verify_cycle(j, 1, 20, 1);
  verify_cycle(j, 2, 30, 3);
  journal_close(j);

  /* Cycle 3 spans segments; its last segment is torn and an earlier one lost its tail. */
  j = open_journal(c, &o);
  assert_int_equal(journal_begin_cycle(j, 3, PROTO_CYCLE_PLAIN), RPL_OK);
  (void)append_extents(j, 3, 30, 4);
  journal_get_usage(j, &u);
  assert_true(u.segments >= last + 2);
  uint64_t top = u.segments;
  journal_close(j);
  char p[PATH_MAX];
  segment_path(c, top, p);
  assert_int_equal(truncate(p, 30), 0);
  segment_path(c, top - 1, p);
  assert_int_equal(truncate(p, (off_t)file_size(p) - 3), 0);
  j = open_journal(c, &o);
  journal_get_usage(j, &u);
  assert_int_equal(u.last_committed, 2);
  assert_int_equal(u.segments, last);
  segment_path(c, last + 1, p);
  assert_int_equal(access(p, F_OK), -1);
  verify_cycle(j, 2, 30, 3);
  commit_cycle(j, 3, 25, 5);
  journal_close(j);
  j = open_journal(c, &o);
  verify_cycle(j, 1, 20, 1);
  verify_cycle(j, 2, 30, 3);
  verify_cycle(j, 3, 25, 5);
  journal_close(j);

  /* Damage in an early segment, with commits in later ones, is reported, not cut. */
  segment_path(c, 2, p);
  size_t len;
  uint8_t *data = read_file(p, &len);
  data[JOURNAL_HEADER_SIZE + JOURNAL_SEGMENT_BODY + 12] ^= 0x04; /* its first record's payload length */
  write_file(p, data, len);
  j = NULL;
  assert_int_equal(journal_open(c->dir, c->disk, &o, &j), RPL_E_JOURNAL_CORRUPT);
  assert_int_equal(file_size(p), len);
  free(data);
}

static void test_applied_marker_and_base(void **state)
{
  struct ctx *c = *state;
  struct journal *j = open_journal(c, NULL);
  assert_int_equal(journal_set_base(j, 40), RPL_OK);
  assert_int_equal(journal_set_base(j, 39), RPL_E_INVALID_ARGUMENT);
  assert_int_equal(journal_begin_cycle(j, 1, PROTO_CYCLE_PLAIN), RPL_E_CYCLE_ORDER);
  commit_cycle(j, 41, 3, 41);
  assert_int_equal(journal_set_base(j, 50), RPL_E_EXISTS); /* 41 pending */
  commit_cycle(j, 42, 3, 42);
  assert_int_equal(journal_mark_applied(j, 41), RPL_OK);
  journal_close(j);
  j = open_journal(c, NULL);
  struct journal_usage u;
  journal_get_usage(j, &u);
  assert_int_equal(u.last_applied, 41);
  assert_int_equal(u.last_committed, 42);
  assert_int_equal(u.cycles_pending, 1);
  struct journal_cycle_info info;
  assert_int_equal(journal_next_pending(j, &info), RPL_OK);
  assert_int_equal(info.cycle, 42);
  verify_cycle(j, 41, 3, 41); /* applied but not trimmed: still readable */
  journal_close(j);

  /* A damaged marker is reported, and a stale tmp file from an interrupted update is ignored. */
  char p[PATH_MAX];
  snprintf(p, sizeof p, "%s/applied.tmp", c->jdir);
  write_file(p, (const uint8_t *)"partial", 7);
  j = open_journal(c, NULL);
  journal_close(j);
  assert_int_equal(access(p, F_OK), -1);
  snprintf(p, sizeof p, "%s/applied", c->jdir);
  size_t len;
  uint8_t *m = read_file(p, &len);
  m[25] ^= 1;
  write_file(p, m, len);
  j = NULL;
  assert_int_equal(journal_open(c->dir, c->disk, NULL, &j), RPL_E_JOURNAL_CORRUPT);
  free(m);
}

static void test_second_open_refused(void **state)
{
  struct ctx *c = *state;
  struct journal *j = open_journal(c, NULL), *j2 = NULL;
  assert_int_equal(journal_open(c->dir, c->disk, NULL, &j2), RPL_E_JOURNAL_LOCKED);
  assert_null(j2);
  journal_close(j);
  j2 = open_journal(c, NULL); /* released on close */
  journal_close(j2);
}

static void test_foreign_disk_refused(void **state)
{
  struct ctx *c = *state;
  struct journal *j = open_journal(c, NULL);
  commit_cycle(j, 1, 2, 1);
  journal_close(j);
  uint8_t other[PROTO_ID_SIZE];
  memset(other, 0xee, sizeof other);
  char uuid[37], p[PATH_MAX];
  uuid_unparse_lower(other, uuid);
  snprintf(p, sizeof p, "%s/journal/%s", c->dir, uuid);
  assert_int_equal(rename(c->jdir, p), 0);
  assert_int_equal(journal_open(c->dir, other, NULL, &j), RPL_E_JOURNAL_FOREIGN);
}

/* The decoder on records taken from a real segment: accepted whole, AGAIN on every prefix, and
 * refused after any single-bit flip in header or body. */
static void test_record_decoder(void **state)
{
  struct ctx *c = *state;
  struct journal *j = open_journal(c, NULL);
  commit_cycle(j, 1, 3, 17);
  journal_close(j);
  char seg[PATH_MAX];
  segment_path(c, 1, seg);
  size_t len;
  uint8_t *data = read_file(seg, &len);
  size_t off = 0;
  int types[8], count = 0;
  while (off < len) {
    struct journal_record rec;
    size_t used;
    assert_int_equal(journal_record_decode(data + off, len - off, &rec, &used), RPL_OK);
    assert_true(count < 8);
    types[count++] = rec.type;
    for (size_t k = 0; k < used; k++) {
      size_t need;
      assert_int_equal(journal_record_decode(data + off, k, &rec, &need), RPL_E_AGAIN);
      assert_true(need > k && need <= used);
    }
    for (size_t k = 0; k < used; k++) {
      data[off + k] ^= 0x10;
      size_t u2;
      rpl_err e = journal_record_decode(data + off, used, &rec, &u2);
      /* A flip in the length fields may ask for more bytes instead; never OK. */
      assert_true(e == RPL_E_JOURNAL_RECORD || e == RPL_E_AGAIN);
      data[off + k] ^= 0x10;
    }
    off += used;
  }
  assert_int_equal(off, len);
  assert_int_equal(count, 6);
  assert_int_equal(types[0], JOURNAL_REC_SEGMENT);
  assert_int_equal(types[1], JOURNAL_REC_CYCLE_BEGIN);
  assert_int_equal(types[2], JOURNAL_REC_EXTENT);
  assert_int_equal(types[5], JOURNAL_REC_CYCLE_END);

  /* Length over the cap is refused from the header alone, before any allocation. */
  uint8_t h[JOURNAL_HEADER_SIZE];
  memcpy(h, data + JOURNAL_HEADER_SIZE + JOURNAL_SEGMENT_BODY + JOURNAL_HEADER_SIZE + JOURNAL_BEGIN_BODY, sizeof h);
  struct journal_record_header hdr;
  assert_int_equal(journal_record_parse_header(h, &hdr), RPL_OK);
  assert_int_equal(hdr.type, JOURNAL_REC_EXTENT);
  h[12] = 0xff, h[13] = 0xff, h[14] = 0xff, h[15] = 0x7f;
  assert_int_equal(journal_record_parse_header(h, &hdr), RPL_E_JOURNAL_RECORD);
  free(data);
}

int main(void)
{
  log_init("test_journal", LOG_LVL_ERR); /* the torn-tail loop would print a warning per position */
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown(test_roundtrip_and_reopen, setup, teardown),
    cmocka_unit_test_setup_teardown(test_reader_beside_writer, setup, teardown),
    cmocka_unit_test_setup_teardown(test_torn_tail_every_byte, setup, teardown),
    cmocka_unit_test_setup_teardown(test_damage_before_commit_reported, setup, teardown),
    cmocka_unit_test_setup_teardown(test_cycle_order, setup, teardown),
    cmocka_unit_test_setup_teardown(test_abandon_discards, setup, teardown),
    cmocka_unit_test_setup_teardown(test_totals_checked, setup, teardown),
    cmocka_unit_test_setup_teardown(test_extent_fields_checked, setup, teardown),
    cmocka_unit_test_setup_teardown(test_cache_full_backpressure, setup, teardown),
    cmocka_unit_test_setup_teardown(test_trim_frees_space, setup, teardown),
    cmocka_unit_test_setup_teardown(test_multi_segment_cycles, setup, teardown),
    cmocka_unit_test_setup_teardown(test_applied_marker_and_base, setup, teardown),
    cmocka_unit_test_setup_teardown(test_second_open_refused, setup, teardown),
    cmocka_unit_test_setup_teardown(test_foreign_disk_refused, setup, teardown),
    cmocka_unit_test_setup_teardown(test_record_decoder, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
