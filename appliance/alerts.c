/* alerts.c - the health watcher (transitions held, logged once, remembered across restarts) and the
 * webhook sender (one queue directory per webhook, oldest first, retried with backoff). */
#include "alerts.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "appliance.h"
#include "file_io.h"
#include "health.h"
#include "https_post.h"
#include "rpl_log.h"

#define LEVELS_FILE "levels"
#define LEVELS_MAX_BYTES (1u << 20)

struct subject {
  char kind[12];                 /* "disk", "agent", "appliance" */
  char id[37];
  enum health_level cur;         /* the level last alerted (or remembered) */
  enum health_level pending;     /* a different level seen since pending_ms */
  uint64_t pending_ms;
};

struct hook {
  char url[1024];
  char shown[256];               /* without its query: a receiver's token often sits there */
  char dir[4300];
  uint64_t next_seq;             /* the name of the next alert queued */
  unsigned queued;
  uint64_t delivered, dropped, failures;
  unsigned attempts;             /* failures in a row */
  uint64_t next_try_ms;          /* monotonic */
  int64_t last_delivered_unix;
  char last_error[256];
};

struct recent {
  int64_t unix_ms;
  char kind[12], id[37], name[128];
  enum health_level from, to;
  char codes[160];
};

/* A transition found under the daemon's lock, told (log, queues) after it is released. */
struct fired {
  char kind[12], id[37], name[128];
  enum health_level from, to;
  struct health h;
};

struct alerts {
  struct appliance *a;
  pthread_mutex_t lock;          /* everything below */
  pthread_cond_t wake;
  bool stop;
  pthread_t watcher, sender;
  bool watcher_running, sender_running;
  char dir[4100];                /* STATE/alerts */
  char ca[4096];
  char hostname[256];
  uint64_t start_ms, hold_ms, start_hold_ms;
  struct subject *subj;
  size_t nsubj, capsubj;
  bool levels_dirty;
  struct hook hooks[SETTINGS_MAX_WEBHOOKS];
  unsigned nhooks, next_hook;
  struct recent recent[ALERTS_RECENT];
  unsigned nrecent, recent_next;
  struct fired *fired;           /* the watcher's, per round */
  size_t nfired, capfired;
};

/* ---- the queues: STATE/alerts/webhook-HASH/NNNNNNNNNNNNNNNNNNNN.json ------------------------ */

/* The lowest and highest alert numbers queued in dir, and how many (0: none). */
static unsigned queue_scan(const char *dir, uint64_t *lo, uint64_t *hi)
{
  *lo = UINT64_MAX, *hi = 0;
  unsigned n = 0;
  DIR *d = opendir(dir);
  if (!d)
    return 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    char *end;
    unsigned long long v = strtoull(e->d_name, &end, 10);
    if (end == e->d_name || strcmp(end, ".json") != 0)
      continue;
    n++;
    if (v < *lo)
      *lo = v;
    if (v > *hi)
      *hi = v;
  }
  closedir(d);
  return n;
}

static void queue_path(const struct hook *h, uint64_t seq, char *out, size_t outsz)
{
  snprintf(out, outsz, "%s/%020" PRIu64 ".json", h->dir, seq);
}

/* Adds body to h's queue, dropping the oldest past ALERTS_QUEUE_MAX; false when it could not be
 * written (logged). al->lock held. */
static bool enqueue(struct alerts *al, struct hook *h, const char *body, size_t len)
{
  char path[4400];
  uint64_t lo, hi;
  while (h->queued >= ALERTS_QUEUE_MAX && queue_scan(h->dir, &lo, &hi)) {
    queue_path(h, lo, path, sizeof path);
    unlink(path);
    h->queued--;
    if (!h->dropped++ || h->dropped % 100 == 0)
      log_warn("webhook %s: its queue is full (%d alerts): the oldest dropped (%" PRIu64 " so far)", h->shown,
               ALERTS_QUEUE_MAX, h->dropped);
  }
  queue_path(h, h->next_seq, path, sizeof path);
  rpl_err e = file_write_atomic(path, body, len, 0600);
  if (e) {
    log_err("webhook %s: cannot queue an alert: %s", h->shown, rpl_detail(e)[0] ? rpl_detail(e) : rpl_strerror(e));
    return false;
  }
  h->next_seq++;
  h->queued++;
  pthread_cond_broadcast(&al->wake);
  return true;
}

