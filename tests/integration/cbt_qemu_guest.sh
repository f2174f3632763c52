#!/bin/busybox sh
# cbt_qemu_guest.sh - the /init of cbt_qemu_portability's initramfs: runs the basic write test and the
# no-BTF fallback test of the tracker inside the guest kernel and prints CBT-QEMU-RESULT. With
# MOBILITY_AGENT_CBT_VARIANT on the kernel command line, that tracker variant is forced and checked.
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev /tmp /run
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t bpf bpf /sys/fs/bpf
echo "CBT-QEMU kernel $(uname -r)"
ok=1
check() { # check NAME CONDITION-STATUS
  if [ "$2" -eq 0 ]; then echo "CHECK $1 ok"; else echo "CHECK $1 FAIL"; ok=0; fi
}
insmod /loop.ko max_loop=4
for i in 1 2 3 4 5 6 7 8 9 10; do [ -b /dev/loop1 ] && break; sleep 0.2; done
truncate -s 64M /tmp/disk0.img /tmp/disk1.img
losetup /dev/loop0 /tmp/disk0.img
losetup /dev/loop1 /tmp/disk1.img
A="/agent/mobility-agent cbt"
# The variant forced from the host (kernel command line -> init's environment), else the probe's
# choice by the kernel's version: bpf_loop from 5.17, bounded from 5.12, legacy before.
kver=$(uname -r | cut -d. -f1,2)
kmajor=${kver%.*} kminor=${kver#*.}
kn=$((kmajor * 100 + kminor))
if [ $kn -ge 517 ]; then probed=bpf_loop; elif [ $kn -ge 512 ]; then probed=bounded; else probed=legacy; fi
want=${MOBILITY_AGENT_CBT_VARIANT:-$probed}
# marked OFFSET LENGTH: the extent drained for one write: the legacy variant marks whole bytes of the
# bitmap (8 blocks of 4 KiB), the others single blocks.
g=4096
[ "$want" = legacy ] && g=32768
marked() { echo "$(($1 / g * g)) $((($1 + $2 + g - 1) / g * g - $1 / g * g))"; }

$A start /dev/loop0 --state /tmp/state
check start $?
dd if=/dev/urandom of=/dev/loop0 bs=4096 seek=5 count=3 oflag=direct 2>/dev/null
dd if=/dev/urandom of=/dev/loop0 bs=512 seek=1001 count=1 oflag=direct 2>/dev/null
dd if=/dev/urandom of=/dev/loop0 bs=1000 count=5 seek=3000000 oflag=seek_bytes conv=fsync,notrunc 2>/dev/null
dd if=/dev/null of=/dev/loop0 conv=fsync,notrunc 2>/dev/null
blkdiscard -o 8388608 -l 1048576 /dev/loop0
$A drain /dev/loop0 --state /tmp/state >/tmp/drained
check drain $?
{ marked 20480 12288; marked 512000 4096; marked 2998272 8192; marked 8388608 1048576; } >/tmp/expected
cmp -s /tmp/drained /tmp/expected
check drained-exactly-the-writes $?
[ -z "$($A drain /dev/loop0 --state /tmp/state)" ]
check second-drain-empty $?
$A status /dev/loop0 --state /tmp/state --json >/tmp/status.json
check status $?
grep -q "\"variant\":\"$want\",\"variant_running\":true" /tmp/status.json
check "variant-$want" $?
grep -q '"tracking":true' /tmp/status.json && grep -q '"required":false' /tmp/status.json
check status-no-resync $?
$A stop /dev/loop0 --state /tmp/state
check stop $?

# A device-mapper (bio-based) disk over loop2: marks on submission, in-flight records for completion.
if [ -e /dm-mod.ko ]; then
  insmod /dm-mod.ko
  truncate -s 64M /tmp/disk2.img
  losetup /dev/loop2 /tmp/disk2.img
  export DM_DISABLE_UDEV=1
  echo "0 131072 linear /dev/loop2 0" | /agent/dmsetup create --noudevsync cbttest
  check dm-create $?
  for i in 1 2 3 4 5 6 7 8 9 10; do [ -b /dev/dm-0 ] && break; sleep 0.2; done
  $A start /dev/dm-0 --state /tmp/state
  check dm-start $?
  dd if=/dev/urandom of=/dev/dm-0 bs=4096 seek=7 count=2 oflag=direct 2>/dev/null
  dd if=/dev/urandom of=/dev/dm-0 bs=65536 seek=100 count=1 oflag=direct 2>/dev/null
  $A drain /dev/dm-0 --state /tmp/state >/tmp/dm.drained
  check dm-drain $?
  { marked 28672 8192; marked 6553600 65536; } >/tmp/dm.expected
  cmp -s /tmp/dm.drained /tmp/dm.expected
  check dm-drained-exactly-the-writes $?
  $A status /dev/dm-0 --state /tmp/state --json >/tmp/dm.json
  grep -q '"required":false' /tmp/dm.json
  check dm-no-resync $?
  grep -q '"inflight_records":[1-9]' /tmp/dm.json
  check dm-bio-based-records $?
  $A stop /dev/dm-0 --state /tmp/state
  check dm-stop $?
  cat /tmp/dm.drained
fi

# A kernel without BTF: simulated by pointing the loader at a missing BTF file.
MOBILITY_AGENT_BTF=/nonexistent MOBILITY_AGENT_BPF_PIN_DIR=/sys/fs/bpf/no-btf \
  $A start /dev/loop1 --state /tmp/state2 2>/tmp/fallback.err
check fallback-start $?
grep -q "eBPF tracking unavailable (kernel BTF not found at /nonexistent" /tmp/fallback.err
check fallback-message $?
MOBILITY_AGENT_BTF=/nonexistent MOBILITY_AGENT_BPF_PIN_DIR=/sys/fs/bpf/no-btf \
  $A drain /dev/loop1 --state /tmp/state2 >/tmp/fallback.out 2>/dev/null
[ $? -eq 3 ] && [ "$(cat /tmp/fallback.out)" = "0 67108864" ]
check fallback-drain-whole-device $?

cat /tmp/drained /tmp/fallback.err
grep -o '"variant_reason":"[^"]*"' /tmp/status.json
if [ $ok -eq 1 ]; then echo "CBT-QEMU-RESULT: PASS"; else echo "CBT-QEMU-RESULT: FAIL"; fi
poweroff -f
