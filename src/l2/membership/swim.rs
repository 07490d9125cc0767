//! The SWIM protocol as a sans-IO state machine: datagrams and the current time go in, datagrams
//! to send, membership events and the view come out. The async service drives it over UDP; the
//! simulation tests drive it with virtual time, loss, partitions and frozen members.
//!
//! Per probe period a member pings one peer (round robin over a shuffled list). Without an ack
//! after `ack_timeout` it pings again and asks up to `indirect_probes` other members to ping the
//! peer for it (ping-req); with no ack by the end of the period the peer becomes suspect. A
//! suspect that does not refute (by gossiping a higher incarnation) within the suspicion timeout
//! is declared dead. Every message piggybacks queued records; suspicion and death notices also
//! go straight to the accused so a live member refutes within one round trip.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::config::Timing;
use super::table::{Gossip, Outcome, Table};
use super::view::{MemberState, MemberView, MembershipView};
use super::wire::{MAX_DATAGRAM, Msg, Packet, Record, header_len};
use crate::l2::ownership::NodeName;

mod timers;

/// Something worth a log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A member was first seen alive/suspect, or changed state.
    Member {
        name: NodeName,
        addr: SocketAddr,
        from: Option<MemberState>,
        to: MemberState,
        incarnation: u64,
        reported_by: NodeName,
    },
    /// A live member advertised a different set of eligible addresses.
    Eligibility {
        name: NodeName,
        incarnation: u64,
        addresses: usize,
    },
    /// Another member claimed this node suspect, dead or gone; it bumped its incarnation.
    Refuted {
        claim: MemberState,
        accused_by: NodeName,
        incarnation: u64,
    },
    /// A datagram under this node's name came from another address (two agents, one name).
    NameConflict { addr: SocketAddr },
    /// A datagram of another cluster (different cluster name).
    ForeignCluster { addr: SocketAddr },
}

/// Who this node is, for [`Swim::new`].
#[derive(Clone, Debug)]
pub struct Identity {
    pub name: NodeName,
    pub addr: SocketAddr,
    pub cluster: u32,
    /// Starting incarnation; the service uses the clock (ms) so a restarted agent outranks
    /// what the cluster remembers of its previous run.
    pub incarnation: u64,
    pub eligible: BTreeSet<IpAddr>,
}

/// SplitMix64: small, fast, good enough to pick probe targets and relays.
#[derive(Clone, Debug)]
pub(super) struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform-ish in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        let n64 = u64::try_from(n).unwrap_or(u64::MAX).max(1);
        usize::try_from(self.next_u64() % n64).unwrap_or(0)
    }

    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

#[derive(Debug)]
struct Probe {
    target: NodeName,
    addr: SocketAddr,
    seq: u32,
    started: Instant,
    indirect_sent: bool,
    acked: bool,
}

#[derive(Debug)]
struct Relay {
    seq: u32,
    origin: SocketAddr,
    origin_seq: u32,
    expires: Instant,
}

pub struct Swim {
    timing: Timing,
    me: Identity,
    left: bool,
    table: Table,
    seeds: Vec<SocketAddr>,
    rng: Rng,
    order: Vec<NodeName>,
    probe: Option<Probe>,
    next_probe: Instant,
    relays: Vec<Relay>,
    seq: u32,
    gossip: Gossip,
    next_sync: Instant,
    next_rejoin: Instant,
    outbox: Vec<(SocketAddr, Packet)>,
    events: Vec<Event>,
    changed: bool,
    clock: (Instant, u64),
    /// Full-state messages received from peers (see [`MembershipView::syncs`]).
    syncs: u64,
    /// The same, per peer (see [`MembershipView::peer_syncs`]).
    peer_syncs: std::collections::BTreeMap<NodeName, u64>,
    /// Times this node refuted a suspicion or death claim (see [`MembershipView::refutations`]).
    refutations: u64,
}

