#!/usr/bin/env bash
# appliance_check.sh - Description: `replication-appliance init` records the settings (key file
# 0600, key never printed) and `check` prints one PASS line per prerequisite against Azurite over
# HTTPS (text and --json); then each failure gets its FAIL line with the remedy and a non-zero exit:
# public address (in a network namespace with no routes), unreachable port, untrusted certificate,
# wrong key, clock skew (a proxy shifting Date), proxy credentials; file: storage; bad input.
set -u
. "$(dirname "$0")/lib/azurite.sh"
. "$(dirname "$0")/lib/fault_proxy.sh"
. "$(dirname "$0")/lib/tinyproxy.sh"
b=${RPL_BUILD_DIR:?run under ctest}
app=$b/appliance/replication-appliance
azurite_start

# run_check NAME EXPECT_RC: runs check on state NAME; stdout in $out, stderr in $err.
run_check() {
  out=$("$app" check --state "$AZ_DIR/$1" 2>"$AZ_DIR/err"); rc=$?
  err=$(cat "$AZ_DIR/err")
  [ "$rc" -eq "$2" ] || { echo "$out"; echo "$err"; fail "check $1 exited $rc, expected $2"; }
  if [ "$2" -ne 0 ]; then
    [ "$(printf '%s\n' "$err" | wc -l)" -eq 1 ] || fail "check $1: expected one line on stderr, got: $err"
  fi
  [[ $out != *"$AZ_KEY_B64"* && $err != *"$AZ_KEY_B64"* ]] || fail "check $1 printed the account key"
}
expect_line() { # expect_line PASS|FAIL NAME PHRASE
  grep -q "^$1  $2: .*$3" <<<"$out" || { echo "$out"; fail "no '$1  $2: ...$3' line"; }
}
init() { # init NAME ARGS...: init into state NAME, which must succeed
  local name=$1; shift
  "$app" init --state "$AZ_DIR/$name" "$@" > "$AZ_DIR/init.out" 2>&1 || { cat "$AZ_DIR/init.out"; fail "init $name failed"; }
  ! grep -q "$AZ_KEY_B64" "$AZ_DIR/init.out" || fail "init printed the account key"
}

echo "== all prerequisites pass"
AZURE_STORAGE_CONNECTION_STRING=$AZ_CONNSTR init good --container replicas --private-dns-zone "$AZ_ZONE" --ca-file "$AZ_CA"
[ "$(stat -c %a "$AZ_DIR/good/appliance.conf")" = 600 ] || fail "settings file is not mode 0600"
run_check good 0
echo "$out"
[ "$(printf '%s\n' "$out" | grep -c '^PASS  ')" -eq 6 ] || fail "expected six PASS lines"
expect_line PASS "private DNS path" "$AZ_HOST -> 127.0.0.1 (loopback) \[private DNS zone file\]"
expect_line PASS "TCP reach" "127.0.0.1 port $AZ_PORT"
expect_line PASS "TLS verification" "verified"
expect_line PASS "authorization" "account key accepted"
expect_line PASS "time skew" "s against the service's clock"
"$app" check --state "$AZ_DIR/good" --json > "$AZ_DIR/check.json" || fail "check --json failed"
python3 - "$AZ_DIR/check.json" <<'PY' || fail "check --json is not the expected JSON document"
import json, sys
doc = json.load(open(sys.argv[1]))
assert doc["ok"] is True and doc["storage"] == "azure", doc
assert [c["name"] for c in doc["checks"]] == ["private DNS path", "TCP reach", "proxy", "TLS verification", "authorization", "time skew"], doc
assert all(c["result"] == "PASS" for c in doc["checks"]), doc
PY

