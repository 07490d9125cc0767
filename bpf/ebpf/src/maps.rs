//! Pinned maps shared by the programs. Names and sizes come from `ferrite_abi` so userspace and
//! kernel agree; the names carry a layout version.

use aya_ebpf::{
    bindings::bpf_fib_lookup,
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray},
};
use ferrite_abi::{
    AffinityKey, AffinityValue, Backend, RevNatKey, RevNatValue, SlotKey, SvcKey, SvcValue,
    map_sizes,
};

#[map(name = "fe_svc_v1")]
pub static SERVICES: HashMap<SvcKey, SvcValue> = HashMap::pinned(map_sizes::SERVICES, 0);

#[map(name = "fe_slot_v1")]
pub static SLOTS: HashMap<SlotKey, u32> = HashMap::pinned(map_sizes::SLOTS, 0);

#[map(name = "fe_backend_v1")]
pub static BACKENDS: HashMap<u32, Backend> = HashMap::pinned(map_sizes::BACKENDS, 0);

#[map(name = "fe_affin_v1")]
pub static AFFINITY: LruHashMap<AffinityKey, AffinityValue> =
    LruHashMap::pinned(map_sizes::AFFINITY, 0);

#[map(name = "fe_revnat_v1")]
pub static REVNAT: LruHashMap<RevNatKey, RevNatValue> = LruHashMap::pinned(map_sizes::REVNAT, 0);

// ---- north-south (TC on external devices) ----

use aya_ebpf::maps::{Array, LpmTrie};
use ferrite_abi::{CtKey, CtValue, DevInfo, ExtSvcValue, NodeAddrKey, SrcRangeData};

#[map(name = "fe_ext_v1")]
pub static EXTERNAL: HashMap<SvcKey, ExtSvcValue> = HashMap::pinned(map_sizes::EXTERNAL, 0);

/// Maglev tables, one row of `MAGLEV_M` backend ids per external frontend. Userspace sets the
/// real size (rows × table size) at load time.
#[map(name = "fe_maglev_v1")]
pub static MAGLEV: Array<u32> = Array::pinned(1, 0);

#[map(name = "fe_ct_v1")]
pub static CONNTRACK: LruHashMap<CtKey, CtValue> = LruHashMap::pinned(map_sizes::CONNTRACK, 0);

#[map(name = "fe_dev_v1")]
pub static DEVICES: HashMap<u32, DevInfo> = HashMap::pinned(map_sizes::DEVICES, 0);

/// Every address of every north-south device → its ifindex (the NodePort match).
#[map(name = "fe_nodeaddr_v1")]
pub static NODE_ADDRS: HashMap<NodeAddrKey, u32> = HashMap::pinned(map_sizes::NODE_ADDRS, 0);

/// BPF_F_NO_PREALLOC is mandatory for LPM tries.
#[map(name = "fe_srcrng_v1")]
pub static SOURCE_RANGES: LpmTrie<SrcRangeData, u8> = LpmTrie::pinned(map_sizes::SOURCE_RANGES, 1);

/// Overlay devices (ferrite's VXLAN device) by ifindex: a backend the FIB reaches through one
/// is on another node, so its flows are SNATed like those of backends behind the ingress device.
#[map(name = "fe_tunnel_v1")]
pub static TUNNELS: HashMap<u32, u32> = HashMap::pinned(map_sizes::TUNNELS, 0);

/// Devices with the XDP ingress program: their MAC and how translated packets may leave.
#[map(name = "fe_xdpdev_v1")]
pub static XDP_DEVS: HashMap<u32, ferrite_abi::XdpDev> = HashMap::pinned(map_sizes::XDP_DEVS, 0);

// ---- L2 announcements ----

use ferrite_abi::{L2Key, L2Value};

/// The agent's heartbeat (monotonic ns), index 0.
#[map(name = "fe_l2live_v1")]
pub static L2_LIVE: aya_ebpf::maps::Array<u64> = aya_ebpf::maps::Array::pinned(1, 0);

#[map(name = "fe_l2addr_v1")]
pub static L2_ADDRS: HashMap<L2Key, L2Value> = HashMap::pinned(map_sizes::L2_ADDRS, 0);

// ---- masquerade (TC egress of the external devices, reverse on ingress) ----

use ferrite_abi::{MasqCidr, SnatValue};

/// Both directions of every masqueraded flow (see `ferrite_abi::SnatValue`).
#[map(name = "fe_snat_v1")]
pub static SNAT: LruHashMap<CtKey, SnatValue> = LruHashMap::pinned(map_sizes::SNAT, 0);

