#!/usr/bin/env bash
# e2e_blob_outage.sh - Description: Azurite stopped for a minute (OUTAGE_S; the suite takes 30 s)
# mid-upload, through the daemon: the agent keeps writing cycles and is ACKed, status shows the
# storage error and the growing backlog; Azurite restarted on the same port and data directory
# after the outage: the upload catches up, a checkpoint's point restores byte-identical to the
# source and the blob equals it (nothing lost).
set -u
. "$(dirname "$0")/lib/replication.sh"
rpl_setup 550
rpl_azurite_start
export BLOB_TEST_CONNSTR=$AZ_CONNSTR BLOB_TEST_ZONE=$AZ_ZONE BLOB_TEST_CA=$AZ_CA
OUTAGE_S=${OUTAGE_S:-60}

# disk_status: committed|applied|backlog|uploads state|reason|failed check|storage error (null: empty)
disk_status() {
  local v i
  mapfile -t v < <("$AP" status --state "$RT/app" --json | json_field - disks.0.last_committed_cycle \
    disks.0.last_applied_cycle disks.0.backlog_cycles uploads.state disks.0.reason uploads.failed_check uploads.last_storage_error)
  [ "${#v[@]}" -eq 7 ] || return 0
  for i in "${!v[@]}"; do
    [ "${v[i]}" = null ] && v[i]=
    v[i]=${v[i]//|//}
  done
  (IFS="|"; echo "${v[*]}")
}

rpl_appliance_init_azure
rpl_appliance_start --rpo 0.5
rpl_agent_register
rpl_loop dev 128M half
rpl_agent_start
"$AG" protect "$dev" --state "$RT/agent" > /dev/null || fail "protect failed"
disk_id=$(rpl_disk_id "$dev")
stop_file=$RT/stop-writer
( while [ ! -e "$stop_file" ]; do
    dd if=/dev/urandom of="$dev" bs=64k count=$((RANDOM % 16 + 1)) seek=$((RANDOM % 2000)) oflag=direct conv=notrunc status=none
    sleep 0.02 # a steady writer, not one that takes a CPU for itself
  done ) &
writer=$!
CLEANUP_PIDS+=("$writer")

say "uploads under a writer, then Azurite stops"
two_applied() { IFS="|" read -r committed applied _ <<< "$(disk_status)"; [ "$applied" -ge 2 ]; }
wait_until 120 "" two_applied || fail "no cycle uploaded in 120 s"
azurite_stop
t_stop=$(date +%s)
say "Azurite stopped at cycle $committed committed / $applied applied"

# Within the outage: status names the storage failure, the backlog grows, the agent is still ACKed.
seen_error=""
storage_error_shown() {
  IFS="|" read -r committed_now applied_now backlog state reason check upload_err <<< "$(disk_status)"
  [ "$state" = held ] && [[ $reason == *"waiting for storage"* ]] && [[ -n $check || -n $upload_err ]] || return 1
  seen_error="uploads $state; disk: $reason; check: $check; storage error: $upload_err"
}
wait_until $((OUTAGE_S - 5)) "" storage_error_shown
[ -n "$seen_error" ] || fail "status did not show the storage error during the outage: $("$AP" status --state "$RT/app")"
echo "status during the outage: $seen_error"
c=$(rpl_agent_cycle "$dev")
rpl_wait_cycle "$dev" $((c + 3))
IFS="|" read -r committed_now applied_now backlog _ <<< "$(disk_status)"
[ "$committed_now" -ge $((committed + 3)) ] && [ "$backlog" -ge 3 ] \
  || fail "the backlog did not grow during the outage (committed $committed_now, applied $applied_now, backlog $backlog)"
"$AP" status --state "$RT/app" | grep -E '^uploads:|^(\[[a-z]+\] )?disk' | sed 's/^/  /'
# The outage lasts OUTAGE_S seconds by design (not a wait for something to happen).
left=$((t_stop + OUTAGE_S - $(date +%s)))
[ "$left" -gt 0 ] && sleep "$left"
IFS="|" read -r committed_now applied_now backlog _ <<< "$(disk_status)"
say "after ${OUTAGE_S} s: $committed_now committed / $applied_now applied, backlog $backlog cycles; Azurite restarts"
azurite_restart

touch "$stop_file"
wait "$writer"
point=$("$AG" checkpoint "$dev" --wait --state "$RT/agent" | tail -n 1) || fail "checkpoint after the outage failed"
[[ $point == rp-* ]] || fail "checkpoint gave '$point'"
caught_up() {
  IFS="|" read -r committed_now applied_now backlog state _ <<< "$(disk_status)"
  [ "$applied_now" -eq "$committed_now" ] && [ "$state" = running ]
}
wait_until 120 "" caught_up || fail "the upload did not catch up in 120 s ($committed_now committed, $applied_now applied)"
"$AP" restore --state "$RT/app" --disk "$disk_id" --point "$point" --verify "$dev" > "$RT/verify.out" 2>&1 \
  || fail "the point's snapshot differs from the source: $(cat "$RT/verify.out")"
cat "$RT/verify.out"
size=$(blockdev --getsize64 "$dev")
"$B/tests/blob_tool" download replicas "$disk_id.vhd" "$RT/blob" > "$RT/dl.out" 2>&1 || fail "download failed"
cmp -n "$size" "$RT/blob" "$dev" || fail "the page blob differs from the source after the outage"
"$AP" status --state "$RT/app" --json > "$RT/status.json" || fail "status --json failed"
[ "$(json_field "$RT/status.json" disks.0.state uploads.state | tr '\n' ' ')" = "protected running " ] \
  || fail "status after the outage is not as expected: $(cat "$RT/status.json")"
echo "e2e_blob_outage: ok (${OUTAGE_S} s outage, $committed_now cycles, point $point)"
