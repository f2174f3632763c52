/* undo.c - recovery points of a file replica as undo files (undo.h): the writer that captures blocks
 * before they are overwritten, the merge that retention does, and the readers of a point's image. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "file_io.h"
#include "proto.h"
#include "rpl_log.h"
#include "undo.h"

#define FILE_MAGIC "RPLUNDO1"
#define FILE_VERSION 1u
#define REC_MAGIC 0x43455255u        /* "UREC" */
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

/* A test stops the process dead at a named step ($RPL_TEST_UNDO_KILL): a kill -9 there, not by luck. */
static void kill_point(const char *step)
{
  const char *at = getenv("RPL_TEST_UNDO_KILL");
  if (at && strcmp(at, step) == 0)
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
  return memcmp(h->magic, FILE_MAGIC, 8) == 0 && h->version == FILE_VERSION && h->block == UNDO_BLOCK &&
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

rpl_err undo_list(const char *image, struct undo_file **out, size_t *count)
{
  rpl_err e = list_files(image, false, out, count);
  for (size_t i = 0; !e && i < *count; i++) {
    struct undo_file *f = &(*out)[i];
    int fd = open(f->path, O_RDONLY | O_CLOEXEC);
    struct file_header h;
    size_t got = 0;
    if (fd >= 0 && file_pread_full(fd, &h, sizeof h, 0, &got) == RPL_OK && got == sizeof h && header_valid(&h))
      f->created = h.created;
    if (fd >= 0)
      close(fd);
  }
  return e;
}

/* ---- reading records ---------------------------------------------------------------------------- */

/* The record at pos of fd (size bytes long), its data into buf (RUN_BYTES): false when there is
 * none whole and valid there (the end, or a torn append). */
static bool read_record(int fd, uint64_t pos, uint64_t size, struct rec_header *h, uint8_t *buf)
{
  size_t got;
  if (size - pos < sizeof *h || file_pread_full(fd, h, sizeof *h, pos, &got) || got != sizeof *h)
    return false;
  if (h->magic != REC_MAGIC || h->nblocks == 0 || h->nblocks > UNDO_MAX_RUN || h->offset % UNDO_BLOCK ||
      proto_hash64(h, offsetof(struct rec_header, hash)) != h->hash)
    return false;
  size_t len = (size_t)h->nblocks * UNDO_BLOCK;
  if (size - pos - sizeof *h < len || file_pread_full(fd, buf, len, pos + sizeof *h, &got) || got != len)
    return false;
  return proto_hash64(buf, len) == h->data_hash;
}

/* ---- the writer ----------------------------------------------------------------------------------- */

struct undo_log {
  char *path;
  int fd;
  uint64_t cycle;
  uint64_t end;        /* where the next record goes: after the last valid one */
  uint64_t kicked;     /* writeback started (or synced) up to here */
  bool dirty;          /* appended since the last sync */
  struct blockset held;
  uint8_t *buf;        /* a record being built: header and at most UNDO_MAX_RUN blocks */
};

const char *undo_log_path(const struct undo_log *u) { return u->path; }
uint64_t undo_log_cycle(const struct undo_log *u) { return u->cycle; }

void undo_log_close(struct undo_log *u)
{
  if (!u)
    return;
  if (u->fd >= 0)
    close(u->fd);
  bs_free(&u->held);
  free(u->buf);
  free(u->path);
  free(u);
}

/* Opens an undo file to append to it: its records are read back (their blocks into held) and a
 * torn tail after them is cut off. */
static rpl_err log_open_path(const char *path, uint64_t cycle, struct undo_log **out)
{
  *out = NULL;
  struct undo_log *u = calloc(1, sizeof *u);
  if (!u)
    return RPL_E_NOMEM;
  u->fd = -1;
  u->cycle = cycle;
  rpl_err e = RPL_OK;
  if (!(u->path = strdup(path)) || !(u->buf = malloc(sizeof(struct rec_header) + RUN_BYTES)))
    e = RPL_E_NOMEM;
  else if ((u->fd = open(path, O_RDWR | O_CLOEXEC)) < 0)
    e = sys_fail("cannot open", path);
  struct stat sb;
  if (!e && fstat(u->fd, &sb) != 0)
    e = sys_fail("cannot stat", path);
  struct file_header fh;
  size_t got = 0;
  if (!e && (file_pread_full(u->fd, &fh, sizeof fh, 0, &got) || got != sizeof fh || !header_valid(&fh) || fh.cycle != cycle))
    e = rpl_fail(RPL_E_UNDO_CORRUPT, "%s: %s", path, rpl_strerror(RPL_E_UNDO_CORRUPT));
  uint64_t pos = sizeof fh, size = e ? 0 : (uint64_t)sb.st_size;
  struct rec_header h;
  uint8_t *data = u->buf ? u->buf + sizeof h : NULL;
  while (!e && read_record(u->fd, pos, size, &h, data)) {
    for (uint32_t i = 0; i < h.nblocks && !e; i++)
      e = bs_add(&u->held, h.offset / UNDO_BLOCK + i);
    pos += sizeof h + (uint64_t)h.nblocks * UNDO_BLOCK;
  }
  if (!e && pos < size) {
    log_warn("undo file %s: %" PRIu64 " byte(s) of an interrupted append cut off", path, size - pos);
    if (ftruncate(u->fd, (off_t)pos) != 0 || fdatasync(u->fd) != 0)
      e = sys_fail("cannot cut the torn end of", path);
  }
  u->end = u->kicked = pos;
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
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    e = fd < 0 ? sys_fail("cannot create", tmp) : RPL_OK;
    if (!e && (file_pwrite_full(fd, &h, sizeof h, 0) || fdatasync(fd) != 0))
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

/* Appends one record: n blocks from block b, their content in data (n * UNDO_BLOCK bytes, which
 * may be u->buf's data part). */
static rpl_err append_run(struct undo_log *u, uint64_t b, uint32_t n, const uint8_t *data)
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
    uint8_t *data = u->buf + sizeof(struct rec_header);
    size_t len = (size_t)n * UNDO_BLOCK, got = 0;
    uint64_t at = b * UNDO_BLOCK;
    if (at < image_size && file_pread_full(image_fd, data, len, at, &got))
      return rpl_fail(RPL_E_IO, "cannot read the blocks at %" PRIu64 " to keep them for a recovery point: %s", at,
                      strerror(errno));
    memset(data + got, 0, len - got); /* past the image's end: zeros, as the disk read then */
    rpl_err e = append_run(u, b, n, data);
    if (e)
      return e;
    b += n;
  }
  return RPL_OK;
}

