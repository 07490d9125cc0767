//! Masquerade end to end, as root: two node netns on a LAN bridge with pods behind each,
//! `ferrite agent --devices eth0` in each, and a router netns between the LAN and a "WAN" host
//! on another subnet. The router has no route to any pod subnet, so a pod's packet that leaves
//! its node unmasqueraded is never answered; the WAN host's servers say which address they saw
//! (see `ferrite_lab::masqlab`).

mod common;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use common::{FERRITE, require_root};
use ferrite_lab::masqlab::{
    MasqLab, POD_ECHO, WAN_ECHO, WAN_RECORD, WAN_SINK, WAN_V4, WAN_V6, bulk_upload, ping, tcp_ask,
    tcp_many, udp_many,
};
use ferrite_lab::wait_until;

fn ferrite() -> &'static Path {
    Path::new(FERRITE)
}

fn lab(prefix: &str, pods: usize) -> MasqLab {
    require_root();
    MasqLab::build(prefix, 2, pods).unwrap_or_else(|e| panic!("building the masquerade lab: {e}"))
}

fn start(lab: &mut MasqLab, node: usize, extra: &[&str]) {
    if let Err(e) = lab.start_agent(node, ferrite(), extra) {
        panic!("starting the agent of node{}: {e}", node + 1);
    }
}

fn wan4(port: u16) -> SocketAddr {
    SocketAddr::from((WAN_V4, port))
}

fn wan6(port: u16) -> SocketAddr {
    SocketAddr::from((WAN_V6, port))
}

fn agent_log(lab: &MasqLab, node: usize) -> String {
    lab.agent(node).map(|a| a.log_tail(30)).unwrap_or_default()
}

/// The WAN host sees node1's LAN address for TCP, UDP, IPv4 and IPv6, and ping works; pod →
/// pod on the same node and across nodes keeps the pod's address; the node's own traffic is
/// untouched.
#[test]
fn pod_to_wan_leaves_with_the_node_address_and_pod_to_pod_keeps_the_pod_address() {
    let mut lab = lab("mqa", 2);
    // Without ferrite, nothing a pod sends to the WAN comes back: the router has no route.
    let pod = lab.node(0).pods.pods()[0].netns.ns().clone();
    assert!(
        tcp_ask(&pod, wan4(WAN_ECHO)).is_err(),
        "the lab routes pod subnets from the WAN: the test would prove nothing"
    );
    start(&mut lab, 0, &[]);
    start(&mut lab, 1, &[]);
    let node1 = lab.node(0);
    let (n4, n6) = (IpAddr::V4(node1.v4()), IpAddr::V6(node1.v6()));
    for (dst, node_ip) in [(wan4(WAN_ECHO), n4), (wan6(WAN_ECHO), n6)] {
        let seen = tcp_ask(&pod, dst)
            .unwrap_or_else(|e| panic!("pod → {dst} TCP: {e}\n{}", agent_log(&lab, 0)));
        assert_eq!(seen.ip(), node_ip, "TCP to {dst}: the WAN host saw {seen}");
        let seen = udp_many(&pod, dst, 1).unwrap_or_else(|e| panic!("pod → {dst} UDP: {e}"));
        assert_eq!(
            seen[0].ip(),
            node_ip,
            "UDP to {dst}: the WAN host saw {}",
            seen[0]
        );
    }
    for wan in [IpAddr::V4(WAN_V4), IpAddr::V6(WAN_V6)] {
        let replies = ping(&pod, wan, 3).unwrap_or_else(|e| panic!("ping {wan}: {e}"));
        assert_eq!(replies, 3, "ping from a pod to {wan}");
    }
    // Pod → pod: never masqueraded, on this node or across nodes (hand-added routes).
    let me = &lab.node(0).pods.pods()[0];
    let peers = [&lab.node(0).pods.pods()[1], &lab.node(1).pods.pods()[0]];
    for peer in peers {
        for (dst, mine) in [
            (SocketAddr::from((peer.v4, POD_ECHO)), IpAddr::V4(me.v4)),
            (SocketAddr::from((peer.v6, POD_ECHO)), IpAddr::V6(me.v6)),
        ] {
            let seen = tcp_ask(&pod, dst).unwrap_or_else(|e| panic!("pod → pod {dst}: {e}"));
            assert_eq!(seen.ip(), mine, "pod → pod {dst} was translated to {seen}");
        }
    }
    // The node's own connections to the WAN keep working (and keep their ports).
    let seen = tcp_ask(lab.node(0).ns(), wan4(WAN_ECHO)).expect("node → WAN");
    assert_eq!(seen.ip(), n4);
    assert!(
        seen.port() < 61_000,
        "the node's own flow was translated: {seen}"
    );
    // `ferrite observe` shows the pod's masqueraded flows: pod address → node address.
    let out = lab
        .agent(0)
        .expect("agent")
        .cli(&[
            "observe",
            "-o",
            "json",
            "--type",
            "masquerade",
            "--from-ip",
            &me.v4.to_string(),
        ])
        .expect("ferrite observe");
    let flows: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("flow JSON"))
        .collect();
    assert!(
        flows.iter().any(|f| f["protocol"] == "TCP"
            && f["destination_ip"] == WAN_V4.to_string()
            && f["translated_ip"] == n4.to_string()),
        "{flows:?}"
    );
    assert!(flows.iter().any(|f| f["protocol"] == "UDP"), "{flows:?}");
    // ferrite status shows it.
    let status = lab.agent(0).expect("agent").status().expect("status");
    let masq = &status["masquerade"];
    assert_eq!(masq["enabled"], true, "{status}");
    assert!(masq["snat_flows"].as_u64().unwrap_or(0) >= 4, "{status}");
}

