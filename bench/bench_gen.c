/* bench_gen.c - reproducible data for the benchmarks (bench/bench_*.sh), from a seed:
 *
 *   bench_gen text FILE SIZE [SEED] [ZERO_PERCENT]
 *       FILE of SIZE bytes (K/M/G suffixes): text-like data (words of a small vocabulary, numbers,
 *       punctuation, lines) in 1 MiB blocks; ZERO_PERCENT of the blocks (default 0), spread evenly
 *       over the file, are left as holes (all zeros).
 *   bench_gen scatter DEVICE PERCENT [SEED] [EXTENTS]
 *       random writes of 4 KiB..64 KiB (4 KiB aligned, O_DIRECT) of fresh text at random offsets
 *       until PERCENT of the device is written, then fsync; prints "writes N bytes B"; with
 *       EXTENTS, each write's "OFFSET LENGTH" goes to that file too.
 *   bench_gen extents FILE
 *       the data ranges of FILE (its holes skipped), "OFFSET LENGTH" per line.
 *   bench_gen limit delta|sync SRC DST EXTENTS [KEEP]
 *       the machine's own limit for what a benchmark times, on the extents listed (merged, in
 *       offset order): delta reads them from SRC (O_DIRECT, 32 reads in flight, as the agent's
 *       io_uring queue keeps them) into memory, then writes them into DST
 *       at the same offsets (buffered) with one fdatasync; sync writes text of their size into DST
 *       O_DIRECT (SRC unused), then fdatasync. With KEEP (delta), the blocks DST held there are
 *       kept first, as a recovery point without reflinks must: read from DST (O_DIRECT, 32 in
 *       flight), appended to the new file KEEP (O_DIRECT) and fdatasynced, before DST is written.
 *       Prints "bytes B read_s R write_s W total_s T keep_s K" (K: 0 without KEEP).
 *
 * The same arguments give the same bytes on every machine (xorshift64*, no libc rand). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
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
  FILE *ext = argc > 5 ? fopen(argv[5], "w") : NULL;
  if (argc > 5 && !ext) {
    fprintf(stderr, "bench_gen: %s: %s\n", argv[5], strerror(errno));
    return 1;
  }
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
    if (ext)
      fprintf(ext, "%" PRIu64 " %" PRIu32 "\n", off, len);
  }
  if (fsync(fd) != 0 || (ext && fclose(ext) != 0))
    return 1;
  close(fd);
  printf("writes %" PRIu64 " bytes %" PRIu64 "\n", n, done);
  return 0;
}

static int cmd_extents(int argc, char **argv)
{
  if (argc < 3)
    return 2;
  int fd = open(argv[2], O_RDONLY | O_CLOEXEC);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) {
    fprintf(stderr, "bench_gen: %s: %s\n", argv[2], strerror(errno));
    return 1;
  }
  for (off_t pos = 0; pos < st.st_size;) {
    off_t data = lseek(fd, pos, SEEK_DATA);
    if (data < 0)
      break; /* ENXIO: no data after pos */
    off_t hole = lseek(fd, data, SEEK_HOLE);
    if (hole < 0)
      return 1;
    printf("%lld %lld\n", (long long)data, (long long)(hole - data));
    pos = hole;
  }
  close(fd);
  return 0;
}

struct ext {
  uint64_t off, len;
};

static int cmp_ext(const void *a, const void *b)
{
  uint64_t x = ((const struct ext *)a)->off, y = ((const struct ext *)b)->off;
  return x < y ? -1 : x > y;
}

