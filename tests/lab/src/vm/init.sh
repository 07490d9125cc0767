#!/bin/busybox sh
# /init of ferrite's kernel VM (tests/lab/src/vm). One k3s-like node on Debian's kernel:
#   node (root netns, cgroup /sys/fs/cgroup/node): NIC $NODE_MAC = $NODE_IP, the shipped agent
#     on a dir: folder, pod1 added through the CNI plugin and conflist the agent installed;
#   client (netns "client", cgroup /sys/fs/cgroup/outside — outside the agent's socket LB, like
#     another machine on the LAN): NIC $CLIENT_MAC = $CLIENT_IP, on the same qemu hub.
# Every step prints "FERRITE-VM: OK <step> ..." or "FERRITE-VM: FAIL <step>: ..."; the run ends
# with "FERRITE-VM: DONE pass|fail" and a power-off, also from the watchdog.
/bin/busybox mkdir -p /proc /sys /dev /run /tmp /bin /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /run
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup
. /etc/ferrite-vm/scenario.env
AGENT_LOG=/var/log/agent.log

now() { cut -d' ' -f1 /proc/uptime; }
say() { echo "FERRITE-VM: $*"; }
ok() { step=$1; shift; say "OK $step t=$(now)s $*"; }
finish() {
  sync
  poweroff -f
  reboot -f
}
show_logs() {
  echo "----- agent log (last 60 lines) -----"
  tail -n 60 "$AGENT_LOG" 2>/dev/null | sed 's/^/agent| /'
  echo "----- dmesg (last 20 lines) -----"
  dmesg | tail -n 20 | sed 's/^/dmesg| /'
}
# fail STEP MESSAGE: report, show the logs, power off.
fail() {
  say "FAIL $1: $2"
  show_logs
  say "DONE fail"
  finish
}
# retry TRIES STEP WHAT CMD...: runs CMD every 0.5 s until it succeeds; after TRIES tries, FAIL
# STEP with WHAT and $LAST (what the last try saw, for checks that set it).
retry() {
  tries=$1 step=$2 what=$3
  shift 3
  LAST=
  n=0
  until "$@"; do
    n=$((n + 1))
    [ "$n" -ge "$tries" ] && fail "$step" "$what${LAST:+: $LAST}"
    sleep 0.5
  done
}

(
  sleep "$VM_TIMEOUT"
  say "FAIL watchdog: the scenario did not finish within ${VM_TIMEOUT}s"
  show_logs
  say "DONE fail"
  finish
) &

say "BOOT kernel=$(uname -r) arch=$(uname -m)"
ok boot "$(uname -r)"

while read -r m; do
  insmod "/lib/modules/$m" || fail modules "insmod $m"
done </etc/ferrite-vm/modules
ok modules "$(tr '\n' ' ' </etc/ferrite-vm/modules)"

