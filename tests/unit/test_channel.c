/* test_channel.c - Description: TLS 1.3 mutual authentication over a real socket pair: pinned
 * appliance certificate, agent certificates signed from CSRs, refusals; registration key codec. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>
#include <openssl/err.h>

#include "channel.h"

struct authority {
  char *cert, *key;
  uint8_t fp[CHAN_FINGERPRINT_SIZE];
};

static void make_authority(struct authority *a, const char *cn)
{
  assert_int_equal(chan_make_authority(cn, &a->cert, &a->key), RPL_OK);
  assert_int_equal(chan_fingerprint(a->cert, a->fp), RPL_OK);
}

static void free_authority(struct authority *a)
{
  free(a->cert);
  free(a->key);
}

struct server_run {
  SSL_CTX *ctx;
  int fd;
  int handshake_ok;
  rpl_err cn_err;
  char cn[128];
};

static void *server_main(void *arg)
{
  struct server_run *s = arg;
  SSL *ssl = SSL_new(s->ctx);
  SSL_set_fd(ssl, s->fd);
  s->handshake_ok = SSL_accept(ssl) == 1;
  if (s->handshake_ok) {
    s->cn_err = chan_peer_cn(ssl, s->cn, sizeof s->cn);
    char buf[8];
    int n = SSL_read(ssl, buf, sizeof buf); /* the client's "ping" proves the channel works */
    if (n == 4)
      SSL_write(ssl, "pong", 4);
  }
  SSL_free(ssl);
  close(s->fd);
  ERR_clear_error();
  return NULL;
}

/* Runs one handshake; returns 1 if the client got "pong" back. */
static int connect_once(SSL_CTX *server_ctx, SSL_CTX *client_ctx, struct server_run *s)
{
  int sv[2];
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  memset(s, 0, sizeof *s);
  s->ctx = server_ctx;
  s->fd = sv[0];
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, server_main, s), 0);
  SSL *ssl = SSL_new(client_ctx);
  SSL_set_fd(ssl, sv[1]);
  int ok = 0;
  if (SSL_connect(ssl) == 1 && SSL_write(ssl, "ping", 4) == 4) {
    char buf[8];
    ok = SSL_read(ssl, buf, sizeof buf) == 4 && memcmp(buf, "pong", 4) == 0;
    assert_string_equal(SSL_get_version(ssl), "TLSv1.3");
  }
  SSL_free(ssl);
  close(sv[1]);
  pthread_join(t, NULL);
  ERR_clear_error();
  return ok;
}

