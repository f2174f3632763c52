/* cycle_workers.c - plain cycles of different disks at once: each on a thread of its own, reading its
 * disk through the disk's pipeline and sending over the shared connection, its ACK, NACK or NEED handed
 * over by the session thread (cycle_mailbox.h); the session thread starts, reaps and ends them. */
#include <inttypes.h>
#include <string.h>

#include "daemon.h"
#include "rpl_log.h"

static void *worker_main(void *arg)
{
  struct cycle_worker *w = arg;
  bool ended = false;
  rpl_err err = cycle_run(w->a, w->disk, w->cycle, w->kind, w->box, &ended);
  w->ended = ended;
  w->err = err;
  if (err) /* here: the detail is kept per thread */
    rpl_describe(err, w->why, sizeof w->why);
  atomic_store(&w->done, true);
  session_wake(w->a); /* the session thread reaps it */
  return NULL;
}

rpl_err workers_start(struct agent *a, size_t disk, const struct proto_cycle_start *m)
{
  struct cycle_worker *w = NULL;
  for (size_t i = 0; i < AGENT_CYCLES_MAX && !w; i++)
    if (!a->workers[i].used)
      w = &a->workers[i];
  if (!w)
    return rpl_fail(RPL_E_LIMIT, "the appliance started more than %d cycles at once", AGENT_CYCLES_MAX);
  int box;
  rpl_err err = cycle_router_open(&a->router, m->disk_id, m->cycle, &box);
  if (err)
    return err == RPL_E_LIMIT ? rpl_fail(err, "the appliance started more than %d cycles at once", AGENT_CYCLES_MAX)
                              : rpl_fail(err, "the appliance started a second cycle of %s", a->st.disks[disk].device);
  *w = (struct cycle_worker){.a = a, .disk = disk, .cycle = m->cycle, .kind = m->kind, .box = box};
  atomic_store(&w->done, false);
  int rc = pthread_create(&w->thread, NULL, worker_main, w);
  if (rc) {
    cycle_router_release(&a->router, box);
    return rpl_fail(RPL_E_NOMEM, "no thread for the cycle of %s: %s", a->st.disks[disk].device, strerror(rc));
  }
  w->used = true;
  a->inflight++;
  log_debug("%s: cycle %" PRIu64 " started on its own thread (%u in flight)", a->st.disks[disk].device, m->cycle,
            a->inflight);
  return RPL_OK;
}

/* Whether a cycle's failure is the session's (the connection broke, the protocol was broken, the
 * agent stops) rather than its disk's alone. */
static bool ends_session(rpl_err err)
{
  return err == RPL_E_TLS || err == RPL_E_TIMEOUT || err == RPL_E_CANCELLED || (err >= 100 && err < 200);
}

static void join(struct agent *a, struct cycle_worker *w)
{
  pthread_join(w->thread, NULL);
  cycle_router_release(&a->router, w->box);
  w->used = false;
  a->inflight--;
}

/* The appliance gives the failed cycle up (and shows the disk with the reason); its blocks stay in the
 * tracker for the next cycle. */
static rpl_err nack_failed(struct agent *a, const struct cycle_worker *w)
{
  struct proto_nack nk = {.cycle = w->cycle, .reason = w->err,
                          .message = {(const uint8_t *)w->why, (uint32_t)strlen(w->why)}};
  memcpy(nk.disk_id, a->st.disks[w->disk].id, PROTO_ID_SIZE);
  rpl_err err = proto_encode_nack(&a->out, &nk);
  return err ? err : session_send_buf(a);
}

rpl_err workers_reap(struct agent *a)
{
  rpl_err first = RPL_OK;
  for (size_t i = 0; i < AGENT_CYCLES_MAX; i++) {
    struct cycle_worker *w = &a->workers[i];
    if (!w->used || !atomic_load(&w->done))
      continue;
    join(a, w);
    if (!w->err)
      continue;
    if (ends_session(w->err)) {
      if (!first)
        first = w->err;
      continue;
    }
    if (!w->ended) { /* its disk's failure alone: the other cycles go on */
      rpl_err err = nack_failed(a, w);
      if (err && !first)
        first = err;
    }
  }
  return first;
}

void workers_end_all(struct agent *a, rpl_err why)
{
  if (!a->inflight)
    return;
  log_info("the session ends (%s): %u cycle(s) in flight given up; their changes are sent again", rpl_strerror(why),
           a->inflight);
  cycle_router_close(&a->router, why ? why : RPL_E_CANCELLED);
  if (a->conn)
    conn_abort(a->conn); /* a send in progress fails now rather than after CONN_IO_TIMEOUT_MS */
  for (size_t i = 0; i < AGENT_CYCLES_MAX; i++)
    if (a->workers[i].used)
      join(a, &a->workers[i]);
}