# --- network -----------------------------------------------------------------------------
nic_by_mac() {
  for d in /sys/class/net/*; do
    [ "$(cat "$d/address")" = "$1" ] && { basename "$d"; return 0; }
  done
  return 1
}
NODE_IF=$(nic_by_mac "$NODE_MAC") || fail network "no NIC with MAC $NODE_MAC: $(ls /sys/class/net)"
CLIENT_IF=$(nic_by_mac "$CLIENT_MAC") || fail network "no NIC with MAC $CLIENT_MAC"
mkdir -p /run/netns "$NODE_CGROUP" "$OUTSIDE_CGROUP"
echo $$ >"$NODE_CGROUP/cgroup.procs" || fail network "cannot join $NODE_CGROUP"
# A persistent netns: a bind mount of a new network namespace onto a file.
add_netns() {
  touch "/run/netns/$1" && unshare --net="/run/netns/$1" true
}
add_netns client || fail network "unshare --net=/run/netns/client"
# in-client CMD...: CMD in the client netns and the outside cgroup (out of the socket LB's
# reach). A script, not a function, so that `timeout` can run it.
printf '%s\n' '#!/bin/sh' \
  'echo $$ >"$OUTSIDE_CGROUP/cgroup.procs" && exec nsenter -F --net=/run/netns/client "$@"' \
  >/bin/in-client
chmod 755 /bin/in-client
in-client sleep 100000 &
HOLDER=$!
holder_in_netns() { [ "$(readlink "/proc/$HOLDER/ns/net")" != "$(readlink /proc/self/ns/net)" ]; }
retry 20 network "the client netns holder never entered the netns" holder_in_netns
ip link set "$CLIENT_IF" netns "$HOLDER" || fail network "move $CLIENT_IF into the client netns"
in-client ip link show "$CLIENT_IF" >/dev/null 2>&1 || fail network "$CLIENT_IF is not in the client netns"
ip link set lo up
ip addr add "$NODE_IP/$LAN_PREFIX" dev "$NODE_IF"
ip link set "$NODE_IF" up
ip route add default via "$GATEWAY" dev "$NODE_IF"
in-client ip link set lo up
in-client ip addr add "$CLIENT_IP/$LAN_PREFIX" dev "$CLIENT_IF"
in-client ip link set "$CLIENT_IF" up
client_pings_node() { LAST=$(in-client ping -c 1 -W 1 "$NODE_IP" 2>&1); }
retry 10 network "the client cannot ping the node at $NODE_IP" client_pings_node
ok network "node $NODE_IF=$NODE_IP client $CLIENT_IF=$CLIENT_IP"

# --- the agent, with the shipped DaemonSet's args ------------------------------------------
agent_ready() {
  kill -0 "$AGENT_PID" 2>/dev/null || fail "$AGENT_STEP" "the agent exited"
  LAST=$(ferrite status --api-socket "$API_SOCKET" --check 2>&1)
}
start_agent() {
  (
    . /etc/ferrite-vm/agent.env
    IFS='
'
    # shellcheck disable=SC2046
    exec ferrite $(cat /etc/ferrite-vm/agent.args)
  ) >>"$AGENT_LOG" 2>&1 &
  AGENT_PID=$!
  t0=$(now)
  AGENT_STEP=$1
  retry "$READY_TRIES" "$1" "ferrite status --check not ready after $READY_TRIES tries" agent_ready
  READY_AFTER="$(awk "BEGIN { print $(now) - $t0 }")"
}
start_agent agent
ok agent "ready after ${READY_AFTER}s (ferrite status --check), pid $AGENT_PID"

# --- a pod through the CNI plugin and conflist the agent installed, as containerd would ----
CONFLIST="$CNI_CONF_DIR/05-ferrite.conflist"
[ -f "$CONFLIST" ] || fail pod "the agent wrote no $CONFLIST"
conf=$(tr -d ' \n\t' <"$CONFLIST")
plugin=$(echo "$conf" | sed 's/.*"plugins":\[\(.*\)\].*/\1/')
case "$plugin" in
  *'},{'*) fail pod "expected only the ferrite plugin in $conf" ;;
  '{"'*) ;;
  *) fail pod "cannot read the plugins of $conf" ;;
esac
add_netns pod1 || fail pod "unshare --net=/run/netns/pod1"
request="{\"cniVersion\":\"1.0.0\",\"name\":\"ferrite\",${plugin#\{}"
result=$(echo "$request" | env CNI_COMMAND=ADD CNI_CONTAINERID=vmpod1 CNI_NETNS=/run/netns/pod1 \
  CNI_IFNAME=eth0 CNI_PATH="$CNI_BIN_DIR" "$CNI_BIN_DIR/ferrite" 2>&1) \
  || fail pod "CNI ADD: $result"
POD_IP=$(echo "$result" | tr -d ' \n' | grep -o '"address":"[0-9.]*/' | head -n 1 | cut -d'"' -f4 \
  | cut -d/ -f1)
[ -n "$POD_IP" ] || fail pod "no IPv4 address in the CNI result: $result"
nsenter --net=/run/netns/pod1 env POD=pod1 nc -ll -p "$POD_PORT" -e /etc/ferrite-vm/serve.sh &
# The service's EndpointSlice names the pod once it exists (a change in the dir: folder).
sed "s/\"$POD_IP_PLACEHOLDER\"/\"$POD_IP\"/" /etc/ferrite-vm/services.yaml.in \
  >"$MANIFESTS/services.yaml"
ok pod "pod1 $POD_IP"

# request LABEL CMD...: up to 20 tries until the reply names pod1 and echoes the request.
answers() {
  LAST=$(echo "hello-$LABEL" | timeout 10 "$@" 2>&1)
  case "$LAST" in *pod=pod1*hello-"$LABEL"*) return 0 ;; esac
  return 1
}
request() {
  LABEL=$1
  shift
  retry 20 "$LABEL" "no answer from pod1 via $*" answers "$@"
}

# --- ClusterIP through the socket LB (the node's processes are in the agent's cgroup) -------
request clusterip nc -w 3 "$CLUSTER_IP" "$SVC_PORT"
ok clusterip "$CLUSTER_IP:$SVC_PORT -> pod1 $POD_IP:$POD_PORT from the node"

# --- NodePort from the client, through TC on the node's NIC --------------------------------
request nodeport in-client nc -w 3 "$NODE_IP" "$NODE_PORT"
ok nodeport "$NODE_IP:$NODE_PORT -> pod1 from the client"

