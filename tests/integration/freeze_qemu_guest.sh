#!/bin/busybox sh
# freeze_qemu_guest.sh - the /init of freeze_qemu_dm's initramfs: ext4 on device-mapper devices over
# loop disks in the 6.1 guest; freeze_probe finds, freezes and thaws the filesystem of a dm linear
# device and of a linear-over-crypt stack (LVM on LUKS's shape) from the underlying disk, and reports
# (does not freeze) one spanning a disk outside the set.
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev /tmp /run /mnt/a /mnt/b /mnt/c
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
echo "FREEZE-QEMU kernel $(uname -r)"
ok=1
check() { # check NAME CONDITION-STATUS
  if [ "$2" -eq 0 ]; then echo "CHECK $1 ok"; else echo "CHECK $1 FAIL"; ok=0; fi
}
insmod /loop.ko max_loop=4
for m in dm-mod dm-crypt crc16 mbcache jbd2 crc32c_generic ext4; do
  [ -e /$m.ko ] && insmod /$m.ko
done
for i in 1 2 3 4 5 6 7 8 9 10; do [ -b /dev/loop3 ] && break; sleep 0.2; done
export DM_DISABLE_UDEV=1
P=/agent/freeze_probe

# One disk, a dm linear device over all of it, ext4 on the dm device (made on the host).
cp /fs.img /tmp/disk0.img
losetup /dev/loop0 /tmp/disk0.img
echo "0 $(($(blockdev --getsz /dev/loop0))) linear /dev/loop0 0" | /agent/dmsetup create --noudevsync fsdm
check dm-create $?
for i in 1 2 3 4 5 6 7 8 9 10; do [ -b /dev/dm-0 ] && break; sleep 0.2; done
mount -t ext4 /dev/dm-0 /mnt/a
check dm-mount $?
echo data >/mnt/a/file
$P freeze /dev/loop0 >/tmp/a.out 2>/tmp/a.err
check dm-freeze-rc $?
grep -qx "mount /mnt/a" /tmp/a.out
check dm-found-from-disk $?
grep -qx "during /mnt/a frozen" /tmp/a.out
check dm-frozen $?
grep -qx "after /mnt/a thawed" /tmp/a.out
check dm-thawed $?
echo more >>/mnt/a/file && sync
check dm-writable-after $?

# A dm linear device spanning loop1 and loop2: protecting only loop1 reports it, never freezes it.
truncate -s 16M /tmp/disk1.img /tmp/disk2.img
losetup /dev/loop1 /tmp/disk1.img
losetup /dev/loop2 /tmp/disk2.img
printf '0 32768 linear /dev/loop1 0\n32768 32768 linear /dev/loop2 0\n' | /agent/dmsetup create --noudevsync span
check span-create $?
for i in 1 2 3 4 5 6 7 8 9 10; do [ -b /dev/dm-1 ] && break; sleep 0.2; done
dd if=/fs.img of=/dev/dm-1 bs=1M 2>/dev/null && mount -t ext4 /dev/dm-1 /mnt/b
check span-mount $?
$P freeze /dev/loop1 >/tmp/b.out 2>/tmp/b.err
check span-freeze-rc $?
grep -q "^partial /mnt/b: .*dm-1.*loop2" /tmp/b.out && ! grep -q "^mount " /tmp/b.out
check span-partial-reported $?
grep -qx "during /mnt/b thawed" /tmp/b.out
check span-not-frozen $?
$P find /dev/loop1 /dev/loop2 >/tmp/c.out 2>&1
grep -qx "mount /mnt/b" /tmp/c.out && ! grep -q "^partial" /tmp/c.out
check span-both-disks-frozen-set $?

# Two levels: dm-crypt (the null cipher: no key to manage, the same code path) over loop3, a dm
# linear device over that, ext4 on top; found from loop3 through holders/ twice.
cp /fs.img /tmp/disk3.img
losetup /dev/loop3 /tmp/disk3.img
echo "0 65536 crypt cipher_null-ecb - 0 /dev/loop3 0" | /agent/dmsetup create --noudevsync crypt3
check crypt-create $?
for i in 1 2 3 4 5 6 7 8 9 10; do [ -b /dev/dm-2 ] && break; sleep 0.2; done
echo "0 65536 linear /dev/dm-2 0" | /agent/dmsetup create --noudevsync lv3
check crypt-lv-create $?
for i in 1 2 3 4 5 6 7 8 9 10; do [ -b /dev/dm-3 ] && break; sleep 0.2; done
mount -t ext4 /dev/dm-3 /mnt/c
check crypt-lv-mount $?
$P freeze /dev/loop3 >/tmp/d.out 2>/tmp/d.err
check crypt-lv-freeze-rc $?
grep -qx "mount /mnt/c" /tmp/d.out && grep -qx "during /mnt/c frozen" /tmp/d.out && grep -qx "after /mnt/c thawed" /tmp/d.out
check crypt-lv-found-frozen-thawed $?

cat /tmp/a.out /tmp/a.err /tmp/b.out /tmp/b.err /tmp/c.out /tmp/d.out /tmp/d.err
umount /mnt/a /mnt/b /mnt/c
if [ $ok -eq 1 ]; then echo "FREEZE-QEMU-RESULT: PASS"; else echo "FREEZE-QEMU-RESULT: FAIL"; fi
poweroff -f
