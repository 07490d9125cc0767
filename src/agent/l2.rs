//! The agent's L2 announcements: eligibility from the model and the interfaces, ownership from
//! the membership view (rendezvous hashing), the eBPF responder's address map, gratuitous
//! ARP / unsolicited NA bursts on gaining an address, and the `/v1/l2` view.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use crate::api::L2View;
use crate::datapath::{DatapathConfig, L2Responder};
use crate::l2::announce::{Multicast, announce};
use crate::l2::eligibility::{Candidate, LocalInterface, candidates};
use crate::l2::heartbeat::{self, Progress};
use crate::l2::hold::{ClaimHold, Claims, HoldReason, PeerSyncs, SETTLE, refuted_since};
use crate::l2::membership::{MemberState, MemberView, MembershipView};
use crate::l2::ownership::{AddrReq, NodeName, assign};
use crate::l2::view::{self, Claimed, Clock, ViewInput};
use crate::model::{ServiceName, Snapshot};

/// Delays of the announcement burst after gaining an address (the first goes out at once).
const BURST: [Duration; 4] = [
    Duration::ZERO,
    Duration::from_millis(100),
    Duration::from_millis(300),
    Duration::from_secs(1),
];

mod ifaces;
mod member;
mod takeover;

use ifaces::local_interfaces;
pub use takeover::{Gain, Gained};

pub use member::{DEFAULT_KEY_FILE, KeySource, MemberConfig};

/// `--l2-bind`, `--l2-peers`, `--l2-standalone`, `--l2-key-file`, `--l2-reannounce-seconds`,
/// `--l2-claim-hold-ms`.
#[derive(Clone, Debug)]
pub struct L2Config {
    /// Membership: bound to this node's address (flag, Node InternalIP or `HOST_IP`), or
    /// standalone.
    pub member: MemberConfig,
    pub reannounce: Option<Duration>,
    /// After a start, a link-up or a freeze, the longest wait for a membership sync before
    /// claiming by this node's own view (see [`crate::l2::hold`]).
    pub claim_hold: Duration,
}

impl Default for L2Config {
    fn default() -> Self {
        Self {
            member: MemberConfig::default(),
            reannounce: None,
            claim_hold: crate::l2::hold::DEFAULT_HOLD_DOWN,
        }
    }
}

/// Addresses this node owns right now, shared with announcement bursts so a burst stops the
/// moment ownership moves.
type OwnedNow = std::sync::Arc<std::sync::Mutex<BTreeSet<IpAddr>>>;

struct Owned {
    interface: String,
    ifindex: u32,
    mac: [u8; 6],
    since_unix_ms: u64,
}

pub struct L2Part {
    responder: L2Responder,
    multicast: Multicast,
    member: member::Member,
    /// Devices the north-south datapath serves: only they answer ARP/NDP.
    served: BTreeSet<String>,
    node: String,
    cfg: L2Config,
    candidates: Vec<Candidate>,
    owned: BTreeMap<IpAddr, Owned>,
    last_interfaces: Vec<LocalInterface>,
    view: L2View,
    owned_now: OwnedNow,
    /// When the interface poll last ran: a long gap means this agent was frozen (SIGSTOP,
    /// a stalled VM) and must announce what it owns again.
    last_poll: std::time::Instant,
    /// The main loop's progress, which keeps the heartbeat thread writing.
    progress: std::sync::Arc<Progress>,
    stop_heartbeat: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Freezes the heartbeat thread reported that this part has handled.
    freezes_seen: u64,
    /// No new claims after a start, link-up or freeze until membership synced.
    hold: ClaimHold,
    /// Whether [`L2Part::update`] ran once (the interfaces coming up then are the start).
    updated: bool,
    /// The view's `refutations` last seen.
    refutations_seen: u64,
    /// Live members at the last decision: a member (re)joining may have claimed and announced
    /// addresses this node kept (while it was cut off), so the keeper announces them again.
    live_seen: BTreeSet<String>,
    /// Interfaces the responder could not attach to, with the reason (retried on every
    /// update; they are not eligible meanwhile: a node must not own an address it cannot
    /// answer ARP/NDP for).
    attach_failures: Vec<(String, String)>,
    /// Announcements, takeovers and failover durations for `/metrics`.
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    takeovers: takeover::Takeovers,
    /// Addresses this node started announcing since [`L2Part::take_gains`] (the flow history's
    /// `l2` takeover events).
    gains: Vec<Gained>,
}

