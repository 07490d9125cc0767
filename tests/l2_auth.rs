//! L2 membership with the defaults a user gets, as root: three node netns on a LAN bridge, the
//! `dir:` folder holding a `Node` per node (its LAN address as InternalIP) and a shared key file;
//! every agent runs with no `--l2-bind` and no `--l2-peers` (only `--devices eth0` and the lab's
//! paths, `--l2-key-file` among them).
//!
//! - The user story's `CiliumLoadBalancerIPPool` and `CiliumL2AnnouncementPolicy`, verbatim:
//!   exactly one MAC answers for the LoadBalancer IP and for an externalIP; `kill -9` of the
//!   owner's agent, and its link going down → another node answers, and after healing one
//!   owner answers again (the ≤1 s median over ≥10 trials is measured by `make bench`, l2).
//! - A LAN host sending forged membership datagrams (an agent with another key claiming to be
//!   the owner; captured valid datagrams replayed to their receiver and to another member)
//!   changes nothing, and every node's `ferrite l2 -o json` counts them.
//! - Agents bind when their Node arrives, and claim nothing before.
//! - An interface without the north-south datapath answers for nothing, and `ferrite l2` says
//!   why.
//!
//! Netns prefix `la`. Run as root: `cargo test --test l2_auth -- --test-threads=1 --nocapture`.

mod common;
mod l2_common;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::process::Stdio;
use std::time::{Duration, Instant};

use ferrite_lab::l2lab::Fault;
use ferrite_lab::l2lab::{L2Lab, LB_V4, MEMBER_PORT, NODES_FILE, TrialTiming, address_entry};
use ferrite_lab::l2raw::{ETH_P_ALL, PacketSocket};
use ferrite_lab::nslab::LAN_IFNAME;
use ferrite_lab::{Child, NsService};
use serde_json::Value;

use l2_common::{
    GENEROUS, WEB_FILE, all_endpoints, assert_nobody_answers, assert_only_owner_answers, build,
    build_with_manifests, cluster_ip, owner,
};

const TOOLS: &[&str] = &["arping", "ndisc6"];

/// The user story's pool and policy (`../shared/reference/user-story-cilium-on-k3s.txt`).
const USER_STORY_POOL: &str = "\
apiVersion: cilium.io/v2alpha1
kind: CiliumLoadBalancerIPPool
metadata:
  name: default-pool
spec:
  blocks:
  - cidr: 10.20.30.100/30
";
const USER_STORY_POLICY: &str = "\
apiVersion: cilium.io/v2alpha1
kind: CiliumL2AnnouncementPolicy
metadata:
  name: default-l2-announcement-policy
  namespace: kube-system
spec:
  nodeSelector: {}
  interfaces:
  - ens192
  - '^eth[0-9]+'
  externalIPs: true
  loadBalancerIPs: true
";
/// The externalIP of the second service (on the LAN subnet).
const EXTERNAL_V4: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 210);

fn membership(view: &Value) -> &Value {
    &view["membership"]
}

