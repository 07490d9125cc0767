//! GC: removes every attachment not in `cni.dev/valid-attachments` — its host veth and its
//! addresses — plus reservations of ADDs that died. Keeps going past failures and reports
//! them all.

use std::collections::HashSet;

use tracing::info;

use crate::cni::config::{ConfigError, NetConf};
use crate::cni::env::Attachment;
use crate::cni::error::CniError;
use crate::cni::ipam::{Allocation, LOCK_TIMEOUT, Owner, Store, stale_for_gc};
use crate::cni::netlink::Net;
use crate::cni::reclaim::{delete_host_links, reap_dead_adds};

pub fn run(conf: &NetConf) -> Result<(), CniError> {
    let valid: HashSet<Attachment> = conf
        .valid_attachments
        .clone()
        .ok_or_else(|| ConfigError::Invalid {
            field: "cni.dev/valid-attachments".into(),
            why: "missing (GC needs the list of attachments to keep)".into(),
        })?
        .into_iter()
        .collect();
    let net = Net::new()?;
    let store = Store::new(&conf.state_dir, &conf.name);
    let locked = store.lock(LOCK_TIMEOUT)?;
    let mut state = locked.load()?;
    let dead = reap_dead_adds(&net, &mut state).len();
    let stale_ips = stale_for_gc(&state, &valid, Owner::alive);
    let doomed: Vec<Allocation> = state
        .allocations
        .iter()
        .filter(|a| stale_ips.contains(&a.ip))
        .cloned()
        .collect();
    let mut errors = Vec::new();
    let gone = delete_host_links(&net, &doomed, &mut errors);
    let released = state.take(|a| stale_ips.contains(&a.ip) && gone.contains(&a.host_ifname));
    locked.save(&state)?;
    info!(
        kept = state.allocations.len(),
        released = released.len() + dead,
        errors = errors.len(),
        "GC"
    );
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CniError::Gc {
            count: errors.len(),
            errors,
        })
    }
}
