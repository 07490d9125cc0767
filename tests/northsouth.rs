//! North-south load balancing end to end, as root: a LAN bridge with two node netns (pods
//! behind each, `ferrite agent --devices eth0` inside each node) and two client netns outside
//! the cluster, which reach NodePorts on the node addresses and LoadBalancer IPs through a
//! static route via node1. Pods answer `NAME PEER`, so tests see which backend answered and
//! which client address it saw. The first test runs the same lab through kube-proxy-shaped
//! iptables rules instead of ferrite, proving the topology and the expectations themselves.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use common::{FERRITE, lab_bin, require_root};
use ferrite_lab::nslab::{
    CLUSTER_CIDR, LAN_IFNAME, POD_HTTP, POD_TCP, POD_UDP, local_endpoints, map_entries,
};
use ferrite_lab::probe::{Limit, ProbeConfig, Proto};
use ferrite_lab::raw::{Aim, Class, RawSender, catalog};
use ferrite_lab::report::ClientReport;
use ferrite_lab::{AgentConfig, NsLab, NsLabConfig, NsService, SvcEndpoint, kubeproxy, wait_until};

const CT_MAP: &str = "fe_ct_v1";

fn lb_ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(172, 30, 0, last))
}

fn cluster_ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 96, 0, last)
}

fn build(prefix: &str) -> NsLab {
    require_root();
    NsLab::build(
        NsLabConfig {
            prefix: prefix.into(),
            ..NsLabConfig::default()
        },
        &lab_bin(),
    )
    .unwrap_or_else(|e| panic!("building the north-south lab: {e}"))
}

fn start_agents(lab: &mut NsLab) {
    let config = AgentConfig::new(Path::new(FERRITE));
    if let Err(e) = lab.start_agents(&config) {
        panic!("starting ferrite agents: {e}");
    }
}

/// Every pod of every node as an endpoint.
fn all_endpoints(lab: &NsLab) -> Vec<SvcEndpoint> {
    lab.nodes()
        .iter()
        .flat_map(|n| (0..n.pods.pods().len()).map(move |i| SvcEndpoint::new(n.pod_v4(i), &n.name)))
        .collect()
}

/// The pods of node `node` as endpoints.
fn endpoints_on(lab: &NsLab, node: usize) -> Vec<SvcEndpoint> {
    let n = lab.node(node);
    (0..n.pods.pods().len())
        .map(|i| SvcEndpoint::new(n.pod_v4(i), &n.name))
        .collect()
}

fn tcp_of(target: IpAddr, svc: &NsService) -> SocketAddr {
    SocketAddr::new(target, svc.port("http").port)
}

fn udp_of(target: IpAddr, svc: &NsService) -> SocketAddr {
    SocketAddr::new(target, svc.port("dns").port)
}

fn node_tcp(lab: &NsLab, node: usize, svc: &NsService) -> SocketAddr {
    lab.node(node)
        .at(svc.port("http").node_port.expect("node port"))
}

fn node_udp(lab: &NsLab, node: usize, svc: &NsService) -> SocketAddr {
    lab.node(node)
        .at(svc.port("dns").node_port.expect("node port"))
}

fn attempts(
    lab: &NsLab,
    client: usize,
    target: SocketAddr,
    proto: Proto,
    count: u64,
) -> ClientReport {
    lab.attempts(client, target, proto, count, 1000)
        .unwrap_or_else(|e| panic!("probing {target}: {e}"))
}

/// Attempts that are expected to fail: short timeouts.
fn refused(lab: &NsLab, client: usize, target: SocketAddr, proto: Proto) -> ClientReport {
    lab.attempts(client, target, proto, 4, 300)
        .unwrap_or_else(|e| panic!("probing {target}: {e}"))
}

fn wait_answers(lab: &NsLab, client: usize, target: SocketAddr, proto: Proto) {
    if let Err(last) = lab.wait_answers(client, target, proto, Duration::from_secs(10)) {
        panic!(
            "{target} ({proto:?}) never answered {} within 10 s; last attempt: {last:?}{}",
            lab.client(client).name,
            lab.agent_logs(30)
        );
    }
}

