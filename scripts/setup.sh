#!/usr/bin/env bash
# Idempotent toolchain bootstrap for ferrite (called by `make setup`).
# Installs Debian packages the build, tests, demo and benches need, the nightly
# toolchain with rust-src for eBPF, the musl targets, and bpf-linker built
# against Debian's LLVM 22 (the LLVM that nightly 1.97 speaks).
set -euo pipefail

NIGHTLY="${FERRITE_NIGHTLY:-nightly}"
BPF_LINKER_VERSION="0.13.0"
# The API's fuzz test (tests/api.rs): schemathesis and the OpenAPI validator from PyPI, pinned,
# in their own venv (Debian ships neither).
API_VENV="${FERRITE_API_VENV:-/opt/ferrite-apitest}"
API_VENV_PACKAGES=(schemathesis==4.32.5 openapi-spec-validator==0.9.0)
STAMP_DIR="${FERRITE_SETUP_STAMP_DIR:-/var/lib/ferrite-setup}"
APT_PACKAGES=(
  llvm-22-dev clang-22 lld-22 libpolly-22-dev libzstd-dev zlib1g-dev
  iproute2 iptables nftables bpftool arping ndisc6 iperf3 wrk
  podman runc containernetworking-plugins buildah umoci skopeo
  busybox-static conmon tar
  dpkg-dev rpm qemu-user-static procps psmisc curl socat netcat-openbsd file
  zstd systemd containerd
  qemu-system-x86 qemu-system-arm xz-utils
  python3-prometheus-client python3-venv openssl chromium
)

log() { printf 'setup: %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing_packages() {
  local p
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || echo "$p"
  done
}

install_apt() {
  local missing
  missing=$(missing_packages | tr '\n' ' ')
  if [ -z "${missing// /}" ]; then
    log "debian packages: present"
    return
  fi
  log "installing debian packages: $missing"
  as_root mkdir -p "$STAMP_DIR"
  if [ ! -f "$STAMP_DIR/apt-updated" ] || [ -n "$(find "$STAMP_DIR/apt-updated" -mmin +720 2>/dev/null)" ]; then
    as_root apt-get update -q
    as_root touch "$STAMP_DIR/apt-updated"
  fi
  # shellcheck disable=SC2086
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
}

install_rust() {
  command -v rustup >/dev/null || { log "rustup is required (https://rustup.rs)"; exit 1; }
  rustup toolchain list | grep -q "^${NIGHTLY}" || rustup toolchain install "$NIGHTLY" --profile minimal
  rustup component list --toolchain "$NIGHTLY" --installed | grep -q '^rust-src' \
    || rustup component add rust-src --toolchain "$NIGHTLY"
  local t
  for t in x86_64-unknown-linux-musl aarch64-unknown-linux-musl; do
    rustup target list --installed | grep -q "^$t\$" || rustup target add "$t"
  done
  rustup component list --installed | grep -q '^clippy' || rustup component add clippy
  rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt
}

install_bpf_linker() {
  if command -v bpf-linker >/dev/null && bpf-linker --version 2>/dev/null | grep -q "$BPF_LINKER_VERSION"; then
    log "bpf-linker $BPF_LINKER_VERSION: present"
    return
  fi
  log "building bpf-linker $BPF_LINKER_VERSION against llvm-22 (a few minutes, once)"
  PATH="/usr/lib/llvm-22/bin:$PATH" LLVM_SYS_221_PREFIX=/usr/lib/llvm-22 \
    cargo install bpf-linker --locked --version "$BPF_LINKER_VERSION" \
    --no-default-features --features llvm-22
}

install_api_venv() {
  local stamp="$API_VENV/.ferrite-packages"
  if [ -x "$API_VENV/bin/schemathesis" ] && [ "$(cat "$stamp" 2>/dev/null)" = "${API_VENV_PACKAGES[*]}" ]; then
    log "api test venv ($API_VENV): present"
    return
  fi
  log "installing ${API_VENV_PACKAGES[*]} into $API_VENV"
  as_root /usr/bin/python3 -m venv "$API_VENV"
  as_root "$API_VENV/bin/pip" install -q --disable-pip-version-check "${API_VENV_PACKAGES[@]}"
  echo "${API_VENV_PACKAGES[*]}" | as_root tee "$stamp" >/dev/null
}

mount_bpffs() {
  if ! mount | grep -q ' /sys/fs/bpf type bpf'; then
    as_root mkdir -p /sys/fs/bpf
    as_root mount -t bpf bpf /sys/fs/bpf || log "could not mount bpffs at /sys/fs/bpf"
  fi
}

# Debian 12's 6.1 kernels (amd64 + arm64) and an arm64 busybox for tests/kernel_vm.rs.
fetch_kernels() {
  as_root "$(dirname "$0")/fetch-kernels.sh"
}

install_apt
fetch_kernels
install_rust
install_bpf_linker
install_api_venv
mount_bpffs
log "ready"
