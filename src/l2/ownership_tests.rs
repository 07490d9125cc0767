use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::*;
use crate::l2::membership::{MemberState, MemberView};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn member(name: &str, state: MemberState, eligible: &[IpAddr]) -> MemberView {
    MemberView {
        name: name.into(),
        addr: "10.0.0.1:7946".parse().unwrap(),
        state,
        incarnation: 1,
        eligible: eligible.iter().copied().collect(),
        since_unix_ms: 0,
    }
}

fn reqs(addrs: &[IpAddr]) -> Vec<AddrReq> {
    addrs
        .iter()
        .map(|a| AddrReq::new(*a, ServiceName::new("default", "web")))
        .collect()
}

fn pool(n: u32) -> Vec<IpAddr> {
    (0..n)
        .map(|i| IpAddr::V4(Ipv4Addr::from(0xc0a8_0100 + i)))
        .collect()
}

#[test]
fn score_is_pinned_across_versions_and_architectures() {
    // Nodes running different builds during a rolling upgrade must agree on every owner: these
    // values may never change (cross-checked with an independent Python implementation).
    assert_eq!(score(ip("192.168.1.240"), "node-a"), 0x7af6_e6b1_8dcd_04c3);
    assert_eq!(score(ip("192.168.1.240"), "node-b"), 0xae47_edc8_73c0_7a82);
    assert_eq!(score(ip("fd00::240"), "node-a"), 0x7126_19fc_1176_d2f9);
    // The family is part of the input: ::ffff:a.b.c.d does not collide with a.b.c.d.
    let v4 = ip("10.0.0.1");
    let mapped = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
    assert_ne!(score(v4, "n"), score(mapped, "n"));
}

#[test]
fn exactly_one_live_eligible_owner_and_none_without_one() {
    let (a1, a2, a3) = (ip("192.168.1.240"), ip("192.168.1.241"), ip("fd00::240"));
    let members = vec![
        member("n1", MemberState::Alive, &[a1, a2]),
        member("n2", MemberState::Suspect, &[a1, a2, a3]),
        member("n3", MemberState::Dead, &[a1, a2, a3]),
        member("n4", MemberState::Left, &[a1, a2, a3]),
    ];
    let unwanted = ip("192.168.1.250");
    let out = assign(&reqs(&[a1, a2, a3, unwanted]), &members);
    // a3: only n2 (suspect, still live) is eligible among live members.
    assert_eq!(out.get(&a3).map(SmolStr::as_str), Some("n2"));
    for a in [a1, a2] {
        let owner = out.get(&a).unwrap();
        assert!(owner == "n1" || owner == "n2", "{a} owned by {owner}");
        let best = ["n1", "n2"]
            .into_iter()
            .max_by_key(|n| score(a, n))
            .unwrap();
        assert_eq!(owner, best);
    }
    assert!(!out.contains_key(&unwanted), "nobody advertises it");
    let dead_only = vec![
        member("n3", MemberState::Dead, &[a1]),
        member("n4", MemberState::Left, &[a1]),
    ];
    assert!(assign(&reqs(&[a1]), &dead_only).is_empty());
    assert!(assign(&reqs(&[a1]), &[]).is_empty());
    assert!(owned_by(&out, "n2").contains(&a3));
    assert!(owned_by(&out, "n3").is_empty());
}

#[test]
fn every_member_gets_a_fair_share() {
    let addrs = pool(600);
    let names = ["pi-1", "pi-2", "pi-3"];
    let members: Vec<MemberView> = names
        .iter()
        .map(|n| member(n, MemberState::Alive, &addrs))
        .collect();
    let out = assign(&reqs(&addrs), &members);
    assert_eq!(out.len(), 600);
    for n in names {
        let share = owned_by(&out, n).len();
        // Expected 200 each; a broken hash gives lopsided shares.
        assert!((150..=250).contains(&share), "{n} owns {share} of 600");
    }
}

#[test]
fn requests_come_from_candidates() {
    use crate::l2::eligibility::Candidate;
    let c = Candidate {
        addr: ip("192.168.1.240"),
        service: ServiceName::new("demo", "web"),
        interface: None,
        eligible: false,
        reason: "policy p does not select this node".into(),
    };
    let r = AddrReq::from_candidates(&[c]);
    assert_eq!(
        r,
        vec![AddrReq::new(
            ip("192.168.1.240"),
            ServiceName::new("demo", "web")
        )]
    );
}

