/* bench_sessions_nb.c - bench_sessions' nonblocking framed TLS connections: its event-loop server's and its client's. */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench_sessions.h"

int out_append(struct outbuf *o, const void *data, size_t len)
{
  if (o->len + len > OUT_CAP)
    return -1;
  if (o->len + len > o->alloc) {
    size_t n = o->alloc ? o->alloc : 4096;
    while (n < o->len + len)
      n *= 2;
    uint8_t *p = realloc(o->data, n);
    if (!p)
      return -1;
    o->data = p, o->alloc = n;
  }
  memcpy(o->data + o->len, data, len);
  o->len += len;
  return 0;
}

void socket_tune(int fd, bool big_buffers)
{
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (big_buffers) {
    int buf = SOCKET_BUFFER;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
  }
}

int nb_init(struct nb_conn *c, int fd, SSL_CTX *ctx, bool server)
{
  memset(c, 0, sizeof *c);
  c->fd = fd;
  proto_decoder_init(&c->dec);
  c->ssl = SSL_new(ctx);
  if (!c->ssl || SSL_set_fd(c->ssl, fd) != 1)
    return -1;
  SSL_set_mode(c->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  if (server)
    SSL_set_accept_state(c->ssl);
  else
    SSL_set_connect_state(c->ssl);
  return 0;
}

/* Closes the connection (a close_notify first when open, so the peer sees a clean end). */
void nb_close(int epfd, struct nb_conn *c)
{
  if (c->closed)
    return;
  epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
  if (c->ssl && c->open)
    SSL_shutdown(c->ssl);
  SSL_free(c->ssl);
  ERR_clear_error();
  close(c->fd);
  proto_decoder_free(&c->dec);
  free(c->out.data);
  c->ssl = NULL, c->out.data = NULL;
  c->closed = true;
}

/* 1: handshake done; 0: under way; -1: failed. */
int nb_handshake(struct nb_conn *c)
{
  ERR_clear_error();
  int r = SSL_do_handshake(c->ssl);
  if (r == 1) {
    c->open = true, c->hs_wants_write = false;
    return 1;
  }
  int e = SSL_get_error(c->ssl, r);
  c->hs_wants_write = e == SSL_ERROR_WANT_WRITE;
  return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ? 0 : -1;
}

/* Reads what the socket has (up to READ_BUDGET, more while OpenSSL holds decrypted bytes) and hands
 * each whole frame to on_frame. 0: keep the connection; -1: closed by the peer or broken. */
int nb_read(struct nb_conn *c, frame_fn on_frame, void *arg)
{
  size_t got = 0;
  while (got < READ_BUDGET || SSL_pending(c->ssl) > 0) {
    uint8_t *space;
    size_t avail;
    if (proto_decoder_reserve(&c->dec, &space, &avail))
      return -1;
    ERR_clear_error();
    int n = SSL_read(c->ssl, space, avail > (1u << 30) ? 1 << 30 : (int)avail);
    if (n <= 0) {
      int e = SSL_get_error(c->ssl, n);
      return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ? 0 : -1;
    }
    proto_decoder_commit(&c->dec, (size_t)n);
    got += (size_t)n;
    struct proto_frame f;
    rpl_err err;
    while ((err = proto_decoder_next(&c->dec, &f)) == RPL_OK)
      if (on_frame(c, &f, arg))
        return -1;
    if (err != RPL_E_AGAIN)
      return -1;
  }
  return 0;
}

/* Writes what is queued until the socket takes no more. 0: fine (maybe some left); -1: broken. */
int nb_flush(struct nb_conn *c)
{
  struct outbuf *o = &c->out;
  while (o->off < o->len) {
    size_t left = o->len - o->off;
    ERR_clear_error();
    int n = SSL_write(c->ssl, o->data + o->off, left > (1u << 30) ? 1 << 30 : (int)left);
    if (n <= 0) {
      int e = SSL_get_error(c->ssl, n);
      return e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ ? 0 : -1;
    }
    o->off += (size_t)n;
  }
  o->off = o->len = 0;
  return 0;
}

/* Watches for writability only while something waits to be written. */
void nb_arm(int epfd, struct nb_conn *c)
{
  bool want_out = c->connecting || c->hs_wants_write || c->out.off < c->out.len;
  uint32_t ev = EPOLLIN | (want_out ? EPOLLOUT : 0u);
  if (ev == c->events)
    return;
  struct epoll_event e = {.events = ev, .data.ptr = c};
  epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &e);
  c->events = ev;
}

/* With --pin (the default on 2 cores or more): the server's threads on cores 0..n-2, the client on
 * core n-1, so that neither takes the other's CPU (5000 runnable session threads would otherwise
 * starve the one client thread, and the client's handshakes would count against the server). */
void pin_to(bool server)
{
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  if (cpus < 2)
    return;
  cpu_set_t set;
  CPU_ZERO(&set);
  for (long i = server ? 0 : cpus - 1; i < (server ? cpus - 1 : cpus); i++)
    CPU_SET((int)i, &set);
  if (sched_setaffinity(0, sizeof set, &set))
    perror("bench_sessions: sched_setaffinity");
}
