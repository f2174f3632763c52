/* session.c - the agent's session with the appliance: connect, handshake, announce the disks, read
 * every frame the appliance sends (handing cycles' ACK, NACK and NEED to their threads), start its
 * cycle requests, heartbeats in between, and reconnect with backoff. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <uuid/uuid.h>

#include "daemon.h"
#include "rpl_clock.h"
#include "rpl_log.h"

#define HEARTBEAT_MS       10000
#define DIRTY_CHECK_MS     1000
#define DIRTY_TRIGGER      (256ull << 20) /* a backlog this large asks the appliance for a cycle now */
#define BACKOFF_MIN_MS     500
#define BACKOFF_MAX_MS     30000

atomic_int agent_stopping;

void session_wake(struct agent *a)
{
  uint64_t one = 1;
  ssize_t w = write(a->wake, &one, sizeof one);
  (void)w;
}

static void drain_wake(struct agent *a)
{
  uint64_t v;
  ssize_t n = read(a->wake, &v, sizeof v);
  (void)n;
}

rpl_err session_send_buf(struct agent *a)
{
  rpl_err err = conn_send(a->conn, &a->out);
  proto_buf_reset(&a->out);
  return err;
}

ssize_t agent_disk_index(struct agent *a, const uint8_t id[PROTO_ID_SIZE])
{
  for (size_t i = 0; i < a->st.ndisks; i++)
    if (!memcmp(a->st.disks[i].id, id, PROTO_ID_SIZE))
      return (ssize_t)i;
  return -1;
}

/* The tracker's repair check (cbt_set_repair_check): the disk's units sent lately, compared with the
 * disk. Under agent.cbt_lock. */
static bool session_repair_check(void *ctx, const char *device,
                                 void (*mark)(void *mark_ctx, uint64_t offset, uint64_t length), void *mark_ctx,
                                 uint64_t *checked_bytes, uint64_t *differing_bytes)
{
  struct agent *a = ctx;
  for (size_t i = 0; i < AGENT_MAX_DISKS; i++) {
    struct disk_rt *rt = &a->rt[i];
    struct sent_hashes *sh = __atomic_load_n(&rt->sent, __ATOMIC_ACQUIRE);
    if (!sh || strcmp(a->st.disks[i].device, device) != 0)
      continue;
    struct sent_check st;
    bool ok = sent_hashes_check(sh, rt->fd, rt->size, mark, mark_ctx, &st);
    *checked_bytes += st.checked_bytes;
    *differing_bytes += st.differing_bytes;
    return ok;
  }
  return false;
}

/* A cbt handle sees the tracker as it was when opened: after protect installed or changed the
 * tracker through another handle, the session's handle is opened again. */
rpl_err session_refresh_cbt(struct agent *a)
{
  if (!atomic_exchange(&a->cbt_reopen, 0) && a->cbt)
    return RPL_OK;
  cbt_close(a->cbt);
  a->cbt = NULL;
  struct cbt_options opt = {.state_dir = a->st.dir};
  rpl_err err = cbt_open(&a->cbt, &opt);
  if (err)
    atomic_store(&a->cbt_reopen, 1);
  else
    cbt_set_repair_check(a->cbt, session_repair_check, a);
  return err;
}

/* ---- announcing ---------------------------------------------------------------------------- */

/* How long the hashes of what was sent are kept: the tracker's history window. RPL_TEST_SENT_WINDOW_MS
 * (tests only) shortens it, so that a test need not wait two minutes for the record to be complete;
 * a window shorter than a write may be in flight loses the guarantee. */
static uint64_t sent_window_ns(void)
{
  const char *v = getenv("RPL_TEST_SENT_WINDOW_MS");
  if (!v)
    return CBT_HISTORY_NS;
  char *end;
  unsigned long long ms = strtoull(v, &end, 10);
  if (end == v || *end || !ms || ms > CBT_HISTORY_NS / 1000000ULL) {
    log_warn("RPL_TEST_SENT_WINDOW_MS=%s is not a number of milliseconds from 1 to %llu: ignored (the window "
             "stays %llu s)", v, CBT_HISTORY_NS / 1000000ULL, CBT_HISTORY_NS / 1000000000ULL);
    return CBT_HISTORY_NS;
  }
  log_warn("RPL_TEST_SENT_WINDOW_MS=%llu: the hashes of what was sent are kept for %llu ms, not %llu s (tests only)",
           ms, ms, CBT_HISTORY_NS / 1000000000ULL);
  return ms * 1000000ULL;
}

