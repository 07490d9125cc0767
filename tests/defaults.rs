//! Zero flags, as root: a node netns on a LAN bridge (pods behind it) whose agent gets no
//! `--devices` — only the DaemonSet-style args of `agent_command` and a Node manifest with its
//! InternalIP — and a client outside. North-south must run on the detected device, follow
//! addresses and devices that change at runtime, and readiness must notice (and repair) a
//! pinned link that disappears, an L2 membership that cannot bind, and a route to another node's
//! PodCIDR that cannot be applied. Netns/cgroup prefix `df`.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{FERRITE, lab_bin, require_root};
use ferrite_lab::manifest::node_yaml;
use ferrite_lab::nslab::LAN_IFNAME;
use ferrite_lab::probe::Proto;
use ferrite_lab::veth::{Iface, Veth};
use ferrite_lab::{AgentConfig, NsLab, NsLabConfig, NsService, SvcEndpoint, wait_until};

const NODE_PORT: u16 = 30080;

fn lb_ip() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(172, 30, 0, 10))
}

/// One node (two pods), one client, the web service (NodePort 30080, an LB IP routed via the
/// node), the node's Node object, and the agent started without `--devices`.
fn lab(prefix: &str) -> (NsLab, NsService) {
    lab_with_node_ip(prefix, None)
}

/// [`lab`] with the Node's InternalIP set to `internal_ip` (default: the node's LAN address).
fn lab_with_node_ip(prefix: &str, internal_ip: Option<IpAddr>) -> (NsLab, NsService) {
    require_root();
    let mut lab = NsLab::build(
        NsLabConfig {
            prefix: prefix.into(),
            nodes: 1,
            clients: 1,
            ..NsLabConfig::default()
        },
        &lab_bin(),
    )
    .unwrap_or_else(|e| panic!("building the lab: {e}"));
    let node = lab.node(0);
    let mut web = NsService::load_balancer("web", Ipv4Addr::new(10, 96, 0, 10), lb_ip(), NODE_PORT);
    web.endpoints = (0..node.pods.pods().len())
        .map(|i| SvcEndpoint::new(node.pod_v4(i), &node.name))
        .collect();
    lab.write_manifest("web.yaml", &web.to_yaml()).unwrap();
    write_node(&lab, internal_ip.unwrap_or(IpAddr::V4(node.v4())));
    let mut config = AgentConfig::new(Path::new(FERRITE));
    config.devices = None;
    lab.start_agents(&config)
        .unwrap_or_else(|e| panic!("starting the agent: {e}"));
    (lab, web)
}

fn write_node(lab: &NsLab, internal_ip: IpAddr) {
    let name = lab.node(0).name.clone();
    lab.write_manifest("node.yaml", &node_yaml(&name, internal_ip, &[]))
        .unwrap();
}

fn ip(lab: &NsLab, args: &[&str]) {
    lab.node(0)
        .ns()
        .ip_run(args)
        .unwrap_or_else(|e| panic!("ip {args:?} on node1: {e}"));
}

/// Waits (up to `timeout`) until `target` answers from the client; returns how long it took.
fn answers_within(lab: &NsLab, target: SocketAddr, timeout: Duration) -> Duration {
    match lab.wait_answers(0, target, Proto::Tcp, timeout) {
        Ok(t) => t,
        Err(last) => panic!(
            "{target} did not answer within {timeout:?}; last attempt: {last:?}\nstatus: {}\n{}",
            lab.agent(0)
                .status()
                .map_or_else(|e| e.to_string(), |s| s.to_string()),
            lab.agent_logs(30)
        ),
    }
}

/// The names of the north-south devices in `ferrite status`.
fn devices(lab: &NsLab) -> Vec<String> {
    let st = lab.agent(0).status().expect("status");
    st["datapath"]["devices"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["name"].as_str().map(str::to_owned))
        .collect()
}

