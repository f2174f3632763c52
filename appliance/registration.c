/* registration.c - an agent's first connection: its registration key checked, its CSR signed by
 * the appliance's CA, the agent recorded in the catalog. */
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

#define AGENT_CERT_DAYS     825

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
  err = csr ? chan_sign_csr(a->ca_cert, a->ca_key, csr, idtext, AGENT_CERT_DAYS, &cert) : RPL_E_NOMEM;
  if (!err)
    err = chan_fingerprint(cert, fp);
  if (!err) {
    char hex[2 * CHAN_FINGERPRINT_SIZE + 8] = "sha256:";
    for (int i = 0; i < CHAN_FINGERPRINT_SIZE; i++)
      sprintf(hex + 7 + 2 * i, "%02x", fp[i]);
    snprintf(ag.cert_fingerprint, sizeof ag.cert_fingerprint, "%s", hex);
    err = catalog_register_agent(a->cat, m.secret, &ag);
  }
  if (err) {
    const char *why = err == RPL_E_CATALOG_KEY_USED      ? "this registration key was used already: issue a new one with 'replication-appliance init'"
                      : err == RPL_E_CATALOG_KEY_UNKNOWN ? "this registration key is not one this appliance issued"
                                                         : rpl_strerror(err);
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
  }
  OPENSSL_cleanse(&m, sizeof m);
  free(csr);
  free(cert);
}
