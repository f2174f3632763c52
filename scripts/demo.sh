#!/usr/bin/env bash
# demo.sh - the README's demo command: installs what is missing, builds, then replicates a loop
# disk into a page blob on a local Azurite (HTTPS, generated CA, private DNS zone file), takes a
# recovery point (a blob snapshot), restores it and shows it matches, fails it over to a page blob
# and a .vhd that qemu-img reads; prints each step's figures and removes everything it made. Runs
# as root, no stdin.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
[ "$(id -u)" -eq 0 ] || { echo "demo.sh: run as root (loop devices, eBPF)" >&2; exit 1; }
exec < /dev/null
echo "== setup (installs what is missing)"
bash "$root/scripts/setup.sh"
echo "== build"
bash "$root/scripts/build.sh" release >/dev/null
set +e +o pipefail
export RPL_BUILD_DIR=$root/build RPL_SOURCE_DIR=$root
. "$root/tests/integration/lib/replication.sh"
rpl_setup 900
secs() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", b-a}'; }
mbps() { awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN{printf "%.1f", n/1e6/(b-a)}'; }
"$AG" --version; "$AP" --version

say "Azurite over HTTPS: a generated CA, a server certificate for devstoreaccount1.blob.core.windows.net, a private DNS zone file"
rpl_azurite_start
echo "Azurite on 127.0.0.1:$AZ_PORT; zone file: $(grep -v '^#' "$AZ_ZONE")"

say "replication-appliance init (Azure connection string, private DNS zone file, CA) and check"
rpl_appliance_init_azure
"$AP" check --state "$RT/app" || fail "check failed"

say "a 1 GiB file-backed loop disk: 512 MiB random data, the rest zeros"
rpl_loop dev 1G half
echo "source disk: $dev"

say "both daemons; the agent registers with the key init printed"
rpl_appliance_start --rpo 2
rpl_agent_register
rpl_agent_start
echo "appliance on 127.0.0.1:$RPL_PORT (TLS 1.3, mutual), RPO target 2 s"

say "protect $dev: initial sync into the disk's page blob"
t0=$(date +%s.%N)
"$AG" protect "$dev" --state "$RT/agent" || fail "protect failed"
rpl_wait_cycle "$dev" 1
t1=$(date +%s.%N)
size=$(blockdev --getsize64 "$dev")
echo "initial sync: 1 GiB disk (512 MiB data) in $(secs "$t0" "$t1") s = $(mbps "$size" "$t0" "$t1") MB/s of disk"
disk_id=$("$AG" status --state "$RT/agent" --json | python3 -c '
import json, sys
print(next(x["disk_id"] for x in json.load(sys.stdin)["disks"] if x["device"] == sys.argv[1]))' "$dev")
echo "page blob: replicas/$disk_id.vhd (fixed VHD: disk + 512-byte footer)"

say "a 20-second write workload (random 4-256 KiB direct writes)"
c0=$(rpl_agent_cycle "$dev")
t0=$(date +%s.%N)
writes=0
while awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{exit !(b-a < 20)}'; do
  dd if=/dev/urandom of="$dev" bs=4k count=$((RANDOM % 64 + 1)) seek=$(( (RANDOM * 32768 + RANDOM) % 262000 )) \
     oflag=direct conv=notrunc status=none
  writes=$((writes + 1))
  [ $((writes % 50)) -eq 0 ] && sleep 0.2
done
c1=$(rpl_agent_cycle "$dev")
"$AP" status --state "$RT/app" --json | python3 -c '
import json, sys
d = json.load(sys.stdin)["disks"][0]
print("%d writes; cycles %s..%s committed; appliance: committed %d, applied %d, RPO lag %d s, backlog %d cycle(s)" % (
    int(sys.argv[1]), sys.argv[2], sys.argv[3], d["last_committed_cycle"], d["last_applied_cycle"],
    d["rpo_lag_seconds"], d["backlog_cycles"]))' "$writes" "$c0" "$c1"

say "checkpoint: a recovery point, which is a blob snapshot"
t0=$(date +%s.%N)
point=$("$AG" checkpoint "$dev" --wait --state "$RT/agent" | tail -n 1) || fail "checkpoint failed"
t1=$(date +%s.%N)
[[ $point == rp-* ]] || fail "checkpoint printed '$point'"
echo "recovery point $point in $(secs "$t0" "$t1") s"
cp --sparse=always "$dev" "$RT/source-at-point"   # the source as it was at the point (nothing writes now)

say "restore $point from its snapshot (the test-migration path) and compare with the source"
"$AP" restore --state "$RT/app" --disk "$disk_id" --point "$point" --out "$RT/restored.img" || fail "restore failed"
cmp "$RT/restored.img" "$RT/source-at-point" && echo "MATCH: the restored image is byte-identical to the source at $point"
"$AP" restore --state "$RT/app" --disk "$disk_id" --point "$point" --verify "$dev" || fail "restore --verify failed"

say "failover $point: a standalone page blob Azure imports as a disk (server-side copy), and a local .vhd"
"$AP" failover --state "$RT/app" --disk "$disk_id" --point "$point" --to-blob "failover-$point.vhd" || fail "failover --to-blob failed"
"$AP" failover --state "$RT/app" --disk "$disk_id" --point "$point" --to "$RT/failover.vhd" > "$RT/failover.out" \
  || fail "failover --to failed"
tail -n 1 "$RT/failover.out"
echo "qemu-img (a reader nobody here wrote) on the .vhd:"
qemu-img info -f vpc "$RT/failover.vhd" | grep -E "^(file format|virtual size)" || fail "qemu-img does not read the VHD"
cmp -n "$(blockdev --getsize64 "$dev")" "$RT/failover.vhd" "$RT/source-at-point" \
  && echo "MATCH: the failover VHD holds the source at $point"

say "status"
"$AP" status --state "$RT/app"
"$AG" status --state "$RT/agent"
say "cleaning up (daemons, Azurite, loop disk, temporary files)"
