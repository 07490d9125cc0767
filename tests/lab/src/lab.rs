//! Lab topologies built from the guards:
//! - [`PodNet`]: a "host" side (root netns or a node netns) and N pod netns, each with one veth,
//!   a /32 and a /128 address, default routes via the host, and forwarding on the host — the way
//!   routed CNIs (ferrite, Cilium, Calico) wire pods.
//! - [`Lan`]: a Linux bridge in its own netns that node netns plug into, for multi-node labs.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::addr::Cidr;
use crate::cmd::CommandError;
use crate::netns::{Netns, NetnsError, Ns};
use crate::veth::{Bridge, Iface, LinkError, Route, Veth};

/// Failure to build a lab topology.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("{family} subnet {subnet} has no room for address #{index}")]
    SubnetFull {
        family: &'static str,
        subnet: Cidr,
        index: u128,
    },
    #[error("{0} must be an {1} network")]
    WrongFamily(Cidr, &'static str),
}

/// Enables IPv4 and IPv6 forwarding in `ns`.
pub fn enable_forwarding(ns: &Ns) -> Result<(), NetnsError> {
    ns.sysctl("net.ipv4.ip_forward", "1")?;
    ns.sysctl("net.ipv6.conf.all.forwarding", "1")
}

fn nth(subnet: Cidr, index: u128) -> Result<IpAddr, LabError> {
    let family = if subnet.is_ipv6() { "IPv6" } else { "IPv4" };
    // Keep clear of the IPv4 broadcast address.
    let limit_ok = subnet.is_ipv6() || subnet.nth(index + 1).is_some();
    subnet
        .nth(index)
        .filter(|_| limit_ok)
        .ok_or(LabError::SubnetFull {
            family,
            subnet,
            index,
        })
}

fn v4(ip: IpAddr) -> Ipv4Addr {
    match ip {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(_) => unreachable!("checked to be an IPv4 subnet"),
    }
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V6(v6) => v6,
        IpAddr::V4(_) => unreachable!("checked to be an IPv6 subnet"),
    }
}

/// How [`PodNet::build`] lays out pods.
#[derive(Clone, Debug)]
pub struct PodNetConfig {
    /// Netns name prefix for the pods (1–4 of `a-z0-9`).
    pub prefix: String,
    /// Number of pods to create up front ([`PodNet::add_pod`] adds more).
    pub pods: usize,
    /// Pod IPv4 subnet: `.1` is the gateway on the host side, pods get `.2`, `.3`, ...
    pub v4: Cidr,
    /// Pod IPv6 subnet: `::1` is the gateway, pods get `::2`, `::3`, ...
    pub v6: Cidr,
    /// Interface name inside each pod.
    pub pod_ifname: String,
}

impl Default for PodNetConfig {
    fn default() -> Self {
        Self {
            prefix: "pod".into(),
            pods: 2,
            v4: "10.244.0.0/24".parse().expect("valid"),
            v6: "fd00:10:244::/64".parse().expect("valid"),
            pod_ifname: "eth0".into(),
        }
    }
}

/// One pod: its netns and addresses. Fields drop in order, so the veth goes before the netns.
#[derive(Debug)]
pub struct Pod {
    pub veth: Veth,
    pub netns: Netns,
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
}

impl Pod {
    /// The pod-side interface.
    #[must_use]
    pub fn iface(&self) -> &Iface {
        self.veth.b()
    }

    /// The host-side interface (`v` + pod netns name).
    #[must_use]
    pub fn host_iface(&self) -> &Iface {
        self.veth.a()
    }
}

/// A host side plus pods wired to it with routed veths (see the module docs).
#[derive(Debug)]
pub struct PodNet {
    host: Ns,
    config: PodNetConfig,
    pods: Vec<Pod>,
    next_index: u128,
}

