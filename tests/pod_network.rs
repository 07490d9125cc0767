//! The pod network between nodes (ferrite replacing flannel): four nodes, three on one LAN and
//! one behind a router on another subnet, each running the shipped agent on one `dir:` folder
//! of Node objects, pods made through the CNI plugin from the conflist each agent wrote.
//! `auto` routes the LAN nodes natively and the far node over VXLAN; `--routing vxlan` tunnels
//! everything. Real kernel routes, a real vxlan device, real TCP/UDP between pod netns.

mod common;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{FERRITE, lab_bin, require_root};
use ferrite_lab::podlab::{CniPod, PodLab, PodLabConfig, PodNode};
use ferrite_lab::report::ClientReport;
use ferrite_lab::{Child, NsService, SvcEndpoint, kernel_has_netkit, link_kind, wait_until};
use serde_json::Value;

const TCP: u16 = 8080;
const UDP: u16 = 5353;
const IPERF: u16 = 5201;

fn require_tools() {
    require_root();
    let found = Command::new("sh")
        .args(["-c", "command -v iperf3"])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "iperf3 not found: run `make setup` (apt-get install iperf3)"
    );
}

fn start(prefix: &str, far_nodes: usize, extra: &[&str]) -> PodLab {
    require_tools();
    let _ = ferrite_lab::cleanup_stale(prefix);
    PodLab::start(
        Path::new(FERRITE),
        PodLabConfig {
            prefix: prefix.into(),
            lan_nodes: 3,
            far_nodes,
            extra_args: extra.iter().map(|s| (*s).to_string()).collect(),
            ..PodLabConfig::default()
        },
    )
    .unwrap_or_else(|e| panic!("starting the pod network lab: {e}"))
}

