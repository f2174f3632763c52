#!/usr/bin/env bash
# e2e_resync.sh - Description: a resync (tracking lost while the agent was down: its pins removed)
# reads the whole disk once, is acknowledged, and the cycles after it are plain again: no full read
# per cycle, no session dropped after the resync's ACK; the replica stays byte-identical.
set -u
. "$(dirname "$0")/lib/replication.sh"
rpl_setup

rpl_appliance_init
rpl_appliance_start --rpo 0.5
rpl_agent_register
rpl_loop dev 256M half
rpl_agent_start
"$AG" protect "$dev" --state "$RT/agent" > "$RT/protect.out" || fail "protect failed"
rpl_wait_cycle "$dev" 1
grep -q "ended (invalid argument)" "$RT/agent.log" && fail "the session was dropped after the initial sync's ACK"

say "tracking lost while the agent is down: a resync event"
kill -TERM "$RPL_AG_PID"
wait "$RPL_AG_PID"
rm -rf "$MOBILITY_AGENT_BPF_PIN_DIR"
dd if=/dev/urandom of="$dev" bs=64k count=16 seek=100 oflag=direct conv=notrunc status=none
rpl_agent_start
"$AG" cbt status "$dev" --state "$RT/agent" | grep -q "resync:.*REQUIRED" || fail "no resync event after the pins were removed"
start=$(rpl_agent_cycle "$dev")
rpl_wait_cycle "$dev" $((start + 4))
"$AG" cbt status "$dev" --state "$RT/agent" | grep -q "resync:.*not required" || fail "the resync was not acknowledged"
n=$(grep -c "reading the whole disk" "$RT/agent.log")
[ "$n" -eq 1 ] || fail "the whole disk was read $n times after one resync event"
grep -q "ended (invalid argument)" "$RT/agent.log" && fail "the session was dropped after a resync's ACK"
"$AG" status --state "$RT/agent" | grep -q "protected" || fail "the disk is not protected after the resync"
"$AG" checkpoint "$dev" --wait --state "$RT/agent" > /dev/null || fail "checkpoint failed"
cmp "$(rpl_replica_of "$dev")" "$dev" || fail "replica differs from the source after the resync"
echo "e2e_resync: ok"
