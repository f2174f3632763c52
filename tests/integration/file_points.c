/* file_points.c - Description: recovery points of a file replica on ext4 (no reflinks) cost what
 * changed: a run of points, each after a cycle changing 1 % of the disk (single blocks, runs longer
 * than an undo record, zeros, sectors inside a block), through the storage interface's table. The
 * undo files take about the changed bytes; every point restores byte-identical to the disk at its
 * time, also while cycles land during the read; pruning a middle and the oldest point keeps every
 * other point; a kill -9 while a point is recorded or pruned loses no other point; cycles written
 * straight into the image (direct, larger than the undo file's stage, some read into its room, one given up
 * and sent again) keep every point too, also when three disks' direct cycles run at once.
 * Usage: file_points STATE_DIR WORK_DIR DISK_MIB POINTS (settings from `replication-appliance init`). */
#include <inttypes.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uuid/uuid.h>
#include <cmocka.h>

#include "journal.h"
#include "rpl_log.h"
#include "settings.h"
#include "store.h"
#include "undo.h"

#define MIB (1ull << 20)
#define CHUNK (4u * MIB)
#define MAX_CYCLES 64

/* What a cycle overwrote: put back (newest first) to get the disk as it was before it. */
struct rollback {
  uint64_t off;
  uint32_t len;
  uint8_t *old;
};

static struct {
  const char *state_dir, *work_dir;
  uint64_t size;            /* the disk's */
  unsigned points;
  struct appliance_settings s;
  const struct store_ops *ops;
  uint8_t disk[PROTO_ID_SIZE];
  struct store *st;
  struct journal *j;
  uint8_t *model, *work;    /* the disk now; a copy rolled back point by point */
  uint64_t last;            /* the last cycle applied */
  char image[MAX_CYCLES + 1][CATALOG_MAX_SNAPSHOT_ID + 1]; /* each cycle's point ("": none, or pruned) */
  struct rollback *rb[MAX_CYCLES + 1];
  size_t nrb[MAX_CYCLES + 1];
  uint64_t undo_expected;   /* bytes: the distinct blocks each point's next cycle overwrote */
  uint64_t rng;
  char point_id[CATALOG_MAX_SNAPSHOT_ID + 1];
  unsigned rooms_used;      /* direct extents read into the store's room */
} T;

static uint64_t next_rand(void)
{
  T.rng ^= T.rng << 13;
  T.rng ^= T.rng >> 7;
  T.rng ^= T.rng << 17;
  return T.rng;
}

static void fill_random(uint8_t *buf, size_t len)
{
  for (size_t i = 0; i < len; i += 8) {
    uint64_t v = next_rand();
    memcpy(buf + i, &v, len - i < 8 ? len - i : 8);
  }
}

static void on_applied(void *ctx, uint64_t cycle, uint8_t kind, bool point_follows)
{
  (void)ctx, (void)kind, (void)point_follows;
  T.last = cycle;
}

static void on_point(void *ctx, uint64_t cycle, const char *image_id)
{
  (void)ctx;
  if (cycle <= MAX_CYCLES)
    snprintf(T.image[cycle], sizeof T.image[cycle], "%s", image_id);
}

/* ---- cycles ---------------------------------------------------------------------------------- */

struct builder {
  uint64_t n;
  struct journal_cycle_totals t;
  uint8_t *hashes;
  size_t cap;
  uint8_t *touched; /* one byte per block: overwritten by this cycle */
};

