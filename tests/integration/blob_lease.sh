#!/usr/bin/env bash
# blob_lease.sh - Description: ownership of a disk's page blob by a lease (15 s for the test): the
# appliance holding it renews it past its duration; a third party's acquire and a second appliance
# pointed at the same container are refused (status says why, with the lease error) and it keeps
# retrying; after kill -9 of the first appliance its lease expires and the second takes the disk over
# from the blob's own state (sequence number = last committed cycle, snapshots = points): the old
# point restores byte-identical from the second appliance, the agent (registered there with a new
# key) continues with a resync and a new point restores byte-identical; a clean stop releases the
# lease. All waits poll for state with deadlines.
set -u
. "$(dirname "$0")/lib/replication.sh"
rpl_setup 600
rpl_azurite_start --inMemoryPersistence
export BLOB_TEST_CONNSTR=$AZ_CONNSTR BLOB_TEST_ZONE=$AZ_ZONE BLOB_TEST_CA=$AZ_CA
BT=$B/tests/blob_tool
LEASE=15

init_app() { # DIR -> key on the last line of DIR.init
  "$AP" init --state "$1" --storage "$AZ_CONNSTR" --container replicas --private-dns-zone "$AZ_ZONE" \
    --ca-file "$AZ_CA" --lease-duration $LEASE > "$1.init" || fail "init of $1 failed"
  grep -q "a $LEASE s lease" "$1.init" || fail "init does not show the lease: $(cat "$1.init")"
  tail -n 1 "$1.init"
}

# disk_json DIR PYEXPR: evaluates PYEXPR on the (only) disk of the appliance at DIR ("d")
disk_json() {
  "$AP" status --state "$1" --json 2>/dev/null | python3 -c '
import json, sys
ds = json.load(sys.stdin)["disks"]
d = ds[0] if ds else None
sys.exit(0 if d is not None and eval(sys.argv[1]) else 1)' "$2"
}

# wait_for SECONDS WHAT CMD...: polls CMD every 0.2 s until it succeeds or the deadline passes
wait_for() { wait_until -i 0.2 "$@"; }
wait_until_report() { tail -15 "$RT/appliance.log" "$RT/appB.log" "$RT/agent.log" >&2 2>/dev/null; }

blob_seq() { "$BT" snapshots replicas "$disk_id.vhd" | awk '$1 == "blob" {print $2}'; }
blob_leased() { "$BT" snapshots replicas "$disk_id.vhd" | awk '$1 == "blob" {print $3}' | grep -qx leased; }

say "appliance A: init (lease $LEASE s), run, an agent protects a disk, a point"
RPL_KEY=$(init_app "$RT/app")
rpl_appliance_start --rpo 0.5
rpl_agent_register
rpl_loop dev 32M half
rpl_agent_start
"$AG" protect "$dev" --state "$RT/agent" > "$RT/protect.out" || fail "protect failed: $(cat "$RT/protect.out")"
rpl_wait_cycle "$dev" 1
disk_id=$(rpl_disk_id "$dev")
dd if=/dev/urandom of="$dev" bs=64k count=8 seek=40 oflag=direct conv=notrunc status=none
pointA=$("$AG" checkpoint "$dev" --wait --state "$RT/agent" | tail -n 1) || fail "checkpoint failed"
[[ $pointA == rp-* ]] || fail "checkpoint's last line is not a point id: $pointA"
cp --sparse=always "$dev" "$RT/src-A"
wait_for 60 "A applies its point" disk_json "$RT/app" 'd["last_applied_cycle"] >= 2 and d["last_point"] == "'"$pointA"'"'
blob_leased || fail "the page blob is not leased while A runs: $("$BT" snapshots replicas "$disk_id.vhd")"
out=$("$BT" lease replicas "$disk_id.vhd" acquire 15 2>&1) && fail "a third party acquired A's lease"
[[ $out == *LeaseAlreadyPresent* ]] || fail "unexpected answer to a competing acquire: $out"

say "appliance B on the same container: the agent registers there; B is refused by the lease"
KEYB=$(init_app "$RT/appB")
PORTB=$(free_port)
"$AP" run --state "$RT/appB" --listen "127.0.0.1:$PORTB" --rpo 0.5 >> "$RT/appB.log" 2>&1 &
PIDB=$!
CLEANUP_PIDS+=("$PIDB")
b_up() { "$AP" status --state "$RT/appB" > /dev/null 2>&1; }
wait_for 20 "B's control socket" b_up
kill -TERM "$RPL_AG_PID"; wait "$RPL_AG_PID" 2>/dev/null
"$AG" register --appliance "127.0.0.1:$PORTB" --key "$KEYB" --state "$RT/agent" > "$RT/registerB.out" \
  || fail "register with B failed: $(cat "$RT/registerB.out")"
