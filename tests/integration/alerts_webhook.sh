#!/usr/bin/env bash
# alerts_webhook.sh - Description: health transitions are logged once and delivered to webhooks.
# init refuses bad thresholds and webhooks with their reasons; a protected disk whose agent stops
# goes healthy -> warning (agent disconnected) -> critical (RPO lag over rpo-crit), each transition
# one log line and one JSON POST to the webhook (HTTPS, its token in the query kept, CA pinned) with
# the disk's id and reasons; a second webhook whose certificate another CA issued never gets one
# (status names the certificate failure); while the first answers 503 the recovery is queued,
# survives an appliance restart and is delivered once after it; the page's API sets the thresholds
# (saved canonical, garbage refused) and sends a test alert to every webhook.
set -u
. "$(dirname "$0")/lib/replication.sh"
rpl_setup 300
command -v python3 >/dev/null || skip "python3 is missing"

# make_ca NAME; make_server NAME CA: RT/NAME.pem (+ .key) for 127.0.0.1, issued by CA.
make_ca() {
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=alerts test $1" -keyout "$RT/$1.key" -out "$RT/$1.pem" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null \
    || fail "openssl could not make CA $1"
}
make_server() {
  openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout "$RT/$1.key" -out "$RT/$1.csr" 2>/dev/null \
    || fail "openssl could not make a key"
  printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > "$RT/$1.ext"
  openssl x509 -req -in "$RT/$1.csr" -CA "$RT/$2.pem" -CAkey "$RT/$2.key" -CAcreateserial -days 2 \
    -extfile "$RT/$1.ext" -out "$RT/$1.pem" 2>/dev/null || fail "openssl could not issue $1"
}
make_ca ca1
make_ca ca2
make_server hook1 ca1
make_server hook2 ca2

# start_receiver NAME PORT: a webhook receiver with NAME's certificate; alerts into RT/NAME.log.
start_receiver() {
  python3 "$RPL_SOURCE_DIR/tests/tools/webhook_receiver.py" --port "$2" --cert "$RT/$1.pem" --key "$RT/$1.key" \
    --log "$RT/$1.log" --refuse-while "$RT/$1.refuse" --log-refused "$RT/$1.refused" 2> "$RT/$1.err" &
  CLEANUP_PIDS+=($!)
  touch "$RT/$1.log"
  wait_until 10 "receiver $1 did not start: $(cat "$RT/$1.err" 2>/dev/null)" \
    curl -sk -o /dev/null "https://127.0.0.1:$2/"
}
P1=$(free_port)
start_receiver hook1 "$P1"
P2=$(free_port)
start_receiver hook2 "$P2"
HOOK1="https://127.0.0.1:$P1/hook?token=s3cr3t-token"
HOOK2="https://127.0.0.1:$P2/other"

say "init refuses bad thresholds and webhooks, saying why"
refused() { # refused WANT ARGS...: init with ARGS fails and says WANT
  local out
  out=$("$AP" init --state "$RT/bad" --storage "file:$RT/bad-replica" "${@:2}" 2>&1) && fail "init accepted ${*:2}"
  [[ $out == *"$1"* ]] || fail "init ${*:2}: the refusal does not say '$1': $out"
  [ ! -e "$RT/bad/appliance.conf" ] || fail "a refused init wrote settings"
}
refused "is not https://" --webhook "http://127.0.0.1:$P1/hook"
refused "user or password" --webhook "https://me:pw@127.0.0.1:$P1/hook"
refused "percentage from 1 to 100" --alerts cache=0
refused "is under 60s" --alerts agent-away=10s
refused "give --webhook too" --webhook-ca "$RT/ca1.pem"
refused "not a readable PEM" --webhook "$HOOK1" --webhook-ca "$RT/hook1.ext"
refused "at most 4 --webhook" --webhook "$HOOK1" --webhook "$HOOK1" --webhook "$HOOK1" --webhook "$HOOK1" --webhook "$HOOK1"

say "init with two webhooks, the first receiver's CA pinned, tight RPO thresholds"
printf 'alerts-admin-pw\n' > "$RT/admin-pw"
"$AP" init --state "$RT/app" --storage "file:$RT/replica" --admin-password-file "$RT/admin-pw" \
  --alerts rpo-crit=30s,rpo-warn=20s --webhook "$HOOK1" --webhook "$HOOK2" --webhook-ca "$RT/ca1.pem" \
  > "$RT/init.out" || fail "init failed: $(cat "$RT/init.out")"
RPL_KEY=$(tail -n 1 "$RT/init.out")
grep -qx "alert thresholds: rpo-warn=20s,rpo-crit=30s,point-age=off,agent-away=90s,cache=80" "$RT/init.out" \
  || fail "init does not show the canonical thresholds: $(cat "$RT/init.out")"
grep -qx "webhook: https://127.0.0.1:$P1/hook (CA pinned)" "$RT/init.out" || fail "init does not show the webhook: $(cat "$RT/init.out")"
grep -q "s3cr3t-token" "$RT/init.out" && fail "init printed the webhook's token"

