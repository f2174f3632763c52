/* test_readiness.c - Description: unit tests of the boot readiness checks (agent/readiness.c) on
 * fixture trees built here: initramfs images (cpio; gzip, zstd, xz, lz4, bzip2; with and without an
 * early microcode cpio) with and without the Hyper-V drivers, built-in drivers, fstab by UUID vs
 * /dev/sda2, nofail, GPT vs MBR images with and without UEFI, disks over the OS-disk and page-blob
 * limits, guest agent, DHCP and serial console settings; the initramfs listing's cache file; the
 * background priority the daemon's checks and the tools they start run at. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "readiness.h"
#include "tmpdir.h"

#define KVER "6.1.0-99-amd64"

static const char *const hv_mods[] = {"hv_vmbus", "hv_storvsc", "hv_netvsc"};

static void mkdirs(const char *path)
{
  char p[PATH_MAX];
  snprintf(p, sizeof p, "%s", path);
  for (char *s = p + 1; *s; s++)
    if (*s == '/') {
      *s = 0;
      mkdir(p, 0755);
      *s = '/';
    }
  mkdir(p, 0755);
}

/* Writes root/rel with text, creating its directories. */
static void put(const char *root, const char *rel, const char *text)
{
  char p[PATH_MAX];
  snprintf(p, sizeof p, "%s/%s", root, rel);
  char d[PATH_MAX];
  snprintf(d, sizeof d, "%s", p);
  *strrchr(d, '/') = 0;
  mkdirs(d);
  FILE *f = fopen(p, "w");
  assert_non_null(f);
  assert_int_equal(fputs(text, f) >= 0, 1);
  assert_int_equal(fclose(f), 0);
}

static void link_under(const char *root, const char *rel, const char *target)
{
  char p[PATH_MAX], d[PATH_MAX];
  snprintf(p, sizeof p, "%s/%s", root, rel);
  snprintf(d, sizeof d, "%s", p);
  *strrchr(d, '/') = 0;
  mkdirs(d);
  assert_int_equal(symlink(target, p), 0);
}

/* One newc cpio archive of empty-ish files named names[], then its trailer. */
static void write_cpio(FILE *f, const char *const *names, size_t n)
{
  static const char data[] = "x";
  for (size_t i = 0; i <= n; i++) {
    const char *name = i < n ? names[i] : "TRAILER!!!";
    size_t ns = strlen(name) + 1, fs = i < n ? 1 : 0;
    fprintf(f, "070701%08X%08X%08X%08X%08X%08X%08zX%08X%08X%08X%08X%08zX%08X", (unsigned)i + 1, 0100644u, 0u, 0u, 1u,
            0u, fs, 0u, 0u, 0u, 0u, ns, 0u);
    fwrite(name, 1, ns, f);
    for (size_t p = (110 + ns) % 4; p && p < 4; p++)
      fputc(0, f);
    if (fs) {
      fwrite(data, 1, fs, f);
      for (size_t p = fs % 4; p && p < 4; p++)
        fputc(0, f);
    }
  }
  /* Like the kernel's own archives: padded to a 512-byte boundary. */
  while (ftell(f) % 512)
    fputc(0, f);
}

/* Builds an initramfs at out: optionally an uncompressed early microcode cpio, then a cpio with the
 * Hyper-V modules (or without), compressed by tool ("gzip", "zstd", "xz"; NULL: uncompressed). */
