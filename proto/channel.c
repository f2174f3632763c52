/* channel.c - TLS 1.3 mutual authentication for agent<->appliance: the appliance's CA, CSR signing,
 * fingerprint pinning and the registration key (all cryptography from OpenSSL). */
#include "channel.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "proto.h"
#include "rpl_log.h"

#define PEM_CAP (64u << 10)

static rpl_err tls_fail(const char *what)
{
  unsigned long e = ERR_get_error();
  char buf[256] = "no detail";
  if (e)
    ERR_error_string_n(e, buf, sizeof buf);
  ERR_clear_error();
  log_err("%s: %s", what, buf);
  return rpl_fail(RPL_E_TLS, "%s: %s", what, buf);
}

static char *bio_to_string(BIO *bio)
{
  char *data;
  long n = BIO_get_mem_data(bio, &data);
  if (n <= 0 || (unsigned long)n >= PEM_CAP)
    return NULL;
  char *s = malloc((size_t)n + 1);
  if (s) {
    memcpy(s, data, (size_t)n);
    s[n] = '\0';
  }
  return s;
}

static X509 *cert_from_pem(const char *pem)
{
  BIO *b = BIO_new_mem_buf(pem, -1);
  X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
  BIO_free(b);
  return x;
}

static EVP_PKEY *key_from_pem(const char *pem)
{
  BIO *b = BIO_new_mem_buf(pem, -1);
  EVP_PKEY *k = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
  BIO_free(b);
  return k;
}

static rpl_err key_to_pem(EVP_PKEY *key, char **out)
{
  BIO *b = BIO_new(BIO_s_mem());
  if (!b || !PEM_write_bio_PrivateKey(b, key, NULL, NULL, 0, NULL, NULL)) {
    BIO_free(b);
    return tls_fail("writing a private key");
  }
  *out = bio_to_string(b);
  BIO_free(b);
  return *out ? RPL_OK : RPL_E_NOMEM;
}

static rpl_err cert_to_pem(X509 *x, char **out)
{
  BIO *b = BIO_new(BIO_s_mem());
  if (!b || !PEM_write_bio_X509(b, x)) {
    BIO_free(b);
    return tls_fail("writing a certificate");
  }
  *out = bio_to_string(b);
  BIO_free(b);
  return *out ? RPL_OK : RPL_E_NOMEM;
}

static int add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
  X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
  if (!ext)
    return 0;
  int ok = X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
  return ok;
}

/* A certificate skeleton: random serial, validity, subject CN, public key. */
static X509 *cert_new(const char *cn, EVP_PKEY *pub, long seconds)
{
  X509 *x = X509_new();
  if (!x)
    return NULL;
  unsigned char serial[16];
  BIGNUM *bn = NULL;
  int ok = X509_set_version(x, 2) && RAND_bytes(serial, sizeof serial) == 1;
  if (ok) {
    serial[0] &= 0x7f; /* positive */
    bn = BN_bin2bn(serial, sizeof serial, NULL);
    ok = bn && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x));
  }
  BN_free(bn);
  /* Backdated for clocks behind the signer's: an hour, or a tenth of a short life. */
  long backdate = seconds / 10 < 3600 ? seconds / 10 : 3600;
  ok = ok && X509_gmtime_adj(X509_getm_notBefore(x), -backdate) &&
       X509_gmtime_adj(X509_getm_notAfter(x), seconds) && X509_set_pubkey(x, pub) &&
       X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0);
  if (!ok) {
    X509_free(x);
    return NULL;
  }
  return x;
}

rpl_err chan_make_authority(const char *common_name, char **cert_pem, char **key_pem)
{
  *cert_pem = *key_pem = NULL;
  EVP_PKEY *key = EVP_EC_gen("P-256");
  if (!key)
    return tls_fail("generating the appliance key");
  X509 *x = cert_new(common_name, key, 3650L * 86400);
  rpl_err err = RPL_OK;
  if (!x || !X509_set_issuer_name(x, X509_get_subject_name(x)) ||
      !add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") ||
      !add_ext(x, x, NID_key_usage, "critical,keyCertSign,digitalSignature") ||
      !add_ext(x, x, NID_ext_key_usage, "serverAuth,clientAuth") ||
      !add_ext(x, x, NID_subject_key_identifier, "hash") || !X509_sign(x, key, EVP_sha256()))
    err = tls_fail("making the appliance certificate");
  if (!err)
    err = cert_to_pem(x, cert_pem);
  if (!err)
    err = key_to_pem(key, key_pem);
  if (err) {
    free(*cert_pem);
    *cert_pem = NULL;
  }
  X509_free(x);
  EVP_PKEY_free(key);
  return err;
}

