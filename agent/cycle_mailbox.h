/* cycle_mailbox.h - the frames the session thread reads for the agent's cycles in flight (ACK, NACK,
 * NEED), each handed to the cycle it names without ever waiting. Internal header: agent/ and its test. */
#ifndef AGENT_CYCLE_MAILBOX_H
#define AGENT_CYCLE_MAILBOX_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "proto.h"
#include "rpl_error.h"

/* Cycles in flight at once: the most the appliance's `run --agent-cycles` asks of one agent. */
#define CYCLE_MAILBOXES_MAX 16
/* Frames one cycle is sent before it ends: its NEED (a resync by comparison) and its ACK or NACK;
 * more is a broken peer (the session ends), so the reader never waits for a slow cycle thread. */
#define CYCLE_MAILBOX_FRAMES 4

/* A frame for a cycle, with its own copy of the payload (the reader's buffer moves on). */
struct cycle_frame {
  struct proto_frame f;           /* f.payload points into owned */
  uint8_t *owned;
};
void cycle_frame_free(struct cycle_frame *cf);

struct cycle_mailbox {
  bool used;
  uint8_t disk_id[PROTO_ID_SIZE];
  uint64_t cycle;
  unsigned head, count;
  struct cycle_frame frames[CYCLE_MAILBOX_FRAMES];
};

/* Every field under lock. */
struct cycle_router {
  pthread_mutex_t lock;
  pthread_cond_t arrived;         /* a frame came, or the router closed */
  struct cycle_mailbox boxes[CYCLE_MAILBOXES_MAX];
  rpl_err closed;                 /* not RPL_OK: the session ended (why); waits end with it */
};

void cycle_router_init(struct cycle_router *r);
/* Frees what is left (no thread may use r any more). */
void cycle_router_destroy(struct cycle_router *r);
/* A new session: waits no longer end at once. Only with no mailbox open. */
void cycle_router_reopen(struct cycle_router *r);
/* The session ends: every wait, now or later, returns why once its mailbox is empty (an ACK already
 * read is still taken: the cycle it acknowledges is durable). */
void cycle_router_close(struct cycle_router *r, rpl_err why);

/* A mailbox for cycle `cycle` of the disk; *box is its index. RPL_E_LIMIT when CYCLE_MAILBOXES_MAX
 * are open, RPL_E_PROTO_UNEXPECTED when the disk has a cycle in flight already. */
RPL_MUST_CHECK rpl_err cycle_router_open(struct cycle_router *r, const uint8_t disk_id[PROTO_ID_SIZE], uint64_t cycle,
                                         int *box);
/* Closes the mailbox and frees the frames nobody took. */
void cycle_router_release(struct cycle_router *r, int box);
/* Whether frames of this type belong to a cycle in flight (ACK, NACK, NEED). */
bool cycle_router_routes(uint8_t type);
/* Hands a copy of f to the cycle it names (ACK and NACK: disk and cycle; NEED: the disk's cycle). Never
 * waits. RPL_E_PROTO_UNEXPECTED when no such cycle is in flight or its mailbox is full (a broken peer),
 * a decoding error as such, RPL_E_NOMEM. */
RPL_MUST_CHECK rpl_err cycle_router_deliver(struct cycle_router *r, const struct proto_frame *f);
/* The mailbox's next frame (the caller frees it with cycle_frame_free), waiting up to wait_ms (< 0:
 * until one comes or the router closes). RPL_E_TIMEOUT when none came, the close's reason when the
 * router closed and the mailbox is empty. */
RPL_MUST_CHECK rpl_err cycle_router_take(struct cycle_router *r, int box, int wait_ms, struct cycle_frame *out);

#endif
