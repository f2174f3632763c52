#!/usr/bin/env bash
# scheduled_points.sh - Description: recovery points nobody asks for: the appliance's schedule
# (crash points every 30 s, on a test time scale of 10) makes points of a mounted ext4 under a
# steady writer (files rewritten with pwrite + fsync at ~12 MB/s); every point restores, passes
# e2fsck -fn, and holds for every file a version at least as new as all fsynced before the point's
# cycle began and none begun after it was committed; points missed while the agent is away are
# counted with their reason, and the schedule resumes when it comes back. A second, idle disk of
# the same agent gets its points at the same instants (one group): crash-consistent, no filesystem.
set -u
. "$(dirname "$0")/lib/replication.sh"
rpl_setup
command -v mkfs.ext4 >/dev/null && command -v e2fsck >/dev/null || { echo "SKIP: needs e2fsprogs"; exit 77; }
TOOLS=$(cd "$(dirname "$0")/../tools" && pwd)

rpl_appliance_init
export RPL_TEST_SCHEDULE_SCALE=10 # a point every 30 s comes every 3 s
rpl_appliance_start --rpo 1 --points crash=30s,app=off
rpl_agent_register
rpl_loop dev 256M
rpl_loop dev2 64M
mkfs.ext4 -q "$dev" || fail "mkfs.ext4 failed"
mkdir -p "$RT/mnt" "$RT/check"
mount "$dev" "$RT/mnt" || fail "mount failed"
CLEANUP_MOUNTS+=("$RT/mnt")
python3 "$TOOLS/fsync_writer.py" "$RT/mnt" "$RT/writes.log" --files 24 --size $((1 << 20)) --rate $((12 << 20)) &
writer=$!
CLEANUP_PIDS+=("$writer")

rpl_agent_start --freeze-limit-ms 2000
"$AG" protect "$dev" --state "$RT/agent" >/dev/null || fail "protect failed"
"$AG" protect "$dev2" --state "$RT/agent" >/dev/null || fail "protect of the second disk failed"
rpl_wait_cycle "$dev" 1
rpl_wait_cycle "$dev2" 1
id=$(rpl_disk_id "$dev")
id2=$(rpl_disk_id "$dev2")

# How many scheduled points the disk has (the points document).
scheduled_points() {
  "$AP" points --state "$RT/app" --disk "$id" --json | python3 -c '
import json, sys
print(sum(1 for p in json.load(sys.stdin)["disks"][0]["points"] if p["trigger"] == "schedule"))'
}
points_at_least() { [ "$(scheduled_points)" -ge "$1" ]; }
wait_until 120 "the schedule made fewer than 4 points: $("$AP" status --state "$RT/app")" points_at_least 4

# The agent away for longer than two periods: the points due meanwhile are counted, with why.
kill "$RPL_AG_PID"; wait "$RPL_AG_PID" 2>/dev/null
missed_reported() {
  "$AP" status --state "$RT/app" --json | python3 -c '
import json, sys
d = json.load(sys.stdin)["disks"][0]["points"]
sys.exit(0 if d["crash"]["missed"] >= 2 and "not connected" in (d["last_failure"] or "") else 1)'
}
wait_until 60 "points missed while the agent was away are not counted: $("$AP" status --state "$RT/app")" missed_reported
before=$(scheduled_points)
rpl_agent_start --freeze-limit-ms 2000
wait_until 120 "the schedule did not resume after the agent came back" points_at_least $((before + 2))
kill "$writer"; wait "$writer" 2>/dev/null

"$AP" status --state "$RT/app" --json > "$RT/status.json" || fail "status failed"
"$AP" points --state "$RT/app" --disk "$id" --json > "$RT/points.json" || fail "points failed"
"$AP" points --state "$RT/app" --json > "$RT/points-all.json" || fail "points of all disks failed"
"$AP" events --state "$RT/app" > "$RT/events.jsonl" || fail "events failed"
"$AG" status --state "$RT/agent" --json > "$RT/agent.json" || fail "agent status failed"
python3 - "$RT/status.json" "$RT/points.json" "$RT/agent.json" "$dev" "$RT/points-all.json" "$id" "$id2" \
  "$RT/events.jsonl" <<'PY' || { grep '"point"' "$RT/events.jsonl" >&2; fail "status or points document wrong"; }
import json, sys
st, pts, ag, dev = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), json.load(open(sys.argv[3])), sys.argv[4]
allp, id1, id2 = json.load(open(sys.argv[5])), sys.argv[6], sys.argv[7]
ev = [json.loads(l) for l in open(sys.argv[8]) if l.strip()]
d = [x for x in st["disks"] if x["disk_id"] == id1][0]["points"]
assert d["schedule"] == "crash=30s,app=off", d
assert d["crash"]["every_seconds"] == 30 and d["app"]["every_seconds"] == 0 and d["app"]["next_due_unix_ms"] == 0, d
assert d["crash"]["next_due_unix_ms"] > 0 and d["crash"]["last_point"], d
sched = [p for p in pts["disks"][0]["points"] if p["trigger"] == "schedule"]
for p in sched:
    assert p["kind"] == "filesystem-consistent" and p["has_image"], p  # frozen, no hooks
    assert 0 < p["freeze_ms"] <= 2000, p
