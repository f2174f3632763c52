/* appliance.h - the replication appliance daemon's shared state: the disk registry (struct disk,
 * with the lock that guards each field), the appliance (struct appliance) and what its roles call
 * of each other. Internal header: the daemon's role files only (disks.c, applier.c, apply_pool.c, session.c,
 * registration.c, orchestrator.c, status.c, cmd_run.c, health.c, metrics.c, group_point.c). */
#ifndef APPLIANCE_APPLIANCE_H
#define APPLIANCE_APPLIANCE_H

#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "catalog.h"
#include "control.h"
#include "hashindex.h"
#include "journal.h"
#include "members.h"
#include "metrics.h"
#include "json_out.h"
#include "apply_pool.h"
#include "proto.h"
#include "ratelimit.h"
#include "retention.h"
#include "schedule.h"
#include "rpl_clock.h"
#include "settings.h"
#include "store.h"
#include "thresholds.h"
#include "upload_gate.h"
#include "web.h"

#define HELLO_TIMEOUT_MS    30000 /* a new connection's first frame (registration, HELLO) comes within this */
#define HANDSHAKE_TIMEOUT_MS 10000 /* the whole TLS handshake of a new connection (a trickle is cut off) */
#define MAX_CONNECTIONS     1024  /* connections at once, each a thread: past it new ones are closed at once */
#define MAX_PREAUTH_PER_ADDRESS 64 /* connections of one source address not yet authenticated (handshake,
                                      registration): one address cannot fill the appliance with them */
#define MAX_PREAUTH_ADDRESSES 512 /* source addresses with such connections at once */
#define MAX_AGENT_SESSIONS  4     /* authenticated sessions of one agent at once: a reconnection while the
                                     one before still ends needs two; a stolen or looping agent gets no more */
#define SERVER_CERT_CHECK_MS 3600000 /* how often a running appliance looks whether its listener's
                                        certificate is due for renewal */
#define PREAUTH_MAX_PAYLOAD (24u << 10) /* the frames of an unauthenticated peer (REGISTER: a CSR of at most
                                           16 KiB and a hostname) never size a larger buffer */
#define POLL_MS             50    /* sessions' and the listener's poll; also how soon a session notices an applied point */
#define ELSEWHERE_GRACE_MS  10000 /* beyond a lease duration: a member that keeps a blob leased that long is alive */
#define DIRECT_CLAIM_WAIT_MS 1000 /* a cycle that could go straight into the store waits at most this for a worker's
                                     short turn on its disk (lease, rehash) to end, else goes through the cache */
#define MAX_GROUPS          16    /* recovery-point groups a session runs at once (each a frame's worth of disks) */
#define MAX_SNAPS           8     /* recovery-point images made by the applier, not yet recorded */
#define MAX_AGENT_LIMITS    1024  /* agents with their own upload bucket; past it only the appliance-wide limit holds */
#define MAX_DISKS           1024  /* disks one appliance serves: the applier's pass takes them all */
#define MAX_AGENT_DISKS     64    /* disks of one agent in the catalog (an agent protects at most 64): an
                                     agent naming new disk ids without end is refused past it */
#define HASH_CHUNK_MIN      (1u << 20) /* a resync's chunks: smaller ones would cost a storage read each */
#define CACHE_WAIT_MIN_MS   2000  /* a cycle the cache could not take for now is asked for again after this, */
#define CACHE_WAIT_MAX_MS   60000 /* doubled at each refusal in a row, up to this */
#define STATE_FREE_MIN      (256ull << 20) /* below this free on the state directory's file system no cycle
                                              starts (the agents keep their changes): the journal, the
                                              catalog and the settings need room to stay consistent */
#define STATE_FREE_CHECK_MS 2000  /* how often sessions look at it */

/*
 * Lock rules. `a->lock` (L) guards the registry: the list and every field of struct disk marked L.
 * `a->snap_lock` (S) guards a disk's snaps. Fields marked "fixed" are set when the disk is opened
 * and never change; "applier" fields are written by the applier thread only (read by it without
 * L; the apply worker that holds the disk's claim is "the applier" of it, see apply_pool.h);
 * "session" fields by the session that has the disk attached. The pool's coordinator waits on
 * `work`; sessions signal `work` after a commit and wait on `applied`, which the
 * applier and sessions broadcast after every change a waiting session may need.
 */
