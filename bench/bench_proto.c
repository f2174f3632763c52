/* bench_proto.c - EXTENT frame encode + decode of 1 MiB against memcpy of the same bytes, same run. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "proto.h"

#define EXTENT_BYTES (1u << 20)
#define ROUNDS 7

static double now(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
  int iters = argc > 1 ? atoi(argv[1]) : 2000;
  uint8_t *raw = malloc(EXTENT_BYTES), *copy = malloc(EXTENT_BYTES);
  if (!raw || !copy)
    return 1;
  for (size_t i = 0; i < EXTENT_BYTES; i++)
    raw[i] = (uint8_t)(i * 2654435761u >> 13);
  struct proto_extent m = {.cycle = 7, .offset = 1u << 30, .length = EXTENT_BYTES, .codec = PROTO_CODEC_NONE,
                           .payload = {raw, EXTENT_BYTES}};
  proto_hash128(raw, EXTENT_BYTES, m.hash);

  /* The frame as the sender writes it (prefix + payload) and as the receiver's buffer holds it. */
  uint8_t *wire = malloc(PROTO_EXTENT_PREFIX_SIZE + EXTENT_BYTES);
  if (!wire)
    return 1;
  double t_memcpy[ROUNDS], t_codec[ROUNDS], t_full[ROUNDS];
  volatile uint64_t sink = 0;
  for (int r = 0; r < ROUNDS; r++) { /* interleaved, so drift hits both alike */
    double t0 = now();
    for (int i = 0; i < iters; i++) {
      memcpy(copy, raw, EXTENT_BYTES);
      sink += copy[i & 1023];
    }
    t_memcpy[r] = now() - t0;

    /* Frame codec: prefix with CRC (encode), parse + CRC check + field decode (decode). */
    t0 = now();
    for (int i = 0; i < iters; i++) {
      if (proto_encode_extent_prefix(wire, &m))
        return 1;
      if (i == 0)
        memcpy(wire + PROTO_EXTENT_PREFIX_SIZE, raw, EXTENT_BYTES);
      struct proto_frame f;
      size_t used;
      struct proto_extent out;
      if (proto_frame_parse(wire, PROTO_EXTENT_PREFIX_SIZE + EXTENT_BYTES, &f, &used) ||
          proto_decode_extent(&f, &out))
        return 1;
      sink += out.length;
    }
    t_codec[r] = now() - t0;

    /* Also hashing: the sender's xxh3-128 of the raw bytes and the receiver's verification. */
    t0 = now();
    for (int i = 0; i < iters; i++) {
      uint8_t h[PROTO_HASH_SIZE];
      proto_hash128(raw, EXTENT_BYTES, m.hash);
      if (proto_encode_extent_prefix(wire, &m))
        return 1;
      struct proto_frame f;
      size_t used;
      struct proto_extent out;
      if (proto_frame_parse(wire, PROTO_EXTENT_PREFIX_SIZE + EXTENT_BYTES, &f, &used) ||
          proto_decode_extent(&f, &out))
        return 1;
      proto_hash128(out.payload.ptr, out.payload.len, h);
      if (memcmp(h, out.hash, sizeof h))
        return 1;
    }
    t_full[r] = now() - t0;
  }
  qsort(t_memcpy, ROUNDS, sizeof(double), cmp_double);
  qsort(t_codec, ROUNDS, sizeof(double), cmp_double);
  qsort(t_full, ROUNDS, sizeof(double), cmp_double);
  double mib = (double)iters * EXTENT_BYTES / (1 << 20);
  double mc = t_memcpy[ROUNDS / 2], co = t_codec[ROUNDS / 2], fu = t_full[ROUNDS / 2];
  printf("bench_proto: %d x 1 MiB EXTENT frames, median of %d interleaved rounds\n", iters, ROUNDS);
  printf("  memcpy                        %8.0f MiB/s\n", mib / mc);
  printf("  frame encode+decode (CRC32C)  %8.0f MiB/s   cost = %.2f memcpys (goal <= 2)\n", mib / co, co / mc);
  printf("  + xxh3-128 hash and verify    %8.0f MiB/s   cost = %.2f memcpys\n", mib / fu, fu / mc);
  free(raw);
  free(copy);
  free(wire);
  return (int)(sink & 0);
}
