/* connstr.c - storage connection strings (all the standard keys, UseDevelopmentStorage, the
 * environment variable, and ours for an Entra ID service principal: TenantId, ClientId,
 * ClientSecretFile or ClientCertificateFile, AuthorityHost) and SAS token validation. Errors name
 * the part, never a secret's value. */
#include <ctype.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "blob_internal.h"

#define CONNSTR_MAX 8192
/* The storage emulator's documented, public development account. */
#define DEV_ACCOUNT "devstoreaccount1"
#define DEV_KEY "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
#define DEV_ENDPOINT "http://127.0.0.1:10000/devstoreaccount1"

/* Standard base64 (with padding) of a key; rejects anything else, including whitespace. */
static bool decode_key(const char *b64, unsigned char *out, size_t outsz, size_t *outlen)
{
  size_t n = strlen(b64);
  if (n == 0 || n % 4 != 0 || n / 4 * 3 > outsz + 2)
    return false;
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)b64[i];
    if (!(isalnum(ch) || ch == '+' || ch == '/' || (ch == '=' && i >= n - 2)))
      return false;
  }
  if (b64[n - 2] == '=' && b64[n - 1] != '=')
    return false;
  unsigned char tmp[128];
  if (n / 4 * 3 > sizeof tmp)
    return false;
  int len = EVP_DecodeBlock(tmp, (const unsigned char *)b64, (int)n);
  if (len < 0)
    return false;
  size_t pad = (b64[n - 1] == '=') + (b64[n - 2] == '=');
  size_t real = (size_t)len - pad;
  if (real == 0 || real > outsz)
    return false;
  memcpy(out, tmp, real);
  OPENSSL_cleanse(tmp, sizeof tmp);
  *outlen = real;
  return true;
}

static bool valid_account_name(const char *name)
{
  size_t n = strlen(name);
  if (n < 3 || n > 24)
    return false;
  for (size_t i = 0; i < n; i++)
    if (!islower((unsigned char)name[i]) && !isdigit((unsigned char)name[i]))
      return false;
  return true;
}

static bool is_ip_literal(const char *host)
{
  if (host[0] == '[')
    return true;
  for (const char *p = host; *p; p++)
    if (!isdigit((unsigned char)*p) && *p != '.')
      return false;
  return true;
}

