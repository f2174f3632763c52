#!/bin/busybox sh
# bench_reboot_guest.sh - the /init of bench_reboot.sh's qemu guest (the structure of
# tests/integration/cbt_reboot_guest.sh), with the same two disks each boot (vda: the protected
# disk, raw data, no filesystem; vdb: the state disk, both daemons' state and the file replica).
# bench_phase=setup: replicates vda (initial sync), stops the daemons, writes bench_writes x 64 KiB
# spread over vda, shuts down cleanly (filesystems read-only, then `cbt save`).
# bench_phase=resume: `cbt resume` before anything writes, the daemons, until the first committed cycle.
# bench_phase=today: the daemons without `cbt resume` (the boot before the save existed: a resync).
# Lines for the host: "BENCH-T NAME UPTIME WALL_MS" (/proc/uptime, the wall clock), "BENCH-JSON NAME
# DOCUMENT" (a status --json), "BENCH-EV EVENT" (`replication-appliance events`), "BENCH-PHASE-x: PASS|FAIL".
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev /tmp /run /state
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t bpf bpf /sys/fs/bpf
ip link set lo up
hostname reboot-bench
while read -r m; do insmod "/$m.ko" 2>/dev/null; done </modules.load
AG=/agent/mobility-agent
AP=/agent/replication-appliance
arg() { sed -n "s/.*$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
phase=$(arg bench_phase)
size_mib=$(arg bench_size_mib)
writes=$(arg bench_writes)
limit=$(arg bench_wait)
# Both daemons' log lines carry the wall clock (ms): with BENCH_KEEP_LOGS they show where a boot's time went.
export RPL_LOG_TIME=1
lvl=$(arg bench_log)
[ -n "$lvl" ] && export RPL_LOG_LEVEL=$lvl
echo "BENCH phase $phase, kernel $(uname -r), vda $size_mib MiB"
ok=1
check() { # check NAME STATUS
  if [ "$2" -eq 0 ]; then echo "CHECK $1 ok"; else echo "CHECK $1 FAIL"; ok=0; fi
}
settle() { # settle SECONDS COMMAND...: until it succeeds (TCG is slow)
  n=$(($1 * 10)); shift
  while [ $n -gt 0 ]; do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; n=$((n - 1)); done
  return 1
}
# The wall clock in ms (adjtimex's tv_usec holds nanoseconds when the status has STA_NANO, 8192).
wall_ms() {
  adjtimex | awk '/status:/ { s = $2 } /tv_sec/ { t = $2 } /tv_usec/ { u = $2 }
    END { printf "%.0f", t * 1000 + (int(s / 8192) % 2 ? u / 1000000 : u / 1000) }'
}
# stamp NAME: the uptime and the wall clock (what maps the appliance's events onto the uptime).
stamp() { echo "BENCH-T $1 $(cut -d' ' -f1 /proc/uptime) $(wall_ms)"; }
show() { # show NAME COMMAND...: its JSON on one line for the host
  name=$1; shift
  echo "BENCH-JSON $name $("$@" 2>/dev/null | tr -d '\n')"
}
finish() {
  [ $ok -eq 1 ] || for f in /tmp/agent.log /tmp/appliance.log /tmp/*.out; do [ -s $f ] && { echo "--- $f"; tail -20 $f; }; done
  for f in /tmp/agent.log /tmp/appliance.log; do sed "s|^|LOG $f |" $f; done
  if [ $ok -eq 1 ]; then echo "BENCH-PHASE-$phase: PASS"; else echo "BENCH-PHASE-$phase: FAIL"; fi
  poweroff -f
}
for i in 1 2 3 4 5 6 7 8 9 10; do [ -b /dev/vdb ] && break; sleep 0.5; done
[ "$(cat /sys/block/vda/size)" = $((size_mib * 2048)) ] && [ -b /dev/vdb ]
check disks-present $?
[ $ok -eq 1 ] || finish
stamp init

# The appliance first, serving before the agent starts, as one on its own machine (not rebooted)
# is. --rpo 1: its monotonic clock starts at this boot, and a cycle is due once it passes the RPO
# target since the last (none yet: 0), so with the default 30 s the first cycle would wait for the
# guest's uptime to reach 30 s; an appliance up for long starts it when the agent attaches.
daemons() {
  $AP run --state /state/app --listen 127.0.0.1:9443 --web off --points crash=off,app=off --rpo 1 >>/tmp/appliance.log 2>&1 &
  appliance=$!
  settle 60 $AP status --state /state/app
  check appliance-run $?
  stamp agent-start
  $AG run --state /state/agent >>/tmp/agent.log 2>&1 &
  agent=$!
  settle 60 $AG status --state /state/agent
  check agent-run $?
  stamp agent-up
  settle 60 connected
  stamp connected
}
connected() { $AG status --state /state/agent --json | grep -q '"connected":true'; }
# The agent's committed cycles since it started (status "cycles": ACKed, so committed by the appliance).
committed() { c=$($AG status --state /state/agent --json | sed -n 's/.*"cycles":\([0-9]*\).*/\1/p'); [ "${c:-0}" -ge 1 ]; }
stop_daemons() {
  kill $agent; wait $agent
  kill $appliance; wait $appliance
}
# Until the first committed cycle since the daemons started, then what both daemons and the tracker say.
# Polled every 0.1 s for 10 s, then every second: a poll is a process started under TCG, and a
# long resync should not share the guest's CPUs with hundreds of them.
first_cycle() {
  n=0 end=$(($(cut -d. -f1 /proc/uptime) + limit))
  until committed; do
    if [ $n -lt 100 ]; then sleep 0.1; else sleep 1; fi
    n=$((n + 1))
    [ "$(cut -d. -f1 /proc/uptime)" -gt $end ] && break
  done
  committed
  check first-committed-cycle $?
  stamp committed
  # The appliance's events of this boot (its ring starts with its process): the first committed
  # cycle's own time, which the polling above only bounds.
  $AP events --state /state/app --since 0 | sed 's/^/BENCH-EV /'
  show agent-status $AG status --state /state/agent --json
  show appliance-status $AP status --state /state/app --json
  show cbt-status $AG cbt status /dev/vda --state /state/agent --json
  stop_daemons
  umount /state
  check state-unmounted $?
}

case "$phase" in
setup)
  mount /dev/vdb /state
  $AP init --state /state/app --storage file:/state/replica >/tmp/init.out 2>&1
  check appliance-init $?
  tail -n 1 /tmp/init.out >/tmp/regkey
  $AP run --state /state/app --listen 127.0.0.1:9443 --web off --points crash=off,app=off >>/tmp/appliance.log 2>&1 &
  appliance=$!
  settle 60 $AP status --state /state/app
  check appliance-run $?
  $AG register --appliance 127.0.0.1:9443 --key-file /tmp/regkey --state /state/agent >/tmp/register.out 2>&1
  check agent-register $?
  $AG run --state /state/agent >>/tmp/agent.log 2>&1 &
  agent=$!
  settle 60 $AG status --state /state/agent
  check agent-run $?
  stamp protect
  $AG protect /dev/vda --state /state/agent >/tmp/protect.out 2>&1
  check protect $?
  settle "$limit" committed
  check initial-sync $?
  stamp initial-sync
  show agent-status $AG status --state /state/agent --json
  stop_daemons
  # After the last cycle, with the daemons stopped (as late in a shutdown as a service can write):
  # 64 KiB writes spread evenly over the disk, tracked by the pinned tracker alone.
  stride=$((size_mib * 16 / writes))
  i=0 wrote=0
  while [ $i -lt "$writes" ]; do
    dd if=/dev/urandom of=/dev/vda bs=64k count=1 seek=$((i * stride)) conv=notrunc 2>/dev/null || wrote=1
    i=$((i + 1))
  done
  sync
  check changed-written $wrote
  show cbt-status $AG cbt status /dev/vda --state /state/agent --json
  mount -o remount,ro /state
  check state-read-only $?
  $AG cbt save --state /state/agent >/tmp/save.out 2>&1
  check cbt-save $?
  echo "BENCH save: $(tail -n 1 /tmp/save.out)"
  grep -q "1 disk(s) saved, 0 will resync" /tmp/save.out
  check cbt-save-saved-vda $?
  ;;
resume)
  mount -o ro /dev/vdb /state
  stamp resume-start
  $AG cbt resume --state /state/agent >/tmp/resume.out 2>&1
  check cbt-resume $?
  stamp resume-end
  echo "BENCH resume: $(tail -n 1 /tmp/resume.out)"
  grep -q "1 disk(s) resumed, 0 will resync" /tmp/resume.out
  check cbt-resume-resumed-vda $?
  mount -o remount,rw /state
  show cbt-before $AG cbt status /dev/vda --state /state/agent --json
  daemons
  first_cycle
  ;;
today)
  mount /dev/vdb /state
  daemons
  show cbt-before $AG cbt status /dev/vda --state /state/agent --json
  first_cycle
  ;;
*)
  check phase-given 1
  ;;
esac
finish
