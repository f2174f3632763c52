/* cmd_restore.c - `replication-appliance restore`: rebuilds the image of a recovery point from the
 * storage (store.h: a blob snapshot, a kept copy of a file image) into a file, or compares it with
 * one; several workers, each with its own reader, take 4 MiB chunks in parallel. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uuid/uuid.h>

#include "catalog.h"
#include "commands.h"
#include "identity.h"
#include "settings.h"
#include "store.h"

#define CHUNK (4u << 20)
#define DEFAULT_WORKERS 8
#define MAX_WORKERS 64

static rpl_err pwrite_full(int fd, const uint8_t *buf, size_t len, uint64_t off)
{
  for (size_t done = 0; done < len;) {
    ssize_t n = pwrite(fd, buf + done, len - done, (off_t)(off + done));
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return RPL_E_IO;
    done += (size_t)n;
  }
  return RPL_OK;
}

/* What the workers share. */
struct restore_job {
  struct store_image *img;        /* the point's image: each worker opens its own reader */
  uint64_t size;
  int fd;                         /* --out (written) or --verify (compared) */
  bool verify;
  atomic_uint_fast64_t next;      /* the next chunk to take */
  atomic_uint_fast64_t data;      /* bytes of the image that hold data (not holes) */
  atomic_uint_fast64_t diff;      /* --verify: the lowest differing byte, UINT64_MAX when none */
  atomic_bool stop;
  pthread_mutex_t lock;
  rpl_err err;                    /* the first failure */
  char why[512];
};

/* Records the first failure: "WHAT: DETAIL" (detail "" = the error's message). */
static void job_fail(struct restore_job *job, rpl_err e, const char *what, const char *detail)
{
  pthread_mutex_lock(&job->lock);
  if (!job->err) {
    job->err = e;
    snprintf(job->why, sizeof job->why, "%s: %s", what, detail && detail[0] ? detail : rpl_strerror(e));
  }
  pthread_mutex_unlock(&job->lock);
  atomic_store(&job->stop, true);
}

/* A worker: takes chunks in ascending order until none is left, one failed or --verify found a
 * difference (every chunk below it was taken before, so the lowest difference is still found). */
static void *restore_worker(void *arg)
{
  struct restore_job *job = arg;
  struct store_reader *rd = NULL;
  uint8_t *buf = malloc(CHUNK), *cmp = job->verify ? malloc(CHUNK) : NULL;
  rpl_err e = RPL_OK;
  if (!buf || (job->verify && !cmp))
    e = RPL_E_NOMEM;
  else if ((e = job->img->ops->reader_open(job->img, &rd)))
    job_fail(job, e, "cannot open the storage client", rpl_detail(e)); /* this worker's thread: its detail */
  if (e == RPL_E_NOMEM)
    job_fail(job, e, "restore", NULL);
  while (!e && !atomic_load(&job->stop)) {
    uint64_t off = atomic_fetch_add(&job->next, 1) * CHUNK;
    if (off >= job->size)
      break;
    size_t len = job->size - off < CHUNK ? (size_t)(job->size - off) : CHUNK;
    bool hole;
    if ((e = rd->ops->reader_read(rd, off, buf, len, &hole))) {
      job_fail(job, e, "cannot read the point's image", NULL);
      break;
    }
    if (!hole)
      atomic_fetch_add(&job->data, len);
    if (!job->verify) {
      if (!hole && (e = pwrite_full(job->fd, buf, len, off)))
        job_fail(job, e, "cannot write the image", strerror(errno));
      continue;
    }
    size_t got = 0;
    while (got < len) {
      ssize_t n = pread(job->fd, cmp + got, len - got, (off_t)(off + got));
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        break;
      got += (size_t)n;
    }
    for (size_t i = 0; i < len; i++)
      if (i >= got || buf[i] != cmp[i]) {
        uint64_t at = off + i, cur = atomic_load(&job->diff);
        while (at < cur && !atomic_compare_exchange_weak(&job->diff, &cur, at))
          ;
        atomic_store(&job->stop, true);
        break;
      }
  }
  if (rd)
    rd->ops->reader_close(rd);
  free(buf);
  free(cmp);
  return NULL;
}

static int usage(void)
{
  fprintf(stderr, "usage: replication-appliance restore --state DIR --disk ID [--point RP] (--out FILE | --verify FILE) [--parallel N]\n");
  return 2;
}

/* What the command line asked for. */
struct restore_opts {
  const char *state, *disk, *point, *out, *verify;
  unsigned workers;
  uint8_t disk_id[PROTO_ID_SIZE];
};

/* parse_restore_options returns this when the command goes on; anything else is its exit status. */
#define RESTORE_CONTINUE (-1)

