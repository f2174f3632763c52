# azurite.sh - sourced by integration tests: a test CA and server certificate for the production-style
# name devstoreaccount1.blob.core.windows.net, Azurite 3.35.0 over HTTPS on a free loopback port, a
# private DNS zone file mapping that name to 127.0.0.1, and a trap that stops everything and removes
# the temporary directory however the test ends. Exit 77 (skip) when Azurite is not installed.
#
# After azurite_start: AZ_DIR (temp dir), AZ_PORT, AZ_CA (CA PEM), AZ_CERT/AZ_KEY (server), AZ_ZONE
# (zone file), AZ_HOST, AZ_KEY_B64 (the emulator's well-known key), AZ_CONNSTR (Shared Key).

AZ_HOST=devstoreaccount1.blob.core.windows.net
AZ_KEY_B64='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='
AZ_PIDS=()

az_fail() { echo "FAIL: $*" >&2; exit 1; }

az_cleanup() {
  local pid
  for pid in "${AZ_PIDS[@]}"; do
    kill "$pid" 2>/dev/null
  done
  for pid in "${AZ_PIDS[@]}"; do
    wait "$pid" 2>/dev/null
  done
  [ -n "${AZ_DIR:-}" ] && [ -d "$AZ_DIR" ] && rm -rf "$AZ_DIR"
}

# A TCP port nobody listens on now (the kernel's choice); callers retry if they lose a race for it.
az_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Remembers a background process for the trap.
az_track() { AZ_PIDS+=("$1"); }

# Waits until an HTTPS server for AZ_HOST answers on 127.0.0.1:$1 (any HTTP status), up to 60 s.
az_wait_https() {
  local port=$1 i
  for i in $(seq 1 300); do
    if curl -s -o /dev/null --cacert "$AZ_CA" --resolve "$AZ_HOST:$port:127.0.0.1" \
         --max-time 2 "https://$AZ_HOST:$port/"; then
      return 0
    fi
    sleep 0.2
  done
  return 1
}

az_make_certs() {
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=rpl test CA" \
    -keyout "$AZ_DIR/ca.key" -out "$AZ_DIR/ca.pem" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null \
    || az_fail "openssl could not make the test CA"
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$AZ_HOST" -keyout "$AZ_DIR/server.key" \
    -out "$AZ_DIR/server.csr" 2>/dev/null || az_fail "openssl could not make the server key"
  printf 'subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth\n' "$AZ_HOST" > "$AZ_DIR/ext.cnf"
  openssl x509 -req -in "$AZ_DIR/server.csr" -CA "$AZ_DIR/ca.pem" -CAkey "$AZ_DIR/ca.key" \
    -CAcreateserial -days 2 -extfile "$AZ_DIR/ext.cnf" -out "$AZ_DIR/server.pem" 2>/dev/null \
    || az_fail "openssl could not sign the server certificate"
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
  trap az_cleanup EXIT
  az_make_certs
  mkdir -p "$AZ_DIR/data"
  local attempt pid
  for attempt in 1 2 3; do
    AZ_PORT=$(az_free_port)
    "$bin" --disableTelemetry --blobHost 127.0.0.1 --blobPort "$AZ_PORT" --cert "$AZ_CERT" --key "$AZ_KEY" \
      --location "$AZ_DIR/data" --oauth basic --silent "$@" > "$AZ_DIR/azurite.log" 2>&1 &
    pid=$!
    if az_wait_https "$AZ_PORT"; then
      az_track "$pid"
      printf '# test private DNS zone: the public name points at the local Azurite\n127.0.0.1 %s\n' "$AZ_HOST" > "$AZ_DIR/zone.hosts"
      AZ_ZONE=$AZ_DIR/zone.hosts
      AZ_CONNSTR="DefaultEndpointsProtocol=https;AccountName=devstoreaccount1;AccountKey=$AZ_KEY_B64;BlobEndpoint=https://$AZ_HOST:$AZ_PORT"
      return 0
    fi
    kill "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  cat "$AZ_DIR/azurite.log" >&2
  az_fail "Azurite did not start"
}
