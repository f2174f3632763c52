/* fleet_gen.c - a fleet of simulated agents against one appliance over the real protocol and TLS:
 * each registers with its own key, keeps its own certificate, serves its own sparse disk file under
 * a steady random churn, and answers cycles as mobility-agent does; reports RPO lag, cycles, and the
 * appliance's CPU and memory.
 *
 *   fleet_gen --appliance HOST:PORT --dir DIR --agents N --key-cmd CMD [--size MIB] [--rate MB_S]
 *             [--duration S] [--drain-timeout S] [--ap-pid PID] [--no-zstd] [--json FILE] [--seed N]
 *             [--connect-slots N]   (TLS handshakes at once, default 8: all agents share one address)
 *
 * CMD (run with sh -c, once per agent that has no certificate in DIR yet) prints a fresh registration
 * key on its last line (`replication-appliance init ...`: each key registers one agent, and a newer
 * key revokes only the unused ones before it, so they are fetched one at a time).
 *
 * Each agent i keeps DIR/agent-i/{agent.key,agent.crt,agent.id,disk.id,disk.img}. A simulated tracker
 * marks the 4 KiB blocks the churn writes in the current generation; CYCLE_START flips it, the
 * frozen set is read from the file (1 MiB extents at most, all-zero ones as ZERO records, the rest
 * zstd level 1 unless --no-zstd) and sent as EXTENT frames with their xxh3-128 hashes, then
 * CYCLE_END with the totals and digest; the ACK clears the frozen set, a NACK or a lost connection
 * merges it back. A RESYNC cycle (the initial sync) sends the whole disk. Points are answered too
 * (the writer held off that disk while its set is read: crash-consistent).
 *
 * After --duration seconds of churn the writes stop and every agent waits until all its writes are
 * in an ACKed cycle (at most --drain-timeout s). Output: per agent one line, then one JSON line
 * (prefix "FLEET_JSON ") with the fleet's figures, also written to --json FILE; DIR/manifest has
 * "DISK_ID SOURCE_FILE" per agent for the caller's comparison with the replicas. RPO lag is sampled
 * every second of the churn: the age of the oldest write not yet in an ACKed cycle (0 when none).
 * JSON: lag_p50_s/lag_p99_s/lag_max_s over all agents' samples, lag_p99_worst_agent_s; cycles_total
 * and cycles_min (plain cycles ACKed, the initial sync not counted); churn_mb_s (written);
 * committed_mb (raw bytes of the plain cycles ACKed from the churn's start through the drain) and
 * committed_mb_s (that over the time from the churn's start to the last such ACK);
 * committed_window_mb_s (ACKed within the churn only); ap_cpu_pct (the appliance's utime+stime over
 * the churn, 100 = one core), ap_rss_max_kb (VmRSS sampled each second), ap_hwm_kb (VmHWM at the
 * end), per agent both; ap_threads_max, ap_fds_max (sampled each second); initial_sync_s, drain_s, drained, nacks, reconnects.
 * Exit status 0 when every agent drained, 1 otherwise, 2 on a usage error. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <uuid/uuid.h>
#include <zstd.h>

#include "channel.h"
#include "conn.h"
#include "proto.h"
#include "rpl_clock.h"

#define BLOCK          4096u
#define MAX_EXTENT     (1u << 20)   /* as the agent's pipeline splits them */
#define HEARTBEAT_MS   10000
#define CONNECT_SLOTS  8            /* TLS handshakes at once (--connect-slots): the appliance limits
                                       unauthenticated connections per source address
                                       (MAX_PREAUTH_PER_ADDRESS), and all of these come from one */
#define BACKOFF_MIN_MS 500
#define BACKOFF_MAX_MS 10000
#define TICK_MS        10

struct opts {
  const char *appliance, *dir, *key_cmd, *json;
  unsigned agents, size_mib, duration_s, drain_s, seed, connect_slots;
  double rate_mb;
  int ap_pid;
  bool zstd;
};

struct agent {
  unsigned idx;
  char dir[512], name[32], disk_path[600];
  uint8_t agent_id[PROTO_ID_SIZE], disk_id[PROTO_ID_SIZE];
  char agent_text[37], disk_text[37];
  SSL_CTX *ctx;
  int fd;                      /* the disk file (read by the session, written by the churn) */
  uint64_t size, nblocks;
  /* L: the simulated tracker */
  pthread_mutex_t lock;
  uint64_t *cur, *frozen;      /* bitmaps of 4 KiB blocks: written since the flip, and the cycle's */
  uint64_t cur_oldest_ms, frozen_oldest_ms; /* first write of each set (0: empty) */
  uint64_t cur_bytes;          /* bytes written since the flip (for HEARTBEAT's dirty_bytes) */
  bool hold;                   /* a point's read: the churn leaves the disk alone */
  /* the churn (churn thread only) */
  double budget;
  uint64_t rng;
  /* statistics (L) */
  uint64_t written, cycles, plain_cycles, acked_raw, acked_raw_churn, nacks, reconnects, refused_connects;
  uint64_t acked_raw_since, last_ack_ms; /* plain cycles ACKed since the churn started (through the drain) */
  uint64_t last_cycle;
  bool connected, drained;
  uint32_t *lag_samples;       /* seconds, one per second of churn */
  size_t nlag;
  char last_error[160];
  /* session buffers (session thread only) */
  uint8_t *rbuf, *zbuf;
  size_t zcap;
  ZSTD_CCtx *zctx;
  struct proto_buf out;
  uint64_t hb_seq;
};

static struct opts O;
static struct agent *A;
static atomic_int stop_churn, stop_all, churning, churn_started;
static pthread_mutex_t connect_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t connect_cond = PTHREAD_COND_INITIALIZER;
static unsigned connect_busy;
static uint64_t churn_t0_ms, churn_t1_ms;

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  fputs("fleet_gen: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  exit(1);
}

static uint64_t xorshift(uint64_t *s)
{
  uint64_t x = *s;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *s = x;
  return x * 0x2545F4914F6CDD1Dull;
}

/* ---- files ---------------------------------------------------------------------------------- */

