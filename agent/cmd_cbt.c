/* cmd_cbt.c - `mobility-agent cbt start|stop|drain|status|ack`: the change-block tracker on its
 * own, without an appliance (docs/architecture.md, users' commands). */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cbt.h"
#include "commands.h"
#include "json_out.h"
#include "rpl_log.h"

/* Exit statuses of `cbt drain`, beyond 0 (complete set printed) and 1 (error) / 2 (usage). */
#define EXIT_RESYNC_REQUIRED 3 /* the whole device was printed: the tracked set is not complete */

#define DRAIN_BATCH 65536 /* extents collected per cbt_drain call (1 MiB of memory) */
#define STATUS_MAX_DEVICES 1024 /* records listed by 'cbt status' without a DEVICE */

struct cbt_args {
  const char *sub;
  const char *device;
  const char *count;
  const char *state;
  bool json;
  bool force; /* stop: also a kernel slot this state directory does not own */
};

static void cbt_usage(FILE *out)
{
  fprintf(out,
          "usage: mobility-agent cbt start DEVICE [--state DIR]\n"
          "       mobility-agent cbt stop DEVICE [--force] [--state DIR]\n"
          "       mobility-agent cbt drain DEVICE [--state DIR]\n"
          "       mobility-agent cbt status [DEVICE] [--state DIR] [--json]\n"
          "       mobility-agent cbt ack DEVICE COUNT [--state DIR]\n"
          "       mobility-agent cbt save [--state DIR]    (at the end of a shutdown: filesystems read-only)\n"
          "       mobility-agent cbt resume [--state DIR]  (early at boot: before the disks are written)\n"
          "\n"
          "save and resume keep tracking across a clean reboot: the systemd shutdown hook and the\n"
          "mobility-agent-resume unit run them; a disk whose save is missing or was written before resume\n"
          "resyncs, with the reason.\n"
          "status lists every kernel tracking slot in use with its owner state directory and the disk\n"
          "identity (diskseq) it tracks; a stale one (owner gone, disk re-pointed) is reclaimed by the next\n"
          "start of that device under any state directory, which then resyncs (slot-reclaimed).\n"
          "stop --force also frees a kernel tracking slot of DEVICE that another (or a removed) state\n"
          "directory left: its owner, if still running, resyncs (unclean-detach).\n"
          "drain prints \"OFFSET LENGTH\" lines (bytes) changed since the previous drain, then forgets them.\n"
          "When a resync is required it prints the whole device and exits %d; after copying it, run\n"
          "'cbt ack DEVICE COUNT' with the event count that 'cbt status' shows.\n"
          "Environment: MOBILITY_AGENT_BPF_PIN_DIR (default " CBT_DEFAULT_PIN_DIR "),\n"
          "             MOBILITY_AGENT_BTF (kernel BTF, default " CBT_DEFAULT_BTF "),\n"
          "             " CBT_VARIANT_ENV " (auto, bpf_loop, bounded or legacy: the tracker\n"
          "             program variant a start installs; default auto, by probing the kernel).\n",
          EXIT_RESYNC_REQUIRED);
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "mobility-agent: cbt: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, " (see mobility-agent cbt --help)\n");
  va_end(ap);
  return 2;
}

