#!/usr/bin/env bash
# metrics.sh - Description: a real appliance and agent on a loop disk: /metrics on the configuration
# manager refuses scrapes without its bearer token, is parsed by prometheus_client's text parser and
# agrees with `status --json` (disks, agents, states, sizes, counters that only grow, histograms); the
# health roll-up turns to warning when the agent goes away and to critical once its heartbeat is stale.
set -u
. "$(dirname "$0")/lib/replication.sh"
# Debian's python3-prometheus-client (scripts/setup.sh) is for the system's python, not another first in PATH.
PY=/usr/bin/python3
$PY -c 'import prometheus_client.parser' 2>/dev/null || skip "python3-prometheus-client is not installed (scripts/setup.sh)"
rpl_setup 480

say "appliance with its configuration manager on a free port"
rpl_appliance_init
WEB_PORT=$(free_port)
rpl_appliance_start --rpo 1 --web "127.0.0.1:$WEB_PORT" --alerts agent-away=60s # the shortest agent-away: a shorter wait below
U="https://127.0.0.1:$WEB_PORT"
web_up() { curl -sk -o /dev/null --max-time 2 "$U/"; }
wait_until 10 "the configuration manager did not come up" web_up
TOKEN_FILE=$RT/app/metrics-token
[ -f "$TOKEN_FILE" ] || fail "no metrics token was made in the state directory"
[ "$(stat -c %a "$TOKEN_FILE")" = 600 ] || fail "the metrics token is not 0600: $(stat -c %a "$TOKEN_FILE")"
TOKEN=$(head -n 1 "$TOKEN_FILE")
[ ${#TOKEN} -ge 32 ] || fail "the metrics token is short: ${#TOKEN} characters"

say "scrapes without the token are refused"
code() { curl -sk -o "$RT/refused" -w '%{http_code}' "$@"; }
c=$(code "$U/metrics"); [ "$c" = 401 ] || fail "a scrape without a token got $c"
c=$(code -H "Authorization: Bearer ${TOKEN%?}x" "$U/metrics"); [ "$c" = 401 ] || fail "a wrong token got $c"
c=$(code -H "Authorization: Bearer $TOKEN$TOKEN" "$U/metrics"); [ "$c" = 401 ] || fail "a longer token got $c"
c=$(code -u "admin:$TOKEN" "$U/metrics"); [ "$c" = 401 ] || fail "basic authentication got $c"
c=$(code -H "Authorization: Bearer " "$U/metrics"); [ "$c" = 401 ] || fail "an empty token got $c"
grep -q "metrics-token" "$RT/refused" || fail "the refusal does not say what is wanted: $(cat "$RT/refused")"
hdr=$(curl -sk -D - -o /dev/null "$U/metrics" | tr -d '\r')
[[ $hdr == *"WWW-Authenticate: Bearer"* ]] || fail "the 401 has no WWW-Authenticate: Bearer header"
c=$(code -X POST -H "Authorization: Bearer $TOKEN" "$U/metrics"); [ "$c" = 405 ] || fail "POST /metrics got $c"
c=$(code -H "Authorization: Bearer $TOKEN" "$U/metrics"); [ "$c" = 200 ] || fail "a scrape with the token got $c"
ctype=$(curl -sk -o /dev/null -w '%{content_type}' -H "Authorization: Bearer $TOKEN" "$U/metrics")
[[ $ctype == "text/plain; version=0.0.4"* ]] || fail "the exposition's content type is '$ctype'"

say "agent protecting a loop disk, data written through several cycles"
rpl_agent_register
rpl_loop dev 64M half
rpl_agent_start
"$AG" protect "$dev" --state "$RT/agent" > "$RT/protect.out" || fail "protect failed: $(cat "$RT/protect.out")"
rpl_wait_cycle "$dev" 2
DISK=$(rpl_disk_id "$dev")
dd if=/dev/urandom of="$dev" bs=1M count=4 seek=8 oflag=direct status=none || fail "write to $dev failed"
rpl_wait_cycle "$dev" $(( $(rpl_agent_cycle "$dev") + 2 ))

scrape() { curl -sfk -H "Authorization: Bearer $TOKEN" "$U/metrics" > "$1" || fail "scrape failed"; }
# check.py MODE METRICS STATUS [PREVIOUS_METRICS]: parses with prometheus_client, checks, prints what it checked
cat > "$RT/check.py" <<'PYEOF'
import json, sys
from prometheus_client.parser import text_string_to_metric_families

mode, mpath, spath = sys.argv[1:4]
prev_path = sys.argv[4] if len(sys.argv) > 4 else None

def parse(path):
    text = open(path).read()
    fams = {}
    for f in text_string_to_metric_families(text):
        assert f.name not in fams, "family %s twice" % f.name
        fams[f.name] = f
    return text, fams

def samples(fams, fam, sample=None):
    out = {}
    for s in fams[fam].samples:
        if sample is None or s.name == sample:
            out[tuple(sorted(s.labels.items()))] = s.value
    return out

def one(fams, fam, sample=None, **labels):
    want = tuple(sorted(labels.items()))
    vals = samples(fams, fam, sample)
    assert want in vals, "%s%s missing (has %s)" % (sample or fam, labels, list(vals)[:4])
    return vals[want]

text, fams = parse(mpath)
st = json.load(open(spath))
checked = []

# Conventions: every family typed and documented; counters end in _total, units in the names.
for name, f in fams.items():
    assert f.type in ("gauge", "counter", "histogram"), "%s is %s" % (name, f.type)
    assert f.documentation, "%s has no HELP" % name
    assert name.startswith("rpl_"), name
    if f.type == "counter":
        for s in f.samples:
            assert s.name.endswith("_total"), "counter sample %s does not end in _total" % s.name
    for s in f.samples:
        for k in s.labels:
            assert k in ("disk_id", "agent_id", "state", "kind", "reason", "class", "le", "version",
                         "protocol_version"), "label %s on %s" % (k, s.name)
for line in text.splitlines():
    if line.startswith("# TYPE "):
        n = line.split()[2]
        assert "# HELP %s " % n in text, "no HELP for %s" % n
checked.append("%d families typed, documented, named by convention" % len(fams))

served = [d for d in st["disks"] if d.get("served")]
assert one(fams, "rpl_appliance_disks") == len(served), "disks: %s vs %d" % (one(fams, "rpl_appliance_disks"), len(served))
assert one(fams, "rpl_appliance_agents") == len(st["agents"])
assert one(fams, "rpl_appliance_rpo_target_seconds") == st["rpo_target_seconds"]
assert one(fams, "rpl_appliance_info", version=st["version"]) == 1
assert one(fams, "rpl_appliance_upload_state", state=st["uploads"]["state"]) == 1
assert one(fams, "rpl_appliance_sessions") <= st["connections"]["limit"] == one(fams, "rpl_appliance_sessions_limit")
checked.append("appliance: %d disk(s), %d agent(s), version, RPO target, upload state" % (len(served), len(st["agents"])))

for a in st["agents"]:
    aid = a["agent_id"]
    assert one(fams, "rpl_agent_revoked", agent_id=aid) == (1 if a["revoked"] else 0)
    info = [k for k in samples(fams, "rpl_agent_info") if ("agent_id", aid) in k]
    assert len(info) == 1, info
    pv = dict(info[0])["protocol_version"]
    assert int(pv) >= 1, "agent protocol version %s" % pv
    assert one(fams, "rpl_agent_heartbeat_age_seconds", agent_id=aid) >= 0
    checked.append("agent %s: protocol version %s" % (aid[:8], pv))

levels = {"healthy": 0, "warning": 1, "critical": 2}
for d in served:
    did = d["disk_id"]
    assert one(fams, "rpl_disk_info", disk_id=did, agent_id=d["agent_id"]) == 1
    for s in ("initial-sync", "protected", "resync-required", "error"):
        assert one(fams, "rpl_disk_state", disk_id=did, state=s) == (1 if s == d["state"] else 0), (s, d["state"])
    assert one(fams, "rpl_disk_size_bytes", disk_id=did) == d["size"]
    assert one(fams, "rpl_disk_cache_limit_bytes", disk_id=did) == d["cache_limit_bytes"]
    # Scraped before status: what only grows is not ahead of status.
    assert one(fams, "rpl_disk_committed_cycle", disk_id=did) <= d["last_committed_cycle"]
    assert one(fams, "rpl_disk_applied_cycle", disk_id=did) <= d["last_applied_cycle"]
    assert one(fams, "rpl_disk_connected", disk_id=did) == (1 if d["connected"] else 0)
    h = one(fams, "rpl_disk_health", disk_id=did)
    if mode == "healthy":
        assert d["health"]["state"] == "healthy" and h == 0, (d["health"], h)
    cycles = one(fams, "rpl_disk_cycles", "rpl_disk_cycles_total", disk_id=did)
    assert cycles >= 2, cycles
    # The cycle-duration histogram: cumulative buckets ending in +Inf, which is its count.
    buckets = sorted((float(dict(k)["le"]), v) for k, v in
                     samples(fams, "rpl_disk_cycle_duration_seconds", "rpl_disk_cycle_duration_seconds_bucket").items()
                     if ("disk_id", did) in k)
    assert buckets[-1][0] == float("inf") and len(buckets) >= 5, buckets
    assert all(b[1] <= c[1] for b, c in zip(buckets, buckets[1:])), "buckets not cumulative: %s" % buckets
    assert buckets[-1][1] == one(fams, "rpl_disk_cycle_duration_seconds", "rpl_disk_cycle_duration_seconds_count", disk_id=did) == cycles
    assert one(fams, "rpl_disk_cycle_duration_seconds", "rpl_disk_cycle_duration_seconds_sum", disk_id=did) >= 0
    fz = one(fams, "rpl_disk_freeze_duration_seconds", "rpl_disk_freeze_duration_seconds_count", disk_id=did)
    assert fz >= 0
    sent = one(fams, "rpl_disk_sent_bytes", "rpl_disk_sent_bytes_total", disk_id=did)
    read = one(fams, "rpl_disk_read_bytes", "rpl_disk_read_bytes_total", disk_id=did)
    changed = one(fams, "rpl_disk_changed_bytes", "rpl_disk_changed_bytes_total", disk_id=did)
    assert sent > 0 and read >= changed > 0, (sent, read, changed)
    # The initial sync of this run was a resync of the appliance's starting.
    assert one(fams, "rpl_disk_resyncs", "rpl_disk_resyncs_total", disk_id=did, reason="initial_sync") >= 1
    assert one(fams, "rpl_disk_backlog_cycles", disk_id=did) >= 0
    checked.append("disk %s: %s, %d cycles, %d bytes sent, %d read, %d changed" % (did[:8], d["state"], cycles, sent, read, changed))
    if prev_path:
        _, pf = parse(prev_path)
        for fam, sample in (("rpl_disk_sent_bytes", "rpl_disk_sent_bytes_total"), ("rpl_disk_read_bytes", "rpl_disk_read_bytes_total"),
                            ("rpl_disk_cycles", "rpl_disk_cycles_total"), ("rpl_disk_changed_bytes", "rpl_disk_changed_bytes_total")):
            before, after = one(pf, fam, sample, disk_id=did), one(fams, fam, sample, disk_id=did)
            assert after >= before, "%s went back: %s -> %s" % (sample, before, after)
        assert one(fams, "rpl_disk_sent_bytes", "rpl_disk_sent_bytes_total", disk_id=did) > one(pf, "rpl_disk_sent_bytes", "rpl_disk_sent_bytes_total", disk_id=did), "no bytes sent after a write"
        checked.append("disk %s: counters grew since the previous scrape" % did[:8])
assert one(fams, "rpl_appliance_health") == levels[st["health"]["state"]] or mode != "healthy"
print("\n".join("  " + c for c in checked))
PYEOF

say "the scrape agrees with status --json"
scrape "$RT/m1"
"$AP" status --state "$RT/app" --json > "$RT/s1" || fail "status --json failed"
$PY "$RT/check.py" healthy "$RT/m1" "$RT/s1" || { head -c 3000 "$RT/m1" >&2; fail "the first scrape does not agree with status"; }
# Healthy; or a warning only because this machine fails a boot-readiness check its agent reports.
$PY - "$RT/s1" <<'PYEOF' || fail "the appliance is not healthy: $(json_field "$RT/s1" health)"
import json, sys
st = json.load(open(sys.argv[1]))
h = st["health"]
if h["state"] != "healthy":
    assert h["state"] == "warning" and [r["code"] for r in h["reasons"]] == ["agents"], h
    for a in st["agents"]:
        assert all(r["code"] == "readiness_fail" for r in a["health"]["reasons"]), a["health"]
PYEOF

say "more data: the counters grow"
dd if=/dev/urandom of="$dev" bs=1M count=4 seek=20 oflag=direct status=none || fail "write to $dev failed"
rpl_wait_cycle "$dev" $(( $(rpl_agent_cycle "$dev") + 2 ))
scrape "$RT/m2"
"$AP" status --state "$RT/app" --json > "$RT/s2" || fail "status --json failed"
$PY "$RT/check.py" healthy "$RT/m2" "$RT/s2" "$RT/m1" || fail "the second scrape does not agree"

say "the agent stops: its disk's health turns to warning, with the reason and what to do"
kill -TERM "$RPL_AG_PID"
wait "$RPL_AG_PID" 2>/dev/null
disk_health() { "$AP" status --state "$RT/app" --json | json_field - "disks.[disk_id=$DISK].health.state"; }
disk_is() { [ "$(disk_health)" = "$1" ]; }
wait_until 30 "the disk's health did not turn to warning" disk_is warning
"$AP" status --state "$RT/app" --json > "$RT/s3"
$PY - "$RT/s3" "$DISK" <<'PYEOF' || fail "the warning's reasons are not as expected"
import json, sys
st = json.load(open(sys.argv[1])); did = sys.argv[2]
d = next(x for x in st["disks"] if x["disk_id"] == did)
codes = {r["code"]: r for r in d["health"]["reasons"]}
assert "agent_disconnected" in codes, codes
assert codes["agent_disconnected"]["todo"] and codes["agent_disconnected"]["what"], codes
assert st["health"]["state"] in ("warning", "critical"), st["health"]
assert any(r["code"] == "disks" for r in st["health"]["reasons"]), st["health"]
PYEOF
"$AP" status --state "$RT/app" > "$RT/s3.txt"
grep -q "^\[warning\] disk $DISK" "$RT/s3.txt" || fail "the text status's disk line does not start with its health: $(cat "$RT/s3.txt")"
grep -q "warning: its agent is not connected.*; do: start 'mobility-agent run'" "$RT/s3.txt" || fail "the text status does not give the reason and what to do"
scrape "$RT/m3"
$PY - "$RT/m3" "$DISK" <<'PYEOF' || fail "/metrics does not show the warning"
import sys
from prometheus_client.parser import text_string_to_metric_families
f = {m.name: m for m in text_string_to_metric_families(open(sys.argv[1]).read())}
v = {s.labels.get("disk_id"): s.value for s in f["rpl_disk_health"].samples}
assert v[sys.argv[2]] >= 1, v
c = {s.labels.get("disk_id"): s.value for s in f["rpl_disk_connected"].samples}
assert c[sys.argv[2]] == 0, c
PYEOF

say "past the heartbeat limit (agent-away=60s) the agent and its disk are critical"
wait_until -i 2 200 "the disk's health did not turn to critical" disk_is critical
"$AP" status --state "$RT/app" --json > "$RT/s4"
$PY - "$RT/s4" "$DISK" <<'PYEOF' || fail "the critical health is not as expected"
import json, sys
st = json.load(open(sys.argv[1])); did = sys.argv[2]
d = next(x for x in st["disks"] if x["disk_id"] == did)
assert any(r["code"] == "agent_not_seen" and r["level"] == "critical" for r in d["health"]["reasons"]), d["health"]
assert st["agents"][0]["health"]["state"] == "critical", st["agents"][0]["health"]
assert st["health"]["state"] == "critical", st["health"]
PYEOF
scrape "$RT/m4"
$PY - "$RT/m4" "$DISK" <<'PYEOF' || fail "/metrics does not show the critical health"
import sys
from prometheus_client.parser import text_string_to_metric_families
f = {m.name: m for m in text_string_to_metric_families(open(sys.argv[1]).read())}
assert {s.labels.get("disk_id"): s.value for s in f["rpl_disk_health"].samples}[sys.argv[2]] == 2
assert all(s.value == 2 for s in f["rpl_agent_health"].samples)
assert f["rpl_appliance_health"].samples[0].value == 2
assert all(s.value > 60 for s in f["rpl_agent_heartbeat_age_seconds"].samples)
PYEOF
echo "metrics: ok"
