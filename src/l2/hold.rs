//! When this node may claim addresses: the claim hold after a start, a link-up or a freeze.
//!
//! A node coming back (agent start, announcing link up again, resumed after SIGSTOP) sees its
//! peers as dead or stale: claiming at once by its own view would answer next to the interim
//! owner until the views merge (120–580 ms measured before this hold). So after such an event
//! it claims nothing new until either
//! - membership completed a full-state exchange *after* the event with every peer it holds
//!   live (the view's `peer_syncs` grew for each: that peer has our record and we have its
//!   table, so both apply rendezvous hashing to the same view and the interim owner releases as
//!   we claim), plus a short `settle` for the peers' agents to apply their release. Every live
//!   peer, not the first to answer: with three nodes the first answer may come from a node that
//!   owns nothing of ours, while the interim owner still answers ARP (seen in CI), or
//! - the hold-down (`--l2-claim-hold-ms`, default 1 s) passed with no peer answering (a node
//!   alone, or every other node down): then its own view is all there is.
//!
//! Addresses still held are kept (a link flap on an interface this node does not announce on
//! must not cost the others anything), except after a freeze, where the responder went silent
//! and the others may already have taken them: those are dropped until the sync too.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::ownership::NodeName;

/// Full-state exchanges completed per peer (the membership view's `peer_syncs`).
pub type PeerSyncs = BTreeMap<NodeName, u64>;

/// Default `--l2-claim-hold-ms`.
pub const DEFAULT_HOLD_DOWN: Duration = Duration::from_secs(1);
/// After the sync, how long the interim owner's agent gets to apply its release.
pub const SETTLE: Duration = Duration::from_millis(50);

/// Why claims are held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HoldReason {
    /// The agent started.
    Start,
    /// These announcing interfaces came up.
    LinkUp(Vec<String>),
    /// The agent resumed after a freeze (`SIGSTOP`, a stalled VM).
    Freeze,
}

impl std::fmt::Display for HoldReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Start => f.write_str("start"),
            Self::LinkUp(ifaces) => write!(f, "link-up on {}", ifaces.join(", ")),
            Self::Freeze => f.write_str("resumed after a freeze"),
        }
    }
}

/// A hold in progress, as the `/v1/l2` view shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldStatus {
    pub reason: HoldReason,
    pub since: Instant,
    /// The hold-down: the hold ends then at the latest, synced or not.
    pub deadline: Instant,
    /// When a sync with a peer after the event was first seen and when the hold ends because
    /// of it (after the settle); `None` while no peer has synced.
    pub synced: Option<(Instant, Instant)>,
    /// Claims held before the event are dropped too (after a freeze).
    pub drop_existing: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Held {
    reason: HoldReason,
    since: Instant,
    /// `peer_syncs` of the view when the hold started.
    syncs_at: PeerSyncs,
    /// When a newer sync was first seen.
    synced: Option<Instant>,
    /// Claims held before the event are dropped too (after a freeze).
    drop_existing: bool,
}

/// What [`ClaimHold::check`] allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claims {
    /// Claim whatever the view assigns to this node.
    All,
    /// Keep what is claimed now, claim nothing new.
    KeepOnly,
    /// Claim nothing at all.
    None,
}

#[derive(Clone, Debug)]
pub struct ClaimHold {
    hold_down: Duration,
    settle: Duration,
    held: Option<Held>,
}

impl ClaimHold {
    #[must_use]
    pub fn new(hold_down: Duration, settle: Duration) -> Self {
        Self {
            hold_down,
            settle,
            held: None,
        }
    }

    /// A start, a link-up or a freeze at `now`, with the view's current `peer_syncs`. Holding
    /// again while held restarts the hold (a second flap needs its own sync).
    pub fn hold(
        &mut self,
        now: Instant,
        syncs: &PeerSyncs,
        drop_existing: bool,
        reason: HoldReason,
    ) {
        let drop_existing = drop_existing || self.held.as_ref().is_some_and(|h| h.drop_existing);
        self.held = Some(Held {
            reason,
            since: now,
            syncs_at: syncs.clone(),
            synced: None,
            drop_existing,
        });
    }

    #[must_use]
    pub fn is_held(&self) -> bool {
        self.held.is_some()
    }

