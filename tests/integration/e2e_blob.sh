#!/usr/bin/env bash
# e2e_blob.sh - Description: both daemons over TLS, the appliance storing into Azurite over HTTPS
# through the private DNS zone file: initial sync of a 256 MiB loop disk (half data, half zeros)
# into one page blob per disk, byte-identical (ranged GETs), its sequence number = the last applied
# cycle and a valid fixed-VHD footer; then a random writer through 10+ cycles and a checkpoint;
# both recovery points are blob snapshots: restore of each (--out, --verify) byte-identical to the
# copy of the source kept at that point.
set -u
. "$(dirname "$0")/lib/replication.sh"
rpl_setup
rpl_azurite_start --inMemoryPersistence
export BLOB_TEST_CONNSTR=$AZ_CONNSTR BLOB_TEST_ZONE=$AZ_ZONE BLOB_TEST_CA=$AZ_CA
BT=$B/tests/blob_tool

say "init with Azurite (private DNS zone file, test CA), check, run"
rpl_appliance_init_azure
"$AP" check --state "$RT/app" > "$RT/check.out" 2>&1 || fail "check failed: $(cat "$RT/check.out")"
rpl_appliance_start --rpo 0.5
rpl_agent_register
rpl_loop dev 256M half
rpl_agent_start
"$AG" protect "$dev" --state "$RT/agent" > "$RT/protect.out" || fail "protect failed: $(cat "$RT/protect.out")"
t0=$(date +%s.%N)
rpl_wait_cycle "$dev" 1
t1=$(date +%s.%N)
echo "initial sync into the page blob: 256 MiB in $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}') s"
disk_id=$(rpl_disk_id "$dev")
blob=$disk_id.vhd
size=$(blockdev --getsize64 "$dev")

# applied = committed on the appliance before the blob is read back
applied_through() { # N: every committed cycle applied (one status document), the last N or later
  local v
  mapfile -t v < <("$AP" status --state "$RT/app" --json | json_field - disks.0.last_applied_cycle disks.0.last_committed_cycle)
  [ "${#v[@]}" -eq 2 ] && [ "${v[0]}" = "${v[1]}" ] && [ "${v[0]}" -ge "$1" ]
}
wait_applied() {
  wait_until 60 "" applied_through "$1" || { tail -20 "$RT/appliance.log" >&2; fail "cycles not applied to the blob in 60 s"; }
}

# verify_blob SNAPSHOT|"" : the blob (or snapshot) holds the disk's bytes and a valid footer
check_image() {
  local img=$1 what=$2
  [ "$(stat -c %s "$img")" -eq $(( (size + 1048575) / 1048576 * 1048576 + 512 )) ] || fail "$what: blob size $(stat -c %s "$img")"
  cmp -n "$size" "$img" "$dev" || fail "$what differs from the source disk"
  python3 - "$img" "$size" <<'PY' || fail "$what: VHD footer invalid"
import struct, sys
f = open(sys.argv[1], "rb"); f.seek(-512, 2); b = f.read(512)
assert b[:8] == b"conectix", b[:8]
assert struct.unpack(">I", b[60:64])[0] == 2            # fixed
cs = struct.unpack(">I", b[64:68])[0]
assert cs == (~(sum(b[:64]) + sum(b[68:])) & 0xffffffff), "checksum"
cur = struct.unpack(">Q", b[48:56])[0]
assert cur == (int(sys.argv[2]) + 1048575) // 1048576 * 1048576, cur
PY
}

say "the page blob after the initial sync"
rpl_agent_cycle "$dev" >/dev/null
point=$("$AG" checkpoint "$dev" --wait --state "$RT/agent" | tail -n 1) || fail "checkpoint failed"
[[ $point == rp-* ]] || fail "checkpoint's last line is not a point id: $point"
wait_applied 1
"$BT" download replicas "$blob" "$RT/blob1" > "$RT/dl1.out" 2>&1 || fail "download failed: $(cat "$RT/dl1.out")"
check_image "$RT/blob1" "the page blob after the initial sync"
cp --sparse=always "$dev" "$RT/source-at-$point"   # the source at the point (nothing writes it now)

say "a random writer through 10+ cycles"
start=$(rpl_agent_cycle "$dev")
stop_file=$RT/stop-writer
( while [ ! -e "$stop_file" ]; do
    dd if=/dev/urandom of="$dev" bs=4k count=$((RANDOM % 64 + 1)) seek=$(( (RANDOM * 32768 + RANDOM) % 65000 )) \
       oflag=direct conv=notrunc status=none
    sleep 0.02 # a steady writer, not one that takes a CPU for itself
  done ) &
