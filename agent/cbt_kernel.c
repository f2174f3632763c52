/* cbt_kernel.c - the change-block tracker in the kernel: loading, attaching and pinning the eBPF
 * programs and maps, opening them again, and the per-device slots in them (attach, detach, bitmaps). */
#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <inttypes.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "cbt_bounded_bpf.skel.h"
#include "cbt_bpf.skel.h"
#include "cbt_legacy_bpf.skel.h"
#include "cbt_internal.h"
#include "rpl_clock.h"
#include "rpl_log.h"

#ifndef BPF_FS_MAGIC
#define BPF_FS_MAGIC 0xcafe4a11
#endif

_Static_assert(sizeof(struct cbt_slot) == 256, "struct cbt_slot layout is shared with the BPF program");
_Static_assert(sizeof(struct cbt_counters) % 8 == 0, "per-CPU values are 8-byte aligned");

#define BPFFS_ROOT "/sys/fs/bpf"
/* How long a flip or a detach waits for marking programs to leave a buffer; they run for
 * microseconds with preemption disabled, so this only trips on a kernel bug. */
#define ACTIVE_WAIT_NS (5ULL * 1000 * 1000 * 1000)

static const char *const pin_names[PIN_COUNT] = {
  "cbt_devices", "cbt_devmap", "cbt_bitmaps", "cbt_inflight", "cbt_counters",
  "cbt_link_bio_queue", "cbt_link_rq_complete", "cbt_link_bio_complete",
};

/* Program names are the variant's prefix and the role (driver/cbt.bpf.c's PROG()): a pinned
 * program's name tells which variant runs. */
static const char *const variant_prefix[] = {
  [CBT_VARIANT_BPF_LOOP] = "cbt_", [CBT_VARIANT_BOUNDED] = "cbtb_", [CBT_VARIANT_LEGACY] = "cbtl_"};

/* libbpf's messages go to our log at debug level; the first warning of a load (the one that names
 * the failing program or map) is kept for the error message. */
static __thread char libbpf_last_warning[256];

int cbt_libbpf_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
  char line[512];
  vsnprintf(line, sizeof line, fmt, ap);
  size_t len = strlen(line);
  while (len && (line[len - 1] == '\n' || line[len - 1] == ' '))
    line[--len] = '\0';
  const char *text = strncmp(line, "libbpf: ", 8) ? line : line + 8;
  if (level == LIBBPF_WARN && len && !libbpf_last_warning[0]) {
    size_t keep = strnlen(text, sizeof libbpf_last_warning - 1);
    memcpy(libbpf_last_warning, text, keep);
    libbpf_last_warning[keep] = '\0';
  }
  log_debug("libbpf: %s", text);
  return 0;
}

/* ---- pins ---- */

static void unmap_bitmap(struct mapped_bitmap *m)
{
  if (m->words)
    munmap(m->words, m->bytes);
  memset(m, 0, sizeof *m);
}

void cbt_pins_close(struct cbt *t)
{
  for (int i = 0; i < CBT_MAX_DEVICES; i++)
    unmap_bitmap(&t->bitmaps[i]);
  if (t->slots)
    munmap(t->slots, t->slots_bytes);
  t->slots = NULL;
  for (int i = 0; i < PIN_COUNT; i++) {
    if (t->fd[i] >= 0)
      close(t->fd[i]);
    t->fd[i] = -1;
  }
  for (int i = 0; i < PROGRAMS; i++) {
    if (t->prog_fd[i] >= 0)
      close(t->prog_fd[i]);
    t->prog_fd[i] = -1;
  }
  t->devices_map_id = 0;
  t->variant = CBT_VARIANT_NONE;
}

static int pin_path(const struct cbt *t, int object, char *out, size_t size)
{
  int n = snprintf(out, size, "%s/%s", t->pin_dir, pin_names[object]);
  return n < 0 || (size_t)n >= size ? -1 : 0;
}

/* Removes our pinned objects (links first, so the programs detach before their maps go) and the
 * pin directory if nothing else is in it. Tracking of every device ends. */
void cbt_pins_remove(struct cbt *t)
{
  char path[PATH_MAX];
  cbt_pins_close(t);
  cbt_owners_remove(t);
  for (int i = PIN_COUNT - 1; i >= 0; i--)
    if (!pin_path(t, i, path, sizeof path) && unlink(path) != 0 && errno != ENOENT)
      log_warn("cannot unpin %s: %s", path, strerror(errno));
  if (rmdir(t->pin_dir) != 0 && errno != ENOENT && errno != ENOTEMPTY)
    log_warn("cannot remove %s: %s", t->pin_dir, strerror(errno));
}

static uint32_t fd_object_id(int fd, uint32_t *max_entries, uint32_t *value_size)
{
  struct bpf_map_info info;
  uint32_t len = sizeof info;
  memset(&info, 0, sizeof info);
  if (bpf_obj_get_info_by_fd(fd, &info, &len))
    return 0;
  if (max_entries)
    *max_entries = info.max_entries;
  if (value_size)
    *value_size = info.value_size;
  return info.id;
}

/* Opens the pinned tracker if one is installed. RPL_E_NOT_FOUND if none is; an incomplete
 * installation (a crash while installing or removing) is removed and reported as none. */
