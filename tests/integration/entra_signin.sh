#!/usr/bin/env bash
# entra_signin.sh - Description: storage sign-in as an Entra ID service principal, against a local
# HTTPS token endpoint (tests/tools/fake_entra.py: verifies the client secret or the certificate-
# signed assertion, refuses wrong ones, hands out tokens living 305 s so that the client's 5-minute
# margin refreshes them every few seconds) and Azurite taking bearer tokens (--oauth basic): check
# passes and names the failing step for a wrong secret, an unregistered certificate, an
# unreachable endpoint, a proxy refusing the token request (and not used once the bypass list
# names the endpoint's network) and storage refusing the principal (403
# AuthorizationPermissionMismatch from tests/tools/fault_proxy.py --deny-bearer, as for a principal
# without a data role); a disk replicates end to end with the secret, then (re-init) a second disk
# with the certificate, both byte-identical in their page blobs, with tokens refreshed (counted at
# the endpoint); the secret and the key never appear in the settings, output or logs.
set -u
. "$(dirname "$0")/lib/replication.sh"
rpl_setup 400
rpl_azurite_start --inMemoryPersistence
. "$(dirname "$0")/lib/fault_proxy.sh"
. "$(dirname "$0")/lib/tinyproxy.sh"
export BLOB_TEST_CONNSTR=$AZ_CONNSTR BLOB_TEST_ZONE=$AZ_ZONE BLOB_TEST_CA=$AZ_CA
BT=$B/tests/blob_tool
TENANT=ab1f708d-50f6-404c-a006-d71b2ac7a606
CLIENT=3f2a9c4e-1b7d-4e8a-9c6f-0d2e4b6a8c10
STORAGE="AccountName=devstoreaccount1;BlobEndpoint=https://$AZ_HOST:$AZ_PORT"

say "credentials: a client secret file and a client certificate with its key (one PEM)"
SECRET="s3cr3t~Q8.$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
(umask 077 && printf '%s\n' "$SECRET" > "$RT/secret" && printf 'wrong-%s\n' "$SECRET" > "$RT/wrong-secret")
make_client_cert() { # make_client_cert NAME: RT/NAME.pem = certificate + RSA key
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=replication-appliance $1" \
    -keyout "$RT/$1.key" -out "$RT/$1.crt" 2>/dev/null || fail "openssl could not make the client certificate"
  (umask 077 && cat "$RT/$1.crt" "$RT/$1.key" > "$RT/$1.pem")
}
make_client_cert client
make_client_cert other

say "the token endpoint (HTTPS with the test CA, on a free loopback port)"
EP_PORT=$(free_port)
python3 "$RPL_SOURCE_DIR/tests/tools/fake_entra.py" --port "$EP_PORT" --cert "$AZ_CERT" --key "$AZ_KEY" \
  --tenant "$TENANT" --client-id "$CLIENT" --secret-file "$RT/secret" --client-cert "$RT/client.crt" \
  --expires-in 305 --log "$RT/entra.log" 2> "$RT/entra.err" &
az_track $!
ep_ready() { curl -s --noproxy "*" -o /dev/null --cacert "$AZ_CA" "https://127.0.0.1:$EP_PORT/ready"; }
wait_until 20 "the token endpoint did not start: $(cat "$RT/entra.err" 2>/dev/null)" ep_ready
AUTHORITY=https://127.0.0.1:$EP_PORT
tokens() { grep -c "kind=$1 -> 200" "$RT/entra.log" 2>/dev/null; }

# init_sp NAME CREDENTIAL-OPTION FILE [AUTHORITY [INIT-OPTIONS...]]: init state RT/NAME as the service principal
init_sp() {
  "$AP" init --state "$RT/$1" --storage "$STORAGE" --tenant-id "$TENANT" --client-id "$CLIENT" "$2" "$3" \
    --authority-host "${4:-$AUTHORITY}" "${@:5}" --private-dns-zone "$AZ_ZONE" --ca-file "$AZ_CA" > "$RT/init-$1.out" 2>&1 \
    || fail "init $1 failed: $(cat "$RT/init-$1.out")"
  grep -q "authorized by service principal" "$RT/init-$1.out" || fail "init $1 does not say how it signs in: $(cat "$RT/init-$1.out")"
}
# check_sp NAME RC: check on state RT/NAME exits RC; its output in $out
check_sp() {
  out=$("$AP" check --state "$RT/$1" 2>&1); local rc=$?
  [ "$rc" -eq "$2" ] || { echo "$out"; fail "check $1 exited $rc, expected $2"; }
}
expect_line() { # expect_line PASS|FAIL NAME PHRASE
  grep -q "^$1  $2: .*$3" <<<"$out" || { echo "$out"; fail "no '$1  $2: ...$3' line"; }
}
no_secrets() { # no_secrets FILE...: neither the secret, nor a key, nor an assertion in them
  local f
  for f in "$@"; do
    ! grep -qF -- "$SECRET" "$f" || fail "$f holds the client secret"
    ! grep -q "PRIVATE KEY\|client_assertion=\|eyJhbGciOiJSUzI1Ni" "$f" || fail "$f holds a key or an assertion"
  done
}

