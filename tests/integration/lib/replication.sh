# replication.sh - sourced by the end-to-end tests: both daemons as real processes over TLS on
# loopback, file-backed loop disks, and one trap that removes all of it (only what the test made)
# however the test ends. Needs root (loop devices, eBPF); exits 77 (skip) otherwise.
#
# rpl_setup [SECONDS]        temp dir RT, a private bpffs pin dir, the programs AG and AP; the test
#                            ends itself (cleaning up) after SECONDS (default 500), before ctest would
#                            kill it without a chance to clean up
# rpl_loop VAR SIZE [FILL]   a loop disk on a new file (FILL: zero|random|half) into $VAR (not in a
#                            subshell: the trap must know it)
# rpl_appliance_init         init with file: storage; RPL_KEY = a fresh registration key
# rpl_azurite_start          Azurite over HTTPS (lib/azurite.sh: AZ_CONNSTR, AZ_ZONE, AZ_CA), stopped
#                            by the same trap after the daemons
# rpl_appliance_init_azure   init with that Azurite through the zone file and the test CA
# rpl_appliance_start [ARGS] run the appliance on a free port (RPL_PORT), wait for its socket
#                            (with --web off unless ARGS has --web ADDR:PORT, and no scheduled
#                            points unless ARGS has --points: the tests count their own points)
# rpl_agent_register         register the agent with RPL_KEY
# rpl_agent_start [ARGS]     run the agent, wait for its control socket
# rpl_wait_cycle DEV N       wait until the agent has an ACKed cycle >= N for DEV (120 s at most)
# rpl_agent_cycle DEV        the agent's last ACKed cycle of DEV; rpl_disk_id DEV its disk id
# Cleanup is lib/common.sh's trap: processes go into CLEANUP_PIDS (kill -9), loops, mounts, paths.

set -o pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# Before a loop device is detached: the tracker on it stopped (the agent's pins are the test's own).
cleanup_loop_hook() {
  [ -n "${AG:-}" ] && [ -d "${RT:-}/agent" ] && "$AG" cbt stop "$1" --state "$RT/agent" >/dev/null 2>&1
  return 0
}

# Stops the deadline timer (rpl_setup) and its sleeper, so that neither outlives the test.
rpl_stop_deadline() {
  trap - TERM INT
  if [ -n "${RPL_DEADLINE_PID:-}" ]; then
    local sleeper
    sleeper=$(pgrep -P "$RPL_DEADLINE_PID" sleep)
    kill "$RPL_DEADLINE_PID" 2>/dev/null
    [ -n "$sleeper" ] && kill $sleeper 2>/dev/null
  fi
}

rpl_setup() {
  [ "$(id -u)" -eq 0 ] || { echo "SKIP: needs root (loop devices, eBPF)"; exit 77; }
  B=${RPL_BUILD_DIR:?run under ctest}
  AG=$B/agent/mobility-agent
  AP=$B/appliance/replication-appliance
  RT=$(mktemp -d /var/tmp/rpl-e2e.XXXXXX)
  CLEANUP_PATHS+=("$RT")
  CLEANUP_FIRST+=(rpl_stop_deadline)
  trap 'echo "FAIL: the test ran out of time" >&2; exit 1' TERM INT
  # Its own output goes nowhere: a sleeper holding the test's stdout would keep ctest waiting.
  ( sleep "${1:-500}" && kill -TERM $$ ) >/dev/null 2>&1 </dev/null &
  RPL_DEADLINE_PID=$!
  mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf || fail "no bpffs"
  export MOBILITY_AGENT_BPF_PIN_DIR=/sys/fs/bpf/rpl-e2e-$$
  # (the tracker records each slot's owner under /run/mobility-agent/slots/<pin directory, '/' as '_'>)
  CLEANUP_PATHS+=("$MOBILITY_AGENT_BPF_PIN_DIR" "/run/mobility-agent/slots/sys_fs_bpf_rpl-e2e-$$")
}

rpl_loop() {
  local _var=$1 _size=$2 _fill=${3:-zero} _f
  _f=$(mktemp "$RT/disk.XXXXXX")
  truncate -s "$_size" "$_f"
  case "$_fill" in
    random) head -c "$(numfmt --from=iec "$_size")" /dev/urandom > "$_f" ;;
    half)   head -c $(( $(numfmt --from=iec "$_size") / 2 )) /dev/urandom | dd of="$_f" conv=notrunc status=none ;;
  esac
  loop_attach "$_var" "$_f" "$_size"
}

rpl_appliance_init() {
  "$AP" init --state "$RT/app" --storage "file:$RT/replica" > "$RT/init.out" || fail "init failed"
  RPL_KEY=$(tail -n 1 "$RT/init.out")
  [[ $RPL_KEY == rk1-* ]] || fail "init's last line is not a registration key: $RPL_KEY"
}

rpl_azurite_start() {
  . "$(dirname "${BASH_SOURCE[0]}")/azurite.sh"
  azurite_start "$@"
}

rpl_appliance_init_azure() { # [more init options]
  "$AP" init --state "$RT/app" --storage "$AZ_CONNSTR" --container "${RPL_CONTAINER:-replicas}" \
    --private-dns-zone "$AZ_ZONE" --ca-file "$AZ_CA" "$@" > "$RT/init.out" || fail "init with Azurite failed"
  RPL_KEY=$(tail -n 1 "$RT/init.out")
  [[ $RPL_KEY == rk1-* ]] || fail "init's last line is not a registration key: $RPL_KEY"
}