rpl_err undo_log_sync(struct undo_log *u)
{
  if (!u->dirty)
    return RPL_OK;
  if (fdatasync(u->fd) != 0)
    return sys_fail("fdatasync of", u->path);
  u->dirty = false;
  u->kicked = u->end;
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
  rpl_err e = !buf ? RPL_E_NOMEM : fstat(fd, &sb) != 0 ? sys_fail("cannot stat", path) : RPL_OK;
  uint64_t pos = sizeof(struct file_header);
  struct rec_header h;
  bool appended = false;
  while (!e && read_record(fd, pos, (uint64_t)sb.st_size, &h, buf)) {
    uint64_t b0 = h.offset / UNDO_BLOCK;
    for (uint32_t i = 0; i < h.nblocks && !e;) {
      if (bs_has(&into->held, b0 + i)) {
        i++;
        continue;
      }
      uint32_t n = 0;
      while (i + n < h.nblocks && !bs_has(&into->held, b0 + i + n))
        n++;
      e = append_run(into, b0 + i, n, buf + (size_t)i * UNDO_BLOCK);
      i += n;
      if (!e && !appended) {
        appended = true;
        kill_point("merge-appended");
      }
    }
    pos += sizeof h + (uint64_t)h.nblocks * UNDO_BLOCK;
  }
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
  uint64_t indexed; /* bytes of the file read into recs: up to the last whole record seen */
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
  uint8_t *scratch;      /* a record's data while it is verified */
};

static int cmp_rec(const void *a, const void *b)
{
  uint64_t x = ((const struct rec *)a)->offset, y = ((const struct rec *)b)->offset;
  return x < y ? -1 : x > y;
}

/* Indexes what was appended to f since the last look; a record not whole yet is looked at again next time. */
static rpl_err view_index(struct undo_view *v, struct view_file *f)
{
  struct stat sb;
  if (fstat(f->fd, &sb) != 0)
    return RPL_E_IO;
  size_t before = f->n;
  struct rec_header h;
  while (read_record(f->fd, f->indexed, (uint64_t)sb.st_size, &h, v->scratch)) {
    if (f->n == f->cap) {
      size_t cap = f->cap ? f->cap * 2 : 256;
      struct rec *p = cap <= MAX_RECORDS ? realloc(f->recs, cap * sizeof *p) : NULL;
      if (!p)
        return cap <= MAX_RECORDS ? RPL_E_NOMEM : RPL_E_LIMIT;
      f->recs = p;
      f->cap = cap;
    }
    f->recs[f->n++] = (struct rec){h.offset, f->indexed + sizeof h, h.nblocks * UNDO_BLOCK};
    f->indexed += sizeof h + (uint64_t)h.nblocks * UNDO_BLOCK;
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
    struct file_header h;
    size_t got = 0;
    if (file_pread_full(fd, &h, sizeof h, 0, &got) || got != sizeof h || !header_valid(&h) || h.cycle != list[i].cycle) {
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
    v->f[v->nf++] = (struct view_file){.cycle = list[i].cycle, .fd = fd, .indexed = sizeof h};
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
  else if (!(v->scratch = malloc(RUN_BYTES)))
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
