//! Nodes + this node's local networks → what the kernel should hold (pure).

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use smol_str::SmolStr;

use super::vtep::vtep_mac;
use super::{RoutingConfig, RoutingMode, VXLAN_OVERHEAD_V4, VXLAN_OVERHEAD_V6};
use crate::model::Node;

/// An address of this node with its prefix, on a device (from a netlink dump).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalNet {
    pub ifname: String,
    pub ifindex: u32,
    /// The address and its prefix length (`192.168.50.1/24`).
    pub net: IpNet,
    pub mtu: u32,
}

/// The device a route leaves through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RouteDev {
    /// An existing device, by ifindex.
    Index(u32),
    /// ferrite's VXLAN device (its ifindex is known only once it exists).
    Vxlan,
}

/// A route ferrite wants: `dst via gateway dev`, `onlink` for VXLAN next hops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DesiredRoute {
    pub dst: IpNet,
    pub gateway: IpAddr,
    pub dev: RouteDev,
    pub onlink: bool,
}

/// A permanent neighbour on the VXLAN device: a remote node's VTEP address → its MAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DesiredNeigh {
    pub ip: IpAddr,
    pub mac: [u8; 6],
}

/// A permanent FDB entry on the VXLAN device: a remote VTEP MAC → the node's underlay address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DesiredFdb {
    pub mac: [u8; 6],
    pub dst: IpAddr,
}

/// ferrite's VXLAN device as it should be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VxlanDevice {
    pub vni: u32,
    pub port: u16,
    /// Underlay source: this node's InternalIP.
    pub local: IpAddr,
    /// The underlay device (holds `local`), for the MTU.
    pub underlay_ifindex: u32,
    pub mtu: u32,
    pub mac: [u8; 6],
    /// The network address of each local PodCIDR (`10.244.1.0/32`): what remote nodes route
    /// this node's pods via, and the source of traffic this node sends to remote pods.
    pub addrs: Vec<IpNet>,
}

/// How one remote PodCIDR is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reach {
    Native {
        via: IpAddr,
        device: String,
    },
    Vxlan {
        vtep: IpAddr,
        mac: [u8; 6],
    },
    /// Not reached; why.
    Unreachable {
        reason: String,
    },
}

/// One remote node's PodCIDRs and how each is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteNode {
    pub name: SmolStr,
    pub cidrs: Vec<(IpNet, Reach)>,
}

/// Everything the kernel should hold for the pod network.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub remotes: Vec<RemoteNode>,
    pub vxlan: Option<VxlanDevice>,
    pub routes: Vec<DesiredRoute>,
    pub neighs: Vec<DesiredNeigh>,
    pub fdb: Vec<DesiredFdb>,
    /// The MTU pods should get: the VXLAN device's when any PodCIDR is reached over VXLAN.
    pub pod_mtu: Option<u32>,
    /// Problems that leave part of the network unrouted (shown in `ferrite routes`).
    pub problems: Vec<String>,
}

/// What the plan is computed from.
#[derive(Clone, Copy, Debug)]
pub struct PlanInput<'a> {
    pub node_name: &'a str,
    pub nodes: &'a BTreeMap<SmolStr, Node>,
    pub local: &'a [LocalNet],
    pub cfg: &'a RoutingConfig,
}

/// The local network `ip` is directly on (not one of this node's own addresses).
fn connected(local: &[LocalNet], ip: IpAddr) -> Option<&LocalNet> {
    local
        .iter()
        .filter(|l| {
            l.net.contains(&ip) && l.net.addr() != ip && l.net.prefix_len() < l.net.max_prefix_len()
        })
        // The most specific subnet wins, as the kernel's own lookup would.
        .max_by_key(|l| l.net.prefix_len())
}

fn same_family(a: IpAddr, b: &IpNet) -> bool {
    a.is_ipv4() == matches!(b, IpNet::V4(_))
}

/// The underlay: this node's first InternalIP of a family and the local network holding it
/// (IPv4 first, as flannel does).
fn underlay<'a>(own: Option<&Node>, local: &'a [LocalNet]) -> Option<(IpAddr, &'a LocalNet)> {
    let own = own?;
    let mut ips: Vec<IpAddr> = own.internal_ips.clone();
    ips.sort_by_key(|ip| u8::from(ip.is_ipv6()));
    ips.into_iter()
        .find_map(|ip| local.iter().find(|l| l.net.addr() == ip).map(|l| (ip, l)))
}

