/* uploader_direct.c - the initial sync (or a resync too big for the cache) written straight into the
 * disk's page blob: a writer thread of its own submits the runs the session thread gathers,
 * committed or abandoned as one cycle. */
#include "uploader_internal.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lease.h"
#include "rpl_clock.h"
#include "rpl_log.h"

/* ---- the initial sync written straight into the blob (uploader.h) ---- */

/* The session thread gathers runs and queues them; a writer thread of the direct cycle submits them
 * on a client of its own and keeps the transfers moving while the session thread receives. The
 * uploader's own client stays the applier's (lease renewals, other work). */
#define DIRECT_QUEUE 4 /* runs waiting for the writer; with those in flight, all of the cycle's memory */

struct direct {
  struct uploader *u;
  struct blob_client *client;   /* the writer thread's alone */
  pthread_t writer;
  uint64_t cycle;
  char lease_id[sizeof ((struct lease *)0)->id];
  size_t in_flight_limit;
  uint64_t disk_size;
  struct rate_limit *limit_all, *limit_agent; /* the uploader's, when the cycle began */
  bool blank;                   /* the blob's zeros need no clear */
  struct run run;               /* being gathered (the session thread's alone) */
  uint64_t gathered_end;        /* the highest end of the extents gathered (the session thread's) */
  uint64_t limit_wait_ms;       /* the session thread's, for the stats */
  pthread_mutex_t lock;         /* what follows */
  pthread_cond_t changed;
  struct run queue[DIRECT_QUEUE];
  unsigned head, count;
  size_t in_flight;             /* writes the writer has taken and not seen finish */
  bool ending, abandon;         /* no more runs: write the queued ones / drop them */
  rpl_err err;                  /* the first failure; later runs are dropped */
  uint64_t put_pages, clears, bytes;
};

struct direct_write {
  struct direct *dr;
  uint8_t *buf;
};

static void direct_fail(struct direct *dr, rpl_err e)
{
  pthread_mutex_lock(&dr->lock);
  if (!dr->err) {
    dr->err = e;
    pthread_cond_broadcast(&dr->changed);
  }
  pthread_mutex_unlock(&dr->lock);
}

static void direct_done(void *ctx, rpl_err err, const struct blob_reply *reply)
{
  struct direct_write *w = ctx;
  if (err) {
    log_err("uploader %s: write failed: %s (HTTP %ld %s)", w->dr->u->blob, rpl_strerror(err), reply ? reply->status : 0,
            reply ? reply->error_code : "");
    direct_fail(w->dr, err);
  }
  uploader_pool_put(&w->dr->u->pool, w->buf);
  free(w);
}

/* Writer thread: queues one run on its client (takes its buffer). */
static rpl_err direct_submit(struct direct *dr, struct run *r)
{
  struct uploader *u = dr->u;
  struct blob_write_cond cond = {.sequence_lt = (int64_t)dr->cycle, .lease_id = dr->lease_id};
  struct direct_write *w = calloc(1, sizeof *w);
  if (!w) {
    uploader_pool_put(&u->pool, r->buf);
    return RPL_E_NOMEM;
  }
  w->dr = dr;
  rpl_err e;
  if (r->zero) {
    e = blob_clear_pages_async(dr->client, u->container, u->blob, r->offset, r->length, &cond, direct_done, w);
  } else {
    w->buf = r->buf;
    e = blob_put_page_async(dr->client, u->container, u->blob, r->offset, r->buf, (size_t)r->length, &cond,
                            direct_done, w);
  }
  if (e) {
    uploader_pool_put(&u->pool, w->buf);
    free(w);
    return e;
  }
  pthread_mutex_lock(&dr->lock);
  if (r->zero)
    dr->clears++;
  else
    dr->put_pages++, dr->bytes += r->length;
  pthread_mutex_unlock(&dr->lock);
  return RPL_OK;
}

static void *direct_writer(void *arg)
{
  struct direct *dr = arg;
  pthread_mutex_lock(&dr->lock);
  for (;;) {
    size_t pending = blob_client_pending(dr->client);
    if (dr->in_flight && !pending && !dr->count)
      pthread_cond_broadcast(&dr->changed); /* all written: direct_settle may go on */
    dr->in_flight = pending;
    if (dr->count && (dr->err || dr->abandon || pending < dr->in_flight_limit)) {
      struct run r = dr->queue[dr->head];
      dr->head = (dr->head + 1) % DIRECT_QUEUE;
      dr->count--;
      dr->in_flight++; /* taken: not yet the client's, but not finished either */
      pthread_cond_broadcast(&dr->changed); /* room for the session thread */
      bool drop = dr->err || dr->abandon;
      pthread_mutex_unlock(&dr->lock);
      rpl_err e = RPL_OK;
      if (drop)
        uploader_pool_put(&dr->u->pool, r.buf);
      else if ((e = direct_submit(dr, &r)) == RPL_OK)
        e = blob_client_poll(dr->client, 0);
      if (e)
        direct_fail(dr, e);
      pthread_mutex_lock(&dr->lock);
      continue;
    }
    if (!dr->count && dr->ending && !pending)
      break;
    if (pending) {
      pthread_mutex_unlock(&dr->lock);
      rpl_err e = blob_client_poll(dr->client, 100); /* returns early on blob_client_wakeup */
      if (e)
        direct_fail(dr, e);
      pthread_mutex_lock(&dr->lock);
    } else {
      pthread_cond_wait(&dr->changed, &dr->lock);
    }
  }
  pthread_mutex_unlock(&dr->lock);
  return NULL;
}

