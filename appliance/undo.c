/* undo.c - recovery points of a file replica as undo files (undo.h): the writer that captures blocks
 * before they are overwritten, the merge that retention does, and the readers of a point's image. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <liburing.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "file_io.h"
#include "proto.h"
#include "rpl_log.h"
#include "undo.h"

#define FILE_MAGIC "RPLUNDO1"
/* Version 2 appends 4 KiB-aligned groups written O_DIRECT; version 1 files (records after a 64-byte
 * header, appended through the page cache) are still read, and appended to in their own format. */
#define FILE_VERSION 2u
#define REC_MAGIC 0x43455255u        /* "UREC" (version 1) */
#define GROUP_MAGIC 0x50524755u      /* "UGRP" (version 2) */
#define GROUP_ENTRIES 168u           /* runs per group: what fits in its 4 KiB header block */
#define GROUP_BLOCKS UNDO_MAX_RUN    /* data blocks per group (1 MiB): one longest run fits */
#define GROUP_BYTES (UNDO_BLOCK + GROUP_BLOCKS * UNDO_BLOCK)
/* Groups being filled, waiting for their old blocks, or written: one fills while full ones are on
 * their way to the disk (a full group's last reads and the next group's first ones overlap). */
#define GROUP_BUFFERS 4u
#define LEAF_BLOCKS (1u << 15)       /* blocks per bitmap leaf: 4 KiB of bitmap covers 128 MiB of disk */
#define MAX_LEAVES (1u << 24)        /* 2 PiB of disk: far above any disk a replica takes */
#define MAX_RECORDS (1u << 24)       /* indexed records per file (16 Mi: 64 GiB of single blocks) */
#define RUN_BYTES (UNDO_MAX_RUN * UNDO_BLOCK)
#define MAX_FILES 65536u             /* undo files one view reads: far above what retention keeps */
/* Appended bytes after which their writeback is started: the disk writes them while the cycle's
 * next extents arrive, and the sync before those extents are written waits for less. */
#define WRITEBACK_KICK (4ull << 20)

struct file_header {
  char magic[8];
  uint32_t version, block;
  uint64_t cycle;
  int64_t created;
  uint64_t disk_size;
  uint8_t reserved[16];
  uint64_t hash; /* xxh3-64 of the bytes before it */
};
_Static_assert(sizeof(struct file_header) == 64, "undo file header is 64 bytes");

struct rec_header {
  uint32_t magic, nblocks;
  uint64_t offset;    /* bytes, a multiple of UNDO_BLOCK */
  uint64_t data_hash; /* xxh3-64 of the nblocks blocks that follow */
  uint64_t hash;      /* xxh3-64 of the bytes before it */
};
_Static_assert(sizeof(struct rec_header) == 32, "undo record header is 32 bytes");

/* Version 2: the file header fills the first block; then groups, each a header block listing its
 * runs and then their blocks in that order. A group is valid only whole (every run's data hash). */
struct group_entry {
  uint64_t offset;    /* bytes, a multiple of UNDO_BLOCK */
  uint32_t nblocks, reserved;
  uint64_t data_hash; /* xxh3-64 of the run's blocks */
};
struct group_header {
  uint32_t magic, count;
  uint64_t reserved;
  struct group_entry e[GROUP_ENTRIES];
  uint64_t hash;      /* xxh3-64 of the bytes before it */
  uint8_t pad[UNDO_BLOCK - 16 - GROUP_ENTRIES * sizeof(struct group_entry) - 8];
};
_Static_assert(sizeof(struct group_header) == UNDO_BLOCK, "an undo group's header is one block");

/* A test stops the process dead at a named step ($RPL_TEST_UNDO_KILL): a kill -9 there, not by luck. */
static bool kill_armed(const char *step)
{
  const char *at = getenv("RPL_TEST_UNDO_KILL");
  return at && strcmp(at, step) == 0;
}

static void kill_point(const char *step)
{
  if (kill_armed(step))
    raise(SIGKILL);
}

static rpl_err sys_fail(const char *what, const char *path)
{
  return rpl_fail(RPL_E_IO, "%s %s: %s", what, path, strerror(errno));
}

/* ---- a set of block numbers: a bitmap whose leaves exist where blocks are ------------------- */

struct blockset {
  uint64_t **leaf;
  size_t nleaf;
};

static bool bs_has(const struct blockset *s, uint64_t b)
{
  uint64_t l = b / LEAF_BLOCKS, i = b % LEAF_BLOCKS;
  return l < s->nleaf && s->leaf[l] && (s->leaf[l][i / 64] >> (i % 64) & 1);
}

static rpl_err bs_add(struct blockset *s, uint64_t b)
{
  uint64_t l = b / LEAF_BLOCKS, i = b % LEAF_BLOCKS;
  if (l >= MAX_LEAVES)
    return RPL_E_LIMIT;
  if (l >= s->nleaf) {
    size_t n = s->nleaf ? s->nleaf : 8;
    while (n <= l)
      n *= 2;
    uint64_t **p = realloc(s->leaf, n * sizeof *p);
    if (!p)
      return RPL_E_NOMEM;
    memset(p + s->nleaf, 0, (n - s->nleaf) * sizeof *p);
    s->leaf = p;
    s->nleaf = n;
  }
  if (!s->leaf[l] && !(s->leaf[l] = calloc(LEAF_BLOCKS / 64, sizeof(uint64_t))))
    return RPL_E_NOMEM;
  s->leaf[l][i / 64] |= 1ull << (i % 64);
  return RPL_OK;
}

static void bs_free(struct blockset *s)
{
  for (size_t i = 0; i < s->nleaf; i++)
    free(s->leaf[i]);
  free(s->leaf);
  memset(s, 0, sizeof *s);
}

/* ---- names ------------------------------------------------------------------------------------ */

bool undo_parse_path(const char *path, char *image, size_t imagesz, uint64_t *cycle)
{
  const char *at = NULL;
  for (const char *p = strstr(path, UNDO_SUFFIX); p; p = strstr(p + 1, UNDO_SUFFIX))
    at = p;
  if (!at)
    return false;
  const char *num = at + strlen(UNDO_SUFFIX);
  char *end;
  errno = 0;
  unsigned long long c = strtoull(num, &end, 10);
  if (*num < '0' || *num > '9' || *end || errno || c == 0 || (size_t)(at - path) >= imagesz)
    return false;
  memcpy(image, path, (size_t)(at - path));
  image[at - path] = '\0';
  *cycle = c;
  return true;
}

