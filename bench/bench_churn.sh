#!/usr/bin/env bash
# bench_churn.sh - sustained random 64 KiB writes (fio, O_DIRECT, rate-limited, 50 % compressible
# buffers) at rising rates on one protected loop disk, with the appliance's RPO target at 5 s:
# per rate, the RPO lag (appliance status rpo_lag_seconds: time since the last commit, sampled
# every 0.5 s), the longest gap between two commits, cycles, bytes read by the agent, CPU % and
# memory (VmRSS now / VmHWM peak) of agent and appliance. A rate "holds" when the lag and the
# commit gap stay <= 10 s and fio reached >= 90 % of the rate. After each rate the writes stop and
# the pair drains (a cycle started after the writes is committed) before the next one.
# Finally one more run at the highest rate tried is profiled with perf (not counted).
#
# Completions the kernel skipped (docs/operations.md, "Missed completions") are printed per rate from
# the agent's status (sent_check): how many were checked against the disk, the bytes read back and
# found differing, and how many could not be checked (all that was written lately sent again).
# SETTLE=S waits S seconds, quiet, after the initial sync: the record of what was sent can check
# once it has covered 120 s since the last whole-disk read.
#
#   bash bench/bench_churn.sh [RATES_MB_S] [SECONDS] [SIZE]
#        (root; defaults: "10 25 50 100 150 200" 25 4G; PERF=0 skips the profile; SETTLE=0)
. "$(dirname "$0")/lib_bench.sh"

RATES=${1:-10 25 50 100 150 200}
DUR=${2:-25}
SIZE=${3:-4G}
RPO=5
LIMIT=10
bench_setup
command -v fio >/dev/null || die "needs fio (scripts/setup.sh)"
TCK=$(getconf CLK_TCK)

echo "churn: $SIZE loop disk, random 64 KiB O_DIRECT writes (fio, 50 % compressible), $DUR s per rate, RPO target ${RPO} s, $(nproc) CPUs, load at start $(load_avg)"
img=$RT/churn.img
truncate -s "$SIZE" "$img"
bench_loop dev "$img"
bench_pair_start c "$RPO"
bench_protect c "$dev"
wait_applied c 1 900
[ "${SETTLE:-0}" -gt 0 ] && { say "settling ${SETTLE} s (SETTLE)"; sleep "$SETTLE"; }

ap_json() { "$AP" status --state "$RT/c/app" --json 2>/dev/null; }
jfield() { grep -o "\"$2\":[0-9]*" <<< "$1" | head -n 1 | cut -d: -f2; }
agent_raw() { "$AG" status --state "$RT/c/agent" --json 2>/dev/null | grep -o '"raw_bytes":[0-9]*' | cut -d: -f2; }
# sent_check: "checks refused checked_bytes differing_bytes check_ms" of the agent's disk
sent_check() {
  "$AG" status --state "$RT/c/agent" --json 2>/dev/null | python3 -c 'import json,sys
s = json.load(sys.stdin)["disks"][0].get("sent_check") or {}
print(*(s.get(k, 0) for k in ("checks", "refused", "checked_bytes", "differing_bytes", "check_ms")))' 2>/dev/null ||
    echo 0 0 0 0 0
}

