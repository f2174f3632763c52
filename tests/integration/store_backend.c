/* store_backend.c - Description: one sequence of checks of the storage interface (store.h), run
 * through its table only against whichever backend the settings name (the file replica, or a page
 * blob in Azurite): grow and refused shrink, lease, a direct cycle (data and zeros over a given-up
 * try), a journal recovery-point cycle with both callbacks, a corrupted cycle that changes nothing,
 * the point's image unchanged by a later cycle, make and delete points, failure kinds and stats, a
 * second appliance kept out by the lease, the replica intact after close and open, cycles whose
 * extents overlap (a later extent wins, as the agent's second freeze of a point sends them), the replica
 * deleted with its point images (unprotect --delete-replica).
 * Usage: store_backend STATE_DIR WORK_DIR file|blob (settings from `replication-appliance init`). */
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <uuid/uuid.h>
#include <zstd.h>
#include <cmocka.h>

#include "journal.h"
#include "rpl_log.h"
#include "settings.h"
#include "store.h"

#define MIB (1u << 20)
#define SIZE0 (8u * MIB)  /* the disk's size at open */
#define SIZE (12u * MIB)  /* after it grew */
/* Never written by any cycle: a point's image reads it as a hole. */
#define HOLE_OFF (11u * MIB)
#define HOLE_LEN (1u * MIB)
#define MAX_EXTENTS 16
#define MAX_EVENTS 8

static const char *state_dir, *work_dir, *expect_kind;

/* One callback of store_apply_next, in the order it came. */
struct event {
  char what; /* 'a' applied, 'p' point */
  uint64_t cycle;
  uint8_t kind;
  bool point_follows;
  bool journal_marked; /* applied: the journal already said the cycle was applied */
  char image_id[CATALOG_MAX_SNAPSHOT_ID + 1];
};

struct ctx {
  struct appliance_settings s;
  const struct store_ops *ops;
  bool blob;
  uint8_t disk[PROTO_ID_SIZE];
  struct store *st;
  uint8_t *model;    /* what the replica must hold now (SIZE bytes) */
  uint8_t *model2;   /* the replica after cycle 2, the recovery point */
  uint8_t *model3;   /* after cycle 3 */
  struct journal *j; /* cycles 2 and the corrupted 3 */
  struct journal *apply_j;
  struct event ev[MAX_EVENTS];
  int nev;
  char point_id[CATALOG_MAX_SNAPSHOT_ID + 1];
  rpl_err corrupt_err;
  uint64_t data_bytes; /* raw bytes of data (not zeros) of the cycles that landed */
  uint64_t rng;
  bool done[12];     /* step k finished: later steps build on it */
};

static struct ctx C;

/* ---- helpers -------------------------------------------------------------------------------- */

static void need(int step)
{
  if (!C.done[step]) {
    fprintf(stderr, "step %d did not finish: this step builds on it\n", step);
    skip();
  }
}

static void fill_random(uint8_t *buf, size_t len)
{
  for (size_t i = 0; i < len; i++) {
    C.rng ^= C.rng << 13, C.rng ^= C.rng >> 7, C.rng ^= C.rng << 17;
    buf[i] = (uint8_t)C.rng;
  }
}

/* The first byte where a and b differ, or len. */
static size_t first_diff(const uint8_t *a, const uint8_t *b, size_t len)
{
  size_t i = 0;
  while (i < len && a[i] == b[i])
    i++;
  return i;
}

/* The whole replica, read through the table, equals want. */
static void expect_replica(const uint8_t *want, const char *when)
{
  uint8_t *got = malloc(SIZE);
  assert_non_null(got);
  rpl_err e = C.ops->read(C.st, 0, got, SIZE);
  if (e)
    fail_msg("%s: read of the replica failed: %s", when, rpl_errname(e));
  size_t d = first_diff(got, want, SIZE);
  free(got);
  if (d != SIZE)
    fail_msg("%s: the replica differs from what was written, first at byte %zu", when, d);
}

/* The image of point image_id read through a reader, in 1 MiB reads: equals want, the never-written
 * range reads as a hole, a range of data does not. */
static void expect_point_image(const char *image_id, const uint8_t *want, const char *when)
{
  struct store_image *img = NULL;
  struct store_reader *rd = NULL;
  rpl_err e = C.ops->image_open(&C.s, C.disk, image_id, SIZE, &img);
  if (e)
    fail_msg("%s: image_open(%s): %s (%s)", when, image_id, rpl_errname(e), rpl_detail(e));
  assert_ptr_equal(img->ops, C.ops);
  if ((e = C.ops->reader_open(img, &rd)))
    fail_msg("%s: reader_open: %s (%s)", when, rpl_errname(e), rpl_detail(e));
  uint8_t *buf = malloc(MIB);
  assert_non_null(buf);
  for (uint64_t off = 0; off < SIZE; off += MIB) {
    bool hole = false;
    if ((e = C.ops->reader_read(rd, off, buf, MIB, &hole)))
      fail_msg("%s: reader_read at %" PRIu64 ": %s", when, off, rpl_errname(e));
    size_t d = first_diff(buf, want + off, MIB);
    if (d != MIB)
      fail_msg("%s: the point's image differs from the point's state at byte %" PRIu64, when, off + d);
    if (off == HOLE_OFF && !hole)
      fail_msg("%s: store.h reader_read: *hole must be true where nothing was ever written (%" PRIu64 "+%u)", when,
               off, MIB);
    if (off == 0 && hole)
      fail_msg("%s: store.h reader_read: *hole must be false for a range holding data (0+%u)", when, MIB);
  }
  free(buf);
  C.ops->reader_close(rd);
  C.ops->image_close(img);
}

