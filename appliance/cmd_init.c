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
#include <unistd.h>

#include "blob.h"
#include "commands.h"
#include "identity.h"
#include "netpath.h"
#include "ratelimit.h"
#include "retention.h"
#include "rpl_log.h"
#include "settings.h"
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

int appliance_cmd_init(int argc, char **argv)
{
  static const struct option opts[] = {
    {"state", required_argument, NULL, 's'},        {"storage", required_argument, NULL, 'S'},
    {"container", required_argument, NULL, 'c'},    {"private-dns-zone", required_argument, NULL, 'z'},
    {"ca-file", required_argument, NULL, 'a'},      {"proxy", required_argument, NULL, 'p'},
    {"proxy-bypass", required_argument, NULL, 'b'}, {"identity-endpoint", required_argument, NULL, 'i'},
    {"allow-public-endpoint", no_argument, NULL, 'P'}, {"help", no_argument, NULL, 'h'},
    {"retention", required_argument, NULL, 'R'},    {"lease-duration", required_argument, NULL, 'L'},
    {"upload-limit", required_argument, NULL, 'U'}, {"agent-limit", required_argument, NULL, 'A'},
    {"admin-password-file", required_argument, NULL, 'W'},
    {NULL, 0, NULL, 0},
  };
  const char *state = APPLIANCE_DEFAULT_STATE, *storage = NULL, *container = NULL, *zone = NULL, *ca = NULL;
  const char *proxy = NULL, *bypass = NULL, *identity = NULL, *retention = NULL, *lease = NULL;
  const char *password_file = NULL;
  bool allow_public = false;
  unsigned upload_limit = 0, agent_limit = 0;
  optind = 1;
  opterr = 0;
  int ch;
  while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (ch) {
    case 's': state = optarg; break;
    case 'S': storage = optarg; break;
    case 'c': container = optarg; break;
    case 'z': zone = optarg; break;
    case 'a': ca = optarg; break;
    case 'p': proxy = optarg; break;
    case 'b': bypass = optarg; break;
    case 'i': identity = optarg; break;
    case 'P': allow_public = true; break;
    case 'R': retention = optarg; break;
    case 'L': lease = optarg; break;
    case 'U':
    case 'A':
      if (!rate_limit_parse_mbps(optarg, ch == 'U' ? &upload_limit : &agent_limit))
        return fail("--%s takes a whole number of MB/s (10^6 bytes per second) from 0 (no limit) to %u, not '%s'",
                    ch == 'U' ? "upload-limit" : "agent-limit", RATELIMIT_MAX_MBPS, optarg);
      break;
    case 'W': password_file = optarg; break;
    case 'h':
      printf("usage: replication-appliance init --state DIR --storage STORAGE [--container NAME]\n"
             "         [--private-dns-zone FILE] [--ca-file PEM] [--proxy http://[USER:PASS@]HOST:PORT]\n"
             "         [--proxy-bypass LIST] [--identity-endpoint URL] [--allow-public-endpoint]\n"
             "         [--retention all=1h,hourly=24h,daily=7d] [--lease-duration SECONDS (15-60, default 60)]\n"
             "         [--upload-limit MBPS] [--agent-limit MBPS]   (MB/s for all uploads / each agent's; 0 = none)\n"
             "         [--admin-password-file FILE]  (the configuration manager's admin password; else a one-time login link)\n"
             "STORAGE: an Azure Storage connection string (default: $AZURE_STORAGE_CONNECTION_STRING) or file:DIR\n");
      return 0;
    default:
      return fail("unknown or incomplete option '%s' (see --help)", argv[optind - 1]);
    }
  }
  if (optind < argc)
    return fail("unexpected argument '%s' (see --help)", argv[optind]);
  if (!storage)
    storage = getenv("AZURE_STORAGE_CONNECTION_STRING");
  if (!storage || !*storage)
    return fail("--storage is required (an Azure Storage connection string, or file:DIR); AZURE_STORAGE_CONNECTION_STRING is not set either");

  char admin_password[WEB_PASSWORD_MAX + 1] = "";
  if (password_file) {
    rpl_err perr = web_auth_read_password_file(password_file, admin_password, sizeof admin_password);
    if (perr)
      return fail("--admin-password-file %s: %s", password_file, rpl_strerror(perr == RPL_E_NOT_FOUND ? RPL_E_WEB_PASSWORD : perr));
  }
  struct appliance_settings s;
  settings_defaults(&s);
  char summary[8400];
  if (strncmp(storage, "file:", 5) == 0) {
    const char *dir = storage + 5;
    if (!*dir)
      return fail("file: needs a directory (file:/var/lib/replicas)");
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
      return fail("cannot create the replica directory %s: %s", dir, strerror(errno));
    char abs[PATH_MAX];
    if (!realpath(dir, abs))
      return fail("replica directory %s: %s", dir, strerror(errno));
    snprintf(s.storage, sizeof s.storage, "file:%s", abs);
    snprintf(summary, sizeof summary, "storage: local replica directory %s", abs);
  } else {
    struct blob_account acct;
    rpl_err err = blob_connstr_parse(storage, &acct);
    if (err != RPL_OK)
      return fail("%s (%s)", rpl_detail(err), rpl_errname(err));
    if (strlen(storage) >= sizeof s.storage)
      return fail("the connection string is too long");
    snprintf(s.storage, sizeof s.storage, "%s", storage);
    snprintf(summary, sizeof summary, "storage: account %s at %s, authorized by %s", acct.name, acct.endpoint,
             acct.auth == BLOB_AUTH_SHARED_KEY ? "account key" : acct.auth == BLOB_AUTH_SAS ? "SAS token" : "managed identity");
  }
  if (container) {
    if (!valid_container(container))
      return fail("container name '%s' is invalid: 3-63 lower-case letters, digits and single hyphens", container);
    snprintf(s.container, sizeof s.container, "%s", container);
  }
  if (zone) {
    struct netpath_zone *z;
    rpl_err err = netpath_zone_load(zone, &z);
    if (err != RPL_OK)
      return fail("%s", rpl_detail(err));
    netpath_zone_free(z);
    if (!absolute_existing(zone, s.private_dns_zone, sizeof s.private_dns_zone))
      return fail("private DNS zone file %s: %s", zone, strerror(errno));
  }
  if (ca) {
    if (!absolute_existing(ca, s.ca_file, sizeof s.ca_file) || !looks_like_pem_certificate(s.ca_file))
      return fail("CA file %s is not a readable PEM file with a certificate", ca);
  }
  if (!proxy)
    proxy = env_first("HTTPS_PROXY", "https_proxy");
  if (!bypass)
    bypass = env_first("NO_PROXY", "no_proxy");
  if (proxy) {
    if (strncasecmp(proxy, "http://", 7) != 0 || strlen(proxy) >= sizeof s.proxy)
      return fail("the proxy must be an HTTP proxy URL, http://[USER:PASSWORD@]HOST:PORT (only HTTP proxies are supported)");
    snprintf(s.proxy, sizeof s.proxy, "%s", proxy);
  }
  if (bypass) {
    if (strlen(bypass) >= sizeof s.proxy_bypass)
      return fail("the proxy bypass list is too long");
    snprintf(s.proxy_bypass, sizeof s.proxy_bypass, "%s", bypass);
  }
  if (identity) {
    if ((strncasecmp(identity, "http://", 7) != 0 && strncasecmp(identity, "https://", 8) != 0) ||
        strlen(identity) >= sizeof s.identity_endpoint)
      return fail("the identity endpoint must be an http:// or https:// URL");
    snprintf(s.identity_endpoint, sizeof s.identity_endpoint, "%s", identity);
  }
  s.require_private_endpoint = !allow_public;
  struct retention_policy pol;
  rpl_err perr = retention_parse(retention, &pol);
  if (perr != RPL_OK)
    return fail("%s", rpl_detail(perr));
  retention_format(&pol, s.retention, sizeof s.retention);
  if (lease) {
    char *end;
    long n = strtol(lease, &end, 10);
    if (*end || end == lease || n < SETTINGS_MIN_LEASE_S || n > SETTINGS_MAX_LEASE_S)
      return fail("--lease-duration %s: %s", lease, rpl_strerror(RPL_E_LEASE_DURATION));
    s.lease_duration_s = (unsigned)n;
  }
  s.upload_limit_mbps = upload_limit;
  s.agent_limit_mbps = agent_limit;
  rpl_err err = settings_save(state, &s);
  if (err != RPL_OK)
    return fail("%s", rpl_detail(err));
  printf("initialized %s\n%s, container %s\n", state, summary, s.container);
  if (!settings_is_file_storage(&s)) {
    printf("path: %s%s, %s\n", s.private_dns_zone[0] ? "private DNS zone file " : "system resolver",
           s.private_dns_zone, s.require_private_endpoint ? "private endpoint required" : "public endpoint allowed");
    printf("TLS: verified against %s\n", s.ca_file[0] ? s.ca_file : "the system CAs");
    printf("proxy: %s\n", s.proxy[0] ? "configured (see check)" : "none");
    printf("ownership: a %u s lease on each disk's page blob, renewed while running\n", s.lease_duration_s);
  }
  printf("retention: %s\n", s.retention);
  if (s.upload_limit_mbps || s.agent_limit_mbps)
    printf("upload limits: %u MB/s in all, %u MB/s per agent (0 = none)\n", s.upload_limit_mbps, s.agent_limit_mbps);
  /* The appliance's identity (kept across re-inits) and a fresh one-time registration key. */
  char *cert = NULL, *key = NULL, regkey[CHAN_REGKEY_MAX];
  int created = 0;
  struct catalog *cat = NULL;
  if ((err = identity_ensure(state, &cert, &key, &created)))
    return fail("cannot make the appliance's TLS identity in %s: %s", state, rpl_strerror(err));
  OPENSSL_cleanse(key, strlen(key));
  free(key);
  if ((err = identity_open_catalog(state, &cat)) || (err = identity_issue_regkey(cat, cert, regkey))) {
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
  /* The configuration manager shows the newest key until it is used (the file is the owner's alone). */
  char keypath[4200];
  snprintf(keypath, sizeof keypath, "%s/%s", state, STATE_REGISTRATION_KEY);
  if ((err = file_write_atomic(keypath, regkey, strlen(regkey), 0600)))
    return fail("cannot keep the registration key in %s: %s", keypath, rpl_strerror(err));
  if (password_file) {
    err = web_auth_set_password(state, admin_password);
    OPENSSL_cleanse(admin_password, sizeof admin_password);
    if (err)
      return fail("cannot store the admin password: %s", rpl_strerror(err));
    printf("configuration manager: https://127.0.0.1:44368/ (log in with the admin password)\n");
  } else {
    char token[WEB_TOKEN_CHARS + 1];
    if ((err = web_auth_issue_token(state, token)))
      return fail("cannot issue the configuration manager's login link: %s", rpl_strerror(err));
    printf("configuration manager (one-time login link; set an admin password there): https://127.0.0.1:44368/#token=%s\n", token);
    OPENSSL_cleanse(token, sizeof token);
  }
  printf("next: replication-appliance check --state %s, then replication-appliance run --state %s\n", state, state);
  printf("registration key (one agent; run init again for another):\n");
  printf("%s\n", regkey);
  return 0;
}
