#!/usr/bin/env bash
# e2e_blob_direct.sh - Description: the initial sync is written straight into the page blob, not
# through the cache (logged "committed and applied", no cache used); kill -9 of the appliance
# mid-sync, then the first 32 MiB of the disk (already in the blob) zeroed: the agent's retry writes
# the blob again and clears those pages, and the blob equals the source after cycle 1 alone; a second
# disk's sync with Azurite stopped mid-way: the cycle is refused, sent again through the cache, and
# uploaded once Azurite is back; its blob equals the source.
set -u
. "$(dirname "$0")/lib/replication.sh"
rpl_setup 600
rpl_azurite_start
export BLOB_TEST_CONNSTR=$AZ_CONNSTR BLOB_TEST_ZONE=$AZ_ZONE BLOB_TEST_CA=$AZ_CA
BT=$B/tests/blob_tool
MIB=$((1 << 20))

# sync_done DEV: bytes of the initial sync the agent has sent so far (0 before it starts)
sync_done() {
  local phase done total rest
  read -r phase done total rest <<< "$("$AG" status --progress "$1" --state "$RT/agent" 2>/dev/null | head -n 1)"
  [ "$phase" = initial-sync ] && echo "${done:-0}" || echo 0
}
sync_sent() { [ "$(sync_done "$1")" -ge $(($2 * MIB)) ]; }
# wait_sync_sent DEV MIB: waits (up to 120 s) until the agent has sent MIB MiB of DEV's initial sync
wait_sync_sent() {
  wait_until 120 "" sync_sent "$1" "$2" || fail "the initial sync of $1 did not reach $2 MiB in 120 s"
}
# appliance_field DISK_ID KEY: one field of the disk in the appliance's status --json
appliance_field() {
  "$AP" status --state "$RT/app" --json | json_field - "disks.[disk_id=$1].$2"
}
# appliance_at_least DISK_ID KEY N: that field is N or more
appliance_at_least() { [ "$(appliance_field "$1" "$2")" -ge "$3" ]; }
# blob_equals_source DEV DISK_ID WHAT: the blob's disk area is byte-identical to DEV
blob_equals_source() {
  local size
  size=$(blockdev --getsize64 "$1")
  "$BT" download replicas "$2.vhd" "$RT/blob" > "$RT/dl.out" 2>&1 || fail "$3: download failed: $(cat "$RT/dl.out")"
  cmp -n "$size" "$RT/blob" "$1" || fail "$3: the blob differs from the source"
}

rpl_appliance_init_azure
# 16 MB/s: the sync of 256 MiB lasts about 16 s, long enough to be interrupted where the test says
rpl_appliance_start --rpo 3600 --upload-limit 16
rpl_agent_register
rpl_agent_start

say "disk 1: initial sync straight into the blob, the appliance killed at 3/4"
rpl_loop dev1 256M random
"$AG" protect "$dev1" --state "$RT/agent" > /dev/null || fail "protect $dev1 failed"
id1=$(rpl_disk_id "$dev1")
wait_sync_sent "$dev1" 192
"$AP" events --state "$RT/app" > "$RT/events0.out" || fail "events failed"
python3 -c '
import json, sys
sys.exit(any(e["type"] == "committed" and e["disk_id"] == sys.argv[2] and e["cycle"] == 1
             for e in map(json.loads, open(sys.argv[1]))))' "$RT/events0.out" "$id1" \
  || fail "cycle 1 ended before the appliance could be killed"
kill -9 "$RPL_AP_PID"
wait "$RPL_AP_PID" 2>/dev/null
# The first 32 MiB went into the blob before the kill (the sync runs in disk order, at most 20
# runs of 4 MiB behind what the agent sent): the zeros written now must be cleared by the retry.
"$BT" download replicas "$id1.vhd" "$RT/blob" > "$RT/dl.out" 2>&1 || fail "download after the kill failed: $(cat "$RT/dl.out")"
cmp -n $((32 * MIB)) "$RT/blob" "$dev1" || fail "the first 32 MiB were not in the blob at the kill"
dd if=/dev/zero of="$dev1" bs=1M count=32 oflag=direct conv=notrunc status=none || fail "cannot zero the disk's start"
rpl_appliance_start --rpo 3600
rpl_wait_cycle "$dev1" 1
# The appliance's events (the machine interface) say how cycle 1 was committed: straight into the blob.
"$AP" events --state "$RT/app" > "$RT/events.out" || fail "events failed"
python3 -c '
import json, sys
ev = [json.loads(l) for l in open(sys.argv[1])]
c = [e for e in ev if e["type"] == "committed" and e["disk_id"] == sys.argv[2] and e["cycle"] == 1]
sys.exit(0 if c and c[-1]["direct"] and c[-1]["upload_bytes"] > 0 else 1)' "$RT/events.out" "$id1" \
  || fail "the retried initial sync did not go straight into the blob: $(grep "$id1" "$RT/events.out")"
[ "$(appliance_field "$id1" cache_bytes)" -eq 0 ] || fail "the direct initial sync used the cache"
[ "$(appliance_field "$id1" last_applied_cycle)" -eq 1 ] || fail "disk 1: not at cycle 1 (the zeros would come with cycle 2)"
blob_equals_source "$dev1" "$id1" "disk 1 after the retried initial sync"
say "disk 1: the retry cleared the zeroed pages; blob byte-identical at cycle 1"

say "disk 2: Azurite stopped during its initial sync"
kill "$RPL_AP_PID"
wait "$RPL_AP_PID" 2>/dev/null
rpl_appliance_start --rpo 3600 --upload-limit 16
rpl_loop dev2 256M half
"$AG" protect "$dev2" --state "$RT/agent" > /dev/null || fail "protect $dev2 failed"
id2=$(rpl_disk_id "$dev2")
wait_sync_sent "$dev2" 64
azurite_stop
# The writes give up after their retries (about 20 s): the cycle is refused, and the agent's next
# try goes into the cache, which ACKs it while the storage is away.
wait_until 120 "" appliance_at_least "$id2" last_committed_cycle 1 \
  || fail "disk 2: cycle 1 not committed into the cache within 120 s of the outage"
"$AP" events --state "$RT/app" > "$RT/events2.out" || fail "events failed"
python3 -c '
import json, sys
c = [e for e in map(json.loads, open(sys.argv[1])) if e["type"] == "committed" and e["disk_id"] == sys.argv[2] and e["cycle"] == 1]
sys.exit(0 if c and not c[-1]["direct"] else 1)' "$RT/events2.out" "$id2" || fail "disk 2: cycle 1 did not go through the cache"
grep -q "cycle 1 written straight into the page blob failed" "$RT/appliance.log" || fail "disk 2: the direct write's failure was not logged"
[ "$(appliance_field "$id2" last_applied_cycle)" -eq 0 ] || fail "disk 2: applied while Azurite was stopped"
azurite_restart
wait_until 180 "" appliance_at_least "$id2" last_applied_cycle 1 \
  || fail "disk 2: cycle 1 not uploaded within 180 s of Azurite's restart"
blob_equals_source "$dev2" "$id2" "disk 2 after the outage"
echo "e2e_blob_direct: ok"