static struct store_found_point *find_point(struct store_found_point *pts, size_t n, const char *id)
{
  for (size_t i = 0; i < n; i++)
    if (!strcmp(pts[i].image_id, id))
      return &pts[i];
  return NULL;
}

/* list_points, then whether id is in it (and its cycle). */
static bool listed(const char *id, uint64_t *cycle)
{
  struct store_found_point *pts = NULL;
  size_t n = 0;
  rpl_err e = C.ops->list_points(C.st, &pts, &n);
  if (e)
    fail_msg("list_points: %s", rpl_errname(e));
  struct store_found_point *p = find_point(pts, n, id);
  if (p && cycle)
    *cycle = p->cycle;
  free(pts);
  return p != NULL;
}

/* ---- building journal cycles (as test_replica.c: the codec's payload, the xxh3-128 hash) ----- */

struct cycle_builder {
  struct journal *j;
  uint64_t n;
  struct journal_cycle_totals t;
  uint8_t hashes[MAX_EXTENTS * PROTO_HASH_SIZE];
};

static void cycle_begin(struct cycle_builder *b, struct journal *j, uint64_t n, uint8_t kind)
{
  memset(b, 0, sizeof *b);
  b->j = j;
  b->n = n;
  assert_int_equal(journal_begin_cycle(j, n, kind), RPL_OK);
}

/* One extent of codec at offset: random data (NONE), compressible data (ZSTD) or zeros (ZERO).
 * corrupt: the payload is damaged after hashing (the hash no longer matches). model gets the
 * bytes unless corrupt. */
static void cycle_extent(struct cycle_builder *b, uint64_t offset, uint32_t length, uint8_t codec, bool corrupt,
                         uint8_t *model)
{
  uint8_t *raw = malloc(length), *payload = malloc(ZSTD_compressBound(length));
  assert_non_null(raw);
  assert_non_null(payload);
  struct journal_extent x = {.offset = offset, .length = length, .codec = codec};
  if (codec == PROTO_CODEC_ZERO) {
    memset(raw, 0, length);
  } else if (codec == PROTO_CODEC_ZSTD) {
    fill_random(raw, length);
    for (uint32_t k = 0; k < length; k++) /* compressible: short runs of a few symbols */
      raw[k] = (uint8_t)('a' + (k / 7 + raw[k] % 2) % 6);
    size_t n = ZSTD_compress(payload, ZSTD_compressBound(length), raw, length, 1);
    assert_false(ZSTD_isError(n));
    x.payload = payload;
    x.payload_len = (uint32_t)n;
  } else {
    fill_random(raw, length);
    memcpy(payload, raw, length);
    x.payload = payload;
    x.payload_len = length;
  }
  proto_hash128(raw, length, x.hash);
  if (corrupt) {
    assert_int_not_equal(codec, PROTO_CODEC_ZERO);
    payload[x.payload_len / 2] ^= 0x01; /* a bit flip the transport's checks missed */
  }
  assert_true(b->t.extents < MAX_EXTENTS);
  assert_int_equal(journal_append_extent(b->j, b->n, &x), RPL_OK);
  memcpy(b->hashes + b->t.extents * PROTO_HASH_SIZE, x.hash, PROTO_HASH_SIZE);
  b->t.extents++;
  b->t.raw_bytes += length;
  b->t.payload_bytes += x.payload_len;
  if (!corrupt && model) {
    memcpy(model + offset, raw, length);
    if (codec != PROTO_CODEC_ZERO)
      C.data_bytes += length;
  }
  free(payload);
  free(raw);
}

static void cycle_commit(struct cycle_builder *b)
{
  proto_hash128(b->hashes, b->t.extents * PROTO_HASH_SIZE, b->t.digest);
  assert_int_equal(journal_commit_cycle(b->j, b->n, &b->t), RPL_OK);
}

static uint64_t journal_applied(struct journal *j)
{
  struct journal_usage u;
  journal_get_usage(j, &u);
  return u.last_applied;
}

