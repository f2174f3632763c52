#!/usr/bin/env bash
# resync_index.sh - benchmark: resync of a 4 GiB loop disk replicated into a page blob on Azurite
# (over HTTPS) after 1 % of it changed while the agent was away (stopped, its tracking lost), with
# the appliance's hash index against the full read of the blob (the same appliance restarted with
# RPL_HASHINDEX=off), in the same run; prints the bytes each read from the blob, the time of the
# comparison (the appliance's first HASHES until its NEED, from its log) and of the whole resync
# (agent started until the resync cycle is applied), and the ratios; then the blob is compared with
# the source.
#   usage: bash bench/resync_index.sh [BUILD_DIR]     (root; needs scripts/setup.sh for Azurite)
# BENCH_SIZE_MIB (default 4096), BENCH_FILL=random|half (default random: a full read skips the
# blob's empty pages, so a half-empty disk flatters it), BENCH_CHANGED_MIB (default 1 % of the size).
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
export RPL_BUILD_DIR=${1:-$root/build} RPL_SOURCE_DIR=$root
. "$root/tests/integration/lib/replication.sh"
. "$root/bench/lib_events.sh"
rpl_setup 3000
rpl_azurite_start --inMemoryPersistence
SIZE_MIB=${BENCH_SIZE_MIB:-4096}
FILL=${BENCH_FILL:-random}
CHANGED=${BENCH_CHANGED_MIB:-$((SIZE_MIB / 100))}
MIB=1048576
export RPL_LOG_TIME=1 # the appliance's log lines carry their time: the comparison is timed from them

say "a $SIZE_MIB MiB disk ($FILL), protected into a page blob"
rpl_loop dev "${SIZE_MIB}M" "$FILL"
rpl_appliance_init_azure
rpl_appliance_start --rpo 3600
rpl_agent_register
rpl_agent_start
t0=$(date +%s.%N)
"$AG" protect "$dev" --state "$RT/agent" > /dev/null || fail "protect failed"
events_wait_applied "$RT/app" 1 1800 || fail "the initial sync was not applied in 1800 s"
t1=$(date +%s.%N)
echo "initial sync: $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}') s"
disk_id=$(rpl_disk_id "$dev")
hidx() {
  local f args=()
  for f in "$@"; do args+=("disks.[disk_id=$disk_id].hash_index.$f"); done
  "$AP" status --state "$RT/app" --json | json_field - "${args[@]}"
}
index_known() { [ "$(hidx stale_chunks)" = 0 ]; }
resync_counted() { [ "$(hidx resyncs)" -ge 1 ]; } # (the appliance was restarted: its counters start at 0)
wait_until -i 1 600 "the hash index still has stale chunks" index_known
applied_through() {
  local v
  mapfile -t v < <("$AP" status --state "$RT/app" --json |
    json_field - "disks.[disk_id=$disk_id].last_applied_cycle" "disks.[disk_id=$disk_id].last_committed_cycle")
  [ "${#v[@]}" -eq 2 ] && [ "${v[0]}" = "${v[1]}" ] && [ "${v[0]}" -ge "$1" ]
}