static int parse_args(int argc, char **argv, struct cbt_args *a)
{
  memset(a, 0, sizeof *a);
  a->state = AGENT_DEFAULT_STATE;
  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i];
    if (!strcmp(arg, "--state")) {
      if (++i >= argc)
        return usage_error("%s needs a directory", arg);
      a->state = argv[i];
    } else if (!strncmp(arg, "--state=", 8)) {
      a->state = arg + 8;
    } else if (!strcmp(arg, "--json")) {
      a->json = true;
    } else if (!strcmp(arg, "--force")) {
      a->force = true;
    } else if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
      cbt_usage(stdout);
      exit(0);
    } else if (arg[0] == '-' && arg[1]) {
      return usage_error("unknown option '%s'", arg);
    } else if (!a->sub) {
      a->sub = arg;
    } else if (!a->device) {
      a->device = arg;
    } else if (!a->count && !strcmp(a->sub, "ack")) {
      a->count = arg;
    } else {
      return usage_error("unexpected argument '%s'", arg);
    }
  }
  if (!a->sub)
    return usage_error("%s", "missing subcommand (start, stop, drain, status, ack, save, resume)");
  if (!a->state[0])
    return usage_error("%s", "--state needs a directory");
  bool all = !strcmp(a->sub, "save") || !strcmp(a->sub, "resume");
  if (all && a->device)
    return usage_error("'%s' takes no DEVICE: it covers every tracked disk", a->sub);
  if (strcmp(a->sub, "status") && !all && !a->device)
    return usage_error("'%s' needs a DEVICE", a->sub);
  if (!strcmp(a->sub, "ack") && !a->count)
    return usage_error("%s", "'ack' needs DEVICE and COUNT");
  if (a->json && strcmp(a->sub, "status"))
    return usage_error("%s", "--json applies to 'status' only");
  if (a->force && strcmp(a->sub, "stop"))
    return usage_error("%s", "--force applies to 'stop' only");
  return 0;
}

static int report(struct cbt *t, const struct cbt_args *a, rpl_err err)
{
  const char *message = rpl_detail(err);
  fprintf(stderr, "mobility-agent: cbt %s: %s\n", a->sub, message[0] ? message : rpl_strerror(err));
  return 1;
}

static int run_drain(struct cbt *t, const struct cbt_args *a)
{
  uint64_t generation;
  struct cbt_status st;
  struct cbt_extents set;
  rpl_err err = cbt_flip(t, a->device, &generation);
  if (err)
    return report(t, a, err);
  err = cbt_status_get(t, a->device, &st);
  if (err)
    return report(t, a, err);

  static char out_buffer[1 << 16];
  setvbuf(stdout, out_buffer, _IOFBF, sizeof out_buffer);
  cbt_extents_init(&set, DRAIN_BATCH, 0);
  do {
    err = cbt_drain(t, a->device, &set);
    if (err && err != RPL_E_AGAIN)
      break;
    for (size_t i = 0; !st.resync_required && i < set.count; i++)
      printf("%" PRIu64 " %" PRIu64 "\n", set.items[i].offset, set.items[i].length);
    cbt_extents_clear(&set);
  } while (err == RPL_E_AGAIN);
  cbt_extents_free(&set);
  if (err)
    return report(t, a, err);
  if (st.resync_required)
    printf("0 %" PRIu64 "\n", st.size);
  if (fflush(stdout) != 0 || ferror(stdout)) {
    /* Not committed: the next drain reports these blocks again. */
    fprintf(stderr, "mobility-agent: cbt drain: cannot write the extents to stdout: %s; nothing was forgotten\n",
            strerror(errno));
    return 1;
  }
  err = cbt_commit(t, a->device, generation);
  if (err)
    return report(t, a, err);
  if (st.resync_required) {
    fprintf(stderr,
            "mobility-agent: cbt drain: %s: resync required (%s, event %" PRIu64 "%s): printed the whole device; "
            "after copying it run 'mobility-agent cbt ack %s %" PRIu64 "'\n",
            a->device, cbt_resync_reason_name(st.resync_reason), st.resync_count,
            st.fallback ? ", eBPF unavailable: every drain is a resync" : "", a->device, st.resync_count);
    return EXIT_RESYNC_REQUIRED;
  }
  return 0;
}

