/* entra.c - Entra ID service-principal sign-in for storage: the client-credentials request with a
 * client secret or a certificate-signed client assertion, over the storage path's rules (zone
 * file, proxy and bypass list, CA file), and a process-wide token cache refreshed before expiry. */
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "blob_internal.h"
#include "rpl_log.h"

#define CREDENTIAL_FILE_MAX (64 * 1024) /* a PEM with a certificate chain and a key fits easily */
#define SECRET_MAX 1024
#define ASSERTION_MAX 8192
#define FORM_MAX (ASSERTION_MAX + 1024)
#define CACHE_SLOTS 8

bool blob_base64url(const unsigned char *in, size_t len, char *out, size_t outsz)
{
  static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  size_t need = (len * 4 + 2) / 3;
  if (need + 1 > outsz)
    return false;
  size_t o = 0;
  for (size_t i = 0; i < len; i += 3) {
    unsigned v = (unsigned)in[i] << 16;
    size_t n = len - i < 3 ? len - i : 3;
    if (n > 1)
      v |= (unsigned)in[i + 1] << 8;
    if (n > 2)
      v |= in[i + 2];
    out[o++] = alphabet[(v >> 18) & 63];
    out[o++] = alphabet[(v >> 12) & 63];
    if (n > 1)
      out[o++] = alphabet[(v >> 6) & 63];
    if (n > 2)
      out[o++] = alphabet[v & 63];
  }
  out[o] = '\0';
  return true;
}

/* Reads a credential file whole (at most CREDENTIAL_FILE_MAX); the caller wipes and frees *out. */
static rpl_err read_credential(const char *path, char **out, size_t *len)
{
  *out = NULL;
  *len = 0;
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    int saved = errno;
    return rpl_fail(RPL_E_ENTRA_CREDENTIAL, "cannot read the credential file %s: %s", path, strerror(saved));
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size <= 0 || st.st_size > CREDENTIAL_FILE_MAX) {
    close(fd);
    return rpl_fail(RPL_E_ENTRA_CREDENTIAL, "the credential file %s is not a regular file of 1 byte to %d KiB", path,
                    CREDENTIAL_FILE_MAX / 1024);
  }
  char *buf = malloc((size_t)st.st_size + 1);
  if (!buf) {
    close(fd);
    return RPL_E_NOMEM;
  }
  size_t got = 0;
  while (got < (size_t)st.st_size) {
    ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    got += (size_t)n;
  }
  close(fd);
  buf[got] = '\0';
  if (got == 0) {
    free(buf);
    return rpl_fail(RPL_E_ENTRA_CREDENTIAL, "the credential file %s could not be read whole", path);
  }
  *out = buf;
  *len = got;
  return RPL_OK;
}

static void wipe_free(char *p, size_t len)
{
  if (p) {
    OPENSSL_cleanse(p, len);
    free(p);
  }
}

/* The secret is the file's first line (trailing CR/LF and blanks dropped); printable ASCII only. */
static rpl_err read_secret(const char *path, char *secret, size_t secretsz)
{
  char *text;
  size_t len;
  rpl_err err = read_credential(path, &text, &len);
  if (err)
    return err;
  size_t n = strcspn(text, "\r\n");
  while (n > 0 && (text[n - 1] == ' ' || text[n - 1] == '\t'))
    n--;
  bool printable = n > 0 && n < secretsz;
  for (size_t i = 0; printable && i < n; i++)
    printable = text[i] >= 0x20 && text[i] < 0x7f;
  if (printable) {
    memcpy(secret, text, n);
    secret[n] = '\0';
  }
  wipe_free(text, len);
  if (!printable)
    return rpl_fail(RPL_E_ENTRA_CREDENTIAL, "the client secret file %s must hold the secret (printable, under %zu bytes) on its first line",
                    path, secretsz);
  return RPL_OK;
}

