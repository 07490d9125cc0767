//! The `/v1/l2` view of this node's L2 state (pure): every announceable address with its
//! owner, whether this node announces it and why (not), and the claim hold while it lasts.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::api::{L2AddressView, L2View};
use crate::l2::eligibility::Candidate;
use crate::l2::hold::HoldStatus;
use crate::l2::membership::MemberView;
use crate::l2::ownership::NodeName;

/// The same moment on the monotonic and on the wall clock, to show [`Instant`]s as Unix ms.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    pub now: Instant,
    /// Since the Unix epoch, at full precision: instants a whole number of milliseconds apart
    /// stay exactly that far apart in Unix ms.
    pub unix: Duration,
}

impl Clock {
    /// Now.
    #[must_use]
    pub fn now() -> Self {
        Self {
            now: Instant::now(),
            unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default(),
        }
    }

    /// `t` in Unix milliseconds (in the past or in the future).
    #[must_use]
    pub fn unix_ms_of(&self, t: Instant) -> u64 {
        let unix = if t <= self.now {
            self.unix.saturating_sub(self.now - t)
        } else {
            self.unix.saturating_add(t - self.now)
        };
        u64::try_from(unix.as_millis()).unwrap_or(u64::MAX)
    }
}

/// An address this node announces.
#[derive(Clone, Copy, Debug)]
pub struct Claimed<'a> {
    pub interface: &'a str,
    pub since_unix_ms: u64,
}

pub struct ViewInput<'a> {
    pub node: &'a str,
    /// The live members ownership was decided with.
    pub members: &'a [MemberView],
    pub candidates: &'a [Candidate],
    pub owners: &'a BTreeMap<IpAddr, NodeName>,
    pub claimed: &'a BTreeMap<IpAddr, Claimed<'a>>,
    /// The claim hold in progress, if any (after the decision's check).
    pub hold: Option<&'a HoldStatus>,
    pub clock: Clock,
}