impl Drop for L2Part {
    fn drop(&mut self) {
        self.stop_heartbeat
            .store(true, std::sync::atomic::Ordering::Release);
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl L2Part {
    pub fn open(
        dp: &DatapathConfig,
        node: &str,
        cfg: L2Config,
        metrics: std::sync::Arc<crate::metrics::Metrics>,
    ) -> Result<Self, crate::datapath::DatapathError> {
        let mut responder = L2Responder::open(dp)?;
        // A previous run's claims stay pinned: answering from them before this run has heard
        // the others would double-answer with whoever took over meanwhile.
        responder.set_owned(&BTreeSet::new())?;
        let progress = Progress::new();
        let stop_heartbeat = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        if let Some(mut live) = responder.take_heartbeat() {
            let spawned = heartbeat::spawn(progress.clone(), stop_heartbeat.clone(), move |now| {
                live.write(now).map_err(|e| e.to_string())
            });
            if let Err(e) = spawned {
                warn!(error = %e, "starting the L2 heartbeat thread; the responder stays silent");
            }
        }
        let member = member::Member::new(cfg.member.clone(), node);
        let hold = ClaimHold::new(cfg.claim_hold, SETTLE);
        Ok(Self {
            responder,
            multicast: Multicast::default(),
            progress,
            stop_heartbeat,
            freezes_seen: 0,
            hold,
            updated: false,
            refutations_seen: 0,
            live_seen: BTreeSet::new(),
            attach_failures: Vec::new(),
            member,
            served: BTreeSet::new(),
            node: node.to_string(),
            cfg,
            candidates: Vec::new(),
            owned: BTreeMap::new(),
            last_interfaces: Vec::new(),
            view: L2View::default(),
            owned_now: OwnedNow::default(),
            last_poll: std::time::Instant::now(),
            metrics,
            takeovers: takeover::Takeovers::default(),
            gains: Vec::new(),
        })
    }

    /// Interfaces the responder failed to attach to at the last update, with the reason.
    pub fn attach_failures(&self) -> &[(String, String)] {
        &self.attach_failures
    }

    /// The main loop made progress: the heartbeat thread keeps the responder answering (also
    /// before the first snapshot).
    pub fn heartbeat(&mut self) {
        self.progress.bump();
    }

    /// The view's full-state exchanges per peer, and the peers it holds live (this node
    /// excluded); both empty without membership.
    fn syncs(&self) -> (PeerSyncs, BTreeSet<NodeName>) {
        self.member
            .running
            .as_ref()
            .map_or_else(Default::default, |(_, rx)| {
                let v = rx.borrow();
                let live = v
                    .live()
                    .filter(|m| m.name != v.local)
                    .map(|m| m.name.clone())
                    .collect();
                (v.peer_syncs.clone(), live)
            })
    }

    /// Holds new claims (and with `drop_existing` the current ones) until membership synced
    /// with a peer, and asks for that sync now. No-op without membership.
    fn hold_claims(&mut self, drop_existing: bool, reason: HoldReason) {
        let Some((handle, _)) = &self.member.running else {
            return;
        };
        if let Err(e) = handle.resync() {
            warn!(error = %e, "L2 membership resync");
        }
        info!(
            why = %reason,
            drop_existing, "holding L2 claims until membership has synced"
        );
        let (syncs, _) = self.syncs();
        self.hold
            .hold(std::time::Instant::now(), &syncs, drop_existing, reason);
    }

    /// A receiver of membership view changes, for the agent loop (none when standalone).
    pub fn view_receiver(&self) -> Option<watch::Receiver<MembershipView>> {
        (!self.member.standalone()).then(|| self.member.receiver())
    }

    /// The devices last set by [`Self::set_served`].
    #[must_use]
    pub fn served(&self) -> &BTreeSet<String> {
        &self.served
    }

    /// The devices the north-south datapath is attached to (only they answer ARP/NDP).
    pub fn set_served(&mut self, devices: BTreeSet<String>) {
        self.served = devices;
    }

    /// Starts the membership once this node's address is known (retried every second);
    /// a start holds claims until the first sync. Returns whether it started now.
    fn ensure_membership(&mut self, snapshot: &Snapshot) -> bool {
        let started = self.member.ensure(snapshot);
        if started {
            self.hold.hold(
                std::time::Instant::now(),
                &PeerSyncs::new(),
                false,
                HoldReason::Start,
            );
        }
        started
    }

    /// New model: recompute eligibility, advertise it, re-decide ownership.
    pub fn update(&mut self, snapshot: &Snapshot, lb_ips: &BTreeMap<ServiceName, Vec<IpAddr>>) {
        self.progress.bump();
        let interfaces = local_interfaces();
        let (mut cands, problems) =
            candidates(snapshot, lb_ips, &self.node, &interfaces, &self.served);
        let wanted_ifaces: Vec<String> = cands
            .iter()
            .filter_map(|c| c.interface.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let failed = self.responder.attach(&wanted_ifaces);
        for (iface, e) in &failed {
            warn!(interface = %iface, error = %e, "attaching the L2 responder failed; retrying");
        }
        self.attach_failures = failed
            .iter()
            .map(|(i, e)| (i.clone(), e.to_string()))
            .collect();
        if !failed.is_empty() {
            let served: BTreeSet<String> = self
                .served
                .iter()
                .filter(|d| !failed.iter().any(|(f, _)| f == *d))
                .cloned()
                .collect();
            cands = candidates(snapshot, lb_ips, &self.node, &interfaces, &served).0;
        }
        for p in &problems {
            warn!(policy = %p.policy, problem = %p.message, "L2 announcement policy ignored");
        }
        // Announcing interfaces that were down or absent before (at start: all of them).
        let came_up: Vec<String> = cands
            .iter()
            .filter_map(|c| c.interface.as_deref())
            .filter(|name| !self.last_interfaces.iter().any(|l| l.name == *name && l.up))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .map(str::to_string)
            .collect();
        self.ensure_membership(snapshot);
        if let Some((handle, _)) = &self.member.running {
            handle.set_local_eligibility(
                cands
                    .iter()
                    .filter(|c| c.eligible)
                    .map(|c| c.addr)
                    .collect(),
            );
        }
        self.candidates = cands;
        self.last_interfaces = interfaces;
        if !came_up.is_empty() {
            // After the eligibility above: the sync carries it.
            let reason = if self.updated {
                HoldReason::LinkUp(came_up)
            } else {
                HoldReason::Start
            };
            self.hold_claims(false, reason);
        }
        self.updated = true;
        self.decide();
    }

    /// Interface state poll: a NIC going down must drop eligibility at once.
    pub fn poll_interfaces(
        &mut self,
        snapshot: &Snapshot,
        lb_ips: &BTreeMap<ServiceName, Vec<IpAddr>>,
    ) {
        let gap = self.last_poll.elapsed();
        self.last_poll = std::time::Instant::now();
        let freezes = self.progress.freezes();
        let froze = freezes != self.freezes_seen;
        self.freezes_seen = freezes;
        if froze && self.member.running.is_some() {
            // The responder went silent and the others may have taken over: drop the claims
            // until the views agree again (re-claiming announces them).
            info!(gap_ms = gap.as_millis(), "resumed after a freeze");
            self.hold_claims(true, HoldReason::Freeze);
            self.decide();
        } else if froze || gap > Duration::from_secs(1) {
            info!(
                gap_ms = gap.as_millis(),
                "resumed after a stall; announcing owned addresses again"
            );
            self.burst_owned();
        }
        // Not bound yet: retry (at most once a second); once it starts, advertise at once.
        let started = self.member.running.is_none()
            && !self.member.standalone()
            && self.ensure_membership(snapshot);
        if started
            || local_interfaces() != self.last_interfaces
            || self.responder.has_stale_interfaces()
        {
            self.update(snapshot, lb_ips);
        } else if self.hold.is_held() {
            self.decide();
        }
        // Last: after a freeze the heartbeat thread waits for progress made after the claims
        // were dropped.
        self.progress.bump();
    }

    /// Announces every owned address again (bursts).
    fn burst_owned(&self) {
        for (ip, o) in &self.owned {
            burst(
                o.interface.clone(),
                o.ifindex,
                o.mac,
                *ip,
                self.owned_now.clone(),
                self.metrics.clone(),
            );
        }
    }

    fn members(&self) -> Vec<MemberView> {
        match &self.member.running {
            Some((_, rx)) => rx.borrow().live().cloned().collect(),
            // Not bound: nobody may claim (never a silent fallback to deciding alone).
            None if !self.member.standalone() => Vec::new(),
            None => vec![MemberView {
                name: self.node.as_str().into(),
                addr: SocketAddr::from(([0, 0, 0, 0], 0)),
                state: MemberState::Alive,
                incarnation: 0,
                eligible: self
                    .candidates
                    .iter()
                    .filter(|c| c.eligible)
                    .map(|c| c.addr)
                    .collect(),
                since_unix_ms: 0,
            }],
        }
    }

    /// Ownership from the current view; updates the responder map and announces gains.
    pub fn decide(&mut self) {
        if let Some((_, rx)) = &self.member.running {
            self.takeovers.observe(&rx.borrow().members);
        }
        let mut members = self.members();
        // This node's own eligibility is always current locally (the view may lag by a tick).
        let mine: BTreeSet<IpAddr> = self
            .candidates
            .iter()
            .filter(|c| c.eligible)
            .map(|c| c.addr)
            .collect();
        if let Some(me) = members.iter_mut().find(|m| m.name == self.node.as_str()) {
            me.eligible.clone_from(&mine);
        }
        let owners = assign(&AddrReq::from_candidates(&self.candidates), &members);
        let now = unix_ms();
        let (syncs, live_peers) = self.syncs();
        let was_held = self.hold.is_held();
        let claims = self
            .hold
            .check(std::time::Instant::now(), &syncs, &live_peers);
        // A hold that ends (synced, or the hold-down passed) is when the interim owner has
        // released: what this node kept through the hold (a link that came back up) may have
        // been announced by that owner meanwhile, and its last GARP may have gone out after
        // ours at the rejoin, so the kept claims are announced again now.
        let hold_ended = was_held && !self.hold.is_held();
        let refuted = self.member.running.as_ref().is_some_and(|(_, rx)| {
            let r = rx.borrow().refutations;
            refuted_since(&mut self.refutations_seen, r)
        });
        let live: BTreeSet<String> = members.iter().map(|m| m.name.to_string()).collect();
        let rejoined = !self.live_seen.is_empty() && !live.is_subset(&self.live_seen);
        self.live_seen = live;
        let mut next: BTreeMap<IpAddr, Owned> = BTreeMap::new();
        for c in &self.candidates {
            if owners.get(&c.addr).map(smol_str::SmolStr::as_str) != Some(self.node.as_str()) {
                continue;
            }
            let allowed = match claims {
                Claims::All => true,
                Claims::KeepOnly => self.owned.contains_key(&c.addr),
                Claims::None => false,
            };
            if !allowed {
                continue;
            }
            let Some(iface) = &c.interface else { continue };
            let (Some(mac), Some(ifindex)) = (
                self.responder.mac_of(iface),
                self.responder.ifindex_of(iface),
            ) else {
                continue;
            };
            let since = self.owned.get(&c.addr).map_or(now, |o| o.since_unix_ms);
            next.insert(
                c.addr,
                Owned {
                    interface: iface.clone(),
                    ifindex,
                    mac,
                    since_unix_ms: since,
                },
            );
        }
        let set: BTreeSet<(IpAddr, String)> = next
            .iter()
            .map(|(ip, o)| (*ip, o.interface.clone()))
            .collect();
        if let Err(e) = self.responder.set_owned(&set) {
            warn!(error = %e, "updating the L2 responder map");
        }
        self.release_lost(&next);
        for (ip, o) in &next {
            if !self.owned.contains_key(ip) {
                info!(address = %ip, interface = %o.interface, "announcing");
                self.gained(*ip, &o.interface, now);
                if let IpAddr::V6(v6) = ip
                    && let Err(e) = self.multicast.join(&o.interface, o.ifindex, *v6)
                {
                    warn!(error = %e, "joining solicited-node group");
                }
                burst(
                    o.interface.clone(),
                    o.ifindex,
                    o.mac,
                    *ip,
                    self.owned_now.clone(),
                    self.metrics.clone(),
                );
            }
        }
        *self
            .owned_now
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = next.keys().copied().collect();
        if refuted || rejoined || hold_ended {
            self.reannounce_kept(&next);
        }
        self.owned = next;
        self.publish(&owners, &members);
    }

    /// Counts a takeover of `ip` for `/metrics` and keeps the gain for the flow history.
    fn gained(&mut self, ip: IpAddr, interface: &str, now: u64) {
        let gain = self
            .takeovers
            .gained(ip, &self.node, &self.view.addresses, now);
        if let Gain::Takeover { failover, .. } = &gain {
            self.metrics.l2_takeover(*failover);
        }
        self.gains.push(Gained {
            address: ip,
            interface: interface.to_owned(),
            gain,
            at_unix_ms: now,
        });
    }

    /// The addresses this node started announcing since the last call (at most one entry per
    /// address and decision: the caller drains it after every update).
    pub fn take_gains(&mut self) -> Vec<Gained> {
        std::mem::take(&mut self.gains)
    }

    /// Stops announcing what `next` no longer owns: leaves its solicited-node groups, counts it.
    fn release_lost(&mut self, next: &BTreeMap<IpAddr, Owned>) {
        for (ip, o) in &self.owned {
            if !next.contains_key(ip) {
                info!(address = %ip, interface = %o.interface, "stopped announcing");
                self.metrics.l2_released();
                if let IpAddr::V6(v6) = ip
                    && let Err(e) = self.multicast.leave(&o.interface, o.ifindex, *v6)
                {
                    warn!(error = %e, "leaving solicited-node group");
                }
            }
        }
    }

    /// After refuting a suspicion or death claim, when a member (re)joins, or when a claim hold
    /// ends: peers may have moved (and announced) this node's addresses briefly, so it announces
    /// those it kept again (gained ones got their burst already).
    fn reannounce_kept(&self, next: &BTreeMap<IpAddr, Owned>) {
        for (ip, o) in next.iter().filter(|(ip, _)| self.owned.contains_key(*ip)) {
            info!(address = %ip, "a claim refuted, a member rejoined or a claim hold ended; announcing again");
            burst(
                o.interface.clone(),
                o.ifindex,
                o.mac,
                *ip,
                self.owned_now.clone(),
                self.metrics.clone(),
            );
        }
    }

    /// The optional periodic re-announcement of everything this node owns.
    pub fn reannounce_interval(&self) -> Option<Duration> {
        self.cfg.reannounce
    }

    pub fn reannounce(&self) {
        for (ip, o) in &self.owned {
            match announce(&o.interface, o.ifindex, o.mac, *ip) {
                Ok(()) => self.metrics.l2_announced(*ip),
                Err(e) => warn!(error = %e, "re-announcing"),
            }
        }
    }

    fn publish(&mut self, owners: &BTreeMap<IpAddr, NodeName>, members: &[MemberView]) {
        let claimed: BTreeMap<IpAddr, Claimed<'_>> = self
            .owned
            .iter()
            .map(|(ip, o)| {
                let c = Claimed {
                    interface: &o.interface,
                    since_unix_ms: o.since_unix_ms,
                };
                (*ip, c)
            })
            .collect();
        let hold = self.hold.status();
        let v = view::build(&ViewInput {
            node: &self.node,
            members,
            candidates: &self.candidates,
            owners,
            claimed: &claimed,
            hold: hold.as_ref(),
            clock: Clock::now(),
        });
        self.view = v;
        self.view.membership = self.member.view();
    }

    /// The view, with the membership's counters as of now.
    pub fn view(&mut self) -> &L2View {
        self.view.membership = self.member.view();
        &self.view
    }
}

/// Gratuitous ARP / unsolicited NA now and a few times after, off the reconcile path.
fn burst(
    ifname: String,
    ifindex: u32,
    mac: [u8; 6],
    ip: IpAddr,
    owned: OwnedNow,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
) {
    tokio::spawn(async move {
        for delay in BURST {
            tokio::time::sleep(delay).await;
            if !owned
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .contains(&ip)
            {
                return;
            }
            match announce(&ifname, ifindex, mac, ip) {
                Ok(()) => metrics.l2_announced(ip),
                Err(e) => warn!(error = %e, "announcing"),
            }
        }
    });
}