static void extent(struct builder *b, uint64_t off, uint32_t len, bool zero)
{
  uint8_t *raw = malloc(len);
  assert_non_null(raw);
  if (zero)
    memset(raw, 0, len);
  else
    fill_random(raw, len);
  struct journal_extent x = {.offset = off, .length = len, .codec = zero ? PROTO_CODEC_ZERO : PROTO_CODEC_NONE};
  if (!zero) {
    x.payload = raw;
    x.payload_len = len;
  }
  proto_hash128(raw, len, x.hash);
  assert_int_equal(journal_append_extent(T.j, b->n, &x), RPL_OK);
  if (b->t.extents == b->cap) {
    b->cap = b->cap ? b->cap * 2 : 1024;
    b->hashes = realloc(b->hashes, b->cap * PROTO_HASH_SIZE);
    assert_non_null(b->hashes);
  }
  memcpy(b->hashes + b->t.extents * PROTO_HASH_SIZE, x.hash, PROTO_HASH_SIZE);
  b->t.extents++;
  b->t.raw_bytes += len;
  b->t.payload_bytes += x.payload_len;
  struct rollback *r = realloc(T.rb[b->n], (T.nrb[b->n] + 1) * sizeof *r);
  assert_non_null(r);
  T.rb[b->n] = r;
  r[T.nrb[b->n]] = (struct rollback){off, len, malloc(len)};
  assert_non_null(r[T.nrb[b->n]].old);
  memcpy(r[T.nrb[b->n]].old, T.model + off, len);
  T.nrb[b->n]++;
  memcpy(T.model + off, raw, len);
  for (uint64_t blk = off / UNDO_BLOCK; blk < (off + len + UNDO_BLOCK - 1) / UNDO_BLOCK; blk++)
    b->touched[blk] = 1;
  free(raw);
}

/* Cycle n, a recovery point: the first lays down data; each later one changes 1 % of the disk
 * (4 KiB blocks anywhere, some rewritten twice, a 2 MiB run, 64 KiB of zeros, single sectors). */
static void cycle(uint64_t n)
{
  assert_true(n <= MAX_CYCLES);
  struct builder b = {.n = n, .touched = calloc(T.size / UNDO_BLOCK, 1)};
  assert_non_null(b.touched);
  assert_int_equal(journal_begin_cycle(T.j, n, PROTO_CYCLE_RECOVERY_POINT), RPL_OK);
  uint64_t blocks = T.size / UNDO_BLOCK;
  if (n == 1) {
    for (unsigned i = 0; i < 16; i++)
      extent(&b, (next_rand() % (T.size / CHUNK)) * CHUNK, (uint32_t)(T.size / 256), false);
  } else {
    uint64_t budget = T.size / 100;
    uint64_t run = 2 * MIB < budget / 4 ? 2 * MIB : budget / 4 / UNDO_BLOCK * UNDO_BLOCK;
    extent(&b, (next_rand() % ((T.size - run) / UNDO_BLOCK)) * UNDO_BLOCK, (uint32_t)run, false);
    extent(&b, (next_rand() % ((T.size - 64 * 1024) / UNDO_BLOCK)) * UNDO_BLOCK, 64 * 1024, true);
    for (unsigned i = 0; i < 8; i++) /* a sector inside a block: the whole block is kept */
      extent(&b, (next_rand() % (T.size / 512)) * 512, 512, false);
    uint64_t prev = 0;
    for (uint64_t used = run + 64 * 1024 + 8 * 512; used < budget; used += UNDO_BLOCK) {
      uint64_t blk = next_rand() % 8 == 0 && prev ? prev : next_rand() % blocks; /* some twice */
      extent(&b, blk * UNDO_BLOCK, UNDO_BLOCK, false);
      prev = blk;
    }
  }
  proto_hash128(b.hashes, b.t.extents * PROTO_HASH_SIZE, b.t.digest);
  assert_int_equal(journal_commit_cycle(T.j, n, &b.t), RPL_OK);
  /* The previous point's undo file keeps what this cycle overwrites, once per block. */
  if (n > 1 && T.image[n - 1][0])
    for (uint64_t blk = 0; blk < blocks; blk++)
      T.undo_expected += b.touched[blk] ? UNDO_BLOCK : 0;
  free(b.touched);
  free(b.hashes);
}

