//! L2 announcements end to end, as root: three node netns on a LAN bridge, each running
//! `ferrite agent --devices eth0` (L2 membership bound to the Node's InternalIP by default, the
//! lab's shared key file), pods behind every node,
//! and two client netns on the LAN with no route for the `LoadBalancer` IPs (192.168.50.200,
//! fd00:50::200 are on the LAN subnet): clients must resolve them with ARP / neighbor discovery
//! and exactly one node, the elected owner, must answer with its own MAC.
//!
//! A few failover trials run here with a generous bound; `ferrite-lab bench --sections l2`
//! runs the ≥ 20-trial distribution. Trials are printed and written to
//! `$CARGO_TARGET_TMPDIR/l2_announce_failover.json`.
//!
//! The lab, the `web` service and what clients hear are in `l2_common/mod.rs`.
//!
//! Run as root: `cargo test --test l2_announce -- --nocapture`.

mod common;
mod l2_common;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use ferrite_lab::l2lab::{
    Fault, L2Lab, LB_V4, LB_V6, POLICY_INTERFACES, Trial, TrialTiming, UNOWNED_V4, UNOWNED_V6,
    address_entry,
};
use ferrite_lab::l2raw::{AnswerKind, L2Aim, Watch, send_catalog};
use ferrite_lab::manifest::l2_policy_yaml;
use ferrite_lab::nslab::LAN_IFNAME;
use ferrite_lab::probe::Proto;
use ferrite_lab::{Ns, NsService, SvcEndpoint, wait_until};
use l2_common::{
    GENEROUS, POLICY_FILE, WEB_FILE, arping, assert_nobody_answers, assert_only_owner_answers,
    assert_served_by_all_nodes, assert_views, build_with_manifests, cluster_ip, mac_string, macs,
    owner, start, start_with, web,
};
use serde_json::Value;

/// Longest time without a successful request while a fault heals: a node coming back holds
/// its claims until membership synced (a round trip, or the 1 s hold-down), while the interim
/// owner keeps serving; nothing may stop for longer.
const HEAL_GAP_MS: f64 = 1000.0;
/// The externalTrafficPolicy Local service's address.
const LOCAL_V4: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 210);
/// Tools the clients use.
const TOOLS: &[&str] = &["arping", "ndisc6"];

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
    assert_answers_are_flows(&lab, IpAddr::V4(LB_V4), o4, "ARP");
    assert_answers_are_flows(&lab, IpAddr::V6(LB_V6), o6, "NDP");
    // Becoming the owner is an `l2` takeover flow on the owner.
    for (addr, o) in [(IpAddr::V4(LB_V4), o4), (IpAddr::V6(LB_V6), o6)] {
        let takeovers = takeover_flows(&lab, o, addr);
        assert!(
            takeovers.iter().any(|f| f["interface"] == LAN_IFNAME),
            "no takeover flow for {addr} on its owner: {takeovers:?}"
        );
    }

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

/// The answers just sent are `l2` flows in `ferrite observe` on the owner (asker, address,
/// interface), and on no other node.
fn assert_answers_are_flows(lab: &L2Lab, addr: IpAddr, owner: usize, protocol: &str) {
    let to = addr.to_string();
    let flows_of = |i: usize| -> Vec<Value> {
        let out = lab
            .lab()
            .agent(i)
            .cli(&["observe", "-o", "json", "--type", "l2", "--to-ip", &to])
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let clients: Vec<String> = (0..2)
        .flat_map(|c| {
            let client = lab.lab().client(c);
            [client.v4().to_string(), client.v6().to_string()]
        })
        .collect();
    let flows = flows_of(owner);
    assert!(
        flows.iter().any(|f| f["protocol"] == protocol
            && f["verdict"] == "FORWARDED"
            && f["interface"] == LAN_IFNAME
            // ndisc6 may ask from the client's link-local address.
            && f["source_ip"]
                .as_str()
                .is_some_and(|s| clients.iter().any(|c| c == s) || s.starts_with("fe80:"))),
        "no {protocol} answer for {addr} to a client in the owner's flows: {flows:?}"
    );
    // Answers only: a node that held the address for a moment at start (before membership had
    // synced, up to `--l2-claim-hold-ms`) keeps its takeover event, which is not an answer.
    for other in (0..3).filter(|i| *i != owner) {
        let f: Vec<Value> = flows_of(other)
            .into_iter()
            .filter(|f| f["l2_event"] != "takeover")
            .collect();
        assert!(f.is_empty(), "node{} answered {addr}? {f:?}", other + 1);
    }
}

/// The `l2` flows of node `i` that say it took `addr` over (`l2_event: takeover`).
fn takeover_flows(lab: &L2Lab, i: usize, addr: IpAddr) -> Vec<Value> {
    let to = addr.to_string();
    let out = lab
        .lab()
        .agent(i)
        .cli(&[
            "observe", "-o", "json", "--type", "l2", "--to-ip", &to, "--last", "10000",
        ])
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|f| f["l2_event"] == "takeover")
        .collect()
}