/* The folder and the file name of image. */
static void split_image(const char *image, char *dir, size_t dirsz, const char **base)
{
  const char *slash = strrchr(image, '/');
  snprintf(dir, dirsz, "%.*s", slash ? (int)(slash - image) : 1, slash ? (slash == image ? "/" : image) : ".");
  *base = slash ? slash + 1 : image;
}

/* The cycle of an undo file of base named name; 0 for any other name. tmp: "….tmp" names instead. */
static uint64_t name_cycle(const char *name, const char *base, bool tmp)
{
  size_t blen = strlen(base), slen = strlen(UNDO_SUFFIX);
  if (strncmp(name, base, blen) || strncmp(name + blen, UNDO_SUFFIX, slen))
    return 0;
  const char *num = name + blen + slen;
  char *end;
  errno = 0;
  unsigned long long c = strtoull(num, &end, 10);
  if (*num < '0' || *num > '9' || errno)
    return 0;
  return (tmp ? strcmp(end, ".tmp") == 0 : *end == '\0') ? c : 0;
}

static bool header_valid(const struct file_header *h)
{
  return memcmp(h->magic, FILE_MAGIC, 8) == 0 && (h->version == 1 || h->version == FILE_VERSION) && h->block == UNDO_BLOCK &&
         proto_hash64(h, offsetof(struct file_header, hash)) == h->hash;
}

static int cmp_cycle(const void *a, const void *b)
{
  uint64_t x = ((const struct undo_file *)a)->cycle, y = ((const struct undo_file *)b)->cycle;
  return x < y ? -1 : x > y;
}

/* The undo files (or, tmp, the temp files) beside image, oldest first. */
static rpl_err list_files(const char *image, bool tmp, struct undo_file **out, size_t *count)
{
  *out = NULL;
  *count = 0;
  char dir[4096];
  const char *base;
  split_image(image, dir, sizeof dir, &base);
  DIR *dp = opendir(dir);
  if (!dp)
    return sys_fail("cannot list", dir);
  size_t cap = 0;
  rpl_err e = RPL_OK;
  for (struct dirent *de; !e && (de = readdir(dp));) {
    uint64_t c = name_cycle(de->d_name, base, tmp);
    if (!c)
      continue;
    if (*count == cap) {
      size_t ncap = cap ? cap * 2 : 16;
      struct undo_file *p = ncap <= MAX_FILES ? realloc(*out, ncap * sizeof *p) : NULL;
      if (!p) {
        e = ncap <= MAX_FILES ? RPL_E_NOMEM : rpl_fail(RPL_E_LIMIT, "more than %u undo files beside %s", MAX_FILES, image);
        break;
      }
      *out = p;
      cap = ncap;
    }
    struct undo_file *f = &(*out)[*count];
    int n = snprintf(f->path, sizeof f->path, "%s/%s", dir, de->d_name);
    if (n < 0 || (size_t)n >= sizeof f->path)
      continue;
    f->cycle = c;
    f->created = 0;
    (*count)++;
  }
  closedir(dp);
  if (e) {
    free(*out);
    *out = NULL;
    *count = 0;
    return e;
  }
  if (*count)
    qsort(*out, *count, sizeof **out, cmp_cycle);
  return RPL_OK;
}

/* The version of the undo file open as fd, from its header; 0 when the header is not valid or is
 * not the point's (cycle; 0: any). */
static uint32_t file_version(int fd, uint64_t cycle, int64_t *created)
{
  struct file_header h;
  size_t got = 0;
  if (file_pread_full(fd, &h, sizeof h, 0, &got) || got != sizeof h || !header_valid(&h) || (cycle && h.cycle != cycle))
    return 0;
  if (created)
    *created = h.created;
  return h.version;
}

rpl_err undo_list(const char *image, struct undo_file **out, size_t *count)
{
  rpl_err e = list_files(image, false, out, count);
  for (size_t i = 0; !e && i < *count; i++) {
    struct undo_file *f = &(*out)[i];
    int fd = open(f->path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      (void)file_version(fd, 0, &f->created); /* a damaged header leaves it 0 */
      close(fd);
    }
  }
  return e;
}

/* ---- reading records ---------------------------------------------------------------------------- */

/* Where a file of that version has its first record (1) or group (2). */
static uint64_t first_span(uint32_t version)
{
  return version == 1 ? sizeof(struct file_header) : UNDO_BLOCK;
}

/* What one record (version 1) or group (version 2) holds: its runs, where their data is. */
struct span {
  uint64_t data; /* where its blocks start in the file: run r's are in the reader's buffer at run[r].pos - data */
  uint64_t next; /* where the next record or group starts */
  uint32_t n;
  struct span_run { uint64_t offset, pos; uint32_t nblocks; } run[GROUP_ENTRIES];
};

/* The record or group at pos of fd (a file of that version, size bytes long), its blocks read into
 * buf (RUN_BYTES: one record's, or one group's, at most) and every run's verified: false when there
 * is none whole and valid there (the end, or a torn append). */
static bool read_span(int fd, uint32_t version, uint64_t pos, uint64_t size, struct span *sp, uint8_t *buf)
{
  size_t got;
  uint64_t hash[GROUP_ENTRIES], blocks = 0;
  if (version == 1) {
    struct rec_header h;
    if (size < pos || size - pos < sizeof h || file_pread_full(fd, &h, sizeof h, pos, &got) || got != sizeof h)
      return false;
    if (h.magic != REC_MAGIC || h.nblocks == 0 || h.nblocks > UNDO_MAX_RUN || h.offset % UNDO_BLOCK ||
        proto_hash64(&h, offsetof(struct rec_header, hash)) != h.hash)
      return false;
    sp->n = 1;
    sp->data = pos + sizeof h;
    sp->run[0] = (struct span_run){h.offset, sp->data, h.nblocks};
    hash[0] = h.data_hash;
    blocks = h.nblocks;
  } else {
    struct group_header g;
    if (size < pos || size - pos < sizeof g || file_pread_full(fd, &g, sizeof g, pos, &got) || got != sizeof g)
      return false;
    if (g.magic != GROUP_MAGIC || g.count == 0 || g.count > GROUP_ENTRIES ||
        proto_hash64(&g, offsetof(struct group_header, hash)) != g.hash)
      return false;
    sp->n = g.count;
    sp->data = pos + UNDO_BLOCK;
    for (uint32_t i = 0; i < g.count; i++) {
      const struct group_entry *x = &g.e[i];
      if (x->nblocks == 0 || x->nblocks > UNDO_MAX_RUN || x->offset % UNDO_BLOCK)
        return false;
      sp->run[i] = (struct span_run){x->offset, sp->data + blocks * UNDO_BLOCK, x->nblocks};
      hash[i] = x->data_hash;
      if ((blocks += x->nblocks) > GROUP_BLOCKS)
        return false;
    }
  }
  size_t len = (size_t)blocks * UNDO_BLOCK;
  if (size - sp->data < len || file_pread_full(fd, buf, len, sp->data, &got) || got != len)
    return false;
  for (uint32_t i = 0; i < sp->n; i++)
    if (proto_hash64(buf + (sp->run[i].pos - sp->data), (size_t)sp->run[i].nblocks * UNDO_BLOCK) != hash[i])
      return false;
  sp->next = sp->data + len;
  return true;
}

