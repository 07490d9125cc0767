//! L2 announcements as root, beyond the basics of `l2_announce.rs`: a policy whose
//! `nodeSelector` picks one node of three (the others never answer and say why), and IPv6
//! failover (`ndisc6` gets exactly one answer, from the owner; after `kill -9` of the owner
//! another node answers within the same bound as IPv4, and no solicitation is ever answered by
//! two MACs).
//!
//! Run as root: `cargo test --test l2_policy -- --nocapture`.

mod common;
mod l2_common;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ferrite_lab::l2lab::{Fault, L2Lab, LB_V4, LB_V6, POLICY_INTERFACES, address_entry};
use ferrite_lab::l2raw::{AnswerKind, ETH_P_ALL, PacketSocket, Watch, solicit};
use ferrite_lab::manifest::{l2_policy_yaml, node_yaml};
use ferrite_lab::nslab::LAN_IFNAME;
use ferrite_lab::raw::Mac;
use ferrite_lab::wait_until;
use l2_common::{GENEROUS, build, ndisc6, web};

/// `ndisc6` is all these tests need besides the lab.
const TOOLS: &[&str] = &["ndisc6"];

/// `ndisc6` hears only `owner`'s MAC, and each of a few raw solicitations (every reply
/// addressed to the client collected for 300 ms) draws exactly one solicited, well-formed NA
/// with the Override flag, from `owner`. (`ndisc6 -m` also lists unsolicited advertisements,
/// such as the owner's announcement burst, so it cannot count answers by itself.)
fn assert_ndisc6_owner(lab: &L2Lab, owner: usize) {
    let want = lab.mac(owner).unwrap();
    let (macs, text) = ndisc6(lab, 0, IpAddr::V6(LB_V6));
    let distinct: BTreeSet<String> = macs.into_iter().collect();
    assert_eq!(
        distinct,
        BTreeSet::from([want.to_string()]),
        "ndisc6 {LB_V6}: want answers from {} only\n{text}",
        lab.lab().node(owner).name
    );
    let c = lab.lab().client(0);
    let sock = PacketSocket::open_in(c.ns(), LAN_IFNAME, ETH_P_ALL).unwrap();
    for round in 0..3 {
        let answers = solicit(
            &sock,
            IpAddr::V6(c.v6()),
            IpAddr::V6(LB_V6),
            Duration::from_millis(300),
        )
        .unwrap();
        let got: Vec<Mac> = answers.iter().map(|a| a.mac).collect();
        assert_eq!(got, vec![want], "solicitation {round}: {answers:?}");
        assert!(
            answers.iter().all(|a| a.well_formed && a.override_flag),
            "{answers:?}"
        );
    }
}

