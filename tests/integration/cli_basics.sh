#!/usr/bin/env bash
# cli_basics.sh - Description: both programs report their version, list commands, and reject
# unknown commands with a one-line reason and a non-zero status.
set -u
b=${RPL_BUILD_DIR:?run under ctest}
fail() { echo "FAIL: $*" >&2; exit 1; }
for prog in "$b/agent/mobility-agent" "$b/appliance/replication-appliance"; do
  name=$(basename "$prog")
  out=$("$prog" --version) || fail "$name --version exited $?"
  [[ $out =~ ^$name\ [0-9]+\.[0-9]+\.[0-9]+$ ]] || fail "$name --version printed '$out'"
  "$prog" --help | grep -q "^usage: $name" || fail "$name --help has no usage line"
  err=$("$prog" no-such-command 2>&1 >/dev/null); rc=$?
  [ $rc -ne 0 ] || fail "$name accepted an unknown command"
  [ "$(printf '%s\n' "$err" | wc -l)" -eq 1 ] || fail "$name: expected one line on stderr, got: $err"
  [[ $err == *"unknown command 'no-such-command'"* ]] || fail "$name: unclear error: $err"
  "$prog" >/dev/null 2>&1 && fail "$name with no command exited 0"
done
echo "cli_basics: ok"