/* Opens the disk for the read pipeline on first use; a disk that cannot be opened is marked in
 * error and the others go on. False then. */
static bool open_disk(struct agent *a, size_t i)
{
  struct disk_rt *rt = &a->rt[i];
  const struct agent_disk *d = &a->st.disks[i];
  char msg[sizeof rt->error]; /* apart from rt: gcc cannot tell the device path is not inside it */
  rt->fd = open(d->device, O_RDONLY | O_DIRECT | O_CLOEXEC);
  if (rt->fd < 0) {
    snprintf(msg, sizeof msg, "cannot open %s: %s", d->device, strerror(errno));
    pthread_mutex_lock(&a->lock);
    memcpy(rt->error, msg, sizeof msg);
    rt->phase = PHASE_ERROR;
    pthread_mutex_unlock(&a->lock);
    log_err("%s", rt->error);
    return false;
  }
  if (!__atomic_load_n(&rt->sent, __ATOMIC_ACQUIRE)) {
    struct sent_hashes *sh = NULL;
    if (sent_hashes_create(sent_window_ns(), &sh))
      log_warn("%s: no memory for the hashes of what is sent: a completion the kernel skips will mean sending again "
               "all that was written lately", d->device);
    __atomic_store_n(&rt->sent, sh, __ATOMIC_RELEASE);
  }
  uint64_t size = 0;
  int sector = 512;
  if (ioctl(rt->fd, BLKGETSIZE64, &size) != 0 || ioctl(rt->fd, BLKSSZGET, &sector) != 0) {
    snprintf(msg, sizeof msg, "%s is not a block device", d->device);
    pthread_mutex_lock(&a->lock);
    memcpy(rt->error, msg, sizeof msg);
    rt->phase = PHASE_ERROR;
    pthread_mutex_unlock(&a->lock);
    return false;
  }
  rt->size = size;
  rt->sector = (uint32_t)sector;
  return true;
}

static rpl_err announce_disk(struct agent *a, size_t i)
{
  struct disk_rt *rt = &a->rt[i];
  const struct agent_disk *d = &a->st.disks[i];
  if (rt->fd < 0 && !open_disk(a, i))
    return RPL_OK; /* the others go on */
  uint64_t now = 0;
  if (ioctl(rt->fd, BLKGETSIZE64, &now) == 0 && now > rt->size) {
    pthread_mutex_lock(&a->lock); /* grown while no session was up: announced at its new size */
    rt->size = now;
    pthread_mutex_unlock(&a->lock);
  }
  struct proto_disk m = {.size_bytes = rt->size, .sector_size = rt->sector,
                         .name = {(const uint8_t *)d->device, (uint32_t)strlen(d->device)}};
  memcpy(m.disk_id, d->id, PROTO_ID_SIZE);
  rpl_err err = proto_encode_disk(&a->out, &m);
  if (!err)
    err = session_send_buf(a);
  if (!err)
    rt->announced = true;
  return err;
}

/* Before each cycle: a disk grown online is announced again at its new size, before anything of
 * the cycle, so that the appliance grows the replica before extents past the old end come; the
 * tracker's resize event makes the cycle a resync by comparison, which syncs the new range. An
 * appliance that takes no DISK within a session (no PROTO_CAP_DISK_RESIZE) would refuse those
 * extents in a loop: the session ends and the new one announces the new size (RPL_E_AGAIN). A shrunk
 * disk is refused (*refused): its cycles are NACKed with the reason and the appliance asks no more. */
