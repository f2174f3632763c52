/* bench_sessions_server.c - bench_sessions' server, a child process: a thread per connection (proto/conn.c, as the appliance) or epoll event loops. */
#include <errno.h>
#include <fcntl.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_sessions.h"
#include "channel.h"
#include "conn.h"
#include "rpl_error.h"
#include "rpl_log.h"

static struct {
  enum model model;
  SSL_CTX *ctx;
  int listen_fd, poll_ms;
  atomic_uint_fast64_t handshakes, heartbeats, extents, failures;
} srv;

/* The answer to one frame, appended to out: HEARTBEAT echoed, EXTENT acknowledged. */
static rpl_err answer_frame(const struct proto_frame *f, struct proto_buf *out)
{
  rpl_err err;
  if (f->type == PROTO_HEARTBEAT) {
    struct proto_heartbeat hb;
    if ((err = proto_decode_heartbeat(f, &hb)))
      return err;
    atomic_fetch_add(&srv.heartbeats, 1);
    return proto_encode_heartbeat(out, &hb);
  }
  if (f->type == PROTO_EXTENT) {
    struct proto_extent x;
    if ((err = proto_decode_extent(f, &x)))
      return err;
    struct proto_ack ack = {.cycle = x.cycle};
    memcpy(ack.disk_id, x.disk_id, sizeof ack.disk_id);
    atomic_fetch_add(&srv.extents, 1);
    return proto_encode_ack(out, &ack);
  }
  return RPL_E_PROTO_UNEXPECTED;
}

/* Thread model: one connection's session, as the appliance's: blocking conn.c, a 50 ms poll. */
static void *session_thread(void *arg)
{
  struct conn *c;
  if (conn_accept(srv.ctx, (int)(intptr_t)arg, HANDSHAKE_LIMIT_MS, &c)) {
    atomic_fetch_add(&srv.failures, 1);
    return NULL;
  }
  atomic_fetch_add(&srv.handshakes, 1);
  struct proto_buf out = {.cap = PROTO_HEADER_SIZE + PROTO_MAX_STRING};
  for (;;) {
    struct proto_frame f;
    rpl_err err = conn_recv(c, &f, srv.poll_ms > 0 ? srv.poll_ms : -1);
    if (err == RPL_E_TIMEOUT)
      continue; /* the appliance looks at its orchestrator's work here */
    if (err)
      break; /* the client closed: the run is over */
    proto_buf_reset(&out);
    if (answer_frame(&f, &out) || conn_send(c, &out)) {
      atomic_fetch_add(&srv.failures, 1);
      break;
    }
  }
  proto_buf_free(&out);
  conn_close(c);
  return NULL;
}

static void *thread_acceptor(void *arg)
{
  for (;;) {
    int fd = accept4(srv.listen_fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE)
        poll(NULL, 0, 10);
      continue;
    }
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, SESSION_STACK);
    if (pthread_create(&t, &attr, session_thread, (void *)(intptr_t)fd) != 0) {
      close(fd);
      atomic_fetch_add(&srv.failures, 1);
    }
    pthread_attr_destroy(&attr);
  }
  return NULL;
}

static int server_on_frame(struct nb_conn *c, const struct proto_frame *f, void *arg)
{
  struct proto_buf *scratch = arg;
  proto_buf_reset(scratch);
  if (answer_frame(f, scratch) || out_append(&c->out, scratch->data, scratch->len)) {
    atomic_fetch_add(&srv.failures, 1);
    return -1;
  }
  return 0;
}

static void ev_accept(int epfd)
{
  for (;;) {
    int fd = accept4(srv.listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0)
      return; /* EAGAIN: another loop took it, or none left */
    socket_tune(fd, true);
    struct nb_conn *c = malloc(sizeof *c);
    if (!c || nb_init(c, fd, srv.ctx, true)) {
      if (c)
        nb_close(epfd, c);
      else
        close(fd);
      free(c);
      atomic_fetch_add(&srv.failures, 1);
      continue;
    }
    struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
    c->events = EPOLLIN;
    epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &e);
  }
}

