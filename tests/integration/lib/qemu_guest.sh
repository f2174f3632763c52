# qemu_guest.sh - sourced by the tests that run our code in a Debian kernel under qemu (TCG), Debian
# 12's 6.1 unless QG_KERNEL_SERIES says otherwise: a busybox initramfs with the kernel's own modules
# and our programs (their shared libraries copied at the same paths), an /init script of the
# test's, one boot whose console is read back.
#
#   QG_KERNEL_SERIES            6.1 (the default): the newest /boot/vmlinuz-6.1.* and its modules in
#                               /lib/modules (scripts/setup.sh installs linux-image-amd64);
#                               5.10: Debian 11's, a kernel older than 5.12, unpacked (not installed)
#                               by scripts/guest_kernel.sh into QG_KERNEL_CACHE
#                               (/var/cache/replication-tests/kernel-5.10: boot/vmlinuz-VERSION,
#                               lib/modules/VERSION, read with modprobe -d)
#   qemu_guest_setup NAME       skips (77) without qemu, a static busybox or the series' kernel;
#                               sets QG_KVER and QG_ROOT (the initramfs tree, removed by the trap)
#   qemu_guest_module NAME      the kernel's NAME.ko, decompressed, as /NAME.ko; 1 when there is none
#   qemu_guest_modules NAME...  each with the modules it depends on (modprobe --show-depends: the
#                               kernel's own order), as /FILE.ko, their load order appended to
#                               /modules.load (one per line, no repeats); built-in ones are left out
#   qemu_guest_programs FILE... copied into /agent, with the shared libraries they need
#   qemu_guest_boot INIT [QEMU-ARGS...]
#                               INIT as /init, boots (QG_TIMEOUT s at most, default 180) with QG_APPEND
#                               added to the kernel command line; QG_LOG is the console, QG_RC qemu's exit;
#                               a guest that hangs before its init starts is booted once more

. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

QG_KERNEL_CACHE=/var/cache/replication-tests/kernel-5.10

qemu_guest_setup() {
  QG_QEMU=$(command -v qemu-system-x86_64) || skip "qemu-system-x86_64 missing (scripts/setup.sh installs qemu-system-x86)"
  local busybox
  busybox=$(command -v busybox) || skip "busybox missing (scripts/setup.sh installs busybox-static)"
  case "${QG_KERNEL_SERIES:-6.1}" in
    6.1)
      QG_MODDIR= # modprobe's default root: /lib/modules
      QG_KERNEL=$(ls /boot/vmlinuz-6.1.* 2>/dev/null | sort -V | tail -1)
      [ -n "$QG_KERNEL" ] || skip "no Debian 6.1 kernel in /boot (scripts/setup.sh installs linux-image-amd64)"
      ;;
    5.10)
      QG_MODDIR=$QG_KERNEL_CACHE
      # PACKAGE is written last (scripts/guest_kernel.sh): without it the cache is not complete.
      [ -s "$QG_MODDIR/PACKAGE" ] && QG_KERNEL=$(ls "$QG_MODDIR"/boot/vmlinuz-5.10.* 2>/dev/null | sort -V | tail -1) &&
        [ -n "$QG_KERNEL" ] || skip "no Debian 11 5.10 kernel in $QG_MODDIR (scripts/guest_kernel.sh fetches it)"
      ;;
    *) fail "QG_KERNEL_SERIES=$QG_KERNEL_SERIES: 6.1 or 5.10" ;;
  esac
  QG_KVER=${QG_KERNEL##*/vmlinuz-}
  file "$busybox" 2>/dev/null | grep -q dynamically && skip "$busybox is not static (install busybox-static)"
  QG_WORK=$(mktemp -d "/tmp/$1.XXXXXX") || fail "mktemp"
  CLEANUP_PATHS+=("$QG_WORK")
  QG_ROOT=$QG_WORK/root
  mkdir -p "$QG_ROOT/bin" "$QG_ROOT/agent"
  cp "$busybox" "$QG_ROOT/bin/busybox"
}

