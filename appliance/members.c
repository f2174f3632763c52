/* members.c - the appliance group's records in the shared storage: the group (its authority, the
 * key sealed with the operator's secret), its agents and its revocations (members.h). */
#include "members.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <uuid/uuid.h>

#include "blob.h"
#include "file_io.h"
#include "rpl_log.h"
#include "state_files.h"
#include "store.h"
#include "uploader.h"

#define GROUP_RECORD      MEMBERS_PREFIX "group.conf"
#define REVOKED_RECORD    MEMBERS_PREFIX "revoked.conf"
#define RECORD_VERSION    1
/* scrypt at N = 2^15, r = 8: 32 MiB and about 0.1 s per derivation, once per init; what OWASP
 * recommends at least, and the secret is a random file, not a password. */
#define SCRYPT_N          32768u
#define SCRYPT_R          8u
#define SCRYPT_P          1u
#define SCRYPT_MAXMEM     (64u << 20)
#define SALT_SIZE         16
#define NONCE_SIZE        12
#define TAG_SIZE          16
#define REVOKED_MAX       4096 /* agents one group can have revoked: the record stays under MEMBERS_RECORD_MAX */
#define PUT_TRIES         8    /* read, change, write if unchanged: tries when another member wrote between */

struct keys {
  uint8_t seal[32]; /* AES-256-GCM: the authority's key */
  uint8_t mac[32];  /* HMAC-SHA256 of every record */
};

/* ---- the storage: one client per call ---------------------------------------------------- */

static rpl_err open_client(const struct appliance_settings *s, struct blob_client **out)
{
  if (!store_backend(s)->leased)
    return RPL_E_MEMBERS_STORAGE;
  struct blob_config cfg;
  rpl_err e = uploader_config(s, &cfg);
  return e ? e : blob_client_open(&cfg, out);
}

/* The record name into buf (NUL-terminated, at most MEMBERS_RECORD_MAX bytes) with its ETag;
 * RPL_E_NOT_FOUND when absent. */
static rpl_err record_get(struct blob_client *c, const struct appliance_settings *s, const char *name, char **buf,
                          char etag[80])
{
  struct blob_reply r;
  rpl_err e = blob_get_properties(c, s->container, name, NULL, &r);
  if (e == RPL_E_BLOB_NOT_FOUND)
    return RPL_E_NOT_FOUND;
  if (e)
    return rpl_fail(e, "cannot read %s: %s %s", name, r.error_code, r.message);
  if (r.content_length <= 0 || r.content_length > (int64_t)MEMBERS_RECORD_MAX)
    return rpl_fail(RPL_E_MEMBERS_RECORD, "%s: %" PRId64 " bytes is no record", name, r.content_length);
  size_t len = (size_t)r.content_length;
  char *b = malloc(len + 1);
  if (!b)
    return RPL_E_NOMEM;
  snprintf(etag, 80, "%s", r.etag);
  if ((e = blob_read(c, s->container, name, NULL, 0, b, len, &r))) {
    free(b);
    return e == RPL_E_BLOB_NOT_FOUND ? RPL_E_NOT_FOUND : rpl_fail(e, "cannot read %s: %s %s", name, r.error_code, r.message);
  }
  b[len] = '\0';
  if (strlen(b) != len) {
    free(b);
    return rpl_fail(RPL_E_MEMBERS_RECORD, "%s: not text", name);
  }
  *buf = b;
  return RPL_OK;
}

/* ---- records: key=value lines, the last one "mac=" over every byte before it ----------------- */

static void hex(const uint8_t *b, size_t n, char *out)
{
  for (size_t i = 0; i < n; i++)
    sprintf(out + 2 * i, "%02x", b[i]);
}

static bool unhex(const char *t, uint8_t *out, size_t n)
{
  if (strlen(t) != 2 * n)
    return false;
  for (size_t i = 0; i < n; i++) {
    unsigned v;
    if (!isxdigit((unsigned char)t[2 * i]) || !isxdigit((unsigned char)t[2 * i + 1]) || sscanf(t + 2 * i, "%2x", &v) != 1)
      return false;
    out[i] = (uint8_t)v;
  }
  return true;
}

