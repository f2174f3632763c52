#!/usr/bin/env bash
# e2e_crash.sh - Description: kill -9 of the agent (20 times) and then of the appliance (20 times) at
# random moments while a writer runs and cycles flow; after restarts and a checkpoint the replica is
# byte-identical to the source, and no agent restart caused a resync (one after a completion the
# kernel skipped is allowed: that is the kernel's doing).
set -u
. "$(dirname "$0")/lib/replication.sh"
rpl_setup 800
KILLS=${RPL_CRASH_KILLS:-20}

rpl_appliance_init
rpl_appliance_start --rpo 0.3
rpl_agent_register
rpl_agent_start
rpl_loop dev 256M random
"$AG" protect "$dev" --state "$RT/agent" >/dev/null || fail "protect failed"
rpl_wait_cycle "$dev" 1

stop_file=$RT/stop-writer
( while [ ! -e "$stop_file" ]; do
    dd if=/dev/urandom of="$dev" bs=4k count=$((RANDOM % 32 + 1)) seek=$((RANDOM * 2 % 65000)) \
       oflag=direct conv=notrunc status=none
    sleep 0.02 # a steady writer, not one that takes a CPU for itself
  done ) &
writer=$!
CLEANUP_PIDS+=("$writer")

# Random moments: 0.05 .. 1.25 s after a restart, inside or between cycles.
pause() { sleep "$(printf '0.%02d' $((RANDOM % 100 + 5)))"; [ $((RANDOM % 4)) -eq 0 ] && sleep 0.25; return 0; }

say "kill -9 the agent $KILLS times"
for i in $(seq 1 "$KILLS"); do
  pause
  kill -9 "$RPL_AG_PID"
  wait "$RPL_AG_PID" 2>/dev/null
  rpl_agent_start
done
c=$(rpl_agent_cycle "$dev")
rpl_wait_cycle "$dev" $((c + 2))

say "kill -9 the appliance $KILLS times"
for i in $(seq 1 "$KILLS"); do
  pause
  "$AP" events --state "$RT/app" >> "$RT/events.all" 2>/dev/null # each appliance run keeps its own
  kill -9 "$RPL_AP_PID"
  wait "$RPL_AP_PID" 2>/dev/null
  rpl_appliance_start --rpo 0.3
done

touch "$stop_file"
wait "$writer"
point=$("$AG" checkpoint --wait --state "$RT/agent" | tail -n 1) || fail "checkpoint after the crashes failed"
[[ $point == rp-* ]] || fail "checkpoint gave '$point'"
replica=$(rpl_replica_of "$dev")
cmp "$replica" "$dev" || fail "replica differs from the source after the crashes"
# The point's kept copy of the image (the live image moves on with the next cycle) restores identical.
disk_id=$(basename "$replica" .img)
"$AP" restore --state "$RT/app" --disk "$disk_id" --point "$point" --verify "$dev" > "$RT/restore.out" 2>&1 \
  || fail "point $point does not restore to the source: $(cat "$RT/restore.out")"
# Delta cycles went straight into the image (the journal empty at their start), so the kills hit
# those too: a killed appliance left some of a cycle's writes in the image, which the retry covers.
"$AP" events --state "$RT/app" >> "$RT/events.all" || fail "events failed"
direct=$(python3 -c '
import json, sys
print(sum(1 for e in map(json.loads, open(sys.argv[1])) if e["type"] == "committed" and e["direct"] and e["cycle"] >= 2))' "$RT/events.all")
[ "$direct" -gt 0 ] || fail "no delta cycle was written straight into the image"
# A completion the kernel skipped (completion-missed) is its doing, not the restart's: a new process
# has not kept 120 s of commits to repair it from, so it resyncs (as cbt_kill9 allows too).
resyncs=$(grep "resync (" "$RT/agent.log" | grep -vc "resync (completion-missed)")
[ "$resyncs" -eq 0 ] || fail "agent restarts caused $resyncs resync(s): $(grep "resync (" "$RT/agent.log" | head -3)"
missed=$(grep -c "resync (completion-missed)" "$RT/agent.log")
echo "e2e_crash: ok ($KILLS agent and $KILLS appliance kills, $(rpl_agent_cycle "$dev") cycles ($direct direct), point $point," \
  "$missed resync(s) after a completion the kernel skipped)"