fn set<'a>(items: impl IntoIterator<Item = &'a str>) -> BTreeSet<&'a str> {
    items.into_iter().collect()
}

/// Every attempt answered, by backends on both nodes.
fn assert_both_nodes(lab: &NsLab, r: &ClientReport, count: u64) {
    assert_eq!(
        r.ok,
        count,
        "not every attempt was answered: {r:?}{}",
        lab.agent_logs(20)
    );
    for node in lab.nodes() {
        assert!(
            !r.names_starting_with(&format!("{}-", node.name)).is_empty(),
            "no backend on {} answered {}: {r:?}",
            node.name,
            r.target
        );
    }
}

/// Backends on nodes other than `ingress` saw `ingress`'s LAN address (SNAT); returns what the
/// ingress node's own backends saw, for information.
fn assert_snat_for_remote_backends(
    lab: &NsLab,
    r: &ClientReport,
    ingress: usize,
) -> BTreeSet<String> {
    let ingress_node = lab.node(ingress);
    let mut local_seen = BTreeSet::new();
    for (name, seen) in &r.peers_seen_by_server {
        if name.starts_with(&format!("{}-", ingress_node.name)) {
            local_seen.extend(seen.iter().cloned());
        } else {
            assert_eq!(
                seen.iter().map(String::as_str).collect::<BTreeSet<_>>(),
                set([ingress_node.v4().to_string().as_str()]),
                "{name} (on another node than the ingress {}) must see the ingress node's address: {r:?}",
                ingress_node.name
            );
        }
    }
    local_seen
}

/// Only backends on `node` answered, and each saw the client's own address.
fn assert_local_with_client_ip(
    lab: &NsLab,
    r: &ClientReport,
    node: usize,
    client: usize,
    count: u64,
) {
    let node_name = &lab.node(node).name;
    let client_ip = lab.client(client).v4().to_string();
    assert_eq!(r.ok, count, "{r:?}{}", lab.agent_logs(20));
    assert!(
        r.names
            .keys()
            .all(|n| n.starts_with(&format!("{node_name}-"))),
        "externalTrafficPolicy Local through {node_name} reached another node's backend: {r:?}"
    );
    assert_eq!(
        r.all_peers_seen(),
        set([client_ip.as_str()]),
        "externalTrafficPolicy Local must keep the client address: {r:?}"
    );
}

