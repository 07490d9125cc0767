use std::net::IpAddr;

use super::*;
use crate::model::{Endpoint, EndpointPort, ServiceType};

fn svc(name: &str, ips: &[&str], ports: &[(&str, Protocol, u16, TargetPort)]) -> Service {
    Service {
        name: ServiceName::new("default", name),
        service_type: ServiceType::ClusterIp,
        cluster_ips: ips.iter().map(|i| i.parse().unwrap()).collect(),
        ports: ports
            .iter()
            .map(|(n, p, port, t)| ServicePort {
                name: (*n).into(),
                protocol: *p,
                port: *port,
                target_port: t.clone(),
                node_port: None,
            })
            .collect(),
        session_affinity: SessionAffinity::None,
        ..Service::default()
    }
}

fn ep(addrs: &[&str], ready: bool, serving: bool, terminating: bool) -> Endpoint {
    Endpoint {
        addresses: addrs.iter().map(|a| a.parse::<IpAddr>().unwrap()).collect(),
        ready,
        serving,
        terminating,
        node_name: None,
        pod: None,
    }
}

fn slice(name: &str, service: &str, ports: &[(&str, u16)], eps: Vec<Endpoint>) -> EndpointSlice {
    EndpointSlice {
        name: ServiceName::new("default", name),
        service: ServiceName::new("default", service),
        ports: ports
            .iter()
            .map(|(n, p)| EndpointPort {
                name: (*n).into(),
                protocol: Protocol::Tcp,
                port: *p,
            })
            .collect(),
        endpoints: eps,
    }
}

fn snapshot(services: Vec<Service>, slices: Vec<EndpointSlice>) -> Snapshot {
    let mut s = Snapshot::default();
    for x in services {
        s.services.insert(x.name.clone(), x);
    }
    for x in slices {
        s.endpoint_slices.insert(x.name.clone(), x);
    }
    s
}

fn backends(fe: &Frontend) -> Vec<String> {
    fe.backends.iter().map(ToString::to_string).collect()
}

#[test]
fn ready_endpoints_of_all_slices_become_backends() {
    let s = snapshot(
        vec![svc(
            "web",
            &["10.96.0.10"],
            &[("http", Protocol::Tcp, 80, TargetPort::Number(8080))],
        )],
        vec![
            slice(
                "web-a",
                "web",
                &[("http", 8080)],
                vec![ep(&["10.1.0.2"], true, true, false)],
            ),
            slice(
                "web-b",
                "web",
                &[("http", 8080)],
                vec![
                    ep(&["10.1.0.3"], true, true, false),
                    ep(&["10.1.0.4"], false, false, false),
                ],
            ),
            slice(
                "other",
                "db",
                &[("http", 8080)],
                vec![ep(&["10.1.0.9"], true, true, false)],
            ),
        ],
    );
    let fes = frontends(&s);
    assert_eq!(fes.len(), 1);
    assert_eq!(backends(&fes[0]), vec!["10.1.0.2:8080", "10.1.0.3:8080"]);
}

#[test]
fn terminating_serving_endpoints_are_a_fallback_only() {
    let s = snapshot(
        vec![svc(
            "web",
            &["10.96.0.10"],
            &[("", Protocol::Tcp, 80, TargetPort::Number(80))],
        )],
        vec![slice(
            "web-a",
            "web",
            &[("", 80)],
            vec![
                ep(&["10.1.0.2"], false, true, true),
                ep(&["10.1.0.3"], false, false, true),
            ],
        )],
    );
    assert_eq!(backends(&frontends(&s)[0]), vec!["10.1.0.2:80"]);
    let s2 = snapshot(
        s.services.values().cloned().collect(),
        vec![slice(
            "web-a",
            "web",
            &[("", 80)],
            vec![
                ep(&["10.1.0.2"], false, true, true),
                ep(&["10.1.0.5"], true, true, false),
            ],
        )],
    );
    assert_eq!(backends(&frontends(&s2)[0]), vec!["10.1.0.5:80"]);
}

#[test]
fn dual_stack_service_gets_one_frontend_per_family() {
    let s = snapshot(
        vec![svc(
            "web",
            &["10.96.0.10", "fd00:96::10"],
            &[("http", Protocol::Tcp, 80, TargetPort::Number(80))],
        )],
        vec![slice(
            "web-a",
            "web",
            &[("http", 8080)],
            vec![
                ep(&["10.1.0.2"], true, true, false),
                ep(&["fd01::2"], true, true, false),
            ],
        )],
    );
    let fes = frontends(&s);
    assert_eq!(fes.len(), 2);
    assert_eq!(backends(&fes[0]), vec!["10.1.0.2:8080"]);
    assert_eq!(backends(&fes[1]), vec!["[fd01::2]:8080"]);
}