static void make_initramfs(const char *dir, const char *out, bool microcode, bool with_hv, const char *tool)
{
  char raw[PATH_MAX], cmd[3 * PATH_MAX];
  snprintf(raw, sizeof raw, "%s/main.cpio", dir);
  FILE *f = fopen(raw, "w");
  assert_non_null(f);
  const char *names_hv[] = {
    "usr", "usr/lib/modules/" KVER "/kernel/drivers/hv/hv_vmbus.ko",
    "usr/lib/modules/" KVER "/kernel/drivers/scsi/hv_storvsc.ko.zst",
    "usr/lib/modules/" KVER "/kernel/drivers/net/hyperv/hv_netvsc.ko.xz", "init",
  };
  const char *names_plain[] = {"usr", "usr/lib/modules/" KVER "/kernel/drivers/scsi/virtio_scsi.ko", "init"};
  if (with_hv)
    write_cpio(f, names_hv, 5);
  else
    write_cpio(f, names_plain, 3);
  assert_int_equal(fclose(f), 0);
  f = fopen(out, "w");
  assert_non_null(f);
  if (microcode) {
    const char *ucode[] = {"kernel", "kernel/x86/microcode", "kernel/x86/microcode/GenuineIntel.bin"};
    write_cpio(f, ucode, 3);
  }
  assert_int_equal(fclose(f), 0);
  if (tool)
    snprintf(cmd, sizeof cmd, "%s -c < '%s' >> '%s'", tool, raw, out);
  else
    snprintf(cmd, sizeof cmd, "cat '%s' >> '%s'", raw, out);
  assert_int_equal(system(cmd), 0);
  assert_int_equal(unlink(raw), 0);
}

static int setup(void **state)
{
  char *dir = malloc(PATH_MAX);
  if (!dir || tmpdir_create(dir, PATH_MAX, "readiness") != 0)
    return -1;
  *state = dir;
  return 0;
}

static int teardown(void **state)
{
  tmpdir_remove(*state);
  free(*state);
  return 0;
}

static void check_modules(const char *path, bool use_tools, bool expect)
{
  bool found[3];
  assert_int_equal(readiness_initramfs_modules(path, use_tools, hv_mods, 3, found), RPL_OK);
  for (int i = 0; i < 3; i++)
    assert_int_equal(found[i], expect);
}

static bool have(const char *tool)
{
  char cmd[128];
  snprintf(cmd, sizeof cmd, "command -v %s >/dev/null 2>&1", tool);
  return system(cmd) == 0;
}

static void test_initramfs_formats(void **state)
{
  const char *dir = *state;
  char img[PATH_MAX];
  snprintf(img, sizeof img, "%s/initrd.img", dir);
  /* lz4 -l: the legacy frame the kernel and initramfs-tools use. */
  static const char *const tools[] = {"gzip", "zstd", "xz", "lz4 -l", "bzip2", NULL};
  for (size_t t = 0; t < 6; t++) {
    char name[16];
    snprintf(name, sizeof name, "%.*s", (int)strcspn(tools[t] ? tools[t] : "", " "), tools[t] ? tools[t] : "");
    if (tools[t] && !have(name))
      continue;
    for (int micro = 0; micro < 2; micro++)
      for (int hv = 0; hv < 2; hv++) {
        make_initramfs(dir, img, micro, hv, tools[t]);
        check_modules(img, false, hv);
        assert_int_equal(unlink(img), 0);
      }
  }
}

/* The distribution's lister (Debian's lsinitramfs here) reads the same images the same way. */
static void test_initramfs_distribution_tool(void **state)
{
  if (access("/usr/bin/lsinitramfs", X_OK) != 0 && access("/usr/bin/lsinitrd", X_OK) != 0)
    skip();
  const char *dir = *state;
  char img[PATH_MAX];
  snprintf(img, sizeof img, "%s/initrd.img", dir);
  make_initramfs(dir, img, true, true, "gzip");
  check_modules(img, true, true);
  assert_int_equal(unlink(img), 0);
  make_initramfs(dir, img, false, false, "gzip");
  check_modules(img, true, false);
}

static void test_initramfs_damaged(void **state)
{
  const char *dir = *state;
  char img[PATH_MAX], cmd[2 * PATH_MAX];
  bool found[3];
  snprintf(img, sizeof img, "%s/initrd.img", dir);
  assert_int_equal(readiness_initramfs_modules(img, false, hv_mods, 3, found), RPL_E_NOT_FOUND);
  make_initramfs(dir, img, true, true, "gzip");
  /* Cut the gzip trailer off: gzip says the stream ended early, and the listing fails. */
  snprintf(cmd, sizeof cmd, "truncate -s -4 '%s'", img);
  assert_int_equal(system(cmd), 0);
  assert_int_equal(readiness_initramfs_modules(img, false, hv_mods, 3, found), RPL_E_IO);
  put(dir, "junk.img", "this is not an initramfs at all, nor compressed");
  snprintf(img, sizeof img, "%s/junk.img", dir);
  assert_int_equal(readiness_initramfs_modules(img, false, hv_mods, 3, found), RPL_E_UNSUPPORTED);
}