assert d["crash"]["last_point"] == sched[-1]["point"], (d, sched[-1])
fz = [x for x in ag["disks"] if x["device"] == dev][0]["freeze_ms"]
assert fz["count"] >= 2 and fz["p50"] <= fz["p99"] <= fz["max"] <= 2000, fz
# The idle disk's scheduled points are the same instants: each point event of disk 1 has one of
# disk 2 made with it (the next event, the same freeze), crash-consistent (no filesystem).
byid = {p["point"]: p for x in allp["disks"] if x["disk_id"] == id2 for p in x["points"]}
pev = [e for e in ev if e["type"] == "point" and e["trigger"] == "schedule"]
d2 = [e for e in pev if e["disk_id"] == id2]
assert d2, "the idle disk has no scheduled point"
d1 = [e for e in pev if e["disk_id"] == id1 and e["unix_ms"] > d2[0]["unix_ms"] + 1000]  # both synced by then
assert len(d1) >= 2, "too few points after both disks were synced: %r" % d1
paired = 0
for e in d1:
    mate = [f for f in d2 if abs(f["seq"] - e["seq"]) == 1 and f["freeze_ms"] == e["freeze_ms"]]
    if mate:
        assert mate[0]["point_id"] in byid and mate[0]["consistency"] == "crash-consistent", mate[0]
        paired += 1
# (the first point after the agent came back may be made before its second disk is announced again)
assert paired >= 2 and paired >= len(d1) - 1, "points of the two disks not made together: %d of %d" % (paired, len(d1))
print("points: %d scheduled, freeze p50 %d ms, p99 %d ms, max %d ms; missed %d" %
      (len(sched), fz["p50"], fz["p99"], fz["max"], d["crash"]["missed"]))
PY

# Every scheduled point restores, is a clean filesystem, and holds the files as of its freeze.
mapfile -t plist < <(python3 -c '
import json, sys
for p in json.load(open(sys.argv[1]))["disks"][0]["points"]:
    if p["trigger"] == "schedule":
        print(p["point"])' "$RT/points.json")
for rp in "${plist[@]}"; do
  rm -f "$RT/point.img"
  "$AP" restore --state "$RT/app" --disk "$id" --point "$rp" --out "$RT/point.img" > "$RT/restore.out" 2>&1 \
    || { cat "$RT/restore.out" >&2; fail "$rp does not restore"; }
  e2fsck -fn "$RT/point.img" > "$RT/fsck.out" 2>&1 || { cat "$RT/fsck.out" >&2; fail "$rp: e2fsck -fn found problems"; }
  mount -o ro,loop,noload "$RT/point.img" "$RT/check" || fail "$rp does not mount"
  CLEANUP_MOUNTS+=("$RT/check")
  python3 - "$RT/check" "$RT/writes.log" "$RT/events.jsonl" "$rp" <<'PY' || fail "$rp: files are not those of its freeze"
import hashlib, json, os, sys
mnt, log, events, rp = sys.argv[1:]
versions = {}
for l in open(log):
    v = json.loads(l)
    versions.setdefault(v["file"], []).append(v)
ev = [json.loads(l) for l in open(events) if l.strip()]
point = [e for e in ev if e["type"] == "point" and e["point_id"] == rp][0]
commit = {e["cycle"]: e["unix_ms"] for e in ev if e["type"] == "committed" and e["disk_id"] == point["disk_id"]}
lo, hi = commit[point["cycle"] - 1], commit[point["cycle"]]  # the freeze came after the cycle before was committed
for f, vs in versions.items():
    data = open(os.path.join(mnt, f), "rb").read()
    h = hashlib.sha256(data).hexdigest()
    match = [v for v in vs if v["sha256"] == h]
    assert match, "%s: content of no version written (%d bytes)" % (f, len(data))
    got = match[0]["version"]
    need = max([v["version"] for v in vs if v["synced_ms"] < lo] or [-1])
    assert got >= need, "%s: version %d, but version %d was fsynced before the point's cycle began" % (f, got, need)
    assert match[0]["start_ms"] <= hi, "%s: version %d was begun after the point was committed" % (f, got)
PY
  umount "$RT/check"
done
# The last group point fails over with one command: one VHD per disk, each the disk at that point.
group=$(python3 -c '
import json, sys
g = [p["group"] for x in json.load(open(sys.argv[1]))["disks"] for p in x["points"] if p["group"]]
print(g[-1] if g else "")' "$RT/points-all.json")
[ -n "$group" ] || fail "no point was made as a group of the two disks"
"$AP" failover --state "$RT/app" --point "$group" --to "$RT/group.vhd" > "$RT/failover.out" 2>&1 \
  || fail "the group's failover failed: $(cat "$RT/failover.out")"
for i in "$id" "$id2"; do
  member=$(python3 -c '
import json, sys
print([p["point"] for x in json.load(open(sys.argv[1]))["disks"] if x["disk_id"] == sys.argv[2]
       for p in x["points"] if p["group"] == sys.argv[3]][0])' "$RT/points-all.json" "$i" "$group")
  [ -s "$RT/group-$i.vhd" ] || fail "no VHD of disk $i from the group's failover: $(cat "$RT/failover.out")"
  rm -f "$RT/member.img"
  "$AP" restore --state "$RT/app" --disk "$i" --point "$member" --out "$RT/member.img" >/dev/null || fail "restore of $member failed"
  cmp -n "$(stat -c %s "$RT/member.img")" "$RT/member.img" "$RT/group-$i.vhd" || fail "the group's VHD of disk $i is not its point $member"
done
grep -E "froze|recovery point of|catching up|flipping again" "$RT/agent.log" | tail -30 >&2
echo "scheduled_points: ok (${#plist[@]} scheduled points restored, fsck clean, files as of their freeze)"
