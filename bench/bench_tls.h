/* bench_tls.h - what the benchmarks that open real TLS connections share (bench_sessions,
 * bench_conn): a throwaway authority with an appliance (server) and an agent (client) certificate
 * signed by it, and the 1 MiB EXTENT frame they stream. */
#ifndef BENCH_TLS_H
#define BENCH_TLS_H

#include <stddef.h>
#include <stdint.h>
#include <openssl/ssl.h>

#include "proto.h"

#define BENCH_EXTENT_BYTES (1u << 20)

/* PEM strings; the benchmark keeps them for its whole run (never freed). */
struct certs {
  char *ca, *ca_key, *server_cert, *server_key, *client_cert, *client_key;
};

/* Makes k (common names start with prog) and the agent's TLS context, pinned to the authority, into
 * *client_ctx (the caller's). 0, or -1 after saying why on stderr. */
int bench_make_certs(const char *prog, struct certs *k, SSL_CTX **client_ctx);

/* One encoded EXTENT frame of BENCH_EXTENT_BYTES random bytes (codec none), *len bytes, the caller's
 * to free; NULL when out of memory. With m, *m is the extent itself, its payload (m->payload.ptr)
 * the caller's to free too; without, the payload is freed here. */
uint8_t *bench_extent_frame(size_t *len, struct proto_extent *m);

#endif /* BENCH_TLS_H */