/* Appends the mac line to body (cap bytes in all). */
rpl_err members_record_seal(const uint8_t key[32], char *body, size_t cap)
{
  uint8_t mac[32];
  unsigned maclen = 0;
  size_t len = strlen(body);
  if (!HMAC(EVP_sha256(), key, 32, (const uint8_t *)body, len, mac, &maclen) || maclen != 32)
    return RPL_E_INTERNAL;
  if (len + 4 + 64 + 2 > cap)
    return RPL_E_INTERNAL;
  memcpy(body + len, "mac=", 4);
  hex(mac, 32, body + len + 4);
  memcpy(body + len + 68, "\n", 2);
  return RPL_OK;
}

/* Checks the record's mac line (its last) and cuts it off. */
static rpl_err open_record(const uint8_t key[32], char *text, const char *name)
{
  char *m = strstr(text, "mac=");
  while (m && m != text && m[-1] != '\n')
    m = strstr(m + 1, "mac=");
  if (!m)
    return rpl_fail(RPL_E_MEMBERS_RECORD, "%s: no mac line", name);
  uint8_t want[32], got[32];
  unsigned len = 0;
  char line[80];
  snprintf(line, sizeof line, "%.*s", (int)strcspn(m + 4, "\n"), m + 4);
  if (!unhex(line, want, sizeof want) || m[4 + 64] != '\n' || m[4 + 65] != '\0')
    return rpl_fail(RPL_E_MEMBERS_RECORD, "%s: the mac line is malformed or not the last", name);
  if (!HMAC(EVP_sha256(), key, 32, (const uint8_t *)text, (size_t)(m - text), got, &len) || len != 32)
    return RPL_E_INTERNAL;
  if (CRYPTO_memcmp(want, got, 32) != 0)
    return rpl_fail(RPL_E_MEMBERS_SECRET, "%s does not verify with this group's secret", name);
  *m = '\0';
  return RPL_OK;
}

/* The value of key in a record's lines (NUL-terminated into out), or false. */
static bool field(const char *text, const char *key, char *out, size_t cap)
{
  size_t kl = strlen(key);
  for (const char *p = text; *p; p += strcspn(p, "\n") + (p[strcspn(p, "\n")] ? 1 : 0)) {
    if (strncmp(p, key, kl) == 0 && p[kl] == '=') {
      size_t vl = strcspn(p + kl + 1, "\n");
      if (vl >= cap)
        return false;
      memcpy(out, p + kl + 1, vl);
      out[vl] = '\0';
      return true;
    }
  }
  return false;
}

/* ---- the secret and the keys -------------------------------------------------------------- */

static rpl_err read_secret(const char *path, uint8_t *buf, size_t *len)
{
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  struct stat st;
  if (fd < 0)
    return rpl_fail(RPL_E_MEMBERS_SECRET_FILE, "%s: %s", path, strerror(errno));
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || (st.st_mode & 077) || st.st_size < MEMBERS_SECRET_MIN ||
      st.st_size > MEMBERS_SECRET_MAX) {
    close(fd);
    return rpl_fail(RPL_E_MEMBERS_SECRET_FILE, "%s: %s", path,
                    !S_ISREG(st.st_mode) ? "not a regular file"
                    : (st.st_mode & 077) ? "readable or writable by others than its owner (chmod 600)"
                                         : "not 32 to 4096 bytes long");
  }
  ssize_t n = read(fd, buf, (size_t)st.st_size);
  close(fd);
  if (n != st.st_size)
    return rpl_fail(RPL_E_MEMBERS_SECRET_FILE, "%s: short read", path);
  *len = (size_t)n;
  return RPL_OK;
}

static rpl_err derive(const char *secret_file, const uint8_t salt[SALT_SIZE], uint64_t n, uint64_t r, uint64_t p,
                      struct keys *k)
{
  uint8_t secret[MEMBERS_SECRET_MAX];
  size_t len = 0;
  rpl_err e = read_secret(secret_file, secret, &len);
  uint8_t out[64];
  if (!e && !EVP_PBE_scrypt((const char *)secret, len, salt, SALT_SIZE, n, r, p, SCRYPT_MAXMEM, out, sizeof out))
    e = rpl_fail(RPL_E_MEMBERS_RECORD, "the group's key derivation (scrypt N=%" PRIu64 " r=%" PRIu64 " p=%" PRIu64
                 ") failed: parameters out of range", n, r, p);
  if (!e) {
    memcpy(k->seal, out, 32);
    memcpy(k->mac, out + 32, 32);
  }
  OPENSSL_cleanse(secret, sizeof secret);
  OPENSSL_cleanse(out, sizeof out);
  return e;
}

