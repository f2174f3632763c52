#!/usr/bin/env bash
# cbt_flip_stress.sh - Description: runs cbt_flip_stress (writers vs a drainer flipping every
# millisecond for 30 s; the drained copy must equal the device) on a tmpfs-backed loop device.
set -u
. "$(dirname "$0")/cbt_lib.sh"
seconds=${CBT_STRESS_SECONDS:-30}
backing=$(mktemp -d /dev/shm/cbt-stress.XXXXXX) || fail "mktemp in /dev/shm"
CLEANUP_PATHS=("$backing" "${CLEANUP_PATHS[@]}")
make_loop "$backing/disk.img" 64M
"$b/tests/cbt_flip_stress" "$LOOP" "$seconds" "$STATE"
