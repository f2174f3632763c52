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

applied_all() {
  "$AP" status --state "$RT/app" --json | python3 -c '
import json, sys
d = json.load(sys.stdin)["disks"][0]
assert d["state"] == "protected", d
sys.exit(0 if d["last_applied_cycle"] == d["last_committed_cycle"] and d["last_applied_cycle"] >= int(sys.argv[1]) else 1)' "$1"
}

rpl_appliance_init_azure
: > "$FP_LOG"
rpl_appliance_start --rpo 0.5
rpl_agent_register
rpl_loop dev 128M half
rpl_agent_start
"$AG" protect "$dev" --state "$RT/agent" > /dev/null || fail "protect failed"
rpl_wait_cycle "$dev" 1
disk_id=$("$AG" status --state "$RT/agent" --json | python3 -c '
import json, sys
print(next(x["disk_id"] for x in json.load(sys.stdin)["disks"] if x["device"] == sys.argv[1]))' "$dev")

say "a random writer through 10+ cycles, every storage request through the faults"
start=$(rpl_agent_cycle "$dev")
stop_file=$RT/stop-writer
( while [ ! -e "$stop_file" ]; do
    dd if=/dev/urandom of="$dev" bs=4k count=$((RANDOM % 64 + 1)) seek=$((RANDOM % 32000)) oflag=direct conv=notrunc status=none
  done ) &
writer=$!
RPL_PIDS+=("$writer")
rpl_wait_cycle "$dev" $((start + 10))
touch "$stop_file"
wait "$writer"
point=$("$AG" checkpoint "$dev" --wait --state "$RT/agent" | tail -n 1) || fail "checkpoint under faults failed"
[[ $point == rp-* ]] || fail "checkpoint gave '$point'"
last=$(rpl_agent_cycle "$dev")
for i in $(seq 1 1800); do
  applied_all "$last" && break
  [ "$i" -eq 1800 ] && { tail -20 "$RT/appliance.log" >&2; fail "cycles not applied under faults in 180 s"; }
  sleep 0.1
done

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