/* AES-256-GCM of the key PEM, authenticated with the group's id: base64(nonce | ciphertext | tag). */
static rpl_err seal_key(const struct keys *k, const char *group_id, const char *pem, char **out)
{
  size_t len = strlen(pem), raw_len = NONCE_SIZE + len + TAG_SIZE;
  uint8_t *raw = malloc(raw_len);
  char *b64 = malloc(4 * ((raw_len + 2) / 3) + 1);
  EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
  int n = 0, fin = 0;
  bool ok = raw && b64 && ctx && RAND_bytes(raw, NONCE_SIZE) == 1 &&
            EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, k->seal, raw) == 1 &&
            EVP_EncryptUpdate(ctx, NULL, &n, (const uint8_t *)group_id, (int)strlen(group_id)) == 1 &&
            EVP_EncryptUpdate(ctx, raw + NONCE_SIZE, &n, (const uint8_t *)pem, (int)len) == 1 &&
            EVP_EncryptFinal_ex(ctx, raw + NONCE_SIZE + n, &fin) == 1 &&
            EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG_SIZE, raw + NONCE_SIZE + len) == 1;
  EVP_CIPHER_CTX_free(ctx);
  if (ok)
    EVP_EncodeBlock((uint8_t *)b64, raw, (int)raw_len);
  if (raw)
    OPENSSL_cleanse(raw, raw_len);
  free(raw);
  if (!ok) {
    free(b64);
    return RPL_E_INTERNAL;
  }
  *out = b64;
  return RPL_OK;
}

static rpl_err unseal_key(const struct keys *k, const char *group_id, const char *b64, char **out)
{
  size_t blen = strlen(b64);
  if (blen % 4 || blen < 4)
    return rpl_fail(RPL_E_MEMBERS_RECORD, "the group's sealed key is not base64");
  uint8_t *raw = malloc(blen / 4 * 3);
  if (!raw)
    return RPL_E_NOMEM;
  int raw_len = EVP_DecodeBlock(raw, (const uint8_t *)b64, (int)blen);
  raw_len -= (b64[blen - 1] == '=') + (b64[blen - 2] == '=');
  if (raw_len < NONCE_SIZE + TAG_SIZE + 1) {
    free(raw);
    return rpl_fail(RPL_E_MEMBERS_RECORD, "the group's sealed key is too short");
  }
  size_t len = (size_t)raw_len - NONCE_SIZE - TAG_SIZE;
  char *pem = malloc(len + 1);
  EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
  int n = 0, fin = 0;
  bool ok = pem && ctx && EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, k->seal, raw) == 1 &&
            EVP_DecryptUpdate(ctx, NULL, &n, (const uint8_t *)group_id, (int)strlen(group_id)) == 1 &&
            EVP_DecryptUpdate(ctx, (uint8_t *)pem, &n, raw + NONCE_SIZE, (int)len) == 1 &&
            EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_SIZE, raw + NONCE_SIZE + len) == 1 &&
            EVP_DecryptFinal_ex(ctx, (uint8_t *)pem + n, &fin) == 1;
  EVP_CIPHER_CTX_free(ctx);
  free(raw);
  if (!ok) {
    if (pem)
      OPENSSL_cleanse(pem, len);
    free(pem);
    return pem ? rpl_fail(RPL_E_MEMBERS_SECRET, "the group's authority key does not open with this secret") : RPL_E_NOMEM;
  }
  pem[len] = '\0';
  *out = pem;
  return RPL_OK;
}

/* ---- this member's record of its group: STATE/group.conf -------------------------------------- */

