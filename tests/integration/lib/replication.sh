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
#                            (with --web off unless ARGS has --web ADDR:PORT)
# rpl_agent_register         register the agent with RPL_KEY
# rpl_agent_start [ARGS]     run the agent, wait for its control socket
# rpl_wait_cycle DEV N       wait until the agent has an ACKed cycle >= N for DEV (120 s at most)

set -o pipefail
fail() { echo "FAIL: $*" >&2; exit 1; }
say() { echo "-- $*"; }

RPL_PIDS=()
RPL_LOOPS=()
RPL_MOUNTS=()

rpl_cleanup() {
  local pid m l
  trap - TERM INT
  if [ -n "${RPL_DEADLINE_PID:-}" ]; then
    local sleeper
    sleeper=$(pgrep -P "$RPL_DEADLINE_PID" sleep)
    kill "$RPL_DEADLINE_PID" 2>/dev/null
    [ -n "$sleeper" ] && kill $sleeper 2>/dev/null
  fi
  for pid in "${RPL_PIDS[@]}"; do kill -9 "$pid" 2>/dev/null; done
  for pid in "${RPL_PIDS[@]}"; do wait "$pid" 2>/dev/null; done
  for m in "${RPL_MOUNTS[@]}"; do
    fsfreeze -u "$m" 2>/dev/null
    umount "$m" 2>/dev/null
  done
  if [ -n "${AG:-}" ] && [ -d "${RT:-}/agent" ]; then
    for l in "${RPL_LOOPS[@]}"; do "$AG" cbt stop "$l" --state "$RT/agent" >/dev/null 2>&1; done
  fi
  for l in "${RPL_LOOPS[@]}"; do losetup -d "$l" 2>/dev/null; done
  [ -n "${MOBILITY_AGENT_BPF_PIN_DIR:-}" ] && rm -rf "$MOBILITY_AGENT_BPF_PIN_DIR"
  [ -n "${RT:-}" ] && rm -rf "$RT"
}

rpl_setup() {
  [ "$(id -u)" -eq 0 ] || { echo "SKIP: needs root (loop devices, eBPF)"; exit 77; }
  B=${RPL_BUILD_DIR:?run under ctest}
  AG=$B/agent/mobility-agent
  AP=$B/appliance/replication-appliance
  RT=$(mktemp -d /var/tmp/rpl-e2e.XXXXXX)
  trap rpl_cleanup EXIT
  trap 'echo "FAIL: the test ran out of time" >&2; exit 1' TERM INT
  # Its own output goes nowhere: a sleeper holding the test's stdout would keep ctest waiting.
  ( sleep "${1:-500}" && kill -TERM $$ ) >/dev/null 2>&1 </dev/null &
  RPL_DEADLINE_PID=$!
  mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf || fail "no bpffs"
  export MOBILITY_AGENT_BPF_PIN_DIR=/sys/fs/bpf/rpl-e2e-$$
}

rpl_loop() {
  local _var=$1 _size=$2 _fill=${3:-zero} _f _dev
  _f=$(mktemp "$RT/disk.XXXXXX")
  truncate -s "$_size" "$_f"
  case "$_fill" in
    random) head -c "$(numfmt --from=iec "$_size")" /dev/urandom > "$_f" ;;
    half)   head -c $(( $(numfmt --from=iec "$_size") / 2 )) /dev/urandom | dd of="$_f" conv=notrunc status=none ;;
  esac
  _dev=$(losetup --find --show "$_f") || fail "losetup failed"
  RPL_LOOPS+=("$_dev")
  printf -v "$_var" '%s' "$_dev"
}

rpl_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

rpl_appliance_init() {
  "$AP" init --state "$RT/app" --storage "file:$RT/replica" > "$RT/init.out" || fail "init failed"
  RPL_KEY=$(tail -n 1 "$RT/init.out")
  [[ $RPL_KEY == rk1-* ]] || fail "init's last line is not a registration key: $RPL_KEY"
}

rpl_azurite_start() {
  . "$(dirname "${BASH_SOURCE[0]}")/azurite.sh"
  azurite_start "$@"
  trap 'rpl_cleanup; az_cleanup' EXIT
}

rpl_appliance_init_azure() {
  "$AP" init --state "$RT/app" --storage "$AZ_CONNSTR" --container "${RPL_CONTAINER:-replicas}" \
    --private-dns-zone "$AZ_ZONE" --ca-file "$AZ_CA" > "$RT/init.out" || fail "init with Azurite failed"
  RPL_KEY=$(tail -n 1 "$RT/init.out")
  [[ $RPL_KEY == rk1-* ]] || fail "init's last line is not a registration key: $RPL_KEY"
}

rpl_appliance_start() {
  [ -n "${RPL_PORT:-}" ] || RPL_PORT=$(rpl_free_port)
  # The configuration manager only where a test asks for it (--web): its default port is shared.
  local web=(--web off)
  [[ " $* " == *" --web "* ]] && web=()
  "$AP" run --state "$RT/app" --listen "127.0.0.1:$RPL_PORT" "${web[@]}" "$@" >> "$RT/appliance.log" 2>&1 &
  RPL_AP_PID=$!
  RPL_PIDS+=("$RPL_AP_PID")
  local i
  for i in $(seq 1 200); do
    [ -S "$RT/app/control.sock" ] && "$AP" status --state "$RT/app" >/dev/null 2>&1 && return 0
    kill -0 "$RPL_AP_PID" 2>/dev/null || { cat "$RT/appliance.log" >&2; fail "the appliance exited"; }
    sleep 0.05
  done
  fail "the appliance did not come up"
}

rpl_agent_register() {
  "$AG" register --appliance "127.0.0.1:$RPL_PORT" --key "$RPL_KEY" --state "$RT/agent" > "$RT/register.out" \
    || fail "register failed"
}

rpl_agent_start() {
  "$AG" run --state "$RT/agent" "$@" >> "$RT/agent.log" 2>&1 &
  RPL_AG_PID=$!
  RPL_PIDS+=("$RPL_AG_PID")
  local i
  for i in $(seq 1 200); do
    "$AG" status --state "$RT/agent" >/dev/null 2>&1 && return 0
    kill -0 "$RPL_AG_PID" 2>/dev/null || { cat "$RT/agent.log" >&2; fail "the agent exited"; }
    sleep 0.05
  done
  fail "the agent did not come up"
}

# The agent's last ACKed cycle of DEV (0 if none yet).
rpl_agent_cycle() {
  "$AG" status --state "$RT/agent" --json 2>/dev/null | python3 -c '
import json, sys
d = json.load(sys.stdin)
print(next((x["last_cycle"] for x in d["disks"] if x["device"] == sys.argv[1]), 0))' "$1"
}

rpl_wait_cycle() {
  local dev=$1 want=$2 i c=0
  for i in $(seq 1 1200); do
    c=$(rpl_agent_cycle "$dev" || echo 0)
    [ "${c:-0}" -ge "$want" ] && return 0
    sleep 0.1
  done
  tail -20 "$RT/agent.log" "$RT/appliance.log" >&2
  fail "$dev: cycle $want not reached in 120 s (at $c)"
}

# The replica image of the (only) disk: RT/replica/<disk id>.img
rpl_replica_of() {
  local id
  id=$("$AG" status --state "$RT/agent" --json | python3 -c '
import json, sys
d = json.load(sys.stdin)
print(next(x["disk_id"] for x in d["disks"] if x["device"] == sys.argv[1]))' "$1")
  echo "$RT/replica/$id.img"
}
