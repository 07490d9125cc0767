//! Takeovers and failover durations for `/metrics`: when this node starts announcing an address
//! another node announced, and — when that node failed — how long after this node saw it stop
//! being alive (suspect, dead or left in the membership view) the address was announced here.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use crate::api::L2AddressView;
use crate::l2::membership::{MemberState, MemberView};

/// Per member, when this node saw it leave `alive` (Unix ms), while it has not come back.
#[derive(Debug, Default)]
pub struct Takeovers {
    left_alive: BTreeMap<String, u64>,
}

/// What gaining one address was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gain {
    /// Nobody announced it before (a new address, or this node's own at start).
    Claim,
    /// Another node announced it; `failover` is set when that node had failed.
    Takeover { failover: Option<Duration> },
}

impl Takeovers {
    /// Follows the members' states (call with every view decided on). `members` holds every
    /// member this node knows, dead and departed ones included.
    pub fn observe<'a>(&mut self, members: impl IntoIterator<Item = &'a MemberView>) {
        for m in members {
            let name = m.name.to_string();
            if m.state == MemberState::Alive {
                self.left_alive.remove(&name);
            } else {
                self.left_alive.entry(name).or_insert(m.since_unix_ms);
            }
        }
    }

    /// What gaining `addr` at `now_ms` was, given the previous view's owners.
    #[must_use]
    pub fn gained(&self, addr: IpAddr, me: &str, previous: &[L2AddressView], now_ms: u64) -> Gain {
        let before = previous
            .iter()
            .find(|a| a.address.parse::<IpAddr>().ok() == Some(addr))
            .and_then(|a| a.owner.as_deref())
            .filter(|owner| *owner != me);
        match before {
            None => Gain::Claim,
            Some(owner) => Gain::Takeover {
                failover: self
                    .left_alive
                    .get(owner)
                    .map(|&t| Duration::from_millis(now_ms.saturating_sub(t))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::net::SocketAddr;

    use super::*;

    fn member(name: &str, state: MemberState, since: u64) -> MemberView {
        MemberView {
            name: name.into(),
            addr: SocketAddr::from(([10, 0, 0, 1], 7946)),
            state,
            incarnation: 1,
            eligible: BTreeSet::new(),
            since_unix_ms: since,
        }
    }

    fn owned_by(owner: &str) -> Vec<L2AddressView> {
        vec![L2AddressView {
            address: "192.168.1.10".into(),
            service: "ns/web".into(),
            owner: Some(owner.into()),
            interface: None,
            since_unix_ms: None,
            eligible: true,
            reason: String::new(),
            claim_held: false,
        }]
    }

    #[test]
    fn failover_runs_from_the_owner_leaving_alive_to_the_announcement() {
        let ip: IpAddr = "192.168.1.10".parse().unwrap();
        let mut t = Takeovers::default();
        t.observe(&[member("n1", MemberState::Alive, 0)]);
        // Suspected at 1000, declared dead at 1500: the failure counts from 1000.
        t.observe(&[member("n1", MemberState::Suspect, 1000)]);
        t.observe(&[member("n1", MemberState::Dead, 1500)]);
        assert_eq!(
            t.gained(ip, "n2", &owned_by("n1"), 1600),
            Gain::Takeover {
                failover: Some(Duration::from_millis(600))
            }
        );
        // Back alive: a later move from it is planned, not a failover.
        t.observe(&[member("n1", MemberState::Alive, 2000)]);
        assert_eq!(
            t.gained(ip, "n2", &owned_by("n1"), 3000),
            Gain::Takeover { failover: None }
        );
    }

    #[test]
    fn an_address_nobody_announced_or_already_ours_is_a_claim() {
        let ip: IpAddr = "192.168.1.10".parse().unwrap();
        let t = Takeovers::default();
        assert_eq!(t.gained(ip, "n2", &[], 5), Gain::Claim);
        assert_eq!(t.gained(ip, "n2", &owned_by("n2"), 5), Gain::Claim);
    }
}
