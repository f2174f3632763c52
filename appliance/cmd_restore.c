/* cmd_restore.c - `replication-appliance restore`: rebuilds the image of a recovery point from its
 * blob snapshot (or, for file: storage, its kept copy) into a file, or compares it with one. */
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
#include <uuid/uuid.h>

#include "blob.h"
#include "catalog.h"
#include "commands.h"
#include "identity.h"
#include "settings.h"
#include "uploader.h"

#define CHUNK (4u << 20)

/* Where the point's bytes come from. */
struct source {
  struct blob_client *client; /* blob storage: the snapshot */
  const char *container, *blob, *snapshot;
  struct blob_page_list ranges;
  int fd;                     /* file storage: the kept copy */
};

/* The image's bytes [off, off+len) into buf; *hole when none of it was ever written. */
static rpl_err source_read(struct source *s, uint64_t off, uint8_t *buf, size_t len, bool *hole)
{
  memset(buf, 0, len);
  *hole = true;
  if (s->fd >= 0) {
    ssize_t n = pread(s->fd, buf, len, (off_t)off);
    if (n < 0)
      return RPL_E_IO;
    for (size_t i = 0; i < (size_t)n && *hole; i++)
      *hole = buf[i] == 0;
    return RPL_OK;
  }
  for (size_t i = 0; i < s->ranges.count; i++) {
    uint64_t a = s->ranges.ranges[i].offset, b = a + s->ranges.ranges[i].length;
    if (a < off)
      a = off;
    if (b > off + len)
      b = off + len;
    if (b <= a)
      continue;
    struct blob_reply r;
    rpl_err e = blob_read(s->client, s->container, s->blob, s->snapshot, a, buf + (a - off), (size_t)(b - a), &r);
    if (e)
      return e;
    *hole = false;
  }
  return RPL_OK;
}

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

static int usage(void)
{
  fprintf(stderr, "usage: replication-appliance restore --state DIR --disk ID [--point RP] (--out FILE | --verify FILE)\n");
  return 2;
}