struct disk {
  uint8_t id[PROTO_ID_SIZE];      /* fixed */
  uint8_t agent[PROTO_ID_SIZE];   /* fixed */
  char name[256];                 /* fixed */
  uint64_t size;                  /* L: grows when the agent says the disk grew */
  uint32_t sector;                /* fixed */
  struct journal *journal;        /* fixed; the journal is thread-safe */
  struct store *store;            /* L to set or read (applier sets it); NULL until opened: with the disk,
                                     or by the applier once the storage checks pass. Driven by the
                                     applier, or by the session for a direct cycle while the applier
                                     has nothing of this disk to do */
  struct {                        /* S: images of recovery-point cycles */
    uint64_t cycle;
    char id[CATALOG_MAX_SNAPSHOT_ID + 1];
  } snaps[MAX_SNAPS];
  unsigned nsnaps;                /* S */
  uint64_t last_committed, last_applied; /* L */
  uint64_t snap_pending;          /* L: recovery-point cycle applied, its image being made */
  uint64_t copy_due;              /* L: a direct recovery-point cycle, its image not made yet */
  int64_t last_commit_time;       /* L: unix seconds */
  uint64_t last_start_ms;         /* L: monotonic, of the last CYCLE_START */
  enum catalog_disk_state state;  /* L */
  char reason[256];               /* L */
  bool attached;                  /* L: a session serves it now */
  struct session *served_by;      /* L: that session (NULL: none), which disk_wake_session prompts */
  int64_t unprotected_time;       /* L: unix time its agent unprotected it (no cycle is asked of it again;
                                     replica and points kept); 0: protected */
  uint64_t attached_ms;           /* L: monotonic, when a session last attached it */
  uint64_t open_retry_ms;         /* L: monotonic: its store is not opened again before */
  bool upload_waiting;            /* L: the last upload failed for a reason that passes (storage away) */
  bool prune_due;                 /* L: a point was recorded: the applier applies the retention policy */
  bool adopt_resync;              /* L: taken over from another appliance: the next cycle is a replay, or a resync */
  bool replay_refused;            /* L: its agent cannot replay (it does not know the blocks): a resync */
  bool lease_waiting;             /* L: another appliance holds the store's lease: no cycle starts */
  uint64_t lease_waiting_ms;      /* L: monotonic, since when lease_waiting */
  rpl_err lease_why;              /* L: why the lease is not held (RPL_E_LEASE_HELD: another appliance has it) */
  int64_t adopt_seq;              /* L: > 0: the lease was acquired at this sequence number, takeover to finish */
  unsigned epoch;                 /* L: raised by a takeover or a newer session of its agent: sessions serving it end */
  bool want_point, want_resync;   /* L: asked for from the configuration manager, for its session to start */
  uint64_t raw_committed;         /* L: bytes of cycles committed since start (the page's churn) */
  uint64_t image_unwanted;        /* L: a point cycle whose data is not a point (fuzzy, a catch-up): no image */
  struct {                        /* L: the point schedule, per kind (schedule.h) */
    int64_t due_ms;               /* unix ms the next point of this kind is due; 0: off */
    int64_t last_ms;              /* unix ms of the last point that satisfies it (any point for crash,
                                     an application-consistent one for app); 0: none */
    int64_t last_id;              /* that point's id (0: none) */
    int64_t retry_ms;             /* after a failed attempt: not tried again before (unix ms) */
    int64_t miss_mark_ms;         /* with the agent away, a missed point is counted each period from here */
    uint64_t missed;              /* scheduled points not made when due: failed attempts, periods away */
  } sched[SCHEDULE_KINDS];
  struct hashindex *hidx;         /* fixed (thread-safe): the replica's chunk hashes, or NULL (resync_index.c) */
  uint64_t hidx_cursor;           /* applier: where the background rehash goes on */
  uint64_t hidx_saved_ms;         /* applier: monotonic, when the index was last saved */
  uint64_t hidx_cooled_ms;        /* applier: monotonic, when its written chunks last cooled a period */
  char sched_failure[256];        /* L: why the last scheduled attempt made no point ("" after a point) */
  bool sched_busy;                /* L: a scheduled point of this disk is being made */
  struct disk_metrics m;          /* L: counters for /metrics (metrics.h) */
  uint64_t cache_wait_until_ms;   /* L: monotonic: the cache refused its cycle for now; none starts before */
  unsigned cache_waits;           /* L: such refusals in a row (the pause doubles each time, up to a bound) */
  bool cache_bypass;              /* L: a cycle did not fit in the whole cache: the next is a resync written
                                     straight into the store, once the store takes it */
  bool delete_due;                /* L: unprotected with --delete-replica: the applier deletes its replica,
                                     point images, cache and catalog rows, then drops it from the list */
  uint64_t delete_retry_ms;       /* applier: monotonic: a failed deletion is not tried again before */
  bool agent_unprotect_request;   /* L: the agent of its session stated PROTO_CAP_UNPROTECT_REQUEST */
  bool want_unprotect;            /* L: the configuration manager asked to unprotect it: each session of its
                                     agent sends UNPROTECT_REQUEST (once) until the agent's UNPROTECT comes;
                                     no cycle or point starts meanwhile. Not kept across a restart */
  uint8_t unprotect_flags;        /* L: ... with these PROTO_UNPROTECT_* flags */
  uint64_t cache_refusals;        /* L: cycles refused for the cache since the appliance started */
  bool agent_group_point;         /* L: the agent of its session stated PROTO_CAP_GROUP_POINT */
  bool claimed;                   /* L: an apply worker holds it (apply_pool.c): its fields marked "applier" are
                                     that worker's, and no session starts a direct cycle of it meanwhile */
  uint64_t served_turn;           /* L: the pool's turn counter when a worker last took it (fairness) */
  uint64_t housekeep_due_ms;      /* L: monotonic: its lease and retention are looked at again by then */
  bool rehash_more;               /* L: stale chunks of its hash index wait for the background rehash */
  struct disk *next;              /* L */
};