/* ---- the writer ----------------------------------------------------------------------------------- */

struct undo_log {
  char *path;
  int fd;
  uint32_t version;    /* of the file: 2 unless it was made by an older appliance */
  uint64_t cycle;
  uint64_t end;        /* where the next record or group goes: after the last valid one */
  uint64_t kicked;     /* version 1: writeback started (or synced) up to here */
  bool dirty;          /* appended since the last sync */
  struct blockset held; /* blocks captured: durable, on their way, or in the group being filled */
  uint8_t *buf;        /* version 1: a record being built (header and at most UNDO_MAX_RUN blocks) */
  /* Version 2: groups are written O_DIRECT (dfd; through fd where the filesystem refuses it), so a
   * cycle's old blocks neither take page-cache pages nor are copied into them, and through an
   * io_uring (when the kernel has one) while the next group fills. The old blocks are read through
   * it too, many at a time: an appliance's page cache does not hold its fleet's replicas, and one
   * read at a time from the disk was most of a delta's time. */
  int dfd;
  uint8_t *groups;     /* GROUP_BUFFERS x GROUP_BYTES, page-aligned; NULL until the first run */
  unsigned cur;        /* the group being filled */
  uint32_t cur_blocks; /* its data blocks */
  /* closed: full, its write waits for its reads; busy: its write is in flight. A buffer neither
   * closed nor busy and with no read in flight is free. */
  struct pending { uint64_t pos; uint32_t len; bool closed, busy; } out[GROUP_BUFFERS];
  struct group_reads { /* the old blocks of a group's runs, read into it */
    uint32_t in_flight;
    rpl_err err;
    struct run_read { uint64_t at; uint32_t len; uint32_t data; } r[GROUP_ENTRIES]; /* data: offset in the group */
  } reads[GROUP_BUFFERS];
  unsigned reads_in_flight;
  int image_fd;        /* what reads in flight read (the image, as undo_log_note was given it) */
  int image_dfd;       /* image_fd opened again O_DIRECT: the old blocks go straight into the group */
  int image_dfd_of;    /* the image_fd it was opened from (-1: none yet) */
  bool image_dio_off;  /* O_DIRECT reads refused: through image_fd from now on */
  struct io_uring ring;
  bool ring_ready;     /* initialized: io_uring_queue_exit at close */
  bool ring_tried, ring_broken; /* broken: nothing more is submitted (what is in flight still comes back) */
};

const char *undo_log_path(const struct undo_log *u) { return u->path; }
uint64_t undo_log_cycle(const struct undo_log *u) { return u->cycle; }

static struct group_header *group_at(const struct undo_log *u, unsigned i)
{
  return (struct group_header *)(u->groups + (size_t)i * GROUP_BYTES);
}

static rpl_err groups_wait(struct undo_log *u);

void undo_log_close(struct undo_log *u)
{
  if (!u)
    return;
  if (u->groups) {
    (void)groups_wait(u); /* not synced: whatever reached the file is cut off or kept at the next open */
    munmap(u->groups, (size_t)GROUP_BUFFERS * GROUP_BYTES);
  }
  if (u->ring_ready)
    io_uring_queue_exit(&u->ring);
  if (u->dfd >= 0)
    close(u->dfd);
  if (u->image_dfd >= 0)
    close(u->image_dfd);
  if (u->fd >= 0)
    close(u->fd);
  bs_free(&u->held);
  free(u->buf);
  free(u->path);
  free(u);
}

/* Reads the file's records or groups back (their blocks into held) and cuts off a torn tail after
 * them; nothing of u's may be in flight. */
static rpl_err log_load(struct undo_log *u)
{
  struct stat sb;
  if (fstat(u->fd, &sb) != 0)
    return sys_fail("cannot stat", u->path);
  struct span *sp = malloc(sizeof *sp);
  uint8_t *scratch = malloc(RUN_BYTES);
  rpl_err e = sp && scratch ? RPL_OK : RPL_E_NOMEM;
  bs_free(&u->held);
  uint64_t pos = first_span(u->version), size = (uint64_t)sb.st_size;
  while (!e && read_span(u->fd, u->version, pos, size, sp, scratch)) {
    for (uint32_t r = 0; r < sp->n; r++)
      for (uint32_t i = 0; i < sp->run[r].nblocks && !e; i++)
        e = bs_add(&u->held, sp->run[r].offset / UNDO_BLOCK + i);
    pos = sp->next;
  }
  free(scratch);
  free(sp);
  if (!e && pos < size) {
    log_warn("undo file %s: %" PRIu64 " byte(s) of an interrupted append cut off", u->path, size - pos);
    if (ftruncate(u->fd, (off_t)pos) != 0 || fdatasync(u->fd) != 0)
      e = sys_fail("cannot cut the torn end of", u->path);
  }
  u->end = u->kicked = pos;
  u->dirty = false;
  u->cur_blocks = 0;
  for (unsigned i = 0; u->groups && i < GROUP_BUFFERS; i++)
    group_at(u, i)->count = 0;
  return e;
}

/* Opens an undo file to append to it: its records are read back (their blocks into held) and a
 * torn tail after them is cut off. */
static rpl_err log_open_path(const char *path, uint64_t cycle, struct undo_log **out)
{
  *out = NULL;
  struct undo_log *u = calloc(1, sizeof *u);
  if (!u)
    return RPL_E_NOMEM;
  u->fd = u->dfd = u->image_dfd = u->image_dfd_of = -1;
  u->cycle = cycle;
  rpl_err e = RPL_OK;
  if (!(u->path = strdup(path)))
    e = RPL_E_NOMEM;
  else if ((u->fd = open(path, O_RDWR | O_CLOEXEC)) < 0)
    e = sys_fail("cannot open", path);
  if (!e && !(u->version = file_version(u->fd, cycle, NULL)))
    e = rpl_fail(RPL_E_UNDO_CORRUPT, "%s: %s", path, rpl_strerror(RPL_E_UNDO_CORRUPT));
  if (!e && u->version == 1 && !(u->buf = malloc(sizeof(struct rec_header) + RUN_BYTES)))
    e = RPL_E_NOMEM;
  if (!e)
    e = log_load(u);
  if (e) {
    undo_log_close(u);
    return e;
  }
  *out = u;
  return RPL_OK;
}

