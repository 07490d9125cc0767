//! Reclaiming leaked addresses: reservations of ADDs that died (`kill -9`, OOM, node crash)
//! and allocations whose host veth is gone (the netns vanished without a DEL). Run under the
//! store lock by ADD (dead reservations only), GC, and the agent at start.

use std::collections::HashSet;
use std::path::Path;

use tracing::{info, warn};

use super::ipam::{Allocation, IpamError, IpamState, LOCK_TIMEOUT, Store};
use super::netlink::{Net, NetError};
use super::netns::link_exists;

/// Deletes the host veths named by `stale` and returns the names that are gone now (deleted or
/// never there). A name whose deletion failed is reported in `errors` and its addresses stay
/// allocated: an address is never freed while an interface may still carry it.
pub fn delete_host_links(
    net: &Net,
    stale: &[Allocation],
    errors: &mut Vec<String>,
) -> HashSet<String> {
    let names: HashSet<&str> = stale.iter().map(|a| a.host_ifname.as_str()).collect();
    let mut gone = HashSet::new();
    for name in names {
        match net.del_link(net.host(), name) {
            Ok(_) => {
                gone.insert(name.to_owned());
            }
            Err(e) => errors.push(format!("deleting {name}: {e}")),
        }
    }
    gone
}

/// Removes reservations whose ADD process is dead, with whatever that ADD had built. Returns
/// the released allocations.
pub fn reap_dead_adds(net: &Net, state: &mut IpamState) -> Vec<Allocation> {
    let dead = |a: &Allocation| a.pending.is_some_and(|o| !o.alive());
    let orphans: Vec<Allocation> = state
        .allocations
        .iter()
        .filter(|a| dead(a))
        .cloned()
        .collect();
    if orphans.is_empty() {
        return orphans;
    }
    let mut errors = Vec::new();
    let gone = delete_host_links(net, &orphans, &mut errors);
    for e in &errors {
        warn!(error = %e, "reclaiming a dead ADD");
    }
    let released = state.take(|a| dead(a) && gone.contains(&a.host_ifname));
    for a in &released {
        info!(ip = %a.ip, container = %a.container_id, pid = a.pending.map_or(0, |o| o.pid), "released the address of an ADD that died");
    }
    released
}

/// Removes committed allocations whose host veth no longer exists in this (the host's) netns:
/// the pod's namespace was destroyed and nobody called DEL.
pub fn reap_vanished(state: &mut IpamState) -> Vec<Allocation> {
    let released = state.take(|a| a.pending.is_none() && !link_exists(&a.host_ifname));
    for a in &released {
        info!(ip = %a.ip, container = %a.container_id, veth = %a.host_ifname, "released the address of a vanished pod");
    }
    released
}

/// What the agent's start-up reclaim did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReclaimReport {
    pub networks: usize,
    pub released: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ReclaimError {
    #[error(transparent)]
    Ipam(#[from] IpamError),
    #[error(transparent)]
    Net(#[from] NetError),
}

/// Every network under `state_dir`: dead ADDs and vanished pods. Runs on its own thread so
/// callers inside an async runtime can use it.
pub fn reclaim_all(state_dir: &Path) -> Result<ReclaimReport, ReclaimError> {
    let dir = state_dir.to_owned();
    std::thread::spawn(move || {
        let net = Net::new()?;
        let mut report = ReclaimReport::default();
        for store in Store::all(&dir)? {
            let locked = store.lock(LOCK_TIMEOUT)?;
            let mut state = locked.load()?;
            let released = reap_dead_adds(&net, &mut state).len() + reap_vanished(&mut state).len();
            // Always written: a load after a reboot has already dropped every allocation.
            locked.save(&state)?;
            report.networks += 1;
            report.released += released;
        }
        Ok(report)
    })
    .join()
    .unwrap_or_else(|_| Err(ReclaimError::Net(NetError::Thread(state_dir.to_owned()))))
}
