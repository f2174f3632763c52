/* test_catalog.c - Description: catalog CRUD for agents, registration keys (hash only, one use,
 * atomic with the agent), disks, cycles and recovery points; schema migration from an empty and
 * an older database, refusal of a newer one; reopen; clear errors for a damaged file and a lock;
 * agents whose appliance-group record is still to be written. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>
#include <sqlite3.h>
#include <cmocka.h>

#include "catalog.h"
#include "rpl_log.h"
#include "tmpdir.h"

struct ctx {
  char dir[256]; /* short, so every path built from it fits PATH_MAX */
  char db[300];
};

static int setup(void **state)
{
  struct ctx *c = calloc(1, sizeof *c);
  if (!c || tmpdir_create(c->dir, sizeof c->dir, "catalog"))
    return -1;
  snprintf(c->db, sizeof c->db, "%s/catalog.db", c->dir);
  *state = c;
  return 0;
}

static int teardown(void **state)
{
  struct ctx *c = *state;
  tmpdir_remove(c->dir);
  free(c);
  return 0;
}

static struct catalog *open_catalog(const struct ctx *c)
{
  struct catalog *cat = NULL;
  assert_int_equal(catalog_open(c->db, NULL, &cat), RPL_OK);
  return cat;
}

static void fill(uint8_t *p, size_t n, uint8_t seed)
{
  for (size_t i = 0; i < n; i++)
    p[i] = (uint8_t)(seed + i * 13);
}

static struct catalog_agent make_agent(uint8_t seed, const char *host, const char *fp)
{
  struct catalog_agent a = {.registered_time = 1700000000 + seed};
  fill(a.id, sizeof a.id, seed);
  snprintf(a.hostname, sizeof a.hostname, "%s", host);
  snprintf(a.cert_fingerprint, sizeof a.cert_fingerprint, "%s", fp);
  return a;
}

/* Runs one SQL statement on the file with a plain connection and returns its first column as int. */
static int raw_int(const char *db, const char *sql)
{
  sqlite3 *h;
  assert_int_equal(sqlite3_open(db, &h), SQLITE_OK);
  sqlite3_stmt *s;
  assert_int_equal(sqlite3_prepare_v2(h, sql, -1, &s, NULL), SQLITE_OK);
  int v = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int(s, 0) : -1;
  sqlite3_finalize(s);
  sqlite3_close(h);
  return v;
}

static void raw_exec(const char *db, const char *sql)
{
  sqlite3 *h;
  assert_int_equal(sqlite3_open(db, &h), SQLITE_OK);
  assert_int_equal(sqlite3_exec(h, sql, NULL, NULL, NULL), SQLITE_OK);
  sqlite3_close(h);
}

static bool file_contains(const char *path, const uint8_t *needle, size_t n)
{
  FILE *f = fopen(path, "rb");
  if (!f)
    return false;
  static uint8_t buf[1 << 20];
  size_t len = fread(buf, 1, sizeof buf, f);
  fclose(f);
  for (size_t i = 0; i + n <= len; i++)
    if (!memcmp(buf + i, needle, n))
      return true;
  return false;
}

/* ---- tests -------------------------------------------------------------------------------- */

