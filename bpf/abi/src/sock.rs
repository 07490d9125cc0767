//! Maps of the socket-level load balancer (cgroup `connect`/`sendmsg`/`recvmsg`/`getpeername`).
//!
//! A frontend (`SvcKey` → `SvcValue`) owns `count` slots (`SlotKey` → backend id), each pointing
//! at a `Backend`. Userspace writes backends, then slots, then the frontend, so the kernel never
//! sees a frontend whose slots are not there yet.

/// A frontend: service address, port and protocol.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SvcKey {
    /// IPv4 in `addr[0]`, rest zero; IPv6 in all four words (network order).
    pub addr: [u32; 4],
    /// Network byte order.
    pub port: u16,
    pub proto: u8,
    pub family: u8,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SvcValue {
    pub svc_id: u32,
    /// Number of slots `0..count`; zero means "no ready endpoint": connect fails with ECONNREFUSED.
    pub count: u16,
    pub flags: u16,
    pub affinity_timeout_s: u32,
    pub _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlotKey {
    pub svc_id: u32,
    pub slot: u16,
    pub _pad: u16,
}

/// A backend address; ids (the map key, `u32`) start at 1.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Backend {
    pub addr: [u32; 4],
    /// Network byte order.
    pub port: u16,
    pub family: u8,
    pub _pad: u8,
}

/// ClientIP affinity at the socket layer is keyed by the client's network namespace cookie (the
/// socket has no source address yet at `connect()` time).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AffinityKey {
    pub netns_cookie: u64,
    pub svc_id: u32,
    pub _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AffinityValue {
    pub last_used_ns: u64,
    pub backend_id: u32,
    pub _pad: u32,
}

/// Reverse translation for `recvmsg`/`getpeername`: (socket cookie, backend) → frontend.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RevNatKey {
    pub cookie: u64,
    pub addr: [u32; 4],
    pub port: u16,
    pub family: u8,
    pub _pad: [u8; 5],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RevNatValue {
    pub addr: [u32; 4],
    pub port: u16,
    pub family: u8,
    pub _pad: u8,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: every type is #[repr(C)], Copy, made only of integers, with all padding explicit.
    unsafe impl aya::Pod for super::SvcKey {}
    unsafe impl aya::Pod for super::SvcValue {}
    unsafe impl aya::Pod for super::SlotKey {}
    unsafe impl aya::Pod for super::Backend {}
    unsafe impl aya::Pod for super::AffinityKey {}
    unsafe impl aya::Pod for super::AffinityValue {}
    unsafe impl aya::Pod for super::RevNatKey {}
    unsafe impl aya::Pod for super::RevNatValue {}
}

#[cfg(test)]
mod tests {
    use core::mem::{align_of, offset_of, size_of};

    use super::*;

    #[test]
    fn svc_key_layout() {
        assert_eq!(size_of::<SvcKey>(), 20);
        assert_eq!(align_of::<SvcKey>(), 4);
        assert_eq!(offset_of!(SvcKey, addr), 0);
        assert_eq!(offset_of!(SvcKey, port), 16);
        assert_eq!(offset_of!(SvcKey, proto), 18);
        assert_eq!(offset_of!(SvcKey, family), 19);
    }

    #[test]
    fn svc_value_layout() {
        assert_eq!(size_of::<SvcValue>(), 16);
        assert_eq!(offset_of!(SvcValue, svc_id), 0);
        assert_eq!(offset_of!(SvcValue, count), 4);
        assert_eq!(offset_of!(SvcValue, flags), 6);
        assert_eq!(offset_of!(SvcValue, affinity_timeout_s), 8);
        assert_eq!(offset_of!(SvcValue, _pad), 12);
    }

    #[test]
    fn slot_key_layout() {
        assert_eq!(size_of::<SlotKey>(), 8);
        assert_eq!(offset_of!(SlotKey, svc_id), 0);
        assert_eq!(offset_of!(SlotKey, slot), 4);
        assert_eq!(offset_of!(SlotKey, _pad), 6);
    }

    #[test]
    fn backend_layout() {
        assert_eq!(size_of::<Backend>(), 20);
        assert_eq!(offset_of!(Backend, addr), 0);
        assert_eq!(offset_of!(Backend, port), 16);
        assert_eq!(offset_of!(Backend, family), 18);
        assert_eq!(offset_of!(Backend, _pad), 19);
    }

    #[test]
    fn affinity_layout() {
        assert_eq!(size_of::<AffinityKey>(), 16);
        assert_eq!(align_of::<AffinityKey>(), 8);
        assert_eq!(offset_of!(AffinityKey, netns_cookie), 0);
        assert_eq!(offset_of!(AffinityKey, svc_id), 8);
        assert_eq!(offset_of!(AffinityKey, _pad), 12);
        assert_eq!(size_of::<AffinityValue>(), 16);
        assert_eq!(offset_of!(AffinityValue, last_used_ns), 0);
        assert_eq!(offset_of!(AffinityValue, backend_id), 8);
        assert_eq!(offset_of!(AffinityValue, _pad), 12);
    }

    #[test]
    fn revnat_layout() {
        assert_eq!(size_of::<RevNatKey>(), 32);
        assert_eq!(offset_of!(RevNatKey, cookie), 0);
        assert_eq!(offset_of!(RevNatKey, addr), 8);
        assert_eq!(offset_of!(RevNatKey, port), 24);
        assert_eq!(offset_of!(RevNatKey, family), 26);
        assert_eq!(offset_of!(RevNatKey, _pad), 27);
        assert_eq!(size_of::<RevNatValue>(), 20);
        assert_eq!(offset_of!(RevNatValue, addr), 0);
        assert_eq!(offset_of!(RevNatValue, port), 16);
        assert_eq!(offset_of!(RevNatValue, family), 18);
        assert_eq!(offset_of!(RevNatValue, _pad), 19);
    }
}