static void remove_temps(const char *image)
{
  struct undo_file *t;
  size_t n;
  if (list_files(image, true, &t, &n))
    return;
  for (size_t i = 0; i < n; i++)
    (void)unlink(t[i].path);
  free(t);
}

rpl_err undo_log_open(const char *image, struct undo_log **out)
{
  *out = NULL;
  remove_temps(image);
  struct undo_file *f;
  size_t n;
  rpl_err e = list_files(image, false, &f, &n);
  if (!e && n)
    e = log_open_path(f[n - 1].path, f[n - 1].cycle, out);
  free(f);
  return e;
}

rpl_err undo_log_start(const char *image, uint64_t cycle, uint64_t disk_size, struct undo_log **log)
{
  if (*log && (*log)->cycle == cycle)
    return RPL_OK; /* made already: the point's image is being made again after a failure */
  char path[4200], tmp[4210];
  int n = snprintf(path, sizeof path, "%s" UNDO_SUFFIX "%" PRIu64, image, cycle);
  if (n < 0 || (size_t)n >= sizeof path)
    return RPL_E_LIMIT;
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  struct undo_log *u = NULL;
  rpl_err e;
  if (access(path, F_OK) == 0) {
    e = log_open_path(path, cycle, &u); /* made before a crash: what it captured since is right */
  } else {
    struct file_header h = {.version = FILE_VERSION, .block = UNDO_BLOCK, .cycle = cycle, .created = time(NULL),
                            .disk_size = disk_size};
    memcpy(h.magic, FILE_MAGIC, 8);
    h.hash = proto_hash64(&h, offsetof(struct file_header, hash));
    uint8_t block[UNDO_BLOCK] = {0}; /* the header fills the first block: groups start aligned */
    memcpy(block, &h, sizeof h);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    e = fd < 0 ? sys_fail("cannot create", tmp) : RPL_OK;
    if (!e && (file_pwrite_full(fd, block, sizeof block, 0) || fdatasync(fd) != 0))
      e = sys_fail("cannot write", tmp);
    if (fd >= 0)
      close(fd);
    kill_point("start-tmp");
    if (!e && rename(tmp, path) != 0)
      e = sys_fail("cannot name", path);
    if (!e)
      e = file_fsync_parent(path);
    if (e)
      (void)unlink(tmp);
    kill_point("start-named");
    if (!e)
      e = log_open_path(path, cycle, &u);
  }
  if (e)
    return e;
  undo_log_close(*log);
  *log = u;
  return RPL_OK;
}

/* Version 1: appends one record, n blocks from block b whose content is data (n * UNDO_BLOCK bytes,
 * which may be u->buf's data part), through the page cache. */
static rpl_err append_record(struct undo_log *u, uint64_t b, uint32_t n, const uint8_t *data)
{
  struct rec_header h = {.magic = REC_MAGIC, .nblocks = n, .offset = b * UNDO_BLOCK};
  size_t len = (size_t)n * UNDO_BLOCK;
  uint8_t *rec = u->buf;
  if (data != rec + sizeof h)
    memcpy(rec + sizeof h, data, len);
  h.data_hash = proto_hash64(rec + sizeof h, len);
  h.hash = proto_hash64(&h, offsetof(struct rec_header, hash));
  memcpy(rec, &h, sizeof h);
  if (file_pwrite_full(u->fd, rec, sizeof h + len, u->end))
    return sys_fail("cannot append to", u->path); /* a torn record is overwritten by the next append */
  u->end += sizeof h + len;
  u->dirty = true;
  if (u->end - u->kicked >= WRITEBACK_KICK) {
    (void)sync_file_range(u->fd, (off_t)u->kicked, (off_t)(u->end - u->kicked), SYNC_FILE_RANGE_WRITE);
    u->kicked = u->end;
  }
  rpl_err e = RPL_OK;
  for (uint32_t i = 0; i < n && !e; i++)
    e = bs_add(&u->held, b + i);
  return e;
}

/* ---- version 2: groups written O_DIRECT while the next one fills ------------------------------- */

#define RING_ENTRIES 64u
#define READS_IN_FLIGHT 32u    /* old-block reads at once: a disk's queue kept full, the ring never */
#define WRITE_TAG (1ull << 32) /* user_data: a group's write (| group), else a read ((group << 8) | run) */

static rpl_err groups_reserve(struct undo_log *u)
{
  if (u->groups)
    return RPL_OK;
  void *p = mmap(NULL, (size_t)GROUP_BUFFERS * GROUP_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED)
    return RPL_E_NOMEM;
  u->groups = p;
  /* RPL_TEST_UNDO_PLAIN=1: a test takes the ways of kernels without io_uring and of filesystems
   * without O_DIRECT. */
  const char *plain = getenv("RPL_TEST_UNDO_PLAIN");
  bool test_plain = plain && strcmp(plain, "1") == 0;
  if (test_plain)
    u->ring_tried = u->image_dio_off = true;
  if (!u->ring_tried) {
    u->ring_tried = true;
    int rc = io_uring_queue_init(RING_ENTRIES, &u->ring, 0);
    u->ring_ready = rc == 0;
    if (!u->ring_ready)
      log_warn("undo file %s: no io_uring (%s): old blocks are read one run at a time, and each group is written "
               "before the next one fills", u->path, strerror(-rc));
  }
  if (u->dfd < 0 && !test_plain && (u->dfd = open(u->path, O_WRONLY | O_DIRECT | O_CLOEXEC)) < 0)
    log_warn("undo file %s: no O_DIRECT (%s): written through the page cache", u->path, strerror(errno));
  return RPL_OK;
}

static bool ring_usable(const struct undo_log *u) { return u->ring_ready && !u->ring_broken; }

/* Group i's write came back with res (bytes, or -errno): a short write's rest is written at once,
 * and all of it through the page cache when O_DIRECT was refused (then later groups are too). */
static rpl_err group_done(struct undo_log *u, unsigned i, int res)
{
  struct pending *o = &u->out[i];
  o->busy = false;
  if (res == -EINVAL && u->dfd >= 0) {
    log_warn("undo file %s: an O_DIRECT write was refused: written through the page cache from now on", u->path);
    close(u->dfd);
    u->dfd = -1;
    res = 0;
  }
  if (res < 0) {
    errno = -res;
    return sys_fail("cannot append to", u->path);
  }
  if ((uint32_t)res < o->len &&
      file_pwrite_full(u->fd, (uint8_t *)group_at(u, i) + res, o->len - (uint32_t)res, o->pos + (uint64_t)res))
    return sys_fail("cannot append to", u->path);
  return RPL_OK;
}

