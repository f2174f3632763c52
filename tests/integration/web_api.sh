#!/usr/bin/env bash
# web_api.sh - Description: the configuration manager's JSON API with curl against a real appliance
# (Azurite storage over HTTPS): served over TLS with a certificate its authority issued; requests without
# a session get 401; bad logins are rate-limited (429) per client; the session cookie is Secure,
# HttpOnly, SameSite=Strict; a POST without (or with a wrong) CSRF token gets 403 and changes nothing;
# malformed forms get 400 with a message and change nothing; /api/status and /api/check are the
# documents of `status --json` and `check --json`; a wrong proxy shows FAIL with its remedy; the
# registration key is regenerated and used by a real `mobility-agent register`, the agent revoked;
# no secret (account key, proxy password) appears in any API answer.
set -u
. "$(dirname "$0")/lib/replication.sh"
rpl_setup 400
rpl_azurite_start --inMemoryPersistence

ALL=$RT/all-responses   # every API answer, searched for secrets at the end
: > "$ALL"
PW='correct horse battery staple'
PROXY_PW='pr0xy-Secret-xyzzy'
printf '%s\n' "$PW" > "$RT/admin-pw"

say "init with an admin password file, run with the configuration manager on a free port"
"$AP" init --state "$RT/app" --storage "$AZ_CONNSTR" --private-dns-zone "$AZ_ZONE" --ca-file "$AZ_CA" \
  --admin-password-file "$RT/admin-pw" > "$RT/init.out" || fail "init failed"
