/* cmd_init.c - `replication-appliance init`: validates and records the storage settings (connection
 * string or file:DIR, container, private DNS zone file, CA file, proxy) in the state directory, makes
 * the appliance's TLS identity and prints a registration key as the last line. */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "blob.h"
#include "commands.h"
#include "duration.h"
#include "identity.h"
#include "members.h"
#include "netpath.h"
#include "ratelimit.h"
#include "retention.h"
#include "https_post.h"
#include "schedule.h"
#include "thresholds.h"
#include "uploader.h"
#include "rpl_log.h"
#include "settings.h"
#include "store.h"
#include "state_files.h"
#include "web.h"
#include <openssl/crypto.h>

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  fputs("replication-appliance init: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  return 1;
}

/* Container names: 3-63 of a-z, 0-9 and '-', starting with a letter or digit, no "--". */
static bool valid_container(const char *name)
{
  size_t n = strlen(name);
  if (n < 3 || n > 63 || name[0] == '-' || name[n - 1] == '-' || strstr(name, "--"))
    return false;
  for (size_t i = 0; i < n; i++)
    if (!islower((unsigned char)name[i]) && !isdigit((unsigned char)name[i]) && name[i] != '-')
      return false;
  return true;
}

/* An absolute path for a file that must exist now. */
static bool absolute_existing(const char *path, char *out, size_t outsz)
{
  char resolved[PATH_MAX];
  if (!realpath(path, resolved) || strlen(resolved) >= outsz)
    return false;
  memcpy(out, resolved, strlen(resolved) + 1);
  return true;
}

static bool looks_like_pem_certificate(const char *path)
{
  FILE *f = fopen(path, "r");
  if (!f)
    return false;
  char line[256];
  bool found = false;
  while (!found && fgets(line, sizeof line, f))
    found = strncmp(line, "-----BEGIN CERTIFICATE-----", 27) == 0;
  fclose(f);
  return found;
}

static const char *env_first(const char *a, const char *b)
{
  const char *v = getenv(a);
  if (!v || !*v)
    v = getenv(b);
  return v && *v ? v : NULL;
}

/* What the command line asked for; the environment fills in what it left out (see resolve_env_defaults). */
struct init_opts {
  const char *state, *storage, *container, *zone, *ca, *proxy, *bypass, *identity, *retention, *points, *lease, *key_ttl;
  const char *password_file;
  const char *tenant, *client, *secret_file, *cert_file, *authority; /* a service principal, added to the storage */
  char *storage_buf; /* the storage with the service principal's keys appended (owned) */
  const char *alerts, *webhook_ca, *upload_check;
  const char *webhooks[SETTINGS_MAX_WEBHOOKS + 1]; /* one past the limit: refused with its reason */
  unsigned nwebhooks;
  bool allow_public, allow_http;
  unsigned upload_limit, agent_limit;
  const char *group_secret; /* --group-secret-file: make the appliance group, or join it (--join) */
  bool join;
};

/* parse_init_options returns this when the command goes on; anything else is its exit status. */
#define INIT_CONTINUE (-1)