impl PodNet {
    /// Enables forwarding on `host` and creates `config.pods` pods.
    pub fn build(host: &Ns, config: PodNetConfig) -> Result<Self, LabError> {
        if config.v4.is_ipv6() {
            return Err(LabError::WrongFamily(config.v4, "IPv4"));
        }
        if !config.v6.is_ipv6() {
            return Err(LabError::WrongFamily(config.v6, "IPv6"));
        }
        enable_forwarding(host)?;
        let count = config.pods;
        let mut net = Self {
            host: host.clone(),
            config,
            pods: Vec::with_capacity(count),
            next_index: 2,
        };
        for _ in 0..count {
            net.add_pod()?;
        }
        Ok(net)
    }

    /// The IPv4 gateway the pods route through (`.1` of the subnet).
    #[must_use]
    pub fn gateway_v4(&self) -> Ipv4Addr {
        v4(self.config.v4.nth(1).expect("a pod subnet has a .1"))
    }

    /// The IPv6 gateway the pods route through (`::1` of the subnet).
    #[must_use]
    pub fn gateway_v6(&self) -> Ipv6Addr {
        v6(self.config.v6.nth(1).expect("a pod subnet has a ::1"))
    }

    /// The host side namespace.
    #[must_use]
    pub fn host(&self) -> &Ns {
        &self.host
    }

    #[must_use]
    pub fn pods(&self) -> &[Pod] {
        &self.pods
    }

    #[must_use]
    pub fn config(&self) -> &PodNetConfig {
        &self.config
    }

    /// Creates one more pod with the next free addresses and returns it.
    pub fn add_pod(&mut self) -> Result<&Pod, LabError> {
        let index = self.next_index;
        let ip4 = v4(nth(self.config.v4, index)?);
        let ip6 = v6(nth(self.config.v6, index)?);
        let netns = Netns::new(&self.config.prefix)?;
        let host_name = format!("v{}", netns.name());
        let veth = Veth::create(
            Iface::new(&self.host, &host_name),
            Iface::new(netns.ns(), &self.config.pod_ifname),
        )?;
        let (gw4, gw6) = (self.gateway_v4(), self.gateway_v6());
        let host_if = veth.a();
        host_if.add_addr(Cidr::host(IpAddr::V4(gw4)))?;
        host_if.add_addr(Cidr::host(IpAddr::V6(gw6)))?;
        Route::dev(Cidr::host(IpAddr::V4(ip4)), &host_name).add(&self.host)?;
        Route::dev(Cidr::host(IpAddr::V6(ip6)), &host_name).add(&self.host)?;

        let pod_if = veth.b();
        pod_if.add_addr(Cidr::host(IpAddr::V4(ip4)))?;
        pod_if.add_addr(Cidr::host(IpAddr::V6(ip6)))?;
        Route::default_via(IpAddr::V4(gw4), &pod_if.name).add(netns.ns())?;
        Route::default_via(IpAddr::V6(gw6), &pod_if.name).add(netns.ns())?;

        self.next_index += 1;
        self.pods.push(Pod {
            veth,
            netns,
            v4: ip4,
            v6: ip6,
        });
        Ok(self.pods.last().expect("just pushed"))
    }

    /// Takes pod `index` out of the set; dropping the returned pod deletes its netns (and with
    /// it the veth and the host's route). Its addresses are not reused.
    ///
    /// # Panics
    /// If `index` is out of range.
    pub fn remove_pod(&mut self, index: usize) -> Pod {
        self.pods.remove(index)
    }
}

/// A node's port on a [`Lan`]: its interface and addresses.
#[derive(Debug)]
pub struct LanPort {
    pub veth: Veth,
    pub v4: Cidr,
    pub v6: Cidr,
}

impl LanPort {
    /// The node-side interface.
    #[must_use]
    pub fn iface(&self) -> &Iface {
        self.veth.a()
    }
}

/// A Linux bridge (`br0`) in its own netns, standing in for a switch between nodes.
#[derive(Debug)]
pub struct Lan {
    bridge: Bridge,
    netns: Netns,
    v4: Cidr,
    v6: Cidr,
    next_index: u128,
    ports: usize,
}

