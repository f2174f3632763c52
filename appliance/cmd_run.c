/* cmd_run.c - `replication-appliance run`: options, the daemon's start (settings, identity,
 * catalog, disks, listener, control socket, configuration manager, applier) and its stop. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <getopt.h>
#include <netdb.h>
#include <openssl/crypto.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>

#include "alerts.h"
#include "appliance.h"
#include "channel.h"
#include "commands.h"
#include "conn.h"
#include "events.h"
#include "group_point.h"
#include "identity.h"
#include "lease.h"
#include "rpl_log.h"
#include "rpl_version.h"
#include "sdnotify.h"
#include "state_files.h"

#define DEFAULT_RPO_MS      30000

atomic_int appliance_stopping;

static void on_signal(int sig) { atomic_store(&appliance_stopping, 1); (void)sig; }

static rpl_err listen_on(struct appliance *a)
{
  char host[256], port[16];
  if (conn_split_hostport(a->listen, host, sizeof host, port, sizeof port, CONN_DEFAULT_PORT))
    return RPL_E_INVALID_ARGUMENT;
  struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *ai;
  if (getaddrinfo(strcmp(host, "*") ? host : NULL, port, &hints, &ai))
    return RPL_E_INVALID_ARGUMENT;
  int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  if (fd >= 0)
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 64) != 0) {
    log_err("cannot listen on %s: %s", a->listen, strerror(errno));
    if (fd >= 0)
      close(fd);
    freeaddrinfo(ai);
    return RPL_E_IO;
  }
  freeaddrinfo(ai);
  a->listen_fd = fd;
  return RPL_OK;
}

/* What `run` was asked for on its command line. */
struct run_opts {
  const char *state;
  char listen[256];
  unsigned rpo_ms;
  char web[256];
  bool web_explicit;            /* --web given: failing to serve the page is fatal */
  const char *web_root;
  const char *upload_limit, *agent_limit; /* override the settings for this run, when given */
  const char *points;           /* the point schedule for this run, when given */
  const char *alerts;           /* the health thresholds for this run, when given */
  const char *advertise;        /* HOST:PORT agents reach this appliance at (an appliance group's members) */
  unsigned apply_workers;       /* apply workers (apply_pool.h) */
  unsigned agent_cycles;        /* cycles of different disks one agent runs at once (session.h) */
};

#define RUN_USAGE                                                                                                      \
  "usage: replication-appliance run --state DIR [--listen ADDR:PORT] [--rpo SECONDS] [--upload-limit MBPS] [--agent-limit MBPS]\n" \
  "                                 [--web ADDR:PORT|off] [--web-root DIR] [--points crash=5m,app=1h]\n"                 \
  "                                 [--alerts rpo-warn=auto,rpo-crit=auto,point-age=off,agent-away=90s,cache=80]\n"     \
  "                                 [--advertise HOST:PORT]  (the address agents reach it at, for its appliance group)\n" \
  "                                 [--apply-workers N] [--agent-cycles N]\n"

