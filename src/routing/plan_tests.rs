use std::collections::BTreeMap;

use ipnet::IpNet;
use smol_str::SmolStr;

use super::plan::{LocalNet, PlanInput, Reach, RouteDev, plan};
use super::vtep::vtep_mac;
use super::{RoutingConfig, RoutingMode};
use crate::model::Node;

fn node(name: &str, ips: &[&str], cidrs: &[&str]) -> (SmolStr, Node) {
    (
        name.into(),
        Node {
            name: name.into(),
            internal_ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
            pod_cidrs: cidrs.iter().map(|s| s.parse().unwrap()).collect(),
            ready: true,
            ..Node::default()
        },
    )
}

fn local(ifname: &str, ifindex: u32, net: &str) -> LocalNet {
    LocalNet {
        ifname: ifname.into(),
        ifindex,
        net: net.parse().unwrap(),
        mtu: 1500,
    }
}

fn cluster() -> BTreeMap<SmolStr, Node> {
    BTreeMap::from([
        node(
            "n1",
            &["192.168.50.1", "fd00:50::1"],
            &["10.244.1.0/24", "fd00:244:1::/64"],
        ),
        node(
            "n2",
            &["192.168.50.2", "fd00:50::2"],
            &["10.244.2.0/24", "fd00:244:2::/64"],
        ),
        // Behind a router: not on a connected subnet.
        node("n4", &["192.168.60.4"], &["10.244.4.0/24"]),
        // No PodCIDR yet: nothing to route.
        node("n5", &["192.168.50.5"], &[]),
    ])
}

fn n1_local() -> Vec<LocalNet> {
    vec![
        local("eth0", 2, "192.168.50.1/24"),
        local("eth0", 2, "fd00:50::1/64"),
        local("lo", 1, "127.0.0.1/8"),
    ]
}

fn cfg(mode: RoutingMode) -> RoutingConfig {
    RoutingConfig {
        mode,
        ..RoutingConfig::default()
    }
}

#[test]
fn auto_routes_connected_nodes_natively_and_the_rest_over_vxlan() {
    let nodes = cluster();
    let local = n1_local();
    let c = cfg(RoutingMode::Auto);
    let p = plan(&PlanInput {
        node_name: "n1",
        nodes: &nodes,
        local: &local,
        cfg: &c,
    });
    assert!(p.problems.is_empty(), "{:?}", p.problems);
    let routes: Vec<String> = p
        .routes
        .iter()
        .map(|r| {
            format!(
                "{} via {} {:?} onlink={}",
                r.dst, r.gateway, r.dev, r.onlink
            )
        })
        .collect();
    assert_eq!(
        routes,
        [
            "10.244.2.0/24 via 192.168.50.2 Index(2) onlink=false",
            "10.244.4.0/24 via 10.244.4.0 Vxlan onlink=true",
            "fd00:244:2::/64 via fd00:50::2 Index(2) onlink=false",
        ]
    );
    let v = p.vxlan.expect("n4 needs VXLAN");
    assert_eq!(v.local.to_string(), "192.168.50.1");
    assert_eq!((v.vni, v.port, v.mtu), (1, 8472, 1450));
    assert_eq!(v.mac, vtep_mac("n1"));
    let addrs: Vec<String> = v.addrs.iter().map(ToString::to_string).collect();
    assert_eq!(addrs, ["10.244.1.0/32", "fd00:244:1::/128"]);
    assert_eq!(p.pod_mtu, Some(1450), "pods fit in the VXLAN MTU");
    assert_eq!(p.fdb.len(), 1);
    assert_eq!(p.fdb[0].dst.to_string(), "192.168.60.4");
    assert_eq!(p.fdb[0].mac, vtep_mac("n4"));
    assert_eq!(p.neighs[0].ip.to_string(), "10.244.4.0");
    assert_eq!(
        p.remotes.len(),
        2,
        "itself and n5 without PodCIDRs are not listed"
    );
    assert!(matches!(p.remotes[0].cidrs[0].1, Reach::Native { .. }));
}

