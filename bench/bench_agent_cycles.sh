#!/usr/bin/env bash
# bench_agent_cycles.sh - the initial sync of one agent's three disks, one disk after another
# (`run --agent-cycles 1`, the peer) against at once (`--agent-cycles 3`), same run, same disks, into
# Azurite page blobs (where one blob's upload is what a disk waits on) or file: storage. Times come from
# the appliance's events (JSON lines): first cycle started to the last disk's initial sync applied.
# Prints each time and the ratio one-at-a-time / concurrent (above 1: concurrency is faster). Last
# line: `summary: key=value ...`. Needs root (loop devices, eBPF).
#
#   sudo bash bench/bench_agent_cycles.sh
#   env: STORAGE=azurite|file (default azurite) SIZE=256M (each disk, random data) CONCURRENT=3
#        BUILD_DIR=build
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
export RPL_BUILD_DIR=${BUILD_DIR:-$root/build} RPL_SOURCE_DIR=$root
. "$root/tests/integration/lib/replication.sh"
STORAGE=${STORAGE:-azurite}
SIZE=${SIZE:-256M}
CONCURRENT=${CONCURRENT:-3}
[[ $STORAGE == azurite || $STORAGE == file ]] || fail "STORAGE is azurite or file, not '$STORAGE'"
rpl_setup 1800
BASE=$RT
[ "$STORAGE" = azurite ] && rpl_azurite_start --inMemoryPersistence

devs=()
for i in 1 2 3; do
  rpl_loop d "$SIZE" random
  devs+=("$d")
done

# Seconds from the first cycle started to the last of the three disks' cycle 1 applied, by the events.
SYNC_TIME_PY='
import json, sys
ev = [json.loads(l) for l in sys.stdin if l.strip()]
start = min(e["unix_ms"] for e in ev if e["type"] == "started")
done = {}
for e in ev:
    if e.get("cycle") == 1 and (e["type"] == "applied" or (e["type"] == "committed" and e["direct"])):
        done[e["disk_id"]] = e["unix_ms"]
assert len(done) == 3, "the initial sync of %d disks applied, not 3" % len(done)
print("%.2f %d" % ((max(done.values()) - start) / 1000, max(e.get("open", 0) for e in ev)))
'

all_synced() {
  local out
  out=$("$AP" events --state "$RT/app" | python3 -c "$SYNC_TIME_PY" 2>/dev/null) || return 1
  read -r SYNC_S MOST_OPEN <<<"$out"
}

# sync_with K: a fresh appliance (--agent-cycles K) and agent in $BASE/kK; protects the three disks
# (the agent connects only after they are all protected, so that all three are due at once); sets
# SYNC_S and MOST_OPEN; unprotects them and stops both daemons.
sync_with() {
  local k=$1
  RT=$BASE/k$k RPL_PORT=
  mkdir -p "$RT"
  if [ "$STORAGE" = azurite ]; then RPL_CONTAINER=cycles$k rpl_appliance_init_azure; else rpl_appliance_init; fi
  rpl_appliance_start --rpo 1 --agent-cycles "$k"
  rpl_agent_register
  kill -STOP "$RPL_AP_PID" # the disks announced together, when it goes on
  rpl_agent_start
  for d in "${devs[@]}"; do
    "$AG" protect "$d" --state "$RT/agent" > "$RT/protect.out" || fail "protect $d failed: $(cat "$RT/protect.out")"
  done
  kill -CONT "$RPL_AP_PID"
  wait_until -i 1 1200 "the initial sync of the three disks (--agent-cycles $k) did not end" all_synced
  for d in "${devs[@]}"; do "$AG" unprotect "$d" --state "$RT/agent" >/dev/null || fail "unprotect $d failed"; done
  kill "$RPL_AG_PID" "$RPL_AP_PID"
  wait "$RPL_AG_PID" "$RPL_AP_PID" 2>/dev/null
}

say "three disks of $SIZE (random data) into $STORAGE storage, one at a time"
sync_with 1
one=$SYNC_S one_open=$MOST_OPEN
echo "one at a time: ${one} s (at most $one_open cycle open)"
say "the same three disks, up to $CONCURRENT at once"
sync_with "$CONCURRENT"
many=$SYNC_S many_open=$MOST_OPEN
echo "concurrent:    ${many} s (at most $many_open cycles open)"
ratio=$(awk -v a="$one" -v b="$many" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
echo "initial sync of 3 disks, one-at-a-time / concurrent: ${ratio}x"
echo "summary: storage=$STORAGE size=$SIZE one_at_a_time_s=$one concurrent_s=$many concurrent_open=$many_open ratio=$ratio"
