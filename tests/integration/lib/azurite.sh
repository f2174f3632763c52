# azurite.sh - sourced by integration tests: a test CA and server certificate for the production-style
# name devstoreaccount1.blob.core.windows.net, Azurite 3.35.0 over HTTPS on a free loopback port, a
# private DNS zone file mapping that name to 127.0.0.1, and a trap that stops everything and removes
# the temporary directory however the test ends (lib/common.sh's trap). Exit 77 (skip) when Azurite
# is not installed.
#
# AZ_LISTEN (default 127.0.0.1; ::1 for IPv6) is the address Azurite listens on and the zone file
# maps the name to. After azurite_start: AZ_DIR (temp dir), AZ_PORT, AZ_CA (CA PEM), AZ_CERT/AZ_KEY (server), AZ_ZONE
# (zone file), AZ_HOST, AZ_KEY_B64 (the emulator's well-known key), AZ_CONNSTR (Shared Key), AZ_PID.
# azurite_stop / azurite_restart stop the Azurite process and start it again on the same port with
# the same certificate and data directory (an outage; not with --inMemoryPersistence).

. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
AZ_HOST=devstoreaccount1.blob.core.windows.net
AZ_LISTEN=${AZ_LISTEN:-127.0.0.1}
# Tests are hermetic: a proxy in the caller's environment must not redirect curl, init or the SDK.
unset http_proxy HTTP_PROXY https_proxy HTTPS_PROXY all_proxy ALL_PROXY no_proxy NO_PROXY
AZ_KEY_B64='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='

# Remembers a background server for the trap (stopped with SIGTERM).
az_track() { CLEANUP_SERVICES+=("$1"); }

# Waits until an HTTPS server for AZ_HOST answers on 127.0.0.1:$1 (any HTTP status), up to 60 s;
# gives up at once when the server's process ($2, optional) has exited.
az_wait_https() {
  local port=$1 pid=${2:-} addr=$AZ_LISTEN
  [[ $addr == *:* ]] && addr="[$addr]"
  AZ_WAIT_GONE=
  wait_until -i 0.2 60 "" az_https_answers "$port" "$pid" "$addr" && [ -z "$AZ_WAIT_GONE" ]
}
# One try of az_wait_https: true when it answers, or (AZ_WAIT_GONE set) when its process has gone.
az_https_answers() {
  if [ -n "$2" ] && ! kill -0 "$2" 2>/dev/null; then
    AZ_WAIT_GONE=1
    return 0
  fi
  curl -s --noproxy "*" -o /dev/null --cacert "$AZ_CA" --resolve "$AZ_HOST:$1:$3" \
    --max-time 2 "https://$AZ_HOST:$1/"
}

az_make_certs() {
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=rpl test CA" \
    -keyout "$AZ_DIR/ca.key" -out "$AZ_DIR/ca.pem" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null \
    || fail "openssl could not make the test CA"
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$AZ_HOST" -keyout "$AZ_DIR/server.key" \
    -out "$AZ_DIR/server.csr" 2>/dev/null || fail "openssl could not make the server key"
  # The address too, so that the emulator's path-style form (https://127.0.0.1:PORT/ACCOUNT) verifies.
  printf 'subjectAltName=DNS:%s,IP:127.0.0.1,IP:::1\nextendedKeyUsage=serverAuth\n' "$AZ_HOST" > "$AZ_DIR/ext.cnf"
  openssl x509 -req -in "$AZ_DIR/server.csr" -CA "$AZ_DIR/ca.pem" -CAkey "$AZ_DIR/ca.key" \
    -CAcreateserial -days 2 -extfile "$AZ_DIR/ext.cnf" -out "$AZ_DIR/server.pem" 2>/dev/null \
    || fail "openssl could not sign the server certificate"
  AZ_CA=$AZ_DIR/ca.pem AZ_CERT=$AZ_DIR/server.pem AZ_KEY=$AZ_DIR/server.key
}

# azurite_start [extra azurite options...]
azurite_start() {
  local bin=${RPL_SOURCE_DIR:?run under ctest}/tools/azurite/node_modules/.bin/azurite-blob
  if [ ! -x "$bin" ]; then
    echo "SKIP: Azurite is not installed in tools/azurite (run scripts/setup.sh)" >&2
    exit 77
  fi
  AZ_DIR=$(mktemp -d /tmp/rpl-azurite.XXXXXX)
  CLEANUP_PATHS+=("$AZ_DIR")
  az_make_certs
  mkdir -p "$AZ_DIR/data"
  local attempt pid storage=(--location "$AZ_DIR/data")
  # Azurite refuses --location together with --inMemoryPersistence.
  [[ " $* " == *" --inMemoryPersistence "* ]] && storage=()
  AZ_ARGV=("$bin" --disableTelemetry --blobHost "$AZ_LISTEN" --cert "$AZ_CERT" --key "$AZ_KEY" "${storage[@]}"
           --oauth basic --silent "$@")
  for attempt in 1 2 3; do
    AZ_PORT=$(free_port)
    "${AZ_ARGV[@]}" --blobPort "$AZ_PORT" > "$AZ_DIR/azurite.log" 2>&1 &
    pid=$!
    if az_wait_https "$AZ_PORT" "$pid"; then
      az_track "$pid"
      AZ_PID=$pid
      printf '# test private DNS zone: the public name points at the local Azurite\n%s %s\n' "$AZ_LISTEN" "$AZ_HOST" > "$AZ_DIR/zone.hosts"
      AZ_ZONE=$AZ_DIR/zone.hosts
      AZ_CONNSTR="DefaultEndpointsProtocol=https;AccountName=devstoreaccount1;AccountKey=$AZ_KEY_B64;BlobEndpoint=https://$AZ_HOST:$AZ_PORT"
      return 0
    fi
    kill "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  cat "$AZ_DIR/azurite.log" >&2
  fail "Azurite did not start"
}

# Stops the Azurite process (SIGTERM, waits for it to exit); its data directory stays.
azurite_stop() {
  [ -n "${AZ_PID:-}" ] || fail "azurite_stop: Azurite is not running"
  kill "$AZ_PID" 2>/dev/null
  wait "$AZ_PID" 2>/dev/null
  AZ_PID=
}

# Starts Azurite again on the same port, certificate and data directory; waits until it answers.
azurite_restart() {
  local attempt pid
  [ -z "${AZ_PID:-}" ] || fail "azurite_restart: Azurite is still running"
  for attempt in 1 2 3 4 5; do
    "${AZ_ARGV[@]}" --blobPort "$AZ_PORT" >> "$AZ_DIR/azurite.log" 2>&1 &
    pid=$!
    if az_wait_https "$AZ_PORT" "$pid"; then
      az_track "$pid"
      AZ_PID=$pid
      return 0
    fi
    kill "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  tail -20 "$AZ_DIR/azurite.log" >&2
  fail "Azurite did not start again on port $AZ_PORT"
}
