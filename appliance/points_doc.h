/* points_doc.h - the recovery-points document: what GET /api/points answers and what
 * `replication-appliance points` prints (JSON, or a table). Internal header: appliance/ only. */
#ifndef APPLIANCE_POINTS_DOC_H
#define APPLIANCE_POINTS_DOC_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "catalog.h"
#include "json_out.h"

#define POINTS_DOC_MAX_DISKS 1024 /* disks listed in one document */

/* Writes the points of every disk (disk_id NULL) or of one: with j, one document into it (the
 * caller's json_init and json_finish)
 *   {"disks": [{"disk_id", "name", "points": [{"point", "cycle", "time_unix", "kind", "trigger",
 *                                             "freeze_ms", "group", "consistency_group", "group_window_ms",
 *                                             "has_image", "restore_command"}]}]}
 * (points oldest first), else one line per point into f. RPL_E_NOT_FOUND when disk_id names no disk. */
RPL_MUST_CHECK rpl_err points_doc_write(struct catalog *cat, const char *state_dir, const uint8_t *disk_id,
                                        struct json_out *j, FILE *f);

#endif
