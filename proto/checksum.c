/* checksum.c - checksums of the protocol: CRC32C (SSE4.2 three-way interleaved, table fallback) for
 * frames, xxh3-128 for data and the cycle digest. */
#include "proto.h"
#include "proto_internal.h"

#include <pthread.h>
#include <string.h>
#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t, for the streaming digest */
#include <xxhash.h>

#define CRC32C_POLY 0x82f63b78u  /* reflected 0x1EDC6F41 */
#define STRIPE 8192u             /* bytes per lane in the interleaved loop */

static uint32_t sw_table[8][256];
static uint32_t stripe_shift;    /* x^(8*STRIPE) mod P, reflected */
static bool have_sse42;
static bool have_fold512;        /* AVX-512 + VPCLMULQDQ, with the OS saving zmm state */
static uint64_t fold_k[5][2];    /* folding distances 256, 64, 48, 32, 16 bytes (see crc_fold512) */
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

/* a*b mod P over GF(2), reflected representation (x^0 is the top bit). */
static uint32_t gf2_multmod(uint32_t a, uint32_t b)
{
  uint32_t m = 1u << 31, p = 0;
  for (;;) {
    if (a & m) {
      p ^= b;
      if ((a & (m - 1)) == 0)
        break;
    }
    m >>= 1;
    b = (b & 1) ? (b >> 1) ^ CRC32C_POLY : b >> 1;
  }
  return p;
}

/* x^(8*n) mod P by square-and-multiply. */
static uint32_t x_pow_8n(uint64_t n)
{
  uint32_t result = 1u << 31;      /* x^0 */
  uint32_t square = 1u << 23;      /* x^8 */
  while (n) {
    if (n & 1)
      result = gf2_multmod(result, square);
    square = gf2_multmod(square, square);
    n >>= 1;
  }
  return result;
}

/* x^e mod P for a bit exponent e. */
static uint32_t x_pow_bits(uint64_t e)
{
  uint32_t r = x_pow_8n(e / 8);
  for (uint64_t i = 0; i < e % 8; i++)
    r = gf2_multmod(r, 1u << 30); /* x^1 */
  return r;
}

/* Constants to fold a 128-bit lane forward by d bits: the lane's low quadword weighs x^(64+d) and
 * its high quadword x^d at the destination; a carry-less product of two reflected operands comes
 * out multiplied by x^33 (read as a reflected 128-bit value), hence the -33. */
static void fold_constants(uint64_t k[2], uint64_t d)
{
  k[0] = x_pow_bits(64 + d - 33);
  k[1] = x_pow_bits(d - 33);
}

static void crc_init(void)
{
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++)
      c = (c & 1) ? (c >> 1) ^ CRC32C_POLY : c >> 1;
    sw_table[0][i] = c;
  }
  for (uint32_t i = 0; i < 256; i++)
    for (int t = 1; t < 8; t++)
      sw_table[t][i] = (sw_table[t - 1][i] >> 8) ^ sw_table[0][sw_table[t - 1][i] & 0xff];
  stripe_shift = x_pow_8n(STRIPE);
#if defined(__x86_64__)
  __builtin_cpu_init();
  have_sse42 = __builtin_cpu_supports("sse4.2");
  /* libgcc's avx512f answer includes the OS check (XCR0) for the zmm state. */
  have_fold512 = have_sse42 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                 __builtin_cpu_supports("vpclmulqdq") && __builtin_cpu_supports("pclmul");
#endif
  fold_constants(fold_k[0], 256 * 8);
  fold_constants(fold_k[1], 64 * 8);
  fold_constants(fold_k[2], 48 * 8);
  fold_constants(fold_k[3], 32 * 8);
  fold_constants(fold_k[4], 16 * 8);
}

static uint64_t load64le(const uint8_t *p)
{
  uint64_t v;
  memcpy(&v, p, 8);
  return v; /* x86-64 and the other targets we build for are little-endian */
}

