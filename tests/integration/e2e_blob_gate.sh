#!/usr/bin/env bash
# e2e_blob_gate.sh - Description: uploads wait for the storage checks, and disks share the uploader.
# The appliance starts with Azurite down: status (text and --json) shows the failed check ('TCP
# reach') with its remedy, agents keep being ACKed for two disks while nothing is uploaded; Azurite
# starts: uploads begin, the two disks' backlogs are applied in turn by the one apply worker it runs
# with (the pool hands the disk served least recently: the first applies alternate between the
# disks), and each disk's restored point is byte-identical to it.
# Also: upload limits given to run are shown in status; invalid limits give a clear error.
set -u
. "$(dirname "$0")/lib/replication.sh"
rpl_setup 500
rpl_azurite_start
export BLOB_TEST_CONNSTR=$AZ_CONNSTR BLOB_TEST_ZONE=$AZ_ZONE BLOB_TEST_CA=$AZ_CA

# status_json PYTHON-EXPR: true when the expression holds for d = the status document
status_is() {
  "$AP" status --state "$RT/app" --json 2>/dev/null | python3 -c '
import json, sys
d = json.load(sys.stdin)
sys.exit(0 if eval(sys.argv[1]) else 1)' "$1"
}
# wait_status EXPR SECONDS WHAT
wait_status() { wait_until "$2" "$3" status_is "$1"; }
wait_until_report() {
  "$AP" status --state "$RT/app" >&2
  tail -20 "$RT/appliance.log" >&2
}

say "invalid upload limits are refused with a clear error"
rpl_appliance_init_azure
for bad in abc -5 1.5 100001 ""; do
  out=$("$AP" run --state "$RT/app" --listen 127.0.0.1:1 --upload-limit "$bad" 2>&1) && fail "run took --upload-limit '$bad'"
  [[ $out == *"--upload-limit takes a whole number of MB/s"* ]] || fail "unclear error for --upload-limit '$bad': $out"
done
out=$("$AP" run --state "$RT/app" --listen 127.0.0.1:1 --agent-limit x 2>&1) && fail "run took --agent-limit x"
[[ $out == *"--agent-limit takes a whole number of MB/s"* ]] || fail "unclear error for --agent-limit x: $out"
out=$("$AP" init --state "$RT/other" --storage "file:$RT/other-replica" --upload-limit 2G 2>&1) && fail "init took --upload-limit 2G"
[[ $out == *"--upload-limit takes a whole number of MB/s"* ]] || fail "unclear error from init: $out"
"$AP" init --state "$RT/other" --storage "file:$RT/other-replica" --upload-limit 300 --agent-limit 40 > "$RT/other.out" \
  || fail "init with limits failed"
grep -q '^upload_limit_mbps=300$' "$RT/other/appliance.conf" && grep -q '^agent_limit_mbps=40$' "$RT/other/appliance.conf" \
  || fail "init did not store the limits: $(cat "$RT/other/appliance.conf" | grep limit)"

say "Azurite down: the appliance runs, holds uploads and says why"
azurite_stop
# One apply worker: the pool's pick order alone decides whose cycle goes next (with more, both disks'
# backlogs are applied at once: the fleet test checks that).
rpl_appliance_start --rpo 0.5 --upload-limit 500 --agent-limit 400 --apply-workers 1
wait_status 'd["uploads"]["state"] == "held" and d["uploads"]["failed_check"] == "TCP reach"' 30 \
  "status does not show the failed storage check"
status_is 'd["uploads"]["remedy"] and "connect" in d["uploads"]["failed_check_detail"] and d["upload_limit_mbps"] == 500 and d["agent_limit_mbps"] == 400' \
  || fail "status --json lacks the check's detail, remedy or the limits: $("$AP" status --state "$RT/app" --json)"
"$AP" status --state "$RT/app" > "$RT/status.txt" || fail "status failed"
grep -q "uploads: held: storage check 'TCP reach' failed: .*; fix: " "$RT/status.txt" \
  || fail "status text does not show the failed check: $(cat "$RT/status.txt")"
grep -q "upload limits: 500 MB/s in all, 400 MB/s per agent" "$RT/status.txt" \
  || fail "status text does not show the limits: $(cat "$RT/status.txt")"

say "two disks protected: the cache absorbs their cycles, nothing is uploaded"
rpl_agent_register
rpl_loop dev1 32M half
rpl_loop dev2 32M half
rpl_agent_start
"$AG" protect "$dev1" --state "$RT/agent" > /dev/null || fail "protect $dev1 failed"
"$AG" protect "$dev2" --state "$RT/agent" > /dev/null || fail "protect $dev2 failed"
stop_file=$RT/stop-writers
for dev in "$dev1" "$dev2"; do
  ( while [ ! -e "$stop_file" ]; do
      dd if=/dev/urandom of="$dev" bs=4k count=$((RANDOM % 16 + 1)) seek=$((RANDOM % 8000)) oflag=direct conv=notrunc status=none
      sleep 0.05
    done ) &
  CLEANUP_PIDS+=("$!")
done
rpl_wait_cycle "$dev1" 5
rpl_wait_cycle "$dev2" 5
touch "$stop_file"
for pid in "${CLEANUP_PIDS[@]: -2}"; do wait "$pid"; done
status_is 'd["uploads"]["state"] == "held" and len(d["disks"]) == 2 and all(x["last_applied_cycle"] == 0 and x["backlog_cycles"] >= 4 for x in d["disks"])' \
  || fail "while storage is down the backlog should grow and nothing be applied: $("$AP" status --state "$RT/app" --json)"

say "Azurite back: uploads start, the disks take turns"
azurite_restart
wait_status 'd["uploads"]["state"] == "running"' 60 "uploads did not start after Azurite came back"
c1=$(rpl_agent_cycle "$dev1")
c2=$(rpl_agent_cycle "$dev2")
wait_status "all(x['last_applied_cycle'] == x['last_committed_cycle'] for x in d['disks']) and min(x['last_applied_cycle'] for x in d['disks']) >= min($c1, $c2)" 120 \
  "the backlog was not uploaded"
# The applies in the order the appliance's events give them: while both disks had a backlog (at
# least 4 cycles each when uploads started), they must alternate.
"$AP" events --state "$RT/app" > "$RT/events.out" || fail "events failed"
python3 - "$RT/events.out" <<'PY' || fail "the disks did not take turns"
import json, sys
seq = [e["disk_id"] for e in map(json.loads, open(sys.argv[1])) if e["type"] == "applied"]
first = seq[:8]
assert len(set(first)) == 2, first
for a, b in zip(first, first[1:]):
    assert a != b, f"one disk applied twice in a row while the other waited: {first}"
print("first applies alternate:", " ".join(x[:8] for x in first))
PY

say "each disk's newest point restores byte-identical to the disk"
point=$("$AG" checkpoint --wait --state "$RT/agent" | tail -n 1) || fail "checkpoint failed"
[[ $point == rp-* ]] || fail "checkpoint gave '$point'"
wait_status 'all(x["last_applied_cycle"] == x["last_committed_cycle"] and x["last_point"] for x in d["disks"])' 60 \
  "the checkpoint's cycles were not applied"
for dev in "$dev1" "$dev2"; do
  id=$(rpl_disk_id "$dev")
  "$AP" restore --state "$RT/app" --disk "$id" --verify "$dev" > "$RT/verify.out" 2>&1 \
    || fail "restore --verify of $dev: $(cat "$RT/verify.out")"
  cat "$RT/verify.out"
done
echo "e2e_blob_gate: ok"
