//! Optional XDP attach of the north-south ingress translation (`--xdp`): which hook each device
//! gets (pure plan), and the raw link syscalls that attach an XDP program through a pinnable
//! `bpf_link` in a given mode.

use std::fmt;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::str::FromStr;

/// `--xdp`: where the ingress translation of the external devices runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum XdpMode {
    /// TC (TCX) only.
    #[default]
    Off,
    /// Native XDP, else generic XDP, else TC.
    Auto,
    /// Native XDP, else TC.
    Native,
    /// Generic (skb) XDP, else TC.
    Generic,
}

impl FromStr for XdpMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "off" => Ok(Self::Off),
            "auto" => Ok(Self::Auto),
            "native" => Ok(Self::Native),
            "generic" => Ok(Self::Generic),
            other => Err(format!(
                "--xdp {other:?}: expected off, auto, native or generic"
            )),
        }
    }
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Off => "off",
            Self::Auto => "auto",
            Self::Native => "native",
            Self::Generic => "generic",
        })
    }
}

/// The hook that runs a device's ingress translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IngressHook {
    XdpNative,
    XdpGeneric,
    Tc,
}

impl IngressHook {
    /// As the API reports it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::XdpNative => "xdp-native",
            Self::XdpGeneric => "xdp-generic",
            Self::Tc => "tc",
        }
    }

    /// The pin of this hook on `device` under `backend` (see [`super::ladder::PinName`]).
    #[must_use]
    pub fn pin(self, device: &str, backend: super::TcBackend) -> super::ladder::PinName {
        match self {
            Self::XdpNative => super::ladder::PinName::xdp(backend, device, false),
            Self::XdpGeneric => super::ladder::PinName::xdp(backend, device, true),
            Self::Tc => {
                super::ladder::PinName::host(backend, device, super::tcnl::Direction::Ingress)
            }
        }
    }

    /// File name of the pin under `<bpf-root>/links`.
    #[must_use]
    pub fn pin_name(self, device: &str, backend: super::TcBackend) -> String {
        self.pin(device, backend).file_name()
    }

    fn xdp_flags(self) -> u32 {
        match self {
            Self::XdpNative => XDP_FLAGS_DRV_MODE,
            Self::XdpGeneric => XDP_FLAGS_SKB_MODE,
            Self::Tc => 0,
        }
    }
}

impl fmt::Display for IngressHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The hooks to try, in order, for `mode`. TC is always last: whatever XDP cannot do, the
/// device still gets its ingress translation and traffic never stops.
#[must_use]
pub fn plan(mode: XdpMode) -> &'static [IngressHook] {
    match mode {
        XdpMode::Off => &[IngressHook::Tc],
        XdpMode::Auto => &[
            IngressHook::XdpNative,
            IngressHook::XdpGeneric,
            IngressHook::Tc,
        ],
        XdpMode::Native => &[IngressHook::XdpNative, IngressHook::Tc],
        XdpMode::Generic => &[IngressHook::XdpGeneric, IngressHook::Tc],
    }
}

/// Pins of ingress hooks of `device` other than `keep` under `backend`, and of every hook
/// under the other backend: they are removed once `keep` is in place, so exactly one ingress
/// translator stays attached.
#[must_use]
pub fn other_pins(device: &str, keep: IngressHook, backend: super::TcBackend) -> Vec<String> {
    let all = [
        IngressHook::XdpNative,
        IngressHook::XdpGeneric,
        IngressHook::Tc,
    ];
    let mine = all
        .into_iter()
        .filter(|h| *h != keep)
        .map(|h| h.pin(device, backend));
    let theirs = all
        .into_iter()
        .map(|h| h.pin(device, backend).counterpart());
    mine.chain(theirs).map(|p| p.file_name()).collect()
}

/// Whether translated packets may be sent back out of the receiving device with `XDP_TX` in
/// native mode. A veth transmits XDP frames only into a peer with NAPI (an XDP program or GRO
/// on the peer, which lives in another namespace the agent does not manage), so there the
/// program hands translated packets to the stack instead.
#[must_use]
pub fn native_tx_capable(driver: &str) -> bool {
    driver != "veth"
}

const XDP_FLAGS_SKB_MODE: u32 = 2;
const XDP_FLAGS_DRV_MODE: u32 = 4;
/// `enum bpf_attach_type` BPF_XDP.
const BPF_XDP: u32 = 37;

