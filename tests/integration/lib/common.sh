# common.sh - sourced by every shell integration test (directly or through azurite.sh, replication.sh,
# cbt_lib.sh): fail/skip/say, free_port, wait_until, json_field, loop_attach, and the one EXIT trap
# that removes what the test registered, in a fixed order, however the test ends.
#
# Cleanup: append to these arrays (never in a subshell: the trap must see them) and the trap does
#   CLEANUP_FIRST     commands (eval'd) run before anything else, e.g. stopping a deadline timer
#   CLEANUP_PIDS      processes killed with SIGKILL (the programs under test, writers)
#   CLEANUP_SERVICES  processes stopped with SIGTERM (Azurite, proxies, fake endpoints)
#   CLEANUP_MOUNTS    file systems thawed and unmounted, newest first
#   CLEANUP_LOOPS     loop devices (loop_attach adds them): cleanup_loop_hook DEV first if the test
#                     defines that function, then losetup -d (only these: never losetup -D)
#   CLEANUP_PATHS     files and directories removed last, newest first
# and then exits with the test's status.

[ -n "${RPL_COMMON_SH:-}" ] && return 0
RPL_COMMON_SH=1

# Debian's python3 (setup.sh installs it, with the modules the tests import) rather than whatever a
# version manager's shim puts first in PATH: a shim costs up to seconds per call on a loaded machine,
# and the tests call python3 for every JSON field they read. Through the command hash, not a
# function: `python3 ... &` must leave the interpreter itself as $! (a function would run in a
# subshell whose kill leaves the interpreter holding the test's output).
if [ -x /usr/bin/python3 ]; then hash -p /usr/bin/python3 python3; fi

