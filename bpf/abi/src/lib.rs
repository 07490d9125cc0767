//! Kernel/user ABI of ferrite's eBPF maps.
//!
//! Every type here is `#[repr(C)]`, explicitly padded (no implicit holes the verifier or the
//! kernel's hash would see as garbage) and has a size/offset test. Addresses and ports are stored
//! exactly as the kernel exposes them in `bpf_sock_addr`: IPv4 as one `u32` in network byte order,
//! IPv6 as four such words, ports as network-order `u16`.
#![no_std]

mod flow;
mod l2;
mod masq;
mod nat;
mod policy;
mod xdp;

pub use flow::{
    FLOW_DROP_INVALID, FLOW_DROP_NO_BACKEND, FLOW_DROP_NO_SNAT, FLOW_DROP_POLICY,
    FLOW_DROP_SOURCE_RANGE, FLOW_FLAG_EGRESS, FLOW_FLAG_SNAT, FLOW_KIND_L2, FLOW_KIND_MASQUERADE,
    FLOW_KIND_NORTH_SOUTH, FLOW_KIND_POLICY, FLOW_KIND_SOCK_LB, FLOW_RING_BYTES, FLOW_STAT_EMITTED,
    FLOW_STAT_RATE_LIMITED, FLOW_STAT_RING_FULL, FLOW_STATS, FLOW_VERDICT_REASONS,
    FLOW_VERDICT_SLOTS, FlowConfig, FlowEvent, FlowLimit, flow_verdict_slot,
};
pub use l2::{L2_HEARTBEAT_GRACE_NS, L2Key, L2Value};
pub use masq::{
    MASQ_CIDR_PREFIX_BITS, MASQ_PORT_MAX, MASQ_PORT_MIN, MasqCidr, PROTO_ICMP, PROTO_ICMPV6,
    SNAT_FLAG_EGRESS, SNAT_FLAG_INBOUND, SNAT_FLAG_REPLY, SnatValue,
};
mod sock;

pub use nat::{
    CT_REPLY, CT_REWRITE_DST, CT_REWRITE_SRC, CtKey, CtValue, DEV_HAS_V4, DEV_HAS_V6, DevInfo,
    EXT_FLAG_CLIENT_AFFINITY, EXT_FLAG_LOCAL, EXT_FLAG_RANDOM, EXT_FLAG_SOURCE_RANGES, ExtSvcValue,
    NodeAddrKey, SNAT_PORT_MAX, SNAT_PORT_MIN, SRC_RANGE_PREFIX_BITS, SrcRangeData,
};
pub use policy::{
    IDENTITY_ANY, IDENTITY_CIDR_BIT, IDENTITY_HOST, IDENTITY_POD_MIN, IDENTITY_WORLD, IpInfo,
    POLICY_EGRESS, POLICY_INGRESS, POLICY_ISOLATED_EGRESS, POLICY_ISOLATED_INGRESS,
    POLICY_PREFIX_ANY_PORT, POLICY_PREFIX_ANY_PROTO, POLICY_PREFIX_FULL, POLICY_STAT_SLOTS,
    PolicyCtValue, PolicyKey, PolicyValue, policy_stat_slot,
};
pub use sock::{
    AffinityKey, AffinityValue, Backend, RevNatKey, RevNatValue, SlotKey, SvcKey, SvcValue,
};
pub use xdp::{XDP_DEV_GENERIC, XDP_DEV_TX, XdpDev};

/// Version suffix of every pinned map name. Bump it when a key/value layout changes so a new agent
/// never reinterprets an old pinned map.
pub const MAP_VERSION: &str = "v1";

