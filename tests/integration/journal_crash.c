/* journal_crash.c - Description: crash test of the cache journal and file replica: a child process
 * journals, commits, applies and trims cycles (with restarts and abandons) and is SIGKILLed at
 * random moments, 25 times; after each kill the journal is reopened and checked: every cycle whose
 * commit returned (the ACK) is there intact, nothing uncommitted is visible, and after applying what
 * is pending the replica image is byte-identical to a model of all committed cycles. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#include "journal.h"
#include "replica.h"
#include "rpl_log.h"
#include "tmpdir.h"

#define DISK_SIZE   (8u << 20)
#define BLOCK       4096u
#define MAX_BLOCKS  16u      /* an extent is 1..16 blocks */
#define MAX_EXTENTS 8
#define ROUNDS      25

static uint8_t disk_id[PROTO_ID_SIZE] = {0xc0, 0xff, 0xee, 0x01, 0x02, 0x03, 0x04, 0x05,
                                         0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d};

static uint64_t mix(uint64_t x)
{
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  return x ^ (x >> 33);
}

static int fail(const char *what, rpl_err e)
{
  fprintf(stderr, "journal_crash: FAIL: %s: %s (%s)\n", what, rpl_errname(e), rpl_strerror(e));
  return 1;
}

/* ---- the workload: cycle n's extents are a pure function of n, known to parent and child ---- */

static int extents_in(uint64_t n) { return 1 + (int)(mix(n) % MAX_EXTENTS); }

/* Raw content of extent i of cycle n into raw; returns its offset, length and codec. */
static void extent_of(uint64_t n, int i, uint8_t *raw, uint64_t *offset, uint32_t *length, uint8_t *codec)
{
  uint64_t h = mix(n * 1000003u + (uint64_t)i);
  *length = BLOCK * (uint32_t)(1 + h % MAX_BLOCKS);
  *offset = BLOCK * ((h >> 8) % (DISK_SIZE / BLOCK - MAX_BLOCKS));
  *codec = (uint8_t)((h >> 40) % 3);
  if (*codec == PROTO_CODEC_ZERO) {
    memset(raw, 0, *length);
  } else if (*codec == PROTO_CODEC_ZSTD) {
    for (uint32_t k = 0; k < *length; k++) /* compressible */
      raw[k] = (uint8_t)("cycle-journal-"[(k + n) % 14] + (k / 512 + i) % 3);
  } else {
    uint64_t x = h | 1;
    for (uint32_t k = 0; k < *length; k++) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      raw[k] = (uint8_t)x;
    }
  }
}

static void model_apply(uint8_t *model, uint64_t n)
{
  static uint8_t raw[MAX_BLOCKS * BLOCK];
  for (int i = 0; i < extents_in(n); i++) {
    uint64_t off;
    uint32_t len;
    uint8_t codec;
    extent_of(n, i, raw, &off, &len, &codec);
    memcpy(model + off, raw, len);
  }
}

/* Appends the first `count` extents of cycle n; fills totals when count is the whole cycle. */
static rpl_err append_cycle(struct journal *j, uint64_t n, int count, struct journal_cycle_totals *t)
{
  static uint8_t raw[MAX_BLOCKS * BLOCK], payload[ZSTD_COMPRESSBOUND(MAX_BLOCKS * BLOCK)];
  uint8_t hashes[MAX_EXTENTS * PROTO_HASH_SIZE];
  memset(t, 0, sizeof *t);
  for (int i = 0; i < count; i++) {
    struct journal_extent x = {0};
    extent_of(n, i, raw, &x.offset, &x.length, &x.codec);
    proto_hash128(raw, x.length, x.hash);
    if (x.codec == PROTO_CODEC_NONE) {
      x.payload = raw;
      x.payload_len = x.length;
    } else if (x.codec == PROTO_CODEC_ZSTD) {
      size_t z = ZSTD_compress(payload, sizeof payload, raw, x.length, 1);
      if (ZSTD_isError(z))
        return RPL_E_INTERNAL;
      x.payload = payload;
      x.payload_len = (uint32_t)z;
    }
    rpl_err e = journal_append_extent(j, n, &x);
    if (e)
      return e;
    memcpy(hashes + i * PROTO_HASH_SIZE, x.hash, PROTO_HASH_SIZE);
    t->extents++;
    t->raw_bytes += x.length;
    t->payload_bytes += x.payload_len;
  }
  proto_hash128(hashes, (size_t)count * PROTO_HASH_SIZE, t->digest);
  return RPL_OK;
}