impl Swim {
    /// A member that will join through `seeds` on its first [`Swim::handle_timeout`].
    /// `unix_ms` is the wall clock at `now` (for the view's timestamps).
    pub fn new(
        me: Identity,
        seeds: Vec<SocketAddr>,
        timing: Timing,
        now: Instant,
        unix_ms: u64,
        seed: u64,
    ) -> Self {
        let mut rng = Rng::new(seed);
        let interval_ms = u64::try_from(timing.probe_interval.as_millis()).unwrap_or(u64::MAX);
        let jitter = Duration::from_millis(rng.next_u64() % interval_ms.max(1));
        let mut swim = Self {
            next_probe: now + jitter,
            next_sync: now + timing.sync_interval,
            next_rejoin: now,
            seq: u32::try_from(rng.next_u64() >> 33).unwrap_or(0),
            timing,
            me,
            left: false,
            table: Table::default(),
            seeds,
            rng,
            order: Vec::new(),
            probe: None,
            relays: Vec::new(),
            gossip: Gossip::default(),
            outbox: Vec::new(),
            events: Vec::new(),
            changed: true,
            clock: (now, unix_ms),
            syncs: 0,
            peer_syncs: std::collections::BTreeMap::new(),
            refutations: 0,
        };
        let own = swim.own_record();
        swim.gossip.push(own, now);
        swim
    }

    pub fn name(&self) -> &NodeName {
        &self.me.name
    }

    pub fn incarnation(&self) -> u64 {
        self.me.incarnation
    }

    pub fn take_outbox(&mut self) -> Vec<(SocketAddr, Packet)> {
        std::mem::take(&mut self.outbox)
    }

    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// Whether the view changed since the last call.
    pub fn take_changed(&mut self) -> bool {
        std::mem::replace(&mut self.changed, false)
    }

    pub fn set_seeds(&mut self, seeds: Vec<SocketAddr>) {
        self.seeds = seeds;
    }

    /// A full-state exchange with every seed and every known member, now (not at the next
    /// rejoin interval): after this node's link comes back up, views merge within a round trip
    /// and [`MembershipView::syncs`] grows as the answers arrive.
    pub fn resync(&mut self) {
        if self.left {
            return;
        }
        let mut targets: Vec<SocketAddr> = Vec::new();
        let known = self.table.iter().map(|(_, m)| m.addr);
        for addr in self.seeds.iter().copied().chain(known) {
            if addr != self.me.addr && !targets.contains(&addr) {
                targets.push(addr);
            }
        }
        for to in targets {
            self.push_sync(to, true);
        }
    }

    /// New local eligibility: a new incarnation carrying it goes to every live member at once.
    pub fn set_eligible(&mut self, now: Instant, eligible: BTreeSet<IpAddr>) {
        if self.left || eligible == self.me.eligible {
            return;
        }
        self.me.eligible = eligible;
        self.me.incarnation += 1;
        self.changed = true;
        self.events.push(Event::Eligibility {
            name: self.me.name.clone(),
            incarnation: self.me.incarnation,
            addresses: self.me.eligible.len(),
        });
        let own = self.own_record();
        self.gossip.push(own.clone(), now);
        let peers: Vec<SocketAddr> = self.table.live().map(|(_, m)| m.addr).collect();
        for addr in peers {
            self.push(now, addr, Msg::Gossip, vec![own.clone()]);
        }
    }

    /// Graceful goodbye: every live member hears "left" at once; the node then stays silent.
    pub fn leave(&mut self, now: Instant) {
        if self.left {
            return;
        }
        self.me.incarnation += 1;
        let mut bye = self.own_record();
        bye.state = MemberState::Left;
        bye.eligible.clear();
        let peers: Vec<SocketAddr> = self.table.live().map(|(_, m)| m.addr).collect();
        for addr in peers {
            // Twice: a lost goodbye costs a full failure detection.
            self.push(now, addr, Msg::Gossip, vec![bye.clone()]);
            self.push(now, addr, Msg::Gossip, vec![bye.clone()]);
        }
        self.left = true;
        self.changed = true;
    }

    fn own_record(&self) -> Record {
        Record {
            name: self.me.name.clone(),
            addr: self.me.addr,
            incarnation: self.me.incarnation,
            state: if self.left {
                MemberState::Left
            } else {
                MemberState::Alive
            },
            from: self.me.name.clone(),
            eligible: self.me.eligible.clone(),
        }
    }

    fn unix_ms(&self, at: Instant) -> u64 {
        let ms = at.saturating_duration_since(self.clock.0).as_millis();
        self.clock.1 + u64::try_from(ms).unwrap_or(u64::MAX)
    }

