#!/usr/bin/env bash
# e2e_blob_resync_index.sh - Description: a disk replicated into a page blob (Azurite over HTTPS)
# has a hash index of its replica (known from the initial sync without reading the new blob back;
# some chunks stale after small writes); the agent stopped and its
# tracking lost while ~1 % of the disk changed: the resync answers from the index and reads from
# the blob no more than the chunks the index held stale (the appliance's counters say so), the
# changed chunks are found, and the blob ends byte-identical to the source.
set -u
. "$(dirname "$0")/lib/replication.sh"
rpl_setup
rpl_azurite_start --inMemoryPersistence
export BLOB_TEST_CONNSTR=$AZ_CONNSTR BLOB_TEST_ZONE=$AZ_ZONE BLOB_TEST_CA=$AZ_CA
BT=$B/tests/blob_tool
MIB=1048576

rpl_appliance_init_azure
rpl_appliance_start --rpo 0.5
rpl_agent_register
rpl_loop dev 256M half
rpl_agent_start
"$AG" protect "$dev" --state "$RT/agent" > "$RT/protect.out" || fail "protect failed: $(cat "$RT/protect.out")"
rpl_wait_cycle "$dev" 1
disk_id=$(rpl_disk_id "$dev")
size=$(blockdev --getsize64 "$dev")

# hidx FIELD...: the disk's hash_index fields from one status document
hidx() {
  local f args=()
  for f in "$@"; do args+=("disks.[disk_id=$disk_id].hash_index.$f"); done
  "$AP" status --state "$RT/app" --json | json_field - "${args[@]}"
}
index_known() { [ "$(hidx stale_chunks)" = 0 ]; }
applied() {
  local v
  mapfile -t v < <("$AP" status --state "$RT/app" --json |
    json_field - "disks.[disk_id=$disk_id].last_applied_cycle" "disks.[disk_id=$disk_id].last_committed_cycle")
  [ "${#v[@]}" -eq 2 ] && [ "${v[0]}" = "${v[1]}" ] && [ "${v[0]}" -ge "$1" ]
}

say "the index after the initial sync (whole chunks hashed as written, the new blob's zeros known as made)"
wait_until 120 "the hash index still has stale chunks: $(hidx stale_chunks loaded | tr '\n' ' ')" index_known
# A blob this appliance made reads as zeros: nothing of it is read back (every chunk was, one Get
# Page Ranges request per MiB, ahead of the initial sync's writes).
[ "$(hidx rehash_read_bytes)" = 0 ] || fail "the background rehash read $(hidx rehash_read_bytes) bytes of a blob this appliance made"
mapfile -t v < <(hidx chunks chunk_size used)
[ "${v[0]}" -eq $(( (size + MIB - 1) / MIB )) ] && [ "${v[1]}" -eq "$MIB" ] && [ "${v[2]}" = true ] \
  || fail "hash index not as expected: ${v[*]}"

say "small writes into 4 chunks, replicated: those chunks stale in the index (rehashed only once cold)"
cycle=$(rpl_agent_cycle "$dev")
for off in 40 41 150 250; do
  dd if=/dev/urandom of="$dev" bs=4k count=1 seek=$((off * 256 + 3)) oflag=direct conv=notrunc status=none
done
"$AG" checkpoint --wait --state "$RT/agent" > "$RT/checkpoint0.out" || fail "checkpoint failed: $(cat "$RT/checkpoint0.out")"
wait_until 60 "the small writes' cycle was not applied to the blob" applied "$((cycle + 1))"
echo "stale chunks before the resync: $(hidx stale_chunks)"

say "stop the agent, lose its tracking, change ~1 % of the disk (3 MiB in 3 places)"
kill -TERM "$RPL_AG_PID"
wait "$RPL_AG_PID"
rm -rf "$MOBILITY_AGENT_BPF_PIN_DIR"
for off in 7 99 201; do
  dd if=/dev/urandom of="$dev" bs=1M count=1 seek="$off" oflag=direct conv=notrunc status=none
done
mapfile -t before < <(hidx resyncs resync_read_bytes resync_stale_chunks resync_index_chunks verify_failures)

say "restart: the resync compares with the index"
rpl_agent_start
"$AG" checkpoint --wait --state "$RT/agent" > "$RT/checkpoint.out" || fail "checkpoint failed: $(cat "$RT/checkpoint.out")"
wait_until 60 "the resync's cycle was not applied to the blob" applied "$(rpl_agent_cycle "$dev")"
mapfile -t after < <(hidx resyncs resync_read_bytes resync_stale_chunks resync_index_chunks verify_failures verified_chunks verify_read_bytes)
resyncs=$((after[0] - before[0]))
read_bytes=$((after[1] - before[1]))
stale=$((after[2] - before[2]))
from_index=$((after[3] - before[3]))
echo "resync: $resyncs resync(s), $read_bytes bytes read from the blob for $stale stale chunk(s), $from_index chunk(s) from the index, ${after[5]} chunk(s) verified (${after[6]} bytes)"
[ "$resyncs" -eq 1 ] || fail "expected one resync, the appliance counted $resyncs"
[ "$read_bytes" -le $((stale * MIB)) ] || fail "the resync read $read_bytes bytes from the blob, more than its $stale stale chunk(s)"
[ "$from_index" -ge $(( size / MIB - stale )) ] || fail "only $from_index chunks came from the index"
[ "$((after[4] - before[4]))" -eq 0 ] || fail "the index failed its verification though nothing wrote the blob behind it"
line=$(grep "resync by comparison" "$RT/agent.log" | tail -n 1)
[[ $line == *": 3 MiB of 256 MiB differ"* ]] || fail "the resync did not find exactly the 3 changed chunks: $line"

say "the blob equals the source"
"$BT" download replicas "$disk_id.vhd" "$RT/blob" > "$RT/dl.out" 2>&1 || fail "download failed: $(cat "$RT/dl.out")"
cmp -n "$size" "$RT/blob" "$dev" || fail "the blob differs from the source after the resync"
echo "e2e_blob_resync_index: ok ($line; $read_bytes bytes read for the comparison)"
