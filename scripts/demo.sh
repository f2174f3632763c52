#!/usr/bin/env bash
# demo.sh - the README's demo command: set up, build, and show what the system does today.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/scripts/setup.sh"
echo "== build"
bash "$root/scripts/build.sh" release >/dev/null
b=$root/build
agent=$b/agent/mobility-agent
appliance=$b/appliance/replication-appliance

echo "== programs"
"$agent" --version
"$appliance" --version

echo "== wire protocol: encode + decode of 1 MiB EXTENT frames against memcpy"
"$b/bench/bench_proto" 500

echo
echo "Not there yet: change tracking, the page-blob client, the agent/appliance data path,"
echo "recovery points and restore (see the open issues). This demo grows as they land."