static rpl_err check_disk_size(struct agent *a, size_t i, bool *refused)
{
  struct disk_rt *rt = &a->rt[i];
  const char *dev = a->st.disks[i].device;
  uint64_t now = 0;
  *refused = false;
  if (ioctl(rt->fd, BLKGETSIZE64, &now) != 0 || now == rt->size)
    return RPL_OK; /* a device that cannot say fails the cycle's read, with its own reason */
  if (now < rt->size) {
    char msg[sizeof rt->error];
    snprintf(msg, sizeof msg, "%s shrank from %" PRIu64 " to %" PRIu64 " bytes: shrinking a protected disk is not "
             "supported; unprotect it and protect it again", dev, rt->size, now);
    pthread_mutex_lock(&a->lock);
    memcpy(rt->error, msg, sizeof msg);
    rt->phase = PHASE_ERROR;
    pthread_mutex_unlock(&a->lock);
    log_err("%s", rt->error);
    *refused = true;
    return RPL_OK;
  }
  log_notice("%s: grew from %" PRIu64 " to %" PRIu64 " bytes: the appliance grows its replica%s", dev, rt->size, now,
             a->peer_resize ? "" : " (on a new session: it cannot take the new size within this one)");
  pthread_mutex_lock(&a->lock);
  rt->size = now;
  pthread_mutex_unlock(&a->lock);
  if (!a->peer_resize)
    return RPL_E_AGAIN;
  return announce_disk(a, i);
}

/* Whether `unprotect` (or the appliance) asked to unprotect a disk not yet forgotten. */
static bool unprotect_asked(struct agent *a)
{
  bool asked = false;
  pthread_mutex_lock(&a->lock);
  for (size_t i = 0; i < a->st.ndisks && !asked; i++)
    asked = a->rt[i].unprotect;
  pthread_mutex_unlock(&a->lock);
  return asked;
}

/* Announces the disks protect added and asks for the recovery points checkpoint requested; with no
 * cycle in flight (unprotecting moves the disks' indexes), unprotects what was asked. */
static rpl_err send_pending(struct agent *a)
{
  rpl_err err = a->inflight ? RPL_OK : session_unprotect_pending(a);
  pthread_mutex_lock(&a->lock);
  size_t n = a->st.ndisks;
  pthread_mutex_unlock(&a->lock);
  for (size_t i = 0; i < n && !err; i++)
    if (!a->rt[i].announced)
      err = announce_disk(a, i);
  if (!err)
    err = points_queue_requests(a);
  if (!err && a->out.len)
    err = session_send_buf(a);
  return err;
}

/* ---- handshake ----------------------------------------------------------------------------- */

static rpl_err send_hello(struct agent *a, bool renewing)
{
  char hostname[256] = "unknown";
  gethostname(hostname, sizeof hostname - 1);
  struct proto_hello h = {.version_min = PROTO_VERSION_MIN, .version_max = PROTO_VERSION_MAX,
                          .capabilities = PROTO_CAP_ZSTD | PROTO_CAP_CBT_EBPF | PROTO_CAP_FREEZE |
                                          PROTO_CAP_UNPROTECT_REQUEST | PROTO_CAP_GROUP_POINT | PROTO_CAP_REPLAY | PROTO_CAP_MEMBERS |
                                          PROTO_CAP_CYCLES |
                                          (renewing ? PROTO_CAP_RENEWING : 0),
                          .hostname = {(const uint8_t *)hostname, (uint32_t)strlen(hostname)}};
  uuid_parse(a->st.agent_id, h.agent_id);
  rpl_err err = proto_encode_hello(&a->out, &h);
  return err ? err : session_send_buf(a);
}

/* The appliance answered HELLO with ERROR: what it said becomes the connection error status shows. */
static rpl_err session_refused(struct agent *a, const struct proto_frame *f)
{
  struct proto_error e;
  if (proto_decode_error(f, &e) != RPL_OK)
    return RPL_E_PROTO_UNEXPECTED;
  pthread_mutex_lock(&a->lock);
  snprintf(a->conn_error, sizeof a->conn_error, "the appliance refused the session: %.*s", (int)e.message.len,
           (const char *)e.message.ptr);
  pthread_mutex_unlock(&a->lock);
  log_err("%s", a->conn_error);
  return (rpl_err)e.code ? (rpl_err)e.code : RPL_E_PROTO_UNEXPECTED;
}

