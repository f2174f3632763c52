# lib_bench.sh - sourced by bench/bench_*.sh: both daemons as real processes over TLS on loopback
# (as tests/integration/lib/replication.sh drives them), loop disks, timing and /proc sampling, and
# one trap that removes everything the benchmark made (only that) however it ends. Needs root.
#
# bench_setup                     RT (temp dir), programs AG AP GEN, a private bpffs pin dir
# bench_loop VAR FILE             a loop device on FILE into $VAR (not in a subshell)
# bench_pair_start NAME RPO       appliance + agent with state in RT/NAME: sets PAIR_DIR, AP_PID, AG_PID
# bench_pair_stop NAME            SIGTERM both, wait, stop tracking of the disks it protected
# ap_field NAME KEY               a number from `replication-appliance status --json` (one disk)
# now                             seconds since the epoch, ns resolution
# proc_kb PID KEY                 VmRSS / VmHWM of PID in KiB
# proc_cpu_ticks PID              utime+stime of PID (all threads) in clock ticks
#
# BENCH_AP_ARGS / BENCH_AG_ARGS: more arguments for the next bench_pair_start's `replication-appliance
# run` / `mobility-agent run` (split on spaces), e.g. "--points crash=1m,app=off".
# BENCH_REPLICA_FS=xfs puts each pair's replica directory on a loop-mounted XFS (default: RT's
# file system). BENCH_KEEP_LOGS=DIR keeps the daemons' logs (copied into DIR at the end); RPL_LOG_LEVEL=debug
# makes them say more.

set -u
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
B=${RPL_BUILD_DIR:-$root/build}
AG=$B/agent/mobility-agent
AP=$B/appliance/replication-appliance
GEN=$B/bench/bench_gen
. "$root/bench/lib_events.sh"

BENCH_PIDS=()
BENCH_LOOPS=()
BENCH_TRACKED=()   # "DEVICE STATE_DIR"
BENCH_MOUNTS=()

die() { echo "bench: error: $*" >&2; exit 1; }
say() { echo "-- $*" >&2; }
now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"%.${2:-2}f\", $1 }"; }

bench_cleanup() {
  local pid l t
  for pid in "${BENCH_PIDS[@]}"; do kill -9 "$pid" 2>/dev/null; done
  for pid in "${BENCH_PIDS[@]}"; do wait "$pid" 2>/dev/null; done
  for t in "${BENCH_TRACKED[@]}"; do
    # shellcheck disable=SC2086
    set -- $t
    "$AG" cbt stop "$1" --state "$2" >/dev/null 2>&1
  done
  for l in "${BENCH_LOOPS[@]}"; do losetup -d "$l" 2>/dev/null; done
  for l in "${BENCH_MOUNTS[@]}"; do umount "$l" 2>/dev/null; done
  [ -n "${MOBILITY_AGENT_BPF_PIN_DIR:-}" ] && rm -rf "$MOBILITY_AGENT_BPF_PIN_DIR"
  if [ -n "${BENCH_KEEP_LOGS:-}" ] && [ -n "${RT:-}" ]; then # the daemons' logs, for a closer look
    mkdir -p "$BENCH_KEEP_LOGS" && (cd "$RT" && find . -name '*.log' -exec cp --parents {} "$BENCH_KEEP_LOGS" \;)
  fi
  [ -n "${RT:-}" ] && rm -rf "$RT"
}

bench_setup() {
  [ "$(id -u)" -eq 0 ] || die "needs root (loop devices, eBPF)"
  for p in "$AG" "$AP" "$GEN"; do [ -x "$p" ] || die "$p missing: bash scripts/build.sh release"; done
  RT=$(mktemp -d /var/tmp/rpl-bench.XXXXXX)
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
  mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf || die "no bpffs"
  export MOBILITY_AGENT_BPF_PIN_DIR=/sys/fs/bpf/rpl-bench-$$
}

