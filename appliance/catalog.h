/* catalog.h - the appliance's catalog (SQLite): agents, registration keys, disks, cycles, recovery
 * points. Internal header: appliance/ and tests/ only. */
#ifndef APPLIANCE_CATALOG_H
#define APPLIANCE_CATALOG_H

#include <stdbool.h>
#include <stdint.h>

#include "proto.h"
#include "rpl_error.h"

/*
 * What it promises
 *  - One SQLite file (STATE_DIR/catalog.db by convention), WAL mode, synchronous=FULL, foreign keys
 *    on, a busy timeout; the schema is versioned with PRAGMA user_version and migrated forward in
 *    one transaction on open. A catalog from a newer program is refused (RPL_E_CATALOG_VERSION),
 *    a damaged or foreign file too (RPL_E_CATALOG_CORRUPT), a lock held past the busy timeout gives
 *    RPL_E_CATALOG_BUSY.
 *  - Registration keys are stored as SHA-256 of the one-time secret, never the secret.
 *  - Times are seconds since the Unix epoch (UTC). Ids are 16-byte UUIDs, stored as 16-byte blobs.
 *  - Unsigned counters (sizes, cycles) must be below 2^63 (SQLite integers are signed).
 *  - Thread-safe: a mutex inside serialises calls. Callbacks of the foreach functions run with that
 *    mutex held and must not call back into the catalog.
 */

#define CATALOG_SCHEMA_VERSION   6
#define CATALOG_MAX_HOSTNAME     PROTO_MAX_STRING
#define CATALOG_MAX_NAME         PROTO_MAX_STRING
#define CATALOG_MAX_FINGERPRINT  160  /* e.g. "sha256:" + 64 hex digits, with room for colons */
#define CATALOG_MAX_REASON       1024
#define CATALOG_MAX_SNAPSHOT_ID  128  /* Azure snapshot ids are RFC 3339 timestamps */
#define CATALOG_MAX_GROUP_NAME   PROTO_MAX_GROUP_NAME
#define CATALOG_GROUP_MAX_DISKS  64   /* disks of one consistency group */

struct catalog;

struct catalog_options {
  int busy_timeout_ms; /* how long a call waits for another process's lock; 0 = 5000 */
};

RPL_MUST_CHECK rpl_err catalog_open(const char *path, const struct catalog_options *opts, struct catalog **out);
void catalog_close(struct catalog *c);

/* ---- agents ------------------------------------------------------------------------------- */

struct catalog_agent {
  uint8_t id[PROTO_ID_SIZE];
  char hostname[CATALOG_MAX_HOSTNAME + 1];
  char cert_fingerprint[CATALOG_MAX_FINGERPRINT + 1];
  int64_t registered_time;
  int64_t last_heartbeat; /* 0: never */
  bool revoked;
};

/* Adds a registration key, valid from created_time until expires_time (0: no end), and revokes
 * every unused key before it, in one transaction; RPL_E_EXISTS if the same secret was added before. */
RPL_MUST_CHECK rpl_err catalog_regkey_add(struct catalog *c, const uint8_t secret[PROTO_SECRET_SIZE],
                                          int64_t created_time, int64_t expires_time);
struct catalog_regkey_info {
  int64_t created_time, expires_time; /* expires_time 0: no end */
  bool used, revoked;
};
/* In one transaction: uses the key (RPL_E_CATALOG_KEY_UNKNOWN, _USED, _REVOKED, or _EXPIRED at
 * `now`) and adds the agent (RPL_E_EXISTS if its id or fingerprint is taken). Nothing changes on error. */
RPL_MUST_CHECK rpl_err catalog_register_agent(struct catalog *c, const uint8_t secret[PROTO_SECRET_SIZE],
                                              const struct catalog_agent *agent, int64_t now);
