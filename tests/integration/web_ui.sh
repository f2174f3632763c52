#!/usr/bin/env bash
# web_ui.sh - Description: headless Chromium (Debian's, driven by playwright-core) drives the real
# configuration manager page against a real appliance storing into Azurite: logs in with init's
# one-time link and sets a password; the prerequisites show PASS rows; a wrong proxy shows FAIL with
# its remedy; the key regenerated on the page registers a real agent, which protects a loop disk;
# after `mobility-agent checkpoint --wait` the disk's last point and RPO show on the page, the point
# with its exact restore command; the disk's charts (RPO lag, churn, backlog) print the series'
# newest values with units (the RPO lag within a sample of status's), the RPO target line is
# status's target and the point is marked on them; the view orders crafted disks critical, warning,
# healthy (by name within each) through the page's own renderReplication; the page's own
# Checkpoint button makes another point, its Resync button a resync cycle (the whole disk again),
# its Unprotect button (confirmed; a wrong id typed at the deletion prompt deletes nothing, a
# cancelled prompt keeps the replica) makes the agent forget the disk, which shows unprotected with
# its points and its buttons disabled; revoking the agent on the page ends its session. Nothing is
# fetched beyond loopback. Screenshots (the charts' own too) are kept in build/test-artifacts/web_ui/.
# Exit 77 without chromium or playwright-core (scripts/setup.sh installs both).
set -u
B=${RPL_BUILD_DIR:?run under ctest}
PW_DIR=${RPL_SOURCE_DIR:?run under ctest}/tools/playwright
[ -x /usr/bin/chromium ] || { echo "SKIP: /usr/bin/chromium is not installed (scripts/setup.sh)"; exit 77; }
[ -f "$PW_DIR/node_modules/playwright-core/package.json" ] || { echo "SKIP: playwright-core is not in tools/playwright (scripts/setup.sh)"; exit 77; }
command -v node >/dev/null || { echo "SKIP: no node"; exit 77; }
. "$(dirname "$0")/lib/replication.sh"
rpl_setup 550
rpl_azurite_start --inMemoryPersistence
DRIVER=$(dirname "$0")/web_ui.js

