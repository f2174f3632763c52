/* fuzz_disk_label.c - Description: libFuzzer target for the partition-table reader that picks a
 * failed-over disk's Azure VM generation from its first sectors (MBR, GPT at 512- and 4096-byte
 * sectors, the EFI system partition's entry): the guest writes those bytes, so any may come. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "disk_label.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  if (size > DISK_LABEL_HEAD)
    size = DISK_LABEL_HEAD; /* what the failover reads */
  /* A copy of exactly size bytes, so that a read past the head is caught even for short inputs. */
  uint8_t *head = malloc(size ? size : 1);
  if (!head)
    abort();
  memcpy(head, data, size);
  char why[96];
  int gen = disk_label_generation(head, size, why, sizeof why);
  if ((gen != 1 && gen != 2) || !memchr(why, '\0', sizeof why) || !why[0])
    abort();
  if (gen == 2 && (size < 1024 || head[510] != 0x55 || head[511] != 0xaa))
    abort(); /* generation 2 only from a GPT behind a protective MBR */
  free(head);
  return 0;
}
