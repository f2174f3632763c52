/* cbt_state.c - reads and writes the tracker's per-device records (see cbt_state.h) and keeps
 * their resync-event rules: every event renews the UUID, only the exact count acknowledges. */
#include "cbt_state.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uuid/uuid.h>

#include "rpl_log.h"
#include "state_files.h"

#define RECORD_VERSION 1

void cbt_uuid_string(const uint8_t uuid[16], char out[37])
{
  uuid_unparse_lower(uuid, out);
}

size_t cbt_record_format(const struct cbt_record *rec, char *buf, size_t size)
{
  char uuid[37];
  cbt_uuid_string(rec->uuid, uuid);
  int n = snprintf(buf, size,
                   "version %d\nname %s\npath %s\ndev %" PRIu32 ":%" PRIu32 "\nsize %" PRIu64 "\n"
                   "block_shift %" PRIu32 "\nmode %s\narmed %d\nuuid %s\nboot_id %s\nresync_count %" PRIu64 "\n"
                   "resync_acked %" PRIu64 "\nresync_reason %s\nresync_time %" PRIu64 "\n"
                   "program_misses_seen %" PRIu64 "\nlosses_seen %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 "\n"
                   "fallback_generation %" PRIu64 "\ndiskseq %" PRIu64 "\n",
                   RECORD_VERSION, rec->name, rec->path, rec->major, rec->minor, rec->size, rec->block_shift,
                   rec->fallback ? "fallback" : "ebpf", rec->armed ? 1 : 0, uuid, rec->boot_id, rec->resync_count,
                   rec->resync_acked, cbt_resync_reason_name(rec->resync_reason), rec->resync_time,
                   rec->program_misses_seen, rec->losses_seen[0], rec->losses_seen[1], rec->losses_seen[2],
                   rec->losses_seen[3], rec->fallback_generation, rec->diskseq);
  if (n < 0 || (size_t)n >= size)
    return 0;
  if (rec->has_previous_uuid) {
    char previous[37];
    cbt_uuid_string(rec->previous_uuid, previous);
    int m = snprintf(buf + n, size - (size_t)n, "previous_uuid %s\n", previous);
    if (m < 0 || (size_t)m >= size - (size_t)n)
      return 0;
    n += m;
  }
  return (size_t)n;
}

static int parse_u64(const char *s, uint64_t *out)
{
  if (!*s || *s == '-')
    return -1;
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || *end)
    return -1;
  *out = v;
  return 0;
}

static int copy_field(char *dst, size_t size, const char *value)
{
  size_t len = strlen(value);
  if (len == 0 || len >= size)
    return -1;
  memcpy(dst, value, len + 1);
  return 0;
}

static int parse_reason(const char *value, enum cbt_resync_reason *out)
{
  for (int r = 0; r <= CBT_RESYNC_REASON_MAX; r++)
    if (!strcmp(value, cbt_resync_reason_name((enum cbt_resync_reason)r))) {
      *out = (enum cbt_resync_reason)r;
      return 0;
    }
  return -1;
}

