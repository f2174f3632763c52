#!/usr/bin/env bash
# upload_limit.sh - benchmark: does the appliance hold its upload limits? The initial sync of a
# random (incompressible) loop disk through both daemons into Azurite, once with --upload-limit L,
# once with --agent-limit L, once with no limit (the peer, same run); prints the achieved upload
# rate of each (bytes sent by the uploader for the initial-sync cycle / the time its apply took, as
# the appliance's event of that cycle gives them) and its ratio to the limit (goal: <= 1.0 and close to it; the unlimited
# run shows whether the limit was the bottleneck at all).
#   usage: bash bench/upload_limit.sh [BUILD_DIR]     (root; needs scripts/setup.sh)
#   BENCH_LIMIT_MBPS (default 20), BENCH_SIZE_MIB (default 256); on a loaded machine use a lower limit
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
export RPL_BUILD_DIR=${1:-$root/build} RPL_SOURCE_DIR=$root
. "$root/tests/integration/lib/replication.sh"
. "$root/bench/lib_events.sh"
rpl_setup 1800
rpl_azurite_start --inMemoryPersistence
LIMIT=${BENCH_LIMIT_MBPS:-20}
SIZE_MIB=${BENCH_SIZE_MIB:-256}
rpl_appliance_init_azure
rpl_appliance_start --rpo 3600   # registration needs it running; each run below restarts it
rpl_agent_register
kill "$RPL_AP_PID"; wait "$RPL_AP_PID" 2>/dev/null

# one_run [RUN OPTIONS...]: the appliance with those options, a fresh random disk protected and its
# initial-sync cycle applied; sets RUN_RATE (MB/s: the bytes the uploader sent for that cycle / the
# time its apply took, both from the appliance's event of cycle 1) and RUN_WAIT (ms spent
# waiting for the limits). Not in a subshell: the trap must know the processes and loop devices.
one_run() {
  local dev i id line
  rpl_appliance_start --rpo 3600 "$@"
  [ -n "${RPL_AG_PID:-}" ] || rpl_agent_start
  rpl_loop dev "${SIZE_MIB}M" random
  "$AG" protect "$dev" --state "$RT/agent" > /dev/null || fail "protect failed"
  id=$("$AG" status --state "$RT/agent" --json | python3 -c '
import json, sys
print(next(x["disk_id"] for x in json.load(sys.stdin)["disks"] if x["device"] == sys.argv[1]))' "$dev")
  events_wait_applied "$RT/app" 1 600 "$id" || fail "the initial sync of $dev was not applied in 600 s"
  RUN_RATE=$(awk -v b="$EV_UPLOAD_BYTES" -v ms="$EV_UPLOAD_MS" 'BEGIN { printf "%.2f", b / 1e6 / (ms / 1e3) }')
  RUN_WAIT=$EV_LIMIT_WAIT_MS
  echo "  cycle 1: $EV_UPLOAD_BYTES bytes uploaded in $EV_UPLOAD_MS ms, $EV_LIMIT_WAIT_MS ms waiting for the limits"
}
restart_appliance() { kill "$RPL_AP_PID"; wait "$RPL_AP_PID" 2>/dev/null; }

say "--upload-limit $LIMIT"
one_run --upload-limit "$LIMIT"
r_all=$RUN_RATE
restart_appliance
say "--agent-limit $LIMIT"
one_run --agent-limit "$LIMIT"
r_agent=$RUN_RATE
restart_appliance
say "no limit"
one_run
r_none=$RUN_RATE
awk -v a="$r_all" -v g="$r_agent" -v u="$r_none" -v l="$LIMIT" 'BEGIN{
  printf "--upload-limit %d MB/s: %.2f MB/s achieved, ratio achieved/limit %.2f\n", l, a, a/l
  printf "--agent-limit  %d MB/s: %.2f MB/s achieved, ratio achieved/limit %.2f\n", l, g, g/l
  printf "no limit (peer, same run): %.2f MB/s, ratio unlimited/limit %.2f\n", u, u/l }'
