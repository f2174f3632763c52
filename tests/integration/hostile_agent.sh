#!/usr/bin/env bash
# hostile_agent.sh - Description: a registered agent that misbehaves on the wire (hostile_agent.c:
# thousands of new disk ids, huge and shrinking sizes, stray HASHES and NACKs, a disk named twice in
# a point group, frames out of order, another agent's disk and agent id) beside a real agent
# protecting a loop disk: the appliance stays up with its memory and descriptors bounded and not
# growing per session, restarts cleanly on the same state, the victim's disk keeps its owner, name
# and size and goes on replicating, and its replica equals its source at the end.
set -u
. "$(dirname "$0")/lib/replication.sh"
rpl_setup 280
HA=$B/tests/hostile_agent

# Bounds: resident memory (the sanitizers' shadow and quarantine take far more) and descriptors
# (the listener, catalog, logs and threads' share, plus a few per disk served: journal, replica).
RSS_MAX_KB=$((256 * 1024))
grep -q '^RPL_SANITIZE:BOOL=ON' "$B/CMakeCache.txt" 2>/dev/null && RSS_MAX_KB=$((1024 * 1024))
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$RPL_AP_PID/status"; }
fds() { ls "/proc/$RPL_AP_PID/fd" | wc -l; }
served_disks() { "$AP" status --state "$RT/app" --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["disks"]))'; }
# After each scenario: the appliance is up, within the bounds (measured figures said).
measure() {
  kill -0 "$RPL_AP_PID" 2>/dev/null || { tail -30 "$RT/appliance.log" >&2; fail "$1: the appliance is gone"; }
  "$AP" status --state "$RT/app" >/dev/null || fail "$1: the appliance does not answer status"
  local r f n max_fds
  r=$(rss_kb); f=$(fds); n=$(served_disks)
  max_fds=$((64 + 4 * n)) # measured: about 17 and 2 per disk
  echo "-- measured after $1: VmRSS $((r / 1024)) MiB (bound $((RSS_MAX_KB / 1024))), descriptors $f (bound $max_fds: 64 + 4 per disk, $n disks)"
  [ "$r" -le "$RSS_MAX_KB" ] || fail "$1: the appliance's resident memory is $r KiB"
  [ "$f" -le "$max_fds" ] || { ls -l "/proc/$RPL_AP_PID/fd" >&2; fail "$1: the appliance holds $f descriptors"; }
}
hostile() {
  say "hostile: $*"
  "$HA" "$RT/hostile" "$@" 2>&1 | tee -a "$RT/hostile.out" \
    || { grep -v "committed and applied" "$RT/appliance.log" | tail -40 >&2; fail "hostile $1"; }
}
# The victim's disk as the appliance has it: owner, name, size, state.
victim_row() {
  "$AP" status --state "$RT/app" --json | json_field - "disks.[disk_id=$VDISK].agent_id" \
    "disks.[disk_id=$VDISK].name" "disks.[disk_id=$VDISK].size" "disks.[disk_id=$VDISK].state" | paste -sd' '
}
# The victim writes, and a cycle begun after the write is ACKed.
victim_writes() {
  dd if=/dev/urandom of="$vdev" bs=64K count=16 seek=$((RANDOM % 1000)) oflag=direct conv=notrunc status=none \
    || fail "cannot write the victim's disk"
  rpl_wait_cycle "$vdev" $(( $(rpl_agent_cycle "$vdev") + 2 ))
}

say "an appliance, a key for each agent; the victim protects a loop disk"
rpl_appliance_init
rpl_appliance_start --rpo 0.5
rpl_agent_register
# A newer key revokes the unused ones: the second is issued once the first was used.
"$AP" init --state "$RT/app" --storage "file:$RT/replica" > "$RT/init2.out" || fail "init again failed"
key2=$(tail -n 1 "$RT/init2.out")
rpl_agent_start
rpl_loop vdev 64M random
"$AG" protect "$vdev" --state "$RT/agent" >/dev/null || fail "protect failed"
rpl_wait_cycle "$vdev" 1
VDISK=$(rpl_disk_id "$vdev")
VAGENT=$(grep '^agent_id=' "$RT/agent/agent.conf" | cut -d= -f2)
row0=$(victim_row)
echo "victim: agent $VAGENT, disk $row0"

