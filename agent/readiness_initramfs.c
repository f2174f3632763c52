/* readiness_initramfs.c - which kernel modules an initramfs holds: the distribution's lister where
 * there is one, else our own reading of its cpio parts (early uncompressed ones, then one compressed). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "readiness.h"

#define CPIO_HEADER 110
#define CPIO_NAME_MAX 4096
#define ZERO_RUN_MAX (1u << 20) /* padding between concatenated archives */
#define CACHE_MODULES_MAX 16   /* module names one cache file answers for (the readiness check asks 3) */

extern char **environ;

struct modscan {
  const char *const *modules;
  size_t nmod;
  bool *found;
  size_t entries;
};

/* A listing line or archive name names module m when it holds ".../m.ko" (any compression suffix). */
static void scan_name(struct modscan *s, const char *name)
{
  s->entries++;
  for (size_t i = 0; i < s->nmod; i++) {
    if (s->found[i])
      continue;
    char want[96];
    snprintf(want, sizeof want, "/%s.ko", s->modules[i]);
    if (strstr(name, want) || !strncmp(name, want + 1, strlen(want + 1)))
      s->found[i] = true;
  }
}

/* Runs argv with stdin from in_fd (-1: /dev/null) and returns a FILE reading its stdout. */
static FILE *spawn_reader(char *const argv[], int in_fd, pid_t *pid)
{
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0)
    return NULL;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  if (in_fd >= 0)
    posix_spawn_file_actions_adddup2(&fa, in_fd, 0);
  else
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, p[1], 1);
  posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  int rc = posix_spawnp(pid, argv[0], &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  close(p[1]);
  if (rc != 0) {
    close(p[0]);
    return NULL;
  }
  FILE *f = fdopen(p[0], "r");
  if (!f) {
    close(p[0]);
    waitpid(*pid, NULL, 0);
  }
  return f;
}

/* Closes the reader and reaps the tool; true when it exited 0 (or was only cut short by our close). */
static bool reap(FILE *f, pid_t pid, bool read_all)
{
  fclose(f);
  int st;
  if (waitpid(pid, &st, 0) != pid)
    return false;
  if (WIFEXITED(st))
    return WEXITSTATUS(st) == 0;
  return !read_all && WIFSIGNALED(st) && WTERMSIG(st) == SIGPIPE;
}

static bool skip_bytes(FILE *f, uint64_t n, uint64_t *pos)
{
  char buf[8192];
  while (n) {
    size_t k = n < sizeof buf ? (size_t)n : sizeof buf;
    if (fread(buf, 1, k, f) != k)
      return false;
    n -= k;
    *pos += k;
  }
  return true;
}

static bool hex8(const char *p, uint32_t *v)
{
  char t[9];
  memcpy(t, p, 8);
  t[8] = 0;
  char *end;
  unsigned long x = strtoul(t, &end, 16);
  if (end != t + 8)
    return false;
  *v = (uint32_t)x;
  return true;
}

/* Reads newc/crc cpio archives from f (position *pos) until EOF, skipping the zero padding between
 * concatenated ones. Stops with *more set at the first bytes that are not a cpio header (a compressed
 * part follows). */
