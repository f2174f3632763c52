#!/usr/bin/env bash
# freeze_qemu_dm.sh - Description: freeze_find through device-mapper on Debian 12's 6.1 kernel under
# qemu (TCG): an ext4 on a dm linear device over a protected loop disk, and one on dm linear over
# dm-crypt over another, are found, frozen and thawed; one on a dm device spanning a protected and an unprotected disk is reported, not frozen. Builds the
# guest as cbt_qemu_portability.sh does (busybox initramfs, the kernel's own modules, dynamic
# libraries copied at their paths); the ext4 image is made on the host. Skips (77) only when qemu,
# busybox, the 6.1 kernel, dmsetup or mkfs.ext4 is missing.
set -u
b=${RPL_BUILD_DIR:?run under ctest}
src=${RPL_SOURCE_DIR:?run under ctest}
fail() { echo "FAIL: $*" >&2; exit 1; }
skip() { echo "SKIP: $*" >&2; exit 77; }
qemu=$(command -v qemu-system-x86_64) || skip "qemu-system-x86_64 missing (scripts/setup.sh installs qemu-system-x86)"
busybox=$(command -v busybox) || skip "busybox missing (scripts/setup.sh installs busybox-static)"
dmsetup=$(command -v dmsetup) || skip "dmsetup missing"
mkfs=$(command -v mkfs.ext4) || skip "mkfs.ext4 missing"
kernel=$(ls /boot/vmlinuz-6.1.* 2>/dev/null | sort -V | tail -1)
[ -n "$kernel" ] || skip "no Debian 6.1 kernel in /boot (scripts/setup.sh installs linux-image-amd64)"
kver=${kernel#/boot/vmlinuz-}
file "$busybox" 2>/dev/null | grep -q dynamically && skip "$busybox is not static (install busybox-static)"

work=$(mktemp -d /tmp/freeze-qemu.XXXXXX) || fail "mktemp"
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root/bin" "$root/agent"
cp "$busybox" "$root/bin/busybox"
module() { # module NAME: the kernel's NAME.ko, decompressed, as /NAME.ko of the guest
  local ko
  ko=$(find "/lib/modules/$kver" -name "$1.ko*" | head -1)
  [ -n "$ko" ] || fail "no $1 module for $kver"
  case "$ko" in
    *.xz) xz -dc "$ko" >"$root/$1.ko" ;;
    *.zst) zstd -qdc "$ko" >"$root/$1.ko" ;;
    *) cp "$ko" "$root/$1.ko" ;;
  esac
}
for m in loop dm-mod dm-crypt crc16 mbcache jbd2 crc32c_generic ext4; do module "$m"; done
# 32 MiB: the dm linear device over one disk, and the one spanning two 16 MiB disks.
truncate -s 32M "$root/fs.img"
"$mkfs" -q -F "$root/fs.img" || fail "mkfs.ext4"
cp "$b/tests/freeze_probe" "$dmsetup" "$root/agent/"
for lib in $(ldd "$b/tests/freeze_probe" "$dmsetup" | grep -o '/[^ ]*' | sort -u); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
cp "$src/tests/integration/freeze_qemu_guest.sh" "$root/init"
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$work/initramfs.gz" || fail "cpio"

log=$work/console.log
timeout 180 "$qemu" -machine q35,accel=tcg -cpu max -m 1024 -smp 2 -nographic -no-reboot \
  -kernel "$kernel" -initrd "$work/initramfs.gz" \
  -append "console=ttyS0 panic=-1 quiet loglevel=3" >"$log" 2>&1
rc=$?
grep -E "^(FREEZE-QEMU|CHECK|mount |partial |during |after )" "$log" | tr -d '\r'
grep -q "FREEZE-QEMU-RESULT: PASS" "$log" && { echo "freeze_qemu_dm: ok ($kver)"; exit 0; }
tail -40 "$log" | tr -d '\r' >&2
fail "the device-mapper freeze test did not pass in the $kver guest (qemu exit $rc)"