grep -qF "$PW" "$RT/app"/* 2>/dev/null && fail "the admin password is stored in clear in the state directory"
# init again (a new registration key) with the password set: no login link besides the password
"$AP" init --state "$RT/app" --storage "$AZ_CONNSTR" --private-dns-zone "$AZ_ZONE" --ca-file "$AZ_CA" \
  > "$RT/init.out" || fail "init again failed"
grep -q "#token=" "$RT/init.out" && fail "init issued a login link although a password is set: $(cat "$RT/init.out")"
grep -q "admin password set before" "$RT/init.out" || fail "init does not say to log in with the password"
RPL_KEY=$(tail -n 1 "$RT/init.out")
printf 'short\n' > "$RT/short-pw"
out=$("$AP" init --state "$RT/app2" --storage "file:$RT/r2" --admin-password-file "$RT/short-pw" 2>&1) \
  && fail "init accepted a 5-character admin password"
[[ $out == *"8 to 256 characters"* ]] || fail "unclear error for a short admin password: $out"
WEB_PORT=$(free_port)
rpl_appliance_start --web "127.0.0.1:$WEB_PORT"
U=https://127.0.0.1:$WEB_PORT
web_up() {
  curl -sk -o /dev/null --max-time 2 "$U/" && return 0
  kill -0 "$RPL_AP_PID" 2>/dev/null || fail "the appliance exited: $(tail -5 "$RT/appliance.log")"
  return 1
}
wait_until 10 "" web_up

say "TLS with a certificate the appliance's authority issued, on both listeners (the authority never serves)"
authority=$(openssl x509 -in "$RT/app/appliance.crt" -noout -fingerprint -sha256)
issued=$(openssl x509 -in "$RT/app/server.crt" -noout -fingerprint -sha256)
[ "$(stat -c %a "$RT/app/server.key")" = 600 ] || fail "the listeners' key is not mode 0600"
for port in "$WEB_PORT" "$RPL_PORT"; do
  openssl s_client -connect "127.0.0.1:$port" -showcerts </dev/null 2>/dev/null \
    | awk '/BEGIN CERT/,/END CERT/' >"$RT/chain.pem"
  served=$(openssl x509 -in "$RT/chain.pem" -noout -fingerprint -sha256)
  [ -n "$served" ] && [ "$served" = "$issued" ] && [ "$served" != "$authority" ] \
    || fail "port $port does not serve the issued certificate ($served; issued $issued, authority $authority)"
  openssl verify -CAfile "$RT/app/appliance.crt" -purpose sslserver "$RT/chain.pem" >/dev/null \
    || fail "port $port's certificate does not verify against the appliance's authority"
done

# req METHOD PATH [curl args...]: prints the HTTP status; the body goes to $RT/body (and into $ALL)
req() {
  local m=$1 p=$2
  shift 2
  local code
  code=$(curl -sk -o "$RT/body" -w '%{http_code}' -X "$m" -b "$RT/jar" -c "$RT/jar" "$@" "$U$p") || code=000
  { cat "$RT/body"; echo; } >> "$ALL"
  echo "$code"
}
expect() { # expect CODE METHOD PATH [args]: fails unless the status is CODE
  local want=$1 got
  shift
  got=$(req "$@")
  [ "$got" = "$want" ] || fail "$1 $2: HTTP $got, expected $want: $(head -c 300 "$RT/body")"
}
jget() { json_field "$RT/body" "$@" | paste -sd ' '; }  # jget PATH...: fields of the last answer
conf_sum() { sha256sum "$RT/app/appliance.conf" | cut -d' ' -f1; }
: > "$RT/jar"

say "no session: 401 everywhere under /api/"
for p in /api/status /api/check /api/proxy /api/registration /api/agents /api/points /api/schedule /api/series /api/session; do
  expect 401 GET "$p"
done
expect 401 POST /api/proxy -d address=
expect 401 POST /api/registration/regenerate
grep -q '"error":"not logged in' "$RT/body" || fail "the 401 does not say why: $(cat "$RT/body")"
expect 200 GET /
grep -q '<script src="/app.js"' "$RT/body" || fail "/ is not the page"
expect 404 GET /../appliance.conf

say "bad logins from 127.0.0.2 are limited to 5 a minute; 127.0.0.1 is not affected"
for i in 1 2 3 4 5; do
  expect 401 POST /api/login --interface 127.0.0.2 --data-urlencode "password=wrong$i"
done
expect 429 POST /api/login --interface 127.0.0.2 --data-urlencode "password=$PW"
grep -q 'too many failed logins from 127.0.0.2: try again in' "$RT/body" || fail "429 without a clear message: $(cat "$RT/body")"
[ -z "$(grep -v '^#' "$RT/jar" | grep rpl_session)" ] || fail "a limited client got a session cookie"
expect 400 POST /api/login --data-urlencode "password=$PW" --data-urlencode "user=admin"

say "login: session cookie Secure, HttpOnly, SameSite=Strict; CSRF token in the answer"
hdr=$(curl -sk -D - -o "$RT/body" -c "$RT/jar" --data-urlencode "password=$PW" "$U/api/login")
cookie=$(grep -i '^set-cookie:' <<<"$hdr")
[[ $cookie == *"rpl_session="*"; Secure"*"; HttpOnly"*"; SameSite=Strict"* ]] || fail "session cookie flags: $cookie"
CSRF=$(jget csrf_token)
[[ $CSRF =~ ^[0-9a-f]{64}$ ]] || fail "no CSRF token in the login answer: $(cat "$RT/body")"
H=(-H "X-CSRF-Token: $CSRF")
expect 200 GET /api/session
[ "$(jget csrf_token)" = "$CSRF" ] || fail "/api/session gives another CSRF token"

say "/api/status is the status --json document; /api/check the check --json one"
expect 200 GET /api/status
"$AP" status --state "$RT/app" --json > "$RT/status.json" || fail "status --json failed"
cmp -s "$RT/body" "$RT/status.json" || fail "/api/status differs from status --json: $(diff "$RT/body" "$RT/status.json")"
expect 200 GET /api/check
"$AP" check --state "$RT/app" --json > "$RT/check.json" || fail "check failed: $(cat "$RT/check.json")"
python3 - "$RT/body" "$RT/check.json" <<'PY' || fail "/api/check is not the check --json document"
import json, sys
web = json.load(open(sys.argv[1])); cli = json.load(open(sys.argv[2]))
assert web["checked_unix"] > 0
r = web["report"]
assert [c["name"] for c in r["checks"]] == [c["name"] for c in cli["checks"]], (r, cli)
assert r["ok"] and all(c["result"] == "PASS" for c in r["checks"]), r
PY

say "POST without or with a wrong CSRF token: 403, nothing changed"
before=$(conf_sum)
expect 403 POST /api/proxy --data-urlencode "address=http://127.0.0.1:9"
expect 403 POST /api/proxy -H "X-CSRF-Token: $(printf '0%.0s' $(seq 1 64))" --data-urlencode "address=http://127.0.0.1:9"
grep -q 'CSRF token' "$RT/body" || fail "403 without a clear message: $(cat "$RT/body")"
expect 403 POST /api/registration/regenerate
[ "$(conf_sum)" = "$before" ] || fail "a POST without the CSRF token changed the settings"
expect 200 GET /api/registration
[ "$(jget key newest_key_state usable_keys)" = "null unused 1" ] \
  || fail "a POST without the CSRF token changed the registration keys, or a key is shown again: $(cat "$RT/body")"

say "malformed forms: 400 with a message, nothing changed"
bad() { # bad PATTERN curl-args...: a 400 whose error contains PATTERN
  local pat=$1
  shift
  expect 400 POST /api/proxy "${H[@]}" "$@"
  grep -q "\"error\":\"[^\"]*$pat" "$RT/body" || fail "400 for $* does not say '$pat': $(cat "$RT/body")"
}
bad 'is not http://HOST:PORT' --data-urlencode "address=ftp://proxy:3128"
bad 'is not http://HOST:PORT' --data-urlencode "address=http://proxy"
bad 'is not http://HOST:PORT' --data-urlencode "address=http://proxy:70000"
bad 'is not http://HOST:PORT' --data-urlencode "address=http://proxy:3128/path"
bad 'must not hold credentials' --data-urlencode "address=http://u:p@proxy:3128"
bad 'address is required' --data-urlencode "bypass=localhost"
bad 'unknown field' --data-urlencode "address=http://proxy:3128" --data-urlencode "colour=blue"
bad 'bypass is a comma-separated' --data-urlencode "address=http://proxy:3128" --data-urlencode 'bypass=a;rm -rf /'
bad 'user must be' --data-urlencode "address=http://proxy:3128" --data-urlencode "user=a:b"
bad 'needs a user' --data-urlencode "address=http://proxy:3128" --data-urlencode "password=x"
expect 413 POST /api/proxy "${H[@]}" --data-urlencode "address=$(head -c 20000 /dev/zero | tr '\0' a)"
expect 415 POST /api/proxy "${H[@]}" -H 'Content-Type: application/json' -d '{"address":"http://proxy:3128"}'
expect 400 POST /api/agents/not-a-uuid/revoke "${H[@]}"
expect 404 POST /api/agents/00000000-0000-0000-0000-000000000000/revoke "${H[@]}"
expect 400 POST /api/disks/xyz/checkpoint "${H[@]}"
expect 404 POST /api/disks/00000000-0000-0000-0000-000000000000/resync "${H[@]}"
expect 400 POST /api/password "${H[@]}" --data-urlencode "password=short"
[ "$(conf_sum)" = "$before" ] || fail "a malformed form changed the settings"
expect 200 POST /api/login --data-urlencode "password=$PW"   # the password is still the old one
CSRF=$(jget csrf_token)
H=(-H "X-CSRF-Token: $CSRF")

say "a wrong proxy (nothing listens) with credentials: saved, re-checked FAIL with its remedy; the password never comes back"
dead=$(free_port)
expect 200 POST /api/proxy "${H[@]}" --data-urlencode "address=http://127.0.0.1:$dead" --data-urlencode "user=proxyuser" \
  --data-urlencode "password=$PROXY_PW" --data-urlencode "bypass=localhost,.internal,10.0.0.0/8"
python3 - "$RT/body" <<'PY' || fail "the wrong proxy did not FAIL with a remedy: $(cat "$RT/body")"
import json, sys
r = json.load(open(sys.argv[1]))["report"]
c = {x["name"]: x for x in r["checks"]}
assert not r["ok"], r
assert c["TCP reach"]["result"] == "FAIL" and "proxy" in c["TCP reach"]["remedy"], c["TCP reach"]
PY
grep -q "proxy=http://proxyuser:$PROXY_PW@127.0.0.1:$dead" "$RT/app/appliance.conf" || fail "the proxy was not saved into the settings"
expect 200 GET /api/proxy
[ "$(jget address user password_set bypass)" = "http://127.0.0.1:$dead proxyuser true localhost,.internal,10.0.0.0/8" ] \
  || fail "GET /api/proxy: $(cat "$RT/body")"
"$AP" check --state "$RT/app" > /dev/null 2>&1 && fail "check passes with the wrong proxy saved by the page"
# The password stays when the form leaves it empty; the address goes back to none.
expect 200 POST /api/proxy "${H[@]}" --data-urlencode "address=http://127.0.0.1:$dead" --data-urlencode "user=proxyuser"
grep -q "proxy=http://proxyuser:$PROXY_PW@" "$RT/app/appliance.conf" || fail "an empty password field dropped the stored password"
expect 200 POST /api/proxy "${H[@]}" --data-urlencode "address=" --data-urlencode "bypass="
[ "$(jget report.ok)" = true ] || fail "checks do not pass again without the proxy: $(cat "$RT/body")"

say "registration: regenerate, a real register with the new key, then it shows used; revoke the agent"
expect 200 POST /api/registration/regenerate "${H[@]}"
KEY2=$(jget key)
[[ $KEY2 == rk1-* && $KEY2 != "$RPL_KEY" ]] || fail "regenerate gave '$KEY2'"
[ "$(jget newest_key_state usable_keys key_ttl)" = "unused 1 24h" ] || fail "regenerate did not revoke the key before it: $(cat "$RT/body")"
expect 200 GET /api/registration
[ "$(jget key)" = null ] || fail "the key is shown again after the answer that issued it: $(cat "$RT/body")"
! grep -rqF "$KEY2" "$RT/app" || fail "the state directory holds the registration key in clear"
RPL_KEY=$KEY2 rpl_agent_register
expect 200 GET /api/registration
[ "$(jget key key_used newest_key_state usable_keys)" = "null true used 0" ] || fail "a used key is still offered: $(cat "$RT/body")"
expect 200 GET /api/agents
agent=$(jget agents.0.agent_id)
[ "$(jget agents.0.revoked)" = false ] || fail "new agent revoked"
expect 200 POST "/api/agents/$agent/revoke" "${H[@]}"
expect 200 GET /api/agents
[ "$(jget agents.0.revoked)" = true ] || fail "the agent was not revoked"
expect 200 GET /api/points

say "the point schedule: shown, refused when wrong (nothing saved), set, kept in the settings"
expect 200 GET /api/schedule
[ "$(jget points)" = "crash=off,app=off" ] || fail "the schedule run --points set is not shown: $(cat "$RT/body")"
before=$(conf_sum)
expect 400 POST /api/schedule "${H[@]}" --data-urlencode points=crash=10s
grep -q "more often than every 30s" "$RT/body" || fail "a too frequent schedule is refused without saying why: $(cat "$RT/body")"
expect 400 POST /api/schedule "${H[@]}" --data-urlencode points=hourly=1h
expect 400 POST /api/schedule "${H[@]}" --data-urlencode points=crash=5m -d extra=1
[ "$(conf_sum)" = "$before" ] || fail "a refused schedule changed the settings"
expect 200 POST /api/schedule "${H[@]}" --data-urlencode points=crash=2m,app=off
[ "$(jget points)" = "crash=2m,app=off" ] || fail "the new schedule is not answered: $(cat "$RT/body")"
grep -q '^points=crash=2m,app=off$' "$RT/app/appliance.conf" || fail "the schedule was not saved in the settings"
expect 200 GET /api/status
[ "$(jget points_schedule)" = "crash=2m,app=off" ] \
  || fail "the running appliance does not use the new schedule: $(cat "$RT/body")"
expect 200 GET /api/series
[ "$(jget interval_seconds)" -gt 0 ] || fail "series without an interval"

say "logout ends the session"
expect 200 POST /api/logout "${H[@]}"
expect 401 GET /api/status

say "no secret in any answer"
acct_key=$(sed -n 's/.*AccountKey=\([^;]*\).*/\1/p' <<<"$AZ_CONNSTR")
[ -n "$acct_key" ] || fail "the test's connection string has no AccountKey"
grep -qF "$acct_key" "$ALL" && fail "the account key appeared in an API answer"
grep -qF "$PROXY_PW" "$ALL" && fail "the proxy password appeared in an API answer"
grep -qF "$PW" "$ALL" && fail "the admin password appeared in an API answer"
grep -qF "$PROXY_PW" "$RT/appliance.log" && fail "the proxy password was logged"
grep -qF "$acct_key" "$RT/appliance.log" && fail "the account key was logged"
[ "$(wc -l < "$ALL")" -gt 40 ] || fail "too few answers collected ($(wc -l < "$ALL"))"
echo "web_api: ok"