/* The certificate and its RSA key from PEM text; both or neither are returned. */
static rpl_err load_pem(const char *pem, size_t pem_len, X509 **cert, EVP_PKEY **key)
{
  *cert = NULL;
  *key = NULL;
  BIO *bio = BIO_new_mem_buf(pem, (int)pem_len);
  if (!bio)
    return RPL_E_NOMEM;
  X509 *c = PEM_read_bio_X509(bio, NULL, NULL, NULL);
  (void)BIO_reset(bio);
  EVP_PKEY *k = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
  BIO_free(bio);
  const char *why = !c ? "no certificate (-----BEGIN CERTIFICATE-----)"
                    : !k ? "no unencrypted private key (-----BEGIN PRIVATE KEY----- or RSA PRIVATE KEY)"
                    : EVP_PKEY_get_base_id(k) != EVP_PKEY_RSA ? "a key that is not RSA (Entra ID takes RSA certificates)"
                    : X509_check_private_key(c, k) != 1 ? "a private key that does not belong to the certificate"
                    : NULL;
  if (why) {
    X509_free(c);
    EVP_PKEY_free(k);
    return rpl_fail(RPL_E_ENTRA_CREDENTIAL, "the certificate file has %s", why);
  }
  *cert = c;
  *key = k;
  return RPL_OK;
}

/* The certificate's DER digest, base64url: x5t (SHA-1) and x5t#S256 (SHA-256). */
static bool thumbprint(X509 *cert, const EVP_MD *md, char *out, size_t outsz)
{
  unsigned char d[EVP_MAX_MD_SIZE];
  unsigned int dl = 0;
  return X509_digest(cert, md, d, &dl) == 1 && blob_base64url(d, dl, out, outsz);
}

rpl_err blob_entra_assertion(const char *pem, size_t pem_len, const char *client_id, const char *audience, time_t now,
                             const char *jti, char *out, size_t outsz)
{
  X509 *cert;
  EVP_PKEY *key;
  rpl_err err = load_pem(pem, pem_len, &cert, &key);
  if (err)
    return err;
  char x5t[64], x5t256[64], header[256], claims[1024];
  char h64[400], c64[1400];
  err = RPL_E_INTERNAL;
  if (!thumbprint(cert, EVP_sha1(), x5t, sizeof x5t) || !thumbprint(cert, EVP_sha256(), x5t256, sizeof x5t256))
    goto out;
  int hn = snprintf(header, sizeof header, "{\"alg\":\"RS256\",\"typ\":\"JWT\",\"x5t\":\"%s\",\"x5t#S256\":\"%s\"}", x5t, x5t256);
  int cn = snprintf(claims, sizeof claims,
                    "{\"aud\":\"%s\",\"iss\":\"%s\",\"sub\":\"%s\",\"jti\":\"%s\",\"iat\":%lld,\"nbf\":%lld,\"exp\":%lld}",
                    audience, client_id, client_id, jti, (long long)now, (long long)now,
                    (long long)now + BLOB_ENTRA_ASSERTION_LIFETIME_S);
  err = RPL_E_LIMIT;
  if (hn < 0 || (size_t)hn >= sizeof header || cn < 0 || (size_t)cn >= sizeof claims ||
      !blob_base64url((const unsigned char *)header, (size_t)hn, h64, sizeof h64) ||
      !blob_base64url((const unsigned char *)claims, (size_t)cn, c64, sizeof c64))
    goto out;
  size_t hl = strlen(h64), cl = strlen(c64);
  if (hl + 1 + cl + 1 + 400 > outsz) /* the signature of a 4096-bit key is 342 characters */
    goto out;
  memcpy(out, h64, hl);
  out[hl] = '.';
  memcpy(out + hl + 1, c64, cl + 1);
  size_t signing_len = hl + 1 + cl;
  unsigned char sig[1024];
  size_t siglen = sizeof sig;
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  err = RPL_E_INTERNAL;
  bool signed_ok = md && EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) == 1 &&
                   EVP_DigestSign(md, sig, &siglen, (const unsigned char *)out, signing_len) == 1;
  EVP_MD_CTX_free(md);
  if (!signed_ok) {
    err = rpl_fail(RPL_E_ENTRA_CREDENTIAL, "signing the client assertion with the certificate's key failed");
    goto out;
  }
  out[signing_len] = '.';
  err = blob_base64url(sig, siglen, out + signing_len + 1, outsz - signing_len - 1) ? RPL_OK : RPL_E_LIMIT;
