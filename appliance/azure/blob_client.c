/* blob_client.c - the page-blob client: requests on one libcurl multi handle (N in flight, connections
 * reused), signed afresh for each try, retried with backoff and jitter, fenced by sequence number,
 * over the address checked and pinned when the client was opened (the operations are in blob_ops.c). */
#include <arpa/inet.h>
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "blob_internal.h"
#include "rpl_clock.h"
#include "rpl_log.h"

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_result;
static void curl_global(void) { curl_init_result = curl_global_init(CURL_GLOBAL_DEFAULT); }

static uint64_t rng_next(struct blob_client *c)
{
  /* xorshift64*: jitter only needs to decorrelate clients, not to be secret. */
  c->rng ^= c->rng >> 12;
  c->rng ^= c->rng << 25;
  c->rng ^= c->rng >> 27;
  return c->rng * 0x2545F4914F6CDD1DULL;
}

void blob_config_init(struct blob_config *cfg)
{
  memset(cfg, 0, sizeof *cfg);
  cfg->require_private_endpoint = true;
}

static char *dup_or_null(const char *s) { return s && *s ? strdup(s) : NULL; }

/* Whether the address text addr lies in "NET/BITS" (IPv4 or IPv6); false for anything else. */
static bool address_in_cidr(const char *addr, const char *cidr)
{
  const char *slash = strchr(cidr, '/');
  char net[INET6_ADDRSTRLEN];
  if (!slash || (size_t)(slash - cidr) >= sizeof net)
    return false;
  memcpy(net, cidr, (size_t)(slash - cidr));
  net[slash - cidr] = '\0';
  char *end;
  long bits = strtol(slash + 1, &end, 10);
  unsigned char a[16], n[16];
  int family = strchr(net, ':') ? AF_INET6 : AF_INET;
  int size = family == AF_INET6 ? 16 : 4;
  if (*end || end == slash + 1 || bits < 0 || bits > size * 8 || inet_pton(family, net, n) != 1 ||
      inet_pton(family, addr, a) != 1)
    return false;
  for (long i = 0; i < bits; i++) {
    unsigned char m = (unsigned char)(0x80u >> (i % 8));
    if ((a[i / 8] & m) != (n[i / 8] & m))
      return false;
  }
  return true;
}

/* The one decision for both the prerequisite check and the transfers (curl is given either the
 * proxy or none, never its own bypass matching, which knows only the URL's host name): an entry
 * bypasses when it is "*", the host, a domain it is in (".example.com" or "example.com"), the
 * address it was pinned to, or a network "NET/BITS" holding that address. */
bool blob_proxy_bypassed(const char *bypass, const char *host, const char *addr)
{
  if (!bypass)
    return false;
  size_t hl = strlen(host);
  char list[1024];
  snprintf(list, sizeof list, "%s", bypass);
  char *save = NULL;
  for (char *e = strtok_r(list, ", \t", &save); e; e = strtok_r(NULL, ", \t", &save)) {
    if (strcmp(e, "*") == 0 || strcasecmp(e, host) == 0 || (addr && addr[0] && strcmp(e, addr) == 0))
      return true;
    if (addr && addr[0] && address_in_cidr(addr, e))
      return true;
    const char *suffix = e[0] == '.' ? e + 1 : e;
    size_t sl = strlen(suffix);
    if (sl && sl < hl && host[hl - sl - 1] == '.' && strcasecmp(host + hl - sl, suffix) == 0)
      return true;
  }
  return false;
}

bool blob_client_uses_proxy(const struct blob_client *c)
{
  return c->proxy && !blob_proxy_bypassed(c->proxy_bypass, c->cfg.account.host, c->pinned);
}

/* The client keeps its own copies of the configuration's strings: the caller's may not outlive it. */
static void take_config(struct blob_client *c, const struct blob_config *cfg)
{
  c->cfg = *cfg;
  if (!c->cfg.max_in_flight)
    c->cfg.max_in_flight = BLOB_DEFAULT_IN_FLIGHT;
  if (!c->cfg.max_tries)
    c->cfg.max_tries = 10;
  if (!c->cfg.retry_base_ms)
    c->cfg.retry_base_ms = 800;
  if (!c->cfg.retry_cap_ms)
    c->cfg.retry_cap_ms = 60000;
  if (!c->cfg.request_timeout_s)
    c->cfg.request_timeout_s = 300;
  if (!c->cfg.pagelist_slice)
    c->cfg.pagelist_slice = 4ull << 30;
  c->cfg.pagelist_slice -= c->cfg.pagelist_slice % BLOB_PAGE_SIZE;
  if (!c->cfg.pagelist_slice)
    c->cfg.pagelist_slice = BLOB_PAGE_SIZE;
  c->zone_path = dup_or_null(cfg->private_dns_zone);
  c->ca_file = dup_or_null(cfg->ca_file);
  c->proxy = dup_or_null(cfg->proxy);
  c->proxy_bypass = dup_or_null(cfg->proxy_bypass);
  c->identity_endpoint = dup_or_null(cfg->identity_endpoint);
  c->cfg.private_dns_zone = c->zone_path;
  c->cfg.ca_file = c->ca_file;
  c->cfg.proxy = c->proxy;
  c->cfg.proxy_bypass = c->proxy_bypass;
  c->cfg.identity_endpoint = c->identity_endpoint;
}