static rpl_err pins_open(struct cbt *t)
{
  char path[PATH_MAX];
  int present = 0;
  rpl_err err = RPL_OK;

  cbt_pins_close(t);
  for (int i = 0; i < PIN_COUNT; i++) {
    if (pin_path(t, i, path, sizeof path))
      return rpl_fail(RPL_E_INVALID_ARGUMENT, "pin directory path too long: %s", t->pin_dir);
    t->fd[i] = bpf_obj_get(path);
    if (t->fd[i] >= 0)
      present++;
    else if (errno != ENOENT)
      err = rpl_fail(errno == EPERM || errno == EACCES ? RPL_E_PERMISSION : RPL_E_IO,
                 "cannot open pinned %s: %s (run as root)", path, strerror(errno));
  }
  if (err) {
    cbt_pins_close(t);
    return err;
  }
  if (present == 0) {
    cbt_pins_close(t);
    return RPL_E_NOT_FOUND;
  }
  /* Another agent version's tracker (other slot layout or other set of objects) is never touched. */
  uint32_t max_entries = 0, value_size = 0;
  if (t->fd[PIN_DEVICES] >= 0)
    t->devices_map_id = fd_object_id(t->fd[PIN_DEVICES], &max_entries, &value_size);
  uint32_t counters_entries = 0, counters_size = 0;
  if (t->fd[PIN_COUNTERS] >= 0)
    fd_object_id(t->fd[PIN_COUNTERS], &counters_entries, &counters_size);
  if ((t->fd[PIN_DEVICES] >= 0 &&
       (!t->devices_map_id || max_entries != CBT_MAX_DEVICES || value_size != sizeof(struct cbt_slot))) ||
      (t->fd[PIN_COUNTERS] >= 0 && counters_size != sizeof(struct cbt_counters))) {
    cbt_pins_close(t);
    return rpl_fail(RPL_E_CBT_PINS_INCOMPATIBLE,
                "the tracker pinned in %s has another layout (agent version mismatch): stop its devices with "
                "the agent that started them, or remove %s (every tracked device then needs a resync)",
                t->pin_dir, t->pin_dir);
  }
  if (present < PIN_COUNT) {
    log_warn("the pinned tracker in %s is incomplete (interrupted install or removal): removing it", t->pin_dir);
    cbt_pins_remove(t);
    return RPL_E_NOT_FOUND;
  }
  t->slots_bytes = CBT_MAX_DEVICES * sizeof(struct cbt_slot); /* 16 KiB: whole pages */
  void *slots = mmap(NULL, t->slots_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, t->fd[PIN_DEVICES], 0);
  if (slots == MAP_FAILED) {
    err = rpl_fail(RPL_E_IO, "cannot mmap the pinned cbt_devices map: %s", strerror(errno));
    cbt_pins_close(t);
    return err;
  }
  t->slots = slots;
  for (int i = 0; i < PROGRAMS; i++) {
    struct bpf_link_info info;
    uint32_t len = sizeof info;
    memset(&info, 0, sizeof info);
    if (bpf_obj_get_info_by_fd(t->fd[PIN_FIRST_LINK + i], &info, &len) ||
        (t->prog_fd[i] = bpf_prog_get_fd_by_id(info.prog_id)) < 0) {
      err = rpl_fail(RPL_E_IO, "cannot inspect the pinned tracker program %s: %s", pin_names[PIN_FIRST_LINK + i],
                 strerror(errno));
      cbt_pins_close(t);
      return err;
    }
  }
  struct bpf_prog_info info;
  uint32_t len = sizeof info;
  memset(&info, 0, sizeof info);
  if (bpf_obj_get_info_by_fd(t->prog_fd[0], &info, &len) == 0) {
    t->typed_tracepoints = info.type == BPF_PROG_TYPE_TRACING;
    t->variant = CBT_VARIANT_BPF_LOOP;
    for (enum cbt_variant v = CBT_VARIANT_BOUNDED; v <= CBT_VARIANT_LEGACY; v++)
      if (!strncmp(info.name, variant_prefix[v], strlen(variant_prefix[v])))
        t->variant = v;
  }
  return RPL_OK;
}

/* Re-opens the pins when another process removed or replaced them since we opened them. */
rpl_err cbt_pins_refresh(struct cbt *t)
{
  if (t->slots) {
    char path[PATH_MAX];
    if (!pin_path(t, PIN_DEVICES, path, sizeof path)) {
      int fd = bpf_obj_get(path);
      uint32_t id = fd >= 0 ? fd_object_id(fd, NULL, NULL) : 0;
      if (fd >= 0)
        close(fd);
      if (id && id == t->devices_map_id)
        return RPL_OK;
    }
  }
  rpl_err err = pins_open(t);
  return err == RPL_E_NOT_FOUND ? RPL_OK : err;
}

bool cbt_pins_installed(const struct cbt *t)
{
  return t->slots != NULL;
}

