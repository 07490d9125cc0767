//! The lab's machines: clients on the LAN ([`LanHost`]) and nodes with their pods ([`Node`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::NsLabError;
use crate::addr::Cidr;
use crate::child::Child;
use crate::lab::{LanPort, Pod, PodNet};
use crate::netns::{Netns, Ns};
use crate::raw::Mac;

fn v4_of(c: &Cidr) -> Ipv4Addr {
    match c.addr() {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(_) => unreachable!("an IPv4 LAN address"),
    }
}

fn v6_of(c: &Cidr) -> Ipv6Addr {
    match c.addr() {
        IpAddr::V6(v6) => v6,
        IpAddr::V4(_) => unreachable!("an IPv6 LAN address"),
    }
}

/// `v4`, `v6`, `ns` and `mac` of a machine with a `port: LanPort` and a `netns: Netns`.
macro_rules! lan_accessors {
    () => {
        #[must_use]
        pub fn v4(&self) -> Ipv4Addr {
            v4_of(&self.port.v4)
        }

        #[must_use]
        pub fn v6(&self) -> Ipv6Addr {
            v6_of(&self.port.v6)
        }

        #[must_use]
        pub fn ns(&self) -> &Ns {
            self.netns.ns()
        }

        /// MAC of its LAN interface.
        pub fn mac(&self) -> Result<Mac, NsLabError> {
            mac_of(&self.port)
        }
    };
}

/// A machine on the LAN that is not a node (a client outside the cluster).
#[derive(Debug)]
pub struct LanHost {
    pub name: String,
    pub port: LanPort,
    pub netns: Netns,
}

impl LanHost {
    lan_accessors!();
}

fn mac_of(port: &LanPort) -> Result<Mac, NsLabError> {
    port.iface().mac()?.parse().map_err(NsLabError::Other)
}

/// A node: its netns with `eth0` on the LAN, its pods, and the servers running in them.
/// Fields drop in order: servers, then pods, then the LAN port and the netns.
#[derive(Debug)]
pub struct Node {
    /// `node1`, `node2`, ... (what `EndpointSlice`s name in `nodeName`).
    pub name: String,
    pub servers: Vec<Child>,
    pub pods: PodNet,
    pub port: LanPort,
    pub netns: Netns,
}

impl Node {
    lan_accessors!();

    /// Its pod IPv4 subnet (`10.244.K.0/24` for node K).
    #[must_use]
    pub fn pod_cidr_v4(&self) -> Cidr {
        self.pods.config().v4.network()
    }

    #[must_use]
    pub fn pod(&self, i: usize) -> &Pod {
        &self.pods.pods()[i]
    }

    #[must_use]
    pub fn pod_v4(&self, i: usize) -> Ipv4Addr {
        self.pod(i).v4
    }

    /// `node1-pod-1` for the first pod of node1: the name its servers answer with.
    #[must_use]
    pub fn pod_name(&self, i: usize) -> String {
        format!("{}-pod-{}", self.name, i + 1)
    }

    /// `NODE_IP:port` on the LAN.
    #[must_use]
    pub fn at(&self, port: u16) -> SocketAddr {
        SocketAddr::from((self.v4(), port))
    }
}