static int parse_init_options(int argc, char **argv, struct init_opts *o)
{
  static const struct option opts[] = {
    {"state", required_argument, NULL, 's'},        {"storage", required_argument, NULL, 'S'},
    {"container", required_argument, NULL, 'c'},    {"private-dns-zone", required_argument, NULL, 'z'},
    {"ca-file", required_argument, NULL, 'a'},      {"proxy", required_argument, NULL, 'p'},
    {"proxy-bypass", required_argument, NULL, 'b'}, {"identity-endpoint", required_argument, NULL, 'i'},
    {"allow-public-endpoint", no_argument, NULL, 'P'}, {"help", no_argument, NULL, 'h'},
    {"allow-http-emulator", no_argument, NULL, 'H'},
    {"retention", required_argument, NULL, 'R'},    {"lease-duration", required_argument, NULL, 'L'},
    {"upload-limit", required_argument, NULL, 'U'}, {"agent-limit", required_argument, NULL, 'A'},
    {"admin-password-file", required_argument, NULL, 'W'}, {"points", required_argument, NULL, 'T'},
    {"key-ttl", required_argument, NULL, 'K'},
    {"tenant-id", required_argument, NULL, 't'},    {"client-id", required_argument, NULL, 'C'},
    {"client-secret-file", required_argument, NULL, 'F'}, {"client-cert-file", required_argument, NULL, 'X'},
    {"authority-host", required_argument, NULL, 'O'},
    {"alerts", required_argument, NULL, 'Y'},       {"webhook", required_argument, NULL, 'w'},
    {"webhook-ca", required_argument, NULL, 'V'},   {"upload-check", required_argument, NULL, 'Q'},
    {"group-secret-file", required_argument, NULL, 'G'}, {"join", no_argument, NULL, 'J'},
    {NULL, 0, NULL, 0},
  };
  *o = (struct init_opts){.state = APPLIANCE_DEFAULT_STATE};
  optind = 1;
  opterr = 0;
  int ch;
  while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (ch) {
    case 's': o->state = optarg; break;
    case 'S': o->storage = optarg; break;
    case 'c': o->container = optarg; break;
    case 'z': o->zone = optarg; break;
    case 'a': o->ca = optarg; break;
    case 'p': o->proxy = optarg; break;
    case 'b': o->bypass = optarg; break;
    case 'i': o->identity = optarg; break;
    case 'P': o->allow_public = true; break;
    case 'H': o->allow_http = true; break;
    case 'R': o->retention = optarg; break;
    case 'T': o->points = optarg; break;
    case 'K': o->key_ttl = optarg; break;
    case 'L': o->lease = optarg; break;
    case 'U':
    case 'A':
      if (!rate_limit_parse_mbps(optarg, ch == 'U' ? &o->upload_limit : &o->agent_limit))
        return fail("--%s takes a whole number of MB/s (10^6 bytes per second) from 0 (no limit) to %u, not '%s'",
                    ch == 'U' ? "upload-limit" : "agent-limit", RATELIMIT_MAX_MBPS, optarg);
      break;
    case 'W': o->password_file = optarg; break;
    case 't': o->tenant = optarg; break;
    case 'C': o->client = optarg; break;
    case 'F': o->secret_file = optarg; break;
    case 'X': o->cert_file = optarg; break;
    case 'O': o->authority = optarg; break;
    case 'Y': o->alerts = optarg; break;
    case 'V': o->webhook_ca = optarg; break;
    case 'Q': o->upload_check = optarg; break;
    case 'G': o->group_secret = optarg; break;
    case 'J': o->join = true; break;
    case 'w':
      if (o->nwebhooks == SETTINGS_MAX_WEBHOOKS)
        return fail("at most %d --webhook (each has its own queue and state)", SETTINGS_MAX_WEBHOOKS);
      o->webhooks[o->nwebhooks++] = optarg;
      break;
    case 'h':
      printf("usage: replication-appliance init --state DIR --storage STORAGE [--container NAME]\n"
             "         [--private-dns-zone FILE] [--ca-file PEM] [--proxy http://[USER:PASS@]HOST:PORT]\n"
             "         [--proxy-bypass LIST] [--identity-endpoint URL] [--allow-public-endpoint]\n"
             "         [--allow-http-emulator]  (an http:// storage emulator on this machine; never for an account)\n"
             "         [--retention all=1h,hourly=24h,daily=7d] [--lease-duration SECONDS (15-60, default 60)]\n"
             "         [--points crash=5m,app=1h]  (scheduled recovery points; a duration >= 30s, or off)\n"
             "         [--upload-limit MBPS] [--agent-limit MBPS]   (MB/s for all uploads / each agent's; 0 = none)\n"
             "         [--upload-check none|md5|crc64]  (what each page write carries for the storage to verify; default none)\n"
             "         [--key-ttl DURATION]  (how long a registration key is valid: 5m to 30d, default 24h)\n"
             "         [--admin-password-file FILE]  (the configuration manager's admin password; else a one-time login link)\n"
             "         [--tenant-id TENANT --client-id APP-ID (--client-secret-file FILE | --client-cert-file PEM)\n"
             "          [--authority-host https://HOST]]  (sign in to storage as an Entra ID service principal)\n"
             "         [--alerts rpo-warn=auto,rpo-crit=auto,point-age=off,agent-away=90s,cache=80]  (health thresholds)\n"
             "         [--webhook https://URL ...] [--webhook-ca PEM]  (health transitions POSTed as JSON; up to 4; CA pinned)\n"
             "         [--group-secret-file FILE [--join]]  (make the appliance group of this storage, or join it:\n"
             "          its members accept every agent registered with any of them; FILE: 32+ random bytes, mode 0600)\n"
             "STORAGE: an Azure Storage connection string (default: $AZURE_STORAGE_CONNECTION_STRING) or file:DIR\n");
      return 0;
    default:
      return fail("unknown or incomplete option '%s' (see --help)", argv[optind - 1]);
    }
  }
  if (optind < argc)
    return fail("unexpected argument '%s' (see --help)", argv[optind]);
  if (o->join && !o->group_secret)
    return fail("--join needs --group-secret-file: the secret file the group was made with");
  return INIT_CONTINUE;
}

