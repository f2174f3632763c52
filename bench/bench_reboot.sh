#!/usr/bin/env bash
# bench_reboot.sh - what a clean reboot costs in replication: Debian 12's 6.1 kernel under qemu
# (TCG), a sparse protected disk (4 GiB: the initial sync sends zero extents) replicated by both
# daemons in the guest; then, with the daemons stopped, 10 MiB written after the last cycle (160
# 64 KiB writes spread over the disk) and a clean shutdown (state disk read-only, then `cbt save`).
# Both disk images, copied at that shutdown (cp --sparse=always), are booted twice:
#   (A) `cbt resume` early at boot, then the daemons (the new behaviour: the saved changes are sent);
#   (B) the daemons without `cbt resume` (today's boot: the tracker starts anew, so the first cycle
#       is a resync by comparison, the whole disk hashed on both sides). The save only writes its own
#       area on the state disk, which B never reads: B is the same shutdown without a save.
# Per boot: the bytes sent until in sync (agent `status --json` bytes_sent, payload after zstd, and
# raw_bytes, read after its first committed cycle: `cycles` >= 1; hashes are not counted), and the
# time until that cycle (the appliance's `events`: its committed event, unix_ms, mapped onto the
# guest's /proc/uptime by a wall-clock stamp taken with it), "from agent start" (`mobility-agent run`,
# the appliance already serving, as one on its own machine is: the goal's figure), "from init" (the
# guest's /init saw its disks; A's `cbt resume` and the in-guest appliance's start included) and
# "from boot" (uptime 0: the kernel's start, its TCG boot included). The appliance runs with
# --rpo 1 in both (see the guest script: its clock starts at this boot). The guest polls the agent
# every 0.1 s for 10 s, then every 1 s (each poll is a process started under TCG) to know when to
# read the rest; when the poll saw it is printed too. The appliance's `status --json` (last_committed_cycle) and the tracker's
# `cbt status --json` (resync required and reason) are read too, and each replica is compared with
# its disk on the host (cmp, state image loop-mounted read-only).
# Printed: A's bytes / changed bytes (goal <= 2), B's time / A's time from agent start (goal >= 50
# for 4 GiB; the from-init and from-boot ratios too), the raw figures; last line key=value.
#
#   bash bench/bench_reboot.sh [SIZE_MIB] [WRITES]       (root; defaults: 4096 160, i.e. 4 GiB, 10 MiB)
#   BENCH_KEEP_LOGS=DIR keeps each boot's console (with both daemons' logs, time-stamped) in DIR;
#   BENCH_LOG_LEVEL=debug (or info, ...) sets the daemons' log level in the guest.
#   QG_TIMEOUT: seconds per boot (default 2400); the guest waits for a cycle up to QG_TIMEOUT - 300.
#
# TCG makes everything slow (and the machine may be shared): compare the ratios, not the seconds.
# shellcheck disable=SC2154 # SENT_x, RAW_x, AGENT_x, INIT_x, BOOT_x, SEEN_x are set by eval, per boot
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
b=${RPL_BUILD_DIR:-$root/build}
. "$root/tests/integration/lib/qemu_guest.sh"

SIZE_MIB=${1:-4096}
WRITES=${2:-160}
{ [[ "$SIZE_MIB" =~ ^[1-9][0-9]*$ ]] && [[ "$WRITES" =~ ^[1-9][0-9]*$ ]]; } || fail "usage: bench_reboot.sh [SIZE_MIB] [WRITES]"
[ $((SIZE_MIB * 16 / WRITES)) -ge 1 ] || fail "$WRITES writes of 64 KiB do not fit in $SIZE_MIB MiB"
[ "$(id -u)" -eq 0 ] || fail "needs root (the state image is loop-mounted to compare the replica)"
for p in "$b/agent/mobility-agent" "$b/appliance/replication-appliance"; do
  [ -x "$p" ] || fail "$p missing: bash scripts/build.sh release"
done
mkfs=$(command -v mkfs.ext4) || fail "needs mkfs.ext4"
export QG_TIMEOUT=${QG_TIMEOUT:-2400}
WAIT=$((QG_TIMEOUT - 300))
CHANGED=$((WRITES * 65536))

qemu_guest_setup bench-reboot
qemu_guest_modules virtio_pci virtio_blk ext4
qemu_guest_programs "$b/agent/mobility-agent" "$b/appliance/replication-appliance"
W=$QG_WORK
truncate -s "${SIZE_MIB}M" "$W/data.img"
truncate -s 1G "$W/state.img"
"$mkfs" -q -F "$W/state.img" || fail "mkfs.ext4 state"
echo "reboot: $SIZE_MIB MiB sparse protected disk, $((CHANGED / 1048576)) MiB changed after the last cycle" \
  "($WRITES x 64 KiB), $QG_KVER under qemu TCG (-smp 2), $(nproc) host CPUs, load at start $(cut -d' ' -f1-3 /proc/loadavg)"

