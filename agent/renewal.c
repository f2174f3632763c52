/* renewal.c - the agent's client certificate: loaded at start, renewed over the authenticated
 * session two thirds of the way through its life, replaced on disk so that a crash at any point
 * leaves one whole pair. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "channel.h"
#include "daemon.h"
#include "file_io.h"
#include "rpl_log.h"
#include "state_files.h"

#define RENEW_TIMEOUT_MS 30000

struct pair_paths {
  char crt[600], key[600], crt_next[600], key_next[600];
};

static void pair_paths(const struct agent_state *st, struct pair_paths *p)
{
  agent_state_path(st, STATE_AGENT_CERT, p->crt, sizeof p->crt);
  agent_state_path(st, STATE_AGENT_KEY, p->key, sizeof p->key);
  agent_state_path(st, STATE_AGENT_CERT_NEXT, p->crt_next, sizeof p->crt_next);
  agent_state_path(st, STATE_AGENT_KEY_NEXT, p->key_next, sizeof p->key_next);
}

/* The new pair is written whole (key.next, then crt.next) before either is renamed into place, key
 * first. So crt.next present means both were written: the renames are finished; key.next alone
 * means the writing was cut short: it is dropped and the old pair stays. */
static rpl_err finish_interrupted(const struct pair_paths *p)
{
  if (access(p->crt_next, F_OK) == 0) {
    if (access(p->key_next, F_OK) == 0 && rename(p->key_next, p->key) != 0)
      return rpl_fail(RPL_E_IO, "rename %s: %s", p->key_next, strerror(errno));
    if (rename(p->crt_next, p->crt) != 0)
      return rpl_fail(RPL_E_IO, "rename %s: %s", p->crt_next, strerror(errno));
    log_notice("finished replacing the client certificate with its renewal (%s)", p->crt);
    return file_fsync_parent(p->crt);
  }
  if (unlink(p->key_next) == 0)
    log_warn("dropped %s: a renewal was cut short before its certificate was saved", p->key_next);
  return RPL_OK;
}

static rpl_err load_pair(struct agent *a, const struct pair_paths *p)
{
  char *crt = NULL, *key = NULL;
  SSL_CTX *ctx = NULL;
  int64_t nb = 0, na = 0;
  rpl_err err = file_read_all(p->crt, 65536, &crt);
  if (!err)
    err = file_read_all(p->key, 65536, &key);
  if (!err)
    err = chan_cert_lifetime(crt, &nb, &na);
  if (!err)
    err = chan_client_ctx(a->st.fingerprint, crt, key, &ctx);
  if (key)
    OPENSSL_cleanse(key, strlen(key));
  free(crt), free(key);
  if (err)
    return err;
  SSL_CTX_free(a->ctx); /* a connection made with it keeps its own reference */
  a->ctx = ctx;
  pthread_mutex_lock(&a->lock);
  a->cert_not_before = nb;
  a->cert_not_after = na;
  pthread_mutex_unlock(&a->lock);
  return RPL_OK;
}

rpl_err renewal_load_identity(struct agent *a)
{
  struct pair_paths p;
  pair_paths(&a->st, &p);
  rpl_err err = finish_interrupted(&p);
  return err ? err : load_pair(a, &p);
}

bool renewal_due(const struct agent *a)
{
  int64_t life = a->cert_not_after - a->cert_not_before;
  return !a->renew_disabled && life > 0 && (int64_t)time(NULL) >= a->cert_not_before + life * 2 / 3;
}

static rpl_err save_pair(const struct pair_paths *p, const char *key, const struct proto_renewed *m)
{
  rpl_err err;
  if ((err = file_write_atomic(p->key_next, key, strlen(key), 0600)) ||
      (err = file_write_atomic(p->crt_next, m->cert_pem.ptr, m->cert_pem.len, 0644)))
    return err;
  return finish_interrupted(p);
}

rpl_err renewal_run(struct agent *a)
{
  char hostname[256] = "unknown";
  gethostname(hostname, sizeof hostname - 1);
  char *csr = NULL, *key = NULL;
  rpl_err err = chan_make_csr(hostname, &csr, &key);
  struct proto_renew rq = {.csr_pem = {(const uint8_t *)csr, csr ? (uint32_t)strlen(csr) : 0}};
  struct proto_frame f;
  if (!err && !(err = proto_encode_renew(&a->out, &rq)) && !(err = session_send_buf(a)))
    err = conn_recv(a->conn, &f, RENEW_TIMEOUT_MS);
  if (!err && f.type == PROTO_ERROR) {
    struct proto_error e;
    if (proto_decode_error(&f, &e) == RPL_OK)
      log_warn("the appliance did not renew this agent's certificate (%.*s): the current one is kept, and renewal "
               "is asked again at the next connection", (int)e.message.len, (const char *)e.message.ptr);
    else
      err = RPL_E_PROTO_UNEXPECTED;
  } else if (!err) {
    struct proto_renewed m;
    struct pair_paths p;
    pair_paths(&a->st, &p);
    if ((err = f.type == PROTO_RENEWED ? proto_decode_renewed(&f, &m) : RPL_E_PROTO_UNEXPECTED) == RPL_OK &&
        (err = save_pair(&p, key, &m)) == RPL_OK && (err = load_pair(a, &p)) == RPL_OK) {
      char until[40];
      struct tm tm;
      time_t t = (time_t)a->cert_not_after;
      strftime(until, sizeof until, "%Y-%m-%d %H:%M UTC", gmtime_r(&t, &tm));
      log_notice("client certificate renewed (valid until %s): reconnecting with it", until);
      if (renewal_due(a)) {
        a->renew_disabled = true; /* else every connection would renew again */
        log_warn("the renewed certificate is due for renewal already: this machine's clock is wrong (it is "
                 "renewed no more until the agent restarts; set the clock right, e.g. with NTP)");
      }
      err = RPL_E_AGAIN;
    }
  }
  if (key)
    OPENSSL_cleanse(key, strlen(key));
  free(csr), free(key);
  return err;
}
