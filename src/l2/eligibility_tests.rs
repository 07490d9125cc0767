use std::collections::BTreeSet;

use super::*;
use crate::model::{Endpoint, EndpointSlice};

fn snap(etp: TrafficPolicy, interfaces: &[&str]) -> Snapshot {
    let mut s = Snapshot::default();
    let name = ServiceName::new("default", "web");
    s.services.insert(
        name.clone(),
        Service {
            name: name.clone(),
            service_type: ServiceType::LoadBalancer,
            status_ingress: vec!["192.168.1.200".parse().unwrap()],
            external_ips: vec!["192.168.1.50".parse().unwrap()],
            external_traffic_policy: etp,
            ..Service::default()
        },
    );
    s.endpoint_slices.insert(
        ServiceName::new("default", "web-1"),
        EndpointSlice {
            name: ServiceName::new("default", "web-1"),
            service: name,
            ports: vec![],
            endpoints: vec![Endpoint {
                addresses: vec!["10.244.2.2".parse().unwrap()],
                ready: true,
                serving: true,
                terminating: false,
                node_name: Some("node2".into()),
                pod: None,
            }],
        },
    );
    s.l2_policies.insert(
        "p".into(),
        L2Policy {
            name: "p".into(),
            interfaces: interfaces.iter().map(|i| (*i).into()).collect(),
            load_balancer_ips: true,
            ..L2Policy::default()
        },
    );
    s
}

/// North-south on every interface the tests name.
fn all_served() -> BTreeSet<String> {
    ["lo", "eth0", "eth1", "ens192"]
        .iter()
        .map(|s| (*s).to_string())
        .collect()
}

fn ifs(list: &[(&str, bool)]) -> Vec<LocalInterface> {
    list.iter()
        .map(|(n, up)| LocalInterface {
            name: (*n).into(),
            up: *up,
        })
        .collect()
}

#[test]
fn a_policy_selects_lb_ips_on_matching_up_interfaces() {
    let (c, problems) = candidates(
        &snap(TrafficPolicy::Cluster, &["^eth[0-9]+"]),
        &BTreeMap::new(),
        "node1",
        &ifs(&[("lo", true), ("eth0", true)]),
        &all_served(),
    );
    assert!(problems.is_empty());
    assert_eq!(c.len(), 1, "externalIPs not selected by this policy");
    assert!(c[0].eligible);
    assert_eq!(c[0].interface.as_deref(), Some("eth0"));
}

#[test]
fn down_or_missing_interfaces_make_a_node_ineligible() {
    let s = snap(TrafficPolicy::Cluster, &["^eth0$"]);
    let (c, _) = candidates(
        &s,
        &BTreeMap::new(),
        "node1",
        &ifs(&[("eth0", false)]),
        &all_served(),
    );
    assert!(!c[0].eligible && c[0].reason.contains("down"), "{c:?}");
    let (c, _) = candidates(
        &s,
        &BTreeMap::new(),
        "node1",
        &ifs(&[("ens192", true)]),
        &all_served(),
    );
    assert!(
        !c[0].eligible && c[0].reason.contains("no interface"),
        "{c:?}"
    );
}

#[test]
fn local_policy_needs_a_local_endpoint() {
    let s = snap(TrafficPolicy::Local, &[]);
    let (c1, _) = candidates(
        &s,
        &BTreeMap::new(),
        "node1",
        &ifs(&[("eth0", true)]),
        &all_served(),
    );
    let (c2, _) = candidates(
        &s,
        &BTreeMap::new(),
        "node2",
        &ifs(&[("eth0", true)]),
        &all_served(),
    );
    assert!(!c1[0].eligible);
    assert!(c2[0].eligible);
}

#[test]
fn bad_regex_is_a_policy_problem_and_others_still_work() {
    let mut s = snap(TrafficPolicy::Cluster, &["eth["]);
    let mut good = s.l2_policies["p"].clone();
    good.name = "good".into();
    good.interfaces = vec![];
    s.l2_policies.insert("good".into(), good);
    let (c, problems) = candidates(
        &s,
        &BTreeMap::new(),
        "node1",
        &ifs(&[("eth0", true)]),
        &all_served(),
    );
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].policy, "p");
    assert!(c[0].eligible, "the valid policy still announces");
}

#[test]
fn an_interface_without_north_south_answers_for_nothing() {
    let s = snap(TrafficPolicy::Cluster, &["^eth[0-9]+"]);
    let interfaces = ifs(&[("eth0", true), ("eth1", true)]);
    let none = BTreeSet::new();
    let (c, _) = candidates(&s, &BTreeMap::new(), "node1", &interfaces, &none);
    assert_eq!(c.len(), 1);
    assert!(!c[0].eligible);
    assert_eq!(c[0].interface, None);
    assert!(
        c[0].reason
            .contains("no north-south datapath on eth0, eth1"),
        "{}",
        c[0].reason
    );
    // Served on eth1 only: announced there, not on the first matching eth0.
    let eth1: BTreeSet<String> = ["eth1".to_string()].into();
    let (c, _) = candidates(&s, &BTreeMap::new(), "node1", &interfaces, &eth1);
    assert!(c[0].eligible);
    assert_eq!(c[0].interface.as_deref(), Some("eth1"));
}
