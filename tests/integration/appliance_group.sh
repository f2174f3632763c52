#!/usr/bin/env bash
# appliance_group.sh - Description: an appliance group on Azurite (15 s leases): A makes it with a
# secret file, B joins it (same authority); what is refused says why (a second group, a wrong or
# world-readable secret, --join without one, file: storage, a state directory with an authority of
# its own). Three agents, each registered once with A, two told of B (--member), the third learning
# B's address from A (MEMBERS), protect a loop disk each under a writer; after kill -9 of A they move to B by themselves, B accepts them from the
# group's records (no new registration), takes the disks over when A's leases expire and the agents
# replay what the blobs miss (no resync: nothing compared, nothing read back); a final point of each
# disk through B restores byte-identical. A restarted, an agent is sent to A first: A cannot take the
# lease B renews, so after a lease duration it sends the agent on to B, which goes on committing. A
# revocation at B reaches A; the agent's record, which the storage refused to B at the revocation
# (leased away), is written again by B's next sweep.
set -u
. "$(dirname "$0")/lib/replication.sh"
wait_until_report() { show_logs; }
rpl_setup 600
rpl_azurite_start --inMemoryPersistence
LEASE=15
export RPL_TEST_MEMBERS_SWEEP_S=1

init_member() { # DIR [init options]: the init's output in DIR.init
  "$AP" init --state "$1" --storage "$AZ_CONNSTR" --container replicas --private-dns-zone "$AZ_ZONE" \
    --ca-file "$AZ_CA" --lease-duration $LEASE "${@:2}" > "$1.init" 2>&1
}
refused() { # WHAT PATTERN DIR [init options]: init must fail and say PATTERN
  init_member "${@:3}" && fail "$1 was accepted: $(cat "$3.init")"
  grep -q -- "$2" "$3.init" || fail "$1: the error does not say '$2': $(cat "$3.init")"
}
show_logs() { for f in "$RT/appliance.log" "$RT/appB.log" "$RT"/agent?.log; do echo "== $f"; tail -25 "$f"; done >&2; }
start_b() {
  "$AP" run --state "$RT/appB" --listen "127.0.0.1:$PORT_B" --web "127.0.0.1:$WEB_B" --points crash=off,app=off --rpo 0.5 >> "$RT/appB.log" 2>&1 &
  PID_B=$!
  CLEANUP_PIDS+=("$PID_B")
  wait_until -i 0.1 10 "B did not come up" b_up
}
b_up() { "$AP" status --state "$RT/appB" > /dev/null 2>&1; }

secret=$RT/group.secret PW=group-test-password-1
(umask 077 && printf '%s' "$PW" > "$RT/admin-pw")
(umask 077 && head -c 48 /dev/urandom | base64 > "$secret" && head -c 48 /dev/urandom | base64 > "$RT/wrong.secret")

say "A makes the appliance group; what init refuses"
init_member "$RT/app" --group-secret-file "$secret" || fail "A's init failed: $(cat "$RT/app.init")"
grep -q "^appliance group: [0-9a-f-]\{36\} (made" "$RT/app.init" || fail "A's init does not name the group: $(cat "$RT/app.init")"
group=$(sed -n 's/^appliance group: \([0-9a-f-]*\) .*/\1/p' "$RT/app.init")
RPL_KEY=$(tail -n 1 "$RT/app.init")
refused "a second group in the same container" "holds an appliance group already" "$RT/c" --group-secret-file "$secret"
refused "a join with another secret" "does not open with this secret" "$RT/b" --join --group-secret-file "$RT/wrong.secret"
cp "$secret" "$RT/open.secret" && chmod 644 "$RT/open.secret"
refused "a world-readable secret file" "readable or writable by others" "$RT/b" --join --group-secret-file "$RT/open.secret"
refused "--join without the secret" "needs --group-secret-file" "$RT/b" --join
"$AP" init --state "$RT/f" --storage "file:$RT/replica-f" --group-secret-file "$secret" > "$RT/f.init" 2>&1 \
  && fail "a group on file: storage was made"
grep -q "file: storage cannot hold a group" "$RT/f.init" || fail "file: storage: $(cat "$RT/f.init")"
init_member "$RT/own" || fail "a plain init failed: $(cat "$RT/own.init")"
refused "a join over an authority of its own" "has an authority of its own" "$RT/own" --join --group-secret-file "$secret"
[ -e "$RT/b/appliance.crt" ] && fail "a refused join left an authority in its state directory"

say "B joins: the same authority"
init_member "$RT/appB" --join --group-secret-file "$secret" --admin-password-file "$RT/admin-pw" || fail "B's join failed: $(cat "$RT/appB.init")"
grep -q "^appliance group: $group (joined" "$RT/appB.init" || fail "B's init does not name the group: $(cat "$RT/appB.init")"
cmp -s "$RT/app/appliance.crt" "$RT/appB/appliance.crt" || fail "B's authority is not the group's"
grep -q "BEGIN" "$RT/appB/appliance.key" || fail "B has no authority key"

