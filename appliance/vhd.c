/* vhd.c - the fixed-VHD footer: geometry, checksum, big-endian fields.
 *
 * Which size a reader takes: the VHD specification (Virtual Hard Disk Image Format Specification
 * 1.0, "Hard Disk Footer Format") gives both a Current Size and a CHS Disk Geometry, and the
 * geometry cannot express most sizes (C*H*S rounds down: 1 GiB reads as 2080*16*63 sectors,
 * 256 KiB short). Hyper-V, Azure and VirtualBox (VHD.cpp: cbSize = CurSize) take Current Size;
 * qemu's block/vpc.c takes the geometry unless the Creator Application is one it knows writes an
 * exact Current Size ("win " Hyper-V, "qem2", "d2v ", "tap\0", "CTXS"; qemu >= 10 also "wa\0\0"
 * and anything but "vpc "/"qemu"). So the footer says it was made as Hyper-V makes one: creator
 * application "win ", version 10.0, host "Wi2k", the specification's geometry (what Hyper-V
 * writes), Current Size = Original Size = the exact size. Azure's only further demand, a size of
 * whole MiB, is the caller's (the replica and failover round up). */
#include "vhd.h"

#include <string.h>

#define VHD_EPOCH 946684800 /* 2000-01-01T00:00:00Z */

static void be32(uint8_t *p, uint32_t v)
{
  for (int i = 0; i < 4; i++)
    p[i] = (uint8_t)(v >> (24 - 8 * i));
}
static void be64(uint8_t *p, uint64_t v)
{
  for (int i = 0; i < 8; i++)
    p[i] = (uint8_t)(v >> (56 - 8 * i));
}
static uint32_t rd32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) << 32 | rd32(p + 4); }

/* CHS geometry as the VHD specification computes it. */
static void geometry(uint64_t size, uint16_t *cyl, uint8_t *heads, uint8_t *spt)
{
  uint64_t total = size / 512;
  if (total > 65535ull * 16 * 255)
    total = 65535ull * 16 * 255;
  uint64_t s, h, cth;
  if (total >= 65535ull * 16 * 63) {
    s = 255;
    h = 16;
    cth = total / s;
  } else {
    s = 17;
    cth = total / s;
    h = (cth + 1023) / 1024;
    if (h < 4)
      h = 4;
    if (cth >= h * 1024 || h > 16) {
      s = 31;
      h = 16;
      cth = total / s;
    }
    if (cth >= h * 1024) {
      s = 63;
      h = 16;
      cth = total / s;
    }
  }
  *cyl = (uint16_t)(cth / h);
  *heads = (uint8_t)h;
  *spt = (uint8_t)s;
}

static uint32_t checksum(const uint8_t f[VHD_FOOTER_SIZE])
{
  uint32_t sum = 0;
  for (unsigned i = 0; i < VHD_FOOTER_SIZE; i++)
    if (i < 64 || i >= 68)
      sum += f[i];
  return ~sum;
}

void vhd_footer_make(uint8_t f[VHD_FOOTER_SIZE], uint64_t size, const uint8_t id[16], int64_t unix_time)
{
  memset(f, 0, VHD_FOOTER_SIZE);
  memcpy(f, "conectix", 8);
  be32(f + 8, 2);
  be32(f + 12, 0x00010000);
  be64(f + 16, UINT64_MAX);
  be32(f + 24, unix_time > VHD_EPOCH ? (uint32_t)(unix_time - VHD_EPOCH) : 0);
  memcpy(f + 28, VHD_CREATOR_APP, 4);
  be32(f + 32, VHD_CREATOR_VERSION);
  memcpy(f + 36, "Wi2k", 4);
  be64(f + 40, size);
  be64(f + 48, size);
  uint16_t c;
  uint8_t h, s;
  geometry(size, &c, &h, &s);
  f[56] = (uint8_t)(c >> 8);
  f[57] = (uint8_t)c;
  f[58] = h;
  f[59] = s;
  be32(f + 60, 2);
  memcpy(f + 68, id, 16);
  be32(f + 64, checksum(f));
}

bool vhd_footer_check(const uint8_t f[VHD_FOOTER_SIZE], uint64_t *size)
{
  if (memcmp(f, "conectix", 8) || rd32(f + 60) != 2 || rd32(f + 64) != checksum(f))
    return false;
  if (size)
    *size = rd64(f + 48);
  return true;
}