impl Lan {
    /// Creates the LAN netns and bridge; nodes get addresses from `v4` / `v6` starting at `.1`.
    pub fn new(prefix: &str, v4: Cidr, v6: Cidr) -> Result<Self, LabError> {
        if v4.is_ipv6() {
            return Err(LabError::WrongFamily(v4, "IPv4"));
        }
        if !v6.is_ipv6() {
            return Err(LabError::WrongFamily(v6, "IPv6"));
        }
        let netns = Netns::new(prefix)?;
        // A switch forwards frames as they are. With br_netfilter built in, a Linux bridge
        // would validate (and drop or trim) IP headers on the way, hiding malformed frames
        // from the nodes; turn that off where the knobs exist.
        for key in [
            "net.bridge.bridge-nf-call-iptables",
            "net.bridge.bridge-nf-call-ip6tables",
            "net.bridge.bridge-nf-call-arptables",
        ] {
            let path = std::path::Path::new("/proc/sys").join(key.replace('.', "/"));
            if path.exists() {
                netns.sysctl(key, "0")?;
            }
        }
        let bridge = Bridge::create(netns.ns(), "br0")?;
        Ok(Self {
            bridge,
            netns,
            v4,
            v6,
            next_index: 1,
            ports: 0,
        })
    }

    #[must_use]
    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    #[must_use]
    pub fn bridge(&self) -> &Bridge {
        &self.bridge
    }

    /// Plugs `node` in: a veth `ifname` in the node (addressed from the LAN subnets) whose peer
    /// is a bridge port. The port goes away with the node's netns or when dropped.
    pub fn attach(&mut self, node: &Ns, ifname: &str) -> Result<LanPort, LabError> {
        let index = self.next_index;
        let addr4 = Cidr::new(nth(self.v4, index)?, self.v4.prefix()).expect("same prefix");
        let addr6 = Cidr::new(nth(self.v6, index)?, self.v6.prefix()).expect("same prefix");
        let port_name = format!("p{}", self.ports);
        let veth = Veth::create(
            Iface::new(node, ifname),
            Iface::new(self.netns.ns(), &port_name),
        )?;
        self.bridge.attach(veth.b())?;
        veth.a().add_addr(addr4)?;
        veth.a().add_addr(addr6)?;
        self.next_index += 1;
        self.ports += 1;
        Ok(LanPort {
            veth,
            v4: addr4,
            v6: addr6,
        })
    }

    /// Deletes `port`'s veth and creates it again under the same names with the same
    /// addresses (a new ifindex and MAC, as when ifupdown rebuilds an interface or a USB NIC
    /// is replugged), plugged into the bridge again.
    pub fn replug(&mut self, port: &mut LanPort) -> Result<(), LabError> {
        let (a, b) = (port.veth.a().clone(), port.veth.b().clone());
        a.delete()?;
        let fresh = Veth::create(a, b)?;
        self.bridge.attach(fresh.b())?;
        fresh.a().add_addr(port.v4)?;
        fresh.a().add_addr(port.v6)?;
        // The old Veth's drop must not delete the new pair: forget it.
        std::mem::forget(std::mem::replace(&mut port.veth, fresh));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_stay_inside_the_subnet() {
        let s: Cidr = "10.0.0.0/30".parse().unwrap();
        assert_eq!(nth(s, 2).unwrap().to_string(), "10.0.0.2");
        // .3 is the broadcast address of a /30.
        assert!(matches!(nth(s, 3), Err(LabError::SubnetFull { .. })));
        let s6: Cidr = "fd00::/126".parse().unwrap();
        assert_eq!(nth(s6, 3).unwrap().to_string(), "fd00::3");
        assert!(nth(s6, 4).is_err());
    }

    #[test]
    fn config_defaults() {
        let c = PodNetConfig::default();
        assert_eq!(c.v4.nth(1).unwrap().to_string(), "10.244.0.1");
        assert_eq!(c.v6.nth(1).unwrap().to_string(), "fd00:10:244::1");
        assert_eq!(c.pod_ifname, "eth0");
    }
}
