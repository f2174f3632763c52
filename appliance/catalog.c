/* catalog.c - the appliance's SQLite catalog: schema migrations, prepared statements, error mapping. */
#include "catalog.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <sqlite3.h>

#include "rpl_log.h"

#define SECRET_HASH_SIZE 32 /* SHA-256 */
#define DEFAULT_BUSY_TIMEOUT_MS 5000

/* Migrations: entry v-1 takes the schema from version v-1 to v. Append-only: a released entry is
 * never edited; a change of schema is a new entry. */
static const char *const migrations[CATALOG_SCHEMA_VERSION] = {
  /* 1: the first schema */
  "CREATE TABLE agents ("
  "  id BLOB PRIMARY KEY CHECK (length(id) = 16),"
  "  hostname TEXT NOT NULL,"
  "  cert_fingerprint TEXT NOT NULL UNIQUE,"
  "  registered_time INTEGER NOT NULL,"
  "  last_heartbeat INTEGER NOT NULL DEFAULT 0,"
  "  revoked INTEGER NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1))"
  ") STRICT;"
  "CREATE TABLE registration_keys ("
  "  secret_hash BLOB PRIMARY KEY CHECK (length(secret_hash) = 32),"
  "  created_time INTEGER NOT NULL,"
  "  used INTEGER NOT NULL DEFAULT 0 CHECK (used IN (0, 1)),"
  "  used_time INTEGER,"
  "  used_by BLOB REFERENCES agents(id)"
  ") STRICT;"
  "CREATE TABLE disks ("
  "  id BLOB PRIMARY KEY CHECK (length(id) = 16),"
  "  agent_id BLOB NOT NULL REFERENCES agents(id),"
  "  name TEXT NOT NULL,"
  "  size_bytes INTEGER NOT NULL CHECK (size_bytes >= 0),"
  "  sector_size INTEGER NOT NULL CHECK (sector_size IN (512, 4096)),"
  "  state TEXT NOT NULL CHECK (state IN ('initial-sync', 'protected', 'resync-required', 'error')),"
  "  state_reason TEXT NOT NULL DEFAULT '',"
  "  last_committed_cycle INTEGER NOT NULL DEFAULT 0,"
  "  last_applied_cycle INTEGER NOT NULL DEFAULT 0"
  ") STRICT;"
  "CREATE INDEX disks_agent ON disks(agent_id);"
  "CREATE TABLE cycles ("
  "  disk_id BLOB NOT NULL REFERENCES disks(id) ON DELETE CASCADE,"
  "  n INTEGER NOT NULL CHECK (n >= 1),"
  "  kind TEXT NOT NULL CHECK (kind IN ('plain', 'recovery-point', 'resync')),"
  "  committed_time INTEGER NOT NULL,"
  "  extents INTEGER NOT NULL,"
  "  raw_bytes INTEGER NOT NULL,"
  "  payload_bytes INTEGER NOT NULL,"
  "  applied_time INTEGER NOT NULL DEFAULT 0,"
  "  PRIMARY KEY (disk_id, n)"
  ") STRICT, WITHOUT ROWID;"
  /* AUTOINCREMENT: users name points by id, so an id is never handed out twice. */
  "CREATE TABLE recovery_points ("
  "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
  "  disk_id BLOB NOT NULL REFERENCES disks(id) ON DELETE CASCADE,"
  "  cycle INTEGER NOT NULL,"
  "  time INTEGER NOT NULL,"
  "  kind TEXT NOT NULL CHECK (kind IN ('filesystem-consistent', 'crash-consistent')),"
  "  snapshot_id TEXT"
  ") STRICT;"
  "CREATE INDEX recovery_points_disk ON recovery_points(disk_id, cycle);",
  /* 2: application-consistent points, what made each point (made_by), how long it froze the
   * filesystems, the group it was made in (group_id: the id of the group's first point; 0 alone).
   * SQLite cannot change a CHECK: the table is copied, its AUTOINCREMENT counter kept. */
  "CREATE TABLE recovery_points_v2 ("
  "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
  "  disk_id BLOB NOT NULL REFERENCES disks(id) ON DELETE CASCADE,"
  "  cycle INTEGER NOT NULL,"
  "  time INTEGER NOT NULL,"
  "  kind TEXT NOT NULL CHECK (kind IN ('filesystem-consistent', 'crash-consistent', 'application-consistent')),"
  "  snapshot_id TEXT,"
  "  made_by TEXT NOT NULL DEFAULT 'checkpoint' CHECK (made_by IN ('schedule', 'checkpoint', 'page')),"
  "  freeze_ms INTEGER NOT NULL DEFAULT 0 CHECK (freeze_ms >= 0),"
  "  group_id INTEGER NOT NULL DEFAULT 0"
  ") STRICT;"
  "INSERT INTO recovery_points_v2 (id, disk_id, cycle, time, kind, snapshot_id)"
  "  SELECT id, disk_id, cycle, time, kind, snapshot_id FROM recovery_points;"
  "DELETE FROM sqlite_sequence WHERE name = 'recovery_points_v2';"
  "INSERT INTO sqlite_sequence (name, seq) SELECT 'recovery_points_v2', seq FROM sqlite_sequence"
  "  WHERE name = 'recovery_points';"
  "DROP TABLE recovery_points;"
  "ALTER TABLE recovery_points_v2 RENAME TO recovery_points;"
  "CREATE INDEX recovery_points_disk ON recovery_points(disk_id, cycle);"
  "CREATE INDEX recovery_points_group ON recovery_points(group_id) WHERE group_id != 0;",
  /* 3: registration keys expire and are revoked by a newer one (keys still unused get the default
   * 24 h from their creation); an agent's renewed certificate waits in pending_fingerprint until the
   * agent connects with it, which retires the one before. */
  "ALTER TABLE registration_keys ADD COLUMN expires_time INTEGER NOT NULL DEFAULT 0;"
  "ALTER TABLE registration_keys ADD COLUMN revoked INTEGER NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1));"
  "UPDATE registration_keys SET expires_time = created_time + 86400 WHERE used = 0;"
  "ALTER TABLE agents ADD COLUMN pending_fingerprint TEXT;",
  /* 4: a disk its agent unprotected keeps its row, replica and points (restorable) until deleted;
   * when it was unprotected (0: protected). */
  "ALTER TABLE disks ADD COLUMN unprotected_time INTEGER NOT NULL DEFAULT 0;",
  /* 5: consistency groups across servers: a named group and its member disks (a disk is in at most
   * one group); a point made as a group point names its group and the freeze window across its
   * members (first freeze to last thaw, ms). Its points are tied by group_id as any group's. */
  "CREATE TABLE consistency_groups ("
  "  name TEXT PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 64),"
  "  created_time INTEGER NOT NULL"
  ") STRICT;"
  "CREATE TABLE consistency_group_members ("
  "  group_name TEXT NOT NULL REFERENCES consistency_groups(name) ON DELETE CASCADE,"
  "  disk_id BLOB NOT NULL UNIQUE REFERENCES disks(id) ON DELETE CASCADE,"
  "  PRIMARY KEY (group_name, disk_id)"
  ") STRICT;"
  "ALTER TABLE recovery_points ADD COLUMN consistency_group TEXT NOT NULL DEFAULT '';"
  "ALTER TABLE recovery_points ADD COLUMN group_window_ms INTEGER NOT NULL DEFAULT 0 CHECK (group_window_ms >= 0);",
  /* 6: an agent whose record in the appliance group is still to be written (marked before each
   * write, cleared after it: a failed write, or a stop in between, leaves it for the next sweep). */
  "ALTER TABLE agents ADD COLUMN group_record_due INTEGER NOT NULL DEFAULT 0 CHECK (group_record_due IN (0, 1));",
};

#define AGENT_COLS "id, hostname, cert_fingerprint, registered_time, last_heartbeat, revoked"
#define DISK_COLS "id, agent_id, name, size_bytes, sector_size, state, state_reason, last_committed_cycle, " \
                  "last_applied_cycle, unprotected_time"
#define POINT_COLS "id, disk_id, cycle, time, kind, snapshot_id, made_by, freeze_ms, group_id, consistency_group, " \
                   "group_window_ms"

