//! The TC attach ladder: TCX links (Linux ≥ 6.6) when the kernel has them, else the legacy
//! `clsact` + `cls_bpf` direct-action filter over netlink (see [`super::tcnl`]). `--tc-attach`
//! forces one; `legacy` also puts XDP on the link over netlink instead of a `bpf_link`. The
//! choice is made once per agent ([`resolve`], pure) from a probe of the running kernel.

use std::fmt;
use std::str::FromStr;

use aya::programs::{SchedClassifier, TcAttachType};

/// `--tc-attach`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TcAttach {
    /// TCX when the kernel has it, else legacy.
    #[default]
    Auto,
    Tcx,
    Legacy,
}

impl FromStr for TcAttach {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "auto" => Ok(Self::Auto),
            "tcx" => Ok(Self::Tcx),
            "legacy" => Ok(Self::Legacy),
            other => Err(format!(
                "--tc-attach {other:?}: expected auto, tcx or legacy"
            )),
        }
    }
}

impl fmt::Display for TcAttach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Tcx => "tcx",
            Self::Legacy => "legacy",
        })
    }
}

/// How TC programs (and XDP) are attached by this agent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TcBackend {
    /// TCX `bpf_link`s (pinned), XDP `bpf_link`s (pinned).
    #[default]
    Tcx,
    /// clsact + cls_bpf at ferrite's priority/handle, XDP over netlink; the programs are pinned
    /// as the record of what is attached.
    Legacy,
}

impl TcBackend {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcx => "tcx",
            Self::Legacy => "legacy",
        }
    }
}

impl fmt::Display for TcBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The backend for `flag` on a kernel that has TCX or not; forcing TCX on a kernel without it
/// is an error naming the kernel that has it.
pub fn resolve(flag: TcAttach, tcx_available: bool) -> Result<TcBackend, String> {
    match (flag, tcx_available) {
        (TcAttach::Legacy, _) | (TcAttach::Auto, false) => Ok(TcBackend::Legacy),
        (TcAttach::Tcx | TcAttach::Auto, true) => Ok(TcBackend::Tcx),
        (TcAttach::Tcx, false) => Err(
            "--tc-attach tcx: this kernel has no TCX (BPF_TCX_INGRESS needs Linux 6.6); \
             use --tc-attach auto or legacy"
                .into(),
        ),
    }
}

/// Whether the running kernel (and this network namespace) has TCX: a `BPF_PROG_QUERY` of
/// `lo`'s TCX ingress succeeds where the attach type exists and is `EINVAL` before 6.6.
#[must_use]
pub fn tcx_available() -> bool {
    SchedClassifier::query_tcx("lo", TcAttachType::Ingress).is_ok()
}

/// What a link pin under `<bpf-root>/links` stands for, from its file name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PinName {
    /// `tcx_<dev>_<ingress|egress>` (TCX link).
    TcxHost {
        dev: String,
        dir: super::tcnl::Direction,
    },
    /// `tc_<dev>_<ingress|egress>`: legacy filter of the north-south programs.
    LegacyHost {
        dev: String,
        dir: super::tcnl::Direction,
    },
    /// `l2_<dev>` (TCX link of the L2 responder).
    TcxL2 { dev: String },
    /// `l2tc_<dev>`: legacy filter of the L2 responder.
    LegacyL2 { dev: String },
    /// `xdp_<dev>_<native|generic>` (XDP link).
    XdpLink { dev: String, generic: bool },
    /// `xdpnl_<dev>_<native|generic>`: XDP set over netlink.
    XdpNetlink { dev: String, generic: bool },
    /// `pod_<dev>` (TCX link of BPF host routing on a pod's veth).
    TcxPod { dev: String },
    /// `podtc_<dev>`: legacy filter of BPF host routing on a pod's veth.
    LegacyPod { dev: String },
    /// `podnk_<dev>` (netkit link of BPF host routing on a pod's netkit device, run as the pod
    /// transmits).
    NetkitPod { dev: String },
    /// `podpol_<dev>` (TCX link of the pod's egress policy alone on its veth's ingress:
    /// `--host-routing legacy`, where the stack routes).
    TcxPodPolicy { dev: String },
    /// `podpoltc_<dev>`: legacy filter of the same.
    LegacyPodPolicy { dev: String },
    /// `podeg_<dev>` (TCX link of the pod's ingress policy on its veth's egress).
    TcxPodEgress { dev: String },
    /// `podegtc_<dev>`: legacy filter of the same.
    LegacyPodEgress { dev: String },
    /// `tun_<dev>` (TCX link of BPF host routing on ferrite's overlay device's ingress).
    TcxTunnel { dev: String },
    /// `tuntc_<dev>`: legacy filter of BPF host routing on the overlay device.
    LegacyTunnel { dev: String },
}