/* 0 and *o filled, or the exit status after a message on stderr. */
static int parse_run_opts(int argc, char **argv, struct run_opts *o)
{
  *o = (struct run_opts){.state = APPLIANCE_DEFAULT_STATE, .rpo_ms = DEFAULT_RPO_MS,
                          .apply_workers = APPLY_WORKERS_DEFAULT, .agent_cycles = AGENT_CYCLES_DEFAULT};
  snprintf(o->listen, sizeof o->listen, "*:%d", CONN_DEFAULT_PORT);
  snprintf(o->web, sizeof o->web, "%s", WEB_DEFAULT_ADDR);
  static const struct option opts[] = {{"state", required_argument, NULL, 's'},
                                       {"listen", required_argument, NULL, 'l'},
                                       {"rpo", required_argument, NULL, 'r'},
                                       {"upload-limit", required_argument, NULL, 'U'},
                                       {"agent-limit", required_argument, NULL, 'A'},
                                       {"web", required_argument, NULL, 'w'},
                                       {"web-root", required_argument, NULL, 'W'},
                                       {"points", required_argument, NULL, 'T'},
                                       {"alerts", required_argument, NULL, 'H'},
                                       {"advertise", required_argument, NULL, 'D'},
                                       {"apply-workers", required_argument, NULL, 'P'},
                                       {"agent-cycles", required_argument, NULL, 'K'},
                                       {0, 0, 0, 0}};
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
    case 's': o->state = optarg; break;
    case 'l': snprintf(o->listen, sizeof o->listen, "%s", optarg); break;
    case 'w':
      snprintf(o->web, sizeof o->web, "%s", optarg);
      o->web_explicit = true;
      break;
    case 'W': o->web_root = optarg; break;
    case 'r': {
      char *end;
      double secs = strtod(optarg, &end);
      if (*end || secs < 0.1 || secs > 86400) {
        fprintf(stderr, "replication-appliance run: --rpo takes seconds between 0.1 and 86400\n");
        return 2;
      }
      o->rpo_ms = (unsigned)(secs * 1000);
      break;
    }
    case 'U': o->upload_limit = optarg; break;
    case 'A': o->agent_limit = optarg; break;
    case 'T': o->points = optarg; break;
    case 'H': o->alerts = optarg; break;
    case 'D': {
      char host[256], port[16];
      if (strlen(optarg) >= sizeof ((struct appliance *)0)->advertise ||
          conn_split_hostport(optarg, host, sizeof host, port, sizeof port, CONN_DEFAULT_PORT) || !strcmp(host, "*")) {
        fprintf(stderr, "replication-appliance run: --advertise takes the HOST:PORT agents reach this appliance at "
                        "(e.g. 10.0.0.5:9443), not '%s'\n", optarg);
        return 2;
      }
      o->advertise = optarg;
      break;
    }
    case 'P': {
      char *end;
      unsigned long n = strtoul(optarg, &end, 10);
      if (!*optarg || *end || n < APPLY_WORKERS_MIN || n > APPLY_WORKERS_MAX) {
        fprintf(stderr,
                "replication-appliance run: --apply-workers takes a whole number of workers from %d to %d (default %d), "
                "not '%s'\n",
                APPLY_WORKERS_MIN, APPLY_WORKERS_MAX, APPLY_WORKERS_DEFAULT, optarg);
        return 2;
      }
      o->apply_workers = (unsigned)n;
      break;
    }
    case 'K': {
      char *end;
      unsigned long n = strtoul(optarg, &end, 10);
      if (!*optarg || *end || n < AGENT_CYCLES_MIN || n > AGENT_CYCLES_MAX) {
        fprintf(stderr,
                "replication-appliance run: --agent-cycles takes a whole number of cycles one agent runs at once, "
                "from %d to %d (default %d), not '%s'\n",
                AGENT_CYCLES_MIN, AGENT_CYCLES_MAX, AGENT_CYCLES_DEFAULT, optarg);
        return 2;
      }
      o->agent_cycles = (unsigned)n;
      break;
    }
    default: fprintf(stderr, RUN_USAGE); return 2;
    }
  }
  return 0;
}

/* The settings init stored, the retention policy, the backend, the lease id and the limits. 0 or
 * the exit status after a message on stderr. */
