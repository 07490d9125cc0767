//! A simulated network for the SWIM state machine: virtual time, per-packet latency, random
//! loss, partitions, crashed and frozen members. Deterministic (seeded). The scenarios are in
//! `sim_tests.rs`.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::config::Timing;
use super::swim::{Event, Identity, Rng, Swim};
use super::view::MemberState;
use super::wire;

pub(super) const CLUSTER: &str = "sim";

pub(super) fn addr(i: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::from([10, 0, 0, u8::try_from(i + 1).unwrap()]), 7946)
}

pub(super) fn name(i: usize) -> String {
    format!("n{i}")
}

/// In flight: (delivery time, tie-break sequence) → (to, from, encoded datagram).
pub(super) type Flight = BinaryHeap<Reverse<(Duration, u64, usize, SocketAddr, Vec<u8>)>>;

pub(super) struct Sim {
    pub(super) start: Instant,
    pub(super) now: Duration,
    pub(super) nodes: Vec<Option<Swim>>,
    /// Frozen members (SIGSTOP): nothing runs; datagrams wait in their socket buffer.
    pub(super) frozen: BTreeSet<usize>,
    pub(super) buffered: BTreeMap<usize, Vec<(SocketAddr, Vec<u8>)>>,
    /// Pairs that cannot talk (both directions).
    pub(super) cut: BTreeSet<(usize, usize)>,
    /// Datagrams lost, per million.
    pub(super) loss_ppm: usize,
    pub(super) rng: Rng,
    pub(super) flight: Flight,
    pub(super) seq: u64,
    /// (time, observer, event)
    pub(super) log: Vec<(Duration, usize, Event)>,
}

impl Sim {
    pub(super) fn new(n: usize, timing: &Timing, seed: u64) -> Self {
        let mut sim = Self {
            start: Instant::now(),
            now: Duration::ZERO,
            nodes: Vec::new(),
            frozen: BTreeSet::new(),
            buffered: BTreeMap::new(),
            cut: BTreeSet::new(),
            loss_ppm: 0,
            rng: Rng::new(seed),
            flight: BinaryHeap::new(),
            seq: 0,
            log: Vec::new(),
        };
        for i in 0..n {
            sim.nodes.push(None);
            sim.boot(i, timing, 1_000);
        }
        sim
    }

    pub(super) fn boot(&mut self, i: usize, timing: &Timing, incarnation: u64) {
        let seeds = (0..self.nodes.len()).map(addr).collect();
        let identity = Identity {
            name: name(i).into(),
            addr: addr(i),
            cluster: wire::cluster_tag(CLUSTER),
            incarnation,
            eligible: BTreeSet::from(["192.168.1.240".parse().unwrap()]),
        };
        let seed = self.rng.next_u64();
        self.nodes[i] = Some(Swim::new(
            identity,
            seeds,
            timing.clone(),
            self.start + self.now,
            0,
            seed,
        ));
    }

    pub(super) fn index_of(a: SocketAddr) -> usize {
        match a.ip() {
            IpAddr::V4(v4) => usize::from(v4.octets()[3]) - 1,
            IpAddr::V6(_) => unreachable!("simulated members are IPv4"),
        }
    }

    pub(super) fn flush(&mut self, i: usize) {
        let Some(node) = self.nodes[i].as_mut() else {
            return;
        };
        let out = node.take_outbox();
        for event in node.take_events() {
            self.log.push((self.now, i, event));
        }
        for (to, packet) in out {
            let j = Self::index_of(to);
            let lost = self.rng.below(1_000_000) < self.loss_ppm;
            if lost || self.cut.contains(&(i.min(j), i.max(j))) {
                continue;
            }
            let latency = Duration::from_micros(200 + u64::try_from(self.rng.below(800)).unwrap());
            self.seq += 1;
            self.flight.push(Reverse((
                self.now + latency,
                self.seq,
                j,
                addr(i),
                wire::encode(&packet),
            )));
        }
    }

