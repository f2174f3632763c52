#!/usr/bin/env bash
# cbt_reboot_qemu.sh - Description: a clean reboot costs no resync. In Debian 12's 6.1 kernel under
# qemu (TCG), booted three times with the same two disks, both daemons replicate an ext4 disk; writes
# after the last cycle, a clean shutdown with `cbt save`, and `cbt resume` at the next boot before any
# write keep the tracker's UUID and its unsent changes (no resync; the next cycle brings the replica
# equal to the disk). A write slipped in before `cbt resume` makes the disk resync with the reason
# written-before-attach, and the replica ends equal. The guest's /init is cbt_reboot_guest.sh. With
# QG_KERNEL_SERIES=5.10 the guest runs Debian 11's kernel (the legacy tracker variant). Skips (77)
# only when qemu, busybox, the guest's kernel or mkfs.ext4 is missing.
set -u
b=${RPL_BUILD_DIR:?run under ctest}
src=${RPL_SOURCE_DIR:?run under ctest}
. "$src/tests/integration/lib/qemu_guest.sh"
mkfs=$(command -v mkfs.ext4) || skip "mkfs.ext4 missing"
qemu_guest_setup cbt-reboot
qemu_guest_modules virtio_pci virtio_blk ext4
truncate -s 64M "$QG_WORK/data.img"
"$mkfs" -q -F "$QG_WORK/data.img" || fail "mkfs.ext4 data"
truncate -s 384M "$QG_WORK/state.img"
"$mkfs" -q -F "$QG_WORK/state.img" || fail "mkfs.ext4 state"
qemu_guest_programs "$b/agent/mobility-agent" "$b/appliance/replication-appliance"
for phase in 1 2 3; do
  QG_APPEND="reboot_phase=$phase" QG_TIMEOUT=${QG_TIMEOUT:-300} qemu_guest_boot "$src/tests/integration/cbt_reboot_guest.sh" \
    -drive "file=$QG_WORK/data.img,format=raw,if=virtio,cache=unsafe" \
    -drive "file=$QG_WORK/state.img,format=raw,if=virtio,cache=unsafe"
  grep -E "^(REBOOT|CHECK)" "$QG_LOG" | tr -d '\r'
  if ! grep -q "REBOOT-PHASE-$phase: PASS" "$QG_LOG"; then
    tail -60 "$QG_LOG" | tr -d '\r' >&2
    fail "boot $phase of the reboot test did not pass (qemu exit $QG_RC)"
  fi
done
echo "cbt_reboot_qemu: ok ($QG_KVER: a clean reboot kept tracking; a write before resume made it resync)"
