#!/usr/bin/env bash
# Fetches Debian's own kernels for the kernel VM tests (tests/kernel_vm.rs), idempotently:
#   amd64:      linux-image-6.1.0-NN-cloud-amd64   (the dependency of linux-image-cloud-amd64)
#   arm64:      linux-image-6.1.0-NN-arm64         (the dependency of linux-image-arm64)
#   amd64-6.12: linux-image-6.12.NN+deb12-cloud-amd64 (the dependency of
#               linux-image-6.12-cloud-amd64: Debian 13's kernel line as Debian 12 carries it,
#               the first with netkit)
# Each package is fetched with `apt-get download` of that one exact name (never a glob) and
# unpacked with `dpkg-deb -x` under $FERRITE_KERNEL_CACHE (default /var/cache/ferrite-kernels):
#   <cache>/<arch>/<package>_<version>_<arch>.deb        (<arch>: amd64, arm64, amd64-6.12)
#   <cache>/<arch>/root/{boot,lib/modules}/...     the unpacked package
#   <cache>/<arch>/release                         the kernel release (uname -r), written last
#   <cache>/arm64/busybox                          busybox-static:arm64's /bin/busybox (the VM's
#                                                  userland; amd64 VMs use the host's busybox-static)
#
# arm64 indexes come from a private apt state under <cache>/apt-arm64 (its own sources list, lists,
# archive cache and an empty dpkg status) with APT::Architecture=arm64: the host's apt — its
# architectures, sources and lists — is never changed, so there is nothing to restore.
#
# Usage: scripts/fetch-kernels.sh [amd64] [arm64] [amd64-6.12]   (all when no argument is given)
set -euo pipefail

