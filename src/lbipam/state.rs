//! The agent's side of LB IPAM: runs the allocator on every snapshot with the previous round's
//! result as input, logs what changed, and (with a state directory) persists allocations.

use std::{collections::BTreeMap, net::IpAddr, path::Path};

use tracing::{error, info, warn};

use super::{
    allocate::{Allocation, allocate},
    store::Store,
};
use crate::model::{IpamReason, ServiceName, Snapshot};
use crate::source::SourceSpec;

/// Allocation state carried from one reconcile to the next.
#[derive(Debug, Default)]
pub struct IpamState {
    previous: BTreeMap<ServiceName, Vec<IpAddr>>,
    store: Option<Store>,
    /// What the store holds (to write only changes); `None` until known.
    saved: Option<BTreeMap<ServiceName, Vec<IpAddr>>>,
    last: Allocation,
    /// The last [`reconcile`](Self::reconcile) started from the addresses it ended with: run
    /// again on the same services and pools it would give the same allocation.
    stable: bool,
}

impl IpamState {
    /// State kept in memory only (the Kubernetes source keeps it in service status).
    pub fn in_memory() -> Self {
        Self::default()
    }

    /// State that survives restarts in `store`. A file that cannot be read is logged and
    /// replaced at the next save; addresses in services' status are still adopted.
    pub fn persistent(store: Store) -> Self {
        let (previous, saved) = match store.load() {
            Ok(previous) => {
                info!(
                    path = %store.path().display(),
                    services = previous.len(),
                    "LB IPAM allocations loaded"
                );
                (previous.clone(), Some(previous))
            }
            Err(error) => {
                error!(%error, "LB IPAM allocations could not be loaded; starting without them");
                (BTreeMap::new(), None)
            }
        };
        Self {
            previous,
            store: Some(store),
            saved,
            last: Allocation::default(),
            stable: false,
        }
    }

    /// The state for an agent reading `source`: with the `dir:` source allocations persist in
    /// `state_dir`; with the Kubernetes source they live in services' status (adopted from there).
    pub fn for_source(source: &SourceSpec, state_dir: &Path) -> Self {
        match source {
            SourceSpec::Dir(_) => Self::persistent(Store::new(state_dir)),
            SourceSpec::Kube => Self::in_memory(),
        }
    }

    /// Allocates for `snapshot`, logs the changes and persists the result.
    pub fn reconcile(&mut self, snapshot: &Snapshot) -> &Allocation {
        let allocation = allocate(
            snapshot.pools.values(),
            snapshot.services.values(),
            &self.previous,
        );
        self.log_changes(&allocation);
        let lb_ips = allocation.lb_ips();
        let unchanged = lb_ips == self.previous;
        self.previous = lb_ips;
        self.last = allocation;
        if let Some(store) = &self.store
            && self.saved.as_ref() != Some(&self.previous)
        {
            match store.save(&self.previous) {
                Ok(()) => self.saved = Some(self.previous.clone()),
                Err(error) => error!(%error, "persisting LB IPAM allocations failed; will retry"),
            }
        }
        // A failed save is retried by the next run, so that run must not be skipped.
        self.stable =
            unchanged && (self.store.is_none() || self.saved.as_ref() == Some(&self.previous));
        &self.last
    }

    /// Whether [`reconcile`](Self::reconcile) on a snapshot with the same services and pools as
    /// the last one would return the same allocation (its inputs, the previous addresses
    /// included, are the same), so that it can be skipped.
    pub fn stable(&self) -> bool {
        self.stable
    }

    /// The latest allocation.
    pub fn last(&self) -> &Allocation {
        &self.last
    }

    fn log_changes(&self, next: &Allocation) {
        for (name, status) in &next.services {
            let before = self.last.services.get(name);
            let ips = status.ingress();
            if before.map(crate::model::ServiceIpamStatus::ingress) != Some(ips.clone())
                && !ips.is_empty()
            {
                info!(service = %name, ?ips, "LoadBalancer addresses allocated");
            }
            if status.reason != IpamReason::Satisfied
                && before.is_none_or(|b| b.reason != status.reason || b.message != status.message)
            {
                warn!(
                    service = %name,
                    reason = %status.reason,
                    message = %status.message,
                    "LoadBalancer address request not satisfied"
                );
            }
        }
        for (name, status) in &self.last.services {
            if !status.addresses.is_empty()
                && next
                    .services
                    .get(name)
                    .is_none_or(|s| s.addresses.is_empty())
            {
                info!(service = %name, ips = ?status.ingress(), "LoadBalancer addresses released");
            }
        }
        for (name, pool) in &next.pools {
            let before = self.last.pools.get(name);
            if let Some(conflict) = &pool.conflict
                && before.is_none_or(|b| b.conflict.as_ref() != Some(conflict))
            {
                warn!(pool = %name, %conflict, "pool conflict");
            }
            if !pool.problems.is_empty() && before.is_none_or(|b| b.problems != pool.problems) {
                let problems: Vec<String> = pool.problems.iter().map(ToString::to_string).collect();
                warn!(pool = %name, problems = %problems.join("; "), "pool has an invalid spec");
            }
        }
    }
}
