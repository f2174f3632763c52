/* cbt_testtool.c - helper of the tracker's integration tests: compares drained extents with the
 * writes a test made, and makes logged random O_DIRECT writes (used by cbt_*.sh). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void usage(void)
{
  fprintf(stderr,
          "usage: cbt_testtool compare|covered WRITES DRAINED SIZE GRANULARITY\n"
          "         compare: the drained blocks are exactly the written blocks (granularity-rounded)\n"
          "         covered: every written block is drained (more is allowed)\n"
          "       cbt_testtool write-random DEVICE SIZE SECONDS SEED LOG\n"
          "         random 4 KiB-aligned O_DIRECT writes of 4-64 KiB; each is logged as \"OFFSET LENGTH\"\n"
          "         after it completed\n");
  exit(2);
}

/* Marks in blocks[] every block touched by the "OFFSET LENGTH" lines of path. */
static int load_blocks(const char *path, unsigned char *blocks, uint64_t size, uint64_t granularity, int drained)
{
  FILE *f = fopen(path, "r");
  if (!f) {
    fprintf(stderr, "cbt_testtool: %s: %s\n", path, strerror(errno));
    return -1;
  }
  uint64_t offset, length;
  int line = 0, rc = 0;
  while (fscanf(f, "%" SCNu64 " %" SCNu64, &offset, &length) == 2) {
    line++;
    if (length == 0 || offset + length > size) {
      fprintf(stderr, "cbt_testtool: %s:%d: extent %" PRIu64 "+%" PRIu64 " outside the %" PRIu64 "-byte device\n",
              path, line, offset, length, size);
      rc = -1;
      continue;
    }
    if (drained && (offset % granularity || ((offset + length) % granularity && offset + length != size))) {
      fprintf(stderr, "cbt_testtool: %s:%d: drained extent %" PRIu64 "+%" PRIu64 " not aligned to %" PRIu64 "\n",
              path, line, offset, length, granularity);
      rc = -1;
    }
    for (uint64_t b = offset / granularity; b <= (offset + length - 1) / granularity; b++)
      blocks[b] = 1;
  }
  if (!feof(f)) {
    fprintf(stderr, "cbt_testtool: %s: malformed line after line %d\n", path, line);
    rc = -1;
  }
  fclose(f);
  return rc;
}

static int check(int exact, const char *writes, const char *drained, uint64_t size, uint64_t granularity)
{
  uint64_t nblocks = (size + granularity - 1) / granularity;
  unsigned char *w = calloc(nblocks, 1), *d = calloc(nblocks, 1);
  if (!w || !d)
    return 1;
  int rc = 0;
  if (load_blocks(writes, w, size, granularity, 0) || load_blocks(drained, d, size, granularity, 1))
    rc = 1;
  uint64_t missing = 0, extra = 0, written = 0;
  for (uint64_t b = 0; b < nblocks; b++) {
    written += w[b];
    if (w[b] && !d[b] && missing++ < 10)
      fprintf(stderr, "cbt_testtool: written block %" PRIu64 " (byte %" PRIu64 ") was not drained\n", b, b * granularity);
    if (exact && d[b] && !w[b] && extra++ < 10)
      fprintf(stderr, "cbt_testtool: drained block %" PRIu64 " (byte %" PRIu64 ") was never written\n", b, b * granularity);
  }
  if (missing || extra) {
    fprintf(stderr, "cbt_testtool: %" PRIu64 " written blocks missing, %" PRIu64 " extra (of %" PRIu64 " written)\n",
            missing, extra, written);
    rc = 1;
  }
  free(w);
  free(d);
  return rc;
}

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
  (void)sig;
  stop_requested = 1;
}

static int write_random(const char *device, uint64_t size, int seconds, unsigned seed, const char *log_path)
{
  int fd = open(device, O_WRONLY | O_DIRECT);
  FILE *log = fopen(log_path, "a");
  if (fd < 0 || !log) {
    fprintf(stderr, "cbt_testtool: %s / %s: %s\n", device, log_path, strerror(errno));
    return 1;
  }
  signal(SIGTERM, on_signal);
  signal(SIGINT, on_signal);
  void *buf;
  if (posix_memalign(&buf, 4096, 65536))
    return 1;
  srandom(seed);
  time_t end = time(NULL) + seconds;
  uint64_t blocks = size / 4096, count = 0;
  while (!stop_requested && time(NULL) < end) {
    uint64_t len = 4096 * (1 + (uint64_t)random() % 16);
    uint64_t off = 4096 * ((uint64_t)random() % blocks);
    if (off + len > size)
      len = size - off;
    memset(buf, (int)(count & 0xff), len);
    memcpy(buf, &count, sizeof count);
    ssize_t n = pwrite(fd, buf, len, (off_t)off);
    if (n != (ssize_t)len) {
      fprintf(stderr, "cbt_testtool: write at %" PRIu64 ": %s\n", off, n < 0 ? strerror(errno) : "short write");
      return 1;
    }
    fprintf(log, "%" PRIu64 " %" PRIu64 "\n", off, len);
    fflush(log); /* logged only once completed: the log never claims a write that did not happen */
    count++;
  }
  fclose(log);
  close(fd);
  free(buf);
  printf("%" PRIu64 "\n", count);
  return 0;
}

int main(int argc, char **argv)
{
  if (argc == 6 && (!strcmp(argv[1], "compare") || !strcmp(argv[1], "covered")))
    return check(!strcmp(argv[1], "compare"), argv[2], argv[3], strtoull(argv[4], NULL, 10), strtoull(argv[5], NULL, 10));
  if (argc == 7 && !strcmp(argv[1], "write-random"))
    return write_random(argv[2], strtoull(argv[3], NULL, 10), atoi(argv[4]), (unsigned)atoi(argv[5]), argv[6]);
  usage();
  return 2;
}