out:
  X509_free(cert);
  EVP_PKEY_free(key);
  return err;
}

/* Appends name=value (value percent-encoded, '&' before all but the first) to the form. */
static bool form_add(char *out, size_t outsz, size_t *pos, const char *name, const char *value)
{
  static const char hex[] = "0123456789ABCDEF";
  int n = snprintf(out + *pos, outsz - *pos, "%s%s=", *pos ? "&" : "", name);
  if (n < 0 || (size_t)n >= outsz - *pos)
    return false;
  *pos += (size_t)n;
  for (const unsigned char *p = (const unsigned char *)value; *p; p++) {
    bool plain = isalnum(*p) || *p == '-' || *p == '_' || *p == '.' || *p == '~';
    if (*pos + (plain ? 1 : 3) >= outsz)
      return false;
    if (plain) {
      out[(*pos)++] = (char)*p;
    } else {
      out[(*pos)++] = '%';
      out[(*pos)++] = hex[*p >> 4];
      out[(*pos)++] = hex[*p & 15];
    }
  }
  out[*pos] = '\0';
  return true;
}

rpl_err blob_entra_form(const char *client_id, const char *secret, const char *assertion, char *out, size_t outsz)
{
  size_t pos = 0;
  if (outsz)
    out[0] = '\0';
  bool ok = form_add(out, outsz, &pos, "grant_type", "client_credentials") &&
            form_add(out, outsz, &pos, "client_id", client_id) && form_add(out, outsz, &pos, "scope", BLOB_ENTRA_SCOPE);
  if (ok && secret)
    ok = form_add(out, outsz, &pos, "client_secret", secret);
  else if (ok)
    ok = form_add(out, outsz, &pos, "client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer") &&
         form_add(out, outsz, &pos, "client_assertion", assertion);
  if (!ok) {
    OPENSSL_cleanse(out, outsz);
    return RPL_E_LIMIT;
  }
  return RPL_OK;
}

rpl_err blob_entra_token_url(const struct blob_account *a, char *out, size_t outsz)
{
  int n = snprintf(out, outsz, "%s/%s/oauth2/v2.0/token", a->authority[0] ? a->authority : BLOB_DEFAULT_AUTHORITY,
                   a->tenant);
  return n < 0 || (size_t)n >= outsz ? RPL_E_LIMIT : RPL_OK;
}

rpl_err blob_entra_check_credential(enum blob_auth auth, const char *path)
{
  if (auth == BLOB_AUTH_CLIENT_SECRET) {
    char secret[SECRET_MAX];
    rpl_err err = read_secret(path, secret, sizeof secret);
    OPENSSL_cleanse(secret, sizeof secret);
    return err;
  }
  char *pem;
  size_t len;
  rpl_err err = read_credential(path, &pem, &len);
  if (err)
    return err;
  X509 *cert;
  EVP_PKEY *key;
  err = load_pem(pem, len, &cert, &key);
  wipe_free(pem, len);
  if (err)
    return rpl_fail(err, "%s: %s", path, rpl_detail(err));
  X509_free(cert);
  EVP_PKEY_free(key);
  return RPL_OK;
}

/* ---- the request ---- */

/* The authority's host (brackets dropped) and port. */
static bool authority_host(const char *authority, char *host, size_t hostsz, unsigned *port)
{
  const char *h = authority + 8; /* "https://", checked when parsed */
  size_t n;
  const char *rest;
  if (*h == '[') {
    const char *close = strchr(h, ']');
    if (!close)
      return false;
    n = (size_t)(close - h - 1);
    h++;
    rest = close + 1;
  } else {
    n = strcspn(h, ":/");
    rest = h + n;
  }
  if (n == 0 || n >= hostsz)
    return false;
  memcpy(host, h, n);
  host[n] = '\0';
  *port = 443;
  if (*rest == ':') {
    char *end;
    unsigned long p = strtoul(rest + 1, &end, 10);
    if (p == 0 || p > 65535)
      return false;
    *port = (unsigned)p;
  }
  return true;
}