#[test]
fn ports_match_by_name_and_protocol_then_by_named_target_port() {
    let s = snapshot(
        vec![svc(
            "dns",
            &["10.96.0.53"],
            &[
                (
                    "dns",
                    Protocol::Udp,
                    53,
                    TargetPort::Name("dns-port".into()),
                ),
                (
                    "metrics",
                    Protocol::Tcp,
                    9153,
                    TargetPort::Name("metrics".into()),
                ),
                ("web", Protocol::Tcp, 80, TargetPort::Name("http".into())),
            ],
        )],
        vec![EndpointSlice {
            ports: vec![
                EndpointPort {
                    name: "dns".into(),
                    protocol: Protocol::Udp,
                    port: 1053,
                },
                EndpointPort {
                    name: "dns".into(),
                    protocol: Protocol::Tcp,
                    port: 9999,
                },
                EndpointPort {
                    name: "metrics".into(),
                    protocol: Protocol::Tcp,
                    port: 9153,
                },
                EndpointPort {
                    name: "http".into(),
                    protocol: Protocol::Tcp,
                    port: 8080,
                },
            ],
            ..slice(
                "dns-a",
                "dns",
                &[],
                vec![ep(&["10.1.0.7"], true, true, false)],
            )
        }],
    );
    let fes = frontends(&s);
    assert_eq!(
        backends(&fes[0]),
        vec!["10.1.0.7:1053"],
        "UDP port picked by protocol"
    );
    assert_eq!(backends(&fes[1]), vec!["10.1.0.7:9153"]);
    assert_eq!(backends(&fes[2]), vec!["10.1.0.7:8080"], "named targetPort");
}

#[test]
fn headless_services_have_no_frontend_and_no_slice_means_no_backends() {
    let s = snapshot(
        vec![
            svc(
                "headless",
                &[],
                &[("", Protocol::Tcp, 80, TargetPort::Number(80))],
            ),
            svc(
                "lonely",
                &["10.96.0.11"],
                &[("", Protocol::Tcp, 80, TargetPort::Number(80))],
            ),
        ],
        vec![],
    );
    let fes = frontends(&s);
    assert_eq!(fes.len(), 1);
    assert!(fes[0].backends.is_empty());
}

#[test]
fn affinity_timeout_is_carried_and_duplicate_frontends_dropped() {
    let mut a = svc(
        "a",
        &["10.96.0.10"],
        &[("", Protocol::Tcp, 80, TargetPort::Number(80))],
    );
    a.session_affinity = SessionAffinity::ClientIp {
        timeout_seconds: 60,
    };
    let b = svc(
        "b",
        &["10.96.0.10"],
        &[("", Protocol::Tcp, 80, TargetPort::Number(80))],
    );
    let fes = frontends(&snapshot(vec![a, b], vec![]));
    assert_eq!(fes.len(), 1);
    assert_eq!(fes[0].service.name, "a");
    assert_eq!(fes[0].affinity_timeout, Some(60));
}

#[test]
fn services_left_to_another_proxy_have_no_frontends() {
    let port = [("", Protocol::Tcp, 80, TargetPort::Number(80))];
    let mut other = svc("other", &["10.96.0.10"], &port);
    other.not_proxied = Some(crate::model::NotProxied::OtherProxy("istio".into()));
    let mut headless = svc("headless", &["10.96.0.11"], &port);
    headless.not_proxied = Some(crate::model::NotProxied::HeadlessLabel);
    let served = svc("served", &["10.96.0.12"], &port);
    let fes = frontends(&snapshot(vec![other, headless, served], vec![]));
    let names: Vec<&str> = fes.iter().map(|f| f.service.name.as_str()).collect();
    assert_eq!(names, ["served"]);
    // The label taken away again: served like any other service.
    let back = svc("other", &["10.96.0.10"], &port);
    assert_eq!(frontends(&snapshot(vec![back], vec![])).len(), 1);
}

#[test]
fn internal_traffic_policy_local_keeps_only_this_nodes_endpoints_on_cluster_ips() {
    let on = |ip: &str, node: &str| Endpoint {
        node_name: Some(node.into()),
        ..ep(&[ip], true, true, false)
    };
    let mut web = svc(
        "web",
        &["10.96.0.10"],
        &[("http", Protocol::Tcp, 80, TargetPort::Number(8080))],
    );
    web.internal_traffic_policy = crate::model::TrafficPolicy::Local;
    let s = snapshot(
        vec![web],
        vec![slice(
            "web-a",
            "web",
            &[("http", 8080)],
            vec![on("10.1.1.2", "node1"), on("10.1.2.2", "node2")],
        )],
    );
    let lb_ip: IpAddr = "192.0.2.10".parse().unwrap();
    let extra = BTreeMap::from([(ServiceName::new("default", "web"), vec![lb_ip])]);
    let fes = frontends_with(&s, &extra, "node1");
    let by_addr = |addr: &str| {
        let fe = fes
            .iter()
            .find(|f| f.addr.to_string() == addr)
            .unwrap_or_else(|| panic!("no frontend {addr}: {fes:?}"));
        backends(fe)
    };
    assert_eq!(by_addr("10.96.0.10"), ["10.1.1.2:8080"]);
    // LoadBalancer addresses from inside follow the external policy: every endpoint.
    assert_eq!(by_addr("192.0.2.10"), ["10.1.1.2:8080", "10.1.2.2:8080"]);
    // From a node with no endpoint of its own: no backend, so connections are refused.
    let elsewhere = frontends_with(&s, &BTreeMap::new(), "node3");
    assert!(elsewhere[0].backends.is_empty(), "{elsewhere:?}");
    // Cluster (the default): every node sees every endpoint.
    let mut cluster = s.clone();
    for svc in cluster.services.values_mut() {
        svc.internal_traffic_policy = crate::model::TrafficPolicy::Cluster;
    }
    let all = frontends_with(&cluster, &BTreeMap::new(), "node3");
    assert_eq!(backends(&all[0]), ["10.1.1.2:8080", "10.1.2.2:8080"]);
}