static void test_mutual_tls(void **state)
{
  struct authority app, other;
  make_authority(&app, "appliance-1");
  make_authority(&other, "someone-else");
  /* The listeners' certificate, issued by the authority (whose key then signs nothing else). */
  char *srv_csr, *srv_key, *srv_cert;
  assert_int_equal(chan_make_csr("replication-appliance test", &srv_csr, &srv_key), RPL_OK);
  assert_int_equal(chan_sign_csr(app.cert, app.key, srv_csr, "replication-appliance test", CHAN_CERT_SERVER, 3600,
                                 &srv_cert), RPL_OK);
  assert_int_equal(chan_server_cert_issued_by(srv_cert, app.cert), RPL_OK);
  assert_int_equal(chan_server_cert_issued_by(srv_cert, other.cert), RPL_E_TLS_CERT);
  int64_t nb = 0, na = 0;
  assert_int_equal(chan_cert_lifetime(srv_cert, &nb, &na), RPL_OK);
  assert_int_equal(na - nb, 3600 + 360); /* backdated a tenth of a life shorter than 10 hours */
  assert_int_equal(chan_cert_lifetime("not a certificate", &nb, &na), RPL_E_TLS_CERT);
  SSL_CTX *server;
  assert_int_equal(chan_server_ctx(srv_cert, srv_key, app.cert, &server), RPL_OK);

  /* Registration: the agent makes a CSR; the appliance signs it with the agent id as CN. */
  char *csr, *agent_key, *agent_cert;
  assert_int_equal(chan_make_csr("db01 (claimed)", &csr, &agent_key), RPL_OK);
  assert_int_equal(chan_sign_csr(app.cert, app.key, csr, "agent-1234", CHAN_CERT_CLIENT, 825L * 86400, &agent_cert),
                   RPL_OK);
  assert_int_equal(chan_server_cert_issued_by(agent_cert, app.cert), RPL_E_TLS_CERT); /* a client's, not a server's */

  /* 1. Registered agent, right pin: both sides authenticated, CN is the id the appliance chose. */
  SSL_CTX *client;
  struct server_run s;
  assert_int_equal(chan_client_ctx(app.fp, agent_cert, agent_key, &client), RPL_OK);
  assert_true(connect_once(server, client, &s));
  assert_true(s.handshake_ok);
  assert_int_equal(s.cn_err, RPL_OK);
  assert_string_equal(s.cn, "agent-1234");
  SSL_CTX_free(client);

  /* 2. Before registration: no client certificate; the server sees none (REGISTER only). */
  assert_int_equal(chan_client_ctx(app.fp, NULL, NULL, &client), RPL_OK);
  assert_true(connect_once(server, client, &s));
  assert_int_equal(s.cn_err, RPL_E_NOT_FOUND);
  SSL_CTX_free(client);

  /* 3. A pin that is not this appliance's: the client refuses the handshake. */
  assert_int_equal(chan_client_ctx(other.fp, agent_cert, agent_key, &client), RPL_OK);
  assert_false(connect_once(server, client, &s));
  SSL_CTX_free(client);

  /* 4. A client certificate from another authority: the server refuses it. */
  char *csr2, *key2, *foreign_cert;
  assert_int_equal(chan_make_csr("intruder", &csr2, &key2), RPL_OK);
  assert_int_equal(chan_sign_csr(other.cert, other.key, csr2, "agent-1234", CHAN_CERT_CLIENT, 825L * 86400, &foreign_cert),
                   RPL_OK);
  assert_int_equal(chan_client_ctx(app.fp, foreign_cert, key2, &client), RPL_OK);
  assert_false(connect_once(server, client, &s));
  assert_false(s.handshake_ok);
  SSL_CTX_free(client);

  /* 5. An appliance from before server certificates presents its authority itself: still accepted. */
  SSL_CTX *legacy;
  assert_int_equal(chan_server_ctx(app.cert, app.key, app.cert, &legacy), RPL_OK);
  assert_int_equal(chan_client_ctx(app.fp, agent_cert, agent_key, &client), RPL_OK);
  assert_true(connect_once(legacy, client, &s));
  assert_string_equal(s.cn, "agent-1234");
  SSL_CTX_free(legacy);

  /* 6. A server certificate another authority issued, sent with that authority: refused by the pin. */
  char *o_csr, *o_key, *o_cert;
  assert_int_equal(chan_make_csr("impostor", &o_csr, &o_key), RPL_OK);
  assert_int_equal(chan_sign_csr(other.cert, other.key, o_csr, "impostor", CHAN_CERT_SERVER, 3600, &o_cert), RPL_OK);
  SSL_CTX *impostor;
  assert_int_equal(chan_server_ctx(o_cert, o_key, app.cert, &impostor), RPL_OK); /* even claiming our authority */
  assert_false(connect_once(impostor, client, &s));
  SSL_CTX_free(impostor);

  /* 7. The authority's client certificate used as a server's: refused (not issued for serving). */
  assert_int_equal(chan_server_ctx(agent_cert, agent_key, app.cert, &impostor), RPL_OK);
  assert_false(connect_once(impostor, client, &s));
  SSL_CTX_free(impostor);
  SSL_CTX_free(client);

  /* A CSR that does not parse, a lifetime out of range, or a key that doesn't match its
   * certificate, is refused. */
  char *bad;
  assert_int_equal(chan_sign_csr(app.cert, app.key, "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n", "x", CHAN_CERT_CLIENT, 1,
                                 &bad), RPL_E_TLS_CERT);
  assert_int_equal(chan_sign_csr(app.cert, app.key, csr, "x", CHAN_CERT_CLIENT, 0, &bad), RPL_E_INVALID_ARGUMENT);
  assert_int_equal(chan_sign_csr(app.cert, app.key, csr, "x", CHAN_CERT_CLIENT, CHAN_MAX_CERT_SECONDS + 1, &bad),
                   RPL_E_INVALID_ARGUMENT);
  assert_int_equal(chan_client_ctx(app.fp, agent_cert, key2, &client), RPL_E_TLS_CERT);
  assert_int_equal(chan_fingerprint("not a certificate", app.fp), RPL_E_TLS_CERT);

  free(csr), free(agent_key), free(agent_cert), free(csr2), free(key2), free(foreign_cert);
  free(srv_csr), free(srv_key), free(srv_cert), free(o_csr), free(o_key), free(o_cert);
  SSL_CTX_free(server);
  free_authority(&app);
  free_authority(&other);
}

