use std::net::IpAddr;

use super::{one_service, parse_err};
use crate::model::{
    NotProxied, Protocol, SCTP_NOT_SERVED, ServiceName, ServicePort, ServiceType, SessionAffinity,
    TargetPort, TrafficPolicy, UnservedPort,
};

fn ip(text: &str) -> IpAddr {
    text.parse().expect("test IP")
}

/// A Service manifest with `spec` lines appended under `spec:` (indented by the caller).
fn with_spec(spec: &str) -> String {
    format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n{spec}")
}

#[test]
fn minimal_service_gets_kubernetes_defaults() {
    let service = one_service(&with_spec(
        "  clusterIP: 10.43.0.10\n  ports:\n  - port: 80\n",
    ));
    assert_eq!(service.name, ServiceName::new("default", "web"));
    assert_eq!(service.service_type, ServiceType::ClusterIp);
    assert_eq!(service.cluster_ips, vec![ip("10.43.0.10")]);
    assert_eq!(
        service.ports,
        vec![ServicePort {
            name: "".into(),
            protocol: Protocol::Tcp,
            port: 80,
            target_port: TargetPort::Number(80),
            node_port: None,
        }]
    );
    assert_eq!(service.session_affinity, SessionAffinity::None);
}

#[test]
fn namespace_is_taken_from_metadata() {
    let service = one_service(
        "apiVersion: v1\nkind: Service\nmetadata: {name: api, namespace: prod}\nspec: {}\n",
    );
    assert_eq!(service.name, ServiceName::new("prod", "api"));
    assert!(service.cluster_ips.is_empty());
    assert!(service.ports.is_empty());
}

#[test]
fn cluster_ips_wins_over_cluster_ip() {
    let service = one_service(&with_spec(
        "  clusterIP: 10.43.0.1\n  clusterIPs: [10.43.0.2, 'fd00::2']\n",
    ));
    assert_eq!(service.cluster_ips, vec![ip("10.43.0.2"), ip("fd00::2")]);
    // An empty clusterIPs falls back to clusterIP.
    let service = one_service(&with_spec("  clusterIP: 10.43.0.1\n  clusterIPs: []\n"));
    assert_eq!(service.cluster_ips, vec![ip("10.43.0.1")]);
}

#[test]
fn ipv6_cluster_ip() {
    let service = one_service(&with_spec("  clusterIP: fd00:43::a\n"));
    assert_eq!(service.cluster_ips, vec![ip("fd00:43::a")]);
}

#[test]
fn headless_services_have_no_cluster_ips() {
    for spec in [
        "  clusterIP: None\n",
        "  clusterIP: ''\n",
        "  clusterIPs: [None]\n",
        "",
    ] {
        let service = one_service(&with_spec(spec));
        assert!(service.cluster_ips.is_empty(), "{spec:?}");
    }
    let error = parse_err(&with_spec("  clusterIPs: [None, 10.43.0.1]\n"));
    assert!(error.contains("spec.clusterIPs"), "{error}");
}

#[test]
fn invalid_cluster_ips_are_rejected() {
    let error = parse_err(&with_spec("  clusterIP: 10.43.0.300\n"));
    assert!(
        error.contains("spec.clusterIP: `10.43.0.300` is not an IP address"),
        "{error}"
    );
    let error = parse_err(&with_spec("  clusterIPs: [10.43.0.1, nope]\n"));
    assert!(error.contains("spec.clusterIPs[1]"), "{error}");
    let error = parse_err(&with_spec("  clusterIPs: [10.43.0.1, 10.43.0.2]\n"));
    assert!(error.contains("one IPv4 and one IPv6"), "{error}");
    let error = parse_err(&with_spec("  clusterIP: 0.0.0.0\n"));
    assert!(error.contains("unspecified"), "{error}");
}

#[test]
fn service_types() {
    for (text, expected) in [
        ("ClusterIP", ServiceType::ClusterIp),
        ("NodePort", ServiceType::NodePort),
        ("LoadBalancer", ServiceType::LoadBalancer),
    ] {
        let service = one_service(&with_spec(&format!(
            "  type: {text}\n  clusterIP: 10.43.0.5\n"
        )));
        assert_eq!(service.service_type, expected);
        assert_eq!(service.cluster_ips, vec![ip("10.43.0.5")]);
    }
    let external = one_service(&with_spec(
        "  type: ExternalName\n  externalName: db.example.com\n  clusterIP: 10.43.0.5\n",
    ));
    assert_eq!(external.service_type, ServiceType::ExternalName);
    assert!(
        external.cluster_ips.is_empty(),
        "ExternalName services are never load-balanced"
    );
    let error = parse_err(&with_spec("  type: Magic\n"));
    assert!(error.contains("spec.type: unknown type `Magic`"), "{error}");
}