/* The newest key's state (never the key: only its hash is kept); RPL_E_NOT_FOUND when none. */
RPL_MUST_CHECK rpl_err catalog_regkey_newest(struct catalog *c, struct catalog_regkey_info *out);
/* Keys that would register an agent at `now`: unused, not revoked, not expired. */
RPL_MUST_CHECK rpl_err catalog_regkey_count_usable(struct catalog *c, int64_t now, uint64_t *count);
/* A renewed certificate of agent id (its fingerprint, as cert_fingerprint is written): valid besides
 * the current one until the agent connects with it. RPL_E_NOT_FOUND for an unknown agent. */
RPL_MUST_CHECK rpl_err catalog_agent_set_pending_cert(struct catalog *c, const uint8_t id[PROTO_ID_SIZE],
                                                      const char *fingerprint);
/* The agent connected with the certificate whose fingerprint is given: OK when it is the current
 * one, or the pending renewed one, which then becomes current (*renewed) and retires the one before;
 * RPL_E_AGENT_CERT_REPLACED for any other (an older one the agent no longer uses). */
RPL_MUST_CHECK rpl_err catalog_agent_use_cert(struct catalog *c, const uint8_t id[PROTO_ID_SIZE],
                                              const char *fingerprint, bool *renewed);

RPL_MUST_CHECK rpl_err catalog_agent_get(struct catalog *c, const uint8_t id[PROTO_ID_SIZE], struct catalog_agent *out);
RPL_MUST_CHECK rpl_err catalog_agent_find_by_fingerprint(struct catalog *c, const char *fingerprint,
                                                         struct catalog_agent *out);
RPL_MUST_CHECK rpl_err catalog_agent_heartbeat(struct catalog *c, const uint8_t id[PROTO_ID_SIZE], int64_t time);
/* The agent's current certificate fingerprint and the renewed one waiting ("" when none);
 * RPL_E_NOT_FOUND for an unknown agent. */
RPL_MUST_CHECK rpl_err catalog_agent_certs(struct catalog *c, const uint8_t id[PROTO_ID_SIZE],
                                           char current[CATALOG_MAX_FINGERPRINT + 1],
                                           char pending[CATALOG_MAX_FINGERPRINT + 1]);
/* An agent another member of the appliance group registered (members.c): added, or its hostname,
 * certificates (pending "" = none) brought up to date; a revocation here is never undone. */
RPL_MUST_CHECK rpl_err catalog_agent_import(struct catalog *c, const struct catalog_agent *a, const char *pending);
RPL_MUST_CHECK rpl_err catalog_agent_revoke(struct catalog *c, const uint8_t id[PROTO_ID_SIZE]);
/* Whether the agent's record in the appliance group is still to be written (members.c): set before
 * each write and cleared after it, so that a write that failed is made again by the next sweep. */
RPL_MUST_CHECK rpl_err catalog_agent_set_record_due(struct catalog *c, const uint8_t id[PROTO_ID_SIZE], bool due);
/* Up to cap agents whose group record is due, in ids[0..*n). */
RPL_MUST_CHECK rpl_err catalog_agent_records_due(struct catalog *c, uint8_t (*ids)[PROTO_ID_SIZE], size_t cap,
                                                 size_t *n);
/* Calls fn for every agent, oldest registration first; fn returning non-zero stops the walk. */
RPL_MUST_CHECK rpl_err catalog_agent_foreach(struct catalog *c, int (*fn)(const struct catalog_agent *, void *),
                                             void *ctx);

/* ---- disks -------------------------------------------------------------------------------- */

enum catalog_disk_state {
  CATALOG_DISK_INITIAL_SYNC = 0,
  CATALOG_DISK_PROTECTED = 1,
  CATALOG_DISK_RESYNC_REQUIRED = 2,
  CATALOG_DISK_ERROR = 3,
};
/* "initial-sync", "protected", "resync-required", "error" (the words status prints). */
const char *catalog_disk_state_name(enum catalog_disk_state s);

struct catalog_disk {
  uint8_t id[PROTO_ID_SIZE];
  uint8_t agent_id[PROTO_ID_SIZE];
  char name[CATALOG_MAX_NAME + 1];
  uint64_t size_bytes;
  uint32_t sector_size; /* 512 or 4096 */
  enum catalog_disk_state state;
  char state_reason[CATALOG_MAX_REASON + 1];
  uint64_t last_committed_cycle, last_applied_cycle;
  int64_t unprotected_time; /* unix time its agent unprotected it (replica and points kept); 0: protected */
};