/* How the token endpoint is reached: by the proxy (unless the bypass list names it), else at the
 * address the zone file gives it (the zone file stands in for private DNS; a name it does not list
 * is public, as Entra ID's sign-in host is) or the system resolver's, pinned for curl. */
static rpl_err token_path(const struct blob_config *cfg, const char *host, unsigned port, struct curl_slist **resolve,
                          bool *proxied)
{
  *resolve = NULL;
  struct netpath_zone *zone = NULL;
  struct netpath_route route;
  rpl_err err = RPL_OK;
  if (cfg->private_dns_zone)
    err = netpath_zone_load(cfg->private_dns_zone, &zone);
  if (err == RPL_OK) {
    err = zone ? netpath_resolve(host, zone, &route) : RPL_E_NOT_FOUND;
    if (err != RPL_OK)
      err = netpath_resolve(host, NULL, &route);
  }
  netpath_zone_free(zone);
  const char *addr = err == RPL_OK ? route.addr_text[0] : NULL;
  *proxied = cfg->proxy && !blob_proxy_bypassed(cfg->proxy_bypass, host, addr);
  if (*proxied)
    return RPL_OK; /* the proxy resolves the name */
  if (err != RPL_OK)
    return rpl_fail(RPL_E_ENTRA_UNREACHABLE, "token endpoint host %s: %s", host, rpl_detail(err));
  char entry[NETPATH_NAME_MAX + NETPATH_ADDR_TEXT + 16];
  bool v6 = route.addrs[0].ss_family == AF_INET6;
  snprintf(entry, sizeof entry, "%s:%u:%s%s%s", host, port, v6 ? "[" : "", addr, v6 ? "]" : "");
  *resolve = curl_slist_append(NULL, entry);
  return *resolve ? RPL_OK : RPL_E_NOMEM;
}

/* The form for this try: the secret, or a fresh assertion (its jti and times are new each try). */
static rpl_err build_form(const struct blob_account *a, const char *url, char *form, size_t formsz)
{
  rpl_err err;
  if (a->auth == BLOB_AUTH_CLIENT_SECRET) {
    char secret[SECRET_MAX];
    err = read_secret(a->credential_file, secret, sizeof secret);
    if (err == RPL_OK)
      err = blob_entra_form(a->client_id, secret, NULL, form, formsz);
    OPENSSL_cleanse(secret, sizeof secret);
    return err;
  }
  char *pem;
  size_t len;
  if ((err = read_credential(a->credential_file, &pem, &len)))
    return err;
  unsigned char r[16];
  char jti[37];
  if (RAND_bytes(r, sizeof r) != 1) {
    wipe_free(pem, len);
    return RPL_E_INTERNAL;
  }
  r[6] = (unsigned char)((r[6] & 0x0f) | 0x40);
  r[8] = (unsigned char)((r[8] & 0x3f) | 0x80);
  snprintf(jti, sizeof jti, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", r[0], r[1], r[2],
           r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12], r[13], r[14], r[15]);
  char *assertion = malloc(ASSERTION_MAX);
  err = assertion ? blob_entra_assertion(pem, len, a->client_id, url, time(NULL), jti, assertion, ASSERTION_MAX) : RPL_E_NOMEM;
  wipe_free(pem, len);
  if (err == RPL_E_ENTRA_CREDENTIAL)
    err = rpl_fail(err, "%s: %s", a->credential_file, rpl_detail(err));
  if (err == RPL_OK)
    err = blob_entra_form(a->client_id, NULL, assertion, form, formsz);
  wipe_free(assertion, ASSERTION_MAX);
  return err;
}