rpl_err chan_make_csr(const char *common_name, char **csr_pem, char **key_pem)
{
  *csr_pem = *key_pem = NULL;
  EVP_PKEY *key = EVP_EC_gen("P-256");
  if (!key)
    return tls_fail("generating the agent key");
  X509_REQ *req = X509_REQ_new();
  BIO *b = BIO_new(BIO_s_mem());
  rpl_err err = RPL_OK;
  if (!req || !b || !X509_REQ_set_pubkey(req, key) ||
      !X509_NAME_add_entry_by_txt(X509_REQ_get_subject_name(req), "CN", MBSTRING_UTF8,
                                  (const unsigned char *)common_name, -1, -1, 0) ||
      !X509_REQ_sign(req, key, EVP_sha256()) || !PEM_write_bio_X509_REQ(b, req))
    err = tls_fail("making the certificate request");
  if (!err && !(*csr_pem = bio_to_string(b)))
    err = RPL_E_NOMEM;
  if (!err)
    err = key_to_pem(key, key_pem);
  if (err) {
    free(*csr_pem);
    *csr_pem = NULL;
  }
  BIO_free(b);
  X509_REQ_free(req);
  EVP_PKEY_free(key);
  return err;
}

rpl_err chan_sign_csr(const char *ca_cert_pem, const char *ca_key_pem, const char *csr_pem, const char *cn,
                      enum chan_cert_purpose purpose, long seconds, char **cert_pem)
{
  *cert_pem = NULL;
  X509 *ca = cert_from_pem(ca_cert_pem);
  EVP_PKEY *ca_key = key_from_pem(ca_key_pem);
  BIO *b = BIO_new_mem_buf(csr_pem, -1);
  X509_REQ *req = b ? PEM_read_bio_X509_REQ(b, NULL, NULL, NULL) : NULL;
  EVP_PKEY *pub = req ? X509_REQ_get_pubkey(req) : NULL;
  X509 *x = NULL;
  rpl_err err = RPL_OK;
  if (!ca || !ca_key) {
    err = RPL_E_TLS_CERT;
    log_err("the appliance's certificate or key does not parse");
  } else if (!req || !pub || X509_REQ_verify(req, pub) != 1) {
    ERR_clear_error();
    err = RPL_E_TLS_CERT; /* a request must prove possession of its key */
    log_err("the certificate request is malformed or not signed by its key");
  } else if (seconds <= 0 || seconds > CHAN_MAX_CERT_SECONDS) {
    err = rpl_fail(RPL_E_INVALID_ARGUMENT, "a certificate lifetime of %ld s (1 s to %ld s)", seconds,
                   (long)CHAN_MAX_CERT_SECONDS);
  } else {
    x = cert_new(cn, pub, seconds);
    if (!x || !X509_set_issuer_name(x, X509_get_subject_name(ca)) ||
        !add_ext(x, ca, NID_basic_constraints, "critical,CA:FALSE") ||
        !add_ext(x, ca, NID_key_usage, "critical,digitalSignature") ||
        !add_ext(x, ca, NID_ext_key_usage, purpose == CHAN_CERT_SERVER ? "serverAuth" : "clientAuth") ||
        !add_ext(x, ca, NID_authority_key_identifier, "keyid:always") || !X509_sign(x, ca_key, EVP_sha256()))
      err = tls_fail("signing a certificate");
    else
      err = cert_to_pem(x, cert_pem);
  }
  X509_free(x);
  EVP_PKEY_free(pub);
  X509_REQ_free(req);
  BIO_free(b);
  EVP_PKEY_free(ca_key);
  X509_free(ca);
  return err;
}

