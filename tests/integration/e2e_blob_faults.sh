#!/usr/bin/env bash
# e2e_blob_faults.sh - Description: the whole flow through the daemons with 10 % of the appliance's
# storage requests failed by a fault proxy (503 with retry hints, 500, connection resets before and
# after forwarding, delays) between the appliance and Azurite: initial sync of a 128 MiB disk, a
# random writer through 10+ cycles, a checkpoint; the blob and the point's restore (also through the
# faults) are byte-identical to the source, and faults of several kinds were really injected.
set -u
. "$(dirname "$0")/lib/replication.sh"
rpl_setup 550
rpl_azurite_start --inMemoryPersistence
. "$(dirname "$0")/lib/fault_proxy.sh"
fault_proxy_start 0.10 --seed 6 --delay 1
# The appliance reaches storage only through the proxy (same name, same CA, the proxy's port).
AZ_CONNSTR="DefaultEndpointsProtocol=https;AccountName=devstoreaccount1;AccountKey=$AZ_KEY_B64;BlobEndpoint=https://$AZ_HOST:$FP_PORT"
export BLOB_TEST_ZONE=$AZ_ZONE BLOB_TEST_CA=$AZ_CA
# blob_tool reads the result straight from Azurite, not through the faults.
export BLOB_TEST_CONNSTR="DefaultEndpointsProtocol=https;AccountName=devstoreaccount1;AccountKey=$AZ_KEY_B64;BlobEndpoint=https://$AZ_HOST:$AZ_PORT"

applied_all() { # N: the disk protected, every committed cycle applied, the last N or later
  local v
  mapfile -t v < <("$AP" status --state "$RT/app" --json | json_field - disks.0.state disks.0.last_applied_cycle disks.0.last_committed_cycle)
  [ "${#v[@]}" -eq 3 ] && [ "${v[0]}" = protected ] && [ "${v[1]}" = "${v[2]}" ] && [ "${v[1]}" -ge "$1" ]
}

rpl_appliance_init_azure
: > "$FP_LOG"
rpl_appliance_start --rpo 0.5
rpl_agent_register
rpl_loop dev 128M half
rpl_agent_start
"$AG" protect "$dev" --state "$RT/agent" > /dev/null || fail "protect failed"
rpl_wait_cycle "$dev" 1
disk_id=$(rpl_disk_id "$dev")

say "a random writer through 10+ cycles, every storage request through the faults"
start=$(rpl_agent_cycle "$dev")
stop_file=$RT/stop-writer
( while [ ! -e "$stop_file" ]; do
    dd if=/dev/urandom of="$dev" bs=4k count=$((RANDOM % 64 + 1)) seek=$((RANDOM % 32000)) oflag=direct conv=notrunc status=none
    sleep 0.02 # a steady writer, not one that takes a CPU for itself
  done ) &
writer=$!
CLEANUP_PIDS+=("$writer")
rpl_wait_cycle "$dev" $((start + 10))
touch "$stop_file"
wait "$writer"
point=$("$AG" checkpoint "$dev" --wait --state "$RT/agent" | tail -n 1) || fail "checkpoint under faults failed"
[[ $point == rp-* ]] || fail "checkpoint gave '$point'"
last=$(rpl_agent_cycle "$dev")
wait_until 180 "" applied_all "$last" || { tail -20 "$RT/appliance.log" >&2; fail "cycles not applied under faults in 180 s"; }

say "restore through the faults; the blob read directly"
"$AP" restore --state "$RT/app" --disk "$disk_id" --point "$point" --verify "$dev" > "$RT/verify.out" 2>&1 \
  || fail "the point's snapshot differs from the source: $(cat "$RT/verify.out")"
cat "$RT/verify.out"
size=$(blockdev --getsize64 "$dev")
"$B/tests/blob_tool" download replicas "$disk_id.vhd" "$RT/blob" > "$RT/dl.out" 2>&1 || fail "download failed: $(cat "$RT/dl.out")"
cmp -n "$size" "$RT/blob" "$dev" || fail "the page blob differs from the source"

injected=$(grep -vc 'fault=none' "$FP_LOG")
kinds=$(grep -o 'fault=[a-z0-9-]*' "$FP_LOG" | grep -v none | sort -u | wc -l)
total=$(grep -c 'fault=' "$FP_LOG")
echo "fault proxy: $injected faults of $kinds kinds in $total requests"
[ "$injected" -ge 10 ] || fail "too few faults injected ($injected) to mean anything"
[ "$kinds" -ge 3 ] || fail "only $kinds kinds of fault injected"
echo "e2e_blob_faults: ok ($((last - start)) cycles under writes and faults, point $point)"
