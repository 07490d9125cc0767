//! L2 announcements end to end, as root: three node netns on a LAN bridge, each running
//! `ferrite agent --devices eth0 --l2-bind NODE:7946 --l2-peers OTHERS`, pods behind every node,
//! and two client netns on the LAN with no route for the `LoadBalancer` IPs (192.168.50.200,
//! fd00:50::200 are on the LAN subnet): clients must resolve them with ARP / neighbor discovery
//! and exactly one node, the elected owner, must answer with its own MAC.
//!
//! A few failover trials run here with a generous bound; `ferrite-lab bench --sections l2`
//! runs the ≥ 20-trial distribution. Trials are printed and written to
//! `$CARGO_TARGET_TMPDIR/l2_announce_failover.json`.
//!
//! Run as root: `cargo test --test l2_announce -- --nocapture`.

mod common;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{FERRITE, lab_bin, require_root};
use ferrite_lab::l2lab::{
    Fault, L2Lab, LB_V4, LB_V6, POLICY_INTERFACES, Trial, TrialTiming, UNOWNED_V4, UNOWNED_V6,
    address_entry,
};
use ferrite_lab::l2raw::{
    AnswerKind, ETH_P_ALL, L2Aim, PacketSocket, Watch, send_catalog, solicit,
};
use ferrite_lab::manifest::l2_policy_yaml;
use ferrite_lab::nslab::LAN_IFNAME;
use ferrite_lab::probe::Proto;
use ferrite_lab::raw::Mac;
use ferrite_lab::{AgentConfig, Ns, NsService, SvcEndpoint, wait_until};

/// What the tests assert on failover: far above the design target (about 1 s), so slow CI
/// does not flake.
const GENEROUS: Duration = Duration::from_secs(5);
/// Longest time without a successful request while a fault heals: a node coming back holds
/// its claims until membership synced (a round trip, or the 1 s hold-down), while the interim
/// owner keeps serving; nothing may stop for longer.
const HEAL_GAP_MS: f64 = 1000.0;
const WEB_FILE: &str = "web.yaml";
const POLICY_FILE: &str = "l2-policy.yaml";
/// The externalTrafficPolicy Local service's address.
const LOCAL_V4: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 210);

fn cluster_ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 96, 0, last)
}

fn build(prefix: &str) -> L2Lab {
    require_root();
    for tool in ["arping", "ndisc6"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "{tool} not found: run `make setup` (apt-get install arping ndisc6)"
        );
    }
    let mut base = AgentConfig::new(Path::new(FERRITE));
    "info".clone_into(&mut base.log_level);
    L2Lab::build(prefix, 3, 1, base, &lab_bin())
        .unwrap_or_else(|e| panic!("building the L2 lab: {e}"))
}

/// Every pod of every node as an endpoint.
fn all_endpoints(lab: &L2Lab) -> Vec<SvcEndpoint> {
    lab.lab()
        .nodes()
        .iter()
        .flat_map(|n| (0..n.pods.pods().len()).map(move |i| SvcEndpoint::new(n.pod_v4(i), &n.name)))
        .collect()
}

/// The `web` service: LB IPs 192.168.50.200 and fd00:50::200, externalTrafficPolicy Cluster,
/// every pod.
fn web(lab: &L2Lab) -> NsService {
    let mut web = NsService::load_balancer("web", cluster_ip(10), IpAddr::V4(LB_V4), 30080);
    web.lb_ips.push(IpAddr::V6(LB_V6));
    web.endpoints = all_endpoints(lab);
    web
}

/// The `web` service and the L2 policy, then the agents.
fn start(prefix: &str) -> L2Lab {
    let mut lab = build(prefix);
    lab.lab()
        .write_manifest(WEB_FILE, &web(&lab).to_yaml())
        .unwrap();
    lab.lab()
        .write_manifest(POLICY_FILE, &l2_policy_yaml("lan", &[POLICY_INTERFACES]))
        .unwrap();
    if let Err(e) = lab.start_agents() {
        panic!("starting ferrite agents: {e}");
    }
    lab
}

fn owner(lab: &L2Lab, addr: IpAddr) -> usize {
    lab.wait_owner(addr, Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("{e}{}", lab.lab().agent_logs(30)))
}