/* The private-endpoint path, before any connection: resolve, classify, refuse or pin. curl is then
 * given the pinned address for the host, so it never resolves the name itself. */
static rpl_err pin_storage_path(struct blob_client *c)
{
  struct netpath_zone *zone = NULL;
  rpl_err err = RPL_OK;
  if (c->zone_path)
    err = netpath_zone_load(c->zone_path, &zone);
  if (err == RPL_OK)
    err = netpath_resolve(c->cfg.account.host, zone, &c->route);
  netpath_zone_free(zone);
  if (err == RPL_OK) {
    char text[1024];
    log_info("storage path: %s", netpath_route_format(&c->route, text, sizeof text));
    if (c->cfg.require_private_endpoint)
      err = netpath_require_private(&c->route);
  }
  if (err != RPL_OK)
    return err;
  snprintf(c->pinned, sizeof c->pinned, "%s", c->route.addr_text[0]);
  char entry[NETPATH_NAME_MAX + NETPATH_ADDR_TEXT + 16];
  bool v6 = c->route.addrs[0].ss_family == AF_INET6;
  snprintf(entry, sizeof entry, "%s:%u:%s%s%s", c->cfg.account.host, c->cfg.account.port, v6 ? "[" : "",
           c->pinned, v6 ? "]" : "");
  c->resolve = curl_slist_append(NULL, entry);
  return c->resolve ? RPL_OK : RPL_E_NOMEM;
}

rpl_err blob_client_open(const struct blob_config *cfg, struct blob_client **out)
{
  *out = NULL;
  pthread_once(&curl_once, curl_global);
  if (curl_init_result != CURLE_OK) {
    return rpl_fail(RPL_E_INTERNAL, "libcurl initialisation failed");
  }
  if (!cfg->account.host[0] || !cfg->account.name[0]) {
    return rpl_fail(RPL_E_CONFIG, "no storage account configured");
  }
  struct blob_client *c = calloc(1, sizeof *c);
  if (!c)
    return RPL_E_NOMEM;
  take_config(c, cfg);
  if (getrandom(&c->rng, sizeof c->rng, 0) != sizeof c->rng || c->rng == 0)
    c->rng = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32) ^ 0x9E3779B97F4A7C15ULL;
  c->idle = calloc(c->cfg.max_in_flight + 1, sizeof *c->idle);
  c->flying = calloc(c->cfg.max_in_flight, sizeof *c->flying);
  rpl_err err = c->idle && c->flying ? RPL_OK : RPL_E_NOMEM;
  if (err == RPL_OK)
    err = pin_storage_path(c);
  if (err == RPL_OK) {
    c->multi = curl_multi_init();
    if (!c->multi)
      err = RPL_E_NOMEM;
  }
  if (err == RPL_OK) {
    curl_multi_setopt(c->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)c->cfg.max_in_flight);
    curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, (long)c->cfg.max_in_flight + 2);
  }
  if (err != RPL_OK) {
    blob_client_close(c);
    return err;
  }
  *out = c;
  return RPL_OK;
}

void blob_req_free(struct blob_req *req)
{
  curl_slist_free_all(req->curl_headers);
  free(req->resp);
  free(req->copy_source);
  free(req);
}