/// kube-proxy-shaped rules on node1 serve NodePort, LB IP, ETP=Local and source ranges, and
/// direct pod access works, in this very lab: the topology and expectations are sound. No
/// ferrite involved.
#[test]
fn baseline_direct_and_kube_proxy_paths_work_without_ferrite() {
    let lab = build("nsb");
    let client_ip = lab.client(0).v4().to_string();

    // Direct to every pod: the pod sees the client's own address.
    for node in lab.nodes() {
        for i in 0..node.pods.pods().len() {
            let name = node.pod_name(i);
            for (port, proto) in [(POD_TCP, Proto::Tcp), (POD_UDP, Proto::Udp)] {
                let r = attempts(&lab, 0, SocketAddr::from((node.pod_v4(i), port)), proto, 3);
                assert_eq!(r.names.get(&name), Some(&3), "{r:?}");
                assert_eq!(r.all_peers_seen(), set([client_ip.as_str()]), "{r:?}");
            }
        }
    }
    let pod = SocketAddr::from((lab.node(1).pod_v4(0), POD_HTTP));
    let http = lab
        .http_get(0, pod, "/")
        .expect("netns")
        .expect("HTTP to a pod");
    assert_eq!(http.status, 200);
    assert!(
        http.body.starts_with(&format!("node2-pod-1 {client_ip}:")),
        "{http:?}"
    );

    let mut web = NsService::load_balancer("web", cluster_ip(10), lb_ip(10), 30080);
    web.endpoints = all_endpoints(&lab);
    let mut local = NsService::load_balancer("local", cluster_ip(11), lb_ip(11), 31080);
    local.local = true;
    local.health_check_node_port = Some(32100);
    local.endpoints = vec![
        SvcEndpoint::new(lab.node(0).pod_v4(0), "node1"),
        SvcEndpoint::new(lab.node(1).pod_v4(0), "node2"),
    ];
    let mut ranged = NsService::load_balancer("ranged", cluster_ip(12), lb_ip(12), 32080);
    ranged.source_ranges = vec![format!("{client_ip}/32").parse().unwrap()];
    ranged.endpoints = all_endpoints(&lab);
    let rules = kubeproxy::iptables_rules(
        &[web.clone(), local.clone(), ranged.clone()],
        "node1",
        CLUSTER_CIDR.parse().unwrap(),
    );
    lab.iptables_restore(0, "iptables-restore", &rules)
        .unwrap_or_else(|e| panic!("loading kube-proxy rules: {e}\n{rules}"));

    // Cluster policy: backends on both nodes; kube-proxy masquerades, so no backend sees the
    // client.
    for (target, proto) in [
        (node_tcp(&lab, 0, &web), Proto::Tcp),
        (tcp_of(lb_ip(10), &web), Proto::Tcp),
        (node_udp(&lab, 0, &web), Proto::Udp),
        (udp_of(lb_ip(10), &web), Proto::Udp),
    ] {
        let r = attempts(&lab, 0, target, proto, 40);
        assert_both_nodes(&lab, &r, 40);
        assert!(!r.all_peers_seen().contains(client_ip.as_str()), "{r:?}");
    }
    let mut unconnected = ProbeConfig::new(udp_of(lb_ip(10), &web), Proto::Udp, Limit::Count(10));
    unconnected.udp_unconnected = true;
    let r = lab.probe(0, &unconnected).unwrap();
    assert_eq!(r.ok, 10, "{r:?}");
    assert_eq!(
        r.reply_sources,
        BTreeSet::from([unconnected.target.to_string()])
    );

    // Local policy: node1's endpoint only, with the client's address.
    for target in [node_tcp(&lab, 0, &local), tcp_of(lb_ip(11), &local)] {
        let r = attempts(&lab, 0, target, Proto::Tcp, 20);
        assert_local_with_client_ip(&lab, &r, 0, 0, 20);
        assert_eq!(r.names.keys().collect::<Vec<_>>(), ["node1-pod-1"]);
    }

    // Source ranges: client1 inside, client2 outside.
    let target = tcp_of(lb_ip(12), &ranged);
    assert_eq!(attempts(&lab, 0, target, Proto::Tcp, 10).ok, 10);
    let outside = refused(&lab, 1, target, Proto::Tcp);
    assert_eq!(outside.ok, 0, "{outside:?}");
}

/// TCP and UDP to a NodePort on either node and to an LB IP reach backends on both nodes;
/// backends on another node than the ingress see the ingress node's address (SNAT), replies
/// come back from the address the client used.
#[test]
fn nodeport_and_lb_ip_reach_backends_on_both_nodes() {
    let mut lab = build("nsc");
    let mut web = NsService::load_balancer("web", cluster_ip(10), lb_ip(10), 30080);
    web.endpoints = all_endpoints(&lab);
    lab.write_manifest("web.yaml", &web.to_yaml()).unwrap();
    start_agents(&mut lab);
    wait_answers(&lab, 0, node_tcp(&lab, 0, &web), Proto::Tcp);

    for (tcp, udp, ingress) in [
        (node_tcp(&lab, 0, &web), node_udp(&lab, 0, &web), 0),
        (node_tcp(&lab, 1, &web), node_udp(&lab, 1, &web), 1),
        (tcp_of(lb_ip(10), &web), udp_of(lb_ip(10), &web), 0),
    ] {
        wait_answers(&lab, 0, tcp, Proto::Tcp);
        let r = attempts(&lab, 0, tcp, Proto::Tcp, 60);
        assert_both_nodes(&lab, &r, 60);
        assert_eq!(r.peers, BTreeSet::from([tcp.to_string()]), "{r:?}");
        let local = assert_snat_for_remote_backends(&lab, &r, ingress);
        eprintln!("{tcp} tcp: backends on the ingress node saw {local:?}");

        wait_answers(&lab, 0, udp, Proto::Udp);
        let r = attempts(&lab, 0, udp, Proto::Udp, 60);
        assert_both_nodes(&lab, &r, 60);
        let local = assert_snat_for_remote_backends(&lab, &r, ingress);
        eprintln!("{udp} udp: backends on the ingress node saw {local:?}");

        let mut unconnected = ProbeConfig::new(udp, Proto::Udp, Limit::Count(20));
        unconnected.udp_unconnected = true;
        let r = lab.probe(0, &unconnected).unwrap();
        assert_eq!(r.ok, 20, "{r:?}");
        assert_eq!(
            r.reply_sources,
            BTreeSet::from([udp.to_string()]),
            "UDP replies must come from the address the client sent to"
        );
    }
}

