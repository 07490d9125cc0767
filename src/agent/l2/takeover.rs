//! Takeovers and failover durations for `/metrics`: when this node starts announcing an address
//! another node announced, and — when that node failed — how long after this node saw it stop
//! being alive (suspect, dead or left in the membership view) the address was announced here.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use crate::api::L2AddressView;
use crate::flows::Flow;
use crate::l2::membership::{MemberState, MemberView};

/// Per member, when this node saw it leave `alive` (Unix ms), while it has not come back.
#[derive(Debug, Default)]
pub struct Takeovers {
    left_alive: BTreeMap<String, u64>,
}

/// What gaining one address was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gain {
    /// Nobody announced it before (a new address, or this node's own at start).
    Claim,
    /// Another node (`from`) announced it; `failover` is set when that node had failed.
    Takeover {
        from: String,
        failover: Option<Duration>,
    },
}

/// One address this node started announcing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gained {
    pub address: IpAddr,
    pub interface: String,
    pub gain: Gain,
    pub at_unix_ms: u64,
}

impl Gained {
    /// The `l2` flow that says so (`l2_event: takeover`), for the flow history.
    #[must_use]
    pub fn flow(&self, seq: u64, node: &str) -> Flow {
        let (from, failover) = match &self.gain {
            Gain::Claim => (None, None),
            Gain::Takeover { from, failover } => (Some(from.clone()), *failover),
        };
        Flow {
            seq,
            time_unix_ms: self.at_unix_ms,
            node: node.to_owned(),
            kind: "l2".into(),
            verdict: "FORWARDED".into(),
            drop_reason: None,
            protocol: if self.address.is_ipv4() { "ARP" } else { "NDP" }.into(),
            source_ip: None,
            source_port: None,
            destination_ip: self.address.to_string(),
            destination_port: 0,
            translated_ip: None,
            translated_port: None,
            service: None,
            interface: Some(self.interface.clone()),
            tcp_flags: Vec::new(),
            snat: false,
            socket_cookie: None,
            traffic_direction: crate::flows::direction_of("l2").into(),
            source_pod: None,
            source_labels: Vec::new(),
            destination_pod: None,
            destination_labels: Vec::new(),
            l2_event: Some("takeover".into()),
            l2_previous_owner: from,
            l2_failover_ms: failover.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            is_reply: None,
        }
    }
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
                from: owner.to_owned(),
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
                from: "n1".into(),
                failover: Some(Duration::from_millis(600))
            }
        );
        // Back alive: a later move from it is planned, not a failover.
        t.observe(&[member("n1", MemberState::Alive, 2000)]);
        assert_eq!(
            t.gained(ip, "n2", &owned_by("n1"), 3000),
            Gain::Takeover {
                from: "n1".into(),
                failover: None
            }
        );
    }

    #[test]
    fn an_address_nobody_announced_or_already_ours_is_a_claim() {
        let ip: IpAddr = "192.168.1.10".parse().unwrap();
        let t = Takeovers::default();
        assert_eq!(t.gained(ip, "n2", &[], 5), Gain::Claim);
        assert_eq!(t.gained(ip, "n2", &owned_by("n2"), 5), Gain::Claim);
    }

    #[test]
    fn a_gained_address_is_an_l2_takeover_flow() {
        let failover = Gained {
            address: "192.168.1.10".parse().unwrap(),
            interface: "eth0".into(),
            gain: Gain::Takeover {
                from: "n1".into(),
                failover: Some(Duration::from_millis(850)),
            },
            at_unix_ms: 1_700_000_000_000,
        };
        let f = failover.flow(9, "n2");
        assert_eq!(
            (f.seq, f.time_unix_ms, f.node.as_str()),
            (9, 1_700_000_000_000, "n2")
        );
        assert_eq!((f.kind.as_str(), f.protocol.as_str()), ("l2", "ARP"));
        assert_eq!(f.l2_event.as_deref(), Some("takeover"));
        assert_eq!(f.l2_previous_owner.as_deref(), Some("n1"));
        assert_eq!(f.l2_failover_ms, Some(850));
        assert_eq!(
            (f.destination_ip.as_str(), f.destination_port),
            ("192.168.1.10", 0)
        );
        assert_eq!(f.traffic_direction, "ingress");
        assert_eq!(
            crate::flows::compact(&f, "t"),
            "t n2 l2: takeover 192.168.1.10 from n1 after 850 ms ARP on eth0"
        );
        let json = serde_json::to_value(&f).unwrap();
        assert_eq!(json["l2_event"], "takeover");
        assert!(json.get("source_ip").is_none() && json.get("source_pod").is_none());

        // A first election (nobody announced it): no previous owner, an IPv6 address is NDP.
        let claim = Gained {
            address: "fd00::10".parse().unwrap(),
            interface: "eth1".into(),
            gain: Gain::Claim,
            at_unix_ms: 5,
        };
        let f = claim.flow(1, "n2");
        assert_eq!(f.protocol, "NDP");
        assert_eq!(
            (f.l2_previous_owner.as_deref(), f.l2_failover_ms),
            (None, None)
        );
        assert_eq!(f.l2_event.as_deref(), Some("takeover"));
        let q = crate::flows::filter::FlowQuery::parse(Some("type=l2&protocol=NDP")).unwrap();
        assert!(q.filter.matches(&f));
    }
}
