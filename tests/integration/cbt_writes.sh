#!/usr/bin/env bash
# cbt_writes.sh - Description: every kind of write to a tracked loop device (O_DIRECT, buffered +
# fsync, discard, a 700 MiB discard, write-zeroes, writes through partitions) is drained exactly,
# granularity-rounded (the legacy variant: to 8 blocks); flush-only bios mark nothing; errors are one clear line with a non-zero status.
set -u
. "$(dirname "$0")/cbt_lib.sh"
command -v sfdisk >/dev/null || skip "sfdisk is missing (fdisk package)"
command -v blkdiscard >/dev/null || skip "blkdiscard is missing (util-linux)"

img=$WORK/disk.img
truncate -s 64M "$img"
# p1: 1 MiB..17 MiB, p2: 17 MiB..end; written before tracking starts.
printf 'label: dos\nstart=2048, size=32768, type=83\nstart=34816, type=83\n' | sfdisk -q "$img" || fail "sfdisk"
make_loop "$img" 64M -P
dev=$LOOP
wait_until 2 "" test -b "${dev}p2"
# A kernel without the DOS partition parser (minimal VM kernels) still takes them via BLKPG.
[ -b "${dev}p2" ] || partx -a "$dev" 2>/dev/null
[ -b "${dev}p2" ] || fail "partition ${dev}p2 did not appear"
size=$(blockdev --getsize64 "$dev")

out=$(cbt start "$dev") || fail "cbt start exited $?"
check_variant
[[ $out == *"tracking, granularity 4096 bytes"* ]] || fail "unexpected start output: $out"
cbt status "$dev" --json >/dev/null || fail "cbt status --json exited $?"
gran=$(cbt_field "$dev" granularity)
[ "$gran" = 4096 ] || fail "granularity $gran, expected 4096"

expect=$WORK/expected
: >"$expect"
counter() { cbt_field "$dev" "counters.$1"; }
# phase NAME: drains and compares with the writes expected since the previous phase.
phase() {
  cbt drain "$dev" >"$WORK/$1.drained" || fail "$1: cbt drain exited $?"
  "$TOOL" compare "$expect" "$WORK/$1.drained" "$size" "$(marked_granularity "$gran")" || fail "$1: drained extents differ from the writes"
  echo "phase $1: ok ($(wc -l <"$WORK/$1.drained") extents)"
  : >"$expect"
}

phase initial

dd if=/dev/urandom of="$dev" bs=4096 seek=5 count=3 oflag=direct status=none || fail "dd"
echo "20480 12288" >>"$expect"
dd if=/dev/urandom of="$dev" bs=512 seek=1001 count=1 oflag=direct status=none || fail "dd"
echo "512512 512" >>"$expect"
dd if=/dev/urandom of="$dev" bs=1M seek=40 count=1 oflag=direct status=none || fail "dd"
echo "41943040 1048576" >>"$expect"
dd if=/dev/urandom of="$dev" bs=4096 seek=$((size / 4096 - 1)) count=1 oflag=direct status=none || fail "dd"
echo "$((size - 4096)) 4096" >>"$expect"
phase o_direct

dd if=/dev/urandom of="$dev" bs=1000 count=5 seek=3000000 oflag=seek_bytes conv=fsync,notrunc status=none || fail "dd"
echo "3000000 5000" >>"$expect"
phase buffered_fsync

before=$(counter empty_ignored)
dd if=/dev/null of="$dev" conv=fsync,notrunc status=none || fail "dd fsync"
phase flush_only
after=$(counter empty_ignored)
[ "$after" -gt "$before" ] || fail "no flush-only bio was seen (empty_ignored $before -> $after)"

before=$(counter discards)
blkdiscard -o $((8 << 20)) -l $((1 << 20)) "$dev" || fail "blkdiscard"
echo "$((8 << 20)) $((1 << 20))" >>"$expect"
phase discard
[ "$(counter discards)" -gt "$before" ] || fail "the discard was not seen as REQ_OP_DISCARD"

