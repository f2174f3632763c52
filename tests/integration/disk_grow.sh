#!/usr/bin/env bash
# disk_grow.sh - Description: a protected loop disk grown online (its file extended, `losetup -c`)
# under writes: the agent notices before its next cycle, the appliance grows the replica (file, or
# with "blob" the page blob and its VHD footer, in Azurite), the new range syncs and the replica ends
# equal to the disk, with no cycle refused; then a shrink is refused once with a clear reason (the
# disk in error on both sides) and no cycle is asked of it after.
set -u
. "$(dirname "$0")/lib/replication.sh"
mode=${1:-file}
rpl_setup 240

if [ "$mode" = blob ]; then
  rpl_azurite_start --inMemoryPersistence
  export BLOB_TEST_CONNSTR=$AZ_CONNSTR BLOB_TEST_ZONE=$AZ_ZONE BLOB_TEST_CA=$AZ_CA
  rpl_appliance_init_azure
else
  rpl_appliance_init
fi
rpl_appliance_start --rpo 0.5
rpl_agent_register
rpl_agent_start
img=$RT/grow.img
head -c 64M /dev/urandom > "$img"
loop_attach dev "$img" 64M
"$AG" protect "$dev" --state "$RT/agent" >/dev/null || fail "protect failed"
rpl_wait_cycle "$dev" 1
id=$(rpl_disk_id "$dev")

agent_disk() { "$AG" status --state "$RT/agent" --json | json_field - "disks.[device=$dev].$1"; }
app_disk() { "$AP" status --state "$RT/app" --json | json_field - "disks.[disk_id=$id].$1"; }

# Writes in the disk's first 64 MiB until told to stop: the growth happens under them.
writer() {
  while [ ! -e "$RT/stop-writer" ]; do
    dd if=/dev/urandom of="$dev" bs=64k count=4 seek=$((RANDOM % 1000)) oflag=direct conv=notrunc status=none
    sleep 0.02 # a steady writer, not one that takes a CPU for itself
  done
}
writer &
writer_pid=$!
CLEANUP_PIDS+=("$writer_pid")
stop_writer() { touch "$RT/stop-writer"; wait "$writer_pid"; }

say "grow the disk from 64 MiB to 96 MiB under writes, then write into the new range"
before=$(rpl_agent_cycle "$dev")
truncate -s 96M "$img"
losetup -c "$dev" || fail "losetup -c failed"
[ "$(blockdev --getsize64 "$dev")" -eq $((96 << 20)) ] || fail "the loop device did not grow"
dd if=/dev/urandom of="$dev" bs=1M count=4 seek=80 oflag=direct conv=notrunc status=none
grown() { [ "$(agent_disk size)" -eq $((96 << 20)) ] && [ "$(app_disk size)" -eq $((96 << 20)) ]; }
wait_until -i 1 60 "the agent and the appliance did not both take the new size" grown
rpl_wait_cycle "$dev" $((before + 2))
stop_writer
point=$("$AG" checkpoint --wait "$dev" --state "$RT/agent" | tail -n 1) || fail "checkpoint after the growth failed"
wait_until -i 1 60 "the appliance did not apply its cycles" rpl_disk_applied "$id"
if [ "$mode" = blob ]; then # the page blob: the disk, then its VHD footer saying the new size
  replica=$RT/blob
  "$B/tests/blob_tool" download replicas "$id.vhd" "$replica" > "$RT/dl.out" 2>&1 || fail "download: $(cat "$RT/dl.out")"
  [ "$(stat -c %s "$replica")" -eq $(((96 << 20) + 512)) ] || fail "the blob is $(stat -c %s "$replica") bytes"
  python3 - "$replica" $((96 << 20)) <<'PY' || fail "the blob's VHD footer does not say the new size"
import struct, sys
f = open(sys.argv[1], "rb"); f.seek(-512, 2); b = f.read(512)
assert b[:8] == b"conectix", b[:8]
assert struct.unpack(">Q", b[40:48])[0] == int(sys.argv[2]), "original size"
assert struct.unpack(">Q", b[48:56])[0] == int(sys.argv[2]), "current size"
assert struct.unpack(">I", b[64:68])[0] == (~(sum(b[:64]) + sum(b[68:])) & 0xffffffff), "checksum"
PY
  truncate -s $((96 << 20)) "$replica"
else
  replica=$(rpl_replica_of "$dev")
  [ "$(stat -c %s "$replica")" -eq $((96 << 20)) ] || fail "the replica is $(stat -c %s "$replica") bytes, not 96 MiB"
fi
cmp "$replica" "$dev" || fail "the replica differs from the grown disk"
refused=$(agent_disk refused_cycles)
[ "$refused" -eq 0 ] || fail "$refused cycles were refused around the growth"
[ "$(app_disk state)" = protected ] || fail "the disk is $(app_disk state) after the growth: $(app_disk reason)"
reason=$("$AG" cbt status "$dev" --state "$RT/agent" --json | json_field - "devices.0.resync.reason")
[ "$reason" = resize ] || fail "the tracker's last resync reason is $reason, not resize"
"$AP" restore --state "$RT/app" --disk "$id" --point "$point" --verify "$dev" >/dev/null \
  || fail "the point taken after the growth does not verify against the disk"

say "shrink it to 48 MiB: refused once, with the reason, and no cycle asked after"
truncate -s 48M "$img"
losetup -c "$dev" || fail "losetup -c failed"
in_error() { [ "$(app_disk state)" = error ] && [ "$(agent_disk state)" = error ]; }
wait_until -i 1 60 "the shrunk disk is not in error on both sides" in_error
app_disk reason | grep -q "shrinking a protected disk is not supported" \
  || fail "the appliance's reason does not say why: $(app_disk reason)"
agent_disk error | grep -q "shrank from 100663296 to 50331648 bytes" \
  || fail "the agent's error does not say why: $(agent_disk error)"
committed=$(app_disk last_committed_cycle)
# No cycle is asked of a disk in error: a loop would show as the agent's NACKs in the appliance's
# log of refused cycles and as new cycles started; give it twenty RPO periods to show one.
sleep 10
[ "$(app_disk last_committed_cycle)" -eq "$committed" ] || fail "cycles went on after the shrink"
[ "$(app_disk state)" = error ] || fail "the shrunk disk left the error state: $(app_disk state)"
[ "$(agent_disk refused_cycles)" -eq 0 ] || fail "the appliance refused cycles after the shrink"
echo "disk_grow $mode: ok (grown 64 -> 96 MiB, replica equal, 0 cycles refused, point $point; shrink refused)"