static int load_settings(struct appliance *a, const struct run_opts *o)
{
  rpl_err err = settings_load(o->state, &a->settings);
  if (err) {
    fprintf(stderr, "replication-appliance run: %s\n", err == RPL_E_NOT_FOUND ? "not initialised: run 'replication-appliance init' first" : rpl_detail(err));
    return 1;
  }
  if ((err = retention_parse(a->settings.retention, &a->retention))) {
    fprintf(stderr, "replication-appliance run: %s (in %s/%s: run init again with --retention)\n", rpl_detail(err), o->state,
            STATE_APPLIANCE_CONF);
    return 1;
  }
  /* Test-only: compresses the retention policy's time scale (3600: one second counts as an hour). */
  const char *scale = getenv("RPL_TEST_RETENTION_SCALE");
  if (scale && *scale) {
    long v = strtol(scale, NULL, 10);
    a->retention.time_scale = v >= 1 && v <= (long)RETENTION_MAX_SCALE ? (unsigned)v : 1;
    log_warn("RPL_TEST_RETENTION_SCALE=%u: retention runs on a compressed time scale (tests only)", a->retention.time_scale);
  }
  if ((err = schedule_parse(o->points ? o->points : a->settings.points, &a->schedule))) {
    if (o->points)
      fprintf(stderr, "replication-appliance run: --points: %s\n", rpl_detail(err));
    else
      fprintf(stderr, "replication-appliance run: %s (in %s/%s: run init again with --points)\n", rpl_detail(err), o->state,
              STATE_APPLIANCE_CONF);
    return 1;
  }
  if ((err = thresholds_parse(o->alerts ? o->alerts : a->settings.alerts, &a->thresholds))) {
    if (o->alerts)
      fprintf(stderr, "replication-appliance run: --alerts: %s\n", rpl_detail(err));
    else
      fprintf(stderr, "replication-appliance run: %s (in %s/%s: run init again with --alerts)\n", rpl_detail(err), o->state,
              STATE_APPLIANCE_CONF);
    return 1;
  }
  /* Test-only: compresses the point schedule's time scale (60: a point every minute comes every second). */
  const char *sscale = getenv("RPL_TEST_SCHEDULE_SCALE");
  if (sscale && *sscale) {
    long v = strtol(sscale, NULL, 10);
    a->schedule.time_scale = v >= 1 && v <= (long)SCHEDULE_MAX_SCALE ? (unsigned)v : 1;
    log_warn("RPL_TEST_SCHEDULE_SCALE=%u: the point schedule runs on a compressed time scale (tests only)",
             a->schedule.time_scale);
  }
  const char *precopy = getenv("RPL_BENCH_PRECOPY");
  a->no_precopy = precopy && !strcmp(precopy, "off");
  if (a->no_precopy)
    log_warn("RPL_BENCH_PRECOPY=off: recovery points start without their catch-up cycle (benchmarks only)");
  const char *no_direct = getenv("RPL_TEST_NO_DIRECT");
  a->no_direct = no_direct && !strcmp(no_direct, "1");
  if (a->no_direct)
    log_warn("RPL_TEST_NO_DIRECT=1: every cycle goes through the cache and the apply workers (tests only)");
  a->backend = store_backend(&a->settings);
  if (a->backend->leased && (err = lease_owner_id(o->state, a->settings.lease_id))) {
    fprintf(stderr, "replication-appliance run: cannot read or make %s/lease-id: %s\n", o->state, rpl_strerror(err));
    return 1;
  }
  /* Limits given to run override the settings init stored (for this run only). */
  const char *lim_arg[2] = {o->upload_limit, o->agent_limit};
  unsigned *lim_dst[2] = {&a->settings.upload_limit_mbps, &a->settings.agent_limit_mbps};
  for (int i = 0; i < 2; i++)
    if (lim_arg[i] && !rate_limit_parse_mbps(lim_arg[i], lim_dst[i])) {
      fprintf(stderr, "replication-appliance run: --%s takes a whole number of MB/s (10^6 bytes per second) from 0 (no limit) to %u, not '%s'\n",
              i == 0 ? "upload-limit" : "agent-limit", RATELIMIT_MAX_MBPS, lim_arg[i]);
      return 2;
    }
  return 0;
}

/* The upload gate and buckets, the CA, the catalog, the disks and the listener. */
static int open_state(struct appliance *a, const char *state)
{
  rpl_err err;
  if ((err = signer_start(state, &a->signer))) { /* first: a fork copies no thread */
    fprintf(stderr, "replication-appliance run: cannot start the signer process: %s\n", rpl_detail(err));
    return 1;
  }
  rate_limit_init(&a->limit_all, (uint64_t)a->settings.upload_limit_mbps * 1000000);
  if ((err = upload_gate_create(&a->settings, &a->gate)) ||
      (a->settings.agent_limit_mbps && !(a->agent_limits = calloc(MAX_AGENT_LIMITS, sizeof *a->agent_limits)))) {
    fprintf(stderr, "replication-appliance run: %s\n", rpl_strerror(err ? err : RPL_E_NOMEM));
    return 1;
  }
  /* The authority's key stays in the signer; the listeners get a certificate it issued. */
  if ((err = identity_load_authority(state, &a->ca_cert))) {
    fprintf(stderr, "replication-appliance run: the appliance's certificate in %s is missing or invalid (%s): run init again\n",
            state, rpl_strerror(err));
    return 1;
  }
  if ((err = identity_server_cert(state, a->signer, a->ca_cert, &a->server_cert, &a->server_key)) ||
      (err = chan_server_ctx(a->server_cert, a->server_key, a->ca_cert, &a->ctx))) {
    fprintf(stderr, "replication-appliance run: cannot issue or use the listeners' certificate in %s: %s\n", state,
            rpl_detail(err));
    return 1;
  }
  identity_remove_legacy_regkey(state);
  if ((err = identity_open_catalog(state, &a->cat))) {
    fprintf(stderr, "replication-appliance run: cannot open the catalog: %s\n", rpl_strerror(err));
    return 1;
  }
  if ((err = members_load(state, &a->members))) {
    fprintf(stderr, "replication-appliance run: %s\n", rpl_detail(err)[0] ? rpl_detail(err) : rpl_strerror(err));
    return 1;
  }
  pthread_mutex_init(&a->lock, NULL);
  pthread_cond_init(&a->work, NULL);
  pthread_cond_init(&a->applied, NULL);
  pthread_mutex_init(&a->snap_lock, NULL);
  if ((err = load_disks(a))) {
    char detail[RPL_DETAIL_MAX + 128];
    fprintf(stderr, "replication-appliance run: cannot open the disks' journals or storage: %s\n",
            rpl_describe(err, detail, sizeof detail));
    return 1;
  }
  if ((err = gp_open(a))) {
    fprintf(stderr, "replication-appliance run: cannot read the consistency groups: %s\n", rpl_strerror(err));
    return 1;
  }
  if ((err = listen_on(a))) {
    fprintf(stderr, "replication-appliance run: cannot listen on %s: %s\n", a->listen, strerror(errno));
    return 1;
  }
  return 0;
}