void blob_client_close(struct blob_client *c)
{
  if (!c)
    return;
  /* Requests still queued are dropped without their callbacks: the caller is going away. */
  while (c->queue_head) {
    struct blob_req *r = c->queue_head;
    c->queue_head = r->next;
    blob_req_free(r);
  }
  for (size_t i = 0; i < c->in_flight; i++) {
    curl_multi_remove_handle(c->multi, c->flying[i]->easy);
    curl_easy_cleanup(c->flying[i]->easy);
    blob_req_free(c->flying[i]);
  }
  free(c->flying);
  for (size_t i = 0; i < c->nidle; i++)
    curl_easy_cleanup(c->idle[i]);
  free(c->idle);
  curl_multi_cleanup(c->multi);
  curl_slist_free_all(c->resolve);
  free(c->zone_path);
  free(c->ca_file);
  free(c->proxy);
  free(c->proxy_bypass);
  free(c->identity_endpoint);
  OPENSSL_cleanse(c, sizeof *c);
  free(c);
}

const struct netpath_route *blob_client_route(const struct blob_client *c) { return &c->route; }
void blob_client_stats(const struct blob_client *c, struct blob_stats *out) { *out = c->stats; }
size_t blob_client_pending(const struct blob_client *c) { return c->queued + c->in_flight; }

/* ---- building requests ---- */

static bool unreserved(unsigned char ch)
{
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
         ch == '-' || ch == '_' || ch == '.' || ch == '~';
}

/* Percent-encodes text into out at *pos (keeping '/' when keep_slash); false on overflow. */
static bool encode(char *out, size_t outsz, size_t *pos, const char *text, bool keep_slash)
{
  static const char hex[] = "0123456789ABCDEF";
  for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
    if (unreserved(*p) || (keep_slash && *p == '/')) {
      if (*pos + 2 > outsz)
        return false;
      out[(*pos)++] = (char)*p;
    } else {
      if (*pos + 4 > outsz)
        return false;
      out[(*pos)++] = '%';
      out[(*pos)++] = hex[*p >> 4];
      out[(*pos)++] = hex[*p & 15];
    }
  }
  out[*pos] = '\0';
  return true;
}

rpl_err blob_req_new(struct blob_client *c, const char *verb, const char *container, const char *blob,
                     struct blob_req **out)
{
  *out = NULL;
  if (!container || !*container || strchr(container, '/'))
    return RPL_E_INVALID_ARGUMENT;
  if (blob && (!*blob || strlen(blob) > 1024))
    return RPL_E_INVALID_ARGUMENT;
  struct blob_req *r = calloc(1, sizeof *r);
  if (!r)
    return RPL_E_NOMEM;
  r->client = c;
  r->verb = verb;
  r->retry_after_ms = -1;
  r->resp_limit = ERROR_BODY_MAX;
  size_t pos = 0;
  bool ok = encode(r->path, sizeof r->path, &pos, c->cfg.account.base_path, true) &&
            encode(r->path, sizeof r->path, &pos, "/", true) &&
            encode(r->path, sizeof r->path, &pos, container, false) &&
            (!blob || (encode(r->path, sizeof r->path, &pos, "/", true) &&
                       encode(r->path, sizeof r->path, &pos, blob, true)));
  if (!ok) {
    free(r);
    return RPL_E_INVALID_ARGUMENT;
  }
  *out = r;
  return RPL_OK;
}

rpl_err blob_url(const struct blob_account *a, const char *container, const char *blob, const char *snapshot,
                 bool with_sas, char *out, size_t outsz)
{
  size_t pos = 0;
  int n = snprintf(out, outsz, "%s/", a->endpoint);
  if (n < 0 || (size_t)n >= outsz)
    return RPL_E_LIMIT;
  pos = (size_t)n;
  bool ok = encode(out, outsz, &pos, container, false) && encode(out, outsz, &pos, "/", true) &&
            encode(out, outsz, &pos, blob, true);
  if (ok && snapshot) {
    ok = pos + 11 < outsz;
    if (ok) {
      memcpy(out + pos, "?snapshot=", 11);
      pos += 10;
      ok = encode(out, outsz, &pos, snapshot, false);
    }
  }
  if (ok && with_sas && a->auth == BLOB_AUTH_SAS) {
    n = snprintf(out + pos, outsz - pos, "%s%s", snapshot ? "&" : "?", a->sas);
    ok = n >= 0 && (size_t)n < outsz - pos;
  }
  return ok ? RPL_OK : RPL_E_LIMIT;
}

/* Adds name=value (value percent-encoded) to the query. */
rpl_err blob_req_query(struct blob_req *r, const char *name, const char *value)
{
  size_t pos = strlen(r->query);
  if (pos) {
    if (pos + 2 > sizeof r->query)
      return RPL_E_LIMIT;
    r->query[pos++] = '&';
    r->query[pos] = '\0';
  }
  if (!encode(r->query, sizeof r->query, &pos, name, false))
    return RPL_E_LIMIT;
  if (value) {
    if (pos + 2 > sizeof r->query)
      return RPL_E_LIMIT;
    r->query[pos++] = '=';
    r->query[pos] = '\0';
    if (!encode(r->query, sizeof r->query, &pos, value, false))
      return RPL_E_LIMIT;
  }
  return RPL_OK;
}

