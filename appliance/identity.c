/* identity.c - the appliance's own certificate authority (made once at init, kept across re-inits
 * so registered agents stay valid), the listeners' certificate it issues, and registration keys. */
#include "identity.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "rpl_log.h"
#include "state_files.h"

static void paths(const char *state_dir, char *crt, char *key, size_t n)
{
  snprintf(crt, n, "%s/%s", state_dir, STATE_APPLIANCE_CERT);
  snprintf(key, n, "%s/%s", state_dir, STATE_APPLIANCE_KEY);
}

rpl_err identity_load(const char *state_dir, char **cert_pem, char **key_pem)
{
  char crt[4096], key[4096];
  paths(state_dir, crt, key, sizeof crt);
  *cert_pem = *key_pem = NULL;
  rpl_err err = file_read_all(crt, 65536, cert_pem);
  if (!err)
    err = file_read_all(key, 65536, key_pem);
  if (err) {
    free(*cert_pem);
    *cert_pem = NULL;
  }
  return err;
}

rpl_err identity_load_authority(const char *state_dir, char **cert_pem)
{
  char crt[4200];
  snprintf(crt, sizeof crt, "%s/%s", state_dir, STATE_APPLIANCE_CERT);
  *cert_pem = NULL;
  return file_read_all(crt, 65536, cert_pem);
}

rpl_err identity_ensure(const char *state_dir, char **cert_pem, char **key_pem, int *created)
{
  *created = 0;
  rpl_err err = identity_load(state_dir, cert_pem, key_pem);
  if (err != RPL_E_NOT_FOUND)
    return err;
  char hostname[200] = "appliance", cn[256];
  gethostname(hostname, sizeof hostname - 1);
  snprintf(cn, sizeof cn, "replication-appliance %s", hostname);
  if ((err = chan_make_authority(cn, cert_pem, key_pem)))
    return err;
  char crt[4096], key[4096];
  paths(state_dir, crt, key, sizeof crt);
  if ((err = file_write_atomic(key, *key_pem, strlen(*key_pem), 0600)) ||
      (err = file_write_atomic(crt, *cert_pem, strlen(*cert_pem), 0644))) {
    log_err("cannot write the appliance's certificate in %s: %s", state_dir, strerror(errno));
    OPENSSL_cleanse(*key_pem, strlen(*key_pem));
    free(*cert_pem), free(*key_pem);
    *cert_pem = *key_pem = NULL;
    return err;
  }
  *created = 1;
  return RPL_OK;
}

rpl_err identity_adopt(const char *state_dir, const char *cert_pem, const char *key_pem)
{
  char *have_cert = NULL, *have_key = NULL;
  rpl_err err = identity_load(state_dir, &have_cert, &have_key);
  if (err == RPL_OK) {
    bool same = strcmp(have_cert, cert_pem) == 0;
    OPENSSL_cleanse(have_key, strlen(have_key));
    free(have_cert), free(have_key);
    return same ? RPL_OK : RPL_E_MEMBERS_IDENTITY;
  }
  if (err != RPL_E_NOT_FOUND)
    return err;
  char crt[4096], key[4096];
  paths(state_dir, crt, key, sizeof crt);
  if ((err = file_write_atomic(key, key_pem, strlen(key_pem), 0600)) ||
      (err = file_write_atomic(crt, cert_pem, strlen(cert_pem), 0644)))
    log_err("cannot write the appliance's certificate in %s: %s", state_dir, strerror(errno));
  return err;
}

rpl_err identity_issue_regkey(struct catalog *c, const char *cert_pem, int64_t ttl_seconds, char *out,
                              int64_t *expires_time)
{
  uint8_t secret[CHAN_SECRET_SIZE], fp[CHAN_FINGERPRINT_SIZE];
  rpl_err err = chan_fingerprint(cert_pem, fp);
  if (err)
    return err;
  if (RAND_bytes(secret, sizeof secret) != 1)
    return RPL_E_TLS;
  int64_t now = (int64_t)time(NULL);
  *expires_time = ttl_seconds > 0 ? now + ttl_seconds : 0;
  err = catalog_regkey_add(c, secret, now, *expires_time);
  if (!err)
    chan_regkey_encode(secret, fp, out);
  OPENSSL_cleanse(secret, sizeof secret);
  return err;
}

