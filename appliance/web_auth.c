/* web_auth.c - the configuration manager's login secrets: the admin password and the one-time login
 * token, each kept only as a salted PBKDF2-SHA256 hash in a 0600 file of the state directory. */
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "identity.h"
#include "rpl_log.h"
#include "state_files.h"
#include "web.h"

#define PBKDF2_ITER  120000
#define SALT_SIZE    WEB_AUTH_SALT_SIZE
#define HASH_SIZE    WEB_AUTH_HASH_SIZE
#define AUTH_FILE_MAX 512

static void hex(const uint8_t *b, size_t n, char *out)
{
  for (size_t i = 0; i < n; i++)
    sprintf(out + 2 * i, "%02x", b[i]);
}

static bool unhex(const char *s, uint8_t *out, size_t n)
{
  /* Digits only: sscanf's %2x alone also takes "a+", " f" and "-1". */
  if (strlen(s) != 2 * n || strspn(s, "0123456789abcdefABCDEF") != 2 * n)
    return false;
  for (size_t i = 0; i < n; i++) {
    unsigned v;
    if (sscanf(s + 2 * i, "%2x", &v) != 1)
      return false;
    out[i] = (uint8_t)v;
  }
  return true;
}

static void auth_path(const char *state_dir, const char *name, char *out, size_t outsz)
{
  snprintf(out, outsz, "%s/%s", state_dir, name);
}

static rpl_err derive(const char *secret, const uint8_t salt[SALT_SIZE], unsigned iter, uint8_t out[HASH_SIZE])
{
  if (PKCS5_PBKDF2_HMAC(secret, (int)strlen(secret), salt, SALT_SIZE, (int)iter, EVP_sha256(), HASH_SIZE, out) != 1)
    return RPL_E_TLS;
  return RPL_OK;
}

static rpl_err store_hash(const char *state_dir, const char *name, const char *secret)
{
  uint8_t salt[SALT_SIZE], h[HASH_SIZE];
  if (RAND_bytes(salt, sizeof salt) != 1)
    return RPL_E_TLS;
  rpl_err err = derive(secret, salt, PBKDF2_ITER, h);
  if (err)
    return err;
  char line[AUTH_FILE_MAX], salthex[2 * SALT_SIZE + 1], hashhex[2 * HASH_SIZE + 1];
  hex(salt, SALT_SIZE, salthex);
  hex(h, HASH_SIZE, hashhex);
  int n = snprintf(line, sizeof line, "pbkdf2-sha256 %u %s %s\n", PBKDF2_ITER, salthex, hashhex);
  char path[4200];
  auth_path(state_dir, name, path, sizeof path);
  err = file_write_atomic(path, line, (size_t)n, 0600);
  OPENSSL_cleanse(h, sizeof h);
  return err;
}

rpl_err web_auth_parse(const char *buf, size_t len, struct web_auth_hash *out)
{
  char text[AUTH_FILE_MAX + 1], kind[32], salthex[2 * SALT_SIZE + 8], hashhex[2 * HASH_SIZE + 8];
  if (len > AUTH_FILE_MAX)
    return RPL_E_WEB_AUTH_FILE;
  memcpy(text, buf, len);
  text[len] = '\0';
  bool parsed = sscanf(text, "%31s %u %39s %71s", kind, &out->iter, salthex, hashhex) == 4 &&
                !strcmp(kind, "pbkdf2-sha256") && out->iter >= 1000 && out->iter <= 10000000 &&
                unhex(salthex, out->salt, SALT_SIZE) && unhex(hashhex, out->hash, HASH_SIZE);
  OPENSSL_cleanse(text, sizeof text);
  return parsed ? RPL_OK : RPL_E_WEB_AUTH_FILE;
}

/* *ok = secret matches the hash in STATE/name; RPL_E_NOT_FOUND when the file is absent. */
static rpl_err verify_hash(const char *state_dir, const char *name, const char *secret, bool *ok)
{
  *ok = false;
  char path[4200], *text = NULL;
  auth_path(state_dir, name, path, sizeof path);
  rpl_err err = file_read_all(path, AUTH_FILE_MAX, &text);
  if (err)
    return err;
  struct web_auth_hash want;
  uint8_t got[HASH_SIZE];
  err = web_auth_parse(text, strlen(text), &want);
  free(text);
  if (err)
    return err;
  if ((err = derive(secret, want.salt, want.iter, got)))
    return err;
  *ok = CRYPTO_memcmp(got, want.hash, HASH_SIZE) == 0;
  OPENSSL_cleanse(got, sizeof got);
  return RPL_OK;
}

static bool usable_password(const char *p)
{
  size_t n = strlen(p);
  if (n < WEB_PASSWORD_MIN || n > WEB_PASSWORD_MAX)
    return false;
  for (const unsigned char *c = (const unsigned char *)p; *c; c++)
    if (*c < 0x20 || *c == 0x7f)
      return false;
  return true;
}

rpl_err web_auth_set_password(const char *state_dir, const char *password)
{
  if (!usable_password(password))
    return RPL_E_WEB_PASSWORD;
  return store_hash(state_dir, STATE_WEB_ADMIN, password);
}

