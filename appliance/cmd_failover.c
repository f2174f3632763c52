/* cmd_failover.c - `replication-appliance failover`: makes a recovery point into a disk Azure
 * imports (a fixed VHD: the image, zeros up to a whole MiB, the footer), as a standalone page blob
 * the storage copies from the point's snapshot (--to-blob) or as a local file (--to), and prints
 * the Azure commands that follow. Works from the catalog and the storage without the daemon, which
 * goes on replicating meanwhile. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uuid/uuid.h>

#include "commands.h"
#include "disk_label.h"
#include "point_image.h"
#include "store.h"
#include "vhd.h"

#define MIB ((uint64_t)1 << 20)

static int usage(void)
{
  fprintf(stderr, "usage: replication-appliance failover --state DIR (--disk ID [--point RP] | --point RP) "
                  "(--to-blob NAME [--container C] | --to FILE.vhd)\n"
                  "  (--point alone: every disk of the point's group, each to NAME-DISK / FILE-DISK.vhd)\n");
  return 2;
}

struct failover_opts {
  struct point_ref ref;
  const char *to_blob, *container, *to;
};

/* parse_options returns this when the command goes on; anything else is its exit status. */
#define FAILOVER_CONTINUE (-1)

static int parse_options(int argc, char **argv, struct failover_opts *o)
{
  static const struct option opts[] = {{"state", required_argument, NULL, 's'},   {"disk", required_argument, NULL, 'd'},
                                       {"point", required_argument, NULL, 'p'},   {"to-blob", required_argument, NULL, 'b'},
                                       {"container", required_argument, NULL, 'c'}, {"to", required_argument, NULL, 't'},
                                       {0, 0, 0, 0}};
  *o = (struct failover_opts){.ref.state = APPLIANCE_DEFAULT_STATE};
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
    case 's': o->ref.state = optarg; break;
    case 'd': o->ref.disk = optarg; break;
    case 'p': o->ref.point = optarg; break;
    case 'b': o->to_blob = optarg; break;
    case 'c': o->container = optarg; break;
    case 't': o->to = optarg; break;
    default: return usage();
    }
  }
  if ((!o->ref.disk && !o->ref.point) || !o->to_blob == !o->to || optind != argc)
    return usage();
  if (o->container && !o->to_blob) {
    fprintf(stderr, "replication-appliance failover: --container goes with --to-blob\n");
    return 2;
  }
  if ((o->to && !*o->to) || (o->to_blob && (!*o->to_blob || strlen(o->to_blob) > 1024))) {
    fprintf(stderr, "replication-appliance failover: the target needs a name (a blob name is 1 to 1024 characters)\n");
    return 2;
  }
  if (!o->ref.disk)
    return FAILOVER_CONTINUE; /* a group: its disks come from the point */
  return point_ref_parse_disk("failover", &o->ref) ? FAILOVER_CONTINUE : 2;
}

/* The Azure VM generation the disk's partition table asks for (2: GPT with an EFI system partition). */
static rpl_err boot_generation(struct store_image *img, uint64_t disk_size, int *gen, char *why, size_t whysz)
{
  struct store_reader *rd;
  rpl_err e = img->ops->reader_open(img, &rd);
  if (e)
    return e;
  size_t len = disk_size < DISK_LABEL_HEAD ? (size_t)disk_size : DISK_LABEL_HEAD;
  uint8_t *head = malloc(DISK_LABEL_HEAD);
  bool hole;
  if (!head)
    e = RPL_E_NOMEM;
  else if (!(e = rd->ops->reader_read(rd, 0, head, len, &hole)))
    *gen = disk_label_generation(head, len, why, whysz);
  free(head);
  rd->ops->reader_close(rd);
  return e;
}

