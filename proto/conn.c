/* conn.c - framed TLS connections: non-blocking sockets bounded by poll, so a dead peer costs at
 * most CONN_IO_TIMEOUT_MS, one reader and many writers at once, and the decoder's caps bound memory. */
#include "conn.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>

#include "rpl_clock.h"
#include "rpl_log.h"

/* Full duplex over one SSL object: OpenSSL forbids two threads in it at once, so ssl_lock is held
 * around each SSL_* call alone, never while waiting in poll() for the socket; a writer waiting for
 * room therefore never stops the reader, which may be what the peer needs before it reads again
 * (both directions' TCP buffers full would otherwise wait for each other for ever). send_lock is held
 * for a whole frame (or batch of frames), so that one writer's frames never interleave another's. */
struct conn {
  int fd;
  SSL *ssl;
  pthread_mutex_t ssl_lock;
  pthread_mutex_t send_lock;
  struct proto_decoder dec; /* the reader's only (one thread receives) */
  /* The receiving thread (conn_set_reader) sends too; while its send waits (for another sender's
   * frame to go out, or for the peer to take bytes), it keeps reading into ahead, so that a peer
   * blocked writing to us is never left waiting on our send. conn_recv decodes it first. */
  bool has_reader;
  pthread_t reader;
  uint8_t *ahead;
  size_t ahead_len, ahead_cap;
  bool ahead_stopped;       /* the stream ended or broke while reading ahead: conn_recv finds out itself */
  bool write_buffer_grown;  /* under send_lock: CONN_WRITE_BUFFER */
  /* conn_set_extent_sink: the reader's; split is the EXTENT being read into the sink's buffer. */
  conn_extent_sink sink;
  void *sink_arg;
  uint32_t sink_min;
  bool sink_declined;       /* for the frame being buffered: received whole */
  bool splitting;
  rpl_err split_broken;     /* sticky: a split frame's CRC was wrong */
  struct proto_split split;
  char peer[128];
};

/* Bytes read ahead at most: two of the largest frames. Past it the reader's send waits without
 * reading; the peer would have to send that much without reading for the two sides to wait on each
 * other, which the protocol's few appliance-to-agent frames per cycle never do. */
#define CONN_READ_AHEAD_MAX (2 * ((size_t)PROTO_HEADER_SIZE + PROTO_MAX_PAYLOAD))

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
  /* Reads straight from the socket; writes through a buffer (grow_write_buffer, flush_all). */
  BIO *rbio = BIO_new_socket(fd, BIO_NOCLOSE), *wsock = BIO_new_socket(fd, BIO_NOCLOSE);
  BIO *wbuf = BIO_new(BIO_f_buffer());
  if (!c->ssl || !rbio || !wsock || !wbuf) {
    BIO_free(rbio);
    BIO_free(wsock);
    BIO_free(wbuf);
    SSL_free(c->ssl);
    free(c);
    return NULL;
  }
  SSL_set_bio(c->ssl, rbio, BIO_push(wbuf, wsock)); /* the SSL owns them from here */
  /* A write that found no room is retried after poll() with the rest of the buffer, perhaps after
   * reads in between: partial writes return what went out, and the buffer may be the same bytes at
   * another address (a retry after a poll is a new call). */
  SSL_set_mode(c->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  /* One read() per record at least, not one for its 5-byte header and one for the rest. */
  SSL_set_read_ahead(c->ssl, 1);
  pthread_mutex_init(&c->ssl_lock, NULL);
  pthread_mutex_init(&c->send_lock, NULL);
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
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); /* from now on every wait is a poll() (write_all, conn_recv) */
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
  /* It stays non-blocking: every wait is a poll() (write_all, conn_recv). */
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
  free(c->ahead);
  pthread_mutex_destroy(&c->ssl_lock);
  pthread_mutex_destroy(&c->send_lock);
  free(c);
}

void conn_set_reader(struct conn *c)
{
  c->reader = pthread_self();
  c->has_reader = true;
}

static bool is_reader(const struct conn *c) { return c->has_reader && pthread_equal(pthread_self(), c->reader); }

void conn_abort(struct conn *c)
{
  shutdown(c->fd, SHUT_RDWR); /* no SSL call: another thread may be in one */
}

