#!/usr/bin/env bash
# unprotect_blob.sh - Description: with the replica in page blobs (Azurite over HTTPS), `unprotect
# --delete-replica --yes` of a protected disk with recovery points deletes its page blob with every
# snapshot (List Blobs include=snapshots finds nothing of it), its cache and its catalog rows
# (points and restore say there is no such disk); protecting the device again makes a new blob
# that replicates it.
set -u
. "$(dirname "$0")/lib/replication.sh"
rpl_setup 300
rpl_azurite_start --inMemoryPersistence
export BLOB_TEST_CONNSTR=$AZ_CONNSTR BLOB_TEST_ZONE=$AZ_ZONE BLOB_TEST_CA=$AZ_CA
BT=$B/tests/blob_tool

rpl_appliance_init_azure
rpl_appliance_start --rpo 0.5
rpl_agent_register
rpl_agent_start
rpl_loop dev 32M random
"$AG" protect "$dev" --state "$RT/agent" >/dev/null || fail "protect failed"
rpl_wait_cycle "$dev" 1
id=$(rpl_disk_id "$dev")
app_disk() { "$AP" status --state "$RT/app" --json | json_field -d none - "disks.[disk_id=$1].$2"; }
dd if=/dev/urandom of="$dev" bs=1M count=2 seek=4 oflag=direct conv=notrunc status=none
point=$("$AG" checkpoint --wait "$dev" --state "$RT/agent" | tail -n 1) || fail "checkpoint failed"
snapshots() { "$BT" snapshots replicas "$id.vhd" 2>/dev/null | awk '$1 != "blob"' | grep -c .; }
has_snapshot() { [ "$(snapshots)" -ge 1 ]; }
wait_until -i 0.5 30 "the point's blob snapshot did not appear" has_snapshot

say "unprotect --delete-replica --yes (disk $id, $(snapshots) snapshot(s))"
out=$("$AG" unprotect "$dev" --delete-replica --yes --state "$RT/agent") || fail "unprotect --delete-replica failed: $out"
grep -q "unprotected $dev (disk $id).*deletes its replica" <<< "$out" || fail "unprotect --delete-replica said: $out"
gone() { [ "$(app_disk "$id" state)" = none ]; }
wait_until -i 0.5 60 "the appliance still lists the deleted disk" gone
left=$("$BT" snapshots replicas "$id.vhd" 2>&1) || fail "cannot list the container: $left"
[ -z "$left" ] || fail "the blob or its snapshots are left: $left"
grep -q "disk $id .*deleted (unprotect --delete-replica)" "$RT/appliance.log" || fail "the appliance did not log the deletion"
rpl_expect_deleted "$id"
out=$("$AP" restore --state "$RT/app" --disk "$id" --point "$point" --out "$RT/deleted.img" 2>&1) \
  && fail "restore of the deleted disk succeeded"
grep -qi "no such disk\|no disk" <<< "$out" || fail "restore of the deleted disk said: $out"

say "protect it again: a new page blob"
"$AG" protect "$dev" --state "$RT/agent" >/dev/null || fail "protecting the device again failed"
id2=$(rpl_disk_id "$dev")
[ "$id2" != "$id" ] || fail "the device got the deleted disk's id back"
rpl_wait_cycle "$dev" 1
"$BT" snapshots replicas "$id2.vhd" | grep -q "^blob" || fail "no page blob for the protected-again disk"
echo "unprotect_blob: ok (disk $id deleted with its blob and snapshots; protected again as $id2)"
