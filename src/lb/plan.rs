//! Diff of desired frontends against the maps' current content, as an ordered list of writes
//! that never exposes a half-written service: backends, then slots, then the frontend entry;
//! deletions of frontends, then slots, then backends last.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;

use ferrite_abi::{Backend, SVC_FLAG_AFFINITY, SlotKey, SvcKey, SvcValue};
use tracing::warn;

use super::addr::{backend_of, ip_words};
use super::frontend::Frontend;

/// What the maps hold (read back at start, then mirrored after each apply).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LbState {
    pub services: HashMap<SvcKey, SvcValue>,
    pub slots: HashMap<SlotKey, u32>,
    pub backends: HashMap<u32, Backend>,
}

/// Ordered writes. Apply the fields in declaration order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub upsert_backends: Vec<(u32, Backend)>,
    pub upsert_slots: Vec<(SlotKey, u32)>,
    pub upsert_services: Vec<(SvcKey, SvcValue)>,
    pub delete_services: Vec<SvcKey>,
    pub delete_slots: Vec<SlotKey>,
    pub delete_backends: Vec<u32>,
    /// (svc id, backend id) pairs that left an affinity service: sticky entries must go.
    pub stale_affinity: BTreeSet<(u32, u32)>,
}

impl Plan {
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.op_count() == 0 && self.stale_affinity.is_empty()
    }

    pub fn op_count(&self) -> usize {
        self.upsert_backends.len()
            + self.upsert_slots.len()
            + self.upsert_services.len()
            + self.delete_services.len()
            + self.delete_slots.len()
            + self.delete_backends.len()
    }
}

/// The most backends one frontend can have (slot numbers are u16).
pub const MAX_BACKENDS_PER_FRONTEND: usize = u16::MAX as usize;

pub fn svc_key(fe: &Frontend) -> SvcKey {
    let (addr, family) = ip_words(fe.addr);
    SvcKey {
        addr,
        port: fe.port.to_be(),
        proto: fe.protocol.number(),
        family,
    }
}

/// Lowest ids not yet used, starting at 1 (0 is never a valid id). The set of used ids is
/// built on the first [`take`](Self::take) only: most plans allocate nothing.
struct IdAllocator<I> {
    source: Option<I>,
    used: BTreeSet<u32>,
    next: u32,
}

impl<I: Iterator<Item = u32>> IdAllocator<I> {
    fn new(used: I) -> Self {
        Self {
            source: Some(used),
            used: BTreeSet::new(),
            next: 1,
        }
    }

    fn take(&mut self) -> u32 {
        if let Some(source) = self.source.take() {
            self.used.extend(source);
        }
        while self.used.contains(&self.next) {
            self.next += 1;
        }
        self.used.insert(self.next);
        self.next
    }
}

/// Computes the writes that turn `current` into `desired`. Ids of frontends and backends that
/// stay are kept, so an unchanged model yields an empty plan (a restarted agent writes nothing).
#[cfg(test)]
pub fn plan(desired: &[Frontend], current: &LbState) -> Plan {
    plan_with(desired, &BTreeSet::new(), current)
}

