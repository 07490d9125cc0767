//! JSON views served by the API and printed by the CLI.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct Status {
    pub version: String,
    pub node_name: String,
    pub source: String,
    pub datapath: DatapathStatus,
    pub last_apply: Option<ApplyReport>,
    pub source_errors: Vec<SourceErrorView>,
    /// Ports the services declare that the agent does not serve (SCTP), one line each
    /// (`Service ns/web: port sig 9999/SCTP not served: ...`); their other ports are served.
    #[serde(default)]
    pub unserved_ports: Vec<String>,
    /// Readiness of each part of the agent; the agent is ready when all are.
    #[serde(default)]
    pub subsystems: Vec<Subsystem>,
    /// The masquerade on the north-south devices (absent without `--devices`).
    #[serde(default)]
    pub masquerade: Option<MasqStatus>,
    /// Where the API is served.
    #[serde(default)]
    pub api: ApiListeners,
}

/// The API's listeners.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct ApiListeners {
    /// The unix socket (mode 0600).
    pub socket: String,
    /// `--api-listen`: TLS with client certificates.
    #[serde(default)]
    pub tls: Option<String>,
    /// `--metrics-listen`: `/metrics` in plain HTTP.
    #[serde(default)]
    pub metrics: Option<String>,
}

/// One part of the agent whose readiness `/readyz`, `status --check` and CNI STATUS report:
/// "datapath" (pins and links present), "source" (synced and applied), "north-south" (attached
/// on every device), "cni" (plugin installed), "l2" (membership bound) and "routing" (every
/// remote PodCIDR route applied); see `agent::readiness` and `agent::subsystems`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct Subsystem {
    pub name: String,
    pub ready: bool,
    /// What it is doing now ("attached on eth0, eth1", "waiting for the first snapshot", …).
    pub detail: String,
    /// The last error it hit, kept after it recovered.
    pub last_error: Option<String>,
    pub last_error_at_unix_ms: Option<u64>,
}

impl Status {
    /// The subsystems that are not ready.
    #[must_use]
    pub fn not_ready(&self) -> Vec<&Subsystem> {
        self.subsystems.iter().filter(|s| !s.ready).collect()
    }
}

/// `--masquerade`, the CIDRs in its maps and the flows in its SNAT table.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct MasqStatus {
    pub enabled: bool,
    /// The cluster's pod CIDRs (sources masqueraded, destinations never).
    pub pod_cidrs: Vec<String>,
    pub exclude: Vec<String>,
    /// Masqueraded flows in the SNAT table (counted when the status is read).
    pub snat_flows: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct DatapathStatus {
    pub ready: bool,
    pub bpf_root: String,
    pub cgroup: String,
    /// The pinned links were adopted from a previous agent.
    pub adopted: bool,
    /// Where each external device's north-south ingress translation runs.
    #[serde(default)]
    pub ingress: Vec<DeviceIngress>,
    /// The north-south devices and how they were chosen ("detected" or "--devices").
    #[serde(default)]
    pub devices: Vec<DeviceView>,
    #[serde(default)]
    pub device_selection: String,
    /// How programs attach to devices: "tcx" or "legacy" (clsact + cls_bpf, XDP over
    /// netlink), and why ("auto: this kernel has no TCX").
    #[serde(default)]
    pub tc_attach: String,
    /// Kernel features missing here that change what the agent does, one line each.
    #[serde(default)]
    pub degraded: Vec<String>,
    /// BPF host routing of pod traffic (`--host-routing`).
    #[serde(default)]
    pub host_routing: HostRoutingView,
}

/// BPF host routing: where it runs and what it forwarded.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct HostRoutingView {
    /// "bpf", "legacy" (`--host-routing legacy`: the stack routes) or "unavailable" (the program
    /// did not load; the stack routes).
    pub mode: String,
    /// The pods' devices (veths and netkit primaries) the program is attached to.
    #[serde(default)]
    pub pod_devices: Vec<String>,
    /// Those of them that are netkit devices (host routing runs in the pod's transmit).
    #[serde(default)]
    pub netkit_devices: Vec<String>,
    /// ferrite's overlay device, when host routing runs on its ingress too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay_device: Option<String>,
    /// Packets sent into a local pod's netns past the stack.
    #[serde(default)]
    pub to_pod_packets: u64,
    /// Packets sent out of a device past the stack (neighbour known, or resolved by the kernel).
    #[serde(default)]
    pub redirected_packets: u64,
    /// Of those, the packets sent with `bpf_redirect_neigh` because the next hop's neighbour
    /// was not resolved yet (the kernel resolved it).
    #[serde(default)]
    pub neigh_packets: u64,
    /// Packets left to the stack (local delivery, no route, TTL, unresolved pod neighbour).
    #[serde(default)]
    pub stack_packets: u64,
}

/// A north-south device and every address NodePort answers on.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct DeviceView {
    pub name: String,
    pub ifindex: u32,
    pub addresses: Vec<String>,
}

/// One external device and its ingress hook: "xdp-native", "xdp-generic" or "tc".
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct DeviceIngress {
    pub device: String,
    pub hook: String,
}

/// The last reconcile of the load balancer maps.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct ApplyReport {
    /// Increments with every snapshot the agent applied.
    pub generation: u64,
    pub at_unix_ms: u64,
    /// Time to compute the plan and write it into the maps.
    pub duration_us: u64,
    pub ops: usize,
    pub services: usize,
    pub frontends: usize,
    pub backends: usize,
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct SourceErrorView {
    pub path: String,
    pub message: String,
}

/// A node of the cluster as the source knows it (`/v1/nodes`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct NodeView {
    pub name: String,
    /// `InternalIP` addresses, in the Node's order.
    pub internal_ips: Vec<String>,
    pub pod_cidrs: Vec<String>,
    pub ready: bool,
}

impl NodeView {
    #[must_use]
    pub fn of(node: &crate::model::Node) -> Self {
        Self {
            name: node.name.to_string(),
            internal_ips: node.internal_ips.iter().map(ToString::to_string).collect(),
            pod_cidrs: node.pod_cidrs.iter().map(ToString::to_string).collect(),
            ready: node.ready,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct ServiceView {
    pub service: String,
    pub port_name: String,
    /// `addr:port` (`[v6]:port`).
    pub frontend: String,
    pub protocol: String,
    pub backends: Vec<String>,
    pub affinity_timeout_seconds: Option<u32>,
}
