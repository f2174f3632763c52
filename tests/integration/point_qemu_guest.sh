#!/bin/busybox sh
# point_qemu_guest.sh - the /init of point_qemu_dm's initramfs: both daemons on 127.0.0.1 in the 6.1
# guest protect loop disks whose ext4 sits on device-mapper over them (dm linear; an LVM logical
# volume when lvm is in the initramfs); under a writer on each, a checkpoint freezes that filesystem
# (found from the disk through its holders), and the point restored from the replica passes
# e2fsck -fn and holds the file synced before it.
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev /tmp /run/lock/lvm /etc/lvm /mnt/a /mnt/b /mnt/r
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
writers=
logs() {
  for f in /tmp/lvm.out /tmp/agent.log /tmp/appliance.log /tmp/checkpoint-*.out /tmp/restore-*.out /tmp/fsck-*.out; do
    [ -s $f ] && { echo "--- $f"; tail -25 $f; }
  done
}
finish() {
  [ -n "$writers" ] && kill $writers 2>/dev/null
  [ -n "${agent:-}" ] && kill "$agent" 2>/dev/null
  [ -n "${appliance:-}" ] && kill "$appliance" 2>/dev/null
  logs
  if [ $ok -eq 1 ]; then echo "POINT-QEMU-RESULT: PASS"; else echo "POINT-QEMU-RESULT: FAIL"; fi
  poweroff -f
}
# writer DIR: files rewritten and synced ten times a second; its pid joins $writers. (Without the
# pause it took both emulated CPUs, the host's two with them, for nothing a point needs.)
writer() {
  (n=0; while :; do
    n=$((n + 1))
    dd if=/dev/urandom of=$1/w$((n % 16)) bs=4096 count=$((n % 32 + 1)) 2>/dev/null
    sync
    sleep 0.1
  done) &
  writers="$writers $!"
}
# point NAME N DISK MNT...: under the writers, a checkpoint of DISK must freeze its N filesystems; each MNT gets a marker file synced just before.
point() {
  name=$1 n=$2 dev=$3
  shift 3
  froze_before=$(grep -c "froze $n filesystem" /tmp/agent.log)
  for m in "$@"; do
    echo "before the point $name $(date +%s)" >$m/marker && sync && cp $m/marker /tmp/marker.${m##*/}
  done
  "$AG" checkpoint $dev --wait --state /tmp/agent >/tmp/checkpoint-$name.out 2>&1
  check $name-checkpoint $?
  rp=$(tail -n 1 /tmp/checkpoint-$name.out)
  echo "POINT-QEMU $name point $rp: $(head -n 1 /tmp/checkpoint-$name.out)"
  grep -Eq "filesystem-consistent|application-consistent" /tmp/checkpoint-$name.out
  check $name-point-filesystem-consistent $?
  [ "$(grep -c "froze $n filesystem" /tmp/agent.log)" -gt "$froze_before" ]
  check $name-agent-froze-$n-filesystems $?
  "$AG" status --state /tmp/agent --json >/tmp/status.json
}
# restored NAME DISK OFFSET MNT: DISK's image at the last point, restored from the replica, holds at
# OFFSET the filesystem mounted at MNT: e2fsck -fn is clean and the marker is the one synced before.
restored() {
  disk=$(sed -n "s#.*\"device\":\"$2\",\"disk_id\":\"\([^\"]*\)\".*#\1#p" /tmp/status.json)
  [ -n "$disk" ]
  check $1-disk-id $?
  at=                    # the disk's newest point when rp is empty (a group's member)
  [ -n "$rp" ] && at="--point $rp"
  "$AP" restore --state /tmp/app --disk "$disk" $at --out /tmp/restored-$1.img >/tmp/restore-$1.out 2>&1
  check $1-restore $?
  losetup -r -o $3 /dev/loop7 /tmp/restored-$1.img
  /agent/e2fsck -fn /dev/loop7 >/tmp/fsck-$1.out 2>&1
  check $1-restored-e2fsck-clean $?
  mount -t ext4 -o ro,noload /dev/loop7 /mnt/r
  check $1-restored-mount $?
  cmp -s /mnt/r/marker /tmp/marker.${4##*/}
  check $1-restored-holds-marker $?
  umount /mnt/r
  losetup -d /dev/loop7
  rm -f /tmp/restored-$1.img
}
# Whatever hangs, the console says what happened before the host's timeout (180 s) ends qemu.
(sleep 160; echo "CHECK guest-done-within-160s FAIL"; logs; echo "POINT-QEMU-RESULT: FAIL"; poweroff -f) &
insmod /loop.ko max_loop=8
for m in dm-mod crc16 mbcache jbd2 crc32c_generic ext4; do
  [ -e /$m.ko ] && insmod /$m.ko
done
for i in 1 2 3 4 5 6 7 8 9 10; do [ -b /dev/loop7 ] && break; sleep 0.2; done
export DM_DISABLE_UDEV=1
AG=/agent/mobility-agent
AP=/agent/replication-appliance

# Disk loop0: a dm linear device over all of it carries the ext4 (made on the host), at offset 0.
cp /fs.img /tmp/disk0.img
losetup /dev/loop0 /tmp/disk0.img
echo "0 $(blockdev --getsz /dev/loop0) linear /dev/loop0 0" | /agent/dmsetup create --noudevsync fsdm
check dm-create $?
settle test -b /dev/mapper/fsdm
mount -t ext4 /dev/mapper/fsdm /mnt/a
check dm-mount $?

# Disk loop1: an LVM physical volume, a volume group on it, a logical volume carrying an ext4 (the
# host's, copied in), which starts where LVM put the volume's first extent.
lv_offset=
if [ -x /agent/lvm ]; then
  # No udev here: LVM makes its device nodes itself, scans /dev, and keeps no backups.
  cat >/etc/lvm/lvm.conf <<'CONF'
devices {
  obtain_device_list_from_udev = 0
  use_devicesfile = 0
}
activation {
  udev_sync = 0
  udev_rules = 0
  monitoring = 0
}
global {
  event_activation = 0
}
backup {
  backup = 0
  archive = 0
}
CONF
  truncate -s 64M /tmp/disk1.img
  losetup /dev/loop1 /tmp/disk1.img
  { /agent/lvm pvcreate -q /dev/loop1 && /agent/lvm vgcreate -q vg0 /dev/loop1 &&
    /agent/lvm lvcreate -q -y -L 40M -n lv0 vg0; } >/tmp/lvm.out 2>&1
  check lvm-create $?
  settle test -b /dev/mapper/vg0-lv0
  dd if=/lv.img of=/dev/mapper/vg0-lv0 bs=1M 2>/dev/null && mount -t ext4 /dev/mapper/vg0-lv0 /mnt/b
  check lvm-mount $?
  # "0 SECTORS linear MAJ:MIN START": the volume's start on the disk, in 512-byte sectors.
  lv_offset=$(($(/agent/dmsetup table vg0-lv0 | awk '{print $5}') * 512))
  echo "POINT-QEMU lvm: $(/agent/dmsetup table vg0-lv0)"
else
  echo "POINT-QEMU lvm missing: the LVM part is not tested"
fi

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

writer /mnt/a
"$AG" protect /dev/loop0 --wait --state /tmp/agent >/tmp/protect.out 2>&1
check dm-protect $?
if [ -n "$lv_offset" ]; then
  writer /mnt/b
  "$AG" protect /dev/loop1 --wait --state /tmp/agent >>/tmp/protect.out 2>&1
  check lvm-protect $?
fi
[ $ok -eq 1 ] || finish
point dm 1 /dev/loop0 /mnt/a
restored dm /dev/loop0 0 /mnt/a
if [ -n "$lv_offset" ]; then
  point lvm 1 /dev/loop1 /mnt/b
  restored lvm /dev/loop1 $lv_offset /mnt/b
  # One point of both disks at one instant: both filesystems frozen together, each restored clean.
  point both 2 "" /mnt/a /mnt/b
  rp=
  restored both-dm /dev/loop0 0 /mnt/a
  restored both-lvm /dev/loop1 $lv_offset /mnt/b
fi
alive=0
for w in $writers; do kill -0 $w || alive=1; done
check writers-ran-throughout $alive
grep -q '"freeze_ms":{"count":[1-9]' /tmp/status.json
check freezes-counted $?
kill $writers
wait $writers 2>/dev/null
writers=
echo after >/mnt/a/after && sync
check writable-after-the-points $?
settle umount /mnt/a
check dm-unmounted $?
if [ -n "$lv_offset" ]; then
  settle umount /mnt/b
  check lvm-unmounted $?
fi
cat /tmp/protect.out /tmp/checkpoint-*.out
finish
