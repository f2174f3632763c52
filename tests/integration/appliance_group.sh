#!/usr/bin/env bash
# appliance_group.sh - Description: an appliance group on Azurite (15 s leases): A makes it with a
# secret file, B joins it (same authority); what is refused says why (a second group, a wrong or
# world-readable secret, --join without one, file: storage, a state directory with an authority of
# its own). An agent registered once, with A and told of B (--member), protects a disk; after
# kill -9 of A it moves to B by itself, B accepts it from the group's records (no new registration),
# takes the disk over when A's lease expires and commits new cycles; a point made through B restores
# byte-identical. A restarted, the agent is sent to A first: A cannot take the lease B renews, so after
# a lease duration it sends the agent on to B, which goes on committing. A revocation at B reaches A.
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
disk_json() { # DIR PYEXPR on the (only) disk of the appliance at DIR ("d")
  "$AP" status --state "$1" --json 2>/dev/null | python3 -c '
import json, sys
ds = json.load(sys.stdin)["disks"]
d = ds[0] if ds else None
sys.exit(0 if d is not None and eval(sys.argv[1]) else 1)' "$2"
}
agent_json() { "$AG" status --state "$RT/agent" --json 2>/dev/null | python3 -c 'import json, sys; d = json.load(sys.stdin); sys.exit(0 if eval(sys.argv[1]) else 1)' "$1"; }
cycle_past() { local c; c=$(rpl_agent_cycle "$1"); [ "${c:-0}" -gt "$2" ]; }
show_logs() { for f in "$RT/appliance.log" "$RT/appB.log" "$RT/agent.log"; do echo "== $f"; tail -25 "$f"; done >&2; }
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

say "an agent registered with A (told of B) protects a disk"
PORT_B=$(free_port) WEB_B=$(free_port)
rpl_appliance_start --rpo 0.5
start_b
(umask 077 && printf '%s\n' "$RPL_KEY" > "$RT/regkey")
"$AG" register --appliance "127.0.0.1:$RPL_PORT" --member "127.0.0.1:$PORT_B" --key-file "$RT/regkey" \
  --state "$RT/agent" > "$RT/register.out" || fail "register failed"
grep -q "^member=127.0.0.1:$PORT_B$" "$RT/agent/agent.conf" || fail "the agent did not keep B's address"
agent_id=$(sed -n 's/^agent_id=//p' "$RT/agent/agent.conf")
rpl_agent_start
rpl_loop dev 48M zero
dd if=/dev/urandom of="$dev" bs=1M count=8 oflag=direct conv=notrunc status=none
"$AG" protect "$dev" --state "$RT/agent" > "$RT/protect.out" || fail "protect failed: $(cat "$RT/protect.out")"
rpl_wait_cycle "$dev" 1
disk_id=$(rpl_disk_id "$dev")
wait_until -i 0.2 30 "A applies the initial sync" disk_json "$RT/app" 'd["last_applied_cycle"] >= 1'
seqA=$(rpl_agent_cycle "$dev")

say "kill -9 of A: the agent moves to B by itself; B takes the disk over when A's lease expires"
kill -9 "$RPL_AP_PID"; wait "$RPL_AP_PID" 2>/dev/null
dd if=/dev/urandom of="$dev" bs=64k count=16 seek=300 oflag=direct conv=notrunc status=none
wait_until -i 0.2 30 "the agent connects to B" agent_json 'd["connected"] and d["appliance_in_use"].endswith(":'"$PORT_B"'")'
grep -q "agent $agent_id: known from the appliance group's records" "$RT/appB.log" \
  || fail "B did not accept the agent from the group's records: $(grep -i "agent $agent_id" "$RT/appB.log" | tail -3)"
grep -q "registered agent" "$RT/appB.log" && fail "the agent registered again at B"
wait_until -i 0.5 $((LEASE + 90)) "B takes over and commits new cycles" disk_json "$RT/appB" \
  'd["last_applied_cycle"] > '"$seqA"' and d["state"] == "protected"'
grep -q "taken over at cycle" "$RT/appB.log" || fail "B did not say it took the disk over"

say "a point through B restores byte-identical"
dd if=/dev/urandom of="$dev" bs=64k count=16 seek=500 oflag=direct conv=notrunc status=none
pointB=$("$AG" checkpoint "$dev" --wait --state "$RT/agent" | tail -n 1) || fail "checkpoint through B failed"
[[ $pointB == rp-* ]] || fail "checkpoint through B gave '$pointB'"
cp --sparse=always "$dev" "$RT/src-B"
wait_until -i 0.2 60 "B applies its point" disk_json "$RT/appB" 'd["last_point"] == "'"$pointB"'"'
"$AP" restore --state "$RT/appB" --disk "$disk_id" --point "$pointB" --verify "$RT/src-B" > "$RT/restoreB.out" 2>&1 \
  || fail "the point restored from B differs from the source: $(cat "$RT/restoreB.out")"

say "A restarted; the agent tries A first: A cannot take B's lease and sends it on to B"
before=$(rpl_agent_cycle "$dev")
kill -9 "$RPL_AG_PID"; wait "$RPL_AG_PID" 2>/dev/null
rpl_appliance_start --rpo 0.5
rpl_agent_start
wait_until -i 0.5 $((LEASE + 60)) "A sends the agent on" grep -q "agent $agent_id: .*it serves this agent; sent on" "$RT/appliance.log"
dd if=/dev/urandom of="$dev" bs=64k count=4 seek=200 oflag=direct conv=notrunc status=none
wait_until -i 0.2 60 "the agent commits with B again" cycle_past "$dev" "$before"
agent_json 'd["appliance_in_use"].endswith(":'"$PORT_B"'")' || fail "the agent is not with B"

say "a revocation at B (configuration manager) reaches A: both refuse the agent"
U=https://127.0.0.1:$WEB_B
curl -sk -o "$RT/login.json" -c "$RT/jar" --data-urlencode "password=$PW" "$U/api/login" || fail "login at B failed"
csrf=$(json_field "$RT/login.json" csrf_token) || fail "no CSRF token: $(cat "$RT/login.json")"
code=$(curl -sk -o "$RT/revoke.out" -w '%{http_code}' -b "$RT/jar" -H "X-CSRF-Token: $csrf" -X POST "$U/api/agents/$agent_id/revoke")
[ "$code" = 200 ] || fail "revoke at B answered $code: $(cat "$RT/revoke.out")"
wait_until -i 0.2 30 "A hears of the revocation" grep -q "agent $agent_id: revoked by another member of the appliance group" "$RT/appliance.log"
wait_until -i 0.2 60 "the agent is refused by both" agent_json 'not d["connected"]'
wait_until -i 0.2 60 "A refuses the agent" grep -q "client certificate for '$agent_id' refused: unknown or revoked agent" "$RT/appliance.log"
echo "appliance_group: ok (group $group, agent $agent_id moved A -> B -> A -> B, point $pointB, revoked at B, refused by A)"
