/* test_crc64.c - Description: the CRC-64 of x-ms-content-crc64 (appliance/azure/crc64.c): the
 * CRC-64/NVME check value, the header's base64 form, and the table-driven code against the
 * polynomial's definition (one bit at a time) on random data of every length and alignment, whole
 * and in pieces. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "crc64.h"

/* Straight from the definition: reflected polynomial 0x9A6C9329AC4BC9B5, all-ones start and end. */
static uint64_t bitwise(const unsigned char *p, size_t len)
{
  uint64_t c = ~0ull;
  for (size_t i = 0; i < len; i++) {
    c ^= p[i];
    for (int k = 0; k < 8; k++)
      c = c & 1 ? (c >> 1) ^ 0x9A6C9329AC4BC9B5ull : c >> 1;
  }
  return ~c;
}

static void check_value(void **state)
{
  (void)state;
  assert_int_equal(blob_crc64(0, "123456789", 9), 0xAE8B14860A799888ull);
  assert_int_equal(blob_crc64(0, "", 0), 0);
  char b64[13];
  blob_crc64_base64(0xAE8B14860A799888ull, b64);
  assert_string_equal(b64, "iJh5CoYUi64="); /* the 8 bytes little-endian, as Azure's SDKs send them */
}

static void matches_definition(void **state)
{
  (void)state;
  unsigned char buf[1100];
  uint64_t x = 0x9e3779b97f4a7c15ull;
  for (size_t i = 0; i < sizeof buf; i++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    buf[i] = (unsigned char)x;
  }
  for (size_t off = 0; off < 8; off++)
    for (size_t len = 0; len + off <= sizeof buf; len += len < 40 ? 1 : 97) {
      uint64_t want = bitwise(buf + off, len);
      assert_int_equal(blob_crc64(0, buf + off, len), want);
      size_t cut = len / 3;
      assert_int_equal(blob_crc64(blob_crc64(0, buf + off, cut), buf + off + cut, len - cut), want);
    }
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(check_value),
    cmocka_unit_test(matches_definition),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
