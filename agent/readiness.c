/* readiness.c - the boot readiness checks, each a small function reading files under a root directory
 * (this server's /, or a fixture tree), so that each can be proven on trees built by a test. */
#include "readiness.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/utsname.h>
#include <unistd.h>
#include <linux/fs.h>
#include <linux/ioprio.h>

#define MAX_FSTAB 128
#define MAX_DISKS_PER_DEV 8
#define TEXT_CAP (1u << 20)

struct fstab_entry {
  char spec[256], file[256], type[32], opts[256];
};

struct ctx {
  const struct readiness_input *in;
  struct readiness_report *r;
  char cmdline[4096];      /* the default entry's kernel command line */
  char cmdline_from[64];
  char boot_disk_name[64]; /* e.g. "sda" */
  char size_why[RPL_DETAIL_MAX];
  struct fstab_entry fstab[MAX_FSTAB];
  size_t nfstab;
  char prot[READINESS_MAX_PROTECTED][64]; /* protected disks' names */
  size_t nprot;
};

/* ---- helpers -------------------------------------------------------------------------------- */

static void under_root(const struct ctx *c, const char *rel, char *out, size_t size)
{
  const char *root = c->in->root;
  if (!strcmp(root, "/"))
    snprintf(out, size, "%s", rel);
  else
    snprintf(out, size, "%s%s%s", root, rel[0] == '/' ? "" : "/", rel);
}

static bool exists_under(const struct ctx *c, const char *rel)
{
  char p[PATH_MAX];
  under_root(c, rel, p, sizeof p);
  return access(p, F_OK) == 0;
}

/* The file's text (NUL-terminated, at most TEXT_CAP bytes), or NULL; the caller frees it. */
static char *slurp(const char *path)
{
  FILE *f = fopen(path, "re");
  if (!f)
    return NULL;
  char *buf = malloc(TEXT_CAP + 1);
  size_t n = buf ? fread(buf, 1, TEXT_CAP, f) : 0;
  fclose(f);
  if (buf)
    buf[n] = 0;
  return buf;
}

static char *slurp_under(const struct ctx *c, const char *rel)
{
  char p[PATH_MAX];
  under_root(c, rel, p, sizeof p);
  return slurp(p);
}

__attribute__((format(printf, 5, 6))) static void add(struct ctx *c, const char *name, enum readiness_result res,
                                                      const char *remedy, const char *fmt, ...)
{
  struct readiness_report *r = c->r;
  if (r->n == READINESS_MAX_CHECKS)
    return;
  struct readiness_check *k = &r->checks[r->n++];
  k->name = name;
  k->result = res;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(k->detail, sizeof k->detail, fmt, ap);
  va_end(ap);
  snprintf(k->remedy, sizeof k->remedy, "%s", res == READINESS_PASS || !remedy ? "" : remedy);
}

/* Whether a comma-separated mount option list holds opt. */
static bool has_option(const char *opts, const char *opt)
{
  size_t n = strlen(opt);
  for (const char *p = opts; p && *p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL)
    if (!strncmp(p, opt, n) && (p[n] == ',' || p[n] == 0))
      return true;
  return false;
}

/* The value of "key=" in a kernel command line, or "". */
static void cmdline_arg(const char *cmdline, const char *key, char *out, size_t size)
{
  out[0] = 0;
  size_t n = strlen(key);
  for (const char *p = cmdline; (p = strstr(p, key)); p += n) {
    if (p != cmdline && p[-1] != ' ' && p[-1] != '\t')
      continue;
    size_t l = strcspn(p + n, " \t\n");
    snprintf(out, size, "%.*s", (int)l, p + n);
  }
}

/* Device names that the kernel hands out in probe order, so they can differ in Azure. */
static bool unstable_name(const char *spec)
{
  regex_t re;
  if (regcomp(&re, "^/dev/((s|v|xv|h)d[a-z]+|nvme[0-9]+n[0-9]+|mmcblk[0-9]+|dm-[0-9]+)(p?[0-9]+)?$",
              REG_EXTENDED | REG_NOSUB))
    return false;
  bool yes = regexec(&re, spec, 0, NULL, 0) == 0;
  regfree(&re);
  return yes;
}

static bool block_spec(const char *spec)
{
  return !strncmp(spec, "UUID=", 5) || !strncmp(spec, "LABEL=", 6) || !strncmp(spec, "PARTUUID=", 9) ||
         !strncmp(spec, "PARTLABEL=", 10) || !strncmp(spec, "/dev/", 5);
}

/* ---- the default boot entry, fstab, disks ---------------------------------------------------- */

struct grub_entry {
  char kernel[128], initrd[512], cmdline[4096], cfg[32];
};

/* The first menu entry of the grub config: its kernel version, initramfs and command line. (GRUB's
 * default may be another entry, saved in grubenv; the first is the one a fresh grub.cfg boots.) */