    pub fn view(&self) -> MembershipView {
        let own = MemberView {
            name: self.me.name.clone(),
            addr: self.me.addr,
            state: if self.left {
                MemberState::Left
            } else {
                MemberState::Alive
            },
            incarnation: self.me.incarnation,
            eligible: self.me.eligible.clone(),
            since_unix_ms: self.clock.1,
        };
        let mut members: Vec<MemberView> = self
            .table
            .iter()
            .map(|(name, m)| MemberView {
                name: name.clone(),
                addr: m.addr,
                state: m.state,
                incarnation: m.incarnation,
                eligible: m.eligible.clone(),
                since_unix_ms: self.unix_ms(m.since),
            })
            .collect();
        members.push(own);
        members.sort_by(|a, b| a.name.cmp(&b.name));
        MembershipView {
            local: self.me.name.clone(),
            members,
            syncs: self.syncs,
            peer_syncs: self.peer_syncs.clone(),
            refutations: self.refutations,
        }
    }

    fn retransmit_limit(&self) -> u32 {
        let n = u32::try_from(self.table.live_count()).unwrap_or(u32::MAX);
        // ⌈log2(n + 2)⌉: members including this one, plus one.
        let log = u32::BITS - (n.saturating_add(1)).leading_zeros();
        self.timing.retransmit_mult.saturating_mul(log.max(1))
    }

    /// Queues `msg` to `to` with as many gossip records as fit after `records`.
    fn push(&mut self, now: Instant, to: SocketAddr, msg: Msg, mut records: Vec<Record>) {
        let used = header_len(&self.me.name, &msg)
            + records.iter().map(Record::encoded_len).sum::<usize>();
        let limit = self.retransmit_limit();
        let ttl = self.timing.gossip_ttl();
        records.extend(
            self.gossip
                .take(MAX_DATAGRAM.saturating_sub(used), limit, ttl, now),
        );
        self.outbox.push((
            to,
            Packet {
                cluster: self.me.cluster,
                from: self.me.name.clone(),
                msg,
                records,
            },
        ));
    }

    /// Sends the whole table (this node first) to `to`, split to fit datagrams; only the first
    /// part asks for the peer's table in return.
    fn push_sync(&mut self, to: SocketAddr, reply: bool) {
        let mut all = vec![self.own_record()];
        all.extend(self.table.iter().map(|(name, m)| m.record(name)));
        let mut ask = reply;
        let mut part: Vec<Record> = Vec::new();
        let mut used = header_len(&self.me.name, &Msg::Sync { reply });
        for r in all {
            let len = r.encoded_len();
            if !part.is_empty() && used + len > MAX_DATAGRAM {
                self.push_sync_part(to, ask, std::mem::take(&mut part));
                ask = false;
                used = header_len(&self.me.name, &Msg::Sync { reply });
            }
            used += len;
            part.push(r);
        }
        self.push_sync_part(to, ask, part);
    }