/* The configuration manager, unless "off". At the default address a failure is logged and
 * replication goes on without the page (another appliance on this machine?); at an address given
 * with --web it is fatal (1). */
static void web_agent_revoked(void *ctx, const uint8_t id[PROTO_ID_SIZE])
{
  struct appliance *a = ctx;
  if (a->members.in_group)
    appliance_publish_agent(a, id);
}

static int start_web(struct appliance *a, const struct run_opts *o, struct web_server **web)
{
  *web = NULL;
  if (!strcmp(a->web, "off"))
    return 0;
  struct web_config wc = {.addr = a->web, .root = a->web_root, .state_dir = o->state, .cert_pem = a->server_cert,
                          .key_pem = a->server_key, .ca_pem = a->ca_cert, .cat = a->cat, .sample_s = a->web_sample_s,
                          .ops = {.ctx = a, .status_json = web_status_json, .sample = web_sample,
                                  .disk_request = web_disk_request, .disk_unprotect = web_disk_unprotect,
                                  .schedule_get = web_schedule_get,
                                  .schedule_set = web_schedule_set, .metrics = metrics_write,
                                  .alerts_json = web_alerts_json, .thresholds_set = web_thresholds_set,
                                  .alerts_test = web_alerts_test, .agent_revoked = web_agent_revoked}};
  rpl_err err = web_start(&wc, web);
  if (err && o->web_explicit) {
    fprintf(stderr, "replication-appliance run: configuration manager: %s (%s)\n", rpl_detail(err), rpl_strerror(err));
    return 1;
  }
  if (err)
    log_err("configuration manager not started: %s (%s)", rpl_detail(err), rpl_strerror(err));
  return 0;
}

void preauth_release(struct appliance *a, int *slot)
{
  if (*slot < 0)
    return;
  pthread_mutex_lock(&a->lock);
  if (a->preauth[*slot].n && --a->preauth[*slot].n == 0)
    a->preauth[*slot].addr[0] = '\0';
  pthread_mutex_unlock(&a->lock);
  *slot = -1;
}

/* Counts a new connection from addr, or says why it is refused (NULL: admitted, *slot set). L held. */
static const char *admit(struct appliance *a, const char *addr, int *slot)
{
  if (a->sessions >= MAX_CONNECTIONS)
    return "too many connections";
  int free_slot = -1, found = -1;
  for (int i = 0; i < MAX_PREAUTH_ADDRESSES && found < 0; i++) {
    if (a->preauth[i].n && !strcmp(a->preauth[i].addr, addr))
      found = i;
    else if (!a->preauth[i].n && free_slot < 0)
      free_slot = i;
  }
  if (found >= 0 && a->preauth[found].n >= MAX_PREAUTH_PER_ADDRESS)
    return "too many unauthenticated connections from this address";
  if (found < 0 && free_slot < 0)
    return "too many addresses with unauthenticated connections";
  if (found < 0) {
    found = free_slot;
    snprintf(a->preauth[found].addr, sizeof a->preauth[found].addr, "%s", addr);
  }
  a->preauth[found].n++;
  a->sessions++;
  *slot = found;
  return NULL;
}