static void status_text(const struct cbt_status *st)
{
  printf("%s (%s)\n", st->device, st->name);
  printf("  state:        %s\n", st->fallback ? "fallback (no eBPF: resync every cycle)"
                                 : st->tracking ? "tracking" : "not tracking (see resync)");
  printf("  size:         %" PRIu64 " bytes\n", st->size);
  printf("  granularity:  %" PRIu64 " bytes\n", st->granularity);
  printf("  dirty:        %" PRIu64 " bytes\n", st->dirty_bytes);
  printf("  generation:   %" PRIu64 "\n", st->generation);
  printf("  tracker uuid: %s\n", st->uuid);
  if (st->resync_required)
    printf("  resync:       REQUIRED (%s, event %" PRIu64 "; acknowledge with 'mobility-agent cbt ack %s %" PRIu64 "')\n",
           cbt_resync_reason_name(st->resync_reason), st->resync_count, st->device, st->resync_count);
  else
    printf("  resync:       not required (%" PRIu64 " events, all acknowledged)\n", st->resync_count);
  if (st->tracking)
    printf("  counters:     writes %" PRIu64 ", discards %" PRIu64 ", write-zeroes %" PRIu64 ", secure-erases %" PRIu64
           ", empty ignored %" PRIu64 ", completion marks %" PRIu64 ", program misses %" PRIu64 "\n",
           st->writes, st->discards, st->write_zeroes, st->secure_erases, st->empty_ignored, st->completion_marks,
           st->program_misses);
  if (st->tracking && st->completions_checked)
    printf("  completions:  %" PRIu64 " write sectors counted by the kernel, %" PRIu64 " seen by the tracker, %" PRIu64
           " misses repaired\n", st->kernel_completed_sectors, st->completed_sectors, st->completion_repairs);
}

static void status_json(struct json_out *j, const struct cbt_status *st)
{
  char time_text[32] = "";
  if (st->resync_time) {
    time_t when = (time_t)st->resync_time;
    struct tm tm;
    gmtime_r(&when, &tm);
    strftime(time_text, sizeof time_text, "%Y-%m-%dT%H:%M:%SZ", &tm);
  }
  json_object_begin(j, NULL);
  json_string(j, "device", st->device);
  json_string(j, "name", st->name);
  json_string(j, "mode", st->fallback ? "fallback" : "ebpf");
  json_bool(j, "tracking", st->tracking);
  json_u64(j, "size", st->size);
  json_u64(j, "granularity", st->granularity);
  json_u64(j, "dirty_bytes", st->dirty_bytes);
  json_u64(j, "generation", st->generation);
  json_string(j, "tracker_uuid", st->uuid);
  json_object_begin(j, "resync");
  json_bool(j, "required", st->resync_required);
  json_string(j, "reason", cbt_resync_reason_name(st->resync_reason));
  json_u64(j, "count", st->resync_count);
  json_u64(j, "acknowledged", st->resync_acked);
  json_string(j, "time", st->resync_time ? time_text : NULL);
  json_object_end(j);
  json_object_begin(j, "counters");
  json_u64(j, "writes", st->writes);
  json_u64(j, "discards", st->discards);
  json_u64(j, "write_zeroes", st->write_zeroes);
  json_u64(j, "secure_erases", st->secure_erases);
  json_u64(j, "empty_ignored", st->empty_ignored);
  json_u64(j, "completion_marks", st->completion_marks);
  json_u64(j, "inflight_records", st->inflight_records);
  json_u64(j, "program_misses", st->program_misses);
  json_u64(j, "completed_sectors", st->completed_sectors);
  json_object_end(j);
  json_object_begin(j, "completion_check"); /* null fields: not compared (bio-based disk, not tracking) */
  json_bool(j, "on", st->completions_checked);
  if (st->completions_checked) {
    json_u64(j, "kernel_sectors", st->kernel_completed_sectors);
    json_u64(j, "tracker_sectors", st->completed_sectors);
    json_u64(j, "repairs", st->completion_repairs);
  } else {
    json_string(j, "kernel_sectors", NULL);
    json_string(j, "tracker_sectors", NULL);
    json_string(j, "repairs", NULL);
  }
  json_object_end(j);
  json_object_end(j);
}