/* Waits up to left_ms for the socket to take (POLLOUT) or bring (POLLIN) bytes. False: it did not
 * within left_ms. */
static bool wait_socket(const struct conn *c, short events, uint64_t left_ms)
{
  struct pollfd p = {.fd = c->fd, .events = events};
  int r = poll(&p, 1, left_ms > INT32_MAX ? INT32_MAX : (int)left_ms);
  return r != 0; /* ready, or a signal (the caller tries again and looks at its deadline) */
}

static int read_some(struct conn *c, uint8_t *space, size_t avail, short *want);

/* The reader's send waits: whatever the peer sent meanwhile is read into c->ahead (up to its cap). */
static void read_ahead(struct conn *c)
{
  if (c->ahead_stopped || c->ahead_len >= CONN_READ_AHEAD_MAX)
    return;
  if (c->ahead_cap - c->ahead_len < 16384) {
    size_t cap = c->ahead_cap ? c->ahead_cap * 2 : 65536;
    if (cap > CONN_READ_AHEAD_MAX)
      cap = CONN_READ_AHEAD_MAX;
    uint8_t *b = cap > c->ahead_cap ? realloc(c->ahead, cap) : NULL;
    if (!b)
      return; /* nothing more is read ahead: the send waits as any other */
    c->ahead = b;
    c->ahead_cap = cap;
  }
  short want = POLLIN;
  int n = read_some(c, c->ahead + c->ahead_len, c->ahead_cap - c->ahead_len, &want);
  if (n < 0)
    c->ahead_stopped = true;
  else
    c->ahead_len += (size_t)n;
}

/* Waits up to left_ms for the socket to take bytes (want POLLOUT) or need some (POLLIN); on the
 * reader's thread, reading ahead whatever comes meanwhile. False: nothing within left_ms. */
static bool wait_to_send(struct conn *c, short want, uint64_t left_ms)
{
  if (!is_reader(c))
    return wait_socket(c, want, left_ms);
  uint64_t until = rpl_mono_ms() + left_ms;
  for (;;) {
    bool room = c->ahead_stopped || c->ahead_len >= CONN_READ_AHEAD_MAX;
    struct pollfd p = {.fd = c->fd, .events = (short)(want | (room ? 0 : POLLIN))};
    uint64_t now = rpl_mono_ms();
    if (now >= until)
      return false;
    int r = poll(&p, 1, until - now > INT32_MAX ? INT32_MAX : (int)(until - now));
    if (r <= 0)
      return r < 0; /* a signal: the caller tries again */
    if (p.revents & (want | POLLERR | POLLHUP | POLLNVAL))
      return true;
    read_ahead(c);
  }
}

/* Nanoseconds the calling thread has spent, in all, waiting in its sends for the socket to take bytes
 * or for another sender's frame to go out (conn_send_wait_ns). */
static _Thread_local uint64_t send_wait_ns;

uint64_t conn_send_wait_ns(void) { return send_wait_ns; }

/* send_lock, taken by the reader's thread without ceasing to read: a cycle thread may hold it while
 * the peer waits for us to read. */
static void lock_send(struct conn *c)
{
  if (pthread_mutex_trylock(&c->send_lock) == 0)
    return;
  uint64_t t0 = rpl_mono_ns();
  if (!is_reader(c)) {
    pthread_mutex_lock(&c->send_lock);
    send_wait_ns += rpl_mono_ns() - t0;
    return;
  }
  while (pthread_mutex_trylock(&c->send_lock) != 0) {
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    bool room = !c->ahead_stopped && c->ahead_len < CONN_READ_AHEAD_MAX;
    if (room && poll(&p, 1, 5) > 0) /* 5 ms: how often it looks at the lock while reading ahead */
      read_ahead(c);
    else if (!room)
      poll(NULL, 0, 5);
  }
  send_wait_ns += rpl_mono_ns() - t0;
}

/* One SSL_write under ssl_lock: bytes written (> 0), 0 to wait for the socket (*want says for what),
 * or -1 after recording the error. */
