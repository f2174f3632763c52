/* cmd_register.c - `mobility-agent register`: proves the registration key's one-time secret to the
 * pinned appliance and stores the client certificate it signs. */
#include <errno.h>
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

struct register_opts {
  const char *appliance, *key, *key_file, *state_dir;
  const char *members[AGENT_MAX_MEMBERS];
  size_t nmembers;
  char key_buf[256];          /* the key read from --key-file (or stdin) */
};

#define REGISTER_USAGE "usage: mobility-agent register --appliance HOST:PORT (--key KEY | --key-file FILE|-) [--member HOST:PORT ...] [--state DIR]"

/* The key from the first line of FILE, or of standard input for "-" (so that it is never in the
 * process's command line, which every user can read in /proc). 0, or 1 with the message printed. */
static int read_key_file(struct register_opts *o)
{
  FILE *f = strcmp(o->key_file, "-") ? fopen(o->key_file, "re") : stdin;
  if (!f)
    return fail("--key-file %s: %s", o->key_file, strerror(errno));
  bool got = fgets(o->key_buf, sizeof o->key_buf, f) != NULL;
  if (f != stdin)
    fclose(f);
  o->key_buf[strcspn(o->key_buf, "\r\n")] = '\0';
  if (!got || !o->key_buf[0])
    return fail("--key-file %s: no registration key on its first line (the line init printed last: rk1-...)",
                o->key_file);
  o->key = o->key_buf;
  return 0;
}

/* 0, or 1 with the message printed. */
static int parse_register_opts(int argc, char **argv, struct register_opts *o)
{
  *o = (struct register_opts){.state_dir = AGENT_DEFAULT_STATE};
  static const struct option opts[] = {
    {"appliance", required_argument, NULL, 'a'}, {"key", required_argument, NULL, 'k'},
    {"key-file", required_argument, NULL, 'f'}, {"state", required_argument, NULL, 's'},
    {"member", required_argument, NULL, 'm'}, {0, 0, 0, 0}};
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
    case 'a': o->appliance = optarg; break;
    case 'k': o->key = optarg; break;
    case 'f': o->key_file = optarg; break;
    case 's': o->state_dir = optarg; break;
    case 'm':
      if (o->nmembers == AGENT_MAX_MEMBERS)
        return fail("at most %d --member (the other appliances of the appliance group)", AGENT_MAX_MEMBERS);
      o->members[o->nmembers++] = optarg;
      break;
    default: return fail(REGISTER_USAGE);
    }
  }
  if (!o->appliance || !o->key == !o->key_file || optind != argc)
    return fail(REGISTER_USAGE);
  if (o->key_file && read_key_file(o))
    return 1;
  /* Checked here so that a typo is reported before a key is made or anything is sent. */
  char host[256], port[16];
  if (conn_split_hostport(o->appliance, host, sizeof host, port, sizeof port, CONN_DEFAULT_PORT))
    return fail("'%s' is not HOST:PORT (e.g. 10.0.0.5:9443)", o->appliance);
  for (size_t i = 0; i < o->nmembers; i++)
    if (strlen(o->members[i]) >= sizeof ((struct agent_state *)0)->members[0] ||
        conn_split_hostport(o->members[i], host, sizeof host, port, sizeof port, CONN_DEFAULT_PORT))
      return fail("--member '%s' is not HOST:PORT (another appliance of the group, e.g. 10.0.0.6:9443)", o->members[i]);
  return 0;
}

/* A pin mismatch is its own message: it is the one failure the address, daemon or firewall do not explain. */
static int connect_appliance(SSL_CTX *ctx, const char *appliance, struct conn **cn)
{
  rpl_err err = conn_connect(ctx, appliance, REGISTER_TIMEOUT_MS, cn);
  if (!err)
    return 0;
  if (err == RPL_E_TLS_PIN_MISMATCH)
    return fail("%s: %s", appliance, rpl_strerror(err));
  return fail("cannot reach the appliance at %s (%s): check the address, that `replication-appliance run` is running, and the firewall",
              appliance, rpl_strerror(err));
}

/* Sends the secret with the CSR; on success *ok holds the signed certificate (pointing into the
 * connection's buffer). 0, or 1 with the message printed. */