/// The cluster's pod CIDRs (every node's): sources to masquerade, destinations never to.
#[map(name = "fe_mqpod_v1")]
pub static MASQ_PODS: LpmTrie<MasqCidr, u8> = LpmTrie::pinned(map_sizes::MASQ_PODS, 1);

/// `--masquerade-exclude`: destinations never masqueraded.
#[map(name = "fe_mqexcl_v1")]
pub static MASQ_EXCLUDE: LpmTrie<MasqCidr, u8> = LpmTrie::pinned(map_sizes::MASQ_EXCLUDE, 1);

/// The reply tuple of an inbound UDP flow being recorded (`masq::note_inbound`), per CPU and
/// not pinned: scratch space off the 512-byte stack of the ingress programs.
#[map(name = "fe_mqscratch")]
pub static MASQ_SCRATCH: PerCpuArray<CtKey> = PerCpuArray::with_max_entries(1, 0);

/// The parameters of one FIB lookup, per CPU and not pinned: scratch space off the 512-byte
/// stack (see `nat_lb::fib`).
#[map(name = "fe_fibscratch")]
pub static FIB_SCRATCH: PerCpuArray<bpf_fib_lookup> = PerCpuArray::with_max_entries(1, 0);

// ---- flow events (see `crate::flow`) ----

use aya_ebpf::maps::RingBuf;
use ferrite_abi::{FLOW_RING_BYTES, FLOW_STATS, FLOW_VERDICT_SLOTS, FlowConfig, FlowLimit};

#[map(name = "fe_flows_v1")]
pub static FLOWS: RingBuf = RingBuf::pinned(FLOW_RING_BYTES, 0);

#[map(name = "fe_flowcfg_v1")]
pub static FLOW_CONFIG: Array<FlowConfig> = Array::pinned(1, 0);

#[map(name = "fe_flowlim_v1")]
pub static FLOW_LIMIT: PerCpuArray<FlowLimit> = PerCpuArray::pinned(1, 0);

#[map(name = "fe_flowstat_v1")]
pub static FLOW_STAT: PerCpuArray<u64> = PerCpuArray::pinned(FLOW_STATS, 0);

#[map(name = "fe_flowverd_v1")]
pub static FLOW_VERDICT: PerCpuArray<u64> = PerCpuArray::pinned(FLOW_VERDICT_SLOTS, 0);

// ---- BPF host routing (see `crate::fwd`) ----

/// Pods' host-side veths on this node, by ifindex (value unused): `bpf_redirect_peer` targets.
#[map(name = "fe_poddev_v1")]
pub static POD_DEVS: HashMap<u32, u32> = HashMap::pinned(map_sizes::POD_DEVS, 0);

#[map(name = "fe_fwdstat_v1")]
pub static FWD_STATS: PerCpuArray<u64> = PerCpuArray::pinned(ferrite_abi::FWD_STATS, 0);

// ---- NetworkPolicy (see `crate::policy`) ----

use ferrite_abi::{IpInfo, PolicyCtValue, PolicyKey, PolicyValue};

/// Every pod address of the cluster → its identity (and, for local pods, endpoint and isolation).
#[map(name = "fe_ipcache_v1")]
pub static IPCACHE: HashMap<NodeAddrKey, IpInfo> = HashMap::pinned(map_sizes::IPCACHE, 0);

/// `ipBlock` prefixes (and their exceptions) → the identity of the addresses they hold.
#[map(name = "fe_polcidr_v1")]
pub static POLICY_CIDRS: LpmTrie<MasqCidr, u32> = LpmTrie::pinned(map_sizes::POLICY_CIDRS, 1);

/// What each isolated local endpoint allows.
#[map(name = "fe_policy_v1")]
pub static POLICY: LpmTrie<PolicyKey, PolicyValue> = LpmTrie::pinned(map_sizes::POLICY, 1);

/// Tuples policy allowed: a packet whose reverse tuple is here is a reply and passes.
#[map(name = "fe_polct_v1")]
pub static POLICY_CT: LruHashMap<CtKey, PolicyCtValue> =
    LruHashMap::pinned(map_sizes::POLICY_CT, 0);

/// The policy revision (bumped by the agent after every change it writes).
#[map(name = "fe_polrev_v1")]
pub static POLICY_REVISION: Array<u32> = Array::pinned(1, 0);

#[map(name = "fe_polstat_v1")]
pub static POLICY_STATS: PerCpuArray<u64> = PerCpuArray::pinned(ferrite_abi::POLICY_STAT_SLOTS, 0);