/* Splits "scheme://host[:port][/path]" into the account fields; the path becomes base_path. */
static rpl_err parse_endpoint(const char *url, struct blob_account *acct)
{
  const char *rest;
  if (strncasecmp(url, "https://", 8) == 0) {
    acct->https = true;
    rest = url + 8;
  } else if (strncasecmp(url, "http://", 7) == 0) {
    acct->https = false;
    rest = url + 7;
  } else {
    return rpl_fail(RPL_E_BLOB_CONNSTR, "BlobEndpoint must start with https:// (or http:// for an emulator)");
  }
  size_t hostlen = strcspn(rest, ":/?#");
  if (rest[0] == '[') {
    const char *close = strchr(rest, ']');
    if (!close) {
      return rpl_fail(RPL_E_BLOB_CONNSTR, "BlobEndpoint has an unterminated [IPv6] host");
    }
    hostlen = (size_t)(close - rest) + 1;
  }
  if (hostlen == 0 || hostlen >= sizeof acct->host) {
    return rpl_fail(RPL_E_BLOB_CONNSTR, "BlobEndpoint has no host name (or one that is too long)");
  }
  memcpy(acct->host, rest, hostlen);
  acct->host[hostlen] = '\0';
  for (char *p = acct->host; *p; p++)
    *p = (char)tolower((unsigned char)*p);
  const char *p = rest + hostlen;
  acct->port = acct->https ? 443 : 80;
  if (*p == ':') {
    char *end;
    unsigned long port = strtoul(p + 1, &end, 10);
    if (end == p + 1 || port == 0 || port > 65535) {
      return rpl_fail(RPL_E_BLOB_CONNSTR, "BlobEndpoint has an invalid port");
    }
    acct->port = (unsigned)port;
    p = end;
  }
  if (strpbrk(p, "?#")) {
    return rpl_fail(RPL_E_BLOB_CONNSTR, "BlobEndpoint must not have a query or fragment (give a SAS as SharedAccessSignature=)");
  }
  if (*p != '\0' && *p != '/') {
    return rpl_fail(RPL_E_BLOB_CONNSTR, "BlobEndpoint is not a URL of the form https://host[:port][/path]");
  }
  size_t pathlen = strlen(p);
  while (pathlen > 0 && p[pathlen - 1] == '/')
    pathlen--;
  if (pathlen >= sizeof acct->base_path) {
    return rpl_fail(RPL_E_BLOB_CONNSTR, "BlobEndpoint path is too long");
  }
  for (size_t i = 0; i < pathlen; i++) {
    unsigned char ch = (unsigned char)p[i];
    if (!isalnum(ch) && ch != '/' && ch != '-' && ch != '_' && ch != '.') {
      return rpl_fail(RPL_E_BLOB_CONNSTR, "BlobEndpoint path may hold only letters, digits, '-', '_', '.' and '/'");
    }
  }
  memcpy(acct->base_path, p, pathlen);
  acct->base_path[pathlen] = '\0';
  int n = snprintf(acct->endpoint, sizeof acct->endpoint, "%s://%s:%u%s", acct->https ? "https" : "http",
                   acct->host, acct->port, acct->base_path);
  if (n < 0 || (size_t)n >= sizeof acct->endpoint) {
    return rpl_fail(RPL_E_BLOB_CONNSTR, "BlobEndpoint is too long");
  }
  return RPL_OK;
}

static int hexval(int ch)
{
  if (ch >= '0' && ch <= '9')
    return ch - '0';
  ch = tolower(ch);
  if (ch >= 'a' && ch <= 'f')
    return ch - 'a' + 10;
  return -1;
}

rpl_err blob_sas_validate(const char *sas)
{
  static const char *const known[] = {
    "sv", "ss", "srt", "sr", "sp", "st", "se", "sip", "spr", "si", "sig", "sdd", "ses", "skoid",
    "sktid", "skt", "ske", "sks", "skv", "saoid", "suoid", "scid", "rscc", "rscd", "rsce", "rscl",
    "rsct",
  };
  if (!sas || !*sas) {
    return rpl_fail(RPL_E_BLOB_SAS, "SAS token is empty");
  }
  size_t n = strlen(sas);
  if (n >= BLOB_SAS_MAX) {
    return rpl_fail(RPL_E_BLOB_SAS, "SAS token is longer than %d bytes", BLOB_SAS_MAX - 1);
  }
  if (sas[0] == '?') {
    return rpl_fail(RPL_E_BLOB_SAS, "SAS token must be given without the leading '?'");
  }
  bool have_sv = false, have_sig = false;
  const char *p = sas;
  while (*p) {
    size_t plen = strcspn(p, "&");
    const char *eq = memchr(p, '=', plen);
    if (!eq || eq == p) {
      return rpl_fail(RPL_E_BLOB_SAS, "SAS token has a parameter without 'name=value' form");
    }
    size_t nlen = (size_t)(eq - p);
    bool found = false;
    for (size_t k = 0; k < sizeof known / sizeof known[0]; k++)
      if (strlen(known[k]) == nlen && strncmp(known[k], p, nlen) == 0)
        found = true;
    if (!found) {
      return rpl_fail(RPL_E_BLOB_SAS, "SAS token has the unknown parameter '%.*s'", (int)(nlen > 16 ? 16 : nlen), p);
    }
    const char *v = eq + 1;
    size_t vlen = plen - nlen - 1;
    if (vlen == 0) {
      return rpl_fail(RPL_E_BLOB_SAS, "SAS parameter '%.*s' has an empty value", (int)nlen, p);
    }
    for (size_t i = 0; i < vlen; i++) {
      unsigned char ch = (unsigned char)v[i];
      if (ch == '%') {
        if (i + 2 >= vlen || hexval(v[i + 1]) < 0 || hexval(v[i + 2]) < 0) {
          return rpl_fail(RPL_E_BLOB_SAS, "SAS parameter '%.*s' has a bad %%-escape", (int)nlen, p);
        }
        i += 2;
        continue;
      }
      if (!isalnum(ch) && !strchr("-._~:+/=,", ch)) {
        return rpl_fail(RPL_E_BLOB_SAS, "SAS parameter '%.*s' has a character that must be %%-encoded", (int)nlen, p);
      }
    }
    if (nlen == 2 && strncmp(p, "sv", 2) == 0)
      have_sv = true;
    if (nlen == 3 && strncmp(p, "sig", 3) == 0)
      have_sig = true;
    p += plen;
    if (*p == '&') {
      p++;
      if (!*p || *p == '&') {
        return rpl_fail(RPL_E_BLOB_SAS, "SAS token has an empty parameter");
      }
    }
  }
  if (!have_sv || !have_sig) {
    return rpl_fail(RPL_E_BLOB_SAS, "SAS token lacks %s (copy the whole token)", have_sv ? "sig=" : "sv=");
  }
  return RPL_OK;
}