rpl_err chan_cert_lifetime(const char *cert_pem, int64_t *not_before, int64_t *not_after)
{
  X509 *x = cert_from_pem(cert_pem);
  struct tm b, a;
  int ok = x && ASN1_TIME_to_tm(X509_get0_notBefore(x), &b) == 1 && ASN1_TIME_to_tm(X509_get0_notAfter(x), &a) == 1;
  X509_free(x);
  if (!ok) {
    ERR_clear_error();
    return RPL_E_TLS_CERT;
  }
  *not_before = (int64_t)timegm(&b);
  *not_after = (int64_t)timegm(&a);
  return RPL_OK;
}

static int x509_fingerprint(X509 *x, uint8_t out[CHAN_FINGERPRINT_SIZE])
{
  unsigned int n = 0;
  return X509_digest(x, EVP_sha256(), out, &n) == 1 && n == CHAN_FINGERPRINT_SIZE;
}

rpl_err chan_fingerprint(const char *cert_pem, uint8_t out[CHAN_FINGERPRINT_SIZE])
{
  X509 *x = cert_from_pem(cert_pem);
  if (!x) {
    ERR_clear_error();
    return RPL_E_TLS_CERT;
  }
  int ok = x509_fingerprint(x, out);
  X509_free(x);
  return ok ? RPL_OK : tls_fail("computing a certificate fingerprint");
}

void chan_fingerprint_text(const uint8_t fp[CHAN_FINGERPRINT_SIZE], char *out)
{
  for (int i = 0; i < CHAN_FINGERPRINT_SIZE; i++)
    sprintf(out + 3 * i, "%02X%s", fp[i], i + 1 < CHAN_FINGERPRINT_SIZE ? ":" : "");
}

/* ---- registration key --------------------------------------------------------------------- */

#define REGKEY_RAW (CHAN_SECRET_SIZE + CHAN_FINGERPRINT_SIZE + 4)

void chan_regkey_encode(const uint8_t secret[CHAN_SECRET_SIZE], const uint8_t fp[CHAN_FINGERPRINT_SIZE], char *out)
{
  uint8_t raw[REGKEY_RAW];
  memcpy(raw, secret, CHAN_SECRET_SIZE);
  memcpy(raw + CHAN_SECRET_SIZE, fp, CHAN_FINGERPRINT_SIZE);
  uint32_t crc = proto_crc32c(0, raw, CHAN_SECRET_SIZE + CHAN_FINGERPRINT_SIZE);
  for (int i = 0; i < 4; i++)
    raw[CHAN_SECRET_SIZE + CHAN_FINGERPRINT_SIZE + i] = (uint8_t)(crc >> (8 * i));
  unsigned char b64[4 * ((REGKEY_RAW + 2) / 3) + 1];
  int n = EVP_EncodeBlock(b64, raw, REGKEY_RAW);
  /* base64url without padding: the key survives shells, URLs and copy-paste unquoted. */
  size_t o = strlen(CHAN_REGKEY_PREFIX);
  memcpy(out, CHAN_REGKEY_PREFIX, o);
  for (int i = 0; i < n && b64[i] != '='; i++)
    out[o++] = b64[i] == '+' ? '-' : b64[i] == '/' ? '_' : (char)b64[i];
  out[o] = '\0';
  OPENSSL_cleanse(raw, sizeof raw);
}

