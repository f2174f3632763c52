#!/usr/bin/env bash
# failover.sh - Description: `replication-appliance failover` on file: storage (argument "file") or
# Azurite ("azure"): a 64 MiB + 256 KiB loop disk with a partition table (MBR for file:, GPT with
# an EFI system partition for Azure) and data, replicated by both daemons; a point; while a writer
# keeps replication going, the point made into a fixed VHD file (and, on Azure, into standalone page
# blobs by Copy Blob and by reads and Put Pages from the appliance). qemu-img, which nobody here
# wrote, must read every VHD made (and the downloaded replica blob) as format vpc with the exact
# virtual size (the disk rounded up to a whole MiB); the bytes equal the source at the point; the
# blob's sequence number and metadata name the disk and point; targets are never overwritten;
# errors for an unknown point, disk, a point retention pruned (or whose kept image is gone) and
# --to-blob on file: name the remedy; replication went on (a later cycle applied, the replica's
# lease still held); and a replica footer of an older version is rewritten when the blob is opened.
set -u
mode=${1:?usage: failover.sh file|azure}
. "$(dirname "$0")/lib/replication.sh"
rpl_setup
command -v qemu-img >/dev/null || skip "qemu-img missing (Debian's qemu-utils): run scripts/setup.sh"
command -v sfdisk >/dev/null || skip "sfdisk missing (Debian's fdisk): run scripts/setup.sh"

BT=$B/tests/blob_tool
# Retention keeps only the newest point (and those of the last second): a later point prunes the first.
case "$mode" in
  azure)
    rpl_azurite_start --inMemoryPersistence
    export BLOB_TEST_CONNSTR=$AZ_CONNSTR BLOB_TEST_ZONE=$AZ_ZONE BLOB_TEST_CA=$AZ_CA
    storage=(--storage "$AZ_CONNSTR" --container replicas --private-dns-zone "$AZ_ZONE" --ca-file "$AZ_CA")
    label=gpt want_gen=V2 ;;
  file)
    storage=(--storage "file:$RT/replica")
    label=dos want_gen=V1 ;;
  *) fail "unknown mode $mode" ;;
esac
"$AP" init --state "$RT/app" "${storage[@]}" --retention all=1s > "$RT/init.out" || fail "init failed"
RPL_KEY=$(tail -n 1 "$RT/init.out")
rpl_appliance_start --rpo 0.5
rpl_agent_register
rpl_agent_start

say "a $label-partitioned disk of 64 MiB + 256 KiB with data, replicated"
rpl_loop dev 65792K zero
if [ "$label" = gpt ]; then
  printf 'label: gpt\nstart=2048, size=16384, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\nstart=18432, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n' \
    | sfdisk -q --no-reread --no-tell-kernel "$dev" || fail "sfdisk (gpt) failed"
else
  printf 'label: dos\nstart=2048, type=83, bootable\n' | sfdisk -q --no-reread --no-tell-kernel "$dev" || fail "sfdisk (dos) failed"
fi
# Data in scattered places (the rest stays holes), the last sector included.
for off in 1 3 9 20 41 63; do
  dd if=/dev/urandom of="$dev" bs=1M count=1 seek="$off" oflag=direct conv=notrunc status=none
done
size=$(blockdev --getsize64 "$dev")
dd if=/dev/urandom of="$dev" bs=512 count=1 seek=$((size / 512 - 1)) oflag=direct conv=notrunc status=none
vhd_size=$(( (size + 1048575) / 1048576 * 1048576 ))
[ "$vhd_size" -ne "$size" ] || fail "the test disk should not be a whole number of MiB"
"$AG" protect "$dev" --state "$RT/agent" > "$RT/protect.out" || fail "protect failed: $(cat "$RT/protect.out")"
rpl_wait_cycle "$dev" 1
disk_id=$(rpl_disk_id "$dev")

say "a point; the source kept as it was at the point"
point=$("$AG" checkpoint "$dev" --wait --state "$RT/agent" | tail -n 1) || fail "checkpoint failed"
[[ $point == rp-* ]] || fail "checkpoint's last line is not a point id: $point"
cp --sparse=always "$dev" "$RT/source-at-point"