struct alerts;

/* Plain cycles of different disks one agent runs at once (run --agent-cycles). 4 lets a server's few
 * disks sync side by side, each into its own page blob (whose upload, not the agent's reading, is what
 * one disk waits on), while the session's one thread and the agent's connection stay shared fairly; 16
 * is the agent's own bound (its threads, CYCLE_MAILBOXES_MAX). An agent that did not state
 * PROTO_CAP_CYCLES gets one at a time. */
#define AGENT_CYCLES_MIN     1
#define AGENT_CYCLES_MAX     16
#define AGENT_CYCLES_DEFAULT 4

struct appliance {
  char state_dir[1024];
  struct appliance_settings settings;
  const struct store_ops *backend; /* the storage backend the settings name, picked once */
  char listen[256];
  char web[256];                  /* the configuration manager's ADDR:PORT, or "off" */
  const char *web_root;
  unsigned web_sample_s;
  struct catalog *cat;            /* thread-safe */
  SSL_CTX *ctx;                   /* L: replaced when the listener's certificate is renewed */
  char *ca_cert;                  /* the authority: agents' certificates are verified against it */
  char *server_cert, *server_key; /* the listeners' identity, issued by the authority */
  struct signer *signer;          /* holds the authority's key; signs agents' certificates */
  unsigned rpo_ms;
  unsigned agent_cycles;          /* fixed once running: cycles of different disks one agent runs at once
                                     (run --agent-cycles; 1 for an agent without PROTO_CAP_CYCLES) */
  pthread_mutex_t lock;           /* L: the disks list and their fields marked L, sessions, points_recorded */
  pthread_cond_t work;            /* commits for the applier */
  pthread_cond_t applied;         /* applies, detaches and session ends, for whoever waits on them */
  pthread_mutex_t snap_lock;      /* S: the disks' snaps */
  struct disk *disks;             /* L */
  size_t ndisks;                  /* L: at most MAX_DISKS */
  struct disk *retired;           /* L: deleted disks, off the list; kept (not freed) until close_disks, as
                                     the session that unprotected one may still point to it */
  unsigned sessions;              /* L: connections being served (each a thread) */
  struct {                        /* L: connections not yet authenticated, per source address */
    char addr[64];
    unsigned n;
  } preauth[MAX_PREAUTH_ADDRESSES];
  struct {                        /* L: authenticated sessions per agent (n 0: a free entry) */
    uint8_t agent[PROTO_ID_SIZE];
    unsigned n;
  } agent_sessions[MAX_CONNECTIONS];
  uint64_t refused_connections;   /* L: closed at once by the limits above */
  uint64_t state_free_bytes;      /* L: free on the state directory's file system, at the last look */
  uint64_t state_free_checked_ms; /* L: monotonic, that look */
  int listen_fd;
  uint64_t points_recorded;       /* L */
  struct retention_policy retention;
  struct point_schedule schedule; /* L: the configuration manager may change it */
  int64_t started_time;           /* fixed: unix seconds, when run started */
  struct thresholds thresholds;   /* L: the health limits (thresholds.h); the page may change them */
  struct alerts *alerts;          /* health transitions to the log and the webhooks (alerts.h); thread-safe */
  bool no_precopy;                /* benchmark only ($RPL_BENCH_PRECOPY=off): points start without a catch-up */
  bool no_direct;                 /* tests only ($RPL_TEST_NO_DIRECT=1): no cycle is written straight into the store,
                                     so that the apply workers' order and overlap can be seen with any backend */
  struct upload_gate *gate;       /* uploads wait for the storage checks; thread-safe */
  struct rate_limit limit_all;    /* appliance-wide upload bucket; thread-safe */
  struct {                        /* L: one bucket per agent */
    uint8_t agent[PROTO_ID_SIZE];
    struct rate_limit rl;
  } *agent_limits;
  size_t nagent_limits;           /* L */
  struct appliance_metrics m;     /* L: counters for /metrics (metrics.h) */
  struct group_points *gp;        /* consistency groups and their points (group_point.h); own lock */
  struct members members;         /* fixed: the appliance group this appliance is a member of, if any */
  char advertise[256];            /* fixed: HOST:PORT agents reach it at (--advertise, or a specific --listen); "" */
  char member_addrs[MEMBERS_MAX][256]; /* L: the group's members' addresses, as its records list them */
  size_t nmember_addrs;           /* L */
  unsigned members_gen;           /* L: counts changes of member_addrs (sessions send MEMBERS again) */
  struct apply_pool_state pool;   /* L: the apply workers (apply_pool.h) */
};

