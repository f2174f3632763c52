/* cbt_flip_stress.c - Description: writer threads make continuous random writes, discards and
 * write-zeroes on a tracked device while a drainer flips about every millisecond and copies each
 * drained extent from the device; after the writers stop and a final drain, the copy must equal the
 * device byte for byte. A write in flight across a flip that the tracker failed to re-report
 * (the in-flight race) shows up as a difference. A completion the kernel did not run the
 * tracker's program for must come out as the resync reason completion-missed (the cycle then
 * copies the whole device, as the agent's resync reads it); any other resync fails. Then: a
 * merged-back set and an uncommitted generation come out of the next drain.
 * Usage: cbt_flip_stress DEVICE SECONDS STATE_DIR */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <sys/sysmacros.h>
#include <sys/stat.h>

#include "cbt.h"
#include "cbt_shared.h"

#define WRITERS 8
#define MAX_IO (128 * 1024)   /* above loop's 127.5 KiB max_sectors: some writes are split */
/* Pause of a writer between its writes: keeps the data rate at a level the drainer copies within
 * its millisecond, while about one write in three is in flight at any flip. */
#define WRITER_PAUSE_NS 1000000
#define READ_CHUNK (1024 * 1024)

static const char *device;
static uint64_t device_size;
static atomic_bool stop_writers;
static atomic_uint_fast64_t writes_done, discards_done, zeroouts_done;

