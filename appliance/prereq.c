/* prereq.c - the storage path's prerequisites (private DNS path, TCP reach, proxy, TLS, sign-in for a
 * service principal, authorization, time skew; or the replica directory for file: storage), run by
 * `check` and by the daemon before it uploads. */
#include "prereq.h"

#include <errno.h>
#include <inttypes.h>
#include <sys/statvfs.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "blob.h"
#include "netpath.h"
#include "store.h"
#include "uploader.h"

static void add(struct prereq_report *r, const char *name, bool pass, const char *remedy, const char *fmt, ...)
  __attribute__((format(printf, 5, 6)));
static void add(struct prereq_report *r, const char *name, bool pass, const char *remedy, const char *fmt, ...)
{
  if (r->n == PREREQ_MAX)
    return;
  struct prereq_item *c = &r->items[r->n++];
  c->name = name;
  c->pass = pass;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->detail, sizeof c->detail, fmt, ap);
  va_end(ap);
  snprintf(c->remedy, sizeof c->remedy, "%s", remedy ? remedy : "");
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

#define REPLICA_FREE_MIN_MIB 16 /* below it applying waits: a replica filling its file system stops anyway */

void prereq_check_file_storage(const struct appliance_settings *s, struct prereq_report *r)
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
  int werr = errno;
  close(fd);
  unlink(probe);
  struct statvfs vfs;
  uint64_t free_mib = statvfs(dir, &vfs) == 0 ? (uint64_t)vfs.f_bavail * vfs.f_frsize >> 20 : 0;
  if (!ok)
    add(r, "replica directory", false, "check the file system (full or read-only?)", "%s: write or fsync failed: %s",
        dir, strerror(werr));
  else if (free_mib < REPLICA_FREE_MIN_MIB)
    add(r, "replica directory", false, "free space on its file system (replicas grow as disks are written)",
        "%s: only %" PRIu64 " MiB free (at least %d MiB wanted)", dir, free_mib, REPLICA_FREE_MIN_MIB);
  else
    add(r, "replica directory", true, "", "%s is writable, %" PRIu64 " MiB free", dir, free_mib);
}

/* check uses few tries and a short timeout: a person is waiting for the answer. */
static bool azure_config(const struct appliance_settings *s, struct blob_config *cfg, struct prereq_report *r)
{
  rpl_err err = uploader_config(s, cfg); /* the daemon's configuration, with check's tuning below */
  if (err != RPL_OK) {
    add(r, "storage settings", false, "run init again with a valid connection string", "%s", rpl_detail(err));
    return false;
  }
  cfg->max_in_flight = 2;
  cfg->max_tries = 3;
  cfg->retry_base_ms = 500;
  cfg->request_timeout_s = 30;
  return true;
}

/* 1, failed. Every later step needs the path, so each is reported as not tried. */
static void report_dns_failure(struct prereq_report *r, const struct blob_config *cfg, rpl_err err)
{
  /* Kept aside: resolving again below for the chain records details of its own. */
  char reason[RPL_DETAIL_MAX];
  snprintf(reason, sizeof reason, "%s", rpl_detail(err));
  const char *remedy = err == RPL_E_BLOB_PUBLIC_ADDRESS
                         ? "link the private DNS zone privatelink.blob.core.windows.net to this network (or give --private-dns-zone), approve the private endpoint connection, flush DNS caches"
                         : "make the name resolve to the private endpoint: DNS servers, or the private DNS zone file";
  /* Show the whole chain the refusal was based on, when there is one. */
  struct netpath_zone *zone = NULL;
  struct netpath_route route;
  char chain[1024];
  if (err == RPL_E_BLOB_PUBLIC_ADDRESS &&
      (!cfg->private_dns_zone || netpath_zone_load(cfg->private_dns_zone, &zone) == RPL_OK) &&
      netpath_resolve(cfg->account.host, zone, &route) == RPL_OK)
    add(r, "private DNS path", false, remedy, "%s: a public address, refused before any connection",
        netpath_route_format(&route, chain, sizeof chain));
  else
    add(r, "private DNS path", false, remedy, "%s", reason);
  netpath_zone_free(zone);
  const char *later[] = {"TCP reach", "proxy", "TLS verification", "authorization", "time skew"};
  for (size_t i = 0; i < 5; i++)
    add(r, later[i], false, "fix the private DNS path first", "not tried: the private DNS path failed");
}

/* 1, passed. Azure's private DNS answers through ACCOUNT.privatelink.blob.core.windows.net; a hosts
 * entry or another DNS may map the name directly, which works but is worth saying. */
static void report_dns_path(struct prereq_report *r, const struct appliance_settings *s, const struct blob_client *client)
{
  char route[1024];
  const struct netpath_route *rt = blob_client_route(client);
  netpath_route_format(rt, route, sizeof route);
  bool privatelink = false;
  for (size_t i = 1; i < rt->chain_len; i++)
    privatelink |= strstr(rt->chain[i], ".privatelink.") != NULL;
  add(r, "private DNS path", true, NULL, "%s%s%s", route,
      privatelink || rt->chain_len == 0 ? "" : "; no privatelink CNAME in the chain (a hosts entry or custom DNS record)",
      s->require_private_endpoint ? "" : " (public addresses allowed by settings)");
}

