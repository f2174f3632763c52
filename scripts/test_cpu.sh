#!/usr/bin/env bash
# test_cpu.sh - each integration test's CPU time (its daemons, guests and browsers included), for
# keeping the suite inside its time budget: runs ctest in a built tree with every shell test in its
# own cpuacct cgroup (tests/integration/lib/common.sh, RPL_TEST_CPU_DIR) and prints the tests by CPU
# seconds, most first. Kernel threads working for a test (loop devices, writeback) are not counted.
#   bash scripts/test_cpu.sh [BUILD_DIR] [ctest arguments...]   (root; default: build -j2 -L integration)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-$root/build}
shift || true
[ $# -gt 0 ] || set -- -j2 -L integration
[ "$(id -u)" -eq 0 ] || { echo "test_cpu.sh: run as root (it makes a cgroup)" >&2; exit 1; }
base=/sys/fs/cgroup/cpuacct
[ -f "$base/cpuacct.usage" ] || { echo "test_cpu.sh: no cgroup v1 cpuacct hierarchy at $base" >&2; exit 1; }
cg=$(mktemp -d "$base/rpl-test-cpu.XXXXXX")
cleanup() { for g in "$cg"/*/; do [ -d "$g" ] && rmdir "$g"; done; rmdir "$cg"; }
trap cleanup EXIT
status=0
(cd "$dir" && RPL_TEST_CPU_DIR=$cg ctest "$@") || status=$?
echo "== CPU seconds per test (test.pid)"
for g in "$cg"/*/; do
  [ -d "$g" ] || continue
  printf '%8.1f  %s\n' "$(awk '{print $1 / 1e9}' "$g/cpuacct.usage")" "$(basename "$g")"
done | sort -rn | awk '{print; s += $1} END {printf "%8.1f  in all\n", s}'
exit $status
