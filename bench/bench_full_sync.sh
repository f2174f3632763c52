#!/usr/bin/env bash
# bench_full_sync.sh - initial (full) sync of a 2 GiB loop disk, agent -> appliance -> file replica
# over TLS on loopback, against the peer pipeline in the same run:
#   dd iflag=direct bs=1M | zstd -1 -T2 | socat -> TCP 127.0.0.1 -> socat | zstd -d | dd oflag=direct conv=fsync
# Ours is timed from `protect` until the appliance has applied cycle 1 (journal fsynced before the
# ACK, replica fdatasynced: the time its event carries); the peer until its receiving dd has fsynced. Both copies are compared
# with the source (cmp). Rounds interleave ours and the peer (order alternating); medians and the
# ratio of each round are printed. The machine's own limit is measured in every round too
# (`bench_gen limit sync`): writing text over the source's data extents (its holes skipped) O_DIRECT
# into a sparse file on the replica's file system, then fdatasync; speed ours/limit (limit time /
# ours) does not move with the peer's luck (goal >= 0.9).
#
#   bash bench/bench_full_sync.sh [half|full|both] [ROUNDS] [SIZE]     (root; defaults: both 3 2G)
#
# half: every other 1 MiB block is text, the rest zeros (a half-empty disk); full: all text.
# The source file is read once before the rounds: both sides read it through the loop device from
# the page cache (loop devices are buffered), so the comparison is of the pipelines, not of vda.
. "$(dirname "$0")/lib_bench.sh"

MODE=${1:-both}
ROUNDS=${2:-3}
SIZE=${3:-2G}
bench_setup
command -v socat >/dev/null && command -v zstd >/dev/null || die "needs socat and zstd (scripts/setup.sh)"

