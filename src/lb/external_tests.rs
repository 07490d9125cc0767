use std::collections::BTreeMap;

use super::*;
use crate::model::{Endpoint, EndpointPort, EndpointSlice, ServicePort, TargetPort};

fn snapshot(etp: TrafficPolicy) -> Snapshot {
    let name = ServiceName::new("default", "web");
    let svc = Service {
        name: name.clone(),
        service_type: ServiceType::LoadBalancer,
        cluster_ips: vec!["10.96.0.10".parse().unwrap()],
        ports: vec![ServicePort {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port: 80,
            target_port: TargetPort::Number(8080),
            node_port: Some(30080),
        }],
        external_traffic_policy: etp,
        status_ingress: vec!["192.168.1.200".parse().unwrap()],
        external_ips: vec!["192.168.1.50".parse().unwrap()],
        ..Service::default()
    };
    let ep = |ip: &str, node: &str| Endpoint {
        addresses: vec![ip.parse().unwrap()],
        ready: true,
        serving: true,
        terminating: false,
        node_name: Some(node.into()),
        pod: None,
    };
    let slice = EndpointSlice {
        name: ServiceName::new("default", "web-1"),
        service: name.clone(),
        ports: vec![EndpointPort {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port: 8080,
        }],
        endpoints: vec![ep("10.244.1.2", "node1"), ep("10.244.2.2", "node2")],
    };
    let mut s = Snapshot::default();
    s.services.insert(name, svc);
    s.endpoint_slices.insert(slice.name.clone(), slice);
    s
}

fn node(name: &str) -> NodeView<'_> {
    NodeView {
        node_name: name,
        nodeport_range: 30000..=32767,
    }
}

#[test]
fn load_balancer_external_ip_and_node_port_frontends() {
    let fes = external_frontends(
        &snapshot(TrafficPolicy::Cluster),
        &BTreeMap::new(),
        &node("node1"),
    );
    let kinds: Vec<ExtKind> = fes.iter().map(|f| f.kind).collect();
    assert_eq!(
        kinds,
        vec![
            ExtKind::LoadBalancer,
            ExtKind::ExternalIp,
            ExtKind::NodePort
        ]
    );
    assert!(fes.iter().all(|f| f.backends.len() == 2));
    assert_eq!(fes[2].port, 30080);
    assert_eq!(fes[2].addr, None);
}

#[test]
fn local_policy_keeps_only_this_nodes_endpoints() {
    let fes = external_frontends(
        &snapshot(TrafficPolicy::Local),
        &BTreeMap::new(),
        &node("node2"),
    );
    assert!(
        fes.iter()
            .all(|f| f.local_only && f.backends == vec!["10.244.2.2:8080".parse().unwrap()])
    );
    let none = external_frontends(
        &snapshot(TrafficPolicy::Local),
        &BTreeMap::new(),
        &node("node3"),
    );
    assert!(none.iter().all(|f| f.backends.is_empty()));
}

#[test]
fn allocated_addresses_win_over_status_and_node_port_range_applies() {
    let mut alloc = BTreeMap::new();
    alloc.insert(
        ServiceName::new("default", "web"),
        vec!["192.168.1.210".parse().unwrap()],
    );
    let fes = external_frontends(&snapshot(TrafficPolicy::Cluster), &alloc, &node("node1"));
    assert_eq!(fes[0].addr, Some("192.168.1.210".parse().unwrap()));
    let narrow = NodeView {
        node_name: "node1",
        nodeport_range: 31000..=31999,
    };
    let fes = external_frontends(&snapshot(TrafficPolicy::Cluster), &alloc, &narrow);
    assert!(fes.iter().all(|f| f.kind != ExtKind::NodePort));
}

#[test]
fn a_service_left_to_another_proxy_has_no_external_frontends() {
    let mut s = snapshot(TrafficPolicy::Cluster);
    for svc in s.services.values_mut() {
        svc.not_proxied = Some(crate::model::NotProxied::OtherProxy("other".into()));
    }
    assert!(external_frontends(&s, &BTreeMap::new(), &node("node1")).is_empty());
}
