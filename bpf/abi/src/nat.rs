//! Maps of the north-south load balancer (TC on the node's external devices): external
//! frontends (LoadBalancer IPs, externalIPs, NodePorts), Maglev tables, connection tracking with
//! NAT, the devices' own addresses and `loadBalancerSourceRanges`.

/// An external frontend's entry (key: [`crate::SvcKey`]; a NodePort has an all-zero address,
/// meaning "any address of the receiving device").
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ExtSvcValue {
    /// Row of this frontend in the Maglev array (`row * table_size + index`).
    pub ext_id: u32,
    /// Backends in the table; zero means no backend: packets are dropped.
    pub count: u16,
    pub flags: u16,
    pub _pad: u32,
}

/// `ExtSvcValue::flags`: only clients matching `fe_srcrange` may connect.
pub const EXT_FLAG_SOURCE_RANGES: u16 = 1;
/// Pick the table index at random instead of hashing the 5-tuple (annotation).
pub const EXT_FLAG_RANDOM: u16 = 2;
/// ClientIP affinity: hash the client address only, so every flow of a client lands on the
/// same backend while the backend set is stable.
pub const EXT_FLAG_CLIENT_AFFINITY: u16 = 4;
/// externalTrafficPolicy Local: the table holds only local backends; never SNAT.
pub const EXT_FLAG_LOCAL: u16 = 8;

/// A device ferrite load-balances on, by ifindex: its addresses (SNAT source, NodePort match).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DevInfo {
    pub v4: u32,
    pub flags: u32,
    pub v6: [u32; 4],
}

pub const DEV_HAS_V4: u32 = 1;
pub const DEV_HAS_V6: u32 = 2;

/// A key of the node-address map: one address of a north-south device (NodePort answers on
/// every one of them, not only the SNAT source in [`DevInfo`]); the value is the device's
/// ifindex. IPv4 uses `addr[0]`, network byte order as on the wire.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NodeAddrKey {
    pub family: u32,
    pub addr: [u32; 4],
}

/// A connection-tracking key: a packet's addresses and ports as they are on the wire.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtKey {
    pub saddr: [u32; 4],
    pub daddr: [u32; 4],
    /// Network byte order.
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}

/// What to rewrite in a packet matching a [`CtKey`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtValue {
    pub new_saddr: [u32; 4],
    pub new_daddr: [u32; 4],
    pub new_sport: u16,
    pub new_dport: u16,
    pub flags: u32,
}

/// Rewrite the source address/port.
pub const CT_REWRITE_SRC: u32 = 1;
/// Rewrite the destination address/port.
pub const CT_REWRITE_DST: u32 = 2;
/// A reply-direction entry.
pub const CT_REPLY: u32 = 4;

/// Data part of an LPM key for `loadBalancerSourceRanges`: the frontend's row, the family, then
/// the address. The trie's prefix length is `64 + prefix`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SrcRangeData {
    pub ext_id: u32,
    pub family: u32,
    pub addr: [u32; 4],
}

/// Bits of [`SrcRangeData`] before the address.
pub const SRC_RANGE_PREFIX_BITS: u32 = 64;

/// Source ports used for SNAT to a node address (kept apart from the usual ephemeral range).
pub const SNAT_PORT_MIN: u16 = 61_000;
pub const SNAT_PORT_MAX: u16 = 65_535;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: #[repr(C)], Copy, integers only, padding explicit.
    unsafe impl aya::Pod for super::ExtSvcValue {}
    unsafe impl aya::Pod for super::DevInfo {}
    unsafe impl aya::Pod for super::NodeAddrKey {}
    unsafe impl aya::Pod for super::CtKey {}
    unsafe impl aya::Pod for super::CtValue {}
    unsafe impl aya::Pod for super::SrcRangeData {}
}

#[cfg(test)]
mod tests {
    use core::mem::{offset_of, size_of};

    use super::*;

    #[test]
    fn ext_svc_value_layout() {
        assert_eq!(size_of::<ExtSvcValue>(), 12);
        assert_eq!(offset_of!(ExtSvcValue, ext_id), 0);
        assert_eq!(offset_of!(ExtSvcValue, count), 4);
        assert_eq!(offset_of!(ExtSvcValue, flags), 6);
        assert_eq!(offset_of!(ExtSvcValue, _pad), 8);
    }

    #[test]
    fn dev_info_layout() {
        assert_eq!(size_of::<DevInfo>(), 24);
        assert_eq!(offset_of!(DevInfo, v4), 0);
        assert_eq!(offset_of!(DevInfo, flags), 4);
        assert_eq!(offset_of!(DevInfo, v6), 8);
    }

    #[test]
    fn node_addr_key_layout() {
        assert_eq!(size_of::<NodeAddrKey>(), 20);
        assert_eq!(offset_of!(NodeAddrKey, family), 0);
        assert_eq!(offset_of!(NodeAddrKey, addr), 4);
    }

    #[test]
    fn ct_layout() {
        assert_eq!(size_of::<CtKey>(), 40);
        assert_eq!(offset_of!(CtKey, saddr), 0);
        assert_eq!(offset_of!(CtKey, daddr), 16);
        assert_eq!(offset_of!(CtKey, sport), 32);
        assert_eq!(offset_of!(CtKey, dport), 34);
        assert_eq!(offset_of!(CtKey, proto), 36);
        assert_eq!(offset_of!(CtKey, family), 37);
        assert_eq!(offset_of!(CtKey, _pad), 38);
        assert_eq!(size_of::<CtValue>(), 40);
        assert_eq!(offset_of!(CtValue, new_saddr), 0);
        assert_eq!(offset_of!(CtValue, new_daddr), 16);
        assert_eq!(offset_of!(CtValue, new_sport), 32);
        assert_eq!(offset_of!(CtValue, new_dport), 34);
        assert_eq!(offset_of!(CtValue, flags), 36);
    }

    #[test]
    fn src_range_layout() {
        assert_eq!(size_of::<SrcRangeData>(), 24);
        assert_eq!(offset_of!(SrcRangeData, ext_id), 0);
        assert_eq!(offset_of!(SrcRangeData, family), 4);
        assert_eq!(offset_of!(SrcRangeData, addr), 8);
        assert_eq!(
            SRC_RANGE_PREFIX_BITS as usize,
            8 * offset_of!(SrcRangeData, addr)
        );
    }
}
