#!/usr/bin/env bash
# bench_freeze.sh - how long scheduled recovery points freeze a busy filesystem: ext4 on a protected
# loop disk under fio random writes (20 MiB/s, fsync every 16 writes), a crash point every 60 s for
# 10 minutes, in three phases with a fresh pair each: (a) schedule on with pre-copy (the catch-up
# cycle first, frozen only around the flip), (b) schedule on with RPL_BENCH_PRECOPY=off in both
# daemons (the peer: everything dirty read with the filesystem frozen), (c) schedule off (the
# RPO-lag and CPU baseline). Per phase: points made, freeze p50/p99/max (the point events'
# freeze_ms), RPO lag (status rpo_lag_seconds sampled every second), the agent's CPU seconds per
# minute; then the goal (pre-copy p99 <= 100 ms, max <= 250 ms) and the ratios no-pre-copy/pre-copy
# freeze p99 and agent CPU schedule on/off. Last line: key=value summary.
#
# fio, not tests/tools/fsync_writer.py: fio's random 64 KiB writes all over a 1 GiB file scatter
# the dirty blocks (the tracker's hard case) at an exact rate, and fio reports the rate it reached;
# the fsync writer rewrites whole files in order and is made for the content checks of the tests.
# The agent runs with --freeze-limit-ms 60000 in every phase: the peer's long freezes are measured,
# not cut off at the default 2 s limit (which a pre-copy freeze is far below either way).
#
#   bash bench/bench_freeze.sh [--minutes N] [--every DURATION] [--rate MIB_S] [--bs SIZE]
#                              [--size DISK_SIZE] [--rpo SECONDS]
#        (root; defaults: 10 minutes per phase, a point every 60s, 20 MiB/s, 64k, 4G, RPO 30 s:
#         the appliance's default)
# shellcheck source=bench/lib_bench.sh
. "$(dirname "$0")/lib_bench.sh"

MINUTES=10 EVERY=60s RATE=20 BS=64k SIZE=4G RPO=30
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) MINUTES=$2 ;;
    --every) EVERY=$2 ;;
    --rate) RATE=$2 ;;
    --bs) BS=$2 ;;
    --size) SIZE=$2 ;;
    --rpo) RPO=$2 ;;
    *) die "unknown option $1 (--minutes N --every DURATION --rate MIB_S --bs SIZE --size SIZE --rpo S)" ;;
  esac
  shift 2 || die "$1 needs a value"
done
[[ "$MINUTES" =~ ^[1-9][0-9]*$ ]] || die "--minutes takes a whole number of minutes"
[[ "$EVERY" =~ ^[0-9]+[smh]$ ]] || die "--every takes a duration such as 30s, 1m or 1h"
FREEZE_LIMIT_MS=60000
FILE_MIB=1024
bench_setup
command -v fio >/dev/null || die "needs fio (scripts/setup.sh)"
command -v mkfs.ext4 >/dev/null || die "needs e2fsprogs"
TCK=$(getconf CLK_TCK)
DUR=$((MINUTES * 60))
MNT=$RT/mnt

# Never leave the filesystem frozen (a daemon killed while it froze it), then the library's cleanup.
freeze_cleanup() {
  mountpoint -q "$MNT" 2>/dev/null && fsfreeze -u "$MNT" 2>/dev/null
  bench_cleanup
}
trap freeze_cleanup EXIT

echo "freeze: ext4 on a $SIZE loop disk, fio random $BS writes at $RATE MiB/s (buffered, fsync every 16) to a" \
  "$FILE_MIB MiB file; a crash point every $EVERY for $MINUTES min per phase; RPO target $RPO s;" \
  "agent --freeze-limit-ms $FREEZE_LIMIT_MS; $(nproc) CPUs, load at start $(load_avg)"
truncate -s "$SIZE" "$RT/disk.img"
dev=
bench_loop dev "$RT/disk.img"
mkfs.ext4 -q "$dev" || die "mkfs.ext4 failed"
mkdir -p "$MNT"
mount "$dev" "$MNT" || die "mount failed"
BENCH_MOUNTS+=("$MNT")
# The file written in full before any phase: the phases rewrite data, they do not allocate it.
fio --name=layout --filename="$MNT/fio.dat" --size="${FILE_MIB}m" --rw=write --bs=1m --end_fsync=1 \
  --buffer_compress_percentage=50 --refill_buffers >/dev/null 2>&1 || die "fio could not lay out its file"

