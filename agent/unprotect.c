/* unprotect.c - `unprotect DEVICE`: the control thread asks, the session thread (between cycles, so no
 * cycle or point holds the disk's index) tells the appliance, stops tracking and forgets the disk. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "daemon.h"
#include "rpl_log.h"

#define UNPROTECT_WAIT_S 60

/* Point requests not answered yet lose disk i, and the indexes after it move down; one left with no
 * disk ends (not protected any more). Under a->lock. */
static void drop_from_requests(struct agent *a, size_t i)
{
  for (size_t r = 0; r < MAX_POINT_REQUESTS; r++) {
    struct point_req *q = &a->reqs[r];
    if (!q->used || q->done)
      continue;
    size_t n = 0;
    for (size_t k = 0; k < q->ndisks; k++)
      if (q->disks[k] != i)
        q->disks[n++] = q->disks[k] > i ? q->disks[k] - 1 : q->disks[k];
    q->ndisks = n;
    if (!n) {
      q->done = true;
      q->status = RPL_E_NOT_FOUND;
    }
  }
}

/* Removes disk i from the state (saved) and the runtime tables. Session thread. */
static void forget_disk(struct agent *a, size_t i)
{
  if (a->rt[i].fd >= 0)
    close(a->rt[i].fd);
  pipeline_destroy(a->pipes[i]);
  retain_free(&a->rt[i].retain);
  /* The tracker's repair check reads the disks' entries under cbt_lock (taken before agent.lock). */
  pthread_mutex_lock(&a->cbt_lock);
  sent_hashes_destroy(a->rt[i].sent);
  pthread_mutex_lock(&a->lock);
  size_t after = a->st.ndisks - i - 1;
  memmove(&a->st.disks[i], &a->st.disks[i + 1], after * sizeof a->st.disks[0]);
  memmove(&a->rt[i], &a->rt[i + 1], after * sizeof a->rt[0]);
  memmove(&a->pipes[i], &a->pipes[i + 1], after * sizeof a->pipes[0]);
  a->st.ndisks--;
  a->pipes[a->st.ndisks] = NULL;
  memset(&a->rt[a->st.ndisks], 0, sizeof a->rt[0]); /* its copy moved down: no fd or hashes twice */
  a->rt[a->st.ndisks].fd = -1;
  drop_from_requests(a, i);
  rpl_err err = agent_state_save(&a->st);
  pthread_cond_broadcast(&a->changed);
  pthread_mutex_unlock(&a->lock);
  pthread_mutex_unlock(&a->cbt_lock);
  if (err) /* the disk is announced again after a restart; the appliance then refuses it, saying why */
    log_err("cannot save the agent state after unprotecting a disk: %s", rpl_strerror(err));
}

rpl_err session_unprotect_pending(struct agent *a)
{
  for (size_t i = 0; i < a->st.ndisks; i++) {
    pthread_mutex_lock(&a->lock);
    bool asked = a->rt[i].unprotect;
    pthread_mutex_unlock(&a->lock);
    if (!asked)
      continue;
    const struct agent_disk *d = &a->st.disks[i];
    pthread_mutex_lock(&a->lock);
    bool delete = a->rt[i].delete_replica;
    pthread_mutex_unlock(&a->lock);
    if (delete && !a->peer_unprotect_delete) {
      /* Reconnected since it was asked, to an appliance that cannot delete: nothing is done. */
      log_warn("%s: unprotect --delete-replica dropped: the appliance cannot delete replicas (an older version); "
               "the disk stays protected", d->device);
      pthread_mutex_lock(&a->lock);
      a->rt[i].unprotect = a->rt[i].delete_replica = false;
      pthread_cond_broadcast(&a->changed);
      pthread_mutex_unlock(&a->lock);
      continue;
    }
    if (a->peer_unprotect) {
      struct proto_unprotect m = {.flags = delete ? PROTO_UNPROTECT_DELETE_REPLICA : 0};
      memcpy(m.disk_id, d->id, PROTO_ID_SIZE);
      rpl_err err = proto_encode_unprotect(&a->out, &m);
      if (err || (err = session_send_buf(a)))
        return err; /* asked again on the next session */
    } else {
      log_warn("%s: the appliance does not take UNPROTECT (an older version): it shows the disk in error "
               "once it asks for its next cycle", d->device);
    }
    rpl_err err = session_refresh_cbt(a);
    if (!err && (err = cbt_stop(a->cbt, d->device)) == RPL_E_CBT_NOT_TRACKED)
      err = RPL_OK;
    char why[RPL_DETAIL_MAX + 128];
    if (err)
      log_warn("%s: unprotected, but its tracking could not be stopped: %s (mobility-agent cbt stop %s)", d->device,
               rpl_describe(err, why, sizeof why), d->device);
    char id[37];
    agent_disk_id_text(d->id, id);
    log_notice("%s: unprotected (disk %s): tracking stopped; %s", d->device, id,
               delete ? "the appliance deletes its replica, points, cache and catalog rows"
                      : "the appliance keeps its replica and points");
    forget_disk(a, i);
    i--;
  }
  return RPL_OK;
}