/* Says at most once every 10 s why connections were refused (a flood must not flood the log). */
static void log_refused(struct appliance *a, const char *addr, const char *why)
{
  static uint64_t last_ms;
  uint64_t now = rpl_mono_ms();
  pthread_mutex_lock(&a->lock);
  uint64_t n = ++a->refused_connections;
  bool say = now - last_ms >= 10000;
  if (say)
    last_ms = now;
  pthread_mutex_unlock(&a->lock);
  if (say)
    log_warn("connection from %s closed: %s (%" PRIu64 " refused so far; limits in docs/operations.md)", addr, why, n);
}

/* The listener's certificate issued again when two thirds through its life, for an appliance that
 * runs that long: new connections get it, those made before keep theirs. */
static void renew_server_cert(struct appliance *a)
{
  char *cert = NULL, *key = NULL;
  SSL_CTX *ctx = NULL;
  rpl_err err = identity_server_cert(a->state_dir, a->signer, a->ca_cert, &cert, &key);
  if (!err && strcmp(cert, a->server_cert) != 0 && !(err = chan_server_ctx(cert, key, a->ca_cert, &ctx))) {
    pthread_mutex_lock(&a->lock);
    SSL_CTX *old = a->ctx;
    a->ctx = ctx;
    pthread_mutex_unlock(&a->lock);
    SSL_CTX_free(old);
    OPENSSL_cleanse(a->server_key, strlen(a->server_key));
    free(a->server_cert), free(a->server_key);
    a->server_cert = cert, a->server_key = key;
    cert = key = NULL;
    log_notice("the agents' listener uses its renewed certificate; the configuration manager's takes it at the next "
               "restart");
  }
  if (err)
    log_err("the listener's certificate could not be renewed (tried again in an hour): %s", rpl_detail(err));
  if (key)
    OPENSSL_cleanse(key, strlen(key));
  free(cert), free(key);
}

/* Accepts connections until stopped: a detached thread per connection, within the limits above. */
static void serve(struct appliance *a)
{
  uint64_t last_emfile_log = 0, last_cert_check = rpl_mono_ms();
  uint64_t check_ms = (uint64_t)identity_server_cert_seconds() * 100; /* a tenth of its life, at most an hour */
  if (check_ms > SERVER_CERT_CHECK_MS)
    check_ms = SERVER_CERT_CHECK_MS;
  while (!atomic_load(&appliance_stopping)) {
    if (rpl_mono_ms() - last_cert_check >= check_ms) {
      last_cert_check = rpl_mono_ms();
      renew_server_cert(a);
    }
    struct pollfd p = {.fd = a->listen_fd, .events = POLLIN};
    if (poll(&p, 1, POLL_MS) <= 0)
      continue;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    int fd = accept4(a->listen_fd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        /* The connection stays queued and poll says so at once: wait instead of spinning. */
        if (rpl_mono_ms() - last_emfile_log >= 10000) {
          log_err("cannot accept connections: %s (raise LimitNOFILE, or fewer connections); waiting", strerror(errno));
          last_emfile_log = rpl_mono_ms();
        }
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL);
      }
      continue;
    }
    char addr[64] = "?";
    getnameinfo((struct sockaddr *)&ss, sl, addr, sizeof addr, NULL, 0, NI_NUMERICHOST);
    struct session_arg *sa = malloc(sizeof *sa);
    int slot = -1;
    pthread_mutex_lock(&a->lock);
    const char *why = sa ? admit(a, addr, &slot) : "out of memory";
    pthread_mutex_unlock(&a->lock);
    if (why) {
      free(sa);
      close(fd);
      log_refused(a, addr, why);
      continue;
    }
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 1u << 20); /* a session needs little stack; a thousand of them, 1 GiB less */
    *sa = (struct session_arg){.a = a, .fd = fd, .preauth = slot};
    if (pthread_create(&t, &attr, session_main, sa) != 0) {
      free(sa);
      close(fd);
      preauth_release(a, &slot);
      pthread_mutex_lock(&a->lock);
      a->sessions--;
      pthread_mutex_unlock(&a->lock);
    }
    pthread_attr_destroy(&attr);
  }
}