rpl_err cbt_record_parse(const char *text, struct cbt_record *rec)
{
  enum { F_VERSION = 1, F_NAME = 2, F_PATH = 4, F_DEV = 8, F_SIZE = 16, F_SHIFT = 32, F_MODE = 64,
         F_UUID = 128, F_BOOT = 256, F_COUNT = 512, F_ACKED = 1024, F_REASON = 2048, F_ALL = 4095 };
  unsigned seen = 0;
  char line[512];

  memset(rec, 0, sizeof *rec);
  while (*text) {
    const char *eol = strchr(text, '\n');
    size_t len = eol ? (size_t)(eol - text) : strlen(text);
    if (len >= sizeof line)
      return RPL_E_CBT_STATE_CORRUPT;
    memcpy(line, text, len);
    line[len] = '\0';
    text += len + (eol ? 1 : 0);
    if (!len)
      continue;
    char *value = strchr(line, ' ');
    if (!value)
      return RPL_E_CBT_STATE_CORRUPT;
    *value++ = '\0';
    const char *key = line;
    uint64_t v = 0;
    int bad = 0;
    if (!strcmp(key, "version")) {
      bad = parse_u64(value, &v) || v != RECORD_VERSION;
      seen |= F_VERSION;
    } else if (!strcmp(key, "name")) {
      bad = copy_field(rec->name, sizeof rec->name, value) || strchr(value, '/') || value[0] == '.';
      seen |= F_NAME;
    } else if (!strcmp(key, "path")) {
      bad = copy_field(rec->path, sizeof rec->path, value);
      seen |= F_PATH;
    } else if (!strcmp(key, "dev")) {
      unsigned major, minor;
      char tail;
      bad = sscanf(value, "%u:%u%c", &major, &minor, &tail) != 2;
      rec->major = major;
      rec->minor = minor;
      seen |= F_DEV;
    } else if (!strcmp(key, "size")) {
      bad = parse_u64(value, &rec->size);
      seen |= F_SIZE;
    } else if (!strcmp(key, "block_shift")) {
      bad = parse_u64(value, &v) || v < 9 || v > 40;
      rec->block_shift = (uint32_t)v;
      seen |= F_SHIFT;
    } else if (!strcmp(key, "mode")) {
      bad = strcmp(value, "ebpf") && strcmp(value, "fallback");
      rec->fallback = !strcmp(value, "fallback");
      seen |= F_MODE;
    } else if (!strcmp(key, "armed")) {
      bad = strcmp(value, "0") && strcmp(value, "1");
      rec->armed = !strcmp(value, "1");
    } else if (!strcmp(key, "uuid")) {
      bad = uuid_parse(value, rec->uuid) != 0;
      seen |= F_UUID;
    } else if (!strcmp(key, "previous_uuid")) {
      bad = uuid_parse(value, rec->previous_uuid) != 0;
      rec->has_previous_uuid = !bad;
    } else if (!strcmp(key, "boot_id")) {
      bad = copy_field(rec->boot_id, sizeof rec->boot_id, value);
      seen |= F_BOOT;
    } else if (!strcmp(key, "resync_count")) {
      bad = parse_u64(value, &rec->resync_count);
      seen |= F_COUNT;
    } else if (!strcmp(key, "resync_acked")) {
      bad = parse_u64(value, &rec->resync_acked);
      seen |= F_ACKED;
    } else if (!strcmp(key, "resync_reason")) {
      bad = parse_reason(value, &rec->resync_reason);
      seen |= F_REASON;
    } else if (!strcmp(key, "resync_time")) {
      bad = parse_u64(value, &rec->resync_time);
    } else if (!strcmp(key, "program_misses_seen")) {
      bad = parse_u64(value, &rec->program_misses_seen);
    } else if (!strcmp(key, "losses_seen")) {
      unsigned long long l[CBT_SLOT_LOSS_FIELDS];
      char tail;
      bad = sscanf(value, "%llu %llu %llu %llu%c", &l[0], &l[1], &l[2], &l[3], &tail) != CBT_SLOT_LOSS_FIELDS;
      for (int i = 0; i < CBT_SLOT_LOSS_FIELDS && !bad; i++)
        rec->losses_seen[i] = l[i];
    } else if (!strcmp(key, "diskseq")) {
      bad = parse_u64(value, &rec->diskseq);
    } else if (!strcmp(key, "fallback_generation")) {
      bad = parse_u64(value, &rec->fallback_generation);
    } /* unknown keys: written by a newer agent, ignored */
    if (bad)
      return RPL_E_CBT_STATE_CORRUPT;
  }
  if (seen != F_ALL || rec->resync_acked > rec->resync_count)
    return RPL_E_CBT_STATE_CORRUPT;
  return RPL_OK;
}

static int record_path(char *out, size_t size, const char *state_dir, const char *name, const char *prefix)
{
  int n = snprintf(out, size, "%s/" STATE_CBT_DIR "/%s%s" STATE_CBT_RECORD_SUFFIX, state_dir, prefix, name);
  return n < 0 || (size_t)n >= size ? -1 : 0;
}

rpl_err cbt_record_load(const char *state_dir, const char *name, struct cbt_record *rec)
{
  char path[4096], text[CBT_RECORD_MAX_BYTES + 1];
  if (record_path(path, sizeof path, state_dir, name, ""))
    return RPL_E_INVALID_ARGUMENT;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT)
      return RPL_E_NOT_FOUND;
    log_err("cannot open %s: %s", path, strerror(errno));
    return errno == EACCES ? RPL_E_PERMISSION : RPL_E_IO;
  }
  size_t used = 0;
  while (used < sizeof text - 1) {
    ssize_t n = read(fd, text + used, sizeof text - 1 - used);
    if (n == 0)
      break;
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      log_err("cannot read %s: %s", path, strerror(errno));
      close(fd);
      return RPL_E_IO;
    }
    used += (size_t)n;
  }
  close(fd);
  if (used >= CBT_RECORD_MAX_BYTES)
    return RPL_E_CBT_STATE_CORRUPT;
  text[used] = '\0';
  rpl_err err = cbt_record_parse(text, rec);
  if (!err && strcmp(rec->name, name))
    err = RPL_E_CBT_STATE_CORRUPT;
  return err;
}