static uint64_t now_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static uint64_t xorshift(uint64_t *s)
{
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

static void *writer(void *arg)
{
  uint64_t seed = 0x9e3779b97f4a7c15ULL * ((uintptr_t)arg + 1);
  int fd = open(device, O_RDWR | O_DIRECT);
  void *buf;
  if (fd < 0 || posix_memalign(&buf, 4096, MAX_IO)) {
    fprintf(stderr, "writer: cannot open %s: %s\n", device, strerror(errno));
    exit(1);
  }
  bool zeroout_works = true, discard_works = true;
  while (!atomic_load(&stop_writers)) {
    uint64_t r = xorshift(&seed);
    /* mostly 4-32 KiB; one in 16 up to MAX_IO */
    uint64_t len = 4096 * (1 + r % ((r >> 40) % 16 == 0 ? MAX_IO / 4096 : 8));
    uint64_t off = 4096 * ((r >> 20) % (device_size / 4096));
    if (off + len > device_size)
      len = device_size - off;
    unsigned kind = (unsigned)(r >> 56) % 100;
    if (kind < 3 && discard_works) {
      uint64_t range[2] = {off, len};
      if (ioctl(fd, BLKDISCARD, range) == 0)
        atomic_fetch_add(&discards_done, 1);
      else if (errno == EOPNOTSUPP)
        discard_works = false;
      else {
        fprintf(stderr, "writer: BLKDISCARD: %s\n", strerror(errno));
        exit(1);
      }
      continue;
    }
    if (kind < 6 && zeroout_works) {
      uint64_t range[2] = {off, len};
      if (ioctl(fd, BLKZEROOUT, range) == 0)
        atomic_fetch_add(&zeroouts_done, 1);
      else if (errno == EOPNOTSUPP)
        zeroout_works = false;
      else {
        fprintf(stderr, "writer: BLKZEROOUT: %s\n", strerror(errno));
        exit(1);
      }
      continue;
    }
    for (uint64_t i = 0; i < len / 8; i++)
      ((uint64_t *)buf)[i] = xorshift(&seed);
    if (pwrite(fd, buf, len, (off_t)off) != (ssize_t)len) {
      fprintf(stderr, "writer: pwrite at %" PRIu64 ": %s\n", off, strerror(errno));
      exit(1);
    }
    atomic_fetch_add(&writes_done, 1);
    struct timespec pause = {0, WRITER_PAUSE_NS};
    nanosleep(&pause, NULL);
  }
  free(buf);
  close(fd);
  return NULL;
}

static void die_cbt(struct cbt *t, const char *what, rpl_err err)
{
  fprintf(stderr, "FAIL: %s: %s (%s)\n", what, rpl_detail(err), rpl_strerror(err));
  (void)t;
  exit(1);
}

/* Completions the kernel did not run the tracker's program for (see the resync reason
 * completion-missed): each one makes a cycle copy the whole device, as the agent's resync does. */
static uint64_t missed_resyncs;

static void copy_range(int fd, unsigned char *copy, void *chunk, uint64_t from, uint64_t end, uint64_t *bytes)
{
  for (uint64_t off = from; off < end; off += READ_CHUNK) {
    size_t len = end - off < READ_CHUNK ? (size_t)(end - off) : READ_CHUNK;
    if (pread(fd, chunk, len, (off_t)off) != (ssize_t)len) {
      fprintf(stderr, "FAIL: read at %" PRIu64 ": %s\n", off, strerror(errno));
      exit(1);
    }
    memcpy(copy + off, chunk, len);
    *bytes += len;
  }
}

/* One cycle: flip, drain, copy every drained extent from the device into copy, commit; after a
 * missed completion, the whole device, and the event acknowledged. Any other resync fails. */
static uint64_t cycle(struct cbt *t, int fd, unsigned char *copy, void *chunk, struct cbt_extents *set)
{
  uint64_t generation, bytes = 0;
  rpl_err err = cbt_flip(t, device, &generation);
  if (err)
    die_cbt(t, "flip", err);
  struct cbt_status st;
  if ((err = cbt_status_get(t, device, &st)))
    die_cbt(t, "status", err);
  if (st.resync_required && st.resync_reason != CBT_RESYNC_COMPLETION_MISSED) {
    fprintf(stderr, "FAIL: resync required (%s) during the stress\n", cbt_resync_reason_name(st.resync_reason));
    exit(1);
  }
  do {
    err = cbt_drain(t, device, set);
    if (err && err != RPL_E_AGAIN)
      die_cbt(t, "drain", err);
    for (size_t i = 0; i < set->count; i++)
      copy_range(fd, copy, chunk, set->items[i].offset, set->items[i].offset + set->items[i].length, &bytes);
    cbt_extents_clear(set);
  } while (err == RPL_E_AGAIN);
  if (st.resync_required) {
    copy_range(fd, copy, chunk, 0, device_size, &bytes);
    missed_resyncs++;
  }
  err = cbt_commit(t, device, generation);
  if (err)
    die_cbt(t, "commit", err);
  if (st.resync_required && (err = cbt_ack_resync(t, device, st.resync_count)) && err != RPL_E_CBT_ACK_STALE)
    die_cbt(t, "ack", err);
  return bytes;
}

/* Drains one generation into set (the set is cleared first; all of it must fit). */
static uint64_t drain_all(struct cbt *t, struct cbt_extents *set, bool commit)
{
  uint64_t generation;
  rpl_err err = cbt_flip(t, device, &generation);
  if (err)
    die_cbt(t, "flip", err);
  cbt_extents_clear(set);
  err = cbt_drain(t, device, set);
  if (err)
    die_cbt(t, "drain", err);
  if (commit && (err = cbt_commit(t, device, generation)))
    die_cbt(t, "commit", err);
  return generation;
}

static void expect_extents(const struct cbt_extents *set, const struct cbt_extent *want, size_t n, const char *what)
{
  bool same = set->count == n;
  for (size_t i = 0; same && i < n; i++)
    same = set->items[i].offset == want[i].offset && set->items[i].length == want[i].length;
  if (!same) {
    fprintf(stderr, "FAIL: %s: drained %zu extents, expected %zu:", what, set->count, n);
    for (size_t i = 0; i < set->count && i < 8; i++)
      fprintf(stderr, " %" PRIu64 "+%" PRIu64, set->items[i].offset, set->items[i].length);
    fprintf(stderr, "\n");
    exit(1);
  }
}

/* After the stress (writers stopped, everything drained): a merged-back set comes out of the next
 * drain exactly; a drained but uncommitted generation is reported again by the next flip. */
static void check_merge_and_fold(struct cbt *t, struct cbt_extents *set)
{
  drain_all(t, set, true);
  struct cbt_extents merged;
  cbt_extents_init(&merged, 16, 0);
  rpl_err err = RPL_OK;
  if (cbt_extents_add(&merged, 4096, 8192) || cbt_extents_add(&merged, 1 << 20, 4096) ||
      (err = cbt_merge(t, device, &merged))) {
    fprintf(stderr, "FAIL: merge: %s (%s)\n", rpl_detail(err), rpl_strerror(err));
    exit(1);
  }
  drain_all(t, set, true);
  expect_extents(set, merged.items, merged.count, "merged-back set");
  cbt_extents_free(&merged);

  int fd = open(device, O_WRONLY | O_DIRECT);
  void *buf;
  if (fd < 0 || posix_memalign(&buf, 4096, 4096))
    exit(1);
  memset(buf, 0x5a, 4096);
  if (pwrite(fd, buf, 4096, 8 << 20) != 4096)
    exit(1);
  uint64_t uncommitted = drain_all(t, set, false); /* not committed: a failed cycle */
  if (cbt_commit(t, device, uncommitted + 1) != RPL_E_CBT_GENERATION_CHANGED) {
    fprintf(stderr, "FAIL: commit of a generation that was not frozen succeeded\n");
    exit(1);
  }
  if (pwrite(fd, buf, 4096, 16 << 20) != 4096)
    exit(1);
  drain_all(t, set, true);
  /* The legacy variant (kernels before 5.12) marks whole bytes of the bitmap: 8 blocks. */
  bool running;
  const char *why;
  uint64_t marked = cbt_variant_get(t, &running, &why) == CBT_VARIANT_LEGACY ? 8 * 4096 : 4096;
  const struct cbt_extent both[] = {{8 << 20, marked}, {16 << 20, marked}};
  expect_extents(set, both, 2, "uncommitted generation folded into the next");
  drain_all(t, set, true);
  expect_extents(set, NULL, 0, "after commit");
  free(buf);
  close(fd);
}

/* A completion the kernel skipped, made by hand on a fresh attachment: the slot's count of completed
 * sectors (per CPU, in the pinned cbt_counters map) put back by one 4 KiB write after it was
 * committed. The next flip must find the miss and, this handle having kept what it committed, mark
 * that write's 64 KiB chunk in the generation it freezes: drained exactly, no resync, one repair. */
/* len bytes of 0x5a at byte at of the device, O_DIRECT. */
static void write_block(uint64_t at, size_t len)
{
  int fd = open(device, O_WRONLY | O_DIRECT);
  void *buf;
  if (fd < 0 || posix_memalign(&buf, 4096, len) || pwrite(fd, memset(buf, 0x5a, len), len, (off_t)at) != (ssize_t)len) {
    fprintf(stderr, "FAIL: repair check: write: %s\n", strerror(errno));
    exit(1);
  }
  close(fd);
  free(buf);
}

/* What a skipped completion of a write of `sectors` leaves: the completion program's count of the
 * slot that much short (taken from a CPU that counted at least that many). */
static void lower_completed(int counters_fd, int slot, long ncpus, struct cbt_counters *per_cpu, uint64_t sectors)
{
  uint32_t key = (uint32_t)slot;
  long cpu = 0;
  if (bpf_map_lookup_elem(counters_fd, &key, per_cpu)) {
    fprintf(stderr, "FAIL: repair check: cannot read the counters: %s\n", strerror(errno));
    exit(1);
  }
  while (cpu < ncpus && per_cpu[cpu].completed_sectors < sectors)
    cpu++;
  if (cpu == ncpus) {
    fprintf(stderr, "FAIL: repair check: no CPU counted the write's %" PRIu64 " sectors\n", sectors);
    exit(1);
  }
  per_cpu[cpu].completed_sectors -= sectors;
  if (bpf_map_update_elem(counters_fd, &key, per_cpu, BPF_EXIST)) {
    fprintf(stderr, "FAIL: repair check: cannot write the counters: %s\n", strerror(errno));
    exit(1);
  }
}

static void expect_repairs(struct cbt *t, uint64_t repairs)
{
  struct cbt_status st;
  rpl_err err = cbt_status_get(t, device, &st);
  if (err)
    die_cbt(t, "status", err);
  if (st.resync_required || st.completion_repairs != repairs) {
    fprintf(stderr, "FAIL: repair check: resync %s, %" PRIu64 " repairs (expected %" PRIu64 ")\n",
            st.resync_required ? cbt_resync_reason_name(st.resync_reason) : "not required", st.completion_repairs,
            repairs);
    exit(1);
  }
}

static void check_repair(struct cbt *t, struct cbt_extents *set)
{
  const char *pins = getenv("MOBILITY_AGENT_BPF_PIN_DIR");
  char path[4096];
  struct stat dev_st;
  struct cbt_slot_info slots[CBT_MAX_DEVICES];
  size_t nslots = 0;
  int slot = -1;
  /* Tracking anew: the history then holds this check's writes only. */
  rpl_err err = cbt_stop(t, device);
  if (err || (err = cbt_start(t, device)))
    die_cbt(t, "restart of tracking", err);
  if (!pins || stat(device, &dev_st) || cbt_slots_list(t, slots, CBT_MAX_DEVICES, &nslots)) {
    fprintf(stderr, "FAIL: repair check: no pin directory, device or slot list\n");
    exit(1);
  }
  for (size_t i = 0; i < nslots; i++)
    if (slots[i].major == major(dev_st.st_rdev) && slots[i].minor == minor(dev_st.st_rdev))
      slot = slots[i].slot;
  snprintf(path, sizeof path, "%s/cbt_counters", pins);
  int counters_fd = bpf_obj_get(path);
  long ncpus = libbpf_num_possible_cpus();
  struct cbt_counters *per_cpu = calloc((size_t)(ncpus > 0 ? ncpus : 1), sizeof *per_cpu);
  if (slot < 0 || counters_fd < 0 || ncpus <= 0 || !per_cpu) {
    fprintf(stderr, "FAIL: repair check: slot %d, %s: %s\n", slot, path, strerror(errno));
    exit(1);
  }
  drain_all(t, set, true);
  write_block((1 << 20) + 8192, 4096);
  drain_all(t, set, true); /* committed: the write's only mark is gone, its chunk is in the history */
  lower_completed(counters_fd, slot, ncpus, per_cpu, 8);
  drain_all(t, set, true);
  struct cbt_extent chunk = {1 << 20, 65536};
  expect_extents(set, &chunk, 1, "the chunk of a write whose completion was missed");
  expect_repairs(t, 1);

  /* The same found by a look while a flipped generation awaits its commit (a point looks between
   * its flip and its commit): that generation, in no history yet, may have been read before the
   * write landed, so its blocks are marked again too, beside the history's chunks. 32 KiB on a
   * 32 KiB boundary: what every variant marks alike (legacy marks 8 blocks at a time). */
  const uint64_t at = (2 << 20) + 32768;
  write_block(at, 32768);
  uint64_t generation;
  if ((err = cbt_flip(t, device, &generation)))
    die_cbt(t, "flip", err);
  lower_completed(counters_fd, slot, ncpus, per_cpu, 64);
  expect_repairs(t, 2); /* the look */
  cbt_extents_clear(set);
  if ((err = cbt_drain(t, device, set)) || (err = cbt_commit(t, device, generation)))
    die_cbt(t, "drain and commit of the generation flipped before the look", err);
  struct cbt_extent block = {at, 32768};
  expect_extents(set, &block, 1, "the generation flipped before the look");
  drain_all(t, set, true);
  struct cbt_extent both[] = {{1 << 20, 65536}, {at, 32768}};
  expect_extents(set, both, 2, "the history's chunk and the generation that was flipped, marked again by the look");
  close(counters_fd);
  free(per_cpu);
}

int main(int argc, char **argv)
{
  if (argc != 4) {
    fprintf(stderr, "usage: cbt_flip_stress DEVICE SECONDS STATE_DIR\n");
    return 2;
  }
  device = argv[1];
  int seconds = atoi(argv[2]);
  struct cbt_options options = {.state_dir = argv[3]};
  struct cbt *t;
  rpl_err err = cbt_open(&t, &options);
  if (err) {
    fprintf(stderr, "FAIL: cbt_open: %s\n", rpl_strerror(err));
    return 1;
  }
  int fd = open(device, O_RDONLY | O_DIRECT);
  if (fd < 0 || ioctl(fd, BLKGETSIZE64, &device_size) != 0 || device_size % 4096) {
    fprintf(stderr, "FAIL: %s: cannot open or size it (must be a multiple of 4 KiB)\n", device);
    return 1;
  }
  /* The device starts all zero (fresh sparse backing file): so does the copy. */
  unsigned char *copy = calloc(1, device_size), *device_now;
  void *chunk;
  if (!copy || posix_memalign((void **)&device_now, 4096, device_size) || posix_memalign(&chunk, 4096, READ_CHUNK))
    return 1;
  err = cbt_start(t, device);
  if (err)
    die_cbt(t, "start", err);
  struct cbt_status st;
  err = cbt_status_get(t, device, &st);
  if (err)
    die_cbt(t, "status", err);
  if (st.fallback) {
    fprintf(stderr, "SKIP: eBPF tracking unavailable here: nothing to stress\n");
    return 77;
  }
  /* A forced variant (the *_bounded entries of tests/CMakeLists.txt) must be the one stressed. */
  bool running;
  const char *why, *forced = getenv(CBT_VARIANT_ENV);
  const char *variant = cbt_variant_name(cbt_variant_get(t, &running, &why));
  printf("variant %s (%s)\n", variant, why);
  if (!running || (forced && *forced && strcmp(forced, "auto") && strcmp(forced, variant))) {
    fprintf(stderr, "FAIL: variant %s %s, %s=%s was asked for\n", variant, running ? "runs" : "does not run",
            CBT_VARIANT_ENV, forced ? forced : "");
    return 1;
  }

  pthread_t threads[WRITERS];
  for (uintptr_t i = 0; i < WRITERS; i++)
    pthread_create(&threads[i], NULL, writer, (void *)i);

  struct cbt_extents set;
  cbt_extents_init(&set, 4096, 1 << 20);
  uint64_t flips = 0, copied = 0, start = now_ns(), next = start;
  while (now_ns() - start < (uint64_t)seconds * 1000000000ULL) {
    copied += cycle(t, fd, copy, chunk, &set);
    flips++;
    next += 1000000; /* about every millisecond */
    uint64_t now = now_ns();
    if (next > now) {
      struct timespec pause = {0, (long)(next - now)};
      nanosleep(&pause, NULL);
    } else {
      next = now;
    }
  }
  atomic_store(&stop_writers, true);
  for (int i = 0; i < WRITERS; i++)
    pthread_join(threads[i], NULL);
  copied += cycle(t, fd, copy, chunk, &set);
  /* A missed completion the last flip's check could not see yet (one completing during it) is
   * found by this one's. */
  copied += cycle(t, fd, copy, chunk, &set);
  flips += 2;

  for (uint64_t off = 0; off < device_size; off += READ_CHUNK) {
    size_t len = device_size - off < READ_CHUNK ? (size_t)(device_size - off) : READ_CHUNK;
    if (pread(fd, device_now + off, len, (off_t)off) != (ssize_t)len) {
      fprintf(stderr, "FAIL: final read: %s\n", strerror(errno));
      return 1;
    }
  }
  uint64_t bad_blocks = 0;
  for (uint64_t b = 0; b < device_size / 4096; b++)
    if (memcmp(copy + b * 4096, device_now + b * 4096, 4096)) {
      if (bad_blocks < 10)
        fprintf(stderr, "differs: block %" PRIu64 " (byte %" PRIu64 ")\n", b, b * 4096);
      bad_blocks++;
    }
  err = cbt_status_get(t, device, &st);
  if (err)
    die_cbt(t, "status", err);
  check_merge_and_fold(t, &set);
  printf("%" PRIu64 " flips in %d s, %" PRIu64 " writes, %" PRIu64 " discards, %" PRIu64 " zero-outs, %" PRIu64
         " MiB copied, %" PRIu64 " completion re-marks, %" PRIu64 " missed completions repaired, %" PRIu64
         " whole copies after a missed completion, resync %s\n",
         flips, seconds, (uint64_t)writes_done, (uint64_t)discards_done, (uint64_t)zeroouts_done, copied >> 20,
         st.completion_marks, st.completion_repairs, missed_resyncs,
         st.resync_required ? cbt_resync_reason_name(st.resync_reason) : "not required");
  if (st.completions_checked)
    check_repair(t, &set);
  else
    printf("completion check off (kernel stat unreadable): repair not tested\n");
  err = cbt_stop(t, device);
  if (err)
    die_cbt(t, "stop", err);
  cbt_extents_free(&set);
  cbt_close(t);
  close(fd);
  free(copy);
  free(device_now);
  free(chunk);
  if (bad_blocks) {
    fprintf(stderr, "FAIL: the copy differs from the device in %" PRIu64 " blocks: writes were lost\n", bad_blocks);
    return 1;
  }
  if (st.resync_required) {
    fprintf(stderr, "FAIL: resync required (%s) during the stress\n", cbt_resync_reason_name(st.resync_reason));
    return 1;
  }
  if (flips < (uint64_t)seconds * 100) { /* a loaded CI machine still gets 100 per second */
    fprintf(stderr, "FAIL: only %" PRIu64 " flips: the drainer did not keep up a millisecond rhythm\n", flips);
    return 1;
  }
  printf("cbt_flip_stress: ok\n");
  return 0;
}