static void apply(uint64_t n)
{
  const struct store_apply_cb cb = {.applied = on_applied, .point = on_point, .ctx = NULL};
  assert_int_equal(T.ops->apply_next(T.st, T.j, &cb), RPL_OK);
  assert_int_equal(T.last, n);
  assert_int_equal(journal_trim(T.j, n), RPL_OK);
}

static void store_open(void)
{
  rpl_err e = T.ops->open(&T.s, T.disk, T.size, &T.st);
  if (e)
    fail_msg("store open: %s", rpl_detail(e));
}

static void store_close(void)
{
  T.ops->close(T.st);
  T.st = NULL;
}

/* ---- checks ---------------------------------------------------------------------------------- */

/* The image image_id of disk (size bytes) equals want; extra (may be NULL) runs after the first
 * half was read. what names the point in a failure. */
static void expect_image(const uint8_t disk[PROTO_ID_SIZE], const char *image_id, uint64_t size, const uint8_t *want,
                         void (*extra)(void), const char *what)
{
  struct store_image *img;
  rpl_err e = T.ops->image_open(&T.s, disk, image_id, size, &img);
  if (e)
    fail_msg("%s (%s): %s", what, image_id, rpl_detail(e));
  struct store_reader *rd;
  assert_int_equal(img->ops->reader_open(img, &rd), RPL_OK);
  uint8_t *buf = malloc(CHUNK);
  assert_non_null(buf);
  for (int pass = extra ? 0 : 1; pass < 2; pass++) {
    for (uint64_t off = 0; off < (pass ? size : size / 2); off += CHUNK) {
      bool hole;
      assert_int_equal(rd->ops->reader_read(rd, off, buf, CHUNK, &hole), RPL_OK);
      if (memcmp(buf, want + off, CHUNK)) {
        size_t i = 0;
        while (buf[i] == want[off + i])
          i++;
        fail_msg("%s differs from the disk at its time at byte %" PRIu64 "%s", what, off + i,
                 pass ? "" : " (first half)");
      }
    }
    if (!pass)
      extra();
  }
  free(buf);
  rd->ops->reader_close(rd);
  img->ops->image_close(img);
}

/* The point of cycle n equals want (see expect_image). */
static void expect_point(uint64_t n, const uint8_t *want, void (*extra)(void))
{
  char what[64];
  snprintf(what, sizeof what, "point of cycle %" PRIu64, n);
  expect_image(T.disk, T.image[n], T.size, want, extra, what);
}

/* The points still recorded that near says (all with near NULL) restore as the disk was at their
 * time (the model rolled back). */
static void expect_points(const char *when, bool (*near)(uint64_t n))
{
  memcpy(T.work, T.model, T.size);
  unsigned checked = 0;
  for (uint64_t n = T.last; n >= 1; n--) {
    if (T.image[n][0] && (!near || near(n))) {
      expect_point(n, T.work, NULL);
      checked++;
    }
    for (size_t i = T.nrb[n]; i-- > 0;)
      memcpy(T.work + T.rb[n][i].off, T.rb[n][i].old, T.rb[n][i].len);
  }
  printf("%s: %u point(s) restore byte-identical\n", when, checked);
}

static void expect_all_points(const char *when) { expect_points(when, NULL); }

static uint64_t undo_bytes(size_t *files)
{
  struct undo_file *f;
  size_t n;
  char image[4200];
  uint64_t c;
  assert_true(undo_parse_path(T.image[T.last], image, sizeof image, &c));
  assert_int_equal(undo_list(image, &f, &n), RPL_OK);
  uint64_t sum = 0;
  for (size_t i = 0; i < n; i++) {
    struct stat sb;
    assert_int_equal(stat(f[i].path, &sb), 0);
    sum += (uint64_t)sb.st_blocks * 512;
  }
  free(f);
  *files = n;
  return sum;
}

