#!/usr/bin/env bash
# cbt_bench.sh - the change-block tracker's benchmarks, in one run (root; not run by CTest):
#  1. fio 4 KiB randwrite, QD 32, O_DIRECT on a loop device backed by a file and one backed by tmpfs,
#     tracked vs untracked, interleaved (ABBA) over ROUNDS rounds: each round's IOPS and p99 latency
#     ratios, their median and spread (tracked runs also drain once a second, as an agent would);
#     then the same on two tmpfs devices written at the same time, one tracked (robust to other load
#     on the machine); then the CPU time each tracker program spends per write (bpf_stats), with
#     its size (xlated / jited bytes, instructions the verifier processed), for each variant;
#     1d. bytes drained per byte written, each variant (legacy marks whole bytes of the bitmap: 8
#     blocks): 4 KiB random writes, sparse (rate-limited) and dense, and unaligned 64 KiB writes;
#  2. flip + drain + commit of a 1 TiB sparse loop device: nothing dirty, 10,000 scattered blocks;
#  3. kernel memory of the tracker's maps, per TiB tracked.
# Usage: bench/cbt_bench.sh [BUILD_DIR]   env: ROUNDS (3), SECONDS_PER_RUN (10), SIZE (2G),
#        CPU_ONLY (set: section 1b alone), SECTIONS (default "1 1c 1b 1d 2": which to run),
#        CPU_ROUNDS (1: rounds of section 1b), BASELINE (a build directory section 1b measures too,
#        alternating with BUILD_DIR each round: before/after in one session),
#        MOBILITY_AGENT_CBT_VARIANT (the variant of sections 1 and 1c; 1b and 1d measure each),
#        CPU_VARIANTS ("bpf_loop bounded legacy": the variants section 1b measures)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
agent=$build/agent/mobility-agent
floor_tool=$build/bench/bench_bpf_floor
[ -x "$floor_tool" ] || floor_tool=$root/build/bench/bench_bpf_floor
rounds=${ROUNDS:-3}
runtime=${SECONDS_PER_RUN:-10}
size=${SIZE:-2G}
[ "$(id -u)" -eq 0 ] || { echo "cbt_bench: run as root" >&2; exit 1; }
command -v fio >/dev/null || { echo "cbt_bench: fio is missing" >&2; exit 1; }

work=$(mktemp -d /var/tmp/cbt-bench.XXXXXX)
shm=$(mktemp -d /dev/shm/cbt-bench.XXXXXX)
export MOBILITY_AGENT_BPF_PIN_DIR=/sys/fs/bpf/cbt-bench-$$
state=$work/state
loops=()
drainer=
stats_before=$(sysctl -n kernel.bpf_stats_enabled)
cleanup() {
  sysctl -qw kernel.bpf_stats_enabled="$stats_before" || true
  [ -n "$drainer" ] && { touch "$work/stop-draining"; wait "$drainer" 2>/dev/null; }
  for l in "${loops[@]}"; do "$agent" cbt stop "$l" --state "$state" >/dev/null 2>&1 || true; done
  for l in "${loops[@]}"; do losetup -d "$l" 2>/dev/null || true; done
  rm -rf "$work" "$shm" "$MOBILITY_AGENT_BPF_PIN_DIR"
}
trap cleanup EXIT
new_loop() { # new_loop FILE: sets LOOP
  LOOP=$(losetup --find --show "$1")
  loops+=("$LOOP")
}

echo "== cbt_bench on $(uname -r), $(nproc) CPUs, $(date -u +%FT%TZ)"
fallocate -l "$size" "$work/file.img"
fallocate -l "$size" "$shm/tmpfs.img"
new_loop "$work/file.img"; file_dev=$LOOP
new_loop "$shm/tmpfs.img"; tmpfs_dev=$LOOP

# run_fio DEV -> "IOPS P99_NS" (write side of terse v3: field 49 = IOPS, 59..78 = clat percentiles)
run_fio() {
  fio --name=cbt --filename="$1" --rw=randwrite --bs=4k --iodepth=32 --ioengine=io_uring --direct=1 \
      --runtime="$runtime" --time_based --norandommap --randrepeat=0 --output-format=terse --terse-version=3 |
    awk -F';' '{ p99 = 0; for (i = 59; i <= 78; i++) if ($i ~ /^99\.000000%=/) { split($i, a, "="); p99 = a[2] }
                 print $49, p99 * 1000 }'
}

