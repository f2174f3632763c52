#!/usr/bin/env bash
# bench_fleet.sh - a fleet of simulated agents (bench/fleet_gen) against one appliance, over the real
# protocol and TLS, at N = 10, 50, 100 agents (1 MB/s of random 4-64 KiB writes each, RPO target
# 30 s), into file: storage and into Azurite (HTTPS, the tests' CA and private DNS zone file). Per
# run: RPO lag p50/p99/max (the age of the oldest write not yet in an ACKed cycle, sampled every
# second, all agents), cycles, the appliance's CPU and peak RSS (also per agent), the churn written
# and the MB/s committed (ACKed, durable in the appliance); after the drain every replica (file:) or
# the first VERIFY_MAX (Azurite: the page blob downloaded) is compared with its source. The peer, measured
# in the same run on each storage: one fleet_gen agent on a 1 GiB disk at rising churn rates (RPO
# 5 s, a rate holds when its lag p99 <= 10 s, as bench_churn.sh's criterion). Ratios printed: the
# fleet's churn in all / the peer's best held rate, and its committed MB/s / the peer's at that rate;
# lag p99 / the 60 s goal; appliance RSS and CPU per agent. Each fleet run is repeated for each
# count of apply workers in WORKERS (run --apply-workers), with the MB/s applied to storage (the
# raw bytes of the applied events over the time from the first apply's start to the last apply's
# end) and the most workers busy at once. Last line: `summary: key=value ...`.
#
#   bash bench/bench_fleet.sh        (root not needed; Azurite from scripts/setup.sh)
#   env: AGENTS="10 50 100" DURATION=90 RATE=1 SIZE_MIB=256 RPO=30 STORAGES="file azurite"
#        PEER_RATES="25 50 100 150" PEER_DURATION=20 VERIFY_MAX=10 (Azurite) BUILD_DIR=build
#        WORKERS="8" (apply workers, e.g. "1 8" to compare; the peer runs with the first)
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
export RPL_BUILD_DIR=${BUILD_DIR:-$root/build} RPL_SOURCE_DIR=$root
. "$root/tests/integration/lib/common.sh"
AP=$RPL_BUILD_DIR/appliance/replication-appliance
FG=$RPL_BUILD_DIR/bench/fleet_gen
{ [ -x "$AP" ] && [ -x "$FG" ]; } || fail "build first: bash scripts/build.sh release"

AGENTS=${AGENTS:-10 50 100}
DURATION=${DURATION:-90}
RATE=${RATE:-1}
SIZE_MIB=${SIZE_MIB:-256}
RPO=${RPO:-30}
STORAGES=${STORAGES:-file azurite}
PEER_RATES=${PEER_RATES:-25 50 100 150 200}
PEER_DURATION=${PEER_DURATION:-20}
VERIFY_MAX=${VERIFY_MAX:-10}
WORKERS=${WORKERS:-8}
for w in $WORKERS; do
  [[ $w =~ ^[0-9]+$ ]] && [ "$w" -ge 1 ] && [ "$w" -le 32 ] || fail "WORKERS takes apply-worker counts from 1 to 32, not '$w'"
done
PEER_WORKERS=${WORKERS%% *}
GOAL_LAG=60
PEER_LIMIT=10

RT=$(mktemp -d /var/tmp/rpl-bench-fleet.XXXXXX)
CLEANUP_PATHS+=("$RT")
RESULTS=$RT/results
declare -A PEER PEER_RATE # per storage: the peer's committed MB/s at its best held rate, and that rate
: >"$RESULTS"

