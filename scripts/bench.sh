#!/usr/bin/env bash
# `make bench`: ferrite vs direct-to-pod vs kube-proxy-style iptables, side by side in one run.
# Builds release binaries, then runs `ferrite-lab bench`; extra arguments pass through
# (e.g. --quick, --scales 1,1000, --threads 2, --out DIR). Needs root.
# Writes target/bench/results.md and results.json. Exit status 2 means some rows were not run
# (for example, ferrite did not build); the baseline rows are still there.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'bench: %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  log "needs root (network namespaces, cgroups, iptables, BPF); try: sudo $0 $*"
  exit 1
fi

cargo build --release -p ferrite-lab
lab=target/release/ferrite-lab

ferrite_args=()
if [ -n "${FERRITE_BIN:-}" ]; then
  ferrite_args=(--ferrite "$FERRITE_BIN")
elif cargo build --release -p ferrite; then
  ferrite_args=(--ferrite target/release/ferrite)
else
  log "ferrite did not build: benchmarking the baselines only (ferrite rows: not run)"
fi

exec "$lab" bench "${ferrite_args[@]}" "$@"
