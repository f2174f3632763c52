/* cmd_check.c - `replication-appliance check`: runs each prerequisite of the storage path (private
 * DNS path, TCP reach, proxy, TLS verification, authorization, time skew; or the replica directory
 * for file: storage) and prints one line each, PASS or FAIL with the remedy; --json prints one JSON
 * document instead. Exit status 1 when any prerequisite fails. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "blob.h"
#include "check.h"
#include "commands.h"
#include "netpath.h"
#include "rpl_log.h"
#include "settings.h"

#define MAX_CHECKS 8

struct check {
  const char *name;
  bool pass;
  char detail[1024];
  char remedy[512];
};

struct report {
  struct check items[MAX_CHECKS];
  size_t n;
};

static void add(struct report *r, const char *name, bool pass, const char *remedy, const char *fmt, ...)
  __attribute__((format(printf, 5, 6)));
static void add(struct report *r, const char *name, bool pass, const char *remedy, const char *fmt, ...)
{
  if (r->n == MAX_CHECKS)
    return;
  struct check *c = &r->items[r->n++];
  c->name = name;
  c->pass = pass;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->detail, sizeof c->detail, fmt, ap);
  va_end(ap);
  snprintf(c->remedy, sizeof c->remedy, "%s", remedy ? remedy : "");
}

static void json_string(FILE *out, const char *s)
{
  fputc('"', out);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    switch (*p) {
    case '"': fputs("\\\"", out); break;
    case '\\': fputs("\\\\", out); break;
    case '\n': fputs("\\n", out); break;
    case '\r': fputs("\\r", out); break;
    case '\t': fputs("\\t", out); break;
    default:
      if (*p < 0x20)
        fprintf(out, "\\u%04x", *p);
      else
        fputc(*p, out);
    }
  }
  fputc('"', out);
}

/* The proxy URL without its password, for output. */
static void proxy_for_display(const char *proxy, char *out, size_t outsz)
{
  const char *scheme_end = strstr(proxy, "://");
  const char *at = strrchr(proxy, '@');
  if (!scheme_end || !at || at < scheme_end) {
    snprintf(out, outsz, "%s", proxy);
    return;
  }
  snprintf(out, outsz, "%.*s***@%s", (int)(scheme_end + 3 - proxy), proxy, at + 1);
}

static void check_file_storage(const struct appliance_settings *s, struct report *r)
{
  const char *dir = s->storage + 5;
  char probe[4200];
  snprintf(probe, sizeof probe, "%s/.rpl-check.XXXXXX", dir);
  int fd = mkstemp(probe);
  if (fd < 0) {
    add(r, "replica directory", false, "create it and make it writable by the appliance (or run init with another file:DIR)",
        "%s is not writable: %s", dir, strerror(errno));
    return;
  }
  bool ok = write(fd, "x", 1) == 1 && fsync(fd) == 0;
  close(fd);
  unlink(probe);
  add(r, "replica directory", ok, "check the file system (full or read-only?)", ok ? "%s is writable" : "%s: write or fsync failed", dir);
}

static const char *auth_name(enum blob_auth a)
{
  return a == BLOB_AUTH_SHARED_KEY ? "account key" : a == BLOB_AUTH_SAS ? "SAS token" : "managed identity";
}

