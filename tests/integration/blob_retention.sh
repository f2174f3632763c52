#!/usr/bin/env bash
# blob_retention.sh - Description: retention prunes recovery points on a compressed time scale
# (RPL_TEST_RETENTION_SCALE=3600, test-only: one second counts as an hour) with the policy
# all=2h,hourly=5h,daily=2d: after a run of checkpoints, the points left with an image are exactly
# what the policy keeps at the appliance's last retention run (checked by an independent model of
# the policy), the snapshots it dropped are gone from the blob service (List Blobs
# include=snapshots) and the kept ones remain; a pruned point's restore says it has no image, a kept
# old one restores byte-identical. Then the same with file: storage (kept image files removed).
set -u
. "$(dirname "$0")/lib/replication.sh"
rpl_setup 600
rpl_azurite_start --inMemoryPersistence
export BLOB_TEST_CONNSTR=$AZ_CONNSTR BLOB_TEST_ZONE=$AZ_ZONE BLOB_TEST_CA=$AZ_CA
BT=$B/tests/blob_tool
POLICY=all=2h,hourly=5h,daily=2d
export RPL_TEST_RETENTION_SCALE=3600
SECONDS_OF_POINTS=14

# take_points DEV: checkpoints for SECONDS_OF_POINTS seconds, a copy of the source kept per point;
# POINTS gets their ids, oldest first
take_points() {
  local dev=$1 end p
  POINTS=()
  end=$(( $(date +%s) + SECONDS_OF_POINTS ))
  while [ "$(date +%s)" -lt "$end" ]; do
    dd if=/dev/urandom of="$dev" bs=4k count=4 seek=$((RANDOM % 1000)) oflag=direct conv=notrunc status=none
    p=$("$AG" checkpoint "$dev" --wait --state "$RT/agent" | tail -n 1) || fail "checkpoint failed"
    [[ $p == rp-* ]] || fail "checkpoint's last line is not a point id: $p"
    cp --sparse=always "$dev" "$RT/src-$p"
    POINTS+=("$p")
  done
  [ ${#POINTS[@]} -ge 8 ] || fail "only ${#POINTS[@]} points in $SECONDS_OF_POINTS s"
}

# wait_retention LAST: the appliance applied the policy with LAST as the newest point; RET_AT = when
wait_retention() {
  wait_until 30 "" retention_ran "${1#rp-}" || { tail -20 "$RT/appliance.log" >&2; fail "no retention run after point $1 in 30 s"; }
}
retention_ran() {
  local line
  line=$(grep -a "retention at [0-9]* (newest rp-$1)" "$RT/appliance.log" | tail -n 1)
  [ -n "$line" ] || return 1
  RET_AT=$(sed -E 's/.*retention at ([0-9]+) .*/\1/' <<<"$line")
}

# check_catalog: the points with an image are what the model of the policy keeps at RET_AT;
# prints "KEPT-IDS|PRUNED-IDS|KEPT-IMAGES" (space-separated)
check_catalog() {
  python3 - "$RT/app/catalog.db" "$RET_AT" <<'PY' || fail "the points left do not follow the policy"
import sqlite3, sys
db = sqlite3.connect("file:%s?mode=ro" % sys.argv[1], uri=True)
now = int(sys.argv[2])
rows = db.execute("SELECT id, time, snapshot_id FROM recovery_points ORDER BY time, id").fetchall()
# the policy, modelled independently: all=2h, hourly=5h, daily=2d, one second = one hour
S, H, D = 3600, 3600, 86400
ALL, HOURLY, DAILY = 2 * H, 5 * H, 2 * D
# only points recorded by the last run are judged (a later point may have come in since)
rows = [r for r in rows if r[1] <= now]
keep = set()
for i, (pid, t, snap) in enumerate(rows):
    age = (now - t) * S
    nxt = rows[i + 1][1] * S if i + 1 < len(rows) else None
    last_h = nxt is None or nxt // H != t * S // H
    last_d = nxt is None or nxt // D != t * S // D
    if nxt is None or age < 0 or age <= ALL or (age <= HOURLY and last_h) or (age <= DAILY and last_d):
        keep.add(pid)
have = {pid for pid, t, snap in rows if snap is not None}
if have != keep:
    print("catalog keeps %s, the policy %s" % (sorted(have), sorted(keep)), file=sys.stderr)
    sys.exit(1)
pruned = [pid for pid, t, snap in rows if snap is None]
if not pruned or len(keep) < 3:
    print("nothing pruned or too little kept: kept %s pruned %s" % (sorted(keep), pruned), file=sys.stderr)
    sys.exit(1)
print(" ".join(map(str, sorted(keep))) + "|" + " ".join(map(str, pruned)) + "|" +
      " ".join(snap for pid, t, snap in rows if snap is not None))
PY
}

# check_restores KEPT PRUNED: a pruned point has no image; the oldest kept one restores identical
check_restores() {
  local kept=$1 pruned=$2 p out
  p=rp-${pruned%% *}
  out=$("$AP" restore --state "$RT/app" --disk "$disk_id" --point "$p" --out "$RT/nope" 2>&1) \
    && fail "pruned point $p was restored"
  [[ $out == *"no stored image"* ]] || fail "unclear error for a pruned point: $out"
  [ ! -e "$RT/nope" ] || fail "a failed restore left its output file"
  p=rp-${kept%% *}
  "$AP" restore --state "$RT/app" --disk "$disk_id" --point "$p" --verify "$RT/src-$p" > "$RT/restore.out" 2>&1 \
    || fail "the oldest kept point $p does not restore to the source at $p: $(cat "$RT/restore.out")"
}

start_all() {
  rpl_appliance_start --rpo 0.3
  rpl_agent_register
  rpl_agent_start
  "$AG" protect "$dev" --state "$RT/agent" > "$RT/protect.out" || fail "protect failed: $(cat "$RT/protect.out")"
  rpl_wait_cycle "$dev" 1
  disk_id=$(rpl_disk_id "$dev")
}

say "azure: init --retention $POLICY, checkpoints for $SECONDS_OF_POINTS s"
out=$("$AP" init --state "$RT/bad" --storage "file:$RT/x" --retention all=1w 2>&1) && fail "init took a bad policy"
[[ $out == *"retention policy"*"all=1w"* ]] || fail "unclear error for a bad retention policy: $out"
"$AP" init --state "$RT/app" --storage "$AZ_CONNSTR" --container replicas --private-dns-zone "$AZ_ZONE" \
  --ca-file "$AZ_CA" --retention "$POLICY" > "$RT/init.out" || fail "init failed"
grep -q "^retention: all=2h,hourly=5h,daily=2d" "$RT/init.out" || fail "init does not show the policy: $(cat "$RT/init.out")"
RPL_KEY=$(tail -n 1 "$RT/init.out")
rpl_loop dev 4M random
start_all
take_points "$dev"
wait_retention "${POINTS[-1]}"
res=$(check_catalog)
kept=${res%%|*}; rest=${res#*|}; pruned=${rest%%|*}; images=${rest#*|}
echo "points ${#POINTS[@]}: kept $kept; pruned $pruned"
"$BT" snapshots replicas "$disk_id.vhd" > "$RT/snaps.out" || fail "cannot list the snapshots"
listed=$(grep -v '^blob ' "$RT/snaps.out" | awk '{print $1}' | sort | tr '\n' ' ')
want=$(tr ' ' '\n' <<<"$images" | grep . | sort | tr '\n' ' ')
# a point recorded after the last run may add one snapshot: judge against the catalog at RET_AT
[ "$listed" = "$want" ] || {
  extra=$(comm -23 <(tr ' ' '\n' <<<"$listed" | grep .) <(tr ' ' '\n' <<<"$want" | grep .))
  [ -z "$(comm -13 <(tr ' ' '\n' <<<"$listed" | grep .) <(tr ' ' '\n' <<<"$want" | grep .))" ] && [ "$(wc -w <<<"$extra")" -le 1 ] \
    || fail "blob snapshots ($listed) differ from the kept points' ($want)"
}
grep -q "rplcycle=" "$RT/snaps.out" || fail "snapshots carry no cycle metadata: $(head -3 "$RT/snaps.out")"
check_restores "$kept" "$pruned"

say "file: storage, the same policy"
for pid in "${CLEANUP_PIDS[@]}"; do kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
CLEANUP_PIDS=()
"$AG" cbt stop "$dev" --state "$RT/agent" >/dev/null 2>&1
rm -rf "$RT/app" "$RT/agent" "$RT"/src-rp-*
mv "$RT/appliance.log" "$RT/appliance-azure.log"; mv "$RT/agent.log" "$RT/agent-azure.log"
unset RPL_PORT
"$AP" init --state "$RT/app" --storage "file:$RT/replica" --retention "$POLICY" > "$RT/init.out" || fail "init failed"
RPL_KEY=$(tail -n 1 "$RT/init.out")
start_all
take_points "$dev"
wait_retention "${POINTS[-1]}"
res=$(check_catalog)
kept=${res%%|*}; rest=${res#*|}; pruned=${rest%%|*}; images=${rest#*|}
echo "points ${#POINTS[@]}: kept $kept; pruned $pruned"
for f in $images; do [ -f "$f" ] || fail "kept point's image $f is missing"; done
left=$(ls "$RT/replica/$disk_id.img".{cycle,undo}-* 2>/dev/null | wc -l)
[ "$left" -le $(( $(wc -w <<<"$images") + 1 )) ] || fail "$left image files left for $(wc -w <<<"$images") kept points"
check_restores "$kept" "$pruned"
echo "blob_retention: ok"
