#!/usr/bin/env bash
# agent_cycles.sh - Description: one agent protects three loop disks and the appliance runs up to
# three of its cycles at once (run --agent-cycles 3): its events show cycles of different disks open
# at the same time, each disk's cycles started one at a time and committed in order, and after a
# checkpoint every replica is byte-identical to its source.
set -u
. "$(dirname "$0")/lib/replication.sh"
rpl_setup 400

say "appliance (three cycles of an agent at once) and agent, three disks protected"
rpl_appliance_init
rpl_appliance_start --rpo 0.5 --agent-cycles 3
rpl_agent_register
rpl_agent_start
devs=()
for i in 1 2 3; do
  rpl_loop d 192M half
  devs+=("$d")
done
for d in "${devs[@]}"; do
  "$AG" protect "$d" --state "$RT/agent" > "$RT/protect.out" || fail "protect $d failed: $(cat "$RT/protect.out")"
done
for d in "${devs[@]}"; do rpl_wait_cycle "$d" 1; done

say "writers on all three disks until the events show cycles of different disks open at once"
stop_file=$RT/stop-writers
writers=()
for d in "${devs[@]}"; do
  ( while [ ! -e "$stop_file" ]; do
      dd if=/dev/urandom of="$d" bs=4k count=$((RANDOM % 32 + 1)) seek=$(( (RANDOM * 32768 + RANDOM) % 49000 )) \
         oflag=direct conv=notrunc status=none
      sleep 0.02 # a steady writer, not one that takes a CPU for itself
    done ) &
  writers+=("$!")
  CLEANUP_PIDS+=("$!")
done
# Reads the events (JSON lines) on stdin; prints the largest number of cycles the appliance said were
# open at one start, and the most disks with a cycle open at one instant by its started and committed
# events; fails when a disk's cycles were not started one at a time or not committed in order.
EVENTS_CHECK_PY='
import json, sys
ev = [json.loads(l) for l in sys.stdin if l.strip()]
seqs = [e["seq"] for e in ev]
assert seqs == sorted(seqs) and seqs and seqs[0] == 1, "the events are not all there from the first"
opened, committed, most_said, most_seen = {}, {}, 0, 0
for e in ev:
    if e["type"] not in ("started", "committed"):
        continue
    d, c = e["disk_id"], e["cycle"]
    if e["type"] == "started":
        # one cycle of a disk at a time: the next is the one after the last committed (again, when dropped)
        assert c == committed.get(d, 0) + 1, "disk %s: cycle %d started after cycle %d committed" % (d, c, committed.get(d, 0))
        opened[d] = c
        most_said = max(most_said, e["open"])
        most_seen = max(most_seen, len(opened))
    else:
        assert opened.get(d) == c, "disk %s: cycle %d committed, but cycle %s was open" % (d, c, opened.get(d))
        assert c == committed.get(d, 0) + 1, "disk %s: cycle %d committed after cycle %d" % (d, c, committed.get(d, 0))
        committed[d] = c
        del opened[d]
print(most_said, most_seen, len(committed))
'
overlapped() {
  local r
  r=$("$AP" events --state "$RT/app" | python3 -c "$EVENTS_CHECK_PY") || fail "the events break the order of a disk's cycles"
  read -r said seen ndisks <<<"$r"
  [ "$said" -ge 2 ] && [ "$seen" -ge 2 ]
}
wait_until -i 0.5 120 "cycles of different disks were never open at the same time" overlapped
echo "at most $said cycles open at one start ($seen disks at once by the events)"
# More cycles of each disk under writes, all still in order.
starts=()
for d in "${devs[@]}"; do starts+=("$(rpl_agent_cycle "$d")"); done
for i in 0 1 2; do rpl_wait_cycle "${devs[i]}" $((starts[i] + 3)); done
touch "$stop_file"
wait "${writers[@]}"

say "a checkpoint of all three disks, then each replica equals its source"
point=$("$AG" checkpoint --wait --state "$RT/agent" | tail -n 1) || fail "checkpoint failed"
[[ $point == rp-* ]] || fail "checkpoint's last line is not a point id: $point"
for d in "${devs[@]}"; do
  cmp "$(rpl_replica_of "$d")" "$d" || fail "the replica of $d differs from its source after the checkpoint"
done
"$AP" events --state "$RT/app" | python3 -c "$EVENTS_CHECK_PY" > "$RT/check.out" || fail "the events break the order of a disk's cycles"
read -r said seen ndisks < "$RT/check.out"
[ "$ndisks" -eq 3 ] || fail "committed cycles of $ndisks disks, not 3"
"$AG" status --state "$RT/agent" --json > "$RT/agent-status.json" || fail "agent status failed"
for d in "${devs[@]}"; do
  [ "$(json_field "$RT/agent-status.json" "disks.[device=$d].state")" = protected ] \
    || fail "the agent does not say $d is protected: $(cat "$RT/agent-status.json")"
done
echo "agent_cycles: ok (at most $said cycles of the agent open at once; point $point)"