rpl_agent_start
wait_for 30 "B shows the refusal" disk_json "$RT/appB" '"another appliance holds the lease" in (d["reason"] or "")'
"$AP" status --state "$RT/appB" | grep -q "waiting for the page blob's lease" || fail "B's status text does not say why"
grep -q "LeaseAlreadyPresent" "$RT/appB.log" || fail "B's log does not name the lease error"
seqA=$(blob_seq)
# A renews: for more than a lease duration after it last wrote, B stays refused and the blob leased
end=$(( $(date +%s) + LEASE + 5 ))
while [ "$(date +%s)" -le "$end" ]; do
  disk_json "$RT/appB" '"another appliance holds the lease" in (d["reason"] or "")' || fail "B got the disk while A lives"
  blob_leased || fail "A's lease lapsed while A runs"
  sleep 1
done
[ "$(blob_seq)" = "$seqA" ] || fail "the blob changed while B was refused ($seqA -> $(blob_seq))"

say "kill -9 of A: its lease expires, B takes the disk over from the blob's state"
kill -9 "$RPL_AP_PID"; wait "$RPL_AP_PID" 2>/dev/null
wait_for $((LEASE + 30)) "B takes over" grep -q "taken over at cycle $seqA" "$RT/appB.log"
grep -q "1 point(s) from its snapshots" "$RT/appB.log" || fail "B did not adopt A's point: $(grep 'taken over' "$RT/appB.log")"
blob_leased || fail "the blob is not leased by B"
# the adopted point: restore --verify from B against the source copy kept at A's point
pB=$(python3 -c '
import sqlite3, sys
db = sqlite3.connect("file:%s?mode=ro" % sys.argv[1], uri=True)
rows = db.execute("SELECT id, cycle, snapshot_id FROM recovery_points").fetchall()
assert len(rows) == 1 and rows[0][2] and 0 < rows[0][1] <= int(sys.argv[2]), rows
print("rp-%d" % rows[0][0])' "$RT/appB/catalog.db" "$seqA") || fail "B does not have exactly the point of A"
"$AP" restore --state "$RT/appB" --disk "$disk_id" --point "$pB" --verify "$RT/src-A" > "$RT/restoreA.out" 2>&1 \
  || fail "A's point restored from B differs from the source: $(cat "$RT/restoreA.out")"

say "the agent continues with B: resync against the blob, new writes, a new point"
wait_for 120 "B resyncs and commits past the takeover" disk_json "$RT/appB" \
  'd["last_applied_cycle"] > '"$seqA"' and d["state"] == "protected"'
dd if=/dev/urandom of="$dev" bs=64k count=16 seek=100 oflag=direct conv=notrunc status=none
pointB=$("$AG" checkpoint "$dev" --wait --state "$RT/agent" | tail -n 1) || fail "checkpoint with B failed"
[[ $pointB == rp-* ]] || fail "checkpoint with B gave '$pointB'"
cp --sparse=always "$dev" "$RT/src-B"
wait_for 60 "B applies its point" disk_json "$RT/appB" 'd["last_point"] == "'"$pointB"'"'
"$AP" restore --state "$RT/appB" --disk "$disk_id" --point "$pointB" --verify "$RT/src-B" > "$RT/restoreB.out" 2>&1 \
  || fail "B's point differs from the source: $(cat "$RT/restoreB.out")"
"$AP" restore --state "$RT/appB" --disk "$disk_id" --point "$pB" --verify "$RT/src-A" > /dev/null 2>&1 \
  || fail "A's point no longer restores after B wrote"
[ "$(blob_seq)" -gt "$seqA" ] || fail "the blob's sequence number did not move past $seqA"
grep -q "applying cycle\|stale write fenced" "$RT/appB.log" && fail "B reported apply failures: $(grep -m3 'applying cycle\|fenced' "$RT/appB.log")"

say "a clean stop of B releases the lease"
kill -9 "$RPL_AG_PID"; wait "$RPL_AG_PID" 2>/dev/null
kill -TERM "$PIDB"
wait "$PIDB"
rc=$?
[ "$rc" -eq 0 ] || fail "B exited with status $rc on a clean stop: $(tail -5 "$RT/appB.log")"
grep -q "lease released" "$RT/appB.log" || fail "B did not release its lease on stop"
"$BT" lease replicas "$disk_id.vhd" acquire 15 > /dev/null || fail "the lease is not free after B stopped"
"$BT" lease replicas "$disk_id.vhd" break > /dev/null || fail "cannot break the test's lease"
echo "blob_lease: ok (A's cycle $seqA and point taken over by B as $pB; B's point $pointB)"