    /// The hold in progress, as of the last [`ClaimHold::check`].
    #[must_use]
    pub fn status(&self) -> Option<HoldStatus> {
        self.held.as_ref().map(|h| HoldStatus {
            reason: h.reason.clone(),
            since: h.since,
            deadline: h.since + self.hold_down,
            synced: h.synced.map(|t| (t, t + self.settle)),
            drop_existing: h.drop_existing,
        })
    }

    /// What may be claimed at `now`, given the view's `peer_syncs` and the peers it holds live
    /// (this node excluded); ends the hold when it is over.
    pub fn check(&mut self, now: Instant, syncs: &PeerSyncs, live: &BTreeSet<NodeName>) -> Claims {
        let Some(h) = self.held.as_mut() else {
            return Claims::All;
        };
        let count = |m: &PeerSyncs, p: &NodeName| m.get(p).copied().unwrap_or(0);
        let all_synced =
            !live.is_empty() && live.iter().all(|p| count(syncs, p) > count(&h.syncs_at, p));
        if h.synced.is_none() && all_synced {
            h.synced = Some(now);
        }
        let settled = h
            .synced
            .is_some_and(|t| now.saturating_duration_since(t) >= self.settle);
        let expired = now.saturating_duration_since(h.since) >= self.hold_down;
        if settled || expired {
            self.held = None;
            return Claims::All;
        }
        if h.drop_existing {
            Claims::None
        } else {
            Claims::KeepOnly
        }
    }
}

