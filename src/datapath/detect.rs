//! Which devices north-south runs on when `--devices` is not given, decided from netlink dumps
//! (links, addresses, routes) and the node's InternalIPs, as Cilium does: the devices that carry
//! an InternalIP and the devices of the default routes (both families). Never loopback, bridges,
//! bridge ports, or ferrite's own devices (pod veths `fer…`, `ferrite.vxlan`, …); a veth only
//! when it is the node's uplink by those rules (kind/netns nodes reach their LAN over a veth).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::devices::Device;

/// One link of the dump.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkFacts {
    pub index: u32,
    pub name: String,
    /// `IFLA_INFO_KIND` ("veth", "bridge", "vxlan", …); `None` for physical NICs.
    pub kind: Option<String>,
    /// The bridge/bond this link is enslaved to.
    pub master: Option<u32>,
    pub loopback: bool,
}

/// One address of the dump.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddrFacts {
    pub index: u32,
    pub addr: IpAddr,
    /// Scope universe (not host/link-local).
    pub global: bool,
    /// `IFA_F_SECONDARY`: not the primary address of its subnet.
    pub secondary: bool,
}

/// One route of the main table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteFacts {
    pub v6: bool,
    pub dst_len: u8,
    /// The output device(s): one, or every nexthop of a multipath route.
    pub oifs: Vec<u32>,
}

/// What one dump saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetFacts {
    pub links: Vec<LinkFacts>,
    pub addrs: Vec<AddrFacts>,
    pub routes: Vec<RouteFacts>,
}

/// Why `link` can never be a north-south device, if so.
#[must_use]
pub fn excluded(link: &LinkFacts, links: &[LinkFacts]) -> Option<&'static str> {
    if link.loopback || link.name == "lo" {
        return Some("loopback");
    }
    if link.name.starts_with("fer") {
        return Some("ferrite's own device");
    }
    match link.kind.as_deref() {
        Some("bridge" | "openvswitch") => return Some("bridge"),
        Some("vxlan" | "geneve" | "wireguard" | "ipip" | "sit" | "ip6tnl" | "gre") => {
            return Some("overlay tunnel");
        }
        _ => {}
    }
    let bridged = link.master.is_some_and(|m| {
        links
            .iter()
            .any(|l| l.index == m && l.kind.as_deref() == Some("bridge"))
    });
    bridged.then_some("bridge port")
}

/// The address usable as a device's address: global, not IPv4 loopback, not IPv6 link-local.
fn usable(a: &AddrFacts) -> bool {
    a.global
        && match a.addr {
            IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_unspecified(),
            IpAddr::V6(v6) => {
                !v6.is_loopback() && !v6.is_unspecified() && (v6.segments()[0] & 0xffc0) != 0xfe80
            }
        }
}

/// `link`'s device: every usable address (primary ones first, in dump order); the SNAT source is
/// the first primary address of each family.
#[must_use]
pub fn device_of(link: &LinkFacts, addrs: &[AddrFacts]) -> Device {
    let mut mine: Vec<&AddrFacts> = addrs
        .iter()
        .filter(|a| a.index == link.index && usable(a))
        .collect();
    mine.sort_by_key(|a| a.secondary);
    let v4: Option<Ipv4Addr> = mine.iter().find_map(|a| match a.addr {
        IpAddr::V4(v) => Some(v),
        IpAddr::V6(_) => None,
    });
    let v6: Option<Ipv6Addr> = mine.iter().find_map(|a| match a.addr {
        IpAddr::V6(v) => Some(v),
        IpAddr::V4(_) => None,
    });
    Device {
        name: link.name.clone(),
        ifindex: link.index,
        v4,
        v6,
        addrs: mine.iter().map(|a| a.addr).collect(),
    }
}