static void on_applied(void *ctx, uint64_t cycle, uint8_t kind, bool point_follows)
{
  struct ctx *c = ctx;
  if (c->nev == MAX_EVENTS)
    return;
  c->ev[c->nev++] = (struct event){.what = 'a', .cycle = cycle, .kind = kind, .point_follows = point_follows,
                                   .journal_marked = journal_applied(c->apply_j) >= cycle};
}

static void on_point(void *ctx, uint64_t cycle, const char *image_id)
{
  struct ctx *c = ctx;
  if (c->nev == MAX_EVENTS)
    return;
  struct event *ev = &c->ev[c->nev++];
  *ev = (struct event){.what = 'p', .cycle = cycle};
  snprintf(ev->image_id, sizeof ev->image_id, "%s", image_id ? image_id : "");
}

static rpl_err apply_next(struct journal *j)
{
  const struct store_apply_cb cb = {.applied = on_applied, .point = on_point, .ctx = &C};
  C.nev = 0;
  C.apply_j = j;
  return C.ops->apply_next(C.st, j, &cb);
}

static struct journal *journal_in(const char *name, uint64_t base)
{
  char dir[4200];
  snprintf(dir, sizeof dir, "%s/%s", work_dir, name);
  assert_true(mkdir(dir, 0700) == 0);
  struct journal *j = NULL;
  assert_int_equal(journal_open(dir, C.disk, NULL, &j), RPL_OK);
  assert_int_equal(journal_set_base(j, base), RPL_OK); /* the cycles up to base went straight in */
  return j;
}

/* One extent of a direct cycle: data (random, into the model) or zeros. */
struct direct_ext {
  uint32_t off, len;
  bool zero;
};

/* Writes n extents into the open direct cycle, in order, and into the model; raw is the caller's
 * MIB buffer, overwritten after each extent (store.h: the backend copied it). */
static void direct_extents(const struct direct_ext *ext, size_t n, uint8_t *raw)
{
  for (size_t i = 0; i < n; i++) {
    rpl_err e;
    if (ext[i].zero) {
      memset(C.model + ext[i].off, 0, ext[i].len);
      e = C.ops->direct_extent(C.st, ext[i].off, NULL, ext[i].len);
    } else {
      fill_random(raw, ext[i].len);
      memcpy(C.model + ext[i].off, raw, ext[i].len);
      e = C.ops->direct_extent(C.st, ext[i].off, raw, ext[i].len);
      memset(raw, 0xcc, ext[i].len);
      C.data_bytes += ext[i].len;
    }
    if (e)
      fail_msg("direct_extent %u+%u: %s", ext[i].off, ext[i].len, rpl_errname(e));
  }
}

/* ---- the sequence --------------------------------------------------------------------------- */

/* 1. open at a size, grow; a shrink is refused and changes nothing. */
static void step1_open_resize(void **state)
{
  (void)state;
  C.ops = store_backend(&C.s);
  const struct store_ops *want = C.blob ? &store_blob_ops : &store_file_ops;
  if (C.ops != want)
    fail_msg("store_backend picked \"%s\" for %s storage", C.ops->name, expect_kind);
  printf("backend: %s\n", C.ops->name);
  rpl_err e = C.ops->open(&C.s, C.disk, SIZE0, &C.st);
  if (e)
    fail_msg("open: %s (%s)", rpl_errname(e), rpl_detail(e));
  assert_non_null(C.st);
  assert_ptr_equal(C.st->ops, C.ops);

  /* A new replica reads as zeros. */
  uint8_t *buf = malloc(SIZE);
  assert_non_null(buf);
  assert_int_equal(C.ops->read(C.st, 0, buf, SIZE0), RPL_OK);
  assert_int_equal(first_diff(buf, C.model, SIZE0), SIZE0);

  assert_int_equal(C.ops->resize(C.st, SIZE), RPL_OK);
  memset(buf, 0xee, SIZE);
  assert_int_equal(C.ops->read(C.st, 0, buf, SIZE), RPL_OK);
  if (first_diff(buf, C.model, SIZE) != SIZE)
    fail_msg("the grown replica does not read as zeros (byte %zu)", first_diff(buf, C.model, SIZE));

  e = C.ops->resize(C.st, SIZE0);
  if (e != RPL_E_REPLICA_SHRINK)
    fail_msg("store.h: a shrink must fail with RPL_E_REPLICA_SHRINK, got %s", rpl_errname(e));
  /* Still the grown size: its last bytes read. */
  assert_int_equal(C.ops->read(C.st, SIZE - 4096, buf, 4096), RPL_OK);
  free(buf);
  C.done[1] = true;
}

