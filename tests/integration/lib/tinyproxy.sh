# tinyproxy.sh - sourced after azurite.sh: tinyproxy_start runs Debian's tinyproxy on a free port
# (TP_PORT) with Basic credentials rpluser / s3cret-pass, logging CONNECT lines to TP_LOG. The proxy
# resolves the storage name itself, so it runs in its own mount namespace with the test zone file
# bound over /etc/hosts (the machine's /etc/hosts is untouched). Skips (77) without tinyproxy/root.
tinyproxy_start() {
  command -v tinyproxy >/dev/null || { echo "SKIP: tinyproxy not installed" >&2; exit 77; }
  { [ "$(id -u)" -eq 0 ] && unshare -m true 2>/dev/null; } || { echo "SKIP: needs root for a mount namespace" >&2; exit 77; }
  TP_LOG=$AZ_DIR/tinyproxy.log
  local attempt pid
  for attempt in 1 2 3; do
    TP_PORT=$(free_port)
    cat > "$AZ_DIR/tinyproxy.conf" <<CONF
Port $TP_PORT
Listen 127.0.0.1
Timeout 60
LogFile "$TP_LOG"
LogLevel Connect
MaxClients 32
BasicAuth rpluser s3cret-pass
CONF
    unshare -m sh -c "mount --bind '$AZ_ZONE' /etc/hosts && exec tinyproxy -d -c '$AZ_DIR/tinyproxy.conf'" \
      > "$AZ_DIR/tinyproxy.out" 2>&1 &
    pid=$!
    if wait_until 5 "" tp_listens; then
      az_track "$pid"
      return 0
    fi
    kill "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  cat "$AZ_DIR/tinyproxy.out" >&2
  fail "tinyproxy did not start"
}
tp_listens() { ss -ltn | grep -q "127.0.0.1:$TP_PORT "; }
