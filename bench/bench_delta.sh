#!/usr/bin/env bash
# bench_delta.sh - one delta cycle after 1 % of a 4 GiB loop disk changed (random 4..64 KiB writes,
# 4 KiB aligned, spread over the disk), against rsync's delta transfer of the same change from the
# same device into a copy of the pre-change image, in the same run:
#   rsync --inplace --no-whole-file --copy-devices --write-devices --fsync SRC_DEV DST_DEV
# (Debian 12's rsync has --copy-devices and --write-devices; --fsync makes its copy durable, as
# ours is: journal fsynced before the ACK, replica fdatasynced at apply.)
# Ours is timed from the writes being done (fsynced) until the appliance's event says the cycle was
# applied to the replica (the time the event carries, to the millisecond); the cycle is started on demand by
# `mobility-agent checkpoint DEV --wait` (flip, read the changed blocks, compress, send, journal +
# fsync, ACK, apply + fdatasync), whose own return (the point recorded) is printed too. Each round writes a new change (seed = round);
# ours and rsync run in alternating order (when rsync runs first, ours is timed from its start); both copies are compared with the source every round.
# The machine's own limit is measured in every round too (`bench_gen limit delta`): reading the
# round's extents from the source (O_DIRECT) and writing them into a copy of the image beside the
# replica with one fdatasync, the faster of two runs; ours/limit does not move with the peer's luck
# (goal <= 1.5). Beside it, the limit of the work a point without reflinks adds (`bench_gen limit
# delta ... KEEP`): the blocks the extents overwrite read from the copy (O_DIRECT) and appended to a
# file of their own, fdatasynced, before the same writes; ours against it says how near the hardware
# we are for what we must do. Each round also prints the CPU both daemons used over it (their
# cycle and its point, from /proc; 1 tick = 10 ms).
#
#   bash bench/bench_delta.sh [ROUNDS] [SIZE] [PERCENT]        (root; defaults: 3 4G 1)
#
# BENCH_REPLICA_CACHE=cold drops the replica's pages from the page cache before every round (after
# the writes, before the clock starts), as on an appliance whose page cache cannot hold its fleet's
# replicas: the blocks a recovery point keeps are then read from the disk (default: warm, the
# replica cached by the previous round's comparison).
#
# The disk is all text (a disk of zeros would make rsync's block matching pathological, which is
# not the comparison we want). Loop devices are buffered: both sides read through the page cache.
. "$(dirname "$0")/lib_bench.sh"

ROUNDS=${1:-3}
SIZE=${2:-4G}
PCT=${3:-1}
bench_setup
command -v rsync >/dev/null || die "needs rsync (scripts/setup.sh)"

echo "delta: $SIZE text loop disk, $PCT % changed per round, $ROUNDS rounds, $(nproc) CPUs, load at start $(load_avg)"
say "generating the source ($SIZE of text) and a copy for rsync's destination"
src=$RT/src.img
dst=$RT/dst.img
"$GEN" text "$src" "$SIZE" 2 0 || die "bench_gen failed"
cp "$src" "$dst"
bench_loop dev "$src"
bench_loop ddev "$dst"
bytes=$(blockdev --getsize64 "$dev")

say "initial sync (not timed here: see bench_full_sync.sh)"
# No scheduled points: a cycle the appliance starts by itself between a round's writes and its
# checkpoint would be the cycle the round waits for (it was, once a run passed the 5-minute default).
BENCH_AP_ARGS="--points crash=off,app=off ${BENCH_AP_ARGS:-}" bench_pair_start d 3600
bench_protect d "$dev"
wait_applied d 1 1800
replica=$(replica_of d)
cmp "$replica" "$dev" || die "replica differs after the initial sync"
limit_img=$(dirname "$replica")/limit.img # beside the replica: the same file system
# A copy of its own (coreutils reflinks where it can, on XFS): writes into shared blocks would go
# through copy-on-write, which makes the limit slower than the disk is.
cp --reflink=never "$replica" "$limit_img"
# Its dirty pages written now: else round 1's limit would pay for the whole copy in its fdatasync.
sync "$limit_img"

run_ours() { # T0 BASE: RESULT = until cycle BASE+1 is applied (the time its event carries), CKPT = until checkpoint returned
  local t0=$1 base=$2 ta
  "$AG" checkpoint "$dev" --wait --state "$RT/d/agent" > "$RT/ckpt.out" 2>&1 || die "checkpoint failed: $(cat "$RT/ckpt.out")"
  CKPT=$(calc "$(now) - $t0" 3)
  wait_applied d $((base + 1)) 600
  ta=$T_APPLIED
  RESULT=$(calc "$ta - $t0" 3)
  [ "$(calc "($RESULT > 0)" 0)" = 1 ] || die "cycle $((base + 1)) was applied before the checkpoint started: not the benchmark's cycle"
  POINT=$(tail -n 1 "$RT/ckpt.out")
}

run_rsync() {
  local t0
  t0=$(now)
  rsync --inplace --no-whole-file --copy-devices --write-devices --fsync --stats "$dev" "$ddev" > "$RT/rsync.out" 2>&1 \
    || { cat "$RT/rsync.out" >&2; die "rsync failed"; }
  RESULT=$(calc "$(now) - $t0" 3)
  RSYNC_LITERAL=$(awk -F': ' '/Literal data/ { gsub(/[ ,bytes]/, "", $2); print $2 }' "$RT/rsync.out")
}

limit_best() { # limit_best [KEEP]: the faster of two runs of bench_gen limit delta (its own clock)
  local i
  for i in 1 2; do
    "$GEN" limit delta "$dev" "$limit_img" "$RT/extents" "$@" > "$RT/limit.$i.out" || return 1
  done
  awk '{ t = $8 } NR == 1 || t < best { best = t } END { print best }' "$RT/limit.1.out" "$RT/limit.2.out"
}

