#!/usr/bin/env bash
# boot_point.sh - Description: a recovery point boots. A source disk (GPT, ext4 root with busybox,
# an /sbin/init, /etc/fstab naming root by UUID=) on a loop device, mounted and protected by both
# daemons (storage: file: or Azurite page blobs, the first argument), a writer fsyncing files and
# their checksums inside it; a point is taken, made into a disk image and booted in qemu (TCG, the
# Debian 6.1 kernel, an initramfs that finds root by UUID= the way a distribution's does); the
# disk's own init mounts its fstab, checks every fsynced file of the list read before the point and
# prints BOOT-OK. The image booted is the fixed VHD `failover --to` makes (qemu: format vpc). A
# second point, after fstab gained a /dev/sdb1 line without nofail (a device name the booted
# machine does not have), must not boot: BOOT-FAIL naming that line, no BOOT-OK.
# Skips (77) without qemu, a static busybox, the 6.1 kernel, sfdisk or mkfs.ext4 (or Azurite).
set -u
storage=${1:-file}
case "$storage" in file | blob) ;; *) echo "usage: boot_point.sh file|blob" >&2; exit 2 ;; esac
. "$(dirname "$0")/lib/replication.sh"
. "$(dirname "$0")/lib/qemu_guest.sh"
here=$(cd "$(dirname "$0")" && pwd)
rpl_setup 420
command -v sfdisk >/dev/null || skip "sfdisk is missing (fdisk package)"
command -v mkfs.ext4 >/dev/null || skip "mkfs.ext4 is missing (e2fsprogs)"
qemu_guest_setup boot-point
# The guest's disk is virtio (what it is called in the guest is not what it is called here).
qemu_guest_modules virtio_pci virtio_blk ext4

# ---- the source disk: a small system that boots ----
say "source disk: GPT, ext4 root with busybox, /sbin/init, fstab by UUID"
img=$RT/source.img
truncate -s 128M "$img"
printf 'label: gpt\nstart=2048, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=root\n' | sfdisk -q "$img" \
  || fail "sfdisk"