/// `arping -d` from client `client`: the MACs of the replies, and whether arping saw replies
/// from two different MACs.
fn arping(lab: &L2Lab, client: usize, target: Ipv4Addr, count: u32) -> (Vec<String>, String) {
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
fn ndisc6(lab: &L2Lab, client: usize, target: IpAddr) -> (Vec<String>, String) {
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
fn solicit_rounds(lab: &L2Lab, client: usize, target: IpAddr, rounds: usize) -> Vec<Vec<Mac>> {
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

fn mac_string(lab: &L2Lab, node: usize) -> String {
    lab.mac(node).unwrap().to_string()
}

/// Exactly one answer per request, from `owner`'s eth0 MAC: through arping/ndisc6 and through
/// raw requests that collect every reply.
fn assert_only_owner_answers(lab: &L2Lab, addr: IpAddr, owner: usize) {
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
fn macs(lab: &L2Lab) -> String {
    (0..lab.lab().nodes().len())
        .map(|i| format!("{}={}", lab.lab().node(i).name, mac_string(lab, i)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn assert_nobody_answers(lab: &L2Lab, addr: IpAddr) {
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
fn assert_views(lab: &L2Lab, addr: IpAddr, owner: usize) {
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
fn assert_served_by_all_nodes(lab: &L2Lab, addr: IpAddr) {
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

#[test]
fn the_elected_owner_alone_answers_arp_and_ndp_with_its_mac() {
    let lab = start("l2o");
    let o4 = owner(&lab, IpAddr::V4(LB_V4));
    let o6 = owner(&lab, IpAddr::V6(LB_V6));
    assert_views(&lab, IpAddr::V4(LB_V4), o4);
    assert_views(&lab, IpAddr::V6(LB_V6), o6);
    assert_only_owner_answers(&lab, IpAddr::V4(LB_V4), o4);
    assert_only_owner_answers(&lab, IpAddr::V6(LB_V6), o6);
    assert_nobody_answers(&lab, IpAddr::V4(UNOWNED_V4));
    assert_nobody_answers(&lab, IpAddr::V6(UNOWNED_V6));

    // The client has no route for the address: it resolved it on-link, to the owner.
    assert_served_by_all_nodes(&lab, IpAddr::V4(LB_V4));
    let neigh = lab.client_neighbor(0, IpAddr::V4(LB_V4)).unwrap();
    assert!(
        neigh
            .as_deref()
            .is_some_and(|n| n.starts_with(&mac_string(&lab, o4))),
        "client's neighbor entry for {LB_V4}: {neigh:?}, owner MAC {}",
        mac_string(&lab, o4)
    );

    // Without the policy nobody announces: the owner stops answering.
    lab.lab().remove_manifest(POLICY_FILE).unwrap();
    let gone = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        (0..3).all(|i| {
            lab.view(i)
                .is_ok_and(|v| v["addresses"].as_array().is_some_and(Vec::is_empty))
        })
    });
    assert!(
        gone.is_ok(),
        "addresses still listed without a policy{}",
        lab.lab().agent_logs(20)
    );
    assert_nobody_answers(&lab, IpAddr::V4(LB_V4));
    assert_nobody_answers(&lab, IpAddr::V6(LB_V6));
    // And with it back, the same owner announces again.
    lab.lab()
        .write_manifest(POLICY_FILE, &l2_policy_yaml("lan", &[POLICY_INTERFACES]))
        .unwrap();
    assert_eq!(owner(&lab, IpAddr::V4(LB_V4)), o4);
    assert_only_owner_answers(&lab, IpAddr::V4(LB_V4), o4);
}

fn write_trials(trials: &[Trial]) {
    let json = serde_json::to_string_pretty(trials).unwrap();
    println!("{json}");
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("l2_announce_failover.json");
    if let Err(e) = std::fs::write(&path, &json) {
        eprintln!("writing {}: {e}", path.display());
    }
}

/// What a failover trial got wrong, if anything.
fn trial_problems(lab: &L2Lab, t: &Trial) -> Vec<String> {
    let fault = t.fault;
    let mut problems = Vec::new();
    let bound = GENEROUS.as_secs_f64() * 1e3;
    match &t.new_owner {
        Some(n) if *n != t.old_owner => {}
        other => problems.push(format!("{fault}: no new owner ({other:?})")),
    }
    if !t.takeover_by_new_owner {
        problems.push(format!(
            "{fault}: the first other MAC to claim {LB_V4} is not the new owner's"
        ));
    }
    if !t.reply_ms.is_some_and(|ms| ms <= bound) {
        problems.push(format!(
            "{fault}: new owner's first ARP reply {:?} ms (bound {bound})",
            t.reply_ms
        ));
    }
    if !t.outage_ms.is_some_and(|ms| ms <= bound) {
        problems.push(format!(
            "{fault}: requests stopped for {:?} ms (bound {bound})",
            t.outage_ms
        ));
    }
    if !t.heal_outage_ms.is_some_and(|ms| ms <= HEAL_GAP_MS) {
        problems.push(format!(
            "{fault}: after healing, requests stopped for {:?} ms (bound {HEAL_GAP_MS} ms)",
            t.heal_outage_ms
        ));
    }
    if t.double_answers > 0 {
        problems.push(format!(
            "{fault}: {} ARP requests answered by two MACs",
            t.double_answers
        ));
    }
    // A node back from isolation, a restarted or a resumed agent holds its claims until
    // membership synced with a peer, so no probe is ever answered by two MACs.
    if t.heal_double_answers > 0 {
        problems.push(format!(
            "{fault}: {} ARP requests answered by two MACs while healing (over {:?} ms)",
            t.heal_double_answers, t.heal_double_answer_span_ms
        ));
    }
    if let Some(entry) = &t.client_not_following_after_heal {
        problems.push(format!(
            "{fault}: after healing {:?} owns {LB_V4} again, but the client still sends to {entry} \
             (the returning owner did not announce itself)",
            t.healed_owner
        ));
    }
    if fault == Fault::LinkDown && !t.first_ok_ms.is_some_and(|ms| ms <= bound) {
        problems.push(format!(
            "{fault}: first request after the fault answered at {:?} ms",
            t.first_ok_ms
        ));
    }
    let new_mac = t
        .new_owner
        .as_deref()
        .and_then(|n| lab.node_index(n))
        .map(|i| mac_string(lab, i));
    if !t
        .client_neighbor
        .as_deref()
        .is_some_and(|n| new_mac.as_deref().is_some_and(|m| n.starts_with(m)))
    {
        problems.push(format!(
            "{fault}: the client's neighbor entry {:?} is not the new owner's MAC {new_mac:?}",
            t.client_neighbor
        ));
    }
    problems
}

#[test]
fn requests_survive_kill_stop_and_link_down_of_the_owner() {
    let mut lab = start("l2f");
    let first = owner(&lab, IpAddr::V4(LB_V4));
    assert_served_by_all_nodes(&lab, IpAddr::V4(LB_V4));
    // Pods on the node that is going to be broken would turn requests balanced to them into
    // failures that have nothing to do with the announcement: serve from the others.
    lab.serve_without(WEB_FILE, &web(&lab), first, 80)
        .unwrap_or_else(|e| panic!("{e}{}", lab.lab().agent_logs(20)));
    let timing = TrialTiming::default();
    let mut trials = Vec::new();
    let mut problems = Vec::new();
    for fault in Fault::ALL {
        let t = lab
            .trial(LB_V4, 80, fault, &timing)
            .unwrap_or_else(|e| panic!("{fault} trial: {e}{}", lab.lab().agent_logs(40)));
        eprintln!(
            "{fault}: {} → {:?}: first reply from the new owner {:?} ms, announcement {:?} ms, \
             outage {:?} ms, old owner's last reply {:?} ms, double answers {} / {} (heal)",
            t.old_owner,
            t.new_owner,
            t.reply_ms,
            t.announce_ms,
            t.outage_ms,
            t.old_last_reply_ms,
            t.double_answers,
            t.heal_double_answers
        );
        problems.extend(trial_problems(&lab, &t));
        trials.push(t);
    }
    write_trials(&trials);
    assert!(
        problems.is_empty(),
        "{}{}",
        problems.join("\n"),
        lab.lab().agent_logs(40)
    );
}

/// Three agents starting at once each see only themselves at first; once they agree, the last
/// word on the wire (announcements) and the clients' caches must be the owner's. The same when
/// a node that does not own the address restarts its agent.
#[test]
fn starting_agents_leave_clients_with_the_owner() {
    let mut lab = build("l2s");
    lab.lab()
        .write_manifest(WEB_FILE, &web(&lab).to_yaml())
        .unwrap();
    lab.lab()
        .write_manifest(POLICY_FILE, &l2_policy_yaml("lan", &[POLICY_INTERFACES]))
        .unwrap();
    let (c_ns, c_v4) = (lab.lab().client(1).ns().clone(), lab.lab().client(1).v4());
    let watch = Watch::start(
        &c_ns,
        LAN_IFNAME,
        IpAddr::V4(c_v4),
        IpAddr::V4(LB_V4),
        Duration::from_millis(20),
    )
    .unwrap();
    let t0 = Instant::now();
    if let Err(e) = lab.start_agents() {
        panic!("starting ferrite agents: {e}");
    }
    let o = owner(&lab, IpAddr::V4(LB_V4));
    // Make client1 resolve the address now, then leave time for any late announcement.
    assert_served_by_all_nodes(&lab, IpAddr::V4(LB_V4));
    std::thread::sleep(Duration::from_secs(3));
    let log = watch.stop().unwrap();
    let owner_mac = lab.mac(o).unwrap();
    let announcements: Vec<String> = log
        .answers
        .iter()
        .filter(|s| s.answer.kind == AnswerKind::Announcement)
        .map(|s| format!("{:.0} ms {}", (s.at - t0).as_secs_f64() * 1e3, s.answer.mac))
        .collect();
    let span = log.double_answered_span(t0, Instant::now());
    eprintln!(
        "startup: owner {} ({owner_mac}); announcements {announcements:?}; {} polls answered by two MACs over {span:?}",
        lab.lab().node(o).name,
        log.double_answered(t0, Instant::now())
    );
    let last = log
        .answers
        .iter()
        .rev()
        .find(|s| s.answer.kind == AnswerKind::Announcement)
        .expect("no announcement at all");
    assert_eq!(
        last.answer.mac,
        owner_mac,
        "the last announcement came from a node that does not own {LB_V4}: {announcements:?} ({})",
        macs(&lab)
    );
    let neigh = lab.client_neighbor(0, IpAddr::V4(LB_V4)).unwrap();
    assert!(
        neigh
            .as_deref()
            .is_some_and(|n| n.starts_with(&owner_mac.to_string())),
        "client1 sends to {neigh:?}, not to the owner {owner_mac}; announcements {announcements:?} ({})",
        macs(&lab)
    );
    // Starting agents hold their claims until membership synced: never two answers.
    assert_eq!(
        log.double_answered(t0, Instant::now()),
        0,
        "two MACs answered for {span:?} at startup"
    );

    assert_restart_keeps_clients(&mut lab, o, &c_ns, c_v4);
}

/// Restarts the agent of a node that does not own `LB_V4` (the owner is `o`) while client2
/// watches: client1 must still send to the owner afterwards.
fn assert_restart_keeps_clients(lab: &mut L2Lab, o: usize, c_ns: &Ns, c_v4: Ipv4Addr) {
    let owner_mac = lab.mac(o).unwrap();
    let other = (o + 1) % 3;
    let other_mac = lab.mac(other).unwrap();
    let watch = Watch::start(
        c_ns,
        LAN_IFNAME,
        IpAddr::V4(c_v4),
        IpAddr::V4(LB_V4),
        Duration::from_millis(20),
    )
    .unwrap();
    let t1 = Instant::now();
    lab.restart_agent(other).unwrap();
    assert_eq!(owner(lab, IpAddr::V4(LB_V4)), o);
    std::thread::sleep(Duration::from_secs(2));
    let log = watch.stop().unwrap();
    let from_other: Vec<String> = log
        .answers
        .iter()
        .filter(|s| s.answer.mac == other_mac)
        .map(|s| {
            format!(
                "{:.0} ms {:?}",
                (s.at - t1).as_secs_f64() * 1e3,
                s.answer.kind
            )
        })
        .collect();
    eprintln!(
        "restart of {}: its frames claiming {LB_V4}: {from_other:?}",
        lab.lab().node(other).name
    );
    let neigh = lab.client_neighbor(0, IpAddr::V4(LB_V4)).unwrap();
    assert!(
        neigh
            .as_deref()
            .is_some_and(|n| n.starts_with(&owner_mac.to_string())),
        "after {} (not the owner) restarted, client1 sends to {neigh:?} instead of the owner {owner_mac}: \
         the restarting agent claimed {LB_V4} with {from_other:?} ({})",
        lab.lab().node(other).name,
        macs(lab)
    );
}

#[test]
fn external_traffic_policy_local_moves_the_address_to_nodes_with_endpoints() {
    let lab = start("l2l");
    let nodes = lab.lab().nodes();
    let mut local = NsService::load_balancer("local", cluster_ip(11), IpAddr::V4(LOCAL_V4), 31080);
    local.local = true;
    local.endpoints = vec![SvcEndpoint::new(nodes[2].pod_v4(0), "node3")];
    lab.lab()
        .write_manifest("local.yaml", &local.to_yaml())
        .unwrap();
    let addr = IpAddr::V4(LOCAL_V4);
    // Only the node with a ready local endpoint is eligible, and it owns the address.
    let settled = |want: usize| -> Result<(), String> {
        let o = lab.agreed_owner(addr)?;
        if o != want {
            return Err(format!("owner is node{}", o + 1));
        }
        for i in 0..3 {
            let v = lab.view(i).map_err(|e| e.to_string())?;
            let e = address_entry(&v, addr).ok_or_else(|| format!("{addr} not in {v}"))?;
            if e["eligible"].as_bool() != Some(i == want) {
                return Err(format!("node{}: {v}", i + 1));
            }
        }
        Ok(())
    };
    let check = |want: usize| {
        let mut last = Err(String::new());
        let moved = wait_until(Duration::from_secs(15), Duration::from_millis(50), || {
            last = settled(want);
            last.is_ok()
        });
        assert!(
            moved.is_ok(),
            "node{} never became the only eligible node and the owner of {addr}: {last:?}{}",
            want + 1,
            lab.lab().agent_logs(20)
        );
        let (macs, text) = arping(&lab, 0, LOCAL_V4, 3);
        assert_eq!(macs, vec![mac_string(&lab, want); 3], "{text}");
        // Only the local backend, with the client's own address.
        let r = lab
            .lab()
            .attempts(0, SocketAddr::new(addr, 80), Proto::Tcp, 10, 1000)
            .unwrap();
        let pod = format!("node{}-pod-1", want + 1);
        assert_eq!(
            r.names.get(&pod),
            Some(&10),
            "{r:?}{}",
            lab.lab().agent_logs(20)
        );
        assert_eq!(
            r.all_peers_seen(),
            BTreeSet::from([lab.lab().client(0).v4().to_string().as_str()]),
            "{r:?}"
        );
    };
    check(2);
    // Move the endpoint to node2: node3 loses eligibility, node2 takes the address.
    local.endpoints = vec![SvcEndpoint::new(nodes[1].pod_v4(0), "node2")];
    lab.lab()
        .write_manifest("local.yaml", &local.to_yaml())
        .unwrap();
    check(1);
}

#[test]
fn malformed_arp_and_ndp_frames_are_never_answered() {
    let lab = start("l2m");
    let mut report = Vec::new();
    for addr in [IpAddr::V4(LB_V4), IpAddr::V6(LB_V6)] {
        let o = owner(&lab, addr);
        let c = lab.lab().client(0);
        let aim = L2Aim {
            src: if addr.is_ipv4() {
                IpAddr::V4(c.v4())
            } else {
                IpAddr::V6(c.v6())
            },
            target: addr,
            owner_mac: lab.mac(o).unwrap(),
        };
        let r = send_catalog(c.ns(), LAN_IFNAME, &aim, 3, Duration::from_millis(25)).unwrap();
        eprintln!(
            "{addr}: {} kinds sent; arguable ones answered: {:?}",
            r.sent.len(),
            r.either_answered()
        );
        assert!(r.failed.is_empty(), "sends failed: {:?}", r.failed);
        assert_eq!(
            r.missing_answers(),
            Vec::<&str>::new(),
            "controls unanswered: {r:?}"
        );
        report.push(format!(
            "{addr}: wrongly answered {:?}, ill-formed answers {:?}, stray answers {}",
            r.wrongly_answered(),
            r.ill_formed_answers,
            r.stray_answers
        ));
        if !r.wrongly_answered().is_empty() || !r.ill_formed_answers.is_empty() {
            report.push(format!("full report for {addr}: {r:?}"));
        }
    }
    // Nothing crashed: every agent runs and agrees, and the owners still answer exactly once.
    let mut lab = lab;
    for i in 0..3 {
        assert!(
            lab.lab_mut().agent_mut(i).running(),
            "agent on node{} exited{}",
            i + 1,
            lab.lab().agent_logs(40)
        );
    }
    let o4 = owner(&lab, IpAddr::V4(LB_V4));
    let o6 = owner(&lab, IpAddr::V6(LB_V6));
    assert_only_owner_answers(&lab, IpAddr::V4(LB_V4), o4);
    assert_only_owner_answers(&lab, IpAddr::V6(LB_V6), o6);
    assert_served_by_all_nodes(&lab, IpAddr::V4(LB_V4));
    let bad: Vec<&String> = report
        .iter()
        .filter(|l| !l.contains("wrongly answered [], ill-formed answers {}"))
        .collect();
    assert!(bad.is_empty(), "{}", report.join("\n"));
}