/* Frees what open_state made (the sessions and the applier have ended). */
static void close_state(struct appliance *a)
{
  close_disks(a);
  gp_close(a);
  catalog_close(a->cat);
  upload_gate_free(a->gate);
  for (size_t i = 0; i < a->nagent_limits; i++)
    rate_limit_destroy(&a->agent_limits[i].rl);
  free(a->agent_limits);
  rate_limit_destroy(&a->limit_all);
  SSL_CTX_free(a->ctx);
  if (a->server_key)
    OPENSSL_cleanse(a->server_key, strlen(a->server_key));
  free(a->server_key);
  free(a->server_cert);
  free(a->ca_cert);
  signer_stop(a->signer);
}

void appliance_publish_agent(struct appliance *a, const uint8_t agent[PROTO_ID_SIZE])
{
  if (!a->members.in_group)
    return;
  char id[37], why[RPL_DETAIL_MAX + 256];
  id_text(agent, id);
  rpl_err e = catalog_agent_set_record_due(a->cat, agent, true);
  if (!e && !(e = members_publish_agent(&a->members, &a->settings, a->cat, agent)))
    e = catalog_agent_set_record_due(a->cat, agent, false);
  if (e)
    log_warn("agent %s: its record in the appliance group was not written (the other members do not know of this "
             "change yet; written again within %u s): %s", id, (unsigned)MEMBERS_SWEEP_S, rpl_describe(e, why, sizeof why));
  else
    log_debug("agent %s: its record in the appliance group is written", id);
}

/* The agent records whose writing failed (or was cut short by a stop), written again, a batch per sweep. */
static void publish_due_agents(struct appliance *a)
{
  uint8_t ids[64][PROTO_ID_SIZE];
  size_t n = 0;
  if (!a->members.in_group)
    return;
  char why[RPL_DETAIL_MAX + 256];
  rpl_err e = catalog_agent_records_due(a->cat, ids, sizeof ids / sizeof ids[0], &n);
  if (e)
    log_warn("appliance group: cannot list the agent records still to be written: %s", rpl_describe(e, why, sizeof why));
  for (size_t i = 0; i < n && !atomic_load(&appliance_stopping); i++) {
    char id[37];
    id_text(ids[i], id);
    log_info("agent %s: writing its record in the appliance group again", id);
    appliance_publish_agent(a, ids[i]);
  }
}

/* This member's address in the group's records, and the members' addresses its agents are given. */
static void refresh_members(struct appliance *a, unsigned period)
{
  char why[RPL_DETAIL_MAX + 256], addrs[MEMBERS_MAX][256];
  size_t n = 0;
  rpl_err e = a->advertise[0] ? members_announce(&a->members, &a->settings, a->settings.lease_id, a->advertise) : RPL_OK;
  if (e)
    log_warn("appliance group: this member's address was not written (tried again in %u s): %s", period,
             rpl_describe(e, why, sizeof why));
  if ((e = members_addresses(&a->members, &a->settings, addrs, &n))) {
    log_warn("appliance group: the members' addresses were not read (tried again in %u s): %s", period,
             rpl_describe(e, why, sizeof why));
    return;
  }
  pthread_mutex_lock(&a->lock);
  bool changed = n != a->nmember_addrs || memcmp(addrs, a->member_addrs, n * sizeof addrs[0]) != 0;
  if (changed) {
    memcpy(a->member_addrs, addrs, n * sizeof addrs[0]);
    a->nmember_addrs = n;
    a->members_gen++;
  }
  pthread_mutex_unlock(&a->lock);
  if (changed)
    log_info("appliance group: %zu member address(es) for the agents", n);
}

/* The appliance group's revocations, read once a minute ($RPL_TEST_MEMBERS_SWEEP_S: tests, 1 s up):
 * an agent revoked at another member is refused here too; its session ends at its next check. */
static void *members_main(void *arg)
{
  struct appliance *a = arg;
  const char *env = getenv("RPL_TEST_MEMBERS_SWEEP_S");
  unsigned period = env && atoi(env) >= 1 ? (unsigned)atoi(env) : MEMBERS_SWEEP_S;
  for (unsigned waited = period; !atomic_load(&appliance_stopping); waited++) {
    if (waited >= period) {
      waited = 0;
      unsigned n = 0;
      char why[RPL_DETAIL_MAX + 256];
      rpl_err e = members_sweep(&a->members, &a->settings, a->cat, &n);
      if (e)
        log_warn("appliance group: the revocations were not read (tried again in %u s): %s", period,
                 rpl_describe(e, why, sizeof why));
      refresh_members(a, period);
      publish_due_agents(a);
    }
    sleep(1);
  }
  return NULL;
}