static double seconds(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The extents of file path, merged where they overlap or touch, in offset order. */
static struct ext *read_extents(const char *path, size_t *n)
{
  FILE *f = fopen(path, "r");
  if (!f)
    return NULL;
  size_t cap = 1024;
  struct ext *x = malloc(cap * sizeof *x);
  unsigned long long off, len;
  *n = 0;
  while (x && fscanf(f, "%llu %llu", &off, &len) == 2) {
    if (*n == cap) {
      struct ext *p = realloc(x, (cap *= 2) * sizeof *x);
      if (!p) {
        free(x);
        x = NULL;
        break;
      }
      x = p;
    }
    x[(*n)++] = (struct ext){off, len};
  }
  fclose(f);
  if (!x)
    return NULL;
  qsort(x, *n, sizeof *x, cmp_ext);
  size_t m = 0;
  for (size_t i = 0; i < *n; i++) {
    if (m && x[i].off <= x[m - 1].off + x[m - 1].len) {
      uint64_t end = x[i].off + x[i].len;
      if (end > x[m - 1].off + x[m - 1].len)
        x[m - 1].len = end - x[m - 1].off;
    } else {
      x[m++] = x[i];
    }
  }
  *n = m;
  return x;
}

#define LIMIT_READERS 32

struct limit_reads {
  int fd;
  const struct ext *x;
  size_t n;
  char *buf;
  const size_t *at;  /* where each extent goes in buf */
  size_t next;       /* the next extent to read */
  pthread_mutex_t lock;
  bool failed;
};

static void *limit_reader(void *arg)
{
  struct limit_reads *r = arg;
  for (;;) {
    pthread_mutex_lock(&r->lock);
    size_t i = r->next++;
    pthread_mutex_unlock(&r->lock);
    if (i >= r->n)
      return NULL;
    if (pread(r->fd, r->buf + r->at[i], r->x[i].len, (off_t)r->x[i].off) != (ssize_t)r->x[i].len)
      r->failed = true;
  }
}

/* Reads the n extents from fd into buf (extent i at at[i]), LIMIT_READERS at once; false: a read failed. */
static bool read_all(int fd, const struct ext *x, size_t n, char *buf, const size_t *at)
{
  struct limit_reads r = {.fd = fd, .x = x, .n = n, .buf = buf, .at = at};
  pthread_mutex_init(&r.lock, NULL);
  pthread_t t[LIMIT_READERS];
  int started = 0;
  while (started < LIMIT_READERS && pthread_create(&t[started], NULL, limit_reader, &r) == 0)
    started++;
  if (started == 0)
    limit_reader(&r);
  for (int i = 0; i < started; i++)
    pthread_join(t[i], NULL);
  pthread_mutex_destroy(&r.lock);
  return !r.failed;
}

/* What a point without reflinks costs before the writes: the blocks the extents overwrite, read from
 * the image and appended to a file of their own, durable. */
static bool keep_old(const char *image, const char *keep, const struct ext *x, size_t n, uint64_t total,
                     const size_t *at)
{
  int img = open(image, O_RDONLY | O_DIRECT | O_CLOEXEC);
  int out = open(keep, O_WRONLY | O_CREAT | O_TRUNC | O_DIRECT | O_CLOEXEC, 0600);
  char *old = NULL;
  const char *failed = img < 0 ? "open the image" : out < 0 ? "create the file" : NULL;
  if (!failed && posix_memalign((void **)&old, 4096, total ? total : 4096) != 0) {
    old = NULL;
    failed = "allocate";
  }
  if (!failed && !read_all(img, x, n, old, at))
    failed = "read the image";
  for (uint64_t done = 0; !failed && done < total; done += BLOCK) {
    size_t len = total - done < BLOCK ? total - done : BLOCK;
    ssize_t w = pwrite(out, old + done, len, (off_t)done);
    if (w != (ssize_t)len) {
      errno = w < 0 ? errno : EIO; /* a short write sets no errno */
      failed = "write the file";
    }
  }
  if (!failed && fdatasync(out) != 0)
    failed = "fdatasync the file";
  if (failed)
    fprintf(stderr, "bench_gen: keeping the old blocks of %s in %s: cannot %s (%s)\n", image, keep, failed,
            strerror(errno));
  free(old);
  if (img >= 0)
    close(img);
  if (out >= 0)
    close(out);
  return !failed;
}

static int cmd_limit(int argc, char **argv)
{
  if (argc < 6 || (strcmp(argv[2], "delta") && strcmp(argv[2], "sync")))
    return 2;
  bool delta = !strcmp(argv[2], "delta"), keep = delta && argc > 6;
  size_t n;
  struct ext *x = read_extents(argv[5], &n);
  if (!x) {
    fprintf(stderr, "bench_gen: cannot read the extents in %s\n", argv[5]);
    return 1;
  }
  uint64_t total = 0;
  for (size_t i = 0; i < n; i++)
    total += x[i].len;
  int src = delta ? open(argv[3], O_RDONLY | O_DIRECT | O_CLOEXEC) : -1;
  int dst = open(argv[4], O_WRONLY | (delta ? 0 : O_DIRECT) | O_CLOEXEC);
  if ((delta && src < 0) || dst < 0) {
    fprintf(stderr, "bench_gen: %s: %s\n", delta && src < 0 ? argv[3] : argv[4], strerror(errno));
    return 1;
  }
  /* delta: every extent in memory at once (a delta is small); sync: one 1 MiB block of text reused. */
  size_t bufsz = delta ? (size_t)total : BLOCK;
  char *buf;
  if (posix_memalign((void **)&buf, 4096, bufsz ? bufsz : 4096))
    return 1;
  if (!delta) {
    make_vocabulary();
    fill_text(buf, BLOCK);
  }
  double t0 = seconds(), t1 = t0;
  if (delta) {
    size_t *at = malloc((n ? n : 1) * sizeof *at), pos = 0;
    if (!at)
      return 1;
    for (size_t i = 0; i < n; i++) {
      at[i] = pos;
      pos += x[i].len;
    }
    if (!read_all(src, x, n, buf, at)) {
      fprintf(stderr, "bench_gen: read %s failed\n", argv[3]);
      free(at);
      return 1;
    }
    t1 = seconds();
    if (keep && !keep_old(argv[4], argv[6], x, n, total, at)) {
      free(at);
      return 1;
    }
    free(at);
  }
  double tk = seconds();
  size_t at = 0;
  for (size_t i = 0; i < n; i++) {
    for (uint64_t done = 0; done < x[i].len;) {
      size_t len = delta ? x[i].len : (x[i].len - done < BLOCK ? x[i].len - done : BLOCK);
      const char *from = delta ? buf + at : buf;
      if (pwrite(dst, from, len, (off_t)(x[i].off + done)) != (ssize_t)len) {
        fprintf(stderr, "bench_gen: write %s: %s\n", argv[4], strerror(errno));
        return 1;
      }
      done += len;
    }
    at += delta ? x[i].len : 0;
  }
  if (fdatasync(dst) != 0)
    return 1;
  double t2 = seconds();
  printf("bytes %" PRIu64 " read_s %.3f write_s %.3f total_s %.3f keep_s %.3f\n", total, t1 - t0, t2 - tk, t2 - t0,
         tk - t1);
  free(buf);
  free(x);
  close(dst);
  if (src >= 0)
    close(src);
  return 0;
}

int main(int argc, char **argv)
{
  int rc = 2;
  if (argc > 1 && !strcmp(argv[1], "text"))
    rc = cmd_text(argc, argv);
  else if (argc > 1 && !strcmp(argv[1], "scatter"))
    rc = cmd_scatter(argc, argv);
  else if (argc > 1 && !strcmp(argv[1], "extents"))
    rc = cmd_extents(argc, argv);
  else if (argc > 1 && !strcmp(argv[1], "limit"))
    rc = cmd_limit(argc, argv);
  if (rc == 2)
    fprintf(stderr, "usage: bench_gen text FILE SIZE [SEED] [ZERO_PERCENT]\n"
                    "       bench_gen scatter DEVICE PERCENT [SEED] [EXTENTS]\n"
                    "       bench_gen extents FILE\n"
                    "       bench_gen limit delta|sync SRC DST EXTENTS [KEEP]\n");
  return rc;
}
