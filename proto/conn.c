/* conn.c - framed TLS connections: blocking sockets bounded by poll and socket timeouts, so a dead
 * peer costs at most CONN_IO_TIMEOUT_MS, and the decoder's caps bound memory. */
#include "conn.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>

#include "rpl_clock.h"
#include "rpl_log.h"

struct conn {
  int fd;
  SSL *ssl;
  struct proto_decoder dec;
  char peer[128];
};

SSL *conn_ssl(struct conn *c) { return c->ssl; }
int conn_fd(const struct conn *c) { return c->fd; }
const char *conn_peer(const struct conn *c) { return c->peer; }

rpl_err conn_split_hostport(const char *hostport, char *host, size_t hostsz, char *port, size_t portsz, int default_port)
{
  const char *colon;
  size_t hl;
  if (hostport[0] == '[') {
    const char *end = strchr(hostport, ']');
    if (!end)
      return RPL_E_INVALID_ARGUMENT;
    hl = (size_t)(end - hostport - 1);
    if (hl == 0 || hl >= hostsz)
      return RPL_E_INVALID_ARGUMENT;
    memcpy(host, hostport + 1, hl);
    host[hl] = '\0';
    colon = end[1] == ':' ? end + 1 : NULL;
    if (!colon && end[1])
      return RPL_E_INVALID_ARGUMENT;
  } else {
    colon = strrchr(hostport, ':');
    if (colon && strchr(hostport, ':') != colon)
      return RPL_E_INVALID_ARGUMENT; /* a bare IPv6 address needs brackets */
    hl = colon ? (size_t)(colon - hostport) : strlen(hostport);
    if (hl == 0 || hl >= hostsz)
      return RPL_E_INVALID_ARGUMENT;
    memcpy(host, hostport, hl);
    host[hl] = '\0';
  }
  if (colon) {
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (*end || p < 1 || p > 65535)
      return RPL_E_INVALID_ARGUMENT;
    snprintf(port, portsz, "%ld", p);
  } else {
    snprintf(port, portsz, "%d", default_port);
  }
  return RPL_OK;
}

static void set_timeouts(int fd, int ms)
{
  struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  int buf = 4 << 20; /* a long fat pipe of 1 MiB extents */
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
}

/* ret: what the failed SSL_* call returned; it and errno tell a closed peer from a timeout. */
static rpl_err tls_error(const char *what, const struct conn *c, int ret)
{
  int saved_errno = errno;
  int ssl_err = SSL_get_error(c->ssl, ret);
  unsigned long e = ERR_get_error();
  char buf[256];
  if (e)
    ERR_error_string_n(e, buf, sizeof buf);
  else if (ssl_err == SSL_ERROR_SYSCALL && saved_errno)
    snprintf(buf, sizeof buf, "%s", strerror(saved_errno));
  else if (ssl_err == SSL_ERROR_ZERO_RETURN || ssl_err == SSL_ERROR_SYSCALL)
    snprintf(buf, sizeof buf, "connection closed by the peer");
  else
    snprintf(buf, sizeof buf, "TLS error %d", ssl_err);
  ERR_clear_error();
  log_warn("%s with %s failed: %s", what, c->peer, buf);
  return rpl_fail(RPL_E_TLS, "%s with %s failed: %s", what, c->peer, buf);
}

static struct conn *conn_new(int fd, SSL_CTX *ctx)
{
  struct conn *c = calloc(1, sizeof *c);
  if (!c)
    return NULL;
  c->fd = fd;
  proto_decoder_init(&c->dec);
  c->ssl = SSL_new(ctx);
  if (!c->ssl || SSL_set_fd(c->ssl, fd) != 1) {
    SSL_free(c->ssl);
    free(c);
    return NULL;
  }
  return c;
}

