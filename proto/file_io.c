/* file_io.c - capped whole-file reads and crash-safe atomic replacement of small state files;
 * positioned reads and writes that retry short transfers. */
#include "file_io.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "rpl_log.h"

static rpl_err open_error(int err)
{
  return err == ENOENT ? RPL_E_NOT_FOUND : err == EACCES || err == EPERM ? RPL_E_PERMISSION : RPL_E_IO;
}

rpl_err file_read_all(const char *path, size_t cap, char **out)
{
  *out = NULL;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return open_error(errno);
  struct stat st;
  if (fstat(fd, &st) != 0) {
    close(fd);
    return RPL_E_IO;
  }
  if ((size_t)st.st_size > cap) {
    close(fd);
    return RPL_E_LIMIT;
  }
  size_t size = (size_t)st.st_size;
  char *buf = malloc(size + 1);
  if (!buf) {
    close(fd);
    return RPL_E_NOMEM;
  }
  size_t got = 0;
  while (got < size) {
    ssize_t n = read(fd, buf + got, size - got);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      log_err("cannot read %s: %s", path, strerror(errno));
      close(fd);
      free(buf);
      return RPL_E_IO;
    }
    if (n == 0)
      break; /* the file shrank since fstat: what is there is what it holds */
    got += (size_t)n;
  }
  close(fd);
  buf[got] = '\0';
  *out = buf;
  return RPL_OK;
}

rpl_err file_write_atomic(const char *path, const void *data, size_t len, unsigned mode)
{
  char tmp[PATH_MAX];
  if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp.XXXXXX", path) >= sizeof tmp)
    return RPL_E_LIMIT;
  /* A new file of a unique name (O_EXCL: never one planted there, nor a symbolic link followed),
   * its mode set before any data is in it. */
  int fd = mkostemp(tmp, O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    log_err("cannot write %s: %s", tmp, strerror(err));
    return open_error(err);
  }
  if (fchmod(fd, mode) != 0) {
    int err = errno;
    close(fd);
    unlink(tmp);
    log_err("cannot write %s: %s", tmp, strerror(err));
    return open_error(err);
  }
  const char *p = data;
  size_t done = 0;
  while (done < len) {
    ssize_t n = write(fd, p + done, len - done);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    done += (size_t)n;
  }
  int ok = done == len && fsync(fd) == 0;
  ok = close(fd) == 0 && ok;
  if (!ok || rename(tmp, path) != 0) {
    log_err("cannot write %s: %s", path, strerror(errno));
    unlink(tmp);
    return RPL_E_IO;
  }
  /* The rename is durable only once the directory is (best effort here, as before: the data is). */
  rpl_err e = file_fsync_parent(path);
  (void)e;
  return RPL_OK;
}

rpl_err file_fsync_parent(const char *path)
{
  char dir[PATH_MAX];
  if ((size_t)snprintf(dir, sizeof dir, "%s", path) >= sizeof dir)
    return RPL_E_LIMIT;
  char *slash = strrchr(dir, '/');
  if (slash)
    *slash = '\0';
  const char *d = !slash ? "." : *dir ? dir : "/";
  int dfd = open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0)
    return rpl_fail(RPL_E_IO, "cannot open the folder %s: %s", d, strerror(errno));
  int r = fsync(dfd);
  int err = errno;
  close(dfd);
  return r ? rpl_fail(RPL_E_IO, "fsync of the folder %s: %s", d, strerror(err)) : RPL_OK;
}

rpl_err file_pread_full(int fd, void *buf, size_t len, uint64_t off, size_t *got)
{
  size_t done = 0;
  while (done < len) {
    ssize_t n = pread(fd, (uint8_t *)buf + done, len - done, (off_t)(off + done));
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return RPL_E_IO;
    if (n == 0)
      break;
    done += (size_t)n;
  }
  *got = done;
  return RPL_OK;
}

rpl_err file_pwrite_full(int fd, const void *buf, size_t len, uint64_t off)
{
  for (size_t done = 0; done < len;) {
    ssize_t n = pwrite(fd, (const uint8_t *)buf + done, len - done, (off_t)(off + done));
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return RPL_E_IO;
    done += (size_t)n;
  }
  return RPL_OK;
}
