#!/bin/busybox sh
# boot_point_initramfs.sh - the /init of boot_point's initramfs: does what a distribution's initramfs
# does before the real system starts (loads the disk and filesystem drivers, finds root= UUID=... by
# reading each block device's ext4 superblock, mounts it) and hands over to the disk's own
# /sbin/init with switch_root. Anything that stops it prints BOOT-FAIL and powers off.
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev /newroot
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo # the firmware's last line has no newline: ours begin on their own

give_up() {
  echo "BOOT-FAIL initramfs: $*"
  poweroff -f
}

# Failures are reported, not fatal: one of two providers (crc32c-intel, crc32c_generic) is enough.
while read -r m; do
  insmod "/$m.ko" 2>/dev/null || echo "initramfs: $m did not load"
done </modules.load

root=
for arg in $(cat /proc/cmdline); do
  case "$arg" in root=*) root=${arg#root=} ;; esac
done
case "$root" in
  UUID=*) want=$(echo "${root#UUID=}" | tr -d - | tr A-F a-f) ;;
  *) give_up "root=$root is not UUID=... (a device name may not exist where the disk boots)" ;;
esac

# The ext4 superblock: 1024 bytes into the device, magic 0xEF53 (little-endian) at 0x38, UUID at 0x68.
ext4_uuid() {
  [ "$(hexdump -s 1080 -n 2 -e '2/1 "%02x"' "$1" 2>/dev/null)" = 53ef ] || return 1
  hexdump -s 1128 -n 16 -e '16/1 "%02x"' "$1"
}

# The disk appears when its driver has probed it: look for a while, as udev-less initramfs do.
dev=
tries=0
while [ "$tries" -lt 100 ]; do
  tries=$((tries + 1))
  for b in /sys/class/block/*; do
    name=${b##*/}
    [ -b "/dev/$name" ] || continue
    if [ "$(ext4_uuid "/dev/$name")" = "$want" ]; then dev=/dev/$name; break 2; fi
  done
  sleep 0.2
done
[ -n "$dev" ] || give_up "no block device has root $root ($(ls /sys/class/block | tr '\n' ' '))"
echo "initramfs: root $root is $dev"
mount -t ext4 -o ro "$dev" /newroot || give_up "cannot mount $dev"
[ -x /newroot/sbin/init ] || give_up "$dev has no /sbin/init"
umount /proc /sys
mount --move /dev /newroot/dev || umount /dev
exec switch_root /newroot /sbin/init
