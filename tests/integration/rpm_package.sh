#!/usr/bin/env bash
# rpm_package.sh - Description: the agent's .rpm made by scripts/package.sh (in SHA256SUMS) holds
# exactly its program (the same static binary as the .deb's), unit, defaults, man page and docs,
# requires no shared library, and its scriptlets do what the .deb's do: installed with rpm --root
# into a scratch root that has nothing but a static busybox (no glibc, no shared library, no
# loader), it makes the state directory (0700); the agent from it runs there and does real work:
# --version, check --json, register with an appliance named only in that root's /etc/hosts,
# protect a loop disk (the tracker pinned in the root's bpffs) and two checkpoints whose restores
# equal the disk; reinstalling (rpm -U) keeps state and pins; rpm -e removes the files, the state
# and the pins, and keeps a changed /etc/default as .rpmsave. Runs in its own mount namespace.
set -u
# The root's proc, sysfs and bpffs mounts exist only in this namespace: they go when the test does.
if [ -z "${RPL_RPM_TEST_NS:-}" ] && [ "$(id -u)" -eq 0 ]; then
  unshare -m true 2>/dev/null || { echo "SKIP: cannot make a mount namespace (unshare -m)"; exit 77; }
  RPL_RPM_TEST_NS=1 exec unshare -m --propagation private bash "$0" "$@"
fi
. "$(dirname "$0")/lib/replication.sh"
rpl_setup 400
src=${RPL_SOURCE_DIR:?run under ctest}
for c in rpm rpmbuild rpm2cpio cpio busybox chroot readelf file mknod; do
  command -v "$c" >/dev/null || skip "$c is missing (scripts/setup.sh)"
done
grep -qs '^RPL_STATIC_AGENT:BOOL=ON' "$B/CMakeCache.txt" || skip "this tree builds a dynamic agent (RPL_STATIC_AGENT=OFF)"
busybox=$(command -v busybox)
file -L "$busybox" | grep -q 'statically linked' || skip "$busybox is not static (busybox-static package)"

# ---- the download set ----
bash "$src/scripts/package.sh" --no-build --build-dir "$B" --out "$RT/dist" > "$RT/package.log" 2>&1 ||
  { cat "$RT/package.log" >&2; fail "scripts/package.sh failed"; }
cd "$RT/dist" || fail "no dist directory"
mapfile -t rpms < <(ls -- *.rpm 2>/dev/null)
[ "${#rpms[@]}" -eq 1 ] || fail "expected one .rpm in dist/, found: ${rpms[*]:-none}"
pkg=$RT/dist/${rpms[0]}
grep -q "  ${rpms[0]}\$" SHA256SUMS || fail "SHA256SUMS does not list ${rpms[0]}"
sha256sum -c SHA256SUMS > "$RT/sums.out" 2>&1 || { cat "$RT/sums.out" >&2; fail "sha256sum -c SHA256SUMS failed"; }
upstream=$("$B/agent/mobility-agent" --version | sed 's/^mobility-agent //')

# ---- what the package holds and says ----
# rpm on Debian warns that it is not Debian's package manager: noise, dropped.
rpmq() { rpm "$@" 2> >(grep -v 'should not be used directly\|assuming you know what' >&2); }
q=$(rpmq -qp --qf '%{NAME} %{VERSION} %{RELEASE} %{ARCH}' "$pkg") || fail "rpm -qp failed"
[ "$q" = "mobility-agent $upstream 1 x86_64" ] || fail "the package is '$q', the agent is $upstream"
rpmq -qpl "$pkg" > "$RT/files"
cat > "$RT/files.want" <<'EOF'
/etc/default/mobility-agent
/usr/bin/mobility-agent
/usr/lib/systemd/system-shutdown/mobility-agent
/usr/lib/systemd/system/mobility-agent-resume.service
/usr/lib/systemd/system/mobility-agent.service
/usr/share/doc/mobility-agent
/usr/share/doc/mobility-agent/README.md
/usr/share/doc/mobility-agent/copyright
/usr/share/man/man8/mobility-agent.8.gz
EOF
diff -u "$RT/files.want" "$RT/files" || fail "the package's file list differs from the expected one (above)"
[ "$(rpmq -qp --configfiles "$pkg")" = /etc/default/mobility-agent ] || fail "/etc/default/mobility-agent is not its only config file"
# No shared library, nothing from the server but a shell for the scriptlets.
reqs=$(rpmq -qpR "$pkg" | grep -v '^rpmlib(' | sort -u)
[ "$reqs" = /bin/sh ] || fail "the package requires more than /bin/sh: $(echo $reqs)"
rpmq -qp --scripts "$pkg" > "$RT/scripts"
for s in postinstall preuninstall postuninstall; do
  grep -q "^$s scriptlet" "$RT/scripts" || fail "the package has no $s scriptlet"