static void journal_reopen(void)
{
  char dir[4200];
  snprintf(dir, sizeof dir, "%s/journal", T.work_dir);
  rpl_err e = journal_open(dir, T.disk, NULL, &T.j);
  if (e)
    fail_msg("journal open: %s", rpl_detail(e));
}

/* A child process does what (plain C: no cmocka in a child), dead at the named step (a kill -9
 * there); the store and the journal are closed here meanwhile, as by a dead appliance. */
static void killed_at(const char *step, rpl_err (*what)(void))
{
  store_close();
  journal_close(T.j);
  T.j = NULL;
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    setenv("RPL_TEST_UNDO_KILL", step, 1);
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/journal", T.work_dir);
    rpl_err e = journal_open(dir, T.disk, NULL, &T.j);
    if (!e)
      e = T.ops->open(&T.s, T.disk, T.size, &T.st);
    if (!e)
      e = what();
    fprintf(stderr, "child: went on past %s: %s\n", step, rpl_detail(e));
    _exit(3);
  }
  int status;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL)
    fail_msg("the child did not die at %s (status %d)", step, status);
  journal_reopen();
  store_open();
}

/* ---- steps ----------------------------------------------------------------------------------- */

static void step1_points(void **state)
{
  (void)state;
  for (uint64_t n = 1; n <= T.points; n++) {
    cycle(n);
    apply(n);
    assert_true(T.image[n][0]);
    char image[4200];
    uint64_t c;
    if (!undo_parse_path(T.image[n], image, sizeof image, &c) || c != n)
      fail_msg("point %" PRIu64 " is %s, not an undo file (the filesystem has reflinks?)", n, T.image[n]);
  }
  size_t files;
  uint64_t used = undo_bytes(&files);
  struct stat sb;
  char image[4200];
  uint64_t c;
  assert_true(undo_parse_path(T.image[1], image, sizeof image, &c));
  assert_int_equal(stat(image, &sb), 0);
  printf("%u points: %zu undo files take %" PRIu64 " KiB for %" PRIu64 " KiB of blocks overwritten after a point "
         "(%.2fx); the image takes %" PRIu64 " KiB (a copy per point: %" PRIu64 " KiB)\n",
         T.points, files, used >> 10, T.undo_expected >> 10, (double)used / (double)T.undo_expected,
         (uint64_t)sb.st_blocks / 2, (uint64_t)sb.st_blocks / 2 * T.points);
  assert_int_equal(files, T.points);
  /* Headers and a filesystem block per file at most beyond the blocks themselves. */
  assert_true(used <= T.undo_expected + T.undo_expected / 8 + T.points * 8192ull);
  assert_true(used >= T.undo_expected);
  expect_all_points("after the points");
}

static void next_cycle(void)
{
  cycle(T.last + 1);
  apply(T.last + 1);
}

/* A restore reads on while cycles land and a new point is made: it still sees its point. */
static void step2_read_while_applying(void **state)
{
  (void)state;
  uint64_t n = T.last;
  uint8_t *want = malloc(T.size);
  assert_non_null(want);
  memcpy(want, T.model, T.size);
  expect_point(n, want, next_cycle);
  free(want);
  assert_true(T.last == n + 1 && T.image[n + 1][0]);
}

static uint64_t pruned_middle, pruned_oldest;

static void prune(uint64_t n)
{
  assert_int_equal(T.ops->delete_point(T.st, T.image[n]), RPL_OK);
  struct stat sb;
  assert_int_not_equal(stat(T.image[n], &sb), 0);
  T.image[n][0] = 0;
}

static void step3_prune(void **state)
{
  (void)state;
  pruned_middle = T.points / 2;
  pruned_oldest = 1;
  prune(pruned_middle);
  prune(pruned_oldest);
  expect_all_points("after pruning a middle and the oldest point");
}

static uint64_t victim;

/* What a kill -9 amid pruning the victim or making a point could touch: the victim and its
 * neighbours (the merge target is the next older), the oldest left and the newest. */
