#!/usr/bin/env bash
# deb_packages.sh - Description: the Debian packages made by scripts/package.sh from this build tree
# verify against SHA256SUMS (a damaged copy does not), carry conffiles and shlibs Depends (the
# static agent none: no NEEDED, no loader), install with dpkg -i (units valid for systemd-analyze
# verify and not enabled, --version from /usr/bin, man pages that document every command and
# option the programs have, the appliance's system user owns its state), and leave nothing behind:
# dpkg -r keeps only configuration and state, dpkg -P removes those too, also the links of units
# the administrator enabled. Installs into /usr: runs serially, checks that no other test or
# benchmark runs a program by bare name, skips (77) when either package or its paths already exist
# on this machine, and its cleanup purges only what it installed.
set -u
b=${RPL_BUILD_DIR:?run under ctest}
src=${RPL_SOURCE_DIR:?}
PKGS=(mobility-agent replication-appliance)
USER_NAME=replication-appliance
# dpkg waits for other apt/dpkg runs on this shared machine until this deadline (CTest TIMEOUT is
# 1500 s; the cleanup gets 240 s more of its own).
DPKG_DEADLINE=$((SECONDS + 1200))

skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || skip "needs root (dpkg -i)"
for c in dpkg dpkg-deb dpkg-query sha256sum cpack dpkg-shlibdeps rpmbuild readelf file systemd-analyze man; do
  command -v "$c" >/dev/null || skip "$c is missing"
done

