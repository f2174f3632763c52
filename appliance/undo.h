/* undo.h - recovery points of a file replica that cost what changed, on filesystems without reflinks
 * (ext4): point N keeps, in "<image>.undo-N", the content at N of every block first overwritten
 * after it; its image is the live image with the undo files from N on laid over it, the oldest
 * winning. Internal header: appliance/ and tests/ only. */
#ifndef APPLIANCE_UNDO_H
#define APPLIANCE_UNDO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rpl_error.h"

/*
 * What it promises
 *  - Blocks are 4 KiB (UNDO_BLOCK). Each undo file is a header block and groups, appended only:
 *    a group is a 4 KiB header listing its runs (at most UNDO_MAX_RUN blocks each: offset, count,
 *    xxh3-64 of the data) with an xxh3-64 of itself, then the runs' blocks; 4 KiB-aligned, it is
 *    written O_DIRECT (no page cache taken or copied into) while the next group fills; the old
 *    blocks are read into it many at a time (O_DIRECT, through a second descriptor of the image
 *    opened from the one undo_log_note is given), and are in before undo_log_sync returns. Files of
 *    format version 1 (a 64-byte header, then records of one run with a 32-byte header, written
 *    through the page cache) are read, and appended to in their own format.
 *    A block is captured at most once per file: the first time it is about to be overwritten.
 *  - Crash safety: what undo_log_note appended is durable (undo_log_sync) before the image is
 *    written; a torn record or group at the end of a file (a crash in an append) is never read and
 *    is cut off whole before the next append; a failed group write reads the file back, so its
 *    blocks are captured again when they are noted again. A new undo file is durable, its name too, before it is used. So a
 *    kill -9 at any instant loses no point: every point's blocks are in its file or in the image.
 *  - Deleting point K (retention) first appends to the next older undo file P the blocks of K that
 *    P does not hold (their content at P is their content at K, since P did not see them change),
 *    makes that durable, then removes K. A crash in between leaves both, each still right.
 *  - Readers (undo_view) may run in another process while the image and its undo files change:
 *    each read takes the image first and the undo records after it, so a block overwritten in
 *    between is found in the undo record written before the overwrite.
 *  - Files are in this machine's byte order (a replica directory is not moved between machines of
 *    another order; the header's magic would say so).
 */

#define UNDO_BLOCK 4096u
#define UNDO_MAX_RUN 256u /* blocks per record (1 MiB): a record is verified as a whole when read */
#define UNDO_SUFFIX ".undo-"

/* ---- the writer: the newest undo file of an image, the one blocks are captured into ---------- */

struct undo_log;

/* Opens the newest undo file beside image; *out NULL when there is none. Its torn tail is cut off
 * and the blocks it holds are read back; temp files of an unfinished undo_log_start are removed. */
RPL_MUST_CHECK rpl_err undo_log_open(const char *image, struct undo_log **out);
/* A new point at cycle: creates image.undo-CYCLE (durable, its name too) and makes it the newest;
 * the previous one (*log, may be NULL) is closed. On failure *log is unchanged. */
RPL_MUST_CHECK rpl_err undo_log_start(const char *image, uint64_t cycle, uint64_t disk_size, struct undo_log **log);
void undo_log_close(struct undo_log *u);
const char *undo_log_path(const struct undo_log *u);
uint64_t undo_log_cycle(const struct undo_log *u);
/* [offset, offset + length) of the image (opened as image_fd, image_size bytes) is about to be
 * written: the blocks of it not captured yet get their content appended now. */
RPL_MUST_CHECK rpl_err undo_log_note(struct undo_log *u, int image_fd, uint64_t image_size, uint64_t offset,
                                     uint64_t length);
/* What was noted since the last sync becomes durable; must return before the image is written. */
RPL_MUST_CHECK rpl_err undo_log_sync(struct undo_log *u);

/* Retention: deletes point cycle's undo file (its blocks merged into the next older undo file);
 * when it was *newest, *newest becomes that older one (NULL when none). One already gone is no error. */
RPL_MUST_CHECK rpl_err undo_delete(const char *image, uint64_t cycle, struct undo_log **newest);

/* The undo files beside image, oldest first; the caller frees *out. */
struct undo_file {
  uint64_t cycle;
  int64_t created; /* unix time the point was made */
  char path[4200];
};
RPL_MUST_CHECK rpl_err undo_list(const char *image, struct undo_file **out, size_t *count);
/* "<image>.undo-N" into image (its prefix) and *cycle; false for any other name. */
bool undo_parse_path(const char *path, char *image, size_t imagesz, uint64_t *cycle);

/* ---- readers: the image of one point (restore, failover), safe in any number of threads ------ */

struct undo_view;

/* The image of the point at cycle of image: RPL_E_RESTORE_NO_IMAGE when its undo file is gone. */
RPL_MUST_CHECK rpl_err undo_view_open(const char *image, uint64_t cycle, struct undo_view **out);
/* len bytes of the point's image at offset into buf (past the live image's end: zeros). */
RPL_MUST_CHECK rpl_err undo_view_read(struct undo_view *v, uint64_t offset, uint8_t *buf, size_t len);
void undo_view_close(struct undo_view *v);

#endif
