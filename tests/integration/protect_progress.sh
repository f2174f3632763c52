#!/usr/bin/env bash
# protect_progress.sh - Description: `mobility-agent protect` on a terminal (script -qc) follows the
# initial sync in place (percent, MB/s, ETA) until it completes, `status` shows the same figures
# during the sync, --no-wait on a terminal and a plain (non-terminal) protect return at once as before;
# a disk over the 8 TiB of a page blob is refused at once, with that reason; the agent's boot readiness
# (mobility-agent check) reaches the appliance's status, per agent.
set -u
. "$(dirname "$0")/lib/replication.sh"
rpl_setup 400
command -v script >/dev/null || { echo "SKIP: needs script(1) (util-linux)"; exit 77; }

rpl_appliance_init
rpl_appliance_start --rpo 1
rpl_agent_register
rpl_agent_start

until_deadline() { # SECONDS COMMAND...: polls COMMAND every 50 ms until it succeeds or SECONDS pass
  local secs=$1; shift
  wait_until -i 0.05 "$secs" "" "$@"
}

ag_json() { # DEV FIELD: a field of DEV in the agent's status --json
  "$AG" status --state "$RT/agent" --json | json_field - "disks.[device=$1].$2"
}

say "a 9 TiB disk (sparse) is refused: a page blob holds 8 TiB"
rpl_loop big 9T zero
"$AG" protect "$big" --state "$RT/agent" > "$RT/big.out" 2> "$RT/big.err" && fail "protect accepted a 9 TiB disk"
[ "$(wc -l < "$RT/big.err")" -eq 1 ] && grep -q "^mobility-agent protect: $big is 9.00 TiB, over the 8 TiB" "$RT/big.err" \
  || fail "protect of a 9 TiB disk said: $(cat "$RT/big.err")"
[ "$("$AG" status --state "$RT/agent" --json | json_field -d none - "disks.[device=$big].state")" = none ] \
  || fail "the refused disk is in the agent's status"

say "not a terminal: protect returns at once, as before"
rpl_loop plain 64M zero
"$AG" protect "$plain" --state "$RT/agent" > "$RT/plain.out" || fail "protect failed: $(cat "$RT/plain.out")"
[ "$(wc -l < "$RT/plain.out")" -eq 1 ] && grep -q "^protecting $plain as disk" "$RT/plain.out" \
  || fail "non-terminal protect printed: $(cat "$RT/plain.out")"
rpl_wait_cycle "$plain" 1

say "the agent's boot readiness is in the appliance's status, as check reports it"
ap_readiness() { "$AP" status --state "$RT/app" --json | json_field - "agents.0.readiness.$1"; }
has_readiness() { ap_readiness checks >/dev/null 2>&1; }
wait_until 30 "no readiness in the appliance's status" has_readiness
"$AG" check --state "$RT/agent" --json > "$RT/check.json" 2>/dev/null
[ "$(ap_readiness checks)" -eq "$(json_field "$RT/check.json" checks | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" ] \
  || fail "status shows $(ap_readiness checks) readiness checks, check ran $(json_field "$RT/check.json" checks)"
[ "$(ap_readiness failed)" -eq "$(grep -o '"result":"FAIL"' "$RT/check.json" | wc -l)" ] \
  || fail "status shows $(ap_readiness failed) failed readiness checks; check: $(cat "$RT/check.json")"
[ "$(ap_readiness generation)" = "$(json_field "$RT/check.json" generation)" ] || fail "readiness generations differ"
"$AP" status --state "$RT/app" | grep -q "boot readiness: " || fail "the text status has no boot readiness line"

say "a terminal with --no-wait: returns at once"
rpl_loop nowait 64M zero
script -qec "$AG protect $nowait --no-wait --state $RT/agent" /dev/null > "$RT/nowait.out" </dev/null \
  || fail "protect --no-wait failed: $(cat "$RT/nowait.out")"
grep -q "protecting $nowait as disk" "$RT/nowait.out" || fail "protect --no-wait printed: $(cat "$RT/nowait.out")"
grep -q "complete" "$RT/nowait.out" && fail "protect --no-wait followed the sync"
rpl_wait_cycle "$nowait" 1

say "a terminal: protect follows the initial sync of a 256 MiB disk of random data"
rpl_loop dev 256M random
script -qefc "$AG protect $dev --state $RT/agent" /dev/null > "$RT/tty.out" </dev/null &
spid=$!
CLEANUP_PIDS+=("$spid")
# Hold the appliance while the sync is under way: the agent's progress then stands still, short of
# the end, while the terminal and status show it. The phase turns initial-sync when the cycle starts and stays so until the appliance ACKs it, which a
# held appliance cannot: polled without python (status --progress), so the hold comes within a few
# MiB of the start, long before the end of 256 MiB.
sync_started() { [[ $("$AG" status --progress "$dev" --state "$RT/agent" 2>/dev/null) == initial-sync* ]]; }
until_deadline 120 sync_started || { tail -n 20 "$RT/agent.log" "$RT/appliance.log" >&2; fail "the initial sync of $dev did not start"; }
say "the sync is under way: the appliance is held while the terminal and status show it"
kill -STOP "$RPL_AP_PID"
total=$((256 << 20))
total_is_size() { [ "$(ag_json "$dev" cycle_total_bytes)" -eq "$total" ]; }
until_deadline 30 total_is_size || { kill -CONT "$RPL_AP_PID"; fail "status: cycle_total_bytes $(ag_json "$dev" cycle_total_bytes), expected the disk's size"; }
[ "$(ag_json "$dev" cycle_done_bytes)" -lt "$total" ] || { kill -CONT "$RPL_AP_PID"; fail "the sync ended before it could be held"; }
until_deadline 30 grep -aq "% of 256 MiB, [0-9]* MB/s, ETA [0-9]*:[0-9][0-9]" "$RT/tty.out"
grep -aq "% of 256 MiB, [0-9]* MB/s, ETA [0-9]*:[0-9][0-9]" "$RT/tty.out" \
  || { kill -CONT "$RPL_AP_PID"; fail "no progress line on the terminal: $(cat -v "$RT/tty.out")"; }
grep -aq $'\r\e\\[K' "$RT/tty.out" || { kill -CONT "$RPL_AP_PID"; fail "the progress line is not redrawn in place"; }
st=$("$AG" status --state "$RT/agent")
[[ $st == *"$dev "*"initial-sync, cycle "*"% of 256 MiB, "*" MB/s, ETA "* ]] \
  || { kill -CONT "$RPL_AP_PID"; fail "status during the sync: $st"; }
eta=$(ag_json "$dev" cycle_eta_seconds)
rate=$(ag_json "$dev" cycle_bytes_per_second)
[ "$eta" != null ] && [ "$rate" -gt 0 ] || { kill -CONT "$RPL_AP_PID"; fail "status --json: eta $eta, rate $rate"; }
kill -CONT "$RPL_AP_PID"
say "the appliance goes on: protect returns when the sync is acknowledged"
protect_ended() { ! kill -0 "$spid" 2>/dev/null; }
until_deadline 240 protect_ended || fail "protect on a terminal did not return: $(cat -v "$RT/tty.out")"
wait "$spid" || fail "protect on a terminal failed: $(cat -v "$RT/tty.out")"
grep -aq "initial sync of $dev complete (256 MiB" "$RT/tty.out" || fail "no completion line: $(cat -v "$RT/tty.out")"
[ "$(rpl_agent_cycle "$dev")" -ge 1 ] || fail "protect returned before the initial sync was acknowledged"
[ "$(ag_json "$dev" state)" = protected ] || fail "the disk is not protected after protect returned"
say "ok"