/* The agent's record in the appliance group brought up to date with the catalog (after its
 * registration, renewal or revocation here): a failure is logged, and the next change tries again. */
void appliance_publish_agent(struct appliance *a, const uint8_t agent[PROTO_ID_SIZE]);

/* A copy of the health thresholds in use (takes L). */
static inline struct thresholds appliance_thresholds(struct appliance *a)
{
  pthread_mutex_lock(&a->lock);
  struct thresholds t = a->thresholds;
  pthread_mutex_unlock(&a->lock);
  return t;
}

/* Set by SIGTERM/SIGINT: every thread ends its loop (cmd_run.c). */
extern atomic_int appliance_stopping;

/* ---- disks.c: the registry ---- */
void id_text(const uint8_t id[PROTO_ID_SIZE], char out[37]);
/* The disk with this id, or NULL. L held. */
struct disk *find_disk(struct appliance *a, const uint8_t id[PROTO_ID_SIZE]);
/* Opens the disk's journal (and a store that opens with the disk) and adds it to the list. L held. */
RPL_MUST_CHECK rpl_err open_disk(struct appliance *a, const struct catalog_disk *cd, struct disk **out);
/* Opens every disk the catalog knows; one that cannot be opened is marked ERROR in the catalog with
 * its reason (status lists it) and the others are served. Fails only when the catalog fails. */
RPL_MUST_CHECK rpl_err load_disks(struct appliance *a);
/* Closes every disk and frees the list (the applier and sessions have ended). */
void close_disks(struct appliance *a);
/* Unprotect --delete-replica: records in the disk's journal folder (durably) that its replica is to be
 * deleted, so that a restart finishes it; then marks it delete_due for the applier. L not held. */
RPL_MUST_CHECK rpl_err disk_delete_ask(struct appliance *a, struct disk *d);
/* The applier, after deleting d's replica and catalog rows: closes d's cache, removes its journal
 * folder and moves d off the list to a->retired. L not held. */
RPL_MUST_CHECK rpl_err disk_retire(struct appliance *a, struct disk *d);
/* The image of recovery-point cycle n was made: kept until the point is recorded (claim_snapshot). */
void remember_snapshot(struct appliance *a, struct disk *d, uint64_t n, const char *id);
bool claim_snapshot(struct appliance *a, struct disk *d, uint64_t n, char *id, size_t idsz);
/* The upload bucket of an agent (created on first use; NULL without a per-agent limit). L held. */
struct rate_limit *agent_limit(struct appliance *a, const uint8_t agent[PROTO_ID_SIZE]);

/* ---- orchestrator.c: the point schedule's bookkeeping ---- */
/* A point of d was recorded at now_ms (application-consistent or not): the schedule moves on. L held. */
void schedule_point_made(struct appliance *a, struct disk *d, bool app, int64_t id, int64_t now_ms);
/* Sets d's due times from its newest points in the catalog (at open). L held. */
void schedule_init_disk(struct appliance *a, struct disk *d, int64_t now_ms);
/* The schedule changed: d's due times follow from its last points. L held. */
void schedule_reset_disk(struct appliance *a, struct disk *d, int64_t now_ms);
/* Counts the scheduled points missed while a disk's agent is away (the applier's pass). L held. */
void schedule_tick(struct appliance *a, int64_t now_ms);

