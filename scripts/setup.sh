#!/usr/bin/env bash
# setup.sh - installs what building, testing and the demo need on Debian 12 (as root); idempotent.
# Debian packages come from apt; Azurite (pinned) goes into tools/azurite inside the project tree.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
AZURITE_VERSION=3.35.0
# The benchmark's peer; 12.29.1 speaks REST version 2025-11-05, the newest Azurite 3.35.0 accepts.
AZURE_SDK_VERSION=12.29.1
# Drives Debian's chromium headless in the configuration manager's browser test (needs Node >= 20).
PLAYWRIGHT_VERSION=1.65.1

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (apt-get install, loop devices and eBPF need it)"
[ -r /etc/debian_version ] || die "this script supports Debian 12; install the packages listed in README.md by hand"

# Debian packages: build tools, the libraries of docs/architecture.md, and the tools tests and benchmarks drive.
packages=(
  build-essential cmake pkg-config clang llvm libclang-rt-14-dev bpftool
  liburing-dev libzstd-dev libssl-dev libcurl4-openssl-dev uuid-dev libbpf-dev libxxhash-dev
  libexpat1-dev libsqlite3-dev libcmocka-dev libmicrohttpd-dev
  openssl ca-certificates nodejs npm util-linux e2fsprogs fio zstd socat iproute2 tinyproxy rsync linux-perf
  curl python3 python3-prometheus-client
  # the configuration manager's browser test (tests/integration/web_ui.sh)
  chromium
  # change-block tracker tests: partition tables, and the portability test that boots Debian's
  # 6.1 kernel under qemu (TCG) from a busybox initramfs (with a device-mapper disk: dmsetup)
  fdisk cpio qemu-system-x86 busybox-static linux-image-amd64 dmsetup
  # scripts/guest_kernel.sh: Debian 11's 5.10 kernel for the same test, checked against the archive's
  # signature
  xz-utils gpgv debian-archive-keyring kmod
  # qemu-img judges the VHDs failover makes and the replica blobs (tests/integration/failover.sh)
  qemu-utils
  # recovery points of a filesystem on an LVM volume in that guest (tests/integration/point_qemu_dm.sh)
  lvm2
  # file: storage on XFS, where a recovery point's image is a reflink (tests/integration/file_reflink.sh)
  xfsprogs
  # the Debian packages (scripts/package.sh, tests/integration/deb_packages.sh): dpkg-shlibdeps, lintian
  dpkg-dev lintian rpm
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# A machine whose node/npm come from elsewhere (e.g. NodeSource) must not get Debian's on top.
if command -v node >/dev/null && command -v npm >/dev/null; then
  missing=($(printf '%s\n' "${missing[@]}" | grep -vxE 'nodejs|npm' || true))
fi
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Another apt-get (unattended upgrades, a parallel set-up) may hold the dpkg lock: wait for it.
  apt_wait=(-o DPkg::Lock::Timeout=900)
  apt-get "${apt_wait[@]}" update -q >/dev/null || die "apt-get update failed: check the network and /etc/apt/sources.list"
  apt-get "${apt_wait[@]}" install -y -q --no-install-recommends "${missing[@]}" \
    || die "apt-get install failed for: ${missing[*]}"
else
  say "Debian packages: all present"
fi

# Azurite, pinned, inside the project tree (later versions need a newer Node than Debian's).
azdir=$root/tools/azurite
if [ -x "$azdir/node_modules/.bin/azurite-blob" ] &&
   grep -q "\"version\": \"$AZURITE_VERSION\"" "$azdir/node_modules/azurite/package.json" 2>/dev/null; then
  say "Azurite $AZURITE_VERSION: present in tools/azurite"
else
  say "installing Azurite $AZURITE_VERSION into tools/azurite (npm)"
  mkdir -p "$azdir"
  (cd "$azdir" && npm install --no-audit --no-fund --loglevel=error --prefix "$azdir" "azurite@$AZURITE_VERSION" >/dev/null) \
    || die "npm install azurite@$AZURITE_VERSION failed: check that the npm registry is reachable"
  [ -x "$azdir/node_modules/.bin/azurite-blob" ] || die "Azurite installed but azurite-blob is missing"
fi

# The npm Azure Storage SDK, pinned, for bench/blob_upload.sh (the peer our page-blob client is
# measured against); inside the project tree like Azurite.
sdkdir=$root/tools/azure-sdk
if grep -q "\"version\": \"$AZURE_SDK_VERSION\"" "$sdkdir/node_modules/@azure/storage-blob/package.json" 2>/dev/null; then
  say "@azure/storage-blob $AZURE_SDK_VERSION: present in tools/azure-sdk"
else
  say "installing @azure/storage-blob $AZURE_SDK_VERSION into tools/azure-sdk (npm)"
  mkdir -p "$sdkdir"
  (cd "$sdkdir" && npm install --no-audit --no-fund --loglevel=error --prefix "$sdkdir" "@azure/storage-blob@$AZURE_SDK_VERSION" >/dev/null) \
    || die "npm install @azure/storage-blob@$AZURE_SDK_VERSION failed: check that the npm registry is reachable"
fi

# playwright-core, pinned, for tests/integration/web_ui.sh: only the driver; it launches Debian's
# /usr/bin/chromium and never downloads a browser of its own.
pwdir=$root/tools/playwright
if grep -q "\"version\": \"$PLAYWRIGHT_VERSION\"" "$pwdir/node_modules/playwright-core/package.json" 2>/dev/null; then
  say "playwright-core $PLAYWRIGHT_VERSION: present in tools/playwright"
else
  say "installing playwright-core $PLAYWRIGHT_VERSION into tools/playwright (npm)"
  mkdir -p "$pwdir"
  (cd "$pwdir" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --no-audit --no-fund --loglevel=error --prefix "$pwdir" \
     "playwright-core@$PLAYWRIGHT_VERSION" >/dev/null) \
    || die "npm install playwright-core@$PLAYWRIGHT_VERSION failed: check that the npm registry is reachable"
fi

# Debian 11's 5.10 kernel, unpacked (not installed) into /var/cache/replication-tests/kernel-5.10,
# for the qemu guest tests run with QG_KERNEL_SERIES=5.10 (a kernel older than 5.12); those skip
# without it, so a failed download is only a warning.
if ! bash "$root/scripts/guest_kernel.sh"; then
  say "warning: scripts/guest_kernel.sh failed: the qemu guest tests skip with QG_KERNEL_SERIES=5.10 (run it again later)"
fi

# bpffs: the tracker pins its maps there.
if ! mountpoint -q /sys/fs/bpf; then
  mount -t bpf bpf /sys/fs/bpf 2>/dev/null && say "mounted bpffs on /sys/fs/bpf" \
    || say "warning: could not mount bpffs on /sys/fs/bpf; the eBPF tracker will fall back to resync"
fi
say "done"