say "a writer keeps replication going during the failovers"
stop_file=$RT/stop-writer
( while [ ! -e "$stop_file" ]; do
    dd if=/dev/urandom of="$dev" bs=4k count=$((RANDOM % 16 + 1)) seek=$((2560 + RANDOM % 12000)) \
       oflag=direct conv=notrunc status=none
    sleep 0.05
  done ) &
writer=$!
CLEANUP_PIDS+=("$writer")
applied() { "$AP" status --state "$RT/app" --json | json_field -d 0 - disks.0.last_applied_cycle; }
applied_after() { [ "$(applied)" -gt "$1" ]; }
before=$(applied)

# qemu_check FILE WHAT: qemu-img reads FILE as a fixed VHD of vhd_size bytes; its bytes are the source's
# at the point, then zeros up to vhd_size, then our footer.
qemu_check() {
  local f=$1 what=$2 info
  info=$(qemu-img info -f vpc --output=json "$f") || fail "$what: qemu-img info failed"
  mapfile -t v < <(echo "$info" | json_field - format virtual-size)
  [ "${v[0]}" = vpc ] && [ "${v[1]}" -eq "$vhd_size" ] \
    || fail "$what: qemu-img reads format ${v[0]}, virtual size ${v[1]} (want vpc, $vhd_size): $info"
  [ "$(stat -c %s "$f")" -eq $((vhd_size + 512)) ] || fail "$what: file size $(stat -c %s "$f")"
  cmp -n "$size" "$f" "$RT/source-at-point" || fail "$what differs from the source at $point"
  cmp -s -n $((vhd_size - size)) -i "$size:0" "$f" /dev/zero || fail "$what: the padding to a whole MiB is not zeros"
  qemu-img convert -f vpc -O raw "$f" "$RT/converted.raw" || fail "$what: qemu-img convert failed"
  [ "$(stat -c %s "$RT/converted.raw")" -eq "$vhd_size" ] || fail "$what: qemu-img convert lost the tail"
  cmp -n "$size" "$RT/converted.raw" "$RT/source-at-point" || fail "$what: qemu-img convert's copy differs"
  rm -f "$RT/converted.raw"
}

say "failover --to FILE.vhd"
mkdir -p "$RT/out"
"$AP" failover --state "$RT/app" --disk "$disk_id" --to "$RT/out/disk.vhd" > "$RT/fo-file.out" 2>&1 \
  || fail "failover --to failed: $(cat "$RT/fo-file.out")"
cat "$RT/fo-file.out"
[ "$(tail -n 1 "$RT/fo-file.out")" = "$RT/out/disk.vhd" ] || fail "failover's last line is not the VHD's path"
qemu_check "$RT/out/disk.vhd" "the failover VHD file"
# sparse: holes of the image stay holes (data is 7 MiB of 64)
[ $(( $(stat -c %b "$RT/out/disk.vhd") * 512 )) -lt $((32 << 20)) ] || fail "the VHD file is not sparse"
grep -q -- "--hyper-v-generation $want_gen --os-type Linux" "$RT/fo-file.out" || fail "not generation $want_gen for a $label disk"
grep -q "az storage blob upload .*--type page --file $RT/out/disk.vhd" "$RT/fo-file.out" || fail "no upload command for the file"
grep -q "$((vhd_size - size)) zero bytes added" "$RT/fo-file.out" || fail "the rounding up to a whole MiB is not said"
ls "$RT/out" | grep -q partial && fail "a temporary file was left beside the VHD"
sum=$(md5sum < "$RT/out/disk.vhd")
out=$("$AP" failover --state "$RT/app" --disk "$disk_id" --to "$RT/out/disk.vhd" 2>&1) && fail "an existing VHD was overwritten"
[[ $out == *"exists already"* ]] || fail "unclear error for an existing target: $out"
[ "$(md5sum < "$RT/out/disk.vhd")" = "$sum" ] || fail "a refused failover changed the existing VHD"
ls "$RT/out" | grep -q partial && fail "a refused failover left a temporary file"

say "errors name the remedy"
out=$("$AP" failover --state "$RT/app" --disk "$disk_id" --point rp-999 --to "$RT/out/nope.vhd" 2>&1) && fail "an unknown point was failed over"
[[ $out == *"no such recovery point"*"status"* ]] || fail "unclear error for an unknown point: $out"
out=$("$AP" failover --state "$RT/app" --disk 00000000-0000-4000-8000-000000000000 --to "$RT/out/nope.vhd" 2>&1) \
  && fail "an unknown disk was failed over"