# RESULT = the machine's limit for the round's extents (reads + writes + fdatasync), KEEP_LIMIT = the
# same with the overwritten blocks kept durably first. Each the faster of two runs: one run's reads
# took three times another's in the same round now and then (0.062 s against 0.022 s), and every
# third round's limit came out 0.11-0.16 s against 0.05-0.09 s: the noise, not the machine's limit.
run_limit() {
  RESULT=$(limit_best) || die "bench_gen limit failed"
  KEEP_LIMIT=$(limit_best "$limit_img.keep") || die "bench_gen limit (keeping the old blocks) failed"
}

o=(); p=(); l=(); ratios=(); limits=(); kl=(); klimits=()
for r in $(seq 1 "$ROUNDS"); do
  cpu0=$(( $(proc_cpu_ticks "$AG_PID") )) acpu0=$(( $(proc_cpu_ticks "$AP_PID") ))
  sent0=$("$AG" status --state "$RT/d/agent" --json | grep -o '"bytes_sent":[0-9]*' | cut -d: -f2)
  raw0=$("$AG" status --state "$RT/d/agent" --json | grep -o '"raw_bytes":[0-9]*' | cut -d: -f2)
  base=$(ap_field d last_applied_cycle) # before the clock starts: the status call is the benchmark's, not ours
  w=$("$GEN" scatter "$dev" "$PCT" "$r" "$RT/extents") || die "writes failed"
  if [ "${BENCH_REPLICA_CACHE:-warm}" = cold ]; then
    python3 -c 'import os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)' "$replica" \
      || die "cannot drop the replica's pages"
  fi
  if [ $((r % 2)) -eq 1 ]; then
    run_limit; lim=$RESULT; run_ours "$(now)" "$base"; ours=$RESULT; run_rsync; rs=$RESULT
  else
    run_rsync; rs=$RESULT; run_ours "$(now)" "$base"; ours=$RESULT; run_limit; lim=$RESULT
  fi
  cpu1=$(( $(proc_cpu_ticks "$AG_PID") )) acpu1=$(( $(proc_cpu_ticks "$AP_PID") ))
  sent1=$("$AG" status --state "$RT/d/agent" --json | grep -o '"bytes_sent":[0-9]*' | cut -d: -f2)
  raw1=$("$AG" status --state "$RT/d/agent" --json | grep -o '"raw_bytes":[0-9]*' | cut -d: -f2)
  cmp "$replica" "$dev" || die "round $r: the replica differs from the source"
  cmp "$ddev" "$dev" || die "round $r: rsync's copy differs from the source"
  o+=("$ours"); p+=("$rs"); l+=("$lim"); ratios+=("$(calc "$rs / $ours" 1)"); limits+=("$(calc "$ours / $lim" 2)")
  kl+=("$KEEP_LIMIT"); klimits+=("$(calc "$ours / $KEEP_LIMIT" 2)")
  printf 'round %d: %s; ours %6.3f s (checkpoint returned %.3f s; read %5.1f MiB, sent %5.1f MiB, %s) | rsync %7.2f s (literal %5.1f MiB) | limit %6.3f s (keeping the old blocks %6.3f s) | rsync/ours %6.1f | ours/limit %5.2f (keeping %5.2f) | CPU ticks agent %dt appliance %dt | load %s\n' \
    "$r" "$w" "$ours" "$CKPT" "$(calc "($raw1 - $raw0) / 1048576" 1)" "$(calc "($sent1 - $sent0) / 1048576" 1)" "$POINT" \
    "$rs" "$(calc "${RSYNC_LITERAL:-0} / 1048576" 1)" "$lim" "$KEEP_LIMIT" "${ratios[-1]}" "${limits[-1]}" "${klimits[-1]}" \
    "$((cpu1 - cpu0))" "$((acpu1 - acpu0))" "$(load_avg)"
done
echo "      peak RSS: agent $(proc_kb "$AG_PID" VmHWM) KiB, appliance $(proc_kb "$AP_PID" VmHWM) KiB"
echo
echo "== delta summary (goals: rsync/ours >= 50 in every round, ours/limit <= 1.5) =="
spread() { printf '%s\n' "$@" | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%s..%s", lo, hi }'; }
printf 'delta %s%% of %s: ours %.3f s | rsync %.2f s | limit %.3f s (medians)\n' \
  "$PCT" "$SIZE" "$(median "${o[@]}")" "$(median "${p[@]}")" "$(median "${l[@]}")"
printf '  rsync/ours median %.1f, spread %s [rounds: %s]\n' "$(median "${ratios[@]}")" "$(spread "${ratios[@]}")" "${ratios[*]}"
printf '  ours/limit median %.2f, spread %s [rounds: %s]\n' "$(median "${limits[@]}")" "$(spread "${limits[@]}")" "${limits[*]}"
printf '  ours/limit keeping the old blocks (%.3f s) median %.2f, spread %s [rounds: %s]\n' "$(median "${kl[@]}")" \
  "$(median "${klimits[@]}")" "$(spread "${klimits[@]}")" "${klimits[*]}"
echo "summary: ours_s=$(median "${o[@]}") rsync_s=$(median "${p[@]}") limit_s=$(median "${l[@]}") rsync_over_ours=$(median "${ratios[@]}") rsync_over_ours_min=$(printf "%s\n" "${ratios[@]}" | sort -g | head -n 1) ours_over_limit=$(median "${limits[@]}") keep_limit_s=$(median "${kl[@]}") ours_over_keep_limit=$(median "${klimits[@]}")"