# While the packages are installed, /usr/bin has both programs: every other test and benchmark must
# run the build tree's (by path, $B/agent/mobility-agent), never a bare name found through PATH.
bare=$(grep -nE '^[^#]*(^\s*|[;&|(`]\s*|\$\(\s*|(then|do|&&|\|\|)\s+)(mobility-agent|replication-appliance)(\s|$)' \
         "$src"/tests/integration/*.sh "$src"/tests/integration/lib/*.sh "$src"/bench/*.sh "$src"/scripts/*.sh |
       grep -v '/deb_packages\.sh:')
[ -z "$bare" ] || fail "these lines run a program by bare name (PATH would find /usr/bin's): $bare"

# Never touch what someone else installed or created: the packages (in any state, also
# config-files) and every path they or their scripts own.
for p in "${PKGS[@]}"; do
  st=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null) || st=""
  [ -z "$st" ] || [ "${st:0:2}" = "un" ] || skip "package $p is already on this machine ($st)"
  for f in /usr/bin/$p /etc/default/$p /lib/systemd/system/$p.service /usr/lib/systemd/system/$p.service \
           /var/lib/$p /usr/share/doc/$p /usr/share/man/man8/$p.8.gz /etc/systemd/system/$p.service \
           /var/lib/systemd/deb-systemd-helper-enabled/$p.service.dsh-also \
           /var/lib/systemd/deb-systemd-helper-masked/$p.service; do
    [ ! -e "$f" ] && [ ! -L "$f" ] || skip "$f exists: $p is installed by someone else"
  done
done
[ ! -e /sys/fs/bpf/mobility-agent ] || skip "/sys/fs/bpf/mobility-agent exists: a tracker is in use on this machine"
user_existed=0
getent passwd "$USER_NAME" >/dev/null && user_existed=1
group_existed=0
getent group "$USER_NAME" >/dev/null && group_existed=1

t=$(mktemp -d)
installed=0
# dpkg ARGS...: dpkg, waiting (until DPKG_DEADLINE) while another apt/dpkg run holds its lock.
dpkg_locked() {
  local out rc
  while :; do
    out=$(dpkg "$@" 2>&1); rc=$?
    if [ $rc -ne 0 ] && grep -q "lock" <<<"$out" && grep -qi "locked by another process\|could not get lock\|unable to acquire" <<<"$out"; then
      [ $SECONDS -lt $DPKG_DEADLINE ] || { echo "$out" >&2; return $rc; }
      sleep 2
      continue
    fi
    [ -z "$out" ] || echo "$out"
    return $rc
  done
}
cleanup() {
  trap - TERM INT HUP
  DPKG_DEADLINE=$((SECONDS + 240))
  if [ $installed = 1 ]; then
    for p in "${PKGS[@]}"; do
      st=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null) || st=""
      [ -z "$st" ] || [ "${st:0:2}" = "un" ] || dpkg_locked --purge "$p" >/dev/null ||
        echo "cleanup: could not purge $p: run 'dpkg --purge $p'" >&2
    done
  fi
  # The package keeps its system user on purge (Debian practice); the test removes the one it made.
  if [ $user_existed = 0 ] && getent passwd "$USER_NAME" >/dev/null; then
    userdel "$USER_NAME" 2>/dev/null || echo "cleanup: could not delete the user $USER_NAME" >&2
  fi
  if [ $group_existed = 0 ] && getent group "$USER_NAME" >/dev/null; then
    groupdel "$USER_NAME" 2>/dev/null || echo "cleanup: could not delete the group $USER_NAME" >&2
  fi
  rm -rf "$t"
}
trap cleanup EXIT
trap 'echo "FAIL: interrupted" >&2; exit 1' TERM INT HUP

# ---- build and verify the download set ----
bash "$src/scripts/package.sh" --no-build --build-dir "$b" --out "$t/dist" > "$t/package.log" 2>&1 ||
  { cat "$t/package.log" >&2; fail "scripts/package.sh failed"; }
cd "$t/dist" || fail "no dist directory"
ls -- *.deb > "$t/debs" 2>/dev/null
[ "$(wc -l < "$t/debs")" -eq 2 ] || fail "expected 2 packages in dist/, found: $(tr '\n' ' ' < "$t/debs")"
# (and the agent's .rpm, made of a static agent only: tests/integration/rpm_package.sh checks it)
static_agent=0
grep -qs '^RPL_STATIC_AGENT:BOOL=ON' "$b/CMakeCache.txt" && static_agent=1
[ "$(wc -l < SHA256SUMS)" -eq $((2 + static_agent)) ] || fail "SHA256SUMS does not list exactly the 2 .debs (and the .rpm of a static agent)"
sha256sum -c SHA256SUMS > "$t/sums.out" 2>&1 || { cat "$t/sums.out" >&2; fail "sha256sum -c SHA256SUMS failed"; }
# The check is real: a copy with one byte changed fails it.
mkdir "$t/bad" && cp -- *.deb $(ls -- *.rpm 2>/dev/null) SHA256SUMS "$t/bad/"
d1=$(head -1 "$t/debs")
byte=$(od -An -tu1 -j4000 -N1 "$t/bad/$d1" | tr -d ' ')
printf "\\$(printf '%03o' $((byte ^ 1)))" | dd of="$t/bad/$d1" bs=1 seek=4000 conv=notrunc status=none
cmp -s "$d1" "$t/bad/$d1" && fail "could not damage the copy of $d1"
(cd "$t/bad" && sha256sum -c SHA256SUMS >/dev/null 2>&1) && fail "sha256sum -c accepted a damaged $d1"
rm -rf "$t/bad"

deb() { echo "$t/dist/$(grep "^$1_" "$t/debs")"; }
version=$(dpkg-deb -f "$(deb mobility-agent)" Version)
upstream=${version%-*}
for p in "${PKGS[@]}"; do
  f=$(deb "$p")
  [ -f "$f" ] || fail "no $p package in dist/"
  [ "$(dpkg-deb -f "$f" Version)" = "$version" ] || fail "the packages' versions differ"
  deps=$(dpkg-deb -f "$f" Depends)
  if [ "$p" = mobility-agent ] && [ $static_agent = 1 ]; then
    [[ $deps != *lib* ]] || fail "the static mobility-agent depends on shared libraries: $deps"
  else
    [[ $deps == *"libc6 (>="* && $deps == *"libzstd1 (>="* && $deps == *"libssl3 (>="* ]] ||
      fail "$p: Depends lacks the shared libraries (dpkg-shlibdeps): $deps"
  fi
  dpkg-deb --ctrl-tarfile "$f" | tar -xOf - ./conffiles 2>/dev/null | grep -qx "/etc/default/$p" ||
    fail "$p: /etc/default/$p is not a conffile"
done
if [ $static_agent = 0 ]; then
  [[ $(dpkg-deb -f "$(deb mobility-agent)" Depends) == *libbpf1* ]] || fail "mobility-agent does not depend on libbpf1"
fi
[[ $(dpkg-deb -f "$(deb replication-appliance)" Depends) == *libcurl4* ]] || fail "replication-appliance does not depend on libcurl4"
[[ $(dpkg-deb -f "$(deb replication-appliance)" Depends) == *adduser* ]] || fail "replication-appliance does not depend on adduser (its postinst adds a user)"

# ---- lintian, when installed: its findings are printed; errors fail ----
if command -v lintian >/dev/null; then
  lintian --display-info --tag-display-limit 0 "$(deb mobility-agent)" "$(deb replication-appliance)" > "$t/lintian" 2>&1
  echo "lintian findings:"; sed 's/^/  /' "$t/lintian"
  grep -q '^E: ' "$t/lintian" && fail "lintian reports errors (above)"
else
  echo "lintian is not installed: skipped"
fi

# ---- install ----
installed=1
dpkg_locked -i "$(deb mobility-agent)" "$(deb replication-appliance)" > "$t/install.log" ||
  { cat "$t/install.log" >&2; fail "dpkg -i failed"; }
for p in "${PKGS[@]}"; do
  [ "$(dpkg-query -W -f='${db:Status-Abbrev}' "$p")" = "ii " ] || fail "$p is not installed after dpkg -i"
  dpkg -L "$p" > "$t/files.$p" || fail "dpkg -L $p"
  dpkg-query -W -f='${Conffiles}\n' "$p" | awk 'NF {print $1}' > "$t/conffiles.$p"
  grep -qx "/usr/bin/$p" "$t/files.$p" || fail "$p does not ship /usr/bin/$p"
done

# The packaged agent names no shared library and no dynamic loader (readelf -d, -l).
if [ $static_agent = 1 ]; then
  readelf -d /usr/bin/mobility-agent | grep -q NEEDED && fail "/usr/bin/mobility-agent needs shared libraries"
  readelf -l /usr/bin/mobility-agent | grep -q 'program interpreter' && fail "/usr/bin/mobility-agent names a dynamic loader"
  file -L /usr/bin/mobility-agent | grep -q 'static-pie linked' || fail "/usr/bin/mobility-agent is not static-pie: $(file -L /usr/bin/mobility-agent)"
fi
# The programs, from /usr/bin, say the packages' version.
for p in "${PKGS[@]}"; do
  out=$(/usr/bin/$p --version) || fail "/usr/bin/$p --version failed"
  [ "$out" = "$p $upstream" ] || fail "/usr/bin/$p --version says '$out', the package is $version"
done

# Units: present, valid, not enabled (the package starts nothing by itself).
for p in "${PKGS[@]}"; do
  unit=$(grep -E "^(/usr)?/lib/systemd/system/$p\.service$" "$t/files.$p") || fail "$p ships no systemd unit"
  out=$(systemd-analyze verify "$unit" 2>&1) || fail "systemd-analyze verify $unit: $out"
  [ -z "$out" ] || fail "systemd-analyze verify $unit warns: $out"
  if [ "$p" = mobility-agent ]; then # tracking kept across a clean reboot: the early unit and the hook
    resume=$(grep -E "^(/usr)?/lib/systemd/system/mobility-agent-resume\.service$" "$t/files.$p") ||
      fail "mobility-agent ships no resume unit"
    out=$(systemd-analyze verify "$resume" 2>&1) || fail "systemd-analyze verify $resume: $out"
    [ -z "$out" ] || fail "systemd-analyze verify $resume warns: $out"
    hook=$(grep -E "^(/usr)?/lib/systemd/system-shutdown/mobility-agent$" "$t/files.$p") ||
      fail "mobility-agent ships no shutdown hook"
    [ -x "$hook" ] || fail "the shutdown hook $hook is not executable"
  fi
  grep -q "^EnvironmentFile=-/etc/default/$p$" "$unit" || fail "$unit does not read /etc/default/$p"
  ls /etc/systemd/system/*.wants/"$p.service" >/dev/null 2>&1 && fail "installing $p enabled its unit"
done
grep -qx "User=$USER_NAME" /lib/systemd/system/replication-appliance.service ||
  fail "replication-appliance.service does not run as $USER_NAME"

# Man pages: installed, render without warnings, document every command and option of --help.
opts() { grep -o -- '--[a-z][a-z-]*' | sort -u; }
manpage_text() { zcat "$1" | sed 's/\\-/-/g; s/\\f[BIRP]//g'; }
/usr/bin/mobility-agent --help > "$t/help.mobility-agent"
/usr/bin/mobility-agent cbt --help >> "$t/help.mobility-agent"
/usr/bin/replication-appliance --help > "$t/help.replication-appliance"
/usr/bin/replication-appliance init --help >> "$t/help.replication-appliance"
/usr/bin/replication-appliance check --help >> "$t/help.replication-appliance"
for p in "${PKGS[@]}"; do
  page=$(man -w 8 "$p" 2>/dev/null) || page=/usr/share/man/man8/$p.8.gz
  [ "$page" = "/usr/share/man/man8/$p.8.gz" ] && [ -f "$page" ] || fail "man 8 $p: no page (found '$page')"
  warn=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -E UTF-8 -l "$page" 2>&1 >/dev/null)
  [ -z "$warn" ] || fail "$p(8) renders with warnings: $warn"
  manpage_text "$page" > "$t/man.$p"
  for o in $(opts < "$t/help.$p"); do
    grep -qF -- "$o" "$t/man.$p" || fail "$p(8) does not document $o (from $p --help)"
  done
  # Each command has an entry (a tag line starting with its name), each 'cbt' subcommand too.
  for c in $(sed -n 's/^  \([a-z]\+\) .*/\1/p' "$t/help.$p") \
           $(grep -o 'mobility-agent cbt [a-z]*' "$t/help.$p" | sed 's/mobility-agent //; s/ /_/'); do
    grep -q "^\.BI\? \"\?${c/_/ }\b" "$t/man.$p" || fail "$p(8) has no entry for the command '${c/_/ }'"
  done
done

# The appliance's system user, and its state directory: init works as that user.
getent passwd "$USER_NAME" | grep -q ':/usr/sbin/nologin$' || fail "no system user $USER_NAME with no login shell"
[ "$(stat -c '%U %a' /var/lib/replication-appliance)" = "$USER_NAME 700" ] ||
  fail "/var/lib/replication-appliance is not owned by $USER_NAME with mode 700: $(stat -c '%U %a' /var/lib/replication-appliance)"
[ "$(stat -c '%U %a' /var/lib/mobility-agent)" = "root 700" ] || fail "/var/lib/mobility-agent is not root's with mode 700"
chmod 0755 "$t"
install -d -o "$USER_NAME" -g "$USER_NAME" "$t/replicas"
runuser -u "$USER_NAME" -- /usr/bin/replication-appliance init --state /var/lib/replication-appliance \
  --storage "file:$t/replicas" > "$t/init.out" 2>&1 || { cat "$t/init.out" >&2; fail "init as $USER_NAME failed"; }
[ -f /var/lib/replication-appliance/appliance.conf ] || fail "init wrote no settings"
out=$(/usr/bin/replication-appliance status --state /var/lib/replication-appliance 2>&1) && fail "status without a daemon succeeded"
[[ $out == *"not running"* ]] || fail "status without a daemon: unclear message: $out"
out=$(/usr/bin/mobility-agent status 2>&1) && fail "mobility-agent status without a daemon succeeded"
[[ $out == *"not running"* ]] || fail "mobility-agent status without a daemon: unclear message: $out"

# The administrator enables both units ('systemctl enable' edits links, no running systemd needed);
# reinstalling the agent (the upgrade path of postinst) keeps that choice; purge must remove the
# links of both, also of the one the packages' scripts never saw enabled.
for p in "${PKGS[@]}"; do
  systemctl enable "$p.service" >/dev/null 2>&1 || fail "systemctl enable $p.service failed"
  [ -L "/etc/systemd/system/multi-user.target.wants/$p.service" ] || fail "enabling $p.service made no link"
done
dpkg_locked -i "$(deb mobility-agent)" > "$t/reinstall.log" || { cat "$t/reinstall.log" >&2; fail "reinstalling mobility-agent failed"; }
[ -L /etc/systemd/system/multi-user.target.wants/mobility-agent.service ] || fail "reinstalling mobility-agent disabled its unit"

# ---- dpkg -r: programs gone; configuration and state stay ----
# ours PACKAGE: the paths of its list that are its own (files, and directories named after it).
ours() { while read -r f; do [ -d "$f" ] && [[ $f != *"$1"* ]] && continue; echo "$f"; done < "$t/files.$1"; }
dpkg_locked -r "${PKGS[@]}" > "$t/remove.log" || { cat "$t/remove.log" >&2; fail "dpkg -r failed"; }
for p in "${PKGS[@]}"; do
  [ "$(dpkg-query -W -f='${db:Status-Abbrev}' "$p")" = "rc " ] || fail "$p is not in state config-files after dpkg -r"
  while read -r f; do
    if grep -qx -- "$f" "$t/conffiles.$p"; then
      [ -e "$f" ] || fail "dpkg -r removed the conffile $f"
    elif [ -e "$f" ] || [ -L "$f" ]; then
      fail "dpkg -r left $f"
    fi
  done < <(ours "$p")
  [ -d "/var/lib/$p" ] || fail "dpkg -r deleted the state /var/lib/$p (only purge may)"
done
[ -f /var/lib/replication-appliance/appliance.conf ] || fail "dpkg -r deleted the appliance's settings"

# ---- dpkg -P: nothing left ----
dpkg_locked -P "${PKGS[@]}" > "$t/purge.log" || { cat "$t/purge.log" >&2; fail "dpkg -P failed"; }
for p in "${PKGS[@]}"; do
  st=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null) || st=""
  [ -z "$st" ] || [ "${st:0:2}" = "un" ] || fail "$p is still known to dpkg after purge: $st"
  while read -r f; do
    [ ! -e "$f" ] && [ ! -L "$f" ] || fail "dpkg -P left $f (from dpkg -L $p)"
  done < <(ours "$p")
  for f in /var/lib/$p /etc/default/$p /etc/systemd/system/$p.service \
           /var/lib/systemd/deb-systemd-helper-enabled/$p.service.dsh-also \
           /var/lib/systemd/deb-systemd-helper-masked/$p.service; do
    [ ! -e "$f" ] && [ ! -L "$f" ] || fail "dpkg -P left $f"
  done
  left=$(find /etc/systemd/system /var/lib/systemd/deb-systemd-helper-enabled -name "$p.service*" 2>/dev/null)
  [ -z "$left" ] || fail "dpkg -P left unit links: $left"
done
[ ! -e /sys/fs/bpf/mobility-agent ] || fail "dpkg -P left /sys/fs/bpf/mobility-agent"
installed=0
echo "deb_packages: ok ($version; $(cd "$t/dist" && sha256sum -c SHA256SUMS 2>&1 | tr '\n' ' '))"