fn wait_devices(lab: &NsLab, want: &[&str]) {
    let mut last = Vec::new();
    let ok = wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
        last = devices(lab);
        last == want
    });
    assert!(
        ok.is_ok(),
        "north-south devices {last:?}, expected {want:?}\n{}",
        lab.agent_logs(30)
    );
}

/// `ferrite status --check`: (exit success, its line).
fn check(lab: &NsLab) -> (bool, String) {
    let out = Command::new(FERRITE)
        .args(["status", "--check", "--api-socket"])
        .arg(&lab.agent(0).socket)
        .output()
        .expect("run ferrite status --check");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
    )
}

#[test]
fn the_detected_device_serves_nodeport_and_lb_ip_on_every_address_and_follows_dhcp() {
    let (lab, _web) = lab("dfa");
    let node_ip = lab.node(0).v4();
    answers_within(
        &lab,
        SocketAddr::new(node_ip.into(), NODE_PORT),
        Duration::from_secs(10),
    );
    answers_within(&lab, SocketAddr::new(lb_ip(), 80), Duration::from_secs(10));
    wait_devices(&lab, &[LAN_IFNAME]);
    let st = lab.agent(0).status().unwrap();
    assert_eq!(st["datapath"]["device_selection"], "detected", "{st}");
    let (ok, line) = check(&lab);
    assert!(ok, "status --check: {line}");

    // A second address on the device: NodePort answers there too.
    let second = Ipv4Addr::new(192, 168, 50, 200);
    ip(
        &lab,
        &["addr", "add", &format!("{second}/24"), "dev", LAN_IFNAME],
    );
    let took = answers_within(
        &lab,
        SocketAddr::new(second.into(), NODE_PORT),
        Duration::from_secs(5),
    );
    eprintln!("NodePort on a second address after {took:?}");

    // DHCP: the lease moves the node to a new address (the old one, and its secondaries, go);
    // the kubelet updates the Node's InternalIP.
    let renewed = Ipv4Addr::new(192, 168, 50, 77);
    let started = Instant::now();
    ip(
        &lab,
        &["addr", "del", &format!("{node_ip}/24"), "dev", LAN_IFNAME],
    );
    ip(
        &lab,
        &["addr", "add", &format!("{renewed}/24"), "dev", LAN_IFNAME],
    );
    write_node(&lab, renewed.into());
    answers_within(
        &lab,
        SocketAddr::new(renewed.into(), NODE_PORT),
        Duration::from_secs(5),
    );
    eprintln!(
        "NodePort on the renewed address {:?} after the change",
        started.elapsed()
    );
    let st = lab.agent(0).status().unwrap();
    let addrs = &st["datapath"]["devices"][0]["addresses"];
    assert!(
        addrs
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == &renewed.to_string())
                && !a.iter().any(|x| x == &node_ip.to_string())),
        "{st}"
    );
}

#[test]
fn a_device_that_appears_after_start_gets_nodeport_and_one_that_goes_is_dropped() {
    let (lab, _web) = lab("dfb");
    wait_devices(&lab, &[LAN_IFNAME]);
    let node = lab.node(0);
    // Only the interface that holds an address answers ARP for it (two NICs on one LAN).
    node.netns
        .sysctl("net.ipv4.conf.all.arp_ignore", "1")
        .unwrap();
    // A second NIC on the LAN in its own subnet, with the node's default route through it.
    let veth = Veth::create(
        Iface::new(node.ns(), "eth1"),
        Iface::new(lab.lan().netns().ns(), "dfp9"),
    )
    .expect("second LAN veth");
    lab.lan().bridge().attach(veth.b()).expect("bridge port");
    let (gw, addr) = (
        Ipv4Addr::new(192, 168, 77, 1),
        Ipv4Addr::new(192, 168, 77, 2),
    );
    lab.client(0)
        .ns()
        .ip_run(["addr", "add", &format!("{gw}/24"), "dev", LAN_IFNAME])
        .expect("client address in the new subnet");
    let target = SocketAddr::new(addr.into(), NODE_PORT);
    let started = Instant::now();
    ip(&lab, &["addr", "add", &format!("{addr}/24"), "dev", "eth1"]);
    ip(
        &lab,
        &[
            "route",
            "add",
            "default",
            "via",
            &gw.to_string(),
            "dev",
            "eth1",
        ],
    );
    answers_within(&lab, target, Duration::from_secs(5));
    eprintln!("NodePort on the new device after {:?}", started.elapsed());
    wait_devices(&lab, &["eth0", "eth1"]);
    let pin = lab.agent(0).bpf_root.join("links/tcx_eth1_ingress");
    assert!(pin.exists(), "{} missing", pin.display());

    // The device goes (dropping the pair deletes it): it leaves the device list and its pins
    // are removed.
    drop(veth);
    wait_devices(&lab, &["eth0"]);
    assert!(!pin.exists(), "{} left behind", pin.display());
    answers_within(
        &lab,
        SocketAddr::new(lab.node(0).v4().into(), NODE_PORT),
        Duration::from_secs(5),
    );
}

