/* bench_sessions.c - the appliance's session model alone: a thread per TLS connection against an epoll event loop, same frames, same run. */
/*
 * What it measures. One TLS server (TLS 1.3, mutual authentication: the project's own channel,
 * proto/channel.c, with an authority, server and client certificates made in memory at start) in
 * one of two models, over the project's framing (proto/proto.c encode and streaming decode):
 *
 *   thread  a thread per connection (1 MiB stack), blocking reads and writes through proto/conn.c,
 *           conn_accept, then conn_recv with the appliance's 50 ms poll (POLL_MS, the session's
 *           loop in appliance/session.c) and conn_send of the answer: what the appliance does.
 *   epoll   one event-loop thread (--loops, 0: one per core) with every connection's socket and
 *           SSL nonblocking: handshake, reads into the same decoder, answers queued and written
 *           as the socket takes them.
 *
 * The client is this program's parent process (the server is a child running a fresh image of it, so that its
 * getrusage is the server's alone), itself one epoll loop of nonblocking connections, the same for
 * both models. It opens N connections (at most --window handshakes under way), each sends one
 * HEARTBEAT and waits for its answer (accept + handshake time for all N ends when the last answer
 * came); then for --seconds it sends HEARTBEAT frames at --rate per second in all, round robin
 * over the connections, plus a bulk stream of 1 MiB EXTENT frames at --bulk-mbs MB/s in all over
 * --bulk-conns connections. The server answers each HEARTBEAT with one (its time echoed: the round
 * trip) and each EXTENT with an ACK. After the drain the client checks that every connection was
 * served and every frame answered.
 *
 * Per run (a fresh server process): accept+handshake ms for all N and the server CPU seconds they
 * took; the server's CPU seconds, voluntary and involuntary context switches during the load; its
 * peak RSS; its threads; heartbeat round trip p50/p99 under the bulk load. Runs are interleaved
 * (thread, epoll, thread, epoll, ...) for --rounds rounds at each N; printed: each round, then per
 * figure the median [min..max] of each model (over the runs that served everything; how many did is
 * said) and the ratio epoll/thread of the medians. Last line:
 * `summary: key=value ...`. Exit status 1 when a run did not serve every connection and frame.
 *
 *   build/bench/bench_sessions                              (N = 100, 1000, 5000; 3 rounds)
 *   build/bench/bench_sessions --counts 100 --rounds 5 --seconds 10 --bulk-mbs 100
 *   options: --counts N[,N...] --rounds R --seconds S --rate HEARTBEATS_PER_S --bulk-mbs MB_S
 *            --bulk-conns K --loops L --thread-poll-ms MS (0: block, as without the appliance's
 *            poll) --window W --models thread,epoll --pin 0|1 (default 1 on 2 cores or more: the
 *            server on every core but the last, the client alone on the last)
 * RLIMIT_NOFILE is raised to its hard limit; an N that does not fit is skipped and said so.
 * Results and the decision they led to: docs/architecture.md, "Sessions: threads or an event loop".
 */
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench_sessions.h"
#include "channel.h"
#include "conn.h"
#include "proto.h"
#include "rpl_clock.h"
#include "rpl_log.h"

static const char *const model_name[MODELS] = {"thread", "epoll"};

struct options {
  int counts[MAX_COUNTS], ncounts, rounds, bulk_conns, loops, thread_poll_ms, window;
  bool pin; /* the server on every core but the last, the client on the last */
  double seconds, rate, bulk_mbs;
  bool model_on[MODELS];
};

/* ---- the client (this process) ------------------------------------------------------------- */

struct client {
  int epfd, n, started, inflight, established, failed, port;
  SSL_CTX *ctx;
  struct nb_conn *conns;
  uint64_t hb_sent, hb_answered, ext_sent, ext_acked, next_small, next_bulk;
  int bulk_conns;
  const uint8_t *extent_frame;
  size_t extent_frame_len;
  uint64_t *rtt_ns;
  size_t nrtt;
};