/* A run's old blocks: res bytes (or -errno) came back from its read; the rest of a short read is read
 * at once, and what lies past the image's end is zeros, as the disk read then. */
static void read_done(struct undo_log *u, unsigned g, unsigned k, int res)
{
  struct group_reads *gr = &u->reads[g];
  struct run_read *r = &gr->r[k];
  uint8_t *data = u->groups + (size_t)g * GROUP_BYTES + r->data;
  size_t got = res > 0 ? (size_t)res : 0;
  if (res == -EINVAL && !u->image_dio_off) { /* O_DIRECT refused: read through the page cache */
    log_warn("undo file %s: an O_DIRECT read of the image was refused: read through the page cache from now on",
             u->path);
    u->image_dio_off = true;
    res = 0;
  }
  if (res < 0) {
    errno = -res;
    if (!gr->err)
      gr->err = rpl_fail(RPL_E_IO, "cannot read the blocks at %" PRIu64 " to keep them for a recovery point: %s", r->at,
                         strerror(errno));
  } else if (got < r->len) {
    size_t more = 0;
    if (file_pread_full(u->image_fd, data + got, r->len - got, r->at + got, &more) && !gr->err)
      gr->err = rpl_fail(RPL_E_IO, "cannot read the blocks at %" PRIu64 " to keep them for a recovery point: %s",
                         r->at, strerror(errno));
    got += more;
  }
  if (got < r->len)
    memset(data + got, 0, r->len - got);
  gr->in_flight--;
  u->reads_in_flight--;
}

static rpl_err group_write(struct undo_log *u, unsigned i);

/* Takes one completion from the ring (waiting for it) and finishes what it was: a closed group's
 * last read sends the group on its way. */
static rpl_err reap_one(struct undo_log *u)
{
  struct io_uring_cqe *cqe;
  int rc;
  while ((rc = io_uring_wait_cqe(&u->ring, &cqe)) == -EINTR)
    ;
  if (rc < 0) { /* the ring is broken: nothing more will come back */
    u->ring_broken = true;
    for (unsigned g = 0; g < GROUP_BUFFERS; g++) {
      u->out[g].busy = u->out[g].closed = false;
      u->reads[g].in_flight = 0;
      if (!u->reads[g].err)
        u->reads[g].err = RPL_E_IO;
    }
    u->reads_in_flight = 0;
    errno = -rc;
    return sys_fail("cannot wait for the undo file's I/O:", u->path);
  }
  uint64_t tag = io_uring_cqe_get_data64(cqe);
  int res = cqe->res;
  io_uring_cqe_seen(&u->ring, cqe);
  if (tag & WRITE_TAG)
    return group_done(u, (unsigned)(tag % GROUP_BUFFERS), res);
  unsigned g = (unsigned)((tag >> 8) % GROUP_BUFFERS);
  read_done(u, g, (unsigned)(tag & 0xFF), res);
  return u->out[g].closed && !u->reads[g].in_flight ? group_write(u, g) : RPL_OK;
}

/* Buffer i neither closed, nor being written, nor being read into. */
static bool group_free(const struct undo_log *u, unsigned i)
{
  return !u->out[i].closed && !u->out[i].busy && !u->reads[i].in_flight;
}

static rpl_err group_wait(struct undo_log *u, unsigned i)
{
  rpl_err e = RPL_OK;
  while (!group_free(u, i)) {
    rpl_err ek = reap_one(u);
    e = e ? e : ek;
  }
  return e;
}

static rpl_err groups_wait(struct undo_log *u)
{
  rpl_err e = RPL_OK;
  for (unsigned i = 0; i < GROUP_BUFFERS; i++) {
    rpl_err ei = group_wait(u, i);
    e = e ? e : ei;
  }
  return e;
}

/* A group's write (or a read into it) failed: the file is read back (held keeps only what it holds,
 * the rest is kept again when it is noted again) and its torn end cut off. Returns e. */
static rpl_err log_failed(struct undo_log *u, rpl_err e)
{
  for (unsigned i = 0; i < GROUP_BUFFERS; i++)
    u->out[i].closed = false; /* not written: their blocks are kept again when next noted */
  (void)groups_wait(u);
  for (unsigned i = 0; i < GROUP_BUFFERS; i++)
    u->reads[i].err = RPL_OK;
  rpl_err le = log_load(u);
  if (le)
    log_err("undo file %s: cannot be read back after a failed append: %s", u->path, rpl_detail(le));
  return e;
}

/* An sqe, or NULL when the ring cannot be used; a full submission queue is submitted first. */
static struct io_uring_sqe *ring_sqe(struct undo_log *u)
{
  if (!ring_usable(u))
    return NULL;
  struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
  if (!sqe && io_uring_submit(&u->ring) >= 0)
    sqe = io_uring_get_sqe(&u->ring);
  return sqe;
}

/* Submits what was prepared; false (the ring not used from now on) when the kernel refused it. */
static bool ring_submit(struct undo_log *u)
{
  int rc;
  while ((rc = io_uring_submit(&u->ring)) == -EINTR || rc == -EAGAIN || rc == -EBUSY)
    ;
  if (rc >= 0)
    return true;
  u->ring_broken = true;
  log_warn("undo file %s: io_uring submit failed (%s): old blocks are read and groups written one at a time",
           u->path, strerror(-rc));
  return false;
}

/* Closed group i, its old blocks all in, is written at the file's end: its runs hashed, its write
 * put in flight (or made at once without an io_uring). A read into it that failed fails it instead. */
static rpl_err group_write(struct undo_log *u, unsigned i)
{
  struct pending *o = &u->out[i];
  o->closed = false;
  rpl_err e = u->reads[i].err;
  if (e)
    return e;
  struct group_header *g = group_at(u, i);
  const uint8_t *data = (const uint8_t *)g + UNDO_BLOCK;
  for (uint32_t k = 0; k < g->count; k++) {
    size_t len = (size_t)g->e[k].nblocks * UNDO_BLOCK;
    g->e[k].data_hash = proto_hash64(data, len);
    data += len;
  }
  g->magic = GROUP_MAGIC;
  g->reserved = 0;
  g->hash = proto_hash64(g, offsetof(struct group_header, hash));
  o->pos = u->end;
  o->busy = true;
  u->end += o->len;
  u->dirty = true;
  int fd = u->dfd >= 0 ? u->dfd : u->fd;
  struct io_uring_sqe *sqe = ring_sqe(u);
  if (sqe) {
    io_uring_prep_write(sqe, fd, g, o->len, o->pos);
    io_uring_sqe_set_data64(sqe, WRITE_TAG | i);
    if (ring_submit(u))
      return RPL_OK;
  }
  ssize_t w = pwrite(fd, g, o->len, (off_t)o->pos); /* no ring, or prepared but never submitted */
  return group_done(u, i, w < 0 ? -errno : (int)w);
}

