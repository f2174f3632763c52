#!/usr/bin/env bash
# e2e_skipped_completion.sh - Description: a completion the kernel skipped, met by the agent daemon:
# what its committed cycles sent lately is read back from the disk and compared, and only what differs
# is sent again. The skip is made by hand: 4 KiB written into the loop device's backing file (a write
# the tracker never saw, as if it landed after the cycle's read) and the tracker's count of completed
# sectors put back to 0 (bpftool). The next point sends exactly that 4 KiB, and the replica ends
# identical to the disk.
set -u
. "$(dirname "$0")/lib/replication.sh"
command -v bpftool >/dev/null || skip "bpftool is missing (scripts/setup.sh)"
rpl_setup

# The record of what was sent is complete once it has covered one window since the initial sync
# (a whole-disk read, not recorded unit by unit): 15 s here instead of 120.
export RPL_TEST_SENT_WINDOW_MS=15000
rpl_appliance_init
rpl_appliance_start
rpl_agent_register
rpl_agent_start
rpl_loop dev 64M random
img=$(losetup -n -O BACK-FILE "$dev")
"$AG" protect "$dev" --state "$RT/agent" >/dev/null || fail "protect failed"
rpl_wait_cycle "$dev" 1
replica=$(rpl_replica_of "$dev")
agent_field() { "$AG" status --state "$RT/agent" --json | json_field - "disks.[device=$dev].$1"; }
[ "$(agent_field sent_check.on)" = true ] || fail "no record of what is sent: $("$AG" status --state "$RT/agent" --json)"

say "wait until the record covers a window since the initial sync"
record_complete() { [ "$(agent_field sent_check.complete)" = true ]; }
wait_until 60 "the record of what was sent never became complete" record_complete

say "a delta cycle: 1 MiB at 8 MiB and 64 KiB at 40 MiB"
dd if=/dev/urandom of="$dev" bs=1M seek=8 count=1 oflag=direct status=none
dd if=/dev/urandom of="$dev" bs=64K seek=640 count=1 oflag=direct status=none
"$AG" checkpoint "$dev" --wait --state "$RT/agent" >/dev/null || fail "checkpoint failed"
cmp "$replica" "$dev" || fail "replica differs after the delta"
units=$(agent_field sent_check.units)
[ "$units" -ge 272 ] || fail "the record holds $units units after sending 1 MiB + 64 KiB (272 units)"

say "a write that lands behind the tracker, and the completion it did not see"
slot=$("$AG" cbt status --json --state "$RT/agent" | json_field - slots.0.slot)
[ -n "$slot" ] || fail "no slot for $dev"
sent_before=$(agent_field raw_bytes)
# 4 KiB inside the 1 MiB just sent (block 8 MiB + 12 KiB), through the backing file: the loop device
# reads it from the file's page cache, the tracker never marks it.
dd if=/dev/urandom of="$img" bs=4096 seek=$((8 * 256 + 3)) count=1 conv=notrunc status=none
blockdev --flushbufs "$dev" # cmp reads through the device's own page cache, which still holds the old block
cmp -s "$replica" "$dev" && fail "the write behind the tracker did not change the disk?"
zeros=$(printf '0 %.0s' $(seq 1 72))
# shellcheck disable=SC2086 # the bytes are words
bpftool map update pinned "$MOBILITY_AGENT_BPF_PIN_DIR/cbt_counters" key $slot 0 0 0 value $zeros ||
  fail "cannot reset the tracker's counters of slot $slot"
"$AG" checkpoint "$dev" --wait --state "$RT/agent" >/dev/null || fail "checkpoint failed after the skip"
cmp "$replica" "$dev" || fail "replica differs from the disk after the repair: the write behind was lost"

checks=$(agent_field sent_check.checks)
differing=$(agent_field sent_check.differing_bytes)
checked=$(agent_field sent_check.checked_bytes)
sent=$(($(agent_field raw_bytes) - sent_before))
[ "$checks" -ge 1 ] || fail "no check ran: $("$AG" status --state "$RT/agent" --json)"
[ "$differing" = 4096 ] || fail "the check found $differing bytes differing, not the 4096 written behind"
[ "$checked" -ge $((272 * 4096)) ] || fail "the check read back $checked bytes, less than what was sent lately"
[ "$sent" = 4096 ] || fail "the repair sent $sent bytes, not the 4096 that differed"
grep -q "differ from the disk now and are sent again" "$RT/agent.log" || fail "the agent's log does not say what it did"
required=$("$AG" cbt status "$dev" --json --state "$RT/agent" | json_field - devices.0.resync.required)
[ "$required" = false ] || fail "a resync was raised: $("$AG" cbt status "$dev" --state "$RT/agent" 2>&1)"
echo "e2e_skipped_completion: ok (checked $checked bytes, $differing differed, $sent sent again)"