/* bpffs must hold the pin directory; /sys/fs/bpf is mounted if it is not yet. */
static rpl_err ensure_bpffs(struct cbt *t)
{
  struct statfs fs;
  if (!strncmp(t->pin_dir, BPFFS_ROOT "/", sizeof BPFFS_ROOT) &&
      (statfs(BPFFS_ROOT, &fs) != 0 || fs.f_type != BPF_FS_MAGIC)) {
    cbt_mkdir_parents(BPFFS_ROOT, 0755);
    if (mount("bpf", BPFFS_ROOT, "bpf", 0, "mode=0700") != 0) {
      cbt_set_no_ebpf_reason(t,
               "bpffs is not mounted on " BPFFS_ROOT " and mounting it failed (%s): mount -t bpf bpf " BPFFS_ROOT,
               strerror(errno));
      return RPL_E_CBT_NO_BPFFS;
    }
    log_info("mounted bpffs on " BPFFS_ROOT);
  }
  if (cbt_mkdir_parents(t->pin_dir, 0700) != 0 || statfs(t->pin_dir, &fs) != 0 || fs.f_type != BPF_FS_MAGIC) {
    cbt_set_no_ebpf_reason(t, "the pin directory %s is not on a bpffs mount (%s)",
             t->pin_dir, errno ? strerror(errno) : "wrong file system");
    return RPL_E_CBT_NO_BPFFS;
  }
  return RPL_OK;
}

/* ---- variants ---- */

const char *cbt_variant_name(enum cbt_variant variant)
{
  switch (variant) {
  case CBT_VARIANT_BPF_LOOP:
    return "bpf_loop";
  case CBT_VARIANT_BOUNDED:
    return "bounded";
  case CBT_VARIANT_LEGACY:
    return "legacy";
  case CBT_VARIANT_NONE:
    break;
  }
  return "none";
}

/* 1 if the kernel takes an atomic OR (BPF_ATOMIC | BPF_OR, Linux 5.12+), 0 if not, -errno if it could
 * not be asked: a socket filter ORs a bit into a stack slot. Before 5.12 the only atomic was the add,
 * and the kernel refuses any other operation in its immediate. */
static int probe_atomic_or(void)
{
  const struct bpf_insn insns[] = {
    {.code = BPF_ST | BPF_MEM | BPF_DW, .dst_reg = BPF_REG_10, .off = -8, .imm = 0},
    {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_1, .imm = 1},
    {.code = BPF_STX | BPF_ATOMIC | BPF_DW, .dst_reg = BPF_REG_10, .src_reg = BPF_REG_1, .off = -8, .imm = BPF_OR},
    {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = 0},
    {.code = BPF_JMP | BPF_EXIT},
  };
  int fd = bpf_prog_load(BPF_PROG_TYPE_SOCKET_FILTER, NULL, "GPL", insns, sizeof insns / sizeof insns[0], NULL);
  if (fd >= 0) {
    close(fd);
    return 1;
  }
  return errno == EINVAL ? 0 : -errno;
}

/* The variant an install loads now, and why. CBT_VARIANT_NONE when the override is not understood. */
static enum cbt_variant choose_variant(char *why, size_t size)
{
  const char *forced = getenv(CBT_VARIANT_ENV);
  /* libbpf loads a two-instruction program calling the helper: the kernel's answer, backports included. */
  int probe = libbpf_probe_bpf_helper(BPF_PROG_TYPE_RAW_TRACEPOINT, BPF_FUNC_loop, NULL);
  const char *has = probe == 1 ? "has" : probe == 0 ? "lacks" : "could not be probed for";
  if (forced && *forced && strcmp(forced, "auto")) {
    for (enum cbt_variant v = CBT_VARIANT_BPF_LOOP; v <= CBT_VARIANT_LEGACY; v++)
      if (!strcmp(forced, cbt_variant_name(v))) {
        snprintf(why, size, "forced by " CBT_VARIANT_ENV "=%s (the kernel %s the bpf_loop helper)", forced, has);
        return v;
      }
    snprintf(why, size, CBT_VARIANT_ENV "=%s is none of auto, bpf_loop, bounded, legacy", forced);
    return CBT_VARIANT_NONE;
  }
  if (probe == 1) {
    snprintf(why, size, "the kernel has the bpf_loop helper (Linux 5.17+)");
    return CBT_VARIANT_BPF_LOOP;
  }
  char loop_why[128];
  if (probe == 0)
    snprintf(loop_why, sizeof loop_why, "the kernel lacks the bpf_loop helper (Linux 5.17+)");
  else
    snprintf(loop_why, sizeof loop_why, "probing the kernel for the bpf_loop helper failed (%s)", strerror(-probe));
  int atomic_or = probe_atomic_or();
  if (atomic_or == 0) {
    snprintf(why, size, "%s and atomic OR (Linux 5.12+): bounded loops and byte stores instead", loop_why);
    return CBT_VARIANT_LEGACY;
  }
  if (atomic_or < 0)
    snprintf(why, size, "%s, probing it for atomic OR failed (%s): bounded loops instead", loop_why,
             strerror(-atomic_or));
  else
    snprintf(why, size, "%s: bounded loops instead", loop_why);
  return CBT_VARIANT_BOUNDED;
}