static void slot_json(struct json_out *j, const struct cbt_slot_info *si)
{
  char dev[32];
  snprintf(dev, sizeof dev, "%u:%u", si->major, si->minor);
  json_object_begin(j, NULL);
  json_u64(j, "slot", (uint64_t)si->slot);
  json_string(j, "device", dev);
  json_string(j, "name", si->name[0] ? si->name : NULL);
  json_string(j, "owner", si->owner_known ? si->owner : NULL);
  json_string(j, "owner_record", si->owner_known ? si->owner_name : NULL);
  json_string(j, "tracker_uuid", si->tracker_uuid);
  json_object_begin(j, "identity");
  json_u64(j, "recorded_diskseq", si->diskseq_recorded);
  json_u64(j, "current_diskseq", si->diskseq_now);
  json_object_end(j);
  json_bool(j, "stale", si->stale);
  json_string(j, "stale_reason", si->stale ? si->stale_reason : NULL);
  json_string(j, "stale_detail", si->stale ? si->stale_detail : NULL);
  json_object_end(j);
}

static void slot_text(const struct cbt_slot_info *si)
{
  printf("  slot %d: %u:%u (%s), owner %s%s%s%s, diskseq %" PRIu64 " (now %" PRIu64 "): ", si->slot, si->major,
         si->minor, si->name[0] ? si->name : "no such device", si->owner_known ? si->owner : "unknown",
         si->owner_known ? " (" : "", si->owner_known ? si->owner_name : "", si->owner_known ? ")" : "",
         si->diskseq_recorded, si->diskseq_now);
  if (si->stale)
    printf("STALE (%s: %s; the next start of the device under any state directory reclaims it)\n",
           si->stale_reason, si->stale_detail);
  else
    printf("in use\n");
}

static int run_status(struct cbt *t, const struct cbt_args *a)
{
  static struct cbt_slot_info slots[CBT_MAX_SLOTS];
  size_t nslots = 0;
  static char names[STATUS_MAX_DEVICES][64];
  size_t count = 1; /* a->device */
  rpl_err err;
  if (!a->device) {
    err = cbt_list(t, names, sizeof names / sizeof names[0], &count);
    if (err)
      return report(t, a, err);
  }
  const char *why = NULL;
  bool ebpf = cbt_ebpf_available(t, &why);
  bool running = false;
  const char *variant_why = NULL;
  enum cbt_variant variant = ebpf ? cbt_variant_get(t, &running, &variant_why) : CBT_VARIANT_NONE;
  struct json_out j;
  if (a->json) {
    json_init(&j, stdout);
    json_object_begin(&j, NULL);
    json_object_begin(&j, "ebpf");
    json_bool(&j, "available", ebpf);
    json_string(&j, "reason", why);
    json_string(&j, "variant", ebpf ? cbt_variant_name(variant) : NULL);
    json_bool(&j, "variant_running", running);
    json_string(&j, "variant_reason", variant_why);
    json_object_end(&j);
    json_array_begin(&j, "devices");
  } else {
    printf("eBPF tracker: %s%s\n", ebpf ? "available" : "unavailable: ", ebpf ? "" : why);
    if (ebpf)
      printf("program variant: %s (%s): %s\n", cbt_variant_name(variant),
             running ? "running" : "loaded by the next start", variant_why);
    if (!count)
      printf("no tracked devices\n");
  }
  err = cbt_slots_list(t, slots, sizeof slots / sizeof slots[0], &nslots);
  if (err) {
    if (a->json) {
      json_array_end(&j);
      json_object_end(&j);
      json_finish(&j);
    }
    return report(t, a, err);
  }
  int status = 0;
  for (size_t i = 0; i < count; i++) {
    struct cbt_status st;
    err = cbt_status_get(t, a->device ? a->device : names[i], &st);
    if (err) {
      if (a->json) { /* keep the document whole; the error goes to stderr */
        json_array_end(&j);
        json_object_end(&j);
        json_finish(&j);
      }
      return report(t, a, err);
    }
    if (a->json)
      status_json(&j, &st);
    else
      status_text(&st);
  }
  if (a->json) {
    json_array_end(&j);
    json_array_begin(&j, "slots");
    for (size_t i = 0; i < nslots; i++)
      slot_json(&j, &slots[i]);
    json_array_end(&j);
    json_object_end(&j);
    if (!json_finish(&j)) {
      fprintf(stderr, "mobility-agent: cbt status: cannot write the JSON document to stdout\n");
      status = 1;
    }
  } else {
    if (!a->device) {
      printf("kernel tracking slots: %zu in use\n", nslots);
      for (size_t i = 0; i < nslots; i++)
        slot_text(&slots[i]);
    }
    if (fflush(stdout) != 0)
      status = 1;
  }
  return status;
}

