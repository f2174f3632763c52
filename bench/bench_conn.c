/* bench_conn.c - CPU per GiB of a bulk stream of 1 MiB EXTENT frames over loopback: proto/conn.c
 * (ours) against OpenSSL's defaults on the same TLS contexts (peer) and plain TCP (limit), same run.
 *
 *   build/bench/bench_conn [GIB] [ROUNDS]        (defaults: 1 1; GIB from 1 to 64, ROUNDS 1 to 25)
 *
 * Each round runs the three in turn (order rotating), a fresh connection each: the sender is this
 * process, the receiver a child; each measures its own thread's CPU (RUSAGE_THREAD) from the first
 * byte to the last. Ours sends with conn_send_extent and receives with conn_recv, as the agent and
 * the appliance do; the peer writes the same encoded frames with SSL_write and reads them with
 * SSL_read into a 1 MiB buffer, blocking sockets, nothing set beyond the contexts (proto/channel.c);
 * the limit writes and reads them with write() and read() (no TLS: the kernel's copies alone). Prints
 * each round, then medians, spreads and the ratios ours/peer and ours/limit of CPU per GiB (sender
 * plus receiver; lower is better for ours). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_tls.h"
#include "channel.h"
#include "conn.h"
#include "proto.h"
#include "rpl_clock.h"
#include "rpl_log.h"

#define EXTENT_BYTES BENCH_EXTENT_BYTES
#define MAX_GIB 64
#define MAX_ROUNDS 25
#define HANDSHAKE_MS 10000
#define SOCKET_BUFFER (4 << 20) /* conn.c's SO_SNDBUF/SO_RCVBUF: the other two get the same */

enum mode { MODE_OURS, MODE_PEER, MODE_LIMIT, MODES };
static const char *const mode_name[MODES] = {"ours (conn.c)", "peer (OpenSSL defaults)", "limit (plain TCP)"};

struct side {
  double cpu_s, wall_s;
};

static double mono_s(void) { return rpl_mono_ns() / 1e9; }