enum cbt_variant cbt_variant_describe(struct cbt *t, bool *running, const char **why)
{
  char choice_why[256];
  enum cbt_variant choice = choose_variant(choice_why, sizeof choice_why);
  *running = cbt_pins_installed(t) && t->variant != CBT_VARIANT_NONE;
  *why = t->variant_why;
  const char *attach = !*running ? "" : t->typed_tracepoints ? "; BTF-typed tracepoints" : "; raw tracepoints";
  if (!*running || t->variant == choice) {
    snprintf(t->variant_why, sizeof t->variant_why, "%s%s", choice_why, attach);
    return *running ? t->variant : choice;
  }
  /* Installed by an earlier process under other conditions (an override, or the bpf_loop variant
   * refused by this kernel's verifier): it runs until the tracker is installed again. */
  snprintf(t->variant_why, sizeof t->variant_why,
           "installed so by an earlier start; an install now would load %s (%s): that happens when the last "
           "device stops and one starts again%s",
           cbt_variant_name(choice), choice_why, attach);
  return t->variant;
}

/* One variant's skeleton, opened: the typed skeleton calls behind plain pointers, and the maps and
 * link slots in pin order (the two skeletons differ in their type and program names only). Each
 * skeleton has block_bio_queue and block_rq_complete programs twice, for raw tracepoints (probe
 * reads) and for BTF-typed ones (plain loads); one pair is loaded. */
struct opened_tracker {
  void *skel;
  int (*load)(void *skel);
  int (*attach)(void *skel);
  void (*destroy)(void *skel);
  struct bpf_map *maps[PIN_FIRST_LINK];
  struct bpf_link **links[PROGRAMS];
};

static int loop_load(void *skel) { return cbt_bpf__load(skel); }
static int loop_attach(void *skel) { return cbt_bpf__attach(skel); }
static void loop_destroy(void *skel) { cbt_bpf__destroy(skel); }
static int bounded_load(void *skel) { return cbt_bounded_bpf__load(skel); }
static int bounded_attach(void *skel) { return cbt_bounded_bpf__attach(skel); }
static void bounded_destroy(void *skel) { cbt_bounded_bpf__destroy(skel); }
static int legacy_load(void *skel) { return cbt_legacy_bpf__load(skel); }
static int legacy_attach(void *skel) { return cbt_legacy_bpf__attach(skel); }
static void legacy_destroy(void *skel) { cbt_legacy_bpf__destroy(skel); }

/* Whether the kernel's block_bio_queue tracepoint still passes the request_queue first (before 5.11:
 * (q, bio), since: (bio)), read from the prototype its BTF gives the tracepoint's handler
 * (btf_trace_block_bio_queue: the context, then the arguments). A BTF without it (a file given
 * with MOBILITY_AGENT_BTF may lack it) leaves the running kernel's release to decide. */
static bool bio_queue_has_queue_arg(const char *btf_path)
{
  int params = -1;
  struct btf *btf = btf__parse(btf_path, NULL);
  if (btf) {
    int id = btf__find_by_name_kind(btf, "btf_trace_block_bio_queue", BTF_KIND_TYPEDEF);
    const struct btf_type *type = id > 0 ? btf__type_by_id(btf, (uint32_t)id) : NULL;
    if (type)
      type = btf__type_by_id(btf, type->type);
    if (type && btf_is_ptr(type))
      type = btf__type_by_id(btf, type->type);
    if (type && btf_is_func_proto(type))
      params = btf_vlen(type);
    btf__free(btf);
  }
  if (params >= 0)
    return params == 3;
  struct utsname u;
  unsigned major = 0, minor = 0;
  if (uname(&u) != 0 || sscanf(u.release, "%u.%u", &major, &minor) != 2)
    return false;
  return major < 5 || (major == 5 && minor < 11);
}

/* The raw and the BTF-typed program of one role: the one not wanted is not loaded. */
static void pick(struct bpf_program *raw, struct bpf_program *typed, bool btf_typed)
{
  bpf_program__set_autoload(raw, !btf_typed);
  bpf_program__set_autoload(typed, btf_typed);
}