/* 2. the lease: held after a tick (a backend without one reports it always held). */
static void step2_lease(void **state)
{
  (void)state;
  need(1);
  assert_int_equal(C.ops->leased, C.blob);
  bool acquired = true;
  int64_t seq = 12345;
  rpl_err e = C.ops->lease_tick(C.st, &acquired, &seq);
  if (e)
    fail_msg("lease_tick: %s", rpl_errname(e));
  if (!C.ops->leased)
    assert_false(acquired); /* nothing to acquire */
  rpl_err why = RPL_E_IO;
  if (!C.ops->lease_held(C.st, &why))
    fail_msg("store.h: lease_held must be true after lease_tick (why: %s)", rpl_errname(why));
  assert_int_equal(why, RPL_OK);
  /* A second tick keeps it (a renewal when due, nothing acquired anew). */
  assert_int_equal(C.ops->lease_tick(C.st, &acquired, NULL), RPL_OK);
  assert_false(acquired);
  assert_true(C.ops->lease_held(C.st, NULL));

  if (C.ops->leased) {
    /* A second appliance (its own lease id) opening the same replica: it does not hold the lease,
     * its tick fails as an ownership matter, and it may not start writing. */
    struct appliance_settings other = C.s;
    snprintf(other.lease_id, sizeof other.lease_id, "0e7a1b2c-0000-4000-8000-00000000cafe");
    struct store *st2 = NULL;
    rpl_err e2 = C.ops->open(&other, C.disk, SIZE, &st2);
    if (e2)
      fail_msg("open by a second appliance: %s (%s)", rpl_errname(e2), rpl_detail(e2));
    rpl_err not_held = RPL_OK;
    if (C.ops->lease_held(st2, &not_held))
      fail_msg("store.h: a second appliance reports the lease held while this one holds it");
    e2 = C.ops->lease_tick(st2, &acquired, NULL);
    bool direct = C.ops->direct_begin(st2, 1, PROTO_CYCLE_RESYNC, false);
    if (direct)
      C.ops->direct_abort(st2);
    C.ops->close(st2);
    assert_false(acquired);
    if (C.ops->failure_kind(not_held) != STORE_FAILURE_OWNERSHIP)
      fail_msg("store.h: lease_held's why (%s) must be STORE_FAILURE_OWNERSHIP", rpl_errname(not_held));
    if (e2 == RPL_OK || C.ops->failure_kind(e2) != STORE_FAILURE_OWNERSHIP)
      fail_msg("store.h: lease_tick of the lease another appliance holds must fail as STORE_FAILURE_OWNERSHIP, got %s",
               rpl_errname(e2));
    if (direct)
      fail_msg("store.h: direct_begin started a cycle without the lease (written only under its lease)");
    assert_true(C.ops->lease_held(C.st, NULL));
  }
  C.done[2] = true;
}

/* 3. direct cycle 1 (the initial sync): a given-up first try leaves data where the retry has zeros;
 * the retry's data and zeros land, the caller's buffers may change once handed over. */
static void step3_direct(void **state)
{
  (void)state;
  need(2);
  uint8_t *raw = malloc(MIB);
  assert_non_null(raw);

  if (!C.ops->direct_begin(C.st, 1, PROTO_CYCLE_RESYNC, false))
    fail_msg("direct_begin(1, RESYNC) refused on a new replica");
  memset(raw, 0x5a, MIB);
  assert_int_equal(C.ops->direct_extent(C.st, 1 * MIB, raw, MIB), RPL_OK);
  assert_int_equal(C.ops->direct_extent(C.st, 6 * MIB, raw, 4096), RPL_OK);
  C.ops->direct_abort(C.st);

  if (!C.ops->direct_begin(C.st, 1, PROTO_CYCLE_RESYNC, false))
    fail_msg("direct_begin(1, RESYNC) refused for the retry of a given-up cycle 1");
  static const struct direct_ext ext[] = {
    {0, MIB, false},                /* data */
    {1 * MIB, MIB, true},           /* zeros over the given-up try's data */
    {2 * MIB, 64 * 1024, false},
    {2 * MIB + 64 * 1024, 4096, true},
    {4 * MIB, 512, false},          /* one sector */
    {6 * MIB, 4096, true},          /* zeros over the given-up try's data */
    {8 * MIB, MIB, false},          /* in the grown part */
  };
  direct_extents(ext, sizeof ext / sizeof ext[0], raw);
  rpl_err e = C.ops->direct_commit(C.st);
  if (e)
    fail_msg("direct_commit: %s", rpl_errname(e));
  free(raw);
  expect_replica(C.model, "after direct cycle 1");
  uint64_t committed = C.ops->committed(C.st);
  if (committed != 1 && !(committed == 0 && !C.blob))
    fail_msg("committed() after direct cycle 1 is %" PRIu64 " (want 1%s)", committed, C.blob ? "" : " or 0");
  C.done[3] = true;
}

/* 4. journal cycle 2, a recovery point: applied and point both told, for cycle 2, in the order
 * point_follows says; nothing pending after it. */
