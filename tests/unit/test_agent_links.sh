#!/usr/bin/env bash
# test_agent_links.sh - Description: the built mobility-agent needs neither libcurl nor libexpat (the
# page-blob client lives in appliance/azure/, linked only by the appliance), while the appliance,
# which does use them, shows both: the check sees what it looks for. A static agent (no NEEDED, no
# loader: cmake/StaticAgent.cmake) is judged by its symbols: no curl_ or XML_ functions, but zstd's
# and liburing's.
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
static=0
if [ -z "$a" ] && ! readelf -l "$agent" | grep -q 'program interpreter'; then
  static=1
  command -v nm >/dev/null || { echo "SKIP: no nm"; exit 77; }
  # The functions linked in; the test links the build tree's agent, which keeps its symbol table.
  syms=$(nm --defined-only "$agent") || { echo "FAIL: nm $agent"; exit 1; }
  [ -n "$syms" ] || { echo "FAIL: $agent has no symbol table to judge"; exit 1; }
  echo "mobility-agent: statically linked, $(wc -l <<<"$syms") symbols"
fi
for lib in libcurl libexpat; do
  if [ $static = 1 ]; then
    fn=$([ $lib = libcurl ] && echo curl_easy_init || echo XML_ParserCreate)
    if grep -q " $fn\$" <<<"$syms"; then echo "FAIL: mobility-agent carries $lib ($fn)"; fail=1; fi
  elif grep -q "^$lib\." <<<"$a"; then echo "FAIL: mobility-agent needs $lib"; fail=1; fi
  if ! grep -q "^$lib\." <<<"$p"; then echo "FAIL: replication-appliance does not need $lib"; fail=1; fi
done
# The agent's own libraries are there: the list is the agent's, not an empty read.
for lib in libzstd liburing; do
  if [ $static = 1 ]; then
    fn=$([ $lib = libzstd ] && echo ZSTD_compressCCtx || echo io_uring_queue_init)
    if ! grep -q " $fn\$" <<<"$syms"; then echo "FAIL: mobility-agent does not carry $lib ($fn)"; fail=1; fi
  elif ! grep -q "^$lib\." <<<"$a"; then echo "FAIL: mobility-agent does not need $lib"; fail=1; fi
done
[ $fail -eq 0 ] && echo "PASS"
exit $fail
