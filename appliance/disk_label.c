/* disk_label.c - the partition table in a disk's first sectors, read for the Azure VM generation
 * (disk_label.h): a protective MBR (type 0xEE) and a GPT header ("EFI PART") at LBA 1, whose
 * entries hold the EFI system partition's type GUID C12A7328-F81F-11D2-BA4B-00A0C93EC93B. */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "disk_label.h"

/* The ESP type GUID as stored (first three fields little-endian). */
static const uint8_t esp_guid[16] = {0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11,
                                     0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b};

static uint64_t le(const uint8_t *p, int n)
{
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; i--)
    v = v << 8 | p[i];
  return v;
}

/* Whether a GPT header at sector (512 or 4096 bytes) lists an ESP among its entries in head. */
static bool gpt_has_esp(const uint8_t *head, size_t len, size_t sector, bool *found_gpt)
{
  if (len < 2 * sector || memcmp(head + sector, "EFI PART", 8))
    return false;
  *found_gpt = true;
  uint64_t lba = le(head + sector + 72, 8), count = le(head + sector + 80, 4), size = le(head + sector + 84, 4);
  /* The entries' LBA is checked before it is scaled: a huge one would wrap to a spot before head. */
  if (size < 128 || size > 4096 || count > 4096 || lba > len / sector)
    return false;
  uint64_t entries = lba * sector;
  for (uint64_t i = 0; i < count && (i + 1) * size <= len - entries; i++)
    if (!memcmp(head + entries + i * size, esp_guid, 16))
      return true;
  return false;
}

int disk_label_generation(const uint8_t *head, size_t len, char *why, size_t whysz)
{
  if (len < 512 || head[510] != 0x55 || head[511] != 0xaa) {
    snprintf(why, whysz, "no partition table");
    return 1;
  }
  bool protective = false;
  for (int i = 0; i < 4; i++)
    if (head[446 + 16 * i + 4] == 0xee)
      protective = true;
  bool gpt = false;
  if (protective && (gpt_has_esp(head, len, 512, &gpt) || gpt_has_esp(head, len, 4096, &gpt))) {
    snprintf(why, whysz, "GPT with an EFI system partition");
    return 2;
  }
  snprintf(why, whysz, "%s", gpt ? "GPT without an EFI system partition" : "MBR");
  return 1;
}