CACHE="${FERRITE_KERNEL_CACHE:-/var/cache/ferrite-kernels}"
DEBIAN_MIRROR="${FERRITE_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SECURITY_MIRROR="${FERRITE_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

log() { printf 'fetch-kernels: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

for tool in apt-get apt-cache dpkg-deb; do
  command -v "$tool" >/dev/null || die "$tool is missing (a Debian host with apt and dpkg is required)"
done

# apt options of the private arm64 state (set by arm64_apt_setup).
ARM64_APT=()

arm64_apt_setup() {
  local dir="$CACHE/apt-arm64"
  mkdir -p "$dir/lists/partial" "$dir/archives/partial" "$dir/etc/preferences.d" "$dir/etc/apt.conf.d"
  : >"$dir/status"
  [ -f "$KEYRING" ] || die "$KEYRING is missing: apt-get install debian-archive-keyring"
  cat >"$dir/etc/sources.list" <<EOF
deb [arch=arm64 signed-by=$KEYRING] $DEBIAN_MIRROR bookworm main
deb [arch=arm64 signed-by=$KEYRING] $DEBIAN_MIRROR bookworm-updates main
deb [arch=arm64 signed-by=$KEYRING] $SECURITY_MIRROR bookworm-security main
EOF
  ARM64_APT=(
    -o "APT::Architecture=arm64" -o "APT::Architectures::=arm64"
    -o "Dir::Etc::SourceList=$dir/etc/sources.list" -o "Dir::Etc::SourceParts=$dir/etc/sources.list.d"
    -o "Dir::Etc::Preferences=$dir/etc/preferences" -o "Dir::Etc::PreferencesParts=$dir/etc/preferences.d"
    -o "Dir::State::Lists=$dir/lists" -o "Dir::State::status=$dir/status"
    -o "Dir::Cache=$dir/cache" -o "Dir::Cache::archives=$dir/archives"
  )
  mkdir -p "$dir/cache" "$dir/etc/sources.list.d"
  log "arm64: updating the private apt indexes in $dir"
  apt-get -q "${ARM64_APT[@]}" update >&2
}

# The exact linux-image-<version>-* package the meta package depends on (<version>: a sed
# pattern, 6\.1\.0-[0-9]\+ or 6\.12\.[0-9]\++deb12).
image_package() {
  local meta="$1" version="$2"
  shift 2
  apt-cache "$@" depends "$meta" 2>/dev/null \
    | sed -n "s/^ *Depends: \\(linux-image-$version-[a-z0-9-]\\+\\).*/\\1/p" | head -n1
}

kernel_present() {
  [ -s "$1/release" ] && [ -f "$1/root/boot/vmlinuz-$(cat "$1/release")" ]
}

fetch() {
  local line="$1" arch meta flavor version
  case "$line" in
    amd64) arch=amd64 meta=linux-image-cloud-amd64 flavor=cloud-amd64 version='6\.1\.0-[0-9]\+' ;;
    arm64) arch=arm64 meta=linux-image-arm64 flavor=arm64 version='6\.1\.0-[0-9]\+' ;;
    amd64-6.12)
      arch=amd64 meta=linux-image-6.12-cloud-amd64 flavor=cloud-amd64
      version='6\.12\.[0-9]\++deb12'
      ;;
    *) die "unknown kernel $line (amd64, arm64 or amd64-6.12)" ;;
  esac
  local dest="$CACHE/$line"
  local opts=()
  if [ "$arch" = arm64 ]; then
    if [ ! -x "$dest/busybox" ] || ! kernel_present "$dest"; then
      arm64_apt_setup
      opts=("${ARM64_APT[@]}")
    fi
    [ -x "$dest/busybox" ] || fetch_busybox_arm64 "$dest"
  fi
  if kernel_present "$dest"; then
    log "$line: $(cat "$dest/release") present in $dest"
    return
  fi
  if [ "$arch" = amd64 ] && ! apt-cache show "$meta" >/dev/null 2>&1; then
    log "amd64: $meta unknown to apt, running apt-get update"
    apt-get -q update >&2
  fi
  local pkg
  pkg=$(image_package "$meta" "$version" "${opts[@]}")
  [ -n "$pkg" ] || die "$line: no linux-image-<version>-$flavor dependency of $meta (apt-cache depends $meta)"
  local release="${pkg#linux-image-}"
  log "$line: $meta depends on $pkg"
  mkdir -p "$dest"
  local tmp
  tmp=$(mktemp -d "$dest/.fetch.XXXXXX")
  # shellcheck disable=SC2064
  trap "rm -rf '$tmp'" RETURN
  (cd "$tmp" && apt-get -q "${opts[@]}" download "$pkg:$arch" >&2)
  local deb
  deb=$(find "$tmp" -maxdepth 1 -name "${pkg}_*_${arch}.deb" | head -n1)
  [ -n "$deb" ] || die "$arch: apt-get download $pkg:$arch left no .deb"
  mkdir -p "$tmp/root"
  dpkg-deb -x "$deb" "$tmp/root"
  [ -f "$tmp/root/boot/vmlinuz-$release" ] || die "$arch: $deb has no boot/vmlinuz-$release"
  [ -d "$tmp/root/lib/modules/$release" ] || die "$arch: $deb has no lib/modules/$release"
  rm -rf "$dest/root" "$dest"/*.deb "$dest/release"
  mv "$deb" "$dest/"
  mv "$tmp/root" "$dest/root"
  echo "$release" >"$dest/release"
  log "$line: $release unpacked in $dest/root"
}

# busybox-static:arm64's static /bin/busybox → <dest>/busybox (exact package name, no glob).
fetch_busybox_arm64() {
  local dest="$1" tmp deb
  mkdir -p "$dest"
  tmp=$(mktemp -d "$dest/.busybox.XXXXXX")
  (cd "$tmp" && apt-get -q "${ARM64_APT[@]}" download busybox-static:arm64 >&2)
  deb=$(find "$tmp" -maxdepth 1 -name 'busybox-static_*_arm64.deb' | head -n1)
  [ -n "$deb" ] || { rm -rf "$tmp"; die "arm64: apt-get download busybox-static:arm64 left no .deb"; }
  dpkg-deb -x "$deb" "$tmp/root"
  [ -f "$tmp/root/bin/busybox" ] || { rm -rf "$tmp"; die "arm64: $deb has no bin/busybox"; }
  install -m 0755 "$tmp/root/bin/busybox" "$dest/busybox"
  rm -rf "$tmp"
  log "arm64: busybox-static in $dest/busybox"
}

arches=("$@")
[ ${#arches[@]} -gt 0 ] || arches=(amd64 arm64 amd64-6.12)
for a in "${arches[@]}"; do
  fetch "$a"
done
