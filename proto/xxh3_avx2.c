/* xxh3_avx2.c - xxhash's own XXH3 compiled for AVX2 (this file only); checksum.c calls it when the CPU has AVX2. */
#include "proto_internal.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

#if !defined(__AVX2__)
#error "xxh3_avx2.c must be compiled with -mavx2"
#endif

void proto_xxh3_128_avx2(const void *data, size_t len, uint64_t out[2])
{
  XXH128_hash_t h = XXH3_128bits(data, len);
  out[0] = h.low64;
  out[1] = h.high64;
}

uint64_t proto_xxh3_64_avx2(const void *data, size_t len)
{
  return XXH3_64bits(data, len);
}
