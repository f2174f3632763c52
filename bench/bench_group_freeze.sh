#!/usr/bin/env bash
# bench_group_freeze.sh - the freeze window of a consistency group's point across two servers: two
# agents (two state directories, own pin directories) each protecting an ext4 loop disk written at
# RATE MB/s (tests/group_writer: a bulk file rewritten in 64 KiB writes, plus the sequence records),
# one appliance. N group points (checkpoint --group --wait); each point's window, first freeze to
# last thaw across both servers, is read from the points JSON (group_window_ms, measured from the
# agents' freeze times on one clock); then p50/p99/max against the goal (p99 <= 200 ms), and the peer
# measured in the same run: N single-disk points of each agent under the same load (their freeze_ms),
# with the ratio group window p99 / single freeze p99. Failed attempts are counted (group list JSON).
#
#   bash bench/bench_group_freeze.sh [--points N] [--rate MB_S] [--size DISK_SIZE]
#        (root; defaults: 20 points, 20 MB/s per disk, 2G disks)
# shellcheck source=bench/lib_bench.sh
. "$(dirname "$0")/lib_bench.sh"

N=20 RATE=20 SIZE=2G
while [ $# -gt 0 ]; do
  case "$1" in
    --points) N=$2 ;;
    --rate) RATE=$2 ;;
    --size) SIZE=$2 ;;
    *) die "unknown option $1 (--points N --rate MB_S --size SIZE)" ;;
  esac
  shift 2 || die "$1 needs a value"
done
[[ "$N" =~ ^[1-9][0-9]*$ ]] || die "--points takes a whole number"
W=$B/tests/group_writer
[ -x "$W" ] || die "$W missing: bash scripts/build.sh release"
bench_setup
PIN2=$MOBILITY_AGENT_BPF_PIN_DIR-b
group_cleanup() {
  local m
  for m in "$RT/m1" "$RT/m2"; do mountpoint -q "$m" 2>/dev/null && fsfreeze -u "$m" 2>/dev/null; done
  [ -n "${WRITER:-}" ] && kill "$WRITER" 2>/dev/null
  [ -n "${AG2_PID:-}" ] && { kill -9 "$AG2_PID"; wait "$AG2_PID"; } 2>/dev/null
  [ -n "${d2:-}" ] && MOBILITY_AGENT_BPF_PIN_DIR=$PIN2 "$AG" cbt stop "$d2" --state "$RT/g/agent2" >/dev/null 2>&1
  rm -rf "$PIN2"
  for m in "$RT/m1" "$RT/m2"; do umount "$m" 2>/dev/null; done
  bench_cleanup
}
trap group_cleanup EXIT

echo "group freeze: two agents, ext4 on a $SIZE loop disk each, $RATE MB/s of writes each (64 KiB, buffered);" \
  "$N group points and $N single-disk points per agent; $(nproc) CPUs, load at start $(load_avg)"
d1= d2=
for k in 1 2; do
  truncate -s "$SIZE" "$RT/disk$k.img"
  bench_loop "d$k" "$RT/disk$k.img"
done
mkdir -p "$RT/m1" "$RT/m2"
for k in 1 2; do
  dev=d$k
  mkfs.ext4 -q "${!dev}" || die "mkfs.ext4 failed"
  mount "${!dev}" "$RT/m$k" || die "mount failed"
done

BENCH_AP_ARGS="--points crash=off,app=off" bench_pair_start g 30
"$AP" init --state "$RT/g/app" --storage "file:$RT/g/replica" > "$RT/g/init2.out" || die "init for a second key failed"
"$AG" register --appliance "127.0.0.1:$PAIR_PORT" --key "$(tail -n 1 "$RT/g/init2.out")" --state "$RT/g/agent2" \
  > /dev/null || die "the second agent's register failed"
