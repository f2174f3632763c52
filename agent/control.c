/* control.c - the running agent's side of the control socket: protect, checkpoint and status, each
 * on a control thread of its own. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uuid/uuid.h>

#include "daemon.h"
#include "json_out.h"
#include "progress.h"
#include "readiness.h"
#include "rpl_clock.h"

#define POINT_WAIT_MS (30 * 60 * 1000)

static const char *const phase_names[] = {"announcing", "initial-sync", "protected", "resync-required", "error"};

/* ---- protect ------------------------------------------------------------------------------- */

/* Starts tracking the device through a handle of our own; the session reopens its handle to see it. */
static int start_tracking(struct agent *a, const char *dev, struct control_reply *out)
{
  struct cbt *t;
  struct cbt_options opt = {.state_dir = a->st.dir};
  rpl_err err = cbt_open(&t, &opt);
  if (err) {
    control_printf(out, "cannot open the change-block tracker: %s", rpl_strerror(err));
    return 1;
  }
  err = cbt_start(t, dev);
  char why[RPL_DETAIL_MAX + 128];
  if (err == RPL_E_CBT_ALREADY_TRACKED)
    err = RPL_OK;
  if (err)
    control_printf(out, "cannot track %s: %s", dev, rpl_describe(err, why, sizeof why));
  cbt_close(t);
  if (err)
    return 1;
  atomic_store(&a->cbt_reopen, 1);
  return 0;
}

/* Adds the device to the protected disks (saved in the state) unless it is one already; says its
 * disk id. Called under a->lock. */
static int add_disk(struct agent *a, const char *dev, struct control_reply *out, char id[37])
{
  struct agent_disk *d = agent_state_find_disk(&a->st, dev);
  if (!d) {
    if (a->st.ndisks == AGENT_MAX_DISKS) {
      control_printf(out, "this agent protects %d disks already, the most it can", AGENT_MAX_DISKS);
      return 1;
    }
    d = &a->st.disks[a->st.ndisks];
    snprintf(d->device, sizeof d->device, "%s", dev);
    uuid_generate(d->id);
    struct disk_rt *rt = &a->rt[a->st.ndisks];
    memset(rt, 0, sizeof *rt);
    rt->fd = -1;
    a->st.ndisks++;
    rpl_err err = agent_state_save(&a->st);
    if (err) {
      a->st.ndisks--;
      control_printf(out, "cannot save the agent state: %s", rpl_strerror(err));
      return 1;
    }
  }
  agent_disk_id_text(d->id, id);
  return 0;
}

static int ctl_protect(struct agent *a, int argc, char **argv, struct control_reply *out)
{
  if (argc != 2) {
    control_printf(out, "usage: mobility-agent protect DEVICE");
    return 2;
  }
  const char *dev = argv[1];
  /* Refused now rather than when the appliance creates the blob, hours into a migration plan. */
  uint64_t size;
  if (readiness_disk_size(dev, &size) == RPL_OK && size > READINESS_PROTECTED_MAX) {
    control_printf(out, "%s is %.2f TiB, over the 8 TiB an Azure page blob holds (the disk and its 512-byte VHD "
                   "footer): split its data over disks of at most 8 TiB (LVM can span them) and protect those",
                   dev, (double)size / (double)(1ull << 40));
    return 1;
  }
  if (start_tracking(a, dev, out))
    return 1;
  char id[37];
  pthread_mutex_lock(&a->lock);
  int status = add_disk(a, dev, out, id);
  pthread_mutex_unlock(&a->lock);
  if (status)
    return status;
  session_wake(a);
  control_printf(out, "protecting %s as disk %s: tracking changes; the appliance starts the initial sync\n", dev, id);
  return 0;
}

/* ---- checkpoint ---------------------------------------------------------------------------- */

/* A new request for a point of the device (NULL: of every disk) in the table, for the session to
 * send; *id names it. */
