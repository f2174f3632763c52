#!/usr/bin/env bash
# e2e_resync_index_lie.sh - Description: a hash index that lies (the replica changed behind the
# appliance's back while it was stopped, so the index's hashes no longer match it) is caught by the
# resync's verification: the whole index is made stale, every chunk is read back, and the replica
# ends identical to the source; a damaged index file (checksum) loads as all stale with the same
# outcome; an index that tells the truth is verified and used.
set -u
. "$(dirname "$0")/lib/replication.sh"
rpl_setup
MIB=1048576

rpl_appliance_init
rpl_appliance_start --rpo 0.5
rpl_agent_register
rpl_agent_start
rpl_loop dev 128M random
"$AG" protect "$dev" --state "$RT/agent" >/dev/null || fail "protect failed"
rpl_wait_cycle "$dev" 1
disk_id=$(rpl_disk_id "$dev")
replica=$(rpl_replica_of "$dev")
index=$RT/app/journal/$disk_id/hashindex
size=$(blockdev --getsize64 "$dev")
chunks=$((size / MIB))

hidx() {
  local f args=()
  for f in "$@"; do args+=("disks.[disk_id=$disk_id].hash_index.$f"); done
  "$AP" status --state "$RT/app" --json | json_field - "${args[@]}"
}
index_known() { [ "$(hidx stale_chunks)" = 0 ]; }
wait_until 60 "the hash index still has stale chunks" index_known

# stop_both: the agent stopped with its tracking lost (the next start resyncs), the appliance
# stopped cleanly (its index saved closed)
stop_both() {
  kill -TERM "$RPL_AG_PID" && wait "$RPL_AG_PID"
  rm -rf "$MOBILITY_AGENT_BPF_PIN_DIR"
  kill -TERM "$RPL_AP_PID" && wait "$RPL_AP_PID"
  [ -f "$index" ] || fail "no hash index file at $index after a clean stop"
}
# resync_and_check WHAT: both started again; the resync runs; the replica equals the source.
# The counters resync_read_chunks resync_index_chunks verify_failures rehashed_chunks (of the new
# process) into v.
resync_and_check() {
  rpl_appliance_start --rpo 0.5
  rpl_agent_start
  "$AG" checkpoint --wait --state "$RT/agent" > "$RT/checkpoint.out" 2>&1 || fail "$1: checkpoint failed: $(cat "$RT/checkpoint.out")"
  cmp "$replica" "$dev" || fail "$1: the replica differs from the source after the resync"
  mapfile -t v < <(hidx resync_read_chunks resync_index_chunks verify_failures rehashed_chunks)
}

say "the replica changed behind the appliance's back: the index lies about every chunk"
stop_both
python3 - "$replica" "$chunks" <<'PY'
import sys
with open(sys.argv[1], "r+b") as f:
    for c in range(int(sys.argv[2])):
        f.seek(c * 1048576 + 4096)
        b = f.read(1)
        f.seek(c * 1048576 + 4096)
        f.write(bytes([b[0] ^ 0x5a]))
PY
cmp -s "$replica" "$dev" && fail "the replica did not change"
resync_and_check "lying index"
echo "lying index: ${v[0]} chunk(s) read, ${v[1]} from the index, ${v[2]} verification failure(s)"
[ "${v[2]}" -eq 1 ] || fail "the verification did not catch the lying index (failures: ${v[2]})"
# Chunks the background rehash read back meanwhile may be answered from the index again (truly).
[ "${v[0]}" -ge 1 ] && [ $((v[0] + v[1])) -eq "$chunks" ] || fail "after the failed verification the chunks were not read back: ${v[*]}"
grep -q "did not match the replica when verified" "$RT/appliance.log" || fail "the appliance did not say why it dropped the index"
line=$(grep "resync by comparison" "$RT/agent.log" | tail -n 1)
[[ $line == *": $chunks MiB of $chunks MiB differ"* ]] || fail "the resync did not find every chunk changed: $line"

say "a damaged index file loads as all stale"
wait_until 60 "the hash index still has stale chunks after the resync" index_known
stop_both
printf '\x01' | dd of="$index" bs=1 seek=$((64 + 16 + 100)) conv=notrunc status=none
dd if=/dev/urandom of="$dev" bs=1M count=1 seek=50 oflag=direct conv=notrunc status=none
resync_and_check "damaged index"
echo "damaged index: ${v[0]} chunk(s) read, ${v[1]} from the index (${v[3]} rehashed in the background), ${v[2]} verification failure(s)"
grep -q "hash index: all $chunks chunks stale: its checksum is wrong" "$RT/appliance.log" \
  || fail "the damaged index was not loaded as stale: $(grep 'hash index' "$RT/appliance.log" | tail -3)"
# Read back by the resync, or by the background rehash that may run first: read back either way.
[ $((v[0] + v[3])) -ge "$chunks" ] || fail "a damaged index answered for chunks it did not read back: ${v[*]}"

say "an index that tells the truth is verified and used"
wait_until 60 "the hash index still has stale chunks after the resync" index_known
stop_both
dd if=/dev/urandom of="$dev" bs=1M count=1 seek=70 oflag=direct conv=notrunc status=none
resync_and_check "true index"
echo "true index: ${v[0]} chunk(s) read, ${v[1]} from the index, ${v[2]} verification failure(s)"
[ "${v[0]}" -eq 0 ] && [ "${v[1]}" -eq "$chunks" ] && [ "${v[2]}" -eq 0 ] || fail "the true index was not used: ${v[*]}"
line=$(grep "resync by comparison" "$RT/agent.log" | tail -n 1)
[[ $line == *": 1 MiB of $chunks MiB differ"* ]] || fail "the resync did not find the one changed chunk: $line"
echo "e2e_resync_index_lie: ok"
