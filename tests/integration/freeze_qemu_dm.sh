#!/usr/bin/env bash
# freeze_qemu_dm.sh - Description: freeze_find through device-mapper on Debian 12's 6.1 kernel under
# qemu (TCG): an ext4 on a dm linear device over a protected loop disk, and one on dm linear over
# dm-crypt over another, are found, frozen and thawed; one on a dm device spanning a protected and
# an unprotected disk is reported, not frozen. The guest is built as for cbt_qemu_portability.sh
# (lib/qemu_guest.sh); the ext4 image is made on the host. Skips (77) only when qemu, busybox, the
# 6.1 kernel, dmsetup or mkfs.ext4 is missing.
set -u
b=${RPL_BUILD_DIR:?run under ctest}
src=${RPL_SOURCE_DIR:?run under ctest}
. "$src/tests/integration/lib/qemu_guest.sh"
dmsetup=$(command -v dmsetup) || skip "dmsetup missing"
mkfs=$(command -v mkfs.ext4) || skip "mkfs.ext4 missing"
qemu_guest_setup freeze-qemu
for m in loop dm-mod dm-crypt crc16 mbcache jbd2 crc32c_generic ext4; do
  qemu_guest_module "$m" || fail "no $m module for $QG_KVER"
done
# 32 MiB: the dm linear device over one disk, and the one spanning two 16 MiB disks.
truncate -s 32M "$QG_ROOT/fs.img"
"$mkfs" -q -F "$QG_ROOT/fs.img" || fail "mkfs.ext4"
qemu_guest_programs "$b/tests/freeze_probe" "$dmsetup"
qemu_guest_boot "$src/tests/integration/freeze_qemu_guest.sh"
grep -E "^(FREEZE-QEMU|CHECK|mount |partial |during |after )" "$QG_LOG" | tr -d '\r'
grep -q "FREEZE-QEMU-RESULT: PASS" "$QG_LOG" && { echo "freeze_qemu_dm: ok ($QG_KVER)"; exit 0; }
tail -40 "$QG_LOG" | tr -d '\r' >&2
fail "the device-mapper freeze test did not pass in the $QG_KVER guest (qemu exit $QG_RC)"