static void check_azure(const struct appliance_settings *s, struct report *r)
{
  struct blob_config cfg;
  blob_config_init(&cfg);
  char why[1024] = "";
  rpl_err err = blob_connstr_parse(s->storage, &cfg.account, why, sizeof why);
  if (err != RPL_OK) {
    add(r, "storage settings", false, "run init again with a valid connection string", "%s", why);
    return;
  }
  cfg.private_dns_zone = s->private_dns_zone[0] ? s->private_dns_zone : NULL;
  cfg.ca_file = s->ca_file[0] ? s->ca_file : NULL;
  cfg.proxy = s->proxy[0] ? s->proxy : NULL;
  cfg.proxy_bypass = s->proxy_bypass[0] ? s->proxy_bypass : NULL;
  cfg.identity_endpoint = s->identity_endpoint[0] ? s->identity_endpoint : NULL;
  cfg.require_private_endpoint = s->require_private_endpoint;
  cfg.max_in_flight = 2;
  cfg.max_tries = 3;
  cfg.retry_base_ms = 500;
  cfg.request_timeout_s = 30;

  /* 1. Private DNS path: resolution, CNAME chain, address class. Opening the client repeats the
   * check and refuses a public address before any connection. */
  struct blob_client *client = NULL;
  err = blob_client_open(&cfg, &client, why, sizeof why);
  if (err != RPL_OK) {
    const char *remedy = err == RPL_E_BLOB_PUBLIC_ADDRESS
                           ? "link the private DNS zone privatelink.blob.core.windows.net to this network (or give --private-dns-zone), approve the private endpoint connection, flush DNS caches"
                           : "make the name resolve to the private endpoint: DNS servers, or the private DNS zone file";
    /* Show the whole chain the refusal was based on, when there is one. */
    struct netpath_zone *zone = NULL;
    struct netpath_route route;
    char chain[1024], scratch[256];
    if (err == RPL_E_BLOB_PUBLIC_ADDRESS &&
        (!cfg.private_dns_zone || netpath_zone_load(cfg.private_dns_zone, &zone, scratch, sizeof scratch) == RPL_OK) &&
        netpath_resolve(cfg.account.host, zone, &route, scratch, sizeof scratch) == RPL_OK)
      add(r, "private DNS path", false, remedy, "%s: a public address, refused before any connection",
          netpath_route_format(&route, chain, sizeof chain));
    else
      add(r, "private DNS path", false, remedy, "%s", why);
    netpath_zone_free(zone);
    const char *later[] = {"TCP reach", "proxy", "TLS verification", "authorization", "time skew"};
    for (size_t i = 0; i < 5; i++)
      add(r, later[i], false, "fix the private DNS path first", "not tried: the private DNS path failed");
    return;
  }
  char route[1024];
  const struct netpath_route *rt = blob_client_route(client);
  netpath_route_format(rt, route, sizeof route);
  /* Azure's private DNS answers through ACCOUNT.privatelink.blob.core.windows.net; a hosts entry or
   * another DNS may map the name directly, which works but is worth saying. */
  bool privatelink = false;
  for (size_t i = 1; i < rt->chain_len; i++)
    privatelink |= strstr(rt->chain[i], ".privatelink.") != NULL;
  add(r, "private DNS path", true, NULL, "%s%s%s", route,
      privatelink || rt->chain_len == 0 ? "" : "; no privatelink CNAME in the chain (a hosts entry or custom DNS record)",
      s->require_private_endpoint ? "" : " (public addresses allowed by settings)");

  /* 2-4. One connection along the configured path: TCP, the proxy's CONNECT, the TLS handshake. */
  bool via_proxy = blob_client_uses_proxy(client);
  char proxy_shown[1100] = "";
  if (s->proxy[0])
    proxy_for_display(s->proxy, proxy_shown, sizeof proxy_shown);
  const char *target = via_proxy ? proxy_shown : blob_client_route(client)->addr_text[0];
  err = blob_client_probe(client, why, sizeof why);
  bool tcp_ok = err != RPL_E_BLOB_CONNECT;
  if (tcp_ok && via_proxy)
    add(r, "TCP reach", true, NULL, "connected to proxy %s", target);
  else if (tcp_ok)
    add(r, "TCP reach", true, NULL, "connected to %s port %u", target, cfg.account.port);
  else
    add(r, "TCP reach", false,
        via_proxy ? "check the proxy address and that it is running" : "check routing and firewalls to the private endpoint, and that its connection is Approved",
        "cannot connect to %s%s: %s", via_proxy ? "proxy " : "", target, why);
  if (!s->proxy[0])
    add(r, "proxy", true, NULL, "none configured: direct connection");
  else if (!via_proxy)
    add(r, "proxy", true, NULL, "%s configured; %s is in the bypass list", proxy_shown, cfg.account.host);
  else if (!tcp_ok)
    add(r, "proxy", false, "fix TCP reach to the proxy first", "not tried: the proxy is unreachable");
  else if (err == RPL_E_BLOB_PROXY)
    add(r, "proxy", false, "check the proxy user and password, and that it allows CONNECT to the storage port", "%s: %s", proxy_shown, why);
  else
    add(r, "proxy", true, NULL, "%s accepted CONNECT to %s:%u", proxy_shown, cfg.account.host, cfg.account.port);
  if (err == RPL_OK)
    add(r, "TLS verification", true, NULL, "certificate of %s verified against %s", cfg.account.host,
        s->ca_file[0] ? s->ca_file : "the system CAs");
  else if (err == RPL_E_BLOB_TLS)
    add(r, "TLS verification", false,
        "give the CA that signed the storage certificate with init --ca-file, and reach storage by its public name (never the privatelink name)",
        "%s: %s", cfg.account.host, why);
  else
    add(r, "TLS verification", false, "fix the connection first", "not tried: no connection");

  /* 5-6. A harmless authenticated request, whose Date header also gives the clock skew. */
  if (err != RPL_OK) {
    add(r, "authorization", false, "fix the connection first", "not tried: no connection");
    add(r, "time skew", false, "fix the connection first", "not tried: no answer from the service");
    blob_client_close(client);
    return;
  }
  struct blob_reply reply;
  err = blob_container_properties(client, s->container, &reply);
  struct blob_stats st;
  blob_client_stats(client, &st);
  if (err == RPL_OK)
    add(r, "authorization", true, NULL, "%s accepted: container '%s' readable", auth_name(cfg.account.auth), s->container);
  else if (err == RPL_E_BLOB_NOT_FOUND)
    add(r, "authorization", true, NULL, "%s accepted (container '%s' does not exist yet; it is created when the first disk is protected)",
        auth_name(cfg.account.auth), s->container);
  else if (err == RPL_E_BLOB_CLOCK_SKEW)
    add(r, "authorization", false, "sync this machine's clock (NTP: chrony or systemd-timesyncd)",
        "refused: the clock is %lld s off the service's", (long long)st.clock_skew_s);
  else
    add(r, "authorization", false,
        cfg.account.auth == BLOB_AUTH_SHARED_KEY ? "copy the current account key (Access keys) and run init again"
        : cfg.account.auth == BLOB_AUTH_SAS ? "issue a SAS with permissions racwl for the blob service that has not expired, and run init again"
        : "assign the appliance's identity Storage Blob Data Contributor on the account, and check the identity endpoint",
        "%s refused: %s (HTTP %ld %s%s%s)", auth_name(cfg.account.auth), rpl_errname(err), reply.status, reply.error_code,
        reply.message[0] ? ": " : "", reply.message);
  if (!st.clock_seen) {
    add(r, "time skew", false, "fix the connection first", "no Date header from the service to compare with");
  } else {
    long long skew = (long long)st.clock_skew_s, mag = skew < 0 ? -skew : skew;
    if (mag > 15 * 60)
      add(r, "time skew", false, "sync this machine's clock (NTP: chrony or systemd-timesyncd); storage refuses requests 15 minutes off",
          "%+lld s against the service's clock (over 15 minutes)", skew);
    else if (mag > 5 * 60)
      add(r, "time skew", true, NULL, "%+lld s against the service's clock (warning: over 5 minutes; sync with NTP before it reaches 15)", skew);
    else
      add(r, "time skew", true, NULL, "%+lld s against the service's clock", skew);
  }
  blob_client_close(client);
}