static void test_regkey(void **state)
{
  uint8_t secret[CHAN_SECRET_SIZE], fp[CHAN_FINGERPRINT_SIZE], s2[CHAN_SECRET_SIZE], f2[CHAN_FINGERPRINT_SIZE];
  for (int i = 0; i < CHAN_SECRET_SIZE; i++)
    secret[i] = (uint8_t)(i * 13 + 250), fp[i] = (uint8_t)(255 - i * 3);
  char key[CHAN_REGKEY_MAX];
  chan_regkey_encode(secret, fp, key);
  assert_int_equal(strncmp(key, "rk1-", 4), 0);
  assert_null(strpbrk(key, "+/= \n"));
  assert_int_equal(chan_regkey_decode(key, s2, f2), RPL_OK);
  assert_memory_equal(s2, secret, sizeof secret);
  assert_memory_equal(f2, fp, sizeof fp);

  /* Any single mistyped character is caught. */
  for (size_t i = 4; i < strlen(key); i++) {
    char k2[CHAN_REGKEY_MAX];
    strcpy(k2, key);
    k2[i] = k2[i] == 'A' ? 'B' : 'A';
    rpl_err e = chan_regkey_decode(k2, s2, f2);
    assert_true(e == RPL_E_REGKEY_CHECKSUM || e == RPL_E_REGKEY_FORMAT);
  }
  char k3[CHAN_REGKEY_MAX];
  strcpy(k3, key);
  k3[10] = '+';
  assert_int_equal(chan_regkey_decode(k3, s2, f2), RPL_E_REGKEY_FORMAT);
  k3[strlen(k3) - 1] = '\0';
  assert_int_equal(chan_regkey_decode(k3, s2, f2), RPL_E_REGKEY_FORMAT);
  assert_int_equal(chan_regkey_decode("rk2-AAAA", s2, f2), RPL_E_REGKEY_FORMAT);
  assert_int_equal(chan_regkey_decode("", s2, f2), RPL_E_REGKEY_FORMAT);
  assert_int_equal(chan_regkey_decode(NULL, s2, f2), RPL_E_REGKEY_FORMAT);

  char text[3 * CHAN_FINGERPRINT_SIZE];
  chan_fingerprint_text(fp, text);
  assert_int_equal(strlen(text), 3 * CHAN_FINGERPRINT_SIZE - 1);
  assert_int_equal(strncmp(text, "FF:FC:", 6), 0);
}

int main(void)
{
  signal(SIGPIPE, SIG_IGN); /* a refused handshake closes the socket under a writer */
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_mutual_tls),
    cmocka_unit_test(test_regkey),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