/// `GET /` on a health-check node port from the first client.
fn health(lab: &NsLab, node: usize, port: u16) -> Option<ferrite_lab::http::HttpResponse> {
    lab.http_get(0, lab.node(node).at(port), "/").ok()?.ok()
}

fn wait_health(lab: &NsLab, node: usize, port: u16, status: u16, count: Option<u64>) {
    let mut last = None;
    let ok = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        last = health(lab, node, port);
        last.as_ref().is_some_and(|r| {
            r.status == status && count.is_none_or(|n| local_endpoints(&r.body) == Some(n))
        })
    });
    assert!(
        ok.is_ok(),
        "health check {}:{port} never answered {status} with {count:?} local endpoints (kube-proxy's body: {{\"localEndpoints\": N, ...}}); last answer: {last:?}{}",
        lab.node(node).name,
        lab.agent_logs(30)
    );
}

/// externalTrafficPolicy Local: only local backends, the client's own address, nothing
/// through a node without local endpoints, and `healthCheckNodePort` answering 200 with the
/// local endpoint count or 503 — following endpoint changes.
#[test]
fn etp_local_keeps_the_client_ip_and_health_checks_count_local_endpoints() {
    let mut lab = build("nsd");
    let hc = 32100;
    let mut local = NsService::load_balancer("local", cluster_ip(11), lb_ip(11), 31080);
    local.local = true;
    local.health_check_node_port = Some(hc);
    local.endpoints = endpoints_on(&lab, 0);
    lab.write_manifest("local.yaml", &local.to_yaml()).unwrap();
    start_agents(&mut lab);

    wait_health(&lab, 0, hc, 200, Some(2));
    wait_health(&lab, 1, hc, 503, None);
    if let Some(n) = health(&lab, 1, hc).and_then(|r| local_endpoints(&r.body)) {
        assert_eq!(n, 0, "node2 has no local endpoint");
    }

    for (tcp, udp) in [
        (node_tcp(&lab, 0, &local), node_udp(&lab, 0, &local)),
        (tcp_of(lb_ip(11), &local), udp_of(lb_ip(11), &local)),
    ] {
        wait_answers(&lab, 0, tcp, Proto::Tcp);
        let r = attempts(&lab, 0, tcp, Proto::Tcp, 30);
        assert_local_with_client_ip(&lab, &r, 0, 0, 30);
        assert_eq!(r.names.len(), 2, "both local backends are used: {r:?}");
        let r = attempts(&lab, 0, udp, Proto::Udp, 30);
        assert_local_with_client_ip(&lab, &r, 0, 0, 30);
    }
    for (target, proto) in [
        (node_tcp(&lab, 1, &local), Proto::Tcp),
        (node_udp(&lab, 1, &local), Proto::Udp),
    ] {
        let r = refused(&lab, 0, target, proto);
        assert_eq!(
            r.ok, 0,
            "node2 has no local endpoint, yet {target} answered: {r:?}"
        );
    }

    // node2 gets an endpoint: its health check and NodePort follow.
    local
        .endpoints
        .push(SvcEndpoint::new(lab.node(1).pod_v4(0), "node2"));
    lab.write_manifest("local.yaml", &local.to_yaml()).unwrap();
    wait_health(&lab, 1, hc, 200, Some(1));
    wait_answers(&lab, 0, node_tcp(&lab, 1, &local), Proto::Tcp);
    let r = attempts(&lab, 0, node_tcp(&lab, 1, &local), Proto::Tcp, 20);
    assert_local_with_client_ip(&lab, &r, 1, 0, 20);
    assert_eq!(r.names.keys().collect::<Vec<_>>(), ["node2-pod-1"]);

    // node1 loses its endpoints: 503 there, node2 unchanged.
    local.endpoints = vec![SvcEndpoint::new(lab.node(1).pod_v4(0), "node2")];
    lab.write_manifest("local.yaml", &local.to_yaml()).unwrap();
    wait_health(&lab, 0, hc, 503, None);
    wait_health(&lab, 1, hc, 200, Some(1));
}