static void run_checks(const struct appliance_settings *s, struct report *r)
{
  if (settings_is_file_storage(s))
    check_file_storage(s, r);
  else
    check_azure(s, r);
}

static void write_json(const char *state, const struct appliance_settings *s, const struct report *r, FILE *out)
{
  size_t failed = 0;
  for (size_t i = 0; i < r->n; i++)
    failed += !r->items[i].pass;
  fprintf(out, "{\"state\":");
  json_string(out, state);
  fprintf(out, ",\"storage\":\"%s\",\"ok\":%s,\"checks\":[", settings_is_file_storage(s) ? "file" : "azure", failed ? "false" : "true");
  for (size_t i = 0; i < r->n; i++) {
    fprintf(out, "%s{\"name\":", i ? "," : "");
    json_string(out, r->items[i].name);
    fprintf(out, ",\"result\":\"%s\",\"detail\":", r->items[i].pass ? "PASS" : "FAIL");
    json_string(out, r->items[i].detail);
    fprintf(out, ",\"remedy\":");
    json_string(out, r->items[i].pass ? "" : r->items[i].remedy);
    fprintf(out, "}");
  }
  fprintf(out, "]}\n");
}

void check_write_json(const char *state_dir, const struct appliance_settings *s, FILE *out, size_t *failed)
{
  struct report *r = calloc(1, sizeof *r);
  if (!r) {
    fprintf(out, "{\"error\":\"out of memory\"}\n");
    *failed = 1;
    return;
  }
  run_checks(s, r);
  *failed = 0;
  for (size_t i = 0; i < r->n; i++)
    *failed += !r->items[i].pass;
  write_json(state_dir, s, r, out);
  free(r);
}

