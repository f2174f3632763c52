#!/bin/sh
# boot_point_init.sh - the /sbin/init that boot_point.sh installs on its source disk; runs in the
# guest booted from the recovery point: mounts what the disk's /etc/fstab says (as a system's
# startup does: a line that cannot be mounted stops the boot unless it has nofail), checks the files
# the writer fsynced before the point against the checksum list it kept on the disk, and prints
# BOOT-OK or BOOT-FAIL REASON on the console before it powers off.
export PATH=/bin:/sbin
# The API filesystems first, as systemd does before it reads fstab (mount needs /proc/mounts).
[ -e /dev/console ] || mount -t devtmpfs devtmpfs /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys

fail() {
  echo "BOOT-FAIL $*"
  sync
  poweroff -f
}

echo "BOOT-INIT pid=$$ id=$(cat /etc/boot-point-id)"

while read -r spec dir type opts rest; do
  case "$spec" in '' | '#'*) continue ;; esac
  line="$spec $dir $type $opts $rest"
  case "$spec" in
    UUID=* | LABEL=*) dev=$(findfs "$spec" 2>/dev/null) || dev=$spec ;;
    *) dev=$spec ;;
  esac
  if [ "$dir" = / ]; then
    # The initramfs mounted root read-only; the fstab line says what it becomes.
    [ -b "$dev" ] || fail "fstab: root '$line' names no device here"
    mount -o "remount,rw,$opts" / || fail "fstab: cannot remount root rw: '$line'"
    continue
  fi
  mkdir -p "$dir"
  if ! mount -t "$type" -o "$opts" "$dev" "$dir"; then
    case ",$opts," in
      *,nofail,*) echo "fstab: not mounted (nofail): '$line'" ;;
      *) fail "fstab: cannot mount '$line'" ;;
    esac
  fi
done </etc/fstab
echo "fstab: mounted $(grep -c '^' /proc/mounts) filesystems"

# What the test read from the source before the point: how many lines the checksum list had then
# and their sha256, so that the list here is checked to be that one, and every file in it.
want_n='' want_sum=''
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    boot_point.files=*) want_n=${arg#*=} ;;
    boot_point.sums=*) want_sum=${arg#*=} ;;
  esac
done
list=/var/lib/boot-point/sums
[ -s "$list" ] || fail "checksums: $list is missing or empty"
[ -n "$want_n" ] && [ -n "$want_sum" ] || fail "checksums: no boot_point.files/sums on the command line"
got_sum=$(head -n "$want_n" "$list" | sha256sum)
[ "${got_sum%% *}" = "$want_sum" ] || fail "checksums: the first $want_n lines of $list are not those read before the point"

# An append under way at the point may have left a last line without its newline: read skips it.
n=0
cd /var/lib/boot-point || fail "checksums: no /var/lib/boot-point"
while read -r sum file; do
  got=$(sha256sum "$file" 2>/dev/null) || fail "checksum: $file is missing"
  [ "${got%% *}" = "$sum" ] || fail "checksum: $file differs"
  n=$((n + 1))
done <"$list"
[ "$n" -ge "$want_n" ] || fail "checksums: $n files checked, fewer than the $want_n listed before the point"

echo "BOOT-OK files=$n id=$(cat /etc/boot-point-id)"
cd /
mount -o remount,ro /
sync
poweroff -f
