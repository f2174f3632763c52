/* bench_cbt_drain.c - times a full tracker cycle (flip + drain + commit, through the cbt.h API) on a
 * large tracked device: with nothing dirty, and after N scattered 4 KiB O_DIRECT writes.
 * Usage: bench_cbt_drain DEVICE STATE_DIR [SCATTERED_BLOCKS] [ROUNDS]  (tracks DEVICE while it runs) */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "cbt.h"

static uint64_t now_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static int compare_u64(const void *a, const void *b)
{
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* One cycle; returns its duration in ns and the extents drained in *extents. */
static uint64_t cycle(struct cbt *t, const char *device, struct cbt_extents *set, size_t *extents)
{
  uint64_t generation, start = now_ns();
  rpl_err err = cbt_flip(t, device, &generation);
  *extents = 0;
  while (!err || err == RPL_E_AGAIN) {
    err = cbt_drain(t, device, set);
    *extents += set->count;
    cbt_extents_clear(set);
    if (err == RPL_OK)
      break;
  }
  if (!err)
    err = cbt_commit(t, device, generation);
  uint64_t elapsed = now_ns() - start;
  if (err) {
    fprintf(stderr, "bench_cbt_drain: %s (%s)\n", rpl_detail(err), rpl_strerror(err));
    exit(1);
  }
  return elapsed;
}

static void report(const char *what, uint64_t *ns, int n)
{
  qsort(ns, (size_t)n, sizeof ns[0], compare_u64);
  printf("%-34s median %8.3f ms   p99 %8.3f ms   max %8.3f ms   (%d cycles)\n", what, ns[n / 2] / 1e6,
         ns[(n * 99) / 100] / 1e6, ns[n - 1] / 1e6, n);
}

int main(int argc, char **argv)
{
  if (argc < 3) {
    fprintf(stderr, "usage: bench_cbt_drain DEVICE STATE_DIR [SCATTERED_BLOCKS] [ROUNDS]\n");
    return 2;
  }
  const char *device = argv[1];
  int scattered = argc > 3 ? atoi(argv[3]) : 10000;
  int rounds = argc > 4 ? atoi(argv[4]) : 10;
  struct cbt_options options = {.state_dir = argv[2]};
  struct cbt *t;
  if (cbt_open(&t, &options))
    return 1;
  rpl_err err = cbt_start(t, device);
  if (err) {
    fprintf(stderr, "bench_cbt_drain: start: %s (%s)\n", rpl_detail(err), rpl_strerror(err));
    return 1;
  }
  int fd = open(device, O_WRONLY | O_DIRECT);
  uint64_t size = 0;
  void *buf;
  if (fd < 0 || ioctl(fd, BLKGETSIZE64, &size) != 0 || posix_memalign(&buf, 4096, 4096))
    return 1;
  memset(buf, 0xab, 4096);
  struct cbt_extents set;
  cbt_extents_init(&set, 1 << 16, 0);
  size_t extents;

  cycle(t, device, &set, &extents); /* first touch of the mapping */
  enum { EMPTY = 1000 };
  static uint64_t empty[EMPTY];
  for (int i = 0; i < EMPTY; i++)
    empty[i] = cycle(t, device, &set, &extents);
  char what[64];
  snprintf(what, sizeof what, "cycle, nothing dirty (%" PRIu64 " GiB)", size >> 30);
  report(what, empty, EMPTY);

  uint64_t *dirty = calloc((size_t)rounds, sizeof *dirty);
  srandom(42);
  for (int r = 0; r < rounds; r++) {
    for (int i = 0; i < scattered; i++) {
      uint64_t block = (((uint64_t)random() << 31) ^ (uint64_t)random()) % (size / 4096);
      if (pwrite(fd, buf, 4096, (off_t)(block * 4096)) != 4096) {
        fprintf(stderr, "bench_cbt_drain: write: %s\n", strerror(errno));
        return 1;
      }
    }
    dirty[r] = cycle(t, device, &set, &extents);
    if (extents + 10 < (size_t)scattered || extents > (size_t)scattered) {
      fprintf(stderr, "bench_cbt_drain: drained %zu extents after %d scattered writes\n", extents, scattered);
      return 1;
    }
  }
  snprintf(what, sizeof what, "cycle, %d scattered 4 KiB blocks", scattered);
  report(what, dirty, rounds);

  struct cbt_status st;
  if (!cbt_status_get(t, device, &st))
    printf("granularity %" PRIu64 " bytes, resync %s\n", st.granularity, st.resync_required ? "REQUIRED" : "not required");
  err = cbt_stop(t, device);
  cbt_extents_free(&set);
  free(dirty);
  free(buf);
  close(fd);
  cbt_close(t);
  return err ? 1 : 0;
}
