//! North-south load balancing with the ingress translation in XDP (`--xdp native|generic`), as
//! root, in the same lab as `northsouth.rs` (LAN bridge, two nodes with pods, two clients). The
//! lab's devices are veths, which run native XDP. Each test also checks that the API reports
//! the hook and that each node's eth0 has exactly one ingress translator.

mod common;
mod northsouth_common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::FERRITE;
use ferrite_lab::nslab::LAN_IFNAME;
use ferrite_lab::probe::Proto;
use ferrite_lab::{AgentConfig, NsLab, NsService, Protocol, SvcPort};
use northsouth_common::{
    all_endpoints, assert_local_with_client_ip, attempts, build, cluster_ip, endpoints_on, lb_ip,
    malformed_scenario, node_tcp, node_udp, nodeport_and_lb_ip_scenario, start_agents_with, tcp_of,
    udp_of, wait_answers,
};

const NATIVE: &[&str] = &["--xdp", "native"];
const GENERIC: &[&str] = &["--xdp", "generic"];

fn bpftool_json(lab: &NsLab, i: usize, args: &[&str]) -> serde_json::Value {
    let out = lab
        .node(i)
        .ns()
        .run(|| {
            std::process::Command::new("bpftool")
                .arg("-j")
                .args(args)
                .output()
        })
        .expect("netns")
        .expect("running bpftool (apt-get install bpftool)");
    assert!(out.status.success(), "bpftool {args:?}: {out:?}");
    serde_json::from_slice(&out.stdout).expect("bpftool JSON")
}

/// Node `i`'s eth0 ingress translators: the modes of its XDP programs (`bpftool net`, which
/// sees the node's netns) and whether the agent's TCX ingress link is pinned (this bpftool
/// lists neither TCX links per device nor their target; a pinned TCX link stays attached).
fn ingress_programs(lab: &NsLab, i: usize) -> (Vec<String>, bool) {
    let v = bpftool_json(lab, i, &["net", "show", "dev", LAN_IFNAME]);
    let xdp = v
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|e| e["xdp"].as_array().cloned().unwrap_or_default())
        .map(|x| x["mode"].as_str().unwrap_or("?").to_string())
        .collect();
    let pin = lab
        .agent(i)
        .bpf_root
        .join("links")
        .join(format!("tcx_{LAN_IFNAME}_ingress"));
    let tc = pin.exists();
    (xdp, tc)
}

/// Every node's eth0 has exactly the expected ingress translator (`hook` as the API names it)
/// and the API reports it.
fn assert_ingress_hook(lab: &NsLab, hook: &str) {
    for i in 0..lab.nodes().len() {
        let status = lab.agent(i).status().expect("status");
        let reported = &status["datapath"]["ingress"];
        assert_eq!(
            reported,
            &serde_json::json!([{ "device": LAN_IFNAME, "hook": hook }]),
            "{}: status reports {reported}{}",
            lab.node(i).name,
            lab.agent_logs(20)
        );
        let (xdp, tc) = ingress_programs(lab, i);
        assert_eq!(
            xdp.len() + usize::from(tc),
            1,
            "{}: exactly one ingress translator, found XDP {xdp:?} and TC {tc}",
            lab.node(i).name
        );
        let expected_xdp: Vec<String> = match hook {
            "xdp-native" => vec!["driver".into()],
            "xdp-generic" => vec!["generic".into()],
            _ => Vec::new(),
        };
        assert_eq!(xdp, expected_xdp, "{}: XDP programs", lab.node(i).name);
    }
}

#[test]
fn xdp_native_nodeport_and_lb_ip_reach_backends_on_both_nodes() {
    let lab = nodeport_and_lb_ip_scenario("nxn", NATIVE);
    assert_ingress_hook(&lab, "xdp-native");
}

#[test]
fn xdp_generic_nodeport_and_lb_ip_reach_backends_on_both_nodes() {
    let lab = nodeport_and_lb_ip_scenario("nxg", GENERIC);
    assert_ingress_hook(&lab, "xdp-generic");
}

