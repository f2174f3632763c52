#!/usr/bin/env bash
# cbt_force_stop.sh - Description: a kernel tracking slot left by a state directory that is gone
# blocks `cbt start` under another one with a message naming the remedy; `cbt stop --force` frees it
# and tracking starts; forcing a slot whose owner still runs makes that owner resync (unclean-detach);
# --force of a device tracked nowhere fails, and --force is refused on other subcommands.
set -u
. "$(dirname "$0")/cbt_lib.sh"

make_loop "$WORK/a.img" 16M
dev_a=$LOOP
make_loop "$WORK/b.img" 16M
dev_b=$LOOP
gone=$WORK/gone-state
owner=$WORK/owner-state
CLEANUP_FIRST+=("\"$AGENT\" cbt stop \"$dev_b\" --state \"$owner\" >/dev/null 2>&1")

say "a slot whose state directory was removed"
"$AGENT" cbt start "$dev_a" --state "$gone" >/dev/null || fail "cbt start under the first state directory failed"
rm -rf "$gone"
out=$(cbt start "$dev_a" 2>&1) && fail "cbt start of a device another state directory tracks succeeded"
grep -q "cbt stop --force $dev_a" <<< "$out" || fail "the refusal does not name the remedy: $out"
cbt stop "$dev_a" 2>/dev/null && fail "a plain cbt stop freed another state directory's slot"
cbt stop "$dev_a" --force || fail "cbt stop --force failed"
cbt start "$dev_a" >/dev/null || fail "cbt start after the forced stop failed"
[ "$(cbt_field "$dev_a" tracking)" = true ] || fail "$dev_a is not tracked after the forced stop and start"

say "a slot whose owner still runs: the owner resyncs"
"$AGENT" cbt start "$dev_b" --state "$owner" >/dev/null || fail "cbt start under the owner failed"
[ "$("$AGENT" cbt status "$dev_b" --state "$owner" --json | json_field - devices.0.resync.required)" = false ] \
  || fail "the owner's device is resync-required before anything happened"
cbt stop "$dev_b" --force || fail "cbt stop --force of the owner's slot failed"
reason=$("$AGENT" cbt status "$dev_b" --state "$owner" --json | json_field - devices.0.resync.reason)
[ "$reason" = unclean-detach ] || fail "the owner's resync reason is '$reason', not unclean-detach"

say "--force of a device tracked nowhere, and on another subcommand"
"$AGENT" cbt stop "$dev_b" --state "$owner" >/dev/null || fail "the owner's own stop failed"
cbt stop "$dev_b" --force 2>/dev/null && fail "cbt stop --force of an untracked device succeeded"
cbt status "$dev_a" --force >/dev/null 2>&1; [ $? -eq 2 ] || fail "--force on status was not a usage error"
cbt stop "$dev_a" || fail "the final stop failed"
echo "cbt_force_stop: ok"