/// `loadBalancerSourceRanges`: a client inside answers, one outside gets nothing, and
/// widening the range lets it in.
#[test]
fn load_balancer_source_ranges_refuse_clients_outside() {
    let mut lab = build("nse");
    let inside = lab.client(0).v4();
    let mut ranged = NsService::load_balancer("ranged", cluster_ip(12), lb_ip(12), 32080);
    ranged.source_ranges = vec![format!("{inside}/32").parse().unwrap()];
    ranged.endpoints = all_endpoints(&lab);
    lab.write_manifest("ranged.yaml", &ranged.to_yaml())
        .unwrap();
    start_agents(&mut lab);
    let (tcp, udp) = (tcp_of(lb_ip(12), &ranged), udp_of(lb_ip(12), &ranged));
    wait_answers(&lab, 0, tcp, Proto::Tcp);

    let r = attempts(&lab, 0, tcp, Proto::Tcp, 20);
    assert_both_nodes(&lab, &r, 20);
    let r = attempts(&lab, 0, udp, Proto::Udp, 20);
    assert_eq!(r.ok, 20, "{r:?}");
    for (target, proto) in [(tcp, Proto::Tcp), (udp, Proto::Udp)] {
        let r = refused(&lab, 1, target, proto);
        assert_eq!(
            r.ok,
            0,
            "{} ({}) is outside {:?} but reached {target}: {r:?}",
            lab.client(1).name,
            lab.client(1).v4(),
            ranged.source_ranges
        );
    }

    ranged.source_ranges = vec!["192.168.50.0/24".parse().unwrap()];
    lab.write_manifest("ranged.yaml", &ranged.to_yaml())
        .unwrap();
    wait_answers(&lab, 1, tcp, Proto::Tcp);
    assert_eq!(attempts(&lab, 1, udp, Proto::Udp, 10).ok, 10);
}

/// The backend each of `flows` fixed source ports gets through the LB IP (one attempt each).
fn maglev_picks(lab: &NsLab, target: SocketAddr, flows: u16) -> Vec<String> {
    (0..flows)
        .map(|i| {
            let mut cfg = ProbeConfig::new(target, Proto::Tcp, Limit::Count(1));
            cfg.source_port = Some(42_000 + i);
            let r = lab.probe(0, &cfg).unwrap();
            assert_eq!(
                r.ok,
                1,
                "flow from port {}: {r:?}{}",
                42_000 + i,
                lab.agent_logs(20)
            );
            r.names.keys().next().expect("one name").clone()
        })
        .collect()
}

