#!/usr/bin/env bash
# bench_points_file.sh - what a recovery point costs on file: storage: `mobility-agent checkpoint
# --wait` time, bytes the appliance wrote and space taken per point, with 1 % of a full disk
# changed before each point. Three pairs in the same run, their rounds
# interleaved: (a) the replica on ext4 with undo files (the default there), (b) the replica on ext4
# with a full copy per point (RPL_FILE_POINTS=copy: the peer, what file storage did before),
# (the same changes in each: bench_gen scatter, 4-64 KiB writes, one seed per round)
# (c) the replica on XFS with reflinks. Per pair: each round's figures, the median, min and max; then
# the ratios copy/undo (goal >= 20 in time) and undo/reflink (the same order: goal <= 10). Reads
# the appliance's bytes written from /proc/PID/io and space from du; the point id from the
# checkpoint's last line. Last line: key=value summary.
#
#   bash bench/bench_points_file.sh [--rounds N] [--size DISK_SIZE]
#        (root; defaults: 5 rounds, 4G: the disk of the issue's figures)
# shellcheck source=bench/lib_bench.sh
. "$(dirname "$0")/lib_bench.sh"

ROUNDS=5 SIZE=4G
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2 ;;
    --size) SIZE=$2 ;;
    *) die "unknown option $1 (--rounds N --size SIZE)" ;;
  esac
  shift 2 || die "$1 needs a value"
done
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "--rounds takes a whole number"
bench_setup
command -v mkfs.xfs > /dev/null || die "needs xfsprogs (scripts/setup.sh)"
[ "$(stat -f -c %T /var/tmp)" = ext2/ext3 ] || say "note: /var/tmp is $(stat -f -c %T /var/tmp), not ext4: pairs undo and copy run there anyway"

PAIRS="undo copy reflink"
declare -A DEV APID AGDIR
echo "points on file storage: a $SIZE disk full of data, 1 % changed before each point, $ROUNDS rounds;" \
  "$(nproc) CPUs, load at start $(load_avg)"
for p in $PAIRS; do
  "$GEN" text "$RT/$p.disk" "$SIZE" 7 0 > /dev/null || die "bench_gen text failed"
  bench_loop d "$RT/$p.disk"
  DEV[$p]=$d
  case $p in
    undo) RPL_FILE_POINTS=undo bench_pair_start "$p" 30 ;;
    copy) RPL_FILE_POINTS=copy bench_pair_start "$p" 30 ;;
    reflink) BENCH_REPLICA_FS=xfs RPL_FILE_POINTS=auto bench_pair_start "$p" 30 ;;
  esac
  APID[$p]=$AP_PID
  AGDIR[$p]=$PAIR_DIR/agent
  bench_protect "$p" "$d"
  wait_applied "$p" 1 1800
  say "$p: initial sync done"
done
# One point each before the rounds: the first point of a disk is its first undo file or copy.
for p in $PAIRS; do
  "$AG" checkpoint "${DEV[$p]}" --wait --state "${AGDIR[$p]}" > "$RT/ckpt.out" 2>&1 || die "checkpoint ($p): $(cat "$RT/ckpt.out")"
done

write_bytes() { awk '$1 == "write_bytes:" { print $2 }' "/proc/$1/io"; }
# Space: du where the replica shares its file system (exact without shared blocks); the file
# system's own used blocks where it has one (XFS: du counts a reflink's shared blocks in each file).
space_kib() {
  if mountpoint -q "$RT/$1/replica"; then df -k --output=used "$RT/$1/replica" | tail -n 1
  else du -s -k "$RT/$1/replica" | cut -f1; fi
}
declare -A T W S
for r in $(seq 1 "$ROUNDS"); do
  line="round $r:"
  for p in $PAIRS; do
    w0=$(write_bytes "${APID[$p]}") s0=$(space_kib "$p")
    "$GEN" scatter "${DEV[$p]}" 1 "$r" > /dev/null || die "bench_gen scatter failed"
    t0=$(now)
    "$AG" checkpoint "${DEV[$p]}" --wait --state "${AGDIR[$p]}" > "$RT/ckpt.out" 2>&1 || die "checkpoint ($p): $(cat "$RT/ckpt.out")"
    t1=$(now)
    w1=$(write_bytes "${APID[$p]}") s1=$(space_kib "$p")
    T[$p]+="$(calc "$t1 - $t0" 3) "
    W[$p]+="$(calc "($w1 - $w0) / 1048576" 1) "
    S[$p]+="$(calc "($s1 - $s0) / 1024" 1) "
    line+=" $p $(calc "$t1 - $t0" 3) s, wrote $(calc "($w1 - $w0) / 1048576" 1) MiB, +$(calc "($s1 - $s0) / 1024" 1) MiB ($(tail -n 1 "$RT/ckpt.out")) |"
  done
  echo "$line load $(load_avg)"
done

printf '%-8s %22s %22s %22s\n' pair "checkpoint s (med min max)" "MiB written (med)" "MiB more space (med)"
for p in $PAIRS; do
  # shellcheck disable=SC2086 # the lists are words
  printf '%-8s %8.3f %6.3f %6.3f %22s %22s\n' "$p" "$(median ${T[$p]})" \
    "$(printf '%s\n' ${T[$p]} | sort -g | head -n 1)" "$(printf '%s\n' ${T[$p]} | sort -g | tail -n 1)" \
    "$(median ${W[$p]})" "$(median ${S[$p]})"
done
# shellcheck disable=SC2086
tu=$(median ${T[undo]}) tc=$(median ${T[copy]}) tr=$(median ${T[reflink]})
# shellcheck disable=SC2086
wu=$(median ${W[undo]}) wc=$(median ${W[copy]})
speed=$(calc "$tc / $tu" 1) order=$(calc "$tu / $tr" 2) bytes=$(calc "$wc / $wu" 1)
echo "copy/undo time $speed (goal >= 20), copy/undo bytes written $bytes, undo/reflink time $order (goal <= 10: the same order)"
echo "summary: undo_s=$tu copy_s=$tc reflink_s=$tr copy_over_undo=$speed undo_over_reflink=$order bytes_copy_over_undo=$bytes"
