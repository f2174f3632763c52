/* web.h - the configuration manager (HTTPS page and JSON API inside `replication-appliance run`) and
 * its login secrets in the state directory. Internal to appliance/: cmd_run.c starts the server,
 * cmd_init.c sets the admin password or issues the one-time login token. */
#ifndef APPLIANCE_WEB_H
#define APPLIANCE_WEB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "catalog.h"
#include "schedule.h"
#include "thresholds.h"
#include "proto.h"
#include "rpl_error.h"
#include "state_files.h"

#define WEB_DEFAULT_ADDR      "127.0.0.1:44368"
#define WEB_PASSWORD_MIN      8
#define WEB_PASSWORD_MAX      256
#define WEB_TOKEN_CHARS       43                   /* base64url of 32 random bytes */
#define WEB_METRICS_TOKEN_MIN 32                   /* an operator's own /metrics token is at least this long */

/* ---- login secrets (web_auth.c) ----------------------------------------------------------- */

/* Stores a salted PBKDF2-SHA256 hash of password as STATE/web-admin.pbkdf2 (STATE_WEB_ADMIN, 0600); the password must be
 * WEB_PASSWORD_MIN..WEB_PASSWORD_MAX bytes without control characters (RPL_E_WEB_PASSWORD). */
RPL_MUST_CHECK rpl_err web_auth_set_password(const char *state_dir, const char *password);
/* Reads the first line of path as a password into out (RPL_E_WEB_PASSWORD if unusable). */
RPL_MUST_CHECK rpl_err web_auth_read_password_file(const char *path, char *out, size_t outsz);
/* Issues a one-time login token (written to token, WEB_TOKEN_CHARS + 1 bytes); only its hash is kept. */
RPL_MUST_CHECK rpl_err web_auth_issue_token(const char *state_dir, char token[WEB_TOKEN_CHARS + 1]);
/* *ok = password matches the stored admin password (false when none is set). */
RPL_MUST_CHECK rpl_err web_auth_check_password(const char *state_dir, const char *password, bool *ok);
/* *ok = token matches the one-time token, which is then removed (used once). */
RPL_MUST_CHECK rpl_err web_auth_use_token(const char *state_dir, const char *token, bool *ok);
/* A login-secret file's content, "pbkdf2-sha256 ITER SALTHEX HASHHEX" (what a store wrote), parsed
 * (RPL_E_WEB_AUTH_FILE if malformed): apart from the file reading, so it is fuzzed on bytes. */
#define WEB_AUTH_SALT_SIZE 16
#define WEB_AUTH_HASH_SIZE 32
struct web_auth_hash {
  unsigned iter;
  uint8_t salt[WEB_AUTH_SALT_SIZE], hash[WEB_AUTH_HASH_SIZE];
};
RPL_MUST_CHECK rpl_err web_auth_parse(const char *buf, size_t len, struct web_auth_hash *out);
/* True when an admin password is set. */
bool web_auth_has_password(const char *state_dir);
/* Makes STATE/metrics-token (0600, a fresh random token) unless it exists; *created says it was made. */
RPL_MUST_CHECK rpl_err web_auth_metrics_token_ensure(const char *state_dir, bool *created);
/* *ok = presented is the token in STATE/metrics-token (its first line: WEB_METRICS_TOKEN_MIN..
 * WEB_PASSWORD_MAX printable characters without spaces; a shorter or missing one matches nothing). */
RPL_MUST_CHECK rpl_err web_auth_metrics_check(const char *state_dir, const char *presented, bool *ok);

/* ---- the server (web.c) ------------------------------------------------------------------- */

enum web_disk_action { WEB_DISK_CHECKPOINT, WEB_DISK_RESYNC };

/* One disk's figures at a sampling instant, for the last hour's series. */
struct web_disk_sample {
  uint8_t disk_id[PROTO_ID_SIZE];
  uint64_t rpo_lag_s;
  uint64_t backlog_bytes;
  uint64_t committed_raw_bytes; /* cumulative since start: the churn is its rate */
};
typedef void (*web_sample_fn)(void *arg, const struct web_disk_sample *s);

/* What the server needs from the daemon; each function is thread-safe. */
struct web_ops {
  void *ctx;
  /* Writes the `status --json` document to f. */
  void (*status_json)(void *ctx, FILE *f);
  /* Calls fn for every disk. */
  void (*sample)(void *ctx, web_sample_fn fn, void *arg);
  /* Asks for a checkpoint or a resync of a disk; RPL_E_NOT_FOUND (no such disk) or another error with
   * its detail (rpl_detail, on the calling thread) saying why (the agent is not connected). */
  rpl_err (*disk_request)(void *ctx, const uint8_t id[PROTO_ID_SIZE], enum web_disk_action act);
  /* Asks the disk's agent to unprotect it (and the appliance then to delete its replica, points,
   * cache and catalog rows, with delete_replica); errors as disk_request's (the agent is not
   * connected, or too old to be asked). */
  rpl_err (*disk_unprotect)(void *ctx, const uint8_t id[PROTO_ID_SIZE], bool delete_replica);
  /* The recovery-point schedule in use, as text ("crash=5m,app=1h"), and a new one to use now
   * (already checked by schedule_parse, saved by the caller). */
  void (*schedule_get)(void *ctx, char *text, size_t size);
  void (*schedule_set)(void *ctx, const struct point_schedule *s);
  /* Writes the Prometheus text exposition to f (GET /metrics); NULL: none is served. */
  void (*metrics)(void *ctx, FILE *f);
  /* Writes {"alerts": {...}} (status's member) to f; uses new health thresholds now (already
   * checked by thresholds_parse, saved by the caller); queues a test alert to every webhook
   * (RPL_E_NOT_FOUND with its detail when there is none). */
  void (*alerts_json)(void *ctx, FILE *f);
  void (*thresholds_set)(void *ctx, const struct thresholds *t);
  rpl_err (*alerts_test)(void *ctx, unsigned *queued);
  /* An agent was revoked here: the appliance group hears of it (NULL: in no group). */
  void (*agent_revoked)(void *ctx, const uint8_t id[PROTO_ID_SIZE]);
};

struct web_config {
  const char *addr;       /* "ADDR:PORT" */
  const char *root;       /* static files; NULL: RPL_WEB_ROOT, the installed data dir, the source tree */
  const char *state_dir;
  const char *cert_pem, *key_pem; /* the listeners' certificate, issued by ca_pem */
  const char *ca_pem;             /* the appliance's authority: sent as the chain, named in registration keys */
  struct catalog *cat;    /* thread-safe */
  unsigned sample_s;      /* series interval; 0: 10 s */
  struct web_ops ops;
};

struct web_server;

/* Starts serving HTTPS on its own threads (RPL_E_WEB_START, RPL_E_WEB_ROOT; rpl_detail says more). */
RPL_MUST_CHECK rpl_err web_start(const struct web_config *cfg, struct web_server **out);
/* Stops the server and its sampler; NULL is allowed. */
void web_stop(struct web_server *w);

#endif
