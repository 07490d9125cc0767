//! Nodes of the cluster, as ferrite sees them (routes to pod CIDRs, node selectors, L2 health).

use std::{collections::BTreeMap, net::IpAddr};

use ipnet::IpNet;
use smol_str::SmolStr;

/// A `v1 Node` (cluster-scoped).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Node {
    pub name: SmolStr,
    pub labels: BTreeMap<SmolStr, SmolStr>,
    /// `spec.podCIDRs` (or `spec.podCIDR`), at most one per family.
    pub pod_cidrs: Vec<IpNet>,
    /// `status.addresses` of type `InternalIP`, in the order given.
    pub internal_ips: Vec<IpAddr>,
    /// `status.addresses` of type `ExternalIP`.
    pub external_ips: Vec<IpAddr>,
    /// `status.addresses` of type `Hostname`.
    pub hostname: Option<SmolStr>,
    /// The `Ready` condition; a node without conditions (a hand-written manifest) counts as ready.
    pub ready: bool,
}
