/* vhd.h - the 512-byte fixed-VHD footer that makes a page blob usable as an Azure disk.
 * Internal header: appliance/ and tests/ only. */
#ifndef APPLIANCE_VHD_H
#define APPLIANCE_VHD_H

#include <stdbool.h>
#include <stdint.h>

#define VHD_FOOTER_SIZE 512u
/* Hyper-V's creator application and version (10.0): readers trust Current Size (vhd.c says why). */
#define VHD_CREATOR_APP "win "
#define VHD_CREATOR_VERSION 0x000a0000u

/* Fills footer for a fixed disk of size bytes (cookie "conectix", features 2, version 1.0, data
 * offset all ones, timestamp, creator "win " 10.0 on "Wi2k", original = current size = size, CHS
 * geometry, type 2, checksum, id, saved state 0; all big-endian). */
void vhd_footer_make(uint8_t footer[VHD_FOOTER_SIZE], uint64_t size, const uint8_t id[16], int64_t unix_time);
/* True when footer is a valid fixed-VHD footer (cookie, type, checksum); *size gets its current size. */
bool vhd_footer_check(const uint8_t footer[VHD_FOOTER_SIZE], uint64_t *size);

#endif
