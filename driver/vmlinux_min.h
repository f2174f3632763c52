/* vmlinux_min.h - the few kernel types cbt.bpf.c reads, declared for CO-RE: field offsets are
 * relocated against the running kernel's BTF at load time, so one object serves many kernels. */
#ifndef VMLINUX_MIN_H
#define VMLINUX_MIN_H

#include <linux/types.h>
#include <linux/bpf.h>

/* Only the fields we read; preserve_access_index makes every access a CO-RE relocation. */
struct bvec_iter {
  __u64 bi_sector;        /* sector_t: 512-byte units, whole-disk absolute at block_bio_queue */
  __u32 bi_size;          /* bytes still to transfer */
} __attribute__((preserve_access_index));

struct gendisk;

struct block_device {
  struct gendisk *bd_disk;
} __attribute__((preserve_access_index));

struct gendisk {
  int major;                   /* the whole disk is dev_t (major, first_minor) = part0->bd_dev */
  int first_minor;
} __attribute__((preserve_access_index));

struct bio {
  struct bio *bi_next;          /* next bio of the same request */
  struct block_device *bi_bdev; /* the partition's block_device for writes through a partition */
  __u32 bi_opf;                 /* blk_opf_t: operation in the low 8 bits, flags above */
  struct bvec_iter bi_iter;
} __attribute__((preserve_access_index));

/* Before 5.12 (commit 309dca309fc3) a bio named its disk, not its block_device: the legacy variant
 * reads this flavour where bi_bdev does not exist. */
struct bio___old {
  struct gendisk *bi_disk;
} __attribute__((preserve_access_index));

struct request {
  __u32 cmd_flags;              /* blk_opf_t: operation in the low 8 bits */
  struct bio *bio;              /* bios not completed yet, linked by bi_next */
} __attribute__((preserve_access_index));

#endif
