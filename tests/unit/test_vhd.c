/* test_vhd.c - Description: unit tests of the fixed-VHD footer (appliance/vhd.c): fields, geometry, checksum, and
 * the size qemu's and Hyper-V's rules read from it. */
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "vhd.h"

static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

static void test_fields(void **state)
{
  (void)state;
  uint8_t f[VHD_FOOTER_SIZE], id[16];
  memset(id, 0xab, sizeof id);
  uint64_t size = 1ull << 30;
  vhd_footer_make(f, size, id, 946684800 + 1000);
  assert_memory_equal(f, "conectix", 8);
  assert_int_equal(be32(f + 8), 2);
  assert_int_equal(be32(f + 12), 0x00010000);
  assert_int_equal(be32(f + 16), 0xffffffffu);
  assert_int_equal(be32(f + 20), 0xffffffffu);
  assert_int_equal(be32(f + 24), 1000);           /* seconds since 2000-01-01 */
  assert_memory_equal(f + 28, "win ", 4);         /* creator application: Hyper-V's */
  assert_int_equal(be32(f + 32), 0x000a0000);     /* creator version 10.0 */
  assert_memory_equal(f + 36, "Wi2k", 4);         /* creator host OS */
  assert_int_equal(be32(f + 40), 0);              /* original size, big-endian */
  assert_int_equal(be32(f + 44), 1u << 30);
  assert_int_equal(be32(f + 52), 1u << 30);       /* current size */
  /* 1 GiB: the specification's algorithm gives 2080 cylinders, 16 heads, 63 sectors per track. */
  assert_int_equal(f[56] << 8 | f[57], 2080);
  assert_int_equal(f[58], 16);
  assert_int_equal(f[59], 63);
  assert_int_equal(be32(f + 60), 2);              /* fixed */
  assert_memory_equal(f + 68, id, 16);
  assert_int_equal(f[84], 0);
  uint32_t sum = 0;
  for (int i = 0; i < 512; i++)
    if (i < 64 || i >= 68)
      sum += f[i];
  assert_int_equal(be32(f + 64), ~sum);
  uint64_t got = 0;
  assert_true(vhd_footer_check(f, &got));
  assert_int_equal(got, size);
}

static void test_damage_detected(void **state)
{
  (void)state;
  uint8_t f[VHD_FOOTER_SIZE], id[16] = {1};
  vhd_footer_make(f, 8ull << 20, id, 0);
  f[50] ^= 1;
  assert_false(vhd_footer_check(f, NULL));
  vhd_footer_make(f, 8ull << 20, id, 0);
  f[0] = 'C';
  assert_false(vhd_footer_check(f, NULL));
}

static void test_large_geometry_capped(void **state)
{
  (void)state;
  uint8_t f[VHD_FOOTER_SIZE], id[16] = {0};
  vhd_footer_make(f, 4ull << 40, id, 0); /* beyond CHS range: 65535/16/255 */
  assert_int_equal(f[56] << 8 | f[57], 65535);
  assert_int_equal(f[58], 16);
  assert_int_equal(f[59], 255);
}

/* The size qemu 7.2's block/vpc.c (vpc_open) reads: the CHS product, unless the geometry is the
 * largest one or the creator application is one known to write an exact current size. */
static uint64_t qemu_size(const uint8_t *f)
{
  uint64_t sectors = (uint64_t)(f[56] << 8 | f[57]) * f[58] * f[59];
  bool use_chs = memcmp(f + 28, "win ", 4) && memcmp(f + 28, "qem2", 4) && memcmp(f + 28, "d2v ", 4) &&
                 memcmp(f + 28, "CTXS", 4) && memcmp(f + 28, "tap", 4);
  if (!use_chs || sectors == 65535ull * 16 * 255) {
    uint64_t cur = (uint64_t)be32(f + 48) << 32 | be32(f + 52);
    return cur / 512 * 512;
  }
  return sectors * 512;
}

/* Every reader sees the exact size: Hyper-V, Azure and VirtualBox take current size (bytes 48..55),
 * qemu takes it because of the creator application, although the geometry alone falls short. */
static void test_readers_see_exact_size(void **state)
{
  (void)state;
  const uint64_t sizes[] = {1ull << 20, 8ull << 20, 1ull << 30, (127ull << 30) + (1ull << 20), 2040ull << 30, 4ull << 40};
  uint8_t f[VHD_FOOTER_SIZE], id[16] = {2};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    vhd_footer_make(f, sizes[i], id, 0);
    uint64_t cur = (uint64_t)be32(f + 48) << 32 | be32(f + 52), orig = (uint64_t)be32(f + 40) << 32 | be32(f + 44);
    assert_int_equal(cur, sizes[i]);
    assert_int_equal(orig, sizes[i]);
    assert_int_equal(qemu_size(f), sizes[i]);
  }
  /* Why the creator matters: 1 GiB by its geometry is 256 KiB short (the bug this footer fixes). */
  vhd_footer_make(f, 1ull << 30, id, 0);
  memcpy(f + 28, "rpla", 4);
  assert_int_equal(qemu_size(f), (1ull << 30) - (256u << 10));
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_fields),
    cmocka_unit_test(test_damage_detected),
    cmocka_unit_test(test_large_geometry_capped),
    cmocka_unit_test(test_readers_see_exact_size),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
