#!/usr/bin/env bash
# unprotect.sh - Description: `mobility-agent unprotect` of a replicated loop disk stops its tracking
# and its cycles (the appliance shows it unprotected and healthy, asks nothing more of it) and keeps its
# replica and points (a point restores, byte-exact, after the disk changed); protecting the device
# again gives it a new disk id and a fresh initial sync, which replicates it exactly.
set -u
. "$(dirname "$0")/lib/replication.sh"
rpl_setup 240

rpl_appliance_init
rpl_appliance_start --rpo 0.5
rpl_agent_register
rpl_agent_start
rpl_loop dev 64M random
"$AG" protect "$dev" --state "$RT/agent" >/dev/null || fail "protect failed"
rpl_wait_cycle "$dev" 1
old_id=$(rpl_disk_id "$dev")
dd if=/dev/urandom of="$dev" bs=1M count=4 seek=8 oflag=direct conv=notrunc status=none
point=$("$AG" checkpoint --wait "$dev" --state "$RT/agent" | tail -n 1) || fail "checkpoint failed"
dd if="$dev" of="$RT/at-point.img" bs=1M iflag=direct status=none

app_disk() { "$AP" status --state "$RT/app" --json | json_field - "disks.[disk_id=$1].$2"; }

say "unprotect $dev (disk $old_id)"
out=$("$AG" unprotect "$dev" --state "$RT/agent") || fail "unprotect failed: $out"
grep -q "unprotected $dev (disk $old_id)" <<< "$out" || fail "unprotect said: $out"
[ "$("$AG" status --state "$RT/agent" --json | json_field - disks)" = "[]" ] || fail "the agent still lists the disk"
"$AG" cbt status "$dev" --state "$RT/agent" >/dev/null 2>&1 && fail "the device is still tracked"
unprotected() { [ "$(app_disk "$old_id" state)" = unprotected ]; }
wait_until -i 0.5 30 "the appliance does not show the disk unprotected" unprotected
[ "$(app_disk "$old_id" health.state)" = healthy ] || fail "the unprotected disk's health is $(app_disk "$old_id" health.state)"
"$AG" unprotect "$dev" --state "$RT/agent" 2>/dev/null && fail "a second unprotect of the same device succeeded"
committed=$(app_disk "$old_id" last_committed_cycle)

say "the disk changes; its point still restores as it was"
dd if=/dev/urandom of="$dev" bs=1M count=8 seek=20 oflag=direct conv=notrunc status=none
"$AP" restore --state "$RT/app" --disk "$old_id" --point "$point" --out "$RT/restored.img" >/dev/null \
  || fail "restore of $point of the unprotected disk failed"
cmp "$RT/restored.img" "$RT/at-point.img" || fail "the restored point differs from the disk as it was at $point"
[ "$(app_disk "$old_id" last_committed_cycle)" -eq "$committed" ] || fail "cycles of the unprotected disk went on"

say "protect it again: a new disk id, a fresh initial sync"
"$AG" protect "$dev" --state "$RT/agent" >/dev/null || fail "protecting the device again failed"
new_id=$(rpl_disk_id "$dev")
[ "$new_id" != "$old_id" ] || fail "the device got its old disk id back"
rpl_wait_cycle "$dev" 1
dd if=/dev/urandom of="$dev" bs=1M count=2 seek=40 oflag=direct conv=notrunc status=none
"$AG" checkpoint --wait "$dev" --state "$RT/agent" >/dev/null || fail "checkpoint after protecting again failed"
applied() { [ "$(app_disk "$new_id" last_applied_cycle)" -ge "$(app_disk "$new_id" last_committed_cycle)" ]; }
wait_until -i 0.5 60 "the appliance did not apply the new disk's cycles" applied
cmp "$RT/replica/$new_id.img" "$dev" || fail "the replica of the protected-again disk differs from it"
[ "$(app_disk "$old_id" state)" = unprotected ] || fail "the old disk is $(app_disk "$old_id" state) now"
[ "$(app_disk "$old_id" last_committed_cycle)" -eq "$committed" ] || fail "the old disk took cycles again"
echo "unprotect: ok (disk $old_id unprotected, $point restored exactly; protected again as $new_id, replicated)"
