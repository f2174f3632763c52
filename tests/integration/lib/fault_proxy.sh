# fault_proxy.sh - sourced after azurite.sh: fault_proxy_start RATE [extra fault_proxy.py options]
# starts tests/tools/fault_proxy.py in front of Azurite on a free port (FP_PORT, log FP_LOG) and
# waits until it answers; the azurite.sh trap stops it.
fault_proxy_start() {
  local rate=$1 attempt pid
  shift
  FP_LOG=$AZ_DIR/fault_proxy.log
  for attempt in 1 2 3; do
    FP_PORT=$(free_port)
    python3 "$RPL_SOURCE_DIR/tests/tools/fault_proxy.py" --port "$FP_PORT" --upstream-port "$AZ_PORT" \
      --cert "$AZ_CERT" --key "$AZ_KEY" --ca "$AZ_CA" --rate "$rate" --log "$FP_LOG" "$@" \
      > "$AZ_DIR/fault_proxy.out" 2>&1 &
    pid=$!
    if az_wait_https "$FP_PORT" "$pid"; then
      az_track "$pid"
      return 0
    fi
    kill "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  cat "$AZ_DIR/fault_proxy.out" >&2
  fail "fault proxy did not start"
}