static rpl_err save_state(const char *state_dir, const char *group_id, const struct keys *k)
{
  char path[4200], text[256], mac[65];
  hex(k->mac, 32, mac);
  snprintf(path, sizeof path, "%s/%s", state_dir, STATE_GROUP);
  int n = snprintf(text, sizeof text, "group=%s\nmac_key=%s\n", group_id, mac);
  rpl_err e = file_write_atomic(path, text, (size_t)n, 0600);
  OPENSSL_cleanse(text, sizeof text);
  OPENSSL_cleanse(mac, sizeof mac);
  return e;
}

rpl_err members_load(const char *state_dir, struct members *m)
{
  memset(m, 0, sizeof *m);
  char path[4200], *text = NULL, key[80];
  snprintf(path, sizeof path, "%s/%s", state_dir, STATE_GROUP);
  rpl_err e = file_read_all(path, 4096, &text);
  if (e == RPL_E_NOT_FOUND)
    return RPL_OK;
  if (e)
    return e;
  uuid_t id;
  if (!field(text, "group", m->group_id, sizeof m->group_id) || uuid_parse(m->group_id, id) ||
      !field(text, "mac_key", key, sizeof key) || !unhex(key, m->mac_key, sizeof m->mac_key))
    e = rpl_fail(RPL_E_CONFIG, "%s is damaged: join the group again (init --join --group-secret-file FILE)", path);
  else
    m->in_group = true;
  OPENSSL_cleanse(text, strlen(text));
  OPENSSL_cleanse(key, sizeof key);
  free(text);
  return e;
}

/* ---- init: create, join -------------------------------------------------------------------- */

static char *b64_text(const char *s)
{
  size_t n = strlen(s);
  char *o = malloc(4 * ((n + 2) / 3) + 1);
  if (o)
    EVP_EncodeBlock((uint8_t *)o, (const uint8_t *)s, (int)n);
  return o;
}

static char *text_b64(const char *b64)
{
  size_t n = strlen(b64);
  if (n % 4 || n < 4)
    return NULL;
  char *o = malloc(n / 4 * 3 + 1);
  if (!o)
    return NULL;
  int len = EVP_DecodeBlock((uint8_t *)o, (const uint8_t *)b64, (int)n);
  if (len < 0) {
    free(o);
    return NULL;
  }
  len -= (b64[n - 1] == '=') + (b64[n - 2] == '=');
  o[len] = '\0';
  if (strlen(o) != (size_t)len) {
    free(o);
    return NULL;
  }
  return o;
}

rpl_err members_create(const char *state_dir, const struct appliance_settings *s, const char *secret_file,
                       const char *ca_cert_pem, const char *ca_key_pem, char group_id[37])
{
  struct keys k;
  uint8_t salt[SALT_SIZE];
  uuid_t id;
  uuid_generate(id);
  uuid_unparse_lower(id, group_id);
  if (RAND_bytes(salt, sizeof salt) != 1)
    return RPL_E_INTERNAL;
  rpl_err e = derive(secret_file, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, &k);
  if (e)
    return e;
  char *sealed = NULL, *cert = b64_text(ca_cert_pem), *body = NULL;
  struct blob_client *c = NULL;
  char salthex[2 * SALT_SIZE + 1];
  hex(salt, sizeof salt, salthex);
  if (!cert)
    e = RPL_E_NOMEM;
  if (!e)
    e = seal_key(&k, group_id, ca_key_pem, &sealed);
  size_t cap = strlen(cert ? cert : "") + strlen(sealed ? sealed : "") + 512;
  if (!e && !(body = malloc(cap)))
    e = RPL_E_NOMEM;
  if (!e) {
    snprintf(body, cap,
             "version=%d\ngroup=%s\ncreated=%lld\nscrypt_n=%u\nscrypt_r=%u\nscrypt_p=%u\nsalt=%s\n"
             "authority_cert=%s\nauthority_key=%s\n",
             RECORD_VERSION, group_id, (long long)time(NULL), SCRYPT_N, SCRYPT_R, SCRYPT_P, salthex, cert, sealed);
    e = members_record_seal(k.mac, body, cap);
  }
  if (!e && strlen(body) > MEMBERS_RECORD_MAX)
    e = rpl_fail(RPL_E_INVALID_ARGUMENT, "the authority's certificate and key do not fit in a group record");
  if (!e)
    e = open_client(s, &c);
  if (!e) { /* the first member's init may come before any daemon made the container */
    struct blob_reply r;
    e = blob_container_create(c, s->container, &r);
    if (e == RPL_E_BLOB_EXISTS)
      e = RPL_OK;
    else if (e)
      e = rpl_fail(e, "cannot make container %s: %s %s", s->container, r.error_code, r.message);
  }
  if (!e) {
    struct blob_reply r;
    e = blob_put_block_blob(c, s->container, GROUP_RECORD, body, strlen(body), NULL, true, &r);
    if (e == RPL_E_BLOB_EXISTS)
      e = RPL_E_MEMBERS_EXIST;
    else if (e)
      e = rpl_fail(e, "cannot write the group's record %s in container %s: %s %s", GROUP_RECORD, s->container,
                   r.error_code, r.message);
  }
  if (!e)
    e = save_state(state_dir, group_id, &k);
  blob_client_close(c);
  free(cert);
  free(sealed);
  free(body);
  OPENSSL_cleanse(&k, sizeof k);
  return e;
}

