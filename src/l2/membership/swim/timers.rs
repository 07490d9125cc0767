//! The clock side of [`Swim`]: probe periods, indirect probes, suspicion timeouts, anti-entropy
//! and rejoin syncs, and forgetting long-dead members.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{Event, Probe, Swim};
use crate::l2::membership::view::MemberState;
use crate::l2::membership::wire::Msg;
use crate::l2::ownership::NodeName;

impl Swim {
    /// The next instant at which [`Swim::handle_timeout`] has work to do.
    pub fn poll_timeout(&self) -> Instant {
        let mut at = self.next_probe.min(self.next_sync).min(self.next_rejoin);
        if let Some(p) = &self.probe
            && !p.acked
            && !p.indirect_sent
        {
            at = at.min(p.started + self.timing.ack_timeout);
        }
        for (_, m) in self.table.iter() {
            if m.state == MemberState::Suspect {
                at = at.min(m.since + self.suspicion_timeout(m.suspectors.len()));
            }
        }
        at
    }

    /// Lifeguard's dynamic suspicion timeout: `suspicion_max`, shrinking logarithmically to
    /// `suspicion_min` as independent confirmations arrive; `suspicion_min` when no other member
    /// could confirm (two-node clusters).
    pub(crate) fn suspicion_timeout(&self, suspectors: usize) -> Duration {
        let (min, max) = (self.timing.suspicion_min, self.timing.suspicion_max);
        let could_confirm = self.table.live_count().saturating_sub(1);
        let wanted = self.timing.confirmations.min(could_confirm);
        let confirmations = suspectors.saturating_sub(1);
        if wanted == 0 || confirmations >= wanted {
            return min;
        }
        let ln = |n: usize| f64::from(u32::try_from(n).unwrap_or(u32::MAX)).ln();
        let fraction = ln(confirmations + 1) / ln(wanted + 1);
        max.saturating_sub(max.saturating_sub(min).mul_f64(fraction))
            .max(min)
    }

    /// Everything due at `now`. Call it at [`Swim::poll_timeout`], after handling the datagrams
    /// already received (a member that was itself frozen must hear the acks before judging).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.left {
            return;
        }
        self.indirect_probe(now);
        if now >= self.next_probe {
            // Called a whole period late: this node was frozen or starved, so the silence of
            // the pending probe says nothing about the peer (Lifeguard's local health).
            let stalled = now >= self.next_probe + self.timing.probe_interval;
            if let Some(p) = self.probe.take()
                && !p.acked
                && !stalled
            {
                self.suspect(now, &p.target);
            }
            self.start_probe(now);
            self.next_probe =
                if stalled { now } else { self.next_probe } + self.timing.probe_interval;
        }
        self.expire_suspicions(now);
        self.relays.retain(|r| r.expires > now);
        if now >= self.next_sync {
            let peers: Vec<SocketAddr> = self
                .table
                .live()
                .filter(|(_, m)| m.state == MemberState::Alive)
                .map(|(_, m)| m.addr)
                .collect();
            if !peers.is_empty() {
                let to = peers[self.rng.below(peers.len())];
                self.push_sync(to, true);
            }
            self.next_sync = now + self.timing.sync_interval;
        }
        if now >= self.next_rejoin {
            for to in self.rejoin_targets() {
                self.push_sync(to, true);
            }
            self.next_rejoin = now + self.timing.rejoin_interval;
        }
        for name in self.table.forget(now, self.timing.dead_retention) {
            self.order.retain(|n| *n != name);
            self.changed = true;
        }
    }

    /// Seeds that are not live members, and dead members: a (re)join or a healed partition is
    /// noticed within one rejoin interval.
    fn rejoin_targets(&self) -> Vec<SocketAddr> {
        let live: BTreeSet<SocketAddr> = self.table.live().map(|(_, m)| m.addr).collect();
        let dead = self
            .table
            .iter()
            .filter(|(_, m)| m.state == MemberState::Dead)
            .map(|(_, m)| m.addr);
        let mut targets: Vec<SocketAddr> = Vec::new();
        for addr in self.seeds.iter().copied().chain(dead) {
            if addr != self.me.addr && !live.contains(&addr) && !targets.contains(&addr) {
                targets.push(addr);
            }
        }
        targets
    }

    /// Pings the next member of the round-robin order (reshuffled every round).
    fn start_probe(&mut self, now: Instant) {
        let (target, addr) = loop {
            let Some(name) = self.order.pop() else {
                let mut names: Vec<NodeName> = self.table.live().map(|(n, _)| n.clone()).collect();
                if names.is_empty() {
                    return;
                }
                self.rng.shuffle(&mut names);
                self.order = names;
                continue;
            };
            if let Some(m) = self.table.get(&name).filter(|m| m.state.is_live()) {
                break (name, m.addr);
            }
        };
        let seq = self.next_seq();
        self.probe = Some(Probe {
            target: target.clone(),
            addr,
            seq,
            started: now,
            indirect_sent: false,
            acked: false,
        });
        self.push(now, addr, Msg::Ping { seq, target }, Vec::new());
    }

    /// No ack within `ack_timeout`: ping again and ask up to `indirect_probes` alive members to
    /// ping the target too (a lossy path between two members does not make either suspect).
    fn indirect_probe(&mut self, now: Instant) {
        let Some(p) = self.probe.as_mut() else {
            return;
        };
        if p.acked || p.indirect_sent || now < p.started + self.timing.ack_timeout {
            return;
        }
        p.indirect_sent = true;
        let (target, addr, seq) = (p.target.clone(), p.addr, p.seq);
        let ping = Msg::Ping {
            seq,
            target: target.clone(),
        };
        self.push(now, addr, ping, Vec::new());
        let mut relays: Vec<SocketAddr> = self
            .table
            .live()
            .filter(|(n, m)| **n != target && m.state == MemberState::Alive)
            .map(|(_, m)| m.addr)
            .collect();
        self.rng.shuffle(&mut relays);
        relays.truncate(self.timing.indirect_probes);
        for relay in relays {
            let req = Msg::PingReq {
                seq,
                target: target.clone(),
                target_addr: addr,
            };
            self.push(now, relay, req, Vec::new());
        }
    }

    fn suspect(&mut self, now: Instant, name: &NodeName) {
        let Some((record, old)) = self.table.suspect(name, &self.me.name, now) else {
            return;
        };
        self.changed = true;
        if old == MemberState::Alive {
            self.events.push(Event::Member {
                name: name.clone(),
                addr: record.addr,
                from: Some(old),
                to: MemberState::Suspect,
                incarnation: record.incarnation,
                reported_by: self.me.name.clone(),
            });
            self.notify_accused(now, &record);
        }
        self.gossip.push(record, now);
    }

    fn expire_suspicions(&mut self, now: Instant) {
        let expired: Vec<NodeName> = self
            .table
            .iter()
            .filter(|(_, m)| {
                m.state == MemberState::Suspect
                    && now >= m.since + self.suspicion_timeout(m.suspectors.len())
            })
            .map(|(n, _)| n.clone())
            .collect();
        for name in expired {
            let Some(record) = self.table.declare_dead(&name, &self.me.name, now) else {
                continue;
            };
            self.changed = true;
            self.events.push(Event::Member {
                name: name.clone(),
                addr: record.addr,
                from: Some(MemberState::Suspect),
                to: MemberState::Dead,
                incarnation: record.incarnation,
                reported_by: self.me.name.clone(),
            });
            // A frozen member that wakes up learns it at once and refutes.
            self.notify_accused(now, &record);
            self.gossip.push(record, now);
            self.order.retain(|n| *n != name);
        }
    }
}