static void check_cached(const char *cache, const char *img, bool expect)
{
  bool found[3];
  assert_int_equal(readiness_initramfs_modules_cached(cache, img, false, hv_mods, 3, found), RPL_OK);
  for (int i = 0; i < 3; i++)
    assert_int_equal(found[i], expect);
}

/* The cache file answers only for the very initramfs it names; anything else is listed again. */
static void test_initramfs_cache(void **state)
{
  const char *dir = *state;
  char img[PATH_MAX], cache[PATH_MAX], key[2048], cmd[4 * PATH_MAX];
  snprintf(img, sizeof img, "%s/initrd.img", dir);
  snprintf(cache, sizeof cache, "%s/initramfs-modules", dir);
  make_initramfs(dir, img, true, true, "gzip");
  check_cached(cache, img, true);
  FILE *f = fopen(cache, "r");
  assert_non_null(f);
  assert_non_null(fgets(key, sizeof key, f));
  char bits[8];
  assert_non_null(fgets(bits, sizeof bits, f));
  assert_string_equal(bits, "111\n");
  assert_int_equal(fclose(f), 0);
  assert_non_null(strstr(key, img));
  /* A hit is the file's answer, not a listing: a different answer written under the same key is
   * what comes back. */
  f = fopen(cache, "w");
  assert_non_null(f);
  fprintf(f, "%s010\n", key);
  assert_int_equal(fclose(f), 0);
  bool found[3];
  assert_int_equal(readiness_initramfs_modules_cached(cache, img, false, hv_mods, 3, found), RPL_OK);
  assert_false(found[0]);
  assert_true(found[1]);
  assert_false(found[2]);
  /* Other module names, or the distribution's tools asked for: not this key. */
  static const char *const other[] = {"hv_vmbus", "hv_storvsc", "virtio_scsi"};
  assert_int_equal(readiness_initramfs_modules_cached(cache, img, false, other, 3, found), RPL_OK);
  assert_true(found[0] && found[1] && !found[2]);
  /* The initramfs rebuilt (another file in its place): listed again, and the cache follows it. */
  assert_int_equal(unlink(img), 0);
  make_initramfs(dir, img, false, false, "gzip");
  check_cached(cache, img, false);
  check_cached(cache, img, false);
  /* Rewritten in place (the same inode): its size and modification time differ. */
  make_initramfs(dir, img, false, true, "gzip");
  snprintf(cmd, sizeof cmd, "touch -d '2001-01-01' '%s'", img);
  assert_int_equal(system(cmd), 0);
  check_cached(cache, img, true);
  /* A damaged cache, a cut one, an empty one: listed again. */
  static const char *const junk[] = {"garbage\n", "", "initramfs-modules 1\n", NULL};
  for (size_t i = 0; junk[i]; i++) {
    put(dir, "initramfs-modules", junk[i]);
    check_cached(cache, img, true);
  }
  /* A failed listing is not kept: the cache still names the good image. */
  assert_int_equal(readiness_initramfs_modules_cached(cache, img, false, hv_mods, 3, found), RPL_OK);
  snprintf(cmd, sizeof cmd, "cp '%s' '%s.good' && truncate -s -4 '%s'", img, img, img);
  assert_int_equal(system(cmd), 0);
  assert_int_equal(readiness_initramfs_modules_cached(cache, img, false, hv_mods, 3, found), RPL_E_IO);
  f = fopen(cache, "r");
  assert_non_null(f);
  assert_non_null(fgets(key, sizeof key, f));
  assert_int_equal(fclose(f), 0);
  assert_non_null(strstr(key, img));
  /* A cache that cannot be written (no such folder) costs only the listing. */
  snprintf(cache, sizeof cache, "%s/nonexistent/initramfs-modules", dir);
  snprintf(cmd, sizeof cmd, "mv '%s.good' '%s'", img, img);
  assert_int_equal(system(cmd), 0);
  check_cached(cache, img, true);
  assert_int_equal(access(cache, F_OK), -1);
}

