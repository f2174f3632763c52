/* test_disk_label.c - Description: unit tests of the Azure VM generation read from a disk's first
 * sectors (appliance/disk_label.c): GPT with an EFI system partition (512- and 4096-byte sectors),
 * GPT without one (also with a damaged entries LBA), MBR, none. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "disk_label.h"

static const uint8_t esp[16] = {0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b};
static const uint8_t linux_fs[16] = {0xaf, 0x3d, 0xc6, 0x0f, 0x83, 0x84, 0x72, 0x47, 0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47, 0x7d, 0xe4};

static void put_le(uint8_t *p, uint64_t v, int n)
{
  for (int i = 0; i < n; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}

/* A disk head as sfdisk lays one out: protective MBR, header at LBA 1, 128 entries from LBA 2;
 * the type GUIDs of the first entries as given. */
static uint8_t *gpt_disk(size_t sector, const uint8_t *const *types, int n)
{
  uint8_t *d = calloc(1, DISK_LABEL_HEAD);
  d[446 + 4] = 0xee;
  d[510] = 0x55, d[511] = 0xaa;
  memcpy(d + sector, "EFI PART", 8);
  put_le(d + sector + 72, 2, 8);
  put_le(d + sector + 80, 128, 4);
  put_le(d + sector + 84, 128, 4);
  for (int i = 0; i < n; i++)
    memcpy(d + 2 * sector + 128 * (size_t)i, types[i], 16);
  return d;
}

static void test_gpt_esp(void **state)
{
  (void)state;
  char why[96];
  const uint8_t *types[] = {linux_fs, esp};
  for (size_t sector = 512; sector <= 4096; sector *= 8) {
    uint8_t *d = gpt_disk(sector, types, 2);
    assert_int_equal(disk_label_generation(d, DISK_LABEL_HEAD, why, sizeof why), 2);
    assert_string_equal(why, "GPT with an EFI system partition");
    free(d);
  }
}

static void test_gpt_without_esp(void **state)
{
  (void)state;
  char why[96];
  const uint8_t *types[] = {linux_fs};
  uint8_t *d = gpt_disk(512, types, 1);
  assert_int_equal(disk_label_generation(d, DISK_LABEL_HEAD, why, sizeof why), 1);
  assert_string_equal(why, "GPT without an EFI system partition");
  /* entries cut off by a short head: not taken for an ESP */
  const uint8_t *late[] = {linux_fs, linux_fs, esp};
  free(d);
  d = gpt_disk(512, late, 3);
  assert_int_equal(disk_label_generation(d, 1024 + 2 * 128, why, sizeof why), 1);
  /* an entries LBA so large that LBA * sector wraps to just below 2^64: read nowhere (it once
   * pointed 512 bytes before the head), and no ESP */
  put_le(d + 512 + 72, (1ull << 55) - 1, 8);
  put_le(d + 512 + 84, 512, 4);
  assert_int_equal(disk_label_generation(d, DISK_LABEL_HEAD, why, sizeof why), 1);
  assert_string_equal(why, "GPT without an EFI system partition");
  free(d);
}

static void test_mbr_and_none(void **state)
{
  (void)state;
  char why[96];
  uint8_t *d = calloc(1, DISK_LABEL_HEAD);
  assert_int_equal(disk_label_generation(d, DISK_LABEL_HEAD, why, sizeof why), 1);
  assert_string_equal(why, "no partition table");
  d[446 + 4] = 0x83; /* Linux */
  d[510] = 0x55, d[511] = 0xaa;
  assert_int_equal(disk_label_generation(d, DISK_LABEL_HEAD, why, sizeof why), 1);
  assert_string_equal(why, "MBR");
  assert_int_equal(disk_label_generation(d, 100, why, sizeof why), 1); /* a disk smaller than a sector */
  free(d);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_gpt_esp),
    cmocka_unit_test(test_gpt_without_esp),
    cmocka_unit_test(test_mbr_and_none),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
