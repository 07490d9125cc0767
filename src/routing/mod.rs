//! The pod network between nodes (what flannel does for k3s): every Node's PodCIDRs reached by
//! a native route via the node's InternalIP when it is on a directly connected subnet, else
//! through one VXLAN device (flannel's port 8472 by default).
//!
//! `plan` (pure: Nodes + this node's local networks → routes, neighbours, FDB entries, the
//! VXLAN device), `diff` (pure: desired vs the kernel's current ferrite-owned state → netlink
//! operations), `kernel` (rtnetlink reads and writes), `task` (the agent's loop: on every
//! snapshot and every few seconds, so routes deleted by someone else come back).

pub mod diff;
pub mod kernel;
pub mod plan;
mod sysctl;
pub mod task;
mod tunnel;
pub mod vtep;

#[cfg(test)]
mod diff_tests;
#[cfg(test)]
mod plan_tests;

use std::fmt;
use std::str::FromStr;

/// Route protocol number on every route ferrite installs (`ip route show proto 197`): ferrite
/// only ever reads, replaces or deletes routes carrying it. Not in iproute2's `rt_protos` list.
pub const RTPROT_FERRITE: u8 = 197;

/// Name of ferrite's VXLAN device (≤15 bytes; device detection skips `ferrite*` names).
pub const VXLAN_DEV: &str = "ferrite.vxlan";

/// flannel's VXLAN port (the Linux default 8472, not IANA's 4789), so firewall rules written
/// for flannel keep working.
pub const DEFAULT_VXLAN_PORT: u16 = 8472;
/// flannel's default VNI.
pub const DEFAULT_VNI: u32 = 1;

/// Bytes VXLAN adds: outer Ethernet 14 + IP (20 / 40) + UDP 8 + VXLAN 8.
pub const VXLAN_OVERHEAD_V4: u32 = 50;
pub const VXLAN_OVERHEAD_V6: u32 = 70;

/// `--routing`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RoutingMode {
    /// Native routes to nodes on a connected subnet, VXLAN to the others.
    #[default]
    Auto,
    /// Native routes only; a node not on a connected subnet is reported, not reached.
    Native,
    /// VXLAN to every node.
    Vxlan,
    /// No pod routes at all (another component routes pods).
    Off,
}

impl fmt::Display for RoutingMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Native => "native",
            Self::Vxlan => "vxlan",
            Self::Off => "off",
        })
    }
}

impl FromStr for RoutingMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "native" => Ok(Self::Native),
            "vxlan" => Ok(Self::Vxlan),
            "off" => Ok(Self::Off),
            other => Err(format!(
                "--routing {other:?}: expected auto, native, vxlan or off"
            )),
        }
    }
}

/// The routing settings of the agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoutingConfig {
    pub mode: RoutingMode,
    pub vni: u32,
    pub port: u16,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            mode: RoutingMode::Auto,
            vni: DEFAULT_VNI,
            port: DEFAULT_VXLAN_PORT,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    #[error("{what}: {source}")]
    Netlink {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl RoutingError {
    pub(crate) fn netlink(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> Self {
        let what = what.into();
        move |source| Self::Netlink { what, source }
    }

    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }
}