/* A 1 MiB disk image with an MBR (partition type 0x83) or a GPT (protective MBR 0xEE + header). */
static void make_disk(const char *root, const char *rel, bool gpt, uint64_t size)
{
  char p[PATH_MAX];
  snprintf(p, sizeof p, "%s/%s", root, rel);
  put(root, rel, "");
  FILE *f = fopen(p, "r+");
  assert_non_null(f);
  unsigned char mbr[1024] = {0};
  mbr[446 + 4] = gpt ? 0xee : 0x83;
  mbr[510] = 0x55;
  mbr[511] = 0xaa;
  if (gpt)
    memcpy(mbr + 512, "EFI PART", 8);
  assert_int_equal(fwrite(mbr, 1, sizeof mbr, f), sizeof mbr);
  assert_int_equal(fclose(f), 0);
  assert_int_equal(truncate(p, (off_t)size), 0);
}

/* A server that is ready: Debian-like, BIOS/MBR, by UUID, agent, DHCP, serial console. */
static void make_ready_tree(const char *root)
{
  char ucode[PATH_MAX], img[PATH_MAX];
  snprintf(ucode, sizeof ucode, "%s/boot", root);
  mkdirs(ucode);
  put(root, "boot/vmlinuz-" KVER, "kernel");
  put(root, "boot/vmlinuz-5.10.0-1-amd64", "an older kernel");
  snprintf(img, sizeof img, "%s/boot/initrd.img-" KVER, root);
  make_initramfs(ucode, img, true, true, "gzip");
  put(root, "etc/fstab",
      "# <file system> <mount point> <type> <options> <dump> <pass>\n"
      "UUID=1111-root / ext4 errors=remount-ro 0 1\n"
      "UUID=2222-data /data ext4 defaults 0 2\n"
      "proc /proc proc defaults 0 0\n"
      "tmpfs /tmp tmpfs defaults 0 0\n");
  make_disk(root, "dev/sda", false, 1u << 20);
  make_disk(root, "dev/sdb", true, 1u << 20);
  put(root, "dev/sda1", "");
  put(root, "dev/sdb1", "");
  link_under(root, "dev/disk/by-uuid/1111-root", "../../sda1");
  link_under(root, "dev/disk/by-uuid/2222-data", "../../sdb1");
  put(root, "proc/cmdline", "BOOT_IMAGE=/boot/vmlinuz-" KVER " root=UUID=1111-root ro console=tty1 console=ttyS0,115200\n");
  put(root, "usr/sbin/waagent", "#!/usr/bin/python3\n");
  put(root, "etc/network/interfaces", "auto lo\niface lo inet loopback\nauto eth0\niface eth0 inet dhcp\n");
}

static void run(const char *root, const char *const *protected_devs, size_t n, struct readiness_report *r)
{
  struct readiness_input in = {.root = root, .live = false, .nprotected = n};
  for (size_t i = 0; i < n; i++)
    in.protected_devs[i] = protected_devs[i];
  readiness_run(&in, r);
}

static enum readiness_result result(const struct readiness_report *r, const char *name)
{
  const struct readiness_check *k = readiness_find(r, name);
  assert_non_null(k);
  if (k->result != READINESS_PASS)
    assert_true(k->remedy[0] != '\0');
  return k->result;
}