#define CATALOG_STATEMENTS(X)                                                                          \
  X(ST_BEGIN, "BEGIN IMMEDIATE")                                                                       \
  X(ST_COMMIT, "COMMIT")                                                                               \
  X(ST_ROLLBACK, "ROLLBACK")                                                                           \
  X(ST_REGKEY_ADD, "INSERT INTO registration_keys (secret_hash, created_time, expires_time) "          \
                   "VALUES (?1, ?2, ?3)")                                                              \
  X(ST_REGKEY_REVOKE_UNUSED, "UPDATE registration_keys SET revoked = 1 WHERE used = 0 AND revoked = 0") \
  X(ST_REGKEY_GET, "SELECT used, revoked, expires_time FROM registration_keys WHERE secret_hash = ?1") \
  X(ST_REGKEY_NEWEST, "SELECT created_time, expires_time, used, revoked FROM registration_keys "      \
                      "ORDER BY created_time DESC, rowid DESC LIMIT 1")                                \
  X(ST_AGENT_CERTS, "SELECT cert_fingerprint, coalesce(pending_fingerprint, '') FROM agents WHERE id = ?1") \
  X(ST_AGENT_SET_PENDING, "UPDATE agents SET pending_fingerprint = ?2 WHERE id = ?1")                  \
  X(ST_AGENT_PROMOTE, "UPDATE agents SET cert_fingerprint = pending_fingerprint, "                     \
                      "pending_fingerprint = NULL WHERE id = ?1 AND pending_fingerprint = ?2")         \
  X(ST_REGKEY_USE, "UPDATE registration_keys SET used = 1, used_time = ?2, used_by = ?3 "             \
                   "WHERE secret_hash = ?1 AND used = 0")                                              \
  X(ST_REGKEY_COUNT, "SELECT count(*) FROM registration_keys WHERE used = 0 AND revoked = 0 "          \
                     "AND (expires_time = 0 OR expires_time > ?1)")                                    \
  X(ST_AGENT_ADD, "INSERT INTO agents (" AGENT_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6)")              \
  X(ST_AGENT_GET, "SELECT " AGENT_COLS " FROM agents WHERE id = ?1")                                   \
  X(ST_AGENT_BY_FP, "SELECT " AGENT_COLS " FROM agents WHERE cert_fingerprint = ?1")                   \
  X(ST_AGENT_HEARTBEAT, "UPDATE agents SET last_heartbeat = ?2 WHERE id = ?1")                         \
  X(ST_AGENT_REVOKE, "UPDATE agents SET revoked = 1 WHERE id = ?1")                                    \
  X(ST_AGENT_IMPORT, "INSERT INTO agents (id, hostname, cert_fingerprint, registered_time, revoked, "            \
                     "pending_fingerprint) VALUES (?1, ?2, ?3, ?4, ?5, nullif(?6, '')) ON CONFLICT (id) DO "   \
                     "UPDATE SET hostname = ?2, cert_fingerprint = ?3, revoked = max(revoked, ?5), "          \
                     "pending_fingerprint = nullif(?6, '')")                                                  \
  X(ST_AGENT_ALL, "SELECT " AGENT_COLS " FROM agents ORDER BY registered_time, id")                    \
  X(ST_AGENT_RECORD_DUE, "UPDATE agents SET group_record_due = ?2 WHERE id = ?1")                     \
  X(ST_AGENT_RECORDS_DUE, "SELECT id FROM agents WHERE group_record_due = 1 ORDER BY id LIMIT ?1")     \
  X(ST_DISK_UPSERT, "INSERT INTO disks (id, agent_id, name, size_bytes, sector_size, state) "          \
                    "VALUES (?1, ?2, ?3, ?4, ?5, 'initial-sync') ON CONFLICT (id) DO UPDATE SET "      \
                    "name = excluded.name, size_bytes = excluded.size_bytes, "                         \
                    "sector_size = excluded.sector_size WHERE disks.agent_id = excluded.agent_id")     \
  X(ST_DISK_GET, "SELECT " DISK_COLS " FROM disks WHERE id = ?1")                                      \
  X(ST_DISK_SET_STATE, "UPDATE disks SET state = ?2, state_reason = ?3 WHERE id = ?1")                 \
  X(ST_DISK_UNPROTECT, "UPDATE disks SET unprotected_time = ?2 WHERE id = ?1")                          \
  X(ST_DISK_DELETE, "DELETE FROM disks WHERE id = ?1")                                                  \
  X(ST_DISK_ALL, "SELECT " DISK_COLS " FROM disks ORDER BY name, id")                                  \
  X(ST_DISK_OF_AGENT, "SELECT " DISK_COLS " FROM disks WHERE agent_id = ?1 ORDER BY name, id")        \
  X(ST_DISK_COMMITTED, "UPDATE disks SET last_committed_cycle = max(last_committed_cycle, ?2) "       \
                       "WHERE id = ?1")                                                                \
  X(ST_DISK_APPLIED, "UPDATE disks SET last_applied_cycle = max(last_applied_cycle, ?2) WHERE id = ?1") \
  X(ST_CYCLE_ADD, "INSERT INTO cycles (disk_id, n, kind, committed_time, extents, raw_bytes, "        \
                  "payload_bytes) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")                                \
  X(ST_CYCLE_APPLIED, "UPDATE cycles SET applied_time = ?3 WHERE disk_id = ?1 AND n = ?2")             \
  X(ST_CYCLE_GET, "SELECT kind, committed_time, extents, raw_bytes, payload_bytes, applied_time "     \
                  "FROM cycles WHERE disk_id = ?1 AND n = ?2")                                         \
  X(ST_CYCLE_PRUNE, "DELETE FROM cycles WHERE disk_id = ?1 AND n < ?2")                                \
  X(ST_POINT_ADD, "INSERT INTO recovery_points (disk_id, cycle, time, kind, snapshot_id, made_by, freeze_ms, " \
                  "group_id, consistency_group, group_window_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)") \
  X(ST_POINT_SET_GROUP, "UPDATE recovery_points SET group_id = ?2 WHERE id = ?1")                      \
  X(ST_POINT_GROUP, "SELECT " POINT_COLS " FROM recovery_points WHERE group_id = ?1 ORDER BY id")     \
  X(ST_POINT_GET, "SELECT " POINT_COLS " FROM recovery_points WHERE id = ?1")                          \
  X(ST_POINT_LATEST, "SELECT " POINT_COLS " FROM recovery_points WHERE disk_id = ?1 "                  \
                     "ORDER BY cycle DESC, id DESC LIMIT 1")                                           \
  X(ST_POINT_ALL, "SELECT " POINT_COLS " FROM recovery_points WHERE disk_id = ?1 ORDER BY cycle, id") \
  X(ST_POINT_DELETE, "DELETE FROM recovery_points WHERE id = ?1")                                     \
  X(ST_POINT_PRUNED, "UPDATE recovery_points SET snapshot_id = NULL WHERE id = ?1")                  \
  X(ST_GROUP_ADD, "INSERT INTO consistency_groups (name, created_time) VALUES (?1, ?2)")              \
  X(ST_GROUP_MEMBER_ADD, "INSERT INTO consistency_group_members (group_name, disk_id) VALUES (?1, ?2)") \
  X(ST_GROUP_DISK_OK, "SELECT unprotected_time, (SELECT group_name FROM consistency_group_members "    \
                      "WHERE disk_id = ?1) FROM disks WHERE id = ?1")                                  \
  X(ST_GROUP_DELETE, "DELETE FROM consistency_groups WHERE name = ?1")                                \
  X(ST_GROUP_ALL, "SELECT g.name, g.created_time, m.disk_id FROM consistency_groups g LEFT JOIN "      \
                  "consistency_group_members m ON m.group_name = g.name ORDER BY g.name, m.disk_id")

enum statement {
#define ST_ENUM(name, sql) name,
  CATALOG_STATEMENTS(ST_ENUM)
#undef ST_ENUM
  ST_COUNT
};

static const char *const statement_sql[ST_COUNT] = {
#define ST_SQL(name, sql) [name] = sql,
  CATALOG_STATEMENTS(ST_SQL)
#undef ST_SQL
};

struct catalog {
  pthread_mutex_t lock;
  sqlite3 *db;
  char *path;
  sqlite3_stmt *st[ST_COUNT];
};

/* ---- errors ------------------------------------------------------------------------------- */