static void grub_first_entry(const struct ctx *c, struct grub_entry *g)
{
  static const char *const cfgs[] = {"/boot/grub/grub.cfg", "/boot/grub2/grub.cfg"};
  for (size_t i = 0; i < 2 && !g->kernel[0]; i++) {
    char *text = slurp_under(c, cfgs[i]);
    if (!text)
      continue;
    char *entry = strstr(text, "menuentry ");
    char *save;
    for (char *line = entry ? strtok_r(entry, "\n", &save) : NULL; line; line = strtok_r(NULL, "\n", &save)) {
      char kw[32], path[512];
      int off = 0;
      if (sscanf(line, " %31s %511s %n", kw, path, &off) < 2)
        continue;
      if (!g->kernel[0] && (!strcmp(kw, "linux") || !strcmp(kw, "linuxefi") || !strcmp(kw, "linux16"))) {
        const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
        snprintf(g->kernel, sizeof g->kernel, "%.127s", strncmp(base, "vmlinuz-", 8) ? base : base + 8);
        snprintf(g->cmdline, sizeof g->cmdline, "%s", off ? line + off : "");
        snprintf(g->cfg, sizeof g->cfg, "%s", cfgs[i]);
      } else if (g->kernel[0] && !strncmp(kw, "initrd", 6)) {
        /* "initrd /intel-ucode.img /initramfs.img": the last one is the distribution's. */
        char *last = strrchr(line, ' ');
        const char *p = last ? last + 1 : path;
        const char *base = strrchr(p, '/') ? strrchr(p, '/') + 1 : p;
        snprintf(g->initrd, sizeof g->initrd, "/boot/%.400s", base);
        break;
      }
    }
    free(text);
  }
}

static void kernel_newest(struct ctx *c)
{
  char boot[PATH_MAX];
  under_root(c, "/boot", boot, sizeof boot);
  DIR *d = opendir(boot);
  if (!d)
    return;
  struct dirent *e;
  char best[128] = "";
  while ((e = readdir(d)))
    if (!strncmp(e->d_name, "vmlinuz-", 8) && !strstr(e->d_name, "rescue") && strlen(e->d_name + 8) < sizeof best &&
        (!best[0] || strverscmp(e->d_name + 8, best) > 0))
      snprintf(best, sizeof best, "%s", e->d_name + 8);
  closedir(d);
  if (best[0]) {
    snprintf(c->r->kernel, sizeof c->r->kernel, "%s", best);
    snprintf(c->r->kernel_from, sizeof c->r->kernel_from, "newest in /boot");
  }
}

/* The default boot entry: the running kernel (live), else grub's first entry, else the newest kernel
 * in /boot; its initramfs by the names Debian, RHEL and SUSE give it. */
static void find_boot_entry(struct ctx *c)
{
  struct readiness_report *r = c->r;
  struct grub_entry *g = calloc(1, sizeof *g);
  if (!g)
    return;
  grub_first_entry(c, g);
  struct utsname u;
  if (c->in->live && uname(&u) == 0) {
    char rel[400];
    snprintf(rel, sizeof rel, "/boot/vmlinuz-%s", u.release);
    if (exists_under(c, rel)) {
      snprintf(r->kernel, sizeof r->kernel, "%s", u.release);
      snprintf(r->kernel_from, sizeof r->kernel_from, "running kernel");
    }
  }
  if (!r->kernel[0] && g->kernel[0]) {
    snprintf(r->kernel, sizeof r->kernel, "%s", g->kernel);
    snprintf(r->kernel_from, sizeof r->kernel_from, "first entry of %s", g->cfg);
  }
  if (!r->kernel[0])
    kernel_newest(c);
  /* The command line the disk boots with in Azure is grub's; without one, the running system's. */
  if (g->kernel[0]) {
    snprintf(c->cmdline, sizeof c->cmdline, "%s", g->cmdline);
    snprintf(c->cmdline_from, sizeof c->cmdline_from, "%s", g->cfg);
  } else {
    char *t = slurp_under(c, "/proc/cmdline");
    if (t) {
      snprintf(c->cmdline, sizeof c->cmdline, "%s", t);
      snprintf(c->cmdline_from, sizeof c->cmdline_from, "/proc/cmdline");
      free(t);
    }
  }
  bool grub_initrd = g->initrd[0] && !strcmp(g->kernel, r->kernel) && exists_under(c, g->initrd);
  if (grub_initrd)
    under_root(c, g->initrd, r->initramfs, sizeof r->initramfs);
  free(g);
  if (grub_initrd)
    return;
  static const char *const forms[][2] = {{"initrd.img-", ""}, {"initramfs-", ".img"}, {"initrd-", ""},
                                         {"initramfs-", ""}};
  for (size_t i = 0; i < 4 && r->kernel[0]; i++) {
    char rel[400];
    snprintf(rel, sizeof rel, "/boot/%s%s%s", forms[i][0], r->kernel, forms[i][1]);
    if (exists_under(c, rel)) {
      under_root(c, rel, r->initramfs, sizeof r->initramfs);
      return;
    }
  }
}

static void load_fstab(struct ctx *c)
{
  char *text = slurp_under(c, "/etc/fstab");
  if (!text)
    return;
  char *save;
  for (char *line = strtok_r(text, "\n", &save); line && c->nfstab < MAX_FSTAB; line = strtok_r(NULL, "\n", &save)) {
    struct fstab_entry *e = &c->fstab[c->nfstab];
    line += strspn(line, " \t");
    if (*line == '#' || !*line)
      continue;
    if (sscanf(line, "%255s %255s %31s %255s", e->spec, e->file, e->type, e->opts) < 3)
      continue;
    if (!e->opts[0])
      snprintf(e->opts, sizeof e->opts, "defaults");
    c->nfstab++;
  }
  free(text);
}