#[test]
fn a_removed_link_pin_fails_readiness_naming_it_and_is_reattached() {
    let (lab, _web) = lab("dfc");
    let target = SocketAddr::new(lab.node(0).v4().into(), NODE_PORT);
    answers_within(&lab, target, Duration::from_secs(10));
    let mut ready = (false, String::new());
    let _ = wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
        ready = check(&lab);
        ready.0
    });
    assert!(ready.0, "not ready before the test: {}", ready.1);

    // Removing the pin detaches the link (the agent holds no other reference to it).
    let pin = lab.agent(0).bpf_root.join("links/tcx_eth0_ingress");
    std::fs::remove_file(&pin).expect("remove the pin");
    let removed = Instant::now();
    let mut seen = String::new();
    let failed = wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        let (ok, line) = check(&lab);
        seen = line;
        !ok && seen.contains("tcx_eth0_ingress")
    });
    assert!(
        failed.is_ok(),
        "status --check never failed naming tcx_eth0_ingress; last: {seen}"
    );
    eprintln!("--check failed after {:?}: {seen}", removed.elapsed());

    let back = wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
        pin.exists() && check(&lab).0
    });
    assert!(
        back.is_ok(),
        "not re-attached: pin {} exists={}, check: {:?}\n{}",
        pin.display(),
        pin.exists(),
        check(&lab),
        lab.agent_logs(30)
    );
    eprintln!("re-attached and ready after {:?}", removed.elapsed());
    let st = lab.agent(0).status().unwrap();
    let datapath = st["subsystems"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "datapath"))
        .cloned()
        .unwrap_or_default();
    assert!(
        datapath["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("tcx_eth0_ingress")),
        "the last error names the link: {datapath}"
    );
    answers_within(&lab, target, Duration::from_secs(5));
}

/// Subsystem `name` in `ferrite status -o json`.
fn subsystem(lab: &NsLab, name: &str) -> serde_json::Value {
    let st = lab.agent(0).status().expect("status");
    st["subsystems"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("no subsystem {name} in {st}"))
}

