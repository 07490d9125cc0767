//! The L2 responder's map: addresses this node announces, per interface.

/// The responder answers only while the agent's heartbeat (CLOCK_MONOTONIC ns in the one-entry
/// `fe_l2live_v1` array, refreshed every 50 ms by the agent's heartbeat thread) is at most this
/// old: a killed or frozen agent stops claiming its addresses within 250 ms, before the other
/// nodes declare it dead (≈0.5 s), while the rest of the datapath keeps running.
pub const L2_HEARTBEAT_GRACE_NS: u64 = 250_000_000;

/// Key: an announced address on one interface.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct L2Key {
    pub addr: [u32; 4],
    pub ifindex: u32,
    pub family: u8,
    pub _pad: [u8; 3],
}

/// The MAC to answer with (the interface's own).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct L2Value {
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: #[repr(C)], Copy, integers only, padding explicit.
    unsafe impl aya::Pod for super::L2Key {}
    unsafe impl aya::Pod for super::L2Value {}
}

#[cfg(test)]
mod tests {
    use core::mem::{offset_of, size_of};

    use super::*;

    #[test]
    fn l2_layout() {
        assert_eq!(size_of::<L2Key>(), 24);
        assert_eq!(offset_of!(L2Key, addr), 0);
        assert_eq!(offset_of!(L2Key, ifindex), 16);
        assert_eq!(offset_of!(L2Key, family), 20);
        assert_eq!(offset_of!(L2Key, _pad), 21);
        assert_eq!(size_of::<L2Value>(), 8);
        assert_eq!(offset_of!(L2Value, mac), 0);
        assert_eq!(offset_of!(L2Value, _pad), 6);
    }
}