/// `ferrite-lab serve --echo-peer` (TCP, UDP on both families) and `iperf3 -s` in a pod.
fn serve(pod: &CniPod, name: &str) -> Vec<Child> {
    let mut serve = pod
        .command(lab_bin().to_str().expect("utf-8 path"))
        .expect("serve");
    serve
        .args(["serve", "--echo-peer", "--name", name])
        .args([
            "--tcp",
            &format!("0.0.0.0:{TCP}"),
            "--tcp",
            &format!("[::]:{TCP}"),
        ])
        .args([
            "--udp",
            &format!("0.0.0.0:{UDP}"),
            "--udp",
            &format!("[::]:{UDP}"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let mut iperf = pod.command("iperf3").expect("iperf3");
    iperf
        .args(["-s", "-p", &IPERF.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    vec![
        Child::spawn(&mut serve).expect("spawn serve"),
        Child::spawn(&mut iperf).expect("spawn iperf3"),
    ]
}

/// `ferrite-lab client` from `pod` (or the node itself) in the node's cgroup, so the socket LB
/// applies as it would to a real pod or host process.
fn client(
    node: &PodNode,
    pod: Option<&CniPod>,
    target: SocketAddr,
    udp: bool,
    count: u64,
) -> ClientReport {
    let netns = pod.map_or_else(|| node.ns.ns(), |p| p.netns.ns());
    let mut cmd = node
        .cgroup()
        .command(lab_bin(), Some(netns))
        .expect("client command");
    cmd.args(["client", "--json", "--target", &target.to_string()])
        .args(["--proto", if udp { "udp" } else { "tcp" }])
        .args(["--count", &count.to_string(), "--timeout-ms", "1000"]);
    let out = ferrite_lab::cmd::run(&mut cmd).expect("run client");
    serde_json::from_slice(&out.stdout).expect("client report")
}

/// Every pod reaches `to` over TCP and UDP, and the server saw the pod's own address.
fn assert_reaches(lab: &PodLab, from: (usize, usize), to: (usize, usize), v6: bool) {
    let src = &lab.nodes[from.0].pods[from.1];
    let dst = &lab.nodes[to.0].pods[to.1];
    let (src_ip, dst_ip) = if v6 {
        (src.v6.expect("IPv6 pod"), dst.v6.expect("IPv6 pod"))
    } else {
        (src.v4, dst.v4)
    };
    for (udp, port) in [(false, TCP), (true, UDP)] {
        // First contact may wait on neighbour discovery along the path; then every attempt
        // must pass.
        let _ = wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
            client(
                &lab.nodes[from.0],
                Some(src),
                SocketAddr::new(dst_ip, port),
                udp,
                1,
            )
            .ok == 1
        });
        let r = client(
            &lab.nodes[from.0],
            Some(src),
            SocketAddr::new(dst_ip, port),
            udp,
            3,
        );
        assert_eq!(
            r.ok,
            3,
            "{} pod {src_ip} → {} pod {dst_ip} ({}): {r:?}\nroutes on {}: {}\n{}",
            lab.nodes[from.0].name,
            lab.nodes[to.0].name,
            if udp { "udp" } else { "tcp" },
            lab.nodes[from.0].name,
            lab.nodes[from.0].ip(&["route"]).unwrap_or_default(),
            lab.nodes[from.0].log_tail(15)
        );
        let seen: BTreeSet<&str> = r.all_peers_seen();
        assert_eq!(
            seen,
            BTreeSet::from([src_ip.to_string().as_str()]),
            "pod→pod traffic is never masqueraded"
        );
    }
}

/// The host-side device of `pod`.
fn host_dev(pod: &CniPod) -> String {
    pod.host_device()
        .unwrap_or_else(|| panic!("no host interface in {}", pod.result))
        .to_owned()
}

/// BPF host routing carried the traffic: every node lists its pods' devices (and, with
/// `overlay`, runs on `ferrite.vxlan`), sent packets out past the stack and sent packets straight
/// into its pods (arriving on the external device or, decapsulated, on the overlay device). With
/// the shipped `--pod-device auto` on a kernel that has netkit, every pod is on a netkit device
/// and the agent reports them all as such.
fn assert_host_routing(lab: &PodLab, overlay: bool) {
    for node in &lab.nodes {
        let want_kind = if kernel_has_netkit() {
            "netkit"
        } else {
            "veth"
        };
        let netkits: BTreeSet<String> = node
            .pods
            .iter()
            .map(host_dev)
            .filter(|dev| {
                let kind = link_kind(node.ns.ns(), dev)
                    .unwrap_or_else(|e| panic!("{}: ip link show {dev}: {e}", node.name));
                assert_eq!(kind, want_kind, "{}: pod device {dev}", node.name);
                kind == "netkit"
            })
            .collect();
        let mut last = Value::Null;
        let ok = wait_until(Duration::from_secs(3), Duration::from_millis(200), || {
            last = node.status().expect("ferrite status")["datapath"]["host_routing"].clone();
            let count = |k: &str| last[k].as_u64().unwrap_or(0);
            let veths: BTreeSet<&str> = last["pod_devices"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            last["mode"] == "bpf"
                && node
                    .pods
                    .iter()
                    .all(|p| veths.contains(host_dev(p).as_str()))
                && count("redirected_packets") > 0
                && count("to_pod_packets") > 0
                && (!overlay || last["overlay_device"] == "ferrite.vxlan")
                && last["netkit_devices"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect::<BTreeSet<_>>()
                    .is_superset(&netkits)
        });
        assert!(
            ok.is_ok(),
            "{}: BPF host routing did not carry its pods' traffic: {last}\n{}",
            node.name,
            node.log_tail(15)
        );
        // The human view says the same (`cilium status`'s "Host Routing" line).
        let out = node.cli(&["status"]).expect("ferrite status");
        let text = String::from_utf8_lossy(&out.stdout);
        let pods = node.pods.len();
        assert!(
            text.lines().any(|l| l.starts_with("host routing:")
                && l.contains("OK")
                && l.contains(&format!(
                    "BPF on {pods} pod devices ({} netkit",
                    netkits.len()
                ))),
            "{}: {text}",
            node.name
        );
    }
}

/// One pod per node (two on node 1), each serving; returns the servers.
fn pods_and_servers(lab: &mut PodLab, extra_on_first: usize) -> Vec<Child> {
    let prefix = lab.config.prefix.clone();
    let mut servers = Vec::new();
    for (n, node) in lab.nodes.iter_mut().enumerate() {
        for _ in 0..=(if n == 0 { extra_on_first } else { 0 }) {
            let i = node
                .add_pod(&prefix)
                .unwrap_or_else(|e| panic!("CNI ADD: {e}"));
            servers.extend(serve(&node.pods[i], &format!("{}-pod{i}", node.name)));
        }
    }
    // Up before anyone probes them.
    for node in &lab.nodes {
        for pod in &node.pods {
            let target = SocketAddr::new(pod.v4, TCP);
            wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
                client(node, None, target, false, 1).ok == 1
            })
            .unwrap_or_else(|_| panic!("pod {} never answered its node", pod.v4));
        }
    }
    servers
}

fn iperf(node: &PodNode, pod: &CniPod, target: IpAddr, args: &[&str]) -> std::process::Output {
    let mut cmd = pod.command("iperf3").expect("iperf3");
    cmd.args(["-c", &target.to_string(), "-p", &IPERF.to_string()])
        .args(args)
        .stdin(Stdio::null());
    let out = cmd.output().expect("run iperf3");
    assert!(
        out.status.success(),
        "iperf3 from {} to {target} failed: {}{}\n{}",
        node.name,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        node.log_tail(20)
    );
    out
}

#[test]
fn auto_routes_lan_nodes_natively_and_the_far_node_over_vxlan() {
    let mut lab = start("pna", 1, &[]);
    let _servers = pods_and_servers(&mut lab, 0);
    let n = lab.nodes.len();
    // What each agent says about the others.
    let near = &lab.nodes[0];
    assert_eq!(near.route_mode("10.246.2.0/24"), "native/ok");
    assert_eq!(near.route_mode("fd00:246:3::/64"), "native/ok");
    assert_eq!(near.route_mode("10.246.4.0/24"), "vxlan/ok");
    assert_eq!(lab.nodes[3].route_mode("10.246.1.0/24"), "vxlan/ok");
    let routes = near
        .ip(&["route", "show", "proto", "197"])
        .expect("ip route");
    assert!(
        routes.contains("10.246.2.0/24 via 192.168.70.2 dev eth0"),
        "{routes}"
    );
    assert!(
        routes.contains("10.246.4.0/24 via 10.246.4.0 dev ferrite.vxlan onlink"),
        "{routes}"
    );
    let link = near
        .ip(&["-d", "link", "show", "ferrite.vxlan"])
        .expect("vxlan link");
    assert!(
        link.contains("vxlan id 1") && link.contains("dstport 8472"),
        "{link}"
    );
    // The pod MTU leaves room for VXLAN.
    let conflist: Value =
        serde_json::from_str(&std::fs::read_to_string(near.conflist()).unwrap()).unwrap();
    assert_eq!(conflist["plugins"][0]["mtu"], 1450, "{conflist}");
    // Every ordered pair of nodes, TCP and UDP, both families.
    for a in 0..n {
        for b in 0..n {
            if a != b {
                assert_reaches(&lab, (a, 0), (b, 0), false);
                assert_reaches(&lab, (a, 0), (b, 0), true);
            }
        }
    }
    // 20 MB across the VXLAN node: no MTU black hole.
    iperf(
        &lab.nodes[0],
        &lab.nodes[0].pods[0],
        lab.nodes[3].pods[0].v4,
        &["-n", "20M"],
    );
    iperf(
        &lab.nodes[3],
        &lab.nodes[3].pods[0],
        lab.nodes[1].pods[0].v6.unwrap(),
        &["-n", "20M"],
    );
    assert_host_routing(&lab, true);
}

#[test]
fn a_cluster_ip_whose_only_backend_is_on_another_node_works_from_pods_and_nodes() {
    let mut lab = start("pnc", 1, &[]);
    let _servers = pods_and_servers(&mut lab, 0);
    let mut svc = NsService::node_port("remote", "10.96.7.7".parse().unwrap(), 30777);
    for far in [1usize, 3] {
        svc.endpoints = vec![SvcEndpoint::new(
            lab.nodes[far].pods[0].v4,
            &lab.nodes[far].name,
        )];
        lab.write_manifest("svc.yaml", &svc.to_yaml())
            .expect("service");
        let target = SocketAddr::new("10.96.7.7".parse().unwrap(), 80);
        let backend = format!("{}-pod0", lab.nodes[far].name);
        let ok = wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
            client(&lab.nodes[0], Some(&lab.nodes[0].pods[0]), target, false, 1)
                .names
                .contains_key(&backend)
        });
        assert!(ok.is_ok(), "ClusterIP → {backend} from a pod on node 1");
        let from_pod = client(&lab.nodes[0], Some(&lab.nodes[0].pods[0]), target, false, 5);
        assert_eq!(from_pod.names.get(&backend), Some(&5), "{from_pod:?}");
        let from_node = client(&lab.nodes[0], None, target, false, 5);
        assert_eq!(from_node.names.get(&backend), Some(&5), "{from_node:?}");
        let udp = client(
            &lab.nodes[0],
            Some(&lab.nodes[0].pods[0]),
            SocketAddr::new(target.ip(), 53),
            true,
            5,
        );
        assert_eq!(udp.names.get(&backend), Some(&5), "{udp:?}");
    }
}

#[test]
fn forced_vxlan_tunnels_every_node() {
    let mut lab = start("pnv", 1, &["--routing", "vxlan"]);
    let _servers = pods_and_servers(&mut lab, 0);
    assert_eq!(lab.nodes[0].route_mode("10.246.2.0/24"), "vxlan/ok");
    assert_eq!(lab.nodes[0].route_mode("fd00:246:2::/64"), "vxlan/ok");
    for (a, b) in [(0, 1), (1, 2), (2, 3), (3, 0)] {
        assert_reaches(&lab, (a, 0), (b, 0), false);
        assert_reaches(&lab, (a, 0), (b, 0), true);
    }
    iperf(
        &lab.nodes[1],
        &lab.nodes[1].pods[0],
        lab.nodes[2].pods[0].v4,
        &["-n", "20M"],
    );
    // Every pod's traffic arrived over the overlay: only its ingress hook can have sent it
    // into the pods.
    assert_host_routing(&lab, true);
}

/// `--host-routing legacy`: the stack routes pod traffic again — pods still reach each other,
/// nothing goes past the stack, and the veths carry NetworkPolicy alone.
#[test]
fn legacy_host_routing_leaves_pod_traffic_to_the_stack() {
    let mut lab = start("pnl", 0, &["--host-routing", "legacy"]);
    let _servers = pods_and_servers(&mut lab, 1);
    assert_reaches(&lab, (0, 0), (1, 0), false);
    assert_reaches(&lab, (1, 0), (2, 0), true);
    // NetworkPolicy is still enforced, by the veths' policy-only hooks: p1 admits only p2,
    // p0 may only send to p2 (so not to p0b on its own node either).
    let pods = [
        ((0, 0), "p0"),
        ((0, 1), "p0b"),
        ((1, 0), "p1"),
        ((2, 0), "p2"),
    ];
    let mut y = String::new();
    for ((n, i), name) in pods {
        let pod = &lab.nodes[n].pods[i];
        let _ = write!(
            y,
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: default, labels: {{app: {name}}}}}\n\
             spec: {{nodeName: {}}}\nstatus: {{phase: Running, podIP: {}, podIPs: [{{ip: {}}}]}}\n",
            lab.nodes[n].name, pod.v4, pod.v4
        );
    }
    y.push_str(
        "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p1-from-p2, namespace: default}\n\
         spec: {podSelector: {matchLabels: {app: p1}}, ingress: [{from: [{podSelector: {matchLabels: {app: p2}}}]}]}\n\
         ---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p0-to-p2, namespace: default}\n\
         spec: {podSelector: {matchLabels: {app: p0}}, policyTypes: [Egress], egress: [{to: [{podSelector: {matchLabels: {app: p2}}}]}]}\n",
    );
    lab.write_manifest("policy.yaml", &y)
        .expect("write policies");
    let tcp = |from: (usize, usize), to: (usize, usize)| {
        let target = SocketAddr::new(lab.nodes[to.0].pods[to.1].v4, TCP);
        client(
            &lab.nodes[from.0],
            Some(&lab.nodes[from.0].pods[from.1]),
            target,
            false,
            1,
        )
        .ok == 1
    };
    let denied = |from, to| (0..3).all(|_| !tcp(from, to));
    wait_until(Duration::from_secs(8), Duration::from_millis(100), || {
        !tcp((0, 0), (1, 0))
    })
    .expect("p0 → p1 denied once the policies are in force");
    assert!(
        denied((0, 0), (0, 1)),
        "p0 → p0b (same node) must be denied by p0's egress policy"
    );
    assert!(
        denied((0, 1), (1, 0)),
        "p0b → p1 must be denied by p1's ingress policy"
    );
    for (from, to) in [
        ((2, 0), (1, 0)),
        ((0, 0), (2, 0)),
        ((1, 0), (0, 0)),
        ((0, 1), (0, 0)),
    ] {
        assert!(tcp(from, to), "{from:?} → {to:?} must stay allowed");
    }
    for node in &lab.nodes {
        let st = node.status().expect("ferrite status");
        let hr = &st["datapath"]["host_routing"];
        assert_eq!(hr["mode"], "legacy", "{}: {hr}", node.name);
        // The veths carry the policy hooks, and nothing went past the stack.
        let veths: BTreeSet<String> = node.pods.iter().map(host_dev).collect();
        let listed: BTreeSet<String> = hr["pod_devices"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        assert_eq!(listed, veths, "{}: {hr}", node.name);
        assert_eq!(hr["to_pod_packets"], 0, "{}: {hr}", node.name);
        assert_eq!(hr["redirected_packets"], 0, "{}: {hr}", node.name);
        assert_eq!(hr["overlay_device"], Value::Null, "{}: {hr}", node.name);
    }
}