static rpl_err handshake(struct agent *a)
{
  bool renewing = renewal_due(a);
  rpl_err err = send_hello(a, renewing);
  struct proto_frame f;
  if (!err)
    err = conn_recv(a->conn, &f, CONN_IO_TIMEOUT_MS);
  if (err)
    return err;
  if (f.type == PROTO_ERROR)
    return session_refused(a, &f);
  struct proto_hello peer;
  if ((err = proto_decode_hello(&f, &peer)))
    return err;
  uint16_t v;
  char msg[160];
  if ((err = proto_negotiate(PROTO_VERSION_MIN, PROTO_VERSION_MAX, peer.version_min, peer.version_max, &v, msg, sizeof msg))) {
    log_err("%s", msg);
    return err;
  }
  a->peer_readiness = (peer.capabilities & PROTO_CAP_READINESS) != 0;
  a->readiness_sent_ms = 0;
  /* The HELLO sent said whether a renewal follows; an appliance that cannot renew ignored it. */
  a->peer_renew = (peer.capabilities & PROTO_CAP_RENEW) != 0;
  a->peer_resize = (peer.capabilities & PROTO_CAP_DISK_RESIZE) != 0;
  a->peer_unprotect = (peer.capabilities & PROTO_CAP_UNPROTECT) != 0;
  a->peer_unprotect_delete = (peer.capabilities & PROTO_CAP_UNPROTECT_DELETE) != 0;
  a->peer_group_point = (peer.capabilities & PROTO_CAP_GROUP_POINT) != 0;
  a->peer_replay = (peer.capabilities & PROTO_CAP_REPLAY) != 0;
  if (a->peer_renew && renewing)
    return renewal_run(a);
  return RPL_OK;
}

/* ---- serving ------------------------------------------------------------------------------- */

struct serve_state {
  uint64_t last_send, last_check; /* monotonic ms */
  uint64_t hb_seq;
  bool pressure_sent; /* one request per backlog: the cycles that follow drain it */
};

static uint64_t dirty_total(struct agent *a)
{
  uint64_t sum = 0;
  for (size_t i = 0; i < a->st.ndisks; i++) {
    struct cbt_status s;
    pthread_mutex_lock(&a->lock);
    bool error = a->rt[i].phase == PHASE_ERROR;
    pthread_mutex_unlock(&a->lock);
    pthread_mutex_lock(&a->cbt_lock);
    if (!error && cbt_status_get(a->cbt, a->st.disks[i].device, &s) == RPL_OK)
      sum += s.dirty_bytes;
    pthread_mutex_unlock(&a->cbt_lock);
  }
  return sum;
}

/* A heartbeat when the link was quiet for HEARTBEAT_MS, or sooner, once, to report a large backlog. */
static rpl_err heartbeat_if_due(struct agent *a, struct serve_state *s)
{
  uint64_t dirty = 0;
  if (rpl_mono_ms() - s->last_check >= DIRTY_CHECK_MS && a->cbt && !atomic_load(&a->cbt_reopen)) {
    s->last_check = rpl_mono_ms();
    dirty = dirty_total(a);
    if (dirty < DIRTY_TRIGGER)
      s->pressure_sent = false;
  }
  pthread_mutex_lock(&a->lock);
  bool quiet = cycle_cache_quiet(a); /* the appliance's cache asked for a pause: no cycle asked for now */
  pthread_mutex_unlock(&a->lock);
  bool pressure = dirty >= DIRTY_TRIGGER && !s->pressure_sent && !quiet;
  if (!pressure && rpl_mono_ms() - s->last_send < HEARTBEAT_MS)
    return RPL_OK;
  s->pressure_sent = s->pressure_sent || pressure;
  struct proto_heartbeat hb = {.sequence = ++s->hb_seq, .time_ns = (uint64_t)time(NULL) * 1000000000ull,
                               .dirty_bytes = dirty};
  rpl_err err;
  if ((err = proto_encode_heartbeat(&a->out, &hb)) || (err = session_send_buf(a)))
    return err;
  s->last_send = rpl_mono_ms();
  return RPL_OK;
}

/* Waits (at most until the next dirty check) for a frame or a wake-up, sending heartbeats meanwhile;
 * *readable says whether the connection has something to read. */
static rpl_err idle(struct agent *a, struct serve_state *s, bool *readable)
{
  *readable = false;
  struct pollfd p[2] = {{.fd = conn_fd(a->conn), .events = POLLIN}, {.fd = a->wake, .events = POLLIN}};
  uint64_t now = rpl_mono_ms();
  int wait = now - s->last_send >= HEARTBEAT_MS ? 0 : (int)(HEARTBEAT_MS - (now - s->last_send));
  if (wait > DIRTY_CHECK_MS)
    wait = DIRTY_CHECK_MS;
  int r = poll(p, 2, wait);
  if (r < 0 && errno == EINTR)
    return RPL_OK;
  if (p[1].revents)
    drain_wake(a);
  rpl_err err = heartbeat_if_due(a, s);
  if (!err)
    err = readiness_send_if_due(a);
  if (err)
    return err;
  *readable = (p[0].revents & (POLLIN | POLLHUP | POLLERR)) != 0;
  return RPL_OK;
}