export RPL_TEST_ALERT_HOLD_MS=1000
WEB_PORT=$(free_port)
rpl_appliance_start --rpo 1 --web "127.0.0.1:$WEB_PORT"
rpl_agent_register
rpl_agent_start
rpl_loop dev 64M random
"$AG" protect "$dev" --state "$RT/agent" > "$RT/protect.out" || fail "protect failed: $(cat "$RT/protect.out")"
disk=$(rpl_disk_id "$dev")
rpl_wait_cycle "$dev" 2
st() { "$AP" status --state "$RT/app" --json > "$RT/status.json" 2>/dev/null && json_field "$RT/status.json" "$@"; }
disk_state() { st "disks.[disk_id=$disk].health.state"; }
wait_until 60 "the disk did not become healthy: $(cat "$RT/status.json")" test "$(disk_state)" = healthy

# transitions FILE TO: the health alerts of the disk that went to TO (one line each), among those
# FILE got after its first $SKIP lines (what came before the phase under test: the initial sync's).
SKIP=0
transitions() {
  /usr/bin/python3 - "$1" "$disk" "$2" "$SKIP" <<'EOF'
import json, sys
for line in open(sys.argv[1]).readlines()[int(sys.argv[4]):]:
    d = json.loads(line)
    if d.get("type") == "health" and d["subject"]["kind"] == "disk" and d["subject"]["id"] == sys.argv[2] and d["to"] == sys.argv[3]:
        print(d["from"], d["to"], ",".join(r["code"] for r in d["health"]["reasons"]), d["_path"], d["_content_type"])
EOF
}
has_transition() { [ -n "$(transitions "$RT/hook1.log" "$1")" ]; }

say "the agent stops: warning (disconnected), then critical (RPO lag over 30 s), each POSTed once"
# Healthy now, and told so: a transition still being held (the initial sync's) is told before.
wait_until 60 "the disk is not healthy: $(cat "$RT/status.json")" test "$(disk_state)" = healthy
sleep 2
SKIP=$(wc -l < "$RT/hook1.log")
log_skip=$(wc -l < "$RT/appliance.log")
kill -TERM "$RPL_AG_PID"
wait "$RPL_AG_PID" 2>/dev/null
# What the appliance saw, for a failure: its health lines, the watcher's and the webhooks' state.
explain() { tail -n +$((SKIP + 1)) "$RT/hook1.log"; grep -E "health:|webhook|session" "$RT/appliance.log" | tail -20; st alerts disks.0.health; }
wait_until 60 "" has_transition warning || fail "no warning alert: $(explain)"
wait_until 60 "" has_transition critical || fail "no critical alert: $(explain)"
w=$(transitions "$RT/hook1.log" warning)
c=$(transitions "$RT/hook1.log" critical)
[ "$(printf '%s\n' "$w" | wc -l)" = 1 ] || fail "more than one warning alert: $w"
[ "$(printf '%s\n' "$c" | wc -l)" = 1 ] || fail "more than one critical alert: $c"
[[ $w == "healthy warning "*agent_disconnected*" /hook?token=s3cr3t-token application/json" ]] \
  || fail "the warning alert is not healthy -> warning for agent_disconnected, POSTed to the hook: $w"
[[ $c == "warning critical "*rpo_lag*" /hook?token=s3cr3t-token application/json" ]] \
  || fail "the critical alert is not warning -> critical for rpo_lag: $c"
n=$(tail -n +$((log_skip + 1)) "$RT/appliance.log" | grep -c "health: disk $disk (.*) healthy -> warning")
[ "$n" = 1 ] || fail "the warning transition is logged $n times"
n=$(tail -n +$((log_skip + 1)) "$RT/appliance.log" | grep -c "health: disk $disk (.*) warning -> critical")
[ "$n" = 1 ] || fail "the critical transition is logged $n times"
grep -q "s3cr3t-token" "$RT/appliance.log" && fail "the appliance logged the webhook's token"

say "the second webhook's certificate is not from the pinned CA: nothing delivered, status says why"
[ ! -s "$RT/hook2.log" ] || fail "a receiver whose certificate another CA issued got alerts: $(cat "$RT/hook2.log")"
st alerts.webhooks >/dev/null
[ "$(json_field "$RT/status.json" 'alerts.webhooks.1.url')" = "$HOOK2" ] || fail "status does not list the second webhook"
[ "$(json_field "$RT/status.json" 'alerts.webhooks.1.delivered')" = 0 ] || fail "the second webhook counts deliveries"
err2=$(json_field "$RT/status.json" 'alerts.webhooks.1.last_error')
[[ $err2 == *[Cc]ertificate* ]] || fail "the second webhook's error does not name the certificate: $err2"
[ "$(json_field "$RT/status.json" 'alerts.webhooks.0.url')" = "https://127.0.0.1:$P1/hook" ] \
  || fail "status shows the first webhook's query (its token): $(json_field "$RT/status.json" 'alerts.webhooks.0.url')"
