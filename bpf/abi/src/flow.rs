//! Flow events: what the programs did to a connection, sent to the agent through one pinned
//! ring buffer (`fe_flows_v1`) and shown by `ferrite observe`.
//!
//! A program writes one [`FlowEvent`] per decision that starts or refuses a flow — a socket-LB
//! translation or refusal at `connect()`/`sendmsg()`, a north-south translation of a flow's
//! first packet or its drop, a new masqueraded flow — never one per packet of an established
//! flow. A per-CPU window ([`FlowLimit`]) caps events per second and CPU at the rate in
//! `fe_flowcfg_v1` (0: flows off); what the cap or a full ring drops is counted per CPU in
//! `fe_flowstat_v1` ([`FLOW_STAT_EMITTED`], …), so a flood costs a counter, not the CPU.

/// One event. Addresses as in the other maps (network byte order words, IPv4 in the first).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowEvent {
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC).
    pub ts_ns: u64,
    /// The original source (zero for socket-LB events: the socket may not be bound yet).
    pub saddr: [u32; 4],
    /// The original destination (the service frontend, the WAN peer).
    pub daddr: [u32; 4],
    /// What the flow was translated to: the backend (LB), the node address (masquerade).
    pub xaddr: [u32; 4],
    /// Network byte order, as the addresses.
    pub sport: u16,
    pub dport: u16,
    pub xport: u16,
    /// [`FLOW_KIND_SOCK_LB`], …
    pub kind: u8,
    /// A drop's `FLOW_DROP_*` reason (0 when forwarded).
    pub reason: u8,
    pub proto: u8,
    pub family: u8,
    /// The TCP flags of the packet (north-south).
    pub tcp_flags: u8,
    /// `FLOW_FLAG_*`.
    pub flags: u8,
    /// The device (TC/XDP events; 0 for socket events).
    pub ifindex: u32,
    /// The socket's cookie (socket-LB events), else 0.
    pub cookie: u64,
}

/// Socket LB: `connect()`/`sendmsg()` to a ClusterIP translated to a backend (or refused).
pub const FLOW_KIND_SOCK_LB: u8 = 1;
/// North-south: the first packet of a flow to a NodePort/LoadBalancer IP/externalIP (TC or XDP).
pub const FLOW_KIND_NORTH_SOUTH: u8 = 2;
/// Masquerade: a pod's new flow to outside the cluster, leaving with the node's address.
pub const FLOW_KIND_MASQUERADE: u8 = 3;
/// The L2 responder answered an ARP request or a neighbour solicitation for an announced
/// address (`saddr` the asker, `daddr` the address; `proto` 0, `family` says ARP or NDP).
pub const FLOW_KIND_L2: u8 = 4;
/// NetworkPolicy: a new tuple a policy allowed (`cookie`: the policy's `fe_polstat_v1` slot
/// number) or a packet denied ([`FLOW_DROP_POLICY`]); [`FLOW_FLAG_EGRESS`] says the direction.
pub const FLOW_KIND_POLICY: u8 = 5;

/// The service has no ready backend.
pub const FLOW_DROP_NO_BACKEND: u8 = 1;
/// `loadBalancerSourceRanges` does not include the client.
pub const FLOW_DROP_SOURCE_RANGE: u8 = 2;
/// A TCP segment other than a SYN for a flow the LB has no state for.
pub const FLOW_DROP_INVALID: u8 = 3;
/// No SNAT port or table entry could be had.
pub const FLOW_DROP_NO_SNAT: u8 = 4;
/// No NetworkPolicy allows it.
pub const FLOW_DROP_POLICY: u8 = 5;

/// The north-south flow was SNATed to the node (remote backend).
pub const FLOW_FLAG_SNAT: u8 = 1;
/// A policy event of the pod's egress (else its ingress).
pub const FLOW_FLAG_EGRESS: u8 = 2;

/// `fe_flowcfg_v1` (an array of one): events per second and CPU; 0 turns flows off.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowConfig {
    pub rate_per_cpu: u32,
    pub _pad: u32,
}

/// `fe_flowlim_v1` (per CPU, one entry): the current one-second window.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowLimit {
    pub window_start_ns: u64,
    pub count: u32,
    pub _pad: u32,
}

/// Indices of `fe_flowstat_v1` (per-CPU `u64` counters).
pub const FLOW_STAT_EMITTED: u32 = 0;
/// Not sent: over the per-CPU rate.
pub const FLOW_STAT_RATE_LIMITED: u32 = 1;
/// Not sent: the ring buffer was full (the agent is not reading fast enough).
pub const FLOW_STAT_RING_FULL: u32 = 2;
pub const FLOW_STATS: u32 = 3;