/* NACKs the cycle; why (the disk's error, NULL for a disk not protected here) becomes the reason the
 * appliance shows. */
static rpl_err refuse_cycle(struct agent *a, const struct proto_cycle_start *m, rpl_err code, const char *why)
{
  if (!why)
    log_warn("the appliance asked for a cycle of a disk this agent does not protect");
  struct proto_nack nk = {.cycle = m->cycle, .reason = code,
                          .message = {(const uint8_t *)(why ? why : ""), why ? (uint32_t)strlen(why) : 0}};
  memcpy(nk.disk_id, m->disk_id, PROTO_ID_SIZE);
  rpl_err err = proto_encode_nack(&a->out, &nk);
  return err ? err : session_send_buf(a);
}

rpl_err session_stored(struct agent *a, const struct proto_frame *f)
{
  struct proto_stored m;
  rpl_err err = proto_decode_stored(f, &m);
  if (err)
    return err;
  ssize_t d = agent_disk_index(a, m.disk_id);
  pthread_mutex_lock(&a->retain_lock);
  if (d >= 0)
    retain_stored(&a->rt[d].retain, m.cycle);
  pthread_mutex_unlock(&a->retain_lock);
  return RPL_OK;
}

rpl_err session_members(struct agent *a, const struct proto_frame *f)
{
  struct proto_members m;
  rpl_err err = proto_decode_members(f, &m);
  if (err)
    return err;
  struct agent_state next = a->st; /* copied under no lock: only this thread changes members */
  next.nmembers = 0;
  for (uint32_t i = 0; i < m.count && next.nmembers < AGENT_MAX_MEMBERS; i++) {
    char addr[PROTO_MAX_ADDRESS + 1];
    snprintf(addr, sizeof addr, "%.*s", (int)m.address[i].len, (const char *)m.address[i].ptr);
    if (strcmp(addr, a->st.appliance) != 0) /* the appliance registered with stays first */
      snprintf(next.members[next.nmembers++], sizeof next.members[0], "%s", addr);
  }
  if (next.nmembers == a->st.nmembers &&
      memcmp(next.members, a->st.members, next.nmembers * sizeof next.members[0]) == 0)
    return RPL_OK;
  char list[AGENT_MAX_MEMBERS * 258] = "";
  for (size_t i = 0; i < next.nmembers; i++)
    snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "", next.members[i]);
  pthread_mutex_lock(&a->lock);
  char in_use[256];
  snprintf(in_use, sizeof in_use, "%s", agent_member_address(a));
  memcpy(a->st.members, next.members, sizeof next.members);
  a->st.nmembers = next.nmembers;
  a->member_at = 0; /* where it is now, in the new list */
  for (size_t i = 0; i < a->st.nmembers; i++)
    if (!strcmp(a->st.members[i], in_use))
      a->member_at = i + 1;
  err = agent_state_save(&a->st);
  pthread_mutex_unlock(&a->lock);
  log_notice("the appliance group's other members: %s%s", list[0] ? list : "none",
             err ? " (not saved: they are known until the agent stops)" : "");
  return RPL_OK;
}

/* A takeover's REPLAY of cycle n: the storage holds the disk up to n - 1. The blocks of every kept
 * cycle after it go back into the tracker's live set, so that the plain cycle that follows reads and
 * sends them with whatever changed since; RPL_E_REPLAY_INCOMPLETE when they are not all known. */