/// Whether this node refuted a claim about itself since `seen` (the view's `refutations`):
/// peers may have moved its addresses meanwhile, so it announces what it owns again.
#[must_use]
pub fn refuted_since(seen: &mut u64, refutations: u64) -> bool {
    let grew = refutations > *seen;
    *seen = refutations;
    grew
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// `n` syncs with peer `b` (the only live peer of most tests).
    fn b(n: u64) -> PeerSyncs {
        [(NodeName::from("b"), n)].into_iter().collect()
    }

    fn live() -> BTreeSet<NodeName> {
        [NodeName::from("b")].into_iter().collect()
    }

    #[test]
    fn without_a_hold_everything_is_claimed() {
        let mut h = ClaimHold::new(ms(1000), ms(50));
        assert_eq!(h.check(Instant::now(), &b(0), &live()), Claims::All);
    }

    #[test]
    fn a_sync_after_the_event_ends_the_hold_after_the_settle() {
        let t0 = Instant::now();
        let mut h = ClaimHold::new(ms(1000), ms(50));
        h.hold(t0, &b(7), false, HoldReason::Start);
        // Syncs from before the event do not count.
        assert_eq!(h.check(t0 + ms(10), &b(7), &live()), Claims::KeepOnly);
        assert_eq!(h.check(t0 + ms(30), &b(8), &live()), Claims::KeepOnly);
        assert_eq!(h.check(t0 + ms(60), &b(8), &live()), Claims::KeepOnly);
        assert_eq!(h.check(t0 + ms(80), &b(8), &live()), Claims::All);
        assert!(!h.is_held());
    }

    #[test]
    fn every_live_peer_must_sync_not_only_the_first_to_answer() {
        let t0 = Instant::now();
        let mut h = ClaimHold::new(ms(1000), ms(0));
        let peers: BTreeSet<NodeName> = ["b".into(), "c".into()].into_iter().collect();
        let at: PeerSyncs = [("b".into(), 4), ("c".into(), 2)].into_iter().collect();
        h.hold(t0, &at, false, HoldReason::Freeze);
        let b_only: PeerSyncs = [("b".into(), 5), ("c".into(), 2)].into_iter().collect();
        assert_eq!(h.check(t0 + ms(10), &b_only, &peers), Claims::KeepOnly);
        let both: PeerSyncs = [("b".into(), 5), ("c".into(), 3)].into_iter().collect();
        assert_eq!(h.check(t0 + ms(20), &both, &peers), Claims::All);
        // A peer first seen after the event counts from zero; with no live peer at all only the
        // hold-down ends the hold.
        h.hold(t0 + ms(30), &both, false, HoldReason::Start);
        let more: BTreeSet<NodeName> = ["b".into(), "c".into(), "d".into()].into_iter().collect();
        let no_d: PeerSyncs = [("b".into(), 6), ("c".into(), 4)].into_iter().collect();
        assert_eq!(h.check(t0 + ms(40), &no_d, &more), Claims::KeepOnly);
        assert_eq!(
            h.check(t0 + ms(50), &no_d, &BTreeSet::new()),
            Claims::KeepOnly
        );
        let with_d: PeerSyncs = [("b".into(), 6), ("c".into(), 4), ("d".into(), 1)]
            .into_iter()
            .collect();
        assert_eq!(h.check(t0 + ms(60), &with_d, &more), Claims::All);
    }

    #[test]
    fn with_no_peer_answering_the_hold_down_ends_it() {
        let t0 = Instant::now();
        let mut h = ClaimHold::new(ms(1000), ms(50));
        h.hold(t0, &b(0), false, HoldReason::Start);
        assert_eq!(h.check(t0 + ms(999), &b(0), &live()), Claims::KeepOnly);
        assert_eq!(h.check(t0 + ms(1000), &b(0), &live()), Claims::All);
    }

    #[test]
    fn after_a_freeze_existing_claims_are_dropped_until_the_sync() {
        let t0 = Instant::now();
        let mut h = ClaimHold::new(ms(1000), ms(0));
        h.hold(t0, &b(3), true, HoldReason::Start);
        assert_eq!(h.check(t0 + ms(5), &b(3), &live()), Claims::None);
        // A link flap during that hold keeps dropping.
        h.hold(t0 + ms(10), &b(3), false, HoldReason::Start);
        assert_eq!(h.check(t0 + ms(20), &b(3), &live()), Claims::None);
        assert_eq!(h.check(t0 + ms(30), &b(4), &live()), Claims::All);
    }

    #[test]
    fn a_new_event_restarts_the_hold() {
        let t0 = Instant::now();
        let mut h = ClaimHold::new(ms(1000), ms(0));
        h.hold(t0, &b(0), false, HoldReason::Start);
        h.hold(t0 + ms(900), &b(0), false, HoldReason::Start);
        assert_eq!(h.check(t0 + ms(1500), &b(0), &live()), Claims::KeepOnly);
        assert_eq!(h.check(t0 + ms(1900), &b(0), &live()), Claims::All);
    }

    #[test]
    fn the_status_says_why_since_when_and_until_what() {
        let t0 = Instant::now();
        let mut h = ClaimHold::new(ms(1000), ms(50));
        assert_eq!(h.status(), None);
        h.hold(t0, &b(2), false, HoldReason::LinkUp(vec!["eth1".into()]));
        assert_eq!(h.check(t0 + ms(10), &b(2), &live()), Claims::KeepOnly);
        let s = h.status().unwrap();
        assert_eq!(s.reason, HoldReason::LinkUp(vec!["eth1".into()]));
        assert_eq!(s.reason.to_string(), "link-up on eth1");
        assert_eq!((s.since, s.deadline, s.synced), (t0, t0 + ms(1000), None));
        assert!(!s.drop_existing);
        // A sync: the hold now ends after the settle, well before the hold-down.
        assert_eq!(h.check(t0 + ms(20), &b(3), &live()), Claims::KeepOnly);
        assert_eq!(h.status().unwrap().synced, Some((t0 + ms(20), t0 + ms(70))));
        // A freeze restarts it, with its own reason, and the sync must happen again.
        h.hold(t0 + ms(30), &b(3), true, HoldReason::Freeze);
        let s = h.status().unwrap();
        assert_eq!(s.reason.to_string(), "resumed after a freeze");
        assert_eq!(
            (s.since, s.synced, s.drop_existing),
            (t0 + ms(30), None, true)
        );
        assert_eq!(h.check(t0 + ms(1030), &b(3), &live()), Claims::All);
        assert_eq!(h.status(), None);
    }

    #[test]
    fn refutations_trigger_one_reannouncement_each_time_they_grow() {
        let mut seen = 0;
        assert!(!refuted_since(&mut seen, 0));
        assert!(refuted_since(&mut seen, 1));
        assert!(!refuted_since(&mut seen, 1));
        assert!(refuted_since(&mut seen, 3));
    }
}