static double thread_cpu_s(void)
{
  struct rusage ru;
  getrusage(RUSAGE_THREAD, &ru);
  return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void tune(int fd)
{
  int one = 1, buf = SOCKET_BUFFER;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
}

static int full_write(int fd, const uint8_t *p, size_t len)
{
  while (len) {
    ssize_t n = write(fd, p, len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return -1;
    p += n, len -= (size_t)n;
  }
  return 0;
}

/* The receiver (a child process): takes one connection in `mode`, reads `frames` frames, writes
 * its struct side to report_fd. Exit status 0 when every frame came whole. */
static int receive(enum mode mode, int listener, uint64_t frames, size_t frame_len, const struct certs *k, int report_fd)
{
  int fd = accept(listener, NULL, NULL);
  if (fd < 0)
    return 1;
  tune(fd);
  SSL_CTX *ctx = NULL;
  if (mode != MODE_LIMIT && chan_server_ctx(k->server_cert, k->server_key, k->ca, &ctx))
    return 1;
  struct side s = {0};
  int status = 1;
  if (mode == MODE_OURS) {
    struct conn *c = NULL;
    if (conn_accept(ctx, fd, HANDSHAKE_MS, &c))
      return 1;
    double t0 = mono_s(), c0 = thread_cpu_s();
    uint64_t got = 0;
    struct proto_frame f;
    while (got < frames && conn_recv(c, &f, -1) == RPL_OK)
      got += f.type == PROTO_EXTENT;
    s = (struct side){thread_cpu_s() - c0, mono_s() - t0};
    status = got == frames ? 0 : 1;
    conn_close(c);
  } else {
    uint8_t *buf = malloc(EXTENT_BYTES);
    SSL *ssl = mode == MODE_PEER ? SSL_new(ctx) : NULL;
    if (!buf || (mode == MODE_PEER && (!ssl || SSL_set_fd(ssl, fd) != 1 || SSL_accept(ssl) != 1)))
      return 1;
    uint64_t want = frames * frame_len, got = 0;
    double t0 = mono_s(), c0 = thread_cpu_s();
    while (got < want) {
      int n = mode == MODE_PEER ? SSL_read(ssl, buf, EXTENT_BYTES) : (int)read(fd, buf, EXTENT_BYTES);
      if (n <= 0)
        break;
      got += (uint64_t)n;
    }
    s = (struct side){thread_cpu_s() - c0, mono_s() - t0};
    status = got == want ? 0 : 1;
    if (ssl) {
      SSL_shutdown(ssl);
      SSL_free(ssl);
    }
    close(fd);
    free(buf);
  }
  SSL_CTX_free(ctx);
  if (write(report_fd, &s, sizeof s) != (ssize_t)sizeof s)
    return 1;
  return status;
}

/* The sender: connects to port in `mode` and sends `frames` copies of the frame. */
static int send_frames(enum mode mode, int port, uint64_t frames, const uint8_t *frame, size_t frame_len,
                       const struct proto_extent *m, SSL_CTX *cctx, struct side *out)
{
  char hostport[64];
  snprintf(hostport, sizeof hostport, "127.0.0.1:%d", port);
  if (mode == MODE_OURS) {
    struct conn *c = NULL;
    if (conn_connect(cctx, hostport, HANDSHAKE_MS, &c))
      return -1;
    double t0 = mono_s(), c0 = thread_cpu_s();
    int rc = 0;
    for (uint64_t i = 0; i < frames && !rc; i++)
      rc = conn_send_extent(c, m) ? -1 : 0;
    *out = (struct side){thread_cpu_s() - c0, mono_s() - t0};
    conn_close(c);
    return rc;
  }
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (fd < 0 || (tune(fd), connect(fd, (struct sockaddr *)&a, sizeof a)))
    return -1;
  SSL *ssl = NULL;
  if (mode == MODE_PEER && (!(ssl = SSL_new(cctx)) || SSL_set_fd(ssl, fd) != 1 || SSL_connect(ssl) != 1))
    return -1;
  double t0 = mono_s(), c0 = thread_cpu_s();
  int rc = 0;
  for (uint64_t i = 0; i < frames && !rc; i++)
    rc = mode == MODE_PEER ? (SSL_write(ssl, frame, (int)frame_len) == (int)frame_len ? 0 : -1)
                           : full_write(fd, frame, frame_len);
  *out = (struct side){thread_cpu_s() - c0, mono_s() - t0};
  if (ssl) {
    SSL_shutdown(ssl);
    SSL_free(ssl);
  }
  close(fd);
  return rc;
}

/* One run of `mode`: sender and receiver CPU-seconds, the receiver's wall time. */
static int run(enum mode mode, uint64_t frames, const uint8_t *frame, size_t frame_len, const struct proto_extent *m,
               const struct certs *k, SSL_CTX *cctx, struct side *snd, struct side *rcv)
{
  int listener = socket(AF_INET, SOCK_STREAM, 0), report[2];
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t alen = sizeof a;
  if (listener < 0 || bind(listener, (struct sockaddr *)&a, sizeof a) || listen(listener, 1) ||
      getsockname(listener, (struct sockaddr *)&a, &alen) || pipe(report))
    return -1;
  pid_t pid = fork();
  if (pid < 0)
    return -1;
  if (pid == 0) {
    close(report[0]);
    _exit(receive(mode, listener, frames, frame_len, k, report[1]));
  }
  close(report[1]);
  close(listener);
  int rc = send_frames(mode, ntohs(a.sin_port), frames, frame, frame_len, m, cctx, snd);
  ssize_t n = read(report[0], rcv, sizeof *rcv);
  close(report[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (rc || n != (ssize_t)sizeof *rcv || !WIFEXITED(status) || WEXITSTATUS(status)) {
    fprintf(stderr, "bench_conn: %s failed (sender %d, receiver status %d)\n", mode_name[mode], rc, status);
    return -1;
  }
  return 0;
}

static int cmp_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(const double *v, int n)
{
  double s[MAX_ROUNDS];
  memcpy(s, v, (size_t)n * sizeof *v);
  qsort(s, (size_t)n, sizeof *s, cmp_double);
  return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

static void spread(const double *v, int n, double *lo, double *hi)
{
  *lo = *hi = v[0];
  for (int i = 1; i < n; i++) {
    *lo = v[i] < *lo ? v[i] : *lo;
    *hi = v[i] > *hi ? v[i] : *hi;
  }
}

int main(int argc, char **argv)
{
  char *end_gib = "", *end_rounds = "";
  long gib = argc > 1 ? strtol(argv[1], &end_gib, 10) : 1, rounds = argc > 2 ? strtol(argv[2], &end_rounds, 10) : 1;
  if (argc > 3 || *end_gib || *end_rounds || gib < 1 || gib > MAX_GIB || rounds < 1 || rounds > MAX_ROUNDS) {
    fprintf(stderr, "usage: bench_conn [GIB (1-%d)] [ROUNDS (1-%d)]\n", MAX_GIB, MAX_ROUNDS);
    return 2;
  }
  log_init("bench_conn", LOG_LVL_ERR);
  signal(SIGPIPE, SIG_IGN);
  struct certs k = {0};
  struct proto_extent m;
  size_t frame_len = 0;
  uint8_t *frame = bench_extent_frame(&frame_len, &m);
  SSL_CTX *cctx = NULL;
  if (!frame || bench_make_certs("bench_conn", &k, &cctx))
    return 2;
  uint64_t frames = (uint64_t)gib << 10;
  double gib_sent = (double)frames * frame_len / (1 << 30);
  printf("bench_conn: %ld GiB of 1 MiB EXTENT frames over loopback, %ld rounds, %ld CPUs\n", gib, rounds,
         sysconf(_SC_NPROCESSORS_ONLN));
  double cpu[MODES][MAX_ROUNDS], snd_cpu[MODES][MAX_ROUNDS], rcv_cpu[MODES][MAX_ROUNDS], wall[MODES][MAX_ROUNDS];
  for (int r = 0; r < rounds; r++) {
    for (int i = 0; i < MODES; i++) {
      enum mode mode = (enum mode)((r + i) % MODES);
      struct side snd = {0}, rcv = {0};
      if (run(mode, frames, frame, frame_len, &m, &k, cctx, &snd, &rcv))
        return 1;
      snd_cpu[mode][r] = snd.cpu_s / gib_sent;
      rcv_cpu[mode][r] = rcv.cpu_s / gib_sent;
      cpu[mode][r] = snd_cpu[mode][r] + rcv_cpu[mode][r];
      wall[mode][r] = rcv.wall_s;
      printf("round %d %-24s %6.3f s  %7.1f MiB/s  CPU-s per GiB: sender %.3f receiver %.3f\n", r + 1, mode_name[mode],
             rcv.wall_s, gib_sent * 1024 / rcv.wall_s, snd_cpu[mode][r], rcv_cpu[mode][r]);
    }
  }
  for (int mode = 0; mode < MODES; mode++) {
    double lo, hi;
    spread(cpu[mode], (int)rounds, &lo, &hi);
    printf("%-24s CPU-s per GiB median %.3f [%.3f..%.3f] (sender %.3f, receiver %.3f), seconds median %.3f\n",
           mode_name[mode], median(cpu[mode], (int)rounds), lo, hi, median(snd_cpu[mode], (int)rounds),
           median(rcv_cpu[mode], (int)rounds), median(wall[mode], (int)rounds));
  }
  double vp[MAX_ROUNDS], vl[MAX_ROUNDS], lo, hi;
  for (int r = 0; r < rounds; r++) {
    vp[r] = cpu[MODE_OURS][r] / cpu[MODE_PEER][r];
    vl[r] = cpu[MODE_OURS][r] / cpu[MODE_LIMIT][r];
  }
  spread(vp, (int)rounds, &lo, &hi);
  printf("CPU per GiB, ours/peer: median %.2f [%.2f..%.2f] (below 1: ours cheaper)\n", median(vp, (int)rounds), lo, hi);
  spread(vl, (int)rounds, &lo, &hi);
  printf("CPU per GiB, ours/limit: median %.2f [%.2f..%.2f] (TLS's share: what plain TCP does not pay)\n",
         median(vl, (int)rounds), lo, hi);
  free((void *)m.payload.ptr);
  free(frame);
  SSL_CTX_free(cctx);
  return 0;
}
