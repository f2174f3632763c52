#!/usr/bin/env bash
# e2e_upload.sh - benchmark: end-to-end initial replication of a 2 GiB loop disk (half of its 4 MiB
# chunks random, half zero) through both daemons into a page blob on Azurite over HTTPS, against the
# npm @azure/storage-blob SDK uploading the same image with the same parallelism (16 in flight, zero
# chunks skipped, Content-MD5), in the same run, after a discarded warm-up upload; prints the
# throughput ratio (ours/SDK) and the appliance's CPU-seconds per GiB of disk. Azurite's CPU is the
# limit of both; the clients run at a lower priority than Azurite (BENCH_SHARED_CPUS=1: the same).
#   usage: bash bench/e2e_upload.sh [BUILD_DIR]     (root; needs scripts/setup.sh)
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
export RPL_BUILD_DIR=${1:-$root/build} RPL_SOURCE_DIR=$root
sdk=$root/tools/azure-sdk
[ -d "$sdk/node_modules/@azure/storage-blob" ] || { echo "e2e_upload: run scripts/setup.sh" >&2; exit 1; }
. "$root/tests/integration/lib/replication.sh"
. "$root/bench/lib_events.sh"
rpl_setup 1200
rpl_azurite_start --inMemoryPersistence
# The storage server is another machine: the clients (our agent and appliance; the SDK) must not
# take its CPU. Both run at a lower priority (nice 10) than Azurite, which was started before.
# BENCH_SHARED_CPUS=1: all at the same priority.
if [ -z "${BENCH_SHARED_CPUS:-}" ]; then
  renice -n 10 -p $$ > /dev/null || fail "renice failed"
  cpus="the clients at nice 10, Azurite at 0"
else
  cpus="all processes at the same priority"
fi
IN_FLIGHT=16
SIZE_MIB=${BENCH_SIZE_MIB:-2048}
rpl_loop dev "${SIZE_MIB}M" zero
img=$(losetup -n -O BACK-FILE "$dev")
python3 - "$dev" "$SIZE_MIB" <<'PY'
import os, sys
chunk = 4 * 1024 * 1024
with open(sys.argv[1], "r+b", buffering=0) as f:
    for i in range(0, int(sys.argv[2]) // 4, 2):    # even chunks random, odd ones stay zero
        f.seek(i * chunk); f.write(os.urandom(chunk))
    os.fsync(f.fileno())
PY
size=$(blockdev --getsize64 "$dev")

export BENCH_URL="https://$AZ_HOST:$AZ_PORT" BENCH_KEY=$AZ_KEY_B64
sdk_upload() { # BLOB: the SDK uploads the image; prints its result line
  NODE_PATH=$sdk/node_modules NODE_EXTRA_CA_CERTS=$AZ_CA unshare -m sh -c \
    "mount --bind '$AZ_ZONE' /etc/hosts && exec python3 '$root/bench/measure.py' node '$root/bench/sdk_upload.js' '$img' bench $1 $IN_FLIGHT md5"
}
# Azurite's first requests run cold (JIT): a discarded upload warms it, so that neither side pays for it.
say "warm-up: the SDK uploads the image once (discarded)"
sdk_upload warm.vhd > /dev/null || fail "the SDK's warm-up upload failed"
BLOB_TEST_CONNSTR=$AZ_CONNSTR BLOB_TEST_ZONE=$AZ_ZONE BLOB_TEST_CA=$AZ_CA "$RPL_BUILD_DIR/tests/blob_tool" delete bench warm.vhd || fail "cannot delete the warm-up blob"

say "ours: protect, initial sync through agent -> appliance -> page blob"
rpl_appliance_init_azure
rpl_appliance_start
rpl_agent_register
rpl_agent_start
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
c0=$(cpu "$RPL_AP_PID")
t0=$(date +%s.%N)
"$AG" protect "$dev" --state "$RT/agent" > /dev/null || fail "protect failed"
# The appliance's events say when cycle 1 was applied (one waiting call, no polling of status,
# which took a good part of a core from the run at ten times a second).
events_wait_applied "$RT/app" 1 600 || fail "cycle 1 was not applied in 600 s"
t1=$(date +%s.%N)
c1=$(cpu "$RPL_AP_PID")
ours=$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')
apcpu=$(awk -v a="$c0" -v b="$c1" -v hz="$hz" 'BEGIN{print (b-a)/hz}')

say "SDK: the same image, $IN_FLIGHT in flight, zero chunks skipped"
line=$(sdk_upload sdk.vhd) || fail "the SDK failed: $line"
[ -n "${BENCH_KEEP_LOGS:-}" ] && cp "$RT/appliance.log" "$RT/agent.log" "$BENCH_KEEP_LOGS/"
sdk=$(sed -n 's/.* seconds=\([0-9.]*\).*/\1/p' <<<"$line" | head -1)
awk -v o="$ours" -v s="$sdk" -v c="$apcpu" -v n="$size" -v cpus="$cpus" 'BEGIN{
  g = n / 2^30
  printf "CPUs: %s\n", cpus
  printf "ours (end to end: read, zstd, TLS, verify, Put Page, commit):        %.2f s = %.1f MiB/s of disk\n", o, n/2^20/o
  printf "SDK uploadPages of the same image:                                   %.2f s = %.1f MiB/s of disk\n", s, n/2^20/s
  printf "throughput ratio ours/SDK: %.2f (goal >= 1.0)\n", s/o
  printf "appliance CPU: %.2f s = %.2f CPU-seconds per GiB of disk\n", c, c/g }'