/* Raw state update (no pre/post inversion), slicing by 8. */
static uint32_t crc_sw(uint32_t crc, const uint8_t *p, size_t len)
{
  while (len && ((uintptr_t)p & 7)) {
    crc = (crc >> 8) ^ sw_table[0][(crc ^ *p++) & 0xff];
    len--;
  }
  while (len >= 8) {
    uint64_t v = load64le(p) ^ crc;
    crc = sw_table[7][v & 0xff] ^ sw_table[6][(v >> 8) & 0xff] ^ sw_table[5][(v >> 16) & 0xff] ^
          sw_table[4][(v >> 24) & 0xff] ^ sw_table[3][(v >> 32) & 0xff] ^
          sw_table[2][(v >> 40) & 0xff] ^ sw_table[1][(v >> 48) & 0xff] ^ sw_table[0][v >> 56];
    p += 8;
    len -= 8;
  }
  while (len--)
    crc = (crc >> 8) ^ sw_table[0][(crc ^ *p++) & 0xff];
  return crc;
}

#if defined(__x86_64__)
#include <nmmintrin.h>

/* The crc32 instruction has 3 cycles of latency and a throughput of one per cycle: three
 * independent lanes keep it busy; the lanes' states are joined by multiplying with x^(8*STRIPE). */
__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t crc, const uint8_t *p, size_t len)
{
  uint64_t c0 = crc;
  while (len && ((uintptr_t)p & 7)) {
    c0 = _mm_crc32_u8((uint32_t)c0, *p++);
    len--;
  }
  while (len >= 3 * STRIPE) {
    uint64_t c1 = 0, c2 = 0;
    const uint8_t *end = p + STRIPE;
    do {
      c0 = _mm_crc32_u64(c0, load64le(p));
      c1 = _mm_crc32_u64(c1, load64le(p + STRIPE));
      c2 = _mm_crc32_u64(c2, load64le(p + 2 * STRIPE));
      p += 8;
    } while (p < end);
    c0 = gf2_multmod(stripe_shift, (uint32_t)c0) ^ (uint32_t)c1;
    c0 = gf2_multmod(stripe_shift, (uint32_t)c0) ^ (uint32_t)c2;
    p += 2 * STRIPE;
    len -= 3 * STRIPE;
  }
  while (len >= 8) {
    c0 = _mm_crc32_u64(c0, load64le(p));
    p += 8;
    len -= 8;
  }
  while (len--)
    c0 = _mm_crc32_u8((uint32_t)c0, *p++);
  return (uint32_t)c0;
}

#include <immintrin.h>

#define FOLD_TARGET "avx512f,avx512vl,vpclmulqdq,pclmul,sse4.2"

/* x (16 lanes' worth of message, 128 bits each) carried forward by k's distance onto data. */
__attribute__((target(FOLD_TARGET))) static inline __m512i fold512(__m512i x, __m512i k, __m512i data)
{
  return _mm512_ternarylogic_epi64(_mm512_clmulepi64_epi128(x, k, 0x00), _mm512_clmulepi64_epi128(x, k, 0x11),
                                   data, 0x96);
}

__attribute__((target(FOLD_TARGET))) static inline __m128i fold128(__m128i x, const uint64_t k[2], __m128i data)
{
  __m128i kk = _mm_set_epi64x((long long)k[1], (long long)k[0]);
  return _mm_ternarylogic_epi64(_mm_clmulepi64_si128(x, kk, 0x00), _mm_clmulepi64_si128(x, kk, 0x11), data, 0x96);
}

/* For len >= 256: the message (with the state XORed into its first four bytes, which makes the
 * state zero) is folded 256 bytes at a time in four zmm registers, i.e. sixteen 128-bit lanes; the
 * lanes are then folded onto the last one, whose 16 bytes have the same CRC as everything before
 * them and go through the crc32 instruction, as does the tail. About 32 bytes per cycle against
 * the crc32 instruction's 8. */