qemu_guest_module() {
  local ko
  ko=$(find "$QG_MODDIR/lib/modules/$QG_KVER" -name "$1.ko*" | head -1)
  [ -n "$ko" ] || return 1
  qemu_guest_ko "$ko" "$1"
}

# qemu_guest_ko PATH NAME: the module file PATH, decompressed, as /NAME.ko
qemu_guest_ko() {
  case "$1" in
    *.xz) xz -dc "$1" >"$QG_ROOT/$2.ko" ;;
    *.zst) zstd -qdc "$1" >"$QG_ROOT/$2.ko" ;;
    *) cp "$1" "$QG_ROOT/$2.ko" ;;
  esac
}

qemu_guest_modules() {
  local name deps word path base root=()
  [ -n "$QG_MODDIR" ] && root=(-d "$QG_MODDIR")
  touch "$QG_ROOT/modules.load"
  for name in "$@"; do
    deps=$(modprobe "${root[@]}" -S "$QG_KVER" --show-depends "$name") || fail "no module $name for $QG_KVER"
    while read -r word path _; do
      [ "$word" = insmod ] || continue # "builtin NAME": nothing to load
      base=$(basename "$path")
      base=${base%%.ko*}
      grep -qx "$base" "$QG_ROOT/modules.load" && continue
      qemu_guest_ko "$path" "$base" || fail "cannot copy $path"
      echo "$base" >>"$QG_ROOT/modules.load"
    done <<<"$deps"
  done
}

qemu_guest_programs() {
  local lib
  cp "$@" "$QG_ROOT/agent/"
  # Given several programs, ldd heads each list with 'PROGRAM:', a line that names no library.
  for lib in $(ldd "$@" | grep -v ':$' | grep -o '/[^ ]*' | sort -u); do # the dynamic loader included
    mkdir -p "$QG_ROOT$(dirname "$lib")"
    cp -L "$lib" "$QG_ROOT$lib"
  done
}

qemu_guest_boot() {
  local init=$1 attempt
  shift
  cp "$init" "$QG_ROOT/init.test"
  chmod +x "$QG_ROOT/init.test"
  # A line before the test's own /init: proof that the kernel got as far as starting it.
  printf '#!/bin/busybox sh\necho\necho "qemu-guest: init started"\nexec /init.test\n' >"$QG_ROOT/init"
  chmod +x "$QG_ROOT/init"
  (cd "$QG_ROOT" && find . | cpio -o -H newc --quiet | gzip -1) >"$QG_WORK/initramfs.gz" || fail "cpio"
  QG_LOG=$QG_WORK/console.log
  # TCG now and then hangs a guest in early boot (silent up to the timeout, init never started):
  # that is the emulator's, not ours, so it is booted once more, and said so. A guest that reached
  # its init is never booted twice.
  for attempt in 1 2; do
    # In the background and waited for, so that a signal to the test is not held until qemu ends;
    # the trap's SIGTERM to timeout is passed on to qemu.
    timeout "${QG_TIMEOUT:-180}" "$QG_QEMU" -machine q35,accel=tcg -cpu max -m 1024 -smp 2 -nographic -no-reboot \
      -kernel "$QG_KERNEL" -initrd "$QG_WORK/initramfs.gz" \
      -append "console=ttyS0 panic=-1 quiet loglevel=3${QG_APPEND:+ $QG_APPEND}" "$@" >"$QG_LOG" 2>&1 </dev/null &
    CLEANUP_SERVICES+=("$!")
    wait "$!"
    QG_RC=$?
    [ "$QG_RC" = 124 ] && ! grep -q "^qemu-guest: init started" "$QG_LOG" && [ "$attempt" = 1 ] || break
    echo "qemu-guest: the guest hung before its init started (TCG); booting it once more" >&2
    cp "$QG_LOG" "$QG_WORK/console.hung.log"
  done
}