static void step4_journal_point(void **state)
{
  (void)state;
  need(3);
  C.j = journal_in("journal-a", 1);
  struct cycle_builder b;
  cycle_begin(&b, C.j, 2, PROTO_CYCLE_RECOVERY_POINT);
  cycle_extent(&b, 512 * 1024, 256 * 1024, PROTO_CODEC_NONE, false, C.model); /* over cycle 1's data */
  cycle_extent(&b, 3 * MIB, MIB, PROTO_CODEC_ZSTD, false, C.model);
  cycle_extent(&b, 0, 64 * 1024, PROTO_CODEC_ZERO, false, C.model);             /* clears cycle 1's data */
  cycle_extent(&b, 9 * MIB + 4096, 8192, PROTO_CODEC_NONE, false, C.model);
  cycle_commit(&b);

  rpl_err e = apply_next(C.j);
  if (e)
    fail_msg("apply_next of cycle 2: %s", rpl_errname(e));
  int applied = -1, point = -1;
  for (int i = 0; i < C.nev; i++) {
    if (C.ev[i].cycle != 2)
      fail_msg("apply_next of cycle 2 told '%c' of cycle %" PRIu64, C.ev[i].what, C.ev[i].cycle);
    int *slot = C.ev[i].what == 'a' ? &applied : &point;
    if (*slot >= 0)
      fail_msg("apply_next of cycle 2 told '%c' twice", C.ev[i].what);
    *slot = i;
  }
  if (applied < 0)
    fail_msg("store.h: applied() was not called for cycle 2");
  if (point < 0)
    fail_msg("store.h: point() was not called for recovery-point cycle 2");
  const struct event *a = &C.ev[applied], *p = &C.ev[point];
  assert_int_equal(a->kind, PROTO_CYCLE_RECOVERY_POINT);
  if (!a->journal_marked)
    fail_msg("store.h applied(): the journal must mark the cycle applied by the time applied() is told");
  /* point_follows: the image is made after applied(); otherwise it was made (and told) before. */
  if (a->point_follows && point < applied)
    fail_msg("store.h applied(): point_follows was true but point() came before applied()");
  if (!a->point_follows && point > applied)
    fail_msg("store.h applied(): point_follows was false but point() came after applied()");
  if (!p->image_id[0])
    fail_msg("point() of cycle 2 gave an empty image id");
  snprintf(C.point_id, sizeof C.point_id, "%s", p->image_id);
  printf("point of cycle 2: %s (%s, point_follows=%d)\n", C.point_id, C.ops->image_kind, a->point_follows);

  assert_int_equal(journal_applied(C.j), 2);
  e = apply_next(C.j);
  if (e != RPL_E_NOT_FOUND)
    fail_msg("apply_next with nothing pending: want RPL_E_NOT_FOUND, got %s", rpl_errname(e));
  assert_int_equal(C.nev, 0);
  expect_replica(C.model, "after journal cycle 2");
  memcpy(C.model2, C.model, SIZE);
  uint64_t committed = C.ops->committed(C.st);
  if (committed != 2 && !(committed == 0 && !C.blob))
    fail_msg("committed() after cycle 2 is %" PRIu64 " (want 2%s)", committed, C.blob ? "" : " or 0");
  C.done[4] = true;
}

/* 5. a cycle whose last extent fails its hash: apply_next fails, tells nothing, changes nothing,
 * and fails again on the next try (the cycle is not skipped). */
static void step5_corrupt(void **state)
{
  (void)state;
  need(4);
  uint64_t committed_before = C.ops->committed(C.st);
  struct cycle_builder b;
  cycle_begin(&b, C.j, 3, PROTO_CYCLE_PLAIN);
  cycle_extent(&b, 5 * MIB, 128 * 1024, PROTO_CODEC_NONE, false, NULL); /* never written before */
  cycle_extent(&b, 0, 256 * 1024, PROTO_CODEC_ZSTD, false, NULL);
  cycle_extent(&b, 8 * MIB, 64 * 1024, PROTO_CODEC_ZERO, false, NULL);
  cycle_extent(&b, 7 * MIB, 4096, PROTO_CODEC_NONE, true, NULL);          /* last: damaged */
  cycle_commit(&b);
  for (int attempt = 1; attempt <= 2; attempt++) {
    rpl_err e = apply_next(C.j);
    if (e == RPL_OK || e == RPL_E_NOT_FOUND)
      fail_msg("store.h: apply_next of a cycle with a wrong hash must fail (try %d), got %s", attempt,
               rpl_errname(e));
    printf("corrupted cycle 3, try %d: %s\n", attempt, rpl_errname(e));
    C.corrupt_err = e;
    if (C.nev)
      fail_msg("apply_next of a failed cycle told '%c' of cycle %" PRIu64, C.ev[0].what, C.ev[0].cycle);
    expect_replica(C.model2, "after the corrupted cycle 3 (store.h: a cycle that fails a check changes nothing)");
    assert_int_equal(journal_applied(C.j), 2);
    assert_int_equal(C.ops->committed(C.st), committed_before);
  }
  enum store_failure k = C.ops->failure_kind(C.corrupt_err);
  if (k != STORE_FAILURE_RESYNC)
    fail_msg("store.h: failure_kind(%s) of bad cached data must be STORE_FAILURE_RESYNC, got %d",
             rpl_errname(C.corrupt_err), (int)k);
  journal_close(C.j);
  C.j = NULL;
  C.done[5] = true;
}

