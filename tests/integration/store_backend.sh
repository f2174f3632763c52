#!/usr/bin/env bash
# store_backend.sh - Description: runs store_backend (one sequence of checks through the storage
# interface's table) against one backend: "file" (file:DIR in a temp dir) or "blob" (Azurite over
# HTTPS through the private DNS zone file and the test CA), with settings written by
# `replication-appliance init` as the daemon reads them.
set -u
b=${RPL_BUILD_DIR:?run under ctest}
kind=${1:?usage: store_backend.sh file|blob}
AP=$b/appliance/replication-appliance

. "$(dirname "$0")/lib/common.sh"
case "$kind" in
  file)
    W=$(mktemp -d /tmp/rpl-storetest.XXXXXX)
    CLEANUP_PATHS+=("$W")
    "$AP" init --state "$W/state" --storage "file:$W/images" > "$W/init.out" 2>&1 \
      || fail "init with file storage: $(cat "$W/init.out")"
    ;;
  blob)
    . "$(dirname "$0")/lib/azurite.sh"
    azurite_start --inMemoryPersistence
    W=$AZ_DIR/work # removed with AZ_DIR by the trap
    mkdir "$W"
    "$AP" init --state "$W/state" --storage "$AZ_CONNSTR" --container storetest \
      --private-dns-zone "$AZ_ZONE" --ca-file "$AZ_CA" > "$W/init.out" 2>&1 \
      || fail "init with Azurite: $(cat "$W/init.out")"
    ;;
  *) echo "store_backend.sh: unknown backend '$kind' (file|blob)" >&2; exit 2 ;;
esac

"$b/tests/store_backend" "$W/state" "$W" "$kind" || fail "store_backend $kind"
echo "store_backend $kind: ok"