/// The pod-hook pins under node `node`'s BPF root (`pod_*`, `podpol_*`, `podeg_*`).
fn pod_pins(node: &PodNode) -> BTreeSet<String> {
    std::fs::read_dir(node.bpf_root.join("links"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| n.starts_with("pod"))
        .collect()
}

/// The TTL of the first echo reply `pod` gets from `dst` (busybox ping).
fn ping_ttl(pod: &CniPod, dst: IpAddr) -> Option<u8> {
    let out = pod
        .command("busybox")
        .expect("busybox")
        .args(["ping", "-c", "3", "-W", "2"])
        .arg(dst.to_string())
        .output()
        .expect("busybox ping (make setup installs busybox)");
    let text = String::from_utf8_lossy(&out.stdout);
    let at = text.find("ttl=")?;
    text[at + 4..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Entries of the pinned pod-device map (`bpftool map dump -j`).
fn pod_dev_entries(node: &PodNode) -> usize {
    let pin = node.bpf_root.join("maps").join("fe_poddev_v1");
    let out = Command::new("bpftool")
        .args(["-j", "map", "dump", "pinned"])
        .arg(&pin)
        .output()
        .expect("bpftool (make setup installs it)");
    serde_json::from_slice::<Value>(&out.stdout)
        .ok()
        .and_then(|v| v.as_array().map(Vec::len))
        .unwrap_or_else(|| panic!("bpftool map dump {}: {out:?}", pin.display()))
}

/// Restarting a node's agent with the other `--host-routing` swaps its veth hooks: legacy
/// leaves no host-routing pin and an empty pod-device map, bpf no policy-only pin; pods reach
/// each other after each switch. A veth's pins removed by hand come back with their programs.
#[test]
fn switching_host_routing_swaps_the_pod_hooks() {
    let mut lab = start("pns", 0, &[]);
    let _servers = pods_and_servers(&mut lab, 0);
    let veth = host_dev(&lab.nodes[0].pods[0]);
    let bpf: BTreeSet<String> = [format!("pod_{veth}"), format!("podeg_{veth}")].into();
    let legacy: BTreeSet<String> = [format!("podpol_{veth}"), format!("podeg_{veth}")].into();
    for (args, want, devs) in [
        (vec![], &bpf, 1),
        (vec!["--host-routing", "legacy"], &legacy, 0),
        (vec![], &bpf, 1),
    ] {
        lab.config.extra_args = args.iter().map(|s| (*s).to_owned()).collect();
        lab.nodes[0].kill_agent().expect("kill the agent");
        lab.start_agent(0).expect("restart the agent");
        let mut seen = BTreeSet::new();
        let ok = wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
            seen = pod_pins(&lab.nodes[0]);
            seen == *want
        });
        assert!(ok.is_ok(), "{args:?}: pod pins {seen:?}, want {want:?}");
        assert_eq!(
            pod_dev_entries(&lab.nodes[0]),
            devs,
            "{args:?}: pod-device map"
        );
        assert_reaches(&lab, (0, 0), (1, 0), false);
        assert_reaches(&lab, (1, 0), (0, 0), false);
        // Two nodes route the reply (its TTL starts at 64), on BPF host routing's fast path
        // as in the stack.
        let (from, to) = (&lab.nodes[0].pods[0], &lab.nodes[1].pods[0]);
        assert_eq!(
            ping_ttl(from, to.v4),
            Some(62),
            "{args:?}: TTL of {}'s echo reply",
            to.v4
        );
    }
    // Pins removed by hand (their links go with them): attached again within a few seconds,
    // and the pod's traffic leaves by the veth's program again (its redirect counter grows).
    let node = &lab.nodes[0];
    let redirected = || {
        node.status().expect("ferrite status")["datapath"]["host_routing"]["redirected_packets"]
            .as_u64()
            .unwrap_or(0)
    };
    for pin in &bpf {
        std::fs::remove_file(node.bpf_root.join("links").join(pin)).expect("remove a pod pin");
    }
    let back = wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
        pod_pins(node) == bpf
    });
    assert!(back.is_ok(), "pod pins after removal: {:?}", pod_pins(node));
    let before = redirected();
    assert_reaches(&lab, (0, 0), (1, 0), false);
    // The status publishes the counters once a second.
    let grew = wait_until(Duration::from_secs(3), Duration::from_millis(100), || {
        redirected() > before
    });
    assert!(
        grew.is_ok(),
        "the re-attached fe_pod_ingress sent the pod's packets out ({before} before, {} now)",
        redirected()
    );
}

