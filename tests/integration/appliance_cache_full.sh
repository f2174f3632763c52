#!/usr/bin/env bash
# appliance_cache_full.sh - Description: a cycle bigger than the appliance's whole cache (a 32 MiB
# cache from RPL_TEST_CACHE_BYTES, 64 MiB written while the agent was stopped) is refused once as
# too big and sent next as a resync straight into the page blob, not again and again; then, with
# Azurite stopped, cycles fill the cache and the next is refused with "wait": the disk pauses
# (status says so on both sides, few refusals), a checkpoint is refused for the cache without
# ending the session, and once Azurite is back everything arrives. Each time the page blob ends
# equal to the disk and no disk is left in error.
set -u
. "$(dirname "$0")/lib/replication.sh"
rpl_setup 550
rpl_azurite_start
export BLOB_TEST_CONNSTR=$AZ_CONNSTR BLOB_TEST_ZONE=$AZ_ZONE BLOB_TEST_CA=$AZ_CA
export RPL_TEST_CACHE_BYTES=32M
MAX_REFUSALS=8 # a loop refuses a cycle every second or so; these pauses double from 2 s

# ap_disk FIELD...: the fields of the appliance's only disk in status --json
ap_disk() {
  local f args=()
  for f in "$@"; do args+=("disks.0.$f"); done
  "$AP" status --state "$RT/app" --json | json_field - "${args[@]}"
}
ag_disk() {
  "$AG" status --state "$RT/agent" --json | json_field - "disks.[device=$dev].$1"
}
# The page blob equals the disk, every committed cycle applied, nothing refused now, not in error.
settled() {
  local v
  mapfile -t v < <(ap_disk last_committed_cycle last_applied_cycle state cache_action)
  [ "${v[0]}" = "${v[1]}" ] && [ "${v[2]}" = protected ] && [ "${v[3]}" = null ] || return 1
  [ "$(ag_disk appliance_cache)" = null ] || return 1
  "$B/tests/blob_tool" download replicas "$disk_id.vhd" "$RT/blob" > "$RT/dl.out" 2>&1 || return 1
  cmp -s -n "$size" "$RT/blob" "$dev"
}
# Writes made, then a cycle started after them must be applied before the blob can equal the disk.
wait_settled() {
  local c
  c=$(rpl_agent_cycle "$dev")
  rpl_wait_cycle "$dev" $((c + 1))
  wait_until 180 "" settled || fail "$1: the page blob did not come to equal the disk: $("$AP" status --state "$RT/app"); $("$AG" status --state "$RT/agent")"
}
refusals() { ap_disk cache_refusals; }

rpl_appliance_init_azure
rpl_appliance_start --rpo 0.5
rpl_agent_register
rpl_agent_start
rpl_loop dev 128M half
"$AG" protect "$dev" --state "$RT/agent" > /dev/null || fail "protect failed"
disk_id=$(rpl_disk_id "$dev")
size=$(blockdev --getsize64 "$dev")
rpl_wait_cycle "$dev" 1
[ "$(ap_disk cache_limit_bytes)" = $((32 << 20)) ] || fail "RPL_TEST_CACHE_BYTES did not size the cache: $(ap_disk cache_limit_bytes)"

say "too big: 64 MiB written while the agent is stopped, so that one cycle carries them all"
kill -TERM "$RPL_AG_PID"
wait "$RPL_AG_PID" 2>/dev/null
dd if=/dev/urandom of="$dev" bs=1M count=64 seek=40 oflag=direct conv=notrunc status=none || fail "cannot write the disk"
ev_before=$("$AP" events --state "$RT/app" | tail -n 1 | json_field -d 0 - seq 2>/dev/null)
rpl_agent_start
wait_settled "too big"
n=$(refusals)
[ "$n" -ge 1 ] && [ "$n" -le 2 ] || fail "the cycle bigger than the cache was refused $n times (1 expected, then a resync)"
# The events say how it arrived: a resync written straight into the blob (not through the cache).
"$AP" events --state "$RT/app" --since "$ev_before" > "$RT/ev.json" || fail "events failed"
python3 - "$RT/ev.json" "$disk_id" <<'EOF' || fail "no direct resync after the refusal: $(cat "$RT/ev.json")"
import json, sys
ev = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
ok = [e for e in ev if e["type"] == "committed" and e["disk_id"] == sys.argv[2] and e["kind"] == "resync"
      and e.get("direct") and e["cycle"] > 1]
sys.exit(0 if ok else 1)
EOF
grep -q "resync the appliance's cache asked for compares" "$RT/agent.log" \
  || fail "the agent did not compare for the resync: $(tail -5 "$RT/agent.log")"
echo "too big: refused $n time(s), then sent as a direct resync; the page blob equals the disk"
n_before=$n

say "full now: Azurite stops, cycles fill the cache until one is refused with wait"
azurite_stop
seen_wait=""
wait_seen() {
  local v
  mapfile -t v < <(ap_disk cache_action cache_note cache_wait_seconds)
  [ "${v[0]}" = wait ] || return 1
  seen_wait="appliance: ${v[1]} (${v[2]} s); agent: $(ag_disk appliance_cache_note)"
}
taken_or_refused() { rpl_cycle_reached "$dev" "$1" || [ "$(ap_disk cache_action)" = wait ]; }
for i in 0 1 2 3 4 5 6 7; do
  c=$(rpl_agent_cycle "$dev")
  dd if=/dev/urandom of="$dev" bs=1M count=10 seek=$((i * 12)) oflag=direct conv=notrunc status=none \
    || fail "cannot write the disk"
  # Taken into the cache (the agent is ACKed), or refused: either ends this write's wait.
  wait_until 60 "" taken_or_refused $((c + 1))
  wait_seen && break
done
wait_until 60 "" wait_seen || fail "the cache never refused a cycle with wait: $("$AP" status --state "$RT/app")"
echo "while full: $seen_wait"
[ "$(ag_disk state)" != error ] && [ "$(ap_disk state)" != error ] || fail "a disk is in error while the cache is full"
agent_waits() { [ "$(ag_disk appliance_cache)" = wait ]; }
wait_until 30 "" agent_waits || fail "the agent's status does not show the wait: $("$AG" status --state "$RT/agent")"
# A point asked for meanwhile is refused for the cache (not made from a cycle that never arrived),
# and the session goes on.
sessions=$(grep -c "connected to the appliance" "$RT/agent.log")
if out=$(timeout 150 "$AG" checkpoint "$dev" --wait --state "$RT/agent" 2>&1); then
  fail "a point was made while the cache refused the disk's cycles: $out"
fi
[[ $out == *cache* ]] || fail "the checkpoint's refusal does not name the cache: $out"
[ "$(grep -c "connected to the appliance" "$RT/agent.log")" = "$sessions" ] \
  || fail "the session ended while the cache was full: $(tail -5 "$RT/agent.log")"
echo "checkpoint while full: $(tail -n 1 <<< "$out")"
azurite_restart
wait_settled "full now"
n=$(refusals)
[ "$n" -gt "$n_before" ] && [ "$n" -le $((n_before + MAX_REFUSALS)) ] \
  || fail "while the cache was full the cycles were refused $((n - n_before)) times (1 to $MAX_REFUSALS expected)"
echo "appliance_cache_full: ok ($((n - n_before)) wait refusal(s), then everything arrived; the page blob equals the disk)"