/// The new owner of a trial has a takeover flow naming the old owner.
fn takeover_flow_problem(lab: &L2Lab, t: &Trial) -> Option<String> {
    let new = t.new_owner.as_deref()?;
    let Some(i) = (0..3).find(|i| lab.lab().node(*i).name == new) else {
        return Some(format!("{}: no node named {new}", t.fault));
    };
    let flows = takeover_flows(lab, i, IpAddr::V4(LB_V4));
    (!flows
        .iter()
        .any(|f| f["l2_previous_owner"] == t.old_owner.as_str()))
    .then(|| {
        format!(
            "{}: {new} has no takeover flow from {}: {flows:?}",
            t.fault, t.old_owner
        )
    })
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
        problems.extend(takeover_flow_problem(&lab, &t));
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
    let mut lab = build_with_manifests("l2s", TOOLS);
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

/// The claim hold of node `i`'s view, when its `ferrite l2 -o json` shows one.
fn claim_hold(lab: &L2Lab, i: usize) -> (Value, Option<Value>) {
    let v = lab.view(i).unwrap_or_default();
    let hold = v.get("claim_hold").cloned();
    (v, hold)
}

/// An agent started while its peers are down cannot know whether one of them owns an address
/// meanwhile: it claims nothing, and `ferrite l2` says so (why, since when, until what) and
/// marks the addresses it would own as held. Once the peers start and membership synced, the
/// hold is gone and the owner announces.
#[test]
fn the_view_shows_the_claim_hold_until_membership_synced() {
    let mut lab = build_with_manifests("l2h", TOOLS);
    // A hold-down far beyond the test: only a sync with a peer can end this hold.
    let mut config = lab.agent_config(0);
    config
        .extra_args
        .extend(["--l2-claim-hold-ms".to_string(), "600000".to_string()]);
    lab.lab_mut()
        .start_agent(0, &config)
        .unwrap_or_else(|e| panic!("starting node1's agent: {e}"));
    let mut last = Value::Null;
    // Polled until the first snapshot is in the view (the hold starts with the agent).
    let shown = wait_until(Duration::from_secs(15), Duration::from_millis(50), || {
        let (v, hold) = claim_hold(&lab, 0);
        last = v;
        hold.is_some() && address_entry(&last, IpAddr::V4(LB_V4)).is_some()
    });
    assert!(
        shown.is_ok(),
        "node1 alone shows no claim hold: {last}{}",
        lab.lab().agent_logs(20)
    );
    let hold = &last["claim_hold"];
    assert_eq!(hold["reason"].as_str(), Some("start"), "{last}");
    let since = hold["since_unix_ms"].as_u64().unwrap();
    let deadline = hold["deadline_unix_ms"].as_u64().unwrap();
    assert_eq!(deadline - since, 600_000, "{last}");
    assert!(hold.get("synced_unix_ms").is_none(), "no peer yet: {last}");
    assert_eq!(hold["drop_existing"].as_bool(), Some(false), "{last}");
    for addr in [IpAddr::V4(LB_V4), IpAddr::V6(LB_V6)] {
        let e = address_entry(&last, addr).unwrap();
        assert_eq!(e["owner"].as_str(), Some("node1"), "{last}");
        assert_eq!(e["claim_held"].as_bool(), Some(true), "{last}");
        assert!(e["interface"].is_null(), "held, so not announced: {last}");
    }
    let table = lab.view_table(0).unwrap();
    assert!(
        table.contains("new claims held (start, ")
            && table.contains("until a membership sync with a peer")
            && table.contains("owner, claim held"),
        "{table}"
    );
    assert_nobody_answers(&lab, IpAddr::V4(LB_V4));

    for i in 1..3 {
        let config = lab.agent_config(i);
        lab.lab_mut()
            .start_agent(i, &config)
            .unwrap_or_else(|e| panic!("starting node{}'s agent: {e}", i + 1));
    }
    let gone = wait_until(Duration::from_secs(15), Duration::from_millis(50), || {
        let (v, hold) = claim_hold(&lab, 0);
        let marked = v["addresses"]
            .as_array()
            .is_some_and(|a| a.iter().any(|e| e.get("claim_held").is_some()));
        last = v;
        hold.is_none() && !marked && last["members"].as_array().is_some_and(|m| m.len() == 3)
    });
    assert!(
        gone.is_ok(),
        "node1's hold did not end after its peers started: {last}{}",
        lab.lab().agent_logs(30)
    );
    let o = owner(&lab, IpAddr::V4(LB_V4));
    assert_views(&lab, IpAddr::V4(LB_V4), o);
    assert_only_owner_answers(&lab, IpAddr::V4(LB_V4), o);
}

/// `--tc-attach legacy`: the responder runs as a cls_bpf filter ahead of the north-south
/// filter on eth0 (lower priority number), and the elected owner alone answers ARP and NDP.
#[test]
fn legacy_attach_owner_alone_answers_from_a_cls_bpf_filter() {
    let lab = start_with("lgl", &["--tc-attach", "legacy"]);
    let o4 = owner(&lab, IpAddr::V4(LB_V4));
    let o6 = owner(&lab, IpAddr::V6(LB_V6));
    assert_only_owner_answers(&lab, IpAddr::V4(LB_V4), o4);
    assert_only_owner_answers(&lab, IpAddr::V6(LB_V6), o6);
    assert_nobody_answers(&lab, IpAddr::V4(UNOWNED_V4));
    assert_served_by_all_nodes(&lab, IpAddr::V4(LB_V4));
    for i in 0..3 {
        let out = lab
            .lab()
            .node(i)
            .ns()
            .exec(
                std::process::Command::new("tc")
                    .args(["filter", "show", "dev", LAN_IFNAME, "ingress"]),
            )
            .expect("tc filter show (apt-get install iproute2)");
        let shown = String::from_utf8_lossy(&out.stdout);
        let (l2, host) = (shown.find("fe_l2_ingress"), shown.find("fe_host_ingress"));
        assert!(
            l2.is_some() && host.is_some() && l2 < host,
            "node{}: the responder's filter runs first: {shown}",
            i + 1
        );
        let st = lab.lab().agent(i).status().unwrap();
        let l2_ready = st["subsystems"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| s["name"] == "l2" && s["ready"] == true);
        assert!(l2_ready, "l2 readiness: {st}");
        assert!(
            !lab.lab()
                .agent(i)
                .bpf_root
                .join("links")
                .join(format!("l2_{LAN_IFNAME}"))
                .exists(),
            "no TCX link under legacy attach"
        );
    }
}

/// The owner's LAN interface deleted and created again under the same name (new ifindex and
/// MAC, as ifupdown or a replugged USB NIC leave it): the responder attaches to the new device
/// and the owner answers ARP and NDP there again, with the new MAC, alone.
#[test]
fn a_recreated_interface_is_answered_on_again() {
    let mut lab = start("l2r");
    let o = owner(&lab, IpAddr::V4(LB_V4));
    assert_only_owner_answers(&lab, IpAddr::V4(LB_V4), o);
    let old_mac = mac_string(&lab, o);
    lab.lab_mut()
        .replug_node(o)
        .unwrap_or_else(|e| panic!("re-creating the owner's {LAN_IFNAME}: {e}"));
    let new_mac = mac_string(&lab, o);
    assert_ne!(old_mac, new_mac, "the re-created interface kept its MAC");
    let answered = wait_until(GENEROUS * 2, Duration::from_millis(200), || {
        lab.wait_owner(IpAddr::V4(LB_V4), Duration::from_secs(1))
            .is_ok_and(|now| now == o)
            && arping(&lab, 0, LB_V4, 1).0 == vec![new_mac.clone()]
    });
    assert!(
        answered.is_ok(),
        "{LB_V4} is not answered with the re-created interface's MAC {new_mac}: {:?}{}",
        arping(&lab, 0, LB_V4, 2),
        lab.lab().agent_logs(30)
    );
    assert_only_owner_answers(&lab, IpAddr::V4(LB_V4), o);
    let o6 = owner(&lab, IpAddr::V6(LB_V6));
    assert_only_owner_answers(&lab, IpAddr::V6(LB_V6), o6);
}
