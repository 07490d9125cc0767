//! Typed handles on the load balancer's pinned maps: read back their content, write plans.

use std::collections::BTreeSet;

use aya::maps::{HashMap, MapData};
use ferrite_abi::{AffinityKey, AffinityValue, Backend, SlotKey, SvcKey, SvcValue, map_names};

use super::DatapathError;
use super::maputil::{ignore_missing, map_err, take};
use crate::lb::{LbState, Plan};

pub struct LbMaps {
    services: HashMap<MapData, SvcKey, SvcValue>,
    slots: HashMap<MapData, SlotKey, u32>,
    backends: HashMap<MapData, u32, Backend>,
    // An LRU hash in the kernel; aya reads it through the same HashMap type.
    affinity: HashMap<MapData, AffinityKey, AffinityValue>,
}

impl LbMaps {
    pub fn take(ebpf: &mut aya::Ebpf) -> Result<Self, DatapathError> {
        Ok(Self {
            services: take(ebpf, map_names::SERVICES)?,
            slots: take(ebpf, map_names::SLOTS)?,
            backends: take(ebpf, map_names::BACKENDS)?,
            affinity: take(ebpf, map_names::AFFINITY)?,
        })
    }

    /// Everything the maps hold now (what a previous agent wrote, on adoption).
    pub fn read_state(&self) -> Result<LbState, DatapathError> {
        let mut st = LbState::default();
        for kv in &self.services {
            let (k, v) = kv.map_err(map_err(map_names::SERVICES))?;
            st.services.insert(k, v);
        }
        for kv in &self.slots {
            let (k, v) = kv.map_err(map_err(map_names::SLOTS))?;
            st.slots.insert(k, v);
        }
        for kv in &self.backends {
            let (k, v) = kv.map_err(map_err(map_names::BACKENDS))?;
            st.backends.insert(k, v);
        }
        Ok(st)
    }

    /// Writes the first half of a plan (backends, slots, frontends), mirroring every successful
    /// write into `state`; stops at the first failure (the next reconcile re-plans from `state`).
    pub fn apply_upserts(&mut self, plan: &Plan, state: &mut LbState) -> Result<(), DatapathError> {
        for (id, b) in &plan.upsert_backends {
            self.backends
                .insert(id, b, 0)
                .map_err(map_err(map_names::BACKENDS))?;
            state.backends.insert(*id, *b);
        }
        for (k, v) in &plan.upsert_slots {
            self.slots
                .insert(k, v, 0)
                .map_err(map_err(map_names::SLOTS))?;
            state.slots.insert(*k, *v);
        }
        for (k, v) in &plan.upsert_services {
            self.services
                .insert(k, v, 0)
                .map_err(map_err(map_names::SERVICES))?;
            state.services.insert(*k, *v);
        }
        Ok(())
    }

    /// The second half: removals, then stale affinity entries.
    pub fn apply_deletes(&mut self, plan: &Plan, state: &mut LbState) -> Result<(), DatapathError> {
        for k in &plan.delete_services {
            ignore_missing(self.services.remove(k)).map_err(map_err(map_names::SERVICES))?;
            state.services.remove(k);
        }
        for k in &plan.delete_slots {
            ignore_missing(self.slots.remove(k)).map_err(map_err(map_names::SLOTS))?;
            state.slots.remove(k);
        }
        for id in &plan.delete_backends {
            ignore_missing(self.backends.remove(id)).map_err(map_err(map_names::BACKENDS))?;
            state.backends.remove(id);
        }
        self.purge_affinity(&plan.stale_affinity)
    }

    fn purge_affinity(&mut self, stale: &BTreeSet<(u32, u32)>) -> Result<(), DatapathError> {
        if stale.is_empty() {
            return Ok(());
        }
        let mut doomed = Vec::new();
        for kv in &self.affinity {
            let (k, v) = kv.map_err(map_err(map_names::AFFINITY))?;
            if stale.contains(&(k.svc_id, v.backend_id)) {
                doomed.push(k);
            }
        }
        for k in doomed {
            ignore_missing(self.affinity.remove(&k)).map_err(map_err(map_names::AFFINITY))?;
        }
        Ok(())
    }
}
