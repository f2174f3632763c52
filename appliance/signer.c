/* signer.c - the authority's key in a process of its own: requests and answers are single datagrams
 * on a socket pair, their lengths checked before anything is read from them. */
#include "signer.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "file_io.h"
#include "proto.h"
#include "rpl_log.h"
#include "state_files.h"

struct signer_request {
  uint32_t purpose;
  uint32_t csr_len;
  int64_t seconds;
  char cn[SIGNER_MAX_CN]; /* NUL-terminated */
};

struct signer_answer {
  int32_t err;
  uint32_t cert_len;
};

#define REQUEST_MAX (sizeof(struct signer_request) + PROTO_MAX_PEM)
#define ANSWER_MAX  (sizeof(struct signer_answer) + PROTO_MAX_PEM)

struct signer {
  int fd;
  pid_t pid;
  pthread_mutex_t lock;
};

/* One datagram in, one out, until the appliance closes its end. */
static int serve(int fd, const char *ca_cert, const char *ca_key)
{
  static uint8_t in[REQUEST_MAX + 1], out[ANSWER_MAX];
  for (;;) {
    ssize_t n = recv(fd, in, sizeof in, 0);
    if (n == 0)
      return 0;
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return 1;
    }
    struct signer_request rq;
    struct signer_answer an = {.err = RPL_E_PROTO_FIELD};
    char *cert = NULL;
    if ((size_t)n >= sizeof rq && (size_t)n <= REQUEST_MAX) {
      memcpy(&rq, in, sizeof rq);
      bool ok = rq.csr_len == (size_t)n - sizeof rq && memchr(rq.cn, 0, sizeof rq.cn) && rq.cn[0] &&
                (rq.purpose == CHAN_CERT_CLIENT || rq.purpose == CHAN_CERT_SERVER);
      if (ok) {
        in[n] = 0; /* the request's PEM, terminated in the byte kept for it */
        an.err = chan_sign_csr(ca_cert, ca_key, (const char *)in + sizeof rq, rq.cn,
                               (enum chan_cert_purpose)rq.purpose, (long)rq.seconds, &cert);
      }
    }
    size_t len = cert ? strlen(cert) : 0;
    if (!an.err && len > PROTO_MAX_PEM)
      an.err = RPL_E_TLS_CERT;
    an.cert_len = an.err ? 0 : (uint32_t)len;
    memcpy(out, &an, sizeof an);
    if (an.cert_len)
      memcpy(out + sizeof an, cert, an.cert_len);
    free(cert);
    if (send(fd, out, sizeof an + an.cert_len, MSG_NOSIGNAL) < 0)
      return 1;
  }
}

static void signer_main(int fd, const char *state_dir)
{
  prctl(PR_SET_NAME, "rpl-signer");
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  signal(SIGTERM, SIG_IGN); /* it ends when the appliance closes the socket, after its last request */
  signal(SIGINT, SIG_IGN);
  char crt[4096], key[4096];
  snprintf(crt, sizeof crt, "%s/%s", state_dir, STATE_APPLIANCE_CERT);
  snprintf(key, sizeof key, "%s/%s", state_dir, STATE_APPLIANCE_KEY);
  char *ca_cert = NULL, *ca_key = NULL;
  int rc = 1;
  if (file_read_all(crt, 65536, &ca_cert) || file_read_all(key, 65536, &ca_key))
    log_err("signer: cannot read the appliance authority in %s", state_dir);
  else
    rc = serve(fd, ca_cert, ca_key);
  if (ca_key)
    OPENSSL_cleanse(ca_key, strlen(ca_key));
  free(ca_key);
  free(ca_cert);
  _exit(rc);
}

rpl_err signer_start(const char *state_dir, struct signer **out)
{
  *out = NULL;
  struct signer *s = calloc(1, sizeof *s);
  if (!s)
    return RPL_E_NOMEM;
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
    free(s);
    return rpl_fail(RPL_E_IO, "signer: socketpair: %s", strerror(errno));
  }
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0) {
    close(sv[0]), close(sv[1]);
    free(s);
    return rpl_fail(RPL_E_IO, "signer: fork: %s", strerror(errno));
  }
  if (pid == 0) {
    close(sv[0]);
    /* Nothing of the appliance's but the socket and the standard streams. */
    if (dup2(sv[1], 3) < 0)
      _exit(1);
    close_range(4, ~0u, 0);
    signer_main(3, state_dir);
  }
  close(sv[1]);
  s->fd = sv[0];
  s->pid = pid;
  pthread_mutex_init(&s->lock, NULL);
  *out = s;
  return RPL_OK;
}

rpl_err signer_sign(struct signer *s, const char *csr_pem, const char *cn, enum chan_cert_purpose purpose,
                    long seconds, char **cert_pem)
{
  *cert_pem = NULL;
  size_t csr_len = strlen(csr_pem);
  struct signer_request rq = {.purpose = purpose, .csr_len = (uint32_t)csr_len, .seconds = seconds};
  if (csr_len > PROTO_MAX_PEM || strlen(cn) >= sizeof rq.cn || !cn[0])
    return rpl_fail(RPL_E_INVALID_ARGUMENT, "signer: a request of %zu bytes for '%.40s'", csr_len, cn);
  memcpy(rq.cn, cn, strlen(cn) + 1);
  uint8_t *msg = malloc(sizeof rq + csr_len), *ans = malloc(ANSWER_MAX + 1);
  rpl_err err = msg && ans ? RPL_OK : RPL_E_NOMEM;
  if (!err) {
    memcpy(msg, &rq, sizeof rq);
    memcpy(msg + sizeof rq, csr_pem, csr_len);
    pthread_mutex_lock(&s->lock);
    ssize_t n = send(s->fd, msg, sizeof rq + csr_len, MSG_NOSIGNAL);
    if (n == (ssize_t)(sizeof rq + csr_len)) {
      do
        n = recv(s->fd, ans, ANSWER_MAX + 1, 0);
      while (n < 0 && errno == EINTR);
    } else {
      n = -1;
    }
    pthread_mutex_unlock(&s->lock);
    struct signer_answer an;
    if (n < (ssize_t)sizeof an) {
      err = rpl_fail(RPL_E_TLS, "the appliance's signer process is gone (%s): restart the appliance",
                     n < 0 ? strerror(errno) : "no answer");
    } else {
      memcpy(&an, ans, sizeof an);
      if ((size_t)n > ANSWER_MAX || (!an.err && an.cert_len != (size_t)n - sizeof an))
        err = rpl_fail(RPL_E_TLS, "the signer's answer of %zd bytes is malformed", n);
      else if (an.err)
        err = (rpl_err)an.err;
      else if (!(*cert_pem = strndup((const char *)ans + sizeof an, an.cert_len)))
        err = RPL_E_NOMEM;
    }
  }
  free(msg);
  free(ans);
  return err;
}

void signer_stop(struct signer *s)
{
  if (!s)
    return;
  close(s->fd);
  int status;
  while (waitpid(s->pid, &status, 0) < 0 && errno == EINTR)
    ;
  pthread_mutex_destroy(&s->lock);
  free(s);
}