static int run(const struct run_opts *o)
{
  static struct appliance a;
  memset(&a, 0, sizeof a);
  snprintf(a.state_dir, sizeof a.state_dir, "%s", o->state);
  snprintf(a.listen, sizeof a.listen, "%s", o->listen);
  snprintf(a.web, sizeof a.web, "%s", o->web);
  a.web_root = o->web_root;
  a.rpo_ms = o->rpo_ms;
  a.pool.nworkers = o->apply_workers;
  a.agent_cycles = o->agent_cycles;
  const char *sample = getenv("RPL_WEB_SAMPLE_SECONDS"); /* the series' interval (tests shorten it) */
  a.web_sample_s = sample ? (unsigned)strtoul(sample, NULL, 10) : 0;
  if (a.web_sample_s > 600)
    a.web_sample_s = 600;
  a.started_time = (int64_t)time(NULL);
  if (o->advertise)
    snprintf(a.advertise, sizeof a.advertise, "%s", o->advertise);
  else if (strncmp(o->listen, "*:", 2) && strncmp(o->listen, "0.0.0.0:", 8) && strncmp(o->listen, "[::]:", 5))
    snprintf(a.advertise, sizeof a.advertise, "%s", o->listen); /* a listener on one address is reached there */
  int status;
  if ((status = load_settings(&a, o)) || (status = open_state(&a, o->state)))
    return status;
  rpl_err aerr = alerts_start(&a, &a.alerts);
  if (aerr) {
    fprintf(stderr, "replication-appliance run: alerts: %s (run init again with --webhook, or check %s/alerts)\n",
            rpl_detail(aerr)[0] ? rpl_detail(aerr) : rpl_strerror(aerr), o->state);
    return 1;
  }
  struct control_server *ctl;
  rpl_err err = control_server_start(o->state, control_handler, &a, &ctl);
  if (err) {
    fprintf(stderr, "replication-appliance run: cannot serve the control socket in %s: %s\n", o->state, rpl_strerror(err));
    return 1;
  }
  struct web_server *web;
  if ((status = start_web(&a, o, &web))) {
    control_server_stop(ctl);
    return status;
  }
  struct sigaction sig = {.sa_handler = on_signal};
  sigaction(SIGTERM, &sig, NULL);
  sigaction(SIGINT, &sig, NULL);
  signal(SIGPIPE, SIG_IGN);
  if ((err = apply_pool_start(&a))) {
    fprintf(stderr, "replication-appliance run: %s\n", rpl_detail(err));
    web_stop(web);
    control_server_stop(ctl);
    alerts_stop(a.alerts);
    close_state(&a);
    return 1;
  }
  pthread_t members;
  if (a.members.in_group) {
    if (!a.advertise[0])
      log_notice("appliance group %s: the other members' agents are not told this member's address (it listens on "
                 "every address): give run --advertise HOST:PORT", a.members.group_id);
    pthread_create(&members, NULL, members_main, &a);
  }
  char storage[sizeof a.settings.storage];
  a.backend->describe(&a.settings, storage, sizeof storage);
  char points[SCHEDULE_TEXT_MAX];
  schedule_format(&a.schedule, points, sizeof points);
  log_info("replication-appliance %s listening on %s, storage %s (%ss), RPO target %.1f s, recovery points %s, upload "
           "limits %u MB/s in all, %u MB/s per agent (0 = none), %u apply workers",
           RPL_VERSION, a.listen, storage, a.backend->name, a.rpo_ms / 1000.0, points, a.settings.upload_limit_mbps,
           a.settings.agent_limit_mbps, a.pool.nworkers);
  sd_notify_ready("appliance running");
  serve(&a);
  events_wake_all(); /* an `events --wait` in progress ends: the control socket waits for it */
  sd_notify_stopping();
  log_info("stopping: waiting for sessions to end");
  close(a.listen_fd);
  pthread_mutex_lock(&a.lock);
  while (a.sessions)
    pthread_cond_wait(&a.applied, &a.lock);
  pthread_mutex_unlock(&a.lock);
  apply_pool_stop(&a);
  if (a.members.in_group)
    pthread_join(members, NULL);
  web_stop(web);
  control_server_stop(ctl);
  alerts_stop(a.alerts);
  close_state(&a);
  return 0;
}

int appliance_cmd_run(int argc, char **argv)
{
  struct run_opts o;
  int status = parse_run_opts(argc, argv, &o);
  return status ? status : run(&o);
}