# round NAME [ENV...]: appliance restarted (with ENV), agent stopped and its tracking lost, CHANGED
# MiB rewritten at spread offsets, agent started; sets R_READ (bytes read from the blob by the
# comparison and its verification), R_CMP (seconds, first HASHES to NEED), R_ALL (seconds, agent
# start to the resync cycle applied)
round() {
  local name=$1 cycle v c0 a0 a1 from_log
  shift
  kill -TERM "$RPL_AG_PID" && wait "$RPL_AG_PID"
  rm -rf "$MOBILITY_AGENT_BPF_PIN_DIR"
  kill -TERM "$RPL_AP_PID" && wait "$RPL_AP_PID"
  python3 - "$dev" "$SIZE_MIB" "$CHANGED" <<'PY'
import os, random, sys
size, n = int(sys.argv[2]), int(sys.argv[3])
with open(sys.argv[1], "r+b", buffering=0) as f:
    for c in random.sample(range(size), n):
        f.seek(c << 20); f.write(os.urandom(1 << 20))
    os.fsync(f.fileno())
PY
  cat "$dev" > /dev/null # the agent hashes from the page cache in both rounds
  from_log=$(wc -l < "$RT/appliance.log")
  env "$@" "$AP" run --state "$RT/app" --listen "127.0.0.1:$RPL_PORT" --web off --points crash=off,app=off --rpo 3600 \
    >> "$RT/appliance.log" 2>&1 &
  RPL_AP_PID=$!
  CLEANUP_PIDS+=("$RPL_AP_PID")
  wait_until -i 0.05 10 "the appliance did not come up" rpl_appliance_up
  wait_until -i 0.2 60 "the storage checks did not pass" index_ready
  sleep 2
  cycle=$("$AP" status --state "$RT/app" --json | json_field - "disks.[disk_id=$disk_id].last_committed_cycle")
  a0=$(date +%s.%N)
  rpl_agent_start
  wait_until -i 0.1 1800 "the resync did not start" resync_counted
  wait_until -i 0.1 1800 "the resync cycle was not applied" applied_through $((cycle + 1))
  a1=$(date +%s.%N)
  mapfile -t v < <(hidx resync_read_bytes verify_read_bytes resync_index_chunks resync_read_chunks stale_chunks)
  R_READ=$((v[0] + v[1]))
  [ $((v[2] + v[3])) -eq "$SIZE_MIB" ] || fail "$name: the comparison did not cover every chunk (the blob not open yet?): ${v[*]}"
  R_DETAIL="${v[3]} chunk(s) read + ${v[1]} bytes verified, ${v[2]} chunk(s) from the index"
  R_ALL=$(awk -v a="$a0" -v b="$a1" 'BEGIN{printf "%.2f", b-a}')
  # "<time> ... resync: first hashes in" to "<time> ... resync by comparison: N of M chunks differ"
  R_CMP=$(tail -n +"$((from_log + 1))" "$RT/appliance.log" | python3 -c '
import re, sys
start = end = None
for line in sys.stdin:
    m = re.match(r"(\d\d):(\d\d):(\d\d\.\d+) ", line)
    if not m:
        continue
    ts = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
    if "resync: first hashes in" in line:
        start = start or ts
    if "resync by comparison" in line:
        end = ts
print("%.2f" % (end - start) if start and end else "?")')
  line=$(grep "resync by comparison" "$RT/agent.log" | tail -n 1)
  echo "$name: $line"
  echo "$name: $R_READ bytes read from the blob ($R_DETAIL); comparison $R_CMP s; resync $R_ALL s"
}
# The storage checks passed (the applier opens the blob right after: a resync before compares nothing)
index_ready() {
  [ "$("$AP" status --state "$RT/app" --json 2>/dev/null | json_field -d false - uploads.checks_passed 2>/dev/null)" = true ]
}
blob_check() { # the blob equals the source (downloaded)
  BLOB_TEST_CONNSTR=$AZ_CONNSTR BLOB_TEST_ZONE=$AZ_ZONE BLOB_TEST_CA=$AZ_CA \
    "$RPL_BUILD_DIR/tests/blob_tool" download replicas "$disk_id.vhd" "$RT/blob" > "$RT/dl.out" 2>&1 || fail "download failed: $(cat "$RT/dl.out")"
  cmp -n $((SIZE_MIB * MIB)) "$RT/blob" "$dev" || fail "the blob differs from the source after the resync"
  rm -f "$RT/blob"
}

round "index" RPL_HASHINDEX=on
i_read=$R_READ i_cmp=$R_CMP i_all=$R_ALL
round "full read (RPL_HASHINDEX=off)" RPL_HASHINDEX=off
f_read=$R_READ f_cmp=$R_CMP f_all=$R_ALL
blob_check # both resyncs' changes in the blob, the rest as it was
echo
printf 'resync of %d MiB (%s), %d MiB changed, Azurite over HTTPS, load %s\n' "$SIZE_MIB" "$FILL" "$CHANGED" "$(cut -d' ' -f1-3 /proc/loadavg)"
printf '  %-22s %14s %14s %8s\n' "" "index" "full read" "ratio"
printf '  %-22s %14s %14s %8s\n' "blob bytes read" "$i_read" "$f_read" "$(awk -v a="$f_read" -v b="$i_read" 'BEGIN{ if (b > 0) printf "%.1f", a/b; else print "inf" }')"
printf '  %-22s %14s %14s %8s\n' "comparison (s)" "$i_cmp" "$f_cmp" "$(awk -v a="$f_cmp" -v b="$i_cmp" 'BEGIN{ if (b > 0) printf "%.1f", a/b; else print "?" }')"
printf '  %-22s %14s %14s %8s\n' "resync, end to end (s)" "$i_all" "$f_all" "$(awk -v a="$f_all" -v b="$i_all" 'BEGIN{ if (b > 0) printf "%.1f", a/b; else print "?" }')"