/* One event on an event-loop connection. -1: it ended. */
static int ev_serve(struct nb_conn *c, struct proto_buf *scratch)
{
  if (!c->open) {
    int h = nb_handshake(c);
    if (h < 0)
      atomic_fetch_add(&srv.failures, 1);
    if (h <= 0)
      return h;
    atomic_fetch_add(&srv.handshakes, 1);
  }
  if (nb_read(c, server_on_frame, scratch))
    return -1;
  return nb_flush(c);
}

/* Event model: one loop thread; every loop watches the listener (EPOLLEXCLUSIVE wakes one). */
static void *ev_loop(void *arg)
{
  int epfd = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event le = {.events = EPOLLIN | EPOLLEXCLUSIVE, .data.ptr = NULL};
  if (epfd < 0 || epoll_ctl(epfd, EPOLL_CTL_ADD, srv.listen_fd, &le)) {
    perror("bench_sessions: epoll");
    _exit(2);
  }
  struct proto_buf scratch = {.cap = PROTO_HEADER_SIZE + PROTO_MAX_STRING};
  struct epoll_event evs[EPOLL_BATCH];
  for (;;) {
    int n = epoll_wait(epfd, evs, EPOLL_BATCH, -1);
    for (int i = 0; i < n; i++) {
      struct nb_conn *c = evs[i].data.ptr;
      if (!c) {
        ev_accept(epfd);
        continue;
      }
      if (ev_serve(c, &scratch)) {
        nb_close(epfd, c);
        free(c);
        continue;
      }
      nb_arm(epfd, c);
    }
  }
  return NULL;
}

/* A "Name: N kB"-style number of /proc/self/status (Threads, VmHWM); -1 when absent. */
static long self_status(const char *name)
{
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long n = -1;
  size_t nl = strlen(name);
  while (f && fgets(line, sizeof line, f))
    if (!strncmp(line, name, nl) && line[nl] == ':') {
      n = strtol(line + nl + 1, NULL, 10);
      break;
    }
  if (f)
    fclose(f);
  return n;
}

static void server_stats_now(struct server_stats *s)
{
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  s->cpu_s = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
             ru.ru_stime.tv_usec / 1e6;
  s->maxrss_kib = self_status("VmHWM"); /* this image's peak (ru_maxrss keeps the forked parent's) */
  s->vcsw = ru.ru_nvcsw, s->ivcsw = ru.ru_nivcsw;
  s->threads = self_status("Threads");
  s->handshakes = atomic_load(&srv.handshakes), s->heartbeats = atomic_load(&srv.heartbeats);
  s->extents = atomic_load(&srv.extents), s->failures = atomic_load(&srv.failures);
}

/* The child: serves in its model until its parent says 'Q' or goes; answers 'S' with its stats. */
static void server_main(enum model model, int loops, int poll_ms, const struct certs *k, int cmd_fd, int report_fd)
{
  srv.model = model, srv.poll_ms = poll_ms;
  if (chan_server_ctx(k->server_cert, k->server_key, k->ca, &srv.ctx)) {
    fprintf(stderr, "bench_sessions: server TLS context: %s\n", rpl_detail(RPL_E_TLS));
    _exit(2);
  }
  int flags = fcntl(srv.listen_fd, F_GETFL);
  fcntl(srv.listen_fd, F_SETFL, model == MODEL_EPOLL ? flags | O_NONBLOCK : flags & ~O_NONBLOCK);
  int threads = model == MODEL_EPOLL ? loops : 1;
  for (int i = 0; i < threads; i++) {
    pthread_t t;
    if (pthread_create(&t, NULL, model == MODEL_EPOLL ? ev_loop : thread_acceptor, NULL)) {
      fprintf(stderr, "bench_sessions: cannot start the server's threads\n");
      _exit(2);
    }
  }
  char cmd;
  while (read(cmd_fd, &cmd, 1) == 1 && cmd == 'S') {
    struct server_stats s;
    server_stats_now(&s);
    if (write(report_fd, &s, sizeof s) != (ssize_t)sizeof s)
      break;
  }
  _exit(0);
}

