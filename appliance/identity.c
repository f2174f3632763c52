/* identity.c - the appliance's own certificate authority and the registration keys it hands out:
 * made once at init, kept across re-inits so registered agents stay valid. */
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

rpl_err identity_issue_regkey(struct catalog *c, const char *cert_pem, char *out)
{
  uint8_t secret[CHAN_SECRET_SIZE], fp[CHAN_FINGERPRINT_SIZE];
  rpl_err err = chan_fingerprint(cert_pem, fp);
  if (err)
    return err;
  if (RAND_bytes(secret, sizeof secret) != 1)
    return RPL_E_TLS;
  err = catalog_regkey_add(c, secret, (int64_t)time(NULL));
  if (!err)
    chan_regkey_encode(secret, fp, out);
  OPENSSL_cleanse(secret, sizeof secret);
  return err;
}

rpl_err identity_open_catalog(const char *state_dir, struct catalog **out)
{
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", state_dir, STATE_CATALOG);
  return catalog_open(path, NULL, out);
}