static bool near_victim(uint64_t n)
{
  uint64_t oldest = 1;
  while (oldest < T.last && !T.image[oldest][0])
    oldest++;
  return n + 1 == victim || n == victim || n == victim + 1 || n == oldest || n == T.last;
}

static rpl_err delete_victim(void) { return T.ops->delete_point(T.st, T.image[victim]); }

/* Applies the cycle built before the fork (a point). */
static rpl_err apply_built(void)
{
  const struct store_apply_cb cb = {.applied = on_applied, .point = on_point, .ctx = NULL};
  return T.ops->apply_next(T.st, T.j, &cb);
}

static void step4_kill9(void **state)
{
  (void)state;
  victim = pruned_middle + 1;
  killed_at("merge-appended", delete_victim);
  expect_points("after a kill -9 amid the merge of a pruned point", near_victim);
  killed_at("merge-synced", delete_victim);
  expect_points("after a kill -9 between the merge and the removal", near_victim);
  prune(victim);
  expect_points("after the pruning was done again", near_victim);

  /* While a point is recorded: its undo file named, the point not yet told. */
  uint64_t n = T.last + 1;
  cycle(n);
  killed_at("start-named", apply_built);
  T.last = n; /* the child applied it: the journal says so */
  struct journal_usage u;
  journal_get_usage(T.j, &u);
  assert_int_equal(u.last_applied, n);
  assert_int_equal(journal_trim(T.j, n), RPL_OK);
  cycle(n + 1);
  apply(n + 1);
  expect_points("after a kill -9 while a point was recorded", near_victim);

  /* Before its undo file was named: the temp file goes at the next open. */
  cycle(n + 2);
  killed_at("start-tmp", apply_built);
  T.last = n + 2;
  assert_int_equal(journal_trim(T.j, n + 2), RPL_OK);
  char tmp[4300];
  snprintf(tmp, sizeof tmp, "%.*s" UNDO_SUFFIX "%" PRIu64 ".tmp", (int)(strstr(T.image[n + 1], UNDO_SUFFIX) - T.image[n + 1]),
           T.image[n + 1], n + 2);
  struct stat sb;
  if (stat(tmp, &sb) == 0)
    fail_msg("%s is left after the store was opened again", tmp);
  cycle(n + 3);
  apply(n + 3);
  expect_points("after a kill -9 before a point's undo file was named", near_victim);
}

/* A direct cycle n: a 6 MiB run, 1 % of the disk in blocks, zeros, and 4 KiB blocks until it is
 * larger than the stage (32 MiB, two halves); a third of them read into the store's room, some of
 * those rooms given up first; abort_first: sent once and given up, then sent again whole. */