/* The storage may come from the environment so the connection string's key need not be on a command
 * line (visible in ps); it is the one setting init cannot do without. */
static int resolve_storage(struct init_opts *o)
{
  if (!o->storage)
    o->storage = getenv("AZURE_STORAGE_CONNECTION_STRING");
  if (!o->storage || !*o->storage)
    return fail("--storage is required (an Azure Storage connection string, or file:DIR); AZURE_STORAGE_CONNECTION_STRING is not set either");
  return 0;
}

/* The service principal's options become keys of the connection string (TenantId, ClientId,
 * ClientSecretFile or ClientCertificateFile, AuthorityHost), the one place the storage's sign-in is
 * recorded; the files by absolute path, never their content. */
static int add_service_principal(struct init_opts *o)
{
  if (!o->tenant && !o->client && !o->secret_file && !o->cert_file && !o->authority)
    return 0;
  if (!o->tenant || !o->client || !o->secret_file == !o->cert_file)
    return fail("a service principal needs --tenant-id, --client-id and one of --client-secret-file or --client-cert-file");
  if (strncmp(o->storage, "file:", 5) == 0)
    return fail("a service principal signs in to Azure storage: --storage must be a connection string (BlobEndpoint=... or AccountName=...)");
  const char *file = o->secret_file ? o->secret_file : o->cert_file;
  char path[PATH_MAX];
  if (!realpath(file, path))
    return fail("%s %s: %s", o->secret_file ? "--client-secret-file" : "--client-cert-file", file, strerror(errno));
  size_t size = strlen(o->storage) + strlen(o->tenant) + strlen(o->client) + strlen(path) +
                (o->authority ? strlen(o->authority) : 0) + 128;
  o->storage_buf = malloc(size);
  if (!o->storage_buf)
    return fail("out of memory");
  size_t n = strlen(o->storage);
  while (n > 0 && o->storage[n - 1] == ';')
    n--;
  snprintf(o->storage_buf, size, "%.*s;TenantId=%s;ClientId=%s;%s=%s%s%s", (int)n, o->storage, o->tenant, o->client,
           o->secret_file ? "ClientSecretFile" : "ClientCertificateFile", path, o->authority ? ";AuthorityHost=" : "",
           o->authority ? o->authority : "");
  o->storage = o->storage_buf;
  return 0;
}

/* Read before anything is saved, so a bad password file leaves the state directory untouched. */
static int read_admin_password(const struct init_opts *o, char *password, size_t size)
{
  if (!o->password_file)
    return 0;
  rpl_err perr = web_auth_read_password_file(o->password_file, password, size);
  if (perr)
    return fail("--admin-password-file %s: %s", o->password_file, rpl_strerror(perr == RPL_E_NOT_FOUND ? RPL_E_WEB_PASSWORD : perr));
  return 0;
}

/* Files named here are checked and recorded absolute now: the daemon runs from elsewhere, later. */
static int set_container_and_trust(const struct init_opts *o, struct appliance_settings *s)
{
  if (o->container) {
    if (!valid_container(o->container))
      return fail("container name '%s' is invalid: 3-63 lower-case letters, digits and single hyphens", o->container);
    snprintf(s->container, sizeof s->container, "%s", o->container);
  }
  if (o->zone) {
    struct netpath_zone *z;
    rpl_err err = netpath_zone_load(o->zone, &z);
    if (err != RPL_OK)
      return fail("%s", rpl_detail(err));
    netpath_zone_free(z);
    if (!absolute_existing(o->zone, s->private_dns_zone, sizeof s->private_dns_zone))
      return fail("private DNS zone file %s: %s", o->zone, strerror(errno));
  }
  if (o->ca) {
    if (!absolute_existing(o->ca, s->ca_file, sizeof s->ca_file) || !looks_like_pem_certificate(s->ca_file))
      return fail("CA file %s is not a readable PEM file with a certificate", o->ca);
  }
  return 0;
}