/* The group being filled is closed: written as soon as its old blocks are in, while the next free
 * buffer fills. Waiting for old blocks at every group boundary emptied the disk's queue and held
 * the session thread, which then read nothing from the agent. Groups reach the file in the order
 * their reads finish; none is durable before undo_log_sync, and each one is valid only whole. */
static rpl_err group_close(struct undo_log *u)
{
  unsigned i = u->cur;
  struct group_header *g = group_at(u, i);
  if (!g->count)
    return RPL_OK;
  u->out[i].len = UNDO_BLOCK + u->cur_blocks * UNDO_BLOCK;
  u->out[i].closed = true;
  u->cur_blocks = 0;
  rpl_err e = u->reads[i].in_flight ? RPL_OK : group_write(u, i);
  unsigned next = (i + 1) % GROUP_BUFFERS;
  for (unsigned k = 1; k < GROUP_BUFFERS; k++) { /* the first free buffer, else the next one */
    unsigned c = (i + k) % GROUP_BUFFERS;
    if (group_free(u, c)) {
      next = c;
      break;
    }
  }
  u->cur = next;
  if (!e)
    e = group_wait(u, next);
  group_at(u, next)->count = 0;
  u->reads[next] = (struct group_reads){0};
  return e ? log_failed(u, e) : RPL_OK;
}

/* Where the next run of n blocks goes in the group being filled (sent on its way first when it has
 * no room left for it). */
static rpl_err group_room(struct undo_log *u, uint32_t n, uint8_t **data)
{
  rpl_err e = groups_reserve(u);
  if (!e && (group_at(u, u->cur)->count == GROUP_ENTRIES || u->cur_blocks + n > GROUP_BLOCKS))
    e = group_close(u);
  if (!e)
    *data = (uint8_t *)group_at(u, u->cur) + UNDO_BLOCK + (size_t)u->cur_blocks * UNDO_BLOCK;
  return e;
}

/* The run of n blocks from block b joins the group being filled, at the place group_room gave; its
 * data is hashed when the group is sent. */
static rpl_err group_add(struct undo_log *u, uint64_t b, uint32_t n)
{
  struct group_header *g = group_at(u, u->cur);
  g->e[g->count++] = (struct group_entry){.offset = b * UNDO_BLOCK, .nblocks = n};
  u->cur_blocks += n;
  rpl_err e = RPL_OK;
  for (uint32_t i = 0; i < n && !e; i++)
    e = bs_add(&u->held, b + i);
  return e;
}

/* image_fd opened again with O_DIRECT, or image_fd itself where that is refused. The replica is
 * written O_DIRECT and an appliance's page cache does not hold its fleet's replicas: read through
 * the page cache, the old blocks took fresh pages and a copy out of them. */
static int image_direct(struct undo_log *u, int image_fd)
{
  if (u->image_dio_off)
    return image_fd;
  if (u->image_dfd_of != image_fd) {
    if (u->image_dfd >= 0)
      close(u->image_dfd);
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", image_fd);
    u->image_dfd = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC);
    u->image_dfd_of = image_fd;
    if (u->image_dfd < 0) {
      log_warn("undo file %s: the image cannot be read O_DIRECT (%s): read through the page cache", u->path,
               strerror(errno));
      u->image_dio_off = true;
      return image_fd;
    }
  }
  return u->image_dfd;
}

/* Reads the run's old blocks [at, at + len) of the image into data (in the group being filled, as
 * its next run): in flight through the ring, else at once. */
static rpl_err group_read(struct undo_log *u, int image_fd, uint64_t image_size, uint64_t at, uint8_t *data, size_t len)
{
  if (at >= image_size) {
    memset(data, 0, len); /* past the image's end: zeros, as the disk read then */
    return RPL_OK;
  }
  while (ring_usable(u) && u->reads_in_flight >= READS_IN_FLIGHT) {
    rpl_err e = reap_one(u);
    if (e)
      return log_failed(u, e); /* a group's write failed */
  }
  unsigned i = u->cur, k = group_at(u, i)->count;
  struct io_uring_sqe *sqe = ring_sqe(u);
  if (sqe) {
    u->image_fd = image_fd;
    int fd = image_direct(u, image_fd);
    struct group_reads *gr = &u->reads[i];
    gr->r[k] = (struct run_read){.at = at, .len = (uint32_t)len, .data = (uint32_t)(data - (uint8_t *)group_at(u, i))};
    io_uring_prep_read(sqe, fd, data, (unsigned)len, at);
    io_uring_sqe_set_data64(sqe, ((uint64_t)i << 8) | k);
    gr->in_flight++;
    u->reads_in_flight++;
    if (ring_submit(u))
      return RPL_OK;
    gr->in_flight--; /* never submitted: read now */
    u->reads_in_flight--;
  }
  size_t got = 0;
  if (file_pread_full(image_fd, data, len, at, &got))
    return rpl_fail(RPL_E_IO, "cannot read the blocks at %" PRIu64 " to keep them for a recovery point: %s", at,
                    strerror(errno));
  memset(data + got, 0, len - got);
  return RPL_OK;
}

/* Appends a run whose content is data (merge_into). */
static rpl_err append_run(struct undo_log *u, uint64_t b, uint32_t n, const uint8_t *data)
{
  if (u->version == 1)
    return append_record(u, b, n, data);
  uint8_t *at;
  rpl_err e = group_room(u, n, &at);
  if (e)
    return e;
  memcpy(at, data, (size_t)n * UNDO_BLOCK);
  return group_add(u, b, n);
}

