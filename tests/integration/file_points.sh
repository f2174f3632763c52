#!/usr/bin/env bash
# file_points.sh - Description: runs file_points (recovery points that cost what changed, through
# the storage interface) on a fresh ext4 filesystem on a loop device, the filesystem without
# reflinks that Debian installs by default; args: DISK_MIB POINTS (1024 20 in the suite).
set -u
b=${RPL_BUILD_DIR:?run under ctest}
disk_mib=${1:-1024}
points=${2:-20}
AP=$b/appliance/replication-appliance

. "$(dirname "$0")/lib/common.sh"
[ "$(id -u)" = 0 ] || skip "needs root (a loop device)"
command -v mkfs.ext4 > /dev/null || skip "mkfs.ext4 missing (scripts/setup.sh installs e2fsprogs)"

W=$(mktemp -d /tmp/rpl-filepoints.XXXXXX)
CLEANUP_PATHS+=("$W")
# Room for the image, its undo files and the journal: the disk's size and a half; and 512 MiB for
# the three 64 MiB disks whose direct cycles run at once (their images and two undo files each).
loop_attach dev "$W/fs.img" $((disk_mib * 3 / 2 + 256 + 512))M
mkfs.ext4 -q -F "$dev" > "$W/mkfs.out" 2>&1 || fail "mkfs.ext4: $(cat "$W/mkfs.out")"
mkdir "$W/mnt"
mount "$dev" "$W/mnt" || fail "cannot mount $dev"
CLEANUP_MOUNTS+=("$W/mnt")

"$AP" init --state "$W/state" --storage "file:$W/mnt/images" > "$W/init.out" 2>&1 \
  || fail "init with file storage: $(cat "$W/init.out")"
mkdir "$W/mnt/work"
"$b/tests/file_points" "$W/state" "$W/mnt/work" "$disk_mib" "$points" || fail "file_points $disk_mib MiB, $points points"
echo "file_points: ok"