int cmd_restore(int argc, char **argv)
{
  const char *state = APPLIANCE_DEFAULT_STATE, *disk = NULL, *point = NULL, *out = NULL, *verify = NULL;
  static const struct option opts[] = {{"state", required_argument, NULL, 's'}, {"disk", required_argument, NULL, 'd'},
                                       {"point", required_argument, NULL, 'p'}, {"out", required_argument, NULL, 'o'},
                                       {"verify", required_argument, NULL, 'v'}, {0, 0, 0, 0}};
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
    case 's': state = optarg; break;
    case 'd': disk = optarg; break;
    case 'p': point = optarg; break;
    case 'o': out = optarg; break;
    case 'v': verify = optarg; break;
    default: return usage();
    }
  }
  if (!disk || !out == !verify || optind != argc)
    return usage();
  uint8_t disk_id[PROTO_ID_SIZE];
  if (uuid_parse(disk, disk_id)) {
    fprintf(stderr, "replication-appliance restore: --disk takes the disk's id (a UUID, as status shows it)\n");
    return 2;
  }
  struct appliance_settings set;
  char why[1024] = "";
  rpl_err err = settings_load(state, &set, why, sizeof why);
  if (err) {
    fprintf(stderr, "replication-appliance restore: %s\n", err == RPL_E_NOT_FOUND ? "not initialised: run 'replication-appliance init' first" : why);
    return 1;
  }
  struct catalog *cat;
  if ((err = identity_open_catalog(state, &cat))) {
    fprintf(stderr, "replication-appliance restore: cannot open the catalog: %s\n", rpl_strerror(err));
    return 1;
  }
  struct catalog_disk cd;
  struct catalog_point p;
  if ((err = catalog_disk_get(cat, disk_id, &cd))) {
    fprintf(stderr, "replication-appliance restore: disk %s: %s\n", disk, rpl_strerror(err));
    catalog_close(cat);
    return 1;
  }
  if (point) {
    const char *num = strncmp(point, "rp-", 3) ? point : point + 3;
    char *end;
    long long id = strtoll(num, &end, 10);
    err = *num && !*end ? catalog_point_get(cat, id, &p) : RPL_E_RESTORE_POINT;
    if (!err && memcmp(p.disk_id, disk_id, PROTO_ID_SIZE))
      err = RPL_E_RESTORE_POINT;
    if (err == RPL_E_NOT_FOUND)
      err = RPL_E_RESTORE_POINT;
  } else {
    err = catalog_point_latest(cat, disk_id, &p);
    if (err == RPL_E_NOT_FOUND)
      err = RPL_E_RESTORE_POINT;
  }
  catalog_close(cat);
  if (!err && !p.has_snapshot)
    err = RPL_E_RESTORE_NO_IMAGE;
  if (err) {
    fprintf(stderr, "replication-appliance restore: disk %s, point %s: %s\n", disk, point ? point : "(latest)", rpl_strerror(err));
    return 1;
  }

  struct source src = {.fd = -1};
  char blob_name[48];
  struct blob_config cfg;
  if (settings_is_file_storage(&set)) {
    if ((src.fd = open(p.snapshot_id, O_RDONLY | O_CLOEXEC)) < 0) {
      fprintf(stderr, "replication-appliance restore: point rp-%" PRId64 ": %s (%s: %s)\n", p.id,
              rpl_strerror(RPL_E_RESTORE_NO_IMAGE), p.snapshot_id, strerror(errno));
      return 1;
    }
  } else {
    uploader_blob_name(disk_id, blob_name);
    src.container = set.container[0] ? set.container : SETTINGS_DEFAULT_CONTAINER;
    src.blob = blob_name;
    src.snapshot = p.snapshot_id;
    struct blob_reply r;
    if ((err = uploader_config(&set, &cfg, why, sizeof why)) || (err = blob_client_open(&cfg, &src.client, why, sizeof why)) ||
        (err = blob_get_page_ranges(src.client, src.container, src.blob, src.snapshot, 0, cd.size_bytes, &src.ranges, &r))) {
      if (!why[0])
        snprintf(why, sizeof why, "snapshot %s of %s: %s (HTTP %ld %s)", p.snapshot_id, blob_name, rpl_strerror(err),
                 r.status, r.error_code);
      fprintf(stderr, "replication-appliance restore: %s\n", why);
      blob_client_close(src.client);
      return 1;
    }
  }

  int fd = verify ? open(verify, O_RDONLY | O_CLOEXEC) : open(out, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  uint8_t *buf = malloc(CHUNK), *cmp = malloc(CHUNK);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  uint64_t data = 0, diff = UINT64_MAX;
  if (fd < 0) {
    fprintf(stderr, "replication-appliance restore: cannot open %s: %s\n", verify ? verify : out, strerror(errno));
    err = RPL_E_IO;
  } else if (!buf || !cmp) {
    err = RPL_E_NOMEM;
  } else if (out && ftruncate(fd, (off_t)cd.size_bytes) != 0) {
    err = RPL_E_IO;
  }
  for (uint64_t off = 0; !err && off < cd.size_bytes && diff == UINT64_MAX; off += CHUNK) {
    size_t len = cd.size_bytes - off < CHUNK ? (size_t)(cd.size_bytes - off) : CHUNK;
    bool hole;
    if ((err = source_read(&src, off, buf, len, &hole)))
      break;
    if (!hole)
      data += len;
    if (out) {
      if (!hole && (err = pwrite_full(fd, buf, len, off)))
        fprintf(stderr, "replication-appliance restore: cannot write %s: %s\n", out, strerror(errno));
      continue;
    }
    ssize_t n = pread(fd, cmp, len, (off_t)off);
    if (n < 0) {
      err = RPL_E_IO;
      break;
    }
    for (size_t i = 0; i < len && diff == UINT64_MAX; i++)
      if (i >= (size_t)n || buf[i] != cmp[i])
        diff = off + i;
  }
  if (!err && verify && diff == UINT64_MAX) { /* the file must not be longer either */
    off_t end = lseek(fd, 0, SEEK_END);
    if (end >= 0 && (uint64_t)end != cd.size_bytes)
      diff = cd.size_bytes;
  }
  if (!err && out && fdatasync(fd) != 0)
    err = RPL_E_IO;
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
  if (fd >= 0)
    close(fd);
  if (err && out && fd >= 0)
    (void)unlink(out);
  free(buf);
  free(cmp);
  blob_page_list_free(&src.ranges);
  blob_client_close(src.client);
  if (src.fd >= 0)
    close(src.fd);
  if (err) {
    fprintf(stderr, "replication-appliance restore: %s\n", rpl_strerror(err));
    return 1;
  }
  const char *from = settings_is_file_storage(&set) ? "kept image" : "snapshot";
  if (verify && diff != UINT64_MAX) {
    fprintf(stderr, "replication-appliance restore: %s differs from point rp-%" PRId64 " (cycle %" PRIu64 ") at byte %" PRIu64 "\n",
            verify, p.id, p.cycle, diff);
    return 1;
  }
  printf("point rp-%" PRId64 " (cycle %" PRIu64 ", %s, %s %s): %" PRIu64 " MiB disk, %" PRIu64 " MiB data, %.2f s, %.1f MB/s\n",
         p.id, p.cycle, catalog_point_kind_name(p.kind), from, p.snapshot_id, cd.size_bytes >> 20, data >> 20, secs,
         secs > 0 ? (double)cd.size_bytes / 1e6 / secs : 0.0);
  printf("%s %s\n", verify ? "identical:" : "restored to", verify ? verify : out);
  return 0;
}