static char *read_text(const char *path)
{
  FILE *f = fopen(path, "re");
  if (!f)
    return NULL;
  char *buf = NULL;
  size_t cap = 0, len = 0, n;
  char tmp[4096];
  while ((n = fread(tmp, 1, sizeof tmp, f)) > 0) {
    if (len + n + 1 > cap) {
      cap = (len + n + 1) * 2;
      char *nb = realloc(buf, cap);
      if (!nb)
        die("out of memory");
      buf = nb;
    }
    memcpy(buf + len, tmp, n);
    len += n;
  }
  fclose(f);
  if (!buf)
    buf = calloc(1, 1);
  else
    buf[len] = '\0';
  return buf;
}

static void write_text(const char *path, const char *text, mode_t mode)
{
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text) || fsync(fd) || close(fd))
    die("cannot write %s: %s", path, strerror(errno));
}

static void agent_file(const struct agent *ag, const char *name, char *out, size_t outsz)
{
  snprintf(out, outsz, "%s/%s", ag->dir, name);
}

/* ---- registration --------------------------------------------------------------------------- */

/* The last non-empty line CMD prints. */
static void fetch_key(char *key, size_t keysz)
{
  FILE *p = popen(O.key_cmd, "r");
  if (!p)
    die("cannot run the key command: %s", strerror(errno));
  char line[512];
  key[0] = '\0';
  while (fgets(line, sizeof line, p)) {
    line[strcspn(line, "\r\n")] = '\0';
    size_t n = strlen(line);
    if (n && n < keysz)
      memcpy(key, line, n + 1);
  }
  int st = pclose(p);
  if (st != 0 || strncmp(key, CHAN_REGKEY_PREFIX, strlen(CHAN_REGKEY_PREFIX)))
    die("the key command failed (status %d) or printed no registration key last", st);
}

/* As `mobility-agent register`: a key and CSR, the key's secret proven to the pinned appliance, the
 * signed certificate kept with the agent id it names. */
static void register_agent(struct agent *ag, uint8_t fp[CHAN_FINGERPRINT_SIZE])
{
  char key[CHAN_REGKEY_MAX + 8];
  fetch_key(key, sizeof key);
  uint8_t secret[CHAN_SECRET_SIZE];
  rpl_err err = chan_regkey_decode(key, secret, fp);
  if (err)
    die("registration key: %s", rpl_strerror(err));
  char *csr = NULL, *pkey = NULL;
  SSL_CTX *ctx = NULL;
  struct conn *c = NULL;
  if ((err = chan_make_csr(ag->name, &csr, &pkey)) || (err = chan_client_ctx(fp, NULL, NULL, &ctx)) ||
      (err = conn_connect(ctx, O.appliance, 30000, &c)))
    die("%s: cannot register: %s", ag->name, rpl_strerror(err));
  struct proto_register m = {.hostname = {(const uint8_t *)ag->name, (uint32_t)strlen(ag->name)},
                             .csr_pem = {(const uint8_t *)csr, (uint32_t)strlen(csr)}};
  memcpy(m.secret, secret, CHAN_SECRET_SIZE);
  struct proto_buf b = {0};
  struct proto_frame f;
  struct proto_registered r;
  if ((err = proto_encode_register(&b, &m)) || (err = conn_send(c, &b)) || (err = conn_recv(c, &f, 30000)))
    die("%s: registration failed: %s", ag->name, rpl_strerror(err));
  if (f.type == PROTO_ERROR) {
    struct proto_error e;
    if (proto_decode_error(&f, &e) == RPL_OK)
      die("%s: the appliance refused the registration: %.*s", ag->name, (int)e.message.len, (const char *)e.message.ptr);
    die("%s: the appliance refused the registration", ag->name);
  }
  if ((err = proto_decode_registered(&f, &r)))
    die("%s: unexpected answer to REGISTER: %s", ag->name, rpl_strerror(err));
  char path[700], *cert = strndup((const char *)r.cert_pem.ptr, r.cert_pem.len);
  if (!cert)
    die("out of memory");
  uuid_unparse_lower(r.agent_id, ag->agent_text);
  agent_file(ag, "agent.key", path, sizeof path);
  write_text(path, pkey, 0600);
  agent_file(ag, "agent.crt", path, sizeof path);
  write_text(path, cert, 0644);
  char idline[64];
  snprintf(idline, sizeof idline, "%s\n", ag->agent_text);
  agent_file(ag, "agent.id", path, sizeof path);
  write_text(path, idline, 0644);
  OPENSSL_cleanse(secret, sizeof secret);
  OPENSSL_cleanse(pkey, strlen(pkey));
  proto_buf_free(&b);
  conn_close(c);
  SSL_CTX_free(ctx);
  free(csr);
  free(pkey);
  free(cert);
}