static int write_some(struct conn *c, const uint8_t *p, size_t len, short *want)
{
  int chunk = len > (1u << 30) ? 1 << 30 : (int)len;
  pthread_mutex_lock(&c->ssl_lock);
  ERR_clear_error();
  int n = SSL_write(c->ssl, p, chunk);
  int saved_errno = errno;
  int e = n > 0 ? SSL_ERROR_NONE : SSL_get_error(c->ssl, n);
  if (n <= 0) {
    if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ ||
        (e == SSL_ERROR_SYSCALL && (saved_errno == EINTR || saved_errno == EAGAIN))) {
      ERR_clear_error();
      *want = e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT;
      n = 0;
    } else {
      errno = saved_errno;
      (void)tls_error("sending", c, n);
      n = -1;
    }
  }
  pthread_mutex_unlock(&c->ssl_lock);
  return n;
}

/* After a send found no room: waits for the socket (want), unless the peer has taken nothing since
 * progress_ms for CONN_IO_TIMEOUT_MS. */
static rpl_err wait_for_room(struct conn *c, short want, uint64_t progress_ms)
{
  uint64_t idle = rpl_mono_ms() - progress_ms, t0 = rpl_mono_ns();
  bool ready = idle < CONN_IO_TIMEOUT_MS && wait_to_send(c, want, CONN_IO_TIMEOUT_MS - idle);
  send_wait_ns += rpl_mono_ns() - t0;
  if (ready)
    return RPL_OK;
  log_warn("sending with %s failed: the peer took nothing for %d s", c->peer, CONN_IO_TIMEOUT_MS / 1000);
  return rpl_fail(RPL_E_TIMEOUT, "sending with %s: the peer took nothing for %d s", c->peer, CONN_IO_TIMEOUT_MS / 1000);
}

/* The caller holds send_lock. Gives up when the peer took nothing for CONN_IO_TIMEOUT_MS. */
static rpl_err write_all(struct conn *c, const void *data, size_t len)
{
  const uint8_t *p = data;
  uint64_t progress_ms = rpl_mono_ms();
  while (len) {
    short want = POLLOUT;
    int n = write_some(c, p, len, &want);
    if (n < 0)
      return RPL_E_TLS;
    if (n > 0) {
      p += n;
      len -= (size_t)n;
      progress_ms = rpl_mono_ms();
      continue;
    }
    rpl_err err = wait_for_room(c, want, progress_ms);
    if (err)
      return err;
  }
  return RPL_OK;
}

/* TLS writes one record (16 KiB at most) per send() and the socket has TCP_NODELAY: each would be
 * a packet of its own. A large frame is corked while it is written, so that the kernel sends full
 * segments (64 KiB on loopback) and the peer's kernel receives and acknowledges a quarter as many;
 * uncorking at its end sends the tail at once (bench/bench_conn measures it). Small frames
 * (heartbeats, ACKs) go out as they are: two more system calls would cost more than they save. A
 * refused setsockopt only loses the saving. */
#define CONN_CORK_MIN (64u << 10)

/* OpenSSL hands each record to its write BIO on its own: written straight to the socket, a 1 MiB
 * EXTENT was 65 send() calls, each paying a system call's fixed cost (bench/bench_conn measures it).
 * The write BIO is a buffer, flushed at the end of every frame (nothing waits in it between frames),
 * that grows from OpenSSL's 4 KiB to this at a connection's first large frame: 16 records per
 * send(). An appliance's sessions, which send small frames, keep 4 KiB each. */
#define CONN_WRITE_BUFFER (256u << 10)

/* The caller holds send_lock, between frames: the buffer is empty. A refusal only loses the saving. */
static void grow_write_buffer(struct conn *c, size_t frame_len)
{
  if (c->write_buffer_grown || frame_len < CONN_CORK_MIN)
    return;
  pthread_mutex_lock(&c->ssl_lock);
  BIO *w = SSL_get_wbio(c->ssl);
  if (BIO_wpending(w) == 0 && BIO_set_write_buffer_size(w, CONN_WRITE_BUFFER) == 1)
    c->write_buffer_grown = true;
  ERR_clear_error();
  pthread_mutex_unlock(&c->ssl_lock);
}