# Phase NAME LABEL POINTS [ENV...]: a fresh pair protecting the disk, fio for DUR seconds with
# sampling, then the pair stopped. Sets, for NAME, the row's fields in PH_<field>_NAME.
phase() {
  local name=$1 label=$2 points=$3 kv fpid t0 t1 lag lags=() ag0 ag1 ap0 ap1
  shift 3
  say "phase $name: $label"
  for kv in "$@"; do export "${kv?}"; done # both daemons inherit it
  BENCH_AP_ARGS="--points $points" BENCH_AG_ARGS="--freeze-limit-ms $FREEZE_LIMIT_MS" bench_pair_start "$name" "$RPO"
  for kv in "$@"; do unset "${kv%%=*}"; done
  bench_protect "$name" "$dev"
  wait_applied "$name" 1 900
  ag0=$(proc_cpu_ticks "$AG_PID"); ap0=$(proc_cpu_ticks "$AP_PID")
  t0=$(now)
  fio --name=freeze --filename="$MNT/fio.dat" --size="${FILE_MIB}m" --rw=randwrite --bs="$BS" --fsync=16 \
      --rate="${RATE}m" --time_based --runtime="$DUR" --buffer_compress_percentage=50 --refill_buffers \
      --randrepeat=0 --output-format=json --output="$RT/$name/fio.json" >/dev/null 2>&1 &
  fpid=$!
  BENCH_PIDS+=("$fpid")
  while kill -0 "$fpid" 2>/dev/null; do
    sleep 1
    lag=$(ap_field "$name" rpo_lag_seconds)
    [ -n "$lag" ] && lags+=("$lag")
  done
  wait "$fpid" || die "fio failed in phase $name"
  forget_pid "$fpid"
  t1=$(now)
  ag1=$(proc_cpu_ticks "$AG_PID"); ap1=$(proc_cpu_ticks "$AP_PID")
  "$AP" events --state "$RT/$name/app" > "$RT/$name/events.jsonl" || die "events failed"
  "$AP" status --state "$RT/$name/app" --json > "$RT/$name/status.json" || die "status failed"
  "$AG" status --state "$RT/$name/agent" --json > "$RT/$name/agent.json" || die "agent status failed"
  printf '%s\n' "${lags[@]}" > "$RT/$name/lags"
  bench_pair_stop "$name"
  fsfreeze -u "$MNT" 2>/dev/null # (never needed when the agent stopped as it should)
  # one row of fields for the report, from the machine interfaces only
  python3 - "$RT/$name" "$t0" "$t1" "$(calc "($ag1 - $ag0) / $TCK" 3)" "$(calc "($ap1 - $ap0) / $TCK" 3)" "$dev" \
    > "$RT/$name/row" <<'PY' || die "phase $name: cannot read its figures"
import json, math, sys
d, t0, t1, agcpu, apcpu, dev = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
def pct(v, p):  # nearest rank
    v = sorted(v)
    return v[max(0, math.ceil(p / 100 * len(v)) - 1)] if v else "-"
ev = [json.loads(l) for l in open(d + "/events.jsonl") if l.strip()]
pts = [e for e in ev if e["type"] == "point" and e["trigger"] == "schedule" and t0 * 1000 <= e["unix_ms"] <= t1 * 1000]
fz = [e["freeze_ms"] for e in pts]
cons = {}
for e in pts:
    cons[e["consistency"]] = cons.get(e["consistency"], 0) + 1
lags = [int(x) for x in open(d + "/lags") if x.strip()]
st = json.load(open(d + "/status.json"))["disks"][0]["points"]
ag = [x for x in json.load(open(d + "/agent.json"))["disks"] if x["device"] == dev][0]["freeze_ms"] or {"max": "-"}
bw = json.load(open(d + "/fio.json"))["jobs"][0]["write"]["bw_bytes"] / 2**20
mins = (t1 - t0) / 60
print(len(pts), pct(fz, 50), pct(fz, 99), max(fz) if fz else "-", pct(lags, 50), max(lags) if lags else "-",
      "%.2f" % (agcpu / mins), "%.2f" % (apcpu / mins), st["crash"]["missed"],
      ",".join("%s:%d" % kv for kv in sorted(cons.items())) or "-", "%.1f" % bw, ag["max"],
      json.dumps(st["last_failure"] or "-").replace(" ", "_"))
PY
  local f
  # shellcheck disable=SC2034 # each is copied into PH_<field>_NAME through ${!f}
  read -r PTS P50 P99 MAX LAG50 LAGMAX AGCPU APCPU MISSED CONS BW AGMAX FAIL < "$RT/$name/row"
  for f in PTS P50 P99 MAX LAG50 LAGMAX AGCPU APCPU MISSED CONS BW AGMAX FAIL; do
    printf -v "PH_${f}_$name" '%s' "${!f}"
  done
  say "phase $name done: ${PTS} points, freeze p99 ${P99} ms, load $(load_avg)"
}