start_drainer() { # start_drainer DEV: drains DEV once a second, as an agent would
  rm -f "$work/stop-draining"
  (while [ ! -e "$work/stop-draining" ]; do "$agent" cbt drain "$1" --state "$state" >/dev/null || true; sleep 1; done) &
  drainer=$!
}
stop_drainer() {
  touch "$work/stop-draining"; wait "$drainer" 2>/dev/null || true; drainer=
}

declare -A iops p99   # "KIND.MODE" -> space-separated values of each run
measure() { # measure KIND(file|tmpfs) DEV MODE(tracked|untracked)
  local kind=$1 dev=$2 mode=$3 out
  if [ "$mode" = tracked ]; then
    "$agent" cbt start "$dev" --state "$state" >/dev/null
    start_drainer "$dev"
  fi
  out=$(run_fio "$dev")
  if [ "$mode" = tracked ]; then
    stop_drainer
    "$agent" cbt stop "$dev" --state "$state"
  fi
  read -r i p <<<"$out"
  awk -v k="$kind" -v m="$mode" -v i="$i" -v p="$p" 'BEGIN { printf "   %-6s %-9s %10.0f IOPS   p99 %8.1f us\n", k, m, i, p / 1000 }'
  iops[$kind.$mode]="${iops[$kind.$mode]:-} $i"
  p99[$kind.$mode]="${p99[$kind.$mode]:-} $p"
}