/* GUIDs and domain names: what a tenant or client id may hold, nothing that would need escaping in
 * a URL path or a form. */
static bool valid_entra_id(const char *v, bool domain)
{
  size_t n = strlen(v);
  if (n == 0 || n >= BLOB_ENTRA_ID_MAX)
    return false;
  for (size_t i = 0; i < n; i++)
    if (!isalnum((unsigned char)v[i]) && v[i] != '-' && !(domain && v[i] == '.'))
      return false;
  return true;
}

/* "https://host[:port]" with an optional trailing '/', nothing else: the tenant's path follows it. */
static bool valid_authority(const char *v, char *out, size_t outsz)
{
  if (strncasecmp(v, "https://", 8) != 0)
    return false;
  size_t n = strlen(v);
  while (n > 8 && v[n - 1] == '/')
    n--;
  if (n == 8 || n >= outsz)
    return false;
  for (size_t i = 8; i < n; i++)
    if (!isalnum((unsigned char)v[i]) && !strchr("-.:[]", v[i]))
      return false;
  memcpy(out, v, n);
  out[n] = '\0';
  return true;
}

enum connstr_key {
  K_PROTOCOL, K_NAME, K_KEY, K_ENDPOINT, K_SUFFIX, K_SAS, K_DEV, K_DEV_PROXY, K_OTHER_ENDPOINT,
  K_TENANT, K_CLIENT, K_SECRET_FILE, K_CERT_FILE, K_AUTHORITY, K_COUNT
};

static int key_index(const char *name, size_t len)
{
  static const struct { const char *name; int key; } keys[] = {
    {"DefaultEndpointsProtocol", K_PROTOCOL}, {"AccountName", K_NAME}, {"AccountKey", K_KEY},
    {"BlobEndpoint", K_ENDPOINT}, {"EndpointSuffix", K_SUFFIX}, {"SharedAccessSignature", K_SAS},
    {"UseDevelopmentStorage", K_DEV}, {"DevelopmentStorageProxyUri", K_DEV_PROXY},
    {"QueueEndpoint", K_OTHER_ENDPOINT}, {"TableEndpoint", K_OTHER_ENDPOINT},
    {"FileEndpoint", K_OTHER_ENDPOINT}, {"BlobSecondaryEndpoint", K_OTHER_ENDPOINT},
    {"QueueSecondaryEndpoint", K_OTHER_ENDPOINT}, {"TableSecondaryEndpoint", K_OTHER_ENDPOINT},
    {"FileSecondaryEndpoint", K_OTHER_ENDPOINT},
    {"TenantId", K_TENANT}, {"ClientId", K_CLIENT}, {"ClientSecretFile", K_SECRET_FILE},
    {"ClientCertificateFile", K_CERT_FILE}, {"AuthorityHost", K_AUTHORITY},
  };
  for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
    if (strlen(keys[i].name) == len && strncasecmp(keys[i].name, name, len) == 0)
      return keys[i].key;
  return -1;
}