/// Computes the plan. Nodes are visited in name order, so equal inputs give equal plans.
#[must_use]
pub fn plan(input: &PlanInput<'_>) -> Plan {
    let mut out = Plan::default();
    if input.cfg.mode == RoutingMode::Off {
        return out;
    }
    let own = input.nodes.get(input.node_name);
    let under = underlay(own, input.local);
    let mut want_vxlan = input.cfg.mode == RoutingMode::Vxlan;
    for node in input.nodes.values() {
        if node.name == input.node_name || node.pod_cidrs.is_empty() {
            continue;
        }
        let mut remote = RemoteNode {
            name: node.name.clone(),
            cidrs: Vec::new(),
        };
        for cidr in &node.pod_cidrs {
            let cidr = cidr.trunc();
            let reach = reach(input, node, &cidr, under);
            match &reach {
                Reach::Native { via, .. } => {
                    let dev = connected(input.local, *via).map_or(0, |l| l.ifindex);
                    out.routes.push(DesiredRoute {
                        dst: cidr,
                        gateway: *via,
                        dev: RouteDev::Index(dev),
                        onlink: false,
                    });
                }
                Reach::Vxlan { vtep, mac } => {
                    want_vxlan = true;
                    let gw = cidr.network();
                    out.routes.push(DesiredRoute {
                        dst: cidr,
                        gateway: gw,
                        dev: RouteDev::Vxlan,
                        onlink: true,
                    });
                    out.neighs.push(DesiredNeigh { ip: gw, mac: *mac });
                    let fdb = DesiredFdb {
                        mac: *mac,
                        dst: *vtep,
                    };
                    if !out.fdb.contains(&fdb) {
                        out.fdb.push(fdb);
                    }
                }
                Reach::Unreachable { reason } => {
                    out.problems
                        .push(format!("node {}: {cidr}: {reason}", node.name));
                }
            }
            remote.cidrs.push((cidr, reach));
        }
        out.remotes.push(remote);
    }
    if want_vxlan {
        match under {
            Some((local, dev)) => {
                let overhead = if local.is_ipv4() {
                    VXLAN_OVERHEAD_V4
                } else {
                    VXLAN_OVERHEAD_V6
                };
                let mtu = dev.mtu.saturating_sub(overhead);
                out.vxlan = Some(VxlanDevice {
                    vni: input.cfg.vni,
                    port: input.cfg.port,
                    local,
                    underlay_ifindex: dev.ifindex,
                    mtu,
                    mac: vtep_mac(input.node_name),
                    addrs: own
                        .map(|n| {
                            n.pod_cidrs
                                .iter()
                                .map(|c| IpNet::from(c.network()))
                                .collect()
                        })
                        .unwrap_or_default(),
                });
                if out.routes.iter().any(|r| r.dev == RouteDev::Vxlan) {
                    out.pod_mtu = Some(mtu);
                }
            }
            None => out.problems.push(format!(
                "VXLAN needs this node's InternalIP on a local device (Node {:?} {})",
                input.node_name,
                if own.is_some() {
                    "has no InternalIP held by a local device"
                } else {
                    "is not known yet"
                }
            )),
        }
    }
    out.routes.sort();
    out.neighs.sort();
    out.fdb.sort();
    out
}

/// How `cidr` of `node` is reached under the configured mode.
fn reach(
    input: &PlanInput<'_>,
    node: &Node,
    cidr: &IpNet,
    under: Option<(IpAddr, &LocalNet)>,
) -> Reach {
    let native = node
        .internal_ips
        .iter()
        .filter(|ip| same_family(**ip, cidr))
        .find_map(|ip| connected(input.local, *ip).map(|l| (*ip, l)));
    if input.cfg.mode != RoutingMode::Vxlan
        && let Some((via, l)) = native
    {
        return Reach::Native {
            via,
            device: l.ifname.clone(),
        };
    }
    if input.cfg.mode == RoutingMode::Native {
        return Reach::Unreachable {
            reason: format!(
                "no InternalIP of the {} family on a directly connected subnet (--routing native); \
                 use --routing auto to reach it over VXLAN",
                if cidr.addr().is_ipv4() {
                    "IPv4"
                } else {
                    "IPv6"
                }
            ),
        };
    }
    let Some((local, _)) = under else {
        return Reach::Unreachable {
            reason: "VXLAN needs this node's InternalIP on a local device".into(),
        };
    };
    match node
        .internal_ips
        .iter()
        .find(|ip| ip.is_ipv4() == local.is_ipv4())
    {
        Some(vtep) => Reach::Vxlan {
            vtep: *vtep,
            mac: vtep_mac(&node.name),
        },
        None => Reach::Unreachable {
            reason: format!(
                "no InternalIP of the underlay's family ({}) to send VXLAN to",
                if local.is_ipv4() { "IPv4" } else { "IPv6" }
            ),
        },
    }
}
