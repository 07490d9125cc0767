//! Shared helpers of the L2 announcement tests (`l2_announce.rs`, `l2_policy.rs`): building the three-node lab with the `web` service and the L2 policy, the
//! elected owner, and what clients on the LAN hear (`arping`, `ndisc6`, raw solicitations) and
//! get served.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::{FERRITE, lab_bin, require_root};
use ferrite_lab::l2lab::{L2Lab, LB_V4, LB_V6, POLICY_INTERFACES, address_entry};
use ferrite_lab::l2raw::{ETH_P_ALL, PacketSocket, solicit};
use ferrite_lab::manifest::l2_policy_yaml;
use ferrite_lab::nslab::LAN_IFNAME;
use ferrite_lab::probe::Proto;
use ferrite_lab::raw::Mac;
use ferrite_lab::{AgentConfig, NsService, SvcEndpoint};

/// What the tests assert on failover: far above the design target (about 1 s), so slow CI
/// does not flake.
pub const GENEROUS: Duration = Duration::from_secs(5);
pub const WEB_FILE: &str = "web.yaml";
pub const POLICY_FILE: &str = "l2-policy.yaml";

pub fn cluster_ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 96, 0, last)
}

/// The three-node L2 lab, after checking that `tools` are installed.
pub fn build(prefix: &str, tools: &[&str]) -> L2Lab {
    build_with(prefix, tools, &[])
}

/// [`build`] with `extra` agent flags (e.g. `--tc-attach legacy`).
pub fn build_with(prefix: &str, tools: &[&str], extra: &[&str]) -> L2Lab {
    require_root();
    for tool in tools {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "{tool} not found: run `make setup` (apt-get install {tool})"
        );
    }
    let mut base = AgentConfig::new(Path::new(FERRITE));
    "info".clone_into(&mut base.log_level);
    base.extra_args = extra.iter().map(|s| (*s).to_string()).collect();
    L2Lab::build(prefix, 3, 1, base, &lab_bin())
        .unwrap_or_else(|e| panic!("building the L2 lab: {e}"))
}

/// Every pod of every node as an endpoint.
pub fn all_endpoints(lab: &L2Lab) -> Vec<SvcEndpoint> {
    lab.lab()
        .nodes()
        .iter()
        .flat_map(|n| (0..n.pods.pods().len()).map(move |i| SvcEndpoint::new(n.pod_v4(i), &n.name)))
        .collect()
}

/// The `web` service: LB IPs 192.168.50.200 and fd00:50::200, externalTrafficPolicy Cluster,
/// every pod.
pub fn web(lab: &L2Lab) -> NsService {
    let mut web = NsService::load_balancer("web", cluster_ip(10), IpAddr::V4(LB_V4), 30080);
    web.lb_ips.push(IpAddr::V6(LB_V6));
    web.endpoints = all_endpoints(lab);
    web
}

/// The lab with the `web` service and the L2 policy written, agents not started yet.
pub fn build_with_manifests(prefix: &str, tools: &[&str]) -> L2Lab {
    manifests_with(prefix, tools, &[])
}

fn manifests_with(prefix: &str, tools: &[&str], extra: &[&str]) -> L2Lab {
    let lab = build_with(prefix, tools, extra);
    lab.lab()
        .write_manifest(WEB_FILE, &web(&lab).to_yaml())
        .unwrap();
    lab.lab()
        .write_manifest(POLICY_FILE, &l2_policy_yaml("lan", &[POLICY_INTERFACES]))
        .unwrap();
    lab
}

/// The `web` service and the L2 policy, then the agents.
pub fn start(prefix: &str) -> L2Lab {
    start_with(prefix, &[])
}

/// [`start`] with `extra` agent flags.
pub fn start_with(prefix: &str, extra: &[&str]) -> L2Lab {
    let mut lab = manifests_with(prefix, &["arping", "ndisc6"], extra);
    if let Err(e) = lab.start_agents() {
        panic!("starting ferrite agents: {e}");
    }
    lab
}

pub fn owner(lab: &L2Lab, addr: IpAddr) -> usize {
    lab.wait_owner(addr, Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("{e}{}", lab.lab().agent_logs(30)))
}

/// `arping -d` from client `client`: the MACs of the replies, and whether arping saw replies
/// from two different MACs.
pub fn arping(lab: &L2Lab, client: usize, target: Ipv4Addr, count: u32) -> (Vec<String>, String) {
    let mut cmd = lab.lab().client(client).ns().command("arping").unwrap();
    cmd.args([
        "-d",
        "-c",
        &count.to_string(),
        "-W",
        "0.2",
        "-i",
        LAN_IFNAME,
    ])
    .arg(target.to_string());
    let out = cmd.output().expect("running arping");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let macs = text
        .lines()
        .filter_map(|l| {
            let (_, rest) = l.split_once(" bytes from ")?;
            Some(rest.split_whitespace().next()?.to_ascii_lowercase())
        })
        .collect();
    (macs, text)
}

/// `ndisc6 -m` from client `client`: every link-layer address that answered.
pub fn ndisc6(lab: &L2Lab, client: usize, target: IpAddr) -> (Vec<String>, String) {
    let mut cmd = lab.lab().client(client).ns().command("ndisc6").unwrap();
    cmd.args(["-m", "-n", "-r", "2", "-w", "400"])
        .arg(target.to_string())
        .arg(LAN_IFNAME);
    let out = cmd.output().expect("running ndisc6");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let macs = text
        .lines()
        .filter_map(|l| l.strip_prefix("Target link-layer address: "))
        .map(|m| m.trim().to_ascii_lowercase())
        .collect();
    (macs, text)
}

