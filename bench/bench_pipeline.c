/* bench_pipeline.c - the agent's read path (io_uring O_DIRECT + zstd workers) against
 * `dd iflag=direct | zstd -1 -T<workers>` over the same file, interleaved in one run; the same
 * read path with the 4 KiB unit hashes a delta cycle records (sent_hashes.h) against without them;
 * and incompressible data behind a slow link (sends paced at LINK_MBS), the adaptive level against
 * no compression at all: the CPU zstd spends for nothing. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "pipeline.h"

static double now(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double cpu_children(void)
{
  struct rusage ru;
  getrusage(RUSAGE_CHILDREN, &ru);
  return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static double cpu_self(void)
{
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* Text-like data: words drawn from a small vocabulary, as logs and databases compress. */
static void make_file(const char *path, size_t mib, unsigned zero_percent)
{
  static const char *words[] = {"replica ", "block ", "cycle ", "extent ", "azure ", "page ", "blob ",
                                "journal ", "the ", "of ", "server=", "id=", "2026-11-28T15:13:39Z ", "\n"};
  FILE *f = fopen(path, "wb");
  if (!f)
    exit(1);
  char *buf = malloc(1 << 20);
  uint32_t x = 1;
  for (size_t m = 0; m < mib; m++) {
    if ((m * 100) / mib < zero_percent) {
      memset(buf, 0, 1 << 20);
    } else {
      size_t o = 0;
      while (o < (1u << 20)) {
        x = x * 1103515245u + 12345u;
        const char *w = words[(x >> 16) % 14];
        size_t l = strlen(w);
        if (o + l > (1u << 20))
          l = (1u << 20) - o;
        memcpy(buf + o, w, l);
        o += l;
        if ((x & 0xff) == 7 && o + 4 < (1u << 20)) {
          snprintf(buf + o, 5, "%04u", (x >> 8) % 10000);
          o += 4;
        }
      }
    }
    if (fwrite(buf, 1, 1 << 20, f) != 1 << 20)
      exit(1);
  }
  free(buf);
  fclose(f);
}

static rpl_err sink(void *ctx, struct proto_extent *m)
{
  *(uint64_t *)ctx += m->payload.len;
  return RPL_OK;
}

/* A link of link_mbs MB/s: each send waits until the link would have carried the bytes so far. */
struct paced {
  double t0, link_mbs;
  uint64_t bytes;
};
static uint64_t paced_wait_ns; /* what the pipeline's link clock reads: time the sends waited */

static uint64_t paced_clock(void) { return paced_wait_ns; }

static rpl_err paced_sink(void *ctx, struct proto_extent *m)
{
  struct paced *l = ctx;
  l->bytes += m->payload.len;
  double wait = l->t0 + l->bytes / (l->link_mbs * 1e6) - now();
  if (wait > 0) {
    struct timespec ts = {(time_t)wait, (long)((wait - (time_t)wait) * 1e9)};
    nanosleep(&ts, NULL);
    paced_wait_ns += (uint64_t)(wait * 1e9);
  }
  return RPL_OK;
}

static void make_random_file(const char *path, size_t mib)
{
  FILE *f = fopen(path, "wb");
  uint64_t *buf = malloc(1 << 20), x = 0x9e3779b97f4a7c15ull;
  if (!f || !buf)
    exit(1);
  for (size_t m = 0; m < mib; m++) {
    for (size_t i = 0; i < (1u << 20) / 8; i++) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      buf[i] = x;
    }
    if (fwrite(buf, 1, 1 << 20, f) != 1 << 20)
      exit(1);
  }
  free(buf);
  fclose(f);
}

/* Incompressible data behind a link slower than zstd: the adaptive level (which goes up while the
 * link waits) against compression off, interleaved; CPU per GiB of each, their ratio. */
static int slow_link(size_t mib, double link_mbs)
{
  char path[] = "/var/tmp/bench_pipeline.XXXXXX";
  int tfd = mkstemp(path);
  if (tfd < 0)
    return 1;
  close(tfd);
  make_random_file(path, mib);
  int fd = open(path, O_RDONLY | O_DIRECT);
  struct pipeline_extent *x = calloc(mib, sizeof *x);
  if (fd < 0 || !x) {
    if (fd >= 0)
      close(fd);
    unlink(path);
    free(x);
    return 1;
  }
  pipeline_split_extents(0, (uint64_t)mib << 20, 1u << 20, x, mib);
  struct pipeline_config adaptive = {PIPELINE_CONFIG_DEFAULTS, .link_wait_ns = paced_clock};
  struct pipeline_config off = {.compress = 0, .raw_floor = 1, .link_wait_ns = paced_clock};
  double cpu[2] = {0, 0};
  struct pipeline_stats st = {0};
  const int rounds = 2;
  int rc = 0;
  for (int r = 0; r < 2 * rounds && !rc; r++) {
    int which = r % 2; /* 0: adaptive, 1: off; a fresh pipeline each run (the level starts at 1) */
    struct pipeline *p;
    if (pipeline_create(fd, which ? &off : &adaptive, &p)) {
      rc = 1;
      break;
    }
    struct paced l = {.t0 = now(), .link_mbs = link_mbs};
    double c0 = cpu_self();
    rc = pipeline_run(p, x, mib, paced_sink, &l, which ? NULL : &st) ? 1 : 0;
    cpu[which] += cpu_self() - c0;
    pipeline_destroy(p);
  }
  close(fd);
  unlink(path);
  free(x);
  if (rc) {
    fprintf(stderr, "bench_pipeline: the slow-link runs failed\n");
    return rc;
  }
  double gib = mib / 1024.0 * rounds;
  printf("  incompressible, link %.0f MB/s: adaptive zstd %.3f CPU-s/GiB (zstd ran on %llu of %zu extents, %llu futile "
         "windows), compression off %.3f CPU-s/GiB; adaptive/off %.2f\n", link_mbs, cpu[0] / gib,
         (unsigned long long)st.zstd_tried_extents, mib, (unsigned long long)st.futile_windows, cpu[1] / gib,
         cpu[0] / cpu[1]);
  return 0;
}

