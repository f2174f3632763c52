/* daemon.h - what the roles of `mobility-agent run` share; include it only from agent/cmd_run.c,
 * session.c, cycle.c, cycle_workers.c, points.c, group_freeze.c and control.c (nothing outside the
 * daemon, no tests). */
#ifndef AGENT_DAEMON_H
#define AGENT_DAEMON_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "agent_state.h"
#include "cbt.h"
#include "conn.h"
#include "control.h"
#include "cycle_mailbox.h"
#include "freeze.h"
#include "pipeline.h"
#include "retain.h"
#include "sent_hashes.h"
#include "proto.h"
#include "rpl_clock.h"

#define MAX_POINT_REQUESTS 32

enum disk_phase { PHASE_NEW, PHASE_SYNCING, PHASE_PROTECTED, PHASE_RESYNC, PHASE_ERROR };

/* What the appliance's cache said of the disk's last cycle: it took it, it is full for now (wait),
 * or the disk's changes do not fit in it at all (the next cycle the appliance asks for is a resync
 * written straight into its storage). */
enum cache_answer { CACHE_TOOK, CACHE_WAIT, CACHE_TOO_BIG };
#define CACHE_WAIT_FIRST_MS 2000  /* the agent's own pause after a "wait", doubled each time in a row, */
#define CACHE_WAIT_MAX_MS   60000 /* up to this: no backlog report asks for a cycle meanwhile */

#define FREEZE_KEPT 256 /* freeze durations a disk keeps for status: its last points' */

/* A protected disk at runtime. fd, size, sector and announced belong to the session thread (protect
 * clears a new slot under agent.lock before counting it; a cycle thread reads them while its cycle
 * runs, when the session thread does not change them). Every other field is written under agent.lock,
 * by the session thread or the disk's cycle thread (by the main thread before the session starts), and
 * read under it by the control threads; the thread running the disk's cycle, the only writer then,
 * also reads it without the lock. */
struct disk_rt {
  enum disk_phase phase;
  bool announced;             /* DISK sent on this connection */
  uint64_t last_cycle;        /* last ACKed cycle */
  uint64_t cycles, bytes_sent, raw_bytes;
  uint64_t refused;           /* cycles the appliance NACKed (status shows a refusal loop as it grows) */
  uint64_t declined;          /* cycles this agent NACKed (the disk in error): likewise */
  bool unprotect;             /* asked by `unprotect`; the session thread tells the appliance and forgets it */
  bool delete_replica;        /* ... with --delete-replica: the appliance deletes its replica too */
  time_t last_ack;
  uint64_t sync_done, sync_total; /* bytes of the cycle in progress */
  uint64_t sync_start_ms;     /* monotonic, when sync_done last started from 0 */
  char error[256];
  char last_point[64];
  char point_note[384];       /* why its last point is less than filesystem-consistent ("" when it is not) */
  struct {                    /* the freezes of this disk's recovery points (the last FREEZE_KEPT) */
    uint32_t ms[FREEZE_KEPT];
    unsigned n, next;
    uint64_t count;
  } freezes;
  unsigned catch_up_rounds;   /* point rounds answered PRECOPY since the last point */
  bool thaw_first_missed;     /* its last point read after the thaw found blocks rewritten meanwhile */
  unsigned frozen_reads;      /* points read frozen since then (the thaw-first read is tried again later) */
  uint64_t read_bytes_per_s;  /* how fast its last cycles were read (pre-copy's bound), 0: unknown */
  enum cache_answer cache;    /* the appliance's cache on the last cycle (see enum cache_answer) */
  unsigned cache_waits;       /* "wait" answers in a row */
  uint64_t cache_quiet_until_ms; /* monotonic: the backlog asks for no cycle before (after a "wait") */
  char cache_note[512];       /* what the appliance said, and what happens now ("" when it took the cycle) */
  int fd;                     /* O_DIRECT, opened on first use */
  struct sent_hashes *sent;   /* made with fd (atomic pointer: the repair check reads it from any thread) */
  uint64_t size;
  uint32_t sector;
  struct retain retain;       /* agent.retain_lock: the blocks of acknowledged cycles not yet stored */
};