echo "== public address: refused before any connection (no routes in this namespace)"
printf '203.0.113.7 devstoreaccount1.privatelink.blob.core.windows.net %s\n' "$AZ_HOST" > "$AZ_DIR/public.hosts"
init public --storage "$AZ_CONNSTR" --private-dns-zone "$AZ_DIR/public.hosts" --ca-file "$AZ_CA"
out=$(unshare -n "$app" check --state "$AZ_DIR/public" 2>"$AZ_DIR/err"); rc=$?
err=$(cat "$AZ_DIR/err")
[ "$rc" -ne 0 ] || fail "check passed with a public address"
expect_line FAIL "private DNS path" "$AZ_HOST -> devstoreaccount1.privatelink.blob.core.windows.net -> 203.0.113.7 (public).*refused before any connection.*approve the private endpoint connection"
expect_line FAIL "TCP reach" "not tried"
[[ $err == *"private DNS path"* ]] || fail "stderr does not name the failure: $err"
echo "$out" | head -2

echo "== unreachable port"
closed=$(free_port)
init closed --storage "${AZ_CONNSTR/:$AZ_PORT/:$closed}" --private-dns-zone "$AZ_ZONE" --ca-file "$AZ_CA"
run_check closed 1
expect_line PASS "private DNS path" "127.0.0.1"
expect_line FAIL "TCP reach" "cannot connect to 127.0.0.1.*fix: check routing"
expect_line FAIL "authorization" "not tried"

echo "== untrusted certificate"
init noca --storage "$AZ_CONNSTR" --private-dns-zone "$AZ_ZONE"
run_check noca 1
expect_line PASS "TCP reach" "connected"
expect_line FAIL "TLS verification" "certificate.*fix: give the CA"

echo "== wrong account key"
init badkey --storage "${AZ_CONNSTR/$AZ_KEY_B64/c2VjcmV0a2V5c2VjcmV0a2V5c2VjcmV0a2V5c2VjcmU=}" --private-dns-zone "$AZ_ZONE" --ca-file "$AZ_CA"
run_check badkey 1
expect_line PASS "TLS verification" "verified"
expect_line FAIL "authorization" "account key refused: RPL_E_BLOB_AUTH (HTTP 4.*fix: copy the current account key"

echo "== clock skew (the service's Date 20 minutes ahead)"
fault_proxy_start 0 --date-offset 1200
init skew --storage "${AZ_CONNSTR/:$AZ_PORT/:$FP_PORT}" --private-dns-zone "$AZ_ZONE" --ca-file "$AZ_CA"
run_check skew 1
expect_line FAIL "time skew" "+1[12][0-9][0-9] s .*over 15 minutes.*fix: sync this machine's clock"
expect_line FAIL "authorization" "clock"
fault_proxy_start 0 --date-offset -400
init skew_warn --storage "${AZ_CONNSTR/:$AZ_PORT/:$FP_PORT}" --private-dns-zone "$AZ_ZONE" --ca-file "$AZ_CA"
run_check skew_warn 0
expect_line PASS "time skew" "-[34][0-9][0-9] s .*warning: over 5 minutes"

echo "== proxy with a wrong password"
tinyproxy_start
init badproxy --storage "$AZ_CONNSTR" --private-dns-zone "$AZ_ZONE" --ca-file "$AZ_CA" --proxy "http://rpluser:wrong-pass@127.0.0.1:$TP_PORT"
run_check badproxy 1
[[ $out != *wrong-pass* ]] || fail "check printed the proxy password"
expect_line PASS "TCP reach" "proxy http://\*\*\*@127.0.0.1:$TP_PORT"
expect_line FAIL "proxy" "proxy authentication failed.*fix: check the proxy user and password"
init goodproxy --storage "$AZ_CONNSTR" --private-dns-zone "$AZ_ZONE" --ca-file "$AZ_CA" --proxy "http://rpluser:s3cret-pass@127.0.0.1:$TP_PORT"
run_check goodproxy 0
expect_line PASS "proxy" "accepted CONNECT to $AZ_HOST:$AZ_PORT"
init bypass --storage "$AZ_CONNSTR" --private-dns-zone "$AZ_ZONE" --ca-file "$AZ_CA" --proxy "http://rpluser:wrong-pass@127.0.0.1:$TP_PORT" --proxy-bypass ".core.windows.net"
run_check bypass 0
expect_line PASS "proxy" "in the bypass list"
# By the private endpoint's network: the check says bypassed, and the storage checks pass although
# the proxy would refuse the password, so the requests really went around it.
init bypassnet --storage "$AZ_CONNSTR" --private-dns-zone "$AZ_ZONE" --ca-file "$AZ_CA" --proxy "http://rpluser:wrong-pass@127.0.0.1:$TP_PORT" --proxy-bypass "10.0.0.0/8,127.0.0.0/8"
run_check bypassnet 0
expect_line PASS "proxy" "in the bypass list"

