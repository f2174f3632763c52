#!/usr/bin/env bash
# blob_ipv6.sh - Description: the private-endpoint path over IPv6: the zone file maps the account's
# public name to ::1 (loopback), the client pins it (bracketed in CURLOPT_RESOLVE), verifies TLS
# against the public name and completes a write and read-back against Azurite listening on ::1.
set -u
ip -6 addr show dev lo 2>/dev/null | grep -q '::1/128' || { echo "SKIP: no IPv6 loopback address" >&2; exit 77; }
AZ_LISTEN=::1
. "$(dirname "$0")/lib/azurite.sh"
b=${RPL_BUILD_DIR:?run under ctest}
azurite_start --inMemoryPersistence
grep -q "^::1 $AZ_HOST" "$AZ_ZONE" || fail "zone file does not map the name to ::1"
BLOB_TEST_ZONE=$AZ_ZONE BLOB_TEST_CA=$AZ_CA BLOB_TEST_MODE=ipv6 BLOB_TEST_CONNSTR=$AZ_CONNSTR RPL_LOG_LEVEL=info \
  "$b/tests/blob_ops" 2> "$AZ_DIR/err" || { cat "$AZ_DIR/err"; fail "operations over IPv6"; }
grep -q "storage path: $AZ_HOST -> ::1 (loopback) \[private DNS zone file\]" "$AZ_DIR/err" \
  || { cat "$AZ_DIR/err"; fail "the path report does not show ::1"; }
echo "blob_ipv6: ok"