/* The agent's state: registered now if DIR holds none; its disk id and sparse disk file made once. */
static void agent_prepare(struct agent *ag, uint8_t fp[CHAN_FINGERPRINT_SIZE], bool *have_fp)
{
  char path[700];
  if (mkdir(ag->dir, 0700) && errno != EEXIST)
    die("cannot make %s: %s", ag->dir, strerror(errno));
  agent_file(ag, "agent.crt", path, sizeof path);
  if (access(path, R_OK)) {
    register_agent(ag, fp);
    *have_fp = true;
  }
  agent_file(ag, "agent.id", path, sizeof path);
  char *id = read_text(path);
  if (!id || (id[strcspn(id, "\n")] = '\0', uuid_parse(id, ag->agent_id)))
    die("%s: no agent id in %s", ag->name, path);
  snprintf(ag->agent_text, sizeof ag->agent_text, "%s", id);
  free(id);
  agent_file(ag, "disk.id", path, sizeof path);
  char *did = read_text(path);
  if (!did) {
    uuid_generate(ag->disk_id);
    uuid_unparse_lower(ag->disk_id, ag->disk_text);
    char line[64];
    snprintf(line, sizeof line, "%s\n", ag->disk_text);
    write_text(path, line, 0644);
  } else {
    did[strcspn(did, "\n")] = '\0';
    if (uuid_parse(did, ag->disk_id))
      die("%s: no disk id in %s", ag->name, path);
    snprintf(ag->disk_text, sizeof ag->disk_text, "%s", did);
    free(did);
  }
  agent_file(ag, "disk.img", ag->disk_path, sizeof ag->disk_path);
  ag->fd = open(ag->disk_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (ag->fd < 0 || ftruncate(ag->fd, (off_t)ag->size))
    die("cannot make the disk file %s: %s", ag->disk_path, strerror(errno));
}

static void agent_tls(struct agent *ag, const uint8_t fp[CHAN_FINGERPRINT_SIZE])
{
  char path[700];
  agent_file(ag, "agent.crt", path, sizeof path);
  char *cert = read_text(path);
  agent_file(ag, "agent.key", path, sizeof path);
  char *key = read_text(path);
  if (!cert || !key)
    die("%s: its certificate or key is missing", ag->name);
  rpl_err err = chan_client_ctx(fp, cert, key, &ag->ctx);
  if (err)
    die("%s: TLS context: %s", ag->name, rpl_strerror(err));
  OPENSSL_cleanse(key, strlen(key));
  free(key);
  free(cert);
}

/* ---- the simulated tracker ------------------------------------------------------------------ */

static uint64_t words_of(const struct agent *ag) { return (ag->nblocks + 63) / 64; }

/* The frozen set goes back into the current one: nothing of a cycle that was not ACKed is lost. L held. */
static void merge_back(struct agent *ag)
{
  uint64_t w = words_of(ag);
  bool any = false;
  for (uint64_t i = 0; i < w; i++) {
    any = any || ag->frozen[i];
    ag->cur[i] |= ag->frozen[i];
    ag->frozen[i] = 0;
  }
  if (any && ag->frozen_oldest_ms && (!ag->cur_oldest_ms || ag->frozen_oldest_ms < ag->cur_oldest_ms))
    ag->cur_oldest_ms = ag->frozen_oldest_ms;
  ag->frozen_oldest_ms = 0;
}

/* The flip: what was written so far is the cycle's set; later writes go into a new generation. */
static void flip(struct agent *ag)
{
  pthread_mutex_lock(&ag->lock);
  merge_back(ag);
  uint64_t *t = ag->frozen;
  ag->frozen = ag->cur;
  ag->cur = t;
  ag->frozen_oldest_ms = ag->cur_oldest_ms;
  ag->cur_oldest_ms = 0;
  ag->cur_bytes = 0;
  pthread_mutex_unlock(&ag->lock);
}

/* ---- sending -------------------------------------------------------------------------------- */

struct cycle_tx {
  struct agent *ag;
  struct conn *c;
  uint64_t cycle;
  struct proto_digest digest;
  struct proto_cycle_end end;
};

static bool all_zero(const uint8_t *p, size_t n)
{
  const uint64_t *w = (const uint64_t *)p;
  for (size_t i = 0; i < n / 8; i++)
    if (w[i])
      return false;
  return true;
}

static rpl_err send_range(struct cycle_tx *tx, uint64_t off, uint32_t len)
{
  struct agent *ag = tx->ag;
  size_t got = 0;
  while (got < len) {
    ssize_t n = pread(ag->fd, ag->rbuf + got, len - got, (off_t)(off + got));
    if (n <= 0)
      return RPL_E_IO;
    got += (size_t)n;
  }
  struct proto_extent m = {.cycle = tx->cycle, .offset = off, .length = len};
  memcpy(m.disk_id, ag->disk_id, PROTO_ID_SIZE);
  proto_hash128(ag->rbuf, len, m.hash);
  if (all_zero(ag->rbuf, len)) {
    m.codec = PROTO_CODEC_ZERO;
  } else if (O.zstd) {
    size_t z = ZSTD_compressCCtx(ag->zctx, ag->zbuf, ag->zcap, ag->rbuf, len, 1);
    if (!ZSTD_isError(z) && z < len) {
      m.codec = PROTO_CODEC_ZSTD;
      m.payload = (struct proto_bytes){ag->zbuf, (uint32_t)z};
    } else {
      m.codec = PROTO_CODEC_NONE;
      m.payload = (struct proto_bytes){ag->rbuf, len};
    }
  } else {
    m.codec = PROTO_CODEC_NONE;
    m.payload = (struct proto_bytes){ag->rbuf, len};
  }
  rpl_err err = conn_send_extent(tx->c, &m);
  if (err)
    return err;
  proto_digest_update(&tx->digest, m.hash);
  tx->end.extents++;
  tx->end.raw_bytes += len;
  tx->end.payload_bytes += m.payload.len;
  return RPL_OK;
}

/* The frozen set's runs of blocks, as extents of at most MAX_EXTENT; the whole disk for a resync. */
static rpl_err send_set(struct cycle_tx *tx, bool full)
{
  struct agent *ag = tx->ag;
  if (full) {
    for (uint64_t off = 0; off < ag->size; off += MAX_EXTENT) {
      uint32_t len = ag->size - off < MAX_EXTENT ? (uint32_t)(ag->size - off) : MAX_EXTENT;
      rpl_err err = send_range(tx, off, len);
      if (err)
        return err;
    }
    return RPL_OK;
  }
  uint64_t b = 0;
  while (b < ag->nblocks) {
    if (!(ag->frozen[b / 64] >> (b % 64) & 1)) {
      b = ag->frozen[b / 64] >> (b % 64) ? b + 1 : (b / 64 + 1) * 64;
      continue;
    }
    uint64_t start = b;
    while (b < ag->nblocks && (ag->frozen[b / 64] >> (b % 64) & 1) && (b - start) * BLOCK < MAX_EXTENT)
      b++;
    rpl_err err = send_range(tx, start * BLOCK, (uint32_t)((b - start) * BLOCK));
    if (err)
      return err;
  }
  return RPL_OK;
}

static rpl_err send_out(struct agent *ag, struct conn *c)
{
  rpl_err err = conn_send(c, &ag->out);
  proto_buf_reset(&ag->out);
  return err;
}

/* The ACK or NACK of the cycle; heartbeats and point answers skipped. *acked, or *nack_code. */
static rpl_err wait_answer(struct agent *ag, struct conn *c, uint64_t cycle, bool *acked, uint32_t *nack_code)
{
  *acked = false;
  *nack_code = 0;
  for (;;) {
    struct proto_frame f;
    rpl_err err = conn_recv(c, &f, CONN_IO_TIMEOUT_MS);
    if (err)
      return err;
    if (f.type == PROTO_HEARTBEAT || f.type == PROTO_POINT)
      continue;
    if (f.type == PROTO_ACK) {
      struct proto_ack m;
      if ((err = proto_decode_ack(&f, &m)))
        return err;
      if (memcmp(m.disk_id, ag->disk_id, PROTO_ID_SIZE) || m.cycle != cycle)
        return RPL_E_PROTO_UNEXPECTED;
      *acked = true;
      return RPL_OK;
    }
    if (f.type == PROTO_NACK) {
      struct proto_nack m;
      if ((err = proto_decode_nack(&f, &m)))
        return err;
      *nack_code = m.reason;
      return RPL_OK;
    }
    return RPL_E_PROTO_UNEXPECTED;
  }
}

static rpl_err run_cycle(struct agent *ag, struct conn *c, const struct proto_cycle_start *m)
{
  if (memcmp(m->disk_id, ag->disk_id, PROTO_ID_SIZE)) {
    struct proto_nack nk = {.cycle = m->cycle, .reason = RPL_E_NOT_FOUND};
    memcpy(nk.disk_id, m->disk_id, PROTO_ID_SIZE);
    rpl_err err = proto_encode_nack(&ag->out, &nk);
    return err ? err : send_out(ag, c);
  }
  bool full = m->kind == PROTO_CYCLE_RESYNC, point = proto_cycle_is_point(m->kind);
  if (point) { /* the writer stays off the disk from the flip to the end of the read */
    pthread_mutex_lock(&ag->lock);
    ag->hold = true;
    pthread_mutex_unlock(&ag->lock);
  }
  flip(ag); /* a resync reads the whole disk, which covers the set too */
  struct cycle_tx tx = {.ag = ag, .c = c, .cycle = m->cycle};
  proto_digest_init(&tx.digest);
  rpl_err err = send_set(&tx, full);
  if (point) {
    pthread_mutex_lock(&ag->lock);
    ag->hold = false;
    pthread_mutex_unlock(&ag->lock);
  }
  if (!err) {
    tx.end.cycle = m->cycle;
    tx.end.consistency = point ? PROTO_CRASH_CONSISTENT : PROTO_FUZZY;
    memcpy(tx.end.disk_id, ag->disk_id, PROTO_ID_SIZE);
    proto_digest_final(&tx.digest, tx.end.digest);
    if (!(err = proto_encode_cycle_end(&ag->out, &tx.end)))
      err = send_out(ag, c);
  }
  bool acked = false;
  uint32_t nack_code = 0;
  if (!err)
    err = wait_answer(ag, c, m->cycle, &acked, &nack_code);
  pthread_mutex_lock(&ag->lock);
  if (!err && acked) {
    memset(ag->frozen, 0, words_of(ag) * sizeof *ag->frozen);
    ag->frozen_oldest_ms = 0;
    ag->cycles++;
    ag->plain_cycles += !full;
    ag->last_cycle = m->cycle;
    ag->acked_raw += tx.end.raw_bytes;
    if (atomic_load(&churning) && !full)
      ag->acked_raw_churn += tx.end.raw_bytes;
    if (atomic_load(&churn_started) && !full) {
      ag->acked_raw_since += tx.end.raw_bytes;
      ag->last_ack_ms = rpl_mono_ms();
    }
  } else {
    merge_back(ag);
    if (!err)
      ag->nacks++;
  }
  if (nack_code)
    snprintf(ag->last_error, sizeof ag->last_error, "cycle %" PRIu64 " refused: %s", m->cycle,
             rpl_errname((rpl_err)nack_code));
  pthread_mutex_unlock(&ag->lock);
  return err;
}

/* ---- the session ---------------------------------------------------------------------------- */

static void connect_slot(bool take)
{
  pthread_mutex_lock(&connect_lock);
  if (take) {
    while (connect_busy >= O.connect_slots)
      pthread_cond_wait(&connect_cond, &connect_lock);
    connect_busy++;
  } else {
    connect_busy--;
    pthread_cond_signal(&connect_cond);
  }
  pthread_mutex_unlock(&connect_lock);
}

/* TLS, HELLO both ways, DISK. */
/* The message of an ERROR frame from the appliance, kept as the agent's last error. */
static void note_error_frame(struct agent *ag, const char *what, const struct proto_frame *f)
{
  struct proto_error e;
  if (proto_decode_error(f, &e) != RPL_OK)
    return;
  pthread_mutex_lock(&ag->lock);
  snprintf(ag->last_error, sizeof ag->last_error, "%s: %.*s", what, (int)e.message.len, (const char *)e.message.ptr);
  pthread_mutex_unlock(&ag->lock);
}

static rpl_err session_open(struct agent *ag, struct conn **out)
{
  connect_slot(true);
  rpl_err err = conn_connect(ag->ctx, O.appliance, 10000, out);
  struct proto_hello h = {.version_min = PROTO_VERSION_MIN, .version_max = PROTO_VERSION_MAX,
                          .capabilities = PROTO_CAP_ZSTD | PROTO_CAP_CBT_EBPF,
                          .hostname = {(const uint8_t *)ag->name, (uint32_t)strlen(ag->name)}};
  memcpy(h.agent_id, ag->agent_id, PROTO_ID_SIZE);
  struct proto_frame f;
  if (!err && !(err = proto_encode_hello(&ag->out, &h)) && !(err = send_out(ag, *out)))
    err = conn_recv(*out, &f, CONN_IO_TIMEOUT_MS);
  connect_slot(false);
  if (err)
    return err;
  if (f.type == PROTO_ERROR) {
    note_error_frame(ag, "session refused", &f);
    return RPL_E_PERMISSION;
  }
  struct proto_hello peer;
  uint16_t v;
  if ((err = proto_decode_hello(&f, &peer)) ||
      (err = proto_negotiate(PROTO_VERSION_MIN, PROTO_VERSION_MAX, peer.version_min, peer.version_max, &v, NULL, 0)))
    return err;
  struct proto_disk d = {.size_bytes = ag->size, .sector_size = 512,
                         .name = {(const uint8_t *)ag->disk_path, (uint32_t)strlen(ag->disk_path)}};
  memcpy(d.disk_id, ag->disk_id, PROTO_ID_SIZE);
  if ((err = proto_encode_disk(&ag->out, &d)))
    return err;
  return send_out(ag, *out);
}

static rpl_err heartbeat(struct agent *ag, struct conn *c)
{
  pthread_mutex_lock(&ag->lock);
  uint64_t dirty = ag->cur_bytes;
  pthread_mutex_unlock(&ag->lock);
  struct proto_heartbeat hb = {.sequence = ++ag->hb_seq, .time_ns = rpl_unix_ms() * 1000000ull, .dirty_bytes = dirty};
  rpl_err err = proto_encode_heartbeat(&ag->out, &hb);
  return err ? err : send_out(ag, c);
}

/* Frames until the connection breaks or the fleet stops (RPL_OK then). */
static rpl_err serve(struct agent *ag, struct conn *c)
{
  uint64_t last_send = rpl_mono_ms();
  while (!atomic_load(&stop_all)) {
    if (!conn_pending(c)) {
      struct pollfd p = {.fd = conn_fd(c), .events = POLLIN};
      int r = poll(&p, 1, 500);
      if (r < 0 && errno != EINTR)
        return RPL_E_IO;
      if (rpl_mono_ms() - last_send >= HEARTBEAT_MS) {
        rpl_err err = heartbeat(ag, c);
        if (err)
          return err;
        last_send = rpl_mono_ms();
      }
      if (r <= 0)
        continue;
    }
    struct proto_frame f;
    rpl_err err = conn_recv(c, &f, CONN_IO_TIMEOUT_MS);
    if (err)
      return err;
    switch (f.type) {
    case PROTO_HEARTBEAT:
    case PROTO_POINT:
      break;
    case PROTO_CYCLE_START: {
      struct proto_cycle_start m;
      if ((err = proto_decode_cycle_start(&f, &m)) || (err = run_cycle(ag, c, &m)))
        return err;
      last_send = rpl_mono_ms();
      break;
    }
    case PROTO_ERROR:
      note_error_frame(ag, "the appliance ended the session", &f);
      return RPL_E_PROTO_UNEXPECTED;
    default:
      return RPL_E_PROTO_UNEXPECTED;
    }
  }
  return RPL_OK;
}

static void *session_main(void *arg)
{
  struct agent *ag = arg;
  unsigned backoff = BACKOFF_MIN_MS;
  uint64_t rng = 0x9E3779B97F4A7C15ull ^ ((uint64_t)ag->idx << 17);
  bool first = true;
  while (!atomic_load(&stop_all)) {
    struct conn *c = NULL;
    rpl_err err = session_open(ag, &c);
    if (!err) {
      pthread_mutex_lock(&ag->lock);
      ag->connected = true;
      ag->reconnects += !first;
      pthread_mutex_unlock(&ag->lock);
      first = false;
      backoff = BACKOFF_MIN_MS;
      err = serve(ag, c);
    }
    proto_buf_reset(&ag->out);
    conn_close(c);
    pthread_mutex_lock(&ag->lock);
    ag->connected = false;
    merge_back(ag); /* an unanswered cycle is sent again */
    if (err && !ag->last_error[0])
      snprintf(ag->last_error, sizeof ag->last_error, "session: %s", rpl_errname(err));
    ag->refused_connects += err != RPL_OK;
    pthread_mutex_unlock(&ag->lock);
    if (atomic_load(&stop_all))
      break;
    uint64_t until = rpl_mono_ms() + backoff;
    while (!atomic_load(&stop_all) && rpl_mono_ms() < until)
      usleep(50000);
    backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
    backoff -= (unsigned)(xorshift(&rng) % (backoff / 4 + 1)); /* no lockstep after an appliance restart */
  }
  return NULL;
}

/* ---- the churn and the sampler -------------------------------------------------------------- */

/* Half random bytes, half a repeated pattern: about as compressible as fio's 50 %. */
static void fill(uint8_t *buf, size_t len, uint64_t *rng)
{
  for (size_t i = 0; i < len; i += BLOCK) {
    uint64_t *w = (uint64_t *)(buf + i);
    for (size_t k = 0; k < BLOCK / 16; k++)
      w[k] = xorshift(rng);
    uint64_t pat = xorshift(rng);
    for (size_t k = BLOCK / 16; k < BLOCK / 8; k++)
      w[k] = pat;
  }
}

static void churn_write(struct agent *ag, uint8_t *buf)
{
  uint32_t blocks = 1 + (uint32_t)(xorshift(&ag->rng) % 16); /* 4 KiB .. 64 KiB */
  uint64_t first = xorshift(&ag->rng) % (ag->nblocks - blocks + 1);
  size_t len = (size_t)blocks * BLOCK;
  fill(buf, len, &ag->rng);
  pthread_mutex_lock(&ag->lock);
  if (pwrite(ag->fd, buf, len, (off_t)(first * BLOCK)) != (ssize_t)len)
    die("%s: write to its disk file failed: %s", ag->name, strerror(errno));
  for (uint64_t b = first; b < first + blocks; b++)
    ag->cur[b / 64] |= 1ull << (b % 64);
  if (!ag->cur_oldest_ms)
    ag->cur_oldest_ms = rpl_mono_ms();
  ag->cur_bytes += len;
  ag->written += len;
  pthread_mutex_unlock(&ag->lock);
  ag->budget -= (double)len;
}

static void *churn_main(void *arg)
{
  (void)arg;
  uint8_t *buf = aligned_alloc(4096, 16 * BLOCK);
  if (!buf)
    die("out of memory");
  double per_ms = O.rate_mb * 1e6 / 1000.0;
  uint64_t last = rpl_mono_ms();
  while (!atomic_load(&stop_churn)) {
    usleep(TICK_MS * 1000);
    uint64_t now = rpl_mono_ms();
    double add = per_ms * (double)(now - last);
    last = now;
    for (unsigned i = 0; i < O.agents; i++) {
      struct agent *ag = &A[i];
      pthread_mutex_lock(&ag->lock);
      bool hold = ag->hold;
      pthread_mutex_unlock(&ag->lock);
      ag->budget += add;
      if (ag->budget > 4e6)
        ag->budget = 4e6; /* a long hold does not become a burst */
      while (!hold && ag->budget >= 16.0 * BLOCK)
        churn_write(ag, buf);
    }
  }
  free(buf);
  return NULL;
}

struct proc_sample {
  uint64_t ticks, rss_kb, hwm_kb, threads;
  bool ok;
};

static struct proc_sample proc_read(int pid)
{
  struct proc_sample s = {0};
  if (pid <= 0)
    return s;
  char path[64], *text;
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  if (!(text = read_text(path)))
    return s;
  char *p = strrchr(text, ')');
  unsigned long ut = 0, st = 0;
  /* after "pid (comm)": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime */
  if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) == 2) {
    s.ticks = ut + st;
    s.ok = true;
  }
  free(text);
  snprintf(path, sizeof path, "/proc/%d/status", pid);
  if (!(text = read_text(path)))
    return s;
  for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
    unsigned long v;
    if (sscanf(line, "VmRSS: %lu", &v) == 1)
      s.rss_kb = v;
    else if (sscanf(line, "VmHWM: %lu", &v) == 1)
      s.hwm_kb = v;
    else if (sscanf(line, "Threads: %lu", &v) == 1)
      s.threads = v;
  }
  free(text);
  return s;
}