/// Like [`plan`], also keeping (or creating) `extra` backends that north-south frontends use.
pub fn plan_with(desired: &[Frontend], extra: &BTreeSet<SocketAddr>, current: &LbState) -> Plan {
    let mut out = Plan::default();

    // Backends: reuse ids by address.
    let mut backend_ids: HashMap<Backend, u32> =
        current.backends.iter().map(|(id, b)| (*b, *id)).collect();
    let mut backend_alloc = IdAllocator::new(current.backends.keys().copied());
    let mut svc_alloc = IdAllocator::new(current.services.values().map(|v| v.svc_id));
    let mut wanted_backends = HashSet::with_capacity(current.backends.len());
    let mut wanted_slots = HashSet::with_capacity(current.slots.len());
    let mut wanted_services = HashSet::with_capacity(desired.len());
    let mut new_backends = BTreeMap::new();

    for fe in desired {
        let key = svc_key(fe);
        wanted_services.insert(key);
        let existing = current.services.get(&key);
        let svc_id = existing.map_or_else(|| svc_alloc.take(), |v| v.svc_id);
        if fe.backends.len() > MAX_BACKENDS_PER_FRONTEND {
            warn!(service = %fe.service, "more than {MAX_BACKENDS_PER_FRONTEND} backends; extra ones ignored");
        }
        let mut ids = Vec::with_capacity(fe.backends.len());
        for sa in fe.backends.iter().take(MAX_BACKENDS_PER_FRONTEND) {
            let b = backend_of(*sa);
            let id = *backend_ids.entry(b).or_insert_with(|| {
                let id = backend_alloc.take();
                new_backends.insert(id, b);
                id
            });
            wanted_backends.insert(id);
            ids.push(id);
        }
        for (slot, id) in ids.iter().enumerate() {
            let sk = SlotKey {
                svc_id,
                slot: u16::try_from(slot).unwrap_or(u16::MAX),
                _pad: 0,
            };
            wanted_slots.insert(sk);
            if current.slots.get(&sk) != Some(id) {
                out.upsert_slots.push((sk, *id));
            }
        }
        let value = SvcValue {
            svc_id,
            count: u16::try_from(ids.len()).unwrap_or(u16::MAX),
            flags: if fe.affinity_timeout.is_some() {
                SVC_FLAG_AFFINITY
            } else {
                0
            },
            affinity_timeout_s: fe.affinity_timeout.unwrap_or(0),
            _pad: 0,
        };
        if existing != Some(&value) {
            out.upsert_services.push((key, value));
        }
        if fe.affinity_timeout.is_some() {
            let old = backends_of_service(current, existing);
            for gone in old.difference(&ids.iter().copied().collect()) {
                out.stale_affinity.insert((svc_id, *gone));
            }
        }
    }

    for sa in extra {
        let b = backend_of(*sa);
        let id = *backend_ids.entry(b).or_insert_with(|| {
            let id = backend_alloc.take();
            new_backends.insert(id, b);
            id
        });
        wanted_backends.insert(id);
    }
    out.upsert_backends = new_backends.into_iter().collect();
    let mut delete_services: Vec<_> = current
        .services
        .keys()
        .filter(|k| !wanted_services.contains(k))
        .copied()
        .collect();
    delete_services.sort_unstable();
    out.delete_services = delete_services;
    let mut delete_slots: Vec<_> = current
        .slots
        .keys()
        .filter(|k| !wanted_slots.contains(k))
        .copied()
        .collect();
    delete_slots.sort_unstable();
    out.delete_slots = delete_slots;
    let mut delete_backends: Vec<_> = current
        .backends
        .keys()
        .filter(|id| !wanted_backends.contains(id))
        .copied()
        .collect();
    delete_backends.sort_unstable();
    out.delete_backends = delete_backends;
    out.upsert_slots.sort_unstable();
    out.upsert_services.sort_unstable_by_key(|(k, _)| *k);
    out
}

fn backends_of_service(current: &LbState, svc: Option<&SvcValue>) -> BTreeSet<u32> {
    let Some(svc) = svc else {
        return BTreeSet::new();
    };
    (0..svc.count)
        .filter_map(|slot| {
            current.slots.get(&SlotKey {
                svc_id: svc.svc_id,
                slot,
                _pad: 0,
            })
        })
        .copied()
        .collect()
}

#[cfg(test)]
impl LbState {
    /// The state after `plan` has been written in full.
    pub fn apply(&mut self, plan: &Plan) {
        for (id, b) in &plan.upsert_backends {
            self.backends.insert(*id, *b);
        }
        for (k, v) in &plan.upsert_slots {
            self.slots.insert(*k, *v);
        }
        for (k, v) in &plan.upsert_services {
            self.services.insert(*k, *v);
        }
        for k in &plan.delete_services {
            self.services.remove(k);
        }
        for k in &plan.delete_slots {
            self.slots.remove(k);
        }
        for id in &plan.delete_backends {
            self.backends.remove(id);
        }
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