bench_loop() {
  local _dev
  _dev=$(losetup --find --show "$2") || die "losetup failed"
  BENCH_LOOPS+=("$_dev")
  printf -v "$1" '%s' "$_dev"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# bench_unloop DEV: detach a loop device this benchmark made (and forget it, so the trap does not
# detach a later device of someone else that got the same number).
bench_unloop() {
  local l keep=()
  losetup -d "$1" 2>/dev/null
  for l in "${BENCH_LOOPS[@]}"; do [ "$l" = "$1" ] || keep+=("$l"); done
  BENCH_LOOPS=("${keep[@]}")
}

forget_pid() {
  local p keep=()
  for p in "${BENCH_PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  BENCH_PIDS=("${keep[@]}")
}

bench_pair_start() {
  local name=$1 rpo=$2 i key
  PAIR_DIR=$RT/$name
  mkdir -p "$PAIR_DIR"
  if [ "${BENCH_REPLICA_FS:-}" = xfs ]; then # the replica on an XFS file system of its own (points are reflinks)
    truncate -s 64G "$PAIR_DIR/xfs.img" && mkfs.xfs -q "$PAIR_DIR/xfs.img" && mkdir -p "$PAIR_DIR/replica" \
      && mount -o loop "$PAIR_DIR/xfs.img" "$PAIR_DIR/replica" || die "cannot make the XFS file system for the replica (xfsprogs)"
    BENCH_MOUNTS+=("$PAIR_DIR/replica")
  fi
  "$AP" init --state "$PAIR_DIR/app" --storage "file:$PAIR_DIR/replica" > "$PAIR_DIR/init.out" || die "appliance init failed"
  key=$(tail -n 1 "$PAIR_DIR/init.out")
  PAIR_PORT=$(free_port)
  # RPL_LOG_TIME=1: each line carries the time it was logged (for a reader of BENCH_KEEP_LOGS)
  # shellcheck disable=SC2086 # the extra arguments are words
  RPL_LOG_TIME=1 "$AP" run --state "$PAIR_DIR/app" --listen "127.0.0.1:$PAIR_PORT" --rpo "$rpo" ${BENCH_AP_ARGS:-} >> "$PAIR_DIR/appliance.log" 2>&1 &
  AP_PID=$!
  BENCH_PIDS+=("$AP_PID")
  for i in $(seq 1 200); do
    "$AP" status --state "$PAIR_DIR/app" >/dev/null 2>&1 && break
    kill -0 "$AP_PID" 2>/dev/null || { cat "$PAIR_DIR/appliance.log" >&2; die "the appliance exited"; }
    sleep 0.05
  done
  "$AG" register --appliance "127.0.0.1:$PAIR_PORT" --key "$key" --state "$PAIR_DIR/agent" > "$PAIR_DIR/register.out" \
    || die "register failed"
  # shellcheck disable=SC2086 # the extra arguments are words
  "$AG" run --state "$PAIR_DIR/agent" ${BENCH_AG_ARGS:-} >> "$PAIR_DIR/agent.log" 2>&1 &
  AG_PID=$!
  BENCH_PIDS+=("$AG_PID")
  for i in $(seq 1 200); do
    "$AG" status --state "$PAIR_DIR/agent" >/dev/null 2>&1 && return 0
    kill -0 "$AG_PID" 2>/dev/null || { cat "$PAIR_DIR/agent.log" >&2; die "the agent exited"; }
    sleep 0.05
  done
  die "the agent did not come up"
}

# bench_protect NAME DEVICE: protect DEVICE with the pair NAME (tracking is stopped by the trap).
bench_protect() {
  BENCH_TRACKED+=("$2 $RT/$1/agent")
  "$AG" protect "$2" --state "$RT/$1/agent" > "$RT/$1/protect.out" || die "protect failed: $(cat "$RT/$1/protect.out")"
}

bench_pair_stop() {
  local name=$1 t
  kill -TERM "$AP_PID" "$AG_PID" 2>/dev/null
  wait "$AG_PID" 2>/dev/null
  wait "$AP_PID" 2>/dev/null
  forget_pid "$AP_PID"
  forget_pid "$AG_PID"
  local keep=()
  for t in "${BENCH_TRACKED[@]}"; do
    # shellcheck disable=SC2086
    set -- $t
    if [ "$2" = "$RT/$name/agent" ]; then "$AG" cbt stop "$1" --state "$2" >/dev/null 2>&1; else keep+=("$t"); fi
  done
  BENCH_TRACKED=("${keep[@]}")
  if mountpoint -q "$RT/$name/replica"; then # BENCH_REPLICA_FS
    umount "$RT/$name/replica"
    keep=()
    for t in "${BENCH_MOUNTS[@]}"; do [ "$t" = "$RT/$name/replica" ] || keep+=("$t"); done
    BENCH_MOUNTS=("${keep[@]}")
  fi
  return 0
}

ap_field() {
  "$AP" status --state "$RT/$1/app" --json 2>/dev/null | grep -o "\"$2\":[0-9]*" | head -n 1 | cut -d: -f2
}

# The replica image of the only disk of pair NAME.
replica_of() {
  local f
  f=$(ls "$RT/$1/replica/"*.img 2>/dev/null | head -n 1)
  [ -n "$f" ] || die "no replica image in $RT/$1/replica"
  echo "$f"
}

# wait_applied NAME N [TIMEOUT_S]: until the appliance of NAME applied cycle N, read from its
# events (lib_events.sh). Sets T_COMMITTED and T_APPLIED to the times the appliance says cycle N was
# committed (journal or image fsynced, ACKed) and applied: its own time, not when it was seen.
wait_applied() {
  events_wait_applied "$RT/$1/app" "$2" "${3:-600}" \
    || { tail -5 "$RT/$1/agent.log" "$RT/$1/appliance.log" >&2; die "cycle $2 not applied in ${3:-600} s"; }
}

proc_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
proc_cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
# CHILDREN_CPU = CPU seconds (user + system) used so far by this shell's waited-for children
# (bash `times`; call it directly, not in $(...), where it would see the subshell's children)
children_cpu() {
  times > "$RT/.times"
  CHILDREN_CPU=$(tail -n 1 "$RT/.times" | awk '{ n = 0; for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); n += a[1] * 60 + a[2] } printf "%.2f", n }')
}
load_avg() { cut -d' ' -f1-3 /proc/loadavg; }

# median of the arguments (numbers)
median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