rpl_err members_join(const char *state_dir, const struct appliance_settings *s, const char *secret_file,
                     char **ca_cert_pem, char **ca_key_pem, char group_id[37])
{
  *ca_cert_pem = *ca_key_pem = NULL;
  struct blob_client *c = NULL;
  char *text = NULL, etag[80];
  rpl_err e = open_client(s, &c);
  if (!e) {
    e = record_get(c, s, GROUP_RECORD, &text, etag);
    if (e == RPL_E_NOT_FOUND)
      e = RPL_E_MEMBERS_NONE;
  }
  blob_client_close(c);
  if (e)
    return e;
  char v[64], salthex[2 * SALT_SIZE + 1], n[24], r[24], p[24];
  uint8_t salt[SALT_SIZE];
  uuid_t id;
  char *cert64 = malloc(MEMBERS_RECORD_MAX), *key64 = malloc(MEMBERS_RECORD_MAX);
  struct keys k;
  if (!cert64 || !key64)
    e = RPL_E_NOMEM;
  else if (!field(text, "version", v, sizeof v) || strcmp(v, "1") != 0 || !field(text, "group", group_id, 37) ||
           uuid_parse(group_id, id) || !field(text, "salt", salthex, sizeof salthex) || !unhex(salthex, salt, SALT_SIZE) ||
           !field(text, "scrypt_n", n, sizeof n) || !field(text, "scrypt_r", r, sizeof r) ||
           !field(text, "scrypt_p", p, sizeof p) || !field(text, "authority_cert", cert64, MEMBERS_RECORD_MAX) ||
           !field(text, "authority_key", key64, MEMBERS_RECORD_MAX))
    e = rpl_fail(RPL_E_MEMBERS_RECORD, "%s: a field is missing or malformed, or its version is not 1", GROUP_RECORD);
  else if (strtoull(n, NULL, 10) > (1u << 20) || strtoull(r, NULL, 10) > 32 || strtoull(p, NULL, 10) > 16)
    e = rpl_fail(RPL_E_MEMBERS_RECORD, "%s: the key derivation's parameters are out of range", GROUP_RECORD);
  if (!e)
    e = derive(secret_file, salt, strtoull(n, NULL, 10), strtoull(r, NULL, 10), strtoull(p, NULL, 10), &k);
  if (!e && !(e = open_record(k.mac, text, GROUP_RECORD)) && !(e = unseal_key(&k, group_id, key64, ca_key_pem))) {
    if (!(*ca_cert_pem = text_b64(cert64)))
      e = rpl_fail(RPL_E_MEMBERS_RECORD, "%s: the authority's certificate is not base64 text", GROUP_RECORD);
  }
  if (!e)
    e = save_state(state_dir, group_id, &k);
  if (e && *ca_key_pem) {
    OPENSSL_cleanse(*ca_key_pem, strlen(*ca_key_pem));
    free(*ca_key_pem);
    *ca_key_pem = NULL;
  }
  if (e) {
    free(*ca_cert_pem);
    *ca_cert_pem = NULL;
  }
  OPENSSL_cleanse(&k, sizeof k);
  free(cert64);
  free(key64);
  free(text);
  return e;
}