static int client_on_frame(struct nb_conn *c, const struct proto_frame *f, void *arg)
{
  struct client *cl = arg;
  if (f->type == PROTO_HEARTBEAT) {
    struct proto_heartbeat hb;
    if (proto_decode_heartbeat(f, &hb))
      return -1;
    cl->hb_answered++;
    if (!c->first_answered) {
      c->first_answered = true;
      cl->established++, cl->inflight--;
    } else if (cl->nrtt < RTT_CAP) {
      cl->rtt_ns[cl->nrtt++] = rpl_mono_ns() - hb.time_ns;
    }
    return 0;
  }
  if (f->type == PROTO_ACK) {
    cl->ext_acked++;
    return 0;
  }
  return -1;
}

static int client_send_heartbeat(struct client *cl, struct nb_conn *c, uint64_t sequence)
{
  uint8_t frame[PROTO_HEADER_SIZE + 64];
  struct proto_buf b = {.data = frame, .alloc = sizeof frame, .cap = sizeof frame};
  struct proto_heartbeat hb = {.sequence = sequence, .time_ns = rpl_mono_ns()};
  if (proto_encode_heartbeat(&b, &hb) || out_append(&c->out, b.data, b.len))
    return -1;
  cl->hb_sent++;
  return nb_flush(c);
}

/* One event on a client connection. -1: it failed. */
static int client_event(struct client *cl, struct nb_conn *c)
{
  if (c->connecting) {
    int err = 0;
    socklen_t el = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el) || err)
      return -1;
    c->connecting = false;
  }
  if (!c->open) {
    int h = nb_handshake(c);
    if (h <= 0)
      return h;
    if (client_send_heartbeat(cl, c, 0))
      return -1;
  }
  if (nb_read(c, client_on_frame, cl))
    return -1;
  return nb_flush(c);
}

static int client_start(struct client *cl, int i)
{
  struct nb_conn *c = &cl->conns[i];
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -1;
  socket_tune(fd, i < cl->bulk_conns);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)cl->port),
                           .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if ((connect(fd, (struct sockaddr *)&sa, sizeof sa) && errno != EINPROGRESS) || nb_init(c, fd, cl->ctx, false)) {
    if (c->fd == fd)
      nb_close(cl->epfd, c);
    else
      close(fd);
    c->closed = true;
    return -1;
  }
  c->connecting = true;
  c->bulk = i < cl->bulk_conns;
  c->events = EPOLLIN | EPOLLOUT;
  struct epoll_event e = {.events = c->events, .data.ptr = c};
  return epoll_ctl(cl->epfd, EPOLL_CTL_ADD, fd, &e);
}

/* Waits up to timeout_ms for events and handles them. */
static void client_poll(struct client *cl, int timeout_ms)
{
  struct epoll_event evs[EPOLL_BATCH];
  int n = epoll_wait(cl->epfd, evs, EPOLL_BATCH, timeout_ms);
  for (int i = 0; i < n; i++) {
    struct nb_conn *c = evs[i].data.ptr;
    if (c->closed)
      continue;
    if (client_event(cl, c)) {
      if (!c->first_answered)
        cl->inflight--;
      cl->failed++;
      nb_close(cl->epfd, c);
      continue;
    }
    nb_arm(cl->epfd, c);
  }
}

/* Opens all connections, each answered once. Returns the milliseconds it took, or -1. */
static double client_connect_all(struct client *cl, int window)
{
  uint64_t t0 = rpl_mono_ns();
  while (cl->established + cl->failed < cl->n) {
    if ((rpl_mono_ns() - t0) / 1000000u > CONNECT_LIMIT_MS)
      return -1;
    while (cl->started < cl->n && cl->inflight < window) {
      cl->inflight++;
      if (client_start(cl, cl->started++)) {
        cl->inflight--;
        cl->failed++;
      }
    }
    client_poll(cl, 100);
  }
  return cl->failed ? -1 : (double)(rpl_mono_ns() - t0) / 1e6;
}

/* The next open connection of the kind asked for (bulk or small), round robin; NULL: none. */
static struct nb_conn *client_pick(struct client *cl, bool bulk)
{
  int first = bulk ? 0 : cl->bulk_conns, count = bulk ? cl->bulk_conns : cl->n - cl->bulk_conns;
  uint64_t *next = bulk ? &cl->next_bulk : &cl->next_small;
  for (int tries = 0; tries < count; tries++) {
    struct nb_conn *c = &cl->conns[first + (int)((*next)++ % (uint64_t)count)];
    if (!c->closed && (!bulk || c->out.off == c->out.len))
      return c;
  }
  return NULL;
}

