#!/usr/bin/env bash
# appliance_enospc.sh - Description: the replica's file system fills up while cycles come in (a
# loop-mounted ext4 under file: storage, its free space taken by a filler file): the disk waits for
# storage with its reason and is never put in error, the agent's cycles are still acknowledged
# (the cache holds them), and once space is freed the replica catches up to equal the disk. Then
# the state directory's file system (the cache journal, the catalog) gets below its floor: no
# cycle starts, status says why, the agent keeps its changes, and once freed they all arrive.
set -u
. "$(dirname "$0")/lib/replication.sh"
rpl_setup
command -v mkfs.ext4 >/dev/null || { echo "SKIP: needs mkfs.ext4"; exit 77; }

# The replica directory on its own small file system.
rpl_loop rfs 160M
mkfs.ext4 -q -m 0 "$rfs" || fail "mkfs.ext4 failed"
mkdir -p "$RT/replica"
mount "$rfs" "$RT/replica" || fail "mount failed"
CLEANUP_MOUNTS+=("$RT/replica")
rpl_loop sfs 512M
mkfs.ext4 -q -m 0 "$sfs" || fail "mkfs.ext4 failed"
mkdir -p "$RT/app"
mount "$sfs" "$RT/app" || fail "mount failed"
CLEANUP_MOUNTS+=("$RT/app")
chmod 700 "$RT/app"
rpl_appliance_init
rpl_appliance_start --rpo 1
rpl_agent_register
rpl_agent_start
rpl_loop dev 96M     # zeros: the replica starts sparse and grows as the disk is written
"$AG" protect "$dev" --state "$RT/agent" >/dev/null || fail "protect failed"
rpl_wait_cycle "$dev" 1
id=$(rpl_disk_id "$dev")

# Take the free space, then write the disk.
fallocate -l "$(( $(df --output=avail -B1 "$RT/replica" | tail -n 1) - (1 << 20) ))" "$RT/replica/filler" \
  || fail "cannot fill the replica's file system"
c=$(rpl_agent_cycle "$dev")
dd if=/dev/urandom of="$dev" bs=1M count=40 seek=8 oflag=direct conv=notrunc status=none || fail "cannot write the disk"
rpl_wait_cycle "$dev" $((c + 2)) # acknowledged although the replica cannot take them
waiting() { "$AP" status --state "$RT/app" --json | python3 -c '
import json, sys
s = json.load(sys.stdin)
d = s["disks"][0]
assert d["state"] != "error", d
sys.exit(0 if s["uploads"]["state"] == "held" and d["backlog_cycles"] > 0 else 1)'; }
wait_until 120 "the full replica file system is not a storage wait: $("$AP" status --state "$RT/app")" waiting
"$AP" status --state "$RT/app" > "$RT/status.txt"
grep -q "No space left" "$RT/status.txt" || fail "status does not say the replica's file system is full: $(cat "$RT/status.txt")"

rm -f "$RT/replica/filler"
same() { cmp -s "$dev" "$RT/replica/$id.img"; }
wait_until 180 "the replica did not catch up once space was freed: $("$AP" status --state "$RT/app")" same
"$AP" status --state "$RT/app" --json | python3 -c '
import json, sys
d = json.load(sys.stdin)["disks"][0]
sys.exit(0 if d["state"] == "protected" else "state %s: %s" % (d["state"], d["reason"]))' || fail "the disk did not come back to protected"

# The state directory's file system below its floor (256 MiB): cycles wait, nothing is refused.
fallocate -l "$(( $(df --output=avail -B1 "$RT/app" | tail -n 1) - (64 << 20) ))" "$RT/app/filler" \
  || fail "cannot fill the state directory's file system"
held() { "$AP" status --state "$RT/app" --json | python3 -c '
import json, sys
sys.exit(0 if json.load(sys.stdin)["cycles_held_for_space"] else 1)'; }
wait_until 30 "a nearly full state directory does not hold the cycles: $("$AP" status --state "$RT/app")" held
"$AP" status --state "$RT/app" | grep -q "cycles held: the state directory" || fail "status does not say why cycles are held"
dd if=/dev/urandom of="$dev" bs=1M count=16 seek=60 oflag=direct conv=notrunc status=none || fail "cannot write the disk"
rm -f "$RT/app/filler"
wait_until 180 "the replica did not catch up once the state directory had room: $("$AP" status --state "$RT/app")" same
echo "appliance_enospc: ok"