/// Polls `f` every 100 ms for up to `limit`; how long it took.
fn within(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let t = Instant::now();
    wait_until(limit, Duration::from_millis(100), &mut f).ok()?;
    Some(t.elapsed())
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one lab, one story: heal, restart, node removal, cleanup"
)]
fn routes_heal_follow_nodes_and_survive_an_agent_restart() {
    let mut lab = start("pnh", 1, &[]);
    let _servers = pods_and_servers(&mut lab, 0);
    let node = &lab.nodes[0];
    // A route, the FDB entry and the whole vxlan device deleted by hand come back.
    node.ip(&["route", "del", "10.246.2.0/24"])
        .expect("del route");
    let back = within(Duration::from_secs(5), || {
        node.ip(&["route", "show", "10.246.2.0/24"])
            .is_ok_and(|r| r.contains("via 192.168.70.2"))
    });
    assert!(back.is_some(), "the route came back within 5 s");
    let fdb = |node: &PodNode| {
        let mut c = node.ns.command("bridge").expect("bridge command");
        c.args(["fdb", "show", "dev", "ferrite.vxlan"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    assert!(fdb(node).contains("dst 192.168.71.1"), "{}", fdb(node));
    let mac = fdb(node).split_whitespace().next().unwrap().to_string();
    let mut del = node.ns.command("bridge").unwrap();
    ferrite_lab::cmd::run(del.args([
        "fdb",
        "del",
        &mac,
        "dev",
        "ferrite.vxlan",
        "dst",
        "192.168.71.1",
    ]))
    .expect("fdb del");
    assert!(
        within(Duration::from_secs(5), || fdb(node)
            .contains("dst 192.168.71.1"))
        .is_some(),
        "FDB entry back"
    );
    node.ip(&["link", "del", "ferrite.vxlan"])
        .expect("del vxlan");
    assert!(
        within(Duration::from_secs(5), || node
            .ip(&["route", "show", "10.246.4.0/24"])
            .is_ok_and(|r| r.contains("ferrite.vxlan")))
        .is_some(),
        "device and its route back"
    );
    assert_reaches(&lab, (0, 0), (3, 0), false);

    // kill -9 and restart during a transfer across VXLAN: it completes, nothing is rewritten.
    let before = lab.nodes[0].ip(&["route", "show", "proto", "197"]).unwrap();
    let mut transfer = lab.nodes[0].pods[0].command("iperf3").unwrap();
    transfer
        .args([
            "-c",
            &lab.nodes[3].pods[0].v4.to_string(),
            "-p",
            &IPERF.to_string(),
            "-t",
            "4",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let running = Child::spawn(&mut transfer).expect("iperf3 client");
    std::thread::sleep(Duration::from_millis(800));
    lab.nodes[0].kill_agent().expect("kill -9");
    lab.start_agent(0).expect("restart");
    let out = running
        .output_within(Duration::from_secs(15))
        .expect("iperf3 ends");
    assert!(
        out.status.success(),
        "transfer across the restart: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(Duration::from_millis(2500));
    let after = lab.nodes[0].routes().expect("routes");
    assert_eq!(
        after["ops_applied"], 0,
        "a restart onto a right state rewrites nothing: {after}"
    );
    assert_eq!(
        lab.nodes[0].ip(&["route", "show", "proto", "197"]).unwrap(),
        before
    );

    // A Node removed from the source takes its routes with it; back when it returns.
    lab.remove_node_object(2).expect("remove node3");
    let gone = within(Duration::from_secs(5), || {
        lab.nodes[0]
            .ip(&["route", "show", "10.246.3.0/24"])
            .is_ok_and(|r| r.trim().is_empty())
    });
    assert!(gone.is_some(), "node3's route left with its Node object");
    lab.write_node_object(2).expect("node3 back");
    assert!(
        within(Duration::from_secs(5), || &lab.nodes[0]
            .route_mode("10.246.3.0/24")
            == "native/ok")
        .is_some()
    );

    // `ferrite agent --cleanup` removes ferrite's routes and device, nothing else.
    lab.nodes[0].kill_agent().unwrap();
    let mut cleanup = lab.nodes[0].ns.command(FERRITE).unwrap();
    ferrite_lab::cmd::run(
        cleanup
            .args(["agent", "--cleanup", "--bpf-root"])
            .arg(&lab.nodes[0].bpf_root),
    )
    .expect("cleanup");
    assert_eq!(
        lab.nodes[0]
            .ip(&["route", "show", "proto", "197"])
            .unwrap()
            .trim(),
        ""
    );
    assert!(lab.nodes[0].ip(&["link", "show", "ferrite.vxlan"]).is_err());
    assert!(
        lab.nodes[0]
            .ip(&["route", "show", "default"])
            .unwrap()
            .contains("via"),
        "the node's own routes stay"
    );
}

/// `ferrite-lab client` from the router (a host on the LAN, outside the cluster).
fn lan_client(lab: &PodLab, target: SocketAddr, udp: bool, count: u64) -> ClientReport {
    let mut cmd = lab.router.command(lab_bin()).expect("client command");
    cmd.args(["client", "--json", "--target", &target.to_string()])
        .args(["--proto", if udp { "udp" } else { "tcp" }])
        .args(["--count", &count.to_string(), "--timeout-ms", "1000"]);
    let out = ferrite_lab::cmd::run(&mut cmd).expect("run client");
    serde_json::from_slice(&out.stdout).expect("client report")
}

#[test]
fn a_node_port_whose_backend_is_on_another_node_works_from_the_lan() {
    // The agent finds eth0 itself (it holds the node's InternalIP): no --devices.
    let mut lab = start("pnp", 1, &[]);
    let _servers = pods_and_servers(&mut lab, 0);
    let mut svc = NsService::node_port("np", "10.96.8.8".parse().unwrap(), 30888);
    // node2 is reached natively, node4 over VXLAN.
    for far in [1usize, 3] {
        svc.endpoints = vec![SvcEndpoint::new(
            lab.nodes[far].pods[0].v4,
            &lab.nodes[far].name,
        )];
        lab.write_manifest("svc.yaml", &svc.to_yaml())
            .expect("service");
        let backend = format!("{}-pod0", lab.nodes[far].name);
        let target = SocketAddr::new(IpAddr::V4(lab.nodes[0].v4()), 30888);
        let ok = wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
            lan_client(&lab, target, false, 1)
                .names
                .contains_key(&backend)
        });
        assert!(
            ok.is_ok(),
            "NodePort on node1 → {backend}: {}",
            lab.nodes[0].log_tail(20)
        );
        let tcp = lan_client(&lab, target, false, 10);
        assert_eq!(tcp.names.get(&backend), Some(&10), "{tcp:?}");
        let udp = lan_client(&lab, SocketAddr::new(target.ip(), 30888 - 27), true, 10);
        assert_eq!(udp.names.get(&backend), Some(&10), "{udp:?}");
        // SNAT to node1 (the reply must come back through its translation).
        assert_eq!(
            tcp.all_peers_seen(),
            BTreeSet::from([lab.nodes[0].v4().to_string().as_str()]),
            "the backend sees node1's address"
        );
    }
}

/// Host routing's counter `key` on `node`.
fn fwd_count(node: &PodNode, key: &str) -> u64 {
    node.status().expect("ferrite status")["datapath"]["host_routing"][key]
        .as_u64()
        .unwrap_or(0)
}

/// `flush`, then 5 connects from `pod` on `node` to `target`, every one answered, until `done`
/// (5 s): the path whose neighbour was just flushed loses nothing while it is resolved again.
fn connects_until(
    node: &PodNode,
    pod: &CniPod,
    target: SocketAddr,
    what: &str,
    mut flush: impl FnMut(),
    mut done: impl FnMut() -> bool,
) {
    let ok = wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
        flush();
        let r = client(node, Some(pod), target, false, 5);
        assert_eq!(r.ok, 5, "{}: connects to {target} failed: {r:?}", node.name);
        done()
    });
    assert!(ok.is_ok(), "{what}\n{}", node.log_tail(15));
}

/// `ip neigh show dev DEV` on `node`: the entries with a link-layer address.
fn resolved_neighbours(node: &PodNode, dev: &str) -> Vec<String> {
    node.ip(&["neigh", "show", "dev", dev])
        .expect("ip neigh")
        .lines()
        .filter(|l| l.contains("lladdr"))
        .map(str::to_owned)
        .collect()
}

/// Neighbours BPF host routing has not resolved. A pod's connects to another node right after
/// its node flushed its LAN neighbours are sent with `bpf_redirect_neigh` (`neigh_packets`
/// grows: the kernel resolved the next hop, whose entry is back). Connects arriving for a pod
/// whose neighbour entry on its device was flushed are left to the stack, which resolves it
/// again (the entry comes back; host routing cannot make one). Every connect is answered.
#[test]
fn unresolved_neighbours_fall_back_without_losing_a_connect() {
    let mut lab = start("pnu", 0, &[]);
    let _servers = pods_and_servers(&mut lab, 0);
    let target = SocketAddr::new(lab.nodes[1].pods[0].v4, TCP);
    let (node0, node1) = (&lab.nodes[0], &lab.nodes[1]);
    let pod0 = &node0.pods[0];
    assert_eq!(client(node0, Some(pod0), target, false, 5).ok, 5);

    // The agents' own traffic between the nodes (membership) resolves the entry again soon
    // after a flush, so each try flushes right before its connects.
    let before = fwd_count(node0, "neigh_packets");
    let node1_ip = node1.v4().to_string();
    let flush0 = || {
        node0.ip(&["neigh", "flush", "dev", "eth0"]).expect("flush");
    };
    connects_until(
        node0,
        pod0,
        target,
        "neigh_packets did not grow",
        flush0,
        || fwd_count(node0, "neigh_packets") > before,
    );
    let entries = resolved_neighbours(node0, "eth0");
    assert!(
        entries
            .iter()
            .any(|l| l.starts_with(&format!("{node1_ip} "))),
        "{node1_ip} not resolved again: {entries:?}"
    );

    let dev = host_dev(&node1.pods[0]);
    let pod1_ip = target.ip().to_string();
    let flush1 = || {
        node1.ip(&["neigh", "flush", "dev", &dev]).expect("flush");
        assert!(resolved_neighbours(node1, &dev).is_empty(), "flushed {dev}");
    };
    connects_until(
        node0,
        pod0,
        target,
        &format!(
            "{}: {pod1_ip} was never resolved again on {dev}",
            node1.name
        ),
        flush1,
        || {
            resolved_neighbours(node1, &dev)
                .iter()
                .any(|l| l.starts_with(&format!("{pod1_ip} ")))
        },
    );
}