/* Sends what the write buffer holds. The caller holds send_lock; gives up as write_all does. */
static rpl_err flush_all(struct conn *c)
{
  uint64_t progress_ms = rpl_mono_ms();
  for (;;) {
    pthread_mutex_lock(&c->ssl_lock);
    BIO *w = SSL_get_wbio(c->ssl);
    size_t before = BIO_wpending(w);
    ERR_clear_error();
    errno = 0;
    int r = BIO_flush(w);
    int saved_errno = errno;
    bool retry = r <= 0 && BIO_should_retry(w);
    size_t after = BIO_wpending(w);
    ERR_clear_error();
    pthread_mutex_unlock(&c->ssl_lock);
    if (r > 0)
      return RPL_OK;
    if (!retry) {
      const char *why = saved_errno ? strerror(saved_errno) : "connection closed by the peer";
      log_warn("sending with %s failed: %s", c->peer, why);
      return rpl_fail(RPL_E_TLS, "sending with %s failed: %s", c->peer, why);
    }
    if (after < before)
      progress_ms = rpl_mono_ms();
    rpl_err err = wait_for_room(c, POLLOUT, progress_ms);
    if (err)
      return err;
  }
}

/* A frame of len bytes begins (send_lock held, the write buffer empty): a large one grows the write
 * buffer and is corked. Whether the socket was corked, for end_frame. */
static bool begin_frame(struct conn *c, size_t len)
{
  int on = 1;
  grow_write_buffer(c, len);
  return len >= CONN_CORK_MIN && setsockopt(c->fd, IPPROTO_TCP, TCP_CORK, &on, sizeof on) == 0;
}

/* The frame's bytes are all written (err: or not): what the buffer holds goes out, then the socket
 * is uncorked. */
static rpl_err end_frame(struct conn *c, bool corked, rpl_err err)
{
  int off = 0;
  if (!err)
    err = flush_all(c);
  if (corked)
    (void)setsockopt(c->fd, IPPROTO_TCP, TCP_CORK, &off, sizeof off);
  return err;
}

rpl_err conn_send(struct conn *c, const struct proto_buf *frames)
{
  lock_send(c);
  bool corked = begin_frame(c, frames->len);
  rpl_err err = end_frame(c, corked, write_all(c, frames->data, frames->len));
  pthread_mutex_unlock(&c->send_lock);
  return err;
}

rpl_err conn_send_extent(struct conn *c, const struct proto_extent *m)
{
  uint8_t prefix[PROTO_EXTENT_PREFIX_SIZE];
  rpl_err err = proto_encode_extent_prefix(prefix, m);
  if (err)
    return err;
  lock_send(c); /* prefix and payload are one frame: nobody else's bytes between */
  bool corked = begin_frame(c, sizeof prefix + m->payload.len);
  err = write_all(c, prefix, sizeof prefix);
  if (!err && m->payload.len)
    err = write_all(c, m->payload.ptr, m->payload.len);
  err = end_frame(c, corked, err);
  pthread_mutex_unlock(&c->send_lock);
  return err;
}

int conn_pending(struct conn *c)
{
  pthread_mutex_lock(&c->ssl_lock);
  int pending = SSL_has_pending(c->ssl);
  pthread_mutex_unlock(&c->ssl_lock);
  return pending || c->dec.end > c->dec.start || c->splitting || (is_reader(c) && c->ahead_len);
}

/* One SSL_read under ssl_lock: bytes read (> 0), 0 to wait for the socket (*want says for what), -1
 * when the stream ended or broke (said in the log unless the peer closed it cleanly). */
static int read_some(struct conn *c, uint8_t *space, size_t avail, short *want)
{
  int chunk = avail > (1u << 30) ? 1 << 30 : (int)avail;
  pthread_mutex_lock(&c->ssl_lock);
  ERR_clear_error();
  int n = SSL_read(c->ssl, space, chunk);
  int saved_errno = errno;
  if (n <= 0) {
    int e = SSL_get_error(c->ssl, n);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ||
        (e == SSL_ERROR_SYSCALL && (saved_errno == EINTR || saved_errno == EAGAIN))) {
      *want = e == SSL_ERROR_WANT_WRITE ? POLLOUT : POLLIN; /* a non-application record needs more too */
      n = 0;
    } else {
      if (e != SSL_ERROR_ZERO_RETURN) {
        errno = saved_errno;
        (void)tls_error("receiving", c, n);
      }
      n = -1;
    }
    ERR_clear_error();
  }
  pthread_mutex_unlock(&c->ssl_lock);
  return n;
}