rpl_err blob_req_header(struct blob_req *r, const char *name, const char *fmt, ...)
{
  if (r->nextra == REQ_MAX_HEADERS || strlen(name) >= sizeof r->extra[0].name)
    return RPL_E_LIMIT;
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(r->extra[r->nextra].value, sizeof r->extra[0].value, fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= sizeof r->extra[0].value)
    return RPL_E_LIMIT;
  /* Header values come from our callers (lease ids, snapshots): no line breaks may sneak in. */
  if (strpbrk(r->extra[r->nextra].value, "\r\n"))
    return RPL_E_INVALID_ARGUMENT;
  snprintf(r->extra[r->nextra].name, sizeof r->extra[0].name, "%s", name);
  r->nextra++;
  return RPL_OK;
}

static void random_uuid(struct blob_client *c, char out[37])
{
  uint64_t a = rng_next(c), b = rng_next(c);
  snprintf(out, 37, "%08x-%04x-4%03x-%04x-%012llx", (unsigned)(a >> 32), (unsigned)(a >> 16) & 0xffff,
           (unsigned)a & 0xfff, (unsigned)((b >> 48) & 0x3fff) | 0x8000,
           (unsigned long long)(b & 0xffffffffffffULL));
}

static rpl_err ensure_token(struct blob_client *c)
{
  time_t now = time(NULL);
  if (c->have_token && c->token.expires_on - now > TOKEN_REFRESH_MARGIN_S)
    return RPL_OK;
  struct blob_token fresh;
  bool fetched; /* not needed here: whether the process-wide cache answered */
  rpl_err err = c->cfg.account.auth == BLOB_AUTH_BEARER ? blob_token_fetch(c->identity_endpoint, 5, &fresh)
                                                        : blob_entra_token(&c->cfg, c->cfg.max_tries < 5 ? c->cfg.max_tries : 5, &fresh, &fetched);
  if (err != RPL_OK)
    return err;
  c->token = fresh;
  c->have_token = true;
  OPENSSL_cleanse(&fresh, sizeof fresh);
  if (c->cfg.account.auth == BLOB_AUTH_BEARER)
    log_info("managed-identity token obtained; valid for %lld s", (long long)(c->token.expires_on - now));
  return RPL_OK;
}

/* Applies the options every transfer shares: pinned address, TLS, proxy, timeouts. */
void blob_common_options(struct blob_client *c, CURL *e)
{
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_RESOLVE, c->resolve);
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, c->cfg.account.https ? "https" : "http");
  curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
  curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
  if (c->ca_file)
    curl_easy_setopt(e, CURLOPT_CAINFO, c->ca_file);
  /* Set explicitly so that an http_proxy in the environment never changes the path silently; the
   * bypass list is applied by blob_client_uses_proxy, the same decision `check` reports. */
  bool proxied = blob_client_uses_proxy(c);
  curl_easy_setopt(e, CURLOPT_PROXY, proxied ? c->proxy : "");
  if (proxied) {
    curl_easy_setopt(e, CURLOPT_PROXYTYPE, (long)CURLPROXY_HTTP);
    curl_easy_setopt(e, CURLOPT_PROXYAUTH, (long)CURLAUTH_BASIC);
  }
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, 10L);
  curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(e, CURLOPT_USERAGENT, "replication-appliance/" BLOB_API_VERSION);
}

/* One try's signed headers. The values live here, on start_try's stack, and sign[] points at them:
 * nothing is allocated per request but curl's header list. */
struct try_headers {
  char date[64], request_id[37], length[24];
  struct blob_header sign[REQ_MAX_HEADERS + 7];
  size_t nsign;
};

/* The headers that go into the signature; the date and request id are new for every try, since a
 * retry is signed afresh. */