static const struct fstab_entry *fstab_root(const struct ctx *c)
{
  for (size_t i = 0; i < c->nfstab; i++)
    if (!strcmp(c->fstab[i].file, "/"))
      return &c->fstab[i];
  return NULL;
}

/* The kernel name ("sdb1", "dm-0") of the device an fstab spec names, or false. */
static bool resolve_spec(const struct ctx *c, const char *spec, char *name, size_t size)
{
  static const char *const keys[][2] = {{"UUID=", "by-uuid"}, {"LABEL=", "by-label"}, {"PARTUUID=", "by-partuuid"},
                                        {"PARTLABEL=", "by-partlabel"}};
  char rel[512];
  snprintf(rel, sizeof rel, "%s", spec);
  for (size_t i = 0; i < 4; i++)
    if (!strncmp(spec, keys[i][0], strlen(keys[i][0])))
      snprintf(rel, sizeof rel, "/dev/disk/%s/%s", keys[i][1], spec + strlen(keys[i][0]));
  if (rel[0] != '/')
    return false;
  char p[PATH_MAX], real[PATH_MAX];
  under_root(c, rel, p, sizeof p);
  if (!realpath(p, real))
    return false;
  snprintf(name, size, "%s", strrchr(real, '/') + 1);
  return true;
}

/* Without sysfs (a fixture, an offline tree): sda2 -> sda, nvme0n1p2 -> nvme0n1, vda1 -> vda. */
static void strip_partition(char *name)
{
  size_t n = strlen(name);
  size_t d = n;
  while (d > 0 && name[d - 1] >= '0' && name[d - 1] <= '9')
    d--;
  if (d == n || d == 0)
    return;
  if (name[d - 1] == 'p' && d >= 2 && name[d - 2] >= '0' && name[d - 2] <= '9')
    name[d - 1] = 0;
  else if (!strncmp(name, "sd", 2) || !strncmp(name, "vd", 2) || !strncmp(name, "xvd", 3) || !strncmp(name, "hd", 2))
    name[d] = 0;
}

/* The whole disks under a device: itself, its parent disk if a partition, the disks under a
 * device-mapper or md device (sysfs slaves), recursively. */
static size_t whole_disks(const struct ctx *c, const char *name, char out[][64], size_t max, int depth)
{
  char rel[400], p[PATH_MAX];
  snprintf(rel, sizeof rel, "/sys/class/block/%s", name);
  under_root(c, rel, p, sizeof p);
  if (access(p, F_OK) != 0 || depth > 4) {
    if (max == 0)
      return 0;
    snprintf(out[0], 64, "%s", name);
    strip_partition(out[0]);
    return 1;
  }
  char sub[PATH_MAX + 16];
  snprintf(sub, sizeof sub, "%s/partition", p);
  if (access(sub, F_OK) == 0) {
    char real[PATH_MAX];
    if (!realpath(p, real) || max == 0)
      return 0;
    *strrchr(real, '/') = 0;
    snprintf(out[0], 64, "%s", strrchr(real, '/') + 1);
    return 1;
  }
  snprintf(sub, sizeof sub, "%s/slaves", p);
  size_t n = 0;
  DIR *d = opendir(sub);
  if (d) {
    struct dirent *e;
    while ((e = readdir(d)) && n < max)
      if (e->d_name[0] != '.')
        n += whole_disks(c, e->d_name, out + n, max - n, depth + 1);
    closedir(d);
  }
  if (n == 0 && max > 0) {
    snprintf(out[0], 64, "%s", name);
    n = 1;
  }
  return n;
}

static void find_boot_disk(struct ctx *c)
{
  struct readiness_report *r = c->r;
  char name[64] = "", disks[MAX_DISKS_PER_DEV][64];
  const struct fstab_entry *e = fstab_root(c);
  if (!(e && resolve_spec(c, e->spec, name, sizeof name)) && c->in->live) {
    struct stat st;
    char p[64], real[PATH_MAX];
    if (stat("/", &st) == 0) {
      snprintf(p, sizeof p, "/sys/dev/block/%u:%u", major(st.st_dev), minor(st.st_dev));
      if (realpath(p, real))
        snprintf(name, sizeof name, "%s", strrchr(real, '/') + 1);
    }
  }
  if (!name[0] || whole_disks(c, name, disks, MAX_DISKS_PER_DEV, 0) == 0)
    return;
  snprintf(c->boot_disk_name, sizeof c->boot_disk_name, "%s", disks[0]);
  char rel[128];
  snprintf(rel, sizeof rel, "/dev/%s", disks[0]);
  under_root(c, rel, r->boot_disk, sizeof r->boot_disk);
  rpl_err err = readiness_disk_size(r->boot_disk, &r->boot_disk_size);
  if (err) {
    r->boot_disk_size = 0;
    snprintf(c->size_why, sizeof c->size_why, "%s", rpl_detail(err));
  }
}