/* The daemon does not inherit init's environment, so a proxy from it is recorded in the settings. */
static int set_network(const struct init_opts *o, struct appliance_settings *s)
{
  const char *proxy = o->proxy ? o->proxy : env_first("HTTPS_PROXY", "https_proxy");
  const char *bypass = o->bypass ? o->bypass : env_first("NO_PROXY", "no_proxy");
  if (proxy) {
    if (strncasecmp(proxy, "http://", 7) != 0 || strlen(proxy) >= sizeof s->proxy)
      return fail("the proxy must be an HTTP proxy URL, http://[USER:PASSWORD@]HOST:PORT (only HTTP proxies are supported)");
    snprintf(s->proxy, sizeof s->proxy, "%s", proxy);
  }
  if (bypass) {
    if (strlen(bypass) >= sizeof s->proxy_bypass)
      return fail("the proxy bypass list is too long");
    snprintf(s->proxy_bypass, sizeof s->proxy_bypass, "%s", bypass);
  }
  if (o->identity) {
    if ((strncasecmp(o->identity, "http://", 7) != 0 && strncasecmp(o->identity, "https://", 8) != 0) ||
        strlen(o->identity) >= sizeof s->identity_endpoint)
      return fail("the identity endpoint must be an http:// or https:// URL");
    snprintf(s->identity_endpoint, sizeof s->identity_endpoint, "%s", o->identity);
  }
  s->require_private_endpoint = !o->allow_public;
  return 0;
}

/* Retention is stored in its canonical form so check and the configuration manager show one spelling. */
static int set_policies(const struct init_opts *o, struct appliance_settings *s)
{
  struct retention_policy pol;
  rpl_err perr = retention_parse(o->retention, &pol);
  if (perr != RPL_OK)
    return fail("%s", rpl_detail(perr));
  retention_format(&pol, s->retention, sizeof s->retention);
  struct point_schedule sched;
  if ((perr = schedule_parse(o->points, &sched)))
    return fail("--points: %s", rpl_detail(perr));
  schedule_format(&sched, s->points, sizeof s->points);
  if (o->upload_check) {
    enum blob_upload_check check;
    if (!uploader_check_parse(o->upload_check, &check) || !*o->upload_check)
      return fail("--upload-check takes none, md5 or crc64 (what each page write carries for the storage to verify), not '%s'",
                  o->upload_check);
    snprintf(s->upload_check, sizeof s->upload_check, "%s", o->upload_check);
  }
  if (o->lease) {
    char *end;
    long n = strtol(o->lease, &end, 10);
    if (*end || end == o->lease || n < SETTINGS_MIN_LEASE_S || n > SETTINGS_MAX_LEASE_S)
      return fail("--lease-duration %s: %s", o->lease, rpl_strerror(RPL_E_LEASE_DURATION));
    s->lease_duration_s = (unsigned)n;
  }
  int64_t ttl = REGKEY_TTL_DEFAULT_S;
  if (o->key_ttl && (!duration_parse(o->key_ttl, strlen(o->key_ttl), REGKEY_TTL_MAX_S, &ttl) || ttl < REGKEY_TTL_MIN_S))
    return fail("--key-ttl takes a duration from 5m to 30d (a whole number with s, m, h or d), not '%s'", o->key_ttl);
  duration_format(ttl, s->key_ttl, sizeof s->key_ttl);
  s->upload_limit_mbps = o->upload_limit;
  s->agent_limit_mbps = o->agent_limit;
  return 0;
}

/* The health thresholds in their canonical form, the webhooks checked, the pinned CA absolute. */
static int set_alerts(const struct init_opts *o, struct appliance_settings *s)
{
  struct thresholds t;
  rpl_err perr = thresholds_parse(o->alerts, &t);
  if (perr)
    return fail("--alerts: %s", rpl_detail(perr));
  thresholds_format(&t, s->alerts, sizeof s->alerts);
  for (unsigned i = 0; i < o->nwebhooks; i++) {
    if ((perr = https_url_check(o->webhooks[i])))
      return fail("--webhook: %s", rpl_detail(perr));
    if (strlen(o->webhooks[i]) >= sizeof s->webhook[i])
      return fail("--webhook: the URL is longer than %zu characters", sizeof s->webhook[i] - 1);
    snprintf(s->webhook[i], sizeof s->webhook[i], "%s", o->webhooks[i]);
  }
  if (o->webhook_ca) {
    if (!o->nwebhooks)
      return fail("--webhook-ca pins the CA of the webhooks: give --webhook too");
    if (!absolute_existing(o->webhook_ca, s->webhook_ca, sizeof s->webhook_ca) || !looks_like_pem_certificate(s->webhook_ca))
      return fail("--webhook-ca %s is not a readable PEM file with a certificate", o->webhook_ca);
  }
  return 0;
}