static void collect_signed_headers(struct blob_client *c, const struct blob_req *r, struct try_headers *t)
{
  time_t now = time(NULL);
  struct tm tm;
  gmtime_r(&now, &tm);
  strftime(t->date, sizeof t->date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
  random_uuid(c, t->request_id);
  snprintf(t->length, sizeof t->length, "%zu", r->body_len);
  t->nsign = 0;
  t->sign[t->nsign++] = (struct blob_header){"x-ms-date", t->date};
  t->sign[t->nsign++] = (struct blob_header){"x-ms-version", BLOB_API_VERSION};
  t->sign[t->nsign++] = (struct blob_header){"x-ms-client-request-id", t->request_id};
  if (strcmp(r->verb, "PUT") == 0)
    t->sign[t->nsign++] = (struct blob_header){"Content-Length", t->length};
  if (r->content_md5[0])
    t->sign[t->nsign++] = (struct blob_header){"Content-MD5", r->content_md5};
  for (size_t i = 0; i < r->nextra; i++)
    t->sign[t->nsign++] = (struct blob_header){r->extra[i].name, r->extra[i].value};
  if (r->copy_source)
    t->sign[t->nsign++] = (struct blob_header){"x-ms-copy-source", r->copy_source};
}

/* Appends the Authorization header (none for SAS: its token is in the URL). The key material passes
 * through stack buffers only, wiped before return. */
static rpl_err append_authorization(struct blob_client *c, const struct blob_req *r, const struct try_headers *t,
                                    struct curl_slist **h)
{
  const struct blob_account *a = &c->cfg.account;
  char auth[8300];
  if (a->auth == BLOB_AUTH_SHARED_KEY) {
    char sts[4096], sig[64];
    rpl_err err = blob_sharedkey_string_to_sign(r->verb, t->sign, t->nsign, a->name, r->path, r->query, sts, sizeof sts);
    if (err == RPL_OK)
      err = blob_sharedkey_sign(a->key, a->key_len, sts, sig, sizeof sig);
    OPENSSL_cleanse(sts, sizeof sts);
    if (err != RPL_OK)
      return err;
    snprintf(auth, sizeof auth, "Authorization: SharedKey %s:%s", a->name, sig);
    *h = curl_slist_append(*h, auth);
  } else if (blob_auth_is_bearer(a->auth)) {
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", c->token.access_token);
    *h = curl_slist_append(*h, auth);
  }
  OPENSSL_cleanse(auth, sizeof auth);
  return RPL_OK;
}

/* curl's header list for the try; on failure nothing is left allocated. */
static rpl_err build_header_list(struct blob_client *c, const struct blob_req *r, const struct try_headers *t,
                                 struct curl_slist **out)
{
  struct curl_slist *h = NULL;
  char line[sizeof r->extra[0].name + sizeof r->extra[0].value + 8];
  for (size_t i = 0; i < t->nsign; i++) {
    if (strcasecmp(t->sign[i].name, "Content-Length") == 0)
      continue; /* curl sends it from the body size */
    if (t->sign[i].value == r->copy_source) {
      size_t n = strlen(t->sign[i].name) + strlen(r->copy_source) + 3;
      char *longer = malloc(n);
      if (!longer) {
        curl_slist_free_all(h);
        return RPL_E_NOMEM;
      }
      snprintf(longer, n, "%s: %s", t->sign[i].name, r->copy_source);
      h = curl_slist_append(h, longer);
      free(longer);
      continue;
    }
    snprintf(line, sizeof line, "%s: %s", t->sign[i].name, t->sign[i].value);
    h = curl_slist_append(h, line);
  }
  /* No "Expect: 100-continue" round trip, and no form Content-Type for PUT bodies. */
  h = curl_slist_append(h, "Expect:");
  h = curl_slist_append(h, "Content-Type:");
  rpl_err err = append_authorization(c, r, t, &h);
  if (err != RPL_OK) {
    curl_slist_free_all(h);
    return err;
  }
  if (!h)
    return RPL_E_NOMEM;
  *out = h;
  return RPL_OK;
}

/* The endpoint's scheme and host with the request's path (the endpoint's base path is part of
 * r->path already), its query and, for SAS, the token. */
static rpl_err format_url(const struct blob_account *a, const struct blob_req *r, char *url, size_t size)
{
  size_t host_part = strlen(a->endpoint) - strlen(a->base_path);
  int n = snprintf(url, size, "%.*s%s%s%s%s%s", (int)host_part, a->endpoint, r->path,
                   r->query[0] || a->auth == BLOB_AUTH_SAS ? "?" : "", r->query,
                   r->query[0] && a->auth == BLOB_AUTH_SAS ? "&" : "", a->auth == BLOB_AUTH_SAS ? a->sas : "");
  return n < 0 || (size_t)n >= size ? RPL_E_LIMIT : RPL_OK;
}

/* The handle comes from the idle pool when there is one (its connection cache is the multi's), reset
 * so nothing of its previous request carries over. */
static void set_request_options(struct blob_client *c, CURL *e, struct blob_req *r, const char *url, struct curl_slist *h)
{
  curl_easy_reset(e);
  blob_common_options(c, e);
  curl_easy_setopt(e, CURLOPT_URL, url);
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
  curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)r);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, blob_reply_on_header);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, blob_reply_on_body);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
  curl_easy_setopt(e, CURLOPT_TIMEOUT, (long)c->cfg.request_timeout_s);
  curl_easy_setopt(e, CURLOPT_UPLOAD_BUFFERSIZE, 512L * 1024L);
  if (strcmp(r->verb, "PUT") == 0) {
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, "PUT");
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body_len ? (const char *)r->body : "");
  } else if (strcmp(r->verb, "DELETE") == 0) {
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, "DELETE");
  } else if (r->head) {
    curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
  }
}