void identity_remove_legacy_regkey(const char *state_dir)
{
  char path[4200];
  snprintf(path, sizeof path, "%s/%s", state_dir, STATE_REGISTRATION_KEY);
  if (unlink(path) == 0)
    log_notice("removed %s: registration keys are kept only as hashes now (issue a new key to register an agent)", path);
}

long identity_server_cert_seconds(void)
{
  /* Tests shorten it to see a renewal; nothing else should. */
  const char *v = getenv("RPL_TEST_SERVER_CERT_SECONDS");
  long n = v ? strtol(v, NULL, 10) : 0;
  return n >= 60 && n <= SERVER_CERT_SECONDS ? n : SERVER_CERT_SECONDS;
}

/* Usable: the pair belongs together, the authority issued it, and less than two thirds of its life
 * is over (renewed well before it ends: an appliance restarts at least with every upgrade). */
static bool server_cert_usable(const char *cert, const char *key, const char *ca_cert, int64_t now)
{
  SSL_CTX *probe = NULL;
  int64_t nb, na;
  bool ok = chan_server_cert_issued_by(cert, ca_cert) == RPL_OK && chan_cert_lifetime(cert, &nb, &na) == RPL_OK &&
            now < nb + (na - nb) * 2 / 3 && chan_server_ctx(cert, key, ca_cert, &probe) == RPL_OK;
  SSL_CTX_free(probe);
  return ok;
}

rpl_err identity_server_cert(const char *state_dir, struct signer *sg, const char *ca_cert, char **cert_pem,
                             char **key_pem)
{
  char crt[4200], key[4200];
  snprintf(crt, sizeof crt, "%s/%s", state_dir, STATE_SERVER_CERT);
  snprintf(key, sizeof key, "%s/%s", state_dir, STATE_SERVER_KEY);
  *cert_pem = *key_pem = NULL;
  if (file_read_all(crt, 65536, cert_pem) == RPL_OK && file_read_all(key, 65536, key_pem) == RPL_OK &&
      server_cert_usable(*cert_pem, *key_pem, ca_cert, (int64_t)time(NULL)))
    return RPL_OK;
  if (*key_pem)
    OPENSSL_cleanse(*key_pem, strlen(*key_pem));
  free(*cert_pem), free(*key_pem);
  *cert_pem = *key_pem = NULL;
  char hostname[200] = "appliance", cn[SIGNER_MAX_CN];
  gethostname(hostname, sizeof hostname - 1);
  /* Not the authority's name ("replication-appliance HOST"): a certificate named as its issuer
   * would be taken for self-issued, and fail verification. */
  snprintf(cn, sizeof cn, "replication-appliance %s listener", hostname);
  char *csr = NULL;
  rpl_err err = chan_make_csr(cn, &csr, key_pem);
  if (!err)
    err = signer_sign(sg, csr, cn, CHAN_CERT_SERVER, identity_server_cert_seconds(), cert_pem);
  /* The key first: a certificate without its key is made again at the next start. */
  if (!err && !(err = file_write_atomic(key, *key_pem, strlen(*key_pem), 0600)))
    err = file_write_atomic(crt, *cert_pem, strlen(*cert_pem), 0644);
  free(csr);
  if (err) {
    if (*key_pem)
      OPENSSL_cleanse(*key_pem, strlen(*key_pem));
    free(*cert_pem), free(*key_pem);
    *cert_pem = *key_pem = NULL;
    return err;
  }
  log_notice("issued the listeners' TLS certificate (%s), valid %ld s", crt, identity_server_cert_seconds());
  return RPL_OK;
}

rpl_err identity_open_catalog(const char *state_dir, struct catalog **out)
{
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", state_dir, STATE_CATALOG);
  return catalog_open(path, NULL, out);
}
