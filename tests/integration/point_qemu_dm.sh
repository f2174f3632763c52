#!/usr/bin/env bash
# point_qemu_dm.sh - Description: a recovery point of a disk whose ext4 sits on a device-mapper
# linear device over it, made by the real daemons (appliance on 127.0.0.1, agent with its eBPF
# tracker) inside Debian 12's 6.1 kernel under qemu (TCG): under a writer, `checkpoint --wait` freezes
# the filesystem on the dm device (the point is filesystem-consistent), and the point restored from
# the replica passes e2fsck -fn and holds a file synced before it; the same for an ext4 on an LVM
# logical volume over a second disk where lvm2 is installed, and then one point of both disks at one
# instant (both filesystems frozen together, each restored clean). The guest is built as for
# freeze_qemu_dm.sh (lib/qemu_guest.sh); the ext4 image is made on the host. Skips (77) only when
# qemu, busybox, the 6.1 kernel, dmsetup, mkfs.ext4 or e2fsck is missing.
set -u
b=${RPL_BUILD_DIR:?run under ctest}
src=${RPL_SOURCE_DIR:?run under ctest}
. "$src/tests/integration/lib/qemu_guest.sh"
dmsetup=$(command -v dmsetup) || skip "dmsetup missing"
mkfs=$(command -v mkfs.ext4) || skip "mkfs.ext4 missing"
e2fsck=$(command -v e2fsck) || skip "e2fsck missing"
qemu_guest_setup point-qemu
for m in loop dm-mod crc16 mbcache jbd2 crc32c_generic ext4; do
  qemu_guest_module "$m" || fail "no $m module for $QG_KVER"
done
# 64 MiB: the whole protected disk, the dm device over it and so the filesystem.
truncate -s 64M "$QG_ROOT/fs.img"
"$mkfs" -q -F "$QG_ROOT/fs.img" || fail "mkfs.ext4"
programs=("$b/agent/mobility-agent" "$b/appliance/replication-appliance" "$dmsetup" "$e2fsck")
# An LVM logical volume too where lvm2 is installed: 32 MiB of ext4 copied into a 40 MiB volume.
if lvm=$(command -v lvm); then
  programs+=("$lvm")
  truncate -s 32M "$QG_ROOT/lv.img"
  "$mkfs" -q -F "$QG_ROOT/lv.img" || fail "mkfs.ext4"
else
  echo "note: lvm missing (scripts/setup.sh installs lvm2): the LVM part is not tested"
fi
qemu_guest_programs "${programs[@]}"
# Both daemons and two disks under TCG: slow when the machine is busy.
QG_TIMEOUT=${QG_TIMEOUT:-360} qemu_guest_boot "$src/tests/integration/point_qemu_guest.sh"
grep -E "^(POINT-QEMU|CHECK)" "$QG_LOG" | tr -d '\r'
grep -q "POINT-QEMU-RESULT: PASS" "$QG_LOG" && { echo "point_qemu_dm: ok ($QG_KVER)"; exit 0; }
tail -60 "$QG_LOG" | tr -d '\r' >&2
fail "the recovery point test on device-mapper did not pass in the $QG_KVER guest (qemu exit $QG_RC)"
