# cbt_lib.sh - sourced by the tracker's integration tests: skips (77) without root or loop devices,
# gives each test a private tracker instance (pin directory) and state directory, and cleans up
# exactly what the test made, even on failure.
b=${RPL_BUILD_DIR:?run under ctest}
AGENT=$b/agent/mobility-agent
TOOL=$b/tests/cbt_testtool
fail() { echo "FAIL: $*" >&2; exit 1; }
skip() { echo "SKIP: $*" >&2; exit 77; }
[ "$(id -u)" -eq 0 ] || skip "needs root (loop devices, eBPF)"
command -v losetup >/dev/null || skip "losetup is missing (util-linux)"
[ -e /dev/loop-control ] || modprobe loop 2>/dev/null || true
[ -e /dev/loop-control ] || skip "no loop device support"

WORK=$(mktemp -d /tmp/cbt-test.XXXXXX) || fail "mktemp"
STATE=$WORK/state
# A private tracker instance: the test's programs and maps never touch a real agent's.
export MOBILITY_AGENT_BPF_PIN_DIR=/sys/fs/bpf/rpl-test-$$
LOOPS=()
PIDS=()
EXTRA_CLEANUP=()  # paths a test made besides WORK, removed last

cbt_cleanup() {
  local rc=$?
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
  wait 2>/dev/null
  for l in "${LOOPS[@]}"; do "$AGENT" cbt stop "$l" --state "$STATE" >/dev/null 2>&1; done
  for l in "${LOOPS[@]}"; do losetup -d "$l" 2>/dev/null; done
  rm -rf "$MOBILITY_AGENT_BPF_PIN_DIR"
  rm -rf "$WORK" "${EXTRA_CLEANUP[@]}"
  exit $rc
}
trap cbt_cleanup EXIT
trap 'exit 1' INT TERM

# make_loop FILE SIZE [losetup options...]: sets LOOP to a new loop device over FILE.
make_loop() {
  local file=$1 size=$2
  shift 2
  [ -e "$file" ] || truncate -s "$size" "$file" || fail "cannot create $file"
  LOOP=$(losetup --find --show "$@" "$file") || fail "losetup failed for $file"
  LOOPS+=("$LOOP")
}

# cbt ARGS...: the agent's cbt command on the test's state directory.
cbt() { "$AGENT" cbt "$@" --state "$STATE"; }

# json_number FIELD < JSON: the first numeric value of "FIELD".
json_number() { grep -o "\"$1\":[0-9]*" | head -1 | cut -d: -f2; }