rpl_err chan_regkey_decode(const char *key, uint8_t secret[CHAN_SECRET_SIZE], uint8_t fp[CHAN_FINGERPRINT_SIZE])
{
  size_t plen = strlen(CHAN_REGKEY_PREFIX);
  size_t want = (REGKEY_RAW * 4 + 2) / 3; /* unpadded base64 length of REGKEY_RAW bytes */
  if (!key || strncmp(key, CHAN_REGKEY_PREFIX, plen) != 0 || strlen(key) != plen + want)
    return RPL_E_REGKEY_FORMAT;
  unsigned char b64[4 * ((REGKEY_RAW + 2) / 3) + 1];
  size_t i = 0;
  for (; i < want; i++) {
    char c = key[plen + i];
    if (c == '-')
      c = '+';
    else if (c == '_')
      c = '/';
    else if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')))
      return RPL_E_REGKEY_FORMAT;
    b64[i] = (unsigned char)c;
  }
  while (i % 4)
    b64[i++] = '=';
  uint8_t raw[4 * ((REGKEY_RAW + 2) / 3)];
  if (EVP_DecodeBlock(raw, b64, (int)i) < REGKEY_RAW)
    return RPL_E_REGKEY_FORMAT;
  uint32_t crc = proto_crc32c(0, raw, CHAN_SECRET_SIZE + CHAN_FINGERPRINT_SIZE);
  const uint8_t *c = raw + CHAN_SECRET_SIZE + CHAN_FINGERPRINT_SIZE;
  uint32_t got = (uint32_t)c[0] | ((uint32_t)c[1] << 8) | ((uint32_t)c[2] << 16) | ((uint32_t)c[3] << 24);
  if (crc != got) {
    OPENSSL_cleanse(raw, sizeof raw);
    return RPL_E_REGKEY_CHECKSUM;
  }
  memcpy(secret, raw, CHAN_SECRET_SIZE);
  memcpy(fp, raw + CHAN_SECRET_SIZE, CHAN_FINGERPRINT_SIZE);
  OPENSSL_cleanse(raw, sizeof raw);
  return RPL_OK;
}

/* ---- TLS contexts ------------------------------------------------------------------------- */

static rpl_err ctx_base(const SSL_METHOD *method, SSL_CTX **out)
{
  SSL_CTX *ctx = SSL_CTX_new(method);
  if (!ctx)
    return tls_fail("creating a TLS context");
  if (!SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION)) {
    SSL_CTX_free(ctx);
    return tls_fail("requiring TLS 1.3");
  }
  SSL_CTX_set_mode(ctx, SSL_MODE_AUTO_RETRY);
  *out = ctx;
  return RPL_OK;
}

static rpl_err ctx_use_identity(SSL_CTX *ctx, const char *cert_pem, const char *key_pem)
{
  X509 *x = cert_from_pem(cert_pem);
  EVP_PKEY *k = key_from_pem(key_pem);
  int ok = x && k && SSL_CTX_use_certificate(ctx, x) == 1 && SSL_CTX_use_PrivateKey(ctx, k) == 1 &&
           SSL_CTX_check_private_key(ctx) == 1;
  X509_free(x);
  EVP_PKEY_free(k);
  if (!ok) {
    ERR_clear_error();
    log_err("the TLS certificate and key do not parse or do not belong together");
    return RPL_E_TLS_CERT;
  }
  return RPL_OK;
}

rpl_err chan_server_ctx(const char *cert_pem, const char *key_pem, const char *ca_pem, SSL_CTX **out)
{
  *out = NULL;
  SSL_CTX *ctx = NULL;
  rpl_err err = ctx_base(TLS_server_method(), &ctx);
  if (err)
    return err;
  err = ctx_use_identity(ctx, cert_pem, key_pem);
  X509 *ca = err ? NULL : cert_from_pem(ca_pem);
  if (!err && (!ca || X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), ca) != 1))
    err = tls_fail("trusting the appliance authority for client certificates");
  /* The agent pinned the authority, so the chain it is sent ends with it. */
  if (!err && strcmp(cert_pem, ca_pem) != 0 && SSL_CTX_add1_chain_cert(ctx, ca) != 1)
    err = tls_fail("adding the appliance authority to the server's chain");
  X509_free(ca);
  if (err) {
    SSL_CTX_free(ctx);
    return err;
  }
  /* Asked, not required: an unregistered agent connects without one to send REGISTER. */
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_num_tickets(ctx, 0);
  *out = ctx;
  return RPL_OK;
}

/* The leaf verified against the authority alone, as a TLS server certificate. */
static int issued_by(X509 *leaf, X509 *authority)
{
  X509_STORE *trust = X509_STORE_new();
  X509_STORE_CTX *v = X509_STORE_CTX_new();
  int ok = trust && v && X509_STORE_add_cert(trust, authority) == 1 && X509_STORE_CTX_init(v, trust, leaf, NULL) == 1 &&
           X509_STORE_CTX_set_purpose(v, X509_PURPOSE_SSL_SERVER) == 1 && X509_verify_cert(v) == 1;
  X509_STORE_CTX_free(v);
  X509_STORE_free(trust);
  ERR_clear_error();
  return ok;
}

