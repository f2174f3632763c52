/* cmd_restore.c - `replication-appliance restore`: rebuilds the image of a recovery point from the
 * storage (store.h: a blob snapshot, a kept copy of a file image) into a file, or compares it with
 * one, with point_image.c's parallel readers. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "catalog.h"
#include "commands.h"
#include "point_image.h"
#include "settings.h"
#include "store.h"

static int usage(void)
{
  fprintf(stderr, "usage: replication-appliance restore --state DIR --disk ID [--point RP] (--out FILE | --verify FILE) [--parallel N]\n");
  return 2;
}

/* What the command line asked for. */
struct restore_opts {
  struct point_ref ref;
  const char *out, *verify;
  unsigned workers;
};

/* parse_restore_options returns this when the command goes on; anything else is its exit status. */
#define RESTORE_CONTINUE (-1)

static int parse_restore_options(int argc, char **argv, struct restore_opts *o)
{
  static const struct option opts[] = {{"state", required_argument, NULL, 's'}, {"disk", required_argument, NULL, 'd'},
                                       {"point", required_argument, NULL, 'p'}, {"out", required_argument, NULL, 'o'},
                                       {"verify", required_argument, NULL, 'v'}, {"parallel", required_argument, NULL, 'P'},
                                       {0, 0, 0, 0}};
  *o = (struct restore_opts){.ref.state = APPLIANCE_DEFAULT_STATE, .workers = POINT_IMAGE_DEFAULT_WORKERS};
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
    case 's': o->ref.state = optarg; break;
    case 'd': o->ref.disk = optarg; break;
    case 'p': o->ref.point = optarg; break;
    case 'o': o->out = optarg; break;
    case 'v': o->verify = optarg; break;
    case 'P': {
      char *end;
      unsigned long n = strtoul(optarg, &end, 10);
      if (*end || n < 1 || n > POINT_IMAGE_MAX_WORKERS) {
        fprintf(stderr, "replication-appliance restore: --parallel takes the number of chunks read at once, 1 to %d\n",
                POINT_IMAGE_MAX_WORKERS);
        return 2;
      }
      o->workers = (unsigned)n;
      break;
    }
    default: return usage();
    }
  }
  if (!o->ref.disk || !o->out == !o->verify || optind != argc)
    return usage();
  return point_ref_parse_disk("restore", &o->ref) ? RESTORE_CONTINUE : 2;
}

/* What the run found, for the report. */
struct restore_result {
  struct point_copy_result copy;
  double secs;
};

/* Copies (or compares) the point's image; a failed --out leaves no partial file behind. */
static rpl_err restore_image(const struct restore_opts *o, struct store_image *img, uint64_t size, struct restore_result *r)
{
  rpl_err err = RPL_OK;
  int fd = o->verify ? open(o->verify, O_RDONLY | O_CLOEXEC) : open(o->out, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  r->copy.data = 0;
  r->copy.diff = UINT64_MAX;
  if (fd < 0) {
    fprintf(stderr, "replication-appliance restore: cannot open %s: %s\n", o->verify ? o->verify : o->out, strerror(errno));
    err = RPL_E_IO;
  } else if (o->out && ftruncate(fd, (off_t)size) != 0) { /* holes stay sparse: only data is written */
    err = RPL_E_IO;
  }
  if (!err)
    err = point_image_copy("restore", img, size, fd, o->verify != NULL, &r->copy);
  if (!err && o->verify && r->copy.diff == UINT64_MAX) { /* the file must not be longer either */
    off_t end = lseek(fd, 0, SEEK_END);
    if (end >= 0 && (uint64_t)end != size)
      r->copy.diff = size;
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
  if (o->verify && r->copy.diff != UINT64_MAX) {
    fprintf(stderr, "replication-appliance restore: %s differs from point rp-%" PRId64 " (cycle %" PRIu64 ") at byte %" PRIu64 "\n",
            o->verify, p->id, p->cycle, r->copy.diff);
    return 1;
  }
  printf("point rp-%" PRId64 " (cycle %" PRIu64 ", %s, %s %s): %" PRIu64 " MiB disk, %" PRIu64 " MiB data, %.2f s, %.1f MB/s, %u in parallel\n",
         p->id, p->cycle, catalog_point_kind_name(p->kind), from, p->snapshot_id, cd->size_bytes >> 20, r->copy.data >> 20, r->secs,
         r->secs > 0 ? (double)cd->size_bytes / 1e6 / r->secs : 0.0, r->copy.workers);
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
  if ((rc = point_find("restore", &o.ref, RPL_E_RESTORE_NO_IMAGE, &set, &cd, &p)))
    return rc;
  const struct store_ops *backend = store_backend(&set);
  struct store_image *img = NULL;
  rpl_err err = backend->image_open(&set, o.ref.disk_id, p.snapshot_id, cd.size_bytes, &img);
  if (err) {
    fprintf(stderr, "replication-appliance restore: point rp-%" PRId64 ": %s\n", p.id,
            rpl_detail(err)[0] ? rpl_detail(err) : rpl_strerror(err));
    return 1;
  }
  struct restore_result r = {.copy.workers = o.workers};
  err = restore_image(&o, img, cd.size_bytes, &r);
  backend->image_close(img);
  if (err) {
    fprintf(stderr, "replication-appliance restore: %s\n", rpl_strerror(err));
    return 1;
  }
  return report(&o, backend->image_kind, &cd, &p, &r);
}