/* ---- agents -------------------------------------------------------------------------------- */

static void agent_record_name(const uint8_t id[PROTO_ID_SIZE], char *out, size_t cap)
{
  char t[37];
  uuid_unparse_lower(id, t);
  snprintf(out, cap, MEMBERS_PREFIX "agents/%s.conf", t);
}

struct agent_record {
  struct catalog_agent a;
  char pending[CATALOG_MAX_FINGERPRINT + 1];
};

rpl_err members_record_agent(const uint8_t key[32], char *text, const char *name, const uint8_t id[PROTO_ID_SIZE],
                             struct catalog_agent *out, char pending[CATALOG_MAX_FINGERPRINT + 1])
{
  rpl_err e = open_record(key, text, name);
  if (e)
    return e;
  char v[64], idt[40], reg[24], rev[4];
  uuid_t rid;
  memset(out, 0, sizeof *out);
  pending[0] = '\0';
  if (!field(text, "version", v, sizeof v) || strcmp(v, "1") != 0 || !field(text, "agent", idt, sizeof idt) ||
      uuid_parse(idt, rid) || memcmp(rid, id, PROTO_ID_SIZE) != 0 ||
      !field(text, "hostname", out->hostname, sizeof out->hostname) ||
      !field(text, "fingerprint", out->cert_fingerprint, sizeof out->cert_fingerprint) ||
      !out->cert_fingerprint[0] || !field(text, "pending", pending, CATALOG_MAX_FINGERPRINT + 1) ||
      !field(text, "registered", reg, sizeof reg) || !field(text, "revoked", rev, sizeof rev) ||
      (strcmp(rev, "0") && strcmp(rev, "1")))
    return rpl_fail(RPL_E_MEMBERS_RECORD, "%s: a field is missing or malformed, or it names another agent", name);
  memcpy(out->id, id, PROTO_ID_SIZE);
  out->registered_time = strtoll(reg, NULL, 10);
  out->revoked = rev[0] == '1';
  return RPL_OK;
}

static rpl_err parse_agent(const struct members *m, char *text, const char *name, const uint8_t id[PROTO_ID_SIZE],
                           struct agent_record *out)
{
  return members_record_agent(m->mac_key, text, name, id, &out->a, out->pending);
}

/* Reads the group's revocations (ids, one per line) with its ETag; an absent record is empty. */
static rpl_err revoked_get(const struct members *m, struct blob_client *c, const struct appliance_settings *s,
                           char **list, char etag[80])
{
  char *text = NULL;
  rpl_err e = record_get(c, s, REVOKED_RECORD, &text, etag);
  if (e == RPL_E_NOT_FOUND) {
    etag[0] = '\0';
    *list = strdup("");
    return *list ? RPL_OK : RPL_E_NOMEM;
  }
  if (e || (e = open_record(m->mac_key, text, REVOKED_RECORD))) {
    free(text);
    return e;
  }
  *list = text;
  return RPL_OK;
}

static bool listed(const char *list, const char *idt)
{
  char line[48];
  snprintf(line, sizeof line, "agent=%s", idt);
  for (const char *p = strstr(list, line); p; p = strstr(p + 1, line))
    if ((p == list || p[-1] == '\n') && (p[strlen(line)] == '\n' || !p[strlen(line)]))
      return true;
  return false;
}