static int exchange_registration(struct conn *cn, struct proto_buf *out, const char *appliance, const char *hostname,
                                 const char *csr, const uint8_t secret[CHAN_SECRET_SIZE], struct proto_registered *ok)
{
  struct proto_register reg = {.hostname = {(const uint8_t *)hostname, (uint32_t)strlen(hostname)},
                               .csr_pem = {(const uint8_t *)csr, (uint32_t)strlen(csr)}};
  memcpy(reg.secret, secret, CHAN_SECRET_SIZE);
  struct proto_frame f;
  rpl_err err;
  if ((err = proto_encode_register(out, &reg)) || (err = conn_send(cn, out)) ||
      (err = conn_recv(cn, &f, REGISTER_TIMEOUT_MS)))
    return fail("registration with %s failed: %s", appliance, rpl_strerror(err));
  if (f.type == PROTO_ERROR) {
    struct proto_error e;
    if (proto_decode_error(&f, &e) != RPL_OK)
      return fail("the appliance refused the registration");
    fprintf(stderr, "mobility-agent register: the appliance refused the registration: %.*s\n", (int)e.message.len,
            (const char *)e.message.ptr);
    return 1;
  }
  if ((err = proto_decode_registered(&f, ok)))
    return fail("unexpected answer from the appliance: %s", rpl_strerror(err));
  return 0;
}

/* Key and certificate are written before the state that names the appliance, so a saved
 * registration always has its credentials. 0, or 1 (file_write_atomic logs its own failures). */
static int save_registration(struct agent_state *st, const struct register_opts *o, const char *agent_key,
                             const struct proto_registered *ok, const uint8_t fp[CHAN_FINGERPRINT_SIZE])
{
  char path[600];
  agent_state_path(st, STATE_AGENT_KEY, path, sizeof path);
  if (file_write_atomic(path, agent_key, strlen(agent_key), 0600))
    return 1;
  agent_state_path(st, STATE_AGENT_CERT, path, sizeof path);
  if (file_write_atomic(path, (const char *)ok->cert_pem.ptr, ok->cert_pem.len, 0644))
    return 1;
  agent_disk_id_text(ok->agent_id, st->agent_id);
  snprintf(st->appliance, sizeof st->appliance, "%s", o->appliance);
  st->nmembers = o->nmembers;
  for (size_t i = 0; i < o->nmembers; i++)
    snprintf(st->members[i], sizeof st->members[i], "%s", o->members[i]);
  memcpy(st->fingerprint, fp, CHAN_FINGERPRINT_SIZE);
  rpl_err err = agent_state_save(st);
  if (err)
    return fail("cannot save the registration in %s: %s", o->state_dir, rpl_strerror(err));
  return 0;
}

int agent_cmd_register(int argc, char **argv)
{
  struct register_opts o;
  if (parse_register_opts(argc, argv, &o))
    return 1;
  uint8_t secret[CHAN_SECRET_SIZE], fp[CHAN_FINGERPRINT_SIZE];
  rpl_err err = chan_regkey_decode(o.key, secret, fp);
  if (err)
    return fail("%s", rpl_strerror(err));
  struct agent_state st;
  if ((err = agent_state_load(o.state_dir, &st)))
    return fail("cannot use the state directory %s: %s", o.state_dir, rpl_strerror(err));

  char hostname[256] = "unknown";
  gethostname(hostname, sizeof hostname - 1);
  char *csr = NULL, *agent_key = NULL;
  SSL_CTX *ctx = NULL;
  struct conn *cn = NULL;
  struct proto_buf out = {0};
  struct proto_registered ok;
  int status = 1;
  if ((err = chan_make_csr(hostname, &csr, &agent_key)) || (err = chan_client_ctx(fp, NULL, NULL, &ctx))) {
    fail("cannot prepare the agent's key: %s", rpl_strerror(err));
    goto cleanup;
  }
  if (connect_appliance(ctx, o.appliance, &cn) ||
      exchange_registration(cn, &out, o.appliance, hostname, csr, secret, &ok) ||
      save_registration(&st, &o, agent_key, &ok, fp))
    goto cleanup;
  char fptext[3 * CHAN_FINGERPRINT_SIZE];
  chan_fingerprint_text(fp, fptext);
  printf("registered as agent %s with the appliance at %s (certificate %s)\n", st.agent_id, o.appliance, fptext);
  status = 0;
cleanup:
  OPENSSL_cleanse(secret, sizeof secret); /* the key's one-time secret and the agent's private key */
  if (agent_key)
    OPENSSL_cleanse(agent_key, strlen(agent_key));
  proto_buf_free(&out);
  conn_close(cn);
  SSL_CTX_free(ctx);
  free(csr);
  free(agent_key);
  return status;
}
