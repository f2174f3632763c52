/* bench_gen.c - reproducible data for the benchmarks (bench/bench_*.sh), from a seed:
 *
 *   bench_gen text FILE SIZE [SEED] [ZERO_PERCENT]
 *       FILE of SIZE bytes (K/M/G suffixes): text-like data (words of a small vocabulary, numbers,
 *       punctuation, lines) in 1 MiB blocks; ZERO_PERCENT of the blocks (default 0), spread evenly
 *       over the file, are left as holes (all zeros).
 *   bench_gen scatter DEVICE PERCENT [SEED]
 *       random writes of 4 KiB..64 KiB (4 KiB aligned, O_DIRECT) of fresh text at random offsets
 *       until PERCENT of the device is written, then fsync; prints "writes N bytes B".
 *
 * The same arguments give the same bytes on every machine (xorshift64*, no libc rand). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#define BLOCK (1u << 20)
#define NWORDS 2048

static uint64_t rng_state;

static uint64_t rnd(void)
{
  uint64_t x = rng_state;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  rng_state = x;
  return x * 0x2545F4914F6CDD1DULL;
}

static char words[NWORDS][12];
static uint8_t word_len[NWORDS];

static void make_vocabulary(void)
{
  static const char letters[] = "etaoinshrdlucmfwypvbgkqjxz";
  for (int i = 0; i < NWORDS; i++) {
    int len = 2 + (int)(rnd() % 9);
    for (int k = 0; k < len; k++) {
      /* skewed towards frequent letters, like text */
      uint64_t r = rnd() % 100;
      int idx = r < 60 ? (int)(rnd() % 9) : (int)(rnd() % 26);
      words[i][k] = letters[idx];
    }
    word_len[i] = (uint8_t)len;
  }
}

/* Fills buf with text: words (Zipf-like choice), numbers now and then, punctuation, newlines. */
static void fill_text(char *buf, size_t len)
{
  size_t i = 0, col = 0;
  while (i < len) {
    char tmp[32];
    size_t n;
    uint64_t r = rnd();
    if ((r & 15) == 0) {
      n = (size_t)snprintf(tmp, sizeof tmp, "%" PRIu64, (r >> 8) % 100000);
    } else {
      /* squaring a uniform number favours small indexes: a few words are very frequent */
      uint64_t u = (r >> 16) % NWORDS;
      uint64_t w = (u * u) / NWORDS;
      n = word_len[w];
      memcpy(tmp, words[w], n);
    }
    uint64_t p = (r >> 40) % 20;
    tmp[n++] = p == 0 ? '.' : p == 1 ? ',' : ' ';
    col += n;
    if (col > 72) {
      tmp[n - 1] = '\n';
      col = 0;
    }
    if (i + n > len)
      n = len - i;
    memcpy(buf + i, tmp, n);
    i += n;
  }
}

static uint64_t parse_size(const char *s)
{
  char *end;
  uint64_t v = strtoull(s, &end, 10);
  switch (*end) {
  case 'G': case 'g': v <<= 30; break;
  case 'M': case 'm': v <<= 20; break;
  case 'K': case 'k': v <<= 10; break;
  default: break;
  }
  return v;
}

static int cmd_text(int argc, char **argv)
{
  if (argc < 4)
    return 2;
  uint64_t size = parse_size(argv[3]);
  rng_state = argc > 4 ? strtoull(argv[4], NULL, 10) * 2654435761u + 1 : 1;
  unsigned zero_pct = argc > 5 ? (unsigned)atoi(argv[5]) : 0;
  make_vocabulary();
  int fd = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0 || ftruncate(fd, (off_t)size) != 0) {
    fprintf(stderr, "bench_gen: %s: %s\n", argv[2], strerror(errno));
    return 1;
  }
  char *buf = malloc(BLOCK);
  uint64_t nblocks = (size + BLOCK - 1) / BLOCK, acc = 0;
  for (uint64_t b = 0; b < nblocks; b++) {
    /* Bresenham: exactly zero_pct of the blocks, evenly spread, stay holes. */
    acc += zero_pct;
    if (acc >= 100) {
      acc -= 100;
      continue;
    }
    size_t len = b == nblocks - 1 && size % BLOCK ? size % BLOCK : BLOCK;
    fill_text(buf, len);
    if (pwrite(fd, buf, len, (off_t)(b * BLOCK)) != (ssize_t)len) {
      fprintf(stderr, "bench_gen: write to %s: %s\n", argv[2], strerror(errno));
      return 1;
    }
  }
  free(buf);
  if (fsync(fd) != 0 || close(fd) != 0)
    return 1;
  return 0;
}

static int cmd_scatter(int argc, char **argv)
{
  if (argc < 4)
    return 2;
  double pct = atof(argv[3]);
  rng_state = argc > 4 ? strtoull(argv[4], NULL, 10) * 2654435761u + 7 : 7;
  make_vocabulary();
  int fd = open(argv[2], O_WRONLY | O_DIRECT | O_CLOEXEC);
  uint64_t size = 0;
  if (fd < 0 || ioctl(fd, BLKGETSIZE64, &size) != 0) {
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
      fprintf(stderr, "bench_gen: %s: %s\n", argv[2], strerror(errno));
      return 1;
    }
    size = (uint64_t)st.st_size;
  }
  uint64_t target = (uint64_t)(pct / 100.0 * (double)size), done = 0, n = 0;
  char *buf;
  if (posix_memalign((void **)&buf, 4096, 65536))
    return 1;
  while (done < target) {
    uint32_t len = 4096u * (uint32_t)(1 + rnd() % 16);
    uint64_t off = (rnd() % ((size - len) / 4096)) * 4096;
    fill_text(buf, len);
    if (pwrite(fd, buf, len, (off_t)off) != (ssize_t)len) {
      fprintf(stderr, "bench_gen: write to %s: %s\n", argv[2], strerror(errno));
      return 1;
    }
    done += len;
    n++;
  }
  if (fsync(fd) != 0)
    return 1;
  close(fd);
  printf("writes %" PRIu64 " bytes %" PRIu64 "\n", n, done);
  return 0;
}

int main(int argc, char **argv)
{
  int rc = 2;
  if (argc > 1 && !strcmp(argv[1], "text"))
    rc = cmd_text(argc, argv);
  else if (argc > 1 && !strcmp(argv[1], "scatter"))
    rc = cmd_scatter(argc, argv);
  if (rc == 2)
    fprintf(stderr, "usage: bench_gen text FILE SIZE [SEED] [ZERO_PERCENT]\n"
                    "       bench_gen scatter DEVICE PERCENT [SEED]\n");
  return rc;
}