/* Adds the agent to the group's revocations (read, add, write if unchanged). */
static rpl_err revoke_in_group(const struct members *m, struct blob_client *c, const struct appliance_settings *s,
                               const uint8_t id[PROTO_ID_SIZE])
{
  char idt[37];
  uuid_unparse_lower(id, idt);
  for (unsigned t = 0; t < PUT_TRIES; t++) {
    char *list = NULL, etag[80];
    rpl_err e = revoked_get(m, c, s, &list, etag);
    if (e)
      return e;
    if (listed(list, idt)) {
      free(list);
      return RPL_OK;
    }
    size_t n = 0;
    for (const char *p = list; (p = strstr(p, "agent=")); p++)
      n++;
    if (n >= REVOKED_MAX) {
      free(list);
      return rpl_fail(RPL_E_LIMIT, "the group holds %d revoked agents already", REVOKED_MAX);
    }
    size_t cap = strlen(list) + 128;
    char *body = malloc(cap);
    if (!body) {
      free(list);
      return RPL_E_NOMEM;
    }
    snprintf(body, cap, "%s%sagent=%s\n", list[0] ? "" : "version=1\n", list, idt);
    free(list);
    struct blob_reply r;
    if (!(e = members_record_seal(m->mac_key, body, cap)))
      e = blob_put_block_blob(c, s->container, REVOKED_RECORD, body, strlen(body), etag[0] ? etag : NULL, !etag[0], &r);
    free(body);
    if (e != RPL_E_BLOB_CONDITION && e != RPL_E_BLOB_EXISTS)
      return e ? rpl_fail(e, "cannot write %s: %s %s", REVOKED_RECORD, r.error_code, r.message) : RPL_OK;
  }
  return rpl_fail(RPL_E_BLOB_CONDITION, "%s: other members kept writing it (%d tries): revoke again", REVOKED_RECORD,
                  PUT_TRIES);
}

rpl_err members_publish_agent(const struct members *m, const struct appliance_settings *s, struct catalog *cat,
                              const uint8_t id[PROTO_ID_SIZE])
{
  if (!m->in_group)
    return RPL_OK;
  struct catalog_agent a;
  char current[CATALOG_MAX_FINGERPRINT + 1], pending[CATALOG_MAX_FINGERPRINT + 1], name[128], idt[37];
  rpl_err e = catalog_agent_get(cat, id, &a);
  if (!e)
    e = catalog_agent_certs(cat, id, current, pending);
  if (e)
    return e;
  agent_record_name(id, name, sizeof name);
  uuid_unparse_lower(id, idt);
  struct blob_client *c = NULL;
  if ((e = open_client(s, &c)))
    return e;
  /* A revocation is final: a member that has not heard of it yet must not write it away. */
  char *old = NULL, etag[80] = "";
  struct agent_record prev;
  e = record_get(c, s, name, &old, etag);
  if (!e && parse_agent(m, old, name, id, &prev) == RPL_OK && prev.a.revoked)
    a.revoked = true;
  else if (e == RPL_E_NOT_FOUND)
    etag[0] = '\0';
  free(old);
  if (e && e != RPL_E_NOT_FOUND) {
    blob_client_close(c);
    return e;
  }
  e = RPL_OK;
  if (a.revoked)
    e = revoke_in_group(m, c, s, id);
  for (char *h = a.hostname; *h; h++) /* one line per field: a hostname is the agent's to choose */
    if ((unsigned char)*h < 0x20 || *h == 0x7f)
      *h = '?';
  char body[CATALOG_MAX_HOSTNAME + 2 * CATALOG_MAX_FINGERPRINT + 512];
  snprintf(body, sizeof body,
           "version=1\nagent=%s\nhostname=%s\nregistered=%lld\nfingerprint=%s\npending=%s\nrevoked=%d\n", idt,
           a.hostname, (long long)a.registered_time, current, pending, a.revoked ? 1 : 0);
  struct blob_reply r;
  if (!e && !(e = members_record_seal(m->mac_key, body, sizeof body)))
    e = blob_put_block_blob(c, s->container, name, body, strlen(body), NULL, false, &r);
  if (e && e != RPL_E_INTERNAL && e != RPL_E_BLOB_CONDITION)
    e = rpl_fail(e, "cannot write %s: %s", name, rpl_detail(e)[0] ? rpl_detail(e) : r.error_code);
  blob_client_close(c);
  return e;
}

rpl_err members_import_agent(const struct members *m, const struct appliance_settings *s, struct catalog *cat,
                             const uint8_t id[PROTO_ID_SIZE])
{
  if (!m->in_group)
    return RPL_E_NOT_FOUND;
  char name[128], *text = NULL, etag[80];
  agent_record_name(id, name, sizeof name);
  struct blob_client *c = NULL;
  rpl_err e = open_client(s, &c);
  if (!e)
    e = record_get(c, s, name, &text, etag);
  blob_client_close(c);
  struct agent_record rec;
  if (!e && !(e = parse_agent(m, text, name, id, &rec)))
    e = catalog_agent_import(cat, &rec.a, rec.pending);
  free(text);
  return e;
}

