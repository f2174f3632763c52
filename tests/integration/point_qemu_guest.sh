#!/bin/busybox sh
# point_qemu_guest.sh - the /init of point_qemu_dm's initramfs: both daemons on 127.0.0.1 in the 6.1
# guest protect a loop disk whose ext4 sits on a dm linear device over it; under a writer, a
# checkpoint freezes that filesystem (found from the disk through device-mapper), and the point
# restored from the replica passes e2fsck -fn and holds the file synced before it.
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev /tmp /run /mnt/a /mnt/r
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t bpf bpf /sys/fs/bpf
ip link set lo up
hostname point-guest
echo "POINT-QEMU kernel $(uname -r)"
ok=1
check() { # check NAME CONDITION-STATUS
  if [ "$2" -eq 0 ]; then echo "CHECK $1 ok"; else echo "CHECK $1 FAIL"; ok=0; fi
}
# Waits up to 30 s (TCG is slow) for a command to succeed.
settle() {
  i=0
  while [ $i -lt 150 ]; do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; i=$((i + 1)); done
  return 1
}
finish() {
  [ -n "${writer:-}" ] && kill "$writer" 2>/dev/null
  [ -n "${agent:-}" ] && kill "$agent" 2>/dev/null
  [ -n "${appliance:-}" ] && kill "$appliance" 2>/dev/null
  for f in /tmp/agent.log /tmp/appliance.log /tmp/checkpoint.out /tmp/restore.out /tmp/fsck.out; do
    [ -s $f ] && { echo "--- $f"; tail -25 $f; }
  done
  if [ $ok -eq 1 ]; then echo "POINT-QEMU-RESULT: PASS"; else echo "POINT-QEMU-RESULT: FAIL"; fi
  poweroff -f
}
insmod /loop.ko max_loop=4
for m in dm-mod crc16 mbcache jbd2 crc32c_generic ext4; do
  [ -e /$m.ko ] && insmod /$m.ko
done
for i in 1 2 3 4 5 6 7 8 9 10; do [ -b /dev/loop1 ] && break; sleep 0.2; done
export DM_DISABLE_UDEV=1
AG=/agent/mobility-agent
AP=/agent/replication-appliance

# The protected disk: loop0; over all of it a dm linear device carrying the ext4 (made on the host).
cp /fs.img /tmp/disk0.img
losetup /dev/loop0 /tmp/disk0.img
echo "0 $(blockdev --getsz /dev/loop0) linear /dev/loop0 0" | /agent/dmsetup create --noudevsync fsdm
check dm-create $?
settle test -b /dev/dm-0
mount -t ext4 /dev/dm-0 /mnt/a
check dm-mount $?
[ $ok -eq 1 ] || finish

"$AP" init --state /tmp/app --storage file:/tmp/replica >/tmp/init.out 2>&1
check appliance-init $?
key=$(tail -n 1 /tmp/init.out)
port=44390
"$AP" run --state /tmp/app --listen 127.0.0.1:$port --web off --points crash=off,app=off --rpo 1 \
  >/tmp/appliance.log 2>&1 &
appliance=$!
settle "$AP" status --state /tmp/app
check appliance-run $?
"$AG" register --appliance 127.0.0.1:$port --key "$key" --state /tmp/agent >/tmp/register.out 2>&1
check agent-register $?
# A generous freeze limit: TCG on a shared machine is slow; the test asserts the freeze, not its time.
"$AG" run --state /tmp/agent --freeze-limit-ms 10000 >/tmp/agent.log 2>&1 &
agent=$!
settle "$AG" status --state /tmp/agent
check agent-run $?
[ $ok -eq 1 ] || finish

# The writer: files rewritten and synced all the time, on the filesystem over the dm device.
(n=0; while :; do
  n=$((n + 1))
  dd if=/dev/urandom of=/mnt/a/w$((n % 16)) bs=4096 count=$((n % 32 + 1)) 2>/dev/null
  sync
done) &
writer=$!
"$AG" protect /dev/loop0 --wait --state /tmp/agent >/tmp/protect.out 2>&1
check protect $?
# A file synced before the point: the restored filesystem must hold it.
echo "before the point $(date +%s)" >/mnt/a/marker && sync
marker=$(cat /mnt/a/marker)
"$AG" checkpoint /dev/loop0 --wait --state /tmp/agent >/tmp/checkpoint.out 2>&1
check checkpoint $?
point=$(tail -n 1 /tmp/checkpoint.out)
echo "POINT-QEMU point $point: $(head -n 1 /tmp/checkpoint.out)"
grep -Eq "filesystem-consistent|application-consistent" /tmp/checkpoint.out
check point-filesystem-consistent $?
grep -q "froze 1 filesystem" /tmp/agent.log
check agent-froze-the-dm-filesystem $?
kill -0 $writer 2>/dev/null
check writer-still-running $?
"$AG" status --state /tmp/agent --json >/tmp/status.json
check agent-status $?
disk=$(sed -n 's/.*"disk_id":"\([^"]*\)".*/\1/p' /tmp/status.json)
grep -q '"freeze_ms":{"count":[1-9]' /tmp/status.json
check freeze-counted $?

# The point restored from the replica while the writer goes on: with dm linear at offset 0 over the
# whole disk, the disk image is the filesystem.
"$AP" restore --state /tmp/app --disk "$disk" --point "$point" --out /tmp/restored.img >/tmp/restore.out 2>&1
check restore $?
/agent/e2fsck -fn /tmp/restored.img >/tmp/fsck.out 2>&1
check restored-e2fsck-clean $?
losetup -r /dev/loop1 /tmp/restored.img && mount -t ext4 -o ro,noload /dev/loop1 /mnt/r
check restored-mount $?
[ "$(cat /mnt/r/marker 2>/dev/null)" = "$marker" ]
check restored-holds-marker $?
umount /mnt/r
losetup -d /dev/loop1
kill $writer
wait $writer 2>/dev/null
writer=
echo after >/mnt/a/after && sync
check writable-after-the-point $?
settle umount /mnt/a
check unmounted $?
cat /tmp/protect.out /tmp/checkpoint.out
finish
