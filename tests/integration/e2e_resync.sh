#!/usr/bin/env bash
# e2e_resync.sh - Description: tracking lost behind the agent's back (its bpffs pins removed while it
# was stopped) and writes made meanwhile: the agent reports resync-required, the next cycle compares
# chunk hashes with the replica and sends only the chunks that differ; the replica ends identical.
set -u
. "$(dirname "$0")/lib/replication.sh"
rpl_setup

rpl_appliance_init
rpl_appliance_start --rpo 0.5
rpl_agent_register
rpl_agent_start
rpl_loop dev 256M random
"$AG" protect "$dev" --state "$RT/agent" >/dev/null || fail "protect failed"
rpl_wait_cycle "$dev" 1

say "stop the agent, remove the tracker's pins, write 3 MiB while nothing tracks"
replica=$(rpl_replica_of "$dev")
kill -TERM "$RPL_AG_PID"
wait "$RPL_AG_PID"
rm -rf "$MOBILITY_AGENT_BPF_PIN_DIR"
for off in 10 100 200; do
  dd if=/dev/urandom of="$dev" bs=1M count=1 seek="$off" oflag=direct conv=notrunc status=none
done
cmp -s "$replica" "$dev" && fail "the untracked writes did not change the disk?"

say "restart: resync required, compared, only what differs is sent"
rpl_agent_start
point=$("$AG" checkpoint --wait --state "$RT/agent" | tail -n 1) || fail "checkpoint failed"
cmp "$replica" "$dev" || fail "replica differs from the source after the resync"
line=$(grep "resync by comparison" "$RT/agent.log" | tail -n 1)
[ -n "$line" ] || fail "no resync by comparison happened: $(tail -5 "$RT/agent.log")"
differ=$(sed -E 's/.*: ([0-9]+) MiB of ([0-9]+) MiB differ.*/\1/' <<< "$line")
[ "$differ" -ge 3 ] && [ "$differ" -le 8 ] || fail "expected about 3 MiB to differ, the comparison found: $line"
echo "e2e_resync: ok ($line; point $point)"
