/* readiness.h - boot readiness for Azure, checked on the source: Hyper-V drivers, stable device names,
 * boot mode, size limits, guest agent, DHCP, serial console (agent/ internal; cmd_check.c, control.c). */
#ifndef AGENT_READINESS_H
#define AGENT_READINESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rpl_error.h"

/* An Azure OS disk holds at most 4 TiB; a page blob 8 TiB, and ours carries the disk plus its 512-byte
 * fixed-VHD footer. An MBR addresses 2 TiB. */
#define READINESS_OS_DISK_MAX (4ull << 40)
#define READINESS_MBR_MAX (2ull << 40)
#define READINESS_PAGE_BLOB_MAX (8ull << 40)
#define READINESS_PROTECTED_MAX (READINESS_PAGE_BLOB_MAX - 512)

#define READINESS_MAX_CHECKS 16
#define READINESS_MAX_PROTECTED 64

enum readiness_result { READINESS_PASS, READINESS_WARN, READINESS_FAIL };

struct readiness_check {
  const char *name;
  enum readiness_result result;
  char detail[320];
  char remedy[320];
};

/* What to inspect. root is the system's top directory: "/" for this server, or a mounted (or fixture)
 * tree. live says root is the running system: then the running kernel (uname), the root filesystem's
 * device (stat of /) and the distribution's own initramfs tools count. */
struct readiness_input {
  const char *root;
  bool live;
  const char *protected_devs[READINESS_MAX_PROTECTED]; /* device paths as protect was given them */
  size_t nprotected;
  const char *initramfs_cache; /* a file where what the initramfs holds is kept by the initramfs's identity
                                  (readiness_initramfs_modules_cached), or NULL: listed every time */
};

struct readiness_report {
  struct readiness_check checks[READINESS_MAX_CHECKS];
  size_t n;
  char kernel[128];       /* the default boot entry's kernel version ("" unknown) */
  char kernel_from[64];   /* how it was chosen: "running kernel", "first grub entry", "newest in /boot" */
  char initramfs[512];    /* its initramfs, a path under root ("" none found) */
  char boot_disk[256];    /* the whole disk holding /, a path under root ("" unknown) */
  uint64_t boot_disk_size;
  const char *firmware;   /* "uefi" or "bios" */
  const char *partition_table; /* "gpt", "mbr", "none" or "unknown" */
  int generation;         /* Azure VM generation 1 or 2; 0 unknown */
};

/* Runs every check; never fails as a whole: what cannot be read is a check's WARN or FAIL. */
void readiness_run(const struct readiness_input *in, struct readiness_report *r);
size_t readiness_count(const struct readiness_report *r, enum readiness_result result);
const struct readiness_check *readiness_find(const struct readiness_report *r, const char *name);
const char *readiness_result_name(enum readiness_result result);

/* Lowers the calling thread, and every process it starts from then on, to background priority:
 * nice READINESS_NICE for the CPU, the lowest best-effort level for I/O. The checks are not urgent,
 * and at an agent's first start they run beside the initial sync, where listing the initramfs (about
 * half a CPU-second at nice 0) slowed the sync on a 2-CPU server. Not SCHED_IDLE: on a server whose
 * CPUs are busy for minutes it left the report that long unsent; at nice 10 the checks get about a
 * tenth of a CPU that busy work at nice 0 competes for. RPL_E_PERMISSION, with the kernel's reason,
 * when it refused either (the thread then keeps the priority it had for that one). */
#define READINESS_NICE 10
RPL_MUST_CHECK rpl_err readiness_lower_priority(void);

/* Size in bytes of a block device (BLKGETSIZE64) or a regular file (an image). */
RPL_MUST_CHECK rpl_err readiness_disk_size(const char *path, uint64_t *size);

/* Looks for each of the nmod module names (without .ko) in the initramfs at path: with the
 * distribution's lsinitramfs or lsinitrd when use_tools and one is installed, else by reading it
 * (uncompressed cpio parts such as early microcode, then a gzip/zstd/xz/lz4/bzip2/lzma compressed
 * cpio through that format's command-line tool). found[i] says whether modules[i] is in it. */
RPL_MUST_CHECK rpl_err readiness_initramfs_modules(const char *path, bool use_tools, const char *const *modules,
                                                   size_t nmod, bool *found);

/* The same, kept in the file cache: listing a distribution's initramfs decompresses all of it (a second
 * or more of CPU each time the daemon connects), and it changes only when it is rebuilt. The answer is
 * taken from cache when the initramfs's device, inode, size and modification time, use_tools and the
 * module names are the ones cache names; else listed and written to cache (replaced whole, through a
 * temporary file). A cache that cannot be read or written only costs the listing; a failed listing is
 * not kept. */
RPL_MUST_CHECK rpl_err readiness_initramfs_modules_cached(const char *cache, const char *path, bool use_tools,
                                                          const char *const *modules, size_t nmod, bool *found);

#endif
