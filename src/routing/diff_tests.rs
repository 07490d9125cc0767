use ipnet::IpNet;

use super::diff::{Current, CurrentRoute, CurrentVxlan, Op, diff};
use super::plan::{DesiredFdb, DesiredNeigh, DesiredRoute, Plan, RouteDev, VxlanDevice};

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn vxlan() -> VxlanDevice {
    VxlanDevice {
        vni: 1,
        port: 8472,
        local: "192.168.50.1".parse().unwrap(),
        underlay_ifindex: 2,
        mtu: 1450,
        mac: [0x0e, 1, 2, 3, 4, 5],
        addrs: vec![net("10.244.1.0/32")],
    }
}

fn plan() -> Plan {
    Plan {
        vxlan: Some(vxlan()),
        routes: vec![
            DesiredRoute {
                dst: net("10.244.2.0/24"),
                gateway: "192.168.50.2".parse().unwrap(),
                dev: RouteDev::Index(2),
                onlink: false,
            },
            DesiredRoute {
                dst: net("10.244.4.0/24"),
                gateway: "10.244.4.0".parse().unwrap(),
                dev: RouteDev::Vxlan,
                onlink: true,
            },
        ],
        neighs: vec![DesiredNeigh {
            ip: "10.244.4.0".parse().unwrap(),
            mac: [0x0e, 9, 9, 9, 9, 9],
        }],
        fdb: vec![DesiredFdb {
            mac: [0x0e, 9, 9, 9, 9, 9],
            dst: "192.168.60.4".parse().unwrap(),
        }],
        ..Plan::default()
    }
}

/// The kernel state `plan()` leaves behind.
fn applied() -> Current {
    Current {
        routes: vec![
            CurrentRoute {
                dst: net("10.244.2.0/24"),
                gateway: Some("192.168.50.2".parse().unwrap()),
                ifindex: 2,
                onlink: false,
            },
            CurrentRoute {
                dst: net("10.244.4.0/24"),
                gateway: Some("10.244.4.0".parse().unwrap()),
                ifindex: 9,
                onlink: true,
            },
        ],
        vxlan: Some(CurrentVxlan {
            ifindex: 9,
            vni: Some(1),
            port: Some(8472),
            local: Some("192.168.50.1".parse().unwrap()),
            mtu: 1450,
            mac: Some([0x0e, 1, 2, 3, 4, 5]),
            up: true,
            addrs: vec![net("10.244.1.0/32")],
        }),
        neighs: vec![("10.244.4.0".parse().unwrap(), [0x0e, 9, 9, 9, 9, 9])],
        fdb: vec![([0x0e, 9, 9, 9, 9, 9], "192.168.60.4".parse().unwrap())],
        foreign: vec![net("192.168.50.0/24")],
    }
}

#[test]
fn from_nothing_the_device_comes_first_then_entries_then_routes() {
    let d = diff(&plan(), &Current::default());
    let kinds: Vec<&str> = d
        .ops
        .iter()
        .map(|o| match o {
            Op::CreateVxlan(_) => "create",
            Op::AddVxlanAddr(_) => "addr",
            Op::ReplaceFdb(_) => "fdb",
            Op::ReplaceNeigh(_) => "neigh",
            Op::ReplaceRoute(_) => "route",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["create", "addr", "fdb", "neigh", "route", "route"]);
}

#[test]
fn a_right_state_needs_nothing() {
    let d = diff(&plan(), &applied());
    assert!(d.ops.is_empty(), "{:?}", d.ops);
    assert!(d.blocked.is_empty());
}

#[test]
fn what_someone_deleted_comes_back_and_nothing_else_moves() {
    let mut cur = applied();
    cur.routes.remove(1);
    cur.fdb.clear();
    let d = diff(&plan(), &cur);
    assert_eq!(d.ops.len(), 2, "{:?}", d.ops);
    assert!(matches!(d.ops[0], Op::ReplaceFdb(_)));
    assert!(matches!(&d.ops[1], Op::ReplaceRoute(r) if r.dst == net("10.244.4.0/24")));
}

#[test]
fn a_removed_native_node_takes_only_its_route() {
    let mut p = plan();
    p.routes.remove(0);
    let d = diff(&p, &applied());
    assert_eq!(d.ops.len(), 1, "{:?}", d.ops);
    assert!(matches!(&d.ops[0], Op::DelRoute(r) if r.dst == net("10.244.2.0/24")));
}

#[test]
fn a_changed_next_hop_is_replaced_in_place_never_deleted() {
    let mut p = plan();
    p.routes[0].gateway = "192.168.50.22".parse().unwrap();
    let d = diff(&p, &applied());
    assert_eq!(d.ops.len(), 1, "{:?}", d.ops);
    assert!(matches!(&d.ops[0], Op::ReplaceRoute(r) if r.gateway.to_string() == "192.168.50.22"));
}

#[test]
fn a_removed_vxlan_node_takes_the_device_and_with_it_its_route_neighbour_and_fdb_entry() {
    let mut p = plan();
    p.routes.truncate(1);
    p.neighs.clear();
    p.fdb.clear();
    p.vxlan = None;
    let d = diff(&p, &applied());
    let kinds: Vec<String> = d
        .ops
        .iter()
        .map(|o| {
            format!("{o:?}")
                .split([' ', '(', '{'])
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    // The kernel removes the device's routes, neighbours and FDB entries with it.
    assert_eq!(kinds, ["DeleteVxlan"], "{:?}", d.ops);
}

#[test]
fn a_device_with_another_vni_is_recreated_with_all_its_entries() {
    let mut cur = applied();
    if let Some(v) = &mut cur.vxlan {
        v.vni = Some(7);
    }
    let d = diff(&plan(), &cur);
    assert!(matches!(d.ops[0], Op::DeleteVxlan { ifindex: 9 }));
    assert!(matches!(d.ops[1], Op::CreateVxlan(_)));
    assert!(d.ops.iter().any(|o| matches!(o, Op::ReplaceFdb(_))));
    assert!(d.ops.iter().any(|o| matches!(o, Op::ReplaceNeigh(_))));
    assert!(
        d.ops
            .iter()
            .any(|o| matches!(o, Op::ReplaceRoute(r) if r.dev == RouteDev::Vxlan)),
        "the route through the old device is re-added"
    );
    assert!(!d.ops.iter().any(|o| matches!(o, Op::DelRoute(_))));
}

#[test]
fn someone_elses_route_is_left_alone_and_reported() {
    let mut cur = applied();
    cur.routes.remove(0);
    cur.foreign.push(net("10.244.2.0/24"));
    let d = diff(&plan(), &cur);
    assert!(d.ops.is_empty(), "{:?}", d.ops);
    assert_eq!(d.blocked.len(), 1);
    assert_eq!(d.blocked[0].dst, net("10.244.2.0/24"));
}

#[test]
fn a_new_mac_replaces_the_neighbour_without_deleting_it() {
    let mut p = plan();
    p.neighs[0].mac = [0x0e, 7, 7, 7, 7, 7];
    p.fdb[0].mac = [0x0e, 7, 7, 7, 7, 7];
    let d = diff(&p, &applied());
    assert!(d.ops.iter().any(|o| matches!(o, Op::ReplaceNeigh(_))));
    assert!(
        !d.ops.iter().any(|o| matches!(o, Op::DelNeigh { .. })),
        "{:?}",
        d.ops
    );
    // The FDB is keyed by MAC: the old MAC's entry goes.
    assert!(d.ops.iter().any(|o| matches!(o, Op::DelFdb { .. })));
}