fn members(view: &Value) -> BTreeSet<String> {
    view["members"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| m.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn rejected(view: &Value, what: &str) -> u64 {
    membership(view)["rejected"][what].as_u64().unwrap_or(0)
}

/// Every node's membership is bound to its Node's InternalIP, with the same key.
fn assert_bound_by_default(lab: &L2Lab) {
    let mut keys = BTreeSet::new();
    for (i, node) in lab.lab().nodes().iter().enumerate() {
        let v = lab.view(i).unwrap();
        let m = membership(&v);
        assert_eq!(m["mode"], "bound", "{v}");
        assert_eq!(m["bind_from"], "Node InternalIP", "{v}");
        assert_eq!(
            m["bind"].as_str(),
            Some(format!("{}:{MEMBER_PORT}", node.v4()).as_str()),
            "{v}"
        );
        assert!(m["error"].is_null(), "{v}");
        keys.insert(m["key"].as_str().unwrap_or_default().to_string());
    }
    assert_eq!(keys.len(), 1, "one shared key: {keys:?}");
    assert!(!keys.contains("ephemeral"), "{keys:?}");
}

/// The address LB IPAM gave `test/web` (from the node1 view).
fn allocated(lab: &L2Lab) -> Ipv4Addr {
    let mut found = None;
    let _ = ferrite_lab::wait_until(GENEROUS, Duration::from_millis(50), || {
        found = lab.view(0).ok().and_then(|v| {
            v["addresses"].as_array()?.iter().find_map(|a| {
                let ip: Ipv4Addr = a["address"].as_str()?.parse().ok()?;
                (a["service"] == "test/web").then_some(ip)
            })
        });
        found.is_some()
    });
    found.unwrap_or_else(|| panic!("no address for test/web{}", lab.lab().agent_logs(30)))
}

#[test]
fn user_story_yaml_one_mac_answers_and_the_owner_fails_over_on_kill_and_link_down() {
    let mut lab = build("la", TOOLS);
    // `web` without a fixed address: the pool allocates it. `ext` has an externalIP.
    let mut svc = NsService::load_balancer("web", cluster_ip(10), IpAddr::V4(LB_V4), 30080);
    svc.lb_ips.clear();
    svc.endpoints = all_endpoints(&lab);
    let mut ext = NsService::node_port("ext", cluster_ip(11), 30090);
    ext.external_ips.push(IpAddr::V4(EXTERNAL_V4));
    ext.endpoints = all_endpoints(&lab);
    for (file, yaml) in [
        ("pool.yaml", USER_STORY_POOL.to_string()),
        ("policy.yaml", USER_STORY_POLICY.to_string()),
        (WEB_FILE, svc.to_yaml()),
        ("ext.yaml", ext.to_yaml()),
    ] {
        lab.lab().write_manifest(file, &yaml).unwrap();
    }
    lab.start_agents()
        .unwrap_or_else(|e| panic!("starting ferrite agents: {e}"));
    assert_bound_by_default(&lab);
    let lb = allocated(&lab);
    assert!(
        "10.20.30.100/30"
            .parse::<ferrite_lab::Cidr>()
            .unwrap()
            .contains(IpAddr::V4(lb)),
        "{lb} from the user story's pool"
    );
    // The pool is not on the LAN subnet: clients get an on-link route for it.
    for c in lab.lab().clients() {
        c.ns()
            .ip_run(["route", "add", "10.20.30.100/30", "dev", LAN_IFNAME])
            .unwrap();
    }
    for addr in [IpAddr::V4(lb), IpAddr::V4(EXTERNAL_V4)] {
        let o = owner(&lab, addr);
        assert_only_owner_answers(&lab, addr, o);
        for i in 0..3 {
            let v = lab.view(i).unwrap();
            assert_eq!(members(&v).len(), 3, "{v}");
        }
    }
    // Failover, functionally: after each fault another node answers for the address, and once
    // healed one owner answers again. How fast is `make bench`'s l2 section (≥10 trials per
    // fault, min/median/max): tests never assert durations.
    for fault in [Fault::Kill, Fault::LinkDown] {
        let t = lab
            .trial(lb, 80, fault, &TrialTiming::default())
            .unwrap_or_else(|e| panic!("{fault} trial: {e}{}", lab.lab().agent_logs(40)));
        eprintln!(
            "{fault} of {}: {:?} answered after {:?} ms (announcement {:?} ms), double answers \
             {}, healed owner {:?}",
            t.old_owner, t.new_owner, t.reply_ms, t.announce_ms, t.double_answers, t.healed_owner
        );
        assert!(
            t.new_owner.as_ref().is_some_and(|n| *n != t.old_owner),
            "the survivors agree on a new owner after {fault}: {t:?}{}",
            lab.lab().agent_logs(40)
        );
        assert!(
            t.reply_ms.is_some() && t.takeover_by_new_owner,
            "the new owner answers ARP for {lb} after {fault}: {t:?}{}",
            lab.lab().agent_logs(40)
        );
        assert!(
            t.first_ok_ms.is_some(),
            "requests to {lb} succeed again after {fault}: {t:?}"
        );
        assert_eq!(t.double_answers, 0, "{t:?}");
        assert!(t.healed_owner.is_some(), "one owner after healing: {t:?}");
        let healed = lab.wait_owner(IpAddr::V4(lb), GENEROUS).unwrap();
        assert_only_owner_answers(&lab, IpAddr::V4(lb), healed);
    }
}

/// UDP payloads from `from` to `to`'s membership port, captured in `to`'s netns.
fn capture_membership(lab: &L2Lab, from: Ipv4Addr, to: usize, want: usize) -> Vec<Vec<u8>> {
    let node = lab.lab().node(to);
    let sock = PacketSocket::open_in(node.ns(), LAN_IFNAME, ETH_P_ALL).unwrap();
    let deadline = Instant::now() + GENEROUS;
    let mut out = Vec::new();
    while out.len() < want {
        let Some(frame) = sock.recv_until(deadline).unwrap() else {
            break;
        };
        if frame.outgoing {
            continue;
        }
        let b = &frame.bytes;
        // Ethernet (14) + IPv4 without options (20) + UDP (8).
        if b.len() < 42 || b[12..14] != [0x08, 0x00] || b[14] != 0x45 || b[23] != 17 {
            continue;
        }
        let src = Ipv4Addr::new(b[26], b[27], b[28], b[29]);
        let dport = u16::from_be_bytes([b[36], b[37]]);
        if src == from && dport == MEMBER_PORT {
            out.push(b[42..].to_vec());
        }
    }
    out
}

/// Sends `payloads` from client `client` to `to`.
fn send_from_client(lab: &L2Lab, client: usize, to: SocketAddr, payloads: &[Vec<u8>]) {
    let c = lab.lab().client(client);
    let sock = c
        .ns()
        .run(|| UdpSocket::bind((c.v4(), 0)))
        .unwrap()
        .unwrap();
    for p in payloads {
        sock.send_to(p, to).unwrap();
    }
}

#[test]
fn forged_and_replayed_membership_datagrams_change_nothing() {
    let mut lab = build_with_manifests("la", TOOLS);
    lab.start_agents()
        .unwrap_or_else(|e| panic!("starting ferrite agents: {e}"));
    assert_bound_by_default(&lab);
    let addr = IpAddr::V4(LB_V4);
    let o = owner(&lab, addr);
    let owner_name = lab.lab().node(o).name.clone();
    let before: Vec<Value> = (0..3).map(|i| lab.view(i).unwrap()).collect();
    let victim = (o + 1) % 3;
    let other = (o + 2) % 3;

    // 1. A LAN host runs a membership member with another key, claiming the owner's name and
    //    every address, seeded with every node.
    let wrong_key = lab.lab().work().join("wrong.key");
    ferrite_lab::l2lab::write_key(&wrong_key).unwrap();
    let client = lab.lab().client(1);
    let peers: Vec<String> = lab
        .lab()
        .nodes()
        .iter()
        .map(|n| format!("{}:{MEMBER_PORT}", n.v4()))
        .collect();
    let mut cmd = client.ns().command(common::FERRITE).unwrap();
    cmd.args(["l2-member", "--name", &owner_name])
        .args(["--bind", &format!("{}:{MEMBER_PORT}", client.v4())])
        .args(["--peers", &peers.join(",")])
        .args(["--eligible", &LB_V4.to_string()])
        .arg("--key-file")
        .arg(&wrong_key)
        .env("FERRITE_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut forger = Child::spawn(&mut cmd).expect("spawn the forging member");

    // 2. Valid datagrams from the owner to `victim`, captured on `victim`'s LAN port, replayed
    //    from the LAN host to `victim` (seen before) and to `other` (meant for someone else).
    let owner_ip = lab.lab().node(o).v4();
    let captured = capture_membership(&lab, owner_ip, victim, 20);
    assert!(
        captured.len() >= 5,
        "captured only {} membership datagrams from {owner_name}",
        captured.len()
    );
    let victim_addr = SocketAddr::new(IpAddr::V4(lab.lab().node(victim).v4()), MEMBER_PORT);
    let other_addr = SocketAddr::new(IpAddr::V4(lab.lab().node(other).v4()), MEMBER_PORT);
    for _ in 0..3 {
        send_from_client(&lab, 0, victim_addr, &captured);
        send_from_client(&lab, 0, other_addr, &captured);
        std::thread::sleep(Duration::from_millis(300));
    }
    std::thread::sleep(Duration::from_secs(1));
    forger.stop(Duration::from_secs(2)).ok();

    // Nothing changed: the same owner answers, every member is still there, with the counters.
    assert_only_owner_answers(&lab, addr, o);
    for (i, was) in before.iter().enumerate() {
        let v = lab.view(i).unwrap();
        assert_eq!(members(&v), members(was), "{v}");
        let e = address_entry(&v, addr).unwrap();
        assert_eq!(e["owner"].as_str(), Some(owner_name.as_str()), "{v}");
        assert!(
            rejected(&v, "bad_mac") > 0,
            "node {i} must count the wrong-key datagrams: {v}"
        );
        eprintln!(
            "{}: refused {}",
            lab.lab().node(i).name,
            membership(&v)["rejected"]
        );
    }
    let v = lab.view(victim).unwrap();
    assert!(
        rejected(&v, "replayed") >= u64::try_from(captured.len()).unwrap(),
        "{v}"
    );
    // Replayed to another member: the MAC covers the destination.
    let v = lab.view(other).unwrap();
    assert!(
        rejected(&v, "bad_mac") >= rejected(&before[other], "bad_mac") + 3,
        "{v}"
    );
    let table = lab.view_table(victim).unwrap();
    assert!(table.contains("replayed"), "{table}");
}

/// As the DaemonSet runs it (`HOST_IP` from `status.hostIP`), membership binds before the
/// node's Node object exists, but nothing is claimed or answered until it does: north-south
/// finds no device to serve (detection needs the Node's InternalIP or a default route).
#[test]
fn agents_bind_from_host_ip_before_their_node_arrives_and_claim_nothing() {
    let mut lab = build_with_manifests("la", TOOLS);
    lab.lab().remove_manifest(NODES_FILE).unwrap();
    lab.start_agents()
        .unwrap_or_else(|e| panic!("starting ferrite agents: {e}"));
    let bound_from_host_ip = |lab: &L2Lab| {
        for (i, node) in lab.lab().nodes().iter().enumerate() {
            let v = lab.view(i).unwrap();
            let m = membership(&v);
            assert_eq!(m["mode"], "bound", "{v}");
            assert_eq!(m["bind_from"], "HOST_IP", "{v}");
            assert_eq!(
                m["bind"].as_str(),
                Some(format!("{}:{MEMBER_PORT}", node.v4()).as_str()),
                "{v}"
            );
        }
    };
    bound_from_host_ip(&lab);
    let status = lab.lab().agent(0).status().unwrap();
    assert_eq!(
        status["datapath"]["devices"],
        serde_json::json!([]),
        "{status}"
    );
    assert_nobody_answers(&lab, IpAddr::V4(LB_V4));
    lab.lab()
        .write_manifest(NODES_FILE, &ferrite_lab::l2lab::nodes_yaml(lab.lab()))
        .unwrap();
    let o = owner(&lab, IpAddr::V4(LB_V4));
    bound_from_host_ip(&lab);
    assert_only_owner_answers(&lab, IpAddr::V4(LB_V4), o);
}

#[test]
fn without_north_south_on_the_interface_nothing_is_answered() {
    let mut lab = build_with_manifests("la", TOOLS);
    // North-south on a device of each node that is not on the LAN (a veth pair inside it).
    for node in lab.lab().nodes() {
        node.ns()
            .ip_run([
                "link", "add", "la-ns0", "type", "veth", "peer", "name", "la-ns1",
            ])
            .unwrap();
        for dev in ["la-ns0", "la-ns1"] {
            node.ns().ip_run(["link", "set", dev, "up"]).unwrap();
        }
    }
    let configs: Vec<_> = (0..3)
        .map(|i| {
            let mut c = lab.agent_config(i);
            c.devices = Some("la-ns0".into());
            c
        })
        .collect();
    lab.lab_mut()
        .start_agents_each(|i, _| configs[i].clone())
        .unwrap_or_else(|e| panic!("starting ferrite agents: {e}"));
    let _ = ferrite_lab::wait_until(GENEROUS, Duration::from_millis(100), || {
        (0..3).all(|i| {
            lab.view(i).is_ok_and(|v| {
                members(&v).len() == 3 && address_entry(&v, IpAddr::V4(LB_V4)).is_some()
            })
        })
    });
    for i in 0..3 {
        let v = lab.view(i).unwrap();
        let e = address_entry(&v, IpAddr::V4(LB_V4)).unwrap_or_else(|| panic!("{v}"));
        assert_eq!(e["eligible"].as_bool(), Some(false), "{v}");
        assert!(e["owner"].is_null(), "{v}");
        let reason = e["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains("no north-south datapath on eth0"),
            "the view must say why: {v}"
        );
    }
    assert_nobody_answers(&lab, IpAddr::V4(LB_V4));
}