static rpl_err hook_open(struct alerts *al, struct hook *h, const char *url)
{
  snprintf(h->url, sizeof h->url, "%s", url);
  snprintf(h->shown, sizeof h->shown, "%.*s", (int)strcspn(url, "?#"), url);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned mdlen = 0;
  if (!EVP_Digest(url, strlen(url), md, &mdlen, EVP_sha256(), NULL))
    return RPL_E_NOMEM;
  char hex[17];
  for (int i = 0; i < 8; i++)
    snprintf(hex + 2 * i, 3, "%02x", md[i]);
  snprintf(h->dir, sizeof h->dir, "%s/webhook-%s", al->dir, hex);
  if (mkdir(h->dir, 0700) != 0 && errno != EEXIST)
    return rpl_fail(RPL_E_IO, "cannot create %s: %s", h->dir, strerror(errno));
  uint64_t lo, hi;
  h->queued = queue_scan(h->dir, &lo, &hi);
  h->next_seq = h->queued ? hi + 1 : 1;
  if (h->queued)
    log_notice("webhook %s: %u alert(s) queued before the restart are sent first", h->shown, h->queued);
  return RPL_OK;
}

/* ---- the alerts' JSON ----------------------------------------------------------------------- */

/* A new buffer with the alert's JSON: a transition (f) or, with f NULL, a test alert. */
static char *alert_body(struct alerts *al, const struct fired *f, size_t *len)
{
  char *buf = NULL;
  FILE *m = open_memstream(&buf, len);
  if (!m)
    return NULL;
  struct json_out j;
  json_init(&j, m);
  json_object_begin(&j, NULL);
  json_string(&j, "type", f ? "health" : "test");
  json_string(&j, "appliance", al->hostname);
  int64_t now_ms = (int64_t)rpl_unix_ms();
  json_u64(&j, "unix_ms", (uint64_t)now_ms);
  char when[32];
  time_t t = (time_t)(now_ms / 1000);
  struct tm tm;
  strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t, &tm));
  json_string(&j, "time", when);
  if (f) {
    json_object_begin(&j, "subject");
    json_string(&j, "kind", f->kind);
    json_string(&j, "id", f->id);
    json_string(&j, "name", f->name);
    json_object_end(&j);
    json_string(&j, "from", health_name(f->from));
    json_string(&j, "to", health_name(f->to));
    health_json(&j, "health", &f->h);
  } else {
    json_string(&j, "message", "a test alert from the replication appliance's configuration manager");
  }
  json_object_end(&j);
  bool ok = json_finish(&j);
  fputc('\n', m);
  if (fclose(m) != 0 || !ok || *len > ALERTS_BODY_MAX) {
    free(buf);
    return NULL;
  }
  return buf;
}

/* ---- the levels remembered across restarts -------------------------------------------------- */

static struct subject *subject_find(struct alerts *al, const char *kind, const char *id, bool create)
{
  for (size_t i = 0; i < al->nsubj; i++)
    if (!strcmp(al->subj[i].kind, kind) && !strcmp(al->subj[i].id, id))
      return &al->subj[i];
  if (!create)
    return NULL;
  if (al->nsubj == al->capsubj) {
    size_t cap = al->capsubj ? al->capsubj * 2 : 64;
    struct subject *n = realloc(al->subj, cap * sizeof *n);
    if (!n)
      return NULL;
    al->subj = n, al->capsubj = cap;
  }
  struct subject *s = &al->subj[al->nsubj++];
  *s = (struct subject){.cur = HEALTH_HEALTHY, .pending = HEALTH_HEALTHY};
  snprintf(s->kind, sizeof s->kind, "%s", kind);
  snprintf(s->id, sizeof s->id, "%s", id);
  return s;
}

static enum health_level level_of(const char *name)
{
  return !strcmp(name, "critical") ? HEALTH_CRITICAL : !strcmp(name, "warning") ? HEALTH_WARNING : HEALTH_HEALTHY;
}

static void levels_load(struct alerts *al)
{
  char path[4400], *text = NULL;
  snprintf(path, sizeof path, "%s/%s", al->dir, LEVELS_FILE);
  rpl_err e = file_read_all(path, LEVELS_MAX_BYTES, &text);
  if (e) {
    if (e != RPL_E_NOT_FOUND)
      log_warn("alerts: %s unreadable (%s): every subject starts healthy", path, rpl_strerror(e));
    return;
  }
  for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
    char kind[12], id[37], level[12];
    if (sscanf(line, "%11s %36s %11s", kind, id, level) != 3)
      continue;
    struct subject *s = subject_find(al, kind, id, true);
    if (s)
      s->cur = s->pending = level_of(level);
  }
  free(text);
}

