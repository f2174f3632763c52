#!/usr/bin/env bash
# unprotect.sh - Description: `mobility-agent unprotect` of a replicated loop disk stops its tracking
# and its cycles (the appliance shows it unprotected and healthy, asks nothing more of it) and keeps its
# replica and points (a point restores, byte-exact, after the disk changed); protecting the device
# again gives it a new disk id and a fresh initial sync, which replicates it exactly; unprotect
# --delete-replica is refused without --yes when no terminal can confirm, and with it the appliance
# deletes the image with its kept point images, the cache and the catalog rows (points and restore
# then say not found) while the other unprotected disk keeps its points; protecting again works.
# protect of a device whose kernel tracking slot a removed state directory left reclaims it (logged,
# resync reason slot-reclaimed) and replicates it exactly.
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
wait_until -i 0.5 60 "the appliance did not apply the new disk's cycles" rpl_disk_applied "$new_id"
cmp "$RT/replica/$new_id.img" "$dev" || fail "the replica of the protected-again disk differs from it"
[ "$(app_disk "$old_id" state)" = unprotected ] || fail "the old disk is $(app_disk "$old_id" state) now"
[ "$(app_disk "$old_id" last_committed_cycle)" -eq "$committed" ] || fail "the old disk took cycles again"

say "unprotect --delete-replica: refused without --yes when no terminal confirms it"
point2=$("$AG" checkpoint --wait "$dev" --state "$RT/agent" | tail -n 1) || fail "checkpoint of $new_id failed"
ls "$RT/replica" | grep -Eq "^$new_id\.img\.(cycle|undo)-" || fail "no point image (reflink or undo file) of $new_id to delete"
out=$("$AG" unprotect "$dev" --delete-replica --state "$RT/agent" 2>&1 < /dev/null); rc=$?
[ "$rc" -eq 2 ] || fail "unprotect --delete-replica without --yes and no terminal exited $rc: $out"
grep -q -- "--yes" <<< "$out" || fail "the refusal does not say to give --yes: $out"
[ "$(rpl_disk_id "$dev")" = "$new_id" ] || fail "the refused unprotect changed the agent's disks"
"$AG" unprotect "$dev" --yes --state "$RT/agent" >/dev/null 2>&1 && fail "--yes without --delete-replica was taken"

say "unprotect --delete-replica --yes: the replica, its points, cache and catalog rows go"
out=$("$AG" unprotect "$dev" --delete-replica --yes --state "$RT/agent") || fail "unprotect --delete-replica failed: $out"
grep -q "unprotected $dev (disk $new_id).*deletes its replica" <<< "$out" || fail "unprotect --delete-replica said: $out"
gone() { [ "$("$AP" status --state "$RT/app" --json | json_field -d none - "disks.[disk_id=$new_id].state")" = none ]; }
wait_until -i 0.5 60 "the appliance still lists the deleted disk" gone
rpl_expect_deleted "$new_id"
out=$("$AP" points --state "$RT/app" --disk "$new_id" 2>&1) && fail "points of the deleted disk succeeded: $out"
grep -qi "not found\|no such disk\|no disk" <<< "$out" || fail "points of the deleted disk said: $out"
out=$("$AP" restore --state "$RT/app" --disk "$new_id" --point "$point2" --out "$RT/deleted.img" 2>&1) \
  && fail "restore of the deleted disk succeeded"
grep -qi "not found\|no such disk\|no disk" <<< "$out" || fail "restore of the deleted disk said: $out"
[ "$(app_disk "$old_id" state)" = unprotected ] || fail "the other (kept) unprotected disk is $(app_disk "$old_id" state)"
"$AP" restore --state "$RT/app" --disk "$old_id" --point "$point" --out "$RT/restored2.img" >/dev/null \
  || fail "the kept disk's point no longer restores"

say "protect it once more: replicated again"
"$AG" protect "$dev" --state "$RT/agent" >/dev/null || fail "protecting the device after the deletion failed"
third_id=$(rpl_disk_id "$dev")
[ "$third_id" != "$new_id" ] || fail "the device got the deleted disk's id back"
rpl_wait_cycle "$dev" 1
wait_until -i 0.5 60 "the appliance did not apply the third disk's cycles" rpl_disk_applied "$third_id"
cmp "$RT/replica/$third_id.img" "$dev" || fail "the replica of the disk protected after the deletion differs from it"

say "protect reclaims a kernel tracking slot whose owner state directory is gone"
rpl_loop dev2 16M random
"$AG" cbt start "$dev2" --state "$RT/gone-state" >/dev/null || fail "cbt start under another state directory failed"
rm -rf "$RT/gone-state"
"$AG" protect "$dev2" --state "$RT/agent" >/dev/null || fail "protect of a device whose slot's owner is gone failed"
grep -q "$dev2: reclaimed stale kernel tracking slot.*gone-state is gone" "$RT/agent.log" \
  || fail "the agent did not log the reclaim: $(tail -5 "$RT/agent.log")"
reason=$("$AG" cbt status "$dev2" --state "$RT/agent" --json | json_field - devices.0.resync.reason)
[ "$reason" = slot-reclaimed ] || fail "the reclaimed device's resync reason is '$reason'"
rpl_wait_cycle "$dev2" 1
id2=$(rpl_disk_id "$dev2")
wait_until -i 0.5 60 "the appliance did not apply the reclaimed disk's cycles" rpl_disk_applied "$id2"
cmp "$RT/replica/$id2.img" "$dev2" || fail "the replica of the disk protected over a reclaimed slot differs from it"
echo "unprotect: ok (disk $old_id unprotected, $point restored exactly; protected again as $new_id, replicated;" \
  "$new_id deleted with --delete-replica; protected again as $third_id; a stale slot reclaimed by protect)"