static int open_variant(enum cbt_variant variant, bool btf_typed, const char *btf_path,
                        const struct bpf_object_open_opts *opts, struct opened_tracker *o)
{
  if (variant == CBT_VARIANT_LEGACY) { /* raw tracepoints only; block_bio_queue as the kernel calls it */
    struct cbt_legacy_bpf *s = cbt_legacy_bpf__open_opts(opts);
    if (!s)
      return -errno;
    bool queue_arg = bio_queue_has_queue_arg(btf_path);
    bpf_program__set_autoload(s->progs.cbtl_bio_queue, !queue_arg);
    bpf_program__set_autoload(s->progs.cbtl_bio_queue_q, queue_arg);
    *o = (struct opened_tracker){
      .skel = s, .load = legacy_load, .attach = legacy_attach, .destroy = legacy_destroy,
      .maps = {s->maps.cbt_devices, s->maps.cbt_devmap, s->maps.cbt_bitmaps, s->maps.cbt_inflight,
               s->maps.cbt_counters},
      .links = {queue_arg ? &s->links.cbtl_bio_queue_q : &s->links.cbtl_bio_queue, &s->links.cbtl_rq_complete,
                &s->links.cbtl_bio_complete},
    };
    return 0;
  }
  if (variant == CBT_VARIANT_BOUNDED) {
    struct cbt_bounded_bpf *s = cbt_bounded_bpf__open_opts(opts);
    if (!s)
      return -errno;
    pick(s->progs.cbtb_bio_queue, s->progs.cbtb_bioq_btf, btf_typed);
    pick(s->progs.cbtb_rq_complete, s->progs.cbtb_rqc_btf, btf_typed);
    *o = (struct opened_tracker){
      .skel = s, .load = bounded_load, .attach = bounded_attach, .destroy = bounded_destroy,
      .maps = {s->maps.cbt_devices, s->maps.cbt_devmap, s->maps.cbt_bitmaps, s->maps.cbt_inflight,
               s->maps.cbt_counters},
      .links = {btf_typed ? &s->links.cbtb_bioq_btf : &s->links.cbtb_bio_queue,
                btf_typed ? &s->links.cbtb_rqc_btf : &s->links.cbtb_rq_complete, &s->links.cbtb_bio_complete},
    };
    return 0;
  }
  struct cbt_bpf *s = cbt_bpf__open_opts(opts);
  if (!s)
    return -errno;
  pick(s->progs.cbt_bio_queue, s->progs.cbt_bioq_btf, btf_typed);
  pick(s->progs.cbt_rq_complete, s->progs.cbt_rqc_btf, btf_typed);
  *o = (struct opened_tracker){
    .skel = s, .load = loop_load, .attach = loop_attach, .destroy = loop_destroy,
    .maps = {s->maps.cbt_devices, s->maps.cbt_devmap, s->maps.cbt_bitmaps, s->maps.cbt_inflight,
             s->maps.cbt_counters},
    .links = {btf_typed ? &s->links.cbt_bioq_btf : &s->links.cbt_bio_queue,
              btf_typed ? &s->links.cbt_rqc_btf : &s->links.cbt_rq_complete, &s->links.cbt_bio_complete},
  };
  return 0;
}

/* Opens, loads and attaches one variant (libbpf-bootstrap order; nothing in .rodata to set). On
 * failure nothing is left open, t->no_ebpf_why says why and *refused tells a verifier refusal. */
static rpl_err load_variant(struct cbt *t, enum cbt_variant variant, bool btf_typed, struct opened_tracker *o,
                            bool *refused)
{
  /* At debug level the verifier's statistics of every program (instructions processed, states)
   * reach the log: how close a kernel's verifier comes to its limits. */
  LIBBPF_OPTS(bpf_object_open_opts, open_opts, .btf_custom_path = t->btf_custom ? t->btf_path : NULL,
              .kernel_log_level = log_get_level() >= LOG_LVL_DEBUG ? 4 : 0);
  *refused = false;
  libbpf_last_warning[0] = '\0';
  int rc = open_variant(variant, btf_typed, t->btf_path, &open_opts, o);
  if (rc) {
    cbt_set_no_ebpf_reason(t, "cannot open the eBPF tracker object (%s variant): %s%s%s", cbt_variant_name(variant),
             strerror(-rc), libbpf_last_warning[0] ? "; libbpf: " : "", libbpf_last_warning);
    return RPL_E_CBT_LOAD;
  }
  rc = o->load(o->skel);
  if (rc) {
    if (rc == -EPERM || rc == -EACCES) {
      cbt_set_no_ebpf_reason(t,
               "not allowed to load eBPF programs (%s): run as root (CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN)",
               strerror(-rc));
    } else {
      *refused = true;
      cbt_set_no_ebpf_reason(t, "the kernel refused the eBPF tracker's %s variant (%s)%s%s", cbt_variant_name(variant),
               strerror(-rc), libbpf_last_warning[0] ? "; libbpf: " : "", libbpf_last_warning);
    }
    o->destroy(o->skel);
    return RPL_E_CBT_LOAD;
  }
  rc = o->attach(o->skel);
  if (rc) {
    cbt_set_no_ebpf_reason(t,
             "cannot attach the tracker to the block_bio_queue / block_rq_complete / block_bio_complete raw "
             "tracepoints (%s)",
             strerror(-rc));
    o->destroy(o->skel);
    return RPL_E_CBT_LOAD;
  }
  return RPL_OK;
}

/* load_variant with BTF-typed tracepoints where the kernel has its own BTF (it types their
 * arguments; a BTF file given with MOBILITY_AGENT_BTF serves CO-RE only), else or if refused with
 * raw ones. Appends which to why. */
static rpl_err load_variant_typed(struct cbt *t, enum cbt_variant variant, struct opened_tracker *o, bool *refused,
                                  char *why, size_t size)
{
  rpl_err err = RPL_E_CBT_LOAD;
  bool typed_refused = false;
  if (variant == CBT_VARIANT_LEGACY) { /* a variant for kernels before 5.12 has no BTF-typed programs */
    err = load_variant(t, variant, false, o, refused);
    if (!err)
      strncat(why, "; raw tracepoints", size - strlen(why) - 1);
    return err;
  }
  if (!t->btf_custom) {
    err = load_variant(t, variant, true, o, refused);
    if (!err) {
      strncat(why, "; BTF-typed tracepoints", size - strlen(why) - 1);
      return RPL_OK;
    }
    if (!*refused)
      return err;
    typed_refused = true;
    log_warn("%s: trying raw tracepoints", t->no_ebpf_why);
    t->no_ebpf_why[0] = '\0';
  }
  err = load_variant(t, variant, false, o, refused);
  if (!err)
    strncat(why, typed_refused ? "; raw tracepoints (the BTF-typed ones were refused)"
                               : "; raw tracepoints (MOBILITY_AGENT_BTF: the kernel has no BTF of its own)",
            size - strlen(why) - 1);
  return err;
}