/* The load: heartbeats at rate per second and extents at bulk_mbs, for seconds; then the drain. */
static void client_load(struct client *cl, const struct options *o, double *bulk_mbs_done)
{
  uint64_t t0 = rpl_mono_ns(), hb0 = cl->hb_sent;
  double extents_per_s = o->bulk_mbs * 1e6 / EXTENT_BYTES;
  for (;;) {
    double el = (double)(rpl_mono_ns() - t0) / 1e9;
    if (el >= o->seconds)
      break;
    while ((double)(cl->hb_sent - hb0) < el * o->rate) {
      struct nb_conn *c = client_pick(cl, false);
      if (!c || client_send_heartbeat(cl, c, cl->hb_sent + 1))
        break;
      nb_arm(cl->epfd, c);
    }
    while (cl->bulk_conns && (double)cl->ext_sent < el * extents_per_s) {
      struct nb_conn *c = client_pick(cl, true);
      if (!c || out_append(&c->out, cl->extent_frame, cl->extent_frame_len))
        break; /* every bulk connection still writing its last: the stream runs behind */
      cl->ext_sent++;
      if (nb_flush(c) == 0)
        nb_arm(cl->epfd, c);
    }
    client_poll(cl, 1);
  }
  *bulk_mbs_done = (double)cl->ext_sent * EXTENT_BYTES / 1e6 / o->seconds;
  uint64_t d0 = rpl_mono_ns();
  while ((cl->hb_answered < cl->hb_sent || cl->ext_acked < cl->ext_sent) &&
         (rpl_mono_ns() - d0) / 1000000u < DRAIN_LIMIT_MS)
    client_poll(cl, 10);
}

/* ---- runs, figures, output ------------------------------------------------------------------ */

struct result {
  bool served;
  double fig[FIGURES];
  char note[200];
};

enum figure { F_HS_MS, F_HS_CPU, F_CPU, F_RSS, F_THREADS, F_VCSW, F_IVCSW, F_P50, F_P99 };
static const char *const fig_name[FIGURES] = {"hs_ms",   "hs_cpu_s", "cpu_s",  "rss_mib", "threads",
                                              "vcsw",    "ivcsw",    "p50_us", "p99_us"};
static const char *const fig_what[FIGURES] = {
    "accept+handshake of all N, ms", "server CPU during them, s", "server CPU during the load, s",
    "server peak RSS, MiB",          "server threads",            "voluntary ctx switches (load)",
    "involuntary ctx switches (load)", "heartbeat round trip p50, us", "heartbeat round trip p99, us"};

