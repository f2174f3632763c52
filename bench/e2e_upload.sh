#!/usr/bin/env bash
# e2e_upload.sh - benchmark: end-to-end initial replication of a 2 GiB loop disk (half of its 4 MiB
# chunks random, half zero) through both daemons into a page blob on Azurite over HTTPS, against the
# npm @azure/storage-blob SDK uploading the same image with the same parallelism (16 in flight, zero
# chunks skipped, the same integrity check as ours: BENCH_CHECK=none, the appliance's default, or
# md5), in the same run, after a discarded warm-up upload; BENCH_ROUNDS rounds (default 3), the two
# in alternating order, each of ours with a fresh appliance and agent, each upload into an Azurite
# started afresh and warmed. Prints each round's
# throughput ratio (ours/SDK), the appliance's CPU-seconds per GiB of disk (and the agent's, the SDK's
# and Azurite's under each), then medians and spreads. Azurite's CPU is the limit of both; the two clients run at the same priority, below
# Azurite's (BENCH_SHARED_CPUS=1: all at the same).
#   usage: bash bench/e2e_upload.sh [BUILD_DIR]     (root; needs scripts/setup.sh)
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
export RPL_BUILD_DIR=${1:-$root/build} RPL_SOURCE_DIR=$root
sdk_dir=$root/tools/azure-sdk
[ -d "$sdk_dir/node_modules/@azure/storage-blob" ] || { echo "e2e_upload: run scripts/setup.sh" >&2; exit 1; }
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
  NODE_PATH=$sdk_dir/node_modules NODE_EXTRA_CA_CERTS=$AZ_CA unshare -m sh -c \
    "mount --bind '$AZ_ZONE' /etc/hosts && exec python3 '$root/bench/measure.py' node '$root/bench/sdk_upload.js' '$img' bench $1 $IN_FLIGHT ${sdk_mode:-md5}"
}
CHECK=${BENCH_CHECK:-none}
case "$CHECK" in none) sdk_mode=plain ;; md5) sdk_mode=md5 ;; *) fail "BENCH_CHECK is none or md5" ;; esac
ROUNDS=${BENCH_ROUNDS:-3}
# Every measured upload goes into the same Azurite: started afresh (in memory: empty), at its own
# priority, and warmed by a discarded upload (its first requests run cold, JIT). Azurite's CPU per
# byte grew with the uploads it had taken, deleted or not (1.4-1.6 CPU-s per GiB for the first one
# measured, 3.3-4.4 from the third on), which favoured whichever side ran earlier.
fresh_azurite() {
  azurite_stop
  azurite_restart
  [ -n "${BENCH_SHARED_CPUS:-}" ] || renice -n 0 -p "$AZ_PID" > /dev/null || fail "cannot renice Azurite"
  sdk_upload warm.vhd > /dev/null || fail "the SDK's warm-up upload failed"
  BLOB_TEST_CONNSTR=$AZ_CONNSTR BLOB_TEST_ZONE=$AZ_ZONE BLOB_TEST_CA=$AZ_CA "$RPL_BUILD_DIR/tests/blob_tool" delete bench warm.vhd \
    || fail "cannot delete the warm-up blob"
}

cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
run_ours() { # ROUND: RESULT seconds, APCPU CPU-seconds of the appliance; a fresh pair each time
  fresh_azurite
  RPL_CONTAINER=ours$1 rpl_appliance_init_azure --upload-check "$CHECK"
  rpl_appliance_start
  rpl_agent_register
  rpl_agent_start
  local c0 c1 g0 g1 z0 z1 t0 t1
  c0=$(cpu "$RPL_AP_PID"); g0=$(cpu "$RPL_AG_PID"); z0=$(cpu "$AZ_PID")
  t0=$(date +%s.%N)
  "$AG" protect "$dev" --state "$RT/agent" > /dev/null || fail "protect failed"
  # The appliance's events say when cycle 1 was applied (one waiting call, no polling of status,
  # which took a good part of a core from the run at ten times a second).
  events_wait_applied "$RT/app" 1 600 || fail "cycle 1 was not applied in 600 s"
  t1=$(date +%s.%N)
  c1=$(cpu "$RPL_AP_PID"); g1=$(cpu "$RPL_AG_PID"); z1=$(cpu "$AZ_PID")
  RESULT=$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')
  # Where ours' time went: until CYCLE_START, the cycle until its upload began, the upload, the end.
  PHASES=$(awk -v t0="$t0" -v s="${T_STARTED:-$t0}" -v a="$T_APPLIED" -v um="${EV_UPLOAD_MS:-0}" 'BEGIN {
    printf "protect to CYCLE_START %.2f s, upload %.2f s, the rest of the cycle %.2f s", s - t0, um / 1000, a - s - um / 1000 }')
  APCPU=$(awk -v a="$c0" -v b="$c1" -v hz="$hz" 'BEGIN{print (b-a)/hz}')
  AGCPU=$(awk -v a="$g0" -v b="$g1" -v hz="$hz" 'BEGIN{print (b-a)/hz}')
  AZCPU=$(awk -v a="$z0" -v b="$z1" -v hz="$hz" 'BEGIN{print (b-a)/hz}')
  [ -n "${BENCH_KEEP_LOGS:-}" ] && cp "$RT/appliance.log" "$BENCH_KEEP_LOGS/appliance-$1.log" && cp "$RT/agent.log" "$BENCH_KEEP_LOGS/agent-$1.log"
  kill "$RPL_AG_PID" "$RPL_AP_PID"
  wait "$RPL_AG_PID" "$RPL_AP_PID" 2>/dev/null
  "$AG" cbt stop "$dev" --state "$RT/agent" > /dev/null 2>&1
  rm -rf "$RT/app" "$RT/agent" "$RT/appliance.log" "$RT/agent.log"
  unset RPL_PORT
}
run_sdk() { # ROUND: RESULT seconds, SDKCPU CPU-seconds of the SDK's process, AZCPU Azurite's
  local line z0 z1
  fresh_azurite
  z0=$(cpu "$AZ_PID")
  line=$(sdk_upload "sdk$1.vhd") || fail "the SDK failed: $line"
  z1=$(cpu "$AZ_PID")
  RESULT=$(sed -n 's/.* seconds=\([0-9.]*\).*/\1/p' <<<"$line" | head -1)
  SDKCPU=$(sed -n 's/.* cpu=\([0-9.]*\).*/\1/p' <<<"$line" | tail -1)
  AZCPU=$(awk -v a="$z0" -v b="$z1" -v hz="$hz" 'BEGIN{print (b-a)/hz}')
}

o=(); s=(); r=(); c=()
for i in $(seq 1 "$ROUNDS"); do
  if [ $((i % 2)) -eq 1 ]; then run_ours "$i"; ours=$RESULT; az_ours=$AZCPU; run_sdk "$i"; sdk=$RESULT; az_sdk=$AZCPU
  else run_sdk "$i"; sdk=$RESULT; az_sdk=$AZCPU; run_ours "$i"; ours=$RESULT; az_ours=$AZCPU; fi
  o+=("$ours"); s+=("$sdk"); c+=("$(awk -v c="$APCPU" -v n="$size" 'BEGIN{printf "%.2f", c / (n / 2^30)}')")
  r+=("$(awk -v o="$ours" -v s="$sdk" 'BEGIN{printf "%.2f", s / o}')")
  printf 'round %d: ours %.2f s (%.1f MiB/s of disk, appliance %.2f CPU-s/GiB) | SDK %.2f s (%.1f MiB/s) | ours/SDK %s | load %s\n' \
    "$i" "$ours" "$(awk -v o="$ours" -v n="$size" 'BEGIN{print n/2^20/o}')" "${c[-1]}" "$sdk" \
    "$(awk -v o="$sdk" -v n="$size" 'BEGIN{print n/2^20/o}')" "${r[-1]}" "$(cut -d' ' -f1-3 /proc/loadavg)"
  awk -v ag="$AGCPU" -v sc="$SDKCPU" -v zo="$az_ours" -v zs="$az_sdk" -v n="$size" 'BEGIN { g = n / 2^30;
    printf "         CPU-s per GiB of disk: agent %.2f, SDK %.2f; Azurite %.2f under ours, %.2f under the SDK\n", ag / g, sc / g, zo / g, zs / g }'
  echo "         ours: $PHASES"
done
med() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
lo() { printf '%s\n' "$@" | sort -g | head -n 1; }
hi() { printf '%s\n' "$@" | sort -g | tail -n 1; }
echo "CPUs: $cpus; integrity check: $CHECK on both sides"
echo "ours/SDK throughput: median $(med "${r[@]}"), spread $(lo "${r[@]}")..$(hi "${r[@]}") (goal >= 1.0 in every round) [rounds: ${r[*]}]"
echo "appliance CPU-seconds per GiB of disk: median $(med "${c[@]}"), spread $(lo "${c[@]}")..$(hi "${c[@]}") (goal <= 1.0) [rounds: ${c[*]}]"
echo "summary: ours_s=$(med "${o[@]}") sdk_s=$(med "${s[@]}") ours_over_sdk=$(med "${r[@]}") ours_over_sdk_min=$(lo "${r[@]}") cpu_s_per_gib=$(med "${c[@]}") check=$CHECK"