say "three agents registered with A (told of B) protect a disk each, under writes"
PORT_B=$(free_port) WEB_B=$(free_port)
# A uploads at 1 MB/s, less than the writers write (3 x 640 KB/s); before it dies Azurite is stopped
# as well, so that however busy the machine, its cache then holds cycles it acknowledged and never
# uploaded, which the agents must replay to B.
rpl_appliance_start --rpo 0.5 --upload-limit 1
start_b
PIN=$MOBILITY_AGENT_BPF_PIN_DIR
for i in 2 3; do CLEANUP_PATHS+=("$PIN-$i" "/run/mobility-agent/slots/sys_fs_bpf_rpl-e2e-$$-$i"); done
cleanup_loop_hook() {
  "$AG" cbt stop "$1" --state "$RT/agent1" >/dev/null 2>&1
  for i in 2 3; do MOBILITY_AGENT_BPF_PIN_DIR=$PIN-$i "$AG" cbt stop "$1" --state "$RT/agent$i" >/dev/null 2>&1; done
  return 0
}
ag() { # N COMMAND [ARGS]: mobility-agent COMMAND of agent N (its own state and pin directories)
  local i=$1 pin=$PIN
  [ "$i" = 1 ] || pin=$PIN-$i
  MOBILITY_AGENT_BPF_PIN_DIR=$pin "$AG" "${@:2}" --state "$RT/agent$i"
}
ag_json() { ag "$1" status --json 2>/dev/null | python3 -c 'import json, sys; d = json.load(sys.stdin); sys.exit(0 if eval(sys.argv[1]) else 1)' "$2"; }
ag_cycle() { ag "$1" status --json 2>/dev/null | json_field -d 0 - "disks.0.last_cycle"; }
ag_start() {
  local pin=$PIN
  [ "$1" = 1 ] || pin=$PIN-$1
  MOBILITY_AGENT_BPF_PIN_DIR=$pin "$AG" run --state "$RT/agent$1" >> "$RT/agent$1.log" 2>&1 &
  AG_PID[$1]=$!
  CLEANUP_PIDS+=("${AG_PID[$1]}")
  wait_until -i 0.05 10 "agent $1 did not come up" ag_up "$1"
}
ag_up() { ag "$1" status > /dev/null 2>&1; }
writer() { # DEV: 64 KiB random writes over the first 32 MiB, ten a second, until killed
  while :; do
    dd if=/dev/urandom of="$1" bs=64k count=1 seek=$((RANDOM % 512)) oflag=direct conv=notrunc status=none
    sleep 0.1
  done
}
declare -a AG_PID DEV ID AGENT WR
for i in 1 2 3; do
  [ "$i" = 1 ] || { init_member "$RT/app" > /dev/null || fail "a new key from A failed: $(cat "$RT/app.init")"; RPL_KEY=$(tail -n 1 "$RT/app.init"); }
  (umask 077 && printf '%s\n' "$RPL_KEY" > "$RT/regkey$i")
  member=(--member "127.0.0.1:$PORT_B")
  [ "$i" = 3 ] && member=() # agent 3 learns B's address from A (MEMBERS)
  ag "$i" register --appliance "127.0.0.1:$RPL_PORT" "${member[@]}" --key-file "$RT/regkey$i" \
    > "$RT/register$i.out" || fail "agent $i: register failed"
  [ "$i" = 3 ] || grep -q "^member=127.0.0.1:$PORT_B$" "$RT/agent$i/agent.conf" || fail "agent $i did not keep B's address"
  AGENT[$i]=$(sed -n 's/^agent_id=//p' "$RT/agent$i/agent.conf")
  ag_start "$i"
  rpl_loop d 48M zero
  DEV[$i]=$d
  dd if=/dev/urandom of="$d" bs=1M count=1 seek=40 oflag=direct conv=notrunc status=none
  ag "$i" protect "$d" > "$RT/protect$i.out" || fail "agent $i: protect failed: $(cat "$RT/protect$i.out")"
done
for i in 1 2 3; do
  wait_until -i 0.2 60 "agent $i's initial sync" ag_json "$i" 'd["disks"][0]["last_cycle"] >= 1'
  ID[$i]=$(ag "$i" status --json | json_field - disks.0.disk_id)
  writer "${DEV[$i]}" & WR[$i]=$!
  CLEANUP_PIDS+=("${WR[$i]}")
