#!/usr/bin/env bash
# appliance_keys.sh - Description: the appliance's keys as an attacker would look for them. A newer
# registration key revokes the unused one before it; an expired key registers nobody; keys are kept
# only as hashes (none in the state directory); the agents' listener serves a certificate the
# authority issued (renewed while it runs: made short-lived here), and the authority's private key is
# in the memory of the signer process alone, never the daemon's; an agent's certificate (made short-lived here) is renewed over its session,
# the agent goes on replicating with the new one, and the certificate before it is refused from
# then on.
set -u
. "$(dirname "$0")/lib/replication.sh"
rpl_setup 240
command -v python3 >/dev/null || skip "python3 missing (scripts/setup.sh installs it)"

# catalog SQL: one statement on the appliance's catalog (it is open in the daemon: WAL, busy wait).
catalog() {
  python3 - "$RT/app/catalog.db" "$1" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], timeout=10)
rows = db.execute(sys.argv[2]).fetchall()
db.commit()
for r in rows:
    print(*r)
PY
}
fingerprint() { echo "sha256:$(openssl x509 -in "$1" -outform DER | sha256sum | cut -d' ' -f1)"; }
register_refused() { # register_refused KEY PATTERN: the registration fails, saying PATTERN
  local out
  out=$(printf '%s\n' "$1" | "$AG" register --appliance "127.0.0.1:$RPL_PORT" --key-file - --state "$RT/refused" 2>&1) \
    && fail "a registration with a $2 key succeeded"
  [[ $out == *"$2"* ]] || fail "the refusal of a $2 key does not say so: $out"
}

say "init twice: the second key revokes the first; --key-ttl is checked and kept"
out=$("$AP" init --state "$RT/app" --storage "file:$RT/replica" --key-ttl 1m 2>&1) && fail "init accepted --key-ttl 1m"
[[ $out == *"5m to 30d"* ]] || fail "an out-of-range --key-ttl is refused without the range: $out"
"$AP" init --state "$RT/app" --storage "file:$RT/replica" --key-ttl 2h >"$RT/init1.out" || fail "init failed"
key1=$(tail -n 1 "$RT/init1.out")
grep -q "valid until .*shown only now" "$RT/init1.out" || fail "init does not say how long the key is valid: $(cat "$RT/init1.out")"
grep -qx "key_ttl=2h" "$RT/app/appliance.conf" || fail "--key-ttl 2h is not in the settings"
"$AP" init --state "$RT/app" --storage "file:$RT/replica" --key-ttl 2h >"$RT/init2.out" || fail "init again failed"
key2=$(tail -n 1 "$RT/init2.out")
[[ $key1 == rk1-* && $key2 == rk1-* && $key1 != "$key2" ]] || fail "init did not print two keys: $key1 / $key2"
RPL_PORT=$(free_port)
export RPL_TEST_AGENT_CERT_SECONDS=60  # renewed 40 s into its life
export RPL_TEST_SERVER_CERT_SECONDS=60 # the listener's too
rpl_appliance_start
register_refused "$key1" "revoked"

say "an expired key registers nobody"
now=$(date +%s)
catalog "UPDATE registration_keys SET expires_time = $((now - 1)) WHERE used = 0 AND revoked = 0"
register_refused "$key2" "expired"

say "a fresh key registers, read from standard input; no key is kept in clear"
"$AP" init --state "$RT/app" --storage "file:$RT/replica" --key-ttl 2h >"$RT/init3.out" || fail "init failed"
RPL_KEY=$(tail -n 1 "$RT/init3.out")
printf '%s\n' "$RPL_KEY" | "$AG" register --appliance "127.0.0.1:$RPL_PORT" --key-file - --state "$RT/agent" \
  >"$RT/register.out" 2>&1 || fail "register from stdin failed: $(cat "$RT/register.out")"
for k in "$key1" "$key2" "$RPL_KEY"; do
  ! grep -rqF "$k" "$RT/app" || fail "the state directory holds a registration key in clear"
done
[ ! -e "$RT/app/registration.key" ] || fail "the clear-text key file of older versions is still there"
[ "$(catalog "SELECT count(*) FROM registration_keys")" = 3 ] || fail "the catalog does not hold the three keys' hashes"

say "the listener's certificate is issued by the authority; its key lives only in the signer"
served() { openssl s_client -connect "127.0.0.1:$RPL_PORT" -showcerts </dev/null 2>/dev/null | awk '/BEGIN CERT/,/END CERT/'; }
served >"$RT/chain.pem"
first_served=$(fingerprint "$RT/chain.pem")
[ "$(fingerprint "$RT/chain.pem")" = "$(fingerprint "$RT/app/server.crt")" ] || fail "the listener does not serve server.crt"
[ "$(fingerprint "$RT/chain.pem")" != "$(fingerprint "$RT/app/appliance.crt")" ] || fail "the listener serves the authority itself"
openssl verify -CAfile "$RT/app/appliance.crt" -purpose sslserver "$RT/chain.pem" >/dev/null \
  || fail "the listener's certificate does not verify against the authority"
