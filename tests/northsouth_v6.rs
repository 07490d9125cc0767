//! IPv6 and dual-stack north-south traffic through the TC path, as root, in the lab of
//! `northsouth.rs`: a dual-stack `LoadBalancer` service (IPv4 + IPv6 cluster IPs, LB IPs and
//! EndpointSlices) reached over IPv6 at both nodes' IPv6 NodePorts and at its IPv6 LB IP
//! (routed via node1), with backends on both nodes: remote backends see the ingress node's
//! IPv6 address (SNAT), and with externalTrafficPolicy Local the client's own IPv6 address.

mod common;
mod northsouth_common;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use ferrite_lab::nslab::{POD_TCP, POD_UDP};
use ferrite_lab::probe::Proto;
use ferrite_lab::report::ClientReport;
use ferrite_lab::{Cidr, NsLab, Route};
use northsouth_common::{assert_both_nodes, attempts, build, start_agents, wait_answers};

fn lb_v6(last: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x30, 0, 0, 0, 0, 0, last)
}

/// A dual-stack LoadBalancer service: `http` TCP 80 → 8080 (node port `node_port`), `dns`
/// UDP 53 → 5353 (node port `node_port - 27`), endpoints: the first pod of each node in
/// `nodes`, in one IPv4 and one IPv6 EndpointSlice.
fn dual_stack_yaml(
    lab: &NsLab,
    name: &str,
    k: u16,
    node_port: u16,
    local: bool,
    nodes: &[usize],
) -> String {
    let mut y = format!(
        "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: test\nspec:\n  type: LoadBalancer\n  clusterIP: 10.96.0.{k}\n  clusterIPs: [\"10.96.0.{k}\", \"fd00:96::{k:x}\"]\n  ipFamilies: [IPv4, IPv6]\n  ipFamilyPolicy: RequireDualStack\n  externalTrafficPolicy: {}\n  ports:\n  - name: http\n    protocol: TCP\n    port: 80\n    targetPort: {POD_TCP}\n    nodePort: {node_port}\n  - name: dns\n    protocol: UDP\n    port: 53\n    targetPort: {POD_UDP}\n    nodePort: {}\nstatus:\n  loadBalancer:\n    ingress:\n    - ip: 172.30.0.{k}\n    - ip: {}\n",
        if local { "Local" } else { "Cluster" },
        node_port - 27,
        lb_v6(k),
    );
    for (family, v6) in [("IPv4", false), ("IPv6", true)] {
        let _ = write!(
            y,
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-{}\n  namespace: test\n  labels:\n    kubernetes.io/service-name: {name}\naddressType: {family}\nports:\n- name: http\n  protocol: TCP\n  port: {POD_TCP}\n- name: dns\n  protocol: UDP\n  port: {POD_UDP}\nendpoints:\n",
            family.to_lowercase()
        );
        for &i in nodes {
            let node = lab.node(i);
            let pod = node.pod(0);
            let ip = if v6 {
                IpAddr::V6(pod.v6)
            } else {
                IpAddr::V4(pod.v4)
            };
            let _ = write!(
                y,
                "- addresses: [\"{ip}\"]\n  nodeName: {}\n  conditions:\n    ready: true\n    serving: true\n    terminating: false\n",
                node.name
            );
        }
    }
    y
}

/// The LB IPv6 range is routed via node1, as the IPv4 one.
fn route_lb_v6(lab: &NsLab) {
    let range: Cidr = "fd00:30::/64".parse().expect("valid");
    for c in lab.clients() {
        Route::via(range, IpAddr::V6(lab.node(0).v6()))
            .add(c.ns())
            .expect("route to the IPv6 LB range");
    }
}

fn v6_node_port(lab: &NsLab, node: usize, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V6(lab.node(node).v6()), port)
}

/// Backends on nodes other than `ingress` saw `ingress`'s IPv6 address.
fn assert_snat_v6(lab: &NsLab, r: &ClientReport, ingress: usize) {
    let node = lab.node(ingress);
    for (name, seen) in &r.peers_seen_by_server {
        if !name.starts_with(&format!("{}-", node.name)) {
            assert_eq!(
                seen,
                &BTreeSet::from([node.v6().to_string()]),
                "{name} must see the ingress node's IPv6 address: {r:?}"
            );
        }
    }
}

#[test]
fn ipv6_nodeport_and_lb_ip_reach_backends_on_both_nodes() {
    let mut lab = build("n6c");
    route_lb_v6(&lab);
    lab.write_manifest(
        "web.yaml",
        &dual_stack_yaml(&lab, "web", 10, 30080, false, &[0, 1]),
    )
    .unwrap();
    start_agents(&mut lab);
    for (tcp, udp, ingress) in [
        (
            v6_node_port(&lab, 0, 30080),
            v6_node_port(&lab, 0, 30053),
            0,
        ),
        (
            v6_node_port(&lab, 1, 30080),
            v6_node_port(&lab, 1, 30053),
            1,
        ),
        (
            SocketAddr::new(IpAddr::V6(lb_v6(10)), 80),
            SocketAddr::new(IpAddr::V6(lb_v6(10)), 53),
            0,
        ),
    ] {
        wait_answers(&lab, 0, tcp, Proto::Tcp);
        let r = attempts(&lab, 0, tcp, Proto::Tcp, 40);
        assert_both_nodes(&lab, &r, 40);
        assert_snat_v6(&lab, &r, ingress);
        wait_answers(&lab, 0, udp, Proto::Udp);
        let r = attempts(&lab, 0, udp, Proto::Udp, 40);
        assert_both_nodes(&lab, &r, 40);
        assert_snat_v6(&lab, &r, ingress);
    }
    // The same service still answers over IPv4.
    let v4 = SocketAddr::new(IpAddr::V4(lab.node(0).v4()), 30080);
    assert_eq!(attempts(&lab, 0, v4, Proto::Tcp, 10).ok, 10);
}

#[test]
fn ipv6_etp_local_keeps_the_client_address() {
    let mut lab = build("n6l");
    route_lb_v6(&lab);
    lab.write_manifest(
        "local.yaml",
        &dual_stack_yaml(&lab, "local", 11, 31080, true, &[0]),
    )
    .unwrap();
    start_agents(&mut lab);
    let client = lab.client(0).v6().to_string();
    for (target, proto) in [
        (v6_node_port(&lab, 0, 31080), Proto::Tcp),
        (v6_node_port(&lab, 0, 31053), Proto::Udp),
        (SocketAddr::new(IpAddr::V6(lb_v6(11)), 80), Proto::Tcp),
        (SocketAddr::new(IpAddr::V6(lb_v6(11)), 53), Proto::Udp),
    ] {
        wait_answers(&lab, 0, target, proto);
        let r = attempts(&lab, 0, target, proto, 20);
        assert_eq!(r.ok, 20, "{r:?}{}", lab.agent_logs(20));
        assert!(
            r.names.keys().all(|n| n.starts_with("node1-")),
            "ETP Local through node1 reached another node: {r:?}"
        );
        assert_eq!(
            r.all_peers_seen(),
            BTreeSet::from([client.as_str()]),
            "ETP Local must keep the client's IPv6 address: {r:?}"
        );
    }
}