/// Replies to `rounds` requests from client `client`, each collected for 300 ms: the MACs of
/// each request's replies.
pub fn solicit_rounds(lab: &L2Lab, client: usize, target: IpAddr, rounds: usize) -> Vec<Vec<Mac>> {
    let c = lab.lab().client(client);
    let sock = PacketSocket::open_in(c.ns(), LAN_IFNAME, ETH_P_ALL).unwrap();
    let src = if target.is_ipv4() {
        IpAddr::V4(c.v4())
    } else {
        IpAddr::V6(c.v6())
    };
    (0..rounds)
        .map(|_| {
            let answers = solicit(&sock, src, target, Duration::from_millis(300)).unwrap();
            for a in &answers {
                assert!(a.well_formed, "ill-formed answer for {target}: {a:?}");
                if target.is_ipv6() {
                    assert!(
                        a.override_flag,
                        "a solicited NA for an announced address must override: {a:?}"
                    );
                }
            }
            answers.iter().map(|a| a.mac).collect()
        })
        .collect()
}

pub fn mac_string(lab: &L2Lab, node: usize) -> String {
    lab.mac(node).unwrap().to_string()
}

/// Exactly one answer per request, from `owner`'s eth0 MAC: through arping/ndisc6 and through
/// raw requests that collect every reply.
pub fn assert_only_owner_answers(lab: &L2Lab, addr: IpAddr, owner: usize) {
    let want = mac_string(lab, owner);
    let who = &lab.lab().node(owner).name;
    match addr {
        IpAddr::V4(v4) => {
            let (macs, text) = arping(lab, 0, v4, 3);
            assert_eq!(
                macs,
                vec![want.clone(); 3],
                "arping {v4}: want 3 replies from {who} ({want})\n{text}"
            );
            assert!(
                text.contains("(0 extra)"),
                "arping saw extra replies:\n{text}"
            );
        }
        IpAddr::V6(_) => {
            let (macs, text) = ndisc6(lab, 0, addr);
            assert_eq!(
                macs,
                vec![want.clone()],
                "ndisc6 {addr}: want one answer from {who} ({want})\n{text}"
            );
        }
    }
    for (i, macs) in solicit_rounds(lab, 1, addr, 5).iter().enumerate() {
        assert_eq!(
            macs.iter().map(ToString::to_string).collect::<Vec<_>>(),
            vec![want.clone()],
            "request {i} for {addr}: want exactly one reply, from {who}{}",
            lab.lab().agent_logs(20)
        );
    }
}

/// Node names and MACs, for messages.
pub fn macs(lab: &L2Lab) -> String {
    (0..lab.lab().nodes().len())
        .map(|i| format!("{}={}", lab.lab().node(i).name, mac_string(lab, i)))
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn assert_nobody_answers(lab: &L2Lab, addr: IpAddr) {
    let macs = macs(lab);
    match addr {
        IpAddr::V4(v4) => {
            let (got, text) = arping(lab, 0, v4, 2);
            assert!(
                got.is_empty(),
                "arping {v4} (announced by nobody) got replies ({macs}):\n{text}"
            );
        }
        IpAddr::V6(_) => {
            let (got, text) = ndisc6(lab, 0, addr);
            assert!(
                got.is_empty(),
                "ndisc6 {addr} (announced by nobody) got answers ({macs}):\n{text}"
            );
        }
    }
    for got in solicit_rounds(lab, 1, addr, 3) {
        assert!(
            got.is_empty(),
            "{addr} is announced by nobody, yet {got:?} answered ({macs})"
        );
    }
}

/// The owner's entry says which interface; the others name the same owner and no interface.
pub fn assert_views(lab: &L2Lab, addr: IpAddr, owner: usize) {
    let owner_name = lab.lab().node(owner).name.clone();
    for i in 0..lab.lab().nodes().len() {
        let v = lab.view(i).unwrap();
        let e = address_entry(&v, addr).unwrap_or_else(|| panic!("{addr} missing from {v}"));
        assert_eq!(e["owner"].as_str(), Some(owner_name.as_str()), "{v}");
        assert_eq!(e["service"].as_str(), Some("test/web"), "{v}");
        if i == owner {
            assert_eq!(e["interface"].as_str(), Some(LAN_IFNAME), "{v}");
            assert!(e["since_unix_ms"].as_u64().is_some(), "{v}");
        } else {
            assert!(e["interface"].is_null(), "{v}");
        }
        assert_eq!(e["eligible"].as_bool(), Some(true), "{v}");
        let members: BTreeSet<&str> = v["members"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m.as_str())
            .collect();
        assert_eq!(members, BTreeSet::from(["node1", "node2", "node3"]), "{v}");
    }
}

/// Requests through `addr:80` answered by backends on every node (externalTrafficPolicy
/// Cluster), the client resolving the address on-link.
pub fn assert_served_by_all_nodes(lab: &L2Lab, addr: IpAddr) {
    let target = SocketAddr::new(addr, 80);
    let r = lab.lab().attempts(0, target, Proto::Tcp, 30, 1000).unwrap();
    assert_eq!(r.ok, 30, "{r:?}{}", lab.lab().agent_logs(20));
    for node in lab.lab().nodes() {
        assert!(
            !r.names_starting_with(&format!("{}-", node.name)).is_empty(),
            "no backend on {} answered through {target}: {r:?}",
            node.name
        );
    }
}