/* Every setting is validated before settings_save, so a rejected init changes nothing on disk. */
static int build_settings(const struct init_opts *o, struct appliance_settings *s, char *summary, size_t summary_size)
{
  settings_defaults(s);
  s->allow_http_emulator = o->allow_http;
  rpl_err err = store_backend_of(o->storage)->configure(o->storage, s, summary, summary_size);
  int rc = err ? fail("%s", rpl_detail(err)) : 0;
  if (!rc)
    rc = set_container_and_trust(o, s);
  if (!rc)
    rc = set_network(o, s);
  if (!rc)
    rc = set_policies(o, s);
  if (!rc)
    rc = set_alerts(o, s);
  return rc;
}

static void print_settings(const char *state, const char *summary, const struct appliance_settings *s)
{
  printf("initialized %s\n%s, container %s\n", state, summary, s->container);
  store_backend(s)->print_settings(s, stdout);
  printf("retention: %s\n", s->retention);
  printf("recovery points: %s\n", s->points);
  printf("registration keys: valid %s each\n", s->key_ttl);
  printf("alert thresholds: %s\n", s->alerts);
  for (unsigned i = 0; i < SETTINGS_MAX_WEBHOOKS && s->webhook[i][0]; i++)
    printf("webhook: %.*s%s\n", (int)strcspn(s->webhook[i], "?#"), s->webhook[i], s->webhook_ca[0] ? " (CA pinned)" : "");
  if (s->upload_limit_mbps || s->agent_limit_mbps)
    printf("upload limits: %u MB/s in all, %u MB/s per agent (0 = none)\n", s->upload_limit_mbps, s->agent_limit_mbps);
}

/* The appliance's identity is kept across re-inits (agents pinned its fingerprint); the registration
 * key is fresh each time and revokes the unused ones before it. Only the certificate is needed here,
 * so the private key is wiped at once. */
static int issue_identity_and_regkey(const char *state, int64_t ttl, char regkey[CHAN_REGKEY_MAX], int64_t *expires)
{
  char *cert = NULL, *key = NULL;
  int created = 0;
  struct catalog *cat = NULL;
  rpl_err err;
  if ((err = identity_ensure(state, &cert, &key, &created)))
    return fail("cannot make the appliance's TLS identity in %s: %s", state, rpl_strerror(err));
  OPENSSL_cleanse(key, strlen(key));
  free(key);
  if ((err = identity_open_catalog(state, &cat)) || (err = identity_issue_regkey(cat, cert, ttl, regkey, expires))) {
    catalog_close(cat);
    free(cert);
    return fail("cannot issue a registration key: %s", rpl_strerror(err));
  }
  uint8_t fp[CHAN_FINGERPRINT_SIZE];
  char fptext[3 * CHAN_FINGERPRINT_SIZE];
  if (chan_fingerprint(cert, fp) == RPL_OK) {
    chan_fingerprint_text(fp, fptext);
    printf("appliance certificate: %s%s\n", fptext, created ? " (new)" : "");
  }
  catalog_close(cat);
  free(cert);
  identity_remove_legacy_regkey(state);
  return 0;
}

/* Without an admin password the first login is by a one-time link, where the owner then sets one. */
static int set_up_web_login(const struct init_opts *o, char *admin_password, size_t password_size)
{
  rpl_err err;
  if (o->password_file) {
    err = web_auth_set_password(o->state, admin_password);
    OPENSSL_cleanse(admin_password, password_size);
    if (err)
      return fail("cannot store the admin password: %s", rpl_strerror(err));
    printf("configuration manager: https://127.0.0.1:44368/ (log in with the admin password)\n");
  } else if (web_auth_has_password(o->state)) {
    /* A password is set already: a login link would be a second way in that nobody asked for. */
    printf("configuration manager: https://127.0.0.1:44368/ (log in with the admin password set before)\n");
  } else {
    char token[WEB_TOKEN_CHARS + 1];
    if ((err = web_auth_issue_token(o->state, token)))
      return fail("cannot issue the configuration manager's login link: %s", rpl_strerror(err));
    printf("configuration manager (one-time login link; set an admin password there): https://127.0.0.1:44368/#token=%s\n", token);
    OPENSSL_cleanse(token, sizeof token);
  }
  return 0;
}

