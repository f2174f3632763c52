/* readiness_report.c - the daemon's side of boot readiness: runs the checks of readiness.c on this
 * server, on a thread of their own, and sends their summary to the appliance (READINESS), which
 * shows it per agent. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "daemon.h"
#include "readiness.h"
#include "rpl_clock.h"
#include "rpl_log.h"

#define READINESS_PERIOD_MS (24ull * 3600 * 1000)

/* One "RESULT NAME: detail" line per check that did not pass, cut at the protocol's string cap. */
static void problems_text(const struct readiness_report *r, char *out, size_t size)
{
  size_t pos = 0;
  out[0] = 0;
  for (size_t i = 0; i < r->n && pos < size; i++) {
    const struct readiness_check *k = &r->checks[i];
    if (k->result != READINESS_PASS)
      pos += (size_t)snprintf(out + pos, size - pos, "%s %s: %s\n", readiness_result_name(k->result), k->name,
                              k->detail);
  }
}

struct readiness_job {
  struct agent *a;
  pthread_t thread;
  struct readiness_input in;
  char devs[READINESS_MAX_PROTECTED][sizeof ((struct agent_disk *)0)->device]; /* the job's own copies */
  char cache[sizeof ((struct agent *)0)->st.dir + 32];
  size_t ndisks;
  atomic_bool done;
  struct readiness_report r;
};

static void *job_main(void *arg)
{
  struct readiness_job *j = arg;
  rpl_err err = readiness_lower_priority();
  if (err)
    log_info("boot readiness checks: %s (they run beside replication at its priority)", rpl_detail(err));
  readiness_run(&j->in, &j->r);
  atomic_store(&j->done, true);
  session_wake(j->a); /* the session thread sends the report */
  return NULL;
}

/* The checks of j, done, to the appliance. */
static rpl_err send_report(struct agent *a, const struct readiness_job *j)
{
  char *text = malloc(PROTO_MAX_STRING);
  if (!text)
    return RPL_E_NOMEM;
  const struct readiness_report *r = &j->r;
  problems_text(r, text, PROTO_MAX_STRING);
  struct proto_readiness m = {
    .time_ns = (uint64_t)time(NULL) * 1000000000ull,
    .generation = (uint8_t)r->generation,
    .checks = (uint8_t)r->n,
    .failed = (uint8_t)readiness_count(r, READINESS_FAIL),
    .warned = (uint8_t)readiness_count(r, READINESS_WARN),
    .problems = {(const uint8_t *)text, (uint32_t)strlen(text)},
  };
  if (m.failed)
    log_warn("boot readiness for Azure: %u of %u checks failed (mobility-agent check shows them and their remedies)",
             m.failed, m.checks);
  rpl_err err = proto_encode_readiness(&a->out, &m);
  if (!err)
    err = session_send_buf(a);
  if (!err) {
    uint64_t now = rpl_mono_ms();
    a->readiness_sent_ms = now ? now : 1;
    a->readiness_ndisks = j->ndisks;
  }
  free(text);
  return err;
}

rpl_err readiness_send_if_due(struct agent *a)
{
  if (!a->peer_readiness)
    return RPL_OK;
  struct readiness_job *j = a->readiness_job;
  if (j) {
    if (!atomic_load(&j->done))
      return RPL_OK;
    pthread_join(j->thread, NULL);
    a->readiness_job = NULL;
    rpl_err err = send_report(a, j);
    free(j);
    return err;
  }
  pthread_mutex_lock(&a->lock);
  size_t ndisks = a->st.ndisks;
  pthread_mutex_unlock(&a->lock);
  uint64_t now = rpl_mono_ms();
  if (a->readiness_sent_ms && ndisks == a->readiness_ndisks && now - a->readiness_sent_ms < READINESS_PERIOD_MS)
    return RPL_OK;
  if (!(j = calloc(1, sizeof *j)))
    return RPL_E_NOMEM;
  j->a = a;
  snprintf(j->cache, sizeof j->cache, "%s/initramfs-modules", a->st.dir);
  j->in = (struct readiness_input){.root = "/", .live = true, .initramfs_cache = j->cache};
  pthread_mutex_lock(&a->lock);
  j->ndisks = a->st.ndisks;
  for (size_t i = 0; i < j->ndisks && i < READINESS_MAX_PROTECTED; i++) {
    snprintf(j->devs[i], sizeof j->devs[i], "%s", a->st.disks[i].device);
    j->in.protected_devs[j->in.nprotected++] = j->devs[i];
  }
  pthread_mutex_unlock(&a->lock);
  if (pthread_create(&j->thread, NULL, job_main, j) != 0) {
    free(j);
    return rpl_fail(RPL_E_NOMEM, "cannot start a thread for the boot readiness checks");
  }
  a->readiness_job = j;
  return RPL_OK;
}

void readiness_stop(struct agent *a)
{
  struct readiness_job *j = a->readiness_job;
  if (!j)
    return;
  pthread_join(j->thread, NULL);
  free(j);
  a->readiness_job = NULL;
}