/// Pinned map names (≤15 bytes: the kernel's object name limit).
pub mod map_names {
    pub const SERVICES: &str = "fe_svc_v1";
    pub const SLOTS: &str = "fe_slot_v1";
    pub const BACKENDS: &str = "fe_backend_v1";
    pub const AFFINITY: &str = "fe_affin_v1";
    pub const REVNAT: &str = "fe_revnat_v1";
    pub const EXTERNAL: &str = "fe_ext_v1";
    pub const MAGLEV: &str = "fe_maglev_v1";
    pub const CONNTRACK: &str = "fe_ct_v1";
    pub const DEVICES: &str = "fe_dev_v1";
    pub const NODE_ADDRS: &str = "fe_nodeaddr_v1";
    pub const SOURCE_RANGES: &str = "fe_srcrng_v1";
    pub const XDP_DEVS: &str = "fe_xdpdev_v1";
    pub const TUNNELS: &str = "fe_tunnel_v1";
    pub const L2_ADDRS: &str = "fe_l2addr_v1";
    pub const L2_LIVE: &str = "fe_l2live_v1";
    pub const SNAT: &str = "fe_snat_v1";
    pub const MASQ_PODS: &str = "fe_mqpod_v1";
    pub const MASQ_EXCLUDE: &str = "fe_mqexcl_v1";
    pub const FLOWS: &str = "fe_flows_v1";
    pub const FLOW_CONFIG: &str = "fe_flowcfg_v1";
    pub const FLOW_LIMIT: &str = "fe_flowlim_v1";
    pub const FLOW_STATS: &str = "fe_flowstat_v1";
    pub const FLOW_VERDICTS: &str = "fe_flowverd_v1";
    pub const POD_DEVS: &str = "fe_poddev_v1";
    pub const FWD_STATS: &str = "fe_fwdstat_v1";
    pub const IPCACHE: &str = "fe_ipcache_v1";
    pub const POLICY_CIDRS: &str = "fe_polcidr_v1";
    pub const POLICY: &str = "fe_policy_v1";
    pub const POLICY_CT: &str = "fe_polct_v1";
    pub const POLICY_STATS: &str = "fe_polstat_v1";
    pub const POLICY_REVISION: &str = "fe_polrev_v1";
}

/// Capacity of each map (entries).
pub mod map_sizes {
    pub const SERVICES: u32 = 65_536;
    pub const SLOTS: u32 = 262_144;
    pub const BACKENDS: u32 = 131_072;
    pub const AFFINITY: u32 = 65_536;
    pub const REVNAT: u32 = 262_144;
    pub const EXTERNAL: u32 = 16_384;
    /// Maglev rows (external frontends with a table); the array holds rows × table size.
    pub const MAGLEV_ROWS: u32 = 256;
    pub const CONNTRACK: u32 = 262_144;
    pub const DEVICES: u32 = 64;
    /// Addresses of all north-south devices together.
    pub const NODE_ADDRS: u32 = 1_024;
    pub const SOURCE_RANGES: u32 = 16_384;
    pub const XDP_DEVS: u32 = 64;
    pub const TUNNELS: u32 = 8;
    pub const L2_ADDRS: u32 = 4_096;
    /// Both directions of every masqueraded flow (two entries each).
    pub const SNAT: u32 = 131_072;
    pub const MASQ_PODS: u32 = 1_024;
    pub const MASQ_EXCLUDE: u32 = 1_024;
    /// Pods' host-side veths on one node (k3s's default is at most 110 pods a node).
    pub const POD_DEVS: u32 = 4_096;
    /// Every pod address of the cluster (identities for NetworkPolicy).
    pub const IPCACHE: u32 = 65_536;
    /// `ipBlock` prefixes and their exceptions.
    pub const POLICY_CIDRS: u32 = 16_384;
    /// Allow rules of this node's isolated pods.
    pub const POLICY: u32 = 262_144;
    /// Tuples policy allowed (replies pass).
    pub const POLICY_CT: u32 = 262_144;
}

/// Per-CPU counters of BPF host routing (`fe_fwdstat_v1`), by slot: packets sent into a local
/// pod's netns with `bpf_redirect_peer`, out of a device with `bpf_redirect`, with
/// `bpf_redirect_neigh` (neighbour not resolved yet), and left to the stack.
pub const FWD_STAT_PEER: u32 = 0;
pub const FWD_STAT_REDIRECT: u32 = 1;
pub const FWD_STAT_NEIGH: u32 = 2;
pub const FWD_STAT_STACK: u32 = 3;
pub const FWD_STATS: u32 = 4;

/// Default Maglev table size (a prime, as Cilium's default); `--maglev-table-size` changes it.
pub const MAGLEV_DEFAULT_M: u32 = 16_381;

pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_SCTP: u8 = 132;

/// `SvcValue::flags`: ClientIP session affinity is on for this frontend.
pub const SVC_FLAG_AFFINITY: u16 = 1;

/// errno returned to `connect()`/`sendmsg()` for a service without ready endpoints.
pub const ECONNREFUSED: i32 = 111;
