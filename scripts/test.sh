#!/usr/bin/env bash
# test.sh - the README's test command: set up, build both configurations, run every test.
#   release build (gcc, -Werror): unit + the integration tests not labelled asan
#   asan build (clang, ASan+UBSan, -Werror): unit + fuzz (each target RPL_FUZZ_SECONDS, 5 s) + the integration
#   tests labelled asan (they feed our decoders bad input or kill a daemon mid-work; each runs once,
#   there; see tests/CMakeLists.txt)
# Three tests at a time in each tree (the CI machine has 2 cores; many tests wait on leases, schedules
# and guests part of the time, so a third keeps the CPU busy); prints its wall time at the end and
# exits non-zero when anything failed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
start=$SECONDS
jobs=3
wall() { local s=$((SECONDS - start)); printf 'test.sh: wall time %dm%02ds\n' $((s / 60)) $((s % 60)); }
trap wall EXIT
bash "$root/scripts/setup.sh"

echo "== build: release"
bash "$root/scripts/build.sh" release
echo "== build: asan"
bash "$root/scripts/build.sh" asan

status=0
echo "== tests: release (unit, integration tests not labelled asan)"
(cd "$root/build" && ctest --output-on-failure -j "$jobs" -L 'unit|integration' -LE asan) || status=1
echo "== tests: asan+ubsan (unit, fuzz, integration tests labelled asan)"
# Under the sanitizers the crash test kills each daemon 6 times (the release run does 20).
(cd "$root/build-asan" && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
   RPL_CRASH_KILLS=6 ctest --output-on-failure -j "$jobs" -L 'unit|fuzz|asan') || status=1
if [ $status -ne 0 ]; then
  echo "test.sh: some tests failed (see above)" >&2
fi
exit $status
