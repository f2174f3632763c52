#!/usr/bin/env bash
# restore_parallel.sh - benchmark: `replication-appliance restore` of a recovery point from its blob
# snapshot on Azurite over HTTPS, one chunk at a time (--parallel 1: the restore before parallel
# ranged GETs) against several in flight (--parallel N, default 8), alternating, in the same run;
# prints MB/s of disk for each and the ratio. The disk (default 512 MiB) is 3/4 data, 1/4 zero
# chunks, so holes are skipped by both.
#   usage: bash bench/restore_parallel.sh [BUILD_DIR]     (root; needs scripts/setup.sh)
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
export RPL_BUILD_DIR=${1:-$root/build} RPL_SOURCE_DIR=$root
. "$root/tests/integration/lib/replication.sh"
rpl_setup 1200
rpl_azurite_start --inMemoryPersistence
SIZE_MIB=${BENCH_SIZE_MIB:-512}
PAR=${BENCH_PARALLEL:-8}
ROUNDS=${BENCH_ROUNDS:-3}
rpl_loop dev "${SIZE_MIB}M" zero
python3 - "$dev" "$SIZE_MIB" <<'PY'
import os, sys
chunk = 4 * 1024 * 1024
with open(sys.argv[1], "r+b", buffering=0) as f:
    for i in range(int(sys.argv[2]) // 4):
        if i % 4 != 3:                     # every fourth chunk stays zero
            f.seek(i * chunk); f.write(os.urandom(chunk))
    os.fsync(f.fileno())
PY
rpl_appliance_init_azure
rpl_appliance_start
rpl_agent_register
rpl_agent_start
"$AG" protect "$dev" --state "$RT/agent" > /dev/null || fail "protect failed"
rpl_wait_cycle "$dev" 1
point=$("$AG" checkpoint "$dev" --wait --state "$RT/agent" | tail -n 1) || fail "checkpoint failed"
disk_id=$("$AG" status --state "$RT/agent" --json | python3 -c '
import json, sys
print(next(x["disk_id"] for x in json.load(sys.stdin)["disks"] if x["device"] == sys.argv[1]))' "$dev")
size=$(blockdev --getsize64 "$dev")

# restore_once N: seconds for one restore of the point with N in flight (checked byte-identical)
restore_once() {
  local out=$RT/restored t0 t1
  rm -f "$out"
  t0=$(date +%s.%N)
  "$AP" restore --state "$RT/app" --disk "$disk_id" --point "$point" --out "$out" --parallel "$1" > "$RT/r.out" 2>&1 \
    || fail "restore --parallel $1 failed: $(cat "$RT/r.out")"
  t1=$(date +%s.%N)
  cmp "$out" "$dev" || fail "restore --parallel $1 differs from the source"
  awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}'
}
say "restore of $point ($SIZE_MIB MiB, 3/4 data): --parallel 1 against --parallel $PAR, $ROUNDS rounds each, alternating"
seq_total=0 par_total=0
for r in $(seq 1 "$ROUNDS"); do
  s=$(restore_once 1)
  p=$(restore_once "$PAR")
  echo "round $r: --parallel 1 $s s, --parallel $PAR $p s"
  seq_total=$(awk -v a="$seq_total" -v b="$s" 'BEGIN{print a+b}')
  par_total=$(awk -v a="$par_total" -v b="$p" 'BEGIN{print a+b}')
done
awk -v s="$seq_total" -v p="$par_total" -v n="$size" -v k="$ROUNDS" -v par="$PAR" 'BEGIN{
  printf "restore --parallel 1 (before):  %.1f MB/s of disk (mean of %d)\n", n*k/1e6/s, k
  printf "restore --parallel %d (after):  %.1f MB/s of disk (mean of %d)\n", par, n*k/1e6/p, k
  printf "restore throughput ratio parallel/sequential: %.2f\n", s/p }'