say "the hostile agent registers like any other"
(umask 077 && printf '%s\n' "$key2" > "$RT/regkey2")
"$AG" register --appliance "127.0.0.1:$RPL_PORT" --key-file "$RT/regkey2" --state "$RT/hostile" > "$RT/register2.out" \
  || fail "the second registration failed"
measure "the victim's initial sync"

hostile steal "$VDISK" "$VAGENT"
[ "$(victim_row)" = "$row0" ] || fail "the victim's disk changed: $(victim_row), was $row0"
victim_writes
measure steal
hostile nack "$VDISK"
measure nack
hostile sizes
SIZE_DISK=$(awk '$2 == "/dev/hostile-size" {print $3}' "$RT/hostile.out")
grep -q "is now 2097152 bytes, its replica 4194304" "$RT/appliance.log" || fail "the shrink was not refused clearly"
measure sizes
hostile hashes
measure hashes
hostile points
victim_writes
measure points
# Per session nothing may stay behind: the descriptors and memory after 1 round of violations and
# after 5 more (of the same disk) are the same, within what a closing session may hold a moment.
hostile order 1
sleep 1
f1=$(fds); r1=$(rss_kb)
hostile order 5
sleep 1
f2=$(fds); r2=$(rss_kb)
echo "-- order: descriptors $f1 after 1 round, $f2 after 5 more; VmRSS $((r1 / 1024)) MiB, then $((r2 / 1024)) MiB"
[ "$f2" -le $((f1 + 1)) ] || fail "descriptors grew from $f1 to $f2 over 50 refused sessions"
[ "$r2" -le $((r1 + 16 * 1024)) ] || fail "resident memory grew from $r1 KiB to $r2 KiB over 50 refused sessions"
measure order
hostile disks 3000
grep -q "disks on this appliance already" "$RT/appliance.log" || fail "no clear refusal of disks past the cap in the log"
HAGENT=$(grep '^agent_id=' "$RT/hostile/agent.conf" | cut -d= -f2)
n=$("$AP" status --state "$RT/app" --json | python3 -c "import json,sys; print(sum(d['agent_id'] == '$HAGENT' for d in json.load(sys.stdin)['disks']))")
echo "-- the hostile agent has $n disks on the appliance (cap 64)"
[ "$n" -le 64 ] || fail "the hostile agent has $n disks"
victim_writes
measure disks
[ "$(victim_row)" = "$row0" ] || fail "the victim's disk changed: $(victim_row), was $row0"

say "the appliance restarts on the same state and serves the victim"
kill -TERM "$RPL_AP_PID"
wait "$RPL_AP_PID"
rc=$?
[ "$rc" -eq 0 ] || fail "the appliance exited with status $rc when stopped"
rpl_appliance_start --rpo 0.5
measure restart
state=$("$AP" status --state "$RT/app" --json | json_field - "disks.[disk_id=$SIZE_DISK].size" "disks.[disk_id=$SIZE_DISK].state" | paste -sd' ')
[ "$state" = "8388608 protected" ] || fail "the disk refused the sizes, then grown to 8 MiB, is now: $state"
[ "$(stat -c %s "$RT/replica/$SIZE_DISK.img")" = 8388608 ] || fail "its replica did not grow to 8 MiB"
[ "$(victim_row)" = "$row0" ] || fail "the victim's disk changed: $(victim_row), was $row0"
victim_writes
cmp "$vdev" "$(rpl_replica_of "$vdev")" || fail "the victim's replica differs from its disk"
# (in the sanitizer tree: a finding the appliance survived is still a finding)
! grep -E "runtime error:|Sanitizer" "$RT/appliance.log" >&2 || fail "the sanitizers reported the appliance"
echo "hostile_agent: ok"
