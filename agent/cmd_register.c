/* cmd_register.c - `mobility-agent register`: proves the registration key's one-time secret to the
 * pinned appliance and stores the client certificate it signs. */
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent_state.h"
#include "channel.h"
#include "commands.h"
#include "conn.h"
#include "rpl_log.h"
#include "state_files.h"

#define REGISTER_TIMEOUT_MS 30000

__attribute__((format(printf, 1, 2))) static int fail(const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "mobility-agent register: ");
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  return 1;
}

int agent_cmd_register(int argc, char **argv)
{
  const char *appliance = NULL, *key = NULL, *state_dir = AGENT_DEFAULT_STATE;
  static const struct option opts[] = {
    {"appliance", required_argument, NULL, 'a'}, {"key", required_argument, NULL, 'k'},
    {"state", required_argument, NULL, 's'}, {0, 0, 0, 0}};
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
    case 'a': appliance = optarg; break;
    case 'k': key = optarg; break;
    case 's': state_dir = optarg; break;
    default: return fail("usage: mobility-agent register --appliance HOST:PORT --key KEY [--state DIR]");
    }
  }
  if (!appliance || !key || optind != argc)
    return fail("usage: mobility-agent register --appliance HOST:PORT --key KEY [--state DIR]");
  char host[256], port[16];
  if (conn_split_hostport(appliance, host, sizeof host, port, sizeof port, CONN_DEFAULT_PORT))
    return fail("'%s' is not HOST:PORT (e.g. 10.0.0.5:9443)", appliance);

  uint8_t secret[CHAN_SECRET_SIZE], fp[CHAN_FINGERPRINT_SIZE];
  rpl_err err = chan_regkey_decode(key, secret, fp);
  if (err)
    return fail("%s", rpl_strerror(err));

  struct agent_state st;
  if ((err = agent_state_load(state_dir, &st)))
    return fail("cannot use the state directory %s: %s", state_dir, rpl_strerror(err));

  char hostname[256] = "unknown";
  gethostname(hostname, sizeof hostname - 1);
  char *csr = NULL, *agent_key = NULL;
  SSL_CTX *ctx = NULL;
  struct conn *cn = NULL;
  struct proto_buf out = {0};
  int status = 1;
  if ((err = chan_make_csr(hostname, &csr, &agent_key)) || (err = chan_client_ctx(fp, NULL, NULL, &ctx))) {
    fail("cannot prepare the agent's key: %s", rpl_strerror(err));
    goto cleanup;
  }
  if ((err = conn_connect(ctx, appliance, REGISTER_TIMEOUT_MS, &cn))) {
    if (err == RPL_E_TLS_PIN_MISMATCH)
      fail("%s: %s", appliance, rpl_strerror(err));
    else
      fail("cannot reach the appliance at %s (%s): check the address, that `replication-appliance run` is running, and the firewall",
           appliance, rpl_strerror(err));
    goto cleanup;
  }
  struct proto_register reg = {.hostname = {(const uint8_t *)hostname, (uint32_t)strlen(hostname)},
                               .csr_pem = {(const uint8_t *)csr, (uint32_t)strlen(csr)}};
  memcpy(reg.secret, secret, sizeof secret);
  struct proto_frame f;
  if ((err = proto_encode_register(&out, &reg)) || (err = conn_send(cn, &out)) ||
      (err = conn_recv(cn, &f, REGISTER_TIMEOUT_MS))) {
    fail("registration with %s failed: %s", appliance, rpl_strerror(err));
    goto cleanup;
  }
  if (f.type == PROTO_ERROR) {
    struct proto_error e;
    if (proto_decode_error(&f, &e) == RPL_OK)
      fprintf(stderr, "mobility-agent register: the appliance refused the registration: %.*s\n", (int)e.message.len,
              (const char *)e.message.ptr);
    else
      fail("the appliance refused the registration");
    goto cleanup;
  }
  struct proto_registered ok;
  if ((err = proto_decode_registered(&f, &ok))) {
    fail("unexpected answer from the appliance: %s", rpl_strerror(err));
    goto cleanup;
  }
  char path[600];
  agent_state_path(&st, STATE_AGENT_KEY, path, sizeof path);
  if ((err = file_write_atomic(path, agent_key, strlen(agent_key), 0600)))
    goto cleanup;
  agent_state_path(&st, STATE_AGENT_CERT, path, sizeof path);
  if ((err = file_write_atomic(path, (const char *)ok.cert_pem.ptr, ok.cert_pem.len, 0644)))
    goto cleanup;
  agent_disk_id_text(ok.agent_id, st.agent_id);
  snprintf(st.appliance, sizeof st.appliance, "%s", appliance);
  memcpy(st.fingerprint, fp, sizeof fp);
  if ((err = agent_state_save(&st))) {
    fail("cannot save the registration in %s: %s", state_dir, rpl_strerror(err));
    goto cleanup;
  }
  char fptext[3 * CHAN_FINGERPRINT_SIZE];
  chan_fingerprint_text(fp, fptext);
  printf("registered as agent %s with the appliance at %s (certificate %s)\n", st.agent_id, appliance, fptext);
  status = 0;
cleanup:
  OPENSSL_cleanse(secret, sizeof secret);
  if (agent_key)
    OPENSSL_cleanse(agent_key, strlen(agent_key));
  proto_buf_free(&out);
  conn_close(cn);
  SSL_CTX_free(ctx);
  free(csr);
  free(agent_key);
  return status;
}
