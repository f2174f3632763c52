/* web_internal.h - what the configuration manager's parts share (limits, server state, requests, JSON
 * replies). Only web.c and web_api.c may include it; the rest use web.h. */
#ifndef RPL_WEB_INTERNAL_H
#define RPL_WEB_INTERNAL_H

#include "web.h"

#include <microhttpd.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "json_out.h"

#define MAX_SESSIONS      16
#define SESSION_IDLE_S    (30 * 60)
#define SESSION_MAX_S     (12 * 60 * 60)
#define MAX_CLIENTS       64        /* login rate limiter entries */
#define LOGIN_FAILS       5         /* failures per client ... */
#define LOGIN_WINDOW_S    60        /* ... per window, then 429 */
#define MAX_BODY          (16u << 10)
#define MAX_FIELDS        8
#define MAX_FIELD         2048
#define MAX_REPLY         (4u << 20)
#define MAX_ASSET         (1u << 20)
#define MAX_METRICS       (16u << 20) /* one scrape's text (about 10 KiB a disk: MAX_DISKS fit) */
#define MAX_SERIES_DISKS  64
#define MAX_SERIES_LEN    720
#define MAX_LIST_DISKS    1024
#define COOKIE_NAME       "rpl_session"

struct session {
  bool used;
  char id[65];
  char csrf[65];
  time_t created, seen;
};

struct client {
  char addr[64];
  time_t window_start;
  unsigned failures;
};

struct sample {
  int64_t t;
  uint64_t lag, backlog, churn; /* churn: bytes per second over the last interval */
};

struct series {
  uint8_t id[PROTO_ID_SIZE];
  bool used;
  uint64_t last_raw;
  bool have_raw;
  unsigned head, count;
  struct sample s[MAX_SERIES_LEN];
};

struct asset {
  const char *name, *type;
  char *data;
  size_t len;
};

struct web_server {
  struct web_config cfg;
  char state_dir[4096];
  char *cert, *key; /* the listeners' certificate chain and key */
  char *ca;         /* the authority's certificate: its fingerprint is in every registration key */
  struct MHD_Daemon *mhd;
  pthread_mutex_t lock;           /* sessions, clients, series */
  struct session sessions[MAX_SESSIONS];
  struct client clients[MAX_CLIENTS];
  struct series *series;          /* MAX_SERIES_DISKS */
  unsigned series_len;
  pthread_mutex_t check_lock;     /* one check at a time; the cached result */
  char *check_doc;
  int64_t check_time;
  pthread_mutex_t settings_lock;  /* appliance.conf read-modify-write */
  struct asset assets[3];
  pthread_t sampler;
  bool sampler_started;
  pthread_mutex_t stop_lock;
  pthread_cond_t stop_cond;
  bool stopping;
};

struct req {
  bool is_post, is_form;
  struct MHD_PostProcessor *pp;
  size_t body;
  bool too_large, bad_field;
  char bad_name[64];
  size_t nfields;
  struct {
    char name[32];
    char value[MAX_FIELD + 1];
    size_t len;
  } fields[MAX_FIELDS];
};
/* A JSON document under construction (open_memstream; capped at MAX_REPLY when sent). */
struct doc {
  char *buf;
  size_t len;
  FILE *f;
  struct json_out j;
};

/* web.c */
enum MHD_Result web_send_buf(struct MHD_Connection *c, unsigned status, const char *type, const char *buf,
                             size_t len, const char *cookie);
bool web_doc_open(struct doc *d);
enum MHD_Result web_doc_send(struct MHD_Connection *c, struct doc *d, unsigned status, const char *cookie);
enum MHD_Result web_reply_error(struct MHD_Connection *c, unsigned status, const char *fmt, ...)
  __attribute__((format(printf, 3, 4)));
enum MHD_Result web_reply_ok(struct MHD_Connection *c, const char *message);
/* {"ok": true, "message": ...} with another status than 200 (202: asked for, done later). */
enum MHD_Result web_reply_message(struct MHD_Connection *c, unsigned status, const char *message);
const char *web_field(const struct req *q, const char *name);
const char *web_unknown_field(const struct req *q, const char *const *allowed);
bool web_printable(const char *s);

/* web_api.c */
enum MHD_Result web_api_status(struct web_server *w, struct MHD_Connection *c);
enum MHD_Result web_api_check(struct web_server *w, struct MHD_Connection *c, bool rerun);
enum MHD_Result web_api_proxy_get(struct web_server *w, struct MHD_Connection *c);
enum MHD_Result web_api_proxy_post(struct web_server *w, struct MHD_Connection *c, const struct req *q);
enum MHD_Result web_api_registration(struct web_server *w, struct MHD_Connection *c, bool regenerate);
enum MHD_Result web_api_agents(struct web_server *w, struct MHD_Connection *c);
enum MHD_Result web_api_revoke(struct web_server *w, struct MHD_Connection *c, const char *idtext, size_t len);
enum MHD_Result web_api_disk_action(struct web_server *w, struct MHD_Connection *c, const char *idtext, size_t len,
                                    enum web_disk_action act);
enum MHD_Result web_api_disk_unprotect(struct web_server *w, struct MHD_Connection *c, const char *idtext, size_t len,
                                       const struct req *q);
enum MHD_Result web_api_points(struct web_server *w, struct MHD_Connection *c);
enum MHD_Result web_api_schedule(struct web_server *w, struct MHD_Connection *c, const struct req *q);
enum MHD_Result web_api_alerts(struct web_server *w, struct MHD_Connection *c, const struct req *q);
enum MHD_Result web_api_alerts_test(struct web_server *w, struct MHD_Connection *c, const struct req *q);
void *web_sampler_main(void *arg);
enum MHD_Result web_api_series(struct web_server *w, struct MHD_Connection *c);

#endif