static rpl_err replay_prepare(struct agent *a, size_t d, uint64_t n)
{
  const char *dev = a->st.disks[d].device;
  struct retain *r = &a->rt[d].retain;
  pthread_mutex_lock(&a->retain_lock); /* the disk has no cycle in flight: STORED is all that may come */
  bool complete = retain_complete(r, n - 1);
  pthread_mutex_unlock(&a->retain_lock);
  if (!complete) {
    log_notice("%s: the appliance's storage holds cycle %" PRIu64 " and earlier; the blocks of the cycles after it "
               "are not all known here (%s): it resyncs the disk instead", dev, n - 1,
               r->known ? "forgotten past the limit" : "acknowledged before this agent started");
    return RPL_E_REPLAY_INCOMPLETE;
  }
  struct cbt_extents set;
  cbt_extents_init(&set, RETAIN_EXTENTS_MAX, 0);
  pthread_mutex_lock(&a->retain_lock);
  rpl_err err = retain_after(r, n - 1, &set);
  pthread_mutex_unlock(&a->retain_lock);
  pthread_mutex_lock(&a->cbt_lock);
  if (!err && set.count)
    err = cbt_merge(a->cbt, dev, &set);
  pthread_mutex_unlock(&a->cbt_lock);
  if (a->rt[d].sent) /* this appliance's replica lacks what was recorded as sent */
    sent_hashes_forget(a->rt[d].sent);
  if (!err)
    log_notice("%s: replaying for the appliance that took the disk over at cycle %" PRIu64 ": %zu extent(s), %" PRIu64
               " bytes of the cycles it misses, with what changed since", dev, n - 1, set.count, cbt_extents_bytes(&set));
  else
    log_warn("%s: the kept blocks cannot be replayed (%s): the appliance resyncs the disk instead", dev,
             rpl_strerror(err));
  cbt_extents_free(&set);
  return err ? RPL_E_REPLAY_INCOMPLETE : RPL_OK; /* never a session ended for good: a resync still works */
}

/* CYCLE_START: kept until start_queued can start it (in the order they came). */
static rpl_err queue_cycle_start(struct agent *a, const struct proto_frame *f)
{
  struct proto_cycle_start m;
  rpl_err err = proto_decode_cycle_start(f, &m);
  if (err)
    return err;
  if (a->nstarts == AGENT_MAX_DISKS) /* one cycle of a disk at a time: more is a broken peer */
    return rpl_fail(RPL_E_PROTO_UNEXPECTED, "the appliance started more than %d cycles", AGENT_MAX_DISKS);
  a->starts[a->nstarts++] = m;
  return RPL_OK;
}

/* Starts cycle m: a plain one on a thread of its own, a point's on this thread (with none in flight). */
static rpl_err begin_cycle(struct agent *a, struct serve_state *s, struct proto_cycle_start m)
{
  rpl_err err;
  ssize_t d = agent_disk_index(a, m.disk_id);
  if (d < 0)
    return refuse_cycle(a, &m, RPL_E_NOT_FOUND, NULL);
  bool shrunk = false;
  if (a->rt[d].phase != PHASE_ERROR && (err = check_disk_size(a, (size_t)d, &shrunk)))
    return err;
  if (a->rt[d].phase == PHASE_ERROR) {
    pthread_mutex_lock(&a->lock);
    a->rt[d].declined++;
    pthread_mutex_unlock(&a->lock);
    return refuse_cycle(a, &m, shrunk ? RPL_E_REPLICA_SHRINK : RPL_E_NOT_FOUND, a->rt[d].error);
  }
  if ((err = session_refresh_cbt(a)))
    return err;
  if (m.kind == PROTO_CYCLE_REPLAY) {
    if ((err = replay_prepare(a, (size_t)d, m.cycle)))
      return err == RPL_E_REPLAY_INCOMPLETE ? refuse_cycle(a, &m, err, rpl_strerror(err)) : err;
    m.kind = PROTO_CYCLE_PLAIN; /* the kept blocks are in the tracker's live set now */
  }
  pthread_mutex_lock(&a->lock);
  if (m.kind == PROTO_CYCLE_RESYNC && a->rt[d].phase == PHASE_NEW)
    a->rt[d].phase = PHASE_SYNCING; /* before status can see the cycle in flight */
  pthread_mutex_unlock(&a->lock);
  err = proto_cycle_is_point(m.kind) ? points_run_cycles(a, (size_t)d, m.cycle, m.kind, m.group)
                                     : workers_start(a, (size_t)d, &m);
  s->last_send = rpl_mono_ms();
  s->pressure_sent = false;
  return err;
}

/* Whether the thread of the disk's previous cycle has not been reaped yet: the appliance starts the
 * next cycle once it sent the ACK, which the thread may still be committing. */
static bool disk_in_flight(const struct agent *a, const uint8_t disk_id[PROTO_ID_SIZE])
{
  for (size_t i = 0; i < AGENT_CYCLES_MAX; i++)
    if (a->workers[i].used && !memcmp(a->st.disks[a->workers[i].disk].id, disk_id, PROTO_ID_SIZE))
      return true;
  return false;
}