/* Adds the disk (state initial-sync, cycles 0) or, if it exists and is the same agent's, updates
 * name, size and sector size only. The agent must exist (RPL_E_NOT_FOUND); a disk of another agent
 * is refused (RPL_E_PERMISSION): a row never changes owner here. */
RPL_MUST_CHECK rpl_err catalog_disk_upsert(struct catalog *c, const struct catalog_disk *d);
RPL_MUST_CHECK rpl_err catalog_disk_get(struct catalog *c, const uint8_t id[PROTO_ID_SIZE], struct catalog_disk *out);
RPL_MUST_CHECK rpl_err catalog_disk_set_state(struct catalog *c, const uint8_t id[PROTO_ID_SIZE],
                                              enum catalog_disk_state state, const char *reason);
/* Records that the disk's agent unprotected it at when (unix time): no cycle is asked of it again. */
RPL_MUST_CHECK rpl_err catalog_disk_set_unprotected(struct catalog *c, const uint8_t id[PROTO_ID_SIZE], int64_t when);
/* Deletes the disk's row with its cycles and recovery points (unprotect --delete-replica, once its
 * replica is gone). RPL_E_NOT_FOUND when there is none. */
RPL_MUST_CHECK rpl_err catalog_disk_delete(struct catalog *c, const uint8_t id[PROTO_ID_SIZE]);
/* Every disk (of agent_id, or all when NULL), by name. */
RPL_MUST_CHECK rpl_err catalog_disk_foreach(struct catalog *c, const uint8_t *agent_id,
                                            int (*fn)(const struct catalog_disk *, void *), void *ctx);

/* ---- cycles ------------------------------------------------------------------------------- */

struct catalog_cycle {
  uint8_t disk_id[PROTO_ID_SIZE];
  uint64_t n;
  uint8_t kind; /* enum proto_cycle_kind */
  int64_t committed_time;
  uint64_t extents, raw_bytes, payload_bytes;
  int64_t applied_time; /* 0: not applied */
};

/* Records committed cycle n and raises the disk's last committed cycle, in one transaction.
 * RPL_E_EXISTS if n is recorded already. */
RPL_MUST_CHECK rpl_err catalog_cycle_committed(struct catalog *c, const struct catalog_cycle *cy);
/* Marks cycle n applied at time and raises the disk's last applied cycle (RPL_E_NOT_FOUND if n is
 * not recorded). */
RPL_MUST_CHECK rpl_err catalog_cycle_applied(struct catalog *c, const uint8_t disk_id[PROTO_ID_SIZE], uint64_t n,
                                             int64_t time);
RPL_MUST_CHECK rpl_err catalog_cycle_get(struct catalog *c, const uint8_t disk_id[PROTO_ID_SIZE], uint64_t n,
                                         struct catalog_cycle *out);
/* Forgets the history of cycles below n (the disk's counters stay). */
RPL_MUST_CHECK rpl_err catalog_cycle_prune(struct catalog *c, const uint8_t disk_id[PROTO_ID_SIZE], uint64_t below_n);

/* ---- recovery points ---------------------------------------------------------------------- */

enum catalog_point_kind {
  CATALOG_POINT_FILESYSTEM_CONSISTENT = 0,
  CATALOG_POINT_CRASH_CONSISTENT = 1,
  CATALOG_POINT_APPLICATION_CONSISTENT = 2, /* filesystems frozen and the agent's hooks ran around it */
};
/* "filesystem-consistent", "crash-consistent", "application-consistent". */
const char *catalog_point_kind_name(enum catalog_point_kind k);

/* What asked for a point: the agent's checkpoint command, the appliance's schedule, the page. */
enum catalog_point_made_by {
  CATALOG_MADE_BY_CHECKPOINT = 0,
  CATALOG_MADE_BY_SCHEDULE = 1,
  CATALOG_MADE_BY_PAGE = 2,
};
/* "checkpoint", "schedule", "page" (the points document's "trigger"). */
const char *catalog_point_made_by_name(enum catalog_point_made_by m);