done
# Its files are the .deb's: the same program, unit (the path aside), defaults, man page.
mkdir "$RT/rpmx" "$RT/debx"
(cd "$RT/rpmx" && rpm2cpio "$pkg" | cpio -idm --quiet) || fail "cannot unpack the .rpm"
dpkg-deb -x "$RT/dist"/mobility-agent_*.deb "$RT/debx" || fail "cannot unpack the .deb"
for f in usr/bin/mobility-agent etc/default/mobility-agent usr/share/man/man8/mobility-agent.8.gz; do
  cmp "$RT/rpmx/$f" "$RT/debx/$f" || fail "the .rpm's /$f differs from the .deb's"
done
for f in system/mobility-agent.service system/mobility-agent-resume.service system-shutdown/mobility-agent; do
  cmp "$RT/rpmx/usr/lib/systemd/$f" "$RT/debx/lib/systemd/$f" || fail "the .rpm's $f differs from the .deb's"
done
readelf -d "$RT/rpmx/usr/bin/mobility-agent" | grep -q NEEDED && fail "the packaged agent needs shared libraries"
readelf -l "$RT/rpmx/usr/bin/mobility-agent" | grep -q 'program interpreter' && fail "the packaged agent names a dynamic loader"

# ---- install into a root with nothing but busybox ----
root=$RT/root
mkdir -p "$root/bin" "$root/etc" "$root/dev" "$root/proc" "$root/sys"
cp "$busybox" "$root/bin/busybox"
chroot "$root" /bin/busybox --install -s /bin || fail "busybox --install in the root failed"
rootrpm() { rpmq --root "$root" --dbpath /var/lib/rpm "$@"; }
rootrpm --initdb || fail "rpm --initdb in the root failed"
rootrpm -i --nodeps "$pkg" > "$RT/install.log" 2>&1 || { cat "$RT/install.log" >&2; fail "rpm -i failed"; }
grep -i 'scriptlet' "$RT/install.log" && fail "a scriptlet failed on rpm -i (above)"
[ "$(rootrpm -q mobility-agent)" = "mobility-agent-$upstream-1.x86_64" ] || fail "rpm -q does not know the package"
while read -r f; do
  [ -e "$root$f" ] || fail "rpm -i did not install $f"
done < "$RT/files.want"
[ "$(stat -c '%U %a' "$root/var/lib/mobility-agent")" = "root 700" ] || fail "%post made no /var/lib/mobility-agent owned by root with mode 700"
# Nothing in the root could serve a dynamic program: no loader, no libc, no shared library.
libs=$(find "$root" \( -name '*.so' -o -name '*.so.*' -o -name 'ld-linux*' \) -print)
[ -z "$libs" ] || fail "the root has shared libraries: $libs"

inroot() { env -u MOBILITY_AGENT_BPF_PIN_DIR chroot "$root" /usr/bin/mobility-agent "$@"; }
out=$(inroot --version) || fail "the agent does not start in the root"
[ "$out" = "mobility-agent $upstream" ] || fail "--version in the root says '$out'"

# check: the readiness document of this root (it has no kernel: some checks fail, exit 1).
inroot check --json --state /var/lib/mobility-agent > "$RT/check.json" 2> "$RT/check.err"
[ $? -le 1 ] || { cat "$RT/check.err" >&2; fail "check in the root failed to run"; }
python3 - "$RT/check.json" <<'PY' || fail "check --json in the root printed no readiness document"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["checks"] and all(c["result"] in ("PASS", "WARN", "FAIL") for c in d["checks"]), d
PY

# ---- real work in the root: register by name, protect, checkpoint ----
mount -t proc proc "$root/proc" || fail "cannot mount proc in the root"
CLEANUP_MOUNTS+=("$root/proc")
mount -t sysfs sysfs "$root/sys" || fail "cannot mount sysfs in the root"
CLEANUP_MOUNTS+=("$root/sys")
# The root's own bpffs: the tracker pins in its default place, which the scriptlets know.
mount -t bpf bpf "$root/sys/fs/bpf" || fail "cannot mount a bpffs in the root"
CLEANUP_MOUNTS+=("$root/sys/fs/bpf")
mknod "$root/dev/null" c 1 3
rpl_loop dev 64M half
mknod "$root$dev" b $((0x$(stat -c %t "$dev"))) $((0x$(stat -c %T "$dev"))) || fail "mknod $dev in the root"

rpl_appliance_init
rpl_appliance_start
# The appliance's name is known only to the root's /etc/hosts: static glibc's built-in files lookup.
name=appliance.rpm-test.invalid
echo "127.0.0.1 $name" > "$root/etc/hosts"
echo "hosts: files dns" > "$root/etc/nsswitch.conf"
(umask 077 && printf '%s\n' "$RPL_KEY" > "$root/regkey")
inroot register --appliance "$name:$RPL_PORT" --key-file /regkey --state /var/lib/mobility-agent > "$RT/register.out" 2>&1 ||
  { cat "$RT/register.out" >&2; fail "register by name in the root failed"; }
