/* bench_sessions.h - what bench_sessions.c, bench_sessions_nb.c and bench_sessions_server.c share (included by them alone). */
#ifndef BENCH_SESSIONS_H
#define BENCH_SESSIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <openssl/ssl.h>

#include "bench_tls.h"
#include "proto.h"

#define MAX_COUNT            20000     /* connections in one run */
#define MAX_COUNTS           8         /* values of --counts */
#define MAX_ROUNDS           25
#define MAX_LOOPS            64        /* event-loop threads */
#define MAX_SECONDS          600
#define MAX_RATE             1000000.0 /* heartbeats per second, all connections */
#define MAX_BULK_MBS         10000.0
#define FD_MARGIN            64        /* descriptors beyond the connections (listener, pipes, epoll) */
#define LISTEN_BACKLOG       4096
#define HANDSHAKE_LIMIT_MS   10000     /* the appliance's HANDSHAKE_TIMEOUT_MS */
#define APPLIANCE_POLL_MS    50        /* the appliance's POLL_MS: how often a session thread wakes */
#define SESSION_STACK        (1u << 20) /* the appliance's session thread stack */
#define SOCKET_BUFFER        (4 << 20) /* conn.c's SO_SNDBUF/SO_RCVBUF, given to the event loop's sockets too */
#define EXTENT_BYTES         (1u << 20)
#define OUT_CAP              (64u << 20) /* a connection's queued output; past it the connection is dropped */
#define READ_BUDGET          (1u << 20) /* bytes one connection reads per event, so one bulk stream cannot starve the rest */
#define EPOLL_BATCH          256
#define CONNECT_LIMIT_MS     180000    /* all N connected within this, else the run fails */
#define DRAIN_LIMIT_MS       20000     /* every frame answered within this after the load ends */
#define RTT_CAP              (4u << 20) /* round trips kept for the percentiles */
#define FIGURES              9


enum model { MODEL_THREAD, MODEL_EPOLL, MODELS };

/* ---- nonblocking framed TLS connections (the event-loop server and the client): bench_sessions_nb.c */

struct outbuf {
  uint8_t *data;
  size_t len, off, alloc;
};

struct nb_conn {
  int fd;
  SSL *ssl;
  uint32_t events;       /* what epoll watches now */
  bool connecting, open, hs_wants_write, first_answered, bulk, closed;
  struct proto_decoder dec;
  struct outbuf out;
};

/* Appends to o (at most OUT_CAP queued). 0, or -1 when full or out of memory. */
int out_append(struct outbuf *o, const void *data, size_t len);
/* TCP_NODELAY; with big_buffers, conn.c's 4 MiB socket buffers. */
void socket_tune(int fd, bool big_buffers);
int nb_init(struct nb_conn *c, int fd, SSL_CTX *ctx, bool server);
/* Closes the connection (a close_notify first when open, so the peer sees a clean end). */
void nb_close(int epfd, struct nb_conn *c);
/* 1: handshake done; 0: under way; -1: failed. */
int nb_handshake(struct nb_conn *c);
typedef int (*frame_fn)(struct nb_conn *c, const struct proto_frame *f, void *arg);
/* Reads what the socket has (up to READ_BUDGET, more while OpenSSL holds decrypted bytes) and hands
 * each whole frame to on_frame. 0: keep the connection; -1: closed by the peer or broken. */
int nb_read(struct nb_conn *c, frame_fn on_frame, void *arg);
/* Writes what is queued until the socket takes no more. 0: fine (maybe some left); -1: broken. */
int nb_flush(struct nb_conn *c);
/* Watches for writability only while something waits to be written. */
void nb_arm(int epfd, struct nb_conn *c);
/* With --pin: the server's threads on cores 0..n-2 (server), the client on core n-1. */
void pin_to(bool server);

/* ---- the server, a child process in one model: bench_sessions_server.c ------------------------- */

struct server_stats {
  double cpu_s;
  long maxrss_kib, vcsw, ivcsw, threads;
  uint64_t handshakes, heartbeats, extents, failures;
};

struct server_proc {
  pid_t pid;
  int cmd_fd, report_fd;
};

#define SERVE_OPTION "--serve-internal" /* argv[1] of the server's own image */

/* Forks the server on listen_fd: loops event-loop threads, or session threads polling every poll_ms. */
int server_start(enum model model, int loops, int poll_ms, bool pin, const struct certs *k, int listen_fd,
                 struct server_proc *sp);
/* The server's figures now. 0, or -1 when it is gone. */
int server_ask(const struct server_proc *sp, struct server_stats *s);
void server_stop(struct server_proc *sp);
/* main() of the server's image (argv[1] is SERVE_OPTION): its certificates come through its pipe. */
int server_exec_main(int argc, char **argv);

#endif