/* Maps an SQLite result (extended codes are on) to rpl_err, logging what is not self-explaining. */
static rpl_err db_err(struct catalog *c, int rc, const char *what)
{
  const char *msg = c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc);
  switch (rc & 0xff) {
  case SQLITE_OK:
  case SQLITE_ROW:
  case SQLITE_DONE:
    return RPL_OK;
  case SQLITE_BUSY:
  case SQLITE_LOCKED:
    log_warn("catalog %s: %s: locked by another connection (%s)", c->path, what, msg);
    return rpl_fail(RPL_E_CATALOG_BUSY, "catalog %s: %s: locked by another connection (%s)", c->path, what, msg);
  case SQLITE_CORRUPT:
  case SQLITE_NOTADB:
    log_err("catalog %s: %s: %s", c->path, what, msg);
    return rpl_fail(RPL_E_CATALOG_CORRUPT, "catalog %s: %s: %s", c->path, what, msg);
  case SQLITE_CONSTRAINT:
    if (rc == SQLITE_CONSTRAINT_FOREIGNKEY)
      return RPL_E_NOT_FOUND; /* refers to an agent or disk that is not there */
    if (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY)
      return RPL_E_EXISTS;
    log_warn("catalog %s: %s: %s", c->path, what, msg);
    return rpl_fail(RPL_E_INVALID_ARGUMENT, "catalog %s: %s: %s", c->path, what, msg);
  case SQLITE_NOMEM:
    return RPL_E_NOMEM;
  case SQLITE_READONLY:
  case SQLITE_PERM:
  case SQLITE_AUTH:
    log_err("catalog %s: %s: %s", c->path, what, msg);
    return rpl_fail(RPL_E_PERMISSION, "catalog %s: %s: %s", c->path, what, msg);
  case SQLITE_FULL:
  case SQLITE_IOERR:
  case SQLITE_CANTOPEN:
    log_err("catalog %s: %s: %s", c->path, what, msg);
    return rpl_fail(RPL_E_IO, "catalog %s: %s: %s", c->path, what, msg);
  default:
    log_err("catalog %s: %s: %s (SQLite code %d)", c->path, what, msg, rc);
    return rpl_fail(RPL_E_CATALOG_SQL, "catalog %s: %s: %s (SQLite code %d)", c->path, what, msg, rc);
  }
}

static rpl_err exec_sql(struct catalog *c, const char *sql, const char *what)
{
  int rc = sqlite3_exec(c->db, sql, NULL, NULL, NULL);
  return rc == SQLITE_OK ? RPL_OK : db_err(c, rc, what);
}

/* ---- statements --------------------------------------------------------------------------- */

static sqlite3_stmt *stmt(struct catalog *c, enum statement s)
{
  sqlite3_reset(c->st[s]);
  sqlite3_clear_bindings(c->st[s]);
  return c->st[s];
}

static bool fits_int64(uint64_t v) { return v <= (uint64_t)INT64_MAX; }

static void bind_id(sqlite3_stmt *s, int i, const uint8_t id[PROTO_ID_SIZE])
{
  sqlite3_bind_blob(s, i, id, PROTO_ID_SIZE, SQLITE_TRANSIENT);
}

static void bind_text(sqlite3_stmt *s, int i, const char *t) { sqlite3_bind_text(s, i, t, -1, SQLITE_TRANSIENT); }

/* Runs a statement that returns no rows; *changes (may be NULL) gets the rows it changed. */
static rpl_err run(struct catalog *c, sqlite3_stmt *s, const char *what, int *changes)
{
  int rc = sqlite3_step(s);
  rpl_err e = rc == SQLITE_DONE ? RPL_OK : db_err(c, sqlite3_extended_errcode(c->db), what);
  if (rc == SQLITE_ROW)
    e = RPL_E_INTERNAL;
  if (changes)
    *changes = sqlite3_changes(c->db);
  sqlite3_reset(s);
  return e;
}

/* Steps a query: RPL_OK with a row, RPL_E_NOT_FOUND at the end. */
static rpl_err next_row(struct catalog *c, sqlite3_stmt *s, const char *what)
{
  int rc = sqlite3_step(s);
  if (rc == SQLITE_ROW)
    return RPL_OK;
  if (rc == SQLITE_DONE)
    return RPL_E_NOT_FOUND;
  return db_err(c, sqlite3_extended_errcode(c->db), what);
}

static rpl_err col_id(struct catalog *c, sqlite3_stmt *s, int i, uint8_t out[PROTO_ID_SIZE])
{
  const void *p = sqlite3_column_blob(s, i);
  if (!p || sqlite3_column_bytes(s, i) != PROTO_ID_SIZE) {
    log_err("catalog %s: an id column holds no 16-byte value", c->path);
    return RPL_E_CATALOG_CORRUPT;
  }
  memcpy(out, p, PROTO_ID_SIZE);
  return RPL_OK;
}

/* Copies a text column into out (cap bytes + NUL); longer than any value we write = damage. */
static rpl_err col_text(struct catalog *c, sqlite3_stmt *s, int i, char *out, size_t cap)
{
  const unsigned char *p = sqlite3_column_text(s, i);
  size_t n = (size_t)sqlite3_column_bytes(s, i);
  if (n > cap) {
    log_err("catalog %s: a text column is longer than its %zu-byte cap", c->path, cap);
    return RPL_E_CATALOG_CORRUPT;
  }
  if (n)
    memcpy(out, p, n);
  out[n] = '\0';
  return RPL_OK;
}

static uint64_t col_u64(sqlite3_stmt *s, int i)
{
  sqlite3_int64 v = sqlite3_column_int64(s, i);
  return v < 0 ? 0 : (uint64_t)v;
}

static rpl_err begin_tx(struct catalog *c) { return run(c, stmt(c, ST_BEGIN), "begin transaction", NULL); }

static rpl_err end_tx(struct catalog *c, rpl_err e)
{
  if (e == RPL_OK) {
    e = run(c, stmt(c, ST_COMMIT), "commit", NULL);
    if (e == RPL_OK)
      return RPL_OK;
  }
  if (!sqlite3_get_autocommit(c->db))
    (void)run(c, stmt(c, ST_ROLLBACK), "rollback", NULL);
  return e;
}

/* ---- open / migrate ----------------------------------------------------------------------- */

static rpl_err read_user_version(struct catalog *c, int *version)
{
  sqlite3_stmt *s;
  int rc = sqlite3_prepare_v2(c->db, "PRAGMA user_version", -1, &s, NULL);
  if (rc != SQLITE_OK)
    return db_err(c, sqlite3_extended_errcode(c->db), "read schema version");
  rc = sqlite3_step(s);
  rpl_err e = rc == SQLITE_ROW ? RPL_OK : db_err(c, sqlite3_extended_errcode(c->db), "read schema version");
  if (e == RPL_OK)
    *version = sqlite3_column_int(s, 0);
  sqlite3_finalize(s);
  return e;
}

static rpl_err migrate(struct catalog *c)
{
  int version;
  rpl_err e = read_user_version(c, &version);
  if (e)
    return e;
  if (version > CATALOG_SCHEMA_VERSION || version < 0) {
    log_err("catalog %s: schema version %d, this program knows up to %d", c->path, version, CATALOG_SCHEMA_VERSION);
    return RPL_E_CATALOG_VERSION;
  }
  while (version < CATALOG_SCHEMA_VERSION) {
    if ((e = exec_sql(c, "BEGIN IMMEDIATE", "begin migration")))
      return e;
    /* Re-read inside the transaction: another process may have migrated meanwhile. */
    int now = -1;
    if ((e = read_user_version(c, &now)) == RPL_OK && now == version) {
      char set[64];
      snprintf(set, sizeof set, "PRAGMA user_version = %d", version + 1);
      if ((e = exec_sql(c, migrations[version], "migrate schema")) == RPL_OK)
        e = exec_sql(c, set, "set schema version");
    }
    if (e == RPL_OK && (e = exec_sql(c, "COMMIT", "commit migration")) == RPL_OK) {
      if (now == version)
        log_info("catalog %s: schema migrated to version %d", c->path, version + 1);
      version = now == version ? version + 1 : now;
      continue;
    }
    (void)sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
    return e;
  }
  return RPL_OK;
}

/* Finds damage early, at open, rather than in the middle of a registration. */
static rpl_err quick_check(struct catalog *c)
{
  sqlite3_stmt *s;
  int rc = sqlite3_prepare_v2(c->db, "PRAGMA quick_check", -1, &s, NULL);
  if (rc != SQLITE_OK)
    return db_err(c, sqlite3_extended_errcode(c->db), "check integrity");
  rpl_err e = RPL_OK;
  rc = sqlite3_step(s);
  if (rc == SQLITE_ROW) {
    const unsigned char *r = sqlite3_column_text(s, 0);
    if (!r || strcmp((const char *)r, "ok")) {
      log_err("catalog %s: integrity check failed: %s", c->path, r ? (const char *)r : "?");
      e = RPL_E_CATALOG_CORRUPT;
    }
  } else {
    e = db_err(c, sqlite3_extended_errcode(c->db), "check integrity");
  }
  sqlite3_finalize(s);
  return e;
}