static int add_point_request(struct agent *a, const char *dev, const char *group, struct control_reply *out,
                             struct point_req **req, uint64_t *id)
{
  pthread_mutex_lock(&a->lock);
  struct point_req *q = NULL;
  for (size_t r = 0; r < MAX_POINT_REQUESTS && !q; r++)
    if (!a->reqs[r].used)
      q = &a->reqs[r];
  if (!q) {
    pthread_mutex_unlock(&a->lock);
    control_printf(out, "too many recovery points requested at once: wait for one to finish");
    return 1;
  }
  memset(q, 0, sizeof *q);
  if (group) /* the appliance knows the group's disks, of this agent and others */
    snprintf(q->group, sizeof q->group, "%s", group);
  for (size_t i = 0; i < a->st.ndisks && !group; i++)
    if ((!dev || !strcmp(a->st.disks[i].device, dev)) && a->rt[i].phase != PHASE_ERROR)
      q->disks[q->ndisks++] = i;
  if (q->ndisks == 0 && !group) {
    pthread_mutex_unlock(&a->lock);
    if (dev)
      control_printf(out, "%s is not protected (mobility-agent protect %s)", dev, dev);
    else
      control_printf(out, "no disk is protected yet (mobility-agent protect DEVICE)");
    return 1;
  }
  q->used = true;
  q->id = ++a->next_req;
  *id = q->id;
  *req = q;
  pthread_mutex_unlock(&a->lock);
  return 0;
}

/* Without --wait, until the request is handed over; with it, until the point exists. Under a->lock. */
static void wait_point_request(struct agent *a, struct point_req *q, uint64_t id, bool wait)
{
  struct timespec deadline;
  clock_gettime(CLOCK_REALTIME, &deadline);
  deadline.tv_sec += wait ? POINT_WAIT_MS / 1000 : 60;
  for (;;) {
    if (q->id != id)
      break;
    if (q->done || (!wait && q->sent))
      break;
    if (atomic_load(&agent_stopping) || pthread_cond_timedwait(&a->changed, &a->lock, &deadline) == ETIMEDOUT)
      break;
  }
}

/* Says how the request ended, freeing its slot when it is answered (or was never sent). Under a->lock. */
static int reply_point_request(struct agent *a, struct point_req *q, uint64_t id, bool wait, struct control_reply *out)
{
  if (q->id == id && q->done) {
    int status = 1;
    if (q->status == RPL_OK && q->group[0]) {
      control_printf(out, "group point (%s) of consistency group %s\n%s\n", proto_consistency_name(q->consistency),
                     q->group, q->point_id);
      status = 0;
    } else if (q->status == RPL_OK) {
      control_printf(out, "recovery point (%s) of %zu disk(s)\n%s\n", proto_consistency_name(q->consistency),
                     q->ndisks, q->point_id);
      status = 0;
    } else {
      control_printf(out, "no recovery point: %s", rpl_strerror(q->status));
    }
    q->used = false;
    return status;
  }
  if (q->id == id && q->sent && !wait) {
    control_printf(out, "recovery point requested (request %" PRIu64 "); use --wait to wait for its id\n", id);
    return 0;
  }
  control_printf(out, "no recovery point yet: %s", a->connected ? "timed out waiting for the appliance"
                                                                : "the agent is not connected to the appliance");
  if (q->id == id)
    q->used = !q->sent ? false : q->used;
  return 1;
}

static int ctl_checkpoint(struct agent *a, int argc, char **argv, struct control_reply *out)
{
  const char *dev = NULL, *group = NULL;
  bool wait = false;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--wait"))
      wait = true;
    else if (!strcmp(argv[i], "--group") && i + 1 < argc && !group)
      group = argv[++i];
    else if (!dev && argv[i][0] != '-')
      dev = argv[i];
    else {
      control_printf(out, "usage: mobility-agent checkpoint [DEVICE | --group NAME] [--wait]");
      return 2;
    }
  }
  if (dev && group) {
    control_printf(out, "usage: mobility-agent checkpoint [DEVICE | --group NAME] [--wait]: a device or a group, not both");
    return 2;
  }
  if (group && !proto_group_name_ok(group, strlen(group))) {
    control_printf(out, "checkpoint: %s", rpl_strerror(RPL_E_GROUP_NAME));
    return 2;
  }
  struct point_req *q;
  uint64_t id;
  if (add_point_request(a, dev, group, out, &q, &id))
    return 1;
  session_wake(a);
  pthread_mutex_lock(&a->lock);
  wait_point_request(a, q, id, wait);
  int status = reply_point_request(a, q, id, wait, out);
  pthread_mutex_unlock(&a->lock);
  return status;
}

/* ---- status -------------------------------------------------------------------------------- */

/* `status --progress DEVICE`, what a terminal's `protect` polls: one line
 * "PHASE DONE_BYTES TOTAL_BYTES ELAPSED_MS LAST_CYCLE" (a cycle in progress: DONE < TOTAL). */