before=$(counter write_zeroes)
blkdiscard -z -o $((12 << 20)) -l $((256 << 10)) "$dev" || fail "blkdiscard -z"
echo "$((12 << 20)) $((256 << 10))" >>"$expect"
fallocate -z -o $((13 << 20)) -l 8192 "$dev" || fail "fallocate -z"
echo "$((13 << 20)) 8192" >>"$expect"
phase write_zeroes
[ "$(counter write_zeroes)" -gt "$before" ] || fail "write-zeroes were not seen as REQ_OP_WRITE_ZEROES"

dd if=/dev/urandom of="${dev}p2" bs=4096 seek=10 count=2 oflag=direct status=none || fail "dd p2"
echo "$((34816 * 512 + 40960)) 8192" >>"$expect"
dd if=/dev/urandom of="${dev}p1" bs=512 seek=7 count=1 oflag=direct status=none || fail "dd p1"
echo "$((2048 * 512 + 3584)) 512" >>"$expect"
dd if=/dev/urandom of="${dev}p1" bs=1000 count=3 seek=5000 oflag=seek_bytes conv=fsync,notrunc status=none || fail "dd p1 buffered"
echo "$((2048 * 512 + 5000)) 3000" >>"$expect"
blkdiscard -o 65536 -l 65536 "${dev}p2" || fail "blkdiscard p2"
echo "$((34816 * 512 + 65536)) 65536" >>"$expect"
phase partitions

# Drained means forgotten: a second drain with no writes is empty.
phase nothing_new

# A discard of 700 MiB, unaligned at both ends: 2,800 level-0 words (the bounded variant marks
# them in 44 chunks of 64 words, 16 MiB each at 4 KiB) and 44 level-1 words, in one bio.
make_loop "$WORK/big.img" 1G
big=$LOOP
cbt start "$big" >/dev/null || fail "cbt start (1 GiB) exited $?"
cbt drain "$big" >/dev/null || fail "cbt drain (1 GiB) exited $?"
blkdiscard -o $((3 * 4096)) -l $((700 << 20)) "$big" || fail "blkdiscard 700 MiB"
echo "$((3 * 4096)) $((700 << 20))" >"$WORK/big.expected"
cbt drain "$big" >"$WORK/big.drained" || fail "cbt drain (1 GiB) exited $?"
"$TOOL" compare "$WORK/big.expected" "$WORK/big.drained" "$(blockdev --getsize64 "$big")" "$(marked_granularity 4096)" ||
  fail "large discard: drained extents differ"
cbt stop "$big" || fail "cbt stop (1 GiB) exited $?"
echo "phase large_discard: ok"

# Errors: one line on stderr, non-zero status.
one_line_error() { # one_line_error WORD CMD...: fails unless CMD fails with one stderr line containing WORD
  local word=$1 err rc
  shift
  err=$("$@" 2>&1 >/dev/null)
  rc=$?
  [ $rc -ne 0 ] || fail "'$*' succeeded"
  [ "$(printf '%s\n' "$err" | wc -l)" -eq 1 ] || fail "'$*': expected one line on stderr, got: $err"
  [[ $err == *"$word"* ]] || fail "'$*': unclear error: $err"
}
one_line_error "partition" cbt start "${dev}p1"
one_line_error "already tracked" cbt start "$dev"
one_line_error "not a block device" cbt start "$img"
one_line_error "No such file" cbt start /dev/no-such-disk
one_line_error "needs a DEVICE" cbt drain

cbt stop "$dev" || fail "cbt stop exited $?"
[ ! -e "$MOBILITY_AGENT_BPF_PIN_DIR/cbt_devices" ] || fail "stopping the last device left the tracker pinned"
# An install with a variant override it does not know refuses, and tracks nothing.
one_line_error "none of auto, bpf_loop, bounded, legacy" env MOBILITY_AGENT_CBT_VARIANT=nonsense "$AGENT" cbt start "$dev" --state "$STATE"
[ ! -e "$MOBILITY_AGENT_BPF_PIN_DIR/cbt_devices" ] || fail "a refused variant override installed the tracker"
one_line_error "not tracked" cbt drain "$dev"
one_line_error "not tracked" cbt status "$dev"
echo "cbt_writes: ok"
