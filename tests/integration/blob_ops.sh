#!/usr/bin/env bash
# blob_ops.sh - Description: runs blob_ops (every page-blob operation) against Azurite over HTTPS
# reached by its production-style name through a private DNS zone file, with Shared Key; then the
# authorization round trip in path style (https://127.0.0.1:PORT/devstoreaccount1), with a SAS token,
# and with a bearer token from a local IMDS-form endpoint.
set -u
. "$(dirname "$0")/lib/azurite.sh"
b=${RPL_BUILD_DIR:?run under ctest}
azurite_start
export BLOB_TEST_ZONE=$AZ_ZONE BLOB_TEST_CA=$AZ_CA

echo "== Shared Key"
BLOB_TEST_MODE=full BLOB_TEST_CONNSTR=$AZ_CONNSTR "$b/tests/blob_ops" || fail "operations with Shared Key"

echo "== path style (the emulator's form: an address as host, the account in the path, named twice when signing)"
BLOB_TEST_ZONE= BLOB_TEST_MODE=pathstyle \
  BLOB_TEST_CONNSTR="DefaultEndpointsProtocol=https;AccountName=devstoreaccount1;AccountKey=$AZ_KEY_B64;BlobEndpoint=https://127.0.0.1:$AZ_PORT/devstoreaccount1" \
  "$b/tests/blob_ops" || fail "operations in path style"

echo "== SAS"
sas=$(python3 "$RPL_SOURCE_DIR/tests/tools/make_sas.py" devstoreaccount1 "$AZ_KEY_B64") || fail "make_sas.py"
BLOB_TEST_MODE=sas BLOB_TEST_CONNSTR="BlobEndpoint=https://$AZ_HOST:$AZ_PORT;SharedAccessSignature=$sas" \
  "$b/tests/blob_ops" || fail "operations with a SAS"

echo "== bearer token from a managed-identity endpoint"
imds_ready() { curl -s --noproxy "*" -o /dev/null "http://127.0.0.1:$1/ready"; }
imds_port=$(free_port)
python3 "$RPL_SOURCE_DIR/tests/tools/fake_imds.py" --port "$imds_port" --fail-first 2 --log "$AZ_DIR/imds.log" &
az_track $!
wait_until 10 "" imds_ready "$imds_port"
BLOB_TEST_MODE=bearer BLOB_TEST_IDENTITY="http://127.0.0.1:$imds_port/metadata/identity/oauth2/token" \
  BLOB_TEST_CONNSTR="AccountName=devstoreaccount1;BlobEndpoint=https://$AZ_HOST:$AZ_PORT" \
  "$b/tests/blob_ops" || fail "operations with a bearer token"
# The endpoint saw the IMDS form: Metadata header, api-version, resource; two failures then one token.
grep -q 'GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fstorage.azure.com%2F metadata=true -> 200' "$AZ_DIR/imds.log" \
  || { cat "$AZ_DIR/imds.log"; fail "IMDS request not in the expected form"; }
[ "$(grep -c ' -> 503' "$AZ_DIR/imds.log")" -eq 2 ] || fail "token fetch did not retry the failures"
[ "$(grep -c ' -> 200' "$AZ_DIR/imds.log")" -eq 1 ] || fail "token was not cached (fetched more than once)"

echo "== bearer tokens near expiry are refreshed before use"
# Tokens that live 200 s are always inside the client's 5-minute refresh margin: every request must
# fetch a fresh one instead of sending one about to expire.
imds2=$(free_port)
python3 "$RPL_SOURCE_DIR/tests/tools/fake_imds.py" --port "$imds2" --expires-in 200 --log "$AZ_DIR/imds2.log" &
az_track $!
wait_until 10 "" imds_ready "$imds2"
BLOB_TEST_MODE=refresh BLOB_TEST_IDENTITY="http://127.0.0.1:$imds2/metadata/identity/oauth2/token" \
  BLOB_TEST_CONNSTR="AccountName=devstoreaccount1;BlobEndpoint=https://$AZ_HOST:$AZ_PORT" \
  "$b/tests/blob_ops" || fail "operations with short-lived bearer tokens"
[ "$(grep -c ' -> 200' "$AZ_DIR/imds2.log")" -ge 4 ] || fail "short-lived tokens were not refreshed before each request"
echo "blob_ops: ok"