static int ctl_progress(struct agent *a, const char *dev, struct control_reply *out)
{
  pthread_mutex_lock(&a->lock);
  struct agent_disk *d = agent_state_find_disk(&a->st, dev);
  if (!d) {
    pthread_mutex_unlock(&a->lock);
    control_printf(out, "%s is not protected (mobility-agent protect %s)", dev, dev);
    return 1;
  }
  const struct disk_rt *rt = &a->rt[d - a->st.disks];
  control_printf(out, "%s %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 "\n", phase_names[rt->phase], rt->sync_done,
                 rt->sync_total, rt->sync_start_ms ? rpl_mono_ms() - rt->sync_start_ms : 0, rt->last_cycle);
  if (rt->error[0])
    control_printf(out, "%s\n", rt->error);
  pthread_mutex_unlock(&a->lock);
  return 0;
}

/* One disk's object of `status --json`. Under a->lock. */
static int cmp_u32(const void *x, const void *y)
{
  uint32_t a = *(const uint32_t *)x, b = *(const uint32_t *)y;
  return a < b ? -1 : a > b;
}

/* "freeze_ms": the freezes of the disk's last points (count of all; p50, p99, max of the kept
 * ones), or null before the first. Lock held. */
static void status_json_freezes(const struct disk_rt *rt, struct json_out *j)
{
  if (!rt->freezes.n) {
    json_string(j, "freeze_ms", NULL);
    return;
  }
  uint32_t ms[FREEZE_KEPT];
  unsigned n = rt->freezes.n;
  memcpy(ms, rt->freezes.ms, n * sizeof ms[0]); /* the first n slots are the kept ones, in any order */
  qsort(ms, n, sizeof ms[0], cmp_u32);
  json_object_begin(j, "freeze_ms");
  json_u64(j, "count", rt->freezes.count);
  json_u64(j, "p50", ms[(n - 1) / 2]);
  json_u64(j, "p99", ms[(n - 1) * 99 / 100]);
  json_u64(j, "max", ms[n - 1]);
  json_object_end(j);
}

static void status_json_disk(struct agent *a, size_t i, struct json_out *j)
{
  const struct disk_rt *rt = &a->rt[i];
  char id[37];
  agent_disk_id_text(a->st.disks[i].id, id);
  json_object_begin(j, NULL);
  json_string(j, "device", a->st.disks[i].device);
  json_string(j, "disk_id", id);
  json_string(j, "state", phase_names[rt->phase]);
  json_string(j, "error", rt->error[0] ? rt->error : NULL);
  json_u64(j, "size", rt->size);
  json_u64(j, "last_cycle", rt->last_cycle);
  json_u64(j, "cycles", rt->cycles);
  json_u64(j, "refused_cycles", rt->refused);
  json_u64(j, "declined_cycles", rt->declined);
  json_u64(j, "last_ack_unix", (uint64_t)rt->last_ack);
  json_u64(j, "rpo_lag_seconds", rt->last_ack ? (uint64_t)(time(NULL) - rt->last_ack) : 0);
  json_u64(j, "bytes_sent", rt->bytes_sent);
  json_u64(j, "raw_bytes", rt->raw_bytes);
  json_u64(j, "cycle_done_bytes", rt->sync_done);
  json_u64(j, "cycle_total_bytes", rt->sync_total);
  struct progress pr;
  bool moving = rt->sync_total && rt->sync_done < rt->sync_total;
  progress_compute(rt->sync_done, rt->sync_total, moving ? rpl_mono_ms() - rt->sync_start_ms : 0, &pr);
  json_u64(j, "cycle_bytes_per_second", moving ? pr.bytes_per_s : 0);
  if (moving && pr.eta_s >= 0)
    json_u64(j, "cycle_eta_seconds", (uint64_t)pr.eta_s);
  else
    json_string(j, "cycle_eta_seconds", NULL);
  json_string(j, "last_point", rt->last_point[0] ? rt->last_point : NULL);
  json_string(j, "point_note", rt->point_note[0] ? rt->point_note : NULL);
  static const char *const cache_names[] = {NULL, "wait", "resync"};
  json_string(j, "appliance_cache", cache_names[rt->cache]);
  json_string(j, "appliance_cache_note", rt->cache_note[0] ? rt->cache_note : NULL);
  status_json_freezes(rt, j);
  /* Completions the kernel skipped, checked against the disk (sent_hashes.h); null: no record. */
  json_object_begin(j, "sent_check");
  struct sent_stats ss = {0};
  struct sent_hashes *sh = __atomic_load_n(&rt->sent, __ATOMIC_ACQUIRE);
  if (sh)
    sent_hashes_stats(sh, &ss);
  json_bool(j, "on", sh != NULL);
  json_bool(j, "complete", ss.complete);
  json_u64(j, "units", ss.units);
  json_u64(j, "pages", ss.pages);
  json_u64(j, "checks", ss.checks);
  json_u64(j, "refused", ss.refused);
  json_u64(j, "checked_bytes", ss.checked_bytes);
  json_u64(j, "differing_bytes", ss.differing_bytes);
  json_u64(j, "check_ms", ss.check_ms);
  json_object_end(j);
  json_object_end(j);
}

