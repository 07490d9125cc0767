use std::net::IpAddr;

use super::{one_slice, parse_err, parse_ok, slices};
use crate::model::{EndpointPort, Protocol, ServiceName};

/// An `EndpointSlice` for service `web` with `body` appended (top-level fields).
fn with_body(address_type: &str, body: &str) -> String {
    format!(
        "apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abc12
  namespace: shop
  labels:
    kubernetes.io/service-name: web
addressType: {address_type}
{body}"
    )
}

#[test]
fn endpoint_slice_fields() {
    let slice = one_slice(&with_body(
        "IPv4",
        "endpoints:
- addresses: [10.42.0.5]
  nodeName: node-a
ports:
- {name: http, port: 8080}
- {port: 53, protocol: UDP}
",
    ));
    assert_eq!(slice.name, ServiceName::new("shop", "web-abc12"));
    assert_eq!(slice.service, ServiceName::new("shop", "web"));
    assert_eq!(
        slice.ports,
        vec![
            EndpointPort {
                name: "http".into(),
                protocol: Protocol::Tcp,
                port: 8080
            },
            EndpointPort {
                name: "".into(),
                protocol: Protocol::Udp,
                port: 53
            },
        ]
    );
    let [endpoint] = &slice.endpoints[..] else {
        panic!("one endpoint: {slice:?}")
    };
    assert_eq!(
        endpoint.addresses,
        vec!["10.42.0.5".parse::<IpAddr>().expect("ip")]
    );
    assert_eq!(endpoint.node_name.as_deref(), Some("node-a"));
}

#[test]
fn endpoint_condition_semantics() {
    // (conditions as written, expected (ready, serving, terminating))
    let cases = [
        ("{}", (true, true, false)),
        ("{ready: false}", (false, false, false)),
        ("{ready: true}", (true, true, false)),
        ("{serving: false}", (true, false, false)),
        (
            "{ready: false, serving: true, terminating: true}",
            (false, true, true),
        ),
        ("{ready: false, terminating: true}", (false, false, true)),
        ("null", (true, true, false)),
    ];
    for (conditions, expected) in cases {
        let slice = one_slice(&with_body(
            "IPv4",
            &format!("endpoints:\n- addresses: [10.42.0.5]\n  conditions: {conditions}\n"),
        ));
        let endpoint = &slice.endpoints[0];
        assert_eq!(
            (endpoint.ready, endpoint.serving, endpoint.terminating),
            expected,
            "conditions: {conditions}"
        );
    }
}

#[test]
fn ipv6_slices_need_ipv6_addresses() {
    let slice = one_slice(&with_body(
        "IPv6",
        "endpoints:\n- addresses: ['fd00:42::5']\n",
    ));
    assert_eq!(
        slice.endpoints[0].addresses,
        vec!["fd00:42::5".parse::<IpAddr>().expect("ip")]
    );
    let error = parse_err(&with_body("IPv6", "endpoints:\n- addresses: [10.42.0.5]\n"));
    assert!(
        error.contains("endpoints[0].addresses[0]: `10.42.0.5` is not an IPv6 address"),
        "{error}"
    );
    let error = parse_err(&with_body(
        "IPv4",
        "endpoints:\n- addresses: [10.42.0.5, bogus]\n",
    ));
    assert!(error.contains("endpoints[0].addresses[1]"), "{error}");
    let error = parse_err(&with_body("IPv4", "endpoints:\n- addresses: []\n"));
    assert!(
        error.contains("endpoints[0].addresses is required"),
        "{error}"
    );
}

#[test]
fn slice_without_service_name_label_is_rejected() {
    let error = parse_err(
        "apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: orphan, labels: {app: web}}
addressType: IPv4
endpoints: []
",
    );
    assert!(error.contains("kubernetes.io/service-name"), "{error}");
    assert!(error.contains("EndpointSlice orphan"), "{error}");
}

#[test]
fn fqdn_slices_are_ignored_and_unknown_address_types_rejected() {
    let objects = parse_ok(&with_body(
        "FQDN",
        "endpoints:\n- addresses: [db.example.com]\n",
    ));
    assert!(objects.is_empty(), "{objects:?}");
    let error = parse_err(&with_body("IPv5", ""));
    assert!(
        error.contains("addressType: unknown address type `IPv5`"),
        "{error}"
    );
    let error = parse_err(&with_body("null", ""));
    assert!(error.contains("addressType is required"), "{error}");
}

#[test]
fn slice_ports_are_validated() {
    let error = parse_err(&with_body("IPv4", "ports:\n- {name: http}\n"));
    assert!(error.contains("ports[0].port is required"), "{error}");
    let error = parse_err(&with_body("IPv4", "ports:\n- {port: 80, protocol: sctp}\n"));
    assert!(
        error.contains("ports[0].protocol: unknown protocol `sctp`"),
        "{error}"
    );
    let objects = parse_ok(&with_body(
        "IPv4",
        "ports:\n- {name: null, port: 80}\nendpoints: null\n",
    ));
    let slice = slices(&objects)[0];
    assert_eq!(slice.ports[0].name, "");
    assert!(slice.endpoints.is_empty());
}

#[test]
fn sctp_slice_ports_are_skipped_and_the_others_kept() {
    let slice = one_slice(&with_body(
        "IPv4",
        "endpoints:\n- addresses: [10.42.0.5]\nports:\n- {name: http, port: 8080}\n\
         - {name: sig, port: 9999, protocol: SCTP}\n",
    ));
    assert_eq!(
        slice.ports,
        vec![EndpointPort {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port: 8080,
        }]
    );
}

#[test]
fn a_pod_target_ref_names_the_endpoints_pod() {
    let slice = one_slice(&with_body(
        "IPv4",
        "endpoints:
- addresses: [10.42.0.5]
  targetRef: {kind: Pod, name: web-7d9f-x2k4q, namespace: shop}
- addresses: [10.42.0.6]
  targetRef: {kind: Pod, name: web-7d9f-abcde}
- addresses: [10.42.0.7]
  targetRef: {kind: Node, name: node-a}
- addresses: [10.42.0.8]
ports: []
",
    ));
    let pods: Vec<Option<ServiceName>> = slice.endpoints.iter().map(|e| e.pod.clone()).collect();
    assert_eq!(
        pods,
        [
            Some(ServiceName::new("shop", "web-7d9f-x2k4q")),
            // No namespace: the slice's.
            Some(ServiceName::new("shop", "web-7d9f-abcde")),
            None,
            None,
        ]
    );
}
