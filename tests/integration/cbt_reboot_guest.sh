#!/bin/busybox sh
# cbt_reboot_guest.sh - the /init of cbt_reboot_qemu's initramfs, booted three times with the same
# two disks (vda: the protected disk, ext4; vdb: the state disk, both daemons' state and the file
# replica). reboot_phase=1 sets up and replicates, writes more, and shuts down cleanly: daemons
# stopped, filesystems unmounted or read-only, then `cbt save` (what the systemd shutdown hook runs).
# reboot_phase=2 runs `cbt resume` before anything writes (what the early unit runs), then checks the
# tracker kept its UUID and holds the unsent writes, replicates them, compares, and shuts down cleanly
# again. reboot_phase=3 writes to vda before `cbt resume`: the disk must resync, saying why.
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev /tmp /run /state /mnt/data
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t bpf bpf /sys/fs/bpf
ip link set lo up
hostname reboot-guest
while read -r m; do insmod "/$m.ko" 2>/dev/null; done </modules.load
AG=/agent/mobility-agent
AP=/agent/replication-appliance
phase=$(sed -n 's/.*reboot_phase=\([0-9]\).*/\1/p' /proc/cmdline)
echo "REBOOT phase $phase, kernel $(uname -r)"
ok=1
check() { # check NAME STATUS
  if [ "$2" -eq 0 ]; then echo "CHECK $1 ok"; else echo "CHECK $1 FAIL"; ok=0; fi
}
settle() { # settle SECONDS COMMAND...: until it succeeds (TCG is slow)
  n=$(($1 * 5)); shift
  while [ $n -gt 0 ]; do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; n=$((n - 1)); done
  return 1
}
finish() {
  [ $ok -eq 1 ] || for f in /tmp/agent.log /tmp/appliance.log /tmp/*.out; do [ -s $f ] && { echo "--- $f"; tail -20 $f; }; done
  if [ $ok -eq 1 ]; then echo "REBOOT-PHASE-$phase: PASS"; else echo "REBOOT-PHASE-$phase: FAIL"; fi
  poweroff -f
}
for i in 1 2 3 4 5 6 7 8 9 10; do [ -b /dev/vdb ] && break; sleep 0.5; done
[ "$(cat /sys/block/vda/size)" = 131072 ] && [ -b /dev/vdb ]
check disks-present $?
[ $ok -eq 1 ] || finish

appliance_run() {
  $AP run --state /state/app --listen 127.0.0.1:9443 --web off --points crash=off,app=off >>/tmp/appliance.log 2>&1 &
  appliance=$!
  settle 30 $AP status --state /state/app
  check appliance-run $?
}
daemons() {
  appliance_run
  $AG run --state /state/agent >>/tmp/agent.log 2>&1 &
  agent=$!
  settle 30 $AG status --state /state/agent
  check agent-run $?
}
# cycle_after N: the agent's last ACKed cycle of vda is beyond N (120 s at most).
last_cycle() { $AG status --state /state/agent --json | sed -n 's/.*"last_cycle":\([0-9]*\).*/\1/p'; }
cycle_after() { c=$(last_cycle); [ -n "$c" ] && [ "$c" -gt "$1" ]; }
cbt_field() { $AG cbt status /dev/vda --state /state/agent --json | sed -n "s/.*\"$1\":\"\{0,1\}\([^,\"}]*\).*/\1/p"; }
# A clean shutdown: daemons stopped, filesystems unmounted or read-only, then the save.
shutdown_clean() {
  mountpoint -q /mnt/data && umount /mnt/data
  kill $agent; wait $agent
  kill $appliance; wait $appliance
  sync
  mount -o remount,ro /state
  check state-read-only $?
  $AG cbt save --state /state/agent >/tmp/save.out 2>&1
  check cbt-save $?
  echo "REBOOT save: $(cat /tmp/save.out | tail -n 1)"
  grep -q "1 disk(s) saved, 0 will resync" /tmp/save.out
  check cbt-save-saved-vda $?
}
disk_id() { $AG status --state /state/agent --json | sed -n 's/.*"disk_id":"\([^"]*\)".*/\1/p'; }
replica_equal() { # replica_equal ID: the replica of vda equals it (nothing writes vda now)
  [ -n "$1" ] && cmp /dev/vda /state/replica/$1.img
}

case "$phase" in
1)
  mount /dev/vdb /state
  $AP init --state /state/app --storage file:/state/replica >/tmp/init.out 2>&1
  check appliance-init $?
  tail -n 1 /tmp/init.out >/tmp/regkey
  appliance_run
  $AG register --appliance 127.0.0.1:9443 --key-file /tmp/regkey --state /state/agent >/tmp/register.out 2>&1
  check agent-register $?
  $AG run --state /state/agent >>/tmp/agent.log 2>&1 &
  agent=$!
  settle 30 $AG status --state /state/agent
  check agent-run $?
  $AG protect /dev/vda --state /state/agent >/tmp/protect.out 2>&1
  check protect $?
  settle 120 cycle_after 0
  check initial-sync $?
  mount /dev/vda /mnt/data
  dd if=/dev/urandom of=/mnt/data/sent bs=64k count=16 2>/dev/null && sync
  $AG checkpoint /dev/vda --wait --state /state/agent >/tmp/checkpoint.out 2>&1
  check checkpoint $?
  # Written after the last cycle: these reach the replica only if the reboot keeps them.
  dd if=/dev/urandom of=/mnt/data/unsent bs=64k count=32 2>/dev/null && sync
  echo "REBOOT uuid $(cbt_field tracker_uuid) count $(cbt_field count)"
  shutdown_clean
  ;;