static uint64_t ap_rss_max_kb, ap_threads_max, ap_fds_max;

/* Open file descriptors of pid (0 when unreadable). */
static uint64_t proc_fds(int pid)
{
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/fd", pid);
  DIR *d = pid > 0 ? opendir(path) : NULL;
  uint64_t n = 0;
  if (!d)
    return 0;
  for (struct dirent *e; (e = readdir(d));)
    n += e->d_name[0] != '.';
  closedir(d);
  return n;
}

/* Once a second while the churn runs: each agent's lag, and the appliance's memory. */
static void sample_second(void)
{
  uint64_t now = rpl_mono_ms();
  for (unsigned i = 0; i < O.agents; i++) {
    struct agent *ag = &A[i];
    pthread_mutex_lock(&ag->lock);
    uint64_t oldest = ag->frozen_oldest_ms;
    if (ag->cur_oldest_ms && (!oldest || ag->cur_oldest_ms < oldest))
      oldest = ag->cur_oldest_ms;
    if (ag->nlag < (size_t)O.duration_s + 8)
      ag->lag_samples[ag->nlag++] = oldest ? (uint32_t)((now - oldest) / 1000) : 0;
    pthread_mutex_unlock(&ag->lock);
  }
  struct proc_sample s = proc_read(O.ap_pid);
  if (s.rss_kb > ap_rss_max_kb)
    ap_rss_max_kb = s.rss_kb;
  if (s.threads > ap_threads_max)
    ap_threads_max = s.threads;
  uint64_t fds = proc_fds(O.ap_pid);
  if (fds > ap_fds_max)
    ap_fds_max = fds;
}