"$AP" status --state "$RT/app" | grep -q "^alerts: thresholds rpo-warn=20s,rpo-crit=30s" || fail "the text status has no alerts line"

say "the first receiver answers 503: the recovery is queued, survives a restart, is delivered once after it"
touch "$RT/hook1.refuse"
SKIP=$(wc -l < "$RT/hook1.log")
rpl_agent_start
wait_until 60 "the recovery was not tried: $(cat "$RT/status.json")" test -s "$RT/hook1.refused"
wait_until 30 "status does not show the 503: $(cat "$RT/status.json")" \
  eval '[[ $(st alerts.webhooks.0.last_error) == *"HTTP 503"* ]]'
[ "$(st alerts.webhooks.0.queued)" -ge 1 ] || fail "nothing queued for the refusing receiver"
has_transition healthy && fail "a refused alert was recorded as taken"
ls "$RT/app/alerts"/webhook-*/*.json > /dev/null 2>&1 || fail "no queued alert in the state directory"
kill -TERM "$RPL_AP_PID"
wait "$RPL_AP_PID" 2>/dev/null
ls "$RT/app/alerts"/webhook-*/*.json > /dev/null 2>&1 || fail "the queue did not survive the stop"
# Restarted with a hold longer than the agent takes to reconnect: its reconnect is no transition.
export RPL_TEST_ALERT_HOLD_MS=20000
rpl_appliance_start --rpo 1 --web "127.0.0.1:$WEB_PORT"
rm -f "$RT/hook1.refuse"
wait_until 60 "the queued recovery was not delivered after the restart: $(cat "$RT/hook1.log")" has_transition healthy
h=$(transitions "$RT/hook1.log" healthy)
[[ $h == "critical healthy  /hook?token=s3cr3t-token application/json" || $h == "warning healthy  "* ]] \
  || fail "the recovery alert is not to healthy from the critical disk: $h"
wait_until 30 "the queue did not empty" test "$(st alerts.webhooks.0.queued)" = 0
[ "$(transitions "$RT/hook1.log" healthy | wc -l)" = 1 ] || fail "the recovery was delivered more than once: $h"

say "the page's API: thresholds saved canonical (garbage refused), a test alert to every webhook"
U=https://127.0.0.1:$WEB_PORT
api() { # api METHOD PATH [curl args]: the status code; the body in RT/body
  curl -sk -o "$RT/body" -w '%{http_code}' -X "$1" -b "$RT/jar" -c "$RT/jar" "${@:3}" "$U$2" || echo 000
}
wait_until 10 "the configuration manager did not come up" curl -sk -o /dev/null --max-time 2 "$U/"
: > "$RT/jar"
[ "$(api POST /api/login --data-urlencode password=alerts-admin-pw)" = 200 ] || fail "login: $(cat "$RT/body")"
CSRF=$(json_field "$RT/body" csrf_token)
code=$(api POST /api/alerts -H "X-CSRF-Token: $CSRF" --data-urlencode "thresholds=cache=200")
[ "$code" = 400 ] && grep -q "percentage from 1 to 100" "$RT/body" || fail "bad thresholds: HTTP $code $(cat "$RT/body")"
grep -q "^alerts=rpo-warn=20s,rpo-crit=30s," "$RT/app/appliance.conf" || fail "refused thresholds changed the settings"
code=$(api POST /api/alerts -H "X-CSRF-Token: $CSRF" --data-urlencode "thresholds=cache=95,rpo-warn=1m")
[ "$code" = 200 ] || fail "setting thresholds: HTTP $code $(cat "$RT/body")"
[ "$(json_field "$RT/body" alerts.thresholds)" = "rpo-warn=1m,rpo-crit=auto,point-age=off,agent-away=90s,cache=95" ] \
  || fail "the thresholds in use: $(cat "$RT/body")"
grep -qx "alerts=rpo-warn=1m,rpo-crit=auto,point-age=off,agent-away=90s,cache=95" "$RT/app/appliance.conf" \
  || fail "the thresholds were not saved: $(grep alerts= "$RT/app/appliance.conf")"
[ "$(api POST /api/alerts/test)" = 403 ] || fail "a test alert without the CSRF token was taken"
code=$(api POST /api/alerts/test -H "X-CSRF-Token: $CSRF")
[ "$code" = 200 ] && [ "$(json_field "$RT/body" queued)" = 2 ] || fail "test alert: HTTP $code $(cat "$RT/body")"
wait_until 30 "the test alert did not arrive" grep -q '"type": "test"' "$RT/hook1.log"
st alerts >/dev/null
[ "$(json_field "$RT/status.json" 'alerts.webhooks.1.delivered')" = 0 ] || fail "the unpinned receiver got the test alert"
echo "alerts_webhook: ok"