static rpl_err set_wal(struct catalog *c)
{
  sqlite3_stmt *s;
  int rc = sqlite3_prepare_v2(c->db, "PRAGMA journal_mode = WAL", -1, &s, NULL);
  if (rc != SQLITE_OK)
    return db_err(c, sqlite3_extended_errcode(c->db), "set WAL mode");
  rpl_err e = RPL_OK;
  if (sqlite3_step(s) == SQLITE_ROW) {
    const unsigned char *mode = sqlite3_column_text(s, 0);
    if (!mode || strcmp((const char *)mode, "wal")) {
      log_err("catalog %s: cannot use WAL mode (got %s)", c->path, mode ? (const char *)mode : "?");
      e = RPL_E_CATALOG_SQL;
    }
  } else {
    e = db_err(c, sqlite3_extended_errcode(c->db), "set WAL mode");
  }
  sqlite3_finalize(s);
  return e;
}

rpl_err catalog_open(const char *path, const struct catalog_options *opts, struct catalog **out)
{
  *out = NULL;
  if (!path || !*path)
    return RPL_E_INVALID_ARGUMENT;
  struct catalog *c = calloc(1, sizeof *c);
  if (!c || !(c->path = strdup(path))) {
    free(c);
    return RPL_E_NOMEM;
  }
  pthread_mutex_init(&c->lock, NULL);
  rpl_err e;
  int rc = sqlite3_open_v2(path, &c->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
  if (rc != SQLITE_OK) {
    e = db_err(c, rc, "open");
    goto fail;
  }
  sqlite3_extended_result_codes(c->db, 1);
  sqlite3_busy_timeout(c->db, opts && opts->busy_timeout_ms > 0 ? opts->busy_timeout_ms : DEFAULT_BUSY_TIMEOUT_MS);
  if ((e = quick_check(c)) || (e = set_wal(c)) ||
      (e = exec_sql(c, "PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL", "set pragmas")) || (e = migrate(c)))
    goto fail;
  for (int i = 0; i < ST_COUNT; i++) {
    rc = sqlite3_prepare_v3(c->db, statement_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &c->st[i], NULL);
    if (rc != SQLITE_OK) {
      e = db_err(c, sqlite3_extended_errcode(c->db), "prepare statements");
      goto fail;
    }
  }
  *out = c;
  return RPL_OK;
fail:
  catalog_close(c);
  return e;
}

void catalog_close(struct catalog *c)
{
  if (!c)
    return;
  for (int i = 0; i < ST_COUNT; i++)
    sqlite3_finalize(c->st[i]);
  sqlite3_close(c->db);
  pthread_mutex_destroy(&c->lock);
  free(c->path);
  free(c);
}

/* ---- registration keys and agents --------------------------------------------------------- */

static rpl_err hash_secret(const uint8_t secret[PROTO_SECRET_SIZE], uint8_t out[SECRET_HASH_SIZE])
{
  unsigned int n = 0;
  if (EVP_Digest(secret, PROTO_SECRET_SIZE, out, &n, EVP_sha256(), NULL) != 1 || n != SECRET_HASH_SIZE)
    return RPL_E_INTERNAL;
  return RPL_OK;
}

rpl_err catalog_regkey_add(struct catalog *c, const uint8_t secret[PROTO_SECRET_SIZE], int64_t created_time,
                           int64_t expires_time)
{
  uint8_t h[SECRET_HASH_SIZE];
  rpl_err e = hash_secret(secret, h);
  if (e)
    return e;
  pthread_mutex_lock(&c->lock);
  if ((e = begin_tx(c)))
    goto out;
  e = run(c, stmt(c, ST_REGKEY_REVOKE_UNUSED), "revoke unused registration keys", NULL);
  if (!e) {
    sqlite3_stmt *s = stmt(c, ST_REGKEY_ADD);
    sqlite3_bind_blob(s, 1, h, sizeof h, SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 2, created_time);
    sqlite3_bind_int64(s, 3, expires_time);
    e = run(c, s, "add registration key", NULL);
  }
  e = end_tx(c, e);
out:
  pthread_mutex_unlock(&c->lock);
  return e;
}

rpl_err catalog_regkey_newest(struct catalog *c, struct catalog_regkey_info *out)
{
  memset(out, 0, sizeof *out);
  pthread_mutex_lock(&c->lock);
  sqlite3_stmt *s = stmt(c, ST_REGKEY_NEWEST);
  rpl_err e = next_row(c, s, "look up the newest registration key");
  if (e == RPL_OK) {
    out->created_time = sqlite3_column_int64(s, 0);
    out->expires_time = sqlite3_column_int64(s, 1);
    out->used = sqlite3_column_int(s, 2) != 0;
    out->revoked = sqlite3_column_int(s, 3) != 0;
  }
  sqlite3_reset(s);
  pthread_mutex_unlock(&c->lock);
  return e;
}

static bool agent_valid(const struct catalog_agent *a)
{
  return strnlen(a->hostname, sizeof a->hostname) <= CATALOG_MAX_HOSTNAME &&
         strnlen(a->cert_fingerprint, sizeof a->cert_fingerprint) <= CATALOG_MAX_FINGERPRINT &&
         a->hostname[0] && a->cert_fingerprint[0] && memchr(a->hostname, 0, sizeof a->hostname) &&
         memchr(a->cert_fingerprint, 0, sizeof a->cert_fingerprint);
}

rpl_err catalog_register_agent(struct catalog *c, const uint8_t secret[PROTO_SECRET_SIZE],
                               const struct catalog_agent *a, int64_t now)
{
  if (!agent_valid(a))
    return RPL_E_INVALID_ARGUMENT;
  uint8_t h[SECRET_HASH_SIZE];
  rpl_err e = hash_secret(secret, h);
  if (e)
    return e;
  pthread_mutex_lock(&c->lock);
  if ((e = begin_tx(c)))
    goto out;
  sqlite3_stmt *s = stmt(c, ST_REGKEY_GET);
  sqlite3_bind_blob(s, 1, h, sizeof h, SQLITE_TRANSIENT);
  e = next_row(c, s, "look up registration key");
  bool used = e == RPL_OK && sqlite3_column_int(s, 0) != 0;
  bool revoked = e == RPL_OK && sqlite3_column_int(s, 1) != 0;
  int64_t expires = e == RPL_OK ? sqlite3_column_int64(s, 2) : 0;
  sqlite3_reset(s);
  if (e == RPL_E_NOT_FOUND)
    e = RPL_E_CATALOG_KEY_UNKNOWN;
  else if (e == RPL_OK && used)
    e = RPL_E_CATALOG_KEY_USED;
  else if (e == RPL_OK && revoked)
    e = RPL_E_CATALOG_KEY_REVOKED;
  else if (e == RPL_OK && expires && expires <= now)
    e = RPL_E_CATALOG_KEY_EXPIRED;
  if (e == RPL_OK) {
    s = stmt(c, ST_AGENT_ADD);
    bind_id(s, 1, a->id);
    bind_text(s, 2, a->hostname);
    bind_text(s, 3, a->cert_fingerprint);
    sqlite3_bind_int64(s, 4, a->registered_time);
    sqlite3_bind_int64(s, 5, a->last_heartbeat);
    sqlite3_bind_int(s, 6, a->revoked ? 1 : 0);
    e = run(c, s, "add agent", NULL);
  }
  if (e == RPL_OK) {
    int changes = 0;
    s = stmt(c, ST_REGKEY_USE);
    sqlite3_bind_blob(s, 1, h, sizeof h, SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 2, a->registered_time);
    bind_id(s, 3, a->id);
    if ((e = run(c, s, "use registration key", &changes)) == RPL_OK && changes != 1)
      e = RPL_E_CATALOG_KEY_USED;
  }
  e = end_tx(c, e);
out:
  pthread_mutex_unlock(&c->lock);
  if (e == RPL_E_CATALOG_KEY_USED || e == RPL_E_CATALOG_KEY_UNKNOWN || e == RPL_E_CATALOG_KEY_REVOKED ||
      e == RPL_E_CATALOG_KEY_EXPIRED)
    log_warn("catalog: registration of agent %s refused: %s", a->hostname, rpl_strerror(e));
  return e;
}

rpl_err catalog_regkey_count_usable(struct catalog *c, int64_t now, uint64_t *count)
{
  pthread_mutex_lock(&c->lock);
  sqlite3_stmt *s = stmt(c, ST_REGKEY_COUNT);
  sqlite3_bind_int64(s, 1, now);
  rpl_err e = next_row(c, s, "count registration keys");
  if (e == RPL_OK)
    *count = col_u64(s, 0);
  sqlite3_reset(s);
  pthread_mutex_unlock(&c->lock);
  return e;
}

/* An UPDATE of one row by id: RPL_E_NOT_FOUND when no row has that id. */
static rpl_err update_one(struct catalog *c, sqlite3_stmt *s, const char *what)
{
  int changes = 0;
  rpl_err e = run(c, s, what, &changes);
  return e == RPL_OK && changes == 0 ? RPL_E_NOT_FOUND : e;
}

rpl_err catalog_agent_set_pending_cert(struct catalog *c, const uint8_t id[PROTO_ID_SIZE], const char *fingerprint)
{
  if (!fingerprint || !fingerprint[0] || strlen(fingerprint) > CATALOG_MAX_FINGERPRINT)
    return RPL_E_INVALID_ARGUMENT;
  pthread_mutex_lock(&c->lock);
  sqlite3_stmt *s = stmt(c, ST_AGENT_SET_PENDING);
  bind_id(s, 1, id);
  bind_text(s, 2, fingerprint);
  rpl_err e = update_one(c, s, "record a renewed agent certificate");
  pthread_mutex_unlock(&c->lock);
  return e;
}

rpl_err catalog_agent_use_cert(struct catalog *c, const uint8_t id[PROTO_ID_SIZE], const char *fingerprint, bool *renewed)
{
  *renewed = false;
  char current[CATALOG_MAX_FINGERPRINT + 1], pending[CATALOG_MAX_FINGERPRINT + 1];
  pthread_mutex_lock(&c->lock);
  rpl_err e = begin_tx(c);
  if (e)
    goto out;
  sqlite3_stmt *s = stmt(c, ST_AGENT_CERTS);
  bind_id(s, 1, id);
  e = next_row(c, s, "look up an agent's certificates");
  if (!e && !(e = col_text(c, s, 0, current, CATALOG_MAX_FINGERPRINT)))
    e = col_text(c, s, 1, pending, CATALOG_MAX_FINGERPRINT);
  sqlite3_reset(s);
  if (!e && strcmp(fingerprint, current) != 0) {
    if (pending[0] && strcmp(fingerprint, pending) == 0) {
      s = stmt(c, ST_AGENT_PROMOTE);
      bind_id(s, 1, id);
      bind_text(s, 2, fingerprint);
      if (!(e = run(c, s, "put a renewed agent certificate in use", NULL)))
        *renewed = true;
    } else {
      e = RPL_E_AGENT_CERT_REPLACED;
    }
  }
  e = end_tx(c, e);
out:
  pthread_mutex_unlock(&c->lock);
  return e;
}

static rpl_err read_agent(struct catalog *c, sqlite3_stmt *s, struct catalog_agent *a)
{
  memset(a, 0, sizeof *a);
  rpl_err e;
  if ((e = col_id(c, s, 0, a->id)) || (e = col_text(c, s, 1, a->hostname, CATALOG_MAX_HOSTNAME)) ||
      (e = col_text(c, s, 2, a->cert_fingerprint, CATALOG_MAX_FINGERPRINT)))
    return e;
  a->registered_time = sqlite3_column_int64(s, 3);
  a->last_heartbeat = sqlite3_column_int64(s, 4);
  a->revoked = sqlite3_column_int(s, 5) != 0;
  return RPL_OK;
}

/* Runs a one-row query prepared in s and decodes it with read. */
#define GET_ONE(c, s, what, read, out)                       \
  do {                                                       \
    e = next_row(c, s, what);                                \
    if (e == RPL_OK)                                         \
      e = read(c, s, out);                                   \
    sqlite3_reset(s);                                        \
  } while (0)

rpl_err catalog_agent_get(struct catalog *c, const uint8_t id[PROTO_ID_SIZE], struct catalog_agent *out)
{
  pthread_mutex_lock(&c->lock);
  sqlite3_stmt *s = stmt(c, ST_AGENT_GET);
  bind_id(s, 1, id);
  rpl_err e;
  GET_ONE(c, s, "get agent", read_agent, out);
  pthread_mutex_unlock(&c->lock);
  return e;
}

rpl_err catalog_agent_find_by_fingerprint(struct catalog *c, const char *fingerprint, struct catalog_agent *out)
{
  if (!fingerprint || strlen(fingerprint) > CATALOG_MAX_FINGERPRINT)
    return RPL_E_INVALID_ARGUMENT;
  pthread_mutex_lock(&c->lock);
  sqlite3_stmt *s = stmt(c, ST_AGENT_BY_FP);
  bind_text(s, 1, fingerprint);
  rpl_err e;
  GET_ONE(c, s, "find agent", read_agent, out);
  pthread_mutex_unlock(&c->lock);
  return e;
}


rpl_err catalog_agent_heartbeat(struct catalog *c, const uint8_t id[PROTO_ID_SIZE], int64_t time)
{
  pthread_mutex_lock(&c->lock);
  sqlite3_stmt *s = stmt(c, ST_AGENT_HEARTBEAT);
  bind_id(s, 1, id);
  sqlite3_bind_int64(s, 2, time);
  rpl_err e = update_one(c, s, "record heartbeat");
  pthread_mutex_unlock(&c->lock);
  return e;
}

rpl_err catalog_agent_revoke(struct catalog *c, const uint8_t id[PROTO_ID_SIZE])
{
  pthread_mutex_lock(&c->lock);
  sqlite3_stmt *s = stmt(c, ST_AGENT_REVOKE);
  bind_id(s, 1, id);
  rpl_err e = update_one(c, s, "revoke agent");
  pthread_mutex_unlock(&c->lock);
  return e;
}

rpl_err catalog_agent_set_record_due(struct catalog *c, const uint8_t id[PROTO_ID_SIZE], bool due)
{
  pthread_mutex_lock(&c->lock);
  sqlite3_stmt *s = stmt(c, ST_AGENT_RECORD_DUE);
  bind_id(s, 1, id);
  sqlite3_bind_int(s, 2, due ? 1 : 0);
  rpl_err e = update_one(c, s, due ? "mark an agent's group record due" : "clear an agent's group record due");
  pthread_mutex_unlock(&c->lock);
  return e;
}

rpl_err catalog_agent_records_due(struct catalog *c, uint8_t (*ids)[PROTO_ID_SIZE], size_t cap, size_t *n)
{
  *n = 0;
  pthread_mutex_lock(&c->lock);
  sqlite3_stmt *s = stmt(c, ST_AGENT_RECORDS_DUE);
  sqlite3_bind_int64(s, 1, (sqlite3_int64)cap);
  rpl_err e = RPL_OK;
  while (*n < cap && (e = next_row(c, s, "list agents whose group record is due")) == RPL_OK) {
    if (sqlite3_column_bytes(s, 0) != PROTO_ID_SIZE) {
      e = RPL_E_CATALOG_CORRUPT;
      break;
    }
    memcpy(ids[(*n)++], sqlite3_column_blob(s, 0), PROTO_ID_SIZE);
  }
  sqlite3_reset(s);
  pthread_mutex_unlock(&c->lock);
  return e == RPL_E_NOT_FOUND ? RPL_OK : e;
}

rpl_err catalog_agent_certs(struct catalog *c, const uint8_t id[PROTO_ID_SIZE], char current[CATALOG_MAX_FINGERPRINT + 1],
                            char pending[CATALOG_MAX_FINGERPRINT + 1])
{
  pthread_mutex_lock(&c->lock);
  sqlite3_stmt *s = stmt(c, ST_AGENT_CERTS);
  bind_id(s, 1, id);
  rpl_err e = next_row(c, s, "look up an agent's certificates");
  if (!e && !(e = col_text(c, s, 0, current, CATALOG_MAX_FINGERPRINT)))
    e = col_text(c, s, 1, pending, CATALOG_MAX_FINGERPRINT);
  sqlite3_reset(s);
  pthread_mutex_unlock(&c->lock);
  return e;
}

rpl_err catalog_agent_import(struct catalog *c, const struct catalog_agent *a, const char *pending)
{
  if (!a->cert_fingerprint[0] || strlen(pending) > CATALOG_MAX_FINGERPRINT)
    return RPL_E_INVALID_ARGUMENT;
  pthread_mutex_lock(&c->lock);
  sqlite3_stmt *s = stmt(c, ST_AGENT_IMPORT);
  bind_id(s, 1, a->id);
  bind_text(s, 2, a->hostname);
  bind_text(s, 3, a->cert_fingerprint);
  sqlite3_bind_int64(s, 4, a->registered_time);
  sqlite3_bind_int(s, 5, a->revoked ? 1 : 0);
  bind_text(s, 6, pending);
  rpl_err e = run(c, s, "import an agent of the appliance group", NULL);
  pthread_mutex_unlock(&c->lock);
  return e;
}

rpl_err catalog_agent_foreach(struct catalog *c, int (*fn)(const struct catalog_agent *, void *), void *ctx)
{
  pthread_mutex_lock(&c->lock);
  sqlite3_stmt *s = stmt(c, ST_AGENT_ALL);
  struct catalog_agent a;
  rpl_err e;
  while ((e = next_row(c, s, "list agents")) == RPL_OK && (e = read_agent(c, s, &a)) == RPL_OK)
    if (fn(&a, ctx))
      break;
  sqlite3_reset(s);
  pthread_mutex_unlock(&c->lock);
  return e == RPL_E_NOT_FOUND ? RPL_OK : e;
}

/* ---- disks -------------------------------------------------------------------------------- */

static const char *const disk_state_names[] = {
  [CATALOG_DISK_INITIAL_SYNC] = "initial-sync",
  [CATALOG_DISK_PROTECTED] = "protected",
  [CATALOG_DISK_RESYNC_REQUIRED] = "resync-required",
  [CATALOG_DISK_ERROR] = "error",
};

const char *catalog_disk_state_name(enum catalog_disk_state s)
{
  return (unsigned)s < sizeof disk_state_names / sizeof *disk_state_names ? disk_state_names[s] : "unknown";
}

static rpl_err read_disk(struct catalog *c, sqlite3_stmt *s, struct catalog_disk *d)
{
  memset(d, 0, sizeof *d);
  rpl_err e;
  if ((e = col_id(c, s, 0, d->id)) || (e = col_id(c, s, 1, d->agent_id)) ||
      (e = col_text(c, s, 2, d->name, CATALOG_MAX_NAME)) ||
      (e = col_text(c, s, 6, d->state_reason, CATALOG_MAX_REASON)))
    return e;
  d->size_bytes = col_u64(s, 3);
  d->sector_size = (uint32_t)sqlite3_column_int(s, 4);
  const unsigned char *state = sqlite3_column_text(s, 5);
  size_t i = 0;
  while (i < sizeof disk_state_names / sizeof *disk_state_names &&
         (!state || strcmp((const char *)state, disk_state_names[i])))
    i++;
  if (i == sizeof disk_state_names / sizeof *disk_state_names)
    return RPL_E_CATALOG_CORRUPT; /* the CHECK constraint makes this unreachable short of damage */
  d->state = (enum catalog_disk_state)i;
  d->last_committed_cycle = col_u64(s, 7);
  d->last_applied_cycle = col_u64(s, 8);
  d->unprotected_time = sqlite3_column_int64(s, 9);
  return RPL_OK;
}

rpl_err catalog_disk_upsert(struct catalog *c, const struct catalog_disk *d)
{
  if (!memchr(d->name, 0, sizeof d->name) || !d->name[0] || !fits_int64(d->size_bytes) ||
      (d->sector_size != 512 && d->sector_size != 4096) || d->size_bytes % d->sector_size)
    return RPL_E_INVALID_ARGUMENT;
  pthread_mutex_lock(&c->lock);
  sqlite3_stmt *s = stmt(c, ST_DISK_UPSERT);
  bind_id(s, 1, d->id);
  bind_id(s, 2, d->agent_id);
  bind_text(s, 3, d->name);
  sqlite3_bind_int64(s, 4, (sqlite3_int64)d->size_bytes);
  sqlite3_bind_int(s, 5, (int)d->sector_size);
  int changed = 0;
  rpl_err e = run(c, s, "add or update disk", &changed);
  pthread_mutex_unlock(&c->lock);
  if (!e && changed == 0) /* the row is another agent's: its owner never changes here */
    return rpl_fail(RPL_E_PERMISSION, "disk is registered to another agent");
  return e;
}

rpl_err catalog_disk_get(struct catalog *c, const uint8_t id[PROTO_ID_SIZE], struct catalog_disk *out)
{
  pthread_mutex_lock(&c->lock);
  sqlite3_stmt *s = stmt(c, ST_DISK_GET);
  bind_id(s, 1, id);
  rpl_err e;
  GET_ONE(c, s, "get disk", read_disk, out);
  pthread_mutex_unlock(&c->lock);
  return e;
}

rpl_err catalog_disk_delete(struct catalog *c, const uint8_t id[PROTO_ID_SIZE])
{
  pthread_mutex_lock(&c->lock);
  sqlite3_stmt *s = stmt(c, ST_DISK_DELETE);
  bind_id(s, 1, id);
  rpl_err e = update_one(c, s, "delete a disk"); /* its cycles and points go with it (ON DELETE CASCADE) */
  pthread_mutex_unlock(&c->lock);
  return e;
}

rpl_err catalog_disk_set_unprotected(struct catalog *c, const uint8_t id[PROTO_ID_SIZE], int64_t when)
{
  pthread_mutex_lock(&c->lock);
  sqlite3_stmt *s = stmt(c, ST_DISK_UNPROTECT);
  bind_id(s, 1, id);
  sqlite3_bind_int64(s, 2, when);
  rpl_err e = update_one(c, s, "record disk unprotected");
  pthread_mutex_unlock(&c->lock);
  return e;
}

rpl_err catalog_disk_set_state(struct catalog *c, const uint8_t id[PROTO_ID_SIZE], enum catalog_disk_state state,
                               const char *reason)
{
  if ((unsigned)state >= sizeof disk_state_names / sizeof *disk_state_names ||
      (reason && strlen(reason) > CATALOG_MAX_REASON))
    return RPL_E_INVALID_ARGUMENT;
  pthread_mutex_lock(&c->lock);
  sqlite3_stmt *s = stmt(c, ST_DISK_SET_STATE);
  bind_id(s, 1, id);
  bind_text(s, 2, disk_state_names[state]);
  bind_text(s, 3, reason ? reason : "");
  rpl_err e = update_one(c, s, "set disk state");
  pthread_mutex_unlock(&c->lock);
  return e;
}

rpl_err catalog_disk_foreach(struct catalog *c, const uint8_t *agent_id, int (*fn)(const struct catalog_disk *, void *),
                             void *ctx)
{
  pthread_mutex_lock(&c->lock);
  sqlite3_stmt *s = stmt(c, agent_id ? ST_DISK_OF_AGENT : ST_DISK_ALL);
  if (agent_id)
    bind_id(s, 1, agent_id);
  struct catalog_disk *d = malloc(sizeof *d);
  rpl_err e = d ? RPL_OK : RPL_E_NOMEM;
  while (e == RPL_OK && (e = next_row(c, s, "list disks")) == RPL_OK && (e = read_disk(c, s, d)) == RPL_OK)
    if (fn(d, ctx))
      break;
  sqlite3_reset(s);
  free(d);
  pthread_mutex_unlock(&c->lock);
  return e == RPL_E_NOT_FOUND ? RPL_OK : e;
}

/* ---- cycles ------------------------------------------------------------------------------- */

static const char *const cycle_kind_names[] = {
  [PROTO_CYCLE_PLAIN] = "plain",
  [PROTO_CYCLE_RECOVERY_POINT] = "recovery-point",
  [PROTO_CYCLE_RESYNC] = "resync",
};

rpl_err catalog_cycle_committed(struct catalog *c, const struct catalog_cycle *cy)
{
  if (cy->kind >= sizeof cycle_kind_names / sizeof *cycle_kind_names || cy->n == 0 || !fits_int64(cy->n) ||
      !fits_int64(cy->extents) || !fits_int64(cy->raw_bytes) || !fits_int64(cy->payload_bytes))
    return RPL_E_INVALID_ARGUMENT;
  pthread_mutex_lock(&c->lock);
  rpl_err e = begin_tx(c);
  if (e == RPL_OK) {
    sqlite3_stmt *s = stmt(c, ST_CYCLE_ADD);
    bind_id(s, 1, cy->disk_id);
    sqlite3_bind_int64(s, 2, (sqlite3_int64)cy->n);
    bind_text(s, 3, cycle_kind_names[cy->kind]);
    sqlite3_bind_int64(s, 4, cy->committed_time);
    sqlite3_bind_int64(s, 5, (sqlite3_int64)cy->extents);
    sqlite3_bind_int64(s, 6, (sqlite3_int64)cy->raw_bytes);
    sqlite3_bind_int64(s, 7, (sqlite3_int64)cy->payload_bytes);
    e = run(c, s, "record cycle", NULL);
  }
  if (e == RPL_OK) {
    sqlite3_stmt *s = stmt(c, ST_DISK_COMMITTED);
    bind_id(s, 1, cy->disk_id);
    sqlite3_bind_int64(s, 2, (sqlite3_int64)cy->n);
    e = update_one(c, s, "record last committed cycle");
  }
  e = end_tx(c, e);
  pthread_mutex_unlock(&c->lock);
  return e;
}

rpl_err catalog_cycle_applied(struct catalog *c, const uint8_t disk_id[PROTO_ID_SIZE], uint64_t n, int64_t time)
{
  if (!fits_int64(n))
    return RPL_E_INVALID_ARGUMENT;
  pthread_mutex_lock(&c->lock);
  rpl_err e = begin_tx(c);
  if (e == RPL_OK) {
    sqlite3_stmt *s = stmt(c, ST_CYCLE_APPLIED);
    bind_id(s, 1, disk_id);
    sqlite3_bind_int64(s, 2, (sqlite3_int64)n);
    sqlite3_bind_int64(s, 3, time);
    e = update_one(c, s, "record applied cycle");
  }
  if (e == RPL_OK) {
    sqlite3_stmt *s = stmt(c, ST_DISK_APPLIED);
    bind_id(s, 1, disk_id);
    sqlite3_bind_int64(s, 2, (sqlite3_int64)n);
    e = update_one(c, s, "record last applied cycle");
  }
  e = end_tx(c, e);
  pthread_mutex_unlock(&c->lock);
  return e;
}

static rpl_err read_cycle(struct catalog *c, sqlite3_stmt *s, struct catalog_cycle *cy)
{
  const unsigned char *kind = sqlite3_column_text(s, 0);
  size_t i = 0;
  while (i < sizeof cycle_kind_names / sizeof *cycle_kind_names &&
         (!kind || strcmp((const char *)kind, cycle_kind_names[i])))
    i++;
  if (i == sizeof cycle_kind_names / sizeof *cycle_kind_names) {
    log_err("catalog %s: a cycle has an unknown kind", c->path);
    return RPL_E_CATALOG_CORRUPT;
  }
  cy->kind = (uint8_t)i;
  cy->committed_time = sqlite3_column_int64(s, 1);
  cy->extents = col_u64(s, 2);
  cy->raw_bytes = col_u64(s, 3);
  cy->payload_bytes = col_u64(s, 4);
  cy->applied_time = sqlite3_column_int64(s, 5);
  return RPL_OK;
}

rpl_err catalog_cycle_get(struct catalog *c, const uint8_t disk_id[PROTO_ID_SIZE], uint64_t n,
                          struct catalog_cycle *out)
{
  if (!fits_int64(n))
    return RPL_E_INVALID_ARGUMENT;
  memset(out, 0, sizeof *out);
  memcpy(out->disk_id, disk_id, PROTO_ID_SIZE);
  out->n = n;
  pthread_mutex_lock(&c->lock);
  sqlite3_stmt *s = stmt(c, ST_CYCLE_GET);
  bind_id(s, 1, disk_id);
  sqlite3_bind_int64(s, 2, (sqlite3_int64)n);
  rpl_err e;
  GET_ONE(c, s, "get cycle", read_cycle, out);
  pthread_mutex_unlock(&c->lock);
  return e;
}

rpl_err catalog_cycle_prune(struct catalog *c, const uint8_t disk_id[PROTO_ID_SIZE], uint64_t below_n)
{
  if (!fits_int64(below_n))
    return RPL_E_INVALID_ARGUMENT;
  pthread_mutex_lock(&c->lock);
  sqlite3_stmt *s = stmt(c, ST_CYCLE_PRUNE);
  bind_id(s, 1, disk_id);
  sqlite3_bind_int64(s, 2, (sqlite3_int64)below_n);
  rpl_err e = run(c, s, "prune cycles", NULL);
  pthread_mutex_unlock(&c->lock);
  return e;
}

/* ---- recovery points ---------------------------------------------------------------------- */

static const char *const point_kind_names[] = {
  [CATALOG_POINT_FILESYSTEM_CONSISTENT] = "filesystem-consistent",
  [CATALOG_POINT_CRASH_CONSISTENT] = "crash-consistent",
  [CATALOG_POINT_APPLICATION_CONSISTENT] = "application-consistent",
};
#define POINT_KINDS (sizeof point_kind_names / sizeof *point_kind_names)

static const char *const point_made_by_names[] = {
  [CATALOG_MADE_BY_CHECKPOINT] = "checkpoint",
  [CATALOG_MADE_BY_SCHEDULE] = "schedule",
  [CATALOG_MADE_BY_PAGE] = "page",
};
#define POINT_MADE_BY (sizeof point_made_by_names / sizeof *point_made_by_names)

const char *catalog_point_kind_name(enum catalog_point_kind k)
{
  return (unsigned)k < POINT_KINDS ? point_kind_names[k] : "unknown";
}

const char *catalog_point_made_by_name(enum catalog_point_made_by m)
{
  return (unsigned)m < POINT_MADE_BY ? point_made_by_names[m] : "unknown";
}

/* The index of text in names, or -1. */
static int name_index(const unsigned char *text, const char *const *names, size_t n)
{
  for (size_t i = 0; text && i < n; i++)
    if (!strcmp((const char *)text, names[i]))
      return (int)i;
  return -1;
}

static rpl_err read_point(struct catalog *c, sqlite3_stmt *s, struct catalog_point *p)
{
  memset(p, 0, sizeof *p);
  p->id = sqlite3_column_int64(s, 0);
  rpl_err e = col_id(c, s, 1, p->disk_id);
  if (e)
    return e;
  p->cycle = col_u64(s, 2);
  p->time = sqlite3_column_int64(s, 3);
  int kind = name_index(sqlite3_column_text(s, 4), point_kind_names, POINT_KINDS);
  int made_by = name_index(sqlite3_column_text(s, 6), point_made_by_names, POINT_MADE_BY);
  int64_t freeze_ms = sqlite3_column_int64(s, 7);
  if (kind < 0 || made_by < 0 || freeze_ms < 0 || freeze_ms > UINT32_MAX)
    return RPL_E_CATALOG_CORRUPT;
  p->kind = (enum catalog_point_kind)kind;
  p->made_by = (enum catalog_point_made_by)made_by;
  p->freeze_ms = (uint32_t)freeze_ms;
  p->group_id = sqlite3_column_int64(s, 8);
  int64_t window = sqlite3_column_int64(s, 10);
  if (window < 0 || window > UINT32_MAX)
    return RPL_E_CATALOG_CORRUPT;
  p->group_window_ms = (uint32_t)window;
  rpl_err ge = col_text(c, s, 9, p->consistency_group, CATALOG_MAX_GROUP_NAME);
  if (ge)
    return ge;
  p->has_snapshot = sqlite3_column_type(s, 5) != SQLITE_NULL;
  return p->has_snapshot ? col_text(c, s, 5, p->snapshot_id, CATALOG_MAX_SNAPSHOT_ID) : RPL_OK;
}

/* Calls fn for each point the bound statement s selects, until fn returns non-zero. c->lock held. */
static rpl_err each_point(struct catalog *c, sqlite3_stmt *s, const char *what,
                          int (*fn)(const struct catalog_point *, void *), void *ctx)
{
  struct catalog_point p;
  rpl_err e;
  while ((e = next_row(c, s, what)) == RPL_OK && (e = read_point(c, s, &p)) == RPL_OK)
    if (fn(&p, ctx))
      break;
  sqlite3_reset(s);
  return e == RPL_E_NOT_FOUND ? RPL_OK : e;
}

rpl_err catalog_point_add(struct catalog *c, const struct catalog_point *p, int64_t *id)
{
  if ((unsigned)p->kind >= POINT_KINDS || (unsigned)p->made_by >= POINT_MADE_BY || !fits_int64(p->cycle) ||
      (p->has_snapshot && (!memchr(p->snapshot_id, 0, sizeof p->snapshot_id) || !p->snapshot_id[0])) ||
      !memchr(p->consistency_group, 0, sizeof p->consistency_group))
    return RPL_E_INVALID_ARGUMENT;
  pthread_mutex_lock(&c->lock);
  sqlite3_stmt *s = stmt(c, ST_POINT_ADD);
  bind_id(s, 1, p->disk_id);
  sqlite3_bind_int64(s, 2, (sqlite3_int64)p->cycle);
  sqlite3_bind_int64(s, 3, p->time);
  bind_text(s, 4, point_kind_names[p->kind]);
  if (p->has_snapshot)
    bind_text(s, 5, p->snapshot_id);
  else
    sqlite3_bind_null(s, 5);
  bind_text(s, 6, point_made_by_names[p->made_by]);
  sqlite3_bind_int64(s, 7, p->freeze_ms);
  sqlite3_bind_int64(s, 8, p->group_id);
  bind_text(s, 9, p->consistency_group);
  sqlite3_bind_int64(s, 10, p->group_window_ms);
  rpl_err e = run(c, s, "record recovery point", NULL);
  if (e == RPL_OK && id)
    *id = sqlite3_last_insert_rowid(c->db);
  pthread_mutex_unlock(&c->lock);
  return e;
}

rpl_err catalog_point_get(struct catalog *c, int64_t id, struct catalog_point *out)
{
  pthread_mutex_lock(&c->lock);
  sqlite3_stmt *s = stmt(c, ST_POINT_GET);
  sqlite3_bind_int64(s, 1, id);
  rpl_err e;
  GET_ONE(c, s, "get recovery point", read_point, out);
  pthread_mutex_unlock(&c->lock);
  return e;
}

rpl_err catalog_point_latest(struct catalog *c, const uint8_t disk_id[PROTO_ID_SIZE], struct catalog_point *out)
{
  pthread_mutex_lock(&c->lock);
  sqlite3_stmt *s = stmt(c, ST_POINT_LATEST);
  bind_id(s, 1, disk_id);
  rpl_err e;
  GET_ONE(c, s, "get latest recovery point", read_point, out);
  pthread_mutex_unlock(&c->lock);
  return e;
}

rpl_err catalog_point_foreach(struct catalog *c, const uint8_t disk_id[PROTO_ID_SIZE],
                              int (*fn)(const struct catalog_point *, void *), void *ctx)
{
  pthread_mutex_lock(&c->lock);
  sqlite3_stmt *s = stmt(c, ST_POINT_ALL);
  bind_id(s, 1, disk_id);
  rpl_err e = each_point(c, s, "list recovery points", fn, ctx);
  pthread_mutex_unlock(&c->lock);
  return e;
}

rpl_err catalog_point_set_group(struct catalog *c, int64_t id, int64_t group_id)
{
  pthread_mutex_lock(&c->lock);
  sqlite3_stmt *s = stmt(c, ST_POINT_SET_GROUP);
  sqlite3_bind_int64(s, 1, id);
  sqlite3_bind_int64(s, 2, group_id);
  rpl_err e = update_one(c, s, "set recovery point group");
  pthread_mutex_unlock(&c->lock);
  return e;
}

rpl_err catalog_point_group_foreach(struct catalog *c, int64_t group_id, int (*fn)(const struct catalog_point *, void *),
                                    void *ctx)
{
  pthread_mutex_lock(&c->lock);
  sqlite3_stmt *s = stmt(c, ST_POINT_GROUP);
  sqlite3_bind_int64(s, 1, group_id);
  rpl_err e = each_point(c, s, "list a group's recovery points", fn, ctx);
  pthread_mutex_unlock(&c->lock);
  return e;
}

rpl_err catalog_point_delete(struct catalog *c, int64_t id)
{
  pthread_mutex_lock(&c->lock);
  sqlite3_stmt *s = stmt(c, ST_POINT_DELETE);
  sqlite3_bind_int64(s, 1, id);
  rpl_err e = update_one(c, s, "delete recovery point");
  pthread_mutex_unlock(&c->lock);
  return e;
}

rpl_err catalog_point_pruned(struct catalog *c, int64_t id)
{
  pthread_mutex_lock(&c->lock);
  sqlite3_stmt *s = stmt(c, ST_POINT_PRUNED);
  sqlite3_bind_int64(s, 1, id);
  rpl_err e = update_one(c, s, "mark recovery point pruned");
  pthread_mutex_unlock(&c->lock);
  return e;
}

/* ---- consistency groups ------------------------------------------------------------------- */

/* Whether disk id may join a group: known, protected, in no group. c->lock held, in a transaction. */
static rpl_err group_disk_check(struct catalog *c, const uint8_t id[PROTO_ID_SIZE])
{
  sqlite3_stmt *s = stmt(c, ST_GROUP_DISK_OK);
  bind_id(s, 1, id);
  rpl_err e = next_row(c, s, "check a group member");
  char hex[37];
  snprintf(hex, sizeof hex, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", id[0], id[1],
           id[2], id[3], id[4], id[5], id[6], id[7], id[8], id[9], id[10], id[11], id[12], id[13], id[14], id[15]);
  if (e == RPL_E_NOT_FOUND)
    e = rpl_fail(RPL_E_GROUP_MEMBER, "disk %s is not known to this appliance", hex);
  else if (!e && sqlite3_column_int64(s, 0) != 0)
    e = rpl_fail(RPL_E_GROUP_MEMBER, "disk %s was unprotected", hex);
  else if (!e && sqlite3_column_type(s, 1) != SQLITE_NULL)
    e = rpl_fail(RPL_E_GROUP_MEMBER, "disk %s is a member of group %s already", hex,
                 (const char *)sqlite3_column_text(s, 1));
  sqlite3_reset(s);
  return e;
}

rpl_err catalog_group_create(struct catalog *c, const struct catalog_group *g)
{
  if (!proto_group_name_ok(g->name, strnlen(g->name, sizeof g->name)))
    return RPL_E_GROUP_NAME;
  if (g->n == 0)
    return RPL_E_GROUP_EMPTY;
  if (g->n > CATALOG_GROUP_MAX_DISKS)
    return rpl_fail(RPL_E_LIMIT, "a group has at most %d disks", CATALOG_GROUP_MAX_DISKS);
  pthread_mutex_lock(&c->lock);
  rpl_err e = begin_tx(c);
  if (!e) {
    sqlite3_stmt *s = stmt(c, ST_GROUP_ADD);
    bind_text(s, 1, g->name);
    sqlite3_bind_int64(s, 2, g->created_time);
    if ((e = run(c, s, "add a consistency group", NULL)) == RPL_E_EXISTS)
      e = rpl_fail(RPL_E_GROUP_EXISTS, "group %s exists already", g->name);
  }
  for (size_t i = 0; i < g->n && !e; i++) {
    for (size_t k = 0; k < i && !e; k++)
      if (!memcmp(g->disks[k], g->disks[i], PROTO_ID_SIZE))
        e = rpl_fail(RPL_E_GROUP_MEMBER, "a disk is named twice");
    if (!e)
      e = group_disk_check(c, g->disks[i]);
    if (!e) {
      sqlite3_stmt *s = stmt(c, ST_GROUP_MEMBER_ADD);
      bind_text(s, 1, g->name);
      bind_id(s, 2, g->disks[i]);
      e = run(c, s, "add a group member", NULL);
    }
  }
  e = end_tx(c, e);
  pthread_mutex_unlock(&c->lock);
  return e;
}

rpl_err catalog_group_delete(struct catalog *c, const char *name)
{
  pthread_mutex_lock(&c->lock);
  sqlite3_stmt *s = stmt(c, ST_GROUP_DELETE);
  bind_text(s, 1, name);
  rpl_err e = update_one(c, s, "delete a consistency group"); /* its members go with it (ON DELETE CASCADE) */
  pthread_mutex_unlock(&c->lock);
  return e == RPL_E_NOT_FOUND ? RPL_E_GROUP_UNKNOWN : e;
}

rpl_err catalog_group_foreach(struct catalog *c, int (*fn)(const struct catalog_group *, void *), void *ctx)
{
  struct catalog_group *g = calloc(1, sizeof *g);
  if (!g)
    return RPL_E_NOMEM;
  pthread_mutex_lock(&c->lock);
  sqlite3_stmt *s = stmt(c, ST_GROUP_ALL);
  rpl_err e;
  bool have = false, stop = false;
  while (!stop && (e = next_row(c, s, "list consistency groups")) == RPL_OK) {
    char name[CATALOG_MAX_GROUP_NAME + 1];
    if ((e = col_text(c, s, 0, name, CATALOG_MAX_GROUP_NAME)))
      break;
    if (have && strcmp(name, g->name)) {
      stop = fn(g, ctx) != 0;
      have = false;
    }
    if (!have) {
      memset(g, 0, sizeof *g);
      memcpy(g->name, name, sizeof g->name);
      g->created_time = sqlite3_column_int64(s, 1);
      have = true;
    }
    if (sqlite3_column_type(s, 2) != SQLITE_NULL && g->n < CATALOG_GROUP_MAX_DISKS &&
        (e = col_id(c, s, 2, g->disks[g->n++])))
      break;
  }
  if (e == RPL_E_NOT_FOUND) {
    e = RPL_OK;
    if (have && !stop)
      fn(g, ctx);
  }
  sqlite3_reset(s);
  pthread_mutex_unlock(&c->lock);
  free(g);
  return e;
}

struct group_find {
  const char *name;
  struct catalog_group *out;
  bool found;
};

static int group_find_cb(const struct catalog_group *g, void *ctx)
{
  struct group_find *gf = ctx;
  if (strcmp(g->name, gf->name))
    return 0;
  *gf->out = *g;
  gf->found = true;
  return 1;
}

rpl_err catalog_group_get(struct catalog *c, const char *name, struct catalog_group *out)
{
  struct group_find gf = {.name = name, .out = out};
  rpl_err e = catalog_group_foreach(c, group_find_cb, &gf);
  return e ? e : gf.found ? RPL_OK : RPL_E_GROUP_UNKNOWN;
}
