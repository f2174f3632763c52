/* hostile_agent.c - Description: an agent with a valid certificate (a real `mobility-agent register`
 * made its state directory) that speaks the real protocol and then misbehaves, one scenario per
 * subcommand; each states what the appliance must answer and fails (exit 1) when it does not.
 * Driven by hostile_agent.sh, which checks the appliance, the victim agent and the catalog around it.
 *
 *   hostile_agent STATE disks N           N DISK frames of new random ids, twice (two sessions)
 *   hostile_agent STATE sizes             a disk shrunk, grown past any storage, new huge disks
 *   hostile_agent STATE hashes            HASHES malformed, in a plain cycle, outside a cycle
 *   hostile_agent STATE nack DISK       NACKs of cycle 0, of a cycle not open, of another agent's DISK
 *   hostile_agent STATE points            POINT_REQUESTs naming a disk twice, unknown disks, too many
 *   hostile_agent STATE order ROUNDS      frames out of order, each on its own connection, ROUNDS times
 *   hostile_agent STATE steal DISK AGENT  another agent's disk id (and agent id) claimed every way
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uuid/uuid.h>

#include "agent_state.h"
#include "channel.h"
#include "conn.h"
#include "file_io.h"
#include "proto.h"
#include "rpl_clock.h"
#include "state_files.h"

#define MIB (1ull << 20)
#define TIB (1ull << 40)
#define WAIT_MS 20000 /* the appliance answers within this (its RPO is under a second in the test) */

struct hostile {
  struct agent_state st;
  SSL_CTX *ctx;
  struct conn *c;
  struct proto_buf out;
  uint8_t agent[PROTO_ID_SIZE];
  bool serve;                    /* answer CYCLE_START with an empty cycle at once */
  bool quiet;                    /* a repeated round: only failures are said */
  /* What the appliance sent last, by type (fixed fields only: the frame's buffer is reused). */
  struct proto_cycle_start cs;
  struct proto_ack ack;
  struct proto_nack nack;
  struct proto_need need;
  struct proto_point point;
  uint32_t error_code;
  uint64_t served_disk_cycles[256][2]; /* (first 8 id bytes, cycle) served, so a repeated start is not */
  size_t nserved;
  unsigned distinct_disks;       /* disks a cycle was started for */
  uint8_t started_ids[1024][PROTO_ID_SIZE];
};