#[test]
fn target_port_by_number_name_or_default() {
    let service = one_service(&with_spec(
        "  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: grpc, port: 9000, targetPort: grpc-port}
  - {name: dns, port: 53, protocol: UDP}
  - {name: zero, port: 81, targetPort: 0}
",
    ));
    let targets: Vec<_> = service
        .ports
        .iter()
        .map(|p| (p.name.as_str(), p.protocol, p.target_port.clone()))
        .collect();
    assert_eq!(
        targets,
        vec![
            ("http", Protocol::Tcp, TargetPort::Number(8080)),
            ("grpc", Protocol::Tcp, TargetPort::Name("grpc-port".into())),
            ("dns", Protocol::Udp, TargetPort::Number(53)),
            ("zero", Protocol::Tcp, TargetPort::Number(81)),
        ]
    );
}

#[test]
fn quoted_numeric_target_port_is_rejected() {
    let error = parse_err(&with_spec("  ports:\n  - {port: 80, targetPort: '8080'}\n"));
    assert!(error.contains("spec.ports[0].targetPort"), "{error}");
}

#[test]
fn sctp_ports_are_not_served_and_the_others_are() {
    let service = one_service(&with_spec(
        "  clusterIP: 10.43.0.10\n  ports:\n  - {name: http, port: 80}\n\
         \x20 - {name: sig, port: 9999, protocol: SCTP, targetPort: 9000}\n\
         \x20 - {name: dns, port: 53, protocol: UDP}\n",
    ));
    let served: Vec<_> = service.ports.iter().map(|p| (p.port, p.protocol)).collect();
    assert_eq!(served, vec![(80, Protocol::Tcp), (53, Protocol::Udp)]);
    assert_eq!(
        service.unserved_ports,
        vec![UnservedPort {
            name: "sig".into(),
            port: 9999,
            protocol: "SCTP".into(),
            reason: SCTP_NOT_SERVED,
        }]
    );
    let notes: Vec<String> = service.unserved_notes().collect();
    assert_eq!(
        notes,
        vec![format!(
            "Service default/web: port sig 9999/SCTP not served: {SCTP_NOT_SERVED}"
        )]
    );
    // A Service of SCTP ports only is valid and serves nothing.
    let service = one_service(&with_spec("  ports:\n  - {port: 7, protocol: SCTP}\n"));
    assert!(service.ports.is_empty());
    assert_eq!(service.unserved_notes().count(), 1);
}

#[test]
fn sctp_ports_still_follow_the_port_rules() {
    // The same number over SCTP and TCP is fine; twice over SCTP is not.
    let service = one_service(&with_spec(
        "  ports:\n  - {name: a, port: 80}\n  - {name: b, port: 80, protocol: SCTP}\n",
    ));
    assert_eq!(service.ports.len(), 1);
    let error = parse_err(&with_spec(
        "  ports:\n  - {name: a, port: 80, protocol: SCTP}\n  - {name: b, port: 80, protocol: SCTP}\n",
    ));
    assert!(error.contains("duplicate port 80/SCTP"), "{error}");
    let error = parse_err(&with_spec(
        "  ports:\n  - {port: 80}\n  - {port: 81, protocol: SCTP}\n",
    ));
    assert!(error.contains("spec.ports[0].name"), "{error}");
}

#[test]
fn unknown_protocols_are_rejected() {
    let error = parse_err(&with_spec("  ports:\n  - {port: 80, protocol: tcp}\n"));
    assert!(error.contains("unknown protocol `tcp`"), "{error}");
}

#[test]
fn port_numbers_are_validated() {
    for (port, needle) in [
        ("0", "spec.ports[0].port: 0 is not a port number"),
        ("65536", "spec.ports[0].port: 65536 is not a port number"),
        ("-1", "spec.ports[0].port: -1 is not a port number"),
    ] {
        let error = parse_err(&with_spec(&format!("  ports:\n  - port: {port}\n")));
        assert!(error.contains(needle), "{error}");
    }
    let error = parse_err(&with_spec("  ports:\n  - name: x\n"));
    assert!(error.contains("spec.ports[0].port is required"), "{error}");
    let error = parse_err(&with_spec("  ports:\n  - {port: 80, targetPort: 70000}\n"));
    assert!(error.contains("spec.ports[0].targetPort: 70000"), "{error}");
}

