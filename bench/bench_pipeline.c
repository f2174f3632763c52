/* bench_pipeline.c - the agent's read path (io_uring O_DIRECT + zstd workers) against
 * `dd iflag=direct | zstd -1 -T<workers>` over the same file, interleaved in one run; and the same
 * read path with the 4 KiB unit hashes a delta cycle records (sent_hashes.h) against without them. */
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
  return 0;
}