rpl_err undo_log_note(struct undo_log *u, int image_fd, uint64_t image_size, uint64_t offset, uint64_t length)
{
  if (!length)
    return RPL_OK;
  uint64_t b = offset / UNDO_BLOCK, b1 = (offset + length + UNDO_BLOCK - 1) / UNDO_BLOCK;
  while (b < b1) {
    if (bs_has(&u->held, b)) {
      b++;
      continue;
    }
    uint32_t n = 0;
    while (b + n < b1 && n < UNDO_MAX_RUN && !bs_has(&u->held, b + n))
      n++;
    size_t len = (size_t)n * UNDO_BLOCK, got = 0;
    uint64_t at = b * UNDO_BLOCK;
    rpl_err e;
    if (u->version == 1) {
      uint8_t *data = u->buf + sizeof(struct rec_header);
      if (at < image_size && file_pread_full(image_fd, data, len, at, &got))
        return rpl_fail(RPL_E_IO, "cannot read the blocks at %" PRIu64 " to keep them for a recovery point: %s", at,
                        strerror(errno));
      memset(data + got, 0, len - got); /* past the image's end: zeros, as the disk read then */
      e = append_record(u, b, n, data);
    } else {
      uint8_t *data;
      if (!(e = group_room(u, n, &data)) && !(e = group_read(u, image_fd, image_size, at, data, len)))
        e = group_add(u, b, n);
    }
    if (e)
      return e;
    b += n;
  }
  return RPL_OK;
}

rpl_err undo_log_sync(struct undo_log *u)
{
  if (u->groups && group_at(u, u->cur)->count) {
    rpl_err e = group_close(u);
    if (!e && (e = groups_wait(u)))
      e = log_failed(u, e);
    if (e)
      return e;
  }
  if (!u->dirty)
    return RPL_OK;
  if (fdatasync(u->fd) != 0)
    return sys_fail("fdatasync of", u->path);
  u->dirty = false;
  u->kicked = u->end;
  /* Handed back lazily, as the direct cycle's stage is: a fleet's idle disks keep no 2 MiB each. */
  if (u->groups)
    (void)madvise(u->groups, (size_t)GROUP_BUFFERS * GROUP_BYTES, MADV_FREE);
  return RPL_OK;
}

/* ---- retention ---------------------------------------------------------------------------------- */

/* Appends to into the blocks of the undo file at path that it does not hold. */
static rpl_err merge_into(struct undo_log *into, const char *path)
{
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return sys_fail("cannot open", path);
  struct stat sb;
  uint8_t *buf = malloc(RUN_BYTES);
  struct span *sp = malloc(sizeof *sp);
  uint32_t version = 0;
  rpl_err e = !buf || !sp ? RPL_E_NOMEM : fstat(fd, &sb) != 0 ? sys_fail("cannot stat", path) : RPL_OK;
  if (!e && !(version = file_version(fd, 0, NULL)))
    e = rpl_fail(RPL_E_UNDO_CORRUPT, "%s: %s", path, rpl_strerror(RPL_E_UNDO_CORRUPT));
  uint64_t pos = first_span(version);
  bool appended = false;
  while (!e && read_span(fd, version, pos, (uint64_t)sb.st_size, sp, buf)) {
    for (uint32_t r = 0; r < sp->n && !e; r++) {
      const struct span_run *x = &sp->run[r];
      const uint8_t *data = buf + (x->pos - sp->data);
      uint64_t b0 = x->offset / UNDO_BLOCK;
      for (uint32_t i = 0; i < x->nblocks && !e;) {
        if (bs_has(&into->held, b0 + i)) {
          i++;
          continue;
        }
        uint32_t n = 0;
        while (i + n < x->nblocks && !bs_has(&into->held, b0 + i + n))
          n++;
        e = append_run(into, b0 + i, n, data + (size_t)i * UNDO_BLOCK);
        i += n;
        if (!e && !appended) {
          appended = true;
          if (kill_armed("merge-appended") && undo_log_sync(into)) /* dead with part of the merge in the file */
            log_warn("undo file %s: not synced before the test's kill", into->path);
          kill_point("merge-appended");
        }
      }
    }
    pos = sp->next;
  }
  free(sp);
  free(buf);
  close(fd);
  return e ? e : undo_log_sync(into);
}

rpl_err undo_delete(const char *image, uint64_t cycle, struct undo_log **newest)
{
  struct undo_file *f;
  size_t n;
  rpl_err e = list_files(image, false, &f, &n);
  if (e)
    return e;
  size_t k = 0;
  while (k < n && f[k].cycle != cycle)
    k++;
  if (k == n) {
    free(f);
    return RPL_OK; /* gone already */
  }
  struct undo_log *older = NULL;
  if (k > 0 && !(e = log_open_path(f[k - 1].path, f[k - 1].cycle, &older)))
    e = merge_into(older, f[k].path);
  kill_point("merge-synced");
  if (!e && unlink(f[k].path) != 0 && errno != ENOENT)
    e = sys_fail("cannot delete", f[k].path);
  if (!e)
    e = file_fsync_parent(f[k].path);
  if (!e && *newest && (*newest)->cycle == cycle) {
    undo_log_close(*newest);
    *newest = older; /* it holds the deleted file's blocks too now */
    older = NULL;
  }
  undo_log_close(older);
  free(f);
  return e;
}

/* ---- readers ----------------------------------------------------------------------------------- */

struct rec {
  uint64_t offset, pos; /* in the image; of the data in the undo file */
  uint32_t len;
};

struct view_file {
  uint64_t cycle;
  int fd;
  uint32_t version;
  uint64_t indexed; /* bytes of the file read into recs: up to the last whole record or group seen */
  struct rec *recs; /* sorted by offset; they do not overlap (a block once per file) */
  size_t n, cap;
};

struct undo_view {
  char image[4096];
  uint64_t cycle;
  int image_fd;
  pthread_mutex_t lock;  /* the files and their indexes: refreshed by every read */
  struct view_file *f;   /* oldest first */
  size_t nf, fcap;
  uint8_t *scratch;      /* a record's or group's data while it is verified */
  struct span *span;     /* the record or group being indexed */
};

static int cmp_rec(const void *a, const void *b)
{
  uint64_t x = ((const struct rec *)a)->offset, y = ((const struct rec *)b)->offset;
  return x < y ? -1 : x > y;
}

/* Indexes what was appended to f since the last look; a record or group not whole yet is looked at
 * again next time. */