/// A random cluster: member names, addresses, and who advertises what.
fn cluster() -> impl Strategy<Value = (Vec<MemberView>, Vec<IpAddr>)> {
    (1_usize..7, 1_u32..60).prop_flat_map(|(n, count)| {
        let addrs: Vec<IpAddr> = pool(count / 2)
            .into_iter()
            .chain((0..count - count / 2).map(|i| {
                IpAddr::V6(Ipv6Addr::new(
                    0xfd00,
                    0,
                    0,
                    0,
                    0,
                    0,
                    1,
                    u16::try_from(i).unwrap(),
                ))
            }))
            .collect();
        let k = addrs.len();
        (
            proptest::collection::vec(proptest::collection::vec(any::<bool>(), k), n),
            Just(addrs),
        )
            .prop_map(|(masks, addrs)| {
                let members = masks
                    .iter()
                    .enumerate()
                    .map(|(i, mask)| {
                        let eligible: Vec<IpAddr> = addrs
                            .iter()
                            .zip(mask)
                            .filter(|(_, m)| **m)
                            .map(|(a, _)| *a)
                            .collect();
                        member(&format!("node-{i}"), MemberState::Alive, &eligible)
                    })
                    .collect();
                (members, addrs)
            })
    })
}

proptest! {
    #[test]
    fn owners_are_eligible_and_every_eligible_address_is_owned(
        (members, addrs) in cluster()
    ) {
        let out = assign(&reqs(&addrs), &members);
        for a in &addrs {
            let eligible: BTreeSet<&str> = members
                .iter()
                .filter(|m| m.eligible.contains(a))
                .map(|m| m.name.as_str())
                .collect();
            match out.get(a) {
                Some(owner) => prop_assert!(eligible.contains(owner.as_str())),
                None => prop_assert!(eligible.is_empty()),
            }
        }
    }

    #[test]
    fn removing_a_member_moves_only_its_addresses(
        (members, addrs) in cluster(),
        victim in any::<prop::sample::Index>(),
        how in 0_u8..3,
    ) {
        let before = assign(&reqs(&addrs), &members);
        let victim = victim.index(members.len());
        let mut after_members = members.clone();
        match how {
            0 => { after_members.remove(victim); }
            1 => after_members[victim].state = MemberState::Dead,
            _ => after_members[victim].state = MemberState::Left,
        }
        let after = assign(&reqs(&addrs), &after_members);
        let gone = &members[victim].name;
        for a in &addrs {
            match before.get(a) {
                Some(owner) if owner != gone => prop_assert_eq!(after.get(a), Some(owner)),
                Some(_) => {
                    // Moves to the best remaining eligible member, if any.
                    let next = after_members
                        .iter()
                        .filter(|m| m.state.is_live() && m.eligible.contains(a))
                        .max_by_key(|m| (score(*a, &m.name), m.name.clone()))
                        .map(|m| m.name.clone());
                    prop_assert_eq!(after.get(a).cloned(), next);
                }
                None => prop_assert_eq!(after.get(a), None),
            }
        }
    }

    #[test]
    fn a_joining_member_only_takes_addresses_for_itself(
        (members, addrs) in cluster(),
    ) {
        let before = assign(&reqs(&addrs), &members);
        let mut joined = members.clone();
        joined.push(member("node-new", MemberState::Alive, &addrs));
        let after = assign(&reqs(&addrs), &joined);
        for a in &addrs {
            let new_owner = after.get(a).map(SmolStr::as_str);
            if new_owner != before.get(a).map(SmolStr::as_str) {
                prop_assert_eq!(new_owner, Some("node-new"));
            }
        }
    }

    #[test]
    fn withdrawing_eligibility_moves_only_that_address(
        (members, addrs) in cluster(),
        who in any::<prop::sample::Index>(),
        which in any::<prop::sample::Index>(),
    ) {
        let before = assign(&reqs(&addrs), &members);
        let who = who.index(members.len());
        let addr = addrs[which.index(addrs.len())];
        let mut changed = members.clone();
        changed[who].eligible.remove(&addr);
        let after = assign(&reqs(&addrs), &changed);
        for a in addrs.iter().filter(|a| **a != addr) {
            prop_assert_eq!(after.get(a), before.get(a));
        }
        prop_assert_ne!(after.get(&addr).map(SmolStr::as_str), Some(members[who].name.as_str()));
    }
}