static void test_ready_tree(void **state)
{
  const char *root = *state;
  make_ready_tree(root);
  struct readiness_report *r = calloc(1, sizeof *r);
  assert_non_null(r);
  const char *prot[] = {"/dev/sda", "/dev/sdb"};
  run(root, prot, 2, r);
  for (size_t i = 0; i < r->n; i++)
    if (r->checks[i].result != READINESS_PASS)
      fail_msg("%s: %s %s", r->checks[i].name, readiness_result_name(r->checks[i].result), r->checks[i].detail);
  assert_int_equal(r->n, 13);
  assert_string_equal(r->kernel, KVER);
  assert_string_equal(r->kernel_from, "newest in /boot");
  assert_non_null(strstr(r->initramfs, "/boot/initrd.img-" KVER));
  assert_non_null(strstr(r->boot_disk, "/dev/sda"));
  assert_int_equal(r->boot_disk_size, 1u << 20);
  assert_string_equal(r->firmware, "bios");
  assert_string_equal(r->partition_table, "mbr");
  assert_int_equal(r->generation, 1);

  /* Only the boot disk protected: /data's disk is missing in Azure and has no nofail. */
  run(root, prot, 1, r);
  assert_int_equal(result(r, "fstab_nofail"), READINESS_FAIL);
  assert_non_null(strstr(readiness_find(r, "fstab_nofail")->detail, "/data"));
  put(root, "etc/fstab", "UUID=1111-root / ext4 defaults 0 1\nUUID=2222-data /data ext4 defaults,nofail 0 2\n");
  run(root, prot, 1, r);
  assert_int_equal(result(r, "fstab_nofail"), READINESS_PASS);
  /* An entry whose device is not on this server at all needs nofail too. */
  put(root, "etc/fstab", "UUID=1111-root / ext4 defaults 0 1\nLABEL=gone /gone xfs defaults 0 2\n");
  run(root, prot, 2, r);
  assert_int_equal(result(r, "fstab_nofail"), READINESS_FAIL);
  /* Neither disk protected: the boot disk's own entries never need nofail, but it is not protected. */
  put(root, "etc/fstab", "UUID=1111-root / ext4 defaults 0 1\n");
  run(root, NULL, 0, r);
  assert_int_equal(result(r, "fstab_nofail"), READINESS_PASS);
  assert_int_equal(result(r, "boot_disk_protected"), READINESS_WARN);
  free(r);
}

/* The grub config names the default entry and its command line; the running kernel does not count
 * on a tree that is not live. */
static void test_grub_entry(void **state)
{
  const char *root = *state;
  make_ready_tree(root);
  put(root, "boot/grub/grub.cfg",
      "set default=0\nmenuentry 'Debian GNU/Linux' --class debian {\n\tinsmod ext2\n"
      "\tlinux\t/boot/vmlinuz-5.10.0-1-amd64 root=/dev/sda1 ro quiet\n\tinitrd\t/boot/initrd.img-5.10.0-1-amd64\n}\n"
      "menuentry 'Debian, with Linux " KVER "' {\n\tlinux /boot/vmlinuz-" KVER " root=UUID=1111-root\n}\n");
  char dir[PATH_MAX], img[PATH_MAX];
  snprintf(dir, sizeof dir, "%s/boot", root);
  snprintf(img, sizeof img, "%s/boot/initrd.img-5.10.0-1-amd64", root);
  make_initramfs(dir, img, false, false, "gzip");
  struct readiness_report *r = calloc(1, sizeof *r);
  assert_non_null(r);
  const char *prot[] = {"/dev/sda", "/dev/sdb"};
  run(root, prot, 2, r);
  assert_string_equal(r->kernel, "5.10.0-1-amd64");
  assert_non_null(strstr(r->initramfs, "initrd.img-5.10.0-1-amd64"));
  assert_int_equal(result(r, "hv_vmbus"), READINESS_FAIL);
  assert_int_equal(result(r, "hv_storvsc"), READINESS_FAIL);
  assert_int_equal(result(r, "hv_netvsc"), READINESS_FAIL);
  assert_non_null(strstr(readiness_find(r, "hv_storvsc")->remedy, "dracut"));
  assert_int_equal(result(r, "root_device"), READINESS_FAIL);
  assert_non_null(strstr(readiness_find(r, "root_device")->detail, "root=/dev/sda1"));
  /* No console=ttyS0 on grub's line: a getty on ttyS0 is enough. */
  assert_int_equal(result(r, "serial_console"), READINESS_WARN);
  link_under(root, "etc/systemd/system/getty.target.wants/serial-getty@ttyS0.service",
             "/lib/systemd/system/serial-getty@.service");
  run(root, prot, 2, r);
  assert_int_equal(result(r, "serial_console"), READINESS_PASS);

  /* Drivers built into that kernel need no initramfs; a network driver on the root filesystem is enough. */
  put(root, "boot/config-5.10.0-1-amd64", "CONFIG_HYPERV=y\nCONFIG_HYPERV_STORAGE=y\nCONFIG_HYPERV_NET=m\n");
  put(root, "lib/modules/5.10.0-1-amd64/modules.dep", "kernel/drivers/net/hyperv/hv_netvsc.ko: \n");
  run(root, prot, 2, r);
  assert_int_equal(result(r, "hv_vmbus"), READINESS_PASS);
  assert_non_null(strstr(readiness_find(r, "hv_vmbus")->detail, "built into"));
  assert_int_equal(result(r, "hv_storvsc"), READINESS_PASS);
  assert_int_equal(result(r, "hv_netvsc"), READINESS_PASS);
  free(r);
}