/* wait_socket, and a readable wake_fd (>= 0) ends the wait too: drained, then false (as a timeout). */
static bool wait_socket_or_wake(const struct conn *c, short events, uint64_t left_ms, int wake_fd)
{
  if (wake_fd < 0)
    return wait_socket(c, events, left_ms);
  struct pollfd p[2] = {{.fd = c->fd, .events = events}, {.fd = wake_fd, .events = POLLIN}};
  int r = poll(p, 2, left_ms > INT32_MAX ? INT32_MAX : (int)left_ms);
  if (r > 0 && (p[1].revents & POLLIN)) {
    uint64_t v;
    ssize_t n = read(wake_fd, &v, sizeof v);
    (void)n;
    return false;
  }
  return r != 0;
}

rpl_err conn_recv(struct conn *c, struct proto_frame *f, int timeout_ms) { return conn_recv_wakeable(c, f, timeout_ms, -1); }

void conn_set_extent_sink(struct conn *c, conn_extent_sink sink, void *arg, uint32_t min_length)
{
  c->sink = sink;
  c->sink_arg = arg;
  c->sink_min = min_length;
}

/* The next frame, or RPL_E_AGAIN with where its next bytes go (*space, up to *avail). */
static rpl_err next_frame(struct conn *c, struct proto_frame *f, uint8_t **space, size_t *avail)
{
  if (c->split_broken)
    return c->split_broken;
  struct proto_split *x = &c->split;
  if (c->splitting && x->have == x->m.payload.len) {
    c->splitting = false;
    return c->split_broken = proto_split_finish(x, f);
  }
  if (c->splitting) {
    *space = (uint8_t *)x->m.payload.ptr + x->have;
    *avail = x->m.payload.len - x->have;
    return RPL_E_AGAIN;
  }
  rpl_err err = proto_decoder_next(&c->dec, f);
  if (err != RPL_E_AGAIN) {
    c->sink_declined = false;
    return err;
  }
  if (c->sink && !c->sink_declined && proto_decoder_peek_extent(&c->dec, c->sink_min, x) == RPL_OK) {
    uint8_t *dst = c->sink(c->sink_arg, &x->m);
    c->sink_declined = dst == NULL;
    if (dst) {
      proto_decoder_split_extent(&c->dec, x, dst);
      c->splitting = true;
      return next_frame(c, f, space, avail);
    }
  }
  if ((err = proto_decoder_reserve(&c->dec, space, avail)))
    return err;
  return RPL_E_AGAIN;
}

/* n bytes arrived where next_frame said. */
static void received(struct conn *c, size_t n)
{
  if (c->splitting)
    c->split.have += (uint32_t)n;
  else
    proto_decoder_commit(&c->dec, n);
}

rpl_err conn_recv_wakeable(struct conn *c, struct proto_frame *f, int timeout_ms, int wake_fd)
{
  if (timeout_ms < 0)
    timeout_ms = CONN_IO_TIMEOUT_MS;
  uint64_t t0 = rpl_mono_ms();
  for (;;) {
    uint8_t *space;
    size_t avail;
    rpl_err err = next_frame(c, f, &space, &avail);
    if (err != RPL_E_AGAIN)
      return err;
    if (c->ahead_len) { /* what the reader's sends read meanwhile comes first */
      size_t piece = c->ahead_len < avail ? c->ahead_len : avail;
      memcpy(space, c->ahead, piece);
      received(c, piece);
      memmove(c->ahead, c->ahead + piece, c->ahead_len - piece);
      c->ahead_len -= piece;
      continue;
    }
    short want = POLLIN;
    int n = read_some(c, space, avail, &want);
    if (n < 0)
      return RPL_E_IO;
    if (n > 0) {
      received(c, (size_t)n);
      continue;
    }
    uint64_t spent = rpl_mono_ms() - t0;
    if (spent >= (uint64_t)timeout_ms || !wait_socket_or_wake(c, want, (uint64_t)timeout_ms - spent, wake_fd))
      return RPL_E_TIMEOUT;
  }
}