static rpl_err make_dir(const char *path)
{
  if (mkdir(path, 0700) == 0 || errno == EEXIST)
    return RPL_OK;
  log_err("cannot create directory %s: %s", path, strerror(errno));
  return errno == EACCES ? RPL_E_PERMISSION : RPL_E_IO;
}

rpl_err cbt_record_save(const char *state_dir, const struct cbt_record *rec)
{
  char dir[4096], path[4096], tmp[4096], text[CBT_RECORD_MAX_BYTES];
  size_t len = cbt_record_format(rec, text, sizeof text);
  if (!len || snprintf(dir, sizeof dir, "%s/" STATE_CBT_DIR, state_dir) >= (int)sizeof dir ||
      record_path(path, sizeof path, state_dir, rec->name, "") ||
      record_path(tmp, sizeof tmp, state_dir, rec->name, "."))
    return RPL_E_INVALID_ARGUMENT;
  rpl_err err = make_dir(state_dir);
  if (!err)
    err = make_dir(dir);
  if (err)
    return err;

  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    log_err("cannot create %s: %s", tmp, strerror(errno));
    return errno == EACCES ? RPL_E_PERMISSION : RPL_E_IO;
  }
  size_t done = 0;
  while (done < len) {
    ssize_t n = write(fd, text + done, len - done);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    done += (size_t)n;
  }
  if (done != len || fsync(fd) != 0) {
    log_err("cannot write %s: %s", tmp, strerror(errno));
    close(fd);
    unlink(tmp);
    return RPL_E_IO;
  }
  close(fd);
  if (rename(tmp, path) != 0) {
    log_err("cannot rename %s to %s: %s", tmp, path, strerror(errno));
    unlink(tmp);
    return RPL_E_IO;
  }
  int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    if (fsync(dfd) != 0)
      log_warn("fsync of %s failed: %s", dir, strerror(errno));
    close(dfd);
  }
  return RPL_OK;
}

rpl_err cbt_record_remove(const char *state_dir, const char *name)
{
  char path[4096];
  if (record_path(path, sizeof path, state_dir, name, ""))
    return RPL_E_INVALID_ARGUMENT;
  if (unlink(path) != 0 && errno != ENOENT) {
    log_err("cannot remove %s: %s", path, strerror(errno));
    return RPL_E_IO;
  }
  return RPL_OK;
}

static int compare_names(const void *a, const void *b)
{
  return strcmp((const char *)a, (const char *)b);
}

rpl_err cbt_record_list(const char *state_dir, char (*names)[64], size_t max, size_t *count)
{
  char dir[4096];
  *count = 0;
  if (snprintf(dir, sizeof dir, "%s/" STATE_CBT_DIR, state_dir) >= (int)sizeof dir)
    return RPL_E_INVALID_ARGUMENT;
  DIR *d = opendir(dir);
  if (!d)
    return errno == ENOENT ? RPL_OK : RPL_E_IO;
  struct dirent *e;
  const size_t suffix = strlen(STATE_CBT_RECORD_SUFFIX);
  while ((e = readdir(d)) && *count < max) {
    size_t len = strlen(e->d_name);
    if (e->d_name[0] == '.' || len <= suffix || len - suffix >= 64 ||
        strcmp(e->d_name + len - suffix, STATE_CBT_RECORD_SUFFIX))
      continue;
    memcpy(names[*count], e->d_name, len - suffix);
    names[*count][len - suffix] = '\0';
    (*count)++;
  }
  closedir(d);
  qsort(names, *count, sizeof names[0], compare_names);
  return RPL_OK;
}

void cbt_record_raise(struct cbt_record *rec, enum cbt_resync_reason reason, uint64_t unix_time)
{
  rec->resync_count++;
  rec->resync_reason = reason;
  rec->resync_time = unix_time;
  memcpy(rec->previous_uuid, rec->uuid, sizeof rec->uuid);
  rec->has_previous_uuid = true;
  uuid_generate_random(rec->uuid);
}

rpl_err cbt_record_ack(struct cbt_record *rec, uint64_t count)
{
  if (count > rec->resync_count)
    return RPL_E_INVALID_ARGUMENT;
  if (count < rec->resync_count)
    return RPL_E_CBT_ACK_STALE;
  rec->resync_acked = count;
  return RPL_OK;
}