__attribute__((format(printf, 1, 2), noreturn)) static void die(const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  fputs("FAIL: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  exit(1);
}

static void check(rpl_err err, const char *what)
{
  if (err)
    die("%s: %s", what, rpl_strerror(err));
}

static void idtext(const uint8_t id[PROTO_ID_SIZE], char out[37]) { uuid_unparse_lower(id, out); }

static void send_out(struct hostile *h)
{
  rpl_err err = conn_send(h->c, &h->out);
  proto_buf_reset(&h->out);
  check(err, "sending");
}

/* Connects and says HELLO as `as` (the certificate's agent unless another id is given); RPL_OK
 * when the appliance answered HELLO, else what it said (ERROR's code) or the connection's error. */
static rpl_err h_connect_as(struct hostile *h, const uint8_t as[PROTO_ID_SIZE])
{
  rpl_err err = conn_connect(h->ctx, h->st.appliance, 10000, &h->c);
  if (err)
    return err;
  char host[] = "hostile";
  struct proto_hello m = {.version_min = PROTO_VERSION_MIN, .version_max = PROTO_VERSION_MAX,
                          .capabilities = PROTO_CAP_ZSTD, .hostname = {(const uint8_t *)host, sizeof host - 1}};
  memcpy(m.agent_id, as ? as : h->agent, PROTO_ID_SIZE);
  check(proto_encode_hello(&h->out, &m), "HELLO");
  send_out(h);
  struct proto_frame f;
  if ((err = conn_recv(h->c, &f, WAIT_MS)))
    return err;
  if (f.type == PROTO_ERROR) {
    struct proto_error e;
    check(proto_decode_error(&f, &e), "ERROR");
    printf("  the appliance refused HELLO: %.*s\n", (int)e.message.len, (const char *)e.message.ptr);
    return (rpl_err)e.code;
  }
  struct proto_hello peer;
  return proto_decode_hello(&f, &peer);
}

static void h_connect(struct hostile *h)
{
  check(h_connect_as(h, NULL), "connecting with the agent's certificate");
}

static void h_close(struct hostile *h)
{
  conn_close(h->c);
  h->c = NULL;
}

static void empty_cycle_end(struct hostile *h, const uint8_t disk[PROTO_ID_SIZE], uint64_t cycle)
{
  struct proto_cycle_end e = {.cycle = cycle, .consistency = PROTO_CRASH_CONSISTENT};
  memcpy(e.disk_id, disk, PROTO_ID_SIZE);
  struct proto_digest d;
  proto_digest_init(&d);
  proto_digest_final(&d, e.digest);
  check(proto_encode_cycle_end(&h->out, &e), "CYCLE_END");
  send_out(h);
}

static void note_started(struct hostile *h, const uint8_t id[PROTO_ID_SIZE])
{
  for (unsigned i = 0; i < h->distinct_disks; i++)
    if (!memcmp(h->started_ids[i], id, PROTO_ID_SIZE))
      return;
  if (h->distinct_disks < sizeof h->started_ids / sizeof h->started_ids[0])
    memcpy(h->started_ids[h->distinct_disks++], id, PROTO_ID_SIZE);
}

/* A CYCLE_START the appliance repeated for one cycle is answered once (a second CYCLE_END of the
 * same cycle would only end the session). */
static bool served_before(struct hostile *h, const struct proto_cycle_start *m)
{
  uint64_t key;
  memcpy(&key, m->disk_id, sizeof key);
  for (size_t i = 0; i < h->nserved; i++)
    if (h->served_disk_cycles[i][0] == key && h->served_disk_cycles[i][1] == m->cycle)
      return true;
  if (h->nserved == 256)
    h->nserved = 0;
  h->served_disk_cycles[h->nserved][0] = key;
  h->served_disk_cycles[h->nserved++][1] = m->cycle;
  return false;
}

/* Reads frames until one of type `want` (0: none wanted, run out the time), serving cycles if
 * h->serve. RPL_OK: it came (its fields in h); RPL_E_TIMEOUT; RPL_E_IO: the appliance closed. */
static rpl_err pump(struct hostile *h, uint8_t want, int timeout_ms)
{
  uint64_t end = rpl_mono_ms() + (uint64_t)timeout_ms, last_hb = rpl_mono_ms();
  for (;;) {
    uint64_t now = rpl_mono_ms();
    if (now >= end)
      return RPL_E_TIMEOUT;
    if (now - last_hb >= 5000) { /* a quiet agent is still an agent */
      struct proto_heartbeat hb = {.sequence = now, .time_ns = (uint64_t)time(NULL) * 1000000000ull};
      check(proto_encode_heartbeat(&h->out, &hb), "HEARTBEAT");
      send_out(h);
      last_hb = now;
    }
    struct proto_frame f;
    uint64_t left = end - now;
    rpl_err err = conn_recv(h->c, &f, left > 200 ? 200 : (int)left);
    if (err == RPL_E_TIMEOUT)
      continue;
    if (err)
      return RPL_E_IO;
    switch (f.type) {
    case PROTO_CYCLE_START:
      check(proto_decode_cycle_start(&f, &h->cs), "CYCLE_START");
      note_started(h, h->cs.disk_id);
      if (h->serve && !served_before(h, &h->cs))
        empty_cycle_end(h, h->cs.disk_id, h->cs.cycle);
      break;
    case PROTO_ACK: check(proto_decode_ack(&f, &h->ack), "ACK"); break;
    case PROTO_NACK: check(proto_decode_nack(&f, &h->nack), "NACK"); break;
    case PROTO_NEED: check(proto_decode_need(&f, &h->need), "NEED"); break;
    case PROTO_POINT: check(proto_decode_point(&f, &h->point), "POINT"); break;
    case PROTO_ERROR: {
      struct proto_error e;
      check(proto_decode_error(&f, &e), "ERROR");
      h->error_code = e.code;
      printf("  the appliance said: %.*s\n", (int)e.message.len, (const char *)e.message.ptr);
      break;
    }
    case PROTO_HEARTBEAT: break;
    default: die("the appliance sent an unexpected %s frame", proto_type_name(f.type));
    }
    if (want && f.type == want)
      return RPL_OK;
  }
}

static void expect(struct hostile *h, uint8_t type, const char *what)
{
  rpl_err err = pump(h, type, WAIT_MS);
  if (err)
    die("%s: no %s from the appliance (%s)", what, proto_type_name(type),
        err == RPL_E_IO ? "it closed the connection" : "not within 20 s");
}

/* The appliance ends the session (an ERROR first or not) within WAIT_MS. */
static void expect_closed(struct hostile *h, const char *what)
{
  h->serve = false;
  rpl_err err = pump(h, 0, WAIT_MS);
  if (err != RPL_E_IO)
    die("%s: the appliance kept the session", what);
  if (!h->quiet)
    printf("ok: %s: the appliance ended the session\n", what);
  h_close(h);
}

static void send_disk(struct hostile *h, const uint8_t id[PROTO_ID_SIZE], uint64_t size, const char *name)
{
  struct proto_disk m = {.size_bytes = size, .sector_size = 512,
                         .name = {(const uint8_t *)name, (uint32_t)strlen(name)}};
  memcpy(m.disk_id, id, PROTO_ID_SIZE);
  check(proto_encode_disk(&h->out, &m), "DISK");
  send_out(h);
}

/* A disk of its own (a new id unless one is given), announced and through its initial sync (an
 * empty resync). */
static void own_disk_id(struct hostile *h, uint8_t id[PROTO_ID_SIZE], uint64_t size, const char *name, bool fresh)
{
  if (fresh)
    uuid_generate_random(id);
  send_disk(h, id, size, name);
  h->serve = true;
  do
    expect(h, PROTO_ACK, "the initial sync of a disk of its own");
  while (memcmp(h->ack.disk_id, id, PROTO_ID_SIZE));
  char t[37];
  idtext(id, t);
  printf("disk %s %s\n", name, t);
}

static void own_disk(struct hostile *h, uint8_t id[PROTO_ID_SIZE], uint64_t size, const char *name)
{
  own_disk_id(h, id, size, name, true);
}

/* The next cycle the appliance starts for disk id (others are served meanwhile). */
static void next_cycle(struct hostile *h, const uint8_t id[PROTO_ID_SIZE], bool serve_it)
{
  for (;;) {
    h->serve = false;
    expect(h, PROTO_CYCLE_START, "a cycle of its disk");
    if (!memcmp(h->cs.disk_id, id, PROTO_ID_SIZE)) {
      if (serve_it)
        empty_cycle_end(h, h->cs.disk_id, h->cs.cycle);
      return;
    }
    empty_cycle_end(h, h->cs.disk_id, h->cs.cycle);
  }
}

/* ---- scenarios ---------------------------------------------------------------------------- */

static void scenario_disks(struct hostile *h, unsigned n)
{
  for (int round = 0; round < 2; round++) {
    h_connect(h);
    h->distinct_disks = 0;
    for (unsigned i = 0; i < n; i++) {
      uint8_t id[PROTO_ID_SIZE];
      uuid_generate_random(id);
      char name[32];
      snprintf(name, sizeof name, "/dev/hostile%u", i);
      struct proto_disk m = {.size_bytes = MIB, .sector_size = 512,
                             .name = {(const uint8_t *)name, (uint32_t)strlen(name)}};
      memcpy(m.disk_id, id, PROTO_ID_SIZE);
      check(proto_encode_disk(&h->out, &m), "DISK");
      if (h->out.len > (1u << 20))
        send_out(h);
    }
    send_out(h);
    /* The disks it took get their initial syncs, one after another; the session stays up. */
    h->serve = true;
    rpl_err err = pump(h, 0, round ? 3000 : 8000);
    if (err != RPL_E_TIMEOUT)
      die("disks: the appliance ended the session after %u DISK frames (round %d): refusing a disk must not "
          "end the agent's session", n, round + 1);
    printf("ok: disks: round %d: %u DISK frames of new ids sent, cycles started for %u distinct disks, "
           "session kept\n", round + 1, n, h->distinct_disks);
    /* MAX_AGENT_DISKS (64) in all: the second session's new ids are all refused */
    if (h->distinct_disks > (round ? 0 : 64))
      die("disks: round %d: %u new disks served for one agent (MAX_AGENT_DISKS is 64)", round + 1,
          h->distinct_disks);
    h_close(h);
  }
}

/* A session that announces disk w (served) and x at a size the appliance must refuse: the disk is
 * refused, the session and w's cycles go on. */
static void size_refused(struct hostile *h, const uint8_t w[PROTO_ID_SIZE], const uint8_t x[PROTO_ID_SIZE],
                         uint64_t size, const char *what)
{
  h_connect(h);
  send_disk(h, w, MIB, "/dev/hostile-w");
  send_disk(h, x, size, "/dev/hostile-size");
  h->distinct_disks = 0;
  next_cycle(h, w, true);
  do
    expect(h, PROTO_ACK, what);
  while (memcmp(h->ack.disk_id, w, PROTO_ID_SIZE));
  for (unsigned i = 0; i < h->distinct_disks; i++)
    if (!memcmp(h->started_ids[i], x, PROTO_ID_SIZE))
      die("sizes: %s: a cycle of the disk was started", what);
  printf("ok: sizes: %s refused; the session and its other disk's cycles go on\n", what);
  h_close(h);
}

static void scenario_sizes(struct hostile *h)
{
  uint8_t w[PROTO_ID_SIZE], x[PROTO_ID_SIZE], y[PROTO_ID_SIZE], z[PROTO_ID_SIZE];
  h_connect(h);
  own_disk(h, w, MIB, "/dev/hostile-w");
  own_disk(h, x, 4 * MIB, "/dev/hostile-size");
  h_close(h);
  /* Each in a session of its own: a disk attached already is not announced again in its session. */
  size_refused(h, w, x, 2 * MIB, "a disk shrunk from 4 MiB to 2 MiB");
  size_refused(h, w, x, 16 * TIB, "a disk grown to 16 TiB (beyond ext4's files and page blobs)");
  size_refused(h, w, x, UINT64_MAX - 511, "a disk grown to 2^64 - 512 bytes");
  uuid_generate_random(y);
  size_refused(h, w, y, 16 * TIB, "a new disk of 16 TiB");
  uuid_generate_random(z);
  size_refused(h, w, z, (UINT64_MAX >> 1) + 1, "a new disk of 2^63 bytes");
  /* The disk grown as disks do (4 MiB to 8 MiB): served at its new size. */
  h_connect(h);
  send_disk(h, x, 8 * MIB, "/dev/hostile-size");
  next_cycle(h, x, true);
  expect(h, PROTO_ACK, "a cycle after the refused sizes");
  if (memcmp(h->ack.disk_id, x, PROTO_ID_SIZE) || h->ack.cycle != h->cs.cycle)
    die("sizes: the ACK is not of the cycle sent");
  printf("ok: sizes: the disk grown to 8 MiB: cycle %" PRIu64 " ACKed\n", h->ack.cycle);
  h_close(h);
}

static void send_hashes(struct hostile *h, const uint8_t id[PROTO_ID_SIZE], uint32_t chunk, uint64_t first,
                        uint32_t count, const uint8_t *hashes)
{
  struct proto_hashes m = {.chunk_size = chunk, .first_chunk = first, .count = count, .hashes = hashes};
  memcpy(m.disk_id, id, PROTO_ID_SIZE);
  check(proto_encode_hashes(&h->out, &m), "HASHES");
  send_out(h);
}

/* A plain cycle of id with bad HASHES: the appliance NACKs it and the session goes on. */
static void hashes_nacked(struct hostile *h, const uint8_t id[PROTO_ID_SIZE], uint32_t chunk, uint64_t first,
                          uint32_t count, const uint8_t *hashes, const char *what)
{
  next_cycle(h, id, false);
  uint64_t cycle = h->cs.cycle;
  send_hashes(h, id, chunk, first, count, hashes);
  expect(h, PROTO_NACK, what);
  if (h->nack.cycle != cycle)
    die("hashes: %s: NACK of cycle %" PRIu64 ", not %" PRIu64, what, h->nack.cycle, cycle);
  empty_cycle_end(h, id, cycle); /* the rest of a refused cycle is dropped */
  printf("ok: hashes: %s: cycle %" PRIu64 " NACKed (%s)\n", what, cycle, rpl_strerror((rpl_err)h->nack.reason));
}

static void scenario_hashes(struct hostile *h)
{
  h_connect(h);
  uint8_t id[PROTO_ID_SIZE];
  own_disk(h, id, 4 * MIB, "/dev/hostile-hashes");
  size_t big = 1000000; /* a 16 MB frame of hashes for a disk of 4 chunks */
  uint8_t *hs = calloc(big, PROTO_HASH_SIZE);
  if (!hs)
    die("out of memory");
  hashes_nacked(h, id, 4096, 0, 4, hs, "4 KiB chunks");
  hashes_nacked(h, id, 1u << 20, 2, 2, hs, "a comparison starting at chunk 2");
  hashes_nacked(h, id, 1u << 20, 0, (uint32_t)big, hs, "a million hashes for 4 chunks");
  /* A comparison in a plain cycle (as an agent whose tracker lost track does): NEED, then the cycle. */
  next_cycle(h, id, false);
  uint64_t cycle = h->cs.cycle;
  send_hashes(h, id, 1u << 20, 0, 4, hs); /* all differ from the zero replica's */
  expect(h, PROTO_NEED, "a comparison in a plain cycle");
  if (h->need.count != 1)
    die("hashes: NEED lists %u ranges, 1 expected (all 4 chunks)", h->need.count);
  /* ... and again after NEED, which starts another comparison (ends with NEED too) */
  send_hashes(h, id, 1u << 20, 0, 4, hs);
  expect(h, PROTO_NEED, "a second comparison in one cycle");
  empty_cycle_end(h, id, cycle);
  expect(h, PROTO_ACK, "the cycle after its comparison");
  printf("ok: hashes: a comparison in plain cycle %" PRIu64 " answered with NEED twice, the cycle ACKed\n", cycle);
  /* HASHES outside any cycle: sent right behind the next cycle's end, so that the appliance reads
   * them once it closed that cycle and well before its RPO (0.5 s from that cycle's start) lets it
   * start another (right after an ACK, it may already be due: a comparison takes longer). */
  next_cycle(h, id, false);
  empty_cycle_end(h, id, h->cs.cycle);
  send_hashes(h, id, 1u << 20, 0, 4, hs);
  free(hs);
  expect_closed(h, "hashes outside a cycle");
  h_connect(h);
  send_disk(h, id, 4 * MIB, "/dev/hostile-hashes");
  h->serve = true;
  check(pump(h, PROTO_ACK, WAIT_MS), "hashes: the agent's next session");
  printf("ok: hashes: the next session is served\n");
  h_close(h);
}

static void send_nack(struct hostile *h, const uint8_t id[PROTO_ID_SIZE], uint64_t cycle)
{
  const char msg[] = "hostile";
  struct proto_nack m = {.cycle = cycle, .reason = RPL_E_IO, .message = {(const uint8_t *)msg, sizeof msg - 1}};
  memcpy(m.disk_id, id, PROTO_ID_SIZE);
  check(proto_encode_nack(&h->out, &m), "NACK");
  send_out(h);
}

static void scenario_nack(struct hostile *h, const char *victim)
{
  h_connect(h);
  uint8_t id[PROTO_ID_SIZE], vid[PROTO_ID_SIZE];
  if (uuid_parse(victim, vid))
    die("nack: %s is not a disk id", victim);
  own_disk(h, id, MIB, "/dev/hostile-nack");
  /* No cycle is open now: a NACK of cycle 0, of a cycle never started, of another agent's disk. */
  send_nack(h, id, 0);
  send_nack(h, id, 999999);
  send_nack(h, vid, 0);
  send_nack(h, vid, 1);
  next_cycle(h, id, true);
  expect(h, PROTO_ACK, "a cycle after stray NACKs");
  printf("ok: nack: NACKs of cycles not open ignored; cycle %" PRIu64 " of the disk ACKed after them\n",
         h->ack.cycle);
  /* A NACK of the open cycle gives it up (the agent could not read the disk), and nothing more. */
  next_cycle(h, id, false);
  send_nack(h, id, h->cs.cycle);
  send_nack(h, id, h->cs.cycle);
  struct proto_heartbeat hb = {.sequence = 1};
  check(proto_encode_heartbeat(&h->out, &hb), "HEARTBEAT");
  send_out(h);
  h->serve = true;
  if (pump(h, 0, 2000) != RPL_E_TIMEOUT)
    die("nack: the session ended after a NACK of its open cycle");
  printf("ok: nack: the open cycle NACKed twice: the session stays\n");
  h_close(h);
}

static void send_point_request(struct hostile *h, uint64_t request, const uint8_t *ids, uint32_t count)
{
  struct proto_point_request m = {.request = request, .count = count, .disk_ids = ids};
  check(proto_encode_point_request(&h->out, &m), "POINT_REQUEST");
  send_out(h);
}

static void expect_point(struct hostile *h, uint64_t request, bool ok, const char *what)
{
  h->serve = true;
  do
    expect(h, PROTO_POINT, what);
  while (h->point.request != request);
  if (ok != (h->point.status == RPL_OK))
    die("points: %s: POINT status %s", what, rpl_strerror((rpl_err)h->point.status));
  printf("ok: points: %s: %s\n", what, ok ? "point made" : rpl_strerror((rpl_err)h->point.status));
}

static void scenario_points(struct hostile *h)
{
  h_connect(h);
  uint8_t ids[3 * PROTO_ID_SIZE];
  own_disk(h, ids, MIB, "/dev/hostile-point");
  memcpy(ids + PROTO_ID_SIZE, ids, PROTO_ID_SIZE);
  send_point_request(h, 1, ids, 2);
  expect_point(h, 1, false, "one disk named twice in a group");
  memcpy(ids + 2 * PROTO_ID_SIZE, ids, PROTO_ID_SIZE);
  uuid_generate_random(ids + PROTO_ID_SIZE);
  send_point_request(h, 2, ids, 3);
  expect_point(h, 2, false, "a group naming a disk not announced");
  send_point_request(h, 3, ids, 1);
  expect_point(h, 3, true, "a valid point after them");
  /* A consistency group's frames out of turn: GROUP_FROZEN of no attempt (ignored), a point of a
   * group that does not exist (refused by its POINT); the session goes on. */
  struct proto_group_frozen fz = {.attempt = 987654321, .frozen_at_us = 1, .filesystems = 1};
  check(proto_encode_group_frozen(&h->out, &fz), "GROUP_FROZEN");
  send_out(h);
  struct proto_group_point_request gr = {.request = 4, .name = {(const uint8_t *)"no-such-group", 13}};
  check(proto_encode_group_point_request(&h->out, &gr), "GROUP_POINT_REQUEST");
  send_out(h);
  expect_point(h, 4, false, "GROUP_FROZEN unasked, then a point of an unknown group");
  if (h->point.status != RPL_E_GROUP_UNKNOWN)
    die("points: a point of an unknown group refused as %s", rpl_strerror((rpl_err)h->point.status));
  send_point_request(h, 5, ids, 1);
  expect_point(h, 5, true, "a valid point after the group frames");
  /* More requests at once than a session runs groups: the rest are refused, the others made. */
  for (uint64_t r = 10; r < 30; r++)
    send_point_request(h, r, ids, 1);
  unsigned made = 0, refused = 0;
  h->serve = true;
  while (made + refused < 20) {
    expect(h, PROTO_POINT, "20 requests at once");
    if (h->point.status == RPL_OK)
      made++;
    else
      refused++;
  }
  if (refused < 4 || made < 1)
    die("points: 20 requests at once: %u made, %u refused (16 groups at most at once)", made, refused);
  printf("ok: points: 20 requests at once: %u made, %u refused\n", made, refused);
  h_close(h);
}

/* One connection per violation: each ends the session, and the next connection is served. */
static void scenario_order(struct hostile *h, unsigned rounds)
{
  /* The same disk in every run of the scenario (derived from the agent's id): what one run leaves
   * open is what the next finds, so that a run adds nothing but what leaks. */
  uint8_t id[PROTO_ID_SIZE];
  memcpy(id, h->agent, PROTO_ID_SIZE);
  id[0] ^= 0x5a;
  h_connect(h);
  own_disk_id(h, id, MIB, "/dev/hostile-order", false);
  h_close(h);
  struct proto_digest dg;
  proto_digest_init(&dg);
  for (unsigned r = 0; r < rounds; r++) {
    h->quiet = r > 0;
    /* An EXTENT, a CYCLE_END, when no cycle is open. */
    h_connect(h);
    send_disk(h, id, MIB, "/dev/hostile-order");
    uint8_t zeros[4096] = {0};
    struct proto_extent ex = {.cycle = 1, .offset = 0, .length = 4096, .codec = PROTO_CODEC_NONE,
                              .payload = {zeros, sizeof zeros}};
    memcpy(ex.disk_id, id, PROTO_ID_SIZE);
    proto_hash128(zeros, sizeof zeros, ex.hash);
    check(conn_send_extent(h->c, &ex), "EXTENT");
    expect_closed(h, "an EXTENT outside a cycle");
    h_connect(h);
    send_disk(h, id, MIB, "/dev/hostile-order");
    empty_cycle_end(h, id, 77);
    expect_closed(h, "a CYCLE_END outside a cycle");
    /* Frames only the appliance sends, and a second HELLO. */
    static const uint8_t types[] = {PROTO_ACK, PROTO_CYCLE_START, PROTO_NEED, PROTO_REGISTERED, PROTO_POINT,
                                    PROTO_HELLO};
    for (size_t i = 0; i < sizeof types; i++) {
      h_connect(h);
      struct proto_ack a = {.cycle = 1};
      struct proto_cycle_start cs = {.cycle = 1, .group = 1};
      struct proto_need nd = {.chunk_size = 1u << 20};
      struct proto_registered rg = {.cert_pem = {(const uint8_t *)"x", 1}};
      struct proto_point pt = {.request = 1};
      struct proto_hello he = {.version_min = PROTO_VERSION_MIN, .version_max = PROTO_VERSION_MAX};
      memcpy(he.agent_id, h->agent, PROTO_ID_SIZE);
      rpl_err e = types[i] == PROTO_ACK          ? proto_encode_ack(&h->out, &a)
                  : types[i] == PROTO_CYCLE_START ? proto_encode_cycle_start(&h->out, &cs)
                  : types[i] == PROTO_NEED        ? proto_encode_need(&h->out, &nd, NULL)
                  : types[i] == PROTO_REGISTERED  ? proto_encode_registered(&h->out, &rg)
                  : types[i] == PROTO_POINT       ? proto_encode_point(&h->out, &pt)
                                                  : proto_encode_hello(&h->out, &he);
      check(e, "encoding");
      send_out(h);
      char what[64];
      snprintf(what, sizeof what, "%s from the agent", proto_type_name(types[i]));
      expect_closed(h, what);
    }
    /* Within an open cycle: an extent past the disk's end (NACK, the session stays), then the
     * CYCLE_END of the next cycle. */
    h_connect(h);
    send_disk(h, id, MIB, "/dev/hostile-order");
    next_cycle(h, id, false);
    uint64_t cycle = h->cs.cycle;
    ex.cycle = cycle;
    ex.offset = MIB;
    check(conn_send_extent(h->c, &ex), "EXTENT");
    expect(h, PROTO_NACK, "an extent past the disk's end");
    empty_cycle_end(h, id, cycle);
    next_cycle(h, id, false);
    empty_cycle_end(h, id, h->cs.cycle + 1);
    expect_closed(h, "the CYCLE_END of a cycle not started");
    /* A DISK before HELLO. */
    check(conn_connect(h->ctx, h->st.appliance, 10000, &h->c), "connecting");
    send_disk(h, id, MIB, "/dev/hostile-order");
    expect_closed(h, "a DISK before HELLO");
  }
  /* After all that, a session like any other. */
  h->quiet = false;
  h_connect(h);
  send_disk(h, id, MIB, "/dev/hostile-order");
  next_cycle(h, id, true);
  expect(h, PROTO_ACK, "a cycle after the violations");
  printf("ok: order: %u rounds of %d violations, each ending its session; the disk's cycle %" PRIu64
         " ACKed after them\n", rounds, 10, h->ack.cycle);
  h_close(h);
}

static void scenario_steal(struct hostile *h, const char *victim_disk, const char *victim_agent)
{
  uint8_t vd[PROTO_ID_SIZE], va[PROTO_ID_SIZE];
  if (uuid_parse(victim_disk, vd) || uuid_parse(victim_agent, va))
    die("steal: bad ids");
  /* HELLO as the victim agent, with this agent's certificate. */
  rpl_err err = h_connect_as(h, va);
  if (err != RPL_E_PERMISSION)
    die("steal: HELLO naming the victim agent was answered %s", rpl_strerror(err));
  h_close(h);
  printf("ok: steal: HELLO naming the victim agent refused\n");
  h_connect(h);
  uint8_t own[PROTO_ID_SIZE];
  own_disk(h, own, MIB, "/dev/hostile-steal");
  /* Its disk, as it is, larger, smaller: no cycle of it is ever started for this agent. */
  send_disk(h, vd, 64 * MIB, "/dev/stolen");
  send_disk(h, vd, 128 * MIB, "/dev/stolen");
  send_disk(h, vd, MIB, "/dev/stolen");
  send_nack(h, vd, 0);
  send_nack(h, vd, 1);
  send_point_request(h, 5, vd, 1);
  h->serve = true;
  do
    expect(h, PROTO_POINT, "a point of the victim's disk");
  while (h->point.request != 5);
  if (h->point.status == RPL_OK)
    die("steal: a point of the victim's disk was made for this agent");
  h->distinct_disks = 0;
  if (pump(h, 0, 3000) != RPL_E_TIMEOUT)
    die("steal: the session ended");
  for (unsigned i = 0; i < h->distinct_disks; i++)
    if (!memcmp(h->started_ids[i], vd, PROTO_ID_SIZE))
      die("steal: the appliance started a cycle of the victim's disk for this agent");
  printf("ok: steal: DISK (three sizes), NACK and POINT_REQUEST of the victim's disk refused; no cycle of it\n");
  uint8_t hs[PROTO_HASH_SIZE] = {0};
  send_hashes(h, vd, 1u << 20, 0, 1, hs);
  expect_closed(h, "HASHES of the victim's disk");
  h_connect(h);
  empty_cycle_end(h, vd, 1);
  expect_closed(h, "a CYCLE_END of the victim's disk");
}

int main(int argc, char **argv)
{
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc < 3) {
    fprintf(stderr, "usage: hostile_agent STATE disks N|sizes|hashes|nack DISK|points|order ROUNDS|steal DISK AGENT\n");
    return 2;
  }
  struct hostile *h = calloc(1, sizeof *h);
  if (!h)
    die("out of memory");
  check(agent_state_load(argv[1], &h->st), "loading the agent's state");
  if (!h->st.registered || uuid_parse(h->st.agent_id, h->agent))
    die("%s is not a registered agent's state", argv[1]);
  char path[700], *cert, *key;
  agent_state_path(&h->st, STATE_AGENT_CERT, path, sizeof path);
  check(file_read_all(path, 1 << 20, &cert), "reading the agent's certificate");
  agent_state_path(&h->st, STATE_AGENT_KEY, path, sizeof path);
  check(file_read_all(path, 1 << 20, &key), "reading the agent's key");
  check(chan_client_ctx(h->st.fingerprint, cert, key, &h->ctx), "TLS context");
  free(cert);
  free(key);
  const char *sc = argv[2];
  if (!strcmp(sc, "disks") && argc == 4)
    scenario_disks(h, (unsigned)strtoul(argv[3], NULL, 10));
  else if (!strcmp(sc, "sizes"))
    scenario_sizes(h);
  else if (!strcmp(sc, "hashes"))
    scenario_hashes(h);
  else if (!strcmp(sc, "nack") && argc == 4)
    scenario_nack(h, argv[3]);
  else if (!strcmp(sc, "points"))
    scenario_points(h);
  else if (!strcmp(sc, "order") && argc == 4)
    scenario_order(h, (unsigned)strtoul(argv[3], NULL, 10));
  else if (!strcmp(sc, "steal") && argc == 5)
    scenario_steal(h, argv[3], argv[4]);
  else
    die("unknown scenario or arguments: %s", sc);
  proto_buf_free(&h->out);
  SSL_CTX_free(h->ctx);
  free(h);
  return 0;
}
