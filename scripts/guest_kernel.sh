#!/usr/bin/env bash
# guest_kernel.sh - fetches Debian 11's newest 5.10 kernel (vmlinuz and modules, not installed) into
# a cache for the qemu guest tests (QG_KERNEL_SERIES=5.10).
set -euo pipefail

# The cache tests/integration/lib/qemu_guest.sh reads: DIR/boot/vmlinuz-VERSION,
# DIR/lib/modules/VERSION (depmod'ed) and DIR/PACKAGE (package, version and SHA256 of the .deb),
# written last: a DIR with all three is complete and left as it is (no network then).
DIR=/var/cache/replication-tests/kernel-5.10
SUITE=bullseye
# The unsigned image: the signed one (linux-image-5.10.0-N-amd64) only wraps a signed copy of the
# same vmlinuz; -dbg, -rt and -cloud are other packages (and the last two other configurations).
PATTERN='^linux-image-5\.10\.0-[0-9]+-amd64-unsigned$'
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

say() { printf 'guest_kernel: %s\n' "$*"; }
die() { printf 'guest_kernel: error: %s\n' "$*" >&2; exit 1; }

complete() { # complete: DIR has a kernel, its modules' index and the package note
  local ver
  [ -s "$DIR/PACKAGE" ] || return 1
  ver=$(ls "$DIR/lib/modules" 2>/dev/null | head -1)
  [ -n "$ver" ] && [ -s "$DIR/boot/vmlinuz-$ver" ] && [ -s "$DIR/lib/modules/$ver/modules.dep" ] || return 1
  VERSION=$ver
}
done_say() {
  say "$(cat "$DIR/PACKAGE")"
  say "kernel $DIR/boot/vmlinuz-$VERSION, modules $DIR/lib/modules/$VERSION ($VERSION)"
}

[ "$(id -u)" -eq 0 ] || die "run as root (it writes $DIR)"
if complete; then
  done_say
  exit 0
fi
for tool in curl xz gpgv dpkg-deb depmod sha256sum flock; do
  command -v "$tool" >/dev/null || die "$tool missing (scripts/setup.sh installs what it needs)"
done
[ -r "$KEYRING" ] || die "$KEYRING missing (install debian-archive-keyring)"

parent=$(dirname "$DIR")
mkdir -p "$parent"
# One fetch at a time (two set-ups at once): the second finds the first's DIR complete.
exec 9>"$parent/.$(basename "$DIR").lock"
flock 9
if complete; then
  done_say
  exit 0
fi

# The Debian archive apt on this machine uses (GUEST_KERNEL_MIRROR overrides it).
mirror=${GUEST_KERNEL_MIRROR:-$(apt-get indextargets --no-release-info --format '$(REPO_URI)' 2>/dev/null |
  grep -E '/debian/?$' | head -1 || true)}
[ -n "$mirror" ] || die "no Debian archive in apt's sources: set GUEST_KERNEL_MIRROR to one (http://HOST/debian)"
mirror=${mirror%/}

work=$(mktemp -d "$parent/.$(basename "$DIR").XXXXXX")
trap 'rm -rf "$work"' EXIT

fetch() { # fetch URL FILE
  curl -fsS --retry 3 --connect-timeout 20 -o "$2" "$1" || die "cannot download $1"
}

# The suite's InRelease, signed by Debian's archive keys, vouches for Packages.xz's SHA256, which
# vouches for the .deb's.
say "reading $mirror/dists/$SUITE"
fetch "$mirror/dists/$SUITE/InRelease" "$work/InRelease"
gpgv --quiet --keyring "$KEYRING" --output "$work/Release" "$work/InRelease" 2>"$work/gpgv.err" ||
  { cat "$work/gpgv.err" >&2; die "$SUITE's InRelease: bad or unknown signature"; }
want=$(awk '/^SHA256:/ {s=1; next} /^[^ ]/ {s=0} s && $3 == "main/binary-amd64/Packages.xz" {print $1, $2}' "$work/Release")
[ -n "$want" ] || die "$SUITE's Release lists no main/binary-amd64/Packages.xz"
fetch "$mirror/dists/$SUITE/main/binary-amd64/Packages.xz" "$work/Packages.xz"
[ "$(sha256sum <"$work/Packages.xz" | cut -d' ' -f1) $(stat -c %s "$work/Packages.xz")" = "$want" ] ||
  die "Packages.xz does not match $SUITE's Release (SHA256, size)"

# The newest package matching PATTERN: its stanza's Package, Version, Filename, Size and SHA256.
read -r pkg version filename size sha < <(xz -dc "$work/Packages.xz" | awk -v pat="$PATTERN" '
  /^Package: / {p = $2} /^Version: / {v = $2} /^Filename: / {f = $2} /^Size: / {z = $2} /^SHA256: / {h = $2}
  /^$/ { if (p ~ pat) print p, v, f, z, h; p = "" }
  END { if (p ~ pat) print p, v, f, z, h }' | sort -V -k1,1 -k2,2 | tail -1) ||
  die "no package matching $PATTERN in $SUITE"
[ -n "${sha:-}" ] || die "$pkg's entry in Packages.xz has no SHA256"
VERSION=${pkg#linux-image-}
VERSION=${VERSION%-unsigned}

say "downloading $pkg $version ($((size / 1048576)) MiB)"
fetch "$mirror/$filename" "$work/kernel.deb"
[ "$(sha256sum <"$work/kernel.deb" | cut -d' ' -f1) $(stat -c %s "$work/kernel.deb")" = "$sha $size" ] ||
  die "$filename does not match Packages.xz (SHA256, size)"

# Unpacked, not installed: dpkg and /boot, /lib/modules of this machine stay as they were.
dpkg-deb -x "$work/kernel.deb" "$work/tree"
[ -s "$work/tree/boot/vmlinuz-$VERSION" ] || die "$pkg has no boot/vmlinuz-$VERSION"
[ -d "$work/tree/lib/modules/$VERSION" ] || die "$pkg has no lib/modules/$VERSION"
# modules.dep etc. inside the tree, for modprobe -d TREE -S VERSION.
depmod -b "$work/tree" "$VERSION"
echo "$pkg $version sha256:$sha" >"$work/tree/PACKAGE"

# Into place in one rename (same filesystem); an incomplete DIR (a hand-made or damaged one) goes first.
rm -rf "$DIR"
mv -T "$work/tree" "$DIR"
complete || die "$DIR incomplete after the rename"
done_say