static int cmp_u64(const void *a, const void *b)
{
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static int cmp_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double pct_us(const uint64_t *v, size_t n, double p)
{
  if (!n)
    return -1;
  size_t i = (size_t)(p * (double)(n - 1) + 0.5);
  return (double)v[i] / 1e3;
}

static void client_free(struct client *cl)
{
  for (int i = 0; i < cl->started; i++)
    nb_close(cl->epfd, &cl->conns[i]);
  close(cl->epfd);
  free(cl->conns);
  free(cl->rtt_ns);
}

/* Figures of one run from the server's stats before the handshakes (a), after them (b), at the end (c). */
static void run_figures(struct result *r, const struct server_stats *a, const struct server_stats *b,
                        const struct server_stats *c, struct client *cl)
{
  r->fig[F_HS_CPU] = b->cpu_s - a->cpu_s;
  r->fig[F_CPU] = c->cpu_s - b->cpu_s;
  r->fig[F_RSS] = (double)c->maxrss_kib / 1024.0;
  r->fig[F_THREADS] = (double)(b->threads > c->threads ? b->threads : c->threads);
  r->fig[F_VCSW] = (double)(c->vcsw - b->vcsw);
  r->fig[F_IVCSW] = (double)(c->ivcsw - b->ivcsw);
  qsort(cl->rtt_ns, cl->nrtt, sizeof *cl->rtt_ns, cmp_u64);
  r->fig[F_P50] = pct_us(cl->rtt_ns, cl->nrtt, 0.50);
  r->fig[F_P99] = pct_us(cl->rtt_ns, cl->nrtt, 0.99);
}

static void run_one(enum model model, int n, const struct options *o, const struct certs *k, SSL_CTX *cctx,
                    const uint8_t *extent_frame, size_t extent_len, struct result *r)
{
  memset(r, 0, sizeof *r);
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t sl = sizeof sa;
  if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof sa) || listen(lfd, LISTEN_BACKLOG) ||
      getsockname(lfd, (struct sockaddr *)&sa, &sl)) {
    snprintf(r->note, sizeof r->note, "listener: %s", strerror(errno));
    return;
  }
  struct server_proc sp;
  struct client cl = {.n = n, .ctx = cctx, .port = ntohs(sa.sin_port), .extent_frame = extent_frame,
                      .extent_frame_len = extent_len, .epfd = epoll_create1(EPOLL_CLOEXEC),
                      .conns = calloc((size_t)n, sizeof(struct nb_conn)), .rtt_ns = malloc(RTT_CAP * sizeof(uint64_t)),
                      .bulk_conns = o->bulk_mbs > 0 ? o->bulk_conns : 0};
  struct server_stats a, b, c;
  double bulk_done = 0;
  if (!cl.conns || !cl.rtt_ns || cl.epfd < 0 || server_start(model, o->loops, o->thread_poll_ms, o->pin, k, lfd, &sp)) {
    snprintf(r->note, sizeof r->note, "cannot start: %s", strerror(errno));
    close(lfd);
    return;
  }
  close(lfd);
  int asked = server_ask(&sp, &a);
  r->fig[F_HS_MS] = client_connect_all(&cl, o->window);
  asked |= server_ask(&sp, &b);
  if (r->fig[F_HS_MS] >= 0)
    client_load(&cl, o, &bulk_done);
  asked |= server_ask(&sp, &c);
  run_figures(r, &a, &b, &c, &cl);
  r->served = !asked && r->fig[F_HS_MS] >= 0 && cl.established == n && cl.hb_answered == cl.hb_sent &&
              cl.ext_acked == cl.ext_sent && c.failures == 0 && c.handshakes == (uint64_t)n &&
              c.heartbeats == cl.hb_sent && c.extents == cl.ext_sent;
  snprintf(r->note, sizeof r->note,
           "%s: %d/%d connections, %" PRIu64 "/%" PRIu64 " heartbeats, %" PRIu64 "/%" PRIu64
           " extents answered (%.0f MB/s), server failures %" PRIu64,
           r->served ? "served" : "NOT SERVED", cl.established, n, cl.hb_answered, cl.hb_sent, cl.ext_acked,
           cl.ext_sent, bulk_done, c.failures);
  client_free(&cl);
  server_stop(&sp);
}