/* Fresh reply for this try: only the count of tries carries over from the last one. */
static void reset_reply(struct blob_req *r)
{
  unsigned tries = r->reply.tries;
  memset(&r->reply, 0, sizeof r->reply);
  r->reply.tries = tries + 1;
  r->reply.sequence_number = -1;
  r->reply.content_length = -1;
  r->retry_after_ms = -1;
  r->server_date = 0;
  r->resp_len = 0;
  r->sink_used = 0;
  r->overflow = false;
  r->header_bytes = 0;
}

static rpl_err start_try(struct blob_client *c, struct blob_req *r)
{
  struct blob_account *a = &c->cfg.account;
  if (blob_auth_is_bearer(a->auth)) {
    rpl_err err = ensure_token(c);
    if (err != RPL_OK) {
      log_warn("%s", rpl_detail(err));
      snprintf(r->reply.message, sizeof r->reply.message, "%s", rpl_detail(err));
      return err;
    }
  }
  struct try_headers t;
  collect_signed_headers(c, r, &t);
  struct curl_slist *h;
  rpl_err err = build_header_list(c, r, &t, &h);
  if (err != RPL_OK)
    return err;
  char url[BLOB_ENDPOINT_MAX + sizeof r->path + sizeof r->query + BLOB_SAS_MAX + 8];
  if ((err = format_url(a, r, url, sizeof url)) != RPL_OK) {
    curl_slist_free_all(h);
    return err;
  }
  CURL *e = c->nidle ? c->idle[--c->nidle] : curl_easy_init();
  if (!e) {
    curl_slist_free_all(h);
    return RPL_E_NOMEM;
  }
  set_request_options(c, e, r, url, h);
  reset_reply(r);
  curl_slist_free_all(r->curl_headers);
  r->curl_headers = h;
  r->easy = e;
  if (curl_multi_add_handle(c->multi, e) != CURLM_OK) {
    c->idle[c->nidle++] = e;
    r->easy = NULL;
    return RPL_E_INTERNAL;
  }
  c->flying[c->in_flight++] = r;
  c->stats.requests++;
  if (r->reply.tries > 1)
    c->stats.retries++;
  return RPL_OK;
}

void blob_enqueue(struct blob_client *c, struct blob_req *r)
{
  r->next = NULL;
  if (c->queue_tail)
    c->queue_tail->next = r;
  else
    c->queue_head = r;
  c->queue_tail = r;
  c->queued++;
}

static void finish(struct blob_client *c, struct blob_req *r, rpl_err err)
{
  c->completed++;
  if (r->done)
    r->done(r->ctx, err, &r->reply);
  blob_req_free(r);
}

static void note_clock(struct blob_client *c, struct blob_req *r)
{
  if (!r->server_date)
    return;
  int64_t skew = (int64_t)r->server_date - (int64_t)time(NULL);
  c->stats.clock_skew_s = skew;
  c->stats.clock_seen = true;
  int64_t mag = skew < 0 ? -skew : skew;
  if (mag > CLOCK_WARN_S && mag <= CLOCK_REFUSE_S && !c->skew_warned) {
    log_warn("this machine's clock is %lld s off the storage service's (over 5 minutes): sync it with NTP before it reaches 15 minutes",
             (long long)skew);
    c->skew_warned = true;
  }
}

/* Takes the finished handle off the multi, counts its traffic and keeps it for the next request
 * (up to the pool's size). Returns the request it carried. */
