/* cycle_mailbox.c - hands the frames the session thread reads to the cycle in flight they name
 * (cycle_mailbox.h): bounded mailboxes, a copy per frame, never a wait on the reader's side. */
#include "cycle_mailbox.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

void cycle_frame_free(struct cycle_frame *cf)
{
  free(cf->owned);
  memset(cf, 0, sizeof *cf);
}

void cycle_router_init(struct cycle_router *r)
{
  memset(r, 0, sizeof *r);
  pthread_mutex_init(&r->lock, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&r->arrived, &ca);
  pthread_condattr_destroy(&ca);
}

static void empty_box(struct cycle_mailbox *b)
{
  for (unsigned i = 0; i < b->count; i++)
    cycle_frame_free(&b->frames[(b->head + i) % CYCLE_MAILBOX_FRAMES]);
  memset(b, 0, sizeof *b);
}

void cycle_router_destroy(struct cycle_router *r)
{
  for (int i = 0; i < CYCLE_MAILBOXES_MAX; i++)
    empty_box(&r->boxes[i]);
  pthread_mutex_destroy(&r->lock);
  pthread_cond_destroy(&r->arrived);
}

void cycle_router_reopen(struct cycle_router *r)
{
  pthread_mutex_lock(&r->lock);
  r->closed = RPL_OK;
  pthread_mutex_unlock(&r->lock);
}

void cycle_router_close(struct cycle_router *r, rpl_err why)
{
  pthread_mutex_lock(&r->lock);
  r->closed = why ? why : RPL_E_CANCELLED;
  pthread_cond_broadcast(&r->arrived);
  pthread_mutex_unlock(&r->lock);
}

rpl_err cycle_router_open(struct cycle_router *r, const uint8_t disk_id[PROTO_ID_SIZE], uint64_t cycle, int *box)
{
  rpl_err err = RPL_E_LIMIT;
  pthread_mutex_lock(&r->lock);
  for (int i = 0; i < CYCLE_MAILBOXES_MAX; i++)
    if (r->boxes[i].used && !memcmp(r->boxes[i].disk_id, disk_id, PROTO_ID_SIZE)) {
      pthread_mutex_unlock(&r->lock);
      return RPL_E_PROTO_UNEXPECTED; /* one cycle of a disk at a time */
    }
  for (int i = 0; i < CYCLE_MAILBOXES_MAX; i++)
    if (!r->boxes[i].used) {
      struct cycle_mailbox *b = &r->boxes[i];
      memset(b, 0, sizeof *b);
      b->used = true;
      memcpy(b->disk_id, disk_id, PROTO_ID_SIZE);
      b->cycle = cycle;
      *box = i;
      err = RPL_OK;
      break;
    }
  pthread_mutex_unlock(&r->lock);
  return err;
}

void cycle_router_release(struct cycle_router *r, int box)
{
  pthread_mutex_lock(&r->lock);
  empty_box(&r->boxes[box]);
  pthread_mutex_unlock(&r->lock);
}

bool cycle_router_routes(uint8_t type)
{
  return type == PROTO_ACK || type == PROTO_NACK || type == PROTO_NEED;
}

/* The disk and cycle f names (cycle 0 for a NEED, which names only its disk). */
static rpl_err addressee(const struct proto_frame *f, uint8_t disk_id[PROTO_ID_SIZE], uint64_t *cycle)
{
  rpl_err err = RPL_E_PROTO_UNEXPECTED;
  *cycle = 0;
  if (f->type == PROTO_ACK) {
    struct proto_ack m;
    if (!(err = proto_decode_ack(f, &m))) {
      memcpy(disk_id, m.disk_id, PROTO_ID_SIZE);
      *cycle = m.cycle;
    }
  } else if (f->type == PROTO_NACK) {
    struct proto_nack m;
    if (!(err = proto_decode_nack(f, &m))) {
      memcpy(disk_id, m.disk_id, PROTO_ID_SIZE);
      *cycle = m.cycle;
    }
  } else if (f->type == PROTO_NEED) {
    struct proto_need m;
    if (!(err = proto_decode_need(f, &m)))
      memcpy(disk_id, m.disk_id, PROTO_ID_SIZE);
  }
  return err;
}

rpl_err cycle_router_deliver(struct cycle_router *r, const struct proto_frame *f)
{
  uint8_t disk_id[PROTO_ID_SIZE];
  uint64_t cycle;
  rpl_err err = addressee(f, disk_id, &cycle);
  if (err)
    return err;
  struct cycle_frame cf = {.f = *f, .owned = malloc(f->length ? f->length : 1)};
  if (!cf.owned)
    return RPL_E_NOMEM;
  memcpy(cf.owned, f->payload, f->length);
  cf.f.payload = cf.owned;
  err = RPL_E_PROTO_UNEXPECTED;
  pthread_mutex_lock(&r->lock);
  for (int i = 0; i < CYCLE_MAILBOXES_MAX; i++) {
    struct cycle_mailbox *b = &r->boxes[i];
    if (!b->used || memcmp(b->disk_id, disk_id, PROTO_ID_SIZE) || (cycle && b->cycle != cycle))
      continue;
    if (b->count < CYCLE_MAILBOX_FRAMES) {
      b->frames[(b->head + b->count) % CYCLE_MAILBOX_FRAMES] = cf;
      b->count++;
      cf.owned = NULL;
      err = RPL_OK;
      pthread_cond_broadcast(&r->arrived);
    }
    break;
  }
  pthread_mutex_unlock(&r->lock);
  free(cf.owned);
  return err;
}

rpl_err cycle_router_take(struct cycle_router *r, int box, int wait_ms, struct cycle_frame *out)
{
  struct timespec until;
  clock_gettime(CLOCK_MONOTONIC, &until);
  if (wait_ms > 0) {
    until.tv_sec += wait_ms / 1000;
    until.tv_nsec += (long)(wait_ms % 1000) * 1000000;
    if (until.tv_nsec >= 1000000000) {
      until.tv_sec++;
      until.tv_nsec -= 1000000000;
    }
  }
  rpl_err err = RPL_OK;
  pthread_mutex_lock(&r->lock);
  struct cycle_mailbox *b = &r->boxes[box];
  while (!b->count && !r->closed && wait_ms != 0)
    if ((wait_ms > 0 ? pthread_cond_timedwait(&r->arrived, &r->lock, &until)
                     : pthread_cond_wait(&r->arrived, &r->lock)) != 0)
      break;
  if (b->count) {
    *out = b->frames[b->head];
    memset(&b->frames[b->head], 0, sizeof b->frames[b->head]);
    b->head = (b->head + 1) % CYCLE_MAILBOX_FRAMES;
    b->count--;
  } else {
    err = r->closed ? r->closed : RPL_E_TIMEOUT;
  }
  pthread_mutex_unlock(&r->lock);
  return err;
}