static int write_pem(int fd, const char *pem)
{
  uint32_t len = (uint32_t)strlen(pem);
  return write(fd, &len, sizeof len) == (ssize_t)sizeof len && write(fd, pem, len) == (ssize_t)len ? 0 : -1;
}

static char *read_pem(int fd)
{
  uint32_t len;
  if (read(fd, &len, sizeof len) != (ssize_t)sizeof len || len > PROTO_MAX_PEM)
    return NULL;
  char *pem = calloc(1, (size_t)len + 1);
  size_t got = 0;
  while (pem && got < len) {
    ssize_t n = read(fd, pem + got, len - got);
    if (n <= 0) {
      free(pem);
      return NULL;
    }
    got += (size_t)n;
  }
  return pem;
}

/* The server runs in a fresh image of this program (exec), so that its memory is its own: a forked
 * copy of the client would count the client's pages in its resident set. */
int server_start(enum model model, int loops, int poll_ms, bool pin, const struct certs *k, int listen_fd,
                 struct server_proc *sp)
{
  int to[2], from[2];
  if (pipe2(to, O_CLOEXEC) || pipe2(from, O_CLOEXEC))
    return -1;
  fflush(NULL);
  sp->pid = fork();
  if (sp->pid < 0)
    return -1;
  if (sp->pid == 0) {
    char arg[5][16];
    int keep[3] = {listen_fd, to[0], from[1]};
    for (int i = 0; i < 3; i++)
      fcntl(keep[i], F_SETFD, 0);
    snprintf(arg[0], sizeof arg[0], "%d", (int)model), snprintf(arg[1], sizeof arg[1], "%d", loops);
    snprintf(arg[2], sizeof arg[2], "%d", poll_ms), snprintf(arg[3], sizeof arg[3], "%d", listen_fd);
    snprintf(arg[4], sizeof arg[4], "%d,%d", to[0], from[1]);
    if (pin)
      pin_to(true);
    execl("/proc/self/exe", "bench_sessions", SERVE_OPTION, arg[0], arg[1], arg[2], arg[3], arg[4], (char *)NULL);
    perror("bench_sessions: exec of the server");
    _exit(2);
  }
  close(to[0]), close(from[1]);
  sp->cmd_fd = to[1], sp->report_fd = from[0];
  if (write_pem(sp->cmd_fd, k->ca) || write_pem(sp->cmd_fd, k->server_cert) || write_pem(sp->cmd_fd, k->server_key))
    return -1;
  return 0;
}

int server_exec_main(int argc, char **argv)
{
  int model, loops, poll_ms, cmd_fd, report_fd;
  if (argc != 7 || sscanf(argv[2], "%d", &model) != 1 || model < 0 || model >= MODELS ||
      sscanf(argv[3], "%d", &loops) != 1 || sscanf(argv[4], "%d", &poll_ms) != 1 ||
      sscanf(argv[5], "%d", &srv.listen_fd) != 1 || sscanf(argv[6], "%d,%d", &cmd_fd, &report_fd) != 2) {
    fprintf(stderr, "bench_sessions: %s is for its own use\n", SERVE_OPTION);
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  log_init("bench_sessions", LOG_LVL_ERR);
  struct certs k = {0};
  if (!(k.ca = read_pem(cmd_fd)) || !(k.server_cert = read_pem(cmd_fd)) || !(k.server_key = read_pem(cmd_fd)))
    return 2;
  server_main((enum model)model, loops, poll_ms, &k, cmd_fd, report_fd);
  return 0;
}

int server_ask(const struct server_proc *sp, struct server_stats *s)
{
  char cmd = 'S';
  if (write(sp->cmd_fd, &cmd, 1) != 1)
    return -1;
  size_t got = 0;
  while (got < sizeof *s) {
    ssize_t n = read(sp->report_fd, (char *)s + got, sizeof *s - got);
    if (n <= 0)
      return -1;
    got += (size_t)n;
  }
  return 0;
}

void server_stop(struct server_proc *sp)
{
  char cmd = 'Q';
  if (write(sp->cmd_fd, &cmd, 1) != 1)
    kill(sp->pid, SIGKILL);
  close(sp->cmd_fd), close(sp->report_fd);
  waitpid(sp->pid, NULL, 0);
}
