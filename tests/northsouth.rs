//! North-south load balancing end to end, as root: a LAN bridge with two node netns (pods
//! behind each, `ferrite agent --devices eth0` inside each node) and two client netns outside
//! the cluster, which reach NodePorts on the node addresses and LoadBalancer IPs through a
//! static route via node1. Pods answer `NAME PEER`, so tests see which backend answered and
//! which client address it saw. The first test runs the same lab through kube-proxy-shaped
//! iptables rules instead of ferrite, proving the topology and the expectations themselves.

mod common;

mod northsouth_common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use ferrite_lab::nslab::{CLUSTER_CIDR, POD_HTTP, POD_TCP, POD_UDP, local_endpoints};
use ferrite_lab::probe::{Limit, ProbeConfig, Proto};
use ferrite_lab::{NsLab, NsService, SvcEndpoint, kubeproxy, wait_until};
use northsouth_common::{
    all_endpoints, assert_both_nodes, assert_legacy_attach, assert_local_with_client_ip, attempts,
    build, cluster_ip, endpoints_on, health, lb_ip, malformed_scenario, node_tcp, node_udp,
    nodeport_and_lb_ip_scenario, refused, set, start_agents, tc_filters, tcp_of, udp_of,
    wait_answers, wait_health,
};

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
    nodeport_and_lb_ip_scenario("nsc", &[]);
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

    // The flows say so (node1 receives the LB IP): client1's SYNs forwarded to a backend,
    // client2's dropped for the source range, each with the client's address.
    let flows = |args: &[&str]| -> Vec<serde_json::Value> {
        let mut all = vec![
            "observe",
            "-o",
            "json",
            "--type",
            "north-south",
            "--last",
            "200",
        ];
        all.extend_from_slice(args);
        let out = lab.agent(0).cli(&all).expect("ferrite observe");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("flow JSON"))
            .collect()
    };
    let (c1, c2) = (
        lab.client(0).v4().to_string(),
        lab.client(1).v4().to_string(),
    );
    let fwd = flows(&[
        "--from-ip",
        &c1,
        "--protocol",
        "TCP",
        "--verdict",
        "FORWARDED",
    ]);
    assert!(!fwd.is_empty(), "no forwarded north-south flow from {c1}");
    for f in &fwd {
        assert_eq!(f["destination_ip"], lb_ip(12).to_string(), "{f}");
        assert_eq!(f["tcp_flags"], serde_json::json!(["SYN"]), "{f}");
        assert_eq!(f["is_reply"], false, "a SYN opens its flow: {f}");
        assert!(
            f["translated_ip"]
                .as_str()
                .is_some_and(|t| t.starts_with("10.244.")),
            "{f}"
        );
        assert_eq!(f["interface"], "eth0", "{f}");
    }
    let dropped = flows(&["--from-ip", &c2, "--verdict", "DROPPED"]);
    assert!(!dropped.is_empty(), "no dropped flow from {c2}");
    assert!(
        dropped.iter().all(|f| f["drop_reason"] == "source-range"),
        "{dropped:?}"
    );
    assert!(
        dropped.iter().any(|f| f["protocol"] == "UDP"),
        "UDP drops too: {dropped:?}"
    );

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

/// Truncated headers, bad IHL and lengths, later fragments, unknown ports and protocols sent
/// at the LB IP and the NodePorts (v4 and v6): the agents keep running, traffic still flows,
/// and no conntrack entry appears for malformed or unknown-port packets. Questionable
/// packets (stray ACK/RST, bad IP checksum, first fragments, VLAN tags...) are reported.
#[test]
fn malformed_packets_neither_crash_the_agent_nor_leak_conntrack_entries() {
    malformed_scenario("nsg", &[]);
}