static void direct_cycle(uint64_t n, bool point, bool abort_first)
{
  struct { uint64_t off; uint32_t len; uint8_t *raw; } x[12000];
  size_t nx = 0;
  uint64_t blocks = T.size / UNDO_BLOCK, bytes = 0, want = 40ull << 20;
  if (want > T.size * 3 / 4)
    want = T.size * 3 / 4;
  while (bytes < want && nx < sizeof x / sizeof x[0]) {
    uint32_t len = nx == 0 ? 6u << 20 : nx == 1 ? 64u << 10 : UNDO_BLOCK;
    if (len >= T.size / 2)
      len = UNDO_BLOCK;
    uint64_t off = (next_rand() % (blocks - len / UNDO_BLOCK)) * UNDO_BLOCK;
    uint8_t *raw = NULL;
    if (nx != 1) { /* the second extent is zeros */
      raw = malloc(len);
      assert_non_null(raw);
      fill_random(raw, len);
    }
    struct rollback *r = realloc(T.rb[n], (T.nrb[n] + 1) * sizeof *r);
    assert_non_null(r);
    T.rb[n] = r;
    r[T.nrb[n]] = (struct rollback){off, len, malloc(len)};
    assert_non_null(r[T.nrb[n]].old);
    memcpy(r[T.nrb[n]].old, T.model + off, len);
    T.nrb[n]++;
    if (raw)
      memcpy(T.model + off, raw, len);
    else
      memset(T.model + off, 0, len);
    x[nx++] = (typeof(x[0])){off, len, raw};
    bytes += len;
  }
  for (int pass = abort_first ? 0 : 1; pass < 2; pass++) {
    assert_true(T.ops->direct_begin(T.st, n, point ? PROTO_CYCLE_RECOVERY_POINT : PROTO_CYCLE_PLAIN, false));
    for (size_t i = 0; i < nx; i++) {
      const uint8_t *src = x[i].raw;
      if (src && i % 3 == 0) { /* read into the store's room, as a session does; some rooms given up first */
        uint8_t *room = T.ops->direct_room(T.st, x[i].off, x[i].len);
        if (room && i % 6 == 0) { /* an extent refused after it was read into its room */
          memset(room, 0xA5, x[i].len);
          room = T.ops->direct_room(T.st, x[i].off, x[i].len);
        }
        if (room) {
          memcpy(room, src, x[i].len);
          src = room;
          T.rooms_used++;
        }
      }
      assert_int_equal(T.ops->direct_extent(T.st, x[i].off, src, x[i].len), RPL_OK);
    }
    if (pass == 0)
      T.ops->direct_abort(T.st);
    else
      assert_int_equal(T.ops->direct_commit(T.st), RPL_OK);
  }
  for (size_t i = 0; i < nx; i++)
    free(x[i].raw);
  T.last = n;
  if (point) {
    char id[CATALOG_MAX_SNAPSHOT_ID + 1];
    assert_int_equal(T.ops->make_point(T.st, n, id, sizeof id), RPL_OK);
    snprintf(T.image[n], sizeof T.image[n], "%s", id);
  }
}

/* Last: direct cycles need no journal, and the journal's cycles cannot follow them here. */
static void step5_direct(void **state)
{
  (void)state;
  uint64_t n = T.last;
  direct_cycle(n + 1, false, false);
  direct_cycle(n + 2, true, false);
  direct_cycle(n + 3, true, true);
  assert_true(T.rooms_used > 0);
  victim = n + 2;
  expect_points("after direct cycles (one given up and sent again)", near_victim);
}

/* Three disks' direct cycles at once, their extents interleaved, each larger than a stage (each
 * disk holds its own): each disk's points restore as it was at their time. */