/* ---- report --------------------------------------------------------------------------------- */

static int cmp_u32(const void *a, const void *b)
{
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}

/* The q-quantile (nearest rank) of n sorted values. */
static uint32_t quantile(const uint32_t *v, size_t n, double q)
{
  if (!n)
    return 0;
  size_t k = (size_t)(q * (double)n + 0.999999);
  if (k < 1)
    k = 1;
  return v[k > n ? n - 1 : k - 1];
}

static void usage(void)
{
  fprintf(stderr, "usage: fleet_gen --appliance HOST:PORT --dir DIR --agents N --key-cmd CMD [--size MIB] [--rate MB_S]\n"
                  "                 [--duration S] [--drain-timeout S] [--ap-pid PID] [--no-zstd] [--json FILE] [--seed N]\n"
                  "                 [--connect-slots N]\n");
  exit(2);
}

static void parse(int argc, char **argv)
{
  O = (struct opts){.size_mib = 64, .rate_mb = 1.0, .duration_s = 30, .drain_s = 300, .zstd = true, .seed = 1,
                    .connect_slots = CONNECT_SLOTS};
  static const struct option opts[] = {
    {"appliance", required_argument, NULL, 'a'}, {"dir", required_argument, NULL, 'd'},
    {"agents", required_argument, NULL, 'n'},    {"key-cmd", required_argument, NULL, 'k'},
    {"size", required_argument, NULL, 's'},      {"rate", required_argument, NULL, 'r'},
    {"duration", required_argument, NULL, 't'},  {"drain-timeout", required_argument, NULL, 'D'},
    {"ap-pid", required_argument, NULL, 'p'},    {"no-zstd", no_argument, NULL, 'Z'},
    {"json", required_argument, NULL, 'j'},      {"seed", required_argument, NULL, 'S'},
    {"connect-slots", required_argument, NULL, 'c'},
    {0, 0, 0, 0}};
  int c;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
    case 'a': O.appliance = optarg; break;
    case 'd': O.dir = optarg; break;
    case 'n': O.agents = (unsigned)strtoul(optarg, NULL, 10); break;
    case 'k': O.key_cmd = optarg; break;
    case 's': O.size_mib = (unsigned)strtoul(optarg, NULL, 10); break;
    case 'r': O.rate_mb = strtod(optarg, NULL); break;
    case 't': O.duration_s = (unsigned)strtoul(optarg, NULL, 10); break;
    case 'D': O.drain_s = (unsigned)strtoul(optarg, NULL, 10); break;
    case 'p': O.ap_pid = (int)strtol(optarg, NULL, 10); break;
    case 'Z': O.zstd = false; break;
    case 'j': O.json = optarg; break;
    case 'S': O.seed = (unsigned)strtoul(optarg, NULL, 10); break;
    case 'c': O.connect_slots = (unsigned)strtoul(optarg, NULL, 10); break;
    default: usage();
    }
  }
  if (!O.appliance || !O.dir || !O.key_cmd || !O.agents || O.agents > 4096 || O.size_mib < 1 ||
      O.size_mib > 65536 || O.rate_mb < 0 || !O.connect_slots || optind != argc)
    usage();
}

