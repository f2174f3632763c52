#!/usr/bin/env bash
# cbt_force_stop.sh - Description: a kernel tracking slot whose owner still runs blocks `cbt start`
# under another state directory with a message naming the remedy; `cbt stop --force` frees it, the
# owner resyncs (unclean-detach) and tracking starts; --force also frees a slot whose state directory
# is gone; --force of a device tracked nowhere fails, and --force is refused on other subcommands.
set -u
. "$(dirname "$0")/cbt_lib.sh"

make_loop "$WORK/a.img" 16M
dev_a=$LOOP
make_loop "$WORK/b.img" 16M
dev_b=$LOOP
gone=$WORK/gone-state
owner=$WORK/owner-state
CLEANUP_FIRST+=("\"$AGENT\" cbt stop \"$dev_a\" --state \"$owner\" >/dev/null 2>&1")

say "a live owner's slot: start refused naming the remedy; --force frees it and the owner resyncs"
"$AGENT" cbt start "$dev_a" --state "$owner" >/dev/null || fail "cbt start under the owner failed"
[ "$("$AGENT" cbt status "$dev_a" --state "$owner" --json | json_field - devices.0.resync.required)" = false ] \
  || fail "the owner's device is resync-required before anything happened"
out=$(cbt start "$dev_a" 2>&1) && fail "cbt start of a device another state directory tracks succeeded"
grep -q "cbt stop --force $dev_a" <<< "$out" || fail "the refusal does not name the remedy: $out"
cbt stop "$dev_a" 2>/dev/null && fail "a plain cbt stop freed another state directory's slot"
cbt stop "$dev_a" --force || fail "cbt stop --force failed"
reason=$("$AGENT" cbt status "$dev_a" --state "$owner" --json | json_field - devices.0.resync.reason)
[ "$reason" = unclean-detach ] || fail "the owner's resync reason is '$reason', not unclean-detach"
cbt start "$dev_a" >/dev/null || fail "cbt start after the forced stop failed"
[ "$(cbt_field "$dev_a" tracking)" = true ] || fail "$dev_a is not tracked after the forced stop and start"

say "a slot whose state directory was removed: --force frees it too"
"$AGENT" cbt start "$dev_b" --state "$gone" >/dev/null || fail "cbt start under the removed state directory failed"
rm -rf "$gone"
cbt stop "$dev_b" --force || fail "cbt stop --force of a removed state directory's slot failed"
mm_b=$(printf '%d:%d' "0x$(stat -c %t "$dev_b")" "0x$(stat -c %T "$dev_b")")
[ "$(cbt status --json | json_field -d none - "slots.[device=$mm_b].slot")" = none ] || fail "$dev_b still has a slot"

say "--force of a device tracked nowhere, and on another subcommand"
"$AGENT" cbt stop "$dev_a" --state "$owner" >/dev/null || fail "the owner's own stop (of its record) failed"
cbt stop "$dev_b" --force 2>/dev/null && fail "cbt stop --force of an untracked device succeeded"
cbt status "$dev_a" --force >/dev/null 2>&1; [ $? -eq 2 ] || fail "--force on status was not a usage error"
cbt stop "$dev_a" || fail "the final stop failed"
echo "cbt_force_stop: ok"