rpl_appliance_start() {
  [ -n "${RPL_PORT:-}" ] || RPL_PORT=$(free_port)
  # The configuration manager only where a test asks for it (--web): its default port is shared.
  local web=(--web off) points=(--points crash=off,app=off)
  [[ " $* " == *" --web "* ]] && web=()
  [[ " $* " == *" --points "* ]] && points=()
  "$AP" run --state "$RT/app" --listen "127.0.0.1:$RPL_PORT" "${web[@]}" "${points[@]}" "$@" >> "$RT/appliance.log" 2>&1 &
  RPL_AP_PID=$!
  CLEANUP_PIDS+=("$RPL_AP_PID")
  wait_until -i 0.05 10 "the appliance did not come up" rpl_appliance_up
}
rpl_appliance_up() {
  [ -S "$RT/app/control.sock" ] && "$AP" status --state "$RT/app" >/dev/null 2>&1 && return 0
  kill -0 "$RPL_AP_PID" 2>/dev/null || { cat "$RT/appliance.log" >&2; fail "the appliance exited"; }
  return 1
}

# (the key from a file, as an operator should give it: a --key argument is readable in /proc)
rpl_agent_register() {
  (umask 077 && printf '%s\n' "$RPL_KEY" > "$RT/regkey")
  "$AG" register --appliance "127.0.0.1:$RPL_PORT" --key-file "$RT/regkey" --state "$RT/agent" > "$RT/register.out" \
    || fail "register failed"
}

rpl_agent_start() {
  "$AG" run --state "$RT/agent" "$@" >> "$RT/agent.log" 2>&1 &
  RPL_AG_PID=$!
  CLEANUP_PIDS+=("$RPL_AG_PID")
  wait_until -i 0.05 10 "the agent did not come up" rpl_agent_up
}
rpl_agent_up() {
  "$AG" status --state "$RT/agent" >/dev/null 2>&1 && return 0
  kill -0 "$RPL_AG_PID" 2>/dev/null || { cat "$RT/agent.log" >&2; fail "the agent exited"; }
  return 1
}

# The agent's last ACKed cycle of DEV (0 if none yet).
rpl_agent_cycle() {
  "$AG" status --state "$RT/agent" --json 2>/dev/null | json_field -d 0 - "disks.[device=$1].last_cycle"
}

# The disk id the agent gave DEV.
rpl_disk_id() {
  "$AG" status --state "$RT/agent" --json | json_field - "disks.[device=$1].disk_id"
}

rpl_wait_cycle() {
  RPL_WAIT_C=0
  if ! wait_until 120 "" rpl_cycle_reached "$1" "$2"; then
    tail -n 20 "$RT/agent.log" "$RT/appliance.log" >&2
    fail "$1: cycle $2 not reached in 120 s (at $RPL_WAIT_C)"
  fi
}
rpl_cycle_reached() {
  RPL_WAIT_C=$(rpl_agent_cycle "$1" || echo 0)
  [ "${RPL_WAIT_C:-0}" -ge "$2" ]
}

# rpl_disk_applied ID: the appliance has applied every cycle of disk ID it committed, read from one
# status document (two reads would race the cycles committed between them).
rpl_disk_applied() {
  local v
  mapfile -t v < <("$AP" status --state "$RT/app" --json |
    json_field - "disks.[disk_id=$1].last_applied_cycle" "disks.[disk_id=$1].last_committed_cycle")
  [ "${#v[@]}" -eq 2 ] && [ "${v[0]}" -ge "${v[1]}" ]
}

# The replica image of DEV: RT/replica/<disk id>.img
rpl_replica_of() {
  local id
  id=$(rpl_disk_id "$1")
  echo "$RT/replica/$id.img"
}

# rpl_expect_deleted ID: nothing of deleted disk ID is left on the appliance: its cache (journal
# folder), its catalog rows (disk, cycles, points) and, with file: storage, its image and kept point
# images.
rpl_expect_deleted() {
  local id=$1 rows
  [ ! -e "$RT/app/journal/$id" ] || fail "the deleted disk's cache (journal folder) is still there"
  if [ -d "$RT/replica" ]; then
    [ ! -e "$RT/replica/$id.img" ] || fail "the deleted disk's image is still there"
    ls "$RT/replica/$id.img".* >/dev/null 2>&1 && fail "kept point images of the deleted disk are left: $(ls "$RT/replica")"
  fi
  rows=$(python3 - "$RT/app/catalog.db" "$id" <<'PY'
import sqlite3, sys, uuid
db = sqlite3.connect(sys.argv[1])
i = uuid.UUID(sys.argv[2]).bytes
print(sum(db.execute("SELECT count(*) FROM %s WHERE %s = ?" % t, (i,)).fetchone()[0]
          for t in (("disks", "id"), ("cycles", "disk_id"), ("recovery_points", "disk_id"))))
PY
  ) || fail "cannot read the catalog"
  [ "$rows" = 0 ] || fail "the catalog keeps $rows row(s) of the deleted disk"
}
