#!/usr/bin/env bash
# cbt_qemu_portability.sh - Description: the same compiled tracker (the agent binary with its
# embedded BPF object) loads and passes the basic write test on Debian 12's 6.1 kernel booted under
# qemu (TCG, no KVM) from a busybox initramfs with loop.ko, on a loop (blk-mq) and a device-mapper
# (bio-based) disk; and a kernel without BTF gets the fallback with a clear message. Skips (77)
# only when qemu or the kernel package is not installed.
set -u
b=${RPL_BUILD_DIR:?run under ctest}
src=${RPL_SOURCE_DIR:?run under ctest}
fail() { echo "FAIL: $*" >&2; exit 1; }
skip() { echo "SKIP: $*" >&2; exit 77; }
qemu=$(command -v qemu-system-x86_64) || skip "qemu-system-x86_64 missing (scripts/setup.sh installs qemu-system-x86)"
busybox=$(command -v busybox) || skip "busybox missing (scripts/setup.sh installs busybox-static)"
kernel=$(ls /boot/vmlinuz-6.1.* 2>/dev/null | sort -V | tail -1)
[ -n "$kernel" ] || skip "no Debian 6.1 kernel in /boot (scripts/setup.sh installs linux-image-amd64)"
kver=${kernel#/boot/vmlinuz-}
loop_ko=$(find "/lib/modules/$kver" -name 'loop.ko*' | head -1)
[ -n "$loop_ko" ] || fail "no loop module for $kver"
file "$busybox" 2>/dev/null | grep -q dynamically && skip "$busybox is not static (install busybox-static)"

work=$(mktemp -d /tmp/cbt-qemu.XXXXXX) || fail "mktemp"
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root/bin" "$root/agent"
cp "$busybox" "$root/bin/busybox"
case "$loop_ko" in
  *.xz) xz -dc "$loop_ko" >"$root/loop.ko" ;;
  *.zst) zstd -qdc "$loop_ko" >"$root/loop.ko" ;;
  *) cp "$loop_ko" "$root/loop.ko" ;;
esac
cp "$b/agent/mobility-agent" "$root/agent/"
binaries=("$b/agent/mobility-agent")
# A device-mapper disk exercises the bio-based path (in-flight records, block_bio_complete).
dm_ko=$(find "/lib/modules/$kver" -name 'dm-mod.ko*' | head -1)
if dmsetup=$(command -v dmsetup) && [ -n "$dm_ko" ]; then
  case "$dm_ko" in
    *.xz) xz -dc "$dm_ko" >"$root/dm-mod.ko" ;;
    *.zst) zstd -qdc "$dm_ko" >"$root/dm-mod.ko" ;;
    *) cp "$dm_ko" "$root/dm-mod.ko" ;;
  esac
  cp "$dmsetup" "$root/agent/dmsetup"
  binaries+=("$dmsetup")
else
  echo "note: dmsetup or dm-mod.ko missing: the device-mapper (bio-based) part is not tested"
fi
# Shared libraries, at the same paths (the dynamic loader included).
for lib in $(ldd "${binaries[@]}" | grep -o '/[^ ]*' | sort -u); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
cp "$src/tests/integration/cbt_qemu_guest.sh" "$root/init"
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$work/initramfs.gz" || fail "cpio"

log=$work/console.log
timeout 180 "$qemu" -machine q35,accel=tcg -cpu max -m 1024 -smp 2 -nographic -no-reboot \
  -kernel "$kernel" -initrd "$work/initramfs.gz" \
  -append "console=ttyS0 panic=-1 quiet loglevel=3" >"$log" 2>&1
rc=$?
grep -E "^(CBT-QEMU|CHECK)" "$log" | tr -d '\r'
grep -q "CBT-QEMU-RESULT: PASS" "$log" && { echo "cbt_qemu_portability: ok ($kver)"; exit 0; }
tail -40 "$log" | tr -d '\r' >&2
fail "the tracker test did not pass in the $kver guest (qemu exit $rc)"