/* Session thread: the gathered run to the writer, waiting while its queue is full. */
static rpl_err direct_push(struct direct *dr)
{
  struct run *r = &dr->run;
  if (!r->length)
    return RPL_OK;
  if (r->zero && dr->blank) {
    r->length = 0; /* the pages read as zeros already */
    return RPL_OK;
  }
  if (!r->zero) { /* the bandwidth limits hold the receive back (the writer keeps the transfers going) */
    uint64_t t0 = 0;
    for (;;) {
      uint64_t w = uploader_limits_wait_us(dr->limit_all, dr->limit_agent);
      if (!w)
        break;
      if (!t0)
        t0 = rpl_mono_ms();
      struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)(w > 100000 ? 100000 : w) * 1000};
      nanosleep(&ts, NULL);
    }
    if (t0)
      dr->limit_wait_ms += rpl_mono_ms() - t0;
    uploader_limits_take(dr->limit_all, dr->limit_agent, (uint32_t)r->length);
  }
  pthread_mutex_lock(&dr->lock);
  while (dr->count == DIRECT_QUEUE && !dr->err)
    pthread_cond_wait(&dr->changed, &dr->lock);
  rpl_err e = dr->err;
  if (!e) {
    dr->queue[(dr->head + dr->count) % DIRECT_QUEUE] = *r;
    dr->count++;
    r->buf = NULL; /* the writer's now */
    pthread_cond_broadcast(&dr->changed);
  }
  pthread_mutex_unlock(&dr->lock);
  blob_client_wakeup(dr->client);
  r->length = 0;
  return e;
}

/* Session thread, before an extent that starts below the end of those gathered: every earlier
 * write finishes first (requests in flight land in any order, and the later extent must win), and
 * the blob's zeros may since hold data. */
static rpl_err direct_settle(struct direct *dr)
{
  rpl_err e = direct_push(dr);
  pthread_mutex_lock(&dr->lock);
  while (!e && !dr->err && (dr->count || dr->in_flight))
    pthread_cond_wait(&dr->changed, &dr->lock);
  if (!e)
    e = dr->err;
  pthread_mutex_unlock(&dr->lock);
  dr->blank = false;
  return e;
}

bool uploader_direct_begin(struct uploader *u, uint64_t n)
{
  pthread_mutex_lock(&u->lock);
  struct direct *dr = NULL;
  bool ok = n == u->committed + 1 && u->lease.held && !u->direct && (dr = calloc(1, sizeof *dr)) != NULL;
  if (ok) {
    dr->u = u;
    dr->cycle = n;
    dr->blank = u->blank;
    dr->disk_size = u->disk_size;
    dr->limit_all = u->limit_all;
    dr->limit_agent = u->limit_agent;
    snprintf(dr->lease_id, sizeof dr->lease_id, "%s", u->lease.id);
    dr->in_flight_limit = u->cfg.max_in_flight ? u->cfg.max_in_flight : BLOB_DEFAULT_IN_FLIGHT;
    pthread_mutex_init(&dr->lock, NULL);
    pthread_cond_init(&dr->changed, NULL);
    rpl_err e = blob_client_open(&u->cfg, &dr->client);
    if (e)
      log_warn("uploader %s: no second connection for the initial sync (%s): it goes through the cache", u->blob,
               rpl_detail(e)[0] ? rpl_detail(e) : rpl_strerror(e));
    ok = !e && pthread_create(&dr->writer, NULL, direct_writer, dr) == 0;
    if (!ok) {
      blob_client_close(dr->client);
      pthread_cond_destroy(&dr->changed);
      pthread_mutex_destroy(&dr->lock);
      free(dr);
      dr = NULL;
    }
  }
  u->direct = dr;
  pthread_mutex_unlock(&u->lock);
  return ok;
}