# RPL_TEST_CPU_DIR (a cpuacct cgroup directory; scripts/test_cpu.sh): the test runs in its own cgroup
# under it, daemons and guests included, so that its CPU time can be read after the run.
# A script the test runs that sources this file again stays in the test's cgroup.
if [ -n "${RPL_TEST_CPU_DIR:-}" ] && [ -d "$RPL_TEST_CPU_DIR" ]; then
  rpl_cpu_arg=${1:-}
  [[ $rpl_cpu_arg == */* ]] && rpl_cpu_arg=
  rpl_cpu_group="$RPL_TEST_CPU_DIR/$(basename "$0" .sh)${rpl_cpu_arg:+-$rpl_cpu_arg}${MOBILITY_AGENT_CBT_VARIANT:+-$MOBILITY_AGENT_CBT_VARIANT}${MOBILITY_AGENT_BTF:+-raw_tp}.$$"
  mkdir "$rpl_cpu_group" && echo $$ >"$rpl_cpu_group/cgroup.procs"
  export RPL_TEST_CPU_DIR=
fi

fail() { echo "FAIL: $*" >&2; exit 1; }
skip() { echo "SKIP: $*" >&2; exit 77; }
say() { echo "-- $*"; }

CLEANUP_FIRST=()
CLEANUP_PIDS=()
CLEANUP_SERVICES=()
CLEANUP_MOUNTS=()
CLEANUP_LOOPS=()
CLEANUP_PATHS=()

cleanup_run() {
  local rc=$? c pid i
  trap - EXIT TERM INT
  for c in "${CLEANUP_FIRST[@]}"; do eval "$c"; done
  for pid in "${CLEANUP_PIDS[@]}"; do kill -9 "$pid" 2>/dev/null; done
  for pid in "${CLEANUP_SERVICES[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${CLEANUP_PIDS[@]}" "${CLEANUP_SERVICES[@]}"; do wait "$pid" 2>/dev/null; done
  for ((i = ${#CLEANUP_MOUNTS[@]} - 1; i >= 0; i--)); do
    fsfreeze -u "${CLEANUP_MOUNTS[i]}" 2>/dev/null
    umount "${CLEANUP_MOUNTS[i]}" 2>/dev/null
  done
  if declare -F cleanup_loop_hook >/dev/null; then
    for c in "${CLEANUP_LOOPS[@]}"; do cleanup_loop_hook "$c"; done
  fi
  for c in "${CLEANUP_LOOPS[@]}"; do losetup -d "$c" 2>/dev/null; done
  for ((i = ${#CLEANUP_PATHS[@]} - 1; i >= 0; i--)); do
    [ -n "${CLEANUP_PATHS[i]}" ] && rm -rf "${CLEANUP_PATHS[i]}"
  done
  exit "$rc"
}
trap cleanup_run EXIT
trap 'echo "FAIL: interrupted" >&2; exit 1' TERM INT

# free_port: a TCP port nobody listens on now (the kernel's choice); a caller that loses the race
# for it retries.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# wait_until [-i INTERVAL] LIMIT WHAT CMD [ARGS...]: runs CMD (in this shell) every INTERVAL seconds
# (default 0.1) until it succeeds, at most LIMIT/INTERVAL times (so never less than LIMIT seconds);
# then fails the test with "WHAT (not within LIMIT s)", after calling wait_until_report if the test
# defines it (to show its logs). With WHAT empty it returns 1 instead, for a caller that goes on.
wait_until() {
  local interval=0.1
  if [ "$1" = -i ]; then interval=$2; shift 2; fi
  local limit=$1 what=$2 n i
  shift 2
  n=$(awk -v l="$limit" -v s="$interval" 'BEGIN { n = int(l / s + 0.5); print (n < 1 ? 1 : n) }')
  for ((i = 1; i <= n; i++)); do
    "$@" && return 0
    [ "$i" -lt "$n" ] && sleep "$interval"
  done
  [ -n "$what" ] || return 1
  declare -F wait_until_report >/dev/null && wait_until_report
  fail "$what (not within $limit s)"
}

# json_field [-d DEFAULT] FILE|- PATH...: reads a JSON document (a file, or stdin for -) and prints
# the value at each PATH, each on its own line (several: mapfile -t, or one read per line, so that
# all come from the same document). A PATH is dot-separated steps: a key, a list
# index, or [KEY=VALUE] for the first list element whose KEY is VALUE, e.g. disks.[device=/dev/loop3].disk_id.
# Strings print bare, null/true/false as in JSON, lists and objects as JSON. A PATH that does not
# resolve prints DEFAULT with -d, else it is an error (message on stderr, status 1).
json_field() {
  local default=()
  if [ "$1" = -d ]; then default=(--default "$2"); shift 2; fi
  python3 -c "$RPL_JSON_FIELD_PY" "${default[@]}" "$@"
}
RPL_JSON_FIELD_PY='
import json, sys
args = sys.argv[1:]
default = None
if args[0] == "--default":
    default, args = args[1], args[2:]
src, paths = args[0], args[1:]
doc = json.load(sys.stdin if src == "-" else open(src))
def get(v, path):
    for step in path.split("."):
        if step.startswith("[") and step.endswith("]"):
            k, _, want = step[1:-1].partition("=")
            v = next(x for x in v if isinstance(x, dict) and str(x.get(k)) == want)
        elif isinstance(v, list):
            v = v[int(step)]
        else:
            v = v[step]
    return v
def show(v):
    return v if isinstance(v, str) else json.dumps(v)
out = []
for p in paths:
    try:
        out.append(show(get(doc, p)))
    except (KeyError, IndexError, ValueError, TypeError, StopIteration):
        if default is None:
            sys.exit("json_field: no %s in the document" % p)
        out.append(default)
print("\n".join(out))
'

# loop_attach VAR FILE SIZE [losetup options...]: a new loop device over FILE (made sparse, SIZE
# bytes or 64M-style, unless it exists) into $VAR, detached by the trap. Not in a subshell: the trap
# must know it.
loop_attach() {
  local _var=$1 _file=$2 _size=$3 _dev
  shift 3
  [ -e "$_file" ] || truncate -s "$_size" "$_file" || fail "cannot create $_file"
  _dev=$(losetup --find --show "$@" "$_file") || fail "losetup failed for $_file"
  CLEANUP_LOOPS+=("$_dev")
  printf -v "$_var" '%s' "$_dev"
}