/* al->lock held. */
static void levels_save(struct alerts *al)
{
  size_t cap = al->nsubj * 64 + 1, len = 0;
  char *buf = malloc(cap), path[4300];
  if (!buf)
    return;
  for (size_t i = 0; i < al->nsubj; i++)
    if (al->subj[i].cur != HEALTH_HEALTHY)
      len += (size_t)snprintf(buf + len, cap - len, "%s %s %s\n", al->subj[i].kind, al->subj[i].id,
                              health_name(al->subj[i].cur));
  snprintf(path, sizeof path, "%s/%s", al->dir, LEVELS_FILE);
  rpl_err e = file_write_atomic(path, buf, len, 0600);
  if (e)
    log_warn("alerts: cannot save %s: %s (a restart may alert these transitions again)", path, rpl_strerror(e));
  else
    al->levels_dirty = false;
  free(buf);
}

/* ---- the watcher ------------------------------------------------------------------------------ */

/* One look at a subject's health; a level held long enough becomes a transition (al->fired).
 * al->lock held. */
static void observe(struct alerts *al, const char *kind, const char *id, const char *name, const struct health *h,
                    uint64_t now)
{
  struct subject *s = subject_find(al, kind, id, true);
  if (!s)
    return;
  if (h->level == s->cur) {
    s->pending = s->cur;
    return;
  }
  if (h->level != s->pending) {
    s->pending = h->level;
    s->pending_ms = now;
  }
  uint64_t hold = h->level > s->cur && now - al->start_ms < al->start_hold_ms ? al->start_hold_ms : al->hold_ms;
  if (now - s->pending_ms < hold)
    return;
  if (al->nfired == al->capfired) {
    size_t cap = al->capfired ? al->capfired * 2 : 8;
    struct fired *n = realloc(al->fired, cap * sizeof *n);
    if (!n)
      return; /* seen again at the next look */
    al->fired = n, al->capfired = cap;
  }
  struct fired *f = &al->fired[al->nfired++];
  snprintf(f->kind, sizeof f->kind, "%s", kind);
  snprintf(f->id, sizeof f->id, "%s", id);
  snprintf(f->name, sizeof f->name, "%s", name);
  f->from = s->cur;
  f->to = h->level;
  f->h = *h;
  s->cur = h->level;
  al->levels_dirty = true;
}

struct agent_walk {
  struct alerts *al;
  struct thresholds t;
  uint64_t now;
};

static int observe_agent(const struct catalog_agent *ag, void *arg)
{
  struct agent_walk *w = arg;
  struct health h;
  health_agent(&w->t, ag, &h);
  char id[37];
  id_text(ag->id, id);
  pthread_mutex_lock(&w->al->lock);
  observe(w->al, "agent", id, ag->hostname, &h, w->now);
  pthread_mutex_unlock(&w->al->lock);
  return 0;
}

/* The appliance's own reasons: its roll-up of disks and agents would repeat their alerts. */
static void own_reasons(struct health *h)
{
  unsigned n = 0;
  h->level = HEALTH_HEALTHY;
  for (unsigned i = 0; i < h->n; i++) {
    if (!strcmp(h->r[i].code, "disks") || !strcmp(h->r[i].code, "agents"))
      continue;
    h->r[n++] = h->r[i];
    if (h->r[i].level > h->level)
      h->level = h->r[i].level;
  }
  h->n = n;
}

