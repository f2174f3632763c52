/* file_io.h - whole small files read with a size cap and written atomically (temp file, fsync,
 * rename, directory fsync), for the state files of both programs; positioned reads and writes that
 * retry short transfers. */
#ifndef FILE_IO_H
#define FILE_IO_H

#include <stddef.h>
#include <stdint.h>

#include "rpl_error.h"

/* Reads the whole file at path into a new NUL-terminated buffer that the caller frees.
 * RPL_E_NOT_FOUND when it does not exist, RPL_E_PERMISSION when it may not be read, RPL_E_LIMIT
 * when it is larger than cap bytes (nothing is allocated then), RPL_E_IO on a read error. */
RPL_MUST_CHECK rpl_err file_read_all(const char *path, size_t cap, char **out);

/* Replaces path with data: written to "path.tmp" with the given mode from creation, fsynced,
 * renamed over path, and the directory fsynced, so that a crash leaves the old content or the new
 * one, never a mix. The temp file is removed on failure. */
RPL_MUST_CHECK rpl_err file_write_atomic(const char *path, const void *data, size_t len, unsigned mode);
/* fsync of the folder holding path: a rename or a new name in it is durable only then. RPL_E_IO
 * (with the detail) when it cannot be opened or synced. */
RPL_MUST_CHECK rpl_err file_fsync_parent(const char *path);

/* Reads up to len bytes at off into buf, retrying short reads and EINTR; *got < len only at the end
 * of the file. RPL_E_IO on a read error (no detail: the caller names the file). */
RPL_MUST_CHECK rpl_err file_pread_full(int fd, void *buf, size_t len, uint64_t off, size_t *got);
/* Writes len bytes at off, retrying short writes and EINTR. RPL_E_IO on an error (no detail). */
RPL_MUST_CHECK rpl_err file_pwrite_full(int fd, const void *buf, size_t len, uint64_t off);

#endif