int cmd_check(int argc, char **argv)
{
  static const struct option opts[] = {
    {"state", required_argument, NULL, 's'}, {"json", no_argument, NULL, 'j'}, {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
  };
  const char *state = APPLIANCE_DEFAULT_STATE;
  bool json = false;
  optind = 1;
  opterr = 0;
  int ch;
  while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (ch) {
    case 's': state = optarg; break;
    case 'j': json = true; break;
    case 'h': printf("usage: replication-appliance check --state DIR [--json]\n"); return 0;
    default:
      fprintf(stderr, "replication-appliance check: unknown or incomplete option '%s' (see --help)\n", argv[optind - 1]);
      return 2;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "replication-appliance check: unexpected argument '%s' (see --help)\n", argv[optind]);
    return 2;
  }
  /* The report is the output: the client's own log lines would only repeat it on stderr. */
  if (!getenv("RPL_LOG_LEVEL"))
    log_set_level(LOG_LVL_ERR);
  struct appliance_settings s;
  char why[1024];
  rpl_err err = settings_load(state, &s, why, sizeof why);
  if (err != RPL_OK) {
    fprintf(stderr, "replication-appliance check: %s\n", why);
    return 1;
  }
  struct report r = {0};
  run_checks(&s, &r);
  size_t failed = 0;
  for (size_t i = 0; i < r.n; i++)
    failed += !r.items[i].pass;
  if (json) {
    write_json(state, &s, &r, stdout);
  } else {
    for (size_t i = 0; i < r.n; i++) {
      if (r.items[i].pass)
        printf("PASS  %s: %s\n", r.items[i].name, r.items[i].detail);
      else
        printf("FAIL  %s: %s; fix: %s\n", r.items[i].name, r.items[i].detail, r.items[i].remedy);
    }
  }
  fflush(stdout);
  if (failed) {
    char names[512] = "";
    size_t pos = 0;
    for (size_t i = 0; i < r.n && pos < sizeof names; i++)
      if (!r.items[i].pass)
        pos += (size_t)snprintf(names + pos, sizeof names - pos, "%s%s", pos ? ", " : "", r.items[i].name);
    fprintf(stderr, "replication-appliance check: %zu of %zu prerequisites failed: %s\n", failed, r.n, names);
    return 1;
  }
  return 0;
}