/* Logs, remembers and queues one transition. */
static void tell(struct alerts *al, const struct fired *f)
{
  char codes[160] = "";
  size_t used = 0;
  for (unsigned i = 0; i < f->h.n && used < sizeof codes; i++)
    used += (size_t)snprintf(codes + used, sizeof codes - used, "%s%s", i ? "," : "", f->h.r[i].code);
  char first[400] = "";
  if (f->h.n)
    snprintf(first, sizeof first, ": %s", f->h.r[0].what);
  if (f->to > f->from)
    log_warn("health: %s %s (%s) %s -> %s%s", f->kind, f->id, f->name, health_name(f->from), health_name(f->to), first);
  else
    log_notice("health: %s %s (%s) %s -> %s%s", f->kind, f->id, f->name, health_name(f->from), health_name(f->to),
               first);
  size_t len = 0;
  char *body = alert_body(al, f, &len);
  pthread_mutex_lock(&al->lock);
  struct recent *r = &al->recent[al->recent_next];
  al->recent_next = (al->recent_next + 1) % ALERTS_RECENT;
  if (al->nrecent < ALERTS_RECENT)
    al->nrecent++;
  *r = (struct recent){.unix_ms = (int64_t)rpl_unix_ms(), .from = f->from, .to = f->to};
  snprintf(r->kind, sizeof r->kind, "%s", f->kind);
  snprintf(r->id, sizeof r->id, "%s", f->id);
  snprintf(r->name, sizeof r->name, "%s", f->name);
  snprintf(r->codes, sizeof r->codes, "%s", codes);
  for (unsigned i = 0; body && i < al->nhooks; i++)
    (void)enqueue(al, &al->hooks[i], body, len); /* a failure is logged; the other webhooks still get it */
  pthread_mutex_unlock(&al->lock);
  if (!body && al->nhooks)
    log_err("health: the alert for %s %s could not be made (out of memory): not sent", f->kind, f->id);
  free(body);
}

static void look(struct alerts *al)
{
  struct appliance *a = al->a;
  uint64_t now = rpl_mono_ms();
  pthread_mutex_lock(&a->lock);
  for (struct disk *d = a->disks; d; d = d->next) {
    struct health h;
    health_disk(a, d, &h);
    char id[37];
    id_text(d->id, id);
    pthread_mutex_lock(&al->lock);
    observe(al, "disk", id, d->name, &h, now);
    pthread_mutex_unlock(&al->lock);
  }
  struct agent_walk w = {.al = al, .t = a->thresholds, .now = now};
  pthread_mutex_unlock(&a->lock);
  rpl_err e = catalog_agent_foreach(a->cat, observe_agent, &w);
  (void)e; /* the catalog says why in the log; the next look tries again */
  struct health h;
  health_appliance(a, &h);
  own_reasons(&h);
  pthread_mutex_lock(&al->lock);
  observe(al, "appliance", "appliance", al->hostname, &h, now);
  size_t n = al->nfired;
  pthread_mutex_unlock(&al->lock);
  for (size_t i = 0; i < n; i++)
    tell(al, &al->fired[i]); /* only this thread adds to al->fired */
  pthread_mutex_lock(&al->lock);
  al->nfired = 0;
  if (al->levels_dirty)
    levels_save(al);
  pthread_mutex_unlock(&al->lock);
}

static void wait_ms(struct alerts *al, uint64_t ms)
{
  struct timespec until = rpl_realtime_in_ms(ms);
  pthread_cond_timedwait(&al->wake, &al->lock, &until);
}

static void *watcher_main(void *arg)
{
  struct alerts *al = arg;
  pthread_mutex_lock(&al->lock);
  while (!al->stop) {
    pthread_mutex_unlock(&al->lock);
    look(al);
    pthread_mutex_lock(&al->lock);
    if (!al->stop)
      wait_ms(al, ALERTS_CHECK_MS);
  }
  pthread_mutex_unlock(&al->lock);
  return NULL;
}

/* ---- the sender ------------------------------------------------------------------------------- */

