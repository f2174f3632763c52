/* session.h - one agent's session on the appliance: the disks it serves (slots), their open cycles
 * and its recovery-point groups; what session.c, registration.c and orchestrator.c share.
 * Internal header: those three files and group_point.c only. A session is driven by its own thread alone. */
#ifndef APPLIANCE_SESSION_H
#define APPLIANCE_SESSION_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "appliance.h"
#include "channel.h"
#include "conn.h"
#include "proto.h"
#include "receiver.h"

#define MAX_SLOTS 64 /* disks one agent's session serves */

struct need_list {                /* chunks whose replica differs, during a resync by comparison */
  struct proto_need_range *ranges;
  uint32_t count, cap;
  uint32_t chunk_size;
  uint64_t chunks_seen;
  uint8_t *buf;                   /* one chunk of the replica */
  uint64_t alive_ms;              /* monotonic: the agent was last told the comparison goes on */
};

struct rx_slot {                  /* a disk this session serves */
  struct disk *disk;
  struct receiver *rx;
  struct need_list need;
  uint64_t cycle;                 /* started and not finished, or 0 */
  uint8_t kind;
  bool failed;                    /* NACKed: frames of the cycle are dropped until its CYCLE_END */
  rpl_err failed_why;             /* the NACK's reason (a point of the cycle is not made, for it) */
  bool direct;                    /* the cycle is written straight into the disk's store, not the cache */
  struct store *direct_store;     /* ... this one */
  struct store_stats direct_stats; /* the store's figures when the direct cycle started */
  uint64_t direct_start_ms;
  uint8_t consistency;            /* from its CYCLE_END */
  unsigned epoch;                 /* the disk's epoch when attached */
  bool unprotect_sent;            /* this session sent the disk's UNPROTECT_REQUEST */
  bool replay;                    /* the cycle is a takeover's REPLAY (journaled as a plain one) */
  uint64_t stored_sent;           /* the last cycle STORED told the agent the storage holds */
};

/* A recovery point of one or more disks of the agent, made together. It runs as a catch-up round
 * (a plain cycle of each disk, so that little is dirty when the filesystems freeze), then point
 * rounds: a round the agent answers with PRECOPY (still too much dirty to freeze) is run again, up
 * to MAX_PRECOPY_ROUNDS. */
#define MAX_PRECOPY_ROUNDS 4
struct group {
  bool used, started;
  bool local;                     /* asked for by the appliance (page, schedule): no POINT to the agent */
  enum catalog_point_made_by made_by;
  bool hooks;                     /* the agent's application hooks run around the freeze */
  int sched_kind;                 /* the schedule kind (enum schedule_kind) it is made for, or -1 */
  bool catching_up;               /* the started cycles are the catch-up round's (plain) */
  bool caught_up;                 /* the catch-up round ran: the next start is a point round */
  size_t next_catch_up;           /* the member whose catch-up cycle starts next (one at a time: the
                                     agent runs plain cycles one after another) */
  unsigned rounds;                /* point rounds run */
  bool precopy;                   /* a member answered PRECOPY in this round */
  uint32_t freeze_ms;             /* the longest freeze of this round's members */
  uint64_t request;
  size_t n;
  size_t slots[PROTO_MAX_GROUP];
  uint64_t cycles[PROTO_MAX_GROUP];
  uint8_t consistencies[PROTO_MAX_GROUP]; /* each member's, from its CYCLE_END */
  size_t ended;
  bool failed;
  rpl_err why;
  uint8_t consistency;
  uint64_t gp;                    /* a part of this consistency-group point attempt (group_point.h), or 0 */
  bool gp_freeze_sent;            /* its GROUP_FREEZE was sent: a GROUP_THAW ends it when it fails */
};

struct session {
  struct appliance *a;
  struct conn *c;
  uint8_t agent[PROTO_ID_SIZE];
  char agent_text[37];
  struct rx_slot slots[MAX_SLOTS];
  unsigned members_sent_gen;      /* the appliance's members_gen whose MEMBERS this session sent (0: none yet) */
  size_t nslots;
  unsigned cycles_open;
  struct group groups[MAX_GROUPS];
  struct proto_buf out;
  time_t last_heartbeat_saved;
  bool dirty_pressure;            /* the agent's backlog is large: the next cycle starts now */
  uint64_t agent_caps;            /* PROTO_CAP_* the agent stated in its HELLO */
  bool gp_waiting;                /* a group point's part waits for the other members: poll often */
  int wake;                       /* eventfd: disk_wake_session ends the loop's wait for a frame (-1: none) */
};

/* session.c */
RPL_MUST_CHECK rpl_err flush_out(struct session *s);
RPL_MUST_CHECK rpl_err send_error(struct conn *c, rpl_err code, const char *msg);
struct rx_slot *slot_of(struct session *s, const uint8_t id[PROTO_ID_SIZE]);
/* Starts cycle n+1 of the slot's disk (CYCLE_START queued in s->out, not flushed); group: the
 * point cycles of one instant this one starts (1: a single disk, and any other kind). */
RPL_MUST_CHECK rpl_err start_cycle(struct session *s, struct rx_slot *sl, uint8_t kind, uint16_t group);
/* Gives up the slot's cycle, started or under way (its records dropped, nothing committed). */
void drop_cycle(struct session *s, struct rx_slot *sl);
/* The disk's cycle cannot go into its cache for now: none of it starts for a pause that doubles with
 * each refusal in a row (CACHE_WAIT_MIN_MS to CACHE_WAIT_MAX_MS), which is returned. L held. */
uint64_t cache_wait_more(struct disk *d);

/* registration.c: a connection without a client certificate registers with a key, or is refused. */
void registration(struct appliance *a, struct conn *c);
/* A RENEW from the authenticated agent: its new certificate signed and recorded as pending, the
 * answer (RENEWED, or ERROR saying why not: the session goes on) encoded into out. */
RPL_MUST_CHECK rpl_err registration_renew(struct appliance *a, const uint8_t agent[PROTO_ID_SIZE],
                                          const struct proto_frame *f, struct proto_buf *out);
/* "sha256:" and the lowercase hex digits, as the catalog keeps agents' certificates. */
void registration_fingerprint_text(const uint8_t fp[CHAN_FINGERPRINT_SIZE], char out[CATALOG_MAX_FINGERPRINT + 1]);
/* The lifetime of agent certificates the appliance signs (at registration and renewal). */
long agent_cert_seconds(void);

/* orchestrator.c: when cycles and points start, and points recorded */
/* Whether d can take a point now (synced, its lease held, no takeover or resync pending). L held. */
bool point_ready(const struct disk *d);
/* The started group whose cycle of this slot is open, or NULL. */
struct group *group_of(struct session *s, struct rx_slot *sl);
RPL_MUST_CHECK rpl_err on_point_request(struct session *s, const struct proto_frame *f);
/* Records the points of groups whose cycles are all applied, and tells the agent. */
RPL_MUST_CHECK rpl_err finish_groups(struct session *s);
/* The session ends: its unfinished scheduled points count as missed (why says why). */
void abandon_groups(struct session *s, rpl_err why);
/* Starts what is due: a point group, else the disk that waited longest past the RPO target. */
RPL_MUST_CHECK rpl_err orchestrate(struct session *s);

#endif
