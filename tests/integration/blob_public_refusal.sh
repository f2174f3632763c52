#!/usr/bin/env bash
# blob_public_refusal.sh - Description: in a network namespace with no routes, a storage name that
# the zone file maps to a public address (203.0.113.7, held by a local listener inside the namespace)
# is refused before any connection: the error names the host, the address and the fix, and the
# listener sees nothing; with the check switched off the same listener does see the connection.
set -u
. "$(dirname "$0")/lib/common.sh"
b=${RPL_BUILD_DIR:?run under ctest}
if [ "$(id -u)" -ne 0 ] || ! unshare -n true 2>/dev/null; then
  echo "SKIP: needs root and network namespaces" >&2
  exit 77
fi
dir=$(mktemp -d /tmp/rpl-netns.XXXXXX)
CLEANUP_PATHS+=("$dir")
cat > "$dir/inner.sh" <<'INNER'
set -u
b=$1 dir=$2
. "$3"
ip link set lo up || fail "cannot bring up lo"
# The "public endpoint" lives on lo inside this namespace only; there is no route anywhere else.
ip addr add 203.0.113.7/32 dev lo || fail "cannot add the test address"
[ -z "$(ip route show default)" ] || fail "the namespace has a default route"
socat TCP-LISTEN:443,bind=203.0.113.7,reuseaddr,fork SYSTEM:"echo connection >> $dir/connections" 2>/dev/null &
CLEANUP_SERVICES+=("$!")
listening() { ss -ltn | grep -q '203.0.113.7:443'; }
wait_until 5 "" listening
printf '203.0.113.7 acct.privatelink.blob.core.windows.net acct.blob.core.windows.net\n' > "$dir/zone"
export BLOB_TEST_ZONE=$dir/zone
export BLOB_TEST_CONNSTR="DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
err=$("$b/tests/blob_tool" probe 2>&1 >/dev/null) && fail "probe of a public address succeeded"
echo "refused: $err"
for want in RPL_E_BLOB_PUBLIC_ADDRESS acct.blob.core.windows.net 203.0.113.7 "link the private DNS zone" "approve the private endpoint connection"; do
  [[ $err == *"$want"* ]] || fail "refusal does not mention '$want'"
done
sleep 0.5
[ ! -s "$dir/connections" ] || fail "a connection was opened to the public address"
# Control: without the check the client does connect, so the listener would have seen it.
BLOB_TEST_ALLOW_PUBLIC=1 "$b/tests/blob_tool" probe >/dev/null 2>&1
wait_until 5 "" test -s "$dir/connections"
[ -s "$dir/connections" ] || fail "control run: the listener saw no connection (the test proves nothing)"
echo "public refusal: ok"
INNER
unshare -n bash "$dir/inner.sh" "$b" "$dir" "$(cd "$(dirname "$0")" && pwd)/lib/common.sh"