/* Sends h's oldest alert. al->lock held (released during the POST). */
static void send_oldest(struct alerts *al, struct hook *h)
{
  uint64_t lo, hi;
  char path[4400], url[1024], ca[4096];
  if (!(h->queued = queue_scan(h->dir, &lo, &hi)))
    return;
  queue_path(h, lo, path, sizeof path);
  snprintf(url, sizeof url, "%s", h->url);
  snprintf(ca, sizeof ca, "%s", al->ca);
  pthread_mutex_unlock(&al->lock);
  char *body = NULL;
  long status = 0;
  rpl_err e = file_read_all(path, ALERTS_BODY_MAX, &body);
  bool gone = e == RPL_E_NOT_FOUND, bad = e && !gone; /* dropped meanwhile; damaged: never sendable */
  if (!e)
    e = https_post_json(url, ca, body, strlen(body), ALERTS_POST_TIMEOUT_S, &status);
  char detail[RPL_DETAIL_MAX];
  snprintf(detail, sizeof detail, "%s", rpl_detail(e)[0] ? rpl_detail(e) : rpl_strerror(e));
  free(body);
  pthread_mutex_lock(&al->lock);
  if (gone)
    return;
  if (!e || bad) {
    unlink(path);
    h->queued--;
    if (bad) {
      h->dropped++;
      log_err("webhook %s: queued alert %s unreadable (%s): dropped", h->shown, path, detail);
      return;
    }
    h->delivered++;
    h->last_delivered_unix = (int64_t)time(NULL);
    if (h->attempts)
      log_notice("webhook %s: delivering again after %u failed attempt(s)", h->shown, h->attempts);
    h->attempts = 0;
    h->next_try_ms = 0;
    return;
  }
  h->failures++;
  uint64_t backoff = ALERTS_BACKOFF_FIRST_MS;
  for (unsigned i = 0; i < h->attempts && backoff < ALERTS_BACKOFF_MAX_MS; i++)
    backoff *= 2;
  if (backoff > ALERTS_BACKOFF_MAX_MS)
    backoff = ALERTS_BACKOFF_MAX_MS;
  if (!h->attempts++)
    log_warn("webhook %s: %s (%u alert(s) queued; tried again with backoff up to %ds)", h->shown, detail, h->queued,
             ALERTS_BACKOFF_MAX_MS / 1000);
  snprintf(h->last_error, sizeof h->last_error, "%.255s", detail);
  h->next_try_ms = rpl_mono_ms() + backoff;
}

static void *sender_main(void *arg)
{
  struct alerts *al = arg;
  pthread_mutex_lock(&al->lock);
  while (!al->stop) {
    uint64_t now = rpl_mono_ms(), soonest = UINT64_MAX;
    struct hook *due = NULL;
    for (unsigned k = 0; k < al->nhooks && !due; k++) {
      struct hook *h = &al->hooks[(al->next_hook + k) % al->nhooks];
      if (!h->queued)
        continue;
      if (h->next_try_ms <= now)
        due = h;
      else if (h->next_try_ms < soonest)
        soonest = h->next_try_ms;
    }
    if (due) {
      al->next_hook = (unsigned)(due - al->hooks + 1) % al->nhooks; /* fair between webhooks */
      send_oldest(al, due);
      continue;
    }
    wait_ms(al, soonest == UINT64_MAX ? 60000 : soonest - now);
  }
  pthread_mutex_unlock(&al->lock);
  return NULL;
}

/* ---- start, stop, status, test ------------------------------------------------------------- */

rpl_err alerts_start(struct appliance *a, struct alerts **out)
{
  *out = NULL;
  struct alerts *al = calloc(1, sizeof *al);
  if (!al)
    return RPL_E_NOMEM;
  al->a = a;
  pthread_mutex_init(&al->lock, NULL);
  pthread_cond_init(&al->wake, NULL);
  al->start_ms = rpl_mono_ms();
  al->hold_ms = ALERTS_HOLD_MS;
  al->start_hold_ms = ALERTS_START_HOLD_MS;
  const char *hold = getenv("RPL_TEST_ALERT_HOLD_MS");
  if (hold) { /* tests only: both holds shortened */
    al->hold_ms = al->start_hold_ms = strtoull(hold, NULL, 10);
    log_warn("RPL_TEST_ALERT_HOLD_MS=%" PRIu64 ": health transitions are told after %" PRIu64 " ms (tests only)",
             al->hold_ms, al->hold_ms);
  }
  if (gethostname(al->hostname, sizeof al->hostname) != 0)
    snprintf(al->hostname, sizeof al->hostname, "appliance");
  snprintf(al->ca, sizeof al->ca, "%s", a->settings.webhook_ca);
  snprintf(al->dir, sizeof al->dir, "%s/alerts", a->state_dir);
  rpl_err e = RPL_OK;
  if (mkdir(al->dir, 0700) != 0 && errno != EEXIST)
    e = rpl_fail(RPL_E_IO, "cannot create %s: %s", al->dir, strerror(errno));
  for (unsigned i = 0; !e && i < SETTINGS_MAX_WEBHOOKS; i++)
    if (a->settings.webhook[i][0] && !(e = https_url_check(a->settings.webhook[i])))
      e = hook_open(al, &al->hooks[al->nhooks++], a->settings.webhook[i]);
  if (!e) {
    levels_load(al);
    al->watcher_running = pthread_create(&al->watcher, NULL, watcher_main, al) == 0;
    al->sender_running = pthread_create(&al->sender, NULL, sender_main, al) == 0;
    if (!al->watcher_running || !al->sender_running)
      e = RPL_E_NOMEM;
  }
  if (e) {
    alerts_stop(al);
    return e;
  }
  *out = al;
  return RPL_OK;
}