say "init maps the options to connection-string keys; it refuses a bad credential file"
init_sp sec --client-secret-file "$RT/secret"
grep -q "^storage=$STORAGE;TenantId=$TENANT;ClientId=$CLIENT;ClientSecretFile=$RT/secret;AuthorityHost=$AUTHORITY\$" "$RT/sec/appliance.conf" \
  || fail "the settings do not hold the service principal as expected: $(grep ^storage= "$RT/sec/appliance.conf")"
no_secrets "$RT/sec/appliance.conf" "$RT/init-sec.out"
out=$("$AP" init --state "$RT/bad" --storage "$STORAGE" --tenant-id "$TENANT" --client-id "$CLIENT" \
  --client-cert-file "$RT/secret" 2>&1) && fail "init took a secret file as a certificate"
[[ $out == *"no certificate"* ]] || fail "unclear refusal of a file without a certificate: $out"
out=$("$AP" init --state "$RT/bad" --storage "$STORAGE" --tenant-id "$TENANT" --client-secret-file "$RT/secret" 2>&1) \
  && fail "init took a service principal without a client id"
[[ $out == *"--client-id"* ]] || fail "unclear refusal without --client-id: $out"
[ ! -e "$RT/bad/appliance.conf" ] || fail "a refused init wrote settings"

say "check: every step passes with the secret, sign-in included"
check_sp sec 0
echo "$out"
expect_line PASS "sign-in" "service principal (client secret): token for client $CLIENT from $AUTHORITY/$TENANT/oauth2/v2.0/token"
expect_line PASS "authorization" "service principal (client secret) accepted"
no_secrets <(echo "$out")

say "check names the failing step: wrong secret, unregistered certificate, unreachable endpoint"
init_sp wrong --client-secret-file "$RT/wrong-secret"
check_sp wrong 1
expect_line FAIL "sign-in" "invalid client: token endpoint .* answered HTTP 401 for client $CLIENT: invalid_client: AADSTS7000215: Invalid client secret provided"
expect_line FAIL "authorization" "not tried: the sign-in failed"
[[ $out != *"wrong-$SECRET"* ]] || fail "check printed the wrong secret"
grep -q "kind=secret -> 401 wrong secret" "$RT/entra.log" || fail "the endpoint did not see the wrong secret"
init_sp othercert --client-cert-file "$RT/other.pem"
check_sp othercert 1
expect_line FAIL "sign-in" "invalid client: .*HTTP 401.*AADSTS700027"
grep -q "kind=assertion -> 401 x5t" "$RT/entra.log" || fail "the endpoint did not refuse the unregistered certificate"
closed=$(free_port)
init_sp gone --client-secret-file "$RT/secret" "https://127.0.0.1:$closed"
check_sp gone 1
expect_line FAIL "sign-in" "token endpoint unreachable: token endpoint https://127.0.0.1:$closed/$TENANT/oauth2/v2.0/token"
fault_proxy_start 0 --deny-bearer
STORAGE="AccountName=devstoreaccount1;BlobEndpoint=https://$AZ_HOST:$FP_PORT" init_sp norole --client-secret-file "$RT/secret"
check_sp norole 1
expect_line PASS "sign-in" "token for client $CLIENT"
expect_line FAIL "authorization" "no role on the container: client $CLIENT signed in, but storage refused it on container 'replicas' (HTTP 403 AuthorizationPermissionMismatch.*Storage Blob Data Contributor"
init_sp cert --client-cert-file "$RT/client.pem"
check_sp cert 0
expect_line PASS "sign-in" "service principal (certificate): token for client $CLIENT"
no_secrets <(echo "$out") "$RT/cert/appliance.conf" "$RT/init-cert.out"

say "the token endpoint by the proxy rules: through the proxy, or around it when the bypass list names it"
tinyproxy_start
init_sp viaproxy --client-secret-file "$RT/secret" "$AUTHORITY" --proxy "http://rpluser:s3cret-pass@127.0.0.1:$TP_PORT"
check_sp viaproxy 0
expect_line PASS "sign-in" "token for client $CLIENT"
grep -q "CONNECT 127.0.0.1:$EP_PORT" "$TP_LOG" || fail "the token request did not go through the proxy: $(cat "$TP_LOG")"
# A proxy that refuses the password: storage bypasses it; the token endpoint fails by it, or (named
# in the bypass list, by its network) passes around it.
init_sp badproxy --client-secret-file "$RT/secret" "$AUTHORITY" --proxy "http://rpluser:wrong-pass@127.0.0.1:$TP_PORT" \
  --proxy-bypass ".core.windows.net"
check_sp badproxy 1
expect_line FAIL "sign-in" "token endpoint unreachable: token endpoint https://127.0.0.1:$EP_PORT/.* via the proxy (the proxy refused CONNECT)"
[[ $out != *wrong-pass* ]] || fail "check printed the proxy password"
init_sp bypassed --client-secret-file "$RT/secret" "$AUTHORITY" --proxy "http://rpluser:wrong-pass@127.0.0.1:$TP_PORT" \
  --proxy-bypass ".core.windows.net,127.0.0.0/8"