MOBILITY_AGENT_BPF_PIN_DIR=$PIN2 RPL_LOG_TIME=1 "$AG" run --state "$RT/g/agent2" >> "$RT/g/agent2.log" 2>&1 &
AG2_PID=$!
for i in $(seq 1 200); do "$AG" status --state "$RT/g/agent2" >/dev/null 2>&1 && break; sleep 0.05; done
bench_protect g "$d1"
"$AG" protect "$d2" --state "$RT/g/agent2" > /dev/null || die "protect on the second agent failed"
cycle_of() { "$AG" status --state "$1" --json 2>/dev/null | python3 -c 'import json,sys; d=json.load(sys.stdin)["disks"]; print(d[0]["last_cycle"] if d else 0)' 2>/dev/null || echo 0; }
for s in agent agent2; do
  for i in $(seq 1 600); do [ "$(cycle_of "$RT/g/$s")" -ge 1 ] && break; sleep 0.5; done
  [ "$(cycle_of "$RT/g/$s")" -ge 1 ] || die "$s: the initial sync did not end"
done
id1=$("$AG" status --state "$RT/g/agent" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["disks"][0]["disk_id"])')
id2=$("$AG" status --state "$RT/g/agent2" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["disks"][0]["disk_id"])')
"$AP" group --state "$RT/g/app" create bench "$id1" "$id2" > /dev/null || die "group create failed"

"$W" "$RT/m1/seq" "$RT/m2/seq" --record 4096 --pause-us 2000 --bulk-mbps "$RATE" --bulk-mib 256 &
WRITER=$!
sleep 5 # the writers' pages reach the disks: the points are taken under a steady load

say "peer: $N single-disk points of each agent under the same load"
for i in $(seq 1 "$N"); do
  "$AG" checkpoint "$d1" --wait --state "$RT/g/agent" > /dev/null || say "a single point of agent 1 failed"
  "$AG" checkpoint "$d2" --wait --state "$RT/g/agent2" > /dev/null || say "a single point of agent 2 failed"
done
say "$N group points"
failed=0
for i in $(seq 1 "$N"); do
  "$AG" checkpoint --group bench --wait --state "$RT/g/agent" > "$RT/gp.out" 2>&1 || failed=$((failed + 1))
  sleep 1
done
kill "$WRITER"; wait "$WRITER" 2>/dev/null; WRITER=
"$AP" points --state "$RT/g/app" --json > "$RT/points.json" || die "points failed"
"$AP" group --state "$RT/g/app" list --json > "$RT/groups.json" || die "group list failed"
python3 - "$RT/points.json" "$RT/groups.json" "$failed" "$N" "$RATE" <<'PY'
import json, math, sys
pts, groups, failed, n, rate = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
def pct(v, p):
    v = sorted(v)
    return v[max(0, math.ceil(p / 100 * len(v)) - 1)] if v else float("nan")
windows, single = {}, []
for d in pts["disks"]:
    for p in d["points"]:
        if p["consistency_group"]:
            windows[p["group"]] = p["group_window_ms"]
        else:
            single.append(p["freeze_ms"])
w = [windows[k] for k in sorted(windows, key=lambda s: int(s[3:]))]
print("group point windows (ms, first freeze to last thaw across both servers):", " ".join(str(x) for x in w))
g = groups["groups"][0]
print(f"group points made: {len(w)} of {n} asked ({failed} refused; attempts failed per group list: {g['attempts_failed']})")
print(f"group window p50 {pct(w, 50)} ms, p99 {pct(w, 99)} ms, max {max(w) if w else 'nan'} ms")
print(f"peer, single-disk points ({len(single)}): freeze p50 {pct(single, 50)} ms, p99 {pct(single, 99)} ms, max {max(single) if single else 'nan'} ms")
ratio = pct(w, 99) / pct(single, 99) if w and single and pct(single, 99) else float("nan")
goal = "met" if w and pct(w, 99) <= 200 else "NOT met"
print(f"goal: group window p99 <= 200 ms at {rate} MB/s per server: {goal}; ratio group p99 / single p99 = {ratio:.2f}")
print(f"summary: points={len(w)} failed={g['attempts_failed']} p50_ms={pct(w, 50)} p99_ms={pct(w, 99)} "
      f"max_ms={max(w) if w else 'nan'} single_p99_ms={pct(single, 99)} ratio={ratio:.2f} goal={goal.replace(' ', '_')}")
PY
