/* proto_internal.h - proto/ internals; used by proto/ sources and tests/unit/test_proto.c only. */
#ifndef PROTO_INTERNAL_H
#define PROTO_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

/* The portable (table) CRC32C, so tests can check the hardware path against it. */
uint32_t proto_crc32c_portable(uint32_t crc, const void *data, size_t len);
/* The SSE4.2 interleaved CRC32C alone (the portable one where the CPU lacks SSE4.2), so tests
 * check it on long buffers too where proto_crc32c takes the folding path. */
uint32_t proto_crc32c_interleaved(uint32_t crc, const void *data, size_t len);

/* XXH3 built for AVX2 (xxh3_avx2.c); only called when the CPU has AVX2. out[0] is the low half. */
void proto_xxh3_128_avx2(const void *data, size_t len, uint64_t out[2]);
uint64_t proto_xxh3_64_avx2(const void *data, size_t len);
/* Which XXH3 proto_hash128 and proto_hash64 run: "avx2" or "default" (the library's build). */
const char *proto_hash_impl(void);

#endif
