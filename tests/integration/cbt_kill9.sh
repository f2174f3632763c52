#!/usr/bin/env bash
# cbt_kill9.sh - Description: the agent is killed with SIGKILL again and again in the middle of
# drains while random writes go on; every new agent process picks the tracking up from the bpffs
# pins: every write lands in some drain, and no resync is required but for completions the kernel
# did not run the tracker for (completion-missed: a new process has no history to repair them
# from, so its drain prints the whole device, which is acknowledged); the tracker UUID changes
# only with those.
set -u
. "$(dirname "$0")/cbt_lib.sh"
seconds=${CBT_KILL9_SECONDS:-15}
make_loop "$WORK/disk.img" 256M
dev=$LOOP
size=$(blockdev --getsize64 "$dev")
cbt start "$dev" >/dev/null || fail "cbt start exited $?"
check_variant
uuid_before=$(cbt_field "$dev" tracker_uuid)

"$TOOL" write-random "$dev" "$size" "$seconds" 7 "$WORK/writes.log" >"$WORK/writer.out" &
writer=$!
CLEANUP_PIDS+=("$writer")

# ack_missed: a pending completion-missed resync is acknowledged (its drain printed the whole device,
# or the next one does before this runs again); any other reason fails.
missed=0
ack_missed() {
  local doc reason count
  doc=$("$AGENT" cbt status "$dev" --state "$STATE" --json 2>/dev/null) || fail "cbt status failed"
  { read -r reason; read -r count; } < <(json_field - devices.0.resync.reason devices.0.resync.count <<<"$doc")
  [ "$(json_field - devices.0.resync.required <<<"$doc")" = true ] || return 0
  [ "$reason" = completion-missed ] || fail "resync required ($reason) during kill -9: $doc"
  grep -q "^0 $size\$" "$WORK/drain.out" || return 0 # acknowledged after a drain that printed it all
  "$AGENT" cbt ack "$dev" "$count" --state "$STATE" || fail "ack of $count exited $?"
  missed=$((missed + 1))
}
kills=0 drains=0
end=$((SECONDS + seconds))
# For the writer's time, and on until more than 10 agents were killed (a kill misses an agent that
# finished first: how many hit in a given time is the machine's luck), 60 s more at most.
while [ $SECONDS -lt $end ] || { [ $kills -le 10 ] && [ $SECONDS -lt $((end + 60)) ]; }; do
  # Let some writes accumulate, start a drain, kill it at a random point of its run.
  sleep "0.0$((RANDOM % 5))"
  # The agent itself in the background (not through a function: $! must be the agent's pid).
  "$AGENT" cbt drain "$dev" --state "$STATE" >"$WORK/drain.out" 2>>"$WORK/drain.err" &
  agent=$!
  if [ $((RANDOM % 4)) -ne 0 ]; then
    sleep "0.00$((RANDOM % 10))"
    kill -9 "$agent" 2>/dev/null && kills=$((kills + 1))
  fi
  wait "$agent" 2>/dev/null
  ack_missed
  # What a killed agent printed counts, except a torn last line (killed in the middle of writing
  # it: nothing of that drain was committed, so it is all reported again).
  if [ -n "$(tail -c1 "$WORK/drain.out")" ]; then
    sed '$d' "$WORK/drain.out" >>"$WORK/drained.log"
  else
    cat "$WORK/drain.out" >>"$WORK/drained.log"
  fi
  drains=$((drains + 1))
done
wait "$writer" || fail "the writer failed: $(cat "$WORK/writer.out")"
cbt drain "$dev" >"$WORK/drain.out" 2>>"$WORK/drain.err"
rc=$?
cat "$WORK/drain.out" >>"$WORK/drained.log"
if [ $rc -eq 3 ]; then ack_missed; cbt drain "$dev" >>"$WORK/drained.log" || fail "drain after the ack exited $?"
elif [ $rc -ne 0 ]; then fail "final drain exited $rc"; fi

writes=$(wc -l <"$WORK/writes.log")
[ "$writes" -gt 100 ] || fail "only $writes writes were made"
[ "$kills" -gt 10 ] || fail "only $kills agents were killed"
"$TOOL" covered "$WORK/writes.log" "$WORK/drained.log" "$size" 4096 || fail "writes were lost across kill -9"
status=$(cbt status "$dev" --json) || fail "cbt status exited $?"
mapfile -t v < <(json_field - devices.0.resync.required devices.0.tracker_uuid <<<"$status")
[ "${v[0]:-}" = false ] || fail "resync required after kill -9: $status"
[ $missed -gt 0 ] || { [ -n "$uuid_before" ] && [ "${v[1]:-}" = "$uuid_before" ]; } || fail "the tracker UUID changed"
if grep -v "^$" "$WORK/drain.err" | grep -v "Killed" | grep -qv "completion-missed\|completion program did not see"; then
  fail "drains complained: $(grep -v "completion-missed\|completion program did not see" "$WORK/drain.err" | head -3)"
fi
echo "cbt_kill9: ok ($writes writes, $drains drains, $kills killed with SIGKILL, $missed missed completions resynced)"