/* What a refusal says: the OAuth error and the first line of its description (AADSTS code). */
static rpl_err refusal(const char *url, const struct blob_account *a, long status, const struct blob_token_body *b)
{
  char error[64] = "", desc[320] = "";
  if (blob_token_parse_error(b->data, b->len, error, sizeof error, desc, sizeof desc) != RPL_OK)
    error[0] = desc[0] = '\0';
  /* Entra ID answers 400 for an unknown tenant or app and 401 for a wrong credential; a busy or
   * failing service 429 or 5xx; anything else is not its token endpoint (a wrong authority host). */
  bool client = status == 400 || status == 401 || status == 403;
  bool busy = status == 429 || status >= 500;
  return rpl_fail(client ? RPL_E_ENTRA_CLIENT : busy ? RPL_E_ENTRA_UNREACHABLE : RPL_E_BLOB_TOKEN, "token endpoint %s answered HTTP %ld for client %s%s%s%s%s",
                  url, status, a->client_id, error[0] ? ": " : "", error, desc[0] ? ": " : "", desc);
}

static rpl_err fetch(const struct blob_config *cfg, unsigned max_tries, struct blob_token *out)
{
  const struct blob_account *a = &cfg->account;
  char url[BLOB_ENDPOINT_MAX + BLOB_ENTRA_ID_MAX + 32], host[NETPATH_NAME_MAX];
  unsigned port;
  if (blob_entra_token_url(a, url, sizeof url) != RPL_OK ||
      !authority_host(a->authority[0] ? a->authority : BLOB_DEFAULT_AUTHORITY, host, sizeof host, &port))
    return rpl_fail(RPL_E_CONFIG, "the authority host is not https://HOST[:PORT]");
  struct curl_slist *resolve;
  bool proxied;
  rpl_err err = token_path(cfg, host, port, &resolve, &proxied);
  if (err)
    return err;
  struct blob_token_body b = {.data = malloc(BLOB_TOKEN_JSON_MAX)};
  char *form = malloc(FORM_MAX);
  CURL *e = curl_easy_init();
  if (!b.data || !form || !e) {
    free(b.data);
    free(form);
    curl_easy_cleanup(e);
    curl_slist_free_all(resolve);
    return RPL_E_NOMEM;
  }
  struct curl_slist *headers = curl_slist_append(NULL, "Accept: application/json");
  unsigned delay_ms = 500;
  for (unsigned attempt = 1; attempt <= max_tries; attempt++) {
    if ((err = build_form(a, url, form, FORM_MAX)))
      break;
    b.len = 0;
    b.overflow = false;
    curl_easy_reset(e);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "https");
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    if (cfg->ca_file)
      curl_easy_setopt(e, CURLOPT_CAINFO, cfg->ca_file);
    curl_easy_setopt(e, CURLOPT_RESOLVE, resolve);
    /* Set explicitly, as for storage: an http_proxy in the environment never changes the path. */
    curl_easy_setopt(e, CURLOPT_PROXY, proxied ? cfg->proxy : "");
    if (proxied) {
      curl_easy_setopt(e, CURLOPT_PROXYTYPE, (long)CURLPROXY_HTTP);
      curl_easy_setopt(e, CURLOPT_PROXYAUTH, (long)CURLAUTH_BASIC);
    }
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, form);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)strlen(form));
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, blob_token_body_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT, 30L);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "replication-appliance/" BLOB_API_VERSION);
    char errbuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf);
    CURLcode cc = curl_easy_perform(e);
    OPENSSL_cleanse(form, FORM_MAX);
    long status = 0, connect_code = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(e, CURLINFO_HTTP_CONNECTCODE, &connect_code);
    bool retry;
    if (cc != CURLE_OK) {
      err = rpl_fail(RPL_E_ENTRA_UNREACHABLE, "token endpoint %s%s%s: %s", url, proxied ? " via the proxy" : "",
                     connect_code >= 300 ? " (the proxy refused CONNECT)" : "", errbuf[0] ? errbuf : curl_easy_strerror(cc));
      retry = !b.overflow && cc != CURLE_PEER_FAILED_VERIFICATION && cc != CURLE_SSL_CACERT_BADFILE && connect_code < 300;
    } else if (status == 200) {
      err = blob_token_parse(b.data, b.len, time(NULL), out);
      if (err)
        err = rpl_fail(err, "token endpoint %s: %s", url, rpl_detail(err));
      break;
    } else {
      err = refusal(url, a, status, &b);
      retry = status == 429 || status >= 500;
    }
    if (!retry || attempt == max_tries)
      break;
    log_warn("Entra ID token: try %u failed (%s); retrying in %u ms", attempt, rpl_detail(err), delay_ms);
    usleep(delay_ms * 1000u);
    delay_ms = delay_ms * 2 > 10000 ? 10000 : delay_ms * 2;
  }
  curl_slist_free_all(headers);
  curl_slist_free_all(resolve);
  curl_easy_cleanup(e);
  OPENSSL_cleanse(b.data, BLOB_TOKEN_JSON_MAX);
  free(b.data);
  OPENSSL_cleanse(form, FORM_MAX);
  free(form);
  return err;
}