run_ours() { # DEV ROUND -> RESULT seconds
  local dev=$1 name=ours$2 t0 t1
  bench_pair_start "$name" 3600
  t0=$(now)
  bench_protect "$name" "$dev"
  wait_applied "$name" 1 900
  t1=$T_APPLIED
  OURS_COMMIT=$(calc "$T_COMMITTED - $t0" 2)
  cmp "$(replica_of "$name")" "$dev" || die "ours: the replica differs from the source"
  OURS_SENT=$("$AG" status --state "$RT/$name/agent" --json | grep -o '"bytes_sent":[0-9]*' | cut -d: -f2)
  OURS_CPU="agent $(( $(proc_cpu_ticks "$AG_PID") ))t appliance $(( $(proc_cpu_ticks "$AP_PID") ))t"
  OURS_RSS="agent $(proc_kb "$AG_PID" VmHWM) KiB, appliance $(proc_kb "$AP_PID" VmHWM) KiB"
  bench_pair_stop "$name"
  if [ -n "${BENCH_KEEP_LOGS:-}" ]; then mkdir -p "$BENCH_KEEP_LOGS/$name" && cp "$RT/$name"/*.log "$BENCH_KEEP_LOGS/$name/"; fi
  rm -rf "${RT:?}/$name"
  RESULT=$(calc "$t1 - $t0" 3)
}

run_peer() { # DEV -> RESULT seconds
  local dev=$1 port out=$RT/peer.img t0 t1 rpid c0
  port=$(free_port)
  children_cpu; c0=$CHILDREN_CPU
  rm -f "$out"
  ( socat -u "TCP-LISTEN:$port,reuseaddr,bind=127.0.0.1" STDOUT | zstd -d -q \
      | dd of="$out" bs=1M iflag=fullblock oflag=direct conv=fsync status=none ) &
  rpid=$!
  BENCH_PIDS+=("$rpid")
  for _ in $(seq 1 100); do ss -ltn "sport = :$port" | grep -q LISTEN && break; sleep 0.02; done
  t0=$(now)
  dd if="$dev" iflag=direct bs=1M status=none | zstd -1 -T2 -q | socat -u STDIN "TCP:127.0.0.1:$port" \
    || die "peer sender failed"
  wait "$rpid" || die "peer receiver failed"
  t1=$(now)
  forget_pid "$rpid"
  children_cpu; PEER_CPU=$(calc "$CHILDREN_CPU - $c0" 2)
  cmp "$out" "$dev" || die "peer: the copy differs from the source"
  rm -f "$out"
  RESULT=$(calc "$t1 - $t0" 3)
}

run_limit() { # EXTENTS -> RESULT seconds (bench_gen's own clock)
  rm -f "$RT/limit.img"
  truncate -s "$SIZE" "$RT/limit.img"
  "$GEN" limit sync - "$RT/limit.img" "$1" > "$RT/limit.out" || die "bench_gen limit failed"
  RESULT=$(awk '{ print $8 }' "$RT/limit.out")
  rm -f "$RT/limit.img"
}

bench_disk() { # KIND ZERO_PERCENT
  local kind=$1 zp=$2 img=$RT/src-$1.img dev r ours peer lim o=() p=() l=() ratios=() limits=() bytes
  say "$kind disk: generating $SIZE (zero blocks: $zp %)"
  "$GEN" text "$img" "$SIZE" 1 "$zp" || die "bench_gen failed"
  bench_loop dev "$img"
  bytes=$(blockdev --getsize64 "$dev")
  "$GEN" extents "$img" > "$RT/extents-$kind" || die "bench_gen extents failed"
  cat "$img" > /dev/null # warm: both sides read from the page cache
  for r in $(seq 1 "$ROUNDS"); do
    if [ $((r % 2)) -eq 1 ]; then run_ours "$dev" "$r"; ours=$RESULT; run_peer "$dev"; peer=$RESULT; run_limit "$RT/extents-$kind"; lim=$RESULT
    else run_limit "$RT/extents-$kind"; lim=$RESULT; run_peer "$dev"; peer=$RESULT; run_ours "$dev" "$r"; ours=$RESULT; fi
    o+=("$ours"); p+=("$peer"); l+=("$lim"); ratios+=("$(calc "$peer / $ours")"); limits+=("$(calc "$lim / $ours")")
    printf '%-5s round %d: ours %7.2f s (%6.0f MB/s)   peer %7.2f s (%6.0f MB/s)   limit %6.2f s   ours/peer %5.2f   ours/limit %5.2f   load %s\n' \
      "$kind" "$r" "$ours" "$(calc "$bytes / $ours / 1e6" 0)" "$peer" "$(calc "$bytes / $peer / 1e6" 0)" \
      "$lim" "${ratios[-1]}" "${limits[-1]}" "$(load_avg)"
    echo "      ours: committed (journal fsynced, ACKed) at $OURS_COMMIT s, applied at $ours s; sent $(calc "$OURS_SENT / 1e6" 0) MB; CPU ticks $OURS_CPU (1 tick = 10 ms), peak RSS $OURS_RSS"
    echo "      peer: CPU of dd, zstd, socat, zstd -d, dd together: $PEER_CPU s"
  done
  local mo mp
  mo=$(median "${o[@]}"); mp=$(median "${p[@]}")
  SUMMARY+=("$(printf '%-5s %6s  ours %7.2f s %6.0f MB/s | peer %7.2f s %6.0f MB/s | limit %6.2f s | ours/peer median %5.2f [rounds: %s] | ours/limit median %5.2f [rounds: %s]' \
    "$kind" "$SIZE" "$mo" "$(calc "$bytes / $mo / 1e6" 0)" "$mp" "$(calc "$bytes / $mp / 1e6" 0)" "$(median "${l[@]}")" \
    "$(median "${ratios[@]}")" "${ratios[*]}" "$(median "${limits[@]}")" "${limits[*]}")")
  bench_unloop "$dev"
  rm -f "$img"
}

SUMMARY=()
echo "full sync: $SIZE loop disk, $ROUNDS interleaved rounds, $(nproc) CPUs, load at start $(load_avg)"
case "$MODE" in
  half) bench_disk half 50 ;;
  full) bench_disk full 0 ;;
  both) bench_disk half 50; bench_disk full 0 ;;
  *) die "mode: half, full or both" ;;
esac
echo
echo "== full sync summary (goals: ours/peer >= 1.0, >= 2 on the half-empty disk; ours/limit >= 0.9) =="
printf '%s\n' "${SUMMARY[@]}"