/// Maglev: the same flow gets the same backend whichever node it enters (ECMP in front of
/// the nodes stays consistent); ClientIP affinity: one client sticks to one backend.
#[test]
fn maglev_is_consistent_across_nodes_and_client_ip_affinity_sticks() {
    let mut lab = build("nsf");
    let mut mag = NsService::load_balancer("mag", cluster_ip(13), lb_ip(13), 30180);
    mag.algorithm = Some("maglev".into());
    mag.endpoints = all_endpoints(&lab);
    let mut sticky = NsService::load_balancer("sticky", cluster_ip(14), lb_ip(14), 30280);
    sticky.affinity_seconds = Some(300);
    sticky.endpoints = all_endpoints(&lab);
    lab.write_manifest("mag.yaml", &(mag.to_yaml() + &sticky.to_yaml()))
        .unwrap();
    start_agents(&mut lab);
    let target = tcp_of(lb_ip(13), &mag);
    wait_answers(&lab, 0, target, Proto::Tcp);

    let via_node1 = maglev_picks(&lab, target, 24);
    let spread: BTreeSet<&String> = via_node1.iter().collect();
    assert!(spread.len() >= 2, "24 flows all went to {spread:?}");
    lab.route_lb_via(0, 1).unwrap();
    wait_answers(&lab, 0, target, Proto::Tcp);
    let via_node2 = maglev_picks(&lab, target, 24);
    lab.route_lb_via(0, 0).unwrap();
    let differ: Vec<(u16, &String, &String)> = (42_000..)
        .zip(via_node1.iter().zip(&via_node2))
        .filter(|(_, (a, b))| a != b)
        .map(|(port, (a, b))| (port, a, b))
        .collect();
    assert!(
        differ.is_empty(),
        "maglev must pick the same backend for a flow on every node; (source port, via node1, via node2): {differ:?}"
    );

    for (target, proto) in [
        (tcp_of(lb_ip(14), &sticky), Proto::Tcp),
        (udp_of(lb_ip(14), &sticky), Proto::Udp),
        (node_tcp(&lab, 0, &sticky), Proto::Tcp),
    ] {
        wait_answers(&lab, 0, target, proto);
        let r = attempts(&lab, 0, target, proto, 30);
        assert_eq!(r.ok, 30, "{r:?}");
        assert_eq!(
            r.names.len(),
            1,
            "ClientIP affinity through {target}: {r:?}"
        );
    }
}

/// Keys of every node's conntrack map, as `node/key` → value.
fn ct_snapshot(lab: &NsLab) -> BTreeMap<String, String> {
    let mut all = BTreeMap::new();
    for (i, node) in lab.nodes().iter().enumerate() {
        let path = lab.agent(i).map_path(CT_MAP);
        let entries = map_entries(&path).unwrap_or_else(|e| {
            panic!(
                "reading {} of {}: {e}{}",
                path.display(),
                node.name,
                lab.agent_logs(20)
            )
        });
        for (k, v) in entries {
            all.insert(format!("{}/{k}", node.name), v);
        }
    }
    all
}

