#!/usr/bin/env bash
# appliance_flood.sh - Description: a flood on the agents' port (2,000 connections trickling a TLS
# handshake a byte every 2 s and 500 TLS connections announcing a 16 MiB REGISTER frame, all
# reconnecting as soon as they are closed, from 127.0.0.2-9) while a real agent registers,
# protects a disk and makes a point: the agent is served, the replica equals the disk, the
# appliance's peak memory stays bounded, connections are refused by the limits (and counted),
# and once the flood ends the appliance does not spin.
set -u
. "$(dirname "$0")/lib/replication.sh"
rpl_setup
TOOLS=$(cd "$(dirname "$0")/../tools" && pwd)
ulimit -n 8192 2>/dev/null || { echo "SKIP: cannot raise the descriptor limit to 8192"; exit 77; }

rpl_appliance_init
rpl_appliance_start --rpo 1
python3 "$TOOLS/flood.py" 127.0.0.1 "$RPL_PORT" --trickle 2000 --headers 500 --duration 45 > "$RT/flood.json" &
flood=$!
CLEANUP_PIDS+=("$flood")
flooding() { "$AP" status --state "$RT/app" --json | python3 -c '
import json, sys
c = json.load(sys.stdin)["connections"]
sys.exit(0 if c["refused"] > 0 and c["open"] >= 64 else 1)'; }
wait_until 60 "the flood did not reach the appliance: $("$AP" status --state "$RT/app" --json)" flooding

# A real agent, from 127.0.0.1, meanwhile.
rpl_agent_register
rpl_agent_start
rpl_loop dev 64M random
"$AG" protect "$dev" --state "$RT/agent" >/dev/null || fail "protect failed during the flood"
rpl_wait_cycle "$dev" 1
dd if=/dev/urandom of="$dev" bs=1M count=8 seek=20 oflag=direct conv=notrunc status=none || fail "cannot write the disk"
"$AG" checkpoint "$dev" --wait --state "$RT/agent" > "$RT/point.out" || fail "checkpoint failed during the flood: $(cat "$RT/point.out")"
"$AP" status --state "$RT/app" --json > "$RT/status.json" || fail "status failed"
kill -0 "$flood" 2>/dev/null || fail "the flood ended before the agent was done: $(cat "$RT/flood.json")"
cmp "$dev" "$(rpl_replica_of "$dev")" || fail "the replica differs from the disk"

wait "$flood"
python3 - "$RT/flood.json" "$RT/status.json" "$RPL_AP_PID" <<'PY' || fail "the flood was not contained"
import json, sys
fl, st, pid = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), sys.argv[3]
assert fl["opened"] >= 2500, fl
c = st["connections"]
assert c["refused"] > 0 and c["open"] <= c["limit"], c
hwm = [int(l.split()[1]) for l in open("/proc/%s/status" % pid) if l.startswith("VmHWM:")][0]
assert hwm <= 256 * 1024, "peak resident memory %d KiB" % hwm
print("flood: %d connections opened, %d refused by the limits; appliance peak RSS %d MiB" % (fl["opened"], c["refused"], hwm >> 10))
PY
# The flood is over: the appliance does not spin (well under a core over 3 s).
ticks() { awk '{print $14 + $15}' "/proc/$RPL_AP_PID/stat"; }
t0=$(ticks); sleep 3; t1=$(ticks)
hz=$(getconf CLK_TCK)
[ $(( (t1 - t0) * 100 / hz )) -lt 150 ] || fail "the appliance used $(( (t1 - t0) * 1000 / hz )) ms of CPU in 3 s after the flood"
echo "appliance_flood: ok"
