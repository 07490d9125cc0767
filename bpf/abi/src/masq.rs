//! Maps of the eBPF masquerade (TC egress of the external devices, reverse on ingress): the
//! cluster's pod CIDRs, the `--masquerade-exclude` list and the SNAT table.
//!
//! The SNAT table is keyed by [`crate::CtKey`] (a packet's tuple as on the wire) and holds both
//! directions of a flow: the pod's original tuple → the node address and port it leaves with
//! ([`SNAT_FLAG_EGRESS`]), and the reply tuple to that node address and port → the pod's address
//! and port ([`SNAT_FLAG_REPLY`]); and, for UDP flows opened from outside to a pod's address,
//! the pod's reply tuple marked [`SNAT_FLAG_INBOUND`] so those replies keep the pod's address
//! (TCP needs no entry: only a SYN opens a masqueraded flow). For ICMP echo the identifier is the "port": a request's
//! `sport`, a reply's `dport` (the other one is zero).

/// Data part of an LPM key of `fe_mqpod` / `fe_mqexcl`: the family, then the address. The
/// trie's prefix length is [`MASQ_CIDR_PREFIX_BITS`] + the CIDR's length.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MasqCidr {
    pub family: u32,
    pub addr: [u32; 4],
}

/// Bits of [`MasqCidr`] before the address.
pub const MASQ_CIDR_PREFIX_BITS: u32 = 32;

/// A SNAT table value: what the matching packet's address and port become (the source for an
/// egress entry, the destination for a reply entry).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SnatValue {
    pub addr: [u32; 4],
    /// Network byte order (the ICMP echo identifier for ICMP).
    pub port: u16,
    pub flags: u16,
    pub _pad: u32,
}

/// `SnatValue::flags`: a pod's flow leaving the node (rewrite the source).
pub const SNAT_FLAG_EGRESS: u16 = 1;
/// `SnatValue::flags`: a reply to a masqueraded flow (rewrite the destination).
pub const SNAT_FLAG_REPLY: u16 = 2;
/// `SnatValue::flags`: the tuple of a pod's replies to a UDP flow someone outside the cluster
/// sent to the pod's own address (a routed pod CIDR): never masqueraded, the peer must see the
/// address it talked to. `addr` and `port` are unused.
pub const SNAT_FLAG_INBOUND: u16 = 4;

/// Source ports (and ICMP identifiers) the masquerade allocates on the node's address. The
/// north-south LB's SNAT uses the same range on the same address; each allocator checks the
/// other's table, so a reply tuple always belongs to one of them.
pub const MASQ_PORT_MIN: u16 = crate::SNAT_PORT_MIN;
pub const MASQ_PORT_MAX: u16 = crate::SNAT_PORT_MAX;

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_ICMPV6: u8 = 58;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: #[repr(C)], Copy, integers only, padding explicit.
    unsafe impl aya::Pod for super::MasqCidr {}
    unsafe impl aya::Pod for super::SnatValue {}
}

#[cfg(test)]
mod tests {
    use core::mem::{offset_of, size_of};

    use super::*;

    #[test]
    fn masq_cidr_layout() {
        assert_eq!(size_of::<MasqCidr>(), 20);
        assert_eq!(offset_of!(MasqCidr, family), 0);
        assert_eq!(offset_of!(MasqCidr, addr), 4);
        assert_eq!(
            MASQ_CIDR_PREFIX_BITS as usize,
            8 * offset_of!(MasqCidr, addr)
        );
    }

    #[test]
    fn snat_value_layout() {
        assert_eq!(size_of::<SnatValue>(), 24);
        assert_eq!(offset_of!(SnatValue, addr), 0);
        assert_eq!(offset_of!(SnatValue, port), 16);
        assert_eq!(offset_of!(SnatValue, flags), 18);
        assert_eq!(offset_of!(SnatValue, _pad), 20);
    }
}