done
stored_all() {
  "$AP" status --state "$RT/app" --json | python3 -c '
import json, sys
ds = json.load(sys.stdin)["disks"]
sys.exit(0 if len(ds) == 3 and all(d["last_applied_cycle"] >= 2 for d in ds) else 1)'
}
wait_until -i 0.2 60 "A applies a cycle after each initial sync" stored_all
backlog_all() { # every disk has cycles A acknowledged (committed) and has not uploaded (applied)
  "$AP" status --state "$RT/app" --json | python3 -c '
import json, sys
ds = json.load(sys.stdin)["disks"]
sys.exit(0 if len(ds) == 3 and all(d["last_committed_cycle"] >= d["last_applied_cycle"] + 2 for d in ds) else 1)'
}
wait_until -i 0.2 30 "agent 3 learns B's address from A" grep -q "^member=127.0.0.1:$PORT_B$" "$RT/agent3/agent.conf"
# Azurite stopped: A's uploads wait while it goes on acknowledging cycles into its cache. Two cycles
# behind at least: a request A sent before the stop may still complete after it (A dead by then),
# one cycle at most. kill -9 (CLEANUP_PIDS) ends a stopped Azurite if the test fails meanwhile.
CLEANUP_PIDS+=("$AZ_PID")
kill -STOP "$AZ_PID"
wait_until -i 0.2 60 "A holds acknowledged cycles it has not uploaded" backlog_all

say "kill -9 of A (and of agent 2, which then starts again knowing nothing of A's cycles): the agents move to B"
seqA[2]=$(ag_cycle 2)
kill -9 "${AG_PID[2]}"; wait "${AG_PID[2]}" 2>/dev/null
kill -9 "$RPL_AP_PID"; wait "$RPL_AP_PID" 2>/dev/null
kill -CONT "$AZ_PID"
for i in 1 3; do seqA[$i]=$(ag_cycle "$i"); done
t_kill=$SECONDS
ag_start 2
for i in 1 2 3; do
  wait_until -i 0.2 30 "agent $i connects to B" ag_json "$i" 'd["connected"] and d["appliance_in_use"].endswith(":'"$PORT_B"'")'
  grep -q "agent ${AGENT[$i]}: known from the appliance group's records" "$RT/appB.log" \
    || fail "B did not accept agent $i from the group's records: $(grep -i "agent ${AGENT[$i]}" "$RT/appB.log" | tail -3)"
done
grep -q "registered agent" "$RT/appB.log" && fail "an agent registered again at B"
b_past() { # N: B applied a cycle of agent N's disk after the one A had acknowledged last
  "$AP" status --state "$RT/appB" --json | python3 -c '
import json, sys
d = [d for d in json.load(sys.stdin)["disks"] if d["disk_id"] == sys.argv[1]]
sys.exit(0 if d and d[0]["last_applied_cycle"] > int(sys.argv[2]) and d[0]["state"] == "protected" else 1)' "${ID[$1]}" "${seqA[$1]}"
}
for i in 1 2 3; do
  wait_until -i 0.5 $((LEASE + 60)) "B commits new cycles of agent $i's disk" b_past "$i"
done
took=$((SECONDS - t_kill))
[ "$(grep -c "taken over at cycle" "$RT/appB.log")" -eq 3 ] || fail "B did not take the three disks over: $(grep "taken over" "$RT/appB.log")"
for i in 1 3; do
  grep -q "replaying for the appliance that took the disk over at cycle [0-9]*: [1-9][0-9]* extent" "$RT/agent$i.log" \
    || fail "agent $i did not replay the cycles A never uploaded: $(grep -i "resync\|replay" "$RT/agent$i.log" | tail -3)"
  grep -q "resync by comparison\|comparing the whole disk" "$RT/agent$i.log" \
    && fail "agent $i's disk was resynced: $(grep "resync by comparison\|comparing the whole disk" "$RT/agent$i.log" | head -2)"
done
# Agent 2 restarted: the blocks of A's cycles are not known there; its whole disk is sent again.
grep -q "are not all known here (acknowledged before this agent started)" "$RT/agent2.log" \
  || fail "agent 2 did not refuse the replay: $(grep -i "resync\|replay" "$RT/agent2.log" | tail -3)"
resyncs_b() { # the disk ids of B's committed resync cycles
  "$AP" events --state "$RT/appB" --since 0 | python3 -c '
import json, sys
for e in map(json.loads, sys.stdin):
    if e["type"] == "committed" and e["kind"] == "resync":
        print(e["disk_id"])'
}
resyncs_b > "$RT/resyncs" || fail "cannot read B's events"
grep -qx "${ID[2]}" "$RT/resyncs" || fail "B did not resync agent 2's disk (resync cycles: $(cat "$RT/resyncs"))"
for i in 1 3; do grep -qx "${ID[$i]}" "$RT/resyncs" && fail "B resynced agent $i's disk, which replayed"; done