/// The devices north-south runs on: those holding one of `node_ips`, and those of the default
/// routes, minus [`excluded`] ones; sorted by name.
#[must_use]
pub fn detect(facts: &NetFacts, node_ips: &[IpAddr]) -> Vec<Device> {
    let mut chosen: BTreeMap<u32, &LinkFacts> = BTreeMap::new();
    let link = |index: u32| facts.links.iter().find(|l| l.index == index);
    for a in &facts.addrs {
        if node_ips.contains(&a.addr)
            && let Some(l) = link(a.index)
        {
            chosen.insert(l.index, l);
        }
    }
    for r in facts.routes.iter().filter(|r| r.dst_len == 0) {
        for l in r.oifs.iter().filter_map(|i| link(*i)) {
            chosen.insert(l.index, l);
        }
    }
    let mut out: Vec<Device> = chosen
        .values()
        .filter(|l| excluded(l, &facts.links).is_none())
        .map(|l| device_of(l, &facts.addrs))
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// A local pod's host-side device, as the CNI plugin made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodDevice {
    pub name: String,
    pub ifindex: u32,
    /// A netkit primary (else a veth): host routing runs in the pod's transmit.
    pub netkit: bool,
}

/// Local pods' host-side devices (the CNI plugin's `fer…` names: veths, or netkit primaries),
/// for BPF host routing.
#[must_use]
pub fn pod_devices(facts: &NetFacts) -> Vec<PodDevice> {
    facts
        .links
        .iter()
        .filter(|l| l.name.starts_with(crate::cni::plan::HOST_IFNAME_PREFIX))
        .filter_map(|l| {
            let netkit = match l.kind.as_deref() {
                Some("veth") => false,
                Some("netkit") => true,
                _ => return None,
            };
            Some(PodDevice {
                name: l.name.clone(),
                ifindex: l.index,
                netkit,
            })
        })
        .collect()
}

/// ferrite's overlay device (`ferrite.vxlan`), if it exists, as (name, ifindex).
#[must_use]
pub fn tunnel_devs(facts: &NetFacts) -> Vec<(String, u32)> {
    facts
        .links
        .iter()
        .filter(|l| l.name == crate::routing::VXLAN_DEV && l.kind.as_deref() == Some("vxlan"))
        .map(|l| (l.name.clone(), l.index))
        .collect()
}