static struct blob_req *release_handle(struct blob_client *c, CURL *e, long *connect_code)
{
  struct blob_req *r = NULL;
  curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&r);
  long connects = 0;
  curl_off_t up = 0, down = 0;
  *connect_code = 0;
  curl_easy_getinfo(e, CURLINFO_NUM_CONNECTS, &connects);
  curl_easy_getinfo(e, CURLINFO_HTTP_CONNECTCODE, connect_code);
  curl_easy_getinfo(e, CURLINFO_SIZE_UPLOAD_T, &up);
  curl_easy_getinfo(e, CURLINFO_SIZE_DOWNLOAD_T, &down);
  c->stats.connections += (uint64_t)connects;
  c->stats.bytes_sent += (uint64_t)up;
  c->stats.bytes_received += (uint64_t)down;
  curl_multi_remove_handle(c->multi, e);
  for (size_t i = 0; i < c->in_flight; i++)
    if (c->flying[i] == r) {
      c->flying[i] = c->flying[--c->in_flight];
      break;
    }
  r->easy = NULL;
  if (c->nidle < c->cfg.max_in_flight + 1)
    c->idle[c->nidle++] = e;
  else
    curl_easy_cleanup(e);
  return r;
}

/* A transport failure: a refused proxy or certificate will not change by retrying. */
static rpl_err transport_outcome(struct blob_req *r, CURLcode cc, long connect_code, bool *retry)
{
  rpl_err err;
  if (r->overflow) {
    err = RPL_E_BLOB_TOO_LARGE;
  } else {
    err = blob_transport_error(cc, connect_code);
    *retry = err != RPL_E_BLOB_PROXY && err != RPL_E_BLOB_TLS && blob_retryable_transport(cc);
  }
  snprintf(r->reply.message, sizeof r->reply.message, "%s", curl_easy_strerror(cc));
  if (connect_code >= 300)
    snprintf(r->reply.message, sizeof r->reply.message, "proxy answered %ld to CONNECT%s", connect_code,
             connect_code == 407 || connect_code == 401 ? ": proxy authentication failed, check the proxy user and password" : "");
  return err;
}

/* An HTTP answer: a 2xx body is the operation's to parse; an error's XML names the service's code. */
static rpl_err http_outcome(struct blob_req *r, bool *retry)
{
  if (r->reply.status >= 200 && r->reply.status < 300) {
    if (r->sink && r->sink_used != r->sink_len) {
      snprintf(r->reply.message, sizeof r->reply.message, "short read: %zu of %zu bytes", r->sink_used, r->sink_len);
      return rpl_fail(RPL_E_BLOB_HTTP, "%s", r->reply.message);
    }
    return r->parse ? r->parse(r, r->resp ? r->resp : "", r->resp_len) : RPL_OK;
  }
  if (r->resp_len > 0) {
    char code[64], message[256];
    if (blob_xml_parse_error(r->resp, r->resp_len, code, sizeof code, message, sizeof message) == RPL_OK) {
      if (!r->reply.error_code[0])
        snprintf(r->reply.error_code, sizeof r->reply.error_code, "%s", code);
      snprintf(r->reply.message, sizeof r->reply.message, "%s", message);
    }
  }
  *retry = blob_retryable_status(r->reply.status);
  return blob_status_error(r);
}

/* The service's Retry-After when it gave one, else exponential backoff from the base. */
static uint64_t retry_delay_ms(struct blob_client *c, const struct blob_req *r)
{
  uint64_t delay;
  if (r->retry_after_ms >= 0) {
    delay = (uint64_t)r->retry_after_ms;
  } else {
    unsigned shift = r->reply.tries - 1 > 16 ? 16 : r->reply.tries - 1;
    delay = (uint64_t)c->cfg.retry_base_ms << shift;
    /* +-20 % jitter spreads the retries of many writes throttled together. */
    delay = delay * (80 + rng_next(c) % 41) / 100;
    if (delay < c->cfg.retry_base_ms)
      delay = c->cfg.retry_base_ms;
  }
  if (delay > c->cfg.retry_cap_ms)
    delay = c->cfg.retry_cap_ms;
  return delay;
}