/* The appliance group, before the settings are saved: a refused join leaves them as they were. Made
 * with this appliance's authority (new, or the one it had); joined by taking the group's. */
static int set_up_group(const struct init_opts *o, const struct appliance_settings *s)
{
  if (!o->group_secret)
    return 0;
  if (!store_backend(s)->leased)
    return fail("--group-secret-file: %s", rpl_strerror(RPL_E_MEMBERS_STORAGE));
  if (mkdir(o->state, 0700) != 0 && errno != EEXIST)
    return fail("cannot make %s: %s", o->state, strerror(errno));
  struct members m;
  char why[RPL_DETAIL_MAX + 256];
  rpl_err err = members_load(o->state, &m);
  if (err)
    return fail("%s", rpl_describe(err, why, sizeof why));
  char id[37], *cert = NULL, *key = NULL;
  int created = 0;
  if (o->join) {
    if (!(err = members_join(o->state, s, o->group_secret, &cert, &key, id)))
      err = identity_adopt(o->state, cert, key);
  } else if (m.in_group) {
    printf("appliance group: %s (this appliance is a member already)\n", m.group_id);
    return 0;
  } else if (!(err = identity_ensure(o->state, &cert, &key, &created))) {
    err = members_create(o->state, s, o->group_secret, cert, key, id);
  }
  if (key)
    OPENSSL_cleanse(key, strlen(key));
  free(key);
  free(cert);
  if (err)
    return fail("%s%s", o->join ? "cannot join the appliance group: " : "cannot make the appliance group: ",
                rpl_describe(err, why, sizeof why));
  printf("appliance group: %s (%s; its record: container %s, %sgroup.conf)\n", id, o->join ? "joined" : "made",
         s->container, MEMBERS_PREFIX);
  return 0;
}

/* The steps after the admin password was read (it is wiped by init whatever they do). */
static int init_with_password(const struct init_opts *o, char *admin_password, size_t password_size)
{
  struct appliance_settings s;
  char summary[8400];
  if (build_settings(o, &s, summary, sizeof summary) || set_up_group(o, &s))
    return 1;
  rpl_err err = settings_save(o->state, &s);
  if (err != RPL_OK)
    return fail("%s", rpl_detail(err));
  print_settings(o->state, summary, &s);
  char regkey[CHAN_REGKEY_MAX];
  int64_t expires = 0, ttl = REGKEY_TTL_DEFAULT_S;
  if (!duration_parse(s.key_ttl, strlen(s.key_ttl), REGKEY_TTL_MAX_S, &ttl))
    ttl = REGKEY_TTL_DEFAULT_S;
  if (issue_identity_and_regkey(o->state, ttl, regkey, &expires) || set_up_web_login(o, admin_password, password_size))
    return 1;
  printf("next: replication-appliance check --state %s, then replication-appliance run --state %s\n", o->state, o->state);
  char until[64];
  struct tm tm;
  time_t t = (time_t)expires;
  strftime(until, sizeof until, "%Y-%m-%d %H:%M UTC", gmtime_r(&t, &tm));
  printf("registration key (one agent, valid until %s; shown only now, and a newer key revokes it):\n", until);
  printf("%s\n", regkey);
  OPENSSL_cleanse(regkey, sizeof regkey);
  return 0;
}

static int init(const struct init_opts *o)
{
  char admin_password[WEB_PASSWORD_MAX + 1] = "";
  int rc = read_admin_password(o, admin_password, sizeof admin_password);
  if (!rc)
    rc = init_with_password(o, admin_password, sizeof admin_password);
  OPENSSL_cleanse(admin_password, sizeof admin_password); /* on every path, not only when stored */
  return rc;
}

int appliance_cmd_init(int argc, char **argv)
{
  struct init_opts o;
  int rc = parse_init_options(argc, argv, &o);
  if (rc != INIT_CONTINUE)
    return rc;
  if (resolve_storage(&o) || add_service_principal(&o)) {
    free(o.storage_buf);
    return 1;
  }
  rc = init(&o);
  free(o.storage_buf);
  return rc;
}
