/* bench_journal.c - cache journal append+commit throughput (1 MiB extents, fsync per cycle) against
 * dd conv=fdatasync and a write+fdatasync loop with the same cycle boundaries, same run, same disk. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uuid/uuid.h>

#include "journal.h"
#include "rpl_log.h"

#define EXTENT (1u << 20)
#define ROUNDS 5

static double now(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return v[n / 2];
}

/* The peer the brief names: dd from /dev/zero with one fdatasync at the end. */
static double run_dd(const char *dir, unsigned total_mib)
{
  char of[600], count[32];
  snprintf(of, sizeof of, "of=%s/dd.out", dir);
  snprintf(count, sizeof count, "count=%u", total_mib);
  double t0 = now();
  pid_t pid = fork();
  if (pid == 0) {
    int devnull = open("/dev/null", O_WRONLY);
    dup2(devnull, STDERR_FILENO); /* dd's own statistics */
    execlp("dd", "dd", "if=/dev/zero", of, "bs=1M", count, "conv=fdatasync", (char *)NULL);
    _exit(127);
  }
  int status;
  if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status)) {
    fprintf(stderr, "bench_journal: dd failed\n");
    exit(1);
  }
  double t = now() - t0;
  snprintf(of, sizeof of, "%s/dd.out", dir);
  unlink(of);
  return t;
}

/* The raw cost of the same I/O pattern: 1 MiB writes, fdatasync at every cycle boundary. */
static double run_loop(const char *dir, unsigned cycles, unsigned cycle_mib, const uint8_t *buf)
{
  char path[600];
  snprintf(path, sizeof path, "%s/loop.out", dir);
  double t0 = now();
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0)
    exit(1);
  for (unsigned c = 0; c < cycles; c++) {
    for (unsigned i = 0; i < cycle_mib; i++)
      if (write(fd, buf, EXTENT) != EXTENT)
        exit(1);
    if (fdatasync(fd))
      exit(1);
  }
  close(fd);
  double t = now() - t0;
  unlink(path);
  return t;
}

static unsigned segment_mib; /* 0: the journal's default */

static double run_journal(const char *dir, unsigned cycles, unsigned cycle_mib, const uint8_t *buf,
                          const uint8_t hash[PROTO_HASH_SIZE])
{
  uint8_t disk[PROTO_ID_SIZE];
  uuid_generate(disk);
  uint64_t total = (uint64_t)cycles * cycle_mib * EXTENT;
  struct journal_options o = {.limit_bytes = 2 * total + (64u << 20), .segment_bytes = (uint64_t)segment_mib << 20};
  uint8_t *hashes = malloc((size_t)cycle_mib * PROTO_HASH_SIZE);
  for (unsigned i = 0; i < cycle_mib; i++)
    memcpy(hashes + i * PROTO_HASH_SIZE, hash, PROTO_HASH_SIZE);
  struct journal_cycle_totals t = {.extents = cycle_mib, .raw_bytes = (uint64_t)cycle_mib * EXTENT,
                                   .payload_bytes = (uint64_t)cycle_mib * EXTENT};
  proto_hash128(hashes, (size_t)cycle_mib * PROTO_HASH_SIZE, t.digest);
  free(hashes);
  double t0 = now();
  struct journal *j;
  rpl_err e = journal_open(dir, disk, &o, &j);
  for (unsigned c = 1; e == RPL_OK && c <= cycles; c++) {
    e = journal_begin_cycle(j, c, PROTO_CYCLE_PLAIN);
    for (unsigned i = 0; e == RPL_OK && i < cycle_mib; i++) {
      struct journal_extent x = {.offset = (uint64_t)i * EXTENT, .length = EXTENT, .codec = PROTO_CODEC_NONE,
                                 .payload = buf, .payload_len = EXTENT};
      memcpy(x.hash, hash, PROTO_HASH_SIZE);
      e = journal_append_extent(j, c, &x);
    }
    if (e == RPL_OK)
      e = journal_commit_cycle(j, c, &t);
  }
  double elapsed = now() - t0;
  if (e) {
    fprintf(stderr, "bench_journal: journal failed: %s\n", rpl_strerror(e));
    exit(1);
  }
  /* Clean up for the next round (not timed): applied, trimmed, directory removed. */
  if (journal_mark_applied(j, cycles) || journal_trim(j, cycles))
    exit(1);
  journal_close(j);
  char uuid[37], path[600];
  uuid_unparse_lower(disk, uuid);
  snprintf(path, sizeof path, "%s/journal/%s/applied", dir, uuid);
  unlink(path);
  snprintf(path, sizeof path, "%s/journal/%s", dir, uuid);
  rmdir(path);
  snprintf(path, sizeof path, "%s/journal", dir);
  rmdir(path);
  return elapsed;
}

