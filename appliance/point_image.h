/* point_image.h - what restore and failover share: finding a disk's recovery point in the catalog,
 * and copying (or comparing) its image with parallel readers of the storage interface (store.h).
 * Internal header: appliance/ only. */
#ifndef APPLIANCE_POINT_IMAGE_H
#define APPLIANCE_POINT_IMAGE_H

#include <stdbool.h>
#include <stdint.h>

#include "catalog.h"
#include "proto.h"
#include "settings.h"
#include "store.h"

#define POINT_IMAGE_DEFAULT_WORKERS 8
#define POINT_IMAGE_MAX_WORKERS 64

/* Which point the command line named. */
struct point_ref {
  const char *state, *disk, *point; /* point NULL = the disk's newest */
  uint8_t disk_id[PROTO_ID_SIZE];
};

/* Parses ref->disk into ref->disk_id; false after saying on stderr, as cmd, what --disk takes. */
bool point_ref_parse_disk(const char *cmd, struct point_ref *ref);

/* Reads the settings, the disk and its point (the catalog is closed again before any long copy).
 * no_image: the error for a point whose image is gone (the remedy differs between commands).
 * Returns 0, or 1 after one line on stderr ("replication-appliance CMD: ..."). */
int point_find(const char *cmd, const struct point_ref *ref, rpl_err no_image, struct appliance_settings *set,
               struct catalog_disk *cd, struct catalog_point *p);

/* A point of a group (made with other disks at one instant): its disk and its own id. */
struct point_member {
  char disk[37];
  char point[32];   /* "rp-N" */
};
#define POINT_MAX_MEMBERS 256

/* The points made at the instant of point (its group's members, or the point alone), into out
 * (at most POINT_MAX_MEMBERS). Returns 0, or 1 after one line on stderr as cmd. */
int point_members(const char *cmd, const char *state, const char *point, struct point_member *out, size_t *n);

/* What a copy found. */
struct point_copy_result {
  unsigned workers; /* in: how many readers at most; out: as many as ran */
  uint64_t data;    /* bytes of the image that hold data (not holes) */
  uint64_t diff;    /* verify: the lowest differing byte, UINT64_MAX when none */
};

/* Copies the first size bytes of img into fd (holes are skipped: the file stays sparse where the
 * image has none) or, with verify, compares them with fd. Failures are said on stderr as cmd. */
RPL_MUST_CHECK rpl_err point_image_copy(const char *cmd, struct store_image *img, uint64_t size, int fd, bool verify,
                                        struct point_copy_result *r);

#endif
