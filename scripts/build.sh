#!/usr/bin/env bash
# build.sh - configures and builds one of the project's build trees: release (gcc, warnings are
# errors) in build/, or asan (clang, ASan+UBSan, libFuzzer targets) in build-asan/.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
kind=${1:-release}
jobs=$(nproc)
case "$kind" in
  release) dir=$root/build
           cmake -S "$root" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRPL_WERROR=ON >/dev/null ;;
  asan)    dir=$root/build-asan
           cmake -S "$root" -B "$dir" -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang \
                 -DRPL_WERROR=ON -DRPL_SANITIZE=ON -DRPL_FUZZ=ON -DRPL_BENCH=OFF >/dev/null ;;
  *) echo "build.sh: unknown build kind '$kind' (release|asan)" >&2; exit 2 ;;
esac
cmake --build "$dir" -j "$jobs"