rpl_err members_sweep(const struct members *m, const struct appliance_settings *s, struct catalog *cat,
                      unsigned *revoked_now)
{
  *revoked_now = 0;
  if (!m->in_group)
    return RPL_OK;
  struct blob_client *c = NULL;
  char *list = NULL, etag[80];
  rpl_err e = open_client(s, &c);
  if (!e)
    e = revoked_get(m, c, s, &list, etag);
  blob_client_close(c);
  for (char *p = list; !e && p && (p = strstr(p, "agent=")); p += 6) {
    if (p != list && p[-1] != '\n')
      continue;
    char idt[37];
    uuid_t id;
    struct catalog_agent a;
    snprintf(idt, sizeof idt, "%.*s", (int)strcspn(p + 6, "\n"), p + 6);
    if (uuid_parse(idt, id) || catalog_agent_get(cat, id, &a) || a.revoked)
      continue;
    if (!(e = catalog_agent_revoke(cat, id))) {
      (*revoked_now)++;
      log_notice("agent %s: revoked by another member of the appliance group", idt);
    }
  }
  free(list);
  return e;
}

/* ---- members' addresses --------------------------------------------------------------------- */

rpl_err members_announce(const struct members *m, const struct appliance_settings *s, const char *member_id,
                         const char *address)
{
  if (!m->in_group)
    return RPL_OK;
  char name[160], body[512];
  snprintf(name, sizeof name, MEMBERS_PREFIX "members/%s.conf", member_id);
  snprintf(body, sizeof body, "version=1\nmember=%s\naddress=%s\nannounced=%lld\n", member_id, address,
           (long long)time(NULL));
  struct blob_client *c = NULL;
  struct blob_reply r;
  rpl_err e = members_record_seal(m->mac_key, body, sizeof body);
  if (!e)
    e = open_client(s, &c);
  if (!e && (e = blob_put_block_blob(c, s->container, name, body, strlen(body), NULL, false, &r)))
    e = rpl_fail(e, "cannot write %s: %s %s", name, r.error_code, r.message);
  blob_client_close(c);
  return e;
}

static int compare_addresses(const void *x, const void *y) { return strcmp(x, y); }

rpl_err members_addresses(const struct members *m, const struct appliance_settings *s, char out[MEMBERS_MAX][256],
                          size_t *n)
{
  *n = 0;
  if (!m->in_group)
    return RPL_OK;
  struct blob_client *c = NULL;
  struct blob_list list = {0};
  struct blob_reply r;
  rpl_err e = open_client(s, &c);
  if (!e && (e = blob_list_blobs(c, s->container, MEMBERS_PREFIX "members/", &list, &r)))
    e = rpl_fail(e, "cannot list the group's members: %s %s", r.error_code, r.message);
  for (size_t i = 0; !e && i < list.count && *n < MEMBERS_MAX; i++) {
    char *text = NULL, etag[80], address[256], when[24];
    if (record_get(c, s, list.items[i].name, &text, etag) != RPL_OK)
      continue; /* deleted meanwhile, or not a record: not a member */
    bool ok = open_record(m->mac_key, text, list.items[i].name) == RPL_OK &&
              field(text, "address", address, sizeof address) && address[0] && field(text, "announced", when, sizeof when) &&
              time(NULL) - strtoll(when, NULL, 10) <= MEMBERS_ADDRESS_TTL_S;
    for (char *p = address; ok && *p; p++)
      ok = *p > 0x20 && *p < 0x7f;
    if (ok)
      snprintf(out[(*n)++], 256, "%s", address);
    else
      log_warn("appliance group: member record %s left out (it does not verify, or is older than %d days)",
               list.items[i].name, MEMBERS_ADDRESS_TTL_S / 86400);
    free(text);
  }
  blob_list_free(&list);
  blob_client_close(c);
  qsort(out, *n, sizeof out[0], compare_addresses);
  return e;
}