#[test]
fn an_l2_bind_failure_fails_readiness_with_its_error_until_the_address_is_local() {
    // The Node says an address this host does not have: the membership cannot bind to it.
    let elsewhere = Ipv4Addr::new(192, 168, 50, 250);
    let (lab, _web) = lab_with_node_ip("dfd", Some(elsewhere.into()));
    let mut seen = (true, String::new());
    let failed = wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
        seen = check(&lab);
        !seen.0 && seen.1.contains("l2:")
    });
    assert!(
        failed.is_ok(),
        "status --check did not fail naming l2: {seen:?}\n{}",
        lab.agent_logs(30)
    );
    let l2 = subsystem(&lab, "l2");
    assert_eq!(l2["ready"], false, "{l2}");
    let error = l2["last_error"].as_str().unwrap_or_default().to_owned();
    assert!(
        error.contains(&elsewhere.to_string()) && error.contains("ssign requested address"),
        "the bind error names the address: {l2}"
    );
    let table = Command::new(FERRITE)
        .args(["status", "--api-socket"])
        .arg(&lab.agent(0).socket)
        .output()
        .expect("ferrite status");
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("l2:") && l.contains("Failure")),
        "ferrite status lists l2 as failed:\n{table}"
    );
    assert!(
        table.contains(&format!("last error: {error}")),
        "ferrite status lists l2 with its error:\n{table}"
    );
    // Nothing is announced meanwhile, and the agent does not decide alone.
    let v: serde_json::Value = serde_json::from_slice(
        &Command::new(FERRITE)
            .args(["l2", "-o", "json", "--api-socket"])
            .arg(&lab.agent(0).socket)
            .output()
            .expect("ferrite l2")
            .stdout,
    )
    .expect("ferrite l2 -o json");
    assert_eq!(v["membership"]["mode"], "unbound", "{v}");

    // The Node gets the host's address: the membership binds and l2 is ready.
    write_node(&lab, IpAddr::V4(lab.node(0).v4()));
    let ready = wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
        seen = check(&lab);
        seen.0
    });
    assert!(
        ready.is_ok(),
        "not ready after the Node got a local address: {seen:?}\n{}",
        lab.agent_logs(30)
    );
    let l2 = subsystem(&lab, "l2");
    assert!(
        l2["detail"]
            .as_str()
            .is_some_and(|d| d.contains(&format!("{}:7946", lab.node(0).v4()))),
        "{l2}"
    );
    assert_eq!(
        l2["last_error"].as_str(),
        Some(error.as_str()),
        "kept: {l2}"
    );
}

#[test]
fn a_podcidr_route_that_cannot_be_applied_fails_routing_readiness_naming_it() {
    let (lab, _web) = lab("dfe");
    let mut seen = serde_json::Value::Null;
    let ok = wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
        seen = subsystem(&lab, "routing");
        seen["ready"] == true
    });
    assert!(ok.is_ok(), "routing not ready with no other node: {seen}");

    // A route someone else added to the PodCIDR of a node that then joins: ferrite leaves it
    // alone, and readiness says which route is missing.
    let cidr = "10.244.9.0/24";
    ip(&lab, &["route", "add", cidr, "dev", LAN_IFNAME]);
    lab.write_manifest(
        "node2.yaml",
        &format!(
            "apiVersion: v1\nkind: Node\nmetadata:\n  name: df-node2\nspec:\n  podCIDR: {cidr}\n  \
             podCIDRs: [\"{cidr}\"]\nstatus:\n  addresses:\n  - type: InternalIP\n    \
             address: 192.168.50.99\n"
        ),
    )
    .unwrap();
    let failed = wait_until(Duration::from_secs(8), Duration::from_millis(100), || {
        seen = subsystem(&lab, "routing");
        seen["ready"] == false
            && seen["last_error"]
                .as_str()
                .is_some_and(|e| e.contains(cidr) && e.contains("did not add"))
    });
    assert!(
        failed.is_ok(),
        "routing readiness did not name the blocked route: {seen}\n{}",
        lab.agent_logs(30)
    );

    // The foreign route goes: ferrite's route via node2 is applied and routing is ready.
    ip(&lab, &["route", "del", cidr, "dev", LAN_IFNAME]);
    let back = wait_until(Duration::from_secs(8), Duration::from_millis(100), || {
        seen = subsystem(&lab, "routing");
        seen["ready"] == true
    });
    assert!(
        back.is_ok(),
        "routing not ready again: {seen}\n{}",
        lab.agent_logs(30)
    );
    assert!(
        seen["detail"]
            .as_str()
            .is_some_and(|d| d.contains("1 of 1")),
        "{seen}"
    );
    let route = lab
        .node(0)
        .ns()
        .ip_run(["route", "show", cidr])
        .expect("ip route show");
    let route = String::from_utf8_lossy(&route.stdout).into_owned();
    assert!(route.contains("via 192.168.50.99"), "{route}");
}
