//! The member table (everyone but this node) with SWIM's merge rules, and the queue of records
//! waiting to be piggybacked.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::view::MemberState;
use super::wire::Record;
use crate::l2::ownership::NodeName;

/// One other member.
#[derive(Clone, Debug)]
pub(super) struct Member {
    pub addr: SocketAddr,
    pub incarnation: u64,
    pub state: MemberState,
    pub eligible: BTreeSet<IpAddr>,
    /// When it entered `state` (for suspects: when this suspicion started here).
    pub since: Instant,
    /// Who reported the current state.
    pub reported_by: NodeName,
    /// Lifeguard: the distinct members that suspect it at this incarnation; each independent
    /// confirmation shortens the suspicion timeout.
    pub suspectors: BTreeSet<NodeName>,
}

impl Member {
    pub fn record(&self, name: &NodeName) -> Record {
        Record {
            name: name.clone(),
            addr: self.addr,
            incarnation: self.incarnation,
            state: self.state,
            from: self.reported_by.clone(),
            // Only live members' eligibility matters; dead records stay small.
            eligible: if self.state.is_live() {
                self.eligible.clone()
            } else {
                BTreeSet::new()
            },
        }
    }
}

/// What merging a record did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Old news.
    Stale,
    /// Another member independently suspects a member we already suspect.
    Confirmed,
    /// The record was newer: the member is new or changed (gossip it on).
    Changed {
        old: Option<MemberState>,
        eligibility_changed: bool,
    },
}

#[derive(Debug, Default)]
pub(super) struct Table {
    members: BTreeMap<NodeName, Member>,
}

impl Table {
    pub fn get(&self, name: &str) -> Option<&Member> {
        self.members.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&NodeName, &Member)> {
        self.members.iter()
    }

    pub fn live(&self) -> impl Iterator<Item = (&NodeName, &Member)> {
        self.members.iter().filter(|(_, m)| m.state.is_live())
    }

    pub fn live_count(&self) -> usize {
        self.live().count()
    }

    /// Merges a record about another member: a higher incarnation always wins, and at equal
    /// incarnation the later state (alive < suspect < dead < left).
    pub fn apply(&mut self, r: &Record, now: Instant) -> Outcome {
        let Some(m) = self.members.get_mut(&r.name) else {
            self.members.insert(
                r.name.clone(),
                Member {
                    addr: r.addr,
                    incarnation: r.incarnation,
                    state: r.state,
                    eligible: r.eligible.clone(),
                    since: now,
                    reported_by: r.from.clone(),
                    suspectors: suspectors_of(r),
                },
            );
            return Outcome::Changed {
                old: None,
                eligibility_changed: !r.eligible.is_empty(),
            };
        };
        let newer = (r.incarnation, r.state.rank()) > (m.incarnation, m.state.rank());
        if !newer {
            let confirms = r.state == MemberState::Suspect
                && m.state == MemberState::Suspect
                && r.incarnation == m.incarnation;
            if confirms && m.suspectors.insert(r.from.clone()) {
                return Outcome::Confirmed;
            }
            return Outcome::Stale;
        }
        let old = m.state;
        let eligibility_changed = r.state.is_live() && m.eligible != r.eligible;
        if r.state.is_live() {
            m.eligible.clone_from(&r.eligible);
        }
        if old != r.state || r.state == MemberState::Suspect {
            m.since = now;
        }
        m.addr = r.addr;
        m.incarnation = r.incarnation;
        m.state = r.state;
        m.reported_by = r.from.clone();
        m.suspectors = suspectors_of(r);
        Outcome::Changed {
            old: Some(old),
            eligibility_changed,
        }
    }

    /// This node suspects `name` (a probe failed). Returns the record to gossip and the state
    /// before when that is news: a fresh suspicion, or this node's first confirmation of an
    /// existing one.
    pub fn suspect(
        &mut self,
        name: &str,
        me: &NodeName,
        now: Instant,
    ) -> Option<(Record, MemberState)> {
        let m = self.members.get_mut(name)?;
        let old = m.state;
        match m.state {
            MemberState::Alive => {
                m.state = MemberState::Suspect;
                m.since = now;
                m.reported_by = me.clone();
                m.suspectors = BTreeSet::from([me.clone()]);
            }
            MemberState::Suspect if m.suspectors.insert(me.clone()) => {}
            _ => return None,
        }
        let mut record = m.record(&NodeName::new(name));
        record.from = me.clone();
        Some((record, old))
    }

