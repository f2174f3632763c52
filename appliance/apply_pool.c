/* apply_pool.c - the apply workers and their coordinator: N workers each hold one disk at a time
 * (its claim), and the coordinator hands them the disks that have work, fairly. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "appliance.h"
#include "rpl_log.h"

/* One worker's thread and what the coordinator told it with its disk (under L). */
static struct {
  pthread_t thread;
  bool started;
  bool pass;        /* the storage checks passed when it was handed its disk */
} workers[APPLY_WORKERS_MAX];
static pthread_t coordinator;
static bool coordinator_started;
static pthread_cond_t handed = PTHREAD_COND_INITIALIZER; /* a worker was handed a disk, or the pool stops */
static struct appliance *pool_app;

static void *worker_main(void *arg)
{
  unsigned w = (unsigned)(uintptr_t)arg;
  struct appliance *a = pool_app;
  struct apply_worker_slot *slot = &a->pool.workers[w];
  pthread_mutex_lock(&a->lock);
  for (;;) {
    while (!slot->disk && !atomic_load(&appliance_stopping))
      pthread_cond_wait(&handed, &a->lock);
    struct disk *d = slot->disk;
    if (!d)
      break;
    bool pass = workers[w].pass;
    pthread_mutex_unlock(&a->lock);
    if (!atomic_load(&appliance_stopping))
      applier_serve_disk(a, d, pass, w);
    pthread_mutex_lock(&a->lock);
    d->claimed = false;
    slot->disk = NULL;
    a->pool.busy--;
    pthread_cond_signal(&a->work);         /* the coordinator hands out the next disk */
    pthread_cond_broadcast(&a->applied);   /* a session waiting for the disk to be free */
    disk_wake_session(d);                  /* and one that would look at its next poll */
  }
  pthread_mutex_unlock(&a->lock);
  return NULL;
}

/* Hands idle workers the disks with work, most urgent first, then the one served least recently.
 * L held. */
static void hand_out(struct appliance *a, bool pass, uint64_t now)
{
  static struct disk *list[MAX_DISKS];        /* the coordinator's only: kept off its stack */
  static struct apply_pool_cand cand[MAX_DISKS];
  size_t n = 0;
  unsigned queue = 0;
  for (struct disk *d = a->disks; d && n < MAX_DISKS; d = d->next, n++) {
    list[n] = d;
    cand[n] = (struct apply_pool_cand){.prio = applier_disk_work(a, d, pass, now), .claimed = d->claimed,
                                       .served_turn = d->served_turn};
    queue += cand[n].prio == APPLY_PRIO_APPLY && !d->claimed;
  }
  while (a->pool.busy < a->pool.nworkers) {
    size_t i = apply_pool_pick(cand, n);
    if (i == n)
      break;
    unsigned w = 0;
    while (a->pool.workers[w].disk)
      w++;
    struct disk *d = list[i];
    cand[i].claimed = d->claimed = true;
    d->served_turn = ++a->pool.turn;
    a->pool.workers[w].disk = d;
    a->pool.workers[w].since_ms = now;
    a->pool.workers[w].turns++;
    workers[w].pass = pass;
    queue -= cand[i].prio == APPLY_PRIO_APPLY;
    if (++a->pool.busy > a->pool.busy_max)
      a->pool.busy_max = a->pool.busy;
  }
  a->pool.queue_disks = queue;
  pthread_cond_broadcast(&handed);
}

static void *coordinator_main(void *arg)
{
  struct appliance *a = arg;
  while (!atomic_load(&appliance_stopping)) {
    /* Nothing is uploaded before the storage checks pass (run again with backoff after a failure). */
    bool opened;
    bool pass = upload_gate_pass(a->gate, &opened);
    pthread_mutex_lock(&a->lock);
    if (opened) /* every store that waited opens now: uploads may run */
      for (struct disk *d = a->disks; d; d = d->next)
        d->open_retry_ms = 0;
    hand_out(a, pass, rpl_mono_ms());
    schedule_tick(a, (int64_t)rpl_unix_ms());
    /* Woken by a commit or a worker done; at the latest when the next housekeeping may be due. */
    uint64_t wait = pass ? HOUSEKEEPING_PERIOD_MS : upload_gate_wait_ms(a->gate);
    if (wait > HOUSEKEEPING_PERIOD_MS)
      wait = HOUSEKEEPING_PERIOD_MS;
    if (wait && !atomic_load(&appliance_stopping)) {
      struct timespec ts = rpl_realtime_in_ms(wait);
      pthread_cond_timedwait(&a->work, &a->lock, &ts);
    }
    pthread_mutex_unlock(&a->lock);
  }
  return NULL;
}

rpl_err apply_pool_start(struct appliance *a)
{
  pool_app = a;
  const char *hold = getenv("RPL_TEST_APPLY_HOLD_MS"); /* test only: see apply_pool.h */
  if (hold) {
    unsigned long ms = strtoul(hold, NULL, 10);
    a->pool.hold_ms = ms > APPLY_HOLD_MAX_MS ? APPLY_HOLD_MAX_MS : (unsigned)ms;
    log_warn("test hook: every apply is held %u ms longer ($RPL_TEST_APPLY_HOLD_MS)", a->pool.hold_ms);
  }
  for (unsigned w = 0; w < a->pool.nworkers; w++) {
    if (pthread_create(&workers[w].thread, NULL, worker_main, (void *)(uintptr_t)w)) {
      atomic_store(&appliance_stopping, 1);
      apply_pool_stop(a);
      return rpl_fail(RPL_E_NOMEM, "cannot start apply worker %u of %u", w + 1, a->pool.nworkers);
    }
    workers[w].started = true;
  }
  if (pthread_create(&coordinator, NULL, coordinator_main, a)) {
    atomic_store(&appliance_stopping, 1);
    apply_pool_stop(a);
    return rpl_fail(RPL_E_NOMEM, "cannot start the apply pool's coordinator");
  }
  coordinator_started = true;
  return RPL_OK;
}

void apply_pool_stop(struct appliance *a)
{
  pthread_mutex_lock(&a->lock);
  pthread_cond_broadcast(&handed);
  pthread_cond_broadcast(&a->work);
  pthread_mutex_unlock(&a->lock);
  if (coordinator_started)
    pthread_join(coordinator, NULL);
  coordinator_started = false;
  /* The coordinator hands out nothing more: wake the idle workers again, now that stopping is set. */
  pthread_mutex_lock(&a->lock);
  pthread_cond_broadcast(&handed);
  pthread_mutex_unlock(&a->lock);
  for (unsigned w = 0; w < APPLY_WORKERS_MAX; w++)
    if (workers[w].started) {
      pthread_join(workers[w].thread, NULL);
      workers[w].started = false;
    }
}