/// bpffs refuses names with a dot (`ferrite.vxlan`, VLAN devices like `eth0.100`): pin file
/// names carry this instead.
const DOT_ESCAPE: &str = "%";

/// cls_bpf priorities ferrite owns (lower runs first): the L2 responder answers before the
/// north-south programs look at a frame, as `LinkOrder::first()` does under TCX.
pub const PRIO_L2: u16 = 0xfe00;
pub const PRIO_HOST: u16 = 0xfe01;

fn split_dir(rest: &str) -> Option<(String, super::tcnl::Direction)> {
    let (dev, dir) = rest.rsplit_once('_')?;
    let dir = match dir {
        "ingress" => super::tcnl::Direction::Ingress,
        "egress" => super::tcnl::Direction::Egress,
        _ => return None,
    };
    (!dev.is_empty()).then(|| (dev.to_owned(), dir))
}

fn split_mode(rest: &str) -> Option<(String, bool)> {
    let (dev, mode) = rest.rsplit_once('_')?;
    let generic = match mode {
        "native" => false,
        "generic" => true,
        _ => return None,
    };
    (!dev.is_empty()).then(|| (dev.to_owned(), generic))
}

impl PinName {
    /// Parses a pin's file name; `None` for pins that are not device hooks (e.g. cgroup links).
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        let unescaped = name.replace(DOT_ESCAPE, ".");
        let name = unescaped.as_str();
        if let Some(rest) = name.strip_prefix("tcx_") {
            let (dev, dir) = split_dir(rest)?;
            Some(Self::TcxHost { dev, dir })
        } else if let Some(rest) = name.strip_prefix("tc_") {
            let (dev, dir) = split_dir(rest)?;
            Some(Self::LegacyHost { dev, dir })
        } else if let Some(dev) = name.strip_prefix("l2tc_") {
            Some(Self::LegacyL2 {
                dev: dev.to_owned(),
            })
        } else if let Some(dev) = name.strip_prefix("l2_") {
            Some(Self::TcxL2 {
                dev: dev.to_owned(),
            })
        } else if let Some(dev) = name.strip_prefix("tuntc_") {
            Some(Self::LegacyTunnel {
                dev: dev.to_owned(),
            })
        } else if let Some(dev) = name.strip_prefix("tun_") {
            Some(Self::TcxTunnel {
                dev: dev.to_owned(),
            })
        } else if let Some(dev) = name.strip_prefix("podpoltc_") {
            Some(Self::LegacyPodPolicy {
                dev: dev.to_owned(),
            })
        } else if let Some(dev) = name.strip_prefix("podpol_") {
            Some(Self::TcxPodPolicy {
                dev: dev.to_owned(),
            })
        } else if let Some(dev) = name.strip_prefix("podegtc_") {
            Some(Self::LegacyPodEgress {
                dev: dev.to_owned(),
            })
        } else if let Some(dev) = name.strip_prefix("podeg_") {
            Some(Self::TcxPodEgress {
                dev: dev.to_owned(),
            })
        } else if let Some(dev) = name.strip_prefix("podnk_") {
            Some(Self::NetkitPod {
                dev: dev.to_owned(),
            })
        } else if let Some(dev) = name.strip_prefix("podtc_") {
            Some(Self::LegacyPod {
                dev: dev.to_owned(),
            })
        } else if let Some(dev) = name.strip_prefix("pod_") {
            Some(Self::TcxPod {
                dev: dev.to_owned(),
            })
        } else if let Some(rest) = name.strip_prefix("xdpnl_") {
            let (dev, generic) = split_mode(rest)?;
            Some(Self::XdpNetlink { dev, generic })
        } else if let Some(rest) = name.strip_prefix("xdp_") {
            let (dev, generic) = split_mode(rest)?;
            Some(Self::XdpLink { dev, generic })
        } else {
            None
        }
    }

    /// The pin's file name.
    #[must_use]
    pub fn file_name(&self) -> String {
        let mode = |g: &bool| if *g { "generic" } else { "native" };
        let name = match self {
            Self::TcxHost { dev, dir } => format!("tcx_{dev}_{}", dir.as_str()),
            Self::LegacyHost { dev, dir } => format!("tc_{dev}_{}", dir.as_str()),
            Self::TcxL2 { dev } => format!("l2_{dev}"),
            Self::LegacyL2 { dev } => format!("l2tc_{dev}"),
            Self::XdpLink { dev, generic } => format!("xdp_{dev}_{}", mode(generic)),
            Self::XdpNetlink { dev, generic } => format!("xdpnl_{dev}_{}", mode(generic)),
            Self::TcxPod { dev } => format!("pod_{dev}"),
            Self::LegacyPod { dev } => format!("podtc_{dev}"),
            Self::NetkitPod { dev } => format!("podnk_{dev}"),
            Self::TcxPodPolicy { dev } => format!("podpol_{dev}"),
            Self::LegacyPodPolicy { dev } => format!("podpoltc_{dev}"),
            Self::TcxPodEgress { dev } => format!("podeg_{dev}"),
            Self::LegacyPodEgress { dev } => format!("podegtc_{dev}"),
            Self::TcxTunnel { dev } => format!("tun_{dev}"),
            Self::LegacyTunnel { dev } => format!("tuntc_{dev}"),
        };
        name.replace('.', DOT_ESCAPE)
    }

    /// The north-south TC pin of `dev`'s `dir` hook under `backend`.
    #[must_use]
    pub fn host(backend: TcBackend, dev: &str, dir: super::tcnl::Direction) -> Self {
        let dev = dev.to_owned();
        match backend {
            TcBackend::Tcx => Self::TcxHost { dev, dir },
            TcBackend::Legacy => Self::LegacyHost { dev, dir },
        }
    }

    /// The L2 responder's pin of `dev` under `backend`.
    #[must_use]
    pub fn l2(backend: TcBackend, dev: &str) -> Self {
        let dev = dev.to_owned();
        match backend {
            TcBackend::Tcx => Self::TcxL2 { dev },
            TcBackend::Legacy => Self::LegacyL2 { dev },
        }
    }

    /// The host-routing pin of pod veth `dev` under `backend`.
    #[must_use]
    pub fn pod(backend: TcBackend, dev: &str) -> Self {
        let dev = dev.to_owned();
        match backend {
            TcBackend::Tcx => Self::TcxPod { dev },
            TcBackend::Legacy => Self::LegacyPod { dev },
        }
    }

    /// The host-routing pin of pod netkit device `dev` (netkit links need TCX's kernels).
    #[must_use]
    pub fn pod_netkit(dev: &str) -> Self {
        Self::NetkitPod {
            dev: dev.to_owned(),
        }
    }

    /// The egress-policy-only pin of pod veth `dev` (`--host-routing legacy`) under `backend`.
    #[must_use]
    pub fn pod_policy(backend: TcBackend, dev: &str) -> Self {
        let dev = dev.to_owned();
        match backend {
            TcBackend::Tcx => Self::TcxPodPolicy { dev },
            TcBackend::Legacy => Self::LegacyPodPolicy { dev },
        }
    }

    /// The ingress-policy pin of pod veth `dev` (its TC egress) under `backend`.
    #[must_use]
    pub fn pod_egress(backend: TcBackend, dev: &str) -> Self {
        let dev = dev.to_owned();
        match backend {
            TcBackend::Tcx => Self::TcxPodEgress { dev },
            TcBackend::Legacy => Self::LegacyPodEgress { dev },
        }
    }

    /// The host-routing pin of overlay device `dev` under `backend`.
    #[must_use]
    pub fn tunnel(backend: TcBackend, dev: &str) -> Self {
        let dev = dev.to_owned();
        match backend {
            TcBackend::Tcx => Self::TcxTunnel { dev },
            TcBackend::Legacy => Self::LegacyTunnel { dev },
        }
    }

    /// Whether the pin is a pod veth's (host routing), not a device of the node's.
    #[must_use]
    pub fn is_pod(&self) -> bool {
        matches!(
            self,
            Self::TcxPod { .. }
                | Self::LegacyPod { .. }
                | Self::NetkitPod { .. }
                | Self::TcxPodPolicy { .. }
                | Self::LegacyPodPolicy { .. }
                | Self::TcxPodEgress { .. }
                | Self::LegacyPodEgress { .. }
        )
    }

    /// Whether the pin is a pod veth's BPF host-routing hook (not policy alone).
    #[must_use]
    pub fn is_pod_routing(&self) -> bool {
        matches!(
            self,
            Self::TcxPod { .. } | Self::LegacyPod { .. } | Self::NetkitPod { .. }
        )
    }

    /// Whether the pin is a pod veth's egress-policy-only hook (`--host-routing legacy`).
    #[must_use]
    pub fn is_pod_policy(&self) -> bool {
        matches!(
            self,
            Self::TcxPodPolicy { .. } | Self::LegacyPodPolicy { .. }
        )
    }

    /// Whether the pin is the overlay device's host-routing hook.
    #[must_use]
    pub fn is_tunnel(&self) -> bool {
        matches!(self, Self::TcxTunnel { .. } | Self::LegacyTunnel { .. })
    }

    /// The XDP pin of `dev` in a mode under `backend`.
    #[must_use]
    pub fn xdp(backend: TcBackend, dev: &str, generic: bool) -> Self {
        let dev = dev.to_owned();
        match backend {
            TcBackend::Tcx => Self::XdpLink { dev, generic },
            TcBackend::Legacy => Self::XdpNetlink { dev, generic },
        }
    }

    /// The same hook under the other backend (a mode switch removes it once this one is in
    /// place).
    #[must_use]
    pub fn counterpart(&self) -> Self {
        match self.clone() {
            Self::TcxHost { dev, dir } => Self::LegacyHost { dev, dir },
            Self::LegacyHost { dev, dir } => Self::TcxHost { dev, dir },
            Self::TcxL2 { dev } => Self::LegacyL2 { dev },
            Self::LegacyL2 { dev } => Self::TcxL2 { dev },
            Self::XdpLink { dev, generic } => Self::XdpNetlink { dev, generic },
            Self::XdpNetlink { dev, generic } => Self::XdpLink { dev, generic },
            Self::TcxPod { dev } => Self::LegacyPod { dev },
            // A netkit device's routing hook replaces a TCX one a veth-era agent left there.
            Self::LegacyPod { dev } | Self::NetkitPod { dev } => Self::TcxPod { dev },
            Self::TcxPodPolicy { dev } => Self::LegacyPodPolicy { dev },
            Self::LegacyPodPolicy { dev } => Self::TcxPodPolicy { dev },
            Self::TcxPodEgress { dev } => Self::LegacyPodEgress { dev },
            Self::LegacyPodEgress { dev } => Self::TcxPodEgress { dev },
            Self::TcxTunnel { dev } => Self::LegacyTunnel { dev },
            Self::LegacyTunnel { dev } => Self::TcxTunnel { dev },
        }
    }

    /// Whether the pin is a program pinned as the record of a netlink attachment (removing it
    /// alone detaches nothing) rather than a `bpf_link`.
    #[must_use]
    pub fn is_netlink(&self) -> bool {
        matches!(
            self,
            Self::LegacyHost { .. }
                | Self::LegacyL2 { .. }
                | Self::XdpNetlink { .. }
                | Self::LegacyPod { .. }
                | Self::LegacyPodPolicy { .. }
                | Self::LegacyPodEgress { .. }
                | Self::LegacyTunnel { .. }
        )
    }

    /// The device the hook is on.
    #[must_use]
    pub fn device(&self) -> &str {
        match self {
            Self::TcxHost { dev, .. }
            | Self::LegacyHost { dev, .. }
            | Self::TcxL2 { dev }
            | Self::LegacyL2 { dev }
            | Self::XdpLink { dev, .. }
            | Self::XdpNetlink { dev, .. }
            | Self::TcxPod { dev }
            | Self::LegacyPod { dev }
            | Self::NetkitPod { dev }
            | Self::TcxPodPolicy { dev }
            | Self::LegacyPodPolicy { dev }
            | Self::TcxPodEgress { dev }
            | Self::LegacyPodEgress { dev }
            | Self::TcxTunnel { dev }
            | Self::LegacyTunnel { dev } => dev,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tcnl::Direction;
    use super::*;

    #[test]
    fn flags_parse_and_print_back() {
        for s in ["auto", "tcx", "legacy"] {
            assert_eq!(s.parse::<TcAttach>().unwrap().to_string(), s);
        }
        assert!("tc".parse::<TcAttach>().is_err());
        assert_eq!(TcAttach::default(), TcAttach::Auto);
    }

    #[test]
    fn auto_follows_the_kernel_and_forcing_tcx_without_it_names_the_kernel() {
        assert_eq!(resolve(TcAttach::Auto, true), Ok(TcBackend::Tcx));
        assert_eq!(resolve(TcAttach::Auto, false), Ok(TcBackend::Legacy));
        assert_eq!(resolve(TcAttach::Legacy, true), Ok(TcBackend::Legacy));
        assert_eq!(resolve(TcAttach::Tcx, true), Ok(TcBackend::Tcx));
        let e = resolve(TcAttach::Tcx, false).unwrap_err();
        assert!(e.contains("6.6"), "{e}");
    }

    #[test]
    fn pin_names_round_trip_also_with_underscores_in_device_names() {
        for pin in [
            PinName::host(TcBackend::Tcx, "eth_0", Direction::Egress),
            PinName::host(TcBackend::Legacy, "eth0", Direction::Ingress),
            PinName::l2(TcBackend::Tcx, "br_lan"),
            PinName::l2(TcBackend::Legacy, "eth0"),
            PinName::xdp(TcBackend::Tcx, "en_p1", true),
            PinName::xdp(TcBackend::Legacy, "eth0", false),
            PinName::pod(TcBackend::Tcx, "fer1a2b3c4d"),
            PinName::pod(TcBackend::Legacy, "fer1a2b3c4d"),
            PinName::tunnel(TcBackend::Tcx, "ferrite.vxlan"),
            PinName::tunnel(TcBackend::Legacy, "ferrite.vxlan"),
        ] {
            assert_eq!(PinName::parse(&pin.file_name()), Some(pin.clone()));
            assert_eq!(pin.counterpart().counterpart(), pin);
            assert_ne!(pin.counterpart().is_netlink(), pin.is_netlink());
        }
        // The names pins have always had under TCX stay the same.
        assert_eq!(
            PinName::host(TcBackend::Tcx, "eth0", Direction::Ingress).file_name(),
            "tcx_eth0_ingress"
        );
        assert_eq!(PinName::l2(TcBackend::Tcx, "eth0").file_name(), "l2_eth0");
        assert_eq!(
            PinName::xdp(TcBackend::Tcx, "eth0", true).file_name(),
            "xdp_eth0_generic"
        );
        assert_eq!(
            PinName::parse("podtc_fer1"),
            Some(PinName::LegacyPod { dev: "fer1".into() })
        );
        assert!(PinName::pod(TcBackend::Tcx, "fer1").is_pod());
        let netkit = PinName::pod_netkit("fer1");
        assert_eq!(netkit.file_name(), "podnk_fer1");
        assert_eq!(PinName::parse("podnk_fer1"), Some(netkit.clone()));
        assert!(netkit.is_pod() && netkit.is_pod_routing() && !netkit.is_netlink());
        assert_eq!(netkit.counterpart(), PinName::pod(TcBackend::Tcx, "fer1"));
        assert_eq!(
            PinName::tunnel(TcBackend::Tcx, "ferrite.vxlan").file_name(),
            "tun_ferrite%vxlan"
        );
        assert!(!PinName::l2(TcBackend::Tcx, "fer1").is_pod());
        assert_eq!(PinName::parse("cg123_fe_connect4"), None);
        assert_eq!(PinName::parse("tcx_eth0_sideways"), None);
    }

    #[test]
    fn the_l2_responder_runs_before_the_host_programs() {
        const { assert!(PRIO_L2 < PRIO_HOST) };
    }
}