/* ---- the cache: one token per service principal, shared by every client of the process ---- */

struct cache_slot {
  char key[BLOB_ENDPOINT_MAX + 2 * BLOB_ENTRA_ID_MAX + BLOB_ENTRA_PATH_MAX + 4];
  struct blob_token token;
  uint64_t used;
};
static struct cache_slot cache[CACHE_SLOTS];
static uint64_t cache_clock;
/* Held across a fetch: clients needing the same token wait for the one request instead of each
 * making their own. */
static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;

static void cache_key(const struct blob_account *a, char *out, size_t outsz)
{
  snprintf(out, outsz, "%s|%s|%s|%s", a->authority, a->tenant, a->client_id, a->credential_file);
}

static struct cache_slot *cache_find(const char *key)
{
  for (size_t i = 0; i < CACHE_SLOTS; i++)
    if (cache[i].key[0] && strcmp(cache[i].key, key) == 0)
      return &cache[i];
  return NULL;
}

rpl_err blob_entra_token(const struct blob_config *cfg, unsigned max_tries, struct blob_token *out, bool *fetched)
{
  *fetched = false;
  if (max_tries == 0)
    max_tries = 5;
  char key[sizeof cache[0].key];
  cache_key(&cfg->account, key, sizeof key);
  pthread_mutex_lock(&cache_lock);
  time_t now = time(NULL);
  struct cache_slot *slot = cache_find(key);
  if (slot && slot->token.expires_on - now > TOKEN_REFRESH_MARGIN_S) {
    *out = slot->token;
    slot->used = ++cache_clock;
    pthread_mutex_unlock(&cache_lock);
    return RPL_OK;
  }
  rpl_err err = fetch(cfg, max_tries, out);
  *fetched = true;
  if (err == RPL_OK) {
    if (!slot) {
      slot = &cache[0];
      for (size_t i = 1; i < CACHE_SLOTS; i++)
        if (cache[i].used < slot->used)
          slot = &cache[i];
      snprintf(slot->key, sizeof slot->key, "%s", key);
    }
    slot->token = *out;
    slot->used = ++cache_clock;
    log_info("Entra ID token for client %s (tenant %s) obtained; valid for %lld s", cfg->account.client_id,
             cfg->account.tenant, (long long)(out->expires_on - now));
  }
  pthread_mutex_unlock(&cache_lock);
  return err;
}

void blob_entra_forget(const struct blob_config *cfg)
{
  char key[sizeof cache[0].key];
  cache_key(&cfg->account, key, sizeof key);
  pthread_mutex_lock(&cache_lock);
  struct cache_slot *slot = cache_find(key);
  if (slot)
    OPENSSL_cleanse(slot, sizeof *slot);
  pthread_mutex_unlock(&cache_lock);
}