rpl_err conn_connect(SSL_CTX *ctx, const char *hostport, int timeout_ms, struct conn **out)
{
  *out = NULL;
  char host[256], port[16];
  if (conn_split_hostport(hostport, host, sizeof host, port, sizeof port, CONN_DEFAULT_PORT)) {
    log_err("'%s' is not HOST:PORT", hostport);
    return RPL_E_INVALID_ARGUMENT;
  }
  struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai;
  int g = getaddrinfo(host, port, &hints, &ai);
  if (g) {
    log_warn("cannot resolve %s: %s", host, gai_strerror(g));
    return RPL_E_IO;
  }
  int fd = -1;
  for (struct addrinfo *a = ai; a && fd < 0; a = a->ai_next) {
    fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
    if (fd < 0)
      continue;
    int rc = connect(fd, a->ai_addr, a->ai_addrlen);
    if (rc != 0 && errno == EINPROGRESS) {
      struct pollfd p = {.fd = fd, .events = POLLOUT};
      int err = 0;
      socklen_t el = sizeof err;
      if (poll(&p, 1, timeout_ms) != 1 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0 || err) {
        errno = err ? err : ETIMEDOUT;
        close(fd);
        fd = -1;
      }
    } else if (rc != 0) {
      close(fd);
      fd = -1;
    }
  }
  freeaddrinfo(ai);
  if (fd < 0) {
    log_warn("cannot connect to %s: %s", hostport, strerror(errno ? errno : ECONNREFUSED));
    return RPL_E_IO;
  }
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  set_timeouts(fd, timeout_ms);
  struct conn *c = conn_new(fd, ctx);
  if (!c) {
    close(fd);
    return RPL_E_NOMEM;
  }
  snprintf(c->peer, sizeof c->peer, "%s", hostport);
  int hs = SSL_connect(c->ssl);
  if (hs != 1) {
    long v = SSL_get_verify_result(c->ssl);
    rpl_err err = v == X509_V_ERR_CERT_REJECTED ? RPL_E_TLS_PIN_MISMATCH : tls_error("TLS handshake", c, hs);
    ERR_clear_error();
    conn_close(c);
    return err;
  }
  set_timeouts(fd, CONN_IO_TIMEOUT_MS);
  *out = c;
  return RPL_OK;
}

rpl_err conn_accept(SSL_CTX *ctx, int fd, int timeout_ms, struct conn **out)
{
  *out = NULL;
  set_timeouts(fd, timeout_ms);
  struct conn *c = conn_new(fd, ctx);
  if (!c) {
    close(fd);
    return RPL_E_NOMEM;
  }
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  char h[96] = "?", p[16] = "?";
  if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0)
    getnameinfo((struct sockaddr *)&ss, sl, h, sizeof h, p, sizeof p, NI_NUMERICHOST | NI_NUMERICSERV);
  snprintf(c->peer, sizeof c->peer, "%s:%s", h, p);
  /* Non-blocking, so that one deadline covers the whole handshake. */
  int flags = fcntl(fd, F_GETFL);
  fcntl(fd, F_SETFL, flags | O_NONBLOCK);
  uint64_t deadline = rpl_mono_ms() + (uint64_t)timeout_ms;
  for (;;) {
    ERR_clear_error();
    int hs = SSL_accept(c->ssl);
    if (hs == 1)
      break;
    int e = SSL_get_error(c->ssl, hs);
    uint64_t now = rpl_mono_ms();
    if ((e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) || now >= deadline) {
      rpl_err err = now >= deadline && (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                        ? rpl_fail(RPL_E_TIMEOUT, "%s: the TLS handshake did not complete within %d ms", c->peer,
                                   timeout_ms)
                        : tls_error("TLS handshake", c, hs);
      ERR_clear_error();
      conn_close(c);
      return err;
    }
    struct pollfd pf = {.fd = fd, .events = e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT};
    if (poll(&pf, 1, (int)(deadline - now)) < 0 && errno != EINTR) {
      conn_close(c);
      return RPL_E_IO;
    }
  }
  fcntl(fd, F_SETFL, flags);
  set_timeouts(fd, CONN_IO_TIMEOUT_MS);
  *out = c;
  return RPL_OK;
}

