#!/usr/bin/env bash
# blob_upload.sh - benchmark: a 1 GiB image (half of its 4 MiB chunks zero) uploaded into Azurite
# over HTTPS by our client (build/tests/blob_tool) and by the npm @azure/storage-blob SDK with the
# same parallelism (16 in flight, zero chunks skipped, Content-MD5 on every Put Page), in the same
# run; prints the throughput ratio and the client CPU-seconds ratio (ours / SDK's), and the same
# without Content-MD5 on either side (the SDK's default). Azurite's own CPU is the limit of both. Needs scripts/setup.sh (Azurite and the SDK in tools/).
#   usage: bash bench/blob_upload.sh [BUILD_DIR]
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
export RPL_SOURCE_DIR=$root
sdk=$root/tools/azure-sdk
[ -x "$build/tests/blob_tool" ] || { echo "blob_upload: build first (bash scripts/build.sh release)" >&2; exit 1; }
[ -d "$sdk/node_modules/@azure/storage-blob" ] || { echo "blob_upload: run scripts/setup.sh (installs the SDK into tools/azure-sdk)" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "blob_upload: run as root (the SDK is given the zone file as /etc/hosts in a mount namespace)" >&2; exit 1; }
. "$root/tests/integration/lib/azurite.sh"
# In-memory persistence: Azurite is the limit either way; this keeps its disk writeback out of the
# comparison (runs on disk varied 2x from one to the next).
azurite_start --inMemoryPersistence
IN_FLIGHT=16
image=$AZ_DIR/image
python3 - "$image" <<'PY'
import os, sys
chunk = 4 * 1024 * 1024
with open(sys.argv[1], "wb") as f:
    for i in range(256):          # 1 GiB; odd chunks zero
        f.write(os.urandom(chunk) if i % 2 == 0 else bytes(chunk))
PY
export BLOB_TEST_ZONE=$AZ_ZONE BLOB_TEST_CA=$AZ_CA BLOB_TEST_CONNSTR=$AZ_CONNSTR BLOB_TEST_IN_FLIGHT=$IN_FLIGHT
export BENCH_URL="https://$AZ_HOST:$AZ_PORT" BENCH_KEY=$AZ_KEY_B64

ours() { python3 "$root/bench/measure.py" "$build/tests/blob_tool" upload "$image" bench "$1" --skip-zero; }
ours_plain() { BLOB_TEST_NO_MD5=1 ours "$1"; }
# The SDK resolves the public name through /etc/hosts: give it the zone file there, in its own mount
# namespace, and the test CA through NODE_EXTRA_CA_CERTS.
sdk_run() {
  NODE_PATH=$sdk/node_modules NODE_EXTRA_CA_CERTS=$AZ_CA unshare -m sh -c \
    "mount --bind '$AZ_ZONE' /etc/hosts && exec python3 '$root/bench/measure.py' node '$root/bench/sdk_upload.js' '$image' bench '$1' $IN_FLIGHT $2"
}
field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p" <<<"$2" | head -1; }

echo "warm-up (both clients, results discarded)"
ours warm-ours.vhd >/dev/null || az_fail "our client failed"
sdk_run warm-sdk.vhd md5 >/dev/null || az_fail "the SDK failed"
"$build/tests/blob_tool" delete bench warm-ours.vhd && "$build/tests/blob_tool" delete bench warm-sdk.vhd || az_fail "cannot delete the warm-up blobs"

# Three rounds, the order rotated each round, so that neither client always follows the other.
runs=$AZ_DIR/runs
: > "$runs"
order=(ours sdk plain oursplain)
for round in 1 2 3; do
  for k in 0 1 2 3; do
    who=${order[$(( (k + round - 1) % 4 ))]}
    case $who in
      ours)  line=$(ours "ours-$round.vhd") || az_fail "our client failed: $line" ;;
      oursplain) line=$(ours_plain "oursplain-$round.vhd") || az_fail "our client failed: $line" ;;
      sdk)   line=$(sdk_run "sdk-$round.vhd" md5) || az_fail "the SDK failed: $line" ;;
      plain) line=$(sdk_run "plain-$round.vhd" plain) || az_fail "the SDK failed: $line" ;;
    esac
    line=$(tr '\n' ' ' <<<"$line")
    echo "round $round $who: $line"
    echo "$who $line" >> "$runs"
    if [ "$round" -eq 1 ]; then
      "$build/tests/blob_tool" download bench "$who-$round.vhd" "$AZ_DIR/back" && cmp -s "$image" "$AZ_DIR/back" \
        || az_fail "the blob uploaded by $who differs from the image"
    fi
    # Each blob is dropped after its run: an in-memory Azurite slows down as it fills.
    "$build/tests/blob_tool" delete bench "$who-$round.vhd" || az_fail "cannot delete $who-$round.vhd"
  done
done
echo "verification: the round-1 blob of every client read back byte-identical"

python3 - "$runs" "$(node -p "require('$sdk/node_modules/@azure/storage-blob/package.json').version")" <<'PY'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    who, rest = line.split(" ", 1)
    vals = {k: float(v) for k, v in re.findall(r"\b(\w+)=([0-9.]+)", rest)}
    rows.setdefault(who, []).append(vals)
def med(who, key):
    return statistics.median(r[key] for r in rows[who])
mib = rows["ours"][0]["image_bytes"] / 2**20
names = {"ours": "ours (libcurl multi), Content-MD5", "sdk": f"SDK {sys.argv[2]}, Content-MD5",
         "oursplain": "ours, no MD5", "plain": f"SDK {sys.argv[2]}, no MD5"}
print("== results: medians of 3 rounds (1 GiB image, half of its 4 MiB chunks zero and skipped; 16 in flight)")
for who in ("ours", "sdk", "oursplain", "plain"):
    up, cpu, pcpu = med(who, "seconds"), med(who, "cpu_seconds"), med(who, "cpu")
    print(f"{names[who]:34s} upload {up:6.3f} s = {mib/up:6.1f} MiB/s of image; CPU {cpu:5.3f} s in upload, {pcpu:5.3f} s whole process")
o, s, p = (med(w, "seconds") for w in ("ours", "sdk", "plain"))
oc, sc, pc = (med(w, "cpu_seconds") for w in ("ours", "sdk", "plain"))
op, sp, pp = (med(w, "cpu") for w in ("ours", "sdk", "plain"))
print(f"throughput ratio ours/SDK:                 {s/o:.2f}  (vs the SDK without MD5: {p/o:.2f}; goal >= 1.0)")
print(f"client CPU-seconds ratio ours/SDK, upload: {oc/sc:.2f}  (vs the SDK without MD5: {oc/pc:.2f}; goal <= 0.33)")
print(f"client CPU-seconds ratio, whole process:   {op/sp:.2f}  (vs the SDK without MD5: {op/pp:.2f})")
on, onc = med("oursplain", "seconds"), med("oursplain", "cpu_seconds")
print(f"without MD5 on both sides: throughput ratio {p/on:.2f}, CPU-seconds ratio (upload) {onc/pc:.2f}")
PY
