#!/usr/bin/env bash
# test.sh - the README's test command: set up, build both configurations, run every test.
#   release build (gcc, -Werror): unit + integration
#   asan build (clang, ASan+UBSan, -Werror): unit + integration + fuzz (each target >= 60 s)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/scripts/setup.sh"

echo "== build: release"
bash "$root/scripts/build.sh" release
echo "== build: asan"
bash "$root/scripts/build.sh" asan

status=0
echo "== tests: release (unit, integration)"
(cd "$root/build" && ctest --output-on-failure -L 'unit|integration') || status=1
echo "== tests: asan+ubsan (unit, integration, fuzz)"
# Under the sanitizers the crash test kills each daemon 6 times (the release run does 20).
(cd "$root/build-asan" && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
   RPL_CRASH_KILLS=6 ctest --output-on-failure -L 'unit|integration|fuzz') || status=1
if [ $status -ne 0 ]; then
  echo "test.sh: some tests failed (see above)" >&2
fi
exit $status