/* Starts the CYCLE_STARTs that came, in order. A point's, or any while the tracker handle must be
 * reopened or a disk unprotected, waits until no cycle is in flight (the appliance starts no other
 * cycle while a point's is open, and sends no more than its --agent-cycles). */
static rpl_err start_queued(struct agent *a, struct serve_state *s)
{
  while (a->nstarts) {
    bool alone = proto_cycle_is_point(a->starts[0].kind) || atomic_load(&a->cbt_reopen) || !a->cbt ||
                 unprotect_asked(a);
    if (a->inflight && (alone || a->inflight >= AGENT_CYCLES_MAX || disk_in_flight(a, a->starts[0].disk_id)))
      return RPL_OK; /* once the cycles in flight end (the disk's last one may still be committing its ACK) */
    struct proto_cycle_start m = a->starts[0];
    memmove(&a->starts[0], &a->starts[1], --a->nstarts * sizeof a->starts[0]);
    rpl_err err = begin_cycle(a, s, m);
    if (err)
      return err;
  }
  return RPL_OK;
}

static rpl_err serve_frame(struct agent *a, const struct proto_frame *f)
{
  switch (f->type) {
  case PROTO_HEARTBEAT:
    return RPL_OK;
  case PROTO_POINT:
    return points_handle_reply(a, f);
  case PROTO_CYCLE_START:
    return queue_cycle_start(a, f);
  case PROTO_ACK:
  case PROTO_NACK:
  case PROTO_NEED: /* to the cycle in flight it names; none such is a broken peer */
    return cycle_router_deliver(&a->router, f);
  case PROTO_STORED:
    return session_stored(a, f);
  case PROTO_MEMBERS:
    return session_members(a, f);
  case PROTO_UNPROTECT_REQUEST:
    return session_unprotect_request(a, f);
  case PROTO_GROUP_FREEZE:
    return group_freeze_on_frame(a, f);
  case PROTO_GROUP_THAW:
    return group_thaw_on_frame(a, f);
  case PROTO_ERROR: {
    struct proto_error e;
    if (proto_decode_error(f, &e) != RPL_OK)
      return RPL_E_PROTO_UNEXPECTED;
    if (e.code == RPL_E_MEMBERS_ELSEWHERE) { /* not a failure: the next member serves the disks */
      log_notice("the appliance sent this agent on: %.*s", (int)e.message.len, (const char *)e.message.ptr);
      return RPL_E_MEMBERS_ELSEWHERE;
    }
    log_err("the appliance ended the session: %.*s", (int)e.message.len, (const char *)e.message.ptr);
    return RPL_E_PROTO_UNEXPECTED;
  }
  default:
    log_warn("unexpected %s frame from the appliance", proto_type_name(f->type));
    return RPL_E_PROTO_UNEXPECTED;
  }
}

/* Until the connection breaks or the agent stops (RPL_OK then). */
static rpl_err serve(struct agent *a)
{
  struct serve_state s = {.last_send = rpl_mono_ms(), .last_check = rpl_mono_ms()};
  for (;;) {
    if (atomic_load(&agent_stopping))
      return RPL_OK;
    if (a->peer_renew && renewal_due(a) && !a->inflight && !a->nstarts) {
      log_info("the client certificate is two thirds through its life: reconnecting to renew it");
      return RPL_E_AGAIN;
    }
    if (a->held.attempt && rpl_mono_ms() - a->held.frozen_mono_ms > a->held.limit_ms)
      group_freeze_release(a, "its limit passed without the appliance's word"); /* the watchdog thawed already */
    rpl_err err = workers_reap(a);
    if (!err)
      err = send_pending(a);
    if (!err)
      err = start_queued(a, &s);
    if (err)
      return err;
    if (!conn_pending(a->conn)) {
      bool readable;
      if ((err = idle(a, &s, &readable)))
        return err;
      if (!readable)
        continue;
    }
    struct proto_frame f;
    err = conn_recv(a->conn, &f, CONN_IO_TIMEOUT_MS);
    if (err == RPL_E_TIMEOUT)
      continue;
    if (err || (err = serve_frame(a, &f)))
      return err;
  }
}

/* ---- reconnecting -------------------------------------------------------------------------- */