/// `--tc-attach legacy`, what kernels without TCX (< 6.6) get: NodePort and LB IP work over a
/// clsact qdisc with ferrite's cls_bpf filters and no TCX link exists; a restarted agent adopts
/// its filters (same priority and handle, the program replaced in place) while a connection
/// loop goes on; a filter deleted by hand is put back; a foreign filter holding ferrite's
/// priority makes the attach fail on that device only: the agent keeps running, says why in
/// `ferrite status` and readiness, and attaches once the filter is gone.
#[test]
fn legacy_tc_attach_serves_adopts_repairs_and_survives_a_failed_attach() {
    let legacy = ["--tc-attach", "legacy"];
    let mut lab = nodeport_and_lb_ip_scenario("lgn", &legacy);
    let web = NsService::load_balancer("web", cluster_ip(10), lb_ip(10), 30080);
    let target = tcp_of(lb_ip(10), &web);
    for node in 0..2 {
        assert_legacy_attach(&lab, node, "fe_host_ingress");
    }
    let before = tc_filters(&lab, 0, "ingress");

    // Restart: the filters stay (same priority/handle), now running the new agent's program.
    let mut config = ferrite_lab::AgentConfig::new(std::path::Path::new(common::FERRITE));
    config.extra_args = legacy.iter().map(|s| (*s).to_string()).collect();
    lab.restart_agent_keeping_datapath(0, &config).unwrap();
    let after = tc_filters(&lab, 0, "ingress");
    assert_eq!(
        after
            .lines()
            .filter(|l| l.contains("handle 0xfe") && l.contains("fe_host_ingress"))
            .count(),
        1,
        "one filter, adopted: before {before}\nafter {after}"
    );
    assert_ne!(before, after, "the program id changes: replaced in place");
    assert_eq!(attempts(&lab, 0, target, Proto::Tcp, 20).ok, 20);

    // A filter deleted behind the agent's back is put back within a few maintenance rounds.
    let tc = |lab: &NsLab, args: &[&str]| {
        let out = lab
            .node(0)
            .ns()
            .exec(std::process::Command::new("tc").args(args))
            .unwrap();
        assert!(out.status.success(), "tc {args:?}: {out:?}");
    };
    tc(
        &lab,
        &[
            "filter", "del", "dev", "eth0", "ingress", "pref", "65025", "handle", "0xfe", "bpf",
        ],
    );
    wait_answers(&lab, 0, target, Proto::Tcp);
    assert!(tc_filters(&lab, 0, "ingress").contains("fe_host_ingress"));

    // A foreign (classic BPF) filter at ferrite's egress priority and handle: the attach fails
    // on eth0, the agent runs on.
    lab.stop_agent(0);
    tc(
        &lab,
        &[
            "filter",
            "add",
            "dev",
            "eth0",
            "egress",
            "pref",
            "65025",
            "handle",
            "0xfe",
            "bpf",
            "bytecode",
            "1,6 0 0 0,",
        ],
    );
    lab.start_agent(0, &config).unwrap();
    let failed = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        let st = lab.agent(0).status().unwrap();
        st["subsystems"].as_array().is_some_and(|s| {
            s.iter().any(|s| {
                s["name"] == "north-south"
                    && s["ready"] == false
                    && s["detail"].as_str().is_some_and(|d| d.contains("eth0"))
            })
        })
    });
    assert!(
        failed.is_ok(),
        "north-south must report eth0's failure: {}",
        lab.agent_logs(20)
    );
    // `cli` is an error for a non-zero exit.
    let check = lab.agent(0).cli(&["status", "--check"]);
    assert!(check.is_err(), "status --check fails meanwhile: {check:?}");
    assert!(lab.agent_mut(0).running(), "the agent keeps running");
    tc(
        &lab,
        &[
            "filter", "del", "dev", "eth0", "egress", "pref", "65025", "handle", "0xfe", "bpf",
        ],
    );
    wait_answers(&lab, 0, target, Proto::Tcp);
    assert_legacy_attach(&lab, 0, "fe_host_ingress");

    assert_uninstall_removes_legacy_filters(&mut lab, target);
}

/// `ferrite uninstall` (the package's prerm, the DaemonSet's cleanup) after a kill -9: the
/// legacy filters go with the rest, and the LB IP no longer answers through node 1.
fn assert_uninstall_removes_legacy_filters(lab: &mut NsLab, target: std::net::SocketAddr) {
    lab.agent(0).signal(libc::SIGKILL).unwrap();
    let dead = wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        !lab.agent_mut(0).running()
    });
    assert!(dead.is_ok(), "the agent survived SIGKILL");
    assert!(tc_filters(lab, 0, "ingress").contains("fe_host_ingress"));
    let agent = lab.agent(0);
    let cni = agent.state_dir.join("no-cni");
    let mut uninstall = std::process::Command::new(common::FERRITE);
    uninstall
        .arg("uninstall")
        .arg("--bpf-root")
        .arg(&agent.bpf_root)
        .arg("--cgroup")
        .arg(agent.cgroup().path())
        .arg("--api-socket")
        .arg(&agent.socket)
        .arg("--cni-conf-dir")
        .arg(cni.join("net.d"))
        .arg("--cni-bin-dir")
        .arg(cni.join("bin"));
    let out = lab.node(0).ns().exec(&mut uninstall).unwrap();
    assert!(out.status.success(), "ferrite uninstall: {out:?}");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("netlink attachment"), "{report}");
    for dir in ["ingress", "egress"] {
        let left = tc_filters(lab, 0, dir);
        assert!(
            !left.contains("fe_"),
            "ferrite's {dir} filter is still on eth0 after uninstall:\n{left}\n{report}"
        );
    }
    assert_eq!(refused(lab, 0, target, Proto::Tcp).ok, 0, "{report}");
}