    fn push_sync_part(&mut self, to: SocketAddr, reply: bool, records: Vec<Record>) {
        self.outbox.push((
            to,
            Packet {
                cluster: self.me.cluster,
                from: self.me.name.clone(),
                msg: Msg::Sync { reply },
                records,
            },
        ));
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// A datagram from `src`.
    pub fn handle_packet(&mut self, now: Instant, src: SocketAddr, packet: Packet) {
        if self.left {
            return;
        }
        if packet.cluster != self.me.cluster {
            self.events.push(Event::ForeignCluster { addr: src });
            return;
        }
        if packet.from == self.me.name && src != self.me.addr {
            self.events.push(Event::NameConflict { addr: src });
            return;
        }
        let from_sync = matches!(packet.msg, Msg::Sync { .. });
        for record in &packet.records {
            self.merge(now, src, record, from_sync);
        }
        // The first part of a peer's full state starts with its own record. When it shows this
        // node live too, both sides now share one view (a request is answered with ours right
        // below). When it still holds this node dead (it learns the refutation only now), ask
        // for its state again and count that answer instead.
        let full = from_sync
            && packet
                .records
                .first()
                .is_some_and(|r| r.name == packet.from);
        let buried = packet
            .records
            .iter()
            .any(|r| r.name == self.me.name && !r.state.is_live());
        let ask_again = full && buried;
        if full && !buried {
            self.syncs += 1;
            *self.peer_syncs.entry(packet.from.clone()).or_default() += 1;
            self.changed = true;
        }
        match packet.msg {
            Msg::Ping { seq, target } => {
                // A ping for another name: an old member's address, now someone else's.
                if target == self.me.name {
                    self.push(now, src, Msg::Ack { seq }, Vec::new());
                }
            }
            Msg::Ack { seq } => {
                if let Some(p) = self.probe.as_mut().filter(|p| p.seq == seq) {
                    p.acked = true;
                } else if let Some(i) = self.relays.iter().position(|r| r.seq == seq) {
                    let relay = self.relays.swap_remove(i);
                    let ack = Msg::Ack {
                        seq: relay.origin_seq,
                    };
                    self.push(now, relay.origin, ack, Vec::new());
                }
            }
            Msg::PingReq {
                seq,
                target,
                target_addr,
            } => {
                let relay_seq = self.next_seq();
                self.relays.push(Relay {
                    seq: relay_seq,
                    origin: src,
                    origin_seq: seq,
                    expires: now + self.timing.probe_interval,
                });
                let ping = Msg::Ping {
                    seq: relay_seq,
                    target,
                };
                self.push(now, target_addr, ping, Vec::new());
            }
            Msg::Sync { reply } => {
                if reply || ask_again {
                    self.push_sync(src, ask_again);
                }
            }
            Msg::Gossip => {}
        }
    }

    fn merge(&mut self, now: Instant, src: SocketAddr, record: &Record, from_sync: bool) {
        if record.name == self.me.name {
            self.about_me(now, src, record);
            return;
        }
        let mut record = record.clone();
        // A peer's table may hold deaths it concluded while cut off from us: for a member we
        // see live, that only warrants a suspicion (it refutes if alive), as in memberlist.
        if from_sync
            && record.state == MemberState::Dead
            && self
                .table
                .get(&record.name)
                .is_some_and(|m| m.state.is_live())
        {
            record.state = MemberState::Suspect;
        }
        match self.table.apply(&record, now) {
            Outcome::Stale | Outcome::Confirmed => {}
            Outcome::Changed {
                old,
                eligibility_changed,
            } => {
                if old.is_none() && !record.state.is_live() {
                    // Remembered (so older records cannot revive it), not news.
                    return;
                }
                self.changed = true;
                if old != Some(record.state) {
                    self.events.push(Event::Member {
                        name: record.name.clone(),
                        addr: record.addr,
                        from: old,
                        to: record.state,
                        incarnation: record.incarnation,
                        reported_by: record.from.clone(),
                    });
                }
                if eligibility_changed {
                    self.events.push(Event::Eligibility {
                        name: record.name.clone(),
                        incarnation: record.incarnation,
                        addresses: record.eligible.len(),
                    });
                }
                if record.state.is_live() && !self.order.contains(&record.name) {
                    // New members join the probe order at a random place (SWIM 4.3).
                    let at = self.rng.below(self.order.len() + 1);
                    self.order.insert(at, record.name.clone());
                }
                if record.state == MemberState::Suspect && old != Some(MemberState::Suspect) {
                    self.notify_accused(now, &record);
                }
                self.gossip.push(record, now);
            }
        }
    }

    /// Tells a member directly that it is suspected or declared dead, so that, if it is alive,
    /// it refutes within a round trip instead of when the gossip reaches it.
    fn notify_accused(&mut self, now: Instant, record: &Record) {
        self.push(now, record.addr, Msg::Gossip, vec![record.clone()]);
    }

    fn about_me(&mut self, now: Instant, src: SocketAddr, record: &Record) {
        if record.addr != self.me.addr {
            if record.state.is_live() {
                self.events.push(Event::NameConflict { addr: record.addr });
            }
            return;
        }
        if record.incarnation < self.me.incarnation {
            return;
        }
        if record.state == MemberState::Alive {
            if record.incarnation > self.me.incarnation {
                // What the cluster remembers of an earlier run of this node: outrank it.
                self.me.incarnation = record.incarnation + 1;
                self.changed = true;
                let own = self.own_record();
                self.gossip.push(own, now);
            }
            return;
        }
        self.me.incarnation = record.incarnation + 1;
        self.changed = true;
        self.refutations += 1;
        self.events.push(Event::Refuted {
            claim: record.state,
            accused_by: record.from.clone(),
            incarnation: self.me.incarnation,
        });
        let own = self.own_record();
        self.gossip.push(own.clone(), now);
        self.push(now, src, Msg::Gossip, vec![own.clone()]);
        if let Some(accuser) = self.table.get(&record.from).map(|m| m.addr)
            && accuser != src
        {
            self.push(now, accuser, Msg::Gossip, vec![own]);
        }
    }
}
