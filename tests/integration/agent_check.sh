#!/usr/bin/env bash
# agent_check.sh - Description: `mobility-agent check --json` on this machine prints one JSON document
# with every readiness check (name, PASS/WARN/FAIL, detail, a remedy for each that is not PASS) and
# exits non-zero exactly when a check failed, with one line on stderr naming the failed checks; the
# table and --root on a minimal tree agree with it; a missing state directory is not created.
set -u
source "$(dirname "$0")/lib/common.sh"
b=${RPL_BUILD_DIR:?run under ctest}
agent=$b/agent/mobility-agent
work=$(mktemp -d /tmp/rpl-agent-check.XXXXXX)
CLEANUP_PATHS+=("$work")

"$agent" check --json --state "$work/state" >"$work/out.json" 2>"$work/err"; rc=$?
[ ! -e "$work/state" ] || fail "check created the state directory"
python3 - "$work/out.json" "$rc" "$work/err" <<'PY' || fail "the check --json document is wrong (above)"
import json, sys
doc = json.load(open(sys.argv[1]))
rc, err = int(sys.argv[2]), open(sys.argv[3]).read()
names = [c["name"] for c in doc["checks"]]
want = {"hv_vmbus", "hv_storvsc", "hv_netvsc", "root_device", "fstab_names", "fstab_nofail", "boot_mode",
        "boot_disk_size", "protected_disk_size", "guest_agent", "dhcp", "serial_console"}
assert want <= set(names), f"missing checks: {want - set(names)}"
assert len(names) == len(set(names)), names
for c in doc["checks"]:
    assert c["result"] in ("PASS", "WARN", "FAIL"), c
    assert c["detail"], c
    assert bool(c["remedy"]) == (c["result"] != "PASS"), c
assert doc["generation"] in (None, 1, 2)
assert doc["firmware"] in ("bios", "uefi")
assert doc["partition_table"] in ("gpt", "mbr", "none", "unknown")
assert isinstance(doc["boot_disk"]["size"], int)
failed = [c["name"] for c in doc["checks"] if c["result"] == "FAIL"]
assert doc["ok"] == (not failed)
assert (rc != 0) == bool(failed), (rc, failed)
if failed:
    assert err.count("\n") == 1 and all(n in err for n in failed), err
else:
    assert err == "", err
print("this machine:", ", ".join(f'{c["name"]}={c["result"]}' for c in doc["checks"]))
PY

# The table says the same, one line per check (plus remedies and the generation).
"$agent" check --state "$work/state" >"$work/table" 2>/dev/null
for n in $(json_field "$work/out.json" checks | python3 -c 'import json,sys; print(" ".join(c["name"] for c in json.load(sys.stdin)))'); do
  grep -qE "^(PASS|WARN|FAIL)  $n " "$work/table" || fail "the table has no line for $n"
done

# A tree with nothing in it fails the driver checks with their remedy, and says so on stderr.
mkdir -p "$work/empty/etc"
"$agent" check --root "$work/empty" --state "$work/state" --json >"$work/empty.json" 2>"$work/err"
[ $? -eq 1 ] || fail "check on an empty tree did not fail"
[ "$(json_field "$work/empty.json" ok)" = false ] ||
  fail "ok is not false on an empty tree"
grep -q "hv_storvsc" "$work/err" || fail "stderr does not name hv_storvsc: $(cat "$work/err")"
"$agent" check --bogus >/dev/null 2>&1 && fail "check accepted an unknown option"
echo "agent_check: ok"