/* A `checkpoint` waiting for its recovery point; all of it under agent.lock. */
struct point_req {
  bool used, sent, done;
  unsigned tries;             /* an inconsistent point (a resync ran) is asked for again */
  uint64_t id;
  char group[PROTO_MAX_GROUP_NAME + 1]; /* a consistency group's point (checkpoint --group; ndisks 0), or "" */
  size_t ndisks;
  size_t disks[AGENT_MAX_DISKS]; /* indexes into state.disks */
  rpl_err status;
  char point_id[64];
  uint8_t consistency;
};

/* A consistency group's freeze, held between the appliance's GROUP_FREEZE and the point's CYCLE_START
 * (flip, thaw) or GROUP_THAW; session thread only. The watchdog thaws it at its limit regardless. */
struct held_freeze {
  uint64_t attempt;           /* the appliance's attempt; 0: nothing held */
  size_t ndisks;
  size_t disks[AGENT_MAX_DISKS]; /* indexes into state.disks */
  struct freeze_set *fs;
  bool frozen;                /* freeze_begin froze its filesystems (none: a disk without one) */
  bool hooks;                 /* with the application hooks */
  unsigned limit_ms;
  uint64_t frozen_at_us;      /* CLOCK_REALTIME when the freeze began */
  uint64_t frozen_mono_ms;
};

/* The most cycles in flight at once (their threads): the appliance asks for at most its
 * `run --agent-cycles` (1..16), and sends no more than this. */
#define AGENT_CYCLES_MAX CYCLE_MAILBOXES_MAX

/* A plain cycle on a thread of its own (cycle_workers.c). used, disk, cycle, kind, box and thread:
 * the session thread's. The thread writes err, then done. */
struct cycle_worker {
  struct agent *a;
  bool used;
  pthread_t thread;
  size_t disk;
  uint64_t cycle;
  uint8_t kind;
  int box;                    /* its mailbox in agent.router */
  rpl_err err;                /* how it ended */
  bool ended;                 /* its CYCLE_END went out (a failure after it needs no NACK) */
  char why[RPL_DETAIL_MAX + 128]; /* err described, in its thread (details are kept per thread) */
  atomic_bool done;
};

struct readiness_job;

/* The running agent, one per process. Its threads: the session thread (session_loop: the connection,
 * the frames it reads, points); a cycle thread per plain cycle in flight (cycle_workers.c, at most
 * AGENT_CYCLES_MAX); a control thread per control-socket command (agent_control_handler); the boot
 * readiness checks' thread while they run (readiness_report.c); the stop watcher; and the main
 * thread, which sets everything up before the others start and tears it down after they end. */
struct agent {
  /* dir, agent_id, appliance, fingerprint: fixed once the daemon starts. disks[] and ndisks: protect
   * (a control thread) appends under lock; only the session thread removes one (unprotect.c, under
   * lock, between cycles), so it reads them without the lock too (a disk added meanwhile is seen on
   * a later pass). */
  struct agent_state st;
  struct disk_rt rt[AGENT_MAX_DISKS]; /* see struct disk_rt */
  pthread_mutex_t lock;       /* st.disks/ndisks, rt, reqs, next_req, connected, conn_error */
  pthread_cond_t changed;     /* with lock: broadcast when rt, reqs or connected change */
  struct point_req reqs[MAX_POINT_REQUESTS]; /* lock */
  uint64_t next_req;          /* lock */
  bool connected;             /* lock */
  size_t member_at;           /* lock; written by the session thread only: 0 the appliance registered
                                 with, i > 0 st.members[i - 1] (the appliance group's next members) */
  char conn_error[256];       /* lock; written by the session thread only */
  int wake;                   /* eventfd: new disks or point requests for the session thread; any thread
                               * writes it (session_wake), the session thread reads it */
  struct freeze_options freeze; /* fixed once the daemon starts */
  bool no_precopy;            /* benchmark only ($RPL_BENCH_PRECOPY=off): points read all that is dirty frozen */

