#!/usr/bin/env bash
# cbt_resync.sh - Description: never silent: a reboot (boot id change), tracking removed behind the
# agent's back (unclean detach), a resize with writes beyond the old end, a loop device re-pointed
# at another file (diskseq) and a kernel without BTF each make the device resync-required with the
# reason, and so does a completion the kernel counted but the tracker's program did not see
# (completion-missed); drain then prints the whole device and exits 3; only acknowledging the exact
# latest event count clears it.
set -u
. "$(dirname "$0")/cbt_lib.sh"
make_loop "$WORK/disk.img" 64M
dev=$LOOP
name=$(basename "$dev")
record=$STATE/cbt/$name.state
cbt start "$dev" >/dev/null || fail "cbt start exited $?"
check_variant
json() { cbt status "$dev" --json; }
# field NAME: a value of the device's status; required / reason / count are the resync ones.
field() {
  case $1 in
    required | reason | count) cbt_field "$dev" "resync.$1" ;;
    *) cbt_field "$dev" "$1" ;;
  esac
}
expect_resync() { # expect_resync REASON: resync required for REASON; drain lists the whole device, exits 3
  [ "$(field required)" = true ] || fail "$1: resync not required: $(json)"
  [ "$(field reason)" = "$1" ] || fail "expected reason $1, got $(field reason)"
  local out rc
  out=$(cbt drain "$dev" 2>"$WORK/drain.err")
  rc=$?
  [ $rc -eq 3 ] || fail "$1: drain exited $rc, expected 3"
  [ "$out" = "0 $(blockdev --getsize64 "$dev")" ] || fail "$1: drain did not list the whole device: $out"
  [ "$(wc -l <"$WORK/drain.err")" -eq 1 ] && grep -q "cbt ack $dev $(field count)" "$WORK/drain.err" ||
    fail "$1: unclear drain message: $(cat "$WORK/drain.err")"
}
ack() { cbt ack "$dev" "$(field count)" || fail "ack of $(field count) exited $?"; }
# drain_exact WHAT SEEK COUNT: COUNT 4 KiB blocks written at block SEEK, then a drain that must list
# exactly them. A completion the kernel skipped meanwhile (this kernel does, about once in 10^5
# requests) makes the drain print the whole device as completion-missed, which the CLI, keeping no
# history, cannot repair: that is acknowledged, counted and the write made again.
drain_exact() {
  local what=$1 seek=$2 count=$3 out rc try
  for try in 1 2 3; do
    dd if=/dev/urandom of="$dev" bs=4096 seek="$seek" count="$count" oflag=direct status=none
    out=$(cbt drain "$dev" 2>"$WORK/drain.err")
    rc=$?
    if [ $rc -eq 3 ] && grep -q "completion-missed" "$WORK/drain.err"; then
      echo "$what: a completion the kernel skipped (completion-missed, try $try): acknowledged, written again"
      ack
      continue
    fi
    [ $rc -eq 0 ] && [ "$out" = "$(marked $((seek * 4096)) $((count * 4096)))" ] || fail "$what is not exact: $out"
    return 0
  done
  fail "$what: a completion skipped in each of 3 tries"
}

[ "$(field required)" = false ] || fail "a fresh start is resync-required"
uuid0=$(field tracker_uuid)

# Reboot: the record was written under another boot id.
sed -i "s/^boot_id .*/boot_id 00000000-0000-0000-0000-000000000000/" "$record"
expect_resync reboot
[ "$(field tracker_uuid)" != "$uuid0" ] || fail "the tracker UUID survived a reboot"
count=$(field count)
err=$(cbt ack "$dev" $((count + 1)) 2>&1) && fail "ack of a future event succeeded"
ack
[ "$(field required)" = false ] || fail "ack did not clear"
drain_exact "drain after ack" 3 1

# Unclean detach: the pins vanish (bpffs remounted, someone removed them).
rm -rf "$MOBILITY_AGENT_BPF_PIN_DIR"
[ "$(field tracking)" = false ] || fail "still tracking without pins"
expect_resync unclean-detach
[ "$(field tracking)" = true ] || fail "drain did not re-arm tracking"
ack

# A completion the kernel did not run the tracker's program for: the kernel counts written sectors
# the program did not see. Once the writes have returned, both counts agree to the sector; then the
# program's count of the slot is put back to 0 on every CPU (bpftool), which is what such skips leave.
dd if=/dev/urandom of="$dev" bs=64K seek=5 count=3 oflag=direct status=none
[ "$(field completion_check.on)" = true ] || fail "the completion check is off for a loop device: $(json)"
kernel=$(field completion_check.kernel_sectors)
seen=$(field completion_check.tracker_sectors)
[ "$kernel" -ge 384 ] && [ "$kernel" = "$seen" ] || fail "after 384 written sectors the kernel counts $kernel, the tracker $seen"
[ "$(field required)" = false ] || fail "a resync without a missed completion: $(json)"
slot=$(cbt status --json | json_field - slots.0.slot)
zeros=$(printf '0 %.0s' $(seq 1 72))
# shellcheck disable=SC2086 # the bytes are words
bpftool map update pinned "$MOBILITY_AGENT_BPF_PIN_DIR/cbt_counters" key $slot 0 0 0 value $zeros ||
  fail "cannot reset the tracker's counters of slot $slot"