static double median_of(double *v, int n, double *lo, double *hi)
{
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  *lo = v[0], *hi = v[n - 1];
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Medians, spreads and ratios of one N; appends its summary keys to sum. */
static void report_count(int n, const struct options *o, struct result res[MODELS][MAX_ROUNDS], char *sum,
                         size_t sumsz)
{
  int served[MODELS] = {0};
  for (int m = 0; m < MODELS; m++)
    for (int r = 0; r < o->rounds; r++)
      served[m] += o->model_on[m] && res[m][r].served;
  printf("N=%d: figure (median [min..max] of the runs that served everything: thread %d, epoll %d of %d)\n", n,
         served[MODEL_THREAD], served[MODEL_EPOLL], o->rounds);
  size_t used = strlen(sum);
  snprintf(sum + used, sumsz - used, " n%d_thread_served=%d/%d n%d_epoll_served=%d/%d", n, served[MODEL_THREAD],
           o->rounds, n, served[MODEL_EPOLL], o->rounds);
  for (int f = 0; f < FIGURES; f++) {
    double med[MODELS] = {-1, -1}, lo[MODELS] = {0}, hi[MODELS] = {0};
    printf("  %-34s", fig_what[f]);
    for (int m = 0; m < MODELS; m++) {
      if (!o->model_on[m])
        continue;
      double v[MAX_ROUNDS];
      int k = 0;
      for (int r = 0; r < o->rounds; r++)
        if (res[m][r].served)
          v[k++] = res[m][r].fig[f];
      if (k)
        med[m] = median_of(v, k, &lo[m], &hi[m]);
      if (k)
        printf("  %s %10.3f [%.3f..%.3f]", model_name[m], med[m], lo[m], hi[m]);
      else
        printf("  %s %10s %*s", model_name[m], "none", 16, "");
    }
    double ratio = med[MODEL_THREAD] > 0 && med[MODEL_EPOLL] >= 0 ? med[MODEL_EPOLL] / med[MODEL_THREAD] : -1;
    if (ratio >= 0)
      printf("  epoll/thread %.3f", ratio);
    printf("\n");
    used = strlen(sum);
    if (f == F_HS_MS || f == F_HS_CPU || f == F_CPU || f == F_RSS || f == F_THREADS || f == F_P99)
      snprintf(sum + used, sumsz - used, " n%d_thread_%s=%.3f n%d_epoll_%s=%.3f n%d_%s_ratio=%.3f", n,
               fig_name[f], med[MODEL_THREAD], n, fig_name[f], med[MODEL_EPOLL], n, fig_name[f], ratio);
  }
}

static int parse_list(const char *arg, int *out, int max)
{
  int n = 0;
  char *copy = strdup(arg), *save = NULL;
  for (char *t = strtok_r(copy, ",", &save); t && n < max; t = strtok_r(NULL, ",", &save)) {
    char *end;
    long v = strtol(t, &end, 10);
    if (*end || v < 1 || v > MAX_COUNT) {
      n = -1;
      break;
    }
    out[n++] = (int)v;
  }
  free(copy);
  return n;
}

static double number(const char *opt, const char *arg, double lo, double hi)
{
  char *end;
  double v = strtod(arg ? arg : "", &end);
  if (!arg || *end || end == arg || v < lo || v > hi) {
    fprintf(stderr, "bench_sessions: %s takes a number from %g to %g\n", opt, lo, hi);
    exit(2);
  }
  return v;
}

static void parse_options(int argc, char **argv, struct options *o)
{
  *o = (struct options){.counts = {100, 1000, 5000}, .ncounts = 3, .rounds = 3, .seconds = 5, .rate = 2000,
                        .bulk_mbs = 50, .bulk_conns = 4, .loops = 1, .thread_poll_ms = APPLIANCE_POLL_MS,
                        .window = 256, .model_on = {true, true},
                        .pin = sysconf(_SC_NPROCESSORS_ONLN) >= 2};
  for (int i = 1; i < argc; i++) {
    const char *opt = argv[i], *arg = i + 1 < argc ? argv[i + 1] : NULL;
    i++;
    if (!strcmp(opt, "--counts")) {
      if (!arg || (o->ncounts = parse_list(arg, o->counts, MAX_COUNTS)) <= 0) {
        fprintf(stderr, "bench_sessions: --counts takes N[,N...], each 1..%d\n", MAX_COUNT);
        exit(2);
      }
    } else if (!strcmp(opt, "--models")) {
      o->model_on[MODEL_THREAD] = arg && strstr(arg, "thread");
      o->model_on[MODEL_EPOLL] = arg && strstr(arg, "epoll");
      if (!o->model_on[MODEL_THREAD] && !o->model_on[MODEL_EPOLL]) {
        fprintf(stderr, "bench_sessions: --models takes thread, epoll or thread,epoll\n");
        exit(2);
      }
    } else if (!strcmp(opt, "--rounds")) {
      o->rounds = (int)number(opt, arg, 1, MAX_ROUNDS);
    } else if (!strcmp(opt, "--seconds")) {
      o->seconds = number(opt, arg, 0.1, MAX_SECONDS);
    } else if (!strcmp(opt, "--rate")) {
      o->rate = number(opt, arg, 1, MAX_RATE);
    } else if (!strcmp(opt, "--bulk-mbs")) {
      o->bulk_mbs = number(opt, arg, 0, MAX_BULK_MBS);
    } else if (!strcmp(opt, "--bulk-conns")) {
      o->bulk_conns = (int)number(opt, arg, 1, MAX_COUNT);
    } else if (!strcmp(opt, "--loops")) {
      o->loops = (int)number(opt, arg, 0, MAX_LOOPS);
    } else if (!strcmp(opt, "--thread-poll-ms")) {
      o->thread_poll_ms = (int)number(opt, arg, 0, CONN_IO_TIMEOUT_MS);
    } else if (!strcmp(opt, "--pin")) {
      o->pin = number(opt, arg, 0, 1) != 0;
    } else if (!strcmp(opt, "--window")) {
      o->window = (int)number(opt, arg, 1, MAX_COUNT);
    } else {
      fprintf(stderr, "bench_sessions: unknown option '%s' (see the header of bench/bench_sessions.c)\n", opt);
      exit(2);
    }
  }
  if (o->loops == 0) {
    long cpus = sysconf(_SC_NPROCESSORS_ONLN) - (o->pin ? 1 : 0);
    o->loops = cpus < 1 ? 1 : cpus > MAX_LOOPS ? MAX_LOOPS : (int)cpus;
  }
}

/* The descriptors this process (and the server child) may open: raised to the hard limit. */
static rlim_t raise_nofile(void)
{
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl))
    return 1024;
  rl.rlim_cur = rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);
  getrlimit(RLIMIT_NOFILE, &rl);
  return rl.rlim_cur;
}