/// Reasons per kind in `fe_flowverd_v1`: 0 counts forwarded flows, 1.. the `FLOW_DROP_*`.
pub const FLOW_VERDICT_REASONS: u32 = 8;
/// Kinds `fe_flowverd_v1` has room for (`FLOW_KIND_*` are below).
pub const FLOW_VERDICT_KINDS: u32 = 8;
/// Slots of `fe_flowverd_v1` (per-CPU `u64`): every flow decided, sent as an event or not.
pub const FLOW_VERDICT_SLOTS: u32 = FLOW_VERDICT_KINDS * FLOW_VERDICT_REASONS;

/// The `fe_flowverd_v1` slot of a flow of `kind` (`FLOW_KIND_*`) with drop `reason` (0:
/// forwarded); out-of-range values share the last slot of their kind rather than overflow.
#[must_use]
pub const fn flow_verdict_slot(kind: u8, reason: u8) -> u32 {
    let kind = if kind as u32 >= FLOW_VERDICT_KINDS {
        0
    } else {
        kind as u32
    };
    let reason = if reason as u32 >= FLOW_VERDICT_REASONS {
        FLOW_VERDICT_REASONS - 1
    } else {
        reason as u32
    };
    kind * FLOW_VERDICT_REASONS + reason
}

/// Bytes of the ring buffer (a power of two, a multiple of the page size): ≈3,200 events.
pub const FLOW_RING_BYTES: u32 = 256 * 1024;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: #[repr(C)], Copy, integers only, padding explicit.
    unsafe impl aya::Pod for super::FlowEvent {}
    unsafe impl aya::Pod for super::FlowConfig {}
    unsafe impl aya::Pod for super::FlowLimit {}
}

#[cfg(test)]
mod tests {
    use core::mem::{align_of, offset_of, size_of};

    use super::*;

    #[test]
    fn flow_event_layout() {
        assert_eq!(size_of::<FlowEvent>(), 80);
        assert_eq!(align_of::<FlowEvent>(), 8);
        assert_eq!(offset_of!(FlowEvent, ts_ns), 0);
        assert_eq!(offset_of!(FlowEvent, saddr), 8);
        assert_eq!(offset_of!(FlowEvent, daddr), 24);
        assert_eq!(offset_of!(FlowEvent, xaddr), 40);
        assert_eq!(offset_of!(FlowEvent, sport), 56);
        assert_eq!(offset_of!(FlowEvent, dport), 58);
        assert_eq!(offset_of!(FlowEvent, xport), 60);
        assert_eq!(offset_of!(FlowEvent, kind), 62);
        assert_eq!(offset_of!(FlowEvent, reason), 63);
        assert_eq!(offset_of!(FlowEvent, proto), 64);
        assert_eq!(offset_of!(FlowEvent, family), 65);
        assert_eq!(offset_of!(FlowEvent, tcp_flags), 66);
        assert_eq!(offset_of!(FlowEvent, flags), 67);
        assert_eq!(offset_of!(FlowEvent, ifindex), 68);
        assert_eq!(offset_of!(FlowEvent, cookie), 72);
    }

    #[test]
    fn flow_config_and_limit_layout() {
        assert_eq!(size_of::<FlowConfig>(), 8);
        assert_eq!(offset_of!(FlowConfig, rate_per_cpu), 0);
        assert_eq!(offset_of!(FlowConfig, _pad), 4);
        assert_eq!(size_of::<FlowLimit>(), 16);
        assert_eq!(offset_of!(FlowLimit, window_start_ns), 0);
        assert_eq!(offset_of!(FlowLimit, count), 8);
        assert_eq!(offset_of!(FlowLimit, _pad), 12);
    }

    #[test]
    fn ring_size_is_a_power_of_two_of_pages() {
        assert!(FLOW_RING_BYTES.is_power_of_two());
        assert_eq!(FLOW_RING_BYTES % 4096, 0);
    }

    #[test]
    fn verdict_slots_are_distinct_and_in_range() {
        let mut seen = 0u64;
        for kind in 0..8u8 {
            for reason in 0..8u8 {
                let slot = flow_verdict_slot(kind, reason);
                assert!(slot < FLOW_VERDICT_SLOTS);
                assert_eq!(seen & (1 << slot), 0, "{kind}/{reason} shares slot {slot}");
                seen |= 1 << slot;
            }
        }
        assert_eq!(seen, u64::MAX, "every slot used once");
        assert_eq!(flow_verdict_slot(9, 200), flow_verdict_slot(0, 7));
        assert_eq!(
            flow_verdict_slot(FLOW_KIND_SOCK_LB, FLOW_DROP_NO_BACKEND),
            9
        );
    }
}
