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

rpl_err state_read_file(const char *path, size_t cap, char **out)
{
  *out = NULL;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return errno == ENOENT ? RPL_E_NOT_FOUND : errno == EACCES ? RPL_E_PERMISSION : RPL_E_IO;
  struct stat st;
  if (fstat(fd, &st) != 0 || (size_t)st.st_size > cap) {
    close(fd);
    return RPL_E_LIMIT;
  }
  char *buf = malloc((size_t)st.st_size + 1);
  size_t got = 0;
  while (buf && got < (size_t)st.st_size) {
    ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    got += (size_t)n;
  }
  close(fd);
  if (!buf)
    return RPL_E_NOMEM;
  buf[got] = '\0';
  *out = buf;
  return RPL_OK;
}

rpl_err state_write_file(const char *path, const char *data, size_t len, unsigned mode)
{
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0)
    return RPL_E_IO;
  size_t done = 0;
  while (done < len) {
    ssize_t n = write(fd, data + done, len - done);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    done += (size_t)n;
  }
  int ok = done == len && fchmod(fd, mode) == 0 && fsync(fd) == 0;
  ok = close(fd) == 0 && ok;
  if (!ok || rename(tmp, path) != 0) {
    unlink(tmp);
    return RPL_E_IO;
  }
  return RPL_OK;
}

static void paths(const char *state_dir, char *crt, char *key, size_t n)
{
  snprintf(crt, n, "%s/%s", state_dir, IDENTITY_CERT);
  snprintf(key, n, "%s/%s", state_dir, IDENTITY_KEY);
}

rpl_err identity_load(const char *state_dir, char **cert_pem, char **key_pem)
{
  char crt[4096], key[4096];
  paths(state_dir, crt, key, sizeof crt);
  *cert_pem = *key_pem = NULL;
  rpl_err err = state_read_file(crt, 65536, cert_pem);
  if (!err)
    err = state_read_file(key, 65536, key_pem);
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
  if ((err = state_write_file(key, *key_pem, strlen(*key_pem), 0600)) ||
      (err = state_write_file(crt, *cert_pem, strlen(*cert_pem), 0644))) {
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
  snprintf(path, sizeof path, "%s/%s", state_dir, CATALOG_FILE);
  return catalog_open(path, NULL, out);
}
