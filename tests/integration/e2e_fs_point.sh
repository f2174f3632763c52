#!/usr/bin/env bash
# e2e_fs_point.sh - Description: ext4 mounted from a protected loop disk under a file-writing
# workload; a filesystem-consistent checkpoint (freeze) whose replica passes fsck -n and whose files
# match the checksums taken at the freeze (by the pre-freeze hook).
set -u
. "$(dirname "$0")/lib/replication.sh"
rpl_setup
command -v mkfs.ext4 >/dev/null || { echo "SKIP: needs mkfs.ext4"; exit 77; }

rpl_appliance_init
rpl_appliance_start --rpo 0.5
rpl_agent_register
rpl_loop dev 256M
mkfs.ext4 -q "$dev" || fail "mkfs.ext4 failed"
mkdir -p "$RT/mnt" "$RT/check"
mount "$dev" "$RT/mnt" || fail "mount failed"
CLEANUP_MOUNTS+=("$RT/mnt")

# The workload: files created, rewritten, renamed and removed all the time.
( cd "$RT/mnt" || exit 1
  i=0
  while :; do
    i=$((i + 1))
    head -c $((RANDOM * 4 + 1)) /dev/urandom > "f$((i % 50))"
    [ $((i % 7)) -eq 0 ] && mv -f "f$((i % 50))" "g$((i % 13))"
    [ $((i % 11)) -eq 0 ] && rm -f "g$((i % 13))"
    [ $((i % 5)) -eq 0 ] && sync -f .
  done ) &
workload=$!
CLEANUP_PIDS+=("$workload")

# At the freeze: stop the workload where it stands, flush, and record every file's checksum.
cat > "$RT/pre-freeze.sh" <<HOOK
#!/bin/sh
kill -STOP $workload
sync -f "$RT/mnt"
cd "$RT/mnt" && find . -type f ! -name '.*' -exec sha256sum {} + | sort -k2 > "$RT/sums.txt"
HOOK
chmod +x "$RT/pre-freeze.sh"
rpl_agent_start --pre-freeze-hook "$RT/pre-freeze.sh" --freeze-limit-ms 10000
"$AG" protect "$dev" --state "$RT/agent" >/dev/null || fail "protect failed"
rpl_wait_cycle "$dev" 1
c=$(rpl_agent_cycle "$dev")
rpl_wait_cycle "$dev" $((c + 4))   # a few cycles under the workload

out=$("$AG" checkpoint "$dev" --wait --state "$RT/agent") || fail "checkpoint failed: $out"
point=$(printf '%s\n' "$out" | tail -n 1)
[[ $out == *"application-consistent"* ]] || fail "the point (its pre-freeze hook ran) is not application-consistent: $out"
[ -s "$RT/sums.txt" ] || fail "the pre-freeze hook did not run"
grep -q "application-consistent" <("$AP" status --state "$RT/app") || fail "appliance status does not show the point's kind"
# The agent keeps how long the point's freeze held writers: one freeze, within the limit.
"$AG" status --state "$RT/agent" --json > "$RT/agent-status.json" || fail "agent status failed"
mapfile -t fz < <(json_field "$RT/agent-status.json" "disks.[device=$dev].freeze_ms.count" \
  "disks.[device=$dev].freeze_ms.p50" "disks.[device=$dev].freeze_ms.p99" "disks.[device=$dev].freeze_ms.max") \
  || fail "agent status has no freeze durations: $(cat "$RT/agent-status.json")"
[ "${fz[0]}" -eq 1 ] && [ "${fz[1]}" -le "${fz[2]}" ] && [ "${fz[2]}" -le "${fz[3]}" ] && [ "${fz[3]}" -le 10000 ] \
  || fail "freeze durations do not add up (count p50 p99 max: ${fz[*]})"

# The replica at the point: a copy, checked by fsck, mounted read-only, files compared.
replica=$(rpl_replica_of "$dev")
cp --sparse=always "$replica" "$RT/point.img"
kill -CONT "$workload"
fsck.ext4 -n -f "$RT/point.img" > "$RT/fsck.out" 2>&1 || { cat "$RT/fsck.out" >&2; fail "fsck -n found problems in the replica"; }
mount -o ro,loop,noload "$RT/point.img" "$RT/check" || fail "the replica does not mount"
CLEANUP_MOUNTS+=("$RT/check")
(cd "$RT/check" && sha256sum --quiet -c "$RT/sums.txt") || fail "files in the replica differ from the checksums at the freeze"
n=$(wc -l < "$RT/sums.txt")
umount "$RT/check"
echo "e2e_fs_point: ok (point $point, $n files match, fsck clean, frozen ${fz[3]} ms)"