    pub(super) fn deliver(&mut self, to: usize, from: SocketAddr, bytes: &[u8]) {
        let at = self.start + self.now;
        if let Some(node) = self.nodes[to].as_mut() {
            node.handle_packet(at, from, wire::decode(bytes).expect("valid datagram"));
            self.flush(to);
        }
    }

    /// Runs until `until` (virtual), handling datagrams before timers at equal times.
    pub(super) fn run_until(&mut self, until: Duration) {
        loop {
            let next_packet = self.flight.peek().map(|Reverse((t, ..))| *t);
            let next_timer = (0..self.nodes.len())
                .filter(|i| !self.frozen.contains(i))
                .filter_map(|i| self.nodes[i].as_ref().map(|n| (n.poll_timeout(), i)))
                .min()
                .map(|(t, i)| (t.duration_since(self.start), i));
            let packet_first = match (next_packet, next_timer) {
                (Some(p), Some((t, _))) => p <= t,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            let at = if packet_first {
                next_packet.unwrap()
            } else {
                next_timer.unwrap().0
            };
            if at > until {
                break;
            }
            self.now = self.now.max(at);
            if packet_first {
                let Reverse((_, _, to, from, bytes)) = self.flight.pop().unwrap();
                if self.frozen.contains(&to) {
                    self.buffered.entry(to).or_default().push((from, bytes));
                } else {
                    self.deliver(to, from, &bytes);
                }
            } else {
                let i = next_timer.unwrap().1;
                let at = self.start + self.now;
                self.nodes[i].as_mut().unwrap().handle_timeout(at);
                self.flush(i);
            }
        }
        self.now = self.now.max(until);
    }

    pub(super) fn run_for(&mut self, d: Duration) {
        self.run_until(self.now + d);
    }

    pub(super) fn freeze(&mut self, i: usize) {
        self.frozen.insert(i);
    }

    /// SIGCONT: the buffered datagrams first, then the (late) timers.
    pub(super) fn thaw(&mut self, i: usize) {
        self.frozen.remove(&i);
        for (from, bytes) in self.buffered.remove(&i).unwrap_or_default() {
            self.deliver(i, from, &bytes);
        }
    }

    pub(super) fn cut_between(&mut self, a: &[usize], b: &[usize]) {
        for &i in a {
            for &j in b {
                self.cut.insert((i.min(j), i.max(j)));
            }
        }
    }

    pub(super) fn state(&self, observer: usize, member: usize) -> Option<MemberState> {
        let view = self.nodes[observer].as_ref()?.view();
        view.get(&name(member)).map(|m| m.state)
    }

    pub(super) fn all_see(
        &self,
        observers: &[usize],
        member: usize,
        pred: impl Fn(MemberState) -> bool,
    ) -> bool {
        observers
            .iter()
            .all(|&o| self.state(o, member).is_some_and(&pred))
    }

    pub(super) fn converged(&self, members: &[usize]) -> bool {
        members
            .iter()
            .all(|&m| self.all_see(members, m, |s| s == MemberState::Alive))
    }

    /// First time after `since` at which `observer` logged `member` as `to`.
    pub(super) fn first(
        &self,
        since: Duration,
        observer: usize,
        member: usize,
        to: MemberState,
    ) -> Option<Duration> {
        self.log.iter().find_map(|(t, o, e)| match e {
            Event::Member { name: n, to: s, .. }
                if *o == observer && *n == name(member) && *s == to =>
            {
                t.checked_sub(since)
            }
            _ => None,
        })
    }

    pub(super) fn dead_events(&self) -> usize {
        self.log
            .iter()
            .filter(|(_, _, e)| {
                matches!(
                    e,
                    Event::Member {
                        to: MemberState::Dead,
                        ..
                    }
                )
            })
            .count()
    }
}

pub(super) fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub(super) fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}