static void agent_init(struct agent *ag, unsigned i)
{
  ag->idx = i;
  snprintf(ag->name, sizeof ag->name, "fleet-%03u", i);
  snprintf(ag->dir, sizeof ag->dir, "%s/agent-%03u", O.dir, i);
  ag->size = (uint64_t)O.size_mib << 20;
  ag->nblocks = ag->size / BLOCK;
  pthread_mutex_init(&ag->lock, NULL);
  ag->cur = calloc(words_of(ag), sizeof *ag->cur);
  ag->frozen = calloc(words_of(ag), sizeof *ag->frozen);
  ag->lag_samples = calloc((size_t)O.duration_s + 8, sizeof *ag->lag_samples);
  ag->rbuf = aligned_alloc(4096, MAX_EXTENT);
  ag->zcap = ZSTD_compressBound(MAX_EXTENT);
  ag->zbuf = malloc(ag->zcap);
  ag->zctx = ZSTD_createCCtx();
  ag->rng = ((uint64_t)O.seed << 32) ^ (0xA5A5A5A5ull + i * 0x100000001B3ull) ^ 0x9E3779B97F4A7C15ull;
  if (!ag->cur || !ag->frozen || !ag->lag_samples || !ag->rbuf || !ag->zbuf || !ag->zctx)
    die("out of memory");
}

