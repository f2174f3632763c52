#!/usr/bin/env bash
# blob_faults.sh - Description: a 256 MiB upload through a proxy that injects faults into 10 % of
# requests (503 with Retry-After / x-ms-retry-after-ms, 500, resets before and after forwarding,
# delays) completes, retries are seen, and the blob read back (through the same faults) is
# byte-identical to the image.
set -u
. "$(dirname "$0")/lib/azurite.sh"
. "$(dirname "$0")/lib/fault_proxy.sh"
b=${RPL_BUILD_DIR:?run under ctest}
azurite_start
fault_proxy_start 0.10 --seed 4 --delay 2
export BLOB_TEST_ZONE=$AZ_ZONE BLOB_TEST_CA=$AZ_CA
export BLOB_TEST_CONNSTR="DefaultEndpointsProtocol=https;AccountName=devstoreaccount1;AccountKey=$AZ_KEY_B64;BlobEndpoint=https://$AZ_HOST:$FP_PORT"
head -c $((256 * 1024 * 1024)) /dev/urandom > "$AZ_DIR/image" || fail "cannot make the image"
: > "$FP_LOG"
out=$("$b/tests/blob_tool" upload "$AZ_DIR/image" faults disk.vhd) || fail "upload did not complete: $out"
echo "$out"
"$b/tests/blob_tool" download faults disk.vhd "$AZ_DIR/back" || fail "download did not complete"
cmp "$AZ_DIR/image" "$AZ_DIR/back" || fail "blob differs from the image"
injected=$(grep -vc 'fault=none' "$FP_LOG")
kinds=$(grep -o 'fault=[a-z0-9-]*' "$FP_LOG" | grep -v none | sort -u | wc -l)
total=$(grep -c 'fault=' "$FP_LOG")
echo "fault proxy: $injected faults of $kinds kinds in $total requests"
[ "$injected" -ge 5 ] || fail "too few faults injected ($injected) to mean anything"
[ "$kinds" -ge 3 ] || fail "only $kinds kinds of fault injected"
[[ $out =~ retries=([0-9]+) ]] && [ "${BASH_REMATCH[1]}" -gt 0 ] || fail "upload saw no retries"
# Each retry waited at least what the answer asked for (Retry-After: 1 s, x-ms-retry-after-ms: 300)
# or, without a hint, the 0.8 s first backoff: lower bounds the client guarantees.
python3 - "$FP_LOG" <<'PY' || fail "a retry came sooner than the server or the backoff allowed"
import sys
want = {"503-retry-after": 1.0, "503-retry-after-ms": 0.3, "500": 0.8}
entries = []
for line in open(sys.argv[1]):
    parts = line.split()
    if len(parts) == 5:
        entries.append((float(parts[0]), parts[1] + " " + parts[2] + " " + parts[3], parts[4][len("fault="):]))
checked = 0
for i, (t, key, fault) in enumerate(entries):
    if fault not in want:
        continue
    later = [t2 for t2, k2, _ in entries[i + 1:] if k2 == key]
    if not later:
        continue
    gap = later[0] - t
    if gap < want[fault] - 0.02:
        sys.exit(f"{key}: retried {gap:.3f} s after {fault}, wanted >= {want[fault]}")
    checked += 1
print(f"retry delays: {checked} checked")
PY
echo "blob_faults: ok"