static rpl_err view_index(struct undo_view *v, struct view_file *f)
{
  struct stat sb;
  if (fstat(f->fd, &sb) != 0)
    return RPL_E_IO;
  size_t before = f->n;
  struct span *sp = v->span;
  while (read_span(f->fd, f->version, f->indexed, (uint64_t)sb.st_size, sp, v->scratch)) {
    if (f->n + sp->n > f->cap) {
      size_t cap = f->cap ? f->cap : 256;
      while (cap < f->n + sp->n)
        cap *= 2;
      struct rec *p = cap <= MAX_RECORDS ? realloc(f->recs, cap * sizeof *p) : NULL;
      if (!p)
        return cap <= MAX_RECORDS ? RPL_E_NOMEM : RPL_E_LIMIT;
      f->recs = p;
      f->cap = cap;
    }
    for (uint32_t r = 0; r < sp->n; r++)
      f->recs[f->n++] = (struct rec){sp->run[r].offset, sp->run[r].pos, sp->run[r].nblocks * UNDO_BLOCK};
    f->indexed = sp->next;
  }
  if (f->n != before)
    qsort(f->recs, f->n, sizeof *f->recs, cmp_rec);
  return RPL_OK;
}

/* Adds the undo files from the view's point on that it does not know yet (a point made since). */
static rpl_err view_add_files(struct undo_view *v)
{
  struct undo_file *list;
  size_t n;
  rpl_err e = list_files(v->image, false, &list, &n);
  for (size_t i = 0; !e && i < n; i++) {
    if (list[i].cycle < v->cycle || (v->nf && list[i].cycle <= v->f[v->nf - 1].cycle))
      continue; /* older than the point, or known (a newer one is only ever made after the known ones) */
    int fd = open(list[i].path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      if (errno == ENOENT)
        continue; /* deleted since it was listed: its blocks are in the next older file */
      e = sys_fail("cannot open", list[i].path);
      break;
    }
    uint32_t version = file_version(fd, list[i].cycle, NULL);
    if (!version) {
      close(fd);
      e = rpl_fail(RPL_E_UNDO_CORRUPT, "%s: %s", list[i].path, rpl_strerror(RPL_E_UNDO_CORRUPT));
      break;
    }
    if (v->nf == v->fcap) {
      size_t cap = v->fcap ? v->fcap * 2 : 16;
      struct view_file *p = cap <= MAX_FILES ? realloc(v->f, cap * sizeof *p) : NULL;
      if (!p) {
        close(fd);
        e = cap <= MAX_FILES ? RPL_E_NOMEM : RPL_E_LIMIT;
        break;
      }
      v->f = p;
      v->fcap = cap;
    }
    v->f[v->nf++] = (struct view_file){.cycle = list[i].cycle, .fd = fd, .version = version, .indexed = first_span(version)};
  }
  free(list);
  return e;
}

static rpl_err view_refresh(struct undo_view *v)
{
  rpl_err e = view_add_files(v);
  for (size_t i = 0; !e && i < v->nf; i++)
    e = view_index(v, &v->f[i]);
  return e;
}

void undo_view_close(struct undo_view *v)
{
  if (!v)
    return;
  for (size_t i = 0; i < v->nf; i++) {
    close(v->f[i].fd);
    free(v->f[i].recs);
  }
  free(v->f);
  free(v->scratch);
  free(v->span);
  if (v->image_fd >= 0)
    close(v->image_fd);
  pthread_mutex_destroy(&v->lock);
  free(v);
}

rpl_err undo_view_open(const char *image, uint64_t cycle, struct undo_view **out)
{
  *out = NULL;
  struct undo_view *v = calloc(1, sizeof *v);
  if (!v)
    return RPL_E_NOMEM;
  v->image_fd = -1;
  pthread_mutex_init(&v->lock, NULL);
  v->cycle = cycle;
  rpl_err e = RPL_OK;
  if ((size_t)snprintf(v->image, sizeof v->image, "%s", image) >= sizeof v->image)
    e = RPL_E_LIMIT;
  else if (!(v->scratch = malloc(RUN_BYTES)) || !(v->span = malloc(sizeof *v->span)))
    e = RPL_E_NOMEM;
  else if ((v->image_fd = open(image, O_RDONLY | O_CLOEXEC)) < 0)
    e = rpl_fail(RPL_E_RESTORE_NO_IMAGE, "%s (%s: %s)", rpl_strerror(RPL_E_RESTORE_NO_IMAGE), image, strerror(errno));
  else if (!(e = view_refresh(v)) && (!v->nf || v->f[0].cycle != cycle))
    e = rpl_fail(RPL_E_RESTORE_NO_IMAGE, "%s (no %s" UNDO_SUFFIX "%" PRIu64 ")", rpl_strerror(RPL_E_RESTORE_NO_IMAGE),
                 image, cycle);
  if (e) {
    undo_view_close(v);
    return e;
  }
  *out = v;
  return RPL_OK;
}

/* A part of an undo record that lies over the read. */
struct piece {
  int fd;
  uint64_t pos;
  size_t at, len;
};

rpl_err undo_view_read(struct undo_view *v, uint64_t offset, uint8_t *buf, size_t len)
{
  /* The image first: a block overwritten after this read was captured before it was. */
  size_t got;
  if (file_pread_full(v->image_fd, buf, len, offset, &got))
    return rpl_fail(RPL_E_IO, "cannot read %s: %s", v->image, strerror(errno));
  memset(buf + got, 0, len - got);
  pthread_mutex_lock(&v->lock);
  rpl_err e = view_refresh(v);
  size_t cap = v->nf * (len / UNDO_BLOCK + 2), np = 0;
  struct piece *pc = e ? NULL : malloc((cap ? cap : 1) * sizeof *pc);
  if (!e && !pc)
    e = RPL_E_NOMEM;
  /* Newest file first, so that the oldest holding a block is laid over last and wins. */
  for (size_t i = v->nf; !e && i-- > 0;) {
    const struct view_file *f = &v->f[i];
    size_t lo = 0, hi = f->n;
    while (lo < hi) { /* the first record ending after offset */
      size_t mid = (lo + hi) / 2;
      if (f->recs[mid].offset + f->recs[mid].len <= offset)
        lo = mid + 1;
      else
        hi = mid;
    }
    for (size_t r = lo; r < f->n && f->recs[r].offset < offset + len && np < cap; r++) {
      const struct rec *x = &f->recs[r];
      uint64_t from = x->offset > offset ? x->offset : offset;
      uint64_t to = x->offset + x->len < offset + len ? x->offset + x->len : offset + len;
      pc[np++] = (struct piece){f->fd, x->pos + (from - x->offset), (size_t)(from - offset), (size_t)(to - from)};
    }
  }
  pthread_mutex_unlock(&v->lock);
  for (size_t i = 0; !e && i < np; i++)
    if (file_pread_full(pc[i].fd, buf + pc[i].at, pc[i].len, pc[i].pos, &got) || got != pc[i].len)
      e = rpl_fail(RPL_E_IO, "cannot read an undo file of %s: %s", v->image, got != pc[i].len ? "short" : strerror(errno));
  free(pc);
  return e;
}
