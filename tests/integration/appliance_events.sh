#!/usr/bin/env bash
# appliance_events.sh - Description: `replication-appliance events` is the machine interface for
# cycle and point timing: bad arguments and a missing daemon are refused with a reason; the initial
# sync, a checkpoint's cycle and its recovery point appear as JSON lines with increasing sequence
# numbers, the disk, the cycle, millisecond times and byte counts; --since gives only newer events,
# and --wait returns as soon as one comes.
set -u
. "$(dirname "$0")/lib/replication.sh"
rpl_setup

# Refusals, before any daemon runs.
err=$("$AP" events --state "$RT/app" --wait soon 2>&1 >/dev/null); rc=$?
[ $rc -eq 2 ] && [[ $err == *"--wait takes seconds"* ]] || fail "a bad --wait was not refused clearly (exit $rc): $err"
err=$("$AP" events --state "$RT/app" --wait nan 2>&1 >/dev/null); rc=$?
[ $rc -eq 2 ] && [[ $err == *"--wait takes seconds"* ]] || fail "--wait nan was not refused clearly (exit $rc): $err"
err=$("$AP" events --state "$RT/app" --since 2>&1 >/dev/null); rc=$?
[ $rc -eq 2 ] && [[ $err == *usage* ]] || fail "--since without a value was not refused (exit $rc): $err"
rpl_appliance_init
err=$("$AP" events --state "$RT/app" 2>&1 >/dev/null); rc=$?
[ $rc -eq 1 ] && [[ $err == *"not running"* ]] || fail "events without a daemon (exit $rc): $err"

rpl_appliance_start --rpo 3600
err=$("$AP" events --state "$RT/app" --since x1 2>&1 >/dev/null); rc=$?
[ $rc -eq 2 ] && [[ $err == *"SINCE must be an event number"* ]] || fail "a bad --since was not refused (exit $rc): $err"
err=$("$AP" events --state "$RT/app" --since -1 2>&1 >/dev/null); rc=$?
[ $rc -eq 2 ] && [[ $err == *"SINCE must be an event number"* ]] || fail "a negative --since was not refused (exit $rc): $err"
out=$("$AP" events --state "$RT/app") || fail "events on an idle daemon failed"
[ -z "$out" ] || fail "an idle daemon has events: $out"

rpl_agent_register
rpl_agent_start
rpl_loop dev 64M random
t0=$(date +%s%3N)
"$AG" protect "$dev" --state "$RT/agent" > /dev/null || fail "protect failed"
rpl_wait_cycle "$dev" 1
id=$(rpl_disk_id "$dev")

# check_events FILE DISK T0 T1 SPEC...: every line is an event of DISK with seq increasing by one,
# unix_ms within [T0, T1], and for each SPEC "type:cycle:kind[:direct]" exactly one matching event.
check_events() {
  python3 - "$@" <<'PY'
import json, sys
path, disk, t0, t1, specs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5:]
ev = [json.loads(l) for l in open(path) if l.strip()]
if not ev:
    sys.exit("no events")
for a, b in zip(ev, ev[1:]):
    if b["seq"] != a["seq"] + 1:
        sys.exit("sequence numbers not consecutive: %d then %d" % (a["seq"], b["seq"]))
for e in ev:
    if e["disk_id"] != disk:
        sys.exit("event of another disk: %r" % e)
    if not t0 - 1000 <= e["unix_ms"] <= t1 + 1000:
        sys.exit("time %d outside [%d, %d]: %r" % (e["unix_ms"], t0, t1, e))
for spec in specs:
    want = spec.split(":")
    m = [e for e in ev if e["type"] == want[0] and e["cycle"] == int(want[1]) and e["kind"] == want[2]
         and (len(want) < 4 or e.get("direct") == (want[3] == "direct"))]
    if len(m) != 1:
        sys.exit("%d events match %s in %r" % (len(m), spec, ev))
    e = m[0]
    # (a point's own cycle may be empty: its catch-up read what was dirty)
    if e["type"] == "committed" and e["kind"] != "recovery_point" and (e["extents"] < 1 or e["raw_bytes"] < 1 or e["payload_bytes"] < 1):
        sys.exit("a committed cycle without extents or bytes: %r" % e)
print(ev[-1]["seq"])
PY
}
"$AP" events --state "$RT/app" > "$RT/ev1" || fail "events failed"
last=$(check_events "$RT/ev1" "$id" "$t0" "$(date +%s%3N)" "committed:1:resync:direct") \
  || fail "the initial sync's events are wrong: $(cat "$RT/ev1")"

# Nothing newer yet: --since gives nothing, and a short --wait returns empty.
out=$("$AP" events --state "$RT/app" --since "$last" --wait 0.2) || fail "events --since failed"
[ -z "$out" ] || fail "events after $last with nothing new: $out"

# A waiting reader gets the checkpoint's events as they come.
"$AP" events --state "$RT/app" --since "$last" --wait 120 > "$RT/ev2" 2>&1 &
reader=$!
CLEANUP_PIDS+=("$reader")
dd if=/dev/urandom of="$dev" bs=64K count=16 seek=100 oflag=direct conv=notrunc status=none || fail "cannot write the disk"
t1=$(date +%s%3N)
point=$("$AG" checkpoint "$dev" --wait --state "$RT/agent" | tail -n 1) || fail "checkpoint failed"
wait "$reader" || fail "the waiting reader failed: $(cat "$RT/ev2")"
[ -s "$RT/ev2" ] || fail "the waiting reader returned nothing"
# The reader returns at the first event; everything since comes from a second call.
"$AP" events --state "$RT/app" --since "$last" > "$RT/ev3" || fail "events --since failed"
# A point is a catch-up cycle (plain: what was dirty, read before anything freezes), then its own.
cycle=$(python3 -c 'import json,sys; print([json.loads(l) for l in open(sys.argv[1])][0]["cycle"])' "$RT/ev3")
check_events "$RT/ev3" "$id" "$t1" "$(date +%s%3N)" "committed:$cycle:plain" "committed:$((cycle + 1)):recovery_point" \
  "point:$((cycle + 1)):recovery_point" >/dev/null || fail "the checkpoint's events are wrong: $(cat "$RT/ev3")"
python3 -c '
import json, sys
ev = [json.loads(l) for l in open(sys.argv[1])]
p = [e for e in ev if e["type"] == "point"][0]
if p["point_id"] != sys.argv[2]:
    sys.exit("point %s, checkpoint said %s" % (p["point_id"], sys.argv[2]))
if p["trigger"] != "checkpoint" or p["consistency"] != "crash-consistent" or p["freeze_ms"] != 0:
    sys.exit("the point of an unmounted disk is %s by %s, frozen %d ms" % (p["consistency"], p["trigger"], p["freeze_ms"]))' \
  "$RT/ev3" "$point" || fail "the point event does not describe the checkpoint's point"
head -n 1 "$RT/ev2" | cmp -s - <(head -n 1 "$RT/ev3") || fail "the waiting reader's first event differs from the list's"
echo "appliance_events: ok"
