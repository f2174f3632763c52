#!/usr/bin/env bash
# systemd_units.sh - Description: the systemd units of both daemons pass systemd-analyze verify
# (with ExecStart pointed at the built programs), and both daemons speak Type=notify: they send
# READY=1 on the notify socket once they serve.
set -u
. "$(dirname "$0")/lib/common.sh"
command -v systemd-analyze >/dev/null || { echo "SKIP: no systemd-analyze"; exit 77; }
b=${RPL_BUILD_DIR:?run under ctest}
src=${RPL_SOURCE_DIR:?}
t=$(mktemp -d)
CLEANUP_PATHS+=("$t")
for u in mobility-agent replication-appliance; do
  sed "s#/usr/bin/mobility-agent#$b/agent/mobility-agent#; s#/usr/bin/replication-appliance#$b/appliance/replication-appliance#" \
    "$src/packaging/systemd/$u.service" > "$t/$u.service"
  grep -q "^Type=notify" "$t/$u.service" || fail "$u.service is not Type=notify"
  out=$(systemd-analyze verify "$t/$u.service" 2>&1) || fail "systemd-analyze verify $u.service: $out"
  [ -z "$out" ] || fail "systemd-analyze verify $u.service warns: $out"
done
# Stopping the agent's unit must not SIGKILL the freeze watchdog (it thaws if the agent dies).
grep -qx "KillMode=process" "$src/packaging/systemd/mobility-agent.service" || fail "mobility-agent.service: KillMode is not process"
# READY=1 from the appliance (the agent's path is the same code, proto/sdnotify.c), with the
# configuration manager on a free port: its default one is shared by everything on this machine.
port=$(free_port)
until web_port=$(free_port) && [ "$web_port" != "$port" ]; do :; done
python3 - "$b/appliance/replication-appliance" "$t" "$port" "$web_port" <<'PY' || fail "the appliance did not send READY=1"
import os, socket, subprocess, sys, time
prog, t, port, web_port = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
subprocess.run([prog, "init", "--state", t + "/app", "--storage", "file:" + t + "/rep"], check=True,
               stdout=subprocess.DEVNULL)
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(t + "/notify")
s.settimeout(30)
env = dict(os.environ, NOTIFY_SOCKET=t + "/notify")
p = subprocess.Popen([prog, "run", "--state", t + "/app", "--listen", "127.0.0.1:%d" % port,
                      "--web", "127.0.0.1:%d" % web_port], env=env, stderr=subprocess.DEVNULL)
try:
    msg = s.recv(4096).decode()
    assert "READY=1" in msg, msg
finally:
    p.terminate()
    p.wait(30)
PY
echo "systemd_units: ok"