/* 6. the point is listed with its cycle and its image reads cycle 2's state; a later cycle 3
 * changes the replica but not the point's image. */
static void step6_point_image(void **state)
{
  (void)state;
  need(4);
  uint64_t cycle = 0;
  if (!listed(C.point_id, &cycle))
    fail_msg("list_points does not have the point of cycle 2 (%s)", C.point_id);
  assert_int_equal(cycle, 2);
  expect_point_image(C.point_id, C.model2, "point of cycle 2");

  /* Cycle 3 from a fresh journal (the corrupted one stays pending in the other). */
  struct journal *j = journal_in("journal-b", 2);
  struct cycle_builder b;
  cycle_begin(&b, j, 3, PROTO_CYCLE_PLAIN);
  cycle_extent(&b, 128 * 1024, 64 * 1024, PROTO_CODEC_NONE, false, C.model);
  cycle_extent(&b, 3 * MIB + 512 * 1024, 256 * 1024, PROTO_CODEC_ZSTD, false, C.model);
  cycle_extent(&b, 8 * MIB, 64 * 1024, PROTO_CODEC_ZERO, false, C.model);
  cycle_commit(&b);
  assert_int_not_equal(first_diff(C.model, C.model2, SIZE), SIZE);
  rpl_err e = apply_next(j);
  if (e)
    fail_msg("apply_next of cycle 3: %s", rpl_errname(e));
  assert_int_equal(C.nev, 1);
  assert_int_equal(C.ev[0].what, 'a');
  assert_int_equal(C.ev[0].cycle, 3);
  assert_int_equal(C.ev[0].kind, PROTO_CYCLE_PLAIN);
  assert_false(C.ev[0].point_follows);
  assert_int_equal(apply_next(j), RPL_E_NOT_FOUND);
  journal_close(j);
  expect_replica(C.model, "after cycle 3");
  memcpy(C.model3, C.model, SIZE);
  uint64_t committed = C.ops->committed(C.st);
  if (committed != 3 && !(committed == 0 && !C.blob))
    fail_msg("committed() after cycle 3 is %" PRIu64 " (want 3%s)", committed, C.blob ? "" : " or 0");

  expect_point_image(C.point_id, C.model2, "point of cycle 2 after cycle 3");
  C.done[6] = true;
}

/* 7. a point made of the replica as it is (cycle 3), then both deleted; deleting one already gone
 * is not an error. */
static void step7_make_delete(void **state)
{
  (void)state;
  need(6);
  char id3[CATALOG_MAX_SNAPSHOT_ID + 1] = "";
  rpl_err e = C.ops->make_point(C.st, 3, id3, sizeof id3);
  if (e)
    fail_msg("make_point(3): %s", rpl_errname(e));
  assert_true(id3[0]);
  assert_string_not_equal(id3, C.point_id);
  uint64_t cycle = 0;
  if (!listed(id3, &cycle))
    fail_msg("list_points does not have the point made of cycle 3 (%s)", id3);
  assert_int_equal(cycle, 3);
  expect_point_image(id3, C.model3, "point made of cycle 3");

  if ((e = C.ops->delete_point(C.st, C.point_id)))
    fail_msg("delete_point(%s): %s", C.point_id, rpl_errname(e));
  if (listed(C.point_id, NULL))
    fail_msg("list_points still has the deleted point %s", C.point_id);
  assert_true(listed(id3, NULL));
  /* Checked last, so that the other checks of this step still run when it fails. */
  rpl_err again = C.ops->delete_point(C.st, C.point_id);
  assert_int_equal(C.ops->delete_point(C.st, id3), RPL_OK);
  assert_false(listed(id3, NULL));
  expect_replica(C.model3, "after the points were deleted");
  C.done[7] = true;
  if (again)
    fail_msg("store.h delete_point: \"one already gone is not an error\", but deleting %s again gave %s", C.point_id,
             rpl_errname(again));
}

/* 8. failure kinds are the enum's; the stats say whether bytes cross a network and count them;
 * describe names the storage without secrets. */