int main(int argc, char **argv)
{
  size_t mib = argc > 1 ? (size_t)atoi(argv[1]) : 1024;
  unsigned zero_percent = argc > 2 ? (unsigned)atoi(argv[2]) : 50;
  long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
  char path[] = "/var/tmp/bench_pipeline.XXXXXX";
  int tfd = mkstemp(path);
  if (tfd < 0)
    return 1;
  close(tfd);
  make_file(path, mib, zero_percent);
  int fd = open(path, O_RDONLY | O_DIRECT);
  struct pipeline *p;
  if (fd < 0 || pipeline_create(fd, NULL, &p)) {
    unlink(path);
    return 1;
  }
  size_t n = mib;
  struct pipeline_extent *x = calloc(n, sizeof *x);
  pipeline_split_extents(0, (uint64_t)mib << 20, 1u << 20, x, n);
  char cmd[512];
  snprintf(cmd, sizeof cmd, "dd if=%s iflag=direct bs=1M status=none | zstd -1 -T%ld -q -c > /dev/null", path, ncpu);

  const int rounds = 3;
  double t_ours = 1e9, t_peer = 1e9, cpu_ours = 0, cpu_peer = 0;
  uint64_t payload = 0;
  struct pipeline_stats st = {0};
  for (int r = 0; r < rounds; r++) {
    double c0 = cpu_self(), t0 = now();
    payload = 0;
    if (pipeline_run(p, x, n, sink, &payload, &st))
      return 1;
    double dt = now() - t0;
    cpu_ours += cpu_self() - c0;
    if (dt < t_ours)
      t_ours = dt;

    c0 = cpu_children();
    t0 = now();
    if (system(cmd) != 0)
      return 1;
    dt = now() - t0;
    cpu_peer += cpu_children() - c0;
    if (dt < t_peer)
      t_peer = dt;
  }
  printf("bench_pipeline: %zu MiB, %u%% zero, %ld CPUs, best of %d interleaved rounds\n", mib, zero_percent, ncpu, rounds);
  printf("  agent pipeline (io_uring O_DIRECT + adaptive zstd): %7.0f MB/s, %.2f CPU-s/GiB, payload %.1f%% of raw\n",
         mib * 1048576.0 / t_ours / 1e6, cpu_ours / rounds / (mib / 1024.0), 100.0 * payload / ((double)mib * 1048576));
  printf("  dd iflag=direct | zstd -1 -T%ld:                        %7.0f MB/s, %.2f CPU-s/GiB\n",
         ncpu, mib * 1048576.0 / t_peer / 1e6, cpu_peer / rounds / (mib / 1024.0));
  char level[16];
  printf("  throughput ratio ours/peer = %.2f; zero extents %llu, zstd %llu, raw %llu; final level %s\n",
         t_peer / t_ours, (unsigned long long)st.zero_extents, (unsigned long long)st.zstd_extents,
         (unsigned long long)st.raw_extents, pipeline_level_text(st.zstd_level, level));
  pipeline_destroy(p);

  /* What recording a delta cycle's units costs: the same reads and hashes without compression (whose
   * adaptive level would differ between runs), with and without the unit hashes, interleaved. */
  struct pipeline_config raw = {.compress = 0, .raw_floor = 1};
  double t_off = 1e9, t_on = 1e9, cpu_off = 0, cpu_on = 0;
  if (pipeline_create(fd, &raw, &p))
    return 1;
  for (int r = 0; r < 2 * rounds; r++) {
    bool on = r % 2;
    pipeline_set_unit_hashes(p, on);
    double c0 = cpu_self(), t0 = now();
    if (pipeline_run(p, x, n, sink, &payload, NULL))
      return 1;
    double dt = now() - t0, dc = cpu_self() - c0;
    *(on ? &cpu_on : &cpu_off) += dc;
    if (dt < (on ? t_on : t_off))
      *(on ? &t_on : &t_off) = dt;
  }
  printf("  read + hash, no zstd: %.0f MB/s, %.3f CPU-s/GiB; with the 4 KiB unit hashes of a delta cycle: %.0f MB/s, "
         "%.3f CPU-s/GiB (CPU with/without %.2f)\n", mib * 1048576.0 / t_off / 1e6, cpu_off / rounds / (mib / 1024.0),
         mib * 1048576.0 / t_on / 1e6, cpu_on / rounds / (mib / 1024.0), cpu_on / cpu_off);
  pipeline_destroy(p);
  close(fd);
  unlink(path);
  free(x);
  return slow_link(mib < 512 ? mib : 512, 400);
}