int agent_cmd_cbt(int argc, char **argv)
{
  struct cbt_args a;
  int rc = parse_args(argc, argv, &a);
  if (rc)
    return rc;
  if (!getenv("RPL_LOG_LEVEL"))
    log_set_level(LOG_LVL_WARN); /* stderr carries warnings and the one-line error only */

  struct cbt *t;
  struct cbt_options options = {.state_dir = a.state};
  rpl_err err = cbt_open(&t, &options);
  if (err)
    return 1; /* cbt_open logged the reason */

  if (!strcmp(a.sub, "start")) {
    err = cbt_start(t, a.device);
    if (!err) {
      struct cbt_status st;
      err = cbt_status_get(t, a.device, &st);
      const char *why = NULL;
      if (!err && st.fallback && !cbt_ebpf_available(t, &why))
        fprintf(stderr, "mobility-agent: cbt start: %s: eBPF tracking unavailable (%s): the device is "
                "resync-required every cycle\n", a.device, why);
      else if (!err && st.fallback)
        fprintf(stderr, "mobility-agent: cbt start: %s: eBPF tracking unavailable: the device is "
                "resync-required every cycle\n", a.device);
      else if (!err)
        printf("%s: tracking, granularity %" PRIu64 " bytes, tracker UUID %s\n", a.device, st.granularity, st.uuid);
    }
    rc = err ? report(t, &a, err) : 0;
  } else if (!strcmp(a.sub, "stop")) {
    err = a.force ? cbt_stop_force(t, a.device) : cbt_stop(t, a.device);
    rc = err ? report(t, &a, err) : 0;
  } else if (!strcmp(a.sub, "drain")) {
    rc = run_drain(t, &a);
  } else if (!strcmp(a.sub, "status")) {
    rc = run_status(t, &a);
  } else if (!strcmp(a.sub, "ack")) {
    char *end;
    uint64_t count = strtoull(a.count, &end, 10);
    if (*end || !a.count[0] || a.count[0] == '-')
      rc = usage_error("COUNT must be a number, not '%s'", a.count);
    else {
      err = cbt_ack_resync(t, a.device, count);
      rc = err ? report(t, &a, err) : 0;
    }
  } else if (!strcmp(a.sub, "save") || !strcmp(a.sub, "resume")) {
    size_t done = 0, not_done = 0;
    bool save = !strcmp(a.sub, "save");
    err = save ? cbt_save_for_reboot(t, &done, &not_done) : cbt_resume_after_reboot(t, &done, &not_done);
    if (!err)
      printf("%s: %zu disk(s) %s, %zu will resync (the log says why)\n", a.sub, done, save ? "saved" : "resumed",
             not_done);
    rc = err ? report(t, &a, err) : 0;
  } else {
    rc = usage_error("unknown subcommand '%s' (start, stop, drain, status, ack, save, resume)", a.sub);
  }
  cbt_close(t);
  return rc;
}