# --- the LoadBalancer IP: resolved by ARP (exactly one answer: the node's), then reached ---
NODE_MAC_SEEN=$(cat "/sys/class/net/$NODE_IF/address")
arp_answered() {
  LAST=$(in-client arping -c 1 -w 2 -I "$CLIENT_IF" "$LB_IP" 2>&1)
  case "$LAST" in *"Received 0 response"*) return 1 ;; esac
}
retry 20 l2-arp "no ARP answer for $LB_IP" arp_answered
arp=$LAST
answers=$(echo "$arp" | sed -n 's/^Received \([0-9]*\) response.*/\1/p')
macs=$(echo "$arp" | sed -n 's/.*reply from [0-9.]* \[\([0-9a-fA-F:]*\)\].*/\1/p' | tr 'A-F' 'a-f' \
  | sort -u | tr '\n' ' ')
[ "$answers" = 1 ] || fail l2-arp "expected exactly one ARP answer for $LB_IP, got: $arp"
[ "$macs" = "$NODE_MAC_SEEN " ] || fail l2-arp "$LB_IP answered by [$macs], not the node's $NODE_MAC_SEEN"
ok l2-arp "$LB_IP is-at $NODE_MAC_SEEN (1 answer)"
request lb-ip in-client nc -w 3 "$LB_IP" "$SVC_PORT"
neigh=$(in-client ip neigh show "$LB_IP" dev "$CLIENT_IF")
case "$neigh" in *"$NODE_MAC_SEEN"*) ;; *) fail lb-ip "the client's neighbour entry: $neigh" ;; esac
ok lb-ip "$LB_IP:$SVC_PORT -> pod1 from the client ($neigh)"

# --- the pod veth's programs (BPF host routing, NetworkPolicy) loaded and attached ---------
pod_hooked() {
  LAST=$(ferrite status --api-socket "$API_SOCKET" -o json 2>&1 | tr -d ' \n\t')
  case "$LAST" in *'"host_routing":{"mode":"bpf","pod_devices":["'*) ;; *) return 1 ;; esac
  # ...and carried the pod's NodePort / LB IP replies out of the NIC past the stack.
  case "$LAST" in *'"redirected_packets":0,'*) return 1 ;; esac
}
retry 10 pod-hooks "the pod's device has no BPF host routing / policy programs" pod_hooked
# podDevice auto: a netkit pair where the kernel has netkit ($POD_DEVICE, from the package's
# config), where host routing then runs in the pod's own transmit; a veth pair elsewhere.
netkits=$(echo "$LAST" | grep -o '"netkit_devices":\[[^]]*\]')
case "$POD_DEVICE:$netkits" in
  'netkit:"netkit_devices":["'*) ;;
  'veth:"netkit_devices":[]') ;;
  *) fail pod-hooks "expected a $POD_DEVICE pod device, the agent reports $netkits in $LAST" ;;
esac
ok pod-hooks "$POD_DEVICE: $(echo "$LAST" | grep -o '"pod_devices":\[[^]]*\]') $netkits $(echo "$LAST" | grep -o '"redirected_packets":[0-9]*')"

# --- agent restart: an open connection through the LB IP carries on -----------------------
mkfifo /tmp/conn.in
in-client nc "$LB_IP" "$SVC_PORT" </tmp/conn.in >/tmp/conn.out 2>&1 &
exec 3>/tmp/conn.in
conn_has() { LAST=$(tr '\n' ' ' </tmp/conn.out); grep -q "$1" /tmp/conn.out; }
# await TEXT WHEN: up to 10 s until the connection's output holds TEXT.
await() { retry 20 restart "$2: the open connection's output" conn_has "$1"; }
agent_gone() { ! kill -0 "$AGENT_PID" 2>/dev/null; }
echo before-restart >&3
await before-restart "before the restart"
kill -TERM "$AGENT_PID"
retry 40 restart "the agent did not exit within 20 s of SIGTERM" agent_gone
echo while-stopped >&3
await while-stopped "while the agent was stopped"
start_agent restart
echo after-restart >&3
await after-restart "after the restart"
request restart-new in-client nc -w 3 "$LB_IP" "$SVC_PORT"
exec 3>&-
ok restart "one connection through $LB_IP carried data before, during and after the restart (ready again after ${READY_AFTER}s)"

# --- ferrite doctor on this node -----------------------------------------------------------
doctor=$(ferrite doctor 2>&1) || fail doctor "ferrite doctor exited $?: $doctor"
echo "$doctor" | sed 's/^/doctor| /'
ok doctor "passed"

say "DONE pass"
finish
