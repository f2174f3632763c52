#!/usr/bin/env bash
# appliance_damaged_state.sh - Description: one disk's cache journal damaged (its folder replaced by a
# file) and another's replica unreadable (its image replaced by a directory) while the appliance is
# stopped: it starts again, says which disks it cannot serve and why (status, text and JSON), and
# the third disk goes on replicating to an identical replica. Repaired (the journal folder and the
# image removed) and restarted, the two disks are resynced to identical replicas by themselves.
set -u
. "$(dirname "$0")/lib/replication.sh"
rpl_setup

rpl_appliance_init
rpl_appliance_start --rpo 1
rpl_agent_register
rpl_agent_start
rpl_loop da 32M random
rpl_loop db 32M random
rpl_loop dc 32M random
for d in "$da" "$db" "$dc"; do
  "$AG" protect "$d" --state "$RT/agent" >/dev/null || fail "protect $d failed"
done
for d in "$da" "$db" "$dc"; do rpl_wait_cycle "$d" 1; done
ida=$(rpl_disk_id "$da"); idb=$(rpl_disk_id "$db"); idc=$(rpl_disk_id "$dc")

kill "$RPL_AP_PID"; wait "$RPL_AP_PID" 2>/dev/null
rm -rf "$RT/app/journal/$ida" && echo "not a journal" > "$RT/app/journal/$ida"
rm -f "$RT/replica/$idb.img" && mkdir "$RT/replica/$idb.img"
rpl_appliance_start --rpo 1

# The healthy disk replicates on: new data, a point, an identical replica.
c=$(rpl_agent_cycle "$dc")
dd if=/dev/urandom of="$dc" bs=1M count=4 seek=8 oflag=direct conv=notrunc status=none || fail "cannot write $dc"
rpl_wait_cycle "$dc" $((c + 2))
"$AG" checkpoint "$dc" --wait --state "$RT/agent" > "$RT/point.out" || fail "checkpoint of the healthy disk failed: $(cat "$RT/point.out")"
cmp "$dc" "$(rpl_replica_of "$dc")" || fail "the healthy disk's replica differs"

"$AP" status --state "$RT/app" --json > "$RT/status.json" || fail "status failed"
"$AP" status --state "$RT/app" > "$RT/status.txt" || fail "status (text) failed"
python3 - "$RT/status.json" "$ida" "$idb" "$idc" <<'PY' || fail "status does not say which disks are not served: $(cat "$RT/status.txt")"
import json, sys
st, ida, idb, idc = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3], sys.argv[4]
d = {x["disk_id"]: x for x in st["disks"]}
assert d[idc]["served"] and d[idc]["state"] == "protected", d[idc]
for i, what in ((ida, "journal"), (idb, "")):
    assert not d[i]["served"] and d[i]["state"] == "error", d[i]
    assert d[i]["reason"] and what in d[i]["reason"], d[i]
PY
grep -q "not served" "$RT/status.txt" || fail "the text status does not say a disk is not served"

kill "$RPL_AP_PID"; wait "$RPL_AP_PID" 2>/dev/null
rm -f "$RT/app/journal/$ida"
rmdir "$RT/replica/$idb.img"
rpl_appliance_start --rpo 1
same() { cmp -s "$1" "$(rpl_replica_of "$1")"; }
wait_until 120 "the repaired disk $da was not resynced: $("$AP" status --state "$RT/app")" same "$da"
wait_until 120 "the repaired disk $db was not resynced: $("$AP" status --state "$RT/app")" same "$db"
all_protected() { "$AP" status --state "$RT/app" --json | python3 -c '
import json, sys
d = json.load(sys.stdin)["disks"]
sys.exit(0 if len(d) == 3 and all(x["served"] and x["state"] == "protected" for x in d) else 1)'; }
wait_until 120 "the repaired disks did not leave the error state: $("$AP" status --state "$RT/app")" all_protected
echo "appliance_damaged_state: ok"
