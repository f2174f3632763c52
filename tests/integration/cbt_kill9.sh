#!/usr/bin/env bash
# cbt_kill9.sh - Description: the agent is killed with SIGKILL again and again in the middle of
# drains while random writes go on; every new agent process picks the tracking up from the bpffs
# pins: every write lands in some drain, the tracker UUID never changes, no resync is required.
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
cbt drain "$dev" >>"$WORK/drained.log" || fail "final drain exited $?"

writes=$(wc -l <"$WORK/writes.log")
[ "$writes" -gt 100 ] || fail "only $writes writes were made"
[ "$kills" -gt 10 ] || fail "only $kills agents were killed"
"$TOOL" covered "$WORK/writes.log" "$WORK/drained.log" "$size" 4096 || fail "writes were lost across kill -9"
status=$(cbt status "$dev" --json) || fail "cbt status exited $?"
mapfile -t v < <(json_field - devices.0.resync.required devices.0.tracker_uuid <<<"$status")
[ "${v[0]:-}" = false ] || fail "resync required after kill -9: $status"
[ -n "$uuid_before" ] && [ "${v[1]:-}" = "$uuid_before" ] || fail "the tracker UUID changed"
if grep -v "^$" "$WORK/drain.err" | grep -qv "Killed"; then
  fail "drains complained: $(head -3 "$WORK/drain.err")"
fi
echo "cbt_kill9: ok ($writes writes, $drains drains, $kills killed with SIGKILL)"