fn new_entries(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> Vec<String> {
    after
        .iter()
        .filter(|(k, _)| !before.contains_key(*k))
        .map(|(k, v)| format!("{k} => {v}"))
        .collect()
}

fn send_frames(lab: &NsLab, frames: &[Vec<u8>]) {
    lab.client(0)
        .ns()
        .run(|| -> std::io::Result<()> {
            let sender = RawSender::open(LAN_IFNAME)?;
            for f in frames {
                sender.send(f)?;
            }
            Ok(())
        })
        .expect("netns")
        .expect("sending raw frames");
}

/// Sends a class of the catalog at `aim` and returns the conntrack entries it created, by kind
/// (kinds are retried one at a time only when the class as a whole left something behind).
fn leaks(lab: &NsLab, aim: &Aim, class: Class) -> BTreeMap<String, Vec<String>> {
    let settle = Duration::from_millis(100);
    let before = ct_snapshot(lab);
    let frames: Vec<Vec<u8>> = (0..3)
        .flat_map(|seq| catalog(aim, seq))
        .filter(|f| f.class == class)
        .map(|f| f.bytes)
        .collect();
    send_frames(lab, &frames);
    std::thread::sleep(settle);
    if new_entries(&before, &ct_snapshot(lab)).is_empty() {
        return BTreeMap::new();
    }
    let mut by_kind = BTreeMap::new();
    for frame in catalog(aim, 100).into_iter().filter(|f| f.class == class) {
        let before = ct_snapshot(lab);
        send_frames(lab, &[frame.bytes]);
        std::thread::sleep(settle);
        let added = new_entries(&before, &ct_snapshot(lab));
        if !added.is_empty() {
            by_kind.insert(frame.kind, added);
        }
    }
    by_kind
}

/// Truncated headers, bad IHL and lengths, later fragments, unknown ports and protocols sent
/// at the LB IP and the NodePorts (v4 and v6): the agents keep running, traffic still flows,
/// and no conntrack entry appears for malformed or unknown-port packets. Questionable
/// packets (stray ACK/RST, bad IP checksum, first fragments, VLAN tags...) are reported.
#[test]
fn malformed_packets_neither_crash_the_agent_nor_leak_conntrack_entries() {
    let mut lab = build("nsg");
    let mut web = NsService::load_balancer("web", cluster_ip(10), lb_ip(10), 30080);
    web.endpoints = all_endpoints(&lab);
    lab.write_manifest("web.yaml", &web.to_yaml()).unwrap();
    start_agents(&mut lab);
    let legit = [
        (tcp_of(lb_ip(10), &web), udp_of(lb_ip(10), &web)),
        (node_tcp(&lab, 0, &web), node_udp(&lab, 0, &web)),
        (node_tcp(&lab, 1, &web), node_udp(&lab, 1, &web)),
    ];
    for (tcp, udp) in legit {
        wait_answers(&lab, 0, tcp, Proto::Tcp);
        wait_answers(&lab, 0, udp, Proto::Udp);
    }

    let client = lab.client(0);
    let src_mac = client.mac().unwrap();
    let (n1, n2) = (lab.node(0), lab.node(1));
    let aim = |dst_mac, src: IpAddr, dst: IpAddr, tcp_port, udp_port| Aim {
        src_mac,
        dst_mac,
        src,
        dst,
        tcp_port,
        udp_port,
    };
    let (c4, c6) = (IpAddr::V4(client.v4()), IpAddr::V6(client.v6()));
    let aims = [
        ("LB IP", aim(n1.mac().unwrap(), c4, lb_ip(10), 80, 53)),
        (
            "node1 NodePort",
            aim(n1.mac().unwrap(), c4, IpAddr::V4(n1.v4()), 30080, 30053),
        ),
        (
            "node2 NodePort",
            aim(n2.mac().unwrap(), c4, IpAddr::V4(n2.v4()), 30080, 30053),
        ),
        (
            "node1 NodePort v6",
            aim(n1.mac().unwrap(), c6, IpAddr::V6(n1.v6()), 30080, 30053),
        ),
    ];
    let mut failures = Vec::new();
    let mut questionable = Vec::new();
    for (label, aim) in &aims {
        for class in [Class::Malformed, Class::UnknownPort, Class::Questionable] {
            for (kind, entries) in leaks(&lab, aim, class) {
                let line = format!(
                    "{label} {class} {kind}: {} new entries, e.g. {}",
                    entries.len(),
                    entries[0]
                );
                if class == Class::Questionable {
                    questionable.push(line);
                } else {
                    failures.push(line);
                }
            }
        }
    }
    for line in &questionable {
        eprintln!("reported, not judged: {line}");
    }

    for i in 0..lab.nodes().len() {
        let agent = lab.agent_mut(i);
        assert!(
            agent.running(),
            "agent on {} died:\n{}",
            agent.node(),
            agent.log_tail(50)
        );
        assert!(
            agent.status().is_ok(),
            "agent on {} stopped answering",
            agent.node()
        );
    }
    for (tcp, udp) in legit {
        let r = attempts(&lab, 0, tcp, Proto::Tcp, 10);
        assert_eq!(
            r.ok,
            10,
            "after the garbage, {tcp}: {r:?}{}",
            lab.agent_logs(20)
        );
        let r = attempts(&lab, 0, udp, Proto::Udp, 10);
        assert_eq!(
            r.ok,
            10,
            "after the garbage, {udp}: {r:?}{}",
            lab.agent_logs(20)
        );
    }
    assert!(
        failures.is_empty(),
        "garbage left conntrack entries behind:\n{}",
        failures.join("\n")
    );
}
