#!/usr/bin/env bash
# package.sh - builds the release tree and, from it, the Debian packages mobility-agent and replication-appliance and the agent's .rpm into dist/, with dist/SHA256SUMS.
#   bash scripts/package.sh                               build/ (scripts/build.sh release), then dist/
#   bash scripts/package.sh --build-dir DIR --out DIR --no-build   package an already built tree (the test does)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$root/build
out=$root/dist
do_build=1

die() { printf 'package: error: %s\n' "$*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case "$1" in
    --build-dir) [ $# -ge 2 ] || die "--build-dir needs a directory"; build=$2; shift 2 ;;
    --out)       [ $# -ge 2 ] || die "--out needs a directory"; out=$2; shift 2 ;;
    --no-build)  do_build=0; shift ;;
    -h|--help)   sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

command -v cpack >/dev/null || die "cpack is missing (cmake package; scripts/setup.sh)"
command -v dpkg-shlibdeps >/dev/null || die "dpkg-shlibdeps is missing (dpkg-dev package; scripts/setup.sh)"
command -v rpmbuild >/dev/null || die "rpmbuild is missing (rpm package; scripts/setup.sh)"
[ $do_build = 0 ] || [ "$build" = "$root/build" ] || die "--build-dir needs --no-build (scripts/build.sh builds build/)"
if grep -qs '^RPL_SANITIZE:BOOL=ON' "$build/CMakeCache.txt"; then
  die "$build is a sanitizer build: packages are made from the release build"
fi
# Paths compiled in from GNUInstallDirs (data, configuration) must be the packages' own: prefix /usr.
prefix=$(sed -n 's/^CMAKE_INSTALL_PREFIX:PATH=//p' "$build/CMakeCache.txt" 2>/dev/null || true)
if [ -f "$build/CMakeCache.txt" ] && [ "$prefix" != /usr ]; then
  echo "package: $build was configured to install into '$prefix'; reconfiguring it for /usr"
  cmake -S "$root" -B "$build" -DCMAKE_INSTALL_PREFIX=/usr >/dev/null
fi
if [ $do_build = 1 ]; then
  bash "$root/scripts/build.sh" release
fi
[ -f "$build/CPackConfig.cmake" ] || die "$build is not a configured build tree (run scripts/build.sh release)"

# CPack stages and writes into a scratch directory; dist/ only ever holds a complete, checked set.
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
(cd "$build" && cpack -G DEB -B "$stage" >"$stage/cpack.log" 2>&1) || { cat "$stage/cpack.log" >&2; die "cpack failed"; }
mapfile -t debs < <(cd "$stage" && ls -- *.deb 2>/dev/null | sort)
names=$(for d in "${debs[@]}"; do dpkg-deb -f "$stage/$d" Package; done | sort | tr '\n' ' ')
# A third package means an install() rule named a component of its own: give it to one of ours.
[ "$names" = "mobility-agent replication-appliance " ] ||
  die "expected the packages mobility-agent and replication-appliance, CPack made: ${names:-none}"

# The agent's .rpm: its staged install (stripped, as CPack strips the .debs'), with the unit where
# RPM distributions keep units (/usr/lib/systemd/system: /lib is not /usr/lib on SLES 15) and
# without Debian's changelog and lintian overrides; rpmbuild packs it by
# packaging/rpm/mobility-agent.spec.in.
# Only a static agent runs on RPM distributions: a tree configured with RPL_STATIC_AGENT=OFF makes none.
rpms=()
if grep -qs '^RPL_STATIC_AGENT:BOOL=ON' "$build/CMakeCache.txt"; then
  rroot=$stage/rpm-root
  DESTDIR=$rroot cmake --install "$build" --component agent --strip >"$stage/install.log" 2>&1 ||
    { cat "$stage/install.log" >&2; die "staging the agent's files failed"; }
  mkdir -p "$rroot/usr/lib/systemd/system"
  mv "$rroot/lib/systemd/system/mobility-agent.service" "$rroot/lib/systemd/system/mobility-agent-resume.service" \
    "$rroot/usr/lib/systemd/system/"
  mkdir -p "$rroot/usr/lib/systemd/system-shutdown"
  mv "$rroot/lib/systemd/system-shutdown/mobility-agent" "$rroot/usr/lib/systemd/system-shutdown/"
  rm -r "$rroot/lib"
  rm "$rroot/usr/share/doc/mobility-agent/changelog.Debian.gz"
  rm -rf "$rroot/usr/share/lintian"
  rpmbuild -bb --target x86_64 --define "_topdir $stage/rpmbuild" --define "_rpmdir $stage" \
    --define "_build_name_fmt %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm" --define "rpl_stage $rroot" \
    "$build/packaging/mobility-agent/mobility-agent.spec" >"$stage/rpmbuild.log" 2>&1 ||
    { cat "$stage/rpmbuild.log" >&2; die "rpmbuild failed"; }
  mapfile -t rpms < <(cd "$stage" && ls -- *.rpm 2>/dev/null)
  [ "${#rpms[@]}" = 1 ] && [[ ${rpms[0]} == mobility-agent-*.x86_64.rpm ]] ||
    die "expected one mobility-agent .rpm, rpmbuild made: ${rpms[*]:-none}"
else
  echo "package: no .rpm: $build links the agent dynamically (RPL_STATIC_AGENT=OFF), against Debian 12's libraries"
fi

mkdir -p "$out"
rm -f "$out"/*.deb "$out"/*.rpm "$out/SHA256SUMS"
for d in "${debs[@]}" "${rpms[@]}"; do
  cp -- "$stage/$d" "$out/$d"
done
(cd "$out" && sha256sum -- "${debs[@]}" "${rpms[@]}" > SHA256SUMS)
(cd "$out" && sha256sum --quiet -c SHA256SUMS) || die "the copies in $out do not match their checksums"
echo "package: $out"
(cd "$out" && ls -l -- "${debs[@]}" "${rpms[@]}" SHA256SUMS | sed 's/^/  /')