# run_fleet STORAGE N RATE RPO DURATION SIZE_MIB TAG WORKERS: a fresh appliance, fleet_gen, the drain,
# the comparison; appends "TAG STORAGE N <fleet json> verified=K ..." to RESULTS (the json with the
# apply figures added: workers, applied_mb, applied_mb_s, apply_busy_max).
run_fleet() {
  local store=$1 n=$2 rate=$3 rpo=$4 dur=$5 size=$6 tag=$7 workers=$8 dir storage_args port pid rc verified=0 id src container=
  dir=$RT/$tag-$store-$n
  mkdir -p "$dir"
  if [ "$store" = file ]; then
    storage_args=(--storage "file:$dir/replica")
  else
    container=$tag-$n-$RANDOM
    storage_args=(--storage "$AZ_CONNSTR" --container "$container" --private-dns-zone "$AZ_ZONE" --ca-file "$AZ_CA")
  fi
  "$AP" init --state "$dir/app" "${storage_args[@]}" >"$dir/init.out" 2>&1 || { cat "$dir/init.out" >&2; fail "init failed"; }
  port=$(free_port)
  "$AP" run --state "$dir/app" --listen "127.0.0.1:$port" --web off --points crash=off,app=off --rpo "$rpo" \
    --apply-workers "$workers" >>"$dir/appliance.log" 2>&1 &
  pid=$!
  CLEANUP_PIDS+=("$pid")
  local i
  for i in $(seq 1 200); do
    "$AP" status --state "$dir/app" >/dev/null 2>&1 && break
    kill -0 "$pid" 2>/dev/null || { cat "$dir/appliance.log" >&2; fail "the appliance exited"; }
    sleep 0.05
  done
  local keycmd
  printf -v keycmd '%q ' "$AP" init --state "$dir/app" "${storage_args[@]}"
  "$FG" --appliance "127.0.0.1:$port" --dir "$dir/fleet" --agents "$n" --size "$size" --rate "$rate" \
    --duration "$dur" --drain-timeout 900 --ap-pid "$pid" --json "$dir/fleet.json" --key-cmd "$keycmd" \
    >"$dir/fleet.out" 2>"$dir/fleet.err"
  rc=$?
  [ "$rc" = 0 ] || echo "   (fleet_gen exit status $rc: not every agent drained; $(grep -c 'NO' "$dir/fleet.out") agent(s) left)" >&2
  # Every committed cycle applied (uploaded, for Azurite) before the comparison.
  all_applied() {
    "$AP" status --state "$dir/app" --json 2>/dev/null | python3 -c '
import json, sys
d = json.load(sys.stdin)["disks"]
sys.exit(0 if d and all(x["last_applied_cycle"] == x["last_committed_cycle"] for x in d) else 1)'
  }
  local t0 apply_s
  t0=$(date +%s.%N)
  wait_until -i 1 1200 "" all_applied || echo "   (not every committed cycle applied in 1200 s)" >&2
  apply_s=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  local k=0 bad=0
  while read -r id src; do
    if [ "$store" = file ]; then
      cmp -s "$src" "$dir/replica/$id.img" && verified=$((verified + 1)) || bad=$((bad + 1))
    else
      [ "$k" -ge "$VERIFY_MAX" ] && break
      # The page blob as it is now (no recovery points here): the disk, then the VHD footer.
      BLOB_TEST_CONNSTR=$AZ_CONNSTR BLOB_TEST_ZONE=$AZ_ZONE BLOB_TEST_CA=$AZ_CA \
        "$RPL_BUILD_DIR/tests/blob_tool" download "$container" "$id.vhd" "$dir/blob.img" >"$dir/verify.out" 2>&1 \
        && cmp -s -n "$(stat -c %s "$src")" "$src" "$dir/blob.img" && verified=$((verified + 1)) || bad=$((bad + 1))
      rm -f "$dir/blob.img"
    fi
    k=$((k + 1))
  done <"$dir/fleet/manifest"
  [ "$bad" = 0 ] || echo "   ($bad replica(s) differ from their source: see $dir)" >&2
  # What the workers applied: the applied events (not the direct cycles, which the sessions write).
  "$AP" events --state "$dir/app" >"$dir/events.jsonl" 2>/dev/null
  "$AP" status --state "$dir/app" --json >"$dir/status.json" 2>/dev/null
  local json
  json=$(python3 - "$dir/fleet.json" "$dir/events.jsonl" "$dir/status.json" "$workers" <<'PY'
import json, sys
try:
    doc = json.load(open(sys.argv[1]))
except Exception:
    doc = {}
ev = []
for line in open(sys.argv[2]):
    try:
        ev.append(json.loads(line))
    except ValueError:
        pass
ap = [e for e in ev if e.get("type") == "applied"]
raw = sum(e.get("raw_bytes", 0) for e in ap)
t0 = min((e["unix_ms"] - e.get("apply_ms", 0) for e in ap), default=0)
t1 = max((e["unix_ms"] for e in ap), default=0)
try:
    busy = json.load(open(sys.argv[3]))["appliers"]["busy_max"]
except Exception:
    busy = 0
doc.update(workers=int(sys.argv[4]), applied_cycles=len(ap), applied_mb=round(raw / 1e6, 1),
           applied_mb_s=round(raw / 1e6 / ((t1 - t0) / 1000), 2) if t1 > t0 else 0,
           apply_busy_max=busy, events_lost=bool(ev) and ev[0].get("seq") != 1)
print(json.dumps(doc))
PY
)
  echo "$tag $store $n $json verified=$verified/$k apply_after_drain_s=$apply_s" >>"$RESULTS"
  kill -TERM "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  if [ -n "${BENCH_KEEP_LOGS:-}" ]; then # one folder per run, the events with the logs
    mkdir -p "$BENCH_KEEP_LOGS/$tag-$store-$n" &&
      cp "$dir/appliance.log" "$dir/fleet.out" "$dir/events.jsonl" "$BENCH_KEEP_LOGS/$tag-$store-$n/" 2>/dev/null
  fi
  [ -n "${BENCH_KEEP_RUNS:-}" ] || rm -rf "$dir" # the sparse disks and replicas of this run: the next one starts on an empty disk
}