#[test]
fn native_only_reports_what_it_cannot_reach() {
    let nodes = cluster();
    let local = n1_local();
    let c = cfg(RoutingMode::Native);
    let p = plan(&PlanInput {
        node_name: "n1",
        nodes: &nodes,
        local: &local,
        cfg: &c,
    });
    assert!(p.vxlan.is_none());
    assert_eq!(p.pod_mtu, None, "no encapsulation: the underlay MTU");
    assert_eq!(p.routes.len(), 2);
    assert_eq!(p.problems.len(), 1);
    assert!(p.problems[0].contains("n4"), "{}", p.problems[0]);
    assert!(p.problems[0].contains("--routing auto"));
}

#[test]
fn vxlan_mode_tunnels_every_node_both_families() {
    let nodes = cluster();
    let local = n1_local();
    let c = cfg(RoutingMode::Vxlan);
    let p = plan(&PlanInput {
        node_name: "n1",
        nodes: &nodes,
        local: &local,
        cfg: &c,
    });
    assert!(
        p.routes
            .iter()
            .all(|r| r.dev == RouteDev::Vxlan && r.onlink)
    );
    let dsts: Vec<String> = p.routes.iter().map(|r| r.dst.to_string()).collect();
    assert_eq!(dsts, ["10.244.2.0/24", "10.244.4.0/24", "fd00:244:2::/64"]);
    // The IPv6 PodCIDR of n2 goes over the IPv4 underlay to n2's IPv4 address.
    let v6 = p.routes.iter().find(|r| !r.dst.addr().is_ipv4()).unwrap();
    assert_eq!(v6.gateway.to_string(), "fd00:244:2::");
    let fdb: Vec<String> = p.fdb.iter().map(|f| f.dst.to_string()).collect();
    assert_eq!(fdb, ["192.168.50.2", "192.168.60.4"]);
}

#[test]
fn without_its_own_node_vxlan_waits_and_says_so() {
    let mut nodes = cluster();
    nodes.remove("n1");
    let local = n1_local();
    let c = cfg(RoutingMode::Auto);
    let p = plan(&PlanInput {
        node_name: "n1",
        nodes: &nodes,
        local: &local,
        cfg: &c,
    });
    // Native routes need nothing of this node but its interfaces.
    assert_eq!(p.routes.len(), 2);
    assert!(p.vxlan.is_none());
    assert!(p.problems.iter().any(|m| m.contains("n4")));
}

#[test]
fn off_plans_nothing_and_equal_inputs_plan_equally() {
    let nodes = cluster();
    let local = n1_local();
    let off = cfg(RoutingMode::Off);
    let input = PlanInput {
        node_name: "n1",
        nodes: &nodes,
        local: &local,
        cfg: &off,
    };
    assert_eq!(plan(&input), super::plan::Plan::default());
    let auto = cfg(RoutingMode::Auto);
    let a = plan(&PlanInput {
        cfg: &auto,
        ..input
    });
    let b = plan(&PlanInput {
        cfg: &auto,
        ..input
    });
    assert_eq!(a, b);
}

#[test]
fn the_most_specific_connected_subnet_and_its_device_win() {
    let nodes = BTreeMap::from([
        node("a", &["10.0.0.1"], &["10.244.1.0/24"]),
        node("b", &["10.0.1.2"], &["10.244.2.0/24"]),
    ]);
    let local = vec![
        local("wide", 3, "10.0.0.1/16"),
        local("narrow", 4, "10.0.1.1/24"),
    ];
    let c = cfg(RoutingMode::Auto);
    let p = plan(&PlanInput {
        node_name: "a",
        nodes: &nodes,
        local: &local,
        cfg: &c,
    });
    assert_eq!(p.routes.len(), 1);
    assert_eq!(p.routes[0].dev, RouteDev::Index(4));
    let net: IpNet = "10.244.2.0/24".parse().unwrap();
    assert_eq!(p.routes[0].dst, net);
}