int main(int argc, char **argv)
{
  if (argc > 1 && !strcmp(argv[1], SERVE_OPTION))
    return server_exec_main(argc, argv);
  struct options o;
  parse_options(argc, argv, &o);
  log_init("bench_sessions", LOG_LVL_ERR);
  signal(SIGPIPE, SIG_IGN);
  rlim_t nofile = raise_nofile();
  if (o.pin)
    pin_to(false);
  struct certs k = {0};
  SSL_CTX *cctx = NULL;
  size_t extent_len = 0;
  uint8_t *extent = bench_extent_frame(&extent_len, NULL);
  if (!extent || bench_make_certs("bench_sessions", &k, &cctx))
    return 2;
  printf("bench_sessions: heartbeats %.0f/s in all, bulk %.0f MB/s of 1 MiB EXTENT frames on %d connections, "
         "%.1f s of load per run, %d rounds (thread, epoll interleaved); thread: %d ms poll, %u KiB stacks; "
         "epoll: %d loop thread(s); descriptors %llu; %ld cores%s\n",
         o.rate, o.bulk_mbs, o.bulk_mbs > 0 ? o.bulk_conns : 0, o.seconds, o.rounds, o.thread_poll_ms,
         SESSION_STACK >> 10, o.loops, (unsigned long long)nofile, sysconf(_SC_NPROCESSORS_ONLN),
         o.pin ? ", the server pinned to all but the last, the client to the last" : "");
  static struct result res[MODELS][MAX_ROUNDS];
  char summary[4096] = "";
  bool all_served = true;
  for (int ci = 0; ci < o.ncounts; ci++) {
    int n = o.counts[ci];
    if ((rlim_t)n + FD_MARGIN > nofile) {
      printf("N=%d skipped: RLIMIT_NOFILE's hard limit is %llu (raise it: ulimit -Hn)\n", n,
             (unsigned long long)nofile);
      continue;
    }
    if (o.bulk_mbs > 0 && o.bulk_conns >= n) {
      printf("N=%d skipped: --bulk-conns %d leaves no connection for the heartbeats\n", n, o.bulk_conns);
      continue;
    }
    for (int r = 0; r < o.rounds; r++)
      for (int m = 0; m < MODELS; m++) {
        if (!o.model_on[m])
          continue;
        run_one((enum model)m, n, &o, &k, cctx, extent, extent_len, &res[m][r]);
        struct result *x = &res[m][r];
        all_served &= x->served;
        printf("round %d N=%d %-6s", r + 1, n, model_name[m]);
        for (int f = 0; f < FIGURES; f++)
          printf(" %s=%.3f", fig_name[f], x->fig[f]);
        printf("  %s\n", x->note);
        fflush(stdout);
      }
    report_count(n, &o, res, summary, sizeof summary);
  }
  printf("summary: served=%s%s\n", all_served ? "all" : "not_all", summary);
  return all_served ? 0 : 1;
}