static void find_protected(struct ctx *c)
{
  for (size_t i = 0; i < c->in->nprotected && c->nprot < READINESS_MAX_PROTECTED; i++) {
    const char *dev = c->in->protected_devs[i];
    char p[PATH_MAX], real[PATH_MAX];
    under_root(c, dev, p, sizeof p);
    const char *base = realpath(p, real) ? real : dev;
    snprintf(c->prot[c->nprot++], 64, "%.63s", strrchr(base, '/') ? strrchr(base, '/') + 1 : base);
  }
}

static bool is_protected(const struct ctx *c, const char *disk)
{
  for (size_t i = 0; i < c->nprot; i++)
    if (!strcmp(c->prot[i], disk))
      return true;
  return false;
}

rpl_err readiness_disk_size(const char *path, uint64_t *size)
{
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return rpl_fail(errno == EACCES ? RPL_E_PERMISSION : RPL_E_IO, "%s: %s", path, strerror(errno));
  struct stat st;
  rpl_err err = RPL_OK;
  if (fstat(fd, &st) != 0)
    err = rpl_fail(RPL_E_IO, "%s: %s", path, strerror(errno));
  else if (S_ISBLK(st.st_mode)) {
    if (ioctl(fd, BLKGETSIZE64, size) != 0)
      err = rpl_fail(RPL_E_IO, "%s: cannot read its size: %s", path, strerror(errno));
  } else if (S_ISREG(st.st_mode))
    *size = (uint64_t)st.st_size;
  else
    err = rpl_fail(RPL_E_INVALID_ARGUMENT, "%s: neither a block device nor an image file", path);
  close(fd);
  return err;
}

/* ---- the checks ----------------------------------------------------------------------------- */

static bool kernel_has_builtin(const struct ctx *c, const char *mod, const char *config_sym)
{
  char rel[512], want[96];
  snprintf(rel, sizeof rel, "/boot/config-%s", c->r->kernel);
  char *text = slurp_under(c, rel);
  snprintf(want, sizeof want, "\n%s=y\n", config_sym);
  bool yes = text && (strstr(text, want) || !strncmp(text, want + 1, strlen(want + 1)));
  free(text);
  static const char *const dirs[] = {"/lib/modules", "/usr/lib/modules"};
  snprintf(want, sizeof want, "/%s.ko", mod);
  for (size_t i = 0; i < 2 && !yes; i++) {
    snprintf(rel, sizeof rel, "%s/%s/modules.builtin", dirs[i], c->r->kernel);
    text = slurp_under(c, rel);
    yes = text && strstr(text, want);
    free(text);
  }
  return yes;
}

static bool kernel_has_module(const struct ctx *c, const char *mod)
{
  static const char *const dirs[] = {"/lib/modules", "/usr/lib/modules"};
  char rel[512], want[96];
  snprintf(want, sizeof want, "/%s.ko", mod);
  bool yes = false;
  for (size_t i = 0; i < 2 && !yes; i++) {
    snprintf(rel, sizeof rel, "%s/%s/modules.dep", dirs[i], c->r->kernel);
    char *text = slurp_under(c, rel);
    yes = text && strstr(text, want);
    free(text);
  }
  return yes;
}

#define HV_REMEDY                                                                                              \
  "Debian/Ubuntu: add hv_vmbus, hv_storvsc, hv_netvsc to /etc/initramfs-tools/modules, run update-initramfs -u; " \
  "RHEL/SUSE: add_drivers+=\" hv_vmbus hv_storvsc hv_netvsc \" in /etc/dracut.conf.d/azure.conf, run dracut -f"

static void check_hv_drivers(struct ctx *c)
{
  static const char *const mods[] = {"hv_vmbus", "hv_storvsc", "hv_netvsc"};
  static const char *const syms[] = {"CONFIG_HYPERV", "CONFIG_HYPERV_STORAGE", "CONFIG_HYPERV_NET"};
  const struct readiness_report *r = c->r;
  if (!r->kernel[0]) {
    for (size_t i = 0; i < 3; i++)
      add(c, mods[i], READINESS_FAIL, "install a kernel package, or check that /boot is mounted",
          "no kernel found in /boot");
    return;
  }
  bool found[3] = {false, false, false};
  char why[RPL_DETAIL_MAX] = "";
  if (!r->initramfs[0])
    snprintf(why, sizeof why, "no initramfs for kernel %s in /boot", r->kernel);
  else {
    rpl_err err = readiness_initramfs_modules_cached(c->in->initramfs_cache, r->initramfs, c->in->live, mods, 3, found);
    if (err)
      rpl_describe(err, why, sizeof why);
  }
  for (size_t i = 0; i < 3; i++) {
    if (kernel_has_builtin(c, mods[i], syms[i]))
      add(c, mods[i], READINESS_PASS, NULL, "built into kernel %s (%s)", r->kernel, r->kernel_from);
    else if (found[i])
      add(c, mods[i], READINESS_PASS, NULL, "in the initramfs %s of kernel %s (%s)", r->initramfs, r->kernel,
          r->kernel_from);
    else if (i == 2 && kernel_has_module(c, mods[i]))
      /* The network driver is loaded from the root filesystem once it is mounted. */
      add(c, mods[i], READINESS_PASS, NULL, "a module of kernel %s, loaded after the root filesystem is mounted",
          r->kernel);
    else if (why[0])
      add(c, mods[i], READINESS_FAIL, HV_REMEDY, "not built into kernel %s, and %s", r->kernel, why);
    else
      add(c, mods[i], READINESS_FAIL, HV_REMEDY, "neither built into kernel %s nor in its initramfs %s: %s",
          r->kernel, r->initramfs, i == 2 ? "no network in Azure" : "the root disk is not found at boot in Azure");
  }
}