# jget TAG STORAGE N FIELD: a number from RESULTS' json for that run
jget() {
  awk -v t="$1" -v s="$2" -v n="$3" '$1 == t && $2 == s && $3 == n { $1 = $2 = $3 = ""; print }' "$RESULTS" \
    | sed 's/ verified=.*//' | python3 -c 'import json, sys
t = sys.stdin.read().strip()
print(json.loads(t).get(sys.argv[1], "") if t else "")' "$4"
}

echo "fleet: N = $AGENTS agents, ${SIZE_MIB} MiB sparse disk each, $RATE MB/s random 4-64 KiB writes each, RPO target ${RPO} s,"
echo "       ${DURATION} s of churn per run; storages: $STORAGES; $(nproc) CPUs, load at start $(cut -d' ' -f1-3 /proc/loadavg)"
for store in $STORAGES; do
  if [ "$store" = azurite ]; then
    . "$root/tests/integration/lib/azurite.sh"
    azurite_start
  fi
  echo
  echo "== $store: the peer, one agent on a 1 GiB disk at rising rates (RPO 5 s, holds when lag p99 <= ${PEER_LIMIT} s) =="
  printf '%8s %10s %12s %8s %8s %7s\n' "rate" "churn MB/s" "commit MB/s" "lag p99" "lag max" "holds"
  best=0
  best_rate=0
  for r in $PEER_RATES; do
    run_fleet "$store" 1 "$r" 5 "$PEER_DURATION" 1024 "peer$r" "$PEER_WORKERS"
    p99=$(jget "peer$r" "$store" 1 lag_p99_s)
    mx=$(jget "peer$r" "$store" 1 lag_max_s)
    cm=$(jget "peer$r" "$store" 1 committed_mb_s)
    ch=$(jget "peer$r" "$store" 1 churn_mb_s)
    holds=no
    if [ -n "$p99" ] && [ "$p99" -le "$PEER_LIMIT" ]; then holds=yes; fi
    printf '%8s %10s %12s %8s %8s %7s\n' "$r" "$ch" "$cm" "$p99" "$mx" "$holds"
    [ "$holds" = yes ] || break
    best=$cm
    best_rate=$ch # what the churn reached (a generator short of CPU writes less than asked)
  done
  echo "peer best ($store): ${best_rate} MB/s of churn held (${best} MB/s committed)"
  PEER[$store]=$best
  PEER_RATE[$store]=$best_rate
  echo
  echo "== $store: the fleet =="
  printf '%5s %4s %9s %10s %12s %11s %6s %6s %6s %10s %8s %10s %10s %9s %9s %8s\n' "N" "wrk" "sync s" "churn MB/s" \
    "commit MB/s" "apply MB/s" "p50" "p99" "max" "cycles min" "appl CPU" "CPU/agent" "RSS MiB" "RSS/agent" "threads" \
    "verified"
  for n in $AGENTS; do
    for w in $WORKERS; do
      t=fleet-w$w
      run_fleet "$store" "$n" "$RATE" "$RPO" "$DURATION" "$SIZE_MIB" "$t" "$w"
      line=$(awk -v t="$t" -v s="$store" -v n="$n" '$1 == t && $2 == s && $3 == n' "$RESULTS")
      printf '%5s %4s %9s %10s %12s %11s %6s %6s %6s %10s %7s%% %9s%% %10s %9s %9s %8s\n' "$n" "$w" \
        "$(jget "$t" "$store" "$n" initial_sync_s)" "$(jget "$t" "$store" "$n" churn_mb_s)" \
        "$(jget "$t" "$store" "$n" committed_mb_s)" "$(jget "$t" "$store" "$n" applied_mb_s)" \
        "$(jget "$t" "$store" "$n" lag_p50_s)" \
        "$(jget "$t" "$store" "$n" lag_p99_s)" "$(jget "$t" "$store" "$n" lag_max_s)" \
        "$(jget "$t" "$store" "$n" cycles_min)" "$(jget "$t" "$store" "$n" ap_cpu_pct)" \
        "$(jget "$t" "$store" "$n" ap_cpu_pct_per_agent)" \
        "$(awk -v k="$(jget "$t" "$store" "$n" ap_hwm_kb)" 'BEGIN { printf "%.0f", k / 1024 }')" \
        "$(awk -v k="$(jget "$t" "$store" "$n" ap_rss_kb_per_agent)" 'BEGIN { printf "%.2fM", k / 1024 }')" \
        "$(jget "$t" "$store" "$n" ap_threads_max)" "$(grep -o 'verified=[^ ]*' <<<"$line" | cut -d= -f2)"
    done
  done
  if [ "$store" = azurite ]; then
    kill "$AZ_PID" 2>/dev/null
    wait "$AZ_PID" 2>/dev/null
  fi