void conn_set_recv_limit(struct conn *c, uint32_t max_payload) { proto_decoder_set_limit(&c->dec, max_payload); }

void conn_close(struct conn *c)
{
  if (!c)
    return;
  if (c->ssl) {
    SSL_shutdown(c->ssl); /* best effort close_notify; the peer may be gone */
    SSL_free(c->ssl);
  }
  ERR_clear_error();
  close(c->fd);
  proto_decoder_free(&c->dec);
  free(c);
}

static rpl_err write_all(struct conn *c, const void *data, size_t len)
{
  const uint8_t *p = data;
  while (len) {
    int chunk = len > (1u << 30) ? 1 << 30 : (int)len;
    int n = SSL_write(c->ssl, p, chunk);
    if (n <= 0) {
      /* A blocking socket with a send timeout fails with EINTR on any signal or io_uring task
       * work aimed at this thread, even one with no handler: not the peer's doing, so the same
       * write is tried again (OpenSSL asks for the same arguments). EAGAIN is the timeout. */
      int saved_errno = errno;
      int e = SSL_get_error(c->ssl, n);
      if ((e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ || e == SSL_ERROR_SYSCALL) &&
          saved_errno == EINTR) {
        ERR_clear_error();
        continue;
      }
      if (e == SSL_ERROR_WANT_WRITE && (saved_errno == EAGAIN || saved_errno == EWOULDBLOCK)) {
        ERR_clear_error();
        log_warn("sending with %s failed: the peer took nothing for %d s", c->peer,
                 CONN_IO_TIMEOUT_MS / 1000);
        return RPL_E_TIMEOUT;
      }
      errno = saved_errno;
      return tls_error("sending", c, n);
    }
    p += n;
    len -= (size_t)n;
  }
  return RPL_OK;
}

rpl_err conn_send(struct conn *c, const struct proto_buf *frames)
{
  return write_all(c, frames->data, frames->len);
}

rpl_err conn_send_extent(struct conn *c, const struct proto_extent *m)
{
  uint8_t prefix[PROTO_EXTENT_PREFIX_SIZE];
  rpl_err err = proto_encode_extent_prefix(prefix, m);
  if (!err)
    err = write_all(c, prefix, sizeof prefix);
  if (!err && m->payload.len)
    err = write_all(c, m->payload.ptr, m->payload.len);
  return err;
}

int conn_pending(struct conn *c)
{
  return SSL_pending(c->ssl) > 0 || c->dec.end > c->dec.start;
}

rpl_err conn_recv(struct conn *c, struct proto_frame *f, int timeout_ms)
{
  if (timeout_ms < 0)
    timeout_ms = CONN_IO_TIMEOUT_MS;
  uint64_t t0 = rpl_mono_ms();
  for (;;) {
    rpl_err err = proto_decoder_next(&c->dec, f);
    if (err != RPL_E_AGAIN)
      return err;
    if (SSL_pending(c->ssl) == 0) {
      uint64_t spent = rpl_mono_ms() - t0;
      int left = spent >= (uint64_t)timeout_ms ? 0 : timeout_ms - (int)spent;
      struct pollfd p = {.fd = c->fd, .events = POLLIN};
      int r = poll(&p, 1, left);
      if (r < 0 && errno == EINTR)
        continue;
      if (r == 0)
        return RPL_E_TIMEOUT;
    }
    uint8_t *space;
    size_t avail;
    err = proto_decoder_reserve(&c->dec, &space, &avail);
    if (err)
      return err;
    int want = avail > (1u << 30) ? 1 << 30 : (int)avail;
    int n = SSL_read(c->ssl, space, want);
    if (n <= 0) {
      int e = SSL_get_error(c->ssl, n);
      if (e == SSL_ERROR_WANT_READ)
        continue; /* a non-application record (key update): wait again */
      if (e != SSL_ERROR_ZERO_RETURN)
        (void)tls_error("receiving", c, n);
      ERR_clear_error();
      return RPL_E_IO;
    }
    proto_decoder_commit(&c->dec, (size_t)n);
  }
}