static void test_device_names(void **state)
{
  const char *root = *state;
  make_ready_tree(root);
  put(root, "etc/fstab",
      "/dev/sda1 / ext4 defaults 0 1\n/dev/sdb1 /data ext4 defaults 0 2\n/dev/nvme0n1p3 /srv xfs nofail 0 2\n"
      "/dev/mapper/vg0-home /home ext4 defaults 0 2\n/dev/disk/by-uuid/2222-data /mnt ext4 defaults 0 2\n"
      "server:/export /nfs nfs defaults 0 0\n");
  struct readiness_report *r = calloc(1, sizeof *r);
  assert_non_null(r);
  const char *prot[] = {"/dev/sda", "/dev/sdb"};
  run(root, prot, 2, r);
  assert_int_equal(result(r, "root_device"), READINESS_FAIL);
  assert_non_null(strstr(readiness_find(r, "root_device")->detail, "/dev/sda1"));
  const struct readiness_check *k = readiness_find(r, "fstab_names");
  assert_int_equal(result(r, "fstab_names"), READINESS_FAIL);
  assert_non_null(strstr(k->detail, "2 entries"));
  assert_non_null(strstr(k->detail, "/dev/sdb1 on /data"));
  assert_non_null(strstr(k->detail, "/dev/nvme0n1p3 on /srv"));
  assert_null(strstr(k->detail, "mapper"));
  /* /home on an LVM volume not found here, without nofail. */
  assert_int_equal(result(r, "fstab_nofail"), READINESS_FAIL);
  assert_non_null(strstr(readiness_find(r, "fstab_nofail")->detail, "/home"));
  assert_null(strstr(readiness_find(r, "fstab_nofail")->detail, "/nfs"));
  free(r);
}

static void test_boot_mode(void **state)
{
  const char *root = *state;
  make_ready_tree(root);
  struct readiness_report *r = calloc(1, sizeof *r);
  assert_non_null(r);
  const char *prot[] = {"/dev/sda", "/dev/sdb"};
  char p[PATH_MAX];
  snprintf(p, sizeof p, "%s/dev/sda", root);
  assert_int_equal(unlink(p), 0);
  make_disk(root, "dev/sda", true, 1u << 20);
  run(root, prot, 2, r);
  assert_string_equal(r->partition_table, "gpt");
  assert_int_equal(r->generation, 1);
  assert_int_equal(result(r, "boot_mode"), READINESS_WARN);
  snprintf(p, sizeof p, "%s/sys/firmware/efi", root);
  mkdirs(p);
  run(root, prot, 2, r);
  assert_string_equal(r->firmware, "uefi");
  assert_int_equal(r->generation, 2);
  assert_int_equal(result(r, "boot_mode"), READINESS_PASS);
  /* A whole-disk filesystem (no partition table) boots nowhere in Azure. */
  snprintf(p, sizeof p, "%s/dev/sda", root);
  assert_int_equal(unlink(p), 0);
  put(root, "dev/sda", "");
  assert_int_equal(truncate(p, 1 << 20), 0);
  run(root, prot, 2, r);
  assert_string_equal(r->partition_table, "none");
  assert_int_equal(r->generation, 0);
  assert_int_equal(result(r, "boot_mode"), READINESS_FAIL);
  free(r);
}

