#!/usr/bin/env bash
# file_reflink.sh - Description: file: storage on XFS (a loop-mounted file system): a recovery
# point's kept image is a reflink of the replica, so taking it does not use the disk's size in free
# space; after the live image moved on (copy on write), both points still restore byte-identical
# to the source as it was at each.
set -u
. "$(dirname "$0")/lib/replication.sh"
rpl_setup 280
grep -qw xfs /proc/filesystems && command -v mkfs.xfs >/dev/null || { echo "SKIP: needs XFS (kernel, xfsprogs)"; exit 77; }
MIB=$((1024 * 1024))

# The appliance's storage directory is an XFS file system of its own.
truncate -s 2G "$RT/xfs.img"
mkfs.xfs -q "$RT/xfs.img" || fail "mkfs.xfs failed"
mkdir -p "$RT/replica"
mount -o loop "$RT/xfs.img" "$RT/replica" || fail "cannot mount the XFS image"
CLEANUP_MOUNTS+=("$RT/replica")

rpl_appliance_init
rpl_appliance_start --rpo 3600
rpl_agent_register
rpl_agent_start
rpl_loop dev 512M random
"$AG" protect "$dev" --state "$RT/agent" > /dev/null || fail "protect failed"
rpl_wait_cycle "$dev" 1
disk_id=$(basename "$(rpl_replica_of "$dev")" .img)

used_mib() { df --output=used -B1M "$RT/replica" | tail -n 1 | tr -d ' '; }

# point POINT_VAR SEEK_MIB: rewrites 16 MiB of the disk at SEEK_MIB, keeps a copy of the disk,
# takes a point and checks that its image took (next to) no space.
point() {
  local p before after
  dd if=/dev/urandom of="$dev" bs=1M count=16 seek="$2" oflag=direct conv=notrunc status=none || fail "write failed"
  dd if="$dev" of="$RT/src-$1" bs=1M iflag=direct status=none || fail "cannot copy the source"
  before=$(used_mib)
  p=$("$AG" checkpoint "$dev" --wait --state "$RT/agent" | tail -n 1) || fail "checkpoint failed"
  [[ $p == rp-* ]] || fail "checkpoint gave '$p'"
  after=$(used_mib)
  # A copied 512 MiB image would take 512 MiB; the cycle's 16 MiB go into the live image (copy on write).
  [ $((after - before)) -lt 64 ] || fail "point $p took $((after - before)) MiB of the file system: its image was copied, not reflinked"
  printf -v "$1" '%s' "$p"
}

say "two points, the live image rewritten in between"
point p1 0
point p2 100
ls "$RT/replica/$disk_id.img.cycle-"* > /dev/null 2>&1 || fail "no kept image of a point next to the replica"
for p in p1 p2; do
  "$AP" restore --state "$RT/app" --disk "$disk_id" --point "${!p}" --verify "$RT/src-$p" > "$RT/restore.out" 2>&1 \
    || fail "point ${!p} does not restore to the source at its time: $(cat "$RT/restore.out")"
done
cmp "$(rpl_replica_of "$dev")" "$dev" || fail "the live image differs from the source"
echo "file_reflink: ok (points $p1 and $p2 reflinked, each restores byte-identical)"