/* Loads, attaches and pins the programs and maps of the variant chosen now (see cbt_variant_get).
 * On failure t->no_ebpf_why says why when eBPF is unusable here (the caller falls back); other
 * failures are errors. */
rpl_err cbt_pins_install(struct cbt *t)
{
  struct opened_tracker o;
  char path[PATH_MAX];
  rpl_err err = RPL_OK;
  int pinned = 0;

  t->no_ebpf_why[0] = '\0';
  if (access(t->btf_path, R_OK) != 0) {
    cbt_set_no_ebpf_reason(t,
             "kernel BTF not found at %s (%s): this kernel lacks CONFIG_DEBUG_INFO_BTF%s", t->btf_path,
             strerror(errno), t->btf_custom ? "" : "; set MOBILITY_AGENT_BTF to a BTF file for it");
    return RPL_E_UNSUPPORTED;
  }
  err = ensure_bpffs(t);
  if (err)
    return err;

  char why[384];
  enum cbt_variant variant = choose_variant(why, sizeof why);
  if (variant == CBT_VARIANT_NONE)
    return rpl_fail(RPL_E_INVALID_ARGUMENT, "%s: unset it or set it to auto (the kernel's features decide)", why);
  bool refused;
  err = load_variant_typed(t, variant, &o, &refused, why, sizeof why);
  const char *forced = getenv(CBT_VARIANT_ENV);
  /* A kernel that refuses the variant chosen (a distribution's partial backport: the bpf_loop helper
   * without what its verifier needs with it, atomics without pointer arguments of global functions)
   * gets the next one down, which needs less of it, unless the one refused was forced. */
  static const char *const instead[] = {[CBT_VARIANT_BOUNDED] = "bounded loops",
                                        [CBT_VARIANT_LEGACY] = "bounded loops and byte stores"};
  while (err && refused && variant < CBT_VARIANT_LEGACY && !(forced && !strcmp(forced, cbt_variant_name(variant)))) {
    enum cbt_variant next = variant + 1;
    log_warn("%s: trying the %s variant", t->no_ebpf_why, cbt_variant_name(next));
    snprintf(why, sizeof why, "the kernel refused the %s variant: %s instead", cbt_variant_name(variant),
             instead[next]);
    variant = next;
    t->no_ebpf_why[0] = '\0';
    err = load_variant_typed(t, variant, &o, &refused, why, sizeof why);
  }
  if (err)
    return err;

  for (pinned = 0; pinned < PIN_COUNT; pinned++) {
    if (pin_path(t, pinned, path, sizeof path)) {
      err = rpl_fail(RPL_E_INVALID_ARGUMENT, "pin directory path too long: %s", t->pin_dir);
      goto cleanup;
    }
    int rc = pinned < PIN_FIRST_LINK ? bpf_map__pin(o.maps[pinned], path)
                                     : bpf_link__pin(*o.links[pinned - PIN_FIRST_LINK], path);
    if (rc) {
      err = rpl_fail(RPL_E_IO, "cannot pin %s: %s", path, strerror(-rc));
      goto cleanup;
    }
  }
  log_info("eBPF change-block tracker (%s variant: %s) loaded and pinned in %s", cbt_variant_name(variant), why,
           t->pin_dir);
  cbt_refusal_forget(t);

cleanup:
  if (err && pinned > 0)
    for (int i = pinned - 1; i >= 0; i--)
      if (!pin_path(t, i, path, sizeof path))
        unlink(path);
  o.destroy(o.skel); /* pinned links keep the programs attached */
  if (err)
    return err;
  return pins_open(t);
}

/* ---- slots ---- */

uint32_t cbt_block_shift_for(uint64_t size)
{
  uint32_t shift = CBT_MIN_BLOCK_SHIFT;
  while (((size + (1ULL << shift) - 1) >> shift) > CBT_MAX_BLOCKS)
    shift++;
  return shift;
}

int cbt_find_slot(const struct cbt *t, uint32_t kdev)
{
  if (!cbt_pins_installed(t))
    return -1;
  for (int i = 0; i < CBT_MAX_DEVICES; i++)
    if (__atomic_load_n(&t->slots[i].dev, __ATOMIC_ACQUIRE) == kdev)
      return i;
  return -1;
}

bool cbt_any_slot_used(const struct cbt *t)
{
  for (int i = 0; cbt_pins_installed(t) && i < CBT_MAX_DEVICES; i++)
    if (__atomic_load_n(&t->slots[i].dev, __ATOMIC_ACQUIRE))
      return true;
  return false;
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#else
  __asm__ __volatile__("" ::: "memory");
#endif
}

