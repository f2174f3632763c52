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
head -c $((256 * 1024 * 1024)) /dev/urandom > "$AZ_DIR/image" || az_fail "cannot make the image"
: > "$FP_LOG"
out=$("$b/tests/blob_tool" upload "$AZ_DIR/image" faults disk.vhd) || az_fail "upload did not complete: $out"
echo "$out"
"$b/tests/blob_tool" download faults disk.vhd "$AZ_DIR/back" || az_fail "download did not complete"
cmp "$AZ_DIR/image" "$AZ_DIR/back" || az_fail "blob differs from the image"
injected=$(grep -vc 'fault=none' "$FP_LOG")
kinds=$(grep -o 'fault=[a-z0-9-]*' "$FP_LOG" | grep -v none | sort -u | wc -l)
total=$(grep -c 'fault=' "$FP_LOG")
echo "fault proxy: $injected faults of $kinds kinds in $total requests"
[ "$injected" -ge 5 ] || az_fail "too few faults injected ($injected) to mean anything"
[ "$kinds" -ge 3 ] || az_fail "only $kinds kinds of fault injected"
[[ $out =~ retries=([0-9]+) ]] && [ "${BASH_REMATCH[1]}" -gt 0 ] || az_fail "upload saw no retries"
echo "blob_faults: ok"
