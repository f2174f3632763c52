/* group_writer.c - the consistency-group tests' workload: appends sequence numbers to two files (on
 * two servers' filesystems), always to A first, then to B, so that at any instant A holds as many
 * records as B or one more; with a rate, it also rewrites a bulk file beside each at MB/s.
 *
 *   group_writer A B [--record BYTES] [--pause-us US] [--bulk-mbps N] [--bulk-mib M]
 *   group_writer --check A B     prints "A_LAST B_LAST"; exit 0 when 0 <= A_LAST - B_LAST <= 1
 *
 * A record is BYTES bytes: the sequence number in decimal, padded with spaces, ending in '\n'. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop;
static void on_term(int sig) { (void)sig; stop = 1; }

static uint64_t now_us(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

struct bulk {
  char path[4096];
  unsigned mbps;
  uint64_t size;
};

/* Rewrites the bulk file in 64 KiB writes at mbps MB/s, round and round. */
static void *bulk_main(void *arg)
{
  struct bulk *b = arg;
  int fd = open(b->path, O_WRONLY | O_CREAT, 0644);
  if (fd < 0) {
    fprintf(stderr, "group_writer: %s: %s\n", b->path, strerror(errno));
    exit(1);
  }
  static __thread char buf[65536];
  uint64_t start = now_us(), written = 0, off = 0;
  while (!stop) {
    for (size_t i = 0; i < sizeof buf; i += 8)
      memcpy(buf + i, &written, 8);
    if (pwrite(fd, buf, sizeof buf, (off_t)off) != (ssize_t)sizeof buf && errno != EINTR) {
      fprintf(stderr, "group_writer: %s: %s\n", b->path, strerror(errno));
      exit(1);
    }
    written += sizeof buf;
    off = (off + sizeof buf) % b->size;
    uint64_t due = start + written * 1000000u / ((uint64_t)b->mbps * 1000000u);
    uint64_t t = now_us();
    if (due > t)
      usleep((useconds_t)(due - t));
  }
  close(fd);
  return NULL;
}

static long last_record(const char *path)
{
  FILE *f = fopen(path, "r");
  if (!f)
    return -1;
  char line[4096];
  long last = 0, expect = 1;
  while (fgets(line, sizeof line, f)) {
    long v = strtol(line, NULL, 10);
    if (v != expect) { /* a torn or missing record: the file is not a prefix of the sequence */
      fclose(f);
      return -2;
    }
    last = v;
    expect++;
  }
  fclose(f);
  return last;
}

int main(int argc, char **argv)
{
  if (argc == 4 && !strcmp(argv[1], "--check")) {
    long a = last_record(argv[2]), b = last_record(argv[3]);
    printf("%ld %ld\n", a, b);
    return a >= 0 && b >= 0 && a - b >= 0 && a - b <= 1 ? 0 : 1;
  }
  if (argc < 3) {
    fprintf(stderr, "usage: group_writer A B [--record BYTES] [--pause-us US] [--bulk-mbps N] [--bulk-mib M]\n"
                    "       group_writer --check A B\n");
    return 2;
  }
  size_t record = 512;
  unsigned pause_us = 1000, mbps = 0, mib = 64;
  for (int i = 3; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--record"))
      record = strtoul(argv[i + 1], NULL, 10);
    else if (!strcmp(argv[i], "--pause-us"))
      pause_us = (unsigned)strtoul(argv[i + 1], NULL, 10);
    else if (!strcmp(argv[i], "--bulk-mbps"))
      mbps = (unsigned)strtoul(argv[i + 1], NULL, 10);
    else if (!strcmp(argv[i], "--bulk-mib"))
      mib = (unsigned)strtoul(argv[i + 1], NULL, 10);
  }
  if (record < 24 || record > 4096)
    record = 512;
  signal(SIGTERM, on_term);
  signal(SIGINT, on_term);
  pthread_t t[2];
  struct bulk bulks[2];
  for (int k = 0; k < 2 && mbps; k++) {
    snprintf(bulks[k].path, sizeof bulks[k].path, "%s.bulk", argv[1 + k]);
    bulks[k].mbps = mbps;
    bulks[k].size = (uint64_t)mib << 20;
    pthread_create(&t[k], NULL, bulk_main, &bulks[k]);
  }
  int fd[2];
  for (int k = 0; k < 2; k++)
    if ((fd[k] = open(argv[1 + k], O_WRONLY | O_CREAT | O_APPEND | O_TRUNC, 0644)) < 0) {
      fprintf(stderr, "group_writer: %s: %s\n", argv[1 + k], strerror(errno));
      return 1;
    }
  char rec[4096];
  for (long seq = 1; !stop; seq++) {
    memset(rec, ' ', record);
    int n = snprintf(rec, record, "%ld", seq);
    rec[n] = ' ';
    rec[record - 1] = '\n';
    for (int k = 0; k < 2; k++) /* A, then B: never B before A */
      if (write(fd[k], rec, record) != (ssize_t)record) {
        fprintf(stderr, "group_writer: %s: %s\n", argv[1 + k], strerror(errno));
        return 1;
      }
    if (pause_us)
      usleep(pause_us);
  }
  for (int k = 0; k < 2 && mbps; k++)
    pthread_join(t[k], NULL);
  return 0;
}
