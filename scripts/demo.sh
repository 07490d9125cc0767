#!/usr/bin/env bash
# `make demo`: a netns lab where a client reaches two pods through a ClusterIP that ferrite's
# eBPF socket load balancer translates. Everything is torn down at the end (also on failure).
set -euo pipefail

FERRITE=${1:-target/release/ferrite}
LAB=${2:-target/release/ferrite-lab}
FERRITE=$(realpath "$FERRITE"); LAB=$(realpath "$LAB")
ID=fdemo$$
WORK=$(mktemp -d /tmp/ferrite-demo.XXXXXX)
CGROOT=$(awk '$3=="cgroup2"{print $2; exit}' /proc/mounts)
CG="$CGROOT/$ID"
BPF=/sys/fs/bpf/$ID
SOCK=$WORK/ferrite.sock
PIDS=()

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

cleanup() {
  set +e
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
  wait 2>/dev/null
  "$FERRITE" agent --cleanup --bpf-root "$BPF" --cgroup "$CG" >/dev/null 2>&1
  for i in 1 2; do ip netns del "${ID}p$i" 2>/dev/null; done
  [ -d "$CG" ] && rmdir "$CG" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

step "pods: two network namespaces with a TCP server each (10.244.0.2, 10.244.0.3)"
sysctl -qw net.ipv4.ip_forward=1
for i in 1 2; do
  ns="${ID}p$i"; ip netns add "$ns"
  ip link add "${ID}h$i" type veth peer name eth0 netns "$ns"
  ip addr add "10.244.0.1/32" dev "${ID}h$i" 2>/dev/null || true
  ip link set "${ID}h$i" up
  ip -n "$ns" addr add "10.244.0.$((i+1))/32" dev eth0
  ip -n "$ns" link set lo up; ip -n "$ns" link set eth0 up
  ip -n "$ns" route add 10.244.0.1 dev eth0; ip -n "$ns" route add default via 10.244.0.1 dev eth0
  ip route add "10.244.0.$((i+1))/32" dev "${ID}h$i"
  ip netns exec "$ns" "$LAB" serve --name "pod-$i" --tcp "0.0.0.0:8080" >/dev/null 2>&1 &
  PIDS+=($!)
  echo "  pod-$i: 10.244.0.$((i+1)):8080 in netns $ns"
done

step "desired state: a ClusterIP Service and its EndpointSlice, as plain Kubernetes YAML"
mkdir -p "$WORK/manifests"
cat > "$WORK/manifests/web.yaml" <<YAML
apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo}
spec:
  type: ClusterIP
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80, targetPort: 8080, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abc12
  namespace: demo
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints:
- addresses: [10.244.0.2]
  conditions: {ready: true}
- addresses: [10.244.0.3]
  conditions: {ready: true}
YAML
sed 's/^/  /' "$WORK/manifests/web.yaml"

step "ferrite agent --source dir:$WORK/manifests (socket LB attached to cgroup $CG)"
mkdir -p "$CG"
"$FERRITE" agent --source "dir:$WORK/manifests" --bpf-root "$BPF" --cgroup "$CG" \
  --api-socket "$SOCK" --node-name demo 2>"$WORK/agent.log" &
PIDS+=($!)
for _ in $(seq 50); do
  "$FERRITE" status -o json --api-socket "$SOCK" 2>/dev/null | grep -q '"generation"' && break
  sleep 0.1
done
"$FERRITE" services --api-socket "$SOCK"

step "a client in the cgroup connects 20 times to 10.96.0.10:80"
client() { bash -c 'echo $$ > "$1/cgroup.procs"; shift; exec "$@"' _ "$CG" "$LAB" client "$@"; }
client --target 10.96.0.10:80 --proto tcp --count 20 --json | python3 -c '
import json,sys; r=json.load(sys.stdin)
print("  %d/%d connections answered: %s" % (r["ok"], r["attempts"], ", ".join("%s=%d" % kv for kv in sorted(r["names"].items()))))
print("  getpeername() shows:", ", ".join(sorted(r.get("peers", []))))'

step "scale down: remove pod-2 from the EndpointSlice (the change reaches the kernel in <1 s)"
sed -i '/10.244.0.3/,+1d' "$WORK/manifests/web.yaml"
sleep 1
client --target 10.96.0.10:80 --proto tcp --count 10 --json | python3 -c '
import json,sys; r=json.load(sys.stdin)
print("  %d/%d answered: %s" % (r["ok"], r["attempts"], ", ".join("%s=%d" % kv for kv in sorted(r["names"].items()))))'
"$FERRITE" services --api-socket "$SOCK"

step "done: tearing the lab down"
