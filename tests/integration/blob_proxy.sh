#!/usr/bin/env bash
# blob_proxy.sh - Description: through tinyproxy with Basic credentials the client tunnels to Azurite
# (CONNECT seen in the proxy's log) and the upload is intact; with the account in the bypass list
# the proxy sees nothing; with a wrong password the client reports the proxy's refusal clearly.
set -u
. "$(dirname "$0")/lib/azurite.sh"
. "$(dirname "$0")/lib/tinyproxy.sh"
b=${RPL_BUILD_DIR:?run under ctest}
azurite_start
export BLOB_TEST_ZONE=$AZ_ZONE BLOB_TEST_CA=$AZ_CA BLOB_TEST_CONNSTR=$AZ_CONNSTR
tinyproxy_start
tp_log=$TP_LOG
head -c $((4 * 1024 * 1024)) /dev/urandom > "$AZ_DIR/image"

echo "== through the proxy, with credentials"
BLOB_TEST_PROXY="http://rpluser:s3cret-pass@127.0.0.1:$TP_PORT" "$b/tests/blob_tool" upload "$AZ_DIR/image" proxied disk.vhd \
  || fail "upload through the proxy failed"
grep -q "CONNECT.*$AZ_HOST:$AZ_PORT" "$tp_log" || { cat "$tp_log"; fail "the proxy's log shows no CONNECT to $AZ_HOST:$AZ_PORT"; }
BLOB_TEST_PROXY="http://rpluser:s3cret-pass@127.0.0.1:$TP_PORT" "$b/tests/blob_tool" download proxied disk.vhd "$AZ_DIR/back" \
  || fail "download through the proxy failed"
cmp "$AZ_DIR/image" "$AZ_DIR/back" || fail "blob differs after the proxied round trip"

echo "== bypass list"
before=$(grep -c CONNECT "$tp_log")
BLOB_TEST_PROXY="http://rpluser:s3cret-pass@127.0.0.1:$TP_PORT" BLOB_TEST_PROXY_BYPASS="localhost,.blob.core.windows.net" \
  "$b/tests/blob_tool" upload "$AZ_DIR/image" proxied bypass.vhd || fail "upload with the bypass failed"
after=$(grep -c CONNECT "$tp_log")
[ "$before" -eq "$after" ] || fail "a bypassed host went through the proxy ($before -> $after CONNECT lines)"
# The private endpoint's address, or a network holding it, bypasses too (curl alone matches only the
# host name: the client decides once, and check reports the same decision); another network does not.
for entry in 127.0.0.1 127.0.0.0/8 "10.0.0.0/8,127.0.0.1/32"; do
  before=$(grep -c CONNECT "$tp_log")
  BLOB_TEST_PROXY="http://rpluser:s3cret-pass@127.0.0.1:$TP_PORT" BLOB_TEST_PROXY_BYPASS="$entry" \
    "$b/tests/blob_tool" upload "$AZ_DIR/image" proxied bypass.vhd || fail "upload with the bypass $entry failed"
  after=$(grep -c CONNECT "$tp_log")
  [ "$before" -eq "$after" ] || fail "bypass entry $entry: the upload went through the proxy"
done
before=$(grep -c CONNECT "$tp_log")
BLOB_TEST_PROXY="http://rpluser:s3cret-pass@127.0.0.1:$TP_PORT" BLOB_TEST_PROXY_BYPASS="10.0.0.0/8,127.0.0.2,.example.com" \
  "$b/tests/blob_tool" upload "$AZ_DIR/image" proxied bypass.vhd || fail "upload through the proxy failed"
after=$(grep -c CONNECT "$tp_log")
[ "$after" -gt "$before" ] || fail "bypass entries that do not match the endpoint kept the upload off the proxy"

echo "== wrong proxy password"
err=$(BLOB_TEST_PROXY="http://rpluser:wrong@127.0.0.1:$TP_PORT" "$b/tests/blob_tool" probe 2>&1 >/dev/null) \
  && fail "a wrong proxy password was accepted"
echo "refused: $err"
[[ $err == *RPL_E_BLOB_PROXY* && $err == *"proxy authentication failed"* ]] || fail "unclear proxy error: $err"
[[ $err != *s3cret* && $err != *wrong@* ]] || fail "the proxy password was printed"
echo "blob_proxy: ok"