static void test_fresh_schema(void **state)
{
  struct ctx *c = *state;
  struct catalog *cat = open_catalog(c);
  catalog_close(cat);
  assert_int_equal(raw_int(c->db, "PRAGMA user_version"), CATALOG_SCHEMA_VERSION);
  assert_int_equal(raw_int(c->db, "SELECT count(*) FROM sqlite_schema WHERE name IN "
                                  "('agents','registration_keys','disks','cycles','recovery_points')"), 5);
  sqlite3 *h;
  assert_int_equal(sqlite3_open(c->db, &h), SQLITE_OK);
  sqlite3_stmt *s;
  assert_int_equal(sqlite3_prepare_v2(h, "PRAGMA journal_mode", -1, &s, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_step(s), SQLITE_ROW);
  assert_string_equal((const char *)sqlite3_column_text(s, 0), "wal");
  sqlite3_finalize(s);
  sqlite3_close(h);
}

static void test_registration(void **state)
{
  struct ctx *c = *state;
  struct catalog *cat = open_catalog(c);
  uint8_t secret[PROTO_SECRET_SIZE], secret2[PROTO_SECRET_SIZE], unknown[PROTO_SECRET_SIZE];
  fill(secret, sizeof secret, 1);
  fill(secret2, sizeof secret2, 2);
  fill(unknown, sizeof unknown, 3);
  assert_int_equal(catalog_regkey_add(cat, secret, 100, 0), RPL_OK);
  assert_int_equal(catalog_regkey_add(cat, secret, 101, 0), RPL_E_EXISTS);
  uint64_t unused = 0;
  assert_int_equal(catalog_regkey_count_usable(cat, 150, &unused), RPL_OK);
  assert_int_equal(unused, 1);

  struct catalog_agent a = make_agent(10, "db01.example", "sha256:aa11");
  assert_int_equal(catalog_register_agent(cat, unknown, &a, 150), RPL_E_CATALOG_KEY_UNKNOWN);
  assert_int_equal(catalog_register_agent(cat, secret, &a, 150), RPL_OK);
  struct catalog_agent b = make_agent(11, "db02.example", "sha256:bb22");
  assert_int_equal(catalog_register_agent(cat, secret, &b, 150), RPL_E_CATALOG_KEY_USED);
  /* A taken fingerprint fails the whole registration: the key stays usable. */
  assert_int_equal(catalog_regkey_add(cat, secret2, 102, 1000), RPL_OK);
  struct catalog_agent dup = make_agent(12, "db03.example", "sha256:aa11");
  assert_int_equal(catalog_register_agent(cat, secret2, &dup, 150), RPL_E_EXISTS);
  assert_int_equal(catalog_regkey_count_usable(cat, 150, &unused), RPL_OK);
  assert_int_equal(unused, 1);
  struct catalog_agent got;
  assert_int_equal(catalog_agent_get(cat, dup.id, &got), RPL_E_NOT_FOUND);
  /* Past its expiry a key registers nobody, and counts as unusable. */
  assert_int_equal(catalog_register_agent(cat, secret2, &b, 1000), RPL_E_CATALOG_KEY_EXPIRED);
  assert_int_equal(catalog_regkey_count_usable(cat, 1000, &unused), RPL_OK);
  assert_int_equal(unused, 0);
  assert_int_equal(catalog_register_agent(cat, secret2, &b, 999), RPL_OK);
  assert_int_equal(catalog_regkey_count_usable(cat, 150, &unused), RPL_OK);
  assert_int_equal(unused, 0);
  struct catalog_regkey_info info;
  assert_int_equal(catalog_regkey_newest(cat, &info), RPL_OK);
  assert_int_equal(info.created_time, 102);
  assert_int_equal(info.expires_time, 1000);
  assert_true(info.used);
  /* A newer key revokes the unused ones before it. */
  uint8_t k3[PROTO_SECRET_SIZE], k4[PROTO_SECRET_SIZE];
  fill(k3, sizeof k3, 4);
  fill(k4, sizeof k4, 5);
  assert_int_equal(catalog_regkey_add(cat, k3, 200, 0), RPL_OK);
  assert_int_equal(catalog_regkey_add(cat, k4, 201, 0), RPL_OK);
  struct catalog_agent c3 = make_agent(14, "db04.example", "sha256:dd44");
  assert_int_equal(catalog_register_agent(cat, k3, &c3, 300), RPL_E_CATALOG_KEY_REVOKED);
  assert_int_equal(catalog_register_agent(cat, k4, &c3, 300), RPL_OK);
  assert_int_equal(catalog_regkey_newest(cat, &info), RPL_OK);
  assert_int_equal(info.created_time, 201);
  assert_true(info.used);
  assert_false(info.revoked);
  struct catalog_agent empty = make_agent(13, "", "sha256:cc");
  assert_int_equal(catalog_register_agent(cat, secret2, &empty, 150), RPL_E_INVALID_ARGUMENT);
  catalog_close(cat);

  /* The secret itself never reaches the file; its SHA-256 does. */
  assert_int_equal(raw_int(c->db, "PRAGMA wal_checkpoint(TRUNCATE)"), 0);
  assert_false(file_contains(c->db, secret, sizeof secret));
  assert_false(file_contains(c->db, secret2, sizeof secret2));
  assert_int_equal(raw_int(c->db, "SELECT count(*) FROM registration_keys WHERE length(secret_hash) = 32 "
                                  "AND used = 1 AND used_by IS NOT NULL"), 3);
}

static int count_agents(const struct catalog_agent *a, void *ctx)
{
  (void)a;
  (*(int *)ctx)++;
  return 0;
}

static void test_agents(void **state)
{
  struct ctx *c = *state;
  struct catalog *cat = open_catalog(c);
  uint8_t k1[PROTO_SECRET_SIZE], k2[PROTO_SECRET_SIZE];
  fill(k1, sizeof k1, 7);
  fill(k2, sizeof k2, 8);
  struct catalog_agent a = make_agent(1, "web01", "sha256:0101"), b = make_agent(2, "web02", "sha256:0202");
  assert_int_equal(catalog_regkey_add(cat, k1, 1, 0), RPL_OK);
  assert_int_equal(catalog_register_agent(cat, k1, &a, 2), RPL_OK);
  assert_int_equal(catalog_regkey_add(cat, k2, 1, 0), RPL_OK);
  assert_int_equal(catalog_register_agent(cat, k2, &b, 2), RPL_OK);

  /* A renewed certificate: pending until the agent connects with it, then the old one is refused. */
  bool renewed = true;
  assert_int_equal(catalog_agent_use_cert(cat, a.id, "sha256:0101", &renewed), RPL_OK);
  assert_false(renewed);
  assert_int_equal(catalog_agent_set_pending_cert(cat, a.id, "sha256:0111"), RPL_OK);
  assert_int_equal(catalog_agent_use_cert(cat, a.id, "sha256:0101", &renewed), RPL_OK); /* still valid */
  assert_int_equal(catalog_agent_use_cert(cat, a.id, "sha256:0999", &renewed), RPL_E_AGENT_CERT_REPLACED);
  assert_int_equal(catalog_agent_use_cert(cat, a.id, "sha256:0111", &renewed), RPL_OK);
  assert_true(renewed);
  assert_int_equal(catalog_agent_use_cert(cat, a.id, "sha256:0101", &renewed), RPL_E_AGENT_CERT_REPLACED);
  assert_int_equal(catalog_agent_set_pending_cert(cat, (uint8_t[PROTO_ID_SIZE]){0}, "sha256:01"), RPL_E_NOT_FOUND);
  assert_int_equal(catalog_agent_use_cert(cat, a.id, "sha256:0111", &renewed), RPL_OK);
  assert_false(renewed);

  struct catalog_agent got;
  assert_int_equal(catalog_agent_get(cat, a.id, &got), RPL_OK);
  assert_memory_equal(got.id, a.id, PROTO_ID_SIZE);
  assert_string_equal(got.hostname, "web01");
  assert_string_equal(got.cert_fingerprint, "sha256:0111");
  assert_int_equal(got.registered_time, a.registered_time);
  assert_int_equal(got.last_heartbeat, 0);
  assert_false(got.revoked);
  assert_int_equal(catalog_agent_find_by_fingerprint(cat, "sha256:0202", &got), RPL_OK);
  assert_string_equal(got.hostname, "web02");
  assert_int_equal(catalog_agent_find_by_fingerprint(cat, "sha256:9999", &got), RPL_E_NOT_FOUND);

  assert_int_equal(catalog_agent_heartbeat(cat, a.id, 1800000000), RPL_OK);
  assert_int_equal(catalog_agent_revoke(cat, b.id), RPL_OK);
  uint8_t nobody[PROTO_ID_SIZE] = {0};
  assert_int_equal(catalog_agent_heartbeat(cat, nobody, 1), RPL_E_NOT_FOUND);
  assert_int_equal(catalog_agent_revoke(cat, nobody), RPL_E_NOT_FOUND);
  catalog_close(cat);

  cat = open_catalog(c); /* reopen: everything persisted */
  assert_int_equal(catalog_agent_get(cat, a.id, &got), RPL_OK);
  assert_int_equal(got.last_heartbeat, 1800000000);
  assert_int_equal(catalog_agent_get(cat, b.id, &got), RPL_OK);
  assert_true(got.revoked);
  int n = 0;
  assert_int_equal(catalog_agent_foreach(cat, count_agents, &n), RPL_OK);
  assert_int_equal(n, 2);

  /* A group record still to be written is listed until cleared, across a reopen, at most cap at a time. */
  uint8_t due[2][PROTO_ID_SIZE];
  size_t ndue = 9;
  assert_int_equal(catalog_agent_records_due(cat, due, 2, &ndue), RPL_OK);
  assert_int_equal(ndue, 0);
  assert_int_equal(catalog_agent_set_record_due(cat, a.id, true), RPL_OK);
  assert_int_equal(catalog_agent_set_record_due(cat, b.id, true), RPL_OK);
  assert_int_equal(catalog_agent_set_record_due(cat, nobody, true), RPL_E_NOT_FOUND);
  catalog_close(cat);
  cat = open_catalog(c);
  assert_int_equal(catalog_agent_records_due(cat, due, 1, &ndue), RPL_OK);
  assert_int_equal(ndue, 1);
  assert_int_equal(catalog_agent_records_due(cat, due, 2, &ndue), RPL_OK);
  assert_int_equal(ndue, 2);
  assert_int_equal(catalog_agent_set_record_due(cat, b.id, false), RPL_OK);
  assert_int_equal(catalog_agent_records_due(cat, due, 2, &ndue), RPL_OK);
  assert_int_equal(ndue, 1);
  assert_memory_equal(due[0], a.id, PROTO_ID_SIZE);
  catalog_close(cat);
}

static struct catalog *with_agent(const struct ctx *c, struct catalog_agent *a)
{
  struct catalog *cat = open_catalog(c);
  uint8_t k[PROTO_SECRET_SIZE];
  fill(k, sizeof k, 42);
  assert_int_equal(catalog_regkey_add(cat, k, 1, 0), RPL_OK);
  *a = make_agent(5, "app01", "sha256:5555");
  assert_int_equal(catalog_register_agent(cat, k, a, 2), RPL_OK);
  return cat;
}

static struct catalog_disk make_disk(const struct catalog_agent *a, uint8_t seed, const char *name)
{
  struct catalog_disk d = {.size_bytes = 1ull << 30, .sector_size = 512};
  fill(d.id, sizeof d.id, seed);
  memcpy(d.agent_id, a->id, PROTO_ID_SIZE);
  snprintf(d.name, sizeof d.name, "%s", name);
  return d;
}

static int collect_disk_names(const struct catalog_disk *d, void *ctx)
{
  strcat((char *)ctx, d->name);
  strcat((char *)ctx, ";");
  return 0;
}

static void test_disks(void **state)
{
  struct ctx *c = *state;
  struct catalog_agent a;
  struct catalog *cat = with_agent(c, &a);
  struct catalog_agent stranger = make_agent(99, "x", "y");
  struct catalog_disk orphan = make_disk(&stranger, 3, "/dev/sdz");
  assert_int_equal(catalog_disk_upsert(cat, &orphan), RPL_E_NOT_FOUND); /* unknown agent */
  struct catalog_disk d1 = make_disk(&a, 1, "/dev/sdb"), d2 = make_disk(&a, 2, "/dev/sda");
  struct catalog_disk bad = d1;
  bad.sector_size = 1024;
  assert_int_equal(catalog_disk_upsert(cat, &bad), RPL_E_INVALID_ARGUMENT);
  bad = d1;
  bad.size_bytes = 1000;
  assert_int_equal(catalog_disk_upsert(cat, &bad), RPL_E_INVALID_ARGUMENT);
  assert_int_equal(catalog_disk_upsert(cat, &d1), RPL_OK);
  assert_int_equal(catalog_disk_upsert(cat, &d2), RPL_OK);
  struct catalog_disk got;
  assert_int_equal(catalog_disk_get(cat, d1.id, &got), RPL_OK);
  assert_string_equal(got.name, "/dev/sdb");
  assert_int_equal(got.state, CATALOG_DISK_INITIAL_SYNC);
  assert_int_equal(got.size_bytes, 1ull << 30);
  assert_int_equal(got.sector_size, 512);
  assert_int_equal(got.last_committed_cycle, 0);

  assert_int_equal(catalog_disk_set_state(cat, d1.id, CATALOG_DISK_RESYNC_REQUIRED, "tracker gap: 3 misses"), RPL_OK);
  assert_int_equal(catalog_disk_set_state(cat, d1.id, (enum catalog_disk_state)9, NULL), RPL_E_INVALID_ARGUMENT);
  assert_int_equal(catalog_disk_set_state(cat, orphan.id, CATALOG_DISK_ERROR, "x"), RPL_E_NOT_FOUND);
  /* The disk grew: the DISK message updates it, keeping state and cycles. */
  d1.size_bytes = 2ull << 30;
  d1.sector_size = 4096;
  assert_int_equal(catalog_disk_upsert(cat, &d1), RPL_OK);
  assert_int_equal(catalog_disk_get(cat, d1.id, &got), RPL_OK);
  assert_int_equal(got.size_bytes, 2ull << 30);
  assert_int_equal(got.sector_size, 4096);
  assert_int_equal(got.state, CATALOG_DISK_RESYNC_REQUIRED);
  assert_string_equal(got.state_reason, "tracker gap: 3 misses");
  assert_string_equal(catalog_disk_state_name(got.state), "resync-required");
  /* Another agent naming the disk does not take it over: refused, the row as it was. */
  struct catalog_disk theft = d1;
  memcpy(theft.agent_id, stranger.id, PROTO_ID_SIZE);
  snprintf(theft.name, sizeof theft.name, "/dev/stolen");
  theft.size_bytes = 1ull << 20;
  assert_int_equal(catalog_disk_upsert(cat, &theft), RPL_E_PERMISSION);
  assert_int_equal(catalog_disk_get(cat, d1.id, &got), RPL_OK);
  assert_memory_equal(got.agent_id, a.id, PROTO_ID_SIZE);
  assert_string_equal(got.name, d1.name);
  assert_int_equal(got.size_bytes, 2ull << 30);

  char names[256] = "";
  assert_int_equal(catalog_disk_foreach(cat, a.id, collect_disk_names, names), RPL_OK);
  assert_string_equal(names, "/dev/sda;/dev/sdb;");
  names[0] = '\0';
  assert_int_equal(catalog_disk_foreach(cat, stranger.id, collect_disk_names, names), RPL_OK);
  assert_string_equal(names, "");
  names[0] = '\0';
  assert_int_equal(catalog_disk_foreach(cat, NULL, collect_disk_names, names), RPL_OK);
  assert_string_equal(names, "/dev/sda;/dev/sdb;");
  catalog_close(cat);
}

static void test_cycles(void **state)
{
  struct ctx *c = *state;
  struct catalog_agent a;
  struct catalog *cat = with_agent(c, &a);
  struct catalog_disk d = make_disk(&a, 1, "/dev/vdb");
  assert_int_equal(catalog_disk_upsert(cat, &d), RPL_OK);
  for (uint64_t n = 1; n <= 5; n++) {
    struct catalog_cycle cy = {.n = n, .kind = n == 3 ? PROTO_CYCLE_RECOVERY_POINT : PROTO_CYCLE_PLAIN,
                               .committed_time = 2000 + (int64_t)n, .extents = n * 10, .raw_bytes = n << 20,
                               .payload_bytes = n << 18};
    memcpy(cy.disk_id, d.id, PROTO_ID_SIZE);
    assert_int_equal(catalog_cycle_committed(cat, &cy), RPL_OK);
    if (n == 5)
      assert_int_equal(catalog_cycle_committed(cat, &cy), RPL_E_EXISTS);
  }
  struct catalog_cycle orphan = {.n = 1, .committed_time = 1};
  fill(orphan.disk_id, PROTO_ID_SIZE, 77);
  assert_int_equal(catalog_cycle_committed(cat, &orphan), RPL_E_NOT_FOUND);
  struct catalog_disk got;
  assert_int_equal(catalog_disk_get(cat, d.id, &got), RPL_OK);
  assert_int_equal(got.last_committed_cycle, 5);
  assert_int_equal(got.last_applied_cycle, 0);

  assert_int_equal(catalog_cycle_applied(cat, d.id, 3, 3000), RPL_OK);
  assert_int_equal(catalog_cycle_applied(cat, d.id, 2, 2999), RPL_OK); /* never lowers the counter */
  assert_int_equal(catalog_cycle_applied(cat, d.id, 9, 3001), RPL_E_NOT_FOUND);
  assert_int_equal(catalog_disk_get(cat, d.id, &got), RPL_OK);
  assert_int_equal(got.last_applied_cycle, 3);
  struct catalog_cycle cy;
  assert_int_equal(catalog_cycle_get(cat, d.id, 3, &cy), RPL_OK);
  assert_int_equal(cy.kind, PROTO_CYCLE_RECOVERY_POINT);
  assert_int_equal(cy.committed_time, 2003);
  assert_int_equal(cy.extents, 30);
  assert_int_equal(cy.raw_bytes, 3u << 20);
  assert_int_equal(cy.payload_bytes, 3u << 18);
  assert_int_equal(cy.applied_time, 3000);
  assert_int_equal(catalog_cycle_get(cat, d.id, 4, &cy), RPL_OK);
  assert_int_equal(cy.applied_time, 0);
  assert_int_equal(catalog_cycle_prune(cat, d.id, 3), RPL_OK);
  assert_int_equal(catalog_cycle_get(cat, d.id, 2, &cy), RPL_E_NOT_FOUND);
  assert_int_equal(catalog_cycle_get(cat, d.id, 3, &cy), RPL_OK);
  struct catalog_cycle huge = {.n = UINT64_MAX, .committed_time = 1};
  memcpy(huge.disk_id, d.id, PROTO_ID_SIZE);
  assert_int_equal(catalog_cycle_committed(cat, &huge), RPL_E_INVALID_ARGUMENT);
  catalog_close(cat);
}

static int collect_point_ids(const struct catalog_point *p, void *ctx)
{
  int64_t *ids = ctx;
  ids[++ids[0]] = p->id;
  return 0;
}

static void test_recovery_points(void **state)
{
  struct ctx *c = *state;
  struct catalog_agent a;
  struct catalog *cat = with_agent(c, &a);
  struct catalog_disk d = make_disk(&a, 1, "/dev/vdc");
  assert_int_equal(catalog_disk_upsert(cat, &d), RPL_OK);
  struct catalog_point p = {.cycle = 7, .time = 5000, .kind = CATALOG_POINT_FILESYSTEM_CONSISTENT};
  memcpy(p.disk_id, d.id, PROTO_ID_SIZE);
  int64_t id1, id2, id3;
  assert_int_equal(catalog_point_add(cat, &p, &id1), RPL_OK);
  p.cycle = 9;
  p.kind = CATALOG_POINT_CRASH_CONSISTENT;
  p.has_snapshot = true;
  snprintf(p.snapshot_id, sizeof p.snapshot_id, "2026-11-28T15:00:00.1234567Z");
  assert_int_equal(catalog_point_add(cat, &p, &id2), RPL_OK);
  assert_true(id2 > id1);
  struct catalog_point got;
  assert_int_equal(catalog_point_get(cat, id1, &got), RPL_OK);
  assert_int_equal(got.cycle, 7);
  assert_int_equal(got.kind, CATALOG_POINT_FILESYSTEM_CONSISTENT);
  assert_false(got.has_snapshot); /* file storage: no snapshot id */
  assert_string_equal(catalog_point_kind_name(got.kind), "filesystem-consistent");
  assert_int_equal(catalog_point_latest(cat, d.id, &got), RPL_OK);
  assert_int_equal(got.id, id2);
  assert_true(got.has_snapshot);
  assert_string_equal(got.snapshot_id, "2026-11-28T15:00:00.1234567Z");
  int64_t ids[8] = {0};
  assert_int_equal(catalog_point_foreach(cat, d.id, collect_point_ids, ids), RPL_OK);
  assert_int_equal(ids[0], 2);
  assert_int_equal(ids[1], id1);
  assert_int_equal(ids[2], id2);

  /* Retention deletes points; ids are never handed out again. */
  assert_int_equal(catalog_point_delete(cat, id2), RPL_OK);
  assert_int_equal(catalog_point_delete(cat, id2), RPL_E_NOT_FOUND);
  assert_int_equal(catalog_point_get(cat, id2, &got), RPL_E_NOT_FOUND);
  catalog_close(cat);
  cat = open_catalog(c);
  p.has_snapshot = false;
  assert_int_equal(catalog_point_add(cat, &p, &id3), RPL_OK);
  assert_true(id3 > id2);
  struct catalog_point orphan = {.cycle = 1, .kind = CATALOG_POINT_CRASH_CONSISTENT};
  assert_int_equal(catalog_point_add(cat, &orphan, &id3), RPL_E_NOT_FOUND);
  orphan.kind = (enum catalog_point_kind)5;
  assert_int_equal(catalog_point_add(cat, &orphan, &id3), RPL_E_INVALID_ARGUMENT);
  uint8_t nodisk[PROTO_ID_SIZE] = {0};
  assert_int_equal(catalog_point_latest(cat, nodisk, &got), RPL_E_NOT_FOUND);
  catalog_close(cat);
}

/* A database from before the catalog existed (user_version 0, other tables) is migrated and keeps
 * its tables; one from a newer program is refused and left as it was. */
static void test_migrations(void **state)
{
  struct ctx *c = *state;
  raw_exec(c->db, "CREATE TABLE operator_notes (note TEXT); INSERT INTO operator_notes VALUES ('keep me');");
  assert_int_equal(raw_int(c->db, "PRAGMA user_version"), 0);
  struct catalog *cat = open_catalog(c);
  catalog_close(cat);
  assert_int_equal(raw_int(c->db, "PRAGMA user_version"), CATALOG_SCHEMA_VERSION);
  assert_int_equal(raw_int(c->db, "SELECT count(*) FROM operator_notes"), 1);
  /* Opening again runs no migration (it would fail on the existing tables). */
  cat = open_catalog(c);
  catalog_close(cat);

  raw_exec(c->db, "PRAGMA user_version = 99");
  cat = NULL;
  assert_int_equal(catalog_open(c->db, NULL, &cat), RPL_E_CATALOG_VERSION);
  assert_null(cat);
  assert_int_equal(raw_int(c->db, "PRAGMA user_version"), 99);
}

/* Schema 1's points (two kinds, no made_by or freeze_ms) survive migration 2 with their ids, read as
 * made by a checkpoint with no freeze recorded, and an id deleted before the migration is still
 * never handed out again. */
static void test_points_migration(void **state)
{
  struct ctx *c = *state;
  struct catalog_agent a;
  struct catalog *cat = with_agent(c, &a);
  struct catalog_disk d = make_disk(&a, 1, "/dev/vdd");
  assert_int_equal(catalog_disk_upsert(cat, &d), RPL_OK);
  catalog_close(cat);
  /* The points table as schema 1 had it, with points 1 and 2 and id 3 used and deleted; the keys
   * and agents as schema 2 had them, with one key still unused. */
  char sql[4096], hex[2 * PROTO_ID_SIZE + 1];
  for (size_t i = 0; i < PROTO_ID_SIZE; i++)
    snprintf(hex + 2 * i, 3, "%02x", d.id[i]);
  snprintf(sql, sizeof sql,
           "DROP TABLE consistency_group_members;"
           "DROP TABLE consistency_groups;"
           "DROP TABLE recovery_points;"
           "CREATE TABLE recovery_points (id INTEGER PRIMARY KEY AUTOINCREMENT,"
           " disk_id BLOB NOT NULL REFERENCES disks(id) ON DELETE CASCADE, cycle INTEGER NOT NULL,"
           " time INTEGER NOT NULL,"
           " kind TEXT NOT NULL CHECK (kind IN ('filesystem-consistent', 'crash-consistent')),"
           " snapshot_id TEXT) STRICT;"
           "CREATE INDEX recovery_points_disk ON recovery_points(disk_id, cycle);"
           "INSERT INTO recovery_points VALUES (1, x'%s', 5, 1000, 'filesystem-consistent', 'snap-1');"
           "INSERT INTO recovery_points VALUES (2, x'%s', 8, 2000, 'crash-consistent', NULL);"
           "INSERT INTO recovery_points VALUES (3, x'%s', 9, 3000, 'crash-consistent', NULL);"
           "DELETE FROM recovery_points WHERE id = 3;"
           "ALTER TABLE registration_keys DROP COLUMN expires_time;"
           "ALTER TABLE registration_keys DROP COLUMN revoked;"
           "ALTER TABLE agents DROP COLUMN pending_fingerprint;"
           "ALTER TABLE agents DROP COLUMN group_record_due;"
           "ALTER TABLE disks DROP COLUMN unprotected_time;"
           "INSERT INTO registration_keys (secret_hash, created_time) VALUES (zeroblob(32), 5000);"
           "PRAGMA user_version = 1;",
           hex, hex, hex);
  raw_exec(c->db, sql);
  cat = open_catalog(c);
  assert_int_equal(raw_int(c->db, "PRAGMA user_version"), CATALOG_SCHEMA_VERSION);
  /* The unused key expires a day after it was made; the used one is left alone. */
  assert_int_equal(raw_int(c->db, "SELECT expires_time FROM registration_keys WHERE used = 0"), 5000 + 86400);
  assert_int_equal(raw_int(c->db, "SELECT expires_time FROM registration_keys WHERE used = 1"), 0);
  /* The disk is protected after the migration; unprotecting it is recorded, and kept by an upsert. */
  struct catalog_disk dg;
  assert_int_equal(catalog_disk_get(cat, d.id, &dg), RPL_OK);
  assert_int_equal(dg.unprotected_time, 0);
  assert_int_equal(catalog_disk_set_unprotected(cat, d.id, 7000), RPL_OK);
  assert_int_equal(catalog_disk_upsert(cat, &d), RPL_OK);
  assert_int_equal(catalog_disk_get(cat, d.id, &dg), RPL_OK);
  assert_int_equal(dg.unprotected_time, 7000);
  struct catalog_point got;
  assert_int_equal(catalog_point_get(cat, 1, &got), RPL_OK);
  assert_int_equal(got.cycle, 5);
  assert_int_equal(got.kind, CATALOG_POINT_FILESYSTEM_CONSISTENT);
  assert_int_equal(got.made_by, CATALOG_MADE_BY_CHECKPOINT);
  assert_int_equal(got.freeze_ms, 0);
  assert_true(got.has_snapshot);
  assert_string_equal(got.snapshot_id, "snap-1");
  assert_int_equal(catalog_point_get(cat, 2, &got), RPL_OK);
  assert_int_equal(got.kind, CATALOG_POINT_CRASH_CONSISTENT);
  struct catalog_point p = {.cycle = 12, .time = 4000, .kind = CATALOG_POINT_APPLICATION_CONSISTENT,
                            .made_by = CATALOG_MADE_BY_SCHEDULE, .freeze_ms = 37};
  memcpy(p.disk_id, d.id, PROTO_ID_SIZE);
  int64_t id;
  assert_int_equal(catalog_point_add(cat, &p, &id), RPL_OK);
  assert_int_equal(id, 4); /* 3 was handed out before the migration */
  assert_int_equal(catalog_point_latest(cat, d.id, &got), RPL_OK);
  assert_int_equal(got.id, 4);
  assert_int_equal(got.kind, CATALOG_POINT_APPLICATION_CONSISTENT);
  assert_int_equal(got.made_by, CATALOG_MADE_BY_SCHEDULE);
  assert_int_equal(got.freeze_ms, 37);
  assert_string_equal(catalog_point_made_by_name(got.made_by), "schedule");
  /* A group: the first point names it after the second is added; the group lists both. */
  p.made_by = CATALOG_MADE_BY_CHECKPOINT;
  int64_t g1, g2;
  assert_int_equal(catalog_point_add(cat, &p, &g1), RPL_OK);
  p.group_id = g1;
  assert_int_equal(catalog_point_add(cat, &p, &g2), RPL_OK);
  assert_int_equal(catalog_point_set_group(cat, g1, g1), RPL_OK);
  int64_t members[8] = {0};
  assert_int_equal(catalog_point_group_foreach(cat, g1, collect_point_ids, members), RPL_OK);
  assert_int_equal(members[0], 2);
  assert_int_equal(members[1], g1);
  assert_int_equal(members[2], g2);
  assert_int_equal(catalog_point_get(cat, g2, &got), RPL_OK);
  assert_int_equal(got.group_id, g1);
  assert_int_equal(catalog_point_set_group(cat, 999999, g1), RPL_E_NOT_FOUND);
  p.made_by = (enum catalog_point_made_by)9;
  assert_int_equal(catalog_point_add(cat, &p, &id), RPL_E_INVALID_ARGUMENT);
  /* A point from before the migration is no group point. */
  assert_int_equal(catalog_point_get(cat, 1, &got), RPL_OK);
  assert_string_equal(got.consistency_group, "");
  assert_int_equal(got.group_window_ms, 0);
  catalog_close(cat);
}

static int collect_groups(const struct catalog_group *g, void *ctx)
{
  char *names = ctx;
  strcat(names, g->name);
  char n[16];
  snprintf(n, sizeof n, ":%zu ", g->n);
  strcat(names, n);
  return 0;
}

/* Consistency groups: created with their disks in one transaction, every refusal leaving nothing
 * behind, listed by name, deleted (their points stay); a group point keeps its group and window. */
static void test_groups(void **state)
{
  struct ctx *c = *state;
  struct catalog_agent a;
  struct catalog *cat = with_agent(c, &a);
  struct catalog_disk d1 = make_disk(&a, 1, "/dev/vdb"), d2 = make_disk(&a, 2, "/dev/vdc"), d3 = make_disk(&a, 3, "/dev/vdd");
  assert_int_equal(catalog_disk_upsert(cat, &d1), RPL_OK);
  assert_int_equal(catalog_disk_upsert(cat, &d2), RPL_OK);
  assert_int_equal(catalog_disk_upsert(cat, &d3), RPL_OK);
  struct catalog_group g = {.name = "db", .created_time = 100, .n = 2};
  memcpy(g.disks[0], d1.id, PROTO_ID_SIZE);
  memcpy(g.disks[1], d2.id, PROTO_ID_SIZE);
  assert_int_equal(catalog_group_create(cat, &g), RPL_OK);
  assert_int_equal(catalog_group_create(cat, &g), RPL_E_GROUP_EXISTS);
  /* d2 is in db: a group naming it is refused and not created. */
  struct catalog_group h = {.name = "web", .created_time = 101, .n = 2};
  memcpy(h.disks[0], d3.id, PROTO_ID_SIZE);
  memcpy(h.disks[1], d2.id, PROTO_ID_SIZE);
  assert_int_equal(catalog_group_create(cat, &h), RPL_E_GROUP_MEMBER);
  assert_non_null(strstr(rpl_detail(RPL_E_GROUP_MEMBER), "member of group db"));
  struct catalog_group got;
  assert_int_equal(catalog_group_get(cat, "web", &got), RPL_E_GROUP_UNKNOWN);
  /* Unknown, twice, no disk, a bad name. */
  fill(h.disks[1], PROTO_ID_SIZE, 99);
  assert_int_equal(catalog_group_create(cat, &h), RPL_E_GROUP_MEMBER);
  memcpy(h.disks[1], d3.id, PROTO_ID_SIZE);
  assert_int_equal(catalog_group_create(cat, &h), RPL_E_GROUP_MEMBER);
  h.n = 0;
  assert_int_equal(catalog_group_create(cat, &h), RPL_E_GROUP_EMPTY);
  h.n = 1;
  snprintf(h.name, sizeof h.name, "a b");
  assert_int_equal(catalog_group_create(cat, &h), RPL_E_GROUP_NAME);
  snprintf(h.name, sizeof h.name, "web");
  assert_int_equal(catalog_group_create(cat, &h), RPL_OK);
  char names[256] = "";
  assert_int_equal(catalog_group_foreach(cat, collect_groups, names), RPL_OK);
  assert_string_equal(names, "db:2 web:1 ");
  assert_int_equal(catalog_group_get(cat, "db", &got), RPL_OK);
  assert_int_equal(got.n, 2);
  assert_int_equal(got.created_time, 100);
  assert_true(!memcmp(got.disks[0], d1.id, PROTO_ID_SIZE) || !memcmp(got.disks[1], d1.id, PROTO_ID_SIZE));
  /* A group point's rows keep the group's name and window. */
  struct catalog_point p = {.cycle = 3, .time = 200, .kind = CATALOG_POINT_FILESYSTEM_CONSISTENT,
                            .consistency_group = "db", .group_window_ms = 42};
  memcpy(p.disk_id, d1.id, PROTO_ID_SIZE);
  int64_t id;
  assert_int_equal(catalog_point_add(cat, &p, &id), RPL_OK);
  struct catalog_point pg;
  assert_int_equal(catalog_point_get(cat, id, &pg), RPL_OK);
  assert_string_equal(pg.consistency_group, "db");
  assert_int_equal(pg.group_window_ms, 42);
  /* Deleted: the group and its members go, the point stays; its disks may join another. */
  assert_int_equal(catalog_group_delete(cat, "db"), RPL_OK);
  assert_int_equal(catalog_group_delete(cat, "db"), RPL_E_GROUP_UNKNOWN);
  assert_int_equal(catalog_point_get(cat, id, &pg), RPL_OK);
  names[0] = '\0';
  assert_int_equal(catalog_group_foreach(cat, collect_groups, names), RPL_OK);
  assert_string_equal(names, "web:1 ");
  g.n = 1;
  assert_int_equal(catalog_group_create(cat, &g), RPL_OK);
  /* A deleted disk leaves its group. */
  assert_int_equal(catalog_disk_delete(cat, d1.id), RPL_OK);
  assert_int_equal(catalog_group_get(cat, "db", &got), RPL_OK);
  assert_int_equal(got.n, 0);
  catalog_close(cat);
}

static void test_damaged_and_locked(void **state)
{
  struct ctx *c = *state;
  /* Not a database at all. */
  int fd = open(c->db, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  assert_true(fd >= 0);
  char junk[8192];
  for (size_t i = 0; i < sizeof junk; i++)
    junk[i] = (char)(i * 31 + 7);
  assert_int_equal(write(fd, junk, sizeof junk), (ssize_t)sizeof junk);
  close(fd);
  struct catalog *cat = NULL;
  assert_int_equal(catalog_open(c->db, NULL, &cat), RPL_E_CATALOG_CORRUPT);
  assert_null(cat);
  assert_int_equal(unlink(c->db), 0);

  /* A database whose pages were overwritten after the header. */
  cat = open_catalog(c);
  catalog_close(cat);
  assert_int_equal(raw_int(c->db, "PRAGMA wal_checkpoint(TRUNCATE)"), 0);
  fd = open(c->db, O_WRONLY);
  assert_true(fd >= 0);
  assert_int_equal(pwrite(fd, junk, 4096, 4096), 4096);
  close(fd);
  assert_int_equal(catalog_open(c->db, NULL, &cat), RPL_E_CATALOG_CORRUPT);
  assert_int_equal(unlink(c->db), 0);

  /* Another process holds the write lock past our busy timeout. */
  struct catalog_agent a;
  cat = with_agent(c, &a);
  catalog_close(cat);
  struct catalog_options o = {.busy_timeout_ms = 20};
  assert_int_equal(catalog_open(c->db, &o, &cat), RPL_OK);
  sqlite3 *other;
  assert_int_equal(sqlite3_open(c->db, &other), SQLITE_OK);
  assert_int_equal(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
  assert_int_equal(catalog_agent_heartbeat(cat, a.id, 77), RPL_E_CATALOG_BUSY);
  struct catalog_agent got;
  assert_int_equal(catalog_agent_get(cat, a.id, &got), RPL_OK); /* WAL: readers are not blocked */
  assert_int_equal(sqlite3_exec(other, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
  sqlite3_close(other);
  assert_int_equal(catalog_agent_heartbeat(cat, a.id, 77), RPL_OK);
  catalog_close(cat);
}

int main(void)
{
  log_init("test_catalog", LOG_LVL_ERR);
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown(test_fresh_schema, setup, teardown),
    cmocka_unit_test_setup_teardown(test_registration, setup, teardown),
    cmocka_unit_test_setup_teardown(test_agents, setup, teardown),
    cmocka_unit_test_setup_teardown(test_disks, setup, teardown),
    cmocka_unit_test_setup_teardown(test_cycles, setup, teardown),
    cmocka_unit_test_setup_teardown(test_recovery_points, setup, teardown),
    cmocka_unit_test_setup_teardown(test_migrations, setup, teardown),
    cmocka_unit_test_setup_teardown(test_points_migration, setup, teardown),
    cmocka_unit_test_setup_teardown(test_groups, setup, teardown),
    cmocka_unit_test_setup_teardown(test_damaged_and_locked, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