  atomic_int cbt_reopen;      /* tracking changed under another handle: the session reopens its own */
  pthread_mutex_t cbt_lock;   /* around each use of cbt while cycle threads may run (the handle is not
                                 thread-safe); cbt itself is replaced only with none in flight */
  pthread_mutex_t retain_lock; /* rt[].retain (STORED on the session thread, ACKs on cycle threads) */
  struct cycle_router router; /* ACK, NACK and NEED frames to the cycle threads (its own lock) */
  struct cycle_worker workers[AGENT_CYCLES_MAX]; /* see struct cycle_worker */
  unsigned inflight;          /* session thread: workers used */
  struct proto_cycle_start starts[AGENT_MAX_DISKS]; /* session thread: CYCLE_STARTs not yet started */
  size_t nstarts;

  /* session thread only (the main thread before it starts and after it ends) */
  struct cbt *cbt;
  struct pipeline *pipes[AGENT_MAX_DISKS];
  SSL_CTX *ctx;               /* with the client certificate; replaced after a renewal */
  int64_t cert_not_before, cert_not_after; /* the certificate's validity (renewal.c; written under lock) */
  bool renew_disabled;        /* a renewed certificate was due at once (a wrong clock): no more tries */
  bool peer_renew;            /* the appliance's HELLO stated PROTO_CAP_RENEW */
  bool peer_resize;           /* the appliance's HELLO stated PROTO_CAP_DISK_RESIZE */
  bool peer_unprotect;        /* the appliance's HELLO stated PROTO_CAP_UNPROTECT */
  bool peer_unprotect_delete; /* ... and PROTO_CAP_UNPROTECT_DELETE */
  bool peer_group_point;      /* the appliance's HELLO stated PROTO_CAP_GROUP_POINT */
  bool peer_replay;           /* ... PROTO_CAP_REPLAY: it says what is stored, so blocks are kept until then */
  struct held_freeze held;    /* a consistency group's freeze (group_freeze.c) */
  unsigned test_holds;        /* GROUP_FREEZE answers delayed so far by RPL_TEST_GROUP_HOLD */
  struct conn *conn;
  struct proto_buf out;
  bool peer_readiness;        /* the appliance's HELLO stated PROTO_CAP_READINESS */
  uint64_t readiness_sent_ms; /* monotonic; 0: not yet sent on this connection */
  size_t readiness_ndisks;    /* disks protected when it was sent: a new one sends it again */
  struct readiness_job *readiness_job; /* the checks running on a thread of their own; NULL: none */
};

/* ---- renewal.c: the client certificate renewed over the authenticated session ---------------- */

/* Loads the certificate and key into a->ctx (finishing a renewal a crash interrupted first). */
RPL_MUST_CHECK rpl_err renewal_load_identity(struct agent *a);
/* Two thirds of the certificate's life are over: HELLO says RENEWING and renewal_run follows. */
bool renewal_due(const struct agent *a);
/* Right after HELLO: sends RENEW, saves what RENEWED brings and loads it into a->ctx. RPL_E_AGAIN
 * when renewed (the session reconnects with it at once), RPL_OK when the appliance refused (the
 * current certificate stays: tried again at the next connection), other errors end the session. */
RPL_MUST_CHECK rpl_err renewal_run(struct agent *a);

/* Set by SIGTERM/SIGINT; every loop of the daemon ends when it sees it. */
extern atomic_int agent_stopping;

/* ---- session.c: the connection to the appliance (session thread, except session_wake) -------- */

/* The address of the appliance in use (or tried next): the one registered with, or another member
 * of its appliance group. a->lock held, or on the session thread. */
/* STORED: the disk's storage holds its cycles up to the one named: their kept blocks are forgotten. */
RPL_MUST_CHECK rpl_err session_stored(struct agent *a, const struct proto_frame *f);
/* MEMBERS: the appliance group's addresses (but the one registered with) become st.members, saved. */
RPL_MUST_CHECK rpl_err session_members(struct agent *a, const struct proto_frame *f);
const char *agent_member_address(const struct agent *a);
void session_loop(struct agent *a);
/* Wakes the session thread's poll: new disks, point requests or a stop. Any thread. */
void session_wake(struct agent *a);
/* Sends what is encoded in a->out and empties it (session thread: a->out is its own). */
RPL_MUST_CHECK rpl_err session_send_buf(struct agent *a);
/* ---- unprotect.c ---------------------------------------------------------------------------- */