#define NAME_REMEDY "name it by UUID=, LABEL= or PARTUUID= (blkid shows them) or by an LVM /dev/mapper name"

static void check_root_device(struct ctx *c)
{
  char root[256];
  cmdline_arg(c->cmdline, "root=", root, sizeof root);
  const struct fstab_entry *e = fstab_root(c);
  if (root[0] && unstable_name(root))
    add(c, "root_device", READINESS_FAIL,
        "set root=UUID=... (Debian: GRUB_DISABLE_LINUX_UUID unset in /etc/default/grub, then update-grub)",
        "the kernel command line (%s) names the root by device name: root=%s", c->cmdline_from, root);
  else if (e && unstable_name(e->spec))
    add(c, "root_device", READINESS_FAIL, "in /etc/fstab, " NAME_REMEDY, "/etc/fstab mounts / from %s", e->spec);
  else if (!root[0] && !e)
    add(c, "root_device", READINESS_WARN, "mount / by UUID= in /etc/fstab",
        "neither the kernel command line nor /etc/fstab says how the root filesystem is found");
  else
    add(c, "root_device", READINESS_PASS, NULL, "root=%s, / in fstab from %s", root[0] ? root : "(not given)",
        e ? e->spec : "(no entry)");
}

static void check_fstab_names(struct ctx *c)
{
  char bad[256] = "";
  size_t n = 0, pos = 0;
  for (size_t i = 0; i < c->nfstab; i++) {
    const struct fstab_entry *e = &c->fstab[i];
    if (!strcmp(e->file, "/") || !unstable_name(e->spec))
      continue;
    n++;
    if (pos < sizeof bad)
      pos += (size_t)snprintf(bad + pos, sizeof bad - pos, "%s%s on %s", pos ? ", " : "", e->spec, e->file);
  }
  if (n)
    add(c, "fstab_names", READINESS_FAIL, "in /etc/fstab, " NAME_REMEDY,
        "%zu entr%s by device name, which can differ in Azure: %s", n, n == 1 ? "y" : "ies", bad);
  else
    add(c, "fstab_names", READINESS_PASS, NULL, "%zu entries, none by a kernel device name", c->nfstab);
}

/* An fstab entry on a disk that is neither protected nor the boot disk is missing in Azure: without
 * nofail, systemd stops the boot in emergency mode waiting for it. */
static void check_fstab_nofail(struct ctx *c)
{
  char bad[256] = "";
  size_t n = 0, pos = 0;
  for (size_t i = 0; i < c->nfstab; i++) {
    const struct fstab_entry *e = &c->fstab[i];
    if (!strcmp(e->file, "/") || !block_spec(e->spec) || has_option(e->opts, "nofail") || has_option(e->opts, "noauto"))
      continue;
    char name[64], disks[MAX_DISKS_PER_DEV][64];
    size_t nd = resolve_spec(c, e->spec, name, sizeof name) ? whole_disks(c, name, disks, MAX_DISKS_PER_DEV, 0) : 0;
    bool present = nd > 0;
    for (size_t d = 0; d < nd; d++)
      present = present && (is_protected(c, disks[d]) || !strcmp(disks[d], c->boot_disk_name));
    if (present)
      continue;
    n++;
    if (pos < sizeof bad)
      pos += (size_t)snprintf(bad + pos, sizeof bad - pos, "%s%s (%s%s)", pos ? ", " : "", e->file,
                              nd ? "disk " : "not found here", nd ? disks[0] : "");
  }
  if (n)
    add(c, "fstab_nofail", READINESS_FAIL, "protect those disks too, or add nofail to their options in /etc/fstab",
        "%zu entr%s on disks not protected, without nofail (the boot stops waiting for them): %s", n,
        n == 1 ? "y" : "ies", bad);
  else
    add(c, "fstab_nofail", READINESS_PASS, NULL, "every entry is on the boot disk, a protected disk, or has nofail");
}

/* "gpt", "mbr", "none", or "unknown" with why (errno's text). */
static const char *partition_table(const char *disk, char *why, size_t size)
{
  int fd = open(disk, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    snprintf(why, size, "%s", strerror(errno));
    return "unknown";
  }
  unsigned char b[4608];
  ssize_t n = pread(fd, b, sizeof b, 0);
  if (n < 0)
    snprintf(why, size, "%s", strerror(errno));
  close(fd);
  if (n < 1024)
    return n >= 0 ? "none" : "unknown";
  if (!memcmp(b + 512, "EFI PART", 8) || (n >= 4104 && !memcmp(b + 4096, "EFI PART", 8)))
    return "gpt";
  if (b[510] == 0x55 && b[511] == 0xaa) {
    for (int i = 0; i < 4; i++)
      if (b[446 + 16 * i + 4] != 0)
        return "mbr";
  }
  return "none";
}