/* 2-4. One connection along the configured path: TCP, the proxy's CONNECT, the TLS handshake; one
 * probe's result is read three ways. Returns it: the later steps need a connection. */
static rpl_err check_connection(struct prereq_report *r, const struct appliance_settings *s, const struct blob_config *cfg,
                                struct blob_client *client)
{
  bool via_proxy = blob_client_uses_proxy(client);
  char proxy_shown[1100] = "";
  if (s->proxy[0])
    proxy_for_display(s->proxy, proxy_shown, sizeof proxy_shown);
  const char *target = via_proxy ? proxy_shown : blob_client_route(client)->addr_text[0];
  rpl_err err = blob_client_probe(client);
  bool tcp_ok = err != RPL_E_BLOB_CONNECT;
  if (tcp_ok && via_proxy)
    add(r, "TCP reach", true, NULL, "connected to proxy %s", target);
  else if (tcp_ok)
    add(r, "TCP reach", true, NULL, "connected to %s port %u", target, cfg->account.port);
  else
    add(r, "TCP reach", false,
        via_proxy ? "check the proxy address and that it is running" : "check routing and firewalls to the private endpoint, and that its connection is Approved",
        "cannot connect to %s%s: %s", via_proxy ? "proxy " : "", target, rpl_detail(err));
  if (!s->proxy[0])
    add(r, "proxy", true, NULL, "none configured: direct connection");
  else if (!via_proxy)
    add(r, "proxy", true, NULL, "%s configured; %s is in the bypass list", proxy_shown, cfg->account.host);
  else if (!tcp_ok)
    add(r, "proxy", false, "fix TCP reach to the proxy first", "not tried: the proxy is unreachable");
  else if (err == RPL_E_BLOB_PROXY)
    add(r, "proxy", false, "check the proxy user and password, and that it allows CONNECT to the storage port", "%s: %s", proxy_shown, rpl_detail(err));
  else
    add(r, "proxy", true, NULL, "%s accepted CONNECT to %s:%u", proxy_shown, cfg->account.host, cfg->account.port);
  if (err == RPL_OK)
    add(r, "TLS verification", true, NULL, "certificate of %s verified against %s", cfg->account.host,
        s->ca_file[0] ? s->ca_file : "the system CAs");
  else if (err == RPL_E_BLOB_TLS)
    add(r, "TLS verification", false,
        "give the CA that signed the storage certificate with init --ca-file, and reach storage by its public name (never the privatelink name)",
        "%s: %s", cfg->account.host, rpl_detail(err));
  else
    add(r, "TLS verification", false, "fix the connection first", "not tried: no connection");
  return err;
}

/* 4b. A service principal signs in at Entra ID's token endpoint first; the failing step is named:
 * its credential file, the endpoint unreachable, or the client refused. Returns whether it passed. */
static bool report_sign_in(struct prereq_report *r, const struct blob_config *cfg)
{
  struct blob_token token;
  bool fetched;
  rpl_err err = blob_entra_token(cfg, 2, &token, &fetched);
  char url[BLOB_ENDPOINT_MAX + 200];
  if (blob_entra_token_url(&cfg->account, url, sizeof url) != RPL_OK)
    snprintf(url, sizeof url, "%s", cfg->account.authority);
  if (err == RPL_OK) {
    add(r, "sign-in", true, NULL, "%s: token for client %s from %s, valid %lld s", blob_auth_name(cfg->account.auth),
        cfg->account.client_id, url, (long long)(token.expires_on - time(NULL)));
    OPENSSL_cleanse(&token, sizeof token);
    return true;
  }
  if (err == RPL_E_ENTRA_CREDENTIAL)
    add(r, "sign-in", false, "give a readable credential file: the client secret on its first line, or PEM with the certificate and its RSA key (init --client-secret-file / --client-cert-file)",
        "credential file unusable: %s", rpl_detail(err));
  else if (err == RPL_E_ENTRA_UNREACHABLE)
    add(r, "sign-in", false, "check the authority host, DNS, the proxy and its bypass list, and that the CA file verifies the token endpoint",
        "token endpoint unreachable: %s", rpl_detail(err));
  else if (err == RPL_E_ENTRA_CLIENT)
    add(r, "sign-in", false, "check the tenant id and client id, and that the secret or certificate is the one registered on the app registration and not expired",
        "invalid client: %s", rpl_detail(err));
  else
    add(r, "sign-in", false, "check the authority host: its token endpoint did not answer as Entra ID does",
        "%s: %s", rpl_errname(err), rpl_detail(err));
  return false;
}