int main(int argc, char **argv)
{
  log_init("bench_journal", LOG_LVL_WARN);
  if (argc > 1 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
    printf("usage: bench_journal [DIR [TOTAL_MIB [CYCLE_MIB [SEGMENT_MIB]]]]\n"
           "  DIR on the disk to measure (default $TMPDIR or /var/tmp); TOTAL_MIB default 1024;\n"
           "  CYCLE_MIB (fsync interval) default 64; SEGMENT_MIB default: the journal's (256)\n");
    return 0;
  }
  const char *base = argc > 1 ? argv[1] : getenv("TMPDIR") ? getenv("TMPDIR") : "/var/tmp";
  unsigned total_mib = argc > 2 ? (unsigned)atoi(argv[2]) : 1024, cycle_mib = argc > 3 ? (unsigned)atoi(argv[3]) : 64;
  if (!total_mib || !cycle_mib || total_mib % cycle_mib) {
    fprintf(stderr, "bench_journal: TOTAL_MIB must be a non-zero multiple of CYCLE_MIB\n");
    return 2;
  }
  segment_mib = argc > 4 ? (unsigned)atoi(argv[4]) : 0;
  unsigned cycles = total_mib / cycle_mib;
  char dir[400];
  if (strlen(base) > 300) {
    fprintf(stderr, "bench_journal: directory path too long\n");
    return 2;
  }
  snprintf(dir, sizeof dir, "%s/bench-journal-XXXXXX", base);
  if (!mkdtemp(dir)) {
    fprintf(stderr, "bench_journal: cannot create a directory in %s: %s\n", base, strerror(errno));
    return 1;
  }
  uint8_t *buf = malloc(EXTENT);
  for (size_t i = 0; i < EXTENT; i++)
    buf[i] = (uint8_t)(i * 2654435761u >> 13);
  uint8_t hash[PROTO_HASH_SIZE];
  proto_hash128(buf, EXTENT, hash);

  printf("bench_journal: %u MiB in %u cycles of %u x 1 MiB extents, fsync per cycle, in %s\n", total_mib, cycles,
         cycle_mib, dir);
  double t_dd[ROUNDS], t_loop[ROUNDS], t_journal[ROUNDS], r_dd[ROUNDS], r_loop[ROUNDS];
  for (int r = 0; r < ROUNDS; r++) {
    /* Interleaved, and the order rotates each round, so drift of this (virtual) disk hits all three
     * alike; the ratios are taken per round, between runs seconds apart. */
    for (int k = 0; k < 3; k++) {
      switch ((r + k) % 3) {
      case 0: t_dd[r] = run_dd(dir, total_mib); break;
      case 1: t_loop[r] = run_loop(dir, cycles, cycle_mib, buf); break;
      default: t_journal[r] = run_journal(dir, cycles, cycle_mib, buf, hash); break;
      }
    }
    r_dd[r] = t_dd[r] / t_journal[r];
    r_loop[r] = t_loop[r] / t_journal[r];
    printf("  round %d: dd %.0f MB/s, write+fdatasync loop %.0f MB/s, journal %.0f MB/s\n", r + 1,
           total_mib * 1.048576 / t_dd[r], total_mib * 1.048576 / t_loop[r], total_mib * 1.048576 / t_journal[r]);
  }
  double dd = median(t_dd, ROUNDS), loop = median(t_loop, ROUNDS), jr = median(t_journal, ROUNDS);
  printf("median: dd conv=fdatasync %.0f MB/s, write+fdatasync per cycle %.0f MB/s, journal %.0f MB/s\n",
         total_mib * 1.048576 / dd, total_mib * 1.048576 / loop, total_mib * 1.048576 / jr);
  printf("throughput ratio journal/dd: %.2f   journal/loop: %.2f   (median of per-round ratios; goal >= 0.90)\n",
         median(r_dd, ROUNDS), median(r_loop, ROUNDS));
  rmdir(dir);
  free(buf);
  return 0;
}
