/* crc64.c - the CRC-64 of x-ms-content-crc64 (crc64.h): eight tables of 256 entries built once,
 * eight bytes per step. */
#include <endian.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <string.h>

#include "crc64.h"

#define POLY 0x9A6C9329AC4BC9B5ull

static uint64_t table[8][256];
static pthread_once_t table_once = PTHREAD_ONCE_INIT;

static void build_tables(void)
{
  for (unsigned i = 0; i < 256; i++) {
    uint64_t c = i;
    for (int k = 0; k < 8; k++)
      c = c & 1 ? (c >> 1) ^ POLY : c >> 1;
    table[0][i] = c;
  }
  for (unsigned i = 0; i < 256; i++)
    for (int t = 1; t < 8; t++)
      table[t][i] = (table[t - 1][i] >> 8) ^ table[0][table[t - 1][i] & 0xff];
}

uint64_t blob_crc64(uint64_t crc, const void *data, size_t len)
{
  pthread_once(&table_once, build_tables);
  const unsigned char *p = data;
  uint64_t c = ~crc;
  for (; len >= 8; len -= 8, p += 8) {
    uint64_t w;
    memcpy(&w, p, 8);
    c ^= le64toh(w); /* the first byte lowest, as the byte-wise loop takes them */
    c = table[7][c & 0xff] ^ table[6][(c >> 8) & 0xff] ^ table[5][(c >> 16) & 0xff] ^ table[4][(c >> 24) & 0xff] ^
        table[3][(c >> 32) & 0xff] ^ table[2][(c >> 40) & 0xff] ^ table[1][(c >> 48) & 0xff] ^ table[0][c >> 56];
  }
  for (; len; len--)
    c = (c >> 8) ^ table[0][(c ^ *p++) & 0xff];
  return ~c;
}

void blob_crc64_base64(uint64_t crc, char out[13])
{
  unsigned char le[8];
  for (int i = 0; i < 8; i++)
    le[i] = (unsigned char)(crc >> (8 * i));
  EVP_EncodeBlock((unsigned char *)out, le, 8);
}
