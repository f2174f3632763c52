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
# register takes its key from --key, --key-file FILE or --key-file - (standard input), one of them.
ag=$b/agent/mobility-agent
t=$(mktemp -d); trap 'rm -rf "$t"' EXIT
err=$("$ag" register --appliance 127.0.0.1:9 --key rk1-x --key-file /dev/null --state "$t" 2>&1) \
  && fail "register took both --key and --key-file"
[[ $err == *"(--key KEY | --key-file FILE|-)"* ]] || fail "register with two keys: unclear error: $err"
err=$("$ag" register --appliance 127.0.0.1:9 --key-file "$t/none" --state "$t" 2>&1) && fail "register read a missing key file"
[[ $err == *"$t/none"*"No such file"* ]] || fail "register with a missing key file: unclear error: $err"
err=$("$ag" register --appliance 127.0.0.1:9 --key-file - --state "$t" 2>&1 < /dev/null) && fail "register took an empty key"
[[ $err == *"no registration key on its first line"* ]] || fail "register with an empty stdin: unclear error: $err"
err=$(echo rk1-garbage | "$ag" register --appliance 127.0.0.1:9 --key-file - --state "$t" 2>&1) \
  && fail "register took a malformed key from stdin"
[[ $err == *"registration key"* ]] || fail "register with a malformed key from stdin: unclear error: $err"
echo "cli_basics: ok"