static int parse_restore_options(int argc, char **argv, struct restore_opts *o)
{
  static const struct option opts[] = {{"state", required_argument, NULL, 's'}, {"disk", required_argument, NULL, 'd'},
                                       {"point", required_argument, NULL, 'p'}, {"out", required_argument, NULL, 'o'},
                                       {"verify", required_argument, NULL, 'v'}, {"parallel", required_argument, NULL, 'P'},
                                       {0, 0, 0, 0}};
  *o = (struct restore_opts){.state = APPLIANCE_DEFAULT_STATE, .workers = DEFAULT_WORKERS};
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
    case 's': o->state = optarg; break;
    case 'd': o->disk = optarg; break;
    case 'p': o->point = optarg; break;
    case 'o': o->out = optarg; break;
    case 'v': o->verify = optarg; break;
    case 'P': {
      char *end;
      unsigned long n = strtoul(optarg, &end, 10);
      if (*end || n < 1 || n > MAX_WORKERS) {
        fprintf(stderr, "replication-appliance restore: --parallel takes the number of chunks read at once, 1 to %d\n", MAX_WORKERS);
        return 2;
      }
      o->workers = (unsigned)n;
      break;
    }
    default: return usage();
    }
  }
  if (!o->disk || !o->out == !o->verify || optind != argc)
    return usage();
  if (uuid_parse(o->disk, o->disk_id)) {
    fprintf(stderr, "replication-appliance restore: --disk takes the disk's id (a UUID, as status shows it)\n");
    return 2;
  }
  return RESTORE_CONTINUE;
}

/* --point takes "rp-N" as status shows it, or plain N; a point of another disk is no point of this one. */
static rpl_err lookup_point(struct catalog *cat, const struct restore_opts *o, struct catalog_point *p)
{
  rpl_err err;
  if (o->point) {
    const char *num = strncmp(o->point, "rp-", 3) ? o->point : o->point + 3;
    char *end;
    long long id = strtoll(num, &end, 10);
    err = *num && !*end ? catalog_point_get(cat, id, p) : RPL_E_RESTORE_POINT;
    if (!err && memcmp(p->disk_id, o->disk_id, PROTO_ID_SIZE))
      err = RPL_E_RESTORE_POINT;
    if (err == RPL_E_NOT_FOUND)
      err = RPL_E_RESTORE_POINT;
  } else {
    err = catalog_point_latest(cat, o->disk_id, p);
    if (err == RPL_E_NOT_FOUND)
      err = RPL_E_RESTORE_POINT;
  }
  return err;
}

/* Everything restore needs from the state directory, read up front so the catalog is closed before
 * the (long) copy. Returns 0 or the exit status. */
static int find_point(const struct restore_opts *o, struct appliance_settings *set, struct catalog_disk *cd,
                      struct catalog_point *p)
{
  rpl_err err = settings_load(o->state, set);
  if (err) {
    fprintf(stderr, "replication-appliance restore: %s\n", err == RPL_E_NOT_FOUND ? "not initialised: run 'replication-appliance init' first" : rpl_detail(err));
    return 1;
  }
  struct catalog *cat;
  if ((err = identity_open_catalog(o->state, &cat))) {
    fprintf(stderr, "replication-appliance restore: cannot open the catalog: %s\n", rpl_strerror(err));
    return 1;
  }
  if ((err = catalog_disk_get(cat, o->disk_id, cd))) {
    fprintf(stderr, "replication-appliance restore: disk %s: %s\n", o->disk, rpl_strerror(err));
    catalog_close(cat);
    return 1;
  }
  err = lookup_point(cat, o, p);
  catalog_close(cat);
  if (!err && !p->has_snapshot)
    err = RPL_E_RESTORE_NO_IMAGE;
  if (err) {
    fprintf(stderr, "replication-appliance restore: disk %s, point %s: %s\n", o->disk, o->point ? o->point : "(latest)", rpl_strerror(err));
    return 1;
  }
  return 0;
}

/* What the run found, for the report. */
struct restore_result {
  uint64_t data, diff; /* diff: --verify's lowest differing byte, UINT64_MAX when none */
  double secs;
  unsigned workers;    /* as many as ran: never more than there are chunks */
};

/* Runs the workers over the image; when no thread can be started this one does the work, slower but
 * still done. */