/* Under a->lock. */
static void status_json(struct agent *a, FILE *f)
{
  struct json_out j;
  json_init(&j, f);
  json_object_begin(&j, NULL);
  json_string(&j, "agent_id", a->st.agent_id);
  json_string(&j, "appliance", a->st.appliance);
  json_string(&j, "appliance_in_use", agent_member_address(a));
  json_bool(&j, "connected", a->connected);
  json_string(&j, "connection_error", a->connected ? NULL : a->conn_error);
  json_object_begin(&j, "certificate");
  json_u64(&j, "not_after_unix", (uint64_t)a->cert_not_after);
  json_u64(&j, "renews_after_unix",
           (uint64_t)(a->cert_not_before + (a->cert_not_after - a->cert_not_before) * 2 / 3));
  json_object_end(&j);
  json_array_begin(&j, "disks");
  for (size_t i = 0; i < a->st.ndisks; i++)
    status_json_disk(a, i, &j);
  json_array_end(&j);
  json_object_end(&j);
  json_finish(&j);
}

/* Under a->lock. */
static void status_text(struct agent *a, FILE *f)
{
  fprintf(f, "agent %s, appliance %s: %s%s%s\n", a->st.agent_id, agent_member_address(a),
          a->connected ? "connected" : "not connected", a->connected ? "" : " - ", a->connected ? "" : a->conn_error);
  for (size_t i = 0; i < a->st.ndisks; i++) {
    const struct disk_rt *rt = &a->rt[i];
    char id[37];
    agent_disk_id_text(a->st.disks[i].id, id);
    fprintf(f, "%s (disk %s): %s", a->st.disks[i].device, id, phase_names[rt->phase]);
    if (rt->sync_total && rt->sync_done < rt->sync_total) {
      char line[160];
      progress_format(line, sizeof line, rt->sync_done, rt->sync_total, rpl_mono_ms() - rt->sync_start_ms);
      fprintf(f, ", cycle %s", line);
    }
    fprintf(f, ", last cycle %" PRIu64, rt->last_cycle);
    if (rt->last_ack)
      fprintf(f, " (%lds ago)", (long)(time(NULL) - rt->last_ack));
    if (rt->last_point[0])
      fprintf(f, ", last point %s", rt->last_point);
    if (rt->point_note[0])
      fprintf(f, " (%s)", rt->point_note);
    if (rt->error[0])
      fprintf(f, ", error: %s", rt->error);
    if (rt->cache_note[0])
      fprintf(f, ", %s", rt->cache_note);
    fputc('\n', f);
  }
}

static int ctl_status(struct agent *a, int argc, char **argv, struct control_reply *out)
{
  if (argc == 3 && !strcmp(argv[1], "--progress"))
    return ctl_progress(a, argv[2], out);
  bool json = argc > 1 && !strcmp(argv[1], "--json");
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  if (!f) {
    control_printf(out, "out of memory");
    return 1;
  }
  pthread_mutex_lock(&a->lock);
  if (json)
    status_json(a, f);
  else
    status_text(a, f);
  pthread_mutex_unlock(&a->lock);
  fclose(f);
  control_printf(out, "%s", buf);
  free(buf);
  return 0;
}

int agent_control_handler(void *ctx, int argc, char **argv, struct control_reply *out)
{
  struct agent *a = ctx;
  if (!strcmp(argv[0], "protect"))
    return ctl_protect(a, argc, argv, out);
  if (!strcmp(argv[0], "checkpoint"))
    return ctl_checkpoint(a, argc, argv, out);
  if (!strcmp(argv[0], "unprotect"))
    return ctl_unprotect(a, argc, argv, out);
  if (!strcmp(argv[0], "status"))
    return ctl_status(a, argc, argv, out);
  control_printf(out, "unknown daemon command '%s'", argv[0]);
  return 2;
}