#[test]
fn node_selector_limits_the_announcers_and_the_view_says_why() {
    let mut lab = build("l2n", TOOLS);
    lab.lab()
        .write_manifest("web.yaml", &web(&lab).to_yaml())
        .unwrap();
    let mut nodes = String::new();
    for (i, n) in lab.lab().nodes().iter().enumerate() {
        let labels: &[(&str, &str)] = if i == 1 { &[("l2", "yes")] } else { &[] };
        nodes.push_str(&node_yaml(&n.name, IpAddr::V4(n.v4()), labels));
    }
    lab.lab().write_manifest("nodes.yaml", &nodes).unwrap();
    let policy = l2_policy_yaml("lan", &[POLICY_INTERFACES])
        + "  nodeSelector:\n    matchLabels:\n      l2: \"yes\"\n";
    lab.lab().write_manifest("policy.yaml", &policy).unwrap();
    let c = lab.lab().client(1);
    let watch = Watch::start(
        c.ns(),
        LAN_IFNAME,
        IpAddr::V4(c.v4()),
        IpAddr::V4(LB_V4),
        Duration::from_millis(20),
    )
    .unwrap();
    let t0 = Instant::now();
    lab.start_agents()
        .unwrap_or_else(|e| panic!("starting ferrite agents: {e}"));
    for addr in [IpAddr::V4(LB_V4), IpAddr::V6(LB_V6)] {
        let owner = lab
            .wait_owner(addr, Duration::from_secs(15))
            .unwrap_or_else(|e| panic!("{e}{}", lab.lab().agent_logs(30)));
        assert_eq!(owner, 1, "only node2 is selected ({addr})");
    }
    assert_ndisc6_owner(&lab, 1);
    for i in [0, 2] {
        let v = lab.view(i).unwrap();
        for addr in [IpAddr::V4(LB_V4), IpAddr::V6(LB_V6)] {
            let e = address_entry(&v, addr).unwrap_or_else(|| panic!("{addr} missing: {v}"));
            assert_eq!(e["eligible"].as_bool(), Some(false), "{v}");
            assert_eq!(e["owner"].as_str(), Some("node2"), "{v}");
            assert!(e["interface"].is_null(), "{v}");
            let reason = e["reason"].as_str().unwrap_or_default();
            assert!(
                reason.contains("does not select this node"),
                "node{}'s reason for {addr}: {reason:?}",
                i + 1
            );
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let log = watch.stop().unwrap();
    let owner_mac = lab.mac(1).unwrap();
    let others: BTreeSet<String> = log
        .answers
        .iter()
        .filter(|s| s.at >= t0 && s.answer.mac != owner_mac)
        .map(|s| s.answer.mac.to_string())
        .collect();
    assert!(
        others.is_empty(),
        "non-selected nodes answered for {LB_V4}: {others:?}"
    );
    assert!(
        log.answers
            .iter()
            .any(|s| s.answer.kind == AnswerKind::Reply && s.answer.mac == owner_mac),
        "node2 never answered the poller"
    );
}

#[test]
fn ipv6_owner_alone_answers_and_fails_over_on_kill() {
    let mut lab = build("l26", TOOLS);
    lab.lab()
        .write_manifest("web.yaml", &web(&lab).to_yaml())
        .unwrap();
    lab.lab()
        .write_manifest("policy.yaml", &l2_policy_yaml("lan", &[POLICY_INTERFACES]))
        .unwrap();
    lab.start_agents()
        .unwrap_or_else(|e| panic!("starting ferrite agents: {e}"));
    let addr = IpAddr::V6(LB_V6);
    let owner = lab
        .wait_owner(addr, Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("{e}{}", lab.lab().agent_logs(30)));
    assert_ndisc6_owner(&lab, owner);
    let old_mac = lab.mac(owner).unwrap();
    let c = lab.lab().client(1);
    let watch = Watch::start(
        c.ns(),
        LAN_IFNAME,
        IpAddr::V6(c.v6()),
        addr,
        Duration::from_millis(20),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    lab.fault(owner, Fault::Kill).unwrap();
    let new_owner = wait_until(GENEROUS, Duration::from_millis(20), || {
        lab.agreed_owner(addr).is_ok_and(|o| o != owner)
    })
    .ok()
    .and_then(|_| lab.agreed_owner(addr).ok())
    .unwrap_or_else(|| panic!("no new owner of {addr}{}", lab.lab().agent_logs(30)));
    std::thread::sleep(Duration::from_millis(500));
    let t_heal = Instant::now();
    lab.heal(owner).unwrap();
    let healed = lab
        .wait_owner(addr, Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("{e}{}", lab.lab().agent_logs(30)));
    std::thread::sleep(Duration::from_secs(1));
    let t_end = Instant::now();
    let log = watch.stop().unwrap();
    let new_mac = lab.mac(new_owner).unwrap();
    let first = log
        .first(t0, |a| a.kind == AnswerKind::Reply && a.mac != old_mac)
        .unwrap_or_else(|| panic!("nobody else answered {addr} after the kill"));
    let failover = first.at - t0;
    eprintln!(
        "IPv6 kill -9: {} → {}: first NA from another MAC after {failover:?}; double answers {} / {} (heal)",
        lab.lab().node(owner).name,
        lab.lab().node(new_owner).name,
        log.double_answered(t0, t_heal),
        log.double_answered(t_heal, t_end)
    );
    assert_eq!(
        first.answer.mac, new_mac,
        "the first other answer is the new owner's"
    );
    assert!(failover <= GENEROUS, "IPv6 failover took {failover:?}");
    assert_eq!(
        log.double_answered(t0, t_end),
        0,
        "solicitations answered by two MACs"
    );
    assert_ndisc6_owner(&lab, healed);
}