rpl_err session_unprotect_request(struct agent *a, const struct proto_frame *f)
{
  struct proto_unprotect_request m;
  rpl_err err = proto_decode_unprotect_request(f, &m);
  if (err)
    return err;
  char id[37];
  agent_disk_id_text(m.disk_id, id);
  ssize_t i = agent_disk_index(a, m.disk_id);
  if (i < 0) { /* unprotected here meanwhile: its UNPROTECT is on the way, or was sent */
    log_warn("the appliance asked to unprotect disk %s, which this agent does not protect: nothing to do", id);
    return RPL_OK;
  }
  bool delete = m.flags & PROTO_UNPROTECT_DELETE_REPLICA;
  pthread_mutex_lock(&a->lock);
  a->rt[i].unprotect = true;
  a->rt[i].delete_replica = delete;
  pthread_mutex_unlock(&a->lock);
  log_notice("%s: unprotect asked by the appliance (its configuration manager), %s: tracking stops after the cycle "
             "under way", a->st.disks[i].device,
             delete ? "deleting its replica and recovery points" : "keeping its replica and recovery points");
  return RPL_OK;
}

int ctl_unprotect(struct agent *a, int argc, char **argv, struct control_reply *out)
{
  const char *dev = NULL;
  bool del = false, yes = false;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--delete-replica")) {
      del = true;
      continue;
    }
    if (!strcmp(argv[i], "--yes")) {
      yes = true;
      continue;
    }
    if (argv[i][0] == '-' || dev) {
      control_printf(out, "usage: mobility-agent unprotect DEVICE [--delete-replica [--yes]]");
      return 2;
    }
    dev = argv[i];
  }
  if (!dev) {
    control_printf(out, "usage: mobility-agent unprotect DEVICE [--delete-replica [--yes]]");
    return 2;
  }
  if (del && !yes) { /* the command confirms on a terminal and then adds --yes */
    control_printf(out, "--delete-replica deletes the replica and every recovery point of the disk: confirm it with "
                   "--yes; nothing was changed");
    return 2;
  }
  pthread_mutex_lock(&a->lock);
  struct agent_disk *d = agent_state_find_disk(&a->st, dev);
  if (!d) {
    pthread_mutex_unlock(&a->lock);
    control_printf(out, "%s is not protected", dev);
    return 1;
  }
  if (del && (!a->connected || !a->peer_unprotect_delete)) {
    bool connected = a->connected;
    pthread_mutex_unlock(&a->lock);
    control_printf(out, "%s: --delete-replica needs the appliance, %s; nothing was changed", dev,
                   connected ? "which cannot delete replicas (an older version): unprotect keeps the replica"
                             : "and the agent is not connected to it now: try again when it is");
    return 1;
  }
  char id[37];
  agent_disk_id_text(d->id, id);
  a->rt[d - a->st.disks].unprotect = true;
  a->rt[d - a->st.disks].delete_replica = del;
  session_wake(a);
  struct timespec deadline;
  clock_gettime(CLOCK_REALTIME, &deadline);
  deadline.tv_sec += UNPROTECT_WAIT_S;
  while (agent_state_find_disk(&a->st, dev) && !atomic_load(&agent_stopping) &&
         pthread_cond_timedwait(&a->changed, &a->lock, &deadline) != ETIMEDOUT) {
  }
  bool done = !agent_state_find_disk(&a->st, dev);
  bool connected = a->connected;
  pthread_mutex_unlock(&a->lock);
  if (!done) {
    control_printf(out, "%s: unprotect asked; it completes when the agent is next connected to the appliance (%s)",
                   dev, connected ? "busy with a cycle" : "not connected now");
    return 1;
  }
  if (del)
    control_printf(out, "unprotected %s (disk %s): tracking stopped, no more cycles; the appliance deletes its "
                   "replica, recovery points, cache and catalog rows\n", dev, id);
  else
    control_printf(out, "unprotected %s (disk %s): tracking stopped, no more cycles; the appliance keeps its replica "
                   "and recovery points (replication-appliance restore --disk %s)\n", dev, id, id);
  return 0;
}