cpu_cost() { # cpu_cost VARIANT: section 1b for one tracker program variant
  echo "== 1b. CPU cost of the tracker programs, $1 variant (kernel.bpf_stats_enabled; tmpfs device, ${runtime}s of fio, drained each second)"
  # Less dependent on the machine's other load than the IOPS ratio: CPU time the programs add per
  # write. Drained as an agent would, so that most writes set new bits (the costly case). "ns per
  # write" divides all runs (every bio of the machine runs the programs) by the tracked writes.
  # At debug level the agent logs the verifier's statistics of each program it loads.
  MOBILITY_AGENT_CBT_VARIANT=$1 RPL_LOG_LEVEL=debug "$agent" cbt start "$tmpfs_dev" --state "$state" >"$work/start.log" 2>&1
  start_drainer "$tmpfs_dev"
  local tracked_writes total_ns=0 total_runs=0 link prog ns count xlated jited verified floor=""
  # An empty program on the same tracepoint, measured alike: what bpf_stats adds to every run.
  if [ -x "$floor_tool" ]; then
    rm -f "$work/stop-floor"
    (while [ ! -e "$work/stop-floor" ]; do sleep 0.2; done) | "$floor_tool" >"$work/floor.out" &
    floor=$!
    sleep 0.5
  fi
  sysctl -qw kernel.bpf_stats_enabled=1
  run_fio "$tmpfs_dev" >/dev/null
  sysctl -qw kernel.bpf_stats_enabled="$stats_before"
  stop_drainer
  [ -n "$floor" ] && { touch "$work/stop-floor"; wait "$floor" || true; }
  tracked_writes=$("$agent" cbt status "$tmpfs_dev" --state "$state" --json | grep -o '"writes":[0-9]*' | cut -d: -f2)
  for link in cbt_link_bio_queue cbt_link_rq_complete cbt_link_bio_complete; do
    prog=$(bpftool link show pinned "$MOBILITY_AGENT_BPF_PIN_DIR/$link" | grep -o 'prog [0-9]*' | awk '{print $2}')
    # bpftool omits the counters of a program that never ran
    read -r ns count xlated jited name < <(bpftool prog show id "$prog" -j |
      jq -r '"\(.run_time_ns // 0) \(.run_cnt // 0) \(.bytes_xlated // 0) \(.bytes_jited // 0) \(.name)"')
    # the kernel keeps 15 characters of a program's name
    verified=$(grep -o "prog '${name}[a-z_]*':.*processed [0-9]* insns" "$work/start.log" | grep -o 'processed [0-9]*' |
               awk '{print $2}')
    awk -v l="$name" -v ns="$ns" -v c="$count" -v w="$tracked_writes" -v x="$xlated" -v j="$jited" -v v="${verified:-?}" \
      'BEGIN { printf "   %-16s %9d runs %6.0f ns per run %6.0f ns per write   xlated %5d B jited %5d B verified %7s insns\n",
               l, c, c ? ns / c : 0, w ? ns / w : 0, x, j, v }'
    total_ns=$((total_ns + ns)); total_runs=$((total_runs + count))
  done
  "$agent" cbt stop "$tmpfs_dev" --state "$state"
  cpu_total=$(awk -v t="$total_ns" -v w="$tracked_writes" 'BEGIN { printf "%.0f", w ? t / w : 0 }')
  cpu_net=
  echo "   per tracked 4 KiB write: $cpu_total ns of CPU (all runs of the three programs / $tracked_writes tracked writes; goal <= 100)"
  if [ -s "$work/floor.out" ]; then
    read -r fc fns <"$work/floor.out"
    cpu_net=$(awk -v fc="$fc" -v fns="$fns" -v t="$total_ns" -v r="$total_runs" -v w="$tracked_writes" \
      'BEGIN { f = fc ? fns / fc : 0; printf "%.0f %.0f", w ? (t - f * r) / w : 0, f }')
    echo "   bpf_stats floor: an empty program measures ${cpu_net#* } ns per run ($fc runs); without it the tracker costs ${cpu_net% *} ns per write"
    cpu_net=${cpu_net% *}
  fi
}
# spread "v1 v2 ..." -> "median M (min A, max B, N runs)"
spread() {
  awk -v a="$1" 'BEGIN { n = split(a, r, " ")
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (r[j] < r[i]) { t = r[i]; r[i] = r[j]; r[j] = t }
    m = n % 2 ? r[(n + 1) / 2] : (r[n / 2] + r[n / 2 + 1]) / 2
    printf "median %.0f (min %.0f, max %.0f, %d runs)", m, r[1], r[n], n }'
}
sum() { awk '{ s = 0; for (i = 1; i <= NF; i++) s += $i; print s }' <<<"$1"; }
# stats "a1 a2 .." "b1 b2 .." -> per-round ratios a/b, then median, min, max of them
stats() {
  awk -v a="$1" -v b="$2" 'BEGIN { n = split(a, x, " "); split(b, y, " ")
    for (i = 1; i <= n; i++) { r[i] = x[i] / y[i]; printf "%s%.3f", (i > 1 ? " " : ""), r[i] }
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (r[j] < r[i]) { t = r[i]; r[i] = r[j]; r[j] = t }
    m = n % 2 ? r[(n + 1) / 2] : (r[n / 2] + r[n / 2 + 1]) / 2
    printf " | median %.3f min %.3f max %.3f", m, r[1], r[n] }'
}

sections=" ${SECTIONS:-1 1c 1b 1d 2} "
[ -n "${CPU_ONLY:-}" ] && sections=" 1b "
want() { [[ $sections == *" $1 "* ]]; }

if want 1; then
echo "== 1. fio randwrite 4 KiB QD32 O_DIRECT, ${runtime}s per run, $rounds rounds (ABBA)"
for r in $(seq "$rounds"); do
  for kind in file tmpfs; do
    dev=$file_dev; [ $kind = tmpfs ] && dev=$tmpfs_dev
    if [ $((r % 2)) -eq 1 ]; then
      measure $kind "$dev" untracked; measure $kind "$dev" tracked
    else
      measure $kind "$dev" tracked; measure $kind "$dev" untracked
    fi
  done
done
for kind in file tmpfs; do
  echo "   $kind IOPS tracked/untracked per round: $(stats "${iops[$kind.tracked]}" "${iops[$kind.untracked]}") (goal >= 0.97)"
  echo "   $kind p99 latency tracked/untracked per round: $(stats "${p99[$kind.tracked]}" "${p99[$kind.untracked]}")"
  awk -v k="$kind" -v it="$(sum "${iops[$kind.tracked]}")" -v iu="$(sum "${iops[$kind.untracked]}")" \
      -v pt="$(sum "${p99[$kind.tracked]}")" -v pu="$(sum "${p99[$kind.untracked]}")" \
      'BEGIN { printf "   %-6s all rounds: IOPS tracked/untracked %.3f   p99 latency tracked/untracked %.3f\n", k, it / iu, pt / pu }'