/// The devices named in `--devices`, as the dump sees them; names not found are returned apart.
#[must_use]
pub fn named(facts: &NetFacts, names: &[String]) -> (Vec<Device>, Vec<String>) {
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for name in names {
        match facts.links.iter().find(|l| &l.name == name) {
            Some(l) => found.push(device_of(l, &facts.addrs)),
            None => missing.push(name.clone()),
        }
    }
    (found, missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, name: &str, kind: Option<&str>) -> LinkFacts {
        LinkFacts {
            index,
            name: name.into(),
            kind: kind.map(Into::into),
            master: None,
            loopback: false,
        }
    }

    fn addr(index: u32, a: &str) -> AddrFacts {
        let addr: IpAddr = a.parse().unwrap();
        AddrFacts {
            index,
            addr,
            global: !matches!(addr, IpAddr::V4(v) if v.is_loopback()),
            secondary: false,
        }
    }

    fn default_via(v6: bool, oifs: &[u32]) -> RouteFacts {
        RouteFacts {
            v6,
            dst_len: 0,
            oifs: oifs.to_vec(),
        }
    }

    /// A node: lo, the LAN NIC eth0, a second NIC eth1, a bridge cni0 with port vethX, a pod
    /// veth ferXXXX with the pod gateway address, ferrite's vxlan device, and docker0.
    fn node() -> NetFacts {
        let mut lo = link(1, "lo", None);
        lo.loopback = true;
        let mut port = link(7, "veth1234", Some("veth"));
        port.master = Some(4);
        NetFacts {
            links: vec![
                lo,
                link(2, "eth0", None),
                link(3, "eth1", None),
                link(4, "cni0", Some("bridge")),
                link(5, "fer1a2b3c4d", Some("veth")),
                link(6, "ferrite.vxlan", Some("vxlan")),
                port,
                link(8, "docker0", Some("bridge")),
                link(9, "veth-lan", Some("veth")),
            ],
            addrs: vec![
                addr(1, "127.0.0.1"),
                addr(2, "192.168.1.11"),
                AddrFacts {
                    secondary: true,
                    ..addr(2, "192.168.1.50")
                },
                addr(2, "2001:db8::11"),
                AddrFacts {
                    global: false,
                    ..addr(2, "fe80::1")
                },
                addr(3, "10.0.0.5"),
                addr(4, "10.42.0.1"),
                addr(5, "10.42.0.1"),
                addr(6, "10.42.0.0"),
                addr(8, "172.17.0.1"),
                addr(9, "172.31.0.2"),
            ],
            routes: vec![
                RouteFacts {
                    v6: false,
                    dst_len: 24,
                    oifs: vec![2],
                },
                RouteFacts {
                    v6: false,
                    dst_len: 16,
                    oifs: vec![8],
                },
            ],
        }
    }

    fn names(devs: &[Device]) -> Vec<&str> {
        devs.iter().map(|d| d.name.as_str()).collect()
    }

    #[test]
    fn the_internal_ip_device_is_picked_with_all_its_addresses() {
        let devs = detect(&node(), &["192.168.1.11".parse().unwrap()]);
        assert_eq!(names(&devs), ["eth0"]);
        let eth0 = &devs[0];
        assert_eq!(eth0.ifindex, 2);
        assert_eq!(eth0.v4, Some("192.168.1.11".parse().unwrap()), "primary");
        assert_eq!(eth0.v6, Some("2001:db8::11".parse().unwrap()));
        let all: Vec<String> = eth0.addrs.iter().map(ToString::to_string).collect();
        assert_eq!(all, ["192.168.1.11", "2001:db8::11", "192.168.1.50"]);
        // An IPv6-only InternalIP picks the same device.
        let v6 = detect(&node(), &["2001:db8::11".parse().unwrap()]);
        assert_eq!(names(&v6), ["eth0"]);
    }

    #[test]
    fn default_route_devices_are_picked_in_both_families() {
        let mut facts = node();
        facts.routes.push(default_via(false, &[3]));
        assert_eq!(names(&detect(&facts, &[])), ["eth1"]);
        facts.routes.push(default_via(true, &[2]));
        assert_eq!(
            names(&detect(&facts, &["192.168.1.11".parse().unwrap()])),
            ["eth0", "eth1"]
        );
        // Multipath: every nexthop's device.
        let mut multi = node();
        multi.routes.push(default_via(false, &[2, 3]));
        assert_eq!(names(&detect(&multi, &[])), ["eth0", "eth1"]);
    }

    #[test]
    fn pod_devices_are_the_plugins_veths_and_netkits_only() {
        let mut facts = node();
        facts.links.push(link(10, "fer5e6f7a8b", Some("netkit")));
        facts.links.push(link(11, "ferdummy", Some("dummy")));
        let dev = |name: &str, ifindex, netkit| PodDevice {
            name: name.into(),
            ifindex,
            netkit,
        };
        assert_eq!(
            pod_devices(&facts),
            [dev("fer1a2b3c4d", 5, false), dev("fer5e6f7a8b", 10, true)]
        );
        assert_eq!(tunnel_devs(&node()), [("ferrite.vxlan".to_owned(), 6)]);
    }

    #[test]
    fn veths_bridges_and_ferrites_devices_are_never_picked() {
        let mut facts = node();
        // Even when a default route or the node IP points at them.
        facts.routes.push(default_via(false, &[4, 5, 6, 7, 8, 1]));
        let ips: Vec<IpAddr> = ["10.42.0.1", "172.17.0.1", "127.0.0.1"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert!(
            detect(&facts, &ips).is_empty(),
            "{:?}",
            detect(&facts, &ips)
        );
        let reasons: Vec<Option<&str>> = facts
            .links
            .iter()
            .map(|l| excluded(l, &facts.links))
            .collect();
        assert_eq!(
            reasons,
            [
                Some("loopback"),
                None,
                None,
                Some("bridge"),
                Some("ferrite's own device"),
                Some("ferrite's own device"),
                Some("bridge port"),
                Some("bridge"),
                None,
            ]
        );
        // Without a node IP or a default route on it, a veth is not picked; as the uplink it is.
        assert!(detect(&node(), &[]).is_empty());
        let uplink = detect(&node(), &["172.31.0.2".parse().unwrap()]);
        assert_eq!(names(&uplink), ["veth-lan"]);
    }

    #[test]
    fn explicit_names_are_resolved_and_missing_ones_reported() {
        let (found, missing) = named(&node(), &["eth1".into(), "wlan0".into()]);
        assert_eq!(names(&found), ["eth1"]);
        assert_eq!(found[0].v4, Some("10.0.0.5".parse().unwrap()));
        assert_eq!(missing, ["wlan0"]);
    }
}