rpl_err blob_connstr_parse(const char *text, struct blob_account *out)
{
  memset(out, 0, sizeof *out);
  if (!text || !*text) {
    return rpl_fail(RPL_E_BLOB_CONNSTR, "connection string is empty");
  }
  size_t tlen = strlen(text);
  if (tlen > CONNSTR_MAX) {
    return rpl_fail(RPL_E_BLOB_CONNSTR, "connection string is longer than %d bytes", CONNSTR_MAX);
  }
  char *copy = strdup(text);
  if (!copy)
    return RPL_E_NOMEM;
  const char *values[K_COUNT] = {0};
  rpl_err err = RPL_OK;
  char *save = NULL;
  unsigned partno = 0;
  for (char *part = strtok_r(copy, ";", &save); part; part = strtok_r(NULL, ";", &save)) {
    partno++;
    while (*part == ' ' || *part == '\t')
      part++;
    size_t plen = strlen(part);
    while (plen > 0 && (part[plen - 1] == ' ' || part[plen - 1] == '\t' || part[plen - 1] == '\n' || part[plen - 1] == '\r'))
      part[--plen] = '\0';
    if (plen == 0)
      continue;
    char *eq = strchr(part, '=');
    if (!eq || eq == part) {
      /* The part is not echoed: it might be a pasted key. */
      err = rpl_fail(RPL_E_BLOB_CONNSTR, "connection string part %u is not Key=Value (parts are separated by ';')", partno);
      break;
    }
    int k = key_index(part, (size_t)(eq - part));
    if (k < 0) {
      err = rpl_fail(RPL_E_BLOB_CONNSTR, "connection string has the unknown key '%.*s'", (int)((eq - part) > 40 ? 40 : (eq - part)), part);
      break;
    }
    if (k == K_OTHER_ENDPOINT)
      continue; /* other services' endpoints: not ours to use */
    if (values[k]) {
      err = rpl_fail(RPL_E_BLOB_CONNSTR, "connection string gives '%.*s' twice", (int)(eq - part), part);
      break;
    }
    values[k] = eq + 1;
  }
  if (err == RPL_OK && values[K_DEV]) {
    if (strcasecmp(values[K_DEV], "true") != 0) {
      err = rpl_fail(RPL_E_BLOB_CONNSTR, "UseDevelopmentStorage must be 'true'");
    } else if (values[K_NAME] || values[K_KEY] || values[K_ENDPOINT] || values[K_SAS]) {
      err = rpl_fail(RPL_E_BLOB_CONNSTR, "UseDevelopmentStorage=true cannot be combined with account keys");
    } else {
      snprintf(out->name, sizeof out->name, "%s", DEV_ACCOUNT);
      char endpoint[BLOB_ENDPOINT_MAX];
      if (values[K_DEV_PROXY])
        snprintf(endpoint, sizeof endpoint, "%s:10000/%s", values[K_DEV_PROXY], DEV_ACCOUNT);
      else
        snprintf(endpoint, sizeof endpoint, "%s", DEV_ENDPOINT);
      err = parse_endpoint(endpoint, out);
      if (err == RPL_OK) {
        out->auth = BLOB_AUTH_SHARED_KEY;
        if (!decode_key(DEV_KEY, out->key, sizeof out->key, &out->key_len))
          err = RPL_E_INTERNAL;
      }
    }
    free(copy);
    return err;
  }
  if (err == RPL_OK && values[K_DEV_PROXY]) {
    err = rpl_fail(RPL_E_BLOB_CONNSTR, "DevelopmentStorageProxyUri needs UseDevelopmentStorage=true");
  }
  if (err == RPL_OK && values[K_PROTOCOL] && strcasecmp(values[K_PROTOCOL], "https") != 0 &&
      strcasecmp(values[K_PROTOCOL], "http") != 0) {
    err = rpl_fail(RPL_E_BLOB_CONNSTR, "DefaultEndpointsProtocol must be https (or http)");
  }
  if (err == RPL_OK && values[K_NAME]) {
    if (strlen(values[K_NAME]) >= sizeof out->name || !valid_account_name(values[K_NAME])) {
      err = rpl_fail(RPL_E_BLOB_CONNSTR, "AccountName must be 3-24 lower-case letters and digits");
    } else {
      snprintf(out->name, sizeof out->name, "%s", values[K_NAME]);
    }
  }
  if (err == RPL_OK && values[K_ENDPOINT]) {
    err = parse_endpoint(values[K_ENDPOINT], out);
  } else if (err == RPL_OK) {
    if (!values[K_NAME]) {
      err = rpl_fail(RPL_E_BLOB_CONNSTR, "connection string needs AccountName (or BlobEndpoint)");
    } else {
      const char *suffix = values[K_SUFFIX] ? values[K_SUFFIX] : "core.windows.net";
      bool https = !values[K_PROTOCOL] || strcasecmp(values[K_PROTOCOL], "https") == 0;
      char endpoint[BLOB_ENDPOINT_MAX];
      int n = snprintf(endpoint, sizeof endpoint, "%s://%s.blob.%s", https ? "https" : "http", out->name, suffix);
      if (n < 0 || (size_t)n >= sizeof endpoint || strpbrk(suffix, "/:?#@ ")) {
        err = rpl_fail(RPL_E_BLOB_CONNSTR, "EndpointSuffix must be a DNS suffix such as core.windows.net");
      } else {
        err = parse_endpoint(endpoint, out);
      }
    }
  }
  if (err == RPL_OK && !out->name[0]) {
    /* BlobEndpoint alone: the account is the first label of a production host or the path's first
     * segment of an emulator URL. */
    const char *from = out->base_path[0] ? out->base_path + 1 : out->host;
    size_t n = strcspn(from, out->base_path[0] ? "/" : ".");
    if (n == 0 || n >= sizeof out->name) {
      err = rpl_fail(RPL_E_BLOB_CONNSTR, "cannot tell the account name from BlobEndpoint: add AccountName=");
    } else {
      memcpy(out->name, from, n);
      out->name[n] = '\0';
    }
  }
  if (err == RPL_OK && !out->base_path[0] && (is_ip_literal(out->host) || strcmp(out->host, "localhost") == 0)) {
    /* An IP or localhost host cannot carry the account: emulator path style. */
    snprintf(out->base_path, sizeof out->base_path, "/%s", out->name);
    snprintf(out->endpoint, sizeof out->endpoint, "%s://%s:%u/%s", out->https ? "https" : "http",
             out->host, out->port, out->name);
  }
  bool principal = values[K_TENANT] || values[K_CLIENT] || values[K_SECRET_FILE] || values[K_CERT_FILE] || values[K_AUTHORITY];
  if (err == RPL_OK && principal) {
    const char *file = values[K_SECRET_FILE] ? values[K_SECRET_FILE] : values[K_CERT_FILE];
    if (values[K_KEY] || values[K_SAS]) {
      err = rpl_fail(RPL_E_BLOB_CONNSTR, "a service principal (TenantId, ClientId) cannot be combined with AccountKey or SharedAccessSignature");
    } else if (!values[K_TENANT] || !valid_entra_id(values[K_TENANT], true)) {
      err = rpl_fail(RPL_E_BLOB_CONNSTR, "TenantId must be the directory (tenant) id: a GUID or the tenant's domain name");
    } else if (!values[K_CLIENT] || !valid_entra_id(values[K_CLIENT], false)) {
      err = rpl_fail(RPL_E_BLOB_CONNSTR, "ClientId must be the application (client) id, a GUID");
    } else if (!file || (values[K_SECRET_FILE] && values[K_CERT_FILE])) {
      err = rpl_fail(RPL_E_BLOB_CONNSTR, "a service principal needs one of ClientSecretFile or ClientCertificateFile");
    } else if (file[0] != '/' || strlen(file) >= sizeof out->credential_file) {
      err = rpl_fail(RPL_E_BLOB_CONNSTR, "%s must be an absolute path", values[K_SECRET_FILE] ? "ClientSecretFile" : "ClientCertificateFile");
    } else if (!valid_authority(values[K_AUTHORITY] ? values[K_AUTHORITY] : BLOB_DEFAULT_AUTHORITY, out->authority,
                                sizeof out->authority)) {
      err = rpl_fail(RPL_E_BLOB_CONNSTR, "AuthorityHost must be https://HOST[:PORT] (the sign-in host of the cloud, such as %s)",
                     BLOB_DEFAULT_AUTHORITY);
    } else {
      snprintf(out->tenant, sizeof out->tenant, "%s", values[K_TENANT]);
      snprintf(out->client_id, sizeof out->client_id, "%s", values[K_CLIENT]);
      snprintf(out->credential_file, sizeof out->credential_file, "%s", file);
      out->auth = values[K_SECRET_FILE] ? BLOB_AUTH_CLIENT_SECRET : BLOB_AUTH_CLIENT_CERT;
    }
  } else if (err == RPL_OK) {
    if (values[K_KEY] && values[K_SAS]) {
      err = rpl_fail(RPL_E_BLOB_CONNSTR, "give AccountKey or SharedAccessSignature, not both");
    } else if (values[K_KEY]) {
      if (!decode_key(values[K_KEY], out->key, sizeof out->key, &out->key_len)) {
        err = rpl_fail(RPL_E_BLOB_CONNSTR, "AccountKey is not a base64 key (copy it whole from the portal: Access keys)");
      } else {
        out->auth = BLOB_AUTH_SHARED_KEY;
      }
    } else if (values[K_SAS]) {
      const char *sas = values[K_SAS][0] == '?' ? values[K_SAS] + 1 : values[K_SAS];
      err = blob_sas_validate(sas);
      if (err == RPL_OK) {
        snprintf(out->sas, sizeof out->sas, "%s", sas);
        out->auth = BLOB_AUTH_SAS;
      }
    } else {
      out->auth = BLOB_AUTH_BEARER;
    }
  }
  OPENSSL_cleanse(copy, tlen);
  free(copy);
  if (err != RPL_OK)
    OPENSSL_cleanse(out, sizeof *out);
  return err;
}

const char *blob_auth_name(enum blob_auth auth)
{
  switch (auth) {
  case BLOB_AUTH_SHARED_KEY: return "account key";
  case BLOB_AUTH_SAS: return "SAS token";
  case BLOB_AUTH_BEARER: return "managed identity";
  case BLOB_AUTH_CLIENT_SECRET: return "service principal (client secret)";
  case BLOB_AUTH_CLIENT_CERT: return "service principal (certificate)";
  }
  return "?";
}

rpl_err blob_connstr_from_env(struct blob_account *out)
{
  const char *env = getenv("AZURE_STORAGE_CONNECTION_STRING");
  if (!env || !*env) {
    return rpl_fail(RPL_E_NOT_FOUND, "AZURE_STORAGE_CONNECTION_STRING is not set");
  }
  return blob_connstr_parse(env, out);
}
