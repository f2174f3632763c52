#!/usr/bin/env bash
# fleet.sh - Description: twenty simulated agents (bench/fleet_gen: each its own registration key,
# certificate and sparse 64 MiB disk file, 1 MB/s of random writes each for 30 s) against one
# appliance with file: storage, over the real protocol and TLS: every agent registers, syncs and
# commits at least two cycles under the churn, drains once the writes stop, and at the end every
# disk's replica equals its source byte for byte. Every cycle goes through the cache
# (RPL_TEST_NO_DIRECT=1) and each apply is held 300 ms longer (RPL_TEST_APPLY_HOLD_MS), so that the
# apply workers (--apply-workers 4) are seen applying several disks at once, each disk's cycles in
# strictly increasing order (its applied events). Timings are printed, never asserted (the
# benchmark, bench/bench_fleet.sh, measures them).
#
#   fleet.sh [AGENTS] [SECONDS]   (defaults 20 30)
set -u
. "$(dirname "$0")/lib/common.sh"

N=${1:-20}
DUR=${2:-30}
B=${RPL_BUILD_DIR:?run under ctest}
AP=$B/appliance/replication-appliance
FG=$B/bench/fleet_gen
[ -x "$FG" ] || skip "bench/fleet_gen is not built (RPL_BENCH=OFF)"
command -v python3 >/dev/null || skip "python3 missing (scripts/setup.sh installs it)"

RT=$(mktemp -d /var/tmp/rpl-fleet.XXXXXX)
CLEANUP_PATHS+=("$RT")
# The test ends itself (cleaning up) before ctest's timeout would kill it without a chance to.
( sleep 240 && kill -TERM $$ ) >/dev/null 2>&1 </dev/null &
DEADLINE_PID=$!
stop_deadline() {
  local sleeper
  sleeper=$(pgrep -P "$DEADLINE_PID" sleep)
  kill "$DEADLINE_PID" 2>/dev/null
  [ -n "$sleeper" ] && kill "$sleeper" 2>/dev/null
}
CLEANUP_FIRST+=(stop_deadline)
trap 'echo "FAIL: the test ran out of time" >&2; exit 1' TERM INT

wait_until_report() { tail -n 30 "$RT/appliance.log" >&2; }

WORKERS=4
say "appliance with file: storage, RPO target 5 s, $WORKERS apply workers, every cycle through the cache"
"$AP" init --state "$RT/app" --storage "file:$RT/replica" >"$RT/init.out" || fail "init failed"
for bad in 0 33 -1 x ""; do
  out=$("$AP" run --state "$RT/app" --web off --apply-workers "$bad" 2>&1); rc=$?
  [ "$rc" = 2 ] && [[ $out == *"--apply-workers takes a whole number of workers from 1 to 32"* ]] \
    || fail "--apply-workers '$bad': exit $rc, unclear error: $out"
done
PORT=$(free_port)
RPL_TEST_NO_DIRECT=1 RPL_TEST_APPLY_HOLD_MS=300 \
  "$AP" run --state "$RT/app" --listen "127.0.0.1:$PORT" --web off --points crash=off,app=off --rpo 5 \
  --apply-workers "$WORKERS" >>"$RT/appliance.log" 2>&1 &
AP_PID=$!
CLEANUP_PIDS+=("$AP_PID")
ap_up() {
  kill -0 "$AP_PID" 2>/dev/null || { cat "$RT/appliance.log" >&2; fail "the appliance exited"; }
  [ -S "$RT/app/control.sock" ] && "$AP" status --state "$RT/app" >/dev/null 2>&1
}
wait_until -i 0.05 10 "the appliance did not come up" ap_up

say "$N simulated agents: register (a key each), initial sync, ${DUR} s of churn, drain"
t0=$(date +%s)
# Each agent's key from init, one at a time (a newer key revokes the unused ones before it).
"$FG" --appliance "127.0.0.1:$PORT" --dir "$RT/fleet" --agents "$N" --size 64 --rate 1 --duration "$DUR" \
  --drain-timeout 120 --ap-pid "$AP_PID" --json "$RT/fleet.json" \
  --key-cmd "'$AP' init --state '$RT/app' --storage 'file:$RT/replica'" >"$RT/fleet.out" 2>"$RT/fleet.err" &
FG_PID=$!
CLEANUP_PIDS+=("$FG_PID")
wait "$FG_PID"
rc=$?
cat "$RT/fleet.out"
[ "$rc" = 0 ] || { cat "$RT/fleet.err" >&2; tail -n 30 "$RT/appliance.log" >&2; fail "fleet_gen failed (status $rc)"; }
echo "(fleet_gen ran $(( $(date +%s) - t0 )) s)"