static rpl_err read_cpio(FILE *f, uint64_t *pos, struct modscan *s, bool *more)
{
  char *name = malloc(CPIO_NAME_MAX + 4);
  if (!name)
    return RPL_E_NOMEM;
  *more = false;
  rpl_err err = RPL_OK;
  for (;;) {
    int c;
    unsigned zeros = 0;
    while ((c = getc(f)) == 0 && zeros < ZERO_RUN_MAX)
      zeros++;
    *pos += zeros;
    if (c == EOF)
      break;
    ungetc(c, f);
    char h[CPIO_HEADER];
    size_t got = fread(h, 1, 6, f);
    if (got == 6 && memcmp(h, "070701", 6) && memcmp(h, "070702", 6)) {
      /* Not cpio: hand the stream back at this offset (only seekable input gets here usefully). */
      *more = true;
      if (fseeko(f, (off_t)*pos, SEEK_SET) != 0)
        err = rpl_fail(RPL_E_IO, "initramfs: cannot seek back to offset %llu", (unsigned long long)*pos);
      break;
    }
    uint32_t fsize, nsize;
    if (got != 6 || fread(h + 6, 1, CPIO_HEADER - 6, f) != CPIO_HEADER - 6 || !hex8(h + 54, &fsize) ||
        !hex8(h + 94, &nsize) || nsize == 0 || nsize > CPIO_NAME_MAX) {
      err = rpl_fail(RPL_E_IO, "initramfs: damaged cpio header at offset %llu", (unsigned long long)*pos);
      break;
    }
    uint32_t npad = (4 - (CPIO_HEADER + nsize) % 4) % 4;
    if (fread(name, 1, nsize + npad, f) != nsize + npad) {
      err = rpl_fail(RPL_E_IO, "initramfs: cut off in a cpio entry's name at offset %llu", (unsigned long long)*pos);
      break;
    }
    *pos += CPIO_HEADER + nsize + npad;
    name[nsize - 1] = 0;
    if (!strcmp(name, "TRAILER!!!"))
      continue;
    scan_name(s, name);
    if (!skip_bytes(f, fsize + (uint64_t)((4 - fsize % 4) % 4), pos)) {
      err = rpl_fail(RPL_E_IO, "initramfs: cut off in the data of %s", name);
      break;
    }
  }
  free(name);
  return err;
}

/* The decompressor for a compressed part starting with magic m (n bytes), or NULL. */
static const char *decompressor(const unsigned char *m, size_t n, const char **format_opt)
{
  *format_opt = NULL;
  if (n >= 2 && m[0] == 0x1f && (m[1] == 0x8b || m[1] == 0x9e))
    return "gzip";
  if (n >= 4 && !memcmp(m, "\x28\xb5\x2f\xfd", 4))
    return "zstd";
  if (n >= 6 && !memcmp(m, "\xfd" "7zXZ\0", 6))
    return "xz";
  if (n >= 4 && (!memcmp(m, "\x02\x21\x4c\x18", 4) || !memcmp(m, "\x04\x22\x4d\x18", 4)))
    return "lz4";
  if (n >= 3 && !memcmp(m, "BZh", 3))
    return "bzip2";
  if (n >= 3 && m[0] == 0x5d && m[1] == 0 && m[2] == 0) {
    *format_opt = "--format=lzma";
    return "xz";
  }
  return NULL;
}

static rpl_err read_compressed(const char *path, int fd, uint64_t pos, struct modscan *s)
{
  unsigned char m[8];
  ssize_t n = pread(fd, m, sizeof m, (off_t)pos);
  const char *opt;
  const char *tool = n > 0 ? decompressor(m, (size_t)n, &opt) : NULL;
  if (!tool)
    return rpl_fail(RPL_E_UNSUPPORTED, "%s: unknown compression at offset %llu", path, (unsigned long long)pos);
  if (lseek(fd, (off_t)pos, SEEK_SET) < 0)
    return rpl_fail(RPL_E_IO, "%s: cannot seek: %s", path, strerror(errno));
  char *argv[5] = {(char *)tool, (char *)"-dc", NULL, NULL, NULL};
  if (opt)
    argv[2] = (char *)opt;
  pid_t pid;
  FILE *f = spawn_reader(argv, fd, &pid);
  if (!f)
    return rpl_fail(RPL_E_UNSUPPORTED, "%s: cannot run %s to decompress it (install it)", path, tool);
  uint64_t p = 0;
  bool more;
  rpl_err err = read_cpio(f, &p, s, &more);
  bool ok = reap(f, pid, true);
  if (!err && (more || !ok))
    err = rpl_fail(RPL_E_IO, "%s: %s could not decompress it into a cpio archive", path, tool);
  return err;
}

/* The distribution's lister, if installed: Debian/Ubuntu lsinitramfs, RHEL/SUSE (dracut) lsinitrd. */
static rpl_err list_with_tool(const char *path, struct modscan *s, bool *used)
{
  static const char *const tools[] = {"lsinitramfs", "lsinitrd"};
  static const char *const dirs[] = {"/usr/bin", "/usr/sbin", "/bin", "/sbin"};
  *used = false;
  for (size_t t = 0; t < 2; t++) {
    for (size_t d = 0; d < 4; d++) {
      char exe[64];
      snprintf(exe, sizeof exe, "%s/%s", dirs[d], tools[t]);
      if (access(exe, X_OK) != 0)
        continue;
      char *argv[] = {exe, (char *)path, NULL};
      pid_t pid;
      FILE *f = spawn_reader(argv, -1, &pid);
      if (!f)
        continue;
      char line[CPIO_NAME_MAX + 256];
      while (fgets(line, sizeof line, f))
        scan_name(s, line);
      if (reap(f, pid, true) && s->entries > 0) {
        *used = true;
        return RPL_OK;
      }
      s->entries = 0;
    }
  }
  return RPL_OK;
}