/* 5. The remedy depends on how the appliance authorizes: each kind fails for its own reasons. */
static void report_authorization(struct prereq_report *r, const struct appliance_settings *s, const struct blob_config *cfg,
                                 rpl_err err, const struct blob_reply *reply, const struct blob_stats *st)
{
  if (err == RPL_OK)
    add(r, "authorization", true, NULL, "%s accepted: container '%s' readable", blob_auth_name(cfg->account.auth), s->container);
  else if (err == RPL_E_BLOB_NOT_FOUND)
    add(r, "authorization", true, NULL, "%s accepted (container '%s' does not exist yet; it is created when the first disk is protected)",
        blob_auth_name(cfg->account.auth), s->container);
  else if (err == RPL_E_BLOB_CLOCK_SKEW)
    add(r, "authorization", false, "sync this machine's clock (NTP: chrony or systemd-timesyncd)",
        "refused: the clock is %lld s off the service's", (long long)st->clock_skew_s);
  else if (err == RPL_E_BLOB_AUTH && cfg->account.auth >= BLOB_AUTH_CLIENT_SECRET &&
           strcmp(reply->error_code, "AuthorizationPermissionMismatch") == 0)
    add(r, "authorization", false,
        "assign the service principal Storage Blob Data Contributor on the account or the container (role assignments take a few minutes)",
        "no role on the container: client %s signed in, but storage refused it on container '%s' (HTTP %ld %s%s%s)",
        cfg->account.client_id, s->container, reply->status, reply->error_code, reply->message[0] ? ": " : "", reply->message);
  else
    add(r, "authorization", false,
        cfg->account.auth == BLOB_AUTH_SHARED_KEY ? "copy the current account key (Access keys) and run init again"
        : cfg->account.auth == BLOB_AUTH_SAS ? "issue a SAS with permissions racwl for the blob service that has not expired, and run init again"
        : cfg->account.auth >= BLOB_AUTH_CLIENT_SECRET ? "check that the token is for this cloud's storage (https://storage.azure.com) and the tenant the account is in"
        : "assign the appliance's identity Storage Blob Data Contributor on the account, and check the identity endpoint",
        "%s refused: %s (HTTP %ld %s%s%s)", blob_auth_name(cfg->account.auth), rpl_errname(err), reply->status, reply->error_code,
        reply->message[0] ? ": " : "", reply->message);
}

/* 6. Storage refuses requests 15 minutes off; over 5 is a warning so it is fixed before that. */
static void report_time_skew(struct prereq_report *r, const struct blob_stats *st)
{
  if (!st->clock_seen) {
    add(r, "time skew", false, "fix the connection first", "no Date header from the service to compare with");
    return;
  }
  long long skew = (long long)st->clock_skew_s, mag = skew < 0 ? -skew : skew;
  if (mag > 15 * 60)
    add(r, "time skew", false, "sync this machine's clock (NTP: chrony or systemd-timesyncd); storage refuses requests 15 minutes off",
        "%+lld s against the service's clock (over 15 minutes)", skew);
  else if (mag > 5 * 60)
    add(r, "time skew", true, NULL, "%+lld s against the service's clock (warning: over 5 minutes; sync with NTP before it reaches 15)", skew);
  else
    add(r, "time skew", true, NULL, "%+lld s against the service's clock", skew);
}

void prereq_check_azure(const struct appliance_settings *s, struct prereq_report *r)
{
  struct blob_config cfg;
  if (!azure_config(s, &cfg, r))
    return;
  /* 1. Private DNS path: resolution, CNAME chain, address class. Opening the client repeats the
   * check and refuses a public address before any connection. */
  struct blob_client *client = NULL;
  rpl_err err = blob_client_open(&cfg, &client);
  if (err != RPL_OK) {
    report_dns_failure(r, &cfg, err);
    return;
  }
  report_dns_path(r, s, client);
  err = check_connection(r, s, &cfg, client);
  bool principal = cfg.account.auth == BLOB_AUTH_CLIENT_SECRET || cfg.account.auth == BLOB_AUTH_CLIENT_CERT;
  if (principal && !report_sign_in(r, &cfg)) {
    add(r, "authorization", false, "fix the sign-in first", "not tried: the sign-in failed");
    add(r, "time skew", false, "fix the sign-in first", "not tried: no request was sent to storage");
    blob_client_close(client);
    return;
  }
  if (err != RPL_OK) {
    add(r, "authorization", false, "fix the connection first", "not tried: no connection");
    add(r, "time skew", false, "fix the connection first", "not tried: no answer from the service");
    blob_client_close(client);
    return;
  }
  /* 5-6. A harmless authenticated request, whose Date header also gives the clock skew. */
  struct blob_reply reply;
  err = blob_container_properties(client, s->container, &reply);
  struct blob_stats st;
  blob_client_stats(client, &st);
  report_authorization(r, s, &cfg, err, &reply, &st);
  report_time_skew(r, &st);
  blob_client_close(client);
}

void prereq_run(const struct appliance_settings *s, struct prereq_report *r)
{
  memset(r, 0, sizeof *r);
  store_backend(s)->check(s, r);
}

size_t prereq_failed(const struct prereq_report *r)
{
  size_t n = 0;
  for (size_t i = 0; i < r->n; i++)
    n += !r->items[i].pass;
  return n;
}

const struct prereq_item *prereq_first_failure(const struct prereq_report *r)
{
  for (size_t i = 0; i < r->n; i++)
    if (!r->items[i].pass)
      return &r->items[i];
  return NULL;
}