static void step8_failure_stats(void **state)
{
  (void)state;
  need(1);
  static const rpl_err errs[] = {RPL_E_IO, RPL_E_REPLICA_HASH, RPL_E_LEASE_HELD, RPL_E_LEASE_LOST,
                                 RPL_E_BLOB_NOT_FOUND, RPL_E_JOURNAL_CORRUPT};
  for (size_t i = 0; i < sizeof errs / sizeof errs[0]; i++) {
    enum store_failure k = C.ops->failure_kind(errs[i]);
    if (k != STORE_FAILURE_RESYNC && k != STORE_FAILURE_STORAGE && k != STORE_FAILURE_OWNERSHIP)
      fail_msg("failure_kind(%s) = %d is not a store_failure", rpl_errname(errs[i]), (int)k);
  }
  assert_int_equal(C.ops->failure_kind(RPL_E_REPLICA_HASH), STORE_FAILURE_RESYNC);

  struct store_stats st;
  memset(&st, 0xff, sizeof st);
  C.ops->get_stats(C.st, &st);
  printf("stats: transfers=%d bytes_written=%" PRIu64 " (data that landed: %" PRIu64 ") limit_wait_ms=%" PRIu64 "\n",
         st.transfers, st.bytes_written, C.data_bytes, st.limit_wait_ms);
  assert_int_equal(st.transfers, C.blob);
  if (C.blob && st.bytes_written < C.data_bytes)
    fail_msg("store.h store_stats: bytes_written %" PRIu64 " is less than the data that landed in the storage (%" PRIu64
             " bytes)", st.bytes_written, C.data_bytes);
  if (C.blob)
    assert_true(st.bytes_written > 0);

  char desc[1024] = "";
  C.ops->describe(&C.s, desc, sizeof desc);
  assert_true(desc[0]);
  const char *key = strstr(C.s.storage, "AccountKey=");
  if (key) {
    char secret[16];
    snprintf(secret, sizeof secret, "%s", key + strlen("AccountKey="));
    if (strstr(desc, secret))
      fail_msg("describe() shows the account key");
  }
  C.done[8] = true;
}

/* 9. closed and opened again: the replica holds every cycle that landed (durable), and the
 * storage's own record of the last cycle survived. */
static void step9_reopen(void **state)
{
  (void)state;
  need(6);
  uint64_t committed = C.ops->committed(C.st);
  C.ops->close(C.st);
  C.st = NULL;
  rpl_err e = C.ops->open(&C.s, C.disk, SIZE, &C.st);
  if (e)
    fail_msg("open again: %s (%s)", rpl_errname(e), rpl_detail(e));
  bool acquired;
  assert_int_equal(C.ops->lease_tick(C.st, &acquired, NULL), RPL_OK);
  assert_true(C.ops->lease_held(C.st, NULL));
  expect_replica(C.model3, "after close and open");
  assert_int_equal(C.ops->committed(C.st), committed);
  assert_int_equal(C.ops->resize(C.st, SIZE0), RPL_E_REPLICA_SHRINK);
  C.done[9] = true;
}

/* 10. a recovery-point cycle whose later extents overlap earlier ones: what the agent sends when
 * a point's remainder, read after the thaw, was rewritten and is read again frozen in the same
 * cycle. The later extent wins in the replica and in the point, also when the earlier one is a
 * large write still on its way (a 4 MiB run, then 4 KiB inside it) or zeros; the same in a direct
 * cycle. */
static void step10_overlapping_extents(void **state)
{
  (void)state;
  need(9);
  struct journal *j = journal_in("journal-c", 3);
  struct cycle_builder b;
  cycle_begin(&b, j, 4, PROTO_CYCLE_RECOVERY_POINT);
  for (uint32_t k = 0; k < 4; k++) /* one 4 MiB run */
    cycle_extent(&b, (4 + k) * (uint64_t)MIB, MIB, PROTO_CODEC_NONE, false, C.model);
  cycle_extent(&b, 4 * MIB + 8192, 4096, PROTO_CODEC_NONE, false, C.model);     /* inside the run */
  cycle_extent(&b, 5 * MIB, 64 * 1024, PROTO_CODEC_ZERO, false, C.model);        /* zeros inside it */
  cycle_extent(&b, 5 * MIB + 4096, 4096, PROTO_CODEC_NONE, false, C.model);      /* data inside the zeros */
  cycle_extent(&b, 7 * MIB, MIB, PROTO_CODEC_ZSTD, false, C.model);              /* over the run's end */
  cycle_extent(&b, 7 * MIB + 512, 512, PROTO_CODEC_NONE, false, C.model);        /* one sector inside */
  cycle_extent(&b, 4 * MIB, 4096, PROTO_CODEC_ZERO, false, C.model);             /* back to the start */
  cycle_commit(&b);
  rpl_err e = apply_next(j);
  if (e)
    fail_msg("apply_next of cycle 4 (overlapping extents): %s", rpl_errname(e));
  const char *image_id = NULL;
  for (int i = 0; i < C.nev; i++)
    if (C.ev[i].what == 'p' && C.ev[i].cycle == 4)
      image_id = C.ev[i].image_id;
  if (!image_id || !image_id[0])
    fail_msg("point() was not told for recovery-point cycle 4");
  char id4[CATALOG_MAX_SNAPSHOT_ID + 1];
  snprintf(id4, sizeof id4, "%s", image_id);
  journal_close(j);
  expect_replica(C.model, "after cycle 4 (store.h: of overlapping extents of a cycle, the later one wins)");
  expect_point_image(id4, C.model, "point of cycle 4 (overlapping extents)");
  assert_int_equal(C.ops->delete_point(C.st, id4), RPL_OK);

  /* The same as a direct cycle 5 (a resync too big for the cache, written as it is received). */
  if (!C.ops->direct_begin(C.st, 5, PROTO_CYCLE_RESYNC, true))
    fail_msg("direct_begin(5, RESYNC) refused after cycle 4");
  static const struct direct_ext ext[] = {
    {0, MIB, false}, {MIB, MIB, false}, {2 * MIB, MIB, false}, {3 * MIB, MIB, false}, /* one 4 MiB run */
    {8192, 4096, false},                 /* inside the run */
    {MIB, 64 * 1024, true},              /* zeros inside it */
    {MIB + 4096, 4096, false},           /* data inside the zeros */
    {0, 512, false},                     /* back to the start */
  };
  uint8_t *raw = malloc(MIB);
  assert_non_null(raw);
  direct_extents(ext, sizeof ext / sizeof ext[0], raw);
  free(raw);
  if ((e = C.ops->direct_commit(C.st)))
    fail_msg("direct_commit of cycle 5: %s", rpl_errname(e));
  expect_replica(C.model, "after direct cycle 5 (store.h: of overlapping extents of a cycle, the later one wins)");
  C.done[10] = true;
}

