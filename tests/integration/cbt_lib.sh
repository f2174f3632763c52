# cbt_lib.sh - sourced by the tracker's integration tests: skips (77) without root or loop devices,
# gives each test a private tracker instance (pin directory) and state directory, and cleans up
# exactly what the test made, even on failure (lib/common.sh's trap).
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
b=${RPL_BUILD_DIR:?run under ctest}
AGENT=$b/agent/mobility-agent
TOOL=$b/tests/cbt_testtool
[ "$(id -u)" -eq 0 ] || skip "needs root (loop devices, eBPF)"
command -v losetup >/dev/null || skip "losetup is missing (util-linux)"
[ -e /dev/loop-control ] || modprobe loop 2>/dev/null || true
[ -e /dev/loop-control ] || skip "no loop device support"

# Paths a test makes besides WORK go into CLEANUP_PATHS before WORK's: they are removed after it.
WORK=$(mktemp -d /tmp/cbt-test.XXXXXX) || fail "mktemp"
STATE=$WORK/state
# A private tracker instance: the test's programs and maps never touch a real agent's.
export MOBILITY_AGENT_BPF_PIN_DIR=/sys/fs/bpf/rpl-test-$$
# The tracker records each slot's owner under /run/mobility-agent/slots/<pin directory, '/' as '_'>.
CBT_OWNERS_DIR=/run/mobility-agent/slots/$(tr / _ <<< "${MOBILITY_AGENT_BPF_PIN_DIR#/}")
CLEANUP_PATHS+=("$WORK" "$MOBILITY_AGENT_BPF_PIN_DIR" "$CBT_OWNERS_DIR")
cleanup_loop_hook() { "$AGENT" cbt stop "$1" --state "$STATE" >/dev/null 2>&1; }

# make_loop FILE SIZE [losetup options...]: sets LOOP to a new loop device over FILE.
make_loop() { loop_attach LOOP "$@"; }

# cbt ARGS...: the agent's cbt command on the test's state directory.
cbt() { "$AGENT" cbt "$@" --state "$STATE"; }

# cbt_field DEV PATH: a field of DEV's entry in cbt status --json (lib/common.sh's json_field path).
cbt_field() { cbt status "$1" --json | json_field - "devices.0.$2"; }

# check_variant: once the tracker is installed, cbt status names the variant running and why: the
# probe's verdict, or with MOBILITY_AGENT_CBT_VARIANT forced (the *_bounded and *_legacy entries of
# tests/CMakeLists.txt) that variant, naming the override; and which tracepoints it is attached to
# (legacy, for kernels before 5.12, has raw ones only). Sets VARIANT.
check_variant() {
  local doc variant running why forced=${MOBILITY_AGENT_CBT_VARIANT:-}
  doc=$(cbt status --json) || fail "cbt status --json exited $?"
  { read -r variant; read -r running; read -r why; } < <(json_field - ebpf.variant ebpf.variant_running ebpf.variant_reason <<<"$doc")
  [ "$running" = true ] || fail "cbt status: the tracker is installed but no variant runs: $doc"
  if [ -n "$forced" ] && [ "$forced" != auto ]; then
    [ "$variant" = "$forced" ] || fail "variant $variant runs, $forced was forced"
    [[ $why == *"forced by MOBILITY_AGENT_CBT_VARIANT=$forced"* ]] || fail "the reason does not name the override: '$why'"
  else
    [[ $variant =~ ^(bpf_loop|bounded|legacy)$ && $why == *"bpf_loop helper"* ]] || fail "variant '$variant' for reason '$why'"
    if [ "$variant" = legacy ]; then
      [[ $why == *"atomic OR"* ]] || fail "the legacy variant without the atomic OR probe's verdict: '$why'"
    fi
  fi
  # MOBILITY_AGENT_BTF (the *_raw_tp entries) gets the raw tracepoint programs, else BTF-typed ones.
  if [ -n "${MOBILITY_AGENT_BTF:-}" ] || [ "$variant" = legacy ]; then
    [[ $why == *"; raw tracepoints"* ]] || fail "MOBILITY_AGENT_BTF is set or the variant is legacy, but not raw tracepoints run: '$why'"
  else
    [[ $why == *"; BTF-typed tracepoints" ]] || fail "the kernel has its own BTF but not tp_btf programs run: '$why'"
  fi
  echo "variant $variant: $why"
  VARIANT=$variant
}

# marked_granularity GRAN: the granularity drained runs are widened to, for cbt_testtool compare: the
# legacy variant stores whole bytes of the bitmap (8 blocks), the others set single bits.
marked_granularity() { if [ "${VARIANT:-}" = legacy ]; then echo $(($1 * 8)); else echo "$1"; fi; }

# marked OFFSET LENGTH: the extent a drain reports for one write there at 4 KiB granularity.
marked() {
  local g
  g=$(marked_granularity 4096)
  echo "$(($1 / g * g)) $((($1 + $2 + g - 1) / g * g - $1 / g * g))"
}