# run_level RATE PROFILE: one fio run at RATE MB/s with sampling; sets HOLD and prints a row
run_level() {
  local rate=$1 profile=${2:-0} fpid t0 tend js c lastc lastt maxlag=0 maxgap=0 lag gap t n0 n1 \
        ag0 ap0 ag1 ap1 raw0 raw1 agrss=0 aprss=0 v backlog=0 bw ppids=()
  js=$(ap_json); n0=$(jfield "$js" last_committed_cycle); lastc=$n0; lastt=$(now)
  raw0=$(agent_raw); ag0=$(proc_cpu_ticks "$AG_PID"); ap0=$(proc_cpu_ticks "$AP_PID")
  local sc0 sc1
  read -ra sc0 <<< "$(sent_check)"
  fio --name=churn --filename="$dev" --rw=randwrite --bs=64k --direct=1 --ioengine=libaio --iodepth=8 \
      --rate="$((rate * 1000000))" --time_based --runtime="$DUR" --buffer_compress_percentage=50 \
      --refill_buffers --randrepeat=0 --output-format=json --output="$RT/fio.json" >/dev/null 2>&1 &
  fpid=$!
  BENCH_PIDS+=("$fpid")
  if [ "$profile" = 1 ]; then
    perf record -F 299 -g -o "$RT/agent.perf" -p "$AG_PID" >/dev/null 2>&1 &
    ppids+=($!)
    perf record -F 299 -g -o "$RT/appliance.perf" -p "$AP_PID" >/dev/null 2>&1 &
    ppids+=($!)
    BENCH_PIDS+=("${ppids[@]}")
  fi
  t0=$(now)
  while kill -0 "$fpid" 2>/dev/null; do
    sleep 0.5
    js=$(ap_json); t=$(now)
    c=$(jfield "$js" last_committed_cycle); lag=$(jfield "$js" rpo_lag_seconds)
    v=$(jfield "$js" backlog_bytes); [ "${v:-0}" -gt "$backlog" ] && backlog=$v
    [ "${lag:-0}" -gt "$maxlag" ] && maxlag=$lag
    if [ "${c:-0}" -ne "$lastc" ]; then lastc=$c; lastt=$t; fi
    gap=$(calc "$t - $lastt" 1); awk "BEGIN { exit !($gap > $maxgap) }" && maxgap=$gap
    v=$(proc_kb "$AG_PID" VmRSS); [ "${v:-0}" -gt "$agrss" ] && agrss=$v
    v=$(proc_kb "$AP_PID" VmRSS); [ "${v:-0}" -gt "$aprss" ] && aprss=$v
  done
  wait "$fpid"; forget_pid "$fpid"
  tend=$(now)
  ag1=$(proc_cpu_ticks "$AG_PID"); ap1=$(proc_cpu_ticks "$AP_PID")
  if [ "$profile" = 1 ]; then kill -INT "${ppids[@]}" 2>/dev/null; wait "${ppids[@]}" 2>/dev/null; fi
  n1=$(jfield "$(ap_json)" last_committed_cycle)
  bw=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["jobs"][0]["write"]["bw_bytes"])' "$RT/fio.json" 2>/dev/null || echo 0)
  # Drain: a cycle that starts after the writes stopped is committed (the one in progress may not be).
  local want=$((lastc + 2)) dstart
  dstart=$(now)
  while [ "$(jfield "$(ap_json)" last_committed_cycle)" -lt "$want" ]; do
    sleep 0.25
    [ "$(calc "$(now) - $dstart" 0)" -gt 300 ] && break
  done
  local drain cyc el
  drain=$(calc "$(now) - $dstart" 1)
  raw1=$(agent_raw)
  el=$(calc "$tend - $t0" 3)
  cyc=$((n1 - n0))
  HOLD=no
  if [ "$maxlag" -le "$LIMIT" ] && awk "BEGIN { exit !($maxgap <= $LIMIT && $bw >= 0.9 * $rate * 1e6) }"; then HOLD=yes; fi
  [ "$profile" = 1 ] && HOLD="(profiled)"
  printf '%6d %8.1f %6d %7.1f %8.1f %9.0f %8.0f %7.1f %7.1f %9s %11s %9s %11s %8.0f %7s\n' \
    "$rate" "$(calc "$bw / 1e6" 1)" "$maxlag" "$maxgap" "$drain" "$cyc" "$(calc "($raw1 - $raw0) / 1e6" 0)" \
    "$(calc "100 * ($ag1 - $ag0) / $TCK / $el" 1)" "$(calc "100 * ($ap1 - $ap0) / $TCK / $el" 1)" \
    "$((agrss / 1024))M" "$(( $(proc_kb "$AG_PID" VmHWM) / 1024 ))M" "$((aprss / 1024))M" \
    "$(( $(proc_kb "$AP_PID" VmHWM) / 1024 ))M" "$(calc "$backlog / 1e6" 0)" "$HOLD"
  read -ra sc1 <<< "$(sent_check)"
  printf '       missed completions: %d checked against the disk (%s MB read back in %d ms, %s MB differed and went again), %d %s\n' \
    "$((sc1[0] - sc0[0]))" "$(calc "(${sc1[2]} - ${sc0[2]}) / 1e6" 1)" "$((sc1[4] - sc0[4]))" \
    "$(calc "(${sc1[3]} - ${sc0[3]}) / 1e6" 1)" \
    "$((sc1[1] - sc0[1]))" "not checked (all written lately went again)"
}

echo
printf '%6s %8s %6s %7s %8s %9s %8s %7s %7s %9s %11s %9s %11s %8s %7s\n' \
  "MB/s" "fio MB/s" "lag s" "gap s" "drain s" "cycles" "read MB" "agent%" "appl%" "agentRSS" "agentHWM" "applRSS" "applHWM" "backlog" "holds"
best=0
last=0
held=()
failed=()
for r in $RATES; do
  run_level "$r" 0
  last=$r
  if [ "$HOLD" = yes ]; then
    held+=("$r")
    [ ${#failed[@]} -eq 0 ] && best=$r
  else
    failed+=("$r")
  fi
  echo "      (load $(load_avg))"
done
echo
echo "== churn summary (goal: 100 MB/s per disk with RPO lag <= ${LIMIT} s) =="
echo "highest rate held, every lower rate held too: $best MB/s; held: ${held[*]:-none}; not held: ${failed[*]:-none}"
echo "(lag = seconds since the last commit, sampled every 0.5 s; gap = longest time between commits)"

if [ "${PERF:-1}" = 1 ] && command -v perf >/dev/null; then
  echo
  echo "== where the time goes: perf at $last MB/s (profile run, not counted) =="
  run_level "$last" 1
  for who in agent appliance; do
    echo "-- $who: by library (self)"
    perf report -i "$RT/$who.perf" --no-children --sort dso --stdio 2>/dev/null | grep -E '^ +[0-9.]+%' | head -8
    echo "-- $who: top symbols (self; libzstd/libxxhash have no symbols here)"
    perf report -i "$RT/$who.perf" --no-children --sort dso,sym --stdio 2>/dev/null | grep -E '^ +[0-9.]+%' | head -12
  done
fi