void alerts_stop(struct alerts *al)
{
  if (!al)
    return;
  pthread_mutex_lock(&al->lock);
  al->stop = true;
  pthread_cond_broadcast(&al->wake);
  pthread_mutex_unlock(&al->lock);
  if (al->watcher_running)
    pthread_join(al->watcher, NULL);
  if (al->sender_running)
    pthread_join(al->sender, NULL);
  pthread_cond_destroy(&al->wake);
  pthread_mutex_destroy(&al->lock);
  free(al->subj);
  free(al->fired);
  free(al);
}

void alerts_status(struct alerts *al, struct json_out *j, FILE *f)
{
  char thresholds[THRESHOLDS_TEXT_MAX];
  struct thresholds t = appliance_thresholds(al->a);
  thresholds_format(&t, thresholds, sizeof thresholds);
  uint64_t now = rpl_mono_ms();
  pthread_mutex_lock(&al->lock);
  if (j) {
    json_object_begin(j, "alerts");
    json_string(j, "thresholds", thresholds);
    json_u64(j, "hold_seconds", al->hold_ms / 1000);
    json_array_begin(j, "recent"); /* newest first */
    for (unsigned k = 0; k < al->nrecent; k++) {
      const struct recent *r = &al->recent[(al->recent_next + ALERTS_RECENT - 1 - k) % ALERTS_RECENT];
      json_object_begin(j, NULL);
      json_u64(j, "unix_ms", (uint64_t)r->unix_ms);
      json_string(j, "kind", r->kind);
      json_string(j, "id", r->id);
      json_string(j, "name", r->name);
      json_string(j, "from", health_name(r->from));
      json_string(j, "to", health_name(r->to));
      json_string(j, "reasons", r->codes);
      json_object_end(j);
    }
    json_array_end(j);
    json_array_begin(j, "webhooks");
    for (unsigned i = 0; i < al->nhooks; i++) {
      const struct hook *h = &al->hooks[i];
      json_object_begin(j, NULL);
      json_string(j, "url", h->shown);
      json_u64(j, "queued", h->queued);
      json_u64(j, "delivered", h->delivered);
      json_u64(j, "dropped", h->dropped);
      json_u64(j, "failed_attempts", h->failures);
      json_u64(j, "failing_for_attempts", h->attempts);
      json_string(j, "last_error", h->last_error[0] ? h->last_error : NULL);
      json_u64(j, "last_delivered_unix", (uint64_t)h->last_delivered_unix);
      json_u64(j, "next_try_in_ms", h->queued && h->next_try_ms > now ? h->next_try_ms - now : 0);
      json_object_end(j);
    }
    json_array_end(j);
    json_object_end(j);
  } else {
    fprintf(f, "alerts: thresholds %s, %u webhook(s)\n", thresholds, al->nhooks);
    for (unsigned i = 0; i < al->nhooks; i++) {
      const struct hook *h = &al->hooks[i];
      fprintf(f, "  webhook %s: %u queued, %" PRIu64 " delivered, %" PRIu64 " dropped", h->shown, h->queued,
              h->delivered, h->dropped);
      if (h->attempts)
        fprintf(f, ", failing (%u attempt(s)): %s", h->attempts, h->last_error);
      fputc('\n', f);
    }
  }
  pthread_mutex_unlock(&al->lock);
}

rpl_err alerts_send_test(struct alerts *al, unsigned *queued)
{
  *queued = 0;
  if (!al->nhooks)
    return rpl_fail(RPL_E_NOT_FOUND, "no webhook is configured: set one with 'replication-appliance init --webhook "
                    "https://...'");
  size_t len = 0;
  char *body = alert_body(al, NULL, &len);
  if (!body)
    return RPL_E_NOMEM;
  pthread_mutex_lock(&al->lock);
  for (unsigned i = 0; i < al->nhooks; i++)
    *queued += enqueue(al, &al->hooks[i], body, len);
  pthread_mutex_unlock(&al->lock);
  free(body);
  log_notice("alerts: a test alert queued to %u webhook(s)", *queued);
  return RPL_OK;
}
