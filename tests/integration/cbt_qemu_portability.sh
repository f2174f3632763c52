#!/usr/bin/env bash
# cbt_qemu_portability.sh - Description: the same compiled tracker (the agent binary with its
# embedded BPF object) loads and passes the basic write test on Debian 12's 6.1 kernel booted under
# qemu (TCG, no KVM) from a busybox initramfs with loop.ko, on a loop (blk-mq) and a device-mapper
# (bio-based) disk; and a kernel without BTF gets the fallback with a clear message. With
# MOBILITY_AGENT_CBT_VARIANT set, the guest runs that tracker variant; with QG_KERNEL_SERIES=5.10,
# Debian 11's kernel (older than 5.12: the probe must choose the legacy variant). Skips (77) only when
# qemu or the kernel is not there.
set -u
b=${RPL_BUILD_DIR:?run under ctest}
src=${RPL_SOURCE_DIR:?run under ctest}
. "$src/tests/integration/lib/qemu_guest.sh"
qemu_guest_setup cbt-qemu
qemu_guest_module loop || fail "no loop module for $QG_KVER"
programs=("$b/agent/mobility-agent")
# A device-mapper disk exercises the bio-based path (in-flight records, block_bio_complete).
if dmsetup=$(command -v dmsetup) && qemu_guest_module dm-mod; then
  programs+=("$dmsetup")
else
  echo "note: dmsetup or dm-mod.ko missing: the device-mapper (bio-based) part is not tested"
fi
qemu_guest_programs "${programs[@]}"
# A forced tracker variant (cbt_qemu_portability_bounded) reaches the guest's init as an environment
# variable: the kernel hands unknown NAME=VALUE parameters to init.
[ -n "${MOBILITY_AGENT_CBT_VARIANT:-}" ] && QG_APPEND="MOBILITY_AGENT_CBT_VARIANT=$MOBILITY_AGENT_CBT_VARIANT"
qemu_guest_boot "$src/tests/integration/cbt_qemu_guest.sh"
grep -E "^(CBT-QEMU|CHECK)" "$QG_LOG" | tr -d '\r'
grep -q "CBT-QEMU-RESULT: PASS" "$QG_LOG" && { echo "cbt_qemu_portability: ok ($QG_KVER${MOBILITY_AGENT_CBT_VARIANT:+, $MOBILITY_AGENT_CBT_VARIANT variant})"; exit 0; }
tail -40 "$QG_LOG" | tr -d '\r' >&2
fail "the tracker test did not pass in the $QG_KVER guest (qemu exit $QG_RC)"