rpl_err chan_server_cert_issued_by(const char *cert_pem, const char *ca_pem)
{
  X509 *x = cert_from_pem(cert_pem), *ca = cert_from_pem(ca_pem);
  int ok = x && ca && issued_by(x, ca);
  X509_free(x);
  X509_free(ca);
  ERR_clear_error();
  return ok ? RPL_OK : RPL_E_TLS_CERT;
}

/* Accepts the pinned authority's own certificate (appliances before server certificates), or a
 * server certificate the pinned authority issued, the authority sent in the chain: it is self-signed
 * and known to the agent only through the fingerprint in the registration key. */
static int verify_pinned(X509_STORE_CTX *store, void *arg)
{
  const uint8_t *pinned = arg;
  X509 *leaf = X509_STORE_CTX_get0_cert(store);
  STACK_OF(X509) *sent = X509_STORE_CTX_get0_untrusted(store);
  uint8_t fp[CHAN_FINGERPRINT_SIZE];
  if (leaf && x509_fingerprint(leaf, fp) && CRYPTO_memcmp(fp, pinned, sizeof fp) == 0)
    return 1;
  for (int i = 0; leaf && sent && i < sk_X509_num(sent); i++) {
    X509 *x = sk_X509_value(sent, i);
    if (x != leaf && x509_fingerprint(x, fp) && CRYPTO_memcmp(fp, pinned, sizeof fp) == 0 && issued_by(leaf, x))
      return 1;
  }
  X509_STORE_CTX_set_error(store, X509_V_ERR_CERT_REJECTED);
  return 0;
}

static void free_pin(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
  free(ptr);
}

static int pin_idx = -1;
static pthread_once_t pin_once = PTHREAD_ONCE_INIT;
static void pin_index_init(void) { pin_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, free_pin); }

rpl_err chan_client_ctx(const uint8_t pinned[CHAN_FINGERPRINT_SIZE], const char *cert_pem,
                        const char *key_pem, SSL_CTX **out)
{
  *out = NULL;
  pthread_once(&pin_once, pin_index_init);
  SSL_CTX *ctx = NULL;
  rpl_err err = ctx_base(TLS_client_method(), &ctx);
  if (err)
    return err;
  if (cert_pem && key_pem)
    err = ctx_use_identity(ctx, cert_pem, key_pem);
  uint8_t *pin = err ? NULL : malloc(CHAN_FINGERPRINT_SIZE);
  if (!err && !pin)
    err = RPL_E_NOMEM;
  if (err) {
    SSL_CTX_free(ctx);
    return err;
  }
  memcpy(pin, pinned, CHAN_FINGERPRINT_SIZE);
  SSL_CTX_set_ex_data(ctx, pin_idx, pin); /* freed with the context */
  SSL_CTX_set_cert_verify_callback(ctx, verify_pinned, pin);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
  *out = ctx;
  return RPL_OK;
}

rpl_err chan_peer_fingerprint(SSL *ssl, uint8_t out[CHAN_FINGERPRINT_SIZE])
{
  X509 *peer = SSL_get1_peer_certificate(ssl);
  if (!peer)
    return RPL_E_NOT_FOUND;
  int ok = x509_fingerprint(peer, out);
  X509_free(peer);
  return ok ? RPL_OK : RPL_E_TLS_CERT;
}

rpl_err chan_peer_cn(SSL *ssl, char *cn, size_t cnsz)
{
  X509 *peer = SSL_get1_peer_certificate(ssl);
  if (!peer)
    return RPL_E_NOT_FOUND;
  rpl_err err = RPL_OK;
  if (SSL_get_verify_result(ssl) != X509_V_OK ||
      X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName, cn, (int)cnsz) <= 0)
    err = RPL_E_TLS_CERT;
  X509_free(peer);
  return err;
}