loop_attach dev "$img" 128M -P
wait_until 2 "" test -b "${dev}p1"
# A kernel without the GPT parser (minimal VM kernels) still takes the partition through BLKPG.
[ -b "${dev}p1" ] || partx -a "$dev" 2>/dev/null
[ -b "${dev}p1" ] || fail "partition ${dev}p1 did not appear"
mkfs.ext4 -q -L boot-point-root "${dev}p1" || fail "mkfs.ext4"
uuid=$(blkid -s UUID -o value "${dev}p1") || fail "blkid ${dev}p1"
root=$RT/root
mkdir -p "$root"
mount "${dev}p1" "$root" || fail "mount ${dev}p1"
CLEANUP_MOUNTS+=("$root")
mkdir -p "$root"/{bin,sbin,etc,dev,proc,sys,tmp,run,var/lib/boot-point/files}
cp "$QG_ROOT/bin/busybox" "$root/bin/busybox"
for applet in $("$root/bin/busybox" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
done
install -m 755 "$here/boot_point_init.sh" "$root/sbin/init"
id=$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')
echo "$id" >"$root/etc/boot-point-id"
echo boot-point >"$root/etc/hostname"
cat >"$root/etc/fstab" <<EOF
# <file system> <mount point> <type> <options> <dump> <pass>
UUID=$uuid / ext4 errors=remount-ro 0 1
tmpfs /tmp tmpfs nosuid,nodev 0 0
EOF
sync -f "$root" || fail "sync"

# ---- protected, with a writer inside ----
say "protect it ($storage storage), a writer fsyncing files and their checksums"
if [ "$storage" = blob ]; then
  rpl_azurite_start --inMemoryPersistence
  rpl_appliance_init_azure
else
  rpl_appliance_init
fi
rpl_appliance_start --rpo 0.5
rpl_agent_register
rpl_agent_start --freeze-limit-ms 10000
"$AG" protect "$dev" --state "$RT/agent" >"$RT/protect.out" || fail "protect failed: $(cat "$RT/protect.out")"
disk_id=$(rpl_disk_id "$dev")

# Each file is written once and fsynced, with its directory, before its checksum line is appended
# to the list and the list fsynced: every complete line names a file that is on the disk.
stop_writer=$RT/stop-writer
( cd "$root/var/lib/boot-point" || exit 1
  i=0
  while [ ! -e "$stop_writer" ]; do
    i=$((i + 1))
    head -c $((RANDOM * 2 + 1)) /dev/urandom >"files/f$i"
    sync "files/f$i" files
    sha256sum "files/f$i" >>sums
    sync sums
    sleep 0.05
  done ) &
writer=$!
CLEANUP_PIDS+=("$writer")
rpl_wait_cycle "$dev" 1
c=$(rpl_agent_cycle "$dev")
rpl_wait_cycle "$dev" $((c + 3)) # a few cycles under the writer

# take_point VAR: the list as it stands (its complete lines: their number and sha256, passed to the
# guest), then a checkpoint; the point id into $VAR, the list's figures into VAR_files, VAR_sums.
take_point() {
  local out n
  cp "$root/var/lib/boot-point/sums" "$RT/sums.before"
  n=$(wc -l <"$RT/sums.before")
  [ "$n" -gt 0 ] || fail "the writer has written nothing"
  printf -v "$1_files" '%s' "$n"
  printf -v "$1_sums" '%s' "$(head -n "$n" "$RT/sums.before" | sha256sum | cut -d' ' -f1)"
  out=$("$AG" checkpoint "$dev" --wait --state "$RT/agent") || fail "checkpoint failed: $out"
  [[ $out == *filesystem-consistent* ]] || fail "the point is not filesystem-consistent: $out"
  printf -v "$1" '%s' "$(printf '%s\n' "$out" | tail -n 1)"
  [[ ${!1} == rp-* ]] || fail "checkpoint's last line is not a point id: ${!1}"
}
say "point 1: the disk as it boots"
take_point good
say "point 2: fstab gains a /dev/sdb1 line without nofail"
bad_line="/dev/sdb1 /data ext4 defaults 0 2"
echo "$bad_line" >>"$root/etc/fstab"
sync "$root/etc/fstab" || fail "sync fstab"
take_point bad
touch "$stop_writer"
wait "$writer"
echo "points $good ($good_files files listed) and $bad ($bad_files files listed)"

# point_image POINT FILE: the disk at POINT failed over to the fixed VHD Azure would import (the
# same for both storages); IMAGE_FORMAT is qemu's name for its format.
point_image() {
  "$AP" failover --state "$RT/app" --disk "$disk_id" --point "$1" --to "$2" >"$RT/image.out" 2>&1 \
    || fail "point $1 was not failed over: $(cat "$RT/image.out")"
  IMAGE_FORMAT=vpc
}

# boot POINT NAME: boots the point's image; the console is RT/NAME.console.
boot() {
  local point=$1 name=$2 files sums t0
  files=${name}_files sums=${name}_sums
  point_image "$point" "$RT/$name.vhd"
  QG_APPEND="root=UUID=$uuid boot_point.files=${!files} boot_point.sums=${!sums}"
  t0=$(date +%s)
  qemu_guest_boot "$here/boot_point_initramfs.sh" \
    -drive "file=$RT/$name.vhd,format=$IMAGE_FORMAT,if=virtio,cache=unsafe"
  # Without the firmware's terminal resets, which would otherwise begin the guest's first line.
  sed 's/\r//g; s/\x1bc//g; s/\x1b\[[0-9;?]*[A-Za-z]//g' "$QG_LOG" >"$RT/$name.console"
  rm -f "$RT/$name.image"
  echo "$name: qemu exit $QG_RC after $(($(date +%s) - t0)) s"
  grep -E '^(BOOT-|initramfs:|fstab:)' "$RT/$name.console"
}
show_console() { tail -40 "$RT/$1.console" >&2; }

say "boot point 1 ($good)"
boot "$good" good
grep -q "^initramfs: root UUID=$uuid is /dev/vda1\$" "$RT/good.console" \
  || { show_console good; fail "point 1: the initramfs did not find root UUID=$uuid on the virtio disk"; }
grep -q "^BOOT-INIT pid=1 id=$id\$" "$RT/good.console" \
  || { show_console good; fail "point 1 did not reach the disk's own init (as pid 1)"; }
grep -q "^BOOT-OK files=[0-9]* id=$id\$" "$RT/good.console" \
  || { show_console good; fail "point 1 did not boot to BOOT-OK (qemu exit $QG_RC)"; }
checked=$(sed -n 's/^BOOT-OK files=\([0-9]*\) .*/\1/p' "$RT/good.console")
[ "$checked" -ge "$good_files" ] || fail "the guest checked $checked files, fewer than the $good_files listed before the point"

say "boot point 2 ($bad): must fail on its fstab"
boot "$bad" bad
grep -q "^BOOT-INIT pid=1 id=$id\$" "$RT/bad.console" \
  || { show_console bad; fail "point 2 did not reach the disk's own init: it failed for another reason"; }
grep -q "^BOOT-OK" "$RT/bad.console" && { show_console bad; fail "point 2 booted although its fstab names /dev/sdb1"; }
grep -qF "BOOT-FAIL fstab: cannot mount '$bad_line'" "$RT/bad.console" \
  || { show_console bad; fail "point 2 did not fail on its fstab line '$bad_line'"; }

echo "boot_point ($storage): ok (point $good booted, $checked fsynced files match; point $bad stopped at '$bad_line')"
