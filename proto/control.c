/* control.c - the control socket shared by both daemons: length-prefixed argument lists in,
 * exit status and text out, one thread per connection, hard caps both ways. */
#include "control.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "rpl_log.h"
#include "state_files.h"

static int full_io(int fd, void *buf, size_t len, int writing)
{
  uint8_t *p = buf;
  while (len) {
    ssize_t n = writing ? send(fd, p, len, MSG_NOSIGNAL) : recv(fd, p, len, 0);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return -1;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

static void put32(uint8_t *p, uint32_t v)
{
  for (int i = 0; i < 4; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get32(const uint8_t *p)
{
  return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static int socket_path(const char *state_dir, struct sockaddr_un *sa)
{
  memset(sa, 0, sizeof *sa);
  sa->sun_family = AF_UNIX;
  int n = snprintf(sa->sun_path, sizeof sa->sun_path, "%s/%s", state_dir, STATE_CONTROL_SOCKET);
  return n > 0 && (size_t)n < sizeof sa->sun_path ? 0 : -1;
}

/* ---- client ------------------------------------------------------------------------------- */

rpl_err control_call(const char *state_dir, int argc, const char *const *argv, int *exit_status, char **reply)
{
  *reply = NULL;
  *exit_status = 1;
  struct sockaddr_un sa;
  if (socket_path(state_dir, &sa) != 0 || argc < 1 || argc > CONTROL_MAX_ARGS)
    return RPL_E_INVALID_ARGUMENT;
  size_t len = 0;
  for (int i = 0; i < argc; i++)
    len += strlen(argv[i]) + 1;
  if (len > CONTROL_MAX_REQUEST)
    return RPL_E_LIMIT;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return RPL_E_IO;
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    int e = errno;
    close(fd);
    return e == ENOENT || e == ECONNREFUSED ? RPL_E_NO_DAEMON : e == EACCES ? RPL_E_PERMISSION : RPL_E_IO;
  }
  uint8_t *req = malloc(4 + len);
  if (!req) {
    close(fd);
    return RPL_E_NOMEM;
  }
  put32(req, (uint32_t)len);
  size_t o = 4;
  for (int i = 0; i < argc; i++) {
    size_t l = strlen(argv[i]) + 1;
    memcpy(req + o, argv[i], l);
    o += l;
  }
  uint8_t head[8];
  rpl_err err = RPL_OK;
  if (full_io(fd, req, 4 + len, 1) != 0 || full_io(fd, head, 8, 0) != 0) {
    err = RPL_E_NO_DAEMON; /* it went away while we talked */
  } else {
    uint32_t n = get32(head + 4);
    if (n > CONTROL_MAX_REPLY + 256) {
      err = RPL_E_LIMIT;
    } else if (!(*reply = malloc((size_t)n + 1))) {
      err = RPL_E_NOMEM;
    } else if (full_io(fd, *reply, n, 0) != 0) {
      err = RPL_E_NO_DAEMON;
    } else {
      (*reply)[n] = '\0';
      *exit_status = (int)get32(head);
    }
  }
  if (err) {
    free(*reply);
    *reply = NULL;
  }
  free(req);
  close(fd);
  return err;
}

/* ---- server ------------------------------------------------------------------------------- */

void control_printf(struct control_reply *r, const char *fmt, ...)
{
  if (r->truncated)
    return;
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0)
    return;
  if (r->len + (size_t)n + 1 > CONTROL_MAX_REPLY) {
    r->truncated = 1;
    return;
  }
  if (r->len + (size_t)n + 1 > r->alloc) {
    size_t a = r->alloc ? r->alloc : 1024;
    while (a < r->len + (size_t)n + 1)
      a *= 2;
    char *t = realloc(r->text, a);
    if (!t) {
      r->truncated = 1;
      return;
    }
    r->text = t;
    r->alloc = a;
  }
  va_start(ap, fmt);
  vsnprintf(r->text + r->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  r->len += (size_t)n;
}

int control_request_parse(char *req, size_t len, char *argv[CONTROL_MAX_ARGS + 1])
{
  if (len == 0 || len > CONTROL_MAX_REQUEST || req[len - 1] != '\0')
    return -1;
  int argc = 0;
  for (size_t o = 0; o < len; o += strlen(req + o) + 1) {
    if (argc == CONTROL_MAX_ARGS)
      return -1; /* more than any client sends: not cut to a different command */
    argv[argc++] = req + o;
  }
  argv[argc] = NULL;
  return argc;
}

struct control_server {
  int fd;
  int wake[2];              /* a byte here stops the accept loop */
  char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
  control_handler_fn handler;
  void *ctx;
  pthread_t thread;
  pthread_mutex_t lock;
  pthread_cond_t idle;
  unsigned active;          /* connections being served */
};

struct conn {
  struct control_server *s;
  int fd;
};

static void *serve_conn(void *arg)
{
  struct conn *c = arg;
  struct control_server *s = c->s;
  uint8_t head[4];
  char *req = NULL;
  char *argv[CONTROL_MAX_ARGS + 1];
  int argc = 0;
  struct control_reply out = {0};
  int status = 2;
  if (full_io(c->fd, head, 4, 0) == 0) {
    uint32_t len = get32(head);
    if (len == 0 || len > CONTROL_MAX_REQUEST || !(req = malloc(len)) || full_io(c->fd, req, len, 0) != 0 ||
        (argc = control_request_parse(req, len, argv)) < 0) {
      control_printf(&out, "malformed control request");
    } else {
      status = s->handler(s->ctx, argc, argv, &out);
    }
    uint8_t reply_head[8];
    const char *cut = out.truncated ? "\n(output truncated at the control socket's limit)\n" : "";
    size_t cutlen = strlen(cut);
    put32(reply_head, (uint32_t)status);
    put32(reply_head + 4, (uint32_t)(out.len + cutlen));
    if (full_io(c->fd, reply_head, 8, 1) == 0 && (out.len == 0 || full_io(c->fd, out.text, out.len, 1) == 0) && cutlen)
      (void)full_io(c->fd, (void *)cut, cutlen, 1);
  }
  free(out.text);
  free(req);
  close(c->fd);
  free(c);
  pthread_mutex_lock(&s->lock);
  if (--s->active == 0)
    pthread_cond_broadcast(&s->idle);
  pthread_mutex_unlock(&s->lock);
  return NULL;
}

static void *accept_loop(void *arg)
{
  struct control_server *s = arg;
  for (;;) {
    struct pollfd p[2] = {{.fd = s->fd, .events = POLLIN}, {.fd = s->wake[0], .events = POLLIN}};
    if (poll(p, 2, -1) < 0) {
      if (errno == EINTR)
        continue;
      break;
    }
    if (p[1].revents)
      break;
    int fd = accept4(s->fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0)
      continue;
    struct conn *c = malloc(sizeof *c);
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_mutex_lock(&s->lock);
    s->active++;
    pthread_mutex_unlock(&s->lock);
    if (!c || (c->s = s, c->fd = fd, pthread_create(&t, &attr, serve_conn, c)) != 0) {
      free(c);
      close(fd);
      pthread_mutex_lock(&s->lock);
      s->active--;
      pthread_mutex_unlock(&s->lock);
    }
    pthread_attr_destroy(&attr);
  }
  return NULL;
}

rpl_err control_server_start(const char *state_dir, control_handler_fn handler, void *ctx, struct control_server **out)
{
  *out = NULL;
  struct sockaddr_un sa;
  if (socket_path(state_dir, &sa) != 0)
    return RPL_E_INVALID_ARGUMENT;
  /* A socket file with a live daemon behind it is not ours to take. */
  int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof sa) == 0) {
    close(probe);
    log_err("another daemon already serves %s: stop it first", sa.sun_path);
    return RPL_E_EXISTS;
  }
  if (probe >= 0)
    close(probe);
  unlink(sa.sun_path);
  struct control_server *s = calloc(1, sizeof *s);
  if (!s)
    return RPL_E_NOMEM;
  s->handler = handler;
  s->ctx = ctx;
  memcpy(s->path, sa.sun_path, sizeof s->path);
  pthread_mutex_init(&s->lock, NULL);
  pthread_cond_init(&s->idle, NULL);
  s->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  mode_t old = umask(0077); /* the socket is born owner-only: commands are for its owner alone */
  int ok = s->fd >= 0 && bind(s->fd, (struct sockaddr *)&sa, sizeof sa) == 0 && listen(s->fd, 16) == 0 &&
           pipe2(s->wake, O_CLOEXEC) == 0;
  umask(old);
  if (!ok || pthread_create(&s->thread, NULL, accept_loop, s) != 0) {
    log_err("cannot serve the control socket %s: %s", sa.sun_path, strerror(errno));
    if (s->fd >= 0)
      close(s->fd);
    unlink(sa.sun_path);
    free(s);
    return RPL_E_IO;
  }
  *out = s;
  return RPL_OK;
}

void control_server_stop(struct control_server *s)
{
  if (!s)
    return;
  char c = 0;
  ssize_t w = write(s->wake[1], &c, 1);
  (void)w;
  pthread_join(s->thread, NULL);
  close(s->fd);
  unlink(s->path);
  pthread_mutex_lock(&s->lock);
  while (s->active)
    pthread_cond_wait(&s->idle, &s->lock);
  pthread_mutex_unlock(&s->lock);
  close(s->wake[0]);
  close(s->wake[1]);
  pthread_mutex_destroy(&s->lock);
  pthread_cond_destroy(&s->idle);
  free(s);
}