done
fi

if want 1c; then
echo "== 1c. concurrent A/B: two tmpfs loop devices written at once, one tracked (swapped each round)"
# Both runs see the same background load at the same time, so their ratio is robust to it.
fallocate -l "$size" "$shm/b.img"
new_loop "$shm/b.img"; b_dev=$LOOP
ab_tracked="" ab_untracked=""
for r in $(seq "$rounds"); do
  tracked_dev=$tmpfs_dev untracked_dev=$b_dev
  [ $((r % 2)) -eq 0 ] && { tracked_dev=$b_dev; untracked_dev=$tmpfs_dev; }
  "$agent" cbt start "$tracked_dev" --state "$state" >/dev/null
  run_fio "$tracked_dev" >"$work/ab.tracked" &
  run_fio "$untracked_dev" >"$work/ab.untracked"
  wait
  "$agent" cbt stop "$tracked_dev" --state "$state"
  read -r it pt <"$work/ab.tracked"
  read -r iu pu <"$work/ab.untracked"
  awk -v it="$it" -v iu="$iu" -v pt="$pt" -v pu="$pu" \
    'BEGIN { printf "   round: tracked %8.0f IOPS p99 %7.1f us | untracked %8.0f IOPS p99 %7.1f us\n", it, pt / 1000, iu, pu / 1000 }'
  ab_tracked="$ab_tracked $it"; ab_untracked="$ab_untracked $iu"
done
echo "   concurrent A/B IOPS tracked/untracked per round: $(stats "$ab_tracked" "$ab_untracked")"
fi

