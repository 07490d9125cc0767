//! The optional XDP attach of the north-south load balancer: what the XDP program needs to know
//! about a device that the skb would have told the TC program.

/// An external device with ferrite's XDP program, by ifindex (`fe_xdpdev`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct XdpDev {
    /// The device's MAC: frames for other destinations (flooded, promiscuous) are not ours.
    pub mac: [u8; 6],
    pub flags: u16,
}

/// `XdpDev::flags`: translated packets that leave through this same device may be sent with
/// `XDP_REDIRECT` (native mode on a driver with `ndo_xdp_xmit` that needs nothing on a peer).
pub const XDP_DEV_TX: u16 = 1;
/// `XdpDev::flags`: the program runs in generic (skb) mode here, where `XDP_REDIRECT` reaches
/// any device; translated packets follow the FIB's answer directly.
pub const XDP_DEV_GENERIC: u16 = 2;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: #[repr(C)], Copy, integers only, no padding.
    unsafe impl aya::Pod for super::XdpDev {}
}

#[cfg(test)]
mod tests {
    use core::mem::{offset_of, size_of};

    use super::*;

    #[test]
    fn xdp_dev_layout() {
        assert_eq!(size_of::<XdpDev>(), 8);
        assert_eq!(offset_of!(XdpDev, mac), 0);
        assert_eq!(offset_of!(XdpDev, flags), 6);
    }
}
