//! NetworkPolicy: identities, the allow rules of local pods, and the connections they allowed.
//!
//! Every pod address of the cluster maps to a numeric identity (one per distinct set of
//! namespace and pod labels) in `fe_ipcache_v1`; a local pod's entry also carries its endpoint
//! number and whether it is isolated for ingress / egress. Addresses no pod holds get the
//! identity of the longest `ipBlock` prefix that holds them (`fe_polcidr_v1`, an LPM trie), or
//! [`IDENTITY_WORLD`]. `fe_policy_v1` (an LPM trie over [`PolicyKey`]) holds what each isolated
//! local endpoint allows: a full key is one port; a shorter prefix covers a port range, every
//! port of a protocol, or every protocol. `fe_polct_v1` remembers the tuples policy allowed so
//! the replies of an allowed connection pass (the reverse tuple is looked up), and so that the
//! next packets of an allowed tuple skip the rule lookup while `fe_polrev_v1` (one `u32`, bumped
//! by the agent after every change it writes) still holds the revision they were allowed under:
//! any change re-evaluates every flow once, so a revoked allow also stops established flows.

/// Any peer (a rule without `from` / `to`).
pub const IDENTITY_ANY: u32 = 0;
/// Every address of the node's own network namespace (it always reaches its pods).
pub const IDENTITY_HOST: u32 = 1;
/// An address no pod and no `ipBlock` holds.
pub const IDENTITY_WORLD: u32 = 2;
/// Pod identities are at least this (below: reserved).
pub const IDENTITY_POD_MIN: u32 = 256;
/// CIDR identities have this bit set (pod identities never).
pub const IDENTITY_CIDR_BIT: u32 = 0x8000_0000;

/// `IpInfo::flags`: the local endpoint is isolated for ingress (selected by an ingress policy).
pub const POLICY_ISOLATED_INGRESS: u32 = 1;
/// `IpInfo::flags`: isolated for egress.
pub const POLICY_ISOLATED_EGRESS: u32 = 2;

/// `PolicyKey::direction`.
pub const POLICY_INGRESS: u8 = 1;
pub const POLICY_EGRESS: u8 = 2;

/// `fe_ipcache_v1` value (keyed by `NodeAddrKey`: family, address).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IpInfo {
    pub identity: u32,
    /// This node's endpoint number for a local pod, 0 for everything else.
    pub endpoint: u32,
    /// `POLICY_ISOLATED_*`.
    pub flags: u32,
    pub _pad: u32,
}

/// Data of an `fe_policy_v1` LPM key. The fields are matched in memory order: endpoint,
/// identity and direction always (72 bits), then optionally the protocol (80), then a prefix
/// of the destination port (network byte order, 80..=96 bits).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyKey {
    pub endpoint: u32,
    pub identity: u32,
    pub direction: u8,
    pub proto: u8,
    pub dport: u16,
}

/// Prefix bits of a [`PolicyKey`] matching every protocol and port.
pub const POLICY_PREFIX_ANY_PROTO: u32 = 72;
/// … every port of one protocol.
pub const POLICY_PREFIX_ANY_PORT: u32 = 80;
/// … exactly one port.
pub const POLICY_PREFIX_FULL: u32 = 96;

/// `fe_policy_v1` value: the (1-based) slot of the policy that allowed it in `fe_polstat_v1`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PolicyValue {
    pub policy: u32,
    pub _pad: u32,
}

/// Slots of `fe_polstat_v1` (per-CPU `u64`): allowed by policy `n` in direction `d` at
/// `2 * n + (d - 1)`; slots 0 and 1 count packets denied on ingress / egress.
pub const POLICY_STAT_SLOTS: u32 = 2 * 4_096;

/// The `fe_polstat_v1` slot counting packets `policy` (1-based; 0 = denied) allowed in
/// `direction` (`POLICY_INGRESS` / `POLICY_EGRESS`); out of range → the last slot.
#[must_use]
pub const fn policy_stat_slot(policy: u32, direction: u8) -> u32 {
    let d = if direction == POLICY_EGRESS { 1 } else { 0 };
    let slot = policy.saturating_mul(2).saturating_add(d);
    if slot >= POLICY_STAT_SLOTS {
        POLICY_STAT_SLOTS - 1
    } else {
        slot
    }
}

/// `fe_polct_v1` value: which check allowed the tuple, under which revision.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PolicyCtValue {
    /// `POLICY_INGRESS` / `POLICY_EGRESS` bits (1 << direction).
    pub allowed: u32,
    /// `fe_polrev_v1` when it was allowed.
    pub revision: u32,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: #[repr(C)], Copy, integers only, padding explicit.
    unsafe impl aya::Pod for super::IpInfo {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PolicyKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PolicyValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PolicyCtValue {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn layouts() {
        assert_eq!(size_of::<IpInfo>(), 16);
        assert_eq!(offset_of!(IpInfo, identity), 0);
        assert_eq!(offset_of!(IpInfo, endpoint), 4);
        assert_eq!(offset_of!(IpInfo, flags), 8);
        assert_eq!(offset_of!(IpInfo, _pad), 12);
        assert_eq!(size_of::<PolicyKey>(), 12);
        assert_eq!(offset_of!(PolicyKey, endpoint), 0);
        assert_eq!(offset_of!(PolicyKey, identity), 4);
        assert_eq!(offset_of!(PolicyKey, direction), 8);
        assert_eq!(offset_of!(PolicyKey, proto), 9);
        assert_eq!(offset_of!(PolicyKey, dport), 10);
        assert_eq!(size_of::<PolicyValue>(), 8);
        assert_eq!(size_of::<PolicyCtValue>(), 8);
        assert_eq!(offset_of!(PolicyCtValue, allowed), 0);
        assert_eq!(offset_of!(PolicyCtValue, revision), 4);
    }

    #[test]
    fn prefixes_cover_the_fields_in_order() {
        assert_eq!(
            POLICY_PREFIX_ANY_PROTO as usize,
            8 * offset_of!(PolicyKey, proto)
        );
        assert_eq!(
            POLICY_PREFIX_ANY_PORT as usize,
            8 * offset_of!(PolicyKey, dport)
        );
        assert_eq!(POLICY_PREFIX_FULL as usize, 8 * size_of::<PolicyKey>());
    }

    #[test]
    fn stat_slots_stay_in_range() {
        assert_eq!(policy_stat_slot(0, POLICY_INGRESS), 0);
        assert_eq!(policy_stat_slot(0, POLICY_EGRESS), 1);
        assert_eq!(policy_stat_slot(3, POLICY_EGRESS), 7);
        assert_eq!(
            policy_stat_slot(u32::MAX, POLICY_INGRESS),
            POLICY_STAT_SLOTS - 1
        );
    }
}