struct catalog_point {
  int64_t id;           /* assigned by catalog_point_add, never reused */
  uint8_t disk_id[PROTO_ID_SIZE];
  uint64_t cycle;
  int64_t time;
  enum catalog_point_kind kind;
  enum catalog_point_made_by made_by;
  uint32_t freeze_ms;   /* how long the point's filesystems stayed frozen (0: none was) */
  int64_t group_id;     /* the id of the first point of the group it was made with (one instant of
                           several disks), 0 for a point of one disk */
  bool has_snapshot;    /* false for file storage */
  char snapshot_id[CATALOG_MAX_SNAPSHOT_ID + 1];
  char consistency_group[CATALOG_MAX_GROUP_NAME + 1]; /* a group point: its consistency group ("" none) */
  uint32_t group_window_ms; /* a group point: first freeze to last thaw across its members (0: none) */
};

/* Records a point (p->id ignored); *id gets its id. The disk must exist (RPL_E_NOT_FOUND). */
RPL_MUST_CHECK rpl_err catalog_point_add(struct catalog *c, const struct catalog_point *p, int64_t *id);
RPL_MUST_CHECK rpl_err catalog_point_get(struct catalog *c, int64_t id, struct catalog_point *out);
/* The disk's newest point (highest cycle), or RPL_E_NOT_FOUND. */
RPL_MUST_CHECK rpl_err catalog_point_latest(struct catalog *c, const uint8_t disk_id[PROTO_ID_SIZE],
                                            struct catalog_point *out);
/* The disk's points, oldest first. */
RPL_MUST_CHECK rpl_err catalog_point_foreach(struct catalog *c, const uint8_t disk_id[PROTO_ID_SIZE],
                                             int (*fn)(const struct catalog_point *, void *), void *ctx);
RPL_MUST_CHECK rpl_err catalog_point_delete(struct catalog *c, int64_t id);
/* Makes point id a member of group_id (the group's first point's id, itself included). */
RPL_MUST_CHECK rpl_err catalog_point_set_group(struct catalog *c, int64_t id, int64_t group_id);
/* The points of group group_id (its first point's id), oldest first; none for 0. */
RPL_MUST_CHECK rpl_err catalog_point_group_foreach(struct catalog *c, int64_t group_id,
                                                   int (*fn)(const struct catalog_point *, void *), void *ctx);
/* The point's image was pruned (retention.h): the row stays, without a snapshot (has_snapshot false). */
RPL_MUST_CHECK rpl_err catalog_point_pruned(struct catalog *c, int64_t id);

/* ---- consistency groups (disks of several agents whose points are made at one instant) --------- */

struct catalog_group {
  char name[CATALOG_MAX_GROUP_NAME + 1];
  int64_t created_time;
  size_t n;
  uint8_t disks[CATALOG_GROUP_MAX_DISKS][PROTO_ID_SIZE];
};

/* Adds group g with its disks in one transaction: RPL_E_GROUP_NAME, RPL_E_GROUP_EMPTY,
 * RPL_E_GROUP_EXISTS, RPL_E_GROUP_MEMBER (a disk unknown, unprotected, named twice or in another
 * group; the detail says which). Nothing changes on error. */
RPL_MUST_CHECK rpl_err catalog_group_create(struct catalog *c, const struct catalog_group *g);
/* Deletes the group (its points stay); RPL_E_GROUP_UNKNOWN when there is none. */
RPL_MUST_CHECK rpl_err catalog_group_delete(struct catalog *c, const char *name);
/* Every group, by name, with its members (a deleted disk leaves its group). */
RPL_MUST_CHECK rpl_err catalog_group_foreach(struct catalog *c, int (*fn)(const struct catalog_group *, void *),
                                             void *ctx);
RPL_MUST_CHECK rpl_err catalog_group_get(struct catalog *c, const char *name, struct catalog_group *out);

#endif