msg=$(cbt status "$dev" 2>&1 >/dev/null)
[[ $msg == *"the kernel completed $kernel sectors of writes that the tracker's completion program did not see"* ]] ||
  fail "the miss is not named with its size: $msg"
expect_resync completion-missed
ack
# Raised once: the missed sectors are taken into the base, and later writes are seen again.
dd if=/dev/urandom of="$dev" bs=4096 seek=7 count=1 oflag=direct status=none
[ "$(field required)" = false ] || fail "the same missed completion raised again: $(json)"
[ "$(field completion_check.kernel_sectors)" = "$(field completion_check.tracker_sectors)" ] ||
  fail "the counts disagree after the miss was reported: $(json)"
cbt drain "$dev" >/dev/null

# Resize, and a write beyond the old end before the agent noticed: two events.
before=$(field count)
truncate -s 96M "$WORK/disk.img"
losetup -c "$dev" || fail "losetup -c"
dd if=/dev/urandom of="$dev" bs=4096 seek=$((80 * 256)) count=1 oflag=direct status=none
stale=$(field count)
[ "$stale" -ge $((before + 2)) ] || fail "resize + out-of-range write raised $((stale - before)) events"
[ "$(field size)" = 100663296 ] || fail "the new size is not tracked"
# The ack of an older event is refused while a newer one is pending.
err=$(cbt ack "$dev" $((stale - 1)) 2>&1) && fail "ack of a stale count succeeded"
[[ $err == *"not the latest"* ]] || fail "unclear stale-ack error: $err"
[ "$(field required)" = true ] || fail "a stale ack cleared the resync"
expect_resync resize
ack
drain_exact "drain after resize" $((90 * 256)) 2
# Media change: the loop device re-pointed at other content, not one write through it.
if [ -e "/sys/block/$name/diskseq" ]; then
  truncate -s 96M "$WORK/other.img"
  losetup -d "$dev" && losetup "$dev" "$WORK/other.img" || fail "cannot re-point $dev"
  expect_resync media-changed
  ack
else
  echo "no diskseq in sysfs (kernel < 5.15): media-change detection not tested"
fi
cbt stop "$dev" || fail "stop"

# No BTF: fallback, resync every cycle, clear message.
make_loop "$WORK/disk2.img" 32M
dev=$LOOP
export MOBILITY_AGENT_BTF=/nonexistent MOBILITY_AGENT_BPF_PIN_DIR=$MOBILITY_AGENT_BPF_PIN_DIR-nobtf
CLEANUP_PATHS=("$MOBILITY_AGENT_BPF_PIN_DIR" "${CLEANUP_PATHS[@]}")
err=$(cbt start "$dev" 2>&1 >/dev/null) || fail "fallback start exited $?"
[[ $err == *"eBPF tracking unavailable (kernel BTF not found at /nonexistent"* ]] || fail "unclear fallback message: $err"
mapfile -t v < <(json | json_field - ebpf.available ebpf.reason)
[ "${v[0]:-}" = false ] && [[ ${v[1]:-} == "kernel BTF not found"* ]] || fail "status does not say why: $(json)"
[ "$(field mode)" = fallback ] || fail "not in fallback mode"
expect_resync no-ebpf
ack
expect_resync no-ebpf # every cycle
cbt stop "$dev" || fail "stop fallback"

# A BTF file that is not one: every variant fails to load; a later process (cbt status) still says
# eBPF is unavailable, and why, until a start loads it.
printf 'not a BTF file\n' >"$WORK/bogus.btf"
export MOBILITY_AGENT_BTF=$WORK/bogus.btf
err=$(cbt start "$dev" 2>&1 >/dev/null) || fail "start with a bogus BTF exited $?"
[[ $err == *"eBPF tracking unavailable"* ]] || fail "unclear message with a bogus BTF: $err"
mapfile -t v < <(json | json_field - ebpf.available ebpf.reason)
[ "${v[0]:-}" = false ] && [[ ${v[1]:-} == *"the last try in this boot"* ]] ||
  fail "after every variant failed, status says: $(json)"
cbt stop "$dev" || fail "stop after the bogus BTF"
unset MOBILITY_AGENT_BTF
cbt start "$dev" >/dev/null 2>&1 || fail "start with the kernel's BTF exited $?"
[ "$(json | json_field - ebpf.available)" = true ] || fail "a successful start did not clear the refusal: $(json)"
[ ! -e "$STATE/cbt/ebpf-refused" ] || fail "the refusal was kept after a successful start"
cbt stop "$dev" || fail "stop"
echo "cbt_resync: ok"