uint8_t *uploader_direct_room(struct uploader *u, uint64_t offset, uint32_t len)
{
  struct direct *dr = u->direct; /* the session thread's, as in uploader_direct_extent */
  if (!dr || offset > dr->disk_size || len > dr->disk_size - offset || offset < dr->gathered_end ||
      len > BLOB_MAX_PUT_PAGE)
    return NULL;
  struct run *r = &dr->run;
  /* Where uploader_direct_extent would copy the bytes: the end of the run, or a new run. */
  if (r->length && (r->zero || r->offset + r->length != offset || r->length + len > BLOB_MAX_PUT_PAGE) &&
      direct_push(dr))
    return NULL;
  if (!r->buf && !(r->buf = uploader_pool_get(&u->pool)))
    return NULL;
  if (!r->length) {
    r->zero = false;
    r->offset = offset;
  }
  return r->buf + r->length;
}

rpl_err uploader_direct_extent(struct uploader *u, uint64_t offset, const uint8_t *raw, uint32_t len)
{
  struct direct *dr = u->direct; /* set and cleared by this (the session) thread's calls only */
  if (!dr)
    return RPL_E_INVALID_ARGUMENT;
  if (offset > dr->disk_size || len > dr->disk_size - offset)
    return RPL_E_EXTENT_RANGE;
  struct run *r = &dr->run;
  rpl_err e = offset < dr->gathered_end ? direct_settle(dr) : RPL_OK;
  if (offset + len > dr->gathered_end)
    dr->gathered_end = offset + len;
  for (uint32_t done = 0; done < len && !e;) {
    uint32_t n = len - done < BLOB_MAX_PUT_PAGE ? len - done : BLOB_MAX_PUT_PAGE;
    bool zero = raw == NULL;
    uint64_t cap = zero ? CLEAR_RUN_MAX : BLOB_MAX_PUT_PAGE;
    if (r->length && (r->zero != zero || r->offset + r->length != offset + done || r->length + n > cap))
      e = direct_push(dr);
    if (e)
      break;
    if (!r->length) {
      r->zero = zero;
      r->offset = offset + done;
    }
    if (!zero) {
      if (!r->buf && !(r->buf = uploader_pool_get(&u->pool)))
        return RPL_E_NOMEM;
      if (raw + done != r->buf + r->length) /* else the bytes were read into their room */
        memcpy(r->buf + r->length, raw + done, n);
    }
    r->length += n;
    done += n;
  }
  if (!e) {
    pthread_mutex_lock(&dr->lock);
    e = dr->err;
    pthread_mutex_unlock(&dr->lock);
  }
  return e;
}

/* Ends the direct cycle: the writer joined (every write finished), its client closed; with commit,
 * the sequence number set. Takes the uploader's lock. */
static rpl_err direct_finish(struct uploader *u, bool commit)
{
  struct direct *dr = u->direct;
  rpl_err e = commit ? direct_push(dr) : RPL_OK;
  pthread_mutex_lock(&dr->lock);
  dr->ending = true;
  dr->abandon = !commit || e;
  pthread_cond_broadcast(&dr->changed);
  pthread_mutex_unlock(&dr->lock);
  blob_client_wakeup(dr->client);
  pthread_join(dr->writer, NULL);
  if (!e)
    e = dr->err;
  blob_client_close(dr->client);
  uploader_pool_put(&u->pool, dr->run.buf);
  uploader_pool_trim(&u->pool);
  pthread_mutex_lock(&u->lock);
  u->direct = NULL;
  u->blank = false;
  u->stats.put_pages += dr->put_pages;
  u->stats.clears += dr->clears;
  u->stats.bytes_uploaded += dr->bytes;
  u->stats.limit_wait_ms += dr->limit_wait_ms;
  struct blob_reply r;
  if (commit && !e &&
      (e = blob_set_sequence_number(u->client, u->container, u->blob, BLOB_SEQUENCE_UPDATE, (int64_t)dr->cycle,
                                    uploader_lease_id_of(u), &r)))
    log_err("uploader %s: cannot commit cycle %" PRIu64 ": %s (HTTP %ld %s)", u->blob, dr->cycle, rpl_strerror(e),
            r.status, r.error_code);
  if (commit && !e) {
    u->committed = dr->cycle;
    u->stats.cycles++;
  }
  e = uploader_lease_lost_if_refused(u, e);
  uploader_publish_stats(u);
  pthread_mutex_unlock(&u->lock);
  pthread_cond_destroy(&dr->changed);
  pthread_mutex_destroy(&dr->lock);
  free(dr);
  return e;
}

rpl_err uploader_direct_commit(struct uploader *u) { return u->direct ? direct_finish(u, true) : RPL_E_INVALID_ARGUMENT; }

void uploader_direct_abort(struct uploader *u)
{
  if (u->direct) {
    rpl_err e = direct_finish(u, false);
    (void)e;
  }
}
