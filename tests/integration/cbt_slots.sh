#!/usr/bin/env bash
# cbt_slots.sh - Description: `cbt status` lists every kernel tracking slot with its owner state
# directory and the disk identity (diskseq) it tracks; a slot whose owner state directory is gone,
# or whose loop device was re-attached to another file (new diskseq), shows stale with the reason,
# and `cbt start` (what `protect` runs) under another state directory reclaims it, recording the
# resync reason slot-reclaimed; a slot whose owner is alive and whose disk is the same is refused.
set -u
. "$(dirname "$0")/cbt_lib.sh"

make_loop "$WORK/a.img" 16M
dev_a=$LOOP
make_loop "$WORK/b.img" 16M
dev_b=$LOOP
gone=$WORK/gone-state
owner=$WORK/owner-state
CLEANUP_FIRST+=("\"$AGENT\" cbt stop \"$dev_b\" --state \"$owner\" >/dev/null 2>&1")

# majmin DEV: the device's major:minor, as cbt status names a slot.
majmin() { printf '%d:%d' "0x$(stat -c %t "$1")" "0x$(stat -c %T "$1")"; }
# slot_field DEV PATH: a field of DEV's kernel slot in cbt status --json.
slot_field() { cbt status --json | json_field - "slots.[device=$(majmin "$1")].$2"; }

say "a slot whose owner state directory is gone"
"$AGENT" cbt start "$dev_a" --state "$gone" >/dev/null || fail "cbt start under the first state directory failed"
[ "$(slot_field "$dev_a" owner)" = "$(realpath "$gone")" ] || fail "the slot's owner is not $gone: $(cbt status --json)"
[ "$(slot_field "$dev_a" stale)" = false ] || fail "a live owner's slot shows stale"
rm -rf "$gone"
[ "$(slot_field "$dev_a" stale)" = true ] || fail "the slot of a removed state directory is not stale"
[ "$(slot_field "$dev_a" stale_reason)" = owner-gone ] || fail "stale reason '$(slot_field "$dev_a" stale_reason)'"
cbt status | grep -q "STALE (owner-gone" || fail "cbt status (text) does not show the stale slot: $(cbt status)"
out=$(cbt start "$dev_a" 2>&1) || fail "cbt start of a device whose slot's owner is gone failed: $out"
grep -q "reclaimed stale kernel tracking slot" <<< "$out" || fail "the reclaim was not reported: $out"
[ "$(cbt_field "$dev_a" tracking)" = true ] || fail "$dev_a is not tracked after the reclaim"
[ "$(cbt_field "$dev_a" resync.reason)" = slot-reclaimed ] || fail "resync reason '$(cbt_field "$dev_a" resync.reason)'"
[ "$(cbt_field "$dev_a" resync.required)" = true ] || fail "the reclaimed device is not resync-required"
[ "$(slot_field "$dev_a" owner)" = "$(realpath "$STATE")" ] || fail "the reclaimed slot's owner is not $STATE"
[ "$(slot_field "$dev_a" stale)" = false ] || fail "the reclaimed slot still shows stale"

say "a live owner's slot is refused"
"$AGENT" cbt start "$dev_b" --state "$owner" >/dev/null || fail "cbt start under the owner failed"
out=$(cbt start "$dev_b" 2>&1) && fail "cbt start of a device a live owner tracks succeeded"
grep -q "already tracked under another agent state directory ($(realpath "$owner")" <<< "$out" \
  || fail "the refusal does not name the owner: $out"
grep -q "cbt stop --force $dev_b" <<< "$out" || fail "the refusal does not name the remedy: $out"
[ "$(slot_field "$dev_b" stale)" = false ] || fail "a live owner's slot shows stale"
[ "$(slot_field "$dev_b" owner)" = "$(realpath "$owner")" ] || fail "the refused start changed the slot's owner"

say "a slot whose loop device was re-attached to another file"
[ -r "/sys/block/${dev_b#/dev/}/diskseq" ] || skip "no diskseq (Linux < 5.15): identity changes are not seen"
before=$(slot_field "$dev_b" identity.recorded_diskseq)
truncate -s 16M "$WORK/c.img"
losetup -d "$dev_b" || fail "cannot detach $dev_b"
if ! losetup "$dev_b" "$WORK/c.img"; then
  CLEANUP_LOOPS=("${CLEANUP_LOOPS[@]/"$dev_b"/}") # someone else has it now: never detach theirs
  fail "cannot re-attach $dev_b to another file (taken by another user meanwhile?)"
fi
[ "$(slot_field "$dev_b" stale)" = true ] || fail "the re-pointed device's slot is not stale: $(cbt status --json)"
[ "$(slot_field "$dev_b" stale_reason)" = identity-changed ] || fail "stale reason '$(slot_field "$dev_b" stale_reason)'"
now=$(slot_field "$dev_b" identity.current_diskseq)
[ "$now" != "$before" ] && [ "$now" = "$(cat "/sys/block/${dev_b#/dev/}/diskseq")" ] \
  || fail "identity: recorded $before, current $now"
out=$(cbt start "$dev_b" 2>&1) || fail "cbt start of a re-pointed device's stale slot failed: $out"
grep -q "reclaimed stale kernel tracking slot.*another disk now" <<< "$out" || fail "the reclaim was not reported: $out"
[ "$(cbt_field "$dev_b" resync.reason)" = slot-reclaimed ] || fail "resync reason '$(cbt_field "$dev_b" resync.reason)'"
[ "$(slot_field "$dev_b" owner)" = "$(realpath "$STATE")" ] || fail "the reclaimed slot's owner is not $STATE"
[ "$("$AGENT" cbt status "$dev_b" --state "$owner" --json | json_field - devices.0.resync.required)" = true ] \
  || fail "the former owner does not see its tracking gone"
cbt status | grep -q "kernel tracking slots: 2 in use" || fail "cbt status does not list both slots: $(cbt status)"

cbt stop "$dev_a" || fail "stop of $dev_a failed"
cbt stop "$dev_b" || fail "stop of $dev_b failed"
[ "$(cbt status --json | json_field - slots)" = "[]" ] || fail "slots left after the stops: $(cbt status --json)"
echo "cbt_slots: ok"