[[ $out == *"no such disk"*"status"* ]] || fail "unclear error for an unknown disk: $out"
[ ! -e "$RT/out/nope.vhd" ] || fail "a failed failover left its target"

if [ "$mode" = file ]; then
  out=$("$AP" failover --state "$RT/app" --disk "$disk_id" --to-blob x.vhd 2>&1) && fail "--to-blob on file: storage succeeded"
  [[ $out == *"needs Azure storage"*"--to FILE.vhd"* ]] || fail "unclear error for --to-blob on file: storage: $out"
fi

if [ "$mode" = azure ]; then
  # blob_check NAME CONTAINER WHAT: the blob downloaded passes qemu_check; sequence number = the
  # point's cycle, metadata naming disk and point, no lease (the copy is the user's).
  cycle=$(sed -n 's/^point rp-[0-9]* (cycle \([0-9]*\),.*/\1/p' "$RT/fo-file.out")
  [ -n "$cycle" ] || fail "failover did not say the point's cycle"
  blob_check() {
    "$BT" download "$2" "$1" "$RT/dl.vhd" > "$RT/dl.out" 2>&1 || fail "$3: download failed: $(cat "$RT/dl.out")"
    qemu_check "$RT/dl.vhd" "$3"
    rm -f "$RT/dl.vhd"
    local line
    line=$("$BT" snapshots "$2" "$1" | awk '$1 == "blob"') || fail "$3: cannot list it"
    read -r _ seq lease meta <<< "$line"
    [ "$seq" = "$cycle" ] || fail "$3: sequence number $seq, the point's cycle is $cycle"
    [ "$lease" != leased ] || fail "$3: the copy is leased"
    [[ ";$meta;" == *";source_disk=$disk_id;"* && ";$meta;" == *";source_point=$point;"* && ";$meta;" == *";source_cycle=$cycle;"* ]] \
      || fail "$3: metadata does not name the source: $meta"
  }

  say "failover --to-blob: a copy made by the storage"
  "$AP" failover --state "$RT/app" --disk "$disk_id" --point "$point" --to-blob "failover-$point.vhd" > "$RT/fo-blob.out" 2>&1 \
    || fail "failover --to-blob failed: $(cat "$RT/fo-blob.out")"
  cat "$RT/fo-blob.out"
  url="https://$AZ_HOST:$AZ_PORT/replicas/failover-$point.vhd"
  [ "$(tail -n 1 "$RT/fo-blob.out")" = "$url" ] || fail "failover's last line is not the blob's URL ($url)"
  grep -q "made by the storage" "$RT/fo-blob.out" || fail "Azurite's Copy Blob was not used"
  grep -q "az disk create --resource-group RG --name failover-$point --source $url --hyper-v-generation V2 --os-type Linux" \
    "$RT/fo-blob.out" || fail "no az disk create command for the blob"
  grep -q "storage account: devstoreaccount1" "$RT/fo-blob.out" || fail "the storage account is not said"
  blob_check "failover-$point.vhd" replicas "the failover blob (server-side copy)"
  out=$("$AP" failover --state "$RT/app" --disk "$disk_id" --to-blob "failover-$point.vhd" 2>&1) && fail "an existing blob was overwritten"
  [[ $out == *"exists already"* ]] || fail "unclear error for an existing blob: $out"

  say "failover --to-blob in another container, read and written by the appliance"
  RPL_FAILOVER_NO_SERVER_COPY=1 "$AP" failover --state "$RT/app" --disk "$disk_id" --to-blob "by-appliance.vhd" \
    --container failovers > "$RT/fo-blob2.out" 2>&1 || fail "failover through the appliance failed: $(cat "$RT/fo-blob2.out")"
  grep -q "read and written by this appliance" "$RT/fo-blob2.out" || fail "the copy was not made by the appliance"
  blob_check by-appliance.vhd failovers "the failover blob (through the appliance)"

  say "the replica blob itself, downloaded, is a VHD qemu reads at the exact size"
  "$BT" download replicas "$disk_id.vhd" "$RT/replica.vhd" > "$RT/dl.out" 2>&1 || fail "download of the replica failed"
  info=$(qemu-img info -f vpc --output=json "$RT/replica.vhd") || fail "qemu-img info of the replica failed"
  mapfile -t v < <(echo "$info" | json_field - format virtual-size)
  [ "${v[0]}" = vpc ] && [ "${v[1]}" -eq "$vhd_size" ] || fail "the replica reads as ${v[0]} of ${v[1]} bytes, want vpc of $vhd_size"
  "$BT" snapshots replicas "$disk_id.vhd" | awk '$1 == "blob" {print $3}' | grep -qx leased \
    || fail "the replica's lease was disturbed"

  say "a replica footer of an older version (creator rpla) is rewritten when the appliance opens the blob"
  python3 - "$RT/replica.vhd" "$RT/old-footer" <<'PY' || fail "cannot make an old footer"