echo "== file: storage"
init local --storage "file:$AZ_DIR/replicas"
run_check local 0
expect_line PASS "replica directory" "is writable"
init localbad --storage "file:$AZ_DIR/replicas2"
rm -rf "$AZ_DIR/replicas2" && : > "$AZ_DIR/replicas2"
run_check localbad 1
expect_line FAIL "replica directory" "not writable"

echo "== bad input"
bad() { # bad PHRASE ARGS...: init must fail with one line containing PHRASE
  local phrase=$1; shift
  e=$("$app" init --state "$AZ_DIR/bad" "$@" 2>&1 >/dev/null) && fail "init accepted: $*"
  [ "$(printf '%s\n' "$e" | wc -l)" -eq 1 ] || fail "init: expected one line, got: $e"
  [[ $e == *"$phrase"* ]] || fail "init: unclear error for $*: $e"
}
bad "part 2 is not Key=Value" --storage "AccountName=acct;garbage"
bad "AccountKey is not a base64 key" --storage "AccountName=acct;AccountKey=not*base64"
bad "unknown parameter" --storage "AccountName=acct;SharedAccessSignature=sv=1&sig=x&bogus=1"
printf '127.0.0.1 ok.example\nnot-an-address %s\n' "$AZ_HOST" > "$AZ_DIR/bad.hosts"
bad "line 2: 'not-an-address' is not an IPv4 or IPv6 address" --storage "$AZ_CONNSTR" --private-dns-zone "$AZ_DIR/bad.hosts"
bad "not a readable PEM file" --storage "$AZ_CONNSTR" --ca-file "$AZ_DIR/bad.hosts"
bad "only HTTP proxies" --storage "$AZ_CONNSTR" --proxy "socks5://127.0.0.1:1080"
bad "container name" --storage "$AZ_CONNSTR" --container "Bad_Name"
# http sends the key in clear text: refused for an account, taken only for an emulator on this machine when asked
key="AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
bad "is http: the account's key or token would cross the network in clear text" \
  --storage "DefaultEndpointsProtocol=http;AccountName=acct;$key"
bad "with init --allow-http-emulator" --storage "AccountName=acct;$key;BlobEndpoint=http://127.0.0.1:10000/acct"
bad "is http" --storage "AccountName=acct;$key;BlobEndpoint=http://10.1.2.3:10000/acct" --allow-http-emulator
"$app" init --state "$AZ_DIR/http-emulator" --storage "AccountName=acct;$key;BlobEndpoint=http://127.0.0.1:10000/acct" \
  --allow-http-emulator > /dev/null || fail "init refused an http emulator on this machine with --allow-http-emulator"
grep -q '^allow_http_emulator=1$' "$AZ_DIR/http-emulator/appliance.conf" || fail "the http emulator flag was not stored"
e=$(env -u AZURE_STORAGE_CONNECTION_STRING "$app" init --state "$AZ_DIR/bad" 2>&1 >/dev/null) && fail "init without storage succeeded"
[[ $e == *"--storage is required"* ]] || fail "unclear error without storage: $e"
e=$("$app" check --state "$AZ_DIR/never-initialised" 2>&1 >/dev/null) && fail "check without init succeeded"
[[ $e == *"run 'replication-appliance init"* ]] || fail "unclear error without init: $e"
echo "appliance_check: ok"
