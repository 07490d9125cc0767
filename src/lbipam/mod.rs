//! LB IPAM: LoadBalancer addresses from pools, compatible with Cilium's LB IPAM and MetalLB's
//! `IPAddressPool` annotations.
//!
//! - [`allocate`] is the pure allocator: pools + services + previous allocations → who holds
//!   which address ([`Allocation`]), with a [`crate::model::ServiceIpamStatus`] per service and a
//!   [`crate::model::PoolStatus`] per pool. No IO, deterministic, property-tested.
//! - [`IpamState`] runs it on every snapshot in the agent and, with the `dir:` source, persists
//!   allocations in `--state-dir/lbipam.json` ([`store`]) so a restart keeps them.
//! - [`lb_ips`] gives the load balancer the extra frontend addresses of each service.
//!
//! # Who writes status (Kubernetes source)
//!
//! Every agent runs the allocator on its own copy of the cluster state, so every node programs
//! the same LoadBalancer frontends without waiting for anyone. Only one agent per cluster writes
//! the results back (`status.loadBalancer.ingress`, the `ferrite.dev/IPAMRequestSatisfied`
//! service condition, pool conditions): the holder of the Lease. Why a single writer:
//! - the allocator is deterministic, so the leader's writes are exactly what every follower
//!   computed; followers lose nothing by not writing;
//! - N writers of the same status would race (409 conflicts on every change, N× API load on a
//!   Raspberry Pi control plane) and, during a partition, could flap between two views;
//! - status is also the allocator's memory (adopted as "previous" input): with one writer it
//!   moves forward monotonically, and a new leader adopts what the old one wrote, so addresses
//!   are never reshuffled by a failover.
//!
//! The status writer and the Lease come with the Kubernetes source (`source::kube`); this module
//! only produces the values to write and plans the writes ([`report`]); the agent's status task
//! (`agent::status`) applies them while it holds the Lease.

mod allocate;
mod pools;
mod ranges;
pub mod report;
mod request;
mod state;
mod store;

#[cfg(test)]
mod tests;

use std::{collections::BTreeMap, net::IpAddr};

pub use allocate::Allocation;
#[cfg(test)]
pub use allocate::allocate;
pub use state::IpamState;

use crate::model::ServiceName;

/// The LoadBalancer addresses to serve as extra frontends, per service (see
/// [`crate::lb::frontend::frontends_with`]).
pub fn lb_ips(allocation: &Allocation) -> BTreeMap<ServiceName, Vec<IpAddr>> {
    allocation.lb_ips()
}