rpl_err web_auth_read_password_file(const char *path, char *out, size_t outsz)
{
  char *text = NULL;
  rpl_err err = file_read_all(path, WEB_PASSWORD_MAX + 2, &text);
  if (err == RPL_E_LIMIT)
    return RPL_E_WEB_PASSWORD;
  if (err)
    return err;
  text[strcspn(text, "\r\n")] = 0;
  err = usable_password(text) && strlen(text) < outsz ? RPL_OK : RPL_E_WEB_PASSWORD;
  if (!err)
    snprintf(out, outsz, "%s", text);
  OPENSSL_cleanse(text, strlen(text));
  free(text);
  return err;
}

static rpl_err random_token(char token[WEB_TOKEN_CHARS + 1])
{
  uint8_t raw[32];
  if (RAND_bytes(raw, sizeof raw) != 1)
    return RPL_E_TLS;
  unsigned char b64[48];
  int n = EVP_EncodeBlock(b64, raw, sizeof raw); /* 44 characters, the last '=' */
  OPENSSL_cleanse(raw, sizeof raw);
  if (n != 44)
    return RPL_E_TLS;
  for (int i = 0; i < WEB_TOKEN_CHARS; i++)
    token[i] = b64[i] == '+' ? '-' : b64[i] == '/' ? '_' : (char)b64[i];
  token[WEB_TOKEN_CHARS] = 0;
  OPENSSL_cleanse(b64, sizeof b64);
  return RPL_OK;
}

rpl_err web_auth_issue_token(const char *state_dir, char token[WEB_TOKEN_CHARS + 1])
{
  rpl_err err = random_token(token);
  return err ? err : store_hash(state_dir, STATE_WEB_LOGIN, token);
}

rpl_err web_auth_check_password(const char *state_dir, const char *password, bool *ok)
{
  if (strlen(password) > WEB_PASSWORD_MAX) {
    *ok = false;
    return RPL_OK;
  }
  rpl_err err = verify_hash(state_dir, STATE_WEB_ADMIN, password, ok);
  return err == RPL_E_NOT_FOUND ? RPL_OK : err;
}

rpl_err web_auth_use_token(const char *state_dir, const char *token, bool *ok)
{
  *ok = false;
  if (strlen(token) != WEB_TOKEN_CHARS)
    return RPL_OK;
  rpl_err err = verify_hash(state_dir, STATE_WEB_LOGIN, token, ok);
  if (err == RPL_E_NOT_FOUND)
    return RPL_OK;
  if (!err && *ok) {
    char path[4200];
    auth_path(state_dir, STATE_WEB_LOGIN, path, sizeof path);
    if (unlink(path) != 0) { /* a token that cannot be consumed is not accepted */
      log_err("cannot remove the used login token %s: %s", path, strerror(errno));
      *ok = false;
      return RPL_E_IO;
    }
  }
  return err;
}

bool web_auth_has_password(const char *state_dir)
{
  char path[4200];
  auth_path(state_dir, STATE_WEB_ADMIN, path, sizeof path);
  return access(path, F_OK) == 0;
}

/* The metrics token is kept in clear (unlike the login secrets): the operator copies it into the
 * scraper's credentials file, and it opens nothing but the read-only /metrics. */
rpl_err web_auth_metrics_token_ensure(const char *state_dir, bool *created)
{
  *created = false;
  char path[4200];
  auth_path(state_dir, STATE_METRICS_TOKEN, path, sizeof path);
  if (access(path, F_OK) == 0)
    return RPL_OK;
  char token[WEB_TOKEN_CHARS + 2];
  rpl_err err = random_token(token);
  if (err)
    return err;
  token[WEB_TOKEN_CHARS] = '\n';
  err = file_write_atomic(path, token, WEB_TOKEN_CHARS + 1, 0600);
  OPENSSL_cleanse(token, sizeof token);
  *created = !err;
  return err;
}

static void sha256(const char *s, size_t n, uint8_t out[HASH_SIZE])
{
  unsigned len = HASH_SIZE;
  if (EVP_Digest(s, n, out, &len, EVP_sha256(), NULL) != 1)
    memset(out, 0, HASH_SIZE);
}

rpl_err web_auth_metrics_check(const char *state_dir, const char *presented, bool *ok)
{
  *ok = false;
  char path[4200], *text = NULL;
  auth_path(state_dir, STATE_METRICS_TOKEN, path, sizeof path);
  rpl_err err = file_read_all(path, WEB_PASSWORD_MAX + 2, &text);
  if (err == RPL_E_NOT_FOUND || err == RPL_E_LIMIT)
    return RPL_OK;
  if (err)
    return err;
  size_t n = strcspn(text, "\r\n");
  text[n] = 0;
  bool usable = n >= WEB_METRICS_TOKEN_MIN;
  for (size_t i = 0; i < n; i++)
    usable = usable && text[i] > 0x20 && text[i] < 0x7f;
  /* Compared as digests: the time taken says nothing of the token's length or content. */
  uint8_t want[HASH_SIZE], got[HASH_SIZE];
  sha256(text, n, want);
  sha256(presented, strnlen(presented, WEB_PASSWORD_MAX + 1), got);
  *ok = usable && CRYPTO_memcmp(want, got, HASH_SIZE) == 0;
  OPENSSL_cleanse(text, n);
  OPENSSL_cleanse(want, sizeof want);
  free(text);
  return RPL_OK;
}