/* ---- the child: a session and an applier, forever, until killed ---------------------------- */

static int child(const char *state, const char *images, int ack_fd, uint64_t seed)
{
  struct journal_options o = {.segment_bytes = 192 << 10}; /* small: rolls and trims happen often */
  struct journal *j;
  struct replica *r;
  rpl_err e;
  if ((e = journal_open(state, disk_id, &o, &j)))
    return fail("child: open journal", e);
  if ((e = replica_open(images, disk_id, DISK_SIZE, &r)))
    return fail("child: open replica", e);
  uint64_t rnd = seed | 1;
  for (;;) {
    rnd = mix(rnd);
    struct journal_usage u;
    journal_get_usage(j, &u);
    uint64_t n = u.last_committed + 1;
    struct journal_cycle_totals t;
    int count = extents_in(n);
    if ((e = journal_begin_cycle(j, n, PROTO_CYCLE_PLAIN)))
      return fail("child: begin", e);
    if (rnd % 5 == 0) { /* the connection drops mid-cycle: abandon, then the cycle again */
      if ((e = append_cycle(j, n, (int)((rnd >> 8) % (uint64_t)count), &t)) || (e = journal_abandon_cycle(j, n)) ||
          (e = journal_begin_cycle(j, n, PROTO_CYCLE_PLAIN)))
        return fail("child: abandon", e);
    } else if (rnd % 5 == 1) { /* a NACK: the same cycle restarted */
      if ((e = append_cycle(j, n, 1 + (int)((rnd >> 8) % (uint64_t)count), &t)) ||
          (e = journal_begin_cycle(j, n, PROTO_CYCLE_PLAIN)))
        return fail("child: restart", e);
    }
    if ((e = append_cycle(j, n, count, &t)) || (e = journal_commit_cycle(j, n, &t)))
      return fail("child: append and commit", e);
    char ack[32];
    int len = snprintf(ack, sizeof ack, "%" PRIu64 "\n", n);
    if (write(ack_fd, ack, (size_t)len) != len)
      return 1;
    /* The applier lags behind by a cycle or two, then trims. */
    if (rnd % 3 == 0) {
      if ((e = replica_apply_pending(r, j, NULL)))
        return fail("child: apply", e);
      journal_get_usage(j, &u);
      if ((e = journal_trim(j, u.last_applied)))
        return fail("child: trim", e);
    }
  }
}

/* ---- the parent: kill, reopen, check --------------------------------------------------------- */

static int check(const char *state, const char *images, uint64_t acked, uint8_t *model, uint64_t *modeled,
                 uint8_t *image)
{
  struct journal_options o = {.segment_bytes = 192 << 10};
  struct journal *j;
  rpl_err e = journal_open(state, disk_id, &o, &j);
  if (e)
    return fail("reopen journal", e);
  struct journal_usage u;
  journal_get_usage(j, &u);
  int rc = 0;
  if (u.last_committed < acked) {
    fprintf(stderr, "journal_crash: FAIL: cycle %" PRIu64 " was acknowledged, journal has up to %" PRIu64 "\n",
            acked, u.last_committed);
    rc = 1;
  }
  if (u.open_cycle) {
    fprintf(stderr, "journal_crash: FAIL: cycle %" PRIu64 " open after reopen\n", u.open_cycle);
    rc = 1;
  }
  struct journal_cycle_info info;
  if (journal_cycle_info(j, u.last_committed + 1, &info) != RPL_E_JOURNAL_NOT_COMMITTED) {
    fprintf(stderr, "journal_crash: FAIL: an uncommitted cycle is visible\n");
    rc = 1;
  }
  /* Every pending cycle reads back exactly as the workload produced it. */
  static uint8_t raw[MAX_BLOCKS * BLOCK];
  for (uint64_t n = u.last_applied + 1; n <= u.last_committed && !rc; n++) {
    struct journal_reader *rd;
    if ((e = journal_reader_open(j, n, &rd)))
      return fail("open reader", e);
    for (int i = 0; i <= extents_in(n) && !rc; i++) {
      struct journal_extent x;
      bool end;
      if ((e = journal_reader_next(rd, &x, &end))) {
        rc = fail("read cycle", e);
        break;
      }
      if (i == extents_in(n)) {
        rc = !end;
        break;
      }
      uint64_t off;
      uint32_t len;
      uint8_t codec, h[PROTO_HASH_SIZE];
      extent_of(n, i, raw, &off, &len, &codec);
      proto_hash128(raw, len, h);
      if (end || x.offset != off || x.length != len || x.codec != codec || memcmp(x.hash, h, sizeof h) ||
          (codec == PROTO_CODEC_NONE && memcmp(x.payload, raw, len)))
        rc = 1;
    }
    journal_reader_close(rd);
    if (rc)
      fprintf(stderr, "journal_crash: FAIL: cycle %" PRIu64 " does not read back as written\n", n);
  }
  /* Apply what is pending and compare the image with the model of cycles 1..last committed. */
  struct replica *r = NULL;
  if (!rc && ((e = replica_open(images, disk_id, DISK_SIZE, &r)) || (e = replica_apply_pending(r, j, NULL))))
    rc = fail("apply after reopen", e);
  while (!rc && *modeled < u.last_committed)
    model_apply(model, ++*modeled);
  if (!rc && ((e = replica_read(r, 0, image, DISK_SIZE)) || memcmp(image, model, DISK_SIZE))) {
    fprintf(stderr, "journal_crash: FAIL: replica differs from the model after cycle %" PRIu64 "\n", u.last_committed);
    rc = 1;
  }
  printf("journal_crash: killed after ack %" PRIu64 ": committed %" PRIu64 ", applied %" PRIu64
         ", %" PRIu64 " segment(s), %" PRIu64 " bytes: ok\n", acked, u.last_committed, u.last_applied, u.segments,
         u.bytes);
  fflush(stdout);
  replica_close(r);
  journal_close(j);
  return rc;
}