    /// This node's suspicion timer for `name` ran out.
    pub fn declare_dead(&mut self, name: &str, me: &NodeName, now: Instant) -> Option<Record> {
        let m = self.members.get_mut(name)?;
        if m.state != MemberState::Suspect {
            return None;
        }
        m.state = MemberState::Dead;
        m.since = now;
        m.reported_by = me.clone();
        m.suspectors.clear();
        Some(m.record(&NodeName::new(name)))
    }

    /// Drops members dead or gone for longer than `retention`; returns their names.
    pub fn forget(&mut self, now: Instant, retention: Duration) -> Vec<NodeName> {
        let gone: Vec<NodeName> = self
            .members
            .iter()
            .filter(|(_, m)| !m.state.is_live() && now.duration_since(m.since) >= retention)
            .map(|(n, _)| n.clone())
            .collect();
        for name in &gone {
            self.members.remove(name);
        }
        gone
    }
}

fn suspectors_of(r: &Record) -> BTreeSet<NodeName> {
    if r.state == MemberState::Suspect {
        BTreeSet::from([r.from.clone()])
    } else {
        BTreeSet::new()
    }
}

/// Records waiting to be piggybacked, one per member (the newest), each sent a bounded number
/// of times and never after `ttl` (stale news, e.g. held by a node that was cut off, must not
/// resurface when it rejoins).
#[derive(Debug, Default)]
pub(super) struct Gossip {
    items: BTreeMap<NodeName, Queued>,
}

#[derive(Debug)]
struct Queued {
    record: Record,
    sent: u32,
    at: Instant,
}