# boot PHASE DATA STATE: one boot; its console's BENCH lines into W/PHASE.*
boot() {
  local phase=$1 data=$2 state=$3 t0=$SECONDS
  say "boot: $phase"
  QG_APPEND="bench_phase=$phase bench_size_mib=$SIZE_MIB bench_writes=$WRITES bench_wait=$WAIT${BENCH_LOG_LEVEL:+ bench_log=$BENCH_LOG_LEVEL}" \
    qemu_guest_boot "$root/bench/bench_reboot_guest.sh" \
    -drive "file=$data,format=raw,if=virtio,cache=unsafe" \
    -drive "file=$state,format=raw,if=virtio,cache=unsafe"
  tr -d '\r' <"$QG_LOG" >"$W/$phase.log"
  [ -n "${BENCH_KEEP_LOGS:-}" ] && mkdir -p "$BENCH_KEEP_LOGS" && cp "$W/$phase.log" "$BENCH_KEEP_LOGS/"
  grep -E "^(BENCH |CHECK)" "$W/$phase.log" >&2
  if ! grep -q "^BENCH-PHASE-$phase: PASS" "$W/$phase.log"; then
    tail -60 "$W/$phase.log" >&2
    fail "boot $phase did not pass (qemu exit $QG_RC)"
  fi
  local name
  for name in $(sed -n 's/^BENCH-JSON \([^ ]*\) .*/\1/p' "$W/$phase.log"); do
    sed -n "s/^BENCH-JSON $name //p" "$W/$phase.log" >"$W/$phase.$name.json"
  done
  say "boot $phase: $((SECONDS - t0)) s on the host"
}
t_of() { sed -n "s/^BENCH-T $2 //p" "$W/$1.log" | cut -d' ' -f1; }
# commit_up PHASE: the uptime of the boot's first committed cycle, from the appliance's event
# (unix_ms) mapped onto the uptime by the agent-start stamp's wall clock.
commit_up() {
  local up wall ms
  read -r up wall < <(sed -n "s/^BENCH-T agent-start //p" "$W/$1.log")
  ms=$(sed -n 's/^BENCH-EV //p' "$W/$1.log" | python3 -c '
import json, sys
print(min(e["unix_ms"] for e in map(json.loads, sys.stdin) if e["type"] == "committed"))') \
    || fail "$1: no committed event from the appliance"
  calc "$up + ($ms - $wall) / 1000" 2
}
calc() { awk "BEGIN { printf \"%.${2:-2}f\", $1 }"; }

# replica_check PHASE DATA STATE: the replica in STATE equals DATA (read-only loop mount).
replica_check() {
  local phase=$1 data=$2 state=$3 id mnt=$W/mnt-$1
  id=$(json_field "$W/$phase.agent-status.json" disks.0.disk_id) || fail "no disk id in $phase's agent status"
  mkdir -p "$mnt"
  mount -o ro,loop,noload "$state" "$mnt" || fail "cannot mount the state image of $phase"
  CLEANUP_MOUNTS+=("$mnt")
  cmp "$data" "$mnt/replica/$id.img" || fail "$phase: the replica differs from the disk"
  umount "$mnt" && unset 'CLEANUP_MOUNTS[-1]'
}

boot setup "$W/data.img" "$W/state.img"
dirty=$(json_field "$W/setup.cbt-status.json" devices.0.dirty_bytes)
[ "$dirty" -ge "$CHANGED" ] || fail "the tracker holds $dirty dirty bytes at shutdown, less than the $CHANGED written"
for v in a b; do
  cp --sparse=always "$W/data.img" "$W/data-$v.img" || fail "cp data"
  cp --sparse=always "$W/state.img" "$W/state-$v.img" || fail "cp state"
done
rm -f "$W/data.img" "$W/state.img"

boot resume "$W/data-a.img" "$W/state-a.img"
boot today "$W/data-b.img" "$W/state-b.img"
replica_check resume "$W/data-a.img" "$W/state-a.img"
replica_check today "$W/data-b.img" "$W/state-b.img"

# The tracker must have resumed in A (no resync) and resynced in B, or the comparison is not this one.
read -r a_req a_count < <(json_field "$W/resume.cbt-before.json" devices.0.resync.required devices.0.resync.count | tr '\n' ' ')
read -r b_req b_reason < <(json_field "$W/today.cbt-before.json" devices.0.resync.required devices.0.resync.reason | tr '\n' ' ')
[ "$a_req" = false ] || fail "A: the tracker requires a resync after cbt resume"
[ "$b_req" = true ] || fail "B: the tracker did not require a resync (nothing to compare against)"
for p in resume today; do
  read -r sent raw cycle < <(json_field "$W/$p.agent-status.json" disks.0.bytes_sent disks.0.raw_bytes disks.0.last_cycle | tr '\n' ' ')
  app_cycle=$(json_field "$W/$p.appliance-status.json" disks.0.last_committed_cycle)
  [ "$app_cycle" -ge "$cycle" ] || fail "$p: the appliance committed cycle $app_cycle, the agent saw $cycle"
  eval "SENT_$p=$sent RAW_$p=$raw CYCLE_$p=$cycle"
  c=$(commit_up $p)
  eval "BOOT_$p=$c INIT_$p=$(calc "$c - $(t_of $p init)" 2) AGENT_$p=$(calc "$c - $(t_of $p agent-start)" 2)"
  eval "SEEN_$p=$(calc "$(t_of $p committed) - $(t_of $p agent-start)" 2)"
done
initial_s=$(calc "$(t_of setup initial-sync) - $(t_of setup protect)" 1)
initial_sent=$(json_field "$W/setup.agent-status.json" disks.0.bytes_sent)

resume_s=$(calc "$(t_of resume resume-end) - $(t_of resume resume-start)" 2)

bytes_ratio=$(calc "$SENT_resume / $CHANGED" 3)
time_ratio=$(calc "$AGENT_today / $AGENT_resume" 1)
init_ratio=$(calc "$INIT_today / $INIT_resume" 1)
boot_ratio=$(calc "$BOOT_today / $BOOT_resume" 1)
goal_bytes=$(awk "BEGIN { exit !($SENT_resume <= 2 * $CHANGED) }" && echo met || echo "not met")
goal_time=$(awk "BEGIN { exit !($time_ratio >= 50) }" && echo met || echo "not met")
echo
echo "initial sync: ${initial_s} s from protect, $initial_sent bytes sent (tracker dirty at shutdown: $dirty bytes)"
printf '%-34s %12s %12s %12s %10s %10s\n' "boot" "bytes_sent" "raw_bytes" "agent start" "init" "boot"
printf '%-34s %12s %12s %11ss %9ss %9ss\n' "(A) cbt save + cbt resume" "$SENT_resume" "$RAW_resume" "$AGENT_resume" "$INIT_resume" "$BOOT_resume"
printf '%-34s %12s %12s %11ss %9ss %9ss\n' "(B) no save: resync ($b_reason)" "$SENT_today" "$RAW_today" "$AGENT_today" "$INIT_today" "$BOOT_today"
echo "(bytes: agent status once it had a committed cycle (all its cycles since it started; later ones"
echo " are empty); times: from each point, by the guest's /proc/uptime, until the appliance's committed"
echo " event of the first cycle; the agent's polling saw it at ${SEEN_resume} s (A) and ${SEEN_today} s (B) from"
echo " agent start. A's cbt resume took ${resume_s} s, before the agent started. Both replicas compared"
echo " equal to their disks.)"
echo
echo "== reboot summary (goals: A's bytes <= 2x changed; B/A time >= 50 for 4 GiB) =="
echo "A's bytes sent / changed: $SENT_resume / $CHANGED = ${bytes_ratio}x: $goal_bytes"
echo "time B / A from agent start: $AGENT_today / $AGENT_resume s = ${time_ratio}x: $goal_time" \
  "(from init: ${init_ratio}x, from boot: ${boot_ratio}x)"
echo "reboot_bench size_mib=$SIZE_MIB changed_bytes=$CHANGED resume_resync_count=$a_count today_reason=$b_reason" \
  "a_bytes_sent=$SENT_resume a_raw_bytes=$RAW_resume b_bytes_sent=$SENT_today b_raw_bytes=$RAW_today" \
  "a_s_agent=$AGENT_resume b_s_agent=$AGENT_today a_s_init=$INIT_resume b_s_init=$INIT_today" \
  "a_s_boot=$BOOT_resume b_s_boot=$BOOT_today a_s_seen=$SEEN_resume b_s_seen=$SEEN_today resume_s=$resume_s bytes_ratio=$bytes_ratio time_ratio=$time_ratio" \
  "init_time_ratio=$init_ratio boot_time_ratio=$boot_ratio goal_bytes=${goal_bytes// /_} goal_time=${goal_time// /_}"