writer=$!
CLEANUP_PIDS+=("$writer")
rpl_wait_cycle "$dev" $((start + 10))
touch "$stop_file"
wait "$writer"
point2=$("$AG" checkpoint --wait --state "$RT/agent" | tail -n 1) || fail "checkpoint after writes failed"
[[ $point2 == rp-* && $point2 != "$point" ]] || fail "second checkpoint gave '$point2'"
last=$(rpl_agent_cycle "$dev")
wait_applied "$last"
"$BT" download replicas "$blob" "$RT/blob2" > "$RT/dl2.out" 2>&1 || fail "download failed"
check_image "$RT/blob2" "the page blob after 10+ cycles of writes"
cycles=$((last - start))
cp --sparse=always "$dev" "$RT/source-at-$point2"

say "zeros written over data reach the blob (cleared pages, not skipped ones)"
dd if=/dev/zero of="$dev" bs=1M count=8 seek=4 oflag=direct conv=notrunc status=none
cmp -s -n $((8 << 20)) -i $((4 << 20)):$((4 << 20)) "$RT/blob2" /dev/zero && fail "the range to zero held no data"
point3=$("$AG" checkpoint --wait --state "$RT/agent" | tail -n 1) || fail "checkpoint after zeroing failed"
[[ $point3 == rp-* && $point3 != "$point2" ]] || fail "third checkpoint gave '$point3'"
wait_applied "$(rpl_agent_cycle "$dev")"
"$BT" download replicas "$blob" "$RT/blob3" > "$RT/dl3.out" 2>&1 || fail "download failed"
check_image "$RT/blob3" "the page blob after zeros over data"
rm -f "$RT/blob3"
cp --sparse=always "$dev" "$RT/source-at-$point3"

say "restore the newest point and the older one from their snapshots"
for p in "$point2" "$point"; do
  "$AP" restore --state "$RT/app" --disk "$disk_id" --point "$p" --out "$RT/restored-$p" > "$RT/restore.out" 2>&1 \
    || fail "restore of $p failed: $(cat "$RT/restore.out")"
  cat "$RT/restore.out"
  cmp "$RT/restored-$p" "$RT/source-at-$p" || fail "the restored image of $p differs from the source at $p"
  "$AP" restore --state "$RT/app" --disk "$disk_id" --point "$p" --verify "$RT/source-at-$p" > /dev/null \
    || fail "restore --verify of $p says it differs"
done
cmp -s "$RT/source-at-$point" "$RT/source-at-$point2" && fail "the writer changed nothing between the points"
"$AP" restore --state "$RT/app" --disk "$disk_id" --point "$point" --verify "$RT/source-at-$point2" > /dev/null 2>&1 \
  && fail "restore --verify did not see that the older point differs from the newer source"
"$AP" restore --state "$RT/app" --disk "$disk_id" --verify "$RT/source-at-$point3" > /dev/null \
  || fail "restore --verify of the latest point (no --point) failed"
out=$("$AP" restore --state "$RT/app" --disk "$disk_id" --point rp-999 --out "$RT/nope" 2>&1) && fail "an unknown point was restored"
[[ $out == *"no such recovery point"* ]] || fail "unclear error for an unknown point: $out"
[ ! -e "$RT/nope" ] || fail "a failed restore left its output file"

say "status"
"$AP" status --state "$RT/app" --json > "$RT/status.json" || fail "status --json failed"
mapfile -t v < <(json_field "$RT/status.json" storage disks.0.state disks.0.last_committed_cycle disks.0.last_applied_cycle disks.0.last_point)
# the next RPO cycle may have committed since the restore: its upload may still be under way
[ "${#v[@]}" -eq 5 ] && [ "${v[0]}" = azure ] && [ "${v[1]}" = protected ] && [ $((v[2] - v[3])) -le 1 ] && [ "${v[4]}" != null ] \
  || fail "appliance status is not as expected: $(cat "$RT/status.json")"
grep -q "stale write fenced\|applying cycle" "$RT/appliance.log" && fail "the appliance reported apply failures: $(grep -m3 'fenced\|applying' "$RT/appliance.log")"
echo "e2e_blob: ok ($cycles cycles under writes, points $point $point2, blob $blob)"