__attribute__((target(FOLD_TARGET))) static uint32_t crc_fold512(uint32_t crc, const uint8_t *p, size_t len)
{
  __m512i x0 = _mm512_loadu_si512(p), x1 = _mm512_loadu_si512(p + 64), x2 = _mm512_loadu_si512(p + 128),
          x3 = _mm512_loadu_si512(p + 192);
  x0 = _mm512_xor_si512(x0, _mm512_zextsi128_si512(_mm_cvtsi32_si128((int)crc)));
  p += 256;
  len -= 256;
  const __m512i k256 = _mm512_broadcast_i32x4(_mm_set_epi64x((long long)fold_k[0][1], (long long)fold_k[0][0]));
  while (len >= 256) {
    x0 = fold512(x0, k256, _mm512_loadu_si512(p));
    x1 = fold512(x1, k256, _mm512_loadu_si512(p + 64));
    x2 = fold512(x2, k256, _mm512_loadu_si512(p + 128));
    x3 = fold512(x3, k256, _mm512_loadu_si512(p + 192));
    p += 256;
    len -= 256;
  }
  const __m512i k64 = _mm512_broadcast_i32x4(_mm_set_epi64x((long long)fold_k[1][1], (long long)fold_k[1][0]));
  x1 = fold512(x0, k64, x1);
  x2 = fold512(x1, k64, x2);
  x3 = fold512(x2, k64, x3);
  __m128i acc = _mm512_extracti32x4_epi32(x3, 3);
  acc = fold128(_mm512_extracti32x4_epi32(x3, 0), fold_k[2], acc);
  acc = fold128(_mm512_extracti32x4_epi32(x3, 1), fold_k[3], acc);
  acc = fold128(_mm512_extracti32x4_epi32(x3, 2), fold_k[4], acc);
  uint64_t c = _mm_crc32_u64(0, (uint64_t)_mm_cvtsi128_si64(acc));
  c = _mm_crc32_u64(c, (uint64_t)_mm_extract_epi64(acc, 1));
  return crc_hw((uint32_t)c, p, len);
}
#endif

uint32_t proto_crc32c(uint32_t crc, const void *data, size_t len)
{
  pthread_once(&crc_once, crc_init);
  uint32_t state = ~crc;
#if defined(__x86_64__)
  if (have_fold512 && len >= 256)
    return ~crc_fold512(state, data, len);
  if (have_sse42)
    return ~crc_hw(state, data, len);
#endif
  return ~crc_sw(state, data, len);
}

static bool hash_avx2(void)
{
#if defined(__x86_64__)
  return __builtin_cpu_supports("avx2"); /* libgcc sets it only where the OS saves the ymm state */
#else
  return false;
#endif
}

const char *proto_hash_impl(void)
{
  return hash_avx2() ? "avx2" : "default";
}

void proto_hash128(const void *data, size_t len, uint8_t out[PROTO_HASH_SIZE])
{
  XXH128_hash_t h;
#if defined(__x86_64__)
  if (hash_avx2()) {
    uint64_t v[2];
    proto_xxh3_128_avx2(data, len, v);
    h.low64 = v[0];
    h.high64 = v[1];
  } else
#endif
    h = XXH3_128bits(data, len);
  XXH128_canonical_t c;
  XXH128_canonicalFromHash(&c, h);
  memcpy(out, c.digest, PROTO_HASH_SIZE);
}

uint64_t proto_hash64(const void *data, size_t len)
{
#if defined(__x86_64__)
  if (hash_avx2())
    return proto_xxh3_64_avx2(data, len);
#endif
  return XXH3_64bits(data, len);
}

_Static_assert(sizeof(XXH3_state_t) <= sizeof(struct proto_digest), "proto_digest too small for XXH3_state_t");
_Static_assert(_Alignof(XXH3_state_t) <= 64, "proto_digest under-aligned for XXH3_state_t");

void proto_digest_init(struct proto_digest *d)
{
  XXH3_128bits_reset((XXH3_state_t *)d->state);
}

void proto_digest_update(struct proto_digest *d, const uint8_t hash[PROTO_HASH_SIZE])
{
  XXH3_128bits_update((XXH3_state_t *)d->state, hash, PROTO_HASH_SIZE);
}

void proto_digest_final(const struct proto_digest *d, uint8_t out[PROTO_HASH_SIZE])
{
  XXH128_canonical_t c;
  XXH128_canonicalFromHash(&c, XXH3_128bits_digest((const XXH3_state_t *)d->state));
  memcpy(out, c.digest, PROTO_HASH_SIZE);
}

uint32_t proto_crc32c_interleaved(uint32_t crc, const void *data, size_t len)
{
  pthread_once(&crc_once, crc_init);
#if defined(__x86_64__)
  if (have_sse42)
    return ~crc_hw(~crc, data, len);
#endif
  return ~crc_sw(~crc, data, len);
}

uint32_t proto_crc32c_portable(uint32_t crc, const void *data, size_t len)
{
  pthread_once(&crc_once, crc_init);
  return ~crc_sw(~crc, data, len);
}
