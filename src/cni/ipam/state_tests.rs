use std::collections::HashSet;
use std::net::IpAddr;

use proptest::prelude::*;

use super::*;

fn att(c: &str) -> Attachment {
    Attachment {
        container_id: c.into(),
        ifname: "eth0".into(),
    }
}

fn cidrs(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|c| c.parse().unwrap()).collect()
}

const OWNER: Owner = Owner {
    pid: 42,
    start_time: 7,
};

fn reserve(
    state: &mut IpamState,
    c: &str,
    nets: &[IpNet],
    wanted: &[IpAddr],
) -> Result<Vec<Allocation>, IpamError> {
    let a = att(c);
    state.reserve(&Request {
        attachment: &a,
        host_ifname: "fer0",
        cidrs: nets,
        wanted,
        owner: OWNER,
        pod: None,
        netns: None,
        now_unix_ms: 0,
    })
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn dual_stack_reservation_skips_network_and_gateway() {
    let nets = cidrs(&["10.244.0.0/24", "fd00:10:244::/64"]);
    let mut s = IpamState::default();
    let got = reserve(&mut s, "a", &nets, &[]).unwrap();
    assert_eq!(
        got.iter().map(|a| a.ip).collect::<Vec<_>>(),
        vec![ip("10.244.0.2"), ip("fd00:10:244::2")]
    );
    assert!(got.iter().all(|a| a.pending == Some(OWNER)));
    assert_eq!(gateway(&nets[0]), ip("10.244.0.1"));
    assert_eq!(s.commit(&att("a"), OWNER), 2);
    assert!(s.allocations.iter().all(|a| a.pending.is_none()));
}

#[test]
fn second_add_of_an_attachment_is_refused() {
    let nets = cidrs(&["10.244.0.0/24"]);
    let mut s = IpamState::default();
    reserve(&mut s, "a", &nets, &[]).unwrap();
    assert!(matches!(
        reserve(&mut s, "a", &nets, &[]),
        Err(IpamError::InFlight { pid: 42, .. })
    ));
    s.commit(&att("a"), OWNER);
    assert!(matches!(
        reserve(&mut s, "a", &nets, &[]),
        Err(IpamError::AlreadyAttached { .. })
    ));
}

#[test]
fn round_robin_does_not_reuse_a_released_address_at_once() {
    let nets = cidrs(&["10.0.0.0/29"]); // usable: .2 .. .6
    let mut s = IpamState::default();
    let first = reserve(&mut s, "a", &nets, &[]).unwrap()[0].ip;
    s.release(&att("a"));
    let second = reserve(&mut s, "b", &nets, &[]).unwrap()[0].ip;
    assert_ne!(first, second);
    for c in ["c", "d", "e"] {
        reserve(&mut s, c, &nets, &[]).unwrap();
    }
    // .2 (released by a) is the only one left, found after wrapping.
    assert_eq!(
        reserve(&mut s, "f", &nets, &[]).unwrap()[0].ip,
        ip("10.0.0.2")
    );
    assert!(matches!(
        reserve(&mut s, "g", &nets, &[]),
        Err(IpamError::Exhausted { used: 5, .. })
    ));
    assert_eq!(s.free_in(&nets[0]), 0);
}

#[test]
fn wanted_addresses_are_checked() {
    let nets = cidrs(&["10.0.0.0/24"]);
    let mut s = IpamState::default();
    assert_eq!(
        reserve(&mut s, "a", &nets, &[ip("10.0.0.77")]).unwrap()[0].ip,
        ip("10.0.0.77")
    );
    for bad in [
        "10.0.0.77",
        "10.0.0.1",
        "10.0.0.0",
        "10.0.0.255",
        "10.0.1.5",
        "fd00::5",
    ] {
        assert!(
            matches!(
                reserve(&mut s, "b", &nets, &[ip(bad)]),
                Err(IpamError::Unavailable { .. })
            ),
            "{bad}"
        );
    }
    assert!(
        s.of(&att("b")).next().is_none(),
        "a refused reservation leaves nothing behind"
    );
}

#[test]
fn gc_spares_valid_and_in_flight_attachments() {
    let nets = cidrs(&["10.0.0.0/24"]);
    let mut s = IpamState::default();
    for c in ["keep", "stale", "running"] {
        reserve(&mut s, c, &nets, &[]).unwrap();
    }
    s.commit(&att("keep"), OWNER);
    s.commit(&att("stale"), OWNER);
    let valid: HashSet<Attachment> = [att("keep")].into();
    let stale = stale_for_gc(&s, &valid, |_| true);
    assert_eq!(stale.len(), 1);
    assert!(s.of(&att("stale")).all(|a| stale.contains(&a.ip)));
    let with_dead = stale_for_gc(&s, &valid, |_| false);
    assert_eq!(with_dead.len(), 2);
}

proptest! {
    /// Any interleaving of reserve/commit/release never gives one address to two attachments
    /// and never hands out the network, gateway or broadcast address.
    #[test]
    fn never_hands_out_an_address_twice(ops in proptest::collection::vec((0u8..3, 0u8..12), 1..200)) {
        let nets = cidrs(&["10.9.0.0/28", "fd00:9::/120"]);
        let mut s = IpamState::default();
        for (op, who) in ops {
            let c = format!("c{who}");
            match op {
                0 => { let _ = reserve(&mut s, &c, &nets, &[]); }
                1 => { s.commit(&att(&c), OWNER); }
                _ => { s.release(&att(&c)); }
            }
            let ips: Vec<IpAddr> = s.allocations.iter().map(|a| a.ip).collect();
            let unique: HashSet<IpAddr> = ips.iter().copied().collect();
            prop_assert_eq!(ips.len(), unique.len());
            for a in &s.allocations {
                let o = a.cidr.offset_of(a.ip).unwrap();
                prop_assert!(o >= 2);
                if a.cidr.is_ipv4() { prop_assert!(o < a.cidr.size() - 1); }
            }
        }
    }
}