/// 200 concurrent TCP and 200 UDP flows from each of two pods of one node to the same WAN
/// address and port all complete, each with its own node port (collisions handled).
#[test]
fn two_hundred_concurrent_flows_from_two_pods_to_one_wan_port_all_complete() {
    const FLOWS: usize = 200;
    let mut lab = lab("mqc", 2);
    start(&mut lab, 0, &[]);
    let node_ip = IpAddr::V4(lab.node(0).v4());
    let pods: Vec<_> = lab
        .node(0)
        .pods
        .pods()
        .iter()
        .map(|p| p.netns.ns().clone())
        .collect();
    // Resolve the router's address first: 400 packets queued behind one ARP would overflow
    // the neighbour queue, a loss that is not the masquerade's.
    for p in &pods {
        tcp_ask(p, wan4(WAN_ECHO))
            .unwrap_or_else(|e| panic!("warm-up: {e}\n{}", agent_log(&lab, 0)));
    }
    let (tcp, udp): (Vec<_>, Vec<_>) = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .map(|p| {
                s.spawn(move || {
                    (
                        tcp_many(p, wan4(WAN_ECHO), FLOWS),
                        udp_many(p, wan4(WAN_ECHO), FLOWS),
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("no panic"))
            .unzip()
    });
    for (proto, results) in [("TCP", tcp), ("UDP", udp)] {
        let mut ports = BTreeSet::new();
        for r in results {
            let peers = r.unwrap_or_else(|e| panic!("{proto}: {e}\n{}", agent_log(&lab, 0)));
            assert_eq!(peers.len(), FLOWS);
            for p in peers {
                assert_eq!(p.ip(), node_ip, "{proto}: the WAN host saw {p}");
                ports.insert(p.port());
            }
        }
        assert_eq!(ports.len(), 2 * FLOWS, "{proto}: flows shared a node port");
    }
}

/// A TCP upload through the router's 1280-byte WAN link completes, IPv4 and IPv6: the router's
/// "fragmentation needed" / "packet too big", sent to the node address, reaches the pod
/// translated (the pod's route cache shows the learned MTU).
#[test]
fn path_mtu_discovery_works_through_the_masquerade() {
    let mut lab = lab("mqp", 1);
    start(&mut lab, 0, &[]);
    let pod = lab.node(0).pods.pods()[0].netns.ns().clone();
    for dst in [wan4(WAN_SINK), wan6(WAN_SINK)] {
        let bytes = 4 << 20;
        let (got, took) = bulk_upload(&pod, dst, bytes, 256 * 1024, Duration::ZERO)
            .unwrap_or_else(|e| panic!("upload to {dst}: {e}\n{}", agent_log(&lab, 0)));
        assert_eq!(got, bytes, "the sink at {dst} got {got} of {bytes} bytes");
        assert!(
            took < Duration::from_secs(10),
            "upload to {dst} took {took:?}"
        );
        let route = MasqLab::route_get(&pod, dst.ip()).expect("ip route get");
        assert!(
            route.contains("mtu 1280"),
            "the pod never learned the path MTU to {dst}: {route}"
        );
    }
}

/// `--masquerade-exclude` keeps the pod address towards the excluded CIDR only; `--masquerade
/// off` keeps it everywhere; back on, it masquerades again.
#[test]
fn exclude_and_off_leave_the_pod_address() {
    let mut lab = lab("mqx", 1);
    start(&mut lab, 0, &["--masquerade-exclude", "198.51.100.0/24"]);
    let pod = &lab.node(0).pods.pods()[0];
    let (ns, pod4, pod6) = (
        pod.netns.ns().clone(),
        IpAddr::V4(pod.v4),
        IpAddr::V6(pod.v6),
    );
    let node6 = IpAddr::V6(lab.node(0).v6());
    let node4 = IpAddr::V4(lab.node(0).v4());
    let sent_from = |lab: &MasqLab, dst: SocketAddr| {
        let before = lab.wan().recorded().len();
        let _ = ns.run(|| {
            let s = std::net::UdpSocket::bind(if dst.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })?;
            s.send_to(b"who\n", dst)
        });
        let mut seen = None;
        let _ = wait_until(Duration::from_secs(3), Duration::from_millis(20), || {
            seen = lab.wan().recorded().get(before).map(SocketAddr::ip);
            seen.is_some()
        });
        seen.unwrap_or_else(|| panic!("the WAN recorder got nothing for {dst}"))
    };
    assert_eq!(sent_from(&lab, wan4(WAN_RECORD)), pod4, "excluded CIDR");
    assert_eq!(
        sent_from(&lab, wan6(WAN_RECORD)),
        node6,
        "IPv6 is not excluded"
    );
    start(&mut lab, 0, &["--masquerade", "off"]);
    assert_eq!(sent_from(&lab, wan6(WAN_RECORD)), pod6, "--masquerade off");
    assert_eq!(sent_from(&lab, wan4(WAN_RECORD)), pod4, "--masquerade off");
    start(&mut lab, 0, &[]);
    assert_eq!(sent_from(&lab, wan4(WAN_RECORD)), node4, "back on");
}

/// `kill -9` of the agent and a new start during a pod → WAN upload: the upload completes
/// (the SNAT table is pinned and the new agent rewrites nothing).
#[test]
fn agent_kill9_and_restart_during_an_upload_loses_nothing() {
    let mut lab = lab("mqr", 1);
    start(&mut lab, 0, &[]);
    let pod = lab.node(0).pods.pods()[0].netns.ns().clone();
    let bytes: u64 = 24 << 20;
    let result = std::thread::scope(|s| {
        let upload = s.spawn(|| {
            bulk_upload(
                &pod,
                wan4(WAN_SINK),
                bytes,
                64 * 1024,
                Duration::from_millis(8),
            )
        });
        std::thread::sleep(Duration::from_millis(700));
        lab.kill_and_restart_agent(0, ferrite(), &[])
            .unwrap_or_else(|e| panic!("restarting the agent: {e}"));
        assert!(
            !upload.is_finished(),
            "the upload ended before the restart: make it longer"
        );
        upload.join().expect("no panic")
    });
    let (got, took) = result.unwrap_or_else(|e| panic!("upload across the restart: {e}"));
    assert_eq!(got, bytes, "the sink got {got} of {bytes} bytes ({took:?})");
}

/// A pod CIDR routed on the LAN (the router has a route to node1's pods): flows the WAN host
/// opens to a pod's own address are answered from that address, TCP and UDP, IPv4 and IPv6
/// (a masqueraded reply would come from the node's address, and the WAN host's connected
/// socket would never see it). The pod's own flows to the WAN are still masqueraded.
#[test]
fn flows_opened_from_outside_to_a_pod_address_are_answered_from_it() {
    let mut lab = lab("mqi", 1);
    start(&mut lab, 0, &[]);
    let node = lab.node(0);
    let cfg = node.pods.config();
    let router = lab.router().ns().clone();
    for (net, via) in [
        (cfg.v4.network().to_string(), node.v4().to_string()),
        (cfg.v6.network().to_string(), node.v6().to_string()),
    ] {
        let out = router
            .ip_run(["route", "add", &net, "via", &via])
            .unwrap_or_else(|e| panic!("router: route {net} via {via}: {e}"));
        assert!(
            out.status.success(),
            "router: route {net} via {via}: {out:?}"
        );
    }
    let pod = &node.pods.pods()[0];
    let wan = lab.wan().ns().clone();
    let (wan4_ip, wan6_ip) = (IpAddr::V4(WAN_V4), IpAddr::V6(WAN_V6));
    for (dst, wan_ip) in [
        (SocketAddr::from((pod.v4, POD_ECHO)), wan4_ip),
        (SocketAddr::from((pod.v6, POD_ECHO)), wan6_ip),
    ] {
        // UDP: several flows, each answered (the connected socket takes only the pod's address).
        let seen = udp_many(&wan, dst, 8).unwrap_or_else(|e| {
            panic!(
                "WAN → pod {dst} UDP: {e} (replies masqueraded?)\n{}",
                agent_log(&lab, 0)
            )
        });
        assert!(
            seen.iter().all(|s| s.ip() == wan_ip),
            "the pod saw {seen:?}, not the WAN host's own address"
        );
        let seen = tcp_ask(&wan, dst).unwrap_or_else(|e| panic!("WAN → pod {dst} TCP: {e}"));
        assert_eq!(seen.ip(), wan_ip, "WAN → pod {dst} TCP: the pod saw {seen}");
    }
    // The pod's own flows to the WAN still leave with the node's address.
    let pod_ns = pod.netns.ns().clone();
    for (dst, node_ip) in [
        (wan4(WAN_ECHO), IpAddr::V4(node.v4())),
        (wan6(WAN_ECHO), IpAddr::V6(node.v6())),
    ] {
        let seen = udp_many(&pod_ns, dst, 4).unwrap_or_else(|e| panic!("pod → {dst} UDP: {e}"));
        assert!(
            seen.iter().all(|s| s.ip() == node_ip),
            "pod → {dst} UDP: the WAN host saw {seen:?}"
        );
    }
}