/* Waits until no program marks buffer `buffer` of slot s (see the flip protocol, cbt_shared.h). */
rpl_err cbt_wait_inactive(struct cbt *t, struct cbt_slot *s, int buffer)
{
  uint64_t start = rpl_mono_ns();
  for (unsigned spins = 0; __atomic_load_n(&s->active[buffer], __ATOMIC_ACQUIRE) != 0; spins++) {
    if (spins < 1000) {
      cpu_relax();
      continue;
    }
    sched_yield();
    if (rpl_mono_ns() - start > ACTIVE_WAIT_NS)
      return rpl_fail(RPL_E_CBT_STUCK, "tracker programs did not leave buffer %d within 5 s (active count %" PRIu64 ")",
                  buffer, (uint64_t)__atomic_load_n(&s->active[buffer], __ATOMIC_RELAXED));
  }
  return RPL_OK;
}

/* Maps slot's bitmap (cached by map id). */
rpl_err cbt_map_bitmap(struct cbt *t, int slot, struct mapped_bitmap **out)
{
  struct mapped_bitmap *m = &t->bitmaps[slot];
  uint32_t key = (uint32_t)slot, id = 0;
  if (bpf_map_lookup_elem(t->fd[PIN_BITMAPS], &key, &id) != 0 || !id)
    return rpl_fail(RPL_E_IO, "slot %d has no bitmap map: %s", slot, strerror(errno));
  if (m->map_id == id && m->words) {
    *out = m;
    return RPL_OK;
  }
  unmap_bitmap(m);
  int fd = bpf_map_get_fd_by_id(id);
  if (fd < 0)
    return rpl_fail(RPL_E_IO, "cannot open bitmap map %u: %s", id, strerror(errno));
  uint32_t max_entries = 0;
  fd_object_id(fd, &max_entries, NULL);
  cbt_layout_init(&m->layout, t->slots[slot].nr_blocks ? t->slots[slot].nr_blocks : 1);
  if ((uint64_t)max_entries < 2 * m->layout.buffer_words) {
    close(fd);
    return rpl_fail(RPL_E_INTERNAL, "bitmap map %u has %u words, the slot needs %" PRIu64, id, max_entries,
                2 * m->layout.buffer_words);
  }
  m->bytes = ((size_t)max_entries * 8 + 4095) & ~(size_t)4095;
  void *words = mmap(NULL, m->bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  int saved = errno;
  close(fd); /* the mapping keeps the map alive */
  if (words == MAP_FAILED) {
    memset(m, 0, sizeof *m);
    return rpl_fail(RPL_E_IO, "cannot mmap bitmap map %u: %s", id, strerror(saved));
  }
  m->words = words;
  m->map_id = id;
  *out = m;
  return RPL_OK;
}

uint64_t cbt_program_misses(const struct cbt *t)
{
  uint64_t total = 0;
  for (int i = 0; i < PROGRAMS; i++) {
    struct bpf_prog_info info;
    uint32_t len = sizeof info;
    memset(&info, 0, sizeof info);
    if (t->prog_fd[i] >= 0 && bpf_obj_get_info_by_fd(t->prog_fd[i], &info, &len) == 0)
      total += info.recursion_misses;
  }
  return total;
}

/* Attaches a free slot to the disk of d (whose record already carries the UUID). */
rpl_err cbt_slot_attach(struct cbt *t, struct tracked *d)
{
  /* The first free slot from the disk's home slot on: in its home slot the programs find it
   * without the hash map. */
  uint32_t home = cbt_home_slot(kernel_dev(d->dev.major, d->dev.minor));
  int slot = -1;
  for (uint32_t n = 0; n < CBT_MAX_DEVICES && slot < 0; n++) {
    uint32_t i = (home + n) % CBT_MAX_DEVICES;
    if (__atomic_load_n(&t->slots[i].dev, __ATOMIC_ACQUIRE) == 0)
      slot = (int)i;
  }
  if (slot < 0)
    return rpl_fail(RPL_E_CBT_TOO_MANY_DEVICES, "all %d tracker slots are in use: stop tracking a device first",
                CBT_MAX_DEVICES);

  uint32_t shift = cbt_block_shift_for(d->dev.size);
  uint64_t nr_blocks = (d->dev.size + (1ULL << shift) - 1) >> shift;
  struct cbt_layout layout;
  cbt_layout_init(&layout, nr_blocks);

  LIBBPF_OPTS(bpf_map_create_opts, opts, .map_flags = BPF_F_MMAPABLE | BPF_F_INNER_MAP);
  int bitmap_fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, "cbt_bitmap", 4, 8, (uint32_t)(2 * layout.buffer_words), &opts);
  if (bitmap_fd < 0)
    return rpl_fail(errno == ENOMEM ? RPL_E_NOMEM : RPL_E_IO, "cannot create the %" PRIu64 "-byte bitmap of %s: %s",
                2 * layout.buffer_words * 8, d->dev.path, strerror(errno));

  /* Set the slot up while dev == 0: no program uses it until dev and the devmap entry appear. */
  struct cbt_slot *s = &t->slots[slot];
  __atomic_store_n(&s->gen_seq, 0, __ATOMIC_RELAXED);
  s->block_shift = shift;
  s->nr_blocks = nr_blocks;
  s->l1_offset = layout.l1_offset;
  s->l2_offset = layout.l2_offset;
  s->buffer_words = layout.buffer_words;
  memcpy(s->uuid, d->rec.uuid, sizeof s->uuid);
  /* The kernel's count before the programs can see the disk, and again once they can: completions
   * between the two are in the programs' count and not after the base, so any difference only hides
   * that many missed sectors (logged); it never invents a miss. Bio-based disks are not compared:
   * device mapper and md count their own bios' sectors, not where the programs run. */
  uint64_t kernel_before = 0;
  bool check = !d->dev.bio_based && cbt_kernel_written_sectors(d->dev.name, &kernel_before) == RPL_OK;
  s->flags = (d->dev.bio_based ? CBT_SLOT_BIO_BASED : 0) | (check ? CBT_SLOT_COMPLETIONS_CHECKED : 0);
  s->kernel_sectors_base = kernel_before;
  s->completion_repairs = 0;
  struct timespec boot;
  clock_gettime(CLOCK_BOOTTIME, &boot);
  s->attach_boot_ns = (uint64_t)boot.tv_sec * 1000000000ULL + (uint64_t)boot.tv_nsec;
  s->diskseq = d->dev.diskseq;
  __atomic_store_n(&s->lost_inflight_full, 0, __ATOMIC_RELAXED);
  __atomic_store_n(&s->lost_out_of_range, 0, __ATOMIC_RELAXED);
  __atomic_store_n(&s->lost_retry_exhausted, 0, __ATOMIC_RELAXED);
  __atomic_store_n(&s->lost_bitmap_missing, 0, __ATOMIC_RELAXED);

  rpl_err err = RPL_OK;
  uint32_t key = (uint32_t)slot, kdev = kernel_dev(d->dev.major, d->dev.minor);
  size_t counters_bytes = (size_t)t->ncpus * sizeof(struct cbt_counters);
  void *zero = calloc(1, counters_bytes);
  if (!zero) {
    close(bitmap_fd);
    return RPL_E_NOMEM;
  }
  if (bpf_map_update_elem(t->fd[PIN_COUNTERS], &key, zero, BPF_ANY) != 0 ||
      bpf_map_update_elem(t->fd[PIN_BITMAPS], &key, &bitmap_fd, BPF_ANY) != 0) {
    err = rpl_fail(RPL_E_IO, "cannot install the bitmap of %s in slot %d: %s", d->dev.path, slot, strerror(errno));
    goto cleanup;
  }
  __atomic_store_n(&s->dev, kdev, __ATOMIC_SEQ_CST);
  if (bpf_map_update_elem(t->fd[PIN_DEVMAP], &kdev, &key, BPF_ANY) != 0) {
    __atomic_store_n(&s->dev, 0, __ATOMIC_SEQ_CST);
    err = rpl_fail(RPL_E_IO, "cannot register %s with the tracker: %s", d->dev.path, strerror(errno));
    goto cleanup;
  }
  uint64_t kernel_after = 0;
  if (check && cbt_kernel_written_sectors(d->dev.name, &kernel_after) == RPL_OK && kernel_after != kernel_before) {
    __atomic_store_n(&s->kernel_sectors_base, kernel_after, __ATOMIC_RELAXED);
    log_info("%s: %" PRIu64 " sectors completed while tracking attached: a completion the kernel skips may go "
             "unnoticed by that many sectors", d->dev.path, kernel_after - kernel_before);
  }
  d->slot = slot;
  cbt_history_begin(t, slot);
  cbt_owner_record(t, slot, d->rec.name);
  d->rec.block_shift = shift;
  d->rec.size = d->dev.size;
  d->rec.diskseq = d->dev.diskseq;
  d->rec.fallback = false;
  d->rec.armed = true;
  memset(d->rec.losses_seen, 0, sizeof d->rec.losses_seen);
  d->rec.program_misses_seen = cbt_program_misses(t);
  d->dirty = true;
  log_info("tracking %s (%s) in slot %d: granularity %u bytes, %" PRIu64 " blocks", d->dev.path, d->dev.name, slot,
           1u << shift, nr_blocks);

cleanup:
  free(zero);
  close(bitmap_fd); /* the outer map holds it */
  return err;
}

rpl_err cbt_slot_detach(struct cbt *t, int slot)
{
  struct cbt_slot *s = &t->slots[slot];
  uint32_t key = (uint32_t)slot, kdev = __atomic_load_n(&s->dev, __ATOMIC_ACQUIRE);
  if (kdev && bpf_map_delete_elem(t->fd[PIN_DEVMAP], &kdev) != 0 && errno != ENOENT)
    log_warn("cannot remove device %u:%u from the tracker's device map: %s", kdev >> 20, kdev & 0xfffff,
             strerror(errno));
  __atomic_store_n(&s->dev, 0, __ATOMIC_SEQ_CST);
  rpl_err err = cbt_wait_inactive(t, s, 0);
  if (!err)
    err = cbt_wait_inactive(t, s, 1);
  if (err)
    return err;
  unmap_bitmap(&t->bitmaps[slot]);
  cbt_history_forget(t, slot);
  if (bpf_map_delete_elem(t->fd[PIN_BITMAPS], &key) != 0 && errno != ENOENT)
    log_warn("cannot free the bitmap of slot %d: %s", slot, strerror(errno));
  memset(s->uuid, 0, sizeof s->uuid);
  cbt_owner_forget(t, slot);
  return RPL_OK;
}
