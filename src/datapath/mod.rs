//! The aya loader: loads the embedded eBPF object with its maps pinned under `--bpf-root`,
//! attaches (or adopts and upgrades) pinned links, and writes load-balancing plans into the maps.
//! Everything pinned outlives the agent: a restarted agent adopts it and traffic never stops.

mod bpffs;
pub mod detect;
mod devices;
mod error;
mod extmaps;
mod host;
mod l2;
pub mod ladder;
mod lbmaps;
mod legacy;
mod link;
mod maputil;
mod masq;
mod netdump;
mod pods;
mod policy;
mod pressure;
pub mod probe;
mod sock;
pub mod tcnl;
mod xdp;
#[cfg(test)]
mod xdp_equiv;

pub use bpffs::{cgroup2_root, ensure_bpffs};
pub use devices::Device;
pub use error::DatapathError;
pub use extmaps::ExtMaps;
pub use host::{HostConfig, HostLb};
pub use l2::L2Responder;
pub use ladder::{TcAttach, TcBackend};
pub use lbmaps::LbMaps;
pub use legacy::remove as remove_hook;
pub(crate) use link::obj_get;
pub use masq::{MasqMaps, snat_flows};
pub use netdump::Netlink;
pub use pods::PodRouting;
pub use policy::PolicyMaps;
pub use pressure::map_fill;
pub use sock::{SockLb, cleanup};

/// Whether `pin` under `<bpf-root>/links` records a netlink attachment (legacy tc filter,
/// XDP over netlink) rather than a `bpf_link`.
#[must_use]
pub fn is_netlink_pin(pin: &std::path::Path) -> bool {
    pin.file_name()
        .and_then(|n| n.to_str())
        .and_then(ladder::PinName::parse)
        .is_some_and(|p| p.is_netlink())
}
pub use xdp::XdpMode;

/// Every ferrite program's name starts with this (`fe_connect4`, `fe_host_ingress`, …).
pub const PROGRAM_PREFIX: &str = "fe_";

use std::path::PathBuf;

/// Where the datapath lives and what it hooks.
#[derive(Clone, Debug)]
pub struct DatapathConfig {
    /// Pin directory on a bpffs (`/sys/fs/bpf/ferrite` by default).
    pub bpf_root: PathBuf,
    /// cgroup v2 directory the socket load balancer attaches to.
    pub cgroup: PathBuf,
    /// Entries of the Maglev array (tables × table size). Every object that carries the map
    /// must create it with this size, whichever loads first.
    pub maglev_entries: u32,
    /// How TC (and XDP) programs are attached to devices (`--tc-attach`, resolved).
    pub tc: TcBackend,
    /// The program variants this kernel supports (see [`probe`]).
    pub features: probe::Choices,
}

impl DatapathConfig {
    pub fn maps_dir(&self) -> PathBuf {
        self.bpf_root.join("maps")
    }

    pub fn links_dir(&self) -> PathBuf {
        self.bpf_root.join("links")
    }
}

/// The compiled eBPF object of the host-device (TC) attach point.
pub(crate) static HOST_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/ferrite-host"));

/// The compiled eBPF object of the optional XDP attach point (north-south ingress).
pub(crate) static XDP_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/ferrite-xdp"));

/// The compiled eBPF object of the L2 responder attach point.
pub(crate) static L2_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/ferrite-l2"));

/// The compiled eBPF object of the pod-veth attach point (BPF host routing).
pub(crate) static POD_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/ferrite-pod"));

/// The compiled eBPF object of the pod veths' egress attach point (ingress NetworkPolicy).
pub(crate) static POD_EGRESS_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/ferrite-podeg"));

/// The compiled eBPF object of the pod netkit devices' attach point (BPF host routing from the
/// pod's own transmit).
pub(crate) static POD_NETKIT_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/ferrite-podnk"));

/// The compiled eBPF object of the overlay-device attach point (BPF host routing).
pub(crate) static TUNNEL_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/ferrite-tunnel"));

/// The compiled eBPF object of the socket-layer attach point.
pub(crate) static SOCK_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/ferrite-sock"));