if want 1b; then
  # With BASELINE (another build directory, e.g. of the code before a change), each round measures
  # both builds one after the other: a before/after from one session, with its spread.
  builds=("$build"); [ -n "${BASELINE:-}" ] && builds=("$BASELINE" "$build")
  cpu_variants=${CPU_VARIANTS:-bpf_loop bounded legacy}
  declare -A cpu_totals cpu_nets
  this_agent=$agent
  for r in $(seq "${CPU_ROUNDS:-1}"); do
    for b in "${builds[@]}"; do
      agent=$b/agent/mobility-agent
      [ ${#builds[@]} -gt 1 ] && echo "-- round $r, $b"
      for variant in $cpu_variants; do
        cpu_cost $variant
        cpu_totals[$b.$variant]="${cpu_totals[$b.$variant]:-} $cpu_total"
        cpu_nets[$b.$variant]="${cpu_nets[$b.$variant]:-} ${cpu_net:-0}"
      done
    done
  done
  agent=$this_agent
  if [ "${CPU_ROUNDS:-1}" -gt 1 ] || [ ${#builds[@]} -gt 1 ]; then
    echo "== 1b. summary: ns of CPU per tracked write"
    for b in "${builds[@]}"; do
      for variant in $cpu_variants; do
        echo "   $variant $b: $(spread "${cpu_totals[$b.$variant]}"); without bpf_stats' cost $(spread "${cpu_nets[$b.$variant]}")"
      done
    done
  fi
fi

if want 1d; then
echo "== 1d. bytes drained per byte written (tmpfs device; one drain after each fio run)"
# amplification VARIANT NAME FIO-ARGS...: one fio run between two drains; the drained bytes over the
# bytes the tracker counted written (writes x block size)
# A drain that says resync (exit 3: the kernel skipped a completion program, which it may do to a
# program re-entered on its CPU) printed the whole device: that run is measured again, up to 3 times.
amplification() {
  local variant=$1 name=$2 before after written drained rc try
  shift 2
  for try in 1 2 3; do
    MOBILITY_AGENT_CBT_VARIANT=$variant "$agent" cbt start "$tmpfs_dev" --state "$state" >/dev/null
    "$agent" cbt drain "$tmpfs_dev" --state "$state" >/dev/null || [ $? -eq 3 ]
    before=$("$agent" cbt status "$tmpfs_dev" --state "$state" --json | jq '.devices[0].counters.writes')
    fio --name=amp --filename="$tmpfs_dev" --direct=1 --ioengine=io_uring --iodepth=8 --randrepeat=0 \
        --norandommap "$@" --output-format=terse >/dev/null
    after=$("$agent" cbt status "$tmpfs_dev" --state "$state" --json | jq '.devices[0].counters.writes')
    rc=0
    "$agent" cbt drain "$tmpfs_dev" --state "$state" > "$work/amp.out" 2>/dev/null || rc=$?
    "$agent" cbt stop "$tmpfs_dev" --state "$state"
    [ "$rc" -eq 0 ] && break
    [ "$rc" -eq 3 ] || { echo "cbt_bench: cbt drain failed (exit $rc)" >&2; exit 1; }
    echo "   $variant $name: a resync was required (the kernel skipped a completion program): measured again"
  done
  if [ "$rc" -ne 0 ]; then
    echo "   $variant $name: a resync was required in each of 3 runs: not measured"
    return 0
  fi
  drained=$(awk '{ s += $2 } END { print s + 0 }' "$work/amp.out")
  written=$(( (after - before) * AMP_BLOCK ))
  awk -v v="$variant" -v n="$name" -v w="$written" -v d="$drained" \
    'BEGIN { printf "   %-8s %-34s written %8.1f MiB drained %8.1f MiB  drained/written %.2f\n", v, n, w / 1048576, d / 1048576, w ? d / w : 0 }'
  amp[$variant.$name]=$(awk -v w="$written" -v d="$drained" 'BEGIN { printf "%.4f", w ? d / w : 0 }')
}
declare -A amp
for variant in bpf_loop legacy; do
  AMP_BLOCK=4096 amplification $variant "4 KiB random, 2,000 IOPS for 5 s" --rw=randwrite --bs=4k --rate_iops=2000 --runtime=5 --time_based
  AMP_BLOCK=4096 amplification $variant "4 KiB random, 500,000 writes" --rw=randwrite --bs=4k --number_ios=500000
  AMP_BLOCK=65536 amplification $variant "64 KiB random at 4 KiB offsets, 2,000" --rw=randwrite --bs=64k --blockalign=4k --number_ios=2000
done
for name in "4 KiB random, 2,000 IOPS for 5 s" "4 KiB random, 500,000 writes" "64 KiB random at 4 KiB offsets, 2,000"; do
  if [ -z "${amp[legacy.$name]:-}" ] || [ -z "${amp[bpf_loop.$name]:-}" ]; then
    printf '   %-38s legacy/bpf_loop drained bytes: not measured (a resync in every run)\n' "$name"
    continue
  fi
  awk -v n="$name" -v l="${amp[legacy.$name]}" -v b="${amp[bpf_loop.$name]}" \
    'BEGIN { printf "   %-38s legacy/bpf_loop drained bytes %.2f\n", n, b ? l / b : 0 }'
done
fi

want 2 || exit 0
echo "== 2. cycle (flip + drain + commit) on a 1 TiB sparse loop device"
truncate -s 1T "$work/big.img"
new_loop "$work/big.img"; big=$LOOP
"$build/bench/bench_cbt_drain" "$big" "$state" 10000 10 &
bench=$!
# 3. memory, read while bench_cbt_drain tracks the 1 TiB device
sleep 1
mem_bitmap=$(bpftool map show 2>/dev/null | awk '/name cbt_bitmap /{getline; for (i = 1; i <= NF; i++) if ($i == "memlock") { sub("B", "", $(i+1)); print $(i+1) }}' | tail -1)
mem_fixed=0
for m in cbt_devices cbt_devmap cbt_bitmaps cbt_inflight cbt_counters; do
  b=$(bpftool map show pinned "$MOBILITY_AGENT_BPF_PIN_DIR/$m" 2>/dev/null | grep -o 'memlock [0-9]*' | awk '{print $2}')
  mem_fixed=$((mem_fixed + ${b:-0}))
done
wait $bench
echo "== 3. kernel memory of the maps (bpftool memlock)"
awk -v b="${mem_bitmap:-0}" -v f="$mem_fixed" 'BEGIN {
  printf "   per tracked TiB (bitmap, 2 generations, 3 levels, 4 KiB granularity): %d bytes = %.1f MiB\n", b, b / 1048576
  printf "   fixed, once per machine (slots, device map, in-flight table, counters): %d bytes = %.1f MiB\n", f, f / 1048576 }'