/* A new connection: every disk is announced again and unanswered point requests are asked again. */
static void on_connected(struct agent *a)
{
  log_info("connected to the appliance at %s", agent_member_address(a));
  pthread_mutex_lock(&a->lock);
  a->connected = true;
  a->conn_error[0] = '\0';
  for (size_t i = 0; i < a->st.ndisks; i++)
    a->rt[i].announced = false;
  for (size_t r = 0; r < MAX_POINT_REQUESTS; r++)
    a->reqs[r].sent = a->reqs[r].done; /* unanswered requests are asked again */
  pthread_cond_broadcast(&a->changed);
  pthread_mutex_unlock(&a->lock);
}

static void on_disconnected(struct agent *a, rpl_err err)
{
  group_freeze_release(a, "the connection to the appliance ended");
  proto_buf_reset(&a->out);
  conn_close(a->conn);
  a->conn = NULL;
  pthread_mutex_lock(&a->lock);
  if (a->connected || !a->conn_error[0])
    snprintf(a->conn_error, sizeof a->conn_error, "%s", err ? rpl_strerror(err) : "stopping");
  a->connected = false;
  pthread_cond_broadcast(&a->changed);
  pthread_mutex_unlock(&a->lock);
}

/* Sleeps backoff_ms, but wakes for a stop. */
static void sleep_unless_stopping(struct agent *a, unsigned backoff_ms)
{
  struct pollfd p = {.fd = a->wake, .events = POLLIN};
  uint64_t until = rpl_mono_ms() + backoff_ms;
  while (!atomic_load(&agent_stopping) && rpl_mono_ms() < until)
    if (poll(&p, 1, 200) > 0)
      drain_wake(a);
}

const char *agent_member_address(const struct agent *a)
{
  return a->member_at == 0 ? a->st.appliance : a->st.members[a->member_at - 1];
}

/* The next member of the appliance group (after the last, the appliance registered with). */
static void next_member(struct agent *a)
{
  pthread_mutex_lock(&a->lock);
  a->member_at = (a->member_at + 1) % (a->st.nmembers + 1);
  pthread_mutex_unlock(&a->lock);
}

void session_loop(struct agent *a)
{
  unsigned backoff = BACKOFF_MIN_MS;
  size_t tried = 0; /* members that failed in a row: each is tried once before the backoff grows */
  while (!atomic_load(&agent_stopping)) {
    const char *addr = agent_member_address(a);
    bool served = false;
    rpl_err err = conn_connect(a->ctx, addr, 10000, &a->conn);
    if (!err)
      err = handshake(a);
    if (!err) {
      conn_set_reader(a->conn); /* this thread reads every frame; cycle threads only send */
      cycle_router_reopen(&a->router);
      on_connected(a);
      backoff = BACKOFF_MIN_MS;
      tried = 0;
      served = true;
      err = serve(a);
    }
    workers_end_all(a, err ? err : RPL_E_CANCELLED);
    a->nstarts = 0; /* the appliance gave up the cycles it started with the session */
    on_disconnected(a, err);
    if (atomic_load(&agent_stopping))
      break;
    if (err == RPL_E_AGAIN) /* renewed, or a disk grew: the new certificate or size is put in use at once */
      continue;
    /* Another member of the appliance group: when this one could not be reached, or sent the agent on
     * (its disks are another member's, whose lease it could not take). A session that ended otherwise
     * is tried again at the same member first: it may only have restarted. */
    if (a->st.nmembers && (!served || err == RPL_E_MEMBERS_ELSEWHERE)) {
      next_member(a);
      if (++tried <= a->st.nmembers) {
        log_warn("the appliance at %s %s (%s): trying the appliance group's member at %s", addr,
                 served ? "sent this agent on" : "cannot be reached", rpl_strerror(err), agent_member_address(a));
        continue;
      }
      tried = 0;
    }
    if (strcmp(addr, agent_member_address(a)) != 0)
      log_warn("session with the appliance at %s ended (%s); every member of the appliance group tried: "
               "connecting to %s in %u ms", addr, rpl_strerror(err), agent_member_address(a), backoff);
    else
      log_warn("session with the appliance at %s ended (%s); reconnecting in %u ms", addr, rpl_strerror(err), backoff);
    sleep_unless_stopping(a, backoff);
    backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
    /* Jitter keeps a fleet of agents from reconnecting in lockstep after an appliance restart. */
    backoff -= (unsigned)(rand() % (backoff / 4 + 1));
  }
}
