/* bench_tls.c - the TLS benchmarks' throwaway certificates and EXTENT frame (bench_tls.h). */
#include "bench_tls.h"

#include <stdio.h>
#include <stdlib.h>

#include "channel.h"

int bench_make_certs(const char *prog, struct certs *k, SSL_CTX **client_ctx)
{
  char *csr = NULL, *csr2 = NULL, name[128];
  uint8_t fp[CHAN_FINGERPRINT_SIZE];
  snprintf(name, sizeof name, "%s authority", prog);
  rpl_err err = chan_make_authority(name, &k->ca, &k->ca_key);
  snprintf(name, sizeof name, "%s appliance", prog);
  if (!err)
    err = chan_make_csr(name, &csr, &k->server_key);
  if (!err)
    err = chan_sign_csr(k->ca, k->ca_key, csr, name, CHAN_CERT_SERVER, 86400, &k->server_cert);
  snprintf(name, sizeof name, "%s agent", prog);
  if (!err)
    err = chan_make_csr(name, &csr2, &k->client_key);
  if (!err)
    err = chan_sign_csr(k->ca, k->ca_key, csr2, name, CHAN_CERT_CLIENT, 86400, &k->client_cert);
  if (!err)
    err = chan_fingerprint(k->ca, fp);
  if (!err)
    err = chan_client_ctx(fp, k->client_cert, k->client_key, client_ctx);
  free(csr);
  free(csr2);
  if (err)
    fprintf(stderr, "%s: certificates: %s (%s)\n", prog, rpl_detail(err), rpl_strerror(err));
  return err ? -1 : 0;
}

uint8_t *bench_extent_frame(size_t *len, struct proto_extent *m)
{
  uint8_t *raw = malloc(BENCH_EXTENT_BYTES);
  struct proto_buf b = {.cap = PROTO_HEADER_SIZE + PROTO_MAX_PAYLOAD};
  if (!raw)
    return NULL;
  uint64_t x = 0x9e3779b97f4a7c15ull;
  for (size_t i = 0; i < BENCH_EXTENT_BYTES; i++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    raw[i] = (uint8_t)x;
  }
  struct proto_extent e = {.cycle = 1, .length = BENCH_EXTENT_BYTES, .codec = PROTO_CODEC_NONE,
                           .payload = {raw, BENCH_EXTENT_BYTES}};
  proto_hash128(raw, BENCH_EXTENT_BYTES, e.hash);
  if (proto_encode_extent(&b, &e)) {
    free(raw);
    return NULL;
  }
  *len = b.len;
  if (m)
    *m = e;
  else
    free(raw);
  return b.data;
}