static void check_boot_mode(struct ctx *c)
{
  struct readiness_report *r = c->r;
  r->firmware = exists_under(c, "/sys/firmware/efi") ? "uefi" : "bios";
  bool uefi = !strcmp(r->firmware, "uefi");
  if (!r->boot_disk[0]) {
    r->partition_table = "unknown";
    add(c, "boot_mode", READINESS_FAIL, "mount / from a disk (by UUID= in /etc/fstab)",
        "%s; cannot find the disk holding the root filesystem", uefi ? "UEFI" : "BIOS");
    return;
  }
  char why[128] = "";
  r->partition_table = partition_table(r->boot_disk, why, sizeof why);
  bool gpt = !strcmp(r->partition_table, "gpt"), mbr = !strcmp(r->partition_table, "mbr");
  if (uefi && gpt) {
    r->generation = 2;
    add(c, "boot_mode", READINESS_PASS, NULL, "UEFI, GPT on %s: Azure generation 2", r->boot_disk);
  } else if (!uefi && mbr) {
    r->generation = 1;
    add(c, "boot_mode", READINESS_PASS, NULL, "BIOS, MBR on %s: Azure generation 1", r->boot_disk);
  } else if (!uefi && gpt) {
    r->generation = 1;
    add(c, "boot_mode", READINESS_WARN, "keep GRUB's BIOS boot partition (type ef02) on the disk, or boot by UEFI",
        "BIOS boot from GPT on %s: Azure generation 1, booting only through GRUB's BIOS boot partition", r->boot_disk);
  } else if (uefi && mbr) {
    r->generation = 2;
    add(c, "boot_mode", READINESS_WARN, "convert the boot disk to GPT (sgdisk -g) with an EFI system partition",
        "UEFI boot from MBR on %s: Azure generation 2 expects GPT", r->boot_disk);
  } else if (why[0]) {
    add(c, "boot_mode", READINESS_FAIL, "run the check as root, where the boot disk can be read",
        "%s; cannot read the partition table of %s: %s", uefi ? "UEFI" : "BIOS", r->boot_disk, why);
  } else {
    add(c, "boot_mode", READINESS_FAIL, "boot from a partitioned disk with a boot loader (GRUB) on it",
        "%s; %s has no partition table: Azure boots a disk by its partition table and boot loader",
        uefi ? "UEFI" : "BIOS", r->boot_disk);
  }
}

static void check_sizes(struct ctx *c)
{
  const struct readiness_report *r = c->r;
  double tib = (double)r->boot_disk_size / (double)(1ull << 40);
  if (!r->boot_disk[0] || r->boot_disk_size == 0)
    add(c, "boot_disk_size", READINESS_WARN, "run the check as root, where the boot disk can be read",
        "the boot disk's size is unknown: %s", c->size_why[0] ? c->size_why : "no boot disk found");
  else if (r->boot_disk_size > READINESS_OS_DISK_MAX)
    add(c, "boot_disk_size", READINESS_FAIL, "move data off the boot disk and shrink it, or keep it as a data disk",
        "%s is %.2f TiB, over the 4 TiB of an Azure OS disk", r->boot_disk, tib);
  else if (!strcmp(r->partition_table, "mbr") && r->boot_disk_size > READINESS_MBR_MAX)
    add(c, "boot_disk_size", READINESS_WARN, "convert the boot disk to GPT to use more than 2 TiB",
        "%s is %.2f TiB, and its MBR addresses only the first 2 TiB", r->boot_disk, tib);
  else
    add(c, "boot_disk_size", READINESS_PASS, NULL, "%s is %" PRIu64 " MiB (an Azure OS disk holds 4 TiB)",
        r->boot_disk, r->boot_disk_size >> 20);

  char bad[256] = "";
  size_t n = 0, pos = 0;
  for (size_t i = 0; i < c->in->nprotected; i++) {
    uint64_t size;
    char p[PATH_MAX];
    under_root(c, c->in->protected_devs[i], p, sizeof p);
    if (readiness_disk_size(p, &size) || size <= READINESS_PROTECTED_MAX)
      continue;
    n++;
    if (pos < sizeof bad)
      pos += (size_t)snprintf(bad + pos, sizeof bad - pos, "%s%s (%.2f TiB)", pos ? ", " : "",
                              c->in->protected_devs[i], (double)size / (double)(1ull << 40));
  }
  if (n)
    add(c, "protected_disk_size", READINESS_FAIL, "split the data over disks of at most 8 TiB (LVM can span them)",
        "over the 8 TiB of an Azure page blob: %s", bad);
  else
    add(c, "protected_disk_size", READINESS_PASS, NULL, "%zu protected disk%s, each at most 8 TiB", c->in->nprotected,
        c->in->nprotected == 1 ? "" : "s");
  if (c->boot_disk_name[0] && !is_protected(c, c->boot_disk_name))
    add(c, "boot_disk_protected", READINESS_WARN, "mobility-agent protect the boot disk",
        "the boot disk %s is not protected: a failover of this server needs it", r->boot_disk);
  else if (c->boot_disk_name[0])
    add(c, "boot_disk_protected", READINESS_PASS, NULL, "the boot disk %s is protected", r->boot_disk);
}

