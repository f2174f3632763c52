#!/usr/bin/env bash
# e2e_replication.sh - Description: both daemons over TLS on loopback: registration (wrong, foreign
# and reused keys refused, nothing written), initial sync of a 1 GiB loop disk (half data, half
# zeros) byte-identical, then a random writer through 20+ cycles and a checkpoint: byte-identical.
set -u
. "$(dirname "$0")/lib/replication.sh"
rpl_setup

say "init, run the appliance"
rpl_appliance_init
rpl_appliance_start --rpo 0.5

say "registration refusals"
out=$("$AG" register --appliance "127.0.0.1:$RPL_PORT" --key rk1-not-a-key --state "$RT/bad1" 2>&1) && fail "a malformed key was accepted"
[[ $out == *"not a registration key"* ]] || fail "unclear error for a malformed key: $out"
# A key of another appliance pins another certificate: refused before anything is sent.
"$AP" init --state "$RT/other" --storage "file:$RT/other-replica" > "$RT/other.out" || fail "second init failed"
other_key=$(tail -n 1 "$RT/other.out")
out=$("$AG" register --appliance "127.0.0.1:$RPL_PORT" --key "$other_key" --state "$RT/bad2" 2>&1) && fail "a foreign key was accepted"
[[ $out == *"does not match the fingerprint"* ]] || fail "unclear error for a foreign key: $out"
# A mistyped key fails its checksum.
typo=${RPL_KEY:0:20}$( [ "${RPL_KEY:20:1}" = A ] && echo B || echo A )${RPL_KEY:21}
out=$("$AG" register --appliance "127.0.0.1:$RPL_PORT" --key "$typo" --state "$RT/bad3" 2>&1) && fail "a mistyped key was accepted"
[[ $out == *"damaged"* || $out == *"not a registration key"* ]] || fail "unclear error for a mistyped key: $out"
for d in bad1 bad2 bad3; do
  [ ! -e "$RT/$d/agent.conf" ] && [ ! -e "$RT/$d/agent.crt" ] || fail "a refused registration left state in $d"
done

say "register, and the same key again"
rpl_agent_register
grep -q "registered as agent" "$RT/register.out" || fail "register printed: $(cat "$RT/register.out")"
out=$("$AG" register --appliance "127.0.0.1:$RPL_PORT" --key "$RPL_KEY" --state "$RT/bad4" 2>&1) && fail "a used key was accepted twice"
[[ $out == *"used already"* ]] || fail "unclear error for a reused key: $out"
[ ! -e "$RT/bad4/agent.crt" ] || fail "a refused registration left a certificate"
n=$("$AP" status --state "$RT/app" --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["agents"]))')
[ "$n" -eq 1 ] || fail "the appliance knows $n agents, expected 1"

say "a client certificate the appliance did not sign is refused"
agent_id=$(sed -n 's/^agent_id=//p' "$RT/agent/agent.conf")
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj "/CN=$agent_id" \
  -keyout "$RT/forged.key" -out "$RT/forged.crt" 2>/dev/null || fail "openssl could not make a certificate"
echo | timeout 20 openssl s_client -connect "127.0.0.1:$RPL_PORT" -cert "$RT/forged.crt" -key "$RT/forged.key" \
  -tls1_3 -quiet > "$RT/forged.out" 2>&1
wait_until 10 "" grep -q "TLS handshake with .* failed" "$RT/appliance.log"
grep -q "TLS handshake with .* failed" "$RT/appliance.log" || fail "the forged client certificate was not refused"
grep -q "connected from" "$RT/appliance.log" && fail "a session was opened with a forged certificate"

say "commands before the daemon runs say so"
out=$("$AG" status --state "$RT/agent" 2>&1) && fail "status without a daemon exited 0"
[[ $out == *"not running"* ]] || fail "unclear error without a daemon: $out"

say "initial sync of a 1 GiB disk, half data and half zeros"
rpl_loop dev 1G half
rpl_agent_start
"$AG" protect "$dev" --state "$RT/agent" > "$RT/protect.out" || fail "protect failed: $(cat "$RT/protect.out")"
t0=$(date +%s.%N)
rpl_wait_cycle "$dev" 1
t1=$(date +%s.%N)
point=$("$AG" checkpoint "$dev" --wait --state "$RT/agent" | tail -n 1) || fail "checkpoint failed"
[[ $point == rp-* ]] || fail "checkpoint's last line is not a point id: $point"
replica=$(rpl_replica_of "$dev")
cmp "$replica" "$dev" || fail "replica differs from the source after the initial sync"
echo "initial sync: 1 GiB in $(awk -v a="$t0" -v b="$t1" "BEGIN{printf \"%.2f\", b-a}") s"

say "a random writer through 20+ cycles"
start=$(rpl_agent_cycle "$dev")
stop_file=$RT/stop-writer
( while [ ! -e "$stop_file" ]; do
    dd if=/dev/urandom of="$dev" bs=4k count=$((RANDOM % 64 + 1)) seek=$(( (RANDOM * 32768 + RANDOM) % 262000 )) \
       oflag=direct conv=notrunc status=none
    sleep 0.02 # a steady writer, not one that takes a CPU for itself
  done ) &
writer=$!
CLEANUP_PIDS+=("$writer")
rpl_wait_cycle "$dev" $((start + 22))
touch "$stop_file"
wait "$writer"
point2=$("$AG" checkpoint --wait --state "$RT/agent" | tail -n 1) || fail "checkpoint after writes failed"
[[ $point2 == rp-* && $point2 != "$point" ]] || fail "second checkpoint gave '$point2'"
cmp "$replica" "$dev" || fail "replica differs from the source after 20+ cycles of writes"
cycles=$(( $(rpl_agent_cycle "$dev") - start ))

say "restore of the newest point from file: storage"
disk_id=$(basename "$replica" .img)
"$AP" restore --state "$RT/app" --disk "$disk_id" --point "$point2" --out "$RT/restored" > "$RT/restore.out" \
  || fail "restore failed"
cat "$RT/restore.out"
cmp "$RT/restored" "$dev" || fail "the restored image differs from the source"
"$AP" restore --state "$RT/app" --disk "$disk_id" --point "$point2" --verify "$dev" > /dev/null || fail "restore --verify failed"
rm -f "$RT/restored"

say "status of both daemons"
"$AG" status --state "$RT/agent" | grep -q "protected" || fail "agent status does not say protected"
"$AP" status --state "$RT/app" --json > "$RT/status.json" || fail "status --json failed"
mapfile -t v < <(json_field "$RT/status.json" disks.0.state disks.0.last_committed_cycle disks.0.last_applied_cycle disks.0.last_point)
# the next RPO cycle may have committed since the checkpoint: at most one behind
[ "${#v[@]}" -eq 4 ] && [ "${v[0]}" = protected ] && [ $((v[1] - v[2])) -le 1 ] && [ "${v[3]}" != null ] \
  || fail "appliance status is not as expected: $(cat "$RT/status.json")"
echo "e2e_replication: ok ($cycles cycles under writes, points $point $point2)"