done

echo
echo "== ratios =="
for store in $STORAGES; do
  peer=${PEER[$store]:-0}
  peer_rate=${PEER_RATE[$store]:-0}
  first_w=${WORKERS%% *}
  for n in $AGENTS; do
    for w in $WORKERS; do
    t=fleet-w$w
    cm=$(jget "$t" "$store" "$n" committed_mb_s)
    p99=$(jget "$t" "$store" "$n" lag_p99_s)
    [ -n "$cm" ] || continue
    awk -v s="$store" -v n="$n" -v w="$w" -v cm="$cm" -v ch="$(jget "$t" "$store" "$n" churn_mb_s)" -v peer="$peer" \
        -v peer_rate="$peer_rate" -v p99="$p99" -v goal="$GOAL_LAG" \
        -v cpu="$(jget "$t" "$store" "$n" ap_cpu_pct_per_agent)" \
        -v rss="$(jget "$t" "$store" "$n" ap_rss_kb_per_agent)" \
        -v am="$(jget "$t" "$store" "$n" applied_mb_s)" -v am1="$(jget "fleet-w$first_w" "$store" "$n" applied_mb_s)" \
        -v w1="$first_w" -v busy="$(jget "$t" "$store" "$n" apply_busy_max)" \
        -v hwm="$(jget "$t" "$store" "$n" ap_hwm_kb)" 'BEGIN {
      printf "%-8s N=%-4d workers=%-2d churn %.1f MB/s in all = %s the one-disk peer'"'"'s best held rate (%.1f MB/s); committed %.1f MB/s = %s the peer'"'"'s (%.1f MB/s)\n",
        s, n, w, ch, (peer_rate > 0 ? sprintf("%.2f x", ch / peer_rate) : "n/a"), peer_rate, cm,
        (peer > 0 ? sprintf("%.2f x", cm / peer) : "n/a"), peer
      printf "%-8s        applied %.1f MB/s = %s the %d-worker run'"'"'s, at most %d workers busy at once\n",
        "", am, (am1 > 0 ? sprintf("%.2f x", am / am1) : "n/a"), w1, busy
      printf "%-8s        lag p99 %d s = %.2f x the %d s goal (%s); appliance peak RSS %.0f MiB = %.2f MiB per agent, CPU %.2f %% of a core per agent\n",
        "", p99, p99 / goal, goal, (p99 <= goal ? "met" : "NOT met"), hwm / 1024, hwm / 1024 / n, cpu }'
    done
  done
done
echo
echo "(lag: the age of each agent's oldest write not yet in an ACKed cycle, sampled every second of the churn, all agents;"
echo " committed: raw bytes of the plain cycles ACKed from the churn's start through the drain / the time to the last ACK; CPU: the appliance's utime+stime over the churn;"
echo " RSS: the appliance's peak resident set (VmHWM) / N; the peer holds a rate when its lag p99 <= ${PEER_LIMIT} s at RPO 5 s."
echo " Raw figures, one line per run:)"
cat "$RESULTS"
summary="summary:"
for store in $STORAGES; do
  summary+=" ${store}_peer_best_mb_s=${PEER_RATE[$store]:-0}"
  for n in $AGENTS; do
    for w in $WORKERS; do
      t=fleet-w$w k=${store}_n${n}_w${w}
      [ -n "$(jget "$t" "$store" "$n" lag_p99_s)" ] || continue
      summary+=" ${k}_lag_p99_s=$(jget "$t" "$store" "$n" lag_p99_s)"
      summary+=" ${k}_churn_mb_s=$(jget "$t" "$store" "$n" churn_mb_s)"
      summary+=" ${k}_committed_mb_s=$(jget "$t" "$store" "$n" committed_mb_s)"
      summary+=" ${k}_applied_mb_s=$(jget "$t" "$store" "$n" applied_mb_s)"
      summary+=" ${k}_rss_kb_per_agent=$(awk -v kb="$(jget "$t" "$store" "$n" ap_hwm_kb)" -v n="$n" 'BEGIN { printf "%.0f", kb / n }')"
      summary+=" ${k}_cpu_pct_per_agent=$(jget "$t" "$store" "$n" ap_cpu_pct_per_agent)"
    done
  done
done
echo "$summary"