/// externalTrafficPolicy Local through XDP: only local backends, each seeing the client's own
/// address, over the NodePort and the LB IP.
#[test]
fn xdp_native_etp_local_keeps_the_client_ip() {
    let mut lab = build("nxl");
    let mut local = NsService::load_balancer("local", cluster_ip(11), lb_ip(11), 31080);
    local.local = true;
    local.endpoints = endpoints_on(&lab, 0);
    lab.write_manifest("local.yaml", &local.to_yaml()).unwrap();
    start_agents_with(&mut lab, NATIVE);
    assert_ingress_hook(&lab, "xdp-native");
    for (tcp, udp) in [
        (node_tcp(&lab, 0, &local), node_udp(&lab, 0, &local)),
        (tcp_of(lb_ip(11), &local), udp_of(lb_ip(11), &local)),
    ] {
        wait_answers(&lab, 0, tcp, Proto::Tcp);
        let r = attempts(&lab, 0, tcp, Proto::Tcp, 20);
        assert_local_with_client_ip(&lab, &r, 0, 0, 20);
        let r = attempts(&lab, 0, udp, Proto::Udp, 20);
        assert_local_with_client_ip(&lab, &r, 0, 0, 20);
    }
}

/// An echo server on TCP `port` in every pod, for connections that stay open.
struct Echo {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Echo {
    fn start(lab: &NsLab, port: u16) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for node in lab.nodes() {
            for pod in node.pods.pods() {
                let listener = pod
                    .netns
                    .run(|| TcpListener::bind(("0.0.0.0", port)))
                    .expect("netns")
                    .expect("bind the echo port");
                listener.set_nonblocking(true).unwrap();
                let stop = stop.clone();
                threads.push(std::thread::spawn(move || echo_loop(&listener, &stop)));
            }
        }
        Self { stop, threads }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn echo_loop(listener: &TcpListener, stop: &AtomicBool) {
    let mut conns: Vec<TcpStream> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        if let Ok((s, _)) = listener.accept() {
            s.set_nonblocking(true).unwrap();
            conns.push(s);
        }
        let mut buf = [0u8; 256];
        conns.retain_mut(|c| match c.read(&mut buf) {
            Ok(0) => false,
            Ok(n) => c.write_all(&buf[..n]).is_ok(),
            Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
        });
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn round_trip(stream: &mut TcpStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
    stream.write_all(msg)?;
    let mut got = vec![0u8; msg.len()];
    stream.read_exact(&mut got)?;
    Ok(got)
}

/// A restart of the agent with the same `--xdp` mode adopts the pinned XDP link: an open TCP
/// connection through the LB IP (to a backend on either node) keeps working across it. Then
/// native → generic → off → native → off across restarts leaves exactly one ingress translator
/// each time, and the connections survive the switches too (the conntrack map is shared).
#[test]
fn xdp_restart_keeps_open_connections_and_mode_switches_keep_one_translator() {
    let mut lab = build("nxr");
    let hold = 9000;
    let mut svc = NsService::load_balancer("hold", cluster_ip(15), lb_ip(15), 30180);
    svc.ports
        .push(SvcPort::new("hold", Protocol::Tcp, hold, hold).node_port(30190));
    svc.endpoints = all_endpoints(&lab);
    lab.write_manifest("hold.yaml", &svc.to_yaml()).unwrap();
    let _echo = Echo::start(&lab, hold);
    start_agents_with(&mut lab, NATIVE);
    assert_ingress_hook(&lab, "xdp-native");
    let target = SocketAddr::new(lb_ip(15), hold);
    wait_answers(&lab, 0, tcp_of(lb_ip(15), &svc), Proto::Tcp);

    // Several connections so that both local (node1) and remote (node2, SNAT) backends hold one.
    let mut conns: Vec<TcpStream> = lab
        .client(0)
        .ns()
        .run(|| {
            (0..6)
                .map(|_| TcpStream::connect_timeout(&target, Duration::from_secs(2)))
                .collect::<Result<Vec<_>, _>>()
        })
        .expect("netns")
        .unwrap_or_else(|e| panic!("connecting to {target}: {e}{}", lab.agent_logs(20)));
    for c in &mut conns {
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        assert_eq!(round_trip(c, b"before\n").unwrap(), b"before\n");
    }

    let mut config = AgentConfig::new(Path::new(FERRITE));
    for (step, args, hook) in [
        ("restart, same mode", NATIVE, "xdp-native"),
        ("switch to generic XDP", GENERIC, "xdp-generic"),
        ("switch to TC", &["--xdp", "off"][..], "tc"),
        ("switch back to XDP", NATIVE, "xdp-native"),
        ("switch to TC again", &[][..], "tc"),
    ] {
        config.extra_args = args.iter().map(|s| (*s).to_string()).collect();
        lab.restart_agent_keeping_datapath(0, &config)
            .unwrap_or_else(|e| panic!("{step}: {e}"));
        assert_eq!(
            lab.agent(0).status().unwrap()["datapath"]["adopted"],
            true,
            "{step}: the restarted agent adopts the pinned datapath"
        );
        let (xdp, tc) = ingress_programs(&lab, 0);
        assert_eq!(
            xdp.len() + usize::from(tc),
            1,
            "{step}: XDP {xdp:?}, TC {tc}"
        );
        assert_eq!(
            lab.agent(0).status().unwrap()["datapath"]["ingress"][0]["hook"],
            hook,
            "{step}"
        );
        for (k, c) in conns.iter_mut().enumerate() {
            let msg = format!("{step} {k}\n");
            let got = round_trip(c, msg.as_bytes()).unwrap_or_else(|e| {
                panic!("{step}: connection {k} broke: {e}{}", lab.agent_logs(20))
            });
            assert_eq!(got, msg.as_bytes(), "{step}: connection {k}");
        }
    }
}

/// Garbage at the LB IP and the NodePorts with the translation in native XDP: no crash, no
/// conntrack leak, legitimate traffic still flows.
#[test]
fn xdp_native_malformed_packets_neither_crash_nor_leak_conntrack_entries() {
    malformed_scenario("nxm", NATIVE);
}

/// `--tc-attach legacy` with `--xdp generic`: XDP goes on the device over netlink (no
/// `bpf_link`), egress on a cls_bpf filter; the scenario passes, each eth0 has exactly one
/// ingress translator, and a restarted agent replaces the XDP program in place.
#[test]
fn legacy_attach_puts_xdp_on_the_link_over_netlink() {
    let args = ["--xdp", "generic", "--tc-attach", "legacy"];
    let mut lab = nodeport_and_lb_ip_scenario("lgx", &args);
    assert_ingress_hook(&lab, "xdp-generic");
    let xdp_id = |lab: &NsLab| {
        let v = bpftool_json(lab, 0, &["net", "show", "dev", LAN_IFNAME]);
        v.as_array()
            .into_iter()
            .flatten()
            .flat_map(|e| e["xdp"].as_array().cloned().unwrap_or_default())
            .filter_map(|x| x["id"].as_u64())
            .collect::<Vec<_>>()
    };
    for i in 0..2 {
        let pins = northsouth_common::link_pins(&lab, i);
        assert!(
            pins.contains(&format!("xdpnl_{LAN_IFNAME}_generic"))
                && pins.contains(&format!("tc_{LAN_IFNAME}_egress"))
                && !pins
                    .iter()
                    .any(|p| p.starts_with("xdp_") || p.starts_with("tcx_")),
            "netlink XDP and a legacy egress filter only: {pins:?}"
        );
        let ingress = northsouth_common::tc_filters(&lab, i, "ingress");
        assert!(
            !ingress.contains("fe_host_ingress"),
            "XDP translates, not TC: {ingress}"
        );
        assert!(northsouth_common::tc_filters(&lab, i, "egress").contains("fe_host_egress"));
    }
    let before = xdp_id(&lab);
    let mut config = AgentConfig::new(Path::new(FERRITE));
    config.extra_args = args.iter().map(|s| (*s).to_string()).collect();
    lab.restart_agent_keeping_datapath(0, &config).unwrap();
    let after = xdp_id(&lab);
    assert_eq!(before.len(), 1, "{before:?}");
    assert_eq!(
        after.len(),
        1,
        "one XDP program after the restart: {after:?}"
    );
    assert_ne!(
        before, after,
        "the new agent's program replaced the old one in place"
    );
    let web = NsService::load_balancer("web", cluster_ip(10), lb_ip(10), 30080);
    assert_eq!(
        attempts(&lab, 0, tcp_of(lb_ip(10), &web), Proto::Tcp, 20).ok,
        20
    );
    assert_ingress_hook(&lab, "xdp-generic");
}