import struct, sys
f = open(sys.argv[1], "rb"); f.seek(-512, 2); b = bytearray(f.read(512))
b[28:32] = b"rpla"; b[32:36] = struct.pack(">I", 0x00010000); b[64:68] = bytes(4)
b[64:68] = struct.pack(">I", ~sum(b) & 0xffffffff)
open(sys.argv[2], "wb").write(b)
PY
  rm -f "$RT/replica.vhd"
  kill -TERM "$RPL_AP_PID"
  wait "$RPL_AP_PID"
  "$BT" lease replicas "$disk_id.vhd" break > /dev/null 2>&1 # released by a clean stop already, normally
  "$BT" put replicas "$disk_id.vhd" "$vhd_size" "$RT/old-footer" || fail "cannot put the old footer"
  "$BT" download replicas "$disk_id.vhd" "$RT/replica.vhd" > "$RT/dl.out" 2>&1 || fail "download of the replica failed"
  [ "$(qemu-img info -f vpc --output=json "$RT/replica.vhd" | json_field - virtual-size)" -lt "$vhd_size" ] \
    || fail "the old footer did not make qemu read a short disk: the check below would prove nothing"
  rpl_appliance_start --rpo 0.5
  wait_until 60 "the appliance did not rewrite the old footer" grep -aq "rewrote the VHD footer" "$RT/appliance.log"
  "$BT" download replicas "$disk_id.vhd" "$RT/replica.vhd" > "$RT/dl.out" 2>&1 || fail "download of the replica failed"
  [ "$(qemu-img info -f vpc --output=json "$RT/replica.vhd" | json_field - virtual-size)" -eq "$vhd_size" ] \
    || fail "the rewritten replica footer does not read at $vhd_size bytes"
  rm -f "$RT/replica.vhd"
fi

say "a point whose image retention pruned"
sleep 1.1
point2=$("$AG" checkpoint "$dev" --wait --state "$RT/agent" | tail -n 1) || fail "second checkpoint failed"
wait_until 30 "no retention run after $point2" grep -aq "(newest $point2)" "$RT/appliance.log"
out=$("$AP" failover --state "$RT/app" --disk "$disk_id" --point "$point" --to "$RT/out/gone.vhd" 2>&1) \
  && fail "a pruned point was failed over"
[[ $out == *"image is gone"*"fail over another point"* ]] || fail "unclear error for a pruned point: $out"
[ ! -e "$RT/out/gone.vhd" ] || fail "a failed failover left its target"
if [ "$mode" = file ]; then # the catalog still has the image, the storage no longer
  rm -f "$RT/replica/$disk_id.img".{cycle,undo}-*
  out=$("$AP" failover --state "$RT/app" --disk "$disk_id" --to "$RT/out/gone.vhd" 2>&1) \
    && fail "a point whose kept image was removed was failed over"
  [[ $out == *"image is gone"* ]] || fail "unclear error for a removed kept image: $out"
  [ ! -e "$RT/out/gone.vhd" ] || fail "a failed failover left its target"
fi

say "replication went on"
wait_until 60 "no cycle applied while the failovers ran" applied_after "$before"
after=$(applied)
wait_until 60 "no cycle applied after the failovers" applied_after "$after"
touch "$stop_file"
wait "$writer"
grep -q "stale write fenced\|applying cycle" "$RT/appliance.log" && fail "the appliance reported apply failures: $(grep -m3 'fenced\|applying' "$RT/appliance.log")"
echo "failover ($mode): ok (point $point, disk $size bytes, VHD $vhd_size + 512, cycles applied $before -> $(applied))"
