/* readiness_report.c - the daemon's side of boot readiness: runs the checks of readiness.c on this
 * server and sends their summary to the appliance (READINESS), which shows it per agent. */
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

rpl_err readiness_send_if_due(struct agent *a)
{
  if (!a->peer_readiness)
    return RPL_OK;
  pthread_mutex_lock(&a->lock);
  size_t ndisks = a->st.ndisks;
  pthread_mutex_unlock(&a->lock);
  uint64_t now = rpl_mono_ms();
  if (a->readiness_sent_ms && ndisks == a->readiness_ndisks && now - a->readiness_sent_ms < READINESS_PERIOD_MS)
    return RPL_OK;
  char cache[sizeof a->st.dir + 32];
  snprintf(cache, sizeof cache, "%s/initramfs-modules", a->st.dir);
  struct readiness_input in = {.root = "/", .live = true, .initramfs_cache = cache};
  for (size_t i = 0; i < ndisks && i < READINESS_MAX_PROTECTED; i++)
    in.protected_devs[in.nprotected++] = a->st.disks[i].device; /* never changes once counted */
  struct readiness_report *r = calloc(1, sizeof *r);
  char *text = malloc(PROTO_MAX_STRING);
  rpl_err err = RPL_OK;
  if (!r || !text) {
    err = RPL_E_NOMEM;
    goto out;
  }
  readiness_run(&in, r);
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
  if ((err = proto_encode_readiness(&a->out, &m)) || (err = session_send_buf(a)))
    goto out;
  a->readiness_sent_ms = now ? now : 1;
  a->readiness_ndisks = ndisks;
out:
  free(r);
  free(text);
  return err;
}