signer=$(pgrep -P "$RPL_AP_PID" -x rpl-signer) || fail "the appliance runs no signer process"
# in_memory PID FILE: the key's base64 body (its second PEM line) is in PID's readable memory.
in_memory() {
  python3 - "$1" "$2" <<'PY'
import re, sys
pid, pem = sys.argv[1], open(sys.argv[2]).read().splitlines()
needle = pem[1].encode()
with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
    for line in maps:
        m = re.match(r"([0-9a-f]+)-([0-9a-f]+) r", line)
        if not m or "[vvar]" in line or "[vsyscall]" in line:
            continue
        start, end = int(m.group(1), 16), int(m.group(2), 16)
        try:
            mem.seek(start)
            if needle in mem.read(end - start):
                sys.exit(0)
        except (OSError, ValueError, OverflowError):
            pass
sys.exit(1)
PY
}
in_memory "$signer" "$RT/app/appliance.key" || fail "the signer does not hold the authority's key (the check finds nothing)"
! in_memory "$RPL_AP_PID" "$RT/app/appliance.key" || fail "the authority's private key is in the daemon's memory"

say "protect a disk; the agent's certificate is renewed over its session and replication goes on"
rpl_loop DEV 32M random
cp "$RT/agent/agent.crt" "$RT/old.crt"
cp "$RT/agent/agent.key" "$RT/old.key"
old_fp=$(fingerprint "$RT/old.crt")
[ "$(catalog "SELECT cert_fingerprint FROM agents")" = "$old_fp" ] || fail "the catalog does not name the agent's certificate"
rpl_agent_start
"$AG" protect "$DEV" --state "$RT/agent" >/dev/null || fail "protect failed"
rpl_wait_cycle "$DEV" 1
renewed() { [ "$(fingerprint "$RT/agent/agent.crt")" != "$old_fp" ]; }
wait_until 120 "the agent's certificate was not renewed" renewed
in_use() { [ "$(catalog "SELECT cert_fingerprint FROM agents")" != "$old_fp" ]; }
wait_until 60 "the renewed certificate was not put in use" in_use
ls "$RT/agent" | grep -q '\.next$' && fail "a renewal left its .next files behind"
openssl verify -CAfile "$RT/app/appliance.crt" -purpose sslclient "$RT/agent/agent.crt" >/dev/null \
  || fail "the renewed certificate is not the authority's client certificate"
[ "$(openssl x509 -in "$RT/agent/agent.crt" -noout -subject)" = "$(openssl x509 -in "$RT/old.crt" -noout -subject)" ] \
  || fail "the renewed certificate names another agent"
after=$(($(rpl_agent_cycle "$DEV") + 1))
dd if=/dev/urandom of="$DEV" bs=1M count=4 seek=8 conv=fsync status=none
"$AG" checkpoint "$DEV" --state "$RT/agent" --wait >/dev/null || fail "checkpoint after the renewal failed"
rpl_wait_cycle "$DEV" "$after"
cmp "$DEV" "$(rpl_replica_of "$DEV")" || fail "the replica differs from the disk after the renewal"

say "the listener's certificate is renewed while the appliance runs; the agent reconnects to it"
served_renewed() { served >"$RT/chain2.pem" && [ "$(fingerprint "$RT/chain2.pem")" != "$first_served" ]; }
wait_until 90 "the listener's certificate was not renewed while running" served_renewed
openssl verify -CAfile "$RT/app/appliance.crt" -purpose sslserver "$RT/chain2.pem" >/dev/null \
  || fail "the listener's renewed certificate does not verify against the authority"
kill "$RPL_AG_PID"
wait "$RPL_AG_PID" 2>/dev/null
rpl_agent_start
after=$(($(rpl_agent_cycle "$DEV") + 1))
dd if=/dev/urandom of="$DEV" bs=1M count=2 seek=20 conv=fsync status=none
"$AG" checkpoint "$DEV" --state "$RT/agent" --wait >/dev/null || fail "checkpoint after the listener's renewal failed"
rpl_wait_cycle "$DEV" "$after"
cmp "$DEV" "$(rpl_replica_of "$DEV")" || fail "the replica differs from the disk after the listener's renewal"

say "the certificate before the renewal is refused"
mkdir -m 700 "$RT/old"
grep -Ev '^disk' "$RT/agent/agent.conf" >"$RT/old/agent.conf"
cp "$RT/old.crt" "$RT/old/agent.crt"
cp "$RT/old.key" "$RT/old/agent.key"
"$AG" run --state "$RT/old" >>"$RT/old.log" 2>&1 &
CLEANUP_PIDS+=("$!")
refused() { "$AG" status --state "$RT/old" --json 2>/dev/null | grep -q "replaced by a renewed one"; }
wait_until 30 "an agent with the retired certificate was not refused as replaced: $(tail -3 "$RT/old.log")" refused
kill "$!" 2>/dev/null
echo "appliance_keys: ok (revoked and expired keys refused, only hashes kept, the authority's key only in the signer, certificate $old_fp renewed and retired)"
