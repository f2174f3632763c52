/* point_image.c - what restore and failover share (point_image.h): the point a command line names,
 * and its image copied or compared by several workers, each with its own reader, taking 4 MiB
 * chunks in ascending order. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uuid/uuid.h>

#include "file_io.h"
#include "identity.h"
#include "point_image.h"

#define CHUNK (4u << 20)

/* What the workers share. */
struct copy_job {
  struct store_image *img;        /* the point's image: each worker opens its own reader */
  uint64_t size;
  int fd;                         /* written, or compared (verify) */
  bool verify;
  atomic_uint_fast64_t next;      /* the next chunk to take */
  atomic_uint_fast64_t data;      /* bytes of the image that hold data (not holes) */
  atomic_uint_fast64_t diff;      /* verify: the lowest differing byte, UINT64_MAX when none */
  atomic_bool stop;
  pthread_mutex_t lock;
  rpl_err err;                    /* the first failure */
  char why[512];
};

/* Records the first failure: "WHAT: DETAIL" (detail "" = the error's message). */
static void job_fail(struct copy_job *job, rpl_err e, const char *what, const char *detail)
{
  pthread_mutex_lock(&job->lock);
  if (!job->err) {
    job->err = e;
    snprintf(job->why, sizeof job->why, "%s: %s", what, detail && detail[0] ? detail : rpl_strerror(e));
  }
  pthread_mutex_unlock(&job->lock);
  atomic_store(&job->stop, true);
}

/* A worker: takes chunks in ascending order until none is left, one failed or verify found a
 * difference (every chunk below it was taken before, so the lowest difference is still found). */