/* Runs the rounds in dir; returns 0 when every check passed. */
static int run_rounds(const char *dir, uint64_t seed)
{
  char state[PATH_MAX], images[PATH_MAX];
  snprintf(state, sizeof state, "%s/state", dir);
  snprintf(images, sizeof images, "%s/images", dir);
  if (mkdir(state, 0700))
    return 1;
  static uint8_t model[DISK_SIZE], image[DISK_SIZE];
  uint64_t modeled = 0, acked = 0, rnd = seed;
  int rc = 0;
  for (int round = 0; round < ROUNDS && !rc; round++) {
    int p[2];
    if (pipe(p))
      return 1;
    rnd = mix(rnd + (uint64_t)round);
    pid_t pid = fork();
    if (pid < 0)
      return 1;
    if (pid == 0) {
      close(p[0]);
      _exit(child(state, images, p[1], rnd));
    }
    close(p[1]);
    /* Let it commit 1..4 cycles, then kill it somewhere in the middle of its work. */
    int want = 1 + (int)(rnd % 4), got = 0;
    FILE *acks = fdopen(p[0], "r");
    char line[32];
    while (got < want && fgets(line, sizeof line, acks)) {
      acked = strtoull(line, NULL, 10);
      got++;
    }
    if (got < want) {
      fprintf(stderr, "journal_crash: FAIL: the child stopped by itself after %d ack(s)\n", got);
      rc = 1;
    }
    struct timespec ts = {0, (long)((rnd >> 16) % 4000) * 1000}; /* 0..4 ms: where the kill lands */
    nanosleep(&ts, NULL);
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    /* Acks written before the kill that we did not read yet are acks too. */
    while (fgets(line, sizeof line, acks))
      acked = strtoull(line, NULL, 10);
    fclose(acks);
    if (!(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)) {
      fprintf(stderr, "journal_crash: FAIL: the child exited with status %d before the kill\n", status);
      rc = 1;
    }
    if (!rc)
      rc = check(state, images, acked, model, &modeled, image);
  }
  return rc;
}

int main(int argc, char **argv)
{
  log_init("journal_crash", LOG_LVL_ERR);
  uint64_t seed = argc > 1 ? strtoull(argv[1], NULL, 0) : (uint64_t)time(NULL);
  printf("journal_crash: seed %" PRIu64 " (pass it as the argument to replay the same choices)\n", seed);
  fflush(stdout); /* the children must not inherit buffered output */
  char dir[256];
  if (tmpdir_create(dir, sizeof dir, "journal-crash"))
    return 1;
  int rc = run_rounds(dir, seed);
  tmpdir_remove(dir);
  printf("journal_crash: %s\n", rc ? "FAILED" : "ok");
  return rc;
}