/* True when every write of the agent is in an ACKed cycle. */
static bool agent_drained(struct agent *ag)
{
  pthread_mutex_lock(&ag->lock);
  bool d = ag->cur_oldest_ms == 0 && ag->frozen_oldest_ms == 0 && ag->cycles > 0;
  pthread_mutex_unlock(&ag->lock);
  return d;
}

int main(int argc, char **argv)
{
  parse(argc, argv);
  signal(SIGPIPE, SIG_IGN);
  if (mkdir(O.dir, 0700) && errno != EEXIST)
    die("cannot make %s: %s", O.dir, strerror(errno));
  A = calloc(O.agents, sizeof *A);
  if (!A)
    die("out of memory");
  uint8_t fp[CHAN_FINGERPRINT_SIZE];
  bool have_fp = false;
  char fppath[600];
  snprintf(fppath, sizeof fppath, "%s/appliance.fingerprint", O.dir);
  uint64_t t_reg = rpl_mono_ms();
  for (unsigned i = 0; i < O.agents; i++) {
    agent_init(&A[i], i);
    agent_prepare(&A[i], fp, &have_fp);
  }
  if (have_fp) {
    char hex[2 * CHAN_FINGERPRINT_SIZE + 2];
    for (int i = 0; i < CHAN_FINGERPRINT_SIZE; i++)
      snprintf(hex + 2 * i, 3, "%02x", fp[i]);
    strcat(hex, "\n");
    write_text(fppath, hex, 0644);
  } else {
    char *hex = read_text(fppath);
    if (!hex || strlen(hex) < 2 * CHAN_FINGERPRINT_SIZE)
      die("no appliance fingerprint in %s", fppath);
    for (int i = 0; i < CHAN_FINGERPRINT_SIZE; i++)
      sscanf(hex + 2 * i, "%2hhx", &fp[i]);
    free(hex);
  }
  for (unsigned i = 0; i < O.agents; i++)
    agent_tls(&A[i], fp);
  fprintf(stderr, "fleet_gen: %u agents ready (registration %.1f s); connecting\n", O.agents,
          (double)(rpl_mono_ms() - t_reg) / 1000.0);

  char mpath[600];
  snprintf(mpath, sizeof mpath, "%s/manifest", O.dir);
  FILE *mf = fopen(mpath, "we");
  if (!mf)
    die("cannot write %s", mpath);
  for (unsigned i = 0; i < O.agents; i++)
    fprintf(mf, "%s %s\n", A[i].disk_text, A[i].disk_path);
  fclose(mf);

  pthread_t *th = calloc(O.agents, sizeof *th), churn;
  if (!th)
    die("out of memory");
  for (unsigned i = 0; i < O.agents; i++)
    if (pthread_create(&th[i], NULL, session_main, &A[i]))
      die("cannot start a session thread");

  /* The churn starts once every disk finished its initial sync (each has an ACKed cycle). */
  uint64_t t_sync = rpl_mono_ms();
  for (;;) {
    unsigned synced = 0;
    for (unsigned i = 0; i < O.agents; i++) {
      pthread_mutex_lock(&A[i].lock);
      synced += A[i].cycles > 0;
      pthread_mutex_unlock(&A[i].lock);
    }
    if (synced == O.agents)
      break;
    if (rpl_mono_ms() - t_sync > (uint64_t)O.drain_s * 1000)
      die("only %u of %u disks finished their initial sync in %u s", synced, O.agents, O.drain_s);
    usleep(100000);
  }
  double sync_s = (double)(rpl_mono_ms() - t_sync) / 1000.0;
  fprintf(stderr, "fleet_gen: initial sync of %u disks done in %.1f s; churn %.2f MB/s each for %u s\n", O.agents,
          sync_s, O.rate_mb, O.duration_s);

  struct proc_sample p0 = proc_read(O.ap_pid);
  churn_t0_ms = rpl_mono_ms();
  atomic_store(&churning, 1);
  atomic_store(&churn_started, 1);
  if (pthread_create(&churn, NULL, churn_main, NULL))
    die("cannot start the churn thread");
  for (unsigned s = 1; s <= O.duration_s; s++) {
    uint64_t until = churn_t0_ms + (uint64_t)s * 1000;
    uint64_t now = rpl_mono_ms();
    if (until > now)
      usleep((useconds_t)((until - now) * 1000));
    sample_second();
  }
  atomic_store(&stop_churn, 1);
  pthread_join(churn, NULL);
  churn_t1_ms = rpl_mono_ms();
  atomic_store(&churning, 0);
  struct proc_sample p1 = proc_read(O.ap_pid);

  /* Drain: every write in an ACKed cycle. */
  uint64_t t_drain = rpl_mono_ms();
  unsigned drained = 0;
  while (rpl_mono_ms() - t_drain < (uint64_t)O.drain_s * 1000) {
    drained = 0;
    for (unsigned i = 0; i < O.agents; i++)
      drained += agent_drained(&A[i]);
    if (drained == O.agents)
      break;
    usleep(100000);
  }
  double drain_s = (double)(rpl_mono_ms() - t_drain) / 1000.0;
  struct proc_sample p2 = proc_read(O.ap_pid);
  atomic_store(&stop_all, 1);
  for (unsigned i = 0; i < O.agents; i++)
    pthread_join(th[i], NULL);

  /* Report. */
  double el = (double)(churn_t1_ms - churn_t0_ms) / 1000.0;
  long tck = sysconf(_SC_CLK_TCK);
  size_t all_n = 0;
  uint32_t *all = calloc((size_t)O.agents * (O.duration_s + 8), sizeof *all), *p99s = calloc(O.agents, sizeof *p99s);
  if (!all || !p99s)
    die("out of memory");
  uint64_t acked_since = 0, last_ack = churn_t1_ms;
  uint64_t written = 0, acked_churn = 0, cycles_total = 0, cycles_min = UINT64_MAX, reconnects = 0, nacks = 0;
  uint32_t lag_max = 0;
  printf("%-9s %-36s %7s %7s %7s %7s %9s %9s %6s %5s %s\n", "agent", "disk", "cycles", "lag50", "lag99", "lagmax",
         "wrote MB", "acked MB", "nacks", "recon", "drained");
  for (unsigned i = 0; i < O.agents; i++) {
    struct agent *ag = &A[i];
    qsort(ag->lag_samples, ag->nlag, sizeof *ag->lag_samples, cmp_u32);
    memcpy(all + all_n, ag->lag_samples, ag->nlag * sizeof *all);
    all_n += ag->nlag;
    uint32_t p50 = quantile(ag->lag_samples, ag->nlag, 0.50), p99 = quantile(ag->lag_samples, ag->nlag, 0.99),
             mx = ag->nlag ? ag->lag_samples[ag->nlag - 1] : 0;
    p99s[i] = p99;
    if (mx > lag_max)
      lag_max = mx;
    bool d = agent_drained(ag);
    printf("%-9s %-36s %7" PRIu64 " %7u %7u %7u %9.1f %9.1f %6" PRIu64 " %5" PRIu64 " %s%s%s\n", ag->name, ag->disk_text,
           ag->plain_cycles, p50, p99, mx, (double)ag->written / 1e6, (double)ag->acked_raw / 1e6, ag->nacks,
           ag->reconnects, d ? "yes" : "NO", ag->last_error[0] ? "  last error: " : "", ag->last_error);
    written += ag->written;
    acked_churn += ag->acked_raw_churn;
    acked_since += ag->acked_raw_since;
    if (ag->last_ack_ms > last_ack)
      last_ack = ag->last_ack_ms;
    cycles_total += ag->plain_cycles;
    if (ag->plain_cycles < cycles_min)
      cycles_min = ag->plain_cycles;
    reconnects += ag->reconnects;
    nacks += ag->nacks;
  }
  qsort(all, all_n, sizeof *all, cmp_u32);
  qsort(p99s, O.agents, sizeof *p99s, cmp_u32);
  double cpu_pct = p0.ok && p1.ok ? 100.0 * (double)(p1.ticks - p0.ticks) / (double)tck / el : -1;
  char json[2048];
  snprintf(json, sizeof json,
           "{\"agents\": %u, \"size_mib\": %u, \"rate_mb_s\": %.3f, \"zstd\": %s, \"duration_s\": %.1f, "
           "\"initial_sync_s\": %.1f, \"drain_s\": %.1f, \"drained\": %u, "
           "\"churn_mb_s\": %.2f, \"committed_mb_s\": %.2f, \"committed_window_mb_s\": %.2f, \"committed_mb\": %.1f, \"cycles_total\": %" PRIu64 ", \"cycles_min\": %" PRIu64 ", "
           "\"lag_p50_s\": %u, \"lag_p99_s\": %u, \"lag_max_s\": %u, \"lag_p99_worst_agent_s\": %u, "
           "\"nacks\": %" PRIu64 ", \"reconnects\": %" PRIu64 ", "
           "\"ap_cpu_pct\": %.1f, \"ap_cpu_pct_per_agent\": %.3f, \"ap_rss_max_kb\": %" PRIu64 ", \"ap_hwm_kb\": %" PRIu64
           ", \"ap_rss_kb_per_agent\": %.0f, \"ap_threads_max\": %" PRIu64 ", \"ap_fds_max\": %" PRIu64 "}",
           O.agents, O.size_mib, O.rate_mb, O.zstd ? "true" : "false", el, sync_s, drain_s, drained,
           (double)written / 1e6 / el, (double)acked_since / 1e6 / ((double)(last_ack - churn_t0_ms) / 1000.0),
           (double)acked_churn / 1e6 / el, (double)acked_since / 1e6, cycles_total, cycles_min == UINT64_MAX ? 0 : cycles_min,
           quantile(all, all_n, 0.50), quantile(all, all_n, 0.99), lag_max, O.agents ? p99s[O.agents - 1] : 0, nacks,
           reconnects, cpu_pct, cpu_pct >= 0 ? cpu_pct / O.agents : -1, ap_rss_max_kb, p2.hwm_kb,
           O.agents ? (double)ap_rss_max_kb / O.agents : 0, ap_threads_max, ap_fds_max);
  printf("FLEET_JSON %s\n", json);
  if (O.json) {
    char line[2100];
    snprintf(line, sizeof line, "%s\n", json);
    write_text(O.json, line, 0644);
  }
  for (unsigned i = 0; i < O.agents; i++) {
    struct agent *ag = &A[i];
    SSL_CTX_free(ag->ctx);
    close(ag->fd);
    proto_buf_free(&ag->out);
    ZSTD_freeCCtx(ag->zctx);
    free(ag->cur);
    free(ag->frozen);
    free(ag->lag_samples);
    free(ag->rbuf);
    free(ag->zbuf);
  }
  free(all);
  free(p99s);
  free(th);
  free(A);
  return drained == O.agents ? 0 : 1;
}