#define AT_ONCE 3
static void step6_direct_at_once(void **state)
{
  (void)state;
  const uint64_t size = 64 * MIB;
  const uint32_t piece = 64 * 1024;
  struct {
    uint8_t id[PROTO_ID_SIZE];
    struct store *st;
    uint8_t *model[3];                           /* the disk after each cycle */
    char point[3][CATALOG_MAX_SNAPSHOT_ID + 1]; /* each cycle's point */
  } d[AT_ONCE];
  uint8_t *raw = malloc(piece);
  assert_non_null(raw);
  for (int k = 0; k < AT_ONCE; k++) {
    uuid_generate(d[k].id);
    rpl_err e = T.ops->open(&T.s, d[k].id, size, &d[k].st);
    if (e)
      fail_msg("store open: %s", rpl_detail(e));
    for (int c = 0; c < 3; c++) {
      d[k].model[c] = calloc(1, size);
      assert_non_null(d[k].model[c]);
    }
  }
  /* Cycle 1 lays down data (no point before it: written straight); cycles 2 and 3, 36 MiB each
   * (more than a stage), interleaved across the disks. */
  for (uint64_t c = 1; c <= 3; c++) {
    for (int k = 0; k < AT_ONCE; k++) {
      if (c > 1)
        memcpy(d[k].model[c - 1], d[k].model[c - 2], size);
      assert_true(T.ops->direct_begin(d[k].st, c, PROTO_CYCLE_RECOVERY_POINT, false));
    }
    uint64_t pieces = c == 1 ? size / piece : (36 * MIB) / piece;
    for (uint64_t i = 0; i < pieces; i++)
      for (int k = 0; k < AT_ONCE; k++) {
        uint64_t off = c == 1 ? i * piece : (next_rand() % (size / piece)) * piece;
        fill_random(raw, piece);
        memcpy(d[k].model[c - 1] + off, raw, piece);
        assert_int_equal(T.ops->direct_extent(d[k].st, off, raw, piece), RPL_OK);
      }
    for (int k = 0; k < AT_ONCE; k++) {
      assert_int_equal(T.ops->direct_commit(d[k].st), RPL_OK);
      assert_int_equal(T.ops->make_point(d[k].st, c, d[k].point[c - 1], sizeof d[k].point[c - 1]), RPL_OK);
    }
  }
  for (int k = 0; k < AT_ONCE; k++) {
    for (int c = 0; c < 3; c++) {
      char what[96];
      snprintf(what, sizeof what, "point of cycle %d of disk %d (of %d cycled at once)", c, k, AT_ONCE);
      expect_image(d[k].id, d[k].point[c], size, d[k].model[c], NULL, what);
    }
    assert_int_equal(T.ops->delete_replica(d[k].st), RPL_OK);
    T.ops->close(d[k].st);
    for (int c = 0; c < 3; c++)
      free(d[k].model[c]);
  }
  free(raw);
  printf("direct cycles of %d disks at once: every point of each restores byte-identical\n", AT_ONCE);
}

static int setup(void **state)
{
  (void)state;
  rpl_err e = settings_load(T.state_dir, &T.s);
  if (e) {
    fprintf(stderr, "settings: %s\n", rpl_detail(e));
    return -1;
  }
  T.ops = store_backend(&T.s);
  uuid_generate(T.disk);
  T.model = calloc(1, T.size);
  T.work = malloc(T.size);
  T.rng = 0x9e3779b97f4a7c15ull;
  char dir[4200];
  snprintf(dir, sizeof dir, "%s/journal", T.work_dir);
  if (!T.model || !T.work || mkdir(dir, 0700) || journal_open(dir, T.disk, NULL, &T.j))
    return -1;
  e = T.ops->open(&T.s, T.disk, T.size, &T.st);
  if (e)
    fprintf(stderr, "store open: %s\n", rpl_detail(e));
  return e ? -1 : 0;
}

static int teardown(void **state)
{
  (void)state;
  if (T.st)
    T.ops->close(T.st);
  journal_close(T.j);
  for (size_t n = 0; n <= MAX_CYCLES; n++) {
    for (size_t i = 0; i < T.nrb[n]; i++)
      free(T.rb[n][i].old);
    free(T.rb[n]);
  }
  free(T.model);
  free(T.work);
  return 0;
}

int main(int argc, char **argv)
{
  if (argc != 5 || atoi(argv[3]) < 16 || atoi(argv[4]) < 4 || atoi(argv[4]) > MAX_CYCLES - 8) {
    fprintf(stderr, "usage: file_points STATE_DIR WORK_DIR DISK_MIB(>=16) POINTS(4-%d)\n", MAX_CYCLES - 8);
    return 2;
  }
  T.state_dir = argv[1];
  T.work_dir = argv[2];
  T.size = (uint64_t)atoi(argv[3]) * MIB;
  T.points = (unsigned)atoi(argv[4]);
  log_init("file_points", LOG_LVL_NOTICE);
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(step1_points),
    cmocka_unit_test(step2_read_while_applying),
    cmocka_unit_test(step3_prune),
    cmocka_unit_test(step4_kill9),
    cmocka_unit_test(step5_direct),
    cmocka_unit_test(step6_direct_at_once),
  };
  return cmocka_run_group_tests_name("file_points", tests, setup, teardown);
}