say "a final point of each disk through B restores byte-identical"
for i in 1 2 3; do kill "${WR[$i]}"; wait "${WR[$i]}" 2>/dev/null; done
for i in 1 2 3; do
  point[$i]=$(ag "$i" checkpoint "${DEV[$i]}" --wait | tail -n 1) || fail "agent $i: checkpoint through B failed"
  [[ ${point[$i]} == rp-* ]] || fail "agent $i: checkpoint through B gave '${point[$i]}'"
  cp --sparse=always "${DEV[$i]}" "$RT/src$i"
done
b_point() { # N: B applied agent N's point
  "$AP" status --state "$RT/appB" --json | json_field - "disks.[disk_id=${ID[$1]}].last_point" | grep -qx "${point[$1]}"
}
for i in 1 2 3; do
  wait_until -i 0.2 60 "B applies agent $i's point" b_point "$i"
done
for i in 1 2 3; do
  "$AP" restore --state "$RT/appB" --disk "${ID[$i]}" --point "${point[$i]}" --verify "$RT/src$i" > "$RT/restore$i.out" 2>&1 \
    || fail "agent $i's point restored from B differs from its source: $(cat "$RT/restore$i.out")"
done

say "A restarted; agent 1 tries A first: A cannot take B's lease and sends it on to B"
before=$(ag_cycle 1)
kill -9 "${AG_PID[1]}"; wait "${AG_PID[1]}" 2>/dev/null
rpl_appliance_start --rpo 0.5
ag_start 1
wait_until -i 0.5 $((LEASE + 60)) "A sends agent 1 on" grep -q "agent ${AGENT[1]}: .*it serves this agent; sent on" "$RT/appliance.log"
dd if=/dev/urandom of="${DEV[1]}" bs=64k count=4 seek=200 oflag=direct conv=notrunc status=none
ag1_past() { [ "$(ag_cycle 1)" -gt "$before" ]; }
wait_until -i 0.2 60 "agent 1 commits with B again" ag1_past
ag_json 1 'd["appliance_in_use"].endswith(":'"$PORT_B"'")' || fail "agent 1 is not with B"

say "a revocation at B (configuration manager) reaches A: both refuse the agent"
U=https://127.0.0.1:$WEB_B
curl -sk -o "$RT/login.json" -c "$RT/jar" --data-urlencode "password=$PW" "$U/api/login" || fail "login at B failed"
csrf=$(json_field "$RT/login.json" csrf_token) || fail "no CSRF token: $(cat "$RT/login.json")"
# The agent's record is leased away meanwhile: B's write of it is refused by the storage, and B
# writes it again at a sweep once the lease is broken.
export BLOB_TEST_CONNSTR=$AZ_CONNSTR BLOB_TEST_ZONE=$AZ_ZONE BLOB_TEST_CA=$AZ_CA
BT=$B/tests/blob_tool
REC=appliance-group/agents/${AGENT[1]}.conf
record_says() { "$BT" download replicas "$REC" "$RT/record" > /dev/null 2>&1 && grep -qx "$1" "$RT/record"; }
"$BT" lease replicas "$REC" acquire 60 > "$RT/reclease.out" 2>&1 || fail "cannot lease agent 1's record: $(cat "$RT/reclease.out")"
code=$(curl -sk -o "$RT/revoke.out" -w '%{http_code}' -b "$RT/jar" -H "X-CSRF-Token: $csrf" -X POST "$U/api/agents/${AGENT[1]}/revoke")
[ "$code" = 200 ] || fail "revoke at B answered $code: $(cat "$RT/revoke.out")"
wait_until -i 0.2 30 "B says the record was not written" grep -q "agent ${AGENT[1]}: its record in the appliance group was not written" "$RT/appB.log"
record_says "revoked=0" || fail "agent 1's leased record changed: $(cat "$RT/record")"
"$BT" lease replicas "$REC" break > "$RT/recbreak.out" 2>&1 || fail "cannot break the record's lease: $(cat "$RT/recbreak.out")"
wait_until -i 0.2 30 "B writes agent 1's record again" record_says "revoked=1"
grep -q "agent ${AGENT[1]}: writing its record in the appliance group again" "$RT/appB.log" || fail "B's sweep did not say it wrote the record again"
wait_until -i 0.2 30 "A hears of the revocation" grep -q "agent ${AGENT[1]}: revoked by another member of the appliance group" "$RT/appliance.log"
wait_until -i 0.2 60 "agent 1 is refused by both" ag_json 1 'not d["connected"]'
wait_until -i 0.2 60 "A refuses agent 1" grep -q "client certificate for '${AGENT[1]}' refused: unknown or revoked agent" "$RT/appliance.log"
echo "appliance_group: ok (group $group; 3 agents moved to B and replayed, B committing ${took} s after kill -9 of A with a ${LEASE} s lease; points ${point[*]}; agent 1 sent on by A; its revocation at B refused by A, its record written again by a sweep)"