check_sp bypassed 0
expect_line PASS "sign-in" "token for client $CLIENT"

say "replicate a disk signed in with the client secret; tokens are refreshed while it runs"
cp -a "$RT/sec" "$RT/app"
RPL_KEY=$(tail -n 1 "$RT/init-sec.out")
rpl_appliance_start --rpo 0.5
rpl_agent_register
rpl_loop dev1 64M half
rpl_agent_start
"$AG" protect "$dev1" --state "$RT/agent" > "$RT/protect1.out" || fail "protect failed: $(cat "$RT/protect1.out")"
rpl_wait_cycle "$dev1" 1
before=$(tokens secret)
# Writes keep cycles (and so storage requests) coming until a token was fetched again.
write_some() { dd if=/dev/urandom of="$1" bs=4k count=16 seek=$((RANDOM % 16000)) oflag=direct conv=notrunc status=none; }
refreshed() { write_some "$dev1"; [ "$(tokens "$1")" -gt "$2" ]; }
wait_until 90 "no token refresh with the secret (endpoint log: $(cat "$RT/entra.log"))" refreshed secret "$before"

# applied_through DEV: every committed cycle of DEV's disk applied to its blob
applied_all() {
  local v id
  id=$(rpl_disk_id "$1")
  mapfile -t v < <("$AP" status --state "$RT/app" --json | json_field - "disks.[disk_id=$id].last_applied_cycle" "disks.[disk_id=$id].last_committed_cycle")
  [ "${#v[@]}" -eq 2 ] && [ "${v[0]}" = "${v[1]}" ] && [ "${v[0]}" -ge "$2" ]
}
same_as_blob() { # same_as_blob DEV: the page blob holds DEV's bytes
  local id last
  id=$(rpl_disk_id "$1")
  last=$(rpl_agent_cycle "$1")
  wait_until 60 "" applied_all "$1" "$last" || { tail -20 "$RT/appliance.log" >&2; fail "$1: cycles not applied in 60 s"; }
  "$BT" download replicas "$id.vhd" "$RT/blob-$id" > "$RT/dl.out" 2>&1 || fail "download failed: $(cat "$RT/dl.out")"
  cmp -n "$(blockdev --getsize64 "$1")" "$RT/blob-$id" "$1" || fail "the page blob of $1 differs from the disk"
  rm -f "$RT/blob-$id"
}
rpl_agent_cycle "$dev1" > /dev/null
"$AG" checkpoint "$dev1" --wait --state "$RT/agent" > /dev/null || fail "checkpoint failed"
same_as_blob "$dev1"
echo "secret: $(tokens secret) tokens issued in all, $(( $(tokens secret) - before )) refreshes during replication"

say "re-init with the certificate: the running disk goes on and a second disk syncs"
kill -TERM "$RPL_AP_PID"
wait "$RPL_AP_PID" 2>/dev/null
"$AP" init --state "$RT/app" --storage "$STORAGE" --tenant-id "$TENANT" --client-id "$CLIENT" \
  --client-cert-file "$RT/client.pem" --authority-host "$AUTHORITY" --private-dns-zone "$AZ_ZONE" --ca-file "$AZ_CA" \
  > "$RT/init-app.out" 2>&1 || fail "re-init with the certificate failed: $(cat "$RT/init-app.out")"
before=$(tokens assertion)
rpl_appliance_start --rpo 0.5
rpl_loop dev2 64M half
"$AG" protect "$dev2" --state "$RT/agent" > "$RT/protect2.out" || fail "protect of the second disk failed: $(cat "$RT/protect2.out")"
rpl_wait_cycle "$dev2" 1
first=$(tokens assertion)
[ "$first" -gt "$before" ] || fail "the appliance did not sign in with the certificate"
wait_until 90 "no token refresh with the certificate (endpoint log: $(cat "$RT/entra.log"))" refreshed assertion "$first"
"$AG" checkpoint --wait --state "$RT/agent" > /dev/null || fail "checkpoint after the re-init failed"
same_as_blob "$dev1"
same_as_blob "$dev2"
echo "certificate: $(( $(tokens assertion) - before )) tokens issued to the appliance"

say "nothing secret in the logs; the endpoint refused nothing from the appliance"
no_secrets "$RT/appliance.log" "$RT/app/appliance.conf" "$RT/init-app.out"
grep -q "Entra ID token for client $CLIENT" "$RT/appliance.log" || fail "the appliance did not log its sign-ins"
! grep -q "signature does not verify\|replayed\|times\|aud " "$RT/entra.log" || fail "the endpoint refused an assertion: $(cat "$RT/entra.log")"
grep -q "stale write fenced\|applying cycle" "$RT/appliance.log" && fail "the appliance reported apply failures"
echo "entra_signin: ok"