static void check_guest_agent(struct ctx *c)
{
  static const char *const paths[] = {
    "/usr/sbin/waagent", "/usr/bin/waagent", "/lib/systemd/system/walinuxagent.service",
    "/usr/lib/systemd/system/waagent.service", "/usr/bin/cloud-init", "/etc/cloud/cloud.cfg",
  };
  for (size_t i = 0; i < sizeof paths / sizeof *paths; i++)
    if (exists_under(c, paths[i])) {
      add(c, "guest_agent", READINESS_PASS, NULL, "%s found", paths[i]);
      return;
    }
  add(c, "guest_agent", READINESS_WARN, "install the Azure guest agent (walinuxagent / WALinuxAgent) or cloud-init",
      "neither the Azure guest agent (waagent) nor cloud-init is installed: no provisioning, extensions or reset");
}

/* The interface of the default route, from /proc/net/route ("" unknown). */
static void primary_interface(const struct ctx *c, char *out, size_t size)
{
  out[0] = 0;
  char *t = slurp_under(c, "/proc/net/route");
  char *save;
  for (char *line = t ? strtok_r(t, "\n", &save) : NULL; line; line = strtok_r(NULL, "\n", &save)) {
    char ifname[32], dest[16];
    if (sscanf(line, "%31s %15s", ifname, dest) == 2 && !strcmp(dest, "00000000")) {
      snprintf(out, size, "%s", ifname);
      break;
    }
  }
  free(t);
}

struct netcfg {
  char dhcp[160], fixed[160];
};

static void note(char *list, size_t size, const char *what)
{
  size_t l = strlen(list);
  if (!strstr(list, what))
    snprintf(list + l, size - l, "%s%s", l ? ", " : "", what);
}

/* Scans the files of one configuration directory (or one file) for DHCP and static settings. */
static void scan_net(const struct ctx *c, const char *rel, const char *prefix, const char *const dhcp[],
                     const char *const fixed[], struct netcfg *n)
{
  char p[PATH_MAX];
  under_root(c, rel, p, sizeof p);
  DIR *d = opendir(p);
  struct dirent *e = NULL;
  do {
    char file[PATH_MAX + 300];
    if (d) {
      if (!(e = readdir(d)))
        break;
      if (e->d_name[0] == '.' || strncmp(e->d_name, prefix, strlen(prefix)) || !strcmp(e->d_name, "ifcfg-lo"))
        continue;
      snprintf(file, sizeof file, "%s/%s", p, e->d_name);
    } else
      snprintf(file, sizeof file, "%s", p);
    char *t = slurp(file);
    const char *label = d ? e->d_name : rel;
    for (size_t i = 0; t && dhcp[i]; i++)
      if (strcasestr(t, dhcp[i]))
        note(n->dhcp, sizeof n->dhcp, label);
    for (size_t i = 0; t && fixed[i]; i++)
      if (strcasestr(t, fixed[i]))
        note(n->fixed, sizeof n->fixed, label);
    free(t);
  } while (d);
  if (d)
    closedir(d);
}

static void check_dhcp(struct ctx *c)
{
  struct netcfg n = {"", ""};
  static const char *const ifupdown_d[] = {"inet dhcp", NULL}, *const ifupdown_s[] = {"inet static", NULL};
  static const char *const netplan_d[] = {"dhcp4: true", "dhcp4: yes", "dhcp4: on", NULL};
  static const char *const netplan_s[] = {"addresses:", NULL};
  static const char *const networkd_d[] = {"DHCP=yes", "DHCP=ipv4", "DHCP=true", "DHCP=both", NULL};
  static const char *const networkd_s[] = {"Address=", NULL};
  static const char *const nm_d[] = {"method=auto", NULL}, *const nm_s[] = {"method=manual", NULL};
  static const char *const ifcfg_d[] = {"BOOTPROTO=dhcp", "BOOTPROTO=\"dhcp\"", "BOOTPROTO='dhcp'", NULL};
  static const char *const ifcfg_s[] = {"BOOTPROTO=static", "BOOTPROTO=none", "BOOTPROTO=\"static\"",
                                        "BOOTPROTO='static'", "BOOTPROTO=\"none\"", NULL};
  scan_net(c, "/etc/network/interfaces", "", ifupdown_d, ifupdown_s, &n);
  scan_net(c, "/etc/network/interfaces.d", "", ifupdown_d, ifupdown_s, &n);
  scan_net(c, "/etc/netplan", "", netplan_d, netplan_s, &n);
  scan_net(c, "/etc/systemd/network", "", networkd_d, networkd_s, &n);
  scan_net(c, "/etc/NetworkManager/system-connections", "", nm_d, nm_s, &n);
  scan_net(c, "/etc/sysconfig/network-scripts", "ifcfg-", ifcfg_d, ifcfg_s, &n);
  scan_net(c, "/etc/sysconfig/network", "ifcfg-", ifcfg_d, ifcfg_s, &n);
  char primary[32];
  primary_interface(c, primary, sizeof primary);
  const char *rem = "configure the primary interface by DHCP: Azure gives the address through DHCP";
  bool cloud = exists_under(c, "/usr/bin/cloud-init");
  bool nm = exists_under(c, "/usr/sbin/NetworkManager");
  if (n.fixed[0] && !n.dhcp[0] && !cloud)
    add(c, "dhcp", READINESS_WARN, rem, "static addresses only (%s)%s%s", n.fixed, primary[0] ? "; primary " : "",
        primary);
  else if (n.dhcp[0])
    add(c, "dhcp", n.fixed[0] ? READINESS_WARN : READINESS_PASS, rem, "DHCP in %s%s%s%s%s", n.dhcp,
        n.fixed[0] ? "; static addresses in " : "", n.fixed, primary[0] ? "; primary " : "", primary);
  else if (cloud || nm)
    add(c, "dhcp", READINESS_PASS, NULL, "%s configures the network (DHCP by default)", cloud ? "cloud-init" : "NetworkManager");
  else
    add(c, "dhcp", READINESS_WARN, rem,
        "no DHCP configuration found (ifupdown, netplan, systemd-networkd, NetworkManager, ifcfg)");
}

