#!/usr/bin/env bash
# test_agent_links.sh - Description: the built mobility-agent needs neither libcurl nor libexpat (the
# page-blob client lives in appliance/azure/, linked only by the appliance), while the appliance,
# which does use them, shows both: the check sees what it looks for.
set -u
agent=${1:?usage: test_agent_links.sh AGENT APPLIANCE}
appliance=${2:?usage: test_agent_links.sh AGENT APPLIANCE}
command -v readelf >/dev/null || { echo "SKIP: no readelf"; exit 77; }

needed() { readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'; }
fail=0
a=$(needed "$agent") || { echo "FAIL: readelf $agent"; exit 1; }
p=$(needed "$appliance") || { echo "FAIL: readelf $appliance"; exit 1; }
echo "mobility-agent NEEDED: $(echo $a)"
echo "replication-appliance NEEDED: $(echo $p)"
for lib in libcurl libexpat; do
  if grep -q "^$lib\." <<<"$a"; then echo "FAIL: mobility-agent needs $lib"; fail=1; fi
  if ! grep -q "^$lib\." <<<"$p"; then echo "FAIL: replication-appliance does not need $lib"; fail=1; fi
done
# The agent's own libraries are there: the list is the agent's, not an empty read.
for lib in libzstd liburing; do
  if ! grep -q "^$lib\." <<<"$a"; then echo "FAIL: mobility-agent does not need $lib"; fail=1; fi
done
[ $fail -eq 0 ] && echo "PASS"
exit $fail