2)
  mount -o ro /dev/vdb /state
  $AG cbt resume --state /state/agent >/tmp/resume.out 2>&1
  check cbt-resume $?
  echo "REBOOT resume: $(tail -n 1 /tmp/resume.out)"
  grep -q "1 disk(s) resumed, 0 will resync" /tmp/resume.out
  check cbt-resume-resumed-vda $?
  mount -o remount,rw /state
  echo "REBOOT uuid $(cbt_field tracker_uuid) count $(cbt_field count) required $(cbt_field required) dirty $(cbt_field dirty_bytes)"
  [ "$(cbt_field required)" = false ]
  check no-resync-required $?
  [ "$(cbt_field dirty_bytes)" -ge 2097152 ]
  check unsent-writes-restored $?
  daemons
  c=$(last_cycle)
  $AG checkpoint /dev/vda --wait --state /state/agent >/tmp/checkpoint.out 2>&1
  check checkpoint-after-reboot $?
  settle 60 cycle_after "$c"
  [ "$(cbt_field required)" = false ] && [ "$(cbt_field count)" = 0 ]
  check still-no-resync $?
  replica_equal "$(disk_id)"
  check replica-equals-disk $?
  shutdown_clean
  ;;
3)
  # A write slips in before tracking attaches (a fsck, a mount's journal replay would do the same).
  dd if=/dev/urandom of=/dev/vda bs=4096 count=1 seek=8000 conv=fsync 2>/dev/null
  mount -o ro /dev/vdb /state
  $AG cbt resume --state /state/agent >/tmp/resume.out 2>&1
  check cbt-resume $?
  echo "REBOOT resume: $(tail -n 1 /tmp/resume.out)"
  grep -q "0 disk(s) resumed, 1 will resync" /tmp/resume.out
  check cbt-resume-refused $?
  mount -o remount,rw /state
  echo "REBOOT required $(cbt_field required) reason $(cbt_field reason) count $(cbt_field count)"
  [ "$(cbt_field required)" = true ] && [ "$(cbt_field reason)" = written-before-attach ]
  check resync-written-before-attach $?
  daemons
  resynced() { [ "$(cbt_field required)" = false ]; }
  settle 150 resynced
  check resync-done $?
  id=$(disk_id)
  kill $agent; wait $agent
  replica_equal "$id"
  check replica-equals-disk-after-resync $?
  kill $appliance; wait $appliance
  ;;
*)
  check phase-given 1
  ;;
esac
finish
