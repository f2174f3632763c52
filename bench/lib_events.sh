# lib_events.sh - sourced by the benchmarks: times cycles from the appliance's events
# (`replication-appliance events --wait`, JSON lines), the machine interface; no log text, no polling.
# Needs $AP (the appliance program).

# events_wait_applied STATE_DIR CYCLE [TIMEOUT_S] [DISK_ID]: waits until the appliance whose state is
# STATE_DIR applied CYCLE (of DISK_ID, or of any disk). Sets, from the events of that cycle:
#   T_STARTED, T_COMMITTED, T_APPLIED   seconds since the epoch, to the millisecond, as the appliance
#                            stamped them (T_STARTED: CYCLE_START sent; empty when its event came before --since 0 could see it)
#   EV_UPLOAD_BYTES, EV_UPLOAD_MS, EV_LIMIT_WAIT_MS   what its upload sent, took and waited for the limits
# Returns 1 (after a line on stderr) when it was not applied in TIMEOUT_S (default 600).
events_wait_applied() {
  local state=$1 want=$2 limit=${3:-600} disk=${4:-} since=0 t0=$SECONDS out r
  T_STARTED= T_COMMITTED= T_APPLIED= EV_UPLOAD_BYTES= EV_UPLOAD_MS= EV_LIMIT_WAIT_MS=
  while [ $((SECONDS - t0)) -lt "$limit" ]; do
    out=$("$AP" events --state "$state" --since "$since" --wait 10) \
      || { echo "events: cannot read the appliance's events in $state" >&2; return 1; }
    [ -n "$out" ] || continue
    r=$(python3 -c '
import json, sys
want, disk = int(sys.argv[1]), sys.argv[2]
last, found = 0, {}
for line in sys.stdin:
    e = json.loads(line)
    last = e["seq"]
    if e["cycle"] != want or (disk and e["disk_id"] != disk) or e["type"] == "point":
        continue
    t = "%.3f" % (e["unix_ms"] / 1000)
    if e["type"] == "started":
        found["s"] = t
    if e["type"] == "committed":
        found["c"] = t
    if e["type"] == "applied" or e.get("direct"):
        found["a"] = t
        found["u"] = "%d %d %d" % (e["upload_bytes"], e["upload_ms"], e["limit_wait_ms"])
print(last, found.get("s", "-"), found.get("c", "-"), found.get("a", "-"), found.get("u", "- - -"))' "$want" "$disk" <<<"$out") || return 1
    local s c a ub um uw
    read -r since s c a ub um uw <<<"$r"
    [ "$s" != - ] && T_STARTED=$s
    [ "$c" != - ] && T_COMMITTED=$c
    if [ "$a" != - ]; then
      T_APPLIED=$a EV_UPLOAD_BYTES=$ub EV_UPLOAD_MS=$um EV_LIMIT_WAIT_MS=$uw
      return 0
    fi
  done
  echo "events: cycle $want was not applied in $limit s" >&2
  return 1
}
