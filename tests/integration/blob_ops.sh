#!/usr/bin/env bash
# blob_ops.sh - Description: runs blob_ops (every page-blob operation) against Azurite over HTTPS
# reached by its production-style name through a private DNS zone file, with Shared Key; then the
# authorization round trip with a SAS token and with a bearer token from a local IMDS-form endpoint.
set -u
. "$(dirname "$0")/lib/azurite.sh"
b=${RPL_BUILD_DIR:?run under ctest}
azurite_start
export BLOB_TEST_ZONE=$AZ_ZONE BLOB_TEST_CA=$AZ_CA

echo "== Shared Key"
BLOB_TEST_MODE=full BLOB_TEST_CONNSTR=$AZ_CONNSTR "$b/tests/blob_ops" || az_fail "operations with Shared Key"

echo "== SAS"
sas=$(python3 "$RPL_SOURCE_DIR/tests/tools/make_sas.py" devstoreaccount1 "$AZ_KEY_B64") || az_fail "make_sas.py"
BLOB_TEST_MODE=sas BLOB_TEST_CONNSTR="BlobEndpoint=https://$AZ_HOST:$AZ_PORT;SharedAccessSignature=$sas" \
  "$b/tests/blob_ops" || az_fail "operations with a SAS"

echo "== bearer token from a managed-identity endpoint"
imds_port=$(az_free_port)
python3 "$RPL_SOURCE_DIR/tests/tools/fake_imds.py" --port "$imds_port" --fail-first 2 --log "$AZ_DIR/imds.log" &
az_track $!
for i in $(seq 1 100); do
  curl -s -o /dev/null "http://127.0.0.1:$imds_port/ready" && break
  sleep 0.1
done
BLOB_TEST_MODE=bearer BLOB_TEST_IDENTITY="http://127.0.0.1:$imds_port/metadata/identity/oauth2/token" \
  BLOB_TEST_CONNSTR="AccountName=devstoreaccount1;BlobEndpoint=https://$AZ_HOST:$AZ_PORT" \
  "$b/tests/blob_ops" || az_fail "operations with a bearer token"
# The endpoint saw the IMDS form: Metadata header, api-version, resource; two failures then one token.
grep -q 'GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fstorage.azure.com%2F metadata=true -> 200' "$AZ_DIR/imds.log" \
  || { cat "$AZ_DIR/imds.log"; az_fail "IMDS request not in the expected form"; }
[ "$(grep -c ' -> 503' "$AZ_DIR/imds.log")" -eq 2 ] || az_fail "token fetch did not retry the failures"
[ "$(grep -c ' -> 200' "$AZ_DIR/imds.log")" -eq 1 ] || az_fail "token was not cached (fetched more than once)"
echo "blob_ops: ok"
