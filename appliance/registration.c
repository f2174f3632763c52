/* registration.c - an agent's first connection (its registration key checked, its CSR signed by
 * the appliance's authority, the agent recorded in the catalog) and its certificate's renewals. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <uuid/uuid.h>

#include "channel.h"
#include "rpl_log.h"
#include "session.h"
#include "signer.h"

#define AGENT_CERT_SECONDS (825L * 86400) /* renewed by the agent two thirds of the way through */

long agent_cert_seconds(void)
{
  /* Tests shorten it to see a renewal; nothing else should. */
  const char *v = getenv("RPL_TEST_AGENT_CERT_SECONDS");
  long n = v ? strtol(v, NULL, 10) : 0;
  return n >= 60 && n <= AGENT_CERT_SECONDS ? n : AGENT_CERT_SECONDS;
}

void registration_fingerprint_text(const uint8_t fp[CHAN_FINGERPRINT_SIZE], char out[CATALOG_MAX_FINGERPRINT + 1])
{
  int n = snprintf(out, CATALOG_MAX_FINGERPRINT + 1, "sha256:");
  for (int i = 0; i < CHAN_FINGERPRINT_SIZE; i++)
    n += snprintf(out + n, (size_t)(CATALOG_MAX_FINGERPRINT + 1 - n), "%02x", fp[i]);
}

rpl_err registration_renew(struct appliance *a, const uint8_t agent[PROTO_ID_SIZE], const struct proto_frame *f,
                           struct proto_buf *out)
{
  struct proto_renew m;
  rpl_err err = proto_decode_renew(f, &m);
  if (err)
    return err;
  char idtext[37];
  id_text(agent, idtext);
  char *csr = strndup((const char *)m.csr_pem.ptr, m.csr_pem.len), *cert = NULL;
  uint8_t fp[CHAN_FINGERPRINT_SIZE];
  char fptext[CATALOG_MAX_FINGERPRINT + 1];
  err = csr ? signer_sign(a->signer, csr, idtext, CHAN_CERT_CLIENT, agent_cert_seconds(), &cert) : RPL_E_NOMEM;
  if (!err && !(err = chan_fingerprint(cert, fp))) {
    registration_fingerprint_text(fp, fptext);
    err = catalog_agent_set_pending_cert(a->cat, agent, fptext);
  }
  if (!err && a->members.in_group)
    appliance_publish_agent(a, agent); /* its next connection may be to another member */
  if (!err) {
    struct proto_renewed r = {.cert_pem = {(const uint8_t *)cert, (uint32_t)strlen(cert)}};
    err = proto_encode_renewed(out, &r);
  }
  if (err) {
    log_warn("agent %s: certificate not renewed: %s", idtext, rpl_detail(err));
    const char *why = rpl_strerror(err);
    struct proto_error e = {.code = err, .message = {(const uint8_t *)why, (uint32_t)strlen(why)}};
    err = proto_encode_error(out, &e); /* the session goes on with the current certificate */
  } else {
    log_notice("agent %s: renewed certificate issued (%s); the current one stays valid until it is used", idtext,
               fptext);
  }
  free(csr);
  free(cert);
  return err;
}

void registration(struct appliance *a, struct conn *c)
{
  struct proto_frame f;
  struct proto_register m;
  rpl_err err = conn_recv(c, &f, HELLO_TIMEOUT_MS);
  if (!err)
    err = f.type == PROTO_REGISTER ? proto_decode_register(&f, &m) : RPL_E_PROTO_UNEXPECTED;
  if (err) {
    log_warn("%s: connection without a client certificate that did not register (%s): refused", conn_peer(c),
             rpl_strerror(err));
    rpl_err e = send_error(c, RPL_E_PERMISSION, "unregistered agent: register with a key from 'replication-appliance init'");
    (void)e;
    return;
  }
  char hostname[256];
  snprintf(hostname, sizeof hostname, "%.*s", (int)m.hostname.len, (const char *)m.hostname.ptr);
  char *csr = strndup((const char *)m.csr_pem.ptr, m.csr_pem.len);
  struct catalog_agent ag = {0};
  uuid_generate(ag.id);
  char idtext[37];
  id_text(ag.id, idtext);
  snprintf(ag.hostname, sizeof ag.hostname, "%s", hostname);
  ag.registered_time = time(NULL);
  char *cert = NULL;
  uint8_t fp[CHAN_FINGERPRINT_SIZE];
  err = csr ? signer_sign(a->signer, csr, idtext, CHAN_CERT_CLIENT, agent_cert_seconds(), &cert) : RPL_E_NOMEM;
  if (!err)
    err = chan_fingerprint(cert, fp);
  if (!err) {
    registration_fingerprint_text(fp, ag.cert_fingerprint);
    err = catalog_register_agent(a->cat, m.secret, &ag, (int64_t)time(NULL));
  }
  if (err) {
    const char *why = err == RPL_E_CATALOG_KEY_USED      ? "this registration key was used already: issue a new one with 'replication-appliance init'"
                      : err == RPL_E_CATALOG_KEY_UNKNOWN ? "this registration key is not one this appliance issued"
                                                         : rpl_strerror(err); /* expired, revoked: the message says what to do */
    log_warn("registration from %s (%s) refused: %s", conn_peer(c), hostname, why);
    rpl_err e = send_error(c, err, why);
    (void)e;
  } else {
    struct proto_buf b = {0};
    struct proto_registered r = {.cert_pem = {(const uint8_t *)cert, (uint32_t)strlen(cert)}};
    memcpy(r.agent_id, ag.id, PROTO_ID_SIZE);
    if (proto_encode_registered(&b, &r) == RPL_OK && conn_send(c, &b) == RPL_OK)
      log_notice("registered agent %s (%s) from %s", idtext, hostname, conn_peer(c));
    proto_buf_free(&b);
    if (a->members.in_group)
      appliance_publish_agent(a, ag.id);
  }
  OPENSSL_cleanse(&m, sizeof m);
  free(csr);
  free(cert);
}