static void test_sizes(void **state)
{
  const char *root = *state;
  make_ready_tree(root);
  char p[PATH_MAX];
  uint64_t size;
  struct readiness_report *r = calloc(1, sizeof *r);
  assert_non_null(r);
  const char *prot[] = {"/dev/sda", "/dev/sdb"};
  /* Sparse images: 3 TiB MBR boot disk (WARN: MBR addresses 2 TiB), then 5 TiB (FAIL: OS disk limit). */
  snprintf(p, sizeof p, "%s/dev/sda", root);
  assert_int_equal(truncate(p, (off_t)(3ull << 40)), 0);
  run(root, prot, 2, r);
  assert_int_equal(result(r, "boot_disk_size"), READINESS_WARN);
  assert_int_equal(truncate(p, (off_t)(5ull << 40)), 0);
  run(root, prot, 2, r);
  assert_int_equal(result(r, "boot_disk_size"), READINESS_FAIL);
  assert_non_null(strstr(readiness_find(r, "boot_disk_size")->detail, "5.00 TiB"));
  assert_int_equal(truncate(p, 1 << 20), 0);
  /* A protected disk of exactly the page blob's limit less the footer passes; 512 bytes more fails. */
  snprintf(p, sizeof p, "%s/dev/sdb", root);
  assert_int_equal(truncate(p, (off_t)READINESS_PROTECTED_MAX), 0);
  assert_int_equal(readiness_disk_size(p, &size), RPL_OK);
  assert_int_equal(size, READINESS_PROTECTED_MAX);
  run(root, prot, 2, r);
  assert_int_equal(result(r, "protected_disk_size"), READINESS_PASS);
  assert_int_equal(truncate(p, (off_t)(READINESS_PROTECTED_MAX + 512)), 0);
  run(root, prot, 2, r);
  assert_int_equal(result(r, "protected_disk_size"), READINESS_FAIL);
  assert_non_null(strstr(readiness_find(r, "protected_disk_size")->detail, "/dev/sdb"));
  free(r);
}

static void test_guest_agent_dhcp(void **state)
{
  const char *root = *state;
  make_ready_tree(root);
  char p[PATH_MAX];
  struct readiness_report *r = calloc(1, sizeof *r);
  assert_non_null(r);
  const char *prot[] = {"/dev/sda", "/dev/sdb"};
  snprintf(p, sizeof p, "%s/usr/sbin/waagent", root);
  assert_int_equal(unlink(p), 0);
  put(root, "etc/network/interfaces", "auto eth0\niface eth0 inet static\n  address 10.0.0.5/24\n");
  put(root, "proc/net/route", "Iface\tDestination\tGateway\nlo\t0000000A\t00000000\neth0\t00000000\t0100000A\n");
  run(root, prot, 2, r);
  assert_int_equal(result(r, "guest_agent"), READINESS_WARN);
  assert_int_equal(result(r, "dhcp"), READINESS_WARN);
  assert_non_null(strstr(readiness_find(r, "dhcp")->detail, "primary eth0"));
  assert_int_equal(readiness_count(r, READINESS_FAIL), 0);
  /* systemd-networkd by DHCP, ifupdown removed; cloud-init as the agent. */
  snprintf(p, sizeof p, "%s/etc/network/interfaces", root);
  assert_int_equal(unlink(p), 0);
  put(root, "etc/systemd/network/10-eth0.network", "[Match]\nName=eth0\n[Network]\nDHCP=yes\n");
  put(root, "etc/cloud/cloud.cfg", "datasource_list: [ Azure ]\n");
  run(root, prot, 2, r);
  assert_int_equal(result(r, "guest_agent"), READINESS_PASS);
  assert_int_equal(result(r, "dhcp"), READINESS_PASS);
  /* RHEL's ifcfg files and netplan are read too. */
  snprintf(p, sizeof p, "%s/etc/systemd/network/10-eth0.network", root);
  assert_int_equal(unlink(p), 0);
  put(root, "etc/sysconfig/network-scripts/ifcfg-eth0", "DEVICE=eth0\nBOOTPROTO=\"static\"\nIPADDR=10.0.0.5\n");
  put(root, "etc/sysconfig/network-scripts/ifcfg-lo", "DEVICE=lo\nBOOTPROTO=static\n");
  snprintf(p, sizeof p, "%s/etc/cloud/cloud.cfg", root);
  assert_int_equal(unlink(p), 0);
  run(root, prot, 2, r);
  assert_int_equal(result(r, "dhcp"), READINESS_WARN);
  assert_non_null(strstr(readiness_find(r, "dhcp")->detail, "ifcfg-eth0"));
  put(root, "etc/sysconfig/network-scripts/ifcfg-eth0", "DEVICE=eth0\nBOOTPROTO=dhcp\n");
  run(root, prot, 2, r);
  assert_int_equal(result(r, "dhcp"), READINESS_PASS);
  free(r);
}