grep -q "registered as agent .* with the appliance at $name:$RPL_PORT" "$RT/register.out" ||
  fail "register printed: $(cat "$RT/register.out")"

env -u MOBILITY_AGENT_BPF_PIN_DIR chroot "$root" /usr/bin/mobility-agent run --state /var/lib/mobility-agent >> "$RT/agent.log" 2>&1 &
ag_pid=$!
CLEANUP_PIDS+=("$ag_pid")
root_agent_up() {
  inroot status --state /var/lib/mobility-agent >/dev/null 2>&1 && return 0
  kill -0 "$ag_pid" 2>/dev/null || { cat "$RT/agent.log" >&2; fail "the agent in the root exited"; }
  return 1
}
wait_until -i 0.05 10 "the agent in the root did not come up" root_agent_up
inroot protect "$dev" --wait --state /var/lib/mobility-agent > "$RT/protect.out" 2>&1 ||
  { cat "$RT/protect.out" "$RT/agent.log" >&2; fail "protect in the root failed"; }
[ -d "$root/sys/fs/bpf/mobility-agent" ] || fail "the tracker is not pinned in the root's /sys/fs/bpf/mobility-agent"
disk_id=$(inroot status --state /var/lib/mobility-agent --json | json_field - "disks.[device=$dev].disk_id")
[ -n "$disk_id" ] || fail "no disk id for $dev in the root's status"
# point N: a checkpoint from the root, restored on the appliance, equal to the disk.
point_equals_disk() {
  local p
  p=$(inroot checkpoint "$dev" --wait --state /var/lib/mobility-agent | tail -n 1) || fail "checkpoint $1 in the root failed"
  [[ $p == rp-* ]] || fail "checkpoint $1's last line is not a point id: $p"
  rm -f "$RT/restored"
  "$AP" restore --state "$RT/app" --disk "$disk_id" --point "$p" --out "$RT/restored" > "$RT/restore.out" ||
    fail "restore of $p failed"
  cmp "$RT/restored" "$dev" || fail "the restore of $p differs from the disk"
  rm -f "$RT/restored"
}
point_equals_disk 1
# Writes the tracker in the root must see: the second point carries them.
dd if=/dev/urandom of="$dev" bs=4k count=64 seek=9000 oflag=direct status=none || fail "writing to $dev failed"
point_equals_disk 2
kill -TERM "$ag_pid"
wait "$ag_pid" 2>/dev/null

# ---- reinstall (the upgrade path): state, pins and the administrator's settings stay ----
echo '# changed by the administrator' >> "$root/etc/default/mobility-agent"
rootrpm -U --replacepkgs --nodeps "$pkg" > "$RT/upgrade.log" 2>&1 || { cat "$RT/upgrade.log" >&2; fail "rpm -U failed"; }
grep -i 'scriptlet' "$RT/upgrade.log" && fail "a scriptlet failed on rpm -U (above)"
[ -f "$root/var/lib/mobility-agent/agent.conf" ] || fail "reinstalling deleted the agent's state"
[ -d "$root/sys/fs/bpf/mobility-agent" ] || fail "reinstalling deleted the tracker's pins"
grep -q '^# changed by the administrator' "$root/etc/default/mobility-agent" || fail "reinstalling replaced the changed /etc/default/mobility-agent"

# ---- rpm -e: as the .deb's purge ----
rootrpm -e mobility-agent > "$RT/erase.log" 2>&1 || { cat "$RT/erase.log" >&2; fail "rpm -e failed"; }
grep -i 'scriptlet' "$RT/erase.log" && fail "a scriptlet failed on rpm -e (above)"
rootrpm -q mobility-agent >/dev/null 2>&1 && fail "rpm -q still knows the package after rpm -e"
while read -r f; do
  [ ! -e "$root$f" ] || fail "rpm -e left $f"
done < "$RT/files.want"
[ ! -e "$root/var/lib/mobility-agent" ] || fail "rpm -e left the state /var/lib/mobility-agent"
[ ! -e "$root/sys/fs/bpf/mobility-agent" ] || fail "rpm -e left the tracker's pins /sys/fs/bpf/mobility-agent"
grep -q '^# changed by the administrator' "$root/etc/default/mobility-agent.rpmsave" 2>/dev/null ||
  fail "rpm -e did not keep the changed settings as /etc/default/mobility-agent.rpmsave"
echo "rpm_package: ok (${rpms[0]}; the static agent registered by name, protected $dev and restored 2 points in a root with no shared library)"