/// The view: an address this node owns by the membership view but has not claimed while a
/// hold is active is marked `claim_held`.
#[must_use]
pub fn build(input: &ViewInput<'_>) -> L2View {
    let addresses = input
        .candidates
        .iter()
        .map(|c| {
            let owner = input.owners.get(&c.addr);
            let claimed = input.claimed.get(&c.addr);
            L2AddressView {
                address: c.addr.to_string(),
                service: c.service.to_string(),
                owner: owner.map(ToString::to_string),
                interface: claimed.map(|o| o.interface.to_string()),
                since_unix_ms: claimed.map(|o| o.since_unix_ms),
                eligible: c.eligible,
                reason: c.reason.clone(),
                claim_held: input.hold.is_some()
                    && claimed.is_none()
                    && owner.is_some_and(|o| o.as_str() == input.node),
            }
        })
        .collect();
    L2View {
        node: input.node.to_string(),
        members: input.members.iter().map(|m| m.name.to_string()).collect(),
        addresses,
        claim_hold: input.hold.map(|s| (s, &input.clock).into()),
        membership: crate::api::L2MembershipView::default(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::net::SocketAddr;

    use super::*;
    use crate::l2::hold::{ClaimHold, HoldReason, PeerSyncs};
    use crate::l2::membership::MemberState;

    fn member(name: &str) -> MemberView {
        MemberView {
            name: name.into(),
            addr: SocketAddr::from(([192, 0, 2, 1], 7946)),
            state: MemberState::Alive,
            incarnation: 1,
            eligible: BTreeSet::new(),
            since_unix_ms: 0,
        }
    }

    fn candidate(addr: &str) -> Candidate {
        Candidate {
            addr: addr.parse().unwrap(),
            service: crate::model::ServiceName::new("test", "web"),
            interface: Some("eth0".into()),
            eligible: true,
            reason: "policy lan on eth0".into(),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// `node1` owns .200 and .201 (claimed: .201 only), `node2` owns .202.
    fn view(hold: Option<&HoldStatus>, clock: Clock) -> L2View {
        let members = [member("node1"), member("node2")];
        let candidates = [
            candidate("192.0.2.200"),
            candidate("192.0.2.201"),
            candidate("192.0.2.202"),
        ];
        let owners: BTreeMap<IpAddr, NodeName> = [
            (ip("192.0.2.200"), "node1".into()),
            (ip("192.0.2.201"), "node1".into()),
            (ip("192.0.2.202"), "node2".into()),
        ]
        .into();
        let claimed = BTreeMap::from([(
            ip("192.0.2.201"),
            Claimed {
                interface: "eth0",
                since_unix_ms: 5,
            },
        )]);
        build(&ViewInput {
            node: "node1",
            members: &members,
            candidates: &candidates,
            owners: &owners,
            claimed: &claimed,
            hold,
            clock,
        })
    }

    #[test]
    fn without_a_hold_nothing_is_marked_held_and_the_json_is_unchanged() {
        let clock = Clock {
            now: Instant::now(),
            unix: Duration::from_secs(1_000),
        };
        let v = view(None, clock);
        assert_eq!(v.members, ["node1", "node2"]);
        assert!(v.claim_hold.is_none());
        assert!(v.addresses.iter().all(|a| !a.claim_held));
        let a = &v.addresses[1];
        assert_eq!(
            (a.interface.as_deref(), a.since_unix_ms),
            (Some("eth0"), Some(5))
        );
        // Existing consumers see exactly the fields they knew.
        let json = serde_json::to_value(&v).unwrap();
        assert!(json.get("claim_hold").is_none(), "{json}");
        let keys: BTreeSet<&str> = json["addresses"][0]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            BTreeSet::from([
                "address",
                "service",
                "owner",
                "interface",
                "since_unix_ms",
                "eligible",
                "reason"
            ])
        );
    }

    #[test]
    fn during_a_hold_unclaimed_owned_addresses_are_marked_and_the_hold_is_shown() {
        let t0 = Instant::now();
        let mut hold = ClaimHold::new(Duration::from_secs(1), Duration::from_millis(50));
        hold.hold(
            t0,
            &PeerSyncs::new(),
            false,
            HoldReason::LinkUp(vec!["eth0".into()]),
        );
        let clock = Clock {
            now: t0 + Duration::from_millis(200),
            unix: Duration::from_micros(1_000_200_400),
        };
        let status = hold.status().unwrap();
        let v = view(Some(&status), clock);
        let marks: Vec<(&str, bool)> = v
            .addresses
            .iter()
            .map(|a| (a.address.as_str(), a.claim_held))
            .collect();
        // Owned and unclaimed: held; owned and kept: not; another node's: not.
        assert_eq!(
            marks,
            [
                ("192.0.2.200", true),
                ("192.0.2.201", false),
                ("192.0.2.202", false)
            ]
        );
        let h = v.claim_hold.as_ref().unwrap();
        assert_eq!(h.reason, "link-up");
        assert_eq!(h.interfaces, ["eth0"]);
        assert_eq!(
            (h.since_unix_ms, h.deadline_unix_ms),
            (1_000_000, 1_001_000)
        );
        assert_eq!((h.synced_unix_ms, h.settled_unix_ms), (None, None));
        assert!(!h.drop_existing);

        // A peer synced at +300 ms: claims resume at +350 ms.
        let peer: NodeName = "node2".into();
        hold.check(
            t0 + Duration::from_millis(300),
            &[(peer.clone(), 1)].into_iter().collect(),
            &[peer].into_iter().collect(),
        );
        let clock = Clock {
            now: t0 + Duration::from_millis(320),
            unix: Duration::from_millis(1_000_320),
        };
        let v = view(hold.status().as_ref(), clock);
        let h = v.claim_hold.unwrap();
        assert_eq!(
            (h.synced_unix_ms, h.settled_unix_ms),
            (Some(1_000_300), Some(1_000_350))
        );
        let json = serde_json::to_value(&v.addresses[0]).unwrap();
        assert_eq!(json["claim_held"], serde_json::Value::Bool(true), "{json}");
    }

    #[test]
    fn the_clock_maps_past_and_future_instants() {
        let now = Instant::now();
        let c = Clock {
            now,
            unix: Duration::from_micros(10_000_700),
        };
        assert_eq!(c.unix_ms_of(now), 10_000);
        assert_eq!(c.unix_ms_of(now + Duration::from_millis(250)), 10_250);
        if let Some(past) = now.checked_sub(Duration::from_millis(400)) {
            assert_eq!(c.unix_ms_of(past), 9_600);
        }
        // Instants 1 s apart are 1000 ms apart however far from `now` in sub-milliseconds.
        let c = Clock {
            now: now + Duration::from_micros(200_600),
            unix: Duration::from_millis(1_000_200),
        };
        let (since, deadline) = (
            c.unix_ms_of(now),
            c.unix_ms_of(now + Duration::from_secs(1)),
        );
        assert_eq!((since, deadline), (999_999, 1_000_999));
    }
}