rpl_err readiness_initramfs_modules(const char *path, bool use_tools, const char *const *modules, size_t nmod,
                                    bool *found)
{
  struct modscan s = {.modules = modules, .nmod = nmod, .found = found};
  memset(found, 0, nmod * sizeof *found);
  if (access(path, R_OK) != 0)
    return rpl_fail(RPL_E_NOT_FOUND, "%s: %s", path, strerror(errno));
  if (use_tools) {
    bool used;
    rpl_err err = list_with_tool(path, &s, &used);
    if (err || used)
      return err;
    memset(found, 0, nmod * sizeof *found);
  }
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return rpl_fail(RPL_E_IO, "%s: %s", path, strerror(errno));
  FILE *f = fdopen(dup(fd), "r");
  if (!f) {
    close(fd);
    return rpl_fail(RPL_E_IO, "%s: %s", path, strerror(errno));
  }
  uint64_t pos = 0;
  bool more;
  rpl_err err = read_cpio(f, &pos, &s, &more);
  fclose(f);
  if (!err && more)
    err = read_compressed(path, fd, pos, &s);
  close(fd);
  if (!err && s.entries == 0)
    err = rpl_fail(RPL_E_IO, "%s: no files in it (not an initramfs?)", path);
  return err;
}

/* The first line of a cache file: what the answer on its second line depends on. */
static bool cache_key(char *out, size_t size, const char *path, const struct stat *st, bool use_tools,
                      const char *const *modules, size_t nmod)
{
  int n = snprintf(out, size, "initramfs-modules 1 %ju %ju %jd %jd.%09ld %d %s", (uintmax_t)st->st_dev,
                   (uintmax_t)st->st_ino, (intmax_t)st->st_size, (intmax_t)st->st_mtim.tv_sec,
                   st->st_mtim.tv_nsec, use_tools ? 1 : 0, path);
  for (size_t i = 0; i < nmod && n > 0 && (size_t)n < size; i++)
    n += snprintf(out + n, size - (size_t)n, " %s", modules[i]);
  return n > 0 && (size_t)n < size && !strchr(out, '\n');
}

rpl_err readiness_initramfs_modules_cached(const char *cache, const char *path, bool use_tools,
                                           const char *const *modules, size_t nmod, bool *found)
{
  char key[2048], line[2048], bits[CACHE_MODULES_MAX + 2];
  struct stat st;
  if (!cache || nmod > CACHE_MODULES_MAX || stat(path, &st) != 0 ||
      !cache_key(key, sizeof key, path, &st, use_tools, modules, nmod))
    return readiness_initramfs_modules(path, use_tools, modules, nmod, found);
  FILE *f = fopen(cache, "re");
  if (f) {
    bool hit = fgets(line, sizeof line, f) && (line[strcspn(line, "\n")] = 0, !strcmp(line, key)) &&
               fgets(bits, sizeof bits, f) && strlen(bits) == nmod + 1 && bits[nmod] == '\n' &&
               strspn(bits, "01") == nmod;
    fclose(f);
    if (hit) {
      for (size_t i = 0; i < nmod; i++)
        found[i] = bits[i] == '1';
      return RPL_OK;
    }
  }
  rpl_err err = readiness_initramfs_modules(path, use_tools, modules, nmod, found);
  if (err)
    return err;
  char tmp[4096];
  if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", cache) >= sizeof tmp)
    return RPL_OK;
  FILE *w = fopen(tmp, "we");
  if (!w)
    return RPL_OK;
  bool ok = fprintf(w, "%s\n", key) > 0;
  for (size_t i = 0; i < nmod && ok; i++)
    ok = fputc(found[i] ? '1' : '0', w) != EOF;
  ok = ok && fputc('\n', w) != EOF;
  ok = fclose(w) == 0 && ok;
  if (!ok || rename(tmp, cache) != 0)
    unlink(tmp);
  return RPL_OK;
}
