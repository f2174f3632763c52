/* disk_label.h - what a disk's first sectors say about how it boots (MBR or GPT, an EFI system
 * partition), hence the Azure VM generation a failed-over disk needs. Internal header. */
#ifndef APPLIANCE_DISK_LABEL_H
#define APPLIANCE_DISK_LABEL_H

#include <stddef.h>
#include <stdint.h>

/* How many of the disk's first bytes disk_label_generation wants (the GPT header and the usual
 * partition entries, for 512- and 4096-byte sectors). */
#define DISK_LABEL_HEAD (1u << 20)

/* 2 for a GPT disk with an EFI system partition (UEFI boot: Azure generation V2), else 1 (BIOS: V1).
 * head: the disk's first len bytes; why gets what was found ("GPT with an EFI system partition",
 * "MBR", "no partition table" ...). */
int disk_label_generation(const uint8_t *head, size_t len, char *why, size_t whysz);

#endif