static void complete_try(struct blob_client *c, CURL *e, CURLcode cc)
{
  long connect_code;
  struct blob_req *r = release_handle(c, e, &connect_code);
  note_clock(c, r);
  bool retry = false;
  rpl_err err = cc != CURLE_OK ? transport_outcome(r, cc, connect_code, &retry) : http_outcome(r, &retry);
  if (cc == CURLE_OK && r->reply.status == 401 && blob_auth_is_bearer(c->cfg.account.auth) && c->have_token) {
    /* The service no longer takes the token (revoked, or its clock says expired): the next try or
     * request fetches a new one instead of sending it again. */
    OPENSSL_cleanse(&c->token, sizeof c->token);
    c->have_token = false;
    if (c->cfg.account.auth != BLOB_AUTH_BEARER)
      blob_entra_forget(&c->cfg);
  }
  int64_t skew = c->stats.clock_skew_s < 0 ? -c->stats.clock_skew_s : c->stats.clock_skew_s;
  if (r->server_date && skew > CLOCK_REFUSE_S) {
    /* Azure refuses requests signed more than 15 minutes off its clock; say why, once per request. */
    err = RPL_E_BLOB_CLOCK_SKEW;
    retry = false;
    snprintf(r->reply.message, sizeof r->reply.message, "clock skew %lld s against the storage service's Date",
             (long long)c->stats.clock_skew_s);
  }
  if (retry && r->reply.tries < c->cfg.max_tries) {
    uint64_t delay = retry_delay_ms(c, r);
    log_info("%s %s: try %u got %s%ld %s; retrying in %llu ms", r->verb, r->path, r->reply.tries,
             cc != CURLE_OK ? "transport error " : "HTTP ", cc != CURLE_OK ? (long)cc : r->reply.status,
             cc != CURLE_OK ? curl_easy_strerror(cc) : r->reply.error_code, (unsigned long long)delay);
    r->due_ms = rpl_mono_ms() + delay;
    blob_enqueue(c, r);
    return;
  }
  if (err == RPL_E_BLOB_FENCED)
    log_warn("stale write fenced: %s %s was refused by the sequence-number condition (a newer cycle is committed)",
             r->verb, r->path);
  else if (err != RPL_OK && err != RPL_E_BLOB_NOT_FOUND && err != RPL_E_BLOB_EXISTS)
    log_debug("%s %s: %s (HTTP %ld %s, %u tries)", r->verb, r->path, rpl_errname(err), r->reply.status,
              r->reply.error_code, r->reply.tries);
  finish(c, r, err);
}

static void start_ready(struct blob_client *c)
{
  uint64_t now = rpl_mono_ms();
  struct blob_req **link = &c->queue_head, *prev = NULL;
  while (*link && c->in_flight < c->cfg.max_in_flight) {
    struct blob_req *r = *link;
    if (r->due_ms > now) {
      prev = r;
      link = &r->next;
      continue;
    }
    *link = r->next;
    if (c->queue_tail == r)
      c->queue_tail = prev;
    c->queued--;
    r->next = NULL;
    rpl_err err = start_try(c, r);
    if (err != RPL_OK)
      finish(c, r, err);
  }
}

static uint64_t earliest_due(const struct blob_client *c)
{
  uint64_t due = UINT64_MAX;
  if (c->in_flight >= c->cfg.max_in_flight)
    return due;
  for (const struct blob_req *r = c->queue_head; r; r = r->next)
    if (r->due_ms < due)
      due = r->due_ms;
  return due;
}

rpl_err blob_client_poll(struct blob_client *c, int timeout_ms)
{
  uint64_t deadline = rpl_mono_ms() + (uint64_t)(timeout_ms < 0 ? 0 : timeout_ms);
  uint64_t completed_before = c->completed;
  for (;;) {
    start_ready(c);
    int running = 0;
    if (curl_multi_perform(c->multi, &running) != CURLM_OK)
      return RPL_E_INTERNAL;
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(c->multi, &left)) != NULL)
      if (msg->msg == CURLMSG_DONE)
        complete_try(c, msg->easy_handle, msg->data.result);
    if (c->completed != completed_before || (c->in_flight == 0 && c->queued == 0))
      return RPL_OK;
    uint64_t now = rpl_mono_ms();
    if (now >= deadline)
      return RPL_OK;
    uint64_t wait = deadline - now;
    uint64_t due = earliest_due(c);
    if (due != UINT64_MAX)
      wait = due <= now ? 0 : (due - now < wait ? due - now : wait);
    if (wait > 0 && curl_multi_poll(c->multi, NULL, 0, (int)wait, NULL) != CURLM_OK)
      return RPL_E_INTERNAL;
    if (atomic_exchange(&c->woken, false))
      return RPL_OK;
  }
}

void blob_client_wakeup(struct blob_client *c)
{
  atomic_store(&c->woken, true);
  curl_multi_wakeup(c->multi);
}

rpl_err blob_client_drain(struct blob_client *c)
{
  while (blob_client_pending(c) > 0) {
    rpl_err err = blob_client_poll(c, 1000);
    if (err != RPL_OK)
      return err;
  }
  return RPL_OK;
}