impl Gossip {
    pub fn push(&mut self, record: Record, now: Instant) {
        self.items.insert(
            record.name.clone(),
            Queued {
                record,
                sent: 0,
                at: now,
            },
        );
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Records that fit in `budget` bytes, least-sent first; each counts one transmission and
    /// leaves the queue after `limit`.
    pub fn take(&mut self, budget: usize, limit: u32, ttl: Duration, now: Instant) -> Vec<Record> {
        self.items
            .retain(|_, q| q.sent < limit && now.duration_since(q.at) < ttl);
        let mut order: Vec<(u32, NodeName)> = self
            .items
            .iter()
            .map(|(name, q)| (q.sent, name.clone()))
            .collect();
        order.sort();
        let mut left = budget;
        let mut out = Vec::new();
        for (_, name) in order {
            let Some(q) = self.items.get_mut(&name) else {
                continue;
            };
            let len = q.record.encoded_len();
            if len > left {
                continue;
            }
            left -= len;
            q.sent += 1;
            out.push(q.record.clone());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(name: &str, inc: u64, state: MemberState, from: &str) -> Record {
        Record {
            name: name.into(),
            addr: "10.0.0.2:7946".parse().unwrap(),
            incarnation: inc,
            state,
            from: from.into(),
            eligible: BTreeSet::new(),
        }
    }

    #[test]
    fn higher_incarnation_or_later_state_wins() {
        use MemberState::{Alive, Dead, Left, Suspect};
        let now = Instant::now();
        let mut t = Table::default();
        assert!(matches!(
            t.apply(&rec("b", 5, Alive, "b"), now),
            Outcome::Changed { old: None, .. }
        ));
        assert_eq!(t.apply(&rec("b", 4, Dead, "a"), now), Outcome::Stale);
        assert_eq!(t.apply(&rec("b", 5, Alive, "b"), now), Outcome::Stale);
        assert!(matches!(
            t.apply(&rec("b", 5, Suspect, "a"), now),
            Outcome::Changed {
                old: Some(Alive),
                ..
            }
        ));
        assert_eq!(t.apply(&rec("b", 5, Suspect, "c"), now), Outcome::Confirmed);
        assert_eq!(t.apply(&rec("b", 5, Suspect, "c"), now), Outcome::Stale);
        assert_eq!(t.get("b").unwrap().suspectors.len(), 2);
        // Alive at the same incarnation does not clear a suspicion; a refutation (higher) does.
        assert_eq!(t.apply(&rec("b", 5, Alive, "b"), now), Outcome::Stale);
        assert!(matches!(
            t.apply(&rec("b", 6, Alive, "b"), now),
            Outcome::Changed {
                old: Some(Suspect),
                ..
            }
        ));
        assert!(t.get("b").unwrap().suspectors.is_empty());
        assert!(matches!(
            t.apply(&rec("b", 6, Dead, "a"), now),
            Outcome::Changed {
                old: Some(Alive),
                ..
            }
        ));
        assert_eq!(t.apply(&rec("b", 6, Suspect, "a"), now), Outcome::Stale);
        assert!(matches!(
            t.apply(&rec("b", 6, Left, "b"), now),
            Outcome::Changed {
                old: Some(Dead),
                ..
            }
        ));
        // A restarted member comes back with a higher incarnation.
        assert!(matches!(
            t.apply(&rec("b", 9, Alive, "b"), now),
            Outcome::Changed {
                old: Some(Left),
                ..
            }
        ));
    }

    #[test]
    fn eligibility_rides_on_live_records_only() {
        let now = Instant::now();
        let mut t = Table::default();
        let mut alive = rec("b", 1, MemberState::Alive, "b");
        alive.eligible.insert("10.9.0.1".parse().unwrap());
        t.apply(&alive, now);
        let mut next = alive.clone();
        next.incarnation = 2;
        next.eligible.insert("10.9.0.2".parse().unwrap());
        assert_eq!(
            t.apply(&next, now),
            Outcome::Changed {
                old: Some(MemberState::Alive),
                eligibility_changed: true
            }
        );
        t.apply(&rec("b", 2, MemberState::Dead, "a"), now);
        assert_eq!(t.get("b").unwrap().eligible.len(), 2, "kept for display");
        assert!(t.get("b").unwrap().record(&"b".into()).eligible.is_empty());
    }

    #[test]
    fn own_suspicion_and_death() {
        let now = Instant::now();
        let me = NodeName::new("a");
        let mut t = Table::default();
        t.apply(&rec("b", 1, MemberState::Alive, "b"), now);
        let (r, old) = t.suspect("b", &me, now).unwrap();
        assert_eq!(
            (r.state, r.from.as_str(), old),
            (MemberState::Suspect, "a", MemberState::Alive)
        );
        assert!(t.suspect("b", &me, now).is_none(), "already counted");
        t.apply(&rec("b", 1, MemberState::Suspect, "c"), now);
        assert_eq!(t.get("b").unwrap().suspectors.len(), 2);
        let d = t.declare_dead("b", &me, now).unwrap();
        assert_eq!(d.state, MemberState::Dead);
        assert!(t.declare_dead("b", &me, now).is_none());
        assert!(
            t.forget(now + Duration::from_secs(1), Duration::from_secs(5))
                .is_empty()
        );
        assert_eq!(
            t.forget(now + Duration::from_secs(5), Duration::from_secs(5)),
            vec![NodeName::new("b")]
        );
        assert!(t.get("b").is_none());
    }

    #[test]
    fn gossip_is_bounded_in_count_size_and_age() {
        let now = Instant::now();
        let mut g = Gossip::default();
        g.push(rec("b", 1, MemberState::Alive, "b"), now);
        g.push(rec("c", 1, MemberState::Alive, "c"), now);
        let one = rec("b", 1, MemberState::Alive, "b").encoded_len();
        let ttl = Duration::from_secs(2);
        // Only one fits; the least-sent goes first, so they alternate.
        let first = g.take(one, 3, ttl, now);
        let second = g.take(one, 3, ttl, now);
        assert_eq!((first.len(), second.len()), (1, 1));
        assert_ne!(first[0].name, second[0].name);
        for _ in 0..2 {
            assert_eq!(g.take(10_000, 3, ttl, now).len(), 2);
        }
        assert!(g.take(10_000, 3, ttl, now).is_empty(), "sent 3 times each");
        g.push(rec("d", 1, MemberState::Dead, "a"), now);
        assert!(g.take(10_000, 3, ttl, now + ttl).is_empty(), "expired");
        assert_eq!(g.len(), 0);
    }
}