/* ---- applier.c: one worker's turn on one disk (apply_pool.c hands the turns out) ---- */
/* Everything the appliance does to d's store for now: its deletion, or opening its store, applying
 * one committed cycle, keeping its lease and retention, a little background rehash. The caller holds
 * d's claim (L not held). pass: the storage checks pass; worker: the worker's index (events). */
void applier_serve_disk(struct appliance *a, struct disk *d, bool pass, unsigned worker);
/* Whether d has anything for a worker to do now, and how urgent (apply_pool.h's APPLY_PRIO_*). L held. */
int applier_disk_work(struct appliance *a, struct disk *d, bool pass, uint64_t now_ms);

/* resync_index.c: the disks' hash indexes (hashindex.h) as the daemon keeps and uses them */
/* Loads the disk's index (beside its journal); a disk without one resyncs by reading its replica. */
void resync_index_open(struct appliance *a, struct disk *d);
/* The disk's store st was just opened, before anything can write it: a replica it made (blank)
 * is all zeros, and the index knows every chunk so (nothing to read back in the background). */
void resync_index_store_opened(struct disk *d, struct store *st);
void resync_index_close(struct disk *d);
/* Applier, before an apply: the index covers the disk's size (a grown disk's new chunks stale). */
void resync_index_follow_size(struct appliance *a, struct disk *d);
/* Applier, during an apply's check pass: [offset, offset + length) is about to be written. */
RPL_MUST_CHECK rpl_err resync_index_stale(struct disk *d, uint64_t offset, uint64_t length);
/* Applier, between applies: saves the index now and then; with rehash, reads a few stale chunks of
 * an idle disk back from its replica. True when stale chunks remain that it could work on. */
bool resync_index_background(struct appliance *a, struct disk *d, bool rehash);
/* A resync's first HASHES (the replica holds every committed cycle): verifies sampled chunks of
 * the index against the replica; a mismatch makes the whole index stale. */
RPL_MUST_CHECK rpl_err resync_index_begin(struct appliance *a, struct disk *d, struct store *st, uint32_t chunk_size,
                                          uint8_t *buf);
/* Whether chunk c (len bytes at off) differs from the agent's hash: from the index when it knows
 * the chunk, else read from st into buf (and the index learns it). */
RPL_MUST_CHECK rpl_err resync_index_differs(struct disk *d, struct store *st, uint32_t chunk_size, uint64_t c,
                                            uint64_t off, size_t len, const uint8_t *hash, uint8_t *buf,
                                            bool *differs);
/* status: the disk's "hash_index" object (json) or its line's words (text). */
void resync_index_status(struct disk *d, struct json_out *j, FILE *f);

/* ---- session.c / registration.c: one agent's connection ---- */
void *session_main(void *arg); /* arg: a malloc'd struct session_arg, freed by it */
/* Something d's session acts on changed (a cycle applied, a point's image settled, the disk freed by
 * its apply worker): the session looks now instead of at its next poll (POLL_MS later). L held. */
void disk_wake_session(struct disk *d);
struct session_arg {
  struct appliance *a;
  int fd;
  int preauth;                    /* index in a->preauth of its source address (released once authenticated) */
};
/* The connection of preauth slot i authenticated or ended: it no longer counts there. */
void preauth_release(struct appliance *a, int *slot);

/* ---- status.c: the status document, the control socket and the configuration manager's view ---- */
int control_handler(void *ctx, int argc, char **argv, struct control_reply *out);
void web_status_json(void *ctx, FILE *f);
void web_sample(void *ctx, web_sample_fn fn, void *arg);
rpl_err web_disk_request(void *ctx, const uint8_t id[PROTO_ID_SIZE], enum web_disk_action act);
rpl_err web_disk_unprotect(void *ctx, const uint8_t id[PROTO_ID_SIZE], bool delete_replica);
void web_schedule_get(void *ctx, char *text, size_t size);
void web_schedule_set(void *ctx, const struct point_schedule *s);
void web_alerts_json(void *ctx, FILE *f);
void web_thresholds_set(void *ctx, const struct thresholds *t);
RPL_MUST_CHECK rpl_err web_alerts_test(void *ctx, unsigned *queued);

#endif
