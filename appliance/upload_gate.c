/* upload_gate.c - gates the daemon's uploads on the storage prerequisites: checks run before the
 * first upload and again, with exponential backoff, after a storage failure; status shows why. */
#include "upload_gate.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "prereq.h"
#include "rpl_clock.h"
#include "rpl_log.h"

struct upload_gate {
  pthread_mutex_t lock;
  struct appliance_settings settings;
  bool open;
  bool checked;              /* the checks ran at least once */
  uint64_t next_check_ms;    /* monotonic */
  unsigned backoff_ms;
  time_t last_check;         /* unix seconds of the last run */
  uint64_t runs, failures;
  char failed_check[64];     /* the first failed check of the last run, "" when it passed */
  char detail[1024];
  char remedy[512];
  char upload_error[512];    /* the storage failure that closed the gate, "" when none */
};

rpl_err upload_gate_create(const struct appliance_settings *s, struct upload_gate **out)
{
  struct upload_gate *g = calloc(1, sizeof *g);
  if (!g)
    return RPL_E_NOMEM;
  pthread_mutex_init(&g->lock, NULL);
  g->settings = *s;
  g->backoff_ms = UPLOAD_GATE_BACKOFF_MIN_MS;
  *out = g;
  return RPL_OK;
}

void upload_gate_free(struct upload_gate *g)
{
  if (!g)
    return;
  pthread_mutex_destroy(&g->lock);
  /* The settings hold the storage credentials. */
  memset(&g->settings, 0, sizeof g->settings);
  free(g);
}

static unsigned next_backoff(unsigned ms)
{
  return ms >= UPLOAD_GATE_BACKOFF_MAX_MS / 2 ? UPLOAD_GATE_BACKOFF_MAX_MS : ms * 2;
}

bool upload_gate_is_open(struct upload_gate *g)
{
  pthread_mutex_lock(&g->lock);
  bool open = g->open;
  pthread_mutex_unlock(&g->lock);
  return open;
}

bool upload_gate_pass(struct upload_gate *g, bool *just_opened)
{
  if (just_opened)
    *just_opened = false;
  pthread_mutex_lock(&g->lock);
  if (g->open || rpl_mono_ms() < g->next_check_ms) {
    bool open = g->open;
    pthread_mutex_unlock(&g->lock);
    return open;
  }
  pthread_mutex_unlock(&g->lock);

  /* The checks take network round trips: status must not wait for them. */
  struct prereq_report *r = malloc(sizeof *r);
  if (!r)
    return false;
  prereq_run(&g->settings, r);
  const struct prereq_item *bad = prereq_first_failure(r);

  pthread_mutex_lock(&g->lock);
  g->checked = true;
  g->runs++;
  g->last_check = time(NULL);
  if (bad) {
    bool changed = strcmp(g->failed_check, bad->name) != 0;
    snprintf(g->failed_check, sizeof g->failed_check, "%s", bad->name);
    snprintf(g->detail, sizeof g->detail, "%s", bad->detail);
    snprintf(g->remedy, sizeof g->remedy, "%s", bad->remedy);
    g->failures++;
    g->next_check_ms = rpl_mono_ms() + g->backoff_ms;
    if (changed)
      log_warn("uploads held: storage check '%s' failed: %s; fix: %s (checked again in %u ms, backing off to %u s)",
               g->failed_check, g->detail, g->remedy, g->backoff_ms, UPLOAD_GATE_BACKOFF_MAX_MS / 1000);
    g->backoff_ms = next_backoff(g->backoff_ms);
  } else {
    g->failed_check[0] = g->detail[0] = g->remedy[0] = 0;
    g->open = true;
    if (just_opened)
      *just_opened = true;
    log_notice("storage checks passed (%zu of %zu): uploads may run", r->n, r->n);
  }
  bool open = g->open;
  pthread_mutex_unlock(&g->lock);
  free(r);
  return open;
}

uint64_t upload_gate_wait_ms(struct upload_gate *g)
{
  pthread_mutex_lock(&g->lock);
  uint64_t now = rpl_mono_ms(), w = g->open || now >= g->next_check_ms ? 0 : g->next_check_ms - now;
  pthread_mutex_unlock(&g->lock);
  return w;
}

void upload_gate_failed(struct upload_gate *g, const char *what)
{
  pthread_mutex_lock(&g->lock);
  if (g->open)
    log_warn("uploads held after a storage failure (%s): checking the storage path again in %u ms", what, g->backoff_ms);
  g->open = false;
  snprintf(g->upload_error, sizeof g->upload_error, "%s", what);
  g->next_check_ms = rpl_mono_ms() + g->backoff_ms;
  g->backoff_ms = next_backoff(g->backoff_ms);
  pthread_mutex_unlock(&g->lock);
}

void upload_gate_succeeded(struct upload_gate *g)
{
  pthread_mutex_lock(&g->lock);
  g->backoff_ms = UPLOAD_GATE_BACKOFF_MIN_MS;
  g->upload_error[0] = 0;
  pthread_mutex_unlock(&g->lock);
}

void upload_gate_get_info(struct upload_gate *g, struct upload_gate_info *out)
{
  pthread_mutex_lock(&g->lock);
  out->open = g->open;
  out->checked = g->checked;
  out->runs = g->runs;
  out->failures = g->failures;
  snprintf(out->failed_check, sizeof out->failed_check, "%s", g->failed_check);
  snprintf(out->detail, sizeof out->detail, "%.255s", g->detail);
  snprintf(out->remedy, sizeof out->remedy, "%.255s", g->remedy);
  snprintf(out->upload_error, sizeof out->upload_error, "%.255s", g->upload_error);
  pthread_mutex_unlock(&g->lock);
}

void upload_gate_status(struct upload_gate *g, struct json_out *j, FILE *f)
{
  pthread_mutex_lock(&g->lock);
  const char *state = g->open ? "running" : g->checked ? "held" : "checking";
  uint64_t now = rpl_mono_ms();
  uint64_t next_s = g->open || now >= g->next_check_ms ? 0 : (g->next_check_ms - now + 999) / 1000;
  if (j) {
    json_object_begin(j, "uploads");
    json_string(j, "state", state);
    json_bool(j, "checks_passed", g->open);
    json_string(j, "failed_check", g->failed_check[0] ? g->failed_check : NULL);
    json_string(j, "failed_check_detail", g->failed_check[0] ? g->detail : NULL);
    json_string(j, "remedy", g->failed_check[0] ? g->remedy : NULL);
    json_string(j, "last_storage_error", g->upload_error[0] ? g->upload_error : NULL);
    json_u64(j, "check_runs", g->runs);
    json_u64(j, "check_failures", g->failures);
    json_u64(j, "last_check_unix", (uint64_t)g->last_check);
    json_u64(j, "next_check_in_seconds", next_s);
    json_object_end(j);
  } else if (g->open) {
    fprintf(f, "uploads: running (storage checks passed)\n");
  } else if (!g->checked) {
    fprintf(f, "uploads: held: storage checks not run yet%s%s\n", g->upload_error[0] ? "; last storage error: " : "",
            g->upload_error);
  } else if (g->failed_check[0]) {
    fprintf(f, "uploads: held: storage check '%s' failed: %s; fix: %s (next check in %" PRIu64 " s)\n", g->failed_check,
            g->detail, g->remedy, next_s);
  } else {
    fprintf(f, "uploads: held after a storage error: %s (checking again in %" PRIu64 " s)\n", g->upload_error, next_s);
  }
  pthread_mutex_unlock(&g->lock);
}