static void check_serial_console(struct ctx *c)
{
  char *grub = slurp_under(c, "/etc/default/grub");
  bool in_grub = grub && strstr(grub, "console=ttyS0");
  free(grub);
  if (strstr(c->cmdline, "console=ttyS0") || in_grub) {
    add(c, "serial_console", READINESS_PASS, NULL, "console=ttyS0 on the kernel command line (%s)",
        in_grub ? "/etc/default/grub" : c->cmdline_from);
    return;
  }
  char *inittab = slurp_under(c, "/etc/inittab");
  bool getty = (inittab && strstr(inittab, "ttyS0")) ||
               exists_under(c, "/etc/systemd/system/getty.target.wants/serial-getty@ttyS0.service");
  free(inittab);
  if (getty)
    add(c, "serial_console", READINESS_PASS, NULL, "a getty on ttyS0");
  else
    add(c, "serial_console", READINESS_WARN,
        "add console=tty1 console=ttyS0,115200n8 to GRUB_CMDLINE_LINUX in /etc/default/grub and update the grub config",
        "no console=ttyS0 on the kernel command line and no getty on ttyS0: Azure's serial console stays blank");
}

/* ---- the report ----------------------------------------------------------------------------- */

void readiness_run(const struct readiness_input *in, struct readiness_report *r)
{
  struct ctx *c = calloc(1, sizeof *c);
  memset(r, 0, sizeof *r);
  r->firmware = "bios";
  r->partition_table = "unknown";
  if (!c) {
    r->checks[r->n].name = "readiness";
    r->checks[r->n].result = READINESS_FAIL;
    snprintf(r->checks[r->n].detail, sizeof r->checks[r->n].detail, "out of memory");
    snprintf(r->checks[r->n++].remedy, sizeof r->checks[0].remedy, "free some memory");
    return;
  }
  c->in = in;
  c->r = r;
  find_boot_entry(c);
  load_fstab(c);
  find_boot_disk(c);
  find_protected(c);
  check_hv_drivers(c);
  check_root_device(c);
  check_fstab_names(c);
  check_fstab_nofail(c);
  check_boot_mode(c);
  check_sizes(c);
  check_guest_agent(c);
  check_dhcp(c);
  check_serial_console(c);
  free(c);
}

size_t readiness_count(const struct readiness_report *r, enum readiness_result result)
{
  size_t n = 0;
  for (size_t i = 0; i < r->n; i++)
    n += r->checks[i].result == result;
  return n;
}

const struct readiness_check *readiness_find(const struct readiness_report *r, const char *name)
{
  for (size_t i = 0; i < r->n; i++)
    if (!strcmp(r->checks[i].name, name))
      return &r->checks[i];
  return NULL;
}

const char *readiness_result_name(enum readiness_result result)
{
  return result == READINESS_PASS ? "PASS" : result == READINESS_WARN ? "WARN" : "FAIL";
}

rpl_err readiness_lower_priority(void)
{
  /* Per thread on Linux (who: this thread's id); a child started later inherits it. Never raised:
   * an agent started at a lower priority keeps it. */
  id_t tid = (id_t)gettid();
  errno = 0;
  int nice_now = getpriority(PRIO_PROCESS, tid);
  int nice_want = errno == 0 && nice_now > READINESS_NICE ? nice_now : READINESS_NICE;
  if (setpriority(PRIO_PROCESS, tid, nice_want) != 0)
    return rpl_fail(RPL_E_PERMISSION, "cannot lower the thread's CPU priority to nice %d: %s", nice_want,
                    strerror(errno));
  /* who 0: the calling thread. */
  if (syscall(SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, IOPRIO_PRIO_VALUE(IOPRIO_CLASS_BE, 7)) != 0)
    return rpl_fail(RPL_E_PERMISSION, "cannot lower the thread's I/O priority: %s", strerror(errno));
  return RPL_OK;
}