#[test]
fn multi_port_services_need_unique_names_and_ports() {
    let error = parse_err(&with_spec(
        "  ports:\n  - {name: a, port: 80}\n  - {port: 81}\n",
    ));
    assert!(error.contains("spec.ports[1].name"), "{error}");
    let error = parse_err(&with_spec(
        "  ports:\n  - {name: a, port: 80}\n  - {name: a, port: 81}\n",
    ));
    assert!(error.contains("duplicate port name `a`"), "{error}");
    let error = parse_err(&with_spec(
        "  ports:\n  - {name: a, port: 80}\n  - {name: b, port: 80}\n",
    ));
    assert!(error.contains("duplicate port 80/TCP"), "{error}");
    // The same number over TCP and UDP is fine (DNS).
    let service = one_service(&with_spec(
        "  ports:\n  - {name: dns-tcp, port: 53}\n  - {name: dns, port: 53, protocol: UDP}\n",
    ));
    assert_eq!(service.ports.len(), 2);
}

#[test]
fn client_ip_affinity_defaults_to_three_hours() {
    let service = one_service(&with_spec("  sessionAffinity: ClientIP\n"));
    assert_eq!(
        service.session_affinity,
        SessionAffinity::ClientIp {
            timeout_seconds: 10_800
        }
    );
    let service = one_service(&with_spec(
        "  sessionAffinity: ClientIP
  sessionAffinityConfig:
    clientIP:
      timeoutSeconds: 60
",
    ));
    assert_eq!(
        service.session_affinity,
        SessionAffinity::ClientIp {
            timeout_seconds: 60
        }
    );
    // The config alone does not turn affinity on.
    let service = one_service(&with_spec(
        "  sessionAffinity: None\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}\n",
    ));
    assert_eq!(service.session_affinity, SessionAffinity::None);
}

#[test]
fn client_ip_affinity_timeout_bounds() {
    let spec = |seconds: i64| {
        with_spec(&format!(
            "  sessionAffinity: ClientIP
  sessionAffinityConfig: {{clientIP: {{timeoutSeconds: {seconds}}}}}
"
        ))
    };
    assert_eq!(
        one_service(&spec(86_400)).session_affinity,
        SessionAffinity::ClientIp {
            timeout_seconds: 86_400
        }
    );
    assert_eq!(
        one_service(&spec(1)).session_affinity,
        SessionAffinity::ClientIp { timeout_seconds: 1 }
    );
    for seconds in [0, -5, 86_401] {
        let error = parse_err(&spec(seconds));
        assert!(
            error.contains("spec.sessionAffinityConfig.clientIP.timeoutSeconds"),
            "{seconds}: {error}"
        );
    }
    let error = parse_err(&with_spec("  sessionAffinity: Cookie\n"));
    assert!(
        error.contains("spec.sessionAffinity: unknown session affinity"),
        "{error}"
    );
}

#[test]
fn service_without_name_is_rejected() {
    let error = parse_err("apiVersion: v1\nkind: Service\nmetadata: {namespace: x}\n");
    assert!(error.contains("metadata.name is required"), "{error}");
}

#[test]
fn proxy_name_and_headless_labels_hand_the_service_to_another_proxy() {
    let labelled = |labels: &str| {
        one_service(&format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  labels: {{{labels}}}\n\
             spec:\n  clusterIP: 10.43.0.10\n  ports:\n  - port: 80\n"
        ))
    };
    let plain = labelled("app: web");
    assert_eq!(plain.not_proxied, None);
    assert!(plain.proxied());
    assert_eq!(
        labelled("service.kubernetes.io/service-proxy-name: other").not_proxied,
        Some(NotProxied::OtherProxy("other".into()))
    );
    // Presence is what counts, as in kube-proxy's label selector: an empty value too.
    assert_eq!(
        labelled("service.kubernetes.io/service-proxy-name: ''").not_proxied,
        Some(NotProxied::OtherProxy("".into()))
    );
    let headless = labelled("service.kubernetes.io/headless: ''");
    assert_eq!(headless.not_proxied, Some(NotProxied::HeadlessLabel));
    assert!(!headless.proxied());
    // The rest of the service is still read (LB IPAM and the API see it).
    assert_eq!(headless.ports.len(), 1);
}

#[test]
fn internal_traffic_policy_is_read_and_named_in_errors() {
    let service = one_service(&with_spec("  internalTrafficPolicy: Local\n"));
    assert_eq!(service.internal_traffic_policy, TrafficPolicy::Local);
    assert_eq!(service.external_traffic_policy, TrafficPolicy::Cluster);
    let error = parse_err(&with_spec("  internalTrafficPolicy: Nearby\n"));
    assert!(
        error.contains("spec.internalTrafficPolicy: unknown policy `Nearby`"),
        "{error}"
    );
}