/* Unprotect --delete-replica: delete_replica takes the replica and every point image of it; the
 * disk's store opened again is a new, empty one without points; deleting again is not an error. */
static void step11_delete_replica(void **state)
{
  (void)state;
  need(10);
  char id5[CATALOG_MAX_SNAPSHOT_ID + 1] = "";
  rpl_err e = C.ops->make_point(C.st, 5, id5, sizeof id5);
  if (e)
    fail_msg("make_point(5): %s", rpl_errname(e));
  assert_true(listed(id5, NULL));
  if ((e = C.ops->delete_replica(C.st)))
    fail_msg("delete_replica: %s", rpl_errname(e));
  C.ops->close(C.st);
  C.st = NULL;
  struct store_image *img = NULL;
  e = C.ops->image_open(&C.s, C.disk, id5, SIZE, &img);
  if (!e) {
    C.ops->image_close(img);
    fail_msg("the point image %s of the deleted replica still opens", id5);
  }
  if ((e = C.ops->open(&C.s, C.disk, SIZE, &C.st)))
    fail_msg("open after delete_replica: %s", rpl_errname(e));
  struct store_found_point *pts = NULL;
  size_t n = 0;
  if ((e = C.ops->list_points(C.st, &pts, &n)))
    fail_msg("list_points after delete_replica: %s", rpl_errname(e));
  free(pts);
  assert_int_equal(n, 0);
  memset(C.model, 0, SIZE);
  expect_replica(C.model, "opened again after delete_replica (a new, empty replica)");
  assert_int_equal(C.ops->delete_replica(C.st), RPL_OK);
  C.ops->close(C.st);
  C.st = NULL;
  C.done[11] = true;
}

static int setup(void **state)
{
  (void)state;
  rpl_err e = settings_load(state_dir, &C.s);
  if (e) {
    fprintf(stderr, "settings: %s\n", rpl_detail(e));
    return -1;
  }
  C.blob = !strcmp(expect_kind, "blob");
  uuid_generate(C.disk);
  C.model = calloc(1, SIZE);
  C.model2 = calloc(1, SIZE);
  C.model3 = calloc(1, SIZE);
  C.rng = 0x243f6a8885a308d3ull;
  return C.model && C.model2 && C.model3 ? 0 : -1;
}

static int teardown(void **state)
{
  (void)state;
  journal_close(C.j);
  if (C.st)
    C.ops->close(C.st);
  free(C.model);
  free(C.model2);
  free(C.model3);
  return 0;
}

int main(int argc, char **argv)
{
  if (argc != 4 || (strcmp(argv[3], "file") && strcmp(argv[3], "blob"))) {
    fprintf(stderr, "usage: store_backend STATE_DIR WORK_DIR file|blob\n");
    return 2;
  }
  state_dir = argv[1];
  work_dir = argv[2];
  expect_kind = argv[3];
  log_init("store_backend", LOG_LVL_NOTICE);
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(step1_open_resize),  cmocka_unit_test(step2_lease),
    cmocka_unit_test(step3_direct),       cmocka_unit_test(step4_journal_point),
    cmocka_unit_test(step5_corrupt),      cmocka_unit_test(step6_point_image),
    cmocka_unit_test(step7_make_delete),  cmocka_unit_test(step8_failure_stats),
    cmocka_unit_test(step9_reopen),       cmocka_unit_test(step10_overlapping_extents),
    cmocka_unit_test(step11_delete_replica),
  };
  return cmocka_run_group_tests_name(expect_kind, tests, setup, teardown);
}