/* The name a disk made from target would get: its last path part without ".vhd". */
static void disk_name_of(const char *target, char *out, size_t outsz)
{
  const char *base = strrchr(target, '/') ? strrchr(target, '/') + 1 : target;
  size_t n = strlen(base);
  if (n > 4 && !strcasecmp(base + n - 4, ".vhd"))
    n -= 4;
  snprintf(out, outsz, "%.*s", (int)n, base);
}

/* Syncs the directory holding path, so that a rename into it is durable. */
static void sync_dir_of(const char *path)
{
  char copy[PATH_MAX];
  snprintf(copy, sizeof copy, "%s", path);
  int dfd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)fsync(dfd);
    close(dfd);
  }
}

/* --to: the image (sparse where it has holes), zeros to vhd_size, the footer; written to a temporary
 * file beside the target, fsync'd, then renamed to it only if nothing has that name. */
static rpl_err write_vhd_file(const char *path, struct store_image *img, uint64_t disk_size, uint64_t vhd_size,
                              const uint8_t *footer, struct point_copy_result *r)
{
  struct stat st;
  if (lstat(path, &st) == 0)
    return rpl_fail(RPL_E_FAILOVER_EXISTS, "%s: %s", path, rpl_strerror(RPL_E_FAILOVER_EXISTS));
  char tmp[PATH_MAX];
  if (snprintf(tmp, sizeof tmp, "%s.partial-XXXXXX", path) >= (int)sizeof tmp)
    return rpl_fail(RPL_E_LIMIT, "%s: the path is too long", path);
  int fd = mkostemp(tmp, O_CLOEXEC);
  if (fd < 0)
    return rpl_fail(RPL_E_IO, "cannot create a file beside %s: %s", path, strerror(errno));
  rpl_err e = RPL_OK;
  if (ftruncate(fd, (off_t)(vhd_size + VHD_FOOTER_SIZE)) != 0)
    e = rpl_fail(RPL_E_IO, "%s: cannot size it: %s", tmp, strerror(errno));
  if (!e && (e = point_image_copy("failover", img, disk_size, fd, false, r)))
    e = rpl_fail(e, "copying the point's image into %s failed", tmp);
  if (!e && pwrite(fd, footer, VHD_FOOTER_SIZE, (off_t)vhd_size) != (ssize_t)VHD_FOOTER_SIZE)
    e = rpl_fail(RPL_E_IO, "%s: cannot write the VHD footer: %s", tmp, strerror(errno));
  if (!e && fsync(fd) != 0)
    e = rpl_fail(RPL_E_IO, "%s: fsync: %s", tmp, strerror(errno));
  close(fd);
  if (!e && renameat2(AT_FDCWD, tmp, AT_FDCWD, path, RENAME_NOREPLACE) != 0) {
    /* A filesystem without RENAME_NOREPLACE: link(2) refuses an existing name as well. */
    if ((errno == EINVAL || errno == ENOSYS) && link(tmp, path) == 0)
      (void)unlink(tmp);
    else if (errno == EEXIST)
      e = rpl_fail(RPL_E_FAILOVER_EXISTS, "%s: %s", path, rpl_strerror(RPL_E_FAILOVER_EXISTS));
    else
      e = rpl_fail(RPL_E_IO, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
  }
  if (e)
    (void)unlink(tmp);
  else
    sync_dir_of(path);
  return e;
}

/* What the failover made, for the report. */
struct failover_result {
  const char *target;                 /* the path, or the blob's URL */
  char account[64];                   /* the storage account ("" for a file) */
  bool blob, server_copy;
  char why_not_server[256];
  int gen;
  char gen_why[96];
  double secs;
};

static void report(const struct failover_opts *o, const struct catalog_disk *cd, const struct catalog_point *p,
                   uint64_t vhd_size, const struct failover_result *fr)
{
  char when[32] = "?", name[128];
  struct tm tm;
  time_t t = (time_t)p->time;
  if (gmtime_r(&t, &tm))
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
  printf("point rp-%" PRId64 " (cycle %" PRIu64 ", %s, taken %s) of disk %s (%s)\n", p->id, p->cycle,
         catalog_point_kind_name(p->kind), when, o->ref.disk, cd->name);
  printf("VHD: fixed, virtual size %" PRIu64 " bytes (%" PRIu64 " MiB) + 512-byte footer", vhd_size, vhd_size / MIB);
  if (vhd_size != cd->size_bytes)
    printf("; the disk is %" PRIu64 " bytes: %" PRIu64 " zero bytes added, since Azure takes whole MiB only",
           cd->size_bytes, vhd_size - cd->size_bytes);
  printf("\nboot: %s: Azure VM generation V%d\n", fr->gen_why, fr->gen);
  if (fr->blob)
    printf("copy: %s, %.2f s\nstorage account: %s\n",
           fr->server_copy ? "made by the storage (server-side copy of the point's snapshot)" : "read and written by this appliance",
           fr->secs, fr->account);
  if (fr->blob && !fr->server_copy && fr->why_not_server[0])
    printf("(the storage refused a server-side copy: %s)\n", fr->why_not_server);
  disk_name_of(fr->target, name, sizeof name);
  printf("next, with Azure's own tools (RG: your resource group):\n");
  if (fr->blob) {
    printf("  az disk create --resource-group RG --name %s --source %s --hyper-v-generation V%d --os-type Linux\n", name,
           fr->target, fr->gen);
  } else {
    printf("  az storage blob upload --account-name ACCOUNT --container-name CONTAINER --name %s.vhd --type page --file %s\n",
           name, fr->target);
    printf("  az disk create --resource-group RG --name %s --source https://ACCOUNT.blob.core.windows.net/CONTAINER/%s.vhd "
           "--hyper-v-generation V%d --os-type Linux\n", name, name, fr->gen);
    printf("  (ACCOUNT, CONTAINER: a storage account and container of yours in the disk's region)\n");
  }
  printf("%s\n", fr->target);
}

static int failover_one(struct failover_opts o);

/* target with "-SUFFIX" before its ".vhd" (or at its end). */
static void member_target(const char *target, const char *suffix, char *out, size_t outsz)
{
  size_t len = strlen(target);
  size_t stem = len > 4 && !strcmp(target + len - 4, ".vhd") ? len - 4 : len;
  snprintf(out, outsz, "%.*s-%s%s", (int)stem, target, suffix, target + stem);
}

/* --point without --disk: every disk of the point's group, each to its own target named after
 * its disk (the disk's device name, else its id). */
static int failover_group(const struct failover_opts *o)
{
  struct point_member *m = calloc(POINT_MAX_MEMBERS, sizeof *m);
  size_t n = 0;
  if (!m || point_members("failover", o->ref.state, o->ref.point, m, &n)) {
    free(m);
    return 1;
  }
  printf("point %s: %zu disk(s) made at one instant\n", o->ref.point, n);
  int rc = 0;
  for (size_t i = 0; i < n && !rc; i++) {
    struct failover_opts one = *o;
    one.ref.disk = m[i].disk;
    one.ref.point = m[i].point;
    if (!point_ref_parse_disk("failover", &one.ref)) {
      rc = 2;
      break;
    }
    char target[PATH_MAX];
    member_target(o->to ? o->to : o->to_blob, m[i].disk, target, sizeof target);
    if (o->to)
      one.to = target;
    else
      one.to_blob = target;
    printf("-- disk %s, point %s\n", m[i].disk, m[i].point);
    rc = failover_one(one);
  }
  free(m);
  return rc;
}

int appliance_cmd_failover(int argc, char **argv)
{
  struct failover_opts o;
  int rc = parse_options(argc, argv, &o);
  if (rc != FAILOVER_CONTINUE)
    return rc;
  return o.ref.disk ? failover_one(o) : failover_group(&o);
}

static int failover_one(struct failover_opts o)
{
  int rc;
  struct appliance_settings set;
  struct catalog_disk cd;
  struct catalog_point p;
  if ((rc = point_find("failover", &o.ref, RPL_E_FAILOVER_NO_IMAGE, &set, &cd, &p)))
    return rc;
  const struct store_ops *backend = store_backend(&set);
  if (o.to_blob && !backend->image_export) {
    fprintf(stderr, "replication-appliance failover: %s\n", rpl_strerror(RPL_E_FAILOVER_BLOB_STORAGE));
    return 1;
  }
  struct store_image *img = NULL;
  rpl_err err = backend->image_open(&set, o.ref.disk_id, p.snapshot_id, cd.size_bytes, &img);
  if (err == RPL_E_RESTORE_NO_IMAGE || err == RPL_E_BLOB_NOT_FOUND)
    err = rpl_fail(RPL_E_FAILOVER_NO_IMAGE, "%s", rpl_strerror(RPL_E_FAILOVER_NO_IMAGE));
  if (err) {
    fprintf(stderr, "replication-appliance failover: point rp-%" PRId64 ": %s\n", p.id,
            rpl_detail(err)[0] ? rpl_detail(err) : rpl_strerror(err));
    return 1;
  }
  struct failover_result fr = {.target = o.to, .blob = o.to_blob != NULL, .gen = 1};
  uint64_t vhd_size = (cd.size_bytes + MIB - 1) / MIB * MIB;
  uint8_t footer[VHD_FOOTER_SIZE], id[16];
  uuid_generate(id); /* the copy is a disk of its own: not the replica's id */
  vhd_footer_make(footer, vhd_size, id, time(NULL));
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  err = boot_generation(img, cd.size_bytes, &fr.gen, fr.gen_why, sizeof fr.gen_why);
  if (err) {
    char why[512];
    snprintf(why, sizeof why, "%s", rpl_detail(err)[0] ? rpl_detail(err) : rpl_strerror(err));
    err = rpl_fail(err, "reading the point's partition table: %s", why);
  }
  struct store_export_result xr;
  if (!err && o.to) {
    struct point_copy_result cr = {.workers = POINT_IMAGE_DEFAULT_WORKERS};
    err = write_vhd_file(o.to, img, cd.size_bytes, vhd_size, footer, &cr);
  } else if (!err) {
    char point[32], cycle[24], when[24];
    snprintf(point, sizeof point, "rp-%" PRId64, p.id);
    snprintf(cycle, sizeof cycle, "%" PRIu64, p.cycle);
    snprintf(when, sizeof when, "%" PRId64, p.time);
    const struct store_meta meta[] = {{"source_disk", o.ref.disk}, {"source_point", point}, {"source_cycle", cycle},
                                      {"point_time", when},        {"made_by", "replication-appliance failover"}};
    struct store_export x = {.container = o.container, .name = o.to_blob, .disk_size = cd.size_bytes,
                             .vhd_size = vhd_size, .footer = footer, .sequence = (int64_t)p.cycle, .meta = meta,
                             .nmeta = sizeof meta / sizeof meta[0],
                             /* the copy through this machine on storage that would copy by itself (tests) */
                             .no_server_copy = getenv("RPL_FAILOVER_NO_SERVER_COPY") != NULL};
    if (!(err = backend->image_export(img, &x, &xr))) {
      fr.target = xr.url;
      fr.server_copy = xr.server_copy;
      snprintf(fr.account, sizeof fr.account, "%s", xr.account);
      snprintf(fr.why_not_server, sizeof fr.why_not_server, "%s", xr.why_not_server);
    }
  }
  backend->image_close(img);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  fr.secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
  if (err) {
    fprintf(stderr, "replication-appliance failover: %s\n", rpl_detail(err)[0] ? rpl_detail(err) : rpl_strerror(err));
    return 1;
  }
  char abs[PATH_MAX];
  if (o.to && realpath(o.to, abs))
    fr.target = abs;
  report(&o, &cd, &p, vhd_size, &fr);
  return 0;
}