/* Session thread, between cycles: every disk `unprotect` asked for is told to the appliance (when it
 * takes UNPROTECT), its tracking stopped and the disk forgotten. An error ends the session (the
 * request stays for the next one). */
RPL_MUST_CHECK rpl_err session_unprotect_pending(struct agent *a);
/* Session thread: the appliance's UNPROTECT_REQUEST (its configuration manager's Unprotect) marks the
 * disk as `unprotect` does; session_unprotect_pending does it between cycles. Read wherever the
 * session reads frames (a cycle's waits too), as it may come at any time. */
RPL_MUST_CHECK rpl_err session_unprotect_request(struct agent *a, const struct proto_frame *f);
/* The control command `unprotect DEVICE`: asks, and waits for the session thread to do it. */
int ctl_unprotect(struct agent *a, int argc, char **argv, struct control_reply *out);

/* Reopens the session's tracker handle when protect changed tracking under another handle. */
RPL_MUST_CHECK rpl_err session_refresh_cbt(struct agent *a);
/* The index in a->st.disks of the disk with this id, or -1. */
ssize_t agent_disk_index(struct agent *a, const uint8_t id[PROTO_ID_SIZE]);

/* ---- readiness_report.c: boot readiness for the appliance (session thread) ------------------- */

/* Sends READINESS when due: on each connection, after a disk is protected, and daily; only to an
 * appliance that takes it. The checks (hundreds of milliseconds: they read the initramfs) run on a
 * thread of their own, started here; their report is sent by a later call, once they are done
 * (session_wake tells), so that a new disk's announcement and its first cycle never wait for them. */
RPL_MUST_CHECK rpl_err readiness_send_if_due(struct agent *a);
/* Waits for checks still running and frees them (the agent stops). */
void readiness_stop(struct agent *a);

/* ---- cycle.c: one cycle of one disk (session thread for points, else a cycle thread) --------- */

/* A cycle being sent: what its CYCLE_END will carry. */
struct cycle_send {
  struct agent *a;
  size_t disk;
  uint64_t cycle;
  struct proto_digest digest;
  struct proto_cycle_end end;
  struct cbt_extents *sent;  /* the blocks sent (for the retained set, retain.h); NULL until the first */
  bool sent_incomplete;      /* past the set's limit, or out of memory: not kept */
  struct proto_buf out;      /* its HASHES and CYCLE_END, encoded */
  bool record_units;         /* its extents' unit hashes go to the disk's sent_hashes (a delta's read) */
  bool by_mailbox;           /* on a cycle thread: its frames come from mailbox box of agent.router (else
                                the session thread reads them off the connection itself) */
  int box;
};
/* Frees what cs holds (its sent set, its out buffer). */
void cycle_send_release(struct cycle_send *cs);

/* What a flip decided for the read that follows. */
struct cycle_plan {
  bool full, compare;        /* the whole disk is read (compared first with the replica) */
  uint64_t gen;              /* the frozen generation, committed after the ACK */
  uint64_t resync_count;     /* the tracker's resync to acknowledge after the ACK (0: none) */
};

/* A copy of the extents a cycle read (a point's remainder), to check afterwards that none was
 * rewritten meanwhile. */
struct kept_set {
  struct cbt_extents set;
  bool incomplete;           /* past the set's limit, or a whole-disk read: nothing can be shown */
};

/* A plain (or, with kind PROTO_CYCLE_RESYNC, whole-disk) cycle: send, end, wait for the ACK, commit;
 * its frames from mailbox box of a->router (box >= 0, on a cycle thread) or off the connection (-1).
 * *ended: its CYCLE_END went out. */
RPL_MUST_CHECK rpl_err cycle_run(struct agent *a, size_t disk, uint64_t cycle, uint8_t kind, int box, bool *ended);
/* Flips the disk's tracker and sends its frozen set (everything, when the appliance asks for it;
 * the chunks that differ from the replica, when the tracker requires a resync), but not CYCLE_END.
 * *gen and *resync_count say what to commit and acknowledge after the ACK. */
RPL_MUST_CHECK rpl_err cycle_send_body(struct agent *a, struct cycle_send *cs, bool full, uint64_t *gen,
                                       uint64_t *resync_count);