static void *copy_worker(void *arg)
{
  struct copy_job *job = arg;
  struct store_reader *rd = NULL;
  uint8_t *buf = malloc(CHUNK), *cmp = job->verify ? malloc(CHUNK) : NULL;
  rpl_err e = RPL_OK;
  if (!buf || (job->verify && !cmp))
    e = RPL_E_NOMEM;
  else if ((e = job->img->ops->reader_open(job->img, &rd)))
    job_fail(job, e, "cannot open the storage client", rpl_detail(e)); /* this worker's thread: its detail */
  if (e == RPL_E_NOMEM)
    job_fail(job, e, "copy", NULL);
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
      if (!hole && (e = file_pwrite_full(job->fd, buf, len, off)))
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

/* When no thread can be started this one does the work, slower but still done. */
rpl_err point_image_copy(const char *cmd, struct store_image *img, uint64_t size, int fd, bool verify,
                         struct point_copy_result *r)
{
  static struct copy_job job; /* large atomics: not on the stack of a short program anyway */
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
  if (r->workers == 0)
    r->workers = POINT_IMAGE_DEFAULT_WORKERS;
  if (r->workers > POINT_IMAGE_MAX_WORKERS)
    r->workers = POINT_IMAGE_MAX_WORKERS;
  if (r->workers > chunks)
    r->workers = chunks ? (unsigned)chunks : 1;
  pthread_t tids[POINT_IMAGE_MAX_WORKERS];
  unsigned started = 0;
  for (; started < r->workers; started++)
    if (pthread_create(&tids[started], NULL, copy_worker, &job) != 0)
      break;
  if (started == 0)
    copy_worker(&job);
  for (unsigned i = 0; i < started; i++)
    pthread_join(tids[i], NULL);
  rpl_err err = job.err;
  if (err && job.why[0])
    fprintf(stderr, "replication-appliance %s: %s\n", cmd, job.why);
  r->data = atomic_load(&job.data);
  r->diff = atomic_load(&job.diff);
  pthread_mutex_destroy(&job.lock);
  return err;
}

bool point_ref_parse_disk(const char *cmd, struct point_ref *ref)
{
  if (ref->disk && !uuid_parse(ref->disk, ref->disk_id))
    return true;
  fprintf(stderr, "replication-appliance %s: --disk takes the disk's id (a UUID, as status shows it)\n", cmd);
  return false;
}

/* The point named "rp-N" (as points and status show it) or plain N; RPL_E_RESTORE_POINT for garbage. */
static rpl_err get_named_point(struct catalog *cat, const char *name, struct catalog_point *p)
{
  const char *num = strncmp(name, "rp-", 3) ? name : name + 3;
  char *end;
  long long id = strtoll(num, &end, 10);
  return *num && !*end ? catalog_point_get(cat, id, p) : RPL_E_RESTORE_POINT;
}

struct member_of_disk {
  const uint8_t *disk_id;
  struct catalog_point *p;
  bool found;
};

static int member_of_disk_cb(const struct catalog_point *p, void *arg)
{
  struct member_of_disk *m = arg;
  if (memcmp(p->disk_id, m->disk_id, PROTO_ID_SIZE))
    return 0;
  *m->p = *p;
  m->found = true;
  return 1;
}

/* --point takes "rp-N" as status shows it, or plain N; a point of another disk is no point of this
 * one, unless it names a group (its first point: the group point's id) of which the disk is a member:
 * then it is that member's point. */
static rpl_err lookup_point(struct catalog *cat, const struct point_ref *ref, struct catalog_point *p)
{
  rpl_err err;
  if (ref->point) {
    err = get_named_point(cat, ref->point, p);
    if (!err && memcmp(p->disk_id, ref->disk_id, PROTO_ID_SIZE) && p->group_id == p->id) {
      struct member_of_disk m = {.disk_id = ref->disk_id, .p = p};
      err = catalog_point_group_foreach(cat, p->group_id, member_of_disk_cb, &m);
      if (!err && !m.found)
        err = RPL_E_RESTORE_POINT;
    } else if (!err && memcmp(p->disk_id, ref->disk_id, PROTO_ID_SIZE)) {
      err = RPL_E_RESTORE_POINT;
    }
    if (err == RPL_E_NOT_FOUND)
      err = RPL_E_RESTORE_POINT;
  } else {
    err = catalog_point_latest(cat, ref->disk_id, p);
    if (err == RPL_E_NOT_FOUND)
      err = RPL_E_RESTORE_POINT;
  }
  return err;
}

struct members_ctx {
  struct point_member *out;
  size_t n;
};

static int member_cb(const struct catalog_point *p, void *arg)
{
  struct members_ctx *m = arg;
  if (m->n == POINT_MAX_MEMBERS)
    return 1;
  uuid_unparse_lower(p->disk_id, m->out[m->n].disk);
  snprintf(m->out[m->n].point, sizeof m->out[m->n].point, "rp-%" PRId64, p->id);
  m->n++;
  return 0;
}

int point_members(const char *cmd, const char *state, const char *point, struct point_member *out, size_t *n)
{
  *n = 0;
  struct catalog *cat;
  rpl_err err = identity_open_catalog(state, &cat);
  if (err) {
    fprintf(stderr, "replication-appliance %s: cannot open the catalog: %s\n", cmd, rpl_strerror(err));
    return 1;
  }
  struct catalog_point p;
  err = get_named_point(cat, point, &p);
  struct members_ctx m = {.out = out};
  if (!err && p.group_id)
    err = catalog_point_group_foreach(cat, p.group_id, member_cb, &m);
  else if (!err)
    member_cb(&p, &m);
  catalog_close(cat);
  if (err) {
    fprintf(stderr, "replication-appliance %s: point %s: %s\n", cmd, point,
            rpl_strerror(err == RPL_E_NOT_FOUND ? RPL_E_RESTORE_POINT : err));
    return 1;
  }
  *n = m.n;
  return 0;
}

int point_find(const char *cmd, const struct point_ref *ref, rpl_err no_image, struct appliance_settings *set,
               struct catalog_disk *cd, struct catalog_point *p)
{
  rpl_err err = settings_load(ref->state, set);
  if (err) {
    fprintf(stderr, "replication-appliance %s: %s\n", cmd,
            err == RPL_E_NOT_FOUND ? "not initialised: run 'replication-appliance init' first" : rpl_detail(err));
    return 1;
  }
  struct catalog *cat;
  if ((err = identity_open_catalog(ref->state, &cat))) {
    fprintf(stderr, "replication-appliance %s: cannot open the catalog: %s\n", cmd, rpl_strerror(err));
    return 1;
  }
  if ((err = catalog_disk_get(cat, ref->disk_id, cd))) {
    fprintf(stderr, "replication-appliance %s: disk %s: %s\n", cmd, ref->disk,
            rpl_strerror(err == RPL_E_NOT_FOUND ? RPL_E_DISK_UNKNOWN : err));
    catalog_close(cat);
    return 1;
  }
  err = lookup_point(cat, ref, p);
  catalog_close(cat);
  if (!err && !p->has_snapshot)
    err = no_image;
  if (err) {
    fprintf(stderr, "replication-appliance %s: disk %s, point %s: %s\n", cmd, ref->disk, ref->point ? ref->point : "(latest)",
            rpl_strerror(err));
    return 1;
  }
  return 0;
}