/// `BPF_LINK_CREATE` of an XDP link on `ifindex` in `hook`'s mode.
pub fn link_create(
    prog: BorrowedFd<'_>,
    ifindex: u32,
    hook: IngressHook,
) -> std::io::Result<OwnedFd> {
    super::link::link_create(prog, ifindex, BPF_XDP, hook.xdp_flags())
}

const ETHTOOL_GDRVINFO: u32 = 3;

/// `struct ethtool_drvinfo` (uapi/linux/ethtool.h).
#[repr(C)]
struct DrvInfo {
    cmd: u32,
    driver: [u8; 32],
    version: [u8; 32],
    fw_version: [u8; 32],
    bus_info: [u8; 32],
    erom_version: [u8; 32],
    reserved2: [u8; 12],
    n_priv_flags: u32,
    n_stats: u32,
    testinfo_len: u32,
    eedump_len: u32,
    regdump_len: u32,
}

/// The kernel driver of `ifname` (`ETHTOOL_GDRVINFO`), e.g. "veth".
pub fn driver(ifname: &str) -> std::io::Result<String> {
    // SAFETY: a plain socket used only for the ioctl; closed by OwnedFd.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a new socket we own.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: all-zero is a valid DrvInfo and ifreq.
    let mut info: DrvInfo = unsafe { std::mem::zeroed() };
    info.cmd = ETHTOOL_GDRVINFO;
    // SAFETY: as above.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = ifname.as_bytes();
    if bytes.len() >= req.ifr_name.len() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "interface name too long",
        ));
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = libc::c_char::from_ne_bytes([*src]);
    }
    req.ifr_ifru.ifru_data = (&raw mut info).cast();
    // SAFETY: SIOCETHTOOL with a valid ifreq pointing at a DrvInfo that outlives the call.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL as _, &raw mut req) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let end = info.driver.iter().position(|b| *b == 0).unwrap_or(32);
    Ok(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_print_back() {
        for m in ["off", "auto", "native", "generic"] {
            assert_eq!(m.parse::<XdpMode>().unwrap().to_string(), m);
        }
        assert!("drv".parse::<XdpMode>().is_err());
        assert!("".parse::<XdpMode>().is_err());
        assert_eq!(XdpMode::default(), XdpMode::Off);
    }

    #[test]
    fn every_plan_ends_with_tc_and_tries_only_what_was_asked() {
        use IngressHook::{Tc, XdpGeneric, XdpNative};
        assert_eq!(plan(XdpMode::Off), &[Tc]);
        assert_eq!(plan(XdpMode::Auto), &[XdpNative, XdpGeneric, Tc]);
        assert_eq!(plan(XdpMode::Native), &[XdpNative, Tc]);
        assert_eq!(plan(XdpMode::Generic), &[XdpGeneric, Tc]);
    }

    #[test]
    fn switching_hooks_removes_the_other_hooks_and_the_other_backends_pins() {
        use super::super::TcBackend::{Legacy, Tcx};
        assert_eq!(
            other_pins("eth0", IngressHook::Tc, Tcx),
            [
                "xdp_eth0_native",
                "xdp_eth0_generic",
                "xdpnl_eth0_native",
                "xdpnl_eth0_generic",
                "tc_eth0_ingress"
            ]
        );
        assert_eq!(
            other_pins("eth0", IngressHook::XdpNative, Legacy),
            [
                "xdpnl_eth0_generic",
                "tc_eth0_ingress",
                "xdp_eth0_native",
                "xdp_eth0_generic",
                "tcx_eth0_ingress"
            ]
        );
        // The TC ingress pin name is the one the TC attach has always used.
        assert_eq!(IngressHook::Tc.pin_name("eth0", Tcx), "tcx_eth0_ingress");
        assert_eq!(IngressHook::XdpGeneric.as_str(), "xdp-generic");
    }

    #[test]
    fn veth_never_gets_xdp_tx() {
        assert!(!native_tx_capable("veth"));
        assert!(native_tx_capable("ixgbe"));
    }

    #[test]
    fn the_driver_of_an_unknown_device_is_an_error() {
        assert!(driver("no-such-dev0").is_err());
        assert!(driver("a-name-longer-than-ifnamsiz").is_err());
    }
}