static rpl_err run_workers(struct store_image *img, uint64_t size, int fd, bool verify, struct restore_result *r)
{
  static struct restore_job job; /* large atomics: not on the stack of a short program anyway */
  memset(&job, 0, sizeof job);
  job.img = img;
  job.size = size;
  job.fd = fd;
  job.verify = verify;
  atomic_init(&job.next, 0);
  atomic_init(&job.data, 0);
  atomic_init(&job.diff, UINT64_MAX);
  atomic_init(&job.stop, false);
  pthread_mutex_init(&job.lock, NULL);
  uint64_t chunks = (size + CHUNK - 1) / CHUNK;
  if (r->workers > chunks)
    r->workers = chunks ? (unsigned)chunks : 1;
  pthread_t tids[MAX_WORKERS];
  unsigned started = 0;
  for (; started < r->workers; started++)
    if (pthread_create(&tids[started], NULL, restore_worker, &job) != 0)
      break;
  if (started == 0)
    restore_worker(&job);
  for (unsigned i = 0; i < started; i++)
    pthread_join(tids[i], NULL);
  rpl_err err = job.err;
  if (err && job.why[0])
    fprintf(stderr, "replication-appliance restore: %s\n", job.why);
  r->data = atomic_load(&job.data);
  r->diff = atomic_load(&job.diff);
  pthread_mutex_destroy(&job.lock);
  return err;
}

/* Copies (or compares) the point's image; a failed --out leaves no partial file behind. */
static rpl_err restore_image(const struct restore_opts *o, struct store_image *img, uint64_t size, struct restore_result *r)
{
  rpl_err err = RPL_OK;
  int fd = o->verify ? open(o->verify, O_RDONLY | O_CLOEXEC) : open(o->out, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  r->data = 0;
  r->diff = UINT64_MAX;
  if (fd < 0) {
    fprintf(stderr, "replication-appliance restore: cannot open %s: %s\n", o->verify ? o->verify : o->out, strerror(errno));
    err = RPL_E_IO;
  } else if (o->out && ftruncate(fd, (off_t)size) != 0) { /* holes stay sparse: only data is written */
    err = RPL_E_IO;
  }
  if (!err)
    err = run_workers(img, size, fd, o->verify != NULL, r);
  if (!err && o->verify && r->diff == UINT64_MAX) { /* the file must not be longer either */
    off_t end = lseek(fd, 0, SEEK_END);
    if (end >= 0 && (uint64_t)end != size)
      r->diff = size;
  }
  if (!err && o->out && fdatasync(fd) != 0)
    err = RPL_E_IO;
  clock_gettime(CLOCK_MONOTONIC, &t1);
  r->secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
  if (fd >= 0)
    close(fd);
  if (err && o->out && fd >= 0)
    (void)unlink(o->out);
  return err;
}

/* A --verify difference is a failure (exit 1) that names the first differing byte. */
static int report(const struct restore_opts *o, const char *from, const struct catalog_disk *cd,
                  const struct catalog_point *p, const struct restore_result *r)
{
  if (o->verify && r->diff != UINT64_MAX) {
    fprintf(stderr, "replication-appliance restore: %s differs from point rp-%" PRId64 " (cycle %" PRIu64 ") at byte %" PRIu64 "\n",
            o->verify, p->id, p->cycle, r->diff);
    return 1;
  }
  printf("point rp-%" PRId64 " (cycle %" PRIu64 ", %s, %s %s): %" PRIu64 " MiB disk, %" PRIu64 " MiB data, %.2f s, %.1f MB/s, %u in parallel\n",
         p->id, p->cycle, catalog_point_kind_name(p->kind), from, p->snapshot_id, cd->size_bytes >> 20, r->data >> 20, r->secs,
         r->secs > 0 ? (double)cd->size_bytes / 1e6 / r->secs : 0.0, r->workers);
  printf("%s %s\n", o->verify ? "identical:" : "restored to", o->verify ? o->verify : o->out);
  return 0;
}

int appliance_cmd_restore(int argc, char **argv)
{
  struct restore_opts o;
  int rc = parse_restore_options(argc, argv, &o);
  if (rc != RESTORE_CONTINUE)
    return rc;
  struct appliance_settings set;
  struct catalog_disk cd;
  struct catalog_point p;
  if ((rc = find_point(&o, &set, &cd, &p)))
    return rc;
  const struct store_ops *backend = store_backend(&set);
  struct store_image *img = NULL;
  rpl_err err = backend->image_open(&set, o.disk_id, p.snapshot_id, cd.size_bytes, &img);
  if (err) {
    fprintf(stderr, "replication-appliance restore: point rp-%" PRId64 ": %s\n", p.id,
            rpl_detail(err)[0] ? rpl_detail(err) : rpl_strerror(err));
    return 1;
  }
  struct restore_result r = {.workers = o.workers};
  err = restore_image(&o, img, cd.size_bytes, &r);
  backend->image_close(img);
  if (err) {
    fprintf(stderr, "replication-appliance restore: %s\n", rpl_strerror(err));
    return 1;
  }
  return report(&o, backend->image_kind, &cd, &p, &r);
}