SHOT_DIR=$B/test-artifacts/web_ui
mkdir -p "$SHOT_DIR"
rm -f "$SHOT_DIR"/*.png   # this run's screenshots only (the folder itself is kept as the artifact)

say "init without a password: a one-time login link"
"$AP" init --state "$RT/app" --storage "$AZ_CONNSTR" --private-dns-zone "$AZ_ZONE" --ca-file "$AZ_CA" > "$RT/init.out" \
  || fail "init failed"
link=$(grep -o 'https://127.0.0.1:44368/#token=[A-Za-z0-9_-]*' "$RT/init.out") || fail "init printed no login link: $(cat "$RT/init.out")"
grep -rqF "${link#*token=}" "$RT/app" && fail "the login token is stored in clear in the state directory"
WEB_PORT=$(free_port)
RPL_WEB_SAMPLE_SECONDS=1 rpl_appliance_start --rpo 1 --web "127.0.0.1:$WEB_PORT"
web_up() { curl -sk -o /dev/null --max-time 2 "https://127.0.0.1:$WEB_PORT/"; }
wait_until 10 "" web_up

export PW_DIR WEB_URL="https://127.0.0.1:$WEB_PORT" SHOT_DIR
export LOGIN_URL="https://127.0.0.1:$WEB_PORT/#token=${link#*token=}" ADMIN_PASSWORD="web-ui admin $$"
export PROXY_PASSWORD="ui-proxy-secret-$$" DEAD_PORT=$(free_port) KEY_FILE=$RT/key

# One driver (one Chromium, one browser context holding the login session, one tab) for every phase,
# asked over a Unix socket in RT (no port to pick); the trap stops it (SIGTERM: it closes Chromium,
# else kills it) however the test ends, and the test stops it itself after the last phase.
DRIVER_SOCK=$RT/driver.sock
node "$DRIVER" "$DRIVER_SOCK" > "$RT/driver.log" 2>&1 < /dev/null &
DRIVER_PID=$!
CLEANUP_SERVICES+=("$DRIVER_PID")
driver_up() { [ -S "$DRIVER_SOCK" ] || { kill -0 "$DRIVER_PID" 2>/dev/null || fail "the browser driver exited: $(cat "$RT/driver.log")"; false; }; }
wait_until 60 "" driver_up || fail "the browser driver did not start in 60 s: $(cat "$RT/driver.log")"
# run_phase PHASE: the driver runs it (with the variables the shell set since it started) and its
# JSON, if any, goes to stdout. Bounded, so that the test's deadline can still end a stuck phase.
run_phase() {
  local code
  code=$(curl -sS --max-time 300 -o "$RT/phase.out" -w '%{http_code}' --unix-socket "$DRIVER_SOCK" -G "http://driver/$1" \
    --data-urlencode "EXPECT_POINT=${EXPECT_POINT-}" --data-urlencode "DISK_ID=${DISK_ID-}" \
    --data-urlencode "AGENT_HOST=${AGENT_HOST-}" 2> "$RT/phase.err")
  [ "$code" = 200 ] || fail "browser phase $1: $(cat "$RT/phase.out" "$RT/phase.err") $(cat "$RT/driver.log")"
  cat "$RT/phase.out"
}
driver_stop() {
  curl -sS --max-time 60 -o /dev/null --unix-socket "$DRIVER_SOCK" http://driver/quit || fail "the browser driver did not quit"
  wait "$DRIVER_PID" || fail "the browser driver exited with $?: $(cat "$RT/driver.log")"
  local p kept=()
  for p in "${CLEANUP_SERVICES[@]}"; do [ "$p" = "$DRIVER_PID" ] || kept+=("$p"); done
  CLEANUP_SERVICES=("${kept[@]}")
}

say "browser: log in with the link, set a password, prerequisites PASS, wrong proxy FAIL, regenerate the key"
run_phase setup
[ -s "$KEY_FILE" ] || fail "the driver read no key"
out=$(curl -sk -o /dev/null -w '%{http_code}' -X POST --data-urlencode "token=${link#*token=}" "$WEB_URL/api/login")
[ "$out" = 401 ] || fail "the one-time login link worked twice (HTTP $out)"
grep -q '^proxy=$' "$RT/app/appliance.conf" || fail "the driver's proxy was not cleared: $(grep proxy "$RT/app/appliance.conf")"

say "a real agent registers with the page's key, protects a loop disk, syncs"
RPL_KEY=$(cat "$KEY_FILE") rpl_agent_register
rpl_loop dev 64M half
rpl_agent_start
"$AG" protect "$dev" --state "$RT/agent" > "$RT/protect.out" || fail "protect failed: $(cat "$RT/protect.out")"
rpl_wait_cycle "$dev" 1
export DISK_ID=$(rpl_disk_id "$dev")
export AGENT_HOST=$(hostname)

say "browser: the agent and the disk before any point"
EXPECT_POINT= run_phase disk > "$RT/before.json"
cat "$RT/before.json"

say "checkpoint --wait, then the browser shows the point and the RPO"
point=$("$AG" checkpoint "$dev" --wait --state "$RT/agent" | tail -n 1) || fail "checkpoint failed"
[[ $point == rp-* ]] || fail "checkpoint's last line is not a point: $point"
EXPECT_POINT=$point run_phase disk > "$RT/after.json"
cat "$RT/after.json"
python3 - "$RT/before.json" "$RT/after.json" "$point" <<'PY' || fail "the page did not update"
import json, sys
b, a = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
assert b["last_point"] == "none", b
assert a["last_point"].startswith(sys.argv[3] + " ("), a
assert a["rpo"].endswith(" s") and int(a["rpo"].split()[0]) < 60, a
PY

say "browser: the page's own Checkpoint button"
EXPECT_POINT=$point run_phase checkpoint > "$RT/page-point.json"
cat "$RT/page-point.json"
[ "$("$AP" status --state "$RT/app" --json | json_field - disks.0.last_point)" != "$point" ] \
  || fail "status does not show the point made from the page"

say "browser: the page's Resync button; the appliance runs a resync cycle (the whole disk again)"
# The newest resync cycle in the catalog (read-only): its number, and the bytes it carried.
last_resync() {
  python3 - "$RT/app/catalog.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect("file:" + sys.argv[1] + "?mode=ro", uri=True, timeout=10)
row = db.execute("SELECT n, raw_bytes FROM cycles WHERE kind = 'resync' ORDER BY n DESC LIMIT 1").fetchone()
print("%d %d" % (row if row else (0, 0)))
PY
}
read -r before _ < <(last_resync)
run_phase resync
# (into resync_n and resync_raw: a plain n would be wait_until's own loop count, which it calls this in)
resync_after() { read -r resync_n resync_raw < <(last_resync); [ "$resync_n" -gt "$1" ]; }
wait_until -i 0.2 120 "" resync_after "$before" \
  || fail "no resync cycle in 120 s after the page asked for one (last: cycle $resync_n)"
[ "$resync_raw" -eq "$(blockdev --getsize64 "$dev")" ] \
  || fail "the resync cycle $resync_n carried $resync_raw bytes, not the whole disk"

say "browser: the page's Unprotect (a wrong id typed deletes nothing; cancelled: the replica is kept)"
run_phase unprotect > "$RT/unprotect.json"
cat "$RT/unprotect.json"
forgotten() { [ "$("$AG" status --state "$RT/agent" --json | json_field - disks)" = "[]" ]; }
wait_until -i 0.2 60 "the agent still lists $dev after the page's Unprotect" forgotten
"$AG" cbt status "$dev" --state "$RT/agent" >/dev/null 2>&1 && fail "$dev is still tracked after the page's Unprotect"
[ "$("$AP" status --state "$RT/app" --json | json_field - disks.0.state)" = unprotected ] \
  || fail "the appliance does not show the disk unprotected"
"$AP" points --state "$RT/app" --disk "$DISK_ID" | grep -q "$point" || fail "the unprotected disk's point $point is gone"

say "browser: revoke the agent; its session ends and it cannot come back"
run_phase revoke
driver_stop
session_ended() { # the agent revoked and its disk no longer connected
  local v
  mapfile -t v < <("$AP" status --state "$RT/app" --json | json_field - agents.0.revoked disks.0.connected)
  [ "${v[0]:-}" = true ] && [[ ${v[1]:-} == false || ${v[1]:-} == null ]]
}
wait_until -i 0.2 90 "" session_ended || fail "the revoked agent's session did not end in 90 s"
grep -q "revoked: session ended" "$RT/appliance.log" || fail "the appliance did not end the revoked agent's session"

ls "$SHOT_DIR"/*.png > /dev/null || fail "no screenshots"
echo "web_ui: ok (points $point and $(json_field "$RT/page-point.json" last_point); screenshots in $SHOT_DIR)"
