//! What an attachment looks like, computed purely from the config and the IPAM reservation.
//!
//! The pod gets `CNI_IFNAME` with its address as a host route (`/32`, `/128`), a link route to
//! the gateway and a default route through it. The gateway is the first address of the pod
//! CIDR; the host end of every veth carries it (`/32`, `/128`, no DAD), so the host answers
//! the pod's ARP/ND itself and no bridge is needed. The host routes the pod's address to the
//! host end of its veth.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde_json::Value;

use super::cidr::IpNet;
use super::config::format_mac;
use super::env::Attachment;
use super::ipam::{Allocation, gateway};
use super::result::{AddResult, Interface, IpConfig, Route};

/// Host-side veth names start with this (Cilium uses `lxc`, Calico `cali`).
pub const HOST_IFNAME_PREFIX: &str = "fer";

/// The host end's name: `fer` + 12 hex digits of a hash of the attachment, so DEL, GC and
/// crash recovery find it from the container id and ifname alone.
#[must_use]
pub fn host_ifname(a: &Attachment) -> String {
    // FNV-1a, 64 bit: stable across releases and architectures.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in a
        .container_id
        .bytes()
        .chain(std::iter::once(0))
        .chain(a.ifname.bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{HOST_IFNAME_PREFIX}{:012x}", h >> 16)
}

/// A route to install: through `gw`, or on-link when `gw` is `None`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedRoute {
    pub dst: IpNet,
    pub gw: Option<IpAddr>,
}

/// One pod address and the gateway of its CIDR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PodAddress {
    pub addr: IpNet,
    pub gateway: IpAddr,
}

/// Everything ADD creates for one attachment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachPlan {
    pub host_ifname: String,
    pub container_ifname: String,
    pub mtu: u32,
    pub mac: Option<[u8; 6]>,
    pub addresses: Vec<PodAddress>,
}

fn default_route(v4: bool) -> IpNet {
    let any = if v4 {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    };
    IpNet::new(any, 0).unwrap_or(IpNet::host(any))
}

impl AttachPlan {
    #[must_use]
    pub fn new(a: &Attachment, mtu: u32, mac: Option<[u8; 6]>, reserved: &[Allocation]) -> Self {
        Self {
            host_ifname: host_ifname(a),
            container_ifname: a.ifname.clone(),
            mtu,
            mac,
            addresses: reserved
                .iter()
                .map(|r| PodAddress {
                    addr: IpNet::host(r.ip),
                    gateway: gateway(&r.cidr),
                })
                .collect(),
        }
    }

    #[must_use]
    pub fn has_v6(&self) -> bool {
        self.addresses.iter().any(|a| !a.addr.is_ipv4())
    }

    /// Gateway addresses on the host end.
    #[must_use]
    pub fn host_addresses(&self) -> Vec<IpNet> {
        self.addresses
            .iter()
            .map(|a| IpNet::host(a.gateway))
            .collect()
    }

    /// Routes in the host: each pod address via the host end.
    #[must_use]
    pub fn host_routes(&self) -> Vec<PlannedRoute> {
        self.addresses
            .iter()
            .map(|a| PlannedRoute {
                dst: a.addr,
                gw: None,
            })
            .collect()
    }

    /// Routes in the pod: the gateway on-link, then the default route through it.
    #[must_use]
    pub fn container_routes(&self) -> Vec<PlannedRoute> {
        self.addresses
            .iter()
            .flat_map(|a| {
                [
                    PlannedRoute {
                        dst: IpNet::host(a.gateway),
                        gw: None,
                    },
                    PlannedRoute {
                        dst: default_route(a.addr.is_ipv4()),
                        gw: Some(a.gateway),
                    },
                ]
            })
            .collect()
    }

    /// The ADD result: host end (index 0), pod end (index 1), addresses, default routes.
    #[must_use]
    pub fn result(
        &self,
        host_mac: &[u8],
        container_mac: &[u8],
        netns: &str,
        dns: Option<Value>,
    ) -> AddResult {
        AddResult {
            interfaces: vec![
                Interface {
                    name: self.host_ifname.clone(),
                    mac: Some(format_mac(host_mac)),
                    mtu: Some(self.mtu),
                    ..Interface::default()
                },
                Interface {
                    name: self.container_ifname.clone(),
                    mac: Some(format_mac(container_mac)),
                    mtu: Some(self.mtu),
                    sandbox: Some(netns.to_owned()),
                    ..Interface::default()
                },
            ],
            ips: self
                .addresses
                .iter()
                .map(|a| IpConfig {
                    address: a.addr,
                    gateway: Some(a.gateway),
                    interface: Some(1),
                })
                .collect(),
            routes: self
                .addresses
                .iter()
                .map(|a| Route {
                    dst: default_route(a.addr.is_ipv4()),
                    gw: Some(a.gateway),
                    extra: serde_json::Map::new(),
                })
                .collect(),
            dns,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::ipam::Allocation;

    fn alloc(ip: &str, cidr: &str) -> Allocation {
        Allocation {
            ip: ip.parse().unwrap(),
            cidr: cidr.parse().unwrap(),
            container_id: "c1".into(),
            ifname: "eth0".into(),
            host_ifname: String::new(),
            pod: None,
            netns: None,
            pending: None,
            created_unix_ms: 0,
        }
    }

    fn att(c: &str, i: &str) -> Attachment {
        Attachment {
            container_id: c.into(),
            ifname: i.into(),
        }
    }

    #[test]
    fn host_names_are_stable_short_and_distinct() {
        let a = host_ifname(&att("c1", "eth0"));
        assert_eq!(a, host_ifname(&att("c1", "eth0")));
        assert_eq!(a.len(), 15);
        assert!(a.starts_with("fer"));
        assert_ne!(a, host_ifname(&att("c1", "eth1")));
        assert_ne!(a, host_ifname(&att("c2", "eth0")));
        // The separator keeps ("ab","c") and ("a","bc") apart.
        assert_ne!(host_ifname(&att("ab", "c")), host_ifname(&att("a", "bc")));
    }

    #[test]
    fn dual_stack_plan() {
        let p = AttachPlan::new(
            &att("c1", "eth0"),
            1450,
            None,
            &[
                alloc("10.244.0.5", "10.244.0.0/24"),
                alloc("fd00::5", "fd00::/64"),
            ],
        );
        assert!(p.has_v6());
        let hosts: Vec<String> = p.host_addresses().iter().map(ToString::to_string).collect();
        assert_eq!(hosts, ["10.244.0.1/32", "fd00::1/128"]);
        let routes: Vec<String> = p
            .container_routes()
            .iter()
            .map(|r| format!("{} {:?}", r.dst, r.gw))
            .collect();
        assert_eq!(
            routes,
            [
                "10.244.0.1/32 None",
                "0.0.0.0/0 Some(10.244.0.1)",
                "fd00::1/128 None",
                "::/0 Some(fd00::1)"
            ]
        );
        assert_eq!(p.host_routes()[0].dst.to_string(), "10.244.0.5/32");
        let r = p.result(
            &[2, 0, 0, 0, 0, 1],
            &[2, 0, 0, 0, 0, 2],
            "/run/netns/x",
            None,
        );
        assert_eq!(r.interfaces[1].sandbox.as_deref(), Some("/run/netns/x"));
        assert_eq!(r.ips[1].address.to_string(), "fd00::5/128");
        assert_eq!(r.routes[0].dst.to_string(), "0.0.0.0/0");
    }
}