extern char **environ;

/* On a thread of its own (a test's main thread keeps its priority): lowered, the thread runs at nice
 * READINESS_NICE, and so does a process it starts and that one's child, at the lowest best-effort
 * I/O level. */
static void *lowered_thread(void *arg)
{
  char *seen = arg;
  rpl_err e = readiness_lower_priority();
  if (e != RPL_OK) {
    snprintf(seen, 256, "refused: %s", rpl_detail(e));
    return NULL;
  }
  errno = 0;
  int nice_now = getpriority(PRIO_PROCESS, (id_t)gettid());
  if (nice_now != READINESS_NICE) {
    snprintf(seen, 256, "the thread's nice value is %d", nice_now);
    return NULL;
  }
  int p[2];
  if (pipe(p) != 0)
    return NULL;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, p[1], 1);
  /* Fields 19 and 41 of /proc/PID/stat: the nice value and the scheduling policy; ionice alone
   * prints its own I/O priority. */
  char *argv[] = {"sh", "-c", "cut -d' ' -f19,41 /proc/self/stat && ionice", NULL};
  pid_t pid;
  int rc = posix_spawnp(&pid, "sh", &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  close(p[1]);
  if (rc == 0) {
    size_t have = 0;
    ssize_t n;
    while (have < 255 && (n = read(p[0], seen + have, 255 - have)) > 0)
      have += (size_t)n;
    seen[have] = 0;
    waitpid(pid, NULL, 0);
  }
  close(p[0]);
  return NULL;
}

static void test_lower_priority(void **state)
{
  (void)state;
  char seen[256] = "";
  pthread_t t;
  errno = 0;
  int nice_before = getpriority(PRIO_PROCESS, 0);
  assert_int_equal(errno, 0);
  assert_true(nice_before < READINESS_NICE); /* else the test shows nothing */
  assert_int_equal(pthread_create(&t, NULL, lowered_thread, seen), 0);
  assert_int_equal(pthread_join(t, NULL), 0);
  char want[64];
  snprintf(want, sizeof want, "%d %d\nbest-effort: prio 7\n", READINESS_NICE, SCHED_OTHER);
  if (strcmp(seen, want))
    fail_msg("a tool started by the lowered thread runs with nice, policy and I/O priority \"%s\", want \"%s\"",
             seen, want);
  assert_int_equal(getpriority(PRIO_PROCESS, 0), nice_before); /* the caller's thread keeps its own */
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown(test_initramfs_formats, setup, teardown),
    cmocka_unit_test_setup_teardown(test_initramfs_distribution_tool, setup, teardown),
    cmocka_unit_test_setup_teardown(test_initramfs_damaged, setup, teardown),
    cmocka_unit_test_setup_teardown(test_initramfs_cache, setup, teardown),
    cmocka_unit_test_setup_teardown(test_ready_tree, setup, teardown),
    cmocka_unit_test_setup_teardown(test_grub_entry, setup, teardown),
    cmocka_unit_test_setup_teardown(test_device_names, setup, teardown),
    cmocka_unit_test_setup_teardown(test_boot_mode, setup, teardown),
    cmocka_unit_test_setup_teardown(test_sizes, setup, teardown),
    cmocka_unit_test_setup_teardown(test_guest_agent_dhcp, setup, teardown),
    cmocka_unit_test(test_lower_priority),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