say "every agent registered once, every disk is served"
[ "$(grep -c '^fleet-' "$RT/fleet.out")" = "$N" ] || fail "fleet_gen reported $(grep -c '^fleet-' "$RT/fleet.out") agents, not $N"
[ "$(wc -l <"$RT/fleet/manifest")" = "$N" ] || fail "the manifest does not list $N disks"
"$AP" status --state "$RT/app" --json >"$RT/status.json" || fail "status failed"
python3 - "$RT/status.json" "$N" <<'PY' || fail "the appliance does not know every agent and disk"
import json, sys
doc, n = json.load(open(sys.argv[1])), int(sys.argv[2])
agents = {a["agent_id"] for a in doc["agents"]}
disks = [d for d in doc["disks"] if d["state"] == "protected"]
assert len(agents) == n, "agents %d" % len(agents)
assert len(disks) == n, "protected disks %d" % len(disks)
assert len({d["agent_id"] for d in disks}) == n, "a disk per agent"
PY

say "every agent committed at least two cycles under the churn, all its writes are in"
read -r cmin drained < <(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["cycles_min"], d["drained"])' "$RT/fleet.json")
[ "$drained" = "$N" ] || fail "only $drained of $N agents drained"
[ "$cmin" -ge 2 ] || fail "an agent committed only $cmin cycle(s) during the churn"

say "every replica equals its source (once the appliance applied every committed cycle)"
all_applied() {
  "$AP" status --state "$RT/app" --json 2>/dev/null | python3 -c '
import json, sys
d = json.load(sys.stdin)["disks"]
sys.exit(0 if d and all(x["last_applied_cycle"] == x["last_committed_cycle"] for x in d) else 1)'
}
wait_until -i 0.5 60 "the appliance did not apply every committed cycle" all_applied
while read -r id src; do
  img=$RT/replica/$id.img
  [ -f "$img" ] || fail "no replica image for disk $id"
  cmp -s "$src" "$img" || fail "disk $id: the replica differs from its source ($(cmp "$src" "$img" 2>&1 | head -n 1))"
done <"$RT/fleet/manifest"

say "the apply workers applied several disks at once, each disk's cycles in strictly increasing order"
"$AP" events --state "$RT/app" >"$RT/events.jsonl" || fail "events failed"
"$AP" status --state "$RT/app" --json >"$RT/status.json" || fail "status failed"
python3 - "$RT/events.jsonl" "$RT/status.json" "$WORKERS" "$N" <<'PY' || fail "the applies did not overlap, or a disk's cycles were applied out of order"
import json, sys
events = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
status, workers, n = json.load(open(sys.argv[2])), int(sys.argv[3]), int(sys.argv[4])
seqs = [e["seq"] for e in events]
assert seqs == sorted(seqs) and seqs[0] == 1, "the events are not all there from the first (ring overrun?)"
applied = [e for e in events if e["type"] == "applied"]
last, spans = {}, []
for e in applied:
    d, c = e["disk_id"], e["cycle"]
    assert c > last.get(d, 0), "disk %s: cycle %d applied after cycle %d" % (d, c, last.get(d, 0))
    last[d] = c
    assert 0 <= e["worker"] < workers, "worker %d out of range" % e["worker"]
    assert e["apply_ms"] >= 300, "an apply shorter than the test hook's hold: %r" % e
    spans.append((e["unix_ms"] - e["apply_ms"], e["unix_ms"], d))
assert len(last) == n, "applied events of %d disks, not %d" % (len(last), n)
# the most applies of different disks in progress at one instant
points = sorted([(a, 1) for a, _, _ in spans] + [(b, -1) for _, b, _ in spans], key=lambda p: (p[0], p[1]))
cur = best = 0
for _, delta in points:
    cur += delta
    best = max(best, cur)
ap = status["appliers"]
assert ap["workers"] == workers, "status says %d workers" % ap["workers"]
print("applies: %d, at most %d at once (events), busy_max %d of %d workers (status)" % (len(applied), best, ap["busy_max"], workers))
assert best >= 2, "no two applies overlapped"
assert ap["busy_max"] >= 2, "status never saw two workers busy"
PY
grep -h '^FLEET_JSON' "$RT/fleet.out" | sed 's/^FLEET_JSON /figures (not asserted): /'
say "ok: $N agents, $N replicas equal to their sources"
