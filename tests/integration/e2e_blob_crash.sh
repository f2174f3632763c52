#!/usr/bin/env bash
# e2e_blob_crash.sh - Description: kill -9 of the appliance (20 times) while it uploads into a page
# blob on Azurite over HTTPS, under a random writer: it resumes from its journal and the blob's
# sequence number; afterwards a checkpoint, and the blob, its snapshot (restore --verify) and the
# source are byte-identical, no cycle is left unapplied and the disk is not in error.
set -u
. "$(dirname "$0")/lib/replication.sh"
rpl_setup 550
rpl_azurite_start --inMemoryPersistence
export BLOB_TEST_CONNSTR=$AZ_CONNSTR BLOB_TEST_ZONE=$AZ_ZONE BLOB_TEST_CA=$AZ_CA
KILLS=${KILLS:-20}

rpl_appliance_init_azure
rpl_appliance_start --rpo 0.3
rpl_agent_register
rpl_loop dev 256M half
rpl_agent_start
"$AG" protect "$dev" --state "$RT/agent" > "$RT/protect.out" || fail "protect failed"
rpl_wait_cycle "$dev" 1
disk_id=$(rpl_disk_id "$dev")

stop_file=$RT/stop-writer
( while [ ! -e "$stop_file" ]; do
    dd if=/dev/urandom of="$dev" bs=4k count=$((RANDOM % 64 + 1)) seek=$((RANDOM * 2 % 65000)) \
       oflag=direct conv=notrunc status=none
    sleep 0.02 # a steady writer, not one that takes a CPU for itself
  done ) &
writer=$!
CLEANUP_PIDS+=("$writer")
pause() { sleep "$(printf '0.%02d' $((RANDOM % 100 + 5)))"; [ $((RANDOM % 4)) -eq 0 ] && sleep 0.25; return 0; }

say "kill -9 the appliance $KILLS times while it uploads"
for i in $(seq 1 "$KILLS"); do
  pause
  kill -9 "$RPL_AP_PID"
  wait "$RPL_AP_PID" 2>/dev/null
  rpl_appliance_start --rpo 0.3
done
c=$(rpl_agent_cycle "$dev")
rpl_wait_cycle "$dev" $((c + 2))
touch "$stop_file"
wait "$writer"
point=$("$AG" checkpoint --wait --state "$RT/agent" | tail -n 1) || fail "checkpoint after the crashes failed"
[[ $point == rp-* ]] || fail "checkpoint gave '$point'"
"$AP" restore --state "$RT/app" --disk "$disk_id" --point "$point" --verify "$dev" > "$RT/verify.out" 2>&1 \
  || fail "the point's snapshot differs from the source: $(cat "$RT/verify.out")"
all_applied() { # the disk protected and every committed cycle applied (one status document)
  local v
  mapfile -t v < <("$AP" status --state "$RT/app" --json | json_field - disks.0.state disks.0.last_applied_cycle disks.0.last_committed_cycle)
  [ "${#v[@]}" -eq 3 ] && [ "${v[0]}" = protected ] && [ "${v[1]}" = "${v[2]}" ]
}
wait_until 60 "cycles left unapplied" all_applied
size=$(blockdev --getsize64 "$dev")
"$B/tests/blob_tool" download replicas "$disk_id.vhd" "$RT/blob" > "$RT/dl.out" 2>&1 || fail "download failed"
cmp -n "$size" "$RT/blob" "$dev" || fail "the page blob differs from the source after the crashes"
echo "e2e_blob_crash: ok ($KILLS appliance kills, $(rpl_agent_cycle "$dev") cycles, point $point)"