/* cycle_send_body in two steps, so that a point's freeze covers only the flip: cycle_flip flips the
 * tracker (and plans the read), cycle_read sends what it froze, keeping a copy of its extents in
 * keep (may be NULL). */
RPL_MUST_CHECK rpl_err cycle_flip(struct agent *a, struct cycle_send *cs, bool full, struct cycle_plan *plan);
RPL_MUST_CHECK rpl_err cycle_read(struct agent *a, struct cycle_send *cs, const struct cycle_plan *plan,
                                  struct kept_set *keep);
RPL_MUST_CHECK rpl_err cycle_send_end(struct agent *a, struct cycle_send *cs, uint8_t consistency);
/* Whether a disk's cycle was refused by the appliance's cache for now and its pause is not over:
 * the backlog then asks for no cycle (the appliance asks when its cache drained). Under agent.lock. */
bool cycle_cache_quiet(struct agent *a);
/* Waits for the ACK or NACK of cs's cycle (on the session thread, heartbeats and POINTs may come in
 * between). */
RPL_MUST_CHECK rpl_err cycle_wait_ack(struct cycle_send *cs, bool *acked);
/* A cycle of the disk read bytes in ms: the rate pre-copy sizes a point's remainder by. */
void note_read_rate(struct agent *a, size_t disk, uint64_t bytes, uint64_t ms);
/* Commits the sent generation (and the resync, when it was one) and records the ACKed cycle. */
RPL_MUST_CHECK rpl_err cycle_after_ack(struct agent *a, struct cycle_send *cs, uint64_t gen, uint64_t resync_count,
                                       bool full);

/* ---- cycle_workers.c: plain cycles of different disks at once (session thread) ---------------- */

/* Starts cycle m (plain, resync or replay, already checked) of disk on a thread of its own. */
RPL_MUST_CHECK rpl_err workers_start(struct agent *a, size_t disk, const struct proto_cycle_start *m);
/* Joins the threads whose cycles ended. A cycle that failed on its own (a read, the tracker) is
 * NACKed, so that the appliance gives it up and the others go on; RPL_OK, or the first error that
 * ends the session (the connection broke, or could not take the NACK). */
RPL_MUST_CHECK rpl_err workers_reap(struct agent *a);
/* The session ends (why): every cycle in flight is told, any send it is in fails, and all are joined
 * (uncommitted, their generations are re-reported at the next flip). */
void workers_end_all(struct agent *a, rpl_err why);

/* ---- points.c: recovery points (session thread) ----------------------------------------------- */

/* The appliance started a point cycle (RECOVERY_POINT: with the hooks; POINT_NO_HOOKS) of disk
 * `first`: runs its whole group's cycles, as a catch-up when too much is dirty to freeze. */
RPL_MUST_CHECK rpl_err points_run_cycles(struct agent *a, size_t first, uint64_t first_cycle, uint8_t kind,
                                         uint16_t group_size);
/* Records the appliance's POINT answer to a request. */
RPL_MUST_CHECK rpl_err points_handle_reply(struct agent *a, const struct proto_frame *f);
/* Encodes a POINT_REQUEST into a->out for each request not yet sent on this connection. */
RPL_MUST_CHECK rpl_err points_queue_requests(struct agent *a);

/* ---- group_freeze.c: a consistency group's freeze across servers (session thread) -------------- */

/* GROUP_FREEZE: freezes the disks' filesystems, holds them, answers GROUP_FROZEN. */
RPL_MUST_CHECK rpl_err group_freeze_on_frame(struct agent *a, const struct proto_frame *f);
/* GROUP_THAW: thaws the held freeze of that attempt (another or none: nothing to do). */
RPL_MUST_CHECK rpl_err group_thaw_on_frame(struct agent *a, const struct proto_frame *f);
/* Thaws what is held (the connection ended, or its limit passed): why for the log. */
void group_freeze_release(struct agent *a, const char *why);
/* Whether the held freeze is of exactly these disks (a point's group). */
bool group_freeze_covers(const struct agent *a, const size_t *disks, size_t n);
/* ---- control.c: the control-socket commands (control threads) --------------------------------- */

int agent_control_handler(void *ctx, int argc, char **argv, struct control_reply *out);

#endif