phase a "schedule on, pre-copy on" "crash=$EVERY,app=off"
phase b "schedule on, pre-copy off (RPL_BENCH_PRECOPY=off in both daemons)" "crash=$EVERY,app=off" RPL_BENCH_PRECOPY=off
phase c "schedule off (baseline)" "crash=off,app=off"
umount "$MNT" && BENCH_MOUNTS=()

get() { local v="PH_$1_$2"; echo "${!v}"; }
echo
printf '%-28s %6s %8s %8s %8s %7s %7s %11s %11s %6s %8s  %s\n' phase points "p50 ms" "p99 ms" "max ms" "lag p50" "lag max" \
  "agent s/min" "appl s/min" missed "fio MiB/s" consistency
for p in a b c; do
  case $p in a) l="(a) schedule on, pre-copy" ;; b) l="(b) schedule on, no pre-copy" ;; c) l="(c) schedule off" ;; esac
  printf '%-28s %6s %8s %8s %8s %7s %7s %11s %11s %6s %8s  %s\n' "$l" "$(get PTS $p)" "$(get P50 $p)" "$(get P99 $p)" \
    "$(get MAX $p)" "$(get LAG50 $p)" "$(get LAGMAX $p)" "$(get AGCPU $p)" "$(get APCPU $p)" "$(get MISSED $p)" \
    "$(get BW $p)" "$(get CONS $p)"
done
echo "(freeze: the point events' freeze_ms, first FIFREEZE to thaw, p99 by nearest rank; lag: status"
echo " rpo_lag_seconds sampled every second; CPU: utime+stime over the writing time; missed/last failure:"
echo " status points.crash: a: $(get FAIL a), b: $(get FAIL b); the agents' own max: a $(get AGMAX a) ms, b $(get AGMAX b) ms)"

P99A=$(get P99 a) MAXA=$(get MAX a) P99B=$(get P99 b)
{ [ "$(get PTS a)" -gt 0 ] && [ "$(get PTS b)" -gt 0 ]; } || die "a phase with the schedule on made no point: nothing to compare"
goal_p99=$([ "$P99A" -le 100 ] && echo met || echo "not met")
goal_max=$([ "$MAXA" -le 250 ] && echo met || echo "not met")
ratio_fz=$(calc "$P99B / ($P99A > 0 ? $P99A : 1)" 1)
ratio_cpu=$(calc "$(get AGCPU a) / ($(get AGCPU c) > 0 ? $(get AGCPU c) : 0.01)" 2)
ratio_cpu_b=$(calc "$(get AGCPU b) / ($(get AGCPU c) > 0 ? $(get AGCPU c) : 0.01)" 2)
echo
echo "== freeze summary (goal with pre-copy: p99 <= 100 ms, max <= 250 ms) =="
echo "pre-copy freeze p99 ${P99A} ms: $goal_p99; max ${MAXA} ms: $goal_max"
echo "freeze p99 without pre-copy / with: ${P99B} / ${P99A} ms = ${ratio_fz}x"
echo "agent CPU, schedule on / off: $(get AGCPU a) / $(get AGCPU c) s per minute = ${ratio_cpu}x (without pre-copy: ${ratio_cpu_b}x)"
echo "RPO lag p50/max, s: pre-copy $(get LAG50 a)/$(get LAGMAX a), no pre-copy $(get LAG50 b)/$(get LAGMAX b), schedule off $(get LAG50 c)/$(get LAGMAX c)"
echo "freeze_bench minutes=$MINUTES every=$EVERY rate_mib_s=$RATE bs=$BS rpo_s=$RPO" \
  "points_a=$(get PTS a) points_b=$(get PTS b) points_c=$(get PTS c)" \
  "freeze_p50_a=$(get P50 a) freeze_p99_a=$P99A freeze_max_a=$MAXA" \
  "freeze_p50_b=$(get P50 b) freeze_p99_b=$P99B freeze_max_b=$(get MAX b) freeze_p99_ratio=$ratio_fz" \
  "goal_p99=${goal_p99// /_} goal_max=${goal_max// /_}" \
  "lag_p50_a=$(get LAG50 a) lag_max_a=$(get LAGMAX a) lag_p50_b=$(get LAG50 b) lag_max_b=$(get LAGMAX b)" \
  "lag_p50_c=$(get LAG50 c) lag_max_c=$(get LAGMAX c)" \
  "agent_cpu_s_min_a=$(get AGCPU a) agent_cpu_s_min_b=$(get AGCPU b) agent_cpu_s_min_c=$(get AGCPU c) agent_cpu_ratio=$ratio_cpu"
